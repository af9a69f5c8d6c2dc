"""Lineage edges: what an edge is, the SQL that derives edges from events, and the lineage views.

Model. Nodes are run ids and artifacts; an artifact is its content digest (a version of the
bytes), or a URI when no digest is known. A URI given as an input resolves to the digest that
was last put or recorded at that location at the time of the event (an ASOF join), so lineage
follows versions, not names. Edges run in the direction data flows (``src`` -> ``dst``):

============  ============================  ==================================================
relation      src -> dst                    from
============  ============================  ==================================================
generated     run -> artifact               artifact put / recorded, cache write
used          artifact -> run               artifact get, cache hit, every ``inputs`` entry
derived_from  input -> artifact             every ``inputs`` entry of an artifact or cache write
reused        writing run -> reading run    a cache hit on an entry another run wrote
============  ============================  ==================================================

The same SQL computes the edges of the events not compacted yet (in the ``lineage`` view) and
the compacted edge files (:mod:`scalable.ledger.lineage_files`). ``ancestors(node)`` walks
edges backwards (what ``node`` came from), ``descendants(node)`` forwards (what came of it);
both are breadth-first, cycle-safe (an edge is visited once, at its smallest depth) and
bounded by ``max_depth``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from scalable.ledger.sql import escape_glob, quote

if TYPE_CHECKING:
    import duckdb

__all__ = ["EDGE_COLUMNS", "create_lineage_views", "edges_sql", "inputs_sql", "nodes_sql", "versions_sql"]

#: The columns of an edge, in order.
EDGE_COLUMNS: Final = "src, dst, relation, run_id, task_name, timestamp"


def versions_sql(events: str) -> str:
    """SQL of the artifact versions of ``events``: ``location, digest, timestamp`` of each put and recorded artifact."""
    return (
        f"SELECT location, digest, timestamp FROM {events} WHERE event_type = 'artifact' "
        "AND op IN ('put', 'recorded') AND location IS NOT NULL AND digest IS NOT NULL"
    )


def inputs_sql(events: str, versions: str) -> str:
    """SQL of the ``inputs`` entries of ``events``, each resolved to the node it stands for.

    Args:
        events: a relation with the event columns (a view name).
        versions: a relation ``location, digest, timestamp`` of artifact versions that URI
            inputs resolve against (the newest version at or before the event).
    """
    # The newest version at or before each event, found by a join and arg_max rather than an
    # ASOF join, which DuckDB cannot plan inside the recursive CTEs of the walk macros.
    return (
        f"SELECT i.input, coalesce(arg_max(v.digest, v.timestamp), i.input) AS input_node, i.output, i.run_id, "
        f"i.task_name, i.timestamp "
        f"FROM (SELECT event_id, unnest(inputs) AS input, generate_subscripts(inputs, 1) AS pos, "
        f"coalesce(digest, location) AS output, run_id, task_name, timestamp "
        f"FROM {events} WHERE inputs IS NOT NULL AND len(inputs) > 0 "
        f"AND (event_type = 'artifact' OR (event_type = 'cache' AND op = 'write'))) i "
        f"LEFT JOIN {versions} v ON i.input = v.location AND v.timestamp <= i.timestamp "
        f"GROUP BY i.event_id, i.pos, i.input, i.output, i.run_id, i.task_name, i.timestamp"
    )


def edges_sql(events: str, inputs: str) -> str:
    """SQL of the lineage edges made by the events of relation ``events``.

    Args:
        events: a relation with the event columns (a view name).
        inputs: a view of :func:`inputs_sql` over the same events.
    """
    return f"""
       SELECT run_id AS src, coalesce(digest, location) AS dst, 'generated' AS relation, run_id, task_name, timestamp
         FROM {events}
        WHERE ((event_type = 'artifact' AND op IN ('put', 'recorded')) OR (event_type = 'cache' AND op = 'write'))
          AND coalesce(digest, location) IS NOT NULL
       UNION ALL
       SELECT coalesce(digest, location), run_id, 'used', run_id, task_name, timestamp
         FROM {events}
        WHERE ((event_type = 'artifact' AND op = 'get') OR (event_type = 'cache' AND op = 'hit'))
          AND coalesce(digest, location) IS NOT NULL
       UNION ALL
       SELECT input_node, output, 'derived_from', run_id, task_name, timestamp FROM {inputs} WHERE output IS NOT NULL
       UNION ALL
       SELECT DISTINCT input_node, run_id, 'used', run_id, task_name,
              min(timestamp) OVER (PARTITION BY input_node, run_id, task_name)
         FROM {inputs}
       UNION ALL
       SELECT json_extract_string(attrs, '$.writer_run'), run_id, 'reused', run_id, task_name, timestamp
         FROM {events}
        WHERE event_type = 'cache' AND op = 'hit' AND json_extract_string(attrs, '$.writer_run') IS NOT NULL
          AND json_extract_string(attrs, '$.writer_run') <> run_id"""


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


def _walk_macro(name: str, anchor: str, join: str) -> str:
    return f"""CREATE MACRO {name}(node, max_depth := 100) AS TABLE
       WITH RECURSIVE walk(src, dst, relation, run_id, task_name, timestamp, depth)
       USING KEY (src, dst, relation, run_id) AS (
         SELECT src, dst, relation, run_id, task_name, timestamp, 1 FROM lineage WHERE {anchor} = _resolve(node)
         UNION
         SELECT l.src, l.dst, l.relation, l.run_id, l.task_name, l.timestamp, w.depth + 1
           FROM lineage l JOIN walk w ON {join}
          WHERE w.depth < max_depth AND NOT EXISTS (
            SELECT 1 FROM recurring.walk r
             WHERE r.src = l.src AND r.dst = l.dst AND r.relation = l.relation AND r.run_id = l.run_id))
       SELECT * FROM walk"""


def create_lineage_views(
    con: duckdb.DuckDBPyConnection,
    *,
    compacted: tuple[str, str, str] | None = None,
    tail: str | None = "events",
    as_of: str | None = None,
) -> None:
    """Add the ``lineage`` view and the ``ancestors``/``descendants`` macros to ``con``.

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
            "CREATE VIEW _tail_lineage AS SELECT NULL::VARCHAR AS src, NULL::VARCHAR AS dst, "
            "NULL::VARCHAR AS relation, NULL::VARCHAR AS run_id, NULL::VARCHAR AS task_name, "
            "NULL::VARCHAR AS timestamp WHERE false"
        )
    else:
        con.execute(f"CREATE VIEW _inputs AS {inputs_sql(tail, '_artifact_versions')}")
        con.execute(f"CREATE VIEW _tail_lineage AS {edges_sql(tail, '_inputs')}")
    where = f" WHERE timestamp <= {quote(as_of)}" if as_of else ""
    if compacted is not None:
        by_dst, by_src, nodes = (quote(escape_glob(p)) for p in compacted)
        con.execute(f"CREATE VIEW _lineage_by_dst AS SELECT {EDGE_COLUMNS} FROM read_parquet({by_dst}){where}")
        for name, path in (("by_dst", by_dst), ("by_src", by_src)):
            con.execute(
                f"CREATE VIEW _lineage_ids_{name} AS SELECT src_id, dst_id, relation, run_id, task_name, "
                f"timestamp FROM read_parquet({path}){where}"
            )
        con.execute(f"CREATE VIEW _lineage_nodes AS SELECT * FROM read_parquet({nodes})")
        if as_of:  # descriptions as of a time come from the filtered events, not the compacted ones
            con.execute(f"CREATE VIEW _lineage_cutoff AS SELECT {quote(as_of)} AS as_of")
        con.execute("CREATE VIEW lineage AS SELECT * FROM _lineage_by_dst UNION ALL SELECT * FROM _tail_lineage")
    else:
        con.execute("CREATE VIEW lineage AS SELECT * FROM _tail_lineage")
    con.execute(
        "CREATE MACRO _resolve(ref) AS coalesce((SELECT digest FROM _artifact_versions WHERE location = ref "
        "ORDER BY timestamp DESC LIMIT 1), ref)"
    )
    con.execute(_walk_macro("ancestors", "dst", "l.dst = w.src"))
    con.execute(_walk_macro("descendants", "src", "l.src = w.dst"))
