"""Rendering of tabular results for every CLI command: table, csv, json, jsonl, parquet."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from scalable.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "FORMATS",
    "SHORT",
    "Progress",
    "format_option",
    "progress_for",
    "progress_option",
    "render_batches",
    "render_rows",
    "render_table",
]

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


#: Characters of a digest a table shows (enough for ``scalable ledger lineage`` to find it).
SHORT = 16
_DIGEST = re.compile(r"[0-9a-f]{64}")


class Progress:
    """Progress of long work on stderr, phase by phase: ``progress(phase, done, total)``.

    On a terminal one line per phase is redrawn in place; elsewhere (with ``--progress`` into
    a file or pipe) a line is written at every tenth of a phase, so logs stay short.

    Args:
        labels: what each phase is called on screen (a phase without a label shows its name).
        out: where to write (stderr by default).
    """

    def __init__(self, labels: Mapping[str, str] | None = None, out: TextIO | None = None) -> None:
        self.labels = dict(labels or {})
        self.out = out or sys.stderr
        self._tty = self.out.isatty()
        self._phase: str | None = None
        self._shown = -1

    def __call__(self, phase: str, done: int, total: int) -> None:
        if phase != self._phase:
            self.close()
            self._phase, self._shown = phase, -1
        percent = 100 if total <= 0 else min(100, done * 100 // total)
        step = percent if self._tty else percent - percent % 10
        if step == self._shown:
            return
        self._shown = step
        text = f"{self.labels.get(phase, phase)}: {percent:3d}% ({done}/{total})"
        self.out.write(f"\r{text}" if self._tty else text + "\n")
        self.out.flush()

    def close(self) -> None:
        """End the current phase's line (on a terminal)."""
        if self._tty and self._phase is not None and self._shown >= 0:
            self.out.write("\n")
            self.out.flush()
        self._phase = None


def progress_option(what: str) -> Callable[[F], F]:
    """The ``--progress/--no-progress`` option: progress on stderr, by default only on a terminal."""
    return click.option(
        "--progress/--no-progress",
        "show_progress",
        default=None,
        help=f"Report the progress of {what} on stderr (default: only when stderr is a terminal).",
    )


def progress_for(show: bool | None, labels: Mapping[str, str] | None = None) -> Progress | None:
    """A :class:`Progress` when ``show`` (``None``: when stderr is a terminal), else ``None``."""
    if show is None:
        show = sys.stderr.isatty()
    return Progress(labels) if show else None


def _table_cell(value: Any) -> str:
    """A cell of a table: as in csv, but a SHA-256 digest cut to :data:`SHORT` characters."""
    if isinstance(value, str) and _DIGEST.fullmatch(value):
        return value[:SHORT]
    return _cell(value)


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
    A table shows the first :data:`SHORT` characters of each SHA-256 digest; machine formats
    (csv, json, jsonl) keep every value whole.
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
            out.write("  ".join(_table_cell(row.get(c)) for c in columns).rstrip() + "\n")
    else:
        cells = [[_table_cell(row.get(c)) for c in columns] for row in rows]
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
