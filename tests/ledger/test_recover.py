"""Missing pieces are loud: a lost generation record deletes nothing, and ``ledger recover`` brings every event back."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from scalable.errors import LedgerError
from scalable.ledger import bind
from scalable.ledger.events import encode_line
from scalable.ledger.generations import GENERATIONS_DIR, read_generation
from scalable.ledger.log import Ledger
from tests.conftest import CliInvoker
from tools.gen_events import generate


def _files(ledger: Ledger) -> dict[str, str]:
    """Every compacted file, by path, with the SHA-256 of its bytes."""
    return {
        str(p.relative_to(ledger.ledger_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(ledger.ledger_dir.rglob("*.parquet"))
    }


def _events(ledger: Ledger) -> list[tuple[str, str]]:
    """Every event once: its id and the SHA-256 of its line."""
    rows = ledger.query("SELECT * FROM events").to_pylist()
    return sorted((r["event_id"], hashlib.sha256(encode_line(r)).hexdigest()) for r in rows)


@pytest.fixture
def compacted(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    """Sealed runs compacted one by one (small files merged), then with --no-keep-jsonl: Parquet is the only copy.

    No snapshot is kept for readers (a zero retention period), so the streams go at once.
    """
    monkeypatch.setenv("SCALABLE_SNAPSHOT_RETENTION", "0")
    generate(isolated / "runs", 6 * 50, runs=6, days=2)
    led = Ledger.open(isolated / "runs", isolated / "ledger")
    for run_id in led.run_ids():
        led.compact([run_id])
    with bind(run_id="run-late"):
        led.append({"event_type": "artifact", "op": "put", "artifact_name": "late", "size_bytes": 3})
    led.finish_run("run-late")
    led.compact(keep_jsonl=False)
    assert led.run_ids() == []
    assert led.audit(content=False).ok
    return led


COMMANDS: list[tuple[str, ...]] = [
    ("query", "SELECT count(*) FROM events"),
    ("runs",),
    ("show", "run-late"),
    ("lineage", "run-late"),
    ("compact",),
    ("compact", "--no-keep-jsonl"),
    ("compact", "--retire-before", "2026-01-02"),
    ("compact", "--run", "run-late"),
    ("export", "--sqlite", "out.db"),
    ("replay", "run-late"),
    ("audit", "--no-content"),
    ("audit",),
]


def test_the_record_deleted_after_no_keep_jsonl_deletes_nothing_and_recover_restores_every_event(
    compacted: Ledger, cli: CliInvoker
) -> None:
    """With _manifest/ gone, no command deletes a Parquet file (each fails loudly), and recover brings every event back."""
    before_events = _events(compacted)
    before_files = _files(compacted)
    shutil.rmtree(compacted.ledger_dir / GENERATIONS_DIR)
    args = ["ledger", "--runs-dir", str(compacted.runs_dir), "--ledger-dir", str(compacted.ledger_dir)]
    for command in COMMANDS:
        result = cli(*args, *command)
        assert _files(compacted) == before_files, command
        if command[0] == "audit":
            assert result.exit_code == 1 and "generation-missing" in result.stdout, (command, result.output)
        else:
            assert result.exit_code == 2, (command, result.output)
            assert "no generation record" in result.stderr and "scalable ledger recover" in result.stderr
            assert str(compacted.ledger_dir) in result.stderr and result.stderr.count("\n") == 1
    with pytest.raises(LedgerError, match="scalable ledger recover"):
        compacted.query("SELECT 1")
    recovered = cli(*args, "recover", "--format", "json")
    assert recovered.exit_code == 0, recovered.output
    summary = json.loads(recovered.stdout)[0]
    assert summary["recovered"] is True and summary["events"] == len(before_events)
    assert _files(compacted).items() >= before_files.items()  # nothing deleted
    assert _events(compacted) == before_events
    assert compacted.audit(content=False).ok
    again = cli(*args, "recover", "--format", "json")
    assert json.loads(again.stdout)[0]["recovered"] is False
    compacted.compact()
    assert _events(compacted) == before_events
    assert compacted.audit(content=False).ok


@pytest.mark.parametrize("damage", ["truncated", "emptied", "not-json", "newest-deleted"])
def test_a_damaged_record_is_loud_and_recover_restores_every_event(compacted: Ledger, damage: str) -> None:
    """A truncated, emptied or invalid newest record, or the newest one deleted, is recovered to every event once."""
    before = _events(compacted)
    files = _files(compacted)
    newest = sorted((compacted.ledger_dir / GENERATIONS_DIR).glob("*.json"))[-1]
    if damage == "truncated":
        newest.write_bytes(newest.read_bytes()[: len(newest.read_bytes()) // 2])
    elif damage == "emptied":
        newest.write_bytes(b"")
    elif damage == "not-json":
        newest.write_text('{"format": "scalable-ledger-manifest", "version": 3}')
    else:
        newest.unlink()
    where = newest.name if damage != "newest-deleted" else "_manifest"
    with pytest.raises(LedgerError, match=f"{where}.*scalable ledger recover"):
        compacted.query("SELECT 1")
    with pytest.raises(LedgerError, match="scalable ledger recover"):
        compacted.compact()
    assert _files(compacted).items() >= files.items()
    report = compacted.audit(content=False)
    assert not report.ok
    result = compacted.recover()
    assert result.recovered
    assert _events(compacted) == before
    assert compacted.audit(content=False).ok


def test_recover_of_a_sound_record_does_nothing(compacted: Ledger) -> None:
    """Recovering a ledger whose record accounts for every file commits nothing."""
    version = read_generation(compacted.location).version
    result = compacted.recover()
    assert not result.recovered and result.version == version
    assert read_generation(compacted.location).version == version


def test_a_compaction_never_deletes_a_file_whose_events_are_nowhere_else(compacted: Ledger) -> None:
    """A live file dropped from the record by hand is kept by every later compaction, and recover takes it back."""
    before = _events(compacted)
    newest = sorted((compacted.ledger_dir / GENERATIONS_DIR).glob("*.json"))[-1]
    doc: dict[str, Any] = json.loads(newest.read_text())
    dropped = doc["files"].pop()
    doc["lineage"] = None
    newest.write_text(json.dumps(doc))
    for _ in range(3):
        compacted.compact()
    assert (compacted.ledger_dir / dropped["path"]).exists()
    kinds = {p.kind for p in compacted.audit(content=False).problems}
    assert "unaccounted-events" in kinds or "events-missing" in kinds or "unlisted-file" in kinds
    compacted.recover()
    assert _events(compacted) == before


def test_leftovers_of_a_killed_compaction_are_removed_once_their_events_are_live(isolated: Path) -> None:
    """Files a compaction published but never committed are left alone until a commit makes their events live."""
    from tests.ledger.test_compact import _run_compaction

    generate(isolated / "runs", 4 * 40, runs=4, days=1)
    led = Ledger.open(isolated / "runs", isolated / "ledger")
    killed = _run_compaction(isolated, "before_manifest_commit", "")
    assert killed.returncode != 0
    leftovers = _files(led)
    assert leftovers
    assert led.query("SELECT count(*) AS n FROM events").to_pylist() == [{"n": 160}]
    assert led.audit(content=False).ok  # nothing is lost: the streams hold every event
    led.compact()
    assert not set(leftovers) & set(_files(led))
    assert led.query("SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events").to_pylist() == [
        {"n": 160, "d": 160}
    ]
    assert led.audit(content=False).ok
