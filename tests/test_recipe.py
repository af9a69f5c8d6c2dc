"""What a run records to be run again: command, interpreter, distributions, project code (stored), allowed variables."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from scalable import Ledger
from scalable.recipe import capture, code_key
from scalable.stores import build_artifact_store
from tests.helpers import child_env

SCRIPT = """\
import sys
import yaml  # a distribution the run imports
from lib import helpers  # the project's own code
from scalable import ScalableSession


def late(session):
    from lib import later  # imported only once the run is going
    session.record_artifact(later.make())


if __name__ == "__main__":
    with ScalableSession() as session:
        session.record_artifact(helpers.make())
        session.submit(late, session).result()
        print(session.run_id)
"""


def _project(root: Path) -> None:
    (root / "lib").mkdir()
    (root / "lib" / "__init__.py").write_text("")
    (root / "lib" / "helpers.py").write_text(
        "from pathlib import Path\n\ndef make():\n    Path('out.txt').write_text('x')\n    return 'out.txt'\n"
    )
    (root / "lib" / "later.py").write_text(
        "from pathlib import Path\n\ndef make():\n    Path('late.txt').write_text('y')\n    return 'late.txt'\n"
    )
    (root / "wf.py").write_text(SCRIPT)


def _run(root: Path, *args: str, **env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "wf.py", *args],
        cwd=root,
        env=child_env(**env),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()[-1]


def _run_attrs(run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    rows = (
        Ledger.open()
        .query(f"SELECT op, attrs FROM events WHERE run_id = '{run_id}' AND event_type = 'run' ORDER BY timestamp")
        .to_pylist()
    )
    by_op = {r["op"]: json.loads(r["attrs"]) for r in rows}
    return by_op["started"], by_op["finished"]


def test_run_started_records_the_command_interpreter_distributions_and_code(isolated: Path) -> None:
    """python wf.py records its argv, cwd, Python, the distributions it imported and the project's modules by digest."""
    _project(isolated)
    run = _run(isolated, "--size", "3")
    started, finished = _run_attrs(run)
    recipe = started["recipe"]
    assert recipe["root"] == str(isolated) and recipe["cwd"] == "."
    assert recipe["argv"] == [sys.executable, "wf.py", "--size", "3"] and recipe["masked"] is False
    assert recipe["executable"] == sys.executable and recipe["interactive"] is False
    assert recipe["python"] == ".".join(map(str, sys.version_info[:3]))
    assert recipe["distributions"]["PyYAML"] == metadata.version("PyYAML")
    assert recipe["distributions"]["scalable"] == metadata.version("scalable")
    assert "pytest" not in recipe["distributions"]  # only what the run imported
    code = {entry["path"]: entry for entry in recipe["code"]}
    assert set(code) == {"wf.py", "lib/__init__.py", "lib/helpers.py"}
    assert code["wf.py"]["module"] == "__main__" and code["lib/helpers.py"]["module"] == "lib.helpers"
    import hashlib

    assert (
        code["lib/helpers.py"]["digest"] == hashlib.sha256((isolated / "lib" / "helpers.py").read_bytes()).hexdigest()
    )
    assert recipe["import_roots"] == ["."]
    assert recipe["cache_dir"] == str(isolated / ".scalable" / "cache")
    # A module first imported inside a task is added when the run finishes.
    assert [e["path"] for e in finished["recipe_added"]["code"]] == ["lib/later.py"]
    assert "scalable" not in json.dumps(finished["recipe_added"].get("distributions", {}))


def test_code_is_stored_once_by_digest_and_restorable(isolated: Path) -> None:
    """Each file of code is kept in the default storage under code/<sha256>, once however many runs read it."""
    _project(isolated)
    first = _run(isolated)
    second = _run(isolated)
    store = build_artifact_store(str(isolated / ".scalable" / "artifacts"))
    code_a, code_b = (
        {e["path"]: e for e in started["recipe"]["code"] + finished["recipe_added"]["code"]}
        for started, finished in (_run_attrs(first), _run_attrs(second))
    )
    assert code_a == code_b and "lib/later.py" in code_a
    stored = [k for k in store.list_artifacts("code/")]
    assert sorted(stored) == sorted(code_key(e["digest"]) for e in code_a.values())
    for path, entry in code_a.items():
        assert entry["stored"] == store.uri_for(code_key(entry["digest"]))
        kept = store.get_bytes(code_key(entry["digest"]), verify_digest=entry["digest"], record=False)
        assert kept == (isolated / path).read_bytes()
    # Stored code is no artifact of any run.
    assert not Ledger.open().query("SELECT 1 FROM artifacts WHERE location LIKE '%/code/%'").num_rows


def test_only_allowed_variables_are_recorded_and_never_secrets(isolated: Path) -> None:
    """SCALABLE_RECORD_ENV picks variables by name or pattern; names that look secret are never recorded."""
    _project(isolated)
    run = _run(
        isolated,
        SCALABLE_RECORD_ENV="OMP_*,API_TOKEN,LANG_CHOICE",
        OMP_NUM_THREADS="4",
        API_TOKEN="tok-123",
        LANG_CHOICE="de",
        HOME_ELSE="nope",
    )
    started = _run_attrs(run)[0]
    assert started["recipe"]["env"] == {"LANG_CHOICE": "de", "OMP_NUM_THREADS": "4"}
    assert "tok-123" not in json.dumps(started)


def test_an_argument_that_looks_secret_is_masked_and_marked(isolated: Path) -> None:
    """--password=... is recorded masked, and the recipe says so (such a command cannot be run again as recorded)."""
    _project(isolated)
    run = _run(isolated, "--password=hunter2")
    recipe = _run_attrs(run)[0]["recipe"]
    assert recipe["masked"] is True and "hunter2" not in json.dumps(recipe)
    assert recipe["argv"][-1] == "--password=***"


def test_capture_in_process_leaves_out_what_is_not_the_project(isolated: Path) -> None:
    """Modules outside the root and the interpreter's own are not code of the project; env follows the allow-list."""
    (isolated / "mine.py").write_text("X = 1\n")
    import importlib.util

    spec = importlib.util.spec_from_file_location("mine", isolated / "mine.py")
    assert spec is not None and spec.loader is not None
    mine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mine)
    modules = {"mine": mine, "json": json, "subprocess": subprocess}
    recipe = capture(isolated, store=None, allow_env=("A_*",), env={"A_X": "1", "B": "2"}, modules=modules)
    assert [(e["path"], e["module"], e["stored"]) for e in recipe["code"]] == [("mine.py", "mine", None)]
    assert recipe["env"] == {"A_X": "1"}
    assert recipe["distributions"] == {}  # standard library only
