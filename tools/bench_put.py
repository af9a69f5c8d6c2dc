"""Bench ``put``: artifact-store puts against what Scalable's store does today, round by round.

Every case runs once per round, interleaved with its baseline (order alternating); every
ratio is taken within a round. The baselines are :mod:`tools.scalable_baselines`.

- Big file (256 MiB, page cache warm): ``put_big_s`` (``LocalArtifactStore.put`` with its
  event) against ``scalable_big_s`` (Scalable: ``copy2``, then SHA-256 of the copy) and
  ``sha256_big_s`` (``hashlib`` over the file alone: the floor). Targets:
  ``put_big_vs_scalable <= 1.0`` and ``put_big_vs_sha256 <= 1.15`` (ratios of seconds).
- Put loop (10,000 files of 4 KiB; ``--quick`` 1,000), one ``put`` and one event per file,
  against Scalable's put of each file (no event): ``put_loop_files_per_s``,
  ``scalable_loop_files_per_s``; target ``put_loop_vs_scalable >= 1.5`` (ratio of rates).
- Directory put (a tree of the same files), one ``put`` of the directory, against Scalable's
  directory put (``copytree``) followed by the hash walk that gives every file's digest:
  ``put_dir_files_per_s``, ``scalable_dir_files_per_s``; target ``put_dir_vs_scalable >= 3``.
  What the put recorded is read back from the ledger each round: ``put_dir_events_per_put``
  (``artifact/put`` events the one put published; target exactly 1) and
  ``put_dir_digest_coverage`` (share of the tree's files whose correct digest those events
  carry; target 1).
- S3 (moto's server on 127.0.0.1; 256 MiB, ``--quick`` 128 MiB: above 64 MiB, where the store
  turns from one PUT to a multipart upload, so both sizes take the same path): ``s3_put_mb_s`` of
  ``build_artifact_store("s3://...").put`` against ``boto3_upload_mb_s``, boto3's
  ``upload_file`` with its default transfer configuration, same server, same rounds; target
  ``s3_put_vs_boto3 >= 0.9``.
- GCS (gcp-storage-emulator; 64 MiB, ``--quick`` 16 MiB), reported only: ``gcs_put_mb_s``
  against gcsfs's own ``put_file`` (``gcsfs_put_mb_s``, ``gcs_put_vs_gcsfs``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scalable.ledger import Ledger, activate, bind
from scalable.settings import load_settings
from scalable.stores import LocalArtifactStore, build_artifact_store
from tools.bench_harness import Case, Report, Target, interleave, per_second
from tools.local_servers import create_gcs_bucket, create_s3_bucket, gcs_options, gcs_server, s3_options, s3_server
from tools.scalable_baselines import ScalableLocalStore, hash_walk

__all__ = ["SECTIONS", "TARGETS", "run"]

#: The parts of this bench, in the order they run (``tools/bench.py put --only big,s3``).
SECTIONS = ("big", "loop", "dir", "s3", "gcs")

TARGETS = (
    Target("put_big_vs_scalable", "<=", 1.0),
    Target("put_big_vs_sha256", "<=", 1.15),
    Target("put_loop_vs_scalable", ">=", 1.5),
    Target("put_dir_vs_scalable", ">=", 3),
    Target("put_dir_events_per_put", "<=", 1),
    Target("put_dir_events_per_put", ">=", 1),
    Target("put_dir_digest_coverage", ">=", 1),
    Target("s3_put_vs_boto3", ">=", 0.9),
)

_MIB = 1024 * 1024
_SMALL = 4096


def _write_random(path: Path, size: int) -> None:
    block = os.urandom(16 * _MIB)
    with path.open("wb") as fh:
        left = size
        while left > 0:
            n = min(left, len(block))
            fh.write(block[:n])
            left -= n


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _small_files(root: Path, count: int) -> list[Path]:
    root.mkdir(parents=True)
    payload = os.urandom(_SMALL - 8)
    paths = []
    for i in range(count):
        # Spread over subdirectories of 1,000, as a tree of outputs would be.
        path = root / f"part-{i // 1000:02d}" / f"f{i:05d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(payload + i.to_bytes(8, "big"))
        paths.append(path)
    return paths


def _fresh(path: Path) -> Callable[[int], None]:
    """An ``after`` step that removes what a round wrote under ``path``."""

    def remove(_index: int) -> None:
        shutil.rmtree(path, ignore_errors=True)

    return remove


def _put_events(ledger: Ledger, run_id: str) -> list[dict[str, Any]]:
    events = []
    for _line, record in ledger.read_run(run_id):
        if record.get("event_type") == "artifact" and record.get("op") == "put":
            attrs = record.get("attrs")
            record["attrs"] = json.loads(attrs) if isinstance(attrs, str) else (attrs or {})
            events.append(record)
    return events


def _big(report: Report, work: Path, size: int, rounds: int) -> None:
    src = work / "big.bin"
    _write_random(src, size)
    _sha256(src)  # page cache warm, as for a file just written
    ours, theirs = work / "big-ours", work / "big-scalable"

    def put(_index: int) -> None:
        with bind(run_id="run-bench-put-big"):
            LocalArtifactStore(ours).put(src, "big.bin")

    def scalable(_index: int) -> None:
        ScalableLocalStore(theirs).put(src, "big.bin")

    def sha256(_index: int) -> None:
        _sha256(src)

    samples = interleave(
        {"put": Case(put, after=_fresh(ours)), "scalable": Case(scalable, after=_fresh(theirs)), "sha256": sha256},
        rounds=rounds,
    )
    report.param("big_bytes", size)
    report.figure("put_big_s", samples["put"], "lower")
    report.figure("scalable_big_s", samples["scalable"], "lower")
    report.figure("sha256_big_s", samples["sha256"], "lower")
    report.ratio("put_big_vs_scalable", samples["put"], samples["scalable"], "lower")
    report.ratio("put_big_vs_sha256", samples["put"], samples["sha256"], "lower")
    src.unlink()


def _loop(report: Report, work: Path, ledger: Ledger, files: list[Path], rounds: int) -> None:
    ours, theirs = work / "loop-ours", work / "loop-scalable"
    keys = [f"loop/{p.parent.name}/{p.name}" for p in files]
    checked: list[int] = []

    # Each round writes under its own root, removed only after the last round: deleting
    # thousands of files between rounds makes the next round's timing depend on the journal.
    def put(index: int) -> None:
        store = LocalArtifactStore(ours / f"r{index}")
        with bind(run_id=f"run-bench-put-loop-r{index}"):
            for path, key in zip(files, keys, strict=True):
                store.put(path, key)

    def check(index: int) -> None:
        if not checked:
            checked.append(len(_put_events(ledger, f"run-bench-put-loop-r{index}")))

    def scalable(index: int) -> None:
        store = ScalableLocalStore(theirs / f"r{index}")
        for path, key in zip(files, keys, strict=True):
            store.put(path, key)

    samples = interleave({"put": Case(put, after=check), "scalable": scalable}, rounds=rounds, warmup=1)
    shutil.rmtree(ours)
    shutil.rmtree(theirs)
    if checked != [len(files)]:
        raise RuntimeError(f"the put loop of {len(files)} files recorded {checked} artifact/put events")
    ours_rate = per_second(len(files), samples["put"])
    theirs_rate = per_second(len(files), samples["scalable"])
    report.param("loop_files", len(files))
    report.param("small_file_bytes", _SMALL)
    report.figure("put_loop_files_per_s", ours_rate, "higher")
    report.figure("scalable_loop_files_per_s", theirs_rate, "higher")
    report.ratio("put_loop_vs_scalable", ours_rate, theirs_rate, "higher")


def _directory(report: Report, work: Path, ledger: Ledger, tree: Path, count: int, rounds: int) -> None:
    ours, theirs = work / "dir-ours", work / "dir-scalable"
    truth = hash_walk(tree)
    events_per_put: list[float] = []
    coverage: list[float] = []

    def put(index: int) -> None:
        with bind(run_id=f"run-bench-put-dir-r{index}"):
            LocalArtifactStore(ours / f"r{index}").put(tree, "tree")

    def check(index: int) -> None:
        if index < 0:
            return
        events = _put_events(ledger, f"run-bench-put-dir-r{index}")
        carried: set[str] = set()
        for event in events:
            files = event["attrs"].get("files")
            if isinstance(files, dict):
                carried.update(rel for rel, digest in files.items() if truth.get(rel) == digest)
            key = str(event.get("key") or "")
            rel = key[len("tree/") :] if key.startswith("tree/") else None
            if rel is not None and truth.get(rel) == event.get("digest"):
                carried.add(rel)
        events_per_put.append(len(events))
        coverage.append(len(carried) / len(truth))

    def scalable(index: int) -> None:
        store = ScalableLocalStore(theirs / f"r{index}")
        store.put(tree, "tree")
        hash_walk(store.root / "tree")

    samples = interleave({"put": Case(put, after=check), "scalable": scalable}, rounds=rounds, warmup=1)
    shutil.rmtree(ours)
    shutil.rmtree(theirs)
    ours_rate = per_second(count, samples["put"])
    theirs_rate = per_second(count, samples["scalable"])
    report.param("dir_files", count)
    report.figure("put_dir_files_per_s", ours_rate, "higher")
    report.figure("scalable_dir_files_per_s", theirs_rate, "higher")
    report.ratio("put_dir_vs_scalable", ours_rate, theirs_rate, "higher")
    report.figure("put_dir_events_per_put", events_per_put, "lower")
    report.figure("put_dir_digest_coverage", coverage, "higher")


def _s3(report: Report, work: Path, size: int, rounds: int) -> None:
    import boto3

    src = work / "s3.bin"
    _write_random(src, size)
    with s3_server() as endpoint:
        create_s3_bucket(endpoint, "bench")
        store = build_artifact_store("s3://bench/ours/", **s3_options(endpoint))
        client = boto3.client("s3", endpoint_url=endpoint)

        def put(index: int) -> None:
            with bind(run_id="run-bench-put-s3"):
                store.put(src, f"r{index}.bin")

        def drop_ours(index: int) -> None:
            store.delete(f"r{index}.bin", record=False)

        def drop_theirs(index: int) -> None:
            client.delete_object(Bucket="bench", Key=f"boto3/r{index}.bin")

        samples = interleave(
            {
                "put": Case(put, after=drop_ours),
                "boto3": Case(lambda i: client.upload_file(str(src), "bench", f"boto3/r{i}.bin"), after=drop_theirs),
            },
            rounds=rounds,
        )
    src.unlink()
    mb = size / 1e6
    ours, theirs = per_second(mb, samples["put"]), per_second(mb, samples["boto3"])
    report.param("s3_bytes", size)
    report.figure("s3_put_mb_s", ours, "higher")
    report.figure("boto3_upload_mb_s", theirs, "higher")
    report.ratio("s3_put_vs_boto3", ours, theirs, "higher")


def _gcs(report: Report, work: Path, size: int, rounds: int) -> None:
    import gcsfs

    src = work / "gcs.bin"
    _write_random(src, size)
    with gcs_server() as endpoint:
        create_gcs_bucket(endpoint, "bench")
        store = build_artifact_store("gs://bench/ours/", **gcs_options(endpoint))
        fs = gcsfs.GCSFileSystem(**gcs_options(endpoint))

        def put(index: int) -> None:
            with bind(run_id="run-bench-put-gcs"):
                store.put(src, f"r{index}.bin")

        samples = interleave(
            {
                "put": Case(put, after=lambda i: store.delete(f"r{i}.bin", record=False)),
                "gcsfs": Case(
                    lambda i: fs.put_file(str(src), f"bench/gcsfs/r{i}.bin"),
                    after=lambda i: fs.rm_file(f"bench/gcsfs/r{i}.bin"),
                ),
            },
            rounds=rounds,
        )
    src.unlink()
    mb = size / 1e6
    ours, theirs = per_second(mb, samples["put"]), per_second(mb, samples["gcsfs"])
    report.param("gcs_bytes", size)
    report.figure("gcs_put_mb_s", ours, "higher")
    report.figure("gcsfs_put_mb_s", theirs, "higher")
    report.ratio("gcs_put_vs_gcsfs", ours, theirs, "higher")


def run(quick: bool, rounds: int, sections: tuple[str, ...] = SECTIONS) -> Report:
    """Measure the put figures of ``sections`` (every one by default) in interleaved rounds."""
    report = Report()
    count = 1_000 if quick else 10_000
    work = Path(tempfile.mkdtemp(prefix="scalable-bench-put-"))
    ledger = Ledger.open(work / "runs", work / "ledger", settings=load_settings(env={}))
    try:
        with activate(ledger):
            if "big" in sections:
                _big(report, work, 256 * _MIB, rounds)
            if "loop" in sections or "dir" in sections:
                files = _small_files(work / "small", count)
                if "loop" in sections:
                    _loop(report, work, ledger, files, rounds)
                if "dir" in sections:
                    _directory(report, work, ledger, work / "small", count, rounds)
                shutil.rmtree(work / "small")
            if "s3" in sections:
                _s3(report, work, (128 if quick else 256) * _MIB, rounds)
            if "gcs" in sections:
                _gcs(report, work, (16 if quick else 64) * _MIB, rounds)
    finally:
        ledger.close()
        shutil.rmtree(work, ignore_errors=True)
    return report
