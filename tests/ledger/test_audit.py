"""Audits catch every kind of tampering with a stream, and pass on a clean ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalable.errors import RunSealedError
from scalable.ledger import bind
from scalable.ledger.log import Ledger
from scalable.settings import load_settings
from tests.conftest import CliInvoker
from tests.helpers import run_python
from tests.ledger.chains import crafted_lines


def _sealed_run(ledger: Ledger, run_id: str = "run-a", n: int = 6) -> Path:
    run_python(f"""
        from scalable.ledger.log import Ledger
        led = Ledger.open({str(ledger.runs_dir)!r})
        led.append({{"event_type": "artifact", "op": "put", "run_id": {run_id!r}, "artifact_name": "from-child"}})
        led.close()
    """)
    with bind(run_id=run_id):
        for i in range(n):
            ledger.append({"event_type": "artifact", "op": "put", "artifact_name": f"f{i}", "size_bytes": i})
    ledger.finish_run(run_id, "completed")
    return ledger.stream_path(run_id)


def _kinds(ledger: Ledger, run_id: str = "run-a") -> set[str]:
    return {p.kind for p in ledger.audit(run_id, content=False).problems}


def test_a_clean_ledger_passes(ledger: Ledger, cli: CliInvoker) -> None:
    """A sealed run written by two processes audits clean, and the CLI exits 0."""
    _sealed_run(ledger)
    report = ledger.audit(content=False)
    assert report.ok and report.runs == 1 and report.events == 8
    result = cli("ledger", "audit", "--no-content")
    assert result.exit_code == 0 and "audit ok" in result.stdout


def _rewrite(path: Path, edit: object) -> None:
    lines = path.read_bytes().split(b"\n")[:-1]
    lines = edit(lines)  # type: ignore[operator]
    path.write_bytes(b"\n".join(lines) + b"\n")


def test_an_edited_line_is_caught(ledger: Ledger) -> None:
    """Changing a value in a line breaks the next line's prev."""
    path = _sealed_run(ledger)
    _rewrite(path, lambda ls: [ls[0], ls[1].replace(b'"size_bytes":0', b'"size_bytes":9'), *ls[2:]])
    assert "chain-broken" in _kinds(ledger)


def test_an_edited_last_line_of_a_writer_is_caught_by_the_seal(ledger: Ledger) -> None:
    """Editing a writer's final line is caught by the seal head."""
    path = _sealed_run(ledger)
    child = next(i for i, line in enumerate(path.read_bytes().split(b"\n")) if b"from-child" in line)
    _rewrite(path, lambda ls: [*ls[:child], ls[child].replace(b"from-child", b"from-chilD"), *ls[child + 1 :]])
    assert "seal-mismatch" in _kinds(ledger)


def test_a_removed_line_is_caught(ledger: Ledger) -> None:
    """Deleting a line leaves a sequence gap."""
    path = _sealed_run(ledger)
    _rewrite(path, lambda ls: [*ls[:3], *ls[4:]])
    assert "seq-gap" in _kinds(ledger)


def test_two_swapped_lines_are_caught(ledger: Ledger) -> None:
    """Swapping two lines of one writer puts its sequence out of order."""
    path = _sealed_run(ledger)
    _rewrite(path, lambda ls: [*ls[:3], ls[4], ls[3], *ls[5:]])
    assert _kinds(ledger) & {"seq-gap", "seq-order"}


def test_a_line_appended_after_the_seal_is_caught(ledger: Ledger) -> None:
    """A line another program forced in after run/finished (the ledger itself refuses to) is reported as after-seal."""
    path = _sealed_run(ledger)
    with pytest.raises(RunSealedError):
        ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-a", "artifact_name": "late"})
    assert _kinds(ledger) == set()
    with path.open("ab") as stray:
        stray.write(crafted_lines("run-a", 1)[0])
    assert _kinds(ledger) == {"after-seal"}


def test_a_verdict_appended_after_the_seal_is_no_tampering_but_an_edit_of_it_is(ledger: Ledger) -> None:
    """run/verified (a rerun's verdict) may follow the seal, from streams and from rows; editing it breaks its chain."""
    _sealed_run(ledger)
    for verdict in ("identical", "differs"):
        ledger.append({"event_type": "run", "op": "verified", "run_id": "run-a", "attrs": {"verdict": verdict}})
    assert ledger.audit("run-a", content=False).ok
    ledger.compact(keep_jsonl=False)
    report = ledger.audit("run-a", content=False)
    assert report.ok, [str(p) for p in report.problems]
    _sealed_run(ledger, "run-b")
    ledger.append({"event_type": "run", "op": "verified", "run_id": "run-b", "attrs": {"verdict": "differs"}})
    ledger.append({"event_type": "run", "op": "verified", "run_id": "run-b", "attrs": {"verdict": "differs"}})
    other = ledger.stream_path("run-b")
    lines = other.read_bytes().split(b"\n")
    first = next(i for i, line in enumerate(lines) if b'"differs' in line)
    _rewrite(other, lambda ls: [*ls[:first], ls[first].replace(b"differs", b"identic"), *ls[first + 1 :]])
    assert "chain-broken" in {p.kind for p in ledger.audit("run-b", content=False).problems}


def test_a_truncated_stream_is_caught(ledger: Ledger) -> None:
    """Cutting the stream short (losing the tail and the seal's writer lines) is caught."""
    path = _sealed_run(ledger)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    assert "truncated" in _kinds(ledger)
    # Cut at a line boundary, seal and all: run.json still remembers the sealed length.
    path.write_bytes(b"".join(data.splitlines(keepends=True)[:4]))
    problems = ledger.audit("run-a", content=False).problems
    assert [p.kind for p in problems] == ["truncated"]
    assert "bytes" in problems[0].message


def test_a_rewritten_chain_is_caught_only_with_a_ledger_key(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An editor who recomputes every hash and the seal still fails the audit when the seal is an HMAC."""
    import hashlib

    monkeypatch.setenv("SCALABLE_LEDGER_KEY", "k3y")
    ledger = Ledger.open()
    with bind(run_id="run-k"):
        for i in range(3):
            ledger.append({"event_type": "artifact", "op": "put", "artifact_name": f"f{i}"})
    ledger.finish_run("run-k")
    path = ledger.stream_path("run-k")
    assert ledger.audit("run-k", content=False).ok
    # Forge: edit the first line and recompute every prev, the seal's heads, its digest of the
    # stream before it and of its own line, and run.json; only the HMAC cannot be recomputed.
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    records[0]["artifact_name"] = "forged"
    prev = "0" * 64
    lines: list[bytes] = []
    for rec in records:
        rec["prev"] = prev
        if rec["op"] == "finished":
            attrs = json.loads(rec["attrs"])
            seal = attrs["seal"]
            mac = seal["hmac"]
            seal.update(heads={rec["writer"]: {"seq": rec["seq"] - 1, "head": prev}}, line="0" * 64, hmac="0" * 64)
            seal["stream"] = hashlib.sha256(b"".join(line + b"\n" for line in lines)).hexdigest()
            rec["attrs"] = json.dumps(attrs, separators=(",", ":"))
            blank = json.dumps(rec, separators=(",", ":"))
            seal.update(line=hashlib.sha256(blank.encode()).hexdigest(), hmac=mac)
            rec["attrs"] = json.dumps(attrs, separators=(",", ":"))
        line = json.dumps(rec, separators=(",", ":")).encode()
        lines.append(line)
        prev = hashlib.sha256(line).hexdigest()
    path.write_bytes(b"\n".join(lines) + b"\n")
    ledger.rebuild_summaries(["run-k"])
    unkeyed = Ledger(load_settings(env={}))
    assert unkeyed.audit("run-k", content=False).ok  # without the key the forgery is consistent
    assert {p.kind for p in ledger.audit("run-k", content=False).problems} == {"seal-forged"}


def test_audit_reports_name_file_and_line_and_the_cli_exits_1(ledger: Ledger, cli: CliInvoker) -> None:
    """Each problem names its run and file:line; the CLI lists them and exits 1, json too."""
    path = _sealed_run(ledger)
    with path.open("ab") as fh:
        fh.write(b"garbage\n")
    report = ledger.audit("run-a", content=False)
    problem = next(p for p in report.problems if p.kind == "malformed-line")
    assert problem.where == f"{path}:9" and problem.run_id == "run-a"
    result = cli("ledger", "audit", "run-a", "--no-content")
    assert result.exit_code == 1 and "malformed-line" in result.stdout and "FAILED" in result.stdout
    doc = json.loads(cli("ledger", "audit", "--no-content", "--format", "json").stdout)
    assert doc["ok"] is False and doc["problems"]
    assert cli("ledger", "audit", "run-none").exit_code == 2


def test_content_audit_catches_a_changed_and_a_deleted_local_file(ledger: Ledger, isolated: Path) -> None:
    """With content on, a recorded file whose bytes changed or vanished is a problem; intact ones pass."""
    import hashlib

    files = {}
    for name in ("keep.txt", "change.txt", "delete.txt"):
        p = isolated / name
        p.write_text(name)
        files[name] = p
        with bind(run_id="run-c"):
            ledger.append(
                {
                    "event_type": "artifact",
                    "op": "recorded",
                    "location": p.as_uri(),
                    "digest": hashlib.sha256(p.read_bytes()).hexdigest(),
                }
            )
    assert ledger.audit("run-c").ok
    files["change.txt"].write_text("changed!")
    files["delete.txt"].unlink()
    report = ledger.audit("run-c")
    found = {(p.kind, p.where) for p in report.problems}
    assert found == {
        ("content-changed", files["change.txt"].as_uri()),
        ("content-missing", files["delete.txt"].as_uri()),
    }
    assert report.artifacts == 3


def test_replay_restores_stored_artifacts_bit_identical_and_refuses_corrupt_ones(
    ledger: Ledger, isolated: Path, cli: CliInvoker
) -> None:
    """Replaying a run into an empty directory restores each put artifact by key, verified by digest."""
    import hashlib

    store = isolated / "store"
    (store / "runs/r/tree/sub").mkdir(parents=True)
    (store / "runs/r/a.bin").write_bytes(bytes(range(256)) * 100)
    (store / "runs/r/tree/x.txt").write_text("x")
    (store / "runs/r/tree/sub/y.txt").write_text("y")
    from scalable.digests import sha256_file, tree_digest

    tree = tree_digest(
        [
            ("x.txt", sha256_file(str(store / "runs/r/tree/x.txt"))[0]),
            ("sub/y.txt", sha256_file(str(store / "runs/r/tree/sub/y.txt"))[0]),
        ]
    )
    with bind(run_id="run-r"):
        ledger.append(
            {
                "event_type": "artifact",
                "op": "put",
                "key": "runs/r/a.bin",
                "location": (store / "runs/r/a.bin").as_uri(),
                "digest": hashlib.sha256((store / "runs/r/a.bin").read_bytes()).hexdigest(),
                "kind": "file",
            }
        )
        ledger.append(
            {
                "event_type": "artifact",
                "op": "put",
                "key": "runs/r/tree",
                "location": (store / "runs/r/tree").as_uri(),
                "digest": tree,
                "kind": "dir",
            }
        )
    result = ledger.replay("run-r", into=isolated / "restored")
    assert result.events == 2 and len(result.restored) == 2
    assert (isolated / "restored/runs/r/a.bin").read_bytes() == (store / "runs/r/a.bin").read_bytes()
    assert (isolated / "restored/runs/r/tree/sub/y.txt").read_text() == "y"
    out = cli("ledger", "replay", "run-r", "--into", "again", "--print")
    assert out.exit_code == 0 and "artifact/put" in out.stdout and (isolated / "again/runs/r/a.bin").exists()
    (store / "runs/r/a.bin").write_bytes(b"corrupted")
    from scalable.errors import IntegrityError

    with pytest.raises(IntegrityError, match="not the recorded"):
        ledger.replay("run-r", into=isolated / "third")
    assert not (isolated / "third/runs/r/a.bin").exists()
    assert cli("ledger", "replay", "run-r", "--into", "fourth").exit_code == 1
    assert cli("ledger", "replay", "run-zzz").exit_code == 2


def test_run_summaries_and_exports_rebuilt_from_events_equal_the_incremental_ones(
    ledger: Ledger, isolated: Path
) -> None:
    """Deleting run.json and the exports and rebuilding them from the streams gives the same files."""
    from scalable.ledger.export import export_openlineage, export_prov, export_sqlite

    _sealed_run(ledger, "run-a")
    _sealed_run(ledger, "run-b")
    summaries = {p: p.read_bytes() for p in ledger.runs_dir.glob("*/run.json")}
    assert len(summaries) == 2
    export_prov(ledger, isolated / "p1.json")
    export_openlineage(ledger, isolated / "o1.jsonl")
    export_sqlite(ledger, isolated / "s1.db")
    for p in summaries:
        p.unlink()
    rebuilt = ledger.rebuild_summaries()
    assert {p: p.read_bytes() for p in rebuilt} == summaries
    export_prov(ledger, isolated / "p2.json")
    export_openlineage(ledger, isolated / "o2.jsonl")
    export_sqlite(ledger, isolated / "s2.db")
    assert (isolated / "p1.json").read_bytes() == (isolated / "p2.json").read_bytes()
    assert (isolated / "o1.jsonl").read_bytes() == (isolated / "o2.jsonl").read_bytes()
    import sqlite_utils

    one, two = sqlite_utils.Database(isolated / "s1.db"), sqlite_utils.Database(isolated / "s2.db")
    for table in ("events", "artifacts", "runs", "lineage"):
        assert list(one[table].rows) == list(two[table].rows)


def _compacted_ledger(ledger: Ledger) -> None:
    for run in ("run-a", "run-b"):
        _sealed_run(ledger, run)


def test_audit_passes_before_and_after_compaction_and_stream_retirement(ledger: Ledger, cli: CliInvoker) -> None:
    """A clean ledger verifies from its streams, after compaction, and from Parquet once streams are retired."""
    _compacted_ledger(ledger)
    assert ledger.audit(content=False).ok
    ledger.compact()
    assert ledger.audit(content=False).ok
    ledger.compact(keep_jsonl=False)
    assert not ledger.stream_path("run-a").exists()
    report = ledger.audit(content=False)
    assert report.ok, [str(p) for p in report.problems]
    assert report.runs == 2 and report.events == 16
    assert cli("ledger", "audit", "run-a", "--no-content").exit_code == 0


def test_audit_of_retired_streams_catches_an_edited_row(ledger: Ledger) -> None:
    """Rewriting a compacted row (its stream retired) breaks the chain the audit rebuilds from rows."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    _compacted_ledger(ledger)
    ledger.compact(keep_jsonl=False)
    path = next((ledger.ledger_dir / "events").rglob("*.parquet"))
    table = pq.read_table(path)
    names = table.column("artifact_name")
    edited = pc.if_else(pc.equal(names, "f2"), "f2-edited", names)
    pq.write_table(table.set_column(table.schema.get_field_index("artifact_name"), "artifact_name", edited), path)
    kinds = {p.kind for p in ledger.audit(content=False).problems}
    assert "chain-broken" in kinds


def test_retention_tombstones_account_for_removed_events(ledger: Ledger, isolated: Path) -> None:
    """Events removed by --retire-before leave tombstones; the audit still verifies, streams kept or not."""
    _compacted_ledger(ledger)
    ledger.compact()
    cutoff = "2999-01-01"
    result = ledger.compact(retire_before=cutoff)
    assert result.to_dict()["tombstones"] == 2
    assert ledger.query("SELECT count(*) FROM events WHERE event_type <> 'run' OR op <> 'retired'").column(
        0
    ).to_pylist() == [0]
    report = ledger.audit(content=False)
    assert report.ok, [str(p) for p in report.problems]
    ledger.compact(keep_jsonl=False)
    report = ledger.audit(content=False)
    assert report.ok, [str(p) for p in report.problems]
