"""The Ledger facade: each reading method passes every option through, and appends keep their promises."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from scalable.errors import ConfigError, EventValidationError, LedgerError
from scalable.ledger import context
from scalable.ledger.log import Ledger


def _put(ledger: Ledger, run: str, path: Path, *, inputs: list[str] | None = None) -> dict[str, Any]:
    import hashlib

    data = path.read_bytes()
    return ledger.append(
        {
            "event_type": "artifact",
            "op": "put",
            "run_id": run,
            "location": path.as_uri(),
            "artifact_name": path.name,
            "digest": hashlib.sha256(data).hexdigest(),
            "size_bytes": len(data),
            "inputs": inputs or [],
            "key": path.name,
        }
    )


@pytest.fixture
def two_runs(ledger: Ledger, tmp_path: Path) -> dict[str, Any]:
    """run-a puts a.txt; run-b puts b.txt derived from it, later, and c.txt from b; both finished."""
    a, b, c = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "c.txt"
    a.write_text("a")
    b.write_text("b")
    c.write_text("c")
    put_a = _put(ledger, "run-a", a)
    ledger.finish_run("run-a")
    put_b = _put(ledger, "run-b", b, inputs=[put_a["digest"]])
    put_c = _put(ledger, "run-b", c, inputs=[put_b["digest"]])
    ledger.finish_run("run-b")
    return {"a": a, "b": b, "put_a": put_a, "put_b": put_b, "put_c": put_c}


def test_audit_passes_run_and_content_through(ledger: Ledger, two_runs: dict[str, Any]) -> None:
    """``audit(run, content=False)`` checks only that run's structure; with content, changed bytes are found."""
    two_runs["a"].write_text("changed")
    full = ledger.audit()
    assert not full.ok and any("a.txt" in str(p) for p in full.problems)
    assert ledger.audit(content=False).ok
    only_b = ledger.audit("run-b")
    assert only_b.ok and only_b.runs == 1
    seen: list[tuple[str, int, int]] = []
    ledger.audit("run-b", progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert seen
    assert ledger.audit_structure("run-a").ok
    assert ledger.audit_structure().runs == 2


def test_lineage_passes_direction_depth_and_time_through(ledger: Ledger, two_runs: dict[str, Any]) -> None:
    """``lineage`` walks up by default, down or both when asked, no further than ``depth``, as of a time."""
    a, b, c = (two_runs[k]["digest"] for k in ("put_a", "put_b", "put_c"))
    assert a in ledger.lineage(b).nodes
    assert c not in ledger.lineage(b).nodes
    down = ledger.lineage(a, direction="down")
    assert {b, c} <= set(down.nodes)
    assert b not in ledger.lineage(a).nodes
    one = ledger.lineage(a, direction="down", depth=1)
    assert b in one.nodes and c not in one.nodes
    before_b = ledger.lineage(a, direction="down", as_of=two_runs["put_a"]["timestamp"])
    assert b not in before_b.nodes
    both = ledger.lineage(b, direction="both")
    assert {a, c} <= set(both.nodes)


def test_query_and_diff_pass_the_time_through(ledger: Ledger, two_runs: dict[str, Any]) -> None:
    """``query(as_of=)`` and ``diff(as_of=)`` see the ledger as it was then."""
    sql = "SELECT count(*) AS n FROM artifacts"
    assert ledger.query(sql).column("n").to_pylist() == [3]
    assert ledger.query(sql, as_of=two_runs["put_a"]["timestamp"]).column("n").to_pylist() == [1]
    changes = ledger.diff("run-a", "run-b")
    assert sorted(c.status for c in changes.artifacts) == ["added", "added", "removed"]
    from scalable.errors import RunNotFoundError

    with pytest.raises(RunNotFoundError):
        ledger.diff("run-a", "run-b", as_of=two_runs["put_a"]["timestamp"])


def test_replay_passes_until_into_and_handlers_through(
    ledger: Ledger, two_runs: dict[str, Any], tmp_path: Path
) -> None:
    """``replay`` stops at ``until``, feeds every handler, and restores into ``into``."""
    seen: list[str] = []
    result = ledger.replay("run-b", handlers=[lambda e: seen.append(f"{e['event_type']}/{e['op']}")])
    assert seen == ["artifact/put", "artifact/put", "run/finished"]
    assert result.events == 3
    early: list[str] = []
    ledger.replay("run-b", until=two_runs["put_b"]["timestamp"], handlers=[lambda e: early.append(e["artifact_name"])])
    assert early == ["b.txt"]
    restored = ledger.replay("run-b", into=tmp_path / "restored")
    assert sorted(Path(p).read_text() for p in restored.restored) == ["b", "c"]


def test_compact_passes_runs_and_options_through(ledger: Ledger, two_runs: dict[str, Any]) -> None:
    """``compact([run])`` compacts that run only; progress is reported; the views still see everything."""
    steps: list[Any] = []
    first = ledger.compact(["run-a"], progress=lambda *args: steps.append(args))
    assert first.streams_compacted == 1 and first.events_written == 2
    assert steps
    second = ledger.compact()
    assert second.streams_compacted == 1 and second.events_written == 3
    assert ledger.query("SELECT count(*) AS n FROM events").column("n").to_pylist() == [5]
    third = ledger.compact(keep_jsonl=False)
    assert "run-a" in third.streams_retired
    assert not ledger.stream_path("run-a").exists()
    assert ledger.query("SELECT count(*) AS n FROM events").column("n").to_pylist() == [5]


def test_sync_without_a_remote_is_a_config_error(ledger: Ledger) -> None:
    """``sync_remote`` with no ``SCALABLE_RUNS_DIR_REMOTE`` says what to set."""
    with pytest.raises(ConfigError, match="SCALABLE_RUNS_DIR_REMOTE"):
        ledger.sync_remote()


def test_read_run_and_rebuild_summaries(ledger: Ledger, two_runs: dict[str, Any]) -> None:
    """``read_run`` gives the run's events in file order; ``rebuild_summaries`` rewrites each run's run.json."""
    events = list(ledger.read_run("run-b").events())
    assert [e.op for e in events] == ["put", "put", "finished"]
    run_json = ledger.stream_path("run-a").parent / "run.json"
    before = json.loads(run_json.read_text())
    run_json.unlink()
    paths = ledger.rebuild_summaries(["run-a"])
    assert run_json in paths
    assert json.loads(run_json.read_text()) == before
    assert {p.parent.name for p in ledger.rebuild_summaries()} == {"run-a", "run-b"}


def test_a_closed_ledger_refuses_every_kind_of_append(tmp_path: Path) -> None:
    """After ``close``, append, append_many, append_async and append_lines all say to open a new ledger."""
    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    led.close()
    assert led.closed
    event = {"event_type": "artifact", "op": "put", "run_id": "run-x"}
    for call in (
        lambda: led.append(event),
        lambda: led.append_many([event]),
        lambda: led.append_async(event),
        lambda: led.append_lines("run-x", [b"{}"]),
    ):
        with pytest.raises(LedgerError, match=r"^this ledger was closed; open a new one with Ledger.open\(\)$"):
            call()
    led.close()  # closing twice is harmless


def test_append_many_names_the_bad_event_and_writes_none(ledger: Ledger) -> None:
    """One bad event in a batch is named by its index and nothing of the batch is written."""
    good = {"event_type": "artifact", "op": "put", "run_id": "run-m"}
    with pytest.raises(EventValidationError, match=r"^event #1: "):
        ledger.append_many([good, {**good, "op": "nope"}])
    assert not ledger.stream_path("run-m").exists()
    assert ledger.append_many([]) == []
    with pytest.raises(EventValidationError, match="append_many takes an iterable of event mappings, not a dict"):
        ledger.append_many(good)  # type: ignore[arg-type]


def test_append_many_keeps_the_order_given_across_runs(ledger: Ledger) -> None:
    """Events of several runs come back in the order given, each in its own stream and chain."""
    batch = [
        {"event_type": "artifact", "op": "put", "run_id": run, "artifact_name": name}
        for run, name in (("run-1", "x"), ("run-2", "y"), ("run-1", "z"))
    ]
    written = ledger.append_many(batch)
    assert [(w["run_id"], w["artifact_name"], w["seq"]) for w in written] == [
        ("run-1", "x", 0),
        ("run-2", "y", 0),
        ("run-1", "z", 1),
    ]
    lines = ledger.stream_path("run-1").read_bytes().splitlines()
    assert [json.loads(line)["artifact_name"] for line in lines] == ["x", "z"]


def test_events_outside_a_run_go_to_one_implicit_run_sealed_at_close(tmp_path: Path) -> None:
    """An event naming no run opens an implicit run (started once, marked implicit) that close() seals."""
    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    first = led.append({"event_type": "artifact", "op": "put"})
    second = led.append({"event_type": "artifact", "op": "put"})
    run = first["run_id"]
    assert second["run_id"] == run == context.implicit_run_id()
    led.close()
    events = [json.loads(line) for line in led.stream_path(run).read_bytes().splitlines()]
    assert [(e["event_type"], e["op"]) for e in events] == [
        ("run", "started"),
        ("artifact", "put"),
        ("artifact", "put"),
        ("run", "finished"),
    ]
    assert json.loads(events[0]["attrs"]) == {"implicit": True, "pid": os.getpid(), "project": "adhoc"}
    assert json.loads(events[-1]["attrs"])["status"] == "completed"


def test_the_default_run_takes_events_that_name_none(ledger: Ledger) -> None:
    """With ``default_run_id`` set, an event naming no run goes there, and ``current_run`` says so."""
    ledger.default_run_id = "run-default"
    assert ledger.current_run() == "run-default"
    assert ledger.append({"event_type": "artifact", "op": "put"})["run_id"] == "run-default"
    ledger.default_run_id = None
    assert ledger.current_run() == context.implicit_run_id()


def test_the_seal_counts_every_event_by_type(ledger: Ledger) -> None:
    """``run/finished`` carries the status, the number of events and their counts by type."""
    for op in ("put", "put", "get"):
        ledger.append({"event_type": "artifact", "op": op, "run_id": "run-s"})
    ledger.append({"event_type": "cache", "op": "miss", "run_id": "run-s"})
    finished = ledger.finish_run("run-s", "failed", attrs={"note": "x"})
    info = json.loads(finished["attrs"])
    assert info["status"] == "failed"
    assert info["note"] == "x"
    assert info["events"] == 4
    assert info["counts"] == {"artifact": 3, "cache": 1}
    assert set(info["seal"]["heads"]) == {ledger.writer_id}
