"""The ``local`` provider: tasks on a pool of threads, or of processes with ``processes: true``.

Threads append to the session's ledger directly. Worker processes append to the run's stream
themselves (same filesystem), each under its own writer id.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from scalable.ledger.log import Ledger
from scalable.manifest import TargetSpec
from scalable.targets.tasks import TaskEnv, run_in_process, run_task

__all__ = ["ProcessRunner", "ThreadRunner", "start"]


class ThreadRunner:
    """Tasks on a thread pool of the client, recording into the session's ledger.

    Args:
        ledger: the session's ledger.
        max_workers: the pool's size (``None``: Python's default).
    """

    def __init__(self, ledger: Ledger, max_workers: int | None) -> None:
        self._ledger = ledger
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="scalable-task")

    def submit(
        self, env: TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> concurrent.futures.Future[Any]:
        """Start the task on a pool thread; its future completes once its events are appended."""
        # The caller's context variables (log context, user state) flow into the task.
        return self._pool.submit(contextvars.copy_context().run, run_task, self._ledger, env, fn, args, kwargs)

    def shutdown(self, *, cancel: bool) -> None:
        """Wait for running tasks (cancelling queued ones with ``cancel``) and stop the threads."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)


class ProcessRunner:
    """Tasks on a pool of worker processes that append to the run's stream themselves.

    Args:
        max_workers: the pool's size (``None``: the number of CPUs).
    """

    def __init__(self, max_workers: int | None) -> None:
        # forkserver: children never inherit a lock another thread of the client held at fork.
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers, mp_context=multiprocessing.get_context("forkserver")
        )

    def submit(
        self, env: TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> concurrent.futures.Future[Any]:
        """Start the task in a worker process; its future completes once its events are appended."""
        return self._pool.submit(run_in_process, env, fn, args, kwargs)

    def shutdown(self, *, cancel: bool) -> None:
        """Wait for running tasks (cancelling queued ones with ``cancel``) and stop the processes."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)


def start(
    target: TargetSpec, ledger: Ledger, deliver: Callable[[Mapping[str, Sequence[bytes]]], None]
) -> ThreadRunner | ProcessRunner:
    """Start the runner of a ``local`` target: processes with ``processes: true``, else threads."""
    options = target.options
    if options.get("processes"):
        return ProcessRunner(options.get("max_workers"))
    return ThreadRunner(ledger, options.get("max_workers"))
