"""``${VAR}`` expansion in manifest strings, and the deep merge that applies an overlay.

Expansion follows Scalable: only string values are expanded (never mapping keys);
``${NAME}`` is the variable's value, ``${NAME:-default}`` its value or, when it is *absent*,
``default`` (a variable set to the empty string expands to the empty string); ``NAME`` is
``[A-Za-z_][A-Za-z0-9_]*`` and a default is any text without ``}``; a bare ``$NAME`` stays as
it is and there is no escape syntax. The result of an expansion is always a string.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from scalable.manifest.issues import KeyPath, ManifestIssue

__all__ = ["deep_merge", "expand", "expand_env_vars", "unset_variable_issue"]

_VAR: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

#: Called with the key path and variable name of a ``${NAME}`` whose variable is absent; raises.
OnUnset = Callable[[KeyPath, str], None]


def expand_env_vars(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """Return ``value`` with ``${VAR}`` and ``${VAR:-default}`` expanded in every string in it.

    Args:
        value: a string, or lists and mappings holding strings (walked recursively); other
            values are returned unchanged.
        env: the variables; ``os.environ`` when ``None``.

    Raises:
        ManifestParseError: a variable without a default is not set (``E_UNSET_VARIABLE``).
    """

    def unset(path: KeyPath, name: str) -> None:
        raise unset_variable_issue(path, name, "<value>", None).error()

    return expand(value, os.environ if env is None else env, (), unset)


def unset_variable_issue(path: KeyPath, name: str, file: str, line: int | None) -> ManifestIssue:
    """The ``E_UNSET_VARIABLE`` error of ``${name}`` at ``path``."""
    return ManifestIssue(
        "error",
        "E_UNSET_VARIABLE",
        path,
        f"environment variable {name} is not set; set it, or give a default as ${{{name}:-value}}",
        file,
        line,
    )


def expand(value: Any, env: Mapping[str, str], path: KeyPath, unset: OnUnset) -> Any:
    """:func:`expand_env_vars` with the key path of each string, for messages."""
    if isinstance(value, str):
        if "${" not in value:
            return value

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = env.get(name)
            if found is not None:
                return found
            if default is not None:
                return default
            unset(path, name)
            return ""

        return _VAR.sub(substitute, value)
    if isinstance(value, list):
        return [expand(item, env, (*path, i), unset) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {k: expand(v, env, (*path, k if isinstance(k, str) else str(k)), unset) for k, v in value.items()}
    return value


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``base`` with ``overlay`` merged in; neither input is changed.

    Mappings merge recursively and the overlay's keys win; lists, scalars and ``None`` in the
    overlay replace what ``base`` has, whole.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
