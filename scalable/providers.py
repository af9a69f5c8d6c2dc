"""Target providers as data: each provider's options, their checks, defaults and error codes.

One :class:`ProviderSpec` per provider name in :data:`PROVIDERS`. The manifest checks every
target's options against its provider's spec (:meth:`ProviderSpec.validate`); whatever runs
a target reads the options with their defaults from :meth:`ProviderSpec.resolve` and checks
what depends on the machine it runs on with :meth:`ProviderSpec.check_ready`. The codes and
messages are Scalable's (``E_BAD_MAX_WORKERS``: "max_workers must be a positive integer");
an option a provider does not know is a warning (``W_UNKNOWN_<PROVIDER>_OPTION``), not an
error. Nothing here imports Dask or any cloud SDK.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "PROVIDERS",
    "RUNNABLE_PROVIDERS",
    "OptionIssue",
    "OptionSpec",
    "ProviderSpec",
]

#: A check returns a complaint ("max_workers must be a positive integer") or ``None``.
Check = Callable[[str, Any], str | None]


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _positive_int(name: str, value: Any) -> str | None:
    """An ``int`` of at least 1 (``True`` is not a number here)."""
    if type(value) is int and value >= 1:
        return None
    return f"{name} must be a positive integer, got {_shown(value)}"


def _boolean(name: str, value: Any) -> str | None:
    """``true`` or ``false``."""
    return None if type(value) is bool else f"{name} must be a boolean, got {_shown(value)}"


def _string(name: str, value: Any) -> str | None:
    """Any string."""
    return None if isinstance(value, str) else f"{name} must be a str, got {_shown(value)}"


def _string_or_int(name: str, value: Any) -> str | None:
    """A string (``"4GB"``) or a whole number of bytes."""
    return (
        None
        if isinstance(value, str) or type(value) is int
        else f"{name} must be a str or an integer, got {_shown(value)}"
    )


def _one_of(*choices: str) -> Check:
    """A string that, stripped and lower-cased, is one of ``choices``."""

    def check(name: str, value: Any) -> str | None:
        if isinstance(value, str) and value.strip().lower() in choices:
            return None
        return f"{name} must be one of {', '.join(choices)}, got {_shown(value)}"

    return check


def _exactly_one_of(*choices: str) -> Check:
    """A string equal to one of ``choices``."""

    def check(name: str, value: Any) -> str | None:
        return None if value in choices else f"{name} must be one of {', '.join(choices)}, got {_shown(value)}"

    return check


_WALLTIME: Final = re.compile(r"^\d{1,3}:\d{2}:\d{2}$")


def _walltime(name: str, value: Any) -> str | None:
    """``H:MM:SS`` with up to three digits of hours, as Slurm's ``--time`` takes it."""
    if isinstance(value, str) and _WALLTIME.match(value):
        return None
    return f"{name} must be a string like '02:00:00' (hours:minutes:seconds), got {_shown(value)}"


@dataclass(frozen=True)
class OptionIssue:
    """One finding about a target's options: ``level`` is ``error`` or ``warning``."""

    level: str
    code: str
    option: str
    message: str


@dataclass(frozen=True)
class OptionSpec:
    """One option a provider knows.

    Attributes:
        name: the option's key in the target.
        doc: what it does, for the docs.
        check: the value's check; ``None`` accepts any value.
        code: the error code of a failed check (Scalable's ``E_BAD_<NAME>`` by default).
        default: the value when the option is absent.
        warn: a check of an accepted value that gives a warning instead (``warn_code``).
        warn_code: the code of that warning.
        missing: ``(code, message)`` of a warning when the option is absent.
        env_fallback: an environment variable that stands in for the absent option.
        required_code: with ``env_fallback``: the error code when neither is set.
        excludes: options that cannot be given together with this one.
        excludes_reason: why, for the message.
    """

    name: str
    doc: str
    check: Check | None = None
    code: str = ""
    default: Any = None
    warn: Check | None = None
    warn_code: str = ""
    missing: tuple[str, str] | None = None
    env_fallback: str | None = None
    required_code: str = ""
    excludes: frozenset[str] = frozenset()
    excludes_reason: str = ""

    @property
    def error_code(self) -> str:
        """The code of a failed check."""
        return self.code or f"E_BAD_{self.name.upper()}"


@dataclass(frozen=True)
class ProviderSpec:
    """What a provider accepts, and whether this scalable can run its targets.

    Attributes:
        name: the provider name a target gives as ``provider``.
        summary: one line for the docs.
        options: the options it knows, by name.
        unknown_code: the warning code of an option it does not know.
        runnable: whether sessions can run tasks on its targets here.
    """

    name: str
    summary: str
    options: Mapping[str, OptionSpec]
    unknown_code: str
    runnable: bool = False
    exclusive_code: str = field(default="E_CONFLICTING_OPTIONS")

    def validate(self, options: Mapping[str, Any]) -> list[OptionIssue]:
        """Check ``options`` (without ``provider`` and ``overlay``) against this spec.

        Returns:
            Errors (a known option with a bad value, options that exclude each other) and
            warnings (an unknown option, an absent option worth having, a value with a
            caveat), in the order of ``options``, then of the spec.
        """
        issues: list[OptionIssue] = []
        for key, value in options.items():
            spec = self.options.get(key)
            if spec is None:
                known = ", ".join(self.options) or "none"
                issues.append(
                    OptionIssue(
                        "warning",
                        self.unknown_code,
                        key,
                        f"{self.name} targets do not use option {key!r}; it is ignored (known: {known})",
                    )
                )
                continue
            problem = spec.check(key, value) if spec.check is not None else None
            if problem is not None:
                issues.append(OptionIssue("error", spec.error_code, key, problem))
                continue
            caveat = spec.warn(key, value) if spec.warn is not None else None
            if caveat is not None:
                issues.append(OptionIssue("warning", spec.warn_code, key, caveat))
            clash = sorted(spec.excludes & set(options))
            if clash:
                issues.append(
                    OptionIssue(
                        "error",
                        self.exclusive_code,
                        clash[0],
                        f"{clash[0]} cannot be given with {key}: {spec.excludes_reason}; remove {', '.join(clash)}",
                    )
                )
        for spec in self.options.values():
            if spec.missing is not None and spec.name not in options:
                issues.append(OptionIssue("warning", spec.missing[0], spec.name, spec.missing[1]))
        return issues

    def check_ready(self, options: Mapping[str, Any], env: Mapping[str, str]) -> list[OptionIssue]:
        """Errors that depend on the machine: a required option absent with no variable standing in."""
        return [
            OptionIssue(
                "error",
                spec.required_code,
                spec.name,
                f"{spec.name} is required for {self.name} targets: set it in the target or set {spec.env_fallback}",
            )
            for spec in self.options.values()
            if spec.env_fallback and spec.name not in options and not env.get(spec.env_fallback)
        ]

    def resolve(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Return every known option: its value in ``options``, else its default."""
        return {name: options.get(name, spec.default) for name, spec in self.options.items()}


def _spec(name: str, summary: str, unknown_code: str, *options: OptionSpec, runnable: bool = False) -> ProviderSpec:
    return ProviderSpec(name, summary, {o.name: o for o in options}, unknown_code, runnable)


def _deferred_containers(name: str, value: Any) -> str | None:
    if value.strip().lower() == "none":
        return None
    return f"{name}: {value!r} is accepted but containers are not started on local targets; tasks run without one"


_CLUSTER_OPTIONS: Final = frozenset({"n_workers", "threads_per_worker", "processes", "memory_limit"})

#: Every provider by name. ``runnable`` says which ones sessions can run tasks on.
PROVIDERS: Final[Mapping[str, ProviderSpec]] = {
    spec.name: spec
    for spec in (
        _spec(
            "local",
            "tasks on this machine: a pool of threads, or of processes",
            "W_UNKNOWN_LOCAL_OPTION",
            OptionSpec("max_workers", "number of workers of the pool", _positive_int),
            OptionSpec("threads_per_worker", "threads of each worker", _positive_int, default=1),
            OptionSpec(
                "processes",
                "true for worker processes, false for threads",
                _boolean,
                code="E_BAD_PROCESSES_FLAG",
                default=False,
            ),
            OptionSpec(
                "containers",
                "none, auto or docker",
                _one_of("none", "auto", "docker"),
                code="E_BAD_CONTAINERS_MODE",
                default="none",
                warn=_deferred_containers,
                warn_code="W_LOCAL_CONTAINERS_DEFERRED",
            ),
            OptionSpec("dashboard_address", "address of a Dask dashboard"),
            runnable=True,
        ),
        _spec(
            "dask",
            "tasks on a Dask cluster: a running scheduler, or a LocalCluster scalable starts",
            "W_UNKNOWN_DASK_OPTION",
            OptionSpec(
                "address",
                "the address of a running scheduler; its own workers are used",
                _string,
                excludes=_CLUSTER_OPTIONS,
                excludes_reason="it configures a cluster scalable starts, and with address the scheduler's own workers are used",
            ),
            OptionSpec("timeout", "seconds to wait for the scheduler", _positive_int, default=30),
            OptionSpec("n_workers", "workers of the LocalCluster", _positive_int, default=2),
            OptionSpec("threads_per_worker", "threads of each worker", _positive_int, default=1),
            OptionSpec(
                "processes",
                "worker processes (true) or threads (false)",
                _boolean,
                code="E_BAD_PROCESSES_FLAG",
                default=True,
            ),
            OptionSpec(
                "memory_limit", "memory of each worker: '4GB', bytes, or 'auto'", _string_or_int, default="auto"
            ),
            runnable=True,
        ),
        _spec(
            "slurm",
            "tasks on Dask workers submitted as Slurm jobs",
            "W_UNKNOWN_SLURM_OPTION",
            OptionSpec("queue", "the Slurm partition", _string),
            OptionSpec("account", "the account jobs are charged to", _string),
            OptionSpec("walltime", "time limit of each worker job, H:MM:SS", _walltime),
            OptionSpec("interface", "network interface the workers and scheduler talk over", _string),
            OptionSpec(
                "comm_port",
                "port of the scheduler",
                _positive_int,
                env_fallback="COMM_PORT",
                required_code="E_MISSING_COMM_PORT",
            ),
            OptionSpec("logs_location", "directory of the worker jobs' logs", _string),
            OptionSpec("name", "name of the worker jobs", _string),
            OptionSpec("suppress_logs", "true to discard the worker jobs' logs", _boolean, default=False),
            OptionSpec("container_runtime", "apptainer or docker", _one_of("apptainer", "docker")),
            OptionSpec("jobs", "worker jobs of each component (ours)", _positive_int, default=1),
            runnable=True,
        ),
        _spec(
            "kubernetes",
            "Dask on Kubernetes",
            "W_UNKNOWN_K8S_OPTION",
            OptionSpec("namespace", "the namespace", default="default"),
            OptionSpec(
                "image",
                "the worker image",
                missing=("W_MISSING_IMAGE", "image is not set; the provider's default image would be used"),
            ),
            OptionSpec("n_workers", "number of workers", default=1),
            OptionSpec("worker_service_account", "service account of the workers"),
            OptionSpec("adaptive", "adaptive scaling: {minimum, maximum}", default={"minimum": 1, "maximum": 10}),
            OptionSpec("resources", "resource requests and limits"),
            OptionSpec("env", "environment of the workers"),
            OptionSpec("tolerations", "pod tolerations"),
            OptionSpec("node_selector", "pod node selector"),
            OptionSpec("scheduler_memory", "memory of the scheduler"),
            OptionSpec("scheduler_cpu", "CPUs of the scheduler"),
        ),
        _spec(
            "aws",
            "Dask on AWS (Fargate or EC2)",
            "W_UNKNOWN_AWS_OPTION",
            OptionSpec("region", "the AWS region", default="us-east-1"),
            OptionSpec("instance_type", "the instance type", default="m5.xlarge"),
            OptionSpec(
                "cluster_type",
                "fargate or ec2",
                _exactly_one_of("fargate", "ec2"),
                code="E_INVALID_CLUSTER_TYPE",
                default="fargate",
            ),
            OptionSpec("image", "the worker image"),
            OptionSpec("n_workers", "number of workers", default=1),
            OptionSpec("worker_cpu", "CPU units of each worker"),
            OptionSpec("worker_mem", "memory of each worker"),
            OptionSpec("vpc", "the VPC"),
            OptionSpec("subnets", "the subnets"),
            OptionSpec("security_groups", "the security groups"),
            OptionSpec("execution_role_arn", "the task execution role"),
            OptionSpec("task_role_arn", "the task role"),
            OptionSpec("scheduler_timeout", "idle timeout of the scheduler"),
            OptionSpec("environment", "environment of the workers"),
            OptionSpec("tags", "resource tags"),
            OptionSpec("spot", "use spot capacity"),
            OptionSpec("adaptive", "adaptive scaling"),
        ),
        _spec(
            "gcp",
            "Dask on Google Cloud",
            "W_UNKNOWN_GCP_OPTION",
            OptionSpec("region", "the region"),
            OptionSpec(
                "project_id", "the Google Cloud project", missing=("W_MISSING_PROJECT_ID", "project_id is not set")
            ),
            OptionSpec("instance_type", "the instance type"),
            OptionSpec("image", "the worker image"),
            OptionSpec("n_workers", "number of workers"),
            OptionSpec("network", "the VPC network"),
            OptionSpec("zone", "the zone"),
            OptionSpec("service_account", "the service account"),
            OptionSpec("machine_type", "the machine type"),
            OptionSpec("adaptive", "adaptive scaling"),
        ),
    )
}

#: Providers whose targets sessions can run tasks on.
RUNNABLE_PROVIDERS: Final = tuple(name for name, spec in PROVIDERS.items() if spec.runnable)
