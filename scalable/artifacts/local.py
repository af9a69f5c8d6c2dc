"""Re-export of :mod:`scalable.stores.local` (the same objects)."""

from __future__ import annotations

from scalable.stores.local import LocalArtifactStore

__all__ = ["LocalArtifactStore"]
