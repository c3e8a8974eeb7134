"""The HubSpot MQL cache: the portal's MQL contacts kept in the state store between runs.

A full MQL read pages through every MQL contact by search, and HubSpot's search allows five
requests a second: at 5,000 MQLs that is 26 pages and seconds of waiting on every run. With the
cache, a steady-state run reads only what changed since the last read
(``connectors.hubspot_leads.read_hubspot_mql_changes``: two search pages and the archive list
when little changed) and answers the rest from the cache, the same set a full read would give.

It mirrors ``connectors.crm_snapshot``: the cache is of one portal (``crm_identity``) and one
MQL definition (its fingerprint); the watermark is taken before the read starts and reread with
a skew, as HubSpot's search lags writes; a full read comes on demand, when the last one is
older than ``max_age``, for another portal or definition, and for a custom lifecycle stage (no
"Became a ... Date" to find the contacts that left it).

What an incremental read cannot see, until the next full read (at most ``max_age`` later): a
contact that qualified only by the property and whose property was cleared to no value; a
contact whose "Became a ... Date" HubSpot cleared; a contact deleted for good (a GDPR delete
leaves no archived record).

Order of commits: the cache and its meta (watermark, identity, fingerprint; kept in the state
store's key-value map) are saved only once the whole read succeeded, so a read that fails
midway leaves both as they were and the next run reads again from the old watermark. The rows
are committed first, then the meta: a crash between the two leaves newer rows under the older
watermark, and the next read applies those changes again, which is harmless (every change read
is a contact's state at that moment, later ones win).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, Connection, MetaData, String, Table, Text, delete, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from connectors.hubspot import ARCHIVE_RETENTION, HubSpotDestination
from connectors.hubspot_leads import (
    CONTACT_SOURCE,
    MqlChanges,
    MqlDefinition,
    ReadCounts,
    read_hubspot_mql_changes,
    read_hubspot_mqls,
)
from connectors.state import NATIVE_UPSERT_DIALECTS, dialect_insert
from pls_sync.errors import FatalError, redact

_metadata = MetaData()
mql_cache = Table(
    "mql_cache",
    _metadata,
    Column("cache", String(32), primary_key=True),
    Column("contact_id", String(64), primary_key=True),
    Column("email", Text, nullable=False),
)
INSERT_BATCH = 10_000
DELETE_BATCH = 500

Mql = tuple[str, str, str]


@dataclass(frozen=True)
class RefreshPolicy:
    """When the MQLs are read in full: on demand (``force_full``), when the last full read is
    older than ``max_age``; ``skew`` is how far before the watermark an incremental read
    starts (HubSpot's search shows a change only moments after it)."""

    max_age: timedelta = timedelta(hours=24)
    skew: timedelta = timedelta(minutes=5)
    force_full: bool = False


class MqlCache:
    """One CRM's MQL contacts (id -> email) in the state store, and the meta of their read.

    ``engine`` is the state store's; ``kv`` the state store itself (``get_value`` and
    ``set_value``), which keeps the meta under ``mql_cache:<name>``.
    """

    def __init__(self, engine: Engine, kv: Any, name: str = "hubspot"):
        self.engine = engine
        self.kv = kv
        self.name = name
        # Dialects without INSERT ... ON CONFLICT delete the rows an update replaces first.
        self.native_upsert = engine.dialect.name in NATIVE_UPSERT_DIALECTS
        with self._guarded("create the MQL cache table"):
            _metadata.create_all(engine, checkfirst=True)

    @property
    def _key(self) -> str:
        return f"mql_cache:{self.name}"

    def meta(self) -> dict[str, Any]:
        """The meta saved with the cache (empty when there is none)."""
        value = self.kv.get_value(self._key)
        return dict(value) if isinstance(value, Mapping) else {}

    def load(self) -> dict[str, str]:
        """Every cached MQL: email by contact id."""
        query = select(mql_cache.c.contact_id, mql_cache.c.email).where(
            mql_cache.c.cache == self.name
        )
        with self._guarded("read the MQL cache"), self.engine.connect() as conn:
            return {str(contact_id): str(email) for contact_id, email in conn.execute(query)}

    def replace(self, mqls: Mapping[str, str], meta: Mapping[str, Any]) -> None:
        """Make the cache exactly ``mqls``, then save ``meta``."""
        with self._writing("replace the MQL cache") as conn:
            conn.execute(delete(mql_cache).where(mql_cache.c.cache == self.name))
            self._insert(conn, mqls)
        self.kv.set_value(self._key, dict(meta))

    def update(
        self, upserts: Mapping[str, str], drops: Sequence[str], meta: Mapping[str, Any]
    ) -> None:
        """Insert or replace ``upserts`` and delete ``drops`` in one transaction, then save
        ``meta``."""
        with self._writing("update the MQL cache") as conn:
            self._delete(conn, [*drops, *self._replaced(upserts)])
            self._insert(conn, upserts, upsert=True)
        self.kv.set_value(self._key, dict(meta))

    def _replaced(self, upserts: Mapping[str, str]) -> list[str]:
        """Ids to delete before inserting ``upserts``: all of them without a native upsert."""
        return [] if self.native_upsert else list(upserts)

    def _delete(self, conn: Connection, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), DELETE_BATCH):
            conn.execute(
                delete(mql_cache).where(
                    mql_cache.c.cache == self.name,
                    mql_cache.c.contact_id.in_(ids[start : start + DELETE_BATCH]),
                )
            )

    def _insert(self, conn: Connection, mqls: Mapping[str, str], *, upsert: bool = False) -> None:
        statement: Any = mql_cache.insert()
        if upsert and self.native_upsert:
            statement = dialect_insert(self.engine.dialect.name)(mql_cache)
            statement = statement.on_conflict_do_update(
                index_elements=[mql_cache.c.cache, mql_cache.c.contact_id],
                set_={"email": statement.excluded.email},
            )
        rows = [
            {"cache": self.name, "contact_id": contact_id, "email": email}
            for contact_id, email in mqls.items()
        ]
        for start in range(0, len(rows), INSERT_BATCH):
            conn.execute(statement, rows[start : start + INSERT_BATCH])

    @contextmanager
    def _writing(self, action: str) -> Iterator[Connection]:
        """A connection in a transaction; SQLite takes its write lock up front."""
        with self._guarded(action), self.engine.connect() as conn:
            conn.execution_options(pls_sync_begin="BEGIN IMMEDIATE")
            with conn.begin():
                yield conn

    @contextmanager
    def _guarded(self, action: str) -> Iterator[None]:
        """Database failures as the project's ``FatalError``, password removed."""
        try:
            yield
        except sa_exc.SQLAlchemyError as error:
            detail = error.orig if isinstance(error, sa_exc.DBAPIError) else error
            text = " ".join(str(detail).split())
            raise FatalError(
                f"state store: {action} failed: {redact(text)}", code="state_error"
            ) from None


def full_read_reason(
    meta: Mapping[str, Any],
    *,
    identity: str,
    definition: MqlDefinition,
    now: datetime,
    policy: RefreshPolicy,
) -> str | None:
    """Why the MQLs must be read in full now, or None when an incremental read will do."""
    if policy.force_full:
        return "requested"
    full_at, watermark = _moment(meta.get("full_at")), _moment(meta.get("watermark"))
    if full_at is None or watermark is None:
        return "no cache"
    known = meta.get("identity")
    if known != identity:
        return f"another portal: the cache is of {known}, this is {identity}"
    if meta.get("fingerprint") != definition.fingerprint():
        return "MQL definition changed"
    if now - full_at > policy.max_age:
        return "cache older than the maximum age"
    if definition.stage_entered_property is None:
        return (
            f"lifecycle stage {definition.lifecycle_stage!r} has no 'Became a ... Date' "
            "property to find the contacts that left it"
        )
    if watermark - policy.skew < now - ARCHIVE_RETENTION:
        return "last read older than the 90 days HubSpot keeps deleted contacts"
    return None


def changes_to_apply(
    cached: Mapping[str, str], changes: MqlChanges
) -> tuple[dict[str, str], list[str]]:
    """``(upserts, drops)`` that bring ``cached`` to what HubSpot says now.

    A qualifying contact with an email is upserted when new or its email changed, and dropped
    without one; a departed contact is dropped unless the later qualifying search read it; a
    gone id is dropped whatever the searches (which lag) still show. Only cached ids are
    dropped.
    """
    upserts: dict[str, str] = {}
    drops = set(changes.gone) | (changes.departed - changes.qualifying.keys())
    for contact_id, email in changes.qualifying.items():
        if contact_id in changes.gone:
            continue
        if email is None:
            drops.add(contact_id)
        elif cached.get(contact_id) != email:
            upserts[contact_id] = email
    return upserts, sorted((d for d in drops if d in cached), key=_id_order)


@dataclass
class _Read:
    """One read's MQLs, its report, what it changes in the meta and how it saves the cache."""

    mqls: dict[str, str]
    report: dict[str, Any]
    meta: dict[str, Any]
    save: Callable[[Mapping[str, Any]], None]


def read_mqls_through_cache(
    dest: HubSpotDestination,
    definition: MqlDefinition,
    cache: MqlCache,
    *,
    policy: RefreshPolicy,
    now: datetime,
) -> tuple[list[Mql], dict[str, Any]]:
    """Every MQL as ``("hubspot_contact", id, email)`` in id order, and how it was read.

    ``now`` is taken before the read and becomes the watermark. The report has ``mode``
    (``full`` with its ``reason``, or ``incremental`` with ``since``, ``changed`` and
    ``dropped`` cache rows), ``pages`` (search pages), ``list_pages`` (archive pages),
    ``mqls`` and ``crm``. Nothing is saved unless the whole read succeeded (see the module
    docstring).
    """
    meta = cache.meta()
    identity = dest.crm_identity()
    reason = full_read_reason(
        meta, identity=identity, definition=definition, now=now, policy=policy
    )
    if reason is None:
        read = _read_incremental(dest, definition, cache, meta, policy, now)
    else:
        read = _read_full(dest, definition, cache, now)
        read.report = {"mode": "full", "reason": reason, **read.report}
    # Every request of the read has succeeded: only now are the rows, then the meta, saved.
    read.save({**meta, **read.meta, "identity": identity})
    rows = sorted(read.mqls.items(), key=lambda item: _id_order(item[0]))
    report = {**read.report, "mqls": len(rows), "crm": identity}
    return [(CONTACT_SOURCE, contact_id, email) for contact_id, email in rows], report


def _read_full(
    dest: HubSpotDestination, definition: MqlDefinition, cache: MqlCache, now: datetime
) -> _Read:
    counts = ReadCounts()
    found = read_hubspot_mqls(
        dest,
        lifecycle_stage=definition.lifecycle_stage,
        mql_property=definition.mql_property,
        mql_value=definition.mql_value,
        counts=counts,
    )
    mqls = {contact_id: email for _, contact_id, email in found}
    stamp = now.isoformat()

    def save(meta: Mapping[str, Any]) -> None:
        cache.replace(mqls, meta)

    return _Read(
        mqls,
        {"pages": counts.searches, "list_pages": counts.lists},
        {"fingerprint": definition.fingerprint(), "full_at": stamp, "watermark": stamp},
        save,
    )


def _read_incremental(
    dest: HubSpotDestination,
    definition: MqlDefinition,
    cache: MqlCache,
    meta: Mapping[str, Any],
    policy: RefreshPolicy,
    now: datetime,
) -> _Read:
    since = datetime.fromisoformat(str(meta["watermark"])) - policy.skew
    changes = read_hubspot_mql_changes(dest, definition, since)
    mqls = cache.load()
    upserts, drops = changes_to_apply(mqls, changes)
    for contact_id in drops:
        del mqls[contact_id]
    mqls.update(upserts)

    def save(meta: Mapping[str, Any]) -> None:
        cache.update(upserts, drops, meta)

    report = {
        "mode": "incremental",
        "since": since.isoformat(),
        "pages": changes.counts.searches,
        "list_pages": changes.counts.lists,
        "changed": len(upserts),
        "dropped": len(drops),
    }
    return _Read(mqls, report, {"watermark": now.isoformat()}, save)


def _moment(value: Any) -> datetime | None:
    """An ISO time from the meta, or None when absent or unreadable."""
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _id_order(contact_id: str) -> tuple[int, str]:
    """Numeric order of HubSpot's numeric ids (shorter first), as search sorts them."""
    return len(contact_id), contact_id
