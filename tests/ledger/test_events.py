"""The event schema, validation, ids, timestamps and the JSON-line and Arrow codecs."""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalable.errors import EventValidationError
from scalable.ledger.events import (
    COLUMNS,
    EVENT_OPS,
    Event,
    arrow_schema,
    decode_line,
    encode_line,
    new_event_id,
    normalize_timestamp,
    now,
    to_arrow,
    validate_event,
)

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)


@st.composite
def user_events(draw: st.DrawFn) -> dict[str, object]:
    etype = draw(st.sampled_from(sorted(EVENT_OPS)))
    event: dict[str, object] = {"event_type": etype, "op": draw(st.sampled_from(sorted(EVENT_OPS[etype])))}
    optional = {
        "run_id": st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}", fullmatch=True),
        "task_name": _text,
        "component": _text,
        "artifact_name": _text,
        "location": _text,
        "kind": _text,
        "size_bytes": st.integers(min_value=0, max_value=2**63 - 1),
        "digest": st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
        "key": _text,
        "store": _text,
        "inputs": st.lists(_text, max_size=4),
        "function_name": _text,
        "key_digest": _text,
        "hit": st.booleans(),
        "duration_s": st.floats(min_value=0, max_value=1e9, allow_nan=False),
        "attrs": st.dictionaries(
            st.text(string.ascii_letters, min_size=1, max_size=8),
            st.one_of(st.integers(-(2**53), 2**53), _text, st.booleans(), st.none()),
            max_size=4,
        ),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            event[name] = draw(strategy)
    return event


def _complete(clean: dict[str, object]) -> dict[str, object]:
    return {
        "event_id": new_event_id(),
        "timestamp": now(),
        "run_id": "run-x",
        **clean,
        "writer": "host:1:abcd",
        "seq": 3,
        "prev": "0" * 64,
        "schema_version": 1,
    }


@settings(max_examples=300, deadline=None)
@given(user_events())
def test_any_valid_event_round_trips_through_json_line_and_arrow(event: dict[str, object]) -> None:
    """Any mapping of valid column values survives JSON line and Arrow encoding unchanged."""
    record = _complete(validate_event(event))
    decoded = decode_line(encode_line(record))
    assert decoded == {k: v for k, v in record.items() if v is not None}
    row = to_arrow([decoded]).to_pylist()[0]
    assert {k: v for k, v in row.items() if v is not None} == decoded
    assert Event.from_mapping(decoded).to_mapping() == row


def test_arrow_schema_has_every_column_in_order() -> None:
    """The Arrow schema is derived from the one column table."""
    assert arrow_schema().names == [c.name for c in COLUMNS]


@pytest.mark.parametrize(
    ("event", "fragment"),
    [
        ({"event_type": "artifact", "op": "put", "colour": "red"}, "unknown event column 'colour'"),
        ({"event_type": "artifact", "op": "put", "seq": 3}, "'seq' is set by the ledger"),
        ({"event_type": "artifact", "op": "put", "size_bytes": "12"}, "'size_bytes' must be a non-negative int"),
        ({"event_type": "artifact", "op": "put", "size_bytes": -1}, "'size_bytes' must be a non-negative int"),
        ({"event_type": "artifact", "op": "put", "size_bytes": True}, "'size_bytes' must be a non-negative int"),
        ({"event_type": "artifact", "op": "put", "inputs": "abc"}, "'inputs' must be a list of strings"),
        ({"event_type": "artifact", "op": "put", "attrs": "[1]"}, "'attrs' must be a JSON object"),
        ({"event_type": "cache", "op": "hit", "duration_s": float("nan")}, "'duration_s' must be a finite"),
        ({"event_type": "artifact", "op": "put", "location": "a\x00b"}, "NUL"),
        ({"event_type": "party", "op": "put"}, "event_type 'party' is not one of"),
        ({"event_type": "artifact", "op": "hit"}, "op 'hit' is not valid for artifact events"),
        ({"op": "put"}, "event_type None"),
        ({"event_type": "artifact", "op": "put", "digest": "ABC"}, "'digest' must be a SHA-256 digest"),
        ({"event_type": "artifact", "op": "put", "digest": "A" * 64}, "'digest' must be a SHA-256 digest"),
        ({"event_type": "artifact", "op": "put", "digest": "a" * 63}, "'digest' must be a SHA-256 digest"),
        ({"event_type": "artifact", "op": "put", "digest": "g" * 64}, "'digest' must be a SHA-256 digest"),
        ({"event_type": "artifact", "op": "put", "digest": "a" * 64 + "\n"}, "'digest' must be a SHA-256 digest"),
        ({"event_type": "artifact", "op": "put", "digest": 12}, "'digest' must be a string"),
        ({"event_type": "artifact", "op": "put", "run_id": "run[1]"}, "A-Z a-z 0-9 . _ -"),
        ({"event_type": "artifact", "op": "put", "run_id": 7}, "'run_id' must be a string"),
    ],
)
def test_invalid_events_are_refused_with_the_column_named(event: dict[str, object], fragment: str) -> None:
    """A bad event mapping raises EventValidationError (a ValueError) naming the column."""
    with pytest.raises(EventValidationError, match=re.escape(fragment)):
        validate_event(event)
    assert issubclass(EventValidationError, ValueError)


def test_event_ids_are_uuid7_and_time_ordered() -> None:
    """Event ids are version-7 UUIDs that sort in creation order within a process."""
    ids = [new_event_id() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(i[14] == "7" and i[19] in "89ab" for i in ids)


def test_timestamps_are_utc_microseconds_with_z() -> None:
    """Timestamps have the fixed ISO-8601 form, so they also sort as text."""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", now())
    assert normalize_timestamp("2026-11-26") == "2026-11-26T00:00:00.000000Z"
    assert normalize_timestamp("2026-11-26T12:00:00+01:00") == "2026-11-26T11:00:00.000000Z"
    with pytest.raises(EventValidationError, match="not ISO-8601"):
        normalize_timestamp("yesterday")


def test_unknown_columns_of_newer_writers_are_kept_in_attrs() -> None:
    """Decoding a line with a column this version lacks folds it into attrs, losing nothing."""
    record = _complete({"event_type": "run", "op": "started", "attrs": '{"a":1}'})
    line = encode_line(record).decode().replace('"schema_version":1', '"schema_version":2,"gpu":"a100"')
    decoded = decode_line(line)
    assert decoded["schema_version"] == 2
    assert Event.from_mapping(decoded).attributes() == {"a": 1, "gpu": "a100"}


@settings(max_examples=100, deadline=None)
@given(user_events())
def test_written_lines_re_encode_byte_for_byte_from_their_columns(event: dict[str, object]) -> None:
    """A line the ledger wrote is rebuilt exactly from its decoded columns (so compacted rows keep their chain)."""
    import tempfile

    from scalable.ledger.log import Ledger
    from scalable.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        led = Ledger(load_settings(env={}, runs_dir=tmp, ledger_dir=tmp))
        record = led.append({**event, "run_id": "run-canon"})
        line = led.stream_path("run-canon").read_bytes().splitlines()[-1]
        led.close()
    assert encode_line(decode_line(line)) == line + b"\n"
    assert decode_line(line) == {k: v for k, v in record.items() if v is not None}
