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


def test_store_edges_exit_2_with_one_line(cli: CliInvoker, isolated: Path) -> None:
    """An empty local path, a put inside a directory artifact, a file where a directory is: exit 2, one line, no change."""
    _tree(isolated / "tree")
    Path("f").write_text("x")
    assert cli("artifacts", "put", "tree", "store/e").exit_code == 0
    cases = [
        (("artifacts", "put", "", "store/k"), "path is empty"),
        (("artifacts", "get", "store/e", ""), "path is empty"),
        (("artifacts", "put", "f", "store/e/x", "--root", "store"), "inside the directory artifact"),
        (("artifacts", "put", "f", "store/e"), "a directory is stored there"),
        (("artifacts", "put", "f", "store/.scalable-tmp-0123456789ab"), "reserved"),
    ]
    for args, needle in cases:
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert result.stderr.startswith("error: ") and needle in result.stderr
    assert cli("artifacts", "get", "store/e", "back", "--verify").exit_code == 0
    assert sorted(p.relative_to("back").as_posix() for p in Path("back").rglob("*") if p.is_file()) == [
        "a.txt",
        "sub/b.txt",
    ]


def test_file_uris_with_escapes_name_the_decoded_paths(cli: CliInvoker, isolated: Path) -> None:
    """A percent-encoded file:// URI in put/get/ls/exists names the decoded path (a space, '#', '%')."""
    from scalable.uris import path_to_uri

    Path("f").write_text("x")
    store = isolated / "My Store #1 %20"
    uri = path_to_uri(store / "a b#c.txt")
    put = cli("artifacts", "put", "f", uri, "--format", "json")
    assert put.exit_code == 0, put.output
    assert json.loads(put.stdout)[0]["uri"] == uri
    assert (store / "a b#c.txt").read_text() == "x"
    assert cli("artifacts", "exists", uri).exit_code == 0
    listed = cli("artifacts", "ls", path_to_uri(store), "--format", "json")
    assert [r["key"] for r in json.loads(listed.stdout)] == ["a b#c.txt"]
    assert cli("artifacts", "get", uri, "back.txt", "--verify").exit_code == 0
    assert Path("back.txt").read_text() == "x"
