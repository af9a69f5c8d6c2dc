"""ScalableSession: one run of a workflow, its events, its artifacts and its tasks on a target.

A session brackets a run. ``from_yaml`` reads the manifest and starts nothing; ``start()`` (or
``with``, or the first call that needs a run) writes ``run/started`` with the manifest's lock
and makes the session's ledger the active one; ``close()`` writes ``run/finished`` with the
status and the seal of every writer's chain head.

Tasks run on the target's provider (:mod:`scalable.targets`: threads or processes for
``local``, a cluster for ``dask``); whatever the provider, a task's future completes only
once its events are in the run's stream. Events that a task recorded on a worker without the
client's filesystem come back as lines, which the session appends to the run unchanged
(:meth:`~scalable.ledger.log.Ledger.append_lines`) unless the run is sealed already.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import dataclasses
import getpass
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from scalable.cache.tiers import shared_cache
from scalable.cache.tiers import using as cache_using
from scalable.digests import measure_path
from scalable.errors import (
    ArtifactNotFoundError,
    ConfigError,
    IntegrityError,
    LedgerWriteError,
    SessionError,
    StoreError,
)
from scalable.ledger import bus
from scalable.ledger.context import make_run_id
from scalable.ledger.durable import replace_file
from scalable.ledger.log import Ledger
from scalable.ledger.runfiles import write_json, write_summary_json
from scalable.logs import get_logger, mask_secrets
from scalable.manifest import Manifest, TargetSpec, load_manifest
from scalable.providers import PROVIDERS
from scalable.recipe import capture, newly_imported
from scalable.settings import Settings, load_settings
from scalable.stores import ArtifactRef, ArtifactStore, build_artifact_store
from scalable.stores.local import unwritable_ancestor
from scalable.targets import Deployment, Runner, TaskEnv, recorded_only, scale_plan, start_runner
from scalable.targets.tasks import error_text, failed_event, task_scope
from scalable.uris import is_remote, local_path, path_to_uri

__all__ = ["ScalableSession", "TaskSession"]

_log = get_logger("scalable.session")
_STATUSES = ("completed", "failed", "interrupted")
#: How often an open run with ``SCALABLE_RUNS_DIR_REMOTE`` ships its new lines to the remote.
REMOTE_SYNC_INTERVAL_S = 30.0


# --- artifacts -----------------------------------------------------------------------------------


def _input_ref(value: str | os.PathLike[str]) -> tuple[str, Path | None]:
    """An input as lineage records it (a digest or remote URI as given, a local one as its file
    URI) and, when it is a local file or directory, its path."""
    text = os.fspath(value)
    if is_remote(text):
        return text, None
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
        return text, None  # a digest
    local = local_path(text)
    return path_to_uri(local), local if local.exists() else None


#: What ``record_artifact`` records an artifact as: produced by the run, or used by it.
ROLES = ("output", "input")


def _nonempty(path: str | os.PathLike[str], what: str) -> str:
    text = os.fspath(path)
    if not text.strip():
        raise ArtifactNotFoundError(
            f"the {what} path is empty ({text!r}); give a file or directory, or '.' for the current directory"
        )
    return text


def _check_runs_dir(path: Path) -> None:
    """Raise LedgerWriteError unless the runs directory is, or can be created as, a writable directory."""
    blocker = unwritable_ancestor(path)
    if blocker is not None:
        raise LedgerWriteError(
            f"runs directory {str(path)!r} cannot be written ({blocker} is not a writable directory); fix SCALABLE_RUNS_DIR"
        )


class TaskSession:
    """What a session is inside a task on another process: record and put, into the task's run.

    A :class:`ScalableSession` that travels to a worker (as an argument or in a closure)
    arrives as this object; events go to the ledger active there, in the task's context.
    """

    def __init__(
        self, run_id: str, settings: Settings, project: str, target: str, components: Mapping[str, str]
    ) -> None:
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

    def _emit_many(self, events: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Publish ``events`` in one write; return the last as written (``None`` with telemetry off)."""
        written = bus.publish_many(events)
        return written[-1] if written else None

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
        role: str = "output",
    ) -> dict[str, Any] | None:
        """Record an artifact the run produced (``artifact/recorded``) or used (``artifact/used``); nothing is copied.

        Two forms: the short ``record_artifact("output.csv", kind="result")`` and Scalable's
        keywords (``task_name=``, ``artifact_name=``, ``location=``, ``component=``, ``kind=``,
        ``size_bytes=``, ``digest=``). When the artifact is local, its size and SHA-256 (a tree
        digest for directories) are computed.

        ``role="input"`` records a version the run read rather than made: lineage shows the
        run (and the task, inside one) as its user, and what the task produces afterwards as
        derived from it. Each local file or directory named in ``inputs`` is hashed and
        recorded the same way, so its exact version is the input, whatever is at that path
        later.

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
            role: ``output`` (the run produced it, the default) or ``input`` (the run used it).

        Returns:
            The event as written, or ``None`` when telemetry is off.

        Raises:
            ConfigError: ``role`` is not ``output`` or ``input``.
            SessionError: neither ``path`` nor ``location`` is given.
            ArtifactNotFoundError: ``path`` does not exist.
            IntegrityError: a given ``size_bytes``/``digest`` disagrees with the local bytes.
        """
        if role not in ROLES:
            raise ConfigError(f"record_artifact role {role!r} is not one of {', '.join(ROLES)}")
        if path is None and location is None:
            raise SessionError(
                "record_artifact needs a path or location=; e.g. record_artifact('output.csv', kind='result')"
            )
        if path is not None and location is None and is_remote(os.fspath(path)):
            location, path = os.fspath(path), None  # a URI given positionally is a location
        local: Path | None = None
        if path is not None:
            local = local_path(_nonempty(path, "artifact"))
            if not local.exists():
                raise ArtifactNotFoundError(
                    f"artifact {os.fspath(path)!r} does not exist ({local}); write it before recording it"
                )
        elif location is not None and not is_remote(os.fspath(location)):
            candidate = local_path(_nonempty(location, "location"))
            local = candidate if candidate.exists() else None
        # A remote location is recorded as given; a local one as the file URI of its path.
        if location is None:
            assert local is not None
            where = path_to_uri(local)
        elif is_remote(os.fspath(location)):
            where = os.fspath(location)
        else:
            where = path_to_uri(local_path(location))
        measured_kind: str | None = None
        if local is not None:
            measured_kind, measured_size, measured_digest = measure_path(local)
            if size_bytes is not None and size_bytes != measured_size:
                raise IntegrityError(f"artifact {str(local)!r} has {measured_size} bytes, not size_bytes={size_bytes}")
            if digest is not None and digest != measured_digest:
                raise IntegrityError(f"artifact {str(local)!r} has digest {measured_digest}, not digest={digest}")
            size_bytes, digest = measured_size, measured_digest
        name = artifact_name or (local.name if local is not None else where.rstrip("/").rsplit("/", 1)[-1])
        task: dict[str, Any] = {}
        if task_name is not None:
            task = {"task_name": task_name, "component": component or self._components.get(task_name)}
        elif component is not None:
            task = {"component": component}
        # Local inputs are recorded as the versions used (each hashed now), the rest as given.
        refs: list[str] = []
        used: list[dict[str, Any]] = []
        for value in inputs if inputs is not None else ():
            ref, found = _input_ref(value)
            if found is not None and self.settings.telemetry:  # nothing is recorded without telemetry
                found_kind, found_size, found_digest = measure_path(found)
                used.append(
                    {
                        "event_type": "artifact",
                        "op": "used",
                        "run_id": self.run_id,
                        "artifact_name": found.name,
                        "location": ref,
                        "kind": found_kind,
                        "size_bytes": found_size,
                        "digest": found_digest,
                        **task,
                    }
                )
                ref = found_digest
            refs.append(ref)
        event: dict[str, Any] = {
            "event_type": "artifact",
            "op": "used" if role == "input" else "recorded",
            "run_id": self.run_id,
            "artifact_name": name,
            "location": where,
            "kind": kind or measured_kind,
            "size_bytes": size_bytes,
            "digest": digest,
            "inputs": refs if inputs is not None else None,
            "attrs": dict(metadata) if metadata else None,
            **task,
        }
        self._ready()
        return self._emit_many([*used, event])

    def put(
        self, local_path: str | os.PathLike[str], key: str | None = None, *, kind: str | None = None
    ) -> ArtifactRef:
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
        source = _nonempty(local_path, "source")
        self._ready()
        name = key if key is not None else os.path.basename(os.path.abspath(os.path.expanduser(source)))
        return self.store.put(source, f"runs/{self.run_id}/{name.lstrip('/')}", kind=kind)


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
        self._runner: Runner | None = None
        self._halt_remote_sync: Callable[[], None] | None = None
        self._exit = contextlib.ExitStack()
        self._submitted = 0
        self._failed = 0
        self._sealed = False
        self._recipe: dict[str, Any] | None = None

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
    def state(self) -> str:
        """Where the session is in its life: ``new``, ``open`` or ``closed`` (the run's status is
        in its ``run/finished`` event and the ``runs`` view)."""
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
                _check_runs_dir(self.settings.runs_dir)
            self._check_storage()
            try:
                self._exit.enter_context(bus.activate(self._ledger))
                self._bind_cache()
                self._ledger.default_run_id = self.run_id
                if self.settings.telemetry:
                    self._ledger.append(
                        {"event_type": "run", "op": "started", "run_id": self.run_id, "attrs": self._run_attrs()}
                    )
                    self._write_run_files()
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
        binding = cache_using(shared_cache(self.settings))
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
                added = self._recipe_added()
                if added:
                    attrs["recipe_added"] = added
                if error is not None:
                    attrs.update(error_type=type(error).__name__, error=error_text(error))
                with self._lock:
                    self._sealed = True
                    self._ledger.finish_run(self.run_id, status, attrs)
                try:
                    write_summary_json(self._ledger.stream_path(self.run_id), self.run_id)
                except OSError as exc:  # derived from the sealed stream; rebuild_summaries writes it again
                    _log.warning("session.summary_not_written", run_id=self.run_id, error=str(exc))
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
            "target_options": {
                k: mask_secrets(v) if isinstance(v, str) else v
                for k, v in PROVIDERS[self.target.provider].resolve(self.target.provider_options).items()
            },
            "components": {
                name: {"cpus": c.cpus, "memory": c.memory, "env": sorted(c.env)}
                for name, c in (self.manifest.components.items() if self.manifest else ())
            },
            "recorded_only": recorded_only(self.target, self.manifest),
            **({"rerun_of": self.settings.rerun_of} if self.settings.rerun_of else {}),
            "recipe": self._capture_recipe(),
        }

    def _capture_recipe(self) -> dict[str, Any]:
        """What ``scalable ledger rerun`` needs to run this again (:mod:`scalable.recipe`)."""
        self._recipe = capture(
            self.manifest.directory if self.manifest else Path.cwd(),
            store=self.store,
            allow_env=self.settings.record_env,
            manifest=self.manifest.path if self.manifest else None,
            cache_dir=self.settings.cache_dir,
        )
        return self._recipe

    def _recipe_added(self) -> dict[str, Any]:
        """The code and distributions imported since the run started (``run/finished`` records them)."""
        if self._recipe is None:
            return {}
        try:
            return newly_imported(self._recipe, store=self.store)
        except Exception as exc:  # what the run imported late is lost; the run still finishes
            _log.warning("session.recipe_not_completed", run_id=self.run_id, error=mask_secrets(str(exc)))
            return {}

    def _write_run_files(self) -> None:
        """Write the files Scalable keeps beside a run: manifest.yaml, manifest.lock, plan.json, run.json.

        ``run.json`` is derived from the stream (its ``running`` form now, the sealed one at
        close); a file that cannot be written is logged, the run goes on.
        """
        directory = self._ledger.stream_path(self.run_id).parent
        try:
            if self.manifest is not None:
                replace_file(directory / "manifest.yaml", yaml.safe_dump(self.manifest.raw, sort_keys=True).encode())
                replace_file(directory / "manifest.lock", (self.manifest.lock + "\n").encode())
            write_json(directory / "plan.json", scale_plan(self.manifest, self.target))
            self._ledger.rebuild_summaries([self.run_id])
        except OSError as exc:
            _log.warning("session.run_files_not_written", run_id=self.run_id, error=str(exc))

    def _check_storage(self) -> None:
        """Fail now, naming the URI, if the default storage cannot be reached or written.

        Raises:
            StoreError: the subclass of :meth:`check_reachable
                <scalable.stores.base.BaseArtifactStore.check_reachable>` saying why: a
                local directory that cannot be created or written, a bucket that does not
                exist, no credentials, an endpoint that does not answer.
            UnsupportedSchemeError: no backend handles the URI's scheme.
            MissingDependencyError: the backend's package is not installed.
        """
        try:
            self.store.check_reachable()
        except StoreError as exc:
            raise type(exc)(
                f"default storage {exc} (set by project.default_storage or SCALABLE_DEFAULT_STORAGE)"
            ) from exc

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

    def _emit_many(self, events: list[dict[str, Any]]) -> dict[str, Any] | None:
        if not self.settings.telemetry:
            return None
        return self._ledger.append_many(events)[-1]

    # --- tasks ----------------------------------------------------------------------------------

    def _get_runner(self) -> Runner:
        with self._lock:
            if self._runner is None:
                deployment = Deployment(
                    self.target,
                    self._ledger,
                    components=self.manifest.components if self.manifest else {},
                    workers=scale_plan(self.manifest, self.target)["scale_plan"]["workers_by_tag"],
                    deliver=self._append_foreign,
                    lost=self._task_lost,
                )
                self._runner = start_runner(deployment)
            return self._runner

    def _task_lost(self, env: TaskEnv, error: BaseException, duration_s: float) -> None:
        """Record ``task/failed`` for a task that never came back from its worker (unless the run is sealed)."""
        if not self.settings.telemetry:
            return
        with self._lock:
            if self._sealed:
                _log.warning("session.late_task_failure_dropped", run_id=self.run_id, task=env.task_name)
                return
            self._ledger.append(failed_event(env, error, duration_s))

    def _count(self, future: concurrent.futures.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is not None:
            with self._lock:
                self._failed += 1

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, task_name: str | None = None, **kwargs: Any
    ) -> concurrent.futures.Future[Any]:
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
        env = TaskEnv(self.run_id, name, os.urandom(8).hex(), self._components.get(name), self._task_settings)
        future = self._get_runner().submit(env, fn, args, kwargs)
        with self._lock:
            self._submitted += 1
        future.add_done_callback(self._count)
        return future

    @contextlib.contextmanager
    def task(self, name: str, *, component: str | None = None) -> Iterator[None]:
        """Run the block as one task of the run, as a submitted call runs.

        Inside it, every event (``record_artifact``, ``put``, cache lookups) carries the task's
        name and id, between ``task/started`` and ``task/finished`` (``task/failed`` when the
        block raises). Lineage reads a task's order: whatever it used before it put or recorded
        an artifact is what that artifact was derived from.

        Args:
            name: the task's name (the manifest's ``tasks`` map it to a component).
            component: the component, when the manifest does not name one.

        Raises:
            SessionError: the session is closed.
        """
        self._ready()
        if self._state != "open":
            raise SessionError(f"session of run {self.run_id!r} is closed; no task can start in it")
        env = TaskEnv(
            self.run_id, name, os.urandom(8).hex(), component or self._components.get(name), self._task_settings
        )
        with task_scope(self._ledger, env):
            yield

    def map(
        self, fn: Callable[..., Any], /, *iterables: Iterable[Any], task_name: str | None = None, **kwargs: Any
    ) -> list[concurrent.futures.Future[Any]]:
        """Submit ``fn`` once per element of ``iterables`` (zipped); ``kwargs`` go to every call.

        Returns:
            The futures, in the order of the inputs.
        """
        return [self.submit(fn, *items, task_name=task_name, **kwargs) for items in zip(*iterables, strict=False)]
