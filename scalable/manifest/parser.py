"""Reading ``scalable.yaml``: Scalable's schema v1, checked in Scalable's order, with lines.

The steps, as Scalable takes them: parse the YAML; refuse an empty or non-mapping document;
expand ``${VAR}`` in every string (overlays included); check the top-level keys and the
version; apply the overlay of the chosen target (or the one named); build ``project``,
``targets``, ``components`` and ``tasks`` from the resolved document; then check what the
parts say together and each target's options against its provider
(:mod:`scalable.providers`). The first error is raised, naming file, line, code and key
path; warnings are kept on the manifest and those about ignored keys are emitted once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from scalable.errors import ManifestNotFoundError
from scalable.manifest.expand import deep_merge, expand, unset_variable_issue
from scalable.manifest.issues import KeyPath, ManifestIssue, warn_once
from scalable.manifest.model import ComponentSpec, Manifest, ProjectSpec, TargetSpec, TaskSpec
from scalable.manifest.source import Lines, YamlSource, read_yaml
from scalable.manifest.validate import validate
from scalable.providers import PROVIDERS

__all__ = [
    "DEFAULT_MANIFEST",
    "SCHEMA_VERSION",
    "ManifestSource",
    "load_manifest",
    "manifest_lock",
    "parse_manifest",
    "resolve_manifest_path",
]

SCHEMA_VERSION: Final = 1
DEFAULT_MANIFEST: Final = "scalable.yaml"

_TOP_KEYS: Final = ("version", "project", "targets", "components", "tasks", "overlays")
_OVERLAY_KEYS: Final = ("project", "targets", "components", "tasks")
_PROJECT_KEYS: Final = ("name", "default_storage", "local_cache", "record_env")
_COMPONENT_KEYS: Final = (
    "image",
    "runtime",
    "cpus",
    "memory",
    "mounts",
    "env",
    "tags",
    "preload_script",
    "description",
)
_TASK_KEYS: Final = ("component", "cache", "outputs", "description")
#: Warnings kept on the manifest but not emitted: a manifest without targets or tasks is common.
_QUIET: Final = frozenset({"W_NO_TARGETS", "W_NO_TASKS"})


def resolve_manifest_path(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Return the manifest path: ``path``, else ``SCALABLE_MANIFEST``, else ``./scalable.yaml``."""
    env = os.environ if env is None else env
    chosen: str | os.PathLike[str] = path if path is not None else (env.get("SCALABLE_MANIFEST") or DEFAULT_MANIFEST)
    return Path(os.path.abspath(Path(chosen).expanduser()))


def load_manifest(
    source: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    target_name: str | None = None,
    overlay_name: str | None = None,
) -> Manifest:
    """Read and check a manifest file.

    Args:
        source: the manifest; ``SCALABLE_MANIFEST`` or ``./scalable.yaml`` when omitted.
        env: the variables ``${VAR}`` expands from; ``os.environ`` when ``None``.
        target_name: the target about to be used: its overlay is applied, it must exist, and
            what it needs on this machine is checked (``E_MISSING_COMM_PORT``).
        overlay_name: apply this overlay instead of the target's.

    Raises:
        ManifestNotFoundError: the file does not exist.
        ManifestParseError: unreadable file, invalid YAML, an unset variable.
        ManifestSchemaError: a key unknown, missing or of the wrong type; a bad version or overlay.
        ManifestValidationError: parts that disagree, or a target option its provider refuses.
    """
    resolved = resolve_manifest_path(source)
    try:
        text = resolved.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestNotFoundError(
            f"manifest {str(resolved)!r} does not exist; create it (version: 1, project: {{name: ...}}) "
            "or point SCALABLE_MANIFEST at yours"
        ) from None
    except IsADirectoryError:
        raise ManifestNotFoundError(
            f"manifest {str(resolved)!r} is a directory; give the path of scalable.yaml"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestIssue("error", "E_READ", (), f"cannot be read: {exc}", str(resolved)).error() from None
    return parse_manifest(text, resolved, env=env, target_name=target_name, overlay_name=overlay_name)


def parse_manifest(
    source: str | Mapping[str, Any],
    source_path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    target_name: str | None = None,
    overlay_name: str | None = None,
) -> Manifest:
    """Check manifest ``source``: YAML text, or a mapping already parsed.

    Args:
        source: the document.
        source_path: the file it came from, for messages and relative paths
            (``./scalable.yaml`` when omitted).
        env: the variables ``${VAR}`` expands from; ``os.environ`` when ``None``.
        target_name: see :func:`load_manifest`.
        overlay_name: see :func:`load_manifest`.

    Raises:
        ManifestError: see :func:`load_manifest` (a subclass naming file, line, code and key).
    """
    path = Path(os.path.abspath(source_path if source_path is not None else DEFAULT_MANIFEST))
    if isinstance(source, str):
        parsed = read_yaml(source, str(path))
    elif isinstance(source, Mapping):
        parsed = YamlSource(dict(source), Lines())
    else:
        raise ManifestIssue(
            "error", "E_BAD_TYPE", (), f"a manifest is YAML text or a mapping, got {_kind(source)}", str(path)
        ).error()
    return ManifestSource.prepare(path, parsed, os.environ if env is None else env).build(
        target_name=target_name, overlay_name=overlay_name
    )


def manifest_lock(raw: Mapping[str, Any]) -> str:
    """Return the SHA-256 hex of ``raw`` as canonical JSON (sorted keys, compact), as Scalable computes it."""
    try:
        canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    except TypeError:  # keys of mixed types cannot be sorted: compare them as strings
        canonical = json.dumps(_str_keys(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _str_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _str_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_str_keys(v) for v in value]
    return value


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


@dataclass
class _Located:
    """Issues of one file: error and warning constructors that look up the line of a key path."""

    file: str
    lines: Lines

    def issue(self, code: str, path: KeyPath, message: str, level: str = "error") -> ManifestIssue:
        """The issue at ``path`` (an error unless ``level`` says otherwise), with its line."""
        return ManifestIssue(level, code, path, message, self.file, self.lines.of(path))


@dataclass
class ManifestSource:
    """A document whose variables are expanded and whose top level and overlays are checked.

    :meth:`build` turns it into a :class:`Manifest` for a target (its overlay applied).
    """

    path: Path
    data: dict[str, Any]
    lines: Lines
    env: Mapping[str, str]
    duplicates: list[ManifestIssue] = field(default_factory=list)

    @classmethod
    def prepare(cls, path: Path, parsed: YamlSource, env: Mapping[str, str]) -> ManifestSource:
        """Check the document's shape, expand its variables, check top-level keys, version and overlays."""
        at = _Located(str(path), parsed.lines)
        data = parsed.data
        if data is None:
            raise at.issue(
                "E_EMPTY_MANIFEST",
                (),
                "manifest document is empty; start it with 'version: 1' and 'project: {name: ...}'",
            ).error()
        if not isinstance(data, dict):
            raise at.issue(
                "E_BAD_TYPE", (), f"a manifest is a mapping with {', '.join(_TOP_KEYS)}; got {_kind(data)}"
            ).error()

        def unset(where: KeyPath, name: str) -> None:
            raise unset_variable_issue(where, name, at.file, at.lines.of(where)).error()

        data = expand(data, env, (), unset)
        unknown = sorted(str(k) for k in data if k not in _TOP_KEYS)
        if unknown:
            raise at.issue(
                "E_UNKNOWN_KEY",
                (unknown[0],),
                f"unknown top-level keys {unknown}; allowed: {', '.join(sorted(_TOP_KEYS))}",
            ).error()
        if "version" not in data:
            raise at.issue(
                "E_MISSING_KEY", ("version",), f"missing; add 'version: {SCHEMA_VERSION}' at the top"
            ).error()
        if "project" not in data:
            raise at.issue("E_MISSING_KEY", ("project",), "missing; add 'project: {name: my-project}'").error()
        version = data["version"]
        if type(version) is not int:
            raise at.issue(
                "E_BAD_VERSION", ("version",), f"version must be an integer, got {_kind(version)} {version!r}"
            ).error()
        if version != SCHEMA_VERSION:
            raise at.issue(
                "E_BAD_VERSION", ("version",), f"version {version} is not supported (expected {SCHEMA_VERSION})"
            ).error()
        overlays = data.get("overlays")
        if overlays is not None:
            if not isinstance(overlays, dict):
                raise at.issue(
                    "E_BAD_TYPE", ("overlays",), f"'overlays' must be a mapping, got {_kind(overlays)}"
                ).error()
            for name, body in overlays.items():
                where: KeyPath = ("overlays", str(name))
                if not isinstance(name, str) or not name:
                    raise at.issue(
                        "E_BAD_TYPE", where, f"overlay names must be non-empty strings, got {_kind(name)} {name!r}"
                    ).error()
                if not isinstance(body, dict):
                    raise at.issue(
                        "E_BAD_TYPE", where, f"overlay {name!r} must be a mapping, got {_kind(body)}"
                    ).error()
                extra = sorted(str(k) for k in body if k not in _OVERLAY_KEYS)
                if extra:
                    raise at.issue(
                        "E_UNKNOWN_KEY",
                        (*where, extra[0]),
                        f"an overlay may set {', '.join(_OVERLAY_KEYS)}; it cannot set {extra[0]!r}",
                    ).error()
        duplicates = [
            ManifestIssue(
                "warning", "W_DUPLICATE_KEY", where, "given twice in one mapping; the last one is used", at.file, line
            )
            for where, line in parsed.duplicates
        ]
        return cls(path, data, parsed.lines, env, duplicates)

    def build(self, *, target_name: str | None = None, overlay_name: str | None = None) -> Manifest:
        """Return the manifest with the overlay of ``target_name`` (or ``overlay_name``) applied."""
        at = _Located(str(self.path), self.lines)
        overlays: dict[str, Any] = self.data.get("overlays") or {}
        base = {k: v for k, v in self.data.items() if k != "overlays"}
        chosen: Any = overlay_name
        chosen_at: KeyPath = ()
        raw_targets = base.get("targets")
        target_entry = (
            raw_targets.get(target_name) if isinstance(raw_targets, dict) and target_name is not None else None
        )
        if chosen is None and isinstance(target_entry, dict) and "overlay" in target_entry:
            chosen, chosen_at = target_entry["overlay"], ("targets", str(target_name), "overlay")
            if not isinstance(chosen, str):
                raise at.issue(
                    "E_BAD_TYPE", chosen_at, f"overlay must be the name of an overlay, got {_kind(chosen)} {chosen!r}"
                ).error()
        raw, raw_unresolved, lines = base, None, self.lines
        if chosen is not None:
            if chosen not in overlays:
                raise at.issue(
                    "E_UNKNOWN_OVERLAY",
                    chosen_at,
                    f"overlay {chosen!r} referenced but not defined; available overlays: {sorted(overlays)}",
                ).error()
            raw = deep_merge(base, overlays[chosen])
            raw_unresolved = base
            lines = self.lines.grafted(("overlays", chosen), ())
            at = _Located(at.file, lines)
            merged_entry = raw.get("targets", {}).get(target_name) if isinstance(raw.get("targets"), dict) else None
            if isinstance(merged_entry, dict):
                merged_entry.pop("overlay", None)
        project = _project(at, raw.get("project"))
        targets = _targets(at, raw.get("targets"), overlays)
        components = _components(at, raw.get("components"))
        tasks = _tasks(at, raw.get("tasks"))
        issues = validate(at.issue, targets, components, tasks)
        for issue in issues:
            if issue.level == "error":
                raise issue.error()
        manifest = Manifest(
            path=self.path,
            version=SCHEMA_VERSION,
            project=project,
            targets=targets,
            components=components,
            tasks=tasks,
            lock=manifest_lock(raw),
            raw=raw,
            raw_unresolved=raw_unresolved,
            overlay=chosen,
            warnings=(*self.duplicates, *issues),
            _lines=lines,
            _source=self,
        )
        if target_name is not None:
            manifest.check_target(target_name, env=self.env)
        for issue in manifest.warnings:
            if issue.code not in _QUIET:
                warn_once(issue)
        return manifest


# --- sections ----------------------------------------------------------------------------------


def _mapping(at: _Located, path: KeyPath, value: Any) -> dict[str, Any]:
    """``value`` as a mapping (``null`` is empty), else ``E_BAD_TYPE``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise at.issue("E_BAD_TYPE", path, f"'{path[-1]}' must be a mapping, got {_kind(value)}").error()
    return value


def _named(at: _Located, path: KeyPath, section: dict[Any, Any], what: str) -> dict[str, Any]:
    """The entries of ``section``, whose names must be non-empty strings."""
    for name in section:
        if not isinstance(name, str) or not name.strip():
            raise at.issue(
                "E_BAD_TYPE", (*path, str(name)), f"{what} names must be non-empty strings, got {_kind(name)} {name!r}"
            ).error()
    return section


def _unknown(at: _Located, path: KeyPath, data: dict[Any, Any], allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise at.issue(
                "E_UNKNOWN_KEY", (*path, str(key)), f"unknown key {key!r}; allowed here: {', '.join(allowed)}"
            ).error()


def _optional_str(at: _Located, path: KeyPath, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise at.issue("E_BAD_TYPE", path, f"must be a string, got {_kind(value)} {value!r}").error()


def _required_str(at: _Located, path: KeyPath, data: dict[str, Any], hint: str) -> str:
    if path[-1] not in data:
        raise at.issue("E_MISSING_KEY", path, f"missing; {hint}").error()
    value = data[path[-1]]
    if not isinstance(value, str) or not value.strip():
        raise at.issue("E_BAD_TYPE", path, f"must be a non-empty string, got {_kind(value)} {value!r}").error()
    return value


def _str_mapping(at: _Located, path: KeyPath, value: Any, *, coerce: bool) -> dict[str, str]:
    """A mapping of strings: coerced with ``str`` (``env``, ``outputs``) or required (``mounts``)."""
    data = _mapping(at, path, value)
    if coerce:
        return {str(k): str(v) for k, v in data.items()}
    for key, item in data.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise at.issue(
                "E_BAD_TYPE", (*path, str(key)), f"'{path[-1]}' maps strings to strings, got {key!r}: {item!r}"
            ).error()
    return dict(data)


def _project(at: _Located, value: Any) -> ProjectSpec:
    path: KeyPath = ("project",)
    data = _mapping(at, path, value)
    _unknown(at, path, data, _PROJECT_KEYS)
    name = _required_str(at, (*path, "name"), data, "add 'name: my-project' under project")
    return ProjectSpec(
        name=name.strip(),
        default_storage=_optional_str(at, (*path, "default_storage"), data.get("default_storage")),
        local_cache=_optional_str(at, (*path, "local_cache"), data.get("local_cache")),
        record_env=_str_list(at, (*path, "record_env"), data.get("record_env")),
    )


def _str_list(at: _Located, path: KeyPath, value: Any) -> tuple[str, ...]:
    """An optional list of strings (``null`` or absent: empty)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise at.issue("E_BAD_TYPE", path, f"must be a list of strings, got {value!r}").error()
    return tuple(value)


def _targets(at: _Located, value: Any, overlays: Mapping[str, Any]) -> dict[str, TargetSpec]:
    out: dict[str, TargetSpec] = {}
    section = _named(at, ("targets",), _mapping(at, ("targets",), value), "target")
    for name, spec in section.items():
        path: KeyPath = ("targets", name)
        options = dict(_mapping(at, path, spec))
        provider = _required_str(at, (*path, "provider"), options, f"use one of: {', '.join(PROVIDERS)}")
        del options["provider"]
        for key in options:
            if not isinstance(key, str):
                raise at.issue(
                    "E_BAD_TYPE", (*path, str(key)), f"option names must be strings, got {_kind(key)} {key!r}"
                ).error()
        if "overlay" in options:
            ref = options["overlay"]
            if not isinstance(ref, str):
                raise at.issue(
                    "E_BAD_TYPE",
                    (*path, "overlay"),
                    f"overlay must be the name of an overlay, got {_kind(ref)} {ref!r}",
                ).error()
            if ref not in overlays:
                raise at.issue(
                    "E_UNKNOWN_OVERLAY",
                    (*path, "overlay"),
                    f"overlay {ref!r} referenced but not defined; available overlays: {sorted(overlays)}",
                ).error()
        out[name] = TargetSpec(name, provider, options)
    return out


def _components(at: _Located, value: Any) -> dict[str, ComponentSpec]:
    out: dict[str, ComponentSpec] = {}
    section = _named(at, ("components",), _mapping(at, ("components",), value), "component")
    for name, spec in section.items():
        path: KeyPath = ("components", name)
        data = _mapping(at, path, spec)
        _unknown(at, path, data, _COMPONENT_KEYS)
        cpus = data.get("cpus", 1)
        if type(cpus) is not int or cpus < 1:
            raise at.issue(
                "E_BAD_VALUE", (*path, "cpus"), f"must be a positive integer, got {_kind(cpus)} {cpus!r}"
            ).error()
        memory = data.get("memory")
        if memory is not None and not isinstance(memory, str):
            raise at.issue(
                "E_BAD_TYPE", (*path, "memory"), f"must be a string such as '4GB', got {_kind(memory)} {memory!r}"
            ).error()
        tags = data.get("tags")
        if tags is None:
            tags = []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise at.issue("E_BAD_TYPE", (*path, "tags"), f"must be a list of strings, got {tags!r}").error()
        out[name] = ComponentSpec(
            name=name,
            image=_optional_str(at, (*path, "image"), data.get("image")),
            runtime=_optional_str(at, (*path, "runtime"), data.get("runtime")),
            cpus=cpus,
            memory=memory,
            mounts=_str_mapping(at, (*path, "mounts"), data.get("mounts"), coerce=False),
            env=_str_mapping(at, (*path, "env"), data.get("env"), coerce=True),
            tags=list(tags),
            preload_script=_optional_str(at, (*path, "preload_script"), data.get("preload_script")),
            description=_optional_str(at, (*path, "description"), data.get("description")),
        )
    return out


def _tasks(at: _Located, value: Any) -> dict[str, TaskSpec]:
    out: dict[str, TaskSpec] = {}
    section = _named(at, ("tasks",), _mapping(at, ("tasks",), value), "task")
    for name, spec in section.items():
        path: KeyPath = ("tasks", name)
        if isinstance(spec, str):  # the short form, task: component
            out[name] = TaskSpec(name, _required_str(at, (*path, "component"), {"component": spec}, ""))
            continue
        data = _mapping(at, path, spec)
        _unknown(at, path, data, _TASK_KEYS)
        component = _required_str(at, (*path, "component"), data, "name the component the task belongs to")
        cache = data.get("cache", False)
        if type(cache) is not bool:
            raise at.issue(
                "E_BAD_TYPE", (*path, "cache"), f"must be true or false, got {_kind(cache)} {cache!r}"
            ).error()
        out[name] = TaskSpec(
            name=name,
            component=component,
            cache=cache,
            outputs=_str_mapping(at, (*path, "outputs"), data.get("outputs"), coerce=True),
            description=_optional_str(at, (*path, "description"), data.get("description")),
        )
    return out
