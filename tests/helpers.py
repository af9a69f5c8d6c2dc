"""Running Python snippets in real subprocesses that import this checkout of scalable."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict[str, str]:
    """The current environment plus ``PYTHONPATH`` pointing at this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def python_cmd(code: str) -> list[str]:
    """The argv that runs ``code`` (dedented) with this interpreter."""
    return [sys.executable, "-c", textwrap.dedent(code)]


def run_python(
    code: str, *, check: bool = True, timeout: float = 120, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter and return the completed process (text mode)."""
    env = kwargs.pop("env", None) or child_env()
    proc = subprocess.run(
        python_cmd(code), env=env, check=False, capture_output=True, text=True, timeout=timeout, **kwargs
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
