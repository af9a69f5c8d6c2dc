"""Mutation testing of the core modules: ``python tools/mutation.py [MODULE...]`` (``make mutation``).

Each module of :data:`MODULES` is mutated by mutmut and checked against the tests that
exercise it, in its own copy of the tree under ``build/mutation/work/<name>/`` (so runs never
touch the checkout and one module's results never mix with another's). The report goes to
``build/mutation/report.md`` (and ``report.json``): per module the mutants, how many the tests
killed, the score, and every surviving mutant with its ``file:line`` and diff.

A surviving mutant that cannot change behaviour (an error message's wording, a bound nothing
can reach) is listed in ``tools/mutation_equivalents.toml``, one line each with the reason; the
score counts only the mutants that change behaviour::

    score = (killed + timed out) / (mutants - equivalents)

A mutant no selected test reaches counts as surviving. ``--resume`` reuses the copies of the
last run: only functions that changed are mutated again, and the mutants that survived are
checked again against the current tests (the quick loop while writing tests; which tests reach
which function is mapped again each time, and survivors listed as equivalent are left alone);
a plain run starts from scratch.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "EQUIVALENTS_FILE",
    "MODULES",
    "Equivalent",
    "Module",
    "Mutant",
    "change_of",
    "load_equivalents",
    "main",
    "module_by_name",
    "score",
]

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "mutation"
EQUIVALENTS_FILE = ROOT / "tools" / "mutation_equivalents.toml"

#: Copied into each module's work tree beside the package (tests read docs and tools).
_COPIED = ("scalable", "tests", "docs", "tools", "examples", "pyproject.toml", "Makefile", "README.md")


@dataclass(frozen=True)
class Module:
    """One module under mutation and the tests (globs, relative to the root) that exercise it."""

    name: str
    path: str
    tests: tuple[str, ...]

    def test_files(self, root: Path = ROOT) -> list[str]:
        """The test files the globs match now, sorted (a glob matching nothing is skipped)."""
        found: set[str] = set()
        for pattern in self.tests:
            found.update(str(p.relative_to(root)) for p in root.glob(pattern) if p.is_file())
        return sorted(found)


MODULES: tuple[Module, ...] = (
    Module("cache.keys", "scalable/cache/keys.py", ("tests/cache/test_keys*.py", "tests/cache/test_types.py")),
    Module(
        "cache.payload",
        "scalable/cache/payload.py",
        ("tests/cache/test_payload*.py", "tests/cache/test_trust.py", "tests/cache/test_codec.py"),
    ),
    Module(
        "stores.base",
        "scalable/stores/base.py",
        (
            "tests/stores/test_base*.py",
            "tests/stores/test_local*.py",
            "tests/stores/test_memory.py",
            "tests/stores/test_bad_input.py",
            "tests/stores/test_registry.py",
            "tests/stores/test_factory.py",
        ),
    ),
    Module(
        "stores.local",
        "scalable/stores/local.py",
        (
            "tests/stores/test_local*.py",
            "tests/stores/test_bad_input.py",
            "tests/stores/test_factory.py",
        ),
    ),
    Module("digests", "scalable/digests.py", ("tests/test_digests*.py", "tests/stores/test_local.py")),
    Module(
        "ledger.events",
        "scalable/ledger/events.py",
        ("tests/ledger/test_events*.py", "tests/ledger/test_stream*.py", "tests/ledger/test_append_lines.py"),
    ),
    Module(
        "ledger.log",
        "scalable/ledger/log.py",
        (
            "tests/ledger/test_log*.py",
            "tests/ledger/test_append_lines.py",
            "tests/ledger/test_events*.py",
            "tests/ledger/test_stream*.py",
        ),
    ),
    Module(
        "ledger.stream",
        "scalable/ledger/stream.py",
        (
            "tests/ledger/test_stream*.py",
            "tests/ledger/test_log*.py",
            "tests/ledger/test_audit*.py",
            "tests/ledger/test_recover*.py",
        ),
    ),
    Module(
        "ledger.sandbox",
        "scalable/ledger/sandbox.py",
        ("tests/ledger/test_sandbox_*.py", "tests/ledger/test_views.py", "tests/cli/test_ledger_query.py"),
    ),
    Module(
        "ledger.audit",
        "scalable/ledger/audit.py",
        # Not test_tamper.py: its 236 cases take a minute for each surviving mutant; the kinds of
        # tampering it tries one by one are each pinned in test_audit*.py.
        ("tests/ledger/test_audit*.py", "tests/ledger/test_progress.py"),
    ),
    Module(
        "ledger.lineage",
        "scalable/ledger/lineage.py",
        # Not test_lineage_random.py: its 200 examples (on processes and Dask too) take minutes
        # for each surviving mutant; test_lineage.py tries each rule of the walk on its own.
        ("tests/ledger/test_lineage.py", "tests/ledger/test_lineage_pinned.py", "tests/ledger/test_export.py"),
    ),
)


def module_by_name(name: str) -> Module:
    """The module of :data:`MODULES` called ``name`` (``ledger.events``) or at path ``name``."""
    for module in MODULES:
        if name in (module.name, module.path):
            return module
    known = ", ".join(m.name for m in MODULES)
    raise SystemExit(f"unknown module {name!r}; the modules are: {known}")


@dataclass(frozen=True)
class Equivalent:
    """A mutant listed as unable to change behaviour: where, what it changes, and why."""

    path: str
    function: str
    change: str
    why: str

    def matches(self, mutant: Mutant) -> bool:
        """Whether ``mutant`` is this one (same module, function and change)."""
        return (
            self.path == mutant.path
            and self.function == mutant.function
            and _squash(self.change) == _squash(mutant.change)
        )


def load_equivalents(path: Path = EQUIVALENTS_FILE) -> list[Equivalent]:
    """Read the equivalents list: per module path, an array of ``{function, change, why}``."""
    if not path.exists():
        return []
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    found: list[Equivalent] = []
    for module_path, entries in data.items():
        for entry in entries:
            found.append(Equivalent(module_path, entry["function"], entry["change"], entry["why"]))
    return found


@dataclass
class Mutant:
    """One mutant of a module and what became of it."""

    name: str
    path: str
    function: str
    status: str
    line: int = 0
    change: str = ""
    diff: str = ""
    why: str = ""

    def toml_line(self) -> str:
        """A line for the equivalents list (the reason left to fill in)."""
        return f"    {{ function = {_toml_str(self.function)}, change = {_toml_str(self.change)}, why = '' }},"


@dataclass
class Result:
    """One module's run: its mutants and how long mutmut took."""

    module: Module
    seconds: float
    mutants: list[Mutant] = field(default_factory=list)
    error: str = ""

    def count(self, *statuses: str) -> int:
        """How many mutants have one of ``statuses``."""
        return sum(1 for m in self.mutants if m.status in statuses)


#: mutmut's exit codes of a mutant's test run, as a status.
_STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout", 24: "timeout"}
_STATUS.update({-24: "timeout", 152: "timeout", 255: "timeout", -9: "segfault", -11: "segfault", 34: "skipped"})
_KILLED = ("killed", "timeout", "segfault")
_SURVIVING = ("survived", "no tests", "suspicious", "not checked")


def score(result: Result) -> float | None:
    """Killed (or timed out) mutants over the mutants that change behaviour, in percent."""
    counted = len(result.mutants) - result.count("equivalent", "skipped")
    if counted <= 0:
        return None
    return 100.0 * result.count(*_KILLED) / counted


def _squash(text: str) -> str:
    return " ".join(text.split())


def _toml_str(text: str) -> str:
    if "'" not in text and "\n" not in text:
        return f"'{text}'"
    return json.dumps(text)


def change_of(diff: str) -> str:
    """The changed lines of a unified diff in one line: ``removed => added``."""
    removed: list[str] = []
    added: list[str] = []
    for line in diff.splitlines():
        if line.startswith(("---", "+++", "@@")):
            continue
        if line.startswith("-"):
            removed.append(line[1:].strip())
        elif line.startswith("+"):
            added.append(line[1:].strip())
    return f"{' | '.join(removed)} => {' | '.join(added)}"


def _function_of(mutant_name: str) -> tuple[str | None, str]:
    """(class, function) a mutmut mutant name points at."""
    mangled = mutant_name.partition("__mutmut_")[0].rpartition(".")[2]
    if "\u01c1" in mangled:
        parts = mangled.split("\u01c1")
        return parts[1], parts[2]
    return None, mangled.removeprefix("x_")


def _def_lines(source: str) -> dict[tuple[str | None, str], int]:
    """Line of each top-level function's and method's ``def``."""
    lines: dict[tuple[str | None, str], int] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines[(None, node.name)] = node.lineno
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines[(node.name, item.name)] = item.lineno
    return lines


def _first_changed_line(orig: str, diff: str) -> int:
    """Index (0-based) in ``orig`` of the first line the diff removes, counted from its ``def``."""
    defs = [i for i, text in enumerate(orig.splitlines()) if text.lstrip().startswith(("def ", "async def "))]
    start = defs[0] if defs else 0
    hunk = 0
    for line in diff.splitlines():
        match = re.match(r"@@ -(\d+)", line)
        if match:
            hunk = int(match.group(1)) - 1
            continue
        if line.startswith(("---", "+++")):
            continue
        if line.startswith(("-", "+")):
            return hunk - start
        hunk += 1
    return 0


@contextlib.contextmanager
def _cwd(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _sync(source: Path, target: Path, keep: Path | None = None) -> None:
    """Make ``target`` a copy of ``source``, copying only files whose bytes differ (mtimes kept).

    ``keep`` is left as it is (the module under mutation, copied by :func:`_mark_protocols`).
    """
    if target == keep:
        return
    if source.is_file():
        if not target.exists() or not filecmp.cmp(source, target, shallow=False):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        return
    wanted: set[Path] = set()
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = [d for d in dirnames if d not in ("__pycache__", ".hypothesis", "_build")]
        for name in filenames:
            if name.endswith(".pyc"):
                continue
            rel = Path(dirpath, name).relative_to(source)
            wanted.add(rel)
            _sync(source / rel, target / rel, keep)
    if target.exists():
        for dirpath, dirnames, filenames in os.walk(target):
            dirnames[:] = [d for d in dirnames if d != "__pycache__"]
            for name in filenames:
                rel = Path(dirpath, name).relative_to(target)
                if rel not in wanted and not name.endswith(".pyc"):
                    (target / rel).unlink()


#: Tests that start Python processes point PYTHONPATH at the mutated tree, so those processes
#: run the mutant too; while mutmut maps tests to functions they must find its configuration,
#: which it reads from the working directory (a test's own temporary one there).
_SITECUSTOMIZE = """\
import os

if os.environ.get("MUTANT_UNDER_TEST") == "stats":
    _here = os.getcwd()
    os.chdir({work!r})
    try:
        from mutmut.configuration import config

        config()
    finally:
        os.chdir(_here)
"""


def _mark_protocols(source: Path, target: Path) -> None:
    """Copy the module, with its ``Protocol`` classes left unmutated (in the copy only).

    A protocol's methods have no bodies to mutate, and the names mutmut adds to a class would
    become members of the protocol, so no real store would pass ``isinstance`` any more.
    """
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    for i, line in enumerate(lines):
        if re.match(r"class \w+\(.*\bProtocol\b.*\):\s*$", line):
            lines[i] = line.rstrip() + "  # pragma: no mutate block\n"
    text = "".join(lines)
    if not target.exists() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")


def _mutmut_config(module: Module, tests: Sequence[str], max_children: int) -> str:
    del max_children  # given on the command line; kept out of the config so it never invalidates results
    lines = [
        "",
        "[tool.mutmut]",
        'source_paths = ["scalable"]',
        f"only_mutate = [{json.dumps(module.path)}]",
        f"pytest_add_cli_args_test_selection = {json.dumps(list(tests))}",
        'pytest_add_cli_args = ["-p", "no:randomly"]',
        f"also_copy = {json.dumps([*(p for p in _COPIED if p not in ('scalable', 'tests', 'pyproject.toml')), 'sitecustomize.py'])}",
        "use_git_change_detection = false",
        "",
    ]
    return "\n".join(lines)


def prepare(module: Module, fresh: bool, max_children: int) -> Path:
    """Lay out (or refresh) the work tree of ``module``; return it."""
    work = BUILD / "work" / module.name
    if fresh and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for name in _COPIED:
        if (ROOT / name).exists():
            _sync(ROOT / name, work / name, keep=work / module.path)
    _mark_protocols(ROOT / module.path, work / module.path)
    tests = module.test_files()
    hook = work / "sitecustomize.py"
    hook_text = _SITECUSTOMIZE.format(work=str(work))
    if not hook.exists() or hook.read_text(encoding="utf-8") != hook_text:
        hook.write_text(hook_text, encoding="utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    config = pyproject + _mutmut_config(module, tests, max_children)
    target = work / "pyproject.toml"
    if not target.exists() or target.read_text(encoding="utf-8") != config:
        target.write_text(config, encoding="utf-8")
    return work


def _mutmut(work: Path, args: Sequence[str], log: Path) -> int:
    mutmut = Path(sys.executable).with_name("mutmut")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCALABLE_")}
    env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ mutmut {' '.join(args)}\n")
        out.flush()
        return subprocess.run([str(mutmut), *args], cwd=work, env=env, stdout=out, stderr=out, check=False).returncode


def _exit_codes(work: Path, module: Module) -> dict[str, int | None]:
    meta = work / "mutants" / (module.path + ".meta")
    if not meta.exists():
        return {}
    codes: dict[str, int | None] = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    return codes


def run_module(module: Module, *, fresh: bool, max_children: int) -> Result:
    """Mutate one module and run its tests against each mutant; return what survived.

    With ``fresh`` false and an earlier run there, only what can have changed is run again:
    the mutants of functions whose code changed, and every mutant that was not killed. A
    mutant killed before, in a function that did not change, stays killed (tests were added,
    none removed). mutmut itself starts over whenever the test selection changes, hence this.
    """
    before = {} if fresh else _meta(BUILD / "work" / module.name, module)
    # Listed equivalents cannot be killed: rechecking them would only spend the time of every test.
    listed = _listed_equivalents(BUILD / "work" / module.name, module) if before else set()
    work = prepare(module, fresh, max_children)
    # mutmut reruns its map of which tests reach which function only for tests it has not seen:
    # a test edited since would not be run against the functions it now reaches. Map them all again.
    (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    log = BUILD / f"{module.name}.log"
    if fresh:
        log.unlink(missing_ok=True)
    started = time.monotonic()
    args = ["run", "--max-children", str(max_children)]
    if before:
        args += _to_recheck(module, before, (work / module.path).read_text(encoding="utf-8"), listed)
    rc = _mutmut(work, args, log) if not before or len(args) > 3 else 0
    if before:
        _keep_earlier_kills(work, module, before)
    seconds = time.monotonic() - started
    result = Result(module, seconds)
    if rc != 0:
        result.error = f"mutmut exited with {rc}; see {log.relative_to(ROOT)}"
    result.mutants = _read_mutants(work, module)
    return result


def _meta(work: Path, module: Module) -> dict[str, Any]:
    path = work / "mutants" / (module.path + ".meta")
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _dotted(module: Module) -> str:
    return module.path.removesuffix(".py").replace("/", ".")


def _listed_equivalents(work: Path, module: Module) -> set[str]:
    """Names of the earlier run's mutants that are not killed and match the equivalents list."""
    equivalents = [eq for eq in load_equivalents() if eq.path == module.path]
    if not equivalents:
        return set()
    return {m.name for m in _read_mutants(work, module) if any(eq.matches(m) for eq in equivalents)}


def _to_recheck(
    module: Module, before: dict[str, Any], source: str, listed: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """Names (and patterns) of the mutants to run again: changed functions, and the not killed.

    Not killed mutants in ``listed`` (equivalents) are left as they are, unless their function changed.
    """
    from mutmut.mutation.file_mutation import compute_function_hashes

    now = compute_function_hashes(source)
    old = before.get("hash_by_function_name", {})
    dotted = _dotted(module)
    changed = [f"{dotted}.{name}__mutmut_*" for name, digest in now.items() if old.get(name) != digest]
    alive = [
        name
        for name, code in before["exit_code_by_key"].items()
        if (code is None or _STATUS.get(code, "suspicious") not in _KILLED)
        and name not in listed
        and name.partition("__mutmut_")[0].rpartition(".")[2] in now
        and old.get(name.partition("__mutmut_")[0].rpartition(".")[2])
        == now[name.partition("__mutmut_")[0].rpartition(".")[2]]
    ]
    return changed + alive


def _keep_earlier_kills(work: Path, module: Module, before: dict[str, Any]) -> None:
    """Give back their earlier result to killed mutants of unchanged functions that were not run again."""
    path = work / "mutants" / (module.path + ".meta")
    meta = json.loads(path.read_text(encoding="utf-8"))
    old_hashes = before.get("hash_by_function_name", {})
    for name, code in meta["exit_code_by_key"].items():
        function = name.partition("__mutmut_")[0].rpartition(".")[2]
        earlier = before["exit_code_by_key"].get(name)
        if (
            code is None
            and earlier is not None
            and old_hashes.get(function) == meta["hash_by_function_name"].get(function)
        ):
            meta["exit_code_by_key"][name] = earlier
    path.write_text(json.dumps(meta, indent=4), encoding="utf-8")


def _read_mutants(work: Path, module: Module) -> list[Mutant]:
    import libcst as cst
    from mutmut.mutation.diff_apply import read_functions_from_index

    source = (work / module.path).read_text(encoding="utf-8")
    defs = _def_lines(source)
    mutants: list[Mutant] = []
    with _cwd(work):
        for name, code in sorted(_exit_codes(work, module).items(), key=lambda item: _natural(item[0])):
            cls, func = _function_of(name)
            mutant = Mutant(name, module.path, f"{cls}.{func}" if cls else func, _STATUS.get(code, "suspicious"))
            if code is None:
                mutant.status = "not checked"
            if mutant.status not in _KILLED:
                pair = read_functions_from_index(name, module.path)
                if pair is not None:
                    orig, mutated = (cst.Module([f]).code.strip() for f in pair)
                    mutant.diff = _diff(orig, mutated, module.path)
                    mutant.change = change_of(mutant.diff)
                    mutant.line = defs.get((cls, func), 0) + _first_changed_line(orig, mutant.diff)
            mutants.append(mutant)
    return mutants


def _natural(name: str) -> tuple[str, int]:
    head, _, number = name.rpartition("__mutmut_")
    return head, int(number) if number.isdigit() else 0


def _diff(orig: str, mutated: str, path: str) -> str:
    from difflib import unified_diff

    return "\n".join(unified_diff(orig.split("\n"), mutated.split("\n"), fromfile=path, tofile=path, lineterm=""))


def apply_equivalents(results: Iterable[Result], equivalents: Sequence[Equivalent]) -> list[Equivalent]:
    """Mark listed survivors as equivalent; return the entries that matched no survivor."""
    used: set[int] = set()
    for result in results:
        for mutant in result.mutants:
            if mutant.status not in (*_SURVIVING, "equivalent"):
                continue
            for i, eq in enumerate(equivalents):
                if eq.matches(mutant):
                    mutant.status, mutant.why = "equivalent", eq.why
                    used.add(i)
                    break
    return [eq for i, eq in enumerate(equivalents) if i not in used]


def _fmt_score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"


def write_report(results: Sequence[Result], stale: Sequence[Equivalent], max_children: int) -> Path:
    """Write ``report.md`` and ``report.json`` under ``build/mutation``; return the Markdown path."""
    BUILD.mkdir(parents=True, exist_ok=True)
    out: list[str] = ["# Mutation testing of the core modules", ""]
    out.append(f"mutmut with at most {max_children} children; score = (killed + timeout) / (mutants - equivalents).")
    out += ["", "| module | mutants | killed | timeout | survived | no tests | equivalent | score | time |"]
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        out.append(
            f"| {r.module.path} | {len(r.mutants)} | {r.count('killed', 'segfault')} | {r.count('timeout')} | "
            f"{r.count('survived', 'suspicious', 'not checked')} | {r.count('no tests')} | {r.count('equivalent')} | "
            f"{_fmt_score(score(r))} | {r.seconds:.0f} s |"
        )
    for r in results:
        out += ["", f"## {r.module.path}", ""]
        if r.error:
            out += [f"**{r.error}**", ""]
        out.append("Tests: " + ", ".join(r.module.test_files()))
        alive = [m for m in r.mutants if m.status in _SURVIVING]
        if alive:
            out += ["", "### Surviving mutants", ""]
            for m in alive:
                out += [f"- `{m.path}:{m.line}` {m.function} ({m.status}) `{m.name}`", "", "```diff", m.diff, "```", ""]
            out += ["Lines for the equivalents list:", "", "```toml", f'"{r.module.path}" = [']
            out += [m.toml_line() for m in alive]
            out += ["]", "```"]
        equivalent = [m for m in r.mutants if m.status == "equivalent"]
        if equivalent:
            out += ["", "### Equivalent mutants", ""]
            out += [f"- `{m.path}:{m.line}` {m.function}: `{m.change}`: {m.why}" for m in equivalent]
    if stale:
        out += ["", "## Equivalents that matched no surviving mutant", ""]
        out += [f"- {eq.path} {eq.function}: `{eq.change}`" for eq in stale]
    report = BUILD / "report.md"
    report.write_text("\n".join(out) + "\n", encoding="utf-8")
    payload: dict[str, Any] = {
        "modules": [
            {
                "module": r.module.path,
                "tests": r.module.test_files(),
                "seconds": round(r.seconds, 1),
                "score": score(r),
                "counts": {s: r.count(s) for s in sorted({m.status for m in r.mutants})},
                "error": r.error,
                "mutants": [
                    {"name": m.name, "status": m.status, "line": m.line, "function": m.function, "change": m.change}
                    for m in r.mutants
                    if m.status not in _KILLED
                ],
            }
            for r in results
        ],
        "stale_equivalents": [eq.__dict__ for eq in stale],
    }
    (BUILD / "report.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run mutmut over the named modules (all by default) and write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("modules", nargs="*", help="module names (cache.keys) or paths; all by default")
    parser.add_argument("--max-children", type=int, default=2, help="test processes at once (default 2)")
    parser.add_argument("--resume", action="store_true", help="reuse the last run's copies; recheck survivors")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the last run")
    args = parser.parse_args(argv)
    modules = [module_by_name(n) for n in args.modules] if args.modules else list(MODULES)
    results: list[Result] = []
    timings = _load_timings()
    if args.report_only and not args.modules:
        modules = [m for m in modules if (BUILD / "work" / m.name / "mutants").exists()]
    equivalents = load_equivalents()
    report = BUILD / "report.md"
    for module in modules:
        if args.report_only:
            work = BUILD / "work" / module.name
            result = Result(module, timings.get(module.name, 0.0), _read_mutants(work, module))
        else:
            print(f"mutating {module.path} ...", file=sys.stderr, flush=True)
            result = run_module(module, fresh=not args.resume, max_children=args.max_children)
            timings[module.name] = result.seconds
            _save_timings(timings)
        results.append(result)
        stale = apply_equivalents(results, equivalents)
        stale = [eq for eq in stale if any(eq.path == r.module.path for r in results)]
        report = write_report(results, stale, args.max_children)
        print(f"{module.path}: {_fmt_score(score(result))} in {result.seconds:.0f} s", file=sys.stderr, flush=True)
    for r in results:
        print(
            f"{r.module.path}: {_fmt_score(score(r))} ({r.count(*_SURVIVING)} surviving, {r.count('equivalent')} equivalent)"
        )
    print(f"report: {report.relative_to(ROOT)}")
    return 1 if any(r.error for r in results) else 0


def _load_timings() -> dict[str, float]:
    path = BUILD / "timings.json"
    if not path.exists():
        return {}
    data: dict[str, float] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _save_timings(timings: dict[str, float]) -> None:
    BUILD.mkdir(parents=True, exist_ok=True)
    (BUILD / "timings.json").write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
