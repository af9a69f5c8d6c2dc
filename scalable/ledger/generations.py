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
"""

from __future__ import annotations

import json
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
    "commit_generation",
    "publish_staged",
    "read_generation",
]

#: Directory of the compacted event files, relative to the compacted data.
EVENTS_DIR: Final = "events"
#: Directory of the generation documents, relative to the compacted data.
GENERATIONS_DIR: Final = "_manifest"
_FORMAT: Final = "scalable-ledger-manifest"


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
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise LedgerError(
                f"ledger manifest {name!r} is not valid ({exc}); restore it from a backup or remove the "
                "ledger directory and run scalable ledger compact again from the streams"
            ) from None

    @property
    def rows(self) -> int:
        """Number of events in the live data files."""
        return sum(f.rows for f in self.files)


def _document(version: int) -> str:
    return f"{GENERATIONS_DIR}/{version:020d}.json"


def read_generation(location: Location) -> Generation:
    """Return the newest committed generation at ``location`` (an empty one if none).

    Raises:
        LedgerError: the newest generation document is not valid.
    """
    names = sorted(n for n in location.list_names(GENERATIONS_DIR) if n.endswith(".json") and n[:-5].isdigit())
    if not names:
        return Generation()
    rel = f"{GENERATIONS_DIR}/{names[-1]}"
    return Generation.from_json(location.read_bytes(rel), location.display(rel))


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


def publish_staged(location: Location, staging: Path, expected_rows: int) -> list[DataFile]:
    """Check the Parquet files staged under ``staging`` and publish them under ``events/``.

    Staged files are laid out ``date=<date>/<name>.parquet``; each is published under a new
    unique name, so no reader sees it until a generation names it.

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
        rel = f"{EVENTS_DIR}/date={date}/part-{uuid.uuid4().hex}.parquet"
        made.append(DataFile(rel, rows, location.publish(file, rel), date))
    shutil.rmtree(staging, ignore_errors=True)
    return made
