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

Output
------

Every command that prints rows takes ``--format table|csv|json|jsonl`` (``ledger query`` also
``parquet``; ``ledger lineage`` also the graph formats). ``table`` is for reading: digests are
cut to their first 16 characters, which ``ledger lineage`` accepts. ``csv`` (one header, one
table), ``json`` (one array of row objects; ``ledger show`` and ``ledger audit`` write one
object, described in their help) and ``jsonl`` (one object a line) keep every value whole.
Long work (``ledger audit``, ``ledger export``, ``ledger compact``, ``artifacts put`` and
``get`` of large files) reports its progress on stderr when stderr is a terminal, or with
``--progress``; data goes to stdout only.

Exit codes
----------

The same for every command:

* 0: done. A reading command found what it was pointed at; an empty but existing ledger or
  store is fine (``audit ok: 0 run(s)``, ``(no rows)``).
* 1: a check ran and failed: ``ledger audit`` found problems, ``artifacts exists`` found
  nothing at the key of a store that exists.
* 2: could not do what was asked: bad input; nothing there (no ledger, store, bucket or
  cache, no run or function of that name); a storage or network failure (no or refused
  credentials, permission denied, an endpoint that does not answer, a file where a directory
  must be). One line on stderr, starting with ``error:``, naming the path or URI (credentials
  masked) and what to do. ``scalable --debug ...`` shows the traceback instead. An error
  nobody foresaw also exits 2 with one line (``unexpected ...``), never 1.

Commands and the API
--------------------

Messages name commands. What each command calls, for use from Python:

================================  =======================================================================
command                           API
================================  =======================================================================
``artifacts put LOCAL URI``       ``build_artifact_store(STORE).put(LOCAL, KEY)``
``artifacts get URI LOCAL``       ``build_artifact_store(STORE).get(KEY, LOCAL, verify=...)``
``artifacts ls URI``              ``build_artifact_store(URI).list_refs(prefix)`` (keys only:
                                  ``list_artifacts``); ``check_exists()`` when it lists nothing
``artifacts exists URI``          ``build_artifact_store(STORE).exists(KEY)``
``ledger query SQL``              ``Ledger.open().query(SQL, as_of=...)``
``ledger runs``                   ``Ledger.query("SELECT ... FROM runs")``
``ledger show RUN``               ``scalable.ledger.views.describe_run(ledger, RUN)``
``ledger tail``                   ``scalable.ledger.tail.tail_events`` and ``follow_events``
``ledger lineage NODE``           ``Ledger.lineage(NODE, direction=..., depth=..., as_of=...)``
``ledger audit [RUN]``            ``Ledger.audit(RUN, content=..., progress=...)``
``ledger export --FORMAT FILE``   each format's ``export`` of ``scalable.ledger.export.export_formats()``
``ledger replay RUN``             ``Ledger.replay(RUN, into=..., until=..., handlers=...)``
``ledger compact``                ``Ledger.compact(run_ids, keep_jsonl=..., retire_before=...)``
``ledger sync``                   ``Ledger.sync_remote()``
``cache stats``, ``cache clear``  ``scalable.cache.stats.cache_stats()``, ``clear_cache(function=...)``
``manifest check [PATH]``         ``scalable.manifest.load_manifest(PATH, target_name=...)``
================================  =======================================================================

Every ledger command opens the ledger with ``Ledger.open(..., must_exist=True)``: no ledger
there is an error, not an empty answer.

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
