"""The store contract on a real S3 server (moto's) on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import pytest

from scalable.stores import FsspecArtifactStore, build_artifact_store
from tests.stores.contract import StoreContract


class TestS3Store(StoreContract):
    """FsspecArtifactStore over s3://, a fresh bucket per test."""

    @pytest.fixture
    def store(self, s3_bucket: tuple[str, dict[str, Any]]) -> FsspecArtifactStore:
        """An S3 store under a prefix of a fresh bucket."""
        bucket, options = s3_bucket
        store = build_artifact_store(f"s3://{bucket}/artifacts/", **options)
        assert isinstance(store, FsspecArtifactStore)
        return store
