"""Random workflows: lineage equals the truth the generator knows, on threads, processes, Dask and a remote ledger.

Hypothesis draws a workflow: shared inputs (files and directories, some changed between runs),
a DAG of tasks that use, get, produce, put and call a cached function over files and
directories (some producing the same bytes as others), artifacts recorded outside any task,
and two or three runs of it, so cached calls hit across runs. Each run executes through a real
:class:`ScalableSession`. The generator computes every digest from the bytes it wrote and the
true lineage from what each step did, by the documented model (data flow: declared inputs and
a task's uses before each of its generations; context: which run generated and used what).
For every version, ``Ledger.lineage`` up and down, the CLI's ``--format json`` and the SQL
``ancestors``/``descendants`` macros must give exactly that truth (precision = recall = 1),
before and after a full compaction, and from another machine's view of a remote ledger; the
PROV and OpenLineage exports must read back valid with the true used and generated sets.

Each example checks every version in both states with the macros and a walk; in one of the
two states the walks are what a user calls, ``Ledger.lineage`` and the CLI in turn from
version to version, and four examples in a row cover each state with each way for each
version's place (see :func:`check_lineage`). 200 examples in all (:data:`EXAMPLES`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalable import ScalableSession, cacheable
from scalable.ledger import bus
from scalable.ledger.lineage import lineage_graph
from scalable.ledger.log import Ledger
from scalable.ledger.views import connect
from scalable.settings import load_settings
from tests.conftest import CliInvoker
from tests.servers import create_s3_bucket

SCHEMA = json.loads((Path(__file__).parents[1] / "data" / "OpenLineage-2-0-2.json").read_text())

# --- the workflow a test draws -----------------------------------------------------------------


@dataclass(frozen=True)
class Use:
    """A task uses an artifact: records it as an input, or gets it from the store."""

    name: str
    get: bool = False


@dataclass(frozen=True)
class Produce:
    """A task (or the run, outside tasks) writes an artifact and records it, naming ``inputs``; maybe puts it."""

    name: str
    directory: bool
    constant: int | None  # the same bytes as every other producer of this constant
    inputs: tuple[str, ...] = ()
    put: bool = False


@dataclass(frozen=True)
class Cached:
    """A task calls the cached function on files or directories, then records a file of its result."""

    name: str
    args: tuple[str, ...]
    salt: int
    constant: int | None


Step = Use | Produce | Cached


@dataclass(frozen=True)
class Plan:
    """One task of the workflow's DAG: its steps, in order."""

    name: str
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Workflow:
    """Shared inputs (name -> is a directory), the tasks, what each run records outside tasks,
    and each run's version of every input."""

    inputs: tuple[tuple[str, bool], ...]
    tasks: tuple[Plan, ...]
    loose: tuple[Produce, ...]
    versions: tuple[tuple[int, ...], ...]


def _outputs(step: Step) -> list[tuple[str, bool]]:
    if isinstance(step, Produce):
        return [(step.name, step.directory)]
    if isinstance(step, Cached):
        return [(step.name, False)]
    return []


@st.composite
def workflows(draw: st.DrawFn, max_tasks: int = 3) -> Workflow:
    """A random workflow: 1-3 shared inputs, 1-``max_tasks`` tasks of 1-3 steps, 2-3 runs."""
    inputs = tuple((f"in{k}", draw(st.booleans())) for k in range(draw(st.integers(1, 3))))
    available: list[tuple[str, bool]] = list(inputs)
    stored: list[str] = []
    tasks: list[Plan] = []
    count = 0
    for t in range(draw(st.integers(1, max_tasks))):
        steps: list[Step] = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(
                st.sampled_from(["use", "get", "produce", "cached"] if stored else ["use", "produce", "cached"])
            )
            count += 1
            constant = draw(st.one_of(st.none(), st.integers(0, 1)))
            if kind == "use":
                steps.append(Use(draw(st.sampled_from(available))[0]))
            elif kind == "get":
                steps.append(Use(draw(st.sampled_from(stored)), get=True))
            elif kind == "produce":
                declared = draw(st.lists(st.sampled_from(available), max_size=2, unique=True))
                step = Produce(f"a{count}", draw(st.booleans()), constant, tuple(n for n, _d in declared))
                steps.append(Produce(step.name, step.directory, constant, step.inputs, put=draw(st.booleans())))
            else:
                args = draw(st.lists(st.sampled_from(available), min_size=1, max_size=2, unique=True))
                steps.append(Cached(f"a{count}", tuple(n for n, _d in args), t, constant))
        if not any(_outputs(s) for s in steps):
            count += 1
            steps.append(Produce(f"a{count}", False, None))
        tasks.append(Plan(f"t{t}", tuple(steps)))
        for s in steps:
            available += _outputs(s)
            if isinstance(s, Produce) and s.put:
                stored.append(s.name)
    loose = []
    for _ in range(draw(st.integers(0, 2))):
        count += 1
        declared = draw(st.lists(st.sampled_from(available), max_size=2, unique=True))
        loose.append(Produce(f"a{count}", draw(st.booleans()), None, tuple(n for n, _d in declared)))
    versions = [tuple(0 for _ in inputs)]
    for _ in range(draw(st.integers(1, 2))):
        versions.append(tuple(v + draw(st.integers(0, 1)) for v in versions[-1]))
    return Workflow(inputs, tuple(tasks), tuple(loose), tuple(versions))


# --- running it ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Where one run of a workflow keeps its files."""

    root: str
    run: int

    def path(self, name: str) -> Path:
        """Shared inputs live at one path for every run; each run writes its own outputs."""
        return Path(self.root) / ("in" if name.startswith("in") else f"r{self.run}") / name

    def got(self, name: str) -> Path:
        return Path(self.root) / f"r{self.run}" / "got" / name


def _read(path: Path) -> bytes:
    """The bytes of a file, or of a directory's files in order (what a step's content depends on)."""
    if path.is_dir():
        return b"".join(rel.encode() + b"\0" + (path / rel).read_bytes() for rel in _files(path))
    return path.read_bytes()


def _files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def _write(path: Path, directory: bool, text: str) -> None:
    if directory:
        (path / "part").mkdir(parents=True, exist_ok=True)
        (path / "head.txt").write_text(text + " head\n")
        (path / "part" / "tail.txt").write_text(text + " tail\n")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def _content(name: str, constant: int | None, seen: bytes) -> str:
    if constant is not None:
        return f"constant {constant}"
    return f"{name} of {hashlib.sha256(seen).hexdigest()[:16]}"


def _value(salt: int, constant: int | None, contents: list[bytes]) -> dict[str, Any]:
    if constant is not None:
        return {"constant": constant}
    return {"digest": hashlib.sha256(b"|".join(contents)).hexdigest(), "salt": salt}


@cacheable
def mix_value(salt: int, constant: int | None, first: str, second: str | None = None) -> dict[str, Any]:
    """The cached function the workflows call: file and directory arguments hash by content."""
    contents = [_read(Path(p)) for p in (first, second) if p is not None]
    return _value(salt, constant, contents)


def run_plan(session: Any, plan: Plan, place: Place) -> None:
    """Execute one task's steps on whatever worker runs it."""
    seen = b""
    for step in plan.steps:
        if isinstance(step, Use) and step.get:
            dest = place.got(step.name)
            session.store.get(f"runs/{session.run_id}/{step.name}", dest)
            seen += _read(dest)
        elif isinstance(step, Use):
            session.record_artifact(place.path(step.name), role="input")
            seen += _read(place.path(step.name))
        elif isinstance(step, Produce):
            for name in step.inputs:
                seen += _read(place.path(name))
            _write(place.path(step.name), step.directory, _content(step.name, step.constant, seen))
            session.record_artifact(place.path(step.name), inputs=[place.path(n) for n in step.inputs])
            if step.put:
                session.put(place.path(step.name), step.name)
        else:
            paths = [str(place.path(n)) for n in step.args]
            value = mix_value(step.salt, step.constant, *paths)
            seen += b"".join(_read(Path(p)) for p in paths)
            _write(place.path(step.name), False, json.dumps(value, sort_keys=True))
            session.record_artifact(place.path(step.name))


def _needs(plan: Plan) -> set[str]:
    names = set()
    for step in plan.steps:
        if isinstance(step, Use):
            names.add(step.name)
        elif isinstance(step, Produce):
            names |= set(step.inputs)
        elif isinstance(step, Cached):
            names |= set(step.args)
    return names


def execute(flow: Workflow, root: Path, manifest: Path, env: dict[str, str]) -> list[str]:
    """Run every run of ``flow`` through sessions; tasks go in waves, each as soon as what it needs exists."""
    run_ids = []
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for run, versions in enumerate(flow.versions):
            place = Place(str(root), run)
            for (name, directory), version in zip(flow.inputs, versions, strict=True):
                path = place.path(name)
                if path.is_dir():
                    shutil.rmtree(path)
                _write(path, directory, f"input {name} version {version}")
            bus.reset_default()
            with ScalableSession.from_yaml(manifest, target="work") as session:
                made: dict[str, int] = {n: -1 for n, _d in flow.inputs}
                pending = list(flow.tasks)
                while pending:
                    wave = [p for p in pending if _needs(p) <= set(made)]
                    futures = [session.submit(run_plan, session, plan, place, task_name=plan.name) for plan in wave]
                    for future in futures:
                        future.result()
                    for plan in wave:
                        made |= {n: 0 for s in plan.steps for n, _d in _outputs(s)}
                        pending.remove(plan)
                for item in flow.loose:  # recorded by the run itself, outside any task
                    _write(place.path(item.name), item.directory, _content(item.name, None, b""))
                    session.record_artifact(place.path(item.name), inputs=[place.path(n) for n in item.inputs])
                run_ids.append(session.run_id)
            bus.reset_default()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return run_ids


# --- the truth -----------------------------------------------------------------------------------


def _digest_of(content: bytes | dict[str, bytes]) -> str:
    """The documented digest, from the bytes alone: SHA-256 of a file, the tree digest of a directory."""
    if isinstance(content, bytes):
        return hashlib.sha256(content).hexdigest()
    lines = b"".join(f"{rel}\0{hashlib.sha256(data).hexdigest()}\n".encode() for rel, data in sorted(content.items()))
    return hashlib.sha256(lines).hexdigest()


def _bytes(directory: bool, text: str) -> bytes | dict[str, bytes]:
    if directory:
        return {"head.txt": f"{text} head\n".encode(), "part/tail.txt": f"{text} tail\n".encode()}
    return f"{text}\n".encode()


def _seen(content: bytes | dict[str, bytes]) -> bytes:
    if isinstance(content, bytes):
        return content
    return b"".join(rel.encode() + b"\0" + data for rel, data in sorted(content.items()))


@dataclass
class Truth:
    """The true lineage: data-flow edges over digests, and which runs generated and used each."""

    flow: set[tuple[str, str]] = field(default_factory=set)
    generated: dict[str, set[str]] = field(default_factory=dict)
    used: dict[str, set[str]] = field(default_factory=dict)

    def node(self, digest: str) -> None:
        self.generated.setdefault(digest, set())
        self.used.setdefault(digest, set())

    def up(self, node: str) -> set[str]:
        """Every version ``node`` came from (itself too, only on a cycle)."""
        return self._reach(node, {(dst, src) for src, dst in self.flow})

    def down(self, node: str) -> set[str]:
        """Every version that came of ``node`` (itself too, only on a cycle)."""
        return self._reach(node, self.flow)

    @staticmethod
    def _reach(node: str, edges: set[tuple[str, str]]) -> set[str]:
        found: set[str] = set()
        todo = [node]
        while todo:
            current = todo.pop()
            for a, b in edges:
                if a == current and b not in found:
                    found.add(b)
                    todo.append(b)
        return found


@dataclass
class _Run:
    """One run being simulated: the bytes at each name, what it stored, and the truth it adds to."""

    truth: Truth
    run_id: str
    content: dict[str, bytes | dict[str, bytes]] = field(default_factory=dict)
    stored: dict[str, str] = field(default_factory=dict)

    def digest(self, name: str) -> str:
        digest = _digest_of(self.content[name])
        self.truth.node(digest)
        return digest

    def used(self, digest: str, uses: list[str]) -> None:
        uses.append(digest)
        self.truth.used[digest].add(self.run_id)

    #: the current task's (used, generated) pairs, and the pairs it declared as inputs
    task_flow: set[tuple[str, str]] = field(default_factory=set)
    task_declared: set[tuple[str, str]] = field(default_factory=set)

    def generated(self, digest: str, uses: list[str], declared: list[str], *, in_task: bool) -> None:
        self.truth.generated[digest].add(self.run_id)
        self.truth.flow |= {(i, digest) for i in declared if i != digest}
        if in_task:
            self.task_declared |= {(i, digest) for i in declared}
            self.task_flow |= {(u, digest) for u in uses if u != digest}

    def end_task(self) -> None:
        """A task's uses before its generations are data flow, but a declared input only once."""
        self.truth.flow |= self.task_flow - self.task_declared
        self.task_flow, self.task_declared = set(), set()


def truth_of(flow: Workflow, run_ids: list[str]) -> Truth:
    """Simulate every run as the model reads it, from the bytes each step wrote."""
    truth = Truth()
    cached: set[tuple[Any, ...]] = set()
    for run_id, versions in zip(run_ids, flow.versions, strict=True):
        run = _Run(truth, run_id)
        for (name, directory), version in zip(flow.inputs, versions, strict=True):
            run.content[name] = _bytes(directory, f"input {name} version {version}")
        for plan in flow.tasks:
            uses: list[str] = []
            seen = b""
            for step in plan.steps:
                if isinstance(step, Use):
                    run.used(run.stored[step.name] if step.get else run.digest(step.name), uses)
                    seen += _seen(run.content[step.name])
                elif isinstance(step, Produce):
                    declared = [run.digest(n) for n in step.inputs]
                    seen += b"".join(_seen(run.content[n]) for n in step.inputs)
                    before = list(uses)
                    for i in declared:  # the session records each local input as used, first
                        run.used(i, uses)
                    run.content[step.name] = _bytes(step.directory, _content(step.name, step.constant, seen))
                    run.generated(run.digest(step.name), before, declared, in_task=True)
                    if step.put:
                        run.stored[step.name] = run.digest(step.name)
                        run.generated(run.digest(step.name), uses, [], in_task=True)
                else:
                    args = [run.digest(n) for n in step.args]
                    value = _value(step.salt, step.constant, [_seen(run.content[n]) for n in step.args])
                    v = hashlib.sha256(json.dumps(value, separators=(",", ":")).encode()).hexdigest()  # as stored
                    truth.node(v)
                    for a in args:
                        run.used(a, uses)
                    key = (step.salt, step.constant, tuple(zip(step.args, args, strict=True)))  # names hash too
                    if key in cached:  # a hit: the run used the cached value
                        run.used(v, uses)
                    else:  # a miss, then the write: the value derives from the arguments alone
                        cached.add(key)
                        truth.generated[v].add(run_id)
                        truth.flow |= {(a, v) for a in args if a != v}
                        uses.append(v)  # the call returned it to the task
                    seen += b"".join(_seen(run.content[n]) for n in step.args)
                    run.content[step.name] = _bytes(False, json.dumps(value, sort_keys=True))
                    run.generated(run.digest(step.name), uses, [], in_task=True)
            run.end_task()
        for item in flow.loose:
            declared = [run.digest(n) for n in item.inputs]
            for i in declared:
                truth.used[i].add(run_id)
            run.content[item.name] = _bytes(item.directory, _content(item.name, None, b""))
            run.generated(run.digest(item.name), [], declared, in_task=False)
    return truth


# --- checking it -----------------------------------------------------------------------------------


def check_lineage(ledger: Ledger, truth: Truth, cli_args: list[str], *, asked: int | None = None) -> None:
    """Every version gives exactly the true ancestors, descendants and runs.

    For every version, the SQL ``ancestors``/``descendants`` macros, and the walk: without
    ``asked``, ``lineage_graph`` (what ``Ledger.lineage`` runs) on the macros' connection; with
    ``asked``, what a user calls, each on a connection of its own: ``Ledger.lineage`` and the
    CLI's ``--format json`` in turn from version to version (the ``asked``-th version, in
    sorted order, starts with ``Ledger.lineage``). Such a call costs a connection (some 0.1 s),
    so each example asks them in one of its two states (before or after compaction).
    """
    invoke = CliInvoker()
    con = connect(ledger)
    try:
        assert set(con.execute("SELECT DISTINCT src, dst FROM lineage").fetchall()) == truth.flow
        for index, node in enumerate(sorted(truth.generated)):
            want = {
                "up": truth.up(node),
                "down": truth.down(node),
                "generated_by": sorted(truth.generated[node]),
                "used_by": sorted(truth.used[node]),
            }
            up = {r[0] for r in con.execute(f"SELECT src FROM ancestors('{node}')").fetchall()}
            down = {r[0] for r in con.execute(f"SELECT dst FROM descendants('{node}')").fetchall()}
            assert {"up": up, "down": down} == {"up": want["up"], "down": want["down"]}, node
            if asked is None or (index + asked) % 2 == 0:
                graph = (
                    lineage_graph(con, node, direction="both")
                    if asked is None
                    else ledger.lineage(node, direction="both")
                )
                info = graph.nodes[node]
                found = {"up": graph.ancestors(), "down": graph.descendants()}
                found |= {"generated_by": info["generated_by"], "used_by": info["used_by"]}
                assert found == want, node
                continue
            shown = invoke("ledger", *cli_args, "lineage", node, "--both", "--format", "json")
            assert shown.exit_code == 0, shown.output
            doc = json.loads(shown.stdout)
            me = next(n for n in doc["nodes"] if n["id"] == node)
            via_cli = {
                "up": {e["src"] for e in doc["edges"] if e["direction"] == "up"},
                "down": {e["dst"] for e in doc["edges"] if e["direction"] == "down"},
                "generated_by": me["generated_by"],
                "used_by": me["used_by"],
            }
            assert via_cli == want, node
    finally:
        con.close()


def check_exports(ledger: Ledger, truth: Truth, work: Path) -> None:
    """PROV reads back with the prov package and OpenLineage validates; each run's used and generated sets are true."""
    from prov.model import ProvDocument

    from scalable.ledger.export import export_openlineage, export_prov

    runs = sorted({r for rs in truth.generated.values() for r in rs} | {r for rs in truth.used.values() for r in rs})
    want_made = {r: {n for n, rs in truth.generated.items() if r in rs} for r in runs}
    want_used = {r: {n for n, rs in truth.used.items() if r in rs} for r in runs}
    export_prov(ledger, work / "prov.json")
    doc = ProvDocument.deserialize(source=str(work / "prov.json"), format="json")
    run_of = {f"run:{r}": r for r in runs}
    for record in doc.get_records():
        if type(record).__name__ == "ProvCommunication":
            informed, informant = (str(v) for _k, v in record.formal_attributes[:2])
            if informant in run_of and informed.startswith("task:"):
                run_of[informed] = run_of[informant]  # a task is informed by its run
    made: dict[str, set[str]] = {r: set() for r in runs}
    read: dict[str, set[str]] = {r: set() for r in runs}
    for record in doc.get_records():
        kind = type(record).__name__
        if kind in ("ProvGeneration", "ProvUsage"):
            attrs = dict((str(k), str(v)) for k, v in record.formal_attributes if v is not None)
            entity = attrs["prov:entity"].removeprefix("sha256:")
            run = run_of[attrs["prov:activity"]]
            (made if kind == "ProvGeneration" else read)[run].add(entity)
    assert made == want_made and read == want_used
    events = export_openlineage(ledger, work / "ol.jsonl")
    validator = jsonschema.Draft202012Validator(
        {**SCHEMA, "$ref": "#/$defs/RunEvent"}, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    ol_made: dict[str, set[str]] = {}
    ol_used: dict[str, set[str]] = {}
    for event in events:
        validator.validate(event)
        facets = event["run"]["facets"]
        if event["eventType"] == "COMPLETE" and "scalable_run" in facets:
            run = facets["scalable_run"]["runId"]
            ol_made[run] = {d["facets"]["version"]["datasetVersion"] for d in event["outputs"]}
            ol_used[run] = {d["facets"]["version"]["datasetVersion"] for d in event["inputs"]}
    assert ol_made == want_made and ol_used == want_used


# --- the tests -------------------------------------------------------------------------------------

#: Examples of each test: 200 in all, most on threads (the cheapest); ``LINEAGE_EXAMPLES`` sets
#: every count at once (for a quick local run). The timeouts allow a loaded machine several
#: times the seconds an example takes on a quiet one.
EXAMPLES = {"threads": 154, "processes": 20, "dask": 20, "remote": 6}


def _examples(test: str) -> int:
    return int(os.environ.get("LINEAGE_EXAMPLES", EXAMPLES[test]))


_HYPOTHESIS = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
}


@pytest.fixture
def example_dirs() -> Iterator[Path]:
    """A parent for the examples' directories (each example gets a fresh one)."""
    parent = Path(tempfile.mkdtemp(prefix="lineage-random-"))
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


def _example(parent: Path, target: str) -> tuple[Path, Path, list[str]]:
    """A fresh directory with a manifest of ``target``; the CLI arguments of its ledger."""
    root = parent / uuid.uuid4().hex[:12]
    (root / "store").mkdir(parents=True)
    manifest = root / "scalable.yaml"
    manifest.write_text(
        "version: 1\n"
        f"project: {{name: random, default_storage: '{root / 'store'}', local_cache: '{root / 'cache'}'}}\n"
        f"targets:\n  work: {target}\n"
    )
    return root, manifest, ["--runs-dir", str(root / "runs"), "--ledger-dir", str(root / "ledger")]


def _local_env(root: Path) -> dict[str, str]:
    return {"SCALABLE_RUNS_DIR": str(root / "runs"), "SCALABLE_LEDGER_DIR": str(root / "ledger")}


_EXAMPLES = [0]  # examples run so far: which state, and which version first, each way of asking gets


def _run_and_check(flow: Workflow, parent: Path, target: str, *, exports: bool) -> None:
    root, manifest, cli_args = _example(parent, target)
    run_ids = execute(flow, root, manifest, _local_env(root))
    truth = truth_of(flow, run_ids)
    ledger = Ledger.open(root / "runs", root / "ledger")
    _EXAMPLES[0] += 1
    k = _EXAMPLES[0]
    # Each run compacted itself alone: edges from its events. Then compacted edge files cover all.
    check_lineage(ledger, truth, cli_args, asked=k % 4 if k % 4 < 2 else None)
    ledger.compact()
    check_lineage(ledger, truth, cli_args, asked=k % 4 - 2 if k % 4 >= 2 else None)
    if exports:
        check_exports(ledger, truth, root)
    ledger.close()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(EXAMPLES["threads"] * 12)
@settings(max_examples=_examples("threads"), **_HYPOTHESIS)  # type: ignore[arg-type]
@given(flow=workflows())
def test_random_workflows_on_threads(flow: Workflow, example_dirs: Path) -> None:
    """On the local target's threads, lineage of every version equals the truth, before and after compaction."""
    _run_and_check(flow, example_dirs, "{provider: local, max_workers: 2}", exports=True)


@pytest.mark.slow
@pytest.mark.timeout(EXAMPLES["processes"] * 30)
@settings(max_examples=_examples("processes"), **_HYPOTHESIS)  # type: ignore[arg-type]
@given(flow=workflows(max_tasks=2))
def test_random_workflows_on_processes(flow: Workflow, example_dirs: Path) -> None:
    """On the local target's worker processes (their own writers), lineage equals the truth."""
    _run_and_check(flow, example_dirs, "{provider: local, processes: true, max_workers: 2}", exports=False)


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    """One Dask LocalCluster for the module: 2 worker processes, 1 thread each."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        yield local.scheduler_address


@pytest.mark.slow
@pytest.mark.timeout(EXAMPLES["dask"] * 30)
@settings(max_examples=_examples("dask"), **_HYPOTHESIS)  # type: ignore[arg-type]
@given(flow=workflows(max_tasks=2))
def test_random_workflows_on_dask(flow: Workflow, example_dirs: Path, dask_address: str) -> None:
    """On a Dask cluster (tasks record into ledgers of their own, shipped back), lineage equals the truth."""
    _run_and_check(flow, example_dirs, f"{{provider: dask, address: '{dask_address}'}}", exports=True)


@pytest.fixture
def remote_bucket(s3_server: str) -> str:
    """A fresh bucket on the S3 server for the remote ledgers of the examples."""
    name = f"lineage-{uuid.uuid4().hex[:12]}"
    create_s3_bucket(s3_server, name)
    return name


@pytest.mark.slow
@pytest.mark.timeout(EXAMPLES["remote"] * 120)
@settings(max_examples=_examples("remote"), **_HYPOTHESIS)  # type: ignore[arg-type]
@given(flow=workflows(max_tasks=1))  # every query reads object storage: the smallest DAGs
def test_random_workflows_from_a_remote_ledger(flow: Workflow, example_dirs: Path, remote_bucket: str) -> None:
    """A ledger on S3, read from another machine (its own empty local directories): lineage equals the truth."""
    root, manifest, _ = _example(example_dirs, "{provider: local, max_workers: 2}")
    remote = f"s3://{remote_bucket}/{root.name}/"
    run_ids = execute(flow, root, manifest, {**_local_env(root), "SCALABLE_RUNS_DIR_REMOTE": remote})
    truth = truth_of(flow, run_ids)
    elsewhere = root / "other-machine"
    for empty in (elsewhere / "runs", elsewhere / "ledger"):
        empty.mkdir(parents=True)
    ledger = Ledger(load_settings(runs_dir=elsewhere / "runs", ledger_dir=elsewhere / "ledger", runs_dir_remote=remote))
    cli_args = ["--runs-dir", str(elsewhere / "runs"), "--ledger-dir", str(elsewhere / "ledger")]
    os.environ["SCALABLE_RUNS_DIR_REMOTE"] = remote
    _EXAMPLES[0] += 1
    k = _EXAMPLES[0]
    try:
        check_lineage(ledger, truth, cli_args, asked=k % 4 if k % 4 < 2 else None)
        ledger.compact()
        check_lineage(ledger, truth, cli_args, asked=k % 4 - 2 if k % 4 >= 2 else None)
    finally:
        del os.environ["SCALABLE_RUNS_DIR_REMOTE"]
        ledger.close()
    shutil.rmtree(root, ignore_errors=True)
