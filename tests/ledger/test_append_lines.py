"""Ledger.append_lines: lines written by another ledger land unchanged, chains intact."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalable.errors import EventValidationError
from scalable.ledger.log import Ledger
from tests.session.helpers import verify_run


def foreign_lines(tmp: Path, run_id: str, count: int) -> list[bytes]:
    """Lines written by a separate ledger (a remote worker) for ``run_id``."""
    with Ledger.open(runs_dir=tmp) as other:
        for i in range(count):
            other.append({"event_type": "artifact", "op": "get", "run_id": run_id, "key": f"k{i}"})
        return [raw for _n, raw, _r in other.read_run(run_id).lines()]


def test_foreign_lines_keep_writer_seq_and_prev(ledger: Ledger, tmp_path: Path) -> None:
    """Appended foreign lines are byte-identical and both writers' chains verify under the seal."""
    run = "run-x"
    ledger.append({"event_type": "run", "op": "started", "run_id": run})
    lines = foreign_lines(tmp_path / "remote", run, 3)
    written = ledger.append_lines(run, lines)
    assert [r["key"] for r in written] == ["k0", "k1", "k2"]
    ledger.append({"event_type": "artifact", "op": "get", "run_id": run})
    ledger.finish_run(run)
    data = ledger.stream_path(run).read_bytes()
    assert all(line + b"\n" in data for line in lines)
    sealed = verify_run(ledger.stream_path(run))
    assert len(sealed["seal"]["heads"]) == 2


def test_broken_or_misplaced_lines_are_refused(ledger: Ledger, tmp_path: Path) -> None:
    """Lines of another run, a broken chain, garbage, or this ledger's own writer write nothing."""
    lines = foreign_lines(tmp_path / "remote", "run-a", 3)
    with pytest.raises(EventValidationError, match="belongs to run 'run-a'"):
        ledger.append_lines("run-b", lines)
    with pytest.raises(EventValidationError, match="breaks the chain"):
        ledger.append_lines("run-a", [lines[0], lines[2]])
    with pytest.raises(EventValidationError, match="does not decode"):
        ledger.append_lines("run-a", [b"{not json"])
    own = ledger.append({"event_type": "artifact", "op": "get", "run_id": "run-c"})
    with pytest.raises(EventValidationError, match="own writer"):
        ledger.append_lines("run-c", [own])
    assert not ledger.stream_path("run-a").exists() and not ledger.stream_path("run-b").exists()
