"""Ports: what the run service needs from the outside world, as ``typing.Protocol`` s.

Real adapters live in ``connectors/``; tests pass hand-written fakes. The bootstrap
(``pls_sync.bootstrap``) is the one place that builds real adapters from config.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pls_sync.channels import UserProfile
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

if TYPE_CHECKING:
    from pls_sync.crm_setup import FieldRequirement, SetupStep


class UsageSource(Protocol):
    """Reads usage aggregates from the warehouse, one ``ProductAccount`` per account."""

    def read_accounts(self, as_of: datetime, stats: UsageReadStats) -> Iterator[ProductAccount]:
        """Yield accounts aggregated as of ``as_of`` (UTC); count rows and skips into ``stats``."""
        ...

    def read_company_sizes(self, as_of: datetime) -> dict[str, dict[str, int]]:
        """Per account key (as ``read_accounts`` gives them), how many of its users as of
        ``as_of`` reported each company size (``{"acme.com": {"51-200": 3, "11-50": 1}}``).

        The warehouse's self-reported firmographics, for the fit segment; an account without
        any is absent. ``{}`` when the warehouse holds no company size.
        """
        ...


class CrmDestination(Protocol):
    """A CRM that holds accounts: Salesforce or HubSpot."""

    name: str

    def describe(self, object_name: str) -> dict[str, FieldSpec]:
        """Return the object's fields by name, with type, length and writability."""
        ...

    def read_records(self, mapping: DestinationMapping) -> Iterator[CrmRecord]:
        """Yield every record of the mapping's object with domain fields and mapped fields."""
        ...

    def write(
        self,
        object_name: str,
        changes: Sequence[RecordChange],
        specs: Mapping[str, FieldSpec],
        *,
        stop: threading.Event | None = None,
    ) -> WriteResult:
        """Write changed fields; per-record failures come back as rejections, not exceptions.

        Once ``stop`` is set (SIGTERM), the batch in flight finishes and the rest is left
        ``not_attempted``: still in the diff, so the next run writes it.
        """
        ...

    def api_calls(self) -> dict[str, int]:
        """Calls made so far by kind (``read``, ``write``, ``describe``, ``auth``, ...)."""
        ...


@dataclass(frozen=True, slots=True)
class AccountState:
    """What the state store remembers of an account between runs."""

    key: str
    score: int
    tier: str
    tier_since: datetime | None = None
    qualified_since: datetime | None = None
    scored_at: datetime | None = None
    # The score move at the last run that moved it: a rerun over unchanged data keeps it,
    # so the field written from it does not flap to 0.
    score_change: int | None = None


@dataclass(frozen=True, slots=True)
class TierTransition:
    """An account moved from one tier to another at ``at``."""

    key: str
    from_tier: str | None
    to_tier: str
    score: int
    at: datetime


@dataclass(slots=True)
class RunRecord:
    """One run as the state store keeps it."""

    run_id: str
    command: str
    started_at: datetime
    finished_at: datetime | None = None
    status: str = "running"  # running | succeeded | failed | partial
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StoredRejection:
    """A rejected record write kept for the next run."""

    destination: str
    record_id: str
    code: str
    message: str
    fields: tuple[str, ...]
    first_seen_at: datetime
    last_seen_at: datetime
    attempts: int
    run_id: str


class StateStore(Protocol):
    """Runs, account states, score history, tier transitions and rejected records."""

    def begin_run(self, run_id: str, command: str, started_at: datetime) -> None:
        """Record that a run started."""
        ...

    def finish_run(
        self,
        run_id: str,
        status: str,
        finished_at: datetime,
        summary: Mapping[str, Any],
        error: str | None = None,
    ) -> None:
        """Record a run's outcome and summary."""
        ...

    def recent_runs(self, limit: int = 10) -> list[RunRecord]:
        """The latest runs, newest first."""
        ...

    def load_account_states(self) -> dict[str, AccountState]:
        """Every account's last known state, by key."""
        ...

    def save_account_states(
        self,
        run_id: str,
        states: Iterable[AccountState],
        transitions: Iterable[TierTransition],
    ) -> None:
        """Upsert states, append score history and transitions, in one transaction."""
        ...

    def tier_entries(self, tier: str, keys: Iterable[str]) -> dict[str, int]:
        """How many recorded transitions took each of ``keys`` into ``tier``."""
        ...

    def prune_history(self, before: datetime) -> int:
        """Delete score history entries scored before ``before``; return how many went."""
        ...

    def record_rejections(
        self, run_id: str, destination: str, rejections: Iterable[RecordRejection], at: datetime
    ) -> None:
        """Keep rejections (attempts counted) so they are retried and reported."""
        ...

    def resolve_rejections(self, destination: str, record_ids: Iterable[str]) -> None:
        """Forget rejections of records that have now been written."""
        ...

    def open_rejections(self, destination: str | None = None) -> list[StoredRejection]:
        """Rejections not yet resolved."""
        ...

    def acquire_lock(
        self, name: str, owner: str, lease_seconds: float, now: datetime | None = None
    ) -> bool:
        """Take the named lock for ``lease_seconds`` unless another owner holds a live lease."""
        ...

    def renew_lock(
        self, name: str, owner: str, lease_seconds: float, now: datetime | None = None
    ) -> bool:
        """Extend our lease; False when we no longer hold the lock."""
        ...

    def release_lock(self, name: str, owner: str) -> bool:
        """Give the lock back (only its owner can)."""
        ...

    def lock_holder(self, name: str, now: datetime | None = None) -> tuple[str, datetime] | None:
        """Who holds the lock and until when, or None when it is free."""
        ...

    def load_owned(self, crm: str) -> dict[str, OwnedRecord]:
        """The ownership ledger of one CRM identity: every record pls-sync owns fields on."""
        ...

    def save_owned(self, crm: str, rows: Iterable[OwnedRecord], forget: Iterable[str] = ()) -> None:
        """Store (replace) ledger rows of ``crm`` and forget the records ``forget``, atomically."""
        ...

    def save_lists(
        self, run_id: str, at: datetime, lists: Mapping[str, list[dict[str, Any]]]
    ) -> None:
        """Keep the run's full lists (``abm``, ``unmatched``, ``stale``: name -> JSON-ready rows),
        replacing every list stored before: only the last run's lists are kept."""
        ...

    def load_lists(self) -> tuple[str, datetime, dict[str, list[dict[str, Any]]]] | None:
        """``(run_id, saved_at, lists)`` of the last ``save_lists``, or None when none was saved."""
        ...


class BuyerSource(Protocol):
    """Product users who could be buyers, read from the warehouse (filtered there)."""

    def read_buyer_candidates(self, as_of: datetime) -> Iterator[tuple[str, UserProfile]]:
        """Yield (account key, profile) for candidate buyers."""
        ...


class MqlSource(Protocol):
    """Marketing-qualified leads and contacts of one CRM."""

    def read_mqls(self) -> Iterator[tuple[str, str, str]]:
        """Yield (source, record id, email) for every MQL."""
        ...


class AlertSink(Protocol):
    """Creates the rep's task in one CRM, idempotently by key.

    ``lookup_lag_seconds``: how long a created task may stay invisible to the lookup by key
    (a search index); 0 when the lookup is consistent.
    """

    lookup_lag_seconds: float

    def crm_identity(self) -> str | None:
        """Which CRM the tasks go to (``salesforce:<org id>``, ``hubspot:<portal id>``)."""
        ...

    def create_alert(
        self, record: CrmRecord, subject: str, body: str, key: str
    ) -> tuple[str, bool]:
        """Create (or find) the task keyed ``key`` on ``record``; (task id, created now).

        Raises ``AlertRejected`` when the CRM refuses it."""
        ...


class AlertRejected(Exception):
    """The CRM refused a task: the reason is kept and the alert retried next run."""

    def __init__(self, rejection: RecordRejection):
        super().__init__(f"{rejection.code}: {rejection.message}")
        self.rejection = rejection


class AlertUnconfirmed(Exception):
    """A create whose answer was lost: the task may exist, and only a lookup the CRM answers
    truthfully (past its search lag) can tell; the alert settles until a later run looks."""


class AlertLedger(Protocol):
    """Which alerts were created, so each entry into a tier alerts exactly once."""

    def pending_or_missing(self, keys: Iterable[str]) -> set[str]:
        """The keys whose task is not known to exist yet."""
        ...

    def mark_pending(
        self,
        key: str,
        *,
        destination: str,
        account_key: str,
        record_id: str | None,
        payload: dict[str, Any],
    ) -> bool:
        """Record the intent before creating; False when already created."""
        ...

    def is_live(self, destination: str) -> bool:
        """Whether alerts ever went live for ``destination`` (it has a row in the ledger)."""
        ...

    def mark_baseline(self, key: str, *, destination: str, account_key: str) -> None:
        """Record ``key`` as alerted without a task (accounts already in the tier at go-live,
        and the go-live itself under an account key of ``""``)."""
        ...

    def crm_of(self, destination: str) -> str | None:
        """The CRM identity ``destination``'s alerts last went to, ``None`` before the first."""
        ...

    def move_to_crm(self, destination: str, identity: str, reason: str | None) -> int:
        """Record that ``destination``'s alerts now go to ``identity``. With a ``reason`` (the
        destination moved from another CRM), alerts sent to the previous CRM without a known
        outcome are recorded as alerted, not resent to this one. Returns how many."""
        ...

    def reopen(
        self, key: str, *, destination: str, account_key: str, payload: dict[str, Any]
    ) -> None:
        """Queue ``key`` again, whatever its status, for a task in another CRM."""
        ...

    def mark_sending(self, key: str) -> None:
        """Record that the create is about to be sent."""
        ...

    def mark_created(self, key: str, task_id: str) -> None:
        """Record the created task."""
        ...

    def mark_rejected(self, key: str, reason: str) -> None:
        """Record a refusal, to retry next run."""
        ...

    def alerts_to_retry(
        self, destination: str
    ) -> list[tuple[str, str, str | None, dict[str, Any], datetime | None]]:
        """(key, account key, record id, payload, sending since) of alerts not yet created.

        "Sending since" is when a create was sent whose outcome was never recorded, or ``None``.
        """
        ...


class SchemaAdmin(Protocol):
    """Creates and extends a CRM's fields for ``pls-sync setup`` (see ``pls_sync.crm_setup``)."""

    def live_schema(self, objects: Sequence[str]) -> dict[str, dict[str, FieldSpec]]:
        """Each object's fields by name, read fresh (never from a cache)."""
        ...

    def apply(self, step: SetupStep) -> str:
        """Carry out one step that ``changes`` (create a field, add picklist values, make a
        field an External ID); returns one line saying what was done.

        Raises ``FatalError`` naming the permission or scope the integration user lacks, or
        what the CRM refused."""
        ...

    def grant_access(self, needed: Sequence[FieldRequirement], *, assign: bool) -> list[str]:
        """Give the integration user the access ``needed`` says (edit or read), idempotently;
        lines saying what was done (none when nothing was needed or the CRM has no such
        thing). Salesforce: the permission set ``PLS_Sync_Integration``, assigned to the
        running user with ``assign``."""
        ...
