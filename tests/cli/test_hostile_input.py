"""Hostile input through the CLI and the session: YAML alias bombs and recursive aliases, events
that are not mappings, text no UTF-8 line can hold. Each is one error, at once, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalable import ScalableSession
from scalable.errors import EventValidationError, ManifestSchemaError
from scalable.ledger.log import Ledger
from tests.conftest import CliInvoker

HEAD = "version: 1\nproject: {name: hostile}\n"


def _bomb() -> str:
    """Ten levels of ten aliases: 10^10 values once expanded, a few hundred bytes written."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    return HEAD + "components:\n  c:\n    env:\n" + "".join(f"      {line}\n" for line in lines)


MANIFESTS = {
    "alias bomb": (_bomb(), "expands to more than 100000 values"),
    "list in itself": (HEAD + "components:\n  c:\n    tags: &a [*a]\n", "nests deeper than 64 levels"),
    "mapping in itself": (HEAD + "components:\n  c:\n    env: &m {k: *m}\n", "nests deeper than 64 levels"),
    "deep nesting": (HEAD + "components:\n  c:\n    tags: " + "[" * 3000 + "]" * 3000 + "\n", "nests deeper"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(MANIFESTS))
def test_manifest_check_refuses_a_hostile_manifest_in_one_line(name: str, cli: CliInvoker, isolated: Path) -> None:
    """scalable manifest check of an alias bomb or a recursive alias: one line naming the file, exit 2."""
    text, reason = MANIFESTS[name]
    Path("scalable.yaml").write_text(text)
    result = cli("manifest", "check", "scalable.yaml")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {isolated / 'scalable.yaml'}")
    assert "E_MANIFEST_TOO_LARGE" in lines[0] and reason in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(MANIFESTS))
def test_a_session_refuses_a_hostile_manifest(name: str, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session made from such a manifest, named or through SCALABLE_MANIFEST, is refused before anything runs."""
    text, reason = MANIFESTS[name]
    Path("hostile.yaml").write_text(text)
    with pytest.raises(ManifestSchemaError, match=reason):
        ScalableSession.from_yaml("hostile.yaml")
    monkeypatch.setenv("SCALABLE_MANIFEST", "hostile.yaml")
    with pytest.raises(ManifestSchemaError, match=reason):
        ScalableSession.from_yaml()
    assert not Path(".scalable").exists()


@pytest.mark.parametrize(
    "event",
    [
        [{"event_type": "run", "op": "started"}],
        ("event_type", "run"),
        "event_type=run",
        None,
        42,
    ],
    ids=["list", "tuple", "str", "None", "int"],
)
def test_append_refuses_what_is_not_a_mapping(event: object, ledger: Ledger) -> None:
    """append of a list (or anything else not a mapping) names what it got and writes nothing."""
    with pytest.raises(EventValidationError, match=f"not a {type(event).__name__}"):
        ledger.append(event)  # type: ignore[arg-type]
    assert ledger.run_ids() == []


@pytest.mark.parametrize("events", [{"event_type": "run", "op": "started"}, None, "events", 7], ids=repr)
def test_append_many_refuses_what_is_not_a_list_of_events(events: object, ledger: Ledger) -> None:
    """append_many of one mapping, None, a string or a number is refused by name; nothing is written."""
    with pytest.raises(EventValidationError, match="append_many takes an iterable of event mappings"):
        ledger.append_many(events)  # type: ignore[arg-type]
    assert ledger.run_ids() == []


@pytest.mark.parametrize(
    "event",
    [
        {"event_type": "artifact", "op": "put", "artifact_name": "out\ud800.csv"},
        {"event_type": "artifact", "op": "put", "location": "file:///x/\udcff"},
        {"event_type": "artifact", "op": "put", "inputs": ["ok", "bad\udfff"]},
        {"event_type": "artifact", "op": "put", "attrs": {"note": "\ud83d"}},
        {"event_type": "artifact", "op": "put", "attrs": {"\ud800": "key"}},
        {"event_type": "task", "op": "started", "task_name": "\udc80"},
    ],
    ids=["name", "location", "inputs", "attrs-value", "attrs-key", "task"],
)
def test_append_refuses_a_lone_surrogate_and_keeps_the_stream_whole(event: dict[str, object], ledger: Ledger) -> None:
    """Text with a lone surrogate is refused naming the column; the events before it stay intact."""
    ledger.append({"event_type": "run", "op": "started", "run_id": "run-1"})
    with pytest.raises(EventValidationError, match="surrogate"):
        ledger.append({**event, "run_id": "run-1"})
    ledger.finish_run("run-1")
    assert ledger.audit_structure("run-1").ok
    assert [e["op"] for _n, e in ledger.read_run("run-1")] == ["started", "finished"]


def test_valid_unicode_is_kept_exactly(ledger: Ledger) -> None:
    """Text outside ASCII (accents, emoji, CJK) is valid and comes back byte for byte."""
    name = "résumé 🧪 数据.csv"
    ledger.append({"event_type": "artifact", "op": "put", "artifact_name": name, "run_id": "run-u"})
    assert [e.get("artifact_name") for _n, e in ledger.read_run("run-u")] == [name]
