"""The Usage example of the artifact-store reference document, run verbatim on real servers.

Its S3 and GCS lines name ``my-bucket`` with no endpoint: the session's servers are reached
through the standard environment (``AWS_ENDPOINT_URL``, ``STORAGE_EMULATOR_HOST``) that the
``s3_server`` and ``gcs_server`` fixtures set, so the text runs unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.servers import create_gcs_bucket, create_s3_bucket

# Verbatim from the "Usage" section of the artifact-store reference document.
REFERENCE_USAGE = """
from scalable.artifacts import build_artifact_store

# Local storage
store = build_artifact_store("./artifacts")
ref = store.put("output.csv", "runs/run-001/output.csv")
print(ref.uri, ref.digest, ref.size_bytes)

# S3 storage (requires scalable[cloud])
store = build_artifact_store("s3://my-bucket/artifacts/")
ref = store.put("model_output/", "runs/run-001/model_output")

# GCS storage
store = build_artifact_store("gs://my-bucket/artifacts/")
"""

REFERENCE_OVERVIEW = [
    "scalable.artifacts.base.ArtifactStore",
    "scalable.artifacts.local.LocalArtifactStore",
    "scalable.artifacts.fsspec_store.FsspecArtifactStore",
    "scalable.artifacts.factory.build_artifact_store",
]


@pytest.fixture
def my_bucket(s3_server: str, gcs_server: str) -> str:
    """``my-bucket`` exists, empty of the example's keys, on both servers."""
    for create, endpoint in ((create_s3_bucket, s3_server), (create_gcs_bucket, gcs_server)):
        create(endpoint, "my-bucket", exist_ok=True)
    return "my-bucket"


def test_reference_usage_runs_verbatim(my_bucket: str, isolated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The reference document's Usage block runs as written: local put, S3 directory put, GCS store."""
    Path("output.csv").write_text("a,b\n1,2\n")
    (Path("model_output") / "weights").mkdir(parents=True)
    Path("model_output/weights/layer0.bin").write_bytes(b"\x00" * 100)
    Path("model_output/config.json").write_text("{}")
    namespace: dict[str, Any] = {}
    exec(compile(REFERENCE_USAGE, "artifacts reference: Usage", "exec"), namespace)

    printed = capsys.readouterr().out.split()
    assert printed[0] == (isolated / "artifacts" / "runs" / "run-001" / "output.csv").as_uri()
    assert printed[1] == hashlib.sha256(b"a,b\n1,2\n").hexdigest()
    assert printed[2] == "8"
    assert (isolated / "artifacts/runs/run-001/output.csv").read_text() == "a,b\n1,2\n"

    ref = namespace["ref"]
    assert ref.uri == "s3://my-bucket/artifacts/runs/run-001/model_output"
    assert ref.size_bytes == 102

    from scalable.artifacts import build_artifact_store

    s3 = build_artifact_store("s3://my-bucket/artifacts/")
    assert s3.list_artifacts("runs/run-001/") == [
        "runs/run-001/model_output/config.json",
        "runs/run-001/model_output/weights/layer0.bin",
    ]
    gcs = namespace["store"]
    assert gcs.base_uri == "gs://my-bucket/artifacts/"
    gcs_ref = gcs.put("model_output/", "runs/run-001/model_output")
    assert gcs_ref.digest == ref.digest  # equal trees, equal digests, on every backend


@pytest.mark.parametrize("dotted", REFERENCE_OVERVIEW)
def test_reference_overview_names_import(dotted: str) -> None:
    """Every object the reference document's Overview names imports from its documented module."""
    import importlib

    module, _, name = dotted.rpartition(".")
    obj = getattr(importlib.import_module(module), name)
    stores_obj = getattr(importlib.import_module("scalable.stores"), name)
    assert obj is stores_obj
