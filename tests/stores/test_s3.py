"""The store contract on a real S3 server (moto's) on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
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


def test_missing_bucket_is_a_named_store_error(s3_server: str, tmp_path: Path) -> None:
    """A put into a bucket that does not exist raises StoreError naming the URI, not a backend error."""
    from scalable.errors import StoreError

    store = build_artifact_store("s3://no-such-bucket-here/x/", client_kwargs={"endpoint_url": s3_server})
    src = tmp_path / "f"
    src.write_text("x")
    with pytest.raises(StoreError, match="s3://no-such-bucket-here/x/f"):
        store.put(src, "f")
    with pytest.raises(StoreError, match="no-such-bucket-here"):
        store.put_bytes(b"x", "g")


def test_multipart_upload_commits_whole_object(s3_bucket: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    """A streamed put of several multipart parts lands as one object with the right digest."""
    import hashlib
    import os

    bucket, options = s3_bucket
    store = build_artifact_store(f"s3://{bucket}/mp/", **options, default_block_size=5 * 1024 * 1024)
    assert isinstance(store, FsspecArtifactStore)
    store.stream_threshold = 1024 * 1024
    data = os.urandom(13 * 1024 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    ref = store.put(src, "big.bin")
    assert ref.digest == hashlib.sha256(data).hexdigest()
    assert store.fs.info(f"{bucket}/mp/big.bin")["size"] == len(data)
    assert store.get_bytes("big.bin", verify_digest=ref.digest) == data


def test_check_reachable_names_a_missing_bucket(s3_bucket: tuple[str, dict[str, Any]], s3_server: str) -> None:
    """check_reachable passes for an existing bucket and names a missing one, before anything is stored."""
    from scalable.errors import StoreNotFoundError

    bucket, options = s3_bucket
    build_artifact_store(f"s3://{bucket}/x/", **options).check_reachable()
    store = build_artifact_store("s3://no-such-bucket-here/x/", client_kwargs={"endpoint_url": s3_server})
    with pytest.raises(
        StoreNotFoundError, match=r"'s3://no-such-bucket-here/x/': the bucket 'no-such-bucket-here' does not exist"
    ):
        store.check_reachable()


def test_retries_option_sets_the_filesystem_retry_count(s3_bucket: tuple[str, dict[str, Any]]) -> None:
    """The ``retries`` storage option becomes s3fs's retry count (which s3fs takes no argument for)."""
    bucket, options = s3_bucket
    store = build_artifact_store(f"s3://{bucket}/x/", retries=1, skip_instance_cache=True, **options)
    assert isinstance(store, FsspecArtifactStore)
    assert store.fs.retries == 1
