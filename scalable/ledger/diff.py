"""Comparing two runs: artifacts by location, tasks by name, and the verdict of lineage.

:func:`diff_runs` (``Ledger.diff``) reads both runs from the views and returns a
:class:`RunDiff`:

* **artifacts**: what each run left at each location, matched by location. A run's artifact
  at a location is its last ``put`` or ``recorded`` event there (a location whose last event
  in the run is ``deleted`` is not one of its artifacts). A location is matched by its *key*:
  the run's project folder (``recipe.root`` of its ``run/started``) replaced by
  ``{project}`` and the run's own id (a session stores its puts under ``runs/<run_id>/``) by
  ``{run}``, so ``runs/A/out.csv`` of run A and ``runs/B/out.csv`` of run B are one row, and
  so are ``out.csv`` of a project and of its copy elsewhere. Each row is ``added`` (only in
  run B), ``removed`` (only in run A), ``changed`` (other digests; sizes when neither has a
  digest) or ``same``.
* **tasks**: executions grouped by task name: ``added``, ``removed``, ``changed`` (another
  number of executions, or of failed or unfinished ones) or ``same``. Durations are reported,
  never compared: they always differ.

``RunDiff.differs`` is true when any artifact or task row is not ``same``; ``scalable ledger
diff`` then exits 1, as ``diff`` does.

With ``lineage=True`` (``scalable ledger diff --lineage``, and what ``scalable ledger rerun
--verify`` reports) the diff also holds a :class:`Verdict`. Every version each run read or
left (:func:`run_versions`: its outputs by location, its inputs (what it used or fetched
before making those bytes itself, and the file arguments of its cached calls) and its cached
values) is matched with the other run's by location key, a cached value by its cache key
(same function, same arguments), and what is still unmatched by its *lineage position*: the
task that made it, its name, and the rows its data came from (the run's data flow, walked by
:func:`scalable.ledger.lineage.trace`). Each row is ``identical``, ``changed`` (old and new
digests), ``missing`` (only in run A) or ``new`` (only in run B). A row that differs while none
of its ancestors does is a **first divergence**: the step that made it introduced the
difference. Every other row that differs *follows from* the first divergences among its
ancestors. The recipes of both runs (:mod:`scalable.recipe`: command, Python, distributions,
allowed environment variables, code, manifest lock) are compared beside, as what may explain a
difference; they do not decide the verdict. ``Verdict.differs`` (and then ``RunDiff.differs``)
is true when an artifact row is not ``identical`` or the tasks differ.
"""

from __future__ import annotations

import contextlib
import json
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import orjson

from scalable.errors import ConfigError, RunNotFoundError
from scalable.ledger.edges import FLOW_RELATIONS
from scalable.ledger.events import check_run_id
from scalable.ledger.lineage import trace
from scalable.ledger.views import connect
from scalable.uris import is_file_uri, path_to_uri, uri_to_path

if TYPE_CHECKING:
    from scalable.ledger.log import Ledger

__all__ = [
    "PROJECT_PLACEHOLDER",
    "ROW_COLUMNS",
    "RUN_PLACEHOLDER",
    "STATUSES",
    "VERDICT_COLUMNS",
    "VERDICT_STATUSES",
    "ArtifactChange",
    "RecipeChange",
    "RunDiff",
    "RunVersions",
    "TaskChange",
    "Verdict",
    "Version",
    "VersionChange",
    "diff_runs",
    "location_key",
    "run_versions",
]

#: What a run's own id becomes in the location key artifacts are matched by.
RUN_PLACEHOLDER: Final = "{run}"
#: What a run's project folder becomes in the location key.
PROJECT_PLACEHOLDER: Final = "{project}"
#: Every status of a row, in the order rows are listed.
STATUSES: Final = ("changed", "added", "removed", "same")

_ARTIFACTS: Final = """
SELECT run_id, location, artifact_name, size_bytes, digest, task_name FROM (
  SELECT *, row_number() OVER (PARTITION BY run_id, location ORDER BY timestamp DESC, event_id DESC) AS rn
    FROM artifacts
   WHERE run_id IN ($1, $2) AND location IS NOT NULL AND op IN ('put', 'recorded', 'deleted'))
 WHERE rn = 1 AND op <> 'deleted'
"""
_TASKS: Final = """
SELECT run_id, task_name, count(*) AS executions,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'running') AS unfinished,
       sum(duration_s) AS duration_s
  FROM tasks WHERE run_id IN ($1, $2) AND task_name IS NOT NULL
 GROUP BY run_id, task_name
"""


@dataclass(frozen=True, slots=True)
class ArtifactChange:
    """One location compared between run A and run B.

    Attributes:
        key: the location with the run's own id replaced by ``{run}`` (what rows are matched by).
        status: ``added``, ``removed``, ``changed`` or ``same``.
        name: the artifact's name (run B's, else run A's).
        location_a: the location in run A (``None`` when ``added``); ``location_b`` likewise.
        digest_a: the SHA-256 in run A; ``digest_b`` likewise.
        size_a: the size in bytes in run A; ``size_b`` likewise.
        task_a: the task that wrote it in run A; ``task_b`` likewise.
    """

    key: str
    status: str
    name: str | None
    location_a: str | None = None
    location_b: str | None = None
    digest_a: str | None = None
    digest_b: str | None = None
    size_a: int | None = None
    size_b: int | None = None
    task_a: str | None = None
    task_b: str | None = None


@dataclass(frozen=True, slots=True)
class TaskChange:
    """One task name compared between run A and run B.

    Attributes:
        task_name: the task.
        status: ``added``, ``removed``, ``changed`` or ``same``.
        executions_a: how many times it ran in run A (0 when ``added``); ``executions_b`` likewise.
        failed_a: how many of those failed; ``failed_b`` likewise.
        unfinished_a: how many neither finished nor failed; ``unfinished_b`` likewise.
        duration_a: seconds of its executions together in run A; ``duration_b`` likewise.
    """

    task_name: str
    status: str
    executions_a: int = 0
    executions_b: int = 0
    failed_a: int = 0
    failed_b: int = 0
    unfinished_a: int = 0
    unfinished_b: int = 0
    duration_a: float | None = None
    duration_b: float | None = None


@dataclass
class RunDiff:
    """What differs between run A and run B (see the module text for the rules).

    Attributes:
        run_a: the first run (the one compared from).
        run_b: the second run (the one compared to).
        artifacts: one row per location key, changed first, then added, removed and same.
        tasks: one row per task name, in the same order of statuses.
    """

    run_a: str
    run_b: str
    artifacts: list[ArtifactChange] = field(default_factory=list)
    tasks: list[TaskChange] = field(default_factory=list)
    lineage: Verdict | None = None

    @property
    def tasks_differ(self) -> bool:
        """True when a task is not the same in both runs."""
        return any(row.status != "same" for row in self.tasks)

    @property
    def differs(self) -> bool:
        """True when an artifact or a task is not the same in both runs (with the verdict: as it says)."""
        if self.lineage is not None:
            return self.lineage.differs
        return self.tasks_differ or any(row.status != "same" for row in self.artifacts)

    def counts(self) -> dict[str, dict[str, int]]:
        """Rows per status: ``{"artifacts": {"changed": n, ...}, "tasks": {...}}`` (every status present)."""
        out: dict[str, dict[str, int]] = {}
        for section, rows in (("artifacts", self.artifacts), ("tasks", self.tasks)):
            counts = dict.fromkeys(STATUSES, 0)
            for row in rows:
                counts[row.status] += 1
            out[section] = counts
        return out

    def to_dict(self) -> dict[str, Any]:
        """Return the comparison as plain data: runs, ``differs``, counts, artifacts and tasks."""
        return {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "differs": self.differs,
            "counts": self.counts(),
            "artifacts": [asdict(row) for row in self.artifacts],
            "tasks": [asdict(row) for row in self.tasks],
            **({"lineage": self.lineage.to_dict()} if self.lineage is not None else {}),
        }

    def rows(self) -> list[dict[str, Any]]:
        """Every artifact and task row as one flat mapping of :data:`ROW_COLUMNS` (``section`` says which).

        A task row's ``name`` is the task's name; the columns of the other section are ``None``.
        """
        out: list[dict[str, Any]] = []
        for artifact in self.artifacts:
            out.append(_row("artifact", asdict(artifact)))
        for task in self.tasks:
            fields = asdict(task)
            out.append(_row("task", {**fields, "name": fields.pop("task_name")}))
        return out


#: The columns of :meth:`RunDiff.rows`, in order.
ROW_COLUMNS: Final = (
    "section",
    "status",
    "name",
    "key",
    "location_a",
    "location_b",
    "digest_a",
    "digest_b",
    "size_a",
    "size_b",
    "task_a",
    "task_b",
    "executions_a",
    "executions_b",
    "failed_a",
    "failed_b",
    "unfinished_a",
    "unfinished_b",
    "duration_a",
    "duration_b",
)


def _row(section: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {column: section if column == "section" else fields.get(column) for column in ROW_COLUMNS}


class _Artifact(NamedTuple):
    location: str
    name: str | None
    size: int | None
    digest: str | None
    task: str | None

    def same_content(self, other: _Artifact) -> bool:
        # Digests decide; sizes only where neither side has one (a location recorded unhashed).
        if self.digest is not None or other.digest is not None:
            return self.digest == other.digest
        return self.size == other.size


class _Task(NamedTuple):
    executions: int
    failed: int
    unfinished: int
    duration: float | None

    @property
    def counts(self) -> tuple[int, int, int]:
        return self.executions, self.failed, self.unfinished


_NO_TASK: Final = _Task(0, 0, 0, None)


def _sides(run_id: str, run_a: str, run_b: str) -> list[str]:
    """Which sides a row of ``run_id`` belongs to (both when a run is compared with itself)."""
    return [side for side, run in (("a", run_a), ("b", run_b)) if run == run_id]


def _status(in_a: bool, in_b: bool, same: bool) -> str:
    if not in_a:
        return "added"
    if not in_b:
        return "removed"
    return "same" if same else "changed"


def _order(status: str, key: str) -> tuple[int, str]:
    return STATUSES.index(status), key


def location_key(location: str, run_id: str, root: str | None = None) -> str:
    """The key a run's artifact at ``location`` is matched by.

    The run's project folder ``root`` (where the location is under it) becomes ``{project}``,
    then the run's id ``{run}``.
    """
    if root:
        prefix = path_to_uri(root)
        if location == prefix or location.startswith(prefix + "/"):
            location = PROJECT_PLACEHOLDER + location[len(prefix) :]
    return location.replace(run_id, RUN_PLACEHOLDER)


def _roots(con: Any, run_ids: Sequence[str]) -> dict[str, str | None]:
    """The project folder each run recorded in ``run/started`` (``None`` where it recorded none)."""
    return {
        str(run_id): root
        for run_id, root in con.execute(
            "SELECT run_id, any_value(json_extract_string(attrs, '$.recipe.root')) FROM events "
            "WHERE event_type = 'run' AND op = 'started' AND run_id IN (SELECT unnest($1::VARCHAR[])) GROUP BY run_id",
            [list(run_ids)],
        ).fetchall()
    }


def diff_runs(ledger: Ledger, run_a: str, run_b: str, *, as_of: str | None = None, lineage: bool = False) -> RunDiff:
    """Compare run A with run B: artifacts by location, tasks by name (and, with ``lineage``, the verdict).

    Args:
        ledger: the ledger both runs are in.
        run_a: the run compared from.
        run_b: the run compared to.
        as_of: ISO-8601 time; both runs as they were then.
        lineage: add the :class:`Verdict` of every version by location, cache key and lineage
            position, with the first divergences (see the module text).

    Raises:
        RunNotFoundError: a run has no events.
        EventValidationError: a run id is not valid, or ``as_of`` is not an ISO-8601 time.
    """
    check_run_id(run_a)
    check_run_id(run_b)
    con = connect(ledger, as_of=as_of)
    try:
        known = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT run_id FROM events WHERE run_id IN ($1, $2)", [run_a, run_b]
            ).fetchall()
        }
        for run_id in (run_a, run_b):
            if run_id not in known:
                raise RunNotFoundError(f"run {run_id!r} is not in the ledger; list runs with: scalable ledger runs")
        artifacts = con.execute(_ARTIFACTS, [run_a, run_b]).fetchall()
        tasks = con.execute(_TASKS, [run_a, run_b]).fetchall()
        roots = _roots(con, [run_a, run_b])
        read = _read_versions(con, [run_a, run_b]) if lineage else {}
    finally:
        con.close()
    result = RunDiff(run_a, run_b)
    sides: dict[str, dict[str, _Artifact]] = {}
    for run_id, location, name, size, digest, task in artifacts:
        found = sides.setdefault(location_key(location, run_id, roots.get(run_id)), {})
        for side in _sides(run_id, run_a, run_b):
            found[side] = _Artifact(location, name, size, digest, task)
    for key, found in sides.items():
        a, b = found.get("a"), found.get("b")
        either = b or a
        assert either is not None
        result.artifacts.append(
            ArtifactChange(
                key=key,
                status=_status(a is not None, b is not None, a is not None and b is not None and a.same_content(b)),
                name=either.name,
                location_a=a.location if a else None,
                location_b=b.location if b else None,
                digest_a=a.digest if a else None,
                digest_b=b.digest if b else None,
                size_a=a.size if a else None,
                size_b=b.size if b else None,
                task_a=a.task if a else None,
                task_b=b.task if b else None,
            )
        )
    by_task: dict[str, dict[str, _Task]] = {}
    for run_id, task_name, executions, failed, unfinished, duration in tasks:
        for side in _sides(run_id, run_a, run_b):
            by_task.setdefault(task_name, {})[side] = _Task(int(executions), int(failed), int(unfinished), duration)
    for task_name, runs in by_task.items():
        ta, tb = runs.get("a", _NO_TASK), runs.get("b", _NO_TASK)
        result.tasks.append(
            TaskChange(
                task_name=task_name,
                status=_status("a" in runs, "b" in runs, ta.counts == tb.counts),
                executions_a=ta.executions,
                executions_b=tb.executions,
                failed_a=ta.failed,
                failed_b=tb.failed,
                unfinished_a=ta.unfinished,
                unfinished_b=tb.unfinished,
                duration_a=ta.duration,
                duration_b=tb.duration,
            )
        )
    result.artifacts.sort(key=lambda row: _order(row.status, row.key))
    result.tasks.sort(key=lambda row: _order(row.status, row.task_name))
    if lineage:
        result.lineage = _verdict(ledger, read[run_a], read[run_b], result.tasks_differ, as_of=as_of)
    return result


# --- the verdict -------------------------------------------------------------------------------

#: Statuses of a verdict's rows, in the order rows are listed.
VERDICT_STATUSES: Final = ("changed", "missing", "new", "identical")


@dataclass(frozen=True, slots=True)
class Version:
    """One version a run read or left, as the verdict matches it.

    Attributes:
        role: ``output`` (put or recorded), ``input`` (used or fetched before the run made those
            bytes, or a file argument of a cached call) or ``cache`` (a cached value written or hit).
        key: the location key (:func:`location_key`), or ``cache:<function>:<cache key>``; for a
            version recorded without a location, its name.
        name: the artifact's name (the location's last segment when none), or ``<function>()``.
        location: where it was (``None`` for a cached value).
        digest: its SHA-256 (``None`` when it was recorded without one).
        size: its size in bytes.
        task: the task that made or read it.
        kind: the artifact kind recorded (``file``, ``dir``, a label), ``cache`` for a value.
        timestamp: when the run made or first read it.
    """

    role: str
    key: str
    name: str | None
    location: str | None
    digest: str | None
    size: int | None
    task: str | None
    kind: str | None
    timestamp: str

    @property
    def node(self) -> str:
        """The lineage node of this version: its digest, else its location."""
        return self.digest or self.location or self.key


@dataclass
class RunVersions:
    """What one run read and left, keyed so that another run's versions match them.

    Attributes:
        run_id: the run.
        root: its project folder (``recipe.root``), ``None`` when it recorded none.
        started: the attributes of its ``run/started`` (``recipe`` among them).
        finished: the attributes of its ``run/finished`` (empty while it runs).
        outputs: location key -> the last version the run put or recorded there.
        inputs: location key -> the first version the run read there (used, fetched, or a
            file argument of a cached call) before making those bytes itself.
        cached: cache key -> the value a cached call of the run wrote (or, on a hit, found).
        unplaced: versions recorded without a location (matched by lineage position only).
    """

    run_id: str
    root: str | None = None
    started: dict[str, Any] = field(default_factory=dict)
    finished: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Version] = field(default_factory=dict)
    inputs: dict[str, Version] = field(default_factory=dict)
    cached: dict[str, Version] = field(default_factory=dict)
    unplaced: list[Version] = field(default_factory=list)

    def versions(self) -> dict[tuple[str, str], Version]:
        """Every version by ``(role, key)``; a version without a location by its position in the run."""
        found: dict[tuple[str, str], Version] = {}
        for role, table in (("output", self.outputs), ("input", self.inputs), ("cache", self.cached)):
            for key, version in table.items():
                found[(role, key)] = version
        for number, version in enumerate(self.unplaced):
            found[(version.role, f"\0{self.run_id}\0{number}")] = version  # never equal to another run's
        return found

    @property
    def recipe(self) -> dict[str, Any]:
        """The run's recipe (:mod:`scalable.recipe`), with what it imported after its start added."""
        recipe = dict(self.started.get("recipe") or {})
        added = self.finished.get("recipe_added") or {}
        if added:
            recipe["code"] = [*recipe.get("code", ()), *added.get("code", ())]
            recipe["distributions"] = {**recipe.get("distributions", {}), **added.get("distributions", {})}
            recipe["import_roots"] = sorted({*recipe.get("import_roots", ()), *added.get("import_roots", ())})
        return recipe


_RUN_EVENTS: Final = """
SELECT run_id, event_type, op, location, artifact_name, digest, size_bytes, kind, task_name,
       function_name, key_digest, inputs, attrs, timestamp
  FROM events
 WHERE run_id IN (SELECT unnest($1::VARCHAR[]))
   AND (event_type IN ('artifact', 'cache') OR (event_type = 'run' AND op IN ('started', 'finished')))
 ORDER BY timestamp, writer, seq
"""


def _last_segment(location: str) -> str:
    """The name a location shows: its last segment (of the path, for a ``file:`` URI)."""
    if is_file_uri(location):
        with contextlib.suppress(ConfigError):
            return uri_to_path(location).name or location
    return posixpath.basename(location.rstrip("/")) or location


def _read_versions(con: Any, run_ids: Sequence[str]) -> dict[str, RunVersions]:
    """The :class:`RunVersions` of each run, from one read of their events in order."""
    rows = con.execute(_RUN_EVENTS, [list(run_ids)]).fetchall()
    sides = {run_id: RunVersions(run_id) for run_id in run_ids}
    for row in rows:
        if row[1] == "run" and row[2] == "started" and not sides[row[0]].started:
            sides[row[0]].started = orjson.loads(row[12] or "{}")
            sides[row[0]].root = (sides[row[0]].started.get("recipe") or {}).get("root")
    made: dict[str, set[str]] = {run_id: set() for run_id in run_ids}
    for run_id, etype, op, location, name, digest, size, kind, task, function, key_digest, inputs, attrs, ts in rows:
        side = sides[run_id]
        if etype == "run":
            if op == "finished":
                side.finished = orjson.loads(attrs or "{}")
            continue
        if etype == "artifact":
            key = location_key(location, run_id, side.root) if location else None
            version = Version(
                "output" if op in ("put", "recorded") else "input",
                key or name or "?",
                name or (_last_segment(location) if location else None),
                location,
                digest,
                size,
                task,
                kind,
                ts,
            )
            if op in ("put", "recorded"):
                if digest:
                    made[run_id].add(digest)
                if key is None:
                    side.unplaced.append(version)
                else:
                    side.outputs[key] = version
            elif op == "deleted" and key is not None:
                side.outputs.pop(key, None)
            elif op in ("used", "get") and not (digest and digest in made[run_id]):
                if key is None:
                    side.unplaced.append(version)
                else:
                    side.inputs.setdefault(key, version)
            continue
        # A cached call: its value, and the files it was given (with their locations when recorded).
        parsed = orjson.loads(attrs or "{}")
        for arg_digest, arg_location in zip(inputs or (), parsed.get("input_locations") or (), strict=False):
            if arg_location and arg_digest not in made[run_id]:
                arg_key = location_key(arg_location, run_id, side.root)
                side.inputs.setdefault(
                    arg_key,
                    Version(
                        "input", arg_key, _last_segment(arg_location), arg_location, arg_digest, None, task, None, ts
                    ),
                )
        if op in ("write", "hit") and digest:
            key = f"cache:{function}:{key_digest}"
            version = Version("cache", key, f"{function}()", None, digest, size, task, "cache", ts)
            if op == "write":
                made[run_id].add(digest)
                side.cached[key] = version
            else:
                side.cached.setdefault(key, version)
    return sides


def run_versions(ledger: Ledger, run_id: str, *, as_of: str | None = None) -> RunVersions:
    """What run ``run_id`` read and left (its inputs are what a rerun restores).

    Raises:
        EventValidationError: ``run_id`` is not a valid run id.
        RunNotFoundError: the run has no events.
    """
    check_run_id(run_id)
    con = connect(ledger, as_of=as_of)
    try:
        if not con.execute("SELECT 1 FROM events WHERE run_id = $1 LIMIT 1", [run_id]).fetchall():
            raise RunNotFoundError(f"run {run_id!r} is not in the ledger; list runs with: scalable ledger runs")
        return _read_versions(con, [run_id])[run_id]
    finally:
        con.close()


@dataclass(frozen=True, slots=True)
class VersionChange:
    """One version compared between run A and run B.

    Attributes:
        key: what it was matched by (run A's key, else run B's): a location key, a cache key,
            or for a version without either, its name.
        role: ``output``, ``input`` or ``cache`` (see :class:`Version`).
        status: ``identical``, ``changed``, ``missing`` (only in run A) or ``new`` (only in run B).
        matched_by: ``location``, ``cache key`` or ``lineage`` (its task, name and parents);
            ``None`` when only one run has it.
        name: its name (run B's, else run A's).
        task_a: the task that made (or read) it in run A; ``task_b`` likewise.
        digest_a: its SHA-256 in run A; ``digest_b`` likewise.
        location_a: where it was in run A; ``location_b`` likewise.
        parents: the keys of the rows its data came from, in either run.
        first: it differs and none of its ancestors does: a first divergence.
        follows_from: for a row that differs and is not first, the first divergences among its
            ancestors.
    """

    key: str
    role: str
    status: str
    matched_by: str | None
    name: str | None
    task_a: str | None = None
    task_b: str | None = None
    digest_a: str | None = None
    digest_b: str | None = None
    location_a: str | None = None
    location_b: str | None = None
    parents: tuple[str, ...] = ()
    first: bool = False
    follows_from: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecipeChange:
    """One part of the two runs' recipes compared.

    Attributes:
        section: ``command``, ``python``, ``manifest``, ``code``, ``distribution`` or ``env``.
        name: what in it (``argv``, ``version``, a path, a distribution, a variable).
        status: ``identical``, ``changed``, ``missing`` or ``new``.
        value_a: its value in run A (a digest for code); ``value_b`` likewise.
    """

    section: str
    name: str
    status: str
    value_a: str | None
    value_b: str | None


@dataclass
class Verdict:
    """Whether run B reproduced run A, and where it first diverged (see the module text).

    Attributes:
        run_a: the run compared from (the original).
        run_b: the run compared to (the rerun).
        artifacts: one row per version, changed first, then missing, new and identical.
        recipe: the recipes compared, differences first.
        tasks_differ: the runs ran other tasks, or the same ones another number of times or
            with other failures (the rows are :attr:`RunDiff.tasks`).
    """

    run_a: str
    run_b: str
    artifacts: list[VersionChange] = field(default_factory=list)
    recipe: list[RecipeChange] = field(default_factory=list)
    tasks_differ: bool = False

    @property
    def differs(self) -> bool:
        """True when a version is not identical in both runs, or the tasks differ."""
        return self.tasks_differ or any(row.status != "identical" for row in self.artifacts)

    @property
    def first_divergences(self) -> list[VersionChange]:
        """The rows that differ while none of their ancestors does."""
        return [row for row in self.artifacts if row.first]

    def follows(self, key: str) -> list[VersionChange]:
        """The rows that differ because of the first divergence ``key``."""
        return [row for row in self.artifacts if key in row.follows_from]

    def counts(self) -> dict[str, int]:
        """Rows per status (every status present)."""
        counts = dict.fromkeys(VERDICT_STATUSES, 0)
        for row in self.artifacts:
            counts[row.status] += 1
        return counts

    def summary(self) -> dict[str, Any]:
        """The verdict in brief, as ``run/verified`` records it.

        ``of`` (run A), ``verdict`` (``identical`` or ``differs``), ``artifacts`` (rows per
        status), ``tasks_differ``, ``first_divergences`` (key, name, role, task, status and
        both digests of each), ``first_keys``, ``following`` (how many rows follow from them)
        and ``recipe_differs`` (``section:name`` of each recipe part that is not identical).
        """
        first = self.first_divergences
        return {
            "of": self.run_a,
            "verdict": "differs" if self.differs else "identical",
            "artifacts": self.counts(),
            "tasks_differ": self.tasks_differ,
            "first_divergences": [
                {
                    "key": row.key,
                    "name": row.name,
                    "role": row.role,
                    "task": row.task_b or row.task_a,
                    "status": row.status,
                    "digest_a": row.digest_a,
                    "digest_b": row.digest_b,
                }
                for row in first
            ],
            "first_keys": [row.key for row in first],
            "following": sum(1 for row in self.artifacts if row.follows_from),
            "recipe_differs": [f"{r.section}:{r.name}" for r in self.recipe if r.status != "identical"],
        }

    def to_dict(self) -> dict[str, Any]:
        """The verdict as plain data: the summary, every row and the recipes compared."""
        return {
            **self.summary(),
            "run_a": self.run_a,
            "run_b": self.run_b,
            "rows": [asdict(row) for row in self.artifacts],
            "recipe": [asdict(row) for row in self.recipe],
        }

    def rows(self) -> list[dict[str, Any]]:
        """Every version and recipe row as one flat mapping of :data:`VERDICT_COLUMNS` (``section`` says which).

        Each row names both runs; a recipe row's ``role`` is its section (``code``, ``env``...)
        and its ``key`` what in it, with ``value_a`` and ``value_b``.
        """
        runs = {"run_a": self.run_a, "run_b": self.run_b}
        out: list[dict[str, Any]] = []
        for row in self.artifacts:
            fields = {**asdict(row), **runs, "section": "version"}
            fields["parents"] = " ".join(row.parents)
            fields["follows_from"] = " ".join(row.follows_from)
            out.append({c: fields.get(c) for c in VERDICT_COLUMNS})
        for change in self.recipe:
            fields = {**asdict(change), **runs, "section": "recipe", "key": change.name, "role": change.section}
            out.append({c: fields.get(c) for c in VERDICT_COLUMNS})
        return out


#: The columns of :meth:`Verdict.rows`, in order.
VERDICT_COLUMNS: Final = (
    "section",
    "run_a",
    "run_b",
    "status",
    "key",
    "role",
    "name",
    "matched_by",
    "first",
    "follows_from",
    "task_a",
    "task_b",
    "digest_a",
    "digest_b",
    "location_a",
    "location_b",
    "parents",
    "value_a",
    "value_b",
)

_Ident = tuple[str, str]  # (role, key) of a version in its run


def _parents(
    side: RunVersions, versions: Mapping[_Ident, Version], edges: Iterable[Mapping[str, Any]]
) -> dict[_Ident, set[_Ident]]:
    """The data flow of one run between its versions: each version -> the versions it came from.

    An edge joins lineage nodes (digests); a node stands for each version of the run holding
    it, the end an edge generated for those the edge's task made (when it made any).
    """
    by_node: dict[str, list[_Ident]] = {}
    for ident, version in versions.items():
        by_node.setdefault(version.node, []).append(ident)
    parents: dict[_Ident, set[_Ident]] = {}
    for edge in edges:
        if edge["run_id"] != side.run_id or edge["relation"] not in FLOW_RELATIONS:
            continue
        made = [i for i in by_node.get(edge["dst"], ()) if i[0] != "input"]
        by_task = [i for i in made if versions[i].task == edge["task_name"]]
        for dst in by_task or made:
            for src in by_node.get(edge["src"], ()):
                if src != dst:
                    parents.setdefault(dst, set()).add(src)
    return parents


def _same_content(a: Version, b: Version) -> bool:
    if a.digest is not None or b.digest is not None:
        return a.digest == b.digest
    return a.size == b.size


def _match(
    va: Mapping[_Ident, Version],
    vb: Mapping[_Ident, Version],
    pa: Mapping[_Ident, set[_Ident]],
    pb: Mapping[_Ident, set[_Ident]],
) -> list[tuple[_Ident | None, _Ident | None, str | None]]:
    """Pair run A's versions with run B's: by key, then by lineage position while that pairs more."""
    pairs: list[tuple[_Ident | None, _Ident | None, str | None]] = []
    merged: dict[tuple[str, _Ident], _Ident] = {}  # (side, ident) -> the ident of its pair (run A's)
    for ident in sorted(va.keys() & vb.keys()):
        pairs.append((ident, ident, "cache key" if ident[0] == "cache" else "location"))
        merged[("a", ident)] = merged[("b", ident)] = ident
    rest_a = {i for i in va if i not in vb}
    rest_b = {i for i in vb if i not in va}

    def positions(
        side: str, rest: set[_Ident], versions: Mapping[_Ident, Version], parents: Mapping[_Ident, set[_Ident]]
    ) -> dict[tuple[Any, ...], _Ident]:
        groups: dict[tuple[Any, ...], list[_Ident]] = {}
        for ident in rest:
            v = versions[ident]
            came_from = frozenset(merged.get((side, p), (side, *p)) for p in parents.get(ident, ()))
            groups.setdefault((v.role, v.task, v.name, came_from), []).append(ident)
        placed: dict[tuple[Any, ...], _Ident] = {}
        for position, members in groups.items():
            for number, ident in enumerate(sorted(members, key=lambda i: (versions[i].timestamp, i))):
                placed[(*position, number)] = ident
        return placed

    while rest_a and rest_b:
        at_a = positions("a", rest_a, va, pa)
        at_b = positions("b", rest_b, vb, pb)
        common = sorted(at_a.keys() & at_b.keys(), key=repr)
        if not common:
            break
        for position in common:
            ia, ib = at_a[position], at_b[position]
            pairs.append((ia, ib, "lineage"))
            merged[("a", ia)] = merged[("b", ib)] = ia
            rest_a.discard(ia)
            rest_b.discard(ib)
    pairs += [(i, None, None) for i in sorted(rest_a)] + [(None, i, None) for i in sorted(rest_b)]
    return pairs


def _ancestors(start: _Ident, parents: Mapping[_Ident, set[_Ident]]) -> set[_Ident]:
    seen: set[_Ident] = set()
    pending = list(parents.get(start, ()))
    while pending:
        node = pending.pop()
        if node not in seen:
            seen.add(node)
            pending += parents.get(node, ())
    seen.discard(start)  # a version is its own ancestor only on a cycle; that says nothing here
    return seen


def _recipe_values(side: RunVersions) -> dict[tuple[str, str], str]:
    """The comparable parts of a run's recipe: ``(section, name) -> value``."""
    recipe = side.recipe
    values: dict[tuple[str, str], str] = {}
    if side.started.get("manifest_lock"):
        values[("manifest", "lock")] = str(side.started["manifest_lock"])
    if not recipe:
        return values
    root = str(recipe.get("root") or "")
    argv = [str(a) for a in recipe.get("argv") or ()][1:]
    if root:
        argv = [a.replace(root, PROJECT_PLACEHOLDER) for a in argv]
    values[("command", "argv")] = json.dumps(argv)
    values[("command", "cwd")] = str(recipe.get("cwd"))
    for name in ("python", "implementation", "platform"):
        if recipe.get(name) is not None:
            values[("python", "version" if name == "python" else name)] = str(recipe[name])
    for entry in recipe.get("code") or ():
        values[("code", str(entry.get("path")))] = str(entry.get("digest"))
    for name, version in (recipe.get("distributions") or {}).items():
        values[("distribution", str(name))] = str(version)
    for name, value in (recipe.get("env") or {}).items():
        values[("env", str(name))] = str(value)
    return values


def _compare_recipes(a: RunVersions, b: RunVersions) -> list[RecipeChange]:
    va, vb = _recipe_values(a), _recipe_values(b)
    rows = []
    for part in sorted(va.keys() | vb.keys()):
        in_a, in_b = part in va, part in vb
        status = "new" if not in_a else "missing" if not in_b else "identical" if va[part] == vb[part] else "changed"
        rows.append(RecipeChange(part[0], part[1], status, va.get(part), vb.get(part)))
    rows.sort(key=lambda r: (VERDICT_STATUSES.index(r.status), r.section, r.name))
    return rows


def _verdict(ledger: Ledger, a: RunVersions, b: RunVersions, tasks_differ: bool, *, as_of: str | None) -> Verdict:
    """Match the two runs' versions, give each row its status, and find the first divergences."""
    va, vb = a.versions(), b.versions()
    pa = _parents(a, va, trace(ledger, a.run_id, direction="up", depth=2, as_of=as_of).edges)
    pb = (
        _parents(b, vb, trace(ledger, b.run_id, direction="up", depth=2, as_of=as_of).edges)
        if b.run_id != a.run_id
        else pa
    )
    pairs = _match(va, vb, pa, pb)
    row_of: dict[tuple[str, _Ident], _Ident] = {}  # (side, ident) -> the row's (role, key)
    for ia, ib, _how in pairs:
        either = va[ia] if ia is not None else vb[ib] if ib is not None else None
        assert either is not None
        if ia is not None:
            row_of[("a", ia)] = (either.role, either.key)
        if ib is not None:
            row_of[("b", ib)] = (either.role, either.key)
    parents: dict[_Ident, set[_Ident]] = {}
    for side, side_parents in (("a", pa), ("b", pb)):
        for child, came_from in side_parents.items():
            if (side, child) in row_of:
                parents.setdefault(row_of[(side, child)], set()).update(
                    row_of[(side, p)] for p in came_from if (side, p) in row_of
                )
    rows: list[dict[str, Any]] = []
    for ia, ib, how in pairs:
        x, y = (va[ia] if ia is not None else None), (vb[ib] if ib is not None else None)
        either = x or y
        assert either is not None
        if x is None:
            status = "new"
        elif y is None:
            status = "missing"
        else:
            status = "identical" if _same_content(x, y) else "changed"
        rows.append(
            {
                "key": either.key,
                "role": either.role,
                "status": status,
                "matched_by": how,
                "name": (y or x or either).name,
                "task_a": x.task if x else None,
                "task_b": y.task if y else None,
                "digest_a": x.digest if x else None,
                "digest_b": y.digest if y else None,
                "location_a": x.location if x else None,
                "location_b": y.location if y else None,
            }
        )
    differing = {(row["role"], row["key"]) for row in rows if row["status"] != "identical"}
    upstream = {ident: _ancestors(ident, parents) & differing for ident in differing}
    first = {ident for ident, found in upstream.items() if not found}
    for ident, found in upstream.items():
        if found and not found & first:
            first.add(ident)  # on a cycle of differences, no row is upstream of the others
    changes = []
    for row in rows:
        ident = (row["role"], row["key"])
        is_first = ident in first
        follows = () if is_first or ident not in differing else tuple(sorted(k for _r, k in upstream[ident] & first))
        changes.append(
            VersionChange(
                **row,
                parents=tuple(sorted(k for _r, k in parents.get(ident, ()))),
                first=is_first,
                follows_from=follows,
            )
        )
    changes.sort(key=lambda c: (VERDICT_STATUSES.index(c.status), c.key, c.role))
    return Verdict(a.run_id, b.run_id, changes, _compare_recipes(a, b), tasks_differ)
