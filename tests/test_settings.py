"""Settings: precedence argument > environment > manifest > default, and bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalable.errors import ConfigError
from scalable.settings import ENV_VARS, FsyncMode, load_settings


def test_defaults_live_under_dot_scalable(isolated: Path) -> None:
    """With nothing set, every directory is under .scalable in the working directory."""
    s = load_settings(env={})
    assert s.runs_dir == isolated / ".scalable/runs"
    assert s.ledger_dir == isolated / ".scalable/ledger"
    assert s.cache_dir == isolated / ".scalable/cache"
    assert s.default_storage == str(isolated / ".scalable/artifacts")
    assert s.ledger_fsync is FsyncMode.BATCH and s.telemetry is True


def test_argument_beats_environment_beats_manifest(isolated: Path) -> None:
    """An explicit argument wins over the environment, which wins over the manifest."""
    manifest = {"default_storage": "s3://from-manifest/x/", "local_cache": "mcache"}
    s = load_settings(env={}, manifest_project=manifest, manifest_dir=isolated / "proj")
    assert s.default_storage == "s3://from-manifest/x/"
    assert s.cache_dir == isolated / "proj/mcache"
    env = {"SCALABLE_DEFAULT_STORAGE": "gs://from-env/y/", "SCALABLE_CACHE_DIR": "/tmp/envcache"}
    s = load_settings(env=env, manifest_project=manifest)
    assert (s.default_storage, s.cache_dir) == ("gs://from-env/y/", Path("/tmp/envcache"))
    s = load_settings(env=env, manifest_project=manifest, default_storage="memory://arg/")
    assert s.default_storage == "memory://arg/"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("SCALABLE_TELEMETRY", "maybe"),
        ("SCALABLE_LOG_FORMAT", "xml"),
        ("SCALABLE_LOG_LEVEL", "loud"),
        ("SCALABLE_LEDGER_FSYNC", "sometimes"),
    ],
)
def test_bad_values_name_their_variable(var: str, value: str) -> None:
    """A bad value raises ConfigError (a ValueError) naming the variable and the value."""
    with pytest.raises(ConfigError, match=var) as info:
        load_settings(env={var: value})
    assert value in str(info.value)
    assert isinstance(info.value, ValueError)


def test_secrets_never_show_in_repr() -> None:
    """HMAC keys are kept out of the settings' repr."""
    s = load_settings(env={"SCALABLE_CACHE_HMAC_KEY": "hunter2", "SCALABLE_LEDGER_KEY": "sekrit"})
    assert s.cache_hmac_key == b"hunter2"
    assert "hunter2" not in repr(s) and "sekrit" not in repr(s)


def test_every_documented_variable_is_read() -> None:
    """Each variable in ENV_VARS changes the resolved settings."""
    values = {
        "SCALABLE_MANIFEST": "m.yaml",
        "SCALABLE_TARGET": "t",
        "SCALABLE_DEFAULT_STORAGE": "memory://x/",
        "SCALABLE_RUNS_DIR": "r",
        "SCALABLE_LEDGER_DIR": "l",
        "SCALABLE_RUNS_DIR_REMOTE": "memory://r/",
        "SCALABLE_CACHE_DIR": "c",
        "SCALABLE_CACHE_REMOTE": "memory://c/",
        "SCALABLE_CACHE_HMAC_KEY": "k",
        "SCALABLE_LEDGER_KEY": "lk",
        "SCALABLE_TELEMETRY": "0",
        "SCALABLE_LEDGER_FSYNC": "never",
        "SCALABLE_SNAPSHOT_RETENTION": "5m",
        "SCALABLE_RECORD_ENV": "OMP_NUM_THREADS",
        "SCALABLE_RERUN_OF": "run-1",
        "SCALABLE_LOG_FORMAT": "json",
        "SCALABLE_LOG_LEVEL": "debug",
    }
    assert set(values) == set(ENV_VARS)
    default = load_settings(env={})
    for var, value in values.items():
        assert load_settings(env={var: value}) != default, var


def test_recorded_variables_come_from_the_environment_or_the_manifest() -> None:
    """SCALABLE_RECORD_ENV (comma-separated) wins over project.record_env (a list); bad values are refused by name."""
    assert load_settings(env={}).record_env == ()
    project = {"name": "p", "record_env": ["OMP_NUM_THREADS", "MY_*"]}
    assert load_settings(env={}, manifest_project=project).record_env == ("OMP_NUM_THREADS", "MY_*")
    chosen = load_settings(env={"SCALABLE_RECORD_ENV": " A, B ,,A"}, manifest_project=project)
    assert chosen.record_env == ("A", "B")
    with pytest.raises(ConfigError, match="record_env"):
        load_settings(env={}, manifest_project={"name": "p", "record_env": [1]})


@pytest.mark.parametrize("field", ["runs_dir", "ledger_dir", "cache_dir"])
def test_a_directory_setting_on_a_file_is_refused_by_name(field: str, isolated: Path) -> None:
    """A directory setting naming a file, or a path under one, is refused naming where it came from."""
    Path("notes.txt").write_text("a file\n")
    variable = f"SCALABLE_{field.upper()}"
    with pytest.raises(ConfigError, match=rf"{variable}='notes.txt' is a file, not a directory"):
        load_settings(env={variable: "notes.txt"})
    with pytest.raises(ConfigError, match=rf"{variable}='notes.txt/below' is under '.*notes.txt', a file"):
        load_settings(env={variable: "notes.txt/below"})
    with pytest.raises(ConfigError, match=rf"argument {field}='notes.txt/below' is under"):
        load_settings(env={}, **{field: "notes.txt/below"})
    assert getattr(load_settings(env={variable: "not-yet/made"}), field) == isolated / "not-yet" / "made"
    assert not Path("not-yet").exists()


def test_a_manifest_local_cache_on_a_file_is_refused(isolated: Path) -> None:
    """project.local_cache naming a file is refused as the manifest's value."""
    Path("cache-file").write_text("x")
    with pytest.raises(ConfigError, match=r"manifest project cache_dir='cache-file' is a file"):
        load_settings(env={}, manifest_project={"local_cache": "cache-file"}, manifest_dir=isolated)
