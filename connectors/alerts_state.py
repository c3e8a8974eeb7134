"""Rep-alert bookkeeping in the state store: which alert keys have a CRM task, which do not yet.

The protocol that makes an alert happen exactly once per sales-tier entry:

1. ``mark_pending(store, key, ...)`` records the intent (and the task's text) before any call;
2. ``mark_sending(store, key)`` marks the moment a create is about to be sent;
3. the CRM connector creates the task idempotently: it first looks the task up by the same key,
   stored on the task itself, and only creates it when none exists;
4. ``mark_created(store, key, task_id)`` records the outcome, or ``mark_rejected`` the CRM's
   refusal with its reason.

A crash between 2 and 4 leaves the row ``sending``; the next run retries it, the connector finds
the task by its key and returns it without creating a second one. Where the CRM's lookup lags
behind its writes (HubSpot's search index), a row's ``sending_since`` tells the caller to wait until a
task created just before the crash can be found. Rejected alerts are retried on later runs
(``alerts_to_retry``) and never duplicated, for the same reason.

The ``alerts`` table lives in the state store's database, on its own ``MetaData``, and is created
on first use. Every database failure surfaces as ``FatalError`` with secrets removed.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy import exc as sa_exc

from connectors.state import UtcDateTime
from pls_sync.errors import FatalError, PlsSyncError, redact
from pls_sync.models import RecordRejection

__all__ = [
    "CREATED",
    "PENDING",
    "REJECTED",
    "SENDING",
    "AlertRow",
    "TaskRejected",
    "alert_crm",
    "alerts_to_retry",
    "record_alert_crm",
    "reopen_alert",
    "settle_in_flight",
    "get_alert",
    "mark_created",
    "mark_pending",
    "mark_sending",
    "mark_rejected",
    "pending_or_missing",
]

PENDING = "pending"
SENDING = "sending"
CREATED = "created"
REJECTED = "rejected"
_KEY = 255
_IN_CHUNK = 500  # bound parameters per IN list, well under every backend's limit

_metadata = MetaData()

alerts = Table(
    "alerts",
    _metadata,
    Column("key", String(_KEY), primary_key=True),
    Column("destination", String(32), nullable=False),
    Column("account_key", String(_KEY), nullable=False),
    Column("record_id", String(64)),
    Column("task_id", String(64)),
    Column("status", String(16), nullable=False),
    Column("reason", Text),
    Column("attempts", Integer, nullable=False),
    Column("payload", JSON),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Index("ix_alerts_status", "status"),
)

# Which CRM (its identity, e.g. ``salesforce:<org id>``) each destination's alerts go to, so a
# destination pointed at another CRM is noticed before a task is sent there.
alert_crms = Table(
    "alert_crms",
    _metadata,
    Column("destination", String(32), primary_key=True),
    Column("identity", String(_KEY), nullable=False),
    Column("since", UtcDateTime(), nullable=False),
)

# Engines whose alerts table is known to exist: checked once per engine per process.
_ready: weakref.WeakSet[Engine] = weakref.WeakSet()


class TaskRejected(PlsSyncError):
    """The CRM refused to create one alert task (invalid owner, validation rule...).

    Raised by the CRM connectors' ``create_*_alert``; neither retriable at once nor fatal to the
    run: record it with ``mark_rejected(store, key, str(error))`` and retry on a later run.
    ``rejection`` holds the CRM's code, message and fields.
    """

    def __init__(self, rejection: RecordRejection):
        super().__init__(f"{rejection.code}: {rejection.message}")
        self.rejection = rejection


class HasEngine(Protocol):
    """What this module needs from the state store: its SQLAlchemy engine."""

    @property
    def engine(self) -> Engine:
        """The engine of the state store's database."""
        ...


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One alert as stored.

    ``record_id`` is the CRM account (Salesforce Account id, HubSpot company id) the task goes
    on; ``payload`` holds what is needed to create the task again on a retry (owner, subject,
    body), as given to ``mark_pending``.
    """

    key: str
    destination: str
    account_key: str
    record_id: str | None
    task_id: str | None
    status: str
    reason: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    payload: Mapping[str, Any] = field(default_factory=dict)

    @property
    def sending_since(self) -> datetime | None:
        """When a create was sent without its outcome being recorded, or ``None``."""
        return self.updated_at if self.status == SENDING else None


def _now() -> datetime:
    return datetime.now(UTC)


def _engine(store: HasEngine) -> Engine:
    engine = store.engine
    if engine not in _ready:
        with _transaction(engine, "create the alerts table", write=True) as conn:
            _metadata.create_all(conn, checkfirst=True)
        _ready.add(engine)
    return engine


@contextmanager
def _transaction(engine: Engine, action: str, *, write: bool = False) -> Iterator[Connection]:
    """A connection in a transaction; database errors become ``FatalError``."""
    try:
        with engine.connect() as conn:
            if write:
                # The state store's SQLite engine honours this: take the write lock up front.
                conn.execution_options(pls_sync_begin="BEGIN IMMEDIATE")
            with conn.begin():
                yield conn
    except sa_exc.SQLAlchemyError as error:
        detail = error.orig if isinstance(error, sa_exc.DBAPIError) else error
        secrets = [str(engine.url.password)] if engine.url.password else []
        text = redact(" ".join(str(detail).split()), secrets)
        raise FatalError(f"state store: {action} failed: {text}", code="state_error") from None


def _row(mapping: Any) -> AlertRow:
    """An ``AlertRow`` from a result row mapping."""
    return AlertRow(
        key=mapping["key"],
        destination=mapping["destination"],
        account_key=mapping["account_key"],
        record_id=mapping["record_id"],
        task_id=mapping["task_id"],
        status=mapping["status"],
        reason=mapping["reason"],
        attempts=int(mapping["attempts"] or 0),
        created_at=mapping["created_at"],
        updated_at=mapping["updated_at"],
        payload=dict(mapping["payload"] or {}),
    )


def pending_or_missing(store: HasEngine, keys: Iterable[str]) -> set[str]:
    """The keys among ``keys`` that have no created task yet.

    A key is returned when it has no row (never attempted), or its row is ``pending`` (a run
    stopped before recording the outcome) or ``rejected`` (the CRM refused it). Retrying any of
    them is safe: task creation looks the task up by its key first.
    """
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return set()
    engine = _engine(store)
    done: set[str] = set()
    with _transaction(engine, "read alerts") as conn:
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            query = select(alerts.c.key).where(alerts.c.key.in_(chunk), alerts.c.status == CREATED)
            done.update(conn.execute(query).scalars())
    return {key for key in wanted if key not in done}


def mark_pending(
    store: HasEngine,
    key: str,
    *,
    destination: str,
    account_key: str,
    record_id: str | None = None,
    payload: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> bool:
    """Record an attempt to create the alert ``key``, before the CRM call; counts the attempt.

    Returns ``False`` (and changes nothing) when the alert already has a created task, so the
    caller does not create it again; ``True`` when the attempt should go ahead. ``payload`` is
    kept for retries (owner id, subject, body); a new payload replaces the stored one.
    """
    if not key or len(key) > _KEY:
        raise ValueError(f"alert key must be 1 to {_KEY} characters")
    engine = _engine(store)
    stamp = now or _now()
    with _transaction(engine, "mark an alert pending", write=True) as conn:
        current = conn.execute(
            select(alerts.c.status, alerts.c.attempts, alerts.c.payload).where(alerts.c.key == key)
        ).first()
        if current is None:
            conn.execute(
                insert(alerts).values(
                    key=key,
                    destination=destination,
                    account_key=account_key,
                    record_id=record_id,
                    task_id=None,
                    status=PENDING,
                    reason=None,
                    attempts=1,
                    payload=dict(payload) if payload is not None else None,
                    created_at=stamp,
                    updated_at=stamp,
                )
            )
            return True
        if current.status == CREATED:
            return False
        if current.status == SENDING:
            return True  # a create may be in the CRM already: keep when it was sent
        values: dict[str, Any] = {
            "status": PENDING,
            "attempts": int(current.attempts or 0) + 1,
            "updated_at": stamp,
            "destination": destination,
            "account_key": account_key,
        }
        if record_id is not None:
            values["record_id"] = record_id
        if payload is not None:
            values["payload"] = dict(payload)
        conn.execute(update(alerts).where(alerts.c.key == key).values(**values))
        return True


def _finish(store: HasEngine, key: str, action: str, values: dict[str, Any]) -> None:
    engine = _engine(store)
    with _transaction(engine, action, write=True) as conn:
        result = conn.execute(update(alerts).where(alerts.c.key == key).values(**values))
        if result.rowcount == 0:
            raise FatalError(
                f"state store: {action} failed: no alert {key!r} (call mark_pending first)",
                code="state_error",
            )


def mark_created(store: HasEngine, key: str, task_id: str, *, now: datetime | None = None) -> None:
    """Record that the CRM holds the task ``task_id`` for alert ``key`` (clears any reason)."""
    _finish(
        store,
        key,
        "mark an alert created",
        {"status": CREATED, "task_id": str(task_id), "reason": None, "updated_at": now or _now()},
    )


def mark_sending(store: HasEngine, key: str, *, now: datetime | None = None) -> None:
    """Record that the task for alert ``key`` is about to be created in the CRM."""
    _finish(store, key, "mark an alert sending", {"status": SENDING, "updated_at": now or _now()})


def mark_rejected(store: HasEngine, key: str, reason: str, *, now: datetime | None = None) -> None:
    """Record that the CRM refused the task for alert ``key``, and why; it is retried later."""
    _finish(
        store,
        key,
        "mark an alert rejected",
        {"status": REJECTED, "reason": reason, "updated_at": now or _now()},
    )


def alerts_to_retry(
    store: HasEngine, *, destination: str | None = None, max_attempts: int | None = None
) -> list[AlertRow]:
    """Alerts without a created task (``pending``, ``sending`` and ``rejected``), oldest first.

    ``destination`` keeps one CRM's alerts; ``max_attempts`` leaves out alerts already tried
    that many times (a permanent refusal stays recorded, with its reason, for the report).
    """
    engine = _engine(store)
    query = select(alerts).where(alerts.c.status.in_((PENDING, SENDING, REJECTED)))
    if destination is not None:
        query = query.where(alerts.c.destination == destination)
    if max_attempts is not None:
        query = query.where(alerts.c.attempts < max_attempts)
    query = query.order_by(alerts.c.created_at, alerts.c.key)
    with _transaction(engine, "read alerts to retry") as conn:
        return [_row(row) for row in conn.execute(query).mappings()]


def any_alert(store: HasEngine, destination: str) -> bool:
    """Whether any alert of ``destination`` was ever recorded."""
    engine = _engine(store)
    query = select(alerts.c.key).where(alerts.c.destination == destination).limit(1)
    with _transaction(engine, "read alerts") as conn:
        return conn.execute(query).first() is not None


def get_alert(store: HasEngine, key: str) -> AlertRow | None:
    """The stored alert ``key``, or ``None``."""
    engine = _engine(store)
    with _transaction(engine, "read an alert") as conn:
        row = conn.execute(select(alerts).where(alerts.c.key == key)).mappings().first()
    return _row(row) if row is not None else None


def alert_crm(store: HasEngine, destination: str) -> str | None:
    """The identity of the CRM ``destination``'s alerts last went to, or ``None``."""
    engine = _engine(store)
    query = select(alert_crms.c.identity).where(alert_crms.c.destination == destination)
    with _transaction(engine, "read the alerts' CRM") as conn:
        return conn.execute(query).scalar()


def record_alert_crm(
    store: HasEngine, destination: str, identity: str, *, now: datetime | None = None
) -> None:
    """Record that ``destination``'s alerts go to the CRM ``identity`` from now on."""
    engine = _engine(store)
    values = {"identity": identity, "since": now or _now()}
    with _transaction(engine, "record the alerts' CRM", write=True) as conn:
        done = conn.execute(
            update(alert_crms).where(alert_crms.c.destination == destination).values(**values)
        )
        if not done.rowcount:
            conn.execute(insert(alert_crms).values(destination=destination, **values))


def settle_in_flight(
    store: HasEngine, destination: str, reason: str, *, now: datetime | None = None
) -> int:
    """Record every alert of ``destination`` sent without a known outcome (``sending``) as
    alerted, with no task id and ``reason``; returns how many. Used when the destination now
    points at another CRM: the task may exist in the one it was sent to."""
    engine = _engine(store)
    query = (
        update(alerts)
        .where(alerts.c.destination == destination, alerts.c.status == SENDING)
        .values(status=CREATED, task_id="", reason=reason, updated_at=now or _now())
    )
    with _transaction(engine, "settle alerts in flight", write=True) as conn:
        return int(conn.execute(query).rowcount or 0)


def reopen_alert(
    store: HasEngine,
    key: str,
    *,
    destination: str,
    account_key: str,
    payload: Mapping[str, Any],
    now: datetime | None = None,
) -> None:
    """Queue alert ``key`` again, whatever its status, with ``payload``'s text: its task is to
    be made in another CRM than the one it was recorded for (a backfill after a CRM change)."""
    engine = _engine(store)
    stamp = now or _now()
    values = {
        "status": PENDING,
        "task_id": None,
        "reason": None,
        "payload": dict(payload),
        "updated_at": stamp,
    }
    with _transaction(engine, "reopen an alert", write=True) as conn:
        done = conn.execute(update(alerts).where(alerts.c.key == key).values(**values))
        if not done.rowcount:
            conn.execute(
                insert(alerts).values(
                    key=key,
                    destination=destination,
                    account_key=account_key,
                    record_id=None,
                    attempts=0,
                    created_at=stamp,
                    **values,
                )
            )
