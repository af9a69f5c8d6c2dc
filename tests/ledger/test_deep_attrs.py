"""Attrs nested as deep as the event check lets through are read by every reader of the ledger."""

from __future__ import annotations

from scalable.ledger.log import Ledger
from scalable.ledger.stream import read_stream
from tests.conftest import CliInvoker

#: 1,000 levels: below the event check's limit, past what a recursive JSON parser takes by default.
DEEP = '{"a":' + "[" * 1000 + "]" * 1000 + "}"


def test_attrs_nested_to_the_check_limit_never_break_a_read(ledger: Ledger, cli: CliInvoker) -> None:
    """A run whose events carry such attrs seals, audits, diffs, walks and reports like any other."""
    run = "run-deep"
    ledger.append({"event_type": "run", "op": "started", "run_id": run, "attrs": DEEP})
    ledger.append(
        {
            "event_type": "artifact",
            "op": "put",
            "run_id": run,
            "artifact_name": "x.txt",
            "location": "file:///tmp/x.txt",
            "digest": "ab" * 32,
            "attrs": DEEP,
        }
    )
    ledger.append({"event_type": "task", "op": "finished", "run_id": run, "task_name": "t", "attrs": DEEP})
    ledger.finish_run(run)
    events = list(read_stream(ledger.stream_path(run)).events())
    assert [len(e.attributes()) for e in events[:3]] == [1, 1, 1]
    assert ledger.audit(run, content=False).ok
    assert [c.status for c in ledger.diff(run, run).artifacts] == ["same"]
    assert any(node["kind"] == "run" for node in ledger.lineage(run).nodes.values())
    for args in (["ledger", "diff", run, run], ["ledger", "lineage", run], ["report", "--run-id", run]):
        result = cli(*args)
        assert result.exit_code == 0, (args, result.output)
    assert ledger.compact().events_written == 4
    assert ledger.audit(run, content=False).ok


def test_a_run_summary_nested_past_any_limit_is_a_malformed_summary(ledger: Ledger) -> None:
    """A run.json nested deeper than the parser goes is reported by the audit, not a crash."""
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-s"})
    ledger.finish_run("run-s")
    ledger.stream_path("run-s").with_name("run.json").write_text("[" * 100_000 + "]" * 100_000)
    problems = ledger.audit("run-s", content=False).problems
    assert [p.kind for p in problems] == ["malformed-summary"]
