"""The artifact-store protocol, its value types, and the behaviour every backend shares.

A backend implements a few primitives (build itself from a URI, open an upload that commits
atomically, open a download, test for a file, list files recursively, delete a file, spell a
URI) and may check that it can be reached (:meth:`BaseArtifactStore.check_reachable`). Everything
else is written once here, in :class:`BaseArtifactStore`: key validation, one-pass copy and
hashing, directory walks and tree digests (:mod:`scalable.digests`), verification,
the digest sidecars kept beside stored artifacts, and the ``artifact`` events.

Digest sidecars: every put also writes a small JSON object at
``.scalable-meta/<key>.json`` under the store root (``kind``, ``digest``, ``size_bytes`` and,
for directories, ``files``: ``{relative/path: digest}``). ``get(..., verify=True)`` checks
the stored bytes against it. Key segments starting with ``.scalable-`` are reserved (the
sidecars, and the temporary names of puts in progress), and sidecars are never listed, also
those of a store rooted below another one. A sidecar whose name would exceed 255 bytes is
named by the SHA-256 of the key's last segment instead.

Keys do not nest across artifacts, on every backend: nothing is stored below a file, a file or
directory put inside a directory artifact is refused (put the whole directory again), a file
put where a directory is stored is refused, and a directory put where a file is stored, or
over keys that were put on their own, is refused (:class:`~scalable.errors.KeyConflictError`).
A directory put at the key of an earlier directory put replaces it.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import itertools
import json
import mmap
import os
import posixpath
import queue
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, BinaryIO, Final, NamedTuple, Protocol, Self, runtime_checkable

import orjson

from scalable.digests import tree_digest, walk_paths
from scalable.errors import (
    ArtifactNotFoundError,
    IntegrityError,
    InvalidKeyError,
    KeyConflictError,
    ScalableError,
    StoreError,
    UnreadableArtifactError,
    UnsafeArtifactError,
    os_error,
)
from scalable.ledger import bus

__all__ = [
    "META_PREFIX",
    "RESERVED_PREFIX",
    "TEMP_PREFIX",
    "TREE_WORKERS",
    "ArtifactKind",
    "ArtifactRef",
    "ArtifactStore",
    "BaseArtifactStore",
    "FileUpload",
    "Surroundings",
    "Upload",
    "copy_hashing",
    "in_parallel",
    "open_source",
    "sidecar_key",
    "sidecar_name",
    "validate_key",
]

#: Key segments starting with this are reserved for the store's own files.
RESERVED_PREFIX: Final = ".scalable-"
#: Reserved prefix under every store root holding the digest sidecars.
META_PREFIX: Final = ".scalable-meta"
#: Name prefix of the temporary files of puts and gets in progress (fixed length after it).
TEMP_PREFIX: Final = ".scalable-tmp-"
#: The longest file name most local file systems accept, in bytes.
NAME_MAX: Final = 255
#: Read size of the copy loop; above one chunk, hashing and writing overlap on two threads.
CHUNK: Final = 4 * 1024 * 1024


class ArtifactKind(StrEnum):
    """What a stored artifact is: one file, a directory tree, or bytes put directly.

    ``DIRECTORY`` (value ``"dir"``) is the canonical name, as in Scalable; ``DIR`` is the
    same member under a shorter name.
    """

    FILE = "file"
    DIRECTORY = "dir"
    DIR = "dir"  # an alias: ArtifactKind.DIR is ArtifactKind.DIRECTORY
    BLOB = "blob"


@dataclass(frozen=True)
class ArtifactRef:
    """What a put stored: its URI, kind, SHA-256 digest (tree digest for dirs) and size.

    The fields and defaults are Scalable's (``digest``, ``size_bytes`` and ``metadata`` may be
    left out). The stores always fill them: ``digest`` is a file's SHA-256 or a directory's
    tree digest, and ``metadata`` holds ``key``, ``store`` and, for directories, ``files``
    (``{relative/path: digest}``); a ``label`` when ``put`` was given a free-form kind.
    """

    uri: str
    kind: ArtifactKind
    digest: str | None = None
    size_bytes: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ArtifactStore(Protocol):
    """What every artifact store offers, whatever the backend."""

    @property
    def scheme(self) -> str:
        """URI scheme of the backend (``file``, ``s3``, ``gs``, ``memory``...)."""
        ...

    @property
    def base_uri(self) -> str:
        """URI of the store root, ending in ``/``, credentials masked."""
        ...

    def uri_for(self, key: str) -> str:
        """Return the full URI of ``key``."""
        ...

    def put(
        self,
        local_path: str | os.PathLike[str],
        remote_key: str,
        *,
        kind: ArtifactKind | str | None = None,
        record: bool = True,
    ) -> ArtifactRef:
        """Store a local file or directory at ``remote_key``."""
        ...

    def get(
        self, remote_key: str, local_path: str | os.PathLike[str], *, verify: bool = False, record: bool = True
    ) -> str:
        """Fetch ``remote_key`` to ``local_path``; return the local path written."""
        ...

    def put_bytes(
        self, data: bytes, remote_key: str, *, kind: ArtifactKind | str = ArtifactKind.BLOB, record: bool = True
    ) -> ArtifactRef:
        """Store ``data`` at ``remote_key``."""
        ...

    def get_bytes(self, remote_key: str, *, verify_digest: str | None = None, record: bool = True) -> bytes:
        """Return the bytes stored at ``remote_key``."""
        ...

    def exists(self, remote_key: str) -> bool:
        """Whether a file or directory is stored at ``remote_key``."""
        ...

    def list_artifacts(self, prefix: str = "") -> list[str]:
        """Every stored file key starting with ``prefix``, recursive and sorted."""
        ...

    def delete(self, remote_key: str, *, record: bool = True) -> None:
        """Remove the file or directory stored at ``remote_key``."""
        ...

    def check_reachable(self) -> None:
        """Raise a :class:`~scalable.errors.StoreError` unless the store can be reached and written."""
        ...


class Surroundings(NamedTuple):
    """What a put's key meets: files and sidecars at its proper prefixes, itself, and below it."""

    #: per proper prefix of the key (shortest first): whether a file is stored there
    prefix_files: Sequence[bool]
    #: per proper prefix: its digest sidecar, or None
    prefix_meta: Sequence[dict[str, Any] | None]
    #: whether a file is stored at the key
    is_file: bool
    #: the key's digest sidecar file (directories keep theirs there), or None
    meta: dict[str, Any] | None
    #: keys stored below the key that a put there must not shadow (the generic lookups: the
    #: artifacts put on their own below it; a local store: every file below it)
    below: Sequence[str]
    #: the backend's open handle on the key's directory, found by the same lookups, for the
    #: upload that follows (a local store's directory descriptor); see ``_open_upload_at``
    parent: Any = None


class Upload(Protocol):
    """One object being written: nothing is visible at the key until ``commit``."""

    def write(self, data: bytes) -> None:
        """Append ``data``."""
        ...

    def commit(self) -> None:
        """Make the object visible at its key, atomically."""
        ...

    def discard(self) -> None:
        """Abandon the upload; the key is left as it was."""
        ...


@runtime_checkable
class FileUpload(Upload, Protocol):
    """An upload into a local file held open for reading and writing: the kernel can copy into it."""

    def fileno(self) -> int:
        """The descriptor of the file being written."""
        ...


def validate_key(key: object, *, what: str = "key", allow_empty: bool = False) -> str:
    """Return ``key`` normalised (one trailing ``/`` dropped) or raise :class:`InvalidKeyError`.

    A key is relative and ``/``-separated: no empty, ``.`` or ``..`` segments, no leading
    ``/``, no NUL or backslash, and no segment starting with the reserved ``.scalable-``.
    """
    if not isinstance(key, str):
        raise InvalidKeyError(f"store {what} must be a string, got {type(key).__name__}")
    if key == "" and allow_empty:
        return key
    shown = key.replace("\0", "\\0")
    hint = "use a relative key like 'runs/run-001/output.csv'"
    if key in ("", "/"):
        raise InvalidKeyError(f"store {what} is empty; {hint}")
    if "\0" in key:
        raise InvalidKeyError(f"store {what} {shown!r} contains a NUL character; {hint}")
    if "\\" in key:
        raise InvalidKeyError(f"store {what} {shown!r} contains a backslash; separate segments with '/'")
    if key.startswith("/") or (len(key) > 1 and key[1] == ":"):
        raise InvalidKeyError(f"store {what} {shown!r} is absolute; {hint}")
    body = key[:-1] if key.endswith("/") else key
    for seg in body.split("/"):
        if seg in ("", ".", ".."):
            raise InvalidKeyError(
                f"store {what} {shown!r} has an empty, '.' or '..' segment (it could escape the store root); {hint}"
            )
    for seg in body.split("/"):
        if seg.startswith(RESERVED_PREFIX):
            raise InvalidKeyError(
                f"store {what} {shown!r} has the segment {seg!r}: segments starting with {RESERVED_PREFIX!r} "
                f"(such as {META_PREFIX!r}) are reserved for the store's own files; choose another key"
            )
    return body


def _is_sidecar(key: str) -> bool:
    """Whether ``key`` is a digest sidecar (of this store or of a store nested inside it)."""
    return key.startswith(META_PREFIX + "/") or f"/{META_PREFIX}/" in key


def sidecar_name(segment: str) -> str:
    """The file name of the digest sidecar of a key whose last segment is ``segment``.

    ``<segment>.json``; when that would exceed :data:`NAME_MAX` bytes, the SHA-256 of the
    segment names it instead (after the reserved prefix, so no key's sidecar is named so).
    """
    raw = segment.encode("utf-8", "surrogateescape")
    if len(raw) + len(".json") > NAME_MAX:
        return f"{RESERVED_PREFIX}long-{hashlib.sha256(raw).hexdigest()}.json"
    return f"{segment}.json"


def sidecar_key(key: str) -> str:
    """The key of the digest sidecar of ``key``: ``.scalable-meta/<key>.json`` (see :func:`sidecar_name`)."""
    parent, _, name = key.rpartition("/")
    return f"{META_PREFIX}/{parent}/{sidecar_name(name)}" if parent else f"{META_PREFIX}/{sidecar_name(name)}"


def _local_source(local_path: str | os.PathLike[str], what: str) -> str:
    """The local path of a put's source or a get's destination (``~`` expanded); an empty path is refused.

    An empty string would otherwise mean the current directory: a put of everything in it.
    """
    text = os.fspath(local_path)
    if not isinstance(text, str) or not text.strip():
        raise ArtifactNotFoundError(
            f"the local {what} path is empty ({text!r}); give a file or directory, or '.' for the current directory"
        )
    return os.path.expanduser(text) if text.startswith("~") else text


_lookup_pool: tuple[int, ThreadPoolExecutor] | None = None
_lookup_lock = threading.Lock()


def _lookup_executor() -> ThreadPoolExecutor:
    """The threads that run a store's independent lookups at once (one pool per process)."""
    global _lookup_pool
    with _lookup_lock:
        if _lookup_pool is None or _lookup_pool[0] != os.getpid():
            _lookup_pool = (os.getpid(), ThreadPoolExecutor(max_workers=8, thread_name_prefix="scalable-lookup"))
        return _lookup_pool[1]


class BaseArtifactStore(ABC):
    """Shared behaviour of every store, written once over the backend primitives."""

    scheme: str
    base_uri: str

    # ---- primitives a backend implements -------------------------------------------------

    @classmethod
    @abstractmethod
    def from_uri(cls, uri: str, **storage_options: Any) -> Self:
        """Return the store rooted at ``uri`` (:func:`~scalable.stores.factory.build_artifact_store` calls it).

        Args:
            uri: the URI as the user gave it, scheme included (a plain path for local stores).
            **storage_options: options for the backend; refuse those it does not know.
        """

    @abstractmethod
    def uri_for(self, key: str) -> str:
        """Return the full URI of ``key``."""

    @abstractmethod
    def _open_upload(self, key: str, size_hint: int) -> Upload:
        """Start writing the object at ``key`` (``size_hint``: expected size in bytes)."""

    @abstractmethod
    def _open_read(self, key: str) -> BinaryIO:
        """Open the object at ``key`` for reading; raise ArtifactNotFoundError if absent."""

    @abstractmethod
    def _is_file(self, key: str) -> bool:
        """Whether an object (a file, not a prefix) is stored at ``key``."""

    @abstractmethod
    def _list_files(self, dir_key: str) -> list[str]:
        """Keys (relative to the root) of every object under ``dir_key`` ("" = root)."""

    @abstractmethod
    def _delete_file(self, key: str) -> None:
        """Remove the object at ``key``; absent objects are ignored."""

    # ---- shared behaviour ------------------------------------------------------------------

    def check_reachable(self) -> None:
        """Check that the store can be reached and written, before anything is stored.

        Backends that can tell cheaply override it (a local directory that cannot be created
        or written, a bucket that does not exist, an endpoint that does not answer); the
        default finds nothing wrong.

        Raises:
            StoreUnreachableError: the store cannot be reached or written; the message starts
                with the store's location (callers may prefix what the store is for).
        """
        return

    def check_exists(self) -> None:
        """Check that the store is there to be read, before telling a reader it holds nothing.

        A store that does not exist yet is a valid, empty store to the API (a local root is
        created by the first put); a command that reads (``scalable artifacts ls``) calls this
        to say "no store there" rather than "nothing stored". The default finds nothing wrong.

        Raises:
            StoreNotFoundError: nothing is there (no root directory, no bucket, an empty prefix).
            StoreError: a subclass saying why the store cannot be reached or read.
        """
        return

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_uri!r})"

    def put(
        self,
        local_path: str | os.PathLike[str],
        remote_key: str,
        *,
        kind: ArtifactKind | str | None = None,
        record: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> ArtifactRef:
        """Store a local file or directory at ``remote_key``, in one pass over its bytes.

        Each file lands atomically; a directory becomes one object per file under
        ``remote_key/`` (files a previous put left there and this tree lacks are removed).

        Args:
            local_path: file or directory to store.
            remote_key: relative key under the store root.
            kind: ``file``/``dir`` (checked against what ``local_path`` is), ``blob``, or a
                free-form label (such as ``result``) recorded as the event's kind.
            record: publish the ``artifact/put`` event (the cache's remote tier passes False).
            progress: called with the number of bytes just copied, as the copy goes.

        Returns:
            The stored artifact's reference.

        Raises:
            InvalidKeyError: a bad key.
            ArtifactNotFoundError: ``local_path`` does not exist.
            UnreadableArtifactError: ``local_path`` cannot be read.
            UnsafeArtifactError: a fifo/device, or a link out of the tree.
            KeyConflictError: the key is inside another artifact, or holds what the put
                cannot replace (see the module docstring).
            StoreError: the backend failed.
        """
        key = validate_key(remote_key)
        src = _local_source(local_path, "source")
        fd, st = open_source(src)
        if stat.S_ISREG(st.st_mode):
            actual = ArtifactKind.FILE
        else:
            os.close(fd)
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafeArtifactError(
                    f"cannot put {str(src)!r}: not a regular file or directory (a fifo, socket or device)"
                )
            actual = ArtifactKind.DIRECTORY
        try:
            label = self._check_kind(kind, actual, src)
            around = self._check_nesting(key, directory=actual is ArtifactKind.DIRECTORY)
        except BaseException:
            if actual is ArtifactKind.FILE:
                os.close(fd)
            raise
        if actual is ArtifactKind.DIRECTORY:
            self._release(around)
            files = walk_paths(src)
            for rel, path in files:  # every file's key is checked before anything is stored
                # A listed name is never empty, "." or "..", nor holds "/" or NUL: what is left to check.
                if "\\" in rel or RESERVED_PREFIX in rel:
                    validate_key(f"{key}/{rel}", what=f"key of {str(path)!r}")
            stored, whole = self._put_tree(key, files, _one_at_a_time(progress))
            digests = {rel: digest for rel, (digest, _size) in stored.items()}
            total = sum(size for _digest, size in stored.values())
            digest = tree_digest(digests)
            if not whole:  # written over an earlier tree: what it had and this one lacks goes
                keep = {f"{key}/{rel}" for rel in digests}
                for stale in self._list_under(key):
                    if stale not in keep:
                        self._delete_file(stale)
            self._write_sidecar_file(key, ArtifactKind.DIRECTORY, digest, total, digests)
            ref = self._ref(key, ArtifactKind.DIRECTORY, digest=digest, size=total, label=label, files=digests)
            attrs: dict[str, Any] = {"files": digests}
        else:
            digest, total = self._put_fd(
                fd, st.st_size, src, key=key, progress=progress, sidecar_kind=ArtifactKind.FILE, around=around
            )
            ref = self._ref(key, ArtifactKind.FILE, digest=digest, size=total, label=label, files=None)
            attrs = {}
        if record:
            self._publish("put", key, kind=label or actual.value, size=total, digest=digest, attrs=attrs)
        return ref

    def put_bytes(
        self, data: bytes, remote_key: str, *, kind: ArtifactKind | str = ArtifactKind.BLOB, record: bool = True
    ) -> ArtifactRef:
        """Store ``data`` at ``remote_key`` atomically.

        Args:
            data: the bytes.
            remote_key: relative key under the store root.
            kind: recorded kind (``blob`` by default, or a label).
            record: publish the ``artifact/put`` event.

        Returns:
            The stored artifact's reference (kind ``blob``).

        Raises:
            InvalidKeyError: a bad key.
            KeyConflictError: the key is inside another artifact or holds a directory.
            StoreError: the backend failed.
        """
        key = validate_key(remote_key)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise StoreError(f"put_bytes of {key!r} needs bytes, got {type(data).__name__}")
        around = self._check_nesting(key, directory=False)
        payload = bytes(data)
        digest = hashlib.sha256(payload).hexdigest()
        upload = self._open_upload_at(key, len(payload), around)
        try:
            upload.write(payload)
            self._commit_file(upload, key, ArtifactKind.BLOB, digest, len(payload))
        except BaseException as exc:
            upload.discard()
            if isinstance(exc, OSError) and not isinstance(exc, ScalableError):
                raise os_error(exc, f"cannot put {self.uri_for(key)!r}", StoreError) from None
            raise
        label = None if str(kind) == ArtifactKind.BLOB.value else str(kind)
        if record:
            self._publish("put", key, kind=str(kind), size=len(payload), digest=digest, attrs={})
        return self._ref(key, ArtifactKind.BLOB, digest=digest, size=len(payload), label=label, files=None)

    def get(
        self,
        remote_key: str,
        local_path: str | os.PathLike[str],
        *,
        verify: bool = False,
        record: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> str:
        """Fetch the file or directory at ``remote_key`` to ``local_path``.

        A file goes to ``local_path`` (or into it, under the key's basename, when it is an
        existing directory); a directory's files go under ``local_path``. Each local file
        is written to a temporary name and renamed, so a failed get leaves no partial file.

        Args:
            remote_key: the stored key.
            local_path: destination.
            verify: re-hash and compare with the digest recorded at put time.
            record: publish the ``artifact/get`` event.
            progress: called with the number of bytes just copied, as the copy goes.

        Returns:
            The local path written.

        Raises:
            ArtifactNotFoundError: nothing is stored at ``remote_key``.
            IntegrityError: with ``verify``, stored bytes differ from their recorded digest
                (or no digest was recorded); nothing is written locally.
            UnreadableArtifactError: the destination cannot be written.
        """
        key = validate_key(remote_key)
        dest = Path(_local_source(local_path, "destination"))
        if self._is_file(key):
            if dest.is_dir():
                dest = dest / posixpath.basename(key)
            expected = self._expected_digest(key) if verify else None
            digest, size = self._download(key, dest, expected, progress)
            kind = ArtifactKind.FILE
            attrs: dict[str, Any] = {}
        else:
            rels = [k[len(key) + 1 :] for k in self._list_under(key)]
            if not rels:
                raise ArtifactNotFoundError(
                    f"nothing is stored at {self.uri_for(key)!r}; list the stored keys with: "
                    f"scalable artifacts ls {self.base_uri}"
                )
            recorded: dict[str, str] = {}
            if verify:
                meta = self._read_sidecar_file(key)
                if meta is None or not isinstance(meta.get("files"), dict):
                    raise IntegrityError(
                        f"no digests were recorded for {self.uri_for(key)!r}; cannot verify it (put it again)"
                    )
                recorded = meta["files"]
                missing = sorted(set(recorded) - set(rels))
                if missing:
                    raise IntegrityError(f"{self.uri_for(key)!r} lacks files recorded at put time: {missing[:5]}")
            digests: dict[str, str] = {}
            size = 0
            for rel in rels:
                if verify and rel not in recorded:
                    raise IntegrityError(
                        f"{self.uri_for(key + '/' + rel)!r} was not part of the directory put; cannot verify it"
                    )
                d, s = self._download(f"{key}/{rel}", dest / rel, recorded.get(rel), progress)
                digests[rel] = d
                size += s
            digest = tree_digest(digests)
            kind = ArtifactKind.DIRECTORY
            attrs = {"files": digests}
        if record:
            self._publish("get", key, kind=kind.value, size=size, digest=digest, attrs=attrs)
        return str(dest)

    def get_bytes(self, remote_key: str, *, verify_digest: str | None = None, record: bool = True) -> bytes:
        """Return the bytes of the file at ``remote_key``.

        Args:
            remote_key: the stored key.
            verify_digest: expected SHA-256 hex; a mismatch raises IntegrityError.
            record: publish the ``artifact/get`` event.

        Raises:
            ArtifactNotFoundError: no file is stored at ``remote_key``.
            IntegrityError: the bytes do not match ``verify_digest``.
        """
        key = validate_key(remote_key)
        with self._open_read(key) as fh:
            data = fh.read()
        digest = hashlib.sha256(data).hexdigest()
        if verify_digest is not None and digest != verify_digest:
            raise IntegrityError(
                f"{self.uri_for(key)!r} hashes to {digest}, expected {verify_digest}; the stored object was changed or corrupted"
            )
        if record:
            self._publish("get", key, kind=ArtifactKind.BLOB.value, size=len(data), digest=digest, attrs={})
        return data

    def exists(self, remote_key: str) -> bool:
        """Whether a file, or a directory (any file under ``remote_key/``), is stored."""
        key = validate_key(remote_key)
        return self._is_file(key) or bool(self._list_under(key))

    def list_artifacts(self, prefix: str = "") -> list[str]:
        """Return every stored file key that starts with ``prefix``: recursive, sorted.

        Keys are relative to the store root on every backend. ``prefix`` is a plain string
        prefix (``"runs/"``, ``"runs/run-0"``); directories show as the keys of their files.

        Raises:
            InvalidKeyError: ``prefix`` is not a valid (partial) key.
        """
        if prefix:
            validate_key(prefix.rstrip("/") or prefix, what="prefix")
        dir_key = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        return sorted(k for k in self._list_files(dir_key) if k.startswith(prefix) and not _is_sidecar(k))

    def list_refs(self, prefix: str = "") -> list[ArtifactRef]:
        """Every stored file starting with ``prefix``, with its size and recorded digest.

        The keys are those of :meth:`list_artifacts` (recursive, sorted, relative to the
        root); each reference has kind ``file``, ``size_bytes``, the ``digest`` recorded when
        it was put (a file of a directory put: the one its directory recorded; ``None`` for a
        file the store did not write) and ``metadata`` ``{"key", "store"}``.

        Raises:
            InvalidKeyError: ``prefix`` is not a valid (partial) key.
        """
        keys = self.list_artifacts(prefix)
        sizes = self._sizes(keys)
        directories: dict[str, dict[str, Any] | None] = {}
        return [
            ArtifactRef(
                uri=self.uri_for(key),
                kind=ArtifactKind.FILE,
                digest=self._recorded_digest(key, directories),
                size_bytes=sizes.get(key),
                metadata={"key": key, "store": self.base_uri},
            )
            for key in keys
        ]

    def delete(self, remote_key: str, *, record: bool = True) -> None:
        """Remove the file or directory at ``remote_key`` and its digest sidecar.

        A key that is a prefix of stored keys (not an artifact itself) removes every artifact
        below it, with their sidecars.

        Raises:
            ArtifactNotFoundError: nothing is stored at ``remote_key``.
            KeyConflictError: ``remote_key`` is a file inside a directory artifact (delete
                the directory, or put it again without the file).
        """
        key = validate_key(remote_key)
        parts = key.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts))]
        found = self._gather([functools.partial(self._read_sidecar, p) for p in [*prefixes, key]])
        for prefix, pmeta in zip(prefixes, found, strict=False):
            if pmeta is not None and pmeta.get("kind") == ArtifactKind.DIRECTORY.value:
                raise KeyConflictError(
                    f"cannot delete {self.uri_for(key)!r}: it is part of the directory artifact "
                    f"{self.uri_for(prefix)!r}; delete that directory, or put it again without the file"
                )
        meta = found[-1]
        if self._is_file(key):
            targets = [key]
            kind = ArtifactKind.FILE.value
        else:
            targets = self._list_under(key)
            kind = ArtifactKind.DIRECTORY.value
        if not targets:
            raise ArtifactNotFoundError(f"nothing is stored at {self.uri_for(key)!r}; nothing to delete")
        for k in targets:
            self._delete_file(k)
        self._delete_file(sidecar_key(key))
        if kind == ArtifactKind.DIRECTORY.value:
            for sidecar in self._list_files(f"{META_PREFIX}/{key}"):
                self._delete_file(sidecar)
        if record:
            digest = meta.get("digest") if meta else None
            size = meta.get("size_bytes") if meta else None
            self._publish(
                "deleted", key, kind=str(meta.get("kind", kind)) if meta else kind, size=size, digest=digest, attrs={}
            )

    # ---- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _check_kind(kind: ArtifactKind | str | None, actual: ArtifactKind, src: str) -> str | None:
        if kind is None:
            return None
        text = str(kind.value if isinstance(kind, ArtifactKind) else kind)
        if not text:
            raise StoreError("kind must be a non-empty string (file, dir, blob or a label such as 'result')")
        if text in (ArtifactKind.FILE.value, ArtifactKind.DIRECTORY.value) and text != actual.value:
            raise StoreError(f"cannot put {str(src)!r} with kind={text!r}: it is a {actual.value}")
        return None if text == actual.value else text

    def _ref(
        self, key: str, kind: ArtifactKind, *, digest: str, size: int, label: str | None, files: dict[str, str] | None
    ) -> ArtifactRef:
        metadata: dict[str, Any] = {"key": key, "store": self.base_uri}
        if label:
            metadata["label"] = label
        if files is not None:
            metadata["files"] = files
        return ArtifactRef(uri=self.uri_for(key), kind=kind, digest=digest, size_bytes=size, metadata=metadata)

    def _list_under(self, key: str) -> list[str]:
        start = key + "/"
        return sorted(k for k in self._list_files(key) if k.startswith(start) and not _is_sidecar(k))

    #: Whether independent lookups (one put's checks) are worth running at once, on threads:
    #: true for backends whose every call is a network round trip.
    concurrent_lookups: bool = False

    def _gather(self, calls: Sequence[Callable[[], Any]]) -> list[Any]:
        """Return the results of ``calls``, run at once where the backend is remote."""
        if not self.concurrent_lookups or len(calls) < 2:
            return [call() for call in calls]
        pool = _lookup_executor()
        futures = [pool.submit(call) for call in calls]
        return [f.result() for f in futures]

    def _records_under(self, key: str, files: Sequence[str]) -> list[str]:
        """Keys below ``key`` that were put as artifacts of their own (``files``: what is stored below).

        Their digest sidecars say so; a backend keeping records elsewhere adds those.
        """
        start = len(META_PREFIX) + 1
        return sorted(k[start:].removesuffix(".json") for k in self._list_files(f"{META_PREFIX}/{key}"))

    def _some_records_under(self, key: str) -> list[str]:
        """Some keys below ``key`` put as artifacts of their own: none when there are none.

        Enough to tell whether there are any; a backend may answer with one level of a listing.
        """
        return self._records_under(key, ())

    def _surroundings(self, key: str) -> Surroundings:
        """What is stored at ``key``, at each proper prefix of it, and below it (one round of lookups).

        This generic version reads the digest sidecars only (one small read per segment of the
        key, and one listing of the sidecars below it, all at once on remote backends): on an
        object store, objects no put recorded are not artifacts and may sit beside them.
        """
        parts = key.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts))]
        calls: list[Callable[[], Any]] = [functools.partial(self._read_sidecar_file, p) for p in [*prefixes, key]]
        calls.append(lambda: self._some_records_under(key))
        found = self._gather(calls)
        metas: list[dict[str, Any] | None] = found[:-1]
        kinds = [m.get("kind") if m is not None else None for m in metas]
        return Surroundings(
            prefix_files=[k not in (None, ArtifactKind.DIRECTORY.value) for k in kinds[:-1]],
            prefix_meta=metas[:-1],
            is_file=kinds[-1] not in (None, ArtifactKind.DIRECTORY.value),
            meta=metas[-1],
            below=found[-1],
        )

    def _check_nesting(self, key: str, *, directory: bool) -> Surroundings:
        """Refuse a put at ``key`` that would nest inside another artifact, or around one.

        The rule (the same on every backend): nothing is stored below a file; nothing is put
        inside a directory artifact (put the whole directory again); a file is not put where
        files are stored below the key; a directory is not put where a file is stored, nor
        over keys below it that were put on their own. A directory put at the key of an
        earlier directory put replaces that one.

        Returns:
            What the check found around the key; the caller hands it to
            :meth:`_open_upload_at` or :meth:`_release` (it may hold an open handle).

        Raises:
            KeyConflictError: the put breaks the rule; nothing was written.
        """
        around = self._surroundings(key)
        try:
            self._refuse_nesting(key, around, directory=directory)
        except BaseException:
            self._release(around)
            raise
        return around

    def _refuse_nesting(self, key: str, around: Surroundings, *, directory: bool) -> None:
        """Raise the KeyConflictError of a put at ``key`` that breaks the nesting rule, given its surroundings."""
        is_dir_artifact = around.meta is not None and around.meta.get("kind") == ArtifactKind.DIRECTORY.value
        if not (
            any(around.prefix_files) or any(around.prefix_meta) or around.below or is_dir_artifact or around.is_file
        ):
            return  # the usual case: nothing around the key
        target = self.uri_for(key)
        parts = key.split("/")
        for depth, (is_file, meta) in enumerate(zip(around.prefix_files, around.prefix_meta, strict=True)):
            where = self.uri_for("/".join(parts[: depth + 1]))
            if is_file:
                raise KeyConflictError(
                    f"cannot store {target!r}: a file is stored at {where!r}, so nothing can be stored below it; "
                    "delete it first or choose another key"
                )
            if meta is not None and meta.get("kind") == ArtifactKind.DIRECTORY.value:
                raise KeyConflictError(
                    f"cannot store {target!r}: it is inside the directory artifact {where!r}; put the whole "
                    "directory again, or delete it first"
                )
        below = around.below
        if not directory:
            if below or is_dir_artifact:
                example = f" ({len(below)} file(s) below it, such as {below[0]!r})" if below else ""
                raise KeyConflictError(
                    f"cannot store a file at {target!r}: a directory is stored there{example}; "
                    "delete it first or choose another key"
                )
            return
        if around.is_file:
            raise KeyConflictError(
                f"cannot store a directory at {target!r}: a file is stored there; delete it first or choose another key"
            )
        if below and not is_dir_artifact:
            owned = self._records_under(key, below)
            if owned:
                raise KeyConflictError(
                    f"cannot store a directory at {target!r}: artifacts were put below it on their own (such as "
                    f"{owned[0]!r}); delete them first (delete {key!r}) or choose another key"
                )

    def _put_tree(
        self, key: str, files: Sequence[tuple[str, str]], progress: Callable[[int], None] | None
    ) -> tuple[dict[str, tuple[str, int]], bool]:
        """Store every file of a directory put under ``key``; return ``{rel: (digest, size)}`` and whether
        the tree landed whole (nothing of an earlier tree can be left below ``key``).

        Files are put several at a time (file I/O, hashing and network calls release the GIL),
        each landing on its own as a single put does. ``progress`` may be called from several
        threads. The first failure (in the order of ``files``) is raised once the files
        already started are done; nothing more is started.
        """
        results = in_parallel(lambda item: self._put_local_file(item[1], f"{key}/{item[0]}", progress, None), files)
        return {rel: result for (rel, _path), result in zip(files, results, strict=True)}, False

    def _put_local_file(
        self, path: str | Path, key: str, progress: Callable[[int], None] | None, sidecar_kind: ArtifactKind | None
    ) -> tuple[str, int]:
        """Copy one local file to ``key``, hashing as it goes; return (digest, size)."""
        fd, st = open_source(path)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise UnsafeArtifactError(f"cannot put {str(path)!r}: not a regular file (a fifo, socket or device)")
        return self._put_fd(fd, st.st_size, path, key=key, progress=progress, sidecar_kind=sidecar_kind)

    def _put_fd(
        self,
        fd: int,
        size_hint: int,
        path: str | Path,
        *,
        key: str,
        progress: Callable[[int], None] | None,
        sidecar_kind: ArtifactKind | None,
        around: Surroundings | None = None,
    ) -> tuple[str, int]:
        """Copy the open file ``fd`` to ``key``, hashing as it goes, and close it.

        With ``sidecar_kind``, the digest sidecar of ``key`` is written too (the files of a
        directory are listed once, in the directory's sidecar). ``around`` is what the nesting
        check found (its handle is used or released here).
        """
        try:
            upload = self._open_upload_at(key, size_hint, around)
            try:
                digest, size = copy_hashing(fd, upload, size_hint, progress)
                if sidecar_kind is None:
                    upload.commit()
                else:
                    self._commit_file(upload, key, sidecar_kind, digest, size)
            except BaseException:
                upload.discard()
                raise
        except OSError as exc:
            if isinstance(exc, ScalableError):
                raise
            raise os_error(exc, f"cannot put {str(path)!r} at {self.uri_for(key)!r}", StoreError) from None
        finally:
            os.close(fd)
        return digest, size

    def _open_upload_at(self, key: str, size_hint: int, around: Surroundings | None) -> Upload:
        """Start writing ``key`` where the nesting check found it (``around``, or None when unchecked).

        A backend whose lookups leave a handle on the key's directory (``around.parent``)
        overrides this to write through it; it takes the handle over in every case. This
        default releases it and calls :meth:`_open_upload`.
        """
        self._release(around)
        return self._open_upload(key, size_hint)

    def _release(self, around: Surroundings | None) -> None:
        """Let go of the handle the lookups of ``around`` left open (none by default)."""
        return

    def _write_object(self, key: str, data: bytes) -> None:
        upload = self._open_upload(key, len(data))
        try:
            upload.write(data)
            upload.commit()
        except BaseException as exc:
            upload.discard()
            if isinstance(exc, OSError) and not isinstance(exc, ScalableError):
                raise os_error(exc, f"cannot write {self.uri_for(key)!r}", StoreError) from None
            raise

    def _commit_file(self, upload: Upload, key: str, kind: ArtifactKind, digest: str, size: int) -> None:
        """Commit ``upload`` and keep its digest sidecar (a backend may keep it on the object itself)."""
        upload.commit()
        self._write_sidecar_file(key, kind, digest, size, None)

    def _read_sidecar(self, key: str) -> dict[str, Any] | None:
        """Return the digest sidecar of ``key`` wherever the backend keeps it (see the module docstring), or None."""
        return self._read_sidecar_file(key)

    def _write_sidecar_file(
        self, key: str, kind: ArtifactKind, digest: str, size: int, files: dict[str, str] | None
    ) -> None:
        sidecar: dict[str, Any] = {"kind": kind.value, "digest": digest, "size_bytes": size}
        if files is not None:
            sidecar["files"] = files
        self._write_object(sidecar_key(key), orjson.dumps(sidecar, option=orjson.OPT_SORT_KEYS))

    def _read_sidecar_file(self, key: str) -> dict[str, Any] | None:
        try:
            with self._open_read(sidecar_key(key)) as fh:
                value = json.loads(fh.read())
        except (ArtifactNotFoundError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def _sizes(self, keys: list[str]) -> dict[str, int]:
        """The size in bytes of each stored file of ``keys`` (backends that list sizes override it)."""
        sizes: dict[str, int] = {}
        for key in keys:
            with self._open_read(key) as fh:
                sizes[key] = fh.seek(0, os.SEEK_END)
        return sizes

    def _recorded_digest(self, key: str, directories: dict[str, dict[str, Any] | None]) -> str | None:
        """The digest recorded for the file at ``key``: its own sidecar's, else its directory's.

        ``directories`` keeps the sidecars of the directories read so far (a listing reads
        each once).
        """
        meta = self._read_sidecar(key)
        if (
            meta is not None
            and isinstance(meta.get("digest"), str)
            and meta.get("kind") != ArtifactKind.DIRECTORY.value
        ):
            return str(meta["digest"])
        parts = key.split("/")
        for i in range(len(parts) - 1, 0, -1):
            parent = "/".join(parts[:i])
            if parent not in directories:
                directories[parent] = self._read_sidecar_file(parent)
            files = (directories[parent] or {}).get("files")
            if isinstance(files, dict) and isinstance(files.get("/".join(parts[i:])), str):
                return str(files["/".join(parts[i:])])
        return None

    def _expected_digest(self, key: str) -> str:
        meta = self._read_sidecar(key)
        if (
            meta is not None
            and isinstance(meta.get("digest"), str)
            and meta.get("kind") != ArtifactKind.DIRECTORY.value
        ):
            return str(meta["digest"])
        # A file inside a directory put: the directory's sidecar lists it.
        parts = key.split("/")
        for i in range(len(parts) - 1, 0, -1):
            parent = "/".join(parts[:i])
            pmeta = self._read_sidecar_file(parent)
            if pmeta and isinstance(pmeta.get("files"), dict):
                rel = "/".join(parts[i:])
                if rel in pmeta["files"]:
                    return str(pmeta["files"][rel])
        raise IntegrityError(f"no digest was recorded for {self.uri_for(key)!r}; cannot verify it (put it again)")

    def _download(
        self, key: str, dest: Path, expected: str | None, progress: Callable[[int], None] | None = None
    ) -> tuple[str, int]:
        """Copy ``key`` to ``dest`` through a temporary file; return (digest, size)."""
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.parent / f"{TEMP_PREFIX}{os.urandom(6).hex()}"
            out = open(tmp, "wb")  # noqa: SIM115 - closed below on every path
        except PermissionError:
            raise UnreadableArtifactError(f"cannot write {str(dest)!r}: permission denied") from None
        except OSError as exc:
            raise StoreError(f"cannot write {str(dest)!r}: {exc.strerror or exc}") from None
        try:
            h = hashlib.sha256()
            size = 0
            with self._open_read(key) as src:
                while True:
                    buf = src.read(CHUNK)
                    if not buf:
                        break
                    h.update(buf)
                    out.write(buf)
                    size += len(buf)
                    if progress is not None:
                        progress(len(buf))
            out.close()
            digest = h.hexdigest()
            if expected is not None and digest != expected:
                raise IntegrityError(
                    f"{self.uri_for(key)!r} hashes to {digest}, but {expected} was recorded at put time; "
                    "the stored object was changed or corrupted"
                )
            os.replace(tmp, dest)
        except BaseException:
            out.close()
            tmp.unlink(missing_ok=True)
            raise
        return digest, size

    def _publish(
        self, op: str, key: str, *, kind: str, size: int | None, digest: str | None, attrs: dict[str, Any]
    ) -> None:
        event: dict[str, Any] = {
            "event_type": "artifact",
            "op": op,
            "artifact_name": posixpath.basename(key),
            "location": self.uri_for(key),
            "key": key,
            "store": self.base_uri,
            "kind": kind,
            "size_bytes": size,
            "digest": digest,
        }
        if attrs:
            event["attrs"] = attrs
        bus.publish(event)


#: How many files of a directory put are copied at once.
TREE_WORKERS: Final = 8


def in_parallel(work: Callable[[Any], Any], items: Sequence[Any], workers: int = TREE_WORKERS) -> list[Any]:
    """Return ``[work(item) for item in items]``, computed by up to ``workers`` threads (this one included).

    Items are handed out in order, one at a time, to whichever thread is free (no future per
    item: a tree of many small files pays little for the threads). After a failure no item
    is started; the first exception in the order of ``items`` is raised once the calls
    already running have returned.
    """
    count = len(items)
    if count <= 1 or workers <= 1:
        return [work(item) for item in items]
    results: list[Any] = [None] * count
    errors: dict[int, BaseException] = {}
    turns = itertools.count()  # next() of a count is atomic: each index goes to one thread
    failed = threading.Event()

    def run() -> None:
        while not failed.is_set():
            index = next(turns)
            if index >= count:
                return
            try:
                results[index] = work(items[index])
            except BaseException as exc:  # raised in the calling thread below
                errors[index] = exc
                failed.set()
                return

    helpers = [threading.Thread(target=run, name="scalable-tree", daemon=True) for _ in range(min(workers, count) - 1)]
    for helper in helpers:
        helper.start()
    try:
        run()
    except BaseException:  # an interrupt between two items: the helpers stop too
        failed.set()
        raise
    finally:
        for helper in helpers:
            helper.join()
    if errors:
        raise errors[min(errors)]
    return results


def _one_at_a_time(progress: Callable[[int], None] | None) -> Callable[[int], None] | None:
    """``progress`` made safe to call from several threads (calls are serialised)."""
    if progress is None:
        return None
    lock = threading.Lock()
    report = progress

    def serialised(n: int) -> None:
        with lock:
            report(n)

    return serialised


def open_source(path: str | Path) -> tuple[int, os.stat_result]:
    """Open a local source without blocking (a fifo must not hang the put); return (fd, stat).

    A fifo, socket or device is refused before it is opened (its stat is checked first, and
    again on the open file).
    """
    try:
        if not stat.S_ISREG(mode := os.stat(path).st_mode) and not stat.S_ISDIR(mode):
            raise UnsafeArtifactError(
                f"cannot put {str(path)!r}: not a regular file or directory (a fifo, socket or device)"
            )
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise ArtifactNotFoundError(f"cannot put {str(path)!r}: no such file or directory") from None
    except PermissionError:
        raise UnreadableArtifactError(f"cannot put {str(path)!r}: permission denied; check its permissions") from None
    except OSError as exc:
        raise StoreError(f"cannot put {str(path)!r}: {exc.strerror or exc}") from None
    return fd, os.fstat(fd)


def copy_hashing(
    src_fd: int, upload: Upload, size_hint: int, progress: Callable[[int], None] | None = None
) -> tuple[str, int]:
    """Read the open file ``src_fd`` once, hashing and writing every byte; return (digest, size).

    A file of up to one chunk is read whole (one read, and one more that finds its end). A
    larger one going to a :class:`FileUpload` is copied by the kernel while this thread hashes
    what landed (:func:`_kernel_copy_hashing`). Otherwise two buffers alternate: while this
    thread hashes one, a worker thread writes it and reads the next into the other buffer.
    hashlib and file I/O release the GIL, so on two cores a put costs about as much as
    hashing alone. ``upload.write`` gets a view of a reused buffer and must copy what it keeps.
    """
    if size_hint <= CHUNK:
        data = os.read(src_fd, size_hint + 1)
        if data:  # a file may grow between fstat and read, or a read come back short: read to the end
            parts = [data]
            while more := os.read(src_fd, CHUNK):
                parts.append(more)
            if len(parts) > 1:
                data = b"".join(parts)
        upload.write(data)
        if progress is not None:
            progress(len(data))
        return hashlib.sha256(data).hexdigest(), len(data)
    if isinstance(upload, FileUpload):
        copied = _kernelcopy_hashing(src_fd, upload.fileno(), progress)
        if copied is not None:
            return copied
    h = hashlib.sha256()
    buffers = (bytearray(CHUNK), bytearray(CHUNK))

    def fill(i: int) -> int:
        view = memoryview(buffers[i])
        got = 0
        while got < CHUNK:
            n = os.readv(src_fd, [view[got:]])
            if not n:
                break
            got += n
        return got

    def write_then_fill(i: int, n: int) -> int:
        upload.write(memoryview(buffers[i])[:n])  # type: ignore[arg-type]
        return fill(1 - i)

    size = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scalable-put") as pool:
        i, n = 0, fill(0)
        while n:
            pending: Future[int] = pool.submit(write_then_fill, i, n)
            h.update(memoryview(buffers[i])[:n])
            size += n
            if progress is not None:
                progress(n)
            n = pending.result()
            i = 1 - i
    return h.hexdigest(), size


#: What ``copy_file_range`` fails with where the kernel cannot copy between two files (other
#: file systems, an old kernel, special files): the put copies through user space instead.
_NO_KERNEL_COPY: Final = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL, errno.EBADF})
_POPULATE: Final = getattr(mmap, "MAP_POPULATE", 0)


def _kernelcopy_hashing(src_fd: int, dst_fd: int, progress: Callable[[int], None] | None) -> tuple[str, int] | None:
    """Copy ``src_fd`` to ``dst_fd`` in the kernel while this thread hashes what landed; return (digest, size).

    A worker thread runs ``copy_file_range`` a chunk at a time (the bytes never pass through
    user space); this thread hashes each chunk from the destination's pages as soon as it is
    there, so the digest is that of the bytes stored, whatever happens to the source
    meanwhile. Returns None, having copied nothing, when the kernel cannot copy between these
    two files.
    """
    try:
        n = os.copy_file_range(src_fd, dst_fd, CHUNK)
    except OSError as exc:
        if exc.errno in _NO_KERNEL_COPY:
            return None
        raise
    landed: queue.SimpleQueue[int | BaseException] = queue.SimpleQueue()
    stop = threading.Event()

    def copy() -> None:
        try:
            while not stop.is_set() and (got := os.copy_file_range(src_fd, dst_fd, CHUNK)):
                landed.put(got)
            landed.put(0)
        except BaseException as exc:  # handed to the hashing thread, which raises it
            landed.put(exc)

    h = hashlib.sha256()
    offset = 0
    worker = threading.Thread(target=copy, name="scalable-put-copy", daemon=True) if n else None
    if worker is not None:
        worker.start()
    try:
        while n:
            _hash_range(h, dst_fd, offset, n)
            offset += n
            if progress is not None:
                progress(n)
            got = landed.get()
            if isinstance(got, BaseException):
                raise got
            n = got
    finally:
        if worker is not None:
            stop.set()
            worker.join()
    return h.hexdigest(), offset


def _hash_range(h: Any, fd: int, start: int, length: int) -> None:
    """Hash ``length`` bytes of the file ``fd`` from ``start``, mapped from the page cache (nothing copied)."""
    base = start - start % mmap.ALLOCATIONGRANULARITY
    with mmap.mmap(
        fd, start + length - base, flags=mmap.MAP_SHARED | _POPULATE, prot=mmap.PROT_READ, offset=base
    ) as mm:
        view = memoryview(mm)
        try:
            part = view[start - base :]
            try:
                h.update(part)
            finally:
                part.release()
        finally:
            view.release()
