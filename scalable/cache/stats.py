"""What the cache holds and how well it serves: entries and bytes per function, hit ratios.

Entries and bytes come from the local tier; hits, misses and writes from the ledger's
``cache`` view, so the ratio covers every run the ledger knows, on any machine that shipped
its events there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scalable.cache.tiers import Cache, default_cache
from scalable.errors import CacheEntryNotFoundError, CacheNotFoundError, ConfigError
from scalable.failures import storage_error
from scalable.ledger.bus import active

if TYPE_CHECKING:
    from scalable.ledger.log import Ledger

__all__ = ["STATS_COLUMNS", "cache_stats", "clear_cache"]

STATS_COLUMNS = ("function", "entries", "bytes", "hits", "misses", "writes", "hit_ratio")

_LEDGER_SQL = (
    "SELECT function_name, "
    "count(*) FILTER (WHERE op = 'hit') AS hits, "
    "count(*) FILTER (WHERE op = 'miss') AS misses, "
    "count(*) FILTER (WHERE op = 'write') AS writes "
    "FROM cache WHERE function_name IS NOT NULL GROUP BY function_name"
)


def _existing_cache() -> Cache:
    """The default cache, once its local directory is known to exist (reading creates nothing).

    Raises:
        CacheNotFoundError: the local cache directory does not exist.
    """
    directory = active().settings.cache_dir
    try:
        exists = directory.is_dir()
    except OSError as exc:
        raise storage_error(exc, str(directory), action="read", what="the cache directory") from exc
    if not exists:
        raise CacheNotFoundError(
            f"no cache at {str(directory)!r}: nothing was cached there; check SCALABLE_CACHE_DIR "
            "(or project.local_cache in the manifest) and the directory you run in"
        )
    return default_cache()


def cache_stats(cache: Cache | None = None, ledger: Ledger | None = None) -> list[dict[str, Any]]:
    """Return one row per function: entries and bytes held locally, and hits, misses, writes
    and the hit ratio (hits / (hits + misses)) recorded in the ledger.

    Args:
        cache: the cache to inspect (the default one from settings when omitted).
        ledger: the ledger to count events in (``Ledger.open()`` when omitted).

    Raises:
        CacheNotFoundError: no cache is given and the default one's directory does not exist
            (nothing is created).
    """
    from scalable.ledger.log import Ledger

    cache = cache or _existing_cache()
    ledger = ledger or Ledger.open()
    rows: dict[str, dict[str, Any]] = {}
    for row in cache.local.stats():
        rows[row["function"]] = {"function": row["function"], "entries": row["entries"], "bytes": row["bytes"]}
    for counted in ledger.query(_LEDGER_SQL).to_pylist():
        name = counted["function_name"]
        row = rows.setdefault(name, {"function": name, "entries": 0, "bytes": 0})
        row.update(hits=int(counted["hits"]), misses=int(counted["misses"]), writes=int(counted["writes"]))
    out = []
    for name in sorted(rows):
        row = rows[name]
        hits, misses = row.setdefault("hits", 0), row.setdefault("misses", 0)
        row.setdefault("writes", 0)
        row["hit_ratio"] = round(hits / (hits + misses), 4) if hits + misses else None
        out.append({c: row[c] for c in STATS_COLUMNS})
    return out


def clear_cache(*, function: str | None = None, remote: bool = False, cache: Cache | None = None) -> dict[str, int]:
    """Remove cache entries (of one function when given), locally and, with ``remote``, remotely.

    Args:
        function: ``module.qualname`` of the function whose entries go; every entry when omitted.
        remote: clear the remote tier too.
        cache: the cache to clear (the default one from settings when omitted).

    Returns:
        How many entries were removed, per tier.

    Raises:
        ConfigError: ``remote`` is asked for but no remote tier is configured.
        CacheNotFoundError: no cache is given, the default one's directory does not exist and
            ``remote`` is not asked for (nothing is created).
        CacheEntryNotFoundError: ``function`` has no entry in the tiers cleared.
    """
    cache = cache or (default_cache() if remote else _existing_cache())
    if remote and cache.remote is None:
        raise ConfigError("no remote cache is configured; set SCALABLE_CACHE_REMOTE or drop --remote")
    removed = cache.clear(function=function, remote=remote)
    if function is not None and not any(removed.values()):
        where = " or remote" if remote else ""
        raise CacheEntryNotFoundError(
            f"no local{where} cache entry belongs to the function {function!r}; give its module.qualname as "
            "listed by: scalable cache stats"
        )
    return removed
