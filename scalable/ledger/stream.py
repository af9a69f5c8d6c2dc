"""One run's stream: where it lives, how it is read, its writers' heads and its seal.

A run's events are the lines of ``<runs_dir>/<run_id>/artifacts.jsonl`` (:data:`STREAM_NAME`),
with the run's ``run.json`` (:data:`RUN_SUMMARY`, see :mod:`scalable.ledger.runfiles`) beside it.

The torn-line rule: a last line without its newline is a line still being written (a live
tail) and readers skip it without a problem; a writer that finds the stream not ending in a
newline (a writer died mid-line) starts with one (:func:`ends_torn`), so the fragment stays a
single malformed line and never swallows the next event. Any other line that does not decode
is reported with file and line number and never stops a reader.

The seal: a run's ``run/finished`` event carries, in ``attrs.seal``, the heads of every
writer's chain (their last ``seq`` and line hash), the SHA-256 of every byte of the stream
before it (``stream``), and the SHA-256 of its own line (``line``), computed with the
``line`` (and ``hmac``) values written as 64 zeros and filled in afterwards. With
``SCALABLE_LEDGER_KEY`` the ``hmac`` is the HMAC-SHA256 of that same line under the key. So
every byte of every line, the sealing line included, is covered: lines before the seal by
``stream`` and the chains, the seal line by its own digest, and all of it by the HMAC. Seals
of version 1 (heads only, the HMAC over the heads) are still read.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

from scalable.ledger.events import AFTER_SEAL_OPS, GENESIS, Event, check_run_id, decode_line

__all__ = [
    "RUN_SUMMARY",
    "SEAL_VERSION",
    "STREAM_NAME",
    "ChainHeads",
    "LineProblem",
    "StreamReader",
    "compact_json",
    "complete_prefix",
    "ends_sealed",
    "ends_torn",
    "iter_complete",
    "lines_from_end",
    "list_streams",
    "new_seal",
    "prefix_digest",
    "read_stream",
    "seal_digest",
    "seal_line_problem",
    "sign_seal_line",
    "stream_files",
    "stream_path",
]

STREAM_NAME: Final = "artifacts.jsonl"
RUN_SUMMARY: Final = "run.json"
#: Bytes read at a time when a stream is scanned in parts.
_CHUNK: Final = 16 * 1024 * 1024
#: The version of the seals this ledger writes (see the module docstring).
SEAL_VERSION: Final = 2
#: Compact JSON text of a value, keys in insertion order (the ``attrs`` the ledger writes itself).
compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


@dataclass(frozen=True, slots=True)
class LineProblem:
    """A line of a stream that could not be read: file, 1-based line number and reason."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class StreamReader:
    """Reads one stream: yields ``(line_number, event)`` and collects :class:`LineProblem`.

    A last line without its newline is a live tail (a writer is mid-append) and is skipped
    without a problem; any other line that does not decode is reported with file and line.
    """

    path: Path
    problems: list[LineProblem] = field(default_factory=list)
    incomplete_tail: bool = False
    #: The stream's bytes, when they were read elsewhere (a stream put together from segments).
    data: bytes | None = None

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for number, _raw, event in self.lines():
            yield number, event

    def events(self) -> Iterator[Event]:
        """Yield every good line as an :class:`~scalable.ledger.events.Event`, in file order."""
        for _number, _raw, event in self.lines():
            yield Event.from_mapping(event)

    def lines(self) -> Iterator[tuple[int, bytes, dict[str, Any]]]:
        """Yield ``(line_number, raw_line_without_newline, event)`` for every good line."""
        data = self.data
        if data is None:
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                return
        for number, _offset, raw, event in self.lines_of(data):
            yield number, raw, event

    def lines_of(self, data: bytes) -> Iterator[tuple[int, int, bytes, dict[str, Any]]]:
        """Yield ``(line_number, offset, raw_line, event)`` for every good line of ``data``, the stream's bytes."""
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the stream ends in a newline
        if tail:
            self.incomplete_tail = True
        offset = 0
        for number, raw in enumerate(lines, start=1):
            start = offset
            offset += len(raw) + 1
            if not raw:
                continue
            try:
                event = decode_line(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                self.problems.append(LineProblem(str(self.path), number, f"malformed line: {exc}"))
                continue
            yield number, start, raw, event


def iter_complete(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(offset after the line, event)`` of every whole, readable line, from the start.

    Lines are read as they are needed, so a caller that stops early reads no further; the
    reading ends at a last line without its newline, and malformed lines are skipped (the
    reader of :func:`read_stream` reports them).
    """
    offset = 0
    with contextlib.suppress(FileNotFoundError), open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                return
            offset += len(raw)
            try:
                event = decode_line(raw[:-1])
            except (ValueError, UnicodeDecodeError):
                continue
            yield offset, event


def read_stream(path: str | os.PathLike[str]) -> StreamReader:
    """Return a reader of the stream at ``path`` (iterate it; then look at ``problems``)."""
    return StreamReader(Path(path))


def stream_path(runs_dir: Path, run_id: str) -> Path:
    """Return the path of the stream of ``run_id`` under ``runs_dir``.

    Raises:
        EventValidationError: ``run_id`` is not a valid run id (see
            :func:`~scalable.ledger.events.check_run_id`).
    """
    check_run_id(run_id)
    return runs_dir / run_id / STREAM_NAME


def list_streams(runs_dir: str | os.PathLike[str]) -> Iterator[tuple[str, Path, int]]:
    """Yield ``(run_id, stream path, size)`` of every stream under ``runs_dir``, by run id."""
    for run_id, path, size in stream_files(runs_dir):
        yield run_id, Path(path), size


def stream_files(runs_dir: str | os.PathLike[str]) -> Iterator[tuple[str, str, int]]:
    """Like :func:`list_streams`, with each path as a string (cheaper over many streams)."""
    try:
        names = sorted(os.listdir(runs_dir))
    except FileNotFoundError:
        return
    base = os.fspath(runs_dir)
    for name in names:
        path = os.path.join(base, name, STREAM_NAME)
        try:
            size = os.stat(path).st_size
        except (FileNotFoundError, NotADirectoryError):
            continue
        yield name, path, size


def complete_prefix(path: Path, size: int) -> int:
    """Bytes of ``path`` up to and including its last newline (``size`` when it ends in one)."""
    if size == 0:
        return 0
    with open(path, "rb") as fh:
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            fh.seek(start)
            chunk = fh.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                return start + idx + 1
            pos = start
    return 0


def ends_torn(fd: int, size: int) -> bool:
    """Whether the stream open at ``fd`` (``size`` bytes) ends inside a line (a writer died mid-line)."""
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


def ends_sealed(path: Path) -> bool:
    """Whether the stream at ``path`` is sealed: its last line is ``run/finished``, or only run events
    the ledger adds after a seal (:data:`~scalable.ledger.events.AFTER_SEAL_OPS`) follow that line.

    Reads from the end, a line at a time; a line that does not parse as an event ends the search
    (then the stream is not taken as sealed).
    """
    for raw in lines_from_end(path, block=4096):
        try:
            event = orjson.loads(raw)
        except ValueError:  # not JSON, or nested past the event check's depth limit
            return False
        op = event.get("op") if isinstance(event, dict) and event.get("event_type") == "run" else None
        if op == "finished":
            return True
        if not isinstance(op, str) or op not in AFTER_SEAL_OPS:
            return False
    return False


def lines_from_end(path: Path, block: int = 65536) -> Iterator[bytes]:
    """Yield the complete, non-empty lines of ``path`` from the last one back, reading from the end.

    A last line without its newline is still being written and is not yielded.
    """
    with open(path, "rb") as fh:
        pos = fh.seek(0, os.SEEK_END)
        buf = b""
        found_end = False  # whether the incomplete last line was cut off ``buf`` yet
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            buf = fh.read(pos - start) + buf
            pos = start
            if not found_end:
                cut = buf.rfind(b"\n")
                if cut < 0:
                    continue
                buf, found_end = buf[:cut], True
            parts = buf.split(b"\n")
            # The first piece may continue in the bytes before ``start``: keep it for the next block.
            buf = parts.pop(0) if start > 0 else b""
            for raw in reversed(parts):
                if raw:
                    yield raw


class ChainHeads:
    """Every writer's newest line in a stream (``seq`` and line hash), and its events by type.

    Parts of a stream may be added in any order (the lines a ledger wrote itself, and the
    ranges others wrote in between, scanned later): a writer's head is its line at the highest
    offset, and writers and event types are listed in the order of their first line, as
    reading the whole stream from its start would give.
    """

    __slots__ = ("_types", "_writers")

    def __init__(self) -> None:
        #: writer -> [first offset, head offset, seq, line hash]
        self._writers: dict[str, list[Any]] = {}
        #: event type -> [first offset, events]
        self._types: dict[str, list[int]] = {}

    def add(self, writer: str, first_offset: int, head_offset: int, seq: int, digest: str) -> None:
        """Note lines of ``writer`` from ``first_offset`` up to its line ``seq`` at ``head_offset``."""
        entry = self._writers.get(writer)
        if entry is None:
            self._writers[writer] = [first_offset, head_offset, seq, digest]
            return
        entry[0] = min(entry[0], first_offset)
        if head_offset >= entry[1]:
            entry[1], entry[2], entry[3] = head_offset, seq, digest

    def count(self, event_type: str, offset: int, events: int = 1) -> None:
        """Count ``events`` events of ``event_type`` whose lines start at (or after, in one write) ``offset``."""
        entry = self._types.get(event_type)
        if entry is None:
            self._types[event_type] = [offset, events]
            return
        entry[0] = min(entry[0], offset)
        entry[1] += events

    def scan(self, data: bytes, offset: int) -> None:
        """Add the complete lines of ``data``, which starts at byte ``offset`` of the stream.

        A piece after the last newline is not a line (yet) and malformed lines are skipped,
        as :class:`StreamReader` does.
        """
        pos = offset
        sha256 = hashlib.sha256
        for raw in data.split(b"\n")[:-1]:
            start = pos
            pos += len(raw) + 1
            if not raw:
                continue
            try:
                event = decode_line(raw)
            except (ValueError, UnicodeDecodeError):
                continue
            self.add(event["writer"], start, start, event["seq"], sha256(raw).hexdigest())
            self.count(event["event_type"], start)

    def scan_range(self, fd: int, start: int, end: int) -> None:
        """Add the complete lines of bytes ``[start, end)`` of the stream open at ``fd``."""
        carry = b""
        pos = start
        while pos < end:
            chunk = os.pread(fd, min(_CHUNK, end - pos), pos)
            if not chunk:
                break
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            self.scan(data[:cut], pos - len(carry))
            carry = data[cut:]
            pos += len(chunk)

    def heads(self) -> dict[str, dict[str, Any]]:
        """Return ``{writer: {"seq", "head"}}``, writers in the order of their first line."""
        ordered = sorted(self._writers.items(), key=lambda item: item[1][0])
        return {writer: {"seq": entry[2], "head": entry[3]} for writer, entry in ordered}

    def counts(self) -> dict[str, int]:
        """Return the events by type, types in the order of their first line."""
        ordered = sorted(self._types.items(), key=lambda item: item[1][0])
        return {event_type: entry[1] for event_type, entry in ordered}


def seal_digest(run_id: str, heads: Mapping[str, Any], key: bytes | None) -> str | None:
    """Return the HMAC-SHA256 of a version-1 seal (its heads) under ``key`` (``None`` without a key)."""
    if not key:
        return None
    message = compact_json({"run_id": run_id, "heads": dict(sorted(heads.items()))}).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def prefix_digest(fd: int, size: int) -> str:
    """SHA-256 of the first ``size`` bytes of the stream open at ``fd``, as a seal's ``stream`` names them.

    A stream ending inside a line (a writer died mid-line) gets the newline the next writer
    puts there (:func:`ends_torn`), so the digest covers every byte before the sealing line.
    """
    digest = hashlib.sha256()
    pos = 0
    while pos < size:
        chunk = os.pread(fd, min(_CHUNK, size - pos), pos)
        if not chunk:
            break
        digest.update(chunk)
        pos += len(chunk)
    if ends_torn(fd, size):
        digest.update(b"\n")
    return digest.hexdigest()


def new_seal(heads: Mapping[str, Any], stream: str, *, keyed: bool) -> dict[str, Any]:
    """Return a seal of :data:`SEAL_VERSION` whose own digests are still zeros (see :func:`sign_seal_line`).

    Args:
        heads: every writer's head, ``{writer: {"seq", "head"}}``.
        stream: the SHA-256 of the stream's bytes before the sealing line (:func:`prefix_digest`).
        keyed: whether an HMAC is to be filled in as well.
    """
    seal: dict[str, Any] = {"version": SEAL_VERSION, "heads": dict(heads), "stream": stream, "line": GENESIS}
    if keyed:
        seal["hmac"] = GENESIS
    return seal


def _seal_field(name: str, value: str) -> bytes:
    """A seal field as it appears in an encoded line (inside the ``attrs`` string, quotes escaped)."""
    return f'\\"{name}\\":\\"{value}\\"'.encode()


def sign_seal_line(line: bytes, key: bytes | None) -> bytes:
    """Fill the seal's ``line`` digest, and its ``hmac`` under ``key``, into the encoded sealing line.

    ``line`` is the ``run/finished`` line as encoded with the placeholders of :func:`new_seal`;
    both digests are taken over exactly those bytes.
    """
    out = _replace_last(line, _seal_field("line", GENESIS), _seal_field("line", hashlib.sha256(line).hexdigest()))
    if key:
        mac = hmac.new(key, line, hashlib.sha256).hexdigest()
        out = _replace_last(out, _seal_field("hmac", GENESIS), _seal_field("hmac", mac))
    return out


def seal_line_problem(raw: bytes, seal: Mapping[str, Any], key: bytes | None) -> tuple[str, str] | None:
    """Check a version-2 sealing line against its own digest (and HMAC); ``(kind, message)`` if it fails.

    Args:
        raw: the sealing line as stored (or as a compacted row re-encodes to it), without newline.
        seal: the seal decoded from that line.
        key: ``SCALABLE_LEDGER_KEY``; when given, the HMAC must verify.
    """
    blank = raw
    for name in ("hmac", "line"):
        value = seal.get(name)
        if value is None:
            continue
        field = _seal_field(name, str(value))
        if blank.rfind(field) < 0:
            return "seal-mismatch", f"the seal's {name} value is not where the sealing line keeps it"
        blank = _replace_last(blank, field, _seal_field(name, GENESIS))
    if not isinstance(seal.get("line"), str) or hashlib.sha256(blank).hexdigest() != seal["line"]:
        return "seal-mismatch", "the sealing line was changed after it was written (its own digest does not match)"
    if key:
        expected = hmac.new(key, blank, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(str(seal.get("hmac", "")), expected):
            return "seal-forged", "seal HMAC does not verify under SCALABLE_LEDGER_KEY"
    return None


def _replace_last(data: bytes, old: bytes, new: bytes) -> bytes:
    at = data.rfind(old)
    return data if at < 0 else data[:at] + new + data[at + len(old) :]
