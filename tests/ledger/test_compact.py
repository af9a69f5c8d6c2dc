"""Compaction into Parquet: views exactly once, as_of, retention, merging, crash safety."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scalable.errors import CompactionConflictError, EventValidationError, LedgerError
from scalable.ledger.crash import CRASH_POINTS
from scalable.ledger.generations import GENERATIONS_DIR, Generation, commit_generation, read_generation
from scalable.ledger.location import LocalLocation
from scalable.ledger.log import Ledger
from tools.gen_events import generate

ROOT = Path(__file__).resolve().parents[2]
ALL = "SELECT * FROM events ORDER BY event_id"


def rows(led: Ledger, sql: str = ALL, **kw: Any) -> list[dict[str, Any]]:
    """Return the query result as a list of row mappings."""
    return led.query(sql, **kw).to_pylist()


def parquet_files(ledger_dir: Path) -> list[Path]:
    """Every Parquet file under the ledger's events directory."""
    return sorted((ledger_dir / "events").glob("date=*/*.parquet"))


@pytest.fixture
def synthetic(isolated: Path) -> Ledger:
    """Six finished synthetic runs over three days, plus one run still being written."""
    generate(isolated / "runs", 6 * 40, runs=6, days=3)
    led = Ledger.open(isolated / "runs", isolated / "ledger")
    led.append_many(
        {
            "event_type": "artifact",
            "op": "put",
            "run_id": "run-live",
            "artifact_name": f"a{i}",
            "size_bytes": i,
            "inputs": ["x"],
        }
        for i in range(5)
    )
    return led


def test_compacted_views_equal_the_raw_streams(synthetic: Ledger) -> None:
    """After compaction every view returns exactly what it returned over the raw streams."""
    before = rows(synthetic)
    runs_before = rows(synthetic, "SELECT * FROM runs ORDER BY run_id")
    result = synthetic.compact()
    assert result.events_written == len(before) == result.events_total
    assert parquet_files(Path(synthetic.ledger_dir))
    assert rows(synthetic) == before
    assert rows(synthetic, "SELECT * FROM runs ORDER BY run_id") == runs_before


def test_compaction_is_idempotent(synthetic: Ledger) -> None:
    """A second compaction with nothing new writes nothing and commits no new generation."""
    first = synthetic.compact()
    second = synthetic.compact()
    assert second.events_written == 0
    assert second.version == first.version
    assert len(rows(synthetic)) == first.events_total


def test_events_appended_after_compaction_appear_once(synthetic: Ledger) -> None:
    """Events appended to a compacted run show once before and after the next compaction."""
    synthetic.compact()
    synthetic.append({"event_type": "artifact", "op": "put", "run_id": "run-live", "artifact_name": "late"})
    count = "SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events"
    before = rows(synthetic, count)[0]
    assert before["n"] == before["d"]
    assert rows(synthetic, "SELECT count(*) AS n FROM artifacts WHERE artifact_name = 'late'") == [{"n": 1}]
    synthetic.compact()
    assert rows(synthetic, count) == [before]


def test_duplicate_lines_are_counted_once(synthetic: Ledger) -> None:
    """A line copied twice into a stream (an at-least-once copy) is one event in views and Parquet."""
    path = synthetic.stream_path("run-live")
    first = path.read_bytes().splitlines(keepends=True)[0]
    with open(path, "ab") as fh:
        fh.write(first)
    expected = rows(synthetic)
    assert len(expected) == len({r["event_id"] for r in expected})
    result = synthetic.compact()
    assert result.events_written == len(expected)
    assert rows(synthetic) == expected


def test_as_of_spans_parquet_and_tails(synthetic: Ledger) -> None:
    """as_of filters compacted and live events alike."""
    synthetic.compact()
    cutoff = "2026-01-02T00:00:00Z"
    old = rows(synthetic, "SELECT count(*) AS n FROM events", as_of=cutoff)[0]["n"]
    assert 0 < old < len(rows(synthetic))
    assert rows(synthetic, "SELECT count(*) AS n FROM events WHERE run_id = 'run-live'", as_of=cutoff) == [{"n": 0}]
    assert rows(synthetic, "SELECT count(*) AS n FROM events WHERE run_id = 'run-live'") == [{"n": 5}]


def test_parquet_is_partitioned_sorted_zstd(synthetic: Ledger) -> None:
    """Files are Hive-partitioned by event date, sorted by (run_id, timestamp), zstd, with the schema's columns."""
    import pyarrow.parquet as pq

    from scalable.ledger.events import COLUMNS

    synthetic.compact()
    files = parquet_files(Path(synthetic.ledger_dir))
    assert {f.parent.name for f in files} >= {"date=2026-01-01", "date=2026-01-02", "date=2026-01-03"}
    for file in files:
        table = pq.read_table(file)
        assert table.column_names == [c.name for c in COLUMNS]
        keys = list(zip(table.column("run_id").to_pylist(), table.column("timestamp").to_pylist(), strict=True))
        assert keys == sorted(keys)
        assert {t[:10] for t in table.column("timestamp").to_pylist()} == {file.parent.name.removeprefix("date=")}
        assert pq.ParquetFile(file).metadata.row_group(0).column(0).compression == "ZSTD"


def test_orphan_files_are_invisible(synthetic: Ledger) -> None:
    """A Parquet file no manifest names (left by a killed compaction) never reaches the views."""
    synthetic.compact()
    expected = rows(synthetic)
    stray = parquet_files(Path(synthetic.ledger_dir))[0]
    shutil.copy(stray, stray.with_name("part-orphan.parquet"))
    assert rows(synthetic) == expected


def test_no_keep_jsonl_retires_only_finished_runs(synthetic: Ledger) -> None:
    """--no-keep-jsonl deletes verified streams of finished runs and keeps the running run's stream."""
    expected = rows(synthetic)
    result = synthetic.compact(keep_jsonl=False)
    assert len(result.streams_retired) == 6
    assert "run-live" not in result.streams_retired
    assert synthetic.stream_path("run-live").exists()
    assert sorted(p.parent.name for p in Path(synthetic.runs_dir).glob("*/artifacts.jsonl")) == ["run-live"]
    assert rows(synthetic) == expected


def test_keep_jsonl_keeps_every_stream(synthetic: Ledger) -> None:
    """The default keeps every stream in place after compaction."""
    synthetic.compact()
    assert len(list(Path(synthetic.runs_dir).glob("*/artifacts.jsonl"))) == 7


def test_single_run_compaction_and_merging(isolated: Path) -> None:
    """Compacting one run at a time makes small files that later compactions merge."""
    generate(isolated / "runs", 8 * 30, runs=8, days=1)
    led = Ledger.open(isolated / "runs", isolated / "ledger")
    expected = rows(led)
    results = [led.compact([run_id]) for run_id in led.run_ids()]
    assert [r.streams_compacted for r in results] == [1] * 8
    assert sum(r.files_merged for r in results) >= 4
    manifest = read_generation(led.location)
    assert len(manifest.files) < 4
    assert {f.date for f in manifest.files} == {"2026-01-01"}
    assert manifest.rows == len(expected)
    assert rows(led) == expected


def test_schema_evolution_keeps_unknown_columns(isolated: Path) -> None:
    """Lines of a newer writer (extra column) and of an older schema_version compact and query without loss."""
    led = Ledger.open(isolated / "runs", isolated / "ledger")
    led.append({"event_type": "artifact", "op": "put", "run_id": "run-new", "artifact_name": "a"})
    newer = {
        "event_id": "01900000-0000-7000-8000-000000000001",
        "event_type": "artifact",
        "op": "put",
        "timestamp": "2026-11-26T00:00:00.000000Z",
        "run_id": "run-new",
        "writer": "w2",
        "seq": 0,
        "prev": "0" * 64,
        "artifact_name": "b",
        "attrs": json.dumps({"x": 1}),
        "gpu_hours": 3.5,
        "schema_version": 2,
    }
    older = {
        "event_id": "01900000-0000-7000-8000-000000000002",
        "event_type": "artifact",
        "op": "recorded",
        "timestamp": "2026-11-26T00:00:01.000000Z",
        "run_id": "run-old",
        "writer": "w3",
        "seq": 0,
        "prev": "0" * 64,
        "artifact_name": "c",
        "size_bytes": 7,
    }
    for run, record in (("run-new", newer), ("run-old", older)):
        path = led.stream_path(run)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as fh:
            fh.write(json.dumps(record).encode() + b"\n")
    led.compact()
    got = {r["artifact_name"]: r for r in rows(led, "SELECT * FROM artifacts")}
    assert set(got) == {"a", "b", "c"}
    assert json.loads(got["b"]["attrs"]) == {"x": 1, "gpu_hours": 3.5}
    assert got["c"]["size_bytes"] == 7
    versions = rows(led, "SELECT artifact_name, schema_version FROM events WHERE event_type = 'artifact' ORDER BY 1")
    assert versions == [
        {"artifact_name": "a", "schema_version": 1},
        {"artifact_name": "b", "schema_version": 2},
        {"artifact_name": "c", "schema_version": 1},
    ]


def test_retire_before_leaves_tombstones(synthetic: Ledger) -> None:
    """--retire-before removes older events and appends one run/retired tombstone per affected run, once."""
    cutoff = "2026-01-02"
    total = len(rows(synthetic))
    old = rows(
        synthetic,
        f"SELECT run_id, count(*) AS n FROM events WHERE timestamp < '{cutoff}' GROUP BY run_id ORDER BY run_id",
    )
    result = synthetic.compact(retire_before=cutoff)
    assert result.events_retired == sum(r["n"] for r in old)
    assert result.tombstones == len(old)
    tomb = rows(synthetic, "SELECT run_id, attrs FROM events WHERE op = 'retired' ORDER BY run_id")
    assert [t["run_id"] for t in tomb] == [r["run_id"] for r in old]
    for t, o in zip(tomb, old, strict=True):
        attrs = json.loads(t["attrs"])
        assert attrs["events"] == o["n"]
        assert attrs["before"].startswith("2026-01-02T00:00:00")
        assert all(w["head"] and w["last_seq"] >= w["first_seq"] for w in attrs["writers"].values())
    assert rows(synthetic, f"SELECT count(*) AS n FROM events WHERE timestamp < '{cutoff}'") == [{"n": 0}]
    assert len(rows(synthetic)) == total - result.events_retired + result.tombstones
    again = synthetic.compact(retire_before=cutoff)
    assert again.tombstones == 0
    assert len(rows(synthetic)) == total - result.events_retired + result.tombstones


def test_bad_retire_before_is_refused(synthetic: Ledger) -> None:
    """A retention date that is not ISO-8601 is refused before anything is written."""
    with pytest.raises(EventValidationError, match="not ISO-8601"):
        synthetic.compact(retire_before="last tuesday")
    assert (
        not (Path(synthetic.ledger_dir) / GENERATIONS_DIR).exists() or read_generation(synthetic.location).version == 0
    )


def test_invalid_manifest_is_reported(synthetic: Ledger) -> None:
    """A corrupt manifest gives a LedgerError naming the file and what to do."""
    synthetic.compact()
    manifests = sorted((Path(synthetic.ledger_dir) / GENERATIONS_DIR).glob("*.json"))
    manifests[-1].write_text("{not json")
    with pytest.raises(LedgerError, match=r"manifest .*00000000000000000001\.json.* not valid"):
        synthetic.query("SELECT 1")


def test_concurrent_commit_of_one_generation_conflicts(isolated: Path) -> None:
    """Two compactions committing the same generation: the second gets CompactionConflictError."""
    location = LocalLocation(isolated / "runs", isolated / "ledger")
    commit_generation(location, Generation(version=1))
    with pytest.raises(CompactionConflictError, match="run scalable ledger compact again"):
        commit_generation(location, Generation(version=1))


def test_cli_compact(cli: Any, synthetic: Ledger) -> None:
    """`scalable ledger compact` compacts, reports counts, and refuses a bad date with exit 2."""
    args = ["ledger", "--runs-dir", str(synthetic.runs_dir), "--ledger-dir", str(synthetic.ledger_dir)]
    result = cli(*args, "compact", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)[0]
    assert report["events_written"] == report["events_total"] > 0
    bad = cli(*args, "compact", "--retire-before", "soon")
    assert bad.exit_code == 2
    assert "not ISO-8601" in bad.stderr
    gone = cli(*args, "compact", "--no-keep-jsonl")
    assert gone.exit_code == 0
    assert "deleted the streams of 6 finished run(s)" in gone.stderr


# --- crash injection -------------------------------------------------------------------------

_COMPACT = (
    "import sys\n"
    "from scalable.ledger.log import Ledger\n"
    "led = Ledger.open(sys.argv[1], sys.argv[2])\n"
    "led.compact(keep_jsonl=False, retire_before=sys.argv[3] or None)\n"
    "led.close()\n"
)


def _run_compaction(base: Path, crash_at: str | None, retire: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALABLE_")}
    env["PYTHONPATH"] = str(ROOT)
    if crash_at:
        env["SCALABLE_TEST_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-c", _COMPACT, str(base / "runs"), str(base / "ledger"), retire],
        env=env,
        capture_output=True,
        check=False,
    )


def _compact_in_process(base: Path, retire: str) -> None:
    led = Ledger.open(base / "runs", base / "ledger")
    led.compact(keep_jsonl=False, retire_before=retire or None)
    led.close()


def _snapshot(base: Path) -> list[tuple[Any, ...]]:
    """Every event, with tombstones reduced to what is deterministic (their run and attrs)."""
    led = Ledger.open(base / "runs", base / "ledger")
    out = []
    for r in rows(led, "SELECT * FROM events ORDER BY run_id, timestamp, event_id"):
        if r["op"] == "retired":
            out.append(("tombstone", r["run_id"], r["attrs"]))
        else:
            out.append(tuple(r.values()))
    return sorted(out, key=repr)


@pytest.fixture(scope="module")
def crash_seed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[tuple[Any, ...]]]]:
    """A ledger to crash compactions on, and the views after an uninterrupted compaction of it."""
    seed = tmp_path_factory.mktemp("seed")
    generate(seed / "runs", 6 * 40, runs=6, days=3)
    live = Ledger.open(seed / "runs", seed / "ledger")
    live.append({"event_type": "artifact", "op": "put", "run_id": "run-live", "artifact_name": "x"})
    live.close()
    expected = {}
    for retire in ("", "2026-01-02"):
        reference = tmp_path_factory.mktemp("reference")
        shutil.copytree(seed, reference, dirs_exist_ok=True)
        _compact_in_process(reference, retire)
        expected[retire] = _snapshot(reference)
    return seed, expected


_CASES = [
    (point, retire) for retire in ("", "2026-01-02") for point in CRASH_POINTS if retire or point != "after_tombstones"
]  # tombstones are written only with a cutoff


@pytest.mark.parametrize(("point", "retire"), _CASES, ids=[f"{p}-{'retention' if r else 'plain'}" for p, r in _CASES])
def test_sigkill_at_any_point_then_rerun_gives_the_same_views(
    tmp_path: Path, crash_seed: tuple[Path, dict[str, list[tuple[Any, ...]]]], point: str, retire: str
) -> None:
    """Compaction SIGKILLed at a named point, then run again, leaves views equal to an uninterrupted run."""
    seed, expected = crash_seed
    crashed = tmp_path / "crashed"
    shutil.copytree(seed, crashed)
    killed = _run_compaction(crashed, point, retire)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    _compact_in_process(crashed, retire)
    assert _snapshot(crashed) == expected[retire]
    ids = [e for e in expected[retire] if e[0] != "tombstone"]
    assert len(ids) == len({e[0] for e in ids})


def test_sigkill_at_random_instants_then_rerun_gives_the_same_views(tmp_path: Path) -> None:
    """Compactions killed from outside at arbitrary instants, then one run to the end, equal an uninterrupted run."""
    import random
    import time

    seed = tmp_path / "seed"
    generate(seed / "runs", 20 * 300, runs=20, days=4)
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    shutil.copytree(seed, reference)
    shutil.copytree(seed, crashed)
    _compact_in_process(reference, "")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALABLE_")}
    env["PYTHONPATH"] = str(ROOT)
    delays = random.Random(7)
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _COMPACT, str(crashed / "runs"), str(crashed / "ledger"), ""],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delays.uniform(0.2, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _compact_in_process(crashed, "")
    assert _snapshot(crashed) == _snapshot(reference)
