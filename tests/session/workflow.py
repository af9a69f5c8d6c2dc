"""One Scalable-style workflow, run by the tests on several targets: its manifest, its tasks, its lineage.

Two components with Scalable's resource keys; ``clean`` writes a part file per input, stores and
records it and calls a cached function; ``fit`` reads the parts and records a model derived
from them. Each task returns where it ran (process, Slurm job, the component's env).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from scalable import ScalableSession, cacheable
from scalable.ledger import Ledger

__all__ = ["MANIFEST", "clean", "fit", "free_port", "lineage_of", "run_workflow", "where"]

#: As a Scalable user writes it; ``{target}`` is filled in by the test.
MANIFEST = """\
version: 1
project:
  name: climate-runs
targets:
  local:
    provider: local
    max_workers: 2
    threads_per_worker: 1
    containers: none
{target}components:
  prep:
    cpus: 1
    memory: 1GB
    env: {{STAGE: prep}}
  model:
    cpus: 1
    memory: 1GB
    env: {{STAGE: model, OMP_NUM_THREADS: "1"}}
tasks:
  clean: {{component: prep, cache: true}}
  fit: {{component: model, outputs: {{model: file}}}}
"""


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def where() -> dict[str, Any]:
    """Where the calling task runs: its process, its Slurm job and its component's variable."""
    return {"pid": os.getpid(), "job": os.environ.get("SLURM_JOB_ID"), "stage": os.environ.get("STAGE")}


@cacheable
def tally(text: str) -> int:
    """A cached function the tasks call."""
    return len(text)


def clean(session: Any, directory: str, index: int) -> dict[str, Any]:
    """Write part ``index``, store it, record it, and call a cached function."""
    path = Path(directory) / f"part-{index}.csv"
    path.write_text(f"row,{index}\n")
    tally(path.read_text())
    session.put(str(path))
    session.record_artifact(str(path), kind="table")
    return where()


def fit(session: Any, directory: str, parts: int) -> dict[str, Any]:
    """Read every part and record the model derived from them."""
    inputs = [Path(directory) / f"part-{i}.csv" for i in range(parts)]
    model = Path(directory) / "model.txt"
    model.write_text("".join(p.read_text() for p in inputs))
    session.record_artifact(str(model), kind="model", inputs=[str(p) for p in inputs])
    return where()


def run_workflow(
    manifest: Path, target: str, directory: Path, home: Path, parts: int = 3
) -> tuple[ScalableSession, list[dict[str, Any]]]:
    """Run the workflow on ``target`` with its own ledger and cache under ``home`` (``runs``, ``ledger``, ``cache``).

    ``parts`` clean tasks, then fit; returns the session and where each task ran.
    """
    directory.mkdir(parents=True, exist_ok=True)
    session = ScalableSession.from_yaml(
        manifest, target=target, runs_dir=home / "runs", ledger_dir=home / "ledger", local_cache=home / "cache"
    )
    with session:
        futures = session.map(clean, [session] * parts, [str(directory)] * parts, range(parts))
        cleaned = [f.result(timeout=240) for f in futures]
        fitted = session.submit(fit, session, str(directory), parts).result(timeout=240)
    return session, [*cleaned, fitted]


def lineage_of(ledger: Ledger, run_id: str) -> set[tuple[str, str, str]]:
    """The run's lineage edges (``src, relation, dst``), the run's own id written ``RUN``."""
    edges = ledger.lineage(run_id, direction="both").edge_set()
    return {tuple("RUN" if node == run_id else node for node in edge) for edge in edges}  # type: ignore[misc]
