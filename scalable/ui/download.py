"""Verified downloads: an artifact's bytes, checked against its recorded digest on the way out.

Only a version the ledger records (a ``put`` or ``recorded`` event with that location and
digest) can be downloaded, so a request names a recorded location, never a path to resolve.
The bytes are hashed twice: once before anything is sent, so a mismatch is refused with a
clear message, and again while they are sent. The last block is held back until the second
hash is known: bytes that changed in between never arrive whole (the response is cut short).
A directory comes as an uncompressed tar of its files, checked against its tree digest.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from scalable.digests import sha256_stream, tree_digest, walk_tree
from scalable.errors import ConfigError, IntegrityError, NodeNotFoundError
from scalable.failures import storage_error
from scalable.ledger.sql import quote
from scalable.uris import is_remote, open_location

if TYPE_CHECKING:
    from scalable.ledger.log import Ledger

__all__ = ["CHUNK", "VerifiedDownload", "verified_download"]

#: Bytes read and sent at a time.
CHUNK: Final = 1 << 20
_HEX: Final = frozenset("0123456789abcdef")
_BLOCK: Final = tarfile.BLOCKSIZE


@dataclass
class VerifiedDownload:
    """A download ready to send: its name, exact length and the checked chunks.

    Iterating ``chunks`` raises :class:`~scalable.errors.IntegrityError` before the last
    block when the bytes read differ from the recorded digest.
    """

    filename: str
    size: int
    chunks: Iterator[bytes]
    is_directory: bool


def _changed(location: str, digest: str, found: str) -> IntegrityError:
    return IntegrityError(
        f"the bytes at {location} no longer match the recorded digest {digest[:16]} (they hash to "
        f"{found[:16]}); they are not sent. Check the ledger with: scalable ledger audit"
    )


def _hash(fs: Any, path: str) -> str:
    with fs.open(path, "rb") as fh:
        return sha256_stream(fh, CHUNK)[0]


def _tree(fs: Any, root: str, *, local: bool) -> list[tuple[str, str, int]]:
    """``(relative path, full path, size)`` of every file under ``root``, sorted by relative path.

    A local directory is walked by the one rule of links (:func:`scalable.digests.walk_tree`),
    as it was walked when it was recorded; an object store's listing has no links.
    """
    if local:
        return [(rel, str(full), full.stat().st_size) for rel, full in walk_tree(root)]
    base = root.rstrip("/")
    found = fs.find(base, detail=True)
    return sorted(
        (name[len(base) + 1 :], name, int(info.get("size") or 0))
        for name, info in found.items()
        if info.get("type") != "directory"
    )


def _file_chunks(fs: Any, path: str, location: str, digest: str) -> Iterator[bytes]:
    h = hashlib.sha256()
    held: bytes | None = None
    with fs.open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
            if held is not None:
                yield held
            held = block
    if h.hexdigest() != digest:
        raise _changed(location, digest, h.hexdigest())
    if held is not None:
        yield held


def _tar_chunks(fs: Any, files: list[tuple[str, str, int]], location: str, digest: str) -> Iterator[bytes]:
    hashes: list[tuple[str, str]] = []
    for rel, full, size in files:
        info = tarfile.TarInfo(rel)
        info.size = size
        info.mode = 0o644
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        h = hashlib.sha256()
        sent = 0
        with fs.open(full, "rb") as fh:
            while sent < size and (block := fh.read(min(CHUNK, size - sent))):
                h.update(block)
                sent += len(block)
                yield block
            extra = fh.read(1)
        if sent != size or extra:
            raise IntegrityError(f"{location}: {rel} changed size while it was sent; it is not sent whole")
        hashes.append((rel, h.hexdigest()))
        if size % _BLOCK:
            yield b"\0" * (_BLOCK - size % _BLOCK)
    found = tree_digest(hashes)
    if found != digest:
        raise _changed(location, digest, found)
    yield b"\0" * (2 * _BLOCK)


def _tar_size(files: list[tuple[str, str, int]]) -> int:
    total = 2 * _BLOCK
    for rel, _full, size in files:
        info = tarfile.TarInfo(rel)
        info.size = size
        info.mode = 0o644
        total += len(info.tobuf(format=tarfile.PAX_FORMAT)) + size + (-size % _BLOCK)
    return total


def verified_download(ledger: Ledger, location: str, digest: str) -> VerifiedDownload:
    """Prepare the download of the version ``digest`` recorded at ``location``.

    Raises:
        ConfigError: ``digest`` is not a SHA-256 hex digest.
        NodeNotFoundError: the ledger records no such version at that location.
        ArtifactNotFoundError: nothing is at the location any more.
        StoreError: the bytes cannot be read (permissions, credentials, an unreachable store),
            as :func:`scalable.failures.storage_error` maps it.
        IntegrityError: the bytes there no longer hash to ``digest``.
    """
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise ConfigError(f"digest {digest!r} is not a SHA-256 digest (64 lowercase hex characters)")
    recorded = ledger.query(
        "SELECT artifact_name FROM artifacts WHERE op IN ('put', 'recorded') "
        f"AND location = {quote(location)} AND digest = {quote(digest)} LIMIT 1"
    ).to_pylist()
    if not recorded:
        raise NodeNotFoundError(
            f"the ledger records no version {digest[:16]} at {location!r}; only recorded artifacts can be downloaded"
        )
    try:
        return _prepare(location, digest, recorded[0]["artifact_name"])
    except Exception as exc:  # every backend's failure, mapped in one place
        raise storage_error(exc, location, action="read", what="the artifact") from exc


def _prepare(location: str, digest: str, name: str | None) -> VerifiedDownload:
    fs, path = open_location(location)  # a file:// location is percent-decoded to its path
    info = fs.info(path)
    name = name or path.rstrip("/").rsplit("/", 1)[-1] or "artifact"
    if info.get("type") == "directory":
        files = _tree(fs, path, local=not is_remote(location))
        found = tree_digest([(rel, _hash(fs, full)) for rel, full, _size in files])
        if found != digest:
            raise _changed(location, digest, found)
        return VerifiedDownload(f"{name}.tar", _tar_size(files), _tar_chunks(fs, files, location, digest), True)
    found = _hash(fs, path)
    if found != digest:
        raise _changed(location, digest, found)
    return VerifiedDownload(name, int(info.get("size") or 0), _file_chunks(fs, path, location, digest), False)
