"""build_artifact_store: backends chosen by URI scheme, lazily, with named errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scalable.errors import ConfigError, MissingDependencyError, UnsupportedSchemeError
from scalable.stores import FsspecArtifactStore, LocalArtifactStore, build_artifact_store


@pytest.mark.parametrize("uri", ["./artifacts", "artifacts", "artifacts/"])
def test_relative_paths_are_local(uri: str, isolated: Path) -> None:
    """Relative paths give a local store rooted under the current directory."""
    store = build_artifact_store(uri)
    assert isinstance(store, LocalArtifactStore)
    assert store.root == isolated / "artifacts"


def test_absolute_home_and_file_uri_are_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Absolute paths, ~ paths and file:// URIs give a local store at that directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert build_artifact_store(str(tmp_path / "abs")).root == tmp_path / "abs"  # type: ignore[attr-defined]
    assert build_artifact_store("~/x").root == tmp_path / "home" / "x"  # type: ignore[attr-defined]
    assert build_artifact_store((tmp_path / "u").as_uri()).root == tmp_path / "u"  # type: ignore[attr-defined]
    assert build_artifact_store(tmp_path / "p").root == tmp_path / "p"  # type: ignore[attr-defined]


def test_memory_is_fsspec() -> None:
    """memory:// gives the fsspec store with the memory scheme."""
    store = build_artifact_store("memory://bucket/x/")
    assert isinstance(store, FsspecArtifactStore)
    assert store.scheme == "memory"
    assert store.base_uri == "memory:///bucket/x/"


def test_unknown_scheme_names_itself_and_the_known_ones() -> None:
    """An unknown scheme raises UnsupportedSchemeError naming it and listing s3, gs, file."""
    with pytest.raises(UnsupportedSchemeError, match="'nosuch'") as info:
        build_artifact_store("nosuch://bucket/x")
    assert isinstance(info.value, ValueError)
    for known in ("s3", "gs", "file", "memory"):
        assert known in str(info.value)


def test_missing_optional_package_says_what_to_install() -> None:
    """A backend whose package is absent raises MissingDependencyError with the pip hint."""
    with pytest.raises(MissingDependencyError, match=r"pip install 'scalable\[cloud\]'"):
        build_artifact_store("abfs://container/x/")


def test_empty_uri_is_refused() -> None:
    """An empty URI raises ConfigError."""
    with pytest.raises(ConfigError, match="empty"):
        build_artifact_store("")


def test_storage_options_for_local_path_are_refused(tmp_path: Path) -> None:
    """Storage options given for a local path raise ConfigError naming them."""
    with pytest.raises(ConfigError, match="endpoint_url"):
        build_artifact_store(tmp_path, endpoint_url="http://x")


def test_credentials_never_reach_events_logs_or_errors(
    s3_bucket: tuple[str, dict[str, Any]],
    tmp_path: Path,
    captured: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Credentials in a URI are used but masked in base_uri, refs, events and error messages."""
    bucket, options = s3_bucket
    store = build_artifact_store(f"s3://AKIDEXAMPLE:SuperSecret123@{bucket}/x/", **options)
    assert "SuperSecret123" not in store.base_uri
    src = tmp_path / "f"
    src.write_text("data")
    ref = store.put(src, "f")
    store.get("f", tmp_path / "g")
    with pytest.raises(FileNotFoundError) as info:
        store.get("missing", tmp_path / "h")
    assert "SuperSecret123" not in str(info.value)
    assert "SuperSecret123" not in ref.uri
    assert "SuperSecret123" not in json.dumps(captured)
    out, err = capsys.readouterr()
    assert "SuperSecret123" not in out + err
    from scalable.ledger import bus

    assert "SuperSecret123" not in bus.active().stream_path(captured[0]["run_id"]).read_text()


def test_import_scalable_loads_no_cloud_backend() -> None:
    """import scalable (and scalable.artifacts) imports neither s3fs nor gcsfs."""
    code = "import sys, scalable, scalable.artifacts; print([m for m in ('s3fs', 'gcsfs', 'dask', 'duckdb') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_artifacts_import_path_is_the_same_objects() -> None:
    """scalable.artifacts re-exports the very objects of scalable.stores, and scalable exports the factory."""
    import scalable
    import scalable.artifacts as a
    import scalable.stores as s

    for name in s.__all__:
        assert getattr(a, name) is getattr(s, name)
    assert scalable.build_artifact_store is s.build_artifact_store
