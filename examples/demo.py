"""The demo: record a few real events on the embedded default, then query them with the CLI.

Run it with ``make demo``. Everything lands under ./.scalable (no server needed).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from scalable.ledger import Ledger, bind
from scalable.ledger.context import make_run_id


def _scalable(*args: str) -> None:
    print(f"\n$ scalable {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "scalable", *args], check=True)


def main() -> None:
    """Write a small run's events through the API, then query, tail and audit them."""
    workdir = Path("demo-output")
    workdir.mkdir(exist_ok=True)
    ledger = Ledger.open()
    run_id = make_run_id("demo")
    with bind(run_id=run_id):
        ledger.append({"event_type": "run", "op": "started", "attrs": {"project": "demo", "target": "local"}})
        raw = workdir / "raw.csv"
        raw.write_text("x,y\n1,2\n3,4\n")
        raw_digest = hashlib.sha256(raw.read_bytes()).hexdigest()
        with bind(task_name="prepare"):
            ledger.append({"event_type": "task", "op": "started", "attrs": {"task_id": "prepare-1"}})
            ledger.append({"event_type": "artifact", "op": "recorded", "artifact_name": raw.name,
                           "location": raw.resolve().as_uri(), "kind": "file",
                           "size_bytes": raw.stat().st_size, "digest": raw_digest})
            out = workdir / "summary.txt"
            out.write_text("rows=2\n")
            ledger.append({"event_type": "artifact", "op": "recorded", "artifact_name": out.name,
                           "location": out.resolve().as_uri(), "kind": "result",
                           "size_bytes": out.stat().st_size,
                           "digest": hashlib.sha256(out.read_bytes()).hexdigest(), "inputs": [raw_digest]})
            ledger.append({"event_type": "task", "op": "finished", "duration_s": 0.01, "attrs": {"task_id": "prepare-1"}})
    ledger.finish_run(run_id, "completed")
    ledger.close()
    print(f"recorded run {run_id}")
    _scalable("ledger", "query",
              f"SELECT artifact_name, kind, size_bytes, left(digest, 12) AS digest FROM artifacts WHERE run_id = '{run_id}'")
    _scalable("ledger", "query", "SELECT run_id, status, events, artifacts, bytes FROM runs ORDER BY started_at")
    _scalable("ledger", "tail", "--run", run_id, "-n", "3")


if __name__ == "__main__":
    main()
