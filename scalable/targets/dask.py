"""The ``dask`` provider: tasks on a dask.distributed cluster (a scheduler address, or a LocalCluster).

A worker may share no filesystem with the client, so each task records into a throw-away
ledger of its own (:func:`~scalable.targets.tasks.run_captured`); its lines travel back with
its result and are delivered to the client's ledger before the future the caller holds
completes. A task whose worker dies loses only its own events; one that never comes back
(Dask gave up after its workers died, or it was cancelled) is recorded as ``task/failed``
on the client, so no task of the run is left without an end.

On a ``LocalCluster`` scalable starts, components' ``cpus`` and ``memory`` are Dask worker
resources: each worker offers ``cpus`` (its threads) and ``memory`` (its memory limit, in
bytes), and a task of a component takes the component's share while it runs. The workers'
environment holds every component's ``env``. :class:`DaskRunner` is shared by the providers
whose workers are Dask workers (``slurm`` too).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scalable.errors import ConfigError, MissingDependencyError, SessionError, WorkerLostError
from scalable.logs import get_logger, mask_secrets
from scalable.manifest import ComponentSpec, TargetSpec
from scalable.providers import PROVIDERS
from scalable.targets import COMPONENT_KEYS, Deliver, Deployment, Lost, component_keys
from scalable.targets.tasks import Outcome, TaskEnv, run_captured

__all__ = [
    "DaskRunner",
    "component_resources",
    "import_distributed",
    "merged_env",
    "recorded_only",
    "start",
]

_log = get_logger("scalable.session")
#: Seconds between two checks that every waiting task still has workers that can run it.
WATCH_INTERVAL_S = 5.0
#: Given the components of the waiting tasks (``None``: tasks of no component), returns why
#: those that no worker can run any more cannot (``{"model": "its Slurm job 12 ended"}``).
Stranded = Callable[[set[str | None]], Mapping[str | None, str]]


def import_distributed(target: TargetSpec, extra: str = "dask") -> Any:
    """Import ``distributed``, or say how to install it.

    Raises:
        MissingDependencyError: it is not installed.
    """
    try:
        return importlib.import_module("distributed")
    except ImportError:
        raise MissingDependencyError(
            f"target {target.name!r} uses Dask; install it with: pip install 'scalable[{extra}]'"
        ) from None


def component_resources(component: ComponentSpec) -> dict[str, float]:
    """The Dask resources a task of ``component`` takes: its ``cpus``, and its ``memory`` in bytes."""
    from dask.utils import parse_bytes

    wanted: dict[str, float] = {"cpus": component.cpus}
    if component.memory is not None:
        wanted["memory"] = parse_bytes(component.memory)
    return wanted


def merged_env(target: TargetSpec, components: Mapping[str, ComponentSpec]) -> dict[str, str]:
    """Every component's ``env`` in one environment, for workers that all components share.

    Raises:
        ConfigError: two components give one variable different values.
    """
    merged: dict[str, str] = {}
    owner: dict[str, str] = {}
    for name, spec in components.items():
        for key, value in spec.env.items():
            if key in merged and merged[key] != value:
                raise ConfigError(
                    f"target {target.name!r}: components {owner[key]!r} and {name!r} set {key} to different "
                    f"values, and this target's workers are shared by every component; give them one value, "
                    "or run them on a slurm target, whose components get workers of their own"
                )
            merged[key] = value
            owner.setdefault(key, name)
    return merged


@dataclass
class _Task:
    """A submitted task: what it is, the future its caller holds, and its Dask future."""

    env: TaskEnv
    future: concurrent.futures.Future[Any]
    began: float
    remote: Any = None
    settled: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class DaskRunner:
    """Tasks on a Dask cluster, their events delivered to the client when each comes back.

    Args:
        deployment: the target, the components and the ways back to the client's ledger.
        client: a ``distributed.Client`` of the cluster.
        cluster: the cluster scalable started (closed at shutdown), or ``None``.
        resources: the Dask resources a task takes, by component (none for the others).
        describe_worker: a phrase naming a worker (by its address and name) in messages.
        stranded: finds components whose tasks no worker can run any more; ``None``
            when the cluster replaces its workers itself.
    """

    def __init__(
        self,
        deployment: Deployment,
        client: Any,
        cluster: Any = None,
        *,
        resources: Mapping[str, Mapping[str, float]] | None = None,
        describe_worker: Callable[[str, str], str] | None = None,
        stranded: Stranded | None = None,
    ) -> None:
        self._target = deployment.target
        self._deliver: Deliver = deployment.deliver
        self._lost: Lost = deployment.lost
        self._client = client
        self._cluster = cluster
        self._resources = dict(resources or {})
        self._describe = describe_worker or (lambda address, name: f"worker {address}")
        self._stranded = stranded
        self._cond = threading.Condition()
        self._tasks: dict[int, _Task] = {}
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if stranded is not None:
            self._watcher = threading.Thread(target=self._watch, name="scalable-worker-watch", daemon=True)
            self._watcher.start()

    def submit(
        self, env: TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> concurrent.futures.Future[Any]:
        """Start the task on the cluster; its future completes once its events are delivered."""
        task = _Task(env, concurrent.futures.Future(), time.monotonic())
        task.future.set_running_or_notify_cancel()
        with self._cond:
            self._tasks[id(task)] = task
        task.remote = self._client.submit(
            run_captured,
            env,
            fn,
            tuple(args),
            dict(kwargs),
            key=f"{env.task_name}-{env.task_id}",
            pure=False,
            resources=self._resources.get(env.component or ""),
        )
        task.remote.add_done_callback(lambda done: self._settle(task))
        return task.future

    def _settle(self, task: _Task) -> None:
        """Finish the caller's future from the Dask future: deliver the events, then the result."""
        with task.lock:
            if task.settled:
                return
            task.settled = True
        try:
            try:
                outcome: Outcome = task.remote.result()
            except BaseException as exc:  # the task never came back: cancelled, workers lost
                self._fail(task, self._lost_error(task.env, exc))
                return
            try:
                self._deliver(outcome.lines)
            except BaseException as exc:
                task.future.set_exception(exc)
                return
            if outcome.error is not None:
                task.future.set_exception(outcome.error)
            else:
                task.future.set_result(outcome.value)
        finally:
            self._release(task)

    def _fail(self, task: _Task, error: BaseException) -> None:
        """Record ``task/failed`` on the client for a task that did not come back, then fail its future."""
        try:
            self._lost(task.env, error, time.monotonic() - task.began)
        except BaseException as exc:  # the failure is the caller's news; a ledger error must not hide it
            _log.error("session.task_failed_not_recorded", task=task.env.task_name, error=repr(exc))
        task.future.set_exception(error)

    def _release(self, task: _Task) -> None:
        with contextlib.suppress(Exception):
            task.remote.release()
        with self._cond:
            self._tasks.pop(id(task), None)
            self._cond.notify_all()

    def _lost_error(self, env: TaskEnv, exc: BaseException) -> BaseException:
        """The error a caller gets for a task that never came back (``KilledWorker`` becomes ours)."""
        if type(exc).__name__ != "KilledWorker":
            return exc
        worker = getattr(exc, "last_worker", None)
        where = self._describe(str(getattr(worker, "address", "?")), str(getattr(worker, "name", "")))
        return WorkerLostError(
            f"task {env.task_name!r} of run {env.run_id!r} was lost: {where} ended before the task finished "
            f"(target {self._target.name!r}); the task's events on that worker are lost with it"
        )

    def _watch(self) -> None:
        """Fail the waiting tasks of components that no worker can run any more."""
        assert self._stranded is not None
        while not self._stop.wait(WATCH_INTERVAL_S):
            with self._cond:
                waiting = [t for t in self._tasks.values() if not t.settled]
            if not waiting:
                continue
            try:
                reasons = self._stranded({t.env.component for t in waiting})
            except Exception as exc:  # a check that cannot be made now is made again later
                _log.warning("session.worker_check_failed", target=self._target.name, error=mask_secrets(str(exc)))
                continue
            for task in waiting:
                reason = reasons.get(task.env.component)
                if reason is None:
                    continue
                with task.lock:
                    if task.settled:
                        continue
                    task.settled = True
                error = WorkerLostError(
                    f"task {task.env.task_name!r} of run {task.env.run_id!r} cannot run: {reason} "
                    f"(target {self._target.name!r})"
                )
                with contextlib.suppress(Exception):
                    task.remote.cancel()
                self._fail(task, error)
                self._release(task)

    def shutdown(self, *, cancel: bool) -> None:
        """Wait for tasks to come back (cancelling them with ``cancel``), then close the client and cluster."""
        if cancel:
            with self._cond:
                remotes = [t.remote for t in self._tasks.values()]
            for remote in remotes:
                with contextlib.suppress(Exception):
                    remote.cancel()
        with self._cond:
            self._cond.wait_for(lambda: not self._tasks, timeout=None if not cancel else 30)
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        with contextlib.suppress(Exception):
            self._client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()


def _local_cluster(dist: Any, deployment: Deployment, options: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Start the LocalCluster of a ``dask`` target; return it and the resources of its tasks."""
    from dask.utils import format_bytes
    from distributed.worker_memory import parse_memory_limit

    target = deployment.target
    threads = int(options["threads_per_worker"])
    memory = parse_memory_limit(
        options["memory_limit"],
        threads,
        total_cores=threads * int(options["n_workers"]),
        logger=logging.getLogger("distributed.worker_memory"),
    )
    offered: dict[str, float] = {"cpus": threads}
    if memory:
        offered["memory"] = memory
    wanted: dict[str, Any] = {}
    for name in deployment.workers:
        spec = deployment.components[name]
        wanted[name] = component_resources(spec)
        if not memory:  # workers without a memory limit offer no memory to hold
            wanted[name].pop("memory", None)
        if spec.cpus > threads:
            raise ConfigError(
                f"target {target.name!r}: component {name!r} asks for {spec.cpus} cpus but each worker has "
                f"{threads} (threads_per_worker); raise the target's threads_per_worker or lower the component's cpus"
            )
        if memory and wanted[name].get("memory", 0) > memory:
            raise ConfigError(
                f"target {target.name!r}: component {name!r} asks for {spec.memory} of memory but each worker has "
                f"{format_bytes(memory)} (memory_limit); raise the target's memory_limit or lower the component's memory"
            )
    extra: dict[str, Any] = {}
    if options["processes"]:
        extra["env"] = merged_env(target, deployment.components)
    cluster = dist.LocalCluster(
        n_workers=options["n_workers"],
        threads_per_worker=threads,
        processes=options["processes"],
        memory_limit=memory or 0,
        dashboard_address=":0",
        resources=offered,
        **extra,
    )
    return cluster, wanted


def start(deployment: Deployment) -> DaskRunner:
    """Start the runner of a ``dask`` target: connect to ``address``, else start a LocalCluster.

    Raises:
        MissingDependencyError: ``distributed`` is not installed.
        ConfigError: a component asks for more than a worker has, or two components set one
            variable to different values.
        SessionError: the scheduler cannot be reached, or the local cluster cannot start.
    """
    target = deployment.target
    dist = import_distributed(target)
    options = PROVIDERS["dask"].resolve(target.provider_options)
    address = options["address"]
    cluster: Any = None
    resources: dict[str, Any] = {}
    try:
        if address:
            client = dist.Client(address, set_as_default=False, timeout=options["timeout"])
        else:
            cluster, resources = _local_cluster(dist, deployment, options)
            client = dist.Client(cluster, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.close()
        where = f"scheduler {address!r}" if address else "a local Dask cluster"
        raise SessionError(
            f"target {target.name!r}: cannot connect to {where}: {mask_secrets(str(exc))}; "
            "check that the scheduler is running and reachable"
        ) from None
    return DaskRunner(deployment, client, cluster, resources=resources)


def recorded_only(target: TargetSpec, components: Mapping[str, ComponentSpec]) -> list[str]:
    """Keys a ``dask`` target records without acting on them.

    With ``address`` the workers are not scalable's to size or configure, so every component
    key is recorded only; on its own LocalCluster ``cpus``, ``memory`` and (with worker
    processes) ``env`` are honoured, containers and preload scripts are not.
    """
    options = PROVIDERS["dask"].resolve(target.provider_options)
    if options["address"]:
        return component_keys(components, COMPONENT_KEYS)
    honoured = {"cpus", "memory", *(["env"] if options["processes"] else [])}
    return component_keys(components, [k for k in COMPONENT_KEYS if k not in honoured])
