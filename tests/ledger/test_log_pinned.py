"""The Ledger facade: each reading method passes every option through, and appends keep their promises."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from scalable.errors import ConfigError, EventValidationError, LedgerError, RunSealedError
from scalable.ledger import context
from scalable.ledger.log import Ledger
from tests.ledger.chains import crafted_lines


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


# --- group commit, torn lines and foreign lines ----------------------------------------------


def _lines(ledger: Ledger, run: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ledger.stream_path(run).read_bytes().splitlines()]


def test_queued_events_keep_their_order_time_and_runs_and_reach_subscribers_once(ledger: Ledger) -> None:
    """``append_async`` events land on ``flush`` in the order raised, each in its run, stamped when raised."""
    got: list[str] = []
    ledger.subscribe(lambda e: got.append(e["artifact_name"]))
    before = ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-q", "artifact_name": "sync"})
    for run, name in (("run-q", "a1"), ("run-r", "b1"), ("run-q", "a2")):
        ledger.append_async({"event_type": "artifact", "op": "put", "run_id": run, "artifact_name": name})
    raised = now_after = None
    ledger.flush()
    ledger.flush()  # nothing left: writes nothing more
    q, r = _lines(ledger, "run-q"), _lines(ledger, "run-r")
    assert [e["artifact_name"] for e in q] == ["sync", "a1", "a2"]
    assert [e["artifact_name"] for e in r] == ["b1"]
    assert [e["seq"] for e in q] == [0, 1, 2]
    assert sorted(got) == ["a1", "a2", "b1", "sync"]
    assert q[1]["timestamp"] >= before["timestamp"] and q[1]["event_id"] > before["event_id"]
    assert q[2]["event_id"] > q[1]["event_id"]
    del raised, now_after


def test_a_synchronous_append_writes_queued_events_first(ledger: Ledger) -> None:
    """A queued event raised before a synchronous append is written before it."""
    ledger.append_async({"event_type": "artifact", "op": "put", "run_id": "run-o", "artifact_name": "first"})
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-o", "artifact_name": "second"})
    assert [e["artifact_name"] for e in _lines(ledger, "run-o")] == ["first", "second"]


def test_queued_events_are_written_in_the_background_within_the_interval(ledger: Ledger) -> None:
    """Without any flush, a queued event is in its stream within a few flush intervals."""
    import time

    from scalable.ledger.log import FLUSH_INTERVAL_S

    ledger.append_async({"event_type": "artifact", "op": "put", "run_id": "run-bg", "artifact_name": "x"})
    deadline = time.monotonic() + 50 * FLUSH_INTERVAL_S
    while time.monotonic() < deadline:
        path = ledger.stream_path("run-bg")
        if path.exists() and path.read_bytes().endswith(b"\n"):
            break
        time.sleep(FLUSH_INTERVAL_S / 2)
    assert [e["artifact_name"] for e in _lines(ledger, "run-bg")] == ["x"]


def test_a_torn_line_left_by_a_dead_writer_stays_apart_and_the_run_still_seals(ledger: Ledger) -> None:
    """After a torn last line, the next event starts on a line of its own; the seal of the run still verifies."""
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-t", "artifact_name": "a"})
    path = ledger.stream_path("run-t")
    with path.open("ab") as fh:
        fh.write(b'{"event_id":"torn')
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-t", "artifact_name": "b"})
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-t", "artifact_name": "c"})
    ledger.finish_run("run-t")
    raw = path.read_bytes().splitlines()
    assert raw[1] == b'{"event_id":"torn'
    assert [json.loads(raw[i])["artifact_name"] for i in (0, 2, 3)] == ["a", "b", "c"]
    report = ledger.audit_structure("run-t")
    assert [p.where for p in report.problems] == [f"{path}:2"]


def test_foreign_lines_with_or_without_newlines_land_whole_and_seal(ledger: Ledger) -> None:
    """Lines of another writer, given with or without their newline, land once each; the sealed run audits clean."""
    got: list[int] = []
    ledger.subscribe(lambda e: got.append(e["seq"]))
    lines = crafted_lines("run-f", 3)
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-f"})
    decoded = ledger.append_lines("run-f", [lines[0], lines[1].rstrip(b"\n"), json.loads(lines[2])])
    assert [e["seq"] for e in decoded] == [0, 1, 2] == got[1:]
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-f"})
    ledger.finish_run("run-f")
    stream = ledger.stream_path("run-f").read_bytes()
    assert stream.count(b"\n") == 6 and b"\n\n" not in stream
    assert ledger.audit_structure("run-f").ok
    assert ledger.append_lines("run-f", []) == []


def test_foreign_lines_that_break_the_rules_are_refused_by_index(ledger: Ledger) -> None:
    """A line holding two lines, or breaking its writer's chain, is refused naming its index; nothing is written."""
    one, two = crafted_lines("run-g", 2)
    with pytest.raises(EventValidationError, match=r"^line #0 of run 'run-g' spans several lines$"):
        ledger.append_lines("run-g", [one.rstrip(b"\n").replace(b",", b",\n", 1)])
    with pytest.raises(EventValidationError) as info:
        ledger.append_lines("run-g", [one, one])
    assert str(info.value) == "line #1 breaks the chain of writer 'other:1:aa' (seq 0 after 0)"
    wrong_prev = two.replace(json.loads(two)["prev"].encode(), b"1" * 64)
    with pytest.raises(
        EventValidationError, match=r"^line #1 breaks the chain of writer 'other:1:aa' \(seq 1 after 0\)$"
    ):
        ledger.append_lines("run-g", [one, wrong_prev])
    assert not ledger.stream_path("run-g").exists()


def test_streams_are_created_readable_by_others(ledger: Ledger) -> None:
    """A run's stream is a 0644 file (less the umask), like files other tools write."""
    import stat

    old = os.umask(0o022)
    try:
        ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-mode"})
    finally:
        os.umask(old)
    assert stat.S_IMODE(ledger.stream_path("run-mode").stat().st_mode) == 0o644


def test_open_uses_the_directories_given_and_checks_them_for_readers(tmp_path: Path) -> None:
    """``Ledger.open(runs, ledger)`` uses both directories; ``must_exist`` refuses a place with no ledger."""
    from scalable.errors import LedgerNotFoundError

    led = Ledger.open(tmp_path / "r", tmp_path / "l")
    assert (led.runs_dir, led.ledger_dir) == (tmp_path / "r", tmp_path / "l")
    assert led.closed is False
    led.close()
    with pytest.raises(LedgerNotFoundError):
        Ledger.open(tmp_path / "nothing", tmp_path / "nothing-either", must_exist=True)


def test_a_one_byte_torn_stream_is_ended_before_the_first_write(ledger: Ledger) -> None:
    """A stream holding only one torn byte gets its newline before this writer's first line."""
    path = ledger.stream_path("run-1b")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{")
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-1b", "artifact_name": "a"})
    lines = path.read_bytes().splitlines()
    assert lines[0] == b"{"
    assert json.loads(lines[1])["artifact_name"] == "a"


def test_a_stream_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    """When a file stands where a run's directory goes, appending names the stream it could not create."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "run-x").write_text("a file where the run's directory goes")
    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    try:
        with pytest.raises(LedgerError) as info:
            led.append({"event_type": "artifact", "op": "put", "run_id": "run-x"})
        assert str(info.value).startswith(
            f"cannot create the stream {str(tmp_path / 'runs' / 'run-x' / 'artifacts.jsonl')!r}"
        )
    finally:
        led.close()


def test_a_process_that_never_closes_its_ledger_still_exits_with_its_events_written(tmp_path: Path) -> None:
    """A script that queues events and ends without ``close`` exits at once, its events in the stream."""
    import subprocess
    import sys

    code = (
        "from scalable.ledger.log import Ledger\n"
        f"led = Ledger.open({str(tmp_path / 'runs')!r}, {str(tmp_path / 'ledger')!r})\n"
        "led.append_async({'event_type': 'artifact', 'op': 'put', 'run_id': 'run-exit'})\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=True)
    lines = (tmp_path / "runs" / "run-exit" / "artifacts.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["op"] for line in lines] == ["put"]


# --- durability, the queue's limit, and the background thread ------------------------------


def _fsync_spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the inode of every file fsynced (the real fsync still runs)."""
    synced: list[int] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return synced


def test_batch_mode_fsyncs_about_once_a_second_while_appends_go_on_and_only_what_is_owed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``SCALABLE_LEDGER_FSYNC=batch``: appends do not wait for the disk; the stream is fsynced about once a second."""
    import time

    monkeypatch.setenv("SCALABLE_LEDGER_FSYNC", "batch")
    synced = _fsync_spy(monkeypatch)
    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    try:
        led.append({"event_type": "artifact", "op": "put", "run_id": "run-b"})
        inode = led.stream_path("run-b").stat().st_ino
        assert inode not in synced  # batch: the append itself does not wait for the disk
        end = time.monotonic() + 3.5
        while time.monotonic() < end:
            led.append({"event_type": "artifact", "op": "put", "run_id": "run-b"})
            time.sleep(0.05)
        assert 2 <= synced.count(inode) <= 6, synced
        time.sleep(1.3)  # the last appends are synced too
        synced.clear()
        led.fsync_streams()  # nothing written since: nothing owed
        assert synced == []
        led.append({"event_type": "artifact", "op": "put", "run_id": "run-b"})
        led.fsync_streams()
        assert synced == [inode]
    finally:
        led.close()


def test_never_mode_does_not_fsync_even_at_the_seal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``SCALABLE_LEDGER_FSYNC=never``: appends, the seal and close leave syncing to the OS."""
    monkeypatch.setenv("SCALABLE_LEDGER_FSYNC", "never")
    synced = _fsync_spy(monkeypatch)
    import time

    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    led.append({"event_type": "artifact", "op": "put", "run_id": "run-n"})
    led.append_async({"event_type": "artifact", "op": "get", "run_id": "run-n"})
    time.sleep(1.3)  # the background thread ran past its once-a-second fsync
    led.finish_run("run-n")
    led.close()
    assert led.stream_path("run-n").stat().st_ino not in synced


def test_a_seal_that_cannot_reach_the_disk_is_a_ledger_error_naming_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the fsync of the seal fails (EIO), ``finish_run`` raises a LedgerError naming the stream."""
    import errno

    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    try:
        led.append({"event_type": "artifact", "op": "put", "run_id": "run-io"})

        def failing(fd: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "fsync", failing)
        with pytest.raises(LedgerError) as info:
            led.finish_run("run-io")
        assert str(info.value) == f"cannot sync the stream {str(led.stream_path('run-io'))!r}: Input/output error"
        assert type(info.value) is LedgerError
        monkeypatch.undo()
    finally:
        led.close()


def test_the_background_writer_is_a_named_daemon_thread(ledger: Ledger) -> None:
    """Queued events start one daemon thread, ``scalable-ledger-fsync``, which a thread dump shows by name."""
    import threading

    ledger.append_async({"event_type": "artifact", "op": "put", "run_id": "run-th"})
    named = [t for t in threading.enumerate() if t.name == "scalable-ledger-fsync"]
    assert named and all(t.daemon for t in named)


def test_a_full_queue_is_written_by_the_call_that_fills_it(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``PENDING_LIMIT``-th queued event writes the whole queue before ``append_async`` returns."""
    from scalable.ledger import log
    from scalable.ledger.log import PENDING_LIMIT

    monkeypatch.setattr(log, "FLUSH_INTERVAL_S", 30.0)  # no background write while the queue fills
    for i in range(PENDING_LIMIT):
        ledger.append_async({"event_type": "artifact", "op": "put", "run_id": "run-full", "key": str(i)})
    lines = ledger.stream_path("run-full").read_bytes().splitlines()
    assert len(lines) == PENDING_LIMIT
    assert [json.loads(line)["key"] for line in lines] == [str(i) for i in range(PENDING_LIMIT)]


# --- foreign lines kept byte for byte ---------------------------------------------------------


def test_foreign_lines_are_kept_byte_for_byte_trailing_blanks_included(ledger: Ledger) -> None:
    """A foreign line ending in blanks is stored as its writer wrote it, so that writer's chain still holds."""
    import hashlib

    first, second = crafted_lines("run-ws", 2)
    first = first.rstrip(b"\n") + b" \t"
    second = second.replace(json.loads(second)["prev"].encode(), hashlib.sha256(first).hexdigest().encode())
    ledger.append_lines("run-ws", [first + b"\n", second])
    assert ledger.stream_path("run-ws").read_bytes() == first + b"\n" + second
    ledger.finish_run("run-ws")
    assert ledger.audit_structure("run-ws").ok


def test_a_long_batch_of_foreign_lines_then_one_more_seals_the_newest_head(ledger: Ledger) -> None:
    """After a batch of more foreign lines than a line has bytes, the next line of that writer is its sealed head."""
    lines = crafted_lines("run-long", 401)
    assert len(lines) - 1 > len(lines[-2])
    ledger.append_lines("run-long", lines[:-1])
    ledger.append_lines("run-long", lines[-1:])
    info = json.loads(ledger.finish_run("run-long")["attrs"])
    assert info["seal"]["heads"]["other:1:aa"]["seq"] == 400
    assert info["counts"] == {"artifact": 401, "run": 1} or info["counts"] == {"artifact": 401}
    assert ledger.audit_structure("run-long").ok


# --- append_many takes the context as append does -------------------------------------------


def test_append_many_fills_run_task_and_component_from_the_context(ledger: Ledger) -> None:
    """Events of ``append_many`` naming nothing get the bound run, task, component and task id (in attrs), else the default run."""
    with context.bind(run_id="run-ctx", task_name="prep", component="worker", task_id="t-1"):
        (bound,) = ledger.append_many([{"event_type": "artifact", "op": "put"}])
    assert (bound["run_id"], bound["task_name"], bound["component"]) == ("run-ctx", "prep", "worker")
    assert json.loads(bound["attrs"]) == {"task_id": "t-1"}
    with context.bind(run_id="run-ctx", task_name="prep", component="worker", task_id="t-1"):
        one = ledger.append({"event_type": "artifact", "op": "get"})
        ledger.append_async({"event_type": "artifact", "op": "used"})
    ledger.flush()
    for event in (one, _lines(ledger, "run-ctx")[-1]):
        assert (event["task_name"], event["component"], json.loads(event["attrs"])) == (
            "prep",
            "worker",
            {"task_id": "t-1"},
        )
    ledger.default_run_id = "run-default"
    (default,) = ledger.append_many(iter([{"event_type": "artifact", "op": "put"}]))
    assert default["run_id"] == "run-default"


def test_append_many_outside_a_run_starts_the_implicit_run_once(tmp_path: Path) -> None:
    """Batches naming no run go to the implicit run, started once before them and sealed at close."""
    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    got: list[str] = []
    led.subscribe(lambda e: got.append(f"{e['event_type']}/{e['op']}"), ["artifact"])
    first = led.append_many([{"event_type": "artifact", "op": "put"}])
    led.append_many([{"event_type": "artifact", "op": "get"}])
    run = first[0]["run_id"]
    assert run == context.implicit_run_id()
    led.close()
    events = [json.loads(line) for line in led.stream_path(run).read_bytes().splitlines()]
    assert [(e["event_type"], e["op"]) for e in events] == [
        ("run", "started"),
        ("artifact", "put"),
        ("artifact", "get"),
        ("run", "finished"),
    ]
    assert got == ["artifact/put", "artifact/get"]


def test_append_many_writes_queued_events_first_and_reaches_subscribers(ledger: Ledger) -> None:
    """A batch after a queued event lands after it; subscribers see each batch event once."""
    got: list[str] = []
    ledger.subscribe(lambda e: got.append(e["artifact_name"]))
    ledger.append_async({"event_type": "artifact", "op": "put", "run_id": "run-mq", "artifact_name": "queued"})
    ledger.append_many(
        [{"event_type": "artifact", "op": "put", "run_id": "run-mq", "artifact_name": n} for n in ("m1", "m2")]
    )
    assert [e["artifact_name"] for e in _lines(ledger, "run-mq")] == ["queued", "m1", "m2"]
    assert got == ["queued", "m1", "m2"]


# --- sealing ----------------------------------------------------------------------------------


def test_finishing_an_implicit_run_by_hand_leaves_close_nothing_to_seal(tmp_path: Path) -> None:
    """``finish_run`` of the implicit run by hand: ``close`` adds no second ``run/finished``; the default status is completed."""
    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    run = led.append({"event_type": "artifact", "op": "put"})["run_id"]
    led.finish_run(run)
    led.close()
    events = [json.loads(line) for line in led.stream_path(run).read_bytes().splitlines()]
    assert [e["op"] for e in events] == ["started", "put", "finished"]
    assert json.loads(events[-1]["attrs"])["status"] == "completed"


def test_a_sealed_run_takes_no_more_events_from_any_append_and_keeps_its_bytes(ledger: Ledger) -> None:
    """After finish_run every append path is refused with RunSealedError naming the run; the stream is unchanged."""
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-late"})
    ledger.finish_run("run-late")
    path = ledger.stream_path("run-late")
    before = path.read_bytes()
    late = {"event_type": "artifact", "op": "get", "run_id": "run-late"}
    attempts = {
        "append": lambda: ledger.append(late),
        "append_many": lambda: ledger.append_many([late, {**late, "run_id": "run-other"}]),
        "append_async": lambda: ledger.append_async(late),
        "append_lines": lambda: ledger.append_lines("run-late", crafted_lines("run-late", 1)),
        "finish_run": lambda: ledger.finish_run("run-late", "failed"),
    }
    for name, attempt in attempts.items():
        with pytest.raises(RunSealedError, match=r"run 'run-late' is sealed .*record new events in a new run"):
            attempt()
        assert path.read_bytes() == before, name
    ledger.flush()
    assert path.read_bytes() == before
    assert not ledger.stream_path("run-other").exists()  # the batch wrote nothing, not even its other run
    assert ledger.audit_structure("run-late").ok


def test_a_seal_another_process_wrote_is_found_under_the_lock(ledger: Ledger, tmp_path: Path) -> None:
    """A run sealed by another writer refuses this ledger's next event; retirements and verdicts still follow a seal."""
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-x"})
    with Ledger.open(ledger.runs_dir, ledger.ledger_dir) as other:
        other.append({"event_type": "artifact", "op": "get", "run_id": "run-x"})
        other.finish_run("run-x")
    verdict = {"event_type": "run", "op": "verified", "run_id": "run-x", "attrs": {"verdict": "identical"}}
    ledger.append(verdict)  # after the seal on purpose: the audit accepts it there
    with Ledger.open(ledger.runs_dir, ledger.ledger_dir) as third:
        third.append({"event_type": "run", "op": "retired", "run_id": "run-x"})
    before = ledger.stream_path("run-x").read_bytes()
    with pytest.raises(RunSealedError, match="run 'run-x' is sealed"):
        ledger.append({"event_type": "artifact", "op": "get", "run_id": "run-x"})
    with pytest.raises(RunSealedError):  # a fresh ledger finds the seal behind the verdict and the retirement
        Ledger.open(ledger.runs_dir, ledger.ledger_dir).append({"event_type": "cache", "op": "hit", "run_id": "run-x"})
    assert ledger.stream_path("run-x").read_bytes() == before
    assert [e["op"] for e in _lines(ledger, "run-x")] == ["put", "get", "finished", "verified", "retired"]
    assert ledger.audit_structure("run-x").ok


def test_a_stream_ending_in_other_lines_or_garbage_is_not_taken_as_sealed(ledger: Ledger) -> None:
    """Only a run/finished line (with nothing but retirements and verdicts after it) seals a stream."""
    path = ledger.stream_path("run-open")
    path.parent.mkdir(parents=True)
    sealed_then_late = crafted_lines("run-open", 1)[0].replace(b'"artifact"', b'"run"').replace(b'"put"', b'"finished"')
    tails = {
        "a put": crafted_lines("run-open", 1)[0],
        "a run start": crafted_lines("run-open", 1)[0].replace(b'"artifact"', b'"run"').replace(b'"put"', b'"started"'),
        "a seal then a put": sealed_then_late + crafted_lines("run-open", 1, writer="w9:9:99")[0],
        "not json": b"{not json\n",
        "a list": b"[1, 2]\n",
        "an op of the wrong type": b'{"event_type": "run", "op": ["finished"]}\n',
    }
    for name, tail in tails.items():
        path.write_bytes(tail)
        with Ledger.open(ledger.runs_dir, ledger.ledger_dir) as fresh:
            fresh.append({"event_type": "artifact", "op": "get", "run_id": "run-open"})
        assert path.read_bytes().startswith(tail) and path.stat().st_size > len(tail), name
    path.write_bytes(sealed_then_late)
    with pytest.raises(RunSealedError), Ledger.open(ledger.runs_dir, ledger.ledger_dir) as fresh:
        fresh.append({"event_type": "artifact", "op": "get", "run_id": "run-open"})


def test_one_runs_refused_flush_still_writes_the_other_runs_queued_events(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued event for a run another writer sealed is refused at flush; the events queued for other runs are written."""
    from scalable.ledger import log

    monkeypatch.setattr(log, "FLUSH_INTERVAL_S", 30.0)  # only the explicit flush writes the queue
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-s"})
    with Ledger.open(ledger.runs_dir, ledger.ledger_dir) as other:
        other.finish_run("run-s")
    ledger.append_async({"event_type": "cache", "op": "hit", "run_id": "run-s"})  # the seal is not known here yet
    ledger.append_async({"event_type": "cache", "op": "hit", "run_id": "run-s"})
    ledger.append_async({"event_type": "cache", "op": "miss", "run_id": "run-t"})
    with pytest.raises(LedgerError, match=r"not written \(2 of run 'run-s'\): run 'run-s' is sealed") as caught:
        ledger.flush()
    assert isinstance(caught.value.__cause__, RunSealedError)
    assert [e["op"] for e in _lines(ledger, "run-t")] == ["miss"]
    assert [e["op"] for e in _lines(ledger, "run-s")] == ["put", "finished"]
    ledger.flush()  # raised once; nothing is left queued


def test_events_the_background_could_not_write_are_raised_by_the_owners_next_flush(ledger: Ledger) -> None:
    """A background flush's lost batch is not silent: reads, appends and seals go on, the next flush raises it."""
    import time

    from scalable.ledger.log import FLUSH_INTERVAL_S

    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-s"})
    with Ledger.open(ledger.runs_dir, ledger.ledger_dir) as other:
        other.finish_run("run-s")
    ledger.append_async({"event_type": "cache", "op": "hit", "run_id": "run-s"})
    ledger.append_async({"event_type": "cache", "op": "miss", "run_id": "run-t"})
    deadline = time.monotonic() + 50 * FLUSH_INTERVAL_S
    path = ledger.stream_path("run-t")
    while not (path.exists() and path.read_bytes().endswith(b"\n")) and time.monotonic() < deadline:
        time.sleep(FLUSH_INTERVAL_S / 2)  # the background thread writes run-t's batch after failing run-s's
    assert ledger.query("SELECT count(*) FROM events WHERE run_id = 'run-t'").column(0).to_pylist() == [1]
    ledger.append({"event_type": "artifact", "op": "get", "run_id": "run-t"})
    ledger.finish_run("run-t")
    with pytest.raises(LedgerError, match=r"not written \(1 of run 'run-s'\)"):
        ledger.flush()
    ledger.flush()
    assert [e["op"] for e in _lines(ledger, "run-s")] == ["put", "finished"]
    assert ledger.audit_structure().ok


def test_close_closes_every_stream_and_then_raises_lost_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """close() never stops half-way: it closes the ledger, then raises the batches it could not write."""
    from scalable.ledger import log

    monkeypatch.setattr(log, "FLUSH_INTERVAL_S", 30.0)
    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    led.append({"event_type": "artifact", "op": "put", "run_id": "run-s"})
    with Ledger.open(tmp_path / "runs", tmp_path / "ledger") as other:
        other.finish_run("run-s")
    led.append_async({"event_type": "cache", "op": "hit", "run_id": "run-s"})
    with pytest.raises(LedgerError, match=r"1 of run 'run-s'"):
        led.close()
    assert led.closed
    led.close()  # once
    with pytest.raises(LedgerError, match="this ledger was closed"):
        led.append({"event_type": "artifact", "op": "put", "run_id": "run-u"})


def test_a_keyed_ledger_signs_its_seals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``SCALABLE_LEDGER_KEY`` the seal carries an HMAC that verifies under that key, and not under another."""
    monkeypatch.setenv("SCALABLE_LEDGER_KEY", "k3y")
    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    led.append({"event_type": "artifact", "op": "put", "run_id": "run-k"})
    seal = json.loads(led.finish_run("run-k")["attrs"])["seal"]
    led.close()
    assert len(seal["hmac"]) == 64 and seal["hmac"] != "0" * 64
    assert Ledger.open(tmp_path / "runs", tmp_path / "ledger").audit_structure("run-k").ok
    monkeypatch.setenv("SCALABLE_LEDGER_KEY", "other")
    report = Ledger.open(tmp_path / "runs", tmp_path / "ledger").audit_structure("run-k")
    assert [p.kind for p in report.problems] == ["seal-forged"]


# --- more options passed through ---------------------------------------------------------------


def test_audit_structure_and_rebuild_summaries_keep_to_the_run_named(ledger: Ledger, two_runs: dict[str, Any]) -> None:
    """``audit_structure(run)`` reads that run only; ``rebuild_summaries([run])`` rewrites that run only."""
    assert ledger.audit_structure("run-a").runs == 1
    assert {p.parent.name for p in ledger.rebuild_summaries(["run-a"])} == {"run-a"}


def test_subscribe_with_event_types_sees_only_those(ledger: Ledger) -> None:
    """A subscriber for ``run`` events sees the seal and not the artifacts."""
    got: list[str] = []
    ledger.subscribe(lambda e: got.append(e["op"]), ["run"])
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-sub"})
    ledger.finish_run("run-sub")
    assert got == ["finished"]


def test_lineage_passes_relations_runs_only_and_max_nodes_through(ledger: Ledger, two_runs: dict[str, Any]) -> None:
    """``lineage`` keeps to the relations named, gives the run-level graph, and cuts at ``max_nodes``."""
    a = two_runs["put_a"]["digest"]
    full = ledger.lineage(a, direction="down")
    assert len(full.nodes) > 2
    cut = ledger.lineage(a, direction="down", max_nodes=2)
    assert cut.elided["nodes"] >= 1 and len(cut.nodes) < len(full.nodes)
    assert not full.elided or not full.elided.get("nodes")
    runs = ledger.lineage(a, direction="down", runs_only=True)
    assert set(runs.nodes) == {"run-a", "run-b"}
    with pytest.raises(ConfigError):
        ledger.lineage(a, relations=["no-such-relation"])


def test_diff_gives_the_lineage_verdict_only_when_asked(ledger: Ledger, two_runs: dict[str, Any]) -> None:
    """``diff(a, b)`` has no lineage verdict; ``diff(a, b, lineage=True)`` has one."""
    assert ledger.diff("run-a", "run-b").lineage is None
    assert ledger.diff("run-a", "run-b", lineage=True).lineage is not None


def test_query_batches_passes_the_time_and_batch_size_through(ledger: Ledger, two_runs: dict[str, Any]) -> None:
    """``query_batches`` streams the rows in batches of the size asked, as of the time given."""
    reader = ledger.query_batches("SELECT * FROM artifacts ORDER BY timestamp", batch_rows=1)
    sizes = [batch.num_rows for batch in reader]
    assert sizes == [1, 1, 1]
    early = ledger.query_batches("SELECT count(*) AS n FROM artifacts", as_of=two_runs["put_a"]["timestamp"])
    assert early.read_all().column("n").to_pylist() == [1]


def test_recover_on_a_sound_ledger_changes_nothing(ledger: Ledger, two_runs: dict[str, Any]) -> None:
    """``recover`` after a compaction keeps every event visible."""
    ledger.compact()
    ledger.recover()
    assert ledger.query("SELECT count(*) AS n FROM events").column("n").to_pylist() == [5]


def test_compact_passes_retire_before_through(ledger: Ledger, two_runs: dict[str, Any]) -> None:
    """``compact(retire_before=t)`` removes the compacted events older than ``t``."""
    ledger.compact(retire_before=two_runs["put_b"]["timestamp"])
    n = ledger.query("SELECT count(*) AS n FROM events").column("n").to_pylist()[0]
    assert 0 < n < 5


def test_audit_and_replay_pass_storage_options_through(
    ledger: Ledger, s3_bucket: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    """Artifacts on S3 are re-hashed and restored with the storage options given for ``s3``."""
    import hashlib

    import fsspec

    bucket, options = s3_bucket
    fs = fsspec.filesystem("s3", **options, skip_instance_cache=True)
    fs.pipe(f"{bucket}/x.txt", b"remote")
    ledger.append(
        {
            "event_type": "artifact",
            "op": "put",
            "run_id": "run-s3",
            "location": f"s3://{bucket}/x.txt",
            "artifact_name": "x.txt",
            "digest": hashlib.sha256(b"remote").hexdigest(),
            "size_bytes": 6,
            "key": "x.txt",
        }
    )
    report = ledger.audit("run-s3", storage_options={"s3": options})
    assert report.ok and report.artifacts == 1
    restored = ledger.replay("run-s3", into=tmp_path / "out", storage_options={"s3": options})
    assert [Path(p).read_bytes() for p in restored.restored] == [b"remote"]
    nowhere = {
        **options,
        "endpoint_url": "http://127.0.0.1:9",
        "retries": 1,
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
        "skip_instance_cache": True,
    }
    assert not ledger.audit("run-s3", storage_options={"s3": nowhere}).ok
    with pytest.raises(Exception):  # the store that cannot be reached: whichever error of the tree says so
        ledger.replay("run-s3", into=tmp_path / "out2", storage_options={"s3": nowhere})
    assert not (tmp_path / "out2" / "x.txt").exists()


def test_a_foreign_line_with_bytes_after_its_object_is_refused(ledger: Ledger) -> None:
    """Bytes after the JSON object of a foreign line make it undecodable: refused by index, nothing written."""
    (line,) = crafted_lines("run-tail", 1)
    for junk in (b"XX", b"X\n", b"}"):
        with pytest.raises(EventValidationError, match=r"^line #0 of run 'run-tail' does not decode: "):
            ledger.append_lines("run-tail", [line.rstrip(b"\n") + junk])
    assert not ledger.stream_path("run-tail").exists()


# --- what the ledger logs ---------------------------------------------------------------------


def test_a_recovered_torn_line_is_logged_with_stream_and_offset(ledger: Ledger) -> None:
    """Ending a dead writer's torn line logs a warning naming the stream and the offset of the fragment's end."""
    from structlog.testing import capture_logs

    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-tl"})
    path = ledger.stream_path("run-tl")
    with path.open("ab") as fh:
        fh.write(b'{"torn')
    size = path.stat().st_size
    with capture_logs() as logs:
        ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-tl"})
    assert {"event": "ledger.torn_line_recovered", "stream": str(path), "offset": size, "log_level": "warning"} in logs


def test_a_failed_background_write_is_logged_and_the_thread_goes_on(tmp_path: Path) -> None:
    """A queued event that cannot be written in the background is logged as an error; later events still land."""
    import time

    from structlog.testing import capture_logs

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "run-blocked").write_text("a file where the run's directory goes")
    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    try:
        with capture_logs() as logs:
            led.append_async({"event_type": "artifact", "op": "put", "run_id": "run-blocked"})
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(e["event"] == "ledger.queued_events_lost" for e in logs):
                time.sleep(0.05)
        (entry,) = [e for e in logs if e["event"] == "ledger.queued_events_lost"]
        assert entry["log_level"] == "error" and entry["run_id"] == "run-blocked" and entry["events"] == 1
        assert "cannot create the stream" in entry["error"]
        led.append_async({"event_type": "artifact", "op": "put", "run_id": "run-ok"})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (led.stream_path("run-ok").exists() and _lines(led, "run-ok")):
            time.sleep(0.05)
        assert [e["op"] for e in _lines(led, "run-ok")] == ["put"]
    finally:
        with pytest.raises(LedgerError, match=r"not written \(1 of run 'run-blocked'\): cannot create the stream"):
            led.close()


def test_an_append_past_the_file_size_limit_takes_its_bytes_back_and_names_the_stream(tmp_path: Path) -> None:
    """A write cut short by the file size limit (EFBIG) leaves the stream as it was and is a DiskFullError naming it."""
    import resource
    import signal

    from scalable.errors import DiskFullError

    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    try:
        led.append({"event_type": "artifact", "op": "put", "run_id": "run-big"})
        path = led.stream_path("run-big")
        with path.open("ab") as other:  # another process appends, so the failing write first notes its bytes
            other.write(crafted_lines("run-big", 1)[0])
        before = path.read_bytes()
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 100, hard))
        try:
            with pytest.raises(DiskFullError) as info:
                led.append({"event_type": "artifact", "op": "put", "run_id": "run-big", "attrs": {"blob": "x" * 4000}})
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, handler)
        assert str(info.value).startswith(f"cannot append to the stream {str(path)!r}: ")
        assert path.read_bytes() == before  # the part that reached the file was taken back
        led.append({"event_type": "artifact", "op": "get", "run_id": "run-big"})
        assert [e["op"] for e in _lines(led, "run-big")] == ["put", "put", "get"]
        assert [e["seq"] for e in _lines(led, "run-big")] == [0, 0, 1]
        led.finish_run("run-big")
        assert led.audit_structure("run-big").ok
    finally:
        led.close()


def test_sync_remote_ships_each_stream_once_to_the_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``SCALABLE_RUNS_DIR_REMOTE`` set, ``sync_remote`` ships the new lines of each stream, then nothing."""
    remote = tmp_path / "remote"
    monkeypatch.setenv("SCALABLE_RUNS_DIR_REMOTE", f"file://{remote}")
    led = Ledger.open()
    try:
        for run in ("run-r1", "run-r2"):
            led.append({"event_type": "artifact", "op": "put", "run_id": run})
        assert led.sync_remote().segments == 2
        assert led.sync_remote().segments == 0
        assert len(list((remote / "segments").rglob("*.jsonl"))) == 2
    finally:
        led.close()


def test_query_batches_are_of_65536_rows_by_default(ledger: Ledger) -> None:
    """Without ``batch_rows``, a result comes in batches of 65,536 rows."""
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-rows"})
    reader = ledger.query_batches("SELECT * FROM range(70000) t(i)")
    assert [b.num_rows for b in reader] == [65536, 70000 - 65536]


def test_close_closes_every_stream_even_when_the_last_fsync_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing fsync at ``close`` (EIO) does not stop it: every stream is closed and the ledger is closed."""
    import errno

    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    for run in ("run-c1", "run-c2"):
        led.append({"event_type": "artifact", "op": "put", "run_id": run})
    before = len(os.listdir("/proc/self/fd"))

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)
    led.close()
    assert led.closed
    assert len(os.listdir("/proc/self/fd")) == before - 2


def test_an_append_whose_write_fails_is_a_ledger_error_and_leaves_the_stream_whole(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write failing with EIO is a LedgerError naming the stream; the stream keeps only whole lines."""
    import errno

    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-eio"})
    path = ledger.stream_path("run-eio")
    before = path.read_bytes()

    def failing(fd: int, data: Any) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "write", failing)
    with pytest.raises(LedgerError) as info:
        ledger.append({"event_type": "artifact", "op": "get", "run_id": "run-eio"})
    monkeypatch.undo()
    assert type(info.value) is LedgerError
    assert str(info.value) == f"cannot append to the stream {str(path)!r}: Input/output error"
    assert path.read_bytes() == before


def test_a_batch_after_a_single_event_is_sealed_with_its_last_line_as_head_and_every_event_counted(
    ledger: Ledger,
) -> None:
    """One event, then batches of two and three: the seal's head is the last line and the counts are whole."""
    ledger.append({"event_type": "run", "op": "started", "run_id": "run-hd"})
    ledger.append_many([{"event_type": "artifact", "op": "put", "run_id": "run-hd"}] * 2)
    ledger.append_many(
        [{"event_type": "cache", "op": "hit", "run_id": "run-hd"}] * 2
        + [{"event_type": "artifact", "op": "get", "run_id": "run-hd"}]
    )
    info = json.loads(ledger.finish_run("run-hd")["attrs"])
    assert info["seal"]["heads"][ledger.writer_id]["seq"] == 5
    assert info["counts"] == {"run": 1, "artifact": 3, "cache": 2}
    assert list(info["counts"]) == ["run", "artifact", "cache"]
    assert ledger.audit_structure("run-hd").ok


def test_after_a_torn_line_the_seal_lists_writers_and_types_in_stream_order(ledger: Ledger) -> None:
    """Two other writers, a torn fragment, then this ledger's line: the seal keeps the order the stream has."""
    path = ledger.stream_path("run-order")
    path.parent.mkdir(parents=True)
    first = (
        crafted_lines("run-order", 1, writer="w1:1:aa")[0]
        .replace(b'"artifact"', b'"run"')
        .replace(b'"put"', b'"started"')
    )
    second = (
        crafted_lines("run-order", 1, writer="w2:2:bb")[0]
        .replace(b'"artifact"', b'"cache"')
        .replace(b'"put"', b'"hit"')
    )
    path.write_bytes(first + second + b'{"torn')
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-order"})
    info = json.loads(ledger.finish_run("run-order")["attrs"])
    assert list(info["counts"]) == ["run", "cache", "artifact"]
    assert list(info["seal"]["heads"]) == ["w1:1:aa", "w2:2:bb", ledger.writer_id]


def test_threads_appending_to_a_new_run_at_once_share_one_chain(ledger: Ledger) -> None:
    """Threads that all start a run's stream at the same moment write one gapless chain."""
    import threading

    barrier = threading.Barrier(8)

    def append() -> None:
        barrier.wait()
        ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-race"})

    threads = [threading.Thread(target=append) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e["seq"] for e in _lines(ledger, "run-race")) == list(range(8))
    ledger.finish_run("run-race")
    assert ledger.audit_structure("run-race").ok


def test_an_event_id_carries_the_millisecond_of_its_timestamp(ledger: Ledger) -> None:
    """A UUIDv7 event id's time field is the millisecond of the event's timestamp."""
    import time
    from datetime import datetime

    for _ in range(5):
        event = ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-ids"})
        ms = int(event["event_id"].replace("-", "")[:12], 16)
        stamp = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        assert ms == int(stamp.timestamp() * 1000) or ms == round(stamp.timestamp() * 1000)
        time.sleep(0.003)


def test_an_implicit_run_that_cannot_be_sealed_at_close_is_logged(tmp_path: Path) -> None:
    """When the implicit run's directory is gone at close, close logs a warning naming the run and goes on."""
    import shutil

    from structlog.testing import capture_logs

    led = Ledger.open(tmp_path / "runs", tmp_path / "ledger")
    run = led.append({"event_type": "artifact", "op": "put"})["run_id"]
    shutil.rmtree(tmp_path / "runs")
    with capture_logs() as logs:
        led.close()
    assert led.closed
    (entry,) = [e for e in logs if e["event"] == "ledger.implicit_run_not_sealed"]
    assert entry["run_id"] == run and entry["log_level"] == "warning" and str(tmp_path / "runs") in entry["error"]


def test_the_seal_counts_lines_others_wrote_past_a_blank_line_and_keeps_their_order(ledger: Ledger) -> None:
    """Another process's lines, a blank line among them, then many more: each is counted, writers in stream order."""
    path = ledger.stream_path("run-gap")
    path.parent.mkdir(parents=True)
    many = crafted_lines("run-gap", 300, writer="w1:1:aa")
    last = crafted_lines("run-gap", 1, writer="w2:2:bb")[0]
    with path.open("ab") as other:
        other.write(many[0] + b"\n" + b"".join(many[1:]) + last)
    ledger.append({"event_type": "artifact", "op": "get", "run_id": "run-gap"})
    info = json.loads(ledger.finish_run("run-gap")["attrs"])
    assert info["events"] == 302
    assert info["counts"] == {"artifact": 302}
    assert list(info["seal"]["heads"]) == ["w1:1:aa", "w2:2:bb", ledger.writer_id]
    assert info["seal"]["heads"]["w1:1:aa"]["seq"] == 299


def test_a_seal_verifies_when_the_run_attrs_hold_a_field_named_like_the_seal_digests(ledger: Ledger) -> None:
    """Run attrs ``line`` and ``hmac`` of 64 zeros stay as given; the seal's own digests are filled in and verify."""
    from scalable.ledger.events import GENESIS

    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-lk"})
    info = json.loads(ledger.finish_run("run-lk", attrs={"line": GENESIS, "hmac": GENESIS})["attrs"])
    assert info["line"] == GENESIS and info["hmac"] == GENESIS
    assert info["seal"]["line"] != GENESIS
    assert ledger.audit_structure("run-lk").ok


def test_a_forked_child_writes_its_own_chain_and_leaves_the_parents_queue_to_the_parent(ledger: Ledger) -> None:
    """After fork, the child appends as a new writer from seq 0, queues and seals its own events, and never
    writes what the parent had queued; the parent's chain goes on; the run audits clean."""
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-fork", "artifact_name": "parent-1"})
    ledger.append_async({"event_type": "artifact", "op": "put", "run_id": "run-fork", "artifact_name": "parent-queued"})
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-fork", "artifact_name": "child-1"})
            ledger.append_async(
                {"event_type": "artifact", "op": "put", "run_id": "run-fork", "artifact_name": "child-2"}
            )
            ledger.append({"event_type": "artifact", "op": "put", "artifact_name": "child-implicit"})
            ledger.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-fork", "artifact_name": "parent-2"})
    lines = _lines(ledger, "run-fork")
    names = [e["artifact_name"] for e in lines]
    assert names.count("parent-queued") == 1
    assert sorted(names) == sorted(["parent-1", "parent-queued", "child-1", "child-2", "parent-2"])
    child = [e for e in lines if e["artifact_name"].startswith("child")]
    parent = [e for e in lines if e["artifact_name"].startswith("parent")]
    assert {e["writer"] for e in child} != {ledger.writer_id} and len({e["writer"] for e in child}) == 1
    assert [e["seq"] for e in child] == [0, 1]
    assert {e["writer"] for e in parent} == {ledger.writer_id} and [e["seq"] for e in parent] == [0, 1, 2]
    ledger.finish_run("run-fork")
    assert ledger.audit_structure("run-fork").ok


def test_once_the_implicit_run_is_sealed_later_events_start_a_new_one(tmp_path: Path) -> None:
    """Ledgers opened one after another in a process each seal an implicit run; none writes past another's seal."""
    from structlog.testing import capture_logs

    dirs = (tmp_path / "runs", tmp_path / "ledger")
    first, second = Ledger.open(*dirs), Ledger.open(*dirs)
    shared = first.append({"event_type": "artifact", "op": "put"})["run_id"]
    assert second.append({"event_type": "artifact", "op": "get"})["run_id"] == shared
    first.close()  # seals the shared implicit run
    moved = second.append({"event_type": "cache", "op": "hit"})["run_id"]
    with capture_logs() as logs:
        second.close()
    assert moved != shared and logs == []
    with Ledger.open(*dirs) as third:
        last = third.append({"event_type": "cache", "op": "miss"})["run_id"]
    assert last not in (shared, moved)
    reader = Ledger.open(*dirs)
    assert [e["op"] for e in _lines(reader, shared)] == ["started", "put", "started", "get", "finished"]  # each ledger
    assert [e["op"] for e in _lines(reader, moved)] == ["started", "hit", "finished"]
    assert [e["op"] for e in _lines(reader, last)] == ["started", "miss", "finished"]
    assert reader.audit_structure().ok


def test_appends_and_a_full_queue_leave_lost_batches_to_the_next_flush_and_write_their_own(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch lost while an append or a full queue writes the queue is kept, not raised there; flush raises them all."""
    from scalable.ledger import log

    monkeypatch.setattr(log, "FLUSH_INTERVAL_S", 30.0)  # only the calls below write the queue
    monkeypatch.setattr(log, "PENDING_LIMIT", 2)
    sealed = ("run-s", "run-q", "run-r")
    for run in sealed:
        ledger.append({"event_type": "artifact", "op": "put", "run_id": run})
    with Ledger.open(ledger.runs_dir, ledger.ledger_dir) as other:
        for run in sealed:
            other.finish_run(run)
    ledger.append_async({"event_type": "cache", "op": "hit", "run_id": "run-s"})  # the seal is not known here yet
    ledger.append_many([{"event_type": "cache", "op": "miss", "run_id": "run-t"}])  # writes the queue first
    ledger.append_async({"event_type": "cache", "op": "hit", "run_id": "run-q"})
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-t"})  # so does a single append
    ledger.append_async({"event_type": "cache", "op": "hit", "run_id": "run-r"})
    ledger.append_async({"event_type": "artifact", "op": "get", "run_id": "run-t"})  # the queue is full: written
    ledger.finish_run("run-t")
    assert [e["op"] for e in _lines(ledger, "run-t")] == ["miss", "put", "get", "finished"]
    lost = r"not written \(1 of run 'run-s', 1 of run 'run-q', 1 of run 'run-r'\): run 'run-s' is sealed"
    with pytest.raises(LedgerError, match=lost):
        ledger.flush()
    ledger.flush()
    for run in sealed:
        assert [e["op"] for e in _lines(ledger, run)] == ["put", "finished"]


def test_events_that_name_their_own_runs_start_no_implicit_run(ledger: Ledger) -> None:
    """Outside any run, a batch whose events each name a run writes only those runs: no implicit run is started."""
    ledger.append_many([{"event_type": "artifact", "op": "put", "run_id": "run-own"}])
    implicit = context.implicit_run_id()
    assert not ledger.stream_path(implicit).exists()
    ledger.close()
    assert not ledger.stream_path(implicit).exists()  # nor sealed at close
    assert [e["op"] for e in _lines(ledger, "run-own")] == ["put"]


def test_lines_another_writer_adds_after_this_ledgers_last_write_are_sealed(ledger: Ledger) -> None:
    """Another process appends after this ledger's last line and before its seal: the seal counts and heads them."""
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-after"})
    with ledger.stream_path("run-after").open("ab") as other:
        other.write(b"".join(crafted_lines("run-after", 2)))
    info = json.loads(ledger.finish_run("run-after")["attrs"])
    assert info["events"] == 3 and info["counts"] == {"artifact": 3}
    assert list(info["seal"]["heads"]) == [ledger.writer_id, "other:1:aa"]
    assert info["seal"]["heads"]["other:1:aa"]["seq"] == 1
    ledger.append({"event_type": "run", "op": "verified", "run_id": "run-after", "attrs": {"verdict": "identical"}})
    assert ledger.audit_structure("run-after").ok


def test_once_a_foreign_seal_is_found_queued_appends_are_refused_at_once(ledger: Ledger) -> None:
    """The refusal names the run and its stream; after it, append_async refuses too instead of queueing a loss."""
    import re

    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-y"})
    with Ledger.open(ledger.runs_dir, ledger.ledger_dir) as other:
        other.finish_run("run-y")
    path = ledger.stream_path("run-y")
    message = (
        f"^run 'run-y' is sealed \\(its run/finished line is written in {re.escape(repr(str(path)))}\\): "
        "nothing more can be appended to it; record new events in a new run$"
    )
    with pytest.raises(RunSealedError, match=message):
        ledger.append({"event_type": "artifact", "op": "get", "run_id": "run-y"})
    with pytest.raises(RunSealedError, match=message):
        ledger.append_async({"event_type": "cache", "op": "hit", "run_id": "run-y"})
    ledger.flush()  # nothing was queued, so nothing is lost
    assert [e["op"] for e in _lines(ledger, "run-y")] == ["put", "finished"]


def test_an_implicit_run_another_process_sealed_is_left_at_close_and_not_reused(tmp_path: Path) -> None:
    """close() finds the implicit run sealed by another process, says nothing, and the next ledger starts a new one."""
    from structlog.testing import capture_logs

    dirs = (tmp_path / "runs", tmp_path / "ledger")
    first = Ledger.open(*dirs)
    run = first.append({"event_type": "artifact", "op": "put"})["run_id"]
    seal = crafted_lines(run, 1, writer="w9:9:99")[0].replace(b'"artifact"', b'"run"').replace(b'"put"', b'"finished"')
    with first.stream_path(run).open("ab") as other:  # another process seals the run
        other.write(seal)
    before = first.stream_path(run).read_bytes()
    with capture_logs() as logs:
        first.close()
    assert logs == [] and first.stream_path(run).read_bytes() == before
    with Ledger.open(*dirs) as second:
        assert second.append({"event_type": "cache", "op": "hit"})["run_id"] != run


def test_a_deeply_nested_last_line_is_no_seal_and_costs_no_queued_event(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A last line of arrays nested past any parser's depth is garbage, not a seal: appends and queued events land."""
    from scalable.ledger import log

    monkeypatch.setattr(log, "FLUSH_INTERVAL_S", 30.0)
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-deep"})
    with ledger.stream_path("run-deep").open("ab") as other:
        other.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    ledger.append_async({"event_type": "cache", "op": "hit", "run_id": "run-deep"})
    ledger.append_async({"event_type": "cache", "op": "miss", "run_id": "run-next"})
    ledger.flush()
    ledger.append({"event_type": "artifact", "op": "get", "run_id": "run-deep"})
    assert [e["op"] for e in _lines(ledger, "run-next")] == ["miss"]
    put, garbage, *rest = ledger.stream_path("run-deep").read_bytes().splitlines()
    assert garbage == b"[" * 100_000 + b"]" * 100_000
    assert [json.loads(line)["op"] for line in (put, *rest)] == ["put", "hit", "get"]


def test_an_events_id_carries_the_millisecond_of_its_timestamp(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The UUIDv7 time of an event id is its timestamp's millisecond, even when each clock read is a millisecond on."""
    import calendar
    import time
    from datetime import datetime

    start, reads = time.time_ns(), iter(range(1, 1_000_000))
    monkeypatch.setattr(time, "time_ns", lambda: start + next(reads) * 1_000_000)
    written = [
        ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-ms"}),
        *ledger.append_many([{"event_type": "cache", "op": "hit", "run_id": "run-ms"}] * 2),
    ]
    for event in written:
        stamp = datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
        ms = calendar.timegm(stamp.timetuple()) * 1000 + stamp.microsecond // 1000
        assert int(event["event_id"].replace("-", "")[:12], 16) == ms, event


def test_after_one_line_a_batch_of_shorter_lines_is_the_sealed_head(ledger: Ledger) -> None:
    """A long line, then a batch of three short ones: the seal's head for this writer is the batch's last line."""
    import hashlib

    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-head", "attrs": {"note": "x" * 200}})
    ledger.append_many([{"event_type": "cache", "op": "hit", "run_id": "run-head"}] * 3)
    last = ledger.stream_path("run-head").read_bytes().splitlines()[-1]
    seal = json.loads(ledger.finish_run("run-head")["attrs"])["seal"]
    assert seal["heads"] == {ledger.writer_id: {"seq": 3, "head": hashlib.sha256(last).hexdigest()}}
    assert ledger.audit_structure("run-head").ok
