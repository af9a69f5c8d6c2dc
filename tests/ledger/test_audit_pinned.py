"""What an audit report says and how it counts: problems, summaries, tallies, run.json, content checks."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from scalable.digests import tree_digest
from scalable.ledger import bind
from scalable.ledger.audit import (
    AuditReport,
    Problem,
    StreamJob,
    Tally,
    audit_content,
    audit_rows,
    audit_stream,
    audit_streams,
    check_stream_bytes,
    hash_location,
    seal_line_of,
)
from scalable.ledger.events import GENESIS, decode_line, encode_line
from scalable.ledger.log import Ledger
from scalable.ledger.stream import seal_digest
from tests.conftest import CliInvoker
from tests.ledger.chains import parallel_audit_pools


def _sealed(ledger: Ledger, run_id: str = "run-p", n: int = 3) -> Path:
    with bind(run_id=run_id):
        for i in range(n):
            ledger.append({"event_type": "artifact", "op": "put", "artifact_name": f"a{i}", "size_bytes": i})
    ledger.finish_run(run_id, "completed")
    return ledger.stream_path(run_id)


def _where(number: int, offset: int) -> str:
    return f"L{number}@{offset}"


def test_a_problem_reads_as_run_place_kind_message_and_the_difference() -> None:
    """str(Problem) is what the CLI prints: run, place, kind, message, then expected and found when known."""
    full = Problem("run-x", "s.jsonl:3", "seq-gap", "writer w sequence broken", expected="2", found="4")
    assert str(full) == "run-x: s.jsonl:3: seq-gap: writer w sequence broken (expected 2, found 4)"
    assert str(Problem("", "events/x.parquet", "orphan", "not named")) == "events/x.parquet: orphan: not named"
    assert str(Problem("r", "w", "k", "m", found="nothing")) == "r: w: k: m (expected None, found nothing)"
    assert str(Problem("r", "w", "k", "m", expected="x")) == "r: w: k: m (expected x, found None)"


def test_a_report_counts_kinds_most_frequent_first_and_sums_what_it_checked() -> None:
    """by_kind orders by count then name; summary and to_dict say the same; extend adds counts and problems."""
    report = AuditReport(runs=2, events=10, artifacts=1)
    assert report.ok and report.summary() == "audit ok: 2 run(s), 10 event(s), 1 artifact(s) checked"
    assert report.to_dict() == {"ok": True, "runs": 2, "events": 10, "artifacts": 1, "by_kind": {}, "problems": []}
    other = AuditReport(
        problems=[
            Problem("r", "a", "seq-gap", "m1"),
            Problem("r", "b", "chain-broken", "m2"),
            Problem("r", "c", "seq-gap", "m3", expected="1", found="2"),
            Problem("r", "d", "after-seal", "m4"),
        ],
        runs=1,
        events=5,
        artifacts=3,
    )
    report.extend(other)
    assert (report.runs, report.events, report.artifacts) == (3, 15, 4)
    assert not report.ok
    # Kinds found as often are in name order, not in the order they were found.
    assert list(report.by_kind().items()) == [("seq-gap", 2), ("after-seal", 1), ("chain-broken", 1)]
    assert report.summary() == (
        "audit FAILED: 4 problem(s) (2 seq-gap, 1 after-seal, 1 chain-broken); "
        "3 run(s), 15 event(s), 4 artifact(s) checked"
    )
    doc = report.to_dict()
    assert doc["ok"] is False and doc["by_kind"] == {"seq-gap": 2, "after-seal": 1, "chain-broken": 1}
    assert doc["problems"][2] == {
        "run_id": "r",
        "where": "c",
        "kind": "seq-gap",
        "message": "m3",
        "expected": "1",
        "found": "2",
    }


def test_a_tally_sums_the_first_128_bits_of_each_line_digest() -> None:
    """Tally.add counts one line and adds the first 32 hex digits of its digest as a number."""
    tally = Tally()
    one, two = hashlib.sha256(b"a").hexdigest(), hashlib.sha256(b"b").hexdigest()
    tally.add(one)
    tally.add(two)
    assert tally.count == 2
    assert tally.digest == int(one[:32], 16) + int(two[:32], 16)


def test_stream_bytes_checked_name_lines_by_number_and_offset(ledger: Ledger) -> None:
    """Problems name a line by its 1-based number and the byte offset where it starts; counts are exact."""
    data = _sealed(ledger).read_bytes()
    clean = check_stream_bytes(data, "run-p", _where, "END")
    assert clean.ok and clean.runs == 1 and clean.events == 4
    lines = data.split(b"\n")[:-2]  # the seal left out: it would also see the inserted line
    bad = b"\n".join([lines[0], b"not json", *lines[1:]]) + b"\n"
    report = check_stream_bytes(bad, "run-p", _where, "END")
    assert [(p.kind, p.where) for p in report.problems] == [("malformed-line", f"L2@{len(lines[0]) + 1}")]
    assert report.events == 3
    # Blank lines are skipped but still counted in line numbers and offsets.
    spaced = b"\n".join([lines[0], b"", b"nope", *lines[1:]]) + b"\n"
    (problem,) = check_stream_bytes(spaced, "run-p", _where, "END").problems
    assert problem.where == f"L3@{len(lines[0]) + 2}"


def test_a_torn_tail_after_the_seal_is_named_at_the_end(ledger: Ledger) -> None:
    """An incomplete last line after the seal is 'truncated' at the end; before a seal it is a line being written."""
    data = _sealed(ledger).read_bytes()
    report = check_stream_bytes(data + b'{"event_type":"ar', "run-p", _where, "END")
    assert [(p.kind, p.where) for p in report.problems] == [("truncated", "END")]
    unsealed = b"".join(data.splitlines(keepends=True)[:-1])
    assert check_stream_bytes(unsealed + b'{"event_type":"ar', "run-p", _where, "END").ok


def test_a_foreign_or_duplicated_event_is_named_with_what_was_expected(ledger: Ledger) -> None:
    """A line of another run says which run; a repeated event id names the line it first appeared on."""
    data = _sealed(ledger, "run-p").read_bytes()
    report = check_stream_bytes(data, "run-q", _where, "END")
    foreign = [p for p in report.problems if p.kind == "foreign-event"]
    assert len(foreign) == 4 and foreign[0].expected == "run-q" and foreign[0].found == "run-p"
    assert foreign[0].message == "event of another run in this stream" and foreign[0].where == "L1@0"
    assert all(p.run_id == "run-q" for p in report.problems)
    lines = data.split(b"\n")[:-1]
    doubled = b"\n".join([lines[0], lines[0], *lines[1:]]) + b"\n"
    kinds = {p.kind: p for p in check_stream_bytes(doubled, "run-p", _where, "END").problems}
    assert kinds["duplicate-event"].message.endswith("already at line 1")
    assert kinds["duplicate-event"].where == f"L2@{len(lines[0]) + 1}" and kinds["duplicate-event"].run_id == "run-p"
    assert kinds["seq-order"].expected == "1" and kinds["seq-order"].found == "0"


def test_the_tally_counts_covered_lines_once_and_not_those_retention_retired(ledger: Ledger) -> None:
    """Lines starting before ``covered`` are counted (each event once); older than ``retired_before`` are not."""
    data = _sealed(ledger).read_bytes()
    lines = data.split(b"\n")[:-1]
    digests = [hashlib.sha256(line).digest() for line in lines]

    def counted(covered: int, retired_before: str | None = None, blob: bytes = data) -> Tally:
        tally = Tally()
        check_stream_bytes(blob, "run-p", _where, "END", covered=covered, retired_before=retired_before, tally=tally)
        return tally

    everything = counted(len(data))
    assert everything.count == 4
    assert everything.digest == sum(int.from_bytes(d[:16], "big") for d in digests)
    # A cut inside the second line still covers it (it starts before), the third not.
    two = counted(len(lines[0]) + 2)
    assert two.count == 2 and two.digest == sum(int.from_bytes(d[:16], "big") for d in digests[:2])
    assert counted(len(lines[0]) + 1).count == 1  # the second line starts exactly at the cut: not covered
    assert counted(0).count == 0
    assert counted(len(data), retired_before="9999").count == 0
    assert counted(len(data), retired_before="0000").count == 4
    doubled = b"\n".join([lines[0], lines[0], *lines[1:]]) + b"\n"
    assert counted(len(doubled), blob=doubled).count == 4
    # Without a tally nothing is counted, whatever ``covered`` says.
    assert check_stream_bytes(data, "run-p", _where, "END", covered=len(data)).ok


def test_progress_reports_every_byte_once(ledger: Ledger) -> None:
    """The progress callback gets byte counts that add up to the stream's size, about one call a megabyte."""
    with bind(run_id="run-big"):
        for i in range(2500):
            ledger.append(
                {"event_type": "artifact", "op": "put", "artifact_name": f"n{i}", "attrs": {"pad": "x" * 900}}
            )
    ledger.finish_run("run-big")
    path = ledger.stream_path("run-big")
    size = path.stat().st_size
    assert size > 2 << 20
    calls: list[int] = []
    assert audit_stream(path, "run-big", progress=calls.append).ok
    assert sum(calls) == size
    assert len(calls) == size // (1 << 20) + 1
    assert all(c >= 1 << 20 for c in calls[:-1])


def test_run_json_that_does_not_parse_or_is_not_an_object_is_a_problem(ledger: Ledger) -> None:
    """A broken run.json is named by its path as malformed-summary; the stream is still checked."""
    path = _sealed(ledger)
    summary = path.with_name("run.json")
    summary.write_text("{nope")
    (problem,) = audit_stream(path, "run-p").problems
    assert (problem.kind, problem.where, problem.run_id) == ("malformed-summary", str(summary), "run-p")
    assert problem.message == "run.json does not parse"
    summary.write_text("[1, 2]")
    (problem,) = audit_stream(path, "run-p").problems
    assert (problem.kind, problem.where, problem.run_id) == ("malformed-summary", str(summary), "run-p")
    assert problem.message == "run.json is not a JSON object"


def test_run_json_names_a_truncated_stream_and_a_lost_or_changed_seal(ledger: Ledger) -> None:
    """run.json remembers the sealed length and the seal line's hash: losing or changing either is named."""
    path = _sealed(ledger)
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    path.write_bytes(data[:-10])
    truncated = [p for p in audit_stream(path, "run-p").problems if p.kind == "truncated"]
    assert truncated[0].where == f"{path}:end" and truncated[0].run_id == "run-p"
    assert truncated[0].expected == str(len(data)) and truncated[0].found == str(len(data) - 10)
    assert truncated[0].message == f"stream is {len(data) - 10} bytes but was {len(data)} bytes when sealed"
    # The same length, but the seal line replaced by an ordinary event.
    replacement = lines[-2].rstrip(b"\n")
    filler = replacement + b" " * (len(lines[-1]) - len(replacement) - 1) + b"\n"
    path.write_bytes(b"".join(lines[:-1]) + filler)
    lost = [p for p in audit_stream(path, "run-p").problems if "no run/finished" in p.message]
    assert [(p.run_id, p.kind, p.where) for p in lost] == [("run-p", "seal-mismatch", f"{path}:{len(lines)}")]
    assert lost[0].message == (
        "run.json says the run was sealed by this line, but the stream has no run/finished event any more"
    )
    # A run.json whose sealed length is no number names the stream itself.
    summary = json.loads(path.with_name("run.json").read_text())
    path.with_name("run.json").write_text(json.dumps({**summary, "stream_bytes": "many"}))
    lost = [p for p in audit_stream(path, "run-p").problems if "no run/finished" in p.message]
    assert [p.where for p in lost] == [str(path)]
    path.with_name("run.json").write_text(json.dumps(summary))
    # The seal line itself kept in place but not the one sealed.
    summary = json.loads(path.with_name("run.json").read_text())
    summary["seal_sha256"] = "0" * 64
    path.with_name("run.json").write_text(json.dumps(summary))
    path.write_bytes(data)
    (changed,) = audit_stream(path, "run-p").problems
    assert changed.kind == "seal-mismatch" and changed.where == f"{path}:{len(lines)}" and changed.run_id == "run-p"
    assert changed.message == "the sealing line differs from the one run.json recorded when the run was sealed"
    assert changed.expected == "0" * 12 and changed.found == hashlib.sha256(lines[-1][:-1]).hexdigest()[:12]


def test_an_open_runs_summary_has_no_sealed_length_to_hold_the_stream_to(ledger: Ledger) -> None:
    """A run.json without stream_bytes (a run still open) asks nothing of the stream's length or seal."""
    path = _sealed(ledger)
    summary = json.loads(path.with_name("run.json").read_text())
    del summary["stream_bytes"]
    path.with_name("run.json").write_text(json.dumps(summary))
    data = path.read_bytes()
    path.write_bytes(b"".join(data.splitlines(keepends=True)[:-1]))
    assert audit_stream(path, "run-p").ok
    assert audit_stream(path.with_name("gone.jsonl"), "run-p").events == 0


def test_a_stream_gone_or_torn_is_named_by_its_file(ledger: Ledger) -> None:
    """A missing stream whose run.json says it was sealed is 0 bytes, truncated; a torn tail is named at the file's end."""
    path = _sealed(ledger)
    data = path.read_bytes()
    path.unlink()
    (gone,) = audit_stream(path, "run-p").problems
    assert (gone.kind, gone.where, gone.found) == ("truncated", f"{path}:end", "0")
    path.write_bytes(data + b'{"event_type":"ar')
    (torn,) = audit_stream(path, "run-p").problems
    assert (torn.run_id, torn.kind, torn.where) == ("run-p", "truncated", f"{path}:end")
    assert torn.message == "stream ends in an incomplete line after the seal"


def test_a_stream_counts_in_the_tally_only_what_retention_kept(ledger: Ledger) -> None:
    """audit_stream hands the retention cutoff on: lines older than it are not counted."""
    path = _sealed(ledger)
    size = path.stat().st_size
    kept, old = Tally(), Tally()
    audit_stream(path, "run-p", covered=size, retired_before="0000", tally=kept)
    audit_stream(path, "run-p", covered=size, retired_before="9999", tally=old)
    assert (kept.count, old.count) == (4, 0)


def test_the_seal_line_is_the_first_run_finished_line(ledger: Ledger) -> None:
    """seal_line_of gives the first run/finished line (1-based) and its bytes; None for an open run."""
    data = _sealed(ledger).read_bytes()
    lines = data.split(b"\n")[:-1]
    assert seal_line_of(data) == (4, lines[3])
    assert seal_line_of(b"\n".join(lines[:3]) + b"\n") is None
    # A line that only mentions the words, or does not parse, is not a seal.
    decoy = b'{"note":"\\"op\\":\\"finished\\" \\"event_type\\":\\"run\\""}'
    assert seal_line_of(decoy + b"\n" + data) == (5, lines[3])
    assert seal_line_of(b'{"op":"finished","event_type":"run"\n' + data) == (5, lines[3])
    assert seal_line_of(lines[3]) is None  # without its newline the line is still being written


def test_hash_location_measures_files_and_directories_and_none_when_absent(isolated: Path) -> None:
    """A local file hashes to its SHA-256, a directory to its tree digest; nothing there is None."""
    (isolated / "d/sub").mkdir(parents=True)
    (isolated / "d/a.txt").write_bytes(b"a")
    (isolated / "d/sub/b.txt").write_bytes(b"bb")
    assert hash_location((isolated / "d/a.txt").as_uri()) == hashlib.sha256(b"a").hexdigest()
    assert hash_location(str(isolated / "d")) == tree_digest(
        [("a.txt", hashlib.sha256(b"a").hexdigest()), ("sub/b.txt", hashlib.sha256(b"bb").hexdigest())]
    )
    assert hash_location((isolated / "none").as_uri()) is None
    (isolated / "dangling").symlink_to(isolated / "nowhere")
    assert hash_location(str(isolated / "dangling")) is None


def test_a_content_audit_reports_each_artifact_and_its_progress(isolated: Path) -> None:
    """Each artifact is checked once: kept, changed or gone; progress goes 0..n; problems name run and place."""
    good, bad = isolated / "good.txt", isolated / "bad.txt"
    good.write_bytes(b"good")
    bad.write_bytes(b"bad")
    items = [
        (good.as_uri(), hashlib.sha256(b"good").hexdigest(), "run-1", "file"),
        (bad.as_uri(), hashlib.sha256(b"was").hexdigest(), "run-2", "file"),
        ((isolated / "gone").as_uri(), "ab" * 32, "run-3", None),
    ]
    calls: list[tuple[str, int, int]] = []
    report = audit_content(items, workers=0, progress=lambda *a: calls.append(a))
    assert calls == [("artifacts", i, 3) for i in range(4)]
    assert report.artifacts == 3 and report.runs == 0
    assert [(p.run_id, p.where, p.kind, p.expected, p.found) for p in report.problems] == [
        ("run-2", bad.as_uri(), "content-changed", items[1][1], hashlib.sha256(b"bad").hexdigest()),
        ("run-3", items[2][0], "content-missing", "ab" * 32, "nothing"),
    ]
    assert [p.message for p in report.problems] == [
        "stored bytes no longer hash to the recorded digest",
        "the artifact is no longer at its location",
    ]


def test_an_artifact_that_cannot_be_read_is_a_problem_not_an_abort(isolated: Path) -> None:
    """A location the digest walk refuses (a link out of the directory) is content-unreadable, with the reason."""
    (isolated / "tree").mkdir()
    (isolated / "outside.txt").write_text("o")
    (isolated / "tree/link").symlink_to(isolated / "outside.txt")
    report = audit_content([((isolated / "tree").as_uri(), "00" * 32, "run-u", "dir")])
    (problem,) = report.problems
    assert problem.kind == "content-unreadable" and problem.run_id == "run-u"
    assert problem.where == (isolated / "tree").as_uri()
    assert problem.message.startswith("cannot read the stored bytes: ") and "outside" in problem.message


def test_a_store_that_cannot_be_asked_stops_the_content_audit() -> None:
    """An unreachable object store raises (the CLI exits 2) instead of listing every artifact as a problem."""
    from scalable.errors import StoreUnreachableError

    items = [
        ("s3://bucket/a", "00" * 32, "run-1", "file"),
        ("s3://bucket/b", "00" * 32, "run-1", "file"),
    ]
    options = {
        "s3": {
            "endpoint_url": "http://127.0.0.1:9",
            "key": "k",
            "secret": "s",
            "config_kwargs": {"retries": {"max_attempts": 1}},
        }
    }
    with pytest.raises(StoreUnreachableError, match=r"^cannot reach 's3://bucket/[ab]'"):
        audit_content(items, storage_options=options)


def test_an_abort_does_not_try_the_artifacts_still_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once one artifact shows the store cannot be asked, the artifacts not yet started are not tried."""
    from scalable.errors import StoreUnreachableError
    from scalable.ledger import audit

    tried: list[str] = []
    real = audit.hash_location

    def counted(location: str, storage_options: object = None) -> str | None:
        tried.append(location)
        return real(location, storage_options)  # type: ignore[arg-type]

    monkeypatch.setattr(audit, "hash_location", counted)
    items = [(f"s3://bucket/k{i}", "00" * 32, "run-1", "file") for i in range(40)]
    options = {
        "s3": {
            "endpoint_url": "http://127.0.0.1:9",
            "key": "k",
            "secret": "s",
            "config_kwargs": {"retries": {"max_attempts": 1}},
        }
    }
    with pytest.raises(StoreUnreachableError):
        audit_content(items, storage_options=options, workers=2)
    assert len(tried) < 10


def _jobs(ledger: Ledger, isolated: Path) -> list[StreamJob]:
    paths = [_sealed(ledger, f"run-{i}", n=i + 1) for i in range(3)]
    # A stream with a foreign line, so a result carries problems to compare.
    other = paths[0].read_bytes().split(b"\n")[0]
    with paths[2].open("ab") as fh:
        fh.write(other + b"\n")
    sizes = [p.stat().st_size for p in paths]
    return [
        StreamJob(str(paths[0]), "run-0", sizes[0], sizes[0], None),
        StreamJob(str(paths[1]), "run-1", sizes[1], None, None),
        StreamJob(str(paths[2]), "run-2", sizes[2] + 500, sizes[2], None),  # it shrank since it was listed
        StreamJob(str(isolated / "gone.jsonl"), "run-3", 0, 0, None),
    ]


def _outcome(results: list[tuple[AuditReport, Tally | None]]) -> list[tuple[list[str], int, tuple[int, int] | None]]:
    return [([str(p) for p in r.problems], r.events, None if t is None else (t.count, t.digest)) for r, t in results]


def test_streams_come_back_in_the_order_of_the_jobs_with_their_tallies(ledger: Ledger, isolated: Path) -> None:
    """Each job's report and tally (None when nothing is covered) comes back in order; progress runs 0..total."""
    jobs = _jobs(ledger, isolated)
    total = sum(j.size for j in jobs)
    calls: list[tuple[str, int, int]] = []
    wait = audit_streams(jobs, None, lambda *a: calls.append(a))
    assert calls == []  # nothing is read before the results are asked for
    results = wait()
    outcome = _outcome(results)
    assert [events for _p, events, _t in outcome] == [2, 3, 5, 0]
    assert outcome[0][0] == [] and outcome[1][0] == [] and outcome[1][2] is None
    assert any("foreign-event" in p for p in outcome[2][0])
    assert outcome[0][2] is not None and outcome[0][2][0] == 2
    assert outcome[2][2] is not None and outcome[2][2][0] == 5
    assert outcome[3][2] == (0, 0)
    # Each stream's bytes as it is read, then the rest at once (the third stream shrank, the last is gone).
    sizes = [Path(j.path).stat().st_size if Path(j.path).exists() else 0 for j in jobs]
    assert calls == [
        ("streams", 0, total),
        ("streams", sizes[0], total),
        ("streams", sizes[0] + sizes[1], total),
        ("streams", sizes[0] + sizes[1] + sizes[2], total),
        ("streams", total, total),
    ]
    both = sizes[0] + sizes[1]
    calls.clear()
    audit_streams(jobs[:2], None, lambda *a: calls.append(a))()  # exact sizes: the end is reported once
    assert calls == [("streams", 0, both), ("streams", sizes[0], both), ("streams", both, both)]
    assert _outcome(audit_streams(jobs, None)()) == outcome  # without a callback: the same results


def test_worker_processes_give_the_results_of_one_process_in_job_order(
    ledger: Ledger, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audited by forked workers, the streams give the same reports and tallies, in order, with progress 0..total."""
    import threading

    jobs = _jobs(ledger, isolated)
    total = sum(j.size for j in jobs)
    alone = _outcome(audit_streams(jobs, None)())
    ledger.close()
    pools = parallel_audit_pools(monkeypatch)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    calls: list[tuple[str, int, int]] = []
    wait = audit_streams(jobs, None, lambda *a: calls.append(a))
    assert pools == [2]  # forked before the results are asked for, one worker a core
    assert _outcome(wait()) == alone
    assert calls[0] == ("streams", 0, total) and calls[-1] == ("streams", total, total)
    assert [c[1] for c in calls] == sorted(c[1] for c in calls) and len(calls) >= 2
    assert all(c[0] == "streams" and c[2] == total for c in calls)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # one core: audited here, the same answer
    assert _outcome(audit_streams(jobs, None)()) == alone
    monkeypatch.setattr(threading, "active_count", lambda: 2)  # threads running: no fork either
    assert _outcome(audit_streams(jobs, None)()) == alone
    assert pools == [2]


# ---- hand-made streams: writers, chains and version-1 seals -------------------------------


class _Stream:
    """Lines of one run written by several writers, each chained to its previous line."""

    def __init__(self, run_id: str = "run-h") -> None:
        self.run_id = run_id
        self.lines: list[bytes] = []
        self.heads: dict[str, tuple[int, str]] = {}

    def add(self, writer: str, event_type: str = "artifact", op: str = "put", **extra: object) -> bytes:
        seq, prev = self.heads.get(writer, (-1, GENESIS))
        row = {
            "event_id": f"ev-{len(self.lines):04d}",
            "event_type": event_type,
            "op": op,
            "prev": prev,
            "run_id": self.run_id,
            "schema_version": 1,
            "seq": seq + 1,
            "timestamp": f"2026-01-01T00:00:{len(self.lines):02d}.000000Z",
            "writer": writer,
            **extra,
        }
        raw = encode_line(row)[:-1]
        self.heads[writer] = (seq + 1, hashlib.sha256(raw).hexdigest())
        self.lines.append(raw)
        return raw

    def seal(self, writer: str, key: bytes | None = None, **changes: object) -> bytes:
        """A version-1 seal: the heads of every writer so far, and an HMAC of them under ``key``."""
        heads: dict[str, object] = {w: {"seq": s, "head": h} for w, (s, h) in self.heads.items()}
        seal: dict[str, object] = {"version": 1, "heads": heads, "hmac": seal_digest(self.run_id, heads, key)}
        seal.update(changes)
        return self.add(writer, "run", "finished", attrs=json.dumps({"status": "completed", "seal": seal}))

    @property
    def data(self) -> bytes:
        return b"".join(line + b"\n" for line in self.lines)

    def rows(self) -> list[dict[str, object]]:
        return [decode_line(line) for line in self.lines]


def _check(stream: _Stream, key: bytes | None = None, data: bytes | None = None) -> list[Problem]:
    problems = check_stream_bytes(stream.data if data is None else data, stream.run_id, _where, "END", key=key).problems
    assert all(p.run_id == stream.run_id for p in problems)  # every problem names the run
    return problems


def test_a_version_1_seal_holds_the_heads_of_every_writer_and_its_hmac(ledger: Ledger) -> None:
    """A v1 seal passes with or without the key when right; a wrong HMAC fails only under the key."""
    s = _Stream()
    s.add("w1")
    s.add("w2")
    s.add("w1")
    s.seal("w2", key=b"k")
    assert _check(s) == [] and _check(s, key=b"k") == []
    assert audit_rows(s.run_id, list(reversed(s.rows())), "rows", key=b"k").ok
    forged = [(p.kind, p.where, p.message) for p in _check(s, key=b"other")]
    assert forged == [
        (
            "seal-forged",
            f"L4@{len(s.data) - len(s.lines[3]) - 1}",
            "seal HMAC does not verify under SCALABLE_LEDGER_KEY",
        )
    ]
    rows = audit_rows(s.run_id, s.rows(), "rows", key=b"other").problems
    assert [(p.run_id, p.kind, p.where) for p in rows] == [(s.run_id, "seal-forged", "rows: writer w2 seq 1")]
    assert rows[0].message == "seal HMAC does not verify under SCALABLE_LEDGER_KEY"
    bare = _Stream()
    bare.add("w1")
    bare.seal("w1", hmac=None)
    assert _check(bare) == [] and [p.kind for p in _check(bare, key=b"k")] == ["seal-forged"]
    assert [p.kind for p in audit_rows(bare.run_id, bare.rows(), "rows", key=b"k").problems] == ["seal-forged"]


def test_a_seal_naming_other_heads_than_the_lines_is_a_mismatch_of_each_writer() -> None:
    """A sealed writer with no lines, a head that differs, a writer left out: each is named."""
    s = _Stream()
    s.add("w1")
    s.add("w2")
    bad_heads = {"w1": {"seq": 0, "head": "ab" * 32}, "ghost": {"seq": 3, "head": "cd" * 32}}
    s.seal("w1", heads=bad_heads)
    problems = _check(s)
    assert all(p.kind == "seal-mismatch" and p.where.startswith("L3@") for p in problems)
    assert [p.message for p in problems] == [
        "writer w1's last line before the seal differs from the sealed head (line removed, edited or truncated)",
        "sealed writer ghost has no lines before the seal",
        "writer w2 wrote before the seal but is not sealed",
    ]
    w1_head = hashlib.sha256(s.lines[0]).hexdigest()[:12]
    assert problems[0].expected == "seq 0 " + "ab" * 6 and problems[0].found == "seq 0 " + w1_head
    # The same seal checked from rows: the head that differs, the writer without lines, and the
    # rows of the writer left out, which no sealed head covers.
    rows = audit_rows(s.run_id, s.rows(), "rows").problems
    assert [(p.kind, p.where) for p in rows] == [
        ("seal-mismatch", "rows: writer w1 seq 1"),
        ("seal-mismatch", "rows: writer w1 seq 1"),
        ("after-seal", "rows: writer w2 seq 0"),
    ]
    assert rows[0].expected == "seq 0 " + "ab" * 6 and rows[0].found == w1_head
    assert rows[1].found == "missing" and rows[1].expected == "seq 3 " + "cd" * 6


def test_lines_after_the_seal_are_named_except_retirement_and_verdicts() -> None:
    """Each line after the seal is after-seal, naming the seal's line; run/retired and run/verified are not."""
    s = _Stream()
    s.add("w1")
    s.seal("w1")
    s.add("w1", "run", "verified", attrs='{"verdict":"identical"}')
    s.add("w2", "run", "retired")
    assert _check(s) == [] and audit_rows(s.run_id, s.rows(), "rows").ok
    s.add("w1", "run", "finished")  # a second seal is just a late line
    s.add("w2", "artifact", "put")
    s.add("w2", "task", "verified")  # verified, but not of the run
    late = _check(s)
    assert [p.kind for p in late] == ["after-seal"] * 3
    assert late[0].message == "event appended after the run was sealed at line 2"
    assert [p.where.split("@")[0] for p in late] == ["L5", "L6", "L7"]
    rows = audit_rows(s.run_id, s.rows(), "rows").problems
    assert sorted((p.where, p.message) for p in rows) == [
        ("rows: writer w1 seq 3", "1 event(s) of writer w1 are not covered by the seal"),
        ("rows: writer w2 seq 1", "2 event(s) of writer w2 are not covered by the seal"),
    ]
    assert all(p.run_id == s.run_id and p.kind == "after-seal" for p in rows)


def test_a_broken_link_names_the_writers_previous_line() -> None:
    """chain-broken names the line the link should hash (or says none when it is the writer's first)."""
    s = _Stream()
    s.add("w1")
    s.add("w2")
    s.heads["w1"] = (0, "ee" * 32)  # the next line of w1 links to a hash no line has
    s.add("w1")
    s.heads["w2"] = (-1, "ff" * 32)  # and w2 starts again at seq 0, linked to a non-genesis hash
    s.add("w2")
    problems = _check(s)
    first = len(s.lines[0]) + 1
    assert [(p.kind, p.where) for p in problems] == [
        ("chain-broken", f"L3@{first + len(s.lines[1]) + 1}"),
        ("seq-order", f"L4@{len(s.data) - len(s.lines[3]) - 1}"),
    ]
    assert (
        problems[0].message
        == "writer w1: prev does not hash the writer's previous line, L1@-1 (edited, or a line removed)"
    )
    assert problems[0].expected == hashlib.sha256(s.lines[0]).hexdigest() and problems[0].found == "ee" * 32
    assert problems[1].message == "writer w2 sequence broken"
    assert (problems[1].expected, problems[1].found) == ("1", "0")
    lone = _Stream()
    lone.heads["w9"] = (-1, "ab" * 32)
    lone.add("w9")
    (problem,) = _check(lone)
    assert problem.message == "writer w9: prev does not hash the writer's previous line (edited or removed)"
    assert problem.expected == GENESIS


def test_rows_are_checked_writer_by_writer_in_seq_order_with_their_places() -> None:
    """audit_rows sorts rows by writer and seq; problems name the row by ``places`` or writer and seq."""
    s = _Stream()
    for w in ("w1", "w2", "w1", "w1", "w2"):
        s.add(w)
    rows = s.rows()
    report = audit_rows(s.run_id, rows[::-1], "ds/run-h")
    assert report.ok and report.events == 5 and report.runs == 1
    gap = [r for r in rows if not (r["writer"] == "w1" and r["seq"] == 1)]
    places = [f"file.parquet: row {i}" for i in range(len(gap))]
    (problem,) = audit_rows(s.run_id, gap, "ds/run-h", places=places).problems
    assert problem.kind == "seq-gap" and problem.where == "file.parquet: row 2"
    assert problem.message == "writer w1 sequence broken (not accounted for by a tombstone)"
    assert (problem.expected, problem.found) == ("1", "2")
    edited = [dict(r) for r in rows]
    edited[0]["artifact_name"] = "edited"
    problems = audit_rows(s.run_id, edited, "ds/run-h").problems
    assert [(p.kind, p.where) for p in problems] == [("chain-broken", "ds/run-h: writer w1 seq 1")]
    assert problems[0].message == (
        "writer w1: prev does not hash the writer's previous event, ds/run-h: writer w1 seq 0 (edited, or a row removed)"
    )
    doubled = [*rows, rows[1]]
    assert [p.kind for p in audit_rows(s.run_id, doubled, "x").problems] == ["seq-order"]
    first = [dict(r) for r in rows]
    first[0]["prev"] = "ab" * 32
    problem = audit_rows(s.run_id, first, "x").problems[0]  # (the next row's link breaks too)
    assert (
        problem.kind == "chain-broken"
        and problem.message == "writer w1: prev does not hash the writer's previous event"
    )


def test_a_tombstone_accounts_for_the_retired_start_of_each_writer() -> None:
    """Rows after a run/retired tombstone continue its last seq and head; the latest tombstone counts."""
    s = _Stream()
    for _ in range(4):
        s.add("w1")
    rows = s.rows()
    hashes = [hashlib.sha256(line).hexdigest() for line in s.lines]

    def tomb(last: int, first: int = 0, head: str | None = None) -> dict[str, object]:
        info = {"first_seq": first, "last_seq": last, "head": hashes[last] if head is None else head}
        return decode_line(
            encode_line(
                {
                    "event_id": f"tomb-{last}-{first}",
                    "event_type": "run",
                    "op": "retired",
                    "prev": GENESIS,
                    "run_id": s.run_id,
                    "schema_version": 1,
                    "seq": 0,
                    "timestamp": "2026-01-02T00:00:00.000000Z",
                    "writer": "retention",
                    "attrs": json.dumps({"writers": {"w1": info}}),
                }
            )[:-1]
        )

    assert audit_rows(s.run_id, [tomb(1), *rows[2:]], "x").ok
    # Of two tombstones the one reaching further counts, in either order.
    assert audit_rows(s.run_id, [tomb(0), tomb(1), *rows[2:]], "x").problems[0].kind == "seq-order"
    assert audit_rows(s.run_id, [*rows[2:], tomb(1)], "x").ok
    two = [tomb(1), tomb(0)]
    two[1]["event_id"], two[1]["seq"] = "tomb-b", 1
    two[1]["prev"] = hashlib.sha256(encode_line(two[0])[:-1]).hexdigest()
    assert audit_rows(s.run_id, [*two, *rows[2:]], "x").ok
    # A tombstone that does not start at seq 0, or has no head, accounts for nothing.
    assert [p.kind for p in audit_rows(s.run_id, [tomb(1, first=1), *rows[2:]], "x").problems] == ["seq-gap"]
    assert [p.kind for p in audit_rows(s.run_id, [tomb(1, head=""), *rows[2:]], "x").problems] == ["seq-gap"]
    broken = audit_rows(s.run_id, [tomb(1, head="ab" * 32), *rows[2:]], "x").problems
    assert [(p.kind, p.expected) for p in broken] == [("chain-broken", "ab" * 32)]


def test_a_sealed_head_that_retention_removed_is_accounted_for_by_the_tombstone() -> None:
    """A seal head whose line was retired is not a mismatch; one beyond the tombstone still is."""
    s = _Stream()
    s.add("w1")
    s.add("w2")
    s.add("w2")
    s.seal("w2")
    rows = s.rows()
    w1_hash = hashlib.sha256(s.lines[0]).hexdigest()
    tombstone = dict(rows[0])
    tombstone.update(
        event_id="tomb",
        event_type="run",
        op="retired",
        writer="retention",
        seq=0,
        prev=GENESIS,
        attrs=json.dumps({"writers": {"w1": {"first_seq": 0, "last_seq": 0, "head": w1_hash}}}),
    )
    assert audit_rows(s.run_id, [tombstone, *rows[1:]], "x").ok
    assert [p.kind for p in audit_rows(s.run_id, rows[1:], "x").problems] == ["seal-mismatch"]


@pytest.mark.parametrize("backend", ["s3", "gcs"])
def test_hash_location_measures_objects_and_prefixes_in_a_bucket(
    backend: str, request: pytest.FixtureRequest, isolated: Path
) -> None:
    """In a bucket an object hashes to its SHA-256 and a prefix to the tree digest of the objects under it."""
    import fsspec

    name, options = request.getfixturevalue(f"{backend}_bucket")
    fs = fsspec.filesystem(backend, **options)
    fs.pipe(
        {f"{name}/d/a.txt": b"a", f"{name}/d/sub/b.txt": b"bb", f"{name}/one.bin": b"one", f"{name}/dX/a.txt": b"a"}
    )
    scheme = "gs" if backend == "gcs" else "s3"
    opts = {scheme: options}
    sha = {k: hashlib.sha256(v).hexdigest() for k, v in {"a": b"a", "b": b"bb", "one": b"one"}.items()}
    assert hash_location(f"{scheme}://{name}/one.bin", opts) == sha["one"]
    tree = tree_digest([("a.txt", sha["a"]), ("sub/b.txt", sha["b"])])
    assert hash_location(f"{scheme}://{name}/d", opts) == tree
    assert hash_location(f"{scheme}://{name}/d/", opts) == tree
    assert hash_location(f"{scheme}://{name}/dX/", opts) == tree_digest([("a.txt", sha["a"])])
    assert hash_location(f"{scheme}://{name}/none.bin", opts) is None
    fs.pipe({f"{name}/empty/": b"", f"{name}/empty/sub/": b""})  # folder markers only: an empty directory
    fs.invalidate_cache()
    assert hash_location(f"{scheme}://{name}/empty/", opts) == tree_digest([])
    fs.pipe({f"{name}/sp /a.txt": b"a", f"{name}/sp/b.txt": b"bb"})  # a name ending in a blank keeps it
    fs.invalidate_cache()
    assert hash_location(f"{scheme}://{name}/sp ", opts) == tree_digest([("a.txt", sha["a"])])
    report = audit_content(
        [(f"{scheme}://{name}/one.bin", sha["one"], "r", "file"), (f"{scheme}://{name}/d", "00" * 32, "r", "dir")],
        storage_options=opts,
    )
    assert [(p.kind, p.found) for p in report.problems] == [("content-changed", tree)]


def test_only_the_latest_record_of_each_location_is_checked_and_deleted_ones_not(
    ledger: Ledger, isolated: Path
) -> None:
    """The content audit takes each location's latest put or record; a location deleted last is left out."""
    from scalable.ledger.audit import audit_ledger, latest_artifacts
    from scalable.ledger.views import connect

    x, y = isolated / "x.txt", isolated / "y.txt"
    x.write_bytes(b"new")
    y.write_bytes(b"y")
    old, new = hashlib.sha256(b"old").hexdigest(), hashlib.sha256(b"new").hexdigest()
    with bind(run_id="run-a"):
        ledger.append({"event_type": "artifact", "op": "recorded", "location": x.as_uri(), "digest": old})
        ledger.append(
            {"event_type": "artifact", "op": "put", "location": y.as_uri(), "digest": "00" * 32, "kind": "file"}
        )
    with bind(run_id="run-b"):
        ledger.append({"event_type": "artifact", "op": "put", "location": x.as_uri(), "digest": new, "kind": "file"})
        ledger.append({"event_type": "artifact", "op": "deleted", "location": y.as_uri()})
        ledger.append({"event_type": "artifact", "op": "get", "location": x.as_uri(), "digest": old})
    con = connect(ledger, trusted=True)
    try:
        assert latest_artifacts(con) == [(x.as_uri(), new, "run-b", "file")]
        assert latest_artifacts(con, "run-b") == [(x.as_uri(), new, "run-b", "file")]
        assert latest_artifacts(con, "run-a") == []
    finally:
        con.close()
    report = audit_ledger(ledger)
    assert report.ok and report.artifacts == 1 and report.runs == 2 and report.events == 5
    assert audit_ledger(ledger, "run-a").artifacts == 0
    x.write_bytes(b"changed")
    assert [p.kind for p in audit_ledger(ledger).problems] == ["content-changed"]
    structure = audit_ledger(ledger, content=False)
    assert structure.ok and structure.artifacts == 0 and structure.runs == 2


def test_a_version_2_seal_is_checked_from_rows_as_from_the_stream(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From rows, a changed sealing row is a seal-mismatch and a wrong key a forged seal, at the seal's place."""
    monkeypatch.setenv("SCALABLE_LEDGER_KEY", "k3y")
    ledger = Ledger.open()
    path = _sealed(ledger, "run-v2")
    ledger.close()
    rows = [decode_line(line) for line in path.read_bytes().split(b"\n")[:-1]]
    sealer = rows[-1]
    place = f"rows: writer {sealer['writer']} seq {sealer['seq']}"
    assert audit_rows("run-v2", rows, "rows", key=b"k3y").ok
    assert audit_rows("run-v2", rows, "rows").ok
    (forged,) = audit_rows("run-v2", rows, "rows", key=b"other").problems
    assert (forged.run_id, forged.where, forged.kind) == ("run-v2", place, "seal-forged")
    assert forged.message == "seal HMAC does not verify under SCALABLE_LEDGER_KEY"
    changed = [*rows[:-1], {**sealer, "timestamp": "2000-01-01T00:00:00.000000Z"}]
    (problem,) = audit_rows("run-v2", changed, "rows").problems
    assert (problem.run_id, problem.where, problem.kind) == ("run-v2", place, "seal-mismatch")
    assert problem.message == "the sealing line was changed after it was written (its own digest does not match)"


def test_row_problems_name_their_run_and_what_was_found() -> None:
    """Every problem found in rows carries the run id; a broken link shows the prev found."""
    s = _Stream("run-r")
    s.add("w1")
    s.add("w1")
    rows = s.rows()
    rows[1]["prev"] = "ab" * 32
    (problem,) = audit_rows("run-r", rows, "x").problems
    assert (problem.run_id, problem.kind, problem.found) == ("run-r", "chain-broken", "ab" * 32)
    (gap,) = audit_rows("run-r", rows[1:], "x").problems
    assert (gap.run_id, gap.kind) == ("run-r", "seq-gap")


def test_a_seal_row_without_attributes_seals_no_other_writer() -> None:
    """A run/finished row without attrs is a seal with no heads: the rows of other writers are not covered."""
    s = _Stream()
    s.add("w2")
    s.add("w1")
    s.add("w1", "run", "finished")
    problems = audit_rows(s.run_id, s.rows(), "x").problems
    assert [(p.kind, p.where) for p in problems] == [("after-seal", "x: writer w2 seq 0")]


def _tombstone(
    run_id: str, writers: dict[str, dict[str, object]], seq: int = 0, prev: str = GENESIS
) -> dict[str, object]:
    return decode_line(
        encode_line(
            {
                "event_id": f"tomb-{seq}",
                "event_type": "run",
                "op": "retired",
                "prev": prev,
                "run_id": run_id,
                "schema_version": 1,
                "seq": seq,
                "timestamp": "2026-01-02T00:00:00.000000Z",
                "writer": "retention",
                "attrs": json.dumps({"writers": writers}),
            }
        )[:-1]
    )


def test_of_several_tombstones_the_one_reaching_furthest_counts_and_the_first_of_equals() -> None:
    """Tombstones are compared by last_seq, in the order of the rows; one without last_seq reaches nowhere."""
    s = _Stream()
    for _ in range(4):
        s.add("w1")
    rows = s.rows()
    hashes = [hashlib.sha256(line).hexdigest() for line in s.lines]

    def chained(*infos: dict[str, object]) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        prev = GENESIS
        for seq, info in enumerate(infos):
            row = _tombstone(s.run_id, {"w1": info}, seq, prev)
            prev = hashlib.sha256(encode_line(row)[:-1]).hexdigest()
            out.append(row)
        return out

    reach = [{"first_seq": 0, "last_seq": n, "head": hashes[n]} for n in range(4)]
    assert audit_rows(s.run_id, [*chained(reach[0], reach[1]), *rows[2:]], "x").ok
    assert audit_rows(s.run_id, [*chained(reach[1], reach[0]), *rows[2:]], "x").ok
    wrong = {"first_seq": 0, "last_seq": 1, "head": "ab" * 32}
    assert audit_rows(s.run_id, [*chained(reach[1], wrong), *rows[2:]], "x").ok
    assert not audit_rows(s.run_id, [*chained(wrong, reach[1]), *rows[2:]], "x").ok
    partial = {"first_seq": 0, "head": hashes[1]}
    assert audit_rows(s.run_id, [*chained(partial, reach[1]), *rows[2:]], "x").ok
    assert audit_rows(s.run_id, [*chained(reach[1], partial), *rows[2:]], "x").ok


def test_a_sealed_head_beyond_the_tombstone_must_be_there() -> None:
    """A seal head the tombstone does not reach, with no row for it, is a mismatch ('missing')."""
    s = _Stream()
    s.add("w1")
    s.add("w1")
    s.seal("w2")
    rows = s.rows()
    tomb = _tombstone(s.run_id, {"w1": {"first_seq": 0, "last_seq": 0, "head": hashlib.sha256(s.lines[0]).hexdigest()}})
    problems = audit_rows(s.run_id, [tomb, rows[2]], "x").problems
    assert [(p.kind, p.expected, p.found) for p in problems] == [
        ("seal-mismatch", f"seq 1 {s.heads['w1'][1][:12]}", "missing")
    ]
    assert problems[0].run_id == s.run_id and problems[0].where == "x: writer w2 seq 0"
    assert problems[0].message == "writer w1's sealed head does not match its events"
    assert audit_rows(s.run_id, [tomb, *rows[1:]], "x").ok


def test_a_retired_sealed_head_does_not_stop_the_check_of_the_next() -> None:
    """After a head the tombstone accounts for, the other writers' heads are still checked."""
    s = _Stream()
    s.add("w1")
    s.add("w2")
    s.seal("w3", heads={"w1": {"seq": 0, "head": "11" * 32}, "w2": {"seq": 0, "head": "22" * 32}})
    rows = s.rows()
    tomb = _tombstone(s.run_id, {"w1": {"first_seq": 0, "last_seq": 0, "head": "11" * 32}})
    problems = audit_rows(s.run_id, [tomb, *rows[1:]], "x").problems
    assert [(p.kind, p.message) for p in problems] == [
        ("seal-mismatch", "writer w2's sealed head does not match its events")
    ]


@pytest.mark.parametrize(
    "attrs",
    [
        "not json",
        "[1, 2]",
        '{"seal": "text"}',
        '{"seal": {"heads": [1]}}',
        '{"seal": {"heads": {"w": 5}}}',
        '{"seal": {"heads": {"w": {"head": "ab"}}}}',
    ],
)
def test_a_seal_whose_attrs_were_edited_into_no_seal_is_reported_not_a_crash(
    ledger: Ledger, cli: CliInvoker, attrs: str
) -> None:
    """Attrs of the sealing line that are no JSON object with a seal fail the audit (exit 1), in a stream and in rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _sealed(ledger, "run-e")
    lines = path.read_bytes().split(b"\n")[:-1]
    sealing = decode_line(lines[-1])
    edited = encode_line({**sealing, "attrs": attrs})[:-1]
    path.write_bytes(b"".join(line + b"\n" for line in [*lines[:-1], edited]))
    problems = ledger.audit("run-e", content=False).problems
    assert ("seal-mismatch", f"{path}:{len(lines)}") in {(p.kind, p.where) for p in problems}
    unreadable = [
        p for p in problems if p.message == "the sealing event's attrs hold no readable seal (the line was edited)"
    ]
    assert [(p.run_id, p.where) for p in unreadable] == [("run-e", f"{path}:{len(lines)}")]
    result = cli("ledger", "audit", "run-e", "--no-content")
    assert result.exit_code == 1 and "seal-mismatch" in result.stdout
    # The same edit in the compacted rows of a retired stream.
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    ledger.compact(keep_jsonl=False)
    parquet = next((ledger.ledger_dir / "events").rglob("*.parquet"))
    table = pq.read_table(parquet)
    rows = table.to_pylist()
    index = next(i for i, r in enumerate(rows) if r["op"] == "finished")
    rows[index]["attrs"] = attrs
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), parquet)
    kinds = {(p.kind, p.where) for p in ledger.audit("run-e", content=False).problems}
    assert ("seal-mismatch", f"{parquet}: row {index + 1}") in kinds
    sealing_row = decode_line(edited)
    unreadable = [p for p in audit_rows("run-e", [sealing_row], "x").problems if p.kind == "seal-mismatch"]
    assert [p.run_id for p in unreadable] == ["run-e"]
    assert cli("ledger", "audit", "run-e", "--no-content").exit_code == 1


@pytest.mark.parametrize(
    "attrs",
    ["not json", '{"writers": [1]}', '{"writers": {"w1": 5}}', '{"writers": {"w1": {"first_seq": 0, "head": "ab"}}}'],
)
def test_a_tombstone_edited_into_nonsense_accounts_for_nothing(attrs: str) -> None:
    """A run/retired row whose attrs name no writer's last seq removes no need for the rows before: a seq-gap."""
    s = _Stream()
    s.add("w1")
    s.add("w1")
    tomb = _tombstone(s.run_id, {})
    tomb["attrs"] = attrs
    problems = audit_rows(s.run_id, [tomb, s.rows()[1]], "x").problems
    assert [(p.kind, p.where) for p in problems] == [("seq-gap", "x: writer w1 seq 1")]


def test_a_seal_without_a_version_is_a_version_1_seal() -> None:
    """A seal that names no version is checked as version 1: under a key its HMAC must verify."""
    s = _Stream()
    s.add("w1")
    s.seal("w1", key=b"k")
    unversioned = decode_line(s.lines[-1])
    attrs = json.loads(str(unversioned["attrs"]))
    del attrs["seal"]["version"]
    s.lines[-1] = encode_line({**unversioned, "attrs": json.dumps(attrs)})[:-1]
    assert _check(s, key=b"k") == []
    assert [p.kind for p in _check(s, key=b"other")] == ["seal-forged"]
    assert [p.kind for p in audit_rows(s.run_id, s.rows(), "x", key=b"other").problems] == ["seal-forged"]


def test_only_run_retired_rows_are_tombstones_and_each_writer_of_one_counts() -> None:
    """A tombstone's writers are read one by one (a broken entry skips only itself); other events' attrs are no tombstone."""
    s = _Stream()
    s.add("w1")
    s.add("w1")
    s.add("w2")
    s.add("w2")
    rows = s.rows()
    heads = {w: hashlib.sha256(s.lines[i]).hexdigest() for w, i in (("w1", 0), ("w2", 2))}
    good = {"first_seq": 0, "last_seq": 0}
    writers = {"w0": "broken", "w1": {**good, "head": heads["w1"]}, "w2": {**good, "head": heads["w2"]}}
    assert audit_rows(s.run_id, [_tombstone(s.run_id, writers), rows[1], rows[3]], "x").ok
    for event_type, op in (("run", "started"), ("artifact", "retired")):
        other = {**_tombstone(s.run_id, writers), "event_type": event_type, "op": op}
        kinds = [p.kind for p in audit_rows(s.run_id, [other, rows[1], rows[3]], "x").problems]
        assert kinds == ["seq-gap", "seq-gap"], (event_type, op)


@pytest.mark.parametrize("column", ["seq", "writer", "event_id", "prev", "run_id", "timestamp", "event_type", "op"])
def test_a_line_with_a_wrong_typed_column_is_malformed(ledger: Ledger, column: str) -> None:
    """A line whose required column has the wrong JSON type (seq a string, the others numbers) is a malformed line."""
    data = _sealed(ledger).read_bytes()
    lines = data.split(b"\n")[:-2]  # no seal: only the wrong line is wrong
    event = json.loads(lines[1])
    event[column] = str(event[column]) if column == "seq" else 7
    bad = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    report = check_stream_bytes(b"".join(line + b"\n" for line in [lines[0], bad]), "run-p", _where, "END")
    assert [(p.kind, p.where) for p in report.problems] == [("malformed-line", f"L2@{len(lines[0]) + 1}")]
    assert column in report.problems[0].message
    assert report.events == 1


@pytest.mark.parametrize("count", range(2, 8))
def test_a_line_with_several_columns_of_one_wrong_type_is_malformed(ledger: Ledger, count: int) -> None:
    """Required text columns that are all numbers (the first ``count`` of them) make a malformed line too."""
    data = _sealed(ledger).read_bytes()
    lines = data.split(b"\n")[:-2]
    event = json.loads(lines[1])
    for column in ["writer", "event_id", "prev", "run_id", "timestamp", "event_type", "op"][:count]:
        event[column] = 7
    bad = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    report = check_stream_bytes(b"".join(line + b"\n" for line in [lines[0], bad]), "run-p", _where, "END")
    assert [p.kind for p in report.problems] == ["malformed-line"] and report.events == 1


def test_a_sequence_gap_is_caught_even_when_the_link_holds() -> None:
    """A line whose seq skips ahead but whose prev hashes the writer's previous line is still a seq-gap."""
    s = _Stream()
    s.add("w1")
    s.heads["w1"] = (1, s.heads["w1"][1])  # the next line numbers 2, linked to line 0 correctly
    s.add("w1")
    (problem,) = _check(s)
    assert (problem.kind, problem.expected, problem.found) == ("seq-gap", "1", "2")


def test_a_line_stamped_exactly_at_the_retention_cutoff_is_kept() -> None:
    """Lines older than ``retired_before`` are not counted; one stamped at the cutoff itself is."""
    s = _Stream()
    for _ in range(3):
        s.add("w1")
    cutoff = str(decode_line(s.lines[1])["timestamp"])
    tally = Tally()
    check_stream_bytes(s.data, s.run_id, _where, "END", covered=len(s.data), retired_before=cutoff, tally=tally)
    assert tally.count == 2


def test_a_version_2_seal_names_the_changed_bytes_before_it_and_its_own_line(ledger: Ledger) -> None:
    """A v2 seal catches an edit anywhere before it (with both digests) and an edit of its own line, at its line."""
    data = _sealed(ledger).read_bytes()
    lines = data.split(b"\n")[:-1]
    seal = json.loads(str(decode_line(lines[-1])["attrs"]))["seal"]
    at = len(data) - len(lines[-1]) - 1
    edited = [lines[0], lines[1].replace(b'"a1"', b'"b1"'), *lines[2:]]
    blob = b"".join(line + b"\n" for line in edited)
    problems = check_stream_bytes(blob, "run-p", _where, "END").problems
    before = [p for p in problems if p.message.startswith("the bytes before the seal")]
    assert [(p.run_id, p.where, p.kind) for p in before] == [("run-p", f"L{len(lines)}@{at}", "seal-mismatch")]
    assert before[0].message == (
        "the bytes before the seal are not those sealed (a line edited, removed, inserted or moved)"
    )
    assert before[0].expected == seal["stream"][:12]
    assert before[0].found == hashlib.sha256(blob[:at]).hexdigest()[:12]
    sealing = decode_line(lines[-1])
    own = encode_line({**sealing, "timestamp": "2000-01-01T00:00:00.000000Z"})[:-1]
    (problem,) = check_stream_bytes(data[:at] + own + b"\n", "run-p", _where, "END").problems
    assert (problem.run_id, problem.where, problem.kind) == ("run-p", f"L{len(lines)}@{at}", "seal-mismatch")
    assert problem.message == "the sealing line was changed after it was written (its own digest does not match)"
    unreadable = encode_line({**sealing, "attrs": "[]"})[:-1]
    found = check_stream_bytes(data[:at] + unreadable + b"\n", "run-p", _where, "END").problems
    assert ("run-p", f"L{len(lines)}@{at}") in {(p.run_id, p.where) for p in found if "no readable seal" in p.message}


def test_a_tally_adds_up_across_the_streams_counted_into_it(ledger: Ledger) -> None:
    """Counting two streams into one tally gives the sum of their counts and digests."""
    one, two = _sealed(ledger, "run-1").read_bytes(), _sealed(ledger, "run-2").read_bytes()
    apart = [Tally(), Tally()]
    check_stream_bytes(one, "run-1", _where, "END", covered=len(one), tally=apart[0])
    check_stream_bytes(two, "run-2", _where, "END", covered=len(two), tally=apart[1])
    both = Tally()
    check_stream_bytes(one, "run-1", _where, "END", covered=len(one), tally=both)
    check_stream_bytes(two, "run-2", _where, "END", covered=len(two), tally=both)
    assert (both.count, both.digest) == (apart[0].count + apart[1].count, apart[0].digest + apart[1].digest)
