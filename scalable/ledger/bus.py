"""The bus: the active ledger, publishing to it, and every registry of the process.

``active()`` is the ledger events go to: the innermost open session's ledger, else a default
ledger opened from settings (with an implicit per-process run). ``publish`` appends to it.
Publishing is a no-op when ``SCALABLE_TELEMETRY=0``.

The registries of the process live here as well: each ledger's subscribers and those of
every ledger (:class:`Subscribers`, :func:`subscribe`, :func:`notify`), and the open ledgers,
whose queued events :func:`flush_all` writes before anything reads. The ledger facade
(:mod:`scalable.ledger.log`) registers itself here; this module never imports it.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from scalable.logs import get_logger

if TYPE_CHECKING:
    from scalable.ledger.log import Ledger

__all__ = [
    "Subscriber",
    "Subscribers",
    "activate",
    "active",
    "flush_all",
    "has_subscribers",
    "notify",
    "open_ledgers",
    "publish",
    "publish_async",
    "publish_many",
    "register",
    "reset_default",
    "set_opener",
    "subscribe",
]

Subscriber = Callable[[Mapping[str, Any]], None]
_Entry = tuple[Subscriber, frozenset[str] | None]
_log = get_logger("scalable.ledger")


class Subscribers:
    """A registry of subscriber callbacks, each optionally limited to some event types.

    Entries are replaced, never mutated, so a notification walks a snapshot while others
    subscribe or unsubscribe.
    """

    __slots__ = ("_lock", "entries")

    def __init__(self, entries: Iterable[_Entry] = ()) -> None:
        self.entries: tuple[_Entry, ...] = tuple(entries)
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.entries)

    def add(self, callback: Subscriber, event_types: Iterable[str] | None = None) -> Callable[[], None]:
        """Add ``callback``; return a function that removes it again."""
        entry: _Entry = (callback, frozenset(event_types) if event_types is not None else None)
        with self._lock:
            self.entries = (*self.entries, entry)
        return lambda: self.discard(entry)

    def discard(self, entry: _Entry) -> None:
        """Remove ``entry`` if it is still registered."""
        with self._lock:
            self.entries = tuple(e for e in self.entries if e is not entry)


_everywhere = Subscribers()
_ledgers: weakref.WeakSet[Ledger] = weakref.WeakSet()
_opener: Callable[[], Ledger] | None = None
_lock = threading.RLock()
_stack: list[Ledger] = []
_default: Ledger | None = None
# A context-local override of the process-wide stack (tasks of a worker running in parallel).
_scoped: ContextVar[Ledger | None] = ContextVar("scalable_scoped_ledger", default=None)


def set_opener(opener: Callable[[], Ledger]) -> None:
    """Set how the default ledger is opened (the facade passes ``Ledger.open``)."""
    global _opener
    _opener = opener


def register(ledger: Ledger) -> None:
    """Add ``ledger`` to the open ledgers of the process (held weakly)."""
    _ledgers.add(ledger)


def open_ledgers() -> list[Ledger]:
    """Return the ledgers of this process that have not been garbage-collected."""
    return list(_ledgers)


def flush_all() -> None:
    """Write the queued events of every ledger in this process (reads call this first).

    A batch that cannot be written is its ledger's to raise, at its owner's next flush.
    """
    for ledger in list(_ledgers):
        ledger.flush(raise_lost=False)


def subscribe(callback: Subscriber, event_types: Iterable[str] | None = None) -> Callable[[], None]:
    """Call ``callback(event)`` for every event appended by any ledger of this process.

    A callback that raises is logged and detached; it never breaks an append.

    Returns:
        A function that unsubscribes the callback.
    """
    return _everywhere.add(callback, event_types)


def has_subscribers(own: Subscribers) -> bool:
    """Whether an event of the ledger with subscribers ``own`` has anyone to go to."""
    return bool(own.entries or _everywhere.entries)


def notify(own: Subscribers, events: Sequence[Mapping[str, Any]]) -> None:
    """Hand ``events`` to a ledger's own subscribers ``own`` and to those of every ledger.

    A callback that raises is logged and detached from both registries.
    """
    for entry in (*own.entries, *_everywhere.entries):
        callback, types = entry
        for event in events:
            if types is not None and event["event_type"] not in types:
                continue
            try:
                callback(event)
            except Exception as exc:
                _log.error("ledger.subscriber_detached", subscriber=repr(callback), error=repr(exc))
                own.discard(entry)
                _everywhere.discard(entry)
                break


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
        if _default is None or _default.closed:
            if _opener is None:
                raise RuntimeError("no ledger opener is set; import scalable.ledger first")
            _default = _opener()
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
    """Append ``event`` to the active ledger; return it as written, or ``None`` if telemetry is off."""
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


def reset_default() -> None:
    """Close the default ledger (finishing its implicit run); the next use reopens it.

    Useful after changing ``SCALABLE_*`` variables, and in tests.
    """
    global _default
    with _lock:
        if _default is not None:
            _default.close()
        _default = None


def _at_exit() -> None:
    """Write what every ledger of the process still queues, then close the default ledger.

    ``append_async`` promises its events are written at the interpreter's exit too, also for a
    ledger its owner never closed.
    """
    for ledger in list(_ledgers):
        try:
            ledger.flush()
        except Exception as exc:  # at exit a directory may be gone; nothing more can be done
            _log.warning("ledger.exit_flush_failed", error=repr(exc))
    reset_default()


atexit.register(_at_exit)
