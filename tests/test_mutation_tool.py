"""``make mutation``: its module list and its reviewed equivalents stay in step with the tree."""

from __future__ import annotations

from tests.helpers import ROOT
from tools.mutation import MODULES, Mutant, change_of, load_equivalents, module_by_name


def test_every_module_under_mutation_exists_and_has_tests() -> None:
    """Each listed module is a file of the package, and its test globs match test files."""
    assert len({m.name for m in MODULES}) == len(MODULES)
    for module in MODULES:
        assert (ROOT / module.path).is_file(), module.path
        assert module.test_files(), module.name
        assert module_by_name(module.path) is module


def test_every_equivalent_names_a_module_under_mutation_and_says_why() -> None:
    """Each line of the equivalents list belongs to a listed module and gives a reason."""
    paths = {m.path for m in MODULES}
    equivalents = load_equivalents()
    assert equivalents
    for eq in equivalents:
        assert eq.path in paths, eq
        assert eq.function and " => " in eq.change, eq
        assert len(eq.why.split()) >= 4, eq


def test_a_diff_becomes_one_line_and_matches_its_equivalent() -> None:
    """The change of a mutant reads ``removed => added`` and matches an entry whitespace-insensitively."""
    diff = "--- a.py\n+++ a.py\n@@ -1,3 +1,3 @@\n def f(x):\n-    return x + 1\n+    return x - 1\n"
    assert change_of(diff) == "return x + 1 => return x - 1"
    eq = load_equivalents()[0]
    mutant = Mutant("m", eq.path, eq.function, "survived", change="  ".join(eq.change.split(" ")))
    assert eq.matches(mutant)
    mutant.function = "other"
    assert not eq.matches(mutant)
