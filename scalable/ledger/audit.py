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
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scalable.digests import measure_path, sha256_stream, tree_digest
from scalable.errors import ArtifactNotFoundError, RunNotFoundError
from scalable.failures import failure_kind, storage_error
from scalable.ledger import bus
from scalable.ledger.events import AFTER_SEAL_OPS, GENESIS, encode_line
from scalable.ledger.generations import EVENTS_DIR, read_generation
from scalable.ledger.location import Location, ObjectLocation
from scalable.ledger.segments import ShippedStream, machine_id, shipped_streams
from scalable.ledger.stream import RUN_SUMMARY, read_stream, seal_digest
from scalable.ledger.views import connect
from scalable.logs import mask_secrets
from scalable.uris import is_remote, local_path, open_location

if TYPE_CHECKING:
    import duckdb

    from scalable.ledger.log import Ledger

__all__ = [
    "AuditProgress",
    "AuditReport",
    "Problem",
    "audit_content",
    "audit_ledger",
    "audit_rows",
    "audit_stream",
    "audit_streams",
    "audit_structure",
    "hash_location",
    "latest_artifacts",
]


#: Called as an audit goes, with ``(phase, done, total)``. Phases, in order: ``streams`` (bytes
#: of the run streams read), ``compacted`` (runs checked from their compacted rows) and
#: ``artifacts`` (stored artifacts re-hashed). Each phase is reported from ``0`` to ``total``.
AuditProgress = Callable[[str, int, int], None]
#: Bytes of a stream read between two progress reports.
_PROGRESS_BYTES = 1 << 20
#: Failures of a content check that stop the audit (exit 2) instead of becoming a problem:
#: the store cannot be asked at all, so no answer about its artifacts would be true.
_ABORTS = frozenset({"credentials", "unreachable", "invalid"})


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing an audit found wrong: where (file:line or URI), what, expected vs found."""

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
        return f"{self.run_id}: {self.where}: {self.kind}: {self.message}{detail}"


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


def audit_stream(
    path: Path,
    run_id: str,
    *,
    key: bytes | None = None,
    data: bytes | None = None,
    where: Callable[[int], str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> AuditReport:
    """Check one run's stream: parsing, per-writer chains, run ids, the seal.

    Args:
        path: the stream file.
        run_id: the run the stream belongs to.
        key: ``SCALABLE_LEDGER_KEY``; when given, a seal without a valid HMAC is a problem.
        data: the stream's bytes, when they were read elsewhere (segments on object
            storage); ``path`` then only names it, and there is no ``run.json`` beside it.
        where: names line N in problems (``path:N`` when omitted).
        progress: called with the number of bytes read since its last call, about every
            megabyte and once at the end.
    """
    report = AuditReport(runs=1)
    problems = report.problems
    reader = read_stream(path)
    reader.data = data
    at = where or (lambda number: f"{path}:{number}")
    last: dict[str, tuple[int, str, int]] = {}  # writer -> (seq, line hash, line number)
    seen_ids: dict[str, int] = {}
    seal: dict[str, Any] | None = None
    seal_line = 0
    sealed_positions: dict[str, tuple[int, str, int]] = {}
    events = 0
    unreported = 0
    sha256 = hashlib.sha256
    for number, raw, event in reader.lines():
        events += 1
        if progress is not None:
            unreported += len(raw) + 1
            if unreported >= _PROGRESS_BYTES:
                progress(unreported)
                unreported = 0
        writer = event["writer"]
        seq = event["seq"]
        digest = sha256(raw).hexdigest()
        event_id = event["event_id"]
        prior = last.get(writer)
        want_seq, want_prev = (0, GENESIS) if prior is None else (prior[0] + 1, prior[1])
        last[writer] = (seq, digest, number)
        late = seal is not None and not (event["op"] in AFTER_SEAL_OPS and event["event_type"] == "run")
        if event["run_id"] != run_id or event_id in seen_ids or seq != want_seq or event["prev"] != want_prev or late:
            _line_problems(run_id, at(number), event, seen_ids, want_seq, want_prev, seal_line, late, problems)
        seen_ids.setdefault(event_id, number)
        if seal is None and event["op"] == "finished" and event["event_type"] == "run":
            attrs = json.loads(event.get("attrs") or "{}")
            seal = attrs.get("seal") or {}
            seal_line = number
            sealed_positions = {w: v for w, v in last.items() if w != writer}
            # The sealing writer's own chain up to its previous line is what it sealed.
            if prior is not None:
                sealed_positions[writer] = prior
    report.events = events
    if progress is not None and unreported:
        progress(unreported)
    for problem in reader.problems:
        problems.append(Problem(run_id, at(problem.line), "malformed-line", problem.reason))
    if reader.incomplete_tail and seal is not None:
        problems.append(Problem(run_id, f"{path}:end", "truncated", "stream ends in an incomplete line after the seal"))
    if seal is not None:
        _check_seal(run_id, at(seal_line), seal, sealed_positions, key, problems)
    if data is None:
        _check_summary(run_id, path, seal is not None, problems)
    return report


def audit_rows(run_id: str, rows: Sequence[Mapping[str, Any]], where: str, *, key: bytes | None = None) -> AuditReport:
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
    """
    report = AuditReport(runs=1, events=len(rows))
    problems = report.problems
    tombstoned: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["event_type"] == "run" and row["op"] == "retired":
            for writer, info in (json.loads(row.get("attrs") or "{}").get("writers") or {}).items():
                known = tombstoned.get(writer)
                if known is None or info.get("last_seq", -1) > known.get("last_seq", -1):
                    tombstoned[writer] = info
    by_writer: dict[str, list[Mapping[str, Any]]] = {}
    for row in sorted(rows, key=lambda r: (r["writer"], r["seq"])):
        by_writer.setdefault(row["writer"], []).append(row)
    hashes: dict[tuple[str, int], str] = {}
    seal: dict[str, Any] | None = None
    sealer: tuple[str, int] | None = None
    for writer, chain in by_writer.items():
        gone = tombstoned.get(writer)
        want_seq, want_prev = (0, GENESIS)
        if gone is not None and gone.get("first_seq") == 0 and gone.get("head"):
            want_seq, want_prev = int(gone["last_seq"]) + 1, str(gone["head"])
        for row in chain:
            here = f"{where}: writer {writer} seq {row['seq']}"
            digest = hashlib.sha256(encode_line(row)[:-1]).hexdigest()
            hashes[(writer, row["seq"])] = digest
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
                problems.append(
                    Problem(
                        run_id,
                        here,
                        "chain-broken",
                        f"writer {writer}: prev does not hash the writer's previous event",
                        expected=want_prev,
                        found=row["prev"],
                    )
                )
            want_seq, want_prev = row["seq"] + 1, digest
            if row["event_type"] == "run" and row["op"] == "finished" and seal is None:
                seal = json.loads(row.get("attrs") or "{}").get("seal") or {}
                sealer = (writer, row["seq"])
    if seal is not None and sealer is not None:
        heads: dict[str, Any] = seal.get("heads") or {}
        for writer, head in heads.items():
            found = hashes.get((writer, head.get("seq")))
            gone = tombstoned.get(writer)
            if found is None and gone is not None and head.get("seq", -1) <= gone.get("last_seq", -1):
                continue  # the sealed line itself was retired; the tombstone accounts for it
            if found != head.get("head"):
                problems.append(
                    Problem(
                        run_id,
                        f"{where}: seal",
                        "seal-mismatch",
                        f"writer {writer}'s sealed head does not match its events",
                        expected=f"seq {head.get('seq')} {str(head.get('head'))[:12]}",
                        found=f"{found[:12]}" if found else "missing",
                    )
                )
        for writer, chain in by_writer.items():
            limit = heads.get(writer, {}).get("seq", -1) if writer != sealer[0] else sealer[1]
            late = [
                r for r in chain if r["seq"] > limit and not (r["event_type"] == "run" and r["op"] in AFTER_SEAL_OPS)
            ]
            if late:
                problems.append(
                    Problem(
                        run_id,
                        f"{where}: writer {writer} seq {late[0]['seq']}",
                        "after-seal",
                        f"{len(late)} event(s) of writer {writer} are not covered by the seal",
                    )
                )
        if key:
            expected = seal_digest(run_id, heads, key)
            if not hmac.compare_digest(str(seal.get("hmac", "")), str(expected)):
                problems.append(
                    Problem(
                        run_id, f"{where}: seal", "seal-forged", "seal HMAC does not verify under SCALABLE_LEDGER_KEY"
                    )
                )
    return report


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
) -> None:
    """Name what is wrong with one line (the fast path only found that something is)."""
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
                f"writer {writer}: prev does not hash the writer's previous line (edited or removed line)",
                expected=want_prev,
                found=event["prev"],
            )
        )
    if sealed:
        problems.append(
            Problem(run_id, where, "after-seal", f"event appended after the run was sealed at line {seal_line}")
        )


def _check_summary(run_id: str, path: Path, sealed: bool, problems: list[Problem]) -> None:
    """Compare the stream with ``run.json`` as the seal wrote it (an open run's has no length yet)."""
    summary_path = path.with_name(RUN_SUMMARY)
    try:
        summary = json.loads(summary_path.read_text())
    except FileNotFoundError:
        return
    except ValueError:
        problems.append(Problem(run_id, str(summary_path), "malformed-summary", "run.json does not parse"))
        return
    size = path.stat().st_size
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
    elif not sealed and "stream_bytes" in summary:  # an open run's run.json has no sealed length
        problems.append(
            Problem(run_id, str(path), "truncated", "run.json says the run was sealed but the stream has no seal")
        )


def _check_seal(
    run_id: str,
    where: str,
    seal: dict[str, Any],
    positions: dict[str, tuple[int, str, int]],
    key: bytes | None,
    problems: list[Problem],
) -> None:
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
    if key:
        expected = seal_digest(run_id, heads, key)
        if not hmac.compare_digest(str(seal.get("hmac", "")), str(expected)):
            problems.append(
                Problem(run_id, where, "seal-forged", "seal HMAC does not verify under SCALABLE_LEDGER_KEY")
            )


def audit_streams(
    items: Iterable[tuple[str, Path]], *, key: bytes | None = None, progress: AuditProgress | None = None
) -> AuditReport:
    """Audit several ``(run_id, path)`` streams into one report.

    Args:
        items: the runs and their streams.
        key: ``SCALABLE_LEDGER_KEY``.
        progress: called with ``("streams", bytes read, bytes in all)`` as the streams are read.
    """
    report = AuditReport()
    streams = list(items)
    if progress is None:
        for run_id, path in streams:
            report.extend(audit_stream(path, run_id, key=key))
        return report
    total = 0
    for _run_id, path in streams:
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    done = 0
    progress("streams", 0, total)

    def advance(nbytes: int) -> None:
        nonlocal done
        done = min(total, done + nbytes)
        progress("streams", done, total)

    for run_id, path in streams:
        report.extend(audit_stream(path, run_id, key=key, progress=advance))
    if done < total:  # a stream with a torn tail, or that shrank: the phase still ends
        progress("streams", total, total)
    return report


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
        for name in sorted(fs.find(root)):
            with fs.open(name, "rb") as fh:
                files.append((name[len(root) + 1 :], sha256_stream(fh)[0]))
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
    """Check every run's events (one run, or all): lines parse, chains hold, seals match.

    A run whose stream is still here is read line by line (problems name file:line). A
    run whose stream compaction retired is checked from its compacted rows: each row is
    re-encoded to its exact line, so chains and seals verify the same way, and retention
    tombstones (``run/retired``) account for the events they removed.

    Args:
        ledger: the ledger.
        run_id: only this run.
        progress: called as the phases ``streams`` and ``compacted`` go (see :data:`AuditProgress`).

    Raises:
        RunNotFoundError: ``run_id`` has no events.
    """
    bus.flush_all()
    location = ledger.location
    streams = set(ledger.run_ids())
    # Compacted runs whose stream is gone (or came back holding only later events).
    retired = location.runs_without_stream(read_generation(location))
    # With a remote, every machine's runs as their segments hold them (this machine's own
    # streams are read here, where they are whole).
    shipped = _shipped_elsewhere(ledger, location, run_id)
    remote_runs = {s.run_id for s in shipped}
    runs = [run_id] if run_id is not None else sorted(streams | retired | remote_runs)
    from_rows = [r for r in runs if r in retired]
    from_streams = [r for r in runs if r not in retired and r not in remote_runs]
    for r in from_streams:
        if not ledger.stream_path(r).exists():
            raise RunNotFoundError(
                f"run {r!r} has no stream under {str(ledger.runs_dir)!r}, no segments on the remote and no "
                "compacted events; list runs with: scalable ledger runs"
            )
    key = ledger.settings.ledger_key
    report = audit_streams(
        [(r, ledger.stream_path(r)) for r in from_streams if r in streams], key=key, progress=progress
    )
    report.extend(_audit_shipped(shipped, streams, key))
    if from_rows:
        if progress is not None:
            progress("compacted", 0, len(from_rows))
        con = connect(ledger)
        try:
            for done, r in enumerate(from_rows, start=1):
                rows = con.execute("SELECT * FROM events WHERE run_id = $1 ORDER BY writer, seq", [r]).fetchall()
                columns = [d[0] for d in con.description or []]
                where = f"{location.display(EVENTS_DIR)} (run {r})"
                report.extend(audit_rows(r, [dict(zip(columns, row, strict=True)) for row in rows], where, key=key))
                if progress is not None:
                    progress("compacted", done, len(from_rows))
        finally:
            con.close()
    return report


def _shipped_elsewhere(ledger: Ledger, location: Location, run_id: str | None) -> list[ShippedStream]:
    """Streams on the remote that this machine does not hold itself (none without a remote)."""
    if not isinstance(location, ObjectLocation):
        return []
    mine = machine_id(ledger.runs_dir) if ledger.runs_dir.is_dir() else None
    local = set(ledger.run_ids())
    return [s for s in shipped_streams(location, run_id) if not (s.machine == mine and s.run_id in local)]


def _audit_shipped(shipped: Sequence[ShippedStream], local: set[str], key: bytes | None) -> AuditReport:
    """Audit the streams put together from segments: as a stream is, and every byte of it present."""
    report = AuditReport()
    for stream in shipped:
        part = audit_stream(
            Path(stream.pieces[0][1] if stream.pieces else stream.run_id),
            stream.run_id,
            key=key,
            data=stream.data,
            where=stream.where,
        )
        for start, end in stream.gaps:
            part.problems.append(
                Problem(
                    stream.run_id,
                    stream.where(stream.data.count(b"\n", 0, start) + 1),
                    "segment-missing",
                    f"bytes {start}-{end} of machine {stream.machine}'s stream are in no segment",
                )
            )
        report.extend(part)
    # A run counts once, however many machines wrote to it.
    report.runs = len({s.run_id for s in shipped} - local)
    return report


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
        con = connect(ledger)
        try:
            items = latest_artifacts(con, run_id)
        finally:
            con.close()
        report.extend(audit_content(items, storage_options=storage_options, progress=progress))
    return report
