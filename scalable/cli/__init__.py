"""The ``scalable`` command: a thin click layer over the library.

Every command parses, calls one public function and renders. A :class:`ScalableError`
becomes one line on stderr and its exit code (2 bad input, 1 a failed check); ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from scalable import __version__
from scalable.errors import ScalableError
from scalable.logs import mask_secrets

__all__ = ["cli", "main"]


class _Group(click.Group):
    """Top-level group turning ScalableError into one stderr line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ScalableError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {mask_secrets(str(exc))}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="scalable")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Artifacts of workflow runs, and the provenance ledger of them."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if debug:
        from scalable.logs import configure_logging

        configure_logging(log_level="debug", log_format=None, force=True)


def _register() -> None:
    from scalable.cli import provenance  # registers its commands on the ledger group
    from scalable.cli.artifacts import artifacts
    from scalable.cli.cache import cache
    from scalable.cli.ledger import ledger
    from scalable.cli.manifest import manifest

    cli.add_command(artifacts)
    cli.add_command(cache)
    cli.add_command(ledger)
    cli.add_command(manifest)
    del provenance


_register()


def main() -> None:
    """Entry point of the ``scalable`` console script."""
    sys.exit(cli.main(prog_name="scalable"))
