"""FsspecArtifactStore: artifacts on any fsspec filesystem (S3, GCS, memory, ...)."""

from __future__ import annotations

import errno
import json
import re
from typing import Any, BinaryIO, Final, Self

from scalable.errors import (
    ArtifactNotFoundError,
    MissingDependencyError,
    StoreError,
    StoreUnreachableError,
    UnsupportedSchemeError,
)
from scalable.logs import get_logger, mask_secrets
from scalable.stores.base import META_PREFIX, BaseArtifactStore, sidecar_key

__all__ = ["FsspecArtifactStore"]

#: Uploads up to this size are buffered and sent as one object write (one PUT); larger
#: ones stream through a multipart/resumable upload that becomes visible only on commit.
STREAM_THRESHOLD: Final = 64 * 1024 * 1024

_INSTALL_HINT: Final = "pip install 'scalable[cloud]'"
_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?:(?P<userinfo>[^/@]*)@)?(?P<rest>.*)$")
# Filesystems whose streaming writers commit only on an explicit commit() (autocommit=False).
_STREAMING: Final = frozenset({"s3", "s3a", "gs", "gcs"})
# Filesystems whose first path segment is a bucket that must exist before anything is stored.
_BUCKETED: Final = frozenset({"s3", "s3a", "gs", "gcs"})
_LISTING_CACHED: Final = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "az"})


def filesystem_class(scheme: str) -> Any:
    """Return the fsspec filesystem class of ``scheme``, importing its package lazily.

    Raises:
        UnsupportedSchemeError: no fsspec backend knows ``scheme``.
        MissingDependencyError: the backend's package is not installed.
    """
    import fsspec
    from fsspec.registry import known_implementations, registry

    try:
        return fsspec.get_filesystem_class(scheme)
    except ValueError:
        known = sorted({"file", *known_implementations, *registry})
        raise UnsupportedSchemeError(
            f"no artifact store handles the scheme {scheme!r}; known schemes: {', '.join(known)}"
        ) from None
    except ImportError:
        raise MissingDependencyError(f"the {scheme!r} store needs an optional package: {_INSTALL_HINT}") from None


def _backend_error(action: str, uri: str, exc: Exception) -> StoreError:
    """A StoreError for a failed backend call, with secrets masked."""
    detail = mask_secrets(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return StoreError(f"cannot {action} {uri!r}: {detail}; check that the bucket exists and the credentials allow it")


class _BufferedUpload:
    """Chunks kept in memory and written as one object on commit."""

    def __init__(self, fs: Any, path: str, uri: str) -> None:
        self.fs = fs
        self.path = path
        self.uri = uri
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))  # the caller may reuse its buffer

    def commit(self) -> None:
        data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts = []
        try:
            self.fs.pipe_file(self.path, data)
        except (OSError, ValueError) as exc:
            raise _backend_error("write", self.uri, exc) from None

    def discard(self) -> None:
        self.parts = []


class _StreamingUpload:
    """An fsspec writer opened with ``autocommit=False``: invisible until commit."""

    def __init__(self, fs: Any, path: str, uri: str) -> None:
        self.uri = uri
        try:
            self.fh = fs.open(path, "wb", autocommit=False)
        except (OSError, ValueError) as exc:
            raise _backend_error("write", uri, exc) from None

    def write(self, data: bytes) -> None:
        try:
            self.fh.write(data)
        except (OSError, ValueError) as exc:
            raise _backend_error("write", self.uri, exc) from None

    def commit(self) -> None:
        try:
            self.fh.flush(force=True)
            self.fh.commit()
        except (OSError, ValueError) as exc:
            raise _backend_error("write", self.uri, exc) from None
        self.fh.closed = True

    def discard(self) -> None:
        try:
            self.fh.discard()
        except Exception as exc:  # the upload was never committed, so the key is intact
            get_logger("scalable.stores").warning("could not cancel an upload", path=self.fh.path, error=str(exc))
        finally:
            self.fh.closed = True


class FsspecArtifactStore(BaseArtifactStore):
    """Artifacts as objects under a prefix of an fsspec filesystem.

    Args:
        uri: ``<scheme>://<bucket>/<prefix>/``; credentials in the URI are passed to the
            backend and masked everywhere else.
        storage_options: passed to the fsspec filesystem (``endpoint_url``, ``token``...),
            except ``retries``: how often the filesystem retries a failed request, set on
            filesystems that keep it as an attribute (s3fs retries timeouts five times by
            default, on top of botocore's own retries).

    Raises:
        UnsupportedSchemeError: an unknown scheme.
        MissingDependencyError: the backend's package (s3fs, gcsfs) is not installed.
    """

    def __init__(self, uri: str, *, storage_options: dict[str, Any] | None = None) -> None:
        m = _URI.match(uri)
        if not m:
            raise UnsupportedSchemeError(f"{mask_secrets(uri)!r} is not a URI of the form scheme://bucket/prefix/")
        scheme = m.group("scheme").lower()
        cls = filesystem_class(scheme)
        options = dict(storage_options or {})
        userinfo = m.group("userinfo")
        if userinfo:
            user, _, password = userinfo.partition(":")
            if scheme in ("s3", "s3a"):
                options.setdefault("key", user)
                options.setdefault("secret", password)
            else:
                options.setdefault("username", user)
                options.setdefault("password", password)
        if scheme in _LISTING_CACHED:
            # A store must see objects other processes wrote a moment ago.
            options.setdefault("use_listings_cache", False)
        retries = options.pop("retries", None)
        try:
            self.fs = cls(**options)
        except ImportError:
            raise MissingDependencyError(f"the {scheme!r} store needs an optional package: {_INSTALL_HINT}") from None
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"cannot open the {scheme!r} store {mask_secrets(uri)!r}: {mask_secrets(str(exc))}"
            ) from None
        if retries is not None and hasattr(self.fs, "retries"):
            self.fs.retries = retries
        self.scheme = scheme
        self.root = self.fs._strip_protocol(f"{scheme}://{m.group('rest')}").rstrip("/")
        self.base_uri = mask_secrets(f"{scheme}://{self.root}/")
        self._streaming = scheme in _STREAMING
        self.concurrent_lookups = scheme in _BUCKETED
        self.stream_threshold = STREAM_THRESHOLD

    @classmethod
    def from_uri(cls, uri: str, **storage_options: Any) -> Self:
        """Return the store at ``uri`` with ``storage_options`` (see the class)."""
        return cls(uri, storage_options=storage_options)

    def check_reachable(self) -> None:
        """Check that the bucket of an S3 or GCS store exists and answers.

        Raises:
            StoreUnreachableError: the bucket does not exist, or the endpoint, the credentials
                or the network fail.
        """
        if self.scheme not in _BUCKETED:
            return
        bucket = self.root.split("/", 1)[0]
        try:
            self.fs.info(bucket)
        except FileNotFoundError:
            raise StoreUnreachableError(
                f"{self.base_uri!r}: bucket {bucket!r} does not exist; create it or use another bucket"
            ) from None
        except Exception as exc:  # network, credentials, endpoint: all mean "cannot reach it"
            raise StoreUnreachableError(
                f"{self.base_uri!r} cannot be reached: {mask_secrets(str(exc))[:300]}; "
                "check the endpoint, credentials and network"
            ) from None

    def uri_for(self, key: str) -> str:
        """Return the full URI of ``key`` (``s3://bucket/prefix/key``)."""
        return self.base_uri + key

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _open_upload(self, key: str, size_hint: int) -> _BufferedUpload | _StreamingUpload:
        path = self._path(key)
        if self._streaming and size_hint > self.stream_threshold:
            return _StreamingUpload(self.fs, path, self.uri_for(key))
        return _BufferedUpload(self.fs, path, self.uri_for(key))

    def _open_read(self, key: str) -> BinaryIO:
        try:
            fh: BinaryIO = self.fs.open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ArtifactNotFoundError(f"no file is stored at {self.uri_for(key)!r}") from None
        except (OSError, ValueError) as exc:
            raise _backend_error("read", self.uri_for(key), exc) from None
        return fh

    def _read_sidecar_file(self, key: str) -> dict[str, Any] | None:
        """The digest sidecar of ``key`` in one read, or None.

        A ranged read (``start=0``): s3fs then sends one GET, where a whole-object read first
        asks for the size (a HEAD, and a listing when the object is absent).
        """
        try:
            value = json.loads(self.fs.cat_file(self._path(sidecar_key(key)), start=0))
        except (FileNotFoundError, ValueError):
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # an empty (damaged) sidecar: no range to read
                return None
            raise _backend_error("read", self.uri_for(sidecar_key(key)), exc) from None
        return value if isinstance(value, dict) else None

    def _some_records_under(self, key: str) -> list[str]:
        """One level of the sidecars below ``key`` (a listing without the recursive walk's extra lookups)."""
        top = self._path(f"{META_PREFIX}/{key}")
        try:
            names = self.fs.ls(top, detail=False)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise _backend_error("list", self.uri_for(f"{META_PREFIX}/{key}"), exc) from None
        return sorted(f"{key}/{str(name).rstrip('/').rsplit('/', 1)[-1].removesuffix('.json')}" for name in names)

    def _is_file(self, key: str) -> bool:
        try:
            return bool(self.fs.isfile(self._path(key)))
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            raise _backend_error("look up", self.uri_for(key), exc) from None

    def _list_files(self, dir_key: str) -> list[str]:
        top = self._path(dir_key) if dir_key else self.root
        try:
            found = self.fs.find(top, detail=True)
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise _backend_error("list", self.uri_for(dir_key) if dir_key else self.base_uri, exc) from None
        start = len(self.root) + 1 if self.root else 0
        out = []
        for name, info in found.items():
            if info.get("type") != "file":
                continue
            path = name.lstrip("/") if not self.root.startswith("/") else name
            rel = path[start:]
            if rel and not name.endswith("/"):
                out.append(rel)
        return out

    def _delete_file(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise _backend_error("delete", self.uri_for(key), exc) from None
