"""Replay: a run's events, in order, through handlers that restore, warm or print.

``replay(ledger, run_id, into=DIR)`` restores every artifact the run stored into DIR, laid out
by key, each copied from its location and verified against its digest while it is copied. A
file is copied to a temporary name in its directory and renamed over its place only once its
digest matched, and a directory is assembled and verified in a temporary directory, so nothing
unverified is ever written where a restored artifact goes (an earlier good copy stays). An
artifact that is missing, unreadable or changed is reported and the replay goes on with the
next one; at the end, :class:`~scalable.errors.RestoreError` lists every one not restored.
Other handlers (the cache's warmer, a timeline printer, your own) receive each event in order.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from scalable.digests import CHUNK, stored_tree, tree_digest
from scalable.errors import (
    ArtifactNotFoundError,
    ConfigError,
    IntegrityError,
    LedgerError,
    RestoreError,
    RunNotFoundError,
    ScalableError,
    os_error,
)
from scalable.failures import storage_error
from scalable.ledger.events import check_run_id, normalize_timestamp
from scalable.ledger.sql import quote
from scalable.uris import open_location

if TYPE_CHECKING:
    from scalable.ledger.log import Ledger

__all__ = [
    "Handler",
    "NotRestored",
    "ReplayResult",
    "RestoreArtifacts",
    "Timeline",
    "replay",
    "restore",
    "run_events",
]

Handler = Callable[[Mapping[str, Any]], None]
#: Name prefix of the temporary files and directories a restore writes before renaming.
_TEMP_PREFIX = ".scalable-restore-"


@dataclass(frozen=True)
class NotRestored:
    """An artifact a replay could not restore: its key, where it was, and why."""

    key: str
    location: str
    reason: str


@dataclass
class ReplayResult:
    """What a replay did: events seen, the paths restored, and the artifacts not restored."""

    run_id: str
    events: int = 0
    restored: list[str] = field(default_factory=list)
    failed: list[NotRestored] = field(default_factory=list)


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
    hashed while it is copied to a temporary name and renamed into place only when it matches
    its digest; a directory is verified by its tree digest before it replaces anything. An
    artifact that is missing or does not match its digest is added to ``failed`` and the
    handler goes on; a store that cannot be read or a destination that cannot be written
    raises the error of the tree that says why (nothing more could be restored).
    """

    def __init__(
        self, into: str | os.PathLike[str], storage_options: Mapping[str, Mapping[str, Any]] | None = None
    ) -> None:
        self.into = Path(into)
        self.storage_options = storage_options or {}
        self.restored: list[str] = []
        self.failed: list[NotRestored] = []

    def __call__(self, event: Mapping[str, Any]) -> None:
        if (
            event["event_type"] != "artifact"
            or event["op"] != "put"
            or not event.get("location")
            or not event.get("key")
        ):
            return
        key = str(event["key"])
        location = str(event["location"])
        parts = PurePosixPath(key).parts
        if not parts or PurePosixPath(key).is_absolute() or ".." in parts:
            self.failed.append(NotRestored(key, location, "the key escapes the restore directory"))
            return
        target = self.into.joinpath(*parts)
        try:
            restore(location, target, event.get("digest"), event.get("kind"), self.storage_options)
        except (IntegrityError, ConfigError) as exc:  # changed bytes, or a location that is no path
            self.failed.append(NotRestored(key, location, str(exc)))
            return
        except Exception as exc:
            error = storage_error(exc, location, action="restore")
            if not isinstance(error, ArtifactNotFoundError):
                raise error from exc  # the store or the disk fails: nothing more can be restored
            self.failed.append(NotRestored(key, location, "nothing is stored there any more"))
            return
        self.restored.append(str(target))


def restore(
    location: str,
    target: str | os.PathLike[str],
    digest: str | None,
    kind: str | None = None,
    storage_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Copy the file or directory at ``location`` to ``target``, verified against ``digest``.

    A file is copied to a temporary name beside ``target`` while it is hashed and renamed over
    ``target`` only when it matches; a directory is assembled in a temporary directory and
    replaces ``target`` only once its tree digest matches. Nothing unverified is left where
    ``target`` is (an earlier copy stays).

    Args:
        location: where the bytes are (a URI or a local path).
        target: the local path to restore to.
        digest: the SHA-256 (tree digest for a directory) the copy must have; ``None`` checks nothing.
        kind: ``dir`` when the location is a directory (otherwise the filesystem says).
        storage_options: per-protocol fsspec options.

    Raises:
        IntegrityError: the bytes there do not hash to ``digest``.
        ConfigError: ``location`` is not a path or URI that can be read.
        FileNotFoundError: nothing is there (or another error of the store or the disk, for
            the caller to map with :func:`scalable.failures.storage_error`).
        LedgerError: ``target`` cannot be written.
    """
    dest = Path(target)
    fs, path = open_location(location, storage_options)
    if kind == "dir" or fs.isdir(path):
        _restore_dir(fs, path, dest, digest)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _copy_verified(fs, path, dest, digest)
    return dest


def _restore_dir(fs: Any, path: str, target: Path, digest: str | None) -> None:
    root = path.rstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=target.parent))
    try:
        names = stored_tree(fs, root)
        if not names and not fs.exists(root):
            raise FileNotFoundError(root)
        files = []
        for rel, name in names:
            dest = staging.joinpath(*PurePosixPath(rel).parts)
            dest.parent.mkdir(parents=True, exist_ok=True)
            files.append((rel, _copy_verified(fs, name, dest, None)))
        found = tree_digest(files)
        if digest and found != digest:
            raise IntegrityError(f"its tree hashes to {found}, not the recorded {digest}")
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def _copy_verified(fs: Any, src: str, dest: Path, digest: str | None) -> str:
    """Copy one file to ``dest`` through a temporary name, hashing as it goes; return its digest.

    The copy is renamed over ``dest`` only when it matches ``digest`` (when one is given).

    Raises:
        IntegrityError: the bytes do not hash to ``digest``; ``dest`` is left as it was.
    """
    h = hashlib.sha256()
    tmp = dest.with_name(f"{_TEMP_PREFIX}{os.urandom(6).hex()}")
    with fs.open(src, "rb") as fin:  # a source that cannot be opened: the caller names its location
        try:
            with tmp.open("xb") as fout:
                while block := fin.read(CHUNK):
                    h.update(block)
                    fout.write(block)
            found = h.hexdigest()
            if digest and found != digest:
                raise IntegrityError(f"it hashes to {found}, not the recorded {digest}")
            os.replace(tmp, dest)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)  # no partial or unverified copy is left behind
            if isinstance(exc, OSError) and not isinstance(exc, ScalableError):
                raise os_error(exc, f"cannot restore {str(dest)!r}", LedgerError) from None
            raise
    return found


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

    Every event goes through every handler; with ``into``, every artifact that can be
    restored is, whatever happened to the others.

    Raises:
        ConfigError: ``into`` is an empty path.
        RunNotFoundError: the run has no events.
        RestoreError: some artifacts could not be restored (missing, unreadable, or not
            matching their digest); the others were. Its ``result`` is the
            :class:`ReplayResult`, whose ``failed`` names each one.
    """
    if into is not None and not os.fspath(into).strip():
        raise ConfigError("the directory to restore into is empty (''); give a directory, or '.' for this one")
    chain: list[Handler] = list(handlers)
    restorer = RestoreArtifacts(into, storage_options) if into is not None else None
    if restorer is not None:
        chain.insert(0, restorer)
    events: Sequence[dict[str, Any]] = run_events(ledger, run_id, until=until)
    for event in events:
        for handler in chain:
            handler(event)
    result = ReplayResult(run_id=run_id, events=len(events))
    if restorer is not None:
        result.restored, result.failed = restorer.restored, restorer.failed
    if result.failed:
        shown = "; ".join(f"{f.key} ({f.location}): {f.reason}" for f in result.failed[:3])
        more = f" and {len(result.failed) - 3} more" if len(result.failed) > 3 else ""
        error = RestoreError(
            f"{len(result.failed)} artifact(s) of run {run_id!r} were not restored: {shown}{more}; "
            f"{len(result.restored)} were restored into {str(into)!r}"
        )
        error.result = result
        raise error
    return result
