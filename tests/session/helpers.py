"""Checks the session tests share: reading a run's events and verifying its writers' chains."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from scalable.ledger.audit import audit_stream
from scalable.ledger.events import GENESIS
from scalable.ledger.log import Ledger
from scalable.ledger.stream import read_stream

__all__ = ["events_of", "verify_run"]


def events_of(ledger: Ledger, run_id: str) -> list[dict[str, Any]]:
    """Every record of the run's stream, in file order."""
    reader = ledger.read_run(run_id)
    records = [r for _n, r in reader]
    assert not reader.problems, reader.problems
    return records


def verify_run(path: Path) -> dict[str, Any]:
    """Assert every writer's chain links, the seal names every head, and the ledger's audit agrees.

    Returns:
        The decoded attrs of the run's ``run/finished`` event.
    """
    heads: dict[str, tuple[int, str]] = {}
    sealed: dict[str, Any] | None = None
    lines = list(read_stream(path).lines())
    assert lines, f"{path} is empty"
    for number, raw, record in lines:
        assert sealed is None, f"{path}:{number}: event after the seal"
        writer = record["writer"]
        seq, prev = heads.get(writer, (-1, GENESIS))
        assert record["seq"] == seq + 1, f"{path}:{number}: writer {writer} seq {record['seq']} after {seq}"
        assert record["prev"] == prev, f"{path}:{number}: writer {writer} chain broken"
        if record["event_type"] == "run" and record["op"] == "finished":
            sealed = json.loads(record["attrs"])
            want = {w: {"seq": s, "head": h} for w, (s, h) in heads.items()}
            assert sealed["seal"]["heads"] == want, f"{path}:{number}: seal does not match the chain heads"
        heads[writer] = (record["seq"], hashlib.sha256(raw).hexdigest())
    assert sealed is not None, f"{path}: run was not sealed"
    key = os.environ.get("SCALABLE_LEDGER_KEY")
    report = audit_stream(path, path.parent.name, key=key.encode() if key else None)
    assert report.ok, [str(p) for p in report.problems]
    return sealed
