"""Reading the newest events of live streams, and following them as they are appended."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from scalable.errors import RunNotFoundError
from scalable.ledger.events import decode_line
from scalable.ledger.log import STREAM_NAME, Ledger, flush_all, read_stream
from scalable.logs import get_logger

__all__ = ["follow_events", "tail_events"]

_log = get_logger("scalable.ledger")


def _streams(ledger: Ledger, run_id: str | None) -> list[Path]:
    if run_id is not None:
        path = ledger.stream_path(run_id)
        if not path.exists():
            raise RunNotFoundError(f"run {run_id!r} has no stream under {str(ledger.runs_dir)!r}; list runs with: scalable ledger query \"SELECT run_id FROM runs\"")
        return [path]
    if not ledger.runs_dir.is_dir():
        return []
    return sorted(ledger.runs_dir.glob(f"*/{STREAM_NAME}"))


def tail_events(ledger: Ledger, run_id: str | None = None, lines: int = 10) -> list[dict[str, Any]]:
    """Return the last ``lines`` events (of one run, or of all live streams) in time order.

    Malformed lines are skipped and logged with file and line number.

    Raises:
        RunNotFoundError: ``run_id`` has no stream.
    """
    flush_all()
    records: list[dict[str, Any]] = []
    for path in _streams(ledger, run_id):
        reader = read_stream(path)
        records.extend(record for _n, record in reader)
        for problem in reader.problems:
            _log.warning("ledger.malformed_line", problem=str(problem))
    records.sort(key=lambda r: (r["timestamp"], r["event_id"]))
    return records[-lines:] if lines > 0 else []


def follow_events(
    ledger: Ledger,
    run_id: str | None = None,
    *,
    poll_s: float = 0.5,
    stop: Callable[[], bool] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield events appended after the call, as they arrive (complete lines only).

    New runs' streams are picked up while following. Ends when ``stop()`` returns true.
    """
    offsets: dict[Path, int] = {p: p.stat().st_size for p in _streams(ledger, run_id)}
    while stop is None or not stop():
        for path in _streams(ledger, run_id):
            start = offsets.get(path, 0)
            try:
                with path.open("rb") as fh:
                    fh.seek(start)
                    chunk = fh.read()
            except FileNotFoundError:
                continue
            end = chunk.rfind(b"\n")
            if end < 0:
                continue
            offsets[path] = start + end + 1
            for raw in chunk[: end + 1].split(b"\n"):
                if not raw:
                    continue
                try:
                    yield decode_line(raw)
                except ValueError as exc:
                    _log.warning("ledger.malformed_line", stream=str(path), error=str(exc))
        time.sleep(poll_s)
