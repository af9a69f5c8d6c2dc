"""What goes wrong when storage is reached, mapped in one place to the :class:`~scalable.errors.ScalableError` tree.

Every call into fsspec, s3fs, gcsfs, botocore, aiohttp, google-auth or the file system that
can fail because of where the data lives goes through :func:`storage_error`, which turns the
exception into one error of the tree, naming the location (secrets masked) and saying what
to do:

================================  ==================================  ============================
what happened                     error                               also a
================================  ==================================  ============================
no credentials, or rejected       ``StoreCredentialsError``           ``PermissionError``
access denied                     ``StorePermissionError``            ``PermissionError``
endpoint refused, timeout, DNS    ``StoreUnreachableError``           ``ConnectionError``
bucket (or root) does not exist   ``StoreNotFoundError``              ``FileNotFoundError``
invalid bucket name or URI        ``InvalidStoreURIError``            ``ValueError``
a file where a directory must be  ``InvalidStoreURIError``            ``ValueError``
nothing at the key                ``ArtifactNotFoundError``           ``FileNotFoundError``
anything else                     ``StoreError``
================================  ==================================  ============================

The backends are recognised by the names of their exception classes and by the error codes
they carry (an S3 ``ClientError``'s ``Code``, a GCS ``HttpError``'s ``code``), so nothing
here imports an optional package.

Credentials may also be given in a URI (``s3://KEY:SECRET@bucket/prefix/``): :func:`split_userinfo`
takes them out, also when the secret holds ``/`` or ``+`` (as AWS secrets do) or is
percent-encoded, so they reach the backend as options and nothing else ever sees them.
"""

from __future__ import annotations

import errno
import re
import socket
from typing import Final
from urllib.parse import quote, unquote

from scalable.errors import (
    ArtifactNotFoundError,
    InvalidStoreURIError,
    ScalableError,
    StoreCredentialsError,
    StoreError,
    StoreNotFoundError,
    StorePermissionError,
    StoreUnreachableError,
    os_error,
)
from scalable.logs import mask_secrets

__all__ = ["failure_kind", "join_userinfo", "split_userinfo", "storage_error"]

_SCHEME: Final = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)$", re.DOTALL)

#: Exception class names (of botocore, google-auth, gcsfs, aiohttp, requests) by what they mean.
_CREDENTIAL_CLASSES: Final = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "CredentialRetrievalError",
        "UnknownCredentialError",
        "NoAuthTokenError",
        "TokenRetrievalError",
        "SSOTokenLoadError",
        "UnauthorizedSSOTokenError",
        "DefaultCredentialsError",
        "RefreshError",
    }
)
_UNREACHABLE_CLASSES: Final = frozenset(
    {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ProxyConnectionError",
        "ClientConnectorError",
        "ClientConnectionError",
        "ServerDisconnectedError",
        "ServerTimeoutError",
        "TransportError",
        "ProxyError",
        "ConnectTimeout",
        "ReadTimeout",
        "ConnectionError",
    }
)
_INVALID_CLASSES: Final = frozenset({"ParamValidationError", "InvalidS3AddressingStyleError"})
#: Error codes of S3 (``ClientError.response["Error"]["Code"]``) by what they mean.
_CREDENTIAL_CODES: Final = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "AuthFailure",
    }
)
_PERMISSION_CODES: Final = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem", "403", "Forbidden"})
_MISSING_STORE_CODES: Final = frozenset({"NoSuchBucket"})
_INVALID_CODES: Final = frozenset({"InvalidBucketName", "InvalidURI"})
_NOT_FOUND_CODES: Final = frozenset({"NoSuchKey", "404", "NotFound"})


def split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """Split the credentials out of ``scheme://USER:SECRET@rest``; return ``(scheme://rest, user, secret)``.

    The user part ends at the first ``:`` and the secret at the first ``@`` after it, so a
    secret may hold ``/``, ``+`` and ``:`` (AWS secrets do); a bucket name never holds ``:``,
    which tells ``s3://bucket/key@x`` (no credentials) from ``s3://KEY:SE/CRET@bucket/``.
    Both parts are percent-decoded (``%2F`` is ``/``, ``%40`` is ``@``). A URI without
    credentials comes back as it is, with ``None`` twice.
    """
    m = _SCHEME.match(uri)
    if not m:
        return uri, None, None
    rest = m.group("rest")
    head = rest.split("/", 1)[0]
    # user@bucket or user:secret@bucket; or a secret holding '/': a bucket cannot hold ':'.
    if not ("@" in head or (":" in head and "@" in rest)):
        return uri, None, None
    userinfo, _, tail = rest.partition("@")
    user, sep, secret = userinfo.partition(":")
    return f"{m.group('scheme')}://{tail}", unquote(user), unquote(secret) if sep else None


def join_userinfo(uri: str, user: str | None, secret: str | None) -> str:
    """The inverse of :func:`split_userinfo`: ``scheme://USER:SECRET@rest``, both parts percent-encoded."""
    if user is None:
        return uri
    m = _SCHEME.match(uri)
    if not m:
        return uri
    userinfo = quote(user, safe="") + (f":{quote(secret, safe='')}" if secret is not None else "")
    return f"{m.group('scheme')}://{userinfo}@{m.group('rest')}"


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from or during (s3fs keeps botocore's as the cause)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not s for s in seen) and len(seen) < 8:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _code(exc: BaseException) -> str | None:
    """The error code an S3 ``ClientError`` or a GCS ``HttpError`` carries, if any."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        if code is not None:
            return str(code)
    code = getattr(exc, "code", None)
    if isinstance(code, int) and 400 <= code < 600:
        return str(code)
    return None


def failure_kind(exc: BaseException) -> str:
    """What ``exc`` means for a storage call: ``credentials``, ``permission``, ``unreachable``,
    ``store-missing``, ``invalid``, ``not-a-directory``, ``not-found`` or ``other``.

    The exception, and the ones it was raised from, are looked at for their class names,
    error codes and errno, most specific first.
    """
    chain = _chain(exc)
    codes = {code for e in chain if (code := _code(e)) is not None}
    names = set().union(*(_class_names(e) for e in chain))
    text = " ".join(str(e) for e in chain)
    if names & _CREDENTIAL_CLASSES or codes & _CREDENTIAL_CODES or "401" in codes:
        return "credentials"
    if codes & _MISSING_STORE_CODES or "specified bucket does not exist" in text:
        return "store-missing"
    if names & _INVALID_CLASSES or codes & _INVALID_CODES or "Invalid bucket name" in text:
        return "invalid"
    if codes & _PERMISSION_CODES or text.startswith("Forbidden"):
        return "permission"
    for e in chain:
        if isinstance(e, PermissionError) or (isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM)):
            return "permission"
    if names & _UNREACHABLE_CLASSES:
        return "unreachable"
    for e in chain:
        if isinstance(e, NotADirectoryError | FileExistsError) or (isinstance(e, OSError) and e.errno == errno.ENOTDIR):
            return "not-a-directory"
        if isinstance(e, FileNotFoundError) or codes & _NOT_FOUND_CODES:
            return "not-found"
        if isinstance(e, ConnectionError | TimeoutError | socket.gaierror) or (
            isinstance(e, OSError) and e.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)
        ):
            return "unreachable"
    return "other"


def _detail(exc: BaseException) -> str:
    """The first line of the exception's text (or its class name), secrets masked, kept short."""
    for e in _chain(exc):
        text = str(e).strip()
        if isinstance(e, OSError) and e.strerror:
            text = e.strerror
        if text:
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            line = lines[0]
            if line.endswith(":") and len(lines) > 1:  # "Parameter validation failed:" and the reason below
                line = f"{line} {lines[1]}"
            return mask_secrets(line if len(line) <= 200 else line[:197] + "...")
    return type(exc).__name__


def _credentials_hint(scheme: str) -> str:
    if scheme in ("s3", "s3a"):
        return (
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass key/secret in the "
            "storage options"
        )
    if scheme in ("gs", "gcs"):
        return "set GOOGLE_APPLICATION_CREDENTIALS or run 'gcloud auth application-default login'"
    return "check the credentials the backend uses"


def storage_error(
    exc: BaseException, location: str, *, action: str = "read", what: str | None = None, kind: str | None = None
) -> ScalableError:
    """Return the :class:`~scalable.errors.ScalableError` that says why ``action`` on ``location`` failed.

    A ScalableError is returned as it is. The message names the location (secrets masked),
    what went wrong and what to do; the original exception stays reachable as ``__cause__``
    when the caller raises ``from exc`` (the CLI shows it with ``--debug``).

    Args:
        exc: what the backend raised.
        location: the URI or path being worked on.
        action: what was being done, as a verb: ``read``, ``write``, ``list``, ``delete``...
        what: what the location is to the user, such as ``the remote ledger``; it prefixes
            the location in the message.
        kind: what happened, when the caller knows better than :func:`failure_kind` (a HEAD
            request of a missing bucket answers a bare 404: ``store-missing``).
    """
    if isinstance(exc, ScalableError):
        return exc
    uri = mask_secrets(location)
    m = _SCHEME.match(location)
    scheme = m.group("scheme").lower() if m else "file"
    place = (f"{what} {uri!r}" if what else repr(uri)) if location else (what or "the storage")
    kind = kind or failure_kind(exc)
    if kind == "not-found" and action == "write" and scheme != "file":
        kind = "store-missing"  # an object being written is not there yet by design: its bucket is missing
    detail = _detail(exc)
    if kind == "credentials":
        return StoreCredentialsError(
            f"cannot {action} {place}: no valid credentials ({detail}); {_credentials_hint(scheme)}"
        )
    if kind == "permission":
        return StorePermissionError(
            f"cannot {action} {place}: permission denied ({detail}); check the permissions of the "
            + ("directory or file" if scheme == "file" else "bucket and the credentials' policy")
        )
    if kind == "unreachable":
        endpoint = {
            "s3": "the endpoint (AWS_ENDPOINT_URL or endpoint_url), ",
            "s3a": "the endpoint (AWS_ENDPOINT_URL or endpoint_url), ",
            "gs": "the endpoint (STORAGE_EMULATOR_HOST or endpoint_url), ",
            "gcs": "the endpoint (STORAGE_EMULATOR_HOST or endpoint_url), ",
            "file": "",
        }.get(scheme, "the endpoint, ")
        return StoreUnreachableError(f"cannot reach {place}: {detail}; check {endpoint}the network and any proxy")
    if kind == "store-missing":
        bucket = (m.group("rest") if m else location).split("/", 1)[0]
        return StoreNotFoundError(
            f"cannot {action} {place}: the bucket {mask_secrets(bucket)!r} does not exist; create it or fix the URI"
        )
    if kind == "invalid":
        return InvalidStoreURIError(
            f"{place} is not a valid {scheme} location ({detail}); check the bucket name "
            "(3-63 lowercase letters, digits, '-' and '.') and the URI's form scheme://bucket/prefix/"
        )
    if kind == "not-a-directory":
        return InvalidStoreURIError(
            f"cannot {action} {place}: a file is in the way where a directory must be ({detail}); "
            "point it at a directory"
        )
    if kind == "not-found":
        return ArtifactNotFoundError(f"cannot {action} {place}: nothing is there ({detail})")
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno is not None:  # a full disk and the rest: the errno mapping
            return os_error(e, f"cannot {action} {place}", StoreError)
    return StoreError(f"cannot {action} {place}: {detail}")
