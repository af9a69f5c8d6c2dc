"""A whole workflow in a project directory named ``My Project #1 %20 ü``: session, audit, replay, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalable import FileType, Ledger, ScalableSession, cacheable
from scalable.ledger import bus
from scalable.uris import path_to_uri, uri_to_path
from tests.conftest import CliInvoker

NAME = "My Project #1 %20 ü"
MANIFEST = """\
version: 1
project:
  name: special
  default_storage: ./artifacts
targets:
  local: {provider: local, max_workers: 2}
  procs: {provider: local, processes: true, max_workers: 2}
components:
  prep: {description: prepare}
tasks:
  write_and_put: prep
"""


@pytest.fixture
def project(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory, a project whose path has a space, '#', '%20' and a non-ASCII letter."""
    folder = isolated / NAME
    folder.mkdir()
    monkeypatch.chdir(folder)
    bus.reset_default()
    (folder / "scalable.yaml").write_text(MANIFEST)
    return folder


def write_and_put(session: ScalableSession, name: str, text: str) -> str:
    """A task: write a file, store it in the default storage and record it."""
    Path(name).write_text(text)
    session.put(name)
    session.record_artifact(name, kind="result", inputs=["raw data.csv"])
    return name


@cacheable(data=FileType)
def count_rows(data: str) -> int:
    """A cached step over a file of the project."""
    return len(Path(data).read_text().splitlines())


@pytest.mark.parametrize("target", ["local", "procs"])
def test_session_audit_and_replay_in_a_special_directory(project: Path, cli: CliInvoker, target: str) -> None:
    """Locations are encoded file URIs of real paths: audit is ok and replay restores every byte."""
    Path("raw data.csv").write_text("a\nb\nc\n")
    (project / "out dir #2").mkdir()
    (project / "out dir #2" / "weights %41.bin").write_bytes(bytes(range(256)))
    with ScalableSession.from_yaml("scalable.yaml", target=target) as session:
        run_id = session.run_id
        names = [session.submit(write_and_put, session, f"part {i} #%41.txt", f"row {i}\n").result() for i in range(2)]
        session.put("out dir #2")
        session.put("raw data.csv", "inputs/raw data ü.csv")
        session.record_artifact("raw data.csv", kind="input")
        assert count_rows(str(project / "raw data.csv")) == 3

    ledger = Ledger.open()
    rows = ledger.query(
        f"SELECT op, location FROM artifacts WHERE run_id = '{run_id}' AND op IN ('put', 'recorded')"
    ).to_pylist()
    assert len(rows) == 7
    for row in rows:
        assert row["location"].startswith("file:///") and " " not in row["location"] and "#" not in row["location"]
        assert uri_to_path(row["location"]).exists(), row["location"]
    assert path_to_uri(project / "raw data.csv") in {r["location"] for r in rows}

    audit = cli("ledger", "audit")
    assert audit.exit_code == 0, audit.output
    assert "content-missing" not in audit.output
    report = ledger.audit(run_id)
    assert report.ok and report.artifacts == 7, [str(p) for p in report.problems]

    out = cli("ledger", "replay", run_id, "--into", "restored")
    assert out.exit_code == 0, out.output
    restored = project / "restored" / "runs" / run_id
    for name in names:
        assert (restored / name).read_bytes() == (project / name).read_bytes()
    assert (restored / "out dir #2" / "weights %41.bin").read_bytes() == bytes(range(256))
    assert (project / "restored" / "runs" / run_id / "inputs" / "raw data ü.csv").read_text() == "a\nb\nc\n"
    assert len(ledger.replay(run_id, into=project / "again").restored) == 4

    store_uri = path_to_uri(project / "artifacts")
    listed = cli("artifacts", "ls", store_uri, "--format", "json")
    assert listed.exit_code == 0
    keys = [r["key"] for r in json.loads(listed.stdout)]
    assert f"runs/{run_id}/part 0 #%41.txt" in keys
    got = cli("artifacts", "get", f"{store_uri}/runs/{run_id}/part%201%20%23%2541.txt", "fetched.txt", "--verify")
    assert got.exit_code == 0, got.output
    assert Path("fetched.txt").read_text() == "row 1\n"
    exists = cli("artifacts", "exists", f"{store_uri}/runs/{run_id}/part%200%20%23%2541.txt", "--root", store_uri)
    assert exists.exit_code == 0
    from scalable.ui.download import verified_download

    for row in ledger.query(
        f"SELECT location, digest, kind FROM artifacts WHERE run_id = '{run_id}' AND op = 'put'"
    ).to_pylist():
        download = verified_download(ledger, row["location"], row["digest"])
        sent = b"".join(download.chunks)
        assert len(sent) == download.size
        if not download.is_directory:
            assert sent == uri_to_path(row["location"]).read_bytes()
    lineage = ledger.lineage(path_to_uri(project / names[0]), direction="up").to_openlineage()
    datasets = {
        d["name"] for e in lineage for d in e.get("inputs", []) + e.get("outputs", []) if d["namespace"] == "file"
    }
    assert str(project / "raw data.csv") in datasets or str(project / names[0]) in datasets
