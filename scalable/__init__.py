"""scalable: artifacts of workflow runs, and an event-sourced provenance ledger of them."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from scalable.cache import DirType, FileType, GenericType, ObjectType, UtilityType, ValueType, cacheable
from scalable.errors import ScalableError
from scalable.ledger import Ledger
from scalable.session import ScalableSession
from scalable.stores import build_artifact_store

try:
    __version__ = version("scalable")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "DirType",
    "FileType",
    "GenericType",
    "Ledger",
    "ObjectType",
    "ScalableError",
    "ScalableSession",
    "UtilityType",
    "ValueType",
    "__version__",
    "build_artifact_store",
    "cacheable",
]
