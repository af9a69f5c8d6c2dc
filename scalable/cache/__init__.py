"""The result cache: ``@cacheable``, its argument types, and the local and remote tiers."""

from __future__ import annotations

from scalable.cache.decorator import cacheable
from scalable.cache.tiers import Cache, LocalTier, RemoteTier, default_cache, using
from scalable.cache.types import (
    DirType,
    FileType,
    GenericType,
    ObjectType,
    UtilityType,
    ValueType,
    convert_to_type,
)
from scalable.cache.warm import WarmCache

__all__ = [
    "Cache",
    "DirType",
    "FileType",
    "GenericType",
    "LocalTier",
    "ObjectType",
    "RemoteTier",
    "UtilityType",
    "ValueType",
    "WarmCache",
    "cacheable",
    "convert_to_type",
    "default_cache",
    "using",
]
