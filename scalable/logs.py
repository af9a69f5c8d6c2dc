"""Loggers of scalable's modules, and the structlog configuration an application may apply.

A library configures nothing global: importing or using scalable never calls
``structlog.configure``. Modules get their loggers from :func:`get_logger`; what those loggers
do with a line depends on the application:

* once structlog is configured (by the application, or by :func:`configure_logging`, which the
  ``scalable`` CLI calls), lines go through that configuration;
* until then, they are rendered the way :func:`configure_logging` would render them, without
  configuring anything: to stderr (stdout stays clean for data), at ``SCALABLE_LOG_LEVEL``, in
  ``SCALABLE_LOG_FORMAT``.

Either way, anything that looks like a credential is masked before a line leaves scalable;
:func:`configure_logging` also masks the lines of every other logger.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "error_line", "get_logger", "mask_secrets"]

_lock = threading.Lock()
_configured = False
_unconfigured: tuple[list[Any], Any] | None = None

# key=value or "key": "value" pairs whose key smells of a secret, and signed-URL query strings.
_SECRET_KV = re.compile(
    r"(?i)((?:secret|password|passwd|token|key|signature|credential|sig|x-amz-[a-z-]+)"
    r"[\"']?\s*[=:]\s*[\"']?)([^\s\"'&,}]+)"
)
# user@ or user:secret@ after a scheme; a secret may hold '/' (AWS secrets do), a host never ':' then '/'.
_URL_USERINFO = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)([^/@\s:]*:[^@\s]*|[^/@\s]+)@")
_SECRET_FIELDS = ("secret", "password", "token", "hmac", "credential", "signature")


def mask_secrets(text: str) -> str:
    """Return ``text`` with URL credentials and ``key=value`` secrets replaced by ``***``."""
    text = _URL_USERINFO.sub(r"\1***@", text)
    return _SECRET_KV.sub(r"\1***", text)


def error_line(exc: BaseException) -> str:
    """The one line a user is shown for an error (the CLI's stderr line, the explorer's message), secrets masked."""
    return f"error: {mask_secrets(str(exc))}"


def _mask_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if any(s in key.lower() for s in _SECRET_FIELDS):
            event_dict[key] = "***"
        elif isinstance(value, str):
            event_dict[key] = mask_secrets(value)
    return event_dict


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    """A logger printing to the current ``sys.stderr`` (test runners and click replace it)."""
    return structlog.PrintLogger(sys.stderr)


def _pipeline(log_format: str | None, log_level: str | None) -> tuple[list[Any], Any]:
    """The processors and filtering wrapper class of scalable's rendering, settings filling the gaps."""
    if log_format is None or log_level is None:
        from scalable.settings import load_settings

        try:
            s = load_settings()
            log_format = log_format or s.log_format
            log_level = log_level or s.log_level
        except Exception:  # a bad setting is reported by whoever loads it for real
            log_format, log_level = log_format or "console", log_level or "warning"
    renderer: Any = (
        structlog.processors.JSONRenderer() if log_format == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _mask_processor,
        renderer,
    ]
    return processors, structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[log_level.upper()])


def configure_logging(log_format: str | None = None, log_level: str | None = None, *, force: bool = False) -> None:
    """Configure structlog for an application the way the ``scalable`` CLI does; later calls are
    no-ops unless ``force``.

    Lines go to stderr, secrets masked (those of every logger, not only scalable's).

    Args:
        log_format: ``console`` or ``json``; from settings when omitted.
        log_level: a level name; from settings when omitted.
        force: reconfigure even if already configured (the CLI configures at each invocation).
    """
    global _configured
    with _lock:
        if _configured and not force:
            return
        processors, wrapper_class = _pipeline(log_format, log_level)
        structlog.configure(
            processors=processors,
            wrapper_class=wrapper_class,
            logger_factory=_stderr_logger,
            cache_logger_on_first_use=False,
        )
        _configured = True


def _unconfigured_logger() -> Any:
    """A logger rendering as :func:`configure_logging` would, for a process that configured nothing."""
    global _unconfigured
    if _unconfigured is None:
        with _lock:
            if _unconfigured is None:
                _unconfigured = _pipeline(None, None)
    processors, wrapper_class = _unconfigured
    return wrapper_class(_stderr_logger(), processors=processors, context={})


class _Logger:
    """The logger of one scalable module: masks secrets, then hands the line to structlog as configured."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def _emit(self, method: str, event: str, fields: dict[str, Any]) -> None:
        masked = _mask_processor(None, method, {"event": event, **fields})
        target = structlog.get_logger(self._name) if structlog.is_configured() else _unconfigured_logger()
        getattr(target, method)(masked.pop("event"), **masked)

    def debug(self, event: str, **fields: Any) -> None:
        """Log ``event`` at debug level with ``fields``."""
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Log ``event`` at info level with ``fields``."""
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Log ``event`` at warning level with ``fields``."""
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Log ``event`` at error level with ``fields``."""
        self._emit("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        """Log ``event`` at critical level with ``fields``."""
        self._emit("critical", event, fields)


def get_logger(name: str) -> Any:
    """Return the logger of a scalable module (configures nothing; see the module docstring)."""
    return _Logger(name)
