"""Lineage edges: what an edge is, the SQL that derives edges from events, and the lineage views.

The model. A node is an artifact *version*: its content digest, or its URI where no digest is
known. The same bytes recorded in several runs are one node. A URI given as an input resolves
to the digest last put, recorded, used or fetched at that location at the time of the event, so lineage
follows versions, not names. Runs are not nodes of the data flow: they are its context.

Data flow (walked by ``ancestors``/``descendants`` and :func:`~scalable.ledger.lineage.trace`),
``src`` -> ``dst`` in the direction data flows:

================  ============================  ==================================================
relation          src -> dst                    from
================  ============================  ==================================================
derived_from      input -> output               each ``inputs`` entry of an artifact event or of a
                                                cache write (a cached function's file arguments)
derived_in_task   use -> later generation       inside one task: every artifact the task used
                                                before it put or recorded an artifact
================  ============================  ==================================================

A task is a submitted call (its ``task_id``, stamped into every event it raised) or, for
events that carry a task name but no task id, the named task of the run. A task *uses* what it
got from a store, recorded as an input (``used``), found in the cache (a hit, and the value a
cache write returned to it) and every ``inputs`` entry of its events; it *generates* what it
put or recorded. "Before" is the task's own chain order: ``seq`` for lines of one writer, the
time-ordered event id across writers. A cache write's value derives only from the function's
file arguments (its ``inputs``), never from what the task did before the call, so a reused
value carries exactly its own lineage into the run that reuses it. Where a task declared X
as an input of Y, X -> Y is a ``derived_from`` edge only (not a ``derived_in_task`` one as
well, whichever of the task's events generated Y), and no version derives from itself: a
task that copies X to X adds no edge.

Context (reported with every node, never walked through), in the ``lineage_context`` view:

============  ============================  ==================================================
relation      src -> dst                    from
============  ============================  ==================================================
generated     run -> artifact               artifact ``put``/``recorded``, cache ``write``
used          artifact -> run               artifact ``get``/``used``, cache ``hit``, every
                                            ``inputs`` entry
reused        writing run -> reading run    a cache hit on an entry another run wrote
============  ============================  ==================================================

Both views have the columns ``src, dst, relation, run_id, task_name, task_id, timestamp`` (the
run, task and time of the event that made the edge; for ``derived_in_task``, of the
generation). The same SQL computes the edges of the events not compacted yet and the
compacted edge files (:mod:`scalable.ledger.lineage_files`). ``ancestors(node)`` walks data
flow backwards (what ``node`` came from), ``descendants(node)`` forwards (what came of it);
from a run id, the first step is the run's own context (what it generated, and for
``ancestors`` what it used) and the walk goes on from those artifacts. Both are breadth-first,
cycle-safe (an edge is visited once, at its smallest depth) and bounded by ``max_depth``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from scalable.ledger.sql import escape_glob, quote

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "CONTEXT_RELATIONS",
    "EDGE_COLUMNS",
    "EDGE_LAYOUT",
    "FLOW_RELATIONS",
    "RELATIONS",
    "create_lineage_views",
    "edges_sql",
    "layout_is_current",
    "nodes_sql",
    "versions_sql",
]

#: The columns of an edge, in order (the ``lineage`` and ``lineage_context`` views).
EDGE_COLUMNS: Final = "src, dst, relation, run_id, task_name, task_id, timestamp"
#: Relations of data flow: walked.
FLOW_RELATIONS: Final = ("derived_from", "derived_in_task")
#: Relations of context: reported with nodes, never walked through.
CONTEXT_RELATIONS: Final = ("generated", "used", "reused")
#: Every relation.
RELATIONS: Final = FLOW_RELATIONS + CONTEXT_RELATIONS
#: The layout of the compacted edge files this SQL writes, part of their names; files of an
#: older layout (edges of another model) are ignored, and the next full compaction rewrites them.
EDGE_LAYOUT: Final = "v2"


def layout_is_current(edge_file: str) -> bool:
    """Whether a compacted edge file (its path) has the current :data:`EDGE_LAYOUT`."""
    return edge_file.rsplit("/", 1)[-1].startswith(f"{EDGE_LAYOUT}-")


def versions_sql(events: str) -> str:
    """SQL of the artifact versions of ``events``: ``location, digest, timestamp`` of each artifact
    put, recorded, used or fetched (each event saw that version at that location then)."""
    return (
        f"SELECT location, digest, timestamp FROM {events} WHERE event_type = 'artifact' "
        "AND op IN ('put', 'recorded', 'used', 'get') AND location IS NOT NULL AND digest IS NOT NULL"
    )


def _lineage_events(events: str, where: str = "") -> str:
    """The artifact and cache events of ``events`` with their node (``item``), task key and cache writer."""
    return f"""
       SELECT event_id, event_type, op, run_id, task_name,
              CASE WHEN task_name IS NOT NULL
                   THEN coalesce(json_extract_string(attrs, '$.task_id'), task_name) END AS task_id,
              writer, seq, timestamp, coalesce(digest, location) AS item, inputs,
              CASE WHEN event_type = 'cache' AND op = 'hit'
                   THEN json_extract_string(attrs, '$.writer_run') END AS writer_run
         FROM {events} WHERE event_type IN ('artifact', 'cache'){where}"""


def _inputs(ev: str, versions: str) -> str:
    """One row per ``inputs`` entry of ``ev``, resolved to the version it stands for."""
    # The newest version at or before each event, found by a join and arg_max rather than an
    # ASOF join, which DuckDB cannot plan inside the recursive CTEs of the walk macros.
    return f"""
       SELECT coalesce(arg_max(v.digest, v.timestamp), i.input) AS input_item, i.event_id, i.event_type,
              i.op, i.item, i.run_id, i.task_name, i.task_id, i.writer, i.seq, i.timestamp
         FROM (SELECT event_id, event_type, op, item, run_id, task_name, task_id, writer, seq, timestamp,
                      unnest(inputs) AS input, generate_subscripts(inputs, 1) AS pos
                 FROM {ev} WHERE inputs IS NOT NULL AND len(inputs) > 0) i
         LEFT JOIN {versions} v ON i.input = v.location AND v.timestamp <= i.timestamp
        GROUP BY i.event_id, i.pos, i.input, i.event_type, i.op, i.item, i.run_id, i.task_name, i.task_id,
                 i.writer, i.seq, i.timestamp"""


#: The events whose ``inputs`` declare what their artifact (or cached value) derives from.
_DECLARING: Final = (
    "(({e}.event_type = 'artifact' AND {e}.op IN ('put', 'recorded', 'used')) "
    "OR ({e}.event_type = 'cache' AND {e}.op = 'write'))"
)


def _uses(ev: str, inp: str) -> str:
    """What the events of ``ev`` used: ``item, ..., returned`` (``returned``: a cache write's value)."""
    return f"""
       SELECT item, run_id, task_name, task_id, writer, seq, event_id, timestamp,
              event_type = 'cache' AND op = 'write' AS returned
         FROM {ev}
        WHERE item IS NOT NULL
          AND ((event_type = 'artifact' AND op IN ('get', 'used')) OR (event_type = 'cache' AND op IN ('hit', 'write')))
       UNION ALL
       SELECT input_item, run_id, task_name, task_id, writer, seq, event_id, timestamp, false FROM {inp}"""


def edges_sql(events: str, versions: str, *, uses_from: str | None = None) -> str:
    """SQL of the lineage edges (``EDGE_COLUMNS`` plus ``flow``) made by the events of ``events``.

    Args:
        events: a relation with the event columns whose edges are computed.
        versions: a relation ``location, digest, timestamp`` of artifact versions that URI
            inputs resolve against (the newest version at or before the event).
        uses_from: a relation with the event columns that also holds the earlier events of
            the tasks in ``events`` (when ``events`` is the tail of a partly compacted run);
            ``None``: ``events`` holds them.
    """
    ctes = [("_ev", _lineage_events(events)), ("_inp", _inputs("_ev", versions)), ("_use", _uses("_ev", "_inp"))]
    if uses_from is None:
        ctes.append(("_task_use", "SELECT * FROM _use WHERE task_id IS NOT NULL"))
        ctes.append(("_task_inp", "SELECT * FROM _inp WHERE task_id IS NOT NULL"))
    else:
        # The uses of the same tasks wherever they are, compacted or not, for the tasks that
        # generated something here.
        earlier = _lineage_events(
            uses_from,
            " AND task_name IS NOT NULL AND run_id IN (SELECT DISTINCT run_id FROM _gen)",
        )
        ctes += [
            ("_all_ev", earlier),
            ("_all_inp", _inputs("_all_ev", versions)),
            ("_task_use", f"SELECT * FROM ({_uses('_all_ev', '_all_inp')}) u WHERE task_id IS NOT NULL"),
            ("_task_inp", "SELECT * FROM _all_inp WHERE task_id IS NOT NULL"),
        ]
    gen = (
        "SELECT item, run_id, task_name, task_id, writer, seq, event_id, timestamp FROM _ev "
        "WHERE event_type = 'artifact' AND op IN ('put', 'recorded') AND item IS NOT NULL AND task_id IS NOT NULL"
    )
    ctes.insert(3, ("_gen", gen))
    with_clause = ",\n".join(f"{name} AS ({sql})" for name, sql in ctes)
    return f"""
       WITH {with_clause}
       SELECT input_item AS src, item AS dst, 'derived_from' AS relation, true AS flow, run_id, task_name, task_id,
              timestamp
         FROM _inp
        WHERE item IS NOT NULL AND input_item <> item AND {_DECLARING.format(e="_inp")}
       UNION ALL
       SELECT u.item, g.item, 'derived_in_task', true, g.run_id, g.task_name, g.task_id,
              min(greatest(u.timestamp, g.timestamp))
         FROM _task_use u JOIN _gen g ON u.run_id = g.run_id AND u.task_id = g.task_id
        WHERE u.item <> g.item
          AND ((u.writer = g.writer AND u.seq < g.seq) OR (u.writer <> g.writer AND u.event_id < g.event_id))
          AND NOT EXISTS (SELECT 1 FROM _task_inp i
                           WHERE i.run_id = g.run_id AND i.task_id = g.task_id AND i.item = g.item
                             AND i.input_item = u.item AND {_DECLARING.format(e="i")})
        GROUP BY u.item, g.item, g.run_id, g.task_name, g.task_id
       UNION ALL
       SELECT run_id, item, 'generated', false, run_id, task_name, task_id, timestamp
         FROM _ev
        WHERE item IS NOT NULL AND ((event_type = 'artifact' AND op IN ('put', 'recorded'))
                                    OR (event_type = 'cache' AND op = 'write'))
       UNION ALL
       SELECT item, run_id, 'used', false, run_id, task_name, task_id, min(timestamp)
         FROM _use WHERE NOT returned GROUP BY item, run_id, task_name, task_id
       UNION ALL
       SELECT writer_run, run_id, 'reused', false, run_id, task_name, task_id, timestamp
         FROM _ev WHERE writer_run IS NOT NULL AND writer_run <> run_id"""


def nodes_sql(events: str) -> str:
    """SQL of the artifact node descriptions in ``events``, one row per node and source.

    ``source`` is ``artifact`` (name, distinct locations, size and kind of the artifact events
    of the node) or ``cache`` (the function and size of the cache writes of a digest); where
    events disagree the smallest value is taken, so every read order gives the same result.
    """
    return f"""
       SELECT coalesce(digest, location) AS node, 'artifact' AS source, min(artifact_name) AS name,
              list(DISTINCT location) FILTER (WHERE location IS NOT NULL) AS locations,
              min(size_bytes) AS size_bytes, min(kind) AS kind
         FROM {events} WHERE event_type = 'artifact' AND coalesce(digest, location) IS NOT NULL GROUP BY 1
       UNION ALL
       SELECT digest, 'cache', min(function_name), CAST([] AS VARCHAR[]), min(size_bytes), 'cache'
         FROM {events} WHERE event_type = 'cache' AND op = 'write' AND digest IS NOT NULL GROUP BY 1"""


def _walk_macro(name: str, *, up: bool) -> str:
    """A table macro walking data flow from a node (or from a run's own context).

    The edges are read once per call (materialized), not once per level of the walk.
    """
    near, far = ("dst", "src") if up else ("src", "dst")
    # From a run: its generated artifacts (and, walking up, the artifacts it used) at depth 1.
    seeds = "(relation = 'generated' AND src = r.n)" + (" OR (relation = 'used' AND dst = r.n)" if up else "")
    return f"""CREATE MACRO {name}(node, max_depth := 100) AS TABLE
       WITH RECURSIVE _root AS (SELECT _resolve(node) AS n),
       _flow AS MATERIALIZED (SELECT * FROM lineage),
       walk(src, dst, relation, run_id, task_name, task_id, timestamp, depth, reached)
       USING KEY (src, dst, relation, run_id, task_id) AS (
         SELECT l.src, l.dst, l.relation, l.run_id, l.task_name, l.task_id, l.timestamp, 1, l.{far}
           FROM _flow l, _root r WHERE l.{near} = r.n
         UNION ALL
         SELECT c.src, c.dst, c.relation, c.run_id, c.task_name, c.task_id, c.timestamp, 1,
                CASE WHEN c.relation = 'generated' THEN c.dst ELSE c.src END
           FROM lineage_context c, _root r WHERE {seeds}
         UNION
         SELECT l.src, l.dst, l.relation, l.run_id, l.task_name, l.task_id, l.timestamp, w.depth + 1, l.{far}
           FROM _flow l JOIN walk w ON l.{near} = w.reached
          WHERE w.depth < max_depth AND NOT EXISTS (
            SELECT 1 FROM recurring.walk x
             WHERE x.src = l.src AND x.dst = l.dst AND x.relation = l.relation AND x.run_id = l.run_id
               AND x.task_id IS NOT DISTINCT FROM l.task_id))
       SELECT src, dst, relation, run_id, task_name, task_id, timestamp, depth FROM walk"""


def create_lineage_views(
    con: duckdb.DuckDBPyConnection,
    *,
    compacted: tuple[str, str, str] | None = None,
    tail: str | None = "events",
    as_of: str | None = None,
) -> None:
    """Add the ``lineage`` and ``lineage_context`` views and the ``ancestors``/``descendants`` macros to ``con``.

    Args:
        con: a connection that has the ``events`` view.
        compacted: paths of the compacted edges sorted by ``dst``, by ``src``, and of the node
            descriptions; ``None`` computes every edge from ``events``.
        tail: the relation of the events the compacted edges do not cover; ``None`` when
            they cover every event.
        as_of: ISO-8601 time the compacted edges are filtered to (the events already are).
    """
    con.execute(f"CREATE VIEW _artifact_versions AS {versions_sql('events')}")
    if tail is None:
        con.execute(
            "CREATE VIEW _tail_edges AS SELECT NULL::VARCHAR AS src, NULL::VARCHAR AS dst, "
            "NULL::VARCHAR AS relation, NULL::BOOLEAN AS flow, NULL::VARCHAR AS run_id, NULL::VARCHAR AS task_name, "
            "NULL::VARCHAR AS task_id, NULL::VARCHAR AS timestamp WHERE false"
        )
    else:
        uses_from = "events" if compacted is not None else None
        con.execute(f"CREATE VIEW _tail_edges AS {edges_sql(tail, '_artifact_versions', uses_from=uses_from)}")
    where = f" AND timestamp <= {quote(as_of)}" if as_of else ""
    if compacted is not None:
        by_dst, by_src, nodes = (quote(escape_glob(p)) for p in compacted)
        con.execute(
            f"CREATE VIEW _compacted_edges AS SELECT src, dst, relation, flow, run_id, task_name, task_id, timestamp "
            f"FROM read_parquet({by_dst}) WHERE true{where}"
        )
        for name, path in (("by_dst", by_dst), ("by_src", by_src)):
            con.execute(
                f"CREATE VIEW _lineage_ids_{name} AS SELECT src_id, dst_id, src, dst, relation, flow, run_id, "
                f"task_name, task_id, timestamp FROM read_parquet({path}) WHERE true{where}"
            )
        con.execute(f"CREATE VIEW _lineage_nodes AS SELECT * FROM read_parquet({nodes})")
        if as_of:  # descriptions as of a time come from the filtered events, not the compacted ones
            con.execute(f"CREATE VIEW _lineage_cutoff AS SELECT {quote(as_of)} AS as_of")
        con.execute("CREATE VIEW _all_edges AS SELECT * FROM _compacted_edges UNION ALL SELECT * FROM _tail_edges")
    else:
        con.execute("CREATE VIEW _all_edges AS SELECT * FROM _tail_edges")
    con.execute(f"CREATE VIEW lineage AS SELECT {EDGE_COLUMNS} FROM _all_edges WHERE flow")
    con.execute(f"CREATE VIEW lineage_context AS SELECT {EDGE_COLUMNS} FROM _all_edges WHERE NOT flow")
    con.execute(
        "CREATE MACRO _resolve(ref) AS coalesce((SELECT digest FROM _artifact_versions WHERE location = ref "
        "ORDER BY timestamp DESC LIMIT 1), ref)"
    )
    con.execute(_walk_macro("ancestors", up=True))
    con.execute(_walk_macro("descendants", up=False))
