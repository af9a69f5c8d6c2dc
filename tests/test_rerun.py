"""ledger rerun: a recorded workflow runs again from its project folder, and the verdict says where it diverged.

The workflow is a real script run as ``python wf.py`` from a project folder, in its own
interpreter: data.csv -> a.txt (prepare) -> b.txt (perturb) -> c.txt (summarize), and an
unrelated branch data.csv -> d.txt (count). ``perturb`` draws a random number from
``--seed``; without one, it is seeded from the system (a seed not fixed). With ``--cached``
the number comes from a ``@cacheable`` function instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from scalable import Ledger
from scalable.errors import ConfigError
from scalable.ledger import bus
from scalable.rerun import rerun
from scalable.uris import path_to_uri
from tests.conftest import CliInvoker
from tests.helpers import child_env

pytestmark = pytest.mark.slow

MANIFEST = """\
version: 1
project:
  name: rerun-demo
  record_env: [WF_LABEL]
targets:
  local: {provider: local, max_workers: 2}
  dask: {provider: dask, n_workers: 2, threads_per_worker: 1, processes: true}
"""

STEPS = '''\
"""The steps of the workflow: each records what it read and what it wrote."""
import json
import random
from pathlib import Path

from scalable import cacheable
from scalable.cache import FileType


def prepare(session, src, dst):
    session.record_artifact(src, role="input")
    Path(dst).write_text(Path(src).read_text().upper())
    session.record_artifact(dst)


def perturb(session, src, dst, seed):
    session.record_artifact(src, role="input")
    noise = random.Random(seed).random()  # seed None: seeded from the system, another number each run
    Path(dst).write_text(Path(src).read_text() + f"noise {noise}\\n")
    session.record_artifact(dst)


@cacheable(src=FileType)
def measure(src, seed):
    return {"lines": len(Path(src).read_text().splitlines()), "noise": random.Random(seed).random()}


def perturb_cached(session, src, dst, seed):
    value = measure(src, seed)
    Path(dst).write_text(json.dumps(value, sort_keys=True))
    session.record_artifact(dst)


def summarize(session, src, dst):
    session.record_artifact(src, role="input")
    Path(dst).write_text(Path(src).read_text()[::-1])
    session.record_artifact(dst)
    session.put(dst)  # kept in the default storage, under runs/<run id>/


def count(session, src, dst):
    session.record_artifact(src, role="input")
    Path(dst).write_text(str(len(Path(src).read_text().splitlines())))
    session.record_artifact(dst)
'''

WORKFLOW = '''\
"""A workflow of three steps and an unrelated branch."""
import argparse
from pathlib import Path

import steps
from scalable import ScalableSession


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--cached", action="store_true")
    parser.add_argument("--from-store", action="store_true")
    parser.add_argument("--also-read")
    parser.add_argument("--data", default="data.csv")
    args, _rest = parser.parse_known_args()
    with ScalableSession.from_yaml("scalable.yaml") as session:
        if args.from_store:
            session.store.get("inputs/data.csv", "data.csv")
        if args.also_read:
            Path(args.also_read).read_text()  # read without recording it
        session.submit(steps.prepare, session, args.data, "a.txt", task_name="prepare").result()
        branch = session.submit(steps.count, session, args.data, "d.txt", task_name="count")
        middle = steps.perturb_cached if args.cached else steps.perturb
        session.submit(middle, session, "a.txt", "b.txt", args.seed, task_name="perturb").result()
        session.submit(steps.summarize, session, "b.txt", "c.txt", task_name="summarize").result()
        branch.result()
        print(session.run_id)


if __name__ == "__main__":  # worker processes (a Dask target) import this module again
    main()
'''

DATA = "id,value\n1,10\n2,20\n3,30\n"
STORED_C = "{project}/.scalable/artifacts/runs/{run}/c.txt"
KEYS = {f"{{project}}/{name}" for name in ("data.csv", "a.txt", "b.txt", "c.txt", "d.txt")} | {STORED_C}


@pytest.fixture
def project(isolated: Path) -> Path:
    """A project folder (the test's working directory): manifest, the steps, the workflow and its data."""
    (isolated / "scalable.yaml").write_text(MANIFEST)
    (isolated / "steps.py").write_text(STEPS)
    (isolated / "wf.py").write_text(WORKFLOW)
    (isolated / "data.csv").write_text(DATA)
    return isolated


def run_workflow(project: Path, *args: str, **env: str) -> str:
    """Run ``python wf.py ARGS`` from the project folder, as a user does; return the run id it printed."""
    proc = subprocess.run(
        [sys.executable, "wf.py", *args],
        cwd=project,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.split()[-1]


def versions(result: Any) -> dict[str, dict[str, Any]]:
    """The verdict's version rows of a ``--format json`` output, by key."""
    return {row["key"]: row for row in json.loads(result.stdout) if row["section"] == "version"}


def verdict_shape(rows: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """What a verdict says of each version, digests aside: role, status, first divergence, what it follows from."""
    return {key: (r["role"], r["status"], r["first"], r["follows_from"]) for key, r in rows.items()}


def rerun_json(cli: CliInvoker, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = cli("ledger", "rerun", *args, "--format", "json")
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, versions(result)


def new_runs(of: str) -> list[dict[str, Any]]:
    """The runs started as reruns of ``of``, with their recipes."""
    rows = (
        Ledger.open()
        .query(
            f"SELECT run_id, attrs FROM events WHERE op = 'started' AND json_extract_string(attrs, '$.rerun_of') = '{of}'"
        )
        .to_pylist()
    )
    return [{"run_id": r["run_id"], **json.loads(r["attrs"])} for r in rows]


def test_a_deterministic_workflow_reruns_with_every_artifact_identical(project: Path, cli: CliInvoker) -> None:
    """rerun --verify of a seeded workflow exits 0: every input and output identical, recorded as run/verified."""
    run = run_workflow(project, "--seed", "7")
    result = cli("ledger", "rerun", run, "--verify")
    assert result.exit_code == 0, result.output
    assert f"rerun of {run}: run-" in result.stdout and "reproduces" in result.stdout
    assert "first divergences" not in result.stdout
    (new,) = new_runs(run)
    assert new["recipe"]["root"].startswith(str(project / ".scalable" / "reruns"))
    code, rows = rerun_json(cli, run, "--verify")
    assert code == 0
    assert set(rows) == KEYS
    assert {key: r["status"] for key, r in rows.items()} == dict.fromkeys(KEYS, "identical")
    assert rows["{project}/data.csv"]["role"] == "input"
    assert {r["role"] for key, r in rows.items() if key != "{project}/data.csv"} == {"output"}
    verified = Ledger.open().query(
        "SELECT run_id, rerun_of, verdict, identical, changed, first_divergences FROM verifications ORDER BY run_id"
    )
    assert verified.to_pylist() == [
        {"run_id": n, "rerun_of": run, "verdict": "identical", "identical": 6, "changed": 0, "first_divergences": []}
        for n in sorted(n["run_id"] for n in new_runs(run))
    ]
    assert len(verified) == 2
    audit = cli("ledger", "audit")  # the verdicts, appended after the seal, are no tampering
    assert audit.exit_code == 0, audit.output


def test_an_unseeded_middle_step_is_the_only_first_divergence(project: Path, cli: CliInvoker) -> None:
    """Without a seed, rerun --verify exits 1: b.txt first diverges (task perturb), c.txt follows, the branch is identical."""
    run = run_workflow(project)
    result = cli("ledger", "rerun", run, "--verify")
    assert result.exit_code == 1, result.output
    assert "first divergences" in result.stdout
    assert "changed output {project}/b.txt (task perturb)" in result.stdout
    assert "follows from it: changed output {project}/c.txt" in result.stdout
    code, rows = rerun_json(cli, run, "--verify")
    assert code == 1
    newest = sorted(new_runs(run), key=lambda n: n["run_id"])
    assert {(r["run_a"], r["run_b"]) for r in rows.values()} == {(run, newest[-1]["run_id"])}
    assert [key for key, r in rows.items() if r["first"]] == ["{project}/b.txt"]
    assert rows["{project}/b.txt"]["task_b"] == "perturb" and rows["{project}/b.txt"]["status"] == "changed"
    assert rows["{project}/b.txt"]["digest_a"] != rows["{project}/b.txt"]["digest_b"]
    assert rows["{project}/c.txt"]["status"] == "changed"
    assert rows["{project}/c.txt"]["follows_from"] == "{project}/b.txt" and not rows["{project}/c.txt"]["first"]
    assert rows[STORED_C]["status"] == "changed" and rows[STORED_C]["follows_from"] == "{project}/b.txt"
    for unrelated in ("{project}/a.txt", "{project}/d.txt", "{project}/data.csv"):
        assert rows[unrelated]["status"] == "identical", unrelated
    newest = sorted(new_runs(run), key=lambda n: n["run_id"])
    shown = json.loads(cli("ledger", "show", newest[-1]["run_id"], "--format", "json").stdout)
    (verification,) = [v for v in shown["verifications"] if v["run_id"] == newest[-1]["run_id"]]
    assert verification["verdict"] == "differs" and verification["first_divergences"] == ["{project}/b.txt"]
    assert verification["rerun_of"] == run and verification["cache"] == "bypassed"
    of_original = json.loads(cli("ledger", "show", run, "--format", "json").stdout)["verifications"]
    assert {v["run_id"] for v in of_original} == {n["run_id"] for n in newest}


def test_a_cached_value_hides_nondeterminism_from_a_rerun_with_the_cache_but_not_from_verify(
    project: Path, cli: CliInvoker
) -> None:
    """A cached unseeded value: a plain rerun (cache on) hits it and looks identical; --verify computes it again and differs."""
    run = run_workflow(project, "--cached")
    plain = cli("ledger", "rerun", run, "--format", "json")
    assert plain.exit_code == 0, plain.output
    (row,) = json.loads(plain.stdout)
    assert row["rerun_of"] == run and row["cache"] is True
    hits = Ledger.open().query(f"SELECT op FROM cache WHERE run_id = '{row['run_id']}'").column("op").to_pylist()
    assert "hit" in hits and "write" not in hits
    missed = cli("ledger", "diff", run, row["run_id"], "--lineage", "--format", "json")
    assert missed.exit_code == 0, missed.output
    assert {r["status"] for r in versions(missed).values()} == {"identical"}
    assert cli("ledger", "rerun", run, "--verify", "--cache").exit_code == 0

    code, rows = rerun_json(cli, run, "--verify")
    assert code == 1
    first = [r for r in rows.values() if r["first"]]
    assert [(r["role"], r["name"], r["task_b"], r["status"]) for r in first] == [
        ("cache", "steps.measure()", "perturb", "changed")
    ]
    assert rows["{project}/b.txt"]["follows_from"] == first[0]["key"]
    assert rows["{project}/c.txt"]["follows_from"] == first[0]["key"]
    assert rows["{project}/d.txt"]["status"] == "identical"
    # The bypass left the project's cache alone: a rerun with it still finds the first value.
    assert cli("ledger", "rerun", run, "--verify", "--cache").exit_code == 0


@pytest.mark.parametrize("where", ["local", "s3"])
def test_an_input_whose_bytes_are_gone_is_named_with_where_it_was(
    project: Path, cli: CliInvoker, where: str, request: pytest.FixtureRequest
) -> None:
    """The workflow fetched data.csv from a store; once those bytes are gone everywhere, rerun exits 2 naming it."""
    env: dict[str, str] = {}
    if where == "s3":
        bucket, _options = request.getfixturevalue("s3_bucket")
        env["SCALABLE_DEFAULT_STORAGE"] = f"s3://{bucket}/project/"
    storage = env.get("SCALABLE_DEFAULT_STORAGE", str(project / ".scalable" / "artifacts"))
    stored = f"{storage.rstrip('/')}/inputs/data.csv"
    put = cli("artifacts", "put", "data.csv", stored)
    assert put.exit_code == 0, put.output
    os.remove("data.csv")
    run = run_workflow(project, "--from-store", "--seed", "1", **env)
    Path("data.csv").write_text("id,value\n1,11\n")  # the working tree moved on
    if where == "s3":
        import fsspec

        fsspec.filesystem("s3").rm(stored.removeprefix("s3://"))
    else:
        os.remove(stored)
    for name, value in env.items():
        os.environ[name] = value
    try:
        result = cli("ledger", "rerun", run, "--verify")
    finally:
        for name in env:
            del os.environ[name]
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "input data.csv (sha256 " in result.stderr
    where_it_was = stored if where == "s3" else "file://" + stored
    assert f"it was at {where_it_was} (nothing is there any more)" in result.stderr
    assert "holds other bytes" in result.stderr  # the project's data.csv was tried too
    assert new_runs(run) == []  # nothing ran
    assert not any((project / ".scalable" / "reruns").iterdir())


def test_the_rerun_on_dask_gives_the_verdict_it_gives_on_threads(project: Path, cli: CliInvoker) -> None:
    """The same unseeded run re-executed on the local threads and on a Dask cluster: the same verdict."""
    run = run_workflow(project)
    code_threads, on_threads = rerun_json(cli, run, "--verify")
    code_dask, on_dask = rerun_json(cli, run, "--verify", "--target", "dask")
    assert (code_threads, code_dask) == (1, 1)
    assert verdict_shape(on_dask) == verdict_shape(on_threads)
    assert [k for k, r in on_dask.items() if r["first"]] == ["{project}/b.txt"]
    targets = {n["run_id"]: n["target"] for n in new_runs(run)}
    assert sorted(targets.values()) == ["dask", "local"]


def test_diff_lineage_of_two_runs_gives_the_verdict_a_rerun_would(project: Path, cli: CliInvoker) -> None:
    """Two runs the user made, compared without running anything: the verdict rerun --verify gives."""
    first = run_workflow(project)
    second = run_workflow(project)
    compared = cli("ledger", "diff", first, second, "--lineage", "--format", "json")
    assert compared.exit_code == 1, compared.output
    code, reran = rerun_json(cli, first, "--verify")
    assert code == 1
    assert verdict_shape(versions(compared)) == verdict_shape(reran)
    table = cli("ledger", "diff", first, second, "--lineage")
    assert table.exit_code == 1 and "first divergences" in table.stdout and "tasks:" in table.stdout
    assert cli("ledger", "diff", first, first, "--lineage").exit_code == 0


def test_a_rerun_runs_the_recorded_code_and_data_after_the_working_tree_moved_on(
    project: Path, cli: CliInvoker
) -> None:
    """Edited steps.py and data.csv do not reach the rerun: it restores both by digest and reproduces the run.

    The code was stored by the run itself; the data, by the user, in the project's store.
    """
    kept = cli("artifacts", "put", "data.csv", str(project / ".scalable" / "artifacts" / "inputs" / "data.csv"))
    assert kept.exit_code == 0, kept.output
    run = run_workflow(project, "--seed", "3")
    steps = project / "steps.py"
    steps.write_text(steps.read_text().replace(".upper()", ".lower()"))
    Path("data.csv").write_text("id,value\n9,90\n")
    code, rows = rerun_json(cli, run, "--verify")
    assert code == 0
    assert {r["status"] for r in rows.values()} == {"identical"}
    # Run from the tree as it is now, the workflow differs: the code and the input are named.
    now = run_workflow(project, "--seed", "3")
    compared = json.loads(cli("ledger", "diff", run, now, "--lineage", "--format", "json").stdout)
    recipe = {(r["role"], r["key"]): r["status"] for r in compared if r["section"] == "recipe"}
    assert recipe[("code", "steps.py")] == "changed" and recipe[("code", "wf.py")] == "identical"
    first = {r["key"] for r in compared if r["section"] == "version" and r["first"]}
    assert first == {"{project}/data.csv"}


def test_a_recorded_environment_variable_is_set_again(project: Path, cli: CliInvoker) -> None:
    """WF_LABEL (allowed by the manifest) is recorded and set for the rerun; the rest of the environment is not recorded."""
    run = run_workflow(project, "--seed", "2", WF_LABEL="blue", WF_SECRET_TOKEN="hunter2", OTHER="x")
    started = json.loads(
        Ledger.open().query(f"SELECT attrs FROM events WHERE run_id = '{run}' AND op = 'started'").column(0)[0].as_py()
    )
    assert started["recipe"]["env"] == {"WF_LABEL": "blue"}
    assert "hunter2" not in json.dumps(started)
    result = cli("ledger", "rerun", run, "--verify", "--format", "json")
    assert result.exit_code == 0, result.output
    (new,) = new_runs(run)
    assert new["recipe"]["env"] == {"WF_LABEL": "blue"}


def test_a_command_that_fails_in_the_working_copy_exits_2_with_the_failure(project: Path, cli: CliInvoker) -> None:
    """A file read without being recorded is not in the working copy: the rerun fails, saying why and where the output is."""
    Path("notes.txt").write_text("read but never recorded\n")
    run = run_workflow(project, "--seed", "4", "--also-read", "notes.txt")
    result = cli("ledger", "rerun", run, "--verify")
    assert result.exit_code == 2, result.output
    assert "FileNotFoundError" in result.stderr and "notes.txt" in result.stderr
    assert "rerun.log" in result.stderr and "Traceback" not in result.stderr
    (new,) = new_runs(run)
    status = Ledger.open().query(f"SELECT status FROM runs WHERE run_id = '{new['run_id']}'").column(0)[0].as_py()
    assert status == "failed"


def test_into_takes_a_new_or_empty_directory_only(project: Path, cli: CliInvoker) -> None:
    """--into a directory holding anything is refused before anything is written; an empty one is used."""
    run = run_workflow(project, "--seed", "5")
    Path("busy").mkdir()
    (Path("busy") / "keep.txt").write_text("mine")
    refused = cli("ledger", "rerun", run, "--into", "busy")
    assert refused.exit_code == 2 and "is not a new or empty directory" in refused.stderr
    assert os.listdir("busy") == ["keep.txt"] and new_runs(run) == []
    on_a_file = cli("ledger", "rerun", run, "--into", "busy/keep.txt")
    assert on_a_file.exit_code == 2 and "'busy/keep.txt' is a file" in on_a_file.stderr
    with pytest.raises(ConfigError, match=r"keep\.txt' is not a new or empty directory"):
        rerun(Ledger.open(), run, into="busy/keep.txt")
    assert (Path("busy") / "keep.txt").read_text() == "mine"
    blank = cli("ledger", "rerun", run, "--into", "")
    assert blank.exit_code == 2 and "empty ('')" in blank.stderr
    nowhere = cli("ledger", "rerun", run, "--target", "nowhere")
    assert (
        nowhere.exit_code == 2 and "unknown target 'nowhere'" in nowhere.stderr and "started no run" in nowhere.stderr
    )
    Path("empty").mkdir()
    used = cli("ledger", "rerun", run, "--into", "empty", "--verify")
    assert used.exit_code == 0, used.output
    assert {"data.csv", "scalable.yaml", "steps.py", "wf.py", "a.txt", "c.txt"} <= {
        p.name for p in Path("empty").iterdir()
    }
    assert str(Path("empty").resolve()) in used.stdout


def test_what_cannot_be_run_again_is_refused_with_the_reason(project: Path, cli: CliInvoker) -> None:
    """An unknown run, a run with no recorded command, and a command holding a secret: each exits 2 with one line."""
    secret = run_workflow(project, "--seed", "1", "--token=s3cr3t")
    unknown = cli("ledger", "rerun", "run-nowhere")
    assert unknown.exit_code == 2 and "run 'run-nowhere' is not in the ledger" in unknown.stderr
    ledger = Ledger.open()
    ledger.append({"event_type": "run", "op": "started", "run_id": "run-by-hand", "attrs": {"project": "x"}})
    ledger.finish_run("run-by-hand", "completed")
    bus.reset_default()
    bare = cli("ledger", "rerun", "run-by-hand")
    assert bare.exit_code == 2 and "recorded no command" in bare.stderr
    refused = cli("ledger", "rerun", secret)
    assert refused.exit_code == 2 and "looked like a secret" in refused.stderr
    assert "s3cr3t" not in json.dumps(Ledger.open().query("SELECT attrs FROM events").column(0).to_pylist())


def test_a_rerun_of_a_script_run_with_python_c_works_without_a_file(isolated: Path, cli: CliInvoker) -> None:
    """A run started by ``python -c CODE`` records the code in its command; the rerun runs it again."""
    code = textwrap.dedent("""
        from pathlib import Path
        from scalable import ScalableSession
        with ScalableSession() as session:
            Path("out.txt").write_text("made by -c\\n")
            session.record_artifact("out.txt")
            print(session.run_id)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, check=True, timeout=120
    )
    run = proc.stdout.split()[-1]
    code_, rows = rerun_json(cli, run, "--verify")
    assert code_ == 0 and {k: r["status"] for k, r in rows.items()} == {"{project}/out.txt": "identical"}
    shutil.rmtree(isolated / ".scalable" / "reruns")


WORK = '''\
"""The workflow of a package: a directory input, and a file only a cached call reads."""
import json
from pathlib import Path

from scalable import ScalableSession, cacheable
from scalable.cache import FileType


@cacheable(path=FileType)
def measure(path):
    return {"chars": len(Path(path).read_text(encoding="utf-8"))}


def main():
    with ScalableSession.from_yaml("scalable.yaml") as session:
        with session.task("tally"):
            session.record_artifact("raw dir", role="input")
            files = sorted(p for p in Path("raw dir").rglob("*") if p.is_file())
            Path("tally.txt").write_text(str(sum(len(p.read_bytes()) for p in files)))
            session.record_artifact("tally.txt")
        with session.task("measure"):
            Path("mesure.json").write_text(json.dumps(measure("données.csv")))
            session.record_artifact("mesure.json")
        print(session.run_id)


if __name__ == "__main__":
    main()
'''

FORMS = {
    "script": ["wf.py"],
    "script in a subfolder": ["scripts/run.py"],
    "module": ["-m", "pkg.work"],
}


@pytest.mark.parametrize("form", list(FORMS))
def test_every_way_of_starting_a_workflow_runs_again_from_a_folder_with_spaces(
    form: str, tmp_path: Path, cli: CliInvoker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """python wf.py, python scripts/run.py and python -m pkg.work, in 'my project é': inputs restored, identical."""
    project = tmp_path / "my project é"
    (project / "pkg").mkdir(parents=True)
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "work.py").write_text(WORK)
    (project / "wf.py").write_text("from pkg.work import main\n\nmain()\n")
    (project / "scripts").mkdir()
    (project / "scripts" / "run.py").write_text(
        "import sys\nfrom pathlib import Path\n\nsys.path.insert(0, str(Path(__file__).resolve().parents[1]))\n"
        "from pkg.work import main\n\nmain()\n"
    )
    (project / "scalable.yaml").write_text("version: 1\nproject: {name: forms}\n")
    (project / "raw dir" / "sous-dossier").mkdir(parents=True)
    (project / "raw dir" / "a.txt").write_text("alpha\n")
    (project / "raw dir" / "sous-dossier" / "b é.txt").write_text("beta\n")
    (project / "données.csv").write_text("x\n1\n", encoding="utf-8")
    monkeypatch.chdir(project)
    kept = cli("artifacts", "put", "raw dir", str(project / ".scalable" / "artifacts" / "inputs" / "raw"))
    assert kept.exit_code == 0, kept.output
    proc = subprocess.run(
        [sys.executable, *FORMS[form]], cwd=project, env=child_env(), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    run = proc.stdout.split()[-1]
    shutil.rmtree(project / "raw dir")  # gone from the project; its stored copy remains
    code, rows = rerun_json(cli, run, "--verify")
    assert code == 0, rows
    assert {r["status"] for r in rows.values()} == {"identical"}
    by_name = {r["name"]: r for r in rows.values()}
    assert by_name["raw dir"]["role"] == "input" and by_name["données.csv"]["role"] == "input"
    (cached,) = [r for r in rows.values() if r["role"] == "cache"]
    assert cached["name"].endswith(".measure()")  # pkg.work, or __main__ when run with -m
    assert {by_name[n]["role"] for n in ("tally.txt", "mesure.json")} == {"output"}
    (new,) = new_runs(run)
    copy = Path(new["recipe"]["root"])
    assert (copy / "raw dir" / "sous-dossier" / "b é.txt").read_text() == "beta\n"
    assert (copy / "données.csv").read_text(encoding="utf-8") == "x\n1\n"
    assert new["recipe"]["argv"][1:] == FORMS[form]
    assert {e["path"] for e in new["recipe"]["code"]} >= {"pkg/work.py", "scalable.yaml"}


def test_an_input_outside_the_project_is_read_where_it_is_and_checked_there(
    project: Path, tmp_path: Path, cli: CliInvoker
) -> None:
    """data read from another folder is not copied: a rerun reads it there while it holds its bytes, else exits 2."""
    outside = tmp_path / "shared data" / "input.csv"
    outside.parent.mkdir()
    outside.write_text(DATA)
    run = run_workflow(project, "--seed", "8", "--data", str(outside))
    code, rows = rerun_json(cli, run, "--verify")
    assert code == 0 and {r["status"] for r in rows.values()} == {"identical"}
    assert path_to_uri(outside) in {r["key"] for r in rows.values()}  # not under {project}
    (new,) = new_runs(run)
    assert not (Path(new["recipe"]["root"]) / "input.csv").exists()
    outside.write_text("id,value\n7,70\n")
    changed = cli("ledger", "rerun", run, "--verify")
    assert changed.exit_code == 2
    assert "input input.csv (sha256 " in changed.stderr
    assert f"it was at {path_to_uri(outside)} (holds other bytes (" in changed.stderr
