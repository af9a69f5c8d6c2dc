"""Warming a machine's local cache from the remote tier with every entry a run wrote."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scalable.cache.payload import open_envelope
from scalable.cache.tiers import Cache
from scalable.errors import CachePayloadError, ConfigError
from scalable.logs import get_logger

__all__ = ["WarmCache"]

_log = get_logger("scalable.cache")


class WarmCache:
    """Replay handler: copy each entry a ``cache/write`` event names from remote to local.

    Entries are checked (digest, key and, with ``SCALABLE_CACHE_HMAC_KEY``, signature) before
    they are stored locally; nothing is decoded. Afterwards the next call of each cached
    function with the same arguments is a local hit.

    Raises:
        ConfigError: the cache has no remote tier (``SCALABLE_CACHE_REMOTE`` is unset).
    """

    def __init__(self, cache: Cache) -> None:
        if cache.remote is None:
            raise ConfigError(
                "warming the cache needs a remote tier: set SCALABLE_CACHE_REMOTE to the shared cache URI"
            )
        self.cache = cache
        self.warmed: list[str] = []
        self.already: list[str] = []
        self.missing: list[str] = []

    def __call__(self, event: Mapping[str, Any]) -> None:
        if event["event_type"] != "cache" or event["op"] != "write":
            return
        function, key = event.get("function_name"), event.get("key_digest")
        if not function or not key:
            return
        if self.cache.local.get(key) is not None:
            self.already.append(key)
            return
        assert self.cache.remote is not None
        data = self.cache.remote.get(function, key)
        if data is None:
            self.missing.append(key)
            return
        try:
            open_envelope(data, key=key, hmac_key=self.cache.hmac_key)
        except CachePayloadError as exc:
            _log.error("cache.warm_refused", function=function, key_digest=key, reason=str(exc))
            self.missing.append(key)
            return
        self.cache.local.set(key, data, function=function)
        self.warmed.append(key)
