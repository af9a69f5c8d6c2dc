"""Verifying every stored copy of an event: the compacted Parquet rows and the remote segments.

A row re-encodes byte for byte to the line it was compacted from (lines have one canonical
form, :mod:`scalable.ledger.events`), so a copy is checked against the chains without trusting
it:

* **Rows of a run whose stream is here** must be exactly the lines of the stream the
  generation covers. Both sides are reduced to a :class:`~scalable.ledger.audit.Tally` per run
  (count, and a digest of the set of line hashes): the rows' in one vectorized DuckDB pass that
  re-encodes each row to its line and hashes it (:func:`~scalable.ledger.sql.line_sql`), the
  stream's while the audit reads it. Only a run whose tallies differ is compared row by row,
  in Python, to name each file and row that differs, is missing, extra or twice.
* **Rows of a run whose stream is gone** (retired) are the only copy: their chains are
  checked in DuckDB (``seq`` and ``prev`` against the previous row's hash, per writer), and
  the seal against its heads and its own digest; a run that fails there is checked again
  row by row with :func:`~scalable.ledger.audit.audit_rows` to name the rows.
* **The files themselves**: every file the generation names must be there, of the size and
  row count it recorded (``file-missing``, ``file-changed``, ``file-unreadable``); a file it
  does not name must be accounted for (superseded, left by a compaction that never committed,
  replaced by a recovery), else ``unlisted-file``; and no such file may hold events the live
  files lack (``unaccounted-events``).
* **Remote segments** of one machine and run are put together in order and checked as a
  stream (a gap between them is ``segment-missing``), and against this machine's own stream.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import orjson

from scalable.errors import LedgerError, RunNotFoundError
from scalable.ledger import bus
from scalable.ledger.audit import (
    AuditProgress,
    AuditReport,
    Problem,
    StreamJob,
    Tally,
    audit_rows,
    audit_streams,
    check_stream_bytes,
    event_seal,
)
from scalable.ledger.events import COLUMNS, GENESIS, check_run_id, decode_line, encode_line
from scalable.ledger.generations import (
    ATTEMPTS_DIR,
    EVENTS_DIR,
    GENERATIONS_DIR,
    Generation,
    attempt_of,
    files_holding_other_events,
    generation_names,
    read_generation,
)
from scalable.ledger.lineage_files import LINEAGE_DIR
from scalable.ledger.location import ObjectLocation
from scalable.ledger.segments import ShippedStream, machine_id, shipped_streams
from scalable.ledger.sql import file_list, line_digest_sql, line_sql, quote
from scalable.ledger.stream import RUN_SUMMARY, StreamReader, list_streams, seal_digest, seal_line_problem

if TYPE_CHECKING:
    import duckdb

    from scalable.ledger.location import Location
    from scalable.ledger.log import Ledger

__all__ = [
    "SourceLine",
    "check_data_files",
    "check_ledger",
    "check_loose_files",
    "check_rows_only",
    "compacted_tallies",
    "compare_run",
]

_NAMES = [c.name for c in COLUMNS]


@dataclass(frozen=True, slots=True)
class SourceLine:
    """A line of a source a compacted copy was made from: where it is, its bytes, its event."""

    where: str
    raw: bytes
    event: Mapping[str, Any]


def _read(location: Location, rel: str) -> str:
    return f"read_parquet({file_list([location.url(rel)])}, hive_partitioning=false)"


def check_data_files(
    con: duckdb.DuckDBPyConnection, location: Location, generation: Generation
) -> tuple[list[Problem], list[str]]:
    """Check that every data file ``generation`` names is there, with the size and rows it recorded.

    Returns:
        The problems, and the files that can be read (those the row checks then read).
    """
    import duckdb

    problems: list[Problem] = []
    readable: list[str] = []
    for f in generation.files:
        where = location.display(f.path)
        try:
            size = location.size(f.path)
        except FileNotFoundError:
            problems.append(
                Problem(
                    "",
                    where,
                    "file-missing",
                    f"a compacted file generation {generation.version} names is gone, and its events with it",
                    expected=f"{f.rows} rows",
                    found="nothing",
                )
            )
            continue
        try:
            rows = int(con.execute(f"SELECT count(*) FROM {_read(location, f.path)}").fetchall()[0][0])
        except duckdb.Error as exc:
            problems.append(Problem("", where, "file-unreadable", f"not a Parquet file DuckDB can read: {_first(exc)}"))
            continue
        if rows != f.rows or size != f.bytes:
            problems.append(
                Problem(
                    "",
                    where,
                    "file-changed",
                    f"the file is not the one generation {generation.version} recorded",
                    expected=f"{f.rows} rows, {f.bytes} bytes",
                    found=f"{rows} rows, {size} bytes",
                )
            )
        readable.append(f.path)
    return problems, readable


def check_loose_files(con: duckdb.DuckDBPyConnection, location: Location, generation: Generation) -> list[Problem]:
    """Check the compacted files ``generation`` does not name: each accounted for, none holding lost events.

    A file is accounted for when a generation still kept names it or lists it as replaced
    (it waits for the retention period, then is collected), or an attempt whose intent is
    there published it (a compaction running, or one that died and is collected next).
    """
    names = generation.named_files()
    loose = [
        rel
        for directory in (EVENTS_DIR, LINEAGE_DIR)
        for rel in location.list_files(directory)
        if rel.endswith(".parquet") and rel not in names
    ]
    if not loose:
        return []
    accounted: set[str] = set()
    for name in generation_names(location):
        try:
            older = Generation.from_json(location.read_bytes(f"{GENERATIONS_DIR}/{name}"), name)
        except (LedgerError, FileNotFoundError):
            continue  # a generation collected meanwhile, or one the audit reports already
        accounted |= older.named_files() | set(older.replaced)
    intents = {n[:-5] for n in location.list_names(ATTEMPTS_DIR) if n.endswith(".json")}
    problems: list[Problem] = []
    superseded: list[str] = []
    for rel in loose:
        if rel in accounted:
            superseded.append(rel)
        elif attempt_of(rel) not in intents:
            problems.append(
                Problem(
                    "",
                    location.display(rel),
                    "unlisted-file",
                    "a compacted file no generation and no compaction accounts for (added by hand?); nothing "
                    "reads it but an engine reading the directory would",
                )
            )
    events = [rel for rel in superseded if rel.startswith(f"{EVENTS_DIR}/")]
    for rel in sorted(files_holding_other_events(con, location, events, generation)):
        problems.append(
            Problem(
                "",
                location.display(rel),
                "unaccounted-events",
                f"holds events no file of generation {generation.version} has (a lost record?); "
                "bring them back with: scalable ledger recover",
            )
        )
    return problems


def compacted_tallies(
    con: duckdb.DuckDBPyConnection, urls: Sequence[str], runs: Sequence[str] | None = None
) -> dict[str, Tally]:
    """The :class:`~scalable.ledger.audit.Tally` of every run's rows (of ``runs`` only) in ``urls``, in one pass."""
    if not urls:
        return {}
    high, low = line_digest_sql("h")
    where = f"WHERE run_id IN ({', '.join(quote(r) for r in runs)})" if runs is not None else ""
    rows = con.execute(
        f"SELECT run_id, count(*), sum({high}), sum({low}) FROM (SELECT run_id, sha256({line_sql()}) AS h "
        f"FROM read_parquet({file_list(urls)}, hive_partitioning=false) {where}) GROUP BY run_id"
    ).fetchall()
    return {run: Tally(int(count), (int(hi) << 64) + int(lo)) for run, count, hi, lo in rows}


def _rows(
    con: duckdb.DuckDBPyConnection, files: Mapping[str, str], runs: Iterable[str], where: str = "true"
) -> Iterable[tuple[str, str, dict[str, Any]]]:
    """``(run_id, place, row)`` of every row of ``runs`` in ``files`` (URL -> name) matching ``where``.

    A row's place is its file and 1-based row number.
    """
    wanted = sorted(set(runs))
    if not files or not wanted:
        return
    result = con.execute(
        f"SELECT filename, file_row_number, {', '.join(_NAMES)} FROM read_parquet({file_list(files)}, "
        f"filename=true, file_row_number=true, hive_partitioning=false) "
        f"WHERE run_id IN ({', '.join(quote(r) for r in wanted)}) AND ({where}) ORDER BY filename, file_row_number"
    )
    while batch := result.fetchmany(10000):
        for filename, number, *values in batch:
            row = dict(zip(_NAMES, values, strict=True))
            yield row["run_id"], f"{files.get(filename, filename)}: row {number + 1}", row


def compare_run(
    con: duckdb.DuckDBPyConnection, files: Mapping[str, str], run_id: str, lines: Iterable[SourceLine]
) -> list[Problem]:
    """Compare the compacted rows of ``run_id`` in ``files`` (URL -> name) with the source ``lines``, row by row."""
    source: dict[str, tuple[SourceLine, set[str]]] = {}
    for line in lines:
        if line.event["event_id"] in source:
            continue
        digests = {hashlib.sha256(line.raw).hexdigest(), hashlib.sha256(encode_line(line.event)[:-1]).hexdigest()}
        source[line.event["event_id"]] = (line, digests)
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for _run, where, row in _rows(con, files, [run_id]):
        event_id = row["event_id"]
        if event_id in seen:
            problems.append(
                Problem(
                    run_id, where, "copy-duplicate", f"event {event_id} is compacted twice (also at {seen[event_id]})"
                )
            )
            continue
        seen[event_id] = where
        found = source.get(event_id)
        digest = hashlib.sha256(encode_line(row)[:-1]).hexdigest()
        if found is None:
            problems.append(
                Problem(
                    run_id,
                    where,
                    "copy-extra",
                    f"event {event_id} is in no line of the run's source the generation covers",
                )
            )
        elif digest not in found[1]:
            problems.append(
                Problem(
                    run_id,
                    where,
                    "copy-differs",
                    f"event {event_id} differs from its line at {found[0].where}: {_differences(found[0].event, row)}",
                )
            )
    for event_id, (line, _digests) in source.items():
        if event_id not in seen:
            problems.append(
                Problem(
                    run_id,
                    line.where,
                    "copy-missing",
                    f"event {event_id} is in no compacted file, though the generation covers its line",
                )
            )
    return problems


def _differences(event: Mapping[str, Any], row: Mapping[str, Any]) -> str:
    want = decode_line(encode_line(event))
    changed = []
    for name in _NAMES:
        a, b = want.get(name), row.get(name)
        if isinstance(a, tuple | list) or isinstance(b, tuple | list):
            a, b = list(a or []), list(b or [])
        if a != b:
            changed.append(f"{name} {_short(a)} in the line, {_short(b)} in the row")
    return "; ".join(changed) or "the bytes differ"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def check_rows_only(
    con: duckdb.DuckDBPyConnection,
    files: Mapping[str, str],
    runs: Iterable[str],
    where: str,
    key: bytes | None,
    progress: AuditProgress | None = None,
) -> list[Problem]:
    """Check the runs whose compacted rows in ``files`` (URL -> name) are their only copy: chains and seals.

    DuckDB finds the runs where anything is off (a broken link, a gap, a duplicate, a seal
    whose heads or own digest do not match, a row after the seal); only those are checked row
    by row, and their problems name file and row. ``where`` names the dataset. ``progress``
    is called with ``("compacted", runs checked, runs in all)``: from 0, then as each run's
    check is over (a run DuckDB found nothing wrong with is over once that pass is).
    """
    wanted = sorted(set(runs))
    if progress is not None and wanted:
        progress("compacted", 0, len(wanted))
    if not files or not wanted:
        if progress is not None and wanted:
            progress("compacted", len(wanted), len(wanted))
        return []
    import pyarrow as pa

    con.register("_audit_runs", pa.table({"run_id": pa.array(wanted, pa.string())}))
    try:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE _audit_rows AS SELECT run_id, writer, seq, prev, event_id, event_type, op, "
            f"sha256({line_sql()}) AS h FROM read_parquet({file_list(files)}, hive_partitioning=false) "
            "WHERE run_id IN (SELECT run_id FROM _audit_runs)"
        )
        suspect = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT run_id FROM (SELECT run_id, seq, prev, lag(h) OVER w AS lh, lag(seq) OVER w AS ls, "
                "count(*) OVER (PARTITION BY event_id) AS n FROM _audit_rows "
                "WINDOW w AS (PARTITION BY run_id, writer ORDER BY seq)) "
                f"WHERE n > 1 OR (ls IS NULL AND (seq <> 0 OR prev <> {quote(GENESIS)})) "
                "OR (ls IS NOT NULL AND (seq <> ls + 1 OR prev <> lh))"
            ).fetchall()
        }
        suspect |= _seal_suspects(con, files, wanted, key)
    finally:
        con.execute("DROP TABLE IF EXISTS _audit_rows")
        con.unregister("_audit_runs")
    problems: list[Problem] = []
    by_run: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for run_id, place, row in _rows(con, files, suspect):
        by_run.setdefault(run_id, []).append((place, row))
    for done, run_id in enumerate(wanted, start=1):
        if run_id in suspect:
            rows = by_run.get(run_id, [])
            report = audit_rows(
                run_id, [r for _p, r in rows], f"{where} (run {run_id})", key=key, places=[p for p, _r in rows]
            )
            problems += report.problems
        if progress is not None:
            progress("compacted", done, len(wanted))
    return problems


def _seal_suspects(
    con: duckdb.DuckDBPyConnection, files: Mapping[str, str], runs: Sequence[str], key: bytes | None
) -> set[str]:
    """Runs whose seal fails: its own digest or HMAC, a head that is not the row it names, a row after it."""

    suspects: set[str] = set()
    seals: dict[str, dict[str, Any]] = {}
    for run_id, _place, row in _rows(con, files, runs, "event_type = 'run' AND op = 'finished'"):
        if run_id in seals:
            suspects.add(run_id)  # sealed twice: the row by row check says what is wrong
        seals.setdefault(run_id, row)
    heads: list[tuple[str, str, int, str]] = []
    limits: list[tuple[str, str, int]] = []
    for run_id, row in seals.items():
        seal = event_seal(row)
        if seal is None:  # attrs edited into something that is no seal: the row by row check says so
            suspects.add(run_id)
            continue
        if seal.get("version", 1) >= 2:
            if seal_line_problem(encode_line(row)[:-1], seal, key) is not None:
                suspects.add(run_id)
        elif key and seal.get("hmac") != seal_digest(run_id, seal.get("heads") or {}, key):
            suspects.add(run_id)
        for writer, head in (seal.get("heads") or {}).items():  # each an object with an int seq (event_seal)
            heads.append((run_id, writer, head["seq"], str(head.get("head"))))
            limits.append((run_id, writer, head["seq"]))
        limits.append((run_id, row["writer"], int(row["seq"])))
    if not seals:
        return suspects
    con.register("_audit_heads", _table(("run_id", "writer", "seq", "head"), heads))
    con.register("_audit_limits", _table(("run_id", "writer", "seq"), limits))
    try:
        suspects |= {
            r[0]
            for r in con.execute(
                "SELECT h.run_id FROM _audit_heads h LEFT JOIN _audit_rows r USING (run_id, writer, seq) "
                "WHERE r.h IS DISTINCT FROM h.head "
                "UNION SELECT r.run_id FROM _audit_rows r "
                "SEMI JOIN (SELECT DISTINCT run_id FROM _audit_limits) s USING (run_id) "
                "LEFT JOIN (SELECT run_id, writer, max(seq) AS seq FROM _audit_limits GROUP BY run_id, writer) l "
                "USING (run_id, writer) "
                "WHERE (l.seq IS NULL OR r.seq > l.seq) AND NOT (r.event_type = 'run' AND r.op = 'retired')"
            ).fetchall()
        }
    finally:
        con.unregister("_audit_heads")
        con.unregister("_audit_limits")
    return suspects


def _table(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    """An Arrow table of ``rows`` (a ``seq`` column is int64, the others strings)."""
    import pyarrow as pa

    return pa.table(
        {
            name: pa.array([row[i] for row in rows], pa.int64() if name == "seq" else pa.string())
            for i, name in enumerate(names)
        }
    )


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


#: Problems of one kind reported per run before the rest are summed up in one more.
_PER_RUN: Final = 20


def check_ledger(ledger: Ledger, run_id: str | None = None, *, progress: AuditProgress | None = None) -> AuditReport:
    """Check every copy of every event the ledger knows of (one run, or all); see :func:`~scalable.ledger.audit.audit_structure`.

    ``progress`` is called as the phases ``streams`` and ``compacted`` go (see
    :data:`~scalable.ledger.audit.AuditProgress`).

    Raises:
        EventValidationError: ``run_id`` is not a valid run id.
        RunNotFoundError: ``run_id`` is known nowhere (no stream, summary, segment or row).
    """
    from scalable.ledger.sql import connect as sql_connect

    if run_id is not None:
        check_run_id(run_id)
    bus.flush_all()
    location = ledger.location
    key = ledger.settings.ledger_key
    report = AuditReport()
    generation = _record(location, report)
    state = generation or Generation()
    wanted = (lambda r: r == run_id) if run_id is not None else (lambda _r: True)
    known: set[str] = set()
    sources: dict[str, _Source] = {}
    # Local streams, each against its own seal and run.json; counted where a generation covers them.
    local = location.outbox is None
    jobs: list[StreamJob] = []
    for run, path, size in list_streams(ledger.runs_dir):
        if not wanted(run):
            continue
        known.add(run)
        covered = state.streams.get(run)
        offset = covered.offset if local and covered is not None and not covered.retired else None
        jobs.append(StreamJob(str(path), run, size, offset, state.retired_before))
    streamed = audit_streams(jobs, key, progress)  # worker processes, when they are forked, are forked first
    con = sql_connect(filesystem=location.filesystem) if generation is not None else None
    readable: list[str] = []
    counting: Future[dict[str, Tally]] | None = None
    pool = ThreadPoolExecutor(1, thread_name_prefix="scalable-audit")
    if con is not None and generation is not None:
        problems, readable = check_data_files(con, location, generation)
        report.problems += problems
        urls = [location.url(rel) for rel in readable]
        # DuckDB re-encodes and hashes every compacted row while the streams are read.
        counting = pool.submit(compacted_tallies, con, urls, None if run_id is None else [run_id])
    pool.shutdown(wait=False)
    for job, (part, tally) in zip(jobs, streamed(), strict=True):
        report.extend(part)
        if tally is not None and job.covered is not None:
            sources[job.run_id] = _Source(tally, _stream_lines(Path(job.path), job.covered, state.retired_before))
    # Remote segments: each machine's segments of a run put together, checked as a stream.
    if isinstance(location, ObjectLocation):
        _check_segments(ledger, location, state, key, run_id, known, sources, report)
    # Summaries of sealed runs whose stream is gone.
    summaries = _summaries(ledger.runs_dir, wanted)
    known |= set(summaries)
    rows_per_run: dict[str, int] = {}
    if con is not None and generation is not None and counting is not None:
        with contextlib.closing(con):
            tallies = counting.result()
            files = {location.url(rel): location.display(rel) for rel in readable}
            rows_per_run = {run: t.count for run, t in tallies.items()}
            known |= set(tallies)
            for run, source in sorted(sources.items()):
                found = tallies.get(run, Tally())
                if (found.count, found.digest) != (source.tally.count, source.tally.digest):
                    report.problems += _capped(compare_run(con, files, run, source.lines()))
            covered_runs = {location.run_of(k) for k, s in generation.streams.items()}
            alone = [r for r in tallies if r not in sources]
            for run in alone:
                if run not in covered_runs:
                    report.problems.append(
                        Problem(
                            run,
                            location.display(EVENTS_DIR),
                            "copy-extra",
                            f"{tallies[run].count} compacted row(s) of a run whose source no generation covers",
                        )
                    )
            report.problems += _capped(check_rows_only(con, files, alone, location.display(EVENTS_DIR), key, progress))
            report.events += sum(tallies[r].count for r in alone)
            if run_id is None:
                report.problems += check_loose_files(con, location, generation)
        known |= {location.run_of(k) for k in generation.streams if wanted(location.run_of(k))}
    # Every run known of whose events are nowhere.
    for run, (path, summary) in sorted(summaries.items()):
        if rows_per_run.get(run, 0) == 0 and run not in sources:
            report.problems.append(
                Problem(
                    run,
                    str(path),
                    "events-missing",
                    f"{RUN_SUMMARY} says the run was sealed with {summary.get('events')} event(s), but no stream, "
                    "segment or compacted file holds any of them",
                )
            )
    if generation is not None and local:
        for run, covered in sorted(generation.streams.items()):
            if wanted(run) and covered.offset > 0 and rows_per_run.get(run, 0) == 0 and run not in sources:
                if (ledger.runs_dir / run / "artifacts.jsonl").exists() and not covered.retired:
                    continue
                report.problems.append(
                    Problem(
                        run,
                        location.display(GENERATIONS_DIR),
                        "events-missing",
                        f"generation {generation.version} covers {covered.offset} byte(s) of the run's stream, but "
                        "neither the stream nor any compacted file holds its events",
                    )
                )
    if run_id is not None and run_id not in known:
        raise RunNotFoundError(
            f"run {run_id!r} has no stream under {str(ledger.runs_dir)!r}, no summary, no segment and no compacted "
            "file; list runs with: scalable ledger runs"
        )
    report.runs = len(known)
    return report


def _record(location: Location, report: AuditReport) -> Generation | None:
    """The newest generation, or ``None`` with a problem when it cannot be read."""
    try:
        return read_generation(location)
    except LedgerError as exc:
        kind = "generation-unreadable" if generation_names(location) else "generation-missing"
        report.problems.append(Problem("", location.display(GENERATIONS_DIR), kind, str(exc)))
        return None


@dataclass(frozen=True, slots=True)
class _Source:
    """A run's covered source lines: their tally, and how to read them again for a row by row comparison."""

    tally: Tally
    lines: Callable[[], Iterable[SourceLine]]


def _stream_lines(path: Path, covered: int, retired_before: str | None) -> Callable[[], Iterable[SourceLine]]:
    def lines() -> Iterable[SourceLine]:
        reader = StreamReader(path)
        for number, offset, raw, event in reader.lines_of(path.read_bytes()):
            if offset < covered and (retired_before is None or event["timestamp"] >= retired_before):
                yield SourceLine(f"{path}:{number}", raw, event)

    return lines


def _summaries(runs_dir: Path, wanted: Callable[[str], bool]) -> dict[str, tuple[Path, dict[str, Any]]]:
    """``run.json`` of every run whose stream is gone: run -> (path, summary)."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    try:
        names = sorted(os.listdir(runs_dir))
    except FileNotFoundError:
        return found
    for name in names:
        path = runs_dir / name / RUN_SUMMARY
        if not wanted(name) or (runs_dir / name / "artifacts.jsonl").exists() or not path.is_file():
            continue
        try:
            summary = orjson.loads(path.read_bytes())
        except ValueError:
            summary = {}
        found[name] = (path, summary if isinstance(summary, dict) else {})
    return found


def _check_segments(
    ledger: Ledger,
    location: ObjectLocation,
    state: Generation,
    key: bytes | None,
    run_id: str | None,
    known: set[str],
    sources: dict[str, _Source],
    report: AuditReport,
) -> None:
    """Check each machine's segments of each run as one stream, against its seal and this machine's stream."""
    present = {s.key for s in location.sources()}
    for missing in sorted(k for k in state.streams if k not in present):
        if run_id is None or location.run_of(missing) == run_id:
            report.problems.append(
                Problem(
                    location.run_of(missing),
                    location.display_root(missing),
                    "segment-missing",
                    f"generation {state.version} covers this segment, but it is gone",
                )
            )
    covered_keys = {k for k, s in state.streams.items() if k in present and not s.retired}
    urls = {source.path: source.key for source in location.sources()}
    mine = machine_id(ledger.runs_dir) if ledger.runs_dir.is_dir() else None
    for stream in shipped_streams(location, run_id):
        run = stream.run_id
        known.add(run)
        covered = _covered_bytes(stream, urls, covered_keys)
        tally = sources[run].tally if run in sources else Tally()
        part = check_stream_bytes(
            stream.data,
            run,
            _line_of(stream),
            f"{stream.pieces[-1][1]}:end" if stream.pieces else f"segments of {run}",
            key=key,
            covered=covered,
            retired_before=state.retired_before,
            tally=tally,
        )
        for start, end in stream.gaps:
            part.problems.append(
                Problem(
                    run,
                    stream.where(stream.data.count(b"\n", 0, start) + 1),
                    "segment-missing",
                    f"bytes {start}-{end} of machine {stream.machine}'s stream are in no segment",
                )
            )
        report.extend(part)
        lines = _segment_lines(stream, covered, state.retired_before)
        previous = sources.get(run)
        sources[run] = _Source(tally, lines if previous is None else _joined(previous.lines, lines))
        local = ledger.runs_dir / run / "artifacts.jsonl"
        if stream.machine == mine and local.is_file():
            with open(local, "rb") as fh:
                own = fh.read(len(stream.data))
            if own != stream.data:
                cut = next((i for i, (a, b) in enumerate(zip(own, stream.data, strict=False)) if a != b), len(own))
                report.problems.append(
                    Problem(
                        run,
                        stream.where(stream.data.count(b"\n", 0, cut) + 1),
                        "segment-differs",
                        f"differs from this machine's stream {local} at byte {cut}",
                    )
                )


def _line_of(stream: ShippedStream) -> Callable[[int, int], str]:
    def where(number: int, _offset: int) -> str:
        return stream.where(number)

    return where


def _covered_bytes(stream: ShippedStream, urls: Mapping[str, str], covered: set[str]) -> int:
    """Bytes of a shipped stream, from its start, that segments a generation covers hold."""
    end = 0
    bounds = [*stream.starts, len(stream.data)]
    for index, (_first, uri) in enumerate(stream.pieces):
        if urls.get(uri) not in covered or bounds[index] != end:
            break
        end = bounds[index + 1]
    return end


def _segment_lines(
    stream: ShippedStream, covered: int, retired_before: str | None
) -> Callable[[], Iterable[SourceLine]]:
    def lines() -> Iterable[SourceLine]:
        reader = StreamReader(Path(stream.run_id))
        for number, offset, raw, event in reader.lines_of(stream.data):
            if offset < covered and (retired_before is None or event["timestamp"] >= retired_before):
                yield SourceLine(stream.where(number), raw, event)

    return lines


def _joined(*parts: Callable[[], Iterable[SourceLine]]) -> Callable[[], Iterable[SourceLine]]:
    def lines() -> Iterable[SourceLine]:
        for part in parts:
            yield from part()

    return lines


def _capped(problems: list[Problem]) -> list[Problem]:
    """At most :data:`_PER_RUN` problems of one kind per run, then one that says how many more there are."""
    kept: list[Problem] = []
    extra: dict[tuple[str, str], list[Problem]] = {}
    counts: dict[tuple[str, str], int] = {}
    for problem in problems:
        group = (problem.run_id, problem.kind)
        counts[group] = counts.get(group, 0) + 1
        if counts[group] <= _PER_RUN:
            kept.append(problem)
        else:
            extra.setdefault(group, []).append(problem)
    for (run, kind), more in extra.items():
        kept.append(Problem(run, more[0].where, kind, f"and {len(more)} more problem(s) of this kind in this run"))
    return kept
