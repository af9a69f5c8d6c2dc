"""Where the CLI's commands come from: each module's COMMANDS, added to its group in one place."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import click
import pytest

from scalable.cli import add_commands, artifacts, cache, cli, ledger, manifest, provenance, report, ui
from scalable.errors import ConfigError
from tests.conftest import CliInvoker
from tests.helpers import ROOT


def _gen_cli_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "tools" / "gen_cli_docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_group_holds_exactly_the_commands_its_modules_list() -> None:
    """The top level holds the four groups, ``report`` and ``ui``; each group holds the COMMANDS of its modules and nothing else."""
    top = (*report.COMMANDS, *ui.COMMANDS)
    assert set(cli.commands) == {"artifacts", "cache", "ledger", "manifest", *(c.name for c in top)}
    expected = {
        "artifacts": artifacts.COMMANDS,
        "cache": cache.COMMANDS,
        "ledger": (*ledger.COMMANDS, *provenance.COMMANDS),
        "manifest": manifest.COMMANDS,
    }
    for name, commands in expected.items():
        group = cli.commands[name]
        assert isinstance(group, click.Group)
        assert sorted(group.commands) == sorted(c.name for c in commands if c.name), name
        assert all(group.commands[c.name] is c for c in commands if c.name)


def test_a_toy_command_added_to_a_group_runs_and_reaches_the_reference(cli: CliInvoker) -> None:
    """A command added with add_commands runs, shows in its group's help and in the generated CLI reference."""

    @click.command()
    @click.argument("name")
    def hello(name: str) -> None:
        """Greet NAME (a toy command)."""
        click.echo(f"hello {name}")

    group = ledger.ledger
    add_commands(group, [hello])
    try:
        result = cli("ledger", "hello", "world")
        assert result.exit_code == 0 and result.stdout == "hello world\n"
        assert "Greet NAME" in cli("ledger", "--help").stdout
        assert "scalable ledger hello\n" in _gen_cli_docs().render()
        with pytest.raises(ConfigError, match="the command ledger 'hello' exists already"):
            add_commands(group, [hello])
    finally:
        del group.commands["hello"]
    assert "scalable ledger hello\n" not in _gen_cli_docs().render()
