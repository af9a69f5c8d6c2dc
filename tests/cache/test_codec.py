"""The cache value codec: common types in formats that cannot run code, exact round trips, pickle refused."""

from __future__ import annotations

import collections
import enum
import math
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from scalable.cache.codec import SAFE_FORMATS, decode, encode
from scalable.errors import CachePayloadError


class Colour(enum.IntEnum):
    """An int subclass: must keep its type, so it goes through pickle."""

    RED = 1


class Point(NamedTuple):
    """A tuple subclass: must keep its type, so it goes through pickle."""

    x: int
    y: int


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type all the way down (NaN equals NaN, arrays compare whole)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return (
            list(a) == list(b)
            and all(same(a[k], b[k]) for k in a)
            and all(type(k) is type(j) for k, j in zip(a, b, strict=True))
        )
    return bool(a == b)


SAFE_VALUES = [
    pytest.param(None, "json", id="none"),
    pytest.param(True, "json", id="bool"),
    pytest.param(0, "json", id="zero"),
    pytest.param(-(2**200), "json", id="big-int"),
    pytest.param([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**19, 0.5], "json", id="64-bit-edges"),
    pytest.param({"id": "1234567890123456789012", "n": 1234567890123456789012}, "json", id="long-digit-runs"),
    pytest.param(0.1, "json", id="float"),
    pytest.param(-0.0, "json", id="negative-zero"),
    pytest.param(math.inf, "json", id="inf"),
    pytest.param(-math.inf, "json", id="-inf"),
    pytest.param(math.nan, "json", id="nan"),
    pytest.param("héllo \ud800 \x00", "json", id="str-with-surrogate-and-nul"),
    pytest.param(b"\x00\xffbytes", "bytes", id="bytes"),
    pytest.param([1, "a", None, [2.5, [True]]], "json", id="nested-list"),
    pytest.param((1, (2, 3), ()), "json", id="tuples"),
    pytest.param({"a": 1, "b": {"c": [1, 2]}}, "json", id="plain-dict"),
    pytest.param({1: "int key", (1, 2): "tuple key", None: 0}, "json", id="dict-non-str-keys"),
    pytest.param({"$tuple": [1], "x": 2}, "json", id="dict-with-dollar-key"),
    pytest.param({"b": 1, "a": 2}, "json", id="dict-order-kept"),
    pytest.param({1, 2, (3, 4)}, "json", id="set"),
    pytest.param(frozenset({"x"}), "json", id="frozenset"),
    pytest.param([b"\x01", {"k": b"\x02"}], "json", id="nested-bytes"),
    pytest.param(np.arange(12, dtype=np.int16).reshape(3, 4), "npy", id="ndarray"),
    pytest.param(np.array([1.5, np.nan]), "npy", id="ndarray-nan"),
    pytest.param(np.array(7), "npy", id="ndarray-0d"),
    pytest.param(np.zeros(3, dtype=[("a", "i4"), ("b", "f8")]), "npy", id="structured-array"),
    pytest.param(np.array(["2024-01-01"], dtype="datetime64[D]"), "npy", id="datetime64-array"),
    pytest.param(np.float32(1.25), "npy-scalar", id="numpy-scalar"),
    pytest.param(np.float64(2.5), "npy-scalar", id="numpy-float64-is-not-a-plain-float"),
    pytest.param({"weights": np.ones((2, 2)), "step": 3}, "json", id="dict-of-arrays"),
]


@pytest.mark.parametrize(("value", "fmt"), SAFE_VALUES)
def test_common_values_round_trip_without_pickle(value: Any, fmt: str) -> None:
    """Each common value gets a safe format and decodes, with pickle disallowed, to an equal value of the same type."""
    got_fmt, data = encode(value)
    assert got_fmt == fmt
    assert got_fmt in SAFE_FORMATS
    assert b"\x80\x05" not in data[:2]  # not a pickle stream
    assert same(decode(got_fmt, data, allow_pickle=False), value)


def test_tables_round_trip_through_arrow() -> None:
    """pyarrow Tables and pandas DataFrames (index, dtypes, column names) come back identical without pickle."""
    table = pa.table({"x": [1, 2, None], "s": ["a", "b", "c"]}, metadata={"origin": "test"})
    fmt, data = encode(table)
    assert fmt == "arrow"
    assert decode(fmt, data, allow_pickle=False).equals(table, check_metadata=True)
    frames = [
        pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}),
        pd.DataFrame({"v": [1.5]}, index=pd.Index(["r1"], name="row")),
        pd.DataFrame({"t": pd.to_datetime(["2024-01-01", "2025-06-30"]), "c": pd.Categorical(["p", "q"])}),
        pd.DataFrame({1: [1], 2: [2]}),
    ]
    for frame in frames:
        fmt, data = encode(frame)
        assert fmt == "pandas"
        back = decode(fmt, data, allow_pickle=False)
        assert type(back.index) is type(frame.index)
        assert back.equals(frame) and back.dtypes.equals(frame.dtypes) and list(back.columns) == list(frame.columns)


def test_a_frame_arrow_cannot_hold_exactly_is_pickled() -> None:
    """A DataFrame with a mixed-type object column falls back to pickle rather than change."""
    frame = pd.DataFrame({"mixed": [1, "x", 2.5]})
    fmt, data = encode(frame)
    assert fmt == "pickle"
    assert decode(fmt, data, allow_pickle=True).equals(frame)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(Colour.RED, id="int-enum"),
        pytest.param(Point(1, 2), id="namedtuple"),
        pytest.param(collections.OrderedDict(a=1), id="ordered-dict"),
        pytest.param(collections.Counter("aab"), id="counter"),
        pytest.param([1, Colour.RED], id="list-holding-a-subclass"),
        pytest.param(np.array([object(), 1], dtype=object)[1:], id="object-array"),
        pytest.param(np.ma.masked_array([1, 2], mask=[0, 1]), id="masked-array"),
        pytest.param(bytearray(b"x"), id="bytearray"),
        pytest.param(10**5000, id="int-beyond-str-digit-limit"),
        pytest.param(pd.Series([1, 2]), id="series"),
    ],
)
def test_other_values_keep_their_type_through_pickle(value: Any) -> None:
    """Subclasses and types without a safe format are pickled, and read back with their own type."""
    fmt, data = encode(value)
    assert fmt == "pickle"
    back = decode(fmt, data, allow_pickle=True)
    assert type(back) is type(value)
    if isinstance(value, np.ndarray):
        assert np.array_equal(back, value)
    elif isinstance(value, pd.Series):
        assert back.equals(value)
    else:
        assert back == value


def test_a_cyclic_value_is_pickled() -> None:
    """A list that contains itself cannot be JSON; it is pickled and keeps its cycle."""
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    fmt, data = encode(cyclic)
    assert fmt == "pickle"
    back = decode(fmt, data, allow_pickle=True)
    assert back[1] is back


def test_pickle_is_refused_without_allow_pickle(tmp_path: Path) -> None:
    """A pickle payload is never loaded without allow_pickle: the code it carries does not run."""
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (subprocess.call, (["touch", str(marker)],))

    data = pickle.dumps(Exploit())
    with pytest.raises(CachePayloadError, match=r"is a pickle.*SCALABLE_CACHE_HMAC_KEY"):
        decode("pickle", data, allow_pickle=False)
    assert not marker.exists()


def test_an_unpicklable_value_is_a_payload_error() -> None:
    """A value that needs pickle and cannot be pickled raises CachePayloadError naming its type."""
    with pytest.raises(CachePayloadError, match="generator"):
        encode(x for x in range(3))


def test_npy_with_object_dtype_is_refused() -> None:
    """An .npy payload of object dtype (which needs pickle) does not load under the safe format."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(CachePayloadError, match="npy"):
        decode("npy", buffer.getvalue(), allow_pickle=False)


@pytest.mark.parametrize(
    ("fmt", "data", "pattern"),
    [
        ("yaml", b"a: 1", r"unknown cache value format 'yaml'"),
        ("json", b"{not json", r"format 'json' does not decode"),
        ("json", b'{"$nope": 1}', r"unknown tag"),
        ("json", b'{"$tuple": 1}', r"needs a list"),
        ("json", b'{"$dict": [[1]]}', r"pairs"),
        ("json", b'{"$dict": [[[1], 2]]}', r"does not decode"),
        ("json", b'{"$bytes": "!!"}', r"does not decode"),
        ("json", b'{"$float": "1.5"}', r"unknown tag"),
        ("json", b'{"$bytes": 5}', r"needs a string"),
        ("json", b'{"$x": 1, "y": 2}', r"reserved keys"),
        ("json", b"\xff", r"does not decode"),
        ("json", b"[" * 100_000 + b"]" * 100_000, r"does not decode"),
        ("npy", b"not an npy file", r"format 'npy' does not decode"),
        ("arrow", b"not arrow", r"format 'arrow' does not decode"),
        ("pandas", b"", r"format 'pandas' does not decode"),
        ("pickle", b"not a pickle", r"does not load"),
    ],
)
def test_malformed_payloads_are_payload_errors(fmt: str, data: bytes, pattern: str) -> None:
    """Bytes that do not decode in their format raise CachePayloadError, never another exception."""
    with pytest.raises(CachePayloadError, match=pattern):
        decode(fmt, data, allow_pickle=fmt == "pickle")


def test_encoding_plain_values_imports_no_heavy_package() -> None:
    """Encoding and decoding plain values imports neither numpy, pandas nor pyarrow."""
    code = (
        "import sys\n"
        "from scalable.cache.codec import encode, decode\n"
        "f, b = encode({'a': [1, (2, b'x')]})\n"
        "assert decode(f, b, allow_pickle=False) == {'a': [1, (2, b'x')]}\n"
        "print(sorted(m for m in ('numpy', 'pandas', 'pyarrow') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
