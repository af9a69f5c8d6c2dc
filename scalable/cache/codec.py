"""Cache value codec: common types in formats that cannot run code, pickle for everything else.

:func:`encode` turns a value into ``(format, bytes)``; :func:`decode` turns them back. Both
are pure functions. The formats:

``json``
    ``None``, ``bool``, ``int``, ``float``, ``str``, and lists, tuples, dicts, sets and
    frozensets of such values (also ``bytes`` and NumPy arrays nested inside them). Plain
    JSON where JSON is exact; otherwise a one-key object tags the type: ``{"$tuple": [...]}``,
    ``{"$set": [...]}``, ``{"$frozenset": [...]}``, ``{"$bytes": "<base64>"}``,
    ``{"$float": "nan" | "inf" | "-inf"}``, ``{"$npy": "<base64 .npy>"}``, and
    ``{"$dict": [[key, value], ...]}`` for a dict whose keys are not all strings or that has a
    key starting with ``$``.
``bytes``
    A ``bytes`` value, as is.
``npy``
    A NumPy array (not of ``object`` dtype) in ``.npy`` format, read with
    ``allow_pickle=False``; ``npy-scalar`` is a NumPy scalar stored as a 0-d array.
``arrow``
    A :class:`pyarrow.Table` as an Arrow IPC stream.
``pandas``
    A :class:`pandas.DataFrame` as an Arrow IPC stream with pandas' metadata, used only when
    the frame reads back identical (index, columns, dtypes, values, ``attrs``).
``pickle``
    Anything else. :func:`decode` unpickles only with ``allow_pickle=True``: a caller passes it
    only for bytes it can trust (a local cache, or a remote entry signed with
    ``SCALABLE_CACHE_HMAC_KEY``).

Types are matched exactly, so subclasses (``IntEnum``, named tuples, ``OrderedDict``, array
subclasses) keep their type by going through pickle. Shared references inside a value are
not preserved by the safe formats (a list holding the same list twice reads back as two equal
lists). NumPy, pandas and pyarrow are only used for values of their own types, so encoding a
plain value imports none of them.
"""

from __future__ import annotations

import base64
import io
import json
import math
import pickle
import re
import sys
from typing import Any, Final

import orjson

from scalable.errors import CachePayloadError

__all__ = ["FORMATS", "SAFE_FORMATS", "decode", "encode"]

#: Formats that decode without running code from the payload.
SAFE_FORMATS: Final = frozenset({"json", "bytes", "npy", "npy-scalar", "arrow", "pandas"})
#: Every format :func:`encode` produces.
FORMATS: Final = SAFE_FORMATS | {"pickle"}

_dumps = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode
_loads = json.JSONDecoder().decode
_LONG_DIGITS = re.compile(rb"[0-9]{19}").search
_FLOATS: Final = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class _NotSafe(Exception):
    """The value has a part no safe format can hold exactly."""


def encode(value: Any) -> tuple[str, bytes]:
    """Return ``(format, data)`` for ``value``, preferring a format that cannot run code.

    Raises:
        CachePayloadError: the value needs pickle and cannot be pickled.
    """
    kind = type(value)
    if kind is bytes:
        return "bytes", value
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray | numpy.generic):
        safe = _encode_numpy(value, numpy)
        if safe is not None:
            return safe
    pandas = sys.modules.get("pandas")
    if pandas is not None and kind is pandas.DataFrame:
        frame = _encode_frame(value)
        if frame is not None:
            return "pandas", frame
    pyarrow = sys.modules.get("pyarrow")
    if pyarrow is not None and kind is pyarrow.Table:
        return "arrow", _arrow_stream(value)
    try:
        return "json", _dumps(_to_json(value)).encode("ascii")
    except (_NotSafe, RecursionError, ValueError):
        pass  # ValueError: an int beyond Python's digit limit for str()
    try:
        return "pickle", pickle.dumps(value, protocol=5)
    except Exception as exc:
        raise CachePayloadError(f"a value of type {kind.__qualname__} cannot be stored in the cache: {exc}") from None


def decode(fmt: str, data: bytes, *, allow_pickle: bool) -> Any:
    """Return the value that :func:`encode` turned into ``(fmt, data)``.

    Args:
        fmt: the format :func:`encode` returned.
        data: the bytes it returned.
        allow_pickle: whether a ``pickle`` payload may be loaded (it can run code).

    Raises:
        CachePayloadError: an unknown format, a ``pickle`` payload without ``allow_pickle``,
            or bytes that do not decode in their format.
    """
    if fmt == "pickle":
        if not allow_pickle:
            raise CachePayloadError(
                "the cached value is a pickle, which could run code when loaded; it is refused here "
                "(pickles from a remote load only when signed with SCALABLE_CACHE_HMAC_KEY)"
            )
        try:
            return pickle.loads(data)
        except Exception as exc:
            raise CachePayloadError(f"the cached pickle does not load ({type(exc).__name__}: {exc})") from None
    if fmt not in SAFE_FORMATS:
        raise CachePayloadError(f"unknown cache value format {fmt!r}; known formats: {', '.join(sorted(FORMATS))}")
    try:
        if fmt == "bytes":
            return bytes(data)
        if fmt == "json":
            tree = _read_json(data)
            # Tags and reserved keys all start with '"$'; without one, plain JSON is the value.
            return tree if b'"$' not in data else _from_json(tree)
        if fmt in ("npy", "npy-scalar"):
            array = _read_npy(data)
            return array[()] if fmt == "npy-scalar" else array
        table = _read_arrow(data)
        return table.to_pandas() if fmt == "pandas" else table
    except CachePayloadError:
        raise
    except ImportError as exc:
        raise CachePayloadError(
            f"the cached value in format {fmt!r} needs {exc.name or exc} to be read; install it"
        ) from None
    except Exception as exc:  # malformed bytes of any kind
        raise CachePayloadError(
            f"the cached value in format {fmt!r} does not decode ({type(exc).__name__}: {exc})"
        ) from None


# --- JSON ------------------------------------------------------------------------------------


def _read_json(data: bytes) -> Any:
    """Parse the ASCII JSON text :func:`encode` wrote.

    orjson where it reads exactly what json reads: it turns integers beyond 64 bits into
    floats, so text with a run of 19 digits goes to json, as does anything orjson refuses
    (json then decides, as it always did).
    """
    if data.isascii() and _LONG_DIGITS(data) is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return _loads(data.decode("ascii"))


def _to_json(value: Any) -> Any:
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is str:
        return value
    if kind is float:
        return value if math.isfinite(value) else {"$float": repr(value)}
    if kind is list:
        return [_to_json(v) for v in value]
    if kind is tuple:
        return {"$tuple": [_to_json(v) for v in value]}
    if kind is dict:
        if all(type(k) is str and not k.startswith("$") for k in value):
            return {k: _to_json(v) for k, v in value.items()}
        return {"$dict": [[_to_json(k), _to_json(v)] for k, v in value.items()]}
    if kind is set or kind is frozenset:
        return {"$set" if kind is set else "$frozenset": [_to_json(v) for v in value]}
    if kind is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    numpy = sys.modules.get("numpy")
    if numpy is not None and kind is numpy.ndarray:
        safe = _encode_numpy(value, numpy)
        if safe is not None:
            return {"$npy": base64.b64encode(safe[1]).decode("ascii")}
    raise _NotSafe(kind.__qualname__)


def _from_json(node: Any) -> Any:
    if isinstance(node, list):
        return [_from_json(v) for v in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        ((tag, body),) = node.items()
        if tag.startswith("$"):
            return _from_tagged(tag, body)
    if any(k.startswith("$") for k in node):
        raise ValueError(f"object with reserved keys {sorted(k for k in node if k.startswith('$'))}")
    return {k: _from_json(v) for k, v in node.items()}


def _from_tagged(tag: str, body: Any) -> Any:
    if tag == "$tuple":
        return tuple(_from_json(v) for v in _list(body, tag))
    if tag == "$set":
        return {_from_json(v) for v in _list(body, tag)}
    if tag == "$frozenset":
        return frozenset(_from_json(v) for v in _list(body, tag))
    if tag == "$dict":
        pairs = _list(body, tag)
        if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
            raise ValueError("$dict needs [key, value] pairs")
        return {_from_json(k): _from_json(v) for k, v in pairs}
    if tag in ("$bytes", "$npy", "$float") and not isinstance(body, str):
        raise ValueError(f"{tag} needs a string")
    if tag == "$bytes":
        return base64.b64decode(body, validate=True)
    if tag == "$npy":
        return _read_npy(base64.b64decode(body, validate=True))
    if tag == "$float" and body in _FLOATS:
        return _FLOATS[body]
    raise ValueError(f"unknown tag {tag!r}")


def _list(body: Any, tag: str) -> list[Any]:
    if not isinstance(body, list):
        raise ValueError(f"{tag} needs a list")
    return body


# --- NumPy, pandas, Arrow ----------------------------------------------------------------------


def _encode_numpy(value: Any, numpy: Any) -> tuple[str, bytes] | None:
    """``.npy`` bytes of an exact ndarray or NumPy scalar without Python objects, else None."""
    if type(value) is numpy.ndarray:
        array, fmt = value, "npy"
    elif isinstance(value, numpy.generic) and type(value).__module__ == "numpy":
        array, fmt = numpy.asarray(value), "npy-scalar"
    else:
        return None
    if array.dtype.hasobject:
        return None
    buffer = io.BytesIO()
    numpy.save(buffer, array, allow_pickle=False)
    return fmt, buffer.getvalue()


def _read_npy(data: bytes) -> Any:
    import numpy

    return numpy.load(io.BytesIO(data), allow_pickle=False)


def _arrow_stream(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def _read_arrow(data: bytes) -> Any:
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


def _encode_frame(frame: Any) -> bytes | None:
    """Arrow IPC bytes of a DataFrame that reads back identical, else None (pickle it)."""
    try:
        import pyarrow as pa

        data = _arrow_stream(pa.Table.from_pandas(frame))
        back = _read_arrow(data).to_pandas()
        same = (
            type(back.index) is type(frame.index)
            and back.index.equals(frame.index)
            and back.index.names == frame.index.names
            and back.index.dtype == frame.index.dtype
            and back.columns.equals(frame.columns)
            and [type(c) for c in back.columns] == [type(c) for c in frame.columns]
            and back.columns.names == frame.columns.names
            and back.dtypes.equals(frame.dtypes)
            and back.attrs == frame.attrs
            and back.equals(frame)
        )
    except Exception:  # a column pyarrow cannot hold (mixed objects...): pickle it
        return None
    return data if same else None
