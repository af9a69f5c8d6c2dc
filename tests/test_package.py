"""Package shape: the error tree, a light import, and arrows that point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import scalable
from scalable import errors
from tests.helpers import ROOT, run_python

# Which scalable subpackages each layer may import (cli -> session -> targets, cache, stores -> ledger).
_BASE = {"errors", "settings", "logs", "digests", "failures", "uris"}
_LAYERS = {
    "ledger": {"ledger", *_BASE},
    "stores": {"stores", "ledger", *_BASE},
    # scalable.artifacts.cache is Scalable's home of the remote cache backend, built on the cache tier.
    "artifacts": {"artifacts", "stores", "cache", "ledger", *_BASE},
    "cache": {"cache", "stores", "ledger", *_BASE},
    "session": {"session", "recipe", "targets", "manifest", "providers", "cache", "stores", "ledger", *_BASE},
    # What a run records to be run again (its code is kept in the default storage).
    "recipe": {"recipe", "stores", *_BASE},
    # Running a recorded run again executes its command, which starts its own session.
    "rerun": {"rerun", "ledger", *_BASE},
    # The explorer reads the ledger only; its downloads render as the CLI's output does.
    "ui": {"ui", "ledger", "cli", *_BASE},
    "targets": {"targets", "manifest", "providers", "cache", "ledger", *_BASE},
    "manifest": {"manifest", "providers", *_BASE},
    "providers": {"providers"},
    "settings": {"settings", "errors"},
    "logs": {"logs", "settings", "errors"},
    "digests": {"digests", "errors"},
    "uris": {"uris", "errors"},
    "failures": {"failures", "errors", "logs", "settings"},
    "errors": {"errors"},
}


def test_every_error_derives_from_scalable_error_and_a_builtin() -> None:
    """Each public error is a ScalableError and, apart from the roots, also a builtin exception."""
    roots = {"ScalableError", "LedgerError", "StoreError", "CacheError"}
    # Besides the classes, the module exports the one mapping of OSError errnos to them.
    assert [name for name in errors.__all__ if not isinstance(getattr(errors, name), type)] == ["os_error"]
    for name in errors.__all__:
        cls = getattr(errors, name)
        if name == "os_error":
            continue
        assert issubclass(cls, errors.ScalableError), name
        if name not in roots:
            builtin_bases = [
                b for b in cls.__mro__ if b.__module__ == "builtins" and b not in (Exception, BaseException, object)
            ]
            assert builtin_bases, f"{name} subclasses no builtin a caller would catch"
    assert errors.ScalableError.exit_code == 2 and errors.IntegrityError.exit_code == 1


def test_import_scalable_is_light() -> None:
    """import scalable pulls in none of duckdb, pyarrow, s3fs, gcsfs, dask."""
    proc = run_python("""
        import sys, scalable
        heavy = [m for m in ("duckdb", "pyarrow", "s3fs", "gcsfs", "dask", "distributed") if m in sys.modules]
        print(",".join(heavy))
    """)
    assert proc.stdout.strip() == ""


def test_public_modules_declare_all() -> None:
    """Every module of the package declares __all__ (helpers stay _private)."""
    missing = []
    for path in (ROOT / "scalable").rglob("*.py"):
        if path.name == "__main__.py":
            continue
        tree = ast.parse(path.read_text())
        if not any(
            isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets) for n in tree.body
        ):
            missing.append(str(path.relative_to(ROOT)))
    assert not missing, missing


def _scalable_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("scalable."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("scalable."))
    return found


def test_arrows_point_one_way() -> None:
    """cli -> session -> {cache, stores} -> ledger: no layer imports one above it."""
    bad = []
    for path in (ROOT / "scalable").rglob("*.py"):
        rel = path.relative_to(ROOT / "scalable")
        layer = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != "__init__.py" else "__init__"
        if layer in ("cli", "__init__", "__main__", "testing"):
            continue
        allowed = _LAYERS.get(layer)
        assert allowed is not None, f"{rel}: unknown layer {layer}; add it to _LAYERS"
        extra = _scalable_imports(path) - allowed
        if extra:
            bad.append(f"{rel} imports {sorted(extra)}")
    assert not bad, bad


def test_version_comes_from_metadata() -> None:
    """__version__ is the installed distribution's version."""
    assert scalable.__version__ and scalable.__version__ != "0.0.0"
