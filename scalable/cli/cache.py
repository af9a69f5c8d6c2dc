"""``scalable cache ...``: what the result cache holds, and clearing it."""

from __future__ import annotations

from collections.abc import Callable

import click

from scalable.cache.stats import STATS_COLUMNS, cache_stats, clear_cache
from scalable.cli.output import format_option, render_rows

__all__ = ["COMMANDS", "cache"]

_Command = Callable[..., None]
# format_option is untyped (it returns click's decorator); give it its real type here.
_format: Callable[[_Command], _Command] = format_option()


@click.group()
def cache() -> None:
    """Inspect and clear the result cache of @cacheable functions."""


@click.command()
@_format
def stats(fmt: str) -> None:
    """Entries and bytes per function in the local cache, with hits, misses and hit ratio
    from the ledger.
    """
    render_rows(cache_stats(), STATS_COLUMNS, fmt)


@click.command()
@click.option("--remote", is_flag=True, help="Clear the remote tier (SCALABLE_CACHE_REMOTE) too.")
@click.option("--function", "function", metavar="NAME", help="Only entries of this function (module.qualname).")
@_format
def clear(remote: bool, function: str | None, fmt: str) -> None:
    """Remove cache entries, locally and with --remote also remotely."""
    removed = clear_cache(function=function, remote=remote)
    render_rows([{"tier": tier, "removed": n} for tier, n in removed.items()], ("tier", "removed"), fmt)


#: The commands of this module; ``scalable/cli/__init__.py`` adds them to the ``cache`` group.
COMMANDS: tuple[click.Command, ...] = (stats, clear)
