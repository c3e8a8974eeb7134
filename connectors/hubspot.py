"""The HubSpot destination: company properties read and written through hubspot-api-client.

Reads page through ``GET /crm/v3/objects/companies`` at the maximum page size (100); writes go
through batch update, 100 inputs a request, and a 207 multi-status answer is parsed record by
record so one bad record never fails its batch. A whole batch refused with a 400
VALIDATION_ERROR is split in halves until the bad records are isolated.

The portal's identity (``crm_identity``) comes from ``GET /account-info/v3/details``; companies
gone since a moment (``read_deleted_since``) are the archived list's (``?archived=true``) and the
ids in ``hs_merged_object_ids`` of companies a merge left.

Requests are paced client-side to the portal's ten-second allowance, tightened by the
``X-HubSpot-RateLimit-*`` headers. Search requests (``POST /crm/v3/objects/*/search``) are
also paced on their own, evenly, at 4 a second: HubSpot limits search to 5 requests a second
per token and its search answers carry no rate-limit headers to learn from. urllib3's own
retries are switched off (it leaves POST out anyway): ``call_with_retries`` owns every retry,
honouring Retry-After; a 429 without one waits the project's backoff, and also fills the
ten-second window or, for a search, slows the search pace. A daily-limit 429 stops the writes
cleanly; what was not written is reported as ``not_attempted`` for the next run.

An incremental read may be told how many companies the portal holds: it then compares the
search (200 a page at the search pace) with the list (100 a page at the burst pace) from the
search's first page ``total`` and reads by the cheaper path (``estimate_read_paths``); told
how fast the portal's last export went, it prices one export of every company too.
"""

from __future__ import annotations

import functools
import json
import math
import numbers
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
import urllib3
from hubspot import HubSpot
from hubspot.crm.companies import (
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
)
from hubspot.crm.companies.exceptions import ApiException as CompaniesApiException
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException

from connectors.credentials import get_secret
from connectors.retrying import (
    ANNOUNCE_WAITS_OVER_SECONDS,
    CallTrace,
    call_with_retries,
    current_trace,
    http_date,
)
from pls_sync.domains import split_domain_values
from pls_sync.errors import (
    AuthError,
    FatalError,
    PlsSyncError,
    QuotaExhaustedError,
    RateLimitedError,
    RetriableError,
    redact,
)
from pls_sync.logs import notify, register_secret
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

if TYPE_CHECKING:
    from connectors.hubspot_export import ExportSpeed

T = TypeVar("T")

log = structlog.get_logger("pls_sync.hubspot")

TOKEN_VARIABLE = "HUBSPOT_ACCESS_TOKEN"
BASE_URL_VARIABLE = "HUBSPOT_BASE_URL"
BATCH_MAX = 100
PAGE_SIZE = 100
SEARCH_PAGE_SIZE = 200
SEARCH_RESULT_CAP = 10_000
WINDOW_SECONDS = 10.0
# HubSpot: "the search endpoints are rate limited to five requests per second per account";
# one under it leaves room for a request delayed on its way.
SEARCH_REQUESTS_PER_SECOND = 4.0
# A search 429 halves the pace, down to this; that many searches in a row answered raise it again.
SEARCH_SLOWEST_PER_SECOND = 0.5
SEARCH_RECOVERY_STREAK = 20
TEN_SECONDLY = "TEN_SECONDLY_ROLLING"
UNNAMED_LIMIT = "RATE_LIMIT"  # a 429 whose body names no policy (search 429s do not)
# HubSpot string properties hold at most 65,536 characters.
STRING_MAX = 65_536
READ_PROPERTIES = (
    "domain",
    "hs_additional_domains",
    "name",
    "hs_lastmodifieddate",
    "hs_parent_company_id",
    "hubspot_owner_id",
)
SUPPORTED_OBJECTS = ("companies",)
ACCOUNT_DETAILS_PATH = "/account-info/v3/details"
# "Deleted companies can be restored within 90 days of deletion": older archives are purged, so
# the archived list cannot tell what was deleted before that.
ARCHIVE_RETENTION = timedelta(days=90)
MERGED_IDS_PROPERTY = "hs_merged_object_ids"
# HubSpot documents no export processing time. Before an export measured its own overhead, an
# export is priced this much besides its rows: the start, PENDING, and the first polls (1 s,
# 1.5 s, 2.25 s, 3.4 s at the default schedule).
EXPORT_OVERHEAD_SECONDS = 10.0

_API_EXCEPTIONS: tuple[type[Exception], ...] = (CompaniesApiException, PropertiesApiException)
_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)


class HubSpotValidationError(FatalError):
    """HubSpot refused a request as invalid (HTTP 400, category VALIDATION_ERROR).

    ``details`` are the per-property errors HubSpot listed in its message, when it did:
    ``{"name": ..., "error": "INVALID_OPTION", "message": ...}``.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str = "VALIDATION_ERROR",
        details: Sequence[Mapping[str, Any]] = (),
    ):
        super().__init__(message, code=code)
        self.details = list(details)


# --------------------------------------------------------------------------- pacing


class RequestPacer:
    """At most ``limit`` requests in any ten-second window, tightened by HubSpot's headers.

    HubSpot's allowance is shared by every app on the portal: when the headers say more of the
    window is used than this client sent, the difference is counted here too.
    """

    def __init__(
        self,
        limit: int,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        window: float = WINDOW_SECONDS,
    ):
        self.configured = max(1, limit)
        self.limit = self.configured
        self.window = window
        self.waited = 0.0
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._sent and now - self._sent[0] >= self.window:
            self._sent.popleft()

    def acquire(self) -> None:
        """Wait until one more request fits in the window, then count it."""
        while True:
            now = self._clock()
            self._expire(now)
            if len(self._sent) < self.limit:
                self._sent.append(now)
                return
            delay = self._sent[0] + self.window - now
            if delay > ANNOUNCE_WAITS_OVER_SECONDS:
                self._announce(delay)
            self._sleep(delay)
            self.waited += delay
            if self._clock() <= now:
                # A sleep that does not move the clock (a test double) must still make progress.
                self._sent.popleft()

    def _announce(self, delay: float) -> None:
        log.info(
            "rate_limit_wait",
            destination="hubspot",
            seconds=round(delay, 1),
            limit_per_10s=self.limit,
        )
        notify(
            f"waiting {delay:.1f} s for HubSpot's rate limit "
            f"({self.limit} requests per {self.window:g} s)"
        )

    def completed(self) -> None:
        """Move the newest request's mark to now, when its answer has come back.

        HubSpot counts a request when it arrives, which is after ``acquire`` and before the
        answer: marking the answer's time keeps the window safe however slow the trip was.
        """
        if self._sent:
            self._sent[-1] = max(self._sent[-1], self._clock())

    def observe(self, maximum: int | None, remaining: int | None) -> None:
        """Take in ``X-HubSpot-RateLimit-Max`` and ``-Remaining`` from a response."""
        if maximum is not None and maximum > 0:
            self.limit = max(1, min(self.configured, maximum))
        if maximum is not None and remaining is not None:
            used = min(maximum - remaining, self.limit)
            now = self._clock()
            self._expire(now)
            while len(self._sent) < used:
                self._sent.append(now)

    def fill(self) -> None:
        """Count the window as full from now: a ten-second 429 said so, without saying how long.

        The next request waits until the oldest one this client sent leaves the window.
        """
        self.observe(self.limit, 0)


class SearchPacer:
    """Search requests evenly spaced at ``rate`` a second, slowed by a search 429.

    HubSpot's search answers carry no rate-limit headers, so this is a fixed client-side pace:
    each search goes at least ``1 / rate`` seconds after the previous one was sent. A 429 on a
    search halves the rate (down to ``slowest``) and holds the next search back for its
    Retry-After, or a second; ``recovery_streak`` searches answered in a row raise it again by
    one a second, up to the configured rate.
    """

    def __init__(
        self,
        rate: float = SEARCH_REQUESTS_PER_SECOND,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        slowest: float = SEARCH_SLOWEST_PER_SECOND,
        recovery_streak: int = SEARCH_RECOVERY_STREAK,
    ):
        self.configured = max(slowest, rate)
        self.rate = self.configured
        self.slowest = slowest
        self.waited = 0.0
        self._clock = clock
        self._sleep = sleep
        self._recovery_streak = max(1, recovery_streak)
        self._streak = 0
        self._next = -math.inf  # the earliest moment the next search may go

    def acquire(self) -> None:
        """Wait for the next search's turn, then take it."""
        now = self._clock()
        delay = self._next - now
        if delay > 0:
            if delay > ANNOUNCE_WAITS_OVER_SECONDS:
                log.info(
                    "rate_limit_wait",
                    destination="hubspot",
                    seconds=round(delay, 1),
                    searches_per_second=self.rate,
                )
                notify(f"waiting {delay:.1f} s for HubSpot's search rate limit")
            self._sleep(delay)
            self.waited += delay
            # A sleep that does not move the clock (a test double) still ends at the turn.
            now = max(self._clock(), self._next)
        self._next = now + 1.0 / self.rate

    def answered(self) -> None:
        """A search was answered: after a streak of them, pace back up towards the rate set."""
        self._streak += 1
        if self._streak >= self._recovery_streak and self.rate < self.configured:
            self.rate = min(self.configured, self.rate + 1.0)
            self._streak = 0

    def slow_down(self, retry_after: float | None) -> None:
        """A search was refused with a 429: halve the pace and hold the next search back."""
        self.rate = max(self.slowest, self.rate / 2)
        self._streak = 0
        pause = retry_after if retry_after is not None and retry_after > 0 else 1.0
        self._next = max(self._next, self._clock() + pause)
        log.warning(
            "hubspot_search_slowed",
            searches_per_second=self.rate,
            pause_seconds=round(pause, 2),
        )


# --------------------------------------------------------------------------- values


def _number_text(value: float | int | Decimal) -> str:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        value = Decimal(repr(value))
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _field_number(value: numbers.Real | Decimal, spec: FieldSpec | None) -> int | float | Decimal:
    """``value`` as the property holds it: whole for an integer or scale-0 number property
    (whatever Python type it arrives as), rounded to the scale when one is known."""
    if isinstance(value, numbers.Integral):
        return int(value)
    number: float | Decimal = value if isinstance(value, (float, Decimal)) else float(value)
    kind = spec.type if spec is not None else None
    scale = 0 if kind is FieldType.INTEGER else None
    if kind is FieldType.NUMBER and spec is not None:
        scale = spec.scale
    if scale is None:
        return number
    if isinstance(number, Decimal):
        exact = round(number, scale)
        return int(exact) if scale <= 0 else exact
    rounded = round(number, scale)
    return int(rounded) if scale <= 0 else rounded


def _iso_utc(moment: datetime) -> str:
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def format_value(value: Any, spec: FieldSpec | None = None) -> str:
    """A canonical value in the text HubSpot wants for the property.

    ``None`` is ``""`` (clears); numbers are plain decimals (``42``, not ``42.0``), whole for an
    integer or scale-0 property and rounded to the scale when one is known; booleans are
    ``true``/``false``; DATE properties get ``YYYY-MM-DD`` (midnight UTC), DATETIME properties
    ISO 8601 UTC with milliseconds; lists are joined with ``"; "`` (``;`` for multi-checkboxes);
    text is cut to the property's length when it is known.
    """
    kind = spec.type if spec is not None else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        if kind is FieldType.DATE:
            moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
            return moment.date().isoformat()
        return _iso_utc(value)
    if isinstance(value, date):
        if kind is FieldType.DATETIME:
            return f"{value.isoformat()}T00:00:00.000Z"
        return value.isoformat()
    if isinstance(value, (numbers.Real, Decimal)):
        if not math.isfinite(value):
            return ""
        return _number_text(_field_number(value, spec))
    if isinstance(value, (list, tuple, set, frozenset)):
        separator = ";" if kind is FieldType.MULTIPICKLIST else "; "
        text = separator.join(
            format_value(item) for item in value if item is not None and item != ""
        )
    else:
        text = str(value)
    if spec is not None and spec.length and kind in (FieldType.STRING, FieldType.TEXTAREA):
        text = truncate(text, spec.length)
    return text


def field_spec(prop: Any) -> FieldSpec:
    """A HubSpot property definition (``hubspot.crm.properties.Property``) as a ``FieldSpec``."""
    kind = str(prop.type or "")
    field_type = str(prop.field_type or "")
    options: tuple[str, ...] = ()
    length: int | None = None
    if prop.name == "hs_object_id":
        mapped = FieldType.ID
    elif kind == "number":
        mapped = FieldType.NUMBER
    elif kind in ("string", "phone_number"):
        mapped = FieldType.TEXTAREA if field_type in ("textarea", "html") else FieldType.STRING
        length = STRING_MAX
    elif kind == "enumeration":
        if field_type == "booleancheckbox":
            mapped = FieldType.BOOLEAN
        else:
            mapped = FieldType.MULTIPICKLIST if field_type == "checkbox" else FieldType.PICKLIST
            options = tuple(
                str(o.value) for o in prop.options or [] if not getattr(o, "hidden", False)
            )
    elif kind == "bool":
        mapped = FieldType.BOOLEAN
    elif kind == "date":
        mapped = FieldType.DATE
    elif kind == "datetime":
        mapped = FieldType.DATETIME
    else:
        mapped = FieldType.OTHER
    metadata = prop.modification_metadata
    read_only = bool(metadata.read_only_value) if metadata is not None else False
    return FieldSpec(
        name=str(prop.name),
        type=mapped,
        length=length,
        updateable=not read_only and not bool(prop.calculated),
        label=prop.label,
        picklist_values=options,
        # HubSpot refuses a value that is not one of an enumeration's options.
        restricted=mapped in (FieldType.PICKLIST, FieldType.MULTIPICKLIST),
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_millis(moment: datetime) -> int:
    """Milliseconds since the epoch (naive means UTC), the unit of HubSpot's datetime filters."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _parse_datetime(text: Any) -> datetime | None:
    if isinstance(text, datetime):
        return text if text.tzinfo else text.replace(tzinfo=UTC)
    if not text or not isinstance(text, str):
        return None
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- errors


def _json_body(body: Any) -> dict[str, Any]:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body:
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _lower_headers(headers: Any) -> dict[str, str]:
    if not headers:
        return {}
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def property_errors(message: str) -> list[dict[str, Any]]:
    """The per-property errors inside "Property values were not valid: [...]"."""
    start = message.find("[")
    if "not valid" not in message or start < 0:
        return []
    try:
        parsed = json.loads(message[start:])
    except ValueError:
        return []
    return [item for item in parsed if isinstance(item, dict)] if isinstance(parsed, list) else []


def _readable(message: str) -> str:
    details = property_errors(message)
    if not details:
        return message
    return "; ".join(f"{d.get('name', '?')}: {d.get('message') or d.get('error')}" for d in details)


def translate_api_error(exc: Exception, secrets: Sequence[str] = ()) -> PlsSyncError:
    """Turn a hubspot-api-client ``ApiException`` (any API package) into the project's errors.

    401 -> ``AuthError``; 403 -> ``AuthError`` (missing scopes); 429 DAILY ->
    ``QuotaExhaustedError``; other 429 -> ``RateLimitedError`` coded with its ``policyName``
    (``RATE_LIMIT`` when none, as on a search 429) and Retry-After (None when absent); 5xx and
    status 0 (TLS, transport) -> ``RetriableError``; 400 VALIDATION_ERROR ->
    ``HubSpotValidationError``; anything else -> ``FatalError``. No message carries a token.
    """
    status = int(getattr(exc, "status", 0) or 0)
    body = _json_body(getattr(exc, "body", None))
    headers = _lower_headers(getattr(exc, "headers", None))
    category = str(body.get("category") or body.get("errorType") or "")
    raw_message = str(body.get("message") or getattr(exc, "reason", "") or "")
    message = redact(raw_message, list(secrets))
    if status == 401:
        return AuthError(
            f"HubSpot rejected the access token (401 {category or 'INVALID_AUTHENTICATION'}); "
            f"check {TOKEN_VARIABLE}",
            code=category or "INVALID_AUTHENTICATION",
        )
    if status == 403:
        return AuthError(
            f"HubSpot refused access (403 {category or 'FORBIDDEN'}): {message}",
            code=category or "FORBIDDEN",
        )
    if status == 429:
        policy = str(body.get("policyName") or "")
        if policy == "DAILY":
            return QuotaExhaustedError(
                "HubSpot daily API limit reached (429 DAILY); the rest waits for the next run",
                code="DAILY",
            )
        # Without a Retry-After (HubSpot does not always send one) the retry waits the
        # project's backoff; the destination also paces the next request from the policy.
        return RateLimitedError(
            f"HubSpot rate limit reached (429 {policy or UNNAMED_LIMIT})",
            retry_after=_retry_after(headers),
            code=policy or UNNAMED_LIMIT,
        )
    if status == 0 or status >= 500 or status == 408:
        return RetriableError(
            f"HubSpot answered {status or 'no status'}: {message[:300]}",
            retry_after=_retry_after(headers),
            code=category or str(status),
        )
    if status == 400 and category == "VALIDATION_ERROR":
        return HubSpotValidationError(
            f"HubSpot refused the request (400 VALIDATION_ERROR): {_readable(message)[:500]}",
            details=property_errors(raw_message),
        )
    return FatalError(
        f"HubSpot answered {status} {category}: {message[:500]}".strip(),
        code=category or str(status),
    )


def _error_code(error: Mapping[str, Any]) -> str:
    """The most specific code of one ``errors`` item of a batch response (decoded JSON)."""
    sub = error.get("subCategory")
    if isinstance(sub, str) and sub:
        return sub
    for detail in _dicts(error.get("errors")):
        code = detail.get("code")
        if code:
            return str(code)
    details = property_errors(str(error.get("message") or ""))
    if details and details[0].get("error"):
        return str(details[0]["error"])
    return str(error.get("category") or "ERROR")


def _error_fields(error: Mapping[str, Any]) -> tuple[str, ...]:
    """The property names one ``errors`` item of a batch response blames."""
    context: Mapping[str, Any] = _dict(error.get("context"))
    names = list(context.get("propertyName") or [])
    if not names:
        for detail in _dicts(error.get("errors")):
            names.extend(_dict(detail.get("context")).get("propertyName") or [])
    if not names:
        names = [
            str(d["name"])
            for d in property_errors(str(error.get("message") or ""))
            if d.get("name")
        ]
    return tuple(dict.fromkeys(str(n) for n in names))


def merged_ids(company: Mapping[str, Any]) -> Iterator[str]:
    """The ids merged into a company (its ``hs_merged_object_ids``), not its own."""
    survivor = str(company.get("id"))
    merged = _dict(company.get("properties")).get(MERGED_IDS_PROPERTY)
    for merged_id in str(merged or "").split(";"):
        merged_id = merged_id.strip()
        if merged_id and merged_id != survivor:
            yield merged_id


def _dict(value: Any) -> Mapping[str, Any]:
    """A decoded JSON object, or an empty one for anything else."""
    return value if isinstance(value, dict) else {}


def _dicts(items: Any) -> list[Mapping[str, Any]]:
    """The JSON objects of a decoded JSON array; anything else is ignored."""
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


# --------------------------------------------------------------------------- raw reads


def _response_headers(response: Any) -> Any:
    """The headers of a generated-client ``RESTResponse`` or of a raw urllib3 response."""
    if isinstance(response, urllib3.BaseHTTPResponse):
        # urllib3 2 deprecates getheaders(); the raw response of a _preload_content=False call.
        return response.headers
    return response.getheaders()


def trace_requests(api: Any) -> None:
    """Report every request ``api`` sends to the current ``CallTrace``: method, URL, status.

    hubspot-api-client sends through its ``ApiClient.request(method, url, ...)`` (the query
    string goes separately); the answer carries ``status``, an ``ApiException`` too. Installed
    once per API client; without a current trace it only passes the call on.
    """
    client: Any = getattr(api, "api_client", None)
    send = getattr(client, "request", None)
    if send is None or getattr(client, "_pls_sync_traced", False):
        return

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        trace = current_trace()
        if trace is None:
            return send(method, url, *args, **kwargs)
        trace.sending(method, url)
        try:
            response = send(method, url, *args, **kwargs)
        except Exception as exc:
            trace.failed(exc)
            raise
        status = getattr(response, "status", None)
        if isinstance(status, int):
            trace.answered(status)
        return response

    client.request = request
    client._pls_sync_traced = True


def read_json(fetch: Callable[[], Any]) -> dict[str, Any]:
    """Send a ``_preload_content=False`` request and decode its body with ``json.loads``.

    The generated client turns every record into model objects and parses every date with
    dateutil; at 100k companies that costs far more than the HTTP itself. The body is read here,
    inside the retried attempt, so a connection dropped mid-body is retried like any other.
    """
    response = fetch()
    try:
        body = response.data
    finally:
        response.release_conn()
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise RetriableError(
            f"HubSpot answered a body that is not JSON: {exc}", code="BAD_BODY"
        ) from None
    if not isinstance(parsed, dict):
        raise RetriableError("HubSpot answered a body that is not a JSON object", code="BAD_BODY")
    return parsed


def next_after(page: Mapping[str, Any]) -> str | None:
    """The ``paging.next.after`` cursor of a page, or ``None`` on the last page."""
    paging = page.get("paging") or {}
    following = (paging.get("next") or {}) if isinstance(paging, dict) else {}
    after = following.get("after") if isinstance(following, dict) else None
    return str(after) if after else None


def _replaying_first_page(
    fetch: Callable[[str | None, str | None], Mapping[str, Any]], first: Mapping[str, Any]
) -> Callable[[str | None, str | None], Mapping[str, Any]]:
    """``fetch`` that answers its first call for the first page with ``first``, already read."""
    replayed = False

    def replay(above_id: str | None, after: str | None) -> Mapping[str, Any]:
        nonlocal replayed
        if above_id is None and after is None and not replayed:
            replayed = True
            return first
        return fetch(above_id, after)

    return replay


def search_in_id_windows(
    fetch: Callable[[str | None, str | None], Mapping[str, Any]], *, object_name: str
) -> Iterator[Mapping[str, Any]]:
    """Every result of a search sorted by ``hs_object_id``, past the 10,000-result cap.

    ``fetch(above_id, after)`` sends one search page: ids above ``above_id`` (when given),
    cursor ``after``, sorted by ``hs_object_id``, decoded. A query returns at most 10,000
    results; at that cap the search goes on above the last id read. Id order does not move when
    a record is modified during the read, so paging never skips one.
    """
    last_id: str | None = None
    while True:
        above_id = last_id  # this window's lower bound, fixed while it is paged
        in_window = 0
        after: str | None = None
        while True:
            page = fetch(above_id, after)
            total = page.get("total")
            first_page = after is None and above_id is None
            if first_page and isinstance(total, int) and total > SEARCH_RESULT_CAP:
                log.info(
                    "hubspot_search_cap",
                    object=object_name,
                    matched=total,
                    cap=SEARCH_RESULT_CAP,
                    action="searching on in windows of ids",
                )
            for result in _dicts(page.get("results")):
                in_window += 1
                last_id = str(result.get("id"))
                yield result
            after = next_after(page)
            if not after:
                break
            if after.isdigit() and int(after) + SEARCH_PAGE_SIZE > SEARCH_RESULT_CAP:
                break  # the next page lies beyond the cap: search on above last_id
        if in_window < SEARCH_RESULT_CAP or (isinstance(total, int) and total <= in_window):
            return


# --------------------------------------------------------------------------- read paths


def _burst_seconds(calls: int, requests_per_10s: int) -> float:
    """How long ``calls`` requests take under the ten-second allowance alone (bursts of it)."""
    return ((calls - 1) // max(1, requests_per_10s)) * WINDOW_SECONDS if calls > 0 else 0.0


@dataclass(frozen=True)
class ReadPathEstimate:
    """What reading the modified companies would cost by search, by the full list and, when
    the last export's speed is known, by one export of every company.

    ``path`` is the cheapest: the fastest one, fewer calls breaking a tie (search before list
    before export when both are equal); the list or the export only when its calls fit in the
    daily allowance left (``daily_remaining``, when known).
    """

    modified: int
    records: int
    search_calls: int
    search_seconds: float
    list_calls: int
    list_seconds: float
    daily_remaining: int | None = None
    export_calls: int | None = None
    export_seconds: float | None = None

    @property
    def path(self) -> str:
        """``"search"``, ``"list"`` or ``"export"``."""
        best = ("search", (self.search_seconds, self.search_calls))
        legs = [("list", self.list_seconds, self.list_calls)]
        if self.export_seconds is not None and self.export_calls is not None:
            legs.append(("export", self.export_seconds, self.export_calls))
        for name, seconds, calls in legs:
            if self.daily_remaining is not None and calls > self.daily_remaining:
                continue
            if (seconds, calls) < best[1]:
                best = (name, (seconds, calls))
        return best[0]


def estimate_read_paths(
    modified: int,
    records: int,
    *,
    requests_per_10s: int,
    searches_per_second: float = SEARCH_REQUESTS_PER_SECOND,
    seconds_per_request: float = 0.0,
    daily_remaining: int | None = None,
    export_rows_per_second: float | None = None,
    export_overhead_seconds: float | None = None,
) -> ReadPathEstimate:
    """Calls and seconds to read ``modified`` companies by search or all ``records`` by list,
    and by one export when ``export_rows_per_second`` (the last export's measured speed) is
    given.

    Search: ``ceil(modified / 200)`` pages (windows past the 10,000-result cap cost none
    extra), no faster than ``searches_per_second`` nor the ten-second allowance. List:
    ``ceil(records / 100)`` pages in bursts of ``requests_per_10s``. Either way each request
    takes at least ``seconds_per_request`` (its round trip): calls go one after the other.
    Export (HubSpot documents no processing speed, so only a measured one prices it): its
    fixed part (``export_overhead_seconds`` as measured, else ``EXPORT_OVERHEAD_SECONDS``) plus
    ``records / export_rows_per_second``, rounded up to the poll that finds it complete
    (``poll_schedule``), plus a round trip per call (a start, the polls, a download). The
    caller leaves the rate out when exports are off or the portal is at or under the export
    threshold: no export leg then.
    """
    search_calls = max(1, math.ceil(max(0, modified) / SEARCH_PAGE_SIZE))
    list_calls = max(1, math.ceil(max(0, records) / PAGE_SIZE))
    trip = max(0.0, seconds_per_request)
    search_seconds = max(
        search_calls * trip,
        (search_calls - 1) / searches_per_second,
        _burst_seconds(search_calls, requests_per_10s),
    )
    list_seconds = max(list_calls * trip, _burst_seconds(list_calls, requests_per_10s))
    export = _export_leg(records, export_rows_per_second, export_overhead_seconds, trip)
    return ReadPathEstimate(
        modified=max(0, modified),
        records=max(0, records),
        search_calls=search_calls,
        search_seconds=round(search_seconds, 3),
        list_calls=list_calls,
        list_seconds=round(list_seconds, 3),
        daily_remaining=daily_remaining,
        export_calls=export[0] if export else None,
        export_seconds=round(export[1], 3) if export else None,
    )


def _export_leg(
    records: int, rows_per_second: float | None, overhead: float | None, trip: float
) -> tuple[int, float] | None:
    """Calls and seconds of one export of ``records`` companies at a measured speed."""
    if rows_per_second is None or not rows_per_second > 0 or not math.isfinite(rows_per_second):
        return None
    from connectors.hubspot_export import poll_schedule

    fixed = EXPORT_OVERHEAD_SECONDS if overhead is None else max(0.0, overhead)
    polls, waited = poll_schedule(fixed + max(0, records) / rows_per_second)
    calls = 2 + polls  # the start, the polls, the download
    return calls, waited + calls * trip


def _is_search(api: Any) -> bool:
    """Whether ``api`` is a search API (``POST /crm/v3/objects/{type}/search``).

    Every object package of hubspot-api-client (companies, contacts, tasks...) names its
    search client ``SearchApi``.
    """
    return type(api).__name__ == "SearchApi"


# --------------------------------------------------------------------------- the destination


class HubSpotDestination:
    """``CrmDestination`` for HubSpot companies, on hubspot-api-client (CRM v3)."""

    name = "hubspot"
    # Changed companies are read by search, which lags writes ("it may take a few moments for
    # newly created or updated CRM objects to appear in search results"); the archived list
    # does not: the snapshot trusts the deletions over a change the search still shows.
    change_reads_lag = True

    def __init__(
        self,
        access_token: str,
        *,
        base_url: str | None = None,
        batch_size: int = BATCH_MAX,
        requests_per_10s: int = 100,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        attempts: int = 5,
        timeout: tuple[float, float] = (10.0, 60.0),
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        export_threshold: int | None = None,
        export_poll_interval: float = 1.0,
        export_max_poll_interval: float = 15.0,
        export_timeout: float | None = None,
    ):
        """A HubSpot portal behind ``access_token`` (at ``base_url``, HubSpot's by default).

        A full read of more than ``export_threshold`` companies (None: never) goes through one
        CRM export (``connectors.hubspot_export``), polled from ``export_poll_interval`` seconds
        growing to ``export_max_poll_interval``, waited for at most ``export_timeout`` seconds
        (None: twice what the list would take, at least two minutes).
        """
        if not access_token:
            raise AuthError(
                f"HubSpot access token missing: set {TOKEN_VARIABLE}", code="MISSING_CREDENTIALS"
            )
        register_secret(access_token)
        self._token = access_token
        self.batch_size = max(1, min(int(batch_size), BATCH_MAX))
        self.sleep = sleep
        self._attempts = attempts
        self.timeout = timeout
        self.pacer = RequestPacer(requests_per_10s, clock=clock, sleep=self.sleep)
        # Its own clock and sleep, not the destination's attributes: a test that fakes the
        # backoff's sleep still paces searches against a sandbox that limits them in real time.
        self.search_pacer = SearchPacer(clock=clock, sleep=sleep)
        self._clock = clock
        self.last_read_path: ReadPathEstimate | None = None
        self._calls: dict[str, int] = {"read": 0, "write": 0, "describe": 0}
        self._daily_remaining: int | None = None
        self._server_time: datetime | None = None  # the last answer's Date
        self._write_uncertain = False  # a write request was retried in this write
        self._daily_limit: int | None = None
        self._wall_clock = wall_clock
        self._identity: str | None = None
        if export_threshold is not None and export_threshold < 0:
            raise FatalError("HubSpot export_threshold must not be negative")
        from connectors.hubspot_export import ExportOptions

        self.export_options = ExportOptions(
            threshold=export_threshold,
            poll_interval=export_poll_interval,
            max_poll_interval=export_max_poll_interval,
            timeout=export_timeout,
        )
        # How the last full read went: path (list | export), companies, and why it listed.
        self.last_full_read: dict[str, Any] = {}
        # What the last full read's export measured (None: that read did not export).
        self.last_export_speed: ExportSpeed | None = None
        options: dict[str, Any] = {"access_token": access_token, "retry": False}
        if base_url:
            options["host"] = base_url.rstrip("/")
        client = HubSpot(**options)
        # Every attribute access builds a new ApiClient and connection pool: build each API once.
        self._companies_basic = client.crm.companies.basic_api
        self._companies_batch = client.crm.companies.batch_api
        self._companies_search = client.crm.companies.search_api
        self._properties = client.crm.properties.core_api

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        base_url: str | None = None,
        batch_size: int = BATCH_MAX,
        requests_per_10s: int = 100,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        export_threshold: int | None = None,
    ) -> HubSpotDestination:
        """Build from ``HUBSPOT_ACCESS_TOKEN`` (environment or secrets dir) and ``HUBSPOT_BASE_URL``."""
        source = os.environ if env is None else env
        token = get_secret(TOKEN_VARIABLE, source)
        if not token:
            raise AuthError(
                f"HubSpot access token missing: set {TOKEN_VARIABLE} "
                f"(or the secret file {TOKEN_VARIABLE.lower()})",
                code="MISSING_CREDENTIALS",
            )
        return cls(
            token,
            base_url=base_url or source.get(BASE_URL_VARIABLE) or None,
            batch_size=batch_size,
            requests_per_10s=requests_per_10s,
            sleep=sleep,
            clock=clock,
            export_threshold=export_threshold,
        )

    # ----------------------------------------------------------------- port

    def api_calls(self) -> dict[str, int]:
        """HTTP requests made so far by kind: ``read``, ``write``, ``describe`` (retries included)."""
        return dict(self._calls)

    def daily_api_remaining(self) -> int | None:
        """``X-HubSpot-RateLimit-Daily-Remaining`` from the last response that carried it."""
        return self._daily_remaining

    def describe(self, object_name: str) -> dict[str, FieldSpec]:
        """Every property of ``object_name`` (``companies``) as a ``FieldSpec``, by name."""
        api = self._properties
        response = self.call(
            "describe",
            api,
            lambda: api.get_all(
                object_type=object_name, archived=False, _request_timeout=self.timeout
            ),
        )
        specs = [field_spec(prop) for prop in response.results or []]
        return {spec.name: spec for spec in specs}

    def read_records(
        self, mapping: DestinationMapping, *, known_records: int | None = None
    ) -> Iterator[CrmRecord]:
        """Every company with its domains, the mapped properties and the firmographic ones
        (read, never written), 100 a page; or, above ``export_threshold`` companies, from one
        CRM export (``connectors.hubspot_export``), the same records.

        How many companies there are is ``known_records`` (the caller's snapshot knows), or
        one search's ``total``. An export that cannot serve the read (scope missing, the
        portal's export limit, canceled, too slow, a download or file that fails) is logged
        (``hubspot_export_fallback``) and the companies are listed instead; the run never fails
        for it. ``last_full_read`` says which path read them.
        """
        self._check_object(mapping.object)
        properties = self._read_properties(mapping)
        read_fields = mapping.read_fields
        companies: Iterator[Any]
        if self.export_options.threshold is None:
            self.last_full_read = {"path": "list"}
            self.last_export_speed = None
            companies = self._list_companies(properties, archived=False)
        else:
            companies = self._exported_or_listed(properties, known_records)
        for result in companies:
            yield self._record(result, mapping, read_fields)

    def _list_records(self, mapping: DestinationMapping) -> Iterator[CrmRecord]:
        """Every company from the list endpoint, never an export."""
        read_fields = mapping.read_fields
        for result in self._list_companies(self._read_properties(mapping), archived=False):
            yield self._record(result, mapping, read_fields)

    def _exported_or_listed(
        self, properties: list[str], known_records: int | None
    ) -> Iterator[Any]:
        """Every live company: by export above the threshold, else (or when it fails) listed.

        An export failing after some companies were read goes on with the list, leaving out
        the companies already read: each is read once, from one path or the other.
        """
        from connectors.hubspot_export import CompanyExport, default_timeout

        options = self.export_options
        total = known_records if known_records is not None else self._count_companies()
        self.last_full_read = {"path": "list", "companies": total}
        self.last_export_speed = None
        if total is None or options.threshold is None or total <= options.threshold:
            yield from self._list_companies(properties, archived=False)
            return
        timeout = options.timeout
        if timeout is None:
            timeout = default_timeout(total, self.pacer.limit)
        export = CompanyExport(self, options, timeout=timeout)
        read: set[str] = set()
        try:
            for result in export.companies(properties):
                read.add(str(result["id"]))
                yield result
        except PlsSyncError as exc:
            reason = getattr(exc, "code", None) or type(exc).__name__
            self.last_full_read.update(reason=reason, exported=len(read))
            log.warning(
                "hubspot_export_fallback",
                reason=reason,
                error=self.redact_secrets(str(exc)),
                task_id=export.run.task_id or None,
                exported=len(read),
                action="listing the companies instead",
            )
        else:
            self.last_full_read.update(path="export", task_id=export.run.task_id)
            self.last_export_speed = export.run.speed()
            log.info(
                "hubspot_export_read",
                companies=export.run.rows,
                task_id=export.run.task_id,
                polls=export.run.polls,
                waited_seconds=round(export.run.waited, 1),
                url_renewals=export.run.url_renewals,
                files=export.run.parts,
                **export.run.processing,
            )
            return
        for result in self._list_companies(properties, archived=False):
            if str(result.get("id")) not in read:
                yield result

    def _count_companies(self) -> int | None:
        """How many live companies the portal holds: one search's ``total`` (None if it fails)."""
        api = self._companies_search
        request = PublicObjectSearchRequest(filter_groups=[], properties=["hs_object_id"], limit=1)
        fetch = functools.partial(
            api.do_search,
            public_object_search_request=request,
            _request_timeout=self.timeout,
            _preload_content=False,
        )
        try:
            page = self.call("read", api, functools.partial(read_json, fetch))
        except PlsSyncError as exc:
            log.warning("hubspot_company_count_failed", error=self.redact_secrets(str(exc)))
            return None
        total = page.get("total")
        return total if isinstance(total, int) and not isinstance(total, bool) else None

    def _list_companies(self, properties: list[str], *, archived: bool) -> Iterator[Any]:
        """Every company of the list endpoint (live or archived ones), 100 a page."""
        api = self._companies_basic
        after: str | None = None
        while True:
            page_after = after

            def fetch(cursor: str | None = page_after) -> Any:
                kwargs: dict[str, Any] = {
                    "limit": PAGE_SIZE,
                    "properties": properties,
                    "archived": archived,
                }
                if cursor:
                    kwargs["after"] = cursor
                return api.get_page(_request_timeout=self.timeout, _preload_content=False, **kwargs)

            page = self.call("read", api, functools.partial(read_json, fetch))
            yield from page.get("results") or ()
            after = next_after(page)
            if not after:
                return

    def read_records_modified_since(
        self,
        mapping: DestinationMapping,
        since: datetime,
        *,
        known_records: int | None = None,
        export_rows_per_second: float | None = None,
        export_overhead_seconds: float | None = None,
    ) -> Iterator[CrmRecord]:
        """Companies modified at or after ``since``, by search (200 a page), in id order.

        The search API returns at most 10,000 results per query: past that, the search goes on
        in windows of ids (``hs_object_id`` above the last one read), so the pages read stay in
        proportion to what changed. Id order does not move when a company is modified during
        the read, so paging never skips one.

        With ``known_records`` (about how many companies the portal holds: the caller's
        snapshot knows), the first search page's ``total`` tells what the search would cost;
        when the full list is cheaper (``estimate_read_paths``), every live company is read
        from the list instead: a superset of the modified ones, each as it is now. Given the
        speed the portal's last export had (``export_rows_per_second``, and its measured
        ``export_overhead_seconds``), exports on and ``known_records`` above the export
        threshold, one export is priced too and, when cheapest, reads every live company
        (falling back to the list as a full read does). The choice is logged
        (``hubspot_read_path``) and kept in ``last_read_path``.
        """
        self._check_object(mapping.object)
        properties = self._read_properties(mapping)
        read_fields = mapping.read_fields
        fetch: Callable[[str | None, str | None], Mapping[str, Any]] = functools.partial(
            self._search_modified_page, properties, epoch_millis(since)
        )
        self.last_read_path = None
        if known_records is not None:
            started = self._clock()
            first = fetch(None, None)
            speed = self._export_speed(known_records, export_rows_per_second)
            estimate = self._estimate(
                first,
                known_records,
                self._clock() - started,
                export_rows_per_second=speed,
                export_overhead_seconds=export_overhead_seconds if speed else None,
            )
            if estimate.path == "list":
                yield from self._list_records(mapping)  # the list the estimate priced
                return
            if estimate.path == "export":
                for result in self._exported_or_listed(properties, known_records):
                    yield self._record(result, mapping, read_fields)
                return
            fetch = _replaying_first_page(fetch, first)
        for result in search_in_id_windows(fetch, object_name="companies"):
            yield self._record(result, mapping, read_fields)

    def _export_speed(self, known_records: int, rows_per_second: float | None) -> float | None:
        """The measured export rate, when an export would serve a read of ``known_records``."""
        threshold = self.export_options.threshold
        if threshold is None or known_records <= threshold:
            return None
        return rows_per_second

    def _estimate(
        self,
        first_page: Mapping[str, Any],
        known_records: int,
        round_trip: float,
        *,
        export_rows_per_second: float | None = None,
        export_overhead_seconds: float | None = None,
    ) -> ReadPathEstimate:
        """Search, list or export, from a first search page and the portal's company count."""
        total = first_page.get("total")
        modified = total if isinstance(total, int) else len(_dicts(first_page.get("results")))
        estimate = estimate_read_paths(
            modified,
            known_records,
            requests_per_10s=self.pacer.limit,
            searches_per_second=self.search_pacer.rate,
            seconds_per_request=round_trip,
            daily_remaining=self._daily_remaining,
            export_rows_per_second=export_rows_per_second,
            export_overhead_seconds=export_overhead_seconds,
        )
        self.last_read_path = estimate
        log.info(
            "hubspot_read_path",
            path=estimate.path,
            modified=estimate.modified,
            records=estimate.records,
            search_calls=estimate.search_calls,
            search_seconds=estimate.search_seconds,
            list_calls=estimate.list_calls,
            list_seconds=estimate.list_seconds,
            export_calls=estimate.export_calls,
            export_seconds=estimate.export_seconds,
            export_rows_per_second=export_rows_per_second,
        )
        return estimate

    def _search_modified_page(
        self,
        properties: list[str],
        since_millis: int,
        above_id: str | None,
        after: str | None,
        *,
        having: str | None = None,
    ) -> dict[str, Any]:
        """One search page of companies modified at or after ``since_millis``, in id order.

        ``having`` keeps only companies with a value in that property.
        """
        api = self._companies_search
        filters = [
            Filter(property_name="hs_lastmodifieddate", operator="GTE", value=str(since_millis))
        ]
        if having is not None:
            filters.append(Filter(property_name=having, operator="HAS_PROPERTY"))
        if above_id is not None:
            filters.append(Filter(property_name="hs_object_id", operator="GT", value=above_id))
        request = PublicObjectSearchRequest(
            filter_groups=[FilterGroup(filters=filters)],
            sorts=[{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            properties=properties,
            limit=SEARCH_PAGE_SIZE,
            after=after,
        )
        fetch = functools.partial(
            api.do_search,
            public_object_search_request=request,
            _request_timeout=self.timeout,
            _preload_content=False,
        )
        return self.call("read", api, functools.partial(read_json, fetch))

    # ----------------------------------------------------------------- identity and deletions

    def crm_identity(self) -> str:
        """``hubspot:<portalId>``: the portal the token belongs to (one call, then cached).

        From ``GET /account-info/v3/details``, which hubspot-api-client has no wrapper for: it
        goes through the companies client's own ``call_api``, so pacing, retries, tracing and
        error translation are those of every other call.
        """
        if self._identity is None:
            api = self._companies_basic
            fetch = functools.partial(
                api.api_client.call_api,
                ACCOUNT_DETAILS_PATH,
                "GET",
                header_params={"Accept": "application/json"},
                auth_settings=["oauth2"],
                _preload_content=False,
                _request_timeout=self.timeout,
            )
            details = self.call("read", api, functools.partial(read_json, fetch))
            portal_id = details.get("portalId")
            if isinstance(portal_id, bool) or not isinstance(portal_id, int):
                raise FatalError(
                    "HubSpot's account details name no portalId; cannot tell which portal this is",
                    code="NO_PORTAL_ID",
                )
            self._identity = f"hubspot:{portal_id}"
        return self._identity

    def read_deleted_since(
        self, mapping: DestinationMapping, since: datetime, *, until: datetime | None = None
    ) -> list[str] | None:
        """Ids of companies gone at or after ``since``: archived, or merged into another.

        Archived companies come from the archived list (``?archived=true``, 100 a page; it has
        no time filter, so the whole list is paged and ``archivedAt`` is compared here). Merged
        ones are the ``hs_merged_object_ids`` of companies modified since ``since`` (a merge
        stamps the company it leaves, which may have a new id), found by search past the
        10,000-result cap. Ids in id order; None when ``since`` is older than the 90 days the
        archive keeps before ``until`` (default: now), as the CRM can no longer tell.
        """
        self._check_object(mapping.object)
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        end = until if until is not None else self._wall_clock()
        if since < end - ARCHIVE_RETENTION:
            log.info(
                "hubspot_deletions_unknown",
                since=_iso_utc(since),
                reason="older than the 90 days HubSpot keeps deleted companies",
            )
            return None
        gone = set(self._archived_since(since)) | set(self._merged_away_since(since))
        return sorted(gone, key=lambda record_id: (len(record_id), record_id))

    def _archived_since(self, since: datetime) -> Iterator[str]:
        """Ids of companies archived at or after ``since`` (or at an unknown time)."""
        archived = self._list_companies(["hs_object_id", MERGED_IDS_PROPERTY], archived=True)
        for result in archived:
            if not isinstance(result, Mapping):
                continue
            archived_at = _parse_datetime(result.get("archivedAt"))
            if archived_at is None or archived_at >= since:
                yield str(result.get("id"))
                # A company archived after a merge takes the ids merged into it along:
                # no live company lists them any more.
                yield from merged_ids(result)

    def _merged_away_since(self, since: datetime) -> Iterator[str]:
        """Ids merged into companies modified at or after ``since``."""
        fetch = functools.partial(
            self._search_modified_page,
            [MERGED_IDS_PROPERTY],
            epoch_millis(since),
            having=MERGED_IDS_PROPERTY,
        )
        for result in search_in_id_windows(fetch, object_name="companies"):
            yield from merged_ids(result)

    def write(
        self,
        object_name: str,
        changes: Sequence[RecordChange],
        specs: Mapping[str, FieldSpec],
        *,
        stop: threading.Event | None = None,
    ) -> WriteResult:
        """Batch-update changed properties, 100 companies a request; rejections per record.

        A daily-limit 429, or a batch that still fails after its retries, stops writing: that
        batch and every later record go to ``not_attempted`` for the next run; so does an auth
        failure partway (``result.error`` says so), and every batch after ``stop`` is set.
        Other fatal errors raise.
        """
        self._check_object(object_name)
        result = WriteResult(method="batch_update")
        started = self._calls["write"]
        self._write_uncertain = False
        batches = [
            list(changes[i : i + self.batch_size]) for i in range(0, len(changes), self.batch_size)
        ]
        try:
            for index, batch in enumerate(batches):
                if stop is not None and stop.is_set():
                    result.not_attempted.extend(c.record_id for b in batches[index:] for c in b)
                    log.warning(
                        "hubspot_write_stopped",
                        reason="stop",
                        written=len(result.written),
                        not_attempted=len(result.not_attempted),
                    )
                    break
                try:
                    self._write_batch(batch, specs, result)
                except (QuotaExhaustedError, RetriableError, AuthError) as exc:
                    if isinstance(exc, AuthError):
                        result.error = str(exc)
                    settled = set(result.written) | {r.record_id for r in result.rejected}
                    result.not_attempted.extend(
                        change.record_id
                        for pending in batches[index:]
                        for change in pending
                        if change.record_id not in settled
                    )
                    log.warning(
                        "hubspot_write_stopped",
                        reason="daily_limit"
                        if isinstance(exc, QuotaExhaustedError)
                        else "auth"
                        if isinstance(exc, AuthError)
                        else "retries",
                        error=str(exc),
                        written=len(result.written),
                        not_attempted=len(result.not_attempted),
                    )
                    break
        finally:
            result.calls = self._calls["write"] - started
            result.server_time = self._server_time
            result.uncertain = self._write_uncertain
        return result

    # ----------------------------------------------------------------- writing

    def _write_batch(
        self, batch: list[RecordChange], specs: Mapping[str, FieldSpec], result: WriteResult
    ) -> None:
        api = self._companies_batch
        # Plain JSON, not generated model objects: the client serialises dicts as they are, and
        # building 100k models (each with its own Configuration) costs more than the HTTP.
        body = {
            "inputs": [
                {
                    "id": change.record_id,
                    "properties": {
                        name: format_value(value, specs.get(name))
                        for name, value in change.fields.items()
                    },
                }
                for change in batch
            ]
        }
        send = functools.partial(
            api.update, body, _request_timeout=self.timeout, _preload_content=False
        )
        try:
            response = self.call("write", api, functools.partial(read_json, send))
        except HubSpotValidationError as exc:
            if len(batch) == 1:
                result.rejected.append(self._whole_request_rejection(batch[0], exc))
                return
            # HubSpot does not say which input was invalid: halve the batch until it is found.
            middle = len(batch) // 2
            log.warning(
                "hubspot_batch_refused",
                records=len(batch),
                error=str(exc),
                action="splitting the batch to isolate invalid records",
            )
            self._write_batch(batch[:middle], specs, result)
            self._write_batch(batch[middle:], specs, result)
            return
        self._collect(batch, response, result)

    @staticmethod
    def _whole_request_rejection(
        change: RecordChange, exc: HubSpotValidationError
    ) -> RecordRejection:
        details = exc.details
        code = (
            str(details[0].get("error"))
            if details and details[0].get("error")
            else exc.code or "VALIDATION_ERROR"
        )
        fields = tuple(dict.fromkeys(str(d["name"]) for d in details if d.get("name")))
        return RecordRejection(
            record_id=change.record_id, code=code, message=str(exc), fields=fields
        )

    @staticmethod
    def _collect(
        batch: list[RecordChange], response: Mapping[str, Any], result: WriteResult
    ) -> None:
        """Record by record: results are written, each error's context ids are rejected.

        ``response`` is the decoded 200 or 207 body: ``results`` and, on partial failure,
        ``errors``, each naming the inputs it refused in ``context.ids``.
        """
        sent = [change.record_id for change in batch]
        sent_set = set(sent)
        rejected: set[str] = set()
        for error in _dicts(response.get("errors")):
            context: Mapping[str, Any] = _dict(error.get("context"))
            code = _error_code(error)
            message = f"{error.get('category')}: {_readable(str(error.get('message') or ''))}"
            fields = _error_fields(error)
            for record_id in context.get("ids") or []:
                record_id = str(record_id)
                if record_id in sent_set and record_id not in rejected:
                    rejected.add(record_id)
                    result.rejected.append(
                        RecordRejection(
                            record_id=record_id, code=code, message=message, fields=fields
                        )
                    )
        written = {str(item.get("id")) for item in _dicts(response.get("results"))}
        for record_id in sent:
            if record_id in rejected:
                continue
            if record_id in written:
                result.written.append(record_id)
            else:
                result.rejected.append(
                    RecordRejection(
                        record_id=record_id,
                        code="NO_RESULT",
                        message="HubSpot returned neither a result nor an error for this record",
                        retriable=True,
                    )
                )

    # ----------------------------------------------------------------- plumbing

    @staticmethod
    def _check_object(object_name: str) -> None:
        if object_name not in SUPPORTED_OBJECTS:
            raise FatalError(
                f"HubSpot object {object_name!r} is not supported; map to {', '.join(SUPPORTED_OBJECTS)}",
                code="UNSUPPORTED_OBJECT",
            )

    @staticmethod
    def _read_properties(mapping: DestinationMapping) -> list[str]:
        names = [*READ_PROPERTIES, *mapping.match.domain_fields, *mapping.read_fields]
        return list(dict.fromkeys(names))

    @staticmethod
    def _record(
        result: Mapping[str, Any],
        mapping: DestinationMapping,
        read_fields: Sequence[str] | None = None,
    ) -> CrmRecord:
        """One company of a list or search page, as decoded JSON.

        ``read_fields`` are ``mapping.read_fields`` (targets, then firmographic properties),
        which the read loops compute once, not per record.
        """
        if read_fields is None:
            read_fields = mapping.read_fields
        props: Mapping[str, Any] = result.get("properties") or {}
        domains: list[str] = []
        for name in mapping.match.domain_fields:
            domains.extend(split_domain_values(props.get(name)))
        last_modified = _parse_datetime(props.get("hs_lastmodifieddate")) or _parse_datetime(
            result.get("updatedAt")
        )
        return CrmRecord(
            id=str(result.get("id")),
            domain_values=tuple(domains),
            fields={name: props.get(name) for name in read_fields},
            name=props.get("name") or None,
            last_modified=last_modified,
            parent_id=props.get("hs_parent_company_id") or None,
            owner_id=props.get("hubspot_owner_id") or None,
        )

    def client(self) -> HubSpot:
        """A new hubspot-api-client on this portal (same token and host), for other objects.

        Its own retries are off: calls go through :meth:`call` for pacing and retries.
        """
        host = self._companies_basic.api_client.configuration.host
        return HubSpot(access_token=self._token, host=host, retry=False)

    def translate(self, exc: Exception) -> PlsSyncError:
        """``translate_api_error`` with this client's token kept out of every message."""
        return translate_api_error(exc, [self._token])

    def redact_secrets(self, text: str) -> str:
        """``text`` with the access token masked."""
        return redact(text, [self._token])

    def call(self, kind: str, api: Any, invoke: Callable[[], T]) -> T:
        """One API call: paced, counted, translated, retried when the error is transient.

        At DEBUG each HTTP attempt is a ``crm_call`` event with ``endpoint`` ``kind``.
        """
        trace_requests(api)
        trace = CallTrace(self.name, kind)

        search = _is_search(api)

        def attempt() -> T:
            self.pacer.acquire()
            if search:  # after the ten-second wait, so the spacing counts from the send
                self.search_pacer.acquire()
            self._calls[kind] += 1
            try:
                value = invoke()
            except _API_EXCEPTIONS as exc:
                self.pacer.completed()
                status = int(getattr(exc, "status", 0) or 0)
                self._observe(getattr(exc, "headers", None), track_window=status != 429)
                error = self.translate(exc)
                if isinstance(error, RateLimitedError):
                    self._paced_after_429(error, search=search)
                raise error from None
            except RateLimitedError as error:  # translated inside ``invoke`` (hubspot_leads)
                self.pacer.completed()
                self._paced_after_429(error, search=search)
                raise
            except _TRANSPORT_ERRORS as exc:
                self.pacer.completed()
                trace.failed(exc)  # also a body cut off after the status line came
                raise RetriableError(
                    self.redact_secrets(f"HubSpot unreachable: {type(exc).__name__}: {exc}"),
                    code="TRANSPORT",
                ) from None
            self.pacer.completed()
            if search:
                self.search_pacer.answered()
            last = getattr(api.api_client, "last_response", None)
            if last is not None:
                self._observe(_response_headers(last), track_window=True)
            return value

        def on_retry(error: RetriableError, attempt_number: int, wait: float) -> None:
            if kind == "write":  # the failed attempt may still be applied (a lost answer)
                self._write_uncertain = True
            log.warning(
                "hubspot_retry",
                kind=kind,
                attempt=attempt_number,
                wait_seconds=round(wait, 2),
                error=str(error),
                code=error.code,
            )

        return call_with_retries(
            attempt,
            attempts=self._attempts,
            sleep=self.sleep,
            on_retry=on_retry,
            trace=trace,
        )

    def _paced_after_429(self, error: RateLimitedError, *, search: bool) -> None:
        """Make the next request wait for the limit a 429 named (its code, the policy).

        A search refused by any policy but the ten-second one hit the search limit: the search
        pace slows. A ten-second (or unnamed) 429 without Retry-After fills this client's
        window, as HubSpot counts it full.
        """
        if search and error.code != TEN_SECONDLY:
            self.search_pacer.slow_down(error.retry_after)
        elif error.retry_after is None and error.code in (TEN_SECONDLY, UNNAMED_LIMIT):
            self.pacer.fill()

    def _observe(self, headers: Any, *, track_window: bool) -> None:
        values = _lower_headers(headers)
        self._server_time = http_date(values.get("date")) or self._server_time

        def number(name: str) -> int | None:
            try:
                return int(values[name])
            except (KeyError, ValueError):
                return None

        daily_remaining = number("x-hubspot-ratelimit-daily-remaining")
        if daily_remaining is not None:
            self._daily_remaining = daily_remaining
            self._daily_limit = number("x-hubspot-ratelimit-daily")
        if track_window:
            self.pacer.observe(
                number("x-hubspot-ratelimit-max"), number("x-hubspot-ratelimit-remaining")
            )
