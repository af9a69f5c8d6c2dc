"""DuckDB views over the ledger, built by one connection factory, and the read-only query path.

Views: ``events`` (every event once, deduplicated on ``event_id``; no defined order),
``artifacts``, ``cache``, ``tasks`` (one row per task execution), ``runs`` (one row per run),
``lineage`` (edges, see :mod:`scalable.ledger.lineage`) and the table macros
``ancestors(node)``/``descendants(node)``. They read the Parquet files named by the newest
compaction manifest and the not yet compacted JSON-lines streams together, typed by the one
Arrow schema of :mod:`scalable.ledger.events`; a line that does not decode is left out, never
an error.

The query path is read-only: only SELECT-like statements run, and once the views exist the
connection may read nothing outside the ledger's own directories and its configuration is
locked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from scalable.errors import QueryError, ReadOnlyQueryError
from scalable.ledger.compact import jsonl_select, parquet_select, read_manifest, uncompacted_streams
from scalable.ledger.events import duckdb_columns, normalize_timestamp
from scalable.ledger.lineage import create_lineage_views
from scalable.ledger.log import flush_all

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from scalable.ledger.log import Ledger

__all__ = ["VIEW_NAMES", "check_read_only", "connect", "run_query"]

VIEW_NAMES = ("events", "artifacts", "cache", "tasks", "runs", "lineage")

_ALLOWED_PRAGMAS = ("table_info", "show_tables", "show_tables_expanded", "database_size", "version")


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _empty_select() -> str:
    cols = ", ".join(f"CAST(NULL AS {t}) AS {name}" for name, t in duckdb_columns().items())
    return f"SELECT {cols} WHERE false"


def _raw_events_sql(
    runs_dir: str, ledger_dir: str
) -> tuple[str | None, str | None, tuple[str, str, str] | None, str | None]:
    """Every event once: the compacted Parquet rows, and the stream lines Parquet lacks.

    Compaction keeps the live Parquet files free of duplicates, so only the JSON-lines tails
    are deduplicated, and only the runs that also have rows in Parquet are anti-joined
    against it (a run-id filter that row-group statistics make cheap).

    Returns:
        The SELECT of the compacted events and of the tails (each ``None`` when there are
        none), the paths of the compacted lineage files (edges by ``dst``, by ``src``, nodes)
        when the manifest has them, and the SELECT of the compacted events those files do not
        cover (``None`` when they cover all).
    """
    manifest = read_manifest(ledger_dir)
    files = [os.path.join(ledger_dir, f.path) for f in manifest.files]
    streams, overlap = uncompacted_streams(runs_dir, manifest)
    parquet = parquet_select(files) if files else None
    tail = None
    if streams:
        tail = f"SELECT DISTINCT ON (event_id) * FROM ({jsonl_select(streams, retired_before=manifest.retired_before)}) j"
        if files and overlap:
            runs = ", ".join(_sql_str(r) for r in overlap)
            tail = (
                f"SELECT * FROM ({tail}) t WHERE event_id NOT IN (SELECT event_id FROM "
                f"({parquet_select(files)}) p WHERE run_id IN ({runs}))"
            )
    lineage = None
    uncovered = None
    if manifest.lineage is not None and files:
        lin = manifest.lineage
        lineage = (os.path.join(ledger_dir, lin.by_dst), os.path.join(ledger_dir, lin.by_src),
                   os.path.join(ledger_dir, lin.nodes))
        rest = [os.path.join(ledger_dir, f.path) for f in manifest.files if f.path not in set(lin.covers)]
        uncovered = parquet_select(rest) if rest else None
    return parquet, tail, lineage, uncovered


def _view_sql(as_of: str | None) -> dict[str, str]:
    where = f"WHERE timestamp <= {_sql_str(as_of)}" if as_of else ""
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


def connect(ledger: Ledger, *, as_of: str | None = None) -> duckdb.DuckDBPyConnection:
    """Return an in-memory DuckDB connection with the ledger's views, locked down.

    Args:
        ledger: the ledger whose runs and ledger directories are read.
        as_of: ISO-8601 time; every view then shows only events at or before it.

    Raises:
        EventValidationError: ``as_of`` is not an ISO-8601 time.
    """
    import duckdb

    flush_all()  # events queued in this process are visible to its own queries
    cutoff = normalize_timestamp(as_of) if as_of else None
    runs_dir = os.path.realpath(ledger.runs_dir)
    ledger_dir = os.path.realpath(ledger.ledger_dir)
    con = duckdb.connect(":memory:", config={"threads": os.cpu_count() or 1})
    # Every view binds the same Parquet footers; read each once per connection.
    con.execute("SET parquet_metadata_cache=true")
    allowed_dirs = [runs_dir.rstrip("/") + "/", ledger_dir.rstrip("/") + "/"]
    if ledger.settings.runs_dir_remote:
        from scalable.ledger.compact import _list_streams
        from scalable.ledger.remote import open_remote, remote_sources

        remote = open_remote(ledger.settings.runs_dir_remote)
        con.register_filesystem(remote.fs)
        local = [str(path) for _run, path, size in _list_streams(Path(runs_dir)) if size]
        parquet, tails, prefix = remote_sources(remote, local)
        allowed_dirs.append(prefix)
        # Tails on an object store are read once per connection rather than at every view
        # binding and query: each read costs a round trip per object.
        if tails:
            con.execute(f"CREATE TEMP TABLE _remote_tails AS {tails}")
        parts = [p for p in (parquet, "SELECT * FROM _remote_tails" if tails else None) if p]
        raw = " UNION ALL ".join(f"({p})" for p in parts)
        compacted = None
    else:
        parquet, tail, compacted, uncovered = _raw_events_sql(runs_dir, ledger_dir)
        con.execute("CREATE VIEW _tail_rows AS " + (tail or _empty_select()))
        parts = [p for p in (parquet, "SELECT * FROM _tail_rows" if tail else None) if p]
        raw = " UNION ALL ".join(f"({p})" for p in parts)
    con.execute("CREATE VIEW _raw_events AS " + (raw or _empty_select()))
    for name, sql in _view_sql(cutoff).items():
        con.execute(f"CREATE VIEW {name} AS {sql}")
    if compacted is not None:
        where = f" WHERE timestamp <= {_sql_str(cutoff)}" if cutoff else ""
        # The events whose edges are not compacted: streams, and data files the edges do not cover.
        rest = f"SELECT * FROM ({uncovered}) u UNION ALL SELECT * FROM _tail_rows" if uncovered else "SELECT * FROM _tail_rows"
        con.execute(f"CREATE VIEW _tail_events AS SELECT * FROM ({rest}) r{where}")
        create_lineage_views(con, compacted=compacted, tail="_tail_events" if tail or uncovered else None, as_of=cutoff)
    else:
        create_lineage_views(con)
    allowed = ", ".join(_sql_str(d) for d in allowed_dirs)
    con.execute(f"SET allowed_directories=[{allowed}]")
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")
    return con


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but SELECT-like statements (SELECT, WITH, DESCRIBE, SHOW, ...).

    Raises:
        QueryError: the SQL does not parse, or is empty.
        ReadOnlyQueryError: a statement would write, attach, load, call or configure.
    """
    import duckdb

    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"SQL does not parse: {_first_line(exc)}") from None
    if not statements:
        raise QueryError("no SQL statement given; try: SELECT * FROM artifacts")
    for statement in statements:
        kind = statement.type
        text = statement.query.strip()
        if kind in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
            continue
        if kind == duckdb.StatementType.PRAGMA:
            name = text.split(None, 1)[1] if len(text.split(None, 1)) > 1 else ""
            if name.split("(")[0].split("=")[0].strip().lower() in _ALLOWED_PRAGMAS:
                continue
        verb = text.split(None, 1)[0].upper() if text else str(kind)
        raise ReadOnlyQueryError(
            f"{verb} is not allowed: ledger queries are read-only (SELECT, WITH, DESCRIBE, SHOW, "
            f"EXPLAIN, SUMMARIZE, PRAGMA table_info)"
        )


def run_query(ledger: Ledger, sql: str, *, as_of: str | None = None) -> pa.Table:
    """Run read-only ``sql`` over the ledger's views and return an Arrow table.

    Raises:
        ReadOnlyQueryError: the statement is not SELECT-like.
        QueryError: the SQL does not parse, bind or run.
    """
    import duckdb

    con = connect(ledger, as_of=as_of)
    try:
        check_read_only(con, sql)
        try:
            return con.sql(sql).to_arrow_table()
        except duckdb.PermissionException as exc:
            raise ReadOnlyQueryError(f"query refused: {_first_line(exc)}") from None
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {_first_line(exc)}") from None
    finally:
        con.close()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
