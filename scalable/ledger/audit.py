"""Audits: streams parse, chains hold, seals match, and stored bytes still match digests.

For every stream, each writer's lines must number ``seq`` 0, 1, 2, ... in file order and link
each line to the SHA-256 of the same writer's previous line (``prev``). A ``run/finished``
event seals the run: its ``attrs.seal.heads`` names every writer's last ``seq`` and the hash of
that line, and (with ``SCALABLE_LEDGER_KEY``) carries an HMAC over the heads. From these:

* an edited line breaks the next line's ``prev`` (or, for a writer's last line, the seal);
* a removed line leaves a ``seq`` gap (or, at the end, a seal that names a missing line);
* swapped lines of one writer put ``seq`` out of order;
* a line appended after the seal is reported as such (retention tombstones, ``run/retired``,
  and the verdicts of reruns, ``run/verified``, are appended later on purpose and are not);
* an editor who recomputes every chain and the seal is still caught when the seal is an HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from scalable.digests import measure_path, sha256_stream, stored_tree, tree_digest
from scalable.errors import ArtifactNotFoundError, LedgerError
from scalable.failures import failure_kind, storage_error
from scalable.ledger.events import AFTER_SEAL_OPS, GENESIS, decode_line, encode_line
from scalable.ledger.stream import RUN_SUMMARY, seal_digest, seal_line_problem
from scalable.ledger.views import connect
from scalable.logs import mask_secrets
from scalable.uris import is_remote, local_path, open_location

if TYPE_CHECKING:
    import duckdb

    from scalable.ledger.log import Ledger

__all__ = [
    "PARALLEL_BYTES",
    "AuditProgress",
    "AuditReport",
    "Problem",
    "StreamJob",
    "Tally",
    "audit_content",
    "audit_ledger",
    "audit_rows",
    "audit_stream",
    "audit_streams",
    "audit_structure",
    "check_stream_bytes",
    "event_seal",
    "hash_location",
    "latest_artifacts",
]


#: Called as an audit goes, with ``(phase, done, total)``. Phases, in order: ``streams`` (bytes
#: of the run streams read), ``compacted`` (runs checked from their compacted rows) and
#: ``artifacts`` (stored artifacts re-hashed). Each phase is reported from ``0`` to ``total``.
AuditProgress = Callable[[str, int, int], None]
#: Bytes of a stream read between two progress reports.
_PROGRESS_BYTES = 1 << 20
#: The columns the structural check reads from every line, in one call.
_LINE_FIELDS = operator.itemgetter("writer", "seq", "event_id", "prev", "run_id", "timestamp", "event_type", "op")
#: Failures of a content check that stop the audit (exit 2) instead of becoming a problem:
#: the store cannot be asked at all, so no answer about its artifacts would be true.
_ABORTS = frozenset({"credentials", "unreachable", "invalid"})


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing an audit found wrong: where (file:line, file: row, or URI), what, expected vs found.

    ``run_id`` is empty for a problem of the ledger as a whole (a compacted file, the record).
    """

    run_id: str
    where: str
    kind: str
    message: str
    expected: str | None = None
    found: str | None = None

    def __str__(self) -> str:
        detail = ""
        if self.expected is not None or self.found is not None:
            detail = f" (expected {self.expected}, found {self.found})"
        run = f"{self.run_id}: " if self.run_id else ""
        return f"{run}{self.where}: {self.kind}: {self.message}{detail}"


@dataclass
class AuditReport:
    """The result of an audit: ``ok`` when no problem was found."""

    problems: list[Problem] = field(default_factory=list)
    runs: int = 0
    events: int = 0
    artifacts: int = 0

    @property
    def ok(self) -> bool:
        """True when every check held."""
        return not self.problems

    def by_kind(self) -> dict[str, int]:
        """How many problems of each kind were found, most frequent first (then by name)."""
        counts: dict[str, int] = {}
        for p in self.problems:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def summary(self) -> str:
        """One line: ``audit ok`` or ``audit FAILED`` with the problems by kind, and what was checked."""
        checked = f"{self.runs} run(s), {self.events} event(s), {self.artifacts} artifact(s) checked"
        if self.ok:
            return f"audit ok: {checked}"
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.by_kind().items())
        return f"audit FAILED: {len(self.problems)} problem(s) ({kinds}); {checked}"

    def extend(self, other: AuditReport) -> None:
        """Add another report's problems and counts to this one."""
        self.problems.extend(other.problems)
        self.runs += other.runs
        self.events += other.events
        self.artifacts += other.artifacts

    def to_dict(self) -> dict[str, Any]:
        """Return the report as plain data (for ``--format json``)."""
        return {
            "ok": self.ok,
            "runs": self.runs,
            "events": self.events,
            "artifacts": self.artifacts,
            "by_kind": self.by_kind(),
            "problems": [
                {
                    "run_id": p.run_id,
                    "where": p.where,
                    "kind": p.kind,
                    "message": p.message,
                    "expected": p.expected,
                    "found": p.found,
                }
                for p in self.problems
            ],
        }


@dataclass
class Tally:
    """What a compacted copy of a stream must hold: the number of events and a digest of their lines.

    The digest is the sum of the first 128 bits of each line's SHA-256 (a multiset digest:
    the order of the rows does not matter, a changed, missing or extra row does), so the
    stream and the Parquet rows are compared run by run without holding either in memory.
    """

    count: int = 0
    digest: int = 0

    def add(self, digest: str) -> None:
        """Count one line by its SHA-256 hex ``digest``."""
        self.count += 1
        self.digest += int(digest[:32], 16)


def audit_stream(
    path: Path,
    run_id: str,
    *,
    key: bytes | None = None,
    covered: int | None = None,
    retired_before: str | None = None,
    tally: Tally | None = None,
    progress: Callable[[int], None] | None = None,
) -> AuditReport:
    """Check one run's stream: parsing, per-writer chains, run ids, the seal, ``run.json``.

    Args:
        path: the stream file.
        run_id: the run the stream belongs to.
        key: ``SCALABLE_LEDGER_KEY``; when given, a seal without a valid HMAC is a problem.
        covered: bytes of the stream a generation covers; with ``tally``, the lines starting
            before it (and not retired by retention, each event once) are counted there.
        retired_before: the retention cutoff of that generation.
        tally: where the covered lines are counted.
        progress: called with the number of bytes checked since its last call, about every
            megabyte and once at the end.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    report = check_stream_bytes(
        data,
        run_id,
        lambda number, _offset: f"{path}:{number}",
        f"{path}:end",
        key=key,
        covered=covered,
        retired_before=retired_before,
        tally=tally,
        progress=progress,
    )
    _check_summary(run_id, path, data, report.problems)
    return report


@dataclass(frozen=True, slots=True)
class StreamJob:
    """One stream to audit: where, whose, how large, and how much of it a generation covers."""

    path: str
    run_id: str
    size: int
    covered: int | None
    retired_before: str | None


#: Streams of at least this many bytes in all are audited by worker processes, one a core.
PARALLEL_BYTES = 64 * 1024 * 1024


def audit_streams(
    jobs: Sequence[StreamJob], key: bytes | None, progress: AuditProgress | None = None
) -> Callable[[], list[tuple[AuditReport, Tally | None]]]:
    """Start auditing the streams of ``jobs`` (see :func:`audit_stream`); return what waits for the results.

    Each covered stream is counted in a tally. Many bytes of streams are audited by worker
    processes, one per core (each line is parsed and hashed in Python, so one process would use
    one core), forked now, while this process has no other thread; the results come back in
    the order of ``jobs``. Otherwise they are audited here, when the results are asked for.
    ``progress`` is called with ``("streams", bytes checked, bytes in all)`` while the results
    are waited for: as each megabyte is checked here, or as each worker's share is done.
    """
    total = sum(job.size for job in jobs)
    done = 0

    def advance(nbytes: int) -> None:
        nonlocal done
        done = min(total, done + nbytes)
        if progress is not None:
            progress("streams", done, total)

    def finish() -> None:
        if progress is not None and done < total:  # a stream with a torn tail, or that shrank
            progress("streams", total, total)

    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or threading.active_count() > 1 or total < PARALLEL_BYTES:

        def here() -> list[tuple[AuditReport, Tally | None]]:
            if progress is not None:
                progress("streams", 0, total)
            out = _audit_jobs(jobs, key, advance if progress is not None else None)
            finish()
            return out

        return here
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunks: list[list[StreamJob]] = [[] for _ in range(workers * 4)]
    sizes = [0] * len(chunks)
    for job in sorted(jobs, key=lambda j: -j.size):  # the largest first, each to the lightest chunk
        lightest = sizes.index(min(sizes))
        chunks[lightest].append(job)
        sizes[lightest] += job.size
    chunks = [c for c in chunks if c]
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    futures = {pool.submit(_audit_jobs, chunk, key): chunk for chunk in chunks}

    def results() -> list[tuple[AuditReport, Tally | None]]:
        from concurrent.futures import as_completed

        if progress is not None:
            progress("streams", 0, total)
        found: dict[tuple[str, str], tuple[AuditReport, Tally | None]] = {}
        with pool:
            for future in as_completed(futures):
                chunk = futures[future]
                found.update(
                    ((job.run_id, job.path), result) for job, result in zip(chunk, future.result(), strict=True)
                )
                advance(sum(job.size for job in chunk))
        finish()
        return [found[(job.run_id, job.path)] for job in jobs]

    return results


def _audit_jobs(
    jobs: Sequence[StreamJob], key: bytes | None, progress: Callable[[int], None] | None = None
) -> list[tuple[AuditReport, Tally | None]]:
    out: list[tuple[AuditReport, Tally | None]] = []
    for job in jobs:
        tally = Tally() if job.covered is not None else None
        report = audit_stream(
            Path(job.path),
            job.run_id,
            key=key,
            covered=job.covered,
            retired_before=job.retired_before,
            tally=tally,
            progress=progress,
        )
        out.append((report, tally))
    return out


def check_stream_bytes(
    data: bytes,
    run_id: str,
    where: Callable[[int, int], str],
    end: str,
    *,
    key: bytes | None = None,
    covered: int | None = None,
    retired_before: str | None = None,
    tally: Tally | None = None,
    progress: Callable[[int], None] | None = None,
) -> AuditReport:
    """Check the bytes of one run's stream (a file, or the segments of one machine put together).

    Args:
        data: the stream's bytes.
        run_id: the run the stream belongs to.
        where: names a line in problems, from its 1-based number and byte offset.
        end: names the end of the stream in problems.
        key: ``SCALABLE_LEDGER_KEY``; when given, the seal must carry a valid HMAC.
        covered: see :func:`audit_stream`.
        retired_before: see :func:`audit_stream`.
        tally: see :func:`audit_stream`.
        progress: see :func:`audit_stream`.
    """
    report = AuditReport(runs=1)
    problems = report.problems
    last: dict[str, tuple[int, str, int]] = {}  # writer -> (seq, line hash, line number)
    seen_ids: dict[str, int] = {}
    seal: dict[str, Any] | None = None
    seal_at: tuple[int, int, bytes] | None = None  # line number, offset, raw line
    sealed_positions: dict[str, tuple[int, str, int]] = {}
    events = 0
    sha256 = hashlib.sha256
    loads = orjson.loads
    from_bytes = int.from_bytes
    limit = covered if tally is not None and covered is not None else -1
    count = total = 0
    lines = data.split(b"\n")
    incomplete = bool(lines.pop())  # a last line without its newline is still being written
    offset = reported = 0
    # One comparison a line: without a callback the next report is past the end.
    report_at = _PROGRESS_BYTES if progress is not None else len(data) + 1
    fields = _LINE_FIELDS
    for number, raw in enumerate(lines, start=1):
        start = offset
        offset += len(raw) + 1
        if offset >= report_at and progress is not None:
            progress(offset - reported)
            reported = offset
            report_at = offset + _PROGRESS_BYTES
        if not raw:
            continue
        # The common line decodes with orjson alone; anything unusual goes through decode_line,
        # which folds unknown columns and says what is wrong with a malformed line.
        try:
            event = loads(raw)
            writer, seq, event_id, prev, event_run, timestamp, kind, op = fields(event)
            if type(seq) is not int or not (
                type(writer)
                is type(event_id)
                is type(prev)
                is type(event_run)
                is type(timestamp)
                is type(kind)
                is type(op)
                is str
            ):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            try:
                event = decode_line(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                problems.append(Problem(run_id, where(number, start), "malformed-line", f"malformed line: {exc}"))
                continue
            writer, seq, event_id, prev, event_run, timestamp, kind, op = fields(event)
        events += 1
        hashed = sha256(raw).digest()
        digest = hashed.hex()
        prior = last.get(writer)
        last[writer] = (seq, digest, number)
        seen = event_id in seen_ids
        want_seq, want_prev = (0, GENESIS) if prior is None else (prior[0] + 1, prior[1])
        late = seal is not None and not (op in AFTER_SEAL_OPS and kind == "run")
        if seq != want_seq or prev != want_prev or seen or late or event_run != run_id:
            sealed_at = seal_at[0] if seal_at else 0
            before = where(prior[2], -1) if prior is not None else None
            _line_problems(
                run_id, where(number, start), event, seen_ids, want_seq, want_prev, sealed_at, late, problems, before
            )
        if start < limit and not seen and (retired_before is None or timestamp >= retired_before):
            count += 1
            total += from_bytes(hashed[:16])  # the first 128 bits of the line's SHA-256, as Tally counts
        if not seen:
            seen_ids[event_id] = number
        if seal is None and op == "finished" and kind == "run":
            seal = _seal_of(event, run_id, where(number, start), problems)
            seal_at = (number, start, raw)
            sealed_positions = {w: v for w, v in last.items() if w != writer}
            # The sealing writer's own chain up to its previous line is what it sealed.
            if prior is not None:
                sealed_positions[writer] = prior
    if tally is not None:
        tally.count += count
        tally.digest += total
    if progress is not None and len(data) > reported:
        progress(len(data) - reported)
    report.events = events
    if incomplete and seal is not None:
        problems.append(Problem(run_id, end, "truncated", "stream ends in an incomplete line after the seal"))
    if seal is not None and seal_at is not None:
        number, offset, raw = seal_at
        here = where(number, offset)
        _check_seal(run_id, here, seal, sealed_positions, key, problems)
        if seal.get("version", 1) >= 2:
            if sha256(data[:offset]).hexdigest() != seal.get("stream"):
                problems.append(
                    Problem(
                        run_id,
                        here,
                        "seal-mismatch",
                        "the bytes before the seal are not those sealed (a line edited, removed, inserted or moved)",
                        expected=str(seal.get("stream"))[:12],
                        found=sha256(data[:offset]).hexdigest()[:12],
                    )
                )
            failed = seal_line_problem(raw, seal, key)
            if failed is not None:
                problems.append(Problem(run_id, here, failed[0], failed[1]))
    return report


def audit_rows(
    run_id: str,
    rows: Sequence[Mapping[str, Any]],
    where: str,
    *,
    key: bytes | None = None,
    places: Sequence[str] | None = None,
) -> AuditReport:
    """Check a run from its compacted rows (its stream was retired): chains, tombstones, seal.

    Each row is re-encoded to its exact line (lines have one canonical form), so ``prev``
    chains and seal heads verify as they do on the stream. A ``run/retired`` tombstone stands
    for the events retention removed: per writer it gives the last removed ``seq`` and the
    hash of that line, where the writer's remaining rows must continue.

    Args:
        run_id: the run.
        rows: every event of the run (any order).
        where: how problems name the place (the dataset and run).
        key: ``SCALABLE_LEDGER_KEY``; when given, the seal must be a valid HMAC.
        places: how problems name each row (its file and row number), in the order of ``rows``.
    """
    report = AuditReport(runs=1, events=len(rows))
    problems = report.problems
    tombstoned: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["event_type"] == "run" and row["op"] == "retired":
            writers = (_json_object(row.get("attrs")) or {}).get("writers")
            for writer, info in writers.items() if isinstance(writers, dict) else ():
                if not isinstance(info, dict) or type(info.get("last_seq")) is not int:
                    continue  # an edited tombstone accounts for nothing (its own row's chain breaks)
                known = tombstoned.get(writer)
                if known is None or info.get("last_seq", -1) > known.get("last_seq", -1):
                    tombstoned[writer] = info
    by_writer: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for index in sorted(range(len(rows)), key=lambda i: (rows[i]["writer"], rows[i]["seq"])):
        row = rows[index]
        here = places[index] if places is not None else f"{where}: writer {row['writer']} seq {row['seq']}"
        by_writer.setdefault(row["writer"], []).append((here, row))
    spot: dict[tuple[str, int], str] = {}
    hashes: dict[tuple[str, int], str] = {}
    seal: dict[str, Any] | None = None
    sealer: tuple[str, int] | None = None
    seal_row: Mapping[str, Any] = {}
    for writer, chain in by_writer.items():
        gone = tombstoned.get(writer)
        want_seq, want_prev = (0, GENESIS)
        if gone is not None and gone.get("first_seq") == 0 and gone.get("head"):
            want_seq, want_prev = int(gone["last_seq"]) + 1, str(gone["head"])
        for here, row in chain:
            digest = hashlib.sha256(encode_line(row)[:-1]).hexdigest()
            hashes[(writer, row["seq"])] = digest
            spot.setdefault((writer, row["seq"]), here)
            if row["seq"] != want_seq:
                problems.append(
                    Problem(
                        run_id,
                        here,
                        "seq-gap" if row["seq"] > want_seq else "seq-order",
                        f"writer {writer} sequence broken (not accounted for by a tombstone)",
                        expected=str(want_seq),
                        found=str(row["seq"]),
                    )
                )
            elif row["prev"] != want_prev:
                before = spot.get((writer, row["seq"] - 1))
                problems.append(
                    Problem(
                        run_id,
                        here,
                        "chain-broken",
                        f"writer {writer}: prev does not hash the writer's previous event"
                        + (f", {before} (edited, or a row removed)" if before else ""),
                        expected=want_prev,
                        found=row["prev"],
                    )
                )
            want_seq, want_prev = row["seq"] + 1, digest
            if row["event_type"] == "run" and row["op"] == "finished" and seal is None:
                seal = _seal_of(row, run_id, here, problems)
                sealer = (writer, row["seq"])
                seal_row = row
    if seal is not None and sealer is not None:
        heads: dict[str, Any] = seal.get("heads") or {}
        sealed_at = spot.get(sealer, f"{where}: seal")
        if seal.get("version", 1) >= 2:
            failed = seal_line_problem(encode_line(seal_row)[:-1], seal, key)
            if failed is not None:
                problems.append(Problem(run_id, sealed_at, failed[0], failed[1]))
        for writer, head in heads.items():
            found = hashes.get((writer, head.get("seq")))
            gone = tombstoned.get(writer)
            if found is None and gone is not None and head.get("seq", -1) <= gone.get("last_seq", -1):
                continue  # the sealed line itself was retired; the tombstone accounts for it
            if found != head.get("head"):
                problems.append(
                    Problem(
                        run_id,
                        sealed_at,
                        "seal-mismatch",
                        f"writer {writer}'s sealed head does not match its events",
                        expected=f"seq {head.get('seq')} {str(head.get('head'))[:12]}",
                        found=f"{found[:12]}" if found else "missing",
                    )
                )
        for writer, chain in by_writer.items():
            limit = heads.get(writer, {}).get("seq", -1) if writer != sealer[0] else sealer[1]
            late = [
                (h, r)
                for h, r in chain
                if r["seq"] > limit and not (r["event_type"] == "run" and r["op"] in AFTER_SEAL_OPS)
            ]
            if late:
                problems.append(
                    Problem(
                        run_id,
                        late[0][0],
                        "after-seal",
                        f"{len(late)} event(s) of writer {writer} are not covered by the seal",
                    )
                )
        if key and seal.get("version", 1) < 2:
            expected = seal_digest(run_id, heads, key)
            if not hmac.compare_digest(str(seal.get("hmac", "")), str(expected)):
                problems.append(
                    Problem(run_id, sealed_at, "seal-forged", "seal HMAC does not verify under SCALABLE_LEDGER_KEY")
                )
    return report


def _json_object(text: object) -> dict[str, Any] | None:
    """``text`` (an event's ``attrs``) parsed, if it is a JSON object (None or empty: ``{}``); else None."""
    if not text:
        return {}
    try:
        value = orjson.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def event_seal(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The seal a ``run/finished`` event carries in its ``attrs`` (``{}`` if none); None if they hold no readable one.

    A readable seal is a JSON object whose ``heads`` (if any) map each writer to an object with an integer ``seq``.
    """
    attrs = _json_object(event.get("attrs"))
    seal = (attrs or {}).get("seal") or {}
    if attrs is None or not isinstance(seal, dict):
        return None
    heads = seal.get("heads") or {}
    if not isinstance(heads, dict) or any(type(h) is not dict or type(h.get("seq")) is not int for h in heads.values()):
        return None
    return seal


def _seal_of(event: Mapping[str, Any], run_id: str, where: str, problems: list[Problem]) -> dict[str, Any]:
    """:func:`event_seal`, where attrs that hold no readable seal are a problem (and no seal)."""
    seal = event_seal(event)
    if seal is None:
        problems.append(
            Problem(
                run_id, where, "seal-mismatch", "the sealing event's attrs hold no readable seal (the line was edited)"
            )
        )
        return {}
    return seal


def _line_problems(
    run_id: str,
    where: str,
    event: dict[str, Any],
    seen_ids: dict[str, int],
    want_seq: int,
    want_prev: str,
    seal_line: int,
    sealed: bool,
    problems: list[Problem],
    before: str | None = None,
) -> None:
    """Name what is wrong with one line (the fast path only found that something is).

    ``before`` names the writer's previous line, which a broken link may point at.
    """
    writer, seq, event_id = event["writer"], event["seq"], event["event_id"]
    if event["run_id"] != run_id:
        problems.append(
            Problem(
                run_id,
                where,
                "foreign-event",
                "event of another run in this stream",
                expected=run_id,
                found=event["run_id"],
            )
        )
    if event_id in seen_ids:
        problems.append(
            Problem(run_id, where, "duplicate-event", f"event {event_id} already at line {seen_ids[event_id]}")
        )
    if seq != want_seq:
        problems.append(
            Problem(
                run_id,
                where,
                "seq-gap" if seq > want_seq else "seq-order",
                f"writer {writer} sequence broken",
                expected=str(want_seq),
                found=str(seq),
            )
        )
    elif event["prev"] != want_prev:
        problems.append(
            Problem(
                run_id,
                where,
                "chain-broken",
                f"writer {writer}: prev does not hash the writer's previous line"
                + (f", {before} (edited, or a line removed)" if before else " (edited or removed)"),
                expected=want_prev,
                found=event["prev"],
            )
        )
    if sealed:
        problems.append(
            Problem(run_id, where, "after-seal", f"event appended after the run was sealed at line {seal_line}")
        )


def _check_summary(run_id: str, path: Path, data: bytes, problems: list[Problem]) -> None:
    """Compare the stream with ``run.json`` as the seal wrote it (an open run's has no sealed length yet)."""
    summary_path = path.with_name(RUN_SUMMARY)
    try:
        summary = orjson.loads(summary_path.read_bytes())
    except FileNotFoundError:
        return
    except ValueError:
        problems.append(Problem(run_id, str(summary_path), "malformed-summary", "run.json does not parse"))
        return
    if not isinstance(summary, dict):
        problems.append(Problem(run_id, str(summary_path), "malformed-summary", "run.json is not a JSON object"))
        return
    size = len(data)
    recorded = summary.get("stream_bytes")
    if isinstance(recorded, int) and size < recorded:
        problems.append(
            Problem(
                run_id,
                f"{path}:end",
                "truncated",
                f"stream is {size} bytes but was {recorded} bytes when sealed",
                expected=str(recorded),
                found=str(size),
            )
        )
        return
    if "stream_bytes" not in summary:
        return  # the run.json of a run still open
    sealed = seal_line_of(data)
    if sealed is None:
        # The seal was the last line of the bytes run.json counts.
        lines = data[:recorded].count(b"\n") if isinstance(recorded, int) else 0
        where = f"{path}:{lines}" if lines else str(path)
        problems.append(
            Problem(
                run_id,
                where,
                "seal-mismatch",
                "run.json says the run was sealed by this line, but the stream has no run/finished event any more",
            )
        )
        return
    number, raw = sealed
    recorded_seal = summary.get("seal_sha256")
    found = hashlib.sha256(raw).hexdigest()
    if isinstance(recorded_seal, str) and recorded_seal != found:
        problems.append(
            Problem(
                run_id,
                f"{path}:{number}",
                "seal-mismatch",
                f"the sealing line differs from the one {RUN_SUMMARY} recorded when the run was sealed",
                expected=recorded_seal[:12],
                found=found[:12],
            )
        )


def seal_line_of(data: bytes) -> tuple[int, bytes] | None:
    """The 1-based number and bytes of the first ``run/finished`` line of a stream's ``data`` (None if unsealed)."""
    number = 0
    for raw in data.split(b"\n")[:-1]:
        number += 1
        if b'"op":"finished"' not in raw or b'"event_type":"run"' not in raw:
            continue
        try:
            event = decode_line(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if event["event_type"] == "run" and event["op"] == "finished":
            return number, raw
    return None


def _check_seal(
    run_id: str,
    where: str,
    seal: dict[str, Any],
    positions: dict[str, tuple[int, str, int]],
    key: bytes | None,
    problems: list[Problem],
) -> None:
    """Check a seal's heads against the lines before it, and a version-1 seal's HMAC."""
    heads: dict[str, Any] = seal.get("heads") or {}
    for writer, head in heads.items():
        found = positions.get(writer)
        if found is None:
            problems.append(
                Problem(run_id, where, "seal-mismatch", f"sealed writer {writer} has no lines before the seal")
            )
        elif found[0] != head.get("seq") or found[1] != head.get("head"):
            problems.append(
                Problem(
                    run_id,
                    where,
                    "seal-mismatch",
                    f"writer {writer}'s last line before the seal differs from the sealed head (line removed, edited or truncated)",
                    expected=f"seq {head.get('seq')} {str(head.get('head'))[:12]}",
                    found=f"seq {found[0]} {found[1][:12]}",
                )
            )
    for writer in positions.keys() - heads.keys():
        problems.append(
            Problem(run_id, where, "seal-mismatch", f"writer {writer} wrote before the seal but is not sealed")
        )
    if key and seal.get("version", 1) < 2:
        expected = seal_digest(run_id, heads, key)
        if not hmac.compare_digest(str(seal.get("hmac", "")), str(expected)):
            problems.append(
                Problem(run_id, where, "seal-forged", "seal HMAC does not verify under SCALABLE_LEDGER_KEY")
            )


_LATEST_ARTIFACTS = """
SELECT location, digest, run_id, kind FROM (
  SELECT location, digest, run_id, op, kind,
         row_number() OVER (PARTITION BY location ORDER BY timestamp DESC, event_id DESC) AS rn
    FROM artifacts WHERE op IN ('put', 'recorded', 'deleted') AND location IS NOT NULL)
 WHERE rn = 1 AND op <> 'deleted' AND digest IS NOT NULL {run_filter}
 ORDER BY location
"""


def latest_artifacts(
    con: duckdb.DuckDBPyConnection, run_id: str | None = None
) -> list[tuple[str, str, str, str | None]]:
    """Return ``(location, digest, run_id, kind)`` of the latest artifact at each location.

    A location whose latest event is ``artifact/deleted`` is left out: it is meant to be gone.
    """
    run_filter = "AND run_id = $1" if run_id is not None else ""
    params = [run_id] if run_id is not None else []
    return [tuple(r) for r in con.execute(_LATEST_ARTIFACTS.format(run_filter=run_filter), params).fetchall()]


def hash_location(location: str, storage_options: Mapping[str, Mapping[str, Any]] | None = None) -> str | None:
    """Return the SHA-256 (files) or tree digest (directories) at ``location``; None if absent.

    A local location is measured as sessions and stores measure it (:func:`scalable.digests.measure_path`,
    with its rule for links); elsewhere the stored objects under a directory's prefix are its files.
    """
    if not is_remote(location):
        local = local_path(location)
        if not os.path.lexists(local):
            return None
        try:
            return measure_path(local).digest
        except ArtifactNotFoundError:
            return None
    fs, path = open_location(location, storage_options)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    if info.get("type") == "directory":
        root = path.rstrip("/")
        files = []
        for rel, name in stored_tree(fs, root):
            with fs.open(name, "rb") as fh:
                files.append((rel, sha256_stream(fh)[0]))
        if not files and not fs.exists(root):
            return None
        return tree_digest(files)
    with fs.open(path, "rb") as fh:
        return sha256_stream(fh)[0]


def audit_content(
    items: Sequence[tuple[str, str, str, str | None]],
    *,
    storage_options: Mapping[str, Mapping[str, Any]] | None = None,
    workers: int = 8,
    progress: AuditProgress | None = None,
) -> AuditReport:
    """Re-hash every artifact at its location (in parallel) and compare with its digest.

    ``progress`` is called with ``("artifacts", checked, in all)``, from 0, as checks complete.
    """
    report = AuditReport(artifacts=len(items))
    if progress is not None:
        progress("artifacts", 0, len(items))

    def check(item: tuple[str, str, str, str | None]) -> Problem | None:
        location, digest, run_id, _kind = item
        try:
            found = hash_location(location, storage_options)
        except Exception as exc:
            kind = failure_kind(exc)
            if kind in _ABORTS:  # nothing of that store can be checked: say so, do not list every artifact
                raise storage_error(exc, location, action="read") from exc
            if kind == "store-missing":
                found = None
            else:
                return Problem(
                    run_id, location, "content-unreadable", f"cannot read the stored bytes: {mask_secrets(str(exc))}"
                )
        if found is None:
            return Problem(
                run_id,
                location,
                "content-missing",
                "the artifact is no longer at its location",
                expected=digest,
                found="nothing",
            )
        if found != digest:
            return Problem(
                run_id,
                location,
                "content-changed",
                "stored bytes no longer hash to the recorded digest",
                expected=digest,
                found=found,
            )
        return None

    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        for done, problem in enumerate(pool.map(check, items), start=1):
            if problem is not None:
                report.problems.append(problem)
            if progress is not None:
                progress("artifacts", done, len(items))
    except BaseException:
        pool.shutdown(cancel_futures=True)  # a store that cannot be asked: do not try every other artifact
        raise
    pool.shutdown()
    return report


def audit_structure(ledger: Ledger, run_id: str | None = None, *, progress: AuditProgress | None = None) -> AuditReport:
    """Check every copy of every event the ledger knows of (one run, or all), without the stored artifacts.

    * Every stream here: lines parse, chains hold, the seal matches (its heads, the bytes
      before it and its own line; an HMAC with ``SCALABLE_LEDGER_KEY``), ``run.json`` agrees.
    * Every remote segment, each machine's segments of a run put together as a stream.
    * Every compacted row (see :mod:`scalable.ledger.copies`): against the stream lines it was
      made from, or, where those are gone, against its own chains and seal; and every
      compacted file, named by the generation or not.
    * The record itself (``generation-missing``, ``generation-unreadable``), and every run
      known of (streams, summaries, generations, rows, segments) whose events are nowhere
      (``events-missing``).

    Args:
        ledger: the ledger.
        run_id: only this run.
        progress: called as the phases ``streams`` and ``compacted`` go (see :data:`AuditProgress`).

    Raises:
        EventValidationError: ``run_id`` is not a valid run id.
        RunNotFoundError: ``run_id`` is known nowhere.
    """
    from scalable.ledger.copies import check_ledger

    return check_ledger(ledger, run_id, progress=progress)


def audit_ledger(
    ledger: Ledger,
    run_id: str | None = None,
    *,
    content: bool = True,
    storage_options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: AuditProgress | None = None,
) -> AuditReport:
    """Audit one run or the whole ledger: its structure, and (``content``) the stored bytes.

    Args:
        ledger: the ledger.
        run_id: audit only this run.
        content: re-hash the latest artifact at every location against its recorded digest.
        storage_options: per-protocol fsspec options (e.g. ``{"s3": {...}}``) for reading.
        progress: called as the audit goes, phase by phase (see :data:`AuditProgress`).

    Raises:
        RunNotFoundError: ``run_id`` has no events.
    """
    report = audit_structure(ledger, run_id, progress=progress)
    if content:
        try:
            con = connect(ledger, trusted=True)
        except LedgerError:
            return report  # the record cannot be read: a problem of the report already
        try:
            items = latest_artifacts(con, run_id)
        finally:
            con.close()
        report.extend(audit_content(items, storage_options=storage_options, progress=progress))
    return report
