"""Bad inputs only a local source can show: unreadable files, interrupted puts."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scalable.errors import UnreadableArtifactError
from scalable.stores import build_artifact_store

_SYS_CAPGET, _SYS_CAPSET = 125, 126  # x86_64 syscall numbers
_CAP_V3 = 0x20080522
_DAC_BITS = (1 << 1) | (1 << 2)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _run_without_file_override(fn: Callable[[], Any]) -> BaseException | None:
    """Run ``fn`` in a thread that, if root, has dropped its permission-override capabilities.

    Capabilities are per thread on Linux, so the rest of the test process keeps them.
    """
    result: list[BaseException | None] = [None]

    def target() -> None:
        if os.geteuid() == 0:
            libc = ctypes.CDLL(None, use_errno=True)
            header = _CapHeader(_CAP_V3, 0)
            data = (_CapData * 2)()
            assert libc.syscall(_SYS_CAPGET, ctypes.byref(header), data) == 0
            data[0].effective &= ~_DAC_BITS
            assert libc.syscall(_SYS_CAPSET, ctypes.byref(header), data) == 0
        try:
            fn()
        except BaseException as exc:
            result[0] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    return result[0]


def test_unreadable_source_is_refused(tmp_path: Path, captured: list[dict[str, Any]]) -> None:
    """A source file the user cannot read raises UnreadableArtifactError naming it; nothing changes."""
    store = build_artifact_store(tmp_path / "store")
    src = tmp_path / "secret.csv"
    src.write_text("x")
    src.chmod(0)
    exc = _run_without_file_override(lambda: store.put(src, "k"))
    assert isinstance(exc, UnreadableArtifactError)
    assert isinstance(exc, PermissionError)
    assert "secret.csv" in str(exc)
    assert store.list_artifacts() == []
    assert captured == []


_CHILD = r"""
import json, os, sys, time
from scalable.stores import build_artifact_store

uri, key, src, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
store = build_artifact_store(uri, **options)
if hasattr(store, "stream_threshold"):
    store.stream_threshold = 8 * 1024 * 1024
size = os.path.getsize(src)
copied = [0]

def count(n):
    copied[0] += n
    if copied[0] >= size // 2:
        print("halfway", flush=True)
        time.sleep(600)

# However the store copies the bytes (by the kernel, or through the upload's writes), it stops halfway.
copy_file_range = os.copy_file_range

def halfway_copy(*args, **kwargs):
    n = copy_file_range(*args, **kwargs)
    count(n)
    return n

os.copy_file_range = halfway_copy
open_upload_at = store._open_upload_at

def paused_open(k, size_hint, around):
    upload = open_upload_at(k, size_hint, around)
    if k == key:
        write = upload.write
        def halfway_write(data):
            write(data)
            count(len(data))
        upload.write = halfway_write
    return upload

store._open_upload_at = paused_open
store.put(src, key)
"""


def _kill_halfway(uri: str, key: str, src: Path, options: dict[str, Any]) -> None:
    env = {**os.environ, "SCALABLE_TELEMETRY": "0"}
    with subprocess.Popen(
        [sys.executable, "-c", _CHILD, uri, key, str(src), json.dumps(options)],
        stdout=subprocess.PIPE,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"halfway"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()


def _big_file(path: Path) -> Path:
    with path.open("wb") as fh:
        fh.truncate(200 * 1024 * 1024)
    return path


def test_sigkill_halfway_leaves_no_local_object(tmp_path: Path) -> None:
    """A local put of 200 MB killed halfway leaves nothing at the key, listed or on disk."""
    src = _big_file(tmp_path / "big.bin")
    root = tmp_path / "store"
    _kill_halfway(str(root), "runs/big.bin", src, {})
    store = build_artifact_store(root)
    assert not store.exists("runs/big.bin")
    assert store.list_artifacts() == []
    assert not (root / "runs" / "big.bin").exists()


def test_sigkill_halfway_leaves_no_s3_object(tmp_path: Path, s3_bucket: tuple[str, dict[str, Any]]) -> None:
    """An S3 put of 200 MB killed halfway (a multipart upload) leaves no object at the key."""
    bucket, options = s3_bucket
    src = _big_file(tmp_path / "big.bin")
    uri = f"s3://{bucket}/store/"
    _kill_halfway(uri, "runs/big.bin", src, options)
    store = build_artifact_store(uri, **options)
    assert not store.exists("runs/big.bin")
    assert store.list_artifacts() == []


_TREE_CHILD = r"""
import sys, time
from scalable.stores import build_artifact_store

store = build_artifact_store(sys.argv[1])
done = [0]

def halfway(n):
    done[0] += 1
    if done[0] == 100:
        print("halfway", flush=True)
        time.sleep(600)

store.put(sys.argv[2], "runs/tree", progress=halfway)
"""


def test_sigkill_halfway_through_a_directory_put_leaves_nothing_at_the_key(tmp_path: Path) -> None:
    """A local directory put of 400 files killed after 100 shows none of them: the tree lands whole or not at all."""
    tree = tmp_path / "tree"
    for i in range(400):
        (tree / f"part-{i % 5}").mkdir(parents=True, exist_ok=True)
        (tree / f"part-{i % 5}" / f"f{i:03d}").write_bytes(b"%d" % i)
    root = tmp_path / "store"
    env = {**os.environ, "SCALABLE_TELEMETRY": "0"}
    with subprocess.Popen(
        [sys.executable, "-c", _TREE_CHILD, str(root), str(tree)], stdout=subprocess.PIPE, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == b"halfway"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
    store = build_artifact_store(root)
    assert not store.exists("runs/tree")
    assert store.list_artifacts() == []
    store.put(tree, "runs/tree")  # the next put of the same tree is not in the way of what was left
    assert len(store.list_artifacts("runs/tree/")) == 400
