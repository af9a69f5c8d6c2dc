"""``scalable manifest ...``: check a ``scalable.yaml`` and show what it declares."""

from __future__ import annotations

import click

from scalable.cli.output import format_option, render_rows
from scalable.manifest import load_manifest

__all__ = ["COMMANDS", "manifest"]


@click.group()
def manifest() -> None:
    """Check the manifest (scalable.yaml)."""


@click.command()
@click.argument("path", required=False, type=click.Path(dir_okay=True))
@format_option()
def check(path: str | None, fmt: str) -> None:
    """Validate PATH (default: SCALABLE_MANIFEST or ./scalable.yaml); print project, targets, lock.

    Exits 2 with one line naming file, line and key when the manifest is invalid.
    """
    parsed = load_manifest(path)
    rows = [
        {
            "manifest": str(parsed.path),
            "project": parsed.project.name,
            "target": spec.name,
            "provider": spec.provider,
            "options": dict(spec.options),
            "lock": parsed.lock,
        }
        for spec in (list(parsed.targets.values()) or [parsed.target("local")])
    ]
    render_rows(rows, ["manifest", "project", "target", "provider", "options", "lock"], fmt)


#: The commands of this module; ``scalable/cli/__init__.py`` adds them to the ``manifest`` group.
COMMANDS: tuple[click.Command, ...] = (check,)
