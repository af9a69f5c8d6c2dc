"""What every artifact store must do, whatever its backend: one suite, inherited per backend.

A backend's test module subclasses :class:`StoreContract` and provides a ``store`` fixture
(a fresh, empty store). Helpers ``captured`` and ``make_tree`` are shared by other tests.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scalable.errors import (
    ArtifactNotFoundError,
    IntegrityError,
    InvalidKeyError,
    KeyConflictError,
    ScalableError,
    UnsafeArtifactError,
)
from scalable.ledger import bus
from scalable.stores import ArtifactKind, ArtifactRef, ArtifactStore, BaseArtifactStore, LocalArtifactStore

__all__ = ["BAD_KEYS", "StoreContract", "captured", "make_tree"]

BAD_KEYS = [
    "",
    "/etc/passwd",
    "../escape",
    "runs/../../escape",
    "runs/./x",
    "runs//x",
    "runs\\x",
    "runs/x\0y",
    "C:/x",
    ".scalable-meta/x.json",
    "runs/.scalable-meta/x",
    ".scalable-tmp-0123456789ab",
    "runs/.scalable-anything/x",
]


@pytest.fixture
def captured() -> Iterator[list[dict[str, Any]]]:
    """Every artifact event published while the test runs, in order."""
    records: list[dict[str, Any]] = []
    unsubscribe = bus.subscribe(records.append, ["artifact"])
    yield records
    unsubscribe()


def make_tree(root: Path) -> dict[str, bytes]:
    """Create a small directory tree under ``root``; return ``{relative/path: bytes}``."""
    files = {
        "a.txt": b"alpha\n",
        "sub/b.bin": bytes(range(256)) * 10,
        "sub/deeper/c.csv": b"x,y\n1,2\n",
        "empty.dat": b"",
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return files


def _expected_tree_digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + hashlib.sha256(files[rel]).hexdigest().encode() + b"\n")
    return h.hexdigest()


class StoreContract:
    """Behaviour every backend inherits; subclasses supply the ``store`` fixture."""

    @pytest.fixture
    def store(self) -> BaseArtifactStore:
        """A fresh, empty store of the backend under test."""
        raise NotImplementedError  # pragma: no cover - every subclass overrides it

    def corrupt(self, store: BaseArtifactStore, key: str, data: bytes) -> None:
        """Change the stored bytes of ``key`` behind the store's back (a backend may override)."""
        store._write_object(key, data)

    # ---- put / get of files ------------------------------------------------------------

    def test_is_an_artifact_store(self, store: BaseArtifactStore) -> None:
        """Every backend satisfies the ArtifactStore protocol and names its scheme."""
        assert isinstance(store, ArtifactStore)
        assert store.base_uri.startswith(store.scheme + "://")
        assert store.base_uri.endswith("/")

    def test_put_file_returns_digest_size_and_uri(self, store: BaseArtifactStore, tmp_path: Path) -> None:
        """A file put reports the SHA-256 of its bytes, its size and the key's full URI."""
        src = tmp_path / "output.csv"
        src.write_bytes(b"a,b\n1,2\n")
        ref = store.put(src, "runs/run-001/output.csv")
        assert isinstance(ref, ArtifactRef)
        assert ref.kind is ArtifactKind.FILE
        assert ref.digest == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
        assert ref.size_bytes == 8
        assert ref.uri == store.uri_for("runs/run-001/output.csv")
        assert ref.uri.endswith("/runs/run-001/output.csv")
        assert ref.metadata["key"] == "runs/run-001/output.csv"

    def test_get_file_round_trips_bytes(self, store: BaseArtifactStore, tmp_path: Path) -> None:
        """What a put stored, a get writes back byte for byte (also with verify)."""
        src = tmp_path / "in.bin"
        src.write_bytes(os.urandom(10_000))
        store.put(src, "k/in.bin")
        out = store.get("k/in.bin", tmp_path / "out.bin", verify=True)
        assert Path(out).read_bytes() == src.read_bytes()

    def test_get_into_existing_directory_uses_basename(self, store: BaseArtifactStore, tmp_path: Path) -> None:
        """Getting a file into an existing directory writes it under the key's basename."""
        src = tmp_path / "in.txt"
        src.write_text("hi")
        store.put(src, "x/y/name.txt")
        dest = tmp_path / "dest"
        dest.mkdir()
        assert Path(store.get("x/y/name.txt", dest)) == dest / "name.txt"
        assert (dest / "name.txt").read_text() == "hi"

    def test_large_file_round_trips(self, store: BaseArtifactStore, tmp_path: Path) -> None:
        """A file of several chunks (streamed, hashed while written) round-trips intact."""
        if hasattr(store, "stream_threshold"):
            store.stream_threshold = 1024 * 1024  # exercise the streaming upload path
        data = os.urandom(9 * 1024 * 1024 + 123)
        src = tmp_path / "big.bin"
        src.write_bytes(data)
        ref = store.put(src, "big/big.bin")
        assert ref.digest == hashlib.sha256(data).hexdigest()
        assert ref.size_bytes == len(data)
        assert store.list_artifacts("big/") == ["big/big.bin"]
        assert Path(store.get("big/big.bin", tmp_path / "back.bin", verify=True)).read_bytes() == data

    def test_put_overwrites_existing_key(self, store: BaseArtifactStore, tmp_path: Path) -> None:
        """A second put at the same key replaces the first one's bytes and digest."""
        src = tmp_path / "f"
        src.write_bytes(b"one")
        store.put(src, "f")
        src.write_bytes(b"two!")
        ref = store.put(src, "f")
        assert store.get_bytes("f") == b"two!"
        assert Path(store.get("f", tmp_path / "g", verify=True)).read_bytes() == b"two!"
        assert ref.size_bytes == 4

    def test_put_with_label_kind_keeps_it_in_event(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """A free-form kind such as 'result' is the event's kind and the ref's label."""
        src = tmp_path / "r.csv"
        src.write_text("1")
        ref = store.put(src, "r.csv", kind="result")
        assert ref.kind is ArtifactKind.FILE
        assert ref.metadata["label"] == "result"
        assert captured[-1]["kind"] == "result"

    # ---- events ------------------------------------------------------------------------

    def test_put_publishes_one_event(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """Every put appends one artifact/put event naming location, key, store, size and digest."""
        src = tmp_path / "output.csv"
        src.write_bytes(b"data")
        ref = store.put(src, "runs/run-001/output.csv")
        assert len(captured) == 1
        ev = captured[0]
        assert (ev["event_type"], ev["op"]) == ("artifact", "put")
        assert ev["artifact_name"] == "output.csv"
        assert ev["location"] == ref.uri
        assert ev["key"] == "runs/run-001/output.csv"
        assert ev["store"] == store.base_uri
        assert ev["kind"] == "file"
        assert ev["size_bytes"] == 4
        assert ev["digest"] == ref.digest
        stream = bus.active().stream_path(ev["run_id"]).read_text()
        assert ev["event_id"] in stream

    def test_get_publishes_one_event(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """Every get appends one artifact/get event (the input side of lineage)."""
        src = tmp_path / "in"
        src.write_bytes(b"abc")
        ref = store.put(src, "in")
        store.get("in", tmp_path / "out")
        ev = captured[-1]
        assert (ev["op"], ev["key"], ev["location"], ev["digest"], ev["size_bytes"]) == (
            "get",
            "in",
            ref.uri,
            ref.digest,
            3,
        )
        assert ev["store"] == store.base_uri

    def test_record_false_publishes_nothing(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """With record=False, put, get, put_bytes, get_bytes and delete publish no event."""
        src = tmp_path / "in"
        src.write_bytes(b"abc")
        store.put(src, "a", record=False)
        store.get("a", tmp_path / "out", record=False)
        store.put_bytes(b"xyz", "b", record=False)
        assert store.get_bytes("b", record=False) == b"xyz"
        store.delete("b", record=False)
        assert captured == []

    # ---- bytes -------------------------------------------------------------------------

    def test_put_bytes_and_get_bytes(self, store: BaseArtifactStore, captured: list[dict[str, Any]]) -> None:
        """Bytes put directly come back equal, with kind blob and a matching digest check."""
        ref = store.put_bytes(b"payload", "cache/ab/cd")
        assert ref.kind is ArtifactKind.BLOB
        assert ref.digest == hashlib.sha256(b"payload").hexdigest()
        assert store.get_bytes("cache/ab/cd", verify_digest=ref.digest) == b"payload"
        assert [e["op"] for e in captured] == ["put", "get"]
        assert captured[0]["kind"] == "blob"

    def test_get_bytes_with_wrong_digest_is_refused(self, store: BaseArtifactStore) -> None:
        """get_bytes with a digest that does not match raises IntegrityError."""
        store.put_bytes(b"payload", "blob")
        with pytest.raises(IntegrityError, match="blob"):
            store.get_bytes("blob", verify_digest="0" * 64)

    def test_get_bytes_of_missing_key(self, store: BaseArtifactStore) -> None:
        """get_bytes of a key never stored raises ArtifactNotFoundError naming it."""
        with pytest.raises(ArtifactNotFoundError, match="nope"):
            store.get_bytes("nope")

    # ---- directories -------------------------------------------------------------------

    def test_put_directory_is_one_event_with_tree_digest(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """A directory put stores every file, totals the size, and records the documented tree digest."""
        files = make_tree(tmp_path / "model_output")
        ref = store.put(tmp_path / "model_output", "runs/run-001/model_output")
        assert ref.kind is ArtifactKind.DIRECTORY
        assert ref.size_bytes == sum(len(d) for d in files.values())
        assert ref.digest == _expected_tree_digest(files)
        assert len(captured) == 1
        ev = captured[0]
        assert (ev["op"], ev["kind"], ev["digest"]) == ("put", "dir", ref.digest)
        assert json.loads(ev["attrs"])["files"] == {rel: hashlib.sha256(d).hexdigest() for rel, d in files.items()}
        assert store.list_artifacts("runs/") == sorted(f"runs/run-001/model_output/{rel}" for rel in files)

    def test_a_tree_of_many_files_deep_below_empty_levels_round_trips(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """Files only at the bottom of several levels (none in between), many of them, one big: every byte and digest kept."""
        files = {f"x/y/z/{i % 7}/f{i:03d}.bin": f"file {i}\n".encode() * (i + 1) for i in range(150)}
        files["x/y/z/big.bin"] = bytes(range(256)) * (5 * 1024 * 1024 // 256 + 3)  # more than a copy chunk
        for rel, data in files.items():
            (tmp_path / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "tree" / rel).write_bytes(data)
        ref = store.put(tmp_path / "tree", "runs/deep")
        assert ref.digest == _expected_tree_digest(files)
        assert ref.size_bytes == sum(len(d) for d in files.values())
        assert json.loads(captured[-1]["attrs"])["files"] == {
            r: hashlib.sha256(d).hexdigest() for r, d in files.items()
        }
        assert store.list_artifacts("runs/") == sorted(f"runs/deep/{rel}" for rel in files)
        out = Path(store.get("runs/deep", tmp_path / "back", verify=True))
        assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == files

    def test_get_directory_round_trips(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """A directory get writes every file back, verified, and reports the same tree digest."""
        files = make_tree(tmp_path / "src")
        ref = store.put(tmp_path / "src", "d")
        out = Path(store.get("d", tmp_path / "restored", verify=True))
        for rel, data in files.items():
            assert (out / rel).read_bytes() == data
        assert captured[-1]["op"] == "get"
        assert captured[-1]["digest"] == ref.digest
        assert captured[-1]["kind"] == "dir"

    def test_file_inside_directory_can_be_verified(self, store: BaseArtifactStore, tmp_path: Path) -> None:
        """A single file of a directory put can be fetched with verify=True."""
        files = make_tree(tmp_path / "src")
        store.put(tmp_path / "src", "d")
        out = store.get("d/sub/b.bin", tmp_path / "b.bin", verify=True)
        assert Path(out).read_bytes() == files["sub/b.bin"]

    def test_reput_directory_drops_stale_files(self, store: BaseArtifactStore, tmp_path: Path) -> None:
        """Putting a directory again leaves exactly the new tree under the key."""
        make_tree(tmp_path / "src")
        store.put(tmp_path / "src", "d")
        (tmp_path / "src" / "a.txt").unlink()
        store.put(tmp_path / "src", "d")
        assert "d/a.txt" not in store.list_artifacts("d/")
        assert store.get("d", tmp_path / "again", verify=True)

    def test_symlink_inside_tree_is_stored_as_content(self, store: BaseArtifactStore, tmp_path: Path) -> None:
        """A link to a file inside the tree is stored as a regular file with the target's bytes."""
        make_tree(tmp_path / "src")
        (tmp_path / "src" / "link.txt").symlink_to("a.txt")
        store.put(tmp_path / "src", "d")
        assert store.get_bytes("d/link.txt") == b"alpha\n"

    def test_symlink_out_of_tree_is_refused(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """A link that leaves the directory is refused by name; nothing is stored or recorded."""
        make_tree(tmp_path / "src")
        (tmp_path / "secret").write_text("s")
        (tmp_path / "src" / "leak").symlink_to(tmp_path / "secret")
        with pytest.raises(UnsafeArtifactError, match="leak"):
            store.put(tmp_path / "src", "d")
        assert store.list_artifacts() == []
        assert captured == []

    def test_fifo_in_tree_is_refused(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """A fifo inside a directory is refused by name; nothing is stored or recorded."""
        make_tree(tmp_path / "src")
        os.mkfifo(tmp_path / "src" / "pipe")
        with pytest.raises(UnsafeArtifactError, match="pipe"):
            store.put(tmp_path / "src", "d")
        assert store.list_artifacts() == []
        assert captured == []

    # ---- exists / list / delete --------------------------------------------------------

    def test_exists(self, store: BaseArtifactStore, tmp_path: Path) -> None:
        """exists is true for stored files and directories, false for anything else."""
        make_tree(tmp_path / "src")
        store.put(tmp_path / "src", "dir")
        store.put_bytes(b"x", "file")
        assert store.exists("file")
        assert store.exists("dir")
        assert store.exists("dir/sub/b.bin")
        assert not store.exists("missing")
        assert not store.exists("dir/sub/missing")

    def test_list_artifacts_is_recursive_sorted_and_relative(self, store: BaseArtifactStore) -> None:
        """list_artifacts lists every file key below the root, sorted, filtered by prefix."""
        for key in ["b/2", "a/1", "a/x/y/3", "c"]:
            store.put_bytes(b"v", key)
        assert store.list_artifacts() == ["a/1", "a/x/y/3", "b/2", "c"]
        assert store.list_artifacts("a/") == ["a/1", "a/x/y/3"]
        assert store.list_artifacts("a/x") == ["a/x/y/3"]
        assert store.list_artifacts("zzz/") == []

    def test_delete(self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]) -> None:
        """delete removes a file or a directory and publishes artifact/deleted."""
        make_tree(tmp_path / "src")
        store.put(tmp_path / "src", "dir")
        store.put_bytes(b"x", "file")
        store.delete("dir")
        store.delete("file")
        assert store.list_artifacts() == []
        assert [e["op"] for e in captured] == ["put", "put", "deleted", "deleted"]
        assert captured[2]["kind"] == "dir"
        with pytest.raises(ArtifactNotFoundError, match="file"):
            store.delete("file")

    # ---- bad input ---------------------------------------------------------------------

    @pytest.mark.parametrize("key", BAD_KEYS)
    def test_bad_keys_are_refused(
        self, store: BaseArtifactStore, tmp_path: Path, key: str, captured: list[dict[str, Any]]
    ) -> None:
        """Keys that are empty, absolute, escape the root, or carry NUL/backslash are refused."""
        src = tmp_path / "f"
        src.write_bytes(b"x")
        for call in (
            lambda: store.put(src, key),
            lambda: store.put_bytes(b"x", key),
            lambda: store.get(key, tmp_path / "out"),
            lambda: store.exists(key),
            lambda: store.delete(key),
        ):
            with pytest.raises(InvalidKeyError) as info:
                call()
            assert isinstance(info.value, ValueError)
        assert store.list_artifacts() == []
        assert captured == []
        assert not (tmp_path / "out").exists()

    def test_missing_source_is_refused(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """Putting a path that does not exist raises ArtifactNotFoundError naming it; nothing changes."""
        with pytest.raises(ArtifactNotFoundError, match=r"nowhere\.csv"):
            store.put(tmp_path / "nowhere.csv", "k")
        assert store.list_artifacts() == []
        assert captured == []

    def test_get_missing_key_is_refused(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """Getting a key never stored raises ArtifactNotFoundError naming it; nothing is written."""
        with pytest.raises(ArtifactNotFoundError, match="runs/none"):
            store.get("runs/none", tmp_path / "out")
        assert not (tmp_path / "out").exists()
        assert captured == []

    def test_corrupted_file_fails_verification(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """A stored file whose bytes changed after put fails get(verify=True); nothing is written."""
        src = tmp_path / "f"
        src.write_bytes(b"original")
        store.put(src, "f")
        self.corrupt(store, "f", b"tampered")
        with pytest.raises(IntegrityError, match="hashes to") as info:
            store.get("f", tmp_path / "out", verify=True)
        assert isinstance(info.value, ScalableError)
        assert not (tmp_path / "out").exists()
        assert [e["op"] for e in captured] == ["put"]

    def test_corrupted_directory_fails_verification(self, store: BaseArtifactStore, tmp_path: Path) -> None:
        """A directory with a changed file fails get(verify=True)."""
        make_tree(tmp_path / "src")
        store.put(tmp_path / "src", "d")
        self.corrupt(store, "d/sub/b.bin", b"tampered")
        with pytest.raises(IntegrityError, match=r"b\.bin.*hashes to"):
            store.get("d", tmp_path / "out", verify=True)
        assert not (tmp_path / "out" / "sub" / "b.bin").exists()

    # ---- edges of keys and paths -------------------------------------------------------

    def test_empty_local_path_is_refused(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """put('') and get(key, '') are refused: an empty path never means the working directory."""
        (Path.cwd() / "stray.txt").write_text("in the working directory")
        for empty in ("", "  "):
            with pytest.raises(ArtifactNotFoundError, match="path is empty"):
                store.put(empty, "k")
        store.put_bytes(b"x", "k", record=False)
        with pytest.raises(ArtifactNotFoundError, match="path is empty"):
            store.get("k", "")
        assert store.list_artifacts() == ["k"]
        assert captured == []

    @pytest.mark.parametrize(
        "key", ["x.scalable-tmp-0123456789ab", "runs/out.csv.scalable-tmp-", "a/.x.scalable-tmp-ffffffffffff"]
    )
    def test_key_that_looks_like_a_temporary_name_is_listed(
        self, store: BaseArtifactStore, tmp_path: Path, key: str
    ) -> None:
        """A key ending in the temporary-file suffix is stored, listed, found and fetched like any other."""
        src = tmp_path / "f"
        src.write_bytes(b"not temporary")
        store.put(src, key)
        assert store.list_artifacts() == [key]
        assert store.exists(key)
        assert Path(store.get(key, tmp_path / "back", verify=True)).read_bytes() == b"not temporary"
        store.delete(key)
        assert store.list_artifacts() == []

    #: Key segments the backend must store: up to 255 bytes (the longest local file name).
    long_segments: tuple[str, ...] = ("s" * 240, "n" * 251, "m" * 255, "\u00fc" * 127 + "a")

    def test_long_key_segments_fit(self, store: BaseArtifactStore, tmp_path: Path) -> None:
        """A key segment of up to 255 bytes works for files, bytes and directories (temp names and sidecars fit)."""
        for segment in self.long_segments:
            self._long_segment_round_trip(store, tmp_path / str(len(segment)), segment)

    def _long_segment_round_trip(self, store: BaseArtifactStore, tmp_path: Path, segment: str) -> None:
        tmp_path.mkdir()
        src = tmp_path / "f"
        src.write_bytes(b"long")
        make_tree(tmp_path / "tree")
        assert len(segment.encode()) <= 255
        ref = store.put(src, f"runs/{segment}")
        store.put_bytes(b"bytes", f"b/{segment}")
        tree = store.put(tmp_path / "tree", f"d/{segment}")
        assert store.list_artifacts("runs/") == [f"runs/{segment}"]
        assert Path(store.get(f"runs/{segment}", tmp_path / "back", verify=True)).read_bytes() == b"long"
        assert ref.digest == hashlib.sha256(b"long").hexdigest()
        out = Path(store.get(f"d/{segment}", tmp_path / "tree-back", verify=True))
        assert (out / "sub" / "b.bin").read_bytes() == bytes(range(256)) * 10
        assert tree.metadata["files"]
        got = tmp_path / "into"
        got.mkdir()
        assert Path(store.get(f"b/{segment}", got)).name == segment
        for key in (f"runs/{segment}", f"b/{segment}", f"d/{segment}"):
            store.delete(key)
        assert store.list_artifacts() == []

    # ---- keys do not nest across artifacts ---------------------------------------------

    def test_file_put_inside_a_directory_artifact_is_refused(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """After a directory put at 'e', a file, bytes or directory put below 'e' is refused; 'e' still verifies."""
        files = make_tree(tmp_path / "tree")
        src = tmp_path / "x"
        src.write_bytes(b"x")
        store.put(tmp_path / "tree", "e")
        before = store.list_artifacts()
        for call in (
            lambda: store.put(src, "e/x"),
            lambda: store.put(src, "e/sub/b.bin"),
            lambda: store.put(src, "e/new/deeper/x"),
            lambda: store.put_bytes(b"x", "e/x"),
            lambda: store.put(tmp_path / "tree", "e/sub"),
        ):
            with pytest.raises(KeyConflictError, match="inside the directory artifact") as info:
                call()
            assert isinstance(info.value, FileExistsError)
            assert "'e/" not in str(info.value) or store.uri_for("e") in str(info.value)
        assert store.list_artifacts() == before
        out = Path(store.get("e", tmp_path / "out", verify=True))
        assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == set(files)
        assert [e["op"] for e in captured] == ["put", "get"]

    def test_nothing_is_stored_below_a_file(self, store: BaseArtifactStore, tmp_path: Path) -> None:
        """After a file put at 'f', puts of files, bytes and directories below 'f' are refused."""
        make_tree(tmp_path / "tree")
        store.put_bytes(b"file", "f")
        for call in (
            lambda: store.put_bytes(b"x", "f/x"),
            lambda: store.put(tmp_path / "tree", "f/d"),
            lambda: store.put_bytes(b"x", "f/a/b/c"),
        ):
            with pytest.raises(KeyConflictError, match="a file is stored at"):
                call()
        assert store.list_artifacts() == ["f"]
        assert store.get_bytes("f") == b"file"

    def test_file_put_where_a_directory_is_stored_is_refused(self, store: BaseArtifactStore, tmp_path: Path) -> None:
        """A file put at a key that holds a directory (an artifact or keys below it) is refused."""
        make_tree(tmp_path / "tree")
        store.put(tmp_path / "tree", "e")
        store.put_bytes(b"x", "p/x")
        for key in ("e", "p"):
            with pytest.raises(KeyConflictError, match="a directory is stored there"):
                store.put_bytes(b"y", key)
        assert store.get("e", tmp_path / "out", verify=True)
        assert store.get_bytes("p/x") == b"x"

    def test_directory_put_where_a_file_is_stored_is_refused(self, store: BaseArtifactStore, tmp_path: Path) -> None:
        """A directory put at a file's key is refused; so is one over keys put below it on their own."""
        make_tree(tmp_path / "tree")
        store.put_bytes(b"file", "f")
        with pytest.raises(KeyConflictError, match="a file is stored there"):
            store.put(tmp_path / "tree", "f")
        store.put_bytes(b"own", "p/sub/b.bin")
        with pytest.raises(KeyConflictError, match="put below it on their own"):
            store.put(tmp_path / "tree", "p")
        assert store.list_artifacts() == ["f", "p/sub/b.bin"]
        store.delete("p")  # a prefix: removes what is below it, records included
        assert store.put(tmp_path / "tree", "p").kind is ArtifactKind.DIRECTORY
        assert store.get("p", tmp_path / "out", verify=True)

    def test_directory_put_replaces_an_earlier_one_and_leftovers(
        self, store: BaseArtifactStore, tmp_path: Path
    ) -> None:
        """A directory put at its own key again replaces it; files no put recorded (an interrupted put) go too."""
        make_tree(tmp_path / "tree")
        store._write_object("e/stray.tmp", b"left by an interrupted put")
        store.put(tmp_path / "tree", "e")
        assert "e/stray.tmp" not in store.list_artifacts()
        (tmp_path / "tree" / "a.txt").write_bytes(b"changed")
        ref = store.put(tmp_path / "tree", "e")
        assert ref.metadata["files"]["a.txt"] == hashlib.sha256(b"changed").hexdigest()
        assert store.get("e", tmp_path / "out", verify=True)

    def test_delete_inside_a_directory_artifact_is_refused(
        self, store: BaseArtifactStore, tmp_path: Path, captured: list[dict[str, Any]]
    ) -> None:
        """Deleting one file of a directory artifact is refused (the directory would no longer verify)."""
        make_tree(tmp_path / "tree")
        store.put(tmp_path / "tree", "e")
        with pytest.raises(KeyConflictError, match="part of the directory artifact"):
            store.delete("e/sub/b.bin")
        assert store.get("e", tmp_path / "out", verify=True)
        store.delete("e")
        assert store.list_artifacts() == []
        assert [e["op"] for e in captured] == ["put", "get", "deleted"]

    @pytest.mark.parametrize("name", [".scalable-meta/x.json", ".scalable-tmp-0123456789ab", "back\\slash"])
    def test_directory_holding_a_reserved_or_invalid_name_is_refused(
        self, store: BaseArtifactStore, tmp_path: Path, name: str, captured: list[dict[str, Any]]
    ) -> None:
        """A directory whose files would get a reserved or invalid key is refused before anything is stored."""
        make_tree(tmp_path / "tree")
        bad = tmp_path / "tree" / "sub" / name
        bad.parent.mkdir(parents=True, exist_ok=True)
        bad.write_bytes(b"x")
        with pytest.raises(InvalidKeyError) as info:
            store.put(tmp_path / "tree", "d")
        assert repr(str(bad)) in str(info.value)
        assert store.list_artifacts() == []
        assert not store.exists("d")
        assert captured == []

    @pytest.mark.parametrize("damage", [b"", b"not json", b"[1, 2]"])
    def test_a_damaged_sidecar_counts_as_no_record(
        self, store: BaseArtifactStore, tmp_path: Path, damage: bytes
    ) -> None:
        """An empty or unreadable digest sidecar is no record: puts around it work, verify says nothing was recorded."""
        store.put_bytes(b"data", "k", record=False)
        store._write_object(".scalable-meta/k.json", damage)
        store._write_object(".scalable-meta/p.json", damage)
        store.put_bytes(b"x", "p/x")
        assert store.list_artifacts() == ["k", "p/x"]
        if not isinstance(store, LocalArtifactStore):  # a local file keeps its record on itself
            with pytest.raises(IntegrityError, match="no digest was recorded"):
                store.get("k", tmp_path / "out", verify=True)
