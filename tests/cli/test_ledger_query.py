"""``scalable ledger query`` and ``tail``: formats, exit codes, one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from scalable.ledger import bind
from scalable.ledger.log import Ledger
from tests.conftest import CliInvoker


@pytest.fixture
def filled(ledger: Ledger) -> Ledger:
    """A ledger with three artifact events in one run."""
    with bind(run_id="run-cli"):
        for i in range(3):
            ledger.append(
                {
                    "event_type": "artifact",
                    "op": "put",
                    "artifact_name": f"f{i}.csv",
                    "size_bytes": i,
                    "inputs": [f"in{i}"],
                }
            )
    return ledger


SQL = "SELECT artifact_name, size_bytes, inputs FROM artifacts ORDER BY artifact_name"


def test_query_prints_a_table_by_default(filled: Ledger, cli: CliInvoker) -> None:
    """The default format is an aligned text table with a header."""
    result = cli("ledger", "query", SQL)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["artifact_name", "size_bytes", "inputs"]
    assert lines[2].split() == ["f0.csv", "0", '["in0"]']


def test_query_formats_csv_json_jsonl(filled: Ledger, cli: CliInvoker) -> None:
    """csv, json (one array of row objects) and jsonl carry the same rows."""
    rows = json.loads(cli("ledger", "query", SQL, "--format", "json").stdout)
    assert rows == [{"artifact_name": f"f{i}.csv", "size_bytes": i, "inputs": [f"in{i}"]} for i in range(3)]
    jsonl = [json.loads(line) for line in cli("ledger", "query", SQL, "--format", "jsonl").stdout.splitlines()]
    assert jsonl == rows
    parsed = list(csv.DictReader(io.StringIO(cli("ledger", "query", SQL, "--format", "csv").stdout)))
    assert [r["artifact_name"] for r in parsed] == ["f0.csv", "f1.csv", "f2.csv"]


def test_query_writes_parquet_with_output(filled: Ledger, cli: CliInvoker, isolated: Path) -> None:
    """--format parquet --output FILE writes a Parquet file of the result."""
    result = cli("ledger", "query", SQL, "--format", "parquet", "--output", "out.parquet")
    assert result.exit_code == 0, result.output
    assert pq.read_table(isolated / "out.parquet").column("artifact_name").to_pylist() == ["f0.csv", "f1.csv", "f2.csv"]
    missing = cli("ledger", "query", SQL, "--format", "parquet")
    assert missing.exit_code == 2 and "needs --output" in missing.stderr


@pytest.mark.parametrize(
    "sql",
    [
        "COPY (SELECT * FROM events) TO 'leak.csv'",
        "ATTACH 'leak.db' AS x",
        "CREATE TABLE leak AS SELECT 1",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SET enable_external_access=true",
    ],
)
def test_refused_statements_exit_2_with_one_line_and_leave_no_file(
    filled: Ledger, cli: CliInvoker, isolated: Path, sql: str
) -> None:
    """Each refused statement prints one error line, exits 2, and creates no file."""
    before = sorted(p for p in isolated.rglob("*"))
    result = cli("ledger", "query", sql)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
    assert sorted(p for p in isolated.rglob("*")) == before


def test_bad_sql_exits_2_without_traceback(filled: Ledger, cli: CliInvoker) -> None:
    """SQL that does not parse is one line on stderr and exit 2."""
    result = cli("ledger", "query", "SELEC x")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: SQL does not parse")


def test_a_missing_runs_directory_given_explicitly_exits_2(cli: CliInvoker) -> None:
    """--runs-dir naming a missing directory is bad input, named in the message."""
    result = cli("ledger", "--runs-dir", "no/such/dir", "query", "SELECT 1")
    assert result.exit_code == 2
    assert "no/such/dir" in result.stderr and "does not exist" in result.stderr


def test_query_on_an_empty_ledger_prints_no_rows(cli: CliInvoker, isolated: Path) -> None:
    """With an empty runs directory, a query answers with an empty table."""
    (isolated / ".scalable" / "runs").mkdir(parents=True)
    result = cli("ledger", "query", "SELECT * FROM artifacts")
    assert result.exit_code == 0 and "(no rows)" in result.stdout


def test_as_of_before_everything_shows_nothing(filled: Ledger, cli: CliInvoker) -> None:
    """--as-of a time before the first event gives an empty result."""
    result = cli("ledger", "query", "SELECT count(*) AS n FROM events", "--as-of", "2000-01-01", "--format", "json")
    assert json.loads(result.stdout) == [{"n": 0}]
    bad = cli("ledger", "query", "SELECT 1", "--as-of", "last tuesday")
    assert bad.exit_code == 2 and "not ISO-8601" in bad.stderr


def test_tail_prints_the_newest_events(filled: Ledger, cli: CliInvoker) -> None:
    """tail -n 2 prints the two newest events; --run filters; an unknown run exits 2."""
    rows = json.loads(cli("ledger", "tail", "-n", "2", "--format", "json").stdout)
    assert [r["artifact_name"] for r in rows] == ["f1.csv", "f2.csv"]
    assert len(json.loads(cli("ledger", "tail", "--run", "run-cli", "--format", "json").stdout)) == 3
    missing = cli("ledger", "tail", "--run", "run-none")
    assert missing.exit_code == 2 and "run-none" in missing.stderr


def test_version_and_debug(cli: CliInvoker) -> None:
    """--version prints the version; --debug shows the traceback instead of one line."""
    from scalable import __version__

    assert __version__ in cli("--version").stdout
    Path(".scalable/runs").mkdir(parents=True)
    with pytest.raises(Exception, match="does not parse"):
        cli("--debug", "ledger", "query", "SELEC")


def test_follow_yields_events_appended_after_it_started(filled: Ledger) -> None:
    """Following picks up new events (also of new runs) as complete lines, and stops on request."""
    import threading

    from scalable.ledger.tail import follow_events

    seen: list[str] = []
    done = threading.Event()

    def writer() -> None:
        with bind(run_id="run-cli"):
            filled.append({"event_type": "artifact", "op": "put", "artifact_name": "late-1"})
        with bind(run_id="run-new"):
            filled.append({"event_type": "artifact", "op": "put", "artifact_name": "late-2"})

    threading.Timer(0.2, writer).start()
    for record in follow_events(filled, poll_s=0.05, stop=done.is_set):
        seen.append(record["artifact_name"])
        if len(seen) == 2:
            done.set()
    assert seen == ["late-1", "late-2"]


def _peak_rss_mb(isolated: Path, *args: str) -> float:
    """Run ``scalable ARGS`` in a child process; return its peak resident memory in MiB."""
    from tests.helpers import run_python

    done = run_python(
        f"""
        import resource, subprocess, sys
        proc = subprocess.run([sys.executable, "-m", "scalable", *{list(args)!r}], capture_output=True)
        assert proc.returncode == 0, proc.stderr.decode()
        print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    """,
        cwd=isolated,
    )
    return float(done.stdout.strip())


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_large_result_streams_in_bounded_memory(filled: Ledger, isolated: Path, fmt: str) -> None:
    """A 200 MB result written as csv or jsonl never sits in memory whole: peak RSS grows far less than it."""
    big = "SELECT range AS n, repeat('x', 1000) AS payload FROM range(200000)"
    baseline = _peak_rss_mb(isolated, "ledger", "query", "SELECT 1", "--format", fmt, "--output", "small.out")
    peak = _peak_rss_mb(isolated, "ledger", "query", big, "--format", fmt, "--output", "big.out")
    written = (isolated / "big.out").stat().st_size
    assert written > 200_000_000
    assert peak - baseline < 80, f"peak RSS {peak:.0f} MiB against {baseline:.0f} MiB for a {written >> 20} MiB result"
    with (isolated / "big.out").open(encoding="utf-8") as fh:
        lines = sum(1 for _ in fh)
    assert lines == 200000 + (1 if fmt == "csv" else 0)
