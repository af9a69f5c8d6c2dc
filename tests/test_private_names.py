"""No module of the package imports another module's private names, or a private module."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT


def module_name(path: Path) -> str:
    """The dotted module name of a source file of the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def private_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """``from X import _name`` of ``source`` (module ``module``) where X is another module of scalable."""
    found = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            origin = ".".join([*base, *([node.module] if node.module else [])])
        else:
            origin = node.module or ""
        if (origin != "scalable" and not origin.startswith("scalable.")) or origin == module:
            continue
        if any(part.startswith("_") for part in origin.split(".")):
            found.append(f"{module}:{node.lineno} imports the private module {origin}")
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.endswith("__"):
                found.append(f"{module}:{node.lineno} imports {alias.name} from {origin}")
    return found


def test_the_checker_finds_a_private_import() -> None:
    """The check itself catches absolute and relative imports of private names, and passes public ones."""
    source = (
        "from scalable.ledger.sql import _quote\nfrom .sql import _x, quote\nfrom scalable import __version__\n"
        "from scalable.stores._digest import file_digest\n"
    )
    found = private_imports(source, "scalable.ledger.views")
    assert found == [
        "scalable.ledger.views:1 imports _quote from scalable.ledger.sql",
        "scalable.ledger.views:2 imports _x from scalable.ledger.sql",
        "scalable.ledger.views:4 imports the private module scalable.stores._digest",
    ]
    assert private_imports("from scalable.ledger.sql import _quote\n", "scalable.ledger.sql") == []


def test_no_module_imports_a_private_name_of_another() -> None:
    """A name another module needs has a public home; nothing reaches for ``_private`` names across modules."""
    found = []
    for path in sorted((ROOT / "scalable").rglob("*.py")):
        found += private_imports(path.read_text(), module_name(path), is_package=path.name == "__init__.py")
    assert found == []
