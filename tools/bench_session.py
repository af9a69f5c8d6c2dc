"""Bench ``session``: per-task cost of the session's provenance on the local target.

``task_overhead_ms`` is the wall time per task of 2,000 no-op tasks submitted to a session
on the local target (threads) with the ledger on, minus the same with ``SCALABLE_TELEMETRY=0``.
Both are measured in this process, interleaved round by round, and the median difference
is reported; the baseline is reported as a figure too.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["run"]

TARGET_OVERHEAD_MS = 0.5


def _noop() -> None:
    return None


def _one_round(manifest: Path, runs_dir: Path, tasks: int, telemetry: bool) -> float:
    """Seconds to run ``tasks`` no-op tasks in a fresh session (start and close excluded)."""
    from scalable import ScalableSession

    previous = os.environ.get("SCALABLE_TELEMETRY")
    os.environ["SCALABLE_TELEMETRY"] = "1" if telemetry else "0"
    try:
        session = ScalableSession.from_yaml(manifest, target="local", runs_dir=runs_dir)
    finally:
        if previous is None:
            os.environ.pop("SCALABLE_TELEMETRY", None)
        else:
            os.environ["SCALABLE_TELEMETRY"] = previous
    with session:
        session.submit(_noop).result()  # start the pool outside the timing
        start = time.perf_counter()
        futures = [session.submit(_noop) for _ in range(tasks)]
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - start
    return elapsed


def run(quick: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Measure the session bench; return (figures, targets).

    Args:
        quick: fewer rounds (the same 2,000 tasks per round and the same target).
    """
    tasks = 2000
    rounds = 3 if quick else 7
    with tempfile.TemporaryDirectory(prefix="scalable-bench-session-") as tmp:
        root = Path(tmp)
        manifest = root / "scalable.yaml"
        manifest.write_text(
            "version: 1\nproject: {name: bench, default_storage: ./artifacts}\n"
            "targets: {local: {provider: local, max_workers: 2}}\n"
        )
        on: list[float] = []
        off: list[float] = []
        for index in range(rounds):
            # Alternate which goes first so drift on a shared machine hits both alike.
            order = (True, False) if index % 2 == 0 else (False, True)
            for telemetry in order:
                elapsed = _one_round(manifest, root / "runs", tasks, telemetry)
                (on if telemetry else off).append(elapsed)
    diffs_ms = [(a - b) / tasks * 1000 for a, b in zip(on, off, strict=True)]
    overhead = max(statistics.median(diffs_ms), 0.0)
    figures = {
        "tasks": tasks,
        "rounds": rounds,
        "task_overhead_ms": round(overhead, 4),
        "task_ms_ledger_on": round(statistics.median(on) / tasks * 1000, 4),
        "task_ms_ledger_off": round(statistics.median(off) / tasks * 1000, 4),
        "tasks_per_s_ledger_on": round(tasks / statistics.median(on), 1),
        "tasks_per_s_ledger_off": round(tasks / statistics.median(off), 1),
    }
    targets = [
        {
            "figure": "task_overhead_ms",
            "op": "<=",
            "value": TARGET_OVERHEAD_MS,
            "met": overhead <= TARGET_OVERHEAD_MS,
        }
    ]
    return figures, targets
