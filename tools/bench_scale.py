"""Bench ``scale``: compaction and queries over synthetic events of 1,000 runs with parent links.

Figures: ``compact_events_per_s`` and ``compact_peak_rss_mb`` of ``Ledger.compact()`` (dedup
checks, sort order, verification and the manifest commit included), and, interleaved with it
in the same run, the engine's own floor ``copy_floor_events_per_s``: DuckDB's plain
``COPY (SELECT * FROM read_json(<streams>, columns=<schema>)) TO '<x>.parquet'`` with no
dedup and no sort; ``compact_vs_copy_floor`` is their ratio. Each side runs in its own child
process (so its peak RSS is its own) and the best of the rounds counts for both. Then
``query_run_ms`` (one run's artifacts) and ``query_groupby_ms`` (count by run over all events)
through ``Ledger.query`` over the compacted ledger, and the same two over the JSON-lines
streams alone (``query_run_jsonl_ms``, ``query_groupby_jsonl_ms``); medians of five.

Sizes: 10,000,000 events (``--quick``: 1,000,000) from :mod:`gen_events`.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import Figures, Targets, target
from gen_events import generate, run_id_of

from scalable.ledger.log import Ledger

ROOT = Path(__file__).resolve().parents[1]

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
print(json.dumps({{"seconds": time.perf_counter() - start}}))
"""

_COMPACT = """
import json, sys, time
import duckdb, pyarrow.compute, pyarrow.parquet  # imported before the clock starts, as in the floor
sys.path.insert(0, {root!r})
from scalable.ledger.log import Ledger
led = Ledger.open({runs!r}, {ledger!r})
start = time.perf_counter()
result = led.compact()
print(json.dumps({{"seconds": time.perf_counter() - start, "events": result.events_written}}))
"""


def _child(code: str) -> tuple[dict[str, Any], float]:
    """Run ``code`` in a child process; return its JSON output and its peak RSS in MiB."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    _pid, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"bench child failed: {err.decode()[-2000:]}")
    return json.loads(out.decode().strip().splitlines()[-1]), usage.ru_maxrss / 1024


def _median_ms(led: Ledger, sql: str, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        led.query(sql)
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 1)


def run(quick: bool) -> tuple[Figures, Targets]:
    """Generate the ledger, measure compaction against the copy floor, then queries."""
    events = 1_000_000 if quick else 10_000_000
    rounds = 2
    work = Path(tempfile.mkdtemp(prefix="scalable-bench-scale-"))
    try:
        runs_dir, ledger_dir = work / "runs", work / "ledger"
        started = time.perf_counter()
        gen = generate(runs_dir, events, runs=1000, days=30)
        generate_s = time.perf_counter() - started
        floor_s, compact_s, rss = [], [], []
        for _ in range(rounds):
            floor, _ = _child(_FLOOR.format(root=str(ROOT), runs=str(runs_dir), out=str(work / "floor.parquet")))
            floor_s.append(floor["seconds"])
            (work / "floor.parquet").unlink(missing_ok=True)
            shutil.rmtree(ledger_dir, ignore_errors=True)
            result, peak = _child(_COMPACT.format(root=str(ROOT), runs=str(runs_dir), ledger=str(ledger_dir)))
            if result["events"] != gen.events:
                raise RuntimeError(f"compaction wrote {result['events']} events, expected {gen.events}")
            compact_s.append(result["seconds"])
            rss.append(peak)
        compacted = Ledger.open(runs_dir, ledger_dir)
        jsonl_only = Ledger.open(runs_dir, work / "no-ledger")
        one_run = run_id_of(500)
        run_sql = f"SELECT * FROM artifacts WHERE run_id = '{one_run}'"
        group_sql = "SELECT run_id, count(*) AS n FROM events GROUP BY run_id"
        figures: Figures = {
            "events": gen.events,
            "runs": len(gen.run_ids),
            "jsonl_mib": round(gen.bytes / 2**20, 1),
            "generate_s": round(generate_s, 2),
            "copy_floor_events_per_s": round(gen.events / min(floor_s)),
            "compact_events_per_s": round(gen.events / min(compact_s)),
            "compact_vs_copy_floor": round(min(floor_s) / min(compact_s), 3),
            "compact_peak_rss_mb": round(max(rss), 1),
            "query_run_ms": _median_ms(compacted, run_sql),
            "query_groupby_ms": _median_ms(compacted, group_sql),
            "query_run_jsonl_ms": _median_ms(jsonl_only, run_sql, repeat=3),
            "query_groupby_jsonl_ms": _median_ms(jsonl_only, group_sql, repeat=3),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    targets = [
        target(figures, "compact_vs_copy_floor", ">=", 0.8),
        target(figures, "compact_peak_rss_mb", "<=", 1024),
        target(figures, "query_run_ms", "<=", 100),
        target(figures, "query_groupby_ms", "<=", 1000),
    ]
    return figures, targets
