"""Where a session's tasks run: one runner per target provider, chosen from a table by name.

A provider is a module named in :data:`RUNNERS` by its import path, imported when a session
first submits a task. It has two functions:

* ``start(deployment) -> Runner`` starts the runner of a :class:`Deployment`: the manifest's
  :class:`~scalable.manifest.TargetSpec` (name, provider, options), the components with
  their resources, the session's ledger on the client, and two ways back to it: ``deliver``
  appends event lines that tasks recorded elsewhere (by run id), for providers whose workers
  share no filesystem with the client, and ``lost`` records ``task/failed`` for a task that
  never came back (its worker died, its job was cancelled).
* ``recorded_only(target, components) -> list[str]`` names the keys of the manifest the
  provider checks and records but cannot act on (``components.model.image``), which
  ``run/started`` records.

A runner's ``submit`` returns a future that completes only once the task's events are in the
run's stream (or, for a lost task, its ``task/failed``), and ``shutdown(cancel=...)`` waits
for running tasks and frees the workers.
"""

from __future__ import annotations

import concurrent.futures
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Final, Protocol

from scalable.errors import ConfigError
from scalable.ledger import Ledger
from scalable.manifest import ComponentSpec, Manifest, TargetSpec
from scalable.providers import PROVIDERS
from scalable.targets.tasks import TaskEnv

__all__ = [
    "COMPONENT_KEYS",
    "RUNNERS",
    "Deliver",
    "Deployment",
    "Lost",
    "Runner",
    "TaskEnv",
    "component_keys",
    "recorded_only",
    "scale_plan",
    "start_runner",
]

#: Target providers and the modules of their runners; ``None`` marks a provider that is not
#: supported yet.
RUNNERS: Final[Mapping[str, str | None]] = {
    "local": "scalable.targets.local",
    "dask": "scalable.targets.dask",
    "slurm": "scalable.targets.slurm",
    "kubernetes": None,
    "aws": None,
    "gcp": None,
}

#: The keys of a component that say how its tasks run (``description`` and ``tags`` only label it).
COMPONENT_KEYS: Final = ("image", "runtime", "cpus", "memory", "mounts", "env", "preload_script")

#: Appends event lines recorded elsewhere to the client's ledger, by run id.
Deliver = Callable[[Mapping[str, Sequence[bytes]]], None]
#: Records ``task/failed`` on the client for a task that never came back: its env, the error
#: and the seconds since it was submitted.
Lost = Callable[[TaskEnv, BaseException, float], None]


def _no_delivery(lines: Mapping[str, Sequence[bytes]]) -> None:
    raise AssertionError("this runner's tasks append to the run themselves")


def _not_recorded(env: TaskEnv, error: BaseException, duration_s: float) -> None:
    """Record nothing (runners started outside a session)."""


@dataclass(frozen=True)
class Deployment:
    """What a runner is started with.

    Attributes:
        target: the target (its name is used in messages; its options configure the workers).
        ledger: the session's ledger on the client.
        components: the manifest's components by name.
        workers: worker groups to start, by component (Scalable's ``workers_by_tag``:
            one for each component a task refers to); providers without worker groups ignore it.
        deliver: appends event lines recorded elsewhere to the client's ledger.
        lost: records ``task/failed`` for a task that never came back.
    """

    target: TargetSpec
    ledger: Ledger
    components: Mapping[str, ComponentSpec] = field(default_factory=dict)
    workers: Mapping[str, int] = field(default_factory=dict)
    deliver: Deliver = _no_delivery
    lost: Lost = _not_recorded


class Runner(Protocol):
    """Runs the tasks of one target."""

    def submit(
        self, env: TaskEnv, fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> concurrent.futures.Future[Any]:
        """Start the task; its future completes once its events are in the run's stream."""
        ...

    def shutdown(self, *, cancel: bool) -> None:
        """Wait for running tasks (cancelling queued ones with ``cancel``) and free the workers."""
        ...


def _module(target: TargetSpec) -> ModuleType:
    supported = ", ".join(name for name, path in RUNNERS.items() if path is not None)
    if target.provider not in RUNNERS:
        raise ConfigError(
            f"target {target.name!r}: no runner for provider {target.provider!r}; use one of: {supported}"
        )
    path = RUNNERS[target.provider]
    if path is None:
        raise ConfigError(
            f"target {target.name!r}: provider {target.provider!r} is not supported yet; use one of: {supported}"
        )
    return importlib.import_module(path)


def start_runner(deployment: Deployment) -> Runner:
    """Start the runner of the deployment's target provider.

    Raises:
        ConfigError: the provider is not supported yet or has no runner, or the components
            ask for what the target cannot give.
        MissingDependencyError: the provider's package (``distributed``...) is not installed.
        SessionError: the provider's workers cannot be reached.
    """
    start: Callable[[Deployment], Runner] = _module(deployment.target).start
    return start(deployment)


def recorded_only(target: TargetSpec, manifest: Manifest | None) -> list[str]:
    """Return the keys the manifest sets that ``target``'s provider records but does not act on.

    Keys are dotted paths (``targets.local.dashboard_address``, ``components.model.image``),
    sorted; only keys the manifest gives are named.
    """
    if manifest is None:
        return []
    given: Callable[[TargetSpec, Mapping[str, ComponentSpec]], list[str]] = _module(target).recorded_only
    written = manifest.raw.get("components") or {}
    components = {name: spec for name, spec in manifest.components.items() if isinstance(written.get(name), Mapping)}
    keys = given(target, components)
    present = {
        f"components.{name}.{key}" for name, body in written.items() if isinstance(body, Mapping) for key in body
    }
    present |= {f"targets.{target.name}.{key}" for key in target.provider_options}
    return sorted(k for k in keys if k in present)


def component_keys(components: Mapping[str, ComponentSpec], keys: Sequence[str]) -> list[str]:
    """``components.<name>.<key>`` for every component and key (for ``recorded_only``)."""
    return [f"components.{name}.{key}" for name in components for key in keys]


def scale_plan(manifest: Manifest | None, target: TargetSpec) -> dict[str, Any]:
    """Return Scalable's plan of a run on ``target`` (its ``plan.json``).

    One worker group for each component a task refers to (``jobs`` of them on a ``slurm``
    target, else one), with the component's resources and the target's ``walltime``.
    """
    options = PROVIDERS[target.provider].resolve(target.provider_options)
    jobs = options.get("jobs") or 1
    walltime = options.get("walltime")
    tasks = manifest.tasks if manifest is not None else {}
    components = manifest.components if manifest is not None else {}
    used = sorted({t.component for t in tasks.values() if t.component in components})
    return {
        "version": 1,
        "target": target.name,
        "provider": target.provider,
        "manifest_lock": manifest.lock if manifest is not None else None,
        "task_to_component": {name: t.component for name, t in sorted(tasks.items())},
        "scale_plan": {
            "workers_by_tag": {c: jobs for c in used},
            "resources_by_tag": {
                c: {
                    "cpus": components[c].cpus,
                    "memory": components[c].memory,
                    "walltime": walltime if isinstance(walltime, str) else None,
                    "gpus": None,
                }
                for c in used
            },
        },
    }
