"""Artifact stores: one protocol, a local and an fsspec backend, chosen by URI scheme.

Importing this package imports neither s3fs nor gcsfs; backends load on first use.
"""

from __future__ import annotations

from scalable.stores.base import ArtifactKind, ArtifactRef, ArtifactStore, BaseArtifactStore
from scalable.stores.factory import build_artifact_store
from scalable.stores.fsspec_store import FsspecArtifactStore
from scalable.stores.local import LocalArtifactStore

__all__ = [
    "ArtifactKind",
    "ArtifactRef",
    "ArtifactStore",
    "BaseArtifactStore",
    "FsspecArtifactStore",
    "LocalArtifactStore",
    "build_artifact_store",
]
