"""The store contract on fsspec's in-memory filesystem."""

from __future__ import annotations

import uuid

import pytest

from scalable.stores import FsspecArtifactStore, build_artifact_store
from tests.stores.contract import StoreContract


class TestMemoryStore(StoreContract):
    """FsspecArtifactStore over memory://, a fresh prefix per test."""

    @pytest.fixture
    def store(self) -> FsspecArtifactStore:
        """A memory store under a unique prefix."""
        store = build_artifact_store(f"memory://t-{uuid.uuid4().hex}/artifacts/")
        assert isinstance(store, FsspecArtifactStore)
        return store
