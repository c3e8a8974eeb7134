"""The retry policy every CRM connector shares: exponential backoff with full jitter.

Only ``RetriableError`` (and its subclasses) is retried; everything else passes straight
through. A server's ``Retry-After`` hint is honoured, within the cap.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

from pls_sync.errors import RetriableError

T = TypeVar("T")


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


def call_with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base: float = 0.5,
    cap: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[RetriableError, int, float], None] | None = None,
    uniform: Callable[[float, float], float] = random.uniform,
) -> T:
    """Call ``fn`` until it returns, retrying ``RetriableError`` up to ``attempts`` calls in all.

    ``on_retry(error, attempt_number, wait_seconds)`` is called before each sleep. When the
    attempts run out the last ``RetriableError`` is raised as it was; any other exception is
    raised at once. ``sleep`` and ``uniform`` are injectable so tests take no real time.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        hint = error.retry_after if isinstance(error, RetriableError) else None
        return backoff_delay(
            state.attempt_number, base=base, cap=cap, retry_after=hint, uniform=uniform
        )

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is None or state.outcome is None:
            return
        error = state.outcome.exception()
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        if isinstance(error, RetriableError):
            on_retry(error, state.attempt_number, float(delay))

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=wait,
        retry=tenacity.retry_if_exception_type(RetriableError),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(fn)
