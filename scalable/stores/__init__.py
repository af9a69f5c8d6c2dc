"""Artifact stores: one protocol, a local and an fsspec backend, and a table of backends by URI scheme.

Importing this package imports neither s3fs nor gcsfs; backends load on first use. A new
backend subclasses :class:`BaseArtifactStore` and is added with :func:`register_store` (or an
entry point of the group ``scalable.stores``).
"""

from __future__ import annotations

from scalable.stores.base import ArtifactKind, ArtifactRef, ArtifactStore, BaseArtifactStore
from scalable.stores.factory import StoreBackend, build_artifact_store, known_stores, register_store, unregister_store
from scalable.stores.fsspec_store import FsspecArtifactStore
from scalable.stores.local import LocalArtifactStore

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
