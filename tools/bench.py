"""Benchmarks: ``python tools/bench.py NAME [--quick] [--rounds N]`` prints one JSON object on stdout.

Each bench measures its figures and, interleaved with them round by round, the baselines
its targets are ratios against (see :mod:`tools.bench_harness`). NAME is one of the
registered benches or ``all``. The object::

    {"bench": NAME, "machine": {...}, "figures": {"<figure>": number, "<figure>.best": ...,
     "<figure>.worst": ...}, "targets": [{"figure", "op", "value", "met"}, ...],
     "params": {"<size or count>": number, ...}}

With ``all``, every figure, target and param is named after its bench (``put.put_big_s``).
"""

from __future__ import annotations

import os

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")  # before gcsfs is imported

import argparse
import importlib
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.bench_harness import MIN_ROUNDS, Report, load_average, machine

__all__ = ["BENCHES", "bench_module", "main", "merge", "run_bench"]

#: bench name -> module under tools/ exposing ``TARGETS`` and ``run(quick, rounds) -> Report``
BENCHES: dict[str, str] = {
    "append": "bench_append",
    "cache": "bench_cache",
    "lineage": "bench_lineage",
    "put": "bench_put",
    "scale": "bench_scale",
    "session": "bench_session",
    "ui": "bench_ui",
}


def bench_module(name: str) -> ModuleType:
    """Import the module of bench ``name``."""
    return importlib.import_module(f"tools.{BENCHES[name]}")


def run_bench(name: str, quick: bool, rounds: int = MIN_ROUNDS) -> dict[str, Any]:
    """Run one registered bench; return its JSON object, targets checked against its ``TARGETS``."""
    module = bench_module(name)
    runner: Callable[[bool, int], Report] = module.run
    load_start = load_average()[0]
    started = time.perf_counter()
    report = runner(quick, rounds)
    report.param("rounds", rounds)
    report.param("elapsed_s", time.perf_counter() - started)
    report.param("load_avg_1m_start", load_start)
    report.param("load_avg_1m_end", load_average()[0])
    report.check(module.TARGETS)
    return {
        "bench": name,
        "machine": machine(),
        "figures": report.figures,
        "targets": report.targets,
        "params": report.params,
    }


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Combine several benches' objects into the one of ``all`` (names prefixed by bench)."""
    return {
        "bench": "all",
        "machine": machine(),
        "figures": {f"{r['bench']}.{k}": v for r in results for k, v in r["figures"].items()},
        "targets": [{**t, "figure": f"{r['bench']}.{t['figure']}"} for r in results for t in r["targets"]],
        "params": {f"{r['bench']}.{k}": v for r in results for k, v in r["params"].items()},
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the bench(es), print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("name", choices=[*BENCHES, "all"])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, the same rounds and targets")
    parser.add_argument("--rounds", type=int, default=MIN_ROUNDS, help=f"rounds per figure (at least {MIN_ROUNDS})")
    args = parser.parse_args(argv)
    if args.rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS}")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the local S3 server's request log
    if args.name == "all":
        started = time.perf_counter()
        out = merge([run_bench(n, args.quick, args.rounds) for n in BENCHES])
        out["params"]["elapsed_s"] = round(time.perf_counter() - started, 1)
    else:
        out = run_bench(args.name, args.quick, args.rounds)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
