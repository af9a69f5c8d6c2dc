"""Content digests: SHA-256 of files and streams, tree walks, and the tree digest of directories.

File digest
    The SHA-256 (lowercase hex) of the file's bytes.

Tree digest (directories)
    For every regular file under the directory, take its path relative to the directory,
    ``/``-separated (POSIX form, whatever the platform or backend), and its file digest.
    Sort the pairs by path (Python string order, i.e. by code point), and hash the
    concatenation of one line per file::

        <relative/path> NUL <file-digest> LF

    that is ``path.encode("utf-8") + b"\\0" + digest.encode("ascii") + b"\\n"``. The tree
    digest is the SHA-256 hex of those bytes. Empty directories contribute nothing, so an
    empty tree has the digest of the empty string. Equal trees give equal digests on every
    backend (local disk, S3, GCS), because only relative paths and content enter the hash.

This is the one home of hashing for stores, the cache, sessions, audits and replay. It imports
nothing of scalable besides :mod:`scalable.errors`, so every layer may use it.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import BinaryIO, NamedTuple

from scalable.errors import ArtifactNotFoundError, StoreError, UnsafeArtifactError

__all__ = [
    "CHUNK",
    "Measurement",
    "measure_path",
    "sha256_file",
    "sha256_stream",
    "tree_digest",
    "walk_tree",
]

#: Read size of the stream hasher.
CHUNK = 1 << 20
# Size of the slices of a memory-mapped file handed to hashlib (which releases the GIL for them).
_MAP_CHUNK = 8 << 20


def sha256_stream(stream: BinaryIO, chunk: int = CHUNK) -> tuple[str, int]:
    """Hash a binary stream to its end; return ``(hex digest, size in bytes)``."""
    h = hashlib.sha256()
    size = 0
    while True:
        block = stream.read(chunk)
        if not block:
            break
        h.update(block)
        size += len(block)
    return h.hexdigest(), size


def sha256_file(path: str | os.PathLike[str]) -> tuple[str, int]:
    """Hash a local file; return ``(hex digest, size in bytes)``.

    The file is memory-mapped, so its bytes are not copied through Python; a file that cannot
    be mapped (a pipe, a special file) is read instead.

    Raises:
        UnsafeArtifactError: ``path`` is a fifo, socket or device (it is never opened: reading
            one could block forever or never end).
        OSError: the file cannot be opened or read (``FileNotFoundError``,
            ``IsADirectoryError``, ``PermissionError``...); callers turn it into their error.
    """
    with open(_open_regular(path), "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        h = hashlib.sha256()
        if size == 0:
            return h.hexdigest(), 0
        try:
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                # Slices of a memoryview copy nothing.
                view = memoryview(mm)
                try:
                    for start in range(0, size, _MAP_CHUNK):
                        h.update(view[start : start + _MAP_CHUNK])
                finally:
                    view.release()
            return h.hexdigest(), size
        except (ValueError, OSError):  # not mappable: read instead
            fh.seek(0)
            return sha256_stream(fh, _MAP_CHUNK)


def _open_regular(path: str | os.PathLike[str]) -> int:
    """Open a regular file for reading; refuse anything else before opening it (and again after)."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        # O_NONBLOCK: if a fifo is swapped in after the check, the open does not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            return fd
        os.close(fd)
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
    raise UnsafeArtifactError(
        f"{os.fspath(path)!r} is not a regular file (a fifo, socket or device); only regular files "
        "and directories can be hashed or recorded"
    )


def tree_digest(files: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """Return the tree digest of ``{relative POSIX path: file SHA-256 hex}`` or such pairs."""
    items = files.items() if isinstance(files, Mapping) else files
    return hashlib.sha256("".join([f"{rel}\0{digest}\n" for rel, digest in sorted(items)]).encode()).hexdigest()


def walk_tree(root: str | os.PathLike[str], *, strict: bool = True) -> list[tuple[str, str]]:
    """Return ``(relative/posix/path, path)`` of every file under ``root``, sorted by path.

    ``path`` is the file's path as a string (``root`` joined with the relative path).

    Two rules for symbolic links and special files exist, one per caller:

    * ``strict=True`` (what artifact stores and sessions store and record): a link is followed
      when it stays inside ``root`` (its target's content counts as a regular file there); a
      link that leaves the tree, a dangling link, a loop, a fifo, a socket or a device is
      refused.
    * ``strict=False`` (directory arguments of ``@cacheable``): links to directories are not
      followed, a link to a file counts as the file it points to, and anything that is not a
      regular file is skipped.

    Raises:
        UnsafeArtifactError: with ``strict``, something under ``root`` cannot be stored safely.
        StoreError: with ``strict``, a directory cannot be read.
    """
    top = os.fspath(root)
    if not strict:
        found: list[tuple[str, str]] = []
        for dirpath, _dirnames, filenames in os.walk(top):
            for name in filenames:
                full = os.path.join(dirpath, name)
                if os.path.isfile(full):
                    found.append((Path(os.path.relpath(full, top)).as_posix(), full))
        found.sort()
        return found
    return _walk_strict(top)


def _walk_strict(root: str) -> list[tuple[str, str]]:
    real_root = Path(root).resolve()
    out: list[tuple[str, str]] = []
    pending: list[tuple[str, str]] = [(root, "")]  # directories to read, with their relative prefix
    while pending:
        base, prefix = pending.pop()
        try:
            with os.scandir(base) as listing:
                entries = list(listing)
        except OSError as exc:
            raise StoreError(
                f"cannot read directory {exc.filename!r}: {exc.strerror or exc}; check its permissions"
            ) from None
        for entry in entries:
            # The entry's type comes with the listing: a plain file or directory costs no stat.
            rel = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                pending.append((entry.path, rel + "/"))
                continue
            if entry.is_symlink():
                p = Path(entry.path)
                _check_inside(p, real_root, root)
                if p.is_dir():
                    # A link to a directory inside the tree is walked as a plain directory.
                    target_dir = p.resolve()
                    here = Path(base).resolve()
                    if target_dir == here or target_dir in here.parents:
                        raise UnsafeArtifactError(
                            f"symbolic link {str(p)!r} in {str(root)!r} points to its own ancestor (a loop); remove it"
                        )
                    out.extend((f"{rel}/{sub}", target) for sub, target in _walk_strict(entry.path))
                    continue
                try:
                    regular = stat.S_ISREG(p.stat().st_mode)
                except OSError as exc:
                    raise UnsafeArtifactError(
                        f"{entry.path!r} in {str(root)!r} cannot be read ({exc.strerror or exc}); remove it or fix it"
                    ) from None
            else:
                regular = entry.is_file(follow_symlinks=False)
            if not regular:
                raise UnsafeArtifactError(
                    f"{entry.path!r} in {str(root)!r} is not a regular file (a fifo, socket or device); "
                    "remove it from the directory before storing it"
                )
            out.append((rel, entry.path))
    out.sort()
    return out


def _check_inside(link: Path, real_root: Path, root: str) -> None:
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):
        raise UnsafeArtifactError(
            f"symbolic link {str(link)!r} in {str(root)!r} is dangling or loops; remove it"
        ) from None
    if target != real_root and real_root not in target.parents:
        raise UnsafeArtifactError(
            f"symbolic link {str(link)!r} points outside {str(root)!r} (to {str(target)!r}); "
            "copy the target into the directory or remove the link"
        )


class Measurement(NamedTuple):
    """What :func:`measure_path` found: ``file`` or ``dir``, total bytes, and the digest."""

    kind: str
    size_bytes: int
    digest: str


def measure_path(path: str | os.PathLike[str]) -> Measurement:
    """Return the kind, size and digest of a local file or directory, as artifact stores hash it.

    A directory's size is the sum of its files' sizes and its digest the tree digest of the
    :func:`walk_tree` (``strict``) files.

    Raises:
        ArtifactNotFoundError: ``path`` (or a file inside it) does not exist.
        UnsafeArtifactError: ``path`` is a fifo, socket or device (never opened), or a
            directory holds a link out of it or such a file.
        StoreError: something cannot be read.
    """
    local = Path(path)
    if local.is_dir():
        digests: dict[str, str] = {}
        total = 0
        for rel, full in _walk_strict(os.fspath(local)):
            digests[rel], size = _hash_local(full)
            total += size
        return Measurement("dir", total, tree_digest(digests))
    digest, size = _hash_local(local)
    return Measurement("file", size, digest)


def _hash_local(path: str | os.PathLike[str]) -> tuple[str, int]:
    try:
        return sha256_file(path)
    except FileNotFoundError:
        raise ArtifactNotFoundError(f"file {os.fspath(path)!r} does not exist") from None
    except OSError as exc:
        raise StoreError(f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}; check its permissions") from None
