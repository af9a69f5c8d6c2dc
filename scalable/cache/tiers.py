"""Cache tiers, composed: a local diskcache tier and an optional remote artifact-store tier.

:class:`Cache` reads through (local, then remote; a remote hit fills the local tier) and
writes through (both). Every entry is a sealed payload (:mod:`scalable.cache.payload`),
checked before it is decoded; an entry that fails its checks is a miss, and a bad signature
is logged as a security event. The remote tier never fails a call: a remote that is down,
slow or refusing is skipped for a while, with one warning per process.

The trust model: the local tier is this machine's own directory and is trusted; what comes
from the remote tier is not (anyone who can write to the bucket can put bytes there). Values
of common types are stored in formats that cannot run code when read (:mod:`scalable.cache.codec`)
and load from either tier. A pickled value (any other type) loads from the remote tier only
when ``SCALABLE_CACHE_HMAC_KEY`` is set and the entry's signature verifies; without the key it
is refused, with one warning per process, and the value is recomputed. With the key set,
every remote entry must be signed, whatever its format.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from scalable.cache.codec import SAFE_FORMATS
from scalable.cache.payload import Envelope, load_value, open_envelope
from scalable.errors import (
    ArtifactNotFoundError,
    CacheError,
    CachePayloadError,
    CacheRemoteError,
    CacheSignatureError,
    ScalableError,
    os_error,
)
from scalable.failures import split_userinfo
from scalable.ledger.bus import active
from scalable.ledger.log import Ledger
from scalable.logs import get_logger, mask_secrets
from scalable.settings import Settings, load_settings

if TYPE_CHECKING:
    from scalable.stores import ArtifactStore

__all__ = [
    "REMOTE_RETRY_AFTER_S",
    "S3_FAIL_FAST",
    "Cache",
    "CachedEntry",
    "LocalTier",
    "RemoteTier",
    "default_cache",
    "refuse_unsigned_pickle",
    "remote_key",
    "shared_cache",
    "using",
]

_log = get_logger("scalable.cache")
#: An unexpired entry stored under a text key: how its value is kept, and the value when kept
#: inline (diskcache stores a text key as is, ``raw`` 1; values of 32 KiB and more go to files).
_SELECT = "SELECT mode, value FROM Cache WHERE key = ? AND raw = 1 AND (expire_time IS NULL OR expire_time > ?)"
_REMOTE_PREFIX = "v1"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Seconds a failed remote is left alone before it is tried again.
REMOTE_RETRY_AFTER_S = 30.0
_warned_remote_down = False
_warned_pickle = False
_warn_lock = threading.Lock()


def refuse_unsigned_pickle(event: str, **fields: Any) -> None:
    """Log that a pickled value from a remote was not loaded: a warning the first time in the process, then debug."""
    global _warned_pickle
    with _warn_lock:
        first, _warned_pickle = not _warned_pickle, True
    (_log.warning if first else _log.debug)(
        event,
        **fields,
        hint="a pickled value from a remote loads only when signed: set SCALABLE_CACHE_HMAC_KEY on every machine "
        f"sharing the cache; values in these formats load without it: {', '.join(sorted(SAFE_FORMATS))}",
    )


def remote_key(function: str, key: str) -> str:
    """Return the store key of an entry: ``v1/<function, made path-safe>/<key[:2]>/<key>``."""
    return f"{_REMOTE_PREFIX}/{_safe_function(function)}/{key[:2]}/{key}"


def _safe_function(function: str) -> str:
    return _UNSAFE.sub("_", function).strip(".") or "_"


#: S3 options a cache remote gets unless given: a lookup must not hang on a dead endpoint
#: (botocore's defaults wait 60 s to connect and retry five times). ``retries`` is s3fs's
#: own retry count of timeouts (see :class:`~scalable.stores.fsspec_store.FsspecArtifactStore`).
S3_FAIL_FAST: dict[str, Any] = {
    "config_kwargs": {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 2, "mode": "standard"}},
    "retries": 2,
}


#: Storage options whose values are credentials (masked wherever the remote is shown).
_SECRET_OPTIONS = ("key", "secret", "token", "password", "session_token", "client_secret")


def _secrets_of(uri: str, options: Mapping[str, Any]) -> list[str]:
    """The credentials a remote is given: the URI's user info and secret-looking storage options."""
    _clean, user, secret = split_userinfo(uri)
    found = [v for v in (user, secret) if v]
    for name, value in options.items():
        if isinstance(value, str) and any(part in name.lower() for part in _SECRET_OPTIONS):
            found.append(value)
    # Longest first, each also as the URI spells it (percent-encoded), so no part of one is left.
    spelled = {s for value in found if len(value) >= 3 for s in (value, quote(value, safe=""))}
    return sorted(spelled, key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return mask_secrets(text)


def _with_fail_fast_defaults(uri: str, options: Mapping[str, Any]) -> dict[str, Any]:
    if not uri.startswith(("s3://", "s3a://")):
        return dict(options)
    merged = {**S3_FAIL_FAST, **options}
    if "config_kwargs" in options:
        merged["config_kwargs"] = {**S3_FAIL_FAST["config_kwargs"], **options["config_kwargs"]}
    return merged


@dataclass(slots=True)
class CachedEntry:
    """A value found in the cache, with the header it was written with and the tier it came from."""

    value: Any
    header: Mapping[str, Any]
    tier: str
    digest: str
    size_bytes: int


#: Entries up to this size, at most this many, are remembered once they passed their checks.
_CHECKED_MAX_BYTES = 16 * 1024
_CHECKED_ENTRIES = 256
#: Forks this process came from; a connection kept from before a fork is not used after it.
_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_count_fork)


class LocalTier:
    """The local tier: a :class:`diskcache.Cache` in ``directory``, entries tagged by function.

    Args:
        directory: the cache directory (created when missing).
    """

    name = "local"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        import sqlite3

        import diskcache
        from diskcache.core import EVICTION_POLICY, MODE_RAW

        self.directory = Path(directory)
        try:
            self._cache = diskcache.Cache(str(self.directory), tag_index=True)
        except (OSError, sqlite3.OperationalError) as exc:
            raise self._write_error(exc, f"cannot open the cache in {str(self.directory)!r}") from None
        # A read that changes nothing in the database (no statistics, no access time to
        # update) is one SELECT, as diskcache's own fast path does, without its per-call
        # conversions; any other configuration reads through diskcache.
        self._select_only = not self._cache.statistics and EVICTION_POLICY[self._cache.eviction_policy]["get"] is None
        self._inline: int = MODE_RAW
        self._connections = threading.local()

    def _connection(self) -> Any:
        """This thread's SQLite connection (diskcache's own), kept until a fork or ``close``.

        diskcache looks it up on every call, asking the process id each time; here a fork is
        noticed by a counter that the child increments.
        """
        con = self._cache._con
        self._connections.con = con
        self._connections.forks = _forks
        return con

    def get(self, key: str) -> bytes | None:
        """Return the bytes stored under ``key``, or ``None``."""
        if self._select_only:
            con = getattr(self._connections, "con", None)
            if con is None or self._connections.forks != _forks:
                con = self._connection()
            row = con.execute(_SELECT, (key, time.time())).fetchone()
            if row is None:
                return None
            if row[0] == self._inline and type(row[1]) is bytes:
                return row[1]
        data = self._cache.get(key)
        return data if type(data) is bytes else None

    def set(self, key: str, data: bytes, *, function: str) -> None:
        """Store ``data`` under ``key`` (atomically; a concurrent writer of the same key wins whole).

        Raises:
            DiskFullError: the cache's disk is full; nothing of the entry is left behind.
            CacheError: another I/O error, naming the cache directory.
        """
        import sqlite3

        try:
            self._cache.set(key, data, tag=function, retry=True)
        except (OSError, sqlite3.OperationalError) as exc:
            self._remove_unreferenced()
            raise self._write_error(exc, f"cannot write the cache entry into {str(self.directory)!r}") from None

    def _write_error(self, exc: Exception, doing: str) -> ScalableError:
        """The error of a failed write: SQLite names no errno, so a full disk is told by its free space."""
        if isinstance(exc, ScalableError):
            return exc
        if not isinstance(exc, OSError):
            try:
                stats = os.statvfs(self.directory)
                full = stats.f_bavail == 0 or "full" in str(exc)
            except OSError:
                full = "full" in str(exc)
            exc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if full else OSError(errno.EIO, str(exc))
        return os_error(exc, doing, CacheError)

    def _remove_unreferenced(self) -> None:
        """Delete value files a failed write left that no entry names (diskcache writes the file first)."""
        import sqlite3

        try:
            named = {row[0] for row in self._cache._sql("SELECT filename FROM Cache WHERE filename IS NOT NULL")}
        except sqlite3.Error:
            return
        for path in self.directory.glob("*/*/*.val"):
            if path.relative_to(self.directory).as_posix() not in named:
                path.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        """Remove the entry under ``key`` if there is one."""
        self._cache.delete(key, retry=True)

    def clear(self, function: str | None = None) -> int:
        """Remove every entry (of ``function`` when given); return how many were removed."""
        if function is None:
            return int(self._cache.clear(retry=True))
        return int(self._cache.evict(function, retry=True))

    def stats(self) -> list[dict[str, Any]]:
        """Return ``{function, entries, bytes}`` per function, largest first."""
        # diskcache keeps small values inline (size 0 in its table) and large ones in files.
        rows = self._cache._sql(
            "SELECT tag, count(*), coalesce(sum(CASE WHEN filename IS NULL THEN length(value) ELSE size END), 0) "
            "FROM Cache GROUP BY tag ORDER BY 3 DESC, 1"
        ).fetchall()
        return [{"function": tag, "entries": int(n), "bytes": int(b)} for tag, n, b in rows]

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        """Close the diskcache connections."""
        self._connections = threading.local()
        self._cache.close()


class RemoteTier:
    """The remote tier: entries as blobs in an artifact store, shared between machines.

    Store operations publish no artifact events (``record=False``): the cache publishes its
    own ``cache`` events. Any failure other than "not found" marks the remote down for
    :data:`REMOTE_RETRY_AFTER_S` seconds and logs one warning per process.

    Args:
        uri: the store URI (``SCALABLE_CACHE_REMOTE``), e.g. ``s3://bucket/cache/``.
        store: an already built store (``uri`` is then only its label).
        **storage_options: passed to :func:`scalable.stores.build_artifact_store`.
    """

    name = "remote"

    def __init__(self, uri: str, *, store: ArtifactStore | None = None, **storage_options: Any) -> None:
        self.uri = uri
        self._store = store
        self._options = _with_fail_fast_defaults(uri, storage_options)
        self._secrets = _secrets_of(uri, storage_options)
        #: the URI as logs and errors show it: no credentials
        self.display = self.scrub(uri)
        self._down_until = 0.0
        self._lock = threading.Lock()

    def scrub(self, text: str) -> str:
        """Return ``text`` with every credential of this remote (in its URI or options) masked."""
        return _scrub(text, self._secrets)

    @property
    def store(self) -> ArtifactStore:
        """The artifact store (built on first use)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    from scalable.stores import build_artifact_store

                    self._store = build_artifact_store(self.uri, **self._options)
        return self._store

    @property
    def available(self) -> bool:
        """False while the remote is considered down after a failure."""
        return time.monotonic() >= self._down_until

    def _failed(self, op: str, exc: BaseException) -> None:
        global _warned_remote_down
        self._down_until = time.monotonic() + REMOTE_RETRY_AFTER_S
        with _warn_lock:
            first = not _warned_remote_down
            _warned_remote_down = True
        error = self.scrub(f"{type(exc).__name__}: {exc}")
        if first:
            _log.warning(
                "cache.remote_unavailable",
                remote=self.display,
                op=op,
                error=error,
                hint="continuing with the local cache only; results are still returned",
            )
        else:
            _log.debug("cache.remote_unavailable", remote=self.display, op=op, error=error)

    def get(self, function: str, key: str) -> bytes | None:
        """Return the entry's bytes, or ``None`` (absent, or the remote is unavailable)."""
        if not self.available:
            return None
        try:
            data: bytes = self.store.get_bytes(remote_key(function, key), record=False)
            return data
        except ArtifactNotFoundError:
            return None
        except Exception as exc:  # the remote must never fail a call
            self._failed("get", exc)
            return None

    def put(self, function: str, key: str, data: bytes) -> bool:
        """Store the entry; return whether it reached the remote."""
        if not self.available:
            return False
        from scalable.stores import ArtifactKind

        try:
            self.store.put_bytes(data, remote_key(function, key), kind=ArtifactKind.BLOB, record=False)
        except Exception as exc:  # the remote must never fail a call
            self._failed("put", exc)
            return False
        return True

    def delete(self, function: str, key: str) -> None:
        """Remove an entry (a bad one) if the remote is reachable."""
        if not self.available:
            return
        try:
            self.store.delete(remote_key(function, key), record=False)
        except ArtifactNotFoundError:
            pass
        except Exception as exc:
            self._failed("delete", exc)

    def clear(self, function: str | None = None) -> int:
        """Remove every entry (of ``function`` when given); return how many were removed.

        Unlike lookups, clearing reports a failing remote to the caller.

        Raises:
            CacheRemoteError: the remote could not be listed or an entry could not be deleted.
        """
        prefix = f"{_REMOTE_PREFIX}/" if function is None else f"{_REMOTE_PREFIX}/{_safe_function(function)}/"
        try:
            keys = self.store.list_artifacts(prefix)
            for k in keys:
                full = k if k.startswith(prefix) else prefix + k
                with contextlib.suppress(ArtifactNotFoundError):
                    self.store.delete(full, record=False)
        except Exception as exc:
            raise CacheRemoteError(
                f"remote cache {self.display} could not be cleared ({self.scrub(f'{type(exc).__name__}: {exc}')}); "
                "check SCALABLE_CACHE_REMOTE and that the remote is reachable"
            ) from None
        return len(keys)


@dataclass
class Cache:
    """A local tier and an optional remote tier put together.

    Args:
        local: the local diskcache tier.
        remote: the shared remote tier, if any.
        hmac_key: the key that signs payloads and is required on read (``SCALABLE_CACHE_HMAC_KEY``).
    """

    local: LocalTier
    remote: RemoteTier | None = None
    hmac_key: bytes | None = field(default=None, repr=False)
    #: key -> (entry bytes, hmac key, body, header) of entries that passed their checks: the
    #: same bytes read again need no second check (see :meth:`_checked_envelope`)
    _checked: dict[str, tuple[bytes, bytes | None, bytes, dict[str, Any]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _checked_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **storage_options: Any) -> Cache:
        """Build the cache that settings describe (``cache_dir``, ``cache_remote``, ``cache_hmac_key``)."""
        s = settings or load_settings()
        remote = RemoteTier(s.cache_remote, **storage_options) if s.cache_remote else None
        return cls(LocalTier(s.cache_dir), remote, s.cache_hmac_key)

    @property
    def tier_names(self) -> list[str]:
        """Names of the tiers in lookup order."""
        return ["local", "remote"] if self.remote is not None else ["local"]

    def _open(self, data: bytes, key: str, tier: str, function: str) -> CachedEntry | None:
        """Check and decode an entry read from ``tier``; ``None`` (a miss) when it must not be used.

        A pickled body is loaded only from the local tier, or from the remote when the HMAC key
        is set (then :func:`open_envelope` has checked its signature).
        """
        try:
            body, header = self._checked_envelope(data, key)
        except CacheSignatureError as exc:
            _log.error("cache.security.payload_refused", tier=tier, function=function, key_digest=key, reason=str(exc))
            return None
        except CachePayloadError as exc:
            _log.warning("cache.payload_refused", tier=tier, function=function, key_digest=key, reason=str(exc))
            return None
        trusted = tier == LocalTier.name or bool(self.hmac_key)
        if header.get("format") == "pickle" and not trusted:
            refuse_unsigned_pickle("cache.remote.pickle_refused", tier=tier, function=function, key_digest=key)
            return None
        try:
            value = load_value(body, header, allow_pickle=trusted)
        except CachePayloadError as exc:  # e.g. a class that no longer exists: recompute instead
            _log.warning("cache.payload_refused", tier=tier, function=function, key_digest=key, reason=str(exc))
            return None
        return CachedEntry(value, header, tier, header["sha256"], len(body))

    def _checked_envelope(self, data: bytes, key: str) -> tuple[bytes, dict[str, Any]]:
        """:func:`open_envelope` of an entry, remembered for entries that pass.

        Checking is a function of the entry's bytes, its key and the HMAC key alone, so bytes
        equal to those of an entry that passed (compared whole, not by digest) pass again
        without hashing or parsing anything: a repeated hit reads the entry and compares it.
        The header is shared between those hits and must not be changed.

        Raises:
            CachePayloadError: as :func:`open_envelope` (``CacheSignatureError`` included).
        """
        known = self._checked.get(key)
        if known is not None and known[0] == data and known[1] is self.hmac_key:
            return known[2], known[3]
        body, header = open_envelope(data, key=key, hmac_key=self.hmac_key)
        if len(data) <= _CHECKED_MAX_BYTES:
            with self._checked_lock:
                while len(self._checked) >= _CHECKED_ENTRIES:
                    del self._checked[next(iter(self._checked))]  # the oldest
                self._checked[key] = (data, self.hmac_key, body, header)
        return body, header

    def lookup(self, function: str, key: str) -> CachedEntry | None:
        """Return the entry of ``key`` from the first tier that has a good one, or ``None``.

        A bad local entry is deleted; a remote hit is copied into the local tier.
        """
        data = self.local.get(key)
        if data is not None:
            entry = self._open(data, key, "local", function)
            if entry is not None:
                return entry
            self.local.delete(key)
        if self.remote is None:
            return None
        data = self.remote.get(function, key)
        if data is None:
            return None
        entry = self._open(data, key, "remote", function)
        if entry is not None:
            self.local.set(key, data, function=function)
        return entry

    def put(self, function: str, key: str, envelope: Envelope) -> list[str]:
        """Write the entry to every tier; return the names of the tiers it reached."""
        self.local.set(key, envelope.data, function=function)
        tiers = ["local"]
        if self.remote is not None and self.remote.put(function, key, envelope.data):
            tiers.append("remote")
        return tiers

    def delete(self, function: str, key: str) -> None:
        """Remove one entry from every tier."""
        self.local.delete(key)
        if self.remote is not None:
            self.remote.delete(function, key)

    def clear(self, *, function: str | None = None, remote: bool = False) -> dict[str, int]:
        """Remove entries (of ``function`` when given) locally and, with ``remote``, remotely.

        Returns:
            How many entries were removed, per tier.
        """
        removed = {"local": self.local.clear(function)}
        if remote and self.remote is not None:
            removed["remote"] = self.remote.clear(function)
        return removed

    def close(self) -> None:
        """Close the local tier."""
        self.local.close()


_shared: dict[tuple[Any, ...], Cache] = {}
_shared_lock = threading.Lock()


def shared_cache(settings: Settings) -> Cache:
    """Return the cache ``settings`` describe, built once per process and settings.

    A session and the tasks it runs in this process use it, so they share one diskcache
    connection and one remote tier.
    """
    key = (os.getpid(), settings.cache_dir, settings.cache_remote, settings.cache_hmac_key)
    cache = _shared.get(key)
    if cache is None:
        with _shared_lock:
            cache = _shared.get(key)
            if cache is None:
                cache = _shared[key] = Cache.from_settings(settings)
    return cache


_override: ContextVar[Cache | None] = ContextVar("scalable_cache", default=None)
_defaults: weakref.WeakKeyDictionary[Ledger, Cache] = weakref.WeakKeyDictionary()
_defaults_lock = threading.Lock()


def default_cache() -> Cache:
    """Return the cache calls use: the one bound by :func:`using`, else the active ledger's.

    Without :func:`using`, the cache is built from the settings of the ledger events go to
    (:func:`scalable.ledger.bus.active`: a session's, else the default one), so a session's
    manifest (``project.local_cache``) and ``SCALABLE_CACHE_*`` apply together with its other
    settings, and ``bus.reset_default()`` picks up changed variables for both.
    """
    bound = _override.get()
    if bound is not None:
        return bound
    ledger = active()
    cache = _defaults.get(ledger)
    if cache is None:
        with _defaults_lock:
            cache = _defaults.get(ledger)
            if cache is None:
                cache = _defaults[ledger] = Cache.from_settings(ledger.settings)
    return cache


@contextlib.contextmanager
def using(cache: Cache) -> Iterator[Cache]:
    """Make ``@cacheable`` calls inside the block use ``cache`` (sessions and tests use this)."""
    token = _override.set(cache)
    try:
        yield cache
    finally:
        _override.reset(token)
