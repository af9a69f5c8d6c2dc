"""Cache keys: SHA-256 over a function's code identity and its bound arguments.

A key is 256 bits (64 hex characters), built from, in order:

1. a version tag (``scalable-cache-key/1``), the function's module and qualified name;
2. the code identity: the function's bytecode, names, constants (nested functions and
   lambdas recursively), argument layout and exception table; line numbers and file names
   are left out, so moving a function or editing a comment outside it keeps its key;
3. every parameter after binding, in signature order, with defaults applied: its name, the
   type that hashed it, and the value's encoding (scalars inline, tagged with their type;
   everything else as the 32-byte digest of its :class:`~scalable.cache.types.GenericType`).

Each part is length-prefixed, so no two different sequences of parts hash the same bytes.
Global variables and closure cell values a function reads are not part of the key; make them
arguments when they change results.
"""

from __future__ import annotations

import hashlib
import inspect
import struct
import types
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from scalable.cache.types import GenericType, ValueType, convert_to_type, scalar_bytes
from scalable.errors import CacheArgumentError

__all__ = ["KEY_VERSION", "CallKey", "KeyBuilder", "code_digest", "function_name"]

KEY_VERSION = b"scalable-cache-key/1"
#: Argument types whose values alone (with their type) make a call's key: equal values of one
#: of these types always encode the same way (unlike floats: 0.0 == -0.0).
_MEMO_TYPES: frozenset[type] = frozenset({int, bool, type(None)})
_MEMO_SIZE = 4096
_LEN = struct.Struct(">I").pack
_VALUE_TAG = b"V"


class CallKey(NamedTuple):
    """The key of one call, the digests of its file and directory arguments, and where they were."""

    key: str
    inputs: list[str]
    locations: list[str]


def function_name(func: Callable[..., Any]) -> str:
    """Return ``module.qualname`` of ``func`` (the name cache events and ``clear`` use)."""
    module = getattr(func, "__module__", None) or "__unknown__"
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return f"{module}.{qualname}"


def _const_bytes(value: Any, h: Any) -> None:
    if isinstance(value, types.CodeType):
        h.update(b"C")
        _code_update(value, h)
        return
    raw = scalar_bytes(value)
    if raw is not None:
        h.update(_LEN(len(raw)) + raw)
        return
    if isinstance(value, tuple):
        h.update(b"T" + _LEN(len(value)))
        for item in value:
            _const_bytes(item, h)
        return
    if isinstance(value, frozenset):
        parts = []
        for item in value:
            sub = hashlib.sha256()
            _const_bytes(item, sub)
            parts.append(sub.digest())
        h.update(b"S" + _LEN(len(parts)) + b"".join(sorted(parts)))
        return
    text = repr(value).encode()  # Ellipsis and the like
    h.update(b"R" + _LEN(len(text)) + text)


def _code_update(code: types.CodeType, h: Any) -> None:
    for number in (code.co_argcount, code.co_posonlyargcount, code.co_kwonlyargcount, code.co_flags):
        h.update(_LEN(number))
    h.update(_LEN(len(code.co_code)) + code.co_code)
    table = getattr(code, "co_exceptiontable", b"")
    h.update(_LEN(len(table)) + table)
    for names in (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars):
        joined = "\0".join(names).encode()
        h.update(_LEN(len(joined)) + joined)
    h.update(_LEN(len(code.co_consts)))
    for const in code.co_consts:
        _const_bytes(const, h)


def code_digest(func: Callable[..., Any]) -> bytes:
    """Return the SHA-256 of a function's code identity (see the module docstring).

    Callables without bytecode (builtins, C extensions) are identified by their source when
    it is available, else by name and module only.
    """
    target = inspect.unwrap(func)
    code = getattr(target, "__code__", None)
    h = hashlib.sha256()
    if isinstance(code, types.CodeType):
        h.update(b"code\0")
        _code_update(code, h)
        return h.digest()
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):
        source = ""
    h.update(b"source\0" + source.encode())
    return h.digest()


class KeyBuilder:
    """Computes cache keys of one function; the constant part is hashed once.

    Args:
        func: the decorated function.
        arg_types: per-parameter :class:`GenericType` subclasses (the rest is detected).

    Raises:
        CacheArgumentError: ``arg_types`` names a parameter the function does not have, or
            maps one to something that is not a ``GenericType`` subclass.
    """

    def __init__(self, func: Callable[..., Any], arg_types: Mapping[str, type[GenericType]] | None = None) -> None:
        self.func = func
        self.name = function_name(func)
        self.signature = inspect.signature(func)
        params = list(self.signature.parameters.values())
        names = [p.name for p in params]
        self.arg_types = dict(arg_types or {})
        for arg, typ in self.arg_types.items():
            if arg not in names:
                raise CacheArgumentError(
                    f"@cacheable({arg}=...) names no parameter of {self.name}; its parameters are {names}"
                )
            if not (isinstance(typ, type) and issubclass(typ, GenericType)):
                raise CacheArgumentError(
                    f"@cacheable({arg}={typ!r}) on {self.name} is not a GenericType subclass; "
                    "use FileType, DirType, ValueType, ObjectType, UtilityType or a subclass of GenericType"
                )
        simple = all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
        self._simple = simple
        self._names = tuple(names)
        self._encoded_names = tuple(n.encode() + b"\0" for n in names)
        defaults = [p.default for p in params if p.default is not inspect.Parameter.empty]
        self._defaults = tuple(defaults)
        self._required = len(params) - len(defaults) if simple else 0
        self._types = tuple(self.arg_types.get(n) for n in names)
        prefix = hashlib.sha256()
        for part in (KEY_VERSION, self.name.encode(), code_digest(func)):
            prefix.update(_LEN(len(part)) + part)
        self._prefix = prefix
        # Keys of calls whose arguments are all ints, bools or None (and so are the defaults)
        # depend on nothing else: they are remembered, by the arguments and their types.
        self._memo: dict[tuple[Any, ...], str] = {}
        self._memo_ok = (
            simple
            and all(t is None or t is ValueType for t in self._types)
            and _MEMO_TYPES.issuperset(map(type, self._defaults))
        )

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[tuple[str, Any]]:
        """Return ``(name, value)`` of every parameter, in signature order, defaults applied.

        Raises:
            TypeError: the arguments do not fit the signature (as calling the function would).
        """
        if self._simple and not kwargs and self._required <= len(args) <= len(self._names):
            values = args + self._defaults[len(args) - self._required :]
            return list(zip(self._names, values, strict=True))
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return list(bound.arguments.items())

    def key(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> CallKey:
        """Return the key (64 hex characters) of a call, the lineage digests of its inputs and their locations.

        Raises:
            TypeError: the arguments do not fit the signature.
            CacheArgumentError: an argument cannot be hashed.
            CacheInputNotFoundError: a file or directory argument does not exist.
        """
        simple = self._simple and not kwargs and self._required <= len(args) <= len(self._names)
        if simple and self._memo_ok:
            types = tuple(map(type, args))
            if _MEMO_TYPES.issuperset(types):
                remembered = self._memo.get(types + args)
                if remembered is not None:
                    return CallKey(remembered, [], [])
        else:
            types = ()
        h = self._prefix.copy()
        inputs: list[str] = []
        locations: list[str] = []
        if simple:
            values = args + self._defaults[len(args) - self._required :]
            encoded_names: tuple[bytes, ...] = self._encoded_names
            explicit: tuple[type[GenericType] | None, ...] = self._types
        else:
            pairs = self.bind(args, kwargs)
            values = tuple(v for _n, v in pairs)
            encoded_names = tuple(n.encode() + b"\0" for n, _v in pairs)
            explicit = tuple(self.arg_types.get(n) for n, _v in pairs)
        for name, value, typ in zip(encoded_names, values, explicit, strict=True):
            if typ is None or typ is ValueType:
                raw = scalar_bytes(value) if type(value) is not str or typ is ValueType else None
                if raw is not None:
                    h.update(name + _VALUE_TAG + _LEN(len(raw)) + raw)
                    continue
                wrapped = convert_to_type(value) if typ is None else typ(value)
            else:
                wrapped = typ(value)
            if type(wrapped) is ValueType:
                raw = wrapped.encoded()
                h.update(name + _VALUE_TAG + _LEN(len(raw)) + raw)
                continue
            cls = type(wrapped)
            tag = f"{cls.__module__}.{cls.__qualname__}".encode()
            h.update(name + b"T" + _LEN(len(tag)) + tag + wrapped.digest())
            inputs.extend(wrapped.inputs())
            locations.extend(wrapped.locations())
        key = h.hexdigest()
        if types and _MEMO_TYPES.issuperset(types):
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[types + args] = key
        return CallKey(key, inputs, locations)
