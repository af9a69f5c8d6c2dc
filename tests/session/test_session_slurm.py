"""ScalableSession on a Slurm target: Dask workers run as jobs of the real single-node Slurm of the tests.

The workflow of :mod:`tests.session.workflow` runs on the local target and on Slurm; the Slurm
run's stream holds every event of every task, its chains verify, and its lineage is the local
run's. A worker job cancelled with ``scancel`` fails its task (and the tasks waiting for it),
recorded as ``task/failed``, and the session still closes. Each test starts one
``SLURMCluster`` (a session); the Slurm daemons are shared by the whole test session.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from scalable import ScalableSession
from scalable.errors import ConfigError, WorkerLostError
from tests.helpers import ROOT
from tests.session import workflow
from tests.session.helpers import events_of, verify_run
from tests.session.workflow import MANIFEST, free_port, lineage_of, run_workflow
from tests.slurm import SlurmCluster

pytest.importorskip("dask_jobqueue")

pytestmark = pytest.mark.slow


def slurm_target(slurm: SlurmCluster, **extra: Any) -> str:
    """The ``hpc`` target of the manifest: Scalable's slurm options for the tests' cluster."""
    options = {
        "provider": "slurm",
        "queue": slurm.partition,
        "walltime": "00:10:00",
        "interface": "lo",
        "comm_port": free_port(),
        "name": "climate",
        "logs_location": "worker-logs",
        **extra,
    }
    return "  hpc:\n" + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in options.items())


@pytest.fixture
def on_slurm(slurm: SlurmCluster, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """The cluster, with the workers' Python able to import the tests' task functions."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return slurm


def task_events(records: list[dict[str, Any]]) -> Counter[tuple[str | None, str, str, str | None]]:
    """Every event a task raised: (task, event type, op, component), counted."""
    return Counter(
        (r["task_name"], r["event_type"], r["op"], r.get("component")) for r in records if r.get("task_name")
    )


def test_the_workflow_on_slurm_equals_the_workflow_run_locally(on_slurm: SlurmCluster, isolated: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """On 2 Slurm jobs (one per component) every task's events reach the stream, chains verify, lineage is the local run's."""
    manifest = isolated / "scalable.yaml"
    manifest.write_text(MANIFEST.format(target=slurm_target(on_slurm)))
    local, _ = run_workflow(manifest, "local", isolated / "data", isolated / "on-local")
    remote, ran = run_workflow(manifest, "hpc", isolated / "data", isolated / "on-slurm")

    # Two Slurm jobs ran the tasks: the three clean tasks in prep's, fit in model's, each with its env.
    jobs = {(r["job"], r["stage"]) for r in ran}
    assert len({job for job, _ in jobs}) == 2 and None not in {job for job, _ in jobs}
    assert {stage for _, stage in jobs} == {"prep", "model"}
    assert {r["stage"] for r in ran[:3]} == {"prep"} and ran[3]["stage"] == "model"
    assert os.getpid() not in {r["pid"] for r in ran}

    # Every event of every task is in the Slurm run's stream: the same events as the local run.
    local_records = events_of(local.ledger, local.run_id)
    records = events_of(remote.ledger, remote.run_id)
    assert task_events(records) == task_events(local_records)
    counted = task_events(records)
    assert counted[("clean", "task", "finished", "prep")] == 3 and counted[("fit", "task", "finished", "model")] == 1
    assert counted[("clean", "artifact", "put", "prep")] == 3 and counted[("clean", "cache", "miss", "prep")] == 3
    # Each task recorded under a writer of its own, on its worker; the client sealed them all.
    task_writers = {r["writer"] for r in records if r["event_type"] == "task"}
    assert len(task_writers) == 4 and remote.ledger.writer_id not in task_writers
    sealed = verify_run(remote.ledger.stream_path(remote.run_id))
    assert sealed["status"] == "completed" and set(sealed["seal"]["heads"]) >= task_writers
    home = isolated / "on-slurm"
    audit = cli("ledger", "--runs-dir", str(home / "runs"), "--ledger-dir", str(home / "ledger"), "audit")
    assert audit.exit_code == 0, audit.output
    assert audit.stdout.startswith("audit ok: 1 run(s)")

    # The lineage of both runs is one graph, modulo run ids, and it has data flow in it.
    edges = lineage_of(remote.ledger, remote.run_id)
    assert edges == lineage_of(local.ledger, local.run_id)
    assert Counter(relation for _, relation, _ in edges)["derived_from"] == 3

    # run/started says where the run went and what the target does not act on.
    started = json.loads(records[0]["attrs"])
    assert (started["target"], started["provider"]) == ("hpc", "slurm")
    assert started["components"]["model"] == {"cpus": 1, "memory": "1GB", "env": ["OMP_NUM_THREADS", "STAGE"]}
    assert started["recorded_only"] == []
    assert started["target_options"]["queue"] == on_slurm.partition
    assert sorted(p.name for p in (isolated / "worker-logs").iterdir())  # the jobs' logs are where the target says


def block(marker: str) -> str | None:
    """A task that says which Slurm job runs it, then waits to be killed with its job."""
    Path(marker).write_text(os.environ.get("SLURM_JOB_ID", ""))
    time.sleep(600)
    return os.environ.get("SLURM_JOB_ID")


@pytest.mark.timeout(240)
def test_a_worker_job_cancelled_mid_run_fails_its_tasks_and_later_ones(on_slurm: SlurmCluster, isolated: Path) -> None:
    """scancel of the job running a task: it and the task queued on that worker fail, and so does a later task of the component; no hang."""
    manifest = isolated / "scalable.yaml"
    manifest.write_text(MANIFEST.format(target=slurm_target(on_slurm)).replace("  clean: {", "  block: {"))
    marker = isolated / "running-in"
    with ScalableSession.from_yaml(manifest, target="hpc", runs_dir=isolated / "runs") as session:
        # prep's one worker runs one task of prep at a time: one task runs, the other waits for it.
        futures = [session.submit(block, str(marker)) for _ in range(2)]
        while not (marker.exists() and marker.read_text()) and not any(f.done() for f in futures):
            time.sleep(0.2)
        assert not any(f.done() for f in futures), [f.exception() for f in futures if f.done()]
        job = marker.read_text()
        on_slurm.run("scancel", job)
        for future in futures:
            with pytest.raises(
                WorkerLostError,
                match=rf"^task 'block' of run '{session.run_id}' was lost: worker \S+ \(Slurm job {job}\) ended "
                r"before the task finished \(target 'hpc'\)",
            ):
                future.result(timeout=180)
        # prep has no worker left and its only job left the queue: a new task of it fails too.
        with pytest.raises(
            WorkerLostError,
            match=rf"^task 'block' of run '{session.run_id}' cannot run: every worker job of component 'prep' ended "
            rf"\(Slurm job {job} \w+\) and no worker is left to run it \(target 'hpc'\)$",
        ):
            session.submit(block, str(isolated / "never")).result(timeout=180)
    assert not (isolated / "never").exists()
    records = events_of(session.ledger, session.run_id)
    failed = [r for r in records if r["event_type"] == "task" and r["op"] == "failed"]
    assert [json.loads(r["attrs"])["error_type"] for r in failed] == ["WorkerLostError"] * 3
    assert {(r["task_name"], r["component"], r["writer"]) for r in failed} == {
        ("block", "prep", session.ledger.writer_id)
    }
    sealed = verify_run(session.ledger.stream_path(session.run_id))
    assert sealed["status"] == "completed" and sealed["tasks_failed"] == 3
    on_slurm.wait_gone(job)


def test_a_job_slurm_refuses_fails_the_first_task_with_slurms_words(on_slurm: SlurmCluster, isolated: Path) -> None:
    """A queue Slurm does not have: the first submit fails before any job is queued, quoting Slurm."""
    manifest = isolated / "scalable.yaml"
    manifest.write_text(MANIFEST.format(target=slurm_target(on_slurm, queue="no-such-partition")))
    before = on_slurm.run("squeue", "-h", "-o", "%i").stdout
    with ScalableSession.from_yaml(manifest, target="hpc", runs_dir=isolated / "runs") as session:
        with pytest.raises(
            ConfigError,
            match=r"target 'hpc': Slurm refuses the worker job of component 'model': .*[Ii]nvalid partition",
        ):
            session.submit(print, "never")
    assert on_slurm.run("squeue", "-h", "-o", "%i").stdout == before
    verify_run(session.ledger.stream_path(session.run_id))


def _hpc_manifest(isolated: Path, **options: Any) -> Path:
    """A manifest whose ``hpc`` target is a slurm target with ``options`` (no cluster needed to read it)."""
    manifest = isolated / "scalable.yaml"
    base = {"provider": "slurm", "queue": "debug", "comm_port": free_port(), **options}
    target = "  hpc:\n" + "".join(f"    {k}: {json.dumps(v)}\n" for k, v in base.items() if v is not None)
    manifest.write_text(workflow.MANIFEST.format(target=target))
    return manifest


def test_without_dask_jobqueue_the_first_task_says_how_to_install_it(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slurm target where dask-jobqueue is not installed: MissingDependencyError with the install hint."""
    import sys

    from scalable.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with ScalableSession.from_yaml(_hpc_manifest(isolated), target="hpc", runs_dir=isolated / "runs") as session:
        with pytest.raises(MissingDependencyError, match=r"pip install 'scalable\[slurm\]'"):
            session.submit(print, "never")


def test_without_slurms_commands_the_first_task_says_where_to_run(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sbatch not on PATH (not a login node): SessionError naming sbatch, before any scheduler starts."""
    from scalable.errors import SessionError

    manifest = _hpc_manifest(isolated)
    monkeypatch.setenv("PATH", str(isolated))
    with ScalableSession.from_yaml(manifest, target="hpc", runs_dir=isolated / "runs") as session:
        with pytest.raises(SessionError, match=r"target 'hpc': cannot run sbatch \(.*\); run the session where Slurm"):
            session.submit(print, "never")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("env: {{STAGE: prep}}", 'env: {{"STAGE-1": prep}}'),
            r"target 'hpc': component 'prep' sets env 'STAGE-1', which is not a variable name a job script can export",
        ),
        (("comm_port", "no_port"), r"target 'hpc': COMM_PORT must be a port number, got 'http'"),
    ],
)
def test_what_a_job_script_cannot_say_fails_the_first_task(
    edit: tuple[str, str], message: str, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An env name a shell cannot export, or a COMM_PORT that is no port: ConfigError naming it, nothing queued."""
    monkeypatch.setattr(workflow, "MANIFEST", workflow.MANIFEST.replace(*edit))
    monkeypatch.setenv("COMM_PORT", "http")
    manifest = _hpc_manifest(isolated, comm_port=None if edit[0] == "comm_port" else free_port())
    with ScalableSession.from_yaml(manifest, target="hpc", runs_dir=isolated / "runs") as session:
        with pytest.raises(ConfigError, match=message):
            session.submit(print, "never")
