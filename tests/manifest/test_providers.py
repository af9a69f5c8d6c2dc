"""Each provider's option set as Scalable has it, warnings once for what a provider ignores, and target choice."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from scalable.manifest import ManifestWarning, load_manifest, parse_manifest
from scalable.providers import PROVIDERS, RUNNABLE_PROVIDERS
from tests.helpers import run_python

HEAD = "version: 1\nproject: {name: x}\n"

#: Scalable's option sets (its provider modules), and ours for dask.
OPTION_SETS = {
    "local": {"max_workers", "threads_per_worker", "processes", "containers", "dashboard_address"},
    "slurm": {
        "queue",
        "account",
        "walltime",
        "interface",
        "comm_port",
        "logs_location",
        "name",
        "suppress_logs",
        "container_runtime",
        "jobs",
    },
    "kubernetes": {
        "namespace",
        "image",
        "n_workers",
        "worker_service_account",
        "adaptive",
        "resources",
        "env",
        "tolerations",
        "node_selector",
        "scheduler_memory",
        "scheduler_cpu",
    },
    "aws": {
        "region",
        "instance_type",
        "cluster_type",
        "image",
        "n_workers",
        "worker_cpu",
        "worker_mem",
        "vpc",
        "subnets",
        "security_groups",
        "execution_role_arn",
        "task_role_arn",
        "scheduler_timeout",
        "environment",
        "tags",
        "spot",
        "adaptive",
    },
    "gcp": {
        "region",
        "project_id",
        "instance_type",
        "image",
        "n_workers",
        "network",
        "zone",
        "service_account",
        "machine_type",
        "adaptive",
    },
    "dask": {"address", "timeout", "n_workers", "threads_per_worker", "processes", "memory_limit"},
}


def test_each_provider_knows_scalables_options() -> None:
    """The provider table has exactly Scalable's providers (plus dask) and each one's option set."""
    assert {name: set(spec.options) for name, spec in PROVIDERS.items()} == OPTION_SETS
    assert RUNNABLE_PROVIDERS == ("local", "dask", "slurm")


def test_defaults_are_scalables() -> None:
    """resolve() fills what a target leaves out with the provider's defaults."""
    assert PROVIDERS["local"].resolve({"max_workers": 3}) == {
        "max_workers": 3,
        "threads_per_worker": 1,
        "processes": False,
        "containers": "none",
        "dashboard_address": None,
    }
    slurm = PROVIDERS["slurm"].resolve({"queue": "short"})
    assert slurm["queue"] == "short" and slurm["suppress_logs"] is False and slurm["walltime"] is None
    k8s = PROVIDERS["kubernetes"].resolve({})
    assert (k8s["namespace"], k8s["n_workers"], k8s["adaptive"]) == ("default", 1, {"minimum": 1, "maximum": 10})
    aws = PROVIDERS["aws"].resolve({})
    assert (aws["region"], aws["cluster_type"], aws["n_workers"], aws["instance_type"]) == (
        "us-east-1",
        "fargate",
        1,
        "m5.xlarge",
    )
    dask = PROVIDERS["dask"].resolve({"address": "tcp://h:1"})
    assert (dask["address"], dask["timeout"]) == ("tcp://h:1", 30)


def test_the_provider_table_imports_no_dask() -> None:
    """scalable.providers and scalable.manifest import neither dask nor distributed."""
    proc = run_python("""
        import sys
        import scalable.providers, scalable.manifest
        print([m for m in ("dask", "distributed", "dask_jobqueue") if m in sys.modules])
    """)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("target", "code", "line", "key"),
    [
        ("  t:\n    provider: local\n    gpus: 1\n", "W_UNKNOWN_LOCAL_OPTION", 6, "targets.t.gpus"),
        (
            "  t:\n    provider: slurm\n    comm_port: 1\n    partition: short\n",
            "W_UNKNOWN_SLURM_OPTION",
            7,
            "targets.t.partition",
        ),
        ("  t:\n    provider: dask\n    scheduler: x\n", "W_UNKNOWN_DASK_OPTION", 6, "targets.t.scheduler"),
        (
            "  t:\n    provider: kubernetes\n    image: i\n    replicas: 2\n",
            "W_UNKNOWN_K8S_OPTION",
            7,
            "targets.t.replicas",
        ),
        ("  t:\n    provider: aws\n    zone: a\n", "W_UNKNOWN_AWS_OPTION", 6, "targets.t.zone"),
        ("  t:\n    provider: gcp\n    project_id: p\n    vpc: v\n", "W_UNKNOWN_GCP_OPTION", 7, "targets.t.vpc"),
        ("  t:\n    provider: kubernetes\n", "W_MISSING_IMAGE", 4, "targets.t.image"),
        ("  t:\n    provider: gcp\n", "W_MISSING_PROJECT_ID", 4, "targets.t.project_id"),
        (
            "  t:\n    provider: local\n    containers: Docker\n",
            "W_LOCAL_CONTAINERS_DEFERRED",
            6,
            "targets.t.containers",
        ),
    ],
)
def test_what_a_provider_ignores_warns_once(isolated: Path, target: str, code: str, line: int, key: str) -> None:
    """The manifest loads; one ManifestWarning names file, line, code and key; loading it again does not repeat it."""
    path = isolated / "scalable.yaml"
    path.write_text(HEAD + "targets:\n" + target)
    with pytest.warns(ManifestWarning) as record:
        manifest = load_manifest(path)
    assert [(w.code, w.line, w.key, w.level) for w in manifest.warnings] == [
        ("W_NO_TASKS", 1, "tasks", "warning"),
        (code, line, key, "warning"),
    ]
    assert [str(w.message) for w in record] == [str(manifest.warnings[1])]
    assert str(record[0].message).startswith(f"{path}:{line}: {code} {key}: ")
    assert record[0].filename == __file__  # points at the code that loaded the manifest
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = load_manifest(path)
    assert again.warnings == manifest.warnings


def test_notes_are_kept_but_not_emitted() -> None:
    """W_NO_TARGETS and W_NO_TASKS are on manifest.warnings (for `manifest check`) but raise no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manifest = parse_manifest(HEAD)
    assert [(w.code, w.key) for w in manifest.warnings] == [("W_NO_TARGETS", "targets"), ("W_NO_TASKS", "tasks")]


def test_a_provider_validates_every_target_not_only_the_chosen_one(isolated: Path) -> None:
    """A bad option on a target nobody uses yet still fails the load: manifests are checked whole."""
    from scalable.errors import ManifestValidationError

    text = HEAD + "targets:\n  local: {provider: local}\n  spare: {provider: local, max_workers: 0}\n"
    with pytest.raises(ManifestValidationError, match=r"E_BAD_MAX_WORKERS targets\.spare\.max_workers"):
        parse_manifest(text, target_name="local")


TARGETS = """\
targets:
  cluster: {provider: dask}
  mine: {provider: local, max_workers: 2}
  batch: {provider: slurm, comm_port: 8786}
  other-hpc: {provider: slurm, comm_port: 8787}
"""


def test_the_default_target_is_chosen_as_scalable_chooses() -> None:
    """Without a name: the target named local, else the first local provider, else the first; slurm inside a Slurm job."""
    manifest = parse_manifest(HEAD + TARGETS)
    assert manifest.target(env={}).name == "mine"
    assert manifest.check_target(env={"SLURM_JOB_ID": "42"}).name == "batch"
    assert manifest.check_target(env={"SLURM_CLUSTER_NAME": "deception"}).name == "batch"
    with_named = parse_manifest(
        HEAD + TARGETS + "  slurm: {provider: slurm, comm_port: 1}\n  local: {provider: local}\n"
    )
    assert with_named.check_target(env={"SLURM_JOB_ID": "42"}).name == "slurm"
    assert with_named.target(env={}).name == "local"
    no_local = parse_manifest(HEAD + "targets:\n  cluster: {provider: dask}\n")
    assert no_local.target(env={"SLURM_JOB_ID": "1"}).name == "cluster"
    implicit = parse_manifest(HEAD)
    assert implicit.target(env={}) == implicit.target("local") and implicit.target().provider == "local"
    assert implicit.target().options == {}


def test_every_option_and_code_is_documented() -> None:
    """docs/manifest.rst names every provider option and every error and warning code the manifest can give."""
    from tests.helpers import ROOT

    doc = (ROOT / "docs" / "manifest.rst").read_text()
    sources = "".join(
        p.read_text() for p in [ROOT / "scalable" / "providers.py", *(ROOT / "scalable" / "manifest").glob("*.py")]
    )
    codes = set(re.findall(r'"([EW]_[A-Z0-9_]+)"', sources))
    for spec in PROVIDERS.values():
        codes.add(spec.unknown_code)
        for option in spec.options.values():
            assert f"``{option.name}``" in doc, (spec.name, option.name)
            codes.update(c for c in (option.warn_code, option.required_code, option.missing and option.missing[0]) if c)
            if option.check is not None:
                codes.add(option.error_code)
    assert len(codes) > 40
    assert sorted(c for c in codes if f"``{c}``" not in doc) == []
