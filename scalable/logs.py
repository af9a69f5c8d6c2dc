"""structlog, configured once from ``SCALABLE_LOG_FORMAT`` and ``SCALABLE_LOG_LEVEL``.

Log lines go to stderr so that stdout stays clean for data (CLI output, bench JSON).
A processor masks anything that looks like a credential before a line is rendered.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

__all__ = ["configure_logging", "get_logger", "mask_secrets"]

_lock = threading.Lock()
_configured = False

# key=value or "key": "value" pairs whose key smells of a secret, and signed-URL query strings.
_SECRET_KV = re.compile(
    r"(?i)((?:secret|password|passwd|token|key|signature|credential|sig|x-amz-[a-z-]+)"
    r"[\"']?\s*[=:]\s*[\"']?)([^\s\"'&,}]+)"
)
_URL_USERINFO = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)([^/@\s]+)@")
_SECRET_FIELDS = ("secret", "password", "token", "hmac", "credential", "signature")


def mask_secrets(text: str) -> str:
    """Return ``text`` with URL credentials and ``key=value`` secrets replaced by ``***``."""
    text = _URL_USERINFO.sub(r"\1***@", text)
    return _SECRET_KV.sub(r"\1***", text)


def _mask_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event_dict.items()):
        if any(s in key.lower() for s in _SECRET_FIELDS):
            event_dict[key] = "***"
        elif isinstance(value, str):
            event_dict[key] = mask_secrets(value)
    return event_dict


def configure_logging(log_format: str | None = None, log_level: str | None = None, *, force: bool = False) -> None:
    """Configure structlog for scalable; later calls are no-ops unless ``force``.

    Args:
        log_format: ``console`` or ``json``; from settings when omitted.
        log_level: a level name; from settings when omitted.
        force: reconfigure even if already configured (used by the CLI's ``--debug``).
    """
    global _configured
    with _lock:
        if _configured and not force:
            return
        if log_format is None or log_level is None:
            from scalable.settings import load_settings

            try:
                s = load_settings()
                log_format = log_format or s.log_format
                log_level = log_level or s.log_level
            except Exception:  # a bad setting is reported by whoever loads it for real
                log_format, log_level = log_format or "console", log_level or "warning"
        renderer: Any = (
            structlog.processors.JSONRenderer()
            if log_format == "json"
            else structlog.dev.ConsoleRenderer(colors=False)
        )
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                _mask_processor,
                renderer,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[log_level.upper()]),
            logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
            cache_logger_on_first_use=False,
        )
        _configured = True


def get_logger(name: str) -> Any:
    """Return a structlog logger named ``name``, configuring logging on first use."""
    configure_logging()
    return structlog.get_logger(name)
