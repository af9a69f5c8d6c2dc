"""A Scalable manifest on the local target: tasks run, and the run directory holds Scalable's files.

``manifest.yaml``, ``manifest.lock``, ``plan.json``, ``run.json`` and ``summary.json`` sit beside
``artifacts.jsonl`` with Scalable's fields and formatting, so a Scalable user's scripts that read
them keep working; ``scalable report`` prints Scalable's run report from the ledger.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from scalable import ScalableSession
from scalable.ledger import Ledger
from tests.session.helpers import events_of, verify_run
from tests.session.workflow import MANIFEST, run_workflow

#: A Scalable ``RunMetadata``, field by field.
RUN_FIELDS = {
    "run_id",
    "project_name",
    "target_name",
    "provider_name",
    "manifest_lock",
    "source_manifest_path",
    "started_at",
    "finished_at",
    "status",
    "schema_version",
}
SECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def scalable_json(path: Path) -> Any:
    """Read a file Scalable writes with ``json.dumps(indent=2, sort_keys=True)`` and a newline, checking that form."""
    text = path.read_text()
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n", path
    return doc


def latest_run_dir(runs_dir: Path) -> Path:
    """How a Scalable user's script finds the newest run: the last ``run-*`` directory by name."""
    return sorted(p for p in runs_dir.iterdir() if p.is_dir() and p.name.startswith("run-"))[-1]


def test_a_scalable_manifest_on_the_local_target_writes_scalables_run_files(isolated: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """threads_per_worker, containers: none, components with cpus/memory: tasks run, events land, files as Scalable writes them."""
    manifest = isolated / "scalable.yaml"
    manifest.write_text(MANIFEST.format(target=""))
    document = yaml.safe_load(manifest.read_text())
    lock = hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode())
    home = isolated / "home"

    session, ran = run_workflow(manifest, "local", isolated / "data", home)

    # Tasks ran (threads of this process) and their events landed.
    assert len(ran) == 4
    records = events_of(session.ledger, session.run_id)
    tasks = [(r["task_name"], r["op"], r["component"]) for r in records if r["event_type"] == "task"]
    assert sorted(tasks) == sorted(
        [("clean", "started", "prep"), ("clean", "finished", "prep")] * 3
        + [
            ("fit", "started", "model"),
            ("fit", "finished", "model"),
        ]
    )
    assert verify_run(session.ledger.stream_path(session.run_id))["status"] == "completed"
    started = json.loads(records[0]["attrs"])
    assert started["target_options"] == {
        "max_workers": 2,
        "threads_per_worker": 1,
        "processes": False,
        "containers": "none",
        "dashboard_address": None,
    }
    # The local target reserves no resources and sets no env in this process: recorded only.
    assert started["recorded_only"] == [
        "components.model.cpus",
        "components.model.env",
        "components.model.memory",
        "components.prep.cpus",
        "components.prep.env",
        "components.prep.memory",
    ]

    # The run directory, as a Scalable user's script finds and reads it.
    run_dir = latest_run_dir(home / "runs")
    assert run_dir.name == session.run_id
    assert {p.name for p in run_dir.iterdir()} == {
        "artifacts.jsonl",
        "manifest.yaml",
        "manifest.lock",
        "plan.json",
        "run.json",
        "summary.json",
    }
    assert (run_dir / "manifest.yaml").read_text() == yaml.safe_dump(document, sort_keys=True)
    assert (run_dir / "manifest.lock").read_text() == lock.hexdigest() + "\n"
    assert scalable_json(run_dir / "plan.json") == {
        "version": 1,
        "target": "local",
        "provider": "local",
        "manifest_lock": lock.hexdigest(),
        "task_to_component": {"clean": "prep", "fit": "model"},
        "scale_plan": {
            "workers_by_tag": {"model": 1, "prep": 1},
            "resources_by_tag": {
                "model": {"cpus": 1, "memory": "1GB", "walltime": None, "gpus": None},
                "prep": {"cpus": 1, "memory": "1GB", "walltime": None, "gpus": None},
            },
        },
    }
    run = scalable_json(run_dir / "run.json")
    assert set(run) >= RUN_FIELDS
    assert {k: run[k] for k in RUN_FIELDS - {"started_at", "finished_at"}} == {
        "run_id": session.run_id,
        "project_name": "climate-runs",
        "target_name": "local",
        "provider_name": "local",
        "manifest_lock": lock.hexdigest(),
        "source_manifest_path": str(manifest),
        "status": "completed",
        "schema_version": 1,
    }
    assert SECONDS.match(run["started_at"]) and SECONDS.match(run["finished_at"])
    assert run["started_at"] <= run["finished_at"]
    summary = scalable_json(run_dir / "summary.json")
    assert summary["run"] == {k: run[k] for k in RUN_FIELDS}
    # Artifact events are counted as Scalable counts them: every artifact line of the stream.
    # Three puts and three records of the parts, the model recorded, and the three parts its
    # ``inputs=`` named, each recorded as ``used`` (the version read, hashed then).
    artifact_ops = sorted(r["op"] for r in records if r["event_type"] == "artifact")
    assert artifact_ops == ["put"] * 3 + ["recorded"] * 4 + ["used"] * 3
    assert summary["counts"] == {
        "task_events": 8,
        "resource_events": 4,
        "worker_events": 0,
        "failure_events": 0,
        "cache_events": 3,
        "artifact_events": 10,
        "cost_events": 0,
        "tasks_succeeded": 4,
        "tasks_failed": 0,
        "tasks_cancelled": 0,
    }
    assert summary["timing"]["task_duration_count"] == 4 and summary["timing"]["task_duration_total_s"] > 0
    assert summary["cache"] == {"hits": 0, "misses": 3, "hit_ratio": 0.0}
    assert summary["resources"] == {"requested_cpu_min": 1, "requested_cpu_max": 1, "requested_cpu_avg": 1.0}
    assert summary["cost"] == {"total_hourly_usd": None, "total_monthly_usd": None, "estimates_count": 0}
    assert summary["failures"] == {"classes": {}}

    # scalable report --latest prints Scalable's report of that run.
    runs = ["--runs-dir", str(home / "runs"), "--ledger-dir", str(home / "ledger")]
    result = cli("report", "--latest", *runs)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"run_id: {session.run_id}",
        "project: climate-runs",
        "target/provider: local/local",
        "status: completed",
        "",
        "tasks:",
        "  succeeded: 4",
        "  failed: 0",
        "  cancelled: 0",
        "  event_rows: 8",
        "timing:",
        f"  total_s: {summary['timing']['task_duration_total_s']}",
        f"  avg_s: {summary['timing']['task_duration_avg_s']}",
        "cache:",
        "  hits: 0",
        "  misses: 3",
        "  hit_ratio: 0.0",
    ]
    as_json = cli("report", "--run-id", session.run_id, "--format", "json", "--output", "report.json", *runs)
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == summary == json.loads((isolated / "report.json").read_text())


def test_while_a_run_is_open_its_run_json_says_running(isolated: Path) -> None:
    """Scalable writes run.json at the start (status running, no finished_at) and again at the end."""
    manifest = isolated / "scalable.yaml"
    manifest.write_text(MANIFEST.format(target=""))
    with ScalableSession.from_yaml(manifest, target="local") as session:
        run_dir = session.ledger.stream_path(session.run_id).parent
        run = scalable_json(run_dir / "run.json")
        assert (run["status"], run["finished_at"], run["target_name"]) == ("running", None, "local")
        assert not (run_dir / "summary.json").exists()
        assert session.ledger.audit(session.run_id, content=False).ok
    assert scalable_json(run_dir / "run.json")["status"] == "completed"


def explode() -> None:
    """A task that fails."""
    raise LookupError("no such station")


def test_failures_count_as_scalable_counts_them(isolated: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """A failed task and a run ended by an error: failed counts, failure classes and the run's status."""
    manifest = isolated / "scalable.yaml"
    manifest.write_text(MANIFEST.format(target=""))
    with pytest.raises(RuntimeError), ScalableSession.from_yaml(manifest, target="local") as session:
        with pytest.raises(LookupError):
            session.submit(explode, task_name="fit").result()
        raise RuntimeError("give up")
    summary = scalable_json(session.ledger.stream_path(session.run_id).with_name("summary.json"))
    assert summary["run"]["status"] == "failed"
    assert (summary["counts"]["tasks_failed"], summary["counts"]["failure_events"]) == (1, 2)
    assert summary["failures"] == {"classes": {"LookupError": 1, "RuntimeError": 1}}
    report = cli("report", "--latest")
    assert report.exit_code == 0, report.output
    assert "status: failed" in report.stdout and "  failed: 1" in report.stdout


def test_run_files_rebuilt_from_the_stream_equal_the_ones_written(isolated: Path) -> None:
    """run.json and summary.json are derived state: deleted and rebuilt from the stream, they are byte for byte the same."""
    manifest = isolated / "scalable.yaml"
    manifest.write_text(MANIFEST.format(target=""))
    session, _ = run_workflow(manifest, "local", isolated / "data", isolated / "home")
    run_dir = session.ledger.stream_path(session.run_id).parent
    written = {name: (run_dir / name).read_bytes() for name in ("run.json", "summary.json")}
    for name in written:
        (run_dir / name).unlink()
    ledger = Ledger.open(isolated / "home" / "runs", isolated / "home" / "ledger")
    rebuilt = ledger.rebuild_summaries()
    assert {p.name: p.read_bytes() for p in rebuilt} == written


def test_report_without_a_run_is_one_line_and_exit_2(isolated: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """No run at all, an unknown run id, or neither option: one line on stderr, exit 2."""
    Path(".scalable/runs").mkdir(parents=True)
    for args, message in [
        (("--latest",), "error: no run in the ledger under "),
        (("--run-id", "run-nope"), "error: run 'run-nope' is not in the ledger; list runs with: scalable ledger runs"),
        ((), "error: say which run to report: --run-id ID, or --latest for the run that started last"),
    ]:
        result = cli("report", *args)
        assert result.exit_code == 2, result.output
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1
        assert result.stderr.startswith(message)
    missing = cli("report", "--latest", "--runs-dir", "nowhere")
    assert missing.exit_code == 2 and missing.stderr.startswith(f"error: no ledger at '{isolated / 'nowhere'}'")
    assert "the runs directory (--runs-dir or SCALABLE_RUNS_DIR) does not exist" in missing.stderr
