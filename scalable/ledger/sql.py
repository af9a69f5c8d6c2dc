"""SQL shared by the ledger's readers and writers: quoting, file lists, the connection factory.

Everything that talks to DuckDB goes through here: string and list literals, file lists whose
names are not taken for glob patterns, the one connection factory (with the one memory limit
of compaction), the one set of Parquet ``COPY`` options, and the two SELECTs of events typed
by the schema of :mod:`scalable.ledger.events` (from JSON lines and from Parquet).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from scalable.ledger.events import COLUMNS, duckdb_columns

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "MEMORY_LIMIT_MB",
    "ROW_GROUP_SIZE",
    "connect",
    "escape_glob",
    "file_list",
    "jsonl_select",
    "line_digest_sql",
    "line_sql",
    "os_error_of",
    "parquet_copy_options",
    "parquet_select",
    "quote",
    "quote_list",
]

#: The memory budget of a compaction, in MiB: DuckDB spills to disk beyond it.
MEMORY_LIMIT_MB: Final = 384
#: Rows per row group of the compacted event files.
ROW_GROUP_SIZE: Final = 65536
_REQUIRED: Final = [c.name for c in COLUMNS if not c.nullable and c.name != "schema_version"]
_GLOB_CHARS: Final = str.maketrans({"[": "[[]", "*": "[*]", "?": "[?]"})


def quote(value: str) -> str:
    """Return ``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def quote_list(values: Iterable[str]) -> str:
    """Return ``values`` as a SQL list literal of strings."""
    return "[" + ", ".join(quote(v) for v in values) + "]"


def escape_glob(path: str) -> str:
    """Return ``path`` with ``[``, ``*`` and ``?`` bracketed, so DuckDB reads that one file.

    DuckDB expands every file name it is given as a glob pattern: unescaped, a directory
    named ``runs[1]`` would read ``runs1`` instead, and ``a*`` every sibling it matches.
    """
    return path.translate(_GLOB_CHARS)


def file_list(paths: Iterable[str]) -> str:
    """Return a SQL list literal naming exactly the files ``paths`` (no glob expansion)."""
    return quote_list(escape_glob(p) for p in paths)


def os_error_of(exc: BaseException) -> OSError | None:
    """The ``OSError`` a DuckDB I/O error stands for when a disk filled up (or a size limit hit), else None.

    DuckDB reports the system's reason in its message only; the errno is found from it, so
    one mapping (:func:`scalable.errors.os_error`) serves DuckDB's writes as well.
    """
    text = str(exc)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        if os.strerror(code) in text:
            return OSError(code, os.strerror(code))
    return None


def parquet_copy_options(*, partition_by_date: bool = False, row_group_size: int | None = None) -> str:
    """Return the options of every Parquet ``COPY`` of the ledger (zstd, level 1).

    Args:
        partition_by_date: write one file per value of the ``date`` column, named
            ``date=<value>/part-<uuid>.parquet``.
        row_group_size: rows per row group (DuckDB's default when None).
    """
    options = ["FORMAT parquet", "COMPRESSION zstd", "COMPRESSION_LEVEL 1"]
    if partition_by_date:
        options += ["PARTITION_BY (date)", "FILENAME_PATTERN 'part-{uuid}'"]
    if row_group_size is not None:
        options.append(f"ROW_GROUP_SIZE {row_group_size}")
    return "(" + ", ".join(options) + ")"


def connect(
    *,
    threads: int | None = None,
    spill_dir: Path | None = None,
    memory_mb: int | None = None,
    filesystem: Any = None,
) -> duckdb.DuckDBPyConnection:
    """Return an in-memory DuckDB connection: the one factory of the ledger.

    Args:
        threads: worker threads (the number of cores when None).
        spill_dir: bound memory and spill to this directory (compaction): the limit is
            ``memory_mb``, or :data:`MEMORY_LIMIT_MB`. Without it DuckDB's own default applies
            (queries).
        memory_mb: this connection's share of :data:`MEMORY_LIMIT_MB` (with ``spill_dir``).
        filesystem: an fsspec filesystem DuckDB reads and writes through (object storage).
    """
    import duckdb

    con = duckdb.connect(":memory:", config={"threads": threads or os.cpu_count() or 1})
    con.execute("SET enable_progress_bar=false")  # a library prints nothing of its own
    if filesystem is not None:
        con.register_filesystem(filesystem)
    if spill_dir is not None:
        con.execute(f"SET memory_limit='{memory_mb or MEMORY_LIMIT_MB}MB'")
        con.execute(f"SET temp_directory={quote(str(spill_dir))}")
        con.execute("SET preserve_insertion_order=true")
    return con


def jsonl_select(files: Sequence[str], *, retired_before: str | None = None) -> str:
    """SQL selecting the good lines of the given JSON-lines files, typed by the schema.

    A malformed or torn line becomes a row of NULLs, which the required columns filter out, so
    a bad line never fails a query. Events older than the retention cutoff are left out (they
    were retired from the dataset), except the tombstones themselves.
    """
    columns = "{" + ", ".join(f"{quote(n)}: {quote(t)}" for n, t in duckdb_columns().items()) + "}"
    names = ", ".join(
        "coalesce(schema_version, 1) AS schema_version" if n == "schema_version" else n for n in duckdb_columns()
    )
    where = " AND ".join(f"{c} IS NOT NULL" for c in _REQUIRED)
    if retired_before:
        where += f" AND timestamp >= {quote(retired_before)}"
    return (
        f"SELECT {names} FROM read_json({file_list(files)}, format='newline_delimited', columns={columns}, "
        f"ignore_errors=true, maximum_object_size=16777216) WHERE {where}"
    )


def line_sql() -> str:
    """SQL of an event's JSON line (without its newline) from its columns, as the ledger writes it.

    Keys sorted, null columns left out, compact (see :mod:`scalable.ledger.events`). The text
    equals the ledger's for every value it writes except strings with control characters other
    than tab, newline and the like (DuckDB escapes them in upper-case hex); whoever compares
    these lines with written ones re-encodes those that differ exactly, in Python, before
    deciding.
    """
    parts = []
    for column in sorted(COLUMNS, key=lambda c: c.name):
        name = column.name
        if column.type in ("int64", "int32"):
            value = f"CAST({name} AS VARCHAR)"
        elif column.type == "bool":
            value = f"CASE WHEN {name} THEN 'true' ELSE 'false' END"
        elif column.type == "float64":
            # The ledger writes the shortest round-trip digits, in decimal from 1e-5 up to 1e16
            # and with an exponent (no leading zeros) beyond.
            value = (
                f"CASE WHEN {name} = 0 OR (abs({name}) >= 1e-5 AND abs({name}) < 1e16) "
                f"THEN CAST(to_json({name}) AS VARCHAR) "
                f"ELSE regexp_replace(CAST({name} AS VARCHAR), 'e([+-])0*([0-9])', 'e\\1\\2') END"
            )
        else:
            value = f"CAST(to_json({name}) AS VARCHAR)"
        parts.append(f"CASE WHEN {name} IS NULL THEN NULL ELSE {quote(chr(34) + name + chr(34) + ':')} || {value} END")
    return "'{' || concat_ws(',', " + ", ".join(parts) + ") || '}'"


def line_digest_sql(digest: str) -> tuple[str, str]:
    """SQL of the first two 64-bit words of a hex SHA-256 ``digest`` (an SQL expression), as unsigned integers.

    Summed per run they give a digest of a set of lines that does not depend on their order
    (see :class:`scalable.ledger.audit.Tally`).
    """
    return f"('0x' || substr({digest}, 1, 16))::UBIGINT", f"('0x' || substr({digest}, 17, 16))::UBIGINT"


def parquet_select(files: Sequence[str]) -> str:
    """SQL selecting every event of the given Parquet files, in schema column order."""
    names = ", ".join(duckdb_columns())
    return f"SELECT {names} FROM read_parquet({file_list(files)}, hive_partitioning=false)"
