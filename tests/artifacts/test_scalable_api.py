"""Scalable's artifact API as its users write it: kinds, refs, stores, and where we deliberately differ."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest

import scalable
from scalable.artifacts import ArtifactKind, ArtifactRef, ArtifactStore, LocalArtifactStore, build_artifact_store
from scalable.artifacts.base import ArtifactKind as BaseKind
from scalable.artifacts.fsspec_store import FsspecArtifactStore
from scalable.errors import StoreError


def test_artifact_kind_members_and_values_are_scalables() -> None:
    """FILE, DIRECTORY ("dir") and BLOB, each equal to its plain string; DIR is the same member as DIRECTORY."""
    assert [(k.name, k.value) for k in ArtifactKind] == [("FILE", "file"), ("DIRECTORY", "dir"), ("BLOB", "blob")]
    assert ArtifactKind.DIRECTORY == "dir" and ArtifactKind.FILE == "file" and ArtifactKind.BLOB == "blob"
    assert ArtifactKind("dir") is ArtifactKind.DIRECTORY is ArtifactKind.DIR
    assert ArtifactKind.DIR.name == "DIRECTORY"
    assert BaseKind is ArtifactKind


def test_artifact_ref_fields_and_defaults_are_scalables() -> None:
    """ArtifactRef(uri, kind) leaves digest and size_bytes None and metadata a fresh empty dict; it is frozen."""
    fields = [
        (f.name, f.default if f.default is not dataclasses.MISSING else "required")
        for f in dataclasses.fields(ArtifactRef)
    ]
    assert [name for name, _ in fields] == ["uri", "kind", "digest", "size_bytes", "metadata"]
    a = ArtifactRef("file:///data/x", ArtifactKind.FILE)
    b = ArtifactRef("file:///data/y", ArtifactKind.DIRECTORY)
    assert (a.digest, a.size_bytes, a.metadata) == (None, None, {})
    assert a.metadata is not b.metadata
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.uri = "elsewhere"  # type: ignore[misc]
    full = ArtifactRef("s3://b/k", ArtifactKind.BLOB, "ab" * 32, 10, {"note": "x"})
    assert full.metadata == {"note": "x"}


def test_package_exports_are_scalables() -> None:
    """scalable.artifacts and scalable export the names Scalable's users import."""
    from scalable import artifacts

    assert {"ArtifactKind", "ArtifactRef", "ArtifactStore", "LocalArtifactStore", "build_artifact_store"} <= set(
        artifacts.__all__
    )
    assert scalable.build_artifact_store is build_artifact_store
    from scalable.artifacts.cache import RemoteCacheBackend, get_remote_cache_backend

    assert callable(RemoteCacheBackend) and callable(get_remote_cache_backend)


def _tree(root: Path) -> dict[str, bytes]:
    files = {"a.txt": b"alpha\n", "batch1/b.csv": b"x,y\n1,2\n", "batch1/deep/c.bin": bytes(range(64))}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, isolated: Path) -> Any:
    """A LocalArtifactStore as Scalable's users build it, or an FsspecArtifactStore on memory://."""
    if request.param == "local":
        return LocalArtifactStore(isolated / "artifacts")
    return FsspecArtifactStore(f"memory://scalable-api-{id(request)}/artifacts")


def test_file_and_directory_puts_as_scalable_users_write_them(store: Any, isolated: Path) -> None:
    """A file put is FILE with its SHA-256 and size; a directory put is DIRECTORY with the size of all its files."""
    assert isinstance(store, ArtifactStore)
    (isolated / "output.csv").write_text("a,b\n1,2\n")
    ref = store.put("output.csv", "runs/run-001/output.csv")
    assert ref.kind == ArtifactKind.FILE == "file"
    assert ref.digest == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert ref.size_bytes == 8
    files = _tree(isolated / "outputs")
    tree = store.put("outputs", "outputs", kind=ArtifactKind.DIRECTORY)
    assert tree.kind is ArtifactKind.DIRECTORY
    assert tree.kind == "dir"
    assert tree.size_bytes == sum(len(v) for v in files.values())
    assert store.exists("outputs") and store.exists("outputs/batch1/b.csv") and not store.exists("outputs/none")
    assert store.list_artifacts("outputs") == sorted(f"outputs/{rel}" for rel in files)
    assert store.list_artifacts("outputs/batch1") == ["outputs/batch1/b.csv", "outputs/batch1/deep/c.bin"]
    got = store.get("outputs", str(isolated / "restored"))
    assert got == str(isolated / "restored")
    assert (isolated / "restored" / "batch1" / "deep" / "c.bin").read_bytes() == files["batch1/deep/c.bin"]
    assert store.get("runs/run-001/output.csv", str(isolated / "copy.csv")) == str(isolated / "copy.csv")


def test_a_local_store_uri_is_an_absolute_file_uri(isolated: Path) -> None:
    """LocalArtifactStore refs carry the absolute file:// URI of the stored file, as in Scalable."""
    (isolated / "x.txt").write_text("x")
    ref = LocalArtifactStore("./store").put("x.txt", "k/x.txt")
    assert ref.uri == (isolated / "store" / "k" / "x.txt").resolve().as_uri()


def test_differences_from_scalable(isolated: Path) -> None:
    """Where we deliberately differ: bare paths are local, listing is recursive everywhere, dirs have a tree digest."""
    # A bare relative path is a local store (Scalable would hand it to fsspec).
    assert isinstance(build_artifact_store("artifacts"), LocalArtifactStore)
    # Listing recurses and gives keys relative to the root on every backend (Scalable's fsspec store lists one level).
    _tree(isolated / "outputs")
    memory = build_artifact_store(f"memory://diff-{id(isolated)}/root")
    memory.put("outputs", "outputs")
    assert memory.list_artifacts("outputs/batch1") == ["outputs/batch1/b.csv", "outputs/batch1/deep/c.bin"]
    # A directory put has a tree digest (Scalable: None), the same on every backend.
    local_ref = build_artifact_store("local-root").put("outputs", "outputs")
    assert local_ref.digest is not None and len(local_ref.digest) == 64
    assert memory.put("outputs", "again").digest == local_ref.digest
    # An explicit file/dir kind must match what the source is (Scalable only relabels the ref).
    (isolated / "f.txt").write_text("f")
    with pytest.raises(StoreError, match="it is a file"):
        memory.put("f.txt", "f", kind=ArtifactKind.DIRECTORY)
