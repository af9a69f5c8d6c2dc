"""Bench ``lineage``: lineage walks and the structural audit over synthetic, compacted events.

Sizes: 10,000,000 events (``--quick``: 1,000,000) of 1,000 runs with parent links, written by
:mod:`tools.gen_events` and compacted with ``Ledger.compact()`` before the rounds (both
reported as one-off ``setup_*_s`` params).

Each round, in alternating order:

- ``ancestors_depth10_ms`` / ``descendants_depth10_ms``: ``Ledger.lineage(node,
  direction="up"|"down", depth=10)``, what a user calls (connection, views, walk and node
  descriptions, each node with its runs and tasks). Ancestors from an artifact deep in a late
  run (run 950, artifact 70): its data flow is the chain of its run's earlier artifacts, 10
  edges at any size. Descendants from the first artifact of an early run (run 5, artifact 0):
  its run's chain and, through every run it is a parent of, theirs, some 3,100 edges at
  depth 10. The edges each walk returned are params;
- ``audit_events_per_s``: ``Ledger.audit(content=False)`` over every stream; target
  ``>= 200000`` (at 10,000,000 events; ``--quick`` measures 1,000,000, where the audit is
  faster per event);
- the baseline, over a second, small ledger (100,000 events, compacted too):
  ``small_ancestors_cte_depth10_ms``, the plain recursive CTE over edges computed from the
  ``events`` view (as the ledger walked before lineage edges were compacted), against
  ``small_ancestors_depth10_ms``, ``Ledger.lineage`` from the same node of that ledger, and
  ``small_ancestors_vs_cte`` (per-round ratio of times); both walks must find the same edges.
  On the big ledger one CTE walk takes 5-10 s at 1,000,000 events and about 100 s at
  10,000,000, too long to repeat every round.

Target ``ancestors_depth10_ms_at_10m <= 300``: the ancestors time at 10,000,000 events. At
full size it is the measured time; with ``--quick`` it is the measured time scaled linearly,
by 10,000,000 / events. That estimate assumed that the edges a depth-10 walk reaches grow with
the events per run, as they did while walks went through runs (from 1,000,000 to 10,000,000
events the walk from this node reached 14,391 and 101,980 edges then). Walking data flow only,
it reaches the same 10 edges at every size, so the scaled figure overstates the full-size one
by far: read the full run's.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from scalable import Ledger
from scalable.ledger.views import connect
from tools.bench_harness import Report, Target, interleave, per_second
from tools.gen_events import artifact_digest, generate
from tools.lineage_baseline import baseline_lineage_sql

__all__ = ["TARGETS", "run"]

TARGETS = (
    Target("ancestors_depth10_ms_at_10m", "<=", 300),
    Target("audit_events_per_s", ">=", 200_000),
)

#: Size of the ledger the ancestors target is about.
FULL_EVENTS = 10_000_000
#: (run index, artifact index) of the start node of ancestors: a late run, mid-chain artifact.
_NODE = (950, 70)
#: ... and of descendants: the first artifact of an early run, a parent of many runs.
_DOWN_NODE = (5, 0)
#: Size of the ledger the recursive CTE baseline walks, and its start node (runs there hold
#: about 20 artifacts each).
SMALL_EVENTS = 100_000
_SMALL_NODE = (950, 10)

_CTE = (
    "WITH RECURSIVE walk(src, dst, relation, run_id, task_name, timestamp, depth) "
    "USING KEY (src, dst, relation, run_id) AS ("
    "  SELECT src, dst, relation, run_id, task_name, timestamp, 1 FROM _baseline_lineage WHERE dst = $1"
    "  UNION"
    "  SELECT l.src, l.dst, l.relation, l.run_id, l.task_name, l.timestamp, w.depth + 1"
    "    FROM _baseline_lineage l JOIN walk w ON l.dst = w.src"
    "   WHERE w.depth < 10 AND NOT EXISTS ("
    "     SELECT 1 FROM recurring.walk r"
    "      WHERE r.src = l.src AND r.dst = l.dst AND r.relation = l.relation AND r.run_id = l.run_id))"
    " SELECT * FROM walk"
)


def _cte_edges(led: Ledger, node: str) -> int:
    """Walk the ancestors of ``node`` with the plain recursive CTE; return the edges found."""
    con = connect(led, trusted=True)
    try:
        for statement in baseline_lineage_sql().split("; "):
            con.execute(statement)
        rows = con.execute(_CTE, [node]).fetchall()
    finally:
        con.close()
    return len({(r[0], r[1], r[2], r[3]) for r in rows})


def _ledger(root: Path, events: int, report: Report, prefix: str) -> tuple[Ledger, int]:
    """Generate and compact ``events`` events under ``root``; return the ledger and event count."""
    started = time.perf_counter()
    gen = generate(root / "runs", events, runs=1000, days=30)
    report.param(f"{prefix}events", gen.events)
    report.param(f"{prefix}setup_generate_s", time.perf_counter() - started)
    led = Ledger.open(root / "runs", root / "ledger")
    started = time.perf_counter()
    led.compact()
    report.param(f"{prefix}setup_compact_s", time.perf_counter() - started)
    return led, gen.events


def run(quick: bool, rounds: int) -> Report:
    """Generate and compact the ledgers, then time walks, the audit and the CTE in rounds."""
    report = Report()
    work = Path(tempfile.mkdtemp(prefix="scalable-bench-lineage-"))
    try:
        led, events = _ledger(work / "big", 1_000_000 if quick else FULL_EVENTS, report, "")
        small, _ = _ledger(work / "small", SMALL_EVENTS, report, "small_")
        node, small_node = artifact_digest(*_NODE), artifact_digest(*_SMALL_NODE)
        down_node = artifact_digest(*_DOWN_NODE)
        edges: dict[str, set[int]] = {"up": set(), "down": set(), "small_up": set(), "small_cte": set()}

        def walk(name: str, ledger: Ledger, start: str, direction: str) -> Callable[[int], None]:
            def run_walk(_index: int) -> None:
                edges[name].add(len(ledger.lineage(start, direction=direction, depth=10).edges))

            return run_walk

        def audit(_index: int) -> None:
            result = led.audit(content=False)
            if not result.ok:
                raise RuntimeError(f"the audit of the generated ledger failed: {result.problems[:3]}")

        def cte(_index: int) -> None:
            edges["small_cte"].add(_cte_edges(small, small_node))

        led.lineage(node, direction="up", depth=10)  # the OS page cache warm, as for a user's second call
        samples = interleave(
            {
                "up": walk("up", led, node, "up"),
                "down": walk("down", led, down_node, "down"),
                "audit": audit,
                "small_up": walk("small_up", small, small_node, "up"),
                "small_cte": cte,
            },
            rounds=rounds,
        )
        for name, found in edges.items():
            if len(found) != 1:
                raise RuntimeError(f"{name} walks from the same node returned different edge counts: {sorted(found)}")
        if edges["small_cte"] != edges["small_up"]:
            raise RuntimeError(f"the walk found {edges['small_up']} edges, the recursive CTE {edges['small_cte']}")
        up_ms = [s * 1000 for s in samples["up"]]
        report.param("ancestors_edges", edges["up"].pop())
        report.param("descendants_edges", edges["down"].pop())
        report.param("small_ancestors_edges", edges["small_up"].pop())
        report.figure("ancestors_depth10_ms", up_ms, "lower")
        report.figure("ancestors_depth10_ms_at_10m", [ms * FULL_EVENTS / events for ms in up_ms], "lower")
        report.figure("descendants_depth10_ms", [s * 1000 for s in samples["down"]], "lower")
        report.figure("audit_events_per_s", per_second(events, samples["audit"]), "higher")
        report.figure("small_ancestors_depth10_ms", [s * 1000 for s in samples["small_up"]], "lower")
        report.figure("small_ancestors_cte_depth10_ms", [s * 1000 for s in samples["small_cte"]], "lower")
        report.ratio("small_ancestors_vs_cte", samples["small_up"], samples["small_cte"], "lower")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report
