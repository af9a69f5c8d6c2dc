"""What each page of the explorer shows, computed through the public ``Ledger`` API only.

Every function here takes an open :class:`~scalable.ledger.Ledger` and returns plain data
(what the JSON endpoints send). Reads go through ``Ledger.query`` (the read-only query path),
``Ledger.lineage``, ``Ledger.audit`` and ``Ledger.diff``; nothing reads a ledger file itself,
so whatever those guarantee (read-only SQL, snapshots, remote ledgers) holds here as well.
Values from a request reach SQL only as quoted literals or checked names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from scalable.errors import ConfigError, EventValidationError, NodeNotFoundError, RunNotFoundError
from scalable.ledger.events import normalize_timestamp
from scalable.ledger.sql import quote

if TYPE_CHECKING:
    import pyarrow as pa

    from scalable.ledger.log import Ledger

__all__ = [
    "LINEAGE_NODE_LIMIT",
    "RUN_COLUMNS",
    "RUN_SORTS",
    "RunFilter",
    "artifact_page",
    "audit_states",
    "compare_page",
    "lineage_page",
    "rows_of",
    "run_page",
    "runs_page",
    "sql_page",
]

#: The columns of a row of the runs table, as ``scalable ledger runs`` has them plus the cache counts.
RUN_COLUMNS: Final = (
    "run_id",
    "project",
    "target",
    "status",
    "started_at",
    "finished_at",
    "tasks",
    "failed_tasks",
    "artifacts",
    "bytes",
    "cache_hits",
    "cache_misses",
    "events",
)
#: Columns the runs table sorts by.
RUN_SORTS: Final = RUN_COLUMNS
#: The most nodes a lineage answer carries; the walk's nearest nodes are kept, the rest counted.
LINEAGE_NODE_LIMIT: Final = 5000
#: Above this many nodes the lineage page starts collapsed into groups (run and task).
COLLAPSE_ABOVE: Final = 300
#: The most rows the SQL console shows (downloads carry every row).
SQL_ROWS_SHOWN: Final = 1000
_PAGE_MAX: Final = 1000


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    """An Arrow table as a list of row mappings."""
    return list(table.to_pylist())


def _one(ledger: Ledger, sql: str) -> list[dict[str, Any]]:
    return rows_of(ledger.query(sql))


def _attrs(text: Any) -> dict[str, Any]:
    """The JSON object of an ``attrs`` value (``{}`` when absent or not an object)."""
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


# --- runs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFilter:
    """What the runs table is narrowed to and how it is ordered.

    Attributes:
        project: only runs of this project.
        status: only runs of this status (``completed``, ``failed``, ``running``...).
        since: only runs started at or after this ISO-8601 time.
        until: only runs started at or before this ISO-8601 time.
        text: only runs whose id, project, target, task or artifact names or locations
            contain this text (any case).
        sort: the column to order by (one of :data:`RUN_SORTS`).
        descending: newest (largest) first.
        limit: the most rows returned (1 to 1000).
        offset: rows skipped before the first returned.
    """

    project: str | None = None
    status: str | None = None
    since: str | None = None
    until: str | None = None
    text: str | None = None
    sort: str = "started_at"
    descending: bool = True
    limit: int = 100
    offset: int = 0

    def checked(self) -> RunFilter:
        """This filter with its times normalised; bad values raise.

        Raises:
            ConfigError: an unknown sort column, or a limit or offset out of range.
            EventValidationError: ``since`` or ``until`` is not an ISO-8601 time.
        """
        if self.sort not in RUN_SORTS:
            raise ConfigError(f"cannot sort runs by {self.sort!r}; choose one of {', '.join(RUN_SORTS)}")
        if not 1 <= self.limit <= _PAGE_MAX:
            raise ConfigError(f"limit {self.limit} is out of range; give 1 to {_PAGE_MAX}")
        if self.offset < 0:
            raise ConfigError(f"offset {self.offset} is negative; give 0 or more")
        return RunFilter(
            project=self.project or None,
            status=self.status or None,
            since=normalize_timestamp(self.since) if self.since else None,
            until=_end_of(self.until) if self.until else None,
            text=self.text or None,
            sort=self.sort,
            descending=self.descending,
            limit=self.limit,
            offset=self.offset,
        )

    def where(self) -> str:
        """The SQL condition on the ``runs`` view (literals quoted)."""
        terms = ["true"]
        if self.project is not None:
            terms.append(f"project = {quote(self.project)}")
        if self.status is not None:
            terms.append(f"status = {quote(self.status)}")
        if self.since is not None:
            terms.append(f"started_at >= {quote(self.since)}")
        if self.until is not None:
            terms.append(f"started_at <= {quote(self.until)}")
        if self.text is not None:
            needle = quote(self.text.lower())
            fields = ("run_id", "project", "target", "status")
            inside = (
                "run_id IN (SELECT DISTINCT run_id FROM events WHERE "
                + " OR ".join(f"contains(lower({c}), {needle})" for c in ("task_name", "artifact_name", "location"))
                + ")"
            )
            terms.append(
                "(" + " OR ".join([*(f"contains(lower(coalesce({c}, '')), {needle})" for c in fields), inside]) + ")"
            )
        return " AND ".join(terms)


def _end_of(value: str) -> str:
    """``until`` as a bound: a bare date means the end of that day."""
    text = value.strip()
    if len(text) == 10 and text[4] == "-" and text[7] == "-":
        return normalize_timestamp(text + "T23:59:59.999999")
    return normalize_timestamp(text)


def runs_page(ledger: Ledger, wanted: RunFilter) -> dict[str, Any]:
    """The runs table: one page of rows, how many match, and the projects and statuses to filter by.

    Raises:
        ConfigError: a bad sort column, limit or offset.
        EventValidationError: a bad ``since`` or ``until``.
    """
    f = wanted.checked()
    order = "DESC" if f.descending else "ASC"
    # One query (one connection): the page of rows, the matching count and the facets, all
    # from the runs view computed once.
    (found,) = _one(
        ledger,
        "WITH r AS MATERIALIZED (SELECT * FROM runs), m AS (SELECT * FROM r WHERE " + f.where() + ") SELECT "
        f"(SELECT list(p ORDER BY p.{f.sort} {order} NULLS LAST, p.run_id {order}) FROM (SELECT {', '.join(RUN_COLUMNS)} "
        f"FROM m ORDER BY {f.sort} {order} NULLS LAST, run_id {order} LIMIT {f.limit} OFFSET {f.offset}) p) AS rows, "
        "(SELECT count(*) FROM m) AS total, "
        "(SELECT list(x) FROM (SELECT project, status, count(*) AS runs FROM r GROUP BY ALL ORDER BY ALL) x) AS facets",
    )
    rows, total, facets = found["rows"] or [], found["total"], found["facets"] or []
    projects: dict[str, int] = {}
    statuses: dict[str, int] = {}
    for facet in facets:
        if facet["project"] is not None:
            projects[facet["project"]] = projects.get(facet["project"], 0) + facet["runs"]
        statuses[facet["status"]] = statuses.get(facet["status"], 0) + facet["runs"]
    return {
        "runs": rows,
        "total": int(total),
        "all_runs": sum(statuses.values()),
        "offset": f.offset,
        "limit": f.limit,
        "sort": f.sort,
        "order": order.lower(),
        "projects": projects,
        "statuses": statuses,
    }


def audit_states(ledger: Ledger, run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The structural audit of each run: ``{run_id: {"ok", "problems", "events"}}`` (an unknown run: ``ok`` None).

    The content of stored bytes is not re-hashed here (that is the audit page's work).
    """
    states: dict[str, dict[str, Any]] = {}
    for run_id in dict.fromkeys(run_ids):
        try:
            report = ledger.audit(run_id, content=False)
        except (RunNotFoundError, EventValidationError) as exc:  # unknown, or an id no run can have
            states[run_id] = {"ok": None, "problems": 0, "events": 0, "error": str(exc)}
            continue
        states[run_id] = {"ok": report.ok, "problems": len(report.problems), "events": report.events}
    return states


def _run_row(ledger: Ledger, run_id: str) -> dict[str, Any]:
    rows = _one(ledger, f"SELECT * FROM runs WHERE run_id = {quote(run_id)}")
    if not rows:
        raise RunNotFoundError(f"run {run_id!r} is not in the ledger; list runs with: scalable ledger runs")
    return rows[0]


def run_page(ledger: Ledger, run_id: str) -> dict[str, Any]:
    """One run: its summary, start and finish records, tasks (with worker), artifacts and cache lookups.

    A cache hit names the run that wrote the entry it hit (``writer_run``): the one the hit
    event records, else the earliest run that wrote that key.

    Raises:
        RunNotFoundError: the run has no events.
    """
    q = quote(run_id)
    # One query (one connection) for every part of the page.
    (found,) = _one(
        ledger,
        f"SELECT (SELECT list(r) FROM runs r WHERE r.run_id = {q}) AS run, "
        "(SELECT list(e ORDER BY e.timestamp) FROM (SELECT op, timestamp, attrs, writer FROM events "
        f"WHERE run_id = {q} AND event_type = 'run') e) AS records, "
        "(SELECT list(t ORDER BY t.started_at NULLS LAST, t.task_id) FROM (SELECT t.task_name, t.task_id, "
        "t.component, t.status, t.started_at, t.ended_at, t.duration_s, t.error_type, t.error, w.writer AS worker "
        "FROM tasks t LEFT JOIN (SELECT task_name, coalesce(json_extract_string(attrs, '$.task_id'), task_name) "
        f"AS task_id, min(writer) AS writer FROM events WHERE run_id = {q} AND event_type = 'task' AND op = 'started' "
        f"GROUP BY ALL) w USING (task_name, task_id) WHERE t.run_id = {q}) t) AS tasks, "
        "(SELECT list(a ORDER BY a.timestamp, a.event_id) FROM (SELECT event_id, timestamp, op, task_name, "
        "artifact_name, location, kind, size_bytes, digest, key, store, inputs FROM artifacts "
        f"WHERE run_id = {q}) a) AS artifacts, "
        "(SELECT list(c ORDER BY c.timestamp, c.event_id) FROM (SELECT c.event_id, c.timestamp, c.op, c.task_name, "
        "c.function_name, c.key_digest, c.digest, c.size_bytes, c.duration_s, CASE WHEN c.op = 'hit' THEN "
        "coalesce(json_extract_string(c.attrs, '$.writer_run'), w.run_id) END AS writer_run FROM cache c LEFT JOIN "
        "(SELECT key_digest, min_by(run_id, timestamp) AS run_id FROM cache WHERE op = 'write' AND key_digest IN "
        f"(SELECT key_digest FROM cache WHERE run_id = {q} AND op = 'hit') GROUP BY key_digest) w USING (key_digest) "
        f"WHERE c.run_id = {q}) c) AS cache",
    )
    if not found["run"]:
        raise RunNotFoundError(f"run {run_id!r} is not in the ledger; list runs with: scalable ledger runs")
    run = found["run"][0]
    records = found["records"] or []
    tasks = found["tasks"] or []
    artifacts = found["artifacts"] or []
    cache = found["cache"] or []
    started = next((r for r in records if r["op"] == "started"), None)
    finished = next((r for r in records if r["op"] == "finished"), None)
    start_attrs = _attrs(started["attrs"]) if started else {}
    finish_attrs = _attrs(finished["attrs"]) if finished else {}
    return {
        "run": run,
        "started": {**start_attrs, "writer": started["writer"]} if started else None,
        "finished": finish_attrs or None,
        "manifest_lock": start_attrs.get("manifest_lock"),
        "tasks": tasks,
        "artifacts": artifacts,
        "cache": cache,
    }


def compare_page(ledger: Ledger, run_a: str, run_b: str) -> dict[str, Any]:
    """Two runs side by side: both summaries and :meth:`Ledger.diff` of them.

    Raises:
        RunNotFoundError: a run has no events.
    """
    result = ledger.diff(run_a, run_b)
    return {"a": _run_row(ledger, run_a), "b": _run_row(ledger, run_b), **result.to_dict()}


# --- artifacts ---------------------------------------------------------------------------


def _edges_of(ledger: Ledger, digests: Sequence[str]) -> list[dict[str, Any]]:
    """Lineage edges into and out of the given nodes (the ``lineage`` view)."""
    if not digests:
        return []
    nodes = ", ".join(quote(d) for d in digests)
    return _one(
        ledger,
        "SELECT src, dst, relation, run_id, task_name, min(timestamp) AS timestamp FROM lineage "
        f"WHERE src IN ({nodes}) OR dst IN ({nodes}) GROUP BY ALL ORDER BY timestamp, src, dst, relation",
    )


def artifact_page(ledger: Ledger, *, location: str | None = None, digest: str | None = None) -> dict[str, Any]:
    """Every version recorded at ``location`` over time, or one version (``digest``) and where it is.

    Each version (a digest) lists the artifact events that recorded, stored, read or deleted
    it there (run, task, time) and its lineage edges: what it came from and what used it.

    Raises:
        ConfigError: neither or both of ``location`` and ``digest`` are given.
        NodeNotFoundError: nothing is recorded at ``location`` / no artifact has ``digest``.
    """
    if (location is None) == (digest is None):
        raise ConfigError("give one of location= (every version at a location) or digest= (one version)")
    where = f"location = {quote(location)}" if location is not None else f"digest = {quote(str(digest))}"
    events = _one(
        ledger,
        "SELECT timestamp, run_id, task_name, op, artifact_name, location, kind, size_bytes, digest, key, store, inputs "
        f"FROM artifacts WHERE {where} ORDER BY timestamp, event_id",
    )
    if not events:
        what = f"at {location!r}" if location is not None else f"with digest {digest!r}"
        raise NodeNotFoundError(
            f"no artifact is recorded {what}; find one with: "
            'scalable ledger query "SELECT location, digest FROM artifacts"'
        )
    versions: dict[str, dict[str, Any]] = {}
    for event in events:
        key = event["digest"] or ""
        version = versions.setdefault(
            key,
            {
                "digest": event["digest"],
                "first_seen": event["timestamp"],
                "last_seen": event["timestamp"],
                "size_bytes": event["size_bytes"],
                "name": event["artifact_name"],
                "kind": event["kind"],
                "locations": [],
                "events": [],
            },
        )
        version["last_seen"] = event["timestamp"]
        if event["location"] and event["location"] not in version["locations"]:
            version["locations"].append(event["location"])
        version["events"].append(event)
    edges = _edges_of(ledger, [d for d in versions if d])
    latest = _latest_at(ledger, sorted({loc for v in versions.values() for loc in v["locations"]}))
    for key, version in versions.items():
        version["came_from"] = [e for e in edges if key and e["dst"] == key]
        version["went_to"] = [e for e in edges if key and e["src"] == key]
        # Where these bytes are still the newest version: only there can they be downloaded.
        version["current_at"] = [loc for loc in version["locations"] if key and latest.get(loc) == key]
    return {
        "location": location,
        "digest": digest,
        "current": latest.get(location) if location is not None else None,
        "versions": list(versions.values()),
    }


def _latest_at(ledger: Ledger, locations: Sequence[str]) -> dict[str, str | None]:
    """The digest of the newest version at each location (``None`` where the newest event deleted it)."""
    if not locations:
        return {}
    rows = _one(
        ledger,
        "SELECT location, arg_max_null(CASE WHEN op = 'deleted' THEN NULL ELSE digest END, (timestamp, event_id)) AS digest "
        f"FROM artifacts WHERE op IN ('put', 'recorded', 'deleted') AND location IN ({', '.join(quote(x) for x in locations)}) "
        "GROUP BY location",
    )
    return {r["location"]: r["digest"] for r in rows}


# --- lineage -----------------------------------------------------------------------------


def _reachable(root: str, edges: Sequence[Mapping[str, Any]], direction: str) -> set[str]:
    """Nodes reached from ``root`` over ``edges`` in the walk's direction(s)."""
    ways = {"up": ("up",), "down": ("down",), "both": ("up", "down")}[direction]
    seen = {root}
    for way in ways:
        nxt: dict[str, list[str]] = {}
        for e in edges:
            a, b = (e["dst"], e["src"]) if way == "up" else (e["src"], e["dst"])
            nxt.setdefault(a, []).append(b)
        frontier = [root]
        reached = {root}
        while frontier:
            node = frontier.pop()
            for step in nxt.get(node, ()):
                if step not in reached:
                    reached.add(step)
                    frontier.append(step)
        seen |= reached
    return seen


def _edge_key(e: Mapping[str, Any]) -> tuple[Any, ...]:
    return (e["src"], e["dst"], e["relation"], e.get("run_id"), e.get("task_id"))


def lineage_page(
    ledger: Ledger,
    node: str,
    *,
    direction: str = "up",
    depth: int | None = None,
    relations: Sequence[str] = (),
    limit: int = LINEAGE_NODE_LIMIT,
) -> dict[str, Any]:
    """The lineage graph of ``node`` as the page draws it: nodes, edges, groups to collapse into.

    The nodes are those of ``Ledger.lineage(node, direction=, depth=).to_json()``; the edges
    are its walked (data-flow) edges, then its context edges (which run generated or used a
    version, which run reused another's cache entry) between those nodes. Each node gets a
    ``label``, its ``depth`` (data-flow edges from the root; a run takes the depth of the
    nearest version it generated or used) and the ``run`` and ``task`` that generated it (a
    run is its own run; a version no run generated takes the run and task of the edge that
    reached it, or of a run that used it). ``relations`` keeps only edges of those relations:
    the data flow still reached from the root over them, and the context edges of what is
    kept. When more than ``limit`` nodes are reached, the nearest are kept (by the depth of
    their nearest edge) and ``truncated`` counts the rest. ``collapsed`` says the page should
    start with groups (by depth, run and task) rather than nodes (more than
    :data:`COLLAPSE_ABOVE` nodes).

    Raises:
        ConfigError: a bad direction or depth.
        NodeNotFoundError: ``node`` is not in the lineage.
    """
    graph = ledger.lineage(node, direction=direction, depth=depth)
    data = json.loads(graph.to_json())
    root = data.get("root") or node
    nodes: dict[str, dict[str, Any]] = {n["id"]: n for n in data["nodes"]}
    flow: list[dict[str, Any]] = data["edges"]
    walked = {_edge_key(e) for e in flow}
    context: list[dict[str, Any]] = [
        e for e in data["context"] if e["src"] in nodes and e["dst"] in nodes and _edge_key(e) not in walked
    ]
    all_relations: dict[str, int] = {}
    for e in flow + context:
        all_relations[e["relation"]] = all_relations.get(e["relation"], 0) + 1
    if relations:
        unknown = sorted(set(relations) - set(all_relations))
        flow = [e for e in flow if e["relation"] in relations]
        kept = _reachable(root, flow, direction)
        flow = [e for e in flow if e["src"] in kept and e["dst"] in kept]
        chosen = [e for e in context if e["relation"] in relations]
        around = [e for e in chosen if e["relation"] != "reused" and (e["src"] in kept or e["dst"] in kept)]
        kept |= {end for e in around for end in (e["src"], e["dst"])}
        context = around + [e for e in chosen if e["relation"] == "reused" and e["src"] in kept and e["dst"] in kept]
        nodes = {k: v for k, v in nodes.items() if k in kept}
    else:
        unknown = []
    nearest: dict[str, int] = {root: 0}
    into: dict[str, dict[str, Any]] = {}
    for e in flow:
        d = int(e.get("depth") or 0)
        for end in (e["src"], e["dst"]):
            if end != root and d < nearest.get(end, d + 1):
                nearest[end] = d
        if e["dst"] not in into or d < int(into[e["dst"]].get("depth") or 0):
            into[e["dst"]] = e
    made: dict[str, dict[str, Any]] = {}
    for e in context:  # in time order: the first run that generated a version, else one that used it
        if e["relation"] == "generated":
            made.setdefault(e["dst"], e)
        elif e["relation"] == "used":
            into.setdefault(e["src"], e)
        if e["relation"] in ("generated", "used"):
            run, version = (e["src"], e["dst"]) if e["relation"] == "generated" else (e["dst"], e["src"])
            if run != root and version in nearest and nearest[version] < nearest.get(run, nearest[version] + 1):
                nearest[run] = nearest[version]
    truncated = 0
    if len(nodes) > limit:
        order = sorted(nodes, key=lambda n: (nearest.get(n, 1 << 30), n))
        keep = set(order[:limit]) | {root}
        truncated = len(nodes) - len(keep)
        nodes = {k: v for k, v in nodes.items() if k in keep}
    edges = [e for e in flow + context if e["src"] in nodes and e["dst"] in nodes]
    for key, info in nodes.items():
        info["label"] = graph.label(key)
        info["depth"] = nearest.get(key)
        # The run and task a node belongs to (a run is its own): what the page collapses by.
        origin = made.get(key) or into.get(key) or {}
        info["run"] = key if info.get("kind") == "run" else origin.get("run_id")
        info["task"] = None if info.get("kind") == "run" else origin.get("task_name")
    return {
        "root": root,
        "node": node,
        "direction": direction,
        "depth": depth,
        "relations": all_relations,
        "shown_relations": sorted(set(relations)) if relations else sorted(all_relations),
        "unknown_relations": unknown,
        "nodes": list(nodes.values()),
        "edges": edges,
        "truncated": truncated,
        "collapsed": len(nodes) > COLLAPSE_ABOVE,
    }


# --- SQL ---------------------------------------------------------------------------------


def sql_page(ledger: Ledger, sql: str, *, as_of: str | None = None, limit: int = SQL_ROWS_SHOWN) -> dict[str, Any]:
    """Run read-only ``sql`` through ``Ledger.query``; the first ``limit`` rows, column names and types.

    Raises:
        ReadOnlyQueryError: the statement is not read-only (the same refusal as the CLI's).
        QueryError: the SQL does not parse, bind or run.
    """
    table = ledger.query(sql, as_of=as_of)
    shown = table.slice(0, limit)
    # Column by column: a result may name two columns alike, which row mappings would merge.
    columns = [shown.column(i).to_pylist() for i in range(shown.num_columns)]
    return {
        "columns": table.column_names,
        "types": [str(f.type) for f in table.schema],
        "rows": [list(row) for row in zip(*columns, strict=True)] if columns else [],
        "row_count": table.num_rows,
        "truncated": table.num_rows > limit,
    }
