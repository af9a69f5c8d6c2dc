"""The ledger on object storage: segments, concurrent remote compaction, queries from any machine."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from scalable.errors import ConfigError
from scalable.ledger.generations import read_generation
from scalable.ledger.location import open_object_location
from scalable.ledger.log import Ledger
from scalable.settings import load_settings


def machine(base: Path, name: str, remote: str) -> Ledger:
    """A ledger with its own runs and ledger directories, sharing ``remote``."""
    settings = load_settings(runs_dir=base / name / "runs", ledger_dir=base / name / "ledger", runs_dir_remote=remote)
    return Ledger(settings)


def write_runs(led: Ledger, prefix: str, runs: int, events: int) -> None:
    """Append ``events`` artifact events to each of ``runs`` runs, then finish them."""
    for r in range(runs):
        run_id = f"{prefix}-{r}"
        led.append_many(
            {"event_type": "artifact", "op": "put", "run_id": run_id, "artifact_name": f"a{i}", "size_bytes": i}
            for i in range(events)
        )
        led.finish_run(run_id)


def counts(led: Ledger) -> dict[str, Any]:
    """Events, distinct event ids and runs as the views of ``led`` see them."""
    row = led.query("SELECT count(*) AS n, count(DISTINCT event_id) AS d, count(DISTINCT run_id) AS r FROM events")
    return dict(row.to_pylist()[0])


def three_machines(tmp_path: Path, remote: str, *, concurrent_compaction: bool) -> None:
    """Two machines write and sync concurrently, both compact, the third sees every event once."""
    m1, m2, m3 = (machine(tmp_path, n, remote) for n in ("m1", "m2", "m3"))
    writers = [threading.Thread(target=write_runs, args=(m, p, 3, 40)) for m, p in ((m1, "run-a"), (m2, "run-b"))]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    syncs = [threading.Thread(target=m.sync_remote) for m in (m1, m2)]
    for t in syncs:
        t.start()
    for t in syncs:
        t.join()
    total = 2 * 3 * 41
    assert counts(m3) == {"n": total, "d": total, "r": 6}
    if concurrent_compaction:
        results: list[Any] = []
        compactions = [threading.Thread(target=lambda m=m: results.append(m.compact())) for m in (m1, m2)]
        for t in compactions:
            t.start()
        for t in compactions:
            t.join()
        assert len(results) == 2
    else:
        m1.compact()
        m2.compact()
    manifest = read_generation(open_object_location(remote))
    assert manifest.rows == total
    assert counts(m3) == {"n": total, "d": total, "r": 6}
    m1.append({"event_type": "cache", "op": "hit", "run_id": "run-a-9"})  # a new run, after the compactions
    assert counts(m1) == {"n": total + 1, "d": total + 1, "r": 7}
    m1.compact()
    assert counts(m3) == {"n": total + 1, "d": total + 1, "r": 7}
    assert m1.sync_remote().segments == 0
    for m in (m1, m2, m3):
        m.close()


def test_three_machines_on_s3(tmp_path: Path, s3_bucket: tuple[str, dict[str, Any]]) -> None:
    """On S3 two machines sync and compact at once (put-if-absent commit); a third sees every event once."""
    bucket, _options = s3_bucket
    three_machines(tmp_path, f"s3://{bucket}/ledger", concurrent_compaction=True)


def test_three_machines_on_gcs(tmp_path: Path, gcs_bucket: tuple[str, dict[str, Any]]) -> None:
    """On the GCS emulator, which ignores put-if-absent, concurrent compactions still leave every event once."""
    bucket, _options = gcs_bucket
    three_machines(tmp_path, f"gs://{bucket}/ledger", concurrent_compaction=True)


def test_sync_without_remote_is_refused(ledger: Ledger) -> None:
    """sync_remote without SCALABLE_RUNS_DIR_REMOTE says what to set."""
    with pytest.raises(ConfigError, match="SCALABLE_RUNS_DIR_REMOTE"):
        ledger.sync_remote()


def test_unknown_remote_protocol_is_refused(tmp_path: Path) -> None:
    """A remote URI no fsspec backend handles gives a ConfigError naming it."""
    with pytest.raises(ConfigError, match="nosuchproto://x"):
        open_object_location("nosuchproto://x/ledger")


def test_retention_is_refused_on_a_remote_ledger(tmp_path: Path) -> None:
    """--retire-before with a remote ledger is refused rather than half done."""
    led = machine(tmp_path, "m", f"file://{tmp_path}/remote")
    with pytest.raises(ConfigError, match="local ledger only"):
        led.compact(retire_before="2026-01-01")


def test_cli_sync(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`scalable ledger sync` ships segments once to a file:// remote and the views read them."""
    remote = tmp_path / "remote"
    monkeypatch.setenv("SCALABLE_RUNS_DIR_REMOTE", f"file://{remote}")
    led = Ledger.open()
    write_runs(led, "run-c", 2, 5)
    first = cli("ledger", "sync", "--format", "json")
    assert first.exit_code == 0, first.output
    assert '"segments": 2' in first.stdout
    assert '"segments": 0' in cli("ledger", "sync", "--format", "json").stdout
    assert len(list((remote / "segments").rglob("*.jsonl"))) == 2


def test_lost_commit_race_on_s3_is_retried(
    tmp_path: Path, s3_bucket: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compaction whose manifest generation was taken meanwhile gets 412 from S3, cleans up and retries."""
    import scalable.ledger.compact as compact_mod
    from scalable.ledger.generations import Generation

    bucket, _options = s3_bucket
    uri = f"s3://{bucket}/ledger"
    m1, m2 = machine(tmp_path, "m1", uri), machine(tmp_path, "m2", uri)
    write_runs(m1, "run-a", 2, 10)
    m1.sync_remote()
    remote = open_object_location(uri)
    real = compact_mod.read_generation
    stale = iter([Generation()])

    def first_stale(location: Any) -> Any:
        """The first read happens before the other machine's commit lands."""
        for manifest in stale:
            m2.compact()  # the other machine wins generation 1
            return manifest
        return real(location)

    monkeypatch.setattr(compact_mod, "read_generation", first_stale)
    result = m1.compact()
    monkeypatch.setattr(compact_mod, "read_generation", real)
    manifest = real(remote)
    assert manifest.version == 1
    assert result.events_written == 0
    assert manifest.rows == 2 * 11
    live = {f"{bucket}/ledger/ledger/{f.path}" for f in manifest.files}
    assert set(remote.fs.find(f"{bucket}/ledger/ledger/events")) == live
    assert counts(m2) == {"n": 22, "d": 22, "r": 2}


def cli_env(tmp_path: Path, name: str, remote: str) -> dict[str, str]:
    """The environment of a ``scalable`` process on machine ``name`` (own directories, shared remote)."""
    from tests.helpers import child_env

    return child_env(
        SCALABLE_RUNS_DIR=str(tmp_path / name / "runs"),
        SCALABLE_LEDGER_DIR=str(tmp_path / name / "ledger"),
        SCALABLE_RUNS_DIR_REMOTE=remote,
    )


def three_concurrent_cli_compactions(tmp_path: Path, remote: str) -> None:
    """Three machines compact one remote at once; every event lands once; a fourth audits every run."""
    import json
    import subprocess
    import sys

    names = ("m1", "m2", "m3")
    for name in names:
        led = machine(tmp_path, name, remote)
        write_runs(led, f"run-{name}", 3, 20)
        led.close()
    total = 3 * 3 * 21
    scalable = str(Path(sys.executable).with_name("scalable"))
    command = [scalable, "ledger", "compact", "--format", "json"]
    procs = [
        subprocess.Popen(
            command, env=cli_env(tmp_path, n, remote), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for n in names
    ]
    outcomes = [(p.returncode, *p.communicate(timeout=240)) for p in procs]
    outcomes = [(p.returncode, out, err) for p, (_code, out, err) in zip(procs, outcomes, strict=True)]
    assert [code for code, _out, _err in outcomes] == [0, 0, 0], outcomes
    results = [json.loads(out)[0] for _code, out, _err in outcomes]
    # Each one committed a generation, or found that the others' generations hold its events.
    for result, (_code, _out, err) in zip(results, outcomes, strict=True):
        assert (result["events_written"] > 0) != ("nothing to do" in err), outcomes
    assert sum(r["events_written"] for r in results) == total
    generation = read_generation(open_object_location(remote))
    assert generation.rows == total
    other = machine(tmp_path, "m4", remote)  # another machine: nothing local at all
    assert counts(other) == {"n": total, "d": total, "r": 9}
    report = other.audit(content=False)
    assert report.ok, report.problems
    assert (report.runs, report.events) == (9, total)
    single = other.audit("run-m2-1", content=False)
    assert single.ok and (single.runs, single.events) == (1, 21)
    audit_cli = subprocess.run(
        [scalable, "ledger", "audit", "--no-content"],
        env=cli_env(tmp_path, "m4", remote),
        capture_output=True,
        text=True,
        check=False,
    )
    assert audit_cli.returncode == 0, audit_cli.stderr
    assert f"9 run(s), {total} event(s)" in audit_cli.stdout
    other.close()


@pytest.mark.slow
def test_three_concurrent_cli_compactions_on_s3(tmp_path: Path, s3_bucket: tuple[str, dict[str, Any]]) -> None:
    """Three `scalable ledger compact` processes against one S3 remote: none fails, no event lost or doubled."""
    bucket, _options = s3_bucket
    three_concurrent_cli_compactions(tmp_path, f"s3://{bucket}/ledger")


@pytest.mark.slow
def test_three_concurrent_cli_compactions_on_gcs(tmp_path: Path, gcs_strict_bucket: tuple[str, dict[str, Any]]) -> None:
    """The same on a GCS emulator that honours ifGenerationMatch=0 (fake-gcs-server)."""
    bucket, _options = gcs_strict_bucket
    three_concurrent_cli_compactions(tmp_path, f"gs://{bucket}/ledger")


def test_runs_compacted_locally_stay_when_a_remote_is_configured(
    tmp_path: Path, s3_bucket: tuple[str, dict[str, Any]]
) -> None:
    """Runs whose streams a local compaction retired are in `ledger runs` with a remote, and ship to other machines."""
    local = Ledger.open(tmp_path / "m1" / "runs", tmp_path / "m1" / "ledger")
    write_runs(local, "run-old", 2, 5)
    expected = local.query("SELECT run_id, events, status FROM runs ORDER BY run_id").to_pylist()
    assert len(local.compact(keep_jsonl=False).streams_retired) == 2
    local.close()
    remote = f"s3://{s3_bucket[0]}/ledger"
    m1 = machine(tmp_path, "m1", remote)
    query = "SELECT run_id, events, status FROM runs ORDER BY run_id"
    assert m1.query(query).to_pylist() == expected  # before any sync
    write_runs(m1, "run-new", 1, 3)
    m1.compact()  # syncs: the old runs go from local Parquet, the new one as its stream
    assert m1.query(query).to_pylist() == [{"run_id": "run-new-0", "events": 4, "status": "completed"}, *expected]
    other = machine(tmp_path, "m2", remote)
    assert other.query(query).to_pylist() == m1.query(query).to_pylist()
    assert counts(other) == {"n": 2 * 6 + 4, "d": 2 * 6 + 4, "r": 3}
    report = other.audit(content=False)
    assert report.ok, report.problems
    assert (report.runs, report.events) == (3, 16)
    assert m1.sync_remote().segments == 0  # shipped once
    for led in (m1, other):
        led.close()
