"""Rendering of tabular results for every CLI command: table, csv, json, jsonl, parquet."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from scalable.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["FORMATS", "format_option", "render_batches", "render_rows", "render_table"]

FORMATS = ("table", "csv", "json", "jsonl")


F = TypeVar("F", bound=Callable[..., Any])


def format_option(*extra: str, default: str = "table") -> Callable[[F], F]:
    """The ``--format`` option shared by every command that prints data."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice([*FORMATS, *extra]),
        default=default,
        show_default=True,
        help="Output format.",
    )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def render_rows(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    fmt: str,
    out: TextIO | None = None,
    *,
    header: bool = True,
) -> None:
    """Print ``rows`` (mappings of ``columns``) in ``fmt`` to ``out`` (stdout by default).

    ``header=False`` prints rows only (csv and table), for output that grows while followed.
    """
    out = out or sys.stdout
    if fmt == "json":
        json.dump(list(rows), out, ensure_ascii=False, default=str)
        out.write("\n")
    elif fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        out.flush()
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        if header:
            writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
    elif not header:
        for row in rows:
            out.write("  ".join(_cell(row.get(c)) for c in columns).rstrip() + "\n")
    else:
        cells = [[_cell(row.get(c)) for c in columns] for row in rows]
        widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
        buf = io.StringIO()
        buf.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
        buf.write("  ".join("-" * w for w in widths) + "\n")
        for r in cells:
            buf.write("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n")
        if not cells:
            buf.write("(no rows)\n")
        out.write(buf.getvalue())


def render_table(table: pa.Table, fmt: str, output: str | None = None) -> None:
    """Print an Arrow table in ``fmt``; ``parquet`` needs ``output`` (a file path).

    Raises:
        ConfigError: ``parquet`` without ``--output``, or an output path that cannot be written.
    """
    if fmt == "parquet":
        if not output:
            raise ConfigError("--format parquet needs --output FILE")
        import pyarrow.parquet as pq

        try:
            pq.write_table(table, output, compression="zstd")
        except OSError as exc:
            raise ConfigError(f"cannot write {output!r}: {exc.strerror or exc}") from None
        return
    rows = table.to_pylist()
    if output:
        try:
            with Path(output).open("w", encoding="utf-8", newline="") as fh:
                render_rows(rows, table.column_names, fmt, fh)
        except OSError as exc:
            raise ConfigError(f"cannot write {output!r}: {exc.strerror or exc}") from None
    else:
        render_rows(rows, table.column_names, fmt)


def render_batches(reader: pa.RecordBatchReader, fmt: str, output: str | None = None) -> None:
    """Print a stream of record batches in ``fmt``, one batch at a time (``table`` reads them all first).

    csv, json, jsonl and parquet never hold more than one batch, so a result of any size
    streams to stdout or ``output`` in bounded memory.

    Raises:
        ConfigError: ``parquet`` without ``--output``, or an output path that cannot be written.
    """
    if fmt == "table":
        render_table(reader.read_all(), fmt, output)
        return
    if fmt == "parquet":
        if not output:
            raise ConfigError("--format parquet needs --output FILE")
        import pyarrow.parquet as pq

        try:
            with pq.ParquetWriter(output, reader.schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_batch(batch)
        except OSError as exc:
            raise ConfigError(f"cannot write {output!r}: {exc.strerror or exc}") from None
        return
    with _opened(output) as out:
        columns = reader.schema.names
        first = True
        if fmt == "json":
            out.write("[")
        for batch in reader:
            rows = batch.to_pylist()
            if fmt == "json":
                for row in rows:
                    out.write(("" if first else ", ") + json.dumps(row, ensure_ascii=False, default=str))
                    first = False
            else:
                render_rows(rows, columns, fmt, out, header=first)
                first = False
        if fmt == "json":
            out.write("]\n")
        elif fmt == "csv" and first:
            render_rows([], columns, fmt, out)


@contextmanager
def _opened(output: str | None) -> Iterator[TextIO]:
    if not output:
        yield sys.stdout
        return
    try:
        with Path(output).open("w", encoding="utf-8", newline="") as fh:
            yield fh
    except OSError as exc:
        raise ConfigError(f"cannot write {output!r}: {exc.strerror or exc}") from None
