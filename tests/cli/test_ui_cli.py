"""``scalable ui``: starts, prints where it listens, stops on Ctrl-C; bad input is one line and exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

from scalable.ledger import bind
from scalable.ledger.log import Ledger
from tests.conftest import CliInvoker
from tests.helpers import run_python
from tests.ui.conftest import start_explorer, stop_explorer


def _one_line(result: object) -> str:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.exit_code == 2, stderr  # type: ignore[attr-defined]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return str(lines[0])


def test_a_missing_runs_directory_a_short_token_and_a_busy_port_are_one_line(cli: CliInvoker, isolated: Path) -> None:
    """Each bad start names what is wrong and exits 2 without a traceback."""
    nothing = _one_line(cli("ui"))
    assert "no ledger here" in nothing and str(isolated / ".scalable" / "runs") in nothing
    (isolated / ".scalable" / "runs").mkdir(parents=True)
    missing = _one_line(cli("ui", "--runs-dir", "missing"))
    assert str(isolated / "missing") in missing and "does not exist" in missing
    assert "--token is shorter than 16 characters" in _one_line(cli("ui", "--token", "abc"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in _one_line(cli("ui", "--port", str(port)))
    assert "cannot listen on 'no-such-host.invalid'" in _one_line(cli("ui", "--host", "no-such-host.invalid"))


def test_it_serves_the_ledger_until_ctrl_c(ledger: Ledger, isolated: Path) -> None:
    """The real command prints its URL, answers there, and on SIGINT stops cleanly (exit 0)."""
    with bind(run_id="run-cli-ui"):
        ledger.append({"event_type": "run", "op": "started", "attrs": {"project": "p"}})
    explorer = start_explorer(isolated)
    try:
        assert explorer.url.startswith("http://127.0.0.1:")
        assert [r["run_id"] for r in explorer.json("/api/runs")["runs"]] == ["run-cli-ui"]
    finally:
        code = stop_explorer(explorer.proc)
    assert code == 0
    assert (
        explorer.lines[0]
        == f"scalable ui: the ledger of {isolated / '.scalable' / 'runs'} at {explorer.url}/ (read-only; Ctrl-C stops it)"
    )


def test_the_cli_stays_light_and_names_the_extra_when_it_is_missing(isolated: Path) -> None:
    """Importing the CLI imports neither Starlette nor uvicorn; without them `scalable ui` says what to install."""
    light = run_python(
        "import sys, scalable.cli; print(sorted(m for m in ('starlette', 'uvicorn') if m in sys.modules))"
    )
    assert light.stdout.strip() == "[]"
    proc = run_python(
        """
        import sys
        sys.modules["starlette"] = None  # as if the ui extra were not installed
        from scalable.cli import main
        sys.argv = ["scalable", "ui"]
        main()
        """,
        check=False,
        cwd=isolated,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: the explorer needs starlette: pip install 'scalable[ui]'"
