"""Digests: the documented tree format, streams, unmappable files, links and what each refusal names."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pytest

from scalable import digests
from scalable.digests import measure_path, sha256_file, sha256_stream, tree_digest, walk_tree
from scalable.errors import ArtifactNotFoundError, StoreError, UnsafeArtifactError


@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
@pytest.mark.parametrize("data", [b"", b"a", b"abcdefgh" * 1000])
def test_a_stream_hashes_to_its_bytes_and_size_whatever_the_chunk(data: bytes, chunk: int) -> None:
    """``sha256_stream`` reads to the end in any chunk size and returns hashlib's digest and the byte count."""
    assert sha256_stream(io.BytesIO(data), chunk) == (hashlib.sha256(data).hexdigest(), len(data))


def test_a_stream_is_read_from_where_it_stands() -> None:
    """A stream already partly read is hashed from its position on."""
    stream = io.BytesIO(b"headerBODY")
    stream.read(6)
    assert sha256_stream(stream) == (hashlib.sha256(b"BODY").hexdigest(), 4)


@pytest.mark.parametrize("size", [1, 2, (8 << 20) + 3])
def test_small_and_large_files_hash_to_their_bytes(tmp_path: Path, size: int) -> None:
    """A one-byte file is not the empty digest, and a file larger than one mapped slice is hashed whole."""
    data = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    path = tmp_path / "f"
    path.write_bytes(data)
    assert sha256_file(path) == (hashlib.sha256(data).hexdigest(), size)


_SYSFS = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def test_a_file_that_cannot_be_memory_mapped_is_read_instead() -> None:
    """A regular file mmap refuses (sysfs) is hashed by reading: its digest and size are those of its bytes."""
    if not _SYSFS.exists():
        pytest.skip(f"{_SYSFS} (a regular file that cannot be memory-mapped) is not on this machine")
    data = _SYSFS.read_bytes()
    assert os.stat(_SYSFS).st_size != len(data)  # what stat says is not what is there
    assert sha256_file(_SYSFS) == (hashlib.sha256(data).hexdigest(), len(data))


def test_files_are_opened_non_blocking_and_close_on_exec(tmp_path: Path) -> None:
    """The descriptor of a file to hash neither blocks (a fifo swapped in cannot hang) nor leaks to children."""
    path = tmp_path / "f"
    path.write_bytes(b"x")
    fd = digests._open_regular(path)
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert os.read(fd, 10) == b"x"
    finally:
        os.close(fd)


def test_a_directory_is_no_file_to_hash(tmp_path: Path) -> None:
    """Hashing a directory as a file raises IsADirectoryError with its errno, text and path."""
    with pytest.raises(IsADirectoryError) as info:
        sha256_file(tmp_path)
    assert info.value.errno == errno.EISDIR
    assert info.value.strerror == os.strerror(errno.EISDIR)
    assert info.value.filename == str(tmp_path)


def test_a_fifo_is_refused_unopened_with_its_path(tmp_path: Path) -> None:
    """A fifo is refused before it is opened, naming it and what can be hashed."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeArtifactError) as info:
        sha256_file(fifo)
    assert str(info.value) == (
        f"{str(fifo)!r} is not a regular file (a fifo, socket or device); only regular files "
        "and directories can be hashed or recorded"
    )


def test_the_tree_digest_is_the_documented_line_format() -> None:
    """SHA-256 over ``path NUL digest LF`` per file, sorted by code point; pairs and mappings agree."""
    files = {"b/c.txt": "2" * 64, "a.txt": "1" * 64, "B.txt": "3" * 64, "é.txt": "4" * 64}
    text = "".join(f"{p}\0{d}\n" for p, d in sorted(files.items()))
    want = hashlib.sha256(text.encode()).hexdigest()
    assert text.startswith("B.txt\0")  # code point order: upper case first
    assert tree_digest(files) == want
    assert tree_digest(list(files.items())[::-1]) == want
    assert tree_digest({}) == hashlib.sha256(b"").hexdigest()


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "sub" / "b.bin").write_bytes(b"bb")
    return root


def test_a_symlinked_directory_inside_the_tree_is_walked_under_the_link_name(tmp_path: Path) -> None:
    """A link to a directory inside the tree is walked; its files appear under the link's name, sorted."""
    tree = _tree(tmp_path / "tree")
    (tree / "alias").symlink_to(tree / "sub", target_is_directory=True)
    walked = walk_tree(tree)
    assert [rel for rel, _ in walked] == ["a.txt", "alias/b.bin", "sub/b.bin"]
    assert dict(walked)["alias/b.bin"].read_bytes() == b"bb"
    m = measure_path(tree)
    assert m == ("dir", 5, tree_digest({"a.txt": _sha(b"a"), "alias/b.bin": _sha(b"bb"), "sub/b.bin": _sha(b"bb")}))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_link_to_an_ancestor_is_refused_as_a_loop(tmp_path: Path) -> None:
    """A link pointing at its own directory or an ancestor is refused naming the link and the tree."""
    tree = _tree(tmp_path / "tree")
    (tree / "sub" / "up").symlink_to(tree, target_is_directory=True)
    with pytest.raises(UnsafeArtifactError) as info:
        walk_tree(tree)
    assert str(info.value) == (
        f"symbolic link {str(tree / 'sub' / 'up')!r} in {str(tree)!r} points to a directory it is inside (a loop); "
        "remove it"
    )
    tree2 = _tree(tmp_path / "tree2")
    (tree2 / "sub" / "self").symlink_to(tree2 / "sub", target_is_directory=True)
    with pytest.raises(UnsafeArtifactError, match="points to a directory it is inside"):
        walk_tree(tree2)


def test_links_out_of_the_tree_are_refused_naming_link_tree_and_target(tmp_path: Path) -> None:
    """A link (to a file or a directory) leaving the tree is refused with its target and the fix."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.txt").write_text("o")
    for name, target in (("file-link", outside / "o.txt"), ("dir-link", outside)):
        tree = _tree(tmp_path / f"tree-{name}")
        (tree / "sub" / name).symlink_to(target)
        with pytest.raises(UnsafeArtifactError) as info:
            walk_tree(tree)
        assert str(info.value) == (
            f"symbolic link {str(tree / 'sub' / name)!r} points outside {str(tree)!r} (to {str(target)!r}); "
            "copy the target into the directory or remove the link"
        )


def test_a_link_to_the_tree_root_itself_is_inside(tmp_path: Path) -> None:
    """A file link resolving into the root directory stays inside and counts as that file."""
    tree = _tree(tmp_path / "tree")
    (tree / "sub" / "again.txt").symlink_to(tree / "a.txt")
    assert [rel for rel, _ in walk_tree(tree)] == ["a.txt", "sub/again.txt", "sub/b.bin"]


@pytest.mark.parametrize("where", ["file", "dir"])
def test_a_dangling_link_is_refused_naming_it(tmp_path: Path, where: str) -> None:
    """A dangling link (as a file or as a directory entry) is refused naming the link and the tree."""
    tree = _tree(tmp_path / "tree")
    link = tree / "sub" / "gone"
    if where == "dir":
        (tmp_path / "d").mkdir()
        link.symlink_to(tmp_path / "d", target_is_directory=True)
        (tmp_path / "d").rmdir()
    else:
        link.symlink_to(tmp_path / "missing.txt")
    with pytest.raises(UnsafeArtifactError) as info:
        walk_tree(tree)
    assert str(info.value) == f"symbolic link {str(link)!r} in {str(tree)!r} is dangling or loops; remove it"


def test_a_fifo_inside_a_tree_is_refused_with_the_fix(tmp_path: Path) -> None:
    """A fifo in a directory to store is refused naming it and the tree."""
    tree = _tree(tmp_path / "tree")
    os.mkfifo(tree / "sub" / "pipe")
    with pytest.raises(UnsafeArtifactError) as info:
        walk_tree(tree)
    assert str(info.value) == (
        f"{str(tree / 'sub' / 'pipe')!r} in {str(tree)!r} is not a regular file (a fifo, socket or device); "
        "remove it from the directory"
    )


def test_a_path_that_cannot_be_read_is_a_store_error_naming_it(tmp_path: Path) -> None:
    """A path that exists but cannot be opened (a link loop) gives a StoreError with the path and the reason."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(StoreError) as info:
        measure_path(loop)
    assert str(info.value) == f"cannot read {str(loop)!r}: Too many levels of symbolic links; check its permissions"


def test_walking_what_is_no_directory_is_refused_naming_it(tmp_path: Path) -> None:
    """``walk_tree`` of a missing path says it does not exist; of a file, that it cannot be read as one."""
    with pytest.raises(ArtifactNotFoundError) as missing:
        walk_tree(tmp_path / "x")
    assert str(missing.value) == f"directory {str(tmp_path / 'x')!r} does not exist"
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError) as info:
        walk_tree(tmp_path / "f")
    assert str(info.value) == f"cannot read directory {str(tmp_path / 'f')!r}: Not a directory; check its permissions"


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    """``measure_path`` of a missing file raises ArtifactNotFoundError with its path."""
    with pytest.raises(ArtifactNotFoundError) as info:
        measure_path(tmp_path / "gone.txt")
    assert str(info.value) == f"file {str(tmp_path / 'gone.txt')!r} does not exist"
    assert isinstance(info.value, StoreError)


def test_a_tree_root_that_cannot_be_resolved_is_a_store_error_naming_it(tmp_path: Path) -> None:
    """``walk_tree`` of a link loop says it cannot read that directory, and why."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(StoreError) as info:
        walk_tree(loop)
    assert str(info.value) == (
        f"cannot read directory {str(loop)!r}: Too many levels of symbolic links; check its permissions"
    )


def test_a_name_that_is_not_utf8_is_refused_naming_it_and_the_tree(tmp_path: Path) -> None:
    """The refusal of a name no object store can hold names the entry and the tree, and the fix."""
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    bad = tree / "sub" / os.fsdecode(b"bad-\xff")
    bad.write_text("x")
    with pytest.raises(UnsafeArtifactError) as info:
        walk_tree(tree)
    assert str(info.value) == f"the name of {str(bad)!r} in {str(tree)!r} is not valid UTF-8; rename it"


def test_a_stored_tree_is_its_objects_without_folder_markers(s3_bucket: tuple[str, dict[str, Any]]) -> None:
    """Every object under the prefix is a file at its relative path, sorted; ``dir/`` markers and siblings are not."""
    import fsspec

    bucket, options = s3_bucket
    fs = fsspec.filesystem("s3", **options)
    for key in ("d/", "d/z.txt", "d/sub/", "d/sub/b.bin", "d/a/", "d/a/deep/c", "dx", "d.txt"):
        fs.pipe_file(f"{bucket}/{key}", b"" if key.endswith("/") else key.encode())
    fs.invalidate_cache()
    expected = [
        ("a/deep/c", f"{bucket}/d/a/deep/c"),
        ("sub/b.bin", f"{bucket}/d/sub/b.bin"),
        ("z.txt", f"{bucket}/d/z.txt"),
    ]
    assert digests.stored_tree(fs, f"{bucket}/d") == expected
    assert digests.stored_tree(fs, f"{bucket}/d/") == expected  # the same root with its slash
    assert digests.stored_tree(fs, f"{bucket}/dx") == []  # a file is no tree
    assert digests.stored_tree(fs, f"{bucket}/none") == []
    fs.pipe_file(f"{bucket}/outX/f", b"f")  # only slashes are taken off the root's end
    fs.invalidate_cache()
    assert digests.stored_tree(fs, f"{bucket}/outX/") == [("f", f"{bucket}/outX/f")]
