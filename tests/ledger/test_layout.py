"""The ledger's modules import one way: no cycles at module level, and nothing below the facade imports it."""

from __future__ import annotations

import ast
import re

from tests.helpers import ROOT

LEDGER = ROOT / "scalable" / "ledger"
FACADE = "log"


def _is_type_checking(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def _ledger_modules(node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The ledger modules one import statement names."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif node.module == "scalable.ledger":
        names = [f"scalable.ledger.{alias.name}" for alias in node.names]
    else:
        names = [node.module or ""]
    return {n.split(".")[2] for n in names if n.startswith("scalable.ledger.") and n.split(".")[2] in known}


def top_level_imports(source: str, known: set[str]) -> set[str]:
    """Ledger modules imported when ``source`` is imported (module level, outside TYPE_CHECKING)."""
    found: set[str] = set()
    pending = list(ast.parse(source).body)
    while pending:
        node = pending.pop()
        if _is_type_checking(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found |= _ledger_modules(node, known)
        elif isinstance(node, ast.If | ast.Try | ast.With):
            for block in ("body", "orelse", "finalbody", "handlers"):
                pending += [n for n in getattr(node, block, []) if isinstance(n, ast.stmt)]
            for handler in getattr(node, "handlers", []):
                pending += handler.body
    return found


def all_imports(source: str, known: set[str]) -> set[str]:
    """Ledger modules imported anywhere in ``source`` (functions too), outside TYPE_CHECKING."""
    tree = ast.parse(source)
    skipped = {
        id(n) for top in ast.walk(tree) if isinstance(top, ast.stmt) and _is_type_checking(top) for n in ast.walk(top)
    }
    return {
        m
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skipped
        for m in _ledger_modules(node, known)
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle of ``graph`` (module -> modules it imports), each from its smallest member."""
    found: set[tuple[str, ...]] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                loop = path[path.index(nxt) :]
                start = loop.index(min(loop))
                found.add(tuple(loop[start:] + loop[:start]))
            else:
                visit(nxt, [*path, nxt])

    for node in sorted(graph):
        visit(node, [node])
    return [list(c) for c in sorted(found)]


def ledger_graph() -> dict[str, set[str]]:
    """Module-level imports among the ledger's modules."""
    known = {p.stem for p in LEDGER.glob("*.py") if p.stem != "__init__"}
    return {p.stem: top_level_imports(p.read_text(), known) for p in LEDGER.glob("*.py") if p.stem != "__init__"}


def test_the_checks_see_cycles_and_skip_type_checking_imports() -> None:
    """The checks find a cycle, and ignore imports under TYPE_CHECKING and inside functions at module level."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    source = (
        "from scalable.ledger import bus, context\n"
        "from scalable.ledger.sql import quote\n"
        "if TYPE_CHECKING:\n    from scalable.ledger.log import Ledger\n"
        "def f():\n    from scalable.ledger.views import connect\n"
    )
    known = {"bus", "context", "sql", "log", "views"}
    assert top_level_imports(source, known) == {"bus", "context", "sql"}
    assert all_imports(source, known) == {"bus", "context", "sql", "views"}


def test_no_import_cycle_among_the_ledger_modules() -> None:
    """Importing any ledger module never leads back to itself (lazy imports of the facade aside)."""
    graph = ledger_graph()
    assert len(graph) > 10
    assert cycles(graph) == []


def test_modules_below_the_facade_never_import_it() -> None:
    """Only the package's ``__init__`` imports the facade; every other module reaches it by type only."""
    known = {p.stem for p in LEDGER.glob("*.py")}
    importers = sorted(
        p.stem
        for p in LEDGER.glob("*.py")
        if p.stem not in ("__init__", FACADE) and FACADE in all_imports(p.read_text(), known)
    )
    assert importers == []


def test_the_facade_reaches_other_modules_lazily_or_from_below() -> None:
    """The facade imports at module level only what needs no facade: the modules it builds on."""
    graph = ledger_graph()
    below = graph[FACADE]

    def reaches(module: str, seen: set[str]) -> set[str]:
        for nxt in graph.get(module, ()):
            if nxt not in seen:
                seen.add(nxt)
                reaches(nxt, seen)
        return seen

    assert FACADE not in reaches(FACADE, set())
    assert {"bus", "stream", "durable", "events"} <= below
    assert not below & {"views", "compact", "lineage", "audit", "replay", "export", "segments", "location"}


def test_the_architecture_page_lists_every_module_below_those_that_import_it() -> None:
    """docs/architecture.rst lists each ledger module once, bottom-up: a module imports only those before it."""
    page = (ROOT / "docs" / "architecture.rst").read_text()
    table = page[page.index("The ledger\n~~~~~~~~~~") : page.index("The location seam")]
    listed = re.findall(r"^``(\w+)``", table, re.MULTILINE)
    graph = ledger_graph()
    assert sorted(listed) == sorted(graph)
    late = [(m, sorted(graph[m] - set(listed[:i]))) for i, m in enumerate(listed) if graph[m] - set(listed[:i])]
    assert late == []
