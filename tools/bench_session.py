"""Bench ``session``: per-task cost of the session's provenance on the local target.

Each round runs 2,000 no-op tasks in a fresh session on the local target (threads) with the
ledger on, and the same with ``SCALABLE_TELEMETRY=0``, in alternating order (session start
and close outside the timing). ``task_overhead_ms`` is the per-round difference per task,
median over rounds (target <= 0.5); both sides are reported as figures too.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from scalable import ScalableSession
from tools.bench_harness import Report, Target, interleave, per_second

__all__ = ["TARGETS", "run"]

TARGETS = (Target("task_overhead_ms", "<=", 0.5),)

_TASKS = 2000


def _noop() -> None:
    return None


def _one_round(manifest: Path, root: Path, telemetry: bool) -> dict[str, float]:
    """Run the tasks in a fresh session under ``root``; return the seconds they took (start and close excluded)."""
    previous = os.environ.get("SCALABLE_TELEMETRY")
    os.environ["SCALABLE_TELEMETRY"] = "1" if telemetry else "0"
    try:
        session = ScalableSession.from_yaml(
            manifest, target="local", runs_dir=root / "runs", ledger_dir=root / "ledger", local_cache=root / "cache"
        )
    finally:
        if previous is None:
            os.environ.pop("SCALABLE_TELEMETRY", None)
        else:
            os.environ["SCALABLE_TELEMETRY"] = previous
    with session:
        session.submit(_noop).result()  # start the pool outside the timing
        start = time.perf_counter()
        futures = [session.submit(_noop) for _ in range(_TASKS)]
        for future in futures:
            future.result()
        elapsed = time.perf_counter() - start
    return {"seconds": elapsed}


def run(quick: bool, rounds: int) -> Report:
    """Measure tasks with the ledger on and off in interleaved rounds (``quick`` changes nothing)."""
    report = Report()
    with tempfile.TemporaryDirectory(prefix="scalable-bench-session-") as tmp:
        root = Path(tmp)
        manifest = root / "scalable.yaml"
        manifest.write_text(
            "version: 1\nproject: {name: bench, default_storage: ./artifacts}\n"
            "targets: {local: {provider: local, max_workers: 2}}\n"
        )
        samples = interleave(
            {
                "ledger_on": lambda i: _one_round(manifest, root, True),
                "ledger_off": lambda i: _one_round(manifest, root, False),
            },
            rounds=rounds,
        )
    on = [s / _TASKS * 1000 for s in samples["ledger_on"]]
    off = [s / _TASKS * 1000 for s in samples["ledger_off"]]
    report.param("tasks", _TASKS)
    report.difference("task_overhead_ms", on, off, "lower")
    report.figure("task_ms_ledger_on", on, "lower")
    report.figure("task_ms_ledger_off", off, "lower")
    report.figure("tasks_per_s_ledger_on", per_second(_TASKS, samples["ledger_on"]), "higher")
    report.figure("tasks_per_s_ledger_off", per_second(_TASKS, samples["ledger_off"]), "higher")
    return report
