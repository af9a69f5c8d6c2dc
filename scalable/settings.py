"""Every ``SCALABLE_*`` variable and manifest default, resolved in one place.

Precedence, everywhere: explicit argument > environment > manifest > built-in default.
Secrets (HMAC keys) are held as bytes and never appear in ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from scalable.errors import ConfigError

__all__ = [
    "ENV_VARS",
    "FsyncMode",
    "Settings",
    "load_settings",
]


class FsyncMode(StrEnum):
    """How hard ``append`` pushes events towards the disk (``SCALABLE_LEDGER_FSYNC``)."""

    ALWAYS = "always"
    BATCH = "batch"
    NEVER = "never"


#: Every environment variable scalable reads, with its meaning (the docs are generated from it).
ENV_VARS: dict[str, str] = {
    "SCALABLE_MANIFEST": "Path of the manifest (scalable.yaml) used when none is given.",
    "SCALABLE_TARGET": "Target of the manifest to run on when none is given.",
    "SCALABLE_DEFAULT_STORAGE": "Artifact store URI of the session (overrides project.default_storage).",
    "SCALABLE_RUNS_DIR": "Directory of the per-run event streams (default .scalable/runs).",
    "SCALABLE_LEDGER_DIR": "Directory of the compacted ledger (default .scalable/ledger).",
    "SCALABLE_RUNS_DIR_REMOTE": "fsspec URI the ledger is shipped to and shared through.",
    "SCALABLE_CACHE_DIR": "Local cache directory (overrides project.local_cache; default .scalable/cache).",
    "SCALABLE_CACHE_REMOTE": "Artifact store URI of the shared remote cache tier.",
    "SCALABLE_CACHE_HMAC_KEY": "Key that signs remote cache payloads; unsigned ones are refused.",
    "SCALABLE_LEDGER_KEY": "Key that turns run seals into HMACs, so a rewritten chain is caught.",
    "SCALABLE_TELEMETRY": "1 (default) records events; 0 records nothing.",
    "SCALABLE_LEDGER_FSYNC": "always | batch (default) | never: power-loss durability of appends.",
    "SCALABLE_SNAPSHOT_RETENTION": "How long compacted files stay after a newer generation replaced them (default 1h).",
    "SCALABLE_RECORD_ENV": "Comma-separated names (or fnmatch patterns) of environment variables a run records.",
    "SCALABLE_RERUN_OF": "Set by scalable ledger rerun: the run the command re-executes (recorded as rerun_of).",
    "SCALABLE_LOG_FORMAT": "console (default) | json.",
    "SCALABLE_LOG_LEVEL": "debug | info | warning (default) | error.",
}

_LOG_FORMATS = ("console", "json")
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: Variables whose setting has another name (the unit is part of the field's name).
_FIELD_OF_VAR = {"SCALABLE_SNAPSHOT_RETENTION": "snapshot_retention_s"}
_VAR_OF_FIELD = {v: k for k, v in _FIELD_OF_VAR.items()}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one process or session.

    Build it with :func:`load_settings`; every path is absolute.
    """

    manifest: Path | None = None
    target: str | None = None
    default_storage: str = ".scalable/artifacts"
    runs_dir: Path = Path(".scalable/runs")
    ledger_dir: Path = Path(".scalable/ledger")
    runs_dir_remote: str | None = None
    cache_dir: Path = Path(".scalable/cache")
    cache_remote: str | None = None
    cache_hmac_key: bytes | None = field(default=None, repr=False)
    ledger_key: bytes | None = field(default=None, repr=False)
    telemetry: bool = True
    ledger_fsync: FsyncMode = FsyncMode.BATCH
    #: Seconds a compacted file stays readable after a newer generation superseded it.
    snapshot_retention_s: float = 3600.0
    #: Names or fnmatch patterns of the environment variables ``run/started`` records.
    record_env: tuple[str, ...] = ()
    #: The run this process re-executes (set by ``scalable ledger rerun``).
    rerun_of: str | None = None
    log_format: str = "console"
    log_level: str = "warning"

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with the given fields replaced (``None`` values are ignored)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown setting(s) {sorted(unknown)}; known: {[f.name for f in fields(self)]}")
        return replace(self, **_coerce(given, source="argument"))


def _bool(name: str, value: str) -> bool:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean; use 1 or 0")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    low = value.strip().lower()
    if low not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return low


def _duration(name: str, value: object) -> float:
    """Seconds of a duration given as a number of seconds or as ``<number><s|m|h|d>``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        unit = _DURATION_UNITS.get(text[-1:]) if text else None
        try:
            seconds = float(text[:-1] if unit is not None else text) * (unit or 1.0)
        except ValueError:
            seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise ConfigError(f"{name}={value!r} is not a duration; use seconds or a number with s, m, h or d (1h)")
    return seconds


def _names(name: str, value: object) -> tuple[str, ...]:
    """Names given as one comma-separated string or as a list of strings."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) for item in items):
        raise ConfigError(f"{name}={value!r} is not a list of variable names; use NAME,OTHER_NAME or a YAML list")
    return tuple(dict.fromkeys(item.strip() for item in items if item.strip()))


def _path(value: str | os.PathLike[str], base: Path | None = None) -> Path:
    p = Path(value).expanduser()
    if not p.is_absolute():
        p = (base or Path.cwd()) / p
    return Path(os.path.normpath(p))


def _directory(label: str, value: Any, path: Path) -> Path:
    """Return ``path`` unless it, or the nearest of its parents that exists, is not a directory."""
    probe = path
    while True:
        try:
            if not probe.is_dir() and probe.exists():
                what = "is a file" if probe == path else f"is under {str(probe)!r}, a file"
                raise ConfigError(f"{label}={str(value)!r} {what}, not a directory; point it at a directory")
        except OSError:  # unreadable parents: whoever uses the directory reports it
            return path
        if probe.exists() or probe.parent == probe:
            return path
        probe = probe.parent


def _coerce(values: Mapping[str, Any], *, source: str, base: Path | None = None) -> dict[str, Any]:
    """Turn raw values (strings from the environment, a manifest or arguments) into typed ones."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        label = source if source.startswith("SCALABLE_") else f"{source} {name}"
        if name in ("runs_dir", "ledger_dir", "cache_dir"):
            out[name] = _directory(label, value, _path(value, base))
        elif name == "manifest":
            out[name] = _path(value, base)
        elif name in ("cache_hmac_key", "ledger_key"):
            out[name] = value.encode() if isinstance(value, str) else bytes(value)
        elif name == "telemetry":
            out[name] = value if isinstance(value, bool) else _bool(label, str(value))
        elif name == "ledger_fsync":
            out[name] = FsyncMode(_choice(label, str(value), tuple(m.value for m in FsyncMode)))
        elif name == "snapshot_retention_s":
            out[name] = _duration(label, value)
        elif name == "record_env":
            out[name] = _names(label, value)
        elif name == "log_format":
            out[name] = _choice(label, str(value), _LOG_FORMATS)
        elif name == "log_level":
            out[name] = _choice(label, str(value), _LOG_LEVELS)
        elif name == "default_storage" and isinstance(value, str) and "://" not in value:
            out[name] = str(_path(value, base))
        else:
            out[name] = value
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for var in ENV_VARS:
        value = env.get(var)
        if value is None or value == "":
            continue
        raw[_FIELD_OF_VAR.get(var, var.removeprefix("SCALABLE_").lower())] = value
    # Give environment errors the variable's own name.
    out: dict[str, Any] = {}
    for name, value in raw.items():
        out.update(_coerce({name: value}, source=_VAR_OF_FIELD.get(name, f"SCALABLE_{name.upper()}")))
    return out


def load_settings(
    *,
    env: Mapping[str, str] | None = None,
    manifest_project: Mapping[str, Any] | None = None,
    manifest_dir: Path | None = None,
    **overrides: Any,
) -> Settings:
    """Resolve settings: explicit argument > environment > manifest > default.

    Args:
        env: the environment to read (``os.environ`` when omitted).
        manifest_project: the manifest's ``project`` mapping (``default_storage``,
            ``local_cache``, ``record_env``), if a manifest is in play.
        manifest_dir: directory that relative manifest paths are resolved against.
        **overrides: explicit values of :class:`Settings` fields; ``None`` means "not given".

    Returns:
        The resolved :class:`Settings`, with absolute paths.

    Raises:
        ConfigError: a value is not valid for its setting; the message names the variable.
    """
    env = os.environ if env is None else env
    resolved: dict[str, Any] = _coerce(
        {
            "default_storage": Settings.default_storage,
            "runs_dir": Settings.runs_dir,
            "ledger_dir": Settings.ledger_dir,
            "cache_dir": Settings.cache_dir,
        },
        source="default",
    )
    if manifest_project:
        from_manifest: dict[str, Any] = {}
        if manifest_project.get("default_storage"):
            from_manifest["default_storage"] = manifest_project["default_storage"]
        if manifest_project.get("local_cache"):
            from_manifest["cache_dir"] = manifest_project["local_cache"]
        if manifest_project.get("record_env"):
            from_manifest["record_env"] = manifest_project["record_env"]
        resolved.update(_coerce(from_manifest, source="manifest project", base=manifest_dir))
    resolved.update(_from_env(env))
    settings = Settings(**resolved)
    return settings.with_overrides(**overrides)
