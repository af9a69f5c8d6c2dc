"""Scalable-style manifests, written from Scalable's schema v1: resolved values and locks as Scalable computes them.

Each expected document below is written out by hand from the facts of Scalable's parser
(variables expanded in string values only, one overlay deep-merged with lists replaced, the
``overlays`` key dropped, the chosen target's ``overlay`` key popped); the expected lock is
Scalable's formula over it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from scalable.manifest import (
    ComponentSpec,
    ProjectSpec,
    TargetSpec,
    TaskSpec,
    deep_merge,
    expand_env_vars,
    load_manifest,
    parse_manifest,
)

ENV = {"SLURM_ACCOUNT": "gcims", "EMPTY": "", "HOME": "/home/modeller"}


def scalable_lock(raw: dict[str, Any]) -> str:
    """compute_manifest_lock of Scalable: SHA-256 of sorted, compact JSON."""
    return hashlib.sha256(
        json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()


def write(directory: Path, text: str, name: str = "scalable.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


FULL = """\
# every key of schema v1
version: 1
project:
  name: "  gcam-runs  "
  default_storage: ${STORE:-./artifacts}
  local_cache: .scalable/cache
targets:
  local:
    provider: local
    max_workers: 2
    threads_per_worker: 1
    processes: false
    containers: none
    dashboard_address: ":0"
  hpc:
    provider: slurm
    queue: short
    account: ${SLURM_ACCOUNT}
    walltime: "02:00:00"
    interface: ib0
    comm_port: 8786
    logs_location: ${HOME}/logs
    name: gcam-worker
    suppress_logs: true
    container_runtime: Apptainer
    overlay: hpc
  cluster: {provider: dask, n_workers: 2, threads_per_worker: 1, processes: true, memory_limit: 2GB, timeout: 10}
  k8s:
    provider: kubernetes
    namespace: models
    image: ghcr.io/jgcri/gcam:7
    n_workers: 4
    worker_service_account: runner
    adaptive: {minimum: 1, maximum: 8}
    resources: {limits: {cpu: 2}}
    env: {A: b}
    tolerations: []
    node_selector: {pool: big}
    scheduler_memory: 4Gi
    scheduler_cpu: 1
  batch:
    provider: aws
    region: us-west-2
    instance_type: c5.2xlarge
    cluster_type: ec2
    image: gcam:7
    n_workers: 3
    worker_cpu: 2048
    worker_mem: 8192
    vpc: vpc-1
    subnets: [subnet-a]
    security_groups: [sg-1]
    execution_role_arn: arn:aws:iam::1:role/exec
    task_role_arn: arn:aws:iam::1:role/task
    scheduler_timeout: 20 minutes
    environment: {X: "1"}
    tags: {team: gcims}
    spot: true
    adaptive: {minimum: 0, maximum: 4}
  cloud:
    provider: gcp
    region: us-central1
    project_id: my-project
    instance_type: n2-standard-8
    image: gcam:7
    n_workers: 2
    network: default
    zone: us-central1-a
    service_account: runner@my-project.iam.gserviceaccount.com
    machine_type: n2-standard-8
    adaptive: {minimum: 1, maximum: 2}
components:
  gcam:
    image: ghcr.io/jgcri/gcam:7
    runtime: apptainer
    cpus: 4
    memory: 16GB
    mounts: {/data/inputs: /inputs, /scratch/out: /outputs}
    env: {OMP_NUM_THREADS: 4, SCENARIO: "${SCENARIO:-ssp2}", DEBUG: true, QUIET: "${EMPTY:-loud}"}
    tags: [model, heavy]
    preload_script: /opt/setup.sh
  stitches:
    cpus: 1
  idle:
tasks:
  run_gcam: {component: gcam, cache: true, outputs: {database: dir, log: 7}}
  emulate: {component: stitches}
  wait: {component: idle, cache: false, outputs: null}
overlays:
  hpc:
    project: {local_cache: /scratch/cache}
    components:
      gcam: {memory: 64GB, tags: [model, hpc], env: {SCENARIO: ssp5}}
    targets:
      hpc: {queue: long}
  laptop:
    targets:
      local: {max_workers: 1}
"""

#: FULL as Scalable's parser resolves it without a target: variables expanded, no overlay.
FULL_RAW: dict[str, Any] = {
    "version": 1,
    "project": {"name": "  gcam-runs  ", "default_storage": "./artifacts", "local_cache": ".scalable/cache"},
    "targets": {
        "local": {
            "provider": "local",
            "max_workers": 2,
            "threads_per_worker": 1,
            "processes": False,
            "containers": "none",
            "dashboard_address": ":0",
        },
        "hpc": {
            "provider": "slurm",
            "queue": "short",
            "account": "gcims",
            "walltime": "02:00:00",
            "interface": "ib0",
            "comm_port": 8786,
            "logs_location": "/home/modeller/logs",
            "name": "gcam-worker",
            "suppress_logs": True,
            "container_runtime": "Apptainer",
            "overlay": "hpc",
        },
        "cluster": {
            "provider": "dask",
            "n_workers": 2,
            "threads_per_worker": 1,
            "processes": True,
            "memory_limit": "2GB",
            "timeout": 10,
        },
        "k8s": {
            "provider": "kubernetes",
            "namespace": "models",
            "image": "ghcr.io/jgcri/gcam:7",
            "n_workers": 4,
            "worker_service_account": "runner",
            "adaptive": {"minimum": 1, "maximum": 8},
            "resources": {"limits": {"cpu": 2}},
            "env": {"A": "b"},
            "tolerations": [],
            "node_selector": {"pool": "big"},
            "scheduler_memory": "4Gi",
            "scheduler_cpu": 1,
        },
        "batch": {
            "provider": "aws",
            "region": "us-west-2",
            "instance_type": "c5.2xlarge",
            "cluster_type": "ec2",
            "image": "gcam:7",
            "n_workers": 3,
            "worker_cpu": 2048,
            "worker_mem": 8192,
            "vpc": "vpc-1",
            "subnets": ["subnet-a"],
            "security_groups": ["sg-1"],
            "execution_role_arn": "arn:aws:iam::1:role/exec",
            "task_role_arn": "arn:aws:iam::1:role/task",
            "scheduler_timeout": "20 minutes",
            "environment": {"X": "1"},
            "tags": {"team": "gcims"},
            "spot": True,
            "adaptive": {"minimum": 0, "maximum": 4},
        },
        "cloud": {
            "provider": "gcp",
            "region": "us-central1",
            "project_id": "my-project",
            "instance_type": "n2-standard-8",
            "image": "gcam:7",
            "n_workers": 2,
            "network": "default",
            "zone": "us-central1-a",
            "service_account": "runner@my-project.iam.gserviceaccount.com",
            "machine_type": "n2-standard-8",
            "adaptive": {"minimum": 1, "maximum": 2},
        },
    },
    "components": {
        "gcam": {
            "image": "ghcr.io/jgcri/gcam:7",
            "runtime": "apptainer",
            "cpus": 4,
            "memory": "16GB",
            "mounts": {"/data/inputs": "/inputs", "/scratch/out": "/outputs"},
            "env": {"OMP_NUM_THREADS": 4, "SCENARIO": "ssp2", "DEBUG": True, "QUIET": ""},
            "tags": ["model", "heavy"],
            "preload_script": "/opt/setup.sh",
        },
        "stitches": {"cpus": 1},
        "idle": None,
    },
    "tasks": {
        "run_gcam": {"component": "gcam", "cache": True, "outputs": {"database": "dir", "log": 7}},
        "emulate": {"component": "stitches"},
        "wait": {"component": "idle", "cache": False, "outputs": None},
    },
}


def test_every_key_of_schema_v1_resolves_as_in_scalable(isolated: Path) -> None:
    """The full manifest loads with Scalable's resolved values (defaults, coercions, expansion) and lock."""
    m = load_manifest(write(isolated, FULL), env=ENV)
    assert m.version == 1
    assert m.raw == FULL_RAW
    assert m.raw_unresolved is None and m.overlay is None
    assert m.lock == scalable_lock(FULL_RAW)
    assert m.source_path == str(isolated / "scalable.yaml")
    assert m.project == ProjectSpec("gcam-runs", "./artifacts", ".scalable/cache")
    assert m.components["gcam"] == ComponentSpec(
        name="gcam",
        image="ghcr.io/jgcri/gcam:7",
        runtime="apptainer",
        cpus=4,
        memory="16GB",
        mounts={"/data/inputs": "/inputs", "/scratch/out": "/outputs"},
        env={"OMP_NUM_THREADS": "4", "SCENARIO": "ssp2", "DEBUG": "True", "QUIET": ""},
        tags=["model", "heavy"],
        preload_script="/opt/setup.sh",
    )
    assert m.components["stitches"] == ComponentSpec("stitches")
    assert m.components["idle"] == ComponentSpec("idle", cpus=1, mounts={}, env={}, tags=[])
    assert m.tasks == {
        "run_gcam": TaskSpec("run_gcam", "gcam", cache=True, outputs={"database": "dir", "log": "7"}),
        "emulate": TaskSpec("emulate", "stitches"),
        "wait": TaskSpec("wait", "idle"),
    }
    assert list(m.targets) == ["local", "hpc", "cluster", "k8s", "batch", "cloud"]
    for name, target in m.targets.items():
        expected = dict(FULL_RAW["targets"][name])
        assert target == TargetSpec(name, expected.pop("provider"), expected)
    assert m.targets["hpc"].provider_options == {k: v for k, v in m.targets["hpc"].options.items() if k != "overlay"}
    assert m.warnings == ()


def test_a_targets_overlay_is_deep_merged_with_lists_replaced(isolated: Path) -> None:
    """Loading for target hpc applies overlay hpc: mappings merge, lists are replaced, the overlay key is popped."""
    path = write(isolated, FULL)
    m = load_manifest(path, env=ENV, target_name="hpc")
    expected = copy.deepcopy(FULL_RAW)
    expected["project"]["local_cache"] = "/scratch/cache"
    expected["components"]["gcam"].update(memory="64GB", tags=["model", "hpc"])
    expected["components"]["gcam"]["env"]["SCENARIO"] = "ssp5"
    expected["targets"]["hpc"]["queue"] = "long"
    del expected["targets"]["hpc"]["overlay"]
    assert m.raw == expected
    assert m.raw_unresolved == FULL_RAW
    assert m.overlay == "hpc"
    assert m.lock == scalable_lock(expected) != scalable_lock(FULL_RAW)
    assert m.project.local_cache == "/scratch/cache"
    assert m.components["gcam"].memory == "64GB"
    assert m.components["gcam"].tags == ["model", "hpc"]
    assert m.components["gcam"].env == {"OMP_NUM_THREADS": "4", "SCENARIO": "ssp5", "DEBUG": "True", "QUIET": ""}
    assert m.targets["hpc"].options["queue"] == "long" and "overlay" not in m.targets["hpc"].options
    # The same manifest, resolved for a target from an unresolved load, is the same document.
    unresolved = load_manifest(path, env=ENV)
    assert unresolved.for_target("hpc").raw == m.raw and unresolved.for_target("hpc").lock == m.lock
    assert m.for_target("local").raw == FULL_RAW
    assert unresolved.for_target("cluster") is unresolved


def test_an_overlay_named_explicitly_wins(isolated: Path) -> None:
    """overlay_name applies that overlay, whatever the target names; one overlay only, never chained."""
    m = load_manifest(write(isolated, FULL), env=ENV, overlay_name="laptop", target_name="hpc")
    assert m.overlay == "laptop"
    assert m.targets["local"].options["max_workers"] == 1
    assert m.targets["hpc"].options["queue"] == "short"
    assert "overlay" not in m.targets["hpc"].options
    assert m.components["gcam"].memory == "16GB"
    plain = load_manifest(isolated / "scalable.yaml", env=ENV, overlay_name="laptop")
    assert plain.targets["hpc"].options["overlay"] == "hpc"


def test_minimal_and_null_sections(isolated: Path) -> None:
    """version and project alone load; null sections are empty; a null component takes every default."""
    m = parse_manifest("version: 1\nproject: {name: x}\n")
    assert (m.targets, m.components, m.tasks) == ({}, {}, {})
    assert m.raw == {"version": 1, "project": {"name": "x"}}
    assert m.lock == scalable_lock({"version": 1, "project": {"name": "x"}})
    assert [w.code for w in m.warnings] == ["W_NO_TARGETS", "W_NO_TASKS"]
    nulls = parse_manifest(
        "version: 1\nproject: {name: x, default_storage: null, local_cache: ''}\ntargets:\ncomponents:\n  c:\ntasks:\n"
    )
    assert nulls.components == {"c": ComponentSpec("c")}
    assert nulls.project == ProjectSpec("x", None, "")
    assert nulls.raw["targets"] is None and nulls.raw["components"] == {"c": None}


def test_anchors_and_merge_keys_resolve_as_safe_load(isolated: Path) -> None:
    """YAML anchors, aliases and << merges give what yaml.safe_load gives, in values and in the lock."""
    text = """\
version: 1
project: {name: anchors}
targets:
  local: &base {provider: local, max_workers: 2, threads_per_worker: 1}
  procs:
    <<: *base
    processes: true
    max_workers: 4
components:
  a: &resources {cpus: 2, memory: 1GB, tags: [x]}
  b: *resources
tasks: {t: {component: a}}
"""
    m = parse_manifest(text)
    assert m.raw == yaml.safe_load(text)
    assert m.lock == scalable_lock(yaml.safe_load(text))
    assert m.targets["procs"].options == {"max_workers": 4, "threads_per_worker": 1, "processes": True}
    assert m.components["b"].memory == "1GB"


def test_the_lock_ignores_formatting_but_not_content() -> None:
    """Reformatted YAML has the same lock; a changed value does not."""
    a = parse_manifest("version: 1\nproject: {name: x}\n")
    b = parse_manifest("# comment\nproject:\n  name: x\nversion: 1\n")
    c = parse_manifest("version: 1\nproject: {name: y}\n")
    assert a.lock == b.lock != c.lock


def test_a_mapping_source_parses_like_its_yaml() -> None:
    """parse_manifest of an already parsed mapping gives the same manifest as the YAML text."""
    text = "version: 1\nproject: {name: m}\ntargets: {local: {provider: local}}\ncomponents: {c: {}}\ntasks: {t: {component: c}}\n"
    from_text = parse_manifest(text)
    from_mapping = parse_manifest(yaml.safe_load(text))
    assert from_mapping.raw == from_text.raw and from_mapping.lock == from_text.lock
    assert from_mapping.tasks == from_text.tasks


def test_scalable_extensions_of_our_own(isolated: Path) -> None:
    """Our manifests keep working: a task may name its component directly; components and tasks take a description."""
    m = parse_manifest(
        "version: 1\nproject: {name: x}\ncomponents:\n  prep: {description: clean the data}\n"
        "tasks:\n  clean: prep\n  fit: {component: prep, description: fit it}\n"
    )
    assert m.tasks["clean"] == TaskSpec("clean", "prep")
    assert m.tasks["fit"].description == "fit it"
    assert m.components["prep"].description == "clean the data"


def test_the_manifest_path_comes_from_the_argument_then_the_environment(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a path the manifest is SCALABLE_MANIFEST, else ./scalable.yaml."""
    write(isolated, "version: 1\nproject: {name: here}\n")
    assert load_manifest().project.name == "here"
    other = write(isolated, "version: 1\nproject: {name: other}\n", "other.yaml")
    monkeypatch.setenv("SCALABLE_MANIFEST", str(other))
    assert load_manifest().project.name == "other"


# --- ${VAR} expansion ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("${SLURM_ACCOUNT}", "gcims"),
        ("${MISSING:-fallback}", "fallback"),
        ("${MISSING:-}", ""),
        ("${EMPTY:-fallback}", ""),  # present but empty: empty, the default is for absent variables
        ("a-${SLURM_ACCOUNT}-${MISSING:-b}-c", "a-gcims-b-c"),
        ("$SLURM_ACCOUNT", "$SLURM_ACCOUNT"),  # a bare $NAME stays
        ("${1BAD}", "${1BAD}"),  # not a name: left alone
        ("${MISSING:-a:b/c}", "a:b/c"),
        ("$${SLURM_ACCOUNT}", "$gcims"),  # no escape syntax
        (["${SLURM_ACCOUNT}", {"k": "${EMPTY}"}], ["gcims", {"k": ""}]),
        ({"${SLURM_ACCOUNT}": "key"}, {"${SLURM_ACCOUNT}": "key"}),  # keys are never expanded
        (8786, 8786),
        (None, None),
    ],
)
def test_env_expansion_follows_scalable(value: Any, expected: Any) -> None:
    """${VAR} and ${VAR:-default} in strings only, as Scalable expands them."""
    assert expand_env_vars(value, ENV) == expected


def test_expansion_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """env=None reads os.environ."""
    monkeypatch.setenv("SCALABLE_TEST_QUEUE", "debug")
    assert expand_env_vars("${SCALABLE_TEST_QUEUE}") == "debug"


def test_an_expanded_number_is_a_string(isolated: Path) -> None:
    """comm_port: ${PORT} is the string '8786' after expansion, so slurm refuses it as Scalable does."""
    from scalable.errors import ManifestValidationError

    with pytest.raises(
        ManifestValidationError,
        match=r"E_BAD_COMM_PORT targets\.hpc\.comm_port: comm_port must be a positive integer, got '8786'",
    ):
        parse_manifest(
            "version: 1\nproject: {name: x}\ntargets:\n  hpc: {provider: slurm, comm_port: '${PORT}'}\n",
            env={"PORT": "8786"},
        )


def test_deep_merge_changes_neither_input() -> None:
    """deep_merge merges mappings, replaces lists and scalars, and leaves both inputs as they were."""
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    overlay = {"a": {"c": [3], "e": None}, "d": {"x": 1}}
    before = copy.deepcopy((base, overlay))
    assert deep_merge(base, overlay) == {"a": {"b": 1, "c": [3], "e": None}, "d": {"x": 1}}
    assert (base, overlay) == before
