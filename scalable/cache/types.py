"""Argument and return-value types of ``@cacheable``: how each kind of value is hashed.

Every type wraps a value and turns it into a 32-byte SHA-256 :meth:`GenericType.digest`.
Scalable's contract is kept: :class:`FileType` and :class:`DirType` hash content,
:class:`ValueType` hashes scalars, :class:`ObjectType` hashes containers element by element,
:class:`UtilityType` hashes numpy arrays and pandas objects (numpy and pandas are imported
only when such a value appears), and a user subclass of :class:`GenericType` that defines
``__hash__`` (Scalable's way) or ``digest`` (the full-width way) is used as given.

Directory digest (``DirType``): the tree digest of :mod:`scalable.digests` (the one artifact
stores compute, with the same rule for links), so a directory argument and the stored
directory share one digest.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import struct
import sys
from pathlib import Path
from stat import S_ISDIR, S_ISREG
from typing import Any

from scalable.digests import sha256_file, walk_paths
from scalable.digests import tree_digest as combine_tree
from scalable.errors import CacheArgumentError, CacheInputNotFoundError, StoreError
from scalable.uris import path_to_uri

__all__ = [
    "DirType",
    "FileType",
    "GenericType",
    "ObjectType",
    "UtilityType",
    "ValueType",
    "convert_to_type",
    "file_digest",
    "scalar_bytes",
    "tree_digest",
]

_PACK_LEN = struct.Struct(">Q").pack


def file_digest(path: str | os.PathLike[str]) -> str:
    """Return the SHA-256 hex of a file's bytes (:func:`scalable.digests.sha256_file`).

    Raises:
        CacheInputNotFoundError: the file does not exist or is not a regular file.
    """
    try:
        return sha256_file(path)[0]
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise CacheInputNotFoundError(
            f"file {os.fspath(path)!r} of a FileType argument does not exist; pass an existing file"
        ) from None


def tree_digest(path: str | os.PathLike[str]) -> str:
    """Return the tree digest of a directory (see the module docstring for the definition).

    Raises:
        CacheInputNotFoundError: the directory does not exist.
        CacheArgumentError: the directory holds what no digest covers (a link out of it, a
            dangling link, a fifo); the message names it.
    """
    if not Path(path).is_dir():
        raise CacheInputNotFoundError(
            f"directory {os.fspath(path)!r} of a DirType argument does not exist; pass an existing directory"
        )
    try:
        files = walk_paths(path)
    except StoreError as exc:
        raise CacheArgumentError(f"DirType argument {os.fspath(path)!r}: {exc}") from None
    return combine_tree((rel, file_digest(full)) for rel, full in files)


class GenericType:
    """Base of every cache type: wraps ``value`` and hashes it to a 32-byte digest.

    Subclass it for values the built-in types do not cover. Either define ``__hash__``
    (Scalable's contract; its integer is folded into the key) or override :meth:`digest`
    for a full-width hash.

    Args:
        value: the argument or return value to hash.
    """

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def digest(self) -> bytes:
        """Return the SHA-256 digest (32 bytes) of the value."""
        cls = type(self)
        if cls.__hash__ is not GenericType.__hash__ and cls.__hash__ is not None:
            # A user type in Scalable's style: its own __hash__ decides identity.
            number = cls.__hash__(self)
            tag = f"{cls.__module__}.{cls.__qualname__}".encode()
            return hashlib.sha256(tag + b"\0" + number.to_bytes(16, "big", signed=True)).digest()
        return _pickle_digest(self.value, "value")

    def inputs(self) -> list[str]:
        """Return the digests this value contributes to lineage (files and directories)."""
        return []

    def locations(self) -> list[str]:
        """Return where each of :meth:`inputs` was read (``file://`` URIs), in the same order."""
        return []

    def __hash__(self) -> int:
        return int.from_bytes(self.digest()[:8], "big", signed=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GenericType) and type(other) is type(self) and self.digest() == other.digest()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r:.60})"


class FileType(GenericType):
    """A file, hashed by its name and the SHA-256 of its content.

    Args:
        value: path of an existing file.
    """

    __slots__ = ("_content",)

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self._content: str | None = None

    def content_digest(self) -> str:
        """Return the SHA-256 hex of the file's bytes (computed once per instance)."""
        if self._content is None:
            self._content = file_digest(self.value)
        return self._content

    def digest(self) -> bytes:
        """Return SHA-256 over the file's base name and the digest of its content."""
        name = os.path.basename(os.fspath(self.value)).encode()
        return hashlib.sha256(b"file\0" + name + b"\0" + self.content_digest().encode()).digest()

    def inputs(self) -> list[str]:
        """Return the file's content digest (the same SHA-256 an artifact store computes)."""
        return [self.content_digest()]

    def locations(self) -> list[str]:
        """Return the file's ``file://`` URI."""
        return [path_to_uri(self.value)]


class DirType(GenericType):
    """A directory, hashed by its name and the tree digest of its files.

    Args:
        value: path of an existing directory.
    """

    __slots__ = ("_tree",)

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self._tree: str | None = None

    def tree(self) -> str:
        """Return the directory's tree digest (computed once per instance)."""
        if self._tree is None:
            self._tree = tree_digest(self.value)
        return self._tree

    def digest(self) -> bytes:
        """Return SHA-256 over the directory's base name and its tree digest."""
        name = os.path.basename(os.path.normpath(os.fspath(self.value))).encode()
        return hashlib.sha256(b"dir\0" + name + b"\0" + self.tree().encode()).digest()

    def inputs(self) -> list[str]:
        """Return the directory's tree digest."""
        return [self.tree()]

    def locations(self) -> list[str]:
        """Return the directory's ``file://`` URI."""
        return [path_to_uri(self.value)]


def scalar_bytes(value: Any) -> bytes | None:
    """Type-tagged bytes of a scalar (so ``1``, ``1.0``, ``True`` and ``"1"`` differ), else None."""
    t = type(value)
    if t is str:
        return b"s" + str.encode(value, "utf-8", "surrogatepass")
    if t is int:
        return b"i" + str(value).encode()
    if t is bool:
        return b"b1" if value else b"b0"
    if t is float:
        return b"f" + float.hex(value).encode()
    if value is None:
        return b"n"
    if t is bytes:
        return b"y" + bytes(value)
    if t is complex:
        return b"c" + float.hex(value.real).encode() + b"," + float.hex(value.imag).encode()
    return None


class ValueType(GenericType):
    """A scalar value (str, int, float, bool, bytes, None), hashed with its type."""

    __slots__ = ()

    def encoded(self) -> bytes:
        """Return the value's type-tagged bytes (a pickle for values that are not scalars)."""
        raw = scalar_bytes(self.value)
        if raw is None:
            raw = b"p" + _pickle_bytes(self.value, "value")
        return raw

    def digest(self) -> bytes:
        """Return SHA-256 of the type-tagged value."""
        return hashlib.sha256(self.encoded()).digest()


class ObjectType(GenericType):
    """A container (list, tuple, dict, set) hashed element by element, else by its pickle."""

    __slots__ = ()

    def digest(self) -> bytes:
        """Return SHA-256 over the element digests (dicts by sorted key digest)."""
        value = self.value
        h = hashlib.sha256()
        if isinstance(value, list | tuple):
            h.update(b"list\0" if isinstance(value, list) else b"tuple\0")
            for item in value:
                h.update(convert_to_type(item).digest())
        elif isinstance(value, dict):
            h.update(b"dict\0")
            pairs = sorted(convert_to_type(k).digest() + convert_to_type(v).digest() for k, v in value.items())
            for pair in pairs:
                h.update(pair)
        elif isinstance(value, set | frozenset):
            h.update(b"set\0")
            for d in sorted(convert_to_type(item).digest() for item in value):
                h.update(d)
        else:
            h.update(b"pickle\0")
            h.update(_pickle_bytes(value, "value"))
        return h.digest()


class UtilityType(GenericType):
    """A numpy array or a pandas DataFrame/Series/Index, hashed by dtype, shape and data."""

    __slots__ = ()

    def digest(self) -> bytes:
        """Return SHA-256 over the array's dtype, shape and bytes (frames: by column)."""
        value = self.value
        h = hashlib.sha256()
        np = sys.modules.get("numpy")
        pd = sys.modules.get("pandas")
        if np is not None and isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                h.update(b"ndarray-object\0" + _pickle_bytes(value, "numpy array"))
            else:
                h.update(f"ndarray\0{value.dtype.str}\0{value.shape}\0".encode())
                h.update(np.ascontiguousarray(value).data)
        elif pd is not None and isinstance(value, pd.DataFrame | pd.Series | pd.Index):
            import numpy

            h.update(f"pandas\0{type(value).__name__}\0".encode())
            if isinstance(value, pd.DataFrame):
                h.update(ObjectType([str(c) for c in value.columns]).digest())
                h.update(ObjectType([str(t) for t in value.dtypes]).digest())
            else:
                h.update(str(value.dtype).encode() + b"\0" + str(value.name).encode() + b"\0")
            hashed = pd.util.hash_pandas_object(value, index=not isinstance(value, pd.Index))
            h.update(numpy.ascontiguousarray(hashed.to_numpy()).data)
            h.update(_PACK_LEN(len(value)))
        else:
            h.update(b"pickle\0" + _pickle_bytes(value, "value"))
        return h.digest()


def _pickle_bytes(value: Any, what: str) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except Exception as exc:
        raise CacheArgumentError(
            f"{what} of type {type(value).__qualname__} cannot be hashed ({exc}); "
            "give the argument a GenericType subclass that defines digest() or __hash__()"
        ) from None


def _pickle_digest(value: Any, what: str) -> bytes:
    return hashlib.sha256(b"p" + _pickle_bytes(value, what)).digest()


def convert_to_type(arg: Any) -> GenericType:
    """Wrap ``arg`` in the type that hashes it best (Scalable's detection, widened).

    A string naming an existing file or directory becomes :class:`FileType`/:class:`DirType`
    (hashed by content); scalars :class:`ValueType`; containers :class:`ObjectType`; numpy
    and pandas values :class:`UtilityType`; a :class:`GenericType` is used as it is; anything
    else :class:`ObjectType` (its pickle).
    """
    if isinstance(arg, GenericType):
        return arg
    t = type(arg)
    if t is str:
        if arg and "\x00" not in arg:
            try:
                st = os.stat(arg)
            except (OSError, ValueError):
                return ValueType(arg)
            if S_ISREG(st.st_mode):
                return FileType(arg)
            if S_ISDIR(st.st_mode):
                return DirType(arg)
        return ValueType(arg)
    if t in (int, float, bool, bytes, complex) or arg is None:
        return ValueType(arg)
    if isinstance(arg, os.PathLike):
        return convert_to_type(os.fspath(arg))
    if isinstance(arg, list | tuple | dict | set | frozenset):
        return ObjectType(arg)
    module = t.__module__.partition(".")[0]
    if module in ("numpy", "pandas"):
        return UtilityType(arg)
    return ObjectType(arg)
