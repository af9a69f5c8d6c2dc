"""The store contract on local disk, plus what only the local backend can show."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalable.stores import BaseArtifactStore, LocalArtifactStore, build_artifact_store
from tests.stores.contract import StoreContract


class TestLocalStore(StoreContract):
    """LocalArtifactStore under a temporary directory."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalArtifactStore:
        """A local store under a fresh directory."""
        store = build_artifact_store(tmp_path / "artifacts")
        assert isinstance(store, LocalArtifactStore)
        return store

    def corrupt(self, store: BaseArtifactStore, key: str, data: bytes) -> None:
        """Overwrite the file in place, as bit rot or a stray editor would."""
        assert isinstance(store, LocalArtifactStore)
        with (store.root / key).open("r+b") as fh:
            fh.truncate(0)
            fh.write(data)


def test_local_files_are_plain_files(tmp_path: Path) -> None:
    """A local put leaves the file at root/key with no temporary file beside it."""
    store = LocalArtifactStore(tmp_path / "root")
    src = tmp_path / "f.txt"
    src.write_text("hello")
    store.put(src, "a/b/f.txt")
    assert (tmp_path / "root" / "a" / "b" / "f.txt").read_text() == "hello"
    assert [p.name for p in (tmp_path / "root" / "a" / "b").iterdir()] == ["f.txt"]


def test_base_uri_is_file_uri(tmp_path: Path) -> None:
    """The local store's URIs are file:// URIs of the resolved root."""
    store = LocalArtifactStore(tmp_path / "root")
    assert store.base_uri == (tmp_path / "root").resolve().as_uri() + "/"
    assert store.uri_for("a/b") == (tmp_path / "root").resolve().as_uri() + "/a/b"


def test_left_over_temp_files_are_not_listed(tmp_path: Path) -> None:
    """Temporary files of an interrupted put are neither listed nor seen as artifacts."""
    store = LocalArtifactStore(tmp_path / "root")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / ".scalable-tmp-0123456789ab").write_bytes(b"partial")
    assert store.list_artifacts() == []
    assert not store.exists("f")


def test_verify_without_any_record_is_refused(tmp_path: Path) -> None:
    """A file replaced by another tool (no digest record left) cannot be verified: IntegrityError."""
    from scalable.errors import IntegrityError

    store = LocalArtifactStore(tmp_path / "root")
    store.put_bytes(b"original", "f")
    (tmp_path / "root" / "f").unlink()
    (tmp_path / "root" / "f").write_bytes(b"replaced")
    with pytest.raises(IntegrityError, match="no digest was recorded"):
        store.get("f", tmp_path / "out", verify=True)
    assert not (tmp_path / "out").exists()


def test_kind_that_contradicts_the_source_is_refused(tmp_path: Path) -> None:
    """put with kind='dir' of a file (or kind='file' of a directory) raises StoreError; nothing is stored."""
    from scalable.errors import StoreError

    store = LocalArtifactStore(tmp_path / "root")
    src = tmp_path / "f"
    src.write_text("x")
    (tmp_path / "d").mkdir()
    with pytest.raises(StoreError, match="it is a file"):
        store.put(src, "k", kind="dir")
    with pytest.raises(StoreError, match="it is a dir"):
        store.put(tmp_path / "d", "k", kind="file")
    assert store.list_artifacts() == []


def test_put_bytes_of_non_bytes_is_refused(tmp_path: Path) -> None:
    """put_bytes of a str raises StoreError naming the key and the type."""
    from scalable.errors import StoreError

    store = LocalArtifactStore(tmp_path / "root")
    with pytest.raises(StoreError, match="'k' needs bytes, got str"):
        store.put_bytes("text", "k")  # type: ignore[arg-type]
    assert store.list_artifacts() == []


def test_fifo_source_is_refused_without_blocking(tmp_path: Path) -> None:
    """Putting a fifo itself raises UnsafeArtifactError at once instead of waiting for a writer."""
    import os

    from scalable.errors import UnsafeArtifactError

    store = LocalArtifactStore(tmp_path / "root")
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(UnsafeArtifactError, match="pipe"):
        store.put(tmp_path / "pipe", "k")


def test_check_reachable_names_what_blocks_the_root(tmp_path: Path) -> None:
    """A root that can be created passes; a root under a file fails naming both."""
    from scalable.errors import StoreUnreachableError

    LocalArtifactStore(tmp_path / "new" / "root").check_reachable()
    (tmp_path / "blocker").write_text("a file")
    with pytest.raises(
        StoreUnreachableError, match=r"'.*/blocker/root' cannot be written \(.*/blocker is not a writable directory\)"
    ):
        LocalArtifactStore(tmp_path / "blocker" / "root").check_reachable()
