"""Benchmarks: ``python tools/bench.py NAME [--quick]`` prints one JSON object on stdout.

Each bench measures its figures and, in the same process run and interleaved with them, the
baselines its targets are ratios against. NAME is one of the registered benches or ``all``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Figures = dict[str, float]
Targets = list[dict[str, Any]]

#: bench name -> module under tools/ exposing ``run(quick: bool) -> (figures, targets)``
BENCHES: dict[str, str] = {
    "append": "bench_append",
    "cache": "bench_cache",
    "lineage": "bench_lineage",
    "put": "bench_put",
    "scale": "bench_scale",
    "session": "bench_session",
}


def target(figures: Figures, figure: str, op: str, value: float) -> dict[str, Any]:
    """Build one target entry, evaluating whether ``figures[figure] op value`` holds."""
    got = figures[figure]
    met = got <= value if op == "<=" else got >= value
    return {"figure": figure, "op": op, "value": value, "met": bool(met)}


def machine() -> dict[str, Any]:
    """Describe the machine the figures were measured on."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def run_bench(name: str, quick: bool) -> dict[str, Any]:
    """Run one registered bench and return its JSON object."""
    tools_dir = str(Path(__file__).resolve().parent)
    if tools_dir not in sys.path:
        sys.path.insert(0, tools_dir)
    module = importlib.import_module(BENCHES[name])
    runner: Callable[[bool], tuple[Figures, Targets]] = module.run
    figures, targets = runner(quick)
    return {"bench": name, "machine": machine(), "figures": figures, "targets": targets}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the bench(es), print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=[*BENCHES, "all"])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, same targets (< 60 s each)")
    args = parser.parse_args(argv)
    if args.name == "all":
        results = [run_bench(n, args.quick) for n in BENCHES]
        figures = {f"{r['bench']}.{k}": v for r in results for k, v in r["figures"].items()}
        targets = [{**t, "figure": f"{r['bench']}.{t['figure']}"} for r in results for t in r["targets"]]
        out = {"bench": "all", "machine": machine(), "figures": figures, "targets": targets}
    else:
        out = run_bench(args.name, args.quick)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
