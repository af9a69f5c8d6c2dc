"""The reference workflow: exact lineage across runs and the cache, replay and content audits on object stores."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from scalable import ScalableSession, cacheable
from scalable.cache import FileType
from scalable.ledger import bus
from scalable.ledger.log import Ledger
from tests.conftest import CliInvoker

MANIFEST = "version: 1\nproject:\n  name: ref\ntargets:\n  local: {provider: local, max_workers: 2}\n"
COMPUTED: list[str] = []


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@cacheable(path=FileType)
def summarize(path: str) -> dict[str, int]:
    """Task B: an expensive summary of A's output (cached)."""
    COMPUTED.append(path)
    return {"rows": len(Path(path).read_text().splitlines())}


def task_a(session: Any) -> str:
    """Task A: derive a.csv from raw.csv and record it with its input."""
    Path("a.csv").write_text(Path("raw.csv").read_text().upper())
    session.record_artifact("a.csv", inputs=["raw.csv"])
    return "a.csv"


def task_c(session: Any, summary: dict[str, int], tag: str) -> str:
    """Task C: write the final output from B's result, store it and record what it came from."""
    Path("c.txt").write_text(f"rows={summary['rows']} run={tag}\n")
    session.put("c.txt")
    session.record_artifact("c.txt", kind="result", inputs=["a.csv"])
    return "c.txt"


def _run(tag: str) -> tuple[str, str]:
    """One run of the workflow; returns its run id and the digest of its output."""
    with ScalableSession.from_yaml("scalable.yaml", target="local") as session:
        session.submit(task_a, session).result()
        summary = session.submit(summarize, str(Path("a.csv").resolve())).result()
        session.submit(task_c, session, summary, tag).result()
        run_id = session.run_id
    bus.reset_default()
    return run_id, _sha(Path("c.txt"))


@pytest.fixture
def workflow(isolated: Path) -> dict[str, str]:
    """Run the reference workflow twice; return the ids and digests the truth is built from."""
    (isolated / "scalable.yaml").write_text(MANIFEST)
    (isolated / "raw.csv").write_text("x,y\n1,2\n3,4\n")
    COMPUTED.clear()
    run1, c1 = _run("one")
    run2, c2 = _run("two")
    assert len(COMPUTED) == 1  # the second run reused B's cached result
    ledger = Ledger.open()
    value = ledger.query("SELECT digest FROM cache WHERE op = 'write'").column(0).to_pylist()
    return {
        "run1": run1,
        "run2": run2,
        "raw": (isolated / "raw.csv").as_uri(),
        "a": _sha(isolated / "a.csv"),
        "b": value[0],
        "c1": c1,
        "c2": c2,
    }


def _truth(w: dict[str, str], runs: tuple[str, ...] = ("run1", "run2")) -> set[tuple[str, str, str]]:
    """The true edges the workflow's runs make (by hand, from what each task read and wrote)."""
    r1, r2, raw, a, b, c1, c2 = (w[k] for k in ("run1", "run2", "raw", "a", "b", "c1", "c2"))
    by_run = {
        "run1": {
            (r1, "generated", a),
            (raw, "derived_from", a),
            (raw, "used", r1),
            (r1, "generated", b),
            (a, "derived_from", b),
            (a, "used", r1),
            (r1, "generated", c1),
            (a, "derived_from", c1),
        },
        "run2": {
            (r2, "generated", a),
            (raw, "derived_from", a),
            (raw, "used", r2),
            (b, "used", r2),
            (r1, "reused", r2),
            (r2, "generated", c2),
            (a, "derived_from", c2),
            (a, "used", r2),
        },
    }
    return set().union(*(by_run[r] for r in runs))


def _edges(ledger: Ledger, as_of: str | None = None) -> set[tuple[str, str, str]]:
    rows = ledger.query("SELECT DISTINCT src, relation, dst FROM lineage", as_of=as_of).to_pylist()
    return {(r["src"], r["relation"], r["dst"]) for r in rows}


def test_lineage_equals_the_truth_and_as_of_shows_only_the_first_run(workflow: dict[str, str]) -> None:
    """Every true edge is found and no other (precision = recall = 1); as_of between runs shows run 1 only."""
    ledger = Ledger.open()
    assert _edges(ledger) == _truth(workflow)
    first_end = ledger.query(f"SELECT finished_at FROM runs WHERE run_id = '{workflow['run1']}'").column(0)[0].as_py()
    early = _edges(ledger, as_of=first_end)
    assert early == _truth(workflow, ("run1",))
    graph = ledger.lineage(workflow["c2"])
    assert {workflow["run1"], workflow["run2"], workflow["a"], workflow["b"]} <= set(graph.nodes)


def test_the_audit_passes_on_the_clean_ledger(workflow: dict[str, str], cli: CliInvoker) -> None:
    """Both runs verify: chains, seals, and every stored artifact's bytes."""
    report = Ledger.open().audit()
    assert report.ok, [str(p) for p in report.problems]
    assert report.runs == 2 and report.artifacts >= 3
    assert cli("ledger", "audit").exit_code == 0


def _remote_workflow(isolated: Path, monkeypatch: pytest.MonkeyPatch, scheme: str, bucket: str) -> tuple[str, Path]:
    monkeypatch.setenv("SCALABLE_DEFAULT_STORAGE", f"{scheme}://{bucket}/store/")
    monkeypatch.setenv("SCALABLE_CACHE_REMOTE", f"{scheme}://{bucket}/cache/")
    monkeypatch.setenv("SCALABLE_CACHE_DIR", str(isolated / "machine-a-cache"))
    bus.reset_default()
    (isolated / "scalable.yaml").write_text(MANIFEST)
    (isolated / "raw.csv").write_text("x,y\n1,2\n3,4\n")
    COMPUTED.clear()
    run_id, _ = _run("remote")
    return run_id, isolated / "c.txt"


def test_replay_restores_bit_identical_and_warms_an_empty_cache_from_s3(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, s3_bucket: tuple[str, dict[str, Any]], cli: CliInvoker
) -> None:
    """On a machine with an empty cache, replay restores every stored artifact and --warm-cache makes the next call a hit."""
    run_id, output = _remote_workflow(isolated, monkeypatch, "s3", s3_bucket[0])
    original = output.read_bytes()
    output.unlink()
    monkeypatch.setenv("SCALABLE_CACHE_DIR", str(isolated / "machine-b-cache"))  # machine B: empty cache
    bus.reset_default()
    result = cli("ledger", "replay", run_id, "--into", "restored", "--warm-cache", "--format", "json")
    assert result.exit_code == 0, result.output
    (summary,) = json.loads(result.stdout)
    assert (summary["restored"], summary["warmed"], summary["missing_remote"]) == (1, 1, 0)
    assert (isolated / "restored" / "runs" / run_id / "c.txt").read_bytes() == original
    COMPUTED.clear()
    with ScalableSession.from_yaml("scalable.yaml", target="local") as session:
        session.submit(summarize, str((isolated / "a.csv").resolve())).result()
        b_run = session.run_id
    assert COMPUTED == []
    hit = Ledger.open().query(f"SELECT attrs FROM cache WHERE run_id = '{b_run}' AND op = 'hit'").column(0).to_pylist()
    assert len(hit) == 1 and '"tier":"local"' in hit[0]


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_content_audit_catches_changed_and_deleted_objects(
    scheme: str, isolated: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """A stored object whose bytes changed, or that was deleted, fails the audit on S3 and GCS alike."""
    import fsspec

    bucket, options = request.getfixturevalue("s3_bucket" if scheme == "s3" else "gcs_bucket")
    run_id, _ = _remote_workflow(isolated, monkeypatch, scheme, bucket)
    ledger = Ledger.open()
    assert ledger.audit().ok
    fs = fsspec.filesystem(scheme, **options)
    key = f"{bucket}/store/runs/{run_id}/c.txt"
    fs.pipe_file(key, b"tampered\n")
    problems = ledger.audit(run_id).problems
    assert [(p.kind, p.where) for p in problems] == [("content-changed", f"{scheme}://{key}")]
    fs.rm_file(key)
    problems = ledger.audit(run_id).problems
    assert [(p.kind, p.where) for p in problems] == [("content-missing", f"{scheme}://{key}")]


def _walks(ledger: Ledger, node: str) -> dict[str, Any]:
    """Everything lineage shows of ``node``: edge sets with depths both ways, nodes, and the SQL macros."""
    up, down = ledger.lineage(node, direction="up"), ledger.lineage(node, direction="down")
    return {
        "up": {(e["src"], e["relation"], e["dst"], e["run_id"], e["depth"]) for e in up.edges},
        "down": {(e["src"], e["relation"], e["dst"], e["run_id"], e["depth"]) for e in down.edges},
        "nodes": {**up.nodes, **down.nodes},
        "macro": {
            tuple(r.values())
            for r in ledger.query(f"SELECT src, relation, dst, depth FROM ancestors('{node}')").to_pylist()
        },
    }


def test_lineage_from_compacted_edges_equals_lineage_from_the_streams(workflow: dict[str, str], isolated: Path) -> None:
    """The compacted ledger's edges, walks, node descriptions and macros equal those computed from the JSON lines alone."""
    compacted = Ledger.open()
    compacted.compact()
    streams_only = Ledger.open(ledger_dir=isolated / "no-compaction")
    assert compacted.query("SELECT count(*) FROM events").column(0)[0].as_py() > 0
    assert list((Path(compacted.ledger_dir) / "lineage").glob("edges-by-dst-*.parquet"))
    assert _edges(compacted) == _edges(streams_only) == _truth(workflow)
    for node in (workflow["c2"], workflow["a"], workflow["raw"], workflow["run1"], workflow["b"]):
        assert _walks(compacted, node) == _walks(streams_only, node)
    first_end = (
        compacted.query(f"SELECT finished_at FROM runs WHERE run_id = '{workflow['run1']}'").column(0)[0].as_py()
    )
    assert _edges(compacted, as_of=first_end) == _edges(streams_only, as_of=first_end) == _truth(workflow, ("run1",))
    early = compacted.lineage(workflow["a"], direction="down", as_of=first_end)
    assert (
        workflow["run2"] not in early.nodes
        and early.edge_set() == streams_only.lineage(workflow["a"], direction="down", as_of=first_end).edge_set()
    )
