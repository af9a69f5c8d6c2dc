"""Helpers for ledger tests: read every record of a run and check its chains."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from scalable.ledger.events import GENESIS, encode_line
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


def crafted_lines(run: str, count: int, writer: str = "other:1:aa") -> list[bytes]:
    """``count`` chained artifact/put lines of ``writer`` for ``run``, as another process would write them."""
    prev, out = GENESIS, []
    for seq in range(count):
        line = encode_line(
            {
                "event_id": f"0190a0b0-c0d0-7000-8000-{seq:012x}",
                "event_type": "artifact",
                "op": "put",
                "timestamp": "2026-01-01T00:00:00.000000Z",
                "run_id": run,
                "writer": writer,
                "seq": seq,
                "prev": prev,
                "schema_version": 1,
            }
        )
        prev = hashlib.sha256(line.rstrip(b"\n")).hexdigest()
        out.append(line)
    return out


def parallel_audit_pools(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the audit fork its workers for any size in an idle process; return each process pool's worker count."""
    import concurrent.futures
    import threading

    from scalable.ledger import audit

    monkeypatch.setattr(audit, "PARALLEL_BYTES", 1)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    pools: list[int] = []

    class Pool(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, workers: int, **kwargs: Any) -> None:
            pools.append(workers)
            super().__init__(workers, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Pool)
    return pools
