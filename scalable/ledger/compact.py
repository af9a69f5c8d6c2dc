"""Compaction: the new event lines of a location into Parquet files, committed as a generation.

Layout of the compacted data (see :mod:`scalable.ledger.generations` and
:mod:`scalable.ledger.lineage_files`)::

    events/date=YYYY-MM-DD/part-<uuid>.parquet   data files (zstd, sorted by run_id, timestamp)
    lineage/...                                  lineage edges of the data files
    _manifest/00000000000000000007.json          one document per generation

One pipeline serves every :class:`~scalable.ledger.location.Location`: plan which sources
hold bytes beyond their covered offset, stage their lines as Parquet in batches, check and
publish the files, and commit the next generation. Where the location is
:attr:`~scalable.ledger.location.Location.exclusive` (a local directory, under a lock) the
same compaction also merges small files, applies retention, retires streams, writes the
lineage files and removes orphans; elsewhere (object storage) it only adds files, and a
commit lost to another machine's compaction deletes its files and starts again from the
winner's generation.

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

from scalable.errors import CompactionConflictError, ConfigError, LedgerError
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
    EVENTS_DIR,
    DataFile,
    Generation,
    StreamState,
    clear_pending,
    commit_generation,
    generation_versions,
    mark_pending,
    pending_versions,
    publish_staged,
    read_generation,
    read_version,
    written_for,
)
from scalable.ledger.lineage_files import LINEAGE_DIR, next_lineage
from scalable.ledger.location import Location, Source
from scalable.ledger.retention import retire_events, retire_streams
from scalable.ledger.segments import sync_streams
from scalable.ledger.sql import (
    MEMORY_LIMIT_MB,
    ROW_GROUP_SIZE,
    file_list,
    jsonl_select,
    parquet_copy_options,
    parquet_select,
    quote,
)
from scalable.ledger.sql import connect as sql_connect
from scalable.logs import get_logger

if TYPE_CHECKING:
    import duckdb

    from scalable.ledger.log import Ledger

__all__ = [
    "BATCH_BYTES",
    "CompactionResult",
    "KnownGenerations",
    "Progress",
    "compact",
    "files_holding_other_events",
    "remove_unneeded",
]

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
    with location.lock():
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return _compact_once(location, ledger, wanted, keep_jsonl, cutoff, progress)
            except _LostRace:
                _log.info("ledger.commit_conflict", location=location.uri, attempt=attempt)
    raise CompactionConflictError(
        f"ledger {location.uri!r}: {_ATTEMPTS} compactions in a row lost the manifest commit to others; "
        "run compact again"
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
    version = base.version + 1
    if location.exclusive:
        # Never a version some file already claims (a lost record's files keep their own).
        claimed = [written_for(rel) or 0 for d in (EVENTS_DIR, LINEAGE_DIR) for rel in location.list_files(d)]
        version = max([version, *(v + 1 for v in claimed)])
    pending, streams = _plan(location, base, wanted)
    mark_pending(location, version)
    # Batches honour the cutoff already committed; a new cutoff is applied by retire_events,
    # which tombstones what it removes.
    retired_before = max(filter(None, (base.retired_before, cutoff)), default=None)
    with location.staging() as tmp:
        con = sql_connect(spill_dir=tmp / "spill", filesystem=location.filesystem)
        try:
            new_files, written = _compact_batches(location, tmp, _batches(pending), base, progress)
            finished = _finished_runs(con, location, new_files)
            for item in pending:
                for source, cut in item.sources:
                    old = streams.get(source.key, StreamState(0))
                    streams[source.key] = StreamState(cut, old.finished or item.run_id in finished, False)
            files = [*base.files, *new_files]
            merged = tombstones = events_retired = 0
            if location.exclusive:
                files, merged = _merge_small_files(con, location, tmp, files, version)
                if cutoff is not None:
                    tombstones, events_retired, files = retire_events(
                        con, location, tmp, ledger, files, cutoff, version
                    )
            live = tuple(sorted(files, key=lambda f: (f.date, f.path)))
            lineage = (
                next_lineage(con, location, tmp, base.lineage, live, full=wanted is None, version=version)
                if location.exclusive
                else None
            )
            replaced = base.replaced
            if replaced and location.exclusive:  # listed until they are gone
                present = set(location.list_files(EVENTS_DIR)) | set(location.list_files(LINEAGE_DIR))
                replaced = tuple(rel for rel in replaced if rel in present)
            generation = Generation(
                version=version,
                files=live,
                streams=streams,
                retired_before=retired_before,
                created=now(),
                lineage=lineage if live else None,
                replaced=replaced,
            )
            if (
                generation.files == base.files
                and generation.streams == base.streams
                and generation.retired_before == base.retired_before
                and generation.lineage == base.lineage
                and generation.replaced == base.replaced
            ):
                generation = base  # nothing changed: no new generation
            else:
                _commit(location, generation, new_files)
                _log.info("ledger.compacted", version=generation.version, events=written, files=len(new_files))
            clear_pending(location, version)
            retired: tuple[str, ...] = ()
            if not keep_jsonl:
                retired = retire_streams(con, location, generation, wanted)
            if location.exclusive:
                remove_unneeded(con, location, generation, base)
        finally:
            con.close()
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
    )


def _commit(location: Location, generation: Generation, new_files: Sequence[DataFile]) -> None:
    """Commit ``generation``; where compactions race (no lock), a lost race removes ``new_files``."""
    crash_point("before_manifest_commit")
    try:
        commit_generation(location, generation)
    except CompactionConflictError:
        if location.exclusive:
            raise  # someone committed outside the lock: stop rather than guess
        for f in new_files:
            location.delete(f.path)
        clear_pending(location, generation.version)
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
    location: Location, tmp: Path, batches: Sequence[Sequence[_Pending]], base: Generation, progress: Progress | None
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
            return _compact_batch(con, location, tmp, batch, base, compacted_runs)
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
    return publish_staged(location, staging, rows, base.version + 1), rows


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
    con: duckdb.DuckDBPyConnection, location: Location, tmp: Path, files: list[DataFile], version: int
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
                f"merging {len(small)} files of date {date} gave {rows} rows; nothing was committed, run compact again"
            )
        made = publish_staged(location, staging, rows, version)
        gone = {f.path for f in small}
        out = [f for f in out if f.path not in gone] + made
        merged += len(small)
    return out, merged


def remove_unneeded(
    con: duckdb.DuckDBPyConnection, location: Location, generation: Generation, base: Generation
) -> list[str]:
    """Delete the compacted files the ledger no longer needs, and only those it can account for.

    A file that neither ``generation`` nor ``base``, the one before it, names (readers that
    opened ``base`` a moment ago may still read its files) is deleted only when a record
    accounts for it:

    * the committed generation of the version it was written for named it, and a later one
      no longer does (a merge, retention or new lineage files superseded it);
    * that generation exists and does not name it: the compaction that wrote the file never
      committed it (it was killed, or lost the commit);
    * a generation lists it as replaced (a recovery);

    and, for a file of events, only once every event in it is in ``generation``'s files (or is
    older than its retention cutoff). Anything else is left alone, for ``ledger audit`` to
    report and ``ledger recover`` to take in.

    Returns:
        The files deleted.
    """
    keep = generation.names() | base.names()
    candidates = [
        rel
        for directory in (EVENTS_DIR, LINEAGE_DIR)
        for rel in location.list_files(directory)
        if rel.endswith(".parquet") and rel not in keep
    ]
    replaced = set(generation.replaced) | set(base.replaced)
    known = KnownGenerations(location, {generation.version: generation, base.version: base})
    accounted = [rel for rel in candidates if rel in replaced or known.accounts_for(rel, generation.version)]
    held = files_holding_other_events(
        con, location, [r for r in accounted if r.startswith(f"{EVENTS_DIR}/")], generation
    )
    deleted = []
    for rel in accounted:
        if rel in held:
            _log.warning("ledger.file_kept", file=location.display(rel), reason="holds events no live file has")
            continue
        location.delete(rel)
        deleted.append(rel)
    # An announcement of a compaction that never committed is withdrawn once its files are gone.
    left = {written_for(rel) for rel in candidates if rel not in deleted}
    for version in known.pending:
        if version < generation.version and version not in left:
            clear_pending(location, version)
    return deleted


class KnownGenerations:
    """The committed generations of a location, read as they are asked for (each once)."""

    def __init__(self, location: Location, known: dict[int, Generation] | None = None) -> None:
        self.location = location
        self._docs: dict[int, Generation | None] = dict(known or {})
        self.pending = pending_versions(location)

    def get(self, version: int) -> Generation | None:
        """Generation ``version`` (``None`` when its document is gone or not valid)."""
        if version not in self._docs:
            try:
                self._docs[version] = read_version(self.location, version)
            except LedgerError:
                self._docs[version] = None
        return self._docs[version]

    def state_of(self, rel: str, newest: int) -> str:
        """What the committed generations say of a compacted file no current generation names.

        ``superseded``: the generation of the version it was written for named it (a later one
        no longer does). ``uncommitted``: that generation exists and does not name it, or there
        is none but the compaction that wrote for it announced itself and never withdrew
        (:func:`~scalable.ledger.generations.mark_pending`), so the compaction that wrote the
        file never committed it (killed, or lost the commit). ``pending``: it
        was written for a version after ``newest`` (a compaction still running, or killed
        before any later commit). ``unknown``: no generation accounts for it. A file whose
        name carries no version (written before names did) is looked for in every generation.
        """
        version = written_for(rel)
        if version is None:
            for v in reversed(generation_versions(self.location)):
                found = self.get(v)
                if found is not None and rel in found.names():
                    return "superseded"
            return "unknown"
        if version > newest:
            return "pending"
        found = self.get(version)
        if found is None:
            return "uncommitted" if version in self.pending else "unknown"
        return "superseded" if rel in found.names() else "uncommitted"

    def accounts_for(self, rel: str, newest: int) -> bool:
        """Whether a committed generation accounts for ``rel`` (superseded or never committed)."""
        return self.state_of(rel, newest) in ("superseded", "uncommitted")


def files_holding_other_events(
    con: duckdb.DuckDBPyConnection,
    location: Location,
    files: Sequence[str],
    generation: Generation,
    sources: Sequence[str] = (),
) -> set[str]:
    """The ``files`` that hold an event neither ``generation``'s files nor the JSON-lines ``sources`` have.

    Events older than the generation's retention cutoff are not looked for.
    """
    if not files:
        return set()
    by_url = {location.url(rel): rel for rel in files}
    candidates = file_list(by_url)
    cond = f"timestamp >= {quote(generation.retired_before)}" if generation.retired_before else "true"
    if generation.files:
        live = file_list(location.url(f.path) for f in generation.files)
        cond += (
            f" AND event_id NOT IN (SELECT event_id FROM read_parquet({live}) WHERE run_id IN "
            f"(SELECT DISTINCT run_id FROM read_parquet({candidates})))"
        )
    if sources:
        cond += f" AND event_id NOT IN (SELECT event_id FROM ({jsonl_select(sources)}) s)"
    rows = con.execute(
        f"SELECT DISTINCT filename FROM read_parquet({candidates}, filename=true, hive_partitioning=false) WHERE {cond}"
    ).fetchall()
    held = {by_url.get(name, "") for (name,) in rows}
    return set(files) if "" in held else held
