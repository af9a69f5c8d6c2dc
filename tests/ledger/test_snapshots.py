"""Readers see a snapshot: appenders, compaction loops and a query loop at once, and no query fails."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from scalable.errors import ConfigError
from scalable.ledger.generations import GENERATIONS_DIR, collect_superseded, read_generation
from scalable.ledger.log import Ledger
from scalable.settings import load_settings
from tests.helpers import child_env, python_cmd

#: How long the appenders, compactions and queries run at once.
LOOP_S = 30.0

APPENDER = """
import os, sys, time
from scalable.ledger.log import Ledger
runs, ledger_dir, name, ack_path, until = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
led = Ledger.open(runs, ledger_dir)
acked = 0
run = 0
with open(ack_path, "a", buffering=1) as ack:
    while time.time() < until:
        run_id = f"{name}-{run}"
        for _ in range(20):
            led.append_many(
                {"event_type": "artifact", "op": "put", "run_id": run_id, "artifact_name": f"a{acked + i}",
                 "digest": f"{acked + i:064x}", "inputs": [f"{max(0, acked + i - 1):064x}"]}
                for i in range(5)
            )
            acked += 5
            ack.write(f"{time.monotonic_ns()} {acked}\\n")  # acknowledged: append_many returned
            time.sleep(0.01)
        led.finish_run(run_id)
        run += 1
led.close()
"""

COMPACTOR = """
import sys, time
from scalable.ledger.log import Ledger
runs, ledger_dir, keep, until = sys.argv[1], sys.argv[2], sys.argv[3] == "keep", float(sys.argv[4])
led = Ledger.open(runs, ledger_dir)
done = 0
while time.time() < until:
    led.compact(keep_jsonl=keep)
    done += 1
print(done)
"""

QUERIER = """
import json, sys, time
from scalable.ledger.log import Ledger
runs, ledger_dir, out_path, until = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
led = Ledger.open(runs, ledger_dir)
with open(out_path, "a", buffering=1) as out:
    while time.time() < until:
        started = time.monotonic_ns()
        record = {"started": started}
        try:
            rows = led.query(
                "SELECT split_part(run_id, '-', 1) AS appender, count(*) AS n, count(DISTINCT event_id) AS d "
                "FROM events WHERE event_type = 'artifact' GROUP BY appender"
            ).to_pylist()
            record["counts"] = {r["appender"]: [r["n"], r["d"]] for r in rows}
            record["edges"] = led.query("SELECT count(*) AS n FROM lineage").to_pylist()[0]["n"]
        except Exception as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        out.write(json.dumps(record) + "\\n")
"""


def acknowledged(path: Path) -> list[tuple[int, int]]:
    """``(monotonic ns, events acknowledged so far)`` of one appender, in order."""
    return [(int(t), int(n)) for t, n in (line.split() for line in path.read_text().splitlines())]


def acked_before(acks: list[tuple[int, int]], moment: int) -> int:
    """Events an appender had acknowledged at ``moment``."""
    return max((n for t, n in acks if t <= moment), default=0)


@pytest.mark.slow
def test_queries_never_fail_while_appenders_and_two_compaction_loops_run(tmp_path: Path) -> None:
    """30 s of two appenders, two compaction loops and a query loop: every query succeeds and sees every acknowledged event once."""
    runs, ledger_dir = tmp_path / "runs", tmp_path / "ledger"
    runs.mkdir()
    # A short retention, so superseded files really are collected while queries run.
    env = child_env(SCALABLE_SNAPSHOT_RETENTION="1s")
    until = time.time() + LOOP_S
    acks = {name: tmp_path / f"{name}.acks" for name in ("a1", "a2")}
    results = tmp_path / "queries.jsonl"
    procs = [
        subprocess.Popen([*python_cmd(APPENDER), str(runs), str(ledger_dir), name, str(path), str(until)], env=env)
        for name, path in acks.items()
    ]
    procs += [
        subprocess.Popen(
            [*python_cmd(COMPACTOR), str(runs), str(ledger_dir), keep, str(until)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for keep in ("keep", "retire")
    ]
    procs.append(
        subprocess.Popen([*python_cmd(QUERIER), str(runs), str(ledger_dir), str(results), str(until)], env=env)
    )
    outputs = [proc.communicate(timeout=LOOP_S + 120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * len(procs)
    compactions = [int(out) for out in outputs[2:4]]
    assert min(compactions) >= 3, compactions

    queries = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(queries) >= 5  # on two shared cores one query takes 1-4 s here
    assert [q for q in queries if "error" in q] == []
    by_appender = {name: acknowledged(path) for name, path in acks.items()}
    final = {name: acks_of[-1][1] for name, acks_of in by_appender.items()}
    for q in queries:
        for name, acks_of in by_appender.items():
            seen, distinct = q["counts"].get(name, [0, 0])
            assert seen == distinct, f"an event counted twice: {q}"
            assert acked_before(acks_of, q["started"]) <= seen <= final[name], (name, q)
        assert q["edges"] >= 0

    led = Ledger.open(runs, ledger_dir)
    end = {r["appender"]: r["n"] for r in led.query(
        "SELECT split_part(run_id, '-', 1) AS appender, count(*) AS n FROM events WHERE event_type = 'artifact' GROUP BY appender"
    ).to_pylist()}  # fmt: skip
    assert end == final
    # Superseded generations were collected while the queries ran.
    documents = os.listdir(ledger_dir / GENERATIONS_DIR)
    assert len([d for d in documents if d.endswith(".json")]) < read_generation(led.location).version
    led.close()


def test_superseded_files_stay_for_the_retention_period(tmp_path: Path) -> None:
    """A merged-away file stays while its newer generation is younger than the retention, then goes with its document."""
    settings = load_settings(runs_dir=tmp_path / "runs", ledger_dir=tmp_path / "ledger", snapshot_retention_s=3600)
    led = Ledger(settings)
    for i in range(5):  # five one-run compactions: five small files, merged by the fifth
        led.append({"event_type": "artifact", "op": "put", "run_id": f"run-{i}"})
        led.compact([f"run-{i}"])
    location = led.location
    newest = read_generation(location)
    on_disk = set(location.list_files("events"))
    assert len(newest.files) < len(on_disk)  # the merged-away files are still there
    assert collect_superseded(location, retention_s=3600).files == 0
    assert set(location.list_files("events")) == on_disk
    # An hour later they have expired: files and older documents go, the newest stays whole.
    collected = collect_superseded(location, retention_s=3600, now_s=time.time() + 3601)
    assert collected.files == len(on_disk - {f.path for f in newest.files}) > 0
    assert set(location.list_files("events")) == {f.path for f in newest.files}
    assert [n for n in location.list_names(GENERATIONS_DIR) if n.endswith(".json")] == [f"{newest.version:020d}.json"]
    assert led.query("SELECT count(*) AS n FROM events").to_pylist() == [{"n": 5}]
    led.close()


def test_a_dead_attempts_files_are_collected_and_unknown_files_never(tmp_path: Path) -> None:
    """Files of a compaction killed before its commit go at the next compaction; a file nobody names stays."""
    runs, ledger_dir = tmp_path / "runs", tmp_path / "ledger"
    led = Ledger.open(runs, ledger_dir)
    led.append({"event_type": "artifact", "op": "put", "run_id": "run-1"})
    led.close()
    code = """
        import sys
        from scalable.ledger.log import Ledger
        Ledger.open(sys.argv[1], sys.argv[2]).compact()
    """
    killed = subprocess.run(
        [*python_cmd(code), str(runs), str(ledger_dir)],
        env=child_env(SCALABLE_TEST_CRASH_AT="before_manifest_commit"),
        check=False,
    )
    assert killed.returncode == -9
    left = sorted(p.name for p in (ledger_dir / "events").rglob("*.parquet"))
    assert left and list((ledger_dir / "_attempts").iterdir())
    stranger = ledger_dir / "events" / "date=2026-01-01" / "part-from-elsewhere.parquet"
    stranger.parent.mkdir(parents=True, exist_ok=True)
    stranger.write_bytes(b"PAR1")
    led = Ledger.open(runs, ledger_dir)
    led.compact()
    live = {Path(f.path).name for f in read_generation(led.location).files}
    assert not set(left) & live
    assert sorted(p.name for p in (ledger_dir / "events").rglob("*.parquet")) == sorted(
        [*live, stranger.name]
    )  # the killed attempt's files are gone; the unknown file is kept
    assert list((ledger_dir / "_attempts").iterdir()) == []
    led.close()


def test_snapshot_retention_setting_is_checked() -> None:
    """SCALABLE_SNAPSHOT_RETENTION takes seconds or a unit; anything else names the variable."""
    assert load_settings(env={"SCALABLE_SNAPSHOT_RETENTION": "90"}).snapshot_retention_s == 90
    assert load_settings(env={"SCALABLE_SNAPSHOT_RETENTION": "2h"}).snapshot_retention_s == 7200
    assert load_settings(env={}).snapshot_retention_s == 3600
    with pytest.raises(ConfigError, match="SCALABLE_SNAPSHOT_RETENTION"):
        load_settings(env={"SCALABLE_SNAPSHOT_RETENTION": "-5m"})
