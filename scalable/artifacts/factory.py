"""Re-export of :mod:`scalable.stores.factory` (the same objects)."""

from __future__ import annotations

from scalable.stores.factory import (
    ENTRY_POINT_GROUP,
    StoreBackend,
    build_artifact_store,
    known_stores,
    register_store,
    unregister_store,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "StoreBackend",
    "build_artifact_store",
    "known_stores",
    "register_store",
    "unregister_store",
]
