"""Recovery: rebuilding the record of compacted files (the generation) from the files themselves.

The generation record (``_manifest/``) is what makes compacted files readable. When it is
lost (deleted, truncated) or no longer accounts for every file, the views and compactions
refuse to guess (:func:`~scalable.ledger.generations.read_generation`) and nothing deletes the
files. :func:`recover` then commits a new generation built from the files present:

1. Every compacted event file is read (a file that cannot be read is left alone and counted).
   The retention cutoff is the latest one the ``run/retired`` tombstones name.
2. Files are taken newest first (by the generation their name says they were written for,
   then the largest first): a file is named as it is when none of its events was taken
   already; a file whose events were all taken (superseded by a merge, a copy) is listed as
   replaced; a file that overlaps partly, holds an event twice or holds events retention
   removed gives its remaining events to one new file.
3. Every source of events (local stream, remote segment) is marked as covered from byte 0,
   so the views read it again and keep only the events no compacted file has; the next
   compaction then covers it exactly once. Runs whose stream is gone are marked retired.
4. The generation is committed under a version after every one in use; lineage files are
   recomputed by the next full compaction. Nothing is deleted: the next compaction deletes
   the replaced files once every event in them is found in the live ones.

Every event of the files present is then in the views exactly once, with the same columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scalable.errors import LedgerError
from scalable.ledger import bus
from scalable.ledger.compact import KnownGenerations, files_holding_other_events
from scalable.ledger.events import duckdb_columns, now
from scalable.ledger.generations import (
    EVENTS_DIR,
    GENERATIONS_DIR,
    DataFile,
    Generation,
    StreamState,
    commit_generation,
    publish_staged,
    read_generation,
    written_for,
)
from scalable.ledger.lineage_files import LINEAGE_DIR
from scalable.ledger.sql import ROW_GROUP_SIZE, file_list, parquet_copy_options, quote
from scalable.ledger.sql import connect as sql_connect
from scalable.logs import get_logger

if TYPE_CHECKING:
    import duckdb

    from scalable.ledger.location import Location
    from scalable.ledger.log import Ledger

__all__ = ["RecoveryResult", "describe", "needs_recovery", "recover"]

_log = get_logger("scalable.ledger")


@dataclass(frozen=True, slots=True)
class RecoveryResult:
    """What one :func:`recover` did (``recovered`` is False when the record was sound)."""

    recovered: bool
    version: int
    files_named: int
    files_written: int
    files_replaced: int
    files_unreadable: int
    events: int

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a plain mapping (for rendering)."""
        return {
            "recovered": self.recovered,
            "version": self.version,
            "files_named": self.files_named,
            "files_written": self.files_written,
            "files_replaced": self.files_replaced,
            "files_unreadable": self.files_unreadable,
            "events": self.events,
        }


def needs_recovery(con: duckdb.DuckDBPyConnection, location: Location) -> str | None:
    """Why ``location``'s record must be rebuilt (``None`` when it accounts for every compacted file).

    The record must be rebuilt when the newest generation cannot be read (or is missing while
    compacted files exist), or when a compacted file it does not name is accounted for by no
    generation, or holds events the live files lack.
    """
    try:
        current = read_generation(location)
    except LedgerError as exc:
        return str(exc)
    names = current.names()
    loose = [rel for rel in location.list_files(EVENTS_DIR) if rel.endswith(".parquet") and rel not in names]
    known = KnownGenerations(location, {current.version: current})
    unknown = [r for r in loose if r not in current.replaced and not known.accounts_for(r, current.version)]
    if unknown:
        return f"{len(unknown)} compacted file(s) no generation accounts for, such as {location.display(unknown[0])!r}"
    held = files_holding_other_events(con, location, loose, current)
    if held:
        return f"{len(held)} compacted file(s) hold events the live files lack, such as {location.display(min(held))!r}"
    return None


def recover(ledger: Ledger) -> RecoveryResult:
    """Rebuild the generation record of ``ledger``'s compacted data from the files present.

    Does nothing (``recovered=False``) when the record is sound. See the module docstring.

    Raises:
        CompactionConflictError: a compaction committed at the same time; run it again.
    """
    bus.flush_all()
    location = ledger.location
    with location.lock(), location.staging() as tmp:
        con = sql_connect(spill_dir=tmp / "spill", filesystem=location.filesystem)
        try:
            reason = needs_recovery(con, location)
            if reason is None:
                current = read_generation(location)
                return RecoveryResult(False, current.version, len(current.files), 0, 0, 0, current.rows)
            _log.warning("ledger.recovering", location=location.uri, reason=reason)
            return _rebuild(con, location, tmp)
        finally:
            con.close()


def _rebuild(con: duckdb.DuckDBPyConnection, location: Location, tmp: Path) -> RecoveryResult:
    import duckdb

    files = sorted(rel for rel in location.list_files(EVENTS_DIR) if rel.endswith(".parquet"))
    readable: list[str] = []
    unreadable: list[str] = []
    for rel in files:
        try:
            con.execute(f"SELECT count(*) FROM read_parquet({file_list([location.url(rel)])})").fetchall()
            readable.append(rel)
        except duckdb.Error as exc:  # a file DuckDB cannot read is left as it is
            _log.warning("ledger.unreadable_file", file=location.display(rel), error=str(exc).splitlines()[0])
            unreadable.append(rel)
    names = location.list_names(GENERATIONS_DIR)
    used = [int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit()]
    version = max([*used, *(written_for(rel) or 0 for rel in files), 0]) + 1
    columns = ", ".join(duckdb_columns())
    cutoff = None
    facts: dict[str, tuple[int, int, int]] = {}  # file -> rows, distinct events, retired rows
    if readable:
        by_url = {location.url(rel): rel for rel in readable}
        con.execute(
            f"CREATE TEMP TABLE _found AS SELECT filename, {columns} FROM "
            f"read_parquet({file_list(by_url)}, filename=true, hive_partitioning=false)"
        )
        cutoff = con.execute(
            "SELECT max(json_extract_string(attrs, '$.before')) FROM _found WHERE event_type = 'run' AND op = 'retired'"
        ).fetchall()[0][0]
        retired = f"timestamp < {quote(cutoff)} AND NOT (event_type = 'run' AND op = 'retired')" if cutoff else "false"
        for name, rows, distinct, old in con.execute(
            f"SELECT filename, count(*), count(DISTINCT event_id), count(*) FILTER (WHERE {retired}) "
            "FROM _found GROUP BY filename"
        ).fetchall():
            facts[by_url.get(name, name)] = (int(rows), int(distinct), int(old))
    con.execute("CREATE TEMP TABLE _taken (event_id VARCHAR)")
    named: list[str] = []
    replaced: list[str] = []
    partial: list[str] = []
    order = sorted(facts, key=lambda rel: (-(written_for(rel) or 0), -facts[rel][0], rel))
    for rel in order:
        rows, distinct, old = facts[rel]
        url = location.url(rel)
        overlap = con.execute(
            "SELECT count(DISTINCT event_id) FROM _found WHERE filename = $1 AND event_id IN (SELECT event_id FROM _taken)",
            [url],
        ).fetchall()[0][0]
        if overlap == distinct:
            replaced.append(rel)
        elif overlap == 0 and old == 0 and rows == distinct:
            named.append(rel)
            con.execute("INSERT INTO _taken SELECT event_id FROM _found WHERE filename = $1", [url])
        else:
            partial.append(rel)
    made: list[DataFile] = []
    if partial:
        keep = f"timestamp >= {quote(cutoff)} OR (event_type = 'run' AND op = 'retired')" if cutoff else "true"
        staging = tmp / "recovered"
        query = (
            f"SELECT {columns}, substr(timestamp, 1, 10) AS date FROM (SELECT DISTINCT ON (event_id) {columns} "
            f"FROM _found WHERE filename IN ({', '.join(quote(location.url(r)) for r in partial)}) AND ({keep}) "
            "AND event_id NOT IN (SELECT event_id FROM _taken)) ORDER BY run_id, timestamp, event_id"
        )
        options = parquet_copy_options(partition_by_date=True, row_group_size=ROW_GROUP_SIZE)
        row = con.execute(f"COPY ({query}) TO {quote(str(staging))} {options}").fetchone()
        made = publish_staged(location, staging, int(row[0]) if row else 0, version)
        replaced += partial
    live = [DataFile(rel, facts[rel][0], location.size(rel), _date(rel)) for rel in named] + made
    finished = set()
    in_parquet: set[str] = set()
    if readable:
        in_parquet = {r[0] for r in con.execute("SELECT DISTINCT run_id FROM _found").fetchall()}
        finished = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT run_id FROM _found WHERE event_type = 'run' AND op = 'finished'"
            ).fetchall()
        }
    streams: dict[str, StreamState] = {}
    with_source: set[str] = set()
    for source in location.sources():
        streams[source.key] = StreamState(0, source.run_id in finished, False)
        with_source.add(source.run_id)
    if location.exclusive:
        for run_id in in_parquet - with_source:
            streams[run_id] = StreamState(0, run_id in finished, True)
    lineage = [rel for rel in location.list_files(LINEAGE_DIR) if rel.endswith(".parquet")]
    generation = Generation(
        version=version,
        files=tuple(sorted(live, key=lambda f: (f.date, f.path))),
        streams=streams,
        retired_before=cutoff,
        created=now(),
        lineage=None,
        replaced=tuple(sorted(replaced + lineage)),
    )
    commit_generation(location, generation)
    _log.info("ledger.recovered", version=version, files=len(live), replaced=len(replaced), events=generation.rows)
    return RecoveryResult(True, version, len(named), len(made), len(replaced), len(unreadable), generation.rows)


def _date(rel: str) -> str:
    part = next((p for p in rel.split("/") if p.startswith("date=")), "date=")
    return part.removeprefix("date=")


def describe(result: RecoveryResult) -> str:
    """One line saying what a recovery did."""
    if not result.recovered:
        return f"nothing to recover: generation {result.version} accounts for every compacted file"
    return (
        f"committed generation {result.version}: {result.events} event(s) in {result.files_named} file(s) kept "
        f"and {result.files_written} written; {result.files_replaced} superseded file(s) left for the next "
        "compaction to remove"
        + (f"; {result.files_unreadable} unreadable file(s) left alone" if result.files_unreadable else "")
    )
