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

Links (:func:`walk_paths`, one rule for every caller)
    A link inside the tree to a file or a directory inside the tree counts as that content at
    the link's path; a link out of the tree, a dangling link, a loop, a special file or a name
    that is not UTF-8 is refused. So a directory hashes to one digest as a cache argument,
    when recorded by a session and when stored on any backend, and what is stored restores
    to the same digest.

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
from typing import Any, BinaryIO, NamedTuple

from scalable.errors import ArtifactNotFoundError, StoreError, UnsafeArtifactError

__all__ = [
    "CHUNK",
    "Measurement",
    "measure_path",
    "sha256_file",
    "sha256_stream",
    "stored_tree",
    "tree_digest",
    "walk_paths",
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


def stored_tree(fs: Any, root: str) -> list[tuple[str, str]]:
    """Return ``(relative/posix/path, object name)`` of every file of a directory stored under ``root``.

    ``fs`` is an fsspec file system (S3, GCS, ...). Every object under ``root/`` is a file of
    the tree except "folder" markers: objects whose key ends in ``/``, which consoles and some
    tools create to show a folder. They are no file (a local copy could not hold one at that
    name), so they enter neither the tree digest nor a restored copy, as on disk an empty
    directory enters neither. Sorted by path.
    """
    root = root.rstrip("/")
    files = []
    for name, info in fs.find(root, detail=True).items():
        rel = name[len(root) + 1 :]
        if info.get("type") == "file" and rel and not rel.endswith("/"):  # not the root itself, no marker
            files.append((rel, name))
    return sorted(files)


def walk_tree(root: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """Return ``(relative/posix/path, path)`` of every file under ``root``, sorted by path.

    The files of :func:`walk_paths`, each path as a :class:`~pathlib.Path`.
    """
    return [(rel, Path(path)) for rel, path in walk_paths(root)]


def walk_paths(root: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Return ``(relative/posix/path, path)`` of every file under ``root``, sorted by path.

    The one rule of links and special files, for every caller (stores, the cache, sessions):

    * a link to a file inside ``root`` counts as that file's content at the link's path;
    * a link to a directory inside ``root`` is walked like a directory at the link's path
      (its files appear under the link's path as well as under their own);
    * a link that leaves ``root``, a dangling link, a link to a directory it is itself inside
      (a loop), a fifo, a socket or a device is refused;
    * empty directories contribute nothing.

    "Inside" is decided against the real path of ``root`` at every depth, so a link reached
    through another link is judged the same as when reached directly.

    Raises:
        ArtifactNotFoundError: ``root`` does not exist.
        UnsafeArtifactError: something under ``root`` cannot be hashed or stored safely (the
            message names it).
        StoreError: a directory cannot be read.
    """
    top = Path(root)
    try:
        real_root = Path(os.path.realpath(top, strict=True))
    except FileNotFoundError:
        raise ArtifactNotFoundError(f"directory {str(top)!r} does not exist") from None
    except OSError as exc:
        raise StoreError(f"cannot read directory {str(top)!r}: {exc.strerror or exc}; check its permissions") from None
    out: list[tuple[str, str]] = []
    # Each pending directory: its path as seen, its relative prefix, and the real paths of the
    # directories it is inside (a link to one of those would loop).
    pending: list[tuple[str, str, frozenset[Path]]] = [(os.fspath(top), "", frozenset({real_root}))]
    while pending:
        directory, prefix, inside = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise StoreError(
                f"cannot read directory {str(directory)!r}: {exc.strerror or exc}; check its permissions"
            ) from None
        for entry in entries:
            path = entry.path  # a string: a Path per file is most of a large tree's walk
            rel = f"{prefix}{entry.name}"
            try:
                entry.name.encode()
            except UnicodeEncodeError:
                raise UnsafeArtifactError(
                    f"the name of {str(path)!r} in {str(top)!r} is not valid UTF-8; rename it"
                ) from None
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError as exc:
                raise StoreError(f"cannot read {str(path)!r}: {exc.strerror or exc}; check its permissions") from None
            real: Path | None = None
            if stat.S_ISLNK(mode):
                real = _link_target(Path(path), real_root, top)
                mode = real.stat().st_mode
            if stat.S_ISDIR(mode):
                real = real or Path(os.path.realpath(path))
                if real in inside:
                    raise UnsafeArtifactError(
                        f"symbolic link {str(path)!r} in {str(top)!r} points to a directory it is inside (a loop); "
                        "remove it"
                    )
                pending.append((path, f"{rel}/", inside | {real}))
            elif stat.S_ISREG(mode):
                out.append((rel, path))
            else:
                raise UnsafeArtifactError(
                    f"{str(path)!r} in {str(top)!r} is not a regular file (a fifo, socket or device); "
                    "remove it from the directory"
                )
    out.sort()
    return out


def _link_target(link: Path, real_root: Path, root: Path) -> Path:
    """The real path a link inside ``root`` points to; refused when dangling, looping or outside."""
    try:
        target = Path(os.path.realpath(link, strict=True))
    except (OSError, RuntimeError):
        raise UnsafeArtifactError(
            f"symbolic link {str(link)!r} in {str(root)!r} is dangling or loops; remove it"
        ) from None
    if target != real_root and real_root not in target.parents:
        raise UnsafeArtifactError(
            f"symbolic link {str(link)!r} points outside {str(root)!r} (to {str(target)!r}); "
            "copy the target into the directory or remove the link"
        )
    return target


class Measurement(NamedTuple):
    """What :func:`measure_path` found: ``file`` or ``dir``, total bytes, and the digest."""

    kind: str
    size_bytes: int
    digest: str


def measure_path(path: str | os.PathLike[str]) -> Measurement:
    """Return the kind, size and digest of a local file or directory, as artifact stores hash it.

    A directory's size is the sum of its files' sizes and its digest the tree digest of the
    :func:`walk_tree` files.

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
        for rel, full in walk_paths(local):
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
