"""Where a session's tasks run: one runner per target provider, chosen from a table by name.

A provider is a function ``start(target, ledger, deliver) -> Runner`` named in :data:`RUNNERS`
by its import path and imported when a session first submits a task. ``target`` is the
manifest's :class:`~scalable.manifest.TargetSpec` (name, provider, options); ``ledger`` is the
session's ledger on the client; ``deliver`` appends event lines that tasks recorded elsewhere
(by run id) to it, for providers whose workers share no filesystem with the client.

A runner's ``submit`` returns a future that completes only once the task's events are in the
run's stream, and ``shutdown(cancel=...)`` waits for running tasks and frees the workers.
"""

from __future__ import annotations

import concurrent.futures
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from scalable.errors import ConfigError
from scalable.ledger.log import Ledger
from scalable.manifest import TargetSpec
from scalable.targets.tasks import TaskEnv

__all__ = ["RUNNERS", "Runner", "TaskEnv", "start_runner"]

#: Target providers and the functions that start their runners (``package.module:function``);
#: ``None`` marks a provider that is not supported yet.
RUNNERS: Final[Mapping[str, str | None]] = {
    "local": "scalable.targets.local:start",
    "dask": "scalable.targets.dask:start",
    "kubernetes": None,
    "aws": None,
    "gcp": None,
}


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


def start_runner(
    target: TargetSpec, ledger: Ledger, deliver: Callable[[Mapping[str, Sequence[bytes]]], None]
) -> Runner:
    """Start the runner of ``target``'s provider.

    Raises:
        ConfigError: the provider is not supported yet, or has no runner.
        MissingDependencyError: the provider's package (``distributed``...) is not installed.
        SessionError: the provider's workers cannot be reached.
    """
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
    module, _, name = path.partition(":")
    start: Callable[..., Runner] = getattr(importlib.import_module(module), name)
    return start(target, ledger, deliver)
