"""Incremental CRM reads: a snapshot of the CRM accounts kept in the state store.

A full read pages through every account; at 100k accounts that is 50 Salesforce query pages or
1,000 HubSpot list pages on every run. ``SnapshottingDestination`` wraps a destination so that a
steady-state run reads only what changed since the last run (Salesforce SystemModstamp,
HubSpot ``hs_lastmodifieddate``) and takes the rest from the snapshot. A full refresh happens on
demand, when the snapshot is older than ``max_age``, or when the mapping changed.

The snapshot is kept honest by four rules: it is of one CRM identity (org or portal), and
pointed at another the read is full; the watermark is taken before the read starts and reread
with a skew, so a record changed during a read is read again next time; records we wrote are
updated in the snapshot with what we wrote; records the CRM says are gone (deleted or merged
away since the watermark, or refused as gone by a write) are dropped.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import Column, MetaData, String, Table, Text, delete, func, select
from sqlalchemy.engine import Engine

from connectors.state import NATIVE_UPSERT_DIALECTS, dialect_insert, parse_json_column
from pls_sync.mapping import DestinationMapping
from pls_sync.models import CrmRecord, FieldSpec, RecordChange, WriteResult
from pls_sync.ports import CrmDestination

log = structlog.get_logger("pls_sync.snapshot")

_metadata = MetaData()
crm_snapshot = Table(
    "crm_snapshot",
    _metadata,
    Column("destination", String(32), primary_key=True),
    Column("record_id", String(64), primary_key=True),
    # JSON text encoded once per row by json.dumps: SQLAlchemy's JSON type costs a processor
    # call per value, and a table created with it (declared JSON) reads and writes the same text.
    Column("data", Text, nullable=False),
)
INSERT_BATCH = 10_000
LOAD_BATCH = 2_000
DELETE_BATCH = 500

# Kept in the meta after a read by export, passed to later change reads that accept them.
EXPORT_SPEED_KEYS = ("export_rows_per_second", "export_overhead_seconds")
# Change reads that read every live record whole (the snapshot is then replaced).
WHOLE_READ_PATHS = ("list", "export")

GONE_CODES = frozenset(
    {"ENTITY_IS_DELETED", "NOT_FOUND", "OBJECT_NOT_FOUND", "INVALID_CROSS_REFERENCE_KEY"}
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        stamp = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return stamp.isoformat()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _encode_other(value: Any) -> Any:
    # Only what json cannot encode itself comes here: datetimes, dates, decimals, sets.
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, Decimal):
        return float(value)
    converted = _jsonable(value)
    return str(value) if converted is value else converted


_ENCODER = json.JSONEncoder(separators=(",", ":"), default=_encode_other)


def encode_record(record: CrmRecord) -> str:
    """A record as the JSON text of the snapshot's ``data`` column (the id is its own column)."""
    modified = record.last_modified
    return _ENCODER.encode(
        {
            "domain_values": record.domain_values,
            "fields": record.fields,
            "name": record.name,
            "last_modified": _jsonable(modified) if modified else None,
            "parent_id": record.parent_id,
            "owner_id": record.owner_id,
        }
    )


def decode_record(record_id: str, data: str | Mapping[str, Any]) -> CrmRecord:
    """The record stored as ``data``; a PostgreSQL json column hands back a dict already."""
    row: Mapping[str, Any] = json.loads(data) if isinstance(data, (str, bytes)) else data
    return _record(record_id, row)


def decode_rows(rows: Sequence[tuple[str, Any]]) -> list[CrmRecord]:
    """Records from ``(record_id, data)`` rows, their JSON texts parsed in one call."""
    parsed = parse_json_column(rows)
    return [_record(rid, row) for (rid, _), row in zip(rows, parsed, strict=True)]


def _record(record_id: str, row: Mapping[str, Any]) -> CrmRecord:
    modified = row.get("last_modified")
    return CrmRecord(
        id=record_id,
        domain_values=tuple(row.get("domain_values") or ()),
        fields=dict(row.get("fields") or {}),
        name=row.get("name"),
        last_modified=datetime.fromisoformat(modified) if modified else None,
        parent_id=row.get("parent_id"),
        owner_id=row.get("owner_id"),
    )


def _older(record: CrmRecord, copy: CrmRecord | None) -> bool:
    """Whether ``record`` is stamped before the snapshot's ``copy`` of it (both stamped)."""
    return (
        copy is not None
        and copy.last_modified is not None
        and record.last_modified is not None
        and record.last_modified < copy.last_modified
    )


def _later(first: datetime | None, second: datetime | None) -> datetime | None:
    """The later of two optional times."""
    if first is None or second is None:
        return first or second
    return max(first, second)


def mapping_fingerprint(mapping: DestinationMapping) -> str:
    """What the snapshot holds depends on the object, the domain fields and the fields read."""
    basis: list[Any] = [mapping.object, list(mapping.match.domain_fields), sorted(mapping.targets)]
    if mapping.firmographics:  # left out when empty: existing snapshots stay valid
        basis.append(sorted(mapping.firmographics.items()))
    return hashlib.sha256(json.dumps(basis).encode()).hexdigest()[:16]


class SnapshottingDestination:
    """A ``CrmDestination`` that reads incrementally through a snapshot in the state store."""

    def __init__(
        self,
        inner: CrmDestination,
        engine: Engine,
        kv: Any,
        *,
        max_age: timedelta = timedelta(hours=24),
        skew: timedelta = timedelta(minutes=5),
        force_full: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.inner = inner
        self.name = inner.name
        self.engine = engine
        self.kv = kv  # the state store: get_value / set_value
        self.max_age = max_age
        self.skew = skew
        self.force_full = force_full
        self.clock = clock
        self.last_read: dict[str, Any] = {}
        # The records the last read returned, by id, while the run still holds them: what a
        # write updates without reloading. Weak, so a run that keeps only the records it
        # changes does not hold the whole CRM here; the others reload from the snapshot.
        self._read: weakref.WeakValueDictionary[str, CrmRecord] = weakref.WeakValueDictionary()
        _metadata.create_all(engine, checkfirst=True)

    def __getattr__(self, item: str) -> Any:
        # Everything else (daily_api_remaining, write budgets...) is the wrapped client's.
        return getattr(self.inner, item)

    def _key(self) -> str:
        return f"crm_snapshot:{self.name}"

    def describe(self, object_name: str) -> dict[str, FieldSpec]:
        """The wrapped destination's schema."""
        return self.inner.describe(object_name)

    def api_calls(self) -> dict[str, int]:
        """The wrapped destination's call counts."""
        return self.inner.api_calls()

    def crm_identity(self) -> str:
        """The wrapped CRM's identity (org or portal); its name when it cannot tell."""
        identify = getattr(self.inner, "crm_identity", None)
        return str(identify()) if callable(identify) else self.name

    def read_records(self, mapping: DestinationMapping) -> Iterator[CrmRecord]:
        """Every record: changed ones from the CRM, the rest from the snapshot.

        The snapshot belongs to one CRM identity: pointed at another org or portal, the read
        is full. An incremental read also asks which records were deleted or merged away
        since the watermark and drops them; a CRM that cannot say for the window gets a
        full read instead.
        """
        started = self.clock()
        meta = self.kv.get_value(self._key()) or {}
        identity = self.crm_identity()
        reason = self._full_refresh_reason(meta, mapping, started, identity)
        deleted: list[str] | None = None
        if reason is None:
            since = datetime.fromisoformat(meta["watermark"]) - self.skew
            deleted = self._deleted_since(mapping, since, started)
            if deleted is None:
                reason = "the CRM cannot list the records deleted since the last read"
        if reason is None:
            assert deleted is not None
            changed, whole = self._read_changed(mapping, since, meta)
            if self._reads_lag:
                # The changes come from a search that lags the CRM's writes, the deletions
                # from a list that does not: a record in both was deleted after the change
                # the search still shows (a restored one leaves the deletion list).
                gone = set(deleted)
                current = [r for r in changed if r.id not in gone]
                # A stale copy must not replace what is known: a change read skips it, and a
                # whole read (which replaces the snapshot) keeps the known copy in its place.
                changed = self._with_known(current) if whole else self._newer_than_known(current)
            # A record read by the (non-deleted) query exists now, whatever the deletion
            # list says: it was restored, or deleted before a change we read.
            alive = {record.id for record in changed}
            dropped = [record_id for record_id in dict.fromkeys(deleted) if record_id not in alive]
            if whole:  # every live record, read whole: the snapshot is this list
                self._replace(changed)
            else:
                self._upsert(changed)
                self._delete(dropped)
            records = self._load()
            self.last_read = {
                "mode": "incremental",
                "path": whole or "changes",
                "changed": len(changed),
                "deleted": len(dropped),
                "since": since.isoformat(),
            }
            meta["watermark"] = started.isoformat()
            measured = self._export_speed() if whole == "export" else {}
            if measured:
                meta = {k: v for k, v in meta.items() if k not in EXPORT_SPEED_KEYS} | measured
        else:
            records = list(self._read_all(mapping, meta, identity))
            self._replace(records)
            self.last_read = {"mode": "full", "reason": reason, "records": len(records)}
            kept = {k: meta[k] for k in EXPORT_SPEED_KEYS if k in meta}
            meta = {
                "fingerprint": mapping_fingerprint(mapping),
                "full_at": started.isoformat(),
                "watermark": started.isoformat(),
                # The last speed measured stays while the portal does; another CRM's does not.
                **(self._export_speed() or (kept if meta.get("identity") == identity else {})),
            }
        meta["identity"] = identity
        self.last_read["crm"] = identity
        self.kv.set_value(self._key(), meta)
        self._read = weakref.WeakValueDictionary((record.id, record) for record in records)
        log.info("crm_snapshot_read", destination=self.name, **self.last_read)
        return iter(records)

    def _read_all(
        self, mapping: DestinationMapping, meta: Mapping[str, Any], identity: str
    ) -> Iterator[CrmRecord]:
        """Every record, telling the CRM about how many there are when this snapshot knows
        (HubSpot chooses between its list and an export by that count)."""
        reader = self.inner.read_records
        if "known_records" in inspect.signature(reader).parameters and meta.get("identity") in (
            None,
            identity,
        ):
            known = self._count()
            if known:
                return reader(mapping, known_records=known)  # type: ignore[call-arg]
        return reader(mapping)

    def _read_changed(
        self, mapping: DestinationMapping, since: datetime, meta: Mapping[str, Any]
    ) -> tuple[list[CrmRecord], str | None]:
        """The records changed since ``since``, and how the CRM read every live record instead
        (``"list"`` or ``"export"``; None when it read the changes): HubSpot does when that
        costs less than searching the changes, told how many records the snapshot holds and
        how fast its last export went."""
        reader = self.inner.read_records_modified_since  # type: ignore[attr-defined]
        accepted = inspect.signature(reader).parameters
        if "known_records" not in accepted:
            return list(reader(mapping, since)), None
        options: dict[str, Any] = {"known_records": self._count()}
        options.update((k, meta[k]) for k in EXPORT_SPEED_KEYS if k in accepted and k in meta)
        changed = list(reader(mapping, since, **options))
        choice = getattr(self.inner, "last_read_path", None)
        path = getattr(choice, "path", None)
        return changed, path if path in WHOLE_READ_PATHS else None

    def _export_speed(self) -> dict[str, float]:
        """The speed the CRM's last read by export measured (empty when it did not export)."""
        speed = getattr(self.inner, "last_export_speed", None)
        rate = getattr(speed, "rows_per_second", None)
        if not isinstance(rate, (int, float)) or not rate > 0:
            return {}
        measured = {"export_rows_per_second": float(rate)}
        overhead = getattr(speed, "overhead_seconds", None)
        if isinstance(overhead, (int, float)):
            measured["export_overhead_seconds"] = float(overhead)
        return measured

    @property
    def _reads_lag(self) -> bool:
        """Whether the CRM's change reads lag its writes (HubSpot's search)."""
        return bool(getattr(self.inner, "change_reads_lag", False))

    def _newer_than_known(self, changed: list[CrmRecord]) -> list[CrmRecord]:
        """The read records not older than the snapshot's copy: a lagging search can still
        show a record as it was before a write this snapshot recorded (stamped with the CRM's
        time of that write), and that stale copy must not replace what is known."""
        known = self._known_copies(changed)
        return [record for record in changed if not _older(record, known.get(record.id))]

    def _with_known(self, records: list[CrmRecord]) -> list[CrmRecord]:
        """``records``, each older than the snapshot's copy replaced by that copy: an export
        (or a list) read whole can still show a record as it was before a write this
        snapshot recorded, and dropping it would take a live record out of the snapshot."""
        known = self._known_copies(records)
        kept = []
        for record in records:
            copy = known.get(record.id)
            kept.append(copy if copy is not None and _older(record, copy) else record)
        return kept

    def _known_copies(self, records: list[CrmRecord]) -> dict[str, CrmRecord]:
        """The snapshot's copies of ``records``, by id."""
        return {copy.id: copy for copy in self._load(dict.fromkeys(r.id for r in records))}

    def _count(self) -> int:
        query = select(func.count()).where(crm_snapshot.c.destination == self.name)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def _deleted_since(
        self, mapping: DestinationMapping, since: datetime, until: datetime
    ) -> list[str] | None:
        read_deleted = getattr(self.inner, "read_deleted_since", None)
        if not callable(read_deleted):
            return []  # a CRM that cannot delete: nothing to drop
        found = read_deleted(mapping, since, until=until)
        return None if found is None else list(found)

    def _full_refresh_reason(
        self, meta: Mapping[str, Any], mapping: DestinationMapping, now: datetime, identity: str
    ) -> str | None:
        if self.force_full:
            return "requested"
        if not meta:
            return "no snapshot"
        known = meta.get("identity")
        if known is not None and known != identity:
            return f"another CRM: the snapshot is of {known}, this is {identity}"
        if meta.get("fingerprint") != mapping_fingerprint(mapping):
            return "mapping changed"
        if now - datetime.fromisoformat(meta["full_at"]) > self.max_age:
            return "snapshot older than the maximum age"
        if not hasattr(self.inner, "read_records_modified_since"):
            return "destination cannot read incrementally"
        return None

    def write(
        self,
        object_name: str,
        changes: Sequence[RecordChange],
        specs: Mapping[str, FieldSpec],
        **kwargs: Any,
    ) -> WriteResult:
        """Write through, then record what was written (and what is gone) in the snapshot."""
        result = self.inner.write(object_name, changes, specs, **kwargs)
        written = set(result.written)
        by_id = {c.record_id: c for c in changes if c.record_id in written}
        if by_id:
            # Where change reads lag, a written record is stamped with the CRM's time of the
            # write (its Date), as a read would show it: a stale search copy is older.
            stamp = result.server_time if self._reads_lag else None
            current = {rid: rec for rid in by_id if (rec := self._read.get(rid)) is not None}
            missing = [rid for rid in by_id if rid not in current]
            if missing:
                current.update((r.id, r) for r in self._load(dict.fromkeys(missing)))
            updated = []
            for record_id, change in by_id.items():
                record = current.get(record_id)
                if record is None:
                    continue
                fields = dict(record.fields)
                fields.update({k: _jsonable(v) for k, v in change.fields.items()})
                updated.append(
                    CrmRecord(
                        record.id,
                        record.domain_values,
                        fields,
                        record.name,
                        _later(record.last_modified, stamp),
                        record.parent_id,
                        record.owner_id,
                    )
                )
            self._upsert(updated)
            # Replaces the copies read before this write (which the run may still hold).
            self._read.update((record.id, record) for record in updated)
        self._delete([r.record_id for r in result.rejected if r.code in GONE_CODES])
        return result

    def _delete(self, record_ids: Sequence[str]) -> None:
        if not record_ids:
            return
        with self.engine.begin() as conn:
            for start in range(0, len(record_ids), DELETE_BATCH):
                conn.execute(
                    delete(crm_snapshot).where(
                        crm_snapshot.c.destination == self.name,
                        crm_snapshot.c.record_id.in_(record_ids[start : start + DELETE_BATCH]),
                    )
                )

    def _load(self, ids: Mapping[str, Any] | None = None) -> list[CrmRecord]:
        query = select(crm_snapshot.c.record_id, crm_snapshot.c.data).where(
            crm_snapshot.c.destination == self.name
        )
        loaded: list[CrmRecord] = []
        with self.engine.connect() as conn:
            if ids is None:
                result = conn.execution_options(yield_per=LOAD_BATCH).execute(query)
                for partition in result.partitions():
                    loaded.extend(decode_rows(partition))
                return loaded
            wanted = list(ids)
            for start in range(0, len(wanted), DELETE_BATCH):
                chunk = query.where(
                    crm_snapshot.c.record_id.in_(wanted[start : start + DELETE_BATCH])
                )
                loaded.extend(decode_rows(conn.execute(chunk).all()))
            return loaded

    def _replace(self, records: Sequence[CrmRecord]) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(crm_snapshot).where(crm_snapshot.c.destination == self.name))
            self._insert(conn, records)

    def _upsert(self, records: Sequence[CrmRecord]) -> None:
        if not records:
            return
        dialect = self.engine.dialect.name
        with self.engine.begin() as conn:
            if dialect in NATIVE_UPSERT_DIALECTS:
                # One INSERT ... ON CONFLICT per batch instead of a DELETE and an INSERT.
                statement = dialect_insert(dialect)(crm_snapshot)
                statement = statement.on_conflict_do_update(
                    index_elements=[crm_snapshot.c.destination, crm_snapshot.c.record_id],
                    set_={"data": statement.excluded.data},
                )
                self._insert(conn, records, statement)
                return
            ids = [r.id for r in records]
            for start in range(0, len(ids), DELETE_BATCH):
                conn.execute(
                    delete(crm_snapshot).where(
                        crm_snapshot.c.destination == self.name,
                        crm_snapshot.c.record_id.in_(ids[start : start + DELETE_BATCH]),
                    )
                )
            self._insert(conn, records)

    def _insert(self, conn: Any, records: Sequence[CrmRecord], statement: Any = None) -> None:
        # One executemany per batch, inside the caller's transaction.
        name = self.name
        statement = crm_snapshot.insert() if statement is None else statement
        for start in range(0, len(records), INSERT_BATCH):
            rows = [
                {"destination": name, "record_id": r.id, "data": encode_record(r)}
                for r in records[start : start + INSERT_BATCH]
            ]
            if rows:
                conn.execute(statement, rows)
