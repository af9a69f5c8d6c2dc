"""Write docs/cli.rst from the CLI's own ``--help`` (run it after changing a command).

``python tools/gen_cli_docs.py`` rewrites the file; ``--check`` exits 1 when it is stale
(the test suite runs the check, so the reference cannot drift from the commands).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scalable.cli import cli

TARGET = Path(__file__).resolve().parents[1] / "docs" / "cli.rst"

HEADER = """\
Command-line reference
======================

Generated from ``scalable --help`` by ``tools/gen_cli_docs.py``; do not edit by hand.

Every command that prints data takes ``--format``. Exit codes: 0 fine, 1 a check failed
(``ledger audit``, ``artifacts exists``), 2 bad input (one line on stderr; ``--debug`` shows the
traceback).

"""


def _walk(command: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    out = [(path, command)]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            out += _walk(command.commands[name], [*path, name])
    return out


def render() -> str:
    """Return the full text of docs/cli.rst."""
    parts = [HEADER]
    for path, command in _walk(cli, ["scalable"]):
        title = " ".join(path)
        ctx = click.Context(
            command, info_name=title, terminal_width=100, max_content_width=100, help_option_names=["-h", "--help"]
        )
        help_text = command.get_help(ctx)
        parts.append(f"{title}\n{'-' * len(title)}\n\n.. code-block:: text\n\n")
        parts.append("".join(f"    {line}\n" if line.strip() else "\n" for line in help_text.splitlines()))
        parts.append("\n")
    return "".join(parts).rstrip() + "\n"


def is_current(path: Path = TARGET) -> bool:
    """Whether ``path`` holds exactly what :func:`render` gives for the current commands."""
    return path.exists() and path.read_text() == render()


def main() -> int:
    """Rewrite docs/cli.rst, or with ``--check`` report whether it is current."""
    text = render()
    if "--check" in sys.argv:
        if not is_current():
            print(f"{TARGET} is stale: run python tools/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
