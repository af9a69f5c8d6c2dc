"""Comparing two runs: their artifacts by location and their tasks by name.

:func:`diff_runs` (``Ledger.diff``) reads both runs from the views and returns a
:class:`RunDiff`:

* **artifacts**: what each run left at each location, matched by location. A run's artifact
  at a location is its last ``put`` or ``recorded`` event there (a location whose last event
  in the run is ``deleted`` is not one of its artifacts). A location that holds the run's own
  id (a session stores its puts under ``runs/<run_id>/``) is matched with that id replaced by
  ``{run}``, so ``runs/A/out.csv`` of run A and ``runs/B/out.csv`` of run B are one row. Each
  row is ``added`` (only in run B), ``removed`` (only in run A), ``changed`` (other digests;
  sizes when neither has a digest) or ``same``.
* **tasks**: executions grouped by task name: ``added``, ``removed``, ``changed`` (another
  number of executions, or of failed or unfinished ones) or ``same``. Durations are reported,
  never compared: they always differ.

``RunDiff.differs`` is true when any artifact or task row is not ``same``; ``scalable ledger
diff`` then exits 1, as ``diff`` does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from scalable.errors import RunNotFoundError
from scalable.ledger.events import check_run_id
from scalable.ledger.views import connect

if TYPE_CHECKING:
    from scalable.ledger.log import Ledger

__all__ = [
    "ROW_COLUMNS",
    "RUN_PLACEHOLDER",
    "STATUSES",
    "ArtifactChange",
    "RunDiff",
    "TaskChange",
    "diff_runs",
    "location_key",
]

#: What a run's own id becomes in the location key artifacts are matched by.
RUN_PLACEHOLDER: Final = "{run}"
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

    @property
    def differs(self) -> bool:
        """True when an artifact or a task is not the same in both runs."""
        statuses = [row.status for row in self.artifacts] + [row.status for row in self.tasks]
        return any(status != "same" for status in statuses)

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


def location_key(location: str, run_id: str) -> str:
    """The key a run's artifact at ``location`` is matched by: its run id replaced by ``{run}``."""
    return location.replace(run_id, RUN_PLACEHOLDER)


def diff_runs(ledger: Ledger, run_a: str, run_b: str, *, as_of: str | None = None) -> RunDiff:
    """Compare run A with run B: artifacts by location, tasks by name.

    Args:
        ledger: the ledger both runs are in.
        run_a: the run compared from.
        run_b: the run compared to.
        as_of: ISO-8601 time; both runs as they were then.

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
    finally:
        con.close()
    result = RunDiff(run_a, run_b)
    sides: dict[str, dict[str, _Artifact]] = {}
    for run_id, location, name, size, digest, task in artifacts:
        found = sides.setdefault(location_key(location, run_id), {})
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
    return result
