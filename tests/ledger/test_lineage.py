"""Lineage from events: edges, walks, URI resolution, as_of, exports, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import sqlite_utils

from scalable.errors import ConfigError, NodeNotFoundError
from scalable.ledger import bind
from scalable.ledger.generations import read_generation
from scalable.ledger.log import Ledger
from tests.conftest import CliInvoker

# Fake digests, one hex digit repeated: "aaaa...", "bbbb...", ..., "ffff...", "0000...", "1111...".
D = {name: digit * 64 for name, digit in zip("abcdefgh", "abcdef01", strict=True)}


def _workflow(ledger: Ledger) -> tuple[str, dict[str, str]]:
    """Two runs: raw -> A -> cached B -> C; the second run hits B's cache and makes a new C."""
    with bind(run_id="run-1"):
        ledger.append({"event_type": "run", "op": "started", "attrs": {"project": "ref"}})
        ledger.append(
            {
                "event_type": "artifact",
                "op": "recorded",
                "location": "file:///data/raw.csv",
                "digest": D["a"],
                "artifact_name": "raw.csv",
            }
        )
        ledger.append(
            {
                "event_type": "artifact",
                "op": "put",
                "location": "s3://b/runs/1/a.parquet",
                "digest": D["b"],
                "artifact_name": "a.parquet",
                "inputs": ["file:///data/raw.csv"],
                "task_name": "A",
            }
        )
        ledger.append(
            {
                "event_type": "cache",
                "op": "write",
                "function_name": "m.B",
                "digest": D["c"],
                "inputs": [D["b"]],
                "task_name": "B",
            }
        )
        ledger.append(
            {
                "event_type": "artifact",
                "op": "put",
                "location": "s3://b/runs/1/c.csv",
                "digest": D["d"],
                "artifact_name": "c.csv",
                "inputs": [D["c"]],
                "task_name": "C",
            }
        )
    first_end = ledger.finish_run("run-1", "completed")["timestamp"]
    with bind(run_id="run-2"):
        ledger.append({"event_type": "run", "op": "started", "attrs": {"project": "ref"}})
        ledger.append(
            {
                "event_type": "cache",
                "op": "hit",
                "function_name": "m.B",
                "digest": D["c"],
                "hit": True,
                "attrs": {"writer_run": "run-1"},
                "task_name": "B",
            }
        )
        ledger.append(
            {
                "event_type": "artifact",
                "op": "put",
                "location": "s3://b/runs/2/c.csv",
                "digest": D["e"],
                "artifact_name": "c.csv",
                "inputs": [D["c"]],
                "task_name": "C",
            }
        )
    ledger.finish_run("run-2", "completed")
    return first_end, D


TRUTH = {
    ("run-1", "generated", D["a"]),
    ("run-1", "generated", D["b"]),
    ("run-1", "generated", D["c"]),
    ("run-1", "generated", D["d"]),
    (D["a"], "derived_from", D["b"]),
    (D["a"], "used", "run-1"),
    (D["b"], "derived_from", D["c"]),
    (D["b"], "used", "run-1"),
    (D["c"], "derived_from", D["d"]),
    (D["c"], "used", "run-1"),
    (D["c"], "used", "run-2"),
    ("run-1", "reused", "run-2"),
    ("run-2", "generated", D["e"]),
    (D["c"], "derived_from", D["e"]),
}


def test_the_lineage_view_holds_exactly_the_true_edges(ledger: Ledger) -> None:
    """The edge set of the reference workflow equals the truth: precision and recall are 1."""
    _workflow(ledger)
    got = {tuple(r.values()) for r in ledger.query("SELECT DISTINCT src, relation, dst FROM lineage").to_pylist()}
    assert got == TRUTH


def _everything(ledger: Ledger, node: str) -> tuple[set[tuple[str, ...]], ...]:
    """Edges with depth both ways from ``node``, and the view's edge set."""
    walks = tuple(
        {(e["src"], e["relation"], e["dst"], e["depth"]) for e in ledger.lineage(node, direction=d).edges}
        for d in ("up", "down")
    )
    view = {tuple(r.values()) for r in ledger.query("SELECT DISTINCT src, relation, dst FROM lineage").to_pylist()}
    return (*walks, view)


def test_compacted_edges_and_live_tails_together_equal_the_streams(ledger: Ledger, isolated: Path) -> None:
    """Compacted edges plus a live stream, plus a file the edges do not cover, give the streams' lineage, URI inputs included."""
    _workflow(ledger)
    ledger.compact()
    assert read_generation(ledger.location).lineage is not None
    with bind(run_id="run-3"):  # a live stream whose URI input resolves to a compacted version
        ledger.append(
            {
                "event_type": "artifact",
                "op": "put",
                "location": "s3://b/runs/3/f.csv",
                "digest": D["f"],
                "inputs": ["s3://b/runs/1/a.parquet"],
                "task_name": "F",
            }
        )
    streams_only = Ledger.open(ledger_dir=isolated / "elsewhere")
    expected = {node: _everything(streams_only, node) for node in (D["a"], D["f"], "run-1", "s3://b/runs/1/a.parquet")}
    assert (D["b"], "derived_from", D["f"]) in ledger.lineage(D["f"]).edge_set()
    for node, want in expected.items():
        assert _everything(ledger, node) == want
    ledger.compact(["run-3"])  # a session closing: the new file is not covered by the edges
    lineage = read_generation(ledger.location).lineage
    assert lineage is not None and len(lineage.covers) < len(read_generation(ledger.location).files)
    for node, want in expected.items():
        assert _everything(ledger, node) == want
    ledger.compact()
    lineage = read_generation(ledger.location).lineage
    assert lineage is not None and len(lineage.covers) == len(read_generation(ledger.location).files)
    for node, want in expected.items():
        assert _everything(ledger, node) == want


def test_ancestors_walk_back_across_runs_through_the_cache(ledger: Ledger) -> None:
    """The second run's output traces back through the reused cache entry to the first run's raw file."""
    _workflow(ledger)
    graph = ledger.lineage("s3://b/runs/2/c.csv")
    assert graph.root == D["e"]
    assert {D["a"], D["b"], D["c"], "run-1", "run-2"} <= set(graph.nodes)
    assert graph.nodes["run-1"]["kind"] == "run" and graph.nodes[D["b"]]["name"] == "a.parquet"
    depth = {(e["src"], e["relation"], e["dst"]): e["depth"] for e in graph.edges}
    assert depth[(D["c"], "derived_from", D["e"])] == 1
    assert depth[(D["b"], "derived_from", D["c"])] == 2
    shallow = ledger.lineage(D["e"], depth=1)
    assert {e["depth"] for e in shallow.edges} == {1}


def test_descendants_show_what_came_of_an_input(ledger: Ledger) -> None:
    """Walking down from the raw file reaches both runs' outputs."""
    _workflow(ledger)
    graph = ledger.lineage("file:///data/raw.csv", direction="down")
    reached = {e["dst"] for e in graph.edges}
    assert {D["b"], D["c"], D["d"], D["e"], "run-2"} <= reached


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


def test_cycles_end_and_each_edge_appears_once(ledger: Ledger) -> None:
    """A cycle in the inputs does not loop: every edge is listed once at its smallest depth."""
    with bind(run_id="run-cycle"):
        ledger.append(
            {"event_type": "artifact", "op": "put", "digest": D["a"], "location": "m://a", "inputs": [D["b"]]}
        )
        ledger.append(
            {"event_type": "artifact", "op": "put", "digest": D["b"], "location": "m://b", "inputs": [D["a"]]}
        )
    graph = ledger.lineage(D["a"])
    keys = [(e["src"], e["dst"], e["relation"], e["run_id"]) for e in graph.edges]
    assert len(keys) == len(set(keys))


def test_as_of_between_the_runs_shows_only_the_first(ledger: Ledger) -> None:
    """Lineage as of a time between the runs has none of the second run's edges."""
    first_end, _ = _workflow(ledger)
    rows = ledger.query("SELECT DISTINCT run_id FROM lineage", as_of=first_end).column(0).to_pylist()
    assert rows == ["run-1"]
    with pytest.raises(NodeNotFoundError):
        ledger.lineage("s3://b/runs/2/c.csv", as_of=first_end)


def test_bad_lineage_arguments_are_named(ledger: Ledger) -> None:
    """An unknown node, a bad direction or depth each raise a named error."""
    _workflow(ledger)
    with pytest.raises(NodeNotFoundError, match="nope"):
        ledger.lineage("nope")
    with pytest.raises(ConfigError, match="sideways"):
        ledger.lineage(D["a"], direction="sideways")
    with pytest.raises(ConfigError, match="depth"):
        ledger.lineage(D["a"], depth=0)


def test_graph_renders_as_tree_dot_and_json(ledger: Ledger) -> None:
    """The graph has a text tree, Graphviz DOT and JSON form, all naming the same nodes."""
    _workflow(ledger)
    graph = ledger.lineage("s3://b/runs/2/c.csv")
    tree = graph.to_tree("up")
    assert tree.splitlines()[0].startswith("c.csv")
    assert "derived_from: B" not in tree and "reused: run-1" in tree
    assert graph.to_dot().startswith("digraph lineage {")
    assert {n["id"] for n in json.loads(graph.to_json())["nodes"]} == set(graph.nodes)


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
    assert len(expanded) == len(graph.nodes) - 1


def test_prov_export_validates_with_the_prov_package(ledger: Ledger, isolated: Path) -> None:
    """The PROV-JSON export reads back with the prov package with every relation."""
    from prov.model import ProvDocument

    from scalable.ledger.export import export_prov

    _workflow(ledger)
    export_prov(ledger, isolated / "prov.json")
    doc = ProvDocument.deserialize(source=str(isolated / "prov.json"), format="json")
    records = list(doc.get_records())
    kinds = {type(r).__name__ for r in records}
    assert {"ProvEntity", "ProvActivity", "ProvUsage", "ProvGeneration", "ProvDerivation", "ProvCommunication"} <= kinds
    assert len([r for r in records if type(r).__name__ == "ProvActivity"]) == 2


def test_openlineage_export_validates_against_the_spec(ledger: Ledger, isolated: Path) -> None:
    """One START and one COMPLETE per run, each a valid OpenLineage 2-0-2 RunEvent."""
    from scalable.ledger.export import export_openlineage

    _workflow(ledger)
    export_openlineage(ledger, isolated / "ol.jsonl")
    events = [json.loads(line) for line in (isolated / "ol.jsonl").read_text().splitlines()]
    schema = json.loads((Path(__file__).parents[1] / "data" / "OpenLineage-2-0-2.json").read_text())
    validator = jsonschema.Draft202012Validator({**schema, "$ref": "#/$defs/RunEvent"})
    for event in events:
        validator.validate(event)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE", "START", "COMPLETE"]
    complete2 = events[3]
    assert [d["name"] for d in complete2["outputs"]] == ["runs/2/c.csv"]


def test_sqlite_export_opens_with_indexes_and_full_text_search(ledger: Ledger, isolated: Path) -> None:
    """The SQLite export has the four tables, their indexes and FTS on names."""
    from scalable.ledger.export import export_sqlite

    _workflow(ledger)
    counts = export_sqlite(ledger, isolated / "ledger.db")
    db = sqlite_utils.Database(isolated / "ledger.db")
    assert set(db.table_names()) >= {"events", "artifacts", "runs", "lineage"}
    assert counts["runs"] == 2 and db["events"].count == counts["events"]
    assert {tuple(i.columns) for i in db["lineage"].indexes} >= {("src",), ("dst",)}
    assert [r["artifact_name"] for r in db["artifacts"].search("parquet")] == ["a.parquet"]


def test_cli_lineage_formats_and_exports(ledger: Ledger, cli: CliInvoker, isolated: Path) -> None:
    """The CLI prints a tree, DOT, JSON, PROV and OpenLineage; export writes files; bad nodes exit 2."""
    _workflow(ledger)
    tree = cli("ledger", "lineage", "s3://b/runs/2/c.csv")
    assert tree.exit_code == 0 and tree.stdout.startswith("c.csv")
    for fmt, check in (("dot", "digraph"), ("json", '"edges"'), ("prov", "wasDerivedFrom"), ("openlineage", "START")):
        result = cli("ledger", "lineage", D["e"], "--format", fmt)
        assert result.exit_code == 0 and check in result.stdout, fmt
    down = cli("ledger", "lineage", "--down", "--depth", "1", D["a"], "--format", "json")
    assert {e["depth"] for e in json.loads(down.stdout)["edges"]} == {1}
    missing = cli("ledger", "lineage", "no-such-thing")
    assert missing.exit_code == 2 and "no-such-thing" in missing.stderr
    result = cli("ledger", "export", "--sqlite", "l.db", "--prov", "p.json", "--openlineage", "o.jsonl")
    assert result.exit_code == 0
    assert all((isolated / f).stat().st_size > 0 for f in ("l.db", "p.json", "o.jsonl"))
    assert cli("ledger", "export").exit_code == 2


def test_cli_runs_and_show(ledger: Ledger, cli: CliInvoker) -> None:
    """runs lists both runs; show prints one run's artifacts; an unknown run exits 2."""
    _workflow(ledger)
    rows = json.loads(cli("ledger", "runs", "--format", "json").stdout)
    assert [r["run_id"] for r in rows] == ["run-1", "run-2"] and rows[0]["status"] == "completed"
    shown = json.loads(cli("ledger", "show", "run-2", "--format", "json").stdout)
    assert [a["artifact_name"] for a in shown["artifacts"]] == ["c.csv"]
    assert cli("ledger", "show", "run-9").exit_code == 2
