"""The project's error tree, named for what the caller should do.

Connectors translate every vendor error into one of these:

* ``RetriableError``: try the same call again later (429, 5xx, timeouts, row locks).
* ``FatalError``: stop this destination or run; retrying will not help (bad credentials,
  missing permissions, daily limit exhausted, unreachable warehouse).
* per-record rejections are not exceptions: they are ``RecordRejection`` values returned
  with a write result, so one bad record never fails its batch.

``ConfigError`` carries every configuration problem found, each with file, line and key.
Messages never contain secrets: connectors pass them through ``redact`` first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass


class PlsSyncError(Exception):
    """Base class of every error pls-sync raises on purpose."""


class RetriableError(PlsSyncError):
    """A transient failure: the same call may succeed later.

    ``retry_after`` is the server's hint in seconds (Retry-After), when it gave one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, code: str | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.code = code


class RateLimitedError(RetriableError):
    """The API asked us to slow down (HTTP 429, REQUEST_LIMIT_EXCEEDED on a burst)."""


class FatalError(PlsSyncError):
    """A failure that retrying will not cure; the destination or run stops."""

    def __init__(self, message: str, *, code: str | None = None):
        super().__init__(message)
        self.code = code


class AuthError(FatalError):
    """Credentials are missing, wrong or expired beyond repair."""


class QuotaExhaustedError(FatalError):
    """The daily API allowance is used up: stop writing, leave the rest for the next run."""


class RunLockedError(FatalError):
    """Another run holds the run lock in the state store; this one does not start."""


class WarehouseError(FatalError):
    """The warehouse cannot be reached or does not hold the expected tables and columns."""


def format_key(path: tuple[str | int, ...]) -> str:
    """The dotted form of a key path: ``destinations.salesforce.batch_size``, ``jobs[0].cron``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def nearest_line(
    lines: Mapping[tuple[str | int, ...], int], path: tuple[str | int, ...]
) -> int | None:
    """The line of ``path`` in a file's ``lines``, or of its nearest ancestor written there."""
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One configuration problem: where it is and what is wrong."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


class ConfigError(PlsSyncError):
    """Configuration is invalid; carries every issue found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


_SECRET_PATTERNS = [
    # Salesforce session ids look like 00D...!AQ... ; HubSpot private app tokens start with pat-
    re.compile(r"00D[A-Za-z0-9]{12,15}![A-Za-z0-9._\-]+"),
    re.compile(r"pat-[a-z0-9]{2,4}-[A-Za-z0-9\-]{8,}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-!]+"),
    re.compile(
        r"(?i)((?:password|passwd|secret|token|api[_-]?key|session[_-]?id)\s*[=:]\s*)[^\s&,;'\"]+"
    ),
    re.compile(r"(?i)(://[^:/@\s]+:)[^@\s]+(@)"),
]


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Remove credentials from ``text``: known secret values and anything shaped like a token."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        if pattern.groups == 2:
            text = pattern.sub(lambda m: f"{m.group(1)}***{m.group(2)}", text)
        elif pattern.groups == 1:
            text = pattern.sub(lambda m: f"{m.group(1)}***", text)
        else:
            text = pattern.sub("***", text)
    return text
