"""``scalable manifest ...``: check a ``scalable.yaml`` and show what it declares."""

from __future__ import annotations

import warnings

import click

from scalable.cli.output import format_option, render_rows
from scalable.manifest import ManifestWarning, load_manifest
from scalable.providers import PROVIDERS

__all__ = ["COMMANDS", "manifest"]


@click.group()
def manifest() -> None:
    """Check the manifest (scalable.yaml)."""


@click.command()
@click.argument("path", required=False, type=click.Path(dir_okay=True))
@click.option(
    "--target",
    "target",
    default=None,
    help="Check this target as a run would: its overlay applied, what it needs here set.",
)
@format_option()
def check(path: str | None, target: str | None, fmt: str) -> None:
    """Validate PATH (default: SCALABLE_MANIFEST or ./scalable.yaml); print its targets and lock.

    One row per target (only TARGET with --target): provider, whether this scalable can run
    it, its options and the manifest lock. Warnings (options a provider does not use, no
    tasks...) go to stderr, one line each. Exits 2 with one line naming file, line, error
    code and key when the manifest is invalid.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ManifestWarning)  # printed below, each once
        parsed = load_manifest(path, target_name=target)
    for issue in parsed.warnings:
        click.echo(f"warning: {issue}", err=True)
    if target is not None:
        specs = [parsed.check_target(target)]
    else:
        specs = list(parsed.targets.values()) or [parsed.check_target("local")]
    rows = [
        {
            "manifest": str(parsed.path),
            "project": parsed.project.name,
            "target": spec.name,
            "provider": spec.provider,
            "runs_here": PROVIDERS[spec.provider].runnable,
            "options": dict(spec.options),
            "overlay": parsed.overlay if spec.name == target else spec.options.get("overlay"),
            "lock": parsed.lock,
        }
        for spec in specs
    ]
    render_rows(rows, ["manifest", "project", "target", "provider", "runs_here", "options", "overlay", "lock"], fmt)


#: The commands of this module; ``scalable/cli/__init__.py`` adds them to the ``manifest`` group.
COMMANDS: tuple[click.Command, ...] = (check,)
