"""The demo of ``make demo``: a real workflow, queried, traced and audited, twice in a row."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
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


def test_make_demo_runs_the_workflow_then_prints_the_url_of_the_explorer(isolated: Path) -> None:
    """`make demo UI=serve` (from any directory) runs the demo, then serves its ledger and prints the URL; Ctrl-C stops it."""
    venv = Path(sys.prefix)
    env = {k: v for k, v in child_env().items() if not k.startswith(("SCALABLE_", "MAKE"))}
    proc = subprocess.Popen(
        [
            "make",
            "-s",
            "-f",
            str(ROOT / "Makefile"),
            "-o",
            f"{venv}/.core-installed",
            "demo",
            f"VENV={venv}",
            f"PY={sys.executable}",
            "UI=serve",
            "UI_ARGS=--port 0",
        ],
        cwd=isolated,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    printed: list[str] = []
    try:
        for line in proc.stdout:
            printed.append(line)
            if line.startswith("scalable ui: "):
                break
        url = printed[-1].split(" at ", 1)[1].split(" ", 1)[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/"), "".join(printed)
        assert "open the URL below" in "".join(printed) and "audit ok: " in "".join(printed)
        with urllib.request.urlopen(url + "api/runs") as answer:
            runs = json.load(answer)["runs"]
        assert [r["project"] for r in runs] == ["demo"] and runs[0]["artifacts"] == 6
        with urllib.request.urlopen(url) as answer:
            assert answer.status == 200 and answer.url.endswith("/runs") and b"<main" in answer.read()
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a user stops it: to make, the demo and the explorer
        rest = proc.communicate(timeout=60)[0]
    assert "scalable ui: stopped" in rest


def test_make_demo_without_a_terminal_ends_after_the_workflow(isolated: Path) -> None:
    """`make demo` with no terminal (scripts, CI) runs the workflow, says how to open the explorer and exits 0."""
    venv = Path(sys.prefix)
    env = {k: v for k, v in child_env().items() if not k.startswith(("SCALABLE_", "MAKE"))}
    done = subprocess.run(
        [
            "make",
            "-s",
            "-f",
            str(ROOT / "Makefile"),
            "-o",
            f"{venv}/.core-installed",
            "demo",
            f"VENV={venv}",
            f"PY={sys.executable}",
        ],
        check=False,
        cwd=isolated,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit ok: " in done.stdout
    assert "Explore this ledger in a browser: scalable ui" in done.stdout
    assert "scalable ui: " not in done.stdout  # nothing was served
