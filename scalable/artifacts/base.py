"""Re-export of :mod:`scalable.stores.base` (the same objects)."""

from __future__ import annotations

from scalable.stores.base import ArtifactKind, ArtifactRef, ArtifactStore, BaseArtifactStore

__all__ = ["ArtifactKind", "ArtifactRef", "ArtifactStore", "BaseArtifactStore"]
