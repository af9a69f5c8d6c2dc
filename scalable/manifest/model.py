"""The parsed manifest: project, targets, components and tasks, with Scalable's field names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scalable.manifest.issues import KeyPath, ManifestIssue
from scalable.providers import PROVIDERS, RUNNABLE_PROVIDERS

if TYPE_CHECKING:
    from scalable.manifest.parser import ManifestSource
    from scalable.manifest.source import Lines

__all__ = ["ComponentSpec", "Manifest", "ProjectSpec", "TargetSpec", "TaskSpec"]

#: Variables Slurm sets inside a job: a session started there picks a Slurm target by default.
_SLURM_JOB_VARS = ("SLURM_JOB_ID", "SLURM_CLUSTER_NAME")


@dataclass(frozen=True)
class ProjectSpec:
    """The ``project`` section: name, default storage URI, local cache directory, recorded variables."""

    name: str
    default_storage: str | None = None
    local_cache: str | None = None
    record_env: tuple[str, ...] = ()

    def settings_mapping(self) -> dict[str, Any]:
        """Return the mapping :func:`scalable.settings.load_settings` takes as ``manifest_project``."""
        return {
            "default_storage": self.default_storage,
            "local_cache": self.local_cache,
            "record_env": list(self.record_env),
        }


@dataclass(frozen=True)
class TargetSpec:
    """One entry of ``targets``: where tasks run (``provider``) and how (``options``, as written)."""

    name: str
    provider: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def provider_options(self) -> dict[str, Any]:
        """The options the provider reads: ``options`` without ``overlay`` (the manifest's key)."""
        return {k: v for k, v in self.options.items() if k != "overlay"}


@dataclass(frozen=True)
class ComponentSpec:
    """One entry of ``components``: a unit of work, the resources and environment its tasks get."""

    name: str
    image: str | None = None
    runtime: str | None = None
    cpus: int = 1
    memory: str | None = None
    mounts: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    preload_script: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """One entry of ``tasks``: the component a task belongs to, whether it caches, its outputs."""

    name: str
    component: str
    cache: bool = False
    outputs: dict[str, str] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated manifest.

    Attributes:
        path: the manifest file (absolute).
        version: the schema version (1).
        project: the ``project`` section.
        targets: the targets by name.
        components: the components by name.
        tasks: the tasks by name.
        lock: the SHA-256 hex of the canonical JSON of ``raw``, as Scalable computes it.
        raw: the document with variables expanded and the overlay applied, without ``overlays``.
        raw_unresolved: the document before the overlay (without ``overlays``), when one was applied.
        overlay: the name of the overlay applied, if any.
        warnings: every warning-level finding (unknown options, no tasks...).
    """

    path: Path
    version: int
    project: ProjectSpec
    targets: Mapping[str, TargetSpec]
    components: Mapping[str, ComponentSpec]
    tasks: Mapping[str, TaskSpec]
    lock: str
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    raw_unresolved: dict[str, Any] | None = field(repr=False, default=None)
    overlay: str | None = None
    warnings: tuple[ManifestIssue, ...] = field(repr=False, default=())
    _lines: Lines | None = field(repr=False, compare=False, default=None)
    _source: ManifestSource | None = field(repr=False, compare=False, default=None)

    @property
    def source_path(self) -> str:
        """The manifest file as a string (Scalable's name)."""
        return str(self.path)

    @property
    def directory(self) -> Path:
        """The directory relative paths of the manifest are resolved against."""
        return self.path.parent

    def for_target(self, name: str) -> Manifest:
        """Return this manifest with target ``name``'s overlay applied (itself when it has none).

        Raises:
            ManifestError: the overlay makes the document invalid (file, line and code named).
        """
        spec = self.targets.get(name)
        if self._source is None or (self.overlay is None and spec is not None and "overlay" not in spec.options):
            return self
        return self._source.build(target_name=name)

    def check_target(self, name: str | None = None, *, env: Mapping[str, str] | None = None) -> TargetSpec:
        """Return the target ``name`` (or the default one) after checking what it needs on this machine.

        Without ``name``: inside a Slurm job (``SLURM_JOB_ID`` or ``SLURM_CLUSTER_NAME`` set)
        the target named ``slurm``, else the first with provider ``slurm``; otherwise the
        target named ``local``, else the first with provider ``local``, else the first
        target, as Scalable picks. ``local`` always exists: without such an entry it means
        threads with default options.

        Args:
            name: the target's name.
            env: the environment (``os.environ`` when ``None``).

        Raises:
            ManifestValidationError: ``name`` is not a target (``E_UNKNOWN_TARGET``), or an
                option the target needs here is missing (``E_MISSING_COMM_PORT``).
        """
        env = os.environ if env is None else env
        chosen = name if name is not None else self._default_target(env)
        spec = self.targets.get(chosen)
        if spec is None:
            if chosen == "local":
                return TargetSpec("local", "local", {})
            known = ", ".join(sorted({*self.targets, "local"}))
            raise self._issue(
                "E_UNKNOWN_TARGET", ("targets",), f"unknown target {chosen!r}; known targets: {known}"
            ).error()
        for problem in PROVIDERS[spec.provider].check_ready(spec.provider_options, env):
            raise self._issue(problem.code, ("targets", chosen), problem.message).error()
        return spec

    def target(self, name: str | None = None, *, env: Mapping[str, str] | None = None) -> TargetSpec:
        """Return the target to run tasks on: :meth:`check_target`, and its provider must run here.

        Raises:
            ManifestValidationError: see :meth:`check_target`.
            TargetNotSupportedError: the target's provider validates but this scalable cannot
                run it yet (``E_PROVIDER_NOT_SUPPORTED``).
        """
        spec = self.check_target(name, env=env)
        if not PROVIDERS[spec.provider].runnable:
            raise self._issue(
                "E_PROVIDER_NOT_SUPPORTED",
                ("targets", spec.name, "provider"),
                f"target {spec.name!r} uses provider {spec.provider!r}, which this version of scalable validates but "
                f"cannot run yet; run it on a target whose provider is one of: {', '.join(RUNNABLE_PROVIDERS)}",
            ).error()
        return spec

    def _default_target(self, env: Mapping[str, str]) -> str:
        by_provider: dict[str, str] = {}
        for spec in self.targets.values():
            by_provider.setdefault(spec.provider, spec.name)
        if any(env.get(v) for v in _SLURM_JOB_VARS):
            if "slurm" in self.targets:
                return "slurm"
            if "slurm" in by_provider:
                return by_provider["slurm"]
        if "local" in self.targets or not self.targets:
            return "local"
        return by_provider.get("local", next(iter(self.targets)))

    def _issue(self, code: str, path: KeyPath, message: str) -> ManifestIssue:
        line = self._lines.of(path) if self._lines is not None else None
        return ManifestIssue("error", code, path, message, str(self.path), line)
