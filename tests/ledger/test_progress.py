"""Long work reports its progress as it goes: audits (streams, compacted runs, artifacts) and exports."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from scalable.ledger import bind
from scalable.ledger.audit import AuditProgress
from scalable.ledger.export import export_formats, export_sqlite
from scalable.ledger.log import Ledger

#: Events of the big run: about 3 MB of stream, so a reader reports several times within it.
EVENTS = 8000
ARTIFACTS = 24


@pytest.fixture
def big(ledger: Ledger, isolated: Path) -> Ledger:
    """One sealed run of EVENTS events, ARTIFACTS of them local files recorded with their digests."""
    files = isolated / "files"
    files.mkdir()
    events = []
    for i in range(ARTIFACTS):
        path = files / f"f{i}.bin"
        path.write_bytes(bytes([i]) * 1000)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        events.append({"event_type": "artifact", "op": "recorded", "location": path.as_uri(), "digest": digest})
    padding = "x" * 300
    events += [
        {"event_type": "task", "op": "started", "task_name": f"t{i}", "attrs": {"p": padding}}
        for i in range(EVENTS - ARTIFACTS)
    ]
    with bind(run_id="run-big"):
        ledger.append_many(events)
    ledger.finish_run("run-big")
    return ledger


def recorder() -> tuple[list[tuple[str, int, int]], AuditProgress]:
    """A progress callback and the list of its calls."""
    calls: list[tuple[str, int, int]] = []
    return calls, lambda phase, done, total: calls.append((phase, done, total))


def assert_moves(calls: list[tuple[int, int]], *, at_least: int) -> None:
    """From 0 to the total, never backwards, with at least ``at_least`` reports in between."""
    assert calls[0][0] == 0 and calls[-1][0] == calls[-1][1] > 0
    dones = [done for done, _total in calls]
    assert dones == sorted(dones)
    assert len({total for _done, total in calls}) == 1
    assert sum(0 < done < total for done, total in calls) >= at_least


def test_audit_reports_the_streams_and_the_artifacts_as_it_reads_and_hashes(big: Ledger) -> None:
    """The callback gets growing byte counts while one stream is read, then each artifact as it is hashed."""
    calls, progress = recorder()
    report = big.audit(progress=progress)
    assert report.ok and report.artifacts == ARTIFACTS
    phases = [phase for phase, _d, _t in calls]
    assert phases == sorted(phases, key=["streams", "compacted", "artifacts"].index)
    streams = [(d, t) for p, d, t in calls if p == "streams"]
    assert streams[-1][1] == big.stream_path("run-big").stat().st_size
    assert_moves(streams, at_least=2)
    artifacts = [(d, t) for p, d, t in calls if p == "artifacts"]
    assert artifacts == [(n, ARTIFACTS) for n in range(ARTIFACTS + 1)]


def test_audit_reports_compacted_runs_one_by_one(big: Ledger) -> None:
    """Runs checked from their compacted rows (streams retired) are reported as each is checked."""
    with bind(run_id="run-small"):
        big.append({"event_type": "task", "op": "started", "task_name": "t"})
    big.finish_run("run-small")
    big.compact(keep_jsonl=False)
    calls, progress = recorder()
    assert big.audit(content=False, progress=progress).ok
    assert [(d, t) for p, d, t in calls if p == "compacted"] == [(0, 2), (1, 2), (2, 2)]


def test_export_sqlite_reports_each_batch_of_rows(big: Ledger, isolated: Path) -> None:
    """A SQLite export reports the rows written after each batch, not once at the end."""
    calls: list[tuple[int, int]] = []
    counts = export_sqlite(big, isolated / "out.db", lambda done, total: calls.append((done, total)))
    assert calls[-1][1] == sum(counts.values())
    assert_moves(calls, at_least=1)


@pytest.mark.parametrize("name", [f.name for f in export_formats()])
def test_every_export_reports_progress(name: str, big: Ledger, isolated: Path) -> None:
    """Each registered export reports from 0 to its total, through at least one step in between."""
    (fmt,) = [f for f in export_formats() if f.name == name]
    assert fmt.export is not None
    calls: list[tuple[int, int]] = []
    fmt.export(big, str(isolated / f"out.{name}"), lambda done, total: calls.append((done, total)))
    assert_moves(calls, at_least=1)
