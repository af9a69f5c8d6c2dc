"""The append-only event log: one JSON-lines stream per run, written by many writers at once.

How the invariants hold:

* **Whole lines.** Each append builds complete lines in memory and writes them with one
  ``write`` on an ``O_APPEND`` descriptor while holding an exclusive ``flock`` on the stream,
  so lines of different threads and processes never interleave.
* **Acknowledged means written.** ``append`` returns after ``write`` handed every byte to the
  OS; a killed process loses nothing it acknowledged. ``SCALABLE_LEDGER_FSYNC`` adds power-loss
  durability: ``always`` fsyncs in every append, ``batch`` at least once a second and on close.
* **Torn lines.** Under the lock, a writer checks that the stream ends in a newline; if a
  writer died mid-line it logs the recovery and starts with a newline, so the torn fragment
  stays a single malformed line and never swallows the next event.
* **Chains.** Each writer numbers its lines per stream (``seq`` from 0) and links each to the
  SHA-256 of its previous line (``prev``). ``finish_run`` seals the heads of every writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from scalable.errors import (
    ConfigError,
    EventValidationError,
    LedgerError,
    LedgerNotFoundError,
    NodeNotFoundError,
    RunNotFoundError,
)
from scalable.ledger import context
from scalable.ledger.events import (
    GENESIS,
    LINE_OPTIONS,
    SCHEMA_VERSION,
    decode_line,
    encode_line,
    format_timestamp,
    new_event_ids,
    new_writer_id,
    validate_event,
)
from scalable.ledger.runfiles import first_event, run_json, session_run, write_json, write_summary_json
from scalable.logs import get_logger
from scalable.settings import FsyncMode, Settings, load_settings

if TYPE_CHECKING:
    import pyarrow as pa

    from scalable.ledger.audit import AuditReport
    from scalable.ledger.compact import CompactionResult
    from scalable.ledger.lineage import LineageGraph
    from scalable.ledger.remote import RemoteLedger, SyncResult
    from scalable.ledger.replay import ReplayResult

__all__ = [
    "RUN_SUMMARY",
    "STREAM_NAME",
    "Ledger",
    "LineProblem",
    "StreamReader",
    "flush_all",
    "read_stream",
    "seal_digest",
    "subscribe_all",
]

STREAM_NAME = "artifacts.jsonl"
RUN_SUMMARY = "run.json"
#: append_async: the longest an event waits, and how many may wait, before they are written.
FLUSH_INTERVAL_S = 0.1
PENDING_LIMIT = 4096
_log = get_logger("scalable.ledger")
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

Subscriber = Callable[[Mapping[str, Any]], None]


@dataclass(frozen=True, slots=True)
class LineProblem:
    """A line of a stream that could not be read: file, 1-based line number and reason."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class StreamReader:
    """Reads one stream: yields ``(line_number, record)`` and collects :class:`LineProblem`.

    A last line without its newline is a live tail (a writer is mid-append) and is skipped
    without a problem; any other line that does not decode is reported with file and line.
    """

    path: Path
    problems: list[LineProblem] = field(default_factory=list)
    incomplete_tail: bool = False

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for number, _raw, record in self.lines():
            yield number, record

    def lines(self) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
        """Yield ``(line_number, raw_line_without_newline, record)`` for every good line."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the stream ends in a newline
        if tail:
            self.incomplete_tail = True
        for number, raw in enumerate(lines, start=1):
            if not raw:
                continue
            try:
                record = decode_line(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                self.problems.append(LineProblem(str(self.path), number, f"malformed line: {exc}"))
                continue
            yield number, raw, record


def read_stream(path: str | os.PathLike[str]) -> StreamReader:
    """Return a reader of the stream at ``path`` (iterate it; then look at ``problems``)."""
    return StreamReader(Path(path))


def seal_digest(run_id: str, heads: Mapping[str, Any], key: bytes | None) -> str | None:
    """Return the HMAC-SHA256 of a run's seal under ``key`` (``None`` without a key)."""
    if not key:
        return None
    message = _dumps({"run_id": run_id, "heads": dict(sorted(heads.items()))}).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class _Stream:
    """This writer's open descriptor and chain state for one run's stream."""

    __slots__ = ("dirty", "end", "fd", "lock", "path", "prev", "seq")

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.lock = threading.Lock()
        self.seq = 0
        self.prev = GENESIS
        self.dirty = False
        self.end = -1  # file size after this writer's last write; -1 = unknown


_ledgers: weakref.WeakSet[Ledger] = weakref.WeakSet()
# Subscribers of every ledger in the process (``scalable.ledger.bus.subscribe``).
_global_subscribers: list[tuple[Subscriber, frozenset[str] | None]] = []
_global_lock = threading.Lock()


def subscribe_all(callback: Subscriber, event_types: Iterable[str] | None = None) -> Callable[[], None]:
    """Subscribe ``callback`` to the events of every ledger in this process."""
    global _global_subscribers
    entry = (callback, frozenset(event_types) if event_types is not None else None)
    with _global_lock:
        _global_subscribers = [*_global_subscribers, entry]

    def unsubscribe() -> None:
        global _global_subscribers
        with _global_lock:
            _global_subscribers = [e for e in _global_subscribers if e is not entry]

    return unsubscribe


def _after_fork_in_child() -> None:
    for ledger in list(_ledgers):
        ledger._reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def flush_all() -> None:
    """Write the pending events of every ledger in this process (reads call this first)."""
    for ledger in list(_ledgers):
        if ledger._pending:
            ledger.flush()


class Ledger:
    """The event ledger: per-run JSON-lines streams plus, later, their compacted Parquet.

    Open one with :meth:`open`. Appending is safe from any number of threads and processes.
    """

    def __init__(self, settings: Settings, *, explicit_dirs: bool = False) -> None:
        self.settings = settings
        self.runs_dir = settings.runs_dir
        self.ledger_dir = settings.ledger_dir
        self.fsync = settings.ledger_fsync
        self._explicit_dirs = explicit_dirs
        self._state_lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._subscribers: list[tuple[Subscriber, frozenset[str] | None]] = []
        self._writer = new_writer_id()
        self._implicit_started: set[str] = set()
        self._syncer: threading.Thread | None = None
        self._pending: list[tuple[str, str, dict[str, Any]]] = []
        self._pending_lock = threading.Lock()
        self._closed = False
        #: Run of events that name none and are raised outside any bound run (a session's run).
        self.default_run_id: str | None = None
        _ledgers.add(self)

    # --- opening -------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        runs_dir: str | os.PathLike[str] | None = None,
        ledger_dir: str | os.PathLike[str] | None = None,
        *,
        settings: Settings | None = None,
        must_exist: bool = False,
    ) -> Ledger:
        """Open the ledger at ``runs_dir``/``ledger_dir`` (defaults from settings).

        Args:
            runs_dir: directory of the per-run streams; ``SCALABLE_RUNS_DIR`` when omitted.
            ledger_dir: directory of compacted data; ``SCALABLE_LEDGER_DIR`` when omitted.
            settings: resolved settings to start from (``load_settings()`` when omitted).
            must_exist: raise if an explicitly given directory does not exist (readers).

        Raises:
            LedgerNotFoundError: ``must_exist`` and an explicitly given directory is missing.
            ConfigError: a ``SCALABLE_*`` variable is invalid.
        """
        base = settings or load_settings()
        resolved = base.with_overrides(runs_dir=runs_dir, ledger_dir=ledger_dir)
        if must_exist:
            for given, path, what in (
                (runs_dir, resolved.runs_dir, "runs directory"),
                (ledger_dir, resolved.ledger_dir, "ledger directory"),
            ):
                if given is not None and not path.is_dir():
                    raise LedgerNotFoundError(f"{what} {str(path)!r} does not exist; check the path or run something first")
        return cls(resolved, explicit_dirs=runs_dir is not None or ledger_dir is not None)

    @property
    def writer_id(self) -> str:
        """This ledger's writer id (``host:pid:random``), new in a forked child."""
        return self._writer

    def stream_path(self, run_id: str) -> Path:
        """Return the path of the stream of ``run_id``.

        Raises:
            EventValidationError: ``run_id`` is not a safe single path segment.
        """
        _check_run_id(run_id)
        return self.runs_dir / run_id / STREAM_NAME

    def run_ids(self) -> list[str]:
        """Return the ids of every run with a stream here, sorted."""
        flush_all()
        if not self.runs_dir.is_dir():
            return []
        return sorted(p.parent.name for p in self.runs_dir.glob(f"*/{STREAM_NAME}"))

    # --- appending -----------------------------------------------------------------------

    def append(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Append one event and return the record as written (all filled columns).

        Returns only after the line was handed to the OS.

        Raises:
            EventValidationError: the mapping has an unknown column or a bad value.
        """
        clean = self._validate_here(event)
        if self._pending:
            self.flush()  # queued events were raised first: they go first
        record = self._write(clean["run_id"], (clean,))[0]
        if self._subscribers or _global_subscribers:
            self._notify((record,))
        return record

    def append_many(self, events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Append events (possibly of several runs); one locked write per run's stream.

        Every event is validated before anything is written: one bad event writes none.

        Raises:
            EventValidationError: an event has an unknown column or a bad value (its index
                in the batch is named).
        """
        if self._closed:
            raise LedgerError("this ledger was closed; open a new one with Ledger.open()")
        by_run: dict[str, list[dict[str, Any]]] = {}
        order: list[tuple[str, int]] = []
        run, task, component = (context.current_run_id.get(), context.current_task_name.get(),
                                context.current_component.get())
        for index, event in enumerate(events):
            try:
                clean = self._validate(event, run, task, component)
            except EventValidationError as exc:
                raise EventValidationError(f"event #{index}: {exc}") from None
            batch = by_run.setdefault(clean["run_id"], [])
            order.append((clean["run_id"], len(batch)))
            batch.append(clean)
        if not order:
            return []
        if self._pending:
            self.flush()
        if len(by_run) == 1:
            (run_id, batch), = by_run.items()
            records = self._write(run_id, batch)
        else:
            written = {run_id: self._write(run_id, batch) for run_id, batch in by_run.items()}
            records = [written[run_id][i] for run_id, i in order]
        if self._subscribers or _global_subscribers:
            self._notify(records)
        return records

    def current_run(self) -> str:
        """The run an event that names none would go to now (the bound run, else implicit)."""
        return context.current_run_id.get() or self.default_run_id or context.implicit_run_id()

    def append_async(self, event: Mapping[str, Any]) -> None:
        """Validate an event now and write it soon, batched with others (group commit).

        Pending events are written before any later synchronous append of this ledger, so the
        stream keeps the order in which events were raised.

        The event keeps the id and timestamp of this call. It is written within
        ``FLUSH_INTERVAL_S``, when ``PENDING_LIMIT`` events are waiting, and by :meth:`flush`,
        which every read of this ledger, :meth:`finish_run` and :meth:`close` call first (and
        the interpreter's exit). Unlike :meth:`append`, returning does not mean written: a
        killed process loses what was still pending. For frequent, low-stakes events (cache
        hits and misses) on hot paths.

        Raises:
            EventValidationError: the mapping has an unknown column or a bad value.
        """
        clean = self._validate_here(event)
        ns = time.time_ns()
        stamp = (new_event_ids(1, ns // 1_000_000)[0], format_timestamp(ns), clean)
        with self._pending_lock:
            self._pending.append(stamp)
            full = len(self._pending) >= PENDING_LIMIT
        if full:
            self.flush()
        else:
            self._ensure_syncer()

    def flush(self) -> None:
        """Write every event queued by :meth:`append_async` (one batch per run)."""
        if not self._pending:
            return
        with self._pending_lock:
            pending, self._pending = self._pending, []
        by_run: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
        for item in pending:
            by_run.setdefault(item[2]["run_id"], []).append(item)
        records: list[dict[str, Any]] = []
        for run_id, items in by_run.items():
            records += self._write(run_id, [c for _i, _t, c in items], stamps=[(i, t) for i, t, _c in items])
        if self._subscribers or _global_subscribers:
            self._notify(records)
    def append_records(self, run_id: str, records: Iterable[bytes | Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Append complete events written elsewhere (a remote worker) as they are, in one write.

        Each record keeps its own ``event_id``, ``timestamp``, ``writer``, ``seq`` and ``prev``,
        so the foreign writer's chain stays verifiable. A record is either its raw JSON line
        (bytes, without or with its newline) or a mapping that was decoded from one in order.

        Raises:
            EventValidationError: a record does not decode, belongs to another run, is this
                ledger's own writer, or breaks its writer's chain inside the batch.
        """
        if self._closed:
            raise LedgerError("this ledger was closed; open a new one with Ledger.open()")
        lines: list[bytes] = []
        decoded: list[dict[str, Any]] = []
        heads: dict[str, tuple[int, str]] = {}
        for index, item in enumerate(records):
            raw = item.rstrip(b"\n") if isinstance(item, bytes) else encode_line(item).rstrip(b"\n")
            try:
                record = decode_line(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise EventValidationError(f"record #{index} of run {run_id!r} does not decode: {exc}") from None
            if b"\n" in raw:
                raise EventValidationError(f"record #{index} of run {run_id!r} spans several lines")
            if record["run_id"] != run_id:
                raise EventValidationError(f"record #{index} belongs to run {record['run_id']!r}, not {run_id!r}")
            writer = record["writer"]
            if writer == self._writer:
                raise EventValidationError(f"record #{index} claims this ledger's own writer {writer!r}")
            head = heads.get(writer)
            if head is not None and (record["seq"] != head[0] + 1 or record["prev"] != head[1]):
                raise EventValidationError(
                    f"record #{index} breaks the chain of writer {writer!r} (seq {record['seq']} after {head[0]})"
                )
            heads[writer] = (record["seq"], hashlib.sha256(raw).hexdigest())
            lines.append(raw)
            decoded.append(record)
        if not lines:
            return []
        stream = self._stream(run_id)
        with stream.lock:
            fd = stream.fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._commit(stream, b"\n".join(lines) + b"\n")
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        if self._subscribers or _global_subscribers:
            self._notify(decoded)
        return decoded

    def _validate_here(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Validate one event for this ledger, in the current run and task context."""
        if self._closed:
            raise LedgerError("this ledger was closed; open a new one with Ledger.open()")
        return self._validate(event, context.current_run_id.get(), context.current_task_name.get(),
                              context.current_component.get())

    def _validate(self, event: Mapping[str, Any], run: str | None, task: str | None, component: str | None) -> dict[str, Any]:
        """Validate an event, filling run, task and component from the context."""
        implicit = None
        if run is None:
            run = self.default_run_id
        if run is None:
            run = implicit = context.implicit_run_id()
        clean = validate_event(event, run_id=run, task_name=task, component=component)
        run_id = clean["run_id"]
        if run_id == implicit:
            if run_id not in self._implicit_started:
                self._start_implicit_run(run_id)
        elif run_id not in self._streams:
            _check_run_id(run_id)
        return clean

    def _stream(self, run_id: str) -> _Stream:
        stream = self._streams.get(run_id)
        if stream is None:
            path = self.stream_path(run_id)
            with self._state_lock:
                stream = self._streams.get(run_id)
                if stream is None:
                    stream = self._streams[run_id] = _Stream(path)
        return stream

    def _write(
        self,
        run_id: str,
        batch: Sequence[dict[str, Any]],
        *,
        stamps: Sequence[tuple[str, str]] | None = None,
        before_write: Callable[[_Stream, Sequence[dict[str, Any]]], None] | None = None,
    ) -> list[dict[str, Any]]:
        stream = self._stream(run_id)
        writer = self._writer
        with stream.lock:
            fd = stream.fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if before_write is not None:
                    before_write(stream, batch)
                seq = stream.seq
                prev = stream.prev
                if stamps is None:
                    ns = time.time_ns()
                    now_ts = format_timestamp(ns)
                    stamps = [(i, now_ts) for i in new_event_ids(len(batch), ns // 1_000_000)]
                parts: list[bytes] = []
                records: list[dict[str, Any]] = []
                dumps = orjson.dumps
                sha256 = hashlib.sha256
                for clean, (event_id, ts) in zip(batch, stamps, strict=True):
                    # Canonical column order, so a line re-encodes byte for byte from its
                    # columns (audits of compacted data rebuild the chain hashes from rows).
                    # Sorted keys (LINE_OPTIONS): a line re-encodes byte for byte from its columns.
                    record = {**clean, "event_id": event_id, "timestamp": ts, "writer": writer, "seq": seq,
                              "prev": prev, "schema_version": SCHEMA_VERSION}
                    line = dumps(record, option=LINE_OPTIONS)
                    prev = sha256(line).hexdigest()
                    parts.append(line)
                    records.append(record)
                    seq += 1
                parts.append(b"")
                self._commit(stream, b"\n".join(parts))
                stream.seq = seq
                stream.prev = prev
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return records

    def _commit(self, stream: _Stream, payload: bytes) -> None:
        """Write complete lines to a stream whose flock the caller holds; then sync per mode."""
        fd = stream.fd
        size = os.fstat(fd).st_size
        # Someone else wrote since our last write: make sure their last line is whole.
        if size and size != stream.end and os.pread(fd, 1, size - 1) != b"\n":
            _log.warning("ledger.torn_line_recovered", stream=str(stream.path), offset=size)
            payload = b"\n" + payload
        _write_all(fd, payload)
        stream.end = size + len(payload)
        if self.fsync is FsyncMode.ALWAYS:
            os.fsync(fd)
        elif self.fsync is FsyncMode.BATCH:
            stream.dirty = True
            self._ensure_syncer()

    def _start_implicit_run(self, run_id: str) -> None:
        with self._state_lock:
            if run_id in self._implicit_started:
                return
            self._implicit_started.add(run_id)
        self._write(run_id, [{"event_type": "run", "op": "started", "run_id": run_id,
                              "attrs": _dumps({"implicit": True, "project": "adhoc", "pid": os.getpid()})}])

    # --- sealing -------------------------------------------------------------------------

    def finish_run(self, run_id: str, status: str = "completed", attrs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Append ``run/finished`` with ``status`` and the seal of every writer's chain head.

        The seal is computed from the stream itself under its lock, so it covers the lines of
        every writer (threads, processes, remote workers) written before it.

        Returns:
            The ``run/finished`` record as written.
        """
        self.flush()

        def add_seal(stream: _Stream, batch: Sequence[dict[str, Any]]) -> None:
            heads, counts = _stream_heads(stream.path)
            seal: dict[str, Any] = {"heads": heads}
            mac = seal_digest(run_id, heads, self.settings.ledger_key)
            if mac:
                seal["hmac"] = mac
            info = {"status": status, "events": sum(counts.values()), "counts": counts, **(attrs or {}), "seal": seal}
            batch[0]["attrs"] = _dumps(info)

        clean = validate_event({"event_type": "run", "op": "finished", "run_id": run_id})
        records = self._write(run_id, [clean], before_write=add_seal)
        stream = self._stream(run_id)
        if self.fsync is not FsyncMode.NEVER:
            os.fsync(stream.fd)
        self._write_summary(run_id, records[0], stream.end)
        self._implicit_started.discard(run_id)
        if self._subscribers or _global_subscribers:
            self._notify(records)
        return records[0]

    def _write_summary(self, run_id: str, finished: Mapping[str, Any], stream_bytes: int) -> Path:
        """Write ``run.json`` beside the stream: Scalable's run metadata, status, seal and the sealed stream length.

        It is derived state (rebuildable from the stream with :meth:`rebuild_summaries`) that
        lets an audit notice a stream cut short, seal and all (see :mod:`scalable.ledger.runfiles`).
        """
        path = self.stream_path(run_id)
        started = first_event(path, "run", "started")
        return write_json(path.with_name(RUN_SUMMARY), run_json(run_id, started, finished, stream_bytes=stream_bytes))

    def rebuild_summaries(self, run_ids: Iterable[str] | None = None) -> list[Path]:
        """Rewrite every run's ``run.json`` (and a session's run's ``summary.json``) from its stream alone.

        Returns the files written. The result equals what starting and sealing wrote: the
        files are derived from the ``run/started`` and ``run/finished`` events and the
        stream's length up to the seal (see :func:`scalable.ledger.runfiles.session_run`).
        """
        written = []
        for run_id in run_ids if run_ids is not None else self.run_ids():
            path = self.stream_path(run_id)
            offset = 0
            started: dict[str, Any] | None = None
            for raw in path.read_bytes().split(b"\n")[:-1]:
                offset += len(raw) + 1
                try:
                    record = decode_line(raw)
                except ValueError:
                    continue
                if record["event_type"] == "run" and record["op"] == "started" and started is None:
                    started = record
                if record["event_type"] == "run" and record["op"] == "finished":
                    written.append(self._write_summary(run_id, record, offset))
                    if session_run(started):
                        written.append(write_summary_json(path, run_id))
                    break
            else:
                if session_run(started):
                    written.append(write_json(path.with_name(RUN_SUMMARY), run_json(run_id, started, None)))
        return written

    # --- durability ----------------------------------------------------------------------

    def _ensure_syncer(self) -> None:
        # The thread lives as long as the ledger is open; fork clears it (_reset_after_fork).
        if self._syncer is not None:
            return
        with self._state_lock:
            if self._syncer is not None:
                return
            ref = weakref.ref(self)
            thread = threading.Thread(target=_sync_loop, args=(ref,), name="scalable-ledger-fsync", daemon=True)
            self._syncer = thread
            thread.start()

    def sync(self) -> None:
        """fsync every stream this ledger wrote to since the last sync."""
        for stream in list(self._streams.values()):
            if stream.dirty:
                stream.dirty = False
                # A descriptor closed concurrently by close() has nothing left to sync.
                with contextlib.suppress(OSError):
                    os.fsync(stream.fd)

    def close(self) -> None:
        """Finish the implicit run if one was started, fsync and close every stream."""
        if self._closed:
            return
        self.flush()
        for run_id in list(self._implicit_started):
            try:
                self.finish_run(run_id, "completed")
            except OSError as exc:  # the directory may be gone at interpreter exit
                _log.warning("ledger.implicit_run_not_sealed", run_id=run_id, error=str(exc))
        self._closed = True
        with self._state_lock:
            streams, self._streams = self._streams, {}
        for stream in streams.values():
            with stream.lock:
                if self.fsync is not FsyncMode.NEVER:
                    with contextlib.suppress(OSError):
                        os.fsync(stream.fd)
                os.close(stream.fd)

    def _reset_after_fork(self) -> None:
        # The child must not continue the parent's chains under the parent's writer id.
        self._writer = new_writer_id()
        self._state_lock = threading.Lock()
        for stream in self._streams.values():
            with contextlib.suppress(OSError):
                os.close(stream.fd)
        self._streams = {}
        self._implicit_started = set()
        self._syncer = None
        self._pending = []  # the parent writes its own pending events
        self._pending_lock = threading.Lock()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- subscribers ---------------------------------------------------------------------

    def subscribe(self, callback: Subscriber, event_types: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``callback(record)`` after each appended event (optionally of some types).

        A callback that raises is logged and detached; it never breaks an append.

        Returns:
            A function that unsubscribes the callback.
        """
        entry = (callback, frozenset(event_types) if event_types is not None else None)
        with self._state_lock:
            self._subscribers = [*self._subscribers, entry]

        def unsubscribe() -> None:
            with self._state_lock:
                self._subscribers = [e for e in self._subscribers if e is not entry]

        return unsubscribe

    def _notify(self, records: Sequence[Mapping[str, Any]]) -> None:
        global _global_subscribers
        for entry in [*self._subscribers, *_global_subscribers]:
            callback, types = entry
            for record in records:
                if types is not None and record["event_type"] not in types:
                    continue
                try:
                    callback(record)
                except Exception as exc:
                    _log.error("ledger.subscriber_detached", subscriber=repr(callback), error=repr(exc))
                    with self._state_lock:
                        self._subscribers = [e for e in self._subscribers if e is not entry]
                    with _global_lock:
                        _global_subscribers = [e for e in _global_subscribers if e is not entry]
                    break

    # --- reading -------------------------------------------------------------------------

    def read_run(self, run_id: str) -> StreamReader:
        """Return a reader of the run's stream (records in file order, problems collected)."""
        flush_all()
        return read_stream(self.stream_path(run_id))

    def audit_structure(self, run_id: str | None = None) -> AuditReport:
        """Check every run's events (one run, or all): lines parse, chains hold, seals match.

        A run whose stream is still here is read line by line (problems name file:line). A
        run whose stream compaction retired is checked from its compacted rows: each row is
        re-encoded to its exact line, so chains and seals verify the same way, and retention
        tombstones (``run/retired``) account for the events they removed.

        Raises:
            RunNotFoundError: ``run_id`` has no events.
        """
        from scalable.ledger.audit import audit_rows, audit_streams
        from scalable.ledger.compact import read_manifest

        flush_all()
        streams = set(self.run_ids())
        # Compacted runs whose stream is gone (or came back holding only later events).
        retired = {r for r, state in read_manifest(self.ledger_dir).streams.items() if state.retired or r not in streams}
        runs = [run_id] if run_id is not None else sorted(streams | retired)
        from_rows = [r for r in runs if r in retired]
        from_streams = [r for r in runs if r not in retired]
        for r in from_streams:
            if not self.stream_path(r).exists():
                raise RunNotFoundError(f"run {r!r} has no stream under {str(self.runs_dir)!r} and no compacted events")
        report = audit_streams([(r, self.stream_path(r)) for r in from_streams], key=self.settings.ledger_key)
        if from_rows:
            from scalable.ledger.views import connect

            con = connect(self)
            try:
                for r in from_rows:
                    rows = con.execute("SELECT * FROM events WHERE run_id = $1 ORDER BY writer, seq", [r]).fetchall()
                    columns = [d[0] for d in con.description or []]
                    where = f"{self.ledger_dir / 'events'} (run {r})"
                    report.extend(audit_rows(r, [dict(zip(columns, row, strict=True)) for row in rows], where,
                                             key=self.settings.ledger_key))
            finally:
                con.close()
        return report

    def audit(
        self,
        run_id: str | None = None,
        *,
        content: bool = True,
        storage_options: Mapping[str, Mapping[str, Any]] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> AuditReport:
        """Audit one run or the whole ledger.

        Structure: every line parses, every writer's ``seq`` is gapless and its ``prev`` chain
        holds, sealed runs match their seal (an HMAC with ``SCALABLE_LEDGER_KEY``). Content
        (unless ``content=False``): the latest artifact at every location still hashes to
        its recorded digest, on any fsspec location.

        Args:
            run_id: audit only this run.
            content: re-hash stored bytes as well.
            storage_options: per-protocol fsspec options (e.g. ``{"s3": {...}}``) for reading.
            progress: called with the number of artifacts checked, as they complete.

        Raises:
            RunNotFoundError: ``run_id`` has no events.
        """
        from scalable.ledger.audit import audit_content, latest_artifacts
        from scalable.ledger.views import connect

        flush_all()
        report = self.audit_structure(run_id)
        if content:
            con = connect(self)
            try:
                items = latest_artifacts(con, run_id)
            finally:
                con.close()
            report.extend(audit_content(items, storage_options=storage_options, progress=progress))
        return report

    def replay(
        self,
        run_id: str,
        *,
        into: str | os.PathLike[str] | None = None,
        until: str | None = None,
        handlers: Iterable[Callable[[Mapping[str, Any]], None]] = (),
        storage_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> ReplayResult:
        """Replay a run's events in order through ``handlers``; restore artifacts into ``into``.

        See :mod:`scalable.ledger.replay`.

        Raises:
            RunNotFoundError: the run has no events.
            IntegrityError: a restored artifact does not match its recorded digest.
        """
        from scalable.ledger.replay import replay

        return replay(self, run_id, into=into, until=until, handlers=handlers, storage_options=storage_options)

    def lineage(
        self,
        node: str | None,
        *,
        direction: str = "up",
        depth: int | None = None,
        as_of: str | None = None,
    ) -> LineageGraph:
        """Return the lineage graph of ``node`` (a digest, URI or run id).

        Args:
            node: where to start; ``None`` gives every edge of the ledger.
            direction: ``up`` (what it came from), ``down`` (what came of it) or ``both``.
            depth: the largest number of edges from ``node`` (unbounded when None).
            as_of: ISO-8601 time; the ledger as it was then.

        Raises:
            ConfigError: ``direction`` or ``depth`` is not valid.
            NodeNotFoundError: ``node`` appears nowhere in the lineage.
        """
        from scalable.ledger.lineage import lineage_graph
        from scalable.ledger.views import connect

        if direction not in ("up", "down", "both"):
            raise ConfigError(f"direction {direction!r} is not one of up, down, both")
        if depth is not None and depth < 1:
            raise ConfigError(f"depth {depth} must be at least 1")
        flush_all()
        con = connect(self, as_of=as_of)
        try:
            graph = lineage_graph(con, node, direction=direction, depth=depth)
            known = bool(graph.edges) or node is None or bool(
                con.execute("SELECT count(*) FROM lineage WHERE src = $1 OR dst = $1", [graph.root]).fetchall()[0][0]
            )
        finally:
            con.close()
        if not known:
            raise NodeNotFoundError(
                f"{node!r} is not an artifact digest, location or run id in the ledger; "
                "find one with: scalable ledger query \"SELECT digest, location FROM artifacts\""
            )
        return graph

    def query(self, sql: str, *, as_of: str | None = None) -> pa.Table:
        """Run a read-only SQL query over the ledger's views and return an Arrow table.

        Args:
            sql: SELECT-like SQL over ``events``, ``artifacts``, ``cache``, ``tasks``, ``runs``.
            as_of: ISO-8601 time; every view then shows only events at or before it.

        Raises:
            ReadOnlyQueryError: the statement would write, attach, load or configure.
            QueryError: the SQL does not parse or bind.
        """
        from scalable.ledger.views import run_query

        flush_all()
        return run_query(self, sql, as_of=as_of)

    def compact(
        self,
        run_ids: Iterable[str] | None = None,
        *,
        keep_jsonl: bool = True,
        retire_before: str | None = None,
        progress: bool = False,
    ) -> CompactionResult:
        """Compact the streams into the Parquet dataset under ``ledger_dir/events/``.

        See :func:`scalable.ledger.compact.compact` for the arguments and guarantees. With
        ``SCALABLE_RUNS_DIR_REMOTE`` set, the local streams are synced and the remote ledger
        is compacted instead (:func:`scalable.ledger.remote.compact_remote`).

        Raises:
            ConfigError: retention or stream retirement was asked of a remote ledger.
        """
        from scalable.ledger.compact import compact

        if self.settings.runs_dir_remote:
            from scalable.ledger.remote import compact_remote

            if not keep_jsonl or retire_before:
                raise ConfigError(
                    "--no-keep-jsonl and --retire-before work on a local ledger only; unset "
                    "SCALABLE_RUNS_DIR_REMOTE to retire local streams or events"
                )
            remote = self._remote()
            from scalable.ledger.remote import sync

            sync(self, remote)
            return compact_remote(remote)
        return compact(self, run_ids, keep_jsonl=keep_jsonl, retire_before=retire_before, progress=progress)

    def sync_remote(self) -> SyncResult:
        """Ship the new complete lines of every local stream to ``SCALABLE_RUNS_DIR_REMOTE``.

        Raises:
            ConfigError: no remote is configured, or its URI cannot be opened.
        """
        from scalable.ledger.remote import sync

        return sync(self, self._remote())

    def _remote(self) -> RemoteLedger:
        from scalable.ledger.remote import open_remote

        uri = self.settings.runs_dir_remote
        if not uri:
            raise ConfigError("no remote ledger: set SCALABLE_RUNS_DIR_REMOTE to an fsspec URI such as s3://bucket/ledger/")
        return open_remote(uri)


def _stream_heads(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """Return every writer's last ``seq`` and head hash, and event counts by type."""
    heads: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for _number, raw, record in read_stream(path).lines():
        heads[record["writer"]] = {"seq": record["seq"], "head": hashlib.sha256(raw).hexdigest()}
        counts[record["event_type"]] = counts.get(record["event_type"], 0) + 1
    return heads, counts


def _check_run_id(run_id: str) -> None:
    if not run_id or "/" in run_id or "\\" in run_id or run_id in (".", "..") or "\x00" in run_id:
        raise EventValidationError(f"run id {run_id!r} is not valid: use one path segment of letters, digits, '-', '_' and '.'")


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _sync_loop(ref: weakref.ref[Ledger]) -> None:
    last_sync = time.monotonic()
    while True:
        time.sleep(FLUSH_INTERVAL_S)
        ledger = ref()
        if ledger is None or ledger._closed:
            return
        try:
            ledger.flush()
            if time.monotonic() - last_sync >= 1.0:
                ledger.sync()
                last_sync = time.monotonic()
        except Exception as exc:  # a background flush must never kill the process
            _log.error("ledger.background_flush_failed", error=repr(exc))
        del ledger
