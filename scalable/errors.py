"""The one exception hierarchy of scalable, rooted at :class:`ScalableError`.

Every error a user can cause is a ``ScalableError`` subclass that also subclasses the builtin
a caller would naturally catch (``ValueError``, ``FileNotFoundError``, ``PermissionError``),
so ``except ValueError`` keeps working for code that does not know about scalable.
"""

from __future__ import annotations

import errno

__all__ = [
    "AmbiguousNodeError",
    "ArtifactNotFoundError",
    "CacheArgumentError",
    "CacheEntryNotFoundError",
    "CacheError",
    "CacheInputNotFoundError",
    "CacheNotFoundError",
    "CachePayloadError",
    "CacheRemoteError",
    "CacheSignatureError",
    "CompactionConflictError",
    "ConfigError",
    "DiskFullError",
    "EventValidationError",
    "IntegrityError",
    "InvalidKeyError",
    "InvalidStoreURIError",
    "KeyConflictError",
    "LedgerError",
    "LedgerNotFoundError",
    "LedgerWriteError",
    "ManifestError",
    "ManifestNotFoundError",
    "ManifestParseError",
    "ManifestSchemaError",
    "ManifestValidationError",
    "MissingDependencyError",
    "NodeNotFoundError",
    "QueryError",
    "ReadOnlyQueryError",
    "RerunError",
    "RestoreError",
    "RunNotFoundError",
    "RunSealedError",
    "ScalableError",
    "SessionError",
    "StoreCredentialsError",
    "StoreError",
    "StoreNotFoundError",
    "StorePermissionError",
    "StoreUnreachableError",
    "TargetNotSupportedError",
    "UnreadableArtifactError",
    "UnsafeArtifactError",
    "UnsupportedSchemeError",
    "WorkerLostError",
    "os_error",
]


class ScalableError(Exception):
    """Root of every error scalable raises on purpose.

    ``exit_code`` is what the CLI exits with: 2 for bad input (the default), 1 for a check
    that ran and failed.
    """

    exit_code: int = 2


class ConfigError(ScalableError, ValueError):
    """A setting (environment variable, argument, manifest value) is invalid."""


class ManifestError(ConfigError):
    """The manifest file is missing, unparsable or breaks schema v1.

    Errors about the document carry ``code`` (Scalable's error code where it has one, such
    as ``E_BAD_MAX_WORKERS``), ``file``, ``line`` (or ``None``) and ``key`` (the key path).
    """

    code: str | None = None
    file: str | None = None
    line: int | None = None
    key: str | None = None


class ManifestNotFoundError(ManifestError, FileNotFoundError):
    """The manifest file does not exist."""


class ManifestParseError(ManifestError):
    """The manifest is not readable YAML, or names an environment variable that is not set."""


class ManifestSchemaError(ManifestError):
    """A key of the manifest is unknown, missing, or has a value of the wrong type or version."""


class ManifestValidationError(ManifestError):
    """The manifest's parts disagree, or a target's options are invalid for its provider."""


class TargetNotSupportedError(ManifestError, NotImplementedError):
    """The target's provider is accepted in manifests, but this scalable cannot run its tasks."""


class MissingDependencyError(ScalableError, ImportError):
    """An optional package is needed for this feature; the message says what to install."""


class LedgerError(ScalableError):
    """Something about the event ledger went wrong."""


class LedgerNotFoundError(LedgerError, FileNotFoundError):
    """A ledger or runs directory given explicitly does not exist."""


class LedgerWriteError(LedgerError, PermissionError):
    """The runs directory cannot be created or written, so no event could be recorded."""


class RunNotFoundError(LedgerError, LookupError):
    """No event of the named run exists in the ledger."""


class NodeNotFoundError(LedgerError, LookupError):
    """No artifact digest, URI or run of that name appears in the ledger's lineage."""


class AmbiguousNodeError(LedgerError, LookupError):
    """A digest prefix, name or path given for lineage stands for several nodes; the message lists them."""


class EventValidationError(LedgerError, ValueError):
    """An event mapping names an unknown column or carries a value of the wrong type."""


class QueryError(LedgerError, ValueError):
    """An SQL query could not be parsed, bound or run."""


class ReadOnlyQueryError(LedgerError, PermissionError):
    """The query path is read-only and the statement would write, attach or configure."""


class RunSealedError(LedgerError, ValueError):
    """The run is sealed (its ``run/finished`` line is written): no event can join it; start a new run."""


class CompactionConflictError(LedgerError, RuntimeError):
    """Another compaction committed the same manifest generation first; compact again."""


class StoreError(ScalableError):
    """Something about an artifact store went wrong."""


class StoreUnreachableError(StoreError, ConnectionError):
    """A store cannot be reached (endpoint refused, timeout, network) or, checked before a run, written."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """The store itself is not there: a bucket that does not exist, a root directory that is missing."""


class StorePermissionError(StoreError, PermissionError):
    """The store refused the operation: access denied to the bucket, object, directory or file."""


class StoreCredentialsError(StorePermissionError):
    """No credentials were found for the store, or it rejected them (unknown key, bad secret, expired)."""


class InvalidStoreURIError(StoreError, ValueError):
    """A store URI its backend cannot use: an invalid bucket name, credentials that do not parse."""


class InvalidKeyError(StoreError, ValueError):
    """A store key is empty, absolute, contains ``..``/NUL/backslash or escapes the root."""


class ArtifactNotFoundError(StoreError, FileNotFoundError):
    """The artifact (a local source or a stored key) does not exist."""


class UnreadableArtifactError(StoreError, PermissionError):
    """A local source or destination cannot be read or written (permissions)."""


class UnsupportedSchemeError(StoreError, ValueError):
    """A store URI names a scheme no backend handles."""


class UnsafeArtifactError(StoreError, ValueError):
    """Something cannot be stored or read safely: a link out of a tree or inside a store root, a fifo, a device."""


class KeyConflictError(StoreError, FileExistsError):
    """A put would nest an artifact inside another one, or put a file where a directory is (or the reverse)."""


class IntegrityError(StoreError, ValueError):
    """Stored bytes no longer hash to their recorded digest."""

    exit_code = 1


class RestoreError(IntegrityError):
    """A replay restored every artifact it could; some were missing, unreadable or did not verify.

    ``result`` is the replay's result (its ``failed`` list names each artifact not restored).
    """

    result: object = None


class CacheError(ScalableError):
    """Something about the result cache went wrong."""


class CachePayloadError(CacheError, ValueError):
    """A cache payload failed its digest or signature check, or cannot be serialized."""


class CacheSignatureError(CachePayloadError):
    """A cache payload is unsigned or badly signed while ``SCALABLE_CACHE_HMAC_KEY`` is set."""


class CacheRemoteError(CacheError, ConnectionError):
    """The remote cache tier could not be reached for an operation that needs it (``clear --remote``)."""


class CacheNotFoundError(CacheError, FileNotFoundError):
    """The local cache directory does not exist: nothing was cached there."""


class CacheEntryNotFoundError(CacheError, LookupError):
    """No cache entry matches what was asked for (a function with no entries)."""


class CacheArgumentError(CacheError, ValueError):
    """``@cacheable`` was given a type or argument name it cannot use, or an unhashable value."""


class CacheInputNotFoundError(CacheError, FileNotFoundError):
    """A ``FileType``/``DirType`` argument names a path that does not exist."""


class SessionError(ScalableError, RuntimeError):
    """A session was used in a state that does not allow the call."""


class WorkerLostError(SessionError):
    """A task never came back: the worker running it died, or its batch job ended (``scancel``, walltime)."""


class RerunError(ScalableError, RuntimeError):
    """A run could not be run again: it recorded no command, an input's bytes are gone, or the command failed.

    ``result`` holds the :class:`~scalable.rerun.RerunResult` when the command ran.
    """

    result: object = None


class DiskFullError(ScalableError, OSError):
    """A write found no space left (or hit the file size limit); what was written before is intact."""


#: What to say about the errors of a full disk, by errno.
_FULL: dict[int, str] = {
    errno.ENOSPC: "no space left on the device; free some space and run it again",
    errno.EDQUOT: "the disk quota is used up; free some space or raise the quota and run it again",
    errno.EFBIG: "the file size limit was reached (ulimit -f); raise the limit and run it again",
}


def os_error(exc: OSError, doing: str, default: type[ScalableError]) -> ScalableError:
    """The one mapping of an ``OSError`` met while ``doing`` something to the error tree.

    A full disk, a used-up quota and the file size limit (``ENOSPC``, ``EDQUOT``, ``EFBIG``)
    are a :class:`DiskFullError` that says what to do; any other errno becomes ``default``
    with the system's reason. Both keep the errno.

    Args:
        exc: the error the write met.
        doing: what was being done, naming the path (``"cannot append to '/x/y.jsonl'"``).
        default: the class of every other errno (the caller's own, e.g. ``LedgerError``).
    """
    advice = _FULL.get(exc.errno or 0)
    error = DiskFullError(f"{doing}: {advice}") if advice else default(f"{doing}: {exc.strerror or exc}")
    if isinstance(error, OSError):
        error.errno = exc.errno
    return error
