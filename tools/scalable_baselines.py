"""What Scalable (2.0.0b1) does today, rewritten here as the baselines the benches compare with.

Nothing here is imported from Scalable or from this library: each baseline repeats, step for
step, what Scalable's own code does, so a ratio against it says how much faster or slower a
user gets by switching.

- :class:`ScalableLocalStore` is Scalable's ``LocalArtifactStore``: a file put is
  ``shutil.copy2`` and then a SHA-256 pass over the copy in 1 MiB chunks; a directory put
  removes the destination tree, runs ``shutil.copytree`` and sums the sizes, with no digest.
  Neither records an event.
- :func:`hash_walk` is what a user of that store runs to get every file's digest of a
  directory put (Scalable records none): SHA-256 of each file under the tree, in sorted order.
- :class:`ScalableTelemetryWriter` is Scalable's telemetry store appending an event: under a
  lock, open the stream, write ``json.dumps(event, sort_keys=True)`` and a newline, close.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ScalableLocalStore", "ScalableRef", "ScalableTelemetryWriter", "hash_walk", "sha256_file"]

#: Scalable's read size when hashing a stored file.
_CHUNK = 1024 * 1024


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex of a file, read in 1 MiB chunks (as Scalable's store hashes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ScalableRef:
    """Scalable's ``ArtifactRef``: URI, kind (``file`` or ``dir``), digest (None for dirs), size."""

    uri: str
    kind: str
    digest: str | None = None
    size_bytes: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class ScalableLocalStore:
    """Scalable's ``LocalArtifactStore``: copy with ``shutil``, then hash the copy; no event.

    Args:
        root: the store root, created at once and kept as given (not resolved).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, local_path: str | os.PathLike[str], remote_key: str, *, kind: str | None = None) -> ScalableRef:
        """Store a file (``copy2``, then SHA-256 of the copy) or a directory (``copytree``).

        ``kind`` only labels the reference; what is copied follows the source.
        """
        src = Path(local_path)
        dest = self.root / remote_key
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(src, dest)
            size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
            return ScalableRef(dest.resolve().as_uri(), kind or "dir", None, size)
        shutil.copy2(src, dest)
        size = dest.stat().st_size
        return ScalableRef(dest.resolve().as_uri(), kind or "file", sha256_file(dest), size)


def hash_walk(root: str | os.PathLike[str]) -> dict[str, str]:
    """Return ``{relative/posix/path: sha256}`` of every file under ``root``, in sorted order."""
    base = Path(root)
    out: dict[str, str] = {}
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        out[path.relative_to(base).as_posix()] = sha256_file(path)
    return out


class ScalableTelemetryWriter:
    """Scalable's telemetry store appending events to ``path``: one open, write, close each."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()

    def append(self, event: Mapping[str, Any]) -> None:
        """Append ``event`` as one ``json.dumps(event, sort_keys=True)`` line."""
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, sort_keys=True) + "\n")
