"""``scalable ledger runs|show|diff|rerun|lineage|audit|export|replay``: runs and their provenance, what the ledger is for."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from scalable.cli.ledger import open_ledger
from scalable.cli.output import format_option, progress_for, progress_option, render_rows, render_table
from scalable.errors import ConfigError, RestoreError
from scalable.ledger.edges import RELATIONS
from scalable.ledger.export import export_formats, lineage_formats
from scalable.ledger.lineage import RUN_RELATIONS
from scalable.ledger.views import RUN_ARTIFACT_COLUMNS, RUN_TASK_COLUMNS, RUN_VERIFICATION_COLUMNS, describe_run

if TYPE_CHECKING:
    from scalable.ledger.diff import TaskChange, Verdict

__all__ = ["COMMANDS", "audit", "diff", "export", "lineage", "replay", "rerun", "runs", "show"]

_RUN_COLUMNS = ("run_id", "project", "status", "started_at", "finished_at", "tasks", "artifacts", "bytes", "events")


#: Formats of ``lineage`` that print the edges as rows (those the registry does not render).
_EDGE_FORMATS = ("table", "csv", "jsonl")
_EDGE_COLUMNS = ("depth", "src", "src_label", "relation", "dst", "dst_label", "run_id", "task_name", "timestamp")


class _LineageFormat(click.Choice[str]):
    """The lineage formats of the registry, read when the command runs (so added ones count), and the edge rows."""

    def __init__(self) -> None:
        super().__init__(())

    @property
    def choices(self) -> tuple[str, ...]:
        rendered = lineage_formats()
        return (*rendered, *(f for f in _EDGE_FORMATS if f not in rendered))

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


#: Sections of ``show`` in csv and jsonl (one row each), by the name of their part.
_SHOW_SECTIONS = {"run": "run", "tasks": "task", "artifacts": "artifact", "verifications": "verification"}


@click.command()
@click.argument("run_id", metavar="RUN")
@format_option()
@click.pass_context
def show(ctx: click.Context, run_id: str, fmt: str) -> None:
    """Show one run: its summary, tasks, artifacts and the verdicts of its reruns.

    table: a table per part (digests cut to 16 characters); verifications (the verdicts of
    ledger rerun --verify on this run as a rerun, or on its reruns) only when there are any.
    json: one object with "run", "tasks", "artifacts" and "verifications". csv and jsonl:
    one row per item with a "section" column (run, task, artifact or verification) first;
    csv has one header, the union of the sections' columns, with cells a section lacks left
    empty. Machine formats keep digests whole.
    """
    parts = describe_run(open_ledger(ctx), run_id)
    if fmt == "json":
        click.echo(json.dumps(parts, default=str, indent=2))
        return
    if fmt == "table":
        run = parts["run"]
        render_rows([run], list(run), fmt)
        for name, columns in (("tasks", RUN_TASK_COLUMNS), ("artifacts", RUN_ARTIFACT_COLUMNS)):
            click.echo(f"\n{name}:")
            render_rows(parts[name], columns, fmt)
        if parts["verifications"]:
            click.echo("\nverifications:")
            render_rows(parts["verifications"], RUN_VERIFICATION_COLUMNS, fmt)
        return
    rows = [
        {"section": section, **row}
        for name, section in _SHOW_SECTIONS.items()
        for row in ([parts[name]] if name == "run" else parts[name])
    ]
    union = [
        "section",
        *dict.fromkeys([*parts["run"], *RUN_TASK_COLUMNS, *RUN_ARTIFACT_COLUMNS, *RUN_VERIFICATION_COLUMNS]),
    ]
    render_rows(rows, union, fmt)


@click.command()
@click.argument("run_a", metavar="RUN_A")
@click.argument("run_b", metavar="RUN_B")
@click.option(
    "--lineage",
    is_flag=True,
    help="The verdict: every version by location, cache key and lineage position, and the first divergences.",
)
@format_option()
@click.option("--as-of", help="Compare the runs as they were at this ISO-8601 time.")
@click.pass_context
def diff(ctx: click.Context, run_a: str, run_b: str, lineage: bool, fmt: str, as_of: str | None) -> None:
    """Compare RUN_A with RUN_B: artifacts by location (added, removed, changed, same), tasks by name.

    A location under the run's project folder or its own id (runs/<run>/...) is matched with
    them taken out. With --lineage, the verdict instead: every version either run read or left
    (outputs, inputs, cached values), identical, changed, missing or new; the first
    divergences (versions that differ while nothing upstream of them does) with the task that
    made each, and what follows from them; the recipes (command, Python, distributions, code)
    compared beside. Exits 0 when both runs left the same artifacts and ran the same tasks, 1
    when they differ.
    """
    from scalable.ledger.diff import ROW_COLUMNS

    result = open_ledger(ctx).diff(run_a, run_b, as_of=as_of, lineage=lineage)
    if result.lineage is not None:
        _render_verdict(result.lineage, fmt)
    elif fmt != "table":
        render_rows(result.rows(), ROW_COLUMNS, fmt)
    else:
        artifacts = [
            {
                "status": a.status,
                "artifact": a.key,
                "digest_a": (a.digest_a or "")[:12],
                "digest_b": (a.digest_b or "")[:12],
                "size_a": a.size_a,
                "size_b": a.size_b,
            }
            for a in result.artifacts
        ]
        click.echo(f"artifacts of {run_a} (a) and {run_b} (b):")
        render_rows(artifacts, ["status", "artifact", "digest_a", "digest_b", "size_a", "size_b"], "table")
        _render_tasks(result.tasks)
        counts = result.counts()
        summary = "; ".join(
            f"{section}: " + ", ".join(f"{n} {status}" for status, n in by_status.items())
            for section, by_status in counts.items()
        )
        click.echo(f"\n{'the runs differ' if result.differs else 'the runs are the same'}: {summary}")
    if result.lineage is not None and fmt == "table":
        _render_tasks(result.tasks)
    if result.differs:
        ctx.exit(1)


def _render_tasks(tasks: Sequence[TaskChange]) -> None:
    rows = [
        {
            "status": t.status,
            "task": t.task_name,
            "runs_a": t.executions_a,
            "runs_b": t.executions_b,
            "failed_a": t.failed_a,
            "failed_b": t.failed_b,
        }
        for t in tasks
    ]
    click.echo("\ntasks:")
    render_rows(rows, ["status", "task", "runs_a", "runs_b", "failed_a", "failed_b"], "table")


def _render_verdict(verdict: Verdict, fmt: str) -> None:
    """Print a verdict: in a table, its summary, first divergences, versions and recipe differences; else its rows."""
    from scalable.ledger.diff import VERDICT_COLUMNS

    if fmt != "table":
        render_rows(verdict.rows(), VERDICT_COLUMNS, fmt)
        return
    counts = ", ".join(f"{n} {status}" for status, n in verdict.counts().items())
    said = "differs from" if verdict.differs else "reproduces"
    click.echo(f"verdict: {verdict.run_b} {said} {verdict.run_a}: {counts}")
    first = verdict.first_divergences
    if first:
        click.echo("\nfirst divergences (each differs while nothing it came from does):")
        for row in first:
            task = row.task_b or row.task_a
            digests = f"{(row.digest_a or '-')[:12]} -> {(row.digest_b or '-')[:12]}"
            click.echo(f"  {row.status} {row.role} {row.key}" + (f" (task {task})" if task else "") + f": {digests}")
            for later in verdict.follows(row.key):
                click.echo(f"    follows from it: {later.status} {later.role} {later.key}")
    rows = [
        {
            "status": row.status,
            "role": row.role,
            "key": row.key,
            "task": row.task_b or row.task_a,
            "digest_a": (row.digest_a or "")[:12],
            "digest_b": (row.digest_b or "")[:12],
            "first": "yes" if row.first else "",
            "follows_from": " ".join(row.follows_from),
        }
        for row in verdict.artifacts
    ]
    click.echo("\nversions:")
    render_rows(rows, ["status", "role", "key", "task", "digest_a", "digest_b", "first", "follows_from"], "table")
    changed = [
        {"status": r.status, "part": f"{r.section}:{r.name}", "value_a": r.value_a, "value_b": r.value_b}
        for r in verdict.recipe
        if r.status != "identical"
    ]
    if changed:
        click.echo("\nrecipes differ (what may explain a difference):")
        render_rows(changed, ["status", "part", "value_a", "value_b"], "table")


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--into",
    type=click.Path(file_okay=False),
    help="Run in this new or empty directory (default: a new one under .scalable/reruns/).",
)
@click.option("--verify", is_flag=True, help="Compare the new run with RUN: exit 0 identical, 1 when it differs.")
@click.option(
    "--cache/--no-cache",
    "cache",
    default=None,
    help="Let @cacheable steps use RUN's cache (default: yes, but no with --verify, so no stored value hides a difference).",
)
@click.option("--target", help="Run on this target of the manifest instead of the one RUN used.")
@format_option()
@click.pass_context
def rerun(
    ctx: click.Context, run_id: str, into: str | None, verify: bool, cache: bool | None, target: str | None, fmt: str
) -> None:
    """Run RUN again: restore its code and inputs by digest into a working copy, run its command there.

    The new run is written to this ledger with rerun_of RUN in its run/started; its id is
    printed (in a table, "rerun of RUN: NEW in DIR"; else one row: run_id, rerun_of, into,
    cache). With --verify, then the verdict of diff --lineage RUN NEW, recorded as the new
    run's run/verified event. Exits 2, with the reason, when something RUN read cannot be
    restored (naming each and where it was) or the command fails.
    """
    from scalable.rerun import rerun as run_again

    result = run_again(open_ledger(ctx), run_id, into=into, verify=verify, cache=cache, target=target)
    if fmt == "table":
        cached = "the run's cache" if result.cache else "no cache"
        click.echo(f"rerun of {run_id}: {result.new_run_id} in {result.into} (with {cached})")
        if result.verdict is not None:
            click.echo()
            _render_verdict(result.verdict, fmt)
    elif result.verdict is not None:
        _render_verdict(result.verdict, fmt)
    else:
        row = {"run_id": result.new_run_id, "rerun_of": run_id, "into": str(result.into), "cache": result.cache}
        render_rows([row], list(row), fmt)
    if result.verdict is not None and result.verdict.differs:
        ctx.exit(1)


@click.command()
@click.argument("node")
@click.option("--up", "direction", flag_value="up", default=True, help="What NODE came from (default).")
@click.option("--down", "direction", flag_value="down", help="What came of NODE.")
@click.option("--both", "direction", flag_value="both", help="Both directions.")
@click.option("--depth", type=click.IntRange(min=1), help="At most this many edges from NODE.")
@click.option("--as-of", help="The lineage as it was at this ISO-8601 time (and NODE's version then).")
@click.option(
    "--relation",
    "relations",
    multiple=True,
    type=click.Choice(RELATIONS + RUN_RELATIONS),
    help="Only this relation (repeat for several): derived_from and derived_in_task are walked; "
    "generated/used are a run's first step; informed/reused link runs with --runs-only.",
)
@click.option("--runs-only", is_flag=True, help="The run-level graph: which runs' data fed which.")
@click.option(
    "--max-nodes", type=click.IntRange(min=1), help="Show at most N nodes, the nearest first; count the rest."
)
@click.option("--format", "fmt", type=_LineageFormat(), default="tree", show_default=True, help="Output format.")
@click.pass_context
def lineage(
    ctx: click.Context,
    node: str,
    direction: str,
    depth: int | None,
    as_of: str | None,
    relations: tuple[str, ...],
    runs_only: bool,
    max_nodes: int | None,
    fmt: str,
) -> None:
    """Trace NODE's data flow: what it came from (--up) or what came of it (--down).

    NODE is a digest, a unique digest prefix (8+ hex characters), a location URI or local
    path (the version recorded there), an artifact name or a run id. Each artifact is shown
    with the runs that generated it; runs are context, never a path between artifacts.

    tree, dot, mermaid, json, prov, openlineage and the other registered formats render the
    graph; table, csv and jsonl print its edges, one row each: the walked edges with their
    depth, then the context edges (depth empty), with readable labels, run, task and time.
    """
    graph = open_ledger(ctx).lineage(
        node,
        direction=direction,
        depth=depth,
        as_of=as_of,
        relations=relations or None,
        runs_only=runs_only,
        max_nodes=max_nodes,
    )
    if fmt in lineage_formats():
        click.echo(graph.render(fmt), nl=False)
        return
    rows = [
        {
            **{c: edge.get(c) for c in _EDGE_COLUMNS},
            "src_label": graph.label(edge["src"]),
            "dst_label": graph.label(edge["dst"]),
        }
        for edge in [*graph.edges, *graph.context]
    ]
    render_rows(rows, _EDGE_COLUMNS, fmt)


_PROBLEM_COLUMNS = ("run_id", "where", "kind", "message", "expected", "found")
_AUDIT_PHASES = {
    "streams": "auditing streams (bytes)",
    "compacted": "auditing compacted runs",
    "artifacts": "hashing artifacts",
}


@click.command()
@click.argument("run_id", metavar="[RUN]", required=False)
@click.option("--no-content", is_flag=True, help="Check the streams only; do not re-hash stored bytes.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    metavar="N",
    help="List at most N problems (the summary still counts every one).",
)
@format_option()
@progress_option("the checks")
@click.pass_context
def audit(
    ctx: click.Context, run_id: str | None, no_content: bool, limit: int | None, fmt: str, show_progress: bool | None
) -> None:
    """Check that chains are intact, seals match and stored bytes still match their digests.

    Lists each problem (run, where, kind, message, expected, found), then a summary with the
    count of each kind. table: the problems and the summary on stdout; csv and jsonl: one
    row a problem on stdout, the summary on stderr; json: one object with the counts,
    by_kind, problems_total and the problems. Exits 0 when everything holds, 1 when a
    problem was found.
    """
    led = open_ledger(ctx)
    progress = progress_for(show_progress, _AUDIT_PHASES)
    try:
        report = led.audit(run_id, content=not no_content, progress=progress)
    finally:
        if progress is not None:
            progress.close()
    shown = report.problems if limit is None else report.problems[:limit]
    if fmt == "json":
        doc = report.to_dict()
        doc["problems"] = doc["problems"][: len(shown)]
        doc["problems_total"] = len(report.problems)
        click.echo(json.dumps(doc, indent=2))
    else:
        rows = [{c: getattr(p, c) for c in _PROBLEM_COLUMNS} for p in shown]
        hidden = len(report.problems) - len(shown)
        if fmt != "table" or rows:
            render_rows(rows, _PROBLEM_COLUMNS, fmt)
        note = f"{hidden} more problem(s) not listed (--limit {limit})" if hidden else None
        for line in (note, report.summary()):
            if line:
                click.echo(line, err=fmt != "table")
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
@format_option()
@progress_option("each export")
@click.pass_context
def export(ctx: click.Context, /, fmt: str, show_progress: bool | None, **paths: str | None) -> None:
    """Export the whole ledger in one or more formats (one option each).

    Prints one row per file written: format, path, bytes and a summary of what it holds.
    """
    formats = export_formats()
    chosen = [
        (fmt_.name, fmt_.export, path)
        for fmt_ in formats
        if fmt_.export and (path := paths.get(_export_dest(fmt_.name)))
    ]
    if not chosen:
        options = [f"--{f.name} FILE" for f in formats]
        raise ConfigError(f"nothing to export: give {', '.join(options[:-1])} and/or {options[-1]}")
    led = open_ledger(ctx)
    progress = progress_for(show_progress)
    rows = []
    try:
        for name, write, path in chosen:
            report = (lambda done, total, phase=f"export {name}": progress(phase, done, total)) if progress else None
            summary = write(led, path, report)
            rows.append({"format": name, "path": path, "bytes": Path(path).stat().st_size, "summary": summary})
    finally:
        if progress is not None:
            progress.close()
    render_rows(rows, ("format", "path", "bytes", "summary"), fmt)


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option(
    "--into",
    type=click.Path(file_okay=False),
    help="Restore every stored artifact of the run into DIR, by key; exit 1 if any could not be restored.",
)
@click.option("--until", help="Replay only events at or before this ISO-8601 time.")
@click.option(
    "--warm-cache", is_flag=True, help="Fill the local cache from the remote tier with every entry the run wrote."
)
@click.option(
    "--print",
    "print_timeline",
    is_flag=True,
    help="Print the run's timeline (the default without --into or --warm-cache).",
)
@format_option()
@click.pass_context
def replay(
    ctx: click.Context,
    run_id: str,
    into: str | None,
    until: str | None,
    warm_cache: bool,
    print_timeline: bool,
    fmt: str,
) -> None:
    """Replay RUN's events in order: restore its artifacts (verified), warm the cache, print its timeline.

    Prints the timeline (one row per event: timestamp, task, event, what), or with --into or
    --warm-cache one summary row (events, restored, not_restored, into, warmed,
    already_local, missing_remote); with both, the timeline on stdout and the summary on
    stderr. An artifact that is missing or no longer matches its digest is not restored: each
    one is named on stderr ("not restored: KEY (LOCATION): why"), every other one is
    restored, and the command exits 1.
    """
    from scalable.cache import Cache, WarmCache
    from scalable.ledger.replay import Handler, ReplayResult, Timeline

    led = open_ledger(ctx)
    timeline = Timeline() if print_timeline or not (into or warm_cache) else None
    handlers: list[Handler] = [timeline] if timeline is not None else []
    warmer = WarmCache(Cache.from_settings(led.settings)) if warm_cache else None
    if warmer is not None:
        handlers.append(warmer)
    try:
        result = led.replay(run_id, into=into, until=until, handlers=handlers)
    except RestoreError as exc:  # every other artifact was restored: report, then exit 1
        if not isinstance(exc.result, ReplayResult):
            raise
        result = exc.result
    if timeline is not None:
        render_rows(timeline.rows, Timeline.COLUMNS, fmt)
    if into or warmer is not None:
        summary: dict[str, Any] = {"run_id": run_id, "events": result.events}
        if into:
            summary.update(restored=len(result.restored), not_restored=len(result.failed), into=into)
        if warmer is not None:
            summary.update(
                warmed=len(warmer.warmed), already_local=len(warmer.already), missing_remote=len(warmer.missing)
            )
        if timeline is None:
            render_rows([summary], list(summary), fmt)
        else:
            click.echo("; ".join(f"{k} {v}" for k, v in summary.items()), err=True)
    for failure in result.failed:
        click.echo(f"not restored: {failure.key} ({failure.location}): {failure.reason}", err=True)
    if result.failed:
        ctx.exit(RestoreError.exit_code)


#: The commands of this module; ``scalable/cli/__init__.py`` adds them to the ``ledger`` group.
COMMANDS: tuple[click.Command, ...] = (runs, show, diff, rerun, lineage, audit, export, replay)
