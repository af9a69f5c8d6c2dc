"""scalable.digests: the one home of file and tree digests, shared by stores, cache and sessions."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from scalable.cache import DirType, FileType
from scalable.digests import measure_path, sha256_file, tree_digest, walk_tree
from scalable.errors import ArtifactNotFoundError, UnsafeArtifactError
from scalable.stores import build_artifact_store


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 100)
    (root / "empty").mkdir()
    return root


def test_stores_cache_and_measure_agree_on_files_and_plain_trees(tmp_path: Path) -> None:
    """A store's put, a cache argument type and measure_path give one digest for a file and a tree."""
    tree = _tree(tmp_path / "tree")
    store = build_artifact_store(tmp_path / "store")
    ref_dir = store.put(tree, "t", record=False)
    ref_file = store.put(tree / "a.txt", "a", record=False)
    assert measure_path(tree) == ("dir", ref_dir.size_bytes, ref_dir.digest)
    assert measure_path(tree / "a.txt") == ("file", 6, ref_file.digest)
    assert DirType(str(tree)).inputs() == [ref_dir.digest]
    assert FileType(str(tree / "a.txt")).inputs() == [ref_file.digest]
    expected = tree_digest(
        {
            "a.txt": hashlib.sha256(b"alpha\n").hexdigest(),
            "sub/b.bin": hashlib.sha256(bytes(range(256)) * 100).hexdigest(),
        }
    )
    assert ref_dir.digest == expected


def test_sha256_file_gives_digest_and_size(tmp_path: Path) -> None:
    """sha256_file returns hashlib's SHA-256 and the byte count, also for an empty file."""
    (tmp_path / "f").write_bytes(b"x" * 3_000_000)
    (tmp_path / "e").write_bytes(b"")
    assert sha256_file(tmp_path / "f") == (hashlib.sha256(b"x" * 3_000_000).hexdigest(), 3_000_000)
    assert sha256_file(tmp_path / "e") == (hashlib.sha256(b"").hexdigest(), 0)


def test_the_two_link_rules_of_walk_tree(tmp_path: Path) -> None:
    """strict refuses a link out of the tree; the lenient walk counts it as the file it points to."""
    (tmp_path / "outside.txt").write_text("o")
    tree = _tree(tmp_path / "tree")
    (tree / "leak").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(UnsafeArtifactError, match="points outside"):
        walk_tree(tree)
    assert [rel for rel, _ in walk_tree(tree, strict=False)] == ["a.txt", "leak", "sub/b.bin"]


def test_measure_path_names_a_missing_path(tmp_path: Path) -> None:
    """measure_path of a missing path raises ArtifactNotFoundError naming it."""
    with pytest.raises(ArtifactNotFoundError, match="nothing-here"):
        measure_path(tmp_path / "nothing-here")
