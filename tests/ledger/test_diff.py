"""Ledger.diff: two runs compared, artifacts by location and tasks by name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from scalable import ScalableSession, cacheable
from scalable.cache import FileType
from scalable.errors import EventValidationError, RunNotFoundError
from scalable.ledger import bind
from scalable.ledger.diff import ROW_COLUMNS, VERDICT_COLUMNS, Verdict, VersionChange, location_key
from scalable.ledger.events import RUN_ID_ALPHABET
from scalable.ledger.log import Ledger
from scalable.uris import path_to_uri

A, B = "run-diff-a", "run-diff-b"
D1, D2, D3 = "1" * 64, "2" * 64, "3" * 64


def _artifact(location: str, digest: str | None, *, op: str = "put", size: int | None = 10, task: str = "t") -> dict:
    return {
        "event_type": "artifact",
        "op": op,
        "location": location,
        "digest": digest,
        "size_bytes": size,
        "artifact_name": location.rsplit("/", 1)[-1],
        "task_name": task,
    }


def _task(name: str, task_id: str, *, failed: bool = False, finished: bool = True) -> list[dict]:
    events = [{"event_type": "task", "op": "started", "task_name": name, "attrs": {"task_id": task_id}}]
    if finished:
        events.append(
            {
                "event_type": "task",
                "op": "failed" if failed else "finished",
                "task_name": name,
                "duration_s": 1.5,
                "attrs": {"task_id": task_id},
            }
        )
    return events


@pytest.fixture
def two_runs(ledger: Ledger) -> Ledger:
    """Run A and run B: one artifact of each status, under run-keyed and fixed locations; tasks that differ."""
    with bind(run_id=A):
        ledger.append_many(
            [
                *_task("prepare", "a1"),
                *_task("prepare", "a2"),
                *_task("train", "a3"),
                *_task("old-step", "a4"),
                _artifact(f"s3://bucket/runs/{A}/table.csv", D1),
                _artifact("file:///out/model.bin", D1),
                _artifact("file:///out/gone.txt", D2),
                _artifact("file:///out/deleted-later.txt", D2),
                _artifact("file:///out/unhashed.txt", None, op="recorded", size=5),
                _artifact("file:///out/model.bin", D1, op="get"),
            ]
        )
    ledger.finish_run(A)
    with bind(run_id=B):
        ledger.append_many(
            [
                *_task("prepare", "b1"),
                *_task("prepare", "b2"),
                *_task("train", "b3", failed=True),
                *_task("new-step", "b4"),
                _artifact(f"s3://bucket/runs/{B}/table.csv", D1),
                _artifact("file:///out/model.bin", D2),
                _artifact("file:///out/model.bin", D3),
                _artifact("file:///out/new.txt", D3),
                _artifact("file:///out/deleted-later.txt", D2),
                _artifact("file:///out/deleted-later.txt", None, op="deleted", size=None),
                _artifact("file:///out/unhashed.txt", None, op="recorded", size=6),
            ]
        )
    ledger.finish_run(B)
    return ledger


def test_artifacts_are_compared_by_location_with_the_run_id_taken_out(two_runs: Ledger) -> None:
    """Each location key gets one row: same, changed (its last version), added, removed (gone or deleted)."""
    result = two_runs.diff(A, B)
    rows = {row.key: row for row in result.artifacts}
    assert {key: row.status for key, row in rows.items()} == {
        "s3://bucket/runs/{run}/table.csv": "same",
        "file:///out/model.bin": "changed",
        "file:///out/new.txt": "added",
        "file:///out/gone.txt": "removed",
        "file:///out/deleted-later.txt": "removed",
        "file:///out/unhashed.txt": "changed",
    }
    model = rows["file:///out/model.bin"]
    assert (model.digest_a, model.digest_b, model.name) == (D1, D3, "model.bin")
    table = rows["s3://bucket/runs/{run}/table.csv"]
    assert (table.location_a, table.location_b) == (
        f"s3://bucket/runs/{A}/table.csv",
        f"s3://bucket/runs/{B}/table.csv",
    )
    assert rows["file:///out/new.txt"].location_a is None and rows["file:///out/gone.txt"].digest_b is None
    assert [row.status for row in result.artifacts] == ["changed", "changed", "added", "removed", "removed", "same"]


def test_tasks_are_compared_by_name_counting_failures(two_runs: Ledger) -> None:
    """A task that failed in B is changed; a task only in A is removed, only in B added; durations are carried."""
    result = two_runs.diff(A, B)
    tasks = {row.task_name: row for row in result.tasks}
    assert {name: row.status for name, row in tasks.items()} == {
        "train": "changed",
        "new-step": "added",
        "old-step": "removed",
        "prepare": "same",
    }
    assert (tasks["train"].failed_a, tasks["train"].failed_b) == (0, 1)
    assert (tasks["prepare"].executions_a, tasks["prepare"].executions_b) == (2, 2)
    assert tasks["prepare"].duration_b == pytest.approx(3.0)
    assert (tasks["new-step"].executions_a, tasks["new-step"].duration_a) == (0, None)


def test_a_result_says_whether_the_runs_differ_and_counts_each_status(two_runs: Ledger) -> None:
    """differs, counts(), to_dict() and rows() describe the same comparison."""
    result = two_runs.diff(A, B)
    assert result.differs
    assert result.counts() == {
        "artifacts": {"changed": 2, "added": 1, "removed": 2, "same": 1},
        "tasks": {"changed": 1, "added": 1, "removed": 1, "same": 1},
    }
    doc = result.to_dict()
    assert (doc["run_a"], doc["run_b"], doc["differs"]) == (A, B, True)
    assert len(doc["artifacts"]) == 6 and len(doc["tasks"]) == 4
    rows = result.rows()
    assert [r["section"] for r in rows] == ["artifact"] * 6 + ["task"] * 4
    assert rows[0]["status"] == "changed" and rows[0]["digest_b"] == D3 and rows[0]["executions_a"] is None
    assert (rows[-1]["name"], rows[-1]["executions_b"], rows[-1]["key"]) == ("prepare", 2, None)
    assert all(list(r) == list(ROW_COLUMNS) for r in rows)


def test_a_run_compared_with_itself_is_the_same(two_runs: Ledger) -> None:
    """Every row of a run against itself is same, and differs is false."""
    result = two_runs.diff(A, A)
    assert not result.differs
    assert {row.status for row in (*result.artifacts, *result.tasks)} == {"same"}
    assert len(result.artifacts) == 5  # its five locations (the read is not an output)


def test_the_same_bytes_under_each_runs_own_key_are_the_same(ledger: Ledger) -> None:
    """Two runs storing identical outputs under runs/<run_id>/ differ in nothing."""
    for run in (A, B):
        with bind(run_id=run):
            ledger.append(_artifact(f"file:///store/runs/{run}/out.csv", D1))
        ledger.finish_run(run)
    result = ledger.diff(A, B)
    assert not result.differs
    assert [(r.key, r.status) for r in result.artifacts] == [("file:///store/runs/{run}/out.csv", "same")]


def test_as_of_compares_the_runs_as_they_were(two_runs: Ledger) -> None:
    """With as_of before run B had events, B is not in the ledger yet."""
    first = two_runs.query(f"SELECT min(timestamp) AS t FROM events WHERE run_id = '{B}'").column("t")[0].as_py()
    earlier = two_runs.query(f"SELECT max(timestamp) AS t FROM events WHERE run_id = '{A}'").column("t")[0].as_py()
    assert earlier < first
    with pytest.raises(RunNotFoundError, match=B):
        two_runs.diff(A, B, as_of=earlier)
    with pytest.raises(EventValidationError, match="ISO-8601"):
        two_runs.diff(A, B, as_of="yesterday")


def test_compaction_changes_nothing(two_runs: Ledger) -> None:
    """The comparison read from Parquet equals the one read from the streams."""
    before = two_runs.diff(A, B).to_dict()
    two_runs.compact()
    assert two_runs.diff(A, B).to_dict() == before


def test_an_unknown_run_is_named(two_runs: Ledger) -> None:
    """A run with no events is a RunNotFoundError naming it and saying how to list runs."""
    with pytest.raises(RunNotFoundError, match=r"run 'run-nope' is not in the ledger.*scalable ledger runs"):
        two_runs.diff(A, "run-nope")
    with pytest.raises(RunNotFoundError, match="run-nope"):
        two_runs.diff("run-nope", B)
    # An id no run can have (quotes, spaces) is refused before any query, naming the alphabet.
    with pytest.raises(EventValidationError, match=f"run id .* {RUN_ID_ALPHABET}"):
        two_runs.diff("x' OR '1'='1", B)
    with pytest.raises(EventValidationError, match=f"run id .* {RUN_ID_ALPHABET}"):
        two_runs.diff(A, "run-*")


# --- the verdict of lineage ----------------------------------------------------------------------


def test_a_location_key_takes_out_the_project_folder_then_the_run(tmp_path: Path) -> None:
    """{project} replaces the run's own folder (percent-encoded as sessions record it), never a folder merely starting alike."""
    root = tmp_path / "my project"
    inside = path_to_uri(root / "runs" / "run-x" / "out.csv")
    assert location_key(inside, "run-x", str(root)) == "{project}/runs/{run}/out.csv"
    assert location_key(path_to_uri(tmp_path / "my projectile" / "a"), "run-x", str(root)).startswith("file://")
    assert location_key("s3://b/runs/run-x/a", "run-x", str(root)) == "s3://b/runs/{run}/a"
    assert location_key(inside, "run-x") == inside.replace("run-x", "{run}")


def _workflow(folder: Path, raw: str, *, extra: bool = False, skip_model: bool = False) -> str:
    """One run in ``folder``: raw.csv (an input) -> clean.csv -> a cached summary -> model.json; notes.txt apart."""
    folder.mkdir(parents=True, exist_ok=True)
    here = Path.cwd()
    os.chdir(folder)
    try:
        Path("raw.csv").write_text(raw)
        with ScalableSession(runs_dir=str(here / "runs"), ledger_dir=str(here / "ledger")) as session:
            with session.task("clean"):
                session.record_artifact("raw.csv", role="input")
                Path("clean.csv").write_text(raw.lower())
                session.record_artifact("clean.csv")
            with session.task("fit"):
                summary = _summarize(str(Path("clean.csv").resolve()))
                if not skip_model:
                    Path("model.json").write_text(json.dumps(summary))
                    session.record_artifact("model.json")
            with session.task("notes"):
                Path("notes.txt").write_text("made from nothing the run read\n")
                session.record_artifact("notes.txt")
                if extra:
                    Path("extra.txt").write_text("only in this run\n")
                    session.record_artifact("extra.txt")
            return session.run_id
    finally:
        os.chdir(here)


@cacheable(path=FileType)
def _summarize(path: str) -> dict[str, int]:
    """A cached step over a file argument."""
    return {"lines": len(Path(path).read_text().splitlines()), "bytes": len(Path(path).read_bytes())}


def _rows(verdict: Verdict | None) -> dict[tuple[str, str], VersionChange]:
    assert verdict is not None
    return {(row.role, row.key): row for row in verdict.artifacts}


def test_an_input_that_changed_is_the_first_divergence_of_two_project_folders(isolated: Path) -> None:
    """Runs of one workflow in two folders, the second fed other raw bytes: raw.csv first diverges, all it fed follows."""
    first = _workflow(isolated / "one", "A,B\n1,2\n")
    second = _workflow(isolated / "two", "A,B\n1,2\n3,4\n")
    ledger = Ledger.open(runs_dir=isolated / "runs", ledger_dir=isolated / "ledger")
    result = ledger.diff(first, second, lineage=True)
    rows = _rows(result.lineage)
    raw = rows[("input", "{project}/raw.csv")]
    assert raw.status == "changed" and raw.first and raw.task_a == raw.task_b == "clean"
    assert result.lineage is not None
    assert [r.key for r in result.lineage.first_divergences] == ["{project}/raw.csv"]
    for key in ("{project}/clean.csv", "{project}/model.json"):
        assert rows[("output", key)].status == "changed"
        assert rows[("output", key)].follows_from == ("{project}/raw.csv",)
    (cached,) = [r for r in rows.values() if r.role == "cache"]
    assert cached.status == "changed" and cached.matched_by == "lineage"  # its cache key changed with its input
    assert cached.follows_from == ("{project}/raw.csv",) and cached.name is not None and "_summarize()" in cached.name
    assert rows[("output", "{project}/notes.txt")].status == "identical"
    assert rows[("output", "{project}/clean.csv")].parents == ("{project}/raw.csv",)
    assert result.differs and [r.status for r in result.artifacts if r.key.endswith("notes.txt")] == ["same"]
    summary = result.lineage.summary()
    assert summary["verdict"] == "differs" and summary["first_keys"] == ["{project}/raw.csv"]
    assert summary["artifacts"] == {"changed": 4, "missing": 0, "new": 0, "identical": 1}


def test_missing_and_new_versions_are_first_divergences_when_nothing_upstream_differs(isolated: Path) -> None:
    """A run that made one output less and one more: the missing and the new one each diverge first."""
    first = _workflow(isolated / "one", "A\n1\n")
    second = _workflow(isolated / "two", "A\n1\n", extra=True, skip_model=True)
    ledger = Ledger.open(runs_dir=isolated / "runs", ledger_dir=isolated / "ledger")
    verdict = ledger.diff(first, second, lineage=True).lineage
    rows = _rows(verdict)
    assert rows[("output", "{project}/model.json")].status == "missing"
    assert rows[("output", "{project}/extra.txt")].status == "new"
    assert verdict is not None
    assert {r.key for r in verdict.first_divergences} == {"{project}/model.json", "{project}/extra.txt"}
    assert rows[("output", "{project}/clean.csv")].status == "identical"
    assert rows[("cache", next(k for r, k in rows if r == "cache"))].status == "identical"


def test_a_run_against_itself_is_identical_and_the_verdict_survives_compaction(isolated: Path) -> None:
    """A run compared with itself reproduces itself; Parquet and streams give the same verdict."""
    first = _workflow(isolated / "one", "A\n1\n")
    second = _workflow(isolated / "two", "A\n2\n")
    ledger = Ledger.open(runs_dir=isolated / "runs", ledger_dir=isolated / "ledger")
    same = ledger.diff(first, first, lineage=True)
    assert not same.differs and same.lineage is not None and not same.lineage.first_divergences
    before = ledger.diff(first, second, lineage=True).to_dict()
    ledger.compact()
    assert ledger.diff(first, second, lineage=True).to_dict() == before
    verdict = ledger.diff(first, second, lineage=True).lineage
    assert verdict is not None and list(verdict.rows()[0]) == list(VERDICT_COLUMNS)


def test_a_cached_call_records_where_its_file_arguments_were(isolated: Path) -> None:
    """cache events carry the file:// location of each file argument, beside its digest in inputs."""
    _workflow(isolated / "one", "A\n1\n")
    ledger = Ledger.open(runs_dir=isolated / "runs", ledger_dir=isolated / "ledger")
    rows = ledger.query("SELECT op, inputs, attrs FROM cache").to_pylist()
    assert rows
    for row in rows:
        assert json.loads(row["attrs"])["input_locations"] == [path_to_uri(isolated / "one" / "clean.csv")]
        assert len(row["inputs"]) == 1
