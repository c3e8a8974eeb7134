"""Fault injection for the sandbox: scripted or seeded-random failures that tests switch on.

A rule matches requests by counted endpoint name (a glob such as ``sf.composite.*``) and fires
either on the next ``times`` matching requests, at a seeded random ``rate``, or (with neither)
on every matching request until cleared. The server asks ``pick`` before handling a request;
``lock_row`` rules are not request-level: API modules ask ``locked_records`` which records of a
collection or bulk write must fail with UNABLE_TO_LOCK_ROW.

After-write kinds (``AFTER_WRITE_KINDS``) let the request through and spoil only its answer, as a
network or proxy does once the CRM has done the work:

* ``answer_lost``: applied, then the connection closes without a byte of answer;
* ``answer_cut``: applied, then the headers (full ``Content-Length``) and half the body, closed;
* ``answer_late``: applied, then the answer waits ``delay`` seconds (default 5): past the client's
  timeout, the write has already landed;
* ``apply_late``: the CRM takes ``delay`` seconds (default 5) before applying, then answers: a
  client that timed out and looks the record up at once does not find it yet;
* ``answer_not_json``: applied, then a 200 ``text/html`` page (a proxy's) instead of the JSON.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FAULT_KINDS = frozenset(
    {
        "rate_limit",
        "server_error",
        "unavailable",
        "slow",
        "drop",
        "invalid_session",
        "request_limit",
        "daily_limit",
        "lock_row",
    }
    | {"answer_lost", "answer_cut", "answer_late", "answer_not_json", "apply_late"}
)
# Faults that strike once the request has been handled: the CRM applied the write (or applies it
# late), and only the answer goes wrong. A client must treat the outcome as unknown.
AFTER_WRITE_KINDS = frozenset(
    {"answer_lost", "answer_cut", "answer_late", "answer_not_json", "apply_late"}
)


@dataclass(slots=True)
class FaultRule:
    """One fault rule; ``remaining`` counts down from ``times`` as it fires."""

    kind: str
    endpoint: str | None = None
    times: int | None = None
    rate: float | None = None
    record_ids: tuple[str, ...] = ()
    retry_after: float | None = None
    delay: float | None = None
    remaining: int | None = None
    fired: int = 0
    id: int = 0

    def matches(self, endpoint: str) -> bool:
        """Whether the rule applies to a request counted under ``endpoint``."""
        return self.endpoint is None or fnmatch.fnmatchcase(endpoint, self.endpoint)

    @property
    def exhausted(self) -> bool:
        """A scripted rule that has fired its ``times``."""
        return self.remaining is not None and self.remaining <= 0

    def as_dict(self) -> dict[str, Any]:
        """The rule as JSON-ready data (for the admin endpoint)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "endpoint": self.endpoint,
            "times": self.times,
            "rate": self.rate,
            "record_ids": list(self.record_ids),
            "retry_after": self.retry_after,
            "delay": self.delay,
            "remaining": self.remaining,
            "fired": self.fired,
        }


@dataclass
class FaultInjector:
    """The active fault rules, consulted by the server and the API modules. Thread-safe."""

    seed: int = 0
    injected: int = 0
    _rules: list[FaultRule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_id: int = 1

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def add(
        self,
        kind: str,
        *,
        endpoint: str | None = None,
        times: int | None = None,
        rate: float | None = None,
        record_ids: Sequence[str] = (),
        retry_after: float | None = None,
        delay: float | None = None,
    ) -> FaultRule:
        """Switch on a fault; returns the rule. Raises ValueError on an unknown kind or bad value."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1")
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be between 0 and 1")
        if kind == "lock_row" and not record_ids:
            raise ValueError("lock_row needs record_ids")
        if kind == "slow" and delay is None:
            delay = 1.0
        if kind in ("answer_late", "apply_late") and delay is None:
            delay = 5.0
        with self._lock:
            rule = FaultRule(
                kind=kind,
                endpoint=endpoint,
                times=times,
                rate=rate,
                record_ids=tuple(record_ids),
                retry_after=retry_after,
                delay=delay,
                remaining=times,
                id=self._next_id,
            )
            self._next_id += 1
            self._rules.append(rule)
        return rule

    def add_from_json(self, data: Mapping[str, Any]) -> FaultRule:
        """Add a rule from the admin endpoint's JSON (same keys as ``add``)."""
        allowed = {"kind", "endpoint", "times", "rate", "record_ids", "retry_after", "delay"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault keys: {sorted(unknown)}")
        if "kind" not in data:
            raise ValueError("a fault rule needs a kind")
        return self.add(
            str(data["kind"]),
            endpoint=data.get("endpoint"),
            times=data.get("times"),
            rate=data.get("rate"),
            record_ids=tuple(data.get("record_ids") or ()),
            retry_after=data.get("retry_after"),
            delay=data.get("delay"),
        )

    def clear(self) -> None:
        """Remove every rule."""
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        """A snapshot of the active rules."""
        with self._lock:
            return list(self._rules)

    def _fires(self, rule: FaultRule) -> bool:
        """Whether ``rule`` fires on this matching request; consumes one of its ``times``."""
        if rule.exhausted:
            return False
        if rule.rate is not None and self._random.random() >= rule.rate:
            return False
        if rule.remaining is not None:
            rule.remaining -= 1
        rule.fired += 1
        return True

    def pick(self, endpoint: str) -> FaultRule | None:
        """The request-level fault to inject into a request to ``endpoint``, if any."""
        with self._lock:
            for rule in self._rules:
                if rule.kind == "lock_row" or not rule.matches(endpoint):
                    continue
                if self._fires(rule):
                    self.injected += 1
                    return rule
            self._rules = [r for r in self._rules if not r.exhausted]
        return None

    def locked_records(self, endpoint: str, record_ids: Iterable[str]) -> frozenset[str]:
        """Which of ``record_ids`` a write to ``endpoint`` must fail with UNABLE_TO_LOCK_ROW."""
        wanted = set(record_ids)
        locked: set[str] = set()
        with self._lock:
            for rule in self._rules:
                if rule.kind != "lock_row" or not rule.matches(endpoint):
                    continue
                # Salesforce ids match in their 15- or 18-character form alike.
                chosen = {r[:15] for r in rule.record_ids}
                hit = {w for w in wanted if w[:15] in chosen}
                if hit and self._fires(rule):
                    self.injected += 1
                    locked |= hit
            self._rules = [r for r in self._rules if not r.exhausted]
        return frozenset(locked)
