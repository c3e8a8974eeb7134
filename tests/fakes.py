"""Hand-written fakes of the ports, for service tests that need no warehouse, CRM or database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from pls_sync.errors import FatalError
from pls_sync.mapping import DestinationMapping
from pls_sync.models import (
    CrmRecord,
    FieldSpec,
    OwnedRecord,
    ProductAccount,
    RecordChange,
    RecordRejection,
    UsageReadStats,
    WriteResult,
)
from pls_sync.ports import AccountState, RunRecord, StoredRejection, TierTransition


class FakeTime:
    """One clock for a connector's pacing and backoff and the sandbox's stamps and windows: it
    moves only when something sleeps on it (``sleeps`` records how long) or a test sets ``now``.
    Thread-safe: the sandbox serves from its own thread."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        """Move the clock on by ``seconds`` (never back), as if that long had been slept."""
        with self._lock:
            self.sleeps.append(seconds)
            self.now += max(0.0, seconds)


class FakeUsage:
    """Yields the accounts it was given (and the sign-up company sizes, by account key)."""

    def __init__(
        self,
        accounts: Iterable[ProductAccount],
        company_sizes: Mapping[str, Mapping[str, int]] | None = None,
    ):
        self.accounts = list(accounts)
        self.company_sizes = {key: dict(bands) for key, bands in (company_sizes or {}).items()}

    def read_company_sizes(self, as_of: datetime) -> dict[str, dict[str, int]]:
        """The sign-up company sizes it was given."""
        return {key: dict(bands) for key, bands in self.company_sizes.items()}

    def read_accounts(self, as_of: datetime, stats: UsageReadStats) -> Iterator[ProductAccount]:
        for account in self.accounts:
            stats.rows_read += 1
            stats.accounts += 1
            yield account


class FakeCrm:
    """An in-memory CRM: records by id, a schema, writes applied, calls counted.

    ``reject`` maps record ids to an error code the CRM answers for them;
    ``fail_with`` makes every call raise that error; ``before_batch`` is called with each
    write batch's offset before it is sent (a test's hook, e.g. to deliver SIGTERM).
    """

    def __init__(
        self,
        name: str,
        specs: Mapping[str, FieldSpec],
        records: Iterable[CrmRecord],
        batch_size: int = 200,
    ):
        self.name = name
        self.specs = dict(specs)
        self.records = {r.id: r for r in records}
        self.batch_size = batch_size
        self.calls: dict[str, int] = {"read": 0, "write": 0, "describe": 0}
        self.reject: dict[str, str] = {}
        self.fail_with: Exception | None = None
        self.before_batch: Callable[[int], None] = lambda _offset: None

    def describe(self, object_name: str) -> dict[str, FieldSpec]:
        self._maybe_fail()
        self.calls["describe"] += 1
        return dict(self.specs)

    def read_records(self, mapping: DestinationMapping) -> Iterator[CrmRecord]:
        self._maybe_fail()
        self.calls["read"] += 1
        return iter(list(self.records.values()))

    def write(
        self,
        object_name: str,
        changes: Sequence[RecordChange],
        specs: Mapping[str, FieldSpec],
        *,
        stop: threading.Event | None = None,
    ) -> WriteResult:
        self._maybe_fail()
        result = WriteResult()
        for start in range(0, len(changes), self.batch_size):
            if stop is not None and stop.is_set():
                result.not_attempted.extend(c.record_id for c in changes[start:])
                break
            self.before_batch(start)
            result.calls += 1
            self.calls["write"] += 1
            for change in changes[start : start + self.batch_size]:
                code = self.reject.get(change.record_id)
                if code:
                    result.rejected.append(
                        RecordRejection(
                            change.record_id,
                            code,
                            f"{code} on {change.record_id}",
                            tuple(change.fields),
                        )
                    )
                    continue
                record = self.records[change.record_id]
                fields: dict[str, Any] = dict(record.fields)
                fields.update(change.fields)
                self.records[change.record_id] = replace(record, fields=fields)
                result.written.append(change.record_id)
        return result

    def api_calls(self) -> dict[str, int]:
        return dict(self.calls)

    def _maybe_fail(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with


class FakeState:
    """The state store in dictionaries."""

    def __init__(self) -> None:
        self.runs: dict[str, RunRecord] = {}
        self.states: dict[str, AccountState] = {}
        self.history: list[tuple[str, str, int]] = []
        self.history_scored_at: list[datetime | None] = []
        self.transitions: list[TierTransition] = []
        self.rejections: dict[tuple[str, str], StoredRejection] = {}
        self.unavailable = False
        self.locks: dict[str, tuple[str, datetime]] = {}
        self.lists: tuple[str, datetime, dict[str, list[dict[str, Any]]]] | None = None
        self.owned: dict[str, dict[str, OwnedRecord]] = {}

    def begin_run(self, run_id: str, command: str, started_at: datetime) -> None:
        self._check()
        self.runs[run_id] = RunRecord(run_id, command, started_at)

    def finish_run(
        self,
        run_id: str,
        status: str,
        finished_at: datetime,
        summary: Mapping[str, Any],
        error: str | None = None,
    ) -> None:
        self._check()
        run = self.runs[run_id]
        run.status, run.finished_at, run.summary, run.error = (
            status,
            finished_at,
            dict(summary),
            error,
        )

    def recent_runs(self, limit: int = 10) -> list[RunRecord]:
        return sorted(self.runs.values(), key=lambda r: r.started_at, reverse=True)[:limit]

    def load_account_states(self) -> dict[str, AccountState]:
        self._check()
        return dict(self.states)

    def save_account_states(
        self, run_id: str, states: Iterable[AccountState], transitions: Iterable[TierTransition]
    ) -> None:
        for state in states:
            self.states[state.key] = state
            self.history.append((state.key, run_id, state.score))
            self.history_scored_at.append(state.scored_at)
        self.transitions.extend(transitions)

    def prune_history(self, before: datetime) -> int:
        kept = [
            (entry, at)
            for entry, at in zip(self.history, self.history_scored_at, strict=True)
            if at is None or at >= before
        ]
        pruned = len(self.history) - len(kept)
        self.history = [entry for entry, _ in kept]
        self.history_scored_at = [at for _, at in kept]
        return pruned

    def record_rejections(
        self, run_id: str, destination: str, rejections: Iterable[RecordRejection], at: datetime
    ) -> None:
        for r in rejections:
            old = self.rejections.get((destination, r.record_id))
            self.rejections[(destination, r.record_id)] = StoredRejection(
                destination,
                r.record_id,
                r.code,
                r.message,
                r.fields,
                old.first_seen_at if old else at,
                at,
                (old.attempts if old else 0) + 1,
                run_id,
            )

    def resolve_rejections(self, destination: str, record_ids: Iterable[str]) -> None:
        for record_id in record_ids:
            self.rejections.pop((destination, record_id), None)

    def open_rejections(self, destination: str | None = None) -> list[StoredRejection]:
        return [r for (d, _), r in self.rejections.items() if destination in (None, d)]

    def acquire_lock(
        self, name: str, owner: str, lease_seconds: float, now: datetime | None = None
    ) -> bool:
        now = now or datetime.now(UTC)
        holder = self.locks.get(name)
        if holder and holder[0] != owner and holder[1] > now:
            return False
        self.locks[name] = (owner, now + timedelta(seconds=lease_seconds))
        return True

    def renew_lock(
        self, name: str, owner: str, lease_seconds: float, now: datetime | None = None
    ) -> bool:
        holder = self.locks.get(name)
        if not holder or holder[0] != owner:
            return False
        self.locks[name] = (owner, (now or datetime.now(UTC)) + timedelta(seconds=lease_seconds))
        return True

    def release_lock(self, name: str, owner: str) -> bool:
        if self.locks.get(name, ("",))[0] == owner:
            del self.locks[name]
            return True
        return False

    def lock_holder(self, name: str, now: datetime | None = None) -> tuple[str, datetime] | None:
        holder = self.locks.get(name)
        if holder and holder[1] > (now or datetime.now(UTC)):
            return holder
        return None

    def save_lists(
        self, run_id: str, at: datetime, lists: Mapping[str, list[dict[str, Any]]]
    ) -> None:
        self._check()
        self.lists = (
            run_id,
            at,
            {name: [dict(row) for row in rows] for name, rows in lists.items()},
        )

    def load_lists(self) -> tuple[str, datetime, dict[str, list[dict[str, Any]]]] | None:
        self._check()
        if self.lists is None or not self.lists[2]:
            return None
        run_id, at, lists = self.lists
        return run_id, at, {name: [dict(row) for row in rows] for name, rows in lists.items()}

    def tier_entries(self, tier: str, keys: Iterable[str]) -> dict[str, int]:
        self._check()
        wanted = set(keys)
        counts: dict[str, int] = {}
        for transition in self.transitions:
            if transition.to_tier == tier and transition.key in wanted:
                counts[transition.key] = counts.get(transition.key, 0) + 1
        return counts

    def load_owned(self, crm: str) -> dict[str, OwnedRecord]:
        self._check()
        return dict(self.owned.get(crm, {}))

    def save_owned(self, crm: str, rows: Iterable[OwnedRecord], forget: Iterable[str] = ()) -> None:
        self._check()
        ledger = self.owned.setdefault(crm, {})
        for record_id in forget:
            ledger.pop(record_id, None)
        ledger.update((row.record_id, row) for row in rows)

    def _check(self) -> None:
        if self.unavailable:
            raise FatalError("state store unavailable")


class FakeBuyers:
    """Candidate buyers by account key."""

    def __init__(self, candidates: Iterable[tuple[str, Any]]):
        self.candidates = list(candidates)

    def read_buyer_candidates(self, as_of: datetime) -> Iterator[tuple[str, Any]]:
        return iter(self.candidates)


class FakeMqls:
    """MQLs of one CRM as (source, id, email)."""

    def __init__(self, mqls: Iterable[tuple[str, str, str]], fail_with: Exception | None = None):
        self.mqls = list(mqls)
        self.fail_with = fail_with

    def read_mqls(self) -> Iterator[tuple[str, str, str]]:
        if self.fail_with is not None:
            raise self.fail_with
        return iter(self.mqls)


class FakeAlertSink:
    """Tasks kept by key, like a CRM searching its tasks by the key field.

    With ``lookup_lag_seconds`` set, tasks in ``unindexed`` are not found by their key yet (a
    search index behind its writes): creating one of them again makes a duplicate.
    """

    def __init__(self, lookup_lag_seconds: float = 0.0) -> None:
        self.tasks: dict[str, tuple[str, str, str]] = {}
        self.reject: dict[str, str] = {}
        self.lookup_lag_seconds = lookup_lag_seconds
        self.unindexed: set[str] = set()
        self.duplicates = 0
        self.lose_answers = 0  # this many creates are applied and their answers lost
        self.identity: str | None = "fake:crm-1"

    def crm_identity(self) -> str | None:
        return self.identity

    def create_alert(
        self, record: CrmRecord, subject: str, body: str, key: str
    ) -> tuple[str, bool]:
        from pls_sync.ports import AlertRejected, AlertUnconfirmed

        if record.id in self.reject:
            code = self.reject[record.id]
            raise AlertRejected(RecordRejection(record.id, code, f"{code} for {record.id}"))
        if key in self.tasks and key not in self.unindexed:
            return f"task-{key}", False
        if key in self.tasks:
            self.duplicates += 1
        self.tasks[key] = (record.id, subject, body)
        if self.lose_answers:
            self.lose_answers -= 1
            self.unindexed.add(key)  # not searchable yet either
            raise AlertUnconfirmed(f"answer lost for {key}")
        return f"task-{key}", True


class FakeAlertLedger:
    """The alerts table in a dictionary."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.crash_on_created = False
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.crms: dict[str, str] = {}

    def crm_of(self, destination: str) -> str | None:
        return self.crms.get(destination)

    def move_to_crm(self, destination: str, identity: str, reason: str | None) -> int:
        settled = 0
        for row in self.rows.values() if reason else ():
            if row["destination"] == destination and row["status"] == "sending":
                row.update(status="created", reason=reason)
                settled += 1
        self.crms[destination] = identity
        return settled

    def pending_or_missing(self, keys: Iterable[str]) -> set[str]:
        return {k for k in keys if self.rows.get(k, {}).get("status") != "created"}

    def mark_pending(
        self,
        key: str,
        *,
        destination: str,
        account_key: str,
        record_id: str | None,
        payload: Mapping[str, Any],
    ) -> bool:
        row = self.rows.get(key)
        if row and row["status"] == "created":
            return False
        if row and row["status"] == "sending":
            return True
        self.rows[key] = {
            "status": "pending",
            "destination": destination,
            "account_key": account_key,
            "record_id": record_id,
            "payload": dict(payload),
        }
        return True

    def is_live(self, destination: str) -> bool:
        return any(row["destination"] == destination for row in self.rows.values())

    def mark_baseline(self, key: str, *, destination: str, account_key: str) -> None:
        self.mark_pending(
            key,
            destination=destination,
            account_key=account_key,
            record_id=None,
            payload={"baseline": True},
        )
        self.rows[key]["status"] = "created"

    def reopen(
        self, key: str, *, destination: str, account_key: str, payload: Mapping[str, Any]
    ) -> None:
        self.rows[key] = {
            "status": "pending",
            "destination": destination,
            "account_key": account_key,
            "record_id": None,
            "payload": dict(payload),
        }

    def mark_sending(self, key: str) -> None:
        self.rows[key]["status"] = "sending"
        self.rows[key]["sent_at"] = self.clock()

    def mark_created(self, key: str, task_id: str) -> None:
        if self.crash_on_created:
            raise KeyboardInterrupt  # the process dies between task creation and the ledger commit
        self.rows[key]["status"] = "created"

    def mark_rejected(self, key: str, reason: str) -> None:
        self.rows[key]["status"] = "rejected"
        self.rows[key]["reason"] = reason

    def alerts_to_retry(
        self, destination: str
    ) -> list[tuple[str, str, str | None, dict[str, Any], datetime | None]]:
        return [
            (
                k,
                r["account_key"],
                r["record_id"],
                r["payload"],
                r.get("sent_at") if r["status"] == "sending" else None,
            )
            for k, r in self.rows.items()
            if r["status"] != "created" and r["destination"] == destination
        ]


class StopAfter(threading.Event):
    """A stop event that reads as set after ``checks`` looks: SIGTERM between two batches."""

    def __init__(self, checks: int):
        super().__init__()
        self.checks_left = checks

    def is_set(self) -> bool:
        self.checks_left -= 1
        return self.checks_left < 0 or super().is_set()
