"""ScalableSession on Dask: events come back from worker processes that share no runs directory."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scalable import ScalableSession, cacheable
from scalable.ledger import bus
from tests.session.helpers import events_of, verify_run

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker_runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SCALABLE_RUNS_DIR the workers see: not the client's (no shared filesystem)."""
    return tmp_path_factory.mktemp("worker-runs")


@pytest.fixture(scope="module")
def cluster(worker_runs_dir: Path) -> Iterator[Any]:
    """One LocalCluster for the module: 2 worker processes, 1 thread each."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        env={"SCALABLE_RUNS_DIR": str(worker_runs_dir)},
    ) as local:
        yield local


def manifest_for(cluster: Any, target: str = "local") -> Path:
    """A manifest whose target ``target`` is the module's Dask cluster."""
    path = Path("scalable.yaml")
    path.write_text(
        "version: 1\n"
        "project: {name: demo, local_cache: ./project-cache}\n"
        "targets:\n"
        f"  {target}: {{provider: dask, address: '{cluster.scheduler_address}'}}\n"
        "components: {prep: {}}\n"
        "tasks: {produce: prep, explode: prep, die_once: prep}\n"
    )
    return path


@cacheable
def halve(x: int) -> int:
    """A cached function called inside tasks."""
    return x // 2


def produce(session: Any, directory: str, index: int) -> dict[str, Any]:
    """A task that writes a file, records it, calls a cached function and publishes an event."""
    halve(index % 2)
    path = Path(directory) / f"part-{index}.csv"
    path.write_text(f"{index}\n")
    session.put(str(path))
    session.record_artifact(str(path), kind="result")
    bus.publish({"event_type": "artifact", "op": "get", "location": f"mem://part-{index}"})
    return {"pid": os.getpid(), "runs_dir": os.environ.get("SCALABLE_RUNS_DIR")}


def explode(message: str) -> None:
    """A task that fails on the worker."""
    raise RuntimeError(message)


def die_once(marker: str) -> int:
    """A task whose first attempt kills its worker process with SIGKILL."""
    bus.publish({"event_type": "artifact", "op": "get", "location": "mem://before-death"})
    if not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()


def nap(seconds: float) -> str:
    """A slow task."""
    import time

    time.sleep(seconds)
    return "woke"


def of(records: list[dict[str, Any]], event_type: str, op: str) -> list[dict[str, Any]]:
    return [r for r in records if r["event_type"] == event_type and r["op"] == op]


def test_documented_example_on_dask_worker_processes(cluster: Any, worker_runs_dir: Path, isolated: Path) -> None:
    """The documented session example runs verbatim with tasks on 2 Dask worker processes; every event comes home."""
    manifest_for(cluster)
    Path("output.csv").write_text("a,b\n")
    from scalable import ScalableSession

    session = ScalableSession.from_yaml("scalable.yaml", target="local")
    # ... run tasks ...
    futures = session.map(produce, [session] * 4, [str(isolated)] * 4, range(4))
    first = futures[0].result()
    # The task's events are in the run's stream as soon as its future completed.
    records = events_of(session.ledger, session.run_id)
    assert any(r["op"] == "finished" and r["event_type"] == "task" for r in records)
    infos = [first] + [f.result() for f in futures[1:]]
    session.record_artifact("output.csv", kind="result")

    session.close()
    assert len({i["pid"] for i in infos} | {os.getpid()}) >= 2
    assert all(i["runs_dir"] == str(worker_runs_dir) for i in infos)
    assert not list(worker_runs_dir.rglob("*.jsonl"))
    records = events_of(session.ledger, session.run_id)
    assert {r["run_id"] for r in records} == {session.run_id}
    recorded = of(records, "artifact", "recorded")
    assert len(recorded) == 5
    from_tasks = [r for r in recorded if r["artifact_name"] != "output.csv"]
    assert {r["task_name"] for r in from_tasks} == {"produce"}
    assert {r["component"] for r in from_tasks} == {"prep"}
    assert len(of(records, "artifact", "get")) == 4
    assert len(of(records, "task", "finished")) == 4
    puts = of(records, "artifact", "put")
    assert sorted(p["key"] for p in puts) == [f"runs/{session.run_id}/part-{i}.csv" for i in range(4)]
    assert {p["task_name"] for p in puts} == {"produce"}
    assert session.store.exists(f"runs/{session.run_id}/part-3.csv")
    cache_events = [r for r in records if r["event_type"] == "cache"]
    assert len([r for r in cache_events if r["op"] in ("hit", "miss")]) == 4
    assert {r["task_name"] for r in cache_events} == {"produce"}
    assert (isolated / "project-cache").is_dir()
    task_writers = {r["writer"] for r in of(records, "task", "started")}
    assert len(task_writers) == 4 and session.ledger.writer_id not in task_writers
    sealed = verify_run(session.ledger.stream_path(session.run_id))
    assert sealed["status"] == "completed" and set(sealed["seal"]["heads"]) >= task_writers


def test_failing_dask_task_reaches_caller_and_is_recorded(cluster: Any, isolated: Path) -> None:
    """A task raising on a worker: task/failed comes back, the caller gets the error, the run fails."""
    manifest_for(cluster, target="cluster")
    session = ScalableSession.from_yaml("scalable.yaml", target="cluster")
    with pytest.raises(RuntimeError, match="worker says no"), session:
        session.submit(explode, "worker says no").result()
    records = events_of(session.ledger, session.run_id)
    (failed,) = of(records, "task", "failed")
    attrs = json.loads(failed["attrs"])
    assert attrs["error_type"] == "RuntimeError" and attrs["error"] == "worker says no"
    assert failed["task_name"] == "explode"
    sealed = verify_run(session.ledger.stream_path(session.run_id))
    assert sealed["status"] == "failed"


def test_run_failing_with_tasks_in_flight_is_sealed_without_late_events(cluster: Any, isolated: Path) -> None:
    """Leaving the block with an error while tasks run cancels them; nothing lands after the seal."""
    manifest_for(cluster)
    session = ScalableSession.from_yaml("scalable.yaml")
    with pytest.raises(LookupError), session:
        pending = session.submit(nap, 1.0)
        raise LookupError("stop here")
    assert pending.done()
    sealed = verify_run(session.ledger.stream_path(session.run_id))
    assert sealed["status"] == "failed" and sealed["error_type"] == "LookupError"
    # The cancelled task did not come back: the client recorded its end before the seal.
    (failed,) = of(events_of(session.ledger, session.run_id), "task", "failed")
    assert failed["task_name"] == "nap" and json.loads(failed["attrs"])["error_type"].endswith("CancelledError")


def test_worker_killed_mid_task_run_still_verifies(cluster: Any, isolated: Path) -> None:
    """A worker SIGKILLed mid-task: the task is retried, the run closes and its chains verify."""
    manifest_for(cluster)
    marker = isolated / "marker"
    with ScalableSession.from_yaml("scalable.yaml") as session:
        pid = session.submit(die_once, str(marker)).result(timeout=120)
    assert pid != os.getpid()
    assert int(marker.read_text()) != pid  # the first attempt's process died; another one finished
    records = events_of(session.ledger, session.run_id)
    # The killed attempt's events never came back; the retry's did, whole.
    assert len(of(records, "task", "started")) == 1
    assert len(of(records, "task", "finished")) == 1
    assert len(of(records, "artifact", "get")) == 1
    sealed = verify_run(session.ledger.stream_path(session.run_id))
    assert sealed["status"] == "completed"


def test_session_starts_its_own_local_cluster(isolated: Path) -> None:
    """A dask target without address starts a LocalCluster of worker processes and closes it."""
    Path("scalable.yaml").write_text(
        "version: 1\nproject: {name: own}\n"
        "targets: {dask: {provider: dask, n_workers: 2, threads_per_worker: 1, processes: true}}\n"
    )
    with ScalableSession.from_yaml("scalable.yaml", target="dask") as session:
        futures = [session.submit(produce, session, str(isolated), i) for i in range(2)]
        pids = {f.result()["pid"] for f in futures}
    assert os.getpid() not in pids
    records = events_of(session.ledger, session.run_id)
    assert len(of(records, "task", "finished")) == 2
    verify_run(session.ledger.stream_path(session.run_id))


def test_unreachable_scheduler_fails_naming_the_address(isolated: Path) -> None:
    """A dask target whose scheduler does not answer fails at the first task, naming the address."""
    import socket

    from scalable.errors import SessionError

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    Path("scalable.yaml").write_text(
        "version: 1\nproject: {name: p}\n"
        f"targets: {{gone: {{provider: dask, address: 'tcp://127.0.0.1:{port}', timeout: 1}}}}\n"
    )
    with ScalableSession.from_yaml("scalable.yaml") as session:
        with pytest.raises(SessionError, match=rf"target 'gone': cannot connect to scheduler 'tcp://127.0.0.1:{port}'"):
            session.submit(explode, "never runs")
    verify_run(session.ledger.stream_path(session.run_id))


def resources_here() -> dict[str, Any]:
    """A task reporting its worker's resources (total and free while it runs) and its STAGE variable."""
    from distributed import get_worker

    state = get_worker().state
    return {
        "total": dict(state.total_resources),
        "free": dict(state.available_resources),
        "stage": os.environ.get("STAGE"),
    }


def test_components_take_their_cpus_and_memory_on_the_cluster_scalable_starts(isolated: Path) -> None:
    """On its own LocalCluster a worker offers its threads and memory; a task holds its component's share and sees its env."""
    Path("scalable.yaml").write_text(
        "version: 1\nproject: {name: sized}\n"
        "targets:\n"
        "  dask: {provider: dask, n_workers: 1, threads_per_worker: 2, processes: true, memory_limit: 2GB}\n"
        "components:\n"
        "  prep: {cpus: 2, memory: 1GB, env: {STAGE: prep}}\n"
        "  model: {cpus: 1, env: {STAGE: prep, OMP_NUM_THREADS: '1'}}\n"
        "tasks: {resources_here: prep, model_here: model}\n"
    )
    with ScalableSession.from_yaml("scalable.yaml", target="dask") as session:
        held = session.submit(resources_here).result(timeout=120)
        light = session.submit(resources_here, task_name="model_here").result(timeout=120)
    assert held == {
        "total": {"cpus": 2, "memory": 2_000_000_000},
        "free": {"cpus": 0, "memory": 1_000_000_000},
        "stage": "prep",
    }
    assert light["free"] == {"cpus": 1, "memory": 2_000_000_000}
    started = json.loads(events_of(session.ledger, session.run_id)[0]["attrs"])
    assert started["recorded_only"] == []
    verify_run(session.ledger.stream_path(session.run_id))


@pytest.mark.parametrize(
    ("components", "message"),
    [
        (
            "{big: {cpus: 3}}",
            r"target 'dask': component 'big' asks for 3 cpus but each worker has 2 \(threads_per_worker\); "
            r"raise the target's threads_per_worker or lower the component's cpus",
        ),
        (
            "{big: {memory: 3GB}}",
            r"target 'dask': component 'big' asks for 3GB of memory but each worker has 1\.86 GiB \(memory_limit\); "
            r"raise the target's memory_limit or lower the component's memory",
        ),
        (
            "{big: {env: {STAGE: a}}, small: {env: {STAGE: b}}}",
            r"target 'dask': components 'big' and 'small' set STAGE to different values, and this target's workers "
            r"are shared by every component; give them one value, or run them on a slurm target",
        ),
    ],
)
def test_components_a_local_cluster_cannot_serve_fail_the_first_task(
    components: str, message: str, isolated: Path
) -> None:
    """A component asking more than a worker has, or env two components disagree on: ConfigError, no cluster started."""
    from scalable.errors import ConfigError

    Path("scalable.yaml").write_text(
        "version: 1\nproject: {name: sized}\n"
        "targets: {dask: {provider: dask, threads_per_worker: 2, memory_limit: 2GB}}\n"
        f"components: {components}\n"
        f"tasks: {{explode: big{', nap: small' if 'small:' in components else ''}}}\n"
    )
    with ScalableSession.from_yaml("scalable.yaml", target="dask") as session:
        with pytest.raises(ConfigError, match=message):
            session.submit(explode, "never runs")
    verify_run(session.ledger.stream_path(session.run_id))


def test_workers_without_a_memory_limit_run_tasks_that_give_memory(isolated: Path) -> None:
    """memory_limit: 0 (no limit) offers no memory resource, so a component's memory does not hold its tasks back."""
    Path("scalable.yaml").write_text(
        "version: 1\nproject: {name: unlimited}\n"
        "targets: {dask: {provider: dask, n_workers: 1, processes: false, memory_limit: 0}}\n"
        "components: {prep: {memory: 1GB}}\n"
        "tasks: {resources_here: prep}\n"
    )
    with ScalableSession.from_yaml("scalable.yaml", target="dask") as session:
        held = session.submit(resources_here).result(timeout=120)
    assert (held["total"], held["free"]) == ({"cpus": 1}, {"cpus": 0})
