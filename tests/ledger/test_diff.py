"""Ledger.diff: two runs compared, artifacts by location and tasks by name."""

from __future__ import annotations

import pytest

from scalable.errors import EventValidationError, RunNotFoundError
from scalable.ledger import bind
from scalable.ledger.diff import ROW_COLUMNS
from scalable.ledger.events import RUN_ID_ALPHABET
from scalable.ledger.log import Ledger

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
