"""Bench ``scale``: compaction and queries over synthetic events of 1,000 runs with parent links.

Sizes: 1,000,000 events (``--quick``: 250,000) that :mod:`tools.gen_events` writes.

Compaction, in interleaved rounds, each side in its own child process (so its peak RSS is its
own; the child times itself, interpreter start and imports excluded):
``compact_events_per_s`` and ``compact_peak_rss_mb`` of ``Ledger.compact()`` into an empty
ledger directory (dedup checks, sort order, verification and the manifest commit included),
against the engine's own floor ``copy_floor_events_per_s``: DuckDB's plain ``COPY (SELECT *
FROM read_json(<streams>, columns=<schema>)) TO '<x>.parquet'`` with no dedup and no sort.
Targets: ``compact_vs_copy_floor >= 0.8`` (per-round ratio of rates) and
``compact_peak_rss_mb <= 1024``.

Queries through ``Ledger.query``, in interleaved rounds: ``query_run_ms`` (one run's
artifacts; target <= 100) and ``query_groupby_ms`` (count by run over all events; target
<= 1000) over the compacted ledger, and the same two over the JSON-lines streams alone
(``query_run_jsonl_ms``, ``query_groupby_jsonl_ms``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from scalable import Ledger
from tools.bench_harness import Case, Report, Target, interleave, per_second
from tools.gen_events import generate, run_id_of

__all__ = ["TARGETS", "run"]

TARGETS = (
    Target("compact_vs_copy_floor", ">=", 0.8),
    Target("compact_peak_rss_mb", "<=", 1024),
    Target("query_run_ms", "<=", 100),
    Target("query_groupby_ms", "<=", 1000),
)

ROOT = Path(__file__).resolve().parents[1]

#: The child's peak resident memory in MiB, from its own memory map (``VmHWM``). Not
#: ``ru_maxrss``: a child forked from a large parent inherits the parent's high-water mark.
_PEAK = "int(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:'))) / 1024"

_FLOOR = """
import glob, json, os, sys, time
import duckdb
sys.path.insert(0, {root!r})
from scalable.ledger.events import duckdb_columns
files = sorted(glob.glob(os.path.join({runs!r}, "*", "artifacts.jsonl")))
columns = "{{" + ", ".join(f"'{{n}}': '{{t}}'" for n, t in duckdb_columns().items()) + "}}"
con = duckdb.connect()
con.execute("SET enable_progress_bar=false")
start = time.perf_counter()
con.execute(f"COPY (SELECT * FROM read_json({{files!r}}, columns={{columns}})) TO '{out}'")
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "peak_rss_mib": {peak}}}))
"""

_COMPACT = """
import json, sys, time
import duckdb, pyarrow.compute, pyarrow.parquet  # imported before the clock starts, as in the floor
sys.path.insert(0, {root!r})
from scalable import Ledger
led = Ledger.open({runs!r}, {ledger!r})
start = time.perf_counter()
result = led.compact()
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds, "events": result.events_written, "peak_rss_mib": {peak}}}))
"""


def _child(code: str) -> dict[str, float]:
    """Run ``code`` in a child process; return the JSON object it printed last."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench child failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, float] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result


def _query(ledger: Ledger, sql: str) -> Callable[[int], None]:
    def run(_index: int) -> None:
        ledger.query(sql)

    return run


def run(quick: bool, rounds: int) -> Report:
    """Generate the streams, then compaction against the copy floor, then queries, in rounds."""
    events = 250_000 if quick else 1_000_000
    report = Report()
    work = Path(tempfile.mkdtemp(prefix="scalable-bench-scale-"))
    try:
        runs_dir, ledger_dir = work / "runs", work / "ledger"
        started = time.perf_counter()
        gen = generate(runs_dir, events, runs=1000, days=30)
        report.param("events", gen.events)
        report.param("runs", len(gen.run_ids))
        report.param("jsonl_mib", gen.bytes / 2**20)
        report.param("setup_generate_s", time.perf_counter() - started)
        floor_out = work / "floor.parquet"

        def floor(_index: int) -> dict[str, float]:
            return _child(_FLOOR.format(root=str(ROOT), runs=str(runs_dir), out=str(floor_out), peak=_PEAK))

        def compact(_index: int) -> dict[str, float]:
            result = _child(_COMPACT.format(root=str(ROOT), runs=str(runs_dir), ledger=str(ledger_dir), peak=_PEAK))
            if result.pop("events") != gen.events:
                raise RuntimeError(f"compaction wrote a different number of events than the {gen.events} generated")
            return result

        samples = interleave(
            {
                "copy_floor": Case(floor, after=lambda i: floor_out.unlink(missing_ok=True)),
                "compact": Case(compact, before=lambda i: shutil.rmtree(ledger_dir, ignore_errors=True)),
            },
            rounds=rounds,
        )
        floor_rate = per_second(gen.events, samples["copy_floor"])
        compact_rate = per_second(gen.events, samples["compact"])
        report.figure("copy_floor_events_per_s", floor_rate, "higher")
        report.figure("compact_events_per_s", compact_rate, "higher")
        report.ratio("compact_vs_copy_floor", compact_rate, floor_rate, "higher")
        report.figure("compact_peak_rss_mb", samples["compact", "peak_rss_mib"], "lower")
        report.figure("copy_floor_peak_rss_mb", samples["copy_floor", "peak_rss_mib"], "lower")

        compacted = Ledger.open(runs_dir, ledger_dir)
        jsonl_only = Ledger.open(runs_dir, work / "no-ledger")
        run_sql = f"SELECT * FROM artifacts WHERE run_id = '{run_id_of(500)}'"
        group_sql = "SELECT run_id, count(*) AS n FROM events GROUP BY run_id"
        queries = interleave(
            {
                "run": _query(compacted, run_sql),
                "groupby": _query(compacted, group_sql),
                "run_jsonl": _query(jsonl_only, run_sql),
                "groupby_jsonl": _query(jsonl_only, group_sql),
            },
            rounds=rounds,
        )
        for name in ("run", "groupby", "run_jsonl", "groupby_jsonl"):
            report.figure(f"query_{name}_ms", [s * 1000 for s in queries[name]], "lower")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report
