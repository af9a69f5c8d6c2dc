"""LocalArtifactStore: artifacts as files under a root directory on local disk.

The store never leaves its root. Every operation opens the key's directories one component
at a time, each relative to the one before (``openat`` with ``O_NOFOLLOW | O_DIRECTORY``),
and then acts on the last name relative to that directory (``openat``, ``renameat``,
``unlinkat``, ``fstatat`` without following links). A symbolic link anywhere inside the root
is never followed: a key whose path crosses one reads as absent, is not listed, and cannot be
written through (:class:`~scalable.errors.UnsafeArtifactError`), whatever the link points at
and whenever it appeared, also between two steps of one call. A put at a key whose last
component is a link replaces the link itself (as ``mv`` does), never its target.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Final, Self
from urllib.parse import quote_from_bytes

from scalable.errors import (
    ArtifactNotFoundError,
    ConfigError,
    InvalidKeyError,
    InvalidStoreURIError,
    KeyConflictError,
    ScalableError,
    StoreError,
    StoreNotFoundError,
    StorePermissionError,
    StoreUnreachableError,
    UnreadableArtifactError,
    UnsafeArtifactError,
    os_error,
)
from scalable.failures import storage_error
from scalable.stores.base import (
    META_PREFIX,
    TEMP_PREFIX,
    ArtifactKind,
    BaseArtifactStore,
    Surroundings,
    Upload,
    copy_hashing,
    in_parallel,
    open_source,
    sidecar_name,
)
from scalable.uris import path_to_uri, uri_to_path

__all__ = ["LocalArtifactStore", "unwritable_ancestor"]

_LOCAL_SCHEME = re.compile(r"^(?:file|local):", re.IGNORECASE)
#: A key that is already a normal relative path: no empty, ``.`` or ``..`` segment (nor any
#: segment starting with a dot), no leading or trailing ``/``.
_PLAIN_KEY = re.compile(r"(?:[^/.][^/]*)(?:/[^/.][^/]*)*").fullmatch
#: Extended attribute holding a file's digest record, attached before the file is put in place
#: (its name is part of the on-disk format).
_XATTR: Final = "user.scalable.record"
#: The record's binary form: format 1, kind, size (big endian), SHA-256. 42 bytes fit inside
#: the inode on ext4 (a JSON record of about 110 bytes needed a block of its own per file).
#: Records in JSON (``{"digest": ..., "kind": ..., "size_bytes": ...}``), as earlier puts wrote
#: them, are read as well.
_RECORD: Final = struct.Struct(">BcQ32s")
_RECORD_KINDS: Final = {"file": b"f", "blob": b"b"}
_KINDS_OF_RECORD: Final = {code: kind for kind, code in _RECORD_KINDS.items()}
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a fifo someone left in the store must not hang a read.
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
# Read and write: the file being written is hashed from its own pages (a kernel copy).
_TMP_FLAGS: Final = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_UNNAMED_FLAGS: Final = getattr(os, "O_TMPFILE", 0) | os.O_RDWR | os.O_CLOEXEC
#: Whether an unnamed file can be given its name later (O_TMPFILE, linked through /proc).
_LINKABLE_TMPFILE: Final = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
#: A directory put builds its tree apart with every directory held open; a tree of more
#: directories than this is put file by file instead (file descriptors are a limited resource).
_STAGED_DIRS_MAX: Final = 256
# What an openat of a directory component raises when the component is a link (ELOOP) or
# something other than a directory (ENOTDIR).
_NOT_A_DIR: Final = (errno.ELOOP, errno.ENOTDIR)


class _LocalUpload:
    """A file written in the key's directory and put in place on commit.

    The file starts without a name (``O_TMPFILE``) where the file system allows it, and is
    linked in at the key on commit, complete with its digest record: there is never a name
    to clean up, and a put killed at any instant leaves nothing. Where the key is taken (a
    put over an earlier one) or unnamed files are not supported, the file gets a temporary
    name in the directory and is renamed over the key, which replaces it atomically. A
    temporary name is short and fixed in length (it fits any file system's name limit
    whatever the key) and starts with the reserved ``.scalable-`` prefix no key segment may use.

    The directory is held open, so the file lands where it was written even if a component
    of the path is swapped for a link meanwhile.
    """

    def __init__(
        self, dir_fd: int, name: str, key: str, uri_for: Callable[[str], str], *, replacing: bool = False
    ) -> None:
        self.dir_fd: int | None = dir_fd
        self.name = name
        self.key = key
        self.uri_for = uri_for  # spelled only for an error: a put of many small files pays nothing for it
        #: the temporary name, or None while the file has no name
        self.tmp: str | None = None
        try:
            self.fd: int | None = self._open_unnamed() if not replacing else None
            if self.fd is None:
                self.tmp = _temp_name()
                self.fd = os.open(self.tmp, _TMP_FLAGS, 0o666, dir_fd=dir_fd)
        except BaseException as exc:
            self._close_dir()
            if isinstance(exc, PermissionError):
                raise UnreadableArtifactError(f"cannot write {uri_for(key)!r}: permission denied") from None
            if isinstance(exc, OSError):
                raise os_error(exc, f"cannot write {uri_for(key)!r}", StoreError) from None
            raise

    def _open_unnamed(self) -> int | None:
        """An unnamed file in the directory, or None where the file system has none."""
        if not _LINKABLE_TMPFILE:
            return None
        try:
            return os.open(".", _UNNAMED_FLAGS, 0o666, dir_fd=self.dir_fd)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                return None
            raise

    def fileno(self) -> int:
        """The descriptor of the file being written (open for reading too)."""
        assert self.fd is not None
        return self.fd

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def set_sidecar(self, sidecar: bytes) -> bool:
        """Attach the digest record to the file as an extended attribute; False if unsupported."""
        assert self.fd is not None
        try:
            os.setxattr(self.fd, _XATTR, sidecar)
        except OSError:
            return False
        return True

    def commit(self) -> None:
        assert self.fd is not None and self.dir_fd is not None
        try:
            if self.tmp is None:
                try:
                    os.link(f"/proc/self/fd/{self.fd}", self.name, dst_dir_fd=self.dir_fd, follow_symlinks=True)
                except FileExistsError:  # stored meanwhile: replace it, as a put does
                    self.tmp = _temp_name()
                    os.link(f"/proc/self/fd/{self.fd}", self.tmp, dst_dir_fd=self.dir_fd, follow_symlinks=True)
                    os.replace(self.tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
            else:
                os.replace(self.tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except OSError as exc:
            self.discard()
            uri = self.uri_for(self.key)
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise KeyConflictError(
                    f"cannot store a file at {uri!r}: a directory is stored there; delete it first"
                ) from None
            raise os_error(exc, f"cannot store key {self.key!r} at {uri!r}", StoreError) from None
        os.close(self.fd)
        self.fd = None
        self._close_dir()

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.dir_fd is not None:
            self._unlink_tmp()
            self._close_dir()

    def _unlink_tmp(self) -> None:
        if self.tmp is None:
            return
        try:
            os.unlink(self.tmp, dir_fd=self.dir_fd)
        except FileNotFoundError:
            return

    def _close_dir(self) -> None:
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None


def _temp_name() -> str:
    return f"{TEMP_PREFIX}{os.urandom(6).hex()}"


def unwritable_ancestor(path: Path) -> Path | None:
    """Return why ``path`` cannot be a writable directory: its nearest existing ancestor (or
    itself), when that is not a writable directory; ``None`` when ``path`` is one or can be made.
    """
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        return probe
    return None


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)


class LocalArtifactStore(BaseArtifactStore):
    """Artifacts stored as files under ``root`` (created on first put); links inside are never followed.

    Args:
        root: the store's root directory; ``~`` is expanded, relative paths are resolved
            against the current directory once, at construction.
    """

    scheme = "file"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.fspath(root)).expanduser().resolve()
        uri = path_to_uri(self.root)  # file:/// for the file system's root
        self.base_uri = uri if uri.endswith("/") else uri + "/"
        self._root = str(self.root).rstrip("/")
        #: the URI every key's URI starts with (the root's, ending in ``/``)
        self._key_uri = "file://" + quote_from_bytes(os.fsencode(f"{self._root}/"), safe="/")

    @classmethod
    def from_uri(cls, uri: str, **storage_options: Any) -> Self:
        """Return the store at a plain path or a ``file://`` (or ``local://``) URI.

        A URI's path is percent-decoded (``file:///data/My%20Project`` is the directory
        ``/data/My Project``); a plain path is taken literally.

        Raises:
            ConfigError: storage options were given (they apply to object stores only), or
                the URI names another host or no absolute path.
        """
        if storage_options:
            raise ConfigError(
                f"storage options {sorted(storage_options)} do not apply to the local store {uri!r}; drop them"
            )
        m = _LOCAL_SCHEME.match(uri)
        return cls(uri_to_path("file:" + uri[m.end() :]) if m else uri)

    def check_reachable(self) -> None:
        """Check that the root is, or can be created as, a writable directory.

        Raises:
            StoreUnreachableError: it cannot (a file in the way, no permission).
        """
        blocker = unwritable_ancestor(self.root)
        if blocker is not None:
            raise StoreUnreachableError(
                f"{str(self.root)!r} cannot be written ({blocker} is not a writable directory); "
                "make it writable or choose another directory"
            )

    def check_exists(self) -> None:
        """Check that the root is an existing directory.

        Raises:
            StoreNotFoundError: the root does not exist.
            InvalidStoreURIError: the root, or one of its parents, is a file.
            StorePermissionError: the root cannot be read.
        """
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            raise StoreNotFoundError(
                f"no artifact store at {self.base_uri!r}: the directory {str(self.root)!r} does not exist; "
                "check the path (nothing has been stored there)"
            ) from None
        except OSError as exc:
            raise storage_error(exc, self.base_uri, action="open") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidStoreURIError(
                f"no artifact store at {self.base_uri!r}: {str(self.root)!r} is a file, not a directory; "
                "give the store's root directory"
            )
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise StorePermissionError(
                f"cannot read the artifact store {self.base_uri!r}: permission denied; check the directory's permissions"
            )

    def uri_for(self, key: str) -> str:
        """Return the ``file://`` URI of ``key`` (percent-encoded, see :mod:`scalable.uris`)."""
        if _PLAIN_KEY(key):  # nothing to normalise: the root's URI and the key quoted alone
            return self._key_uri + quote_from_bytes(os.fsencode(key), safe="/")
        return path_to_uri(f"{self._root}/{key}")

    # ---- walking the root without following links ---------------------------------------

    def _open_root(self, *, create: bool) -> int | None:
        try:
            return os.open(self._root or "/", _DIR_FLAGS)
        except FileNotFoundError:
            if not create:
                return None
        except OSError as exc:
            if exc.errno in _NOT_A_DIR:
                raise StoreError(
                    f"the store root {self._root!r} is no longer a directory (a file or a link is there); "
                    "restore it or choose another root"
                ) from None
            if isinstance(exc, PermissionError):
                raise UnreadableArtifactError(
                    f"cannot open the store root {self._root!r}: permission denied; check its permissions"
                ) from None
            raise os_error(exc, f"cannot open the store root {self._root!r}", StoreError) from None
        try:
            os.makedirs(self._root, exist_ok=True)
            return os.open(self._root, _DIR_FLAGS)
        except PermissionError:
            raise UnreadableArtifactError(f"cannot create the store root {self._root!r}: permission denied") from None
        except OSError as exc:
            raise os_error(exc, f"cannot create the store root {self._root!r}", StoreError) from None

    def _open_dirs(self, parts: Sequence[str], key: str, *, create: bool) -> int | None:
        """Open ``root/parts...`` one component at a time, never following a link; return its fd.

        Without ``create``, a missing component, a link or a file on the way gives ``None``
        (nothing is stored there). With ``create``, missing directories are made, and a link
        or a file on the way is refused.

        Raises:
            UnsafeArtifactError: with ``create``, a component is a symbolic link.
            KeyConflictError: with ``create``, a component is a file.
        """
        fd = self._open_root(create=create)
        if fd is None:
            return None
        for depth, name in enumerate(parts):
            try:
                try:
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    # FileExistsError: made by a concurrent put, or a link (the open below tells).
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o777, dir_fd=fd)
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if not create and exc.errno in (*_NOT_A_DIR, errno.ENOENT):
                    os.close(fd)
                    return None
                error = self._walk_error(exc, fd, name, "/".join(parts[: depth + 1]), key)
                os.close(fd)
                raise error from None
            os.close(fd)
            fd = nxt
        return fd

    def _walk_error(self, exc: OSError, dir_fd: int, name: str, where: str, key: str) -> ScalableError:
        """The error of a walk that failed opening ``name`` (the component ``where``) in ``dir_fd``."""
        shown = self.uri_for(where)
        if exc.errno in _NOT_A_DIR and _is_link_at(dir_fd, name):
            return UnsafeArtifactError(
                f"cannot store {self.uri_for(key)!r}: {shown!r} is a symbolic link, and the store never follows "
                "links inside its root; remove the link or choose another key"
            )
        if exc.errno in _NOT_A_DIR:
            return KeyConflictError(
                f"cannot store {self.uri_for(key)!r}: a file is stored at {shown!r}, so nothing can be stored "
                "below it; delete it first or choose another key"
            )
        if exc.errno == errno.ENAMETOOLONG:
            return InvalidKeyError(
                f"store key {key!r} has a segment longer than this file system allows (255 bytes); use a shorter key"
            )
        if isinstance(exc, PermissionError):
            return UnreadableArtifactError(f"cannot open {shown!r}: permission denied; check its permissions")
        return os_error(exc, f"cannot open {shown!r}", StoreError)

    @contextmanager
    def _parent(self, key: str) -> Iterator[tuple[int | None, str]]:
        """Yield ``(fd of the key's directory or None, last component)`` for a read."""
        parts = key.split("/")
        fd = self._open_dirs(parts[:-1], key, create=False)
        try:
            yield fd, parts[-1]
        finally:
            if fd is not None:
                os.close(fd)

    # ---- primitives ----------------------------------------------------------------------

    def _open_upload(self, key: str, size_hint: int) -> _LocalUpload:
        parts = key.split("/")
        fd = self._open_dirs(parts[:-1], key, create=True)
        assert fd is not None
        return _LocalUpload(fd, parts[-1], key, self.uri_for)

    def _open_upload_at(self, key: str, size_hint: int, around: Surroundings | None) -> _LocalUpload:
        """Write into the directory the nesting check walked to and left open, if it did (one walk a put)."""
        if around is None or around.parent is None:
            return self._open_upload(key, size_hint)
        return _LocalUpload(around.parent, key.rsplit("/", 1)[-1], key, self.uri_for, replacing=around.is_file)

    def _release(self, around: Surroundings | None) -> None:
        if around is not None and around.parent is not None:
            os.close(around.parent)

    def _put_tree(
        self, key: str, files: Sequence[tuple[str, str]], progress: Callable[[int], None] | None
    ) -> tuple[dict[str, tuple[str, int]], bool]:
        """Build the tree in a new directory under a temporary name beside the key, then rename it in.

        A put at a key where nothing is stored lands whole, in one rename: until then nothing of
        it is visible, and a put killed on the way leaves only the reserved temporary directory.
        Its files are written in their places without a rename each, several at a time. A put
        at a taken key (a directory put again) replaces file by file, as on every backend.
        """
        parts = key.split("/")
        parent = self._open_dirs(parts[:-1], key, create=True)
        assert parent is not None
        name = parts[-1]
        try:
            dirs = sorted(_directories_of(rel for rel, _path in files))
            if _exists_at(parent, name) or len(dirs) > _STAGED_DIRS_MAX:
                return super()._put_tree(key, files, progress)
            staging = _temp_name()
            try:
                os.mkdir(staging, 0o777, dir_fd=parent)
                stored = self._fill_tree(parent, staging, dirs, files, progress)
                try:
                    os.rename(staging, name, src_dir_fd=parent, dst_dir_fd=parent)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                        raise
                    shutil.rmtree(staging, dir_fd=parent, ignore_errors=True)
                    return super()._put_tree(key, files, progress)  # something was stored there meanwhile
            except BaseException as exc:
                shutil.rmtree(staging, dir_fd=parent, ignore_errors=True)
                if isinstance(exc, ScalableError) or not isinstance(exc, OSError):
                    raise
                if isinstance(exc, PermissionError):
                    raise UnreadableArtifactError(f"cannot write {self.uri_for(key)!r}: permission denied") from None
                raise os_error(exc, f"cannot store the directory {self.uri_for(key)!r}", StoreError) from None
            return stored, True
        finally:
            os.close(parent)

    def _fill_tree(
        self,
        parent: int,
        staging: str,
        dirs: Sequence[str],
        files: Sequence[tuple[str, str]],
        progress: Callable[[int], None] | None,
    ) -> dict[str, tuple[str, int]]:
        """Copy ``files`` into the new directory ``staging`` of ``parent``; return ``{rel: (digest, size)}``."""
        fds = {"": os.open(staging, _DIR_FLAGS, dir_fd=parent)}
        try:
            for rel_dir in dirs:  # parents first (sorted), one component at a time, never through a link
                above, _, last = rel_dir.rpartition("/")
                os.mkdir(last, 0o777, dir_fd=fds[above])
                fds[rel_dir] = os.open(last, _DIR_FLAGS, dir_fd=fds[above])

            def copy(item: tuple[str, str]) -> tuple[str, int]:
                rel, path = item
                where, _, file_name = rel.rpartition("/")
                return _copy_new_file(path, fds[where], file_name, progress)

            results = in_parallel(copy, files)
        finally:
            _close_all(list(fds.values()))
        return {rel: result for (rel, _path), result in zip(files, results, strict=True)}

    def _open_file(self, key: str) -> int | None:
        """Open the regular file at ``key`` for reading, never through a link; None if there is none."""
        with self._parent(key) as (dir_fd, name):
            if dir_fd is None:
                return None
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
            except PermissionError:
                raise UnreadableArtifactError(f"cannot read {self.uri_for(key)!r}: permission denied") from None
            except OSError:
                return None  # absent, a link (ELOOP), or unreadable as a file
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def _open_read(self, key: str) -> BinaryIO:
        fd = self._open_file(key)
        if fd is None:
            raise ArtifactNotFoundError(f"no file is stored at {self.uri_for(key)!r}")
        return open(fd, "rb")

    def _commit_file(self, upload: Upload, key: str, kind: ArtifactKind, digest: str, size: int) -> None:
        """Keep the digest record on the file itself (one syscall, before the file is in place)."""
        # The attribute is read before any sidecar file, so a sidecar file an older put left
        # (on a filesystem without xattrs) never shadows it.
        record = _pack_record(kind, digest, size)
        if record is not None and isinstance(upload, _LocalUpload) and upload.set_sidecar(record):
            upload.commit()
        else:
            super()._commit_file(upload, key, kind, digest, size)

    def _read_sidecar(self, key: str) -> dict[str, Any] | None:
        fd = self._open_file(key)
        if fd is None:
            return super()._read_sidecar(key)
        try:
            value = _unpack_record(os.getxattr(fd, _XATTR))
        except OSError:
            value = None
        finally:
            os.close(fd)
        return value if value is not None else super()._read_sidecar(key)

    def _surroundings(self, key: str) -> Surroundings:
        """One walk down the key's directories and one down its sidecars', never through a link.

        When every directory of the key exists, the last one is left open as ``parent``: the
        put that follows writes through it instead of walking again.

        Raises:
            UnsafeArtifactError: a directory of the key is a symbolic link.
        """
        parts = key.split("/")
        prefix_files = [False] * (len(parts) - 1)
        prefix_meta: list[dict[str, Any] | None] = [None] * (len(parts) - 1)
        is_file = False
        below: list[str] = []
        meta: dict[str, Any] | None = None
        fd = self._open_root(create=False)
        if fd is None:
            return Surroundings(prefix_files, prefix_meta, is_file, meta, below)
        try:
            meta_fd = _open_dir_at(fd, META_PREFIX)
        except OSError:
            meta_fd = None
        keep = False
        try:
            for depth, name in enumerate(parts[:-1]):
                try:
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno in _NOT_A_DIR and not _is_link_at(fd, name):
                        prefix_files[depth] = True
                        break
                    raise self._walk_error(exc, fd, name, "/".join(parts[: depth + 1]), key) from None
                os.close(fd)
                fd = nxt
            else:
                try:
                    mode = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False).st_mode
                except OSError:
                    mode = 0
                is_file = stat.S_ISREG(mode)
                if stat.S_ISDIR(mode):
                    below = self._list_under(key)
                keep = True
            if meta_fd is not None:
                # The sidecar files of the key's prefixes, and of the key itself.
                for depth, name in enumerate(parts[:-1]):
                    prefix_meta[depth] = _read_json_at(meta_fd, sidecar_name(name))
                    try:
                        nxt = _open_dir_at(meta_fd, name)
                    except OSError:
                        break
                    os.close(meta_fd)
                    meta_fd = nxt
                else:
                    meta = _read_json_at(meta_fd, sidecar_name(parts[-1]))
        except BaseException:
            keep = False
            raise
        finally:
            if not keep:
                os.close(fd)
            if meta_fd is not None:
                os.close(meta_fd)
        return Surroundings(prefix_files, prefix_meta, is_file, meta, below, fd if keep else None)

    def _records_under(self, key: str, files: Sequence[str]) -> list[str]:
        """Keys below ``key`` put on their own: a sidecar file, or the record on the file itself."""
        return sorted({*super()._records_under(key, files), *(k for k in files if self._has_record_attr(k))})

    def _has_record_attr(self, key: str) -> bool:
        fd = self._open_file(key)
        if fd is None:
            return False
        try:
            os.getxattr(fd, _XATTR)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def _is_file(self, key: str) -> bool:
        with self._parent(key) as (dir_fd, name):
            if dir_fd is None:
                return False
            try:
                return stat.S_ISREG(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
            except OSError:
                return False

    def _list_files(self, dir_key: str) -> list[str]:
        parts = dir_key.split("/") if dir_key else []
        fd = self._open_dirs(parts, dir_key, create=False)
        if fd is None:
            return [dir_key] if dir_key and self._is_file(dir_key) else []
        out: list[str] = []
        try:
            _scan(fd, f"{dir_key}/" if dir_key else "", out)
        finally:
            os.close(fd)
        return out

    def _delete_file(self, key: str) -> None:
        parts = key.split("/")
        root = self._open_root(create=False)
        if root is None:
            return
        chain = [root]
        try:
            for name in parts[:-1]:
                try:
                    chain.append(os.open(name, _DIR_FLAGS, dir_fd=chain[-1]))
                except OSError:
                    return  # absent, or a link: nothing of the store is there
            try:
                os.unlink(parts[-1], dir_fd=chain[-1])  # removes a link itself, never its target
            except OSError:
                return  # absent, or a directory
            # Drop directories the delete left empty, up to the root.
            for depth in range(len(parts) - 1, 0, -1):
                try:
                    os.rmdir(parts[depth - 1], dir_fd=chain[depth - 1])
                except OSError:
                    break
        finally:
            _close_all(chain)


class _NewFile:
    """A file just created in a directory no one else sees yet: written as it is, no rename."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def commit(self) -> None:
        return

    def discard(self) -> None:
        return


def _copy_new_file(path: str, dir_fd: int, name: str, progress: Callable[[int], None] | None) -> tuple[str, int]:
    """Copy the local file ``path`` to the new file ``name`` of ``dir_fd``, hashing it; return (digest, size)."""
    src, st = open_source(path)
    try:
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeArtifactError(f"cannot put {str(path)!r}: not a regular file (a fifo, socket or device)")
        out = os.open(name, _TMP_FLAGS, 0o666, dir_fd=dir_fd)
        try:
            return copy_hashing(src, _NewFile(out), st.st_size, progress)
        finally:
            os.close(out)
    except OSError as exc:
        if isinstance(exc, ScalableError):
            raise
        raise os_error(exc, f"cannot put {str(path)!r}", StoreError) from None
    finally:
        os.close(src)


def _directories_of(rels: Iterable[str]) -> set[str]:
    """Every directory (and each directory above it) holding one of the files ``rels``."""
    found: set[str] = set()
    for rel in rels:
        where = rel.rpartition("/")[0]
        while where and where not in found:
            found.add(where)
            where = where.rpartition("/")[0]
    return found


def _exists_at(dir_fd: int, name: str) -> bool:
    """Whether anything (a file, a directory, a link) is at ``name`` in ``dir_fd``."""
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _pack_record(kind: ArtifactKind, digest: str, size: int) -> bytes | None:
    """The binary digest record of a stored file, or None for what it cannot hold (then a sidecar file)."""
    code = _RECORD_KINDS.get(kind.value)
    if code is None or len(digest) != 64 or not 0 <= size < 2**64:
        return None
    return _RECORD.pack(1, code, size, bytes.fromhex(digest))


def _unpack_record(raw: bytes) -> dict[str, Any] | None:
    """The digest record a put attached to a file (binary, or the JSON of earlier versions), or None."""
    if len(raw) == _RECORD.size and raw[0] == 1:
        _version, code, size, digest = _RECORD.unpack(raw)
        kind = _KINDS_OF_RECORD.get(code)
        return None if kind is None else {"digest": digest.hex(), "kind": kind, "size_bytes": size}
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _is_link_at(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_dir_at(dir_fd: int, name: str) -> int:
    return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _read_json_at(dir_fd: int, name: str) -> dict[str, Any] | None:
    """The JSON object in the regular file ``name`` of ``dir_fd`` (never through a link), or None."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with open(fd, "rb", closefd=False) as fh:
            value = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return value if isinstance(value, dict) else None


def _scan(fd: int, prefix: str, out: list[str]) -> None:
    """Append ``prefix + name`` of every regular file under the open directory ``fd``.

    Links are neither listed nor followed; temporary files of puts in progress and digest
    sidecar directories below the start are left out (callers list those explicitly).
    """
    with os.scandir(fd) as entries:
        for entry in entries:
            name = entry.name
            if name.startswith(TEMP_PREFIX):
                continue
            if entry.is_dir(follow_symlinks=False):
                if name == META_PREFIX:
                    continue
                try:
                    sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue  # removed or swapped for a link since it was read
                try:
                    _scan(sub, f"{prefix}{name}/", out)
                finally:
                    os.close(sub)
            elif entry.is_file(follow_symlinks=False):
                out.append(prefix + name)
