"""Bench ``cache``: what a ``@cacheable`` hit, miss and file key cost, against plain diskcache.

Figures (medians of interleaved rounds, each round many calls):

* ``hit_local_us``: a ``@cacheable`` call that hits the local tier: key, lookup, payload
  checks, unpickling and the ``cache/hit`` event appended to the ledger;
* ``diskcache_get_us``: ``diskcache.Cache.get`` of the same value (the baseline), measured in
  the same rounds; ``hit_local_vs_diskcache`` is the ratio (target <= 2);
* ``hit_local_no_event_us`` and ``event_publish_us``: the same hit with telemetry off, and
  one ``cache/hit`` event appended alone: where the microseconds of a hit go;
* ``miss_overhead_us``: a miss (key, lookup, miss and write events, sealing, storing) minus
  the plain call; ``diskcache_set_us``, a plain ``diskcache.Cache.set``, for scale;
* ``hit_remote_ms``: a hit served by the remote tier on an S3 server (moto) on 127.0.0.1,
  local tier emptied before each call;
* ``filetype_key_gb_per_s``: key of a call with a 256 MiB ``FileType`` argument (64 MiB with
  ``--quick``), file in the page cache (target >= 1.0).
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import Figures, Targets, target

from scalable.cache import Cache, FileType, LocalTier, RemoteTier, cacheable, using
from scalable.ledger import bus
from scalable.ledger.context import bind
from scalable.ledger.log import Ledger
from scalable.settings import load_settings

_VALUE = {"name": "result", "rows": list(range(20)), "score": 0.5}


def _per_call_us(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _local_figures(root: Path, quick: bool) -> Figures:
    import diskcache

    n = 2_000 if quick else 10_000
    rounds = 5 if quick else 9
    settings = load_settings(env={}, runs_dir=root / "runs", ledger_dir=root / "ledger", cache_dir=root / "cache")
    ledger = Ledger(settings)
    silent = Ledger(settings.with_overrides(telemetry=False, runs_dir=root / "silent"))
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
    samples: dict[str, list[float]] = {k: [] for k in ("hit", "dc", "silent", "publish", "miss", "plain", "dc_set")}
    counter = iter(range(10, 10**9))
    with using(cache), bind(run_id="run-bench-cache"):
        with bus.activate(ledger):
            compute(1)
        for _ in range(rounds):
            with bus.activate(ledger):
                samples["hit"].append(_per_call_us(lambda: compute(1), n))
                samples["dc"].append(_per_call_us(lambda: baseline.get("k"), n))
                samples["publish"].append(_per_call_us(lambda: bus.publish(event), n))
                samples["miss"].append(_per_call_us(lambda: compute(next(counter)), n // 10))
                samples["plain"].append(_per_call_us(lambda: compute.__wrapped__(next(counter)), n // 10))
                samples["dc_set"].append(_per_call_us(lambda: baseline.set(next(counter), _VALUE), n // 10))
            with bus.activate(silent):
                samples["silent"].append(_per_call_us(lambda: compute(1), n))
    ledger.close()
    silent.close()
    cache.close()
    baseline.close()
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "hit_local_us": round(med["hit"], 2),
        "diskcache_get_us": round(med["dc"], 2),
        "hit_local_vs_diskcache": round(med["hit"] / med["dc"], 3),
        "hit_local_no_event_us": round(med["silent"], 2),
        "hit_local_no_event_vs_diskcache": round(med["silent"] / med["dc"], 3),
        "event_publish_us": round(med["publish"], 2),
        "miss_overhead_us": round(med["miss"] - med["plain"], 2),
        "diskcache_set_us": round(med["dc_set"], 2),
    }


def _remote_figures(root: Path, quick: bool) -> Figures:
    import boto3
    from moto.server import ThreadedMotoServer

    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }.items():
        os.environ.setdefault(name, value)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="bench")
        remote = RemoteTier("s3://bench/cache/", client_kwargs={"endpoint_url": url}, use_listings_cache=False)
        cache = Cache(LocalTier(root / "remote-local"), remote)
        settings = load_settings(env={}, runs_dir=root / "remote-runs", ledger_dir=root / "remote-ledger")
        ledger = Ledger(settings)

        @cacheable
        def compute(x: int) -> dict[str, Any]:
            return _VALUE

        times: list[float] = []
        with using(cache), bus.activate(ledger), bind(run_id="run-bench-cache-remote"):
            compute(1)
            key = compute.cache_key(1)
            for _ in range(20 if quick else 100):
                cache.local.delete(key)
                start = time.perf_counter()
                compute(1)
                times.append(time.perf_counter() - start)
        ledger.close()
        cache.close()
        return {"hit_remote_ms": round(statistics.median(times) * 1e3, 3)}
    finally:
        server.stop()


def _filetype_figures(root: Path, quick: bool) -> Figures:
    size = (64 if quick else 256) << 20
    path = root / "big.bin"
    block = os.urandom(1 << 20)
    with path.open("wb") as fh:
        for _ in range(size >> 20):
            fh.write(block)

    @cacheable(data=FileType)
    def consume(data: str) -> int:
        return 0

    consume.cache_key(str(path))  # page cache warm, as for a file just written
    best = min(_timed(lambda: consume.cache_key(str(path))) for _ in range(3))
    path.unlink()
    return {"filetype_key_gb_per_s": round(size / best / 1e9, 3), "filetype_bytes": float(size)}


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(quick: bool) -> tuple[Figures, Targets]:
    """Measure the cache's hit, miss, remote-hit and file-key costs and the diskcache baseline."""
    figures: Figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        figures.update(_local_figures(root, quick))
        figures.update(_remote_figures(root, quick))
        figures.update(_filetype_figures(root, quick))
    targets = [
        target(figures, "hit_local_vs_diskcache", "<=", 2),
        target(figures, "filetype_key_gb_per_s", ">=", 1.0),
    ]
    return figures, targets
