"""The ``scalable.yaml`` manifest, schema v1: parsing, validation with line numbers, and its lock.

A manifest looks like::

    version: 1
    project:
      name: my-project
      default_storage: s3://my-bucket/scalable-runs/   # optional
      local_cache: .scalable/cache                     # optional
    targets:
      local: {provider: local, max_workers: 4}         # threads; processes: true for processes
      cluster: {provider: dask, n_workers: 2, threads_per_worker: 1}
      remote: {provider: dask, address: "tcp://10.0.0.5:8786", timeout: 30}
    components:
      preprocess: {description: clean the raw data}
    tasks:
      clean_table: preprocess                          # or {component: preprocess}

Every error is a :class:`~scalable.errors.ManifestError` naming the file, the line and the key
path (``targets.cluster.provider``). Unknown keys are errors, not silently ignored. The lock
is the SHA-256 of the canonical JSON of the parsed document, so two manifests that parse to
the same data have the same lock whatever their formatting.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from scalable.errors import ManifestError, ManifestNotFoundError

__all__ = [
    "DEFAULT_MANIFEST",
    "PROVIDERS",
    "SCHEMA_VERSION",
    "ComponentSpec",
    "Manifest",
    "ProjectSpec",
    "TargetSpec",
    "TaskSpec",
    "load_manifest",
    "manifest_lock",
    "parse_manifest",
    "resolve_manifest_path",
]

SCHEMA_VERSION: Final = 1
DEFAULT_MANIFEST: Final = "scalable.yaml"

_TOP_KEYS: Final = ("version", "project", "targets", "components", "tasks")
_PROJECT_KEYS: Final = ("name", "default_storage", "local_cache")
_COMPONENT_KEYS: Final = ("description", "image", "cpus", "memory", "env")
_TASK_KEYS: Final = ("component", "description")

#: Target providers and the options each accepts (besides ``provider``), with their types.
PROVIDERS: Final[dict[str, dict[str, tuple[type, ...]]]] = {
    "local": {"max_workers": (int,), "processes": (bool,)},
    "dask": {
        "address": (str,),
        "timeout": (int,),
        "n_workers": (int,),
        "threads_per_worker": (int,),
        "processes": (bool,),
        "memory_limit": (str, int),
    },
}


@dataclass(frozen=True)
class ProjectSpec:
    """The ``project`` section: name, default storage URI and local cache directory."""

    name: str
    default_storage: str | None = None
    local_cache: str | None = None

    def settings_mapping(self) -> dict[str, Any]:
        """Return the mapping :func:`scalable.settings.load_settings` takes as ``manifest_project``."""
        return {"default_storage": self.default_storage, "local_cache": self.local_cache}


@dataclass(frozen=True)
class TargetSpec:
    """One entry of ``targets``: where tasks run (``provider``) and how (``options``)."""

    name: str
    provider: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ComponentSpec:
    """One entry of ``components``: a named unit of work that tasks belong to."""

    name: str
    description: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """One entry of ``tasks``: a task name and the component it belongs to."""

    name: str
    component: str
    description: str | None = None


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest and its lock."""

    path: Path
    version: int
    project: ProjectSpec
    targets: Mapping[str, TargetSpec]
    components: Mapping[str, ComponentSpec]
    tasks: Mapping[str, TaskSpec]
    lock: str
    data: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @property
    def directory(self) -> Path:
        """The directory relative paths of the manifest are resolved against."""
        return self.path.parent

    def target(self, name: str | None = None) -> TargetSpec:
        """Return the target ``name``; without a name ``local`` if defined, else the first.

        ``local`` is always available: without a ``local`` entry it means threads with
        default options.

        Raises:
            ManifestError: ``name`` is not a target of this manifest (the known ones are listed).
        """
        if name is None:
            name = "local" if "local" in self.targets or not self.targets else next(iter(self.targets))
        spec = self.targets.get(name)
        if spec is not None:
            return spec
        if name == "local":
            return TargetSpec("local", "local", {})
        known = sorted({*self.targets, "local"})
        raise ManifestError(f"{self.path}: targets: unknown target {name!r}; known targets: {', '.join(known)}")

    def component_of(self, task_name: str | None) -> str | None:
        """Return the component the manifest maps ``task_name`` to, if any."""
        if task_name is None:
            return None
        spec = self.tasks.get(task_name)
        return spec.component if spec is not None else None


# --- reading ------------------------------------------------------------------------------


def resolve_manifest_path(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Return the manifest path: ``path``, else ``SCALABLE_MANIFEST``, else ``./scalable.yaml``."""
    env = os.environ if env is None else env
    chosen: str | os.PathLike[str] = path if path is not None else (env.get("SCALABLE_MANIFEST") or DEFAULT_MANIFEST)
    return Path(os.path.abspath(Path(chosen).expanduser()))


def load_manifest(path: str | os.PathLike[str] | None = None) -> Manifest:
    """Read and validate a manifest file.

    Args:
        path: the manifest; ``SCALABLE_MANIFEST`` or ``./scalable.yaml`` when omitted.

    Raises:
        ManifestNotFoundError: the file does not exist or cannot be read.
        ManifestError: the file is not valid YAML or breaks schema v1 (file, line and key path
            are named).
    """
    resolved = resolve_manifest_path(path)
    try:
        text = resolved.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestNotFoundError(
            f"manifest {str(resolved)!r} does not exist; create it (version: 1, project: {{name: ...}}) "
            "or point SCALABLE_MANIFEST at yours"
        ) from None
    except IsADirectoryError:
        raise ManifestNotFoundError(f"manifest {str(resolved)!r} is a directory; give the path of scalable.yaml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {str(resolved)!r} cannot be read: {exc}") from None
    return parse_manifest(text, resolved)


def manifest_lock(data: Mapping[str, Any]) -> str:
    """Return the SHA-256 hex of the canonical JSON (sorted keys, compact) of ``data``."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class _Doc:
    """The parsed document plus the line of every key path, for error messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: dict[tuple[str, ...], int] = {}

    def error(self, where: tuple[str, ...], message: str) -> ManifestError:
        line = self._line(where)
        key = ".".join(where) if where else "(top level)"
        return ManifestError(f"{self.path}:{line}: {key}: {message}" if line else f"{self.path}: {key}: {message}")

    def _line(self, where: tuple[str, ...]) -> int | None:
        probe = where
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get(())


def _construct(loader: yaml.SafeLoader, node: yaml.Node, where: tuple[str, ...], doc: _Doc) -> Any:
    doc.lines.setdefault(where, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves "<<" merge keys
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                doc.lines[(*where, str(key))] = key_node.start_mark.line + 1
                raise doc.error((*where, str(key)), f"keys must be strings, got {type(key).__name__}")
            child = (*where, key)
            if key in out:
                doc.lines[child] = key_node.start_mark.line + 1
                raise doc.error(child, "duplicate key; each key may appear once")
            doc.lines[child] = key_node.start_mark.line + 1
            out[key] = _construct(loader, value_node, child, doc)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, (*where, str(i)), doc) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_manifest(text: str, path: str | os.PathLike[str] = DEFAULT_MANIFEST) -> Manifest:
    """Parse and validate manifest ``text`` (``path`` is used for messages and relative paths).

    Raises:
        ManifestError: invalid YAML or a schema v1 violation (file, line and key path named).
    """
    resolved = Path(os.path.abspath(path))
    doc = _Doc(resolved)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = _construct(loader, node, (), doc) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ManifestError(f"{resolved}{line}: invalid YAML: {exc.problem or exc.context}; fix the syntax") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{resolved}: invalid YAML: {exc}; fix the syntax") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise doc.error((), f"a manifest is a mapping with {', '.join(_TOP_KEYS)}; got {_kind(data)}")
    return _validate(data, doc)


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _unknown(doc: _Doc, where: tuple[str, ...], data: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise doc.error((*where, key), f"unknown key {key!r}; allowed here: {', '.join(allowed)}")


def _mapping(doc: _Doc, where: tuple[str, ...], value: Any, *, required: bool = False) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise doc.error(where, f"must be a mapping, got {_kind(value)}")
    return value


def _string(doc: _Doc, where: tuple[str, ...], value: Any, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise doc.error(where, f"must be a non-empty string, got {_kind(value)} {value!r}")
    return value


def _validate(data: dict[str, Any], doc: _Doc) -> Manifest:
    _unknown(doc, (), data, _TOP_KEYS)
    version = data.get("version")
    if version is None:
        raise doc.error(("version",), f"missing; add 'version: {SCHEMA_VERSION}' at the top")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise doc.error(("version",), f"unsupported version {version!r}; this scalable reads version {SCHEMA_VERSION}")

    if "project" not in data:
        raise doc.error(("project",), "missing; add 'project: {name: my-project}'")
    project_data = _mapping(doc, ("project",), data.get("project"), required=True)
    _unknown(doc, ("project",), project_data, _PROJECT_KEYS)
    name = _string(doc, ("project", "name"), project_data.get("name"), required=True)
    assert name is not None
    project = ProjectSpec(
        name=name,
        default_storage=_string(doc, ("project", "default_storage"), project_data.get("default_storage")),
        local_cache=_string(doc, ("project", "local_cache"), project_data.get("local_cache")),
    )

    targets: dict[str, TargetSpec] = {}
    for tname, tvalue in _mapping(doc, ("targets",), data.get("targets")).items():
        where: tuple[str, ...] = ("targets", tname)
        options = dict(_mapping(doc, where, tvalue, required=True))
        provider = options.pop("provider", None)
        if provider is None:
            raise doc.error((*where, "provider"), f"missing; use one of: {', '.join(PROVIDERS)}")
        if provider not in PROVIDERS:
            raise doc.error((*where, "provider"), f"unknown provider {provider!r}; use one of: {', '.join(PROVIDERS)}")
        allowed = PROVIDERS[provider]
        _unknown(doc, where, options, ("provider", *allowed))
        for key, value in options.items():
            types = allowed[key]
            if type(value) not in types:
                want = " or ".join(t.__name__ for t in types)
                raise doc.error((*where, key), f"must be {want}, got {_kind(value)} {value!r}")
            if type(value) is int and key != "memory_limit" and value < 1:
                raise doc.error((*where, key), f"must be at least 1, got {value}")
        if provider == "dask" and "address" in options:
            clash = sorted(set(options) & {"n_workers", "threads_per_worker", "processes", "memory_limit"})
            if clash:
                raise doc.error(
                    (*where, clash[0]),
                    "applies to a cluster scalable starts; with 'address' the scheduler's own workers are used, remove it",
                )
        targets[tname] = TargetSpec(tname, provider, options)

    components: dict[str, ComponentSpec] = {}
    for cname, cvalue in _mapping(doc, ("components",), data.get("components")).items():
        where = ("components", cname)
        cdata = _mapping(doc, where, cvalue)
        _unknown(doc, where, cdata, _COMPONENT_KEYS)
        description = _string(doc, (*where, "description"), cdata.get("description"))
        components[cname] = ComponentSpec(cname, description, {k: v for k, v in cdata.items() if k != "description"})

    tasks: dict[str, TaskSpec] = {}
    for task_name, task_value in _mapping(doc, ("tasks",), data.get("tasks")).items():
        where = ("tasks", task_name)
        if isinstance(task_value, str):
            component, description = task_value, None
        else:
            tdata = _mapping(doc, where, task_value, required=True)
            _unknown(doc, where, tdata, _TASK_KEYS)
            component = _string(doc, (*where, "component"), tdata.get("component"), required=True)  # type: ignore[assignment]
            description = _string(doc, (*where, "description"), tdata.get("description"))
            where = (*where, "component")
        if component not in components:
            known = ", ".join(sorted(components)) or "none defined"
            raise doc.error(where, f"unknown component {component!r}; known components: {known}")
        tasks[task_name] = TaskSpec(task_name, component, description)

    return Manifest(
        path=doc.path,
        version=version,
        project=project,
        targets=targets,
        components=components,
        tasks=tasks,
        lock=manifest_lock(data),
        data=data,
    )
