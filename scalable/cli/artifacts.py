"""``scalable artifacts ...``: put, get, ls and exists over any artifact store.

How a URI is split into a store and a key: the store is everything up to the URI's last
``/`` and the key is the last segment, unless ``--root`` names the store's root, in which
case the key is what follows the root (and may contain ``/``). ``ls URI`` lists the store
rooted at URI itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from scalable.cli.output import format_option, render_rows
from scalable.errors import ArtifactNotFoundError, ConfigError
from scalable.failures import join_userinfo, split_userinfo
from scalable.logs import mask_secrets
from scalable.stores import BaseArtifactStore, build_artifact_store
from scalable.uris import is_file_uri, uri_to_path

__all__ = ["COMMANDS", "artifacts"]

#: Files at least this large (or any directory) get a progress bar on stderr.
_BAR_THRESHOLD = 32 * 1024 * 1024

_ROOT_HELP = (
    "Root of the store the key lives in (a path or URI that URI starts with); default: everything up to URI's last '/'."
)


def _as_path(uri: str) -> str:
    """A ``file://`` URI as its (percent-decoded) local path, a trailing '/' kept; anything else as is."""
    if not is_file_uri(uri):
        return uri
    path = str(uri_to_path(uri))
    return path + "/" if uri.endswith("/") and not path.endswith("/") else path


def _split(uri: str, root: str | None) -> tuple[BaseArtifactStore, str]:
    """Return the store and key a URI names (see the module docstring).

    Credentials in the URI (``s3://KEY:SECRET@bucket/...``) go to the store, never into a
    key or a message. A ``file://`` URI names its percent-decoded path.
    """
    uri = _as_path(uri)
    root = _as_path(root) if root is not None else None
    clean, user, secret = split_userinfo(uri)
    shown = mask_secrets(uri)
    if root is not None:
        root_clean, root_user, root_secret = split_userinfo(root)
        if user is None:
            user, secret = root_user, root_secret
        base = root_clean if root_clean.endswith("/") else root_clean + "/"
        if not clean.startswith(base) or clean == base:
            raise ConfigError(
                f"{shown!r} is not under the store root {mask_secrets(root)!r}; give a URI that starts with the root"
            )
        return _store(join_userinfo(base, user, secret)), clean[len(base) :]
    parent, sep, key = clean.rstrip("/").rpartition("/")
    if not sep:
        return _store("."), key
    if not key or parent.endswith(":/"):
        raise ConfigError(f"{shown!r} names no key under a store; use STORE/KEY, e.g. s3://bucket/prefix/name")
    return _store(join_userinfo(parent + "/", user, secret)), key


def _store(uri: str) -> BaseArtifactStore:
    store = build_artifact_store(uri)
    assert isinstance(store, BaseArtifactStore)  # both backends share the base class
    return store


def _local_size(path: Path) -> tuple[int, bool]:
    """Total bytes under ``path`` and whether it is a directory (0 if unreadable)."""
    if path.is_dir():
        total = 0
        for dirpath, _dirs, files in os.walk(path):
            for name in files:
                try:
                    total += os.stat(os.path.join(dirpath, name)).st_size
                except OSError:
                    continue
        return total, True
    try:
        return path.stat().st_size, False
    except OSError:
        return 0, False


@contextmanager
def _progress(label: str, total: int, show: bool) -> Iterator[Callable[[int], None] | None]:
    if not show or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=max(total, 1), label=label, file=sys.stderr, show_pos=False) as bar:
        yield bar.update


@click.group()
def artifacts() -> None:
    """Put, get and list artifacts in local, S3, GCS or any fsspec store.

    A URI names a store and a key: the store is everything up to the last '/', the key the
    last segment (scalable artifacts put out.csv s3://bucket/runs/out.csv stores key
    'out.csv' in the store s3://bucket/runs/). With --root ROOT the key is what follows ROOT
    and may contain '/'.
    """


@click.command()
@click.argument("local", type=click.Path())  # a str: an empty path must stay empty, not become "."
@click.argument("uri")
@click.option("--root", help=_ROOT_HELP)
@click.option("--kind", help="Kind to record: file, dir, blob, or a label such as 'result'.")
@format_option()
def put(local: str, uri: str, root: str | None, kind: str | None, fmt: str) -> None:
    """Store the file or directory LOCAL at URI (one pass, atomic, recorded in the ledger)."""
    store, key = _split(uri, root)
    total, is_dir = _local_size(Path(local)) if local.strip() else (0, False)
    with _progress(f"put {local}", total, is_dir or total >= _BAR_THRESHOLD) as progress:
        ref = store.put(local, key, kind=kind, progress=progress)
    row: dict[str, Any] = {"uri": ref.uri, "kind": ref.kind.value, "size_bytes": ref.size_bytes, "digest": ref.digest}
    render_rows([row], ["uri", "kind", "size_bytes", "digest"], fmt)


@click.command()
@click.argument("uri")
@click.argument("local", type=click.Path())
@click.option("--root", help=_ROOT_HELP)
@click.option(
    "--verify", is_flag=True, help="Re-hash the bytes and fail if they differ from the digest recorded at put time."
)
def get(uri: str, local: str, root: str | None, verify: bool) -> None:
    """Fetch the file or directory at URI to LOCAL; print the local path written."""
    store, key = _split(uri, root)
    path = store.get(key, local, verify=verify)
    click.echo(path)


@click.command(name="ls")
@click.argument("uri")
@click.option("--prefix", default="", help="Only keys starting with this prefix.")
@format_option()
def ls(uri: str, prefix: str, fmt: str) -> None:
    """List every file stored under the store at URI, recursively, sorted: key, size, digest, URI.

    The digest is the one recorded when the file was put (tables show its first 16
    characters; csv, json and jsonl all 64). Exits 2 when there is no store at URI, or when
    --prefix matches no key.
    """
    store = _store(uri)
    refs = store.list_refs(prefix)
    if not refs:
        store.check_exists()
        if prefix:
            raise ArtifactNotFoundError(f"no key under {store.base_uri!r} starts with {prefix!r}")
    rows = [
        {"key": ref.metadata["key"], "size_bytes": ref.size_bytes, "digest": ref.digest, "uri": ref.uri} for ref in refs
    ]
    render_rows(rows, ["key", "size_bytes", "digest", "uri"], fmt)


@click.command()
@click.argument("uri")
@click.option("--root", help=_ROOT_HELP)
@click.pass_context
def exists(ctx: click.Context, uri: str, root: str | None) -> None:
    """Exit 0 if a file or directory is stored at URI, 1 if not, 2 if there is no store at all."""
    store, key = _split(uri, root)
    if store.exists(key):
        ctx.exit(0)
    store.check_exists()
    ctx.exit(1)


#: The commands of this module; ``scalable/cli/__init__.py`` adds them to the ``artifacts`` group.
COMMANDS: tuple[click.Command, ...] = (put, get, ls, exists)
