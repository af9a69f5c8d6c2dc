"""One place converts between local paths and file:// URIs, exactly, both ways."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalable.errors import ConfigError
from scalable.stores import LocalArtifactStore, build_artifact_store
from scalable.uris import is_file_uri, is_remote, local_path, open_location, path_to_uri, uri_to_path

#: Characters that break naive conversions: URI delimiters, escapes, spaces, non-ASCII.
_TRICKY = " #%?;&=+@:,'\"[]{}()!$*~\t\\üßé中文\U0001f600\u00a0"
_SEGMENT = st.text(
    alphabet=st.one_of(
        st.sampled_from(_TRICKY), st.characters(blacklist_categories=["Cs"], blacklist_characters="/\0")
    ),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))
#: Bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape).
_RAW_SEGMENT = st.binary(min_size=1, max_size=8).filter(
    lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_SEGMENT, _RAW_SEGMENT.map(os.fsdecode)), min_size=1, max_size=5))
def test_path_to_uri_and_back_is_exact(segments: list[str]) -> None:
    """path -> URI -> path gives the same path, and URI -> path -> URI the same URI, for any characters."""
    path = "/" + "/".join(segments)
    uri = path_to_uri(path)
    assert uri.startswith("file:///")
    assert uri.isascii() and all(c not in uri for c in ' #?\t"')
    assert uri_to_path(uri) == Path(path)
    assert path_to_uri(uri_to_path(uri)) == uri
    assert local_path(uri) == Path(path)


@settings(max_examples=200, deadline=None)
@given(_SEGMENT)
def test_a_percent_sign_is_never_decoded_twice(segment: str) -> None:
    """A literal '%20' in a directory name stays '%20' after a round trip (it is written '%2520')."""
    path = f"/data/{segment}%20{segment}"
    uri = path_to_uri(path)
    assert "%2520" in uri
    assert str(uri_to_path(uri)) == path


def test_known_spellings() -> None:
    """The usual spellings of a file URI name the same path; a project path with a space is encoded."""
    assert path_to_uri("/home/ana/My Project #1 %20 ü/out.csv") == (
        "file:///home/ana/My%20Project%20%231%20%2520%20%C3%BC/out.csv"
    )
    for uri in ("file:///a/b%20c", "file://localhost/a/b%20c", "file:/a/b%20c", "FILE:///a/b%20c", "file:///a/b c"):
        assert uri_to_path(uri) == Path("/a/b c"), uri
    assert path_to_uri("relative/x") == path_to_uri(Path.cwd() / "relative" / "x")


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file://fileserver/share/x", "names the host 'fileserver'"),
        ("file:relative/x", "holds no absolute path"),
        ("file:///a/%00b", "NUL"),
        ("s3://bucket/x", "is not a file:// URI"),
    ],
)
def test_bad_file_uris_are_refused(uri: str, message: str) -> None:
    """A remote host, a relative path, an escaped NUL or another scheme is a ConfigError naming the URI."""
    with pytest.raises(ConfigError, match=message) as info:
        uri_to_path(uri)
    assert isinstance(info.value, ValueError) and uri in str(info.value)


def test_kinds_of_location() -> None:
    """Remote URIs are remote; file URIs and plain paths are local."""
    assert is_remote("s3://b/x") and is_remote("gs://b/x") and is_remote("memory://x")
    assert not is_remote("file:///x") and not is_remote("/x") and not is_remote("rel/x")
    assert is_file_uri("file:///x") and is_file_uri("File:/x") and not is_file_uri("/file:/x")


def test_open_location_decodes_local_uris(isolated: Path) -> None:
    """open_location of a percent-encoded file URI opens the decoded local path."""
    folder = isolated / "My Project #1 %20 ü"
    folder.mkdir()
    (folder / "a b.txt").write_text("x")
    fs, path = open_location(path_to_uri(folder / "a b.txt"))
    assert path == str(folder / "a b.txt")
    assert fs.cat_file(path) == b"x"


def test_local_store_uris_round_trip(isolated: Path) -> None:
    """A local store in a special directory records encoded URIs that build the same store and key."""
    root = isolated / "My Project #1 %20 ü" / "store"
    store = LocalArtifactStore(root)
    assert store.base_uri == path_to_uri(root) + "/"
    src = isolated / "f"
    src.write_text("data")
    ref = store.put(src, "runs/a b#c%20d.txt")
    assert ref.uri == path_to_uri(root / "runs" / "a b#c%20d.txt")
    assert uri_to_path(ref.uri).read_text() == "data"
    again = build_artifact_store(store.base_uri)
    assert isinstance(again, LocalArtifactStore) and again.root == store.root
    assert again.list_artifacts() == ["runs/a b#c%20d.txt"]
    assert build_artifact_store(str(root)).base_uri == store.base_uri
