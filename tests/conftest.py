"""Fixtures every test shares: an isolated working directory and environment per test."""

from __future__ import annotations

import os
import sys

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


#: Variables that say which object store endpoint a client talks to, and as whom.
_ENDPOINT_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "STORAGE_EMULATOR_HOST")


def forget_object_store_clients() -> None:
    """Drop the s3fs and gcsfs instances fsspec keeps (one per set of options, bound to the endpoint it first saw)."""
    for module in ("s3fs", "gcsfs"):
        if module in sys.modules:
            getattr(sys.modules[module], "S3FileSystem" if module == "s3fs" else "GCSFileSystem").clear_instance_cache()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run each test in its own empty directory with no SCALABLE_* variables set.

    A test that points the object store variables elsewhere leaves no client bound to that
    endpoint behind for the tests after it.
    """
    for name in list(os.environ):
        if name.startswith("SCALABLE_"):
            monkeypatch.delenv(name)
    endpoints = [os.environ.get(v) for v in _ENDPOINT_VARS]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    bus.reset_default()
    yield work
    bus.reset_default()
    if [os.environ.get(v) for v in _ENDPOINT_VARS] != endpoints:
        forget_object_store_clients()


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
