"""Real S3 and GCS servers on 127.0.0.1 for the tests, as pytest fixtures.

The servers themselves start in :mod:`tools.local_servers`, which the benches share. Register
with ``pytest_plugins = ["tests.servers"]`` (tests/conftest.py does). Fixtures:

- ``s3_server`` (session): the endpoint URL of a moto server; while it runs, the process
  environment points boto/s3fs at it (dummy credentials, ``AWS_ENDPOINT_URL``), so plain
  ``s3://bucket/...`` URIs reach it.
- ``gcs_server`` (session): the endpoint URL of an in-memory GCS emulator;
  ``STORAGE_EMULATOR_HOST`` points gcsfs at it, and fsspec's config gives gcsfs
  ``token="anon"``, so plain ``gs://bucket/...`` URIs reach it.
- ``gcs_strict_server`` (session): the endpoint URL of fake-gcs-server, which honours
  ``ifGenerationMatch=0`` (put-if-absent): commit protocols are tested against it.
- ``s3_bucket`` / ``gcs_bucket`` / ``gcs_strict_bucket`` (per test): ``(bucket_name,
  storage_options)`` of a fresh, empty bucket with a unique name; pass the options to
  ``build_artifact_store`` or ``fsspec.filesystem``. ``gcs_strict_bucket`` also points
  ``STORAGE_EMULATOR_HOST`` at fake-gcs-server for the test, so plain ``gs://`` URIs (and
  child processes given the environment) reach it.
- ``s3_auth_server`` (session): a second moto server, in its own process, that checks
  credentials as S3 does: an unknown access key is refused, and the user it holds (allowed
  nothing) is denied every call on its one bucket.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tools import local_servers
from tools.local_servers import create_gcs_bucket, create_s3_bucket, gcs_options, s3_options

__all__ = [
    "AuthServer",
    "create_gcs_bucket",
    "create_s3_bucket",
    "gcs_bucket",
    "gcs_server",
    "gcs_strict_bucket",
    "gcs_strict_server",
    "s3_auth_server",
    "s3_bucket",
    "s3_server",
]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Start moto's S3 server on a free loopback port for the session; yield its URL."""
    from tests.conftest import forget_object_store_clients

    with local_servers.s3_server() as url:
        forget_object_store_clients()  # a client an earlier pytest run in this process made reaches its stopped server
        yield url


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[str]:
    """Start gcp-storage-emulator in memory on a free loopback port; yield its URL."""
    from tests.conftest import forget_object_store_clients

    with local_servers.gcs_server() as url:
        forget_object_store_clients()  # a client an earlier pytest run in this process made reaches its stopped server
        yield url


@pytest.fixture(scope="session")
def gcs_strict_server() -> Iterator[str]:
    """Start fake-gcs-server in memory on a free loopback port; yield its URL."""
    with local_servers.gcs_strict_server() as url:
        yield url


@pytest.fixture
def s3_bucket(s3_server: str) -> tuple[str, dict[str, Any]]:
    """A fresh, empty S3 bucket: ``(name, storage_options)`` for s3fs / build_artifact_store."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    create_s3_bucket(s3_server, name)
    return name, s3_options(s3_server)


@pytest.fixture
def gcs_bucket(gcs_server: str) -> tuple[str, dict[str, Any]]:
    """A fresh, empty GCS bucket: ``(name, storage_options)`` for gcsfs / build_artifact_store."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    create_gcs_bucket(gcs_server, name)
    return name, gcs_options(gcs_server)


@pytest.fixture
def gcs_strict_bucket(gcs_strict_server: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, Any]]:
    """A fresh bucket on fake-gcs-server, with ``STORAGE_EMULATOR_HOST`` pointing there for the test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    create_gcs_bucket(gcs_strict_server, name)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_strict_server)
    return name, gcs_options(gcs_strict_server)


@dataclass(frozen=True)
class AuthServer:
    """A moto S3 server that checks credentials: its endpoint, its bucket, and a user allowed nothing."""

    endpoint: str
    bucket: str
    key: str
    secret: str


@pytest.fixture(scope="session")
def s3_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """Start ``moto_server`` with authentication on; create a bucket and a user with no policy.

    moto checks credentials once its first ``INITIAL_NO_AUTH_ACTION_COUNT`` requests are
    served: those three create the user, its access key and the bucket.
    """
    import boto3

    port = local_servers.free_port()
    log = tmp_path_factory.mktemp("moto-auth") / "server.log"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()}") from None
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        admin = {"endpoint_url": endpoint, "aws_access_key_id": "admin", "aws_secret_access_key": "admin"}
        iam = boto3.client("iam", region_name="us-east-1", **admin)
        iam.create_user(UserName="nobody-allowed")
        key = iam.create_access_key(UserName="nobody-allowed")["AccessKey"]
        bucket = f"locked-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", region_name="us-east-1", **admin).create_bucket(Bucket=bucket)
        yield AuthServer(endpoint, bucket, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
