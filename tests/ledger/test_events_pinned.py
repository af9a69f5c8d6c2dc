"""Events: the exact line form, ids past 4,096 a millisecond, time formats, and each column's rule."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import socket
import subprocess
import sys
from typing import Any

import pytest

from scalable.errors import EventValidationError
from scalable.ledger import events
from scalable.ledger.events import (
    Event,
    arrow_schema,
    decode_line,
    duckdb_columns,
    encode_line,
    format_timestamp,
    new_event_id,
    new_event_ids,
    new_writer_id,
    normalize_timestamp,
    now,
    to_arrow,
    validate_event,
)

_UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def _ms_of(event_id: str) -> int:
    return int(event_id.replace("-", "")[:12], 16)


def _line(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "0190a0b0-c0d0-7000-8000-000000000000",
        "event_type": "artifact",
        "op": "put",
        "timestamp": "2026-01-01T00:00:00.000000Z",
        "run_id": "run-1",
        "writer": "h:1:ab",
        "seq": 0,
        "prev": "0" * 64,
        "schema_version": 1,
    }
    base.update(extra)
    return base


# --- the line form ---------------------------------------------------------------------------


def test_a_line_is_compact_json_with_sorted_keys_nulls_left_out_and_one_newline() -> None:
    """Audits of compacted data rebuild chain hashes from this one form: sorted keys, no spaces, no nulls."""
    line = encode_line({"seq": 3, "op": "put", "attrs": None, "digest": "d", "inputs": ["b", "a"], "hit": False})
    assert line == b'{"digest":"d","hit":false,"inputs":["b","a"],"op":"put","seq":3}\n'
    assert encode_line({"é": "ü"}) == '{"é":"ü"}\n'.encode()


def test_a_decoded_line_re_encodes_to_the_same_bytes_whatever_order_it_was_written_in() -> None:
    """A line written with its keys in another order decodes to columns that encode to the sorted form."""
    written = json.dumps(dict(reversed(list(_line(size_bytes=5).items()))), separators=(",", ":")).encode()
    again = encode_line(decode_line(written))
    assert again == json.dumps(_line(size_bytes=5), separators=(",", ":"), sort_keys=True).encode() + b"\n"


# --- ids -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _id_clock() -> Any:
    """Ids asked for future milliseconds here must not push the ids of later tests ahead."""
    saved = events._last_ms, events._counter
    yield
    events._last_ms, events._counter = saved


def test_more_than_4096_ids_in_one_millisecond_stay_unique_ordered_and_borrow_the_next_millisecond() -> None:
    """Past the 12-bit counter, ids move to the next millisecond: still UUIDv7, unique, in creation order."""
    ms = _ms_of(new_event_id()) + 10_000
    ids = new_event_ids(10_000, ms=ms)
    assert all(_UUID7.match(i) for i in ids)
    assert len(set(ids)) == 10_000
    assert ids == sorted(ids)
    stamps = [_ms_of(i) for i in ids]
    assert stamps[0] == ms
    assert ms + 2 <= stamps[-1] <= ms + 10
    counters = [int(i[15:18], 16) for i in ids]
    assert max(counters) == 0xFFF  # a millisecond is used up to the last counter value
    assert min(counters[1:]) >= 1
    pairs = list(zip(stamps, counters, strict=True))
    for (ms_a, c_a), (ms_b, c_b) in itertools.pairwise(pairs):
        if ms_a == ms_b:
            assert c_b == c_a + 1  # counted up one at a time within a millisecond
        else:
            assert ms_b == ms_a + 1  # the next millisecond, never one further
            assert c_a == 0xFFF and 1 <= c_b <= 0x400  # borrowed only when exhausted; restarts low


def test_ids_never_go_back_in_time_within_a_process() -> None:
    """An id asked for an earlier millisecond than the last one sorts after it (clock steps back)."""
    first = new_event_id()
    later = new_event_ids(3, ms=1)
    assert [first, *later] == sorted([first, *later])
    assert _ms_of(later[0]) == _ms_of(first)


def test_an_id_carries_the_millisecond_it_was_made_in() -> None:
    """The first 48 bits of an id are its Unix time in milliseconds."""
    ms = _ms_of(new_event_id()) + 50_000
    (one,) = new_event_ids(1, ms=ms)
    assert _ms_of(one) == ms
    assert _UUID7.match(one)
    assert f"{ms:012x}" == one[:8] + one[9:13]


def test_an_id_made_now_carries_the_current_millisecond() -> None:
    """Without a given time, an id's time field is the wall clock's millisecond."""
    import time

    events._last_ms = 0  # no id of another test pushes this one ahead
    before = time.time_ns() // 1_000_000
    made = _ms_of(new_event_id())
    after = time.time_ns() // 1_000_000
    assert before <= made <= after


def test_the_counter_starts_at_a_random_point_each_millisecond() -> None:
    """The 12-bit counter of a new millisecond starts low but not always at the same value."""
    base = _ms_of(new_event_id()) + 100_000
    starts = {int(new_event_ids(1, ms=base + i)[0][15:18], 16) for i in range(40)}
    assert len(starts) > 5
    assert max(starts) <= 0x400


@pytest.mark.parametrize("one_at_a_time", [False, True], ids=["batch", "one-at-a-time"])
def test_ids_have_random_low_bits(one_at_a_time: bool) -> None:
    """The 62 low bits are random: ids of one millisecond differ beyond their counter, drawn together or not."""
    ms = _ms_of(new_event_id()) + 200_000
    ids = [new_event_id(ms) for _ in range(50)] if one_at_a_time else new_event_ids(50, ms=ms)
    tails = {i[20:] for i in ids}
    assert len(tails) == 50
    assert {i[19] for i in ids} <= set("89ab")
    assert len({i[19] for i in ids}) > 1
    assert len({int(i[-1], 16) % 2 for i in ids}) == 2  # the lowest bit is random too
    assert len({i[-12:] for i in ids}) == 50


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7])
def test_asking_for_n_ids_gives_n_distinct_ids_in_order(count: int) -> None:
    """However few ids are asked for at once, exactly that many come back, each a new UUIDv7."""
    ms = _ms_of(new_event_id()) + 250_000
    ids = new_event_ids(count, ms=ms)
    assert len(ids) == len(set(ids)) == count
    assert ids == sorted(ids)
    assert all(_UUID7.match(i) and _ms_of(i) == ms for i in ids)


def test_one_id_after_the_last_counter_of_a_millisecond_takes_the_next_millisecond() -> None:
    """When a millisecond's counter has reached its last value, a single id moves on to the next one."""
    ms = _ms_of(new_event_id()) + 350_000
    first = new_event_id(ms)
    rest = new_event_ids(0xFFF - int(first[15:18], 16), ms=ms)  # counts up to exactly the last value
    assert int(rest[-1][15:18], 16) == 0xFFF
    assert _ms_of(rest[-1]) == ms
    following = new_event_id(ms)
    assert _ms_of(following) == ms + 1
    assert 1 <= int(following[15:18], 16) <= 0x400
    assert [first, *rest, following] == sorted([first, *rest, following])


def test_one_id_at_a_time_takes_the_given_millisecond_and_the_next_counter() -> None:
    """``new_event_id(ms)`` stamps ``ms`` and counts on by one from the id before it."""
    ms = _ms_of(new_event_id()) + 300_000
    first, second = new_event_id(ms), new_event_id(ms)
    assert _ms_of(first) == _ms_of(second) == ms
    assert int(second[15:18], 16) == int(first[15:18], 16) + 1


def test_a_writer_id_is_host_pid_and_random() -> None:
    """``host:pid:8 hex``, different on every call."""
    one, two = new_writer_id(), new_writer_id()
    host, pid, rand = one.split(":")
    assert host == socket.gethostname()
    assert pid == str(os.getpid())
    assert re.fullmatch(r"[0-9a-f]{8}", rand)
    assert one != two


# --- time ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "1970-01-01T00:00:00.000000Z"),
        (1_767_225_600_123_456_789, "2026-01-01T00:00:00.123456Z"),
        (1_767_225_600_999_999_999, "2026-01-01T00:00:00.999999Z"),
        (1_767_225_601_000_001_000, "2026-01-01T00:00:01.000001Z"),
        (1_767_225_600_000_000_000, "2026-01-01T00:00:00.000000Z"),
    ],
)
def test_timestamps_are_formatted_to_the_microsecond(ns: int, text: str) -> None:
    """Nanoseconds since the epoch become ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (truncated to microseconds)."""
    assert format_timestamp(ns) == text


def test_now_is_in_the_ledger_format() -> None:
    """``now()`` gives the current time in the ledger's timestamp format."""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", now())
    assert now()[:4] >= "2026"


@pytest.mark.parametrize(
    ("given", "want"),
    [
        ("2026-11-26", "2026-11-26T00:00:00.000000Z"),
        (" 2026-11-26T12:30:00 ", "2026-11-26T12:30:00.000000Z"),
        ("2026-11-26T12:30:00Z", "2026-11-26T12:30:00.000000Z"),
        ("2026-11-26T12:30:00.5+02:00", "2026-11-26T10:30:00.500000Z"),
        ("2026-11-26T00:30:00-01:00", "2026-11-26T01:30:00.000000Z"),
    ],
)
def test_user_times_are_normalized_to_utc(given: str, want: str) -> None:
    """A date, a naive time (UTC), ``Z`` or an offset all become the ledger's UTC format."""
    assert normalize_timestamp(given) == want


def test_naive_times_are_utc_whatever_the_machine_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine in Tokyo, ``--as-of 2026-11-26T12:30`` still means 12:30 UTC."""
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        assert normalize_timestamp("2026-11-26T12:30:00") == "2026-11-26T12:30:00.000000Z"
        assert normalize_timestamp("2026-11-26T12:30:00+01:00") == "2026-11-26T11:30:00.000000Z"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_time_that_is_no_iso_8601_is_refused_with_an_example() -> None:
    """``--as-of yesterday`` is refused naming the value and showing the accepted form."""
    with pytest.raises(EventValidationError) as info:
        normalize_timestamp("yesterday")
    assert str(info.value) == "time 'yesterday' is not ISO-8601; use e.g. 2026-11-26 or 2026-11-26T12:00:00Z"


# --- validation ------------------------------------------------------------------------------

_OK = {"event_type": "artifact", "op": "put", "run_id": "run-1"}


def _refusal(name: str, value: Any, want: str) -> str:
    return f"event column {name!r} must be {want}, got {type(value).__name__} {value!r:.80}"


@pytest.mark.parametrize("size", [0, 1, 2**63 - 1])
def test_sizes_up_to_the_int64_maximum_are_accepted(size: int) -> None:
    """``size_bytes`` holds any int from 0 to 2**63-1 (the Arrow column is int64)."""
    assert validate_event({**_OK, "size_bytes": size})["size_bytes"] == size


@pytest.mark.parametrize("size", [-1, 2**63, True, 1.0, "5"])
def test_sizes_outside_int64_or_not_ints_are_refused(size: Any) -> None:
    """A negative size, one past int64, a bool, a float or text is refused, naming the column and value."""
    with pytest.raises(EventValidationError) as info:
        validate_event({**_OK, "size_bytes": size})
    assert str(info.value) == (
        f"event column 'size_bytes' must be a non-negative int, got {type(size).__name__} {size!r:.80}"
    )


@pytest.mark.parametrize(
    ("value", "want"),
    [(["a", "b"], ["a", "b"]), (("a",), ["a"]), ([], []), ({"x": 1}.keys(), ["x"])],
)
def test_inputs_are_any_iterable_of_strings_stored_as_a_list(value: Any, want: list[str]) -> None:
    """``inputs`` takes a list, tuple or any iterable of strings, and stores a list."""
    assert validate_event({**_OK, "inputs": value})["inputs"] == want


@pytest.mark.parametrize("value", ["abc", 5, [1], ["a", None], [b"x"]])
def test_inputs_that_are_not_strings_are_refused(value: Any) -> None:
    """A bare string, a number or a list holding non-strings is refused as inputs."""
    with pytest.raises(EventValidationError) as info:
        validate_event({**_OK, "inputs": value})
    assert str(info.value) == _refusal("inputs", value, "a list of strings")


def test_inputs_with_a_nul_are_refused() -> None:
    """A NUL inside an input is refused, naming the column."""
    with pytest.raises(EventValidationError, match="event column 'inputs' contains a NUL character"):
        validate_event({**_OK, "inputs": ["ok", "bad\x00"]})


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ({"b": 1, "a": [1, 2]}, '{"a":[1,2],"b":1}'),
        ({}, "{}"),
        ('{"z": 1}', '{"z": 1}'),
    ],
)
def test_attrs_are_stored_as_sorted_compact_json(value: Any, want: str) -> None:
    """A mapping becomes sorted compact JSON; text that is a JSON object is kept as given."""
    assert validate_event({**_OK, "attrs": value})["attrs"] == want


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("[1, 2]", "event column 'attrs' must be a JSON object, got str '[1, 2]'"),
        ("{not json", "event column 'attrs' must be a JSON object, got str '{not json'"),
        (5, "event column 'attrs' must be a mapping or JSON object text, got int 5"),
        ([("a", 1)], "event column 'attrs' must be a mapping or JSON object text, got list [('a', 1)]"),
        ({"x": object()}, "event column 'attrs' is not JSON-serializable"),
        ({1: "x"}, "event column 'attrs' is not JSON-serializable"),
    ],
)
def test_attrs_that_are_no_json_object_are_refused(value: Any, fragment: str) -> None:
    """attrs that are a JSON array, not JSON, not a mapping, or not serializable are refused."""
    with pytest.raises(EventValidationError) as info:
        validate_event({**_OK, "attrs": value})
    assert str(info.value).startswith(fragment)


@pytest.mark.parametrize("value", [1, 0, "true", None])
def test_hit_must_be_a_bool(value: Any) -> None:
    """``hit`` is True or False; 1, 0 and text are refused (None leaves it out)."""
    if value is None:
        assert "hit" not in validate_event({**_OK, "hit": value})
        return
    with pytest.raises(EventValidationError) as info:
        validate_event({**_OK, "hit": value})
    assert str(info.value) == _refusal("hit", value, "a bool")


@pytest.mark.parametrize(("value", "want"), [(0, 0.0), (2, 2.0), (1.5, 1.5)])
def test_durations_are_stored_as_floats(value: Any, want: float) -> None:
    """``duration_s`` takes ints and floats from 0 up and stores a float."""
    got = validate_event({**_OK, "duration_s": value})["duration_s"]
    assert got == want and type(got) is float


@pytest.mark.parametrize("value", [-0.5, math.nan, math.inf, True, "1"])
def test_durations_that_are_negative_not_finite_or_not_numbers_are_refused(value: Any) -> None:
    """A negative, NaN or infinite duration, a bool or text is refused."""
    with pytest.raises(EventValidationError) as info:
        validate_event({**_OK, "duration_s": value})
    assert str(info.value) == _refusal("duration_s", value, "a finite non-negative number")


@pytest.mark.parametrize("name", ["run_id", "task_name", "digest", "location"])
def test_string_columns_refuse_other_types(name: str) -> None:
    """A string column given a number is refused with the column, type and value named."""
    with pytest.raises(EventValidationError) as info:
        validate_event({**_OK, name: 12})
    assert str(info.value) == f"event column {name!r} must be a string, got int 12"


def test_non_ascii_text_is_kept_and_lone_surrogates_are_refused_with_their_place() -> None:
    """Accented text is stored as given; a lone surrogate is refused naming the column and its index."""
    assert validate_event({**_OK, "task_name": "café"})["task_name"] == "café"
    with pytest.raises(EventValidationError) as info:
        validate_event({**_OK, "task_name": "ab\udc80"})
    assert str(info.value) == (
        "event column 'task_name' holds a lone surrogate '\\udc80' at index 2, which no UTF-8 line can hold; "
        "give valid Unicode text (bytes decoded with errors='surrogateescape' must be re-encoded first)"
    )
    with pytest.raises(EventValidationError, match="event column 'task_name' contains a NUL character"):
        validate_event({**_OK, "task_name": "é\x00"})


def test_nones_are_left_out_and_the_surrounding_run_and_task_fill_only_what_is_missing() -> None:
    """None values are dropped; run, task and component are filled when absent and never override."""
    out = validate_event(
        {"kind": None, "event_type": "task", "op": "started", "digest": None},
        run_id="run-x",
        task_name="t",
        component="c",
    )
    assert out == {"event_type": "task", "op": "started", "run_id": "run-x", "task_name": "t", "component": "c"}
    mine = validate_event(
        {**_OK, "task_name": "mine", "component": "own"}, run_id="run-x", task_name="t", component="c"
    )
    assert (mine["run_id"], mine["task_name"], mine["component"]) == ("run-1", "mine", "own")


def test_refusals_of_columns_and_types_name_what_to_do() -> None:
    """Ledger-owned and unknown columns, a bad type or op, and a non-mapping are each refused with the fix."""
    with pytest.raises(EventValidationError, match=r"^event column 'seq' is set by the ledger; leave it out$"):
        validate_event({**_OK, "seq": 1})
    with pytest.raises(EventValidationError) as info:
        validate_event({**_OK, "colour": "red"})
    assert str(info.value) == f"unknown event column 'colour'; known columns: {', '.join(events.COLUMN_NAMES)}"
    with pytest.raises(EventValidationError) as info:
        validate_event({"event_type": "blob", "op": "put"})
    assert str(info.value) == "event_type 'blob' is not one of run, task, artifact, cache"
    with pytest.raises(EventValidationError) as info:
        validate_event({"op": "put"})
    assert str(info.value) == "event_type None is not one of run, task, artifact, cache"
    with pytest.raises(EventValidationError) as info:
        validate_event({"event_type": "cache", "op": "put"})
    assert str(info.value) == "op 'put' is not valid for cache events; use one of hit, miss, write"
    with pytest.raises(EventValidationError) as info:
        validate_event([("event_type", "run")])  # type: ignore[arg-type]
    assert str(info.value) == (
        "an event is a mapping of column names to values, not a list; "
        "append one mapping at a time (several at once with append_many)"
    )


# --- decoding --------------------------------------------------------------------------------


def test_unknown_columns_join_the_attrs_already_there() -> None:
    """Columns of a newer writer are folded into attrs beside its own keys, sorted."""
    data = decode_line(json.dumps(_line(attrs='{"b":1}', zeta=2, alpha="x")))
    assert data["attrs"] == '{"alpha":"x","b":1,"zeta":2}'
    assert "zeta" not in data and "alpha" not in data


def test_a_line_without_schema_version_is_version_1() -> None:
    """A line that leaves out ``schema_version`` reads as version 1."""
    line = _line()
    del line["schema_version"]
    assert decode_line(json.dumps(line))["schema_version"] == 1
    assert decode_line(json.dumps(_line(schema_version=2)))["schema_version"] == 2


def test_missing_required_columns_are_named_in_schema_order() -> None:
    """A line without required columns is refused naming each, in the schema's order."""
    line = _line()
    del line["writer"], line["event_id"]
    with pytest.raises(ValueError, match=r"^missing column\(s\) event_id, writer$"):
        decode_line(json.dumps(line))


@pytest.mark.parametrize(
    ("column", "value", "type_name"),
    [("seq", "0", "str"), ("seq", 1.0, "float"), ("run_id", 5, "int"), ("prev", None, "NoneType"), ("op", [], "list")],
)
def test_a_required_column_of_the_wrong_type_is_refused_naming_it(column: str, value: Any, type_name: str) -> None:
    """``decode_line`` refuses ``seq`` that is no int and a required text column that is no string."""
    with pytest.raises(ValueError) as info:
        decode_line(json.dumps(_line(**{column: value})))
    assert str(info.value) == f"column {column!r} has the wrong type ({type_name})"


@pytest.mark.parametrize("text", ["[1]", "5", '"x"'])
def test_a_line_that_is_no_object_is_refused(text: str) -> None:
    """A JSON value that is not an object is refused as a line."""
    with pytest.raises(ValueError, match=r"^line is not a JSON object$"):
        decode_line(text)


# --- the frozen event and the Arrow / DuckDB forms ------------------------------------------


def test_an_event_round_trips_with_inputs_as_a_tuple_and_a_list() -> None:
    """``Event`` holds inputs as a tuple, gives them back as a list, and decodes attrs."""
    event = Event.from_mapping(_line(inputs=["a", "b"], attrs='{"k": 1}'))
    assert event.inputs == ("a", "b")
    assert event.to_mapping()["inputs"] == ["a", "b"]
    assert event.attributes() == {"k": 1}
    bare = Event.from_mapping(_line())
    assert bare.inputs is None and bare.to_mapping()["inputs"] is None
    assert bare.attributes() == {}
    assert bare.to_mapping() == {**dict.fromkeys(events.COLUMN_NAMES), **_line()}


def test_the_arrow_schema_types_nullability_and_docs_follow_the_column_table() -> None:
    """Each Arrow field has the column's type, nullability and doc; the schema names its version."""
    import pyarrow as pa

    schema = arrow_schema()
    assert schema.metadata == {b"scalable.schema_version": b"1"}
    want = {
        "string": pa.string(),
        "int64": pa.int64(),
        "int32": pa.int32(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "list<string>": pa.list_(pa.string()),
    }
    for column in events.COLUMNS:
        field = schema.field(column.name)
        assert field.type == want[column.type]
        assert field.nullable == column.nullable
        assert field.metadata == {b"doc": column.doc.encode()}


def test_duckdb_columns_follow_the_column_table() -> None:
    """The DuckDB column spec maps every column to its SQL type, in order."""
    spec = duckdb_columns()
    assert list(spec) == list(events.COLUMN_NAMES)
    assert spec["event_id"] == "VARCHAR"
    assert spec["seq"] == "BIGINT"
    assert spec["schema_version"] == "INTEGER"
    assert spec["duration_s"] == "DOUBLE"
    assert spec["hit"] == "BOOLEAN"
    assert spec["inputs"] == "VARCHAR[]"


def test_to_arrow_fills_absent_columns_with_nulls() -> None:
    """Rows missing a column get nulls there; the table has the schema's columns."""
    table = to_arrow([_line(size_bytes=3), _line(digest="d")])
    assert table.schema == arrow_schema()
    assert table.column("size_bytes").to_pylist() == [3, None]
    assert table.column("digest").to_pylist() == [None, "d"]


def test_any_mapping_is_an_event() -> None:
    """A read-only mapping (not a dict) is accepted like a dict."""
    from types import MappingProxyType

    assert validate_event(MappingProxyType(dict(_OK))) == _OK


def test_attrs_may_hold_numpy_values() -> None:
    """attrs given numpy numbers and arrays store them as JSON numbers and lists."""
    import numpy as np

    out = validate_event({**_OK, "attrs": {"n": np.int64(3), "a": np.array([1.5, 2.0])}})
    assert out["attrs"] == '{"a":[1.5,2.0],"n":3}'


def test_unknown_columns_become_the_attrs_of_a_line_without_any() -> None:
    """A newer writer's columns on a line with no attrs become its attrs."""
    data = decode_line(json.dumps(_line(zeta=2)))
    assert data["attrs"] == '{"zeta":2}'


@pytest.mark.parametrize("bad", ["../up", "-dash", "", "a" * 201, "sp ace"])
def test_a_run_id_filled_in_from_the_context_is_checked_too(bad: str) -> None:
    """A bad run id is refused whether the event names it or the surrounding run supplies it."""
    want = (
        f"run id {bad!r:.80} is not valid: use 1 to 200 of the characters A-Z a-z 0-9 . _ -, "
        "starting with a letter, a digit or '_'"
    )
    with pytest.raises(EventValidationError) as info:
        validate_event({"event_type": "artifact", "op": "put"}, run_id=bad)
    assert str(info.value) == want
    with pytest.raises(EventValidationError) as info:
        validate_event({"event_type": "artifact", "op": "put", "run_id": bad})
    assert str(info.value) == want


def test_an_empty_run_id_from_the_context_is_refused_in_a_fresh_process() -> None:
    """The very first event a process checks, with an empty run id around it, is refused (alone or in a batch)."""
    code = (
        "from scalable.errors import EventValidationError\n"
        "from scalable.ledger.events import validate_event, validate_events\n"
        "for check in (validate_event, validate_events):\n"
        "    event = {'event_type': 'artifact', 'op': 'put'}\n"
        "    try:\n"
        "        check(event if check is validate_event else [event], run_id='')\n"
        "    except EventValidationError as exc:\n"
        "        print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    want = "run id '' is not valid: use 1 to 200 of the characters A-Z a-z 0-9 . _ -, starting with a letter, a digit or '_'"
    assert done.stdout.splitlines() == [want, f"event #0: {want}"]


def test_a_batch_takes_run_task_and_component_from_the_context_and_keeps_a_task_id_it_names() -> None:
    """``validate_events`` fills the run, task and component given into each event, adds the task id to the
    task's events, and keeps a ``task_id`` an event's attrs already name, as ``validate_event`` does."""
    batch = [
        {"event_type": "artifact", "op": "put", "artifact_name": "a"},
        {"event_type": "artifact", "op": "get", "attrs": {"task_id": "mine"}},
        {"event_type": "artifact", "op": "get", "attrs": '{"note":"x"}'},
    ]
    context = {"run_id": "run-ctx", "task_name": "prep", "component": "worker", "task_id": "t-1"}
    from types import MappingProxyType

    cleans = events.validate_events(batch, **context)
    one_by_one = [events.validate_event(e, **context) for e in batch]
    assert cleans == one_by_one
    assert events.validate_events([MappingProxyType(e) for e in batch], **context) == cleans  # event by event
    assert [(c["run_id"], c["task_name"], c["component"]) for c in cleans] == [("run-ctx", "prep", "worker")] * 3
    assert [json.loads(c["attrs"]) for c in cleans] == [
        {"task_id": "t-1"},
        {"task_id": "mine"},
        {"note": "x", "task_id": "t-1"},
    ]


_GOOD = {
    "event_type": "artifact",
    "op": "put",
    "run_id": "run-b",
    "artifact_name": "a.csv",
    "location": "s3://bucket/a.csv",
    "digest": "ab" * 32,
    "size_bytes": 3,
    "inputs": ["cd" * 32],
    "duration_s": 0.5,
    "hit": True,
    "attrs": {"k": "v"},
}
_BAD_VALUES = {
    "artifact_name": ["a\x00b", "\ud800", 7, None],
    "location": ["s3://b/\x00", b"bytes"],
    "digest": ["ab" * 31, "zz" * 32, 5],
    "run_id": ["../x", "", 3],
    "size_bytes": [-1, 2**63, 1.5, True],
    "duration_s": [-0.5, float("nan"), float("inf"), "1"],
    "hit": [1, "yes"],
    "inputs": [[1], "ab", ["a\x00"], [None]],
    "attrs": ["[1]", "not json", 5, {"x": float("nan")}],
    "op": ["nope", None],
    "event_type": ["nope"],
}


@pytest.mark.parametrize(("column", "value"), [(c, v) for c, vs in _BAD_VALUES.items() for v in vs])
def test_a_batch_accepts_and_refuses_exactly_what_each_event_alone_would(column: str, value: Any) -> None:
    """One odd value in the second event of a batch: the batch gives what ``validate_event`` gives for each
    event, or refuses naming that event when ``validate_event`` refuses it."""
    batch = [dict(_GOOD), {**_GOOD, column: value}]
    try:
        alone = [events.validate_event(e) for e in batch]
    except EventValidationError:
        with pytest.raises(EventValidationError, match=r"^event #1: "):
            events.validate_events(batch)
    else:
        assert events.validate_events(batch) == alone


#: Good values of each column, beside the odd ones of _BAD_VALUES.
_GOOD_VALUES: dict[str, list[Any]] = {
    "artifact_name": ["a.csv", "é.csv", ""],
    "location": ["s3://bucket/a.csv"],
    "digest": ["ab" * 32],
    "run_id": ["run-b", "R_1.x"],
    "size_bytes": [0, 2**63 - 1],
    "duration_s": [0.0, 2.5, 1e300],
    "hit": [False, True],
    "inputs": [[], ["cd" * 32, "é"]],
    "attrs": [{}, {"k": "v", "a": [1, 2]}, '{"a":1}', "{}"],
    "op": ["get"],
    "event_type": ["artifact"],
}
_MORE_BAD_VALUES: dict[str, list[Any]] = {
    "digest": ["AB" * 32, "ab" * 33, "ab" * 32 + "c", "ab" * 31 + "a\x00"],
    "run_id": [".hidden", "-x", "a" * 201, "run\x00"],
    "inputs": [("a",), ["a", 1], ["\ud800"]],
    "attrs": ['"text"', "[]", "null", 1.5, ["k"]],
    "hit": [None, 0],
    "duration_s": [1, -0.0, float("-inf"), 2.5e308 * 10],
}


def _alone_or_refusal(batch: list[dict[str, Any]], **context: Any) -> list[dict[str, Any]] | str:
    """What checking the events one by one gives: their clean copies, or the first refusal as a batch says it."""
    out = []
    for index, event in enumerate(batch):
        try:
            out.append(events.validate_event(event, **context))
        except EventValidationError as exc:
            return f"event #{index}: {exc}"
    return out


@pytest.mark.parametrize("in_context", [False, True], ids=["run-in-events", "run-in-context"])
@pytest.mark.parametrize("first_lacks_it", [False, True], ids=["both-have-it", "first-lacks-it"])
@pytest.mark.parametrize(
    ("column", "value"),
    [(c, v) for values in (_GOOD_VALUES, _BAD_VALUES, _MORE_BAD_VALUES) for c, vs in values.items() for v in vs],
)
def test_a_batch_of_plain_events_gives_what_each_event_alone_would(
    column: str, value: Any, first_lacks_it: bool, in_context: bool
) -> None:
    """Events holding only a type, an op, a run and one more column: the batch gives exactly the clean events
    ``validate_event`` gives one by one, or the refusal of the first bad one with its index."""
    plain = (
        {"event_type": "artifact", "op": "put"}
        if in_context
        else {"event_type": "artifact", "op": "put", "run_id": "run-b"}
    )
    first = dict(plain) if first_lacks_it else {**plain, column: _GOOD_VALUES[column][0]}
    batch = [first, {**plain, column: value}, dict(first)]
    context = {"run_id": "run-ctx"} if in_context else {}
    want = _alone_or_refusal(batch, **context)
    try:
        got: list[dict[str, Any]] | str = events.validate_events(batch, **context)
    except EventValidationError as exc:
        got = str(exc)
    assert got == want
    if isinstance(want, list):
        assert [{k: type(v) for k, v in c.items()} for c in got] == [{k: type(v) for k, v in c.items()} for c in want]


_TEXT_COLUMNS = ("task_name", "component", "artifact_name", "location", "kind", "key", "store", "function_name")
#: Other columns beside the bad text: the batch's columns are looked at in no fixed order.
_BESIDE: dict[str, dict[str, Any]] = {
    "inputs": {"inputs": ["cd" * 32]},
    "attrs-text": {"attrs": '{"a":1}'},
    "attrs-mapping": {"attrs": {"a": 1}},
    "inputs-and-attrs": {"inputs": ["x", "y"], "attrs": {"a": 1}},
    "all": {**_GOOD, "task_name": "t", "component": "c", "kind": "file", "key": "k", "store": "s3://b"},
}


@pytest.mark.parametrize("beside", list(_BESIDE))
@pytest.mark.parametrize("text", ["a\x00b", "x\ud800"], ids=["nul", "surrogate"])
def test_a_nul_or_lone_surrogate_in_any_text_column_of_a_batch_is_refused(text: str, beside: str) -> None:
    """Bad text in any text column (or an item of ``inputs``) of the third event refuses the batch, naming that
    event and column, whatever other columns the events hold."""
    for column in (*_TEXT_COLUMNS, "inputs"):
        good = {"event_type": "artifact", "op": "put", "run_id": "run-b", **_BESIDE[beside]}
        bad = {**good, column: [text] if column == "inputs" else text}
        batch = [good, dict(good), bad, dict(good)]
        with pytest.raises(EventValidationError) as info:
            events.validate_events(batch)
        assert str(info.value) == _alone_or_refusal(batch)
        assert str(info.value).startswith(f"event #2: event column {column!r} ")


@pytest.mark.parametrize("with_more", [False, True], ids=["plain", "beside-every-column"])
def test_the_clean_events_of_a_batch_share_no_list_with_the_caller(with_more: bool) -> None:
    """The ``inputs`` of a clean event is a list of its own: changing the caller's list afterwards changes
    nothing that is written."""
    given = ["ab" * 32]
    batch = [{"event_type": "artifact", "op": "put", "run_id": "r", "inputs": given}]
    cleans = events.validate_events([*batch, dict(_GOOD)] if with_more else batch)
    given.append("changed")
    assert cleans[0]["inputs"] == ["ab" * 32]
    assert events.validate_event(batch[0])["inputs"] is not given


@pytest.mark.parametrize("odd", [["event_type", "op"], ("event_type", "op"), "event_type", 7, None])
def test_a_batch_holding_something_other_than_a_mapping_is_refused_naming_it(odd: Any) -> None:
    """A list, tuple or string of column names, or any other non-mapping, among events refuses the batch."""
    batch = [{"event_type": "artifact", "op": "put", "run_id": "r"}, odd]
    with pytest.raises(EventValidationError) as info:
        events.validate_events(batch)
    assert str(info.value) == (
        f"event #1: an event is a mapping of column names to values, not a {type(odd).__name__}; "
        "append one mapping at a time (several at once with append_many)"
    )


@pytest.mark.parametrize("bad", ["../up", "-dash", "", "a" * 201, "sp ace", ".hidden"])
@pytest.mark.parametrize("some_name_theirs", [False, True], ids=["none-named", "first-named"])
def test_a_batch_taking_a_bad_run_id_from_the_context_is_refused_at_the_first_event_taking_it(
    bad: str, some_name_theirs: bool
) -> None:
    """Events that name no run take the one given; a bad one refuses the batch at the first event taking it."""
    plain = {"event_type": "artifact", "op": "put"}
    batch = [{**plain, "run_id": "run-b"} if some_name_theirs else dict(plain), dict(plain)]
    with pytest.raises(EventValidationError) as info:
        events.validate_events(batch, run_id=bad)
    assert str(info.value) == _alone_or_refusal(batch, run_id=bad)
    assert str(info.value).startswith(f"event #{int(some_name_theirs)}: run id {bad!r:.80} is not valid")
    assert events.validate_events([{**plain, "run_id": "run-b"}] * 2, run_id=bad) == [{**plain, "run_id": "run-b"}] * 2


def test_attrs_given_as_json_text_are_kept_as_written_in_a_batch_as_alone() -> None:
    """JSON object text in ``attrs`` is stored as the caller wrote it (key order and spaces kept), where a
    mapping is stored as sorted compact JSON."""
    texts = ['{"b": 1, "a": 2}', "{}", '{"k":"v"}']
    batch = [{"event_type": "artifact", "op": "put", "run_id": "r", "attrs": text} for text in texts]
    assert [clean["attrs"] for clean in events.validate_events(batch)] == texts
    assert [events.validate_event(event)["attrs"] for event in batch] == texts
    mapped = events.validate_events([{**batch[0], "attrs": {"b": 1, "a": 2}}])
    assert mapped[0]["attrs"] == '{"a":2,"b":1}'
