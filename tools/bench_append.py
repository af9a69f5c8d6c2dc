"""Bench ``append``: events per second through the ledger against Scalable's telemetry writer.

The baseline opens the stream, appends ``json.dumps(event, sort_keys=True)`` and closes it for
each event: how Scalable's telemetry store writes today, with none of the ledger's guarantees
(no ids, no chain, no lock, no torn-line check).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import Figures, Targets, target

from scalable.ledger.context import bind
from scalable.ledger.log import Ledger
from scalable.settings import load_settings


def _event(i: int) -> dict[str, Any]:
    return {
        "event_type": "artifact",
        "op": "put",
        "artifact_name": f"part-{i}.parquet",
        "location": f"s3://bucket/runs/run-1/part-{i}.parquet",
        "kind": "file",
        "size_bytes": 1000 + i,
        "digest": "ab" * 32,
        "key": f"runs/run-1/part-{i}.parquet",
        "store": "s3://bucket/",
    }


def _baseline(path: Path, events: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    for event in events:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, sort_keys=True) + "\n")
    return len(events) / (time.perf_counter() - start)


def _append(ledger: Ledger, events: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    with bind(run_id="run-bench-append"):
        for event in events:
            ledger.append(event)
    return len(events) / (time.perf_counter() - start)


def _append_many(ledger: Ledger, events: list[dict[str, Any]], batch: int = 1000) -> float:
    start = time.perf_counter()
    with bind(run_id="run-bench-many"):
        for i in range(0, len(events), batch):
            ledger.append_many(events[i : i + batch])
    return len(events) / (time.perf_counter() - start)


def run(quick: bool) -> tuple[Figures, Targets]:
    """Measure the ledger's append paths and the baseline, interleaved over rounds."""
    n = 20_000 if quick else 100_000
    rounds = 3
    events = [_event(i) for i in range(n)]
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for r in range(rounds):
            base = load_settings(env={}, runs_dir=root / f"runs{r}", ledger_dir=root / f"ledger{r}")
            ledger = Ledger(base)
            always = Ledger(base.with_overrides(ledger_fsync="always", runs_dir=root / f"always{r}"))
            figures = {
                "baseline_events_per_s": _baseline(root / f"baseline{r}.jsonl", events),
                "append_events_per_s": _append(ledger, events),
                "append_many_events_per_s": _append_many(ledger, events),
                "append_fsync_always_events_per_s": _append(always, events[: max(n // 20, 500)]),
            }
            ledger.close()
            always.close()
            for key, value in figures.items():
                best[key] = max(best.get(key, 0.0), value)
            for p in root.glob("baseline*.jsonl"):
                os.unlink(p)
    out = {k: round(v, 1) for k, v in best.items()}
    out["append_vs_baseline"] = round(best["append_events_per_s"] / best["baseline_events_per_s"], 3)
    out["append_many_vs_baseline"] = round(best["append_many_events_per_s"] / best["baseline_events_per_s"], 3)
    targets = [
        target(out, "append_vs_baseline", ">=", 1.5),
        target(out, "append_many_events_per_s", ">=", 300_000),
        target(out, "append_many_vs_baseline", ">=", 4),
    ]
    return out, targets
