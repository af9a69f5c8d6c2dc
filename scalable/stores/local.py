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
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Final, Self

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
    sidecar_name,
)
from scalable.uris import path_to_uri, uri_to_path

__all__ = ["LocalArtifactStore", "unwritable_ancestor"]

_LOCAL_SCHEME = re.compile(r"^(?:file|local):", re.IGNORECASE)
#: Extended attribute holding a file's digest sidecar, written before the file is renamed in
#: (its name is part of the on-disk format).
_XATTR: Final = "user.scalable.record"
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a fifo someone left in the store must not hang a read.
_READ_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_TMP_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# What an openat of a directory component raises when the component is a link (ELOOP) or
# something other than a directory (ENOTDIR).
_NOT_A_DIR: Final = (errno.ELOOP, errno.ENOTDIR)


class _LocalUpload:
    """A temporary file in the key's directory, renamed over the key on commit.

    The directory is held open, so the rename lands where the temporary file was written
    even if a component of the path is swapped for a link meanwhile. The temporary name is
    short and fixed in length (it fits any file system's name limit whatever the key) and
    starts with the reserved ``.scalable-`` prefix no key segment may use.
    """

    def __init__(self, dir_fd: int, name: str, key: str, uri_for: Callable[[str], str]) -> None:
        self.dir_fd: int | None = dir_fd
        self.name = name
        self.key = key
        self.uri_for = uri_for  # spelled only for an error: a put of many small files pays nothing for it
        self.tmp = f"{TEMP_PREFIX}{os.urandom(6).hex()}"
        try:
            self.fd: int | None = os.open(self.tmp, _TMP_FLAGS, 0o666, dir_fd=dir_fd)
        except BaseException as exc:
            self._close_dir()
            if isinstance(exc, PermissionError):
                raise UnreadableArtifactError(f"cannot write {uri_for(key)!r}: permission denied") from None
            if isinstance(exc, OSError):
                raise os_error(exc, f"cannot write {uri_for(key)!r}", StoreError) from None
            raise

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    def set_sidecar(self, sidecar: bytes) -> bool:
        """Attach the digest sidecar to the file as an extended attribute; False if unsupported."""
        assert self.fd is not None
        try:
            os.setxattr(self.fd, _XATTR, sidecar)
        except OSError:
            return False
        return True

    def commit(self) -> None:
        assert self.fd is not None and self.dir_fd is not None
        os.close(self.fd)
        self.fd = None
        try:
            os.replace(self.tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except OSError as exc:
            self._unlink_tmp()
            self._close_dir()
            uri = self.uri_for(self.key)
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise KeyConflictError(
                    f"cannot store a file at {uri!r}: a directory is stored there; delete it first"
                ) from None
            raise os_error(exc, f"cannot store key {self.key!r} at {uri!r}", StoreError) from None
        self._close_dir()

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.dir_fd is not None:
            self._unlink_tmp()
            self._close_dir()

    def _unlink_tmp(self) -> None:
        try:
            os.unlink(self.tmp, dir_fd=self.dir_fd)
        except FileNotFoundError:
            return

    def _close_dir(self) -> None:
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None


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
        """Keep the digest sidecar on the file itself (one syscall, atomic with the rename)."""
        sidecar = f'{{"digest": "{digest}", "kind": "{kind.value}", "size_bytes": {int(size)}}}'.encode()
        # The attribute is read before any sidecar file, so a sidecar file an older put left
        # (on a filesystem without xattrs) never shadows it.
        if isinstance(upload, _LocalUpload) and upload.set_sidecar(sidecar):
            upload.commit()
        else:
            super()._commit_file(upload, key, kind, digest, size)

    def _read_sidecar(self, key: str) -> dict[str, Any] | None:
        fd = self._open_file(key)
        if fd is None:
            return super()._read_sidecar(key)
        try:
            value = json.loads(os.getxattr(fd, _XATTR))
        except (OSError, ValueError):
            return super()._read_sidecar(key)
        finally:
            os.close(fd)
        return value if isinstance(value, dict) else None

    def _surroundings(self, key: str) -> Surroundings:
        """One walk down the key's directories and one down its sidecars', never through a link.

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
        finally:
            os.close(fd)
            if meta_fd is not None:
                os.close(meta_fd)
        return Surroundings(prefix_files, prefix_meta, is_file, meta, below)

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
