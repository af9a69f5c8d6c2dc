"""Syncing a machine's streams to a ledger on object storage, as immutable segments.

Each machine keeps writing its streams locally (fast, durable) and :func:`sync_streams` ships
what is new::

    <remote>/segments/<run_id>/<machine>-<start>-<end>.jsonl   bytes [start, end) of a stream

``<machine>`` is a random id kept in ``<runs_dir>/.machine-id``; a segment's name says which
bytes it holds, so a segment shipped twice after a crash is the same object, and object names
never collide between machines. The synced offset of each stream is kept beside it in
``.synced`` and written only after the upload returned.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from scalable.errors import ConfigError, LedgerError, os_error
from scalable.ledger import bus
from scalable.ledger.durable import create_file, replace_file
from scalable.ledger.events import encode_line
from scalable.ledger.location import SHIPPED_COMPACTED, Location, ObjectLocation, Source, shipped_compacted_runs
from scalable.ledger.sql import connect as sql_connect
from scalable.ledger.sql import parquet_select
from scalable.ledger.stream import complete_prefix, list_streams
from scalable.logs import get_logger

__all__ = ["SEGMENT_BYTES", "ShippedStream", "SyncResult", "machine_id", "shipped_streams", "sync_streams"]

#: The largest segment shipped at once (a longer stream is cut at a line boundary).
SEGMENT_BYTES: Final = 64 * 1024 * 1024
_SYNCED: Final = ".synced"
_MACHINE_ID: Final = ".machine-id"
_log = get_logger("scalable.ledger")


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one :func:`sync_streams` shipped: segments and bytes."""

    segments: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a plain mapping (for rendering)."""
        return {"segments": self.segments, "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class ShippedStream:
    """One machine's stream of a run, put together again from its segments.

    Attributes:
        run_id: the run.
        machine: the machine id that shipped it.
        data: the stream's bytes, segment after segment.
        pieces: ``(first line number, segment URI)`` of each segment, in order.
        gaps: byte ranges ``[start, end)`` no segment holds (a segment is missing).
        starts: the offset in ``data`` where each of ``pieces`` begins.
    """

    run_id: str
    machine: str
    data: bytes
    pieces: tuple[tuple[int, str], ...]
    gaps: tuple[tuple[int, int], ...]
    starts: tuple[int, ...] = ()

    def where(self, line: int) -> str:
        """The segment URI and line within it of line ``line`` (1-based) of the stream."""
        index = bisect.bisect_right([first for first, _uri in self.pieces], line) - 1
        first, uri = self.pieces[max(0, index)]
        return f"{uri}:{line - first + 1}"


def shipped_streams(location: ObjectLocation, run_id: str | None = None) -> list[ShippedStream]:
    """Every machine's stream of every run (or of ``run_id``) as its segments hold it, by run and machine."""
    by_stream: dict[tuple[str, str], list[tuple[int, int, Source]]] = {}
    for source in location.sources():
        if run_id is not None and source.run_id != run_id:
            continue
        machine, first, last = source.key.rsplit("/", 1)[-1].removesuffix(".jsonl").rsplit("-", 2)
        by_stream.setdefault((source.run_id, machine), []).append((int(first), int(last), source))
    streams: list[ShippedStream] = []
    for (run, machine), segments in sorted(by_stream.items()):
        data = bytearray()
        pieces: list[tuple[int, str]] = []
        starts: list[int] = []
        gaps: list[tuple[int, int]] = []
        lines = 0
        for start, end, source in sorted(segments, key=lambda item: (item[0], -item[1])):
            if end <= len(data):
                continue  # the same bytes shipped again (after a crash, or a stream replaced)
            if start > len(data):
                gaps.append((len(data), start))
            with location.open_source(source) as fh:
                chunk = fh.read()
            chunk = chunk[max(0, len(data) - start) :] if start < len(data) else chunk
            pieces.append((lines + 1, source.path))
            starts.append(len(data))
            lines += chunk.count(b"\n")
            data += chunk
        streams.append(ShippedStream(run, machine, bytes(data), tuple(pieces), tuple(gaps), tuple(starts)))
    return streams


def machine_id(runs_dir: str | os.PathLike[str]) -> str:
    """Return this runs directory's machine id, creating it on first use."""
    path = Path(runs_dir) / _MACHINE_ID
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    with contextlib.suppress(FileExistsError):  # the first writer wins; everyone reads its id
        create_file(path, uuid.uuid4().hex[:16].encode())
    return path.read_text().strip()


def sync_streams(location: Location) -> SyncResult:
    """Ship the complete lines each stream of the outbox gained since the last sync as new segments.

    Idempotent: a stream is marked synced only after its segment was uploaded, and a segment
    shipped again after a crash has the same name and bytes.

    Raises:
        ConfigError: ``location`` is not on object storage (no remote is configured).
    """
    if not isinstance(location, ObjectLocation) or location.outbox is None:
        raise ConfigError("no remote ledger: set SCALABLE_RUNS_DIR_REMOTE to an fsspec URI such as s3://bucket/ledger/")
    bus.flush_all()  # events this process queued are shipped too
    runs_dir = location.outbox
    try:
        mid = machine_id(runs_dir)
    except OSError as exc:
        raise os_error(exc, f"cannot write the machine id under {str(runs_dir)!r}", LedgerError) from None
    segments = 0
    shipped = 0
    for run_id, path, size in list_streams(runs_dir):
        state = path.parent / _SYNCED
        try:
            done = int(state.read_text())
        except (FileNotFoundError, ValueError):
            done = 0
        cut = complete_prefix(path, size)
        if done > cut:  # the stream was replaced (retired and written again): start over
            done = 0
        with open(path, "rb") as fh:
            while done < cut:
                end = min(cut, done + SEGMENT_BYTES)
                fh.seek(done)
                data = fh.read(end - done)
                if end < cut:  # cut segments at a line boundary
                    end = done + data.rfind(b"\n") + 1
                    data = data[: end - done]
                location.put_segment(run_id, f"{mid}-{done:016d}-{end:016d}.jsonl", data)
                try:
                    replace_file(state, str(end).encode())
                except OSError as exc:  # shipped, but not marked: the next sync ships the same segment again
                    raise os_error(exc, f"cannot record the synced offset in {str(state)!r}", LedgerError) from None
                segments += 1
                shipped += len(data)
                done = end
    for run_id, data in _compacted_runs(location):
        location.put_segment(run_id, f"{mid}.compacted-{0:016d}-{len(data):016d}.jsonl", data)
        done_runs = sorted(shipped_compacted_runs(runs_dir) | {run_id})
        try:
            replace_file(runs_dir / SHIPPED_COMPACTED, ("\n".join(done_runs) + "\n").encode())
        except OSError as exc:
            raise os_error(exc, f"cannot record the shipped runs in {str(runs_dir)!r}", LedgerError) from None
        segments += 1
        shipped += len(data)
    if segments:
        _log.info("ledger.synced", remote=location.uri, segments=segments, bytes=shipped)
    return SyncResult(segments, shipped)


def _compacted_runs(location: ObjectLocation) -> Iterator[tuple[str, bytes]]:
    """Each run compacted locally only (its stream retired), as the lines of its events.

    Lines re-encode byte for byte from their rows, so the shipped segment verifies as the
    stream did; they go in time order, each writer's in ``seq`` order.
    """
    files, runs = location.unshipped_compacted()
    if not runs:
        return
    con = sql_connect(threads=1)
    try:
        for run_id in runs:
            result = con.execute(
                f"SELECT * FROM ({parquet_select(files)}) p WHERE run_id = $1 ORDER BY timestamp, writer, seq", [run_id]
            )
            columns = [d[0] for d in result.description or []]
            rows = result.fetchall()
            yield run_id, b"".join(encode_line(dict(zip(columns, row, strict=True))) for row in rows)
    finally:
        con.close()
