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


def _record(path: Path) -> bytes:
    import os

    return os.getxattr(path, "user.scalable.record")


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed-file", "temporary-name"])
def test_a_put_lands_whole_and_leaves_nothing_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """Whether the file starts unnamed (linked in) or under a temporary name (renamed), only the key is left, with its record."""
    from scalable.stores import local

    monkeypatch.setattr(local, "_LINKABLE_TMPFILE", unnamed and local._LINKABLE_TMPFILE)
    store = LocalArtifactStore(tmp_path / "root")
    src = tmp_path / "f.txt"
    for text in ("first", "second, over the first"):
        src.write_text(text)
        ref = store.put(src, "a/f.txt")
        assert (tmp_path / "root" / "a" / "f.txt").read_text() == text
        assert [p.name for p in (tmp_path / "root" / "a").iterdir()] == ["f.txt"]
        assert [(r.uri, r.digest, r.size_bytes) for r in store.list_refs()] == [(ref.uri, ref.digest, len(text))]
    store.get("a/f.txt", tmp_path / "back.txt", verify=True)


def test_the_digest_record_is_small_enough_to_sit_in_the_inode(tmp_path: Path) -> None:
    """The record a put attaches is 42 bytes (kind, size, SHA-256), where a JSON record took about 110."""
    import hashlib

    store = LocalArtifactStore(tmp_path / "root")
    store.put_bytes(b"payload", "blob")
    src = tmp_path / "f"
    src.write_bytes(b"x" * 5000)
    store.put(src, "file")
    for key, data, kind in (("blob", b"payload", b"b"), ("file", b"x" * 5000, b"f")):
        record = _record(tmp_path / "root" / key)
        assert len(record) == 42
        assert record[:2] == b"\x01" + kind
        assert int.from_bytes(record[2:10], "big") == len(data)
        assert record[10:] == hashlib.sha256(data).digest()


def test_records_in_json_that_earlier_puts_wrote_still_verify(tmp_path: Path) -> None:
    """A file whose record is the JSON of earlier versions is verified and listed with that digest."""
    import hashlib
    import os

    from scalable.errors import IntegrityError

    store = LocalArtifactStore(tmp_path / "root")
    store.put_bytes(b"old bytes", "old")
    digest = hashlib.sha256(b"old bytes").hexdigest()
    path = tmp_path / "root" / "old"
    os.setxattr(path, "user.scalable.record", f'{{"digest": "{digest}", "kind": "blob", "size_bytes": 9}}'.encode())
    assert store.get_bytes("old") == b"old bytes"
    store.get("old", tmp_path / "back", verify=True)
    assert [r.digest for r in store.list_refs()] == [digest]
    path.write_bytes(b"new bytes")  # the JSON record now names the old digest
    with pytest.raises(IntegrityError, match="hashes to"):
        store.get("old", tmp_path / "back2", verify=True)


def test_a_big_put_copied_by_the_kernel_hashes_what_it_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file of many chunks is copied whole and its digest is the stored bytes'; without a kernel copy, the same."""
    import errno
    import hashlib
    import os

    from scalable.stores import base

    src = tmp_path / "big.bin"
    block = os.urandom(1 << 20)
    with src.open("wb") as fh:
        for i in range(3 * base.CHUNK // len(block) + 1):
            fh.write(block[i:] + block[:i])
    want = hashlib.sha256(src.read_bytes()).hexdigest()
    calls: list[int] = []
    real = os.copy_file_range

    def counted(*args: object, **kwargs: object) -> int:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "copy_file_range", counted)
    store = LocalArtifactStore(tmp_path / "root")
    seen: list[int] = []
    ref = store.put(src, "big.bin", progress=seen.append)
    assert calls  # the kernel copied it
    assert ref.digest == want and ref.size_bytes == src.stat().st_size == sum(seen)
    assert (tmp_path / "root" / "big.bin").read_bytes() == src.read_bytes()

    def refused(*_args: object, **_kwargs: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refused)
    ref = store.put(src, "again.bin")
    assert ref.digest == want
    assert store.get_bytes("again.bin", verify_digest=want) == src.read_bytes()


def test_a_directory_lands_whole(tmp_path: Path) -> None:
    """While a directory put copies its files nothing is visible at its key; when it returns, every file is."""
    from tests.stores.contract import make_tree

    files = make_tree(tmp_path / "tree")
    store = LocalArtifactStore(tmp_path / "root")
    store.put_bytes(b"neighbour", "n")
    seen: list[tuple[bool, list[str]]] = []
    store.put(
        tmp_path / "tree", "runs/d", progress=lambda _n: seen.append((store.exists("runs/d"), store.list_artifacts()))
    )
    assert seen and all(visible == (False, ["n"]) for visible in seen)
    assert store.list_artifacts() == ["n", *sorted(f"runs/d/{rel}" for rel in files)]
    assert [p.name for p in (tmp_path / "root" / "runs").iterdir()] == ["d"]  # no temporary directory left


def test_a_directory_put_that_fails_midway_leaves_nothing(tmp_path: Path) -> None:
    """A file of the tree gone before it was copied: the put names it, and nothing is stored or left behind."""
    from scalable.errors import ArtifactNotFoundError

    tree = tmp_path / "tree"
    for i in range(40):
        (tree / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (tree / f"d{i % 4}" / f"f{i:02d}").write_bytes(b"x" * i)
    store = LocalArtifactStore(tmp_path / "root")

    def remove_a_late_file(_n: int) -> None:
        (tree / "d3" / "f39").unlink(missing_ok=True)

    with pytest.raises(ArtifactNotFoundError, match="f39"):
        store.put(tree, "d", progress=remove_a_late_file)
    assert store.list_artifacts() == []
    assert not store.exists("d")
    assert list((tmp_path / "root").iterdir()) == []


def test_a_directory_put_over_an_earlier_one_replaces_it_file_by_file(tmp_path: Path) -> None:
    """Putting a directory at the key of an earlier one leaves exactly the new tree, each file verified."""
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "old.txt").write_text("old")
    (tree / "keep.txt").write_text("v1")
    store = LocalArtifactStore(tmp_path / "root")
    store.put(tree, "d")
    (tree / "a" / "b" / "old.txt").unlink()
    (tree / "keep.txt").write_text("v2")
    (tree / "a" / "b" / "new.txt").write_text("new")
    store.put(tree, "d")
    assert store.list_artifacts() == ["d/a/b/new.txt", "d/keep.txt"]
    back = Path(store.get("d", tmp_path / "back", verify=True))
    assert (back / "keep.txt").read_text() == "v2"


def test_uris_of_keys_are_those_of_their_paths(tmp_path: Path) -> None:
    """Every key's URI is the percent-encoded file:// URI of its path, whatever the root and the key."""
    from scalable.uris import path_to_uri

    for root in (tmp_path / "plain", tmp_path / "with space#and%", tmp_path / "é"):
        store = LocalArtifactStore(root)
        for key in ("a", "a/b.c", "x y/z#1?", "é/ü", "a/.hidden", ".top", "a/..b", "%41", "a~b_c-d", "a/b/"):
            assert store.uri_for(key) == path_to_uri(f"{root}/{key}"), key
    assert LocalArtifactStore("/").uri_for("etc/x") == "file:///etc/x"


def test_work_in_parallel_keeps_order_and_raises_the_first_failure() -> None:
    """Results come back in the order of the items; after a failure nothing new starts, and the earliest failure is raised."""
    import threading
    import time

    from scalable.stores.base import in_parallel

    threads: set[str] = set()

    def square(i: int) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.001)
        return i * i

    assert in_parallel(square, list(range(200)), workers=4) == [i * i for i in range(200)]
    assert len(threads) > 1
    started: list[int] = []

    def fail_at_10_and_30(i: int) -> int:
        started.append(i)
        if i in (10, 30):
            time.sleep(0.05 if i == 10 else 0)  # the later failure happens first
            raise ValueError(f"item {i}")
        time.sleep(0.002)
        return i

    with pytest.raises(ValueError, match="item 10"):
        in_parallel(fail_at_10_and_30, list(range(1000)), workers=4)
    assert len(started) < 100  # nothing new started once an item failed
    assert in_parallel(square, [3], workers=4) == [9] and in_parallel(square, [], workers=4) == []
