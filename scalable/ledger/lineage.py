"""Lineage: the graph of a node's provenance, walked over the ledger's views.

:func:`trace` opens the views (:mod:`scalable.ledger.views`), walks from a node and describes
what it met; what an edge is and how edges are derived from events is in
:mod:`scalable.ledger.edges`.

Compaction writes the edges of the compacted events next to them
(:mod:`scalable.ledger.lineage_files`): one Parquet file sorted by ``dst`` and a copy sorted by
``src``, in small row groups, plus the node descriptions sorted by node id. Their min/max
statistics let a lookup read only the few row groups that can hold its nodes, so
:func:`lineage_graph` walks level by level with such lookups instead of joining the whole
edge set at every step. The ``lineage`` view is those compacted edges plus the edges of the
events not compacted yet, computed on the fly; without compacted edges (an older generation,
a ledger on object storage) it is computed from the ``events`` view as a whole.

A graph renders in every lineage format of the registry (:meth:`LineageGraph.render`,
:mod:`scalable.ledger.export`).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from scalable.errors import ConfigError, NodeNotFoundError
from scalable.ledger.edges import nodes_sql
from scalable.ledger.export import render_lineage
from scalable.ledger.sql import quote as sql_quote
from scalable.ledger.views import read_snapshot
from scalable.uris import uri_to_path

if TYPE_CHECKING:
    import duckdb

    from scalable.ledger.log import Ledger

__all__ = ["DIRECTIONS", "LineageGraph", "lineage_graph", "trace"]

#: Directions of a walk: what a node came from, what came of it, or both.
DIRECTIONS = ("up", "down", "both")
_PRODUCER = "https://pypi.org/project/scalable/"
_OL_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass
class LineageGraph:
    """Nodes and edges of a lineage walk (or of the whole ledger).

    ``nodes`` maps node id to attributes (``kind``: ``run`` or ``artifact``, plus names,
    locations, sizes, run status); ``edges`` are mappings with ``src``, ``dst``, ``relation``,
    ``run_id``, ``task_name``, ``timestamp`` and, for walks, ``depth``.
    """

    root: str | None
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: list[dict[str, Any]] = field(default_factory=list)
    #: the direction of the walk that made it (``up``, ``down`` or ``both``)
    direction: str = "up"

    def render(self, fmt: str) -> str:
        """Return the graph as text in lineage format ``fmt`` of the registry (``tree``, ``dot``, ...).

        Raises:
            ConfigError: no lineage format of that name is registered.
        """
        return render_lineage(self, fmt)

    def edge_set(self) -> set[tuple[str, str, str]]:
        """Return the edges as ``(src, relation, dst)`` triples."""
        return {(e["src"], e["relation"], e["dst"]) for e in self.edges}

    def label(self, node: str) -> str:
        """A short human label of a node: the run id, or artifact name and short digest."""
        info = self.nodes.get(node, {})
        if info.get("kind") == "run":
            return node
        name = info.get("name") or node
        return f"{name} ({node[:12]})" if name != node and len(node) == 64 else str(name)

    def to_json(self) -> str:
        """Return ``{"root", "nodes": [...], "edges": [...]}`` as JSON text."""
        nodes = [{"id": k, **v} for k, v in sorted(self.nodes.items())]
        return json.dumps({"root": self.root, "nodes": nodes, "edges": self.edges}, default=str, indent=2)

    def to_dot(self) -> str:
        """Return the graph in Graphviz DOT (runs as boxes, artifacts as ellipses)."""
        lines = ["digraph lineage {", "  rankdir=LR;"]
        for node, info in sorted(self.nodes.items()):
            shape = "box" if info.get("kind") == "run" else "ellipse"
            lines.append(f"  {json.dumps(node)} [label={json.dumps(self.label(node))}, shape={shape}];")
        for e in sorted(self.edges, key=lambda e: (e["src"], e["dst"], e["relation"])):
            lines.append(f"  {json.dumps(e['src'])} -> {json.dumps(e['dst'])} [label={json.dumps(e['relation'])}];")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_tree(self, direction: str = "up") -> str:
        """Return an indented text tree from the root (ancestors for ``up``, else descendants)."""
        if self.root is None:
            return ""
        children: dict[str, list[tuple[str, str]]] = {}
        for e in self.edges:
            parent, child = (e["dst"], e["src"]) if direction == "up" else (e["src"], e["dst"])
            children.setdefault(parent, []).append((e["relation"], child))
        out = [self.label(self.root)]
        # Each node is expanded once in the whole tree, so every edge is printed once and the
        # tree grows with the graph, not with the number of paths through it.
        seen = {self.root}

        def walk(node: str, prefix: str) -> None:
            items = sorted(set(children.get(node, [])))
            for i, (relation, child) in enumerate(items):
                last = i == len(items) - 1
                again = " (see above)" if child in seen else ""
                out.append(f"{prefix}{'└── ' if last else '├── '}{relation}: {self.label(child)}{again}")
                if not again:
                    seen.add(child)
                    walk(child, prefix + ("    " if last else "│   "))

        walk(self.root, "")
        return "\n".join(out) + "\n"

    def to_prov(self) -> dict[str, Any]:
        """Return the graph as W3C PROV-JSON (entities, activities, used, generation, derivation)."""
        doc: dict[str, Any] = {
            "prefix": {
                "scalable": "urn:scalable:",
                "run": "urn:scalable:run:",
                "sha256": "urn:sha256:",
                "uri": "urn:scalable:uri:",
            },
            "entity": {},
            "activity": {},
            "used": {},
            "wasGeneratedBy": {},
            "wasDerivedFrom": {},
            "wasInformedBy": {},
        }
        for node, info in self.nodes.items():
            qid = _prov_id(node, info)
            if info.get("kind") == "run":
                activity: dict[str, Any] = {"prov:label": node}
                if info.get("started_at"):
                    activity["prov:startTime"] = info["started_at"]
                if info.get("finished_at"):
                    activity["prov:endTime"] = info["finished_at"]
                for key in ("project", "status"):
                    if info.get(key):
                        activity[f"scalable:{key}"] = info[key]
                doc["activity"][qid] = activity
            else:
                entity: dict[str, Any] = {"prov:label": info.get("name") or node}
                if info.get("locations"):
                    entity["prov:location"] = info["locations"][0]
                if info.get("size_bytes") is not None:
                    entity["scalable:size_bytes"] = int(info["size_bytes"])
                doc["entity"][qid] = entity
        ordered = sorted(
            self.edges, key=lambda e: (e["timestamp"] or "", e["src"], e["dst"], e["relation"], e["run_id"])
        )
        for n, e in enumerate(ordered):
            src, dst = (
                _prov_id(e["src"], self.nodes.get(e["src"], {})),
                _prov_id(e["dst"], self.nodes.get(e["dst"], {})),
            )
            rel = e["relation"]
            if rel == "generated":
                doc["wasGeneratedBy"][f"_:g{n}"] = {
                    "prov:entity": dst,
                    "prov:activity": src,
                    "prov:time": e["timestamp"],
                }
            elif rel == "used":
                doc["used"][f"_:u{n}"] = {"prov:activity": dst, "prov:entity": src, "prov:time": e["timestamp"]}
            elif rel == "derived_from":
                doc["wasDerivedFrom"][f"_:d{n}"] = {"prov:generatedEntity": dst, "prov:usedEntity": src}
            elif rel == "reused":
                doc["wasInformedBy"][f"_:i{n}"] = {"prov:informed": dst, "prov:informant": src}
        return {k: v for k, v in doc.items() if v}

    def to_openlineage(self) -> list[dict[str, Any]]:
        """Return OpenLineage RunEvents: a START and a COMPLETE/FAIL per run, with datasets."""
        events: list[dict[str, Any]] = []
        runs = {n: i for n, i in self.nodes.items() if i.get("kind") == "run"}
        for run_id, info in sorted(runs.items(), key=lambda kv: (kv[1].get("started_at") or "", kv[0])):
            inputs = sorted({e["src"] for e in self.edges if e["dst"] == run_id and e["relation"] == "used"})
            outputs = sorted({e["dst"] for e in self.edges if e["src"] == run_id and e["relation"] == "generated"})
            run = {
                "runId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:scalable:run:{run_id}")),
                "facets": {
                    "scalable_run": {"_producer": _PRODUCER, "_schemaURL": f"{_PRODUCER}#run-facet", "runId": run_id}
                },
            }
            job = {"namespace": "scalable", "name": info.get("project") or "adhoc"}
            status = info.get("status")
            end_type = {"completed": "COMPLETE", "failed": "FAIL", "interrupted": "ABORT"}.get(str(status))
            base = {"run": run, "job": job, "producer": _PRODUCER, "schemaURL": _OL_SCHEMA}
            events.append(
                {
                    "eventType": "START",
                    "eventTime": _ol_time(info.get("started_at")),
                    **base,
                    "inputs": [self._dataset(n) for n in inputs],
                    "outputs": [],
                }
            )
            if end_type:
                events.append(
                    {
                        "eventType": end_type,
                        "eventTime": _ol_time(info.get("finished_at")),
                        **base,
                        "inputs": [self._dataset(n) for n in inputs],
                        "outputs": [self._dataset(n) for n in outputs],
                    }
                )
        return events

    def _dataset(self, node: str) -> dict[str, Any]:
        info = self.nodes.get(node, {})
        location = (info.get("locations") or [node])[0]
        parts = urlsplit(location)
        if parts.scheme and parts.scheme != "file":
            namespace, name = f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/") or node
        elif parts.scheme == "file":
            namespace, name = "file", str(uri_to_path(location))
        else:
            namespace, name = "scalable", location
        facets: dict[str, Any] = {}
        if len(node) == 64:
            facets["scalable_digest"] = {
                "_producer": _PRODUCER,
                "_schemaURL": f"{_PRODUCER}#digest-facet",
                "sha256": node,
            }
        return {"namespace": namespace, "name": name, "facets": facets}


def _ol_time(ts: Any) -> str:
    return str(ts) if ts else "1970-01-01T00:00:00.000000Z"


def _prov_id(node: str, info: dict[str, Any]) -> str:
    if info.get("kind") == "run":
        return f"run:{quote(node, safe='-_.')}"
    if len(node) == 64 and all(c in "0123456789abcdef" for c in node):
        return f"sha256:{node}"
    return f"uri:{quote(node, safe='')}"


def _relations(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Names of the views and tables of ``con`` (one catalog query)."""
    return {
        r[0]
        for r in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal UNION ALL SELECT table_name FROM duckdb_tables()"
        ).fetchall()
    }


def _in_list(values: Sequence[Any]) -> str:
    return "(" + ", ".join(str(v) if isinstance(v, int) else sql_quote(v) for v in values) + ")"


def _chunks(values: Sequence[Any], size: int = 4096) -> list[Sequence[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def _resolve(con: duckdb.DuckDBPyConnection, node: str) -> str:
    """The digest ``node`` stands for: itself when it is a digest, else the newest version at that URI."""
    if _DIGEST.fullmatch(node):
        return node  # a location is a URI or path, never a bare digest
    return str(con.execute("SELECT _resolve($1)", [node]).fetchone()[0])  # type: ignore[index]


_Key = int | str  # a node: its compacted id when it has one, else its text


class _Walker:
    """Level-by-level lookups of edges over the compacted edges (by id) and the tail (by text)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        names = _relations(con)
        self.compacted = "_lineage_nodes" in names
        #: as of a time, descriptions come from the filtered events, not the compacted ones
        self.cutoff = "_lineage_cutoff" in names
        if self.compacted and "_inputs" not in names:
            # The compacted edges cover every event: there is no tail to walk.
            con.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _walk_tail AS SELECT NULL::BIGINT AS src_id, "
                "NULL::BIGINT AS dst_id, * FROM _tail_lineage"
            )
            names.add("_walk_tail")
        if "_walk_tail" not in names:
            con.execute("CREATE TEMP TABLE _walk_tail_text AS SELECT * FROM _tail_lineage")
            ids = "NULL::BIGINT AS src_id, NULL::BIGINT AS dst_id, t.* FROM _walk_tail_text t"
            if self.compacted and con.execute("SELECT count(*) FROM _walk_tail_text").fetchall()[0][0]:
                # Tail edges carry the ids of the nodes that compacted edges know as well.
                known = (
                    "(SELECT DISTINCT id, node FROM _lineage_nodes WHERE node IN "
                    "(SELECT src FROM _walk_tail_text UNION SELECT dst FROM _walk_tail_text))"
                )
                ids = (
                    f"s.id AS src_id, d.id AS dst_id, t.* FROM _walk_tail_text t LEFT JOIN {known} s "
                    f"ON t.src = s.node LEFT JOIN {known} d ON t.dst = d.node"
                )
            con.execute(f"CREATE TEMP TABLE _walk_tail AS SELECT {ids}")
        self.tail_rows = (
            int(con.execute("SELECT count(*) FROM _walk_tail").fetchall()[0][0]) if "_inputs" in names else 0
        )
        #: compacted node descriptions ``(node, source, name, locations, size, kind)`` met so far
        self.described: list[tuple[Any, ...]] = []
        self._keys: dict[str, _Key] = {}

    def key_of(self, node: str) -> _Key:
        """The compacted id of ``node``, or its text when compacted edges do not know it."""
        if not self.compacted:
            return node
        if node not in self._keys:
            # The id is the node's hash (see compaction); a literal id lets the lookup read
            # the one row group of the id-sorted nodes file that can hold it.
            id_ = int(self.con.execute("SELECT (hash($1::VARCHAR) >> 1)::BIGINT", [node]).fetchall()[0][0])
            row = self.con.execute(
                f"SELECT count(*) FROM _lineage_nodes WHERE id = {id_} AND node = $1", [node]
            ).fetchall()
            self._keys[node] = id_ if row[0][0] else node
        return self._keys[node]

    def _tail_index(self, direction: str) -> dict[_Key, list[tuple[Any, ...]]]:
        col = 1 if direction == "up" else 0
        index: dict[_Key, list[tuple[Any, ...]]] = {}
        for r in (
            self.con.execute(
                "SELECT src_id, src, dst_id, dst, relation, run_id, task_name, timestamp FROM _walk_tail"
            ).fetchall()
            if self.tail_rows
            else []
        ):
            row = (int(r[0]) if r[0] is not None else r[1], int(r[2]) if r[2] is not None else r[3], *r[4:])
            if row[col] is not None:
                index.setdefault(row[col], []).append(row)
        return index

    def walk(self, root: str, direction: str, max_depth: int) -> list[tuple[Any, ...]]:
        """Breadth-first walk from ``root``: ``(src, dst, relation, run_id, task, ts, depth)`` rows.

        Compacted edges: the integer columns ``src_id, dst_id`` are read once and each level
        is one vectorized membership test over them; then the edges into (``up``) or out of
        (``down``) every expanded node are read in one lookup that skips the row groups
        holding none of them. Tail edges are few and walked from an in-memory index. A node
        is expanded once, at its smallest depth, so cycles end; an edge's depth is its
        expanded end's depth plus one.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        near, far = (1, 0) if direction == "up" else (0, 1)
        start = self.key_of(root)
        tail = self._tail_index(direction)
        near_ids = far_ids = None
        if self.compacted:
            table = self.con.sql("SELECT src_id, dst_id FROM _lineage_ids_by_dst").to_arrow_table()
            near_ids, far_ids = table.column(near), table.column(far)
        expanded: dict[_Key, int] = {start: 0}
        frontier: list[_Key] = [start]
        depth = 0
        tail_rows: list[tuple[Any, ...]] = []
        while frontier and depth < max_depth:
            nxt: list[_Key] = []
            ints = [k for k in frontier if isinstance(k, int)]
            if ints and near_ids is not None and far_ids is not None:
                mask = pc.is_in(near_ids, value_set=pa.array(ints, pa.int64()))
                for step in pc.unique(pc.filter(far_ids, mask)).to_pylist():
                    if step is not None and step not in expanded:
                        expanded[step] = depth + 1
                        nxt.append(int(step))
            for key in frontier:
                for row in tail.get(key, ()):
                    tail_rows.append((*row, depth + 1))
                    step = row[far]
                    if step is not None and step not in expanded:
                        expanded[step] = depth + 1
                        nxt.append(step)
            frontier = nxt
            depth += 1
        rows = tail_rows
        looked_up = sorted(k for k, d in expanded.items() if isinstance(k, int) and d < max_depth)
        if looked_up and self.compacted:
            view, col = ("_lineage_ids_by_dst", "dst_id") if direction == "up" else ("_lineage_ids_by_src", "src_id")
            # A list parameter unnested in a subquery: cheaper than thousands of literals to
            # parse, and its min/max still skips row groups.
            for r in self.con.execute(
                f"SELECT src_id, dst_id, relation, run_id, task_name, timestamp FROM {view} "
                f"WHERE {col} IN (SELECT unnest($1::BIGINT[]))",
                [looked_up],
            ).fetchall():
                rows.append((*r, expanded[r[near]] + 1))
        return rows

    def texts(self, keys: set[_Key]) -> dict[int, str]:
        """The node text of every compacted id in ``keys``; their descriptions go to ``described``."""
        ids = sorted(k for k in keys if isinstance(k, int))
        found: dict[int, str] = {}
        for id_, node, source, name, locations, size, kind in (
            self.con.execute(
                "SELECT id, node, source, name, locations, size_bytes, kind FROM _lineage_nodes "
                "WHERE id IN (SELECT unnest($1::BIGINT[]))",
                [ids],
            ).fetchall()
            if ids
            else []
        ):
            found[int(id_)] = str(node)
            if source is not None:
                self.described.append((node, source, name, locations, size, kind))
        return found


def lineage_graph(
    con: duckdb.DuckDBPyConnection, node: str | None, *, direction: str = "up", depth: int | None = None
) -> LineageGraph:
    """Walk the lineage of ``node`` (or take every edge when ``node`` is None) into a graph.

    Args:
        con: a ledger connection (see :func:`scalable.ledger.views.connect`).
        node: a digest, URI or run id; ``None`` for the whole ledger.
        direction: ``up`` (ancestors), ``down`` (descendants) or ``both``.
        depth: the largest number of edges from ``node``; unbounded (100) when None.
    """
    max_depth = depth if depth is not None else 100
    columns = ["src", "dst", "relation", "run_id", "task_name", "timestamp", "depth"]
    rows: list[tuple[Any, ...]] = []
    root = None
    known: list[tuple[Any, ...]] | None = None
    if node is None:
        rows = con.execute(
            "SELECT DISTINCT src, dst, relation, run_id, task_name, min(timestamp), 0 FROM lineage "
            "GROUP BY src, dst, relation, run_id, task_name"
        ).fetchall()
    else:
        root = _resolve(con, node)
        walker = _Walker(con)
        for way in {"up": ["up"], "down": ["down"], "both": ["up", "down"]}[direction]:
            rows += walker.walk(root, way, max_depth)
        names = walker.texts({r[0] for r in rows} | {r[1] for r in rows} | {walker.key_of(root)})
        if walker.compacted and not walker.cutoff:
            known = walker.described
        rows = [
            (
                names.get(r[0], r[0]) if isinstance(r[0], int) else r[0],
                names.get(r[1], r[1]) if isinstance(r[1], int) else r[1],
                *r[2:],
            )
            for r in rows
        ]
    edges: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        edge = dict(zip(columns, row, strict=True))
        key = (edge["src"], edge["dst"], edge["relation"], edge["run_id"])
        if key not in edges or edge["depth"] < edges[key]["depth"]:
            edges[key] = edge
    graph = LineageGraph(
        root=root,
        edges=sorted(edges.values(), key=lambda e: (e["depth"], e["src"], e["dst"], e["relation"], e["run_id"])),
        direction=direction,
    )
    ids = {e["src"] for e in graph.edges} | {e["dst"] for e in graph.edges} | ({root} if root else set())
    if node is None:
        ids |= {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
    _describe_nodes(con, graph, ids, known)
    return graph


def trace(
    ledger: Ledger,
    node: str | None,
    *,
    direction: str = "up",
    depth: int | None = None,
    as_of: str | None = None,
) -> LineageGraph:
    """Return the lineage graph of ``node`` (a digest, URI or run id) in ``ledger``.

    Args:
        ledger: the ledger whose views are walked.
        node: where to start; ``None`` gives every edge of the ledger.
        direction: ``up`` (what it came from), ``down`` (what came of it) or ``both``.
        depth: the largest number of edges from ``node`` (unbounded when None).
        as_of: ISO-8601 time; the ledger as it was then.

    Raises:
        ConfigError: ``direction`` or ``depth`` is not valid.
        NodeNotFoundError: ``node`` appears nowhere in the lineage.
    """
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    if depth is not None and depth < 1:
        raise ConfigError(f"depth {depth} must be at least 1")

    def walk(con: duckdb.DuckDBPyConnection) -> tuple[LineageGraph, bool]:
        graph = lineage_graph(con, node, direction=direction, depth=depth)
        known = (
            bool(graph.edges)
            or node is None
            or bool(
                con.execute("SELECT count(*) FROM lineage WHERE src = $1 OR dst = $1", [graph.root]).fetchall()[0][0]
            )
        )
        return graph, known

    graph, known = read_snapshot(ledger, walk, as_of=as_of, trusted=True)
    if not known:
        raise NodeNotFoundError(
            f"{node!r} is not an artifact digest, location or run id in the ledger; "
            'find one with: scalable ledger query "SELECT digest, location FROM artifacts"'
        )
    return graph


def _describe_nodes(
    con: duckdb.DuckDBPyConnection, graph: LineageGraph, ids: set[str], known: list[tuple[Any, ...]] | None
) -> None:
    """Describe the nodes ``ids`` of ``graph``: runs from the ``runs`` view, artifacts from events.

    ``known`` holds the compacted descriptions already read (then only the tail's events are
    read); ``None`` reads every description from the ``events`` view.
    """
    if not ids:
        return
    id_list = sorted(ids)
    # Literal IN lists let the scans skip row groups (events are sorted by run id, compacted
    # node descriptions by node); a list parameter would not.
    # Run nodes are the runs of the edges, the writers of reused entries and maybe the root;
    # only those are looked up, and only their run events are read (as the ``runs`` view does).
    certain = ids & ({e["run_id"] for e in graph.edges} | {e["src"] for e in graph.edges if e["relation"] == "reused"})
    runs = sorted(certain | (ids & {graph.root} if graph.root else set()))
    for chunk in _chunks(runs):
        for run_id, project, status, started, finished in con.execute(
            "SELECT run_id, any_value(json_extract_string(attrs, '$.project')) FILTER (WHERE op = 'started'), "
            "coalesce(any_value(json_extract_string(attrs, '$.status')) FILTER (WHERE op = 'finished'), 'running'), "
            "min(timestamp) FILTER (WHERE op = 'started'), max(timestamp) FILTER (WHERE op = 'finished') "
            f"FROM events WHERE run_id IN {_in_list(chunk)} AND event_type = 'run' GROUP BY run_id"
        ).fetchall():
            graph.nodes[run_id] = {
                "kind": "run",
                "project": project,
                "status": status,
                "started_at": started,
                "finished_at": finished,
            }
    for run_id in certain:  # a run with events but no run event yet
        graph.nodes.setdefault(
            run_id, {"kind": "run", "project": None, "status": "running", "started_at": None, "finished_at": None}
        )
    described: dict[str, dict[str, Any]] = {}
    cached: dict[str, dict[str, Any]] = {}
    names = _relations(con)
    has_rows = False
    if known is None or "_inputs" in names:  # else the compacted descriptions cover every event
        if "_walk_nodes" not in names:
            con.execute(f"CREATE TEMP TABLE _walk_nodes AS {nodes_sql('events' if known is None else '_tail_events')}")
        has_rows = bool(con.execute("SELECT count(*) FROM (SELECT 1 FROM _walk_nodes LIMIT 1)").fetchall()[0][0])
    found: list[tuple[Any, ...]] = list(known or [])
    for chunk in _chunks(id_list) if has_rows else []:
        found += con.execute(
            f"SELECT node, source, name, locations, size_bytes, kind FROM _walk_nodes WHERE node IN {_in_list(chunk)}"
        ).fetchall()
    for node, source, name, locations, size, kind in found:
        if source is None:
            continue
        target = described if source == "artifact" else cached
        info = target.setdefault(node, {"name": None, "locations": [], "size_bytes": None, "kind": None})
        # The smallest value of each, as in SQL, so the result does not depend on read order.
        info["name"] = min(filter(None, (info["name"], name)), default=None)
        info["locations"] = sorted({*info["locations"], *(locations or [])})
        info["size_bytes"] = min((v for v in (info["size_bytes"], size) if v is not None), default=None)
        info["kind"] = min(filter(None, (info["kind"], kind)), default=None)
    for node, info in described.items():
        if node in graph.nodes:
            continue
        graph.nodes[node] = {
            "kind": "artifact",
            "name": info["name"],
            "locations": info["locations"],
            "size_bytes": info["size_bytes"],
            "artifact_kind": info["kind"],
        }
    for node, info in cached.items():
        graph.nodes.setdefault(
            node,
            {
                "kind": "artifact",
                "name": f"{info['name']}() result",
                "locations": [],
                "size_bytes": info["size_bytes"],
                "artifact_kind": "cache",
            },
        )
    for node in ids - graph.nodes.keys():
        graph.nodes[node] = {"kind": "artifact", "name": node, "locations": [node] if "://" in node else []}
