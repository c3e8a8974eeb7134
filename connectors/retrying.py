"""The retry policy every CRM connector shares: exponential backoff with full jitter.

Only ``RetriableError`` (and its subclasses) is retried; everything else passes straight
through. A server's ``Retry-After`` hint is honoured, within the cap.

A call may carry a ``CallTrace``: at DEBUG every HTTP attempt then becomes one ``crm_call``
event (destination, endpoint, method, URL path, status, duration, attempt, and ``retry_in_s``
when it is retried). A wait longer than a second is told to a person at a terminal
(``pls_sync.logs.notify``); a rate-limit wait is also logged at INFO (``rate_limit_wait``).
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import structlog
import tenacity

from pls_sync.errors import RateLimitedError, RetriableError
from pls_sync.logs import notify
from pls_sync.mapping import DESTINATION_NAMES

T = TypeVar("T")

log = structlog.get_logger("pls_sync.crm")

# Waits up to this long pass without a word; longer ones are announced.
ANNOUNCE_WAITS_OVER_SECONDS = 1.0

_SOQL_FROM = re.compile(r"\bFROM\s+([A-Za-z][A-Za-z0-9_]*)", re.IGNORECASE)
_PARENTHESES = re.compile(r"\([^()]*\)")


def http_date(value: str | None) -> datetime | None:
    """An HTTP ``Date`` header (RFC 9110: ``Fri, 04 Dec 2026 19:22:20 GMT``) as an aware UTC
    datetime: the CRM's own clock; None when absent or unreadable."""
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    uniform: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Full jitter: a uniform draw in ``[0, min(cap, base * 2**(attempt-1))]``. A ``retry_after``
    hint raises the wait to at least that many seconds; the result never exceeds ``cap``.
    """
    ceiling = min(cap, base * (2 ** max(attempt - 1, 0)))
    wait = uniform(0.0, ceiling)
    if retry_after is not None and retry_after > 0:
        wait = max(wait, retry_after)
    return max(0.0, min(cap, wait))


# --- per-attempt DEBUG events ------------------------------------------------------------------


def _debug_enabled() -> bool:
    try:
        return bool(log.is_enabled_for(logging.DEBUG))
    except AttributeError:  # a wrapper class without level filtering logs everything
        return True


def soql_object(url: str | None) -> str | None:
    """The object a SOQL query in ``url``'s ``q`` parameter reads (its outer FROM), else None.

    Only the object name is ever logged: the query text may hold customer data.
    """
    if not url or "q=" not in url:
        return None
    queries = parse_qs(urlsplit(url).query).get("q")
    if not queries:
        return None
    text = queries[0]
    while True:  # drop subqueries, innermost first, so the outer FROM is the one found
        shorter = _PARENTHESES.sub("", text)
        if shorter == text:
            break
        text = shorter
    match = _SOQL_FROM.search(text)
    return match.group(1) if match else None


class CallTrace:
    """What the current HTTP attempt of one CRM call did, for the DEBUG ``crm_call`` event.

    The connector names the call (``destination``, ``endpoint``: a call kind such as ``read``);
    during an attempt its HTTP layer reports to ``current_trace()``: ``sending`` before a
    request, ``answered`` with the status, ``failed`` with the exception. Only references are
    kept; the event (URL path only, never a query string, header or body) is built when DEBUG is
    enabled, so at INFO a trace costs a few attribute writes per request.
    """

    __slots__ = (
        "attempt",
        "destination",
        "elapsed",
        "endpoint",
        "error",
        "method",
        "pending",
        "started",
        "status",
        "url",
    )

    def __init__(self, destination: str, endpoint: str) -> None:
        """A trace for calls of ``endpoint`` on ``destination`` (``salesforce`` | ``hubspot``)."""
        self.destination = destination
        self.endpoint = endpoint
        self.attempt = 0
        self.method: str | None = None
        self.url: str | None = None
        self.status: int | None = None
        self.error: BaseException | None = None
        self.started = 0.0
        self.elapsed: float | None = None
        self.pending = False

    def begin(self, attempt: int) -> None:
        """Start attempt number ``attempt``: forget the previous one, start the clock."""
        self.attempt = attempt
        self.method = self.url = None
        self.status = None
        self.error = None
        self.elapsed = None
        self.pending = True
        self.started = time.perf_counter()

    def sending(self, method: str, url: str) -> None:
        """A request is about to go out; the clock restarts (waits before it do not count)."""
        self.method, self.url = method, url
        self.started = time.perf_counter()

    def answered(self, status: int, method: str | None = None, url: str | None = None) -> None:
        """The answer came with HTTP ``status`` (and the request, when not reported before)."""
        self.status = status
        if method is not None:
            self.method = method
        if url is not None:
            self.url = url

    def failed(self, exc: BaseException) -> None:
        """The attempt raised ``exc``; the first report wins (the vendor's, before translation)."""
        if self.error is not None:
            return
        self.error = exc
        status = getattr(exc, "status", None)
        if self.status is None and isinstance(status, int) and status > 0:
            self.status = status
        request = getattr(exc, "request", None)  # requests' exceptions carry what was sent
        if self.url is None and request is not None:
            self.method = getattr(request, "method", None)
            url = getattr(request, "url", None)
            self.url = url if isinstance(url, str) else None

    def finish(self) -> None:
        """Stop the clock of the current attempt."""
        if self.elapsed is None:
            self.elapsed = time.perf_counter() - self.started

    def emit(self, *, retry_in_s: float | None = None, **extra: Any) -> None:
        """Log the attempt as ``crm_call`` at DEBUG, once; ``retry_in_s`` when it is retried."""
        if not self.pending:
            return
        self.pending = False
        if not _debug_enabled():
            return
        self.finish()
        event: dict[str, Any] = {
            "destination": self.destination,
            "endpoint": self.endpoint,
            "method": self.method,
            "path": urlsplit(self.url).path if self.url else None,
            "status": self.status if self.status is not None else self._error_name(),
            "duration_ms": round((self.elapsed or 0.0) * 1000, 1),
            "attempt": self.attempt,
        }
        if self.error is not None:
            event["error"] = type(self.error).__name__
        if retry_in_s is not None:
            event["retry_in_s"] = round(retry_in_s, 3)
        queried = soql_object(self.url)
        if queried is not None:
            event["soql_from"] = queried
        log.debug("crm_call", **event, **extra)

    def _error_name(self) -> str | None:
        return type(self.error).__name__ if self.error is not None else None


_current_trace: ContextVar[CallTrace | None] = ContextVar("pls_sync_crm_call", default=None)


def current_trace() -> CallTrace | None:
    """The trace of the attempt running in this context, for HTTP hooks to report to."""
    return _current_trace.get()


# --- waits a person should hear about ----------------------------------------------------------


def display_name(destination: str | None) -> str:
    """``Salesforce`` / ``HubSpot`` for a destination name; the name itself otherwise."""
    if not destination:
        return "the server"
    return DESTINATION_NAMES.get(destination, destination)


def announce_retry_wait(
    destination: str | None, seconds: float, error: BaseException, *, retry: int, retries: int
) -> None:
    """Say why the run pauses, when the wait before retry ``retry`` exceeds a second.

    A rate-limit wait is logged at INFO (``rate_limit_wait``) and told on a terminal; any other
    retry wait is told on a terminal only (the connector logs its retries as warnings).
    """
    if seconds <= ANNOUNCE_WAITS_OVER_SECONDS:
        return
    name = display_name(destination)
    if isinstance(error, RateLimitedError):
        log.info(
            "rate_limit_wait",
            destination=destination,
            seconds=round(seconds, 1),
            retry_after=error.retry_after,
        )
        notify(f"waiting {seconds:.1f} s for {name}'s rate limit (retry {retry} of {retries})")
        return
    reason = getattr(error, "code", None) or type(error).__name__
    notify(f"waiting {seconds:.1f} s before retrying {name} ({reason}; retry {retry} of {retries})")


# --- the retry loop ------------------------------------------------------------------------------


def call_with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base: float = 0.5,
    cap: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[RetriableError, int, float], None] | None = None,
    uniform: Callable[[float, float], float] = random.uniform,
    trace: CallTrace | None = None,
) -> T:
    """Call ``fn`` until it returns, retrying ``RetriableError`` up to ``attempts`` calls in all.

    ``on_retry(error, attempt_number, wait_seconds)`` is called before each sleep. When the
    attempts run out the last ``RetriableError`` is raised as it was; any other exception is
    raised at once. ``sleep`` and ``uniform`` are injectable so tests take no real time.
    With a ``trace``, each attempt is a ``crm_call`` DEBUG event and ``current_trace()`` is
    that trace while ``fn`` runs; waits over a second are announced (``announce_retry_wait``).
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    destination = trace.destination if trace is not None else None

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        hint = error.retry_after if isinstance(error, RetriableError) else None
        return backoff_delay(
            state.attempt_number, base=base, cap=cap, retry_after=hint, uniform=uniform
        )

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if state.outcome is None:
            return
        error = state.outcome.exception()
        delay = float(state.next_action.sleep) if state.next_action is not None else 0.0
        if trace is not None:
            trace.emit(retry_in_s=delay)
        if not isinstance(error, RetriableError):
            return
        announce_retry_wait(
            destination, delay, error, retry=state.attempt_number, retries=attempts - 1
        )
        if on_retry is not None:
            on_retry(error, state.attempt_number, delay)

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=wait,
        retry=tenacity.retry_if_exception_type(RetriableError),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    if trace is None:
        return retrying(fn)
    try:
        return retrying(_traced_attempts(fn, trace))
    finally:
        trace.emit()  # the last attempt, whether it returned or raised


def _traced_attempts(fn: Callable[[], T], trace: CallTrace) -> Callable[[], T]:
    """``fn`` as attempts of ``trace``: numbered, timed, ``current_trace()`` while it runs."""
    number = 0

    def attempt() -> T:
        nonlocal number
        number += 1
        trace.begin(number)
        token = _current_trace.set(trace)
        try:
            return fn()
        except BaseException as exc:
            trace.failed(exc)
            raise
        finally:
            trace.finish()
            _current_trace.reset(token)

    return attempt
