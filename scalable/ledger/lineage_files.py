"""The compacted lineage edges: files that let a walk read only the row groups it needs.

Layout under the compacted data (``v2`` is :data:`~scalable.ledger.edges.EDGE_LAYOUT`)::

    lineage/v2-edges-by-dst-<attempt>-<n>.parquet   the edges of the data files: data flow
                                                    first, then context, each sorted by dst id
    lineage/v2-edges-by-src-<attempt>-<n>.parquet   the same edges, each part sorted by src id
    lineage/v2-nodes-<attempt>-<n>.parquet          node ids, texts and descriptions, sorted by id

Columns of the edge files: ``src_id, dst_id, src, dst, relation, flow, run_id, task_name,
task_id, timestamp``; ``flow`` is true for data flow. Sorting data flow first lets a walk read
the ids of the data-flow edges alone (row groups of context edges are skipped by their
``flow`` statistics), and context lookups read only the row groups of their nodes.

A full compaction computes the edges of all live data files (URI inputs resolved against
every artifact version in the dataset) and writes them, sorted by each end in small row
groups, so a lookup reads only the row groups that can hold its nodes. They are staged, made
durable and published like data files and named by the same generation, with the data files
they cover. A compaction of some runs keeps them while every covered file is live (the views
compute the edges of the other files on the fly) and drops them when one was merged or
rewritten (the views then compute every edge from the events) until the next full
compaction. A URI input whose version was put by a run that is not compacted yet resolves to
the version Parquet knows; the next compaction, which covers that run, recomputes it.

A node's id is its 63-bit hash, computed where it is needed, with no join; a collision (two
nodes, one id) is checked for, and should one occur no lineage files are written.
"""

from __future__ import annotations

import itertools
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from scalable.errors import LedgerError
from scalable.ledger.edges import EDGE_LAYOUT, edges_sql, layout_is_current, nodes_sql, versions_sql
from scalable.ledger.generations import Attempt, DataFile, LineageFiles
from scalable.ledger.sql import file_list, parquet_copy_options, parquet_select, quote
from scalable.logs import get_logger

if TYPE_CHECKING:
    import duckdb

    from scalable.ledger.location import Location

__all__ = ["LINEAGE_BATCH_EVENTS", "LINEAGE_DIR", "LINEAGE_ROW_GROUP", "next_lineage", "write_lineage"]

#: Directory of the lineage files, relative to the compacted data.
LINEAGE_DIR: Final = "lineage"
#: Rows per row group of the lineage files: small, so min/max statistics prune lookups.
LINEAGE_ROW_GROUP: Final = 8192
#: Events whose lineage edges are computed in one go (bounds the memory of a compaction).
LINEAGE_BATCH_EVENTS: Final = 1_000_000
_log = get_logger("scalable.ledger")


def next_lineage(
    con: duckdb.DuckDBPyConnection,
    location: Location,
    attempt: Attempt,
    tmp: Path,
    current: LineageFiles | None,
    live: Sequence[DataFile],
    *,
    full: bool,
) -> LineageFiles | None:
    """The lineage files of the next generation.

    A full compaction computes them for every live file (unless they cover exactly those
    already). A compaction of some runs (a session closing) keeps the current ones while every
    file they cover is still live: the views compute the edges of the files they do not cover
    on the fly, as they do for streams. When a covered file was merged or rewritten they are
    dropped, and the views compute every edge from events until the next full compaction.
    """
    paths = {f.path for f in live}
    if not live:
        return None
    if current is not None and not layout_is_current(current.by_dst):
        current = None  # edges of an older model: recomputed by a full compaction, unused until then
    if full:
        if current is not None and set(current.covers) == paths:
            return current
        return write_lineage(con, location, attempt, tmp, live)
    if current is not None and set(current.covers) <= paths:
        return current
    return None


def write_lineage(
    con: duckdb.DuckDBPyConnection, location: Location, attempt: Attempt, tmp: Path, files: Sequence[DataFile]
) -> LineageFiles | None:
    """Compute the lineage edges and node descriptions of ``files`` and publish them (not yet committed)."""
    staging = tmp / f"lineage-{uuid.uuid4().hex}"
    staging.mkdir(parents=True, exist_ok=True)
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW _compact_events AS {parquet_select([location.url(f.path) for f in files])}"
    )
    options = parquet_copy_options(row_group_size=LINEAGE_ROW_GROUP)
    by_dst, by_src, nodes = staging / "by-dst.parquet", staging / "by-src.parquet", staging / "nodes.parquet"
    # Every node gets an integer id, so the walk compares integers, not 64-character digests.
    # Each step goes through a staged Parquet file rather than a table, so it spills instead
    # of holding the edges of the whole dataset in memory.
    con.execute("SET preserve_insertion_order=false")  # every file below is sorted explicitly
    plain = parquet_copy_options()
    # Edges are computed for contiguous ranges of run ids (files are sorted by run id, so each
    # range reads only its row groups), with the versions of only the locations its inputs
    # name: memory stays bounded however large the dataset.
    runs = [r[0] for r in con.execute("SELECT DISTINCT run_id FROM _compact_events ORDER BY run_id").fetchall()] or [""]
    parts = max(1, -(-sum(f.rows for f in files) // LINEAGE_BATCH_EVENTS))
    bounds: list[str | None] = [*sorted({runs[i * len(runs) // parts] for i in range(parts)}), None]
    bounds[0] = ""  # the first range starts below every run id
    raws: list[str] = []
    described_parts: list[str] = []
    for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
        cond = f"run_id >= {quote(lo or '')}" + (f" AND run_id < {quote(hi)}" if hi is not None else "")
        con.execute(f"CREATE OR REPLACE TEMP VIEW _compact_part AS SELECT * FROM _compact_events WHERE {cond}")
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW _compact_versions AS SELECT * FROM ({versions_sql('_compact_events')}) v "
            "WHERE location IN (SELECT unnest(inputs) FROM _compact_part WHERE inputs IS NOT NULL)"
        )
        part = staging / f"raw-{i}.parquet"
        con.execute(f"COPY ({edges_sql('_compact_part', '_compact_versions')}) TO {quote(str(part))} {plain}")
        raws.append(str(part))
        # Descriptions per range too; a node met in several ranges has a row from each, which
        # readers merge (smallest value, union of locations).
        part = staging / f"described-{i}.parquet"
        con.execute(f"COPY ({nodes_sql('_compact_part')}) TO {quote(str(part))} {plain}")
        described_parts.append(str(part))
    raw_sql = f"read_parquet({file_list(raws)})"
    described_sql = f"read_parquet({file_list(described_parts)})"

    # A node's id is its 63-bit hash: computed where it is needed, with no join. A collision
    # (two nodes, one id) is checked for; should one ever occur, no lineage files are
    # written and the views compute every edge from the events.
    def node_id(col: str) -> str:
        return f"CASE WHEN {col} IS NULL THEN NULL ELSE (hash({col}) >> 1)::BIGINT END"

    con.execute(
        f"COPY (SELECT * FROM (SELECT {node_id('node')} AS id, node, NULL::VARCHAR AS source, NULL::VARCHAR AS name, "
        "NULL::VARCHAR[] AS locations, NULL::BIGINT AS size_bytes, NULL::VARCHAR AS kind FROM "
        f"(SELECT src AS node FROM {raw_sql} UNION SELECT dst FROM {raw_sql}) n WHERE node IS NOT NULL "
        f"UNION ALL SELECT {node_id('node')}, node, source, name, locations, size_bytes, kind FROM {described_sql}) "
        f"ORDER BY id) TO {quote(str(nodes))} {options}"
    )
    clash = con.execute(
        f"SELECT count(*) FROM (SELECT id FROM read_parquet({file_list([str(nodes)])}) GROUP BY id "
        "HAVING count(DISTINCT node) > 1)"
    ).fetchall()[0][0]
    if clash:
        _log.warning("ledger.lineage_not_compacted", reason="two lineage nodes share a hash id")
        con.execute("SET preserve_insertion_order=true")
        shutil.rmtree(staging, ignore_errors=True)
        return None
    row = con.execute(
        f"COPY (SELECT {node_id('src')} AS src_id, {node_id('dst')} AS dst_id, src, dst, relation, flow, run_id, "
        f"task_name, task_id, timestamp FROM {raw_sql} ORDER BY NOT flow, dst_id, src_id, relation, run_id, task_id) "
        f"TO {quote(str(by_dst))} {options}"
    ).fetchone()
    edges = int(row[0]) if row else 0
    row = con.execute(
        f"COPY (SELECT * FROM read_parquet({file_list([str(by_dst)])}) "
        f"ORDER BY NOT flow, src_id, dst_id, relation, run_id, task_id) TO {quote(str(by_src))} {options}"
    ).fetchone()
    if (int(row[0]) if row else 0) != edges:
        raise LedgerError(
            f"compaction sorted {edges} lineage edges but wrote {row}; nothing was committed, run scalable ledger compact again"
        )
    con.execute("SET preserve_insertion_order=true")
    for view in ("_compact_versions", "_compact_part", "_compact_events"):
        con.execute(f"DROP VIEW IF EXISTS {view}")
    names = (
        f"{LINEAGE_DIR}/{attempt.name(f'{EDGE_LAYOUT}-edges-by-dst')}",
        f"{LINEAGE_DIR}/{attempt.name(f'{EDGE_LAYOUT}-edges-by-src')}",
        f"{LINEAGE_DIR}/{attempt.name(f'{EDGE_LAYOUT}-nodes')}",
    )
    for file, rel in zip((by_dst, by_src, nodes), names, strict=True):
        attempt.publish(location, file, rel)
    shutil.rmtree(staging, ignore_errors=True)
    by_dst_rel, by_src_rel, nodes_rel = names
    return LineageFiles(by_dst_rel, by_src_rel, nodes_rel, edges, tuple(sorted(f.path for f in files)))
