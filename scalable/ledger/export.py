"""Output formats: one registry of lineage renderings and exports of the whole ledger.

An :class:`OutputFormat` has a name, a description and one or both of:

* ``render``: a lineage graph as text. Every such format is available to
  :meth:`LineageGraph.render <scalable.ledger.lineage.LineageGraph.render>` and to
  ``scalable ledger lineage --format NAME``.
* ``export``: the whole ledger written to a file, returning a one-line summary; it is called
  with the ledger, the file and a progress callback (or ``None``) it calls with
  ``(done, total)`` as it goes. Every such format is an option ``--NAME FILE`` of
  ``scalable ledger export``.

Built in: ``tree``, ``dot``, ``json`` (renderings), ``prov`` (W3C PROV-JSON) and
``openlineage`` (OpenLineage RunEvents, one a line) (both), ``sqlite`` (events, artifacts,
runs and lineage for Datasette; export only). Add one with :func:`register_format`; a
rendering becomes an export as well with :func:`rendered_export`.

Each export is derived from events alone, so rebuilding it from the streams gives the same
file as any earlier export of the same events.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from scalable.errors import ConfigError
from scalable.ledger.views import connect

if TYPE_CHECKING:
    from scalable.ledger.lineage import LineageGraph
    from scalable.ledger.log import Ledger

__all__ = [
    "ExportProgress",
    "Exporter",
    "OutputFormat",
    "Renderer",
    "export_formats",
    "export_openlineage",
    "export_prov",
    "export_sqlite",
    "get_format",
    "lineage_formats",
    "register_format",
    "render_lineage",
    "rendered_export",
    "unregister_format",
]

#: Renders a lineage graph as text (ending in a newline unless empty).
Renderer = Callable[["LineageGraph"], str]
#: Called by an export as it goes with ``(done, total)``, from 0 to ``total``.
ExportProgress = Callable[[int, int], None]
#: Writes the whole ledger to a file and returns a one-line summary of what it wrote; reports
#: its progress to the callback when one is given.
Exporter = Callable[["Ledger", str, "ExportProgress | None"], str]


@dataclass(frozen=True, slots=True)
class OutputFormat:
    """A named output format: a lineage rendering, a whole-ledger export, or both.

    Attributes:
        name: lowercase letters, digits and ``-``; the value of ``--format`` and the export
            option ``--NAME``.
        description: one sentence, the help of the export option.
        render: the lineage rendering, if any.
        export: the whole-ledger export, if any.
    """

    name: str
    description: str
    render: Renderer | None = None
    export: Exporter | None = None


_NAME: Final = re.compile(r"[a-z][a-z0-9-]*")
#: Names the export command's own options take.
_RESERVED: Final = frozenset({"help", "format", "progress", "no-progress"})
_formats: dict[str, OutputFormat] = {}


def register_format(fmt: OutputFormat, *, replace: bool = False) -> None:
    """Add ``fmt`` to the registry (after the formats already there).

    Raises:
        ConfigError: the name is not valid or already taken (unless ``replace``), or the
            format neither renders nor exports.
    """
    if not _NAME.fullmatch(fmt.name) or fmt.name in _RESERVED:
        raise ConfigError(
            f"format name {fmt.name!r} is not valid: use lowercase letters, digits and '-' "
            f"(not {', '.join(sorted(_RESERVED))}: options of the export command)"
        )
    if fmt.render is None and fmt.export is None:
        raise ConfigError(f"format {fmt.name!r} has neither a rendering nor an export")
    if fmt.name in _formats and not replace:
        raise ConfigError(f"format {fmt.name!r} is registered already; pass replace=True to replace it")
    _formats[fmt.name] = fmt


def unregister_format(name: str) -> None:
    """Remove the format ``name`` from the registry (nothing happens if it is not there)."""
    _formats.pop(name, None)


def get_format(name: str) -> OutputFormat:
    """Return the registered format ``name``.

    Raises:
        ConfigError: no format of that name is registered.
    """
    try:
        return _formats[name]
    except KeyError:
        raise ConfigError(f"unknown output format {name!r}; known formats: {', '.join(_formats)}") from None


def lineage_formats() -> list[str]:
    """Names of the formats that render a lineage graph, in registration order."""
    return [f.name for f in _formats.values() if f.render is not None]


def export_formats() -> list[OutputFormat]:
    """The formats that export the whole ledger, in registration order."""
    return [f for f in _formats.values() if f.export is not None]


def render_lineage(graph: LineageGraph, fmt: str) -> str:
    """Render ``graph`` in the lineage format ``fmt``.

    Raises:
        ConfigError: ``fmt`` is unknown or does not render lineage.
    """
    render = get_format(fmt).render
    if render is None:
        raise ConfigError(f"format {fmt!r} does not render lineage; use one of {', '.join(lineage_formats())}")
    return render(graph)


def rendered_export(render: Renderer) -> Exporter:
    """Return an export that writes ``render`` of the whole ledger's lineage to the file."""

    def export(ledger: Ledger, path: str, progress: ExportProgress | None = None) -> str:
        _write_rendered(ledger, path, render, progress)
        return f"wrote {path}"

    return export


def _steps(progress: ExportProgress | None, total: int) -> Callable[[int], None]:
    """A function reporting step ``n`` of ``total`` to ``progress`` (doing nothing without one)."""
    if progress is None:
        return lambda _n: None
    return lambda n: progress(n, total)


def _write_rendered(
    ledger: Ledger, path: str | os.PathLike[str], render: Callable[[LineageGraph], str], progress: ExportProgress | None
) -> None:
    """Write ``render`` of the whole ledger's lineage to ``path``, reporting its three steps."""
    out = _target(path)
    step = _steps(progress, 3)
    step(0)
    graph = ledger.lineage(None)
    step(1)
    text = render(graph)
    step(2)
    out.write_text(text)
    step(3)


def _target(path: str | os.PathLike[str]) -> Path:
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"export target {str(out)!r} is a directory; give a file name")
    if not out.parent.exists():
        raise ConfigError(f"directory of export target {str(out)!r} does not exist")
    return out


# --- SQLite ---------------------------------------------------------------------------------

_SQLITE_TABLES: Final = {
    "events": "SELECT * FROM events ORDER BY timestamp, event_id",
    "artifacts": "SELECT * FROM artifacts ORDER BY timestamp, event_id",
    "runs": "SELECT * FROM runs ORDER BY started_at, run_id",
    "lineage": "SELECT DISTINCT src, dst, relation, run_id, task_name, timestamp FROM lineage ORDER BY timestamp, src, dst, relation",
}
_INDEXES: Final = {
    "events": [["run_id"], ["event_type", "op"], ["digest"], ["timestamp"]],
    "artifacts": [["run_id"], ["digest"], ["location"]],
    "runs": [["project"], ["status"]],
    "lineage": [["src"], ["dst"], ["run_id"]],
}
_FTS: Final = {"artifacts": ["artifact_name", "location", "key"], "runs": ["run_id", "project"]}
#: Rows read from DuckDB and written to SQLite at once (one progress report each).
_SQLITE_BATCH: Final = 5000


def _sqlite_type(duck_type: Any) -> type:
    name = str(duck_type).upper()
    if name in ("BIGINT", "INTEGER", "BOOLEAN", "HUGEINT", "SMALLINT"):
        return int
    if name in ("DOUBLE", "FLOAT"):
        return float
    return str


def export_sqlite(
    ledger: Ledger, path: str | os.PathLike[str], progress: ExportProgress | None = None
) -> dict[str, int]:
    """Write events, artifacts, runs and lineage to a SQLite file, with indexes and FTS.

    The file is rebuilt from scratch (written to a temporary name, then renamed), so it opens
    in Datasette as is: ``datasette FILE``.

    Args:
        ledger: the ledger.
        path: the SQLite file.
        progress: called with ``(rows written, rows in all)`` after each batch of rows.

    Returns:
        Row counts per table.

    Raises:
        ConfigError: ``path`` is a directory or its directory does not exist.
    """
    import sqlite_utils

    out = _target(path)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    con = connect(ledger, trusted=True)
    counts: dict[str, int] = {}
    try:
        total = 0
        for sql in _SQLITE_TABLES.values():
            counted = con.execute(f"SELECT count(*) FROM ({sql})").fetchone()
            total += int(counted[0]) if counted else 0
        done = 0
        if progress is not None:
            progress(0, total)
        db = sqlite_utils.Database(tmp)
        for table, sql in _SQLITE_TABLES.items():
            result = con.execute(sql)
            columns = [d[0] for d in result.description or []]
            types = {c: _sqlite_type(d[1]) for c, d in zip(columns, result.description or [], strict=True)}
            target = db.table(table)
            target.create(types, pk="event_id" if "event_id" in columns else None, if_not_exists=True)
            counts[table] = 0
            while batch := result.fetchmany(_SQLITE_BATCH):
                rows = [
                    {c: (json.dumps(v) if isinstance(v, list) else v) for c, v in zip(columns, row, strict=True)}
                    for row in batch
                ]
                target.insert_all(rows, batch_size=1000)
                counts[table] += len(rows)
                done += len(rows)
                if progress is not None:
                    progress(min(done, total), total)
            for cols in _INDEXES[table]:
                target.create_index(cols, if_not_exists=True)
            if table in _FTS:
                target.enable_fts(_FTS[table], create_triggers=True)
        db.close()
        os.replace(tmp, out)
    finally:
        con.close()
        tmp.unlink(missing_ok=True)
    return counts


# --- W3C PROV and OpenLineage -----------------------------------------------------------------


def _prov_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _openlineage_lines(events: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(event, sort_keys=True) + "\n" for event in events)


def export_prov(ledger: Ledger, path: str | os.PathLike[str], progress: ExportProgress | None = None) -> dict[str, Any]:
    """Write the whole ledger's lineage as W3C PROV-JSON; returns the document."""
    out = _target(path)
    step = _steps(progress, 3)
    step(0)
    doc = ledger.lineage(None).to_prov()
    step(1)
    text = _prov_json(doc)
    step(2)
    out.write_text(text)
    step(3)
    return doc


def export_openlineage(
    ledger: Ledger, path: str | os.PathLike[str], progress: ExportProgress | None = None
) -> list[dict[str, Any]]:
    """Write one START and one COMPLETE/FAIL RunEvent per run as JSON lines; returns them."""
    out = _target(path)
    step = _steps(progress, 3)
    step(0)
    events = ledger.lineage(None).to_openlineage()
    step(1)
    text = _openlineage_lines(events)
    step(2)
    out.write_text(text)
    step(3)
    return events


def _tree_text(graph: LineageGraph) -> str:
    if graph.direction == "both":
        # Ancestors, then descendants below the same root line.
        return graph.to_tree("up") + graph.to_tree("down").split("\n", 1)[1]
    return graph.to_tree(graph.direction)


def _summarize_sqlite(ledger: Ledger, path: str, progress: ExportProgress | None = None) -> str:
    counts = export_sqlite(ledger, path, progress)
    return f"wrote {path}: " + ", ".join(f"{n} {t}" for t, n in counts.items())


def _summarize_prov(ledger: Ledger, path: str, progress: ExportProgress | None = None) -> str:
    doc = export_prov(ledger, path, progress)
    return f"wrote {path}: {len(doc.get('entity', {}))} entities, {len(doc.get('activity', {}))} activities"


def _summarize_openlineage(ledger: Ledger, path: str, progress: ExportProgress | None = None) -> str:
    return f"wrote {path}: {len(export_openlineage(ledger, path, progress))} run events"


for _builtin in (
    OutputFormat("sqlite", "Write a SQLite database (for Datasette).", export=_summarize_sqlite),
    OutputFormat("tree", "An indented text tree from the node.", render=_tree_text),
    OutputFormat("dot", "Graphviz DOT.", render=lambda graph: graph.to_dot()),
    OutputFormat("json", "The nodes and edges as JSON.", render=lambda graph: graph.to_json() + "\n"),
    OutputFormat(
        "prov", "Write W3C PROV-JSON.", render=lambda graph: _prov_json(graph.to_prov()), export=_summarize_prov
    ),
    OutputFormat(
        "openlineage",
        "Write OpenLineage RunEvents as JSON lines.",
        render=lambda graph: _openlineage_lines(graph.to_openlineage()),
        export=_summarize_openlineage,
    ),
):
    register_format(_builtin)
