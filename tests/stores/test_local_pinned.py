"""The local store on a file system without extended attributes, file modes, and what its errors name."""

from __future__ import annotations

import os
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from scalable.errors import InvalidStoreURIError, KeyConflictError, StoreNotFoundError, UnsafeArtifactError
from scalable.stores import BaseArtifactStore, LocalArtifactStore, build_artifact_store
from tests.stores.contract import StoreContract


@pytest.fixture(scope="module")
def no_xattr_dir() -> Iterator[Path]:
    """A ramfs mount: a real file system that keeps no ``user.*`` extended attributes."""
    where = Path(tempfile.mkdtemp(prefix="scalable-ramfs-"))
    done = subprocess.run(["mount", "-t", "ramfs", "ramfs", str(where)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a ramfs here (needs root): {done.stderr.strip()}")
    try:
        probe = where / "probe"
        probe.write_bytes(b"")
        with pytest.raises(OSError):
            os.setxattr(probe, "user.scalable.probe", b"1")
        probe.unlink()
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)
        where.rmdir()


class TestLocalStoreWithoutXattrs(StoreContract):
    """The whole store contract where digest records cannot live on the files: they go to sidecar files."""

    @pytest.fixture
    def store(self, no_xattr_dir: Path, request: pytest.FixtureRequest) -> LocalArtifactStore:
        """A local store on the ramfs, in a directory of its own."""
        root = Path(tempfile.mkdtemp(dir=no_xattr_dir))
        store = build_artifact_store(root / "artifacts")
        assert isinstance(store, LocalArtifactStore)
        return store

    def corrupt(self, store: BaseArtifactStore, key: str, data: bytes) -> None:
        """Overwrite the file in place, as bit rot or a stray editor would."""
        assert isinstance(store, LocalArtifactStore)
        with (store.root / key).open("r+b") as fh:
            fh.truncate(0)
            fh.write(data)

    def test_the_digest_record_is_a_sidecar_file(self, store: LocalArtifactStore, tmp_path: Path) -> None:
        """Without xattrs, the record of a put is a sidecar file, which verification and listing use."""
        src = tmp_path / "a.txt"
        src.write_bytes(b"abc")
        ref = store.put(src, "d/a.txt")
        sidecars = [p for p in store.root.rglob("*.json") if p.is_file()]
        assert len(sidecars) == 1 and ref.digest in sidecars[0].read_text()
        assert store.list_artifacts() == ["d/a.txt"]
        assert store.get_bytes("d/a.txt", verify_digest=ref.digest) == b"abc"
        with pytest.raises(KeyConflictError, match="artifacts were put below it on their own"):
            store.put(_tree(tmp_path / "tree"), "d")

    def test_a_delete_reports_the_size_and_digest_recorded_in_the_sidecar(self, store: LocalArtifactStore) -> None:
        """Without xattrs, the deleted event still carries the size and digest the put recorded."""
        from scalable.testing import captured_events

        ref = store.put_bytes(b"12345", "k/v.bin")
        with captured_events(["artifact"]) as events:
            store.delete("k/v.bin")
        assert [(e["op"], e["size_bytes"], e["digest"]) for e in events] == [("deleted", 5, ref.digest)]


def test_a_damaged_record_on_a_file_is_no_record(tmp_path: Path) -> None:
    """A digest record attribute that is not a JSON object counts as no record: verification says so."""
    from scalable.errors import IntegrityError

    src = tmp_path / "a.txt"
    src.write_bytes(b"abc")
    store = build_artifact_store(tmp_path / "artifacts")
    store.put(src, "a.txt")
    os.setxattr(tmp_path / "artifacts" / "a.txt", "user.scalable.record", b"[1, 2]")
    with pytest.raises(IntegrityError, match="no digest was recorded"):
        store.get("a.txt", tmp_path / "out.txt", verify=True)


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "x.txt").write_text("x")
    (root / "sub" / "y.txt").write_text("y")
    return root


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_stored_files_and_directories_get_the_usual_modes(tmp_path: Path, umask: int) -> None:
    """A stored file is 0666 and a made directory 0777, less the umask, as ``cp`` would leave them."""
    src = tmp_path / "a.txt"
    src.write_bytes(b"abc")
    src.chmod(0o600)
    store = build_artifact_store(tmp_path / "artifacts")
    old = os.umask(umask)
    try:
        store.put(src, "deep/er/a.txt")
        store.put(_tree(tmp_path / "tree"), "t")
    finally:
        os.umask(old)
    root = tmp_path / "artifacts"
    for path in (root / "deep/er/a.txt", root / "t/x.txt", root / "t/sub/y.txt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    for path in (root / "deep", root / "deep/er", root / "t", root / "t/sub"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~umask, path


def test_a_delete_removes_the_directories_it_emptied_and_no_others(tmp_path: Path) -> None:
    """Deleting the last file under ``a/b/c`` removes ``a/b/c``, ``a/b`` and ``a``; a sibling keeps its parent."""
    src = tmp_path / "f.txt"
    src.write_bytes(b"f")
    store = build_artifact_store(tmp_path / "artifacts")
    store.put(src, "a/b/c/f.txt")
    store.put(src, "a/keep.txt")
    store.delete("a/b/c/f.txt")
    root = tmp_path / "artifacts"
    assert not (root / "a" / "b").exists()
    assert (root / "a" / "keep.txt").exists()
    store.delete("a/keep.txt")
    assert not (root / "a").exists()
    assert root.is_dir()


def test_a_missing_root_is_named_for_readers(tmp_path: Path) -> None:
    """Reading a store whose directory does not exist names the URI and the directory, and says why."""
    store = build_artifact_store(tmp_path / "nothing")
    with pytest.raises(StoreNotFoundError) as info:
        store.check_exists()
    assert str(info.value) == (
        f"no artifact store at {store.base_uri!r}: the directory {str(tmp_path / 'nothing')!r} does not exist; "
        "check the path (nothing has been stored there)"
    )
    (tmp_path / "file").write_text("x")
    store = build_artifact_store(tmp_path / "file")
    with pytest.raises(InvalidStoreURIError) as info:
        store.check_exists()
    assert str(info.value) == (
        f"no artifact store at {store.base_uri!r}: {str(tmp_path / 'file')!r} is a file, not a directory; "
        "give the store's root directory"
    )


def test_the_base_uri_of_the_file_system_root_and_of_a_trailing_slash(tmp_path: Path) -> None:
    """The base URI ends in exactly one ``/``, for ``/`` itself and for a path given with a slash."""
    assert build_artifact_store("/").base_uri == "file:///"
    assert build_artifact_store(f"{tmp_path}/").base_uri == f"file://{tmp_path}/"
    assert build_artifact_store(f"FILE://{tmp_path}").base_uri == f"file://{tmp_path}/"


def test_a_file_where_a_directory_of_the_key_should_be_is_named(tmp_path: Path) -> None:
    """Storing below a stored file names the key and the file in the way, and what to do."""
    src = tmp_path / "f.txt"
    src.write_bytes(b"f")
    store = build_artifact_store(tmp_path / "artifacts")
    store.put(src, "a/f.txt")
    with pytest.raises(KeyConflictError) as info:
        store.put(src, "a/f.txt/g.txt")
    assert str(info.value) == (
        f"cannot store {store.uri_for('a/f.txt/g.txt')!r}: a file is stored at {store.uri_for('a/f.txt')!r}, "
        "so nothing can be stored below it; delete it first or choose another key"
    )


def test_a_link_inside_the_root_on_the_way_to_a_key_is_named(tmp_path: Path) -> None:
    """A directory of the key that is a symbolic link is refused naming the link, never followed."""
    src = tmp_path / "f.txt"
    src.write_bytes(b"f")
    store = build_artifact_store(tmp_path / "artifacts")
    store.put(src, "real/f.txt")
    (tmp_path / "artifacts" / "alias").symlink_to(tmp_path / "artifacts" / "real")
    with pytest.raises(UnsafeArtifactError) as info:
        store.put(src, "alias/g.txt")
    assert str(info.value) == (
        f"cannot store {store.uri_for('alias/g.txt')!r}: {store.uri_for('alias')!r} is a symbolic link, and the "
        "store never follows links inside its root; remove the link or choose another key"
    )
    assert not (tmp_path / "artifacts" / "real" / "g.txt").exists()
