"""build_artifact_store: pick the backend from a URI's scheme, importing it lazily."""

from __future__ import annotations

import os
import re
from typing import Any

from scalable.errors import ConfigError
from scalable.stores.base import ArtifactStore
from scalable.stores.fsspec_store import FsspecArtifactStore
from scalable.stores.local import LocalArtifactStore

__all__ = ["build_artifact_store"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def build_artifact_store(uri: str | os.PathLike[str], **storage_options: Any) -> ArtifactStore:
    """Return the artifact store at ``uri``.

    Plain paths (``./artifacts``, ``artifacts``, ``/abs``, ``~/x``) and ``file://`` URIs give a
    :class:`~scalable.stores.local.LocalArtifactStore`; any other fsspec protocol
    (``s3://``, ``gs://``, ``memory://``...) gives a
    :class:`~scalable.stores.fsspec_store.FsspecArtifactStore` with ``storage_options``.

    Args:
        uri: where the store's root is.
        **storage_options: passed to the fsspec filesystem (``endpoint_url``, ``token``...).

    Raises:
        ConfigError: an empty URI, or storage options given for a local path.
        UnsupportedSchemeError: a scheme no backend handles (the message lists known ones).
        MissingDependencyError: the backend needs ``pip install 'scalable[cloud]'``.
    """
    text = os.fspath(uri)
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise ConfigError(f"artifact store URI {text!r} is empty or invalid; give a path or a URI like s3://bucket/prefix/")
    m = _SCHEME.match(text)
    scheme = m.group(1).lower() if m else None
    if scheme in (None, "file", "local"):
        if storage_options:
            raise ConfigError(
                f"storage options {sorted(storage_options)} do not apply to the local store {text!r}; drop them"
            )
        return LocalArtifactStore(text[m.end() :] if m else text)
    return FsspecArtifactStore(text, storage_options=storage_options)
