"""The payload envelope: what a forger can change under a signature, and what each refusal names."""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable

import pytest

from scalable.cache.payload import FORMAT_VERSION, MAGIC, load_value, open_envelope, seal_value
from scalable.errors import CachePayloadError, CacheSignatureError

KEY = "ef" * 32
_HEAD = struct.Struct(">3sBI32s")


def _seal(value: object, hmac_key: bytes | None = None) -> bytes:
    return seal_value(
        value, key=KEY, function="m.f", writer_run="run-1", created="2026-01-01T00:00:00Z", hmac_key=hmac_key
    ).data


def _split(data: bytes) -> tuple[dict[str, object], bytes]:
    _magic, _version, head_len, _digest = _HEAD.unpack_from(data)
    head = data[_HEAD.size : _HEAD.size + head_len]
    return json.loads(head), data[_HEAD.size + head_len :]


def _join(header: dict[str, object], body: bytes) -> bytes:
    """An entry whose header digest is right for ``header``: what anyone who can write the store can make."""
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    return _HEAD.pack(MAGIC, FORMAT_VERSION, len(head), hashlib.sha256(head).digest()) + head + body


def test_the_envelope_reports_the_digest_size_and_format_of_the_stored_value() -> None:
    """``Envelope.digest``/``size_bytes``/``format`` are those of the body the entry holds (cache events carry them)."""
    env = seal_value({"a": 1}, key=KEY, function="m.f", writer_run=None, created="t", hmac_key=None)
    header, body = _split(env.data)
    assert body == b'{"a":1}'
    assert env.digest == hashlib.sha256(body).hexdigest() == header["sha256"]
    assert env.size_bytes == len(body) == header["size"]
    assert env.format == "json" == header["format"]


def test_the_header_records_what_was_written_and_comes_back_with_its_signature() -> None:
    """The opened header holds key, function, run, time, extra fields and, when signed, the signature itself."""
    data = seal_value(
        [1],
        key=KEY,
        function="m.f",
        writer_run="run-9",
        created="2026-02-03T04:05:06Z",
        hmac_key=b"k",
        extra={"note": "x"},
    ).data
    written, _body = _split(data)
    _body2, header = open_envelope(data, key=KEY, hmac_key=b"k")
    assert header == written
    assert header["created"] == "2026-02-03T04:05:06Z"
    assert header["writer_run"] == "run-9"
    assert header["note"] == "x"
    assert isinstance(header["hmac"], str) and len(header["hmac"]) == 64


def test_a_signed_entry_whose_value_is_swapped_is_refused() -> None:
    """Keeping the signature but swapping body, digest and size (header digest recomputed) fails the signature."""
    header, _body = _split(_seal("good", hmac_key=b"secret"))
    evil = b'"evil"'
    header.update(sha256=hashlib.sha256(evil).hexdigest(), size=len(evil))
    with pytest.raises(CacheSignatureError, match="bad signature"):
        open_envelope(_join(header, evil), key=KEY, hmac_key=b"secret")
    # the same swap is accepted without a key: only the signature binds the value to its writer
    body, opened = open_envelope(_join(header, evil), key=KEY, hmac_key=None)
    assert load_value(body, opened, allow_pickle=False) == "evil"


def test_a_signed_entry_whose_run_or_function_is_rewritten_is_refused() -> None:
    """The signature covers every header field, not only the value: a changed writer run is refused."""
    header, body = _split(_seal("good", hmac_key=b"secret"))
    header["writer_run"] = "run-evil"
    with pytest.raises(CacheSignatureError):
        open_envelope(_join(header, body), key=KEY, hmac_key=b"secret")


def _corrupt_header_entry(head: bytes) -> bytes:
    return _HEAD.pack(MAGIC, FORMAT_VERSION, len(head), hashlib.sha256(head).digest()) + head


@pytest.mark.parametrize("head", [b"[1]", b"\xff\xfe", b"{not json"])
def test_a_header_that_is_no_json_object_is_refused_naming_the_entry(head: bytes) -> None:
    """A header that is a list, not UTF-8 or not JSON is refused as corrupt, naming the entry's key."""
    with pytest.raises(CachePayloadError, match=f"cache entry {KEY} has a corrupt header"):
        open_envelope(_corrupt_header_entry(head), key=KEY, hmac_key=None)


@pytest.mark.parametrize(
    ("what", "entry"),
    [
        ("truncated", lambda: _seal("x")[:10]),
        ("is not a scalable payload of format 2", lambda: b"XYZ" + _seal("x")[3:]),
        ("damaged header", lambda: _flip(_seal("x"), _HEAD.size)),
        ("does not match its SHA-256", lambda: _seal("x") + b"!"),
    ],
)
def test_every_refusal_names_the_entry_and_the_reason(what: str, entry: Callable[[], bytes]) -> None:
    """Each way an entry can be bad is refused with a message naming its key and what is wrong."""
    with pytest.raises(CachePayloadError) as info:
        open_envelope(entry(), key=KEY, hmac_key=None)
    assert f"cache entry {KEY}" in str(info.value)
    assert what in str(info.value)


def _flip(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


def test_a_header_naming_no_format_is_refused_naming_the_entry() -> None:
    """An entry whose header has no ``format`` is refused before anything is decoded, naming its key."""
    header, body = _split(_seal("x"))
    del header["format"]
    body2, opened = open_envelope(_join(header, body), key=KEY, hmac_key=None)
    with pytest.raises(CachePayloadError, match=f"cache entry {KEY} names no value format"):
        load_value(body2, opened, allow_pickle=True)


def test_an_entry_for_another_key_names_both_keys() -> None:
    """Reading an entry under the wrong key names the key asked for and the key it was written for."""
    data = seal_value(1, key="cd" * 32, function="m.f", writer_run=None, created="t", hmac_key=None).data
    with pytest.raises(CachePayloadError) as info:
        open_envelope(data, key=KEY, hmac_key=None)
    assert str(info.value) == f"cache entry {KEY} was written for key {'cd' * 32!r}; refused"
