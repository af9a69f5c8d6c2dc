"""DuckDB views over the ledger, built by one view builder through the ledger's location.

Views: ``events`` (every event once, deduplicated on ``event_id``; no defined order),
``artifacts``, ``cache``, ``tasks`` (one row per task execution), ``runs`` (one row per run),
``lineage`` (edges, see :mod:`scalable.ledger.edges`) and the table macros
``ancestors(node)``/``descendants(node)``. They read the Parquet files named by the newest
generation (:mod:`scalable.ledger.generations`) and the event lines not compacted yet
together, typed by the one Arrow schema of :mod:`scalable.ledger.events`, wherever the
:class:`~scalable.ledger.location.Location` keeps them; a line that does not decode is left
out, never an error. Every file is read through the read-only filesystems of
:mod:`scalable.ledger.sandbox`, and the connection is then locked down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fsspec.implementations.local import LocalFileSystem

from scalable.ledger import bus
from scalable.ledger.edges import create_lineage_views
from scalable.ledger.events import duckdb_columns, normalize_timestamp
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

__all__ = ["VIEW_NAMES", "EventSources", "connect", "event_sources", "query_batches", "run_query"]

VIEW_NAMES = ("events", "artifacts", "cache", "tasks", "runs", "lineage")


@dataclass(frozen=True, slots=True)
class EventSources:
    """The SQL of every event once, as the views read it.

    Attributes:
        parquet: SELECT of the compacted events (``None`` when there are none).
        tail: SELECT of the event lines not compacted yet, minus those Parquet already has
            (``None`` when there are none).
        lineage: paths of the compacted lineage files (edges by ``dst``, by ``src``, nodes),
            when the generation has them.
        uncovered: SELECT of the compacted events the lineage files do not cover (``None``
            when they cover all).
    """

    parquet: str | None
    tail: str | None
    lineage: tuple[str, str, str] | None
    uncovered: str | None


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
    for source in location.live_sources():
        state = generation.streams.get(source.key)
        if source.size == 0 or (state is not None and not state.retired and source.size == state.offset):
            continue
        tails.append(url(source.path))
        if source.run_id in compacted_runs:
            overlap.add(source.run_id)
    parquet = parquet_select(files) if files else None
    tail = None
    if tails:
        tail = (
            f"SELECT DISTINCT ON (event_id) * FROM ({jsonl_select(tails, retired_before=generation.retired_before)}) j"
        )
        if files and overlap:
            runs = ", ".join(quote(r) for r in sorted(overlap))
            tail = (
                f"SELECT * FROM ({tail}) t WHERE event_id NOT IN (SELECT event_id FROM "
                f"({parquet_select(files)}) p WHERE run_id IN ({runs}))"
            )
    lineage = None
    uncovered = None
    if generation.lineage is not None and files:
        lin = generation.lineage
        lineage = (url(location.url(lin.by_dst)), url(location.url(lin.by_src)), url(location.url(lin.nodes)))
        covered = set(lin.covers)
        rest = [url(location.url(f.path)) for f in generation.files if f.path not in covered]
        uncovered = parquet_select(rest) if rest else None
    return EventSources(parquet, tail, lineage, uncovered)


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
    }


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
    bus.flush_all()  # events queued in this process are visible to its own queries
    cutoff = normalize_timestamp(as_of) if as_of else None
    location = ledger.location
    generation = read_generation(location)
    filesystems: list[ReadOnlyFileSystem] = []
    if trusted:
        con = sql_connect(filesystem=location.filesystem)
        url: Callable[[str], str] = str
    else:
        con = sql_connect()
        # Every file is read through a filesystem that only reads, and only under these roots.
        roots = [ledger.runs_dir, ledger.ledger_dir, *([location.outbox] if location.outbox is not None else [])]
        local = ReadOnlyFileSystem(LocalFileSystem(), [str(r) for r in roots], LOCAL_PROTOCOL, local=True)
        filesystems.append(local)
        if location.filesystem is not None:
            target = location.filesystem
            on_disk = isinstance(target, LocalFileSystem)
            filesystems.append(ReadOnlyFileSystem(target, location.read_prefixes(), REMOTE_PROTOCOL, local=on_disk))
        for fs in filesystems:
            con.register_filesystem(fs)

        def url(path: str) -> str:
            # The location names its objects by URL; the local streams it reads too are plain paths.
            return filesystems[-1].url(path) if "://" in path else local.url(path)

    # Every view binds the same Parquet footers; read each once per connection.
    con.execute("SET parquet_metadata_cache=true")
    sources = event_sources(location, generation, url)
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
    if not trusted:
        lock(con, filesystems)
    return con


def run_query(ledger: Ledger, sql: str, *, as_of: str | None = None) -> pa.Table:
    """Run read-only ``sql`` over the ledger's views and return an Arrow table.

    Raises:
        ReadOnlyQueryError: the statement is not read-only (see :mod:`scalable.ledger.sandbox`).
        QueryError: the SQL does not parse, bind or run.
    """
    con = connect(ledger, as_of=as_of)
    try:
        return run_read_only(con, sql)
    finally:
        con.close()


def query_batches(
    ledger: Ledger, sql: str, *, as_of: str | None = None, batch_rows: int = 65536
) -> pa.RecordBatchReader:
    """Run read-only ``sql`` over the ledger's views and stream the result in batches.

    The connection stays open while the batches are read and closes after the last one.

    Raises:
        ReadOnlyQueryError: the statement is not read-only (see :mod:`scalable.ledger.sandbox`).
        QueryError: the SQL does not parse, bind or run.
    """
    import pyarrow as pa

    con = connect(ledger, as_of=as_of)
    try:
        reader = read_only_batches(con, sql, batch_rows=batch_rows)
    except BaseException:
        con.close()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        finally:
            con.close()

    return pa.RecordBatchReader.from_batches(reader.schema, batches())
