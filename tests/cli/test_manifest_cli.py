"""`scalable manifest check`: prints what a Scalable-style manifest declares, or one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalable.manifest import load_manifest
from tests.manifest.test_corpus import ENV, FULL
from tests.manifest.test_errors import BAD


def test_check_prints_every_target_with_its_provider_and_the_lock(
    isolated: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """One row per target: provider, whether it runs here, options, overlay, and the lock."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = isolated / "scalable.yaml"
    path.write_text(FULL)
    result = cli("manifest", "check", str(path), "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    lock = load_manifest(path).lock
    assert [(r["target"], r["provider"], r["runs_here"]) for r in rows] == [
        ("local", "local", True),
        ("hpc", "slurm", True),
        ("cluster", "dask", True),
        ("k8s", "kubernetes", False),
        ("batch", "aws", False),
        ("cloud", "gcp", False),
    ]
    assert {r["lock"] for r in rows} == {lock}
    assert rows[1]["options"]["account"] == "gcims" and rows[1]["overlay"] == "hpc"
    assert result.stderr == ""


def test_check_with_a_target_applies_its_overlay(isolated: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """--target checks that target as a run would: its overlay applied (another lock), one row."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = isolated / "scalable.yaml"
    path.write_text(FULL)
    result = cli("manifest", "check", str(path), "--target", "hpc", "--format", "json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    assert (row["target"], row["overlay"], row["options"]["queue"]) == ("hpc", "hpc", "long")
    assert row["lock"] == load_manifest(path, target_name="hpc").lock != load_manifest(path).lock


def test_check_prints_warnings_on_stderr_and_exits_0(isolated: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """Options a provider ignores and Scalable's notes are one 'warning:' line each on stderr."""
    path = isolated / "scalable.yaml"
    path.write_text(
        "version: 1\nproject: {name: x}\ntargets:\n  local: {provider: local, threads_per_worker: 1, containers: none, gpus: 2}\n"
    )
    result = cli("manifest", "check", str(path))
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        f"warning: {path}:1: W_NO_TASKS tasks: no tasks; events of tasks carry no component",
        f"warning: {path}:4: W_UNKNOWN_LOCAL_OPTION targets.local.gpus: local targets do not use option 'gpus'; it is ignored "
        "(known: max_workers, threads_per_worker, processes, containers, dashboard_address)",
    ]


def test_check_without_targets_shows_the_implicit_local_target(isolated: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """A manifest without targets still runs on local threads, and says so."""
    (isolated / "scalable.yaml").write_text("version: 1\nproject: {name: x}\n")
    result = cli("manifest", "check", "--format", "json")
    assert result.exit_code == 0
    assert [(r["target"], r["provider"], r["options"]) for r in json.loads(result.stdout)] == [("local", "local", {})]


@pytest.mark.parametrize(("text", "code", "line", "key", "cls", "message"), BAD)
def test_every_bad_manifest_exits_2_with_one_line(
    isolated: Path,
    cli,
    text: str,
    code: str,
    line: int | None,
    key: str,
    cls: type,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    """Each invalid manifest of the corpus: exit 2, one stderr line with file, line, code and key, nothing on stdout."""
    path = isolated / "scalable.yaml"
    path.write_text(text)
    result = cli("manifest", "check", str(path))
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    where = f"{path}:{line}" if line else str(path)
    assert lines[0].startswith(f"error: {where}: {code} {key}: ")
    assert result.stdout == ""


def test_run_time_errors_of_a_target_exit_2(isolated: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """--target of an unknown target, or of a slurm target without a port, exits 2 with one line."""
    monkeypatch.delenv("COMM_PORT", raising=False)
    path = isolated / "scalable.yaml"
    path.write_text("version: 1\nproject: {name: x}\ntargets:\n  hpc: {provider: slurm}\n")
    unknown = cli("manifest", "check", str(path), "--target", "gpu")
    assert (
        unknown.exit_code == 2
        and "E_UNKNOWN_TARGET targets: unknown target 'gpu'; known targets: hpc, local" in unknown.stderr
    )
    port = cli("manifest", "check", str(path), "--target", "hpc")
    assert port.exit_code == 2 and f"{path}:4: E_MISSING_COMM_PORT targets.hpc: comm_port is required" in port.stderr
    assert len(port.stderr.splitlines()) == 1
    missing = cli("manifest", "check", "absent.yaml")
    assert missing.exit_code == 2 and "absent.yaml" in missing.stderr
