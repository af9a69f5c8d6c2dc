"""Scalable's files of a run, beside its stream: ``run.json`` and ``summary.json``, derived from its events.

Scalable writes, per run directory, ``run.json`` (its ``RunMetadata``: ``run_id``,
``project_name``, ``target_name``, ``provider_name``, ``manifest_lock``,
``source_manifest_path``, ``started_at``, ``finished_at``, ``status``, ``schema_version``)
when the run starts and again when it ends, and ``summary.json`` (``summarize_run``) when it
ends; ``scalable report`` prints the summary. Here both come from the run's events alone:
``run/started`` (project, target, provider, manifest and lock) and ``run/finished`` (status,
seal), so a rebuild from the stream gives the same files. ``run.json`` also keeps the
ledger's own keys of a sealed run (``events``, ``stream_bytes``, ``seal``, and
``seal_sha256``, the hash of the sealing line), which the audit reads. Times are Scalable's: UTC to the second, ``Z`` suffix.

How our events map onto Scalable's counts: tasks are counted by their last state per
``task_id`` (``task/finished`` succeeded, ``task/failed`` failed, a failure by
``CancelledError`` cancelled); ``task_events`` are the task events of the stream (two per
task, where Scalable writes three); ``resource_events`` the submissions of a component that
``run/started`` lists; ``failure_events`` the failed tasks and a run that ended with an
error; ``cache_events`` the hits and misses; ``artifact_events`` every artifact event;
worker and cost events are not recorded (0).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from scalable.errors import ConfigError, LedgerError, RunNotFoundError, os_error
from scalable.ledger.durable import replace_file
from scalable.ledger.events import encode_line
from scalable.ledger.stream import RUN_SUMMARY, iter_complete

if TYPE_CHECKING:
    from scalable.ledger.log import Ledger

__all__ = [
    "SUMMARY_FILE",
    "first_event",
    "rebuild_summary",
    "render_text_report",
    "run_json",
    "run_report",
    "session_run",
    "summarize_events",
    "write_json",
    "write_summary",
    "write_summary_json",
]

SUMMARY_FILE: Final = "summary.json"
_CANCELLED: Final = frozenset({"CancelledError", "FutureCancelledError"})


def _attrs(event: Mapping[str, Any] | None) -> dict[str, Any]:
    if event is None or not event.get("attrs"):
        return {}
    raw = event["attrs"]
    value = orjson.loads(raw) if isinstance(raw, str) else raw
    return dict(value) if isinstance(value, Mapping) else {}


def _seconds(timestamp: Any) -> str | None:
    """An event timestamp as Scalable writes times: ``2026-05-19T12:00:00Z``."""
    if timestamp is None:
        return None
    text = timestamp.isoformat() if hasattr(timestamp, "isoformat") else str(timestamp)
    return text[:19] + "Z"


def run_json(
    run_id: str,
    started: Mapping[str, Any] | None,
    finished: Mapping[str, Any] | None,
    *,
    stream_bytes: int | None = None,
) -> dict[str, Any]:
    """The content of a run's ``run.json``: Scalable's ``RunMetadata``, and the seal once sealed.

    Args:
        run_id: the run.
        started: its ``run/started`` event, if any.
        finished: its ``run/finished`` event; ``None`` while the run is open (``running``).
        stream_bytes: the stream's length up to and including the seal.
    """
    begun = _attrs(started)
    doc: dict[str, Any] = {
        "run_id": run_id,
        "project_name": begun.get("project"),
        "target_name": begun.get("target"),
        "provider_name": begun.get("provider"),
        "manifest_lock": begun.get("manifest_lock"),
        "source_manifest_path": begun.get("manifest"),
        "started_at": _seconds(started["timestamp"]) if started is not None else None,
        "finished_at": None,
        "status": "running",
        "schema_version": 1,
    }
    if finished is not None:
        ended = _attrs(finished)
        doc.update(
            finished_at=_seconds(finished["timestamp"]),
            status=ended.get("status"),
            events=ended.get("events"),
            stream_bytes=stream_bytes,
            seal=ended.get("seal"),
            # The sealing line re-encodes byte for byte from its event: an audit compares the two.
            seal_sha256=hashlib.sha256(encode_line(finished)[:-1]).hexdigest(),
        )
    return doc


def session_run(started: Mapping[str, Any] | None) -> bool:
    """Whether a run was started by a session (its ``run/started`` names a target), as Scalable's runs are.

    Those runs have Scalable's ``run.json`` while open and ``summary.json`` once sealed; a run
    the ledger opened by itself (events outside any session) has ``run.json`` once sealed.
    """
    return "target" in _attrs(started)


def write_json(path: Path, doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` as Scalable does (indent 2, sorted keys, trailing newline), replacing ``path`` whole.

    Raises:
        DiskFullError: no space left (nothing of the new file is left behind; the old one stays).
        LedgerError: another I/O error, naming the file.
    """
    try:
        replace_file(path, (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode())
    except OSError as exc:
        raise os_error(exc, f"cannot write {str(path)!r} (derived from the run's stream)", LedgerError) from None
    return path


def write_summary(stream: Path, run_id: str, finished: Mapping[str, Any], stream_bytes: int) -> Path:
    """Write a sealed run's ``run.json`` beside ``stream``: Scalable's metadata, status, seal, sealed length.

    It is derived state (see :func:`rebuild_summary`) that lets an audit notice a stream cut
    short, seal and all.
    """
    started = first_event(stream, "run", "started")
    return write_json(stream.with_name(RUN_SUMMARY), run_json(run_id, started, finished, stream_bytes=stream_bytes))


def rebuild_summary(stream: Path, run_id: str) -> list[Path]:
    """Rewrite a run's files derived from its stream alone; return those written.

    A sealed run gets ``run.json`` (and, if a session started it, ``summary.json``); an open
    run a session started gets its ``running`` ``run.json``. The result equals what starting
    and sealing wrote: the files come from ``run/started``, ``run/finished`` and the
    stream's length up to the seal.
    """
    started: dict[str, Any] | None = None
    for offset, event in iter_complete(stream):
        if event["event_type"] != "run":
            continue
        if event["op"] == "started" and started is None:
            started = event
        elif event["op"] == "finished":
            written = [write_summary(stream, run_id, event, offset)]
            if session_run(started):
                written.append(write_summary_json(stream, run_id))
            return written
    if session_run(started):
        return [write_json(stream.with_name(RUN_SUMMARY), run_json(run_id, started, None))]
    return []


def first_event(stream: Path, event_type: str, op: str) -> dict[str, Any] | None:
    """The first whole, readable ``event_type/op`` event of a stream (reading stops there)."""
    for _offset, event in iter_complete(stream):
        if event["event_type"] == event_type and event["op"] == op:
            return event
    return None


def _round(value: float | None, places: int) -> float | None:
    return None if value is None else round(value, places)


def summarize_events(run_id: str, events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Scalable's ``summarize_run`` of a run, from its events (in any order, up to its seal).

    Returns:
        ``run`` (``run.json``'s Scalable keys), ``counts``, ``timing``, ``cache``,
        ``resources``, ``cost`` and ``failures``, as Scalable's ``summary.json`` has them.
    """
    started: Mapping[str, Any] | None = None
    finished: Mapping[str, Any] | None = None
    kinds: Counter[str] = Counter()
    final: dict[str, tuple[str, str | None]] = {}  # task_id -> (state, error_type)
    task_components: dict[str, str | None] = {}
    durations: list[float] = []
    hits = misses = 0
    classes: Counter[str] = Counter()
    for event in events:
        kind, op = event["event_type"], event["op"]
        kinds[kind] += 1
        if kind == "run" and op == "started" and started is None:
            started = event
        elif kind == "run" and op == "finished":
            finished = event
        elif kind == "task":
            attrs = _attrs(event)
            task_id = str(attrs.get("task_id") or event.get("task_name"))
            task_components[task_id] = event.get("component")
            if op in ("finished", "failed"):
                if event.get("duration_s") is not None:
                    durations.append(float(event["duration_s"]))
                if op == "failed" or final.get(task_id, ("",))[0] != "failed":
                    final[task_id] = (op, attrs.get("error_type"))
            else:
                final.setdefault(task_id, ("running", None))
        elif kind == "cache" and op in ("hit", "miss"):
            hits += op == "hit"
            misses += op == "miss"
    states: Counter[str] = Counter()
    for state, error_type in final.values():
        if state == "failed" and error_type in _CANCELLED:
            states["cancelled"] += 1
        elif state == "failed":
            states["failed"] += 1
            classes[error_type or "TaskError"] += 1
        elif state == "finished":
            states["succeeded"] += 1
    run_error = _attrs(finished).get("error_type")
    if run_error:
        classes[str(run_error)] += 1
    components = _attrs(started).get("components") or {}
    requested = [
        cpus
        for c in task_components.values()
        if isinstance(cpus := (components.get(c) or {}).get("cpus") if c else None, int)
    ]
    total = sum(durations)
    return {
        "run": {
            k: v
            for k, v in run_json(run_id, started, finished).items()
            if k not in ("events", "seal", "stream_bytes", "seal_sha256")
        },
        "counts": {
            "task_events": kinds["task"],
            "resource_events": len(requested),
            "worker_events": 0,
            "failure_events": sum(classes.values()),
            "cache_events": hits + misses,
            "artifact_events": kinds["artifact"],
            "cost_events": 0,
            "tasks_succeeded": states["succeeded"],
            "tasks_failed": states["failed"],
            "tasks_cancelled": states["cancelled"],
        },
        "timing": {
            "task_duration_count": len(durations),
            "task_duration_total_s": round(total, 6),
            "task_duration_avg_s": _round(total / len(durations), 6) if durations else None,
        },
        "cache": {
            "hits": hits,
            "misses": misses,
            "hit_ratio": _round(hits / (hits + misses), 6) if hits + misses else None,
        },
        "resources": {
            "requested_cpu_min": min(requested) if requested else None,
            "requested_cpu_max": max(requested) if requested else None,
            "requested_cpu_avg": _round(sum(requested) / len(requested), 6) if requested else None,
        },
        "cost": {"total_hourly_usd": None, "total_monthly_usd": None, "estimates_count": 0},
        "failures": {"classes": dict(sorted(classes.items()))},
    }


def _sealed_events(stream: Path) -> list[dict[str, Any]]:
    """The readable events of a stream up to and including its seal."""
    events = []
    for _offset, event in iter_complete(stream):
        events.append(event)
        if event["event_type"] == "run" and event["op"] == "finished":
            break
    return events


def write_summary_json(stream: Path, run_id: str) -> Path:
    """Write ``summary.json`` beside a run's stream from its events (up to its seal)."""
    return write_json(stream.with_name(SUMMARY_FILE), summarize_events(run_id, _sealed_events(stream)))


def run_report(ledger: Ledger, run_id: str | None = None, *, latest: bool = False) -> dict[str, Any]:
    """The summary of one run of ``ledger`` (compacted or not), as Scalable's ``scalable report`` shows it.

    Args:
        ledger: the ledger.
        run_id: the run; it takes precedence over ``latest``.
        latest: the run that started last.

    Raises:
        ConfigError: neither ``run_id`` nor ``latest`` is given.
        RunNotFoundError: there is no such run (or no run at all).
    """
    if run_id is None and not latest:
        raise ConfigError("say which run to report: --run-id ID, or --latest for the run that started last")
    if run_id is None:
        newest = ledger.query("SELECT run_id FROM runs ORDER BY started_at DESC NULLS LAST, run_id DESC LIMIT 1")
        if newest.num_rows == 0:
            raise RunNotFoundError(f"no run in the ledger under {str(ledger.runs_dir)!r}; run a session first")
        run_id = str(newest.column("run_id")[0].as_py())
    quoted = run_id.replace("'", "''")
    events = ledger.query(f"SELECT * FROM events WHERE run_id = '{quoted}'").to_pylist()
    if not events:
        raise RunNotFoundError(f"run {run_id!r} is not in the ledger; list runs with: scalable ledger runs")
    return summarize_events(run_id, events)


def render_text_report(summary: Mapping[str, Any]) -> str:
    """Scalable's text report of a summary: run, tasks, timing, cache, and cost when estimated."""
    run, counts, timing, cache = summary["run"], summary["counts"], summary["timing"], summary["cache"]
    lines = [
        f"run_id: {run.get('run_id')}",
        f"project: {run.get('project_name')}",
        f"target/provider: {run.get('target_name')}/{run.get('provider_name')}",
        f"status: {run.get('status')}",
        "",
        "tasks:",
        f"  succeeded: {counts['tasks_succeeded']}",
        f"  failed: {counts['tasks_failed']}",
        f"  cancelled: {counts['tasks_cancelled']}",
        f"  event_rows: {counts['task_events']}",
        "timing:",
        f"  total_s: {timing['task_duration_total_s']}",
        f"  avg_s: {timing['task_duration_avg_s']}",
        "cache:",
        f"  hits: {cache['hits']}",
        f"  misses: {cache['misses']}",
        f"  hit_ratio: {cache['hit_ratio']}",
    ]
    cost = summary.get("cost") or {}
    if cost.get("total_hourly_usd") is not None:
        lines += ["cost:", f"  hourly_usd: {cost['total_hourly_usd']}", f"  monthly_usd: {cost['total_monthly_usd']}"]
    return "\n".join(lines) + "\n"
