"""The ledger facade: appends to the per-run streams, run sealing, and the API over the rest.

How the invariants of appending hold:

* **Whole lines.** Each append builds complete lines in memory and writes them with one
  ``write`` on an ``O_APPEND`` descriptor while holding an exclusive ``flock`` on the stream,
  so lines of different threads and processes never interleave.
* **Acknowledged means written.** ``append`` returns after ``write`` handed every byte to the
  OS; a killed process loses nothing it acknowledged. ``SCALABLE_LEDGER_FSYNC`` adds power-loss
  durability: ``always`` fsyncs in every append, ``batch`` at least once a second and on close.
* **Torn lines.** Under the lock, a writer checks that the stream ends in a newline; if a
  writer died mid-line it logs the recovery and starts with a newline (see
  :mod:`scalable.ledger.stream`).
* **Chains.** Each writer numbers its lines per stream (``seq`` from 0) and links each to the
  SHA-256 of its previous line (``prev``). ``finish_run`` seals the heads of every writer (a
  ledger keeps the heads of what it wrote itself and reads only what others wrote in between),
  the digest of every byte before the seal, and the sealing line itself.

Every other method delegates to the module that owns the work: reading to
:mod:`~scalable.ledger.stream`, queries to :mod:`~scalable.ledger.views`, lineage to
:mod:`~scalable.ledger.lineage`, audits to :mod:`~scalable.ledger.audit`, replay to
:mod:`~scalable.ledger.replay`, comparisons to :mod:`~scalable.ledger.diff`, compaction to :mod:`~scalable.ledger.compact` and syncing to
:mod:`~scalable.ledger.segments`; where the data lives is the :mod:`~scalable.ledger.location`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import operator
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from scalable.errors import EventValidationError, LedgerError, RunSealedError, ScalableError, os_error
from scalable.ledger import bus, context
from scalable.ledger.durable import fsync_unless_never, sync_after_write, write_all
from scalable.ledger.events import (
    AFTER_SEAL_OPS,
    GENESIS,
    SCHEMA_VERSION,
    check_run_id,
    decode_line,
    encode_chained,
    encode_line,
    format_timestamp,
    new_event_ids,
    new_writer_id,
    validate_event,
    validate_events,
)
from scalable.ledger.runfiles import rebuild_summary, write_summary
from scalable.ledger.stream import (
    ChainHeads,
    StreamReader,
    compact_json,
    ends_sealed,
    ends_torn,
    list_streams,
    new_seal,
    prefix_digest,
    read_stream,
    sign_seal_line,
    stream_path,
)
from scalable.logs import get_logger
from scalable.settings import Settings, load_settings

if TYPE_CHECKING:
    import pyarrow as pa

    from scalable.ledger.audit import AuditProgress, AuditReport
    from scalable.ledger.compact import CompactionResult, Progress
    from scalable.ledger.diff import RunDiff
    from scalable.ledger.lineage import LineageGraph
    from scalable.ledger.location import Location
    from scalable.ledger.recover import RecoveryResult
    from scalable.ledger.replay import ReplayResult
    from scalable.ledger.segments import SyncResult

__all__ = ["FLUSH_INTERVAL_S", "PENDING_LIMIT", "Ledger"]

#: append_async: the longest an event waits, and how many may wait, before they are written.
FLUSH_INTERVAL_S = 0.1
PENDING_LIMIT = 4096
_log = get_logger("scalable.ledger")
_RUN_OF = operator.itemgetter("run_id")
_TYPE_OF = operator.itemgetter("event_type")


def _after_seal(event: Mapping[str, Any]) -> bool:
    """Whether the ledger may add ``event`` to a sealed run (a retirement or a rerun's verdict)."""
    return event["event_type"] == "run" and event["op"] in AFTER_SEAL_OPS


class _Stream:
    """This writer's open descriptor, chain state and bookkeeping for one run's stream."""

    __slots__ = ("accounted", "dirty", "end", "fd", "gaps", "heads", "lock", "path", "prev", "sealed", "seq")

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.lock = threading.Lock()
        self.seq = 0
        self.prev = GENESIS
        self.dirty = False
        self.end = -1  # file size after this writer's last write; -1 = unknown
        #: whether the run is known to be sealed (by this ledger, or found so under the lock)
        self.sealed = False
        #: heads and counts of every line before ``accounted``, except those in ``gaps``
        self.heads = ChainHeads()
        self.accounted = 0
        #: byte ranges others wrote, to read when the run is sealed
        self.gaps: list[tuple[int, int]] = []

    def note_foreign(self, size: int) -> None:
        """Note that bytes up to ``size`` exist, those beyond ``accounted`` written by others."""
        if size > self.accounted:
            self.gaps.append((self.accounted, size))
            self.accounted = size

    def read_gaps(self) -> None:
        """Add the lines others wrote (the gaps) to ``heads``."""
        for start, end in self.gaps:
            self.heads.scan_range(self.fd, start, end)
        self.gaps = []

    def refuse_if_sealed(self, run_id: str, events: Iterable[Mapping[str, Any]]) -> int:
        """Refuse ``events`` if the run is sealed, unless each is one the ledger adds after a seal.

        The caller holds the stream's flock, so a seal another writer wrote is found here: it
        is the last line, or only retirements and verdicts follow it.

        Returns:
            The stream's size.

        Raises:
            RunSealedError: the run is sealed and an event is not a retirement or a verdict.
        """
        size = os.lseek(self.fd, 0, os.SEEK_END)  # the size, without building a stat result
        if not self.sealed:
            if size in (0, self.end) or not ends_sealed(self.path):
                return size  # this writer wrote the last line (its own seal marks the stream) or no seal ends it
            self.sealed = True
        if not all(map(_after_seal, events)):
            raise RunSealedError(
                f"run {run_id!r} is sealed (its run/finished line is written in {str(self.path)!r}): "
                "nothing more can be appended to it; record new events in a new run"
            )
        return size


class Ledger:
    """The event ledger: per-run JSON-lines streams and their compacted Parquet.

    Open one with :meth:`open`. Appending is safe from any number of threads and processes.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runs_dir = settings.runs_dir
        self.ledger_dir = settings.ledger_dir
        self.fsync = settings.ledger_fsync
        self._state_lock = threading.Lock()
        self._streams: dict[str, _Stream] = {}
        self._subscribers = bus.Subscribers()
        self._writer = new_writer_id()
        self._implicit_started: set[str] = set()
        self._background: threading.Thread | None = None
        #: events of append_async not yet written: (time in ns, validated event)
        self._pending: list[tuple[int, dict[str, Any]]] = []
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        #: queued batches a flush could not write, until a flush raises them: (run, events, why)
        self._lost: list[tuple[str, int, Exception]] = []
        self._closed = False
        #: Run of events that name none and are raised outside any bound run (a session's run).
        self.default_run_id: str | None = None
        bus.register(self)

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
            must_exist: check that a ledger is there to read (readers): see
                :meth:`Location.check_exists <scalable.ledger.location.Location.check_exists>`.

        Raises:
            LedgerNotFoundError: ``must_exist`` and no ledger is there.
            StoreError: ``must_exist`` and the place cannot be read or reached (a subclass
                saying why: permissions, credentials, network, a missing bucket).
            ConfigError: a ``SCALABLE_*`` variable is invalid.
        """
        base = settings or load_settings()
        resolved = base.with_overrides(runs_dir=runs_dir, ledger_dir=ledger_dir)
        if must_exist:
            from scalable.ledger.location import open_location

            open_location(resolved).check_exists()
        return cls(resolved)

    @property
    def writer_id(self) -> str:
        """This ledger's writer id (``host:pid:random``), new in a forked child."""
        return self._writer

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def location(self) -> Location:
        """Where the ledger's data lives: the local directories, or object storage.

        Raises:
            ConfigError: ``SCALABLE_RUNS_DIR_REMOTE`` cannot be opened.
        """
        from scalable.ledger.location import open_location

        return open_location(self.settings)

    def stream_path(self, run_id: str) -> Path:
        """Return the path of the stream of ``run_id``.

        Raises:
            EventValidationError: ``run_id`` is not a safe single path segment.
        """
        return stream_path(self.runs_dir, run_id)

    def run_ids(self) -> list[str]:
        """Return the ids of every run with a stream here, sorted."""
        bus.flush_all()
        return [run_id for run_id, _path, _size in list_streams(self.runs_dir)]

    # --- appending -----------------------------------------------------------------------

    def append(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Append one event and return it as written (all filled columns).

        Returns only after the line was handed to the OS.

        Raises:
            EventValidationError: the mapping has an unknown column or a bad value.
        """
        if self._closed:
            raise LedgerError("this ledger was closed; open a new one with Ledger.open()")
        clean = self._validate(
            event,
            context.current_run_id.get(),
            context.current_task_name.get(),
            context.current_component.get(),
            context.current_task_id.get(),
        )
        if self._pending or self._flush_lock.locked():
            self.flush(raise_lost=False)  # queued events were raised first: they go first
        written = self._write(clean["run_id"], (clean,))[0]
        if bus.has_subscribers(self._subscribers):
            bus.notify(self._subscribers, (written,))
        return written

    def append_many(self, events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Append events (possibly of several runs); one locked write per run's stream.

        Every event is validated before anything is written: one bad event writes none.

        Raises:
            EventValidationError: an event has an unknown column or a bad value (its index
                in the batch is named).
        """
        if self._closed:
            raise LedgerError("this ledger was closed; open a new one with Ledger.open()")
        if isinstance(events, Mapping | str | bytes) or not isinstance(events, Iterable):
            raise EventValidationError(
                f"append_many takes an iterable of event mappings, not a {type(events).__name__}; "
                "append one event with append"
            )
        run = context.current_run_id.get()
        implicit = None
        if run is None:
            run = self.default_run_id
        if run is None:
            run = implicit = context.implicit_run_id()
        cleans = validate_events(
            events if type(events) is list else list(events),
            run_id=run,
            task_name=context.current_task_name.get(),
            component=context.current_component.get(),
            task_id=context.current_task_id.get(),
        )
        if not cleans:
            return []
        runs = set(map(_RUN_OF, cleans))
        if implicit is not None and implicit in runs and implicit not in self._implicit_started:
            self._start_implicit_run(implicit)
        if self._pending or self._flush_lock.locked():
            self.flush(raise_lost=False)
        if len(runs) == 1:
            written = self._write(runs.pop(), cleans)
        else:
            by_run: dict[str, list[dict[str, Any]]] = {}
            order: list[tuple[str, int]] = []
            for clean in cleans:
                batch = by_run.setdefault(clean["run_id"], [])
                order.append((clean["run_id"], len(batch)))
                batch.append(clean)
            by_stream = {run_id: self._write(run_id, batch) for run_id, batch in by_run.items()}
            written = [by_stream[run_id][i] for run_id, i in order]
        if bus.has_subscribers(self._subscribers):
            bus.notify(self._subscribers, written)
        return written

    def current_run(self) -> str:
        """The run an event that names none would go to now (the bound run, else implicit)."""
        return context.current_run_id.get() or self.default_run_id or context.implicit_run_id()

    def append_async(self, event: Mapping[str, Any]) -> None:
        """Validate an event now and write it soon, batched with others (group commit).

        Pending events are written before any later synchronous append of this ledger, so the
        stream keeps the order in which events were raised.

        The event keeps the time of this call, as its timestamp and in its id (drawn when it
        is written, with the ids of the events queued with it, in the order they were raised).
        It is written within ``FLUSH_INTERVAL_S``, when ``PENDING_LIMIT`` events are waiting,
        and by :meth:`flush`, which every read of this ledger, :meth:`finish_run` and
        :meth:`close` call first (and the interpreter's exit). Unlike :meth:`append`,
        returning does not mean written: a killed process loses what was still pending. For frequent, low-stakes events (cache
        hits and misses) on hot paths.

        Raises:
            EventValidationError: the mapping has an unknown column or a bad value.
        """
        clean = self._validate_here(event)
        stream = self._streams.get(clean["run_id"])
        if stream is not None and stream.sealed:
            stream.refuse_if_sealed(clean["run_id"], (clean,))
        ns = time.time_ns()
        with self._pending_lock:
            self._pending.append((ns, clean))
            full = len(self._pending) >= PENDING_LIMIT
        if full:
            self.flush(raise_lost=False)
        else:
            self._ensure_background()

    def flush(self, *, raise_lost: bool = True) -> None:
        """Write every event queued by :meth:`append_async` (one batch per run).

        A flush in progress holds a lock from taking the queue until its lines are written; a
        synchronous append waits for it, so a thread's queued events always precede its next
        line in the chain, whichever thread writes them.

        A run's batch that cannot be written (its run was sealed meanwhile, the disk is full)
        is logged and kept as lost; the other runs' batches are still written. Lost batches,
        also those of a flush by the background thread, before an append or a seal, are
        raised once, by the next flush with ``raise_lost`` (the default) or by :meth:`close`.

        Raises:
            LedgerError: queued events were not written (the message names the runs and counts
                and says why); they are not queued any more.
        """
        if self._pending or self._flush_lock.locked():
            self._write_queue()
        if raise_lost and self._lost:
            with self._flush_lock:
                lost, self._lost = self._lost, []
            if lost:  # not taken by another thread's flush meanwhile
                runs = ", ".join(f"{count} of run {run_id!r}" for run_id, count, _exc in lost)
                first = lost[0][2]
                raise LedgerError(f"events queued with append_async were not written ({runs}): {first}") from first

    def _write_queue(self) -> None:
        with self._flush_lock:
            with self._pending_lock:
                pending, self._pending = self._pending, []
            stamps = _stamps([ns for ns, _clean in pending])
            by_run: dict[str, tuple[list[dict[str, Any]], list[str], list[str]]] = {}
            for (_ns, clean), (event_id, ts) in zip(pending, stamps, strict=True):
                batch, ids, times = by_run.setdefault(clean["run_id"], ([], [], []))
                batch.append(clean)
                ids.append(event_id)
                times.append(ts)
            written: list[dict[str, Any]] = []
            for run_id, (batch, ids, times) in by_run.items():
                try:
                    written += self._write(run_id, batch, stamps=(ids, times))
                except (ScalableError, OSError) as exc:  # one run's failure does not drop the others' events
                    _log.error("ledger.queued_events_lost", run_id=run_id, events=len(batch), error=str(exc))
                    self._lost.append((run_id, len(batch), exc))
        if written and bus.has_subscribers(self._subscribers):
            bus.notify(self._subscribers, written)

    def append_lines(self, run_id: str, lines: Iterable[bytes | Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Append complete event lines another writer wrote (a remote worker) as they are, in one write.

        Each line keeps its own ``event_id``, ``timestamp``, ``writer``, ``seq`` and ``prev``,
        so the other writer's chain stays verifiable. A line is given as its raw bytes
        (without or with its newline) or as the mapping decoded from it, in order.

        Returns:
            The events, decoded.

        Raises:
            EventValidationError: ``run_id`` is not a valid run id, or a line does not decode,
                belongs to another run, is this ledger's own writer, or breaks its writer's
                chain inside the batch.
        """
        if self._closed:
            raise LedgerError("this ledger was closed; open a new one with Ledger.open()")
        check_run_id(run_id)
        raws: list[bytes] = []
        decoded: list[dict[str, Any]] = []
        digests: list[str] = []
        heads: dict[str, tuple[int, str]] = {}
        for index, item in enumerate(lines):
            raw = item.rstrip(b"\n") if isinstance(item, bytes) else encode_line(item).rstrip(b"\n")
            try:
                event = decode_line(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise EventValidationError(f"line #{index} of run {run_id!r} does not decode: {exc}") from None
            if b"\n" in raw:
                raise EventValidationError(f"line #{index} of run {run_id!r} spans several lines")
            if event["run_id"] != run_id:
                raise EventValidationError(f"line #{index} belongs to run {event['run_id']!r}, not {run_id!r}")
            writer = event["writer"]
            if writer == self._writer:
                raise EventValidationError(f"line #{index} claims this ledger's own writer {writer!r}")
            head = heads.get(writer)
            if head is not None and (event["seq"] != head[0] + 1 or event["prev"] != head[1]):
                raise EventValidationError(
                    f"line #{index} breaks the chain of writer {writer!r} (seq {event['seq']} after {head[0]})"
                )
            digest = hashlib.sha256(raw).hexdigest()
            heads[writer] = (event["seq"], digest)
            raws.append(raw)
            decoded.append(event)
            digests.append(digest)
        if not raws:
            return []
        stream = self._stream(run_id)
        with stream.lock:
            fd = stream.fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = stream.refuse_if_sealed(run_id, decoded)
                offset = self._commit(stream, b"\n".join(raws) + b"\n", size)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            for raw, event, digest in zip(raws, decoded, digests, strict=True):
                stream.heads.add(event["writer"], offset, offset, event["seq"], digest)
                stream.heads.count(event["event_type"], offset)
                offset += len(raw) + 1
        if bus.has_subscribers(self._subscribers):
            bus.notify(self._subscribers, decoded)
        return decoded

    def _validate_here(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Validate one event for this ledger, in the current run and task context."""
        if self._closed:
            raise LedgerError("this ledger was closed; open a new one with Ledger.open()")
        return self._validate(
            event,
            context.current_run_id.get(),
            context.current_task_name.get(),
            context.current_component.get(),
            context.current_task_id.get(),
        )

    def _validate(
        self,
        event: Mapping[str, Any],
        run: str | None,
        task: str | None,
        component: str | None,
        task_id: str | None = None,
    ) -> dict[str, Any]:
        """Validate an event, filling run, task, component and the task's id from the context."""
        implicit = None
        if run is None:
            run = self.default_run_id
        if run is None:
            run = implicit = context.implicit_run_id()
        clean = validate_event(event, run_id=run, task_name=task, component=component, task_id=task_id)
        run_id = clean["run_id"]
        if run_id == implicit and run_id not in self._implicit_started:
            self._start_implicit_run(run_id)
        return clean

    def _stream(self, run_id: str) -> _Stream:
        stream = self._streams.get(run_id)
        if stream is None:
            path = self.stream_path(run_id)
            with self._state_lock:
                stream = self._streams.get(run_id)
                if stream is None:
                    try:
                        stream = self._streams[run_id] = _Stream(path)
                    except OSError as exc:
                        if isinstance(exc, PermissionError):
                            raise
                        raise os_error(exc, f"cannot create the stream {str(path)!r}", LedgerError) from None
        return stream

    def _write(
        self,
        run_id: str,
        batch: Sequence[dict[str, Any]],
        *,
        stamps: tuple[Sequence[str], Sequence[str]] | None = None,
        before_write: Callable[[_Stream, Sequence[dict[str, Any]]], None] | None = None,
        finalize: Callable[[bytes], bytes] | None = None,
    ) -> list[dict[str, Any]]:
        stream = self._stream(run_id)
        writer = self._writer
        with stream.lock:
            fd = stream.fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = stream.refuse_if_sealed(run_id, batch)
                if before_write is not None:
                    before_write(stream, batch)
                seq = stream.seq
                prev = stream.prev
                if stamps is None:
                    ns = time.time_ns()
                    ids: Sequence[str] = new_event_ids(len(batch), ns // 1_000_000)
                    times: Sequence[str] = [format_timestamp(ns)] * len(batch)
                else:
                    ids, times = stamps
                payload: bytes | bytearray
                if finalize is None:
                    payload = bytearray()
                    prev = encode_chained(batch, ids, times, writer, seq, prev, payload)
                    written = list(batch)
                    head = payload.rfind(b"\n", 0, len(payload) - 1) + 1  # where the last line starts
                else:  # the sealing line, whose own digests are filled in once it is encoded
                    (clean,) = batch
                    event = {
                        **clean,
                        "event_id": ids[0],
                        "timestamp": times[0],
                        "writer": writer,
                        "seq": seq,
                        "prev": prev,
                        "schema_version": SCHEMA_VERSION,
                    }
                    line = finalize(encode_line(event)[:-1])
                    event["attrs"] = orjson.loads(line)["attrs"]
                    prev = hashlib.sha256(line).hexdigest()
                    written, payload, head = [event], line + b"\n", 0
                seq += len(written)
                offset = self._commit(stream, payload, size)
                stream.seq = seq
                stream.prev = prev
                if finalize is not None:
                    stream.sealed = True  # under the lock: no line of this ledger's can slip in after it
                heads = stream.heads
                heads.add(writer, offset, offset + head, seq - 1, prev)
                if len(written) == 1:
                    heads.count(written[0]["event_type"], offset)
                else:
                    for event_type, count in Counter(map(_TYPE_OF, written)).items():
                        heads.count(event_type, offset, count)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        return written

    def _commit(self, stream: _Stream, payload: bytes | bytearray, size: int) -> int:
        """Write complete lines to a stream (of ``size`` bytes) whose flock the caller holds; then sync per mode.

        Returns:
            The offset of the first line written.
        """
        fd = stream.fd
        first = size
        if size != stream.end:
            # Someone else wrote since our last write: note their bytes, make sure their last line is whole.
            stream.note_foreign(size)
            if ends_torn(fd, size):
                _log.warning("ledger.torn_line_recovered", stream=str(stream.path), offset=size)
                payload = b"\n" + payload
                first += 1
        try:
            write_all(fd, payload)
        except OSError as exc:
            # Nothing of this write is acknowledged: take back the part that reached the file
            # (under the lock, so only this writer's bytes), leaving no partial line behind.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise os_error(exc, f"cannot append to the stream {str(stream.path)!r}", LedgerError) from None
        stream.end = stream.accounted = size + len(payload)
        if sync_after_write(fd, self.fsync):
            stream.dirty = True
            if self._background is None:
                self._ensure_background()
        return first

    def _start_implicit_run(self, run_id: str) -> None:
        with self._state_lock:
            if run_id in self._implicit_started:
                return
            self._implicit_started.add(run_id)
        attrs = compact_json({"implicit": True, "project": "adhoc", "pid": os.getpid()})
        self._write(run_id, [{"event_type": "run", "op": "started", "run_id": run_id, "attrs": attrs}])

    # --- sealing -------------------------------------------------------------------------

    def finish_run(
        self, run_id: str, status: str = "completed", attrs: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Append ``run/finished`` with ``status`` and the seal of every writer's chain head.

        The seal is taken under the stream's lock, so it covers the lines of every writer
        (threads, processes, remote workers) written before it: their chain heads (the heads of
        the lines this ledger wrote are known already; those others wrote in between are read),
        the SHA-256 of every byte before it, and its own line (see :mod:`scalable.ledger.stream`).

        Returns:
            The ``run/finished`` event as written.
        """
        self.flush(raise_lost=False)  # lost batches are raised by the owner's flush or close
        key = self.settings.ledger_key

        def add_seal(stream: _Stream, batch: Sequence[dict[str, Any]]) -> None:
            size = os.fstat(stream.fd).st_size
            stream.note_foreign(size)
            stream.read_gaps()
            heads = stream.heads.heads()
            counts = stream.heads.counts()
            seal = new_seal(heads, prefix_digest(stream.fd, size), keyed=bool(key))
            info = {"status": status, "events": sum(counts.values()), "counts": counts, **(attrs or {}), "seal": seal}
            batch[0]["attrs"] = compact_json(info)

        clean = validate_event({"event_type": "run", "op": "finished", "run_id": run_id})
        finished = self._write(run_id, [clean], before_write=add_seal, finalize=lambda line: sign_seal_line(line, key))
        stream = self._stream(run_id)
        try:
            fsync_unless_never(stream.fd, self.fsync)
        except OSError as exc:
            raise os_error(exc, f"cannot sync the stream {str(stream.path)!r}", LedgerError) from None
        write_summary(stream.path, run_id, finished[0], stream.end)
        self._implicit_started.discard(run_id)
        context.end_implicit_run(run_id)
        if bus.has_subscribers(self._subscribers):
            bus.notify(self._subscribers, finished)
        return finished[0]

    def rebuild_summaries(self, run_ids: Iterable[str] | None = None) -> list[Path]:
        """Rewrite every run's ``run.json`` (and a session's run's ``summary.json``) from its stream alone.

        See :func:`scalable.ledger.runfiles.rebuild_summary`.
        """
        ids = run_ids if run_ids is not None else self.run_ids()
        return [path for run_id in ids for path in rebuild_summary(self.stream_path(run_id), run_id)]

    # --- durability ----------------------------------------------------------------------

    def _ensure_background(self) -> None:
        # The thread lives as long as the ledger is open; fork clears it (_reset_after_fork).
        if self._background is not None:
            return
        with self._state_lock:
            if self._background is not None:
                return
            ref = weakref.ref(self)
            thread = threading.Thread(target=_background_loop, args=(ref,), name="scalable-ledger-fsync", daemon=True)
            self._background = thread
            thread.start()

    def fsync_streams(self) -> None:
        """fsync every stream this ledger wrote to since the last fsync."""
        for stream in list(self._streams.values()):
            if stream.dirty:
                stream.dirty = False
                # A descriptor closed concurrently by close() has nothing left to fsync.
                with contextlib.suppress(OSError):
                    os.fsync(stream.fd)

    def close(self) -> None:
        """Finish the implicit run if one was started, fsync and close every stream.

        Raises:
            LedgerError: events queued with :meth:`append_async` were not written (see
                :meth:`flush`); raised once everything is closed.
        """
        if self._closed:
            return
        lost: LedgerError | None = None
        try:
            self.flush()
        except LedgerError as exc:  # raised once the streams are closed: close never stops half-way
            lost = exc
        for run_id in list(self._implicit_started):
            try:
                self.finish_run(run_id, "completed")
            except RunSealedError:  # another ledger of this process sealed it already
                context.end_implicit_run(run_id)
            except (OSError, LedgerError) as exc:  # the directory may be gone at interpreter exit
                _log.warning("ledger.implicit_run_not_sealed", run_id=run_id, error=str(exc))
        self._closed = True
        from scalable.ledger.views import forget_connection

        forget_connection(self)
        with self._state_lock:
            streams, self._streams = self._streams, {}
        for stream in streams.values():
            with stream.lock:
                with contextlib.suppress(OSError):
                    fsync_unless_never(stream.fd, self.fsync)
                os.close(stream.fd)
        if lost is not None:
            raise lost

    def _reset_after_fork(self) -> None:
        # The child must not continue the parent's chains under the parent's writer id.
        self._writer = new_writer_id()
        self._state_lock = threading.Lock()
        for stream in self._streams.values():
            with contextlib.suppress(OSError):
                os.close(stream.fd)
        self._streams = {}
        self._subscribers = bus.Subscribers(self._subscribers.entries)
        self._implicit_started = set()
        self._background = None
        self._pending = []  # the parent writes its own pending events
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._lost = []  # and reports its own losses

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- subscribers ---------------------------------------------------------------------

    def subscribe(self, callback: bus.Subscriber, event_types: Iterable[str] | None = None) -> Callable[[], None]:
        """Call ``callback(event)`` after each appended event (optionally of some types).

        A callback that raises is logged and detached; it never breaks an append.

        Returns:
            A function that unsubscribes the callback.
        """
        return self._subscribers.add(callback, event_types)

    # --- everything else delegates -------------------------------------------------------

    def read_run(self, run_id: str) -> StreamReader:
        """Return a reader of the run's stream (events in file order, problems collected)."""
        bus.flush_all()
        return read_stream(self.stream_path(run_id))

    def audit_structure(self, run_id: str | None = None) -> AuditReport:
        """Check every run's events (one run, or all): lines parse, chains hold, seals match.

        See :func:`scalable.ledger.audit.audit_structure`.

        Raises:
            RunNotFoundError: ``run_id`` has no events.
        """
        from scalable.ledger.audit import audit_structure

        return audit_structure(self, run_id)

    def audit(
        self,
        run_id: str | None = None,
        *,
        content: bool = True,
        storage_options: Mapping[str, Mapping[str, Any]] | None = None,
        progress: AuditProgress | None = None,
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
            progress: called with ``(phase, done, total)`` while the streams are read, the
                compacted runs checked and the artifacts re-hashed (see
                :data:`~scalable.ledger.audit.AuditProgress`).

        Raises:
            RunNotFoundError: ``run_id`` has no events.
        """
        from scalable.ledger.audit import audit_ledger

        return audit_ledger(self, run_id, content=content, storage_options=storage_options, progress=progress)

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
            RestoreError: some artifacts were missing or did not match their digests; every
                other one was restored (its ``result.failed`` names each one).
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
        relations: Iterable[str] | None = None,
        runs_only: bool = False,
        max_nodes: int | None = None,
    ) -> LineageGraph:
        """Return the lineage graph of ``node``: the data flow into it (``up``) or out of it (``down``).

        Args:
            node: a digest, a digest prefix (at least 8 hex characters), a location URI or
                local path, an artifact name or a run id; ``None`` gives every edge of the ledger.
            direction: ``up`` (what it came from), ``down`` (what came of it) or ``both``.
            depth: the largest number of edges from ``node`` (unbounded when None).
            as_of: ISO-8601 time; the ledger as it was then.
            relations: only these relations (see :func:`scalable.ledger.lineage.trace`).
            runs_only: the run-level graph instead.
            max_nodes: at most this many nodes, the nearest first; the graph's ``elided``
                counts the rest.

        Raises:
            ConfigError: an argument is not valid.
            NodeNotFoundError: ``node`` appears nowhere in the ledger.
            AmbiguousNodeError: ``node`` stands for several nodes (they are listed).
        """
        from scalable.ledger.lineage import trace

        return trace(
            self,
            node,
            direction=direction,
            depth=depth,
            as_of=as_of,
            relations=relations,
            runs_only=runs_only,
            max_nodes=max_nodes,
        )

    def diff(self, run_a: str, run_b: str, *, as_of: str | None = None, lineage: bool = False) -> RunDiff:
        """Compare run A with run B: artifacts by location (added, removed, changed, same), tasks by name.

        With ``lineage``, the diff also holds the verdict (``RunDiff.lineage``): every version
        matched by location, cache key and lineage position (identical, changed, missing,
        new), the first divergences and what follows from them, and the recipes compared. See
        :mod:`scalable.ledger.diff`.

        Args:
            run_a: the run compared from.
            run_b: the run compared to.
            as_of: ISO-8601 time; both runs as they were then.
            lineage: add the verdict of lineage.

        Raises:
            RunNotFoundError: a run has no events.
        """
        from scalable.ledger.diff import diff_runs

        return diff_runs(self, run_a, run_b, as_of=as_of, lineage=lineage)

    def query(self, sql: str, *, as_of: str | None = None) -> pa.Table:
        """Run a read-only SQL query over the ledger's views and return an Arrow table.

        Exactly one statement runs: a query, a plain ``EXPLAIN`` of one, or a read-only pragma
        (see :mod:`scalable.ledger.sandbox`), on a connection that can read nothing but the
        ledger's files and write none.

        Args:
            sql: SELECT-like SQL over ``events``, ``artifacts``, ``cache``, ``tasks``, ``runs``.
            as_of: ISO-8601 time; every view then shows only events at or before it.

        Raises:
            ReadOnlyQueryError: the statement would write, attach, load or configure, or
                several statements were given.
            QueryError: the SQL does not parse or bind.
        """
        from scalable.ledger.views import run_query

        return run_query(self, sql, as_of=as_of)

    def query_batches(self, sql: str, *, as_of: str | None = None, batch_rows: int = 65536) -> pa.RecordBatchReader:
        """Run a read-only SQL query like :meth:`query`, and stream its result in batches of rows.

        A result of any size is read a batch at a time (for writing it out, say) and is never
        held whole in memory. Read the batches to the end, or close the reader.

        Raises:
            ReadOnlyQueryError: the statement would write, attach, load or configure.
            QueryError: the SQL does not parse or bind (or fails while the batches are read).
        """
        from scalable.ledger.views import query_batches

        return query_batches(self, sql, as_of=as_of, batch_rows=batch_rows)

    def compact(
        self,
        run_ids: Iterable[str] | None = None,
        *,
        keep_jsonl: bool = True,
        retire_before: str | None = None,
        progress: Progress | None = None,
    ) -> CompactionResult:
        """Compact the new events into the Parquet dataset (see :func:`scalable.ledger.compact.compact`).

        With ``SCALABLE_RUNS_DIR_REMOTE`` set, the local streams are synced and the ledger on
        object storage is compacted.

        Raises:
            ConfigError: retention or stream retirement was asked of a remote ledger.
        """
        from scalable.ledger.compact import compact

        return compact(self, run_ids, keep_jsonl=keep_jsonl, retire_before=retire_before, progress=progress)

    def recover(self) -> RecoveryResult:
        """Rebuild the record of the compacted files (the generation) from the files present.

        Needed when the record was lost or damaged (queries and compactions then refuse to
        run, and nothing deletes the files); does nothing when the record is sound. See
        :mod:`scalable.ledger.recover`.

        Raises:
            CompactionConflictError: a compaction committed at the same time; run it again.
        """
        from scalable.ledger.recover import recover

        return recover(self)

    def sync_remote(self) -> SyncResult:
        """Ship the new complete lines of every local stream to ``SCALABLE_RUNS_DIR_REMOTE``.

        Raises:
            ConfigError: no remote is configured, or its URI cannot be opened.
        """
        from scalable.ledger.segments import sync_streams

        return sync_streams(self.location)


def _stamps(nanos: Sequence[int]) -> list[tuple[str, str]]:
    """``(event id, timestamp)`` of events raised at ``nanos``, in order: one batch of ids a millisecond."""
    out: list[tuple[str, str]] = []
    start, count = 0, len(nanos)
    while start < count:
        ms = nanos[start] // 1_000_000
        end = start + 1
        while end < count and nanos[end] // 1_000_000 == ms:
            end += 1
        out += zip(new_event_ids(end - start, ms), map(format_timestamp, nanos[start:end]), strict=True)
        start = end
    return out


def _after_fork_in_child() -> None:
    for ledger in bus.open_ledgers():
        ledger._reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
bus.set_opener(Ledger.open)


def _background_loop(ref: weakref.ref[Ledger]) -> None:
    """Write queued events every ``FLUSH_INTERVAL_S`` and fsync owed streams every second."""
    last_fsync = time.monotonic()
    while True:
        time.sleep(FLUSH_INTERVAL_S)
        ledger = ref()
        if ledger is None or ledger.closed:
            return
        try:
            ledger.flush(raise_lost=False)  # what it cannot write, the owner's next flush raises
            if time.monotonic() - last_fsync >= 1.0:
                ledger.fsync_streams()
                last_fsync = time.monotonic()
        except Exception as exc:  # a background flush must never kill the process
            _log.error("ledger.background_flush_failed", error=repr(exc))
        del ledger
