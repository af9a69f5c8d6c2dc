"""scalable.yaml schema v1: valid manifests, every kind of error, the lock, and the CLI check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalable.errors import ManifestError, ManifestNotFoundError
from scalable.manifest import load_manifest, parse_manifest

GOOD = """\
version: 1
project:
  name: demo
  default_storage: ./store
  local_cache: ./cache
targets:
  local: {provider: local, max_workers: 2}
  cluster:
    provider: dask
    n_workers: 2
    threads_per_worker: 1
    processes: true
  remote: {provider: dask, address: "tcp://127.0.0.1:8786"}
components:
  prep: {description: clean the data}
  model: {}
tasks:
  clean: prep
  fit: {component: model}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_good_manifest_parses_every_section(isolated: Path) -> None:
    """A complete manifest gives its project, targets, components and task-to-component map."""
    m = load_manifest(write(isolated / "scalable.yaml", GOOD))
    assert m.project.name == "demo"
    assert m.project.default_storage == "./store"
    assert m.target("cluster").provider == "dask"
    assert dict(m.target("cluster").options) == {"n_workers": 2, "threads_per_worker": 1, "processes": True}
    assert m.target("remote").options["address"] == "tcp://127.0.0.1:8786"
    assert m.target().name == "local"
    assert m.component_of("clean") == "prep"
    assert m.component_of("fit") == "model"
    assert m.component_of("other") is None
    assert len(m.lock) == 64


def test_default_path_is_scalable_yaml_then_env(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a path the manifest is SCALABLE_MANIFEST, else ./scalable.yaml."""
    write(isolated / "scalable.yaml", GOOD)
    assert load_manifest().project.name == "demo"
    other = write(isolated / "other.yaml", GOOD.replace("name: demo", "name: other"))
    monkeypatch.setenv("SCALABLE_MANIFEST", str(other))
    assert load_manifest().project.name == "other"


def test_lock_ignores_formatting_but_not_content() -> None:
    """The lock is the same for reformatted YAML and changes when a value changes."""
    a = parse_manifest("version: 1\nproject: {name: x}\n")
    b = parse_manifest("# comment\nproject:\n  name: x\nversion: 1\n")
    c = parse_manifest("version: 1\nproject: {name: y}\n")
    assert a.lock == b.lock
    assert a.lock != c.lock


def test_first_target_is_default_when_no_local(isolated: Path) -> None:
    """Without a target named local, the first target is the default."""
    m = parse_manifest("version: 1\nproject: {name: x}\ntargets:\n  c: {provider: dask}\n")
    assert m.target().name == "c"


def test_missing_file_is_a_not_found_manifest_error(isolated: Path) -> None:
    """A missing manifest names the path and is also a FileNotFoundError."""
    with pytest.raises(ManifestNotFoundError, match=r"nope\.yaml.*SCALABLE_MANIFEST"):
        load_manifest(isolated / "nope.yaml")
    with pytest.raises(FileNotFoundError):
        load_manifest(isolated / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("version: 1\nproject: {name: x\n", r"scalable\.yaml:\d+: invalid YAML"),
        ("version: 2\nproject: {name: x}\n", r"scalable\.yaml:1: version: unsupported version 2"),
        ("project: {name: x}\n", r"version: missing"),
        ("version: 1\n", r"project: missing"),
        ("version: 1\nproject: {name: x}\nextras: 1\n", r":3: extras: unknown key 'extras'"),
        ("version: 1\nproject:\n  name: x\n  colour: red\n", r":4: project\.colour: unknown key"),
        (
            "version: 1\nproject: {name: x}\ntargets:\n  k:\n    provider: k8s\n",
            r":5: targets\.k\.provider: unknown provider 'k8s'; use one of: local, dask",
        ),
        (
            "version: 1\nproject: {name: x}\ntargets:\n  l:\n    provider: local\n    max_workers: two\n",
            r":6: targets\.l\.max_workers: must be int",
        ),
        (
            "version: 1\nproject: {name: x}\ntargets:\n  d: {provider: dask, address: 'tcp://h:1', n_workers: 2}\n",
            r"targets\.d\.n_workers: applies to a cluster",
        ),
        (
            "version: 1\nproject: {name: x}\ncomponents: {a: {}}\ntasks:\n  t: b\n",
            r":5: tasks\.t: unknown component 'b'; known components: a",
        ),
        (
            "version: 1\nproject: {name: x}\ntasks:\n  t: {component: b}\n",
            r"tasks\.t\.component: unknown component 'b'; known components: none defined",
        ),
        ("version: 1\nproject: {name: x}\nproject: {name: y}\n", r":3: project: duplicate key"),
        ("- 1\n- 2\n", r"a manifest is a mapping"),
    ],
)
def test_schema_errors_name_file_line_and_key(isolated: Path, text: str, pattern: str) -> None:
    """Each schema violation is a ManifestError naming the file, the line and the key path."""
    path = write(isolated / "scalable.yaml", text)
    with pytest.raises(ManifestError, match=pattern) as info:
        load_manifest(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_target_lists_known_ones(isolated: Path) -> None:
    """Asking for an unknown target names the known ones (local is always known)."""
    m = load_manifest(write(isolated / "scalable.yaml", GOOD))
    with pytest.raises(ManifestError, match=r"unknown target 'gpu'; known targets: cluster, local, remote"):
        m.target("gpu")


def test_cli_check_prints_targets_and_lock(isolated: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """`scalable manifest check` prints one row per target with the manifest lock."""
    path = write(isolated / "scalable.yaml", GOOD)
    result = cli("manifest", "check", str(path), "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["target"] for r in rows] == ["local", "cluster", "remote"]
    assert {r["lock"] for r in rows} == {load_manifest(path).lock}


def test_cli_bad_manifest_exits_2_with_one_line(isolated: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """A bad manifest makes the CLI exit 2 with one line on stderr naming file and key."""
    write(isolated / "scalable.yaml", "version: 1\nproject: {name: x}\ntargets: {k: {provider: k8s}}\n")
    result = cli("manifest", "check")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "scalable.yaml:3: targets.k.provider: unknown provider 'k8s'" in lines[0]
    missing = cli("manifest", "check", "absent.yaml")
    assert missing.exit_code == 2
    assert "absent.yaml" in missing.stderr
