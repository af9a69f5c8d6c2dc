"""FsspecArtifactStore: artifacts on any fsspec filesystem (S3, GCS, memory, ...)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
import re
from typing import Any, BinaryIO, Final, Self

from scalable.errors import (
    ArtifactNotFoundError,
    MissingDependencyError,
    StoreError,
    StoreNotFoundError,
    UnsupportedSchemeError,
)
from scalable.failures import failure_kind, split_userinfo, storage_error
from scalable.logs import get_logger, mask_secrets
from scalable.stores.base import META_PREFIX, BaseArtifactStore, sidecar_key

__all__ = ["FsspecArtifactStore"]

#: Uploads up to this size are buffered and sent as one object write (one PUT); larger
#: ones stream through a multipart/resumable upload that becomes visible only on commit.
STREAM_THRESHOLD: Final = 64 * 1024 * 1024
#: On S3, the size above which an upload is multipart, the size of its parts, and how many
#: parts are sent at once: boto3's default ``TransferConfig`` (``multipart_threshold``,
#: ``multipart_chunksize``, ``max_concurrency``).
S3_MULTIPART_THRESHOLD: Final = 8 * 1024 * 1024
S3_PART_SIZE: Final = 8 * 1024 * 1024
S3_CONCURRENCY: Final = 10
#: S3 allows this many parts in one upload; parts grow for files too large for the default size.
_S3_MAX_PARTS: Final = 10_000

_INSTALL_HINT: Final = "pip install 'scalable[cloud]'"
_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)
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
        except Exception as exc:
            raise storage_error(exc, self.uri, action="write") from exc

    def discard(self) -> None:
        self.parts = []


class _StreamingUpload:
    """An fsspec writer opened with ``autocommit=False``: invisible until commit."""

    def __init__(self, fs: Any, path: str, uri: str) -> None:
        self.uri = uri
        try:
            self.fh = fs.open(path, "wb", autocommit=False)
        except Exception as exc:
            raise storage_error(exc, uri, action="write") from exc

    def write(self, data: bytes) -> None:
        try:
            self.fh.write(data)
        except Exception as exc:
            raise storage_error(exc, self.uri, action="write") from exc

    def commit(self) -> None:
        try:
            self.fh.flush(force=True)
            self.fh.commit()
        except Exception as exc:
            raise storage_error(exc, self.uri, action="write") from exc
        self.fh.closed = True

    def discard(self) -> None:
        try:
            self.fh.discard()
        except Exception as exc:  # the upload was never committed, so the key is intact
            get_logger("scalable.stores").warning("could not cancel an upload", path=self.fh.path, error=str(exc))
        finally:
            self.fh.closed = True


class _MultipartUpload:
    """An S3 multipart upload whose parts go up several at a time, as they fill: invisible until complete.

    A part is sent as soon as it is full, while the next one fills; at most
    :data:`S3_CONCURRENCY` parts are in flight (writing waits for the oldest beyond that).
    ``commit`` sends the last part and completes the upload; ``discard`` aborts it, so nothing
    appears at the key.
    """

    def __init__(self, fs: Any, path: str, uri: str, size_hint: int) -> None:
        self.fs = fs
        self.uri = uri
        self.bucket, self.key, _version = fs.split_path(path)
        # Parts of at least the default size, larger when the file would need too many (with room to grow).
        self.part_size = max(S3_PART_SIZE, -(-size_hint * 5 // 4 // _S3_MAX_PARTS))
        self.part = bytearray()
        self.sent: list[concurrent.futures.Future[dict[str, Any]]] = []
        # Checksums as boto3 asks for them: a CRC32 of every part, unless the client was told
        # to send checksums only where required (servers that know none).
        client = self._call("get_s3", self.bucket, run=fs.get_s3)
        wanted = getattr(client.meta.config, "request_checksum_calculation", "when_supported") == "when_supported"
        self.checksum = {"ChecksumAlgorithm": "CRC32"} if wanted else {}
        created = self._call("create_multipart_upload", Bucket=self.bucket, Key=self.key, **self.checksum)
        self.upload_id: str = created["UploadId"]

    def _call(self, method: str, *args: Any, run: Any = None, **kwargs: Any) -> Any:
        """Call the S3 API ``method`` (or the coroutine function ``run``) on the filesystem's loop."""
        from fsspec.asyn import sync

        try:
            if run is not None:
                return sync(self.fs.loop, run, *args, **kwargs)
            return sync(self.fs.loop, self.fs._call_s3, method, *args, **kwargs)
        except Exception as exc:
            raise storage_error(exc, self.uri, action="write") from exc

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            room = self.part_size - len(self.part)
            self.part += view[:room]
            view = view[room:]
            if len(self.part) >= self.part_size:
                self._send()

    def _send(self) -> None:
        body, self.part = self.part, bytearray()  # handed over whole: the next part starts a new buffer
        if len(self.sent) >= S3_CONCURRENCY:
            self._result(self.sent[-S3_CONCURRENCY])  # the oldest part that may still be in flight
        call = self.fs._call_s3(
            "upload_part",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=len(self.sent) + 1,
            Body=body,
            **self.checksum,
        )
        self.sent.append(asyncio.run_coroutine_threadsafe(call, self.fs.loop))

    def _result(self, part: concurrent.futures.Future[dict[str, Any]]) -> dict[str, Any]:
        try:
            return part.result()
        except Exception as exc:
            raise storage_error(exc, self.uri, action="write") from exc

    def commit(self) -> None:
        if self.part or not self.sent:
            self._send()  # the last part (S3 allows it to be small, even empty when it is the only one)
        parts = []
        for number, part in enumerate(self.sent, 1):
            sent = self._result(part)
            parts.append({"PartNumber": number, "ETag": sent["ETag"]})
            if "ChecksumCRC32" in sent:
                parts[-1]["ChecksumCRC32"] = sent["ChecksumCRC32"]
        self._call(
            "complete_multipart_upload",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
        )

    def discard(self) -> None:
        for part in self.sent:
            part.cancel()
        concurrent.futures.wait(self.sent)
        try:
            self._call("abort_multipart_upload", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except StoreError as exc:  # the upload was never completed, so the key is intact
            get_logger("scalable.stores").warning("could not cancel an upload", uri=self.uri, error=str(exc))


class FsspecArtifactStore(BaseArtifactStore):
    """Artifacts as objects under a prefix of an fsspec filesystem.

    Args:
        uri: ``<scheme>://<bucket>/<prefix>/``; credentials in the URI
            (``s3://KEY:SECRET@bucket/``, the secret may hold ``/``, or percent-encoded) are
            passed to the backend and appear nowhere else.
        storage_options: passed to the fsspec filesystem (``endpoint_url``, ``token``...),
            except ``retries``: how often the filesystem retries a failed request, set on
            filesystems that keep it as an attribute (s3fs retries timeouts five times by
            default, on top of botocore's own retries).

    Raises:
        UnsupportedSchemeError: an unknown scheme.
        MissingDependencyError: the backend's package (s3fs, gcsfs) is not installed.
    """

    def __init__(self, uri: str, *, storage_options: dict[str, Any] | None = None) -> None:
        clean, user, password = split_userinfo(uri)
        m = _URI.match(clean)
        if not m:
            raise UnsupportedSchemeError(f"{mask_secrets(uri)!r} is not a URI of the form scheme://bucket/prefix/")
        scheme = m.group("scheme").lower()
        cls = filesystem_class(scheme)
        options = dict(storage_options or {})
        if user is not None:
            if scheme in ("s3", "s3a"):
                options.setdefault("key", user)
                if password is not None:
                    options.setdefault("secret", password)
            else:
                options.setdefault("username", user)
                if password is not None:
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
                f"cannot open the {scheme!r} store {mask_secrets(clean)!r}: {mask_secrets(str(exc))}"
            ) from None
        if retries is not None and hasattr(self.fs, "retries"):
            self.fs.retries = retries
        self.scheme = scheme
        self.root = self.fs._strip_protocol(f"{scheme}://{m.group('rest')}").rstrip("/")
        self.base_uri = mask_secrets(f"{scheme}://{self.root}/")
        self._streaming = scheme in _STREAMING
        self.concurrent_lookups = scheme in _BUCKETED
        # s3fs's own writer sends one part at a time; parts sent several at once are as fast as boto3.
        self._multipart = scheme in ("s3", "s3a") and hasattr(self.fs, "_call_s3")
        self.stream_threshold = S3_MULTIPART_THRESHOLD if self._multipart else STREAM_THRESHOLD

    @classmethod
    def from_uri(cls, uri: str, **storage_options: Any) -> Self:
        """Return the store at ``uri`` with ``storage_options`` (see the class)."""
        return cls(uri, storage_options=storage_options)

    def check_reachable(self) -> None:
        """Check that the bucket of an S3 or GCS store exists and answers.

        Raises:
            StoreNotFoundError: the bucket does not exist.
            StoreCredentialsError: no credentials, or they were rejected.
            StorePermissionError: access to the bucket is denied.
            StoreUnreachableError: the endpoint or the network fail.
            InvalidStoreURIError: the bucket name is not valid.
        """
        self._check_bucket("reach")

    def _check_bucket(self, action: str) -> None:
        """Raise the StoreError saying why the bucket of an S3 or GCS store cannot be used for ``action``."""
        if self.scheme not in _BUCKETED:
            return
        bucket = self.root.split("/", 1)[0]
        try:
            self.fs.info(bucket)
        except Exception as exc:
            # A HEAD of a missing bucket answers a bare 404.
            missing = "store-missing" if failure_kind(exc) == "not-found" else None
            raise storage_error(exc, self.base_uri, action=action, kind=missing) from exc

    def check_exists(self) -> None:
        """Check that the store is there to read: its bucket exists, and something is stored under its prefix.

        A store rooted at a bucket exists when the bucket does; one rooted at a prefix when
        anything is stored under it (object stores have no directories).

        Raises:
            StoreNotFoundError: the bucket does not exist, or nothing is stored under the prefix.
            StoreError: a subclass saying why the store cannot be reached (see
                :meth:`check_reachable`).
        """
        self._check_bucket("read")
        bucket = self.root.split("/", 1)[0]
        if self.scheme in _BUCKETED and self.root == bucket:
            return
        try:
            found = self.fs.find(self.root, maxdepth=None, withdirs=False)
        except Exception as exc:
            if failure_kind(exc) != "not-found":
                raise storage_error(exc, self.base_uri, action="list") from exc
            found = []
        if not found:
            raise StoreNotFoundError(f"nothing is stored under {self.base_uri!r}; check the URI")

    def uri_for(self, key: str) -> str:
        """Return the full URI of ``key`` (``s3://bucket/prefix/key``)."""
        return self.base_uri + key

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    def _open_upload(self, key: str, size_hint: int) -> _BufferedUpload | _StreamingUpload | _MultipartUpload:
        path = self._path(key)
        if self._streaming and size_hint > self.stream_threshold:
            if self._multipart:
                return _MultipartUpload(self.fs, path, self.uri_for(key), size_hint)
            return _StreamingUpload(self.fs, path, self.uri_for(key))
        return _BufferedUpload(self.fs, path, self.uri_for(key))

    def _open_read(self, key: str) -> BinaryIO:
        try:
            fh: BinaryIO = self.fs.open(self._path(key), "rb")
        except IsADirectoryError:
            raise ArtifactNotFoundError(f"no file is stored at {self.uri_for(key)!r}") from None
        except Exception as exc:
            if failure_kind(exc) == "not-found":
                raise ArtifactNotFoundError(f"no file is stored at {self.uri_for(key)!r}") from None
            raise storage_error(exc, self.uri_for(key), action="read") from exc
        return fh

    def _read_sidecar_file(self, key: str) -> dict[str, Any] | None:
        """The digest sidecar of ``key`` in one read, or None.

        A ranged read (``start=0``): s3fs then sends one GET, where a whole-object read first
        asks for the size (a HEAD, and a listing when the object is absent).
        """
        try:
            value = json.loads(self.fs.cat_file(self._path(sidecar_key(key)), start=0))
        except ValueError:
            return None
        except Exception as exc:
            if failure_kind(exc) == "not-found":
                return None
            if isinstance(exc, OSError) and exc.errno == errno.EINVAL:  # an empty (damaged) sidecar: no range
                return None
            raise storage_error(exc, self.uri_for(key), action="look up") from exc  # the key, as the user gave it
        return value if isinstance(value, dict) else None

    def _some_records_under(self, key: str) -> list[str]:
        """One level of the sidecars below ``key`` (a listing without the recursive walk's extra lookups)."""
        top = self._path(f"{META_PREFIX}/{key}")
        try:
            names = self.fs.ls(top, detail=False)
        except Exception as exc:
            if failure_kind(exc) == "not-found":
                return []
            raise storage_error(exc, self.uri_for(key), action="look up") from exc
        return sorted(f"{key}/{str(name).rstrip('/').rsplit('/', 1)[-1].removesuffix('.json')}" for name in names)

    def _is_file(self, key: str) -> bool:
        # Not fs.isfile: it answers False for every error (no credentials, no network).
        try:
            info = self.fs.info(self._path(key))
        except Exception as exc:
            if failure_kind(exc) == "not-found":
                return False
            raise storage_error(exc, self.uri_for(key), action="look up") from exc
        return bool(info.get("type") == "file")

    def _list_files(self, dir_key: str) -> list[str]:
        top = self._path(dir_key) if dir_key else self.root
        try:
            found = self.fs.find(top, detail=True)
        except Exception as exc:
            if failure_kind(exc) == "not-found":
                return []
            raise storage_error(exc, self.uri_for(dir_key) if dir_key else self.base_uri, action="list") from exc
        out = []
        for name, info in found.items():
            if info.get("type") != "file":
                continue
            rel = self._relative(name)
            if rel and not name.endswith("/"):
                out.append(rel)
        return out

    def _relative(self, name: str) -> str:
        """The key of a path fsspec listed under the root."""
        path = name.lstrip("/") if not self.root.startswith("/") else name
        return path[len(self.root) + 1 if self.root else 0 :]

    def _sizes(self, keys: list[str]) -> dict[str, int]:
        """Sizes from one recursive listing of the keys' common directory (one request on S3 and GCS)."""
        if not keys:
            return {}
        common = keys[0].rsplit("/", 1)[0] if "/" in keys[0] else ""
        for key in keys[1:]:
            while common and not key.startswith(common + "/"):
                common = common.rsplit("/", 1)[0] if "/" in common else ""
        top = self._path(common) if common else self.root
        try:
            found = self.fs.find(top, detail=True)
        except Exception as exc:
            raise storage_error(exc, self.uri_for(common) if common else self.base_uri, action="list") from exc
        wanted = set(keys)
        sizes = {
            rel: int(info.get("size") or 0) for name, info in found.items() if (rel := self._relative(name)) in wanted
        }
        missing = [key for key in keys if key not in sizes]
        return {**sizes, **super()._sizes(missing)} if missing else sizes

    def _delete_file(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except Exception as exc:
            if failure_kind(exc) == "not-found":
                return
            raise storage_error(exc, self.uri_for(key), action="delete") from exc
