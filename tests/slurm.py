"""A real single-node Slurm for the tests: munge, slurmctld and slurmd from Debian's packages.

Register with ``pytest_plugins`` (tests/conftest.py does). Fixtures:

- ``slurm_cluster`` (session): starts on first use, in a temporary directory: its own munge
  key and munged (its own socket), a ``slurm.conf`` with free loopback ports, then
  ``slurmctld`` and ``slurmd`` in the foreground of their own sessions; it waits until the
  node is ``idle``. At the end it cancels every job left and stops the three daemons by
  their pids. Nothing of the machine's own munge or Slurm is touched, so test sessions in
  other checkouts can run at the same time.
- ``slurm`` (per test): the running cluster, with ``SLURM_CONF`` set in the environment for
  the test, so ``sbatch``/``squeue``/``scancel`` and dask-jobqueue reach it.

Tests that use them are skipped, with the reason, only where the packages are not installed
(``make test`` installs them as root with ``apt-get install slurm-wlm munge``). A cluster that
is installed but does not come up fails the tests, with the daemons' logs.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["SlurmCluster", "slurm", "slurm_cluster", "start_slurm"]

_BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")
_SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
PARTITION = "debug"


class SlurmUnavailableError(RuntimeError):
    """Slurm's packages are not installed here (the reason names what is missing)."""


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SlurmCluster:
    """A running single-node Slurm: its configuration, and the pids of the daemons it started."""

    root: Path
    conf: Path
    partition: str = PARTITION
    cpus: int = 1
    started_in_s: float = 0.0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """The process environment with ``SLURM_CONF`` pointing at this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command (``sbatch``, ``squeue``...) against this cluster."""
        return subprocess.run(
            argv, env=self.env, capture_output=True, text=True, check=check, cwd=cwd or self.root, timeout=60
        )

    def job_state(self, job_id: str) -> str | None:
        """The job's state (``PENDING``, ``RUNNING``...), or ``None`` once it left the queue."""
        out = self.run("squeue", "-h", "-j", job_id, "-o", "%T", check=False).stdout.strip()
        return out or None

    def wait_gone(self, job_id: str, timeout: float = 60) -> None:
        """Wait until the job has left the queue (finished, failed or cancelled)."""
        deadline = time.monotonic() + timeout
        while self.job_state(job_id) is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Slurm job {job_id} still queued after {timeout} s:\n{self.logs()}")
            time.sleep(0.1)

    def logs(self) -> str:
        """The tail of every daemon log, for failure messages."""
        parts = []
        for name in ("munged.out", "munge/munged.log", "slurmctld.log", "slurmd.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this cluster started, by pid."""
        if self.processes and all(p.poll() is None for p in self.processes):
            self.run("scancel", "--partition", self.partition, check=False)
            deadline = time.monotonic() + 15
            while self.run("squeue", "-h", "-o", "%i", check=False).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.2)
        for proc in reversed(self.processes):  # slurmd, then slurmctld, then munged
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.processes.clear()


def _slurm_conf(root: Path, munge_socket: Path, cpus: int, memory_mb: int) -> str:
    host = socket.gethostname().split(".")[0]
    return "\n".join(
        [
            "ClusterName=scalabletest",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={munge_socket}",
            f"StateSaveLocation={root}/state",
            f"SlurmdSpoolDir={root}/spool",
            f"SlurmctldPidFile={root}/slurmctld.pid",
            f"SlurmdPidFile={root}/slurmd.pid",
            f"SlurmctldLogFile={root}/slurmctld.log",
            f"SlurmdLogFile={root}/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "ReturnToService=2",
            "MpiDefault=none",
            "MailProg=/bin/true",
            # The scheduler looks at the queue every second, so a job starts about a second after sbatch.
            "SchedulerParameters=sched_interval=1",
            f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def _start_munge(root: Path, cluster: SlurmCluster) -> Path:
    """Start a munged of our own (own key, own socket) as the munge user; return its socket."""
    try:
        user = pwd.getpwnam("munge")
    except KeyError:
        raise SlurmUnavailableError("the munge user does not exist (is the munge package installed?)") from None
    # munged checks its directory: owned by the munge user, reachable (x) by every client.
    munge_dir = root / "munge"
    munge_dir.mkdir()
    os.chown(munge_dir, user.pw_uid, user.pw_gid)
    munge_dir.chmod(0o711)
    key = munge_dir / "munge.key"
    subprocess.run(
        [_which("mungekey") or "mungekey", "--create", "--keyfile", str(key)], check=True, capture_output=True
    )
    os.chown(key, user.pw_uid, user.pw_gid)
    key.chmod(0o600)
    sock = munge_dir / "munge.socket"
    log = munge_dir / "munged.log"
    argv = [
        _which("munged") or "munged",
        "--foreground",
        f"--socket={sock}",
        f"--key-file={key}",
        f"--pid-file={munge_dir / 'munged.pid'}",
        f"--log-file={log}",
        f"--seed-file={munge_dir / 'munged.seed'}",
    ]
    with open(root / "munged.out", "wb") as out:
        proc = subprocess.Popen(
            argv,
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cluster.processes.append(proc)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"munged did not start:\n{cluster.logs()}")
        time.sleep(0.01)
    return sock


def start_slurm(root: Path, *, cpus: int | None = None) -> SlurmCluster:
    """Start munged, slurmctld and slurmd under ``root``; return once the node is idle.

    Raises:
        SlurmUnavailableError: a binary or the munge user is missing.
        RuntimeError: the daemons did not come up (their logs are in the message).
    """
    missing = [name for name in _BINARIES if _which(name) is None]
    if missing:
        raise SlurmUnavailableError(f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        raise SlurmUnavailableError("a private munged and slurmd run as root (SlurmUser=root); run the tests as root")
    began = time.monotonic()
    cpus = cpus or os.cpu_count() or 1
    memory_mb = max(1024, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20 - 2048)
    cluster = SlurmCluster(root=root, conf=root / "slurm.conf", cpus=cpus)
    try:
        sock = _start_munge(root, cluster)
        (root / "state").mkdir()
        (root / "spool").mkdir()
        cluster.conf.write_text(_slurm_conf(root, sock, cpus, memory_mb))
        for daemon in ("slurmctld", "slurmd"):
            with open(root / f"{daemon}.out", "wb") as out:
                cluster.processes.append(
                    subprocess.Popen(
                        [_which(daemon) or daemon, "-D", "-f", str(cluster.conf)],
                        env=cluster.env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        deadline = time.monotonic() + 60
        while cluster.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip() != "idle":
            if any(p.poll() is not None for p in cluster.processes) or time.monotonic() > deadline:
                raise RuntimeError(f"Slurm did not come up:\n{cluster.logs()}")
            time.sleep(0.05)
    except BaseException:
        cluster.stop()
        raise
    cluster.started_in_s = time.monotonic() - began
    return cluster


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A single-node Slurm for the whole test session, started on first use and stopped by pid."""
    root = Path(tempfile.mkdtemp(prefix="scalable-slurm-"))
    root.chmod(0o755)  # job steps and munged read below it
    try:
        cluster = start_slurm(root)
    except SlurmUnavailableError as exc:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"Slurm is not available here: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(root)


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """The session's Slurm, with ``SLURM_CONF`` set for this test (sbatch and dask-jobqueue find it)."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    return slurm_cluster
