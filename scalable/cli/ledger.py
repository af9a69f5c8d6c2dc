"""``scalable ledger``: the group and its options, and reading and keeping the streams (query, tail, compact, sync, recover).

The commands about runs and their provenance are in :mod:`scalable.cli.provenance`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from scalable.cli.output import format_option, progress_for, progress_option, render_batches, render_rows
from scalable.ledger.log import Ledger

__all__ = ["COMMANDS", "ledger", "open_ledger"]

#: Rows per batch a streamed query result is written in.
_STREAM_ROWS = 4096
_TAIL_COLUMNS = ("timestamp", "run_id", "event_type", "op", "task_name", "artifact_name", "location", "digest")


def open_ledger(ctx: click.Context) -> Ledger:
    """Open the ledger named by the group's ``--runs-dir``/``--ledger-dir`` and settings; it must exist."""
    opts = ctx.obj
    return Ledger.open(opts.get("runs_dir"), opts.get("ledger_dir"), must_exist=True)


@click.group()
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
@click.pass_context
def ledger(ctx: click.Context, runs_dir: str | None, ledger_dir: str | None) -> None:
    """Query, trace, audit and replay the provenance ledger."""
    ctx.ensure_object(dict)
    ctx.obj["runs_dir"] = runs_dir
    ctx.obj["ledger_dir"] = ledger_dir


@click.command()
@click.argument("sql")
@format_option("parquet")
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE instead of stdout (needed for parquet)."
)
@click.option("--as-of", help="Show the ledger as it was at this ISO-8601 time.")
@click.pass_context
def query(ctx: click.Context, sql: str, fmt: str, output: str | None, as_of: str | None) -> None:
    """Run a read-only SQL query over the ledger's views.

    Views: events, artifacts, cache, tasks, runs, lineage. One statement runs: a query, a
    plain EXPLAIN of one, or a read-only PRAGMA; nothing can write. csv, json, jsonl and
    parquet stream the result, so it may be larger than memory. Example:

        scalable ledger query "SELECT run_id, artifact_name, size_bytes FROM artifacts"
    """
    reader = open_ledger(ctx).query_batches(sql, as_of=as_of, batch_rows=_STREAM_ROWS)
    render_batches(reader, fmt, output)


@click.command()
@click.option("--run", "run_id", help="Only this run's stream.")
@click.option(
    "-n",
    "--lines",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="How many of the newest events to print.",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing events as they are appended (Ctrl-C stops).")
@format_option()
@click.pass_context
def tail(ctx: click.Context, run_id: str | None, lines: int, follow: bool, fmt: str) -> None:
    """Print the newest events of the live streams."""
    from scalable.ledger.tail import follow_events, tail_events

    led = open_ledger(ctx)
    rows: list[dict[str, Any]] = tail_events(led, run_id, lines)
    columns = list(_TAIL_COLUMNS)
    render_rows(rows, columns, fmt)
    if follow:
        try:
            for event in follow_events(led, run_id):
                render_rows([event], columns, "jsonl" if fmt == "json" else fmt, header=False)
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass


@click.command()
@click.option(
    "--keep-jsonl/--no-keep-jsonl",
    default=True,
    show_default=True,
    help="Keep the streams after compaction, or delete those of finished runs once their Parquet copy is durable and verified.",
)
@click.option(
    "--retire-before",
    metavar="DATE",
    help="Remove events older than DATE (ISO-8601) from the dataset; each affected run gets a run/retired tombstone event.",
)
@click.option("--run", "run_ids", multiple=True, metavar="RUN", help="Only this run's stream (repeatable).")
@format_option()
@progress_option("the batches compacted")
@click.pass_context
def compact(
    ctx: click.Context,
    keep_jsonl: bool,
    retire_before: str | None,
    run_ids: tuple[str, ...],
    fmt: str,
    show_progress: bool | None,
) -> None:
    """Compact the streams into the Parquet dataset under the ledger directory.

    Safe to kill at any instant and to run again: the views then show every event once.
    """
    opts = ctx.obj
    led = Ledger.open(opts.get("runs_dir"), opts.get("ledger_dir"))
    led.location.check_exists(before_compaction=True)  # the first compaction makes the ledger directory
    progress = progress_for(show_progress)
    try:
        result = led.compact(
            run_ids or None,
            keep_jsonl=keep_jsonl,
            retire_before=retire_before,
            progress=(lambda done, total: progress("compacting (batches)", done, total)) if progress else None,
        )
    finally:
        if progress is not None:
            progress.close()
    summary = result.to_dict()
    render_rows([summary], list(summary), fmt)
    if not result.committed:
        click.echo(f"nothing to do: generation {result.version} already holds every event", err=True)
    if result.streams_retired:
        click.echo(
            f"deleted the streams of {len(result.streams_retired)} finished run(s); their events are in Parquet",
            err=True,
        )


@click.command()
@format_option()
@click.pass_context
def sync(ctx: click.Context, fmt: str) -> None:
    """Ship the new lines of every local stream to SCALABLE_RUNS_DIR_REMOTE.

    Lines go as immutable segment objects; running it again ships only what is new.
    """
    result = open_ledger(ctx).sync_remote()
    summary = result.to_dict()
    render_rows([summary], list(summary), fmt)


@click.command()
@format_option()
@click.pass_context
def recover(ctx: click.Context, fmt: str) -> None:
    """Rebuild the record of the compacted files (the generation) from the files present.

    Run it when a query or compaction says the record under the ledger directory's
    _manifest/ is missing or not valid. Every event of the compacted files comes back exactly
    once; nothing is deleted. Does nothing when the record is sound.
    """
    from scalable.ledger.recover import describe

    result = open_ledger(ctx).recover()
    summary = result.to_dict()
    render_rows([summary], list(summary), fmt)
    click.echo(describe(result), err=True)


#: The commands of this module; ``scalable/cli/__init__.py`` adds them to the ``ledger`` group.
COMMANDS: tuple[click.Command, ...] = (query, tail, compact, sync, recover)
