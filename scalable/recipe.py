"""What a run records so that it can be run again: its command, interpreter, code and environment.

A session adds a *recipe* to its ``run/started`` event (``attrs.recipe``):

* ``root``: the project folder (the manifest's directory, else the working directory), and
  ``cwd``, the working directory relative to it;
* ``argv``: the command as the interpreter received it (``sys.orig_argv``) and ``executable``;
  an argument that looks like a secret is masked and ``masked`` is true (such a run cannot be
  run again as recorded);
* ``python``, ``implementation``, ``platform``; ``distributions``: name and version of every
  installed distribution the process had imported from;
* ``code``: the script, the project's own modules it had imported (files under ``root``
  outside the interpreter's and the virtual environment's directories) and the manifest, each
  by path relative to ``root``, SHA-256 and size, and ``stored``: the URI of a copy kept in the
  default storage under ``code/<digest>`` (stored once, whatever the number of runs), so a
  rerun can restore the code the run executed after the working tree moved on;
  ``import_roots``: the folders (relative to ``root``) those modules were imported from;
* ``env``: the environment variables named by the allow-list (``SCALABLE_RECORD_ENV`` or
  ``project.record_env``; names or ``fnmatch`` patterns). Nothing else of the environment is
  recorded, and a variable whose name looks like a secret (key, token, password...) never is,
  nor one of scalable's own settings (a rerun sets those itself);
* ``cache_dir``: the local cache the run's ``@cacheable`` calls used.

The inputs a run read are not known at its start: each is recorded by its own event as the run
reads it (``artifact/used`` and ``get``, the ``inputs`` of recorded artifacts, the file
arguments of cached calls); ``scalable.rerun`` gathers them from the run's events.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import platform
import re
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any, Final

from scalable.digests import sha256_file
from scalable.logs import get_logger, mask_secrets
from scalable.stores import ArtifactStore

__all__ = ["CODE_PREFIX", "SECRET_NAME", "capture", "code_key", "imported_distributions", "newly_imported"]

_log = get_logger("scalable.recipe")

#: Store keys of stored code start with this prefix: ``code/<sha256>``.
CODE_PREFIX: Final = "code"
#: Names of environment variables that are never recorded, even when allowed.
SECRET_NAME: Final = re.compile(r"(?i)(key|secret|token|passw|credential|auth|cookie|session)")


def code_key(digest: str) -> str:
    """The store key a file of code with ``digest`` is kept under."""
    return f"{CODE_PREFIX}/{digest}"


@functools.cache
def _excluded_dirs() -> tuple[str, ...]:
    """Directories whose modules belong to the interpreter or installed packages, never to the project."""
    found = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            found.add(path)
    return tuple(sorted({os.path.join(os.path.realpath(p), "") for p in found if p}))


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder)


@functools.lru_cache(maxsize=65536)
def _real(file: str) -> str:
    """A module file with links resolved (once a process: a module's file does not move)."""
    return os.path.realpath(file)


def _module_file(module: ModuleType) -> str | None:
    file = getattr(module, "__file__", None)
    if not isinstance(file, str) or not file.endswith(".py"):
        return None
    return _real(file)


def _import_root(name: str, file: str, module: ModuleType) -> str:
    """The folder a module was imported from (the entry of ``sys.path`` that found it)."""
    spec = getattr(module, "__spec__", None)
    dotted = spec.name if spec is not None and spec.name else name
    if name == "__main__" and (spec is None or not spec.name):
        return os.path.dirname(file)  # a script: its own folder is on the path
    depth = dotted.count(".") + (1 if os.path.basename(file) == "__init__.py" else 0)
    folder = os.path.dirname(file)
    for _ in range(depth):
        folder = os.path.dirname(folder)
    return folder


def _project_code(root: str, modules: Mapping[str, ModuleType]) -> dict[str, tuple[str, str]]:
    """Project files of the imported modules: relative path -> (module name, import root)."""
    base = os.path.join(os.path.realpath(root), "")
    excluded = _excluded_dirs()
    found: dict[str, tuple[str, str]] = {}
    for name, module in list(modules.items()):
        if module is None:
            continue
        file = _module_file(module)
        if file is None or not _inside(file, base) or any(_inside(file, d) for d in excluded):
            continue
        rel = PurePosixPath(Path(os.path.relpath(file, base))).as_posix()
        imported_from = os.path.relpath(_import_root(name, file, module), base)
        if rel not in found or name == "__main__":
            found[rel] = (name, PurePosixPath(Path(imported_from)).as_posix())
    return found


@functools.cache
def _top_level_owners() -> dict[str, metadata.Distribution]:
    """Top-level import names -> installed distribution, from ``top_level.txt`` (read once a process)."""
    owners: dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        for top in (dist.read_text("top_level.txt") or "").split():
            owners.setdefault(top, dist)
    return owners


def imported_distributions(modules: Mapping[str, ModuleType], skip: Iterable[str] = ()) -> dict[str, str]:
    """Name -> version of the installed distributions that ``modules`` were imported from.

    Standard library modules, modules without a file and the top-level names in ``skip`` (the
    project's own) are left out; a top-level name no distribution declares is looked up as a
    distribution of the same name, else left out.
    """
    stdlib = sys.stdlib_module_names
    skipped = set(skip)
    tops: set[str] = set()
    for name, module in list(modules.items()):
        top = name.partition(".")[0]
        if top in tops or top in stdlib or top in skipped or top.startswith("__") or module is None:
            continue
        if getattr(module, "__file__", None) or getattr(module, "__path__", None):
            tops.add(top)
    found: dict[str, str] = {}
    for top in sorted(tops):
        described = _distribution_of(top)
        if described is not None:
            found[described[0]] = described[1]
    return dict(sorted(found.items()))


@functools.lru_cache(maxsize=4096)
def _distribution_of(top: str) -> tuple[str, str] | None:
    """Name and version of the distribution a top-level import name comes from (once a process)."""
    dist = _top_level_owners().get(top)
    if dist is None:
        try:
            dist = metadata.distribution(top)
        except (metadata.PackageNotFoundError, ValueError):
            return None
    name = dist.metadata["Name"]
    return (str(name), str(dist.version)) if name else None


def _allowed_env(env: Mapping[str, str], allow: Sequence[str]) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for name in sorted(env):
        if not any(fnmatch.fnmatchcase(name, pattern) for pattern in allow):
            continue
        if SECRET_NAME.search(name) or name.startswith("SCALABLE_"):
            _log.warning("recipe.env_not_recorded", variable=name, reason="its name looks like a secret or a setting")
            continue
        chosen[name] = mask_secrets(env[name])
    return chosen


def _store_code(store: ArtifactStore | None, path: Path, digest: str) -> str | None:
    """Keep a copy of a code file in ``store`` under :func:`code_key` (once); return its URI."""
    if store is None:
        return None
    key = code_key(digest)
    try:
        if not store.exists(key):
            ref = store.put(path, key, record=False)
            if ref.digest != digest:  # the file changed while it was read
                return None
        return store.uri_for(key)
    except Exception as exc:  # the run goes on; a rerun then needs the file unchanged where it was
        _log.warning("recipe.code_not_stored", path=str(path), store=mask_secrets(store.base_uri), error=str(exc))
        return None


def _code_entries(
    root: Path, files: Mapping[str, tuple[str | None, str | None]], store: ArtifactStore | None
) -> list[dict[str, Any]]:
    entries = []
    for rel, (module, _imported_from) in sorted(files.items()):
        path = root / rel
        try:
            digest, size = sha256_file(path)
        except (OSError, ValueError) as exc:
            _log.warning("recipe.code_not_hashed", path=str(path), error=str(exc))
            continue
        entries.append(
            {"path": rel, "module": module, "digest": digest, "size": size, "stored": _store_code(store, path, digest)}
        )
    return entries


def capture(
    root: str | os.PathLike[str],
    *,
    store: ArtifactStore | None,
    allow_env: Sequence[str] = (),
    manifest: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    modules: Mapping[str, ModuleType] | None = None,
) -> dict[str, Any]:
    """Return the recipe of the running process (see the module text).

    Args:
        root: the project folder.
        store: where code is kept (the session's default storage); ``None`` stores nothing.
        allow_env: names or ``fnmatch`` patterns of the environment variables to record.
        manifest: the manifest file the run read, recorded with the code when inside ``root``.
        cache_dir: the local cache directory of the run.
        env: the environment (``os.environ`` when omitted).
        modules: the imported modules (``sys.modules`` when omitted).
    """
    base = Path(os.path.realpath(root))  # module files are compared with links resolved
    modules = sys.modules if modules is None else modules
    env = os.environ if env is None else env
    project = _project_code(str(base), modules)
    files: dict[str, tuple[str | None, str | None]] = dict(project.items())
    if manifest is not None:
        real = os.path.realpath(manifest)
        if _inside(real, os.path.join(str(base), "")):
            files.setdefault(PurePosixPath(Path(os.path.relpath(real, base))).as_posix(), (None, None))
    argv = [str(a) for a in getattr(sys, "orig_argv", [sys.executable, *sys.argv])]
    shown = [mask_secrets(a) for a in argv]
    cwd = os.path.relpath(os.path.realpath(os.getcwd()), base)
    main = modules.get("__main__")
    return {
        "root": os.path.abspath(root),  # as locations spell it: links not resolved
        "cwd": PurePosixPath(Path(cwd)).as_posix(),
        "argv": shown,
        "masked": shown != argv,
        "interactive": main is None or (getattr(main, "__file__", None) is None and "-c" not in argv),
        "executable": sys.executable,
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": sysconfig.get_platform(),
        "distributions": imported_distributions(modules, skip={n.partition(".")[0] for _r, (n, _i) in project.items()}),
        "code": _code_entries(base, files, store),
        "import_roots": sorted({imported_from for _m, imported_from in project.values()}),
        "env": _allowed_env(env, allow_env),
        "cache_dir": None if cache_dir is None else str(cache_dir),
    }


def newly_imported(
    recipe: Mapping[str, Any], *, store: ArtifactStore | None, modules: Mapping[str, ModuleType] | None = None
) -> dict[str, Any]:
    """What the process imported since ``recipe`` was captured: code and distributions it lacks.

    A session adds this to ``run/finished`` (``attrs.recipe_added``), for modules a run
    imported only once it was going (inside a task, say). Empty parts are left out.
    """
    modules = sys.modules if modules is None else modules
    root = Path(os.path.realpath(str(recipe["root"])))
    project = _project_code(str(root), modules)
    known = {entry["path"] for entry in recipe.get("code", ())}
    fresh = {rel: found for rel, found in project.items() if rel not in known}
    added: dict[str, Any] = {}
    code = _code_entries(root, dict(fresh.items()), store)
    if code:
        added["code"] = code
        roots = sorted({imported_from for _m, imported_from in fresh.values()} - set(recipe.get("import_roots", ())))
        if roots:
            added["import_roots"] = roots
    had = recipe.get("distributions", {})
    dists = {
        name: version
        for name, version in imported_distributions(
            modules, skip={n.partition(".")[0] for _r, (n, _i) in project.items()}
        ).items()
        if name not in had
    }
    if dists:
        added["distributions"] = dists
    return added
