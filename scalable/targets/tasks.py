"""What a task carries to wherever it runs, and how it runs there with its events recorded.

Inside every task, whatever the target, the run id, task name, component and a ``task_id``
unique to the submission are the context of every event it raises (puts, records, cache), and
``task/started``, ``task/finished`` and ``task/failed`` (with error type and message) are
recorded with that ``task_id`` (:func:`task_scope`, which a session's explicit task context
uses as well). Three bodies run a task:

* :func:`run_task`: in the client's process, appending to the session's ledger (threads);
* :func:`run_in_process`: in a worker process on the same filesystem, appending to the run's
  stream itself under its own writer id;
* :func:`run_captured`: on a worker that may share no filesystem with the client (Dask), into a
  throw-away ledger of its own whose lines travel back with the result (:class:`Outcome`), for
  the client to append unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from scalable.cache.tiers import shared_cache
from scalable.cache.tiers import using as cache_using
from scalable.errors import SessionError
from scalable.ledger import Ledger, bus, context, read_stream
from scalable.logs import get_logger, mask_secrets
from scalable.settings import FsyncMode, Settings

__all__ = [
    "Outcome",
    "TaskEnv",
    "environment",
    "error_text",
    "failed_event",
    "run_captured",
    "run_in_process",
    "run_task",
    "task_event",
    "task_scope",
]

_log = get_logger("scalable.session")
_MAX_ERROR = 2000


@dataclasses.dataclass(frozen=True)
class TaskEnv:
    """Everything a task needs on its worker: who it is and the session's settings."""

    run_id: str
    task_name: str
    task_id: str
    component: str | None
    settings: Settings


class Outcome(NamedTuple):
    """What a captured task sends back: its value or exception, and its event lines by run."""

    value: Any
    error: BaseException | None
    lines: dict[str, list[bytes]]


def error_text(exc: BaseException) -> str:
    """The message of ``exc`` as events record it: secrets masked, at most 2000 characters."""
    return mask_secrets(str(exc))[:_MAX_ERROR]


def task_event(env: TaskEnv, op: str, **columns: Any) -> dict[str, Any]:
    """The ``task/<op>`` event of the task ``env`` (``attrs`` gets its ``task_id``)."""
    attrs = {"task_id": env.task_id, **columns.pop("attrs", {})}
    return {
        "event_type": "task",
        "op": op,
        "run_id": env.run_id,
        "task_name": env.task_name,
        "component": env.component,
        **columns,
        "attrs": attrs,
    }


def failed_event(env: TaskEnv, error: BaseException, duration_s: float) -> dict[str, Any]:
    """The ``task/failed`` event of the task ``env`` ended by ``error`` after ``duration_s`` seconds."""
    attrs = {"error_type": type(error).__name__, "error": error_text(error)}
    return task_event(env, "failed", duration_s=duration_s, attrs=attrs)


@contextlib.contextmanager
def task_scope(ledger: Ledger, env: TaskEnv) -> Iterator[None]:
    """Make the block the task ``env``: its events carry the task's run, name and id, between
    ``task/started`` and ``task/finished`` (or ``task/failed`` with the error, re-raised)."""
    telemetry = ledger.settings.telemetry
    with context.bind(run_id=env.run_id, task_name=env.task_name, component=env.component, task_id=env.task_id):
        if telemetry:
            ledger.append(task_event(env, "started", attrs={"pid": os.getpid()}))
        start = time.perf_counter()
        try:
            yield
        except BaseException as exc:
            ledger.flush()  # events the task queued (cache hits) land before its end
            if telemetry:
                try:
                    ledger.append(failed_event(env, exc, time.perf_counter() - start))
                except Exception as log_exc:  # never hide the task's own exception
                    _log.error("session.task_failed_not_recorded", task=env.task_name, error=repr(log_exc))
            raise
        ledger.flush()
        if telemetry:
            ledger.append(task_event(env, "finished", duration_s=time.perf_counter() - start))


def run_task(
    ledger: Ledger, env: TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Any:
    """Run ``fn`` as the task ``env`` with ``ledger`` and the session's cache active, recording task events."""
    with bus.activate(ledger, scoped=True), cache_using(shared_cache(env.settings)), task_scope(ledger, env):
        return fn(*args, **kwargs)


_process_ledgers: dict[tuple[Any, ...], Ledger] = {}
_process_lock = threading.Lock()


def _process_ledger(settings: Settings) -> Ledger:
    """The ledger this worker process appends to for the given session settings."""
    key = (os.getpid(), settings.runs_dir, settings.ledger_dir, settings.ledger_fsync, settings.telemetry)
    with _process_lock:
        ledger = _process_ledgers.get(key)
        if ledger is None or ledger.closed:
            ledger = _process_ledgers[key] = Ledger(settings)
        return ledger


@contextlib.contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set ``variables`` in this process's environment for the block, then restore what was there.

    Only for a process that runs one task at a time: the environment is the whole process's.
    """
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_in_process(
    env: TaskEnv,
    fn: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    variables: Mapping[str, str] | None = None,
) -> Any:
    """Task body in a worker process on the client's filesystem: append to the run's stream directly.

    Args:
        variables: the component's ``env``, set in the process while the task runs.
    """
    with environment(variables or {}):
        return run_task(_process_ledger(env.settings), env, fn, args, kwargs)


def run_captured(env: TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]) -> Outcome:
    """Task body on a remote worker: record into a private ledger and return its lines."""
    scratch = tempfile.mkdtemp(prefix="scalable-task-")
    try:
        settings = dataclasses.replace(env.settings, runs_dir=Path(scratch), ledger_fsync=FsyncMode.NEVER)
        ledger = Ledger(settings)
        ledger.default_run_id = env.run_id
        value: Any = None
        error: BaseException | None = None
        try:
            value = run_task(ledger, env, fn, args, kwargs)
        except Exception as exc:
            error = exc
        finally:
            ledger.close()
        lines = {
            run_id: [raw for _n, raw, _r in read_stream(ledger.stream_path(run_id)).lines()]
            for run_id in ledger.run_ids()
        }
        if error is not None:
            try:
                pickle.dumps(error)
            except Exception:
                error = SessionError(
                    f"task {env.task_name!r} failed with {type(error).__name__}: {error_text(error)} "
                    "(the exception itself could not be sent back from the worker)"
                )
        return Outcome(value, error, lines)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
