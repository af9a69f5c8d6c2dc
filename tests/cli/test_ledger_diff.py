"""``scalable ledger diff RUN_A RUN_B``: the comparison in every format, exit 1 when the runs differ."""

from __future__ import annotations

import csv
import io
import json

import pytest

from scalable.ledger import bind
from scalable.ledger.log import Ledger
from tests.conftest import CliInvoker

A, B, C = "run-cli-a", "run-cli-b", "run-cli-c"


@pytest.fixture
def runs(ledger: Ledger) -> Ledger:
    """A and C made the same output under their own keys; B changed it and added one."""
    for run, outputs in (
        (A, {"out.csv": "1" * 64}),
        (B, {"out.csv": "2" * 64, "extra.csv": "3" * 64}),
        (C, {"out.csv": "1" * 64}),
    ):
        with bind(run_id=run):
            ledger.append({"event_type": "task", "op": "started", "task_name": "make"})
            for name, digest in outputs.items():
                ledger.append(
                    {
                        "event_type": "artifact",
                        "op": "put",
                        "task_name": "make",
                        "artifact_name": name,
                        "location": f"file:///store/runs/{run}/{name}",
                        "digest": digest,
                        "size_bytes": 4,
                    }
                )
            ledger.append({"event_type": "task", "op": "finished", "task_name": "make", "duration_s": 0.1})
        ledger.finish_run(run)
    return ledger


def test_runs_that_differ_exit_1_and_list_each_change(runs: Ledger, cli: CliInvoker) -> None:
    """The table names the changed and the added artifact with short digests, and a summary line; exit 1."""
    result = cli("ledger", "diff", A, B)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    changed = next(line for line in lines if "out.csv" in line)
    assert changed.split()[:4] == ["changed", "file:///store/runs/{run}/out.csv", "1" * 12, "2" * 12]
    added = next(line for line in lines if "extra.csv" in line)
    assert added.split()[0] == "added"
    assert lines[-1].startswith("the runs differ: artifacts: 1 changed, 1 added, 0 removed, 0 same")


def test_runs_that_are_the_same_exit_0(runs: Ledger, cli: CliInvoker) -> None:
    """Two runs with the same outputs under their own keys and the same tasks: exit 0."""
    result = cli("ledger", "diff", A, C)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("the runs are the same")


def test_json_jsonl_and_csv_carry_every_row(runs: Ledger, cli: CliInvoker) -> None:
    """json is one array of rows (artifacts then tasks), jsonl the same rows, csv the same with a header."""
    rows = json.loads(cli("ledger", "diff", A, B, "--format", "json").stdout)
    assert [(r["section"], r["status"]) for r in rows] == [
        ("artifact", "changed"),
        ("artifact", "added"),
        ("task", "same"),
    ]
    assert rows[0]["digest_a"] == "1" * 64 and rows[0]["location_b"] == f"file:///store/runs/{B}/out.csv"
    jsonl = [json.loads(line) for line in cli("ledger", "diff", A, B, "--format", "jsonl").stdout.splitlines()]
    assert jsonl == rows
    parsed = list(csv.DictReader(io.StringIO(cli("ledger", "diff", A, B, "--format", "csv").stdout)))
    assert [(r["section"], r["status"], r["key"] or r["name"]) for r in parsed] == [
        ("artifact", "changed", "file:///store/runs/{run}/out.csv"),
        ("artifact", "added", "file:///store/runs/{run}/extra.csv"),
        ("task", "same", "make"),
    ]


def test_an_unknown_run_is_one_line_and_exit_2(runs: Ledger, cli: CliInvoker) -> None:
    """A run that is not in the ledger is named on one stderr line; nothing on stdout."""
    result = cli("ledger", "diff", A, "run-missing")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "error: run 'run-missing' is not in the ledger; list runs with: scalable ledger runs"
    ]
