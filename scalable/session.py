"""ScalableSession: one run of a workflow, its events, and its tasks on threads, processes or Dask.

A session brackets a run. ``from_yaml`` reads the manifest and starts nothing; ``start()`` (or
``with``, or the first call that needs a run) writes ``run/started`` with the manifest's lock
and makes the session's ledger the active one; ``close()`` writes ``run/finished`` with the
status and the seal of every writer's chain head.

Tasks and their events:

* ``local`` target, threads (default): tasks append to the session's ledger directly.
* ``local`` target, ``processes: true``: each worker process appends to the run's stream
  itself (same filesystem), under its own writer id.
* ``dask`` target: a worker may share no filesystem with the client. Each task runs with a
  throw-away ledger of its own (a fresh writer, its own chain) in a temporary directory of the
  worker; the task's lines travel back with its result and the client appends them to the
  run's stream unchanged (:meth:`~scalable.ledger.log.Ledger.append_lines`), before the
  future the caller holds completes. A task whose worker dies loses only its own events.

Inside every task, whatever the target, the run id, task name and component are the context
of every event it raises (puts, records, cache), and ``task/started``, ``task/finished`` and
``task/failed`` (with error type and message) are recorded with a ``task_id`` unique to the
submission.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import getpass
import importlib
import multiprocessing
import os
import pickle
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote, urlparse

from scalable.cache import Cache
from scalable.cache import using as cache_using
from scalable.errors import (
    ArtifactNotFoundError,
    ConfigError,
    IntegrityError,
    LedgerWriteError,
    MissingDependencyError,
    SessionError,
    StoreUnreachableError,
)
from scalable.ledger import bus, context
from scalable.ledger.context import make_run_id
from scalable.ledger.log import Ledger
from scalable.ledger.stream import STREAM_NAME, read_stream
from scalable.logs import get_logger, mask_secrets
from scalable.manifest import Manifest, TargetSpec, load_manifest
from scalable.settings import FsyncMode, Settings, load_settings
from scalable.stores import ArtifactRef, ArtifactStore, build_artifact_store
from scalable.stores._digest import file_digest, tree_digest, walk_tree

__all__ = ["ScalableSession", "TaskSession"]

_log = get_logger("scalable.session")
_BUCKET_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs"})
_STATUSES = ("completed", "failed", "interrupted")
#: How often an open run with ``SCALABLE_RUNS_DIR_REMOTE`` ships its new lines to the remote.
REMOTE_SYNC_INTERVAL_S = 30.0
_MAX_ERROR = 2000


# --- what a task carries to wherever it runs -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _TaskEnv:
    """Everything a task needs on its worker: who it is and the session's settings."""

    run_id: str
    task_name: str
    task_id: str
    component: str | None
    settings: Settings


class _Outcome(NamedTuple):
    """What a Dask task sends back: its value or exception, and its event lines by run."""

    value: Any
    error: BaseException | None
    lines: dict[str, list[bytes]]


def _error_text(exc: BaseException) -> str:
    return mask_secrets(str(exc))[:_MAX_ERROR]


_caches: dict[tuple[Any, ...], Cache] = {}
_caches_lock = threading.Lock()


def _session_cache(settings: Settings) -> Cache:
    """The result cache of a session's settings in this process (built once per process)."""
    key = (os.getpid(), settings.cache_dir, settings.cache_remote, settings.cache_hmac_key)
    cache = _caches.get(key)
    if cache is None:
        with _caches_lock:
            cache = _caches.get(key)
            if cache is None:
                cache = _caches[key] = Cache.from_settings(settings)
    return cache


def _execute(ledger: Ledger, env: _TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """Run ``fn`` as the task ``env`` with ``ledger`` and the session's cache active, recording task events."""
    telemetry = ledger.settings.telemetry
    base = {"event_type": "task", "run_id": env.run_id, "task_name": env.task_name, "component": env.component}
    with bus.activate(ledger, scoped=True), cache_using(_session_cache(env.settings)), context.bind(
        run_id=env.run_id, task_name=env.task_name, component=env.component
    ):
        if telemetry:
            ledger.append({**base, "op": "started", "attrs": {"task_id": env.task_id, "pid": os.getpid()}})
        start = time.perf_counter()
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:
            ledger.flush()  # events the task queued (cache hits) land before its end
            if telemetry:
                attrs = {"task_id": env.task_id, "error_type": type(exc).__name__, "error": _error_text(exc)}
                try:
                    ledger.append({**base, "op": "failed", "duration_s": time.perf_counter() - start, "attrs": attrs})
                except Exception as log_exc:  # never hide the task's own exception
                    _log.error("session.task_failed_not_recorded", task=env.task_name, error=repr(log_exc))
            raise
        ledger.flush()
        if telemetry:
            ledger.append(
                {**base, "op": "finished", "duration_s": time.perf_counter() - start, "attrs": {"task_id": env.task_id}}
            )
        return value


_process_ledgers: dict[tuple[Any, ...], Ledger] = {}
_process_lock = threading.Lock()


def _process_ledger(settings: Settings) -> Ledger:
    """The ledger this worker process appends to for the given session settings."""
    key = (os.getpid(), settings.runs_dir, settings.ledger_dir, settings.ledger_fsync, settings.telemetry)
    with _process_lock:
        ledger = _process_ledgers.get(key)
        if ledger is None or ledger._closed:
            ledger = _process_ledgers[key] = Ledger(settings)
        return ledger


def _run_in_process(env: _TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
    """Task body of the ``local`` target with processes: append to the run's stream directly."""
    return _execute(_process_ledger(env.settings), env, fn, args, kwargs)


def _run_captured(env: _TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> _Outcome:
    """Task body on a Dask worker: record into a private ledger and return its lines."""
    scratch = tempfile.mkdtemp(prefix="scalable-task-")
    try:
        settings = dataclasses.replace(env.settings, runs_dir=Path(scratch), ledger_fsync=FsyncMode.NEVER)
        ledger = Ledger(settings)
        ledger.default_run_id = env.run_id
        value: Any = None
        error: BaseException | None = None
        try:
            value = _execute(ledger, env, fn, args, kwargs)
        except Exception as exc:
            error = exc
        finally:
            ledger.close()
        lines: dict[str, list[bytes]] = {}
        for stream in sorted(Path(scratch).glob(f"*/{STREAM_NAME}")):
            lines[stream.parent.name] = [raw for _n, raw, _r in read_stream(stream).lines()]
        if error is not None:
            try:
                pickle.dumps(error)
            except Exception:
                error = SessionError(
                    f"task {env.task_name!r} failed with {type(error).__name__}: {_error_text(error)} "
                    "(the exception itself could not be sent back from the worker)"
                )
        return _Outcome(value, error, lines)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# --- targets -----------------------------------------------------------------------------------


class _Runner(Protocol):
    """Runs tasks of one target; ``submit`` returns a future that completes after the events."""

    def submit(
        self, env: _TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> concurrent.futures.Future[Any]:
        """Start the task; its future completes once its events are in the run's stream."""
        ...

    def shutdown(self, *, cancel: bool) -> None:
        """Wait for running tasks (cancelling queued ones with ``cancel``) and free the workers."""
        ...


class _ThreadRunner:
    def __init__(self, ledger: Ledger, max_workers: int | None) -> None:
        self._ledger = ledger
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="scalable-task")

    def submit(
        self, env: _TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> concurrent.futures.Future[Any]:
        # The caller's context variables (log context, user state) flow into the task.
        return self._pool.submit(contextvars.copy_context().run, _execute, self._ledger, env, fn, args, kwargs)

    def shutdown(self, *, cancel: bool) -> None:
        self._pool.shutdown(wait=True, cancel_futures=cancel)


class _ProcessRunner:
    def __init__(self, max_workers: int | None) -> None:
        # forkserver: children never inherit a lock another thread of the client held at fork.
        self._pool = concurrent.futures.ProcessPoolExecutor(max_workers, mp_context=multiprocessing.get_context("forkserver"))

    def submit(
        self, env: _TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> concurrent.futures.Future[Any]:
        return self._pool.submit(_run_in_process, env, fn, args, kwargs)

    def shutdown(self, *, cancel: bool) -> None:
        self._pool.shutdown(wait=True, cancel_futures=cancel)


class _DaskRunner:
    def __init__(self, session: ScalableSession, options: Mapping[str, Any]) -> None:
        try:
            dist: Any = importlib.import_module("distributed")
        except ImportError:
            raise MissingDependencyError(
                f"target {session.target.name!r} uses Dask; install it with: pip install 'scalable[dask]'"
            ) from None
        self._session = session
        self._cluster: Any = None
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
                f"target {session.target.name!r}: cannot connect to {where}: {mask_secrets(str(exc))}; "
                "check that the scheduler is running and reachable"
            ) from None
        self._pending: set[concurrent.futures.Future[Any]] = set()
        self._cond = threading.Condition()
        self._remote: set[Any] = set()

    def submit(
        self, env: _TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        with self._cond:
            self._pending.add(future)
        remote = self._client.submit(_run_captured, env, fn, tuple(args), dict(kwargs), key=f"{env.task_name}-{env.task_id}", pure=False)
        with self._cond:
            self._remote.add(remote)
        remote.add_done_callback(lambda done: self._settle(done, future))
        return future

    def _settle(self, remote: Any, future: concurrent.futures.Future[Any]) -> None:
        try:
            try:
                outcome: _Outcome = remote.result()
            except BaseException as exc:  # the task never came back: cancelled, worker lost
                future.set_exception(exc)
                return
            try:
                self._session._append_foreign(outcome.lines)
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


# --- artifacts -----------------------------------------------------------------------------------


def _is_remote(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _local_path(location: str | os.PathLike[str]) -> Path:
    text = os.fspath(location)
    if text.startswith("file://"):
        return Path(unquote(urlparse(text).path))
    return Path(os.path.abspath(Path(text).expanduser()))


def _measure(path: Path) -> tuple[str, int, str]:
    """Return (kind, size, digest) of a local file or directory, hashed as the stores hash."""
    if path.is_dir():
        digests: dict[str, str] = {}
        total = 0
        for rel, full in walk_tree(path):
            digests[rel] = file_digest(full)
            total += full.stat().st_size
        return "dir", total, tree_digest(digests)
    return "file", path.stat().st_size, file_digest(path)


def _input_ref(value: str | os.PathLike[str]) -> str:
    text = os.fspath(value)
    if _is_remote(text) or text.startswith("file://"):
        return text
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text  # a digest
    return _local_path(text).as_uri()


def _check_writable(path: Path, what: str, setting: str, error: type[Exception]) -> None:
    """Raise ``error`` unless ``path`` is, or can be created as, a writable directory."""
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise error(f"{what} {str(path)!r} cannot be written ({probe} is not a writable directory); fix {setting}")


class TaskSession:
    """What a session is inside a task on another process: record and put, into the task's run.

    A :class:`ScalableSession` that travels to a worker (as an argument or in a closure)
    arrives as this object; events go to the ledger active there, in the task's context.
    """

    def __init__(self, run_id: str, settings: Settings, project: str, target: str, components: Mapping[str, str]) -> None:
        self.run_id = run_id
        self.settings = settings
        self.project = project
        self.target_name = target
        self._components = dict(components)
        self._store: ArtifactStore | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskSession, (self.run_id, self.settings, self.project, self.target_name, self._components))

    @property
    def ledger(self) -> Ledger:
        """The ledger events raised here go to."""
        return bus.active()

    @property
    def store(self) -> ArtifactStore:
        """The default-storage artifact store (``project.default_storage``)."""
        if self._store is None:
            self._store = build_artifact_store(self.settings.default_storage)
        return self._store

    def _emit(self, event: dict[str, Any]) -> dict[str, Any] | None:
        return bus.publish(event)

    def _ready(self) -> None:
        """Make sure the run is open (a no-op inside a task)."""

    def record_artifact(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        task_name: str | None = None,
        artifact_name: str | None = None,
        location: str | os.PathLike[str] | None = None,
        component: str | None = None,
        kind: str | None = None,
        size_bytes: int | None = None,
        digest: str | None = None,
        inputs: Iterable[str | os.PathLike[str]] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Record an artifact of the run (``artifact/recorded``); nothing is copied.

        Two forms: the seed's ``record_artifact("output.csv", kind="result")`` and Scalable's
        keywords (``task_name=``, ``artifact_name=``, ``location=``, ``component=``, ``kind=``,
        ``size_bytes=``, ``digest=``). When the artifact is local, its size and SHA-256 (a tree
        digest for directories) are computed.

        Args:
            path: a local file or directory the run produced; it must exist.
            task_name: the task that produced it (default: the current task).
            artifact_name: its name (default: the file name).
            location: its URI when it is not a local path (``s3://...``), recorded as given.
            component: the manifest component (default: the task's).
            kind: a label such as ``result`` (default: ``file`` or ``dir``).
            size_bytes: size, for artifacts that are not local.
            digest: SHA-256 hex, for artifacts that are not local.
            inputs: digests, URIs or local paths it was derived from (lineage edges).
            metadata: free metadata, stored in ``attrs``.

        Returns:
            The event as written, or ``None`` when telemetry is off.

        Raises:
            SessionError: neither ``path`` nor ``location`` is given.
            ArtifactNotFoundError: ``path`` does not exist.
            IntegrityError: a given ``size_bytes``/``digest`` disagrees with the local bytes.
        """
        if path is None and location is None:
            raise SessionError("record_artifact needs a path or location=; e.g. record_artifact('output.csv', kind='result')")
        if path is not None and location is None and _is_remote(os.fspath(path)):
            location, path = os.fspath(path), None  # a URI given positionally is a location
        local: Path | None = None
        if path is not None:
            local = _local_path(path)
            if not local.exists():
                raise ArtifactNotFoundError(f"artifact {os.fspath(path)!r} does not exist ({local}); write it before recording it")
        elif location is not None and not _is_remote(os.fspath(location)):
            candidate = _local_path(location)
            local = candidate if candidate.exists() else None
        where = os.fspath(location) if location is not None else (local.as_uri() if local else "")
        if local is None and not _is_remote(where) and not where.startswith("file://"):
            where = _local_path(where).as_uri()
        measured_kind: str | None = None
        if local is not None:
            measured_kind, measured_size, measured_digest = _measure(local)
            if size_bytes is not None and size_bytes != measured_size:
                raise IntegrityError(f"artifact {str(local)!r} has {measured_size} bytes, not size_bytes={size_bytes}")
            if digest is not None and digest != measured_digest:
                raise IntegrityError(f"artifact {str(local)!r} has digest {measured_digest}, not digest={digest}")
            size_bytes, digest = measured_size, measured_digest
        name = artifact_name or (local.name if local is not None else where.rstrip("/").rsplit("/", 1)[-1])
        event: dict[str, Any] = {
            "event_type": "artifact",
            "op": "recorded",
            "run_id": self.run_id,
            "artifact_name": name,
            "location": where,
            "kind": kind or measured_kind,
            "size_bytes": size_bytes,
            "digest": digest,
            "inputs": [_input_ref(i) for i in inputs] if inputs is not None else None,
            "attrs": dict(metadata) if metadata else None,
        }
        if task_name is not None:
            event["task_name"] = task_name
            event["component"] = component or self._components.get(task_name)
        elif component is not None:
            event["component"] = component
        self._ready()
        return self._emit(event)

    def put(self, local_path: str | os.PathLike[str], key: str | None = None, *, kind: str | None = None) -> ArtifactRef:
        """Store a local file or directory in the default storage under ``runs/<run_id>/``.

        The store records the ``artifact/put`` event (with size and digest) in the run.

        Args:
            local_path: the file or directory to store.
            key: its key below ``runs/<run_id>/`` (default: its file name).
            kind: ``file``, ``dir`` or ``blob`` (default: from the path).

        Returns:
            The store's ``ArtifactRef`` (``uri``, ``digest``, ``size_bytes``).

        Raises:
            ArtifactNotFoundError: ``local_path`` does not exist.
            InvalidKeyError: ``key`` escapes the run's prefix (``..``, NUL...).
            StoreError: the store failed.
        """
        self._ready()
        name = key if key is not None else _local_path(local_path).name
        return self.store.put(local_path, f"runs/{self.run_id}/{name.lstrip('/')}", kind=kind)


# --- the session -----------------------------------------------------------------------------------

# The exception that is ending the interpreter, seen by sys.excepthook before atexit runs, so
# a run still open at exit ends failed or interrupted instead of completed.
_uncaught: BaseException | None = None
_hook_lock = threading.Lock()
_hook_installed = False


def _install_excepthook() -> None:
    global _hook_installed
    with _hook_lock:
        if _hook_installed:
            return
        previous = sys.excepthook

        def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
            global _uncaught
            _uncaught = exc
            previous(exc_type, exc, tb)

        sys.excepthook = hook
        _hook_installed = True



class ScalableSession(TaskSession):
    """One run of a project: its events, its artifacts and its tasks on a target.

    Build it with :meth:`from_yaml`; use it as a context manager or call :meth:`start` and
    :meth:`close`. Attributes: ``run_id``, ``ledger``, ``store``, ``settings``, ``manifest``,
    ``target``.
    """

    def __init__(
        self,
        manifest: Manifest | None = None,
        *,
        target: str | None = None,
        default_storage: str | None = None,
        local_cache: str | os.PathLike[str] | None = None,
        runs_dir: str | os.PathLike[str] | None = None,
        ledger_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        """Prepare a session; nothing starts and nothing is written yet.

        Args:
            manifest: the parsed manifest (``None``: project ``adhoc``, local target only).
            target: target name; ``SCALABLE_TARGET``, else ``local``, else the first target.
            default_storage: overrides ``SCALABLE_DEFAULT_STORAGE`` and the manifest.
            local_cache: overrides ``SCALABLE_CACHE_DIR`` and ``project.local_cache``.
            runs_dir: overrides ``SCALABLE_RUNS_DIR``.
            ledger_dir: overrides ``SCALABLE_LEDGER_DIR``.

        Raises:
            ManifestError: ``target`` is not a target of the manifest.
            ConfigError: a setting is invalid.
        """
        name = target or os.environ.get("SCALABLE_TARGET") or None
        if manifest is not None:
            spec = manifest.target(name)
        elif name in (None, "local"):
            spec = TargetSpec("local", "local", {})
        else:
            raise ConfigError(f"target {name!r} needs a manifest that defines it; without one only 'local' exists")
        settings = load_settings(
            manifest_project=manifest.project.settings_mapping() if manifest else None,
            manifest_dir=manifest.directory if manifest else None,
            default_storage=default_storage,
            cache_dir=local_cache,
            runs_dir=runs_dir,
            ledger_dir=ledger_dir,
            manifest=manifest.path if manifest else None,
            target=spec.name,
        )
        project = manifest.project.name if manifest else "adhoc"
        components = {t.name: t.component for t in manifest.tasks.values()} if manifest else {}
        super().__init__(make_run_id(project), settings, project, spec.name, components)
        self.manifest = manifest
        self.target = spec
        self._ledger = Ledger(settings)
        # What tasks carry to workers: the seal key stays with the client, which alone seals.
        self._task_settings = dataclasses.replace(settings, ledger_key=None)
        self._lock = threading.RLock()
        self._state = "new"
        self._implicit = False
        self._runner: _Runner | None = None
        self._halt_remote_sync: Callable[[], None] | None = None
        self._exit = contextlib.ExitStack()
        self._submitted = 0
        self._failed = 0
        self._sealed = False

    @classmethod
    def from_yaml(
        cls, path: str | os.PathLike[str] | None = None, *, target: str | None = None, **overrides: Any
    ) -> ScalableSession:
        """Read a manifest and prepare a session on one of its targets; nothing starts yet.

        Args:
            path: the manifest; ``SCALABLE_MANIFEST`` or ``./scalable.yaml`` when omitted.
            target: target name; ``SCALABLE_TARGET``, else ``local``, else the first target.
            **overrides: ``default_storage``, ``local_cache``, ``runs_dir``, ``ledger_dir``.

        Raises:
            ManifestError: the manifest is missing or invalid, or ``target`` is unknown.
        """
        return cls(load_manifest(path), target=target, **overrides)

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskSession, (self.run_id, self._task_settings, self.project, self.target_name, self._components))

    def __repr__(self) -> str:
        return f"ScalableSession(run_id={self.run_id!r}, target={self.target_name!r}, state={self._state!r})"

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        """The session's ledger (its run's stream lives there)."""
        return self._ledger

    @property
    def status(self) -> str:
        """``new``, ``open`` or ``closed``."""
        return self._state

    def start(self) -> ScalableSession:
        """Start the run: check the default storage, write ``run/started``, activate the ledger.

        Calling it on an open session does nothing.

        Raises:
            SessionError: the session was closed already.
            StoreError: the default storage cannot be reached (its URI is named).
        """
        with self._lock:
            if self._state == "open":
                return self
            if self._state == "closed":
                raise SessionError(f"session of run {self.run_id!r} is closed; create a new session for a new run")
            if self.settings.telemetry:
                _check_writable(self.settings.runs_dir, "runs directory", "SCALABLE_RUNS_DIR", LedgerWriteError)
            self._check_storage()
            try:
                self._exit.enter_context(bus.activate(self._ledger))
                self._bind_cache()
                self._ledger.default_run_id = self.run_id
                if self.settings.telemetry:
                    self._ledger.append(
                        {"event_type": "run", "op": "started", "run_id": self.run_id, "attrs": self._run_attrs()}
                    )
            except BaseException:
                self._ledger.default_run_id = None
                self._exit.close()
                raise
            self._state = "open"
            if self.settings.runs_dir_remote and self.settings.telemetry:
                self._start_remote_sync()
            _install_excepthook()
            atexit.register(self._close_at_exit)
            return self

    def _start_remote_sync(self) -> None:
        """Ship the run's new lines to ``SCALABLE_RUNS_DIR_REMOTE`` every ``REMOTE_SYNC_INTERVAL_S``."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(REMOTE_SYNC_INTERVAL_S):
                try:
                    self._ledger.sync_remote()
                except Exception as exc:  # the remote may be down for a while; close syncs again
                    _log.warning("session.remote_sync_failed", run_id=self.run_id, error=mask_secrets(str(exc)))

        thread = threading.Thread(target=loop, name="scalable-remote-sync", daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            if thread is not threading.current_thread():
                thread.join()

        self._halt_remote_sync = halt
        self._exit.callback(halt)

    def _bind_cache(self) -> None:
        """Make ``@cacheable`` calls of the thread that opened the session use its cache."""
        binding = cache_using(_session_cache(self.settings))
        binding.__enter__()

        def unbind() -> None:
            # Closed from another thread or at exit the binding belongs to another context.
            with contextlib.suppress(ValueError):
                binding.__exit__(None, None, None)

        self._exit.callback(unbind)

    def _ready(self) -> None:
        if self._state != "open":
            with self._lock:
                if self._state == "new":
                    self._implicit = True
                self.start()

    def close(self, status: str = "completed", *, error: BaseException | None = None) -> None:
        """Finish the run: wait for its tasks, write ``run/finished`` with the seal, deactivate.

        Args:
            status: ``completed``, ``failed`` or ``interrupted``.
            error: the exception that ended the run, recorded in ``run/finished``.
        """
        if status not in _STATUSES:
            raise SessionError(f"run status {status!r} is not one of {', '.join(_STATUSES)}")
        with self._lock:
            if self._state == "closed":
                return
            was_open = self._state == "open"
            self._state = "closed"
        atexit.unregister(self._close_at_exit)
        try:
            if self._halt_remote_sync is not None:
                self._halt_remote_sync()  # the final sync is compaction's, after the seal
            if self._runner is not None:
                try:
                    self._runner.shutdown(cancel=status != "completed")
                except BaseException as exc:
                    _log.error("session.shutdown_failed", run_id=self.run_id, error=repr(exc))
                    if status == "completed":
                        status = "failed"
            if was_open and self.settings.telemetry:
                attrs: dict[str, Any] = {"tasks_submitted": self._submitted, "tasks_failed": self._failed}
                if error is not None:
                    attrs.update(error_type=type(error).__name__, error=_error_text(error))
                with self._lock:
                    self._sealed = True
                    self._ledger.finish_run(self.run_id, status, attrs)
            if was_open:
                self._compact()
        finally:
            self._exit.close()
            self._ledger.close()

    def _compact(self) -> None:
        """Compact the run into the Parquet dataset (with a remote ledger: sync, then compact there)."""
        try:
            self._ledger.compact(run_ids=[self.run_id])
        except Exception as exc:  # the run is sealed in its stream; compaction can run again later
            _log.warning("session.compaction_failed", run_id=self.run_id, error=mask_secrets(str(exc)))

    def _close_for(self, exc: BaseException | None) -> None:
        """Close with the status an ending exception (or none) means."""
        if exc is None:
            self.close("completed")
        elif isinstance(exc, KeyboardInterrupt):
            self.close("interrupted", error=exc)
        else:
            self.close("failed", error=exc)

    def _close_at_exit(self) -> None:
        self._close_for(_uncaught)

    def __enter__(self) -> ScalableSession:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close_for(exc)

    def _run_attrs(self) -> dict[str, Any]:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        from scalable import __version__  # scalable/__init__ imports this module

        return {
            "project": self.project,
            "implicit": self._implicit,
            "target": self.target.name,
            "provider": self.target.provider,
            "manifest": str(self.manifest.path) if self.manifest else None,
            "manifest_lock": self.manifest.lock if self.manifest else None,
            "host": socket.gethostname(),
            "user": user,
            "pid": os.getpid(),
            "default_storage": mask_secrets(self.settings.default_storage),
            "scalable_version": __version__,
        }

    def _check_storage(self) -> None:
        """Fail now, naming the URI, if the default storage cannot be reached or written.

        Raises:
            StoreUnreachableError: a local directory that cannot be created or written, a
                bucket that does not exist, or an endpoint that does not answer.
            UnsupportedSchemeError: no backend handles the URI's scheme.
            MissingDependencyError: the backend's package is not installed.
        """
        uri = self.settings.default_storage
        shown = mask_secrets(uri)
        if "://" not in uri or uri.startswith("file://"):
            _check_writable(
                _local_path(uri), "default storage", "project.default_storage or SCALABLE_DEFAULT_STORAGE", StoreUnreachableError
            )
            return
        store = self.store
        fs = getattr(store, "fs", None)
        if fs is None or store.scheme not in _BUCKET_SCHEMES:
            return
        bucket = str(getattr(store, "root", "")).split("/", 1)[0]
        try:
            fs.info(bucket)
        except FileNotFoundError:
            raise StoreUnreachableError(
                f"default storage {shown!r}: bucket {bucket!r} does not exist; create it or fix "
                "project.default_storage / SCALABLE_DEFAULT_STORAGE"
            ) from None
        except Exception as exc:  # network, credentials, endpoint: all mean "cannot reach it"
            raise StoreUnreachableError(
                f"default storage {shown!r} cannot be reached: {mask_secrets(str(exc))[:300]}; "
                "check the endpoint, credentials and network"
            ) from None

    def _append_foreign(self, lines: Mapping[str, Sequence[bytes]]) -> None:
        """Append a remote task's event lines to their runs (unless the run is sealed)."""
        with self._lock:
            if self._sealed:
                count = sum(len(v) for v in lines.values())
                _log.warning("session.late_task_events_dropped", run_id=self.run_id, events=count)
                return
            for run_id, batch in lines.items():
                if batch:
                    self._ledger.append_lines(run_id, batch)

    def _emit(self, event: dict[str, Any]) -> dict[str, Any] | None:
        if not self.settings.telemetry:
            return None
        return self._ledger.append(event)

    # --- tasks ----------------------------------------------------------------------------------

    def _get_runner(self) -> _Runner:
        with self._lock:
            if self._runner is None:
                options = self.target.options
                if self.target.provider == "dask":
                    self._runner = _DaskRunner(self, options)
                elif options.get("processes"):
                    self._runner = _ProcessRunner(options.get("max_workers"))
                else:
                    self._runner = _ThreadRunner(self._ledger, options.get("max_workers"))
            return self._runner

    def _count(self, future: concurrent.futures.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            with self._lock:
                self._failed += 1

    def submit(self, fn: Callable[..., Any], /, *args: Any, task_name: str | None = None, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` as a task of the run on the session's target.

        Args:
            fn: the task function (picklable for process and Dask targets).
            *args: its positional arguments.
            task_name: the task's name (default: ``fn.__name__``); the manifest's ``tasks``
                map it to a component.
            **kwargs: its keyword arguments.

        Returns:
            A :class:`concurrent.futures.Future`; when it completes, the task's events are in
            the run's stream. Its exception is the task's exception.

        Raises:
            SessionError: the session is closed.
        """
        self._ready()
        if self._state != "open":
            raise SessionError(f"session of run {self.run_id!r} is closed; tasks cannot be submitted any more")
        name = task_name or getattr(fn, "__name__", None) or type(fn).__name__
        env = _TaskEnv(self.run_id, name, os.urandom(8).hex(), self._components.get(name), self._task_settings)
        future = self._get_runner().submit(env, fn, args, kwargs)
        with self._lock:
            self._submitted += 1
        future.add_done_callback(self._count)
        return future

    def map(
        self, fn: Callable[..., Any], /, *iterables: Iterable[Any], task_name: str | None = None, **kwargs: Any
    ) -> list[concurrent.futures.Future[Any]]:
        """Submit ``fn`` once per element of ``iterables`` (zipped); ``kwargs`` go to every call.

        Returns:
            The futures, in the order of the inputs.
        """
        return [self.submit(fn, *items, task_name=task_name, **kwargs) for items in zip(*iterables, strict=False)]
