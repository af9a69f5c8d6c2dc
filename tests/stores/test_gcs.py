"""The store contract on a GCS emulator (gcp-storage-emulator) on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest

from scalable.stores import FsspecArtifactStore, build_artifact_store
from tests.stores.contract import StoreContract


class TestGcsStore(StoreContract):
    """FsspecArtifactStore over gs://, a fresh bucket per test."""

    @pytest.fixture
    def store(self, gcs_bucket: tuple[str, dict[str, Any]]) -> FsspecArtifactStore:
        """A GCS store under a prefix of a fresh bucket."""
        bucket, options = gcs_bucket
        store = build_artifact_store(f"gs://{bucket}/artifacts/", **options)
        assert isinstance(store, FsspecArtifactStore)
        return store
