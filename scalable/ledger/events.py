"""Events: the one column table, the frozen event, and their codecs (JSON line, Arrow). No I/O here.

The column table :data:`COLUMNS` is the single source of truth: the JSON-line validator,
the Arrow schema (:func:`arrow_schema`, used for Parquet) and the DuckDB column spec of the
views (:func:`duckdb_columns`) are all derived from it.

Encoding of one line: a JSON object, UTF-8, compact separators, keys sorted, null columns
omitted, terminated by ``\\n``. The single form makes a line re-encode byte for byte from its
columns (so chains verify from compacted rows as well as from the stream). ``prev`` is the SHA-256 (hex) of the same writer's
previous line in the stream, without its newline; a writer's first line has
``prev = GENESIS`` (64 zeros).
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Final

import orjson

from scalable.errors import EventValidationError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "AFTER_SEAL_OPS",
    "COLUMNS",
    "EVENT_OPS",
    "GENESIS",
    "LEDGER_FIELDS",
    "LINE_OPTIONS",
    "RUN_ID_ALPHABET",
    "RUN_ID_MAX",
    "SCHEMA_VERSION",
    "USER_COLUMNS",
    "Column",
    "Event",
    "arrow_schema",
    "check_digest",
    "check_run_id",
    "decode_line",
    "duckdb_columns",
    "encode_chained",
    "encode_line",
    "format_timestamp",
    "new_event_id",
    "new_event_ids",
    "new_writer_id",
    "normalize_timestamp",
    "now",
    "to_arrow",
    "validate_event",
    "validate_events",
]

SCHEMA_VERSION: Final = 1
#: Run events the ledger adds to a run after its seal: a tombstone of retired events, and the
#: verdict of a verified rerun. ``audit`` accepts them there.
AFTER_SEAL_OPS: Final = frozenset({"retired", "verified"})
GENESIS: Final = "0" * 64
#: The characters of a run id, as messages name them.
RUN_ID_ALPHABET: Final = "A-Z a-z 0-9 . _ -"
#: The longest run id, in characters (a run id names a directory and object keys).
RUN_ID_MAX: Final = 200
#: A run id: letters, digits, ``.``, ``_`` and ``-``; not starting with ``.`` (hidden files,
#: ``.`` and ``..``) nor ``-`` (an option on a command line). Nothing in it is special to a
#: shell, a glob, a URL or SQL.
_RUN_ID: Final = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9._-]{{0,{RUN_ID_MAX - 1}}}")
_DIGEST: Final = re.compile(r"[0-9a-f]{64}")

EVENT_OPS: Final[dict[str, frozenset[str]]] = {
    "run": frozenset({"started", "finished", "retired", "verified"}),
    "task": frozenset({"started", "finished", "failed"}),
    "artifact": frozenset({"put", "recorded", "used", "get", "deleted"}),
    "cache": frozenset({"write", "hit", "miss"}),
}


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the event schema: name, logical type, nullability and meaning."""

    name: str
    type: str  # "string" | "int64" | "int32" | "float64" | "bool" | "list<string>"
    nullable: bool
    doc: str


COLUMNS: Final[tuple[Column, ...]] = (
    Column("event_id", "string", False, "time-ordered unique id (UUIDv7); the dedup key everywhere"),
    Column("event_type", "string", False, "run, task, artifact or cache"),
    Column("op", "string", False, "what happened (see EVENT_OPS)"),
    Column("timestamp", "string", False, "ISO-8601 UTC with microseconds and a Z suffix"),
    Column("run_id", "string", False, "the run the event belongs to"),
    Column("task_name", "string", True, "the task that raised the event"),
    Column("component", "string", True, "the manifest component of the task"),
    Column("artifact_name", "string", True, "artifact name (file name by default)"),
    Column("location", "string", True, "full URI of the artifact"),
    Column("kind", "string", True, "artifact kind: file, dir, blob, or a user label such as result"),
    Column("size_bytes", "int64", True, "size of the artifact or cache value in bytes"),
    Column("digest", "string", True, "SHA-256 hex of the bytes (directories: tree digest)"),
    Column("key", "string", True, "store key, relative to the store root"),
    Column("store", "string", True, "store base URI"),
    Column("inputs", "list<string>", True, "digests or URIs this artifact was derived from"),
    Column("function_name", "string", True, "cached function (module.qualname)"),
    Column("key_digest", "string", True, "cache key (hex)"),
    Column("hit", "bool", True, "cache: whether the lookup hit"),
    Column("duration_s", "float64", True, "duration in seconds"),
    Column("attrs", "string", True, "free metadata, a JSON object"),
    Column("writer", "string", False, "writer id: host, pid and a random part"),
    Column("seq", "int64", False, "per-writer sequence in the stream, gapless from 0"),
    Column("prev", "string", False, "SHA-256 of the writer's previous line (GENESIS first)"),
    Column("schema_version", "int32", False, "version of this schema"),
)

COLUMN_NAMES: Final = tuple(c.name for c in COLUMNS)
#: Columns the ledger fills; an appended mapping may not set them.
LEDGER_FIELDS: Final = frozenset({"event_id", "timestamp", "writer", "seq", "prev", "schema_version"})
#: Columns an appended mapping may carry, in schema order.
USER_COLUMNS: Final = tuple(name for name in COLUMN_NAMES if name not in LEDGER_FIELDS)
_USER_SET: Final = frozenset(USER_COLUMNS)
#: orjson options of a JSON line: keys sorted, so a line has one form (see the module docstring).
LINE_OPTIONS: Final = orjson.OPT_SORT_KEYS
_STRING_FIELDS: Final = frozenset(c.name for c in COLUMNS if c.type == "string") - LEDGER_FIELDS - {"attrs"}


@dataclass(frozen=True, slots=True)
class Event:
    """One event as read back from a stream (all columns; absent ones are ``None``).

    :meth:`StreamReader.events() <scalable.ledger.stream.StreamReader.events>` yields these;
    elsewhere events travel as plain mappings of their columns.
    """

    event_id: str
    event_type: str
    op: str
    timestamp: str
    run_id: str
    writer: str
    seq: int
    prev: str
    schema_version: int = SCHEMA_VERSION
    task_name: str | None = None
    component: str | None = None
    artifact_name: str | None = None
    location: str | None = None
    kind: str | None = None
    size_bytes: int | None = None
    digest: str | None = None
    key: str | None = None
    store: str | None = None
    inputs: tuple[str, ...] | None = None
    function_name: str | None = None
    key_digest: str | None = None
    hit: bool | None = None
    duration_s: float | None = None
    attrs: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Event:
        """Build an event from a decoded line; unknown keys must have been folded already."""
        values = {k: data.get(k) for k in COLUMN_NAMES}
        if values["inputs"] is not None:
            values["inputs"] = tuple(values["inputs"])
        return cls(**values)  # type: ignore[arg-type]  # required columns were checked by decode_line

    def to_mapping(self) -> dict[str, Any]:
        """Return the event as a mapping of every column (``inputs`` as a list)."""
        out = {name: getattr(self, name) for name in COLUMN_NAMES}
        if out["inputs"] is not None:
            out["inputs"] = list(out["inputs"])
        return out

    def attributes(self) -> dict[str, Any]:
        """Return ``attrs`` decoded (an empty dict when absent)."""
        return orjson.loads(self.attrs) if self.attrs else {}


# --- ids and time -------------------------------------------------------------------------

_id_lock = threading.Lock()
_last_ms = 0
_counter = 0
_rand = random.Random()  # ids need uniqueness, not secrecy; reseeded after fork below
#: ``rand_a`` (the counter) as text, with the dash after it: an id is drawn without formatting a number.
_COUNTER_TEXT: Final = tuple(f"{c:03x}-" for c in range(0x1000))
#: Sets the variant bits (``10``) of the first random byte of an id, keeping its other six bits.
_VARIANT: Final = bytes((b & 0x3F) | 0x80 for b in range(256))


def new_event_ids(count: int, ms: int | None = None) -> list[str]:
    """Return ``count`` UUIDv7 strings, monotonic within this process.

    The 12-bit ``rand_a`` field is a counter within the millisecond (RFC 9562, method 1),
    so ids of one process sort in creation order; ``rand_b`` is random. The random bits of a
    whole batch are drawn at once and turned to text in one step.
    """
    global _last_ms, _counter
    if ms is None:
        ms = time.time_ns() // 1_000_000
    out: list[str] = []
    with _id_lock:
        if ms <= _last_ms:
            ms = _last_ms
        else:
            _counter = _rand.getrandbits(10)  # random start, leaving room to count up
        if count == 1 and _counter < 0xFFF:  # one id (an append): straight through
            _counter += 1
            _last_ms = ms
            low = _rand.getrandbits(62) | 0x8000_0000_0000_0000  # variant bits 10, then 62 random bits
            return [f"{_id_head(ms)}{_COUNTER_TEXT[_counter]}{low >> 48:04x}-{low & 0xFFFF_FFFF_FFFF:012x}"]
        while len(out) < count:
            if _counter >= 0xFFF:  # counter exhausted in this millisecond: borrow the next one
                ms += 1
                _counter = _rand.getrandbits(10)
            take = min(count - len(out), 0xFFF - _counter)
            head = _id_head(ms)
            raw = bytearray(_rand.randbytes(8 * take))
            raw[::8] = raw[::8].translate(_VARIANT)  # variant bits 10 in the first byte of each
            hexed = raw.hex()
            counters = _COUNTER_TEXT[_counter + 1 : _counter + 1 + take]
            out += [
                f"{head}{c}{hexed[i : i + 4]}-{hexed[i + 4 : i + 16]}"
                for c, i in zip(counters, range(0, 16 * take, 16), strict=True)
            ]
            _counter += take
        _last_ms = ms
    return out


_head: tuple[int, str] = (-1, "")


def _id_head(ms: int) -> str:
    """The first 15 characters of the ids of millisecond ``ms`` (time and version), kept for the next call."""
    global _head
    if _head[0] != ms:
        prefix = f"{ms:012x}"
        _head = (ms, f"{prefix[:8]}-{prefix[8:]}-7")
    return _head[1]


def new_event_id(ms: int | None = None) -> str:
    """Return one UUIDv7 string (see :func:`new_event_ids`)."""
    return new_event_ids(1, ms)[0]


os.register_at_fork(after_in_child=_rand.seed)


_ts_cache_sec = -1
_ts_cache_prefix = ""


def format_timestamp(ns: int) -> str:
    """Format nanoseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``."""
    global _ts_cache_sec, _ts_cache_prefix
    sec, rest = divmod(ns, 1_000_000_000)
    if sec != _ts_cache_sec:
        _ts_cache_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _ts_cache_sec = sec
    return f"{_ts_cache_prefix}.{rest // 1000:06d}Z"


def now() -> str:
    """Return the current UTC time in the ledger's timestamp format."""
    return format_timestamp(time.time_ns())


def normalize_timestamp(value: str) -> str:
    """Turn a user's ISO-8601 time (date, naive = UTC, or with offset) into ledger format.

    Raises:
        EventValidationError: ``value`` is not an ISO-8601 date or time.
    """
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(value.strip())  # reads a trailing Z itself (Python 3.11+)
    except ValueError:
        raise EventValidationError(
            f"time {value!r} is not ISO-8601; use e.g. 2026-11-26 or 2026-11-26T12:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_writer_id() -> str:
    """Return a writer id unique to this process and call: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"


# --- validation and the JSON-line codec -----------------------------------------------------


def _bad(name: str, value: Any, want: str) -> EventValidationError:
    return EventValidationError(f"event column {name!r} must be {want}, got {type(value).__name__} {value!r:.80}")


def check_run_id(run_id: object) -> str:
    """Return ``run_id`` if it is a valid run id.

    Raises:
        EventValidationError: ``run_id`` is not 1 to :data:`RUN_ID_MAX` characters of
            :data:`RUN_ID_ALPHABET`, or starts with ``.`` or ``-``.
    """
    if type(run_id) is str and _RUN_ID.fullmatch(run_id):
        return run_id
    raise EventValidationError(
        f"run id {run_id!r:.80} is not valid: use 1 to {RUN_ID_MAX} of the characters {RUN_ID_ALPHABET}, "
        "starting with a letter, a digit or '_'"
    )


def check_digest(value: str, column: str = "digest") -> str:
    """Return ``value`` if it is a SHA-256 digest: 64 lowercase hex characters.

    Raises:
        EventValidationError: it is not.
    """
    if _DIGEST.fullmatch(value):
        return value
    raise EventValidationError(
        f"event column {column!r} must be a SHA-256 digest (64 lowercase hex characters), got {value!r:.80}"
    )


def _check_text(name: str, value: str) -> str:
    """Return ``value`` if it is text an event line can hold: no NUL, valid Unicode."""
    if "\x00" in value:
        raise EventValidationError(f"event column {name!r} contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EventValidationError(
                f"event column {name!r} holds a lone surrogate {value[exc.start : exc.end]!r} at index "
                f"{exc.start}, which no UTF-8 line can hold; give valid Unicode text (bytes decoded with "
                "errors='surrogateescape' must be re-encoded first)"
            ) from None
    return value


def _check_value(name: str, value: Any) -> Any:
    """Validate one non-null value of a user column; return its encoded form.

    Strings of the text columns never come here (:func:`validate_event` checks them itself).
    """
    if name in _STRING_FIELDS:
        raise _bad(name, value, "a string")
    if name == "size_bytes":
        if type(value) is not int or not 0 <= value < 2**63:
            raise _bad(name, value, "a non-negative int")
        return value
    if name == "inputs":
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise _bad(name, value, "a list of strings")
        items = list(value)
        if any(type(i) is not str for i in items):
            raise _bad(name, value, "a list of strings")
        for item in items:
            _check_text(name, item)
        return items
    if name == "attrs":
        if isinstance(value, Mapping):
            try:
                return _dumps_sorted(value)
            except (TypeError, ValueError) as exc:
                raise EventValidationError(f"event column 'attrs' is not JSON-serializable: {exc}") from None
        if type(value) is str:
            try:
                parsed = orjson.loads(value)
            except ValueError:
                raise _bad(name, value, "a JSON object") from None
            if not isinstance(parsed, dict):
                raise _bad(name, value, "a JSON object")
            return value
        raise _bad(name, value, "a mapping or JSON object text")
    if name == "hit":
        if type(value) is not bool:
            raise _bad(name, value, "a bool")
        return value
    if name == "duration_s":
        if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
            raise _bad(name, value, "a finite non-negative number")
        return float(value)
    raise AssertionError(name)  # every user column is handled above


def validate_event(
    event: Mapping[str, Any],
    *,
    run_id: str | None = None,
    task_name: str | None = None,
    component: str | None = None,
    task_id: str | None = None,
) -> dict[str, Any]:
    """Check a user event mapping and return a clean copy (``attrs`` as JSON text).

    ``run_id``, ``task_name`` and ``component`` fill those columns when the mapping has none
    (the ledger passes the surrounding run and task); ``task_id``, the id of the surrounding
    task's execution, goes into ``attrs`` unless the event names another task or has one.

    Raises:
        EventValidationError: unknown column, ledger-owned column, bad type or bad op, a run
            id outside its alphabet (:func:`check_run_id`), a digest that is not SHA-256 hex.
    """
    if type(event) is not dict and not isinstance(event, Mapping):
        raise EventValidationError(
            f"an event is a mapping of column names to values, not a {type(event).__name__}; "
            "append one mapping at a time (several at once with append_many)"
        )
    out: dict[str, Any] = {}
    for name, value in event.items():
        if value is None:
            continue
        if type(value) is str and name in _STRING_FIELDS:
            if name == "run_id":
                check_run_id(value)
            elif name == "digest":
                check_digest(value)
            out[name] = value if value.isascii() and "\x00" not in value else _check_text(name, value)
        elif name in _USER_SET:
            out[name] = _check_value(name, value)
        elif name in LEDGER_FIELDS:
            raise EventValidationError(f"event column {name!r} is set by the ledger; leave it out")
        else:
            raise EventValidationError(f"unknown event column {name!r}; known columns: {', '.join(COLUMN_NAMES)}")
    if run_id is not None and "run_id" not in out:
        out["run_id"] = run_id
    if task_name is not None and "task_name" not in out:
        out["task_name"] = task_name
    if component is not None and "component" not in out:
        out["component"] = component
    if task_id is not None and out.get("task_name") == task_name:
        attrs = out.get("attrs")
        if attrs is None:
            out["attrs"] = _dumps_sorted({"task_id": task_id})
        elif '"task_id"' not in attrs:
            out["attrs"] = _dumps_sorted({**orjson.loads(attrs), "task_id": task_id})
    if run_id is not None and out.get("run_id") is run_id:
        _check_context_run(out["run_id"])
    etype = out.get("event_type")
    ops = EVENT_OPS.get(etype) if etype is not None else None
    if ops is None:
        raise EventValidationError(f"event_type {etype!r} is not one of {', '.join(EVENT_OPS)}")
    if out.get("op") not in ops:
        raise EventValidationError(
            f"op {out.get('op')!r} is not valid for {etype} events; use one of {', '.join(sorted(ops))}"
        )
    return out


def validate_events(
    events: Sequence[Mapping[str, Any]],
    *,
    run_id: str | None = None,
    task_name: str | None = None,
    component: str | None = None,
    task_id: str | None = None,
) -> list[dict[str, Any]]:
    """Check a batch of user event mappings; return clean copies, as :func:`validate_event` does for each.

    A batch is checked column by column (types, text, digests, run ids, ops), each column in
    a few passes of C code, so the cost of an event does not grow with Python work per value.
    A batch holding anything unusual (a value of another type, text to look at more closely,
    a column to convert) is checked event by event instead; both ways accept the same events
    and give the same result.

    Raises:
        EventValidationError: an event has an unknown column or a bad value; the message
            names its index in the batch (``event #3: ...``).
    """
    fast = _validate_columns(events, run_id, task_name, component)
    if fast is not None:
        if task_id is not None:
            _stamp_task(fast, task_name, task_id)
        return fast
    out: list[dict[str, Any]] = []
    for index, event in enumerate(events):
        try:
            out.append(validate_event(event, run_id=run_id, task_name=task_name, component=component, task_id=task_id))
        except EventValidationError as exc:
            raise EventValidationError(f"event #{index}: {exc}") from None
    return out


def _validate_columns(
    events: Sequence[Mapping[str, Any]], run_id: str | None, task_name: str | None, component: str | None
) -> list[dict[str, Any]] | None:
    """The column-wise check of :func:`validate_events`: the clean events, or None to check one by one.

    Returns None whenever any event is not plainly valid, so that the one-by-one check finds
    and names the first problem; so every branch here may only decline, never refuse.
    """
    if not events or set(map(type, events)) != _DICT_ONLY:
        return None
    keys: set[str] = set().union(*events)
    if not keys <= _USER_SET or not {"event_type", "op"} <= keys:
        return None
    texts: list[str] = []
    has_null = False  # some event holds a None value (a column to leave out)
    partial: set[str] = set()  # columns some events lack or hold None in
    converted: dict[str, list[Any]] = {}
    for name in keys:
        values = [e.get(name) for e in events]
        kinds = set(map(type, values))
        if _NONE_TYPE in kinds:
            partial.add(name)
            has_null = has_null or any(name in e and e[name] is None for e in events)
            kinds.discard(_NONE_TYPE)
            present = [v for v in values if v is not None]
        else:
            present = values
        if not kinds:
            continue
        if name == "attrs":  # JSON object text, or a dict to encode
            if not kinds <= _ATTRS_KINDS:
                return None
            texts += [v for v in present if type(v) is str]
            converted[name] = values
        elif name == "inputs":
            if kinds != _LIST_ONLY:
                return None
            items = [item for value in present for item in value]
            if items and set(map(type, items)) != _STR_ONLY:
                return None
            texts += items
            converted[name] = values
        elif _COLUMN_KIND[name] == "string":
            if kinds != _STR_ONLY:
                return None
            if name == "run_id" and not all(map(_RUN_ID.fullmatch, set(present))):
                return None
            if name == "digest" and (set(map(len, present)) != {64} or not _HEX.fullmatch("".join(present))):
                return None
            texts += present
        elif name == "size_bytes":
            if kinds != _INT_ONLY or min(present) < 0 or max(present) >= 2**63:
                return None
        elif name == "duration_s":
            if kinds != _FLOAT_ONLY or min(present) < 0:
                return None
            try:
                if not math.isfinite(math.fsum(present)):
                    return None
            except (OverflowError, ValueError):
                return None
        elif kinds != _BOOL_ONLY:  # hit, the one bool column
            return None
    joined = "".join(texts)
    if "\x00" in joined or not (joined.isascii() or _encodes(joined)):
        return None
    pairs = set(zip([e.get("event_type") for e in events], [e.get("op") for e in events], strict=True))
    if not pairs <= _EVENT_PAIRS:
        return None
    fill = {k: v for k, v in (("run_id", run_id), ("task_name", task_name), ("component", component)) if v is not None}
    lacking_run = "run_id" not in keys or "run_id" in partial  # some event takes the run given
    if lacking_run and (run_id is None or not _RUN_ID.fullmatch(run_id)):
        return None  # validate_event says what is wrong with that
    if has_null:
        out = [{**fill, **{k: v for k, v in e.items() if v is not None}} for e in events]
    else:
        out = [{**fill, **e} for e in events]
    inputs = converted.get("inputs")
    if inputs is not None:
        for clean, value in zip(out, inputs, strict=True):
            if value is not None:
                clean["inputs"] = list(value)
    attrs = converted.get("attrs")
    if attrs is not None:
        for clean, value in zip(out, attrs, strict=True):
            if type(value) is str:
                try:
                    if type(orjson.loads(value)) is not dict:
                        return None
                except ValueError:
                    return None
            elif value is not None:
                try:
                    clean["attrs"] = _dumps_sorted(value)
                except (TypeError, ValueError):
                    return None
    return out


def _stamp_task(cleans: list[dict[str, Any]], task_name: str | None, task_id: str) -> None:
    """Put ``task_id`` into the ``attrs`` of the events of task ``task_name``, as :func:`validate_event` does."""
    alone = _dumps_sorted({"task_id": task_id})
    for clean in cleans:
        if clean.get("task_name") == task_name:
            attrs = clean.get("attrs")
            if attrs is None:
                clean["attrs"] = alone
            elif '"task_id"' not in attrs:
                clean["attrs"] = _dumps_sorted({**orjson.loads(attrs), "task_id": task_id})


def _encodes(text: str) -> bool:
    """Whether ``text`` is valid Unicode (no lone surrogate), so UTF-8 can hold it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: The run id :func:`_check_context_run` checked last; None (no run id) until the first.
_context_run: str | None = None


def _check_context_run(run_id: str) -> None:
    """:func:`check_run_id` of the run events fall into, once while it stays the same."""
    global _context_run
    if run_id is not _context_run:
        check_run_id(run_id)
        _context_run = run_id


def _dumps_sorted(value: Mapping[str, Any]) -> str:
    """Canonical JSON text of a mapping: sorted keys, compact (NaN and infinities become null)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY).decode()


def encode_line(event: Mapping[str, Any]) -> bytes:
    """Encode a complete event mapping as one JSON line (with its ``\\n``), columns in order."""
    return orjson.dumps({k: v for k, v in event.items() if v is not None}, option=LINE_OPTIONS) + b"\n"


def encode_chained(
    batch: Sequence[dict[str, Any]],
    ids: Sequence[str],
    times: Sequence[str],
    writer: str,
    seq: int,
    prev: str,
    buffer: bytearray,
) -> str:
    """Encode a writer's next lines into ``buffer``, each chained to the one before it.

    Each clean event of ``batch`` becomes the event as written, in place: it gets its id and
    timestamp from ``ids`` and ``times``, the ``writer``, the next ``seq``, the ``prev`` hash
    of the line before it and the schema version. Its line, in the one form of
    :func:`encode_line` (the same bytes), and a newline go to the end of ``buffer``. Each
    line's bytes are dropped as soon as they are hashed and copied, so a batch touches no
    fresh memory per line: holding a bytes object per line until the write cost more than
    encoding them.

    Args:
        batch: validated events (:func:`validate_event`), updated in place.
        ids: one event id per event.
        times: one timestamp per event.
        writer: the writer id.
        seq: the ``seq`` of the first line.
        prev: the hash of the writer's line before the first (``GENESIS`` for none).
        buffer: receives the lines.

    Returns:
        The hash of the last line.
    """
    dumps = orjson.dumps
    sha256 = hashlib.sha256
    for event, event_id, ts in zip(batch, ids, times, strict=True):
        event["event_id"] = event_id
        event["timestamp"] = ts
        event["writer"] = writer
        event["seq"] = seq
        event["prev"] = prev
        event["schema_version"] = SCHEMA_VERSION
        # Sorted keys (LINE_OPTIONS): a line re-encodes byte for byte from its columns, so
        # audits of compacted data rebuild the chain hashes from rows.
        line = dumps(event, option=LINE_OPTIONS)
        prev = sha256(line).hexdigest()
        buffer += line
        buffer += b"\n"
        seq += 1
    return prev


def decode_line(line: bytes | str) -> dict[str, Any]:
    """Decode one JSON line into a column mapping.

    Columns this version does not know are folded into ``attrs`` (under their own names), so
    a stream written by a newer writer loses nothing.

    Raises:
        ValueError: the line is not a JSON object with the required columns.
    """
    data = orjson.loads(line)
    if not isinstance(data, dict):
        raise ValueError("line is not a JSON object")
    if not _COLUMN_SET.issuperset(data):
        extra = {k: data.pop(k) for k in [k for k in data if k not in _COLUMN_SET]}
        attrs = orjson.loads(data["attrs"]) if data.get("attrs") else {}
        attrs.update(extra)
        data["attrs"] = _dumps_sorted(attrs)
    if "schema_version" not in data:
        data["schema_version"] = SCHEMA_VERSION
    if not _REQUIRED_SET.issubset(data):
        raise ValueError(f"missing column(s) {', '.join(c for c in _REQUIRED if c not in data)}")
    if type(data["seq"]) is not int or {type(data[c]) for c in _REQUIRED_STR} != _STR_ONLY:
        for name in _REQUIRED:
            if type(data[name]) is not (int if name == "seq" else str):
                raise ValueError(f"column {name!r} has the wrong type ({type(data[name]).__name__})")
    return data


_COLUMN_SET: Final = frozenset(COLUMN_NAMES)
_REQUIRED: Final = tuple(c.name for c in COLUMNS if not c.nullable and c.name != "schema_version")
_REQUIRED_SET: Final = frozenset(_REQUIRED)
_REQUIRED_STR: Final = tuple(c for c in _REQUIRED if c != "seq")
_STR_ONLY: Final = {str}
_NONE_TYPE: Final = type(None)
_DICT_ONLY: Final = {dict}
_INT_ONLY: Final = {int}
_FLOAT_ONLY: Final = {float}
_BOOL_ONLY: Final = {bool}
_LIST_ONLY: Final = {list}
_ATTRS_KINDS: Final = frozenset({str, dict})
_HEX: Final = re.compile(r"[0-9a-f]*")
#: Column name -> its type, where the column-wise check looks it up.
_COLUMN_KIND: Final = {c.name: c.type for c in COLUMNS}
_EVENT_PAIRS: Final = frozenset((etype, op) for etype, ops in EVENT_OPS.items() for op in ops)


# --- Arrow and DuckDB ------------------------------------------------------------------------

_DUCKDB_TYPES: Final = {
    "string": "VARCHAR",
    "int64": "BIGINT",
    "int32": "INTEGER",
    "float64": "DOUBLE",
    "bool": "BOOLEAN",
    "list<string>": "VARCHAR[]",
}


@cache
def arrow_schema() -> pa.Schema:
    """Return the Arrow schema of events (used for Parquet files and view typing)."""
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int64": pa.int64(),
        "int32": pa.int32(),
        "float64": pa.float64(),
        "bool": pa.bool_(),
        "list<string>": pa.list_(pa.string()),
    }
    return pa.schema(
        [pa.field(c.name, types[c.type], nullable=c.nullable, metadata={"doc": c.doc}) for c in COLUMNS],
        metadata={"scalable.schema_version": str(SCHEMA_VERSION)},
    )


def duckdb_columns() -> dict[str, str]:
    """Return the DuckDB ``columns=`` spec of the schema (name -> SQL type)."""
    return {c.name: _DUCKDB_TYPES[c.type] for c in COLUMNS}


def to_arrow(events: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build an Arrow table of the event schema from decoded column mappings."""
    import pyarrow as pa

    rows = list(events)
    return pa.Table.from_pydict({name: [r.get(name) for r in rows] for name in COLUMN_NAMES}, schema=arrow_schema())
