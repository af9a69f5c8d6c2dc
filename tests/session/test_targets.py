"""The table of target providers: each provider's runner, and those not supported yet."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from scalable.errors import ConfigError
from scalable.ledger.log import Ledger
from scalable.manifest import TargetSpec
from scalable.settings import load_settings
from scalable.targets import RUNNERS, TaskEnv, start_runner
from scalable.targets.local import ProcessRunner, ThreadRunner


def _nowhere(lines: Mapping[str, Sequence[bytes]]) -> None:
    raise AssertionError("a local runner delivers no lines")


@pytest.mark.parametrize("provider", ["kubernetes", "aws", "gcp"])
def test_providers_not_supported_yet_say_so(provider: str, ledger: Ledger) -> None:
    """A provider the table marks as not supported yet is refused naming the target and the supported ones."""
    assert RUNNERS[provider] is None
    with pytest.raises(
        ConfigError, match=rf"target 'big': provider '{provider}' is not supported yet; use one of: local, dask"
    ):
        start_runner(TargetSpec("big", provider, {}), ledger, _nowhere)


def test_a_provider_without_runner_is_refused(ledger: Ledger) -> None:
    """A provider the table does not know is refused naming it."""
    with pytest.raises(ConfigError, match="no runner for provider 'carrier-pigeon'"):
        start_runner(TargetSpec("t", "carrier-pigeon", {}), ledger, _nowhere)


def test_the_local_provider_runs_threads_or_processes(ledger: Ledger, isolated: Path) -> None:
    """local gives threads by default and processes with processes: true; a thread task records its events."""
    threads = start_runner(TargetSpec("local", "local", {"max_workers": 1}), ledger, _nowhere)
    assert isinstance(threads, ThreadRunner)
    env = TaskEnv("run-t", "double", "0123abcd", None, load_settings())
    try:
        assert threads.submit(env, lambda x: 2 * x, (21,), {}).result() == 42
    finally:
        threads.shutdown(cancel=False)
    ops = [e["op"] for _n, e in ledger.read_run("run-t") if e["event_type"] == "task"]
    assert ops == ["started", "finished"]
    processes = start_runner(TargetSpec("procs", "local", {"processes": True, "max_workers": 1}), ledger, _nowhere)
    assert isinstance(processes, ProcessRunner)
    processes.shutdown(cancel=False)
