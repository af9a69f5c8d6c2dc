"""The append-only log: whole lines under concurrency, acknowledged means written, torn lines."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from scalable.errors import ConfigError, EventValidationError, LedgerError
from scalable.ledger import bind
from scalable.ledger.log import Ledger
from scalable.ledger.stream import read_stream
from scalable.settings import FsyncMode, load_settings
from tests.helpers import child_env, python_cmd, run_python
from tests.ledger.chains import assert_chains_verify, records


def _artifact(i: int) -> dict[str, object]:
    return {"event_type": "artifact", "op": "put", "artifact_name": f"a{i}", "size_bytes": i}


def test_append_fills_ledger_columns_and_writes_one_line(ledger: Ledger) -> None:
    """append returns the full record and the stream holds exactly that line."""
    with bind(run_id="run-one"):
        record = ledger.append(_artifact(1))
    assert record["run_id"] == "run-one"
    assert record["seq"] == 0 and record["prev"] == "0" * 64 and record["schema_version"] == 1
    assert record["writer"] == ledger.writer_id
    lines = ledger.stream_path("run-one").read_bytes().splitlines()
    assert len(lines) == 1
    assert records(ledger, "run-one") == [record]


def test_events_outside_a_run_go_to_an_implicit_run_that_is_sealed_on_close(ledger: Ledger) -> None:
    """Without a run, events land in one per-process run, started and sealed by the ledger."""
    first = ledger.append(_artifact(1))
    second = ledger.append(_artifact(2))
    assert first["run_id"] == second["run_id"] and "-adhoc-" in first["run_id"]
    ledger.close()
    ops = [(r["event_type"], r["op"]) for r in records(ledger, first["run_id"])]
    assert ops == [("run", "started"), ("artifact", "put"), ("artifact", "put"), ("run", "finished")]
    assert_chains_verify(ledger, first["run_id"])


def test_a_bad_event_in_a_batch_writes_nothing(ledger: Ledger) -> None:
    """append_many validates every event first: one bad event means no line is written."""
    with bind(run_id="run-batch"), pytest.raises(EventValidationError, match="event #2"):
        ledger.append_many([_artifact(0), _artifact(1), {"event_type": "artifact", "op": "nope"}])
    assert not ledger.stream_path("run-batch").exists()


def test_task_and_component_context_fill_events(ledger: Ledger) -> None:
    """Events raised inside a bound task carry its run, task and component."""
    with bind(run_id="run-ctx", task_name="train", component="gpu"):
        record = ledger.append(_artifact(1))
    explicit = ledger.append({**_artifact(2), "run_id": "run-ctx", "task_name": "other"})
    assert (record["task_name"], record["component"]) == ("train", "gpu")
    assert explicit["task_name"] == "other"


def test_eight_threads_of_a_thousand_events_each_land_exactly_once(ledger: Ledger) -> None:
    """8 threads x 1,000 appends into one run: every event once, every line parses, chains hold."""

    def work(t: int) -> None:
        with bind(run_id="run-threads"):
            for i in range(1000):
                ledger.append({**_artifact(i), "task_name": f"t{t}"})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = records(ledger, "run-threads")
    assert len(got) == 8000
    assert len({r["event_id"] for r in got}) == 8000
    assert {(r["task_name"], r["artifact_name"]) for r in got} == {
        (f"t{t}", f"a{i}") for t in range(8) for i in range(1000)
    }
    assert_chains_verify(ledger, "run-threads")


def test_four_processes_of_a_thousand_events_each_land_exactly_once(ledger: Ledger) -> None:
    """4 processes x 1,000 appends (singly and in batches) into one run: nothing lost, doubled or torn."""
    code = """
        import sys
        from scalable.ledger.log import Ledger
        from scalable.ledger import bind
        p = int(sys.argv[1])
        led = Ledger.open()
        with bind(run_id="run-procs"):
            for i in range(500):
                led.append({"event_type": "artifact", "op": "put", "artifact_name": f"p{p}-{i}"})
            led.append_many([{"event_type": "artifact", "op": "put", "artifact_name": f"p{p}-{i}"} for i in range(500, 1000)])
        led.close()
    """
    procs = [subprocess.Popen([*python_cmd(code), str(p)], env=child_env()) for p in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    got = records(ledger, "run-procs")
    assert len(got) == 4000
    assert {r["artifact_name"] for r in got} == {f"p{p}-{i}" for p in range(4) for i in range(1000)}
    assert len({r["writer"] for r in got}) == 4
    assert_chains_verify(ledger, "run-procs")


def test_sigkilled_writer_loses_nothing_it_acknowledged_and_the_next_writer_appends_cleanly(ledger: Ledger) -> None:
    """Every event acknowledged before SIGKILL is queryable; a torn line never swallows the next event."""
    code = """
        import sys
        from scalable.ledger.log import Ledger
        from scalable.ledger import bind
        led = Ledger.open()
        with bind(run_id="run-kill"):
            i = 0
            while True:
                rec = led.append({"event_type": "artifact", "op": "put", "artifact_name": f"k{i}", "attrs": {"pad": "x" * 2000}})
                print(rec["event_id"], flush=True)
                i += 1
    """
    proc = subprocess.Popen(python_cmd(code), env=child_env(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acked = [proc.stdout.readline().strip() for _ in range(300)]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    acked += [line.strip() for line in proc.stdout if line.strip()]
    proc.stdout.close()
    path = ledger.stream_path("run-kill")
    # A writer that dies mid-line leaves a fragment; simulate the worst case explicitly.
    with path.open("ab") as fh:
        fh.write(b'{"event_id":"01900000-0000-7000-8000-00000000torn","event_type":"arti')
    after = ledger.append({**_artifact(1), "run_id": "run-kill", "artifact_name": "after"})
    ids = set(ledger.query("SELECT event_id FROM events WHERE run_id = 'run-kill'").column("event_id").to_pylist())
    assert set(acked) <= ids
    assert after["event_id"] in ids
    reader = read_stream(path)
    names = [r["artifact_name"] for _n, r in reader]
    assert names[-1] == "after"
    assert len(reader.problems) == 1 and "malformed line" in reader.problems[0].reason
    # The fragment is the line just before the new writer's event.
    assert reader.problems[0].path == str(path) and reader.problems[0].line == len(names)


def test_garbage_lines_and_a_live_tail_never_fail_a_query(ledger: Ledger) -> None:
    """Malformed lines are skipped by views and named (file:line) by the reader; a tail is not a problem."""
    with bind(run_id="run-garbage"):
        ledger.append(_artifact(1))
    path = ledger.stream_path("run-garbage")
    with path.open("ab") as fh:
        fh.write(b"this is not json\n")
        fh.write(b'{"event_id": 5}\n')
        fh.write(
            b'{"event_id":"x","event_type":"artifact","op":"put","timestamp":"t","run_id":"run-garbage","writer":"w","seq":"seven","prev":"p"}\n'
        )
    with bind(run_id="run-garbage"):
        ledger.append(_artifact(2))
    with path.open("ab") as fh:
        fh.write(b'{"event_id":"01900000-0000-7000-8000-000000000000","event_ty')
    table = ledger.query("SELECT artifact_name FROM artifacts ORDER BY artifact_name")
    assert table.column("artifact_name").to_pylist() == ["a1", "a2"]
    reader = read_stream(path)
    assert [r["artifact_name"] for _n, r in reader] == ["a1", "a2"]
    assert [p.line for p in reader.problems] == [2, 3, 4]
    assert reader.incomplete_tail
    assert all(str(p).startswith(f"{path}:") for p in reader.problems)


@pytest.mark.parametrize("mode", ["always", "batch", "never"])
def test_every_durability_mode_appends_and_closes(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SCALABLE_LEDGER_FSYNC=always|batch|never all append whole events and close cleanly."""
    monkeypatch.setenv("SCALABLE_LEDGER_FSYNC", mode)
    led = Ledger.open()
    assert led.fsync is FsyncMode(mode)
    with bind(run_id="run-fsync"):
        led.append_many([_artifact(i) for i in range(10)])
    time.sleep(1.2 if mode == "batch" else 0)  # lets the batch syncer run once
    led.close()
    assert len(records(led, "run-fsync")) == 10


def test_an_invalid_durability_mode_is_refused_with_its_variable_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad SCALABLE_LEDGER_FSYNC names the variable and the allowed values."""
    monkeypatch.setenv("SCALABLE_LEDGER_FSYNC", "sometimes")
    with pytest.raises(ConfigError, match="SCALABLE_LEDGER_FSYNC='sometimes' is not one of always, batch, never"):
        load_settings()


def test_a_failing_subscriber_is_detached_and_never_breaks_an_append(ledger: Ledger) -> None:
    """A subscriber that raises is logged and removed; appends and other subscribers go on."""
    seen: list[str] = []

    def bad(_record: object) -> None:
        raise RuntimeError("boom")

    ledger.subscribe(bad)
    ledger.subscribe(lambda r: seen.append(r["artifact_name"]), event_types=["artifact"])
    with bind(run_id="run-sub"):
        ledger.append(_artifact(1))
        ledger.append(_artifact(2))
    assert seen == ["a1", "a2"]
    assert len(records(ledger, "run-sub")) == 2


def test_unsubscribe_stops_delivery(ledger: Ledger) -> None:
    """The function subscribe returns stops further calls."""
    seen: list[object] = []
    unsubscribe = ledger.subscribe(seen.append)
    with bind(run_id="run-unsub"):
        ledger.append(_artifact(1))
        unsubscribe()
        ledger.append(_artifact(2))
    assert len(seen) == 1


def test_bus_publishes_to_the_active_ledger_and_respects_telemetry_off(
    monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    """publish appends to the active ledger; with SCALABLE_TELEMETRY=0 it records nothing."""
    from scalable.ledger import activate, bus, publish

    other = Ledger.open(runs_dir=isolated / "elsewhere")
    with activate(other), bind(run_id="run-bus"):
        publish(_artifact(1))
    assert len(records(other, "run-bus")) == 1
    monkeypatch.setenv("SCALABLE_TELEMETRY", "0")
    bus.reset_default()
    assert publish({**_artifact(2), "run_id": "run-off"}) is None
    assert not Ledger.open().stream_path("run-off").exists()


def test_a_forked_child_writes_under_its_own_writer_id(ledger: Ledger) -> None:
    """After fork the child starts a new chain under a new writer id; both chains verify."""
    with bind(run_id="run-fork"):
        ledger.append(_artifact(1))
        pid = os.fork()
        if pid == 0:  # child
            try:
                ledger.append(_artifact(2))
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        ledger.append(_artifact(3))
    got = records(ledger, "run-fork")
    assert len({r["writer"] for r in got}) == 2
    assert_chains_verify(ledger, "run-fork")


def test_finish_run_seals_every_writer_and_the_audit_verifies(ledger: Ledger) -> None:
    """run/finished carries the heads of every writer's chain, including other processes'."""
    run_python("""
        from scalable.ledger.log import Ledger
        led = Ledger.open()
        led.append({"event_type": "artifact", "op": "put", "run_id": "run-seal", "artifact_name": "child"})
        led.close()
    """)
    with bind(run_id="run-seal"):
        ledger.append(_artifact(1))
    finished = ledger.finish_run("run-seal", "completed")
    import json

    seal = json.loads(finished["attrs"])["seal"]
    assert len(seal["heads"]) == 2
    assert_chains_verify(ledger, "run-seal")


def test_the_seal_equals_a_full_read_of_the_stream(ledger: Ledger, isolated: Path) -> None:
    """Sealing reads only what others wrote, yet names the same heads and counts as reading it all."""
    import hashlib
    import json

    run = "run-seal"
    other = Ledger.open()
    ledger.append({"event_type": "run", "op": "started", "run_id": run})
    other.append_many({"event_type": "task", "op": "started", "run_id": run, "task_name": f"t{i}"} for i in range(3))
    ledger.append({"event_type": "artifact", "op": "put", "run_id": run})
    with open(ledger.stream_path(run), "ab") as fh:
        fh.write(b'{"event_id": "torn')  # a writer that died mid-line
    other.append({"event_type": "cache", "op": "miss", "run_id": run})
    with Ledger.open(runs_dir=isolated / "remote") as worker:
        worker.append({"event_type": "artifact", "op": "get", "run_id": run})
        foreign = [raw for _n, raw, _e in worker.read_run(run).lines()]
    ledger.append_lines(run, foreign)
    ledger.append({"event_type": "artifact", "op": "put", "run_id": run})
    expected_heads: dict[str, dict[str, object]] = {}
    expected_counts: dict[str, int] = {}
    for _n, raw, event in read_stream(ledger.stream_path(run)).lines():
        expected_heads[event["writer"]] = {"seq": event["seq"], "head": hashlib.sha256(raw).hexdigest()}
        expected_counts[event["event_type"]] = expected_counts.get(event["event_type"], 0) + 1
    attrs = json.loads(ledger.finish_run(run)["attrs"])
    assert list(attrs["seal"]["heads"].items()) == list(expected_heads.items())
    assert len(expected_heads) == 3
    assert list(attrs["counts"].items()) == list(expected_counts.items())
    assert attrs["events"] == 8
    assert ledger.audit_structure(run).problems[0].kind == "malformed-line"
    other.close()


def test_a_closed_ledger_refuses_appends(ledger: Ledger) -> None:
    """Appending after close raises a LedgerError that says to open a new one."""
    ledger.close()
    with pytest.raises(LedgerError, match=r"Ledger\.open"):
        ledger.append(_artifact(1))


def test_run_ids_that_escape_the_runs_directory_are_refused(ledger: Ledger) -> None:
    """A run id must be one safe path segment."""
    for bad in ("../x", "a/b", "..", ""):
        with pytest.raises(EventValidationError, match="run id"):
            ledger.append({**_artifact(1), "run_id": bad})


def _hit(i: int) -> dict[str, object]:
    return {"event_type": "cache", "op": "hit", "function_name": "f", "key_digest": f"{i:064x}", "hit": True}


def _id_ms(event_id: str) -> int:
    """The Unix milliseconds a UUIDv7 carries in its first 48 bits."""
    return int(event_id.replace("-", "")[:12], 16)


def test_queued_events_keep_the_time_they_were_raised_and_their_order(ledger: Ledger) -> None:
    """append_async events are written later, in the order raised, each stamped (timestamp and id) when raised."""
    with bind(run_id="run-async"):
        raised = []
        for i in range(3):
            raised.append(time.time())
            ledger.append_async(_hit(i))
            time.sleep(0.02)
        ledger.append(_artifact(9))  # written after the queued events, which were raised first
    events = records(ledger, "run-async")
    assert [e["op"] for e in events] == ["hit", "hit", "hit", "put"]
    assert [e["key_digest"] for e in events[:3]] == [f"{i:064x}" for i in range(3)]
    assert [e["event_id"] for e in events] == sorted(e["event_id"] for e in events)
    for event, at in zip(events, raised, strict=False):
        stamped = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
        assert abs(stamped - at) < 0.015  # the time it was raised, not the time it was written
        assert abs(_id_ms(event["event_id"]) - stamped * 1000) < 2
    assert_chains_verify(ledger, "run-async")


def test_queued_events_of_many_threads_land_once_each_in_the_order_each_thread_raised_them(ledger: Ledger) -> None:
    """Threads queueing thousands of events past the pending limit, with flushes from every side, lose and reorder none."""
    from scalable.ledger.log import PENDING_LIMIT

    per_thread = PENDING_LIMIT // 2 + 100

    def work(t: int) -> None:
        with bind(run_id="run-async-threads"):
            for i in range(per_thread):
                ledger.append_async({**_hit(i), "function_name": f"t{t}"})
                if i % 997 == 0:
                    ledger.flush()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = records(ledger, "run-async-threads")
    assert len(events) == 4 * per_thread
    for t in range(4):
        mine = [e["key_digest"] for e in events if e["function_name"] == f"t{t}"]
        assert mine == [f"{i:064x}" for i in range(per_thread)]
    assert [e["event_id"] for e in events] == sorted(e["event_id"] for e in events)
    assert len({e["event_id"] for e in events}) == len(events)
    assert_chains_verify(ledger, "run-async-threads")


def test_a_queued_event_reaches_the_stream_on_its_own(ledger: Ledger) -> None:
    """Without any flush or read, an event append_async queued is in the stream file soon after (within a second here)."""
    from scalable.ledger.log import FLUSH_INTERVAL_S

    with bind(run_id="run-async-alone"):
        ledger.append_async(_hit(1))
    path = ledger.stream_path("run-async-alone")
    queued = time.monotonic()
    while not (path.exists() and b'"op":"hit"' in path.read_bytes()):
        assert time.monotonic() - queued < 10 * FLUSH_INTERVAL_S, "the queued event was never written"
        time.sleep(0.005)
