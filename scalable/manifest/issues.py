"""Findings about a manifest: code, key path, file and line, as errors and as warnings.

Every problem of a manifest is a :class:`ManifestIssue`. An error-level issue becomes the
exception of its kind (:class:`~scalable.errors.ManifestParseError`,
:class:`~scalable.errors.ManifestSchemaError`, :class:`~scalable.errors.ManifestValidationError`
or :class:`~scalable.errors.TargetNotSupportedError`) with the message
``<file>:<line>: <CODE> <key path>: <what is wrong and what to do>``.
"""

from __future__ import annotations

import re
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import Final

from scalable.errors import (
    ManifestError,
    ManifestParseError,
    ManifestSchemaError,
    ManifestValidationError,
    TargetNotSupportedError,
)

__all__ = ["KeyPath", "ManifestIssue", "ManifestWarning", "key_text", "warn_once"]

#: A key path: mapping keys (str) and list indexes (int) from the document's root.
KeyPath = tuple[str | int, ...]

#: Codes of the exception classes other than ManifestValidationError.
_PARSE: Final = frozenset({"E_YAML", "E_READ", "E_UNSET_VARIABLE"})
_SCHEMA: Final = frozenset(
    {
        "E_EMPTY_MANIFEST",
        "E_UNKNOWN_KEY",
        "E_MISSING_KEY",
        "E_BAD_TYPE",
        "E_BAD_VALUE",
        "E_BAD_VERSION",
        "E_UNKNOWN_OVERLAY",
        "E_MANIFEST_TOO_LARGE",
    }
)
_NOT_SUPPORTED: Final = "E_PROVIDER_NOT_SUPPORTED"
_PLAIN: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class ManifestWarning(UserWarning):
    """A manifest key that is accepted but will not do anything (an option a provider does not use...)."""


def key_text(path: KeyPath) -> str:
    """Render a key path: ``targets.hpc.queue``, ``components.model.mounts['/data']``, ``tags[0]``."""
    if not path:
        return "(top level)"
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


@dataclass(frozen=True)
class ManifestIssue:
    """One finding: ``level`` (``error`` or ``warning``), Scalable-style ``code``, key path, file, line."""

    level: str
    code: str
    path: KeyPath
    message: str
    file: str
    line: int | None = None

    @property
    def key(self) -> str:
        """The key path as text."""
        return key_text(self.path)

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.code} {self.key}: {self.message}"

    def error(self) -> ManifestError:
        """The exception of this issue's kind, carrying its code, file, line and key."""
        if self.code in _PARSE:
            cls: type[ManifestError] = ManifestParseError
        elif self.code in _SCHEMA:
            cls = ManifestSchemaError
        elif self.code == _NOT_SUPPORTED:
            cls = TargetNotSupportedError
        else:
            cls = ManifestValidationError
        exc = cls(str(self))
        exc.code, exc.file, exc.line, exc.key = self.code, self.file, self.line, self.key
        return exc


_warned: set[tuple[str, int | None, str, KeyPath, str]] = set()
_warned_lock = threading.Lock()


def warn_once(issue: ManifestIssue) -> None:
    """Emit ``issue`` as a :class:`ManifestWarning`, once per process for the same file, line, code and key."""
    seen = (issue.file, issue.line, issue.code, issue.path, issue.message)
    with _warned_lock:
        if seen in _warned:
            return
        _warned.add(seen)
    # Point at the first caller outside this package (the code that loaded the manifest).
    level, frame = 2, sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("scalable.manifest"):
        frame, level = frame.f_back, level + 1
    warnings.warn(str(issue), ManifestWarning, stacklevel=level)
