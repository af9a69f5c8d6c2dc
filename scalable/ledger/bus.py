"""The bus: where components publish events and anything may subscribe.

``active()`` is the ledger events go to: the innermost open session's ledger, else a default
ledger opened from settings (with an implicit per-process run). ``publish`` appends to it.
Publishing is a no-op when ``SCALABLE_TELEMETRY=0``.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from scalable.ledger.log import Ledger, Subscriber, subscribe_all

__all__ = ["activate", "active", "publish", "publish_async", "publish_many", "reset_default", "subscribe"]

_lock = threading.RLock()
_stack: list[Ledger] = []
_default: Ledger | None = None
# A context-local override of the process-wide stack (tasks of a worker running in parallel).
_scoped: ContextVar[Ledger | None] = ContextVar("scalable_scoped_ledger", default=None)


def active() -> Ledger:
    """Return the ledger events are published to (the session's, else the default one)."""
    global _default
    scoped = _scoped.get()
    if scoped is not None:
        return scoped
    if _stack:
        return _stack[-1]
    with _lock:
        if _stack:
            return _stack[-1]
        if _default is None or _default._closed:
            _default = Ledger.open()
        return _default


@contextmanager
def activate(ledger: Ledger, *, scoped: bool = False) -> Iterator[Ledger]:
    """Make ``ledger`` the active one inside the block (sessions use this).

    Args:
        ledger: the ledger events are published to inside the block.
        scoped: only for the current thread/context (a task on a worker that runs several
            tasks at once), instead of for the whole process.
    """
    if scoped:
        token = _scoped.set(ledger)
        try:
            yield ledger
        finally:
            _scoped.reset(token)
        return
    with _lock:
        _stack.append(ledger)
    try:
        yield ledger
    finally:
        with _lock:
            # Remove this ledger's entry even if blocks were exited out of order.
            for i in range(len(_stack) - 1, -1, -1):
                if _stack[i] is ledger:
                    del _stack[i]
                    break


def publish(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """Append ``event`` to the active ledger; return the record, or ``None`` if telemetry is off."""
    ledger = active()
    if not ledger.settings.telemetry:
        return None
    return ledger.append(event)


def publish_async(event: Mapping[str, Any]) -> None:
    """Queue ``event`` on the active ledger, written soon in a batch (see ``Ledger.append_async``)."""
    ledger = active()
    if ledger.settings.telemetry:
        ledger.append_async(event)


def publish_many(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Append several events to the active ledger in one write per stream."""
    ledger = active()
    if not ledger.settings.telemetry:
        return []
    return ledger.append_many(events)


def subscribe(callback: Subscriber, event_types: Iterable[str] | None = None) -> Callable[[], None]:
    """Call ``callback(record)`` for every event appended by any ledger of this process.

    Returns:
        A function that unsubscribes the callback.
    """
    return subscribe_all(callback, event_types)


def reset_default() -> None:
    """Close the default ledger (finishing its implicit run); the next use reopens it.

    Useful after changing ``SCALABLE_*`` variables, and in tests.
    """
    global _default
    with _lock:
        if _default is not None:
            _default.close()
        _default = None


atexit.register(reset_default)
