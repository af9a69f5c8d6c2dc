"""The ``local`` provider: tasks on a pool of threads, or of processes with ``processes: true``.

Scalable's local target is a Dask ``LocalCluster`` of ``max_workers`` workers running
``threads_per_worker`` tasks each; here the pool has ``max_workers x threads_per_worker``
slots (``max_workers`` defaults to the executor's default size). Threads append to the
session's ledger directly. Worker processes append to the run's stream themselves (same
filesystem), each under its own writer id, with the task's component ``env`` set in the
process while the task runs (a pool process runs one task at a time). A worker process that
dies takes its task with it: the task is recorded as failed and the pool is replaced.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from scalable.errors import WorkerLostError
from scalable.ledger import Ledger
from scalable.logs import get_logger
from scalable.manifest import ComponentSpec, TargetSpec
from scalable.providers import PROVIDERS
from scalable.targets import COMPONENT_KEYS, Deployment, Lost, component_keys
from scalable.targets.tasks import TaskEnv, run_in_process, run_task

__all__ = ["ProcessRunner", "ThreadRunner", "pool_size", "recorded_only", "start"]

_log = get_logger("scalable.session")


def pool_size(options: Mapping[str, Any], default: int) -> int:
    """Slots of the pool: ``max_workers`` (else ``default``) times ``threads_per_worker``."""
    resolved = PROVIDERS["local"].resolve(options)
    return int(resolved["max_workers"] or default) * int(resolved["threads_per_worker"])


class ThreadRunner:
    """Tasks on a thread pool of the client, recording into the session's ledger.

    Args:
        ledger: the session's ledger.
        max_workers: the pool's size.
    """

    def __init__(self, ledger: Ledger, max_workers: int) -> None:
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
        max_workers: the pool's size.
        components: the manifest's components (their ``env`` is set while their tasks run).
        lost: records ``task/failed`` for a task whose worker process died.
    """

    def __init__(self, max_workers: int, components: Mapping[str, ComponentSpec], lost: Lost) -> None:
        self._size = max_workers
        self._variables = {name: dict(spec.env) for name, spec in components.items() if spec.env}
        self._lost = lost
        self._lock = threading.Lock()
        self._pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        # forkserver: children never inherit a lock another thread of the client held at fork.
        return concurrent.futures.ProcessPoolExecutor(self._size, mp_context=multiprocessing.get_context("forkserver"))

    def submit(
        self, env: TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> concurrent.futures.Future[Any]:
        """Start the task in a worker process; its future completes once its events are appended."""
        variables = self._variables.get(env.component or "")
        with self._lock:
            try:
                inner = self._pool.submit(run_in_process, env, fn, args, kwargs, variables)
            except BrokenProcessPool:  # a worker died under an earlier task: start a fresh pool
                self._pool = self._new_pool()
                inner = self._pool.submit(run_in_process, env, fn, args, kwargs, variables)
        outer: concurrent.futures.Future[Any] = concurrent.futures.Future()
        began = time.monotonic()

        def settle(done: concurrent.futures.Future[Any]) -> None:
            if outer.done():
                return
            if done.cancelled():
                outer.cancel()
                return
            error = done.exception()
            if isinstance(error, BrokenProcessPool):
                error = WorkerLostError(
                    f"task {env.task_name!r} of run {env.run_id!r} was lost: its worker process died "
                    "(killed, or out of memory) before the task finished; its events are lost with it"
                )
                try:
                    self._lost(env, error, time.monotonic() - began)
                except Exception as exc:  # the caller must still hear of the lost task
                    _log.error("session.task_failed_not_recorded", task=env.task_name, error=repr(exc))
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled meanwhile
                if error is not None:
                    outer.set_exception(error)
                else:
                    outer.set_result(done.result())

        outer.add_done_callback(lambda f: f.cancelled() and inner.cancel())
        inner.add_done_callback(settle)
        return outer

    def shutdown(self, *, cancel: bool) -> None:
        """Wait for running tasks (cancelling queued ones with ``cancel``) and stop the processes."""
        with self._lock:
            pool = self._pool
        pool.shutdown(wait=True, cancel_futures=cancel)


def start(deployment: Deployment) -> ThreadRunner | ProcessRunner:
    """Start the runner of a ``local`` target: processes with ``processes: true``, else threads."""
    options = deployment.target.provider_options
    if options.get("processes"):
        return ProcessRunner(pool_size(options, os.cpu_count() or 1), deployment.components, deployment.lost)
    return ThreadRunner(deployment.ledger, pool_size(options, min(32, (os.cpu_count() or 1) + 4)))


def recorded_only(target: TargetSpec, components: Mapping[str, ComponentSpec]) -> list[str]:
    """Keys a ``local`` target records without acting on them.

    No dashboard is started, containers are not run (``containers`` other than ``none``),
    and components' resources are not reserved; their ``env`` is set only in worker processes.
    """
    keys = [f"targets.{target.name}.dashboard_address"]
    containers = target.provider_options.get("containers")
    if isinstance(containers, str) and containers.strip().lower() != "none":
        keys.append(f"targets.{target.name}.containers")
    kept = [k for k in COMPONENT_KEYS if k != "env" or not target.provider_options.get("processes")]
    return keys + component_keys(components, kept)
