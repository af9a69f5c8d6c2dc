"""The cache payload envelope: versioned header, the value in a named format, SHA-256, optional HMAC.

Layout of one entry (the same bytes in the local and the remote tier)::

    b"SCC" | format version (1 byte) | header length (4 bytes, big endian)
          | SHA-256 of the header (32 bytes) | header | body

The body is the value encoded by :mod:`scalable.cache.codec`: JSON, ``.npy``, Arrow IPC or raw
bytes for common values (formats that cannot run code when read), a pickle only for values of
other types. The header is compact JSON with sorted keys: the body's ``format``, ``sha256`` and
``size``, the ``key`` of the entry, the ``function`` name, the ``writer_run`` (the run whose
``cache/write`` event produced it) and ``created`` time; with ``SCALABLE_CACHE_HMAC_KEY`` set,
``hmac`` is the HMAC-SHA256 of the header without ``hmac``. The header names the body's digest
and format and the entry's key, so the signature covers the value and binds it to its key (a
signed payload copied under another key is refused).

Reading checks, in this order, before anything is decoded: magic and version, the header's
own SHA-256, key, length and SHA-256 of the body, then (with a key set) the signature. Any
failure raises :class:`~scalable.errors.CachePayloadError` (a bad or missing signature:
:class:`~scalable.errors.CacheSignatureError`), which the tiers treat as a miss. Whether a
pickled body may then be loaded is the reader's decision (:func:`load_value`): the cache loads
one only from its local tier or when the entry is signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scalable.cache.codec import decode, encode
from scalable.errors import CachePayloadError, CacheSignatureError

__all__ = ["FORMAT_VERSION", "MAGIC", "Envelope", "load_value", "open_envelope", "seal_value"]

MAGIC = b"SCC"
#: Version 2: the body is in a named codec format (version 1 held a pickle; such entries are
#: refused and recomputed).
FORMAT_VERSION = 2
_HEAD = struct.Struct(">3sBI32s")
_SIGN_PREFIX = b"scalable-cache-payload/1\0"
_loads = json.JSONDecoder().decode
_dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode


@dataclass(frozen=True, slots=True)
class Envelope:
    """A sealed value: the entry's bytes and what the events report about it."""

    data: bytes
    digest: str
    size_bytes: int
    format: str


def _sign(header: dict[str, Any], hmac_key: bytes) -> str:
    return hmac.new(hmac_key, _SIGN_PREFIX + _dumps(header).encode(), hashlib.sha256).hexdigest()


def seal_value(
    value: Any,
    *,
    key: str,
    function: str,
    writer_run: str | None,
    created: str,
    hmac_key: bytes | None,
    extra: Mapping[str, Any] | None = None,
) -> Envelope:
    """Encode ``value`` (a safe format where one holds it) and wrap it in an envelope (signed when ``hmac_key`` is given).

    ``extra`` adds JSON-serializable fields to the (signed) header.

    Raises:
        CachePayloadError: the value needs pickle and cannot be pickled; the message names the function.
    """
    try:
        fmt, body = encode(value)
    except CachePayloadError as exc:
        raise CachePayloadError(f"the return value of {function} is not cached: {exc}") from None
    digest = hashlib.sha256(body).hexdigest()
    header: dict[str, Any] = {
        **(extra or {}),
        "created": created,
        "format": fmt,
        "function": function,
        "key": key,
        "sha256": digest,
        "size": len(body),
        "writer_run": writer_run,
    }
    if hmac_key:
        header["hmac"] = _sign(header, hmac_key)
    head = _dumps(header).encode()
    return Envelope(
        _HEAD.pack(MAGIC, FORMAT_VERSION, len(head), hashlib.sha256(head).digest()) + head + body,
        digest,
        len(body),
        fmt,
    )


def load_value(body: bytes, header: Mapping[str, Any], *, allow_pickle: bool) -> Any:
    """Decode the body of an opened envelope in the format its header names.

    Args:
        body: the body :func:`open_envelope` returned.
        header: the header it returned.
        allow_pickle: whether a pickled body may be loaded (it can run code): only for bytes
            the reader trusts (its own local tier, or an entry whose signature was checked).

    Raises:
        CachePayloadError: a pickled body without ``allow_pickle``, an unknown format, or a
            body that does not decode.
    """
    fmt = header.get("format")
    if not isinstance(fmt, str):
        raise CachePayloadError(f"cache entry {header.get('key')} names no value format; refused and recomputed")
    return decode(fmt, body, allow_pickle=allow_pickle)


def open_envelope(data: bytes, *, key: str, hmac_key: bytes | None) -> tuple[bytes, dict[str, Any]]:
    """Check an entry's bytes and return ``(body, header)``; nothing is decoded here.

    Args:
        data: the stored entry.
        key: the key it was read under (must be the key it was written for).
        hmac_key: when given, the header must carry a valid signature.

    Raises:
        CacheSignatureError: ``hmac_key`` is given and the entry is unsigned or badly signed.
        CachePayloadError: anything else is wrong (format, key, length, digest).
    """
    if len(data) < _HEAD.size:
        raise CachePayloadError(f"cache entry {key} is truncated ({len(data)} bytes); it will be recomputed")
    magic, version, head_len, head_digest = _HEAD.unpack_from(data)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise CachePayloadError(
            f"cache entry {key} is not a scalable payload of format {FORMAT_VERSION}; it will be recomputed"
        )
    end = _HEAD.size + head_len
    head = data[_HEAD.size : end]
    if hashlib.sha256(head).digest() != head_digest:
        raise CachePayloadError(f"cache entry {key} has a damaged header (SHA-256 mismatch); refused and recomputed")
    try:
        header = _loads(head.decode())
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except ValueError as exc:  # UnicodeDecodeError included
        raise CachePayloadError(f"cache entry {key} has a corrupt header ({exc}); it will be recomputed") from None
    if header.get("key") != key:
        raise CachePayloadError(f"cache entry {key} was written for key {header.get('key')!r}; refused")
    body = data[end:]
    if header.get("size") != len(body) or hashlib.sha256(body).hexdigest() != header.get("sha256"):
        raise CachePayloadError(
            f"cache entry {key} does not match its SHA-256 (corrupted or tampered); refused and recomputed"
        )
    if hmac_key:
        given = header.pop("hmac", None)
        if not isinstance(given, str):
            raise CacheSignatureError(f"cache entry {key} is unsigned while SCALABLE_CACHE_HMAC_KEY is set; refused")
        if not hmac.compare_digest(given, _sign(header, hmac_key)):
            raise CacheSignatureError(f"cache entry {key} has a bad signature; refused")
        header["hmac"] = given
    return body, header
