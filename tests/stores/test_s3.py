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


def _pending_uploads(store: FsspecArtifactStore, bucket: str) -> list[str]:
    return [u["Key"] for u in store.fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads", [])]


def test_big_puts_send_their_parts_several_at_a_time(s3_bucket: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    """Above 8 MiB a put is a multipart upload of 8 MiB parts, several in flight at once and never more than ten."""
    import hashlib
    import os
    import threading

    from scalable.stores.fsspec_store import S3_CONCURRENCY, S3_PART_SIZE

    bucket, options = s3_bucket
    store = build_artifact_store(f"s3://{bucket}/mp/", **options)
    assert isinstance(store, FsspecArtifactStore)
    data = os.urandom(13 * S3_PART_SIZE + 12345)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    call_s3 = store.fs._call_s3
    flying, most, lock = [0], [0], threading.Lock()
    checksums: dict[str, list[Any]] = {}

    async def counting(method: str, *args: Any, **kwargs: Any) -> Any:
        checksums.setdefault(method, []).append(kwargs.get("ChecksumAlgorithm"))
        if method == "complete_multipart_upload":
            checksums["parts"] = [bool(part.get("ChecksumCRC32")) for part in kwargs["MultipartUpload"]["Parts"]]
        if method != "upload_part":
            return await call_s3(method, *args, **kwargs)
        with lock:
            flying[0] += 1
            most[0] = max(most[0], flying[0])
        try:
            return await call_s3(method, *args, **kwargs)
        finally:
            with lock:
                flying[0] -= 1

    store.fs._call_s3 = counting  # type: ignore[method-assign]
    ref = store.put(src, "big.bin")
    assert ref.digest == hashlib.sha256(data).hexdigest()
    assert 1 < most[0] <= S3_CONCURRENCY
    # CRC32 checksums of every part, as boto3 sends them by default
    assert checksums["create_multipart_upload"] == ["CRC32"] and checksums["upload_part"] == ["CRC32"] * 14
    assert checksums["parts"] == [True] * 14
    assert store.fs.info(f"{bucket}/mp/big.bin")["ETag"].strip('"').endswith("-14")  # 14 parts
    assert store.get_bytes("big.bin", verify_digest=ref.digest) == data
    assert _pending_uploads(store, bucket) == []


def test_a_big_put_that_fails_midway_leaves_no_object_and_no_upload(
    s3_bucket: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    """An error halfway through a multipart put aborts the upload: nothing at the key, nothing pending on the server."""
    import os

    bucket, options = s3_bucket
    store = build_artifact_store(f"s3://{bucket}/mp/", **options)
    assert isinstance(store, FsspecArtifactStore)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(40 * 1024 * 1024))
    copied = [0]

    def fail_halfway(n: int) -> None:
        copied[0] += n
        if copied[0] >= 20 * 1024 * 1024:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        store.put(src, "big.bin", progress=fail_halfway)
    assert not store.exists("big.bin")
    assert _pending_uploads(store, bucket) == []


def test_servers_that_take_no_checksums_get_none(s3_bucket: tuple[str, dict[str, Any]], tmp_path: Path) -> None:
    """With checksums asked only where required (servers without them), a multipart put sends none and lands."""
    import os

    bucket, options = s3_bucket
    store = build_artifact_store(
        f"s3://{bucket}/mp/", **options, config_kwargs={"request_checksum_calculation": "when_required"}
    )
    assert isinstance(store, FsspecArtifactStore)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(20 * 1024 * 1024))
    sent: list[dict[str, Any]] = []
    call_s3 = store.fs._call_s3

    async def recording(method: str, *args: Any, **kwargs: Any) -> Any:
        sent.append({"method": method, **{k: v for k, v in kwargs.items() if k != "Body"}})
        return await call_s3(method, *args, **kwargs)

    store.fs._call_s3 = recording  # type: ignore[method-assign]
    ref = store.put(src, "big.bin")
    assert [c["method"] for c in sent if "upload" in c["method"]] == [
        "create_multipart_upload",
        "upload_part",
        "upload_part",
        "upload_part",
        "complete_multipart_upload",
    ]
    assert not any("ChecksumAlgorithm" in c for c in sent)
    assert store.get_bytes("big.bin", verify_digest=ref.digest) == src.read_bytes()
