"""The read-only query path: statements checked by DuckDB's own parser, a locked connection.

Only SELECT-like statements run (:func:`check_read_only`), and once the views exist the
connection may read nothing outside the ledger's own directories and its configuration is
locked (:func:`lock`). :func:`run_read_only` puts both together for one user query.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from scalable.errors import QueryError, ReadOnlyQueryError
from scalable.ledger.sql import escape_glob, quote

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

__all__ = ["check_read_only", "lock", "run_read_only"]

_ALLOWED_PRAGMAS: Final = ("table_info", "show_tables", "show_tables_expanded", "database_size", "version")


def lock(con: duckdb.DuckDBPyConnection, allowed_dirs: Iterable[str]) -> None:
    """Let ``con`` read only under ``allowed_dirs`` (prefixes ending in ``/``) and lock its configuration.

    DuckDB checks the file names it is given, which the views escape
    (:func:`~scalable.ledger.sql.escape_glob`): each directory is allowed as it is and escaped.
    """
    allowed = dict.fromkeys(d for given in allowed_dirs for d in (given, escape_glob(given)))
    con.execute(f"SET allowed_directories=[{', '.join(quote(d) for d in allowed)}]")
    con.execute("SET enable_external_access=false")
    con.execute("SET lock_configuration=true")


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


def run_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """Check ``sql`` and run it on the locked connection ``con``; return an Arrow table.

    Raises:
        ReadOnlyQueryError: the statement is not SELECT-like, or touches what it may not.
        QueryError: the SQL does not parse, bind or run.
    """
    import duckdb

    check_read_only(con, sql)
    try:
        return con.sql(sql).to_arrow_table()
    except duckdb.PermissionException as exc:
        raise ReadOnlyQueryError(f"query refused: {_first_line(exc)}") from None
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
