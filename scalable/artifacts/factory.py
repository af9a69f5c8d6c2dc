"""Re-export of :mod:`scalable.stores.factory` (the same objects)."""

from __future__ import annotations

from scalable.stores.factory import build_artifact_store

__all__ = ["build_artifact_store"]
