"""Cache keys: format 1 is stable, and every part of a function's code identity counts.

Keys of one call must not change between releases while ``KEY_VERSION`` stays
``scalable-cache-key/1``: a remote cache written before an upgrade still hits after it. The
functions here are built from code objects whose every hashed field is set explicitly, so their
keys do not depend on the bytecode of the running Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from scalable.cache.keys import KEY_VERSION, KeyBuilder, code_digest, function_name

ROOT = Path(__file__).resolve().parents[2]


def _template(a, b=2, *, c=3):  # type: ignore[no-untyped-def]
    pass


def _code(consts: tuple[Any, ...], **fields: Any) -> types.CodeType:
    """A code object whose hashed fields are all given here (bytecode of no Python version)."""
    inner = _template.__code__.replace(
        co_code=bytes([100, 0, 83, 0]),
        co_consts=(None,),
        co_names=(),
        co_flags=3,
        co_exceptiontable=b"",
        co_varnames=("a", "b", "c"),
        co_freevars=(),
        co_cellvars=(),
    )
    base: dict[str, Any] = {
        "co_code": bytes([100, 0, 83, 0, 100, 1, 83, 0]),
        "co_consts": (*consts, inner),
        "co_names": ("g", "h"),
        "co_varnames": ("a", "b", "c"),
        "co_flags": 3,
        "co_freevars": (),
        "co_cellvars": (),
        "co_exceptiontable": b"\x01\x02",
        "co_argcount": 2,
        "co_posonlyargcount": 0,
        "co_kwonlyargcount": 1,
    }
    base.update(fields)
    return _template.__code__.replace(**base)


_CONSTS: tuple[Any, ...] = (None, 1, 2.5, "s", b"b", (1, ("x", 2)), frozenset({"p", "q", "r"}), ..., True)


def _function(code: types.CodeType, defaults: tuple[Any, ...] = (2,), kwdefaults: dict[str, Any] | None = None) -> Any:
    func = types.FunctionType(code, {"__name__": "tests.pinned"}, "pinned", defaults)
    func.__kwdefaults__ = {"c": 3} if kwdefaults is None else kwdefaults
    func.__qualname__ = "Pinned.pinned"
    return func


def _simple() -> Any:
    """``tests.pinned.Pinned.pinned(a, b=2)``: positional-or-keyword parameters only."""
    return _function(_code(_CONSTS, co_kwonlyargcount=0, co_varnames=("a", "b", "c")), kwdefaults={})


def _var_positional() -> Any:
    """``tests.pinned.Pinned.pinned(*a)``."""
    return _function(_code(_CONSTS, co_argcount=0, co_kwonlyargcount=0, co_flags=3 | 0x04), defaults=(), kwdefaults={})


def test_the_code_digest_of_a_function_is_pinned() -> None:
    """The code identity hashes counts, flags, bytecode, exception table, names and every kind of constant."""
    assert code_digest(_function(_code(_CONSTS))).hex() == (
        "a3877284bbc3a6459fe3bfcef53b846acc995fb22c8d101cca6bf61ef049fd59"
    )


@pytest.mark.parametrize(
    ("make", "args", "kwargs", "key"),
    [
        (_simple, (7,), {}, "775ddab7f71665fea22327eca1ef41f348fb1112408c308bad110b866f241ffe"),
        (_simple, (7, "x"), {}, "177f5f43708612d52cc85901b3e8548374310245359a1d0f21132a59009f497e"),
        (_simple, (None, b"raw"), {}, "86ccc4b31105e1c0df35ad32a2964512f7e2d3629b27f6e2a638ce7e7592f2da"),
        (_simple, (1.5, (1, [2, "3"])), {}, "877bb8975470fe602b05e94e318d7b938500bea967b94847a08bcae098b05fe8"),
        (_simple, (), {"a": True, "b": {"k": 1}}, "6d94cba2ce79d22a471a2c1b12b8e551e408ca79c3b84edf597550dba4bb2cfb"),
        (
            lambda: _function(_code(_CONSTS)),
            (7,),
            {"c": 4},
            "79fd844e100a3c7e9463007a4cd96992dee9d9dd13202e466d9de9e5972d4029",
        ),
        (_var_positional, (5,), {}, "d1d1512b5ec3557c38280cb971ce3d582ef14b41a0dfbefe0f48a9977121d6de"),
        (_var_positional, (5, 6), {}, "38e60817faa914e66d2e1e19c2c28e1708630ba74d9177f9a6b21c9169e789a6"),
        (lambda: len, ("ab",), {}, "5719b5d50375fe4e3d5228337e312b925e62a6d4a3cde1b2bf91f6058e34991b"),
    ],
)
def test_keys_of_calls_are_pinned(make: Any, args: tuple[Any, ...], kwargs: dict[str, Any], key: str) -> None:
    """The key of a call (version tag, name, code, each argument's name, type and value) is that of format 1."""
    assert KEY_VERSION == b"scalable-cache-key/1"
    assert KeyBuilder(make()).key(args, kwargs)[0] == key


def _digest_of(consts: tuple[Any, ...], **fields: Any) -> bytes:
    return code_digest(_function(_code(consts, **fields)))


@pytest.mark.parametrize(
    "fields",
    [
        {"co_code": bytes([100, 0, 83, 0, 100, 2, 83, 0])},
        {"co_exceptiontable": b"\x01\x03"},
        {"co_exceptiontable": b""},
        {"co_names": ("g", "i")},
        {"co_varnames": ("a", "b", "d")},
        {"co_flags": 3 | 0x20},
        {"co_argcount": 1, "co_varnames": ("a", "c", "b")},
    ],
)
def test_each_field_of_the_code_identity_changes_the_key(fields: dict[str, Any]) -> None:
    """Bytecode, exception table, names, variables, flags and argument counts each change the code digest."""
    assert _digest_of(_CONSTS, **fields) != _digest_of(_CONSTS)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ((1, ("x", 2)), ((1, "x"), 2)),
        ((1, 2), (1, 2, 3)),
        (frozenset({"p", "q"}), frozenset({"p", "r"})),
        (frozenset({"p"}), ("p",)),
        (..., None),
        (..., NotImplemented),
    ],
)
def test_constants_of_every_kind_count(one: Any, other: Any) -> None:
    """Tuples (and their nesting), frozensets and other constants such as ``...`` are part of the key."""
    assert _digest_of((one,)) != _digest_of((other,))
    assert _digest_of((one,)) == _digest_of((one,))


def test_a_set_constant_hashes_alike_under_every_hash_seed() -> None:
    """``x in {...}`` of strings gives one key in processes with different hash seeds (shared remote caches)."""
    code = textwrap.dedent(
        """
        import textwrap
        from scalable.cache.keys import code_digest
        ns = {"__name__": "tests.generated"}
        exec("def f(x):\\n    return x in {'alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta'}\\n", ns)
        print(code_digest(ns["f"]).hex())
        """
    )
    digests = set()
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        digests.add(done.stdout.strip())
    assert len(digests) == 1


def test_callables_without_bytecode_are_identified_by_source() -> None:
    """A class used as a cached callable is hashed by its source: two bodies, two digests; a builtin has one."""
    assert code_digest(_SourceA) != code_digest(_SourceB)
    assert code_digest(_SourceA) == code_digest(_SourceA)
    assert code_digest(len) == code_digest(abs)  # no source: identified by name, which the key adds
    assert KeyBuilder(len).key(("ab",), {})[0] != KeyBuilder(abs).key(("ab",), {})[0]


class _SourceA:
    def __call__(self, x: int) -> int:
        return x * 2


class _SourceB:
    def __call__(self, x: int) -> int:
        return x * 3


def test_function_names_fall_back_to_name_and_repr() -> None:
    """Events name a callable ``module.qualname``; without those, its ``__name__`` or its repr."""

    def local() -> None:
        pass

    assert function_name(local) == f"{__name__}.test_function_names_fall_back_to_name_and_repr.<locals>.local"

    class Anonymous:
        __module__ = None  # type: ignore[assignment]

        def __call__(self) -> None:
            pass

    anonymous = Anonymous()
    assert function_name(anonymous) == f"__unknown__.{anonymous!r}"
    # a method wrapper has no __module__ attribute at all
    assert function_name((1).__add__) == "__unknown__.int.__add__"

    class Named:
        __module__ = "pkg.mod"
        __name__ = "only_name"

        def __call__(self) -> None:
            pass

    named = Named()
    assert function_name(named) == "pkg.mod.only_name"


def test_the_builder_keeps_the_function_and_its_name() -> None:
    """``KeyBuilder.func`` is the function given and ``name`` the name its events carry."""
    func = _simple()
    builder = KeyBuilder(func)
    assert builder.func is func
    assert builder.name == "tests.pinned.Pinned.pinned"


def test_keyword_arguments_that_differ_from_defaults_change_the_key() -> None:
    """``f(1, b=5)`` is not ``f(1)``: a keyword argument is bound before hashing, not dropped."""
    builder = KeyBuilder(_simple())
    assert builder.key((1,), {"b": 5})[0] != builder.key((1,), {})[0]
    assert builder.key((1,), {"b": 5})[0] == builder.key((1, 5), {})[0]
    assert builder.bind((1,), {"b": 5}) == [("a", 1), ("b", 5)]
    assert builder.bind((1,), {}) == [("a", 1), ("b", 2)]
    assert builder.bind((1, 4), {}) == [("a", 1), ("b", 4)]
    with pytest.raises(TypeError):
        builder.bind((1, 2, 3), {})
    with pytest.raises(TypeError):
        builder.key((), {})


def test_a_string_argument_naming_no_file_is_a_value() -> None:
    """A string that names no file is hashed as its value: two strings, two keys, no input digests."""
    builder = KeyBuilder(_simple())
    one, inputs, _locations = builder.key(("no-such-file-a",), {})
    assert inputs == []
    assert one != builder.key(("no-such-file-b",), {})[0]


def test_string_arguments_before_others_do_not_hide_them() -> None:
    """Every argument after a string counts: ``f("a", 1)`` and ``f("a", 2)`` have different keys."""
    builder = KeyBuilder(_simple())
    assert builder.key(("no-such-file", 1), {})[0] != builder.key(("no-such-file", 2), {})[0]


def test_containers_declared_value_type_are_hashed_by_value() -> None:
    """A list declared ``ValueType`` is hashed by its content: ``[1]`` and ``[2]`` differ."""
    from scalable.cache import ValueType

    builder = KeyBuilder(_simple(), {"a": ValueType})
    assert builder.key(([1],), {})[0] != builder.key(([2],), {})[0]
    assert builder.key(([1],), {})[0] == builder.key(([1],), {})[0]
    # the declared type holds however the argument is passed
    assert builder.key((), {"a": [1]})[0] == builder.key(([1],), {})[0]
    # declared, the list is hashed as one value, not element by element as an undeclared one
    assert builder.key(([1],), {})[0] != KeyBuilder(_simple()).key(([1],), {})[0]


@pytest.mark.parametrize("typ", [int, "file", 3])
def test_an_argument_type_that_is_no_generic_type_is_refused_with_the_fix(typ: Any) -> None:
    """``KeyBuilder`` refuses a type that is no GenericType subclass (a class or not), naming the ones to use."""
    from scalable.errors import CacheArgumentError

    with pytest.raises(CacheArgumentError) as info:
        KeyBuilder(_simple(), {"a": typ})
    assert str(info.value) == (
        f"@cacheable(a={typ!r}) on tests.pinned.Pinned.pinned is not a GenericType subclass; "
        "use FileType, DirType, ValueType, ObjectType, UtilityType or a subclass of GenericType"
    )


def test_a_file_argument_brings_its_digest_and_location(tmp_path: Path) -> None:
    """A file argument adds its SHA-256 to the call's inputs and its ``file://`` URI to its locations."""
    import hashlib

    from scalable.cache import FileType
    from scalable.uris import path_to_uri

    data = tmp_path / "in.csv"
    data.write_bytes(b"a,b\n")
    call = KeyBuilder(_simple(), {"a": FileType}).key((str(data),), {})
    assert call.inputs == [hashlib.sha256(b"a,b\n").hexdigest()]
    assert call.locations == [path_to_uri(data)]
