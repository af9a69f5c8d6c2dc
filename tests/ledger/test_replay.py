"""Replay restores every artifact it can, reports every one it cannot, and writes nothing unverified."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from scalable.errors import ConfigError, IntegrityError, RestoreError
from scalable.ledger import bind
from scalable.ledger.log import Ledger
from scalable.ledger.replay import ReplayResult
from scalable.stores import LocalArtifactStore
from tests.conftest import CliInvoker


def _five_artifacts(store: LocalArtifactStore, src: Path) -> dict[str, bytes]:
    """Put three files and two directories in run 'run-five'; return {relative restored path: bytes}."""
    expected: dict[str, bytes] = {}
    with bind(run_id="run-five"):
        for name in ("a.bin", "b.bin", "c.bin"):
            data = hashlib.sha256(name.encode()).digest() * 1000
            (src / name).write_bytes(data)
            store.put(src / name, f"runs/five/{name}")
            expected[f"runs/five/{name}"] = data
        for name in ("d1", "d2"):
            (src / name / "sub").mkdir(parents=True)
            (src / name / "x.txt").write_bytes(f"{name} x\n".encode())
            (src / name / "sub" / "y.txt").write_bytes(f"{name} y\n".encode())
            store.put(src / name, f"runs/five/{name}")
            expected[f"runs/five/{name}/x.txt"] = f"{name} x\n".encode()
            expected[f"runs/five/{name}/sub/y.txt"] = f"{name} y\n".encode()
    return expected


def test_two_corrupted_among_five_restores_three_and_reports_two(
    ledger: Ledger, isolated: Path, cli: CliInvoker
) -> None:
    """Two corrupted artifacts (the first file and a directory) among five: three restored byte-identical, two reported, exit 1."""
    store = LocalArtifactStore(isolated / "store")
    src = isolated / "src"
    src.mkdir()
    expected = _five_artifacts(store, src)
    (store.root / "runs/five/a.bin").write_bytes(b"bit rot")
    (store.root / "runs/five/d1/sub/y.txt").write_bytes(b"edited")

    with pytest.raises(RestoreError) as info:
        ledger.replay("run-five", into=isolated / "restored")
    assert isinstance(info.value, IntegrityError) and info.value.exit_code == 1
    result = info.value.result
    assert isinstance(result, ReplayResult)
    assert sorted(f.key for f in result.failed) == ["runs/five/a.bin", "runs/five/d1"]
    assert all("not the recorded" in f.reason for f in result.failed)
    assert "runs/five/a.bin" in str(info.value) and "runs/five/d1" in str(info.value)
    assert len(result.restored) == 3
    restored = isolated / "restored"
    good = {k: v for k, v in expected.items() if not k.startswith(("runs/five/a.bin", "runs/five/d1/"))}
    found = {p.relative_to(restored).as_posix(): p.read_bytes() for p in restored.rglob("*") if p.is_file()}
    assert found == good

    out = cli("ledger", "replay", "run-five", "--into", str(isolated / "by-cli"), "--format", "json")
    assert out.exit_code == 1
    (summary,) = json.loads(out.stdout)
    assert (summary["run_id"], summary["restored"], summary["not_restored"]) == ("run-five", 3, 2)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("not restored: runs/five/") for line in lines)
    assert "Traceback" not in out.stderr
    found = {
        p.relative_to(isolated / "by-cli").as_posix(): p.read_bytes()
        for p in (isolated / "by-cli").rglob("*")
        if p.is_file()
    }
    assert found == good


def test_a_corrupted_artifact_never_replaces_a_good_restored_copy(ledger: Ledger, isolated: Path) -> None:
    """Restoring again after the stored bytes were corrupted leaves the earlier verified copy untouched."""
    store = LocalArtifactStore(isolated / "store")
    src = isolated / "src"
    src.mkdir()
    expected = _five_artifacts(store, src)
    into = isolated / "restored"
    assert len(ledger.replay("run-five", into=into).restored) == 5
    (store.root / "runs/five/b.bin").write_bytes(b"bit rot")
    (store.root / "runs/five/d2/x.txt").write_bytes(b"edited")
    with pytest.raises(RestoreError):
        ledger.replay("run-five", into=into)
    found = {p.relative_to(into).as_posix(): p.read_bytes() for p in into.rglob("*") if p.is_file()}
    assert found == expected  # no temporary file left either


def test_missing_and_unreadable_artifacts_are_reported_and_the_rest_restored(
    ledger: Ledger, isolated: Path, cli: CliInvoker
) -> None:
    """A deleted file and a deleted directory are reported as gone; the other three are restored."""
    store = LocalArtifactStore(isolated / "store")
    src = isolated / "src"
    src.mkdir()
    _five_artifacts(store, src)
    (store.root / "runs/five/c.bin").unlink()
    for p in sorted((store.root / "runs/five/d2").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (store.root / "runs/five/d2").rmdir()
    with pytest.raises(RestoreError) as info:
        ledger.replay("run-five", into=isolated / "restored")
    result = info.value.result
    assert isinstance(result, ReplayResult)
    assert {(f.key, f.reason) for f in result.failed} == {
        ("runs/five/c.bin", "nothing is stored there any more"),
        ("runs/five/d2", "nothing is stored there any more"),
    }
    assert len(result.restored) == 3
    out = cli("ledger", "replay", "run-five", "--into", str(isolated / "again"))
    assert out.exit_code == 1 and out.stderr.count("not restored:") == 2


def test_a_key_with_a_255_byte_segment_is_restored(ledger: Ledger, isolated: Path) -> None:
    """Restoring writes through a short temporary name, so the longest file name a key can have is restored."""
    store = LocalArtifactStore(isolated / "store")
    name = "n" * 255
    (isolated / "f").write_bytes(b"long name")
    (isolated / "tree").mkdir()
    (isolated / "tree" / name).write_bytes(b"inside a tree")
    with bind(run_id="run-long"):
        store.put(isolated / "f", f"runs/{name}")
        store.put(isolated / "tree", f"trees/{name}")
    result = ledger.replay("run-long", into=isolated / "restored")
    assert len(result.restored) == 2
    assert (isolated / "restored" / "runs" / name).read_bytes() == b"long name"
    assert (isolated / "restored" / "trees" / name / name).read_bytes() == b"inside a tree"


def test_an_empty_restore_directory_is_refused(ledger: Ledger, isolated: Path, cli: CliInvoker) -> None:
    """--into '' is refused (exit 2, one line) instead of restoring into the working directory."""
    store = LocalArtifactStore(isolated / "store")
    src = isolated / "src"
    src.mkdir()
    _five_artifacts(store, src)
    with pytest.raises(ConfigError, match="empty"):
        ledger.replay("run-five", into="")
    out = cli("ledger", "replay", "run-five", "--into", "")
    assert out.exit_code == 2 and len(out.stderr.strip().splitlines()) == 1
    assert not (isolated / "runs").exists()


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_folder_markers_in_a_stored_directory_are_no_files(
    scheme: str, ledger: Ledger, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Empty ``dir/`` objects a console adds inside a stored directory change neither its audit nor its restore."""
    from scalable.stores import build_artifact_store
    from tests.stores.contract import make_tree

    bucket, options = request.getfixturevalue("s3_bucket" if scheme == "s3" else "gcs_bucket")
    store = build_artifact_store(f"{scheme}://{bucket}/artifacts/", **options)
    files = make_tree(tmp_path / "src")
    with bind(run_id="run-markers"):
        store.put(tmp_path / "src", "d")
    ledger.finish_run("run-markers")
    for marker in ("d/", "d/sub/", "d/empty-folder/"):
        store.fs.pipe_file(f"{bucket}/artifacts/{marker}", b"")
    store.fs.invalidate_cache()
    assert f"{bucket}/artifacts/d/sub/" in store.fs.find(f"{bucket}/artifacts/d")  # the markers are objects
    report = ledger.audit("run-markers", storage_options={scheme: options})
    assert report.ok and report.artifacts == 1, [str(p) for p in report.problems]
    result = ledger.replay("run-markers", into=tmp_path / "restored", storage_options={scheme: options})
    (restored,) = result.restored
    tree = {p.relative_to(restored).as_posix(): p.read_bytes() for p in Path(restored).rglob("*") if p.is_file()}
    assert tree == files
    store.fs.pipe_file(f"{bucket}/artifacts/d/sub/b.bin", b"changed")  # a real file still counts
    (problem,) = ledger.audit("run-markers", storage_options={scheme: options}).problems
    assert problem.kind == "content-changed" and problem.where == f"{scheme}://{bucket}/artifacts/d"
