"""ScalableSession on the local target: run lifecycle, records, task events on threads and processes."""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from scalable import ScalableSession, cacheable
from scalable.errors import (
    ArtifactNotFoundError,
    ConfigError,
    IntegrityError,
    InvalidKeyError,
    LedgerWriteError,
    ManifestError,
    SessionError,
    StoreNotFoundError,
    StoreUnreachableError,
)
from scalable.ledger import bus
from scalable.ledger.log import Ledger
from scalable.manifest import load_manifest
from scalable.session import TaskSession
from tests.session.helpers import events_of, verify_run

MANIFEST = """\
version: 1
project:
  name: demo
  local_cache: ./project-cache
targets:
  local: {provider: local, max_workers: 2}
  procs: {provider: local, processes: true, max_workers: 2}
components:
  prep: {description: prepare}
tasks:
  make_file: prep
  boom: prep
  squared_task: prep
"""


@pytest.fixture
def manifest(isolated: Path) -> Path:
    path = isolated / "scalable.yaml"
    path.write_text(MANIFEST)
    return path


def make_file(session: Any, name: str, text: str) -> str:
    """A task that writes a file, stores it and records it through the session it was given."""
    Path(name).write_text(text)
    session.put(name)
    session.record_artifact(name, kind="result")
    bus.publish({"event_type": "artifact", "op": "get", "location": f"mem://{name}"})
    return name


@cacheable
def square(x: int) -> int:
    """A cached function."""
    return x * x


def squared_task(x: int) -> int:
    """A task that calls a cached function."""
    return square(x)


def boom(message: str) -> None:
    """A task that fails."""
    raise ValueError(message)


def of(records: list[dict[str, Any]], event_type: str, op: str) -> list[dict[str, Any]]:
    return [r for r in records if r["event_type"] == event_type and r["op"] == op]


def test_documented_example_verbatim(manifest: Path) -> None:
    """The documented session example runs as written and records the result with size and digest."""
    Path("output.csv").write_text("a,b\n1,2\n")
    from scalable import ScalableSession

    session = ScalableSession.from_yaml("scalable.yaml", target="local")
    # ... run tasks ...
    done = [session.submit(make_file, session, f"t{i}.txt", "x").result() for i in range(2)]
    squares = [f.result() for f in session.map(squared_task, [5, 5])]
    session.record_artifact("output.csv", kind="result")

    session.close()
    assert done == ["t0.txt", "t1.txt"] and squares == [25, 25]
    records = events_of(session.ledger, session.run_id)
    assert {r["run_id"] for r in records} == {session.run_id}
    for record in records:
        if record["event_type"] in ("task", "cache") or record.get("artifact_name") in ("t0.txt", "t1.txt"):
            assert record["task_name"] in ("make_file", "squared_task"), record
    assert len(of(records, "artifact", "put")) == 2
    assert {r["op"] for r in records if r["event_type"] == "cache"} >= {"miss", "write"}
    started = of(records, "run", "started")[0]
    attrs = json.loads(started["attrs"])
    assert attrs["manifest_lock"] == load_manifest(manifest).lock
    assert attrs["project"] == "demo" and attrs["target"] == "local"
    assert attrs["host"] and attrs["user"]
    recorded = of(records, "artifact", "recorded")[-1]
    assert recorded.get("task_name") is None  # recorded by the main thread, outside any task
    assert recorded["run_id"] == session.run_id
    assert recorded["artifact_name"] == "output.csv" and recorded["kind"] == "result"
    assert recorded["size_bytes"] == 8
    assert recorded["digest"] == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert recorded["location"] == (Path.cwd() / "output.csv").as_uri()
    sealed = verify_run(session.ledger.stream_path(session.run_id))
    assert sealed["status"] == "completed"


def test_run_id_has_scalables_form(manifest: Path) -> None:
    """The run id is run-<UTC stamp>-<project>-<8 hex>."""
    session = ScalableSession.from_yaml()
    assert session.run_id.startswith("run-") and "-demo-" in session.run_id
    assert len(session.run_id.rsplit("-", 1)[1]) == 8


def test_from_yaml_starts_nothing(manifest: Path) -> None:
    """from_yaml writes no event and creates no directory until something needs the run."""
    session = ScalableSession.from_yaml(manifest)
    assert session.state == "new"
    assert not Path(".scalable").exists()
    session.close()
    assert not Path(".scalable").exists()


@pytest.mark.parametrize(
    ("ending", "status"),
    [("", "completed"), ("raise ValueError('late')", "failed"), ("raise KeyboardInterrupt", "interrupted")],
)
def test_implicit_run_is_finished_at_interpreter_exit(manifest: Path, ending: str, status: str) -> None:
    """A run started by record_artifact and never closed is sealed at exit, with how the script ended."""
    Path("output.csv").write_text("x\n")
    script = (
        textwrap.dedent(
            """
        from scalable import ScalableSession

        session = ScalableSession.from_yaml("scalable.yaml", target="local")
        session.record_artifact("output.csv", kind="result")
        print(session.run_id, flush=True)
        """
        )
        + ending
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALABLE_")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False)
    assert (out.returncode == 0) == (status == "completed"), out.stderr
    run_id = out.stdout.strip()
    sealed = verify_run(Path(".scalable/runs") / run_id / "artifacts.jsonl")
    assert sealed["status"] == status
    assert sealed["counts"] == {"run": 1, "artifact": 1}


def test_thread_tasks_record_in_their_context(manifest: Path) -> None:
    """Events raised inside thread tasks carry the run, task name and component; task events pair up."""
    with ScalableSession.from_yaml(manifest, target="local") as session:
        futures = session.map(make_file, [session] * 3, ["a.txt", "b.txt", "c.txt"], ["1", "2", "3"])
        assert sorted(f.result() for f in futures) == ["a.txt", "b.txt", "c.txt"]
    records = events_of(session.ledger, session.run_id)
    assert {r["run_id"] for r in records} == {session.run_id}
    for record in of(records, "artifact", "recorded") + of(records, "artifact", "get") + of(records, "artifact", "put"):
        assert record["task_name"] == "make_file" and record["component"] == "prep"
    stored = sorted(r["key"] for r in of(records, "artifact", "put"))
    assert stored == [f"runs/{session.run_id}/{n}" for n in ("a.txt", "b.txt", "c.txt")]
    assert session.store.list_artifacts(f"runs/{session.run_id}/") == stored
    started, finished = of(records, "task", "started"), of(records, "task", "finished")
    ids = {json.loads(r["attrs"])["task_id"] for r in started}
    assert len(ids) == 3
    assert {json.loads(r["attrs"])["task_id"] for r in finished} == ids
    assert all(r["duration_s"] >= 0 for r in finished)
    verify_run(session.ledger.stream_path(session.run_id))
    tasks = session.ledger.query("SELECT task_name, component, status FROM tasks").to_pylist()
    assert tasks == [{"task_name": "make_file", "component": "prep", "status": "finished"}] * 3


def test_process_tasks_append_under_their_own_writers(manifest: Path) -> None:
    """Tasks in worker processes record into the run under their own writers; every chain verifies."""
    with ScalableSession.from_yaml(manifest, target="procs") as session:
        futures = [session.submit(make_file, session, f"p{i}.txt", str(i)) for i in range(4)]
        assert [f.result() for f in futures] == [f"p{i}.txt" for i in range(4)]
    records = events_of(session.ledger, session.run_id)
    recorded = of(records, "artifact", "recorded") + of(records, "artifact", "put")
    assert len(recorded) == 8
    assert all(r["task_name"] == "make_file" and r["run_id"] == session.run_id for r in recorded)
    task_writers = {r["writer"] for r in of(records, "task", "started")}
    assert session.ledger.writer_id not in task_writers
    assert all(f":{os.getpid()}:" not in w for w in task_writers)
    sealed = verify_run(session.ledger.stream_path(session.run_id))
    assert set(sealed["seal"]["heads"]) >= task_writers


@pytest.mark.parametrize("target", ["local", "procs"])
def test_failing_task_is_recorded_and_fails_the_run(manifest: Path, target: str) -> None:
    """A raising task records task/failed, re-raises at the caller, and the run ends failed, sealed."""
    session = ScalableSession.from_yaml(manifest, target=target)
    with pytest.raises(ValueError, match="bad input 42"), session:
        session.submit(boom, "bad input 42").result()
    records = events_of(session.ledger, session.run_id)
    (failed,) = of(records, "task", "failed")
    attrs = json.loads(failed["attrs"])
    assert attrs["error_type"] == "ValueError" and attrs["error"] == "bad input 42"
    assert failed["task_name"] == "boom" and failed["component"] == "prep"
    sealed = verify_run(session.ledger.stream_path(session.run_id))
    assert sealed["status"] == "failed"
    assert sealed["error_type"] == "ValueError" and sealed["tasks_failed"] == 1


def test_keyboard_interrupt_ends_run_interrupted(manifest: Path) -> None:
    """KeyboardInterrupt leaving the with block ends the run interrupted, sealed."""
    session = ScalableSession.from_yaml(manifest)
    with pytest.raises(KeyboardInterrupt), session:
        raise KeyboardInterrupt
    sealed = verify_run(session.ledger.stream_path(session.run_id))
    assert sealed["status"] == "interrupted"


def test_keyword_form_records_as_given(manifest: Path) -> None:
    """Scalable's keyword form records remote artifacts as given, with inputs and metadata."""
    Path("in.csv").write_text("raw\n")
    with ScalableSession.from_yaml(manifest) as session:
        record = session.record_artifact(
            task_name="make_file",
            artifact_name="model",
            location="s3://bucket/models/m.bin",
            kind="model",
            size_bytes=123,
            digest="ab" * 32,
            inputs=["in.csv", "s3://bucket/raw/x"],
            metadata={"epochs": 3},
        )
    assert record is not None
    assert record["location"] == "s3://bucket/models/m.bin"
    assert record["component"] == "prep" and record["task_name"] == "make_file"
    assert record["size_bytes"] == 123 and record["digest"] == "ab" * 32
    raw = hashlib.sha256(b"raw\n").hexdigest()
    assert record["inputs"] == [raw, "s3://bucket/raw/x"]  # a local input is the version read
    used = Ledger.open().query("SELECT location, digest, task_name FROM artifacts WHERE op = 'used'").to_pylist()
    assert used == [{"location": (Path.cwd() / "in.csv").as_uri(), "digest": raw, "task_name": "make_file"}]
    assert json.loads(record["attrs"]) == {"epochs": 3}
    positional = session_record_uri(manifest)
    assert positional["location"] == "gs://bucket/out/table.parquet"
    assert positional["artifact_name"] == "table.parquet" and "digest" not in positional


def session_record_uri(manifest: Path) -> dict[str, Any]:
    """Record a remote URI given positionally and return the event."""
    with ScalableSession.from_yaml(manifest) as session:
        record = session.record_artifact("gs://bucket/out/table.parquet", kind="result")
    assert record is not None
    return record


def test_directory_gets_a_tree_digest(manifest: Path) -> None:
    """Recording a local directory gives kind dir, its total size and a tree digest that tracks content."""
    out = Path("model_output")
    (out / "sub").mkdir(parents=True)
    (out / "a.txt").write_text("aa")
    (out / "sub" / "b.txt").write_text("bbb")
    with ScalableSession.from_yaml(manifest) as session:
        first = session.record_artifact(out)
        (out / "sub" / "b.txt").write_text("bbc")
        second = session.record_artifact(out)
    assert first is not None and second is not None
    assert first["kind"] == "dir" and first["size_bytes"] == 5
    assert first["digest"] != second["digest"]


def test_record_artifact_bad_input(manifest: Path) -> None:
    """Missing files, no path at all, and a wrong digest are each refused with a named error."""
    Path("out.csv").write_text("x")
    with ScalableSession.from_yaml(manifest) as session:
        with pytest.raises(ArtifactNotFoundError, match=r"nope\.csv"):
            session.record_artifact("nope.csv")
        with pytest.raises(SessionError, match="needs a path or location"):
            session.record_artifact()
        with pytest.raises(IntegrityError, match=r"out\.csv.*digest"):
            session.record_artifact("out.csv", digest="0" * 64)
        with pytest.raises(IntegrityError, match=r"out\.csv.*size_bytes=9"):
            session.record_artifact("out.csv", size_bytes=9)
        with pytest.raises(InvalidKeyError):
            session.put("out.csv", "../escape.csv")


def test_session_pickles_to_a_task_view(manifest: Path) -> None:
    """A session sent to another process arrives as a TaskSession of the same run."""
    import pickle

    session = ScalableSession.from_yaml(manifest)
    view = pickle.loads(pickle.dumps(session))
    assert isinstance(view, TaskSession) and not isinstance(view, ScalableSession)
    assert view.run_id == session.run_id
    assert view.settings.default_storage == session.settings.default_storage


def test_seal_key_never_travels_to_tasks(manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With SCALABLE_LEDGER_KEY set the seal is an HMAC, and the key is not in what tasks receive."""
    import pickle

    monkeypatch.setenv("SCALABLE_LEDGER_KEY", "seal-secret")
    with ScalableSession.from_yaml(manifest) as session:
        assert b"seal-secret" not in pickle.dumps(session)
    sealed = verify_run(session.ledger.stream_path(session.run_id))
    assert len(sealed["seal"]["hmac"]) == 64


def test_closed_session_refuses_work(manifest: Path) -> None:
    """A closed session cannot be restarted nor take tasks."""
    session = ScalableSession.from_yaml(manifest)
    session.start()
    session.close()
    with pytest.raises(SessionError, match="is closed"):
        session.start()
    with pytest.raises(SessionError, match="is closed"):
        session.submit(boom, "x")


def test_telemetry_off_records_nothing(manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With SCALABLE_TELEMETRY=0 tasks run and nothing is written."""
    monkeypatch.setenv("SCALABLE_TELEMETRY", "0")
    with ScalableSession.from_yaml(manifest) as session:
        assert session.submit(make_file, session, "t.txt", "x").result() == "t.txt"
    assert not session.ledger.stream_path(session.run_id).exists()


def test_target_from_environment_and_unknown_target(manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SCALABLE_TARGET picks the target; an unknown one lists the known targets."""
    monkeypatch.setenv("SCALABLE_TARGET", "procs")
    assert ScalableSession.from_yaml(manifest).target.name == "procs"
    with pytest.raises(ManifestError, match=r"unknown target 'gpu'; known targets: local, procs"):
        ScalableSession.from_yaml(manifest, target="gpu")


def test_default_storage_precedence(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Argument beats SCALABLE_DEFAULT_STORAGE beats project.default_storage; neither gives .scalable/artifacts."""
    plain = isolated / "plain.yaml"
    plain.write_text("version: 1\nproject: {name: p}\n")
    assert ScalableSession.from_yaml(plain).settings.default_storage == str(isolated / ".scalable" / "artifacts")
    configured = isolated / "configured.yaml"
    configured.write_text("version: 1\nproject: {name: p, default_storage: ./store, local_cache: ./c}\n")
    session = ScalableSession.from_yaml(configured)
    assert session.settings.default_storage == str(isolated / "store")
    assert session.settings.cache_dir == isolated / "c"
    monkeypatch.setenv("SCALABLE_DEFAULT_STORAGE", "s3://bucket/runs/")
    assert ScalableSession.from_yaml(configured).settings.default_storage == "s3://bucket/runs/"
    chosen = ScalableSession.from_yaml(configured, default_storage="gs://other/")
    assert chosen.settings.default_storage == "gs://other/"


def test_unwritable_default_storage_fails_at_start(isolated: Path) -> None:
    """A default storage that cannot be written fails at start(), naming the URI."""
    Path("blocker").write_text("a file, not a directory")
    path = isolated / "m.yaml"
    path.write_text("version: 1\nproject: {name: p, default_storage: ./blocker/store}\n")
    session = ScalableSession.from_yaml(path)
    with pytest.raises(StoreUnreachableError, match=r"default storage '.*blocker/store' cannot be written"):
        session.start()
    assert session.state == "new"


def test_runs_dir_under_a_file_fails_by_name_and_leaves_nothing_active(manifest: Path) -> None:
    """A runs directory under a file is refused when the session is made, by name, and activates nothing."""
    Path("blocker").write_text("a file, not a directory")
    before = bus.active()
    with pytest.raises(ConfigError, match=r"runs_dir='blocker/runs' is under '.*blocker', a file, not a directory"):
        ScalableSession.from_yaml(manifest, runs_dir="blocker/runs")
    assert bus.active() is before
    assert isinstance(LedgerWriteError("x"), PermissionError)


def test_close_refuses_an_unknown_status(manifest: Path) -> None:
    """close() with a status other than completed, failed or interrupted is refused."""
    session = ScalableSession.from_yaml(manifest)
    with pytest.raises(SessionError, match="'done' is not one of completed, failed, interrupted"):
        session.close("done")


@pytest.mark.parametrize("target", ["local", "procs"])
def test_cached_function_inside_tasks(manifest: Path, target: str) -> None:
    """A cached call inside tasks misses then hits, in the session's cache, with the task's context."""
    with ScalableSession.from_yaml(manifest, target=target) as session:
        assert session.submit(squared_task, 7).result() == 49
        assert session.submit(squared_task, 7).result() == 49
    assert (manifest.parent / "project-cache").is_dir()
    records = events_of(session.ledger, session.run_id)
    ops = [r["op"] for r in records if r["event_type"] == "cache"]
    assert ops.count("miss") == 1 and ops.count("write") == 1 and ops.count("hit") == 1
    for record in records:
        if record["event_type"] == "cache":
            assert record["task_name"] == "squared_task" and record["run_id"] == session.run_id
    verify_run(session.ledger.stream_path(session.run_id))


def test_directory_settings_precedence(manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs, ledger and cache directories: argument beats environment beats manifest beats default."""
    default = ScalableSession.from_yaml(manifest)
    assert default.ledger.runs_dir == manifest.parent / ".scalable" / "runs"
    assert default.settings.cache_dir == manifest.parent / "project-cache"
    monkeypatch.setenv("SCALABLE_RUNS_DIR", "env-runs")
    monkeypatch.setenv("SCALABLE_LEDGER_DIR", "env-ledger")
    monkeypatch.setenv("SCALABLE_CACHE_DIR", "env-cache")
    from_env = ScalableSession.from_yaml(manifest)
    assert from_env.ledger.runs_dir == Path.cwd() / "env-runs"
    assert from_env.ledger.ledger_dir == Path.cwd() / "env-ledger"
    assert from_env.settings.cache_dir == Path.cwd() / "env-cache"
    given = ScalableSession.from_yaml(manifest, runs_dir="arg-runs", ledger_dir="arg-ledger", local_cache="arg-cache")
    assert given.ledger.runs_dir == Path.cwd() / "arg-runs"
    assert given.ledger.ledger_dir == Path.cwd() / "arg-ledger"
    assert given.settings.cache_dir == Path.cwd() / "arg-cache"
    with given:
        assert given.submit(squared_task, 3).result() == 9
    assert (Path.cwd() / "arg-runs" / given.run_id / "artifacts.jsonl").is_file()
    assert (Path.cwd() / "arg-cache").is_dir()


def test_put_stores_under_the_run_and_records_once(manifest: Path) -> None:
    """put stores a file under runs/<run_id>/ of the default storage with one artifact/put event."""
    Path("model.bin").write_bytes(b"\x00" * 100)
    Path("outdir").mkdir()
    (Path("outdir") / "x.txt").write_text("x")
    with ScalableSession.from_yaml(manifest) as session:
        ref = session.put("model.bin")
        tree = session.put("outdir", "results/outdir")
    assert ref.uri == session.store.uri_for(f"runs/{session.run_id}/model.bin")
    assert ref.size_bytes == 100
    assert ref.digest == hashlib.sha256(b"\x00" * 100).hexdigest()
    assert ref.uri.startswith((Path.cwd() / ".scalable" / "artifacts").as_uri())
    records = events_of(session.ledger, session.run_id)
    puts = of(records, "artifact", "put")
    assert [p["key"] for p in puts] == [f"runs/{session.run_id}/model.bin", f"runs/{session.run_id}/results/outdir"]
    assert puts[1]["digest"] == tree.digest
    with ScalableSession.from_yaml(manifest) as again:
        recorded = again.record_artifact("outdir")
    assert recorded is not None and recorded["digest"] == tree.digest


def test_put_and_reachability_on_s3(
    manifest: Path, s3_bucket: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An S3 default storage is checked at start (missing bucket named) and receives puts from tasks."""
    bucket, _options = s3_bucket
    monkeypatch.setenv("SCALABLE_DEFAULT_STORAGE", "s3://no-such-bucket-here/runs/")
    session = ScalableSession.from_yaml(manifest)
    with pytest.raises(
        StoreNotFoundError, match=r"s3://no-such-bucket-here/runs/.*bucket 'no-such-bucket-here' does not exist"
    ):
        session.start()
    monkeypatch.setenv("SCALABLE_DEFAULT_STORAGE", f"s3://{bucket}/runs/")
    with ScalableSession.from_yaml(manifest) as session:
        assert session.submit(make_file, session, "s3.txt", "hello").result() == "s3.txt"
    records = events_of(session.ledger, session.run_id)
    (put,) = of(records, "artifact", "put")
    assert put["location"] == f"s3://{bucket}/runs/runs/{session.run_id}/s3.txt"
    assert put["task_name"] == "make_file"
    assert session.store.list_artifacts("runs/") == [f"runs/{session.run_id}/s3.txt"]


def test_unreachable_endpoint_fails_at_start_with_masked_uri(manifest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An S3 endpoint nobody answers fails at start(), naming the URI with its credentials masked."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("SCALABLE_DEFAULT_STORAGE", "s3://AKIAEXAMPLE:hunter2@bucket/runs/")
    session = ScalableSession.from_yaml(manifest)
    with pytest.raises(StoreUnreachableError, match="default storage cannot reach") as info:
        session.start()
    assert "hunter2" not in str(info.value)
    assert "bucket/runs/" in str(info.value)


CALLER_STATE: contextvars.ContextVar[str] = contextvars.ContextVar("caller_state", default="unset")


def read_caller_state() -> str:
    """A task that reads a context variable of its caller."""
    return CALLER_STATE.get()


def test_thread_tasks_see_the_callers_context(manifest: Path) -> None:
    """Context variables set by the caller are visible inside thread tasks."""
    token = CALLER_STATE.set("from-caller")
    try:
        with ScalableSession.from_yaml(manifest) as session:
            assert session.submit(read_caller_state).result() == "from-caller"
    finally:
        CALLER_STATE.reset(token)
