"""LocalArtifactStore: artifacts as files under a root directory on local disk."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO, Self

from scalable.errors import (
    ArtifactNotFoundError,
    ConfigError,
    InvalidStoreURIError,
    StoreError,
    StoreNotFoundError,
    StorePermissionError,
    StoreUnreachableError,
    UnreadableArtifactError,
    os_error,
)
from scalable.failures import storage_error
from scalable.stores.base import ArtifactKind, BaseArtifactStore, Upload

__all__ = ["LocalArtifactStore", "unwritable_ancestor"]

_TMP_MARK = ".scalable-tmp-"
_LOCAL_SCHEME = re.compile(r"^(?:file|local)://", re.IGNORECASE)
#: Extended attribute holding a file's digest sidecar, written before the file is renamed in
#: (its name is part of the on-disk format).
_XATTR = "user.scalable.record"


class _LocalUpload:
    """A temporary file beside the final one, renamed over it on commit."""

    def __init__(self, final: str, key: str) -> None:
        # Plain strings, not pathlib: this runs once per stored file.
        self.final = final
        self.key = key
        parent, _, name = final.rpartition("/")
        self.tmp = f"{parent}/.{name}{_TMP_MARK}{os.urandom(6).hex()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            try:
                self.fd: int | None = os.open(self.tmp, flags, 0o666)
            except FileNotFoundError:  # first file of its directory
                os.makedirs(parent, exist_ok=True)
                self.fd = os.open(self.tmp, flags, 0o666)
        except PermissionError:
            raise UnreadableArtifactError(f"cannot write {final!r}: permission denied") from None
        except OSError as exc:
            raise os_error(
                exc, f"cannot write key {key!r} at {final!r} (is a parent of the key a file?)", StoreError
            ) from None

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
        assert self.fd is not None
        os.close(self.fd)
        self.fd = None
        try:
            os.replace(self.tmp, self.final)
        except OSError as exc:
            self._unlink_tmp()
            raise StoreError(
                f"cannot store key {self.key!r} at {self.final!r}: {exc.strerror or exc} "
                "(is a directory stored there? delete it first)"
            ) from None

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        self._unlink_tmp()

    def _unlink_tmp(self) -> None:
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            return


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


class LocalArtifactStore(BaseArtifactStore):
    """Artifacts stored as files under ``root`` (created on first put).

    Args:
        root: the store's root directory; ``~`` is expanded, relative paths are resolved
            against the current directory once, at construction.
    """

    scheme = "file"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.fspath(root)).expanduser().resolve()
        self.base_uri = self.root.as_uri().rstrip("/") + "/"
        self._root = str(self.root).rstrip("/")

    @classmethod
    def from_uri(cls, uri: str, **storage_options: Any) -> Self:
        """Return the store at a plain path or a ``file://`` (or ``local://``) URI.

        Raises:
            ConfigError: storage options were given (they apply to object stores only).
        """
        if storage_options:
            raise ConfigError(
                f"storage options {sorted(storage_options)} do not apply to the local store {uri!r}; drop them"
            )
        m = _LOCAL_SCHEME.match(uri)
        return cls(uri[m.end() :] if m else uri)

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
        """Return the ``file://`` URI of ``key``."""
        return self.base_uri + key

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def _open_upload(self, key: str, size_hint: int) -> _LocalUpload:
        return _LocalUpload(f"{self._root}/{key}", key)

    def _open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ArtifactNotFoundError(f"no file is stored at {self.uri_for(key)!r}") from None
        except PermissionError:
            raise UnreadableArtifactError(f"cannot read {str(path)!r}: permission denied") from None

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
        try:
            value = json.loads(os.getxattr(f"{self._root}/{key}", _XATTR))
        except (OSError, ValueError):
            return super()._read_sidecar(key)
        return value if isinstance(value, dict) else None

    def _is_file(self, key: str) -> bool:
        return self._path(key).is_file()

    def _list_files(self, dir_key: str) -> list[str]:
        top = self._path(dir_key) if dir_key else self.root
        if not top.is_dir():
            return [dir_key] if dir_key and top.is_file() else []
        out: list[str] = []
        root_len = len(str(self.root)) + 1
        for dirpath, _dirnames, filenames in os.walk(top):
            rel_dir = dirpath[root_len:].replace(os.sep, "/")
            for name in filenames:
                if _TMP_MARK in name:
                    continue
                out.append(f"{rel_dir}/{name}" if rel_dir else name)
        return out

    def _delete_file(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except IsADirectoryError:
            return
        # Drop directories the delete left empty, up to the root.
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
