"""Retention and stream retirement: removing what compaction has made redundant, and nothing else.

* **Stream retirement** (``keep_jsonl=False``): a run's stream is deleted only when the run has
  finished, its whole stream is covered by every generation a reader may still hold (so no
  reader of an older snapshot still reads it; see
  :func:`~scalable.ledger.generations.snapshots`), and a re-read of Parquet finds every event
  id of the stream. Live streams are never rewritten or truncated. A writer
  that still holds a finished run's stream open when it is retired writes into a deleted
  file, so retire only runs nobody writes to any more.
* **Retention** (``retire_before``) removes events older than the cutoff from the dataset, and
  first appends one ``run/retired`` event per affected run with the count, time range and
  per-writer chain positions of what is removed, so audits can account for it. A rerun with
  the same cutoff adds no second tombstone.

Both rewrite or delete files, so they run only where a compaction holds the location's lock
(:attr:`Location.exclusive <scalable.ledger.location.Location.exclusive>`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from scalable.ledger.crash import crash_point
from scalable.ledger.events import duckdb_columns
from scalable.ledger.generations import Attempt, DataFile, Generation, publish_staged
from scalable.ledger.location import Location, Source
from scalable.ledger.sql import ROW_GROUP_SIZE, file_list, jsonl_select, parquet_copy_options, parquet_select, quote
from scalable.logs import get_logger

if TYPE_CHECKING:
    import duckdb

    from scalable.ledger.log import Ledger

__all__ = ["retire_events", "retire_streams"]

_log = get_logger("scalable.ledger")


def retire_streams(
    con: duckdb.DuckDBPyConnection,
    location: Location,
    generation: Generation,
    wanted: set[str] | None,
    readable: Sequence[Generation] = (),
) -> tuple[str, ...]:
    """Delete the streams of finished runs whose every event is verified in Parquet.

    Args:
        con: a connection that reads the location.
        location: where the streams and the compacted data are.
        generation: the committed generation that covers the streams.
        wanted: only the streams of these runs (all when None).
        readable: the older generations readers may still hold; each must cover a stream
            whole too, or a reader of it would still read the stream.

    Returns:
        The runs whose streams were deleted.
    """
    candidates: dict[str, Source] = {}
    for source in location.sources():
        state = generation.streams.get(source.key)
        if wanted is not None and source.run_id not in wanted:
            continue
        if state is None or state.retired or not state.finished or source.size != state.offset:
            continue
        if any(_read_by(older, source.key, source.size) for older in readable):
            continue
        candidates[source.key] = source
    if not candidates or not generation.files:
        return ()
    live = file_list(location.url(f.path) for f in generation.files)
    runs = ", ".join(quote(s.run_id) for s in candidates.values())
    select = jsonl_select([s.path for s in candidates.values()], retired_before=generation.retired_before)
    missing = con.execute(
        f"SELECT run_id, count(*) FROM ({select}) src WHERE event_id NOT IN "
        f"(SELECT event_id FROM read_parquet({live}) WHERE run_id IN ({runs})) GROUP BY run_id"
    ).fetchall()
    unverified = {r[0] for r in missing}
    for run_id in sorted(unverified):
        _log.warning("ledger.stream_not_retired", run_id=run_id, reason="events missing from Parquet")
    retired: list[str] = []
    for key, source in sorted(candidates.items()):
        if source.run_id in unverified:
            continue
        if not location.retire_source(source, generation.streams[key].offset):
            continue  # something was appended since it was verified
        _log.info("ledger.stream_retired", run_id=source.run_id, path=source.path)
        retired.append(source.run_id)
        crash_point("during_retirement")
    return tuple(retired)


def _read_by(generation: Generation, key: str, size: int) -> bool:
    """Whether a reader of ``generation`` reads the stream ``key`` of ``size`` bytes (it does not cover it whole)."""
    state = generation.streams.get(key)
    return state is None or state.retired or state.offset != size


def retire_events(
    con: duckdb.DuckDBPyConnection,
    location: Location,
    attempt: Attempt,
    tmp: Path,
    ledger: Ledger,
    files: list[DataFile],
    cutoff: str,
) -> tuple[int, int, list[DataFile]]:
    """Remove events older than ``cutoff`` from ``files``, tombstoning each affected run first.

    Args:
        con: a connection that reads the location.
        location: where the compacted data is.
        attempt: the compaction attempt the rewritten files are published by.
        tmp: the compaction's local staging directory.
        ledger: the ledger the tombstones are appended to.
        files: the data files of the next generation so far.
        cutoff: ISO-8601 time in ledger format.

    Returns:
        Tombstones appended, events removed, and the new file list (not yet committed).
    """
    cutoff_date = cutoff[:10]
    touched = [f for f in files if f.date <= cutoff_date]
    if not touched:
        return 0, 0, files
    paths = [location.url(f.path) for f in touched]
    old = f"({parquet_select(paths)}) src WHERE timestamp < {quote(cutoff)}"
    summary = con.execute(
        f"SELECT run_id, count(*), min(timestamp), max(timestamp) FROM {old} GROUP BY run_id ORDER BY run_id"
    ).fetchall()
    if not summary:
        return 0, 0, files
    writers = con.execute(
        f"SELECT run_id, writer, min(seq), max(seq), count(*), arg_max(prev, seq) FROM {old} GROUP BY run_id, writer"
    ).fetchall()
    # The head (hash of the last removed line) of each writer is the ``prev`` of its first kept
    # line, when it has one; the seal of a removed run/finished event gives the rest.
    kept_prev = con.execute(
        f"SELECT run_id, writer, arg_min(prev, seq) FROM ({parquet_select(paths)}) k "
        f"WHERE timestamp >= {quote(cutoff)} GROUP BY run_id, writer"
    ).fetchall()
    seals = con.execute(f"SELECT run_id, attrs FROM {old} AND event_type = 'run' AND op = 'finished'").fetchall()
    heads: dict[tuple[str, str], str] = {(r, w): p for r, w, p in kept_prev}
    for run_id, attrs in seals:
        seal = orjson.loads(attrs or "{}").get("seal", {}).get("heads", {})
        for writer, head in seal.items():
            heads.setdefault((run_id, writer), head.get("head"))
    by_run: dict[str, dict[str, Any]] = {}
    for run_id, writer, first, last, count, _prev in writers:
        by_run.setdefault(run_id, {})[writer] = {
            "first_seq": int(first),
            "last_seq": int(last),
            "events": int(count),
            "head": heads.get((run_id, writer)),
        }
    done = _existing_tombstones(con, location, files, cutoff)
    tombstones = 0
    removed = 0
    for run_id, count, first_ts, last_ts in summary:
        removed += int(count)
        if run_id in done:
            continue
        ledger.append(
            {
                "event_type": "run",
                "op": "retired",
                "run_id": run_id,
                "attrs": {
                    "before": cutoff,
                    "events": int(count),
                    "first_timestamp": first_ts,
                    "last_timestamp": last_ts,
                    "writers": by_run.get(run_id, {}),
                },
            }
        )
        tombstones += 1
    ledger.flush()
    ledger.fsync_streams()
    crash_point("after_tombstones")
    # Rewrite the touched files without the retired events; whole old partitions just go.
    staging = tmp / f"retire-{uuid.uuid4().hex}"
    query = (
        f"SELECT {', '.join(duckdb_columns())}, substr(timestamp, 1, 10) AS date FROM ({parquet_select(paths)}) k "
        f"WHERE timestamp >= {quote(cutoff)} ORDER BY run_id, timestamp, event_id"
    )
    options = parquet_copy_options(partition_by_date=True, row_group_size=ROW_GROUP_SIZE)
    row = con.execute(f"COPY ({query}) TO {quote(str(staging))} {options}").fetchone()
    made = publish_staged(location, attempt, staging, int(row[0]) if row else 0)
    gone = {f.path for f in touched}
    return tombstones, removed, [f for f in files if f.path not in gone] + made


def _existing_tombstones(
    con: duckdb.DuckDBPyConnection, location: Location, files: list[DataFile], cutoff: str
) -> set[str]:
    """Runs that already have a tombstone for ``cutoff`` (a rerun after a crash adds none)."""
    sources = [parquet_select([location.url(f.path) for f in files])] if files else []
    streams = [source.path for source in location.live_sources()]
    if streams:
        sources.append(jsonl_select(streams))
    if not sources:
        return set()
    union = " UNION ALL ".join(f"({s})" for s in sources)
    rows = con.execute(
        f"SELECT DISTINCT run_id FROM ({union}) t WHERE event_type = 'run' AND op = 'retired' "
        f"AND json_extract_string(attrs, '$.before') = {quote(cutoff)}"
    ).fetchall()
    return {r[0] for r in rows}
