"""Lineage from events: data flow and context, versions, walks, URI resolution, as_of, exports, and the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import sqlite_utils

from scalable.errors import AmbiguousNodeError, ConfigError, NodeNotFoundError
from scalable.ledger import bind
from scalable.ledger.generations import read_generation
from scalable.ledger.log import Ledger
from tests.conftest import CliInvoker

D = {name: hashlib.sha256(name.encode()).hexdigest() for name in "abcdefghijk"}  # digests of nothing in particular
SCHEMA = json.loads((Path(__file__).parents[1] / "data" / "OpenLineage-2-0-2.json").read_text())


def _task(ledger: Ledger, run: str, name: str, task_id: str, events: list[dict[str, Any]]) -> None:
    """Append ``events`` as one task execution of ``run``, between its task events."""
    with bind(run_id=run, task_name=name, task_id=task_id):
        ledger.append({"event_type": "task", "op": "started", "attrs": {"task_id": task_id}})
        for event in events:
            ledger.append(event)
        ledger.append({"event_type": "task", "op": "finished", "attrs": {"task_id": task_id}})


def _workflow(ledger: Ledger) -> str:
    """Two runs: raw (input) -> A -> cached B -> C; the second run hits B's cache and makes a new C.

    Returns the time the first run finished.
    """
    ledger.append({"event_type": "run", "op": "started", "run_id": "run-1", "attrs": {"project": "ref"}})
    raw = {"event_type": "artifact", "op": "used", "location": "file:///data/raw.csv", "digest": D["a"]}
    _task(ledger, "run-1", "A", "t1a", [
        {**raw, "artifact_name": "raw.csv"},
        {"event_type": "artifact", "op": "put", "location": "s3://b/runs/1/a.parquet", "digest": D["b"],
         "artifact_name": "a.parquet"},
    ])  # fmt: skip
    _task(ledger, "run-1", "B", "t1b", [
        {"event_type": "cache", "op": "miss", "function_name": "m.B", "inputs": [D["b"]]},
        {"event_type": "cache", "op": "write", "function_name": "m.B", "digest": D["c"], "inputs": [D["b"]]},
    ])  # fmt: skip
    _task(ledger, "run-1", "C", "t1c", [
        {"event_type": "artifact", "op": "put", "location": "s3://b/runs/1/c.csv", "digest": D["d"],
         "artifact_name": "c.csv", "inputs": [D["c"]]},
    ])  # fmt: skip
    first_end = str(ledger.finish_run("run-1", "completed")["timestamp"])
    ledger.append({"event_type": "run", "op": "started", "run_id": "run-2", "attrs": {"project": "ref"}})
    _task(ledger, "run-2", "B", "t2b", [
        {"event_type": "cache", "op": "hit", "function_name": "m.B", "digest": D["c"], "hit": True,
         "inputs": [D["b"]], "attrs": {"writer_run": "run-1"}},
        {"event_type": "artifact", "op": "put", "location": "s3://b/runs/2/c.csv", "digest": D["e"],
         "artifact_name": "c.csv"},
    ])  # fmt: skip
    ledger.finish_run("run-2", "completed")
    return first_end


#: The data flow of the workflow: what each version came from.
FLOW = {
    (D["a"], "derived_in_task", D["b"]),  # task A used raw, then put a.parquet
    (D["b"], "derived_from", D["c"]),  # B's file argument
    (D["c"], "derived_from", D["d"]),  # C's declared input
    (D["c"], "derived_in_task", D["e"]),  # run 2's task B took the cached value, then put c.csv
    (D["b"], "derived_in_task", D["e"]),  # ... having passed a.parquet to the cached call
}
#: The context: which run generated and used which version, and which run reused which.
CONTEXT = {
    ("run-1", "generated", D["b"]),
    ("run-1", "generated", D["c"]),
    ("run-1", "generated", D["d"]),
    (D["a"], "used", "run-1"),
    (D["b"], "used", "run-1"),
    (D["c"], "used", "run-1"),
    ("run-2", "generated", D["e"]),
    (D["b"], "used", "run-2"),
    (D["c"], "used", "run-2"),
    ("run-1", "reused", "run-2"),
}


def _triples(ledger: Ledger, view: str, as_of: str | None = None) -> set[tuple[str, ...]]:
    rows = ledger.query(f"SELECT DISTINCT src, relation, dst FROM {view}", as_of=as_of).to_pylist()
    return {(r["src"], r["relation"], r["dst"]) for r in rows}


def test_the_lineage_view_holds_exactly_the_data_flow_and_the_context_view_the_rest(ledger: Ledger) -> None:
    """``lineage`` has exactly the true data-flow edges, ``lineage_context`` exactly the run context."""
    _workflow(ledger)
    assert _triples(ledger, "lineage") == FLOW
    assert _triples(ledger, "lineage_context") == CONTEXT


def test_an_input_is_used_not_generated_and_walks_never_pass_through_runs(ledger: Ledger) -> None:
    """The raw input has no generator; walking down from it never reaches what its run made from other inputs."""
    _workflow(ledger)
    raw = ledger.lineage(D["a"], direction="down")
    assert raw.nodes[D["a"]]["generated_by"] == [] and raw.nodes[D["a"]]["used_by"] == ["run-1"]
    assert raw.descendants() == {D["b"], D["c"], D["d"], D["e"]}
    value = ledger.lineage(D["c"])
    assert value.ancestors() == {D["a"], D["b"]}
    assert value.nodes[D["c"]]["generated_by"] == ["run-1"] and value.nodes[D["c"]]["used_by"] == ["run-1", "run-2"]
    assert "run-1" not in {e["src"] for e in value.edges} | {e["dst"] for e in value.edges}


def test_what_a_task_used_after_it_generated_something_is_not_its_ancestor(ledger: Ledger) -> None:
    """Inside one task, only what was used before a generation is that generation's lineage."""
    _task(ledger, "run-o", "T", "t-o", [
        {"event_type": "artifact", "op": "used", "location": "file:///in/x", "digest": D["a"]},
        {"event_type": "artifact", "op": "recorded", "location": "file:///out/y", "digest": D["b"]},
        {"event_type": "artifact", "op": "get", "location": "s3://b/z", "digest": D["c"]},
        {"event_type": "artifact", "op": "recorded", "location": "file:///out/w", "digest": D["d"]},
    ])  # fmt: skip
    with bind(run_id="run-o"):  # outside any task: run context only
        ledger.append({"event_type": "artifact", "op": "used", "location": "file:///in/q", "digest": D["e"]})
        ledger.append({"event_type": "artifact", "op": "recorded", "location": "file:///out/r", "digest": D["f"]})
    assert ledger.lineage(D["b"]).ancestors() == {D["a"]}
    assert ledger.lineage(D["d"]).ancestors() == {D["a"], D["c"]}
    assert ledger.lineage(D["f"]).ancestors() == set()
    assert ledger.lineage(D["c"], direction="down").descendants() == {D["d"]}


def test_tasks_are_told_apart_by_their_ids_and_named_tasks_by_their_names(ledger: Ledger) -> None:
    """Two executions of one task function are two tasks; events named by task only form one task."""
    _task(ledger, "run-t", "step", "first", [
        {"event_type": "artifact", "op": "used", "location": "file:///in/1", "digest": D["a"]},
        {"event_type": "artifact", "op": "recorded", "location": "file:///out/1", "digest": D["b"]},
    ])  # fmt: skip
    _task(ledger, "run-t", "step", "second", [
        {"event_type": "artifact", "op": "recorded", "location": "file:///out/2", "digest": D["c"]},
    ])  # fmt: skip
    ledger.append({"event_type": "artifact", "op": "used", "run_id": "run-t", "task_name": "named", "digest": D["d"]})
    ledger.append({"event_type": "artifact", "op": "put", "run_id": "run-t", "task_name": "named", "digest": D["e"]})
    assert ledger.lineage(D["c"]).ancestors() == set()
    assert ledger.lineage(D["b"]).ancestors() == {D["a"]}
    assert ledger.lineage(D["e"]).ancestors() == {D["d"]}


def test_shared_bytes_are_one_node_with_several_users_never_a_bridge(ledger: Ledger) -> None:
    """params used by two runs is one node: each run's outputs descend from it, neither is the other's ancestor."""
    for run, out, other in (("run-p1", D["b"], D["c"]), ("run-p2", D["d"], D["e"])):
        _task(ledger, run, "fit", f"{run}-fit", [
            {"event_type": "artifact", "op": "used", "location": "file:///params.json", "digest": D["a"]},
            {"event_type": "artifact", "op": "used", "location": f"file:///{run}/data", "digest": other},
            {"event_type": "artifact", "op": "recorded", "location": f"file:///{run}/model", "digest": out},
        ])  # fmt: skip
    params = ledger.lineage(D["a"], direction="down")
    assert params.descendants() == {D["b"], D["d"]}
    assert params.nodes[D["a"]]["used_by"] == ["run-p1", "run-p2"]
    assert ledger.lineage(D["b"]).ancestors() == {D["a"], D["c"]}
    assert ledger.lineage(D["d"]).ancestors() == {D["a"], D["e"]}
    assert ledger.lineage(D["c"], direction="down").descendants() == {D["b"]}


def test_a_version_is_never_its_own_ancestor_unless_the_data_has_a_cycle(ledger: Ledger) -> None:
    """Copying X to X or recording X again adds no edge; a declared cycle is reported as one."""
    _task(ledger, "run-c", "copy", "t-copy", [
        {"event_type": "artifact", "op": "get", "location": "s3://b/x", "digest": D["a"]},
        {"event_type": "artifact", "op": "put", "location": "s3://b/x-copy", "digest": D["a"]},
        {"event_type": "artifact", "op": "recorded", "location": "file:///x", "digest": D["a"], "inputs": ["s3://b/x"]},
    ])  # fmt: skip
    assert _triples(ledger, "lineage") == set()
    assert ledger.lineage(D["a"]).ancestors() == set()
    with bind(run_id="run-cycle"):
        ledger.append(
            {"event_type": "artifact", "op": "put", "digest": D["b"], "location": "m://b", "inputs": [D["c"]]}
        )
        ledger.append(
            {"event_type": "artifact", "op": "put", "digest": D["c"], "location": "m://c", "inputs": [D["b"]]}
        )
    graph = ledger.lineage(D["b"])
    assert graph.ancestors() == {D["b"], D["c"]}
    keys = [(e["src"], e["dst"], e["relation"], e["run_id"]) for e in graph.edges]
    assert len(keys) == len(set(keys))
    assert "derived_from: " + graph.label(D["b"]) + " (cycle)" in graph.to_tree("up")


def _everything(ledger: Ledger, node: str) -> tuple[Any, ...]:
    """Edges with depth both ways from ``node``, its node descriptions and both views' edge sets."""
    walks = tuple(
        {(e["src"], e["relation"], e["dst"], e["depth"]) for e in ledger.lineage(node, direction=d).edges}
        for d in ("up", "down")
    )
    nodes = ledger.lineage(node, direction="both").nodes
    return (*walks, nodes, _triples(ledger, "lineage"), _triples(ledger, "lineage_context"))


def test_compacted_edges_and_live_tails_together_equal_the_streams(ledger: Ledger, isolated: Path) -> None:
    """Compacted edges plus a live stream, plus a file the edges do not cover, give the streams' lineage,
    URI inputs and a task split across compacted and live events included."""
    _workflow(ledger)
    with bind(run_id="run-3", task_name="F", task_id="t3f"):  # a task whose first events get compacted
        ledger.append({"event_type": "artifact", "op": "used", "location": "file:///data/k", "digest": D["k"]})
    ledger.compact()
    assert read_generation(ledger.location).lineage is not None
    with bind(run_id="run-3", task_name="F", task_id="t3f"):
        ledger.append(
            {"event_type": "artifact", "op": "put", "location": "s3://b/runs/3/f.csv", "digest": D["f"],
             "inputs": ["s3://b/runs/1/a.parquet"]}
        )  # fmt: skip
    streams_only = Ledger.open(ledger_dir=isolated / "elsewhere")
    nodes = (D["a"], D["f"], "run-1", "s3://b/runs/1/a.parquet", D["k"])
    expected = {node: _everything(streams_only, node) for node in nodes}
    assert ledger.lineage(D["f"]).ancestors() == {D["b"], D["k"], D["a"]}
    for node, want in expected.items():
        assert _everything(ledger, node) == want, node
    ledger.compact(["run-3"])  # a session closing: the new file is not covered by the edges
    lineage = read_generation(ledger.location).lineage
    assert lineage is not None and len(lineage.covers) < len(read_generation(ledger.location).files)
    for node, want in expected.items():
        assert _everything(ledger, node) == want, node
    ledger.compact()
    lineage = read_generation(ledger.location).lineage
    assert lineage is not None and len(lineage.covers) == len(read_generation(ledger.location).files)
    for node, want in expected.items():
        assert _everything(ledger, node) == want, node


def test_ancestors_walk_back_across_runs_through_the_cache(ledger: Ledger) -> None:
    """The second run's output traces back through the reused cache value to the first run's raw input."""
    _workflow(ledger)
    graph = ledger.lineage("s3://b/runs/2/c.csv")
    assert graph.root == D["e"]
    assert graph.ancestors() == {D["a"], D["b"], D["c"]}
    assert graph.nodes["run-1"]["kind"] == "run" and graph.nodes[D["b"]]["name"] == "a.parquet"
    depth = {(e["src"], e["relation"], e["dst"]): e["depth"] for e in graph.edges}
    assert depth == {
        (D["c"], "derived_in_task", D["e"]): 1,
        (D["b"], "derived_in_task", D["e"]): 1,
        (D["b"], "derived_from", D["c"]): 2,
        (D["a"], "derived_in_task", D["b"]): 2,
    }
    assert {e["depth"] for e in ledger.lineage(D["e"], depth=1).edges} == {1}
    runs = ledger.lineage(D["e"], runs_only=True)  # run 2 reused run 1's value, on run 1's a.parquet
    assert {(e["src"], e["relation"], e["dst"]) for e in runs.edges} == {
        ("run-1", "reused", "run-2"),
        ("run-1", "informed", "run-2"),
    }


def test_a_run_is_walked_from_what_it_generated_and_used(ledger: Ledger) -> None:
    """From a run: its outputs and inputs first, then their data flow; down, what came of its outputs."""
    _workflow(ledger)
    up = ledger.lineage("run-2")
    assert {(e["src"], e["relation"], e["dst"]) for e in up.edges if e["depth"] == 1} == {
        ("run-2", "generated", D["e"]),
        (D["b"], "used", "run-2"),
        (D["c"], "used", "run-2"),
    }
    assert up.ancestors() == {D["a"], D["b"], D["c"], D["e"]}
    assert ledger.lineage("run-1", direction="down").descendants() == {D["b"], D["c"], D["d"], D["e"]}
    runs = ledger.lineage("run-2", runs_only=True)
    assert set(runs.nodes) == {"run-1", "run-2"}
    assert {(e["src"], e["relation"], e["dst"]) for e in runs.edges} == {
        ("run-1", "informed", "run-2"),
        ("run-1", "reused", "run-2"),
    }


def test_a_uri_resolves_to_the_digest_it_held_at_the_time(ledger: Ledger) -> None:
    """An input named by URI links to the version that was at the URI when it was used."""
    with bind(run_id="run-v"):
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/x", "digest": D["f"]})
        ledger.append(
            {"event_type": "artifact", "op": "put", "location": "s3://b/y", "digest": D["g"], "inputs": ["s3://b/x"]}
        )
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/x", "digest": D["h"]})
    edges = ledger.query("SELECT src, dst FROM lineage WHERE relation = 'derived_from'").to_pylist()
    assert edges == [{"src": D["f"], "dst": D["g"]}]
    assert ledger.lineage("s3://b/x", direction="down").root == D["h"]
    first = ledger.query("SELECT min(timestamp) FROM artifacts").column(0)[0].as_py()
    assert ledger.lineage("s3://b/x", direction="down", as_of=first).root == D["f"]


def test_as_of_between_the_runs_shows_only_the_first(ledger: Ledger) -> None:
    """Lineage as of a time between the runs has none of the second run's edges."""
    first_end = _workflow(ledger)
    rows = ledger.query("SELECT DISTINCT run_id FROM lineage_context", as_of=first_end).column(0).to_pylist()
    assert rows == ["run-1"]
    with pytest.raises(NodeNotFoundError):
        ledger.lineage("s3://b/runs/2/c.csv", as_of=first_end)
    assert ledger.lineage(D["c"], direction="down", as_of=first_end).descendants() == {D["d"]}


def test_bad_lineage_arguments_are_named(ledger: Ledger) -> None:
    """An unknown node, a bad direction, depth, relation or node limit each raise a named error."""
    _workflow(ledger)
    with pytest.raises(NodeNotFoundError, match="nope"):
        ledger.lineage("nope")
    with pytest.raises(NodeNotFoundError, match=D["k"]):
        ledger.lineage(D["k"])
    with pytest.raises(ConfigError, match="sideways"):
        ledger.lineage(D["a"], direction="sideways")
    with pytest.raises(ConfigError, match="depth"):
        ledger.lineage(D["a"], depth=0)
    with pytest.raises(ConfigError, match="'made_of'"):
        ledger.lineage(D["a"], relations=["made_of"])
    with pytest.raises(ConfigError, match="max_nodes"):
        ledger.lineage(D["a"], max_nodes=0)


def test_a_node_is_found_by_prefix_path_uri_name_or_run(ledger: Ledger, isolated: Path) -> None:
    """Digest prefixes (8+), local paths, URIs, names and run ids all resolve; ambiguity lists the candidates."""
    local = (isolated / "data" / "raw.csv").as_uri()
    raw, model = "ab12cd34" + "0" * 56, "ab12cd34" + "1" * 56
    with bind(run_id="run-n"):
        ledger.append({"event_type": "artifact", "op": "used", "location": local, "digest": raw,
                       "artifact_name": "raw.csv"})  # fmt: skip
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/m.json", "digest": model,
                       "artifact_name": "m.json", "inputs": [local]})  # fmt: skip
    assert ledger.lineage("ab12cd340").root == raw
    assert ledger.lineage("data/raw.csv", direction="down").root == raw
    assert ledger.lineage(local, direction="down").root == raw
    assert ledger.lineage("m.json").root == model
    assert ledger.lineage("s3://b/m.json").ancestors() == {raw}
    assert ledger.lineage("run-n").root == "run-n"
    with pytest.raises(AmbiguousNodeError, match="'ab12cd34' matches 2 nodes") as caught:
        ledger.lineage("ab12cd34")
    assert raw in str(caught.value) and model in str(caught.value)
    with pytest.raises(NodeNotFoundError, match="at least 8 hex characters"):
        ledger.lineage("ab12cd3")
    with bind(run_id="run-n"):  # a copy of other bytes under the same name elsewhere
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/raw.csv", "digest": D["a"],
                       "artifact_name": "raw.csv"})  # fmt: skip
    assert ledger.lineage("data/raw.csv").root == raw  # the path names its own version
    with pytest.raises(AmbiguousNodeError, match=r"'raw\.csv' matches 2 nodes") as named:
        ledger.lineage("raw.csv")  # the name alone: two locations, two versions
    assert "s3://b/raw.csv" in str(named.value) and local in str(named.value)


def test_a_local_path_with_spaces_and_unicode_names_its_version(
    ledger: Ledger, cli: CliInvoker, isolated: Path
) -> None:
    """A path as the session recorded it (percent-encoded in the URI) is found by the path as typed."""
    from scalable import ScalableSession

    folder = isolated / "data set" / "mesures été"
    folder.mkdir(parents=True)
    (folder / "brut #1.csv").write_text("x\n1\n")
    (folder / "propre 100%.csv").write_text("x\n1\n1\n")
    with ScalableSession() as session:
        with session.task("clean"):
            session.record_artifact(folder / "brut #1.csv", role="input")
            session.record_artifact(folder / "propre 100%.csv")
    digest, raw = hashlib.sha256(b"x\n1\n1\n").hexdigest(), hashlib.sha256(b"x\n1\n").hexdigest()
    shown = cli("ledger", "lineage", "data set/mesures été/propre 100%.csv", "--format", "json")
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert doc["root"] == digest
    labels = {n["id"]: n["label"] for n in doc["nodes"] if n["kind"] == "artifact"}
    assert labels == {digest: f"propre 100%.csv ({digest[:12]})", raw: f"brut #1.csv ({raw[:12]})"}
    ol = json.loads(cli("ledger", "lineage", digest, "--format", "openlineage").stdout.splitlines()[-1])
    names = {d["name"] for d in ol["inputs"] + ol["outputs"]}
    assert names <= {str(folder / "brut #1.csv"), str(folder / "propre 100%.csv")} and names


def test_labels_name_every_node_readably(ledger: Ledger) -> None:
    """Tree, DOT, Mermaid and JSON label artifacts by name and short digest, never by a bare digest."""
    _workflow(ledger)
    graph = ledger.lineage("s3://b/runs/2/c.csv")
    tree = graph.render("tree")
    assert tree.splitlines()[0] == f"c.csv ({D['e'][:12]})  [run-2]"
    assert f"derived_from: a.parquet ({D['b'][:12]})" in tree and "m.B() result" in tree
    for fmt in ("tree", "dot", "mermaid"):
        text = graph.render(fmt)
        assert all(d not in text for d in D.values()) or fmt == "dot", fmt
    doc = json.loads(graph.render("json"))
    assert {n["id"]: n["label"] for n in doc["nodes"]}[D["b"]] == f"a.parquet ({D['b'][:12]})"
    assert graph.render("dot").startswith("digraph lineage {")
    assert graph.render("mermaid").startswith("flowchart LR")


def test_tree_prints_every_edge_once_however_many_paths_lead_to_it(ledger: Ledger) -> None:
    """A layered diamond graph (2**20 paths to its root) renders as one line per edge, each node expanded once."""
    layers = 20
    with bind(run_id="run-diamond"):
        previous: list[str] = []
        for layer in range(layers):
            current = [f"{layer:031x}{side}".ljust(64, "0") for side in ("a", "b")]
            for digest in current:
                ledger.append(
                    {
                        "event_type": "artifact",
                        "op": "recorded",
                        "digest": digest,
                        "location": f"file:///d/{digest}",
                        "inputs": previous or None,
                    }
                )
            previous = current
    graph = ledger.lineage(previous[0])
    tree = graph.to_tree("up").splitlines()
    assert len(tree) == 1 + len(graph.edge_set())
    expanded = [line for line in tree[1:] if not line.endswith("(see above)")]
    assert len(expanded) == len([n for n in graph.nodes if graph.nodes[n]["kind"] == "artifact"]) - 1
    small = ledger.lineage(previous[0], max_nodes=5)
    ancestors = 2 * (layers - 1)
    assert len(graph.ancestors()) == ancestors
    assert small.elided == {"nodes": ancestors + 1 - 5, "edges": len(graph.edges) - len(small.edges)}
    assert "more node(s)" in small.render("tree").splitlines()[-1]


def test_prov_export_validates_with_the_prov_package(ledger: Ledger, isolated: Path) -> None:
    """The PROV-JSON export reads back with the prov package: one activity per run and per task, with times."""
    from prov.model import ProvDocument

    from scalable.ledger.export import export_prov

    _workflow(ledger)
    export_prov(ledger, isolated / "prov.json")
    doc = ProvDocument.deserialize(source=str(isolated / "prov.json"), format="json")
    records = list(doc.get_records())
    kinds = {type(r).__name__ for r in records}
    assert {
        "ProvEntity", "ProvActivity", "ProvAgent", "ProvUsage", "ProvGeneration", "ProvDerivation",
        "ProvCommunication", "ProvAssociation",
    } <= kinds  # fmt: skip
    activities = [r for r in records if type(r).__name__ == "ProvActivity"]
    assert len(activities) == 2 + 4  # two runs, four tasks
    assert all(a.get_startTime() is not None and a.get_endTime() is not None for a in activities)
    informed = {
        (str(r.formal_attributes[0][1]), str(r.formal_attributes[1][1]))
        for r in records
        if type(r).__name__ == "ProvCommunication"
    }
    assert ("run:run-2", "run:run-1") in informed


def test_openlineage_export_validates_against_the_spec(ledger: Ledger, isolated: Path) -> None:
    """Valid OpenLineage 2-0-2 RunEvents with real times, inputs and outputs; a failed run's FAIL has errorMessage."""
    from scalable.ledger.export import export_openlineage

    _workflow(ledger)
    with bind(run_id="run-x"):
        ledger.append({"event_type": "run", "op": "started", "attrs": {"project": "ref"}})
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/x", "digest": D["f"]})
    ledger.finish_run("run-x", "failed", {"error_type": "ValueError", "error": "bad row 3"})
    export_openlineage(ledger, isolated / "ol.jsonl")
    events = [json.loads(line) for line in (isolated / "ol.jsonl").read_text().splitlines()]
    validator = jsonschema.Draft202012Validator(
        {**SCHEMA, "$ref": "#/$defs/RunEvent"}, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    for event in events:
        validator.validate(event)
    runs = [e for e in events if e["job"]["name"] == "ref"]
    assert [e["eventType"] for e in runs] == ["START", "COMPLETE", "START", "COMPLETE", "START", "FAIL"]
    assert all(not e["eventTime"].startswith("1970") for e in events)
    complete2 = runs[3]
    assert [d["name"] for d in complete2["outputs"]] == ["runs/2/c.csv"]
    assert {d["facets"]["version"]["datasetVersion"] for d in complete2["inputs"]} == {D["b"], D["c"]}
    fail = runs[5]
    assert fail["run"]["facets"]["errorMessage"]["message"] == "ValueError: bad row 3"
    tasks = [e for e in events if e["job"]["name"] == "ref.A"]
    assert [e["eventType"] for e in tasks] == ["START", "COMPLETE"]
    assert [d["name"] for d in tasks[1]["inputs"]] == ["/data/raw.csv"]
    assert "parent" in tasks[1]["run"]["facets"]


def test_openlineage_datasets_are_where_each_run_and_task_wrote_or_read_a_version(isolated: Path) -> None:
    """A version stored and recorded is two outputs; an input is the path the task read, not its stored copy."""
    from scalable import ScalableSession
    from scalable.uris import path_to_uri, uri_to_path

    (isolated / "raw.csv").write_text("a\n1\n")
    with ScalableSession(default_storage=str(isolated / "store")) as session:
        with session.task("clean"):
            (isolated / "clean.csv").write_text("a\n")
            session.put("clean.csv")
            session.record_artifact("clean.csv", inputs=["raw.csv"])
        session.put("raw.csv", "inputs/raw.csv")  # a copy of the input, stored after the task
        run_id = session.run_id
    clean = hashlib.sha256(b"a\n").hexdigest()
    ledger = Ledger.open()
    stored = {
        r["digest"]: r["location"]
        for r in ledger.query(
            f"SELECT digest, location FROM artifacts WHERE op = 'put' AND run_id = '{run_id}'"
        ).to_pylist()
    }
    events = ledger.lineage(clean, direction="up").to_openlineage()
    task = [e for e in events if e["job"]["name"].endswith(".clean") and e["eventType"] == "COMPLETE"]
    assert len(task) == 1

    def names(datasets: list[dict[str, Any]]) -> list[str]:
        return sorted(d["name"] for d in datasets)

    assert names(task[0]["inputs"]) == [str(isolated / "raw.csv")]
    assert names(task[0]["outputs"]) == sorted([str(isolated / "clean.csv"), str(uri_to_path(stored[clean]))])
    assert {d["facets"]["version"]["datasetVersion"] for d in task[0]["outputs"]} == {clean}
    run = [e for e in events if e["job"]["name"] == "adhoc" and e["eventType"] == "COMPLETE"]
    assert len(run) == 1
    raw_copy = stored[hashlib.sha256(b"a\n1\n").hexdigest()]
    assert path_to_uri(isolated / "raw.csv") != raw_copy
    assert str(isolated / "raw.csv") in names(run[0]["inputs"])
    assert str(isolated / "store" / "runs" / run_id / "inputs" / "raw.csv") in names(run[0]["outputs"])
    ledger.close()


def test_sqlite_export_opens_with_indexes_and_full_text_search(ledger: Ledger, isolated: Path) -> None:
    """The SQLite export has the tables, their indexes and FTS on names."""
    from scalable.ledger.export import export_sqlite

    _workflow(ledger)
    counts = export_sqlite(ledger, isolated / "ledger.db")
    db = sqlite_utils.Database(isolated / "ledger.db")
    assert set(db.table_names()) >= {"events", "artifacts", "runs", "lineage", "lineage_context"}
    assert counts["runs"] == 2 and db["events"].count == counts["events"]
    assert counts["lineage"] == len(FLOW) and counts["lineage_context"] >= len(CONTEXT)
    assert {tuple(i.columns) for i in db["lineage"].indexes} >= {("src",), ("dst",)}
    assert [r["artifact_name"] for r in db["artifacts"].search("parquet")] == ["a.parquet"]


def test_cli_lineage_formats_and_exports(ledger: Ledger, cli: CliInvoker, isolated: Path) -> None:
    """The CLI prints a tree, JSON, DOT, Mermaid, PROV and OpenLineage; export writes files."""
    _workflow(ledger)
    tree = cli("ledger", "lineage", "s3://b/runs/2/c.csv")
    assert tree.exit_code == 0 and tree.stdout.startswith("c.csv")
    checks = (("dot", "digraph"), ("json", '"edges"'), ("mermaid", "flowchart"), ("prov", "wasDerivedFrom"),
              ("openlineage", "START"))  # fmt: skip
    for fmt, check in checks:
        result = cli("ledger", "lineage", D["e"], "--format", fmt)
        assert result.exit_code == 0 and check in result.stdout, fmt
    down = cli("ledger", "lineage", "--down", "--depth", "1", D["a"], "--format", "json")
    assert {e["depth"] for e in json.loads(down.stdout)["edges"]} == {1}
    declared = cli("ledger", "lineage", D["e"], "--relation", "derived_from", "--format", "json")
    assert {(e["src"], e["dst"]) for e in json.loads(declared.stdout)["edges"]} == set()
    flow = cli("ledger", "lineage", D["d"], "--relation", "derived_from", "--format", "json")
    assert {(e["src"], e["dst"]) for e in json.loads(flow.stdout)["edges"]} == {(D["c"], D["d"]), (D["b"], D["c"])}
    runs = cli("ledger", "lineage", "run-2", "--runs-only", "--relation", "reused", "--format", "json")
    assert {(e["src"], e["relation"], e["dst"]) for e in json.loads(runs.stdout)["edges"]} == {
        ("run-1", "reused", "run-2")
    }
    limited = cli("ledger", "lineage", D["a"], "--down", "--max-nodes", "2")
    assert limited.exit_code == 0 and "3 more node(s)" in limited.stdout
    result = cli("ledger", "export", "--sqlite", "l.db", "--prov", "p.json", "--openlineage", "o.jsonl")
    assert result.exit_code == 0
    assert all((isolated / f).stat().st_size > 0 for f in ("l.db", "p.json", "o.jsonl"))
    assert cli("ledger", "export").exit_code == 2


def test_cli_lineage_rows_are_the_walked_edges_then_the_context(ledger: Ledger, cli: CliInvoker) -> None:
    """--format jsonl/csv/table: one row per edge, the data flow by depth first, then the runs around it."""
    _workflow(ledger)
    result = cli("ledger", "lineage", D["d"], "--format", "jsonl")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    walked = [(r["depth"], r["src"], r["relation"], r["dst"]) for r in rows if r["depth"] is not None]
    assert walked == [
        (1, D["c"], "derived_from", D["d"]),
        (2, D["b"], "derived_from", D["c"]),
        (3, D["a"], "derived_in_task", D["b"]),
    ]
    assert rows[: len(walked)] == [r for r in rows if r["depth"] is not None]  # the walk first
    context = {(r["src"], r["relation"], r["dst"]) for r in rows if r["depth"] is None}
    # Which runs generated and used those four versions, and the reuse between those runs.
    shown = {D["a"], D["b"], D["c"], D["d"]}
    assert context == {e for e in CONTEXT if {e[0], e[2]} & shown} | {("run-1", "reused", "run-2")}
    by_id = {r["src"]: r["src_label"] for r in rows} | {r["dst"]: r["dst_label"] for r in rows}
    assert by_id[D["d"]] == f"c.csv ({D['d'][:12]})" and by_id["run-1"] == "run-1"
    table = cli("ledger", "lineage", D["d"], "--format", "table").stdout.splitlines()
    assert len(table) == 2 + len(rows) and table[2].split()[0] == "1"
    csv_rows = cli("ledger", "lineage", D["d"], "--format", "csv").stdout.splitlines()
    assert csv_rows[0].startswith("depth,src,src_label,relation,dst") and len(csv_rows) == 1 + len(rows)


def test_cli_names_nodes_as_a_user_does_and_refuses_what_is_unclear(ledger: Ledger, cli: CliInvoker) -> None:
    """Prefixes, names and run ids work; an ambiguous prefix lists the candidates, unknown and short ones exit 2."""
    _workflow(ledger)
    with bind(run_id="run-9"):
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/p", "digest": D["c"][:8] + "f" * 56})
    by_prefix = cli("ledger", "lineage", D["d"][:8], "--format", "json")
    assert by_prefix.exit_code == 0 and json.loads(by_prefix.stdout)["root"] == D["d"]
    by_name = cli("ledger", "lineage", "a.parquet", "--format", "json")
    assert by_name.exit_code == 0 and json.loads(by_name.stdout)["root"] == D["b"]
    ambiguous = cli("ledger", "lineage", D["c"][:8])
    assert ambiguous.exit_code == 2 and ambiguous.stdout == ""
    assert D["c"] in ambiguous.stderr and D["c"][:8] + "f" * 56 in ambiguous.stderr
    assert "Traceback" not in ambiguous.stderr and len(ambiguous.stderr.strip().splitlines()) == 1
    several = cli("ledger", "lineage", "c.csv")  # two locations have that name
    assert several.exit_code == 2 and "runs/1/c.csv" in several.stderr and "runs/2/c.csv" in several.stderr
    short = cli("ledger", "lineage", "dddd")
    assert short.exit_code == 2 and "at least 8 hex characters" in short.stderr
    missing = cli("ledger", "lineage", "no-such-thing")
    assert missing.exit_code == 2 and "no-such-thing" in missing.stderr
    bad = cli("ledger", "lineage", D["a"], "--relation", "made_of")
    assert bad.exit_code == 2


def test_cli_runs_and_show(ledger: Ledger, cli: CliInvoker) -> None:
    """runs lists both runs; show prints one run's artifacts; an unknown run exits 2."""
    _workflow(ledger)
    rows = json.loads(cli("ledger", "runs", "--format", "json").stdout)
    assert [r["run_id"] for r in rows] == ["run-1", "run-2"] and rows[0]["status"] == "completed"
    shown = json.loads(cli("ledger", "show", "run-2", "--format", "json").stdout)
    assert [a["artifact_name"] for a in shown["artifacts"]] == ["c.csv"]
    assert cli("ledger", "show", "run-9").exit_code == 2
