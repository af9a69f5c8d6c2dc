"""What a manifest's parts say together, with Scalable's codes, and each target against its provider.

Scalable's checks and codes: ``W_NO_TARGETS``, ``E_UNKNOWN_PROVIDER``, ``E_BAD_MEMORY``,
``E_NONPOSITIVE_MEMORY``, ``E_RELATIVE_HOST_MOUNT``, ``E_RELATIVE_CONTAINER_MOUNT``,
``E_UNKNOWN_COMPONENT``, ``W_NO_TASKS``; then every target's options against its
provider's spec (:mod:`scalable.providers`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any

from scalable.manifest.issues import KeyPath, ManifestIssue
from scalable.manifest.model import ComponentSpec, TargetSpec, TaskSpec
from scalable.providers import PROVIDERS

__all__ = ["validate"]

#: Builds an issue at a key path: ``(code, path, message, level)``.
IssueAt = Callable[[str, KeyPath, str, str], ManifestIssue]


def _byte_parser() -> Callable[[Any], int] | None:
    """Dask's ``parse_bytes``, or ``None`` without Dask (sizes are then checked where Dask runs)."""
    try:
        from dask.utils import parse_bytes
    except ImportError:
        return None
    return parse_bytes


def validate(
    issue: IssueAt,
    targets: Mapping[str, TargetSpec],
    components: Mapping[str, ComponentSpec],
    tasks: Mapping[str, TaskSpec],
) -> list[ManifestIssue]:
    """Return every finding, errors and warnings, in Scalable's order."""
    found: list[ManifestIssue] = []
    if not targets:
        found.append(
            issue(
                "W_NO_TARGETS", ("targets",), "no targets; tasks run on the implicit local target (threads)", "warning"
            )
        )
    for name, target in targets.items():
        if target.provider not in PROVIDERS:
            found.append(
                issue(
                    "E_UNKNOWN_PROVIDER",
                    ("targets", name, "provider"),
                    f"unknown provider {target.provider!r}; use one of: {', '.join(PROVIDERS)}",
                    "error",
                )
            )
    parse_bytes = _byte_parser() if any(c.memory is not None for c in components.values()) else None
    for name, component in components.items():
        path: KeyPath = ("components", name)
        if component.memory is not None and parse_bytes is not None:
            try:
                size = parse_bytes(component.memory)
            except Exception:
                found.append(
                    issue(
                        "E_BAD_MEMORY",
                        (*path, "memory"),
                        f"memory {component.memory!r} is not a size; write it as Dask does, e.g. '4GB', '512MiB', '2 GiB'",
                        "error",
                    )
                )
            else:
                if size <= 0:
                    found.append(
                        issue(
                            "E_NONPOSITIVE_MEMORY",
                            (*path, "memory"),
                            f"memory {component.memory!r} must be more than 0",
                            "error",
                        )
                    )
        for host, container in component.mounts.items():
            where = (*path, "mounts", host)
            if not PurePosixPath(host).is_absolute():
                found.append(issue("E_RELATIVE_HOST_MOUNT", where, f"host path {host!r} must be absolute", "error"))
            if not PurePosixPath(container).is_absolute():
                found.append(
                    issue(
                        "E_RELATIVE_CONTAINER_MOUNT", where, f"container path {container!r} must be absolute", "error"
                    )
                )
    for name, task in tasks.items():
        if task.component not in components:
            known = ", ".join(sorted(components)) or "none defined"
            found.append(
                issue(
                    "E_UNKNOWN_COMPONENT",
                    ("tasks", name, "component"),
                    f"unknown component {task.component!r}; known components: {known}",
                    "error",
                )
            )
    if not tasks:
        found.append(issue("W_NO_TASKS", ("tasks",), "no tasks; events of tasks carry no component", "warning"))
    for name, target in targets.items():
        spec = PROVIDERS.get(target.provider)
        if spec is None:
            continue
        for problem in spec.validate(target.provider_options):
            found.append(issue(problem.code, ("targets", name, problem.option), problem.message, problem.level))
    return found
