"""Logging: structlog, JSON when not on a TTY, secrets redacted from every event."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from pls_sync.errors import redact

_known_secrets: list[str] = []


def register_secret(value: str | None) -> None:
    """Make sure ``value`` is masked wherever it would appear in a log event."""
    if value and len(value) >= 4 and value not in _known_secrets:
        _known_secrets.append(value)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value, _known_secrets)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_value(v) for v in value)
    return value


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor masking credentials in every value of an event."""
    for key, value in list(event_dict.items()):
        event_dict[key] = _redact_value(value)
    return event_dict


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Set up structlog: ``json``, ``console`` or ``auto`` (JSON unless the stream is a TTY).

    Logs go to stderr unless ``PLS_SYNC_LOG_STREAM=stdout`` (the container sets it), so that
    command output on stdout stays clean.
    """
    if stream is None:
        stream = sys.stdout if os.environ.get("PLS_SYNC_LOG_STREAM") == "stdout" else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
