"""Bench ``append``: events per second through the ledger against Scalable's telemetry writer.

The baseline (:class:`tools.scalable_baselines.ScalableTelemetryWriter`) opens the stream,
appends ``json.dumps(event, sort_keys=True)`` and closes it for each event: how Scalable's
telemetry store writes today, with none of the ledger's guarantees (no ids, no chain, no
file lock, no torn-line check). Each round appends the same events (100,000; ``--quick``
20,000) through every path, in alternating order, each into a fresh stream:

- ``baseline_events_per_s``: the bare open/dumps/close loop;
- ``append_events_per_s``: ``Ledger.append``, one event a call; target
  ``append_vs_baseline >= 1.5`` (per-round ratio of rates);
- ``append_many_events_per_s``: ``Ledger.append_many`` in batches of 1,000; targets
  ``append_many_events_per_s >= 300000`` and ``append_many_vs_baseline >= 4``;
- ``append_fsync_always_events_per_s``: ``Ledger.append`` with
  ``SCALABLE_LEDGER_FSYNC=always``, over a twentieth of the events (reported only).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from scalable.ledger import Ledger, bind
from scalable.settings import load_settings
from tools.bench_harness import Report, Target, interleave, per_second
from tools.scalable_baselines import ScalableTelemetryWriter

__all__ = ["TARGETS", "run"]

TARGETS = (
    Target("append_vs_baseline", ">=", 1.5),
    Target("append_many_events_per_s", ">=", 300_000),
    Target("append_many_vs_baseline", ">=", 4),
)

_BATCH = 1000


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


def run(quick: bool, rounds: int) -> Report:
    """Measure the ledger's append paths and the baseline in interleaved rounds."""
    n = 20_000 if quick else 100_000
    n_always = n // 20
    events = [_event(i) for i in range(n)]
    report = Report()
    work = Path(tempfile.mkdtemp(prefix="scalable-bench-append-"))
    ledger = Ledger.open(work / "runs", work / "ledger", settings=load_settings(env={}))
    always = Ledger.open(
        work / "runs-always", work / "ledger", settings=load_settings(env={"SCALABLE_LEDGER_FSYNC": "always"})
    )

    def baseline(index: int) -> None:
        writer = ScalableTelemetryWriter(work / f"baseline-r{index}.jsonl")
        for event in events:
            writer.append(event)

    def append(index: int) -> None:
        with bind(run_id=f"run-bench-append-r{index}"):
            for event in events:
                ledger.append(event)

    def append_many(index: int) -> None:
        with bind(run_id=f"run-bench-many-r{index}"):
            for i in range(0, n, _BATCH):
                ledger.append_many(events[i : i + _BATCH])

    def append_always(index: int) -> None:
        with bind(run_id=f"run-bench-always-r{index}"):
            for event in events[:n_always]:
                always.append(event)

    try:
        samples = interleave(
            {"baseline": baseline, "append": append, "append_many": append_many, "append_always": append_always},
            rounds=rounds,
            warmup=1,
        )
    finally:
        ledger.close()
        always.close()
        shutil.rmtree(work, ignore_errors=True)
    base = per_second(n, samples["baseline"])
    one = per_second(n, samples["append"])
    many = per_second(n, samples["append_many"])
    report.param("events", n)
    report.param("batch", _BATCH)
    report.param("fsync_always_events", n_always)
    report.figure("baseline_events_per_s", base, "higher")
    report.figure("append_events_per_s", one, "higher")
    report.figure("append_many_events_per_s", many, "higher")
    report.figure("append_fsync_always_events_per_s", per_second(n_always, samples["append_always"]), "higher")
    report.ratio("append_vs_baseline", one, base, "higher")
    report.ratio("append_many_vs_baseline", many, base, "higher")
    return report
