"""The ``dask`` provider: tasks on a dask.distributed cluster (a scheduler address, or a LocalCluster).

A worker may share no filesystem with the client, so each task records into a throw-away
ledger of its own (:func:`~scalable.targets.tasks.run_captured`); its lines travel back with
its result and are delivered to the client's ledger before the future the caller holds
completes. A task whose worker dies loses only its own events.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from scalable.errors import MissingDependencyError, SessionError
from scalable.ledger.log import Ledger
from scalable.logs import mask_secrets
from scalable.manifest import TargetSpec
from scalable.targets.tasks import Outcome, TaskEnv, run_captured

__all__ = ["DaskRunner", "start"]

Deliver = Callable[[Mapping[str, Sequence[bytes]]], None]


class DaskRunner:
    """Tasks on a Dask cluster, their events delivered to the client when each comes back.

    Args:
        target: the target (its name is used in messages; its options configure the cluster).
        deliver: appends a task's event lines (by run id) to the client's ledger.

    Raises:
        MissingDependencyError: ``distributed`` is not installed.
        SessionError: the scheduler cannot be reached, or the local cluster cannot start.
    """

    def __init__(self, target: TargetSpec, deliver: Deliver) -> None:
        try:
            dist: Any = importlib.import_module("distributed")
        except ImportError:
            raise MissingDependencyError(
                f"target {target.name!r} uses Dask; install it with: pip install 'scalable[dask]'"
            ) from None
        self._deliver = deliver
        self._cluster: Any = None
        options = target.options
        address = options.get("address")
        try:
            if address:
                self._client: Any = dist.Client(address, set_as_default=False, timeout=options.get("timeout", 30))
            else:
                self._cluster = dist.LocalCluster(
                    n_workers=options.get("n_workers", 2),
                    threads_per_worker=options.get("threads_per_worker", 1),
                    processes=options.get("processes", True),
                    memory_limit=options.get("memory_limit", "auto"),
                    dashboard_address=":0",
                )
                self._client = dist.Client(self._cluster, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            where = f"scheduler {address!r}" if address else "a local Dask cluster"
            raise SessionError(
                f"target {target.name!r}: cannot connect to {where}: {mask_secrets(str(exc))}; "
                "check that the scheduler is running and reachable"
            ) from None
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._cond = threading.Condition()
        self._remote: set[Any] = set()

    def submit(
        self, env: TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> concurrent.futures.Future[Any]:
        """Start the task on the cluster; its future completes once its events are delivered."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        with self._cond:
            self._pending.add(future)
        remote = self._client.submit(
            run_captured, env, fn, tuple(args), dict(kwargs), key=f"{env.task_name}-{env.task_id}", pure=False
        )
        with self._cond:
            self._remote.add(remote)
        remote.add_done_callback(lambda done: self._settle(done, future))
        return future

    def _settle(self, remote: Any, future: concurrent.futures.Future[Any]) -> None:
        try:
            try:
                outcome: Outcome = remote.result()
            except BaseException as exc:  # the task never came back: cancelled, worker lost
                future.set_exception(exc)
                return
            try:
                self._deliver(outcome.lines)
            except BaseException as exc:
                future.set_exception(exc)
                return
            if outcome.error is not None:
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome.value)
        finally:
            with contextlib.suppress(Exception):
                remote.release()
            with self._cond:
                self._pending.discard(future)
                self._remote.discard(remote)
                self._cond.notify_all()

    def shutdown(self, *, cancel: bool) -> None:
        """Wait for tasks to come back (cancelling them with ``cancel``), then close the client and cluster."""
        if cancel:
            with self._cond:
                remotes = list(self._remote)
            for remote in remotes:
                with contextlib.suppress(Exception):
                    remote.cancel()
        with self._cond:
            self._cond.wait_for(lambda: not self._pending, timeout=None if not cancel else 30)
        with contextlib.suppress(Exception):
            self._client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()


def start(target: TargetSpec, ledger: Ledger, deliver: Deliver) -> DaskRunner:
    """Start the runner of a ``dask`` target (the client's ledger is reached through ``deliver``)."""
    return DaskRunner(target, deliver)
