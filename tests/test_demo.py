"""The demo of ``make demo``: a real workflow, queried, traced and audited, twice in a row."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, child_env


def _run_demo(cwd: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_demo_runs_twice_and_prints_query_lineage_and_audit(isolated: Path) -> None:
    """Two runs of examples/demo.py in a fresh directory print the artifacts, lineage and a clean audit; the second hits the cache."""
    first = _run_demo(isolated)
    assert "wrote scalable.yaml (project 'demo')" in first
    assert "project: {name: demo}" not in first and "name: demo" in (isolated / "scalable.yaml").read_text()
    second = _run_demo(isolated)
    assert "wrote scalable.yaml" not in second
    for out in (first, second):
        assert "$ scalable ledger query" in out
        for name in ("table-0.csv", "table-1.csv", "table-2.csv", "summary.json"):
            assert name in out
        assert "$ scalable ledger lineage" in out
        assert "summary.json (" in out and "derived_from: table-2.csv (" in out
        assert "$ scalable ledger audit" in out and "audit ok: " in out
    # The cache view: the first run missed three times and hit three times; the second only hit.
    rows = [line.split() for line in second.splitlines() if line.startswith("run-") and "__main__.column_total" in line]
    assert [(r[-2], r[-1]) for r in rows] == [("3", "3"), ("0", "6")]
    # The tree's root line names both runs, which generated the same summary bytes.
    root = next(line for line in second.splitlines() if line.startswith("summary.json ("))
    assert root.endswith("  [" + ", ".join(sorted(r[0] for r in rows)) + "]")
