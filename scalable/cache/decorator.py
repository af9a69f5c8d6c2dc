"""``@cacheable``: Scalable's caching decorator, with full-width keys and an event per lookup.

A call computes its key (:mod:`scalable.cache.keys`), looks it up in the cache's tiers
(:mod:`scalable.cache.tiers`) and publishes ``cache/hit`` or ``cache/miss``; after a miss it
runs the function, stores the sealed result and publishes ``cache/write``. File and
directory arguments are the events' ``inputs``, so lineage crosses runs through the cache.

A return value that cannot be pickled is returned to the caller as usual; an error naming
the function is logged, nothing is written to any tier and no ``cache/write`` is published.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar, overload

from scalable.cache.keys import KeyBuilder
from scalable.cache.payload import seal_value
from scalable.cache.tiers import default_cache
from scalable.cache.types import GenericType, convert_to_type
from scalable.errors import CacheArgumentError, CacheError, CachePayloadError
from scalable.ledger import bus
from scalable.ledger.events import format_timestamp
from scalable.logs import get_logger

__all__ = ["cacheable"]

F = TypeVar("F", bound=Callable[..., Any])
_log = get_logger("scalable.cache")
_perf = time.perf_counter


def _output_digest(return_type: type[GenericType] | None, value: Any) -> str | None:
    """Digest of a result as ``return_type`` sees it; ``None`` when it cannot be hashed now
    (a returned file that was deleted since), which never matches a stored digest."""
    wrapped = convert_to_type(value) if return_type is None else return_type(value)
    try:
        return wrapped.digest().hex()
    except CacheError:
        return None


def _check_types(return_type: Any) -> type[GenericType] | None:
    if return_type is None:
        return None
    if isinstance(return_type, type) and issubclass(return_type, GenericType):
        return return_type
    raise CacheArgumentError(
        f"@cacheable(return_type={return_type!r}) is not a GenericType subclass; "
        "use ValueType, FileType, DirType, ObjectType, UtilityType or your own GenericType subclass"
    )


def _decorate(
    func: Callable[..., Any],
    *,
    return_type: type[GenericType] | None,
    check_output: bool,
    recompute: bool,
    store: bool,
    arg_types: dict[str, type[GenericType]],
) -> Callable[..., Any]:
    builder = KeyBuilder(func, arg_types)
    name = builder.name
    publish = bus.publish
    # Hits and misses are frequent and cheap: they are group-committed; writes are acknowledged.
    publish_soon = bus.publish_async

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = _perf()
        key, inputs, locations = builder.key(args, kwargs)
        # Where each file argument was read: what a rerun restores there.
        where = {"input_locations": locations} if locations else {}
        cache = default_cache()
        reason = "recompute" if recompute else "absent"
        if not recompute:
            entry = cache.lookup(name, key)
            if entry is not None:
                header = entry.header
                if check_output and (
                    header.get("output") is None or header["output"] != _output_digest(return_type, entry.value)
                ):
                    _log.warning("cache.output_changed", function=name, key_digest=key)
                    cache.delete(name, key)
                    reason = "output_changed"
                else:
                    publish_soon(
                        {
                            "event_type": "cache",
                            "op": "hit",
                            "function_name": name,
                            "key_digest": key,
                            "hit": True,
                            "duration_s": _perf() - start,
                            "digest": entry.digest,
                            "size_bytes": entry.size_bytes,
                            "inputs": inputs or None,
                            "attrs": {
                                "tier": entry.tier,
                                "writer_run": header.get("writer_run"),
                                "saved_s": header.get("compute_s"),
                                **where,
                            },
                        }
                    )
                    return entry.value
        publish_soon(
            {
                "event_type": "cache",
                "op": "miss",
                "function_name": name,
                "key_digest": key,
                "hit": False,
                "duration_s": _perf() - start,
                "inputs": inputs or None,
                "attrs": {"tiers": cache.tier_names, "reason": reason, **where},
            }
        )
        # The write event goes to the same run as this miss; the entry names that run as its writer.
        writer_run = bus.active().current_run()
        begin = _perf()
        value = func(*args, **kwargs)
        compute_s = _perf() - begin
        if not store:
            return value
        extra: dict[str, Any] = {"compute_s": round(compute_s, 6)}
        if check_output:
            output = _output_digest(return_type, value)
            if output is not None:
                extra["output"] = output
        try:
            envelope = seal_value(
                value,
                key=key,
                function=name,
                writer_run=writer_run,
                created=format_timestamp(time.time_ns()),
                hmac_key=cache.hmac_key,
                extra=extra,
            )
        except CachePayloadError as exc:
            _log.error("cache.value_not_cached", function=name, key_digest=key, error=str(exc))
            return value
        tiers = cache.put(name, key, envelope)
        publish(
            {
                "event_type": "cache",
                "op": "write",
                "function_name": name,
                "key_digest": key,
                "hit": False,
                "duration_s": compute_s,
                "digest": envelope.digest,
                "size_bytes": envelope.size_bytes,
                "inputs": inputs or None,
                "attrs": {"tiers": tiers, **where},
            }
        )
        return value

    wrapper.cache_key = lambda *a, **kw: builder.key(a, kw).key  # type: ignore[attr-defined]
    wrapper.function_name = name  # type: ignore[attr-defined]
    return wrapper


@overload
def cacheable(return_type: F) -> F: ...


@overload
def cacheable(
    return_type: type[GenericType] | None = None,
    void: bool = False,
    check_output: bool = False,
    recompute: bool = False,
    store: bool = True,
    **arg_types: type[GenericType],
) -> Callable[[F], F]: ...


def cacheable(
    return_type: Any = None,
    void: bool = False,
    check_output: bool = False,
    recompute: bool = False,
    store: bool = True,
    **arg_types: type[GenericType],
) -> Any:
    """Cache a function's results by its code and arguments (Scalable's decorator contract).

    Use it bare (``@cacheable``) or with options (``@cacheable(return_type=FileType,
    data=FileType)``). Keys are SHA-256 (256 bits) over the function's code identity, the
    bound argument names (defaults applied) and argument values hashed by their types.
    Results are kept in the local tier (``SCALABLE_CACHE_DIR``) and, when
    ``SCALABLE_CACHE_REMOTE`` is set, in the shared remote tier.

    Args:
        return_type: the :class:`GenericType` that hashes the return value (for
            ``check_output``); detected from the value when omitted.
        void: the function returns nothing worth caching: it is returned undecorated, as in
            Scalable.
        check_output: on a hit, re-hash the cached value with ``return_type`` and recompute
            when it no longer matches the digest stored at write time (for instance a
            returned file that was changed since).
        recompute: always run the function and overwrite the entry.
        store: write results to the cache (``False``: only read it).
        **arg_types: per-parameter :class:`GenericType` subclasses, e.g. ``path=FileType``.

    Returns:
        The decorated function (bare use) or a decorator.

    Raises:
        CacheArgumentError: a type is not a ``GenericType`` subclass or ``arg_types`` names a
            parameter the function does not have.
    """
    if (
        return_type is not None
        and callable(return_type)
        and not (isinstance(return_type, type) and issubclass(return_type, GenericType))
    ):
        return _decorate(
            return_type, return_type=None, check_output=check_output, recompute=recompute, store=store, arg_types={}
        )
    checked = _check_types(return_type)
    for arg, typ in arg_types.items():
        if not (isinstance(typ, type) and issubclass(typ, GenericType)):
            raise CacheArgumentError(
                f"@cacheable({arg}={typ!r}) is not a GenericType subclass; "
                "use FileType, DirType, ValueType, ObjectType, UtilityType or a subclass of GenericType"
            )

    def decorator(func: F) -> F:
        if void:
            return func
        wrapped = _decorate(
            func,
            return_type=checked,
            check_output=check_output,
            recompute=recompute,
            store=store,
            arg_types=dict(arg_types),
        )
        return wrapped  # type: ignore[return-value]

    return decorator
