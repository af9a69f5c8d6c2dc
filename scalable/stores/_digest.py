"""Content digests of artifacts: SHA-256 of files, the tree digest of directories, tree walks.

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
    backend, because only relative paths and content enter the hash.

The tree digest itself is :func:`scalable.digests.tree_digest`, shared with the cache, audits and
replay; stores compute file digests and walk trees here.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Final

from scalable.digests import tree_digest
from scalable.errors import ArtifactNotFoundError, StoreError, UnsafeArtifactError

__all__ = ["EMPTY_DIGEST", "file_digest", "tree_digest", "walk_tree"]

EMPTY_DIGEST: Final = hashlib.sha256(b"").hexdigest()


def file_digest(path: str | os.PathLike[str]) -> str:
    """Return the SHA-256 hex of a local file's bytes.

    Raises:
        ArtifactNotFoundError: the file does not exist.
        StoreError: the file cannot be read.
    """
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        raise ArtifactNotFoundError(f"file {os.fspath(path)!r} does not exist") from None
    except OSError as exc:
        raise StoreError(f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}; check its permissions") from None


def walk_tree(root: Path) -> list[tuple[str, Path]]:
    """Return ``(relative/posix/path, absolute path)`` of every file under ``root``, sorted.

    Symbolic links are followed when they stay inside ``root`` (the target's content is
    stored as a regular file); a link that leaves the tree, a dangling link, a fifo, a
    socket or a device is refused.

    Raises:
        UnsafeArtifactError: something under ``root`` cannot be stored safely.
        StoreError: a directory cannot be read.
    """
    real_root = root.resolve()
    out: list[tuple[str, Path]] = []

    def onerror(exc: OSError) -> None:
        raise StoreError(
            f"cannot read directory {exc.filename!r}: {exc.strerror or exc}; check its permissions"
        ) from None

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
        base = Path(dirpath)
        # Links to directories appear in dirnames; check them, then walk them as plain dirs
        # only if they stay inside (os.walk does not follow them, so recurse by hand).
        for name in list(dirnames):
            p = base / name
            if p.is_symlink():
                _check_inside(p, real_root, root)
                dirnames.remove(name)
                target_dir = p.resolve()
                if target_dir == base.resolve() or target_dir in base.resolve().parents:
                    raise UnsafeArtifactError(
                        f"symbolic link {str(p)!r} in {str(root)!r} points to its own ancestor (a loop); remove it"
                    )
                for rel, target in walk_tree(p):
                    out.append(((p / rel).relative_to(root).as_posix(), target))
        for name in filenames:
            p = base / name
            if p.is_symlink():
                _check_inside(p, real_root, root)
            try:
                mode = p.stat().st_mode
            except OSError as exc:
                raise UnsafeArtifactError(
                    f"{str(p)!r} in {str(root)!r} cannot be read ({exc.strerror or exc}); remove it or fix it"
                ) from None
            if not stat.S_ISREG(mode):
                raise UnsafeArtifactError(
                    f"{str(p)!r} in {str(root)!r} is not a regular file (a fifo, socket or device); "
                    "remove it from the directory before storing it"
                )
            out.append((p.relative_to(root).as_posix(), p))
    out.sort()
    return out


def _check_inside(link: Path, real_root: Path, root: Path) -> None:
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
