"""What the cache holds and how well it serves: entries and bytes per function, hit ratios.

Entries and bytes come from the local tier; hits, misses and writes from the ledger's
``cache`` view, so the ratio covers every run the ledger knows, on any machine that shipped
its events there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scalable.cache.tiers import Cache, default_cache
from scalable.errors import ConfigError

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


def cache_stats(cache: Cache | None = None, ledger: Ledger | None = None) -> list[dict[str, Any]]:
    """Return one row per function: entries and bytes held locally, and hits, misses, writes
    and the hit ratio (hits / (hits + misses)) recorded in the ledger.

    Args:
        cache: the cache to inspect (the default one from settings when omitted).
        ledger: the ledger to count events in (``Ledger.open()`` when omitted).
    """
    from scalable.ledger.log import Ledger

    cache = cache or default_cache()
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
    """
    cache = cache or default_cache()
    if remote and cache.remote is None:
        raise ConfigError("no remote cache is configured; set SCALABLE_CACHE_REMOTE or drop --remote")
    return cache.clear(function=function, remote=remote)
