"""The store contract on local disk, plus what only the local backend can show."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalable.stores import LocalArtifactStore, build_artifact_store
from tests.stores.contract import StoreContract


class TestLocalStore(StoreContract):
    """LocalArtifactStore under a temporary directory."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalArtifactStore:
        """A local store under a fresh directory."""
        store = build_artifact_store(tmp_path / "artifacts")
        assert isinstance(store, LocalArtifactStore)
        return store


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
    (tmp_path / "root" / ".f.scalable-tmp-0123").write_bytes(b"partial")
    assert store.list_artifacts() == []
    assert not store.exists("f")
