"""Tampering with any stored copy of an event is found by ``ledger audit``, with and without a ledger key.

Each case edits the files on disk as an attacker with write access would, then checks that the
audit fails (the API's report and ``scalable ledger audit``, which exits 1) and names the file
and the line or row.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scalable.ledger import bind
from scalable.ledger.events import COLUMNS, GENESIS, encode_line, new_event_id, now
from scalable.ledger.log import Ledger
from tests.conftest import CliInvoker
from tests.helpers import run_python
from tests.ledger.chains import parallel_audit_pools

RUN = "run-t"
KEYS = [None, "k3y"]

#: Every user column set, so that each field of the schema is on some line.
FULL = {
    "event_type": "cache",
    "op": "write",
    "task_name": "train",
    "component": "gpu",
    "artifact_name": "model.bin",
    "location": "s3://bucket/runs/model.bin",
    "kind": "file",
    "size_bytes": 4096,
    "digest": "ab" * 32,
    "key": "runs/model.bin",
    "store": "s3://bucket/",
    "inputs": ["cd" * 32, "s3://bucket/raw.csv"],
    "function_name": "pipeline.train",
    "key_digest": "ef" * 16,
    "hit": True,
    "duration_s": 1.5,
    "attrs": {"epoch": 3, "note": "fine"},
}


@pytest.fixture(params=KEYS, ids=["no-key", "key"])
def keyed(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, isolated: Path) -> Iterator[Ledger]:
    """A ledger with or without SCALABLE_LEDGER_KEY, holding one sealed run written by two processes."""
    if request.param:
        monkeypatch.setenv("SCALABLE_LEDGER_KEY", request.param)
    run_python(f"""
        from scalable.ledger.log import Ledger
        led = Ledger.open()
        led.append({{"event_type": "task", "op": "started", "run_id": {RUN!r}, "task_name": "prep"}})
        led.append({{"event_type": "task", "op": "finished", "run_id": {RUN!r}, "task_name": "prep", "duration_s": 2.0}})
        led.close()
    """)
    led = Ledger.open()
    with bind(run_id=RUN):
        led.append({"event_type": "run", "op": "started", "attrs": {"project": "p"}})
        led.append(FULL)
        for i in range(3):
            led.append({"event_type": "artifact", "op": "put", "artifact_name": f"f{i}.csv", "size_bytes": 10 + i})
    led.finish_run(RUN, "completed")
    assert led.audit(content=False).ok
    yield led
    led.close()


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"\n".join(lines) + b"\n")


def _value_span(line: bytes, name: str) -> tuple[int, int]:
    """Byte range of the value of top-level column ``name`` in an encoded line."""
    start = line.index(f'"{name}":'.encode()) + len(name) + 3
    if line[start : start + 1] == b'"':
        end = start + 1
        while line[end : end + 1] != b'"' or line[end - 1 : end] == b"\\":
            end += 1
        return start + 1, end
    if line[start : start + 1] == b"[":
        return start + 1, line.index(b"]", start)
    end = start
    while line[end : end + 1] not in (b",", b"}"):
        end += 1
    return start, end


def _flip(line: bytes, name: str) -> bytes:
    """``line`` with one byte of column ``name``'s value changed, the line still valid JSON."""
    start, end = _value_span(line, name)
    value = line[start:end]
    if value in (b"true", b"false"):
        return line[:start] + (b"false" if value == b"true" else b"true") + line[end:]
    for i in range(len(value) - 1, -1, -1):
        ch = value[i : i + 1]
        if ch.isdigit():
            new = b"7" if ch != b"7" else b"3"
        elif ch.isalpha():
            new = b"x" if ch != b"x" else b"y"
        else:
            continue
        if i > 0 and value[i - 1 : i] == b"\\":
            continue  # an escape sequence: leave it valid
        return line[:start] + value[:i] + new + value[i + 1 :] + line[end:]
    raise AssertionError(f"no byte to change in {name}")


def _fields(line: bytes) -> list[str]:
    return sorted(json.loads(line))


def _audit_fails(ledger: Ledger, cli: CliInvoker, where: re.Pattern[str] | str) -> list[Any]:
    """The audit fails, through the API and the CLI (exit 1), and a problem names ``where``."""
    report = ledger.audit(content=False)
    assert not report.ok
    pattern = where if isinstance(where, re.Pattern) else re.compile(re.escape(where) + "$|" + re.escape(where) + " ")
    named = [p for p in report.problems if pattern.search(p.where) or pattern.search(p.message)]
    assert named, [str(p) for p in report.problems]
    result = cli("ledger", "audit", "--no-content", "--format", "json")
    assert result.exit_code == 1, result.output
    assert not json.loads(result.stdout)["ok"]
    table = cli("ledger", "audit", "--no-content")
    assert table.exit_code == 1 and "FAILED" in table.stdout
    return report.problems


def _line_cases() -> list[tuple[str, str]]:
    """(which line, column) for every column of the first, a middle and the sealing line."""
    cases = []
    first = [
        "event_id",
        "event_type",
        "op",
        "prev",
        "run_id",
        "schema_version",
        "seq",
        "task_name",
        "timestamp",
        "writer",
    ]
    cases += [("first", c) for c in first]
    middle = sorted({*(c.name for c in COLUMNS)} - {"prev"} | {"prev"})
    cases += [("middle", c) for c in middle]
    cases += [
        ("seal", c) for c in ["attrs", "event_id", "event_type", "op", "prev", "run_id", "seq", "timestamp", "writer"]
    ]
    return cases


@pytest.mark.parametrize(("which", "column"), _line_cases(), ids=[f"{w}-{c}" for w, c in _line_cases()])
def test_a_byte_of_any_field_of_any_line_is_caught(keyed: Ledger, cli: CliInvoker, which: str, column: str) -> None:
    """Changing one byte of any column of the first line, the fullest middle line or the sealing line fails the audit."""
    path = keyed.stream_path(RUN)
    lines = _lines(path)
    index = {
        "first": 0,
        "middle": next(i for i, ln in enumerate(lines) if b'"function_name"' in ln),
        "seal": next(
            i for i, ln in enumerate(lines) if b'"op":"finished","prev"' in ln and b'"event_type":"run"' in ln
        ),
    }[which]
    assert column in _fields(lines[index])
    lines[index] = _flip(lines[index], column)
    _write(path, lines)
    _audit_fails(keyed, cli, re.compile(rf"^{re.escape(str(path))}:\d+$"))


@pytest.mark.parametrize("key", ["status", "events", "counts", "seal"])
def test_the_status_and_every_part_of_the_seal_line_attrs_are_covered(keyed: Ledger, cli: CliInvoker, key: str) -> None:
    """Editing the status (same length) or any part of the seal in run/finished fails the audit; runs shows no forgery."""
    path = keyed.stream_path(RUN)
    lines = _lines(path)
    index = len(lines) - 1
    line = lines[index]
    edits = {
        "status": (b"completed", b"completeX"),
        "events": (b'\\"events\\":', b'\\"events\\":9'),
        "counts": (b'\\"counts\\":{\\"', b'\\"counts\\":{\\"x'),
        "seal": (b'\\"head\\":\\"', b'\\"head\\":\\"f'),
    }
    old, new = edits[key]
    assert old in line
    lines[index] = line.replace(old, new, 1)
    if key == "seal":
        lines[index] = lines[index].replace(b'\\"head\\":\\"f', b'\\"head\\":\\"', 1)
        at = lines[index].index(b'\\"head\\":\\"') + 11
        lines[index] = (
            lines[index][:at] + (b"0" if lines[index][at : at + 1] != b"0" else b"1") + lines[index][at + 1 :]
        )
    _write(path, lines)
    _audit_fails(keyed, cli, f"{path}:{index + 1}")


@pytest.mark.parametrize(
    "edit",
    [
        "delete-first",
        "delete-middle",
        "delete-seal",
        "swap-writers",
        "swap-same-writer",
        "move-seal-up",
        "duplicate",
        "insert-new-writer",
        "insert-after-seal",
        "insert-copy",
    ],
)
def test_lines_deleted_reordered_duplicated_or_inserted_are_caught(keyed: Ledger, cli: CliInvoker, edit: str) -> None:
    """Deleting, reordering, duplicating or inserting whole lines fails the audit and names the stream."""
    path = keyed.stream_path(RUN)
    lines = _lines(path)
    writers = [json.loads(ln)["writer"] for ln in lines]
    seal = len(lines) - 1
    forged = encode_line(
        {
            "event_id": new_event_id(),
            "event_type": "artifact",
            "op": "put",
            "timestamp": now(),
            "run_id": RUN,
            "writer": "forger:1:x",
            "seq": 0,
            "prev": GENESIS,
            "schema_version": 1,
        }
    )[:-1]
    if edit == "delete-first":
        del lines[0]
    elif edit == "delete-middle":
        del lines[3]
    elif edit == "delete-seal":
        del lines[seal]
    elif edit == "swap-writers":
        i = next(i for i in range(len(lines) - 1) if writers[i] != writers[i + 1])
        lines[i], lines[i + 1] = lines[i + 1], lines[i]
    elif edit == "swap-same-writer":
        lines[3], lines[4] = lines[4], lines[3]
    elif edit == "move-seal-up":
        lines.insert(seal - 1, lines.pop(seal))
    elif edit == "duplicate":
        lines.insert(4, lines[3])
    elif edit == "insert-new-writer":
        lines.insert(2, forged)
    elif edit == "insert-after-seal":
        lines.append(forged)
    elif edit == "insert-copy":
        copy = json.loads(lines[3])
        copy["event_id"] = new_event_id()
        lines.insert(4, encode_line(copy)[:-1])
    _write(path, lines)
    _audit_fails(keyed, cli, re.compile(rf"^{re.escape(str(path))}(:\d+|:end)?$"))


# --- compacted copies ---------------------------------------------------------------------------


def _parquet_files(ledger: Ledger) -> list[Path]:
    return sorted((ledger.ledger_dir / "events").rglob("*.parquet"))


def _edit_cell(value: Any, column: str) -> Any:
    if column == "inputs":
        return [*(value or []), "s3://bucket/forged"]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.5
    if isinstance(value, str):
        if column == "attrs":
            return json.dumps({**json.loads(value), "forged": 1})
        return value[:-1] + ("x" if value[-1:] != "x" else "y")
    if value is None:
        return {"size_bytes": 1, "hit": True, "duration_s": 0.5, "schema_version": 2}.get(column, "forged")
    raise AssertionError(column)


COLUMN_NAMES = [c.name for c in COLUMNS]


def _edit_parquet(path: Path, column: str, pick: Callable[[dict[str, Any]], bool]) -> int:
    table = pq.read_table(path)
    rows = table.to_pylist()
    index = next(i for i, r in enumerate(rows) if pick(r))
    rows[index][column] = _edit_cell(rows[index][column], column)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    return index


@pytest.mark.parametrize("column", COLUMN_NAMES)
@pytest.mark.parametrize("retired", [False, True], ids=["stream-kept", "stream-retired"])
def test_every_column_edited_in_a_compacted_row_is_caught(
    keyed: Ledger, cli: CliInvoker, column: str, retired: bool
) -> None:
    """Editing any column of a compacted row (the stream kept, or retired) fails the audit and names file and row."""
    keyed.compact(keep_jsonl=not retired)
    assert keyed.stream_path(RUN).exists() is not retired
    assert keyed.audit(content=False).ok
    path = next(p for p in _parquet_files(keyed) if RUN in str(pq.read_table(p, columns=["run_id"]).to_pylist()))
    index = _edit_parquet(path, column, lambda r: r["function_name"] is not None)
    _audit_fails(keyed, cli, f"{path}: row {index + 1}")


def test_a_size_edited_in_parquet_changes_no_answer_unnoticed(keyed: Ledger, cli: CliInvoker) -> None:
    """The reported defect: size_bytes edited in Parquet shows in queries, and the audit names the file and row."""
    keyed.compact()
    path = _parquet_files(keyed)[0]
    index = _edit_parquet(path, "size_bytes", lambda r: r["artifact_name"] == "f1.csv")
    assert keyed.query("SELECT size_bytes FROM artifacts WHERE artifact_name = 'f1.csv'").to_pylist() == [
        {"size_bytes": 12}
    ]
    problems = _audit_fails(keyed, cli, f"{path}: row {index + 1}")
    differs = next(p for p in problems if p.kind == "copy-differs")
    assert "size_bytes 11 in the line, 12 in the row" in differs.message


@pytest.mark.parametrize("retired", [False, True], ids=["stream-kept", "stream-retired"])
def test_a_parquet_file_removed_or_added_is_caught(keyed: Ledger, cli: CliInvoker, retired: bool) -> None:
    """A compacted file deleted is file-missing; a file added by hand (a copy under a new name) is unlisted-file."""
    keyed.compact(keep_jsonl=not retired)
    path = _parquet_files(keyed)[0]
    extra = path.with_name("part-extra.parquet")
    shutil.copy(path, extra)
    problems = _audit_fails(keyed, cli, str(extra))
    assert [p.kind for p in problems if p.where == str(extra)] == ["unlisted-file"]
    extra.unlink()
    assert keyed.audit(content=False).ok
    path.unlink()
    problems = _audit_fails(keyed, cli, str(path))
    assert "file-missing" in {p.kind for p in problems if p.where == str(path)}


def test_a_stream_deleted_with_its_summary_kept_is_caught(keyed: Ledger, cli: CliInvoker) -> None:
    """A sealed, never compacted run whose stream is gone is events-missing, named by its run.json."""
    path = keyed.stream_path(RUN)
    path.unlink()
    problems = _audit_fails(keyed, cli, str(path.with_name("run.json")))
    assert [p.kind for p in problems] == ["events-missing"]
    assert cli("ledger", "audit", RUN, "--no-content").exit_code == 1


@pytest.mark.parametrize("damage", ["deleted", "newest-deleted", "truncated", "emptied"])
def test_a_generation_record_deleted_or_truncated_is_caught(keyed: Ledger, cli: CliInvoker, damage: str) -> None:
    """The record of compacted files deleted, truncated or emptied fails the audit, naming the directory or file."""
    keyed.compact([RUN])
    keyed.append({"event_type": "cache", "op": "hit", "run_id": "run-later"})
    keyed.finish_run("run-later")
    keyed.compact(keep_jsonl=False)
    manifest = keyed.ledger_dir / "_manifest"
    docs = sorted(manifest.glob("*.json"))
    if damage == "deleted":
        shutil.rmtree(manifest)
    elif damage == "newest-deleted":
        docs[-1].unlink()
    elif damage == "truncated":
        docs[-1].write_bytes(docs[-1].read_bytes()[:100])
    else:
        docs[-1].write_bytes(b"")
    problems = _audit_fails(keyed, cli, re.compile("_manifest|\\.parquet"))
    assert {p.kind for p in problems} & {
        "unlisted-file",
        "generation-missing",
        "generation-unreadable",
        "unaccounted-events",
        "events-missing",
    }


@pytest.fixture(params=["s3", "gcs"])
def bucket(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """A bucket on the S3 server or on the GCS emulator."""
    found: tuple[str, dict[str, Any]] = request.getfixturevalue(f"{request.param}_bucket")
    return found


@pytest.mark.parametrize("edit", ["byte", "deleted", "line-removed"])
def test_a_remote_segment_edited_or_deleted_is_caught(
    isolated: Path, bucket: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, cli: CliInvoker, edit: str
) -> None:
    """A remote segment changed or gone fails the audit on this machine and on another, naming the segment."""
    import fsspec

    remote, options = bucket
    monkeypatch.setenv("SCALABLE_RUNS_DIR_REMOTE", remote)
    led = Ledger.open()
    with bind(run_id=RUN):
        for i in range(4):
            led.append({"event_type": "artifact", "op": "put", "artifact_name": f"f{i}", "size_bytes": i})
    led.finish_run(RUN)
    led.compact()
    assert led.audit(content=False).ok
    fs, root = fsspec.core.url_to_fs(remote, **options)
    segment = next(p for p in fs.find(root) if "/segments/" in p)
    name = segment.rsplit("/", 1)[-1]
    data = fs.cat_file(segment)
    lines = data.split(b"\n")[:-1]
    if edit == "byte":
        lines[2] = _flip(lines[2], "size_bytes")
        fs.pipe_file(segment, b"\n".join(lines) + b"\n")
    elif edit == "line-removed":
        fs.pipe_file(segment, b"\n".join(lines[:2] + lines[3:]) + b"\n")
    else:
        fs.rm_file(segment)
    _audit_fails(led, cli, re.compile(rf"{re.escape(name)}(:\d+)?$"))
    other = Ledger.open(isolated / "machine-b" / "runs", isolated / "machine-b" / "ledger")
    report = other.audit(content=False)
    assert not report.ok and any(name in p.where for p in report.problems), [str(p) for p in report.problems]
    led.close()
    other.close()


def _digest_rows(ledger: Ledger) -> list[tuple[str, str]]:
    rows = ledger.query("SELECT * FROM events").to_pylist()
    return sorted((r["event_id"], hashlib.sha256(encode_line(r)).hexdigest()) for r in rows)


def test_a_clean_remote_ledger_audits_clean_from_any_machine(
    isolated: Path, bucket: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs of two machines, synced and compacted, audit clean from a third machine that wrote nothing."""
    remote, _options = bucket
    monkeypatch.setenv("SCALABLE_RUNS_DIR_REMOTE", remote)
    machines = [Ledger.open(isolated / m / "runs", isolated / m / "ledger") for m in ("a", "b", "c")]
    for led, run in zip(machines[:2], ("run-a", "run-b"), strict=False):
        with bind(run_id=run):
            for i in range(3):
                led.append({"event_type": "artifact", "op": "put", "artifact_name": f"f{i}"})
        led.finish_run(run)
        led.compact()
    machines[0].append({"event_type": "cache", "op": "hit", "run_id": "run-a2"})
    machines[0].sync_remote()
    report = machines[2].audit(content=False)
    assert report.ok, [str(p) for p in report.problems]
    assert report.runs == 3
    for led in machines:
        led.close()


def test_worker_processes_find_what_one_process_finds(keyed: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams audited by worker processes give the same report as in this process, problems and all."""

    for i in range(6):
        with bind(run_id=f"run-w{i}"):
            keyed.append({"event_type": "artifact", "op": "put", "artifact_name": f"w{i}"})
        keyed.finish_run(f"run-w{i}")
    keyed.compact()
    path = keyed.stream_path("run-w3")
    lines = _lines(path)
    lines[0] = _flip(lines[0], "artifact_name")
    _write(path, lines)
    alone = [str(p) for p in keyed.audit(content=False).problems]
    assert alone
    keyed.close()
    pools = parallel_audit_pools(monkeypatch)
    assert [str(p) for p in Ledger.open().audit(content=False).problems] == alone
    assert pools and pools[0] >= 2
