"""The Slurm the tests run on is real: a batch job runs to completion, and Dask workers run as Slurm jobs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.slurm import SlurmCluster


def test_a_batch_job_runs_to_completion(slurm: SlurmCluster, isolated: Path) -> None:
    """sbatch --wrap runs the command on the node; the job leaves the queue COMPLETED with exit code 0."""
    submitted = slurm.run(
        "sbatch", "--parsable", "--job-name=hello", "--wrap", "echo hello from $SLURM_JOB_ID", cwd=isolated
    )
    job_id = submitted.stdout.strip().split(";")[0]
    assert job_id.isdigit(), submitted
    slurm.wait_gone(job_id)
    assert (isolated / f"slurm-{job_id}.out").read_text() == f"hello from {job_id}\n"
    info = slurm.run("scontrol", "show", "job", job_id).stdout
    assert "JobState=COMPLETED" in info and "ExitCode=0:0" in info


@pytest.mark.slow
def test_dask_workers_run_as_slurm_jobs(slurm: SlurmCluster, isolated: Path) -> None:
    """dask-jobqueue's SLURMCluster scales to two jobs; both run Dask workers that compute; closing cancels them."""
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    with (
        SLURMCluster(
            cores=1,
            processes=1,
            memory="1GB",
            queue=slurm.partition,
            walltime="00:05:00",
            scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"},
            python=sys.executable,
            log_directory=str(isolated / "worker-logs"),
        ) as cluster,
        Client(cluster) as client,
    ):
        cluster.scale(jobs=2)
        client.wait_for_workers(2, timeout=120)
        running = slurm.run("squeue", "-h", "-t", "RUNNING", "-o", "%i %j").stdout.split("\n")
        job_ids = {line.split()[0] for line in running if line.strip()}
        assert len(job_ids) == 2
        futures = client.map(lambda x: x * x, range(20))
        assert sum(client.gather(futures)) == sum(x * x for x in range(20))
        # Each worker runs inside one of the two jobs.
        assert set(client.run(lambda: os.environ.get("SLURM_JOB_ID")).values()) == job_ids
    for job_id in job_ids:
        slurm.wait_gone(job_id)


def test_without_the_packages_the_fixture_says_what_is_missing(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Slurm's binaries are not found, starting reports which ones (the fixture skips with that reason)."""
    from tests import slurm as module

    monkeypatch.setenv("PATH", str(isolated))
    monkeypatch.setattr(module, "_SBIN", ())
    with pytest.raises(
        module.SlurmUnavailableError,
        match=r"munged, mungekey, slurmctld, slurmd, sbatch, squeue, sinfo, scancel not installed \(apt-get install slurm-wlm munge\)",
    ):
        module.start_slurm(isolated)
    assert list(isolated.iterdir()) == []
