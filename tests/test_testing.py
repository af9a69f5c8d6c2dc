"""scalable.testing: the helpers users get for their own tests."""

from __future__ import annotations

from pathlib import Path

from scalable.ledger import bus
from scalable.testing import captured_events, memory_store, temporary_ledger


def test_temporary_ledger_is_active_and_removed_afterwards() -> None:
    """Events inside the block go to the throwaway ledger, whose directory is gone afterwards."""
    with temporary_ledger() as ledger:
        assert bus.active() is ledger
        bus.publish({"event_type": "artifact", "op": "recorded", "artifact_name": "x", "run_id": "run-t"})
        assert ledger.query("SELECT artifact_name FROM artifacts").column(0).to_pylist() == ["x"]
        root = Path(ledger.runs_dir).parent
    assert not root.exists()
    assert bus.active() is not ledger


def test_memory_store_and_captured_events() -> None:
    """An in-memory store's puts are captured as events, async ones included."""
    with temporary_ledger(), captured_events(["artifact", "cache"]) as events:
        store = memory_store()
        ref = store.put_bytes(b"hello", "greeting.txt")
        assert store.get_bytes("greeting.txt") == b"hello"
        bus.publish_async({"event_type": "cache", "op": "miss", "function_name": "f"})
    assert [(e["event_type"], e["op"]) for e in events] == [("artifact", "put"), ("artifact", "get"), ("cache", "miss")]
    assert events[0]["digest"] == ref.digest
