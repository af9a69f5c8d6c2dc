"""The ``slurm`` provider: tasks on Dask workers submitted as Slurm jobs (dask-jobqueue's ``SLURMCluster``).

As in Scalable, each component a task refers to gets worker jobs of its own (``jobs`` of
them, default one), sized to the component: ``--cpus-per-task`` its ``cpus`` and ``--mem``
its ``memory`` (else 1 GiB per cpu), with its ``env`` exported and its ``preload_script``
sourced before the worker starts. The worker offers Dask resources ``cpus`` and ``memory``
of that size plus the component's tag, and each task of the component asks for its
component's share, so it runs on its component's workers only. Tasks of no component run on
any worker (with no component in the manifest, ``jobs`` workers of 1 cpu are started).

The scheduler runs in the client's process on ``comm_port`` (or ``COMM_PORT``); workers reach
it over ``interface``. Before any job is queued, ``sbatch --test-only`` checks each worker job,
so a queue, account, walltime or size Slurm refuses fails the first ``submit`` with Slurm's
own words. Events raised in the workers come back as on the ``dask`` target.

A task is not retried elsewhere when its worker's job ends (``scancel``, walltime,
preemption, node failure): Dask reports the task's worker as lost, and the task fails with
:class:`~scalable.errors.WorkerLostError` and a ``task/failed`` event. A task still waiting
fails the same way once no job of its component is left in the queue to run it.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from typing import Any, Final

from scalable.errors import ConfigError, MissingDependencyError, SessionError
from scalable.logs import mask_secrets
from scalable.manifest import ComponentSpec, TargetSpec
from scalable.providers import PROVIDERS
from scalable.targets import COMPONENT_KEYS, Deployment, component_keys
from scalable.targets.dask import DaskRunner, component_resources, import_distributed

__all__ = ["ALIVE", "recorded_only", "start"]

#: Slurm job states in which a job may still run a worker.
ALIVE: Final = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED"}
)
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SLUG: Final = re.compile(r"[^A-Za-z0-9_.-]+")
#: A component without ``memory`` gets this much per cpu.
DEFAULT_MEMORY_PER_CPU: Final = 2**30


def _import_jobqueue(target: TargetSpec) -> Any:
    try:
        return importlib.import_module("dask_jobqueue")
    except ImportError:
        raise MissingDependencyError(
            f"target {target.name!r} submits Dask workers as Slurm jobs with dask-jobqueue; "
            "install it with: pip install 'scalable[slurm]'"
        ) from None


def _comm_port(target: TargetSpec, options: Mapping[str, Any]) -> int:
    """The scheduler's port: the ``comm_port`` option, else ``COMM_PORT``."""
    if options.get("comm_port"):
        return int(options["comm_port"])
    text = os.environ.get("COMM_PORT", "")
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(
            f"target {target.name!r}: COMM_PORT must be a port number, got {text!r}; "
            "set it to the port the scheduler listens on, or give the target comm_port"
        )
    return int(text)


def _prologue(target: TargetSpec, name: str, spec: ComponentSpec) -> list[str]:
    """Shell lines that run in a worker job before the worker: the component's env, its preload script."""
    lines = []
    for key, value in spec.env.items():
        if not _ENV_NAME.fullmatch(key):
            raise ConfigError(
                f"target {target.name!r}: component {name!r} sets env {key!r}, which is not a variable name "
                "a job script can export (letters, digits and _, not starting with a digit)"
            )
        lines.append(f"export {key}={shlex.quote(value)}")
    if spec.preload_script:
        lines.append(f". {shlex.quote(spec.preload_script)}")
    return lines


class _Groups:
    """The worker groups of a Slurm target: a group per component, its workers' names and job options."""

    def __init__(self, deployment: Deployment, template: Mapping[str, Any]) -> None:
        from dask.utils import parse_bytes

        target = deployment.target
        components = [(n, deployment.components[n]) for n in sorted(deployment.workers)]
        self.jobs: dict[str | None, dict[str, Any]] = {}  # options of each group's jobs
        self.names: dict[str | None, list[str]] = {}  # worker names of each group
        self.resources: dict[str, dict[str, float]] = {}  # what a task of each component asks for
        if not components:
            count = int(PROVIDERS["slurm"].resolve(target.provider_options)["jobs"])
            self._add(None, "worker", template, 1, DEFAULT_MEMORY_PER_CPU, [], count, {})
            return
        for index, (name, spec) in enumerate(components):
            memory = parse_bytes(spec.memory) if spec.memory else spec.cpus * DEFAULT_MEMORY_PER_CPU
            tag = f"component-{index}-{_SLUG.sub('-', name).strip('-') or 'x'}"
            wanted = {**component_resources(spec), "memory": memory, tag: 1}
            self.resources[name] = wanted
            prologue = _prologue(target, name, spec)
            self._add(name, tag, template, spec.cpus, memory, prologue, deployment.workers[name], {tag: 1})

    def _add(
        self,
        component: str | None,
        prefix: str,
        template: Mapping[str, Any],
        cpus: int,
        memory: int,
        prologue: list[str],
        count: int,
        tags: Mapping[str, int],
    ) -> None:
        offered = {"cpus": cpus, "memory": memory, **tags}
        resources = ",".join(f"{k}={v}" for k, v in offered.items())
        self.jobs[component] = {
            **template,
            "cores": cpus,
            "memory": f"{memory}B",
            "job_script_prologue": [*(template.get("job_script_prologue") or []), *prologue],
            "worker_extra_args": [*(template.get("worker_extra_args") or []), "--resources", resources],
        }
        self.names[component] = [f"{prefix}-{i}" for i in range(count)]


class _SlurmWorkers:
    """What the runner asks about the target's Slurm jobs: which job a worker is, which groups are gone."""

    def __init__(self, cluster: Any, groups: _Groups) -> None:
        self._cluster = cluster
        self._groups = groups

    def job_id(self, worker: str) -> str | None:
        job = self._cluster.workers.get(worker)
        return str(job.job_id) if job is not None and getattr(job, "job_id", None) else None

    def describe(self, address: str, name: str) -> str:
        job = self.job_id(name)
        return f"worker {name or address} (Slurm job {job})" if job else f"worker {name or address}"

    def stranded(self, components: set[str | None]) -> dict[str | None, str]:
        """Components of waiting tasks whose workers are all gone and whose jobs all left the queue."""
        connected = {str(w.get("name")) for w in dict(self._cluster.scheduler_info.get("workers", {})).values()}
        suspects: dict[str | None, dict[str, str]] = {}
        for component in components:
            names = self._groups.names.get(component) or [n for ns in self._groups.names.values() for n in ns]
            if any(n in connected for n in names):
                continue
            jobs = [self.job_id(n) for n in names]
            if any(j is None for j in jobs):
                continue  # a job is still being submitted
            suspects[component] = {n: str(j) for n, j in zip(names, jobs, strict=True)}
        if not suspects:
            return {}
        states = _job_states(sorted({j for queued in suspects.values() for j in queued.values()}))
        reasons: dict[str | None, str] = {}
        for component, queued in suspects.items():
            if any(states.get(j) in ALIVE for j in queued.values()):
                continue
            ended = ", ".join(f"{j} {states.get(j, 'gone').lower()}" for j in queued.values())
            whose = f"component {component!r}" if component is not None else "the target"
            reasons[component] = (
                f"every worker job of {whose} ended (Slurm job {ended}) and no worker is left to run it"
            )
        return reasons


def _job_states(job_ids: list[str]) -> dict[str, str]:
    """The state of each job still known to Slurm (``squeue``); jobs it no longer knows are absent."""
    result = subprocess.run(
        ["squeue", "-h", "-o", "%i %T", "-j", ",".join(job_ids)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0 and "Invalid job id" not in result.stderr:
        raise SessionError(f"squeue failed: {result.stderr.strip() or result.returncode}")
    states = {}
    for line in result.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def _check_jobs(target: TargetSpec, job_cls: Any, groups: _Groups) -> None:
    """Ask Slurm whether it would accept each group's worker job (``sbatch --test-only``).

    Raises:
        ConfigError: Slurm refuses one (its message is quoted).
        SessionError: ``sbatch`` cannot be run here.
    """
    for component, options in groups.jobs.items():
        script = job_cls("tcp://127.0.0.1:1", name="check", **options).job_script()
        with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="scalable-job-") as fh:
            fh.write(script)
            fh.flush()
            try:
                result = subprocess.run(
                    ["sbatch", "--test-only", fh.name], capture_output=True, text=True, timeout=60, check=False
                )
            except OSError as exc:
                raise SessionError(
                    f"target {target.name!r}: cannot run sbatch ({exc.strerror}); run the session where Slurm's "
                    "commands are installed and configured (a login node)"
                ) from None
        if result.returncode != 0:
            what = f"the worker job of component {component!r}" if component is not None else "the worker job"
            said = " ".join(result.stderr.replace("sbatch: error:", "").split()) or f"exit {result.returncode}"
            raise ConfigError(
                f"target {target.name!r}: Slurm refuses {what}: {said}; check the target's queue, account "
                "and walltime, and the component's cpus and memory"
            )


def start(deployment: Deployment) -> DaskRunner:
    """Start a ``SLURMCluster``, queue the worker jobs of every component, and connect to it.

    Raises:
        MissingDependencyError: ``distributed`` or ``dask-jobqueue`` is not installed.
        ConfigError: Slurm refuses a worker job, or a component's env cannot be exported.
        SessionError: the scheduler cannot start, or ``sbatch`` cannot be run.
    """
    target = deployment.target
    dist = import_distributed(target, "slurm")
    jobqueue = _import_jobqueue(target)
    options = PROVIDERS["slurm"].resolve(target.provider_options)
    port = _comm_port(target, options)
    template: dict[str, Any] = {
        "queue": options["queue"],
        "account": options["account"],
        "walltime": options["walltime"],
        "interface": options["interface"],
        "job_name": options["name"] or "scalable-worker",
        "processes": 1,
        "cores": 1,
        "memory": "1GiB",
        "python": sys.executable,
        "job_script_prologue": [],
        "worker_extra_args": [],
        "job_extra_directives": [],
        # Without a walltime the partition's default time limit applies, not dask-jobqueue's 30 minutes.
        "job_directives_skip": [] if options["walltime"] else ["#SBATCH -t "],
    }
    if options["suppress_logs"]:
        template["job_extra_directives"] = ["-o /dev/null", "-e /dev/null"]
    elif options["logs_location"]:
        template["log_directory"] = options["logs_location"]
    groups = _Groups(deployment, template)
    _check_jobs(target, jobqueue.SLURMCluster.job_cls, groups)
    try:
        cluster = jobqueue.SLURMCluster(
            scheduler_options={"port": port, "dashboard_address": ":0"}, silence_logs="error", **template
        )
    except OSError as exc:
        raise SessionError(
            f"target {target.name!r}: the scheduler cannot listen on comm_port {port}: {mask_secrets(str(exc))}; "
            "choose a free port"
        ) from None
    try:
        # A task whose worker's job ends is failed, not retried: the job was cancelled, ran out
        # of walltime or was preempted, and another job of the component may not exist.
        cluster.scheduler.allowed_failures = 0
        spec_cls = cluster.new_spec["cls"]
        for component, names in groups.names.items():
            for worker in names:
                cluster.worker_spec[worker] = {"cls": spec_cls, "options": groups.jobs[component]}
        cluster.scale(len(cluster.worker_spec))
        client = dist.Client(cluster, set_as_default=False)
    except BaseException:
        with contextlib.suppress(Exception):
            cluster.close()
        raise
    workers = _SlurmWorkers(cluster, groups)
    describe: Callable[[str, str], str] = workers.describe
    return DaskRunner(
        deployment, client, cluster, resources=groups.resources, describe_worker=describe, stranded=workers.stranded
    )


def recorded_only(target: TargetSpec, components: Mapping[str, ComponentSpec]) -> list[str]:
    """Keys a ``slurm`` target records without acting on them: containers (no runtime starts them)."""
    containers = [k for k in COMPONENT_KEYS if k in ("image", "runtime", "mounts")]
    return [f"targets.{target.name}.container_runtime", *component_keys(components, containers)]
