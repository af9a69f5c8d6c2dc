"""The reference workflow: exact lineage across runs and the cache, replay and content audits on object stores.

raw.csv -> clean.csv -> features.csv -> a cached fit() -> model.json, plus params.json, a
plots/ directory and report.txt. Run 2 is identical and served from the cache; run 3 has a
changed raw.csv. Every version's true ancestors, descendants and runs are written out below,
and lineage must give exactly those, from every way of asking.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from scalable import ScalableSession, cacheable
from scalable.cache import FileType
from scalable.digests import measure_path
from scalable.ledger import bus
from scalable.ledger.log import Ledger
from tests.conftest import CliInvoker

MANIFEST = "version: 1\nproject:\n  name: ref\ntargets:\n  local: {provider: local, max_workers: 2}\n"
RAW = {1: "id,value\n1,10\n2,-3\n3,7\n", 2: "id,value\n1,10\n2,-3\n3,7\n", 3: "id,value\n1,10\n2,-3\n3,7\n4,25\n"}
PARAMS = '{"scale": 0.5}\n'
FITS: list[str] = []


@cacheable(features=FileType, params=FileType)
def fit(features: str, params: str) -> dict[str, Any]:
    """The expensive step: a model of the features, cached by their content and the parameters'."""
    FITS.append(features)
    scale = json.loads(Path(params).read_text())["scale"]
    values = [int(line.split(",")[1]) for line in Path(features).read_text().splitlines()[1:]]
    return {"bias": sum(values) / len(values), "weights": [v * scale for v in values]}


def clean(session: Any) -> None:
    """Read raw.csv (recorded as the input it is) and drop the negative rows."""
    session.record_artifact("raw.csv", role="input")
    rows = Path("raw.csv").read_text().splitlines()
    Path("clean.csv").write_text("\n".join([rows[0], *(r for r in rows[1:] if "-" not in r)]) + "\n")
    session.record_artifact("clean.csv")


def featurize(session: Any) -> None:
    """Derive features.csv from clean.csv, naming its input."""
    rows = Path("clean.csv").read_text().splitlines()
    Path("features.csv").write_text(
        "\n".join([rows[0], *(f"{r.split(',')[0]},{int(r.split(',')[1]) * 2}" for r in rows[1:])]) + "\n"
    )
    session.record_artifact("features.csv", inputs=["clean.csv"])


def train(session: Any) -> None:
    """Fit the model (cached) on the features with params.json, and write model.json."""
    session.record_artifact("params.json", role="input")
    model = fit(str(Path("features.csv").resolve()), str(Path("params.json").resolve()))
    Path("model.json").write_text(json.dumps(model, sort_keys=True) + "\n")
    session.record_artifact("model.json")


def plot(session: Any) -> None:
    """Draw the plots/ directory from the model and the features."""
    model = json.loads(Path("model.json").read_text())
    Path("plots").mkdir(exist_ok=True)
    Path("plots/weights.txt").write_text(" ".join(str(w) for w in model["weights"]) + "\n")
    Path("plots/features.txt").write_text(Path("features.csv").read_text().replace(",", " "))
    session.record_artifact("plots", inputs=["model.json", "features.csv"])


def report(session: Any) -> None:
    """Summarize the clean data, the model and the plots in report.txt."""
    rows = len(Path("clean.csv").read_text().splitlines()) - 1
    bias = json.loads(Path("model.json").read_text())["bias"]
    Path("report.txt").write_text(f"rows={rows} bias={bias} plots={sorted(p.name for p in Path('plots').iterdir())}\n")
    session.record_artifact("report.txt", kind="result", inputs=["clean.csv", "model.json", "plots"])


def _run() -> str:
    """One run of the workflow: each step a task on the local target; returns the run id."""
    with ScalableSession.from_yaml("scalable.yaml", target="local") as session:
        for step in (clean, featurize, train, plot, report):
            session.submit(step, session).result()
        run_id = session.run_id
    bus.reset_default()
    return run_id


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def workflow(isolated: Path) -> dict[str, str]:
    """Run the workflow three times (the third on a changed raw.csv); return every version's digest by name."""
    (isolated / "scalable.yaml").write_text(MANIFEST)
    (isolated / "params.json").write_text(PARAMS)
    FITS.clear()
    v: dict[str, str] = {"params": _sha(PARAMS)}
    for run in (1, 2, 3):
        (isolated / "raw.csv").write_text(RAW[run])
        v[f"run{run}"] = _run()
        if run == 2:
            continue  # the same bytes as run 1, down to the model
        for name, path in (("raw", "raw.csv"), ("clean", "clean.csv"), ("features", "features.csv"),
                           ("model", "model.json"), ("plots", "plots"), ("report", "report.txt")):  # fmt: skip
            v[f"{name}.v{run}"] = measure_path(isolated / path).digest
        model = json.loads((isolated / "model.json").read_text())
        # The cached value as the cache stores it: compact JSON, the digest of those bytes.
        v[f"fit.v{run}"] = hashlib.sha256(json.dumps(model, separators=(",", ":")).encode()).hexdigest()
    assert len(FITS) == 2  # run 2 was served from the cache
    assert len({v[k] for k in v if not k.startswith("run")}) == 15  # 14 versions of runs 1 and 3, and params
    return v


def _truth(v: dict[str, str]) -> dict[str, Any]:
    """The true lineage of the workflow, by hand from what each step read and wrote."""
    flow: set[tuple[str, str, str]] = set()
    for r in (1, 3):
        raw, clean, features, value, model, plots, report = (
            v[f"{n}.v{r}"] for n in ("raw", "clean", "features", "fit", "model", "plots", "report")
        )
        flow |= {
            (raw, "derived_in_task", clean),  # clean used raw.csv, then recorded clean.csv
            (clean, "derived_from", features),
            (features, "derived_from", value),  # fit's file arguments
            (v["params"], "derived_from", value),
            (v["params"], "derived_in_task", model),  # train used params.json, called fit, then wrote the model
            (features, "derived_in_task", model),
            (value, "derived_in_task", model),
            (model, "derived_from", plots),
            (features, "derived_from", plots),
            (clean, "derived_from", report),
            (model, "derived_from", report),
            (plots, "derived_from", report),
        }
    up: dict[str, set[str]] = {}
    for node in {n for e in flow for n in (e[0], e[2])}:
        seen: set[str] = set()
        todo = [node]
        while todo:
            current = todo.pop()
            for src, _rel, dst in flow:
                if dst == current and src not in seen:
                    seen.add(src)
                    todo.append(src)
        up[node] = seen
    down = {node: {n for n, ancestors in up.items() if node in ancestors} for node in up}
    r1, r2, r3 = v["run1"], v["run2"], v["run3"]
    generated = {v[f"{n}.v1"]: [r1, r2] for n in ("clean", "features", "model", "plots", "report")}
    generated |= {v[f"{n}.v3"]: [r3] for n in ("clean", "features", "model", "plots", "report", "fit")}
    generated |= {v["fit.v1"]: [r1], v["raw.v1"]: [], v["raw.v3"]: [], v["params"]: []}
    used = {v["raw.v1"]: [r1, r2], v["raw.v3"]: [r3], v["params"]: sorted([r1, r2, r3]), v["fit.v1"]: [r2]}
    used |= {v[f"{n}.v1"]: [r1, r2] for n in ("clean", "features", "model", "plots")}
    used |= {v[f"{n}.v3"]: [r3] for n in ("clean", "features", "model", "plots")}
    used |= {v["report.v1"]: [], v["report.v3"]: [], v["fit.v3"]: []}
    return {"flow": flow, "up": up, "down": down, "generated": generated, "used": used}


def _names(v: dict[str, str], nodes: set[str]) -> set[str]:
    """Digests as the names of the truth (``clean.v1``...), so a failure reads plainly."""
    by_digest = {d: k for k, d in v.items()}
    return {by_digest.get(n, n) for n in nodes}


def test_the_old_symptoms_are_gone(workflow: dict[str, str], cli: CliInvoker) -> None:
    """clean.v1 comes from raw.v1 alone; raw.v1 does not lead to raw.v3; report.v1's lineage has nothing of run 3."""
    v, ledger = workflow, Ledger.open()
    assert _names(v, ledger.lineage(v["clean.v1"]).ancestors()) == {"raw.v1"}
    assert "raw.v3" not in _names(v, ledger.lineage(v["raw.v1"], direction="down").descendants())
    report = ledger.lineage(v["report.v1"])
    assert not any(n.endswith(".v3") for n in _names(v, set(report.nodes)))
    assert {e["run_id"] for e in report.edges} == {v["run1"], v["run2"]}
    tree = cli("ledger", "lineage", v["clean.v1"]).stdout
    runs = ", ".join(sorted([v["run1"], v["run2"]]))
    assert tree.splitlines() == [
        f"clean.csv ({v['clean.v1'][:12]})  [{runs}]",
        f"└── derived_in_task: raw.csv ({v['raw.v1'][:12]})  [used in {runs}]",
    ]


def _every_way(ledger: Ledger, cli: CliInvoker, nodes: list[str]) -> dict[str, list[dict[str, Any]]]:
    """What each node's walks reach both ways, and its context, as the API, the CLI's JSON and the SQL macros say."""
    found: dict[str, list[dict[str, Any]]] = {}
    for node in nodes:
        graph = ledger.lineage(node, direction="both")
        info = graph.nodes[node]
        shown = cli("ledger", "lineage", node, "--both", "--format", "json")
        assert shown.exit_code == 0, shown.output
        doc = json.loads(shown.stdout)
        found[node] = [
            {"up": graph.ancestors(), "down": graph.descendants(), "generated_by": info["generated_by"],
             "used_by": info["used_by"]},
            {"up": {e["src"] for e in doc["edges"] if e["direction"] == "up"},
             "down": {e["dst"] for e in doc["edges"] if e["direction"] == "down"},
             "generated_by": next(n for n in doc["nodes"] if n["id"] == node)["generated_by"],
             "used_by": next(n for n in doc["nodes"] if n["id"] == node)["used_by"]},
        ]  # fmt: skip
    for node in nodes:
        up = ledger.query(f"SELECT src FROM ancestors('{node}')").column(0).to_pylist()
        down = ledger.query(f"SELECT dst FROM descendants('{node}')").column(0).to_pylist()
        found[node].append({"up": set(up), "down": set(down)})
    return found


def _check_everything(v: dict[str, str], ledger: Ledger, cli: CliInvoker) -> None:
    truth = _truth(v)
    got = {
        (r["src"], r["relation"], r["dst"])
        for r in ledger.query("SELECT DISTINCT src, relation, dst FROM lineage").to_pylist()
    }
    assert got == truth["flow"]
    for node, answers in _every_way(ledger, cli, sorted(truth["up"])).items():
        want = {
            "up": _names(v, truth["up"][node]),
            "down": _names(v, truth["down"][node]),
            "generated_by": sorted(truth["generated"][node]),
            "used_by": sorted(truth["used"][node]),
        }
        for answer in answers:
            named = {k: _names(v, x) if k in ("up", "down") else x for k, x in answer.items()}
            assert named == {k: want[k] for k in named}, _names(v, {node})


def test_lineage_equals_the_truth_from_every_way_of_asking(
    workflow: dict[str, str], cli: CliInvoker, isolated: Path
) -> None:
    """Every version's ancestors, descendants and runs, via the API, the CLI and SQL, before and after a
    full compaction and from the streams alone: precision and recall are 1."""
    ledger = Ledger.open()
    _check_everything(workflow, ledger, cli)  # each run compacted itself on close: its file is not covered
    ledger.compact()
    assert list((Path(ledger.ledger_dir) / "lineage").glob("v2-edges-by-dst-*.parquet"))
    _check_everything(workflow, ledger, cli)
    _check_everything(workflow, Ledger.open(ledger_dir=isolated / "streams-only"), cli)


def test_runs_are_context_and_the_run_level_graph_is_true(workflow: dict[str, str]) -> None:
    """Run 2 reused run 1's fit and made the rest itself; run 3 needed no other run; a run's own lineage."""
    v, ledger = workflow, Ledger.open()
    edges = {(e["src"], e["relation"], e["dst"]) for e in ledger.lineage(v["run2"], runs_only=True).edges}
    assert edges == {(v["run1"], "reused", v["run2"])}
    assert ledger.lineage(v["run3"], runs_only=True).edges == []
    down = ledger.lineage(v["run1"], direction="down", runs_only=True).edges
    assert {(e["src"], e["relation"], e["dst"]) for e in down} == {(v["run1"], "reused", v["run2"])}
    run3 = ledger.lineage(v["run3"])
    first = {(e["src"], e["relation"], e["dst"]) for e in run3.edges if e["depth"] == 1}
    outputs = {(v["run3"], "generated", v[f"{n}.v3"]) for n in ("clean", "features", "fit", "model", "plots", "report")}
    inputs = {
        (v[n], "used", v["run3"]) for n in ("raw.v3", "params", "clean.v3", "features.v3", "model.v3", "plots.v3")
    }
    assert first == outputs | inputs
    assert _names(v, run3.ancestors()) == {
        f"{n}.v3" for n in ("raw", "clean", "features", "fit", "model", "plots", "report")
    } | {"params"}


def test_as_of_asks_for_the_version_a_path_held_then(workflow: dict[str, str], cli: CliInvoker) -> None:
    """A local path names its current version, or with --as-of the version recorded there then."""
    v, ledger = workflow, Ledger.open()
    first_end = ledger.query(f"SELECT finished_at FROM runs WHERE run_id = '{v['run1']}'").column(0)[0].as_py()
    now = json.loads(cli("ledger", "lineage", "clean.csv", "--format", "json").stdout)
    assert now["root"] == v["clean.v3"]
    then = json.loads(cli("ledger", "lineage", "clean.csv", "--as-of", first_end, "--format", "json").stdout)
    assert then["root"] == v["clean.v1"]
    assert {e["src"] for e in then["edges"]} == {v["raw.v1"]}
    early = {
        (r["src"], r["relation"], r["dst"])
        for r in ledger.query("SELECT DISTINCT src, relation, dst FROM lineage", as_of=first_end).to_pylist()
    }
    assert early == {
        e
        for e in _truth(v)["flow"]
        if not any(v[f"{n}.v3"] in (e[0], e[2]) for n in ("clean", "features", "fit", "model", "plots", "report"))
    }


def test_exports_of_the_workflow_are_valid_and_true(workflow: dict[str, str], isolated: Path, cli: CliInvoker) -> None:
    """PROV reads back with the prov package and OpenLineage validates; both say which run used and generated what."""
    from prov.model import ProvDocument

    v = workflow
    assert cli("ledger", "export", "--prov", "p.json", "--openlineage", "o.jsonl").exit_code == 0
    doc = ProvDocument.deserialize(source=str(isolated / "p.json"), format="json")
    tasks = [r for r in doc.get_records() if type(r).__name__ == "ProvActivity" and "task" in str(r.identifier)]
    assert len(tasks) == 15 and all(t.get_startTime() and t.get_endTime() for t in tasks)
    events = [json.loads(line) for line in (isolated / "o.jsonl").read_text().splitlines()]
    complete = {
        e["run"]["facets"]["scalable_run"]["runId"]: e
        for e in events
        if e["eventType"] == "COMPLETE" and "scalable_run" in e["run"]["facets"]
    }
    truth = _truth(v)
    for run in (v["run1"], v["run2"], v["run3"]):
        made = {d["facets"]["version"]["datasetVersion"] for d in complete[run]["outputs"]}
        read = {d["facets"]["version"]["datasetVersion"] for d in complete[run]["inputs"]}
        assert made == {n for n, runs in truth["generated"].items() if run in runs}
        assert read == {n for n, runs in truth["used"].items() if run in runs}


def test_the_audit_passes_on_the_clean_ledger(workflow: dict[str, str], cli: CliInvoker) -> None:
    """All three runs verify: chains, seals, and every recorded artifact's bytes still at its location."""
    report = Ledger.open().audit()
    assert report.ok, [str(p) for p in report.problems]
    assert report.runs == 3
    assert cli("ledger", "audit").exit_code == 0


COMPUTED: list[str] = []


@cacheable(path=FileType)
def summarize(path: str) -> dict[str, int]:
    """An expensive summary of a file (cached)."""
    COMPUTED.append(path)
    return {"rows": len(Path(path).read_text().splitlines())}


def _stored_run(isolated: Path, monkeypatch: pytest.MonkeyPatch, scheme: str, bucket: str) -> tuple[str, Path]:
    """A run that stores its output on an object store and caches remotely."""
    monkeypatch.setenv("SCALABLE_DEFAULT_STORAGE", f"{scheme}://{bucket}/store/")
    monkeypatch.setenv("SCALABLE_CACHE_REMOTE", f"{scheme}://{bucket}/cache/")
    monkeypatch.setenv("SCALABLE_CACHE_DIR", str(isolated / "machine-a-cache"))
    bus.reset_default()
    (isolated / "scalable.yaml").write_text(MANIFEST)
    Path("raw.csv").write_text("x,y\n1,2\n3,4\n")
    COMPUTED.clear()
    with ScalableSession.from_yaml("scalable.yaml", target="local") as session:
        summary = session.submit(summarize, str(Path("raw.csv").resolve())).result()
        Path("c.txt").write_text(f"rows={summary['rows']}\n")
        session.put("c.txt")
        run_id = session.run_id
    bus.reset_default()
    return run_id, isolated / "c.txt"


def test_replay_restores_bit_identical_and_warms_an_empty_cache_from_s3(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, s3_bucket: tuple[str, dict[str, Any]], cli: CliInvoker
) -> None:
    """On a machine with an empty cache, replay restores every stored artifact and --warm-cache makes the next call a hit."""
    run_id, output = _stored_run(isolated, monkeypatch, "s3", s3_bucket[0])
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
        session.submit(summarize, str((isolated / "raw.csv").resolve())).result()
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
    run_id, _ = _stored_run(isolated, monkeypatch, scheme, bucket)
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
