"""The ``scalable`` command: a thin click layer over the library.

Every command parses, calls one public function and renders. A :class:`ScalableError`
becomes one line on stderr and its exit code (2 bad input, 1 a failed check); ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

import click

from scalable import __version__
from scalable.cli import artifacts, cache, ledger, manifest, provenance, report, ui
from scalable.errors import ConfigError, ScalableError
from scalable.failures import failure_kind, storage_error
from scalable.logs import configure_logging, error_line

__all__ = ["add_commands", "cli", "main"]


class _Group(click.Group):
    """Top-level group turning every error into one stderr line and an exit code.

    A :class:`ScalableError` exits with its code (2 could not do it, 1 a check failed). Any
    other exception is mapped by :func:`scalable.failures.storage_error` where it is a
    storage, network or OS failure, and otherwise reported as an unexpected error; both exit 2,
    so 1 always means "a check found problems". ``--debug`` re-raises instead.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            # The reader stopped reading (``| head``): nothing is wrong, and nothing more is said.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except Exception as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            error = exc if isinstance(exc, ScalableError) else _unexpected(exc)
            click.echo(error_line(error), err=True)
            ctx.exit(error.exit_code)


def _unexpected(exc: Exception) -> ScalableError:
    """A one-line error for an exception no command turned into a ScalableError."""
    where = getattr(exc, "filename", None)
    if where is not None or failure_kind(exc) != "other":
        return storage_error(exc, str(where or ""), action="use")
    return ScalableError(
        f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no message'} "
        "(run again with --debug for the traceback, and report it)"
    )


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="scalable")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Artifacts of workflow runs, and the provenance ledger of them."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    # The CLI is the application: it, not the library, configures logging.
    configure_logging(log_level="debug" if debug else None, force=True)


def add_commands(group: click.Group, commands: Iterable[click.Command]) -> None:
    """Add ``commands`` to ``group``, refusing a name the group has already.

    Raises:
        ConfigError: a command's name is taken in ``group``.
    """
    for command in commands:
        if command.name in group.commands:
            raise ConfigError(f"the command {group.name} {command.name!r} exists already; choose another name")
        group.add_command(command)


# Every command of ``scalable``, in one place: each group gets the COMMANDS of its modules.
add_commands(artifacts.artifacts, artifacts.COMMANDS)
add_commands(cache.cache, cache.COMMANDS)
add_commands(ledger.ledger, (*ledger.COMMANDS, *provenance.COMMANDS))
add_commands(manifest.manifest, manifest.COMMANDS)
add_commands(cli, (artifacts.artifacts, cache.cache, ledger.ledger, manifest.manifest, *report.COMMANDS, *ui.COMMANDS))


def main() -> None:
    """Entry point of the ``scalable`` console script."""
    sys.exit(cli.main(prog_name="scalable"))
