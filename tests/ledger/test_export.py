"""The output format registry: one registration reaches the API, ``lineage --format`` and ``export``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from scalable.errors import ConfigError
from scalable.ledger.export import OutputFormat, register_format, rendered_export, unregister_format
from scalable.ledger.lineage import LineageGraph
from scalable.ledger.log import Ledger
from tests.conftest import CliInvoker

RAW, CLEAN = "a" * 64, "b" * 64


def edge_lines(graph: LineageGraph) -> str:
    """A toy format: one ``src relation dst`` line per edge, sorted."""
    return "".join(sorted(f"{e['src']} {e['relation']} {e['dst']}\n" for e in graph.edges))


@pytest.fixture
def toy() -> Iterator[str]:
    """The toy format, registered for the test only."""
    register_format(
        OutputFormat("edges", "Write one line per edge.", render=edge_lines, export=rendered_export(edge_lines))
    )
    yield "edges"
    unregister_format("edges")


def derive(ledger: Ledger) -> None:
    """A run that cleans a raw file into a second one."""
    ledger.append(
        {"event_type": "artifact", "op": "recorded", "run_id": "run-1", "digest": RAW, "location": "file:///raw"}
    )
    ledger.append(
        {
            "event_type": "artifact",
            "op": "put",
            "run_id": "run-1",
            "digest": CLEAN,
            "location": "file:///clean",
            "inputs": [RAW],
        }
    )
    ledger.finish_run("run-1")


def test_a_registered_format_reaches_the_api_the_cli_and_export(
    ledger: Ledger, cli: CliInvoker, toy: str, tmp_path: Path
) -> None:
    """A format added through the registry renders graphs, is a --format choice and an export option."""
    derive(ledger)
    expected = f"{RAW} derived_from {CLEAN}\n"
    assert ledger.lineage(CLEAN).render(toy) == expected
    shown = cli("ledger", "lineage", CLEAN, "--format", toy)
    assert shown.exit_code == 0, shown.output
    assert shown.stdout == expected
    target = tmp_path / "all.edges"
    written = cli("ledger", "export", f"--{toy}", str(target), "--format", "json")
    assert written.exit_code == 0, written.output
    assert json.loads(written.stdout) == [
        {"format": toy, "path": str(target), "bytes": target.stat().st_size, "summary": f"wrote {target}"}
    ]
    assert target.read_text() == edge_lines(ledger.lineage(None))
    assert f"--{toy} FILE" in cli("ledger", "export", "--help").stdout


def test_removed_and_unknown_formats_are_refused(ledger: Ledger, cli: CliInvoker) -> None:
    """A format not in the registry is refused by the API and the CLI, naming the known ones."""
    derive(ledger)
    graph = ledger.lineage(CLEAN)
    with pytest.raises(ConfigError, match=r"unknown output format 'edges'; known formats: .*tree"):
        graph.render("edges")
    with pytest.raises(ConfigError, match="does not render lineage"):
        graph.render("sqlite")
    refused = cli("ledger", "lineage", CLEAN, "--format", "edges")
    assert refused.exit_code == 2
    assert "'edges' is not one of" in refused.stderr


def test_bad_registrations_are_refused() -> None:
    """A name taken already, a name that is no option, or a format that does nothing is refused."""
    with pytest.raises(ConfigError, match="registered already"):
        register_format(OutputFormat("tree", "Again.", render=edge_lines))
    with pytest.raises(ConfigError, match="not valid"):
        register_format(OutputFormat("Edges!", "Bad name.", render=edge_lines))
    with pytest.raises(ConfigError, match="neither a rendering nor an export"):
        register_format(OutputFormat("nothing", "Does nothing."))
