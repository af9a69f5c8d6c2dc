"""A local store never leaves its root: links inside it, to anywhere, are never followed.

Every test builds a tree outside the store root, links to it from inside the root (file and
directory links, at several depths, absolute and relative, some swapped in between two calls or
between two steps of one call), runs store operations and the CLI, and checks that the SHA-256
of the outside tree (names, kinds, link targets and bytes) is what it was before.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scalable.errors import ArtifactNotFoundError, KeyConflictError, ScalableError, UnsafeArtifactError
from scalable.stores import LocalArtifactStore
from tests.stores.contract import make_tree

#: Where links are planted inside the root: at the top, one level down, three levels down.
DEPTHS = ["link", "a/link", "a/b/c/link"]


def tree_sha256(root: Path) -> str:
    """SHA-256 over every entry under ``root``: relative path, kind, link target or bytes."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                h.update(f"L {rel} -> {os.readlink(p)}\n".encode())
            elif p.is_dir():
                h.update(f"D {rel}\n".encode())
            else:
                h.update(f"F {rel} {hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    """A directory outside the store whose tree must never change; checked after the test."""
    out = tmp_path / "outside"
    (out / "sub").mkdir(parents=True)
    (out / "keep.txt").write_bytes(b"outside bytes\n")
    (out / "x").write_bytes(b"outside x\n")
    (out / "sub" / "deep.txt").write_bytes(b"deep outside\n")
    (out / "sub" / "b.bin").write_bytes(b"outside b\n")
    before = tree_sha256(out)
    yield out
    assert tree_sha256(out) == before, "something outside the store root changed"


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    """An empty local store rooted at ``tmp_path/store``."""
    (tmp_path / "store").mkdir()
    return LocalArtifactStore(tmp_path / "store")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A small file to put."""
    path = tmp_path / "src.txt"
    path.write_bytes(b"inside bytes\n")
    return path


def plant(store: LocalArtifactStore, where: str, target: Path, *, relative: bool = False) -> None:
    """Make ``root/where`` a symbolic link to ``target`` (absolute, or relative to the link)."""
    link = store.root / where
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent) if relative else target)


def refused(call: Callable[[], Any], *errors: type[BaseException]) -> ScalableError:
    """Run ``call``; it must raise one of ``errors`` (a ScalableError); return it."""
    with pytest.raises(errors) as info:
        call()
    assert isinstance(info.value, ScalableError)
    return info.value


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
@pytest.mark.parametrize("where", DEPTHS)
def test_directory_link_is_never_followed(
    store: LocalArtifactStore, outside: Path, src: Path, tmp_path: Path, where: str, relative: bool
) -> None:
    """Through a directory link at any depth: put/get/exists/list/delete never reach the outside tree."""
    plant(store, where, outside, relative=relative)
    err = refused(lambda: store.put(src, f"{where}/x"), UnsafeArtifactError)
    assert where in str(err) and "symbolic link" in str(err)
    refused(lambda: store.put(src, f"{where}/new/deeper/x"), UnsafeArtifactError)
    refused(lambda: store.put_bytes(b"inside", f"{where}/keep.txt"), UnsafeArtifactError)
    make_tree(tmp_path / "tree")
    refused(lambda: store.put(tmp_path / "tree", f"{where}/sub"), UnsafeArtifactError)
    refused(lambda: store.put(tmp_path / "tree", where), UnsafeArtifactError, KeyConflictError)

    dest = tmp_path / "dest"
    for key in (f"{where}/keep.txt", f"{where}/sub/deep.txt", where, f"{where}/sub"):
        refused(lambda key=key: store.get(key, dest), ArtifactNotFoundError)
        refused(lambda key=key: store.get(key, dest, verify=True), ArtifactNotFoundError)
        refused(lambda key=key: store.get_bytes(key), ArtifactNotFoundError)
        assert not store.exists(key)
        refused(lambda key=key: store.delete(key), ArtifactNotFoundError)
    assert not dest.exists()
    assert store.list_artifacts() == []
    assert store.list_artifacts(f"{where}/") == []
    assert (store.root / where).is_symlink()


@pytest.mark.parametrize("where", ["flink", "a/flink", "a/b/c/flink"])
def test_file_link_is_never_followed(
    store: LocalArtifactStore, outside: Path, src: Path, tmp_path: Path, where: str
) -> None:
    """A link to an outside file reads as absent; a put at its key replaces the link, not the target."""
    plant(store, where, outside / "keep.txt")
    refused(lambda: store.get(where, tmp_path / "dest"), ArtifactNotFoundError)
    refused(lambda: store.get_bytes(where), ArtifactNotFoundError)
    assert not store.exists(where)
    assert store.list_artifacts() == []
    refused(lambda: store.delete(where), ArtifactNotFoundError)
    refused(lambda: store.put(src, f"{where}/below"), UnsafeArtifactError, KeyConflictError)
    assert not (tmp_path / "dest").exists()

    ref = store.put(src, where)
    assert not (store.root / where).is_symlink()
    assert (store.root / where).read_bytes() == b"inside bytes\n"
    assert store.get_bytes(where, verify_digest=ref.digest) == b"inside bytes\n"
    store.delete(where)
    assert store.list_artifacts() == []


def test_links_to_the_outside_root_itself_and_to_its_parent(
    store: LocalArtifactStore, outside: Path, src: Path, tmp_path: Path
) -> None:
    """Links to '/', to the root's parent and to the root itself are not followed either."""
    plant(store, "up", tmp_path, relative=True)
    plant(store, "slash", Path("/"))
    plant(store, "self", store.root)
    for where in ("up", "slash", "self"):
        refused(lambda where=where: store.put(src, f"{where}/outside/keep.txt"), UnsafeArtifactError)
        refused(lambda where=where: store.get_bytes(f"{where}/outside/keep.txt"), ArtifactNotFoundError)
        refused(lambda where=where: store.delete(f"{where}/outside"), ArtifactNotFoundError)
        assert not store.exists(f"{where}/outside/keep.txt")
    assert store.list_artifacts() == []


def test_directory_put_into_a_tree_holding_a_link(store: LocalArtifactStore, outside: Path, tmp_path: Path) -> None:
    """A directory put whose files would land below a link inside the root is refused there."""
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "deep.txt").write_bytes(b"would overwrite\n")
    plant(store, "d/sub", outside)
    refused(lambda: store.put(tmp_path / "tree", "d"), UnsafeArtifactError)
    assert store.list_artifacts() == []


def test_link_swapped_in_between_two_calls(store: LocalArtifactStore, outside: Path, src: Path, tmp_path: Path) -> None:
    """A stored directory replaced by a link to the outside between calls: every later call stays inside."""
    store.put(src, "s/x")
    store.put(src, "s/sub/deep.txt")
    moved = tmp_path / "moved"
    (store.root / "s").rename(moved)
    plant(store, "s", outside)
    refused(lambda: store.get("s/x", tmp_path / "dest"), ArtifactNotFoundError)
    refused(lambda: store.get("s", tmp_path / "dest"), ArtifactNotFoundError)
    assert not store.exists("s/x")
    assert store.list_artifacts() == []
    refused(lambda: store.put(src, "s/x"), UnsafeArtifactError)
    refused(lambda: store.delete("s"), ArtifactNotFoundError)
    refused(lambda: store.delete("s/sub/deep.txt"), ArtifactNotFoundError)
    assert not (tmp_path / "dest").exists()


def test_sidecar_directory_swapped_for_a_link(store: LocalArtifactStore, outside: Path, tmp_path: Path) -> None:
    """Digest sidecars are written and deleted under the root only, even if their directory becomes a link."""
    make_tree(tmp_path / "tree")
    store.put(tmp_path / "tree", "d")
    meta = store.root / ".scalable-meta"
    shutil.rmtree(meta)
    meta.symlink_to(outside)
    refused(lambda: store.put(tmp_path / "tree", "e"), UnsafeArtifactError)  # its sidecar cannot be written
    refused(lambda: store.get("d", tmp_path / "dest", verify=True), ScalableError)
    store.delete("d")
    assert not [k for k in store.list_artifacts() if k.startswith("d/")]


def test_link_swapped_in_during_a_directory_put(store: LocalArtifactStore, outside: Path, tmp_path: Path) -> None:
    """A link planted between two files of one directory put stops the put before the outside is written."""
    make_tree(tmp_path / "tree")
    (tmp_path / "tree" / "sub" / "deep.txt").write_bytes(b"would overwrite\n")
    swapped = []

    def swap(_n: int) -> None:
        if not swapped:  # after the first file ("a.txt"): "d/sub" does not exist yet
            plant(store, "d/sub", outside)
            swapped.append(True)

    refused(lambda: store.put(tmp_path / "tree", "d", progress=swap), UnsafeArtifactError)
    assert swapped


def test_link_swapped_in_during_a_directory_get(store: LocalArtifactStore, outside: Path, tmp_path: Path) -> None:
    """A stored subdirectory swapped for a link while a get copies the directory is not read through."""
    make_tree(tmp_path / "tree")
    store.put(tmp_path / "tree", "d")
    swapped = []

    def swap(_n: int) -> None:
        if not swapped:
            (store.root / "d" / "sub").rename(tmp_path / "moved")
            plant(store, "d/sub", outside)
            swapped.append(True)

    dest = tmp_path / "dest"
    refused(lambda: store.get("d", dest, progress=swap), ArtifactNotFoundError)
    assert swapped
    copied = {p.read_bytes() for p in dest.rglob("*") if p.is_file()} if dest.exists() else set()
    assert not copied & {b"outside b\n", b"deep outside\n"}


def test_link_swapped_in_during_a_directory_delete(
    store: LocalArtifactStore, outside: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subdirectory swapped for a link between two files of one delete: nothing outside is removed."""
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "a.txt").write_bytes(b"a")
    (tmp_path / "tree" / "sub" / "b.bin").write_bytes(b"b")
    (tmp_path / "tree" / "sub" / "deep.txt").write_bytes(b"d")
    store.put(tmp_path / "tree", "d")
    delete_file = store._delete_file
    swapped = []

    def delete_then_swap(key: str) -> None:
        delete_file(key)
        if not swapped:
            (store.root / "d" / "sub").rename(tmp_path / "moved")
            plant(store, "d/sub", outside)
            swapped.append(True)

    monkeypatch.setattr(store, "_delete_file", delete_then_swap)
    store.delete("d")
    assert swapped
    assert sorted(p.name for p in (tmp_path / "moved").iterdir()) == ["b.bin", "deep.txt"]


def test_reput_over_a_tree_whose_subdirectory_became_a_link(
    store: LocalArtifactStore, outside: Path, tmp_path: Path
) -> None:
    """Stale files of an earlier directory put are removed under the root only, never through a link."""
    make_tree(tmp_path / "tree")
    store.put(tmp_path / "tree", "d")
    shutil.rmtree(store.root / "d" / "sub")
    plant(store, "d/sub", outside)
    shutil.rmtree(tmp_path / "tree" / "sub")
    ref = store.put(tmp_path / "tree", "d")
    assert sorted(ref.metadata["files"]) == ["a.txt", "empty.dat"]
    assert store.list_artifacts() == ["d/a.txt", "d/empty.dat"]


@pytest.mark.parametrize("where", DEPTHS)
def test_cli_never_leaves_the_root(
    store: LocalArtifactStore, outside: Path, src: Path, tmp_path: Path, where: str, cli: Any
) -> None:
    """``scalable artifacts put/get/ls/exists`` through a link: one line on stderr or 'absent', outside unchanged."""
    plant(store, where, outside)
    root = str(store.root)
    result = cli("artifacts", "put", str(src), f"{root}/{where}/x", "--root", root)
    assert result.exit_code == 2
    assert "symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = cli("artifacts", "get", f"{root}/{where}/keep.txt", str(tmp_path / "dest"), "--root", root)
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert not (tmp_path / "dest").exists()
    assert cli("artifacts", "exists", f"{root}/{where}/keep.txt", "--root", root).exit_code == 1
    result = cli("artifacts", "ls", root, "--format", "json")
    assert result.exit_code == 0 and result.stdout.strip() == "[]"
    result = cli("artifacts", "ls", store.base_uri, "--prefix", f"{where}/", "--format", "json")
    assert result.exit_code == 2 and "no key" in result.stderr and result.stdout.strip() == ""
