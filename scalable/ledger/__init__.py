"""The event-sourced core: events, the log, the bus and SQL views.

This package imports nothing else of scalable but ``errors``, ``settings``, ``logs`` and ``digests``.
"""

from __future__ import annotations

from scalable.ledger.bus import activate, active, publish, publish_many, subscribe
from scalable.ledger.context import bind
from scalable.ledger.events import COLUMNS, Event
from scalable.ledger.log import Ledger
from scalable.ledger.stream import LineProblem, read_stream

__all__ = [
    "COLUMNS",
    "Event",
    "Ledger",
    "LineProblem",
    "activate",
    "active",
    "bind",
    "publish",
    "publish_many",
    "read_stream",
    "subscribe",
]
