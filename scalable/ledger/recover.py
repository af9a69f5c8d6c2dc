"""Recovery: rebuilding the record of compacted files (the generation) from the files themselves.

The generation record (``_manifest/``) is what makes compacted files readable. When it is
lost (deleted, truncated) or no longer accounts for every file, the views and compactions
refuse to guess (:func:`~scalable.ledger.generations.read_generation`) and nothing deletes the
files. :func:`recover` then commits a new generation built from the files present:

1. Every compacted event file is read (a file that cannot be read is left alone and counted).
   The retention cutoff is the latest one the ``run/retired`` tombstones name.
2. Files are taken the largest first (a merged file before the files it merged): a file is
   named as it is when none of its events was taken already; a file whose events were all taken (superseded by a merge, a copy) is listed as
   replaced; a file that overlaps partly, holds an event twice or holds events retention
   removed gives its remaining events to one new file.
3. Every source of events (local stream, remote segment) is marked as covered as far as the
   compacted files hold each of its events, line by line from its start; the views read the
   rest and keep only the events no compacted file has, and the next compaction covers it
   exactly once. Runs whose stream is gone are marked retired.
4. The generation is committed under a version after every one in use, listing the files it
   does not take as ``replaced``; lineage files are recomputed by the next full compaction.
   Nothing is deleted: a later compaction collects the replaced files once every event in
   them is found in the live ones.

Every event of the files present is then in the views exactly once, with the same columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scalable.errors import LedgerError
from scalable.ledger import bus
from scalable.ledger.events import decode_line, duckdb_columns, now
from scalable.ledger.generations import (
    EVENTS_DIR,
    GENERATIONS_DIR,
    DataFile,
    Generation,
    StreamState,
    begin_attempt,
    commit_generation,
    publish_staged,
    read_generation,
)
from scalable.ledger.lineage_files import LINEAGE_DIR
from scalable.ledger.sql import ROW_GROUP_SIZE, file_list, parquet_copy_options, quote
from scalable.ledger.sql import connect as sql_connect
from scalable.logs import get_logger

if TYPE_CHECKING:
    import duckdb

    from scalable.ledger.location import Location, Source
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
    compacted files exist), or when the audit of the compacted files that generation does not
    name finds one no generation or compaction accounts for, or one holding events the live
    files lack.
    """
    from scalable.ledger.copies import check_loose_files

    try:
        current = read_generation(location)
    except LedgerError as exc:
        return str(exc)
    events = location.display(EVENTS_DIR)
    problems = [p for p in check_loose_files(con, location, current) if p.where.startswith(events)]
    if problems:
        return f"{len(problems)} compacted file(s) the record does not account for, such as {problems[0].where!r}"
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
    used = [int(n.split(".")[0]) for n in location.list_names(GENERATIONS_DIR) if n.split(".")[0].isdigit()]
    version = max([*used, 0]) + 1
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
    order = sorted(facts, key=lambda rel: (-facts[rel][0], rel))
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
    attempt = begin_attempt(location)
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
        made = publish_staged(location, attempt, staging, int(row[0]) if row else 0)
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
    urls = [location.url(f.path) for f in live]
    for source in location.sources():
        covered = _covered(con, location, source, urls, cutoff)
        streams[source.key] = StreamState(covered, source.run_id in finished, False)
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
    try:
        commit_generation(location, generation)
    except BaseException:
        attempt.abandon(location)
        raise
    location.delete(attempt.intent)  # committed: the files are accounted for
    _log.info("ledger.recovered", version=version, files=len(live), replaced=len(replaced), events=generation.rows)
    return RecoveryResult(True, version, len(named), len(made), len(replaced), len(unreadable), generation.rows)


def _covered(
    con: duckdb.DuckDBPyConnection, location: Location, source: Source, urls: list[str], cutoff: str | None
) -> int:
    """Bytes of ``source``, from its start, whose every event the compacted files ``urls`` hold.

    A line that does not decode, or that retention removed, is covered as a compaction covers
    it; the views and the next compaction read the rest.
    """
    have: set[str] = set()
    if urls:
        have = {
            r[0]
            for r in con.execute(
                f"SELECT event_id FROM read_parquet({file_list(urls)}, hive_partitioning=false) WHERE run_id = $1",
                [source.run_id],
            ).fetchall()
        }
    covered = 0
    limit = location.complete_bytes(source)
    with location.open_source(source) as fh:
        for raw in fh:
            if covered + len(raw) > limit or not raw.endswith(b"\n"):
                break
            try:
                event = decode_line(raw[:-1])
            except (ValueError, UnicodeDecodeError):
                event = None
            if event is not None and event["event_id"] not in have and not (cutoff and event["timestamp"] < cutoff):
                break
            covered += len(raw)
    return covered


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
