"""Cache keys: wide, collision-free, and sensitive to code, defaults and file content."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from scalable.cache import DirType, FileType, ObjectType, ValueType, cacheable
from scalable.cache.keys import KeyBuilder
from scalable.errors import CacheArgumentError, CacheInputNotFoundError


def _compile(source: str, name: str = "f") -> Any:
    namespace: dict[str, Any] = {"__name__": "tests.cache.generated"}
    exec(compile(textwrap.dedent(source), "<generated>", "exec"), namespace)
    return namespace[name]


def test_keys_are_256_bits_of_hex() -> None:
    """A key is 64 hex characters (256 bits), far above the 128 bits the design asks for."""

    @cacheable
    def f(x: int) -> int:
        return x

    key = f.cache_key(1)
    assert len(key) == 64
    int(key, 16)


def test_many_distinct_calls_have_no_collision_even_in_64_bit_prefixes() -> None:
    """200,000 distinct argument sets give 200,000 distinct keys, and distinct 64-bit prefixes."""

    def f(x: int, label: str = "a") -> int:
        return x

    builder = KeyBuilder(f)
    keys = [builder.key((i,), {})[0] for i in range(150_000)]
    keys += [builder.key((i, "b"), {})[0] for i in range(50_000)]
    assert len(set(keys)) == 200_000
    assert len({k[:16] for k in keys}) == 200_000


def test_changing_the_function_body_changes_the_key() -> None:
    """Two functions of the same name and module whose bodies differ have different keys."""
    f1 = _compile("def f(x):\n    return x + 1\n")
    f2 = _compile("def f(x):\n    return x + 2\n")
    f3 = _compile("\n\n\ndef f(x):\n    return x + 1\n")  # only moved down: same code
    k1, k2, k3 = (KeyBuilder(f).key((1,), {})[0] for f in (f1, f2, f3))
    assert k1 != k2
    assert k1 == k3


def test_changing_a_nested_function_changes_the_key() -> None:
    """A change inside a nested function or lambda changes the outer function's key."""
    f1 = _compile("def f(x):\n    g = lambda y: y * 2\n    return g(x)\n")
    f2 = _compile("def f(x):\n    g = lambda y: y * 3\n    return g(x)\n")
    assert KeyBuilder(f1).key((1,), {})[0] != KeyBuilder(f2).key((1,), {})[0]


def test_changing_a_default_argument_changes_the_key() -> None:
    """Defaults are applied before hashing, so a new default value gives a new key."""
    f1 = _compile("def f(x, scale=2):\n    return x * scale\n")
    f2 = _compile("def f(x, scale=3):\n    return x * scale\n")
    assert KeyBuilder(f1).key((1,), {})[0] != KeyBuilder(f2).key((1,), {})[0]


def test_defaults_positional_and_keyword_forms_give_one_key() -> None:
    """``f(1)``, ``f(1, 2)``, ``f(1, scale=2)`` and ``f(x=1)`` are the same call, with one key."""

    def f(x: int, scale: int = 2) -> int:
        return x * scale

    b = KeyBuilder(f)
    keys = {b.key((1,), {})[0], b.key((1, 2), {})[0], b.key((1,), {"scale": 2})[0], b.key((), {"x": 1})[0]}
    assert len(keys) == 1


def test_argument_names_are_part_of_the_key() -> None:
    """Swapping two values between parameters changes the key."""

    def f(a: int, b: int) -> int:
        return a - b

    b = KeyBuilder(f)
    assert b.key((1, 2), {})[0] != b.key((2, 1), {})[0]


@pytest.mark.parametrize(
    "pair", [(1, 1.0), (1, True), (1, "1"), (0, None), (b"a", "a"), ([1, 2], (1, 2)), ({1: 2}, {2: 1})]
)
def test_values_of_different_types_have_different_keys(pair: tuple[Any, Any]) -> None:
    """Values that print alike but differ in type (1, 1.0, True, "1"...) have different keys."""

    def f(x: Any) -> Any:
        return x

    b = KeyBuilder(f)
    assert b.key((pair[0],), {})[0] != b.key((pair[1],), {})[0]


def test_one_byte_of_a_file_argument_changes_the_key(tmp_path: Path) -> None:
    """Flipping one byte of a FileType argument's file gives a new key; same bytes, same key."""

    @cacheable(data=FileType)
    def f(data: str) -> int:
        return 0

    path = tmp_path / "data.bin"
    payload = bytearray(b"x" * 100_000)
    path.write_bytes(payload)
    before = f.cache_key(str(path))
    payload[54_321] ^= 1
    path.write_bytes(payload)
    after = f.cache_key(str(path))
    payload[54_321] ^= 1
    path.write_bytes(payload)
    assert before != after
    assert f.cache_key(str(path)) == before


def test_a_string_naming_a_file_is_hashed_by_content(tmp_path: Path) -> None:
    """Without a declared type, a str that names an existing file is hashed by its content."""

    @cacheable
    def f(data: str) -> int:
        return 0

    path = tmp_path / "in.txt"
    path.write_text("one")
    first = f.cache_key(str(path))
    path.write_text("two")
    assert f.cache_key(str(path)) != first


def test_directory_content_is_part_of_the_key(tmp_path: Path) -> None:
    """A DirType key changes when a file inside the directory tree changes."""

    @cacheable(d=DirType)
    def f(d: str) -> int:
        return 0

    (tmp_path / "sub" / "deep").mkdir(parents=True)
    (tmp_path / "sub" / "deep" / "a.txt").write_text("a")
    first = f.cache_key(str(tmp_path / "sub"))
    (tmp_path / "sub" / "deep" / "a.txt").write_text("b")
    assert f.cache_key(str(tmp_path / "sub")) != first


def test_a_missing_file_argument_is_a_clear_error(tmp_path: Path) -> None:
    """A FileType argument naming no file raises CacheInputNotFoundError naming the path."""

    @cacheable(data=FileType)
    def f(data: str) -> int:
        return 0

    missing = str(tmp_path / "nope.csv")
    with pytest.raises(CacheInputNotFoundError, match=r"nope\.csv") as info:
        f(missing)
    assert isinstance(info.value, FileNotFoundError)


def test_an_unknown_parameter_in_arg_types_is_refused() -> None:
    """``@cacheable(nope=FileType)`` on a function without ``nope`` raises CacheArgumentError."""
    with pytest.raises(CacheArgumentError, match="nope"):

        @cacheable(nope=FileType)
        def f(x: int) -> int:
            return x


def test_an_argument_type_that_is_not_a_generic_type_is_refused() -> None:
    """Types must be GenericType subclasses; ``int`` is refused with a message naming it."""
    with pytest.raises(CacheArgumentError, match="GenericType"):
        cacheable(x=int)  # type: ignore[arg-type]
    with pytest.raises(CacheArgumentError, match="return_type"):
        cacheable(return_type=3)  # type: ignore[call-overload]


def test_an_unhashable_argument_is_a_clear_error() -> None:
    """An argument that cannot be pickled or hashed raises CacheArgumentError with a hint."""

    @cacheable
    def f(x: Any) -> int:
        return 0

    with pytest.raises(CacheArgumentError, match="GenericType subclass"):
        f(lambda: None)


def test_explicit_value_type_does_not_read_files(tmp_path: Path) -> None:
    """A str declared ValueType is hashed as text even when a file of that name exists."""

    @cacheable(path=ValueType, obj=ObjectType)
    def f(path: str, obj: Any = None) -> int:
        return 0

    p = tmp_path / "x.txt"
    p.write_text("1")
    first = f.cache_key(str(p))
    p.write_text("2")
    assert f.cache_key(str(p)) == first


def test_a_remembered_key_is_the_key_computed_afresh() -> None:
    """Keys of int, bool and None arguments come back the same the second time, and from a new builder; equal values of other types do not share them."""

    def f(x: Any, y: Any = 0, z: Any = None) -> Any:
        return x

    remembering = KeyBuilder(f)
    calls = [(1,), (True,), (1, 2), (1, True), (1, 2, 3), (2**80, -1), (0,), (False,), (None,)]
    first = [remembering.key(args, {})[0] for args in calls]
    again = [remembering.key(args, {})[0] for args in calls]
    assert first == again == [KeyBuilder(f).key(args, {})[0] for args in calls]
    assert len(set(first)) == len(calls)  # 1 and True, 0 and False, 0 and None: all apart
    assert remembering.key((0.0,), {})[0] != remembering.key((-0.0,), {})[0]  # equal floats, different keys


def test_a_default_that_changes_changes_the_key_every_time() -> None:
    """A mutable default is hashed at each call: changing it changes the key of the very same arguments."""
    settings: list[int] = [1]

    def f(x: int, options: list[int] = settings) -> int:
        return x

    b = KeyBuilder(f)
    before = b.key((1,), {})[0]
    assert b.key((1,), {})[0] == before
    settings.append(2)
    assert b.key((1,), {})[0] != before
