"""Reading the newest events of live streams, read from their ends, and following them as they grow."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scalable.errors import RunNotFoundError
from scalable.ledger import bus
from scalable.ledger.events import decode_line
from scalable.ledger.stream import lines_from_end, list_streams
from scalable.logs import get_logger

if TYPE_CHECKING:
    from scalable.ledger.log import Ledger

__all__ = ["follow_events", "tail_events"]

_log = get_logger("scalable.ledger")


def _streams(ledger: Ledger, run_id: str | None) -> list[Path]:
    if run_id is not None:
        path = ledger.stream_path(run_id)
        if not path.exists():
            raise RunNotFoundError(
                f"run {run_id!r} has no stream under {str(ledger.runs_dir)!r}; "
                'list runs with: scalable ledger query "SELECT run_id FROM runs"'
            )
        return [path]
    return [path for _run_id, path, _size in list_streams(ledger.runs_dir)]


def tail_events(ledger: Ledger, run_id: str | None = None, lines: int = 10) -> list[dict[str, Any]]:
    """Return the newest ``lines`` events (of one run, or of all live streams) in time order.

    Each stream is read from its end, only as far back as its last ``lines`` good lines.
    Malformed lines are skipped and logged with their stream.

    Raises:
        RunNotFoundError: ``run_id`` has no stream.
    """
    bus.flush_all()
    newest: list[dict[str, Any]] = []
    for path in _streams(ledger, run_id):
        found = 0
        for raw in lines_from_end(path) if lines > 0 else ():
            try:
                newest.append(decode_line(raw))
            except (ValueError, UnicodeDecodeError) as exc:
                _log.warning("ledger.malformed_line", stream=str(path), error=str(exc))
                continue
            found += 1
            if found == lines:
                break
    newest.sort(key=lambda e: (e["timestamp"], e["event_id"]))
    return newest[-lines:] if lines > 0 else []


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
