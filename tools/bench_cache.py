"""Bench ``cache``: what a ``@cacheable`` hit, miss and file key cost, against plain diskcache.

Every figure is the median of interleaved rounds; each round makes many calls of each kind
(20,000; ``--quick`` 5,000; misses and sets a tenth of that) and times them together:

* ``hit_local_us``: a ``@cacheable`` call that hits the local tier: key, lookup, payload
  checks, unpickling and the ``cache/hit`` event appended to the ledger;
* ``diskcache_get_us``: ``diskcache.Cache.get`` of the same value (the baseline), in the same
  rounds; target ``hit_local_vs_diskcache <= 2`` (per-round ratio of the per-call times);
* ``hit_local_no_event_us`` and ``event_publish_us``: the same hit with telemetry off, and
  one ``cache/hit`` event published alone: where the microseconds of a hit go;
* ``miss_overhead_us``: a miss (key, lookup, miss and write events, sealing, storing) minus
  the plain call, per round; ``diskcache_set_us``, a plain ``diskcache.Cache.set``, for scale;
* ``hit_remote_ms``: a hit served by the remote tier on an S3 server (moto) on 127.0.0.1,
  the local tier emptied before each call (untimed), 20 calls a round (``--quick`` 5);
* ``filetype_key_gb_per_s``: key of a call with a 256 MiB ``FileType`` argument (64 MiB with
  ``--quick``), file in the page cache (target >= 1.0), and ``filetype_key_vs_sha256``, its
  time against ``hashlib``'s SHA-256 of the same file in the same round.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scalable.cache import Cache, FileType, LocalTier, RemoteTier, cacheable, using
from scalable.ledger import Ledger, activate, bind, publish
from scalable.settings import load_settings
from tools.bench_harness import Report, Target, interleave
from tools.local_servers import create_s3_bucket, s3_options, s3_server

__all__ = ["SECTIONS", "TARGETS", "run"]

#: The parts of this bench, in the order they run (``tools/bench.py cache --only local``).
SECTIONS = ("local", "remote", "filetype")

TARGETS = (
    Target("hit_local_vs_diskcache", "<=", 2),
    Target("filetype_key_gb_per_s", ">=", 1.0),
)

_VALUE = {"name": "result", "rows": list(range(20)), "score": 0.5}


def _calls(fn: Callable[[], Any], n: int) -> Callable[[int], None]:
    """A case that calls ``fn`` ``n`` times."""

    def run(_index: int) -> None:
        for _ in range(n):
            fn()

    return run


def _per_call_us(seconds: list[float], n: int) -> list[float]:
    return [s / n * 1e6 for s in seconds]


def _local(report: Report, root: Path, n: int, rounds: int) -> None:
    import diskcache

    settings = load_settings(env={})
    ledger = Ledger.open(root / "runs", root / "ledger", settings=settings)
    silent = Ledger.open(root / "silent", root / "ledger", settings=load_settings(env={"SCALABLE_TELEMETRY": "0"}))
    cache = Cache(LocalTier(root / "cache"))
    baseline = diskcache.Cache(str(root / "diskcache"))
    baseline.set("k", _VALUE)

    @cacheable
    def compute(x: int, scale: int = 2) -> dict[str, Any]:
        return _VALUE

    event = {
        "event_type": "cache",
        "op": "hit",
        "function_name": compute.function_name,
        "key_digest": "ab" * 32,
        "hit": True,
        "duration_s": 1e-5,
        "digest": "cd" * 32,
        "size_bytes": 120,
        "attrs": {"tier": "local", "writer_run": "run-bench-cache", "saved_s": 1e-6},
    }
    counter = iter(range(10, 10**9))
    few = max(n // 10, 100)

    def with_ledger(led: Ledger, fn: Callable[[int], None]) -> Callable[[int], None]:
        def run(index: int) -> None:
            with activate(led):
                fn(index)

        return run

    try:
        with using(cache), bind(run_id="run-bench-cache"):
            with activate(ledger):
                compute(1)
            samples = interleave(
                {
                    "hit": with_ledger(ledger, _calls(lambda: compute(1), n)),
                    "diskcache_get": _calls(lambda: baseline.get("k"), n),
                    "hit_no_event": with_ledger(silent, _calls(lambda: compute(1), n)),
                    "publish": with_ledger(ledger, _calls(lambda: publish(event), n)),
                    "miss": with_ledger(ledger, _calls(lambda: compute(next(counter)), few)),
                    "plain": _calls(lambda: compute.__wrapped__(next(counter)), few),
                    "diskcache_set": _calls(lambda: baseline.set(next(counter), _VALUE), few),
                },
                rounds=rounds,
                warmup=1,
            )
    finally:
        ledger.close()
        silent.close()
        cache.close()
        baseline.close()
    hit = _per_call_us(samples["hit"], n)
    get = _per_call_us(samples["diskcache_get"], n)
    silent_hit = _per_call_us(samples["hit_no_event"], n)
    report.param("calls", n)
    report.param("miss_calls", few)
    report.figure("hit_local_us", hit, "lower")
    report.figure("diskcache_get_us", get, "lower")
    report.ratio("hit_local_vs_diskcache", hit, get, "lower")
    report.figure("hit_local_no_event_us", silent_hit, "lower")
    report.ratio("hit_local_no_event_vs_diskcache", silent_hit, get, "lower")
    report.figure("event_publish_us", _per_call_us(samples["publish"], n), "lower")
    report.difference(
        "miss_overhead_us", _per_call_us(samples["miss"], few), _per_call_us(samples["plain"], few), "lower"
    )
    report.figure("diskcache_set_us", _per_call_us(samples["diskcache_set"], few), "lower")


def _remote(report: Report, root: Path, calls: int, rounds: int) -> None:
    with s3_server() as endpoint:
        create_s3_bucket(endpoint, "bench")
        remote = RemoteTier("s3://bench/cache/", **s3_options(endpoint))
        cache = Cache(LocalTier(root / "remote-local"), remote)
        ledger = Ledger.open(root / "remote-runs", root / "remote-ledger", settings=load_settings(env={}))

        @cacheable
        def compute(x: int) -> dict[str, Any]:
            return _VALUE

        def remote_hits(_index: int) -> dict[str, float]:
            spent = 0.0
            for _ in range(calls):
                cache.local.delete(key)
                start = time.perf_counter()
                compute(1)
                spent += time.perf_counter() - start
            return {"seconds": spent}

        try:
            with using(cache), activate(ledger), bind(run_id="run-bench-cache-remote"):
                compute(1)
                key = compute.cache_key(1)
                samples = interleave({"remote_hit": remote_hits}, rounds=rounds)
        finally:
            ledger.close()
            cache.close()
    report.param("remote_calls", calls)
    report.figure("hit_remote_ms", [s / calls * 1e3 for s in samples["remote_hit"]], "lower")


def _filetype(report: Report, root: Path, size: int, rounds: int) -> None:
    path = root / "big.bin"
    block = os.urandom(1 << 20)
    with path.open("wb") as fh:
        for _ in range(size >> 20):
            fh.write(block)

    @cacheable(data=FileType)
    def consume(data: str) -> int:
        return 0

    def key(_index: int) -> None:
        consume.cache_key(str(path))

    def sha256(_index: int) -> None:
        with path.open("rb") as fh:
            hashlib.file_digest(fh, "sha256")

    key(-1)  # page cache warm, as for a file just written
    samples = interleave({"key": key, "sha256": sha256}, rounds=rounds)
    path.unlink()
    report.param("filetype_bytes", size)
    report.figure("filetype_key_gb_per_s", [size / s / 1e9 for s in samples["key"]], "higher")
    report.ratio("filetype_key_vs_sha256", samples["key"], samples["sha256"], "lower")


def run(quick: bool, rounds: int, sections: tuple[str, ...] = SECTIONS) -> Report:
    """Measure the cache figures of ``sections`` (every one by default) and their baselines."""
    report = Report()
    root = Path(tempfile.mkdtemp(prefix="scalable-bench-cache-"))
    try:
        if "local" in sections:
            _local(report, root, 5_000 if quick else 20_000, rounds)
        if "remote" in sections:
            _remote(report, root, 5 if quick else 20, rounds)
        if "filetype" in sections:
            _filetype(report, root, (64 if quick else 256) << 20, rounds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return report
