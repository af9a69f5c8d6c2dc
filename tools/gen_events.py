"""Synthetic ledger generator: valid, chained, sealed JSON-lines streams over many runs.

Writes ``<runs_dir>/<run_id>/artifacts.jsonl`` directly with the codec of
:mod:`scalable.ledger.events` and the seal of :mod:`scalable.ledger.stream` (not through
``Ledger.append``, which would take hours for ten million events). Each run is one writer's
chain: ``run/started``, blocks of task, cache and artifact events, and a ``run/finished``
carrying the seal (the writer's head, the digest of the stream before it and of its own
line). Runs form a
lineage graph: the first artifact of run ``i`` lists, in ``inputs``, the digest of the last
artifact of one or two earlier runs (its parents), so ``ancestors()`` has real depth.

Usage: ``python tools/gen_events.py RUNS_DIR --events 1000000 --runs 1000``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from scalable.ledger.events import GENESIS, SCHEMA_VERSION, encode_line, format_timestamp
from scalable.ledger.stream import new_seal, sign_seal_line

__all__ = ["GeneratedLedger", "artifact_digest", "generate", "main", "run_id_of"]

_START_NS = 1_767_225_600 * 1_000_000_000  # 2026-01-01T00:00:00Z
_DAY_NS = 86_400 * 1_000_000_000


@dataclass
class GeneratedLedger:
    """What :func:`generate` wrote: run ids, parents of each run, counts and bytes."""

    runs_dir: Path
    run_ids: list[str] = field(default_factory=list)
    parents: dict[str, list[str]] = field(default_factory=dict)
    events: int = 0
    bytes: int = 0


def run_id_of(index: int) -> str:
    """Return the id of synthetic run number ``index`` (Scalable's run-id form)."""
    return f"run-20260101T000000Z-synthetic-{index:08x}"


def artifact_digest(run_index: int, artifact: int) -> str:
    """Return the digest of synthetic artifact ``artifact`` of run ``run_index``."""
    return hashlib.sha256(f"run{run_index}:artifact{artifact}".encode()).hexdigest()


def _uuid7(ms: int, rnd: random.Random) -> str:
    value = (ms << 80) | (0x7 << 76) | (rnd.getrandbits(12) << 64) | (0b10 << 62) | rnd.getrandbits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def generate(
    runs_dir: str | os.PathLike[str],
    events: int,
    runs: int = 1000,
    *,
    days: int = 30,
    seed: int = 0,
) -> GeneratedLedger:
    """Write ``events`` events spread over ``runs`` runs and ``days`` days under ``runs_dir``.

    Args:
        runs_dir: directory that receives one stream per run.
        events: total number of events (at least 3 per run).
        runs: number of runs.
        days: the runs' start times spread evenly over this many days from 2026-01-01.
        seed: seed of every random choice (the same arguments give the same bytes).

    Returns:
        The run ids, each run's parent runs, and the events and bytes written.
    """
    rnd = random.Random(seed)
    out = GeneratedLedger(Path(runs_dir))
    per_run = max(3, events // runs)
    for index in range(runs):
        count = per_run + (1 if index < events - per_run * runs else 0)
        run_id = run_id_of(index)
        parents = sorted(rnd.sample(range(index), k=min(index, rnd.choice((1, 2))))) if index else []
        out.run_ids.append(run_id)
        out.parents[run_id] = [run_id_of(p) for p in parents]
        written, size = _write_run(Path(runs_dir), index, run_id, count, parents, days, runs, rnd)
        out.events += written
        out.bytes += size
    return out


def _write_run(
    runs_dir: Path, index: int, run_id: str, count: int, parents: list[int], days: int, runs: int, rnd: random.Random
) -> tuple[int, int]:
    writer = f"synthetic:{index}:{rnd.getrandbits(32):08x}"
    ns = _START_NS + (days * _DAY_NS * index) // max(1, runs) + rnd.randrange(1_000_000_000)
    seq = 0
    prev = GENESIS
    lines: list[bytes] = []
    counts: dict[str, int] = {}
    artifacts = 0
    last_digest = ""

    def emit(record: dict[str, object], *, seal: bool = False) -> None:
        nonlocal seq, prev, ns
        ns += rnd.randrange(1_000, 50_000_000)
        record["event_id"] = _uuid7(ns // 1_000_000, rnd)
        record["timestamp"] = format_timestamp(ns)
        record["run_id"] = run_id
        record["writer"] = writer
        record["seq"] = seq
        record["prev"] = prev
        record["schema_version"] = SCHEMA_VERSION
        line = encode_line(record)
        if seal:
            line = sign_seal_line(line[:-1], None) + b"\n"
        prev = hashlib.sha256(line[:-1]).hexdigest()
        seq += 1
        counts[str(record["event_type"])] = counts.get(str(record["event_type"]), 0) + 1
        lines.append(line)

    emit({"event_type": "run", "op": "started", "attrs": json.dumps({"project": "synthetic", "target": "local"})})
    block = 0
    while seq < count - 1:
        task = f"task-{block % 50}"
        step = seq % 5
        if step == 0:
            emit({"event_type": "task", "op": "started", "task_name": task, "component": "compute"})
        elif step == 1:
            emit(
                {
                    "event_type": "cache",
                    "op": "miss",
                    "task_name": task,
                    "function_name": "pipeline.step",
                    "key_digest": hashlib.sha256(f"{index}:{block}".encode()).hexdigest()[:32],
                    "hit": False,
                }
            )
        elif step == 2:
            digest = artifact_digest(index, artifacts)
            inputs = (
                [artifact_digest(p, 0) for p in parents]
                if artifacts == 0 and parents
                else ([last_digest] if last_digest else None)
            )
            name = f"out-{artifacts}.parquet"
            emit(
                {
                    "event_type": "artifact",
                    "op": "put",
                    "task_name": task,
                    "artifact_name": name,
                    "location": f"s3://bucket/runs/{run_id}/{name}",
                    "kind": "file",
                    "size_bytes": rnd.randrange(1, 10_000_000),
                    "digest": digest,
                    "key": f"runs/{run_id}/{name}",
                    "store": "s3://bucket/",
                    "inputs": inputs,
                }
            )
            last_digest = digest
            artifacts += 1
        elif step == 3:
            emit(
                {
                    "event_type": "cache",
                    "op": "write",
                    "task_name": task,
                    "function_name": "pipeline.step",
                    "size_bytes": rnd.randrange(1, 1_000_000),
                    "duration_s": rnd.random(),
                }
            )
        else:
            emit({"event_type": "task", "op": "finished", "task_name": task, "duration_s": rnd.random() * 10})
            block += 1
    seal = new_seal({writer: {"seq": seq - 1, "head": prev}}, hashlib.sha256(b"".join(lines)).hexdigest(), keyed=False)
    emit(
        {
            "event_type": "run",
            "op": "finished",
            "attrs": json.dumps(
                {"status": "completed", "events": seq, "counts": dict(counts), "seal": seal},
                separators=(",", ":"),
                sort_keys=True,
            ),
        },
        seal=True,
    )
    path = runs_dir / run_id / "artifacts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(lines)
    path.write_bytes(data)
    return len(lines), len(data)


def main(argv: list[str] | None = None) -> None:
    """Command line: generate a synthetic ledger and print what was written as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("runs_dir")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    result = generate(args.runs_dir, args.events, args.runs, days=args.days, seed=args.seed)
    print(
        json.dumps(
            {
                "events": result.events,
                "runs": len(result.run_ids),
                "bytes": result.bytes,
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
