"""Logging: structlog, JSON when not on a TTY, secrets redacted from every event.

``notify`` is the other channel: a plain line for a person watching a terminal (a long wait,
say), printed on stderr only when it is a TTY, never a log event.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

from pls_sync.errors import redact

_known_secrets: list[str] = []

# When set, ``notify`` hands its lines here instead of stderr, TTY or not (tests capture them).
notice_sink: Callable[[str], None] | None = None
# True once ``configure_logging`` sends JSON logs to stderr: notices then stay out of it.
_json_on_stderr = False


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
    command output on stdout stays clean. While JSON goes to stderr, ``notify`` stays silent.
    """
    global _json_on_stderr
    if stream is None:
        stream = sys.stdout if os.environ.get("PLS_SYNC_LOG_STREAM") == "stdout" else sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    _json_on_stderr = use_json and stream is sys.stderr
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


def _stderr_is_terminal() -> bool:
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError, OSError):  # a replaced or closed stream
        return False


def notify(message: str) -> None:
    """Tell a person at a terminal what is happening, e.g. why the run pauses.

    ``message`` goes to stderr as one line, only when stderr is a TTY and does not carry JSON
    logs; it is never a log event. When ``notice_sink`` is set it receives the line instead.
    """
    text = redact(message, _known_secrets)
    if notice_sink is not None:
        notice_sink(text)
        return
    if _json_on_stderr or not _stderr_is_terminal():
        return
    print(text, file=sys.stderr, flush=True)
