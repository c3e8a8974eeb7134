"""The shared retry policy: only RetriableError is retried, with jittered, capped backoff."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

import pls_sync.logs as logs
from connectors.retrying import (
    CallTrace,
    backoff_delay,
    call_with_retries,
    current_trace,
    soql_object,
)
from pls_sync.errors import AuthError, FatalError, RateLimitedError, RetriableError
from pls_sync.logs import configure_logging


class Flaky:
    """Fails with the given errors in order, then returns ``value``."""

    def __init__(self, errors: list[Exception], value: str = "ok") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.value


def test_success_first_time_does_not_sleep() -> None:
    sleeps: list[float] = []
    fn = Flaky([])
    assert call_with_retries(fn, sleep=sleeps.append) == "ok"
    assert fn.calls == 1
    assert sleeps == []


def test_retriable_errors_are_retried_until_success() -> None:
    sleeps: list[float] = []
    fn = Flaky([RetriableError("503"), RateLimitedError("429")])
    assert call_with_retries(fn, sleep=sleeps.append) == "ok"
    assert fn.calls == 3
    assert len(sleeps) == 2


def test_the_last_retriable_error_is_raised_when_attempts_run_out() -> None:
    errors: list[Exception] = [RetriableError(f"boom {i}") for i in range(3)]
    last = errors[-1]
    sleeps: list[float] = []
    fn = Flaky(errors)
    with pytest.raises(RetriableError) as info:
        call_with_retries(fn, attempts=3, sleep=sleeps.append)
    assert info.value is last
    assert fn.calls == 3
    assert len(sleeps) == 2  # no sleep after the final attempt


@pytest.mark.parametrize("error", [FatalError("no"), AuthError("bad"), ValueError("bug")])
def test_other_errors_pass_straight_through(error: Exception) -> None:
    sleeps: list[float] = []
    fn = Flaky([error])
    with pytest.raises(type(error)) as info:
        call_with_retries(fn, sleep=sleeps.append)
    assert info.value is error
    assert fn.calls == 1
    assert sleeps == []


def test_backoff_grows_exponentially_with_full_jitter_and_is_capped() -> None:
    sleeps: list[float] = []
    fn = Flaky([RetriableError("x") for _ in range(6)])
    # uniform returning its upper bound shows the ceiling of each wait
    call_with_retries(
        fn, attempts=7, base=0.5, cap=4.0, sleep=sleeps.append, uniform=lambda a, b: b
    )
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_retry_after_hint_sets_a_floor_within_the_cap() -> None:
    sleeps: list[float] = []
    fn = Flaky([RateLimitedError("429", retry_after=7.0), RateLimitedError("429", retry_after=90)])
    call_with_retries(fn, cap=30.0, sleep=sleeps.append, uniform=lambda a, b: a)
    assert sleeps == [7.0, 30.0]


def test_on_retry_reports_error_attempt_and_wait() -> None:
    seen: list[tuple[str, int, float]] = []
    fn = Flaky([RetriableError("first"), RetriableError("second")])
    call_with_retries(
        fn,
        sleep=lambda s: None,
        uniform=lambda a, b: b,
        on_retry=lambda err, n, wait: seen.append((str(err), n, wait)),
    )
    assert seen == [("first", 1, 0.5), ("second", 2, 1.0)]


def test_attempts_must_be_positive() -> None:
    with pytest.raises(ValueError):
        call_with_retries(lambda: 1, attempts=0)


@settings(max_examples=200, deadline=None)
@given(
    attempt=st.integers(min_value=1, max_value=40),
    base=st.floats(min_value=0.01, max_value=5),
    cap=st.floats(min_value=0.1, max_value=120),
    retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=600)),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_backoff_delay_bounds(
    attempt: int, base: float, cap: float, retry_after: float | None, seed: int
) -> None:
    rng = random.Random(seed)
    wait = backoff_delay(attempt, base=base, cap=cap, retry_after=retry_after, uniform=rng.uniform)
    assert 0.0 <= wait <= cap
    if retry_after is None:
        assert wait <= min(cap, base * 2 ** (attempt - 1)) + 1e-9
    else:
        assert wait >= min(retry_after, cap) - 1e-9


# --- traces and announced waits --------------------------------------------------------------


@pytest.fixture
def debug() -> Iterator[None]:
    configure_logging("DEBUG", "json", stream=io.StringIO())
    try:
        yield
    finally:
        structlog.reset_defaults()


@pytest.fixture
def notices(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr(logs, "notice_sink", lines.append)
    return lines


class Answering(Flaky):
    """``Flaky`` that reports each attempt's request and answer to the current trace."""

    def __init__(self, errors: list[Exception], statuses: list[int]) -> None:
        super().__init__(errors)
        self.statuses = list(statuses)

    def __call__(self) -> str:
        trace = current_trace()
        assert trace is not None
        trace.sending("PATCH", "https://x.my.salesforce.com/services/data/v59.0/composite/sobjects")
        trace.answered(self.statuses.pop(0))
        return super().__call__()


def test_each_attempt_is_one_event_with_the_wait_before_the_next(debug: None) -> None:
    sleeps: list[float] = []
    fn = Answering([RetriableError("503", code="HTTP_503")] * 2, [503, 503, 200])
    with capture_logs() as events:
        call_with_retries(
            fn, sleep=sleeps.append, uniform=lambda a, b: b, trace=CallTrace("salesforce", "write")
        )
    assert [(e["attempt"], e["status"], e.get("retry_in_s"), e.get("error")) for e in events] == [
        (1, 503, 0.5, "RetriableError"),
        (2, 503, 1.0, "RetriableError"),
        (3, 200, None, None),
    ]
    assert {(e["method"], e["path"], e["endpoint"]) for e in events} == {
        ("PATCH", "/services/data/v59.0/composite/sobjects", "write")
    }
    assert current_trace() is None  # only while an attempt runs


def test_the_last_failure_is_one_event_without_a_retry(debug: None) -> None:
    with capture_logs() as events, pytest.raises(AuthError):
        call_with_retries(
            Flaky([AuthError("bad")]), sleep=lambda s: None, trace=CallTrace("hubspot", "read")
        )
    assert [(e["attempt"], e["status"], e.get("retry_in_s")) for e in events] == [
        (1, "AuthError", None)
    ]


def test_a_retry_wait_over_a_second_is_told_not_logged(notices: list[str]) -> None:
    fn = Flaky([RetriableError("503", code="HTTP_503"), RetriableError("503", code="HTTP_503")])
    with capture_logs() as events:
        call_with_retries(
            fn,
            base=1.0,
            sleep=lambda s: None,
            uniform=lambda a, b: b,
            trace=CallTrace("salesforce", "write"),
        )
    # 1.0 s is not longer than a second; 2.0 s is
    assert notices == ["waiting 2.0 s before retrying Salesforce (HTTP_503; retry 2 of 4)"]
    assert [e for e in events if e["event"] == "rate_limit_wait"] == []


def test_a_rate_limit_wait_over_a_second_is_logged_and_told(notices: list[str]) -> None:
    fn = Flaky([RateLimitedError("429", retry_after=2.5)])
    with capture_logs() as events:
        call_with_retries(fn, sleep=lambda s: None, trace=CallTrace("hubspot", "write"))
    assert notices == ["waiting 2.5 s for HubSpot's rate limit (retry 1 of 4)"]
    assert [e for e in events if e["event"] == "rate_limit_wait"] == [
        {
            "event": "rate_limit_wait",
            "log_level": "info",
            "destination": "hubspot",
            "seconds": 2.5,
            "retry_after": 2.5,
        }
    ]


def test_a_wait_without_a_trace_is_told_in_general_terms(notices: list[str]) -> None:
    call_with_retries(Flaky([RateLimitedError("429", retry_after=3)]), sleep=lambda s: None)
    assert notices == ["waiting 3.0 s for the server's rate limit (retry 1 of 4)"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://x/services/data/v59.0/query/?q=SELECT+Id+FROM+Lead+WHERE+Email+%21%3D+null",
            "Lead",
        ),
        (
            "https://x/services/data/v59.0/query/?q=SELECT+Id%2C+%28SELECT+Id+FROM+Contacts%29"
            "+FROM+Account",
            "Account",
        ),
        ("https://x/services/data/v59.0/query/01gX-2000", None),
        (None, None),
    ],
)
def test_soql_object_is_the_outer_from(url: str | None, expected: str | None) -> None:
    assert soql_object(url) == expected
