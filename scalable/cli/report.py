"""``scalable report``: Scalable's run report, from the ledger."""

from __future__ import annotations

import json
from pathlib import Path

import click

from scalable.ledger import Ledger
from scalable.ledger.runfiles import render_text_report, run_report

__all__ = ["COMMANDS", "report"]


@click.command()
@click.option("--run-id", help="The run to report.")
@click.option("--latest", is_flag=True, help="Report the run that started last.")
@click.option(
    "--runs-dir",
    type=click.Path(file_okay=False),
    help="Runs directory (default: SCALABLE_RUNS_DIR or .scalable/runs).",
)
@click.option(
    "--ledger-dir",
    type=click.Path(file_okay=False),
    help="Compacted ledger directory (default: SCALABLE_LEDGER_DIR or .scalable/ledger).",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Output format."
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Also write the report to FILE.")
def report(
    run_id: str | None, latest: bool, runs_dir: str | None, ledger_dir: str | None, fmt: str, output: str | None
) -> None:
    """Print a run's summary as Scalable's ``scalable report`` does: tasks, timing, cache.

    Give --run-id ID or --latest. The summary is computed from the run's events, compacted
    or not (the keys of Scalable's summary.json with --format json). Exits 2 with one line
    when there is no such run.
    """
    summary = run_report(Ledger.open(runs_dir, ledger_dir, must_exist=True), run_id, latest=latest)
    text = render_text_report(summary) if fmt == "text" else json.dumps(summary, indent=2, sort_keys=True) + "\n"
    click.echo(text, nl=False)
    if output:
        Path(output).write_text(text)


#: The commands of this module; ``scalable/cli/__init__.py`` adds them to the top-level group.
COMMANDS: tuple[click.Command, ...] = (report,)
