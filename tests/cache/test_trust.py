"""The remote tier's trust model: what anyone can write to the bucket is never executed.

Values of common types travel in formats that cannot run code; a pickled value from the remote
loads only when signed with ``SCALABLE_CACHE_HMAC_KEY``; otherwise it is refused (one warning per
process) and recomputed. Errors and logs about the remote never carry a credential.
"""

from __future__ import annotations

import json
import math
import pickle
import socket
import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from structlog.testing import capture_logs

from scalable.cache import Cache, LocalTier, RemoteTier, cacheable, tiers, using
from scalable.cache.codec import SAFE_FORMATS
from scalable.cache.payload import open_envelope, seal_value
from scalable.cache.tiers import remote_key
from scalable.errors import CacheRemoteError
from tests.cache.test_codec import same


class Exploit:
    """Unpickling this creates ``path``: proof that a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@pytest.fixture
def remote_uri() -> str:
    """A fresh shared remote (fsspec memory store) for one test."""
    return f"memory://trust-{uuid.uuid4().hex}/cache/"


@pytest.fixture(autouse=True)
def one_warning_per_test(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test sees the process's first refusal warning afresh."""
    monkeypatch.setattr(tiers, "_warned_pickle", False)
    yield


def machine(tmp_path: Path, name: str, remote: str, hmac_key: bytes | None = None) -> Cache:
    """A machine's cache: its own local tier, the shared remote tier."""
    return Cache(LocalTier(tmp_path / name), RemoteTier(remote), hmac_key)


def plant(cache: Cache, function: str, key: str, value: Any, hmac_key: bytes | None = None) -> None:
    """Write a well-formed entry (digest recomputed) straight into the remote, as a bucket writer could."""
    forged = seal_value(value, key=key, function=function, writer_run="run-evil", created="t", hmac_key=hmac_key)
    assert cache.remote is not None
    cache.remote.store.put_bytes(forged.data, remote_key(function, key), record=False)


def test_a_forged_pickle_without_hmac_is_refused_and_never_executed(tmp_path: Path, remote_uri: str) -> None:
    """A forged pickled entry whose unpickling would create a file: refused with one warning, recomputed, no file."""
    reader = machine(tmp_path, "reader", remote_uri)
    calls: list[int] = []

    @cacheable
    def answer(x: int) -> int:
        calls.append(x)
        return x * 2

    proof = tmp_path / "pwned"
    for x in (1, 2):
        plant(reader, answer.function_name, answer.cache_key(x), Exploit(proof))
    with using(reader), capture_logs() as logs:
        assert answer(1) == 2
        assert answer(2) == 4
    assert not proof.exists(), "the forged pickle ran"
    assert calls == [1, 2]
    refused = [log for log in logs if log["event"] == "cache.remote.pickle_refused"]
    warnings = [log for log in refused if log["log_level"] == "warning"]
    assert len(warnings) == 1, refused  # one warning per process; later refusals are debug lines at most
    assert "SCALABLE_CACHE_HMAC_KEY" in warnings[0]["hint"]
    # The recomputed values are stored in a safe format and now load from the local tier.
    with using(reader):
        assert answer(1) == 2
    assert calls == [1, 2]
    header = open_envelope(reader.local.get(answer.cache_key(1)) or b"", key=answer.cache_key(1), hmac_key=None)[1]
    assert header["format"] == "json"


def test_a_forged_pickle_is_refused_in_another_process(tmp_path: Path, remote_uri: str) -> None:
    """A forged pickle on a shared directory remote does not run in a fresh process that reads it."""
    from tests.cache.helpers import run_machine

    shared = tmp_path / "shared-remote"
    data = tmp_path / "input.bin"
    data.write_bytes(b"0123456789" * 10)
    side_effect = tmp_path / "computed.log"
    first = run_machine(tmp_path / "m1", data, side_effect, str(shared))
    assert first["value"] == {"size": 300}
    (entry,) = [p for p in shared.rglob("*") if p.is_file() and ".scalable-meta" not in p.parts]
    key = entry.name
    header = open_envelope(entry.read_bytes(), key=key, hmac_key=None)[1]
    assert header["format"] == "json"
    proof = tmp_path / "pwned"
    forged = seal_value(
        Exploit(proof), key=key, function=header["function"], writer_run="run-evil", created="t", hmac_key=None
    )
    entry.write_bytes(forged.data)
    second = run_machine(tmp_path / "m2", data, side_effect, str(shared))
    assert second["value"] == {"size": 300}
    assert not proof.exists(), "the forged pickle ran"
    assert side_effect.read_text().splitlines() == ["computed", "computed"]
    assert "pickle_refused" in second["stderr"]


_JSON_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text() | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        | st.dictionaries(st.integers() | st.tuples(st.integers()), inner, max_size=3)
        | st.frozensets(st.integers() | st.text(max_size=3), max_size=4)
    ),
    max_leaves=12,
)
_ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.int8, np.int64, np.float32, np.float64, np.bool_, np.complex128]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
)


def _close(a: Any, b: Any) -> bool:
    """Equal and of the same type; arrays equal bit for bit (NaNs of every dtype included)."""
    if isinstance(a, np.ndarray):
        return type(b) is np.ndarray and (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes())
    if type(a) is list:
        return type(b) is list and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return same(a, b)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_JSON_LIKE | _ARRAYS | st.lists(_ARRAYS, max_size=3))
def test_common_values_cross_the_remote_without_pickle(
    value: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Values of common types written by one machine load on another without pickle, equal and of the same type."""
    remote = f"memory://trust-{uuid.uuid4().hex}/cache/"
    home = tmp_path / uuid.uuid4().hex
    writer, reader = machine(home, "w", remote), machine(home, "r", remote)
    key = uuid.uuid4().hex * 2
    envelope = seal_value(value, key=key, function="m.f", writer_run="run-w", created="t", hmac_key=None)
    assert envelope.format in SAFE_FORMATS
    writer.put("m.f", key, envelope)

    def no_pickle(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("pickle was used to read a common value")

    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(pickle, "load", no_pickle)
    entry = reader.lookup("m.f", key)
    monkeypatch.undo()
    assert entry is not None and entry.tier == "remote"
    assert _close(entry.value, value)
    writer.close()
    reader.close()


def test_tables_and_frames_cross_the_remote_without_pickle(
    tmp_path: Path, remote_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pyarrow Table and a pandas DataFrame load on another machine identical, with pickle unavailable."""
    writer, reader = machine(tmp_path, "w", remote_uri), machine(tmp_path, "r", remote_uri)
    table = pa.table({"a": [1, 2, None], "b": ["x", "y", "z"]})
    frame = pd.DataFrame({"x": [1.5, math.nan], "y": ["p", "q"]}, index=pd.Index([10, 20], name="id"))
    for key, value in (("a" * 64, table), ("b" * 64, frame)):
        writer.put("m.t", key, seal_value(value, key=key, function="m.t", writer_run="r", created="t", hmac_key=None))
    monkeypatch.setattr(pickle, "loads", None)
    got_table = reader.lookup("m.t", "a" * 64)
    got_frame = reader.lookup("m.t", "b" * 64)
    monkeypatch.undo()
    assert got_table is not None and got_table.value.equals(table)
    assert got_frame is not None
    pd.testing.assert_frame_equal(got_frame.value, frame)


def test_with_the_key_set_signed_pickles_load_and_unsigned_ones_do_not(tmp_path: Path, remote_uri: str) -> None:
    """With SCALABLE_CACHE_HMAC_KEY on both machines, a signed pickled value is a remote hit; a forged one is not."""
    writer = machine(tmp_path, "w", remote_uri, b"shared-key")
    reader = machine(tmp_path, "r", remote_uri, b"shared-key")
    calls: list[int] = []

    @cacheable
    def third(x: int) -> Fraction:
        calls.append(x)
        return Fraction(x, 3)

    with using(writer):
        assert third(1) == Fraction(1, 3)
    with using(reader), capture_logs() as logs:
        assert third(1) == Fraction(1, 3)
    assert calls == [1]
    hit = open_envelope(reader.local.get(third.cache_key(1)) or b"", key=third.cache_key(1), hmac_key=b"shared-key")
    assert hit[1]["format"] == "pickle"
    assert not [log for log in logs if "refused" in log["event"]]

    proof = tmp_path / "pwned"
    plant(reader, third.function_name, third.cache_key(2), Exploit(proof))  # unsigned
    plant(reader, third.function_name, third.cache_key(3), Exploit(proof), b"another-key")  # wrong key
    with using(reader), capture_logs() as logs:
        assert third(2) == Fraction(2, 3)
        assert third(3) == Fraction(1, 1)
    assert not proof.exists()
    assert calls == [1, 2, 3]
    assert len([log for log in logs if log["event"] == "cache.security.payload_refused"]) == 2
    assert "shared-key" not in json.dumps(logs, default=str)


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "uri",
    ["s3://AKIAEXAMPLE:se/cr+et=Key@bucket/cache/", "s3://bucket/cache/"],
    ids=["secret-in-uri", "secret-in-options"],
)
def test_remote_errors_and_logs_never_carry_a_secret(tmp_path: Path, uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """CacheRemoteError and the remote's log lines mask credentials from the URI (even with '/') and options."""
    pytest.importorskip("s3fs")
    monkeypatch.setattr(tiers, "_warned_remote_down", False)
    options: dict[str, Any] = {
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{_refused_port()}"},
        "config_kwargs": {"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 1}},
        "retries": 1,
    }
    if "@" not in uri:
        options.update(key="AKIAEXAMPLE", secret="se/cr+et=Key")
    remote = RemoteTier(uri, **options)
    cache = Cache(LocalTier(tmp_path / "local"), remote, b"hmac-secret-value")

    @cacheable
    def f(x: int) -> int:
        return x

    with using(cache), capture_logs() as logs:
        assert f(1) == 1
        with pytest.raises(CacheRemoteError) as info:
            cache.clear(remote=True)
    shown = str(info.value) + json.dumps(logs, default=str) + repr(remote.display)
    for secret in ("se/cr+et=Key", "se/cr", "hmac-secret-value", "AKIAEXAMPLE"):
        assert secret not in shown, secret
    assert "bucket/cache" in str(info.value)
    assert isinstance(info.value, ConnectionError)
