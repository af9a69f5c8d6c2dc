"""Run ids: one alphabet, refused at every entry, and runs named like patterns of each other stay apart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalable.errors import EventValidationError
from scalable.ledger import bind
from scalable.ledger.events import GENESIS, RUN_ID_ALPHABET, encode_line, new_event_id, now
from scalable.ledger.log import Ledger
from tests.conftest import CliInvoker

GLOB = ["run[1]", "run]1", "run?", "run*", "run{a,b}", "run}", "[", "*", "?"]
OTHERS = [
    "",
    ".",
    "..",
    ".hidden",
    "-dash-first",
    "a/b",
    "a\\b",
    "run 1",
    "run\t1",
    "run\n1",
    "run\x00",
    "run:1",
    "run;1",
    "run'1",
    'run"1',
    "run$1",
    "run%1",
    "run~1",
    "run@1",
    "run#1",
    "run&1",
    "run|1",
    "run=1",
    "run,1",
    "rün",
    "run\u2028",
    "r" * 201,
]
BAD = GLOB + OTHERS


def _count(ledger: Ledger) -> list[dict[str, object]]:
    return ledger.query("SELECT run_id, count(*) AS n FROM events GROUP BY run_id ORDER BY run_id").to_pylist()


@pytest.fixture
def existing(ledger: Ledger) -> Ledger:
    """A ledger that already holds a sealed run."""
    with bind(run_id="run-kept"):
        ledger.append({"event_type": "artifact", "op": "put", "artifact_name": "kept"})
    ledger.finish_run("run-kept")
    return ledger


@pytest.mark.parametrize("bad", BAD, ids=repr)
def test_a_run_id_outside_the_alphabet_is_refused_at_append(existing: Ledger, isolated: Path, bad: str) -> None:
    """Appending with a run id of glob or other characters raises EventValidationError naming the alphabet; nothing is written."""
    before = _count(existing)
    files = sorted(isolated.rglob("*"))
    for call in (
        lambda: existing.append({"event_type": "artifact", "op": "put", "run_id": bad}),
        lambda: existing.append_many([{"event_type": "artifact", "op": "put", "run_id": bad}]),
        lambda: existing.append_async({"event_type": "artifact", "op": "put", "run_id": bad}),
        lambda: existing.finish_run(bad),
        lambda: existing.append_lines(bad, []),
    ):
        with pytest.raises(EventValidationError, match=f"run id .* {RUN_ID_ALPHABET}") as caught:
            call()
        assert isinstance(caught.value, ValueError)
    with bind(run_id=bad), pytest.raises(EventValidationError, match=RUN_ID_ALPHABET):
        existing.append({"event_type": "artifact", "op": "put"})
    existing.flush()
    assert sorted(isolated.rglob("*")) == files
    assert _count(existing) == before
    assert existing.audit(content=False).ok


@pytest.mark.parametrize("bad", ["run[1]", "run?", "run*", "run{a}", "..", "a/b", "run 1"], ids=repr)
def test_every_entry_that_takes_a_run_id_refuses_it(existing: Ledger, cli: CliInvoker, bad: str) -> None:
    """The API and every CLI command that names a run refuse a bad id with the alphabet (exit 2, one line)."""
    for call in (
        lambda: existing.audit(bad),
        lambda: existing.replay(bad),
        lambda: existing.compact([bad]),
        lambda: existing.read_run(bad),
        lambda: existing.stream_path(bad),
        lambda: existing.rebuild_summaries([bad]),
    ):
        with pytest.raises(EventValidationError, match=RUN_ID_ALPHABET):
            call()
    for args in (
        ("ledger", "audit", bad),
        ("ledger", "show", bad),
        ("ledger", "replay", bad),
        ("ledger", "tail", "--run", bad),
        ("ledger", "compact", "--run", bad),
    ):
        result = cli(*args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error: run id") and RUN_ID_ALPHABET in result.stderr
        assert result.stderr.count("\n") == 1


def test_every_valid_form_is_accepted(ledger: Ledger) -> None:
    """Letters, digits, '.', '_' and '-' (not leading '.' or '-'), up to 200 characters, are run ids."""
    good = ["a", "0", "_x", "run-20260101T000000Z-proj-0a1b2c3d", "a.b_c-d", "R" * 200, "run..1", "x-"]
    for run in good:
        ledger.append({"event_type": "artifact", "op": "put", "run_id": run})
    assert {r["run_id"] for r in _count(ledger)} == set(good)


def _legacy_stream(runs: Path, run_id: str, count: int) -> None:
    """A stream written before run ids were checked (by hand, as an older writer could have)."""
    path = runs / run_id / "artifacts.jsonl"
    path.parent.mkdir(parents=True)
    prev = GENESIS
    lines = []
    for seq in range(count):
        line = encode_line(
            {
                "event_id": new_event_id(),
                "event_type": "artifact",
                "op": "put",
                "timestamp": now(),
                "run_id": run_id,
                "artifact_name": f"{run_id}-{seq}",
                "writer": "old:1:x",
                "seq": seq,
                "prev": prev,
                "schema_version": 1,
            }
        )
        import hashlib

        prev = hashlib.sha256(line[:-1]).hexdigest()
        lines.append(line)
    path.write_bytes(b"".join(lines))


def test_runs_named_like_prefixes_and_patterns_compact_apart(isolated: Path, cli: CliInvoker) -> None:
    """Runs whose names are prefixes or patterns of each other (and legacy ones with glob characters) never mix."""
    ledger = Ledger.open()
    names = ["run", "run1", "run10", "run.1", "run_1", "run-1", "r", "ru", "run1.", "run11"]
    expected: dict[str, int] = {}
    for i, run in enumerate(names):
        ledger.append_many(
            {"event_type": "artifact", "op": "put", "run_id": run, "size_bytes": j} for j in range(i + 1)
        )
        ledger.finish_run(run)
        expected[run] = i + 2
    runs = ledger.runs_dir
    for i, legacy in enumerate(["run?", "run[1]", "run*", "ru[n]", "run{1,10}", "r?n"]):
        _legacy_stream(runs, legacy, i + 3)
        expected[legacy] = i + 3
    assert {r["run_id"]: r["n"] for r in _count(ledger)} == expected
    for keep in (True, False):
        ledger.compact(keep_jsonl=keep)
        got = {r["run_id"]: r["n"] for r in _count(ledger)}
        assert got == expected
        row = ledger.query("SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events").to_pylist()[0]
        assert row["n"] == row["d"] == sum(expected.values())
        report = ledger.audit(content=False)
        assert report.ok, [str(p) for p in report.problems]
    result = cli("ledger", "audit", "--no-content", "--format", "json")
    assert result.exit_code == 0 and json.loads(result.stdout)["ok"] is True
    ledger.close()


def test_a_digest_that_is_not_sha256_hex_is_refused(ledger: Ledger) -> None:
    """A digest must be 64 lowercase hex characters; anything else is refused before it is written."""
    for bad in ("", "abc", "A" * 64, "g" * 64, "a" * 65, " " + "a" * 63, "a" * 63 + "\n"):
        with pytest.raises(EventValidationError, match="64 lowercase hex"):
            ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-d", "digest": bad})
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-d", "digest": "0123456789abcdef" * 4})
    assert ledger.query("SELECT count(*) AS n FROM events").to_pylist() == [{"n": 1}]
