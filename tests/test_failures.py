"""scalable.failures: what each backend's exception means, credentials split out of URIs, and masking."""

from __future__ import annotations

import errno
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalable.errors import (
    ArtifactNotFoundError,
    InvalidStoreURIError,
    ScalableError,
    StoreCredentialsError,
    StoreError,
    StoreNotFoundError,
    StorePermissionError,
    StoreUnreachableError,
)
from scalable.failures import failure_kind, join_userinfo, split_userinfo, storage_error
from scalable.logs import mask_secrets


def _client_error(code: str, message: str = "an error") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": message}}, "GetObject")


def _translated(code: str, builtin: type[OSError]) -> OSError:
    """What s3fs raises: a builtin with botocore's ClientError as its cause."""
    exc = builtin("translated by s3fs")
    exc.__cause__ = _client_error(code)
    return exc


def _botocore(name: str, **kwargs: Any) -> Exception:
    import botocore.exceptions

    cls: Any = getattr(botocore.exceptions, name)
    return cls(**kwargs)  # type: ignore[no-any-return]


def _google(name: str) -> Exception:
    import google.auth.exceptions

    cls: Any = getattr(google.auth.exceptions, name)
    return cls("no usable credentials")  # type: ignore[no-any-return]


def _gcs_http(code: int) -> Exception:
    from gcsfs.retry import HttpError

    return HttpError({"code": code, "message": "from GCS"})


def _aiohttp_refused() -> Exception:
    """What aiohttp raises when nothing listens on the port (a real connection attempt on 127.0.0.1)."""
    import asyncio

    import aiohttp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    async def attempt() -> Exception:
        async with aiohttp.ClientSession() as session:
            try:
                await session.get(f"http://127.0.0.1:{port}/")
            except aiohttp.ClientError as exc:
                return exc
        raise AssertionError("a closed port answered")

    return asyncio.run(attempt())


#: Real exceptions of each library, and what they mean.
CASES: list[tuple[str, Any, str, type[ScalableError]]] = [
    ("botocore no credentials", lambda: _botocore("NoCredentialsError"), "credentials", StoreCredentialsError),
    (
        "botocore partial credentials",
        lambda: _botocore("PartialCredentialsError", provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
        "credentials",
        StoreCredentialsError,
    ),
    (
        "s3 unknown key",
        lambda: _translated("InvalidAccessKeyId", PermissionError),
        "credentials",
        StoreCredentialsError,
    ),
    (
        "s3 bad secret",
        lambda: _translated("SignatureDoesNotMatch", PermissionError),
        "credentials",
        StoreCredentialsError,
    ),
    ("s3 expired token", lambda: _translated("ExpiredToken", PermissionError), "credentials", StoreCredentialsError),
    ("google no credentials", lambda: _google("DefaultCredentialsError"), "credentials", StoreCredentialsError),
    ("google refresh failed", lambda: _google("RefreshError"), "credentials", StoreCredentialsError),
    ("gcs 401", lambda: _gcs_http(401), "credentials", StoreCredentialsError),
    ("s3 access denied", lambda: _translated("AccessDenied", PermissionError), "permission", StorePermissionError),
    ("gcs 403", lambda: OSError("Forbidden: b/locked/o\nno access"), "permission", StorePermissionError),
    (
        "os permission",
        lambda: PermissionError(errno.EACCES, "Permission denied", "/x"),
        "permission",
        StorePermissionError,
    ),
    (
        "botocore endpoint",
        lambda: _botocore("EndpointConnectionError", endpoint_url="http://127.0.0.1:9/b"),
        "unreachable",
        StoreUnreachableError,
    ),
    (
        "botocore connect timeout",
        lambda: _botocore("ConnectTimeoutError", endpoint_url="http://10.255.255.1/b"),
        "unreachable",
        StoreUnreachableError,
    ),
    ("aiohttp refused", _aiohttp_refused, "unreachable", StoreUnreachableError),
    (
        "dns",
        lambda: socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        "unreachable",
        StoreUnreachableError,
    ),
    ("timeout", lambda: TimeoutError("timed out"), "unreachable", StoreUnreachableError),
    ("s3 no such bucket", lambda: _translated("NoSuchBucket", FileNotFoundError), "store-missing", StoreNotFoundError),
    ("s3 no such key", lambda: _translated("NoSuchKey", FileNotFoundError), "not-found", ArtifactNotFoundError),
    (
        "os not found",
        lambda: FileNotFoundError(errno.ENOENT, "No such file or directory", "/x"),
        "not-found",
        ArtifactNotFoundError,
    ),
    (
        "botocore bucket name",
        lambda: _botocore("ParamValidationError", report='Invalid bucket name "Bad_Bucket!"'),
        "invalid",
        InvalidStoreURIError,
    ),
    ("s3 invalid bucket", lambda: _translated("InvalidBucketName", OSError), "invalid", InvalidStoreURIError),
    (
        "a file in the way",
        lambda: NotADirectoryError(errno.ENOTDIR, "Not a directory", "/f/x"),
        "not-a-directory",
        InvalidStoreURIError,
    ),
    ("anything else", lambda: RuntimeError("strange"), "other", StoreError),
]


@pytest.mark.parametrize(("name", "make", "kind", "error"), CASES, ids=[c[0] for c in CASES])
def test_each_backend_failure_maps_to_one_error_of_the_tree(
    name: str, make: Any, kind: str, error: type[ScalableError]
) -> None:
    """The exception (or what it was raised from) is classified, and becomes that error naming the URI."""
    exc = make()
    assert failure_kind(exc) == kind
    mapped = storage_error(exc, "s3://AKIAEXAMPLE:se/cret@bucket/key", action="read")
    assert type(mapped) is error
    assert "s3://***@bucket/key" in str(mapped) and "se/cret" not in str(mapped)
    assert len(str(mapped).splitlines()) == 1


def test_a_scalable_error_is_returned_as_it_is() -> None:
    """An error of the tree needs no mapping."""
    exc = StoreNotFoundError("already named")
    assert storage_error(exc, "s3://b/") is exc


def test_a_write_that_finds_nothing_means_the_bucket_is_missing() -> None:
    """Writing an object cannot find it missing: a 404 on a write names the bucket."""
    mapped = storage_error(FileNotFoundError("b/o"), "gs://bucket/key", action="write")
    assert isinstance(mapped, StoreNotFoundError) and "'bucket' does not exist" in str(mapped)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://AKIA:se/cr+et@bucket/prefix/", ("s3://bucket/prefix/", "AKIA", "se/cr+et")),
        ("s3://AKIA:se%2Fcr%2Bet%40x@bucket/", ("s3://bucket/", "AKIA", "se/cr+et@x")),
        ("s3://AKIA:a:b@bucket/", ("s3://bucket/", "AKIA", "a:b")),
        ("gs://user@bucket/x", ("gs://bucket/x", "user", None)),
        ("s3://bucket/key@with-at", ("s3://bucket/key@with-at", None, None)),
        ("s3://bucket/a:b@c", ("s3://bucket/a:b@c", None, None)),
        ("/local/path", ("/local/path", None, None)),
    ],
)
def test_credentials_are_split_out_of_a_uri(uri: str, expected: tuple[str, str | None, str | None]) -> None:
    """KEY:SECRET@ comes out whole, also a secret holding '/', '+', ':' or percent escapes; keys with '@' stay keys."""
    assert split_userinfo(uri) == expected


_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")


@given(
    key=st.text(_CHARS, min_size=1, max_size=30),
    secret=st.text(_CHARS, min_size=1, max_size=60),
    rest=st.from_regex(r"[a-z0-9][a-z0-9.-]{2,20}(/[A-Za-z0-9._@:-]{1,10}){0,3}/?", fullmatch=True),
)
def test_any_credentials_round_trip_and_are_masked(key: str, secret: str, rest: str) -> None:
    """join_userinfo then split_userinfo gives back any key and secret; mask_secrets hides them in text."""
    uri = join_userinfo(f"s3://{rest}", key, secret)
    assert split_userinfo(uri) == (f"s3://{rest}", key, secret)
    masked = mask_secrets(f"cannot read {uri}: failed")
    assert masked == f"cannot read s3://***@{rest}: failed"


def test_a_raw_secret_with_a_slash_is_masked_in_text() -> None:
    """A secret written as it is (with '/') in a URI inside a message is masked whole."""
    text = "error at s3://AKIAEXAMPLE:wJalr/XUtnFEMI+K7MDENG@my-bucket/out.csv (retry)"
    assert mask_secrets(text) == "error at s3://***@my-bucket/out.csv (retry)"
