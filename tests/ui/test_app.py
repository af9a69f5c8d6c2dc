"""The explorer's JSON endpoints, served for real (uvicorn on 127.0.0.1), over a small ledger with real stored bytes."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scalable.artifacts import build_artifact_store
from scalable.errors import IntegrityError
from scalable.ledger import bind
from scalable.ledger.log import Ledger
from scalable.ui import running
from scalable.ui.download import CHUNK, verified_download
from tests.ui.conftest import Explorer

LOCK = "ab" * 32
KEY = "c" * 64


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def filled(isolated: Path, ledger: Ledger) -> Ledger:
    """Two runs: A (project alpha) stores out.csv, records report.txt, writes a cache entry;
    B (project beta, failed) stores another out.csv and a directory, changes report.txt, hits A's entry."""
    store = build_artifact_store(isolated / "store")
    report = isolated / "outputs" / "report.txt"
    with bind(run_id="run-a"):
        ledger.append(
            {
                "event_type": "run",
                "op": "started",
                "attrs": {"project": "alpha", "target": "local", "manifest_lock": LOCK},
            }
        )
        ledger.append({"event_type": "task", "op": "started", "task_name": "make", "attrs": {"task_id": "t1"}})
        store.put(_write(isolated / "work" / "out.csv", "a,b\n1,2\n"), "runs/run-a/out.csv")
        _write(report, "first report\n")
        digest = hashlib.sha256(report.read_bytes()).hexdigest()
        ledger.append(
            {
                "event_type": "artifact",
                "op": "recorded",
                "artifact_name": "report.txt",
                "location": report.as_uri(),
                "digest": digest,
                "size_bytes": report.stat().st_size,
                "task_name": "make",
            }
        )
        ledger.append({"event_type": "cache", "op": "miss", "function_name": "m.f", "key_digest": KEY})
        ledger.append(
            {"event_type": "cache", "op": "write", "function_name": "m.f", "key_digest": KEY, "digest": "d" * 64}
        )
        ledger.append(
            {"event_type": "task", "op": "finished", "task_name": "make", "duration_s": 0.5, "attrs": {"task_id": "t1"}}
        )
    ledger.finish_run("run-a")
    with bind(run_id="run-b"):
        ledger.append({"event_type": "run", "op": "started", "attrs": {"project": "beta", "target": "local"}})
        ledger.append({"event_type": "task", "op": "started", "task_name": "make", "attrs": {"task_id": "t2"}})
        ledger.append(
            {"event_type": "cache", "op": "hit", "function_name": "m.f", "key_digest": KEY, "digest": "d" * 64}
        )
        out = store.put(_write(isolated / "work" / "out.csv", "a,b\n1,3\n"), "runs/run-b/out.csv")
        model = isolated / "work" / "model"
        _write(model / "weights.bin", "0123456789" * 50)
        _write(model / "sub" / "config.json", '{"layers": 2}\n')
        store.put(model, "runs/run-b/model")
        _write(report, "second report, longer\n")
        ledger.append(
            {
                "event_type": "artifact",
                "op": "recorded",
                "artifact_name": "report.txt",
                "location": report.as_uri(),
                "digest": hashlib.sha256(report.read_bytes()).hexdigest(),
                "size_bytes": report.stat().st_size,
                "inputs": [out.digest],
                "task_name": "make",
            }
        )
        ledger.append(
            {
                "event_type": "task",
                "op": "failed",
                "task_name": "make",
                "duration_s": 0.2,
                "attrs": {"task_id": "t2", "error_type": "ValueError", "error": "bad row"},
            }
        )
    ledger.finish_run("run-b", "failed")
    return ledger


@pytest.fixture
def explorer(filled: Ledger) -> Iterator[Explorer]:
    """The explorer over ``filled``, in this process, on a free loopback port."""
    with running(filled) as bound:
        yield Explorer(bound.url.rstrip("/"), proc=None)  # type: ignore[arg-type]


def _artifact(ledger: Ledger, name: str, run: str) -> dict[str, Any]:
    rows = ledger.query(
        f"SELECT location, digest, kind FROM artifacts WHERE artifact_name = '{name}' AND run_id = '{run}' "
        "AND op IN ('put', 'recorded')"
    ).to_pylist()
    assert len(rows) == 1
    return rows[0]


def test_the_runs_endpoint_filters_sorts_and_pages(explorer: Explorer) -> None:
    """project, status, since/until, text, sort, order, limit and offset narrow and order the rows; facets count all runs."""
    every = explorer.json("/api/runs")
    assert [r["run_id"] for r in every["runs"]] == ["run-b", "run-a"]  # newest first
    assert (every["total"], every["all_runs"], every["projects"], every["statuses"]) == (
        2,
        2,
        {"alpha": 1, "beta": 1},
        {"completed": 1, "failed": 1},
    )
    assert [r["run_id"] for r in explorer.json("/api/runs", {"project": "alpha"})["runs"]] == ["run-a"]
    assert [r["run_id"] for r in explorer.json("/api/runs", {"status": "failed"})["runs"]] == ["run-b"]
    assert [r["run_id"] for r in explorer.json("/api/runs", {"q": "MODEL"})["runs"]] == ["run-b"]  # an artifact's name
    assert [r["run_id"] for r in explorer.json("/api/runs", {"q": "make"})["runs"]] == ["run-b", "run-a"]  # a task
    started_b = every["runs"][0]["started_at"]
    assert [r["run_id"] for r in explorer.json("/api/runs", {"since": started_b})["runs"]] == ["run-b"]
    assert [r["run_id"] for r in explorer.json("/api/runs", {"until": every["runs"][1]["started_at"]})["runs"]] == [
        "run-a"
    ]
    assert explorer.json("/api/runs", {"until": "2000-01-01"})["runs"] == []
    assert [r["run_id"] for r in explorer.json("/api/runs", {"sort": "run_id", "order": "asc"})["runs"]] == [
        "run-a",
        "run-b",
    ]
    page = explorer.json("/api/runs", {"sort": "run_id", "order": "asc", "limit": 1, "offset": 1})
    assert ([r["run_id"] for r in page["runs"]], page["total"]) == (["run-b"], 2)
    past = explorer.json("/api/runs", {"offset": 5})
    assert (past["runs"], past["total"]) == ([], 2)
    b = every["runs"][0]
    assert (b["tasks"], b["failed_tasks"], b["cache_hits"], b["artifacts"]) == (1, 1, 1, 3)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"sort": "event_id; DROP"}, "cannot sort runs by 'event_id; DROP'"),
        ({"since": "last week"}, "time 'last week' is not ISO-8601"),
        ({"limit": "0"}, "limit=0 is out of range"),
        ({"limit": "ten"}, "limit='ten' is not a whole number"),
        ({"offset": "-1"}, "offset=-1 is out of range"),
    ],
)
def test_bad_parameters_are_one_line_errors(explorer: Explorer, params: dict[str, str], message: str) -> None:
    """A bad value answers 400 with the one line the CLI would print."""
    answer = explorer.request("/api/runs", params)
    assert answer.status == 400
    error = answer.json()["error"]
    assert error.startswith("error: ") and message in error and "\n" not in error


def test_a_run_names_its_manifest_lock_its_workers_and_who_wrote_each_cache_hit(explorer: Explorer) -> None:
    """The run endpoint carries the lock, tasks with their worker, artifacts, and the writer run of each hit."""
    a = explorer.json("/api/runs/run-a")
    assert a["manifest_lock"] == LOCK and a["run"]["project"] == "alpha"
    assert [(t["task_name"], t["status"], t["worker"].count(":")) for t in a["tasks"]] == [("make", "finished", 2)]
    b = explorer.json("/api/runs/run-b")
    assert [(c["op"], c["writer_run"]) for c in b["cache"]] == [("hit", "run-a")]
    assert [(t["status"], t["error"]) for t in b["tasks"]] == [("failed", "bad row")]
    assert {x["artifact_name"] for x in b["artifacts"]} == {"out.csv", "model", "report.txt"}
    assert b["finished"]["status"] == "failed" and "seal" in b["finished"]
    missing = explorer.request("/api/runs/run-nope")
    assert missing.status == 404
    assert missing.json()["error"] == "error: run 'run-nope' is not in the ledger; list runs with: scalable ledger runs"


def test_compare_lists_changed_added_and_removed_artifacts(explorer: Explorer) -> None:
    """/api/compare is Ledger.diff plus both runs' summaries."""
    doc = explorer.json("/api/compare", {"a": "run-a", "b": "run-b"})
    statuses = {row["name"]: row["status"] for row in doc["artifacts"]}
    assert statuses == {"out.csv": "changed", "report.txt": "changed", "model": "added"}
    assert doc["differs"] and doc["a"]["run_id"] == "run-a" and doc["b"]["status"] == "failed"
    assert [(t["task_name"], t["status"]) for t in doc["tasks"]] == [("make", "changed")]
    assert (
        explorer.request("/api/compare", {"a": "run-a"}).json()["error"] == "error: the query parameter b= is missing"
    )


def test_an_artifact_lists_every_version_at_its_location_and_who_made_and_used_each(
    explorer: Explorer, filled: Ledger
) -> None:
    """The report's location has two versions, oldest first, the newer current; each with its runs and lineage edges."""
    report = _artifact(filled, "report.txt", "run-b")
    doc = explorer.json("/api/artifact", {"location": report["location"]})
    versions = doc["versions"]
    assert len(versions) == 2 and doc["current"] == versions[1]["digest"] == report["digest"]
    assert [[e["run_id"] for e in v["events"]] for v in versions] == [["run-a"], ["run-b"]]
    out_b = _artifact(filled, "out.csv", "run-b")
    assert {(e["src"], e["relation"]) for e in versions[1]["came_from"]} >= {(out_b["digest"], "derived_from")}
    one = explorer.json("/api/artifact", {"digest": out_b["digest"]})
    assert one["versions"][0]["locations"] == [out_b["location"]]
    assert {(e["dst"], e["relation"]) for e in one["versions"][0]["went_to"]} >= {(report["digest"], "derived_from")}
    assert [v["current_at"] for v in versions] == [[], [report["location"]]]  # only the newest can be downloaded
    assert explorer.request("/api/artifact").status == 400
    assert explorer.request("/api/artifact", {"location": "file:///nowhere"}).status == 404
    with bind(run_id="run-c"):
        filled.append(
            {"event_type": "artifact", "op": "deleted", "location": report["location"], "digest": report["digest"]}
        )
    gone = explorer.json("/api/artifact", {"location": report["location"]})
    assert gone["current"] is None and [v["current_at"] for v in gone["versions"]] == [[], []]


def test_a_download_sends_exactly_the_recorded_bytes(explorer: Explorer, filled: Ledger, isolated: Path) -> None:
    """A file comes back byte for byte as an attachment; a directory as a tar whose files are the tree's."""
    out = _artifact(filled, "out.csv", "run-b")
    answer = explorer.request("/api/download", {"location": out["location"], "digest": out["digest"]})
    assert answer.status == 200 and answer.body == b"a,b\n1,3\n"
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["content-disposition"] == "attachment; filename*=UTF-8''out.csv"
    assert answer.headers["content-security-policy"] == "sandbox" and answer.headers["content-length"] == "8"
    model = _artifact(filled, "model", "run-b")
    tree = explorer.request("/api/download", {"location": model["location"], "digest": model["digest"]})
    assert tree.status == 200 and tree.headers["content-type"] == "application/x-tar"
    assert int(tree.headers["content-length"]) == len(tree.body)
    with tarfile.open(fileobj=io.BytesIO(tree.body)) as archive:
        files = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]
    assert files == {"sub/config.json": b'{"layers": 2}\n', "weights.bin": b"0123456789" * 50}


def test_a_download_whose_bytes_changed_or_went_is_refused(explorer: Explorer, filled: Ledger, isolated: Path) -> None:
    """Bytes that no longer hash to the digest are refused (409) with the reason; a missing artifact is 404; so is an old version."""
    old = _artifact(filled, "report.txt", "run-a")
    answer = explorer.request("/api/download", {"location": old["location"], "digest": old["digest"]})
    assert answer.status == 409
    assert (
        "no longer match the recorded digest" in answer.json()["error"]
        and "scalable ledger audit" in answer.json()["error"]
    )
    out = _artifact(filled, "out.csv", "run-b")
    path = isolated / "store" / "runs" / "run-b" / "out.csv"
    path.write_text("a,b\n1,4\n")
    assert explorer.request("/api/download", {"location": out["location"], "digest": out["digest"]}).status == 409
    path.unlink()
    gone = explorer.request("/api/download", {"location": out["location"], "digest": out["digest"]})
    assert gone.status == 404 and "nothing is there" in gone.json()["error"]
    model = _artifact(filled, "model", "run-b")
    (isolated / "store" / "runs" / "run-b" / "model" / "extra.txt").write_text("added later\n")
    assert explorer.request("/api/download", {"location": model["location"], "digest": model["digest"]}).status == 409


def test_a_location_that_cannot_be_read_is_one_line(explorer: Explorer, filled: Ledger, isolated: Path) -> None:
    """A recorded location that cannot be opened (a path through a file) answers with the storage failure's one line."""
    blocker = _write(isolated / "plain.txt", "x\n")
    location = (blocker / "inner.csv").as_uri()
    with bind(run_id="run-odd"):
        filled.append({"event_type": "artifact", "op": "recorded", "location": location, "digest": "e" * 64})
    answer = explorer.request("/api/download", {"location": location, "digest": "e" * 64})
    assert answer.status == 400
    assert answer.json()["error"].startswith(f"error: cannot read the artifact '{location}': a file is in the way")


def test_bytes_that_change_while_sent_never_arrive_whole(filled: Ledger, isolated: Path) -> None:
    """The last block is held back until the second hash: a file changed mid-download raises before it ends."""
    big = isolated / "store" / "big.bin"
    big.write_bytes(b"x" * (3 * CHUNK))
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    with bind(run_id="run-big"):
        filled.append(
            {
                "event_type": "artifact",
                "op": "put",
                "location": big.as_uri(),
                "digest": digest,
                "artifact_name": "big.bin",
            }
        )
    download = verified_download(filled, big.as_uri(), digest)
    first = next(download.chunks)
    big.write_bytes(b"y" * (3 * CHUNK))
    sent = len(first)
    with pytest.raises(IntegrityError, match="no longer match"):
        for chunk in download.chunks:
            sent += len(chunk)
    assert sent < download.size


OUTSIDE = (
    "/etc/passwd",
    "file:///etc/passwd",
    "../../../../etc/passwd",
    "file:///etc/../etc/passwd",
    "store/../../etc/passwd",
)


@pytest.mark.parametrize("location", OUTSIDE)
def test_path_like_parameters_cannot_read_outside_the_ledger_and_stores(explorer: Explorer, location: str) -> None:
    """A location the ledger does not record is never opened, whatever digest is given; pages and lineage refuse it too."""
    digest = hashlib.sha256(Path("/etc/passwd").read_bytes()).hexdigest()
    answer = explorer.request("/api/download", {"location": location, "digest": digest})
    assert answer.status == 404 and "only recorded artifacts can be downloaded" in answer.json()["error"]
    assert b"root:" not in answer.body
    assert explorer.request("/api/artifact", {"location": location}).status == 404
    assert explorer.request("/api/lineage", {"node": location}).status == 404


def test_files_outside_the_static_assets_and_the_ledger_cannot_be_reached(explorer: Explorer) -> None:
    """Traversal out of /static, odd run ids and SQL that reads files are refused."""
    for path in (
        "/static/../pyproject.toml",
        "/static/%2e%2e/%2e%2e/pyproject.toml",
        "/static/..%2f..%2f..%2fpyproject.toml",
        "/static/vendor/../../app.py",
        "/static//etc/passwd",
    ):
        answer = explorer.request(path)
        assert answer.status == 404 and b"root:" not in answer.body and b"[build-system]" not in answer.body, path
    for run in ("..", "..%2F..%2Fetc%2Fpasswd", "run-a'%20OR%20'1'='1"):
        assert explorer.request(f"/api/runs/{run}").status == 404, run
    for sql in (
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM glob('/etc/*')",
    ):
        answer = explorer.request("/api/sql", {"q": sql})
        assert answer.status in (400, 403) and b"root:" not in answer.body, sql
    assert explorer.request("/api/download", {"location": "x", "digest": "../../etc"}).status == 400


WRITES = (
    "INSERT INTO events SELECT * FROM events",
    "UPDATE events SET op = 'x'",
    "DELETE FROM events",
    "DROP VIEW runs",
    "CREATE TABLE t AS SELECT 1",
    "COPY (SELECT 1) TO 'copied.csv'",
    "EXPLAIN ANALYZE COPY (SELECT 1) TO 'copied.csv'",
    "ATTACH 'other.db' AS other",
    "SET threads = 1",
    "INSTALL httpfs",
    "LOAD httpfs",
    "EXPORT DATABASE 'exported'",
    "CHECKPOINT",
    "SELECT 1; DELETE FROM events",
)


def test_no_endpoint_accepts_a_write(explorer: Explorer, isolated: Path) -> None:
    """POST, PUT, DELETE, PATCH and OPTIONS are refused on every route; every writing SQL statement is refused."""
    routes = [
        "/",
        "/runs",
        "/runs/run-a",
        "/compare/run-a/run-b",
        "/artifact",
        "/lineage",
        "/audit",
        "/sql",
        "/login",
        "/static/app.js",
        *(
            f"/api/{p}"
            for p in (
                "info",
                "runs",
                "runs/run-a",
                "audit-states",
                "compare",
                "artifact",
                "download",
                "lineage",
                "audit",
                "audit/stream",
                "cookbook",
                "sql",
            )
        ),
    ]
    for route in routes:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            answer = explorer.request(route, method=method)
            assert answer.status == 405, (method, route)
            assert answer.headers["allow"] == "GET, HEAD"
    for statement in WRITES:
        answer = explorer.request("/api/sql", {"q": statement})
        assert answer.status in (400, 403), statement
        assert answer.json()["error"].startswith("error: "), statement
    assert (
        not (isolated / "copied.csv").exists()
        and not (isolated / "other.db").exists()
        and not (isolated / "exported").exists()
    )
    assert explorer.request("/api/runs", method="HEAD").status == 200


def test_every_endpoint_answers_and_pages_share_one_document(
    explorer: Explorer, filled: Ledger, isolated: Path
) -> None:
    """Each endpoint answers a script's GET with JSON; each page URL serves the one HTML document; headers lock it down."""
    out = _artifact(filled, "out.csv", "run-b")
    info = explorer.json("/api/info")
    assert {p["name"] for p in info["vendored"]} == {
        "cytoscape",
        "cytoscape-dagre",
        "@dagrejs/dagre",
        "@dagrejs/graphlib",
    }
    states = explorer.json("/api/audit-states", {"run": ["run-a", "run-b", "run-x"]})
    assert states["run-a"] == {"ok": True, "problems": 0, "events": 8}
    assert states["run-b"] == {"ok": True, "problems": 0, "events": 8}
    unknown = states["run-x"]
    assert (unknown["ok"], unknown["problems"]) == (None, 0) and unknown["error"].startswith(
        "run 'run-x' has no stream"
    )
    audit = explorer.json("/api/audit", {"content": 1})
    assert (audit["ok"], audit["runs"], audit["artifacts"]) == (True, 2, 4)
    assert explorer.json("/api/audit", {"run": "run-a"})["artifacts"] == 0  # structure only, by default
    (isolated / "store" / "runs" / "run-a" / "out.csv").write_text("tampered\n")
    lines = [json.loads(line) for line in explorer.request("/api/audit/stream", {"content": 1}).body.splitlines()]
    assert lines[-1]["event"] == "done" and {e["event"] for e in lines[:-1]} == {"progress"}
    last = {e["phase"]: (e["done"], e["total"]) for e in lines[:-1]}
    assert last["artifacts"] == (4, 4) and last["streams"][0] == last["streams"][1] > 0
    report = lines[-1]["report"]
    assert [(p["run_id"], p["kind"]) for p in report["problems"]] == [("run-a", "content-changed")]
    assert len(explorer.json("/api/cookbook")) == 12
    odd = explorer.json("/api/sql", {"q": "SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b, [1.5, '-inf'::DOUBLE] AS c"})
    assert odd["rows"] == [["NaN", "Infinity", [1.5, "-Infinity"]]]
    sql = explorer.json("/api/sql", {"q": "SELECT run_id, run_id FROM runs ORDER BY 1"})
    assert sql["columns"] == ["run_id", "run_id"] and sql["rows"] == [["run-a", "run-a"], ["run-b", "run-b"]]
    lineage = explorer.json("/api/lineage", {"node": out["digest"], "direction": "down"})
    assert lineage["root"] == out["digest"] and lineage["nodes"] and lineage["edges"]
    shell = explorer.request("/runs").body
    for page in ("/", "/runs/run-a", "/compare/run-a/run-b", "/artifact?digest=x", "/lineage", "/audit", "/sql?q=1"):
        answer = explorer.request(page)
        if page == "/":
            assert (answer.status, answer.headers["location"]) == (303, "/runs")
            continue
        assert answer.status == 200 and answer.body == shell, page
    headers = explorer.request("/runs").headers
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert (
        "default-src 'self'" in headers["content-security-policy"]
        and "frame-ancestors 'none'" in headers["content-security-policy"]
    )
    assert explorer.request("/api/runs").headers["cache-control"] == "no-store"
    unknown = explorer.request("/api/nothing")
    assert unknown.status == 404 and unknown.json()["error"] == "error: no endpoint /api/nothing; see /api/info"


def test_the_lineage_endpoint_filters_relations_and_limits_nodes(explorer: Explorer, filled: Ledger) -> None:
    """relation= keeps those edges and the nodes still reached; limit= keeps the nearest nodes and counts the rest."""
    out = _artifact(filled, "out.csv", "run-b")
    full = explorer.json("/api/lineage", {"node": out["digest"], "direction": "both"})
    graph = filled.lineage(out["digest"], direction="both")
    assert {n["id"] for n in full["nodes"]} == set(graph.nodes)
    # The walked data flow, then the runs around it as context: every edge between the nodes.
    around = [e for e in graph.context if e["src"] in graph.nodes and e["dst"] in graph.nodes]
    assert sorted((e["src"], e["dst"], e["relation"]) for e in full["edges"]) == sorted(
        (e["src"], e["dst"], e["relation"]) for e in graph.edges + around
    )
    assert {e["relation"] for e in full["edges"]} >= {"derived_from", "generated"}
    assert (
        all(n["label"] and n["run"] and "task" in n for n in full["nodes"])
        and not full["collapsed"]
        and full["truncated"] == 0
    )
    derived = explorer.json("/api/lineage", {"node": out["digest"], "direction": "both", "relation": "derived_from"})
    assert {e["relation"] for e in derived["edges"]} == {"derived_from"}
    assert {n["id"] for n in derived["nodes"]} == {out["digest"], _artifact(filled, "report.txt", "run-b")["digest"]}
    assert derived["shown_relations"] == ["derived_from"]
    nothing = explorer.json("/api/lineage", {"node": out["digest"], "relation": "no-such"})
    assert nothing["unknown_relations"] == ["no-such"] and [n["id"] for n in nothing["nodes"]] == [out["digest"]]
    one = explorer.json("/api/lineage", {"node": out["digest"], "direction": "both", "limit": 1})
    assert [n["id"] for n in one["nodes"]] == [out["digest"]] and one["truncated"] == len(full["nodes"]) - 1
    assert explorer.request("/api/lineage", {"node": out["digest"], "direction": "sideways"}).status == 400
    assert explorer.request("/api/lineage", {"node": out["digest"], "depth": "0"}).status == 400
