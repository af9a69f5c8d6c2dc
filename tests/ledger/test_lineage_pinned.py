"""Lineage promises pinned one by one: the run-level graph, node limits, naming and the graph's methods."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from scalable.errors import AmbiguousNodeError
from scalable.ledger import bind
from scalable.ledger.lineage import LineageGraph
from scalable.ledger.log import Ledger

D = {name: hashlib.sha256(name.encode()).hexdigest() for name in "abcdefghijk"}
T1, T2, T3 = "2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z", "2026-01-01T00:00:03Z"


def _edge(src: str, dst: str, run: str, when: str, *, depth: int = 1, task: str = "T", relation: str = "derived_from",
          direction: str = "up") -> dict[str, Any]:  # fmt: skip
    """A walked data-flow edge as a graph holds it."""
    return {"src": src, "dst": dst, "relation": relation, "run_id": run, "task_name": task, "task_id": f"{task}-id",
            "timestamp": when, "depth": depth, "direction": direction}  # fmt: skip


def _made(run: str, node: str, when: str, task: str = "T") -> dict[str, Any]:
    """A context edge: ``run`` generated ``node`` at ``when``."""
    return {"src": run, "dst": node, "relation": "generated", "run_id": run, "task_name": task,
            "task_id": f"{task}-id", "timestamp": when}  # fmt: skip


def _triples(graph: LineageGraph) -> set[tuple[str, str, str]]:
    return {(e["src"], e["relation"], e["dst"]) for e in graph.edges}


# --- the run-level graph -----------------------------------------------------------------------


def test_a_run_informs_another_from_its_first_generation_of_a_version() -> None:
    """A run that made X before B used it informed B, even when it made X again afterwards."""
    graph = LineageGraph(
        root=D["b"],
        edges=[_edge(D["a"], D["b"], "run-b", T2)],
        context=[_made("run-a", D["a"], T1, "first"), _made("run-a", D["a"], T3, "again")],
    )
    runs = graph.runs_only()
    assert _triples(runs) == {("run-a", "informed", "run-b")}
    assert set(runs.nodes) == {"run-a", "run-b"}
    assert runs.nodes["run-a"] == {  # a run the graph knows nothing more of
        "kind": "run", "label": "run-a", "project": None, "status": "running", "started_at": None,
        "finished_at": None, "error_type": None, "error": None, "user": None, "host": None,
    }  # fmt: skip


def test_a_version_made_only_after_it_was_used_informed_nobody() -> None:
    """A run whose only generation of X came after B used X is no source of B's data."""
    graph = LineageGraph(root=D["b"], edges=[_edge(D["a"], D["b"], "run-b", T2)], context=[_made("run-a", D["a"], T3)])
    runs = graph.runs_only()
    assert runs.edges == []
    assert set(runs.nodes) == {"run-a"}  # it still generated one of the graph's artifacts


def test_made_at_the_very_time_it_was_used_counts_as_made_before() -> None:
    """A generation at the very timestamp of the use counts: made "no later than that edge"."""
    graph = LineageGraph(root=D["b"], edges=[_edge(D["a"], D["b"], "run-b", T2)], context=[_made("run-a", D["a"], T2)])
    assert _triples(graph.runs_only()) == {("run-a", "informed", "run-b")}


def test_every_earlier_maker_informs_whatever_order_the_makers_come_in() -> None:
    """Of two runs that made X, the one that made it too late is skipped, the other still counts."""
    graph = LineageGraph(
        root=D["b"],
        edges=[_edge(D["a"], D["b"], "run-b", T2)],
        context=[_made("run-late", D["a"], T3), _made("run-early", D["a"], T1)],
    )
    assert _triples(graph.runs_only()) == {("run-early", "informed", "run-b")}


def test_a_cached_value_is_reused_and_a_file_informs_never_both() -> None:
    """The relation follows what the node is: a cache value gives ``reused``, anything else ``informed``."""
    edges = [_edge(D["a"], D["c"], "run-b", T2), _edge(D["b"], D["c"], "run-b", T2)]
    context = [_made("run-a", D["a"], T1), _made("run-z", D["b"], T1)]
    nodes = {
        D["a"]: {"kind": "artifact", "artifact_kind": "cache"},
        D["b"]: {"kind": "artifact", "artifact_kind": None},
    }
    graph = LineageGraph(root=D["c"], nodes=nodes, edges=edges, context=context)
    assert _triples(graph.runs_only()) == {("run-a", "reused", "run-b"), ("run-z", "informed", "run-b")}


def test_a_run_edge_comes_from_the_nearest_and_first_walked_data_edge() -> None:
    """Several data edges link the same two runs: the run edge keeps the smallest depth, the first one on ties."""
    edges = [
        _edge(D["a"], D["b"], "run-b", T2, depth=1, task="near"),
        _edge(D["a"], D["c"], "run-b", T3, depth=1, task="near-too"),
        _edge(D["a"], D["d"], "run-b", T3, depth=2, task="far"),
    ]
    graph = LineageGraph(root=D["b"], edges=edges, context=[_made("run-a", D["a"], T1)])
    (edge,) = graph.runs_only().edges
    assert (edge["src"], edge["dst"], edge["depth"], edge["task_name"], edge["timestamp"]) == (
        "run-a", "run-b", 1, "near", T2,
    )  # fmt: skip


def test_a_run_edge_carries_the_consumer_and_the_task_time_and_direction_of_its_data_edge() -> None:
    """The run edge is the consuming run's: its ``run_id``, and the task, time and walk of the data edge behind it."""
    edge = _edge(D["a"], D["b"], "run-b", T2, depth=3, task="fit", direction="down")
    graph = LineageGraph(root=D["a"], edges=[edge], context=[_made("run-a", D["a"], T1)], direction="down")
    runs = graph.runs_only()
    assert runs.edges == [
        {"src": "run-a", "dst": "run-b", "relation": "informed", "run_id": "run-b", "task_name": "fit",
         "task_id": "fit-id", "timestamp": T2, "depth": 3, "direction": "down"}
    ]  # fmt: skip
    assert runs.root is None and runs.direction == "down" and runs.tasks == {}


def test_from_a_run_root_what_it_used_informs_it_and_it_stays_the_root() -> None:
    """A run root's own ``used`` edges link the makers of its inputs to it; the root is a node even alone."""
    used = {**_edge(D["a"], "run-b", "run-b", T2), "relation": "used"}
    made = {**_edge("run-b", D["c"], "run-b", T3), "relation": "generated"}
    nodes = {"run-b": {"kind": "run", "label": "run-b", "status": "completed"}}
    graph = LineageGraph(root="run-b", nodes=nodes, edges=[used, made], context=[_made("run-a", D["a"], T1)])
    runs = graph.runs_only()
    assert _triples(runs) == {("run-a", "informed", "run-b")}
    assert runs.root == "run-b" and runs.nodes["run-b"]["status"] == "completed"
    alone = LineageGraph(root="run-b", nodes=nodes).runs_only()
    assert alone.root == "run-b" and set(alone.nodes) == {"run-b"} and alone.edges == []


def test_the_run_level_graph_of_an_artifact_root_has_runs_only() -> None:
    """An artifact root is no run: the run-level graph has no root and no artifact among its nodes."""
    nodes = {D["b"]: {"kind": "artifact", "artifact_kind": "file"}}
    graph = LineageGraph(root=D["b"], nodes=nodes, edges=[_edge(D["a"], D["b"], "run-b", T2)],
                         context=[_made("run-a", D["a"], T1)])  # fmt: skip
    runs = graph.runs_only()
    assert runs.root is None and set(runs.nodes) == {"run-a", "run-b"}
    assert all(info["kind"] == "run" for info in runs.nodes.values())


def test_the_run_level_graph_keeps_the_reuse_between_its_runs_as_context() -> None:
    """Context of the run-level graph: the ``reused`` edges between its runs, nothing else."""
    reused = {"src": "run-a", "dst": "run-b", "relation": "reused", "run_id": "run-b", "task_name": "B",
              "task_id": "B-id", "timestamp": T2}  # fmt: skip
    from_elsewhere, to_elsewhere = {**reused, "src": "run-x"}, {**reused, "dst": "run-y"}
    context = [_made("run-a", D["a"], T1), reused, from_elsewhere, to_elsewhere]
    graph = LineageGraph(root=D["b"], edges=[_edge(D["a"], D["b"], "run-b", T2)], context=context)
    assert graph.runs_only().context == [reused]


def test_the_run_level_graph_keeps_what_was_left_out_of_the_walk() -> None:
    """A walk cut by ``max_nodes`` stays marked as cut in its run-level graph, with its direction."""
    graph = LineageGraph(root=D["b"], edges=[_edge(D["a"], D["b"], "run-b", T2)], context=[_made("run-a", D["a"], T1)],
                         direction="both", elided={"nodes": 4, "edges": 6})  # fmt: skip
    runs = graph.runs_only()
    assert runs.elided == {"nodes": 4, "edges": 6} and runs.direction == "both"


# --- the graph's methods -----------------------------------------------------------------------


def test_a_graph_renders_through_its_methods_as_through_the_registry(ledger: Ledger) -> None:
    """to_json, to_dot, to_mermaid, to_prov and to_openlineage give what the formats of those names print."""
    with bind(run_id="run-m"):
        ledger.append({"event_type": "artifact", "op": "used", "location": "file:///in", "digest": D["a"]})
        ledger.append({"event_type": "artifact", "op": "recorded", "location": "file:///out", "digest": D["b"],
                       "artifact_name": "out.csv", "inputs": [D["a"]]})  # fmt: skip
    graph = ledger.lineage(D["b"])
    assert graph.to_json() + "\n" == graph.render("json") and json.loads(graph.to_json())["root"] == D["b"]
    assert graph.to_dot() == graph.render("dot") and "out.csv" in graph.to_dot()
    assert graph.to_mermaid() == graph.render("mermaid") and "out.csv" in graph.to_mermaid()
    assert json.loads(graph.render("prov")) == graph.to_prov() and "wasDerivedFrom" in graph.to_prov()
    lines = graph.render("openlineage").splitlines()
    assert [json.loads(line) for line in lines] == graph.to_openlineage() and lines


def test_a_tree_shows_ancestors_unless_asked_for_descendants() -> None:
    """``to_tree()`` is the upward tree; ``to_tree("down")`` the downward one, of a graph walked both ways."""
    graph = LineageGraph(
        root=D["b"],
        nodes={n: {"kind": "artifact", "name": f"{k}.csv"} for k, n in D.items()},
        edges=[_edge(D["a"], D["b"], "r", T1), _edge(D["b"], D["c"], "r", T2, direction="down")],
        direction="both",
    )
    assert graph.to_tree() == graph.to_tree("up")
    assert "a.csv" in graph.to_tree() and "c.csv" not in graph.to_tree()
    assert "c.csv" in graph.to_tree("down") and "a.csv" not in graph.to_tree("down")


def test_a_label_is_the_node_s_own_else_made_from_its_name_or_location() -> None:
    """A node's ``label`` wins; else name and short digest; a node the graph does not describe still gets one."""
    graph = LineageGraph(
        root=D["a"],
        nodes={
            D["a"]: {"kind": "artifact", "label": "chosen", "name": "ignored"},
            D["b"]: {"kind": "artifact", "name": "b.csv"},
            D["c"]: {"kind": "artifact", "name": None, "locations": ["s3://b/dir/c.parquet/"]},
            "run-r": {"kind": "run", "label": ""},
        },
    )
    assert graph.label(D["a"]) == "chosen"
    assert graph.label(D["b"]) == f"b.csv ({D['b'][:12]})"
    assert graph.label(D["c"]) == f"c.parquet ({D['c'][:12]})"
    assert graph.label("run-r") == "run-r"
    assert graph.label(D["d"]) == D["d"][:12]  # not in the graph at all
    assert graph.label("s3://b/x/y.txt") == "y.txt"


# --- node limits -------------------------------------------------------------------------------


def _chain(ledger: Ledger) -> list[str]:
    """A chain k <- j <- ... <- a (each made from the next letter's version); returns a..k."""
    names = sorted(D)
    with bind(run_id="run-chain"):
        for name, parent in zip(names, [*names[1:], None], strict=True):
            ledger.append({"event_type": "artifact", "op": "recorded", "location": f"file:///{name}",
                           "digest": D[name], "inputs": [D[parent]] if parent else None})  # fmt: skip
    return [D[n] for n in names]


def test_max_nodes_keeps_the_root_and_the_nearest_nodes_and_the_edges_among_them(ledger: Ledger) -> None:
    """The nodes kept are the root and the nearest ones by depth (not by id); edges only between kept nodes."""
    chain = _chain(ledger)
    root = chain[0]
    full = ledger.lineage(root)
    depth = {e["src"]: e["depth"] for e in full.edges}
    for limit in (1, 2, 4):
        small = ledger.lineage(root, max_nodes=limit)
        nearest = {root} | set(sorted(depth, key=lambda n: depth[n])[: limit - 1])
        kept = {e["src"] for e in small.edges} | {e["dst"] for e in small.edges} | {root}
        assert kept == nearest, limit
        assert all(e["src"] in nearest and e["dst"] in nearest for e in small.edges)
        assert len(small.edges) == limit - 1
        assert small.elided == {"nodes": len(chain) - limit, "edges": len(full.edges) - (limit - 1)}
    assert ledger.lineage(root, max_nodes=1).render("tree").splitlines()[0] == f"a ({root[:12]})  [run-chain]"


def test_max_nodes_keeps_the_root_whatever_its_id(ledger: Ledger) -> None:
    """The root is kept first even when its parents' ids sort before its own."""
    chain = _chain(ledger)
    root = max(chain[1:-1])  # inside the chain (a parent and a child), the largest digest of all
    assert root > max(chain[0], chain[-1])
    small = ledger.lineage(root, direction="both", max_nodes=2)
    assert len(small.edges) == 1 and root in (small.edges[0]["src"], small.edges[0]["dst"])
    three = ledger.lineage(root, direction="both", max_nodes=3)
    assert len(three.edges) == 2 and all(root in (e["src"], e["dst"]) for e in three.edges)


def test_max_nodes_above_the_graph_elides_nothing(ledger: Ledger) -> None:
    """A limit the graph fits in leaves it whole, with no ``elided`` counts."""
    chain = _chain(ledger)
    full = ledger.lineage(chain[0])
    for limit in (len(chain), len(chain) + 5):
        fits = ledger.lineage(chain[0], max_nodes=limit)
        assert fits.elided is None and fits.edges == full.edges
        assert "more node(s)" not in fits.render("tree")


# --- naming ------------------------------------------------------------------------------------


def test_an_ambiguous_prefix_lists_ten_candidates_and_says_when_there_are_more(ledger: Ledger) -> None:
    """Exactly ten matches are counted and all listed; beyond ten, ten are listed and the count is a bound."""
    prefix = "cafe0123"
    digests = [prefix + f"{i:02x}" + "0" * 54 for i in range(13)]

    def put(chosen: list[str]) -> None:
        with bind(run_id="run-p"):
            for digest in chosen:
                ledger.append({"event_type": "artifact", "op": "put", "location": f"s3://b/{digest}", "digest": digest})

    put(digests[:10])
    with pytest.raises(AmbiguousNodeError, match=f"^'{prefix}' matches 10 nodes: ") as ten:
        ledger.lineage(prefix)
    assert all(d in str(ten.value) for d in digests[:10]) and "more" not in str(ten.value)
    for extra in (digests[10:11], digests[11:]):  # eleven, then thirteen
        put(extra)
        with pytest.raises(AmbiguousNodeError, match=f"^'{prefix}' matches more than 10 nodes: ") as many:
            ledger.lineage(prefix)
        assert [d for d in digests if d in str(many.value)] == digests[:10]


# --- the whole ledger --------------------------------------------------------------------------


def test_the_whole_ledger_graph_has_every_flow_edge_at_depth_zero_and_every_artifact(ledger: Ledger) -> None:
    """``lineage(None)``: every data-flow edge (depth 0, downward), both directions, and as nodes every
    artifact, those only a run made or used included."""
    with bind(run_id="run-w"):
        ledger.append({"event_type": "artifact", "op": "used", "location": "file:///in", "digest": D["a"]})
        ledger.append({"event_type": "artifact", "op": "recorded", "location": "file:///mid", "digest": D["b"],
                       "inputs": [D["a"]]})  # fmt: skip
        ledger.append({"event_type": "artifact", "op": "recorded", "location": "file:///out", "digest": D["c"],
                       "inputs": [D["b"]]})  # fmt: skip
    with bind(run_id="run-v"):
        ledger.append({"event_type": "artifact", "op": "used", "location": "file:///alone-in", "digest": D["d"]})
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/alone-out", "digest": D["e"]})
        # h: named as an input only, never recorded
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/f", "digest": D["f"],
                       "inputs": [D["h"]]})  # fmt: skip
    whole = ledger.lineage(None)
    assert whole.root is None and whole.direction == "both"
    assert {(e["src"], e["dst"], e["depth"], e["direction"]) for e in whole.edges} == {
        (D["a"], D["b"], 0, "down"), (D["b"], D["c"], 0, "down"), (D["h"], D["f"], 0, "down"),
    }  # fmt: skip
    artifacts = {n for n, info in whole.nodes.items() if info["kind"] == "artifact"}
    assert artifacts == {D["a"], D["b"], D["c"], D["d"], D["e"], D["f"], D["h"]}
    assert {n for n, info in whole.nodes.items() if info["kind"] == "run"} == {"run-w", "run-v"}
    assert whole.nodes[D["d"]]["used_by"] == ["run-v"] and whole.nodes[D["e"]]["generated_by"] == ["run-v"]
    assert whole.nodes[D["h"]] == {
        "kind": "artifact", "name": None, "locations": [], "size_bytes": None, "artifact_kind": None,
        "generated_by": [], "used_by": ["run-v"], "label": D["h"][:12],
    }  # fmt: skip


def test_the_whole_ledger_graph_is_the_same_before_and_after_compaction(ledger: Ledger) -> None:
    """Compaction changes where ``lineage(None)`` reads from, never what it returns."""
    with bind(run_id="run-w", task_name="T", task_id="t-1"):
        ledger.append({"event_type": "artifact", "op": "used", "location": "file:///in", "digest": D["a"],
                       "artifact_name": "in.csv", "size_bytes": 3})  # fmt: skip
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/out", "digest": D["b"],
                       "artifact_name": "out.csv", "size_bytes": 5})  # fmt: skip
        ledger.append({"event_type": "cache", "op": "write", "function_name": "m.f", "digest": D["c"],
                       "inputs": [D["b"]]})  # fmt: skip
    before = ledger.lineage(None)
    ledger.compact()
    after = ledger.lineage(None)
    assert after.nodes == before.nodes and after.edges == before.edges and after.context == before.context
    assert before.nodes[D["b"]]["name"] == "out.csv" and before.nodes[D["c"]]["name"] == "m.f() result"


# --- describing nodes --------------------------------------------------------------------------


def _described_run(ledger: Ledger) -> dict[str, str]:
    """run-d (started with who and where, failed) uses in.csv in task fit and makes out.csv; a task known by
    name only uses c and puts d; run-open, never finished, makes e from out.csv. Returns the named task's times."""
    ledger.append({"event_type": "run", "op": "started", "run_id": "run-d",
                   "attrs": {"project": "proj", "user": "ana", "host": "h1"}})  # fmt: skip
    with bind(run_id="run-d", task_name="fit", task_id="t-fit"):
        ledger.append({"event_type": "task", "op": "started", "attrs": {"task_id": "t-fit"}})
        ledger.append({"event_type": "artifact", "op": "used", "location": "file:///in.csv", "digest": D["a"],
                       "artifact_name": "in.csv", "size_bytes": 3, "kind": "file"})  # fmt: skip
        ledger.append({"event_type": "artifact", "op": "recorded", "location": "file:///out.csv", "digest": D["b"],
                       "artifact_name": "out.csv", "size_bytes": 5, "kind": "file"})  # fmt: skip
        ledger.append({"event_type": "task", "op": "finished", "attrs": {"task_id": "t-fit"}})
    with bind(run_id="run-d", task_name="named"):
        used = ledger.append({"event_type": "artifact", "op": "used", "location": "file:///c", "digest": D["c"]})
        put = ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/d", "digest": D["d"]})
    ledger.finish_run("run-d", "failed", {"error_type": "ValueError", "error": "bad row"})
    with bind(run_id="run-open"):
        ledger.append({"event_type": "artifact", "op": "recorded", "location": "file:///e", "digest": D["e"],
                       "inputs": [D["b"]]})  # fmt: skip
    return {"first": str(used["timestamp"]), "last": str(put["timestamp"])}


def test_runs_are_described_from_their_run_events(ledger: Ledger) -> None:
    """A run node has the project, who and where of its start, and the status, error and times of its end."""
    _described_run(ledger)
    graph = ledger.lineage(D["b"], direction="both")
    run = graph.nodes["run-d"]
    times = ledger.query("SELECT started_at, finished_at FROM runs WHERE run_id = 'run-d'").to_pylist()[0]
    assert {k: run[k] for k in ("kind", "label", "project", "status", "error_type", "error", "user", "host")} == {
        "kind": "run", "label": "run-d", "project": "proj", "status": "failed", "error_type": "ValueError",
        "error": "bad row", "user": "ana", "host": "h1",
    }  # fmt: skip
    assert run["started_at"] == times["started_at"] and run["finished_at"] == times["finished_at"]
    assert run["started_at"] is not None and run["finished_at"] > run["started_at"]
    still = graph.nodes["run-open"]  # no run event at all
    assert (still["status"], still["started_at"], still["finished_at"], still["project"]) == (
        "running",
        None,
        None,
        None,
    )


def test_tasks_are_described_from_task_events_or_else_from_their_edges(ledger: Ledger) -> None:
    """A task with task events has their times and status; one known by name only spans its edges' times."""
    times = _described_run(ledger)
    graph = ledger.lineage("run-d", direction="both")
    fit = graph.tasks["run-d/t-fit"]
    assert (fit["run_id"], fit["task_id"], fit["task_name"], fit["status"]) == ("run-d", "t-fit", "fit", "finished")
    assert fit["started_at"] is not None and fit["ended_at"] > fit["started_at"]
    named = graph.tasks["run-d/named"]
    assert (named["task_name"], named["status"]) == ("named", None)
    assert (str(named["started_at"]), str(named["ended_at"])) == (times["first"], times["last"])
    assert set(graph.tasks) == {"run-d/t-fit", "run-d/named"}


def test_artifacts_are_described_by_name_locations_size_and_kind(ledger: Ledger) -> None:
    """An artifact node has its name, every location, size and kind; of values that differ the smallest,
    whether the events were compacted or not."""
    _described_run(ledger)
    graph = ledger.lineage(D["b"], direction="both")
    out = graph.nodes[D["b"]]
    assert (out["name"], out["locations"], out["size_bytes"], out["artifact_kind"]) == (
        "out.csv", ["file:///out.csv"], 5, "file",
    )  # fmt: skip
    assert (out["generated_by"], out["used_by"]) == (["run-d"], ["run-open"])
    ledger.compact()
    with bind(run_id="run-late"):  # the same bytes again, later, elsewhere, under other words
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/copy", "digest": D["b"],
                       "artifact_name": "a-copy.csv", "size_bytes": 5, "kind": "blob"})  # fmt: skip
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/zz", "digest": D["b"],
                       "artifact_name": "zz.csv", "kind": "zz"})  # fmt: skip
    for graph in (ledger.lineage(D["b"], direction="both"), ledger.lineage(None)):
        out = graph.nodes[D["b"]]
        assert (out["name"], out["locations"], out["size_bytes"], out["artifact_kind"]) == (
            "a-copy.csv", ["file:///out.csv", "s3://b/copy", "s3://b/zz"], 5, "blob",
        )  # fmt: skip
        assert out["generated_by"] == ["run-d", "run-late"]
    unknown = ledger.lineage(D["e"]).nodes[D["e"]]
    assert (unknown["name"], unknown["size_bytes"], unknown["artifact_kind"]) == (None, None, None)


# --- the walk ----------------------------------------------------------------------------------


def _shortcut(ledger: Ledger) -> None:
    """y -> b -> d -> c declared (derived_from), and b -> c through one task (derived_in_task): a shortcut."""
    with bind(run_id="run-s"):
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/y", "digest": D["g"]})
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/b", "digest": D["b"],
                       "inputs": [D["g"]]})  # fmt: skip
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/d", "digest": D["d"],
                       "inputs": [D["b"]]})  # fmt: skip
    with bind(run_id="run-s", task_name="T", task_id="t-1"):
        ledger.append({"event_type": "artifact", "op": "used", "location": "s3://b/b", "digest": D["b"]})
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/c", "digest": D["c"],
                       "inputs": [D["d"]]})  # fmt: skip


def _depths(graph: LineageGraph) -> set[tuple[str, str, str, int]]:
    return {(e["src"], e["relation"], e["dst"], e["depth"]) for e in graph.edges}


@pytest.mark.parametrize("compacted", [False, True])
def test_a_walk_restricted_to_some_relations_takes_no_shortcut_through_others(ledger: Ledger, compacted: bool) -> None:
    """Depths count edges of the chosen relations only, whatever other walks the same reader made before."""
    _shortcut(ledger)
    if compacted:
        ledger.compact()
    every = {(D["d"], "derived_from", D["c"], 1), (D["b"], "derived_in_task", D["c"], 1),
             (D["b"], "derived_from", D["d"], 2), (D["g"], "derived_from", D["b"], 2)}  # fmt: skip
    declared = {(D["d"], "derived_from", D["c"], 1), (D["b"], "derived_from", D["d"], 2),
                (D["g"], "derived_from", D["b"], 3)}  # fmt: skip
    for _ in range(2):  # each order, twice: a reader keeps what it built for a walk
        assert _depths(ledger.lineage(D["c"])) == every
        assert _depths(ledger.lineage(D["c"], relations=["derived_from"])) == declared
        assert _depths(ledger.lineage(D["c"], relations=["derived_in_task"])) == {
            (D["b"], "derived_in_task", D["c"], 1)
        }
    down = {(D["g"], "derived_from", D["b"], 1), (D["b"], "derived_from", D["d"], 2),
            (D["d"], "derived_from", D["c"], 3)}  # fmt: skip
    assert _depths(ledger.lineage(D["g"], direction="down", relations=["derived_from"])) == down
    assert _depths(ledger.lineage(D["g"], direction="down", depth=2, relations=["derived_from"])) == {
        e for e in down if e[3] <= 2
    }


def test_relations_are_checked_and_repeats_ignored(ledger: Ledger) -> None:
    """A repeated relation counts once; an empty list or an unknown name is refused, naming the valid ones."""
    _shortcut(ledger)
    once = ledger.lineage(D["c"], relations=["derived_from", "derived_from"])
    assert _depths(once) == _depths(ledger.lineage(D["c"], relations=["derived_from"]))
    from scalable.errors import ConfigError

    with pytest.raises(ConfigError, match=r"list is empty.*derived_from, derived_in_task"):
        ledger.lineage(D["c"], relations=[])
    with pytest.raises(ConfigError, match=r"'sideways'.*generated, used"):
        ledger.lineage(D["c"], relations=["derived_from", "sideways"])
    with pytest.raises(ConfigError, match="direction 'left' is not one of up, down, both"):
        ledger.lineage(D["c"], direction="left")


# --- what a user names -------------------------------------------------------------------------


def test_a_run_id_is_read_before_an_artifact_name_and_a_name_before_a_prefix(ledger: Ledger) -> None:
    """Readings in order: a run id beats an artifact of that name; a name beats a digest prefix it looks like."""
    with bind(run_id="run-q"):
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/q", "digest": D["a"],
                       "artifact_name": "run-q"})  # fmt: skip
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/h", "digest": D["b"],
                       "artifact_name": D["c"][:10]})  # fmt: skip
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/c", "digest": D["c"]})
    graph = ledger.lineage("run-q")
    assert graph.root == "run-q" and graph.nodes["run-q"]["kind"] == "run"
    assert ledger.lineage(D["c"][:10]).root == D["b"]  # the name, though it is also a prefix of c
    assert ledger.lineage(D["c"][:11]).root == D["c"]


def test_a_location_with_no_digest_is_a_node_of_its_own(ledger: Ledger) -> None:
    """A location only named as an input, or recorded without a digest, resolves to itself."""
    with bind(run_id="run-l"):
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/out", "digest": D["a"],
                       "inputs": ["s3://b/never-recorded"]})  # fmt: skip
        ledger.append({"event_type": "artifact", "op": "used", "location": "s3://b/no-digest"})
    graph = ledger.lineage("s3://b/never-recorded", direction="down")
    assert graph.root == "s3://b/never-recorded" and graph.descendants() == {D["a"]}
    assert graph.nodes["s3://b/never-recorded"]["locations"] == ["s3://b/never-recorded"]
    assert ledger.lineage("s3://b/no-digest").root == "s3://b/no-digest"


# --- a walk's graph ----------------------------------------------------------------------------


def _triples_at(graph: LineageGraph, depth: int | None = None) -> set[tuple[str, str, str]]:
    return {(e["src"], e["relation"], e["dst"]) for e in graph.edges if depth is None or e["depth"] == depth}


def test_a_run_s_first_step_follows_the_direction_and_the_chosen_relations(ledger: Ledger) -> None:
    """Up from a run: what it generated and used; down: what it generated only; each only when chosen."""
    from tests.ledger.test_lineage import _workflow

    _workflow(ledger)
    made, inputs = {("run-2", "generated", D["e"])}, {(D["b"], "used", "run-2"), (D["c"], "used", "run-2")}
    assert _triples_at(ledger.lineage("run-2"), 1) == made | inputs
    assert _triples_at(ledger.lineage("run-2", direction="down"), 1) == made
    assert _triples_at(ledger.lineage("run-2", relations=["used"])) == inputs
    assert _triples_at(ledger.lineage("run-2", relations=["generated"])) == made
    both = ledger.lineage("run-2", direction="both")
    assert {e["direction"] for e in both.edges if e["relation"] == "used"} == {"up"}
    assert {e["direction"] for e in both.edges if e["relation"] == "generated"} == {"up", "down"}
    assert "run-2" in both.nodes and both.nodes["run-2"]["kind"] == "run" and "generated_by" not in both.nodes["run-2"]


def test_a_graph_s_edges_are_ordered_by_depth_then_direction_and_its_context_by_time(ledger: Ledger) -> None:
    """Walked edges come nearest first (up before down on ties), each once per direction; context: the
    artifacts' generations and uses oldest first, then the reuse between the graph's runs."""
    from tests.ledger.test_lineage import _workflow

    _workflow(ledger)
    graph = ledger.lineage(D["c"], direction="both")
    order = [(e["depth"], e["direction"], e["src"], e["dst"], e["relation"]) for e in graph.edges]
    assert order == sorted(order) and len(order) == len(set(order))
    assert {(e["src"], e["dst"], e["direction"]) for e in graph.edges} == {
        (D["b"], D["c"], "up"), (D["a"], D["b"], "up"), (D["c"], D["d"], "down"), (D["c"], D["e"], "down"),
    }  # fmt: skip
    times = [(e["timestamp"], e["src"], e["dst"], e["relation"]) for e in graph.context[:-1]]
    assert times == sorted(times) and len(times) == len(set(times)) and "reused" not in {t[3] for t in times}
    last = graph.context[-1]
    assert (last["src"], last["relation"], last["dst"]) == ("run-1", "reused", "run-2")
    alone = ledger.lineage(D["a"])  # only run 1 used the raw input: no reuse between runs shown
    assert "reused" not in {e["relation"] for e in alone.context}
    assert {n for n, i in alone.nodes.items() if i["kind"] == "run"} == {"run-1"}


def test_the_run_level_graph_is_made_from_the_whole_walk_whatever_relations_it_shows(ledger: Ledger) -> None:
    """``runs_only`` with relations walks every data edge, then keeps the run edges of those relations."""
    from tests.ledger.test_lineage import _workflow

    _workflow(ledger)
    assert _triples_at(ledger.lineage(D["e"], runs_only=True, relations=["reused"])) == {("run-1", "reused", "run-2")}
    assert _triples_at(ledger.lineage(D["e"], runs_only=True, relations=["informed"])) == {
        ("run-1", "informed", "run-2")
    }
    assert ledger.lineage(D["e"], runs_only=True, relations=["derived_from"]).edges == []


def test_a_cut_graph_describes_only_the_nodes_it_kept(ledger: Ledger) -> None:
    """With ``max_nodes`` the nodes, context and runs are those of the kept part of the walk."""
    chain = _chain(ledger)
    small = ledger.lineage(chain[0], max_nodes=2)
    artifacts = {n for n, info in small.nodes.items() if info["kind"] == "artifact"}
    assert artifacts == {chain[0], chain[1]}
    assert {e["dst"] for e in small.context if e["relation"] == "generated"} == artifacts


def test_a_running_task_and_run_have_no_end_yet(ledger: Ledger) -> None:
    """A task started and not finished is ``running`` with no end, though it has edges; so is its run."""
    ledger.append({"event_type": "run", "op": "started", "run_id": "run-live", "attrs": {"project": "live"}})
    with bind(run_id="run-live", task_name="open", task_id="t-open"):
        started = ledger.append({"event_type": "task", "op": "started", "attrs": {"task_id": "t-open"}})
        ledger.append({"event_type": "artifact", "op": "used", "location": "file:///in", "digest": D["a"]})
        ledger.append({"event_type": "artifact", "op": "recorded", "location": "file:///out", "digest": D["b"]})
    graph = ledger.lineage(D["b"])
    task = graph.tasks["run-live/t-open"]
    assert (task["task_name"], task["status"], task["ended_at"]) == ("open", "running", None)
    assert str(task["started_at"]) == str(started["timestamp"])
    run = graph.nodes["run-live"]
    assert (run["project"], run["status"], run["finished_at"]) == ("live", "running", None)
    assert run["started_at"] is not None


def test_quotes_in_task_ids_names_and_locations_are_data_not_sql(ledger: Ledger) -> None:
    """Task ids, names and locations (node ids of versions with no digest) with quotes are described and walked."""
    with bind(run_id="run-q", task_name="it's", task_id="t'1"):
        ledger.append({"event_type": "task", "op": "started", "attrs": {"task_id": "t'1"}})
        ledger.append({"event_type": "artifact", "op": "used", "location": "file:///in'put",
                       "artifact_name": "in'put"})  # fmt: skip
        ledger.append({"event_type": "artifact", "op": "recorded", "location": "file:///it's", "digest": D["b"],
                       "artifact_name": "it's.csv"})  # fmt: skip
        ledger.append({"event_type": "task", "op": "finished", "attrs": {"task_id": "t'1"}})
    graph = ledger.lineage("file:///it's")
    assert graph.root == D["b"] and graph.ancestors() == {"file:///in'put"}
    assert graph.nodes["file:///in'put"]["name"] == "in'put" and graph.nodes["file:///in'put"]["used_by"] == ["run-q"]
    assert graph.nodes[D["b"]]["name"] == "it's.csv"
    assert graph.tasks["run-q/t'1"]["status"] == "finished" and graph.tasks["run-q/t'1"]["task_name"] == "it's"
    assert ledger.lineage("in'put", direction="down").descendants() == {D["b"]}


def test_bytes_both_stored_and_cached_are_described_as_the_artifact(ledger: Ledger) -> None:
    """A digest that is a cache value and a stored file too takes the file's description."""
    with bind(run_id="run-x"):
        ledger.append({"event_type": "cache", "op": "write", "function_name": "m.f", "digest": D["a"], "size_bytes": 4})
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/f.bin", "digest": D["a"],
                       "artifact_name": "f.bin", "size_bytes": 4, "inputs": [D["b"]]})  # fmt: skip
        ledger.append({"event_type": "cache", "op": "write", "function_name": "m.g", "digest": D["c"], "size_bytes": 9,
                       "inputs": [D["a"]]})  # fmt: skip
    graph = ledger.lineage(D["c"])
    both, cached = graph.nodes[D["a"]], graph.nodes[D["c"]]
    assert (both["name"], both["locations"], both["artifact_kind"]) == ("f.bin", ["s3://b/f.bin"], None)
    assert (cached["name"], cached["locations"], cached["size_bytes"], cached["artifact_kind"]) == (
        "m.g() result", [], 9, "cache",
    )  # fmt: skip


def test_a_version_the_ledger_only_saw_deleted_is_known_with_no_lineage(ledger: Ledger) -> None:
    """A digest recorded only by a deletion is in the ledger: its graph is empty, not "not found"."""
    with bind(run_id="run-del"):
        ledger.append({"event_type": "artifact", "op": "deleted", "location": "s3://b/gone", "digest": D["a"]})
    graph = ledger.lineage(D["a"], direction="both")
    assert graph.root == D["a"] and graph.edges == [] and graph.context == []
    assert graph.nodes[D["a"]]["locations"] == ["s3://b/gone"]


def test_a_uri_is_never_read_as_a_local_path(ledger: Ledger, isolated: Path) -> None:
    """``s3://b/x`` names that object even when a local folder called ``s3:`` holds a recorded ``b/x``."""
    from scalable.uris import path_to_uri

    local = isolated / "s3:" / "b" / "x"
    with bind(run_id="run-u"):
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/x", "digest": D["a"]})
        ledger.append({"event_type": "artifact", "op": "put", "location": path_to_uri(local), "digest": D["b"]})
    assert ledger.lineage("s3://b/x").root == D["a"]
    assert ledger.lineage(str(local)).root == D["b"]


def test_bad_limits_are_named_with_their_value(ledger: Ledger) -> None:
    """A depth or node limit below one is refused, naming the value given."""
    from scalable.errors import ConfigError

    _shortcut(ledger)
    with pytest.raises(ConfigError, match=r"^depth 0 must be at least 1$"):
        ledger.lineage(D["c"], depth=0)
    with pytest.raises(ConfigError, match=r"^max_nodes -2 must be at least 1$"):
        ledger.lineage(D["c"], max_nodes=-2)
    assert len(ledger.lineage(D["c"], depth=1, max_nodes=1).nodes) == 2  # the root, and its run


def test_a_walk_without_a_depth_stops_at_one_hundred_edges(ledger: Ledger) -> None:
    """No depth given means at most 100 edges from the node; a larger depth goes further."""
    chain = [f"{i:064x}" for i in range(103)]
    with bind(run_id="run-long"):
        for i, digest in enumerate(chain):
            ledger.append({"event_type": "artifact", "op": "recorded", "location": f"file:///v/{i}", "digest": digest,
                           "inputs": [chain[i - 1]] if i else None})  # fmt: skip
    assert max(e["depth"] for e in ledger.lineage(chain[-1]).edges) == 100
    assert len(ledger.lineage(chain[-1]).ancestors()) == 100
    assert len(ledger.lineage(chain[-1], depth=102).ancestors()) == 102


def test_from_a_run_the_data_flow_starts_one_edge_out(ledger: Ledger) -> None:
    """A run's own edges are depth 1, so the data flow from its artifacts starts at depth 2."""
    from tests.ledger.test_lineage import _workflow

    _workflow(ledger)
    graph = ledger.lineage("run-2", depth=2)
    assert {e["depth"] for e in graph.edges if e["relation"] in ("generated", "used")} == {1}
    assert {e["depth"] for e in graph.edges if e["relation"].startswith("derived")} == {2}
    assert (D["a"], "derived_in_task", D["b"]) in _triples_at(graph)


def test_reuse_is_shown_only_between_runs_the_graph_holds(ledger: Ledger) -> None:
    """A run that reused another's value shows that reuse only when the other run is in the graph too."""
    from tests.ledger.test_lineage import _workflow

    _workflow(ledger)
    narrow = ledger.lineage(D["e"], relations=["derived_from"])  # e has no declared inputs: e and run 2 only
    assert narrow.edges == [] and {n for n, i in narrow.nodes.items() if i["kind"] == "run"} == {"run-2"}
    assert "reused" not in {e["relation"] for e in narrow.context}


def test_as_of_describes_nodes_as_they_were_then_even_when_compacted(ledger: Ledger) -> None:
    """A later copy under another name changes a node's description now, never as of before it."""
    with bind(run_id="run-t"):
        first = ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/z.csv", "digest": D["a"],
                               "artifact_name": "z.csv", "size_bytes": 7})  # fmt: skip
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/y", "digest": D["b"],
                       "inputs": [D["a"]]})  # fmt: skip
    with bind(run_id="run-later"):
        ledger.append({"event_type": "artifact", "op": "put", "location": "s3://b/a.csv", "digest": D["a"],
                       "artifact_name": "a.csv", "size_bytes": 7})  # fmt: skip
    ledger.compact()
    before = ledger.lineage(D["a"], direction="down", as_of=str(first["timestamp"]))
    assert (before.nodes[D["a"]]["name"], before.nodes[D["a"]]["locations"]) == ("z.csv", ["s3://b/z.csv"])
    assert before.nodes[D["a"]]["generated_by"] == ["run-t"]
    now = ledger.lineage(D["a"], direction="down")
    assert (now.nodes[D["a"]]["name"], now.nodes[D["a"]]["locations"]) == ("a.csv", ["s3://b/a.csv", "s3://b/z.csv"])


NOT_FOUND = (
    "{!r} is not a digest, digest prefix, location, path, artifact name or run id in the ledger{}; "
    'find one with: scalable ledger query "SELECT artifact_name, digest, location FROM artifacts"'
)


def test_what_names_nothing_or_several_nodes_is_told_in_full(ledger: Ledger) -> None:
    """The messages say what was tried, list the candidates, and say what to give instead."""
    from scalable.errors import NodeNotFoundError

    with bind(run_id="run-m"):
        for where in ("s3://b/one/m.csv", "s3://b/two/m.csv"):
            ledger.append({"event_type": "artifact", "op": "put", "location": where, "digest": D["a"] if "one" in where
                           else D["b"], "artifact_name": "m.csv"})  # fmt: skip
    with pytest.raises(AmbiguousNodeError) as several:
        ledger.lineage("m.csv")
    assert str(several.value) == (
        f"'m.csv' matches 2 nodes: {D['b']} (the version of 'm.csv' at s3://b/two/m.csv); "
        f"{D['a']} (the version of 'm.csv' at s3://b/one/m.csv); give a full digest, a longer prefix or the location"
    )
    for text, hint in (("abc", " (a digest prefix needs at least 8 hex characters)"), ("xyz", ""),
                       ("deadbeef00", ""), ("s3://b/none", "")):  # fmt: skip
        with pytest.raises(NodeNotFoundError) as missing:
            ledger.lineage(text)
        assert str(missing.value) == NOT_FOUND.format(text, hint), text
    with pytest.raises(NodeNotFoundError) as unknown:
        ledger.lineage(D["k"])
    assert str(unknown.value) == NOT_FOUND.format(D["k"], "")


def test_a_graph_remembers_the_ledger_and_time_it_was_read_from(ledger: Ledger) -> None:
    """``source`` is the ledger and ``as_of`` of the read, for exports that look up more there."""
    _shortcut(ledger)
    when = ledger.query("SELECT max(timestamp) FROM events").column(0)[0].as_py()
    graph = ledger.lineage(D["c"], as_of=str(when))
    assert graph.source is not None and graph.source[0] is ledger and graph.source[1] == str(when)
    assert ledger.lineage(D["c"]).source == (ledger, None)


def test_an_unknown_digest_is_not_found_in_a_compacted_ledger_either(ledger: Ledger) -> None:
    """Compaction changes nothing for a digest the ledger never saw: still "not found"."""
    from scalable.errors import NodeNotFoundError

    _shortcut(ledger)
    ledger.compact()
    with pytest.raises(NodeNotFoundError) as unknown:
        ledger.lineage(D["k"], direction="both")
    assert str(unknown.value) == NOT_FOUND.format(D["k"], "")
    assert ledger.lineage(D["g"], direction="down").descendants() == {D["b"], D["c"], D["d"]}
