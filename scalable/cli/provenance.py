"""``scalable ledger runs|show|lineage|audit|export|replay``: runs and their provenance, what the ledger is for."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from scalable.cli.ledger import open_ledger
from scalable.cli.output import format_option, render_rows, render_table
from scalable.errors import ConfigError
from scalable.ledger.export import export_formats, lineage_formats

__all__ = ["COMMANDS", "audit", "export", "lineage", "replay", "runs", "show"]

_RUN_COLUMNS = ("run_id", "project", "status", "started_at", "finished_at", "tasks", "artifacts", "bytes", "events")


class _LineageFormat(click.Choice[str]):
    """The lineage formats of the registry, read when the command runs (so added ones count)."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(lineage_formats())

    @choices.setter
    def choices(self, _value: tuple[str, ...]) -> None:
        pass  # the registry is the one list


@click.command()
@format_option()
@click.option("--as-of", help="Show the ledger as it was at this ISO-8601 time.")
@click.pass_context
def runs(ctx: click.Context, fmt: str, as_of: str | None) -> None:
    """List runs: project, status, start and end, counts and bytes."""
    table = open_ledger(ctx).query(
        f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs ORDER BY started_at, run_id", as_of=as_of
    )
    render_table(table, fmt)


@click.command()
@click.argument("run_id", metavar="RUN")
@format_option()
@click.pass_context
def show(ctx: click.Context, run_id: str, fmt: str) -> None:
    """Show one run: its summary, tasks and artifacts."""
    from scalable.errors import RunNotFoundError
    from scalable.ledger.events import check_run_id

    check_run_id(run_id)
    led = open_ledger(ctx)
    quoted = run_id.replace("'", "''")
    run = led.query(f"SELECT * FROM runs WHERE run_id = '{quoted}'").to_pylist()
    if not run:
        raise RunNotFoundError(f"run {run_id!r} is not in the ledger; list runs with: scalable ledger runs")
    tasks = led.query(
        f"SELECT task_name, status, started_at, ended_at, duration_s, error FROM tasks WHERE run_id = '{quoted}' ORDER BY started_at"
    )
    artifacts = led.query(
        f"SELECT op, artifact_name, kind, size_bytes, left(digest, 16) AS digest, location FROM artifacts WHERE run_id = '{quoted}' ORDER BY timestamp"
    )
    if fmt in ("json", "jsonl"):
        doc = {"run": run[0], "tasks": tasks.to_pylist(), "artifacts": artifacts.to_pylist()}
        click.echo(json.dumps(doc, default=str, indent=None if fmt == "jsonl" else 2))
        return
    render_rows(run, list(run[0]), fmt)
    for title, table in (("tasks", tasks), ("artifacts", artifacts)):
        if fmt == "table":
            click.echo(f"\n{title}:")
        render_table(table, fmt)


@click.command()
@click.argument("node")
@click.option("--up", "direction", flag_value="up", default=True, help="What NODE came from (default).")
@click.option("--down", "direction", flag_value="down", help="What came of NODE.")
@click.option("--both", "direction", flag_value="both", help="Both directions.")
@click.option("--depth", type=click.IntRange(min=1), help="At most this many edges from NODE.")
@click.option("--as-of", help="The lineage as it was at this ISO-8601 time.")
@click.option("--format", "fmt", type=_LineageFormat(), default="tree", show_default=True, help="Output format.")
@click.pass_context
def lineage(ctx: click.Context, node: str, direction: str, depth: int | None, as_of: str | None, fmt: str) -> None:
    """Trace NODE (a digest, location URI or run id) through runs and artifacts."""
    graph = open_ledger(ctx).lineage(node, direction=direction, depth=depth, as_of=as_of)
    click.echo(graph.render(fmt), nl=False)


@click.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--no-content", is_flag=True, help="Check the streams only; do not re-hash stored bytes.")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True, help="Output format."
)
@click.pass_context
def audit(ctx: click.Context, run_id: str | None, no_content: bool, fmt: str) -> None:
    """Check that chains are intact, seals match and stored bytes still match their digests.

    Exits 0 when everything holds, 1 when a problem was found (each one is listed).
    """
    led = open_ledger(ctx)
    bar: Any = None
    progress = None
    if not no_content and fmt == "table" and sys.stderr.isatty():
        bar = click.progressbar(length=0, label="hashing artifacts", file=sys.stderr)
        progress = bar.update
    report = led.audit(run_id, content=not no_content, progress=progress)
    if bar is not None:
        bar.render_finish()
    if fmt == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        rows: list[dict[str, Any]] = [
            {
                "run_id": p.run_id,
                "where": p.where,
                "problem": p.kind,
                "detail": p.message,
                "expected": p.expected,
                "found": p.found,
            }
            for p in report.problems
        ]
        if rows:
            render_rows(rows, list(rows[0]), "table")
        status = "ok" if report.ok else f"FAILED: {len(report.problems)} problem(s)"
        click.echo(
            f"audit {status}: {report.runs} run(s), {report.events} event(s), {report.artifacts} artifact(s) checked"
        )
    if not report.ok:
        ctx.exit(1)


class _ExportCommand(click.Command):
    """A command with one ``--NAME FILE`` option per export format of the registry, read when it runs."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        options: list[click.Parameter] = [
            click.Option(
                [f"--{fmt.name}", _export_dest(fmt.name)], type=click.Path(dir_okay=False), help=fmt.description
            )
            for fmt in export_formats()
        ]
        return [*options, *super().get_params(ctx)]


def _export_dest(name: str) -> str:
    return "to_" + name.replace("-", "_")


@click.command(cls=_ExportCommand)
@click.pass_context
def export(ctx: click.Context, /, **paths: str | None) -> None:
    """Export the whole ledger in one or more formats (one option each)."""
    formats = export_formats()
    chosen = [(fmt.export, path) for fmt in formats if fmt.export and (path := paths.get(_export_dest(fmt.name)))]
    if not chosen:
        options = [f"--{fmt.name} FILE" for fmt in formats]
        raise ConfigError(f"nothing to export: give {', '.join(options[:-1])} and/or {options[-1]}")
    led = open_ledger(ctx)
    for write, path in chosen:
        click.echo(write(led, path))


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--into", type=click.Path(file_okay=False), help="Restore every stored artifact of the run into DIR, by key."
)
@click.option("--until", help="Replay only events at or before this ISO-8601 time.")
@click.option(
    "--warm-cache", is_flag=True, help="Fill the local cache from the remote tier with every entry the run wrote."
)
@click.option("--print", "print_timeline", is_flag=True, help="Print the run's timeline.")
@click.pass_context
def replay(
    ctx: click.Context, run_id: str, into: str | None, until: str | None, warm_cache: bool, print_timeline: bool
) -> None:
    """Replay RUN's events in order: restore its artifacts (verified), warm the cache, print its timeline."""
    from scalable.cache import Cache, WarmCache
    from scalable.ledger.replay import Handler, Timeline

    led = open_ledger(ctx)
    handlers: list[Handler] = [Timeline(sys.stdout)] if print_timeline or not (into or warm_cache) else []
    warmer = WarmCache(Cache.from_settings(led.settings)) if warm_cache else None
    if warmer is not None:
        handlers.append(warmer)
    result = led.replay(run_id, into=into, until=until, handlers=handlers)
    if into:
        click.echo(
            f"restored {len(result.restored)} artifact(s) of {run_id} into {into} ({result.events} events replayed)"
        )
    if warmer is not None:
        click.echo(
            f"warmed {len(warmer.warmed)} cache entr{'y' if len(warmer.warmed) == 1 else 'ies'} "
            f"({len(warmer.already)} already local, {len(warmer.missing)} not on the remote)"
        )


#: The commands of this module; ``scalable/cli/__init__.py`` adds them to the ``ledger`` group.
COMMANDS: tuple[click.Command, ...] = (runs, show, lineage, audit, export, replay)
