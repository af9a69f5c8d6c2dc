"""A toy store backend, written the way a new backend is written: the primitives, nothing else.

``toy:///some/dir/`` keeps every object as one flat file in ``/some/dir``, named by its
percent-quoted key. It is registered through the public registry by the tests, and through an
entry point of a throwaway installed distribution for the CLI in a subprocess.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO, Self
from urllib.parse import quote, unquote

from scalable.errors import ArtifactNotFoundError, ConfigError
from scalable.stores import BaseArtifactStore

__all__ = ["ToyStore"]

# Temporary files start with "#", which no quoted key does, so no key is ever taken for one.
_PART = "#"


class _ToyUpload:
    """Chunks kept in memory, written to a temporary name and renamed over the object on commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    def commit(self) -> None:
        tmp = self.path.with_name(f"{_PART}{os.urandom(6).hex()}")  # short: fits whatever the key
        tmp.write_bytes(b"".join(self.parts))
        os.replace(tmp, self.path)

    def discard(self) -> None:
        self.parts = []


class ToyStore(BaseArtifactStore):
    """Objects as flat files in one directory, named by their quoted keys."""

    scheme = "toy"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.base_uri = f"toy://{directory.as_posix()}/"

    @classmethod
    def from_uri(cls, uri: str, **storage_options: Any) -> Self:
        """``toy:///abs/dir/`` -> the store in ``/abs/dir`` (no storage options)."""
        if storage_options:
            raise ConfigError(f"the toy store takes no storage options, got {sorted(storage_options)}")
        return cls(Path("/" + uri.removeprefix("toy://").strip("/")))

    def uri_for(self, key: str) -> str:
        """Return ``toy:///abs/dir/<key>``."""
        return self.base_uri + key

    def _path(self, key: str) -> Path:
        return self.directory / quote(key, safe="")

    def _open_upload(self, key: str, size_hint: int) -> _ToyUpload:
        self.directory.mkdir(parents=True, exist_ok=True)
        return _ToyUpload(self._path(key))

    def _open_read(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise ArtifactNotFoundError(f"no object is stored at {self.uri_for(key)!r}") from None

    def _is_file(self, key: str) -> bool:
        return self._path(key).is_file()

    def _list_files(self, dir_key: str) -> list[str]:
        if not self.directory.is_dir():
            return []
        keys = [unquote(name) for name in os.listdir(self.directory) if not name.startswith(_PART)]
        return [k for k in keys if not dir_key or k == dir_key or k.startswith(dir_key + "/")]

    def _delete_file(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
