"""DuckDB views over the ledger, built by one view builder through the ledger's location.

Views: ``events`` (every event once, deduplicated on ``event_id``; no defined order),
``artifacts``, ``cache``, ``tasks`` (one row per task execution), ``runs`` (one row per run),
``lineage`` (data-flow edges) and ``lineage_context`` (run context; see
:mod:`scalable.ledger.edges`) and the table macros
``ancestors(node)``/``descendants(node)``. They read the Parquet files named by the newest
generation (:mod:`scalable.ledger.generations`) and the event lines not compacted yet
together, typed by the one Arrow schema of :mod:`scalable.ledger.events`, wherever the
:class:`~scalable.ledger.location.Location` keeps them; a line that does not decode is left
out, never an error. A user's statement reads every file through the read-only filesystems
of :mod:`scalable.ledger.sandbox`, on a connection then locked down.

Readers see a snapshot: the generation and the sources not compacted yet are taken together
(the generation is read again after the sources are listed, and both are taken again if a
compaction committed in between), the files of a generation stay for
``SCALABLE_SNAPSHOT_RETENTION`` after a newer one replaced it, and a read that fails while
the snapshot moved under it (a stream retired, say) runs once more on the newest one
(:func:`read_snapshot`). A concurrent compaction never makes a query fail.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from fsspec.implementations.local import LocalFileSystem

from scalable.errors import QueryError, RunNotFoundError
from scalable.ledger import bus
from scalable.ledger.edges import create_lineage_views, layout_is_current
from scalable.ledger.events import check_run_id, duckdb_columns, normalize_timestamp
from scalable.ledger.generations import Generation, read_generation
from scalable.ledger.location import Location
from scalable.ledger.sandbox import (
    LOCAL_PROTOCOL,
    REMOTE_PROTOCOL,
    ReadOnlyFileSystem,
    lock,
    read_only_batches,
    run_read_only,
)
from scalable.ledger.sql import connect as sql_connect
from scalable.ledger.sql import jsonl_select, parquet_select, quote

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from scalable.ledger.log import Ledger

__all__ = [
    "RUN_ARTIFACT_COLUMNS",
    "RUN_TASK_COLUMNS",
    "RUN_VERIFICATION_COLUMNS",
    "SNAPSHOT_TABLE_PREFIX",
    "VIEW_NAMES",
    "EventSources",
    "connect",
    "describe_run",
    "event_sources",
    "forget_connection",
    "query_batches",
    "read_snapshot",
    "run_query",
]

#: A reader's temporary table named with this prefix holds only what the snapshot fixes (the
#: compacted files): it stays with a kept connection; every other one is dropped after the read.
SNAPSHOT_TABLE_PREFIX = "_snapshot_"
VIEW_NAMES = ("events", "artifacts", "cache", "tasks", "runs", "verifications", "lineage", "lineage_context")
#: Columns of the tasks, the artifacts and the verdicts :func:`describe_run` gives for a run.
RUN_TASK_COLUMNS = ("task_name", "status", "started_at", "ended_at", "duration_s", "error")
RUN_ARTIFACT_COLUMNS = ("op", "artifact_name", "kind", "size_bytes", "digest", "location")
RUN_VERIFICATION_COLUMNS = (
    "verified_at",
    "run_id",
    "rerun_of",
    "verdict",
    "identical",
    "changed",
    "missing",
    "new",
    "first_divergences",
    "cache",
)
#: Times the generation and the sources are taken again while compactions keep committing.
_SNAPSHOT_TRIES = 5
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class EventSources:
    """The SQL of every event once, as the views read it.

    Attributes:
        parquet: SELECT of the compacted events (``None`` when there are none).
        tail: SELECT of the event lines not compacted yet, minus those Parquet already has
            (``None`` when there are none).
        lineage: paths of the compacted lineage files (edges by ``dst``, by ``src``, nodes),
            when the generation has them in the current layout.
        uncovered: SELECT of the compacted events the lineage files do not cover (``None``
            when they cover all).
        keys: the keys of every source of event lines listed (read or not).
    """

    parquet: str | None
    tail: str | None
    lineage: tuple[str, str, str] | None
    uncovered: str | None
    keys: frozenset[str] = frozenset()


def event_sources(
    location: Location, generation: Generation, url: Callable[[str], str] = lambda path: path
) -> EventSources:
    """Every event of ``location`` once: the compacted rows, and the lines Parquet lacks.

    Compaction keeps the live Parquet files free of duplicates, so only the lines not compacted
    yet are deduplicated, and only those of runs that also have rows in Parquet are anti-joined
    against it (a run-id filter that row-group statistics make cheap). A source whose every
    byte the generation covers is not read at all.

    Args:
        location: where the events are.
        generation: the generation whose files are read.
        url: turns a path or URL of the location into the one the SQL names (the read-only
            filesystems of the query path).
    """
    files = [url(location.url(f.path)) for f in generation.files]
    compacted_runs = {location.run_of(key) for key in generation.streams}
    tails: list[str] = []
    overlap: set[str] = set()
    keys: set[str] = set()
    for source in location.live_sources():
        keys.add(source.key)
        state = generation.streams.get(source.key)
        if source.size == 0 or (state is not None and not state.retired and source.size == state.offset):
            continue
        tails.append(url(source.path))
        if source.run_id in compacted_runs:
            overlap.add(source.run_id)
    parquet = parquet_select(files) if files else None
    tail = None
    local_files, local_runs = location.unshipped_compacted()
    local_files = [url(path) for path in local_files]
    if local_files:
        runs = ", ".join(quote(r) for r in local_runs)
        local = f"SELECT * FROM ({parquet_select(local_files)}) l WHERE run_id IN ({runs})"
        tails_sql = jsonl_select(tails, retired_before=generation.retired_before) if tails else None
        tail = f"SELECT DISTINCT ON (event_id) * FROM ({' UNION ALL '.join(filter(None, [local, tails_sql]))}) j"
        tails = []
        overlap = set(local_runs) & compacted_runs | overlap
    if tails:
        tail = (
            f"SELECT DISTINCT ON (event_id) * FROM ({jsonl_select(tails, retired_before=generation.retired_before)}) j"
        )
    if tail is not None and files and overlap:
        runs = ", ".join(quote(r) for r in sorted(overlap))
        tail = (
            f"SELECT * FROM ({tail}) t WHERE event_id NOT IN (SELECT event_id FROM "
            f"({parquet_select(files)}) p WHERE run_id IN ({runs}))"
        )
    lineage = None
    uncovered = None
    if generation.lineage is not None and files and layout_is_current(generation.lineage.by_dst):
        lin = generation.lineage
        lineage = (url(location.url(lin.by_dst)), url(location.url(lin.by_src)), url(location.url(lin.nodes)))
        covered = set(lin.covers)
        rest = [url(location.url(f.path)) for f in generation.files if f.path not in covered]
        uncovered = parquet_select(rest) if rest else None
    return EventSources(parquet, tail, lineage, uncovered, frozenset(keys))


def _empty_select() -> str:
    cols = ", ".join(f"CAST(NULL AS {t}) AS {name}" for name, t in duckdb_columns().items())
    return f"SELECT {cols} WHERE false"


def _view_sql(as_of: str | None) -> dict[str, str]:
    where = f"WHERE timestamp <= {quote(as_of)}" if as_of else ""
    return {
        "events": f"SELECT * FROM _raw_events {where}",
        "artifacts": (
            "SELECT event_id, timestamp, run_id, task_name, component, op, artifact_name, location, kind, "
            "size_bytes, digest, key, store, inputs, attrs FROM events WHERE event_type = 'artifact'"
        ),
        "cache": (
            "SELECT event_id, timestamp, run_id, task_name, op, function_name, key_digest, hit, "
            "duration_s, digest, size_bytes, inputs, attrs FROM events WHERE event_type = 'cache'"
        ),
        "tasks": (
            "SELECT run_id, task_name, any_value(component) AS component, "
            "coalesce(json_extract_string(attrs, '$.task_id'), task_name) AS task_id, "
            "min(timestamp) FILTER (WHERE op = 'started') AS started_at, "
            "max(timestamp) FILTER (WHERE op IN ('finished', 'failed')) AS ended_at, "
            "CASE WHEN bool_or(op = 'failed') THEN 'failed' WHEN bool_or(op = 'finished') THEN 'finished' "
            "ELSE 'running' END AS status, "
            "max(duration_s) FILTER (WHERE op IN ('finished', 'failed')) AS duration_s, "
            "any_value(json_extract_string(attrs, '$.error_type')) FILTER (WHERE op = 'failed') AS error_type, "
            "any_value(json_extract_string(attrs, '$.error')) FILTER (WHERE op = 'failed') AS error "
            "FROM events WHERE event_type = 'task' "
            "GROUP BY run_id, task_name, coalesce(json_extract_string(attrs, '$.task_id'), task_name)"
        ),
        "runs": (
            "SELECT run_id, "
            "any_value(json_extract_string(attrs, '$.project')) FILTER (WHERE event_type = 'run' AND op = 'started') AS project, "
            "any_value(json_extract_string(attrs, '$.target')) FILTER (WHERE event_type = 'run' AND op = 'started') AS target, "
            "min(timestamp) FILTER (WHERE event_type = 'run' AND op = 'started') AS started_at, "
            "max(timestamp) FILTER (WHERE event_type = 'run' AND op = 'finished') AS finished_at, "
            "coalesce(any_value(json_extract_string(attrs, '$.status')) FILTER (WHERE event_type = 'run' AND op = 'finished'), 'running') AS status, "
            "count(*) AS events, "
            "count(*) FILTER (WHERE event_type = 'task' AND op = 'started') AS tasks, "
            "count(*) FILTER (WHERE event_type = 'task' AND op = 'failed') AS failed_tasks, "
            "count(*) FILTER (WHERE event_type = 'artifact' AND op IN ('put', 'recorded')) AS artifacts, "
            "CAST(coalesce(sum(size_bytes) FILTER (WHERE event_type = 'artifact' AND op IN ('put', 'recorded')), 0) AS BIGINT) AS bytes, "
            "count(*) FILTER (WHERE event_type = 'cache' AND op = 'hit') AS cache_hits, "
            "count(*) FILTER (WHERE event_type = 'cache' AND op = 'miss') AS cache_misses "
            "FROM events GROUP BY run_id"
        ),
        # The verdicts of reruns (``run/verified``, appended to the rerun; see scalable.rerun).
        "verifications": (
            "SELECT run_id, json_extract_string(attrs, '$.of') AS rerun_of, "
            "json_extract_string(attrs, '$.verdict') AS verdict, "
            + "".join(
                f"CAST(json_extract(attrs, '$.artifacts.{status}') AS BIGINT) AS {status}, "
                for status in ("identical", "changed", "missing", "new")
            )
            + "from_json(json_extract(attrs, '$.first_keys'), '[\"VARCHAR\"]') AS first_divergences, "
            "CAST(json_extract(attrs, '$.tasks_differ') AS BOOLEAN) AS tasks_differ, "
            "json_extract_string(attrs, '$.cache') AS cache, timestamp AS verified_at, attrs "
            "FROM events WHERE event_type = 'run' AND op = 'verified'"
        ),
    }


def _snapshot(
    location: Location, url: Callable[[str], str] = lambda path: path
) -> tuple[EventSources, tuple[int, frozenset[str]]]:
    """The sources of every event as of one generation, and what identifies that snapshot.

    The generation is read again after the sources are listed: if a compaction committed in
    between (and perhaps retired a stream the older generation does not cover), both are
    taken again.
    """
    generation = read_generation(location)
    for _ in range(_SNAPSHOT_TRIES):
        sources = event_sources(location, generation, url)
        newest = read_generation(location)
        if newest.version == generation.version:
            break
        generation = newest
    return sources, (generation.version, sources.keys)


def _snapshot_id(location: Location) -> tuple[int, frozenset[str]]:
    """The newest generation's version and the keys of every source of event lines now."""
    return read_generation(location).version, frozenset(source.key for source in location.live_sources())


def connect(ledger: Ledger, *, as_of: str | None = None, trusted: bool = False) -> duckdb.DuckDBPyConnection:
    """Return an in-memory DuckDB connection with the ledger's views, locked down.

    Args:
        ledger: the ledger whose events are read, wherever its location keeps them.
        as_of: ISO-8601 time; every view then shows only events at or before it.
        trusted: for the ledger's own SQL (lineage walks, exports, audits), never a user's
            statement: the views read the files directly rather than through the read-only
            filesystems, and the connection is not locked.

    Raises:
        EventValidationError: ``as_of`` is not an ISO-8601 time.
        ConfigError: the ledger's remote location cannot be opened.
        LedgerError: the record of compacted files cannot be read.
    """
    return _connect(ledger, as_of, trusted)[0]


def _connect(
    ledger: Ledger, as_of: str | None, trusted: bool, warm: _Warm | None = None
) -> tuple[duckdb.DuckDBPyConnection, tuple[int, frozenset[str]]]:
    """A connection with the views of the ledger's current snapshot.

    With ``warm`` (trusted reads only), the connection ``warm`` keeps is returned when it was
    made for the same snapshot and ``as_of``; otherwise a new one, which ``warm`` then keeps.
    """
    bus.flush_all()  # events queued in this process are visible to its own queries
    cutoff = normalize_timestamp(as_of) if as_of else None
    location = ledger.location
    filesystems: list[ReadOnlyFileSystem] = []
    if trusted:
        sources, snapshot = _snapshot(location)
        if warm is not None and warm.con is not None and warm.key == (snapshot, cutoff):
            return warm.con, snapshot
        if warm is not None:
            warm.discard()
        con = sql_connect(filesystem=location.filesystem)
    else:
        # A user's statement reads every file through a filesystem that only reads, only under these roots.
        roots = [ledger.runs_dir, ledger.ledger_dir, *([location.outbox] if location.outbox is not None else [])]
        local = ReadOnlyFileSystem(LocalFileSystem(), [str(r) for r in roots], LOCAL_PROTOCOL, local=True)
        filesystems.append(local)
        if location.filesystem is not None:
            target = location.filesystem
            on_disk = isinstance(target, LocalFileSystem)
            filesystems.append(ReadOnlyFileSystem(target, location.read_prefixes(), REMOTE_PROTOCOL, local=on_disk))

        def url(path: str) -> str:
            # The location names its objects by URL; the local streams it reads too are plain paths.
            return filesystems[-1].url(path) if "://" in path else local.url(path)

        sources, snapshot = _snapshot(location, url)
        con = sql_connect()
        for fs in filesystems:
            con.register_filesystem(fs)
    try:
        _define_views(con, location, sources, cutoff)
        if not trusted:
            lock(con, filesystems)
    except BaseException:
        con.close()
        raise
    # Tails copied into the connection (object storage) would not show lines appended later.
    if warm is not None and not (sources.tail and location.materialize_tails):
        warm.con, warm.key = con, (snapshot, cutoff)
    return con, snapshot


@dataclass
class _Warm:
    """The trusted connection a ledger keeps between reads, and the snapshot its views show.

    Views read the event lines at each query, so lines appended to a stream the snapshot
    lists are seen; a new generation, a stream added or retired, or another ``as_of``
    makes a new connection. Building one (the DuckDB instance, every view and macro, the
    Parquet footers) is most of a short read's time.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    con: duckdb.DuckDBPyConnection | None = None
    key: tuple[tuple[int, frozenset[str]], str | None] | None = None

    def discard(self) -> None:
        """Close the kept connection, if any."""
        con, self.con, self.key = self.con, None, None
        if con is not None:
            con.close()


_warm_lock = threading.Lock()
_warm: weakref.WeakKeyDictionary[Ledger, _Warm] = weakref.WeakKeyDictionary()
#: Connections a forked child inherited: never used or closed there (DuckDB is not fork-safe).
_inherited: list[_Warm] = []


def _after_fork_in_child() -> None:
    global _warm_lock, _warm
    _inherited.extend(_warm.values())
    _warm_lock, _warm = threading.Lock(), weakref.WeakKeyDictionary()


os.register_at_fork(after_in_child=_after_fork_in_child)


def forget_connection(ledger: Ledger) -> None:
    """Close the connection kept for ``ledger``'s trusted reads (when the ledger closes)."""
    with _warm_lock:
        warm = _warm.pop(ledger, None)
    if warm is not None:
        with warm.lock:
            warm.discard()


@contextlib.contextmanager
def _connection(
    ledger: Ledger, as_of: str | None, trusted: bool
) -> Iterator[tuple[duckdb.DuckDBPyConnection, tuple[int, frozenset[str]]]]:
    """A connection for one read: for trusted reads the ledger's kept one, when no other
    thread is reading through it; otherwise one of its own, closed after the read."""
    warm: _Warm | None = None
    if trusted and not ledger.closed:
        with _warm_lock:
            warm = _warm.setdefault(ledger, _Warm())
        if not warm.lock.acquire(blocking=False):
            warm = None
    try:
        con, snapshot = _connect(ledger, as_of, trusted, warm)
        kept = warm is not None and warm.con is con
        clean = False
        try:
            yield con, snapshot
            if kept:
                # Leave the catalog as the views made it: a reader's tables (a walk's copy of
                # the tail edges) would be stale at the next read.
                for (name,) in con.execute(
                    "SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name <> '_tail_rows' "
                    "AND NOT starts_with(table_name, $1)",
                    [SNAPSHOT_TABLE_PREFIX],
                ).fetchall():
                    con.execute('DROP TABLE temp.main."' + name.replace('"', '""') + '"')
                clean = True
        finally:
            if not kept:
                con.close()
            elif not clean:
                assert warm is not None
                warm.discard()
    finally:
        if warm is not None:
            warm.lock.release()


def _define_views(
    con: duckdb.DuckDBPyConnection, location: Location, sources: EventSources, cutoff: str | None
) -> None:
    # Every view binds the same Parquet footers; read each once per connection.
    con.execute("SET parquet_metadata_cache=true")
    if sources.tail and location.materialize_tails:
        # Tails on object storage are read once per connection rather than at every view
        # binding and query: each read costs a round trip per object.
        con.execute(f"CREATE TEMP TABLE _tail_rows AS {sources.tail}")
    else:
        con.execute("CREATE VIEW _tail_rows AS " + (sources.tail or _empty_select()))
    parts = [p for p in (sources.parquet, "SELECT * FROM _tail_rows" if sources.tail else None) if p]
    con.execute("CREATE VIEW _raw_events AS " + (" UNION ALL ".join(f"({p})" for p in parts) or _empty_select()))
    for name, sql in _view_sql(cutoff).items():
        con.execute(f"CREATE VIEW {name} AS {sql}")
    if sources.lineage is not None:
        where = f" WHERE timestamp <= {quote(cutoff)}" if cutoff else ""
        # The events whose edges are not compacted: tails, and data files the edges do not cover.
        rest = "SELECT * FROM _tail_rows"
        if sources.uncovered:
            rest = f"SELECT * FROM ({sources.uncovered}) u UNION ALL {rest}"
        con.execute(f"CREATE VIEW _tail_events AS SELECT * FROM ({rest}) r{where}")
        tail = "_tail_events" if sources.tail or sources.uncovered else None
        create_lineage_views(con, compacted=sources.lineage, tail=tail, as_of=cutoff)
    else:
        create_lineage_views(con)


def read_snapshot(
    ledger: Ledger,
    read: Callable[[duckdb.DuckDBPyConnection], _T],
    *,
    as_of: str | None = None,
    trusted: bool = False,
) -> _T:
    """Call ``read`` with a connection to the ledger's views (see :func:`connect`) and return its result.

    If building the views or ``read`` fails while a compaction moved the snapshot on (a newer
    generation, a stream retired), it runs once more on the newest snapshot: a file that
    vanished under a reader is never the reader's error. A failure on an unchanged snapshot
    is raised as it is.

    Raises:
        EventValidationError: ``as_of`` is not an ISO-8601 time.
        ConfigError: the ledger's remote location cannot be opened.
    """
    import duckdb

    snapshot: tuple[int, frozenset[str]] | None = None
    try:
        with _connection(ledger, as_of, trusted) as (con, snapshot):
            return read(con)
    except (duckdb.Error, QueryError) as exc:
        if snapshot is None:
            if isinstance(exc, QueryError):
                raise
            # Defining the views reads no user SQL: a file vanished while they were defined.
        elif _snapshot_id(ledger.location) == snapshot:
            raise
    with _connection(ledger, as_of, trusted) as (con, _snapshot):
        return read(con)


def run_query(ledger: Ledger, sql: str, *, as_of: str | None = None) -> pa.Table:
    """Run read-only ``sql`` over the ledger's views and return an Arrow table.

    Raises:
        ReadOnlyQueryError: the statement is not read-only (see :mod:`scalable.ledger.sandbox`).
        QueryError: the SQL does not parse, bind or run.
    """
    return read_snapshot(ledger, lambda con: run_read_only(con, sql), as_of=as_of)


def query_batches(
    ledger: Ledger, sql: str, *, as_of: str | None = None, batch_rows: int = 65536
) -> pa.RecordBatchReader:
    """Run read-only ``sql`` over the ledger's views and stream the result in batches.

    The connection stays open while the batches are read and closes after the last one.
    Starting the query is taken again on the newest snapshot if a compaction moved it under
    the first try (as :func:`read_snapshot` does); the batches are read from one snapshot.

    Raises:
        ReadOnlyQueryError: the statement is not read-only (see :mod:`scalable.ledger.sandbox`).
        QueryError: the SQL does not parse, bind or run.
    """
    import duckdb
    import pyarrow as pa

    for attempt in range(2):
        con, snapshot = _connect(ledger, as_of, False)
        try:
            reader = read_only_batches(con, sql, batch_rows=batch_rows)
        except (duckdb.Error, QueryError):
            con.close()
            if attempt or _snapshot_id(ledger.location) == snapshot:
                raise
            continue
        except BaseException:
            con.close()
            raise
        break

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        finally:
            con.close()

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def describe_run(ledger: Ledger, run_id: str) -> dict[str, Any]:
    """Return one run as plain data: ``{"run": {...}, "tasks": [...], "artifacts": [...]}``.

    ``run`` is the run's row of the ``runs`` view; ``tasks`` its task executions in start
    order (name, status, start, end, duration, error); ``artifacts`` its artifact events in
    time order (op, name, kind, size, full digest, location); ``verifications`` the verdicts
    on it as a rerun, or on its reruns, in time order (see the ``verifications`` view). Read
    from one snapshot.

    Raises:
        EventValidationError: ``run_id`` is not a valid run id.
        RunNotFoundError: the ledger holds no event of ``run_id``.
    """
    check_run_id(run_id)

    def read(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
        runs = con.execute("SELECT * FROM runs WHERE run_id = $1", [run_id])
        run_columns = [d[0] for d in runs.description or []]
        found = runs.fetchall()
        if not found:
            raise RunNotFoundError(f"run {run_id!r} is not in the ledger; list runs with: scalable ledger runs")
        parts: dict[str, Any] = {"run": dict(zip(run_columns, found[0], strict=True))}
        for name, columns, where, order in (
            ("tasks", RUN_TASK_COLUMNS, "run_id = $1", "started_at"),
            ("artifacts", RUN_ARTIFACT_COLUMNS, "run_id = $1", "timestamp, event_id"),
            ("verifications", RUN_VERIFICATION_COLUMNS, "run_id = $1 OR rerun_of = $1", "verified_at, run_id"),
        ):
            sql = f"SELECT {', '.join(columns)} FROM {name} WHERE {where} ORDER BY {order}"
            parts[name] = [dict(zip(columns, row, strict=True)) for row in con.execute(sql, [run_id]).fetchall()]
        return parts

    return read_snapshot(ledger, read, trusted=True)
