"""A session on a shared remote ledger: its lines reach the remote while it runs, and on close."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from scalable import ScalableSession
from scalable.ledger import bus
from scalable.ledger.log import Ledger
from scalable.settings import load_settings


def test_an_open_run_ships_its_lines_and_close_compacts_them_remotely(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, s3_bucket: tuple[str, dict[str, Any]]
) -> None:
    """Another machine sees the running run's events before close, and the whole sealed run after."""
    import scalable.session

    remote = f"s3://{s3_bucket[0]}/ledger/"
    monkeypatch.setattr(scalable.session, "REMOTE_SYNC_INTERVAL_S", 0.2)
    monkeypatch.setenv("SCALABLE_RUNS_DIR_REMOTE", remote)
    bus.reset_default()
    (isolated / "scalable.yaml").write_text("version: 1\nproject:\n  name: shared\n")
    other = Ledger(
        load_settings(runs_dir=isolated / "other/runs", ledger_dir=isolated / "other/ledger", runs_dir_remote=remote)
    )
    session = ScalableSession.from_yaml("scalable.yaml")
    with session:
        Path("out.txt").write_text("x")
        session.record_artifact("out.txt", kind="result")
        deadline = time.monotonic() + 20
        seen: list[Any] = []
        while time.monotonic() < deadline and not seen:
            time.sleep(0.2)
            seen = (
                other.query(f"SELECT artifact_name FROM artifacts WHERE run_id = '{session.run_id}'")
                .column(0)
                .to_pylist()
            )
        assert seen == ["out.txt"]
    row = other.query(f"SELECT status, events FROM runs WHERE run_id = '{session.run_id}'").to_pylist()
    assert row == [{"status": "completed", "events": 3}]
    assert other.query("SELECT count(*) - count(DISTINCT event_id) FROM events").column(0).to_pylist() == [0]
    other.close()
