"""Scalable's remote cache backend: values by digest in an artifact store, stored safely.

``RemoteCacheBackend(uri)`` keeps one value per digest string at ``cache/<d[:2]>/<d>`` under
``uri`` (any artifact store URI: a path, ``s3://``, ``gs://``...). ``get`` returns the value
or ``None`` (absent, unreadable, refused, or the remote failing); ``put`` returns whether the
value was stored; neither ever raises. ``exists`` asks the store and lets its errors through.

Each entry is one object::

    b"scalable-remote-cache/1\\n" | header (compact JSON, sorted keys) | b"\\n" | body

The header names the body's ``format`` (see :mod:`scalable.cache.codec`), its ``sha256``
and ``size``, and the ``digest`` it was stored under; with ``SCALABLE_CACHE_HMAC_KEY`` set,
``hmac`` signs the rest of the header, so the signature covers the body and binds it to its
digest. Reading checks all of it before decoding. A pickled body (a value of a type no safe
format holds) is loaded only when the entry is signed with ``SCALABLE_CACHE_HMAC_KEY``; with
the key set, every unsigned or badly signed entry is refused. Values of common types are
stored as JSON, ``.npy`` or Arrow and load without a key.

Stores and lookups are ``cache`` events (``write``, ``hit``, ``miss``) of the active ledger,
with ``attrs.backend = "RemoteCacheBackend"`` and ``key_digest`` the digest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from scalable.cache.codec import decode, encode
from scalable.cache.tiers import RemoteTier, refuse_unsigned_pickle
from scalable.errors import ArtifactNotFoundError, CachePayloadError, CacheSignatureError, ScalableError
from scalable.ledger import bus
from scalable.logs import get_logger, mask_secrets
from scalable.settings import load_settings
from scalable.stores import ArtifactKind, LocalArtifactStore

if TYPE_CHECKING:
    from scalable.stores import ArtifactStore

__all__ = ["MAGIC", "RemoteCacheBackend", "get_remote_cache_backend"]

_log = get_logger("scalable.artifacts.cache")
#: First line of every entry.
MAGIC: Final = b"scalable-remote-cache/1\n"
_SIGN_PREFIX: Final = b"scalable-remote-cache-header/1\0"
_dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode


def _sign(header: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, _SIGN_PREFIX + _dumps(header).encode(), hashlib.sha256).hexdigest()


class RemoteCacheBackend:
    """Values by digest in the artifact store at ``uri``, shared between machines.

    The store is built at once (a local root directory is created). Lookups and stores never
    raise: failures are logged and read as a miss (``None``) or a failed store (``False``),
    so a cached ``None`` and a miss look the same, as in Scalable.

    Args:
        uri: the store URI, e.g. ``s3://bucket/cache/`` or ``./shared-cache``.
        **storage_options: passed to the fsspec filesystem (``endpoint_url``...).
    """

    def __init__(self, uri: str, **storage_options: Any) -> None:
        self._uri = uri
        self._hmac_key = load_settings().cache_hmac_key
        self._tier = RemoteTier(uri, **storage_options)
        self._remote = self._tier.display
        self._store: ArtifactStore = self._tier.store
        if isinstance(self._store, LocalArtifactStore):
            Path(self._store.root).mkdir(parents=True, exist_ok=True)

    @property
    def uri(self) -> str:
        """The URI the backend was built with."""
        return self._uri

    def __repr__(self) -> str:
        return f"RemoteCacheBackend({self._remote!r})"

    @staticmethod
    def key_for(digest: str) -> str:
        """Return the store key of ``digest``: ``cache/<digest[:2]>/<digest>``."""
        return f"cache/{digest[:2]}/{digest}"

    def get(self, digest: str) -> Any | None:
        """Return the value stored under ``digest``, or ``None`` if there is none to use.

        ``None`` also stands for an entry that fails its checks, a pickle without a valid
        signature, and a remote that cannot be reached (each logged).
        """
        start = time.perf_counter()
        value: Any = None
        found = False
        fmt: str | None = None
        try:
            data = self._store.get_bytes(self.key_for(digest), record=False)
        except ArtifactNotFoundError:
            pass
        except Exception as exc:  # the remote must never fail the caller
            _log.warning(
                "cache.remote_backend.get_failed", remote=self._remote, digest=digest, error=_brief(exc, self._tier)
            )
        else:
            try:
                fmt, body, signed = self._check(data, digest)
                if fmt == "pickle" and not signed:
                    self._refuse_pickle(digest)
                else:
                    value = decode(fmt, body, allow_pickle=signed)
                    found = True
            except CacheSignatureError as exc:
                _log.error("cache.security.payload_refused", remote=self._remote, digest=digest, reason=str(exc))
            except CachePayloadError as exc:
                _log.warning(
                    "cache.remote_backend.payload_refused",
                    remote=self._remote,
                    digest=digest,
                    reason=str(exc),
                )
        bus.publish_async(
            {
                "event_type": "cache",
                "op": "hit" if found else "miss",
                "key_digest": digest,
                "hit": found,
                "duration_s": time.perf_counter() - start,
                "attrs": {"backend": "RemoteCacheBackend", "remote": self._remote, "format": fmt},
            }
        )
        return value if found else None

    def put(self, digest: str, value: Any) -> bool:
        """Store ``value`` under ``digest``; return whether it was stored (never raises)."""
        start = time.perf_counter()
        try:
            fmt, body = encode(value)
            sha = hashlib.sha256(body).hexdigest()
            header: dict[str, Any] = {"digest": digest, "format": fmt, "sha256": sha, "size": len(body)}
            if self._hmac_key:
                header["hmac"] = _sign(header, self._hmac_key)
            self._store.put_bytes(
                MAGIC + _dumps(header).encode() + b"\n" + body,
                self.key_for(digest),
                kind=ArtifactKind.BLOB,
                record=False,
            )
        except Exception as exc:  # the remote must never fail the caller
            _log.warning(
                "cache.remote_backend.put_failed", remote=self._remote, digest=digest, error=_brief(exc, self._tier)
            )
            return False
        bus.publish(
            {
                "event_type": "cache",
                "op": "write",
                "key_digest": digest,
                "hit": False,
                "digest": sha,
                "size_bytes": len(body),
                "duration_s": time.perf_counter() - start,
                "attrs": {"backend": "RemoteCacheBackend", "remote": self._remote, "format": fmt},
            }
        )
        return True

    def exists(self, digest: str) -> bool:
        """Whether an entry is stored under ``digest`` (store errors are raised)."""
        return self._store.exists(self.key_for(digest))

    def _check(self, data: bytes, digest: str) -> tuple[str, bytes, bool]:
        """Check an entry; return ``(format, body, signed)``. Nothing is decoded here.

        Raises:
            CacheSignatureError: a key is set and the entry is unsigned or badly signed.
            CachePayloadError: the entry is malformed, damaged or stored for another digest.
        """
        if not data.startswith(MAGIC):
            raise CachePayloadError(f"remote cache entry {digest} is not a scalable remote cache entry; refused")
        end = data.find(b"\n", len(MAGIC))
        try:
            header = json.loads(data[len(MAGIC) : end]) if end > 0 else None
        except ValueError:
            header = None
        if not isinstance(header, dict):
            raise CachePayloadError(f"remote cache entry {digest} has a corrupt header; refused")
        body = data[end + 1 :]
        if header.get("digest") != digest:
            raise CachePayloadError(f"remote cache entry {digest} was stored for {header.get('digest')!r}; refused")
        if header.get("size") != len(body) or header.get("sha256") != hashlib.sha256(body).hexdigest():
            raise CachePayloadError(
                f"remote cache entry {digest} does not match its SHA-256 (damaged or tampered); refused"
            )
        signed = False
        if self._hmac_key:
            given = header.pop("hmac", None)
            if not isinstance(given, str):
                raise CacheSignatureError(
                    f"remote cache entry {digest} is unsigned while SCALABLE_CACHE_HMAC_KEY is set; refused"
                )
            if not hmac.compare_digest(given, _sign(header, self._hmac_key)):
                raise CacheSignatureError(f"remote cache entry {digest} has a bad signature; refused")
            signed = True
        fmt = header.get("format")
        if not isinstance(fmt, str):
            raise CachePayloadError(f"remote cache entry {digest} names no format; refused")
        return fmt, body, signed

    def _refuse_pickle(self, digest: str) -> None:
        """Log (once per process at warning level) that an unsigned pickled entry was not loaded."""
        refuse_unsigned_pickle("cache.remote_backend.pickle_refused", remote=self._remote, digest=digest)


def _brief(exc: BaseException, tier: RemoteTier) -> str:
    return tier.scrub(f"{type(exc).__name__}: {exc}")[:300]


def get_remote_cache_backend() -> RemoteCacheBackend | None:
    """Return a new backend on ``SCALABLE_CACHE_REMOTE``, or ``None``.

    ``None`` when the variable is unset or empty, or when the backend cannot be built (a
    warning names the URI and the reason).
    """
    try:
        uri = load_settings().cache_remote
    except ScalableError as exc:
        _log.warning("cache.remote_backend.unavailable", error=mask_secrets(str(exc))[:300])
        return None
    if not uri:
        return None
    try:
        return RemoteCacheBackend(uri)
    except Exception as exc:
        shown = RemoteTier(uri)
        _log.warning("cache.remote_backend.unavailable", remote=shown.display, error=_brief(exc, shown))
        return None
