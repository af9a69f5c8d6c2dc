"""Generations: which compacted files are live, one numbered generation per compaction.

A generation names every live Parquet data file of the dataset and, for each source of
events, how many of its bytes those files cover (``offset``), whether its run has finished
and whether the source was retired; and the retention cutoff (``retired_before``) and the
lineage files computed from exactly those data files. The views and the next compaction read
only the files the newest generation names, so a file left behind by a killed compaction is
invisible.

On disk a generation is the JSON document ``_manifest/<version, 20 digits>.json`` (format
``scalable-ledger-manifest``, version 1) under the compacted data of its
:class:`~scalable.ledger.location.Location`. Committing one is the single atomic step of a
compaction: the document is created only if its name is free.

Snapshots, as table formats keep them: a reader holds the generation it read for as long as
it reads, so the files a newer generation no longer names stay for a retention period
(``SCALABLE_SNAPSHOT_RETENTION``) after that newer generation was committed, and only then
are collected (:func:`collect_superseded`). Each compaction attempt first records an intent
(``_attempts/<id>.json``) and publishes its files under names that carry its id, so the files
of an attempt that never committed (killed, or beaten by another machine) are accounted for
and collected too. A file that no generation and no intent names is never deleted, nor is a
file any of whose events no file of the newest generation has (:func:`files_holding_other_events`).

The record is what makes the compacted files readable, so a ledger whose compacted files
outlive their record is an error (:func:`read_generation`), never an empty ledger; ``scalable
ledger recover`` rebuilds the record from the files (:mod:`scalable.ledger.recover`), listing
the files it does not take as ``replaced``.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

import orjson

from scalable.errors import CompactionConflictError, LedgerError
from scalable.ledger.crash import crash_point
from scalable.ledger.events import now
from scalable.ledger.sql import connect as sql_connect
from scalable.ledger.sql import file_list, jsonl_select, quote
from scalable.logs import get_logger

if TYPE_CHECKING:
    from collections.abc import Sequence

    import duckdb

    from scalable.ledger.location import Location

__all__ = [
    "ATTEMPTS_DIR",
    "EVENTS_DIR",
    "GENERATIONS_DIR",
    "Attempt",
    "Collected",
    "DataFile",
    "Generation",
    "LineageFiles",
    "Snapshots",
    "StreamState",
    "attempt_of",
    "begin_attempt",
    "collect_superseded",
    "commit_generation",
    "files_holding_other_events",
    "generation_names",
    "publish_staged",
    "read_generation",
    "snapshots",
]

#: Directory of the compacted event files, relative to the compacted data.
EVENTS_DIR: Final = "events"
#: Directory of the generation documents, relative to the compacted data.
GENERATIONS_DIR: Final = "_manifest"
#: Directory of the intents of compaction attempts, relative to the compacted data.
ATTEMPTS_DIR: Final = "_attempts"
#: Directories whose files generations and attempts name.
_DATA_DIRS: Final = (EVENTS_DIR, "lineage")
_FORMAT: Final = "scalable-ledger-manifest"
_log = get_logger("scalable.ledger")
#: The attempt id in the name of a file an attempt published (see :meth:`Attempt.name`).
_ATTEMPT_OF: Final = re.compile(r"-([0-9a-f]{16})-[0-9a-f]{8}\.parquet$")
#: The name of a compacted file written before attempts named files: ``part-<32 hex>.parquet``.
_WRITTEN_BEFORE_ATTEMPTS: Final = re.compile(r"-[0-9a-f]{32}\.parquet$")


@dataclass(frozen=True, slots=True)
class DataFile:
    """One live Parquet file: path relative to the compacted data, rows, bytes, date."""

    path: str
    rows: int
    bytes: int
    date: str


@dataclass(frozen=True, slots=True)
class LineageFiles:
    """The lineage files of a generation, relative to the compacted data: edge count, data files covered."""

    by_dst: str
    by_src: str
    nodes: str
    edges: int
    covers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamState:
    """How much of a source of events is compacted: covered byte offset, finished, retired."""

    offset: int
    finished: bool = False
    retired: bool = False


@dataclass(frozen=True)
class Generation:
    """One compaction generation: the live data files and the coverage of every source."""

    version: int = 0
    files: tuple[DataFile, ...] = ()
    streams: dict[str, StreamState] = field(default_factory=dict)
    retired_before: str | None = None
    created: str | None = None
    lineage: LineageFiles | None = None
    #: Files no generation names that this one accounts for (a recovery did not take them):
    #: collected like superseded files, once no event of theirs is missing from the live ones.
    replaced: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        """Encode the generation as the JSON document stored under ``_manifest/``."""
        doc = {
            "format": _FORMAT,
            "format_version": 1,
            "version": self.version,
            "created": self.created,
            "retired_before": self.retired_before,
            "files": [{"path": f.path, "rows": f.rows, "bytes": f.bytes, "date": f.date} for f in self.files],
            "lineage": None
            if self.lineage is None
            else {
                "by_dst": self.lineage.by_dst,
                "by_src": self.lineage.by_src,
                "nodes": self.lineage.nodes,
                "edges": self.lineage.edges,
                "covers": list(self.lineage.covers),
            },
            "streams": {
                key: {"offset": s.offset, "finished": s.finished, "retired": s.retired}
                for key, s in sorted(self.streams.items())
            },
            "replaced": list(self.replaced),
        }
        return json.dumps(doc, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes, name: str) -> Generation:
        """Decode a generation document.

        Raises:
            LedgerError: the document is not a generation of the ledger.
        """
        try:
            doc = orjson.loads(data)
            lin = doc.get("lineage")
            return cls(
                version=int(doc["version"]),
                created=doc.get("created"),
                retired_before=doc.get("retired_before"),
                files=tuple(DataFile(f["path"], int(f["rows"]), int(f["bytes"]), f["date"]) for f in doc["files"]),
                streams={
                    key: StreamState(int(s["offset"]), bool(s.get("finished")), bool(s.get("retired")))
                    for key, s in doc["streams"].items()
                },
                lineage=None
                if not lin
                else LineageFiles(
                    lin["by_dst"], lin["by_src"], lin["nodes"], int(lin["edges"]), tuple(lin.get("covers", ()))
                ),
                replaced=tuple(str(p) for p in doc.get("replaced", ())),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LedgerError(
                f"ledger manifest {name!r} is not valid ({exc}); rebuild the record from the compacted files with: "
                "scalable ledger recover"
            ) from None

    @property
    def rows(self) -> int:
        """Number of events in the live data files."""
        return sum(f.rows for f in self.files)

    def named_files(self) -> set[str]:
        """Every file this generation names: its data files and its lineage files."""
        named = {f.path for f in self.files}
        if self.lineage is not None:
            named |= {self.lineage.by_dst, self.lineage.by_src, self.lineage.nodes}
        return named


@dataclass(frozen=True)
class Attempt:
    """One compaction attempt: its id (part of the name of every file it publishes) and those files."""

    id: str
    published: list[str] = field(default_factory=list)

    @property
    def intent(self) -> str:
        """Where the attempt's intent document is, relative to the compacted data."""
        return f"{ATTEMPTS_DIR}/{self.id}.json"

    def name(self, prefix: str) -> str:
        """A new file name of this attempt: ``<prefix>-<attempt id>-<unique suffix>.parquet``."""
        return f"{prefix}-{self.id}-{uuid.uuid4().hex[:8]}.parquet"

    def publish(self, location: Location, staged: Path, rel: str) -> int:
        """Publish the local file ``staged`` as ``rel`` (a name of this attempt); return its size."""
        self.published.append(rel)
        return location.publish(staged, rel)

    def abandon(self, location: Location) -> None:
        """Delete every file the attempt published, then its intent (it lost, or failed)."""
        for rel in self.published:
            location.delete(rel)
        self.published.clear()
        location.delete(self.intent)

    def still_intended(self, location: Location) -> bool:
        """Whether the intent is still there (a collector removes it once it has expired)."""
        return self.intent in {f"{ATTEMPTS_DIR}/{n}" for n in location.list_names(ATTEMPTS_DIR)}


def begin_attempt(location: Location) -> Attempt:
    """Record the intent of a new compaction attempt (before it publishes anything)."""
    attempt = Attempt(uuid.uuid4().hex[:16])
    location.create(attempt.intent, json.dumps({"attempt": attempt.id, "created": now()}).encode() + b"\n")
    return attempt


@dataclass(frozen=True, slots=True)
class Collected:
    """What :func:`collect_superseded` deleted: files, generation documents, dead attempts."""

    files: int = 0
    generations: int = 0
    attempts: int = 0


def _document(version: int) -> str:
    return f"{GENERATIONS_DIR}/{version:020d}.json"


def generation_names(location: Location) -> list[str]:
    """Names of the generation documents, oldest first."""
    return sorted(n for n in location.list_names(GENERATIONS_DIR) if n.endswith(".json") and n[:-5].isdigit())


def attempt_of(rel: str) -> str | None:
    """The id of the attempt that published the file ``rel`` (``None`` for other names)."""
    found = _ATTEMPT_OF.search(rel)
    return found.group(1) if found else None


def _read(location: Location, name: str) -> Generation:
    rel = f"{GENERATIONS_DIR}/{name}"
    return Generation.from_json(location.read_bytes(rel), location.display(rel))


def read_generation(location: Location) -> Generation:
    """Return the newest committed generation at ``location`` (an empty one if none).

    Raises:
        LedgerError: the newest generation document is not valid, or there is none although
            compacted files are there that no running or dead attempt accounts for (the
            record was lost: nothing can read those files, and nothing may delete them); run
            ``scalable ledger recover``.
    """
    names = generation_names(location)
    if names:
        return _read(location, names[-1])
    # Files the ledger wrote (named by an attempt, or by the names before attempts) whose
    # attempt is not running or dead can only have been named by a generation.
    intents = {n[:-5] for n in location.list_names(ATTEMPTS_DIR) if n.endswith(".json")}
    orphans = [rel for rel in location.list_files(EVENTS_DIR) if _written_by_a_commit(rel, intents)]
    if orphans and not location.compacting():
        raise LedgerError(
            f"ledger directory {location.display('')!r} holds {len(orphans)} compacted file(s) under "
            f"{EVENTS_DIR}/ but no generation record under {GENERATIONS_DIR}/ (deleted?): nothing can tell "
            "which events they hold, so nothing reads or deletes them. Rebuild the record from the files "
            "with: scalable ledger recover"
        )
    return Generation()


def _written_by_a_commit(rel: str, intents: set[str]) -> bool:
    """Whether ``rel`` is a file a compaction wrote and committed (its attempt's intent is gone)."""
    attempt = attempt_of(rel)
    if attempt is not None:
        return attempt not in intents
    return bool(_WRITTEN_BEFORE_ATTEMPTS.search(rel))


def _epoch(stamp: str | None) -> float:
    """Seconds since the epoch of an ISO-8601 time (0 when unknown: as old as can be)."""
    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except ValueError:
        return 0.0


@dataclass(frozen=True)
class Snapshots:
    """The generations a reader may still hold, and those no reader can hold any more.

    Attributes:
        readable: the newest generation first, then every older one whose successor was
            committed less than the retention period ago.
        expired: ``(document name, generation)`` of every older one, oldest first.
    """

    readable: tuple[Generation, ...] = ()
    expired: tuple[tuple[str, Generation], ...] = ()

    def named_files(self) -> set[str]:
        """Every file a readable generation names."""
        return {rel for generation in self.readable for rel in generation.named_files()}


def snapshots(location: Location, *, retention_s: float, now_s: float | None = None) -> Snapshots:
    """Which generations a reader may still hold: the one rule of the retention period.

    A reader holds the generation that was newest when it started, so a generation stays
    readable until its successor is ``retention_s`` old (``SCALABLE_SNAPSHOT_RETENTION``);
    the newest always is. Whatever only expired generations need (their files, a stream they
    did not cover) may go; nothing a readable one needs may.

    Raises:
        LedgerError: a generation document is not valid.
    """
    cutoff = (time.time() if now_s is None else now_s) - retention_s
    names = generation_names(location)
    if not names:
        return Snapshots()
    newest = _read(location, names[-1])
    readable = [newest]
    expired: list[tuple[str, Generation]] = []
    # Newest first: once one generation has expired, so has every one before it.
    for index in range(len(names) - 2, -1, -1):
        generation = _read(location, names[index])
        if _epoch(readable[-1].created) <= cutoff:
            expired = [(name, _read(location, name)) for name in names[:index]] + [(names[index], generation)]
            break
        readable.append(generation)
    return Snapshots(tuple(readable), tuple(expired))


def collect_superseded(
    location: Location, *, retention_s: float, current: Attempt | None = None, now_s: float | None = None
) -> Collected:
    """Delete what no reader can still need: the one place files of the compacted data are collected.

    * The files of a generation that a newer one no longer names stay while that generation
      is readable (:func:`snapshots`); then they go, and its document with them. The newest
      generation and everything it names always stay.
    * An attempt that never committed (its intent is there, no generation names its files)
      is dead once its intent is ``retention_s`` old, or at once where the compaction holds
      the location's lock (:attr:`Location.exclusive`: no other attempt can be running).
      Its files no generation names go, then its intent.
    * Anything else (a file no generation and no intent names) is never deleted.

    Args:
        location: where the compacted data is.
        retention_s: ``SCALABLE_SNAPSHOT_RETENTION`` in seconds.
        current: the attempt of the running compaction (never collected).
        now_s: the time to measure ages against (now when omitted).

    Raises:
        LedgerError: a generation document is not valid.
    """
    now_s = time.time() if now_s is None else now_s
    cutoff = now_s - retention_s
    found = snapshots(location, retention_s=retention_s, now_s=now_s)
    if not found.readable:
        return Collected()
    newest = found.readable[0]
    keep = found.named_files()
    expired = found.expired
    superseded = {rel for _name, generation in expired for rel in generation.named_files()} - keep
    every = [*found.readable, *(generation for _name, generation in expired)]
    superseded |= {rel for generation in every for rel in generation.replaced} - keep
    events = sorted(rel for rel in superseded if rel.startswith(f"{EVENTS_DIR}/"))
    if events:
        with contextlib.closing(sql_connect(filesystem=location.filesystem)) as con:
            on_disk = set(location.list_files(EVENTS_DIR))
            held = files_holding_other_events(con, location, [r for r in events if r in on_disk], newest)
        for rel in sorted(held):
            _log.warning("ledger.file_kept", file=location.display(rel), reason="holds events no live file has")
        superseded -= held
    for rel in sorted(superseded):
        location.delete(rel)
    files = len(superseded)
    for name, _generation in expired:
        location.delete(f"{GENERATIONS_DIR}/{name}")  # after the files: a crash in between repeats this
    generations = len(expired)
    attempts = 0
    dead: list[str] = []
    for name in location.list_names(ATTEMPTS_DIR):
        if not name.endswith(".json") or (current is not None and name == f"{current.id}.json"):
            continue
        rel = f"{ATTEMPTS_DIR}/{name}"
        if not location.exclusive:
            try:
                created = orjson.loads(location.read_bytes(rel)).get("created")
            except (FileNotFoundError, ValueError, AttributeError):
                created = None  # unreadable: judged by the age of the newest generation instead
            if _epoch(created or newest.created) > cutoff:
                continue
        dead.append(name[:-5])
    if dead:
        named = keep | {rel for _name, generation in expired for rel in generation.named_files()}
        present = [rel for d in _DATA_DIRS for rel in location.list_files(d)]
        for attempt_id in dead:
            tag = f"-{attempt_id}-"
            for rel in present:
                if tag in rel.rsplit("/", 1)[-1] and rel not in named:
                    location.delete(rel)
                    files += 1
            location.delete(f"{ATTEMPTS_DIR}/{attempt_id}.json")
            attempts += 1
    return Collected(files, generations, attempts)


def files_holding_other_events(
    con: duckdb.DuckDBPyConnection,
    location: Location,
    files: Sequence[str],
    generation: Generation,
    sources: Sequence[str] = (),
) -> set[str]:
    """The ``files`` that hold an event neither ``generation``'s files nor the JSON-lines ``sources`` have.

    Events older than the generation's retention cutoff are not looked for: retention removed
    them on purpose.
    """
    if not files:
        return set()
    by_url = {location.url(rel): rel for rel in files}
    candidates = file_list(by_url)
    cond = f"timestamp >= {quote(generation.retired_before)}" if generation.retired_before else "true"
    if generation.files:
        live = file_list(location.url(f.path) for f in generation.files)
        cond += (
            f" AND event_id NOT IN (SELECT event_id FROM read_parquet({live}) WHERE run_id IN "
            f"(SELECT DISTINCT run_id FROM read_parquet({candidates})))"
        )
    if sources:
        cond += f" AND event_id NOT IN (SELECT event_id FROM ({jsonl_select(sources)}) s)"
    rows = con.execute(
        f"SELECT DISTINCT filename FROM read_parquet({candidates}, filename=true, hive_partitioning=false) WHERE {cond}"
    ).fetchall()
    held = {by_url.get(name, "") for (name,) in rows}
    return set(files) if "" in held else held


def commit_generation(location: Location, generation: Generation) -> None:
    """Commit ``generation``: create its document if, and only if, no other has its version.

    Raises:
        CompactionConflictError: another compaction committed this version first.
    """
    rel = _document(generation.version)
    try:
        location.create(rel, generation.to_json())
    except FileExistsError:
        raise CompactionConflictError(
            f"ledger manifest {location.display(rel)!r} was committed by another compaction; run scalable ledger compact again"
        ) from None


def publish_staged(location: Location, attempt: Attempt, staging: Path, expected_rows: int) -> list[DataFile]:
    """Check the Parquet files staged under ``staging`` and publish them under ``events/``.

    Staged files are laid out ``date=<date>/<name>.parquet``; each is published under a new
    unique name of ``attempt``, so no reader sees it until a generation names it.

    Raises:
        LedgerError: the staged files do not hold ``expected_rows`` rows (nothing is published).
    """
    import pyarrow.parquet as pq

    staged: list[tuple[Path, str, int]] = []
    if staging.is_dir():
        for part in sorted(staging.iterdir()):
            date = part.name.removeprefix("date=")
            staged += [(file, date, pq.read_metadata(file).num_rows) for file in sorted(part.glob("*.parquet"))]
    found = sum(rows for _f, _d, rows in staged)
    if found != expected_rows:
        raise LedgerError(
            f"compaction wrote {expected_rows} events but the staged Parquet under {str(staging)!r} holds {found}; "
            "nothing was committed, run scalable ledger compact again"
        )
    crash_point("after_parquet_write")
    made: list[DataFile] = []
    for file, date, rows in staged:
        rel = f"{EVENTS_DIR}/date={date}/{attempt.name('part')}"
        made.append(DataFile(rel, rows, attempt.publish(location, file, rel), date))
    shutil.rmtree(staging, ignore_errors=True)
    return made
