"""Local paths and ``file://`` URIs, converted in one place, and locations opened through fsspec.

A local artifact's location is recorded as a ``file://`` URI whose path is percent-encoded
(RFC 8089): every byte of the path's file-system encoding other than ASCII letters, digits,
``_.-~`` and ``/`` becomes ``%XX``. A project in ``/home/ana/My Project #1`` records
``file:///home/ana/My%20Project%20%231/...``. :func:`path_to_uri` and :func:`uri_to_path` are
the two directions, exact for every absolute path (also for bytes that are not UTF-8):
``uri_to_path(path_to_uri(p)) == p`` for a normalised absolute ``p``, and
``path_to_uri(uri_to_path(u)) == u`` for a URI :func:`path_to_uri` wrote.

Every reader and writer of locations goes through this module: the local store, sessions,
the cache, audits, replays, lineage and the CLI. Object-store URIs (``s3://``, ``gs://``...)
are not percent-encoded: their keys are taken literally, as fsspec takes them.

This module imports nothing of scalable besides :mod:`scalable.errors`, so every layer may use it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote_from_bytes, unquote_to_bytes

from scalable.errors import ConfigError

__all__ = ["is_file_uri", "is_remote", "local_path", "open_location", "path_to_uri", "uri_to_path"]

_FILE: Final = re.compile(r"^file:", re.IGNORECASE)
_SCHEME: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_file_uri(text: str) -> bool:
    """Whether ``text`` is a ``file:`` URI (any case of the scheme)."""
    return bool(_FILE.match(text))


def is_remote(location: str) -> bool:
    """Whether ``location`` is a URI of something other than a local file (``s3://``, ``gs://``...)."""
    return bool(_SCHEME.match(location)) and not is_file_uri(location)


def path_to_uri(path: str | os.PathLike[str]) -> str:
    """Return the ``file://`` URI of a local path (made absolute against the current directory).

    The path is normalised lexically (``a/../b`` is ``b``); links are not resolved.
    """
    absolute = os.path.abspath(os.fspath(path))
    return "file://" + quote_from_bytes(os.fsencode(absolute), safe="/")


def uri_to_path(uri: str) -> Path:
    """Return the local path a ``file:`` URI names.

    Accepted forms: ``file:///abs/path``, ``file://localhost/abs/path`` and ``file:/abs/path``;
    ``%XX`` escapes are decoded to the bytes of the path (a literal ``%`` is ``%25``). ``?``
    and ``#`` are part of the path: locations never carry a query or a fragment.

    Raises:
        ConfigError: ``uri`` is not a ``file:`` URI, names another host, is relative, or
            decodes to a path holding a NUL.
    """
    if not is_file_uri(uri):
        raise ConfigError(f"{uri!r} is not a file:// URI; give a local path or file:///absolute/path")
    rest = uri[len("file:") :]
    if rest.startswith("//"):
        host, sep, tail = rest[2:].partition("/")
        if host.lower() not in ("", "localhost"):
            raise ConfigError(
                f"file URI {uri!r} names the host {host!r}; only local files can be read (use file:///path)"
            )
        rest = sep + tail
    if not rest.startswith("/"):
        raise ConfigError(f"file URI {uri!r} holds no absolute path; use file:///absolute/path")
    raw = unquote_to_bytes(rest)
    if b"\0" in raw:
        raise ConfigError(f"file URI {uri!r} decodes to a path holding a NUL character")
    return Path(os.fsdecode(raw))


def local_path(location: str | os.PathLike[str]) -> Path:
    """Return the absolute local path of a plain path (``~`` expanded) or a ``file:`` URI.

    Raises:
        ConfigError: a ``file:`` URI that :func:`uri_to_path` refuses.
    """
    text = os.fspath(location)
    if is_file_uri(text):
        return uri_to_path(text)
    return Path(os.path.abspath(os.path.expanduser(text)))


def open_location(location: str, storage_options: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[Any, str]:
    """Return ``(fsspec filesystem, path)`` of an artifact location (a URI or a local path).

    A ``file:`` URI or a plain path opens the local filesystem at the decoded path; any other
    URI is handed to fsspec with the options of its protocol.

    Args:
        location: where the artifact is, as an event records it.
        storage_options: per-protocol fsspec options, e.g. ``{"s3": {"endpoint_url": ...}}``.

    Raises:
        ConfigError: a ``file:`` URI that :func:`uri_to_path` refuses.
    """
    import fsspec

    if not is_remote(location):
        return fsspec.filesystem("file"), str(local_path(location))
    protocol = location.split("://", 1)[0]
    options = dict((storage_options or {}).get(protocol, {}))
    fs, path = fsspec.core.url_to_fs(location, **options)
    return fs, str(path)
