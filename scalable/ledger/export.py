"""Output formats: one registry of lineage renderings and exports of the whole ledger.

An :class:`OutputFormat` has a name, a description and one or both of:

* ``render``: a lineage graph as text. Every such format is available to
  :meth:`LineageGraph.render <scalable.ledger.lineage.LineageGraph.render>` and to
  ``scalable ledger lineage --format NAME``.
* ``export``: the whole ledger written to a file, returning a one-line summary; it is called
  with the ledger, the file and a progress callback (or ``None``) it calls with
  ``(done, total)`` as it goes. Every such format is an option ``--NAME FILE`` of
  ``scalable ledger export``.

Built in: ``tree``, ``json``, ``dot``, ``mermaid`` (renderings), ``prov`` (W3C PROV-JSON) and
``openlineage`` (OpenLineage RunEvents, one a line) (both), ``sqlite`` (events, artifacts,
runs, lineage and its context for Datasette; export only). Add one with :func:`register_format`; a
rendering becomes an export as well with :func:`rendered_export`.

Each export is derived from events alone, so rebuilding it from the streams gives the same
file as any earlier export of the same events.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlsplit

from scalable.errors import ConfigError
from scalable.ledger.views import connect
from scalable.uris import uri_to_path

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
    "graph_dot",
    "graph_json",
    "graph_mermaid",
    "graph_tree",
    "lineage_formats",
    "openlineage_events",
    "prov_document",
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
    "lineage": "SELECT DISTINCT src, dst, relation, run_id, task_name, task_id, timestamp FROM lineage "
    "ORDER BY timestamp, src, dst, relation, run_id, task_id",
    "lineage_context": "SELECT DISTINCT src, dst, relation, run_id, task_name, task_id, timestamp FROM lineage_context "
    "ORDER BY timestamp, src, dst, relation, run_id, task_id",
}
_INDEXES: Final = {
    "events": [["run_id"], ["event_type", "op"], ["digest"], ["timestamp"]],
    "artifacts": [["run_id"], ["digest"], ["location"]],
    "runs": [["project"], ["status"]],
    "lineage": [["src"], ["dst"], ["run_id"]],
    "lineage_context": [["src"], ["dst"], ["run_id"]],
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


# --- renderings of a lineage graph -------------------------------------------------------------

_PRODUCER: Final = "https://pypi.org/project/scalable/"
_OL_SCHEMA: Final = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
_OL_ERROR_FACET: Final = (
    "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet"
)
_OL_VERSION_FACET: Final = (
    "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet"
)
_OL_PARENT_FACET: Final = "https://openlineage.io/spec/facets/1-1-0/ParentRunFacet.json#/$defs/ParentRunFacet"
_RUNS_SHOWN: Final = 2  # run ids a tree line names before "+N"


def _far(edge: dict[str, Any]) -> str:
    """The end of an edge its walk reached (a run's own edge reaches its artifact)."""
    if edge["relation"] == "generated":
        return str(edge["dst"])
    if edge["relation"] == "used":
        return str(edge["src"])
    return str(edge["src"] if edge["direction"] == "up" else edge["dst"])


def _near(edge: dict[str, Any]) -> str:
    far = _far(edge)
    return str(edge["dst"] if far == edge["src"] else edge["src"])


def _runs_note(info: dict[str, Any]) -> str:
    """``  [run-a +2]``: the runs that generated a node, else those that used it."""
    if info.get("kind") == "run":
        return ""
    made, used = info.get("generated_by") or [], info.get("used_by") or []
    runs, verb = (made, "") if made else (used, "used in ")
    if not runs:
        return ""
    more = f" +{len(runs) - _RUNS_SHOWN}" if len(runs) > _RUNS_SHOWN else ""
    return f"  [{verb}{', '.join(runs[:_RUNS_SHOWN])}{more}]"


def _elided_note(graph: LineageGraph) -> str:
    if not graph.elided:
        return ""
    return (
        f"... {graph.elided['nodes']} more node(s) and {graph.elided['edges']} more edge(s) not shown "
        "(raise --max-nodes to see them)\n"
    )


def graph_tree(graph: LineageGraph, direction: str = "up") -> str:
    """An indented text tree from the root: what it came from (``up``) or what came of it (``down``).

    Each node is expanded once, so every edge is printed once and the tree grows with the
    graph, not with the number of paths through it; a node met again is marked ``(see
    above)``, and the root met again (a true cycle of the data) ``(cycle)``, never expanded
    as its own ancestor.
    """
    if graph.root is None:
        return "".join(
            f"{graph.label(e['src'])} --{e['relation']}--> {graph.label(e['dst'])}\n" for e in graph.edges
        ) + _elided_note(graph)
    children: dict[str, list[tuple[str, str]]] = {}
    for e in graph.edges:
        if e["direction"] == direction:
            children.setdefault(_near(e), []).append((e["relation"], _far(e)))
    out = [graph.label(graph.root) + _runs_note(graph.nodes.get(graph.root, {}))]
    seen = {graph.root}

    def walk(node: str, prefix: str) -> None:
        items = sorted(set(children.get(node, [])), key=lambda item: (item[0], graph.label(item[1]), item[1]))
        for i, (relation, child) in enumerate(items):
            last = i == len(items) - 1
            mark = " (cycle)" if child == graph.root else " (see above)" if child in seen else ""
            line = f"{prefix}{'└── ' if last else '├── '}{relation}: {graph.label(child)}"
            out.append(line + (mark or _runs_note(graph.nodes.get(child, {}))))
            if not mark:
                seen.add(child)
                walk(child, prefix + ("    " if last else "│   "))

    walk(graph.root, "")
    return "\n".join(out) + "\n" + _elided_note(graph)


def graph_json(graph: LineageGraph) -> str:
    """The graph as JSON: ``root``, ``direction``, ``nodes`` (each with ``id`` and ``label``),
    ``edges`` (walked, with ``depth``), ``context``, ``tasks`` and ``elided``."""
    nodes = [{"id": k, **v, "label": graph.label(k)} for k, v in sorted(graph.nodes.items())]
    doc = {
        "root": graph.root,
        "direction": graph.direction,
        "nodes": nodes,
        "edges": graph.edges,
        "context": graph.context,
        "tasks": [graph.tasks[k] for k in sorted(graph.tasks)],
        "elided": graph.elided,
    }
    return json.dumps(doc, default=str, indent=2)


def _shown_runs(graph: LineageGraph) -> list[dict[str, Any]]:
    """Context edges worth drawing: the runs that generated the graph's artifacts."""
    return [e for e in graph.context if e["relation"] == "generated" and e["dst"] in graph.nodes]


def graph_dot(graph: LineageGraph) -> str:
    """Graphviz DOT: artifacts as ellipses, runs as boxes; walked edges solid, a run's outputs dashed."""
    lines = ["digraph lineage {", "  rankdir=LR;"]
    context = _shown_runs(graph)
    shown = {e["src"] for e in graph.edges} | {e["dst"] for e in graph.edges} | {e["src"] for e in context}
    shown |= {graph.root} if graph.root is not None else set()
    for node in sorted(n for n in shown if n in graph.nodes):
        shape = "box" if graph.nodes[node].get("kind") == "run" else "ellipse"
        lines.append(f"  {json.dumps(node)} [label={json.dumps(graph.label(node))}, shape={shape}];")
    for e in sorted(graph.edges, key=lambda e: (e["src"], e["dst"], e["relation"])):
        lines.append(f"  {json.dumps(e['src'])} -> {json.dumps(e['dst'])} [label={json.dumps(e['relation'])}];")
    for src, dst in sorted({(e["src"], e["dst"]) for e in context}):
        lines.append(f'  {json.dumps(src)} -> {json.dumps(dst)} [label="generated", style=dashed];')
    if graph.elided:
        note = f"{graph.elided['nodes']} more nodes not shown"
        lines.append(f'  "..." [label={json.dumps(note)}, shape=note];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def graph_mermaid(graph: LineageGraph) -> str:
    """A Mermaid flowchart: artifacts as rounded nodes, runs as boxes; a run's outputs dashed."""
    context = _shown_runs(graph)
    shown = {e["src"] for e in graph.edges} | {e["dst"] for e in graph.edges} | {e["src"] for e in context}
    shown |= {graph.root} if graph.root is not None else set()
    ids = {node: f"n{i}" for i, node in enumerate(sorted(n for n in shown if n in graph.nodes))}
    lines = ["flowchart LR"]
    for node, nid in ids.items():
        text = _mermaid_text(graph.label(node))
        lines.append(f'  {nid}["{text}"]' if graph.nodes[node].get("kind") == "run" else f'  {nid}("{text}")')
    for e in sorted(graph.edges, key=lambda e: (e["src"], e["dst"], e["relation"])):
        lines.append(f"  {ids[e['src']]} -->|{e['relation']}| {ids[e['dst']]}")
    for src, dst in sorted({(e["src"], e["dst"]) for e in context}):
        lines.append(f"  {ids[src]} -.->|generated| {ids[dst]}")
    if graph.elided:
        lines.append(f'  more["{graph.elided["nodes"]} more nodes not shown"]')
    return "\n".join(lines) + "\n"


def _prov_quote(text: str) -> str:
    return quote(text, safe="-_.")


def _prov_entity(node: str) -> str:
    if len(node) == 64 and all(c in "0123456789abcdef" for c in node):
        return f"sha256:{node}"
    return f"uri:{_prov_quote(node)}"


def prov_document(graph: LineageGraph) -> dict[str, Any]:
    """The graph as W3C PROV-JSON.

    Artifacts are entities (``sha256:<digest>``); runs and tasks are activities with their
    start and end times, each associated with the run's session as a software agent; a task
    is informed by its run, and a run by each run whose data fed it (``wasInformedBy``).
    ``used`` and ``wasGeneratedBy`` name the task where there was one, else the run, with
    their times; data flow is ``wasDerivedFrom`` (inside a task, with that task as the
    activity).
    """
    doc: dict[str, dict[str, Any]] = {
        "prefix": {
            "scalable": "urn:scalable:",
            "run": "urn:scalable:run:",
            "task": "urn:scalable:task:",
            "agent": "urn:scalable:agent:",
            "sha256": "urn:sha256:",
            "uri": "urn:scalable:uri:",
        },
        "entity": {},
        "activity": {},
        "agent": {},
        "used": {},
        "wasGeneratedBy": {},
        "wasDerivedFrom": {},
        "wasAssociatedWith": {},
        "wasInformedBy": {},
    }
    runs = {n: i for n, i in graph.nodes.items() if i.get("kind") == "run"}

    def run_id(run: str) -> str:
        return f"run:{_prov_quote(run)}"

    def task_id(run: str, task: str | None) -> str:
        return f"task:{_prov_quote(run)}.{_prov_quote(task)}" if task is not None else run_id(run)

    def times(record: dict[str, Any], start: Any, end: Any) -> dict[str, Any]:
        if start:
            record["prov:startTime"] = start
        if end:
            record["prov:endTime"] = end
        return record

    n = 0

    def relation(kind: str, record: dict[str, Any]) -> None:
        nonlocal n
        n += 1
        doc[kind][f"_:{kind}{n}"] = record

    for node, info in sorted(graph.nodes.items()):
        if info.get("kind") == "run":
            continue
        entity: dict[str, Any] = {"prov:label": graph.label(node), "prov:type": "scalable:artifact"}
        if info.get("locations"):
            entity["prov:location"] = info["locations"][0]
        if info.get("size_bytes") is not None:
            entity["scalable:size_bytes"] = int(info["size_bytes"])
        doc["entity"][_prov_entity(node)] = entity
    for run, info in sorted(runs.items()):
        activity = times(
            {"prov:label": run, "prov:type": "scalable:run"}, info.get("started_at"), info.get("finished_at")
        )
        for key in ("project", "status"):
            if info.get(key):
                activity[f"scalable:{key}"] = info[key]
        doc["activity"][run_id(run)] = activity
        agent = f"agent:{_prov_quote(run)}"
        who = "@".join(filter(None, (info.get("user"), info.get("host"))))
        doc["agent"][agent] = {
            "prov:type": "prov:SoftwareAgent",
            "prov:label": f"scalable session of {run}" + (f" ({who})" if who else ""),
        }
        relation("wasAssociatedWith", {"prov:activity": run_id(run), "prov:agent": agent})
    for _key, task in sorted(graph.tasks.items()):
        run = task["run_id"]
        if run not in runs:
            continue
        activity = times(
            {"prov:label": task["task_name"] or task["task_id"], "prov:type": "scalable:task"},
            task.get("started_at"),
            task.get("ended_at"),
        )
        doc["activity"][task_id(run, task["task_id"])] = activity
        relation(
            "wasAssociatedWith",
            {"prov:activity": task_id(run, task["task_id"]), "prov:agent": f"agent:{_prov_quote(run)}"},
        )
        relation("wasInformedBy", {"prov:informed": task_id(run, task["task_id"]), "prov:informant": run_id(run)})
    ordered = sorted(
        [*graph.context, *graph.edges], key=lambda e: (e["timestamp"] or "", e["src"], e["dst"], e["relation"])
    )
    seen: set[tuple[Any, ...]] = set()
    informed: set[tuple[str, str]] = set()  # (informed run, informant run)
    for e in ordered:
        rel = e["relation"]
        mark = (e["src"], e["dst"], rel, e["run_id"], e["task_id"])
        if mark in seen:
            continue
        seen.add(mark)
        actor = task_id(e["run_id"], e["task_id"]) if e["run_id"] in runs else None
        if rel == "generated" and e["dst"] in graph.nodes and actor:
            made = {"prov:entity": _prov_entity(e["dst"]), "prov:activity": actor, "prov:time": e["timestamp"]}
            relation("wasGeneratedBy", made)
        elif rel == "used" and e["src"] in graph.nodes and actor:
            read = {"prov:activity": actor, "prov:entity": _prov_entity(e["src"]), "prov:time": e["timestamp"]}
            relation("used", read)
        elif rel in ("derived_from", "derived_in_task") and e["src"] in graph.nodes and e["dst"] in graph.nodes:
            derivation = {"prov:generatedEntity": _prov_entity(e["dst"]), "prov:usedEntity": _prov_entity(e["src"])}
            if actor and rel == "derived_in_task":
                derivation["prov:activity"] = actor
            relation("wasDerivedFrom", derivation)
        elif rel in ("reused", "informed") and e["src"] in runs and e["dst"] in runs:
            informed.add((e["dst"], e["src"]))
    informed |= {(e["dst"], e["src"]) for e in graph.runs_only().edges if e["src"] in runs and e["dst"] in runs}
    for later, earlier in sorted(informed):
        relation("wasInformedBy", {"prov:informed": run_id(later), "prov:informant": run_id(earlier)})
    return {k: v for k, v in doc.items() if v}


#: Where a run (or one of its tasks) put, recorded, fetched or used each version:
#: ``(run_id, task_id or None, "made" or "used", node)`` -> locations.
_Sites = dict[tuple[str, str | None, str, str], set[str]]


def _sites(graph: LineageGraph) -> _Sites:
    """The locations each run and task of ``graph`` generated or used each of its versions at.

    Read from the artifact events of the ledger the graph came from (at its ``as_of``); empty
    for a graph built by hand.
    """
    if graph.source is None:
        return {}
    from scalable.ledger.views import read_snapshot

    ledger, as_of = graph.source
    runs = sorted(n for n, info in graph.nodes.items() if info.get("kind") == "run")
    # The task key of the lineage edges (scalable.ledger.edges): the task id, else the task name.
    sql = (
        "SELECT run_id, CASE WHEN task_name IS NOT NULL "
        "THEN coalesce(json_extract_string(attrs, '$.task_id'), task_name) END, "
        "CASE WHEN op IN ('put', 'recorded') THEN 'made' ELSE 'used' END, coalesce(digest, location), location "
        "FROM events WHERE event_type = 'artifact' AND op IN ('put', 'recorded', 'get', 'used') "
        "AND location IS NOT NULL AND run_id IN (SELECT unnest($1::VARCHAR[]))"
    )

    def read(con: Any) -> _Sites:
        sites: _Sites = {}
        for run_id, task_id, role, node, location in con.execute(sql, [runs]).fetchall():
            for key in ((run_id, None, role, node), (run_id, task_id, role, node)):
                sites.setdefault(key, set()).add(location)
        return sites

    return read_snapshot(ledger, read, as_of=as_of, trusted=True) if runs else {}


def _datasets(graph: LineageGraph, node: str, where: set[str] | None) -> list[dict[str, Any]]:
    """The OpenLineage datasets of version ``node`` at ``where`` (the locations the run or task
    put or read it at), or, where no location is known, at the first location of the version."""
    if where:
        return [_dataset(graph, node, location) for location in sorted(where)]
    info = graph.nodes.get(node, {})
    return [_dataset(graph, node, (info.get("locations") or [node if "://" in node else ""])[0])]


def _dataset(graph: LineageGraph, node: str, location: str) -> dict[str, Any]:
    """An OpenLineage dataset: where the version lives (namespace and name) and its digest as version."""
    parts = urlsplit(location)
    if parts.scheme == "file":
        namespace, name = "file", str(uri_to_path(location))
    elif parts.scheme:
        namespace, name = f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/") or node
    else:
        namespace, name = "scalable", graph.label(node)
    facets: dict[str, Any] = {}
    if len(node) == 64:
        facets["version"] = {"_producer": _PRODUCER, "_schemaURL": _OL_VERSION_FACET, "datasetVersion": node}
    return {"namespace": namespace, "name": name, "facets": facets}


def openlineage_events(graph: LineageGraph) -> list[dict[str, Any]]:
    """OpenLineage RunEvents of the graph's runs and tasks, in time order.

    Per run: ``START`` at its start with what it used, then ``COMPLETE``, ``FAIL`` (with the
    standard ``errorMessage`` facet) or ``ABORT`` at its end with what it used and generated
    (a run still going gets ``RUNNING`` at its latest event instead). Per task, the same pair
    for the task's own job (``<project>.<task>``), with a ``parent`` facet naming the run.
    Datasets are the graph's artifacts at the locations the run or task put, recorded,
    fetched or used them (a version a run stored and recorded is two datasets), each with
    its digest as the ``version`` facet.
    """
    runs = {n: i for n, i in graph.nodes.items() if i.get("kind") == "run"}
    used: dict[tuple[str, str | None], set[str]] = {}
    made: dict[tuple[str, str | None], set[str]] = {}
    latest: dict[str, str] = {}
    for e in [*graph.context, *graph.edges]:
        if e["run_id"] in runs and e["timestamp"]:
            latest[e["run_id"]] = max(latest.get(e["run_id"], ""), e["timestamp"])
        if e["relation"] == "used" and e["src"] in graph.nodes and e["dst"] in runs:
            for key in ((e["dst"], None), (e["dst"], e["task_id"])):
                used.setdefault(key, set()).add(e["src"])
        elif e["relation"] == "generated" and e["dst"] in graph.nodes and e["src"] in runs:
            for key in ((e["src"], None), (e["src"], e["task_id"])):
                made.setdefault(key, set()).add(e["dst"])
    events: list[dict[str, Any]] = []
    sites = _sites(graph)

    def uuid_of(text: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:scalable:{text}"))

    def pair(
        key: tuple[str, str | None], job: str, run_facets: dict[str, Any], start: Any, end: Any, status: Any, error: Any
    ) -> None:
        run = {"runId": uuid_of(f"run:{key[0]}" if key[1] is None else f"task:{key[0]}/{key[1]}"), "facets": run_facets}
        base = {
            "run": run,
            "job": {"namespace": "scalable", "name": job},
            "producer": _PRODUCER,
            "schemaURL": _OL_SCHEMA,
        }
        inputs = [d for n in sorted(used.get(key, ())) for d in _datasets(graph, n, sites.get((*key, "used", n)))]
        outputs = [d for n in sorted(made.get(key, ())) for d in _datasets(graph, n, sites.get((*key, "made", n)))]
        first = start or latest.get(key[0])
        if first:
            events.append({"eventType": "START", "eventTime": first, **base, "inputs": inputs, "outputs": []})
        end_type = {"completed": "COMPLETE", "finished": "COMPLETE", "failed": "FAIL", "interrupted": "ABORT"}.get(
            str(status)
        )
        when = end if end_type else latest.get(key[0])
        if when:
            final = dict(base)
            if end_type == "FAIL":
                final["run"] = {
                    **run,
                    "facets": {
                        **run_facets,
                        "errorMessage": {
                            "_producer": _PRODUCER,
                            "_schemaURL": _OL_ERROR_FACET,
                            "message": str(error or "failed"),
                            "programmingLanguage": "Python",
                        },
                    },
                }
            events.append(
                {"eventType": end_type or "RUNNING", "eventTime": when, **final, "inputs": inputs, "outputs": outputs}
            )

    for run_id, info in sorted(runs.items()):
        project = info.get("project") or "adhoc"
        facets = {"scalable_run": {"_producer": _PRODUCER, "_schemaURL": f"{_PRODUCER}#run-facet", "runId": run_id}}
        error = ": ".join(filter(None, (info.get("error_type"), info.get("error"))))
        pair(
            (run_id, None), project, facets, info.get("started_at"), info.get("finished_at"), info.get("status"), error
        )
        for task in sorted(
            (t for t in graph.tasks.values() if t["run_id"] == run_id),
            key=lambda t: (t["started_at"] or "", t["task_id"]),
        ):
            parent = {
                "_producer": _PRODUCER,
                "_schemaURL": _OL_PARENT_FACET,
                "run": {"runId": uuid_of(f"run:{run_id}")},
                "job": {"namespace": "scalable", "name": project},
            }
            status = task["status"] or ("finished" if task["ended_at"] else None)
            pair(
                (run_id, task["task_id"]),
                f"{project}.{task['task_name'] or task['task_id']}",
                {"parent": parent},
                task["started_at"],
                task["ended_at"],
                status,
                None,
            )
    events.sort(key=lambda e: (e["eventTime"], 0 if e["eventType"] == "START" else 1))
    return events


def _prov_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _openlineage_lines(events: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(event, sort_keys=True) + "\n" for event in events)


def export_prov(ledger: Ledger, path: str | os.PathLike[str], progress: ExportProgress | None = None) -> dict[str, Any]:
    """Write the whole ledger's lineage as W3C PROV-JSON; returns the document."""
    out = _target(path)
    step = _steps(progress, 3)
    step(0)
    doc = prov_document(ledger.lineage(None))
    step(1)
    text = _prov_json(doc)
    step(2)
    out.write_text(text)
    step(3)
    return doc


def export_openlineage(
    ledger: Ledger, path: str | os.PathLike[str], progress: ExportProgress | None = None
) -> list[dict[str, Any]]:
    """Write the RunEvents of every run and task as JSON lines; returns them."""
    out = _target(path)
    step = _steps(progress, 3)
    step(0)
    events = openlineage_events(ledger.lineage(None))
    step(1)
    text = _openlineage_lines(events)
    step(2)
    out.write_text(text)
    step(3)
    return events


def _tree_text(graph: LineageGraph) -> str:
    if graph.direction == "both" and graph.root is not None:
        # Ancestors, then descendants below the same root line.
        up = graph_tree(graph, "up")
        down = graph_tree(graph, "down").split("\n", 1)[1]
        return up.replace(_elided_note(graph), "") + down
    return graph_tree(graph, graph.direction)


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
    OutputFormat("json", "The nodes, edges and context as JSON.", render=lambda graph: graph_json(graph) + "\n"),
    OutputFormat("dot", "Graphviz DOT.", render=graph_dot),
    OutputFormat("mermaid", "A Mermaid flowchart.", render=graph_mermaid),
    OutputFormat(
        "prov", "Write W3C PROV-JSON.", render=lambda graph: _prov_json(prov_document(graph)), export=_summarize_prov
    ),
    OutputFormat(
        "openlineage",
        "Write OpenLineage RunEvents as JSON lines.",
        render=lambda graph: _openlineage_lines(openlineage_events(graph)),
        export=_summarize_openlineage,
    ),
):
    register_format(_builtin)
