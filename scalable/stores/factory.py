"""build_artifact_store, and the table of store backends by URI scheme (imported lazily).

The table maps a scheme to a backend class, named by its import path (``package.module:Class``)
so that nothing is imported before a store of that scheme is built, and to an install hint
shown when that import fails. Three sources fill it, the first that knows a scheme wins:

1. backends registered in this process with :func:`register_store` (the built-in ones are:
   ``file``/``local`` for local directories; ``memory``, ``s3``, ``s3a``, ``gs``, ``gcs`` for
   fsspec filesystems);
2. entry points of the group ``scalable.stores`` of installed packages (name: the scheme,
   value: ``package.module:Class``), so a plug-in package needs no import to be found;
3. any other protocol fsspec knows, served by
   :class:`~scalable.stores.fsspec_store.FsspecArtifactStore`.

A backend is a subclass of :class:`~scalable.stores.base.BaseArtifactStore`; the factory calls
its :meth:`~scalable.stores.base.BaseArtifactStore.from_uri`.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Final

from scalable.errors import ConfigError, MissingDependencyError, UnsupportedSchemeError
from scalable.stores.base import ArtifactStore, BaseArtifactStore

__all__ = [
    "ENTRY_POINT_GROUP",
    "StoreBackend",
    "build_artifact_store",
    "known_stores",
    "register_store",
    "unregister_store",
]

#: The entry-point group through which installed packages provide store backends.
ENTRY_POINT_GROUP: Final = "scalable.stores"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCHEME_NAME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_LOCAL: Final = "scalable.stores.local:LocalArtifactStore"
_FSSPEC: Final = "scalable.stores.fsspec_store:FsspecArtifactStore"


@dataclass(frozen=True)
class StoreBackend:
    """One entry of the table: the class that serves a scheme, and what to install for it.

    Attributes:
        target: the class, or its import path ``package.module:Class`` (imported on first use).
        hint: what to run when the import fails, such as ``pip install 'scalable[cloud]'``.
    """

    target: str | type[BaseArtifactStore]
    hint: str | None = None

    def load(self, scheme: str) -> type[BaseArtifactStore]:
        """Return the backend class, importing it if needed.

        Raises:
            MissingDependencyError: its module cannot be imported (the message holds the hint).
            ConfigError: the path names nothing, or no :class:`BaseArtifactStore` subclass.
        """
        target: object = self.target
        if isinstance(target, str):
            module_name, _, name = target.partition(":")
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                advice = self.hint or "install the package that provides it"
                raise MissingDependencyError(
                    f"the {scheme!r} store needs {module_name!r}, which cannot be imported ({exc}); {advice}"
                ) from None
            target = getattr(module, name, None)
        if not (isinstance(target, type) and issubclass(target, BaseArtifactStore)):
            raise ConfigError(
                f"the backend of the {scheme!r} store, {self.target!r}, is not a BaseArtifactStore subclass; "
                "register a subclass of scalable.stores.BaseArtifactStore"
            )
        return target


_lock = threading.Lock()
_backends: dict[str, StoreBackend] = {
    "file": StoreBackend(_LOCAL),
    "local": StoreBackend(_LOCAL),
    "memory": StoreBackend(_FSSPEC),
    "s3": StoreBackend(_FSSPEC),
    "s3a": StoreBackend(_FSSPEC),
    "gs": StoreBackend(_FSSPEC),
    "gcs": StoreBackend(_FSSPEC),
}
_entry_points_loaded = False


def _check_scheme(scheme: object) -> str:
    if not isinstance(scheme, str) or not _SCHEME_NAME.match(scheme.lower()):
        raise ConfigError(
            f"store scheme {scheme!r} is not a URI scheme; use letters, digits, '+', '-' or '.', "
            "starting with a letter (such as 'myfs')"
        )
    return scheme.lower()


def register_store(
    scheme: str, backend: str | type[BaseArtifactStore], *, hint: str | None = None, replace: bool = False
) -> None:
    """Make :func:`build_artifact_store` serve ``scheme://...`` URIs with ``backend``.

    Args:
        scheme: the URI scheme, such as ``myfs`` (case-insensitive).
        backend: a :class:`~scalable.stores.base.BaseArtifactStore` subclass, or its import
            path ``package.module:Class`` (imported when a store of the scheme is first built).
        hint: what to install when the import fails, such as ``pip install 'scalable[cloud]'``.
        replace: replace a backend the scheme already has (a built-in one too).

    Raises:
        ConfigError: a malformed scheme or import path, a class that is no
            ``BaseArtifactStore`` subclass, or a scheme already registered without ``replace``.
    """
    name = _check_scheme(scheme)
    if isinstance(backend, str):
        if not _TARGET.match(backend):
            raise ConfigError(f"store backend {backend!r} is not an import path of the form 'package.module:Class'")
    elif not (isinstance(backend, type) and issubclass(backend, BaseArtifactStore)):
        raise ConfigError(
            f"store backend {backend!r} for {name!r} is not a BaseArtifactStore subclass; "
            "subclass scalable.stores.BaseArtifactStore"
        )
    with _lock:
        current = _backends.get(name)
        if current is not None and not replace and current.target != backend:
            raise ConfigError(
                f"the store scheme {name!r} is served by {current.target!r} already; pass replace=True to replace it"
            )
        _backends[name] = StoreBackend(backend, hint)


def unregister_store(scheme: str) -> None:
    """Forget the backend registered for ``scheme`` (URIs of it then fall through to fsspec).

    Raises:
        ConfigError: no backend is registered for ``scheme``.
    """
    name = _check_scheme(scheme)
    with _lock:
        if _backends.pop(name, None) is None:
            raise ConfigError(f"no store backend is registered for {name!r}; known: {', '.join(sorted(_backends))}")


def _load_entry_points() -> None:
    """Add the schemes installed packages declare (group ``scalable.stores``), once per process."""
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            name = ep.name.lower()
            if _SCHEME_NAME.match(name) and name not in _backends:
                dist = ep.dist.name if ep.dist is not None else None
                _backends[name] = StoreBackend(ep.value, f"pip install {dist}" if dist else None)


def known_stores() -> Mapping[str, StoreBackend]:
    """Return the registered and installed (entry-point) backends by scheme, sorted by scheme.

    Other fsspec protocols are served by :class:`~scalable.stores.fsspec_store.FsspecArtifactStore`
    without an entry here.
    """
    _load_entry_points()
    with _lock:
        return {name: _backends[name] for name in sorted(_backends)}


def _backend(scheme: str) -> StoreBackend:
    """The table entry serving ``scheme``: registered, installed, else any fsspec protocol."""
    found = _backends.get(scheme)
    if found is None:
        _load_entry_points()
        found = _backends.get(scheme)
    if found is not None:
        return found
    from fsspec.registry import known_implementations, registry

    if scheme in known_implementations or scheme in registry:
        return StoreBackend(_FSSPEC)
    known = sorted({*known_stores(), *known_implementations, *registry})
    raise UnsupportedSchemeError(
        f"no artifact store handles the scheme {scheme!r}; known schemes: {', '.join(known)} "
        "(a new backend is added with scalable.stores.register_store)"
    )


def build_artifact_store(uri: str | os.PathLike[str], **storage_options: Any) -> ArtifactStore:
    """Return the artifact store at ``uri``.

    Plain paths (``./artifacts``, ``artifacts``, ``/abs``, ``~/x``) and ``file://`` URIs give a
    :class:`~scalable.stores.local.LocalArtifactStore`; ``s3://``, ``gs://``, ``memory://`` and
    any other fsspec protocol give a :class:`~scalable.stores.fsspec_store.FsspecArtifactStore`
    with ``storage_options``; a scheme registered with :func:`register_store` (or by an
    installed package) gives its backend.

    Args:
        uri: where the store's root is.
        **storage_options: passed to the backend (for fsspec: ``endpoint_url``, ``token``...).

    Raises:
        ConfigError: an empty URI, or storage options given for a local path.
        UnsupportedSchemeError: a scheme no backend handles (the message lists known ones).
        MissingDependencyError: the backend needs ``pip install 'scalable[cloud]'`` (or the
            hint its registration gives).
    """
    text = os.fspath(uri)
    if not isinstance(text, str) or not text.strip() or "\0" in text:
        raise ConfigError(
            f"artifact store URI {text!r} is empty or invalid; give a path or a URI like s3://bucket/prefix/"
        )
    m = _SCHEME.match(text)
    scheme = m.group(1).lower() if m else "file"
    return _backend(scheme).load(scheme).from_uri(text, **storage_options)
