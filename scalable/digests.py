"""Content digests: SHA-256 of files and streams, and the tree digest of directories.

Tree digest: the SHA-256 of the concatenation, over every regular file of the tree sorted by
its relative POSIX path, of ``relative/path`` + NUL + the file's SHA-256 hex + newline. It is
equal for equal trees wherever they are stored (local disk, S3, GCS), and changes when any
file's bytes, name or place changes. An empty directory hashes to the SHA-256 of nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import BinaryIO

__all__ = ["CHUNK", "sha256_file", "sha256_stream", "tree_digest"]

CHUNK = 1 << 20


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


def sha256_file(path: str) -> tuple[str, int]:
    """Hash a local file; return ``(hex digest, size in bytes)``."""
    with open(path, "rb", buffering=0) as fh:
        return sha256_stream(fh)


def tree_digest(files: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """Return the tree digest of ``{relative POSIX path: file SHA-256 hex}`` or such pairs."""
    items = files.items() if isinstance(files, Mapping) else files
    h = hashlib.sha256()
    for rel, digest in sorted(items):
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()
