"""CLI habits: --format on every command that prints rows, whole digests in machine formats,
progress on stderr, audit's per-kind summary and --limit, and messages that name commands."""

from __future__ import annotations

import ast
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from scalable import cacheable
from scalable.ledger import bind
from scalable.ledger.log import Ledger
from scalable.stores import build_artifact_store
from tests.conftest import CliInvoker
from tests.helpers import ROOT

DIGEST = re.compile(r"\b[0-9a-f]{64}\b")


@cacheable
def square(x: int) -> int:
    """``x`` squared."""
    return x * x


@pytest.fixture
def populated(isolated: Path) -> dict[str, Any]:
    """A finished run with a task, two stored artifacts (one derived from the other) and a cache entry."""
    Path("raw.txt").write_text("raw data\n")
    Path("clean.txt").write_text("clean data\n")
    with Ledger.open() as led, bind(run_id="run-1"):
        led.append({"event_type": "run", "op": "started", "attrs": {"project": "demo"}})
        with bind(task_name="clean"):
            led.append({"event_type": "task", "op": "started"})
            store = build_artifact_store("store")
            raw = store.put("raw.txt", "runs/run-1/raw.txt")
            clean = store.put("clean.txt", "runs/run-1/clean.txt")
            led.append(
                {
                    "event_type": "artifact",
                    "op": "recorded",
                    "artifact_name": "clean.txt",
                    "location": clean.uri,
                    "digest": clean.digest,
                    "inputs": [raw.digest],
                }
            )
            square(3)
            led.append({"event_type": "task", "op": "finished", "duration_s": 0.5})
        led.finish_run("run-1")
    assert raw.digest and clean.digest
    return {"raw": raw.digest, "clean": clean.digest}


#: Every command that prints rows, as run against ``populated`` (the arguments after ``scalable``).
ROW_COMMANDS: dict[str, list[str]] = {
    "ledger runs": ["ledger", "runs"],
    "ledger query": ["ledger", "query", "SELECT run_id, digest FROM artifacts WHERE digest IS NOT NULL"],
    "ledger tail": ["ledger", "tail"],
    "ledger lineage": ["ledger", "lineage", "run-1", "--down"],
    "ledger replay": ["ledger", "replay", "run-1"],
    "ledger replay --into": ["ledger", "replay", "run-1", "--into", "restored"],
    "ledger export": ["ledger", "export", "--sqlite", "out.db"],
    "ledger compact": ["ledger", "compact"],
    "cache stats": ["cache", "stats"],
    "artifacts ls": ["artifacts", "ls", "store"],
    "artifacts put": ["artifacts", "put", "raw.txt", "store/again.txt"],
    "manifest check": ["manifest", "check", "scalable.yaml"],
}


def parse(result: Result, fmt: str) -> list[dict[str, Any]]:
    """The rows a command printed in ``fmt`` (checking the format's shape on the way).

    ``lineage --format json`` is its graph document (nodes and edges); its rows are the edges.
    """
    assert result.exit_code == 0, result.output
    out = result.stdout
    if fmt == "json" and out.startswith("{"):
        edges = json.loads(out)["edges"]
        assert isinstance(edges, list)
        return edges
    if fmt == "json":
        rows = json.loads(out)
        assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
        return rows
    if fmt == "jsonl":
        return [json.loads(line) for line in out.splitlines()]
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(out))
        rows = list(reader)
        assert reader.fieldnames and all(None not in r for r in rows)
        assert out.splitlines().count(",".join(reader.fieldnames)) == 1  # one header, one table
        return rows
    lines = out.splitlines()
    assert set(lines[1].replace(" ", "")) == {"-"}, out  # header, then a rule
    return [{"line": line} for line in lines[2:]]


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "jsonl"])
@pytest.mark.parametrize("command", list(ROW_COMMANDS))
def test_every_row_command_takes_every_format(
    command: str, fmt: str, populated: dict[str, Any], cli: CliInvoker
) -> None:
    """Each command that prints rows prints them in table, csv, json (an array of objects) and jsonl."""
    if command == "manifest check":
        Path("scalable.yaml").write_text("version: 1\nproject:\n  name: demo\n")
    rows = parse(cli(*ROW_COMMANDS[command], "--format", fmt), fmt)
    assert rows, f"{command} printed no rows"


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
@pytest.mark.parametrize("command", ["ledger query", "ledger lineage", "artifacts ls", "artifacts put", "ledger show"])
def test_machine_formats_keep_whole_digests(command: str, fmt: str, populated: dict[str, Any], cli: CliInvoker) -> None:
    """csv, json and jsonl print every digest in its 64 characters; tables cut them to 16."""
    args = ["ledger", "show", "run-1"] if command == "ledger show" else ROW_COMMANDS[command]
    result = cli(*args, "--format", fmt)
    assert result.exit_code == 0, result.output
    found = set(DIGEST.findall(result.stdout))
    assert found & {populated["raw"], populated["clean"]}, result.stdout
    table = cli(*args, "--format", "table").stdout
    assert not DIGEST.search(table)
    assert populated["raw"][:16] in table or populated["clean"][:16] in table


def test_show_json_is_one_object_with_whole_digests(populated: dict[str, Any], cli: CliInvoker) -> None:
    """show --format json: {"run", "tasks", "artifacts", "verifications"}, every digest whole."""
    doc = json.loads(cli("ledger", "show", "run-1", "--format", "json").stdout)
    assert set(doc) == {"run", "tasks", "artifacts", "verifications"}
    assert doc["verifications"] == []  # never run again
    assert doc["run"]["run_id"] == "run-1"
    assert [t["task_name"] for t in doc["tasks"]] == ["clean"]
    assert {a["digest"] for a in doc["artifacts"]} == {populated["raw"], populated["clean"]}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_show_csv_and_jsonl_are_one_table_with_a_section_column(
    fmt: str, populated: dict[str, Any], cli: CliInvoker
) -> None:
    """show in csv or jsonl writes one table: a row per run, task and artifact, the section first."""
    rows = parse(cli("ledger", "show", "run-1", "--format", fmt), fmt)
    assert [r["section"] for r in rows] == ["run", "task", "artifact", "artifact", "artifact"]
    if fmt == "csv":
        header = cli("ledger", "show", "run-1", "--format", "csv").stdout.splitlines()[0].split(",")
        assert header[0] == "section" and {"run_id", "task_name", "digest", "location"} <= set(header)
    assert {r["digest"] for r in rows if r["section"] == "artifact"} == {populated["raw"], populated["clean"]}


def test_artifacts_ls_shows_size_and_digest(populated: dict[str, Any], cli: CliInvoker) -> None:
    """ls lists each file's key, size in bytes, recorded digest and URI."""
    rows = json.loads(cli("artifacts", "ls", "store", "--format", "json").stdout)
    by_key = {r["key"]: r for r in rows}
    assert by_key["runs/run-1/raw.txt"]["size_bytes"] == len("raw data\n")
    assert by_key["runs/run-1/raw.txt"]["digest"] == populated["raw"]
    assert by_key["runs/run-1/clean.txt"]["digest"] == populated["clean"]
    assert set(rows[0]) == {"key", "size_bytes", "digest", "uri"}


def test_artifacts_ls_lists_the_digest_of_each_file_of_a_directory(isolated: Path, cli: CliInvoker) -> None:
    """A directory put lists its files one by one, each with the digest its directory recorded."""
    import hashlib

    Path("tree/sub").mkdir(parents=True)
    Path("tree/a.txt").write_text("a")
    Path("tree/sub/b.txt").write_text("bb")
    assert cli("artifacts", "put", "tree", "store/tree").exit_code == 0
    rows = json.loads(cli("artifacts", "ls", "store", "--format", "json").stdout)
    assert [(r["key"], r["size_bytes"], r["digest"]) for r in rows] == [
        ("tree/a.txt", 1, hashlib.sha256(b"a").hexdigest()),
        ("tree/sub/b.txt", 2, hashlib.sha256(b"bb").hexdigest()),
    ]


# --- audit --------------------------------------------------------------------------------------


def corrupt(n: int) -> None:
    """Change the bytes of ``n`` stored artifacts of ``populated``."""
    for path in sorted(Path("store").rglob("*.txt"))[:n]:
        path.write_text("changed\n")


def test_audit_prints_a_per_kind_summary(populated: dict[str, Any], cli: CliInvoker) -> None:
    """A failed audit lists its problems, then counts them by kind, and exits 1."""
    corrupt(2)
    result = cli("ledger", "audit")
    assert result.exit_code == 1
    last = result.stdout.splitlines()[-1]
    assert last.startswith("audit FAILED: 2 problem(s) (2 content-changed);"), last
    doc = json.loads(cli("ledger", "audit", "--format", "json").stdout)
    assert doc["by_kind"] == {"content-changed": 2} and doc["problems_total"] == 2


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "jsonl"])
def test_audit_limit_lists_at_most_n_problems(fmt: str, populated: dict[str, Any], cli: CliInvoker) -> None:
    """--limit N lists N problems in every format and says how many more there are."""
    corrupt(2)
    result = cli("ledger", "audit", "--limit", "1", "--format", fmt)
    assert result.exit_code == 1
    if fmt == "json":
        doc = json.loads(result.stdout)
        assert len(doc["problems"]) == 1 and doc["problems_total"] == 2
        return
    if fmt == "table":
        lines = result.stdout.splitlines()
        assert sum("content-changed  " in line for line in lines) == 1
        assert "1 more problem(s) not listed (--limit 1)" in result.stdout
        return
    rows = (
        list(csv.DictReader(io.StringIO(result.stdout)))
        if fmt == "csv"
        else [json.loads(line) for line in result.stdout.splitlines()]
    )
    assert len(rows) == 1 and rows[0]["kind"] == "content-changed"
    assert DIGEST.fullmatch(rows[0]["expected"]) and DIGEST.fullmatch(rows[0]["found"])
    assert "1 more problem(s) not listed" in result.stderr and "audit FAILED: 2 problem(s)" in result.stderr


def test_audit_progress_goes_to_stderr_with_progress(populated: dict[str, Any], cli: CliInvoker) -> None:
    """--progress reports each phase on stderr (stdout keeps the data clean); without it, off a terminal, nothing."""
    result = cli("ledger", "audit", "--progress", "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["ok"] is True
    assert "auditing streams (bytes):   0%" in result.stderr
    assert "auditing streams (bytes): 100%" in result.stderr
    assert "hashing artifacts: 100% (2/2)" in result.stderr
    quiet = cli("ledger", "audit", "--format", "json")
    assert quiet.stderr == ""


def test_export_progress_goes_to_stderr_with_progress(populated: dict[str, Any], cli: CliInvoker) -> None:
    """export --progress reports each export's progress on stderr; its rows go to stdout."""
    result = cli("ledger", "export", "--sqlite", "out.db", "--prov", "out.json", "--progress", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [r["format"] for r in json.loads(result.stdout)] == ["sqlite", "prov"]
    assert "export sqlite:   0%" in result.stderr and "export sqlite: 100%" in result.stderr
    assert "export prov: 100% (3/3)" in result.stderr


# --- messages name commands ---------------------------------------------------------------------

#: Error messages that may name a Python call: they come from misusing the API, never from a command.
API_ONLY = {
    "scalable/ledger/log.py": ["Ledger.open()"],
    "scalable/cache/types.py": ["digest() or __hash__()"],
}
CALL = re.compile(r"\b[A-Za-z_]\w*\(\)|\b(?:Ledger|ScalableSession|Cache|Settings)\.[a-z_]\w*")


def test_error_messages_name_commands_not_python_calls() -> None:
    """No error a command can raise names a Python method; the few API-only ones are listed here."""
    found = []
    for path in sorted((ROOT / "scalable").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            text = "".join(
                n.value for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            )
            for call in CALL.findall(text):
                if not any(call in allowed for allowed in API_ONLY.get(rel, [])):
                    found.append(f"{rel}:{node.lineno}: {call}")
    assert found == []


def test_a_missing_key_names_the_ls_command(isolated: Path, cli: CliInvoker) -> None:
    """get of a key that is not stored tells the user which command lists the keys."""
    Path("f.txt").write_text("x")
    cli("artifacts", "put", "f.txt", "store/f.txt")
    result = cli("artifacts", "get", "store/nope", "out")
    assert result.exit_code == 2
    assert f"list the stored keys with: scalable artifacts ls {(isolated / 'store').as_uri()}/" in result.stderr


def test_the_cli_reference_maps_commands_to_the_api() -> None:
    """docs/cli.rst says what each exit code means and which API call each command makes."""
    page = (ROOT / "docs" / "cli.rst").read_text()
    for text in ("1: a check ran and failed", "2: could not do what was asked", "Ledger.audit", "list_refs"):
        assert text in page


def test_compact_progress_goes_to_stderr_with_progress(populated: dict[str, Any], cli: CliInvoker) -> None:
    """compact --progress reports the batches compacted on stderr; its summary row goes to stdout."""
    result = cli("ledger", "compact", "--progress", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["events_written"] > 0
    assert "compacting (batches): 100% (1/1)" in result.stderr
