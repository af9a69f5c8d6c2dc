"""Scalable's RemoteCacheBackend on the real S3 server: same API, values stored so they cannot run code."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import s3fs
from structlog.testing import capture_logs

from scalable.artifacts.cache import MAGIC, RemoteCacheBackend, get_remote_cache_backend
from scalable.errors import InvalidKeyError
from scalable.ledger import bus
from scalable.stores import build_artifact_store


class Model:
    """A user's own class: only pickle can hold it."""

    def __init__(self, weights: list[float]) -> None:
        self.weights = weights

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Model) and other.weights == self.weights

    __hash__ = None  # type: ignore[assignment]


class Exploit:
    """Unpickling it would create ``marker``: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (subprocess.call, (["touch", str(self.marker)],))


def digest_of(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def remote(s3_bucket: tuple[str, dict[str, Any]]) -> str:
    """A cache URI in a fresh bucket of the moto server, reached through the environment alone."""
    return f"s3://{s3_bucket[0]}/shared-cache/"


@pytest.fixture
def s3(s3_server: str) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, use_listings_cache=False)


@pytest.fixture
def cache_events() -> Iterator[list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    unsubscribe = bus.subscribe(records.append, ["cache"])
    yield records
    unsubscribe()


def forge(body: bytes, fmt: str, digest: str, **extra: Any) -> bytes:
    """An entry as anyone with write access to the bucket could write it (correct SHA-256, no key)."""
    header = {"digest": digest, "format": fmt, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body), **extra}
    return MAGIC + json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n" + body


VALUES = [
    None,
    {"rows": 3, "names": ["a", "b"], "ratio": 0.25},
    (1, "two", b"\x03"),
    np.linspace(0, 1, 11),
    pd.DataFrame({"region": ["usa", "eu"], "gdp": [21.4, 17.1]}),
    b"\x00raw bytes",
]


def test_put_then_get_on_s3_round_trips_common_values(remote: str, s3: s3fs.S3FileSystem) -> None:
    """put returns True; get returns an equal value; the entry sits at cache/<d[:2]>/<d> under the URI."""
    backend = RemoteCacheBackend(remote)
    assert backend.uri == remote
    for i, value in enumerate(VALUES):
        digest = digest_of(f"value-{i}")
        assert backend.put(digest, value) is True
        back = backend.get(digest)
        if isinstance(value, np.ndarray):
            assert np.array_equal(back, value) and back.dtype == value.dtype
        elif isinstance(value, pd.DataFrame):
            assert back.equals(value)
        else:
            assert back == value and type(back) is type(value)
        assert backend.exists(digest)
        assert s3.exists(f"{remote.removeprefix('s3://')}cache/{digest[:2]}/{digest}")
    # Another backend (another machine) on the same URI reads what the first stored.
    other = RemoteCacheBackend(remote)
    assert other.get(digest_of("value-1")) == VALUES[1]


def test_a_miss_is_none_and_exists_is_false(remote: str, cache_events: list[dict[str, Any]]) -> None:
    """An absent digest gives None (as a cached None does) and exists() is False; lookups are cache events."""
    backend = RemoteCacheBackend(remote)
    digest = digest_of("absent")
    assert backend.get(digest) is None
    assert backend.exists(digest) is False
    assert backend.put(digest, 42)
    assert backend.get(digest) == 42
    bus.active().flush()
    assert [(e["op"], e["key_digest"], e["hit"]) for e in cache_events] == [
        ("miss", digest, False),
        ("write", digest, False),
        ("hit", digest, True),
    ]
    write = cache_events[1]
    assert json.loads(write["attrs"]) == {"backend": "RemoteCacheBackend", "remote": remote, "format": "json"}
    assert write["digest"] and write["size_bytes"] == 2


def test_a_forged_pickle_is_never_executed(remote: str, tmp_path: Path) -> None:
    """Without SCALABLE_CACHE_HMAC_KEY a pickled entry is refused: the code in it does not run."""
    import pickle

    marker = tmp_path / "code-ran"
    digest = digest_of("forged")
    store = build_artifact_store(remote)
    store.put_bytes(
        forge(pickle.dumps(Exploit(marker)), "pickle", digest), RemoteCacheBackend.key_for(digest), record=False
    )
    backend = RemoteCacheBackend(remote)
    with capture_logs() as logs:
        assert backend.get(digest) is None
    assert not marker.exists()
    assert any(log["event"] == "cache.remote_backend.pickle_refused" for log in logs)


def test_a_forged_pickle_is_refused_with_the_key_set(
    remote: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With SCALABLE_CACHE_HMAC_KEY set, an unsigned pickle (or one signed with another key) is refused."""
    import pickle

    marker = tmp_path / "code-ran"
    digest = digest_of("forged-signed")
    body = pickle.dumps(Exploit(marker))
    store = build_artifact_store(remote)
    monkeypatch.setenv("SCALABLE_CACHE_HMAC_KEY", "the-real-key")
    backend = RemoteCacheBackend(remote)
    for entry in (forge(body, "pickle", digest), forge(body, "pickle", digest, hmac="0" * 64)):
        store.put_bytes(entry, RemoteCacheBackend.key_for(digest), record=False)
        with capture_logs() as logs:
            assert backend.get(digest) is None
        assert [log["event"] for log in logs] == ["cache.security.payload_refused"]
    assert not marker.exists()


def test_signed_pickles_load_only_with_the_key(remote: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value only pickle can hold loads where the key is set; without the key it is refused."""
    digest = digest_of("model")
    monkeypatch.setenv("SCALABLE_CACHE_HMAC_KEY", "shared-secret")
    signed = RemoteCacheBackend(remote)
    assert signed.put(digest, Model([0.5, 1.5]))
    assert signed.get(digest) == Model([0.5, 1.5])
    monkeypatch.setenv("SCALABLE_CACHE_HMAC_KEY", "another-secret")
    assert RemoteCacheBackend(remote).get(digest) is None
    monkeypatch.delenv("SCALABLE_CACHE_HMAC_KEY")
    unsigned = RemoteCacheBackend(remote)
    assert unsigned.get(digest) is None
    # Without a key, a value only pickle can hold is stored but never loaded back from the remote.
    assert unsigned.put(digest_of("model-2"), Model([2.0]))
    assert unsigned.get(digest_of("model-2")) is None


def test_with_the_key_set_unsigned_safe_entries_are_refused_too(remote: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the key set every entry must be signed, also JSON ones (a forged answer is still wrong)."""
    digest = digest_of("json")
    RemoteCacheBackend(remote).put(digest, {"answer": 1})
    monkeypatch.setenv("SCALABLE_CACHE_HMAC_KEY", "k")
    keyed = RemoteCacheBackend(remote)
    assert keyed.get(digest) is None
    assert keyed.put(digest, {"answer": 2})
    assert keyed.get(digest) == {"answer": 2}


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda entry, other: entry[:-1] + bytes([entry[-1] ^ 1]), id="body-flipped"),
        pytest.param(lambda entry, other: entry[:-3], id="truncated"),
        pytest.param(lambda entry, other: b"\x80\x05N.", id="raw-pickle-as-scalable-writes-it"),
        pytest.param(lambda entry, other: MAGIC + b"{not json\n{}", id="corrupt-header"),
        pytest.param(lambda entry, other: MAGIC + b'{"digest":"x"}', id="header-without-newline"),
        pytest.param(lambda entry, other: other, id="entry-of-another-digest"),
        pytest.param(
            lambda entry, other: forge(b"{}", "yaml", entry.split(b'"digest":"')[1][:64].decode()), id="unknown-format"
        ),
        pytest.param(
            lambda entry, other: forge(b"{", "json", entry.split(b'"digest":"')[1][:64].decode()), id="undecodable-body"
        ),
    ],
)
def test_damaged_entries_are_misses(remote: str, damage: Any) -> None:
    """An entry that is damaged, foreign, or moved from another digest reads as a miss, never an error."""
    backend = RemoteCacheBackend(remote)
    digest, other = digest_of("kept"), digest_of("other")
    backend.put(digest, [1, 2, 3])
    backend.put(other, [4])
    store = build_artifact_store(remote)
    entry = store.get_bytes(backend.key_for(digest), record=False)
    store.put_bytes(
        damage(entry, store.get_bytes(backend.key_for(other), record=False)), backend.key_for(digest), record=False
    )
    assert backend.get(digest) is None


def test_an_unreachable_remote_never_raises(s3_server: str) -> None:
    """get gives None and put False against a dead endpoint, quickly; exists lets the error through."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # One attempt per call keeps the test short; the default options retry twice, as the cache tier does.
    backend = RemoteCacheBackend(
        "s3://nowhere/cache/",
        client_kwargs={"endpoint_url": f"http://127.0.0.1:{port}"},
        config_kwargs={"retries": {"max_attempts": 1}},
        retries=1,
    )
    start = time.monotonic()
    with capture_logs() as logs:
        assert backend.put(digest_of("a"), {"x": 1}) is False
        assert backend.get(digest_of("a")) is None
    assert time.monotonic() - start < 60
    assert [log["event"] for log in logs] == ["cache.remote_backend.put_failed", "cache.remote_backend.get_failed"]
    with pytest.raises(Exception):
        backend.exists(digest_of("a"))


def test_a_digest_that_is_not_a_key_is_a_miss_and_a_failed_put(tmp_path: Path) -> None:
    """A digest that would escape the cache prefix is refused: get None, put False, exists raises."""
    backend = RemoteCacheBackend(str(tmp_path / "shared"))
    assert backend.put("../../escape", 1) is False
    assert backend.get("../../escape") is None
    with pytest.raises(InvalidKeyError):
        backend.exists("../../escape")
    assert not (tmp_path / "escape").exists()


def test_a_local_uri_is_created_at_construction(isolated: Path) -> None:
    """As in Scalable, a local backend's root exists as soon as the backend does; entries are files under it."""
    backend = RemoteCacheBackend("./shared-cache")
    assert (isolated / "shared-cache").is_dir()
    digest = digest_of("local")
    assert backend.put(digest, "value")
    assert (isolated / "shared-cache" / "cache" / digest[:2] / digest).is_file()
    assert backend.get(digest) == "value"


def test_get_remote_cache_backend_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch, remote: str, isolated: Path
) -> None:
    """None when SCALABLE_CACHE_REMOTE is unset or empty; a new backend on its URI on every call otherwise."""
    assert get_remote_cache_backend() is None
    monkeypatch.setenv("SCALABLE_CACHE_REMOTE", "")
    assert get_remote_cache_backend() is None
    monkeypatch.setenv("SCALABLE_CACHE_REMOTE", remote)
    first, second = get_remote_cache_backend(), get_remote_cache_backend()
    assert isinstance(first, RemoteCacheBackend) and isinstance(second, RemoteCacheBackend)
    assert first is not second and first.uri == second.uri == remote
    digest = digest_of(uuid.uuid4().hex)
    assert first.put(digest, [1.5]) and second.get(digest) == [1.5]


def test_get_remote_cache_backend_is_none_when_the_backend_cannot_be_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """A URI no backend handles gives None and one warning naming the URI, not an exception."""
    monkeypatch.setenv("SCALABLE_CACHE_REMOTE", "nosuchscheme://bucket/cache")
    with capture_logs() as logs:
        assert get_remote_cache_backend() is None
    assert [log["event"] for log in logs] == ["cache.remote_backend.unavailable"]
    assert logs[0]["remote"] == "nosuchscheme://bucket/cache"
