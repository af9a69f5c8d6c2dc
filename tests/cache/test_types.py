"""Cache types: what each hashes, user types, and numpy/pandas only when used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scalable.cache import (
    DirType,
    FileType,
    GenericType,
    ObjectType,
    UtilityType,
    ValueType,
    cacheable,
    convert_to_type,
)
from scalable.cache.types import file_digest, tree_digest
from tests.cache.helpers import REPO


def test_file_digest_is_the_sha256_of_the_bytes(tmp_path: Path) -> None:
    """``file_digest`` equals hashlib's SHA-256 of the file (also for an empty file)."""
    import hashlib

    data = bytes(range(256)) * 40_000
    (tmp_path / "f").write_bytes(data)
    (tmp_path / "e").write_bytes(b"")
    assert file_digest(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert file_digest(tmp_path / "e") == hashlib.sha256(b"").hexdigest()
    assert FileType(str(tmp_path / "f")).inputs() == [hashlib.sha256(data).hexdigest()]


def test_tree_digest_follows_its_documented_definition(tmp_path: Path) -> None:
    """The tree digest is SHA-256 over sorted ``relpath\\0filedigest\\n`` lines."""
    import hashlib

    (tmp_path / "d" / "b").mkdir(parents=True)
    (tmp_path / "d" / "z.txt").write_text("z")
    (tmp_path / "d" / "b" / "a.txt").write_text("a")
    lines = sorted([("b/a.txt", hashlib.sha256(b"a").hexdigest()), ("z.txt", hashlib.sha256(b"z").hexdigest())])
    expected = hashlib.sha256("".join(f"{r}\0{d}\n" for r, d in lines).encode()).hexdigest()
    assert tree_digest(tmp_path / "d") == expected
    assert DirType(str(tmp_path / "d")).inputs() == [expected]


def test_detection_picks_the_type_scalable_would(tmp_path: Path) -> None:
    """Existing files and directories, scalars, containers and other objects get their types."""
    (tmp_path / "f").write_text("x")
    assert type(convert_to_type(str(tmp_path / "f"))) is FileType
    assert type(convert_to_type(tmp_path)) is DirType
    assert type(convert_to_type("not a path")) is ValueType
    assert type(convert_to_type(3.5)) is ValueType
    assert type(convert_to_type([1, 2])) is ObjectType
    assert type(convert_to_type({"a": 1})) is ObjectType
    given = FileType(str(tmp_path / "f"))
    assert convert_to_type(given) is given


def test_dict_order_does_not_change_the_digest() -> None:
    """Dicts with the same items in another insertion order hash alike; sets too."""
    assert ObjectType({"a": 1, "b": 2}).digest() == ObjectType({"b": 2, "a": 1}).digest()
    assert ObjectType({3, 1, 2}).digest() == ObjectType({1, 2, 3}).digest()
    assert ObjectType({"a": 1}).digest() != ObjectType({"a": 2}).digest()


def test_numpy_arrays_hash_by_dtype_shape_and_data() -> None:
    """Arrays differing in one element, dtype or shape hash differently; copies hash alike."""
    np = pytest.importorskip("numpy")
    a = np.arange(12, dtype=np.int64)
    assert UtilityType(a).digest() == UtilityType(a.copy()).digest()
    b = a.copy()
    b[5] = 99
    assert UtilityType(a).digest() != UtilityType(b).digest()
    assert UtilityType(a).digest() != UtilityType(a.astype(np.int32)).digest()
    assert UtilityType(a).digest() != UtilityType(a.reshape(3, 4)).digest()
    assert UtilityType(a.reshape(3, 4).T).digest() == UtilityType(np.ascontiguousarray(a.reshape(3, 4).T)).digest()
    assert type(convert_to_type(a)) is UtilityType


def test_pandas_frames_hash_by_columns_and_values() -> None:
    """Frames differing in one value or a column name hash differently; equal frames alike."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    assert UtilityType(df).digest() == UtilityType(df.copy()).digest()
    changed = df.copy()
    changed.loc[1, "a"] = 20
    assert UtilityType(df).digest() != UtilityType(changed).digest()
    assert UtilityType(df).digest() != UtilityType(df.rename(columns={"b": "c"})).digest()
    assert type(convert_to_type(df["a"])) is UtilityType


def test_numpy_and_pandas_are_imported_only_when_such_an_argument_appears() -> None:
    """Importing scalable and caching plain calls loads neither numpy nor pandas."""
    code = (
        "import sys, scalable\n"
        "@scalable.cacheable\n"
        "def f(x, y=[1, 2]):\n    return x\n"
        "f.cache_key(1)\n"
        "print(sorted(m for m in ('numpy', 'pandas', 's3fs', 'gcsfs', 'dask', 'duckdb') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={"PYTHONPATH": str(REPO)}, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


class Rounded(GenericType):
    """A user type in Scalable's style: identity by ``__hash__`` of the rounded value."""

    def __hash__(self) -> int:
        return hash(round(self.value, 1))


class Lowercase(GenericType):
    """A user type with a full-width digest: case-insensitive text."""

    def digest(self) -> bytes:
        import hashlib

        return hashlib.sha256(str(self.value).lower().encode()).digest()


def test_user_types_decide_identity() -> None:
    """A GenericType subclass with ``__hash__`` or ``digest`` decides which calls share a key."""

    @cacheable(x=Rounded, name=Lowercase)
    def f(x: float, name: str) -> Any:
        return x

    assert f.cache_key(1.01, "A") == f.cache_key(1.04, "a")
    assert f.cache_key(1.01, "A") != f.cache_key(1.2, "A")
