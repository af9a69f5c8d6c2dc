"""SQL views over the live streams: typed, deduplicated, as_of, read-only."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalable.errors import QueryError, ReadOnlyQueryError
from scalable.ledger import bind
from scalable.ledger.events import arrow_schema
from scalable.ledger.log import Ledger
from scalable.ledger.views import VIEW_NAMES


def test_an_empty_ledger_gives_empty_typed_views(ledger: Ledger) -> None:
    """With no stream at all every view answers with zero rows, not an error."""
    for view in VIEW_NAMES:
        assert ledger.query(f"SELECT * FROM {view}").num_rows == 0
    table = ledger.query("SELECT * FROM events")
    assert table.schema.names == arrow_schema().names
    assert [f.type for f in table.schema] == [f.type for f in arrow_schema()]


def test_events_are_typed_by_the_arrow_schema(ledger: Ledger) -> None:
    """The events view has the schema's types, whatever the lines look like."""
    with bind(run_id="run-typed"):
        ledger.append({"event_type": "cache", "op": "hit", "hit": True, "duration_s": 1, "inputs": ["a"]})
    table = ledger.query("SELECT * FROM events")
    assert [f.type for f in table.schema] == [f.type for f in arrow_schema()]
    row = table.to_pylist()[0]
    assert row["hit"] is True and row["duration_s"] == 1.0 and row["inputs"] == ["a"]


def test_a_copied_event_is_seen_once(ledger: Ledger) -> None:
    """An event copied twice (at-least-once delivery) appears once in every view."""
    with bind(run_id="run-dup"):
        ledger.append({"event_type": "artifact", "op": "put", "artifact_name": "x"})
    path = ledger.stream_path("run-dup")
    line = path.read_bytes().splitlines()[-1]
    copy = ledger.runs_dir / "run-dup-copy" / "artifacts.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(line + b"\n")
    assert ledger.query("SELECT count(*) AS n FROM artifacts").column("n").to_pylist() == [1]


def test_views_summarise_runs_tasks_and_cache(ledger: Ledger) -> None:
    """runs has one row a run with status and counts; tasks one row a task execution."""
    with bind(run_id="run-sum"):
        ledger.append({"event_type": "run", "op": "started", "attrs": {"project": "demo", "target": "local"}})
        ledger.append({"event_type": "task", "op": "started", "task_name": "t", "attrs": {"task_id": "1"}})
        ledger.append({"event_type": "artifact", "op": "put", "size_bytes": 10, "task_name": "t"})
        ledger.append({"event_type": "cache", "op": "miss", "function_name": "f"})
        ledger.append(
            {
                "event_type": "task",
                "op": "failed",
                "task_name": "t",
                "duration_s": 0.5,
                "attrs": {"task_id": "1", "error_type": "ValueError", "error": "bad"},
            }
        )
    ledger.finish_run("run-sum", "failed")
    run = ledger.query("SELECT * FROM runs").to_pylist()[0]
    assert (run["project"], run["target"], run["status"]) == ("demo", "local", "failed")
    assert (run["tasks"], run["failed_tasks"], run["artifacts"], run["bytes"], run["cache_misses"]) == (1, 1, 1, 10, 1)
    task = ledger.query("SELECT * FROM tasks").to_pylist()[0]
    assert (task["status"], task["error_type"], task["duration_s"]) == ("failed", "ValueError", 0.5)
    assert ledger.query("SELECT function_name FROM cache").column(0).to_pylist() == ["f"]


def test_as_of_shows_the_ledger_as_it_was(ledger: Ledger) -> None:
    """as_of filters every view to events at or before the given time."""
    with bind(run_id="run-old"):
        first = ledger.append({"event_type": "artifact", "op": "put", "artifact_name": "old"})
    with bind(run_id="run-new"):
        ledger.append({"event_type": "artifact", "op": "put", "artifact_name": "new"})
    names = ledger.query("SELECT artifact_name FROM artifacts", as_of=first["timestamp"]).column(0).to_pylist()
    assert names == ["old"]
    assert ledger.query("SELECT run_id FROM runs", as_of=first["timestamp"]).column(0).to_pylist() == ["run-old"]


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT 1) TO 'out.csv'",
        "ATTACH 'other.db' AS other",
        "CREATE TABLE t AS SELECT 1",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access=true",
        "SELECT 1; DROP VIEW events",
        "PRAGMA enable_profiling",
    ],
)
def test_writing_statements_are_refused(ledger: Ledger, sql: str) -> None:
    """Anything but SELECT-like SQL raises ReadOnlyQueryError (a PermissionError)."""
    with pytest.raises(ReadOnlyQueryError, match="read-only"):
        ledger.query(sql)


def test_reading_files_outside_the_ledger_is_refused(ledger: Ledger, tmp_path: Path) -> None:
    """read_csv and friends cannot reach files outside the ledger's directories."""
    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    for sql in (
        "SELECT * FROM read_csv('/etc/passwd')",
        f"SELECT * FROM read_csv('{secret}')",
        f"SELECT * FROM read_csv('{ledger.runs_dir}/../../secret.csv')",
    ):
        with pytest.raises(ReadOnlyQueryError):
            ledger.query(sql)


def test_select_like_statements_run(ledger: Ledger) -> None:
    """SELECT, WITH, DESCRIBE, SHOW, EXPLAIN, SUMMARIZE and PRAGMA table_info all answer."""
    for sql in (
        "SELECT 1",
        "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
        "DESCRIBE artifacts",
        "SHOW TABLES",
        "EXPLAIN SELECT * FROM events",
        "SUMMARIZE SELECT * FROM events",
        "PRAGMA table_info('events')",
        "FROM runs",
    ):
        ledger.query(sql)


def test_bad_sql_is_a_query_error_naming_the_problem(ledger: Ledger) -> None:
    """SQL that does not parse or bind raises QueryError (a ValueError) with DuckDB's reason."""
    with pytest.raises(QueryError, match="does not parse"):
        ledger.query("SELEC 1")
    with pytest.raises(QueryError, match="nope"):
        ledger.query("SELECT nope FROM events")
    with pytest.raises(QueryError, match="no SQL"):
        ledger.query("  ")
