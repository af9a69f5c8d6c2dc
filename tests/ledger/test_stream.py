"""The stream file: read from its end, and writer heads gathered from parts in any order."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from scalable.ledger.events import GENESIS, encode_line
from scalable.ledger.stream import ChainHeads, lines_from_end


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 65536])
@pytest.mark.parametrize(
    "data",
    [b"", b"a", b"\n", b"a\n", b"a\nbb\nccc\n", b"a\nbb\n\nccc", b"\n\nxy\n", b"abc\ndef\nghi-still-being-written"],
)
def test_lines_from_end_are_the_complete_lines_newest_first(tmp_path: Path, data: bytes, block: int) -> None:
    """Reading back from the end, block by block, gives every complete non-empty line, last first."""
    path = tmp_path / "s.jsonl"
    path.write_bytes(data)
    complete = data[: data.rfind(b"\n") + 1].split(b"\n")
    assert list(lines_from_end(path, block)) == [line for line in reversed(complete) if line]


def line(writer: str, seq: int, event_type: str, op: str) -> bytes:
    """One encoded event line of ``writer``."""
    return encode_line(
        {
            "event_id": f"e-{writer}-{seq}",
            "event_type": event_type,
            "op": op,
            "timestamp": "2026-01-01T00:00:00.000000Z",
            "run_id": "run-parts",
            "writer": writer,
            "seq": seq,
            "prev": GENESIS,
            "schema_version": 1,
        }
    )


LINES = [
    line("w1", 0, "run", "started"),
    b'{"torn\n',
    line("w2", 0, "artifact", "get"),
    line("w1", 1, "artifact", "put"),
    line("w2", 1, "artifact", "get"),
]


def test_heads_from_parts_in_any_order_equal_a_read_from_the_start() -> None:
    """Scanning a stream's ranges out of order gives the heads and counts of one read from the start."""
    data = b"".join(LINES)
    whole = ChainHeads()
    whole.scan(data, 0)
    cut = len(LINES[0]) + len(LINES[1]) + len(LINES[2])
    parts = ChainHeads()
    parts.scan(data[cut:], cut)
    parts.scan(data[:cut], 0)
    assert list(parts.heads().items()) == list(whole.heads().items())
    assert list(parts.counts().items()) == list(whole.counts().items())
    assert list(whole.heads()) == ["w1", "w2"]
    assert whole.heads()["w2"] == {"seq": 1, "head": hashlib.sha256(LINES[-1].rstrip(b"\n")).hexdigest()}
    assert whole.counts() == {"run": 1, "artifact": 3}
