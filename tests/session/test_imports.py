"""Import hygiene of the session layer: light imports, arrows pointing one way."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_scalable_loads_no_heavy_backend() -> None:
    """`import scalable` (with ScalableSession) imports neither dask, duckdb, s3fs nor gcsfs."""
    code = (
        "import sys, scalable; scalable.ScalableSession; "
        "print(','.join(m for m in ('dask', 'distributed', 'duckdb', 's3fs', 'gcsfs') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_session_and_manifest_import_no_cli() -> None:
    """session.py, the manifest and targets packages and the provider table never import the CLI (cli -> session, not back)."""
    package = ROOT / "scalable"
    for path in (
        package / "session.py",
        package / "providers.py",
        *sorted((package / "manifest").glob("*.py")),
        *sorted((package / "targets").glob("*.py")),
    ):
        name = str(path.relative_to(package))
        tree = ast.parse(path.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module} | {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        assert not any(m.startswith("scalable.cli") for m in imported), name
