"""Docs that cannot drift: every example runs, every command and variable is documented."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from scalable.ledger import bus
from scalable.settings import ENV_VARS
from tests.helpers import ROOT, run_python
from tests.servers import create_gcs_bucket, create_s3_bucket

DOCS = ROOT / "docs"
PAGES = [*sorted(DOCS.glob("*.rst")), ROOT / "README.md"]
_BLOCK = re.compile(r"^\.\. code-block:: (\w+)\n((?:\n|[ \t]+.*\n)+)", re.MULTILINE)
_FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def code_blocks(page: Path) -> list[tuple[str, str]]:
    """Return ``(language, dedented code)`` of every code block of an rst or Markdown page."""
    text = page.read_text()
    if page.suffix == ".md":
        return [(lang, body) for lang, body in _FENCE.findall(text)]
    blocks = []
    for lang, body in _BLOCK.findall(text):
        lines = body.splitlines()
        indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
        blocks.append((lang, "\n".join(line[indent:] for line in lines).strip() + "\n"))
    return blocks


#: The bucket the docs' ``s3://`` and ``gs://`` examples name.
BUCKET = "my-bucket"


def _write(files: dict[str, str]) -> None:
    for name, text in files.items():
        path = Path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


_MANIFEST = "version: 1\nproject:\n  name: my-project\n  default_storage: s3://my-bucket/scalable-runs/\n"

#: Files a page's examples name as already there (a user's own data), made before its blocks run.
PAGE_SETUP: dict[str, Callable[[], None]] = {
    "artifacts.rst": lambda: _write(
        {
            "output.csv": "name,value\na,1\nb,2\n",
            "model_output/config.json": '{"layers": 2}\n',
            "model_output/weights.bin": "0123456789abcdef\n",
            "scalable.yaml": _MANIFEST,
        }
    ),
    "cloud.rst": lambda: _write({"output.csv": "name,value\na,1\n"}),
    "telemetry.rst": lambda: _write(
        {
            "output.csv": "name,value\na,1\n",
            "scalable.yaml": "version: 1\nproject: {name: my-project, default_storage: ./artifacts}\n",
        }
    ),
}


def _object_stores(page: Path, request: pytest.FixtureRequest) -> None:
    """Start the S3/GCS servers a page's ``s3://``/``gs://`` URIs need, with its bucket made."""
    text = page.read_text()
    for scheme, fixture, create in (("s3", "s3_server", create_s3_bucket), ("gs", "gcs_server", create_gcs_bucket)):
        if f"{scheme}://" in text:
            create(request.getfixturevalue(fixture), BUCKET, exist_ok=True)


def run_bash_block(code: str, env: dict[str, str]) -> None:
    """Run the ``scalable ...`` and ``export`` lines of a bash block; other commands are prose."""
    from scalable.cli import cli

    for raw in code.splitlines():
        line = raw.strip()
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value.strip("'\"")
            os.environ[name] = env[name]
            bus.reset_default()
        elif line.startswith("scalable "):
            result = CliRunner().invoke(cli, shlex.split(line, comments=True)[1:], catch_exceptions=False)
            assert result.exit_code in (0, 1), f"{line!r} exited {result.exit_code}: {result.output}"


@pytest.mark.parametrize("page", [p for p in PAGES if code_blocks(p)], ids=lambda p: p.name)
def test_every_example_of_the_page_runs(
    page: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The page's Python and shell examples run in order, in a fresh directory, without error."""
    from scalable import ScalableSession

    _object_stores(page, request)
    PAGE_SETUP.get(page.name, lambda: None)()
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    env: dict[str, str] = {}
    try:
        for lang, code in code_blocks(page):
            if lang == "python":
                exec(compile(code, f"{page.name}:example", "exec"), namespace)
            elif lang in ("bash", "console", "shell"):
                run_bash_block(code, env)
    finally:
        # A session an example leaves open would be closed at interpreter exit; close it here.
        for value in namespace.values():
            if isinstance(value, ScalableSession):
                value.close()
        for name in env:
            monkeypatch.delenv(name, raising=False)


def test_every_cli_command_and_option_is_in_the_cli_reference() -> None:
    """docs/cli.rst is generated from --help and is current (tools/gen_cli_docs.py --check)."""
    proc = run_python(
        f"import runpy, sys; sys.argv = ['x', '--check']; runpy.run_path({str(ROOT / 'tools/gen_cli_docs.py')!r}, run_name='__main__')",
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_every_variable_and_column_is_documented() -> None:
    """Each SCALABLE_* variable is in configuration.rst and each event column in ledger.rst."""
    from scalable.ledger.events import COLUMNS

    config = (DOCS / "configuration.rst").read_text()
    assert [v for v in ENV_VARS if v not in config] == []
    ledger = (DOCS / "ledger.rst").read_text()
    assert [c.name for c in COLUMNS if f"``{c.name}``" not in ledger] == []


def test_the_docs_build_without_warnings(tmp_path: Path) -> None:
    """sphinx -W builds the docs (a broken reference or bad rst fails the suite)."""
    proc = run_python(
        f"""
        import sys
        from sphinx.cmd.build import main
        sys.exit(main(["-W", "--keep-going", "-q", "-b", "html", {str(DOCS)!r}, {str(tmp_path / "html")!r}]))
    """,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_checks_fail_when_the_docs_drift(tmp_path: Path, isolated: Path) -> None:
    """A reference missing a command is stale, and a broken example or command fails its page."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "tools" / "gen_cli_docs.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    current = (DOCS / "cli.rst").read_text()
    assert gen.is_current(DOCS / "cli.rst")
    section = current.index("scalable ledger tail\n")
    stale = tmp_path / "cli.rst"
    stale.write_text(current[:section])
    assert not gen.is_current(stale)
    with pytest.raises(AssertionError, match="exited 2"):
        run_bash_block("scalable ledger no-such-command\n", {})
    page = tmp_path / "broken.rst"
    page.write_text("Broken\n======\n\n.. code-block:: python\n\n    assert 1 == 2\n")
    with pytest.raises(AssertionError):
        exec(compile(code_blocks(page)[0][1], "broken.rst", "exec"), {})


def test_every_api_name_of_the_artifacts_page_is_documented_from_its_docstring() -> None:
    """Each class and function the artifacts page refers to has an autodoc entry on that page."""
    text = (DOCS / "artifacts.rst").read_text()
    named = set(re.findall(r":(?:class|func):`~?(scalable\.artifacts\.[\w.]+)`", text))
    documented = set(re.findall(r"^\.\. auto(?:class|function):: (\S+)$", text, re.MULTILINE))
    assert named and named <= documented, named - documented
    short = {name.rsplit(".", 1)[1] for name in documented}
    assert short >= {
        "ArtifactStore",
        "LocalArtifactStore",
        "FsspecArtifactStore",
        "build_artifact_store",
        "ArtifactRef",
        "ArtifactKind",
    }


def test_pages_with_bucket_uris_run_against_local_servers(isolated: Path, request: pytest.FixtureRequest) -> None:
    """A page naming s3:// and gs:// URIs gets both servers and its bucket, so literal bucket URIs work."""
    from scalable.artifacts import build_artifact_store

    page = isolated / "buckets.rst"
    page.write_text("Store at s3://my-bucket/x/ or gs://my-bucket/x/.\n")
    _object_stores(page, request)
    Path("f.txt").write_text("x\n")
    for scheme in ("s3", "gs"):
        ref = build_artifact_store(f"{scheme}://{BUCKET}/docs-check/").put("f.txt", "f.txt")
        assert ref.uri == f"{scheme}://{BUCKET}/docs-check/f.txt" and ref.size_bytes == 2


def test_the_readme_opens_with_the_two_commands_and_the_makefile_has_them() -> None:
    """README's first example is `make demo` then `make test`, and the Makefile defines demo, test and docs."""
    first_lang, first = code_blocks(ROOT / "README.md")[0]
    assert first_lang == "bash"
    assert [line.split("#")[0].strip() for line in first.splitlines()] == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "docs"):
        assert re.search(rf"^{target}: ", makefile, re.MULTILINE), target
    assert "examples/demo.py" in makefile and "sphinx -W" in makefile
