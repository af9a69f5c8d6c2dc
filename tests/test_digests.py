"""scalable.digests: one digest for a tree on every path to a digest, with one rule for links."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scalable import ScalableSession, cacheable
from scalable.cache import DirType, FileType
from scalable.digests import measure_path, sha256_file, tree_digest, walk_tree
from scalable.errors import ArtifactNotFoundError, CacheArgumentError, ScalableError, UnsafeArtifactError
from scalable.ledger import bus
from scalable.ledger.log import Ledger
from scalable.stores import build_artifact_store
from scalable.ui.download import verified_download

LARGE = 20 * 2**20 + 3  # crosses every read, map and upload chunk size


def _plain(root: Path) -> dict[str, bytes]:
    """A tree with nested and empty directories, unicode names and a large file; returns its files."""
    files = {
        "a.txt": b"alpha\n",
        "sub/b.bin": bytes(range(256)) * 100,
        "sub/deeper/c.txt": b"",
        "donnée/ñandú €.csv": b"x,y\n1,2\n",
        "big.bin": (hashlib.sha256(b"seed").digest() * (LARGE // 32 + 1))[:LARGE],
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "empty" / "nested-empty").mkdir(parents=True)
    return files


def _linked(root: Path) -> dict[str, bytes]:
    """A tree with in-tree links: to a subdirectory, to a file, and one inside the linked
    subdirectory that points up to a file of the tree; returns the files as a reader sees them."""
    files = _plain(root)
    (root / "alias").symlink_to("sub")  # a link to a subdirectory
    (root / "same.txt").symlink_to("a.txt")  # a link to a file
    (root / "sub" / "up.txt").symlink_to("../a.txt")  # reached through alias/ as well
    seen = dict(files)
    seen["same.txt"] = files["a.txt"]
    seen["sub/up.txt"] = files["a.txt"]
    for rel in ("sub/b.bin", "sub/deeper/c.txt", "sub/up.txt"):
        seen["alias/" + rel.removeprefix("sub/")] = seen[rel]
    return seen


def _expected(files: dict[str, bytes]) -> str:
    """The documented tree digest, computed here from the bytes alone."""
    lines = b"".join(f"{rel}\0{hashlib.sha256(data).hexdigest()}\n".encode() for rel, data in sorted(files.items()))
    return hashlib.sha256(lines).hexdigest()


@cacheable(tree=DirType)
def count_files(tree: str) -> int:
    """A cached function of a directory."""
    return sum(len(names) for _d, _s, names in os.walk(tree))


def _store_uri(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "local":
        return str(Path("store").resolve())
    if backend == "memory":
        return f"memory://digests-{os.urandom(4).hex()}/store/"
    bucket, _options = request.getfixturevalue("s3_bucket" if backend == "s3" else "gcs_bucket")
    return f"{backend}://{bucket}/store/"


def _digests_of_every_path(tree: Path, store_uri: str, restore: Path) -> dict[str, str]:
    """The digest of ``tree`` as each part of scalable computes it, by name."""
    found: dict[str, str] = {"measure_path": measure_path(tree).digest, "DirType": DirType(str(tree)).tree()}
    os.environ["SCALABLE_DEFAULT_STORAGE"] = store_uri
    bus.reset_default()
    try:
        with ScalableSession(target="local") as session:
            recorded = session.record_artifact(tree)
            assert recorded is not None
            found["record_artifact"] = recorded["digest"]
            with session.task("read"):
                session.record_artifact(Path("derived.txt"), inputs=[tree])
            ref = session.put(tree, "tree")
            found["store put"] = str(ref.digest)
            found["store get"] = measure_path(Path(session.store.get(f"runs/{session.run_id}/tree", restore / "got")))[
                2
            ]
            count_files(str(tree))
            run_id = session.run_id
    finally:
        del os.environ["SCALABLE_DEFAULT_STORAGE"]
    ledger = Ledger.open()
    events = ledger.query(
        f"SELECT op, digest, inputs FROM events WHERE run_id = '{run_id}' AND event_type IN ('artifact', 'cache')"
    ).to_pylist()
    by_op = {e["op"]: e for e in events}
    found["put event"] = by_op["put"]["digest"]
    found["get event"] = by_op["get"]["digest"]
    found["input used by a record"] = by_op["used"]["digest"]
    found["cache write input"] = by_op["write"]["inputs"][0]
    report = ledger.audit(run_id)
    assert report.ok, [str(p) for p in report.problems]
    ledger.replay(run_id, into=restore / "replayed")
    found["replay"] = measure_path(restore / "replayed" / "runs" / run_id / "tree").digest
    # The explorer's download of the recorded directory: a tar, verified against the digest as sent.
    download = verified_download(ledger, recorded["location"], recorded["digest"])
    with tarfile.open(fileobj=io.BytesIO(b"".join(download.chunks))) as tar:
        sent = {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar if m.isfile()}  # type: ignore[union-attr]
    found["explorer download"] = tree_digest(sent)
    return found


@pytest.mark.parametrize("backend", ["local", "memory", "s3", "gs"])
@pytest.mark.parametrize("shape", ["plain", "linked"])
def test_every_path_to_a_digest_agrees_on_the_same_tree(
    shape: str, backend: str, isolated: Path, request: pytest.FixtureRequest
) -> None:
    """Measuring, a cache argument, a session's record and input, a store's put and get on each
    backend, the audit, a replay and the explorer's download give one digest: the documented
    tree digest of what a reader sees."""
    Path("derived.txt").write_text("d\n")
    tree = isolated / "tree"
    files = (_plain if shape == "plain" else _linked)(tree)
    found = _digests_of_every_path(tree, _store_uri(backend, request), isolated / "restore")
    assert found == dict.fromkeys(found, _expected(files))
    for rel, data in files.items():  # each file alone: store, cache argument and measure agree
        digest = hashlib.sha256(data).hexdigest()
        assert FileType(str(tree / rel)).inputs() == [digest]
        assert measure_path(tree / rel) == ("file", len(data), digest)
    assert sha256_file(tree / "big.bin") == (hashlib.sha256(files["big.bin"]).hexdigest(), LARGE)


def _dangling(root: Path) -> Path:
    (root / "gone").symlink_to("no-such-file")
    return root / "gone"


def _outside(root: Path) -> Path:
    (root.parent / "secret.txt").write_text("s\n")
    (root / "leak").symlink_to(root.parent / "secret.txt")
    return root / "leak"


def _outside_dir(root: Path) -> Path:
    (root.parent / "elsewhere").mkdir()
    (root / "sub" / "away").symlink_to(root.parent / "elsewhere")
    return root / "sub" / "away"


def _loop(root: Path) -> Path:
    (root / "sub" / "back").symlink_to("..")
    return root / "sub" / "back"


def _through_link_outside(root: Path) -> Path:
    """A link inside a linked subdirectory that leaves the tree: refused on that path too."""
    (root.parent / "far.txt").write_text("f\n")
    (root / "alias").symlink_to("sub")
    (root / "sub" / "far").symlink_to(root.parent / "far.txt")
    return root / "sub" / "far"


def _fifo(root: Path) -> Path:
    os.mkfifo(root / "pipe")
    return root / "pipe"


@pytest.mark.parametrize(
    "make", [_dangling, _outside, _outside_dir, _loop, _through_link_outside, _fifo], ids=lambda f: f.__name__[1:]
)
def test_every_path_refuses_what_no_digest_covers_and_names_it(make: Callable[[Path], Path], isolated: Path) -> None:
    """A dangling link, a link out of the tree (directly or through a linked directory), a loop
    or a fifo: measuring, the cache, a session and a store all refuse, naming the entry."""
    tree = isolated / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a\n")
    bad = make(tree)
    name = str(bad.relative_to(isolated))
    attempts: dict[str, Callable[[], Any]] = {
        "walk": lambda: walk_tree(tree),
        "measure": lambda: measure_path(tree),
        "cache argument": lambda: DirType(str(tree)).tree(),
        "cached call": lambda: count_files(str(tree)),
        "store put": lambda: build_artifact_store(isolated / "store").put(tree, "t"),
    }
    with ScalableSession(target="local") as session:
        attempts["record"] = lambda: session.record_artifact(tree)
        attempts["record input"] = lambda: session.record_artifact(isolated / "tree" / "a.txt", inputs=[tree])
        for what, attempt in attempts.items():
            with pytest.raises(ScalableError) as caught:
                attempt()
            assert name in str(caught.value), what
            expected = CacheArgumentError if what.startswith("cache") else UnsafeArtifactError
            assert isinstance(caught.value, expected), what
    assert not (isolated / "store" / "t").exists()


def test_the_tree_digest_is_the_documented_one(tmp_path: Path) -> None:
    """tree_digest hashes sorted ``path NUL digest LF`` lines; an empty tree is the digest of nothing."""
    files = {"b/x": b"1", "a": b"22"}
    assert tree_digest({k: hashlib.sha256(v).hexdigest() for k, v in files.items()}) == _expected(files)
    (tmp_path / "empty" / "inner").mkdir(parents=True)
    assert measure_path(tmp_path / "empty") == ("dir", 0, hashlib.sha256(b"").hexdigest())


def test_a_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    """A file name that no object store can hold is refused, named, instead of failing to encode."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / os.fsdecode(b"bad-\xff")).write_text("x")
    with pytest.raises(UnsafeArtifactError, match="not valid UTF-8"):
        measure_path(tree)


def test_measure_path_names_a_missing_path(tmp_path: Path) -> None:
    """measure_path and walk_tree of a missing path raise ArtifactNotFoundError naming it."""
    with pytest.raises(ArtifactNotFoundError, match="nothing-here"):
        measure_path(tmp_path / "nothing-here")
    with pytest.raises(ArtifactNotFoundError, match="nothing-here"):
        walk_tree(tmp_path / "nothing-here")


def test_a_stored_tree_lists_its_files_as_the_digest_saw_them(isolated: Path) -> None:
    """The put event's file map is the walk's: links are stored as the content a reader sees."""
    tree = isolated / "tree"
    files = _linked(tree)
    store = build_artifact_store(isolated / "store")
    store.put(tree, "t")
    rows = Ledger.open().query("SELECT attrs FROM artifacts WHERE op = 'put'").column(0).to_pylist()
    stored = json.loads(rows[0])["files"]
    assert stored == {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}
