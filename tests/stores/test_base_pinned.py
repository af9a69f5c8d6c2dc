"""What every store does alike: listed references, deletes and their events, put_bytes labels."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scalable.errors import ArtifactNotFoundError, KeyConflictError
from scalable.stores import ArtifactKind, BaseArtifactStore, build_artifact_store
from scalable.testing import captured_events, memory_store


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BaseArtifactStore:
    """A fresh store on local disk or in memory."""
    if request.param == "local":
        return build_artifact_store(tmp_path / "artifacts")
    return memory_store()


@pytest.fixture
def events() -> Iterator[list[Any]]:
    """The artifact events raised while the test runs."""
    with captured_events(["artifact"]) as got:
        yield got  # type: ignore[misc]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tree(root: Path) -> dict[str, bytes]:
    files = {"x.txt": b"x", "sub/y.txt": b"yy", "sub/deeper/z.bin": b"zzz"}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_listed_references_carry_each_files_recorded_digest_and_size(store: BaseArtifactStore, tmp_path: Path) -> None:
    """``list_refs`` gives every file its size and the digest recorded at put, also deep inside a directory put."""
    files = _tree(tmp_path / "tree")
    store.put(tmp_path / "tree", "runs/d")
    store.put_bytes(b"blob", "runs/b.bin")
    refs = store.list_refs("runs/")
    got = {r.metadata["key"]: (r.kind, r.digest, r.size_bytes) for r in refs}
    want = {f"runs/d/{rel}": (ArtifactKind.FILE, _sha(data), len(data)) for rel, data in files.items()}
    want["runs/b.bin"] = (ArtifactKind.FILE, _sha(b"blob"), 4)
    assert got == want
    assert all(r.metadata == {"key": r.metadata["key"], "store": store.base_uri} for r in refs)
    assert [r.uri for r in refs] == [store.uri_for(k) for k in sorted(want)]
    assert {r.metadata["key"] for r in store.list_refs()} == set(want)


def test_a_file_the_store_did_not_write_has_no_recorded_digest(tmp_path: Path) -> None:
    """A file dropped into a local store's directory by hand is listed with its size but no digest."""
    store = build_artifact_store(tmp_path / "artifacts")
    store.put_bytes(b"mine", "k/mine.txt")
    (tmp_path / "artifacts" / "k" / "stray.txt").write_bytes(b"stray")
    refs = {r.metadata["key"]: r for r in store.list_refs("k/")}
    assert refs["k/mine.txt"].digest == _sha(b"mine")
    assert refs["k/stray.txt"].digest is None and refs["k/stray.txt"].size_bytes == 5


def test_deleting_a_file_reports_what_was_deleted(
    store: BaseArtifactStore, events: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The ``artifact/deleted`` event of a file carries its key, kind label, size and digest as put."""
    store.put_bytes(b"hello", "a/b/c.txt", kind="result")
    store.delete("a/b/c.txt")
    deleted = [e for e in events if e["op"] == "deleted"]
    assert len(deleted) == 1
    assert deleted[0]["key"] == "a/b/c.txt"
    assert deleted[0]["kind"] == "blob"
    assert deleted[0]["digest"] == _sha(b"hello")
    assert deleted[0]["size_bytes"] == 5
    assert not store.exists("a/b/c.txt")


def test_deleting_a_directory_put_removes_its_files_and_reports_it(
    store: BaseArtifactStore, events: list[dict[str, Any]], tmp_path: Path
) -> None:
    """A directory put is deleted whole; its event says ``dir`` with the tree digest and total size."""
    _tree(tmp_path / "tree")
    ref = store.put(tmp_path / "tree", "d")
    store.delete("d")
    (deleted,) = [e for e in events if e["op"] == "deleted"]
    assert (deleted["kind"], deleted["digest"], deleted["size_bytes"]) == ("dir", ref.digest, ref.size_bytes)
    assert store.list_artifacts() == []
    store.put_bytes(b"again", "d")  # nothing of the directory is left in the way
    assert store.get_bytes("d") == b"again"


def test_deleting_a_prefix_removes_everything_below_it(store: BaseArtifactStore, events: list[dict[str, Any]]) -> None:
    """A key that is only a prefix of stored keys deletes every artifact below it; the event says ``dir``."""
    store.put_bytes(b"1", "p/one.txt")
    store.put_bytes(b"2", "p/q/two.txt")
    store.put_bytes(b"3", "other.txt")
    store.delete("p")
    assert store.list_artifacts() == ["other.txt"]
    (deleted,) = [e for e in events if e["op"] == "deleted"]
    assert (deleted["key"], deleted["kind"]) == ("p", "dir")
    assert "digest" not in deleted and "size_bytes" not in deleted


def test_a_file_inside_a_directory_put_cannot_be_deleted_alone(store: BaseArtifactStore, tmp_path: Path) -> None:
    """Deleting one file of a directory artifact (at any depth) is refused naming the directory."""
    _tree(tmp_path / "tree")
    store.put(tmp_path / "tree", "d")
    for key in ("d/x.txt", "d/sub/deeper/z.bin"):
        with pytest.raises(KeyConflictError) as info:
            store.delete(key)
        assert str(info.value) == (
            f"cannot delete {store.uri_for(key)!r}: it is part of the directory artifact {store.uri_for('d')!r}; "
            "delete that directory, or put it again without the file"
        )
    with pytest.raises(ArtifactNotFoundError, match=r"nothing is stored at .*; nothing to delete"):
        store.delete("nothing/here")


def test_put_bytes_labels_and_events(store: BaseArtifactStore, events: list[dict[str, Any]]) -> None:
    """put_bytes records a label in the reference and the event; a plain blob has no label."""
    plain = store.put_bytes(b"a", "plain.bin")
    labelled = store.put_bytes(b"b", "labelled.bin", kind="model")
    assert "label" not in plain.metadata and plain.kind == ArtifactKind.BLOB
    assert labelled.metadata["label"] == "model" and labelled.kind == ArtifactKind.BLOB
    assert [(e["key"], e["kind"]) for e in events if e["op"] == "put"] == [
        ("plain.bin", "blob"),
        ("labelled.bin", "model"),
    ]
    store.get_bytes("labelled.bin")
    (got,) = [e for e in events if e["op"] == "get"]
    assert (got["kind"], got["size_bytes"], got["digest"]) == ("blob", 1, _sha(b"b"))


def test_put_bytes_never_lands_below_a_stored_file(store: BaseArtifactStore) -> None:
    """put_bytes checks nesting like put: nothing below a file, no file over a directory."""
    store.put_bytes(b"f", "f")
    with pytest.raises(KeyConflictError):
        store.put_bytes(b"g", "f/g")
    store.put_bytes(b"h", "dir/h")
    with pytest.raises(KeyConflictError):
        store.put_bytes(b"d", "dir")


def test_a_directory_is_not_put_over_keys_put_on_their_own(store: BaseArtifactStore, tmp_path: Path) -> None:
    """A directory put over files that were put on their own is refused naming one of them."""
    store.put_bytes(b"own", "d/own.txt")
    _tree(tmp_path / "tree")
    with pytest.raises(KeyConflictError) as info:
        store.put(tmp_path / "tree", "d")
    assert "artifacts were put below it on their own (such as 'd/own.txt')" in str(info.value)


def test_the_repr_names_the_class_and_the_root(store: BaseArtifactStore) -> None:
    """``repr(store)`` shows the backend class and its base URI."""
    assert repr(store) == f"{type(store).__name__}({store.base_uri!r})"


def test_verifying_a_directory_needs_its_record_and_every_recorded_file(
    store: BaseArtifactStore, tmp_path: Path
) -> None:
    """get(verify=True) of a directory refuses a file gone, a file added, and a directory put without a record."""
    from scalable.errors import IntegrityError
    from scalable.stores.base import sidecar_key

    _tree(tmp_path / "tree")
    store.put(tmp_path / "tree", "d")
    store._delete_file("d/x.txt")  # a file of the directory lost behind the store's back
    with pytest.raises(IntegrityError) as lost:
        store.get("d", tmp_path / "out1", verify=True)
    assert str(lost.value) == f"{store.uri_for('d')!r} lacks files recorded at put time: ['x.txt']"
    assert not (tmp_path / "out1").exists()
    store.put(tmp_path / "tree", "d")
    store._write_object("d/extra.txt", b"extra")  # a file added behind the store's back
    with pytest.raises(IntegrityError) as extra:
        store.get("d", tmp_path / "out2", verify=True)
    assert str(extra.value) == (f"{store.uri_for('d/extra.txt')!r} was not part of the directory put; cannot verify it")
    assert Path(store.get("d", tmp_path / "out3")).joinpath("extra.txt").read_bytes() == b"extra"
    store._delete_file(sidecar_key("d"))
    with pytest.raises(IntegrityError) as unrecorded:
        store.get("d", tmp_path / "out4", verify=True)
    assert (
        str(unrecorded.value) == f"no digests were recorded for {store.uri_for('d')!r}; cannot verify it (put it again)"
    )


def test_getting_a_directory_publishes_its_tree_digest_files_and_size(
    store: BaseArtifactStore, events: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The artifact/get event of a directory carries kind dir, the tree digest, total size and every file's digest."""
    files = _tree(tmp_path / "tree")
    ref = store.put(tmp_path / "tree", "d")
    out = store.get("d", tmp_path / "back")
    assert out == str(tmp_path / "back")
    (got,) = [e for e in events if e["op"] == "get"]
    assert (got["kind"], got["digest"], got["size_bytes"]) == ("dir", ref.digest, sum(len(v) for v in files.values()))
    assert json.loads(got["attrs"]) == {"files": {rel: _sha(data) for rel, data in files.items()}}
    assert got["key"] == "d" and got["location"] == store.uri_for("d") and got["artifact_name"] == "d"
    store.get("d/sub/y.txt", tmp_path / "y.txt")
    single = [e for e in events if e["op"] == "get"][-1]
    assert (single["kind"], single["size_bytes"], single["artifact_name"]) == ("file", 2, "y.txt")
    assert "attrs" not in single


def test_a_kind_that_contradicts_the_source_is_refused(store: BaseArtifactStore, tmp_path: Path) -> None:
    """kind='file' for a directory, 'dir' for a file, or an empty kind is refused before anything is stored."""
    from scalable.errors import StoreError

    _tree(tmp_path / "tree")
    (tmp_path / "f.txt").write_bytes(b"f")
    with pytest.raises(StoreError) as as_file:
        store.put(tmp_path / "tree", "t", kind="file")
    assert str(as_file.value) == f"cannot put {str(tmp_path / 'tree')!r} with kind='file': it is a dir"
    with pytest.raises(StoreError) as as_dir:
        store.put(tmp_path / "f.txt", "f", kind=ArtifactKind.DIRECTORY)
    assert str(as_dir.value) == f"cannot put {str(tmp_path / 'f.txt')!r} with kind='dir': it is a file"
    with pytest.raises(StoreError) as empty:
        store.put(tmp_path / "f.txt", "f", kind="")
    assert str(empty.value) == "kind must be a non-empty string (file, dir, blob or a label such as 'result')"
    assert store.list_artifacts() == []
    ref = store.put(tmp_path / "f.txt", "f", kind="file")
    assert ref.kind == ArtifactKind.FILE and "label" not in ref.metadata
    labelled = store.put(tmp_path / "tree", "t", kind="result")
    assert labelled.kind == ArtifactKind.DIRECTORY and labelled.metadata["label"] == "result"


def test_put_and_get_report_every_byte_to_progress(store: BaseArtifactStore, tmp_path: Path) -> None:
    """The progress callbacks of put and get add up to the bytes copied, for a file and a directory."""
    files = _tree(tmp_path / "tree")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5 * 1024 * 1024 + 3))
    for source, key, size in (
        (big, "big", big.stat().st_size),
        (tmp_path / "tree", "tree", sum(map(len, files.values()))),
    ):
        put: list[int] = []
        store.put(source, key, progress=put.append)
        got: list[int] = []
        store.get(key, tmp_path / f"back-{key}", progress=got.append)
        assert sum(put) == size and sum(got) == size and all(n > 0 for n in put + got)


def test_files_directly_inside_a_nested_directory_put_verify_and_list_their_digests(
    store: BaseArtifactStore, tmp_path: Path
) -> None:
    """A file right inside a directory put (at the top or deeper) verifies and lists the digest its directory recorded."""
    files = _tree(tmp_path / "tree")
    store.put(tmp_path / "tree", "top")
    store.put(tmp_path / "tree", "runs/r1/out")
    for key in ("top/x.txt", "runs/r1/out/x.txt", "runs/r1/out/sub/deeper/z.bin"):
        rel = key.split("/out/")[-1].removeprefix("top/")
        assert Path(store.get(key, tmp_path / "one", verify=True)).read_bytes() == files[rel]
    refs = {r.metadata["key"]: r.digest for r in store.list_refs()}
    assert refs["top/x.txt"] == _sha(b"x") and refs["top/sub/y.txt"] == _sha(b"yy")
    assert refs["runs/r1/out/sub/deeper/z.bin"] == _sha(b"zzz")


def test_a_file_of_a_nested_directory_put_cannot_be_deleted_alone(store: BaseArtifactStore, tmp_path: Path) -> None:
    """Deleting one file of a directory put at a nested key is refused naming that directory."""
    _tree(tmp_path / "tree")
    store.put(tmp_path / "tree", "runs/r1/out")
    with pytest.raises(KeyConflictError, match="it is part of the directory artifact"):
        store.delete("runs/r1/out/sub/y.txt")
    assert store.exists("runs/r1/out/sub/y.txt")


def test_deleting_a_file_the_store_did_not_write_reports_a_file(tmp_path: Path, events: list[dict[str, Any]]) -> None:
    """A file dropped into a local store by hand is deleted as kind file, without size or digest."""
    store = build_artifact_store(tmp_path / "artifacts")
    store.put_bytes(b"mine", "k/mine.txt")
    (tmp_path / "artifacts" / "k" / "stray.txt").write_bytes(b"stray")
    store.delete("k/stray.txt")
    (deleted,) = [e for e in events if e["op"] == "deleted"]
    assert (deleted["key"], deleted["kind"]) == ("k/stray.txt", "file")
    assert "digest" not in deleted and "size_bytes" not in deleted and "attrs" not in deleted


def test_put_bytes_reports_its_size_and_digest(store: BaseArtifactStore, events: list[dict[str, Any]]) -> None:
    """The reference and the artifact/put event of put_bytes carry the size and SHA-256 of the bytes."""
    ref = store.put_bytes(bytearray(b"12345"), "n.bin")
    assert (ref.size_bytes, ref.digest, ref.uri) == (5, _sha(b"12345"), store.uri_for("n.bin"))
    (put,) = [e for e in events if e["op"] == "put"]
    assert (put["size_bytes"], put["digest"], put["kind"]) == (5, _sha(b"12345"), "blob")
    assert "attrs" not in put
    assert store.get_bytes("n.bin") == b"12345"


def test_remote_style_lookups_at_once_give_the_same_answers(tmp_path: Path) -> None:
    """A store running its lookups on the shared lookup threads behaves as one running them in turn."""
    from scalable.stores import base

    store = memory_store()
    store.concurrent_lookups = True
    assert base._lookup_executor() is base._lookup_executor()
    _tree(tmp_path / "tree")
    store.put(tmp_path / "tree", "a/b/d")
    store.put_bytes(b"f", "a/f")
    with pytest.raises(KeyConflictError, match="inside the directory artifact"):
        store.put_bytes(b"g", "a/b/d/sub/g")
    with pytest.raises(KeyConflictError, match="a file is stored at"):
        store.put_bytes(b"g", "a/f/g")
    with pytest.raises(KeyConflictError, match="part of the directory artifact"):
        store.delete("a/b/d/x.txt")
    store.delete("a/b/d")
    assert store.list_artifacts() == ["a/f"]


@contextlib.contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes of one file fail with EFBIG (RLIMIT_FSIZE) while the block runs."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_put_that_meets_the_file_size_limit_fails_naming_source_and_key(tmp_path: Path) -> None:
    """A write refused by the file system (EFBIG) is a DiskFullError naming what was put where; nothing is stored."""
    from scalable.errors import DiskFullError

    store = build_artifact_store(tmp_path / "artifacts")
    with _file_size_limit(1 << 20), pytest.raises(DiskFullError) as blob:
        store.put_bytes(b"b" * (2 << 20), "big.bin")
    assert str(blob.value).startswith(f"cannot put {store.uri_for('big.bin')!r}: ")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(10 << 20))  # above one chunk: copied by the kernel, hashed as it lands
    with _file_size_limit(6 << 20), pytest.raises(DiskFullError) as file:
        store.put(big, "k/big.bin")
    assert str(file.value).startswith(f"cannot put {str(big)!r} at {store.uri_for('k/big.bin')!r}: ")
    (tmp_path / "tree").mkdir()
    inner = tmp_path / "tree" / "inner.bin"
    inner.write_bytes(b"i" * (2 << 20))
    with _file_size_limit(1 << 20), pytest.raises(DiskFullError) as tree:
        store.put(tmp_path / "tree", "t")
    assert str(tree.value).startswith(f"cannot put {str(inner)!r}")
    assert store.list_artifacts() == []
    assert store.put(big, "k/big.bin").digest == _sha(big.read_bytes())  # with room, the same put works


def test_nesting_refusals_at_nested_keys_name_the_exact_prefix(store: BaseArtifactStore, tmp_path: Path) -> None:
    """Deep in the key space, a refusal names the very prefix holding the file or directory in the way."""
    _tree(tmp_path / "tree")
    store.put_bytes(b"f", "a/f")
    with pytest.raises(KeyConflictError) as below_file:
        store.put_bytes(b"g", "a/f/g/h")
    assert str(below_file.value) == (
        f"cannot store {store.uri_for('a/f/g/h')!r}: a file is stored at {store.uri_for('a/f')!r}, so nothing can be "
        "stored below it; delete it first or choose another key"
    )
    store.put(tmp_path / "tree", "a/b/d")
    with pytest.raises(KeyConflictError) as inside:
        store.put_bytes(b"g", "a/b/d/sub/g")
    assert str(inside.value) == (
        f"cannot store {store.uri_for('a/b/d/sub/g')!r}: it is inside the directory artifact {store.uri_for('a/b/d')!r}; "
        "put the whole directory again, or delete it first"
    )
    store.put_bytes(b"own", "a/c/own.txt")
    with pytest.raises(KeyConflictError, match=r"artifacts were put below it on their own \(such as 'a/c/own.txt'\)"):
        store.put(tmp_path / "tree", "a/c")
    assert store.list_artifacts("a/c") == ["a/c/own.txt"]


def test_a_get_reports_the_size_of_every_chunk_and_names_what_it_cannot_write(
    store: BaseArtifactStore, events: list[dict[str, Any]], tmp_path: Path
) -> None:
    """A get of several chunks reports the whole size; a destination below a file is refused naming it."""
    from scalable.errors import StoreError

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(9 * 1024 * 1024 + 5))
    store.put(big, "big")
    store.get("big", tmp_path / "back.bin")
    (got,) = [e for e in events if e["op"] == "get"]
    assert got["size_bytes"] == big.stat().st_size and got["digest"] == _sha(big.read_bytes())
    (tmp_path / "plain").write_bytes(b"p")
    with pytest.raises(StoreError) as info:
        store.get("big", tmp_path / "plain" / "out.bin")
    assert str(info.value).startswith(f"cannot write {str(tmp_path / 'plain' / 'out.bin')!r}: ")
    assert "Not a directory" in str(info.value) or "File exists" in str(info.value)


def test_a_changed_stored_file_is_named_with_both_digests(store: BaseArtifactStore, tmp_path: Path) -> None:
    """get(verify=True) of bytes changed since the put says what they hash to and what was recorded."""
    from scalable.errors import IntegrityError

    ref = store.put_bytes(b"before", "f")
    stored = tmp_path / "artifacts" / "f"  # changed behind the store's back, its record kept
    if stored.exists():
        with stored.open("r+b") as fh:
            fh.write(b"after!")
    else:
        store._write_object("f", b"after!")
    with pytest.raises(IntegrityError) as info:
        store.get("f", tmp_path / "out", verify=True)
    assert str(info.value) == (
        f"{store.uri_for('f')!r} hashes to {_sha(b'after!')}, but {ref.digest} was recorded at put time; "
        "the stored object was changed or corrupted"
    )
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".scalable-tmp-*"))


def test_an_empty_destination_is_refused_as_a_destination(store: BaseArtifactStore) -> None:
    """get to an empty path says the destination is empty (it would otherwise mean the current directory)."""
    store.put_bytes(b"x", "k")
    with pytest.raises(ArtifactNotFoundError) as info:
        store.get("k", " ")
    assert str(info.value) == (
        "the local destination path is empty (' '); give a file or directory, or '.' for the current directory"
    )


def test_a_directory_whose_record_meets_the_file_size_limit_fails_naming_the_record(tmp_path: Path) -> None:
    """When the files fit but the directory's digest record does not, the put fails with a DiskFullError naming it."""
    from scalable.errors import DiskFullError
    from scalable.stores.base import sidecar_key

    store = build_artifact_store(tmp_path / "artifacts")
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(40):
        (tree / f"file-{i:02d}.txt").write_bytes(b"small")
    with _file_size_limit(1024), pytest.raises(DiskFullError) as info:
        store.put(tree, "d")
    assert str(info.value).startswith(f"cannot write {store.uri_for(sidecar_key('d'))!r}: ")


@pytest.mark.parametrize("size", [10, 3 * 1024 * 1024])
def test_a_source_longer_than_its_size_hint_is_copied_to_its_end(tmp_path: Path, size: int) -> None:
    """A source that grew since it was measured (here a pipe told 3 bytes) is copied and hashed whole."""
    from scalable.stores.base import copy_hashing

    store = build_artifact_store(tmp_path / "artifacts")
    data = os.urandom(size)
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_end, data), os.close(write_end)))
    writer.start()
    if size < 65536:  # all of it in the pipe before the copy starts: one short read, then the rest
        writer.join()
    upload = store._open_upload("grown.bin", 3)
    try:
        digest, copied = copy_hashing(read_end, upload, 3)
        upload.commit()
    finally:
        writer.join()
        os.close(read_end)
    assert (digest, copied) == (_sha(data), size)
    assert (tmp_path / "artifacts" / "grown.bin").read_bytes() == data


def test_a_file_and_a_directory_never_replace_each_other_and_the_refusal_says_what_is_there(
    store: BaseArtifactStore, tmp_path: Path
) -> None:
    """A file over a directory names how many files are below and one of them; a directory over a file says so."""
    _tree(tmp_path / "tree")
    store.put(tmp_path / "tree", "k/d")
    with pytest.raises(KeyConflictError) as file_over_dir:
        store.put_bytes(b"f", "k/d")
    # A local store sees every file below the key; the generic lookups only the directory's record.
    example = " (3 file(s) below it, such as 'k/d/sub/deeper/z.bin')" if store.scheme == "file" else ""
    assert str(file_over_dir.value) == (
        f"cannot store a file at {store.uri_for('k/d')!r}: a directory is stored there{example}; "
        "delete it first or choose another key"
    )
    store.put_bytes(b"f", "k/f")
    with pytest.raises(KeyConflictError) as dir_over_file:
        store.put(tmp_path / "tree", "k/f")
    assert str(dir_over_file.value) == (
        f"cannot store a directory at {store.uri_for('k/f')!r}: a file is stored there; delete it first or choose another key"
    )
    assert store.get_bytes("k/f") == b"f" and len(store.list_artifacts("k/d/")) == 3


def test_a_sidecar_is_named_by_the_last_segment_until_the_name_would_not_fit() -> None:
    """A 250-byte last segment keeps its readable sidecar name (255 bytes); one byte more is named by its hash."""
    from scalable.stores.base import sidecar_key, sidecar_name

    assert sidecar_name("x" * 250) == "x" * 250 + ".json"
    assert sidecar_name("x" * 251) == f".scalable-long-{hashlib.sha256(b'x' * 251).hexdigest()}.json"
    assert sidecar_key("d/" + "x" * 250) == ".scalable-meta/d/" + "x" * 250 + ".json"
    assert sidecar_key("a/b/c.txt") == ".scalable-meta/a/b/c.txt.json" and sidecar_key("c") == ".scalable-meta/c.json"


def test_a_file_without_a_record_is_fetched_when_nothing_is_verified(tmp_path: Path) -> None:
    """Only get(verify=True) needs a recorded digest: a file dropped in by hand is fetched as it is."""
    from scalable.errors import IntegrityError

    store = build_artifact_store(tmp_path / "artifacts")
    store.put_bytes(b"mine", "k/mine.txt")
    (tmp_path / "artifacts" / "k" / "stray.txt").write_bytes(b"stray")
    assert Path(store.get("k/stray.txt", tmp_path / "out.txt")).read_bytes() == b"stray"
    with pytest.raises(IntegrityError, match="no digest was recorded"):
        store.get("k/stray.txt", tmp_path / "again.txt", verify=True)
    ref = store.put_bytes(b"x", "k/x")
    assert ref.metadata == {"key": "k/x", "store": store.base_uri}
