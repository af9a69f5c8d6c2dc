"""The payload envelope: digest always checked, signature required when a key is set."""

from __future__ import annotations

import pickle
from fractions import Fraction

import pytest

from scalable.cache.payload import load_value, open_envelope, seal_value
from scalable.errors import CachePayloadError, CacheSignatureError

KEY = "ab" * 32


def _seal(value: object, hmac_key: bytes | None = None, key: str = KEY) -> bytes:
    return seal_value(value, key=key, function="m.f", writer_run="run-1", created="t", hmac_key=hmac_key).data


def test_a_sealed_common_value_opens_to_json_not_a_pickle() -> None:
    """A dict of lists is sealed as JSON: the body is no pickle, and it loads with pickle disallowed."""
    data = _seal({"a": [1, 2]}, b"k")
    body, header = open_envelope(data, key=KEY, hmac_key=b"k")
    assert header["format"] == "json" and body == b'{"a":[1,2]}'
    assert load_value(body, header, allow_pickle=False) == {"a": [1, 2]}
    assert header["writer_run"] == "run-1"
    assert header["function"] == "m.f"


def test_a_value_of_another_type_is_a_pickle_that_loads_only_when_allowed() -> None:
    """A value no safe format holds is pickled; loading it needs allow_pickle."""
    data = _seal(Fraction(1, 3))
    body, header = open_envelope(data, key=KEY, hmac_key=None)
    assert header["format"] == "pickle"
    with pytest.raises(CachePayloadError, match="pickle"):
        load_value(body, header, allow_pickle=False)
    assert load_value(body, header, allow_pickle=True) == Fraction(1, 3)


def test_an_entry_of_the_pickle_only_format_is_refused() -> None:
    """An entry of format version 1 (a bare pickle body) is refused, so it is recomputed."""
    data = bytearray(_seal("x"))
    data[3] = 1
    with pytest.raises(CachePayloadError, match="not a scalable payload of format 2"):
        open_envelope(bytes(data), key=KEY, hmac_key=None)


@pytest.mark.parametrize("offset", [-1, -20, 30])
def test_a_flipped_byte_is_detected_without_a_key(offset: int) -> None:
    """With no HMAC key, one flipped byte anywhere (pickle or header) is refused."""
    data = bytearray(_seal(list(range(100))))
    data[offset] ^= 0x01
    with pytest.raises(CachePayloadError):
        open_envelope(bytes(data), key=KEY, hmac_key=None)


def test_a_consistently_rewritten_payload_is_refused_with_a_key() -> None:
    """A forger who rewrites pickle and digest together still fails the HMAC check."""
    forged = _seal("evil", hmac_key=None)
    with pytest.raises(CacheSignatureError, match="unsigned"):
        open_envelope(forged, key=KEY, hmac_key=b"secret")
    other_key = _seal("evil", hmac_key=b"another")
    with pytest.raises(CacheSignatureError, match="bad signature"):
        open_envelope(other_key, key=KEY, hmac_key=b"secret")


def test_a_payload_moved_to_another_key_is_refused() -> None:
    """A valid payload copied under another key is refused (the header binds its key)."""
    data = _seal(1, b"secret", key="cd" * 32)
    with pytest.raises(CachePayloadError, match="written for key"):
        open_envelope(data, key=KEY, hmac_key=b"secret")


def test_garbage_and_truncation_are_refused() -> None:
    """Bytes that are not a payload, and a truncated payload, raise CachePayloadError."""
    with pytest.raises(CachePayloadError, match="truncated"):
        open_envelope(b"SC", key=KEY, hmac_key=None)
    with pytest.raises(CachePayloadError, match="not a scalable payload"):
        open_envelope(pickle.dumps("x" * 100), key=KEY, hmac_key=None)
    with pytest.raises(CachePayloadError):
        open_envelope(_seal("x")[:-3], key=KEY, hmac_key=None)


def test_an_unpicklable_value_is_named_in_the_error() -> None:
    """Sealing a value that cannot be pickled raises CachePayloadError naming the function."""
    with pytest.raises(CachePayloadError, match=r"m\.f"):
        _seal(lambda: None)
