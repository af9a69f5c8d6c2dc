"""The demo: a small workflow through ScalableSession on the embedded default, traced with the CLI.

Run it with ``make demo`` (or ``python examples/demo.py`` in any directory). Everything lands
in the working directory: ``scalable.yaml`` (written when missing), ``demo-output/`` (the
files the tasks write) and ``.scalable/`` (the artifact store, the result cache and the
ledger). No server is needed.

What happens:

1. three tasks run on the ``local`` target (threads); each writes a CSV table and stores it
   with ``session.put`` (an ``artifact/put`` event with its SHA-256 digest);
2. a ``@cacheable`` step totals the tables; it is called twice, and the second call is a
   cache hit (run the demo again and both calls hit, across runs);
3. a summary is derived from the tables and recorded with ``inputs=`` (their digests), so its
   lineage leads back to them; ``timings.json``, how long the steps took, is recorded too (it
   changes every run, so two runs compared show one changed artifact);
4. the real CLI prints the run's artifacts (``scalable ledger query``), the cache lookups of
   every demo run so far, the summary's lineage as a tree (``scalable ledger lineage``: one
   level up, the tables it was derived from and the runs that generated it) and an audit of
   every chain and stored byte (``scalable ledger audit``);
5. it prints how to open the same ledger in the explorer (``scalable ui``). With
   ``--ui=serve``, or ``--ui=auto`` (as ``make demo`` runs it) in a terminal, it then serves
   the explorer itself (``scalable ui``, with any arguments after ``--ui``) and prints the URL
   to open; Ctrl-C stops it. Without a terminal ``--ui=auto`` ends there, so scripts and CI
   that run the demo are never left waiting.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from scalable import FileType, ScalableSession, cacheable

MANIFEST = """\
version: 1
project:
  name: demo
targets:
  local: {provider: local, max_workers: 3}
components:
  prepare: {description: write the input tables}
  analyse: {description: total and summarise them}
tasks:
  make_table: prepare
  summarise: analyse
"""
OUT = Path("demo-output")


def make_table(session: ScalableSession, index: int) -> str:
    """Task: write table ``index`` (the same bytes every run) and store it under the run."""
    path = OUT / f"table-{index}.csv"
    rows = [f"{index}-{i},{(index + 1) * i}" for i in range(1, 6)]
    path.write_text("name,value\n" + "\n".join(rows) + "\n")
    ref = session.put(path, f"tables/{path.name}")
    return ref.digest


@cacheable(table=FileType)
def column_total(table: str) -> int:
    """The cached step: the sum of a table's ``value`` column (keyed on the file's bytes)."""
    lines = Path(table).read_text().splitlines()[1:]
    return sum(int(line.split(",")[1]) for line in lines)


def summarise(session: ScalableSession, tables: list[str], digests: list[str]) -> str:
    """Task: derive the summary from the tables and record it with their digests as inputs."""
    totals = {Path(t).name: column_total(t) for t in tables}
    again = {Path(t).name: column_total(t) for t in tables}  # the same calls: cache hits
    assert again == totals
    summary = OUT / "summary.json"
    summary.write_text(
        json.dumps({"totals": totals, "grand_total": sum(totals.values())}, indent=2, sort_keys=True) + "\n"
    )
    session.put(summary, "summary.json", kind="result")
    event = session.record_artifact(summary, kind="result", inputs=digests, metadata={"tables": len(tables)})
    assert event is not None
    return str(event["digest"])


def scalable(*args: str) -> None:
    """Run the real ``scalable`` CLI and let it print."""
    shown = " ".join(f'"{a}"' if " " in a else a for a in args)
    print(f"\n$ scalable {shown}", flush=True)
    subprocess.run([sys.executable, "-m", "scalable", *args], check=True)


def main() -> None:
    """Run the workflow once, then query, trace and audit it with the CLI."""
    manifest = Path("scalable.yaml")
    if not manifest.exists():
        manifest.write_text(MANIFEST)
        print(f"wrote {manifest} (project 'demo')")
    OUT.mkdir(exist_ok=True)
    with ScalableSession.from_yaml(manifest, target="local") as session:
        started = time.perf_counter()
        futures = session.map(make_table, [session] * 3, range(3))
        digests = [f.result() for f in futures]
        tables_s = time.perf_counter() - started
        tables = [str(OUT / f"table-{i}.csv") for i in range(3)]
        summary = session.submit(summarise, session, tables, digests).result()
        timings = OUT / "timings.json"
        timings.write_text(json.dumps({"tables_s": tables_s, "all_s": time.perf_counter() - started}) + "\n")
        session.record_artifact(timings, kind="report")
        run_id = session.run_id
    print(f"run {run_id} finished: 4 tasks, 4 puts, 1 derived output ({summary[:12]}...), 1 report")

    scalable(
        "ledger",
        "query",
        "SELECT task_name, op, artifact_name, kind, size_bytes, left(digest, 12) AS digest "
        f"FROM artifacts WHERE run_id = '{run_id}' ORDER BY timestamp",
    )
    scalable(
        "ledger",
        "query",
        "SELECT run_id, function_name, count(*) FILTER (WHERE op = 'miss') AS misses, "
        "count(*) FILTER (WHERE op = 'hit') AS hits FROM cache GROUP BY ALL ORDER BY run_id",
    )
    scalable("ledger", "lineage", summary, "--depth", "1")
    scalable("ledger", "audit")


def explore(ui_args: list[str]) -> None:
    """Serve the ledger in the explorer (the real ``scalable ui``) until Ctrl-C."""
    print("\nThe explorer shows the same ledger in a browser: open the URL below (Ctrl-C stops it).", flush=True)
    server = subprocess.Popen([sys.executable, "-m", "scalable", "ui", *ui_args])
    try:
        server.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the explorer too: let it stop on its own
        server.wait(timeout=30)


def _serve_explorer(mode: str) -> bool:
    """Whether ``--ui=MODE`` asks to serve the explorer now (``auto``: only in a terminal)."""
    if mode not in ("auto", "serve", "no"):
        raise SystemExit(f"--ui={mode}: use --ui=auto, --ui=serve or --ui=no")
    return mode == "serve" or (mode == "auto" and sys.stdin.isatty())


if __name__ == "__main__":
    main()
    mode = sys.argv[1].partition("=")[2] if sys.argv[1:2] and sys.argv[1].startswith("--ui") else "no"
    if _serve_explorer(mode or "auto"):
        explore(sys.argv[2:])
    else:
        print("\nExplore this ledger in a browser: scalable ui  (then open http://127.0.0.1:8765/)")
