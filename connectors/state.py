"""The state store on SQLAlchemy: runs, account states, history, rejections, locks, heartbeats.

A SQLite file by default (WAL mode, busy timeout), PostgreSQL supported, any other SQLAlchemy
dialect through portable fallbacks. Datetimes go in and come out timezone-aware UTC on every
backend. Every database failure surfaces as ``pls_sync.errors.FatalError`` with the password
removed from the message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, RowMapping, make_url
from sqlalchemy.pool import StaticPool
from sqlalchemy.schema import CreateIndex
from sqlalchemy.types import TypeEngine

from pls_sync.errors import FatalError, redact
from pls_sync.models import OwnedRecord, RecordRejection
from pls_sync.ports import AccountState, RunRecord, StoredRejection, TierTransition

SCHEMA_VERSION = 1
_BATCH = 10_000
_LEDGER_BATCH = 5_000  # ledger rows parsed per json call when loading
# Dialects whose INSERT takes ON CONFLICT ... DO UPDATE; others delete then insert.
NATIVE_UPSERT_DIALECTS = ("sqlite", "postgresql")
_SQLITE_TIMEOUT_SECONDS = 30.0
_KEY = 255


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on every backend.

    PostgreSQL keeps ``timestamptz``; SQLite keeps fixed-width ISO 8601 text in UTC, so that
    comparing and ordering the text compares and orders the instants. Naive datetimes are taken
    as UTC, the project's convention.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Text on SQLite, ``timestamptz`` on PostgreSQL, a naive UTC datetime elsewhere."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        if dialect.name == "postgresql":
            return dialect.type_descriptor(DateTime(timezone=True))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        """Normalise to UTC before storing."""
        if value is None:
            return None
        if dialect.name == "sqlite":
            return _utc_text(value)
        value = _as_utc(value)
        if dialect.name == "postgresql":
            return value
        return value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime whatever the backend handed back."""
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return _as_utc(value)


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# A run stamps most of its rows with the same few instants: format each once.
@lru_cache(maxsize=65_536)
def _utc_text(value: datetime) -> str:
    return _as_utc(value).isoformat(timespec="microseconds")


metadata = MetaData()

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", UtcDateTime(), nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(_KEY), primary_key=True),
    Column("command", String(64), nullable=False),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime()),
    Column("status", String(32), nullable=False),
    Column("summary", JSON),
    Column("error", Text),
    Index("ix_runs_started_at", "started_at"),
)

account_states = Table(
    "account_states",
    metadata,
    Column("account_key", String(_KEY), primary_key=True),
    Column("score", Integer, nullable=False),
    Column("tier", String(64), nullable=False),
    Column("tier_since", UtcDateTime()),
    Column("qualified_since", UtcDateTime()),
    Column("scored_at", UtcDateTime()),
    Column("score_change", Integer),
    Column("run_id", String(_KEY)),
)

score_history = Table(
    "score_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_key", String(_KEY), nullable=False),
    Column("run_id", String(_KEY), nullable=False),
    Column("scored_at", UtcDateTime(), nullable=False),
    Column("score", Integer, nullable=False),
    Column("tier", String(64), nullable=False),
    Index("ix_score_history_account_scored", "account_key", "scored_at"),
    # prune_history deletes by age after every run: a range on scored_at, not a table scan.
    Index("ix_score_history_scored_at", "scored_at"),
)

tier_transitions = Table(
    "tier_transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_key", String(_KEY), nullable=False),
    Column("run_id", String(_KEY), nullable=False),
    Column("from_tier", String(64)),
    Column("to_tier", String(64), nullable=False),
    Column("score", Integer, nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Index("ix_tier_transitions_at", "at"),
    Index("ix_tier_transitions_account", "account_key"),
)

rejections = Table(
    "rejections",
    metadata,
    Column("destination", String(64), nullable=False),
    Column("record_id", String(_KEY), nullable=False),
    Column("code", String(255), nullable=False),
    Column("message", Text, nullable=False),
    Column("fields", JSON),
    Column("first_seen_at", UtcDateTime(), nullable=False),
    Column("last_seen_at", UtcDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("run_id", String(_KEY), nullable=False),
    Column("resolved_at", UtcDateTime()),
    PrimaryKeyConstraint("destination", "record_id"),
)

locks = Table(
    "locks",
    metadata,
    Column("name", String(_KEY), primary_key=True),
    Column("owner", String(_KEY), nullable=False),
    Column("acquired_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False),
)

heartbeats = Table(
    "heartbeats",
    metadata,
    Column("name", String(_KEY), primary_key=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("detail", JSON),
)

# The full lists of the last run that kept them (ABM, unmatched, stale): one row per list,
# its rows as a JSON array in text, replaced as a whole by the next run.
run_lists = Table(
    "run_lists",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("run_id", String(_KEY), nullable=False),
    Column("saved_at", UtcDateTime(), nullable=False),
    Column("rows_json", Text, nullable=False),
)

# The ownership ledger: per CRM identity (``salesforce:<org id>``, ``hubspot:<portal id>``) and
# record, the account whose values the record carries and what pls-sync last wrote on each
# owned field (JSON text, encoded once per row).
crm_ownership = Table(
    "crm_ownership",
    metadata,
    Column("crm", String(_KEY), primary_key=True),
    Column("record_id", String(_KEY), primary_key=True),
    Column("account_key", String(_KEY), nullable=False),
    # {"fields", "pending", "modified", "written_at", "in_flight"} as JSON text
    Column("data", Text, nullable=False),
)

kv = Table(
    "kv",
    metadata,
    Column("key", String(_KEY), primary_key=True),
    Column("value", JSON),
    Column("updated_at", UtcDateTime(), nullable=False),
)


class SqlStateStore:
    """``pls_sync.ports.StateStore`` on a SQL database, plus locks, heartbeats and a key-value map.

    ``SqlStateStore.open(url)`` is the usual entry point: it builds the engine, creates the
    tables when missing and checks the schema version. Pass ``engine`` to reuse one built
    elsewhere (tests pin a PostgreSQL ``search_path`` that way).
    """

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self._secrets: list[str] = []
        self._safe_url = redact(url)
        try:
            parsed = make_url(url)
        except (sa_exc.ArgumentError, ValueError):
            raise FatalError(
                f"state store URL {self._safe_url!r} is not a valid SQLAlchemy URL",
                code="state_config",
            ) from None
        if parsed.password:
            self._secrets.append(str(parsed.password))
        self._safe_url = parsed.render_as_string(hide_password=True)
        self._url = parsed
        self._engine = engine if engine is not None else self._create_engine(parsed)
        self._dialect = self._engine.dialect.name
        self._native_upsert = self._dialect in NATIVE_UPSERT_DIALECTS

    @classmethod
    def open(cls, url: str, *, engine: Engine | None = None) -> SqlStateStore:
        """A store at ``url`` with its tables created (and its SQLite folder) when missing."""
        store = cls(url, engine=engine)
        store.create_schema()
        return store

    def __repr__(self) -> str:
        return f"SqlStateStore({self._safe_url!r})"

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine behind the store."""
        return self._engine

    def close(self) -> None:
        """Release the engine's pooled connections."""
        self._engine.dispose()

    # --- schema -----------------------------------------------------------------------------

    def create_schema(self) -> None:
        """Create missing tables and record the schema version; refuse a newer schema."""
        database = self._url.database
        if (
            self._dialect == "sqlite"
            and database
            and not _is_memory(self._url)
            and not database.startswith("file:")
        ):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise FatalError(
                    f"state store {self._safe_url}: cannot create its folder: {error}",
                    code="state_unreachable",
                ) from None
        with self._transaction("create tables", write=True) as conn:
            metadata.create_all(conn, checkfirst=True)
            # create_all adds indexes only with a new table: add those an older store lacks.
            # SQLite and PostgreSQL say IF NOT EXISTS themselves, with no catalogue reflection.
            for table in metadata.sorted_tables:
                for index in table.indexes:
                    if self._dialect in ("sqlite", "postgresql"):
                        conn.execute(CreateIndex(index, if_not_exists=True))
                    else:
                        index.create(conn, checkfirst=True)
        with self._transaction("check schema version", write=True) as conn:
            current = conn.execute(select(func.max(schema_version.c.version))).scalar()
            if current is None:
                conn.execute(
                    insert(schema_version).values(version=SCHEMA_VERSION, applied_at=_now())
                )
            elif current > SCHEMA_VERSION:
                raise FatalError(
                    f"state store {self._safe_url} has schema version {current}; this pls-sync "
                    f"understands up to {SCHEMA_VERSION}: upgrade pls-sync",
                    code="state_schema",
                )

    def schema_version(self) -> int | None:
        """The schema version recorded in the database, or None before ``create_schema``."""
        with self._transaction("read schema version") as conn:
            return conn.execute(select(func.max(schema_version.c.version))).scalar()

    # --- runs -------------------------------------------------------------------------------

    def begin_run(self, run_id: str, command: str, started_at: datetime) -> None:
        """Record that a run started."""
        with self._transaction("record run start", write=True) as conn:
            conn.execute(
                insert(runs).values(
                    run_id=run_id,
                    command=command,
                    started_at=started_at,
                    status="running",
                    summary={},
                )
            )

    def finish_run(
        self,
        run_id: str,
        status: str,
        finished_at: datetime,
        summary: Mapping[str, Any],
        error: str | None = None,
    ) -> None:
        """Record a run's outcome and summary; ``KeyError`` when the run was never begun."""
        with self._transaction("record run outcome", write=True) as conn:
            result = conn.execute(
                update(runs)
                .where(runs.c.run_id == run_id)
                .values(
                    status=status,
                    finished_at=finished_at,
                    summary=_json_safe(dict(summary), lenient=True),
                    error=redact(error, self._secrets) if error is not None else None,
                )
            )
        if result.rowcount == 0:
            raise KeyError(f"run {run_id!r} was never begun")

    def recent_runs(self, limit: int = 10) -> list[RunRecord]:
        """The latest runs, newest first."""
        query = select(runs).order_by(runs.c.started_at.desc(), runs.c.run_id.desc()).limit(limit)
        with self._transaction("read runs") as conn:
            return [_run_record(row) for row in conn.execute(query).mappings()]

    def last_successful_run(self) -> RunRecord | None:
        """The latest run whose status is ``succeeded``, if any."""
        query = (
            select(runs)
            .where(runs.c.status == "succeeded")
            .order_by(runs.c.started_at.desc(), runs.c.run_id.desc())
            .limit(1)
        )
        with self._transaction("read last successful run") as conn:
            row = conn.execute(query).mappings().first()
        return _run_record(row) if row is not None else None

    # --- account states, history, transitions ------------------------------------------------

    def load_account_states(self) -> dict[str, AccountState]:
        """Every account's last known state, by key."""
        columns = account_states.c
        query = select(
            columns.account_key,
            columns.score,
            columns.tier,
            columns.tier_since,
            columns.qualified_since,
            columns.scored_at,
            columns.score_change,
        )
        with self._transaction("load account states") as conn:
            return {
                row[0]: AccountState(row[0], row[1], row[2], row[3], row[4], row[5], row[6])
                for row in conn.execute(query)
            }

    def save_account_states(
        self,
        run_id: str,
        states: Iterable[AccountState],
        transitions: Iterable[TierTransition],
    ) -> None:
        """Upsert states, append score history and transitions, in one transaction.

        A key given twice keeps its last state. Accounts not given keep their stored state.
        """
        saved_at = _now()
        latest: dict[str, AccountState] = {}
        for state in states:
            latest[state.key] = state
        state_rows = [
            {
                "account_key": s.key,
                "score": s.score,
                "tier": s.tier,
                "tier_since": s.tier_since,
                "qualified_since": s.qualified_since,
                "scored_at": s.scored_at,
                "score_change": s.score_change,
                "run_id": run_id,
            }
            for s in latest.values()
        ]
        history_rows = [
            {
                "account_key": s.key,
                "run_id": run_id,
                "scored_at": s.scored_at or saved_at,
                "score": s.score,
                "tier": s.tier,
            }
            for s in latest.values()
        ]
        transition_rows = [
            {
                "account_key": t.key,
                "run_id": run_id,
                "from_tier": t.from_tier,
                "to_tier": t.to_tier,
                "score": t.score,
                "at": t.at,
            }
            for t in transitions
        ]
        replaced = ("score", "tier", "tier_since", "qualified_since", "scored_at")
        with self._transaction("save account states", write=True) as conn:
            self._upsert_replace(
                conn,
                account_states,
                ("account_key",),
                (*replaced, "score_change", "run_id"),
                state_rows,
            )
            for chunk in _chunks(history_rows):
                conn.execute(insert(score_history), chunk)
            for chunk in _chunks(transition_rows):
                conn.execute(insert(tier_transitions), chunk)

    def score_history_for(
        self, account_key: str, limit: int = 20
    ) -> list[tuple[datetime, int, str]]:
        """An account's latest ``(scored_at, score, tier)`` entries, newest first."""
        query = (
            select(score_history.c.scored_at, score_history.c.score, score_history.c.tier)
            .where(score_history.c.account_key == account_key)
            .order_by(score_history.c.scored_at.desc(), score_history.c.id.desc())
            .limit(limit)
        )
        with self._transaction("read score history") as conn:
            return [(row[0], row[1], row[2]) for row in conn.execute(query)]

    def tier_entries(self, tier: str, keys: Iterable[str]) -> dict[str, int]:
        """How many times each of ``keys`` entered ``tier``, by the recorded transitions (an
        account never in it is left out)."""
        wanted = list(dict.fromkeys(keys))
        counts: dict[str, int] = {}
        with self._transaction("count tier entries") as conn:
            for start in range(0, len(wanted), 500):
                query = (
                    select(tier_transitions.c.account_key, func.count())
                    .where(
                        tier_transitions.c.to_tier == tier,
                        tier_transitions.c.account_key.in_(wanted[start : start + 500]),
                    )
                    .group_by(tier_transitions.c.account_key)
                )
                counts.update((key, int(n)) for key, n in conn.execute(query))
        return counts

    def prune_history(self, before: datetime) -> int:
        """Delete score history entries scored before ``before``; return how many went."""
        with self._transaction("prune score history", write=True) as conn:
            result = conn.execute(delete(score_history).where(score_history.c.scored_at < before))
        return int(result.rowcount)

    def transitions_since(self, at: datetime) -> list[TierTransition]:
        """Tier transitions at or after ``at``, oldest first."""
        columns = tier_transitions.c
        query = (
            select(
                columns.account_key, columns.from_tier, columns.to_tier, columns.score, columns.at
            )
            .where(columns.at >= at)
            .order_by(columns.at, columns.id)
        )
        with self._transaction("read tier transitions") as conn:
            return [TierTransition(r[0], r[1], r[2], r[3], r[4]) for r in conn.execute(query)]

    def transitions_of_run(self, run_id: str) -> list[TierTransition]:
        """The tier transitions run ``run_id`` recorded, oldest first."""
        columns = tier_transitions.c
        query = (
            select(
                columns.account_key, columns.from_tier, columns.to_tier, columns.score, columns.at
            )
            .where(columns.run_id == run_id)
            .order_by(columns.at, columns.id)
        )
        with self._transaction("read tier transitions") as conn:
            return [TierTransition(r[0], r[1], r[2], r[3], r[4]) for r in conn.execute(query)]

    # --- rejections -------------------------------------------------------------------------

    def record_rejections(
        self, run_id: str, destination: str, rejections: Iterable[RecordRejection], at: datetime
    ) -> None:
        """Keep rejections so they are retried and reported.

        A record still open counts one more attempt and keeps its ``first_seen_at``; a record
        rejected again after it was resolved starts over at one attempt.
        """
        latest: dict[str, RecordRejection] = {}
        for rejection in rejections:
            latest[rejection.record_id] = rejection
        if not latest:
            return
        rows = [
            {
                "destination": destination,
                "record_id": r.record_id,
                "code": r.code,
                "message": redact(r.message, self._secrets),
                "fields": list(r.fields),
                "first_seen_at": at,
                "last_seen_at": at,
                "attempts": 1,
                "run_id": run_id,
                "resolved_at": None,
            }
            for r in latest.values()
        ]
        with self._transaction("record rejections", write=True) as conn:
            if self._native_upsert:
                self._upsert_rejections_native(conn, rows)
            else:
                self._upsert_rejections_generic(conn, rows)

    def resolve_rejections(
        self, destination: str, record_ids: Iterable[str], at: datetime | None = None
    ) -> None:
        """Mark open rejections of records that have now been written as resolved at ``at``."""
        wanted = set(record_ids)
        if not wanted:
            return
        # A run writes up to every record; only a few of them have an open rejection. Read those
        # few rather than send one UPDATE per written record.
        open_ids = select(rejections.c.record_id).where(
            rejections.c.destination == destination, rejections.c.resolved_at.is_(None)
        )
        with self._transaction("read open rejections") as conn:
            rows = [{"b_id": rid} for (rid,) in conn.execute(open_ids) if rid in wanted]
        if not rows:
            return
        statement = (
            update(rejections)
            .where(
                rejections.c.destination == destination,
                rejections.c.record_id == bindparam("b_id"),
                rejections.c.resolved_at.is_(None),
            )
            .values(resolved_at=at or _now())
        )
        with self._transaction("resolve rejections", write=True) as conn:
            for chunk in _chunks(rows):
                conn.execute(statement, chunk)

    def open_rejections(self, destination: str | None = None) -> list[StoredRejection]:
        """Rejections not yet resolved, by destination and record id."""
        query = select(rejections).where(rejections.c.resolved_at.is_(None))
        if destination is not None:
            query = query.where(rejections.c.destination == destination)
        query = query.order_by(rejections.c.destination, rejections.c.record_id)
        with self._transaction("read rejections") as conn:
            return [
                StoredRejection(
                    destination=row["destination"],
                    record_id=row["record_id"],
                    code=row["code"],
                    message=row["message"],
                    fields=tuple(row["fields"] or ()),
                    first_seen_at=row["first_seen_at"],
                    last_seen_at=row["last_seen_at"],
                    attempts=row["attempts"],
                    run_id=row["run_id"],
                )
                for row in conn.execute(query).mappings()
            ]

    # --- locks ------------------------------------------------------------------------------

    def acquire_lock(
        self, name: str, owner: str, lease_seconds: float, now: datetime | None = None
    ) -> bool:
        """Take the lock ``name`` for ``lease_seconds``; False while another owner holds it.

        One atomic statement inserts the lock, or takes it over when its lease has expired (or
        when ``owner`` already holds it, which extends the lease): of several processes racing,
        exactly one wins. Owners must therefore be unique per process (host, pid and a random id).
        """
        now = _as_utc(now or _now())
        row = {
            "name": name,
            "owner": owner,
            "acquired_at": now,
            "expires_at": now + timedelta(seconds=lease_seconds),
        }
        with self._transaction("acquire lock", write=True) as conn:
            if self._native_upsert:
                statement = dialect_insert(self._dialect)(locks).values(row)
                excluded = statement.excluded
                statement = statement.on_conflict_do_update(
                    index_elements=[locks.c.name],
                    set_={
                        "owner": excluded.owner,
                        "acquired_at": excluded.acquired_at,
                        "expires_at": excluded.expires_at,
                    },
                    where=or_(locks.c.expires_at <= excluded.acquired_at, locks.c.owner == owner),
                )
                # Drivers report an upsert's row count only when asked to keep it.
                statement = statement.execution_options(preserve_rowcount=True)
                return bool(conn.execute(statement).rowcount == 1)
            return self._acquire_lock_generic(conn, row)

    def renew_lock(
        self, name: str, owner: str, lease_seconds: float, now: datetime | None = None
    ) -> bool:
        """Extend the lease of a lock ``owner`` still holds; False when it has lost the lock."""
        now = _as_utc(now or _now())
        with self._transaction("renew lock", write=True) as conn:
            result = conn.execute(
                update(locks)
                .where(locks.c.name == name, locks.c.owner == owner)
                .values(expires_at=now + timedelta(seconds=lease_seconds))
            )
        return bool(result.rowcount == 1)

    def release_lock(self, name: str, owner: str) -> bool:
        """Release the lock if ``owner`` holds it; False (and nothing done) otherwise."""
        with self._transaction("release lock", write=True) as conn:
            result = conn.execute(delete(locks).where(locks.c.name == name, locks.c.owner == owner))
        return bool(result.rowcount == 1)

    def lock_holder(self, name: str, now: datetime | None = None) -> tuple[str, datetime] | None:
        """``(owner, expires_at)`` of the live lease on ``name``; None when free or expired."""
        now = _as_utc(now or _now())
        query = select(locks.c.owner, locks.c.expires_at).where(
            locks.c.name == name, locks.c.expires_at > now
        )
        with self._transaction("read lock") as conn:
            row = conn.execute(query).first()
        return (row[0], row[1]) if row is not None else None

    # --- the ownership ledger --------------------------------------------------------------------

    def load_owned(self, crm: str) -> dict[str, OwnedRecord]:
        """Every record pls-sync owns fields on in the CRM ``crm``, by record id."""
        query = select(
            crm_ownership.c.record_id, crm_ownership.c.account_key, crm_ownership.c.data
        ).where(crm_ownership.c.crm == crm)
        # Rows repeat the same field names and most values (tiers, channels): one object each.
        shared: dict[str, str] = {}
        owned: dict[str, OwnedRecord] = {}
        with self._transaction("load the ownership ledger") as conn:
            result = conn.execution_options(yield_per=_LEDGER_BATCH).execute(query)
            for rows in result.partitions():
                for (record_id, account_key, _), row in zip(
                    rows, parse_json_column(rows), strict=True
                ):
                    owned[record_id] = _owned_record(record_id, account_key, row, shared)
        return owned

    def save_owned(self, crm: str, rows: Iterable[OwnedRecord], forget: Iterable[str] = ()) -> None:
        """Store (replace) ledger rows and forget records, in one transaction."""
        upserts = [
            {
                "crm": crm,
                "record_id": row.record_id,
                "account_key": row.account_key,
                "data": json.dumps(
                    {
                        "fields": dict(row.fields),
                        "pending": dict(row.pending),
                        "modified": row.modified,
                        "written_at": row.written_at,
                        "in_flight": row.in_flight,
                    },
                    default=_json_default,
                    separators=(",", ":"),
                    sort_keys=True,
                ),
            }
            for row in rows
        ]
        gone = list(forget)
        if not upserts and not gone:
            return
        with self._transaction("save the ownership ledger", write=True) as conn:
            for chunk in _chunks([{"k": record_id} for record_id in gone], 500):
                conn.execute(
                    delete(crm_ownership).where(
                        crm_ownership.c.crm == crm,
                        crm_ownership.c.record_id.in_([row["k"] for row in chunk]),
                    )
                )
            self._upsert_replace(
                conn,
                crm_ownership,
                ("crm", "record_id"),
                ("account_key", "data"),
                upserts,
            )

    # --- the last run's lists -----------------------------------------------------------------

    def save_lists(
        self, run_id: str, at: datetime, lists: Mapping[str, list[dict[str, Any]]]
    ) -> None:
        """Keep ``lists`` (name -> rows) as the last run's lists, replacing every stored list.

        Only one run's lists are kept, so what ``load_lists`` returns always comes from a single
        run. Rows are JSON objects (datetimes become ISO text).
        """
        rows = [
            {
                "name": name,
                "run_id": run_id,
                "saved_at": at,
                "rows_json": json.dumps(items, default=_json_default, separators=(",", ":")),
            }
            for name, items in lists.items()
        ]
        with self._transaction("save lists", write=True) as conn:
            conn.execute(delete(run_lists))
            if rows:
                conn.execute(insert(run_lists), rows)

    def load_lists(self) -> tuple[str, datetime, dict[str, list[dict[str, Any]]]] | None:
        """``(run_id, saved_at, lists)`` as the last ``save_lists`` left them; None before any.

        A store created by an older pls-sync and not opened for writing since has no lists
        table yet: that reads as no lists.
        """
        query = select(
            run_lists.c.name, run_lists.c.run_id, run_lists.c.saved_at, run_lists.c.rows_json
        ).order_by(run_lists.c.name)
        with self._transaction("read lists") as conn:
            if not sa_inspect(conn).has_table(run_lists.name):
                return None
            found = list(conn.execute(query))
        if not found:
            return None
        lists = {name: json.loads(text) for name, _run_id, _at, text in found}
        return found[0][1], found[0][2], lists

    # --- heartbeats and key-value -------------------------------------------------------------

    def heartbeat(
        self, name: str, at: datetime | None = None, detail: Mapping[str, Any] | None = None
    ) -> None:
        """Record that ``name`` (a scheduler, a job) was alive at ``at``, with a small detail."""
        row = {
            "name": name,
            "at": at or _now(),
            "detail": _json_safe(dict(detail or {}), lenient=True),
        }
        with self._transaction("write heartbeat", write=True) as conn:
            self._upsert_replace(conn, heartbeats, ("name",), ("at", "detail"), [row])

    def last_heartbeat(self, name: str) -> tuple[datetime, dict[str, Any]] | None:
        """``(at, detail)`` of the last heartbeat of ``name``, if any."""
        query = select(heartbeats.c.at, heartbeats.c.detail).where(heartbeats.c.name == name)
        with self._transaction("read heartbeat") as conn:
            row = conn.execute(query).first()
        return (row[0], dict(row[1] or {})) if row is not None else None

    def get_value(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""
        query = select(kv.c.value).where(kv.c.key == key)
        with self._transaction("read value") as conn:
            row = conn.execute(query).first()
        return row[0] if row is not None else default

    def set_value(self, key: str, value: Any, at: datetime | None = None) -> None:
        """Store a small JSON value under ``key`` (datetimes become ISO text, sets lists)."""
        row = {"key": key, "value": _json_safe(value), "updated_at": at or _now()}
        with self._transaction("write value", write=True) as conn:
            self._upsert_replace(conn, kv, ("key",), ("value", "updated_at"), [row])

    def value_updated_at(self, key: str) -> datetime | None:
        """When ``key`` was last set, if ever."""
        query = select(kv.c.updated_at).where(kv.c.key == key)
        with self._transaction("read value") as conn:
            return conn.execute(query).scalar()

    # --- internals ----------------------------------------------------------------------------

    def _create_engine(self, url: URL) -> Engine:
        kwargs: dict[str, Any] = {}
        backend = url.get_backend_name()
        if backend == "sqlite":
            connect_args: dict[str, Any] = {
                "timeout": _SQLITE_TIMEOUT_SECONDS,
                "check_same_thread": False,
            }
            kwargs["connect_args"] = connect_args
            if _is_memory(url):
                kwargs["poolclass"] = StaticPool
        elif backend == "postgresql":
            kwargs["pool_pre_ping"] = True
            if url.get_driver_name() in ("psycopg", "psycopg2"):
                kwargs["connect_args"] = {"connect_timeout": 10}
        try:
            engine = create_engine(url, **kwargs)
        except (ImportError, sa_exc.SQLAlchemyError) as error:
            raise FatalError(
                f"state store {self._safe_url}: cannot build an engine: "
                f"{redact(str(error), self._secrets)}",
                code="state_config",
            ) from None
        if backend == "sqlite" and url.get_driver_name() in ("pysqlite", ""):
            _configure_sqlite(engine, wal=not _is_memory(url))
        return engine

    @contextmanager
    def _transaction(self, action: str, *, write: bool = False) -> Iterator[Connection]:
        """A connection in a transaction; SQLite writes take the write lock up front."""
        try:
            with self._engine.connect() as conn:
                if write:
                    conn.execution_options(pls_sync_begin="BEGIN IMMEDIATE")
                with conn.begin():
                    yield conn
        except sa_exc.SQLAlchemyError as error:
            raise self._fatal(action, error) from _chain(error)

    def _fatal(self, action: str, error: sa_exc.SQLAlchemyError) -> FatalError:
        detail = error.orig if isinstance(error, sa_exc.DBAPIError) else error
        text = " ".join(str(detail).split())
        code = "state_error"
        if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
            busy = "locked" in text or "busy" in text
            code = "state_busy" if busy else "state_unreachable"
        return FatalError(
            f"state store {self._safe_url}: {action} failed: {redact(text, self._secrets)}",
            code=code,
        )

    def _upsert_replace(
        self,
        conn: Connection,
        table: Table,
        keys: Sequence[str],
        replaced: Sequence[str],
        rows: Sequence[dict[str, Any]],
    ) -> None:
        """Insert rows, replacing the ``replaced`` columns of rows whose keys exist."""
        if not rows:
            return
        if self._native_upsert:
            statement = dialect_insert(self._dialect)(table)
            excluded = statement.excluded
            statement = statement.on_conflict_do_update(
                index_elements=[table.c[k] for k in keys],
                set_={name: excluded[name] for name in replaced},
            )
            for chunk in _chunks(rows):
                conn.execute(statement, chunk)
            return
        # Portable fallback: delete then insert in the caller's transaction.
        key_columns = [table.c[k] for k in keys]
        for chunk in _chunks(rows):
            conn.execute(
                delete(table).where(
                    and_(*(column == bindparam(f"k_{column.name}") for column in key_columns))
                ),
                [{f"k_{k}": row[k] for k in keys} for row in chunk],
            )
            conn.execute(insert(table), chunk)

    def _upsert_rejections_native(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        statement = dialect_insert(self._dialect)(rejections)
        excluded = statement.excluded
        still_open = rejections.c.resolved_at.is_(None)
        statement = statement.on_conflict_do_update(
            index_elements=[rejections.c.destination, rejections.c.record_id],
            set_={
                "code": excluded.code,
                "message": excluded.message,
                "fields": excluded.fields,
                "last_seen_at": excluded.last_seen_at,
                "run_id": excluded.run_id,
                "attempts": _when_open(still_open, rejections.c.attempts + 1, excluded.attempts),
                "first_seen_at": _when_open(
                    still_open, rejections.c.first_seen_at, excluded.first_seen_at
                ),
                "resolved_at": None,
            },
        )
        for chunk in _chunks(rows):
            conn.execute(statement, chunk)

    def _upsert_rejections_generic(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        destination = rows[0]["destination"]
        still_open = rejections.c.resolved_at.is_(None)
        statement = (
            update(rejections)
            .where(
                rejections.c.destination == destination,
                rejections.c.record_id == bindparam("b_record_id"),
            )
            .values(
                code=bindparam("code"),
                message=bindparam("message"),
                fields=bindparam("fields", type_=JSON),
                last_seen_at=bindparam("last_seen_at", type_=UtcDateTime()),
                run_id=bindparam("run_id"),
                attempts=_when_open(still_open, rejections.c.attempts + 1, 1),
                first_seen_at=_when_open(
                    still_open,
                    rejections.c.first_seen_at,
                    bindparam("b_first_seen_at", type_=UtcDateTime()),
                ),
                resolved_at=None,
            )
        )
        for chunk in _chunks(rows):
            ids = [row["record_id"] for row in chunk]
            existing = set(
                conn.execute(
                    select(rejections.c.record_id).where(
                        tuple_(rejections.c.destination, rejections.c.record_id).in_(
                            [(destination, record_id) for record_id in ids]
                        )
                    )
                ).scalars()
            )
            found = [row for row in chunk if row["record_id"] in existing]
            if found:
                conn.execute(
                    statement,
                    [
                        {
                            "b_record_id": row["record_id"],
                            "b_first_seen_at": row["first_seen_at"],
                            **{
                                k: row[k]
                                for k in ("code", "message", "fields", "last_seen_at", "run_id")
                            },
                        }
                        for row in found
                    ],
                )
            fresh = [row for row in chunk if row["record_id"] not in existing]
            if fresh:
                conn.execute(insert(rejections), fresh)

    def _acquire_lock_generic(self, conn: Connection, row: dict[str, Any]) -> bool:
        try:
            with conn.begin_nested():
                conn.execute(insert(locks).values(row))
            return True
        except sa_exc.IntegrityError:
            pass
        result = conn.execute(
            update(locks)
            .where(
                locks.c.name == row["name"],
                or_(locks.c.expires_at <= row["acquired_at"], locks.c.owner == row["owner"]),
            )
            .values(
                owner=row["owner"], acquired_at=row["acquired_at"], expires_at=row["expires_at"]
            )
        )
        return bool(result.rowcount == 1)


def _configure_sqlite(engine: Engine, *, wal: bool) -> None:
    """Let SQLAlchemy emit BEGIN itself, so writes can take SQLite's write lock up front.

    The sqlite3 driver's own transaction handling skips BEGIN before SELECT; a write that starts
    deferred can then fail at once with "database is locked" instead of waiting its timeout.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if wal:
                cursor.execute("PRAGMA journal_mode=WAL")
                # Safe with WAL: a power cut may lose the last commit, never corrupt the file.
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("pls_sync_begin", "BEGIN"))


def dialect_insert(dialect: str) -> Callable[[Table], Any]:
    """The INSERT with ``ON CONFLICT`` of a dialect in ``NATIVE_UPSERT_DIALECTS``."""
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _when_open(still_open: ColumnElement[bool], then: Any, otherwise: Any) -> Any:
    return case((still_open, then), else_=otherwise)


def _run_record(row: RowMapping) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        command=row["command"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        status=row["status"],
        summary=dict(row["summary"] or {}),
        error=row["error"],
    )


def parse_json_column(rows: Sequence[Any]) -> list[Any]:
    """The JSON texts in the last column of ``rows``, parsed in one call: at 100k rows a load
    would otherwise spend more in ``json.loads``' per-call work than in parsing. A json column
    on PostgreSQL may hand back parsed values already."""
    texts = [row[-1] for row in rows]
    if all(isinstance(text, str) for text in texts):
        parsed: list[Any] = json.loads("[" + ",".join(texts) + "]")
        return parsed
    return [json.loads(text) if isinstance(text, (str, bytes)) else text for text in texts]


def _owned_record(
    record_id: str, account_key: str, row: Mapping[str, Any], shared: dict[str, str]
) -> OwnedRecord:
    """A parsed ledger row; field names and text values come from ``shared``."""

    def compact(values: Any) -> dict[str, Any]:
        return {
            shared.setdefault(key, key): shared.setdefault(value, value)
            if isinstance(value, str)
            else value
            for key, value in (values or {}).items()
        }

    def moment(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    return OwnedRecord(
        record_id,
        account_key,
        compact(row.get("fields")),
        compact(row.get("pending")),
        moment(row.get("modified")),
        moment(row.get("written_at")),
        bool(row.get("in_flight")),
    )


def _chunks(rows: Sequence[dict[str, Any]], size: int = _BATCH) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield list(rows[start : start + size])


def _is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in database


def _chain(error: sa_exc.SQLAlchemyError) -> BaseException | None:
    # Connection failures may echo connection parameters: do not chain them into tracebacks.
    if isinstance(error, sa_exc.OperationalError | sa_exc.InterfaceError):
        return None
    return error


def _now() -> datetime:
    return datetime.now(UTC)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json_safe(value: Any, *, lenient: bool = False) -> Any:
    """``value`` as plain JSON data, whatever engine (and JSON serializer) the store was given.

    Lenient mode turns anything else into its text: a run summary is worth keeping even when
    one of its values is odd.
    """

    def default(item: Any) -> Any:
        try:
            return _json_default(item)
        except TypeError:
            if lenient:
                return str(item)
            raise

    return json.loads(json.dumps(value, default=default))
