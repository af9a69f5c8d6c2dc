"""Bench ``lineage``: lineage walks and the structural audit over synthetic, compacted events.

Figures: ``ancestors_depth10_ms`` and ``descendants_depth10_ms``, the median time of
``Ledger.lineage(node, direction="up"|"down", depth=10)`` (what a user calls: connection,
views, walk and node descriptions) from several different artifacts deep in the graph of
1,000 runs with parent links; ``ancestors_edges`` / ``descendants_edges``, the median number of
edges each walk returned; and, interleaved with them in the same run, the baseline
``ancestors_cte_depth10_ms``: the plain recursive CTE (``ancestors(node, max_depth := 10)``
as the ledger had it before compacted edges) over a ``lineage`` view derived from the
``events`` view, with ``ancestors_vs_cte`` their ratio. ``audit_events_per_s``: events per
second of ``Ledger.audit(content=False)`` over every stream (best of two).

Sizes: 10,000,000 events (``--quick``: 1,000,000) from :mod:`gen_events`, compacted with
``Ledger.compact()`` before the lineage walks.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench import Figures, Targets, target
from gen_events import artifact_digest, generate
from lineage_baseline import baseline_lineage_sql

from scalable.ledger.log import Ledger
from scalable.ledger.views import connect

#: (run index, artifact index) of the start nodes: late runs, mid-chain artifacts.
_NODES = ((990, 40), (950, 70), (900, 25), (850, 55), (800, 90))


def _walk_ms(led: Ledger, node: str, direction: str) -> tuple[float, int]:
    start = time.perf_counter()
    graph = led.lineage(node, direction=direction, depth=10)
    return (time.perf_counter() - start) * 1000, len(graph.edges)


def _cte_ms(led: Ledger, node: str) -> tuple[float, int]:
    start = time.perf_counter()
    con = connect(led, trusted=True)
    try:
        for statement in baseline_lineage_sql().split("; "):
            con.execute(statement)
        rows = con.execute(
            "WITH RECURSIVE walk(src, dst, relation, run_id, task_name, timestamp, depth) "
            "USING KEY (src, dst, relation, run_id) AS ("
            "  SELECT src, dst, relation, run_id, task_name, timestamp, 1 FROM _baseline_lineage WHERE dst = $1"
            "  UNION"
            "  SELECT l.src, l.dst, l.relation, l.run_id, l.task_name, l.timestamp, w.depth + 1"
            "    FROM _baseline_lineage l JOIN walk w ON l.dst = w.src"
            "   WHERE w.depth < 10 AND NOT EXISTS ("
            "     SELECT 1 FROM recurring.walk r"
            "      WHERE r.src = l.src AND r.dst = l.dst AND r.relation = l.relation AND r.run_id = l.run_id))"
            " SELECT * FROM walk", [node]
        ).fetchall()
    finally:
        con.close()
    return (time.perf_counter() - start) * 1000, len({(r[0], r[1], r[2], r[3]) for r in rows})


def run(quick: bool) -> tuple[Figures, Targets]:
    """Generate and compact the ledger, then time walks (interleaved with the CTE) and the audit."""
    events = 1_000_000 if quick else 10_000_000
    work = Path(tempfile.mkdtemp(prefix="scalable-bench-lineage-"))
    try:
        runs_dir, ledger_dir = work / "runs", work / "ledger"
        gen = generate(runs_dir, events, runs=1000, days=30)
        led = Ledger.open(runs_dir, ledger_dir)
        started = time.perf_counter()
        led.compact()
        compact_s = time.perf_counter() - started
        nodes = [artifact_digest(r, a) for r, a in _NODES]
        led.lineage(nodes[0], direction="up", depth=10)  # warm the OS page cache, as a user's second call
        up, down, cte, up_edges, down_edges, cte_edges = [], [], [], [], [], []
        cte_nodes = nodes[:3] if quick else nodes[:1]
        for i, node in enumerate(nodes):
            ms, n = _walk_ms(led, node, "up")
            up.append(ms)
            up_edges.append(n)
            ms, n = _walk_ms(led, node, "down")
            down.append(ms)
            down_edges.append(n)
            if i < len(cte_nodes):
                ms, n = _cte_ms(led, node)
                cte.append(ms)
                cte_edges.append(n)
                if n != up_edges[-1]:
                    raise RuntimeError(f"the walk from {node} found {up_edges[-1]} edges, the recursive CTE {n}")
        audit_s = []
        for _ in range(2):
            started = time.perf_counter()
            report = led.audit(content=False)
            audit_s.append(time.perf_counter() - started)
            if not report.ok:
                raise RuntimeError(f"the audit of the generated ledger failed: {report.problems[:3]}")
        figures: Figures = {
            "events": gen.events,
            "runs": len(gen.run_ids),
            "compact_s": round(compact_s, 2),
            "ancestors_depth10_ms": round(statistics.median(up), 1),
            "descendants_depth10_ms": round(statistics.median(down), 1),
            "ancestors_edges": statistics.median(up_edges),
            "descendants_edges": statistics.median(down_edges),
            "ancestors_cte_depth10_ms": round(statistics.median(cte), 1),
            "ancestors_cte_edges": statistics.median(cte_edges),  # the same nodes' walks found as many
            "audit_events_per_s": round(gen.events / min(audit_s)),
        }
        figures["ancestors_vs_cte"] = round(figures["ancestors_depth10_ms"] / figures["ancestors_cte_depth10_ms"], 4)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    targets = [
        target(figures, "ancestors_depth10_ms", "<=", 300),
        target(figures, "audit_events_per_s", ">=", 200_000),
    ]
    return figures, targets
