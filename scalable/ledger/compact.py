"""Compaction: the new event lines of a location into Parquet files, committed as a generation.

Layout of the compacted data (see :mod:`scalable.ledger.generations` and
:mod:`scalable.ledger.lineage_files`)::

    events/date=YYYY-MM-DD/part-<attempt>-<n>.parquet   data files (zstd, sorted by run_id, timestamp)
    lineage/...                                  lineage edges of the data files
    _manifest/00000000000000000007.json          one document per generation
    _attempts/<attempt>.json                     the intent of a compaction attempt in progress

One pipeline serves every :class:`~scalable.ledger.location.Location`: record the attempt's
intent, plan which sources hold bytes beyond their covered offset, stage their lines as
Parquet in batches, check and publish the files, merge small files, and commit the next
generation; then collect what no reader can need any more
(:func:`~scalable.ledger.generations.collect_superseded`: files superseded longer than
``SCALABLE_SNAPSHOT_RETENTION`` ago, and the files of dead attempts). Where the location is
:attr:`~scalable.ledger.location.Location.exclusive` (a local directory, under a lock) the
same compaction also applies retention, retires streams and writes the lineage files;
elsewhere (object storage) compactions on several machines commit optimistically: one whose
commit is lost to another deletes its files and starts again from the winner's generation.

How the invariants hold:

* **Safe to kill at any instant.** Data files are staged locally, checked, published under
  unique names, and only then is the generation committed: its document is created only if
  its name is free, the single atomic step. Before it nothing is visible; after it
  everything is. A rerun starts again from the newest generation.
* **Exactly once.** Every new row is checked against the Parquet rows of its run already
  committed (an anti-join on ``event_id``) and deduplicated within its batch (a run's sources
  are always in one batch), so the live files never hold an event twice. The views read a
  source only while it holds bytes beyond its covered offset, and then drop the events that
  Parquet already has.
* **Nothing deleted before its copy is durable and verified** (:mod:`scalable.ledger.retention`).
* **Bounded memory.** Sources are compacted in batches of about :data:`BATCH_BYTES` of JSON,
  DuckDB runs under :data:`~scalable.ledger.sql.MEMORY_LIMIT_MB` and spills to the staging
  directory.

Test hook: see :mod:`scalable.ledger.crash`.
"""

from __future__ import annotations

import os
import queue
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from scalable.errors import CompactionConflictError, ConfigError, LedgerError, RunNotFoundError, ScalableError, os_error
from scalable.ledger import bus
from scalable.ledger.crash import crash_point
from scalable.ledger.events import (
    SCHEMA_VERSION,
    check_run_id,
    decode_line,
    duckdb_columns,
    encode_line,
    normalize_timestamp,
    now,
)
from scalable.ledger.generations import (
    Attempt,
    DataFile,
    Generation,
    StreamState,
    begin_attempt,
    collect_superseded,
    commit_generation,
    publish_staged,
    read_generation,
    snapshots,
)
from scalable.ledger.lineage_files import next_lineage
from scalable.ledger.location import Location, Source
from scalable.ledger.retention import retire_events, retire_streams
from scalable.ledger.segments import sync_streams
from scalable.ledger.sql import (
    MEMORY_LIMIT_MB,
    ROW_GROUP_SIZE,
    file_list,
    jsonl_select,
    os_error_of,
    parquet_copy_options,
    parquet_select,
    quote,
)
from scalable.ledger.sql import connect as sql_connect
from scalable.logs import get_logger

if TYPE_CHECKING:
    import duckdb

    from scalable.ledger.log import Ledger

__all__ = ["BATCH_BYTES", "CompactionResult", "Progress", "compact"]

#: Bytes of JSON lines compacted per batch (bounds memory and file size).
BATCH_BYTES: Final = 128 * 1024 * 1024
#: Files smaller than this are merged into larger ones on later compactions.
SMALL_FILE_BYTES: Final = 32 * 1024 * 1024
#: A date partition with at least this many small files gets them merged.
MERGE_MIN_FILES: Final = 4
#: Commits lost in a row (to other machines) before a compaction gives up.
_ATTEMPTS: Final = 8
_log = get_logger("scalable.ledger")

#: Called as batches complete with ``(batches done, batches in all)``.
Progress = Callable[[int, int], None]


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
    #: Whether a new generation was committed (``False``: nothing to do).
    committed: bool = True

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
    """A run's sources with bytes to compact, each with its complete bytes when planned."""

    run_id: str
    sources: tuple[tuple[Source, int], ...]

    @property
    def size(self) -> int:
        return sum(cut for _source, cut in self.sources)


class _LostRace(Exception):
    """Another compaction committed this generation first (optimistic locations retry)."""


def compact(
    ledger: Ledger,
    run_ids: Iterable[str] | None = None,
    *,
    keep_jsonl: bool = True,
    retire_before: str | None = None,
    progress: Progress | None = None,
) -> CompactionResult:
    """Compact the ledger's new events into its Parquet dataset and commit a new generation.

    Idempotent, and safe to kill at any instant: a rerun leaves the views exactly as an
    uninterrupted run would. On object storage the local streams are synced first, and the
    compaction may run on several machines at once.

    Args:
        ledger: the ledger whose location is compacted.
        run_ids: only these runs (cheap compaction of one run at session close); all when
            omitted.
        keep_jsonl: keep the streams after compaction (default); ``False`` deletes the
            streams of finished runs once their copy is durable and verified.
        retire_before: ISO-8601 date or time; events older than it are removed from the
            dataset, each affected run getting a ``run/retired`` tombstone event first.
        progress: called as batches complete with ``(done, total)``.

    Returns:
        What was written, merged, retired and tombstoned.

    Raises:
        CompactionConflictError: another compaction committed at the same time (locally), or
            won the commit too many times in a row (object storage); run again.
        ConfigError: retention or stream retirement was asked where compaction holds no lock.
        EventValidationError: ``retire_before`` is not an ISO-8601 time, or a run id is not valid.
        LedgerError: the newest generation is not valid.
        RunNotFoundError: a run of ``run_ids`` has neither a stream nor compacted events.
    """
    location = ledger.location
    if not location.exclusive and (not keep_jsonl or retire_before):
        raise ConfigError(
            "--no-keep-jsonl and --retire-before work on a local ledger only; unset "
            "SCALABLE_RUNS_DIR_REMOTE to retire local streams or events"
        )
    cutoff = normalize_timestamp(retire_before) if retire_before else None
    bus.flush_all()  # events this process queued are part of what is compacted
    if location.outbox is not None:
        sync_streams(location)
    wanted = {check_run_id(r) for r in run_ids} if run_ids is not None else None
    if wanted:
        _check_known(location, wanted)
    import duckdb

    try:
        with location.lock():
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    return _compact_once(location, ledger, wanted, keep_jsonl, cutoff, progress)
                except _LostRace:
                    _log.info("ledger.commit_conflict", location=location.uri, attempt=attempt)
    except ScalableError:
        raise
    except (OSError, duckdb.Error) as exc:
        # Staged files, published files and the attempt's intent are gone by now: the
        # generation before stays the newest, whole.
        found = exc if isinstance(exc, OSError) else os_error_of(exc)
        if found is None:
            raise
        raise os_error(found, f"cannot compact into {location.uri!r}", LedgerError) from None
    raise CompactionConflictError(
        f"ledger {location.uri!r}: {_ATTEMPTS} compactions in a row lost the manifest commit to others; "
        "run scalable ledger compact again"
    )


def _check_known(location: Location, run_ids: set[str]) -> None:
    """Raise RunNotFoundError unless every run of ``run_ids`` has a stream here or compacted events."""
    known = {source.run_id for source in location.live_sources()}
    known |= {location.run_of(key) for key in read_generation(location).streams}
    missing = sorted(run_ids - known)
    if missing:
        raise RunNotFoundError(
            f"run {missing[0]!r} has no stream and no compacted events in the ledger at {location.uri!r}; "
            "nothing to compact for it (list runs with: scalable ledger runs)"
        )


def _compact_once(
    location: Location,
    ledger: Ledger,
    wanted: set[str] | None,
    keep_jsonl: bool,
    cutoff: str | None,
    progress: Progress | None,
) -> CompactionResult:
    base = read_generation(location)
    pending, streams = _plan(location, base, wanted)
    # Batches honour the cutoff already committed; a new cutoff is applied by retire_events,
    # which tombstones what it removes.
    retired_before = max(filter(None, (base.retired_before, cutoff)), default=None)
    attempt = begin_attempt(location)
    published = False  # whether a generation names the attempt's files
    try:
        with location.staging() as tmp:
            con = sql_connect(spill_dir=tmp / "spill", filesystem=location.filesystem)
            try:
                new_files, written = _compact_batches(location, attempt, tmp, _batches(pending), base, progress)
                finished = _finished_runs(con, location, new_files)
                for item in pending:
                    for source, cut in item.sources:
                        old = streams.get(source.key, StreamState(0))
                        streams[source.key] = StreamState(cut, old.finished or item.run_id in finished, False)
                files, merged = _merge_small_files(con, location, attempt, tmp, [*base.files, *new_files])
                tombstones = events_retired = 0
                if cutoff is not None:
                    tombstones, events_retired, files = retire_events(
                        con, location, attempt, tmp, ledger, files, cutoff
                    )
                live = tuple(sorted(files, key=lambda f: (f.date, f.path)))
                lineage = (
                    next_lineage(con, location, attempt, tmp, base.lineage, live, full=wanted is None)
                    if location.exclusive
                    else None
                )
                generation = Generation(
                    version=base.version + 1,
                    files=live,
                    streams=streams,
                    retired_before=retired_before,
                    created=now(),
                    lineage=lineage if live else None,
                )
                if (
                    generation.files == base.files
                    and generation.streams == base.streams
                    and generation.retired_before == base.retired_before
                    and generation.lineage == base.lineage
                ):
                    generation = base  # nothing changed: no new generation
                else:
                    _commit(location, attempt, generation)
                    published = True
                    _log.info("ledger.compacted", version=generation.version, events=written, files=len(new_files))
                published = True
                # Files the attempt merged away before its commit were never readable.
                for rel in set(attempt.published) - generation.named_files():
                    location.delete(rel)
                location.delete(attempt.intent)  # committed (or nothing to commit): the files are accounted for
                retired: tuple[str, ...] = ()
                if not keep_jsonl:
                    held = snapshots(location, retention_s=ledger.settings.snapshot_retention_s).readable
                    retired = retire_streams(con, location, generation, wanted, held)
            finally:
                con.close()
    except BaseException:
        if not published:
            attempt.abandon(location)
        raise
    collect_superseded(location, retention_s=ledger.settings.snapshot_retention_s)
    return CompactionResult(
        version=generation.version,
        events_written=written,
        files_written=len(new_files),
        files_merged=merged,
        streams_compacted=len(pending),
        streams_retired=retired,
        events_retired=events_retired,
        tombstones=tombstones,
        events_total=generation.rows,
        files_total=len(generation.files),
        committed=generation is not base,
    )


def _commit(location: Location, attempt: Attempt, generation: Generation) -> None:
    """Commit ``generation``; where compactions race (no lock), a lost race makes the caller start again.

    Raises:
        LedgerError: the attempt outlived the retention period and a collector removed its files.
        CompactionConflictError: someone committed this version outside the lock (local).
    """
    crash_point("before_manifest_commit")
    if not location.exclusive and not attempt.still_intended(location):
        raise LedgerError(
            f"compaction of {location.uri!r} took longer than SCALABLE_SNAPSHOT_RETENTION and its files were "
            "collected; nothing was committed, run compact again (or raise the retention)"
        )
    try:
        commit_generation(location, generation)
    except CompactionConflictError:
        if location.exclusive:
            raise  # someone committed outside the lock: stop rather than guess
        raise _LostRace from None
    crash_point("after_manifest_commit")


def _plan(
    location: Location, base: Generation, wanted: set[str] | None
) -> tuple[list[_Pending], dict[str, StreamState]]:
    """Find the sources with bytes beyond their covered offset; carry over the rest."""
    streams = dict(base.streams)
    present: set[str] = set()
    by_run: dict[str, list[tuple[Source, int]]] = {}
    for source in location.sources():
        present.add(source.key)
        if wanted is not None and source.run_id not in wanted:
            continue
        state = streams.get(source.key)
        cut = location.complete_bytes(source)
        covered = state.offset if state is not None and not state.retired and source.size >= state.offset else 0
        if cut > covered or (state is not None and state.retired and cut > 0):
            by_run.setdefault(source.run_id, []).append((source, cut))
    for key, state in base.streams.items():
        if key not in present and not state.retired:
            streams[key] = replace(state, retired=True)
    return [_Pending(run_id, tuple(items)) for run_id, items in sorted(by_run.items())], streams


def _batches(pending: Sequence[_Pending]) -> list[list[_Pending]]:
    """Group runs in run-id order into equal batches, a multiple of the core count.

    Each batch holds at most about :data:`BATCH_BYTES` unless one run alone is larger.
    """
    items = sorted(pending, key=lambda p: p.run_id)
    total = sum(p.size for p in items)
    if not items:
        return []
    cores = os.cpu_count() or 1
    count = cores * max(1, -(-total // (BATCH_BYTES * cores)))
    batches: list[list[_Pending]] = [[] for _ in range(count)]
    start = 0
    for item in items:
        batches[min(count - 1, start * count // max(1, total))].append(item)
        start += item.size
    return [b for b in batches if b]


def _compact_batches(
    location: Location,
    attempt: Attempt,
    tmp: Path,
    batches: Sequence[Sequence[_Pending]],
    base: Generation,
    progress: Progress | None,
) -> tuple[list[DataFile], int]:
    """Compact batches on one single-threaded DuckDB connection per core, in parallel."""
    if not batches:
        return [], 0
    workers = max(1, min(os.cpu_count() or 1, len(batches)))
    pool: queue.Queue[duckdb.DuckDBPyConnection] = queue.Queue()
    for _ in range(workers):
        pool.put(
            sql_connect(
                threads=1, spill_dir=tmp / "spill", memory_mb=MEMORY_LIMIT_MB // workers, filesystem=location.filesystem
            )
        )
    compacted_runs = {location.run_of(key) for key in base.streams}

    def run(batch: Sequence[_Pending]) -> tuple[list[DataFile], int]:
        con = pool.get()
        try:
            return _compact_batch(con, location, attempt, tmp, batch, base, compacted_runs)
        finally:
            pool.put(con)

    made: list[DataFile] = []
    rows = 0
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="scalable-compact") as executor:
            for done, (files, count) in enumerate(executor.map(run, batches), start=1):
                made.extend(files)
                rows += count
                if progress is not None:
                    progress(done, len(batches))
    finally:
        while not pool.empty():
            pool.get().close()
    return made, rows


def _compact_batch(
    con: duckdb.DuckDBPyConnection,
    location: Location,
    attempt: Attempt,
    tmp: Path,
    batch: Sequence[_Pending],
    base: Generation,
    compacted_runs: set[str],
) -> tuple[list[DataFile], int]:
    """Write one batch of runs as sorted, deduplicated Parquet files (not yet committed).

    The fast path copies the sources in file order on one thread, which keeps each run's
    lines in the order they were appended (timestamps are taken under the stream's lock, so
    that is time order) and the runs in id order, so no sort is needed. The staged files are
    then checked: sorted by (run_id, timestamp), no event id twice, every line of this schema
    version. Only a batch that fails the check is written again the careful way (sources with
    lines of other versions re-encoded, rows deduplicated and sorted).
    """
    overlap = [p.run_id for p in batch if p.run_id in compacted_runs]
    anti = ""
    if overlap and base.files:
        live = [location.url(f.path) for f in base.files]
        anti = (
            f" WHERE event_id NOT IN (SELECT event_id FROM read_parquet({file_list(live)}) "
            f"WHERE run_id IN ({', '.join(quote(r) for r in overlap)}))"
        )
    retired_before = base.retired_before
    paths = [source.path for p in batch for source, _cut in p.sources]
    staging, rows = _copy_batch(con, tmp, jsonl_select(paths, retired_before=retired_before), anti, careful=False)
    clean, foreign = _check_staged(staging)
    if not clean:
        shutil.rmtree(staging, ignore_errors=True)
        paths = [
            _normalized_source(location, source, cut, tmp) if p.run_id in foreign else source.path
            for p in batch
            for source, cut in p.sources
        ]
        staging, rows = _copy_batch(con, tmp, jsonl_select(paths, retired_before=retired_before), anti, careful=True)
    return publish_staged(location, attempt, staging, rows), rows


def _normalized_source(location: Location, source: Source, cut: int, tmp: Path) -> str:
    """Re-encode a source holding lines of another schema version into a temporary file.

    Each line is decoded with :func:`~scalable.ledger.events.decode_line`, which folds columns
    this version does not know into ``attrs``, so nothing a newer writer wrote is lost.
    """
    out = tmp / f"normalized-{uuid.uuid4().hex}.jsonl"
    with location.open_source(source) as src, open(out, "wb") as dst:
        remaining = cut
        for raw in src:
            remaining -= len(raw)
            if remaining < 0 or not raw.endswith(b"\n"):
                break
            try:
                dst.write(encode_line(decode_line(raw)))
            except (ValueError, UnicodeDecodeError):
                continue  # malformed lines are reported by readers and audit, not compacted
    return str(out)


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
    distinct = (
        pc.count_distinct(pa.chunked_array([c for arr in ids for c in arr.chunks], pa.string())).as_py() if ids else 0
    )
    del ids
    pa.default_memory_pool().release_unused()  # keep the peak RSS of long compactions flat
    return ordered and distinct == total and not foreign, foreign


def _copy_batch(
    con: duckdb.DuckDBPyConnection, tmp: Path, select: str, anti: str, *, careful: bool
) -> tuple[Path, int]:
    staging = tmp / f"staging-{uuid.uuid4().hex}"
    cols = ", ".join(duckdb_columns())
    if careful:
        query = (
            f"SELECT {cols}, substr(timestamp, 1, 10) AS date FROM "
            f"(SELECT DISTINCT ON (event_id) * FROM ({select}) src{anti}) ORDER BY run_id, timestamp, event_id"
        )
    else:
        query = f"SELECT {cols}, substr(timestamp, 1, 10) AS date FROM ({select}) src{anti}"
    crash_point("during_parquet_write", staging)
    options = parquet_copy_options(partition_by_date=True, row_group_size=ROW_GROUP_SIZE)
    row = con.execute(f"COPY ({query}) TO {quote(str(staging))} {options}").fetchone()
    return staging, int(row[0]) if row else 0


def _finished_runs(con: duckdb.DuckDBPyConnection, location: Location, files: Sequence[DataFile]) -> set[str]:
    if not files:
        return set()
    paths = file_list(location.url(f.path) for f in files)
    rows = con.execute(
        f"SELECT DISTINCT run_id FROM read_parquet({paths}) WHERE event_type = 'run' AND op = 'finished'"
    ).fetchall()
    return {r[0] for r in rows}


def _merge_small_files(
    con: duckdb.DuckDBPyConnection, location: Location, attempt: Attempt, tmp: Path, files: list[DataFile]
) -> tuple[list[DataFile], int]:
    """Merge the small files of each date partition into one sorted file."""
    by_date: dict[str, list[DataFile]] = {}
    for f in files:
        if f.bytes < SMALL_FILE_BYTES:
            by_date.setdefault(f.date, []).append(f)
    merged = 0
    out = list(files)
    options = parquet_copy_options(partition_by_date=True, row_group_size=ROW_GROUP_SIZE)
    for date, small in sorted(by_date.items()):
        if len(small) < MERGE_MIN_FILES:
            continue
        staging = tmp / f"merge-{uuid.uuid4().hex}"
        paths = [location.url(f.path) for f in small]
        query = (
            f"SELECT {', '.join(duckdb_columns())}, {quote(date)} AS date FROM ({parquet_select(paths)}) "
            "ORDER BY run_id, timestamp, event_id"
        )
        row = con.execute(f"COPY ({query}) TO {quote(str(staging))} {options}").fetchone()
        rows = int(row[0]) if row else 0
        if rows != sum(f.rows for f in small):
            raise LedgerError(
                f"merging {len(small)} files of date {date} gave {rows} rows; nothing was committed, run scalable ledger compact again"
            )
        made = publish_staged(location, attempt, staging, rows)
        gone = {f.path for f in small}
        out = [f for f in out if f.path not in gone] + made
        merged += len(small)
    return out, merged
