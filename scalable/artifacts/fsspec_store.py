"""Re-export of :mod:`scalable.stores.fsspec_store` (the same objects)."""

from __future__ import annotations

from scalable.stores.fsspec_store import FsspecArtifactStore

__all__ = ["FsspecArtifactStore"]
