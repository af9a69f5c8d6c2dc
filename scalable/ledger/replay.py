"""Replay: a run's events, in order, through handlers that restore, warm or print.

``replay(ledger, run_id, into=DIR)`` restores every artifact the run stored into DIR, laid out
by key, each copied from its location and verified against its digest while it is copied. Other
handlers (the cache's warmer, a timeline printer, your own) receive each event in order.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from scalable.digests import CHUNK, tree_digest
from scalable.errors import IntegrityError, LedgerError, RunNotFoundError, ScalableError, os_error
from scalable.failures import storage_error
from scalable.ledger.events import check_run_id, normalize_timestamp
from scalable.ledger.sql import quote

if TYPE_CHECKING:
    from scalable.ledger.log import Ledger

__all__ = ["Handler", "ReplayResult", "RestoreArtifacts", "Timeline", "replay", "run_events"]

Handler = Callable[[Mapping[str, Any]], None]


@dataclass
class ReplayResult:
    """What a replay did: events seen, and the files each restoring handler wrote."""

    run_id: str
    events: int = 0
    restored: list[str] = field(default_factory=list)


def run_events(ledger: Ledger, run_id: str, *, until: str | None = None) -> list[dict[str, Any]]:
    """Return the run's events in order (time, then each writer's sequence), from any storage.

    Raises:
        EventValidationError: ``run_id`` is not a valid run id.
        RunNotFoundError: the run has no events (at or before ``until``).
    """
    check_run_id(run_id)
    cutoff = normalize_timestamp(until) if until else None
    where = f"run_id = {quote(run_id)}" + (f" AND timestamp <= {quote(cutoff)}" if cutoff else "")
    rows: list[dict[str, Any]] = ledger.query(
        f"SELECT * FROM events WHERE {where} ORDER BY timestamp, writer, seq"
    ).to_pylist()
    if not rows:
        raise RunNotFoundError(
            f"run {run_id!r} has no events{' at or before ' + until if until else ''}; "
            "list runs with: scalable ledger runs"
        )
    return rows


class RestoreArtifacts:
    """Handler that copies every stored artifact of the run into ``into``/<key>, verified.

    An artifact counts when its event is ``artifact/put`` (it has a store key). Each file is
    hashed while it is copied; a digest mismatch removes the partial copy and raises
    :class:`IntegrityError`. Directories are verified by their tree digest.
    """

    def __init__(
        self, into: str | os.PathLike[str], storage_options: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        self.into = Path(into)
        self.storage_options = storage_options or {}
        self.restored: list[str] = []

    def __call__(self, event: Mapping[str, Any]) -> None:
        if (
            event["event_type"] != "artifact"
            or event["op"] != "put"
            or not event.get("location")
            or not event.get("key")
        ):
            return
        key = str(event["key"])
        parts = PurePosixPath(key).parts
        if not parts or PurePosixPath(key).is_absolute() or ".." in parts:
            raise IntegrityError(f"artifact key {key!r} of event {event['event_id']} escapes the restore directory")
        target = self.into.joinpath(*parts)
        location = str(event["location"])
        try:
            self._restore(location, target, event.get("digest"), event.get("kind"))
        except Exception as exc:  # a store that cannot be read, by its location (local copies name themselves)
            raise storage_error(exc, location, action="restore") from exc
        self.restored.append(str(target))

    def _restore(self, location: str, target: Path, digest: str | None, kind: str | None) -> None:
        import fsspec

        protocol = location.split("://", 1)[0] if "://" in location else "file"
        fs, path = fsspec.core.url_to_fs(location, **dict(self.storage_options.get(protocol, {})))
        if kind == "dir" or fs.isdir(path):
            self._restore_dir(fs, path, target, digest, location)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        found = _copy_verified(fs, path, target)
        if digest and found != digest:
            target.unlink(missing_ok=True)
            raise IntegrityError(f"{location} hashes to {found}, not the recorded {digest}; not restored")

    def _restore_dir(self, fs: Any, path: str, target: Path, digest: str | None, location: str) -> None:
        root = path.rstrip("/")
        staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=_existing_parent(target)))
        try:
            files = []
            for name in sorted(fs.find(root)):
                rel = name[len(root) + 1 :]
                dest = staging.joinpath(*PurePosixPath(rel).parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                files.append((rel, _copy_verified(fs, name, dest)))
            found = tree_digest(files)
            if digest and found != digest:
                raise IntegrityError(f"{location} tree hashes to {found}, not the recorded {digest}; not restored")
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging)


def _existing_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def _copy_verified(fs: Any, src: str, dest: Path) -> str:
    """Copy one file from ``fs`` to ``dest`` (temp name, then rename), hashing as it goes."""
    import hashlib

    h = hashlib.sha256()
    tmp = dest.with_name(f".{dest.name}.part")
    with fs.open(src, "rb") as fin:  # a source that cannot be opened: the caller names its location
        try:
            with tmp.open("wb") as fout:
                while block := fin.read(CHUNK):
                    h.update(block)
                    fout.write(block)
            os.replace(tmp, dest)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)  # no partial copy is left behind
            if isinstance(exc, OSError) and not isinstance(exc, ScalableError):
                raise os_error(exc, f"cannot restore {str(dest)!r}", LedgerError) from None
            raise
    return h.hexdigest()


class Timeline:
    """Handler that keeps one row per event, in order: time, task, ``type/op`` and what it is about.

    ``rows`` holds mappings of :attr:`COLUMNS` (``what``: the artifact's name, else its
    location, else the cached function's name).
    """

    COLUMNS = ("timestamp", "task_name", "event", "what")

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def __call__(self, event: Mapping[str, Any]) -> None:
        what = event.get("artifact_name") or event.get("location") or event.get("function_name")
        self.rows.append(
            {
                "timestamp": event["timestamp"],
                "task_name": event.get("task_name"),
                "event": f"{event['event_type']}/{event['op']}",
                "what": what,
            }
        )


def replay(
    ledger: Ledger,
    run_id: str,
    *,
    into: str | os.PathLike[str] | None = None,
    until: str | None = None,
    handlers: Iterable[Handler] = (),
    storage_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> ReplayResult:
    """Feed the run's events, in order, through ``handlers`` (plus a restorer for ``into``).

    Raises:
        RunNotFoundError: the run has no events.
        IntegrityError: a restored artifact does not match its recorded digest.
    """
    chain: list[Handler] = list(handlers)
    restorer = RestoreArtifacts(into, storage_options) if into is not None else None
    if restorer is not None:
        chain.insert(0, restorer)
    events: Sequence[dict[str, Any]] = run_events(ledger, run_id, until=until)
    for event in events:
        for handler in chain:
            handler(event)
    return ReplayResult(run_id=run_id, events=len(events), restored=restorer.restored if restorer else [])
