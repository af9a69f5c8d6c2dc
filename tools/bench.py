"""Benchmarks: ``python tools/bench.py NAME [--quick] [--rounds N]`` prints one JSON object on stdout.

Each bench measures its figures and, interleaved with them round by round, the baselines
its targets are ratios against (see :mod:`tools.bench_harness`). NAME is one of the
registered benches or ``all``; ``--only SECTION,...`` runs some sections of one bench (those
it lists in ``SECTIONS``), and only the targets on figures those sections measured are
checked. The object::

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
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.bench_harness import MIN_ROUNDS, Report, load_average, machine

__all__ = ["BENCHES", "bench_module", "main", "merge", "run_bench"]

#: bench name -> module under tools/ exposing ``TARGETS`` and ``run(quick, rounds) -> Report``; a
#: bench made of sections also lists them in ``SECTIONS`` and takes ``run(..., sections=...)``
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


def _has_sections(name: str) -> bool:
    return bool(getattr(bench_module(name), "SECTIONS", ()))


def run_bench(
    name: str, quick: bool, rounds: int = MIN_ROUNDS, sections: Sequence[str] | None = None
) -> dict[str, Any]:
    """Run one registered bench; return its JSON object, targets checked against its ``TARGETS``.

    With ``sections``, only those sections of the bench run, and only the targets on figures
    they recorded are checked.

    Raises:
        ValueError: ``sections`` names a section the bench does not have.
    """
    module = bench_module(name)
    runner: Callable[..., Report] = module.run
    targets = module.TARGETS
    load_start = load_average()[0]
    started = time.perf_counter()
    if sections is None:
        report = runner(quick, rounds)
    else:
        known: tuple[str, ...] = getattr(module, "SECTIONS", ())
        unknown = [s for s in sections if s not in known]
        if unknown:
            raise ValueError(
                f"bench {name!r} has no section {unknown[0]!r}; its sections: {', '.join(known) or 'none'}"
            )
        report = runner(quick, rounds, sections=tuple(sections))
        targets = [t for t in targets if t.figure in report.figures]
        report.param("sections", len(sections))
    report.param("rounds", rounds)
    report.param("elapsed_s", time.perf_counter() - started)
    report.param("load_avg_1m_start", load_start)
    report.param("load_avg_1m_end", load_average()[0])
    report.check(targets)
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
    parser.add_argument(
        "--only",
        metavar="SECTION,...",
        help="run only these sections of one bench ("
        + "; ".join(f"{n}: {','.join(bench_module(n).SECTIONS)}" for n in BENCHES if _has_sections(n))
        + ")",
    )
    args = parser.parse_args(argv)
    if args.rounds < MIN_ROUNDS:
        parser.error(f"--rounds must be at least {MIN_ROUNDS}")
    sections = [s for s in args.only.split(",") if s] if args.only is not None else None
    if sections is not None and (args.name == "all" or not sections):
        parser.error("--only takes one bench and at least one of its sections")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the local S3 server's request log
    if args.name == "all":
        started = time.perf_counter()
        out = merge([run_bench(n, args.quick, args.rounds) for n in BENCHES])
        out["params"]["elapsed_s"] = round(time.perf_counter() - started, 1)
    else:
        try:
            out = run_bench(args.name, args.quick, args.rounds, sections)
        except ValueError as exc:
            parser.error(str(exc))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
