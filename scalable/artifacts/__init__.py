"""The documented import path of the artifact stores: the very objects of :mod:`scalable.stores`."""

from __future__ import annotations

from scalable.stores import (
    ArtifactKind,
    ArtifactRef,
    ArtifactStore,
    BaseArtifactStore,
    FsspecArtifactStore,
    LocalArtifactStore,
    StoreBackend,
    build_artifact_store,
    known_stores,
    register_store,
    unregister_store,
)

__all__ = [
    "ArtifactKind",
    "ArtifactRef",
    "ArtifactStore",
    "BaseArtifactStore",
    "FsspecArtifactStore",
    "LocalArtifactStore",
    "StoreBackend",
    "build_artifact_store",
    "known_stores",
    "register_store",
    "unregister_store",
]
