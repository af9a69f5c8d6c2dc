"""Reading commands pointed at a place with nothing there say so and exit 2, and create nothing.

A monitoring job that runs ``scalable ledger audit`` against a mistyped directory must fail,
not pass forever; a filter naming a run or function that does not exist must say so.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import Result

from scalable import cacheable
from scalable.ledger import bus
from scalable.ledger.log import Ledger
from tests.conftest import CliInvoker, forget_object_store_clients

#: Every reading command of the ledger group (compact and sync read the streams too).
LEDGER_READERS: dict[str, list[str]] = {
    "query": ["query", "SELECT 1 AS one"],
    "tail": ["tail"],
    "runs": ["runs"],
    "show": ["show", "run-1"],
    "lineage": ["lineage", "run-1"],
    "audit": ["audit"],
    "export": ["export", "--sqlite", "out.db"],
    "replay": ["replay", "run-1"],
    "compact": ["compact"],
    "sync": ["sync"],
}


def tree(root: Path) -> list[str]:
    """Every path under ``root``, relative and sorted (to see that nothing was created)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def assert_said_so(result: Result, *words: str) -> None:
    """Exit 2 with one ``error:`` line on stderr holding ``words``; nothing on stdout."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert result.stdout == ""


def one_run(runs_dir: Path | None = None) -> None:
    """A ledger with one finished run, ``run-1``."""
    with Ledger.open(runs_dir) as led:
        led.append({"event_type": "run", "op": "started", "run_id": "run-1"})
        led.finish_run("run-1")


@pytest.mark.parametrize("command", list(LEDGER_READERS))
def test_no_ledger_here_is_exit_2_and_creates_nothing(command: str, cli: CliInvoker, isolated: Path) -> None:
    """In a directory with no ledger, every ledger command says there is none and leaves the directory as it was."""
    result = cli("ledger", *LEDGER_READERS[command])
    assert_said_so(result, "no ledger here", str(isolated / ".scalable" / "runs"))
    assert tree(isolated) == []


@pytest.mark.parametrize("command", list(LEDGER_READERS))
def test_a_missing_runs_dir_is_exit_2_whichever_way_it_is_given(
    command: str, cli: CliInvoker, isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCALABLE_RUNS_DIR or --runs-dir naming a missing directory exits 2 naming it, even beside a real ledger."""
    one_run()  # a ledger at the default place must not be read instead
    before = tree(isolated)
    missing = tmp_path / "nonexistent" / "runs"
    given = cli("ledger", "--runs-dir", str(missing), *LEDGER_READERS[command])
    assert_said_so(given, "no ledger at", str(missing), "does not exist")
    monkeypatch.setenv("SCALABLE_RUNS_DIR", str(missing))
    bus.reset_default()
    from_env = cli("ledger", *LEDGER_READERS[command])
    assert_said_so(from_env, "no ledger at", str(missing), "SCALABLE_RUNS_DIR")
    assert not missing.parent.exists()
    assert tree(isolated) == before


@pytest.mark.parametrize("command", list(LEDGER_READERS))
def test_a_missing_ledger_dir_without_a_runs_dir_is_exit_2(
    command: str, cli: CliInvoker, isolated: Path, tmp_path: Path
) -> None:
    """A compacted-ledger directory that was given but does not exist, with no runs directory either, exits 2."""
    missing = tmp_path / "no-ledger-here"
    result = cli("ledger", "--ledger-dir", str(missing), *LEDGER_READERS[command])
    assert_said_so(result, str(missing) if command != "compact" else "no ledger here", "does not exist")
    assert not missing.exists() and tree(isolated) == []


def test_a_ledger_not_compacted_yet_is_read_from_its_streams(cli: CliInvoker, isolated: Path, tmp_path: Path) -> None:
    """With the runs directory there, a ledger directory that does not exist yet is no error: nothing was compacted."""
    one_run()
    missing = tmp_path / "not-compacted-yet"
    result = cli("ledger", "--ledger-dir", str(missing), "runs", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [r["run_id"] for r in json.loads(result.stdout)] == ["run-1"]
    assert not missing.exists()


def test_compact_makes_a_given_ledger_dir(cli: CliInvoker, isolated: Path, tmp_path: Path) -> None:
    """compact creates the compacted-ledger directory it is given: the first compaction starts it."""
    one_run()
    target = tmp_path / "new-ledger"
    result = cli("ledger", "--ledger-dir", str(target), "compact", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["events_written"] == 2
    assert target.is_dir()


def test_audit_of_an_empty_existing_ledger_is_ok_with_zero_runs(cli: CliInvoker, isolated: Path) -> None:
    """An empty runs directory that exists is a ledger with no runs: audit says 0 runs and exits 0."""
    (isolated / ".scalable" / "runs").mkdir(parents=True)
    result = cli("ledger", "audit")
    assert result.exit_code == 0, result.output
    assert "audit ok: 0 run(s)" in result.stdout
    runs = cli("ledger", "runs", "--format", "json")
    assert runs.exit_code == 0 and json.loads(runs.stdout) == []


@pytest.mark.parametrize(
    "args",
    [
        ["compact", "--run", "run-nonexistent"],
        ["show", "run-nonexistent"],
        ["replay", "run-nonexistent"],
        ["audit", "run-nonexistent"],
        ["tail", "--run", "run-nonexistent"],
        ["lineage", "run-nonexistent"],
    ],
    ids=lambda args: args[0],
)
def test_a_run_filter_matching_nothing_is_exit_2(args: list[str], cli: CliInvoker, isolated: Path) -> None:
    """A run that is not in the ledger is named in one line, exit 2, whatever the command."""
    one_run()
    result = cli("ledger", *args)
    assert_said_so(result, "run-nonexistent")


def test_compact_of_a_known_run_still_works(cli: CliInvoker, isolated: Path) -> None:
    """compact --run with a run the ledger holds compacts it (the check refuses only unknown runs)."""
    one_run()
    result = cli("ledger", "compact", "--run", "run-1", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["events_written"] == 2


@pytest.mark.parametrize("command", list(LEDGER_READERS))
def test_a_bad_remote_ledger_is_exit_2_not_local_runs_only(
    command: str, cli: CliInvoker, isolated: Path, s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SCALABLE_RUNS_DIR_REMOTE on a missing bucket, no command quietly answers from the local runs."""
    one_run()
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("SCALABLE_RUNS_DIR_REMOTE", f"s3://{bucket}/ledger/")
    forget_object_store_clients()
    bus.reset_default()
    result = cli("ledger", *LEDGER_READERS[command])
    assert_said_so(result, f"s3://{bucket}/ledger/", "does not exist")


# --- artifacts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["ls", "missing"], ["ls", "missing/"], ["exists", "missing/key"], ["get", "missing/key", "out"]],
    ids=" ".join,
)
def test_a_missing_local_store_is_exit_2(args: list[str], cli: CliInvoker, isolated: Path) -> None:
    """ls, exists and get of a store directory that does not exist exit 2 naming it, creating nothing."""
    result = cli("artifacts", *args)
    assert_said_so(result, str(isolated / "missing"))
    assert tree(isolated) == []


@pytest.mark.parametrize("args", [["ls"], ["exists"], ["get"]], ids=lambda args: args[0])
def test_a_missing_bucket_is_exit_2(args: list[str], cli: CliInvoker, isolated: Path, s3_server: str) -> None:
    """ls, exists and get in a bucket that does not exist exit 2 naming the bucket, never '(no rows)' or exit 1."""
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    target = {"ls": f"s3://{bucket}/", "exists": f"s3://{bucket}/key", "get": f"s3://{bucket}/key"}[args[0]]
    result = cli("artifacts", *args, target, *(["out"] if args[0] == "get" else []))
    assert_said_so(result, f"'{bucket}' does not exist")


def test_an_empty_prefix_of_a_bucket_and_a_prefix_filter_matching_nothing_are_exit_2(
    cli: CliInvoker, isolated: Path, s3_bucket: tuple[str, object]
) -> None:
    """ls of a prefix holding nothing, or --prefix matching no key, says so; an empty bucket lists no rows."""
    bucket = s3_bucket[0]
    empty = cli("artifacts", "ls", f"s3://{bucket}/")
    assert empty.exit_code == 0 and "(no rows)" in empty.stdout
    assert_said_so(cli("artifacts", "ls", f"s3://{bucket}/nothing/here/"), f"s3://{bucket}/nothing/here/")
    Path("f.txt").write_text("x")
    assert cli("artifacts", "put", "f.txt", f"s3://{bucket}/f.txt").exit_code == 0
    assert_said_so(cli("artifacts", "ls", f"s3://{bucket}/", "--prefix", "zz"), "'zz'")
    Path("store").mkdir()
    local = cli("artifacts", "ls", "store")
    assert local.exit_code == 0 and "(no rows)" in local.stdout
    assert_said_so(cli("artifacts", "ls", "store", "--prefix", "zz"), "'zz'")


def test_exists_tells_a_missing_key_from_a_missing_store(cli: CliInvoker, isolated: Path) -> None:
    """exists: 0 stored, 1 not stored in an existing store, 2 no store at all."""
    Path("f.txt").write_text("x")
    assert cli("artifacts", "put", "f.txt", "store/f.txt").exit_code == 0
    assert cli("artifacts", "exists", "store/f.txt").exit_code == 0
    assert cli("artifacts", "exists", "store/nope").exit_code == 1
    assert cli("artifacts", "exists", "nostore/nope").exit_code == 2


# --- cache --------------------------------------------------------------------------------------


@cacheable
def halve(x: int) -> float:
    """Half of ``x``."""
    return x / 2


@pytest.mark.parametrize("args", [["stats"], ["clear"], ["clear", "--function", "x.y"]], ids=" ".join)
def test_no_cache_here_is_exit_2_and_creates_nothing(args: list[str], cli: CliInvoker, isolated: Path) -> None:
    """cache stats and clear where nothing was cached say so and create no .scalable directory."""
    result = cli("cache", *args)
    assert_said_so(result, "no cache at", str(isolated / ".scalable" / "cache"))
    assert tree(isolated) == []


def test_a_missing_cache_dir_setting_is_exit_2(
    cli: CliInvoker, isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCALABLE_CACHE_DIR naming a directory that does not exist: stats says so and creates it not."""
    missing = tmp_path / "no-cache"
    monkeypatch.setenv("SCALABLE_CACHE_DIR", str(missing))
    bus.reset_default()
    assert_said_so(cli("cache", "stats"), str(missing))
    assert not missing.exists()


def test_clear_of_an_unknown_function_is_exit_2_and_keeps_the_rest(cli: CliInvoker, isolated: Path) -> None:
    """clear --function with a function that has no entries says so, exit 2, and removes nothing."""
    halve(4)
    result = cli("cache", "clear", "--function", "no.such.function")
    assert_said_so(result, "'no.such.function'", "scalable cache stats")
    stats = json.loads(cli("cache", "stats", "--format", "json").stdout)
    assert [(r["function"], r["entries"]) for r in stats] == [(f"{__name__}.halve", 1)]
    cleared = cli("cache", "clear", "--function", f"{__name__}.halve", "--format", "json")
    assert cleared.exit_code == 0 and json.loads(cleared.stdout) == [{"tier": "local", "removed": 1}]
