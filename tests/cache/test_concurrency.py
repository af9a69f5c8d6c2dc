"""Two processes calling one cached function with the same arguments at the same time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from scalable.cache import Cache, LocalTier
from scalable.cache.payload import open_envelope
from tests.cache.helpers import REPO, cache_events


def test_two_processes_at_once_get_the_right_value_and_leave_one_good_entry(tmp_path: Path) -> None:
    """Both racers compute, both get the right value; one intact entry and two write events remain."""
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALABLE_")}
    env.update(
        PYTHONPATH=str(REPO),
        SCALABLE_CACHE_DIR=str(tmp_path / "cache"),
        SCALABLE_RUNS_DIR=str(tmp_path / "runs"),
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.cache.racer", str(rendezvous)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _out, err in outputs]
    expected = {"len": 200_000, "sum": sum(i * i for i in range(200_000)), "met": 2}
    assert [json.loads(out) for out, _err in outputs] == [expected, expected]

    cache = Cache(LocalTier(tmp_path / "cache"))
    assert len(cache.local) == 1
    ((key,),) = [list(cache.local._cache.iterkeys())]
    _pickled, header = open_envelope(cache.local.get(key) or b"", key=key, hmac_key=None)
    assert header["size"] > 0
    ops = sorted(e["op"] for e in cache_events(tmp_path / "runs"))
    assert ops == ["miss", "miss", "write", "write"]
    # A third call in this process is a hit on the entry the racers left.
    from scalable.cache import using
    from tests.cache.racer import heavy

    with using(cache):
        assert len(heavy(str(rendezvous))) == 200_000
    assert len(list(rendezvous.glob("entered-*"))) == 2
