"""A run's stream read directly: complete lines and torn tails, listing, writer heads, and seals."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

import pytest

from scalable.errors import EventValidationError
from scalable.ledger.events import GENESIS, encode_line
from scalable.ledger.stream import (
    SEAL_VERSION,
    STREAM_NAME,
    ChainHeads,
    LineProblem,
    compact_json,
    complete_prefix,
    ends_sealed,
    ends_torn,
    iter_complete,
    list_streams,
    new_seal,
    prefix_digest,
    read_stream,
    seal_digest,
    seal_line_problem,
    sign_seal_line,
    stream_files,
    stream_path,
)


def line(seq: int, writer: str = "w1", event_type: str = "artifact", op: str = "put", run: str = "run-s") -> bytes:
    """One encoded event line (with its newline)."""
    return encode_line(
        {
            "event_id": f"0190a0b0-c0d0-7000-8000-{seq:012x}",
            "event_type": event_type,
            "op": op,
            "timestamp": "2026-01-01T00:00:00.000000Z",
            "run_id": run,
            "writer": writer,
            "seq": seq,
            "prev": GENESIS,
            "schema_version": 1,
        }
    )


# --- reading --------------------------------------------------------------------------------


def test_a_reader_skips_blank_lines_reports_bad_ones_by_number_and_leaves_the_torn_tail(tmp_path: Path) -> None:
    """Good lines come with their 1-based numbers; a bad line is a problem naming file and line; the tail is no problem."""
    path = tmp_path / STREAM_NAME
    path.write_bytes(line(0) + b"\n" + b"{not json\n" + line(1) + b'{"torn')
    reader = read_stream(path)
    assert [(n, e["seq"]) for n, e in reader] == [(1, 0), (4, 1)]
    assert [str(p) for p in reader.problems] == [f"{path}:3: malformed line: {reader.problems[0].reason[16:]}"]
    assert reader.problems[0].reason.startswith("malformed line: ")
    assert (reader.problems[0].path, reader.problems[0].line) == (str(path), 3)
    assert reader.incomplete_tail is True
    assert [raw for _n, raw, _e in read_stream(path).lines()] == [line(0)[:-1], line(1)[:-1]]
    assert [e.seq for e in read_stream(path).events()] == [0, 1]


def test_a_reader_of_a_whole_stream_has_no_tail_and_of_a_missing_one_no_lines(tmp_path: Path) -> None:
    """A stream ending in a newline has no incomplete tail; a stream not there yields nothing and no problem."""
    path = tmp_path / STREAM_NAME
    path.write_bytes(line(0))
    reader = read_stream(path)
    assert len(list(reader)) == 1 and reader.incomplete_tail is False and reader.problems == []
    missing = read_stream(tmp_path / "nothing" / STREAM_NAME)
    assert list(missing) == [] and missing.problems == []


def test_lines_of_gives_the_byte_offset_of_each_line(tmp_path: Path) -> None:
    """``lines_of`` yields each good line's number, the offset where it starts, and its bytes."""
    data = line(0) + b"\n" + line(1)
    found = list(read_stream(tmp_path / "x").lines_of(data))
    assert [(n, off, raw) for n, off, raw, _e in found] == [
        (1, 0, line(0)[:-1]),
        (3, len(line(0)) + 1, line(1)[:-1]),
    ]


def test_iter_complete_gives_the_offset_after_each_whole_line_and_stops_at_the_tail(tmp_path: Path) -> None:
    """Offsets after each readable line; a malformed line is passed over; a torn last line ends the reading."""
    path = tmp_path / STREAM_NAME
    path.write_bytes(line(0) + b"garbage\n" + line(1) + line(2)[:-5])
    first, second = len(line(0)), len(line(0)) + len(b"garbage\n") + len(line(1))
    assert [(off, e["seq"]) for off, e in iter_complete(path)] == [(first, 0), (second, 1)]
    assert list(iter_complete(tmp_path / "missing")) == []


@pytest.mark.parametrize("size", [0, 1, 5, 70000, 140001])
def test_complete_prefix_ends_after_the_last_newline_within_size(tmp_path: Path, size: int) -> None:
    """The complete prefix of the first ``size`` bytes ends just after their last newline (0 when there is none)."""
    data = (b"x" * 69999 + b"\n") + b"y" * 3 + b"\n" + b"z" * 70000 + b"\n"
    path = tmp_path / "s"
    path.write_bytes(data)
    expected = data[:size].rfind(b"\n") + 1
    assert complete_prefix(path, size) == expected
    path.write_bytes(b"no newline at all" * 5000)
    assert complete_prefix(path, min(size, path.stat().st_size)) == 0


def test_ends_torn_is_false_for_an_empty_stream_and_true_only_without_the_final_newline(tmp_path: Path) -> None:
    """An empty stream is not torn; one ending in a newline is not; one ending mid-line is."""
    path = tmp_path / "s"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDWR)
    try:
        assert ends_torn(fd, 0) is False
        os.write(fd, b"ab\n")
        assert ends_torn(fd, 3) is False
        assert ends_torn(fd, 2) is True
    finally:
        os.close(fd)


# --- listing --------------------------------------------------------------------------------


def test_streams_are_listed_by_run_id_with_their_sizes(tmp_path: Path) -> None:
    """Every run directory holding a stream, sorted, with its size; other entries are passed over."""
    runs = tmp_path / "runs"
    for run, size in (("run-b", 3), ("run-a", 5)):
        (runs / run).mkdir(parents=True)
        (runs / run / STREAM_NAME).write_bytes(b"x" * size)
    (runs / "run-empty").mkdir()
    (runs / "stray-file").write_text("not a run")
    assert list(list_streams(runs)) == [
        ("run-a", runs / "run-a" / STREAM_NAME, 5),
        ("run-b", runs / "run-b" / STREAM_NAME, 3),
    ]
    assert list(stream_files(runs)) == [
        ("run-a", str(runs / "run-a" / STREAM_NAME), 5),
        ("run-b", str(runs / "run-b" / STREAM_NAME), 3),
    ]
    assert list(list_streams(tmp_path / "no-runs-yet")) == []


def test_stream_path_refuses_a_run_id_that_is_not_one_segment(tmp_path: Path) -> None:
    """A run id with a separator or ``..`` is refused before any path is built."""
    assert stream_path(tmp_path, "run-1") == tmp_path / "run-1" / STREAM_NAME
    for bad in ("../x", "a/b", ".."):
        with pytest.raises(EventValidationError):
            stream_path(tmp_path, bad)


# --- writer heads ---------------------------------------------------------------------------


def test_a_writer_head_is_its_line_at_the_highest_offset_and_order_follows_first_lines() -> None:
    """Lines added out of order: the head is the latest line; writers and types keep the order of their first line."""
    heads = ChainHeads()
    heads.add("w2", 100, 150, 5, "h-late")
    heads.add("w1", 10, 10, 0, "h-first")
    heads.add("w2", 50, 60, 2, "h-early")  # an earlier part of w2, scanned later
    assert heads.heads() == {"w1": {"seq": 0, "head": "h-first"}, "w2": {"seq": 5, "head": "h-late"}}
    assert list(heads.heads()) == ["w1", "w2"]
    heads.add("w1", 5, 5, 9, "h-before")  # a line before w1's first: w1 still first, head unchanged
    assert heads.heads()["w1"] == {"seq": 0, "head": "h-first"}
    heads.add("w1", 150, 150, 1, "h-same-offset")  # the same offset as w2's head: the later call wins for w1
    assert heads.heads()["w1"]["head"] == "h-same-offset"
    heads.add("w3", 70, 70, 0, "h-w3")  # after w2's earliest line, before its first-added one
    assert list(heads.heads()) == ["w1", "w2", "w3"]
    heads.count("cache", 40, 2)
    heads.count("artifact", 30)
    heads.count("cache", 20)
    heads.count("run", 25)
    assert heads.counts() == {"cache": 3, "artifact": 1, "run": 1}
    assert list(heads.counts()) == ["cache", "run", "artifact"]


def test_scanning_a_range_in_small_reads_equals_one_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines split across reads are joined at their true offsets; a torn tail past the range's end is not a line."""
    from scalable.ledger import stream

    long = encode_line({**json.loads(line(0)), "attrs": json.dumps({"pad": "x" * 2000})})
    data = long + line(0, writer="w2", event_type="cache", op="hit") + line(1) + b"{torn"
    path = tmp_path / "s"
    path.write_bytes(b"PREFIX\n" + data)
    whole = ChainHeads()
    whole.scan(data, 7)
    for chunk in (1, 7, 64, 1 << 20):
        monkeypatch.setattr(stream, "_CHUNK", chunk)
        parts = ChainHeads()
        fd = os.open(path, os.O_RDONLY)
        try:
            parts.scan_range(fd, 7, path.stat().st_size + 100)
        finally:
            os.close(fd)
        assert parts.heads() == whole.heads() and list(parts.heads()) == ["w1", "w2"]
        assert parts.counts() == whole.counts() == {"artifact": 2, "cache": 1}
    assert whole.heads()["w1"] == {"seq": 1, "head": hashlib.sha256(line(1)[:-1]).hexdigest()}
    assert list(whole.counts()) == ["artifact", "cache"]


# --- seals ----------------------------------------------------------------------------------


def test_prefix_digest_covers_the_bytes_and_the_newline_a_torn_stream_gets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest of a stream's first bytes; a stream ending mid-line counts the newline the next writer adds."""
    from scalable.ledger import stream

    path = tmp_path / "s"
    path.write_bytes(line(0) + b'{"torn')
    fd = os.open(path, os.O_RDONLY)
    try:
        whole = len(line(0))
        assert prefix_digest(fd, whole) == hashlib.sha256(line(0)).hexdigest()
        size = path.stat().st_size
        expected = hashlib.sha256(line(0) + b'{"torn\n').hexdigest()
        assert prefix_digest(fd, size) == expected
        monkeypatch.setattr(stream, "_CHUNK", 3)
        assert prefix_digest(fd, size) == expected
        assert prefix_digest(fd, whole) == hashlib.sha256(line(0)).hexdigest()
        for cut in (1, 2):  # sizes off the read size: the last read stops at the size, not a whole chunk on
            assert prefix_digest(fd, whole - cut) == hashlib.sha256(line(0)[:-cut] + b"\n").hexdigest()
        assert prefix_digest(fd, 0) == hashlib.sha256(b"").hexdigest()
    finally:
        os.close(fd)


def test_a_new_seal_holds_zeros_for_its_own_digests_until_signed() -> None:
    """``new_seal`` names the version, heads and stream digest, with zeros for ``line`` (and ``hmac`` when keyed)."""
    heads = {"w1": {"seq": 0, "head": "ab" * 32}}
    plain = new_seal(heads, "cd" * 32, keyed=False)
    assert plain == {"version": SEAL_VERSION, "heads": heads, "stream": "cd" * 32, "line": GENESIS}
    assert new_seal(heads, "cd" * 32, keyed=True) == {**plain, "hmac": GENESIS}
    assert SEAL_VERSION == 2


def _sealing_line(keyed: bool) -> bytes:
    seal = new_seal({"w1": {"seq": 0, "head": "ab" * 32}}, "cd" * 32, keyed=keyed)
    attrs = compact_json({"status": "completed", "seal": seal})
    event = json.loads(line(1, event_type="run", op="finished"))
    return encode_line({**event, "attrs": attrs})[:-1]


@pytest.mark.parametrize("key", [None, b"k3y"])
def test_a_signed_sealing_line_verifies_and_any_change_is_found(key: bytes | None) -> None:
    """The line's own digest (and HMAC) cover the line with zeros in their places; a changed byte or key fails."""
    blank = _sealing_line(keyed=key is not None)
    signed = sign_seal_line(blank, key)
    seal = json.loads(json.loads(signed)["attrs"])["seal"]
    assert seal["line"] == hashlib.sha256(blank).hexdigest()
    if key:
        assert seal["hmac"] == hmac.new(key, blank, hashlib.sha256).hexdigest()
        assert seal_line_problem(signed, seal, b"other") == (
            "seal-forged",
            "seal HMAC does not verify under SCALABLE_LEDGER_KEY",
        )
    else:
        assert "hmac" not in seal
    assert seal_line_problem(signed, seal, key) is None
    changed = signed.replace(b'"completed', b'"Completed')
    assert seal_line_problem(changed, seal, key) == (
        "seal-mismatch",
        "the sealing line was changed after it was written (its own digest does not match)",
    )
    moved = {**seal, "line": "ef" * 32}
    assert seal_line_problem(signed, moved, key) == (
        "seal-mismatch",
        "the seal's line value is not where the sealing line keeps it",
    )


def test_a_sealing_line_without_its_line_digest_does_not_verify() -> None:
    """A seal that lost its ``line`` value is a mismatch, not a pass."""
    signed = sign_seal_line(_sealing_line(keyed=False), None)
    seal = json.loads(json.loads(signed)["attrs"])["seal"]
    del seal["line"]
    kind, _message = seal_line_problem(signed, seal, None) or ("", "")
    assert kind == "seal-mismatch"


def test_a_version_1_seal_digest_is_the_hmac_of_its_sorted_heads() -> None:
    """Version-1 seals: the HMAC over run id and heads (sorted by writer); none without a key."""
    heads = {"w2": {"seq": 1, "head": "b"}, "w1": {"seq": 0, "head": "a"}}
    assert seal_digest("run-1", heads, None) is None
    assert seal_digest("run-1", heads, b"") is None
    message = b'{"run_id":"run-1","heads":{"w1":{"seq":0,"head":"a"},"w2":{"seq":1,"head":"b"}}}'
    assert seal_digest("run-1", heads, b"k") == hmac.new(b"k", message, hashlib.sha256).hexdigest()
    assert seal_digest("run-1", dict(reversed(heads.items())), b"k") == seal_digest("run-1", heads, b"k")


def test_compact_json_keeps_insertion_order_and_unicode() -> None:
    """The ledger's own attrs text: no spaces, keys as given, non-ASCII kept, NaN refused."""
    assert compact_json({"b": 1, "a": "é"}) == '{"b":1,"a":"é"}'
    with pytest.raises(ValueError):
        compact_json({"x": float("nan")})


def test_a_line_problem_reads_as_file_line_and_reason() -> None:
    """``str(problem)`` is ``path:line: reason``."""
    assert str(LineProblem("/r/s.jsonl", 7, "malformed line: x")) == "/r/s.jsonl:7: malformed line: x"


def test_a_reader_given_the_bytes_reads_them_and_not_the_file(tmp_path: Path) -> None:
    """A stream put together elsewhere (from segments) is read from the bytes given, not from any file."""
    path = tmp_path / "nothing-here" / STREAM_NAME
    reader = read_stream(path)
    reader.data = line(0) + line(1)
    assert [e["seq"] for _n, e in reader] == [0, 1]
    path.parent.mkdir()
    path.write_bytes(line(5))
    assert [e["seq"] for _n, _raw, e in reader.lines()] == [0, 1]


def test_complete_prefix_of_nothing_needs_no_file_and_of_one_newline_is_that_byte(tmp_path: Path) -> None:
    """Zero bytes have an empty prefix without the file being opened; a lone newline is a whole (empty) line."""
    assert complete_prefix(tmp_path / "not-there", 0) == 0
    path = tmp_path / "s"
    path.write_bytes(b"\nrest")
    assert complete_prefix(path, 1) == 1


def test_a_stream_is_sealed_only_by_a_finished_line_with_nothing_but_retirements_and_verdicts_after_it(
    tmp_path: Path,
) -> None:
    """``ends_sealed`` reads back from the end past verdicts and retirements, and stops at any other line."""

    def run_line(op: str) -> bytes:
        return json.dumps({"event_type": "run", "op": op, "run_id": "run-e"}).encode() + b"\n"

    put = json.dumps({"event_type": "artifact", "op": "put", "run_id": "run-e"}).encode() + b"\n"
    path = tmp_path / "events.jsonl"
    cases = {
        b"": False,
        run_line("finished"): True,
        run_line("finished") + run_line("verified") + b"\n" + run_line("retired"): True,
        run_line("finished") + run_line("verified") + b'{"torn': True,  # a line still being written is not read
        run_line("finished") + put + run_line("verified"): False,
        run_line("finished") + run_line("started"): False,
        run_line("verified") + run_line("retired"): False,  # no seal before them
        b"\n\n": False,
        put + run_line("finished") + b"x" * 10_000 + b"\n": False,
    }
    for data, sealed in cases.items():
        path.write_bytes(data)
        assert ends_sealed(path) is sealed, data[-80:]
