"""Helpers for ledger tests: read every record of a run and check its chains."""

from __future__ import annotations

from typing import Any

from scalable.ledger.log import Ledger


def records(ledger: Ledger, run_id: str) -> list[dict[str, Any]]:
    """Every good record of the run's stream, in file order (fails on malformed lines)."""
    reader = ledger.read_run(run_id)
    out = [r for _n, r in reader]
    assert not reader.problems, reader.problems
    return out


def assert_chains_verify(ledger: Ledger, run_id: str) -> None:
    """Every writer's seq is gapless and its prev chain holds (and the seal, if any)."""
    report = ledger.audit_structure(run_id)
    assert report.ok, [str(p) for p in report.problems]
