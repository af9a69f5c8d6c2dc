"""Helpers for your own tests: a throwaway ledger, an in-memory store, captured events.

.. code-block:: python

    from scalable.testing import captured_events, memory_store, temporary_ledger

    with temporary_ledger() as ledger, captured_events() as events:
        store = memory_store()
        store.put_bytes(b"hello", "greeting.txt")
    assert [e["op"] for e in events] == ["put"]
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scalable.ledger import bus
from scalable.ledger.log import Ledger
from scalable.settings import load_settings
from scalable.stores import FsspecArtifactStore, build_artifact_store

__all__ = ["captured_events", "memory_store", "temporary_ledger"]


@contextmanager
def temporary_ledger(**settings: Any) -> Iterator[Ledger]:
    """Open a ledger in a new temporary directory and make it the active one inside the block.

    Args:
        **settings: overrides of :class:`scalable.settings.Settings` fields (e.g. ``telemetry=False``).

    The directory and everything in it is removed when the block ends.
    """
    root = Path(tempfile.mkdtemp(prefix="scalable-test-"))
    ledger = Ledger(load_settings(runs_dir=root / "runs", ledger_dir=root / "ledger", **settings))
    try:
        with bus.activate(ledger):
            yield ledger
    finally:
        ledger.close()
        shutil.rmtree(root, ignore_errors=True)


def memory_store(name: str | None = None) -> FsspecArtifactStore:
    """Return an artifact store on ``memory://`` under a fresh (or the given) root."""
    store = build_artifact_store(f"memory://{name or 'scalable-test-' + uuid.uuid4().hex[:12]}/")
    assert isinstance(store, FsspecArtifactStore)
    return store


@contextmanager
def captured_events(event_types: Iterable[str] | None = None) -> Iterator[list[Mapping[str, Any]]]:
    """Collect every event appended by any ledger of the process inside the block, in order."""
    events: list[Mapping[str, Any]] = []
    unsubscribe = bus.subscribe(events.append, event_types)
    try:
        yield events
    finally:
        bus.flush_all()
        unsubscribe()
