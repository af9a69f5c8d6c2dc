"""Compaction of the per-run JSON-lines streams into a Parquet dataset with a manifest.

Layout under the ledger directory::

    events/date=YYYY-MM-DD/part-<uuid>.parquet   data files (zstd, sorted by run_id, timestamp)
    lineage/edges-by-dst-<uuid>.parquet          lineage edges of the data files, sorted by dst
    lineage/edges-by-src-<uuid>.parquet          the same edges sorted by src
    lineage/nodes-<uuid>.parquet                 node ids, texts and descriptions, sorted by id
    _manifest/00000000000000000007.json          one snapshot per compaction generation

A manifest names every live data file and, per run, how many bytes of its stream are covered
by those files (``offset``), whether the run has finished, whether its stream was retired, and
the retention cutoff (``retired_before``), and the lineage files computed from exactly those
data files. The views and the next compaction read only the
files named by the newest manifest, so a file left behind by a killed compaction is invisible.

How the invariants hold:

* **Safe to kill at any instant.** Data files are written under a staging directory, fsynced,
  renamed to unique names, and only then is the manifest committed: a new numbered file
  created with ``os.link`` (which fails if the name exists), the single atomic step. Before it
  nothing is visible; after it everything is. A rerun starts again from the newest manifest.
* **Exactly once.** Every new row is checked against the Parquet rows of its run already
  committed (an anti-join on ``event_id``) and deduplicated within its batch, so the live
  files never hold an event twice. The views read a stream only while it holds bytes beyond
  its covered offset, and then drop the events that Parquet already has.
* **Nothing deleted before its copy is durable and verified.** With ``keep_jsonl=False`` a
  stream is deleted only when its run has finished, its whole stream is covered by a committed
  manifest, and a re-read of Parquet finds every event id of the stream. Live streams are
  never rewritten or truncated. A writer that still holds a finished run's stream open when
  it is retired writes into a deleted file, so retire only runs nobody writes to any more.
* **Retention leaves tombstones.** ``retire_before`` removes events older than the cutoff
  from the dataset, and first appends one ``run/retired`` event per affected run with the
  count, time range and per-writer chain positions of what is removed, so audits can account
  for it.
* **Lineage edges follow the data files.** A full compaction computes the edges of all live
  data files (URI inputs resolved against every artifact version in the dataset) and writes
  them, sorted by ``dst`` and by ``src`` in small row groups, so a lookup reads
  only the row groups that can hold its nodes. They are staged, made durable and renamed like
  data files and named by the same manifest, with the data files they cover. A compaction of some runs keeps
  them while every covered file is live (the views compute the edges of the other files on the
  fly) and drops them when one was merged or rewritten (the views then compute every edge from
  the events) until the next full compaction. A URI
  input whose version was put by a run that is not compacted yet resolves to the version
  Parquet knows; the next compaction, which covers that run, recomputes it.
* **Bounded memory.** Streams are compacted in batches of about :data:`BATCH_BYTES` of JSON,
  DuckDB runs under a memory limit and spills to a temporary directory.

Test hook: when ``SCALABLE_TEST_CRASH_AT`` names one of :data:`CRASH_POINTS`, the process
SIGKILLs itself there, so tests can prove the claims above.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from scalable.errors import CompactionConflictError, LedgerError
from scalable.ledger.events import (
    COLUMNS,
    SCHEMA_VERSION,
    decode_line,
    duckdb_columns,
    encode_line,
    normalize_timestamp,
    now,
)
from scalable.ledger.log import STREAM_NAME, flush_all
from scalable.logs import get_logger

if TYPE_CHECKING:
    import duckdb

    from scalable.ledger.log import Ledger

__all__ = [
    "BATCH_BYTES",
    "CRASH_POINTS",
    "CompactionResult",
    "DataFile",
    "LineageFiles",
    "Manifest",
    "StreamState",
    "compact",
    "jsonl_select",
    "parquet_select",
    "read_manifest",
    "uncompacted_streams",
]

EVENTS_DIR: Final = "events"
LINEAGE_DIR: Final = "lineage"
#: Rows per row group of the lineage files: small, so min/max statistics prune lookups.
LINEAGE_ROW_GROUP: Final = 8192
#: Events whose lineage edges are computed in one go (bounds the memory of a compaction).
LINEAGE_BATCH_EVENTS: Final = 1_000_000
MANIFEST_DIR: Final = "_manifest"
TMP_DIR: Final = "_tmp"
#: Bytes of JSON lines compacted per batch (bounds memory and file size).
BATCH_BYTES: Final = 128 * 1024 * 1024
#: Files smaller than this are merged into larger ones on later compactions.
SMALL_FILE_BYTES: Final = 32 * 1024 * 1024
#: A date partition with at least this many small files gets them merged.
MERGE_MIN_FILES: Final = 4
CRASH_POINTS: Final = (
    "during_parquet_write",
    "after_parquet_write",
    "before_manifest_commit",
    "after_manifest_commit",
    "during_retirement",
    "after_tombstones",
)
_CRASH_ENV: Final = "SCALABLE_TEST_CRASH_AT"
_MEMORY_MB: Final = 384
_REQUIRED: Final = [c.name for c in COLUMNS if not c.nullable and c.name != "schema_version"]
_log = get_logger("scalable.ledger")


# --- the manifest -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataFile:
    """One live Parquet file: path relative to the ledger directory, rows, bytes, date."""

    path: str
    rows: int
    bytes: int
    date: str


@dataclass(frozen=True, slots=True)
class LineageFiles:
    """The lineage files of a generation, relative to the ledger directory: edge count, data files covered."""

    by_dst: str
    by_src: str
    nodes: str
    edges: int
    covers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamState:
    """How much of a run's stream is compacted: covered byte offset, finished, retired."""

    offset: int
    finished: bool = False
    retired: bool = False


@dataclass(frozen=True)
class Manifest:
    """One compaction generation: the live data files and the coverage of every stream."""

    version: int = 0
    files: tuple[DataFile, ...] = ()
    streams: dict[str, StreamState] = field(default_factory=dict)
    retired_before: str | None = None
    created: str | None = None
    lineage: LineageFiles | None = None

    def to_json(self) -> bytes:
        """Encode the manifest as the JSON document stored under ``_manifest/``."""
        doc = {
            "format": "scalable-ledger-manifest",
            "format_version": 1,
            "version": self.version,
            "created": self.created,
            "retired_before": self.retired_before,
            "files": [{"path": f.path, "rows": f.rows, "bytes": f.bytes, "date": f.date} for f in self.files],
            "lineage": None if self.lineage is None else {
                "by_dst": self.lineage.by_dst, "by_src": self.lineage.by_src, "nodes": self.lineage.nodes,
                "edges": self.lineage.edges, "covers": list(self.lineage.covers),
            },
            "streams": {
                run: {"offset": s.offset, "finished": s.finished, "retired": s.retired}
                for run, s in sorted(self.streams.items())
            },
        }
        return json.dumps(doc, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, name: str) -> Manifest:
        """Decode a manifest document.

        Raises:
            LedgerError: the document is not a ledger manifest.
        """
        try:
            doc = json.loads(data)
            lin = doc.get("lineage")
            return cls(
                version=int(doc["version"]),
                created=doc.get("created"),
                retired_before=doc.get("retired_before"),
                files=tuple(DataFile(f["path"], int(f["rows"]), int(f["bytes"]), f["date"]) for f in doc["files"]),
                streams={
                    run: StreamState(int(s["offset"]), bool(s.get("finished")), bool(s.get("retired")))
                    for run, s in doc["streams"].items()
                },
                lineage=None if not lin else LineageFiles(
                    lin["by_dst"], lin["by_src"], lin["nodes"], int(lin["edges"]), tuple(lin.get("covers", ()))
                ),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise LedgerError(
                f"ledger manifest {name!r} is not valid ({exc}); restore it from a backup or remove the "
                "ledger directory and compact again from the streams"
            ) from None

    @property
    def rows(self) -> int:
        """Number of events in the live data files."""
        return sum(f.rows for f in self.files)


def _manifest_name(version: int) -> str:
    return f"{version:020d}.json"


def read_manifest(ledger_dir: str | os.PathLike[str]) -> Manifest:
    """Return the newest committed manifest under ``ledger_dir`` (an empty one if none).

    Raises:
        LedgerError: the newest manifest file is not valid.
    """
    directory = Path(ledger_dir) / MANIFEST_DIR
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json") and n[:-5].isdigit())
    except FileNotFoundError:
        return Manifest()
    if not names:
        return Manifest()
    path = directory / names[-1]
    return Manifest.from_json(path.read_bytes(), str(path))


def _commit_manifest(ledger_dir: Path, manifest: Manifest) -> None:
    """Create ``_manifest/<version>.json`` if, and only if, it does not exist yet."""
    directory = ledger_dir / MANIFEST_DIR
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / _manifest_name(manifest.version)
    tmp = directory / f".{final.name}.{uuid.uuid4().hex}.tmp"
    _write_durable(tmp, manifest.to_json())
    try:
        os.link(tmp, final)  # fails if another compaction committed this version first
    except FileExistsError:
        raise CompactionConflictError(
            f"ledger manifest {str(final)!r} was committed by another compaction; run compact again"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(directory)


# --- SQL shared with the views ---------------------------------------------------------------


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_sql_str(v) for v in values) + "]"


def jsonl_select(files: Sequence[str], *, retired_before: str | None = None) -> str:
    """SQL selecting the good lines of the given JSON-lines files, typed by the schema.

    A malformed or torn line becomes a row of NULLs, which the required columns filter out, so
    a bad line never fails a query. Events older than the retention cutoff are left out (they
    were retired from the dataset), except the tombstones themselves.
    """
    columns = "{" + ", ".join(f"{_sql_str(n)}: {_sql_str(t)}" for n, t in duckdb_columns().items()) + "}"
    names = ", ".join(
        "coalesce(schema_version, 1) AS schema_version" if n == "schema_version" else n for n in duckdb_columns()
    )
    where = " AND ".join(f"{c} IS NOT NULL" for c in _REQUIRED)
    if retired_before:
        where += f" AND timestamp >= {_sql_str(retired_before)}"
    return (
        f"SELECT {names} FROM read_json({_sql_list(files)}, format='newline_delimited', columns={columns}, "
        f"ignore_errors=true, maximum_object_size=16777216) WHERE {where}"
    )


def parquet_select(files: Sequence[str]) -> str:
    """SQL selecting every event of the given Parquet files, in schema column order."""
    names = ", ".join(duckdb_columns())
    return f"SELECT {names} FROM read_parquet({_sql_list(files)}, hive_partitioning=false)"


def uncompacted_streams(
    runs_dir: str | os.PathLike[str], manifest: Manifest
) -> tuple[list[str], list[str]]:
    """Return the stream files the views must read, and the runs whose Parquet rows overlap.

    A stream whose every byte is covered by the manifest is left out. The second list names
    the runs of included streams that have rows in Parquet already (their events must be
    deduplicated against it).
    """
    files: list[str] = []
    overlap: list[str] = []
    for run_id, path, size in _list_streams(Path(runs_dir)):
        state = manifest.streams.get(run_id)
        if state is not None and not state.retired and size == state.offset:
            continue
        if size == 0:
            continue
        files.append(str(path))
        if state is not None:
            overlap.append(run_id)
    return files, overlap


def _list_streams(runs_dir: Path) -> Iterator[tuple[str, Path, int]]:
    """Yield ``(run_id, stream path, size)`` of every stream, by run id."""
    try:
        names = sorted(os.listdir(runs_dir))
    except FileNotFoundError:
        return
    base = str(runs_dir)
    for name in names:
        path = os.path.join(base, name, STREAM_NAME)
        try:
            size = os.stat(path).st_size
        except (FileNotFoundError, NotADirectoryError):
            continue
        yield name, Path(path), size


# --- compaction ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What one compaction did."""

    version: int
    events_written: int
    files_written: int
    files_merged: int
    streams_compacted: int
    streams_retired: tuple[str, ...]
    events_retired: int
    tombstones: int
    events_total: int
    files_total: int

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a plain mapping (for rendering)."""
        return {
            "version": self.version,
            "events_written": self.events_written,
            "files_written": self.files_written,
            "files_merged": self.files_merged,
            "streams_compacted": self.streams_compacted,
            "streams_retired": len(self.streams_retired),
            "events_retired": self.events_retired,
            "tombstones": self.tombstones,
            "events_total": self.events_total,
            "files_total": self.files_total,
        }


@dataclass(frozen=True, slots=True)
class _Pending:
    run_id: str
    path: Path
    cut: int  # bytes up to the last complete line when planned


def compact(
    ledger: Ledger,
    run_ids: Iterable[str] | None = None,
    *,
    keep_jsonl: bool = True,
    retire_before: str | None = None,
    progress: bool = False,
) -> CompactionResult:
    """Compact the ledger's streams into its Parquet dataset and commit a new manifest.

    Idempotent, and safe to kill at any instant: a rerun leaves the views exactly as an
    uninterrupted run would.

    Args:
        ledger: the ledger whose ``runs_dir`` streams go into ``ledger_dir/events/``.
        run_ids: only these runs (cheap compaction of one run at session close); all when
            omitted.
        keep_jsonl: keep the streams after compaction (default); ``False`` deletes the
            streams of finished runs once their copy is durable and verified.
        retire_before: ISO-8601 date or time; events older than it are removed from the
            dataset, each affected run getting a ``run/retired`` tombstone event first.
        progress: draw a progress bar on stderr.

    Returns:
        What was written, merged, retired and tombstoned.

    Raises:
        CompactionConflictError: another compaction committed at the same time; run again.
        EventValidationError: ``retire_before`` is not an ISO-8601 time.
        LedgerError: the newest manifest is not valid.
    """
    cutoff = normalize_timestamp(retire_before) if retire_before else None
    flush_all()  # events this process queued are part of what is compacted
    ledger_dir = Path(ledger.ledger_dir)
    (ledger_dir / MANIFEST_DIR).mkdir(parents=True, exist_ok=True)
    with _lock(ledger_dir / MANIFEST_DIR / ".lock"):
        return _compact_locked(ledger, ledger_dir, run_ids, keep_jsonl, cutoff, progress)


def _compact_locked(
    ledger: Ledger,
    ledger_dir: Path,
    run_ids: Iterable[str] | None,
    keep_jsonl: bool,
    cutoff: str | None,
    progress: bool,
) -> CompactionResult:
    base = read_manifest(ledger_dir)
    wanted = set(run_ids) if run_ids is not None else None
    pending, streams = _plan(Path(ledger.runs_dir), base, wanted)
    # Batches honour the cutoff already committed; a new cutoff is applied by _retire_events,
    # which tombstones what it removes.
    retired_before = max(filter(None, (base.retired_before, cutoff)), default=None)
    tmp_root = ledger_dir / TMP_DIR
    con = _connect(tmp_root)
    try:
        files = list(base.files)
        batches = list(_batches(pending))
        with _progress(progress, len(batches), "compacting") as advance:
            new_files, written = _compact_batches(ledger_dir, batches, base, advance)
        finished = _finished_runs(con, ledger_dir, new_files)
        for item in pending:
            old = streams.get(item.run_id, StreamState(0))
            streams[item.run_id] = StreamState(item.cut, old.finished or item.run_id in finished, False)
        files.extend(new_files)
        files, merged = _merge_small_files(con, ledger_dir, files)
        tombstones = 0
        events_retired = 0
        if cutoff is not None:
            tombstones, events_retired, files = _retire_events(con, ledger, ledger_dir, files, cutoff)
        live = tuple(sorted(files, key=lambda f: (f.date, f.path)))
        lineage = _next_lineage(con, ledger_dir, base.lineage, live, full=wanted is None)
        manifest = Manifest(
            version=base.version + 1,
            files=live,
            streams=streams,
            retired_before=retired_before,
            created=now(),
            lineage=lineage if live else None,
        )
        if (manifest.files == base.files and manifest.streams == base.streams
                and manifest.retired_before == base.retired_before and manifest.lineage == base.lineage):
            manifest = base  # nothing changed: no new generation
        else:
            _crash_point("before_manifest_commit")
            _commit_manifest(ledger_dir, manifest)
            _crash_point("after_manifest_commit")
            _log.info("ledger.compacted", version=manifest.version, events=written, files=len(new_files))
        retired: tuple[str, ...] = ()
        if not keep_jsonl:
            retired = _retire_streams(con, ledger_dir, Path(ledger.runs_dir), manifest, wanted)
        _remove_orphans(ledger_dir, manifest, base)
    finally:
        con.close()
        shutil.rmtree(tmp_root, ignore_errors=True)
    return CompactionResult(
        version=manifest.version,
        events_written=written,
        files_written=len(new_files),
        files_merged=merged,
        streams_compacted=len(pending),
        streams_retired=retired,
        events_retired=events_retired,
        tombstones=tombstones,
        events_total=manifest.rows,
        files_total=len(manifest.files),
    )


def _plan(runs_dir: Path, base: Manifest, wanted: set[str] | None) -> tuple[list[_Pending], dict[str, StreamState]]:
    """Find the streams with bytes beyond their covered offset; carry over the rest."""
    streams = dict(base.streams)
    present: set[str] = set()
    pending: list[_Pending] = []
    for run_id, path, size in _list_streams(runs_dir):
        present.add(run_id)
        if wanted is not None and run_id not in wanted:
            continue
        state = streams.get(run_id)
        cut = _complete_prefix(path, size)
        covered = state.offset if state is not None and not state.retired and size >= state.offset else 0
        if cut > covered or (state is not None and state.retired and cut > 0):
            pending.append(_Pending(run_id, path, cut))
    for run_id, state in base.streams.items():
        if run_id not in present and not state.retired:
            streams[run_id] = replace(state, retired=True)
    return pending, streams


def _complete_prefix(path: Path, size: int) -> int:
    """Bytes of ``path`` up to and including its last newline (``size`` when it ends in one)."""
    if size == 0:
        return 0
    with open(path, "rb") as fh:
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            fh.seek(start)
            chunk = fh.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                return start + idx + 1
            pos = start
    return 0


def _batches(pending: Sequence[_Pending]) -> list[list[_Pending]]:
    """Group streams in run-id order into equal batches, a multiple of the core count.

    Each batch holds at most about :data:`BATCH_BYTES` unless one stream alone is larger.
    """
    items = sorted(pending, key=lambda p: p.run_id)
    total = sum(p.cut for p in items)
    if not items:
        return []
    cores = os.cpu_count() or 1
    count = cores * max(1, -(-total // (BATCH_BYTES * cores)))
    batches: list[list[_Pending]] = [[] for _ in range(count)]
    start = 0
    for item in items:
        batches[min(count - 1, start * count // max(1, total))].append(item)
        start += item.cut
    return [b for b in batches if b]


def _connect(tmp_root: Path, *, threads: int | None = None, memory_mb: int | None = None) -> duckdb.DuckDBPyConnection:
    import duckdb

    tmp_root.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(":memory:", config={"threads": threads or os.cpu_count() or 1})
    con.execute(f"SET memory_limit='{memory_mb or _MEMORY_MB}MB'")
    con.execute(f"SET temp_directory={_sql_str(str(tmp_root / 'spill'))}")
    con.execute("SET preserve_insertion_order=true")
    con.execute("SET enable_progress_bar=false")
    return con


def _normalized_source(item: _Pending, tmp_root: Path) -> str:
    """Re-encode a stream holding lines of another schema version into a temporary file.

    Each line is decoded with :func:`decode_line`, which folds columns this version does not
    know into ``attrs``, so nothing a newer writer wrote is lost.
    """
    out = tmp_root / f"normalized-{uuid.uuid4().hex}.jsonl"
    with open(item.path, "rb") as src, open(out, "wb") as dst:
        remaining = item.cut
        for raw in src:
            remaining -= len(raw)
            if remaining < 0 or not raw.endswith(b"\n"):
                break
            try:
                dst.write(encode_line(decode_line(raw)))
            except (ValueError, UnicodeDecodeError):
                continue  # malformed lines are reported by readers and audit, not compacted
    return str(out)


def _compact_batches(
    ledger_dir: Path, batches: Sequence[Sequence[_Pending]], base: Manifest, advance: Callable[[int], None]
) -> tuple[list[DataFile], int]:
    """Compact batches on one single-threaded DuckDB connection per core, in parallel."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    if not batches:
        return [], 0
    tmp_root = ledger_dir / TMP_DIR
    workers = max(1, min(os.cpu_count() or 1, len(batches)))
    pool: queue.Queue[duckdb.DuckDBPyConnection] = queue.Queue()
    for _ in range(workers):
        pool.put(_connect(tmp_root, threads=1, memory_mb=_MEMORY_MB // workers))

    def run(batch: Sequence[_Pending]) -> tuple[list[DataFile], int]:
        con = pool.get()
        try:
            return _compact_batch(con, ledger_dir, batch, base, base.retired_before)
        finally:
            pool.put(con)

    made: list[DataFile] = []
    rows = 0
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="scalable-compact") as executor:
            for files, count in executor.map(run, batches):
                made.extend(files)
                rows += count
                advance(1)
    finally:
        while not pool.empty():
            pool.get().close()
    return made, rows


def _compact_batch(
    con: duckdb.DuckDBPyConnection, ledger_dir: Path, batch: Sequence[_Pending], base: Manifest, retired_before: str | None
) -> tuple[list[DataFile], int]:
    """Write one batch of streams as sorted, deduplicated Parquet files (not yet committed).

    The fast path copies the streams in file order on one thread, which keeps each run's
    lines in the order they were appended (timestamps are taken under the stream's lock, so
    that is time order) and the runs in id order, so no sort is needed. The staged files are
    then checked: sorted by (run_id, timestamp), no event id twice, every line of this schema
    version. Only a batch that fails the check is written again the careful way (streams of
    other versions re-encoded, rows deduplicated and sorted).
    """
    tmp_root = ledger_dir / TMP_DIR
    overlap = [p.run_id for p in batch if p.run_id in base.streams]
    anti = ""
    if overlap and base.files:
        live = [str(ledger_dir / f.path) for f in base.files]
        anti = (
            f" WHERE event_id NOT IN (SELECT event_id FROM read_parquet({_sql_list(live)}) "
            f"WHERE run_id IN ({', '.join(_sql_str(r) for r in overlap)}))"
        )
    sources = [str(p.path) for p in batch]
    staging, rows = _copy_batch(con, tmp_root, jsonl_select(sources, retired_before=retired_before), anti, careful=False)
    clean, foreign = _check_staged(staging)
    if not clean:
        shutil.rmtree(staging, ignore_errors=True)
        sources = [_normalized_source(p, tmp_root) if p.run_id in foreign else str(p.path) for p in batch]
        staging, rows = _copy_batch(con, tmp_root, jsonl_select(sources, retired_before=retired_before), anti, careful=True)
    return _publish_staged(ledger_dir, staging, rows), rows


def _check_staged(staging: Path) -> tuple[bool, set[str]]:
    """Whether staged files are sorted, free of duplicates and of this schema version.

    Returns:
        ``(clean, runs)``: ``runs`` names the runs with lines of another schema version.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ids: list[pa.ChunkedArray] = []
    foreign: set[str] = set()
    ordered = True
    for file in sorted(staging.glob("*/*.parquet")):
        table = pq.read_table(file, columns=["event_id", "run_id", "timestamp", "schema_version"])
        ids.append(table.column("event_id"))
        other = table.filter(pc.not_equal(table.column("schema_version"), SCHEMA_VERSION))
        foreign.update(other.column("run_id").unique().to_pylist())
        n = table.num_rows
        if n > 1 and ordered:
            run, ts = table.column("run_id"), table.column("timestamp")
            a_run, b_run = run.slice(0, n - 1), run.slice(1)
            same = pc.equal(a_run, b_run)
            bad = pc.or_(pc.greater(a_run, b_run), pc.and_(same, pc.greater(ts.slice(0, n - 1), ts.slice(1))))
            ordered = not pc.any(bad).as_py()
    total = sum(len(c) for c in ids)
    distinct = pc.count_distinct(pa.chunked_array([c for arr in ids for c in arr.chunks], pa.string())).as_py() if ids else 0
    del ids
    pa.default_memory_pool().release_unused()  # keep the peak RSS of long compactions flat
    return ordered and distinct == total and not foreign, foreign


def _copy_batch(
    con: duckdb.DuckDBPyConnection, tmp_root: Path, select: str, anti: str, *, careful: bool
) -> tuple[Path, int]:
    staging = tmp_root / f"staging-{uuid.uuid4().hex}"
    cols = ", ".join(duckdb_columns())
    if careful:
        query = (
            f"SELECT {cols}, substr(timestamp, 1, 10) AS date FROM "
            f"(SELECT DISTINCT ON (event_id) * FROM ({select}) src{anti}) ORDER BY run_id, timestamp, event_id"
        )
    else:
        query = f"SELECT {cols}, substr(timestamp, 1, 10) AS date FROM ({select}) src{anti}"
    _crash_point("during_parquet_write", staging)
    row = con.execute(
        f"COPY ({query}) TO {_sql_str(str(staging))} (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, "
        "PARTITION_BY (date), FILENAME_PATTERN 'part-{uuid}', ROW_GROUP_SIZE 65536)"
    ).fetchone()
    return staging, int(row[0]) if row else 0


def _publish_staged(ledger_dir: Path, staging: Path, expected_rows: int) -> list[DataFile]:
    """fsync staged files, check their row count, and rename them under ``events/``."""
    import pyarrow.parquet as pq

    staged: list[tuple[Path, str, int]] = []
    if staging.is_dir():
        for part in sorted(staging.iterdir()):
            date = part.name.removeprefix("date=")
            for file in sorted(part.glob("*.parquet")):
                _fsync_file(file)
                staged.append((file, date, pq.read_metadata(file).num_rows))
    found = sum(rows for _f, _d, rows in staged)
    if found != expected_rows:
        raise LedgerError(
            f"compaction wrote {expected_rows} events but the staged Parquet under {str(staging)!r} holds {found}; "
            "nothing was committed, run compact again"
        )
    _crash_point("after_parquet_write")
    made: list[DataFile] = []
    for file, date, rows in staged:
        rel = f"{EVENTS_DIR}/date={date}/part-{uuid.uuid4().hex}.parquet"
        target = ledger_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, target)
        _fsync_dir(target.parent)
        made.append(DataFile(rel, rows, target.stat().st_size, date))
    shutil.rmtree(staging, ignore_errors=True)
    return made


def _next_lineage(
    con: duckdb.DuckDBPyConnection, ledger_dir: Path, current: LineageFiles | None, live: Sequence[DataFile], *, full: bool
) -> LineageFiles | None:
    """The lineage files of the next generation.

    A full compaction computes them for every live file (unless they cover exactly those
    already). A compaction of some runs (a session closing) keeps the current ones while every
    file they cover is still live: the views compute the edges of the files they do not cover
    on the fly, as they do for streams. When a covered file was merged or rewritten they are
    dropped, and the views compute every edge from events until the next full compaction.
    """
    paths = {f.path for f in live}
    if not live:
        return None
    if full:
        if current is not None and set(current.covers) == paths:
            return current
        return _write_lineage(con, ledger_dir, live)
    if current is not None and set(current.covers) <= paths:
        return current
    return None


def _write_lineage(con: duckdb.DuckDBPyConnection, ledger_dir: Path, files: Sequence[DataFile]) -> LineageFiles | None:
    """Compute the lineage edges and node descriptions of ``files`` and publish them (not yet committed)."""
    from scalable.ledger.lineage import edges_sql, inputs_sql, nodes_sql, versions_sql

    staging = ledger_dir / TMP_DIR / f"lineage-{uuid.uuid4().hex}"
    staging.mkdir(parents=True, exist_ok=True)
    con.execute(f"CREATE OR REPLACE TEMP VIEW _compact_events AS {parquet_select([str(ledger_dir / f.path) for f in files])}")
    options = f"(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, ROW_GROUP_SIZE {LINEAGE_ROW_GROUP})"
    by_dst, by_src, nodes = staging / "by-dst.parquet", staging / "by-src.parquet", staging / "nodes.parquet"
    # Every node gets an integer id, so the walk compares integers, not 64-character digests.
    # Each step goes through a staged Parquet file rather than a table, so it spills instead
    # of holding the edges of the whole dataset in memory.
    con.execute("SET preserve_insertion_order=false")  # every file below is sorted explicitly
    plain = "(FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1)"
    # Edges are computed for contiguous ranges of run ids (files are sorted by run id, so each
    # range reads only its row groups), with the versions of only the locations its inputs
    # name: memory stays bounded however large the dataset.
    runs = [r[0] for r in con.execute("SELECT DISTINCT run_id FROM _compact_events ORDER BY run_id").fetchall()] or [""]
    parts = max(1, -(-sum(f.rows for f in files) // LINEAGE_BATCH_EVENTS))
    bounds: list[str | None] = [*sorted({runs[i * len(runs) // parts] for i in range(parts)}), None]
    bounds[0] = ""  # the first range starts below every run id
    raws: list[str] = []
    described_parts: list[str] = []
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        cond = f"run_id >= {_sql_str(lo or '')}" + (f" AND run_id < {_sql_str(hi)}" if hi is not None else "")
        con.execute(f"CREATE OR REPLACE TEMP VIEW _compact_part AS SELECT * FROM _compact_events WHERE {cond}")
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW _compact_versions AS SELECT * FROM ({versions_sql('_compact_events')}) v "
            "WHERE location IN (SELECT unnest(inputs) FROM _compact_part WHERE inputs IS NOT NULL)"
        )
        con.execute(f"CREATE OR REPLACE TEMP VIEW _compact_inputs AS {inputs_sql('_compact_part', '_compact_versions')}")
        part = staging / f"raw-{i}.parquet"
        con.execute(f"COPY ({edges_sql('_compact_part', '_compact_inputs')}) TO {_sql_str(str(part))} {plain}")
        raws.append(str(part))
        # Descriptions per range too; a node met in several ranges has a row from each, which
        # readers merge (smallest value, union of locations).
        part = staging / f"described-{i}.parquet"
        con.execute(f"COPY ({nodes_sql('_compact_part')}) TO {_sql_str(str(part))} {plain}")
        described_parts.append(str(part))
    raw_sql = f"read_parquet({_sql_list(raws)})"
    described_sql = f"read_parquet({_sql_list(described_parts)})"
    # A node's id is its 63-bit hash: computed where it is needed, with no join. A collision
    # (two nodes, one id) is checked for; should one ever occur, no lineage files are
    # written and the views compute every edge from the events.
    def node_id(col: str) -> str:
        return f"CASE WHEN {col} IS NULL THEN NULL ELSE (hash({col}) >> 1)::BIGINT END"

    con.execute(
        f"COPY (SELECT * FROM (SELECT {node_id('node')} AS id, node, NULL::VARCHAR AS source, NULL::VARCHAR AS name, "
        "NULL::VARCHAR[] AS locations, NULL::BIGINT AS size_bytes, NULL::VARCHAR AS kind FROM "
        f"(SELECT src AS node FROM {raw_sql} UNION SELECT dst FROM {raw_sql}) n WHERE node IS NOT NULL "
        f"UNION ALL SELECT {node_id('node')}, node, source, name, locations, size_bytes, kind FROM {described_sql}) "
        f"ORDER BY id) TO {_sql_str(str(nodes))} {options}"
    )
    clash = con.execute(
        f"SELECT count(*) FROM (SELECT id FROM read_parquet({_sql_str(str(nodes))}) GROUP BY id "
        "HAVING count(DISTINCT node) > 1)"
    ).fetchall()[0][0]
    if clash:
        _log.warning("ledger.lineage_not_compacted", reason="two lineage nodes share a hash id")
        con.execute("SET preserve_insertion_order=true")
        shutil.rmtree(staging, ignore_errors=True)
        return None
    row = con.execute(
        f"COPY (SELECT {node_id('src')} AS src_id, {node_id('dst')} AS dst_id, src, dst, relation, run_id, task_name, "
        f"timestamp FROM {raw_sql} ORDER BY dst_id, src_id, relation, run_id) TO {_sql_str(str(by_dst))} {options}"
    ).fetchone()
    edges = int(row[0]) if row else 0
    row = con.execute(
        f"COPY (SELECT * FROM read_parquet({_sql_str(str(by_dst))}) ORDER BY src_id, dst_id, relation, run_id) "
        f"TO {_sql_str(str(by_src))} {options}"
    ).fetchone()
    if (int(row[0]) if row else 0) != edges:
        raise LedgerError(f"compaction sorted {edges} lineage edges but wrote {row}; nothing was committed, run compact again")
    con.execute("SET preserve_insertion_order=true")
    for view in ("_compact_inputs", "_compact_versions", "_compact_part", "_compact_events"):
        con.execute(f"DROP VIEW IF EXISTS {view}")
    target = ledger_dir / LINEAGE_DIR
    target.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex
    names = (f"edges-by-dst-{tag}.parquet", f"edges-by-src-{tag}.parquet", f"nodes-{tag}.parquet")
    for file, name in zip((by_dst, by_src, nodes), names, strict=True):
        _fsync_file(file)
        os.replace(file, target / name)
    _fsync_dir(target)
    shutil.rmtree(staging, ignore_errors=True)
    by_dst_rel, by_src_rel, nodes_rel = (f"{LINEAGE_DIR}/{n}" for n in names)
    return LineageFiles(by_dst_rel, by_src_rel, nodes_rel, edges, tuple(sorted(f.path for f in files)))


def _finished_runs(con: duckdb.DuckDBPyConnection, ledger_dir: Path, files: Sequence[DataFile]) -> set[str]:
    if not files:
        return set()
    paths = _sql_list(str(ledger_dir / f.path) for f in files)
    rows = con.execute(
        f"SELECT DISTINCT run_id FROM read_parquet({paths}) WHERE event_type = 'run' AND op = 'finished'"
    ).fetchall()
    return {r[0] for r in rows}


def _merge_small_files(
    con: duckdb.DuckDBPyConnection, ledger_dir: Path, files: list[DataFile]
) -> tuple[list[DataFile], int]:
    """Merge the small files of each date partition into one sorted file."""
    by_date: dict[str, list[DataFile]] = {}
    for f in files:
        if f.bytes < SMALL_FILE_BYTES:
            by_date.setdefault(f.date, []).append(f)
    merged = 0
    out = list(files)
    for date, small in sorted(by_date.items()):
        if len(small) < MERGE_MIN_FILES:
            continue
        staging = ledger_dir / TMP_DIR / f"merge-{uuid.uuid4().hex}"
        paths = [str(ledger_dir / f.path) for f in small]
        query = f"SELECT {', '.join(duckdb_columns())}, {_sql_str(date)} AS date FROM ({parquet_select(paths)}) ORDER BY run_id, timestamp, event_id"
        row = con.execute(
            f"COPY ({query}) TO {_sql_str(str(staging))} (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, "
            "PARTITION_BY (date), FILENAME_PATTERN 'part-{uuid}', ROW_GROUP_SIZE 65536)"
        ).fetchone()
        rows = int(row[0]) if row else 0
        if rows != sum(f.rows for f in small):
            raise LedgerError(f"merging {len(small)} files of date {date} gave {rows} rows; nothing was committed, run compact again")
        made = _publish_staged(ledger_dir, staging, rows)
        gone = {f.path for f in small}
        out = [f for f in out if f.path not in gone] + made
        merged += len(small)
    return out, merged


def _retire_streams(
    con: duckdb.DuckDBPyConnection, ledger_dir: Path, runs_dir: Path, manifest: Manifest, wanted: set[str] | None
) -> tuple[str, ...]:
    """Delete the streams of finished runs whose every event is verified in Parquet."""
    candidates: dict[str, Path] = {}
    for run_id, path, size in _list_streams(runs_dir):
        state = manifest.streams.get(run_id)
        if wanted is not None and run_id not in wanted:
            continue
        if state is None or state.retired or not state.finished or size != state.offset:
            continue
        candidates[run_id] = path
    if not candidates or not manifest.files:
        return ()
    live = _sql_list(str(ledger_dir / f.path) for f in manifest.files)
    runs = ", ".join(_sql_str(r) for r in candidates)
    select = jsonl_select([str(p) for p in candidates.values()], retired_before=manifest.retired_before)
    missing = con.execute(
        f"SELECT run_id, count(*) FROM ({select}) src WHERE event_id NOT IN "
        f"(SELECT event_id FROM read_parquet({live}) WHERE run_id IN ({runs})) GROUP BY run_id"
    ).fetchall()
    unverified = {r[0] for r in missing}
    for run_id in sorted(unverified):
        _log.warning("ledger.stream_not_retired", run_id=run_id, reason="events missing from Parquet")
    retired: list[str] = []
    for run_id, path in sorted(candidates.items()):
        if run_id in unverified:
            continue
        # Re-check under the writers' lock that nothing was appended since verification.
        with open(path, "rb") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                if os.fstat(fh.fileno()).st_size != manifest.streams[run_id].offset:
                    continue
                path.unlink()
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        _fsync_dir(path.parent)
        _log.info("ledger.stream_retired", run_id=run_id, path=str(path))
        retired.append(run_id)
        _crash_point("during_retirement")
    return tuple(retired)


def _retire_events(
    con: duckdb.DuckDBPyConnection, ledger: Ledger, ledger_dir: Path, files: list[DataFile], cutoff: str
) -> tuple[int, int, list[DataFile]]:
    """Remove events older than ``cutoff`` from ``files``, tombstoning each affected run first.

    Returns:
        Tombstones appended, events removed, and the new file list (not yet committed).
    """
    cutoff_date = cutoff[:10]
    touched = [f for f in files if f.date <= cutoff_date]
    if not touched:
        return 0, 0, files
    paths = [str(ledger_dir / f.path) for f in touched]
    old = f"({parquet_select(paths)}) src WHERE timestamp < {_sql_str(cutoff)}"
    summary = con.execute(
        f"SELECT run_id, count(*), min(timestamp), max(timestamp) FROM {old} GROUP BY run_id ORDER BY run_id"
    ).fetchall()
    if not summary:
        return 0, 0, files
    writers = con.execute(
        f"SELECT run_id, writer, min(seq), max(seq), count(*), arg_max(prev, seq) FROM {old} GROUP BY run_id, writer"
    ).fetchall()
    # The head (hash of the last removed line) of each writer is the ``prev`` of its first kept
    # line, when it has one; the seal of a removed run/finished event gives the rest.
    kept_prev = con.execute(
        f"SELECT run_id, writer, arg_min(prev, seq) FROM ({parquet_select(paths)}) k "
        f"WHERE timestamp >= {_sql_str(cutoff)} GROUP BY run_id, writer"
    ).fetchall()
    seals = con.execute(
        f"SELECT run_id, attrs FROM {old} AND event_type = 'run' AND op = 'finished'"
    ).fetchall()
    heads: dict[tuple[str, str], str] = {(r, w): p for r, w, p in kept_prev}
    for run_id, attrs in seals:
        seal = json.loads(attrs or "{}").get("seal", {}).get("heads", {})
        for writer, head in seal.items():
            heads.setdefault((run_id, writer), head.get("head"))
    by_run: dict[str, dict[str, Any]] = {}
    for run_id, writer, first, last, count, _prev in writers:
        by_run.setdefault(run_id, {})[writer] = {
            "first_seq": int(first), "last_seq": int(last), "events": int(count), "head": heads.get((run_id, writer)),
        }
    done = _existing_tombstones(con, ledger, ledger_dir, files, cutoff)
    tombstones = 0
    removed = 0
    for run_id, count, first_ts, last_ts in summary:
        removed += int(count)
        if run_id in done:
            continue
        ledger.append({
            "event_type": "run", "op": "retired", "run_id": run_id,
            "attrs": {"before": cutoff, "events": int(count), "first_timestamp": first_ts,
                      "last_timestamp": last_ts, "writers": by_run.get(run_id, {})},
        })
        tombstones += 1
    ledger.flush()
    ledger.sync()
    _crash_point("after_tombstones")
    # Rewrite the touched files without the retired events; whole old partitions just go.
    staging = ledger_dir / TMP_DIR / f"retire-{uuid.uuid4().hex}"
    query = (
        f"SELECT {', '.join(duckdb_columns())}, substr(timestamp, 1, 10) AS date FROM ({parquet_select(paths)}) k "
        f"WHERE timestamp >= {_sql_str(cutoff)} ORDER BY run_id, timestamp, event_id"
    )
    row = con.execute(
        f"COPY ({query}) TO {_sql_str(str(staging))} (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, "
        "PARTITION_BY (date), FILENAME_PATTERN 'part-{uuid}', ROW_GROUP_SIZE 65536)"
    ).fetchone()
    made = _publish_staged(ledger_dir, staging, int(row[0]) if row else 0)
    gone = {f.path for f in touched}
    return tombstones, removed, [f for f in files if f.path not in gone] + made


def _existing_tombstones(
    con: duckdb.DuckDBPyConnection, ledger: Ledger, ledger_dir: Path, files: list[DataFile], cutoff: str
) -> set[str]:
    """Runs that already have a tombstone for ``cutoff`` (a rerun after a crash adds none)."""
    sources = [parquet_select([str(ledger_dir / f.path) for f in files])] if files else []
    streams = [str(path) for _run, path, _size in _list_streams(Path(ledger.runs_dir))]
    if streams:
        sources.append(jsonl_select(streams))
    if not sources:
        return set()
    union = " UNION ALL ".join(f"({s})" for s in sources)
    rows = con.execute(
        f"SELECT DISTINCT run_id FROM ({union}) t WHERE event_type = 'run' AND op = 'retired' "
        f"AND json_extract_string(attrs, '$.before') = {_sql_str(cutoff)}"
    ).fetchall()
    return {r[0] for r in rows}


# --- small helpers -------------------------------------------------------------------------


def _remove_orphans(ledger_dir: Path, manifest: Manifest, base: Manifest) -> None:
    """Delete data files no manifest of this or the previous generation names.

    Files of the previous generation stay one generation, so a reader that opened the
    previous manifest a moment ago can still read them.
    """
    keep = {f.path for f in manifest.files} | {f.path for f in base.files}
    for m in (manifest, base):
        if m.lineage is not None:
            keep |= {m.lineage.by_dst, m.lineage.by_src, m.lineage.nodes}
    found = [*(ledger_dir / EVENTS_DIR).glob("date=*/*.parquet"), *(ledger_dir / LINEAGE_DIR).glob("*.parquet")]
    for file in found:
        rel = file.relative_to(ledger_dir).as_posix()
        if rel not in keep:
            file.unlink(missing_ok=True)


def _crash_point(name: str, staging: Path | None = None) -> None:
    """SIGKILL this process at ``name`` when the test hook asks for it."""
    if os.environ.get(_CRASH_ENV) != name:
        return
    if staging is not None:  # leave a half-written file behind, as a real crash would
        staging.mkdir(parents=True, exist_ok=True)
        (staging / "part-torn.parquet").write_bytes(b"PAR1\x00\x00")
    os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[Callable[[int], None]]:
    if not enabled or total == 0:
        yield lambda _n: None
        return
    import click

    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


def _write_durable(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
