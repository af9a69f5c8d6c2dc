"""What a session records for lineage: inputs as used versions, task ids on every event, explicit tasks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from scalable import ScalableSession, cacheable
from scalable.errors import ConfigError, SessionError
from scalable.ledger.log import Ledger


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_input_is_recorded_as_used_and_a_bad_role_is_refused(isolated: Path) -> None:
    """role="input" writes artifact/used; any other role than output or input is refused, named."""
    Path("in.csv").write_text("a\n")
    with ScalableSession() as session:
        used = session.record_artifact("in.csv", role="input")
        made = session.record_artifact("in.csv")
        with pytest.raises(ConfigError, match="role 'source'"):
            session.record_artifact("in.csv", role="source")
    assert used is not None and made is not None
    assert (used["op"], made["op"]) == ("used", "recorded")
    assert used["digest"] == made["digest"] == _sha(b"a\n")


def test_local_inputs_become_the_versions_read_and_the_rest_stay_as_given(isolated: Path) -> None:
    """A local file or directory in inputs= is hashed and recorded as used; digests, URIs and missing paths are kept."""
    Path("table.csv").write_text("x\n")
    Path("plots").mkdir()
    (Path("plots") / "a.txt").write_text("p\n")
    Path("out.txt").write_text("o\n")
    gone = (Path.cwd() / "gone.csv").as_uri()
    with ScalableSession() as session:
        record = session.record_artifact(
            "out.txt", inputs=["table.csv", Path("plots"), "ab" * 32, "s3://b/k", "gone.csv", Path.cwd() / "table.csv"]
        )
    assert record is not None
    tree = _sha(f"a.txt\0{_sha(b'p' + bytes([10]))}\n".encode())
    assert record["inputs"] == [_sha(b"x\n"), tree, "ab" * 32, "s3://b/k", gone, _sha(b"x\n")]
    used = Ledger.open().query("SELECT artifact_name, kind, digest FROM events WHERE op = 'used' ORDER BY seq")
    assert used.to_pylist() == [
        {"artifact_name": "table.csv", "kind": "file", "digest": _sha(b"x\n")},
        {"artifact_name": "plots", "kind": "dir", "digest": tree},
        {"artifact_name": "table.csv", "kind": "file", "digest": _sha(b"x\n")},
    ]


@cacheable
def double(x: int) -> int:
    """A cached function whose hits are queued events."""
    return 2 * x


def _task(session: ScalableSession) -> str:
    double(1)  # a hit after the first task: queued, written before the next line
    Path("o.txt").write_text("o\n")
    record = session.record_artifact("o.txt")
    assert record is not None
    return str(json.loads(record["attrs"])["task_id"])


def test_every_event_of_a_task_carries_its_id_in_the_order_it_was_raised(isolated: Path) -> None:
    """Submitted tasks stamp their task id on every event; a queued cache hit precedes the record after it."""
    with ScalableSession() as session:
        ids = [session.submit(_task, session).result() for _ in range(3)]
        run_id = session.run_id
    assert len(set(ids)) == 3
    rows = (
        Ledger.open()
        .query(
            f"SELECT event_type, op, seq, json_extract_string(attrs, '$.task_id') AS task_id FROM events "
            f"WHERE run_id = '{run_id}' AND task_name = '_task' ORDER BY seq"
        )
        .to_pylist()
    )
    for task_id in ids:
        ops = [f"{r['event_type']}/{r['op']}" for r in rows if r["task_id"] == task_id]
        assert ops[0] == "task/started" and ops[-1] == "task/finished"
        assert ops.index("artifact/recorded") > max(i for i, op in enumerate(ops) if op.startswith("cache/"))
    assert {r["task_id"] for r in rows} == set(ids)


def test_an_explicit_task_groups_the_block_and_records_its_failure(isolated: Path) -> None:
    """session.task(name) stamps one task id on the block's events; an error ends it failed and goes on up."""
    Path("raw.csv").write_text("r\n")
    with ScalableSession() as session:
        with session.task("clean"):
            used = session.record_artifact("raw.csv", role="input")
        with pytest.raises(ValueError, match="bad row"), session.task("load"):
            raise ValueError("bad row")
        run_id = session.run_id
    assert used is not None and used["task_name"] == "clean"
    tasks = Ledger.open().query(f"SELECT task_name, status, error FROM tasks WHERE run_id = '{run_id}' ORDER BY ALL")
    assert tasks.to_pylist() == [
        {"task_name": "clean", "status": "finished", "error": None},
        {"task_name": "load", "status": "failed", "error": "bad row"},
    ]
    task_ids = Ledger.open().query(
        f"SELECT DISTINCT json_extract_string(attrs, '$.task_id') FROM events WHERE run_id = '{run_id}' AND task_name = 'clean'"
    )
    assert task_ids.num_rows == 1 and task_ids.column(0)[0].as_py() == json.loads(used["attrs"])["task_id"]
    with pytest.raises(SessionError, match="closed"), session.task("late"):
        pass
