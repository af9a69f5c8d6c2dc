"""A Scalable user's own manifest drives today's session on the local target, unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from scalable import ScalableSession
from scalable.errors import TargetNotSupportedError
from tests.session.helpers import events_of, verify_run

#: As a Scalable user writes it: Scalable's documented local options and component resources.
SCALABLE_MANIFEST = """\
version: 1
project:
  name: climate-runs
targets:
  local:
    provider: local
    max_workers: 2
    threads_per_worker: 1
    containers: none
  hpc:
    provider: slurm
    queue: short
    walltime: "01:00:00"
    comm_port: 8786
  cloud:
    provider: kubernetes
    image: ghcr.io/jgcri/gcam:7
components:
  preprocess:
    cpus: 2
    memory: 4GB
    env: {OMP_NUM_THREADS: "2"}
  model:
    image: ghcr.io/jgcri/gcam:7
    cpus: 4
    memory: 16GB
tasks:
  clean_inputs: {component: preprocess, cache: true}
  run_model: {component: model, outputs: {database: dir}}
"""


def clean_inputs(rows: list[int]) -> list[int]:
    """A trivial task."""
    return sorted(set(rows))


def test_a_scalable_manifest_runs_a_task_on_the_local_target(isolated: Path) -> None:
    """from_yaml(target='local') takes Scalable's local options; the task runs; run/started has Scalable's lock."""
    path = isolated / "scalable.yaml"
    path.write_text(SCALABLE_MANIFEST)
    with ScalableSession.from_yaml(path, target="local") as session:
        assert session.submit(clean_inputs, [3, 1, 3, 2]).result() == [1, 2, 3]
    records = events_of(session.ledger, session.run_id)
    tasks = [r for r in records if r["event_type"] == "task"]
    assert [(r["op"], r["task_name"], r["component"]) for r in tasks] == [
        ("started", "clean_inputs", "preprocess"),
        ("finished", "clean_inputs", "preprocess"),
    ]
    started = json.loads(next(r["attrs"] for r in records if r["event_type"] == "run" and r["op"] == "started"))
    document = yaml.safe_load(SCALABLE_MANIFEST)
    scalable_lock = hashlib.sha256(
        json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    assert started["manifest_lock"] == scalable_lock
    assert (started["project"], started["target"], started["provider"]) == ("climate-runs", "local", "local")
    assert verify_run(session.ledger.stream_path(session.run_id))["status"] == "completed"


def test_a_target_this_scalable_cannot_run_is_refused_before_anything_starts(isolated: Path) -> None:
    """from_yaml(target='cloud') on a kubernetes target says it is not supported yet, naming file and line; no run is written."""
    path = isolated / "scalable.yaml"
    path.write_text(SCALABLE_MANIFEST)
    with pytest.raises(
        TargetNotSupportedError,
        match=rf"^{path}:16: E_PROVIDER_NOT_SUPPORTED targets\.cloud\.provider: target 'cloud' uses provider 'kubernetes'",
    ):
        ScalableSession.from_yaml(path, target="cloud")
    assert not (isolated / ".scalable").exists()


def test_local_keys_the_target_cannot_act_on_are_recorded_in_run_started(isolated: Path) -> None:
    """containers: docker (warned, as in Scalable), a dashboard address and a component's image: tasks run, run/started names them."""
    from scalable.manifest import ManifestWarning

    path = isolated / "scalable.yaml"
    path.write_text(SCALABLE_MANIFEST.replace("containers: none", "containers: docker\n    dashboard_address: ':8787'"))
    with pytest.warns(ManifestWarning, match="W_LOCAL_CONTAINERS_DEFERRED"):
        session = ScalableSession.from_yaml(path, target="local")
    with session:
        assert session.submit(clean_inputs, [2, 1], task_name="run_model").result() == [1, 2]
    started = json.loads(events_of(session.ledger, session.run_id)[0]["attrs"])
    assert started["target_options"]["containers"] == "docker"
    assert started["recorded_only"] == [
        "components.model.cpus",
        "components.model.image",
        "components.model.memory",
        "components.preprocess.cpus",
        "components.preprocess.env",
        "components.preprocess.memory",
        "targets.local.containers",
        "targets.local.dashboard_address",
    ]
