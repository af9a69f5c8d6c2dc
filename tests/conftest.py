"""Fixtures every test shares: an isolated working directory and environment per test."""

from __future__ import annotations

import os

# gcsfs probes a gRPC endpoint for 40-107 s per operation against emulators unless this is
# off before gcsfs is imported.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from scalable.ledger import bus
from scalable.ledger.log import Ledger

pytest_plugins = ["tests.servers", "tests.slurm"]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run each test in its own empty directory with no SCALABLE_* variables set."""
    for name in list(os.environ):
        if name.startswith("SCALABLE_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    bus.reset_default()
    yield work
    bus.reset_default()


@pytest.fixture
def ledger(isolated: Path) -> Iterator[Ledger]:
    """A ledger under the test's working directory (default locations)."""
    led = Ledger.open()
    yield led
    led.close()


@pytest.fixture
def cli() -> CliInvoker:
    """Invoke the ``scalable`` CLI in-process; returns click's Result."""
    return CliInvoker()


class CliInvoker:
    """Calls ``scalable ARGS...`` and returns the result (exit_code, stdout, stderr)."""

    def __call__(self, *args: str, input: str | None = None) -> Result:
        from scalable.cli import cli

        return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
