"""``scalable artifacts put|get|ls|exists``: the CLI over the artifact stores."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.conftest import CliInvoker


def _tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.txt").write_text("beta")


def test_put_file_prints_uri_and_digest(cli: CliInvoker, isolated: Path) -> None:
    """put stores a file at STORE/KEY and prints its URI, kind, size and digest."""
    Path("out.csv").write_text("a,b\n")
    result = cli("artifacts", "put", "out.csv", "store/out.csv", "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert row["uri"] == (isolated / "store" / "out.csv").as_uri()
    assert row["digest"] == hashlib.sha256(b"a,b\n").hexdigest()
    assert (row["kind"], row["size_bytes"]) == ("file", 4)
    assert (isolated / "store" / "out.csv").read_text() == "a,b\n"


def test_put_with_root_keeps_nested_key(cli: CliInvoker, isolated: Path) -> None:
    """With --root, the key is what follows the root and may contain '/'."""
    _tree(Path("model"))
    result = cli("artifacts", "put", "model", "store/runs/r1/model", "--root", "store")
    assert result.exit_code == 0, result.output
    ls = cli("artifacts", "ls", "store", "--format", "jsonl")
    assert [json.loads(line)["key"] for line in ls.stdout.splitlines()] == [
        "runs/r1/model/a.txt",
        "runs/r1/model/sub/b.txt",
    ]


def test_get_round_trips_a_directory(cli: CliInvoker, isolated: Path) -> None:
    """get --verify writes a stored directory back and prints the local path."""
    _tree(Path("model"))
    assert cli("artifacts", "put", "model", "store/model").exit_code == 0
    result = cli("artifacts", "get", "store/model", "restored", "--verify")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "restored"
    assert Path("restored/sub/b.txt").read_text() == "beta"


def test_ls_formats(cli: CliInvoker, isolated: Path) -> None:
    """ls lists keys recursively in table, csv and json, with --prefix filtering."""
    _tree(Path("model"))
    cli("artifacts", "put", "model", "store/model")
    table = cli("artifacts", "ls", "store")
    assert "model/a.txt" in table.stdout and "model/sub/b.txt" in table.stdout
    csv = cli("artifacts", "ls", "store", "--format", "csv", "--prefix", "model/sub/")
    assert csv.stdout.splitlines()[0] == "key,size_bytes,digest,uri"
    assert csv.stdout.splitlines()[1].startswith("model/sub/b.txt,")
    rows: list[dict[str, Any]] = json.loads(cli("artifacts", "ls", "store", "--format", "json").stdout)
    assert [r["key"] for r in rows] == ["model/a.txt", "model/sub/b.txt"]


def test_exists_exit_codes(cli: CliInvoker, isolated: Path) -> None:
    """exists exits 0 for a stored key and 1 for a missing one."""
    Path("f").write_text("x")
    cli("artifacts", "put", "f", "store/f")
    assert cli("artifacts", "exists", "store/f").exit_code == 0
    assert cli("artifacts", "exists", "store/nope").exit_code == 1


def test_bad_inputs_exit_2_with_one_line(cli: CliInvoker, isolated: Path) -> None:
    """A missing source, a missing key, an unknown scheme or a URI without key exit 2 with one stderr line."""
    Path("f").write_text("x")
    cases = [
        (("artifacts", "put", "missing.txt", "store/k"), "missing.txt"),
        (("artifacts", "get", "store/none", "out"), "none"),
        (("artifacts", "put", "f", "nosuch://b/k"), "nosuch"),
        (("artifacts", "put", "f", "s3://bucket"), "s3://bucket"),
        (("artifacts", "put", "f", "store/k", "--root", "elsewhere"), "elsewhere"),
    ]
    for args, needle in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith("error: ") and needle in result.stderr


def test_corrupted_get_verify_exits_1(cli: CliInvoker, isolated: Path) -> None:
    """get --verify of bytes changed after put is a failed check: exit 1, nothing written."""
    Path("f").write_text("original")
    cli("artifacts", "put", "f", "store/f")
    (isolated / "store" / "f").write_text("tampered")
    result = cli("artifacts", "get", "store/f", "out", "--verify")
    assert result.exit_code == 1
    assert "store/f" in result.stderr
    assert not Path("out").exists()


def test_put_records_an_event(cli: CliInvoker, isolated: Path) -> None:
    """A CLI put lands one artifact/put event in the ledger."""
    Path("f").write_text("x")
    cli("artifacts", "put", "f", "store/f")
    from scalable.ledger import bus

    bus.reset_default()
    streams = list((isolated / ".scalable" / "runs").glob("*/artifacts.jsonl"))
    events = [json.loads(line) for s in streams for line in s.read_text().splitlines()]
    puts = [e for e in events if e["event_type"] == "artifact" and e["op"] == "put"]
    assert len(puts) == 1
    assert puts[0]["key"] == "f"
