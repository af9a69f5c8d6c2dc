"""Durable writes on a local disk: whole buffers, fsync modes, atomic replacement, create-if-absent.

Every file the ledger writes locally goes through one of these: appends hand whole lines to
the OS with :func:`write_all` and then follow the fsync mode (:func:`sync_after_write`);
derived files are replaced atomically (:func:`replace_file`); compacted files are moved into
place durably (:func:`move_file`); a generation's document is created only if its name is free
(:func:`create_file`); compaction runs under :func:`exclusive_lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from scalable.settings import FsyncMode

__all__ = [
    "create_file",
    "exclusive_lock",
    "fsync_dir",
    "fsync_file",
    "fsync_unless_never",
    "move_file",
    "replace_file",
    "sync_after_write",
    "write_all",
    "write_new_file",
]


def write_all(fd: int, payload: bytes | bytearray) -> None:
    """Write every byte of ``payload`` to ``fd`` (``os.write`` may take less than asked)."""
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def sync_after_write(fd: int, mode: FsyncMode) -> bool:
    """Apply the fsync mode after a write to ``fd``.

    Returns:
        Whether an fsync is still owed (``batch``: a background thread does it within a
        second); ``always`` has fsynced already, ``never`` owes nothing.
    """
    if mode is FsyncMode.ALWAYS:
        os.fsync(fd)
        return False
    return mode is FsyncMode.BATCH


def fsync_unless_never(fd: int, mode: FsyncMode) -> None:
    """fsync ``fd`` at a boundary (a run's seal, closing) unless the mode is ``never``."""
    if mode is not FsyncMode.NEVER:
        os.fsync(fd)


def fsync_file(path: Path) -> None:
    """fsync the file at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """fsync the directory at ``path``, so the names created or removed in it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist), write ``data`` and fsync it; on failure nothing is left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


def create_file(path: Path, data: bytes) -> None:
    """Create ``path`` holding ``data`` if, and only if, no file has that name yet.

    The bytes are written and fsynced under a temporary name, which is then hard-linked to
    ``path``: the link is the one atomic step, and it fails if the name is taken.

    Raises:
        FileExistsError: ``path`` exists (someone else created it first).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    write_new_file(tmp, data)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def move_file(source: Path, target: Path) -> None:
    """Move the finished file ``source`` to ``target`` durably: its bytes, then its new name.

    Both must be on one filesystem; ``target``'s directory is created if missing.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fsync_file(source)
    os.replace(source, target)
    fsync_dir(target.parent)


def replace_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically: readers see the old bytes or the new, never a mix.

    The file is derived state that can be rebuilt, so it is not fsynced.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a disk that filled up mid-write leaves no piece behind
        raise


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) inside the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
