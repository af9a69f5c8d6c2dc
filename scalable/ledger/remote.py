"""The ledger on object storage (``SCALABLE_RUNS_DIR_REMOTE``): segments, remote compaction, reads.

Each machine keeps writing its streams locally (fast, durable) and :func:`sync` ships what is
new as immutable segments::

    <remote>/segments/<run_id>/<machine>-<start>-<end>.jsonl   bytes [start, end) of a stream
    <remote>/ledger/events/date=YYYY-MM-DD/part-<uuid>.parquet compacted data
    <remote>/ledger/_manifest/<generation>.json                 live files + covered segments

``<machine>`` is a random id kept in ``<runs_dir>/.machine-id``; a segment's name says which
bytes it holds, so a segment shipped twice after a crash is the same object, and object names
never collide between machines. The synced offset of each stream is kept beside it in
``.synced`` and written only after the upload returned.

:func:`compact_remote` may run on any machine, and on several at once, without a lock server:
it compacts the segments no manifest covers into new uniquely named Parquet files, then
commits the next manifest with a put-if-absent write (``mode="create"``: S3 conditional
writes, GCS ``ifGenerationMatch=0``, local ``O_EXCL``). The loser of a race gets
``FileExistsError``, deletes its files and starts again from the winner's manifest. Where the
store ignores the condition (some emulators), the later commit silently replaces the earlier
one: the files of the replaced generation become unreferenced, and the segments it covered
are uncovered again, so the views still read them (as tails) and the next compaction takes
them in. Nothing is lost or doubled either way, only work is repeated.

Views on any machine read the remote manifest's files, the uncovered remote segments and the
local streams together, deduplicated on ``event_id``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from scalable.errors import CompactionConflictError, ConfigError, LedgerError
from scalable.ledger.compact import (
    EVENTS_DIR,
    MANIFEST_DIR,
    CompactionResult,
    DataFile,
    Manifest,
    StreamState,
    _complete_prefix,
    _list_streams,
    _sql_list,
    _sql_str,
    jsonl_select,
    parquet_select,
)
from scalable.ledger.events import duckdb_columns, now
from scalable.ledger.log import flush_all
from scalable.logs import get_logger

if TYPE_CHECKING:
    import duckdb
    from fsspec import AbstractFileSystem

    from scalable.ledger.log import Ledger

__all__ = [
    "RemoteLedger",
    "SyncResult",
    "compact_remote",
    "machine_id",
    "open_remote",
    "read_remote_manifest",
    "remote_sources",
    "sync",
]

SEGMENTS_DIR: Final = "segments"
LEDGER_DIR: Final = "ledger"
SEGMENT_BYTES: Final = 64 * 1024 * 1024
_SYNCED: Final = ".synced"
_ATTEMPTS: Final = 8
_log = get_logger("scalable.ledger")


@dataclass(frozen=True)
class RemoteLedger:
    """An fsspec filesystem and the root path (without protocol) of a remote ledger."""

    fs: AbstractFileSystem
    root: str
    uri: str

    def path(self, *parts: str) -> str:
        """Return the filesystem path of ``parts`` under the root."""
        return "/".join([self.root.rstrip("/"), *parts])

    def prepare(self, path: str) -> str:
        """Return ``path`` after creating its parent where the filesystem needs it (local)."""
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else tuple(self.fs.protocol)
        if "file" in protocols or "local" in protocols:
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        return path

    def url(self, path: str) -> str:
        """Return ``path`` with its protocol, as DuckDB reads it through the registered fs."""
        return str(self.fs.unstrip_protocol(path))


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What one :func:`sync` shipped: segments and bytes."""

    segments: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a plain mapping (for rendering)."""
        return {"segments": self.segments, "bytes": self.bytes}


def open_remote(uri: str, storage_options: dict[str, Any] | None = None) -> RemoteLedger:
    """Return the remote ledger at ``uri`` (an fsspec URI such as ``s3://bucket/ledger/``).

    Raises:
        ConfigError: no fsspec backend handles the URI's protocol (or it is not installed).
    """
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    except (ValueError, ImportError) as exc:
        raise ConfigError(
            f"SCALABLE_RUNS_DIR_REMOTE {uri!r} cannot be opened ({exc}); use an fsspec URI such as "
            "s3://bucket/ledger/ and install the backend: pip install 'scalable[cloud]'"
        ) from None
    return RemoteLedger(fs, str(root).rstrip("/"), uri)


def machine_id(runs_dir: str | os.PathLike[str]) -> str:
    """Return this runs directory's machine id, creating it on first use."""
    path = Path(runs_dir) / ".machine-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".machine-id.{uuid.uuid4().hex}")
    tmp.write_text(uuid.uuid4().hex[:16])
    try:
        os.link(tmp, path)  # first writer wins; everyone then reads the same id
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def sync(ledger: Ledger, remote: RemoteLedger) -> SyncResult:
    """Ship the complete lines each local stream gained since the last sync as new segments.

    Idempotent: a stream is marked synced only after its segment was uploaded, and a segment
    shipped again after a crash has the same name and bytes.
    """
    flush_all()  # events this process queued are shipped too
    runs_dir = Path(ledger.runs_dir)
    mid = machine_id(runs_dir)
    segments = 0
    shipped = 0
    for run_id, path, size in _list_streams(runs_dir):
        state = path.parent / _SYNCED
        try:
            done = int(state.read_text())
        except (FileNotFoundError, ValueError):
            done = 0
        cut = _complete_prefix(path, size)
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
                remote.fs.pipe_file(remote.prepare(remote.path(SEGMENTS_DIR, run_id, f"{mid}-{done:016d}-{end:016d}.jsonl")), data)
                tmp = state.with_name(f"{_SYNCED}.{uuid.uuid4().hex}")
                tmp.write_text(str(end))
                os.replace(tmp, state)
                segments += 1
                shipped += len(data)
                done = end
    if segments:
        _log.info("ledger.synced", remote=remote.uri, segments=segments, bytes=shipped)
    return SyncResult(segments, shipped)


def read_remote_manifest(remote: RemoteLedger) -> Manifest:
    """Return the newest manifest of the remote ledger (an empty one if none).

    Raises:
        LedgerError: the newest manifest is not valid.
    """
    directory = remote.path(LEDGER_DIR, MANIFEST_DIR)
    try:
        names = sorted(
            p.rsplit("/", 1)[-1] for p in remote.fs.ls(directory, detail=False)
            if p.endswith(".json") and p.rsplit("/", 1)[-1][:-5].isdigit()
        )
    except FileNotFoundError:
        return Manifest()
    if not names:
        return Manifest()
    path = f"{directory}/{names[-1]}"
    return Manifest.from_json(remote.fs.cat_file(path), remote.url(path))


def _segments(remote: RemoteLedger) -> dict[str, int]:
    """Every segment under the remote: path relative to the root -> size."""
    base = remote.path(SEGMENTS_DIR)
    try:
        found = remote.fs.find(base, detail=True)
    except FileNotFoundError:
        return {}
    prefix = remote.root.rstrip("/") + "/"
    return {p.removeprefix(prefix): int(info.get("size") or 0) for p, info in found.items() if p.endswith(".jsonl")}


def _connect(remote: RemoteLedger, tmp: Path) -> duckdb.DuckDBPyConnection:
    import duckdb

    con = duckdb.connect(":memory:", config={"threads": os.cpu_count() or 1})
    con.register_filesystem(remote.fs)
    con.execute("SET memory_limit='512MB'")
    con.execute(f"SET temp_directory={_sql_str(str(tmp / 'spill'))}")
    con.execute("SET enable_progress_bar=false")
    return con


def compact_remote(remote: RemoteLedger) -> CompactionResult:
    """Compact the remote segments no manifest covers and commit the next manifest.

    Safe to run on several machines at once: a lost commit race is retried from the
    winner's manifest.

    Raises:
        CompactionConflictError: the commit lost the race more than a few times in a row.
        LedgerError: the newest remote manifest is not valid.
    """
    for attempt in range(1, _ATTEMPTS + 1):
        base = read_remote_manifest(remote)
        segments = _segments(remote)
        pending = sorted(s for s in segments if s not in base.streams)
        if not pending:
            return _result(base, 0, 0, 0)
        tmp = Path(tempfile.mkdtemp(prefix="scalable-compact-"))
        con = _connect(remote, tmp)
        uploaded: list[str] = []
        try:
            made, rows = _write_remote(con, remote, base, pending, tmp, uploaded)
            streams = dict(base.streams)
            streams.update({s: StreamState(segments[s]) for s in pending})
            manifest = Manifest(version=base.version + 1, files=tuple(sorted([*base.files, *made], key=lambda f: (f.date, f.path))),
                                streams=streams, retired_before=base.retired_before, created=now())
            name = remote.path(LEDGER_DIR, MANIFEST_DIR, f"{manifest.version:020d}.json")
            try:
                remote.fs.pipe_file(remote.prepare(name), manifest.to_json(), mode="create")
            except FileExistsError:
                _log.info("ledger.remote_commit_conflict", manifest=remote.url(name), attempt=attempt)
                for path in uploaded:
                    remote.fs.rm_file(path)
                continue
            _log.info("ledger.remote_compacted", version=manifest.version, events=rows, segments=len(pending))
            return _result(manifest, rows, len(made), len(pending))
        finally:
            con.close()
            shutil.rmtree(tmp, ignore_errors=True)
    raise CompactionConflictError(
        f"remote ledger {remote.uri!r}: {_ATTEMPTS} compactions in a row lost the manifest commit to others; run compact again"
    )


def _result(manifest: Manifest, rows: int, files: int, segments: int) -> CompactionResult:
    return CompactionResult(
        version=manifest.version, events_written=rows, files_written=files, files_merged=0,
        streams_compacted=segments, streams_retired=(), events_retired=0, tombstones=0,
        events_total=manifest.rows, files_total=len(manifest.files),
    )


def _write_remote(
    con: duckdb.DuckDBPyConnection, remote: RemoteLedger, base: Manifest, pending: list[str], tmp: Path, uploaded: list[str]
) -> tuple[list[DataFile], int]:
    """Write the pending segments as deduplicated, sorted Parquet files and upload them."""
    import pyarrow.parquet as pq

    sources = [remote.url(remote.path(s)) for s in pending]
    runs = sorted({s.split("/")[1] for s in pending})
    anti = ""
    if base.files:
        live = [remote.url(remote.path(LEDGER_DIR, f.path)) for f in base.files]
        anti = (f" WHERE event_id NOT IN (SELECT event_id FROM read_parquet({_sql_list(live)}) "
                f"WHERE run_id IN ({', '.join(_sql_str(r) for r in runs)}))")
    cols = ", ".join(duckdb_columns())
    query = (f"SELECT {cols}, substr(timestamp, 1, 10) AS date FROM "
             f"(SELECT DISTINCT ON (event_id) * FROM ({jsonl_select(sources, retired_before=base.retired_before)}) src{anti}) "
             "ORDER BY run_id, timestamp, event_id")
    staging = tmp / "staging"
    row = con.execute(
        f"COPY ({query}) TO {_sql_str(str(staging))} (FORMAT parquet, COMPRESSION zstd, "
        "PARTITION_BY (date), FILENAME_PATTERN 'part-{uuid}', ROW_GROUP_SIZE 65536)"
    ).fetchone()
    rows = int(row[0]) if row else 0
    made: list[DataFile] = []
    found = 0
    for file in sorted(staging.glob("date=*/*.parquet")) if staging.is_dir() else []:
        date = file.parent.name.removeprefix("date=")
        count = pq.read_metadata(file).num_rows
        found += count
        rel = f"{EVENTS_DIR}/date={date}/part-{uuid.uuid4().hex}.parquet"
        target = remote.path(LEDGER_DIR, rel)
        remote.fs.put_file(str(file), remote.prepare(target))
        uploaded.append(target)
        made.append(DataFile(rel, count, file.stat().st_size, date))
    if found != rows:
        raise LedgerError(f"remote compaction wrote {rows} events but staged {found}; nothing was committed, run compact again")
    return made, rows


def remote_sources(remote: RemoteLedger, local_streams: list[str]) -> tuple[str | None, str | None, str]:
    """SQL of every event once: the remote Parquet, and the uncovered segments plus local streams.

    Returns:
        ``(parquet_sql, tails_sql, prefix)``: the SELECT of the live remote files and the
        SELECT of the tail events Parquet lacks (either may be ``None``), and the remote prefix
        the connection must be allowed to read.
    """
    manifest = read_remote_manifest(remote)
    files = [remote.url(remote.path(LEDGER_DIR, f.path)) for f in manifest.files]
    segments = [remote.url(remote.path(s)) for s in sorted(_segments(remote)) if s not in manifest.streams]
    tails = [*local_streams, *segments]
    parquet = parquet_select(files) if files else None
    tail = None
    if tails:
        tail = f"SELECT DISTINCT ON (event_id) * FROM ({jsonl_select(tails, retired_before=manifest.retired_before)}) j"
        if parquet:
            tail = f"SELECT * FROM ({tail}) t WHERE event_id NOT IN (SELECT event_id FROM ({parquet}) p)"
    return parquet, tail, remote.url(remote.root).rstrip("/") + "/"
