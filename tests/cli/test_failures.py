"""Storage failures end in one line on stderr and exit 2, naming the location, never showing a secret.

Every command that reaches storage (``artifacts put/ls/exists/get``, ``ledger
audit/sync/compact/replay``) is run against each way storage fails: no credentials,
credentials refused (a secret holding ``/`` in the URI), access denied, an endpoint nobody
answers, a missing bucket, an invalid bucket name, a directory nobody may read (run as the
user ``nobody``) and a file where a directory must be. The object stores are real servers on
127.0.0.1 (moto, with and without authentication, and the GCS emulator).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from scalable.ledger import bus
from scalable.ledger.log import Ledger
from tests.conftest import CliInvoker, forget_object_store_clients
from tests.helpers import ROOT
from tests.servers import AuthServer

#: A secret of the AWS form: it holds '/' and '+'.
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#: An access key id no server knows.
UNKNOWN_KEY = "AKIAIOSFODNN7EXAMPLE"

ARTIFACT_COMMANDS: dict[str, Callable[[str], list[str]]] = {
    "artifacts put": lambda base: ["artifacts", "put", "data.txt", f"{base}data.txt"],
    "artifacts ls": lambda base: ["artifacts", "ls", base],
    "artifacts exists": lambda base: ["artifacts", "exists", f"{base}data.txt"],
    "artifacts get": lambda base: ["artifacts", "get", f"{base}data.txt", "got.txt"],
}
LEDGER_COMMANDS: dict[str, list[str]] = {
    "ledger audit": ["ledger", "audit"],
    "ledger sync": ["ledger", "sync"],
    "ledger compact": ["ledger", "compact"],
    "ledger replay": ["ledger", "replay", "run-1", "--into", "restored"],
}
COMMANDS = [*ARTIFACT_COMMANDS, *LEDGER_COMMANDS]


@dataclass
class Case:
    """A way storage fails: the store URI to use, the environment, and what the message must name."""

    base: str
    shown: str
    env: dict[str, str | None] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _no_credentials(request: pytest.FixtureRequest) -> Case:
    bucket, _ = request.getfixturevalue("s3_bucket")
    env: dict[str, str | None] = {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None, "AWS_SESSION_TOKEN": None}
    return Case(f"s3://{bucket}/", f"s3://{bucket}/", env)


def _secret_refused(request: pytest.FixtureRequest) -> Case:
    auth: AuthServer = request.getfixturevalue("s3_auth_server")
    env: dict[str, str | None] = {"AWS_ENDPOINT_URL": auth.endpoint, "AWS_SESSION_TOKEN": None}
    return Case(f"s3://{UNKNOWN_KEY}:{SECRET}@{auth.bucket}/", f"s3://{auth.bucket}/", env, (SECRET, UNKNOWN_KEY))


def _access_denied(request: pytest.FixtureRequest) -> Case:
    auth: AuthServer = request.getfixturevalue("s3_auth_server")
    env: dict[str, str | None] = {
        "AWS_ENDPOINT_URL": auth.endpoint,
        "AWS_ACCESS_KEY_ID": auth.key,
        "AWS_SECRET_ACCESS_KEY": auth.secret,
        "AWS_SESSION_TOKEN": None,
    }
    return Case(f"s3://{auth.bucket}/", f"s3://{auth.bucket}/", env, (auth.secret,))


def _endpoint_refused(request: pytest.FixtureRequest) -> Case:
    request.getfixturevalue("s3_server")  # dummy credentials in the environment
    env: dict[str, str | None] = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{_closed_port()}", "AWS_MAX_ATTEMPTS": "1"}
    return Case("s3://some-bucket/", "s3://some-bucket/", env)


def _bucket_missing(request: pytest.FixtureRequest) -> Case:
    request.getfixturevalue("s3_server")
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    return Case(f"s3://{bucket}/", f"s3://{bucket}/")


def _gcs_bucket_missing(request: pytest.FixtureRequest) -> Case:
    request.getfixturevalue("gcs_server")
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    return Case(f"gs://{bucket}/", f"gs://{bucket}/")


def _invalid_bucket_name(request: pytest.FixtureRequest) -> Case:
    request.getfixturevalue("s3_server")
    return Case("s3://Not_A_Bucket!/", "s3://Not_A_Bucket!/")


def _secret_with_a_missing_bucket(request: pytest.FixtureRequest) -> Case:
    request.getfixturevalue("s3_server")
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    return Case(f"s3://{UNKNOWN_KEY}:{SECRET}@{bucket}/", f"s3://{bucket}/", {}, (SECRET, UNKNOWN_KEY))


CASES: dict[str, Callable[[pytest.FixtureRequest], Case]] = {
    "no credentials": _no_credentials,
    "secret with / refused": _secret_refused,
    "access denied": _access_denied,
    "endpoint refused": _endpoint_refused,
    "bucket missing": _bucket_missing,
    "gcs bucket missing": _gcs_bucket_missing,
    "invalid bucket name": _invalid_bucket_name,
    "secret with /, bucket missing": _secret_with_a_missing_bucket,
}


@pytest.fixture
def workspace(isolated: Path) -> Path:
    """A file to put and a local ledger with one finished run, in the test's directory."""
    (isolated / "data.txt").write_text("some data\n")
    with Ledger.open() as led:
        led.append({"event_type": "run", "op": "started", "run_id": "run-1"})
        led.finish_run("run-1")
    return isolated


def invoke(cli: CliInvoker, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str | None]) -> Result:
    """Run ``scalable ARGS`` in-process with ``env`` applied and no object store client left from before."""
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    forget_object_store_clients()
    bus.reset_default()
    return cli(*args)


def assert_one_line(result: Result, shown: str, secrets: tuple[str, ...] = ()) -> None:
    """Exit 2, exactly one ``error:`` line on stderr naming ``shown``, no traceback, no secret."""
    everything = result.stdout + result.stderr
    assert result.exit_code == 2, everything
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert shown in lines[0], lines[0]
    assert "Traceback" not in everything
    for secret in secrets:
        assert secret not in everything


def files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under ``root`` whose bytes contain ``secret``."""
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(CASES))
def test_every_storage_failure_is_one_line_and_exit_2(
    case: str,
    command: str,
    workspace: Path,
    cli: CliInvoker,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """Each command, for each way object storage fails, prints one line naming the URI, exits 2, shows no secret."""
    failure = CASES[case](request)
    if command in ARTIFACT_COMMANDS:
        args, shown = ARTIFACT_COMMANDS[command](failure.base), failure.shown
    else:
        args, shown = LEDGER_COMMANDS[command], f"{failure.shown}ledger/"
        failure.env["SCALABLE_RUNS_DIR_REMOTE"] = f"{failure.base}ledger/"
    result = invoke(cli, monkeypatch, args, failure.env)
    assert_one_line(result, shown, failure.secrets)
    for secret in failure.secrets:
        assert files_holding(workspace, secret) == []


def test_the_messages_say_what_went_wrong(
    workspace: Path, cli: CliInvoker, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Each failure is named for what it is, with what to do."""
    expected = {
        "no credentials": "no valid credentials (Unable to locate credentials); set AWS_ACCESS_KEY_ID",
        "secret with / refused": "no valid credentials (The AWS Access Key Id you provided does not exist",
        "access denied": "permission denied",
        "endpoint refused": "cannot reach 's3://some-bucket/': Could not connect to the endpoint URL",
        "bucket missing": "does not exist; create it or fix the URI",
        "gcs bucket missing": "does not exist; create it or fix the URI",
        "invalid bucket name": "is not a valid s3 location (Parameter validation failed: Invalid bucket name",
        "secret with /, bucket missing": "does not exist; create it or fix the URI",
    }
    for case, text in expected.items():
        failure = CASES[case](request)
        with monkeypatch.context() as patched:
            result = invoke(cli, patched, ARTIFACT_COMMANDS["artifacts ls"](failure.base), failure.env)
        assert text in result.stderr, (case, result.stderr)


def test_debug_shows_the_traceback(
    workspace: Path, cli: CliInvoker, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """With --debug the mapped error is raised, its backend cause attached, instead of one line."""
    from scalable.errors import StoreCredentialsError

    failure = _no_credentials(request)
    with pytest.raises(StoreCredentialsError) as info:
        invoke(cli, monkeypatch, ["--debug", *ARTIFACT_COMMANDS["artifacts ls"](failure.base)], failure.env)
    assert type(info.value.__cause__).__name__ == "NoCredentialsError"


def test_a_secret_with_a_slash_works_and_appears_nowhere(
    workspace: Path, cli: CliInvoker, monkeypatch: pytest.MonkeyPatch, s3_bucket: tuple[str, dict[str, Any]]
) -> None:
    """s3://KEY:SE/CRET@bucket/ is parsed: put, ls, exists, get and a remote ledger work; the secret is in no output, log or event."""
    bucket, _ = s3_bucket
    base = f"s3://{UNKNOWN_KEY}:{SECRET}@{bucket}/"
    env: dict[str, str | None] = {"SCALABLE_LOG_LEVEL": "debug", "SCALABLE_RUNS_DIR_REMOTE": f"{base}ledger/"}
    outputs = []
    for args in [*(make(base) for make in ARTIFACT_COMMANDS.values()), ["ledger", "sync"], ["ledger", "compact"]]:
        result = invoke(cli, monkeypatch, args, env)
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout + result.stderr)
    assert Path("got.txt").read_text() == "some data\n"
    assert f"s3://{bucket}/data.txt" in outputs[0]
    runs = invoke(cli, monkeypatch, ["ledger", "query", "SELECT location, store FROM artifacts"], env)
    assert f"s3://{bucket}/data.txt" in runs.stdout
    for text in [*outputs, runs.stdout, runs.stderr]:
        assert SECRET not in text and UNKNOWN_KEY not in text
    assert files_holding(workspace, SECRET) == []


# --- permission denied, as a user who is not root ---------------------------------------------


def _as_nobody() -> None:
    os.setgid(65534)
    os.setuid(65534)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (the test's own temporary directory is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="scalable-nobody-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def _child_env(cwd: Path) -> dict[str, str]:
    """The environment of a child run as ``nobody``: this checkout and its installed packages importable."""
    import sysconfig

    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCALABLE_")}
    clean.update(HOME=str(cwd), PYTHONPATH=os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]]))
    return clean


@functools.cache
def _python_for_nobody() -> str | None:
    """An interpreter of this Python version that ``nobody`` may run (this one may live under /root)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in dict.fromkeys([sys.executable, shutil.which(version), f"/usr/bin/{version}"]):
        if not candidate or not Path(candidate).exists():
            continue
        try:
            probe = subprocess.run(
                [candidate, "-c", "import scalable.cli"],
                cwd="/",
                env=_child_env(Path("/")),
                preexec_fn=_as_nobody,
                capture_output=True,
                check=False,
            )
        except PermissionError:  # an interpreter under a directory only root may enter
            continue
        if probe.returncode == 0:
            return candidate
    return None


def run_as_nobody(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``scalable ARGS`` as the user ``nobody`` in ``cwd``."""
    python = _python_for_nobody()
    assert python is not None
    clean = _child_env(cwd)
    clean.update(env or {})
    return subprocess.run(
        [python, "-m", "scalable", *args],
        cwd=cwd,
        env=clean,
        preexec_fn=_as_nobody,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to the user nobody needs root")
def test_permission_denied_as_another_user_is_one_line(shared_dir: Path) -> None:
    """A store and a ledger nobody may read: every command prints one line naming the path and exits 2."""
    if _python_for_nobody() is None:
        pytest.skip(f"no python{sys.version_info.major}.{sys.version_info.minor} the user nobody may run")
    (shared_dir / "locked-ledger").mkdir()
    store = shared_dir / "locked-store"
    store.mkdir()
    (store / "data.txt").write_text("secret data\n")
    runs = shared_dir / "locked-runs"
    with Ledger.open(runs, shared_dir / "locked-ledger") as led:
        led.append({"event_type": "run", "op": "started", "run_id": "run-1"})
        led.finish_run("run-1")
    for path in (store, runs, shared_dir / "locked-ledger"):
        path.chmod(0o700)
    (shared_dir / "data.txt").write_text("some data\n")
    (shared_dir / "data.txt").chmod(0o644)
    work = shared_dir / "work"
    work.mkdir()
    work.chmod(0o777)
    (work / "data.txt").write_text("some data\n")
    (work / "data.txt").chmod(0o644)
    before = sorted(p.name for p in store.iterdir())
    for command in ARTIFACT_COMMANDS.values():
        proc = run_as_nobody(work, *command(f"{store}/"))
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert str(store) in lines[0] and "permission denied" in lines[0], lines[0]
    env = {"SCALABLE_RUNS_DIR": str(runs), "SCALABLE_LEDGER_DIR": str(shared_dir / "locked-ledger")}
    for args in LEDGER_COMMANDS.values():
        proc = run_as_nobody(work, *args, env=env)
        lines = proc.stderr.splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
        assert str(runs) in lines[0] and "permission denied" in lines[0], lines[0]
    assert sorted(p.name for p in store.iterdir()) == before
    assert not (work / ".scalable").exists()


# --- a file where a directory must be ----------------------------------------------------------


@pytest.mark.parametrize("command", list(ARTIFACT_COMMANDS))
def test_a_store_root_that_is_a_file_is_one_line(command: str, workspace: Path, cli: CliInvoker) -> None:
    """A store whose root is a file: each artifacts command names it and exits 2."""
    Path("blocker").write_text("a file\n")
    result = cli(*ARTIFACT_COMMANDS[command](f"{workspace}/blocker/"))
    assert_one_line(result, f"{workspace}/blocker")
    assert Path("blocker").read_text() == "a file\n"


@pytest.mark.parametrize("variable", ["SCALABLE_RUNS_DIR", "SCALABLE_LEDGER_DIR", "SCALABLE_CACHE_DIR"])
@pytest.mark.parametrize("command", list(LEDGER_COMMANDS))
def test_a_directory_setting_that_is_a_file_is_one_line(
    variable: str, command: str, workspace: Path, cli: CliInvoker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory variable pointing at a file (or below one): each ledger command names it and exits 2."""
    Path("blocker").write_text("a file\n")
    for value in ("blocker", "blocker/below"):
        result = invoke(cli, monkeypatch, LEDGER_COMMANDS[command], {variable: str(workspace / value)})
        assert_one_line(result, f"{variable}='{workspace / value}'")
        assert "not a directory" in result.stderr
    assert Path("blocker").read_text() == "a file\n"


@pytest.mark.parametrize("command", list(LEDGER_COMMANDS))
def test_a_remote_ledger_under_a_file_is_one_line(
    command: str, workspace: Path, cli: CliInvoker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SCALABLE_RUNS_DIR_REMOTE naming a path under a file: each ledger command names it and exits 2."""
    Path("blocker").write_text("a file\n")
    remote = f"file://{workspace}/blocker/ledger"
    result = invoke(cli, monkeypatch, LEDGER_COMMANDS[command], {"SCALABLE_RUNS_DIR_REMOTE": remote})
    assert_one_line(result, f"{workspace}/blocker")


# --- artifacts a ledger points at, on storage that fails ---------------------------------------


@pytest.fixture
def stored_on_s3(
    workspace: Path, cli: CliInvoker, s3_bucket: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> str:
    """Twelve artifacts put on the S3 server under one run; returns the bucket."""
    bucket = s3_bucket[0]
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    for i in range(12):
        Path(f"part-{i}.txt").write_text(f"part {i}\n")
        assert cli("artifacts", "put", f"part-{i}.txt", f"s3://{bucket}/parts/part-{i}.txt").exit_code == 0
    return bucket


@pytest.mark.parametrize("command", [["ledger", "audit"], ["ledger", "replay", "RUN", "--into", "restored"]])
@pytest.mark.parametrize("case", ["no credentials", "endpoint refused"])
def test_audit_and_replay_of_artifacts_on_a_store_that_fails_stop_with_one_line(
    case: str,
    command: list[str],
    stored_on_s3: str,
    cli: CliInvoker,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    """Artifacts recorded on S3, then no credentials or no endpoint: audit and replay stop at once, one line, exit 2."""
    run_id = json.loads(cli("ledger", "runs", "--format", "json").stdout)[-1]["run_id"]
    env = {"no credentials": _no_credentials, "endpoint refused": _endpoint_refused}[case](request).env
    args = [run_id if arg == "RUN" else arg for arg in command]
    result = invoke(cli, monkeypatch, args, env)
    assert_one_line(result, f"s3://{stored_on_s3}/parts/part-")
    assert not Path("restored").exists() or not any(Path("restored").rglob("*.txt"))


def test_audit_of_artifacts_whose_bucket_is_gone_reports_them_missing(
    stored_on_s3: str, cli: CliInvoker, s3_bucket: tuple[str, dict[str, Any]]
) -> None:
    """A bucket deleted after the puts is a finding, not a failure: every artifact is content-missing, exit 1."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_bucket[1], skip_instance_cache=True)
    fs.rm(stored_on_s3, recursive=True)
    forget_object_store_clients()
    result = cli("ledger", "audit", "--format", "json")
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["by_kind"] == {"content-missing": 12}
