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

Every compacted file's name says which generation it was written for
(``<stem>-g<version>-<uuid>.parquet``, :func:`compacted_name`), so a file no generation names
can be told apart: superseded (the generation of its version named it), left by a compaction
that never committed (that generation exists and does not name it), or unknown. The record
is what makes the files readable, so a ledger whose compacted files outlive their record is
an error (:func:`read_generation`), never an empty ledger; ``scalable ledger recover``
rebuilds the record from the files (:mod:`scalable.ledger.recover`).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from scalable.errors import CompactionConflictError, LedgerError
from scalable.ledger.crash import crash_point

if TYPE_CHECKING:
    from scalable.ledger.location import Location

__all__ = [
    "EVENTS_DIR",
    "GENERATIONS_DIR",
    "DataFile",
    "Generation",
    "LineageFiles",
    "StreamState",
    "clear_pending",
    "commit_generation",
    "compacted_name",
    "generation_versions",
    "mark_pending",
    "pending_versions",
    "publish_staged",
    "read_generation",
    "read_version",
    "written_for",
]

#: Directory of the compacted event files, relative to the compacted data.
EVENTS_DIR: Final = "events"
#: Directory of the generation documents, relative to the compacted data.
GENERATIONS_DIR: Final = "_manifest"
_FORMAT: Final = "scalable-ledger-manifest"
_PENDING: Final = ".pending"
_WRITTEN_FOR: Final = re.compile(r"-g(\d+)-[0-9a-f]{32}\.parquet$")


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
    #: Files this generation no longer names that a later compaction may delete (see
    #: :mod:`scalable.ledger.recover`), kept listed until they are gone.
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
            doc = json.loads(data)
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

    def names(self) -> set[str]:
        """Every file this generation names: data files and lineage files."""
        names = {f.path for f in self.files}
        if self.lineage is not None:
            names |= {self.lineage.by_dst, self.lineage.by_src, self.lineage.nodes}
        return names

    @property
    def rows(self) -> int:
        """Number of events in the live data files."""
        return sum(f.rows for f in self.files)


def _document(version: int) -> str:
    return f"{GENERATIONS_DIR}/{version:020d}.json"


def compacted_name(directory: str, stem: str, version: int) -> str:
    """A new, unique name for a compacted file written for generation ``version``."""
    return f"{directory}/{stem}-g{version}-{uuid.uuid4().hex}.parquet"


def written_for(rel: str) -> int | None:
    """The generation a compacted file was written for, from its name (``None`` for other names)."""
    found = _WRITTEN_FOR.search(rel)
    return int(found.group(1)) if found else None


def generation_versions(location: Location) -> list[int]:
    """The versions of every generation document at ``location``, oldest first."""
    names = location.list_names(GENERATIONS_DIR)
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())


def read_version(location: Location, version: int) -> Generation | None:
    """The generation ``version`` (``None`` when its document is gone).

    Raises:
        LedgerError: its document is not valid.
    """
    rel = _document(version)
    try:
        data = location.read_bytes(rel)
    except FileNotFoundError:
        return None
    return Generation.from_json(data, location.display(rel))


def read_generation(location: Location) -> Generation:
    """Return the newest committed generation at ``location`` (an empty one if none).

    Raises:
        LedgerError: the newest generation document is not valid, or there is none although
            compacted files are there (the record was lost: the files cannot be read, and
            nothing may delete them); run ``scalable ledger recover``.
    """
    names = location.list_names(GENERATIONS_DIR)
    versions = sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())
    if versions:
        rel = _document(versions[-1])
        return Generation.from_json(location.read_bytes(rel), location.display(rel))
    # Files of a compaction that has not committed (still running, or killed) are announced
    # by its marker; any other compacted file is evidence of a lost record.
    pending = _pending(names)
    orphans = [
        rel for rel in location.list_files(EVENTS_DIR) if rel.endswith(".parquet") and written_for(rel) not in pending
    ]
    if orphans and not location.compacting():
        raise LedgerError(
            f"ledger directory {location.display('')!r} holds {len(orphans)} compacted file(s) under "
            f"{EVENTS_DIR}/ but no generation record under {GENERATIONS_DIR}/ (deleted?): nothing can tell "
            "which events they hold, so nothing reads or deletes them. Rebuild the record from the files "
            "with: scalable ledger recover"
        )
    return Generation()


def _pending(names: list[str]) -> set[int]:
    return {int(n[: -len(_PENDING)]) for n in names if n.endswith(_PENDING) and n[: -len(_PENDING)].isdigit()}


def pending_versions(location: Location) -> set[int]:
    """The versions compactions announced (:func:`mark_pending`) and have not withdrawn."""
    return _pending(location.list_names(GENERATIONS_DIR))


def mark_pending(location: Location, version: int) -> None:
    """Announce that a compaction is writing files for generation ``version`` (before it writes any)."""
    with contextlib.suppress(FileExistsError):
        location.create(f"{GENERATIONS_DIR}/{version:020d}{_PENDING}", b"")


def clear_pending(location: Location, version: int) -> None:
    """Withdraw the announcement of :func:`mark_pending` (once its generation is committed, or nothing was written)."""
    location.delete(f"{GENERATIONS_DIR}/{version:020d}{_PENDING}")


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
            f"ledger manifest {location.display(rel)!r} was committed by another compaction; run compact again"
        ) from None


def publish_staged(location: Location, staging: Path, expected_rows: int, version: int) -> list[DataFile]:
    """Check the Parquet files staged under ``staging`` and publish them under ``events/``.

    Staged files are laid out ``date=<date>/<name>.parquet``; each is published under a new
    unique name (:func:`compacted_name` of ``version``, the generation they are written for),
    so no reader sees it until a generation names it.

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
            "nothing was committed, run compact again"
        )
    crash_point("after_parquet_write")
    made: list[DataFile] = []
    for file, date, rows in staged:
        rel = compacted_name(f"{EVENTS_DIR}/date={date}", "part", version)
        made.append(DataFile(rel, rows, location.publish(file, rel), date))
    shutil.rmtree(staging, ignore_errors=True)
    return made
