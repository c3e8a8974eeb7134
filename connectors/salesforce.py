"""Salesforce as a ``CrmDestination``, through simple-salesforce.

Reads with SOQL (paged through ``nextRecordsUrl``), writes with sObject Collections
(``PATCH composite/sobjects``, at most 200 records a request, ``allOrNone`` false) and turns every
vendor error into the project's error tree. simple-salesforce has no collections helper, so the
endpoint is called through ``Salesforce.restful``.

Which org it is comes from ``SELECT Id FROM Organization``; deleted and merged records from the
sObject Get Deleted resource.

References:
https://developer.salesforce.com/docs/platform/api-rest/guide/resources-query.md
https://developer.salesforce.com/docs/platform/api-rest/guide/resources-getdeleted.md
https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-update.html
https://developer.salesforce.com/docs/platform/api-rest/guide/errorcodes.md
"""

from __future__ import annotations

import functools
import ipaddress
import math
import numbers
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import requests
import structlog
from simple_salesforce import Salesforce, SalesforceLogin
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connectors.credentials import get_secret
from connectors.retrying import CallTrace, call_with_retries, current_trace, http_date
from pls_sync.errors import (
    AuthError,
    FatalError,
    PlsSyncError,
    QuotaExhaustedError,
    RateLimitedError,
    RetriableError,
    redact,
)
from pls_sync.logs import register_secret
from pls_sync.mapping import DestinationMapping
from pls_sync.models import (
    CrmRecord,
    FieldSpec,
    FieldType,
    RecordChange,
    RecordRejection,
    WriteResult,
)
from pls_sync.planning import truncate

log = structlog.get_logger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0
MAX_BATCH_SIZE = 200  # the sObject Collections maximum
# Above this many changed records a write goes through Bulk API 2.0 ("any data operation that
# includes more than 2,000 records is a good candidate for Bulk API 2.0"):
# https://developer.salesforce.com/docs/platform/salesforce-app-limits-cheatsheet/guide/salesforce-app-limits-platform-bulkapi.html
DEFAULT_BULK_THRESHOLD = 2000
LOCK_CODES = frozenset({"UNABLE_TO_LOCK_ROW"})
# A trigger or flow whose own DML meets a row lock fails the parent's save with this code and
# the lock in its message ("...; first error: UNABLE_TO_LOCK_ROW, unable to obtain exclusive
# access to this record or 1 records: 001...").
_TRIGGER_FAILURE = "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"
# Request-level error codes that a later attempt may not meet again.
_RETRIABLE_REQUEST_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"})
# Read with every record: identity, recency and hierarchy for matching (dropped when the
# object has no such field).
BASE_FIELDS = ("Id", "Name", "LastModifiedDate", "ParentId", "OwnerId")

ORGANIZATION_SOQL = "SELECT Id FROM Organization"
_ORG_ID = re.compile(r"^00D[A-Za-z0-9]{15}$")
# getDeleted's start must precede its end by more than a minute, seconds ignored.
MIN_DELETED_WINDOW = timedelta(minutes=2)
# getDeleted errors that mean "not for this window": read everything instead.
_DELETED_UNANSWERABLE = frozenset({"INVALID_REPLICATION_DATE", "EXCEEDED_ID_LIMIT"})

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_FIELD_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*$")
_DOMAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")

_TYPES: dict[str, FieldType] = {
    "double": FieldType.NUMBER,
    "currency": FieldType.NUMBER,
    "percent": FieldType.NUMBER,
    "int": FieldType.INTEGER,
    "long": FieldType.INTEGER,
    "string": FieldType.STRING,
    "email": FieldType.STRING,
    "url": FieldType.STRING,
    "phone": FieldType.STRING,
    "encryptedstring": FieldType.STRING,
    "combobox": FieldType.STRING,
    "textarea": FieldType.TEXTAREA,
    "picklist": FieldType.PICKLIST,
    "multipicklist": FieldType.MULTIPICKLIST,
    "date": FieldType.DATE,
    "datetime": FieldType.DATETIME,
    "boolean": FieldType.BOOLEAN,
    "id": FieldType.ID,
    "reference": FieldType.ID,
}
_NUMBER_TYPES = (FieldType.NUMBER, FieldType.INTEGER)

KEY_FILE_VARIABLE = "SALESFORCE_PRIVATE_KEY_FILE"

_VARIABLE_SETS = (
    ("SALESFORCE_INSTANCE_URL", "SALESFORCE_SESSION_ID"),
    ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN"),
    ("SALESFORCE_USERNAME", "SALESFORCE_CONSUMER_KEY", "SALESFORCE_PRIVATE_KEY_FILE"),
)


# --- names and SOQL literals -------------------------------------------------------------


def check_object_name(name: str) -> str:
    """Return ``name`` when it is a plain sObject API name; raise ``FatalError`` otherwise."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise FatalError(f"invalid Salesforce object name {name!r}", code="INVALID_NAME")
    return name


def check_field_name(name: str, *, allow_path: bool = True) -> str:
    """Return ``name`` when it is a field API name (``a.b`` relationship paths allowed)."""
    pattern = _FIELD_PATH if allow_path else _NAME
    if not isinstance(name, str) or not pattern.match(name):
        raise FatalError(f"invalid Salesforce field name {name!r}", code="INVALID_NAME")
    return name


_SOQL_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


def soql_quote(value: str, *, like: bool = False) -> str:
    """``value`` as a quoted SOQL string literal, every reserved character escaped.

    Backslash, both quotes, newline, carriage return, tab, backspace and form feed use their
    SOQL escapes; any other control character becomes ``\\uXXXX``. With ``like`` the LIKE
    wildcards ``%`` and ``_`` are escaped too, so they match themselves.
    https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_quotedstringescapes.htm
    """
    out: list[str] = []
    for char in str(value):
        if char in _SOQL_ESCAPES:
            out.append(_SOQL_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        elif like and char in "%_":
            out.append("\\" + char)
        else:
            out.append(char)
    return "'" + "".join(out) + "'"


def soql_datetime(value: datetime) -> str:
    """A SOQL dateTime literal (unquoted, UTC), e.g. ``2026-11-22T10:00:00Z``; naive means UTC."""
    utc = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- values --------------------------------------------------------------------------------


def parse_sf_datetime(value: Any) -> datetime | None:
    """An aware UTC datetime from Salesforce's ``2026-11-22T10:00:00.000+0000`` (or ``Z``)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00")
    if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = f"{text[:-2]}:{text[-2:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _wire_datetime(value: datetime) -> str:
    utc = _utc(value)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _fit(text: str, spec: FieldSpec | None) -> str:
    if spec is not None and spec.length and len(text) > spec.length:
        return truncate(text, spec.length)
    return text


def _whole(value: numbers.Real | Decimal) -> int:
    return int(value) if isinstance(value, numbers.Integral) else int(round(value))


def _scaled(value: numbers.Real | Decimal, scale: int | None) -> int | float:
    """A NUMBER field's value: whole at scale 0, rounded to a positive scale, else as it is."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if scale is None:
        return float(value)
    if scale <= 0:
        return int(round(float(value), scale))
    return round(float(value), scale)


def format_value(value: Any, spec: FieldSpec | None) -> Any:
    """A canonical Python value in the JSON form sObject REST expects for the field ``spec``.

    ``None`` clears the field (REST wants null). Numbers are rounded to the field's scale: an
    integer field or a scale-0 number gets a JSON integer (``100``, never ``100.0``) whatever
    Python type the value arrives as, an ``int`` stays exact. Datetimes are ISO 8601 UTC with
    milliseconds (or a date for DATE fields), lists are joined with ``"; "`` (``";"`` for
    multi-select picklists) and text is cut to the field's length.
    """
    kind = spec.type if spec is not None else None
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (numbers.Real, Decimal)):
        if not isinstance(value, numbers.Integral) and not math.isfinite(value):
            return None
        if kind is FieldType.INTEGER:
            return _whole(value)
        if kind is None or kind is FieldType.NUMBER:
            return _scaled(value, spec.scale if spec is not None else None)
        number = float(value)
        return _fit(str(int(number)) if number.is_integer() else str(value), spec)
    if isinstance(value, datetime):
        if kind is FieldType.DATE:
            return _utc(value).date().isoformat()
        return _wire_datetime(value)
    if isinstance(value, date):
        if kind is FieldType.DATETIME:
            return _wire_datetime(datetime(value.year, value.month, value.day, tzinfo=UTC))
        return value.isoformat()
    if isinstance(value, (list, tuple, set, frozenset)):
        separator = ";" if kind is FieldType.MULTIPICKLIST else "; "
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        text = separator.join(str(item) for item in items if item is not None and str(item) != "")
        return _fit(text, spec)
    return _fit(str(value), spec)


def field_spec(field: Mapping[str, Any]) -> FieldSpec:
    """A ``FieldSpec`` from one entry of an sObject describe's ``fields``."""
    kind = _TYPES.get(str(field.get("type", "")).lower(), FieldType.OTHER)
    length = field.get("length") or None
    scale = field.get("scale") if kind is FieldType.NUMBER else None
    picklist = tuple(
        str(entry["value"])
        for entry in field.get("picklistValues") or ()
        if isinstance(entry, Mapping)
        and entry.get("value") is not None
        and entry.get("active", True)
    )
    precision = field.get("precision") or field.get("digits") if kind in _NUMBER_TYPES else None
    return FieldSpec(
        name=str(field["name"]),
        type=kind,
        length=int(length) if length else None,
        updateable=bool(field.get("updateable", False)),
        label=field.get("label"),
        scale=int(scale) if scale is not None else None,
        picklist_values=picklist,
        restricted=bool(field.get("restrictedPicklist", False)),
        precision=int(precision) if precision else None,
        external_id=bool(field.get("externalId", False)),
    )


# --- errors --------------------------------------------------------------------------------


def lock_code(code: str | None, message: str) -> str | None:
    """``UNABLE_TO_LOCK_ROW`` for a row lock in either form (direct, or a trigger's DML failing
    the save with CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY), else ``code`` unchanged."""
    if code == _TRIGGER_FAILURE and "UNABLE_TO_LOCK_ROW" in message:
        return "UNABLE_TO_LOCK_ROW"
    return code


def _error_details(content: Any) -> tuple[str | None, str, tuple[str, ...]]:
    """(errorCode, message, fields) from a Salesforce error body in any of its shapes."""
    if isinstance(content, (bytes, bytearray)):
        content = content.decode("utf-8", "replace")
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        first = content[0]
        code = first.get("errorCode") or first.get("statusCode")
        messages = [str(item.get("message", "")) for item in content if isinstance(item, Mapping)]
        fields = tuple(
            str(name)
            for item in content
            if isinstance(item, Mapping)
            for name in item.get("fields") or ()
        )
        return (str(code) if code else None), "; ".join(m for m in messages if m), fields
    if isinstance(content, Mapping):
        code = content.get("errorCode") or content.get("error")
        message = content.get("message") or content.get("error_description") or ""
        return (str(code) if code else None), str(message), ()
    return None, str(content or "")[:500], ()


def translate(
    exc: BaseException,
    *,
    secrets: Sequence[str] = (),
    retry_after: float | None = None,
) -> PlsSyncError:
    """The project error for a simple-salesforce or requests exception; messages redacted.

    401 / expired session -> ``AuthError`` (code ``INVALID_SESSION_ID``); 403
    ``REQUEST_LIMIT_EXCEEDED`` -> ``QuotaExhaustedError`` for the daily total, else
    ``RateLimitedError``; 429, 5xx, timeouts and connection errors -> ``RetriableError``;
    other 4xx -> ``FatalError`` with Salesforce's message.
    """
    secrets = tuple(secrets)

    def clean(text: str) -> str:
        return redact(text, secrets)

    if isinstance(exc, PlsSyncError):
        return exc
    if isinstance(exc, SalesforceAuthenticationFailed):
        detail = getattr(exc, "auth_message", None) or getattr(exc, "message", "") or ""
        auth_code = str(exc.code) if getattr(exc, "code", None) is not None else "AUTH_FAILED"
        return AuthError(clean(f"Salesforce login failed ({auth_code}): {detail}"), code=auth_code)
    if isinstance(exc, SalesforceError):
        code, message, _fields = _error_details(exc.content)
        code = lock_code(code, message)
        status = exc.status
        what = f"Salesforce {exc.resource_name or 'request'} failed ({status} {code or ''}".rstrip()
        text = clean(f"{what}): {message}" if message else f"{what})")
        if isinstance(exc, SalesforceExpiredSession) or status == 401:
            return AuthError(text, code=code or "INVALID_SESSION_ID")
        if isinstance(exc, SalesforceRefusedRequest) or status == 403:
            if code == "REQUEST_LIMIT_EXCEEDED":
                if "totalrequests" in message.lower().replace(" ", ""):
                    return QuotaExhaustedError(text, code=code)
                return RateLimitedError(text, retry_after=retry_after, code=code)
            return FatalError(text, code=code or "FORBIDDEN")
        if status == 429:
            return RateLimitedError(text, retry_after=retry_after, code=code or "TOO_MANY_REQUESTS")
        if status >= 500 or code in _RETRIABLE_REQUEST_CODES:
            return RetriableError(text, retry_after=retry_after, code=code or f"HTTP_{status}")
        if isinstance(exc, SalesforceResourceNotFound):
            return FatalError(text, code=code or "NOT_FOUND")
        if isinstance(exc, SalesforceMalformedRequest):
            return FatalError(text, code=code or "MALFORMED_REQUEST")
        return FatalError(text, code=code or f"HTTP_{status}")
    if isinstance(exc, (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema)):
        return FatalError(clean(f"Salesforce URL is invalid: {exc}"), code="INVALID_URL")
    if isinstance(exc, requests.exceptions.InvalidURL):
        return FatalError(clean(f"Salesforce URL is invalid: {exc}"), code="INVALID_URL")
    if isinstance(exc, requests.Timeout):
        return RetriableError(clean(f"Salesforce request timed out: {exc}"), code="TIMEOUT")
    if isinstance(exc, requests.ConnectionError):
        return RetriableError(clean(f"cannot reach Salesforce: {exc}"), code="CONNECTION_ERROR")
    if isinstance(exc, requests.RequestException):
        return RetriableError(clean(f"Salesforce request failed: {exc}"), code="REQUEST_ERROR")
    return FatalError(clean(f"Salesforce call failed: {type(exc).__name__}: {exc}"))


_API_USAGE = re.compile(r"(?:^|[;,\s])api-usage=(\d+)/(\d+)")


def parse_limit_info(header: str | None) -> tuple[int, int] | None:
    """(remaining, max) from ``Sforce-Limit-Info: api-usage=25/15000`` (used/max), else None.

    https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm
    """
    match = _API_USAGE.search(header or "")
    if not match:
        return None
    used, total = int(match.group(1)), int(match.group(2))
    return max(total - used, 0), total


def _is_expired_session(error: PlsSyncError) -> bool:
    return isinstance(error, AuthError) and error.code == "INVALID_SESSION_ID"


def _retry_after_seconds(header: str | None) -> float | None:
    if not header:
        return None
    header = header.strip()
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# --- HTTP plumbing ---------------------------------------------------------------------------


class TimeoutSession(requests.Session):
    """A ``requests.Session`` that applies a default timeout to every request, logins included."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> requests.Response:
        """Send the request with ``timeout`` defaulting to this session's."""
        if len(args) < 7:  # positionally, timeout comes seventh after method and url
            kwargs.setdefault("timeout", self.default_timeout)
        return super().request(method, url, *args, **kwargs)


def _trace_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """Session hook: report each answer (logins and Bulk API 2.0 included) to the current
    ``CallTrace``, for the DEBUG ``crm_call`` event."""
    trace = current_trace()
    if trace is not None:
        request = response.request
        trace.answered(response.status_code, request.method, request.url)


def _install_trace_hook(http: requests.Session) -> None:
    hooks = http.hooks.setdefault("response", [])
    if _trace_response not in hooks:
        hooks.append(_trace_response)


# --- the JWT bearer key ------------------------------------------------------------------------


def _key_error(path: str, reason: str) -> AuthError:
    return AuthError(
        f"{KEY_FILE_VARIABLE} ({path}): not a PEM private key ({reason})",
        code="INVALID_PRIVATE_KEY",
    )


def _read_key_file(path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise _key_error(path, "no such file") from None
    except IsADirectoryError:
        raise _key_error(path, "it is a directory") from None
    except PermissionError:
        raise _key_error(path, "cannot read it: permission denied") from None
    except OSError as exc:
        raise _key_error(path, f"cannot read it: {exc.strerror or type(exc).__name__}") from None
    if not data.strip():
        raise _key_error(path, "the file is empty")
    return data


def _unparsed_key_reason(data: bytes) -> str:
    """Why PEM data that did not load as a private key is not one (from its armour lines)."""
    if b"-----BEGIN" not in data:
        return "no PEM block in it"
    if b"PRIVATE KEY-----" not in data:
        if b"PUBLIC KEY-----" in data:
            return "it holds a public key; the private key is needed"
        if b"CERTIFICATE-----" in data:
            return "it holds a certificate; the private key is needed"
    return "its PEM data cannot be read"


def private_key_pem(path: str) -> str:
    """The RSA private key in file ``path`` as unencrypted PKCS#8 PEM, for signing the JWT.

    Garbage, a public key or certificate, an encrypted or non-RSA key, an empty file, a
    directory or an unreadable file raise ``AuthError``: ``SALESFORCE_PRIVATE_KEY_FILE (<path>):
    not a PEM private key (<reason>)``. No message ever carries key material.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's answer to an encrypted key without a password
        raise _key_error(path, "it is encrypted; an unencrypted key is needed") from None
    except (ValueError, UnsupportedAlgorithm):
        raise _key_error(path, _unparsed_key_reason(data)) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _key_error(path, "not an RSA key; the JWT bearer flow signs with RS256")
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _jwt_login(
    username: str,
    consumer_key: str,
    key_file: str,
    *,
    api_version: str,
    http: requests.Session,
    domain: str,
) -> tuple[str, str]:
    """(session id, instance) by the OAuth 2.0 JWT bearer flow, the key read at each login."""
    from jwt.exceptions import PyJWTError

    key = private_key_pem(key_file)
    try:
        return SalesforceLogin(
            username=username,
            consumer_key=consumer_key,
            privatekey=key,
            sf_version=api_version,
            session=http,
            domain=domain,
        )
    except (SalesforceError, requests.RequestException):
        raise
    except (ValueError, TypeError, PyJWTError) as exc:  # signing with the key failed
        raise _key_error(key_file, f"signing the JWT failed: {type(exc).__name__}") from None


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _session_salesforce(
    instance_url: str, session_id: str, api_version: str, http: requests.Session
) -> Salesforce:
    """A Salesforce client for a ready session; plain http only for a local sandbox."""
    parsed = urlparse(instance_url)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise FatalError(
            "SALESFORCE_INSTANCE_URL must be a URL such as https://acme.my.salesforce.com",
            code="INVALID_URL",
        )
    if parsed.scheme == "http" and not _is_loopback(parsed.hostname):
        raise FatalError(
            "SALESFORCE_INSTANCE_URL must use https (plain http only for a local sandbox)",
            code="INVALID_URL",
        )
    sf = Salesforce(
        instance_url=instance_url, session_id=session_id, version=api_version, session=http
    )
    if parsed.scheme == "http":
        # simple-salesforce always builds https URLs; the local sandbox speaks plain http.
        for attr in (
            "base_url",
            "apex_url",
            "bulk_url",
            "bulk2_url",
            "metadata_url",
            "tooling_url",
            "oauth2_url",
        ):
            value = getattr(sf, attr, None)
            if isinstance(value, str) and value.startswith("https://"):
                setattr(sf, attr, "http://" + value[len("https://") :])
    return sf


def _missing_credentials_message(env: Mapping[str, str]) -> str:
    present = {name for names in _VARIABLE_SETS for name in names if get_secret(name, env)}
    options = "; or ".join(", ".join(names) for names in _VARIABLE_SETS)
    message = (
        f"Salesforce credentials are missing: set {options} "
        "(SALESFORCE_DOMAIN login|test is optional for the last two)"
    )
    closest = max(_VARIABLE_SETS, key=lambda names: sum(name in present for name in names))
    if any(name in present for name in closest):
        missing = [name for name in closest if name not in present]
        message += f"; missing: {', '.join(missing)}"
    return message


# --- the destination -----------------------------------------------------------------------


class SalesforceDestination:
    """Salesforce accounts read with SOQL, written with sObject Collections or Bulk API 2.0."""

    name = "salesforce"

    def __init__(
        self,
        sf: Salesforce,
        *,
        reauthenticate: Callable[[], Salesforce] | None = None,
        batch_size: int = MAX_BATCH_SIZE,
        sleep: Callable[[float], None] = time.sleep,
        secrets: Sequence[str] = (),
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = 5,
        lock_retry_delay: float = 1.0,
        bulk_threshold: int = DEFAULT_BULK_THRESHOLD,
        bulk_poll_interval: float = 1.0,
        bulk_max_poll_interval: float = 30.0,
        bulk_timeout: float = 3600.0,
        bulk_max_job_bytes: int | None = None,
    ) -> None:
        """Wrap a ready ``simple_salesforce.Salesforce``.

        ``reauthenticate`` returns a fresh client when the session expires (once per call).
        ``secrets`` are masked in every message and log event, with each session id.
        More than ``bulk_threshold`` changed records are written with Bulk API 2.0 jobs of at
        most ``bulk_max_job_bytes`` of CSV, polled from ``bulk_poll_interval`` seconds, doubling
        up to ``bulk_max_poll_interval``, for at most ``bulk_timeout`` seconds of waiting.
        """
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise FatalError(f"Salesforce batch_size must be between 1 and {MAX_BATCH_SIZE}")
        if bulk_threshold < 0:
            raise FatalError("Salesforce bulk_threshold must not be negative")
        self._bulk_threshold = bulk_threshold
        self._bulk_poll_interval = bulk_poll_interval
        self._bulk_max_poll_interval = bulk_max_poll_interval
        self._bulk_timeout = bulk_timeout
        self._bulk_max_job_bytes = bulk_max_job_bytes
        self._reauthenticate = reauthenticate
        self._batch_size = batch_size
        self.sleep = sleep
        self.timeout = timeout
        self._attempts = attempts
        self._lock_retry_delay = lock_retry_delay
        self._secrets: list[str] = []
        for secret in secrets:
            self._add_secret(secret)
        self._calls = {"read": 0, "write": 0, "describe": 0, "auth": 0, "limits": 0}
        self._describe_cache: dict[str, dict[str, FieldSpec]] = {}
        self._usage: tuple[int, int] | None = None
        self._retry_after: float | None = None
        self._server_time: datetime | None = None  # the last answer's Date
        self._write_uncertain = False  # a write request was retried in this write
        self._identity: str | None = None
        # latestDateCovered of the last getDeleted answer: deletions after it (at most the
        # current minute) come in a later window.
        self.deleted_covered_until: datetime | None = None
        self._sf = sf
        self._adopt(sf)

    # construction from the environment

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        api_version: str = "59.0",
        batch_size: int = MAX_BATCH_SIZE,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        bulk_threshold: int = DEFAULT_BULK_THRESHOLD,
    ) -> SalesforceDestination:
        """Build from environment variables (or ``/run/secrets`` files).

        Session: ``SALESFORCE_INSTANCE_URL`` + ``SALESFORCE_SESSION_ID``. Password:
        ``SALESFORCE_USERNAME`` + ``SALESFORCE_PASSWORD`` + ``SALESFORCE_SECURITY_TOKEN``.
        JWT bearer: ``SALESFORCE_USERNAME`` + ``SALESFORCE_CONSUMER_KEY`` +
        ``SALESFORCE_PRIVATE_KEY_FILE``. ``SALESFORCE_DOMAIN`` (login | test | My Domain)
        applies to the last two. Missing credentials raise ``AuthError`` naming the variables.
        ``bulk_threshold``: more changed records than this go through Bulk API 2.0.
        """
        env = os.environ if env is None else env

        def secret(name: str) -> str | None:
            return get_secret(name, env)

        http = session if session is not None else TimeoutSession(DEFAULT_TIMEOUT)
        _install_trace_hook(http)
        instance_url = secret("SALESFORCE_INSTANCE_URL")
        session_id = secret("SALESFORCE_SESSION_ID")
        username = secret("SALESFORCE_USERNAME")
        password = secret("SALESFORCE_PASSWORD")
        token = secret("SALESFORCE_SECURITY_TOKEN")
        consumer_key = secret("SALESFORCE_CONSUMER_KEY")
        key_file = secret("SALESFORCE_PRIVATE_KEY_FILE")
        domain = secret("SALESFORCE_DOMAIN") or "login"
        secrets = [value for value in (session_id, password, token) if value]
        for value in secrets:
            register_secret(value)

        if instance_url and session_id:
            sf = _session_salesforce(instance_url, session_id, api_version, http)
            return cls(
                sf,
                batch_size=batch_size,
                sleep=sleep,
                secrets=secrets,
                bulk_threshold=bulk_threshold,
            )

        if not _DOMAIN.match(domain):
            raise AuthError("SALESFORCE_DOMAIN must be login, test or a My Domain prefix")
        login: Callable[[], Salesforce]
        if username and password and token:

            def login() -> Salesforce:
                new_id, instance = SalesforceLogin(
                    username=username,
                    password=password,
                    security_token=token,
                    sf_version=api_version,
                    session=http,
                    domain=domain,
                )
                return Salesforce(
                    session_id=new_id, instance=instance, version=api_version, session=http
                )

        elif username and consumer_key and key_file:
            private_key_pem(key_file)  # a wrong file is one clear line before any request
            # str, not str | None, inside the closure
            jwt_user, jwt_consumer, jwt_key_file = username, consumer_key, key_file

            def login() -> Salesforce:
                new_id, instance = _jwt_login(
                    jwt_user,
                    jwt_consumer,
                    jwt_key_file,
                    api_version=api_version,
                    http=http,
                    domain=domain,
                )
                return Salesforce(
                    session_id=new_id, instance=instance, version=api_version, session=http
                )

        else:
            raise AuthError(_missing_credentials_message(env))

        def first_login() -> Salesforce:
            try:
                return login()
            except (SalesforceError, requests.RequestException) as exc:
                raise translate(exc, secrets=secrets) from None

        sf = call_with_retries(first_login, sleep=sleep, trace=CallTrace(cls.name, "auth"))
        destination = cls(
            sf,
            reauthenticate=login,
            batch_size=batch_size,
            sleep=sleep,
            secrets=secrets,
            bulk_threshold=bulk_threshold,
        )
        destination._calls["auth"] += 1
        return destination

    # the session and its secrets

    def _add_secret(self, value: str | None) -> None:
        if value and len(value) >= 4 and value not in self._secrets:
            self._secrets.append(value)
            register_secret(value)

    def _adopt(self, sf: Salesforce) -> None:
        self._sf = sf
        self._add_secret(getattr(sf, "session_id", None))
        hooks = sf.session.hooks.setdefault("response", [])
        if self._remember_retry_after not in hooks:
            hooks.append(self._remember_retry_after)
        _install_trace_hook(sf.session)

    def _remember_retry_after(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        # A session hook sees every response, Bulk API 2.0 ones included, which simple-salesforce
        # sends without parsing Sforce-Limit-Info.
        self._server_time = http_date(response.headers.get("Date")) or self._server_time
        if response.status_code >= 400:
            self._retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
        usage = parse_limit_info(response.headers.get("Sforce-Limit-Info"))
        if usage is not None:
            self._usage = usage

    def redact_secrets(self, text: str) -> str:
        """``text`` with this client's session id, password and token masked."""
        return redact(text, self._secrets)

    def translate(self, exc: BaseException) -> PlsSyncError:
        """``translate`` with this client's secrets and the last Retry-After hint."""
        return translate(exc, secrets=self._secrets, retry_after=self._retry_after)

    def _reauth(self) -> None:
        if self._reauthenticate is None:
            raise AuthError("Salesforce session expired or invalid", code="INVALID_SESSION_ID")
        self._calls["auth"] += 1
        try:
            sf = call_with_retries(
                self._reauthenticate, attempts=1, trace=CallTrace(self.name, "auth")
            )
        except (SalesforceError, requests.RequestException) as exc:
            error = self.translate(exc)
            if isinstance(error, RetriableError):
                raise error from None
            raise AuthError(
                self.redact_secrets(f"Salesforce re-authentication failed: {error}"),
                code="AUTH_FAILED",
            ) from None
        except RetriableError:
            raise
        except PlsSyncError as exc:
            raise AuthError(
                self.redact_secrets(f"Salesforce re-authentication failed: {exc}"),
                code="AUTH_FAILED",
            ) from None
        self._adopt(sf)
        log.info("salesforce_reauthenticated")

    def _on_retry(self, error: RetriableError, attempt: int, wait: float) -> None:
        log.warning(
            "salesforce_retry",
            error=self.redact_secrets(str(error)),
            code=error.code,
            attempt=attempt,
            wait_seconds=round(wait, 3),
        )

    def call(self, kind: str, fn: Callable[[Salesforce], T]) -> T:
        """Run ``fn(sf)``: count it, translate errors, re-authenticate once, retry transients.

        At DEBUG each HTTP attempt is a ``crm_call`` event with ``endpoint`` ``kind``.
        """
        reauthenticated = False
        trace = CallTrace(self.name, kind)

        def attempt() -> T:
            nonlocal reauthenticated
            while True:
                self._calls[kind] += 1
                self._retry_after = None
                try:
                    result = fn(self._sf)
                except (SalesforceError, requests.RequestException) as exc:
                    trace.failed(exc)
                    error = self.translate(exc)
                    if _is_expired_session(error):
                        if not reauthenticated and self._reauthenticate is not None:
                            trace.emit(then="reauthenticate")
                            self._reauth()
                            reauthenticated = True
                            trace.begin(trace.attempt)
                            continue
                        suffix = " after re-authenticating" if reauthenticated else ""
                        raise AuthError(
                            self.redact_secrets(
                                f"Salesforce session expired or invalid{suffix}: {error}"
                            ),
                            code="INVALID_SESSION_ID",
                        ) from None
                    raise error from None
                return result

        return call_with_retries(
            attempt,
            attempts=self._attempts,
            sleep=self.sleep,
            on_retry=self._on_write_retry if kind == "write" else self._on_retry,
            trace=trace,
        )

    def _on_write_retry(self, error: RetriableError, attempt: int, wait: float) -> None:
        # The attempt that failed may still be applied later (a timeout, a lost answer).
        self._write_uncertain = True
        self._on_retry(error, attempt, wait)

    # CrmDestination

    def api_calls(self) -> dict[str, int]:
        """Calls made so far: ``read`` (query pages), ``write``, ``describe``, ``auth``, ``limits``."""
        return dict(self._calls)

    def describe(self, object_name: str) -> dict[str, FieldSpec]:
        """The object's fields by API name (sObject Describe, cached per client)."""
        name = check_object_name(object_name)
        cached = self._describe_cache.get(name.lower())
        if cached is not None:
            return dict(cached)
        path = f"sobjects/{name}/describe/"
        payload = self.call("describe", lambda sf: sf.restful(path, timeout=self.timeout))
        if not isinstance(payload, Mapping) or not isinstance(payload.get("fields"), list):
            raise FatalError(f"Salesforce describe of {name} returned no fields")
        specs = {
            spec.name: spec
            for spec in (field_spec(f) for f in payload["fields"] if isinstance(f, Mapping))
        }
        self._describe_cache[name.lower()] = specs
        return dict(specs)

    def soql_for(self, mapping: DestinationMapping, where: str | None = None) -> str:
        """The SOQL reading ``mapping``'s object: base, domain and read fields (the mapped
        targets, then the firmographic fields, read but never written), deduplicated."""
        name = check_object_name(mapping.object)
        # Names come from config: refuse anything but API names before any call is made.
        configured = [check_field_name(field) for field in mapping.match.domain_fields]
        configured += [check_field_name(field) for field in mapping.read_fields]
        known = {field.lower() for field in self.describe(name)}
        wanted = [field for field in BASE_FIELDS if field.lower() in known or field == "Id"]
        wanted += configured
        fields: list[str] = []
        seen: set[str] = set()
        for field in wanted:
            if field.lower() not in seen:
                seen.add(field.lower())
                fields.append(field)
        soql = f"SELECT {', '.join(fields)} FROM {name}"
        return f"{soql} WHERE {where}" if where else soql

    def read_records(self, mapping: DestinationMapping) -> Iterator[CrmRecord]:
        """Every record of the mapping's object, page by page (the server picks the page size)."""
        return self._read(mapping, self.soql_for(mapping))

    def read_records_modified_since(
        self, mapping: DestinationMapping, since: datetime
    ) -> Iterator[CrmRecord]:
        """Records of the mapping's object changed after ``since``.

        SystemModstamp rather than LastModifiedDate: it is indexed, and system changes
        (automation, cascades) move it too.
        """
        return self._read(
            mapping, self.soql_for(mapping, f"SystemModstamp > {soql_datetime(since)}")
        )

    def crm_identity(self) -> str:
        """``salesforce:<18-character org id>``: which org this is, from ``SELECT Id FROM
        Organization`` (one read call, then cached for the client's life)."""
        if self._identity is None:
            page = self.call("read", lambda sf: sf.query(ORGANIZATION_SOQL, timeout=self.timeout))
            records = page.get("records") if isinstance(page, Mapping) else None
            first = records[0] if isinstance(records, list) and records else None
            org_id = first.get("Id") if isinstance(first, Mapping) else None
            if not isinstance(org_id, str) or not _ORG_ID.match(org_id):
                raise FatalError(
                    f"Salesforce answered {ORGANIZATION_SOQL} without an 18-character org id",
                    code="NO_ORGANIZATION_ID",
                )
            self._identity = f"salesforce:{org_id}"
        return self._identity

    def read_deleted_since(
        self, mapping: DestinationMapping, since: datetime, *, until: datetime | None = None
    ) -> list[str] | None:
        """Ids of the mapping's object deleted (merge losers included) from ``since`` to now.

        One sObject Get Deleted call (``sobjects/<object>/deleted/?start=&end=``; the resource
        has no paging). ``until`` (default: this machine's clock) is the window's end; the
        window starts at least two minutes before it, since the API drops seconds and wants
        ``start`` more than a minute before ``end``. ``None`` when Salesforce cannot answer
        for the window (``INVALID_REPLICATION_DATE``: before ``earliestDateAvailable``, 15 days
        back at most, or after a purge; ``EXCEEDED_ID_LIMIT``: over 600,000 ids): the caller
        reads everything instead. Other errors raise as for any call. Sets
        ``deleted_covered_until`` to the answer's ``latestDateCovered``.
        """
        name = check_object_name(mapping.object)
        end = _utc(until) if until is not None else datetime.now(UTC)
        start = min(_utc(since), end - MIN_DELETED_WINDOW).replace(second=0, microsecond=0)
        params = {"start": start.isoformat(), "end": end.replace(microsecond=0).isoformat()}
        path = f"sobjects/{name}/deleted/"
        try:
            payload = self.call(
                "read", lambda sf: sf.restful(path, params=params, timeout=self.timeout)
            )
        except FatalError as exc:
            if exc.code not in _DELETED_UNANSWERABLE:
                raise
            log.info(
                "salesforce_deleted_unavailable",
                object=name,
                code=exc.code,
                since=start.isoformat(),
            )
            return None
        if not isinstance(payload, Mapping) or not isinstance(payload.get("deletedRecords"), list):
            raise FatalError(f"Salesforce getDeleted of {name} returned no deletedRecords")
        earliest = parse_sf_datetime(payload.get("earliestDateAvailable"))
        if earliest is not None and earliest > start:
            log.info(
                "salesforce_deleted_unavailable",
                object=name,
                since=start.isoformat(),
                earliest=earliest.isoformat(),
            )
            return None
        self.deleted_covered_until = parse_sf_datetime(payload.get("latestDateCovered"))
        return [
            str(item["id"])
            for item in payload["deletedRecords"]
            if isinstance(item, Mapping) and item.get("id")
        ]

    def _read(self, mapping: DestinationMapping, soql: str) -> Iterator[CrmRecord]:
        page = self.call("read", lambda sf: sf.query(soql, timeout=self.timeout))
        while True:
            for record in page.get("records") or ():
                yield _record(record, mapping)
            next_url = page.get("nextRecordsUrl")
            if page.get("done", True) or not next_url:
                return
            page = self.call("read", functools.partial(self.query_more, next_url=next_url))

    def query_more(self, sf: Salesforce, next_url: str) -> Any:
        """The next page of a SOQL result (for ``call("read", partial(query_more, ...))``)."""
        if sf.base_url.startswith("https://"):
            return sf.query_more(next_url, identifier_is_url=True, timeout=self.timeout)
        # simple-salesforce makes nextRecordsUrl https; over the sandbox's http use the locator.
        return sf.query_more(next_url.rstrip("/").rsplit("/", 1)[-1], timeout=self.timeout)

    def write(
        self,
        object_name: str,
        changes: Sequence[RecordChange],
        specs: Mapping[str, FieldSpec],
        *,
        max_write_calls: int | None = None,
        stop: threading.Event | None = None,
    ) -> WriteResult:
        """Write the changed fields; per-record failures come back as rejections.

        Up to ``bulk_threshold`` changes go in sObject Collections batches (``method``
        ``collections``); more go in Bulk API 2.0 jobs (``bulk2``). Records refused with
        ``UNABLE_TO_LOCK_ROW`` (directly, or in a trigger's CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY)
        are sent once more through Collections, in half-size batches, before being reported. A
        request that still fails after retries (or hits the daily quota), a job that times out,
        fails or is aborted, leaves the rest ``not_attempted``; so do a session that cannot be
        renewed partway and a Collections request refused whole (a 400: none of its records
        written, none rejected one by one), and ``result.error`` says why. Other fatal errors
        of a Bulk API 2.0 request raise.

        ``max_write_calls`` caps the HTTP requests: the first changes (the caller sorts them
        by priority) that fit are written, the rest are ``not_attempted`` and ``method`` gets
        a ``+budget`` suffix. A bulk job needs at least ``CALLS_PER_JOB`` requests; below that
        the write falls back to Collections. Polls of a running job are not cut short.

        Once ``stop`` is set, the batch or bulk job in flight finishes and the rest is
        ``not_attempted``.
        """
        from connectors.salesforce_bulk import CALLS_PER_JOB

        name = check_object_name(object_name)
        result = WriteResult(method="collections")
        if not changes:
            return result
        self._write_uncertain = False
        for change in changes:
            for field in change.fields:
                check_field_name(field, allow_path=False)
        limit = None if max_write_calls is None else max(max_write_calls, 0)
        pending = list(changes)
        bulk = len(pending) > self._bulk_threshold and (limit is None or limit >= CALLS_PER_JOB)
        if bulk:
            result.method = "bulk2"
            locked, stopped, budget_hit = self._write_bulk(
                name, pending, specs, result, limit, stop
            )
        else:
            cut: list[RecordChange] = []
            if limit is not None and len(pending) > limit * self._batch_size:
                pending, cut = (
                    pending[: limit * self._batch_size],
                    pending[limit * self._batch_size :],
                )
            locked = []
            unsent, budget_hit = self._write_round(
                name, pending, self._batch_size, specs, result, locked, limit, stop
            )
            result.not_attempted.extend(change.record_id for change in unsent)
            result.not_attempted.extend(change.record_id for change in cut)
            stopped = bool(unsent)
            budget_hit = budget_hit or bool(cut)
        give_up = stopped or (stop is not None and stop.is_set())
        if self._retry_locked(name, locked, specs, result, limit, give_up=give_up):
            budget_hit = True
        if budget_hit:
            result.method += "+budget"
        result.server_time = self._server_time
        result.uncertain = self._write_uncertain
        return result

    def _retry_locked(
        self,
        object_name: str,
        locked: list[tuple[RecordChange, RecordRejection]],
        specs: Mapping[str, FieldSpec],
        result: WriteResult,
        limit: int | None,
        *,
        give_up: bool,
    ) -> bool:
        """Send locked records once more in half-size Collections batches; True if the budget
        cut the retry short. Records not retried keep their first rejection (retriable)."""
        if not locked:
            return False
        if give_up:
            result.rejected.extend(rejection for _, rejection in locked)
            return False
        first = {change.record_id: rejection for change, rejection in locked}
        log.info("salesforce_lock_retry", records=len(locked))
        self.sleep(self._lock_retry_delay)
        still_locked: list[tuple[RecordChange, RecordRejection]] = []
        retry = [change for change, _ in locked]
        unsent, budget_hit = self._write_round(
            object_name, retry, max(1, self._batch_size // 2), specs, result, still_locked, limit
        )
        result.rejected.extend(rejection for _, rejection in still_locked)
        result.rejected.extend(first[change.record_id] for change in unsent)
        return budget_hit

    def _write_round(
        self,
        object_name: str,
        changes: list[RecordChange],
        size: int,
        specs: Mapping[str, FieldSpec],
        result: WriteResult,
        locked: list[tuple[RecordChange, RecordRejection]],
        limit: int | None = None,
        stop: threading.Event | None = None,
    ) -> tuple[list[RecordChange], bool]:
        """Send ``changes`` in batches of ``size``: (the changes left unsent, budget reached)."""
        for start in range(0, len(changes), size):
            if limit is not None and result.calls >= limit:
                return changes[start:], True
            if stop is not None and stop.is_set():
                log.warning("salesforce_write_stopped", reason="stop", unsent=len(changes) - start)
                return changes[start:], False
            batch = changes[start : start + size]
            body = {
                "allOrNone": False,
                "records": [
                    {
                        "attributes": {"type": object_name},
                        "id": change.record_id,
                        **{
                            field: format_value(value, specs.get(field))
                            for field, value in change.fields.items()
                        },
                    }
                    for change in batch
                ],
            }
            before = self._calls["write"]
            try:
                saves = self.call("write", functools.partial(self._patch, body=body))
            except (RetriableError, FatalError) as exc:
                # A request refused whole (400: malformed, over 200 records...) wrote none of its
                # records: no per-record rejections; like an expired session it stops the write,
                # keeping what earlier batches wrote.
                if not isinstance(exc, RetriableError | QuotaExhaustedError):
                    result.error = self.redact_secrets(str(exc))
                result.calls += self._calls["write"] - before
                log.warning(
                    "salesforce_write_stopped",
                    error=self.redact_secrets(str(exc)),
                    code=exc.code,
                    unsent=len(changes) - start,
                )
                return changes[start:], False
            result.calls += self._calls["write"] - before
            _apply_save_results(batch, saves, result, locked, self._secrets)
        return [], False

    def _write_bulk(
        self,
        object_name: str,
        changes: list[RecordChange],
        specs: Mapping[str, FieldSpec],
        result: WriteResult,
        limit: int | None,
        stop: threading.Event | None = None,
    ) -> tuple[list[tuple[RecordChange, RecordRejection]], bool, bool]:
        """Run Bulk API 2.0 jobs: (locked records, stopped early, budget reached)."""
        from connectors.salesforce_bulk import (
            CALLS_PER_JOB,
            MAX_JOB_BYTES,
            BulkIngest,
            apply_outcome,
            build_jobs,
        )

        jobs = build_jobs(changes, specs, max_job_bytes=self._bulk_max_job_bytes or MAX_JOB_BYTES)
        ingest = BulkIngest(
            self._bulk_call,
            sleep=self.sleep,
            poll_interval=self._bulk_poll_interval,
            max_poll_interval=self._bulk_max_poll_interval,
            timeout=self._bulk_timeout,
            secrets=self._secrets,
        )
        locked: list[tuple[RecordChange, RecordRejection]] = []

        def skip(rest: Sequence[Any]) -> None:
            result.not_attempted.extend(c.record_id for job in rest for c in job.changes)

        for index, job in enumerate(jobs):
            if limit is not None and result.calls + CALLS_PER_JOB > limit:
                skip(jobs[index:])
                return locked, False, True
            if stop is not None and stop.is_set():
                log.warning(
                    "salesforce_bulk_stopped",
                    reason="stop",
                    unsent=sum(len(j.changes) for j in jobs[index:]),
                )
                skip(jobs[index:])
                return locked, True, False
            before = self._calls["write"]
            try:
                outcome = ingest.run(object_name, job)
            except (RetriableError, QuotaExhaustedError, AuthError) as exc:
                if isinstance(exc, AuthError):
                    result.error = self.redact_secrets(str(exc))
                result.calls += self._calls["write"] - before
                log.warning(
                    "salesforce_bulk_stopped",
                    error=self.redact_secrets(str(exc)),
                    code=exc.code,
                    unsent=sum(len(j.changes) for j in jobs[index:]),
                )
                skip(jobs[index:])
                return locked, True, False
            result.calls += self._calls["write"] - before
            apply_outcome(result, outcome)
            locked.extend(outcome.locked)
            if outcome.state != "JobComplete":
                skip(jobs[index + 1 :])
                return locked, True, False
        return locked, False, False

    def _bulk_call(self, fn: Callable[[Any], T]) -> T:
        """One Bulk API 2.0 request on the current session (rebuilt after re-authenticating)."""
        from connectors.salesforce_bulk import Bulk2Api

        return self.call("write", lambda sf: fn(Bulk2Api(sf, self.timeout)))

    def _patch(self, sf: Salesforce, body: dict[str, Any]) -> Any:
        return sf.restful("composite/sobjects", method="PATCH", json=body, timeout=self.timeout)

    def daily_api_remaining(self) -> tuple[int, int] | None:
        """(remaining, max) daily API requests: from the last Sforce-Limit-Info header seen,
        else from the ``limits/`` resource; ``None`` when the user may not read limits."""
        if self._usage is not None:
            return self._usage
        try:
            payload = self.call("limits", lambda sf: sf.limits(timeout=self.timeout))
        except (AuthError, QuotaExhaustedError):
            raise
        except (FatalError, RetriableError) as exc:
            log.warning("salesforce_limits_unavailable", error=self.redact_secrets(str(exc)))
            return None
        daily = payload.get("DailyApiRequests") if isinstance(payload, Mapping) else None
        if not isinstance(daily, Mapping):
            return None
        try:
            usage = int(daily["Remaining"]), int(daily["Max"])
        except (KeyError, TypeError, ValueError):
            return None
        self._usage = usage
        return usage

    def write_budget(self, share: float) -> int | None:
        """How many write requests this run may make: ``floor(remaining * share)`` of the daily
        API allowance, or ``None`` when the remaining allowance is unknown."""
        if not 0.0 <= share <= 1.0:
            raise ValueError("the API budget share must be between 0 and 1")
        usage = self.daily_api_remaining()
        if usage is None:
            return None
        return math.floor(usage[0] * share)


def _lookup(record: Mapping[str, Any], path: str) -> Any:
    """A value by field path; API names are case-insensitive, the config's case may differ."""
    current: Any = record
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return None
        if part in current:
            current = current[part]
            continue
        lowered = part.lower()
        current = next((v for k, v in current.items() if k.lower() == lowered), None)
    return current


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _record(raw: Mapping[str, Any], mapping: DestinationMapping) -> CrmRecord:
    domains: list[str] = []
    for field in mapping.match.domain_fields:
        value = _lookup(raw, field)
        if value is None:
            continue
        text = str(value).strip()
        if text:
            domains.append(text)
    return CrmRecord(
        id=str(_lookup(raw, "Id")),
        domain_values=tuple(domains),
        fields={name: _lookup(raw, name) for name in mapping.read_fields},
        name=_text(_lookup(raw, "Name")),
        last_modified=parse_sf_datetime(_lookup(raw, "LastModifiedDate")),
        parent_id=_text(_lookup(raw, "ParentId")),
        owner_id=_text(_lookup(raw, "OwnerId")),
    )


def _rejection(record_id: str, errors: Any, secrets: Sequence[str]) -> RecordRejection:
    items = [e for e in errors if isinstance(e, Mapping)] if isinstance(errors, list) else []
    code = next((str(e["statusCode"]) for e in items if e.get("statusCode")), "UNKNOWN_ERROR")
    message = "; ".join(str(e.get("message")) for e in items if e.get("message"))
    code = lock_code(code, message) or code
    fields: list[str] = []
    for item in items:
        for name in item.get("fields") or ():
            if str(name) not in fields:
                fields.append(str(name))
    return RecordRejection(
        record_id=record_id,
        code=code,
        message=redact(message or code, list(secrets)),
        fields=tuple(fields),
        retriable=code in LOCK_CODES,
    )


def _apply_save_results(
    batch: Sequence[RecordChange],
    saves: Any,
    result: WriteResult,
    locked: list[tuple[RecordChange, RecordRejection]],
    secrets: Sequence[str],
) -> None:
    """Match SaveResults to the batch by position (the documented order)."""
    saves = saves if isinstance(saves, list) else []
    if len(saves) != len(batch):
        log.warning("salesforce_save_results_mismatch", sent=len(batch), results=len(saves))
    for index, change in enumerate(batch):
        save = saves[index] if index < len(saves) else None
        if not isinstance(save, Mapping):
            result.not_attempted.append(change.record_id)
            continue
        if save.get("success"):
            result.written.append(change.record_id)
            continue
        rejection = _rejection(change.record_id, save.get("errors"), secrets)
        if rejection.retriable:
            locked.append((change, rejection))
        else:
            result.rejected.append(rejection)
