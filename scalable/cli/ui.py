"""``scalable ui``: serve the provenance explorer over the ledger."""

from __future__ import annotations

import click

__all__ = ["COMMANDS", "ui"]


@click.command()
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on; off loopback a token is required."
)
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
@click.option(
    "--runs-dir",
    type=click.Path(file_okay=False),
    help="Runs directory (default: SCALABLE_RUNS_DIR or .scalable/runs).",
)
@click.option(
    "--ledger-dir",
    type=click.Path(file_okay=False),
    help="Compacted ledger directory (default: SCALABLE_LEDGER_DIR or .scalable/ledger).",
)
@click.option(
    "--token",
    help="Secret every request must carry (header or login cookie). Off loopback, one is generated and printed when omitted.",
)
def ui(host: str, port: int, runs_dir: str | None, ledger_dir: str | None, token: str | None) -> None:
    """Serve the provenance explorer: runs, artifacts, lineage graphs, audits and SQL, in a browser.

    Read-only: it never writes to the ledger, the stores or the cache. It listens on
    127.0.0.1 unless --host says otherwise; then every request must carry the token.
    """
    from scalable.ui import serve

    serve(host, port, runs_dir=runs_dir, ledger_dir=ledger_dir, token=token, echo=click.echo)


#: The command of this module; ``scalable/cli/__init__.py`` adds it to the top-level group.
COMMANDS: tuple[click.Command, ...] = (ui,)
