"""``@cacheable`` calls: hits skip the function, every lookup and write is an event."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from scalable import FileType, ValueType, cacheable
from scalable.cache import Cache, LocalTier, default_cache, using
from scalable.ledger import bind
from scalable.ledger.log import Ledger


def _cache_events(ledger: Ledger) -> list[dict[str, Any]]:
    out = []
    for run_id in ledger.run_ids():
        out += [r for _n, r in ledger.read_run(run_id) if r["event_type"] == "cache"]
    return sorted(out, key=lambda r: r["event_id"])


def test_bare_and_configured_forms_cache_results() -> None:
    """``@cacheable`` and ``@cacheable(...)`` both compute once and then return the cached value."""
    calls: list[int] = []

    @cacheable
    def square(x: int) -> int:
        calls.append(x)
        return x * x

    @cacheable(ValueType, x=ValueType)
    def cube(x: int) -> int:
        calls.append(-x)
        return x**3

    assert [square(3), square(3), cube(2), cube(2), square(4)] == [9, 9, 8, 8, 16]
    assert calls == [3, -2, 4]
    assert square.__name__ == "square"


def test_miss_write_and_hit_events_carry_the_lineage(tmp_path: Path, ledger: Ledger) -> None:
    """A miss, a write and a hit are published with function, key, value digest, size and inputs."""
    data = tmp_path / "in.csv"
    data.write_text("a,b\n1,2\n")

    @cacheable(path=FileType)
    def rows(path: str) -> int:
        return len(Path(path).read_text().splitlines())

    with bind(run_id="run-writer"):
        assert rows(str(data)) == 2
    with bind(run_id="run-reader"):
        assert rows(str(data)) == 2
    events = _cache_events(ledger)
    assert [(e["op"], e["run_id"]) for e in events] == [
        ("miss", "run-writer"),
        ("write", "run-writer"),
        ("hit", "run-reader"),
    ]
    miss, write, hit = events
    file_digest = hashlib.sha256(data.read_bytes()).hexdigest()
    key = rows.cache_key(str(data))
    for e in events:
        assert e["function_name"] == f"{__name__}.test_miss_write_and_hit_events_carry_the_lineage.<locals>.rows"
        assert e["key_digest"] == key
        assert e["inputs"] == [file_digest]
        assert e["duration_s"] >= 0
    assert miss["hit"] is False and hit["hit"] is True
    assert write["digest"] == hit["digest"] and len(write["digest"]) == 64
    assert write["size_bytes"] == hit["size_bytes"] > 0
    assert json.loads(write["attrs"])["tiers"] == ["local"]
    hit_attrs = json.loads(hit["attrs"])
    assert hit_attrs["tier"] == "local"
    assert hit_attrs["writer_run"] == "run-writer"


def test_the_ledger_views_see_cache_events(ledger: Ledger) -> None:
    """The ``cache`` view lists hits and misses of a cached function."""

    @cacheable
    def one() -> int:
        return 1

    one()
    one()
    rows = ledger.query("SELECT op, hit FROM cache ORDER BY timestamp, event_id").to_pylist()
    assert [r["op"] for r in rows] == ["miss", "write", "hit"]


def test_recompute_runs_every_time_and_overwrites() -> None:
    """``recompute=True`` always calls the function; the latest value is what a reader gets."""
    state = {"n": 0}

    def body() -> int:
        state["n"] += 1
        return state["n"]

    always = cacheable(recompute=True)(body)
    reader = cacheable(body)
    assert [always(), always(), reader()] == [1, 2, 2]


def test_store_false_reads_but_never_writes() -> None:
    """``store=False`` computes on every miss and leaves the cache empty."""
    calls: list[int] = []

    @cacheable(store=False)
    def f(x: int) -> int:
        calls.append(x)
        return x

    assert f(1) == f(1) == 1
    assert calls == [1, 1]
    assert len(default_cache().local) == 0


def test_void_functions_are_left_undecorated() -> None:
    """``void=True`` returns the function itself, as Scalable does: nothing is cached."""

    def f() -> None:
        return None

    assert cacheable(void=True)(f) is f


def test_check_output_recomputes_when_a_returned_file_changed(tmp_path: Path) -> None:
    """With ``check_output``, a hit whose returned file changed since it was cached is recomputed."""
    out = tmp_path / "out.txt"
    calls: list[int] = []

    @cacheable(return_type=FileType, check_output=True)
    def produce(n: int) -> str:
        calls.append(n)
        out.write_text(f"value {n}")
        return str(out)

    assert produce(1) == str(out)
    assert produce(1) == str(out)
    assert calls == [1]
    out.write_text("edited by hand")
    with capture_logs() as logs:
        produce(1)
    assert calls == [1, 1]
    assert out.read_text() == "value 1"
    assert any(log["event"] == "cache.output_changed" for log in logs)


def test_check_output_recomputes_when_a_returned_file_was_deleted(tmp_path: Path) -> None:
    """With ``check_output``, a cached result naming a file that is gone is recomputed, not an error."""
    out = tmp_path / "made.txt"
    calls: list[int] = []

    @cacheable(return_type=FileType, check_output=True)
    def make() -> str:
        calls.append(1)
        out.write_text("made")
        return str(out)

    make()
    out.unlink()
    assert make() == str(out)
    assert out.read_text() == "made"
    assert calls == [1, 1]


class _Unpicklable:
    def __init__(self) -> None:
        self.lock = threading.Lock()


def test_an_unpicklable_result_is_returned_and_not_cached(ledger: Ledger) -> None:
    """The caller gets the value, an error names the function, and no entry or write event exists."""
    calls: list[int] = []

    @cacheable
    def make() -> _Unpicklable:
        calls.append(1)
        return _Unpicklable()

    with capture_logs() as logs:
        value = make()
    assert isinstance(value, _Unpicklable)
    errors = [log for log in logs if log["log_level"] == "error"]
    assert errors and errors[0]["event"] == "cache.value_not_cached"
    assert errors[0]["function"].endswith("make")
    assert "make" in errors[0]["error"]
    assert len(default_cache().local) == 0
    assert [e["op"] for e in _cache_events(ledger)] == ["miss"]
    make()
    assert calls == [1, 1]


def test_exceptions_propagate_and_nothing_is_cached() -> None:
    """An exception from the function reaches the caller and leaves no entry behind."""

    @cacheable
    def boom(x: int) -> int:
        raise ValueError(f"bad {x}")

    with pytest.raises(ValueError, match="bad 1"):
        boom(1)
    assert len(default_cache().local) == 0


def test_cache_dir_setting_is_where_entries_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``SCALABLE_CACHE_DIR`` decides the local tier's directory."""
    monkeypatch.setenv("SCALABLE_CACHE_DIR", str(tmp_path / "elsewhere"))

    @cacheable
    def f() -> int:
        return 5

    f()
    assert default_cache().local.directory == tmp_path / "elsewhere"
    assert (tmp_path / "elsewhere" / "cache.db").is_file()
    assert len(default_cache().local) == 1


def test_using_binds_a_cache_for_a_block(tmp_path: Path) -> None:
    """Inside ``using(cache)`` calls read and write that cache, not the default one."""
    mine = Cache(LocalTier(tmp_path / "mine"))

    @cacheable
    def f() -> int:
        return 7

    with using(mine):
        f()
    assert len(mine.local) == 1
    assert len(default_cache().local) == 0


def test_telemetry_off_still_caches(monkeypatch: pytest.MonkeyPatch, ledger: Ledger) -> None:
    """With ``SCALABLE_TELEMETRY=0`` results are cached and no event is written."""
    monkeypatch.setenv("SCALABLE_TELEMETRY", "0")
    from scalable.ledger import bus

    bus.reset_default()
    calls: list[int] = []

    @cacheable
    def f() -> int:
        calls.append(1)
        return 1

    f()
    f()
    assert calls == [1]
    assert _cache_events(ledger) == []


def test_a_corrupted_local_entry_is_recomputed() -> None:
    """A local entry whose bytes were damaged is refused, recomputed and replaced."""
    calls: list[int] = []

    @cacheable
    def f() -> str:
        calls.append(1)
        return "good"

    f()
    key = f.cache_key()
    local = default_cache().local
    data = bytearray(local.get(key) or b"")
    data[-2] ^= 0xFF
    local.set(key, bytes(data), function=f.function_name)
    with capture_logs() as logs:
        assert f() == "good"
    assert calls == [1, 1]
    assert any(log["event"] == "cache.payload_refused" for log in logs)
    assert f() == "good"
    assert calls == [1, 1]


def test_an_entry_changed_after_it_was_hit_is_refused_again(ledger: Ledger) -> None:
    """Bytes that passed their checks once are not trusted when they change: the next hit checks them again."""
    calls: list[int] = []

    @cacheable
    def f() -> dict[str, int]:
        calls.append(1)
        return {"answer": 42}

    assert f() == f() == {"answer": 42}  # a write, then a hit
    assert calls == [1]
    key = f.cache_key()
    local = default_cache().local
    data = bytearray(local.get(key) or b"")
    data[-3] ^= 0x01  # a digit of the value: still JSON, no longer the digest's bytes
    local.set(key, bytes(data), function=f.function_name)
    with capture_logs() as logs:
        assert f() == {"answer": 42}
    assert calls == [1, 1]
    assert [log["reason"] for log in logs if log["event"] == "cache.payload_refused"] == [
        f"cache entry {key} does not match its SHA-256 (corrupted or tampered); refused and recomputed"
    ]
    assert [e["op"] for e in _cache_events(ledger)] == ["miss", "write", "hit", "miss", "write"]


def test_each_hit_returns_its_own_copy_of_a_mutable_value() -> None:
    """Changing what one hit returned does not change what the next hit returns."""

    @cacheable
    def rows() -> dict[str, list[int]]:
        return {"rows": [1, 2, 3]}

    rows()
    first = rows()
    first["rows"].append(4)
    assert rows() == {"rows": [1, 2, 3]}


def test_values_kept_in_files_by_the_local_tier_hit(ledger: Ledger) -> None:
    """A result too large to sit inside the cache's database (kept in a file beside it) is a hit all the same."""
    calls: list[int] = []

    @cacheable
    def big(n: int) -> str:
        calls.append(n)
        return "x" * n

    assert big(200_000) == big(200_000) == "x" * 200_000
    assert calls == [200_000]
    assert list(default_cache().local.directory.glob("*/*/*.val"))  # kept in a file, not inline
    hits = [e for e in _cache_events(ledger) if e["op"] == "hit"]
    assert [(e["function_name"], e["size_bytes"]) for e in hits] == [
        (big.function_name, len(b'"' + b"x" * 200_000 + b'"'))
    ]


def test_a_cache_directory_that_counts_hits_keeps_counting(tmp_path: Path) -> None:
    """A cache directory set up with diskcache statistics on still counts every hit and miss."""
    import diskcache

    directory = tmp_path / "counted"
    diskcache.Cache(str(directory), statistics=True).close()
    cache = Cache(LocalTier(directory))

    @cacheable
    def f(x: int) -> int:
        return x + 1

    with using(cache):
        assert [f(1), f(1), f(1)] == [2, 2, 2]
    cache.close()
    counted = diskcache.Cache(str(directory))
    assert counted.stats() == (2, 1)  # (hits, misses)
    counted.close()


def test_a_forked_child_reads_the_cache_through_its_own_connection(tmp_path: Path) -> None:
    """After a fork the child hits the entries of the parent, and the parent keeps hitting them after the child exits."""
    import os

    calls: list[int] = []

    @cacheable
    def f(x: int) -> int:
        calls.append(x)
        return x * 10

    assert f(1) == f(1) == 10
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only when it hit without computing
        code = 0 if f(1) == 10 and calls == [1] and f(2) == 20 and calls == [1, 2] else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert f(1) == 10 and f(2) == 20  # the child's entry is there for the parent
    assert calls == [1]


def test_lineage_crosses_runs_through_the_cache(tmp_path: Path, ledger: Ledger) -> None:
    """Data flow links input file -> cached value; the context links the writing run -> the reusing run."""
    data = tmp_path / "in.csv"
    data.write_text("x\n1\n")

    @cacheable(path=FileType)
    def load(path: str) -> str:
        return Path(path).read_text()

    with bind(run_id="run-a"):
        load(str(data))
    with bind(run_id="run-b"):
        load(str(data))
    edges = {
        (r["src"], r["dst"], r["relation"])
        for r in ledger.query(
            "SELECT src, dst, relation FROM lineage UNION ALL SELECT src, dst, relation FROM lineage_context"
        ).to_pylist()
    }
    write = next(e for e in _cache_events(ledger) if e["op"] == "write")
    file_digest = hashlib.sha256(data.read_bytes()).hexdigest()
    assert (file_digest, write["digest"], "derived_from") in edges
    flow = ledger.query("SELECT DISTINCT src, dst, relation FROM lineage").to_pylist()
    assert flow == [{"src": file_digest, "dst": write["digest"], "relation": "derived_from"}]
    assert ("run-a", write["digest"], "generated") in edges
    assert ("run-a", "run-b", "reused") in edges
    assert (write["digest"], "run-b", "used") in edges
