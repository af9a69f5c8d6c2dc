"""Bench of artifact-store puts: one-pass put against hashing alone and copy-then-hash.

``run(quick)`` returns ``(figures, targets)``; run as a script it prints the bench JSON of
DESIGN.md "Benchmarks". All figures come from one process run on a local store:

- big file (1 GiB, quick 256 MiB), page cache warm, variants interleaved over rounds and the
  minimum kept: ``put_big_s`` (``store.put``), ``sha256_big_s`` (hashlib over the file: the
  floor), ``twopass_big_s`` (copy, then hash the copy), and their ratios;
- small files (10,000 of 4 KiB, quick 2,000), each with its ledger event:
  ``put_small_files_per_s`` against ``twopass_small_files_per_s``;
- report only: ``s3_put_mb_s`` and ``gcs_put_mb_s`` over local servers.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["run"]


def _write_random(path: Path, size: int) -> None:
    block = os.urandom(16 * 1024 * 1024)
    with path.open("wb") as fh:
        left = size
        while left > 0:
            n = min(left, len(block))
            fh.write(block[:n])
            left -= n


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _twopass(src: Path, dst: Path) -> str:
    """How Scalable's store puts today: copy the file, then hash the copy."""
    shutil.copy2(src, dst)
    return _sha256(dst)


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _remote_puts(work: Path, size: int) -> dict[str, float]:
    """MB/s of one put of ``size`` bytes to moto's S3 server and to the GCS emulator."""
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    from scalable.stores import build_artifact_store

    figures: dict[str, float] = {}
    src = work / "remote.bin"
    _write_random(src, size)
    mb = size / 1e6
    try:
        from moto.server import ThreadedMotoServer

        for k, v in {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            os.environ.setdefault(k, v)
        port = _free_port()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            opts = {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}
            s3 = build_artifact_store("s3://bench/put/", **opts)
            s3.fs.mkdir("bench")  # type: ignore[attr-defined]
            figures["s3_put_mb_s"] = round(mb / _timed(lambda: s3.put(src, "remote.bin", record=False)), 1)
        finally:
            server.stop()
    except ImportError:
        pass
    try:
        from gcp_storage_emulator.server import create_server

        port = _free_port()
        gserver = create_server("127.0.0.1", port, in_memory=True)
        gserver.start()
        try:
            gcs = build_artifact_store("gs://bench/put/", endpoint_url=f"http://127.0.0.1:{port}", token="anon")
            gcs.fs.mkdir("bench")  # type: ignore[attr-defined]
            figures["gcs_put_mb_s"] = round(mb / _timed(lambda: gcs.put(src, "remote.bin", record=False)), 1)
        finally:
            gserver.stop()
    except ImportError:
        pass
    return figures


def run(quick: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Measure the put figures; return ``(figures, targets)``."""
    big = (256 if quick else 1024) * 1024 * 1024
    n_small = 2_000 if quick else 10_000
    rounds = 5
    work = Path(tempfile.mkdtemp(prefix="scalable-bench-put-"))
    saved_env = {k: os.environ.get(k) for k in ("SCALABLE_RUNS_DIR", "SCALABLE_TELEMETRY")}
    os.environ["SCALABLE_RUNS_DIR"] = str(work / "runs")
    os.environ["SCALABLE_TELEMETRY"] = "1"
    from scalable.ledger import bus
    from scalable.stores import LocalArtifactStore

    bus.reset_default()
    figures: dict[str, Any] = {"big_bytes": big, "small_files": n_small, "small_file_bytes": 4096}
    try:
        src = work / "big.bin"
        _write_random(src, big)
        _sha256(src)  # warm the page cache
        store = LocalArtifactStore(work / "store")
        twopass_dst = work / "twopass.bin"
        put_t: list[float] = []
        sha_t: list[float] = []
        two_t: list[float] = []
        for _ in range(rounds):
            put_t.append(_timed(lambda: store.put(src, "big.bin")))
            (work / "store" / "big.bin").unlink()
            sha_t.append(_timed(lambda: _sha256(src)))
            two_t.append(_timed(lambda: _twopass(src, twopass_dst)))
            twopass_dst.unlink()
        figures["put_big_s"] = round(min(put_t), 4)
        figures["sha256_big_s"] = round(min(sha_t), 4)
        figures["twopass_big_s"] = round(min(two_t), 4)
        figures["put_big_vs_sha256"] = round(min(put_t) / min(sha_t), 3)
        figures["put_big_vs_twopass"] = round(min(put_t) / min(two_t), 3)
        src.unlink()

        small_dir = work / "small"
        small_dir.mkdir()
        payload = os.urandom(4096)
        smalls = []
        for i in range(n_small):
            p = small_dir / f"f{i:05d}.bin"
            p.write_bytes(payload[:4000] + i.to_bytes(96, "big"))
            smalls.append(p)
        ledger = bus.active()

        def put_small(round_no: int) -> None:
            for i, p in enumerate(smalls):
                store.put(p, f"small{round_no}/{i:05d}.bin")

        def twopass_small(round_no: int) -> None:
            dest = work / f"twopass-small{round_no}"
            dest.mkdir()
            for i, p in enumerate(smalls):
                d = dest / f"{i:05d}.bin"
                digest = _twopass(p, d)
                ledger.append(
                    {
                        "event_type": "artifact",
                        "op": "put",
                        "artifact_name": d.name,
                        "location": d.as_uri(),
                        "kind": "file",
                        "size_bytes": d.stat().st_size,
                        "digest": digest,
                    }
                )

        put_s: list[float] = []
        two_s: list[float] = []
        for r in range(2):
            put_s.append(_timed(lambda r=r: put_small(r)))  # type: ignore[misc]
            two_s.append(_timed(lambda r=r: twopass_small(r)))  # type: ignore[misc]
        figures["put_small_files_per_s"] = round(n_small / min(put_s), 1)
        figures["twopass_small_files_per_s"] = round(n_small / min(two_s), 1)
        figures["put_small_vs_twopass"] = round(min(two_s) / min(put_s), 3)

        figures.update(_remote_puts(work, (16 if quick else 64) * 1024 * 1024))
    finally:
        bus.reset_default()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(work, ignore_errors=True)

    def target(figure: str, op: str, value: float) -> dict[str, Any]:
        got = figures[figure]
        met = got <= value if op == "<=" else got >= value
        return {"figure": figure, "op": op, "value": value, "met": bool(met)}

    targets = [
        target("put_big_vs_sha256", "<=", 1.3),
        target("put_big_vs_twopass", "<=", 0.9),
        target("put_small_vs_twopass", ">=", 2.5),
    ]
    return figures, targets


def main() -> None:
    """Print the bench JSON object of DESIGN.md on stdout."""
    quick = "--quick" in sys.argv[1:]
    figures, targets = run(quick)
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    print(json.dumps({"bench": "put", "machine": machine, "figures": figures, "targets": targets}))


if __name__ == "__main__":
    main()
