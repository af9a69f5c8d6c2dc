"""The table of target providers: each provider's runner, and those not supported yet."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from scalable.errors import ConfigError, WorkerLostError
from scalable.ledger import Ledger
from scalable.manifest import ComponentSpec, TargetSpec
from scalable.settings import load_settings
from scalable.targets import RUNNERS, Deployment, TaskEnv, start_runner
from scalable.targets.local import ProcessRunner, ThreadRunner
from scalable.targets.tasks import failed_event


@pytest.mark.parametrize("provider", ["kubernetes", "aws", "gcp"])
def test_providers_not_supported_yet_say_so(provider: str, ledger: Ledger) -> None:
    """A provider the table marks as not supported yet is refused naming the target and the supported ones."""
    assert RUNNERS[provider] is None
    with pytest.raises(
        ConfigError, match=rf"target 'big': provider '{provider}' is not supported yet; use one of: local, dask, slurm"
    ):
        start_runner(Deployment(TargetSpec("big", provider, {}), ledger))


def test_a_provider_without_runner_is_refused(ledger: Ledger) -> None:
    """A provider the table does not know is refused naming it."""
    with pytest.raises(ConfigError, match="no runner for provider 'carrier-pigeon'"):
        start_runner(Deployment(TargetSpec("t", "carrier-pigeon", {}), ledger))


def test_the_local_provider_runs_threads_or_processes(ledger: Ledger, isolated: Path) -> None:
    """local gives threads by default and processes with processes: true; a thread task records its events."""
    threads = start_runner(Deployment(TargetSpec("local", "local", {"max_workers": 1}), ledger))
    assert isinstance(threads, ThreadRunner)
    env = TaskEnv("run-t", "double", "0123abcd", None, load_settings())
    try:
        assert threads.submit(env, lambda x: 2 * x, (21,), {}).result() == 42
    finally:
        threads.shutdown(cancel=False)
    ops = [e["op"] for _n, e in ledger.read_run("run-t") if e["event_type"] == "task"]
    assert ops == ["started", "finished"]
    processes = start_runner(Deployment(TargetSpec("procs", "local", {"processes": True, "max_workers": 1}), ledger))
    assert isinstance(processes, ProcessRunner)
    processes.shutdown(cancel=False)


def _overlap(gate: threading.Barrier, timeout: float) -> str:
    """Wait until the pool has started as many tasks as the barrier has parties."""
    gate.wait(timeout=timeout)
    return threading.current_thread().name


@pytest.mark.parametrize(("max_workers", "threads_per_worker"), [(1, 3), (3, 1), (2, 2)])
def test_local_threads_run_max_workers_times_threads_per_worker_tasks_at_once(
    max_workers: int, threads_per_worker: int, ledger: Ledger
) -> None:
    """A local target runs max_workers x threads_per_worker tasks at once (Scalable's workers x threads), not more."""
    slots = max_workers * threads_per_worker
    options = {"max_workers": max_workers, "threads_per_worker": threads_per_worker}
    runner = start_runner(Deployment(TargetSpec("local", "local", options), ledger))
    settings = load_settings()
    gate = threading.Barrier(slots)
    try:
        futures = [
            runner.submit(TaskEnv("run-slots", "overlap", f"{i:08x}", None, settings), _overlap, (gate, 10), {})
            for i in range(slots)
        ]
        assert len({f.result(timeout=30) for f in futures}) == slots
        # One more than the pool holds never starts while the others wait.
        crowd = threading.Barrier(slots + 1)
        futures = [
            runner.submit(TaskEnv("run-slots", "overlap", f"c{i:07x}", None, settings), _overlap, (crowd, 1), {})
            for i in range(slots + 1)
        ]
        with pytest.raises(threading.BrokenBarrierError):
            futures[0].result(timeout=30)
    finally:
        runner.shutdown(cancel=False)


def read_env(name: str) -> str | None:
    """A task returning a variable of its process's environment."""
    return os.environ.get(name)


def die() -> None:
    """A task that kills its own worker process."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_local_processes_see_their_components_env_and_a_dead_worker_is_a_failed_task(ledger: Ledger) -> None:
    """With processes: true a task sees its component's env (only while it runs); a killed worker fails its task, recorded."""
    lost: list[dict[str, object]] = []
    components = {"prep": ComponentSpec("prep", env={"STAGE": "prep"}), "model": ComponentSpec("model")}
    deployment = Deployment(
        TargetSpec("procs", "local", {"processes": True, "max_workers": 1}),
        ledger,
        components=components,
        lost=lambda env, error, duration: lost.append(failed_event(env, error, duration)),
    )
    runner = start_runner(deployment)
    settings = load_settings()
    try:
        prep = TaskEnv("run-env", "clean", "00000001", "prep", settings)
        model = TaskEnv("run-env", "fit", "00000002", "model", settings)
        assert runner.submit(prep, read_env, ("STAGE",), {}).result(timeout=60) == "prep"
        assert runner.submit(model, read_env, ("STAGE",), {}).result(timeout=60) is None
        with pytest.raises(WorkerLostError, match=r"task 'fit' of run 'run-env' was lost: its worker process died"):
            runner.submit(model, die, (), {}).result(timeout=60)
        assert [(e["op"], e["task_name"], e["attrs"]["error_type"]) for e in lost] == [
            ("failed", "fit", "WorkerLostError")
        ]
        # The pool is replaced: later tasks run.
        assert runner.submit(prep, read_env, ("STAGE",), {}).result(timeout=60) == "prep"
    finally:
        runner.shutdown(cancel=False)
