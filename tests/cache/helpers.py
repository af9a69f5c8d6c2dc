"""Shared helpers of the cache tests: running a "machine" process and reading its events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from scalable.ledger.log import Ledger

REPO = Path(__file__).resolve().parents[2]


def run_machine(
    home: Path, data: Path, side_effect: Path, remote: str | None, extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``tests.cache.machine`` as its own process with caches and runs under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALABLE_")}
    env.update(
        PYTHONPATH=str(REPO),
        SCALABLE_CACHE_DIR=str(home / "cache"),
        SCALABLE_RUNS_DIR=str(home / "runs"),
        SCALABLE_LEDGER_DIR=str(home / "ledger"),
    )
    if remote:
        env["SCALABLE_CACHE_REMOTE"] = remote
    env.update(extra_env or {})
    done = subprocess.run(
        [sys.executable, "-m", "tests.cache.machine", str(data), str(side_effect)],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["stderr"] = done.stderr
    return result


def cache_events(runs_dir: Path) -> list[dict[str, Any]]:
    """Return every cache event under ``runs_dir``, in stream order."""
    led = Ledger.open(runs_dir=runs_dir, ledger_dir=runs_dir.parent / "ledger")
    events = []
    for run_id in led.run_ids():
        events.extend(record for _n, record in led.read_run(run_id) if record["event_type"] == "cache")
    return sorted(events, key=lambda r: r["event_id"])
