"""Adding a store backend: a toy scheme through the public registry, the factory, the CLI and entry points."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scalable.errors import ConfigError, MissingDependencyError, UnsupportedSchemeError
from scalable.stores import (
    BaseArtifactStore,
    FsspecArtifactStore,
    LocalArtifactStore,
    build_artifact_store,
    known_stores,
    register_store,
    unregister_store,
)
from tests.conftest import CliInvoker
from tests.helpers import ROOT, child_env
from tests.stores.contract import StoreContract
from tests.stores.toy import ToyStore


@pytest.fixture
def toy() -> Iterator[str]:
    """The ``toy`` scheme, registered for the test and forgotten after it."""
    register_store("toy", ToyStore)
    try:
        yield "toy"
    finally:
        unregister_store("toy")


class TestToyStore(StoreContract):
    """The whole store contract holds for a backend that implements only the primitives.

    Its objects are flat files named by the whole quoted key, so a whole key (and its
    sidecar's) must fit one file name: its long segments are shorter.
    """

    long_segments = ("s" * 200,)

    @pytest.fixture
    def store(self, toy: str, tmp_path: Path) -> BaseArtifactStore:
        """A toy store built by the factory from its URI."""
        store = build_artifact_store(f"{toy}://{tmp_path}/objects/")
        assert isinstance(store, ToyStore)
        return store


def test_a_registered_scheme_serves_put_get_exists_and_list(
    toy: str, tmp_path: Path, captured: list[dict[str, Any]]
) -> None:
    """build_artifact_store('toy://...') gives the toy backend; put/get/exists/list_artifacts work and publish events."""
    store = build_artifact_store(f"toy://{tmp_path}/shelf/")
    src = tmp_path / "out.csv"
    src.write_text("a,b\n1,2\n")
    ref = store.put(src, "runs/r1/out.csv")
    assert ref.uri == f"toy://{tmp_path}/shelf/runs/r1/out.csv"
    assert ref.digest == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert store.exists("runs/r1/out.csv") and not store.exists("runs/r2/out.csv")
    assert store.list_artifacts("runs/") == ["runs/r1/out.csv"]
    assert Path(store.get("runs/r1/out.csv", tmp_path / "back.csv", verify=True)).read_text() == "a,b\n1,2\n"
    assert sorted(p.name for p in (tmp_path / "shelf").iterdir()) == [
        ".scalable-meta%2Fruns%2Fr1%2Fout.csv.json",
        "runs%2Fr1%2Fout.csv",
    ]
    assert [(e["op"], e["store"]) for e in captured] == [
        ("put", f"toy://{tmp_path}/shelf/"),
        ("get", f"toy://{tmp_path}/shelf/"),
    ]


def test_the_cli_puts_and_lists_through_a_registered_scheme(toy: str, cli: CliInvoker, isolated: Path) -> None:
    """scalable artifacts put/ls/get reach a scheme registered in the process."""
    Path("out.csv").write_text("a,b\n")
    put = cli("artifacts", "put", "out.csv", f"toy://{isolated}/shelf/out.csv", "--format", "json")
    assert put.exit_code == 0, put.output
    (row,) = json.loads(put.stdout)
    assert row["uri"] == f"toy://{isolated}/shelf/out.csv" and row["size_bytes"] == 4
    ls = cli("artifacts", "ls", f"toy://{isolated}/shelf/", "--format", "json")
    assert json.loads(ls.stdout) == [
        {"key": "out.csv", "size_bytes": 4, "digest": row["digest"], "uri": f"toy://{isolated}/shelf/out.csv"}
    ]
    get = cli("artifacts", "get", f"toy://{isolated}/shelf/out.csv", "back.csv", "--verify")
    assert get.exit_code == 0 and Path("back.csv").read_text() == "a,b\n"


def test_the_table_knows_built_in_and_registered_schemes(toy: str) -> None:
    """known_stores lists the built-in schemes and the registered one; unregistering removes it."""
    known = known_stores()
    assert {"file", "local", "memory", "s3", "s3a", "gs", "gcs", "toy"} <= set(known)
    assert known["toy"].target is ToyStore
    assert known["s3"].target == "scalable.stores.fsspec_store:FsspecArtifactStore"
    assert isinstance(build_artifact_store("memory://x/"), FsspecArtifactStore)
    assert isinstance(build_artifact_store("file:///tmp/x"), LocalArtifactStore)


def test_registering_is_checked(toy: str) -> None:
    """A bad scheme, a class that is no store, a malformed path or a taken scheme are refused by name."""
    with pytest.raises(ConfigError, match="'no such'"):
        register_store("no such", ToyStore)
    with pytest.raises(ConfigError, match="not a BaseArtifactStore subclass"):
        register_store("dicts", dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"package\.module:Class"):
        register_store("dotted", "tests.stores.toy.ToyStore")
    with pytest.raises(ConfigError, match=r"'toy' is served by .* already; pass replace=True"):
        register_store("toy", "tests.stores.toy:Other")
    register_store("TOY", ToyStore)  # the same backend again (schemes are case-insensitive): nothing to do
    register_store("toy", LocalArtifactStore, replace=True)
    assert known_stores()["toy"].target is LocalArtifactStore
    with pytest.raises(ConfigError, match="no store backend is registered for 'never'"):
        unregister_store("never")


def test_a_backend_that_cannot_be_imported_names_what_to_install() -> None:
    """A registered path whose module is missing gives MissingDependencyError with the hint; a wrong class, ConfigError."""
    register_store("gone", "scalable_gone_backend.store:GoneStore", hint="pip install scalable-gone")
    register_store("wrong", "tests.stores.toy:NoSuchClass")
    try:
        with pytest.raises(
            MissingDependencyError, match=r"'gone' store needs 'scalable_gone_backend.store'.*pip install scalable-gone"
        ):
            build_artifact_store("gone://x/")
        with pytest.raises(ConfigError, match=r"'wrong' store.*not a BaseArtifactStore subclass"):
            build_artifact_store("wrong://x/")
    finally:
        unregister_store("gone")
        unregister_store("wrong")


def test_an_unknown_scheme_lists_registered_ones_and_says_how_to_add_one(toy: str) -> None:
    """The unknown-scheme error lists the registered toy scheme and names register_store."""
    with pytest.raises(UnsupportedSchemeError, match="'nosuch'") as info:
        build_artifact_store("nosuch://x/")
    assert "toy" in str(info.value) and "register_store" in str(info.value)


def test_an_installed_package_adds_a_scheme_through_an_entry_point(tmp_path: Path) -> None:
    """A distribution declaring a scalable.stores entry point serves its scheme in the CLI, imported only on use."""
    site = tmp_path / "site"
    info = site / "toy_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[scalable.stores]\ntoy = tests.stores.toy:ToyStore\n")
    env = child_env(PYTHONPATH=f"{site}:{ROOT}")
    (tmp_path / "f.txt").write_text("hello\n")
    shelf = f"toy://{tmp_path}/shelf"

    def scalable(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "scalable", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    put = scalable("artifacts", "put", "f.txt", f"{shelf}/f.txt", "--format", "json")
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)[0]["uri"] == f"{shelf}/f.txt"
    ls = scalable("artifacts", "ls", f"{shelf}/", "--format", "jsonl")
    assert [json.loads(line)["key"] for line in ls.stdout.splitlines()] == ["f.txt"]
    lazy = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, scalable.stores as s\n"
            "assert 'tests.stores.toy' not in sys.modules\n"
            "assert s.known_stores()['toy'].hint == 'pip install toy-plugin'\n"
            f"print(type(s.build_artifact_store({shelf + '/'!r})).__module__)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert lazy.returncode == 0, lazy.stderr
    assert lazy.stdout.strip() == "tests.stores.toy"
