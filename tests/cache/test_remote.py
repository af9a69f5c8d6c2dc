"""The remote tier: machines share results through it; bad payloads and dead remotes never hurt."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from scalable.cache import Cache, LocalTier, RemoteTier, cacheable, tiers, using
from scalable.cache.payload import seal_value
from scalable.cache.tiers import remote_key
from scalable.ledger import bind
from scalable.ledger.log import Ledger
from tests.cache.helpers import cache_events, run_machine


def _two_machines(tmp_path: Path, remote: str, extra_env: dict[str, str] | None = None) -> None:
    data = tmp_path / "input.bin"
    data.write_bytes(b"0123456789" * 1000)
    side_effect = tmp_path / "computed.log"
    first = run_machine(tmp_path / "machine-1", data, side_effect, remote, extra_env)
    second = run_machine(tmp_path / "machine-2", data, side_effect, remote, extra_env)
    assert first["value"] == second["value"] == {"size": 30_000}
    assert first["run_id"] != second["run_id"]
    # The second machine computed nothing: the function body ran once, on the first.
    assert side_effect.read_text().splitlines() == ["computed"]
    events_1 = cache_events(tmp_path / "machine-1" / "runs")
    events_2 = cache_events(tmp_path / "machine-2" / "runs")
    assert [e["op"] for e in events_1] == ["miss", "write"]
    assert json.loads(events_1[1]["attrs"])["tiers"] == ["local", "remote"]
    assert [e["op"] for e in events_2] == ["hit"]
    hit = events_2[0]
    attrs = json.loads(hit["attrs"])
    assert attrs["tier"] == "remote"
    assert attrs["writer_run"] == first["run_id"] == events_1[1]["run_id"]
    assert hit["run_id"] == second["run_id"]
    assert hit["digest"] == events_1[1]["digest"]
    assert hit["inputs"] == events_1[1]["inputs"]
    # The remote hit filled machine 2's local tier.
    assert len(LocalTier(tmp_path / "machine-2" / "cache")) == 1


def test_two_machines_share_results_through_a_local_directory(tmp_path: Path) -> None:
    """The second machine hits the remote entry the first wrote, and names the first's run."""
    _two_machines(tmp_path, str(tmp_path / "shared-remote"))


def test_two_caches_share_results_through_memory_store(tmp_path: Path, ledger: Ledger) -> None:
    """Two caches (two local directories) over one ``memory://`` remote: the second computes nothing."""
    remote = f"memory://cache-{uuid.uuid4().hex}/"
    machine_1 = Cache(LocalTier(tmp_path / "local-1"), RemoteTier(remote))
    machine_2 = Cache(LocalTier(tmp_path / "local-2"), RemoteTier(remote))
    calls: list[int] = []

    @cacheable
    def work(x: int) -> dict[str, int]:
        calls.append(x)
        return {"x": x * 10}

    with using(machine_1), bind(run_id="run-machine-1"):
        assert work(4) == {"x": 40}
    with using(machine_2), bind(run_id="run-machine-2"):
        assert work(4) == {"x": 40}
        assert work(4) == {"x": 40}
    assert calls == [4]
    hits = [e for e in _events(ledger) if e["op"] == "hit"]
    assert [json.loads(h["attrs"])["tier"] for h in hits] == ["remote", "local"]
    assert {json.loads(h["attrs"])["writer_run"] for h in hits} == {"run-machine-1"}
    assert {h["run_id"] for h in hits} == {"run-machine-2"}


def _events(ledger: Ledger) -> list[dict[str, Any]]:
    out = []
    for run_id in ledger.run_ids():
        out += [r for _n, r in ledger.read_run(run_id) if r["event_type"] == "cache"]
    return sorted(out, key=lambda r: r["event_id"])


def _remote_cache(tmp_path: Path, name: str, hmac_key: bytes | None) -> Cache:
    return Cache(LocalTier(tmp_path / name), RemoteTier(str(tmp_path / "remote")), hmac_key)


@cacheable
def _answer(x: int) -> str:
    _ANSWER_CALLS.append(x)
    return f"answer {x}"


_ANSWER_CALLS: list[int] = []


def _flip_remote_byte(cache: Cache, key: str) -> None:
    assert cache.remote is not None
    store = cache.remote.store
    rkey = remote_key(_answer.function_name, key)
    data = bytearray(store.get_bytes(rkey, record=False))
    data[-3] ^= 0x20
    store.put_bytes(bytes(data), rkey, record=False)


def test_a_flipped_remote_byte_is_caught_by_the_digest_without_hmac(tmp_path: Path) -> None:
    """With no HMAC key, a remote payload with one flipped byte is refused and recomputed."""
    _ANSWER_CALLS.clear()
    writer, reader = _remote_cache(tmp_path, "w", None), _remote_cache(tmp_path, "r", None)
    with using(writer):
        _answer(1)
    _flip_remote_byte(writer, _answer.cache_key(1))
    with using(reader), capture_logs() as logs:
        assert _answer(1) == "answer 1"
    assert _ANSWER_CALLS == [1, 1]
    refused = [log for log in logs if log["event"] == "cache.payload_refused"]
    assert refused and refused[0]["tier"] == "remote" and "SHA-256" in refused[0]["reason"]


def test_a_flipped_remote_byte_is_refused_with_hmac(tmp_path: Path) -> None:
    """With an HMAC key, a tampered remote payload is refused and the value recomputed."""
    _ANSWER_CALLS.clear()
    writer, reader = _remote_cache(tmp_path, "w", b"k1"), _remote_cache(tmp_path, "r", b"k1")
    with using(writer):
        _answer(2)
    _flip_remote_byte(writer, _answer.cache_key(2))
    with using(reader):
        assert _answer(2) == "answer 2"
    assert _ANSWER_CALLS == [2, 2]


def test_a_forged_unsigned_remote_payload_is_refused_as_a_security_event(tmp_path: Path) -> None:
    """A well-formed but unsigned payload (a forged value) is never unpickled when a key is set."""
    _ANSWER_CALLS.clear()
    reader = _remote_cache(tmp_path, "r", b"secret-key")
    key = _answer.cache_key(3)
    forged = seal_value(
        "forged!", key=key, function=_answer.function_name, writer_run="evil", created="t", hmac_key=None
    )
    assert reader.remote is not None
    reader.remote.store.put_bytes(forged.data, remote_key(_answer.function_name, key), record=False)
    with using(reader), capture_logs() as logs:
        assert _answer(3) == "answer 3"
    assert _ANSWER_CALLS == [3]
    security = [log for log in logs if log["event"] == "cache.security.payload_refused"]
    assert security and security[0]["log_level"] == "error" and "unsigned" in security[0]["reason"]
    assert "secret-key" not in json.dumps(logs, default=str)


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_remote_that_refuses_connections_degrades_to_local_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a closed port, calls still return results, cache locally, and warn once."""
    pytest.importorskip("s3fs")
    monkeypatch.setattr(tiers, "_warned_remote_down", False)
    port = _refused_port()
    remote = RemoteTier(
        "s3://nowhere/cache/",
        client_kwargs={"endpoint_url": f"http://127.0.0.1:{port}"},
        config_kwargs={"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 1}},
        key="dummy",
        secret="dummy",
    )
    cache = Cache(LocalTier(tmp_path / "local"), remote)
    calls: list[int] = []

    @cacheable
    def f(x: int) -> int:
        calls.append(x)
        return x + 1

    with using(cache), capture_logs() as logs:
        assert [f(1), f(1), f(2)] == [2, 2, 3]
        remote._down_until = 0.0  # retry now: still down, still no second warning
        assert f(3) == 4
    assert calls == [1, 2, 3]
    warnings = [log for log in logs if log["event"] == "cache.remote_unavailable" and log["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["remote"] == "s3://nowhere/cache/"
    assert len(cache.local) == 3


def test_clear_remote_removes_entries_of_one_function_or_all(tmp_path: Path) -> None:
    """``Cache.clear(remote=True)`` empties the remote tier, by function when asked."""
    cache = _remote_cache(tmp_path, "c", None)

    @cacheable
    def g(x: int) -> int:
        return x

    with using(cache):
        _answer(10)
        g(1)
        g(2)
    assert cache.clear(function=g.function_name, remote=True) == {"local": 2, "remote": 2}
    assert cache.remote is not None
    assert len(cache.remote.store.list_artifacts("v1/")) == 1
    assert cache.clear(remote=True) == {"local": 1, "remote": 1}
    assert cache.remote.store.list_artifacts("v1/") == []


def test_two_machines_share_results_through_s3(tmp_path: Path, s3_bucket: tuple[str, dict[str, Any]]) -> None:
    """Over the S3 server on 127.0.0.1 the second machine computes nothing and names the first's run."""
    bucket, _options = s3_bucket
    _two_machines(tmp_path, f"s3://{bucket}/cache/")


def test_a_remote_that_never_answers_degrades_after_a_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that accepts connections but never replies costs one timeout, then is skipped."""
    pytest.importorskip("s3fs")
    monkeypatch.setattr(tiers, "_warned_remote_down", False)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        remote = RemoteTier(
            "s3://silent/cache/",
            client_kwargs={"endpoint_url": f"http://127.0.0.1:{port}"},
            config_kwargs={"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 1}},
            retries=1,
            key="dummy",
            secret="dummy",
        )
        cache = Cache(LocalTier(tmp_path / "local"), remote)

        @cacheable
        def f(x: int) -> int:
            return x * 2

        with using(cache), capture_logs() as logs:
            assert [f(1), f(2), f(1)] == [2, 4, 2]
    assert not remote.available
    warnings = [log for log in logs if log["event"] == "cache.remote_unavailable" and log["log_level"] == "warning"]
    assert len(warnings) == 1
    assert "imeout" in warnings[0]["error"]
