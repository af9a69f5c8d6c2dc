"""Lineage: what a user names, the walk of its data flow, and the graph of what the walk met.

:func:`resolve_node` turns what a user gives (a digest, a unique digest prefix of at least
eight hex characters, a location URI or local path, an artifact name, a run id) into one node;
:func:`trace` opens the views (:mod:`scalable.ledger.views`), walks the data flow from it
(:mod:`scalable.ledger.edges` says what an edge is) and describes every node it met, with the
runs that generated and used it: run membership is context, reported with each node and never
walked through, so an artifact's ancestors are what its data came from and nothing else of its
run.

Compaction writes the edges of the compacted events next to them
(:mod:`scalable.ledger.lineage_files`): one Parquet file sorted by ``dst`` and a copy sorted by
``src``, data flow first, in small row groups, plus the node descriptions sorted by node id.
Their min/max statistics let a lookup read only the few row groups that can hold its nodes,
so the walk goes level by level with such lookups instead of joining the whole edge set at
every step. The edges of events not compacted yet are computed on the fly; without compacted
edges (an older generation, a ledger on object storage) all of them are.

A graph renders in every lineage format of the registry (:meth:`LineageGraph.render`,
:mod:`scalable.ledger.export`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from scalable.errors import AmbiguousNodeError, ConfigError, NodeNotFoundError
from scalable.ledger import export
from scalable.ledger.edges import FLOW_RELATIONS, RELATIONS, nodes_sql, versions_sql
from scalable.ledger.views import SNAPSHOT_TABLE_PREFIX, read_snapshot
from scalable.uris import local_path, path_to_uri

if TYPE_CHECKING:
    import duckdb

    from scalable.ledger.log import Ledger

__all__ = [
    "DIRECTIONS",
    "MIN_PREFIX",
    "RUN_RELATIONS",
    "LineageGraph",
    "lineage_graph",
    "resolve_node",
    "trace",
    "walk_table",
]

#: Directions of a walk: what a node came from, what came of it, or both.
DIRECTIONS = ("up", "down", "both")
#: Relations of the run-level graph: data one run generated fed another (``informed``), or a
#: run reused a value another run cached (``reused``).
RUN_RELATIONS = ("informed", "reused")
#: The fewest hex characters a digest prefix may have.
MIN_PREFIX = 8
_DIGEST = re.compile(r"[0-9a-f]{64}")
_HEX = re.compile(r"[0-9a-f]+")
_SHORT = 12  # hex characters of a digest in labels
_CANDIDATES = 10  # candidates an ambiguity lists


@dataclass
class LineageGraph:
    """The nodes and edges a lineage walk met (or the whole ledger's).

    Attributes:
        root: the node walked from (a digest, URI or run id), ``None`` for the whole ledger.
        nodes: node id -> attributes. Artifacts: ``kind="artifact"``, ``label``, ``name``,
            ``locations``, ``size_bytes``, ``artifact_kind`` and their context,
            ``generated_by`` and ``used_by`` (run ids). Runs: ``kind="run"``, ``label``,
            ``project``, ``status``, ``started_at``, ``finished_at``, ``error_type``,
            ``error``, ``user``, ``host``.
        edges: the walked edges: data flow (``derived_from``, ``derived_in_task``) and, from a
            run, the run's own ``generated``/``used`` edges at depth 1. Each has ``src``,
            ``dst``, ``relation``, ``run_id``, ``task_name``, ``task_id``, ``timestamp``,
            ``depth`` and ``direction`` (``up`` or ``down``: which walk found it).
        context: the context edges of the graph's artifacts (``generated``, ``used``) and the
            ``reused`` edges between its runs; never walked.
        tasks: ``run_id/task_id`` -> ``run_id``, ``task_id``, ``task_name``, ``started_at``,
            ``ended_at``, ``status`` of every task the edges and context name.
        direction: the direction of the walk that made it (``up``, ``down`` or ``both``).
        elided: with ``max_nodes``, how many ``nodes`` and ``edges`` were left out.
        source: the ledger and ``as_of`` time the graph was read from (``None`` for a graph
            built by hand); exports look up there where each run put or read each version.
    """

    root: str | None
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: list[dict[str, Any]] = field(default_factory=list)
    context: list[dict[str, Any]] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    direction: str = "up"
    elided: dict[str, int] | None = None
    source: tuple[Ledger, str | None] | None = field(default=None, repr=False, compare=False)

    def render(self, fmt: str) -> str:
        """Return the graph as text in lineage format ``fmt`` of the registry (``tree``, ``dot``, ...).

        Raises:
            ConfigError: no lineage format of that name is registered.
        """
        return export.render_lineage(self, fmt)

    def edge_set(self) -> set[tuple[str, str, str]]:
        """Return the walked edges as ``(src, relation, dst)`` triples."""
        return {(e["src"], e["relation"], e["dst"]) for e in self.edges}

    def ancestors(self) -> set[str]:
        """The nodes the upward walk reached: what the root came from (itself only on a true cycle)."""
        return {_far(e) for e in self.edges if e["direction"] == "up"}

    def descendants(self) -> set[str]:
        """The nodes the downward walk reached: what came of the root (itself only on a true cycle)."""
        return {_far(e) for e in self.edges if e["direction"] == "down"}

    def label(self, node: str) -> str:
        """A readable label: the run id, or the artifact's name (or location's last segment) and short digest."""
        info = self.nodes.get(node)
        if info is not None and info.get("label"):
            return str(info["label"])
        return _label(node, info or {})

    def runs_only(self) -> LineageGraph:
        """The run-level graph of this one: runs, and which run's data fed (or cache served) which.

        Run A -> run B is ``informed`` when a data-flow edge of B starts at an artifact A
        generated (no later than that edge) and B did not, and ``reused`` when that artifact
        is a value A cached; from a run root, what the root used counts too. A node is a run
        that generated one of the graph's artifacts (or the root run).
        """
        producers: dict[str, dict[str, str]] = {}  # artifact -> run -> first generated
        for e in self.context:
            if e["relation"] == "generated":
                made = producers.setdefault(e["dst"], {})
                made[e["src"]] = min(made.get(e["src"], e["timestamp"]), e["timestamp"])
        edges: dict[tuple[str, str, str], dict[str, Any]] = {}

        def link(node: str, consumer: str, e: dict[str, Any]) -> None:
            makers = producers.get(node, {})
            if consumer in makers:
                return  # made in the consuming run itself
            cached = self.nodes.get(node, {}).get("artifact_kind") == "cache"
            relation = "reused" if cached else "informed"
            for maker, first in makers.items():
                if first > e["timestamp"]:
                    continue  # made only after it was used here: not where it came from
                key = (maker, consumer, relation)
                found = edges.get(key)
                if found is None or e["depth"] < found["depth"]:
                    edges[key] = {
                        "src": maker,
                        "dst": consumer,
                        "relation": relation,
                        "run_id": consumer,
                        "task_name": e["task_name"],
                        "task_id": e["task_id"],
                        "timestamp": e["timestamp"],
                        "depth": e["depth"],
                        "direction": e["direction"],
                    }

        for e in self.edges:
            if e["relation"] in FLOW_RELATIONS:
                link(e["src"], e["run_id"], e)
            elif e["relation"] == "used":
                link(e["src"], e["dst"], e)
        runs = {r for makers in producers.values() for r in makers}
        if self.root is not None and self.nodes.get(self.root, {}).get("kind") == "run":
            runs.add(self.root)
        runs |= {e["src"] for e in edges.values()} | {e["dst"] for e in edges.values()}
        return LineageGraph(
            root=self.root if self.root in runs else None,
            nodes={r: self.nodes.get(r, _run_stub(r)) for r in sorted(runs)},
            edges=sorted(edges.values(), key=lambda e: (e["depth"], e["src"], e["dst"], e["relation"])),
            context=[e for e in self.context if e["relation"] == "reused" and e["src"] in runs and e["dst"] in runs],
            tasks={},
            direction=self.direction,
            elided=self.elided,
        )

    def to_json(self) -> str:
        """Return the graph as JSON text (see :func:`scalable.ledger.export.graph_json`)."""
        return export.graph_json(self)

    def to_dot(self) -> str:
        """Return the graph in Graphviz DOT (runs as boxes, artifacts as ellipses)."""
        return export.graph_dot(self)

    def to_mermaid(self) -> str:
        """Return the graph as a Mermaid flowchart."""
        return export.graph_mermaid(self)

    def to_tree(self, direction: str = "up") -> str:
        """Return an indented text tree from the root (ancestors for ``up``, else descendants)."""
        return export.graph_tree(self, direction)

    def to_prov(self) -> dict[str, Any]:
        """Return the graph as a W3C PROV-JSON document (see :func:`scalable.ledger.export.prov_document`)."""
        return export.prov_document(self)

    def to_openlineage(self) -> list[dict[str, Any]]:
        """Return OpenLineage RunEvents of the graph's runs (see :func:`scalable.ledger.export.openlineage_events`)."""
        return export.openlineage_events(self)


def _far(e: dict[str, Any]) -> str:
    """The end of an edge its walk reached (a seed edge of a run reaches its artifact)."""
    if e["relation"] == "generated":
        return str(e["dst"])
    if e["relation"] == "used":
        return str(e["src"])
    return str(e["src"] if e["direction"] == "up" else e["dst"])


def _label(node: str, info: dict[str, Any]) -> str:
    if info.get("kind") == "run":
        return node
    name = info.get("name")
    if not name:
        locations = info.get("locations") or ([node] if "://" in node else [])
        name = locations[0].rstrip("/").rsplit("/", 1)[-1] if locations else None
    if _DIGEST.fullmatch(node):
        return f"{name} ({node[:_SHORT]})" if name else node[:_SHORT]
    return str(name or node)


def _run_stub(run_id: str) -> dict[str, Any]:
    return {
        "kind": "run",
        "label": run_id,
        "project": None,
        "status": "running",
        "started_at": None,
        "finished_at": None,
        "error_type": None,
        "error": None,
        "user": None,
        "host": None,
    }


def _relations(con: duckdb.DuckDBPyConnection) -> set[str]:
    """Names of the views and tables of ``con`` (one catalog query)."""
    return {
        r[0]
        for r in con.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal UNION ALL SELECT table_name FROM duckdb_tables()"
        ).fetchall()
    }


def _in_list(values: Sequence[str]) -> str:
    return "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + ")"


def _chunks(values: Sequence[Any], size: int = 4096) -> list[Sequence[Any]]:
    return [values[i : i + size] for i in range(0, len(values), size)]


# --- what a user names -------------------------------------------------------------------------


def resolve_node(con: duckdb.DuckDBPyConnection, text: str) -> tuple[str, str]:
    """The node ``text`` names in the views of ``con``, and its kind (``run`` or ``artifact``).

    The readings are tried in this order, and the first that matches anything decides: a full
    digest; a location URI or local path (the newest version recorded, used or fetched there,
    as of the views' time); a run id; an artifact name (the newest version at each location
    of that name); a digest prefix of at least :data:`MIN_PREFIX` hex characters. That reading
    must name exactly one node.

    Raises:
        NodeNotFoundError: nothing in the ledger matches.
        AmbiguousNodeError: the deciding reading names several nodes; the message lists them.
    """
    if _DIGEST.fullmatch(text):
        return text, "artifact"  # known or not is decided by the walk
    readings: tuple[tuple[str, Callable[[], dict[str, str]]], ...] = (
        ("artifact", lambda: _at_locations(con, text)),
        ("run", lambda: {text: "a run"} if _is_run(con, text) else {}),
        ("artifact", lambda: _named(con, text)),
        ("artifact", lambda: _with_prefix(con, text)),
    )
    for kind, reading in readings:
        found = reading()
        if len(found) == 1:
            return next(iter(found)), kind
        if found:
            listed = [f"{node} ({how})" for node, how in sorted(found.items())[:_CANDIDATES]]
            # A prefix reading stops after one candidate more than are listed: its count is a bound.
            count = f"more than {_CANDIDATES}" if len(found) > _CANDIDATES else str(len(found))
            raise AmbiguousNodeError(
                f"{text!r} matches {count} nodes: {'; '.join(listed)}; give a full digest, a longer "
                "prefix or the location"
            )
    hint = (
        f" (a digest prefix needs at least {MIN_PREFIX} hex characters)"
        if _HEX.fullmatch(text) and len(text) < MIN_PREFIX
        else ""
    )
    raise NodeNotFoundError(
        f"{text!r} is not a digest, digest prefix, location, path, artifact name or run id in the ledger{hint}; "
        'find one with: scalable ledger query "SELECT artifact_name, digest, location FROM artifacts"'
    )


def _is_run(con: duckdb.DuckDBPyConnection, text: str) -> bool:
    return bool(con.execute("SELECT 1 FROM events WHERE run_id = $1 LIMIT 1", [text]).fetchall())


def _at_locations(con: duckdb.DuckDBPyConnection, text: str) -> dict[str, str]:
    """The version at ``text`` as a URI, or as a local path (its ``file://`` URI)."""
    found: dict[str, str] = {}
    for location in dict.fromkeys([text] if "://" in text else [text, path_to_uri(local_path(text))]):
        row = con.execute(
            f"SELECT arg_max(digest, timestamp) FROM ({versions_sql('events')}) v WHERE location = $1", [location]
        ).fetchall()
        if row and row[0][0] is not None:
            found.setdefault(str(row[0][0]), f"the version at {location}")
        elif con.execute(
            "SELECT 1 FROM events WHERE location = $1 OR list_contains(inputs, $1) LIMIT 1", [location]
        ).fetchall():
            found.setdefault(location, "a location with no digest")
    return found


def _named(con: duckdb.DuckDBPyConnection, text: str) -> dict[str, str]:
    """The newest version at each location of the artifacts named ``text``."""
    return {
        str(node): f"the version of {text!r} at {location}"
        for location, node in con.execute(
            "SELECT location, arg_max(coalesce(digest, location), timestamp) FROM artifacts "
            "WHERE artifact_name = $1 AND op IN ('put', 'recorded', 'used') GROUP BY location ORDER BY location",
            [text],
        ).fetchall()
    }


def _with_prefix(con: duckdb.DuckDBPyConnection, text: str) -> dict[str, str]:
    """The digests starting with ``text``, when it is a long enough hex prefix."""
    if not (_HEX.fullmatch(text) and MIN_PREFIX <= len(text) < 64):
        return {}
    rows = con.execute(
        "SELECT DISTINCT d FROM (SELECT digest AS d FROM events WHERE starts_with(digest, $1) "
        "UNION SELECT unnest(inputs) FROM events WHERE inputs IS NOT NULL) WHERE starts_with(d, $1) "
        f"ORDER BY d LIMIT {_CANDIDATES + 1}",
        [text],
    ).fetchall()
    return {str(r[0]): "a digest with that prefix" for r in rows}


# --- the walk ----------------------------------------------------------------------------------

_Key = int | str  # a node: its compacted id when it has one, else its text
_Row = tuple[Any, ...]  # (src, dst, relation, run_id, task_name, task_id, timestamp)


class _Walker:
    """Level-by-level lookups of edges over the compacted edges (by id) and the tail (by text)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        names = _relations(con)
        self.compacted = "_lineage_nodes" in names
        #: as of a time, descriptions come from the filtered events, not the compacted ones
        self.cutoff = "_lineage_cutoff" in names
        if "_walk_tail" not in names:
            con.execute("CREATE TEMP TABLE _walk_tail_text AS SELECT * FROM _tail_edges")
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
        #: compacted node descriptions ``(node, source, name, locations, size, kind)`` met so far
        self.described: list[tuple[Any, ...]] = []
        self._keys: dict[str, _Key] = {}
        #: tail edges: by the key of each end, data flow and context apart
        self.flow_by: dict[str, dict[_Key, list[_Row]]] = {"src": {}, "dst": {}}
        self.context_by: dict[str, dict[_Key, list[_Row]]] = {"src": {}, "dst": {}}
        for r in con.execute(
            "SELECT src_id, src, dst_id, dst, relation, flow, run_id, task_name, task_id, timestamp FROM _walk_tail"
        ).fetchall():
            src = int(r[0]) if r[0] is not None else r[1]
            dst = int(r[2]) if r[2] is not None else r[3]
            row = (r[1], r[3], r[4], *r[6:])
            if self.compacted:  # what each end's key is, known without a lookup
                self._keys.setdefault(r[1], src)
                self._keys.setdefault(r[3], dst)
            index = self.flow_by if r[5] else self.context_by
            if src is not None:
                index["src"].setdefault(src, []).append((src, dst, row))
            if dst is not None:
                index["dst"].setdefault(dst, []).append((src, dst, row))

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

    def lookup(self, keys: Iterable[_Key], *, by: str, flow: bool, relations: Sequence[str]) -> list[_Row]:
        """Edges whose ``by`` end (``src`` or ``dst``) is one of ``keys``: compacted and tail."""
        wanted = set(keys)
        ids = sorted(k for k in wanted if isinstance(k, int))
        rows: list[_Row] = []
        allowed = set(relations)
        if ids and self.compacted:
            view = "_lineage_ids_by_dst" if by == "dst" else "_lineage_ids_by_src"
            # A list parameter unnested in a subquery: cheaper than thousands of literals to
            # parse, and its min/max still skips row groups.
            for r in self.con.execute(
                f"SELECT src_id, dst_id, src, dst, relation, run_id, task_name, task_id, timestamp FROM {view} "
                f"WHERE {'' if flow else 'NOT '}flow AND {by}_id IN (SELECT unnest($1::BIGINT[]))",
                [ids],
            ).fetchall():
                if r[4] in allowed:
                    rows.append((int(r[0]), int(r[1]), tuple(r[2:])))
                    # Both ends are known to the compacted files now: no lookup of their ids later.
                    self._keys.setdefault(r[2], int(r[0]))
                    self._keys.setdefault(r[3], int(r[1]))
        index = (self.flow_by if flow else self.context_by)[by]
        for key in wanted:
            rows += [r for r in index.get(key, ()) if r[2][2] in allowed]
        return rows

    def walk(
        self, starts: Iterable[_Key], start_depth: int, direction: str, max_depth: int, relations: Sequence[str]
    ) -> list[tuple[_Row, int]]:
        """Breadth-first walk of data flow from ``starts`` (at ``start_depth``): ``(row, depth)`` pairs.

        Compacted edges: the integer columns ``src_id, dst_id`` of the data-flow edges are
        copied once per connection into a table sorted by the near end (see
        :func:`walk_table`), and each level is one lookup there that reads only the blocks
        holding the frontier; then the edges into (``up``) or out of (``down``) every expanded
        node are read in one lookup that skips the row groups holding none of them. Tail edges
        are few and walked from an in-memory index. A node is expanded once, at its smallest
        depth, so cycles end; an edge's depth is its expanded end's depth plus one.
        """
        flows = [r for r in relations if r in FLOW_RELATIONS]
        near = "dst" if direction == "up" else "src"
        ids_table = walk_table(self.con, direction, flows) if self.compacted and flows else None
        index = self.flow_by[near]
        frontier = list(dict.fromkeys(starts))
        expanded: dict[_Key, int] = dict.fromkeys(frontier, start_depth)
        level = start_depth
        while frontier and level < max_depth and flows:
            nxt: list[_Key] = []
            ints = [k for k in frontier if isinstance(k, int)]
            if ints and ids_table is not None:
                steps = self.con.execute(
                    f"SELECT DISTINCT far FROM {ids_table} WHERE near IN (SELECT unnest($1::BIGINT[]))", [ints]
                ).fetchall()
                for step in sorted(r[0] for r in steps if r[0] is not None):
                    if step not in expanded:
                        expanded[step] = level + 1
                        nxt.append(int(step))
            for key in frontier:
                for src, dst, row in index.get(key, ()):
                    step = src if direction == "up" else dst
                    if row[2] in flows and step is not None and step not in expanded:
                        expanded[step] = level + 1
                        nxt.append(step)
            frontier = nxt
            level += 1
        looked_up = [k for k, d in expanded.items() if d < max_depth]
        return [
            (row, expanded[dst if direction == "up" else src] + 1)
            for src, dst, row in self.lookup(looked_up, by=near, flow=True, relations=flows)
        ]

    def describe(self, keys: set[_Key]) -> None:
        """Read the compacted descriptions of the ids in ``keys`` into ``described``."""
        ids = sorted(k for k in keys if isinstance(k, int))
        if not ids:
            return
        self.described += self.con.execute(
            "SELECT node, source, name, locations, size_bytes, kind FROM _lineage_nodes "
            "WHERE id IN (SELECT unnest($1::BIGINT[])) AND source IS NOT NULL",
            [ids],
        ).fetchall()


def walk_table(con: duckdb.DuckDBPyConnection, direction: str, flows: Sequence[str]) -> str:
    """The name of a temporary table ``near, far`` of the compacted data-flow edges of ``flows``,
    sorted by ``near`` (the end a walk in ``direction`` looks up), made on first use."""
    chosen = sorted(set(flows))
    # Compacted edges only: the table stays valid, and is kept, as long as the snapshot is.
    name = (
        f"{SNAPSHOT_TABLE_PREFIX}walk_{direction}_{'all' if set(chosen) == set(FLOW_RELATIONS) else '_'.join(chosen)}"
    )
    if not con.execute("SELECT 1 FROM duckdb_tables() WHERE temporary AND table_name = $1", [name]).fetchall():
        near, far = ("dst", "src") if direction == "up" else ("src", "dst")
        only = "" if set(chosen) == set(FLOW_RELATIONS) else f" AND relation IN {_in_list(chosen)}"
        con.execute(
            f"CREATE TEMP TABLE {name} AS SELECT {near}_id AS near, {far}_id AS far "
            f"FROM _lineage_ids_by_{near} WHERE flow{only} ORDER BY near"
        )
    return name


def _context_edge(row: _Row) -> dict[str, Any]:
    """An edge as a graph holds it: ``src, dst, relation, run_id, task_name, task_id, timestamp``."""
    return dict(zip(("src", "dst", "relation", "run_id", "task_name", "task_id", "timestamp"), row, strict=True))


def _edge(row: _Row, depth: int, direction: str) -> dict[str, Any]:
    """A walked edge: a context edge's fields, its depth and the direction of the walk that found it."""
    return {**_context_edge(row), "depth": depth, "direction": direction}


def _check_relations(relations: Iterable[str] | None) -> tuple[str, ...]:
    if relations is None:
        return RELATIONS + RUN_RELATIONS
    chosen = tuple(dict.fromkeys(relations))
    unknown = [r for r in chosen if r not in RELATIONS + RUN_RELATIONS]
    if unknown or not chosen:
        raise ConfigError(
            f"relation {', '.join(map(repr, unknown)) or 'list is empty'}: use one or more of "
            f"{', '.join(RELATIONS + RUN_RELATIONS)}"
        )
    return chosen


def lineage_graph(
    con: duckdb.DuckDBPyConnection,
    node: str | None,
    *,
    direction: str = "up",
    depth: int | None = None,
    relations: Iterable[str] | None = None,
    max_nodes: int | None = None,
) -> LineageGraph:
    """Walk the data flow from ``node`` (or take every edge when ``node`` is None) into a graph.

    Args:
        con: a ledger connection (see :func:`scalable.ledger.views.connect`).
        node: anything :func:`resolve_node` takes; ``None`` for the whole ledger.
        direction: ``up`` (ancestors), ``down`` (descendants) or ``both``.
        depth: the largest number of edges from ``node``; unbounded (100) when None.
        relations: the relations walked (default: every data-flow relation, and from a run
            its ``generated`` and ``used`` edges).
        max_nodes: keep only the nodes nearest the root, at most this many; what is left out
            is counted in ``elided``.

    Raises:
        NodeNotFoundError: ``node`` names nothing in the ledger.
        AmbiguousNodeError: ``node`` names several nodes.
    """
    max_depth = depth if depth is not None else 100
    chosen = _check_relations(relations)
    walker = _Walker(con)
    if node is None:
        return _whole(con, walker, chosen)
    root, kind = resolve_node(con, node)
    root_key = walker.key_of(root)
    rows: list[tuple[_Row, int, str]] = []
    for way in {"up": ["up"], "down": ["down"], "both": ["up", "down"]}[direction]:
        starts: list[_Key] = [root_key]
        if kind == "run":
            # A run's own context is the first step; the walk goes on from its artifacts.
            starts = []
            seeds = [("generated", "src")] + ([("used", "dst")] if way == "up" else [])
            for relation, by in seeds:
                if relation not in chosen:
                    continue
                for src, dst, row in walker.lookup([root_key], by=by, flow=False, relations=[relation]):
                    rows.append((row, 1, way))
                    starts.append(dst if relation == "generated" else src)
        start_depth = 1 if kind == "run" else 0
        rows += [(row, d, way) for row, d in walker.walk(starts, start_depth, way, max_depth, chosen)]
    edges: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row, d, way in rows:
        edge = _edge(row, d, way)
        key = (edge["src"], edge["dst"], edge["relation"], edge["run_id"], edge["task_id"], way)
        if key not in edges or d < edges[key]["depth"]:
            edges[key] = edge
    graph = LineageGraph(
        root=root,
        edges=sorted(
            edges.values(),
            key=lambda e: (
                e["depth"],
                e["direction"],
                e["src"],
                e["dst"],
                e["relation"],
                e["run_id"],
                e["task_id"] or "",
            ),
        ),
        direction=direction,
    )
    if not graph.edges and kind == "artifact" and not _known(con, walker, root, root_key):
        raise NodeNotFoundError(
            f"{node!r} is not a digest, digest prefix, location, path, artifact name or run id in the ledger; "
            'find one with: scalable ledger query "SELECT artifact_name, digest, location FROM artifacts"'
        )
    if max_nodes is not None:
        _truncate(graph, max_nodes)
    artifacts = {e["src"] for e in graph.edges} | {e["dst"] for e in graph.edges} | {root}
    if kind == "run":
        artifacts.discard(root)
    context = walker.lookup(
        [walker.key_of(a) for a in sorted(artifacts)], by="dst", flow=False, relations=["generated"]
    )
    context += walker.lookup([walker.key_of(a) for a in sorted(artifacts)], by="src", flow=False, relations=["used"])
    graph.context = sorted(
        {tuple(r[2]): _context_edge(r[2]) for r in context}.values(),
        key=lambda e: (e["timestamp"] or "", e["src"], e["dst"], e["relation"]),
    )
    runs = {e["src"] for e in graph.context if e["relation"] == "generated"} | {
        e["dst"] for e in graph.context if e["relation"] == "used"
    }
    if kind == "run":
        runs.add(root)
    reused = walker.lookup([walker.key_of(r) for r in sorted(runs)], by="dst", flow=False, relations=["reused"])
    graph.context += [_context_edge(r[2]) for r in reused if r[2][0] in runs]
    _describe(con, walker, graph, artifacts, runs)
    return graph


def _known(con: duckdb.DuckDBPyConnection, walker: _Walker, root: str, key: _Key) -> bool:
    """Whether ``root`` appears anywhere in the lineage (an artifact with no edges at all)."""
    if isinstance(key, int):
        return True
    if walker.context_by["src"].get(key) or walker.context_by["dst"].get(key):
        return True
    return bool(
        con.execute(
            "SELECT 1 FROM lineage_context WHERE src = $1 OR dst = $1 UNION ALL "
            "SELECT 1 FROM events WHERE digest = $1 LIMIT 1",
            [root],
        ).fetchall()
    )


def _truncate(graph: LineageGraph, max_nodes: int) -> None:
    """Keep the ``max_nodes`` nodes nearest the root (the root first) and the edges between them."""
    nearest: dict[str, int] = {graph.root: 0} if graph.root is not None else {}
    for e in graph.edges:  # sorted by depth already
        for n in (e["src"], e["dst"]):
            nearest.setdefault(n, e["depth"])
    keep = set(sorted(nearest, key=lambda n: (nearest[n], n))[:max_nodes])
    kept = [e for e in graph.edges if e["src"] in keep and e["dst"] in keep]
    if len(keep) < len(nearest):
        graph.elided = {"nodes": len(nearest) - len(keep), "edges": len(graph.edges) - len(kept)}
    graph.edges = kept


def _whole(con: duckdb.DuckDBPyConnection, walker: _Walker, chosen: Sequence[str]) -> LineageGraph:
    """Every edge of the ledger: data flow (depth 0) and context, and every run."""
    flows = [r for r in chosen if r in FLOW_RELATIONS] or ["-"]
    graph = LineageGraph(root=None, direction="both")
    for r in con.execute(
        f"SELECT src, dst, relation, run_id, task_name, task_id, min(timestamp) FROM lineage "
        f"WHERE relation IN {_in_list(flows)} GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        graph.edges.append(_edge(tuple(r), 0, "down"))
    graph.context = [
        _context_edge(tuple(r))
        for r in con.execute(
            "SELECT src, dst, relation, run_id, task_name, task_id, min(timestamp) FROM lineage_context "
            "GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    ]
    artifacts = {e["src"] for e in graph.edges} | {e["dst"] for e in graph.edges}
    artifacts |= {e["dst"] for e in graph.context if e["relation"] == "generated"}
    artifacts |= {e["src"] for e in graph.context if e["relation"] == "used"}
    runs = {str(r[0]) for r in con.execute("SELECT run_id FROM runs").fetchall()}
    _describe(con, walker, graph, artifacts, runs, whole=True)
    return graph


def trace(
    ledger: Ledger,
    node: str | None,
    *,
    direction: str = "up",
    depth: int | None = None,
    as_of: str | None = None,
    relations: Iterable[str] | None = None,
    runs_only: bool = False,
    max_nodes: int | None = None,
) -> LineageGraph:
    """Return the lineage graph of ``node`` in ``ledger``.

    Args:
        ledger: the ledger whose views are walked.
        node: where to start: a digest, a digest prefix (at least 8 hex characters), a
            location URI or local path, an artifact name or a run id; ``None`` gives every
            edge of the ledger.
        direction: ``up`` (what it came from), ``down`` (what came of it) or ``both``.
        depth: the largest number of edges from ``node`` (unbounded when None).
        as_of: ISO-8601 time; the ledger as it was then.
        relations: the relations to walk and show (default: all); data-flow relations
            restrict the walk, ``generated``/``used`` a run's first step, ``informed``/``reused``
            the run-level graph.
        runs_only: return the run-level graph (:meth:`LineageGraph.runs_only`).
        max_nodes: at most this many nodes, the nearest to ``node``; ``elided`` counts the rest.

    Raises:
        ConfigError: ``direction``, ``depth``, ``relations`` or ``max_nodes`` is not valid.
        NodeNotFoundError: ``node`` names nothing in the ledger.
        AmbiguousNodeError: ``node`` names several nodes.
    """
    if direction not in DIRECTIONS:
        raise ConfigError(f"direction {direction!r} is not one of {', '.join(DIRECTIONS)}")
    if depth is not None and depth < 1:
        raise ConfigError(f"depth {depth} must be at least 1")
    if max_nodes is not None and max_nodes < 1:
        raise ConfigError(f"max_nodes {max_nodes} must be at least 1")
    chosen = _check_relations(relations)
    walked = None if runs_only else chosen  # the run-level graph is filtered after the walk

    def walk(con: duckdb.DuckDBPyConnection) -> LineageGraph:
        return lineage_graph(con, node, direction=direction, depth=depth, relations=walked, max_nodes=max_nodes)

    graph = read_snapshot(ledger, walk, as_of=as_of, trusted=True)
    graph.source = (ledger, as_of)
    if runs_only:
        graph = graph.runs_only()
        if relations is not None:
            graph.edges = [e for e in graph.edges if e["relation"] in chosen]
    return graph


# --- describing nodes --------------------------------------------------------------------------


def _describe(
    con: duckdb.DuckDBPyConnection,
    walker: _Walker,
    graph: LineageGraph,
    artifacts: set[str],
    runs: set[str],
    *,
    whole: bool = False,
) -> None:
    """Describe the graph's runs (from run events), artifacts (with their context) and tasks."""
    for chunk in _chunks(sorted(runs)):
        for run_id, attrs_started, attrs_finished, started, finished in con.execute(
            "SELECT run_id, any_value(attrs) FILTER (WHERE op = 'started'), "
            "any_value(attrs) FILTER (WHERE op = 'finished'), "
            "min(timestamp) FILTER (WHERE op = 'started'), max(timestamp) FILTER (WHERE op = 'finished') "
            f"FROM events WHERE run_id IN {_in_list(chunk)} AND event_type = 'run' GROUP BY run_id"
        ).fetchall():
            first = orjson.loads(attrs_started) if attrs_started else {}
            last = orjson.loads(attrs_finished) if attrs_finished else {}
            graph.nodes[run_id] = {
                **_run_stub(run_id),
                "project": first.get("project"),
                "status": last.get("status") or "running",
                "started_at": started,
                "finished_at": finished,
                "error_type": last.get("error_type"),
                "error": last.get("error"),
                "user": first.get("user"),
                "host": first.get("host"),
            }
    for run_id in runs:  # a run with events but no run event yet
        graph.nodes.setdefault(run_id, _run_stub(run_id))
    _describe_artifacts(con, walker, graph, artifacts, whole=whole)
    generated: dict[str, set[str]] = {}
    used: dict[str, set[str]] = {}
    for e in graph.context:
        if e["relation"] == "generated":
            generated.setdefault(e["dst"], set()).add(e["src"])
        elif e["relation"] == "used":
            used.setdefault(e["src"], set()).add(e["dst"])
    for node in artifacts:
        info = graph.nodes[node]
        info["generated_by"] = sorted(generated.get(node, ()))
        info["used_by"] = sorted(used.get(node, ()))
        info["label"] = _label(node, info)
    _describe_tasks(con, graph)


def _describe_tasks(con: duckdb.DuckDBPyConnection, graph: LineageGraph) -> None:
    """The task activities the graph's edges and context name, from the ``tasks`` view."""
    named = {(e["run_id"], e["task_id"]) for e in [*graph.edges, *graph.context] if e["task_id"] is not None}
    for run_id, task_id in sorted(named):
        graph.tasks[f"{run_id}/{task_id}"] = {
            "run_id": run_id,
            "task_id": task_id,
            "task_name": None,
            "started_at": None,
            "ended_at": None,
            "status": None,
        }
    for chunk in _chunks(sorted({r for r, _t in named})):
        for run_id, task_id, task_name, started, ended, status in con.execute(
            "SELECT run_id, task_id, task_name, started_at, ended_at, status FROM tasks "
            f"WHERE run_id IN {_in_list(chunk)}"
        ).fetchall():
            key = f"{run_id}/{task_id}"
            if key in graph.tasks:
                graph.tasks[key].update(task_name=task_name, started_at=started, ended_at=ended, status=status)
    times: dict[str, list[str]] = {}
    for e in [*graph.edges, *graph.context]:
        if e["task_id"] is not None and e["timestamp"]:
            times.setdefault(f"{e['run_id']}/{e['task_id']}", []).append(e["timestamp"])
            graph.tasks[f"{e['run_id']}/{e['task_id']}"]["task_name"] = (
                graph.tasks[f"{e['run_id']}/{e['task_id']}"]["task_name"] or e["task_name"]
            )
    for key, info in graph.tasks.items():
        # A task recorded by name only has no task events: its times are those of its edges.
        if info["started_at"] is None and key in times:
            info["started_at"] = min(times[key])
        if info["ended_at"] is None and key in times and info["status"] is None:
            info["ended_at"] = max(times[key])


def _describe_artifacts(
    con: duckdb.DuckDBPyConnection, walker: _Walker, graph: LineageGraph, ids: set[str], *, whole: bool
) -> None:
    """Describe artifact nodes from compacted descriptions and the events not compacted.

    Compacted descriptions are read for the nodes' ids (unless as of a time, when the filtered
    events are read instead); the events the compacted files do not cover are always read.
    """
    if not ids:
        return
    names = _relations(con)
    known: list[tuple[Any, ...]] | None = None
    if walker.compacted and not walker.cutoff and not whole:
        walker.describe({walker.key_of(n) for n in ids})
        known = walker.described
    found: list[tuple[Any, ...]] = list(known or [])
    if known is None or "_tail_events" in names:
        source = "events" if known is None else "_tail_events"
        if "_walk_nodes" not in names:
            con.execute(f"CREATE TEMP TABLE _walk_nodes AS {nodes_sql(source)}")
        if con.execute("SELECT count(*) FROM (SELECT 1 FROM _walk_nodes LIMIT 1)").fetchall()[0][0]:
            for chunk in _chunks(sorted(ids)):
                found += con.execute(
                    "SELECT node, source, name, locations, size_bytes, kind FROM _walk_nodes "
                    f"WHERE node IN {_in_list(chunk)}"
                ).fetchall()
    described: dict[str, dict[str, Any]] = {}
    cached: dict[str, dict[str, Any]] = {}
    for node, source, name, locations, size, kind in found:
        if source is None or node not in ids:
            continue
        target = described if source == "artifact" else cached
        info = target.setdefault(node, {"name": None, "locations": [], "size_bytes": None, "kind": None})
        # The smallest value of each, as in SQL, so the result does not depend on read order.
        info["name"] = min(filter(None, (info["name"], name)), default=None)
        info["locations"] = sorted({*info["locations"], *(locations or [])})
        info["size_bytes"] = min((v for v in (info["size_bytes"], size) if v is not None), default=None)
        info["kind"] = min(filter(None, (info["kind"], kind)), default=None)
    for node in ids:
        if node in described:
            info = described[node]
            graph.nodes[node] = {
                "kind": "artifact",
                "name": info["name"],
                "locations": info["locations"],
                "size_bytes": info["size_bytes"],
                "artifact_kind": info["kind"],
            }
        elif node in cached:
            info = cached[node]
            graph.nodes[node] = {
                "kind": "artifact",
                "name": f"{info['name']}() result",
                "locations": [],
                "size_bytes": info["size_bytes"],
                "artifact_kind": "cache",
            }
        else:
            graph.nodes[node] = {
                "kind": "artifact",
                "name": None,
                "locations": [node] if "://" in node else [],
                "size_bytes": None,
                "artifact_kind": None,
            }
