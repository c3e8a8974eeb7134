"""Memory-flat planning prototype (issue 16, "Beyond one machine"): plan by a streaming merge
inside the state store instead of holding every account, record and ledger row at once.

Run on demand, never by pytest::

    nice -n 10 python benchmarks/memory_flat.py [--sizes 100000,250000,500000,1000000] \
        [--chunk 10000] [--workdir DIR] [--keep]

For each size (accounts = CRM records, one Salesforce destination, the real mapping of
``config/pls_sync.yaml`` and the sandbox's Account schema) it extends one SQLite state store
with the previous run's world (``account_states``, ``crm_snapshot``, ``crm_ownership``, and a
prototype domain index ``pls_bench_crm_domains``), then plans the next run twice, each in a
fresh process, one at a time:

(a) ``in_memory``: today's path. Every previous state, every scored ``AccountResult``, the
    whole CRM snapshot (through ``SnapshottingDestination`` after an empty incremental read),
    the whole ownership ledger and the domain index are held, then ``plan_changes`` diffs
    every record.
(b) ``streaming``: accounts in key order, ``--chunk`` at a time: their previous states by a
    key-range query, scoring, ``desired_fields``; the chunk's desired values go into a temp
    table that one query joins with the domain index, ``crm_snapshot`` and ``crm_ownership``
    and compares field by field in SQL, so that only records whose values or ledger row may
    differ come back. Those go through the real ``plan_changes``; the plan (changes and
    ledger rows) goes into temp tables, never into a Python list.

The SQL comparison is conservative: it calls two values equal only where the core's
``canonical`` would (numbers by value, text exactly, datetimes in the UTC shapes the CRMs and
the snapshot write, empty as empty); anything else comes back and Python decides, so the plans
are the same. At the smallest size both plans are compared whole (changes in order, ledger rows).

Left out of the prototype (the core case is a matched record with ``write: always`` fields):
write policies (``if_empty``, ``unless_edited``: the data has none), the ``mql_only`` channel,
retiring records no account targets (``not_target``, ``account_gone``), records deleted from
the CRM, matching beyond one candidate per domain (``on_multiple`` rules, two accounts on one
record), refitting with CRM firmographics, the write itself. See ``README.md``.

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere, and in spawned children
    sys.path.insert(0, str(REPO))

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from pls_sync.mapping import DestinationMapping
    from pls_sync.models import (
        CrmRecord,
        FieldSpec,
        OwnedRecord,
        ProductAccount,
        RecordChange,
        WriteResult,
    )
    from pls_sync.planning import AccountResult
    from pls_sync.ports import AccountState
    from pls_sync.scoring import ScoringModel

CONFIG = REPO / "config" / "pls_sync.yaml"
DESTINATION = "salesforce"
CRM = "salesforce:00DBENCH00000000AAA"
AS_OF = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
LAST_RUN = AS_OF - timedelta(days=1)
DEFAULT_SIZES = (100_000, 250_000, 500_000, 1_000_000)
DEFAULT_CHUNK = 10_000
FLAT_TOLERANCE = 0.10
DOMAIN_TABLE = "pls_bench_crm_domains"

# Which accounts differ from the last run, as (every, at): account i when i % every == at.
USAGE_CHANGED = (100, 37)  # 1 %: three more active users, more events, a new user
CRM_EDITED = (1000, 511)  # someone changed the tier in the CRM: an ``always`` field is repaired
WRITTEN_SHAPES = (200, 13)  # values as pls-sync's own write left them in the snapshot
NUMBERS_AS_TEXT = (500, 99)  # numbers the CRM gave as text: equal, but only Python can tell
WRITE_IN_FLIGHT = (1000, 777)  # the last write's outcome is unknown: the ledger row settles
NO_LEDGER_ROW = (1000, 333)  # a matched record pls-sync has no ledger row for yet

CHANNELS = {"sales": "usage_pql", "success": "usage_no_buyer"}
MOTIONS = {"sales": "sales", "success": "success", "self_serve": "self_serve"}


def hit(i: int, rule: tuple[int, int]) -> bool:
    """Whether account ``i`` is one of those a variant rule picks."""
    return i % rule[0] == rule[1]


# --------------------------------------------------------------------------- the synthetic world


def account_key(i: int) -> str:
    """Account ``i``'s key and domain; fixed width, so key order is index order."""
    return f"co{i:07d}.com"


def record_id(i: int) -> str:
    """The Salesforce Account id of account ``i``'s record: a bijection that scatters record
    ids away from key order, as a real org's ids are."""
    from pls_sync.sandbox.salesforce import make_id

    return make_id("001", (i * 2_654_435_761) & 0xFFFFFFFF)


def _unit(i: int, salt: int) -> float:
    """A reproducible number in [0, 1) for account ``i`` (no RNG state to carry across chunks)."""
    h = ((i + 1) * 0x9E3779B1 ^ (salt + 1) * 0x85EBCA77) & 0xFFFFFFFF
    h = ((h ^ (h >> 15)) * 0x2C1B3C6D) & 0xFFFFFFFF
    return (h ^ (h >> 12)) / 2**32


def usage_metrics(i: int, changed: bool) -> dict[str, float | None]:
    """Account ``i``'s warehouse metrics: most accounts small, a long tail of big teams."""
    u = [_unit(i, salt) for salt in range(14)]
    team = round(1 + 40 * u[0] ** 3) + (3 if changed else 0)
    events_28d = round(team * 40 * (0.2 + u[1])) + (90 if changed else 0)
    weekly = events_28d / 4
    return {
        "total_users": float(team + round(5 * u[2])),
        "active_users_7d": float(round(team * (0.4 + 0.6 * u[3]))),
        "active_users_28d": float(team),
        "new_users_7d": float(round(3 * u[4] ** 2) + (1 if changed else 0)),
        "usual_weekly_new_users": float(round(1 + 2 * u[5])),
        "events_7d": float(round(weekly * (0.5 + u[6]))),
        "usual_weekly_events": float(round(weekly * (0.7 + 0.6 * u[7]))),
        "events_28d": float(events_28d),
        "events_prev_28d": float(round(events_28d * (0.6 + 0.8 * u[8]))),
        "core_features_28d": float(round(8 * u[9])),
        "enterprise_features_28d": float(round(6 * u[10] ** 4)),
        "admin_changes_28d": float(round(2 * u[11] ** 6)),
        "legal_page_views_14d": float(round(4 * u[12] ** 5)),
        "pricing_page_views_14d": float(round(7 * u[13] ** 3)),
        "admins": 1.0,
    }


def product_account(i: int, *, this_run: bool) -> ProductAccount:
    """Account ``i`` as the warehouse gives it, in this run or in the last one."""
    from pls_sync.models import ProductAccount

    key = account_key(i)
    changed = this_run and hit(i, USAGE_CHANGED)
    first_seen = AS_OF - timedelta(days=30 + i % 900)  # never young: no age guard in play
    return ProductAccount(key, key, usage_metrics(i, changed), first_seen)


def with_channels(result: AccountResult) -> AccountResult:
    """The lead channel and motion the channels step would give, from the tier alone."""
    tier = result.score.tier
    return replace(result, lead_channel=CHANNELS.get(tier), motion=MOTIONS.get(tier))


@dataclass(frozen=True)
class World:
    """What every process builds the same way: the scoring model, the mapping, the schema."""

    model: ScoringModel
    mapping: DestinationMapping
    specs: dict[str, FieldSpec]
    sandbox_specs: Mapping[str, Any]


def load_world() -> World:
    """The repository's scoring model and Salesforce mapping, and the sandbox's Account schema
    (as ``describe`` turns it into ``FieldSpec``s)."""
    from connectors.salesforce import field_spec
    from pls_sync.config import load_settings
    from pls_sync.sandbox.salesforce import build_schema

    settings = load_settings(CONFIG, env={"PLS_SYNC_SALESFORCE_ENABLED": "true"})
    account = build_schema()["Account"]
    fields = account.describe("59.0")["fields"]
    return World(
        model=settings.scoring,
        mapping=settings.destinations[DESTINATION].mapping,
        specs={entry["name"]: field_spec(entry) for entry in fields},
        sandbox_specs={spec.name: spec for spec in account.fields},
    )


# --------------------------------------------------------------------------- the last run's store


def last_run_result(i: int, world: World) -> AccountResult:
    """Account ``i`` as the last run scored and wrote it."""
    from pls_sync.planning import AccountResult
    from pls_sync.scoring import score_account
    from pls_sync.transitions import advance

    account = product_account(i, this_run=False)
    score = score_account(account, world.model, LAST_RUN)
    state, _ = advance(None, score, LAST_RUN, world.model.qualified_tiers)
    moved = (i % 7) - 3 or None  # the move the run before that reported, kept while unmoved
    state = replace(state, score_change=moved)
    return with_channels(AccountResult(account, score, state, None, moved))


def wire_value(value: Any, name: str, world: World, i: int) -> Any:
    """A stored value as the snapshot holds it: as the REST API returned it, or for some
    records as pls-sync's write recorded it or as a CRM giving numbers as text would."""
    from pls_sync.models import FieldType
    from pls_sync.sandbox.salesforce import to_json_value

    if value is None:
        return None
    numeric = world.specs[name].type in (FieldType.NUMBER, FieldType.INTEGER)
    if hit(i, WRITTEN_SHAPES):
        return value.isoformat() if isinstance(value, datetime) else value
    if hit(i, NUMBERS_AS_TEXT) and numeric:
        return str(float(value))
    return to_json_value(world.sandbox_specs[name], float(value) if numeric else value)


def crm_record(i: int, desired: Mapping[str, Any], world: World) -> CrmRecord:
    """Account ``i``'s CRM record after the last run wrote it (and maybe a person edited it)."""
    from pls_sync.models import CrmRecord

    fields = {name: wire_value(desired.get(name), name, world, i) for name in world.mapping.targets}
    if hit(i, CRM_EDITED):
        fields["PQA_Tier__c"] = "success" if desired.get("PQA_Tier__c") != "success" else "sales"
    fields["NumberOfEmployees"] = 10 + i % 5000
    domain = account_key(i)
    return CrmRecord(
        id=record_id(i),
        domain_values=(f"https://www.{domain}", domain),
        fields=fields,
        name=f"Company {i}",
        last_modified=LAST_RUN - timedelta(minutes=i % 2880),
        owner_id="005Dn000000BENCHAAA",
    )


def ledger_row(i: int, result: AccountResult, desired: Mapping[str, Any]) -> OwnedRecord | None:
    """The ownership ledger row the last run left on account ``i``'s record."""
    from pls_sync.models import OwnedRecord
    from pls_sync.planning import json_value

    if hit(i, NO_LEDGER_ROW):
        return None
    fields = {name: json_value(value) for name, value in desired.items()}
    return OwnedRecord(
        record_id(i),
        result.account.key,
        fields,
        {},
        modified=LAST_RUN - timedelta(days=2),
        written_at=LAST_RUN,
        in_flight=hit(i, WRITE_IN_FLIGHT),
    )


def generate(url: str, start: int, stop: int, chunk: int) -> dict[str, Any]:
    """Extend the store at ``url`` with accounts ``start``..``stop - 1`` as the last run left
    them: account states, CRM snapshot, domain index, ownership ledger, snapshot metadata."""
    from sqlalchemy import event, insert

    from connectors.crm_snapshot import crm_snapshot, encode_record, mapping_fingerprint
    from connectors.state import SqlStateStore
    from pls_sync.planning import desired_fields
    from pls_sync.service import record_domains

    started = time.perf_counter()
    world = load_world()
    store = SqlStateStore.open(url)
    engine = store.engine
    # Inserts at scattered record ids: a bigger page cache for generation only (it is not
    # measured; the measured runs keep SQLite's default 2 MiB).
    event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA cache_size=-262144"))
    engine.dispose()
    crm_snapshot.create(engine, checkfirst=True)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {DOMAIN_TABLE} (destination TEXT NOT NULL, "
            "domain TEXT NOT NULL, record_id TEXT NOT NULL, "
            "PRIMARY KEY (destination, domain, record_id))"
        )
    for first in range(start, stop, chunk):
        indexes = range(first, min(first + chunk, stop))
        results = [last_run_result(i, world) for i in indexes]
        desired = [desired_fields(r, world.mapping, world.specs) for r in results]
        records = [crm_record(i, d, world) for i, d in zip(indexes, desired, strict=True)]
        with engine.begin() as conn:
            conn.execute(
                insert(crm_snapshot),
                [
                    {"destination": DESTINATION, "record_id": r.id, "data": encode_record(r)}
                    for r in records
                ],
            )
            conn.exec_driver_sql(
                f"INSERT INTO {DOMAIN_TABLE} VALUES (?, ?, ?)",
                [(DESTINATION, d, r.id) for r in records for d in sorted(record_domains(r))],
            )
        rows = [ledger_row(i, r, d) for i, r, d in zip(indexes, results, desired, strict=True)]
        store.save_owned(CRM, [row for row in rows if row is not None])
        store.save_account_states("bench-last-run", [r.state for r in results], [])
    store.set_value(
        f"crm_snapshot:{DESTINATION}",
        {
            "fingerprint": mapping_fingerprint(world.mapping),
            "full_at": (AS_OF - timedelta(hours=1)).isoformat(),
            "watermark": (AS_OF - timedelta(minutes=30)).isoformat(),
            "identity": CRM,
        },
    )
    store.close()
    return {"accounts_added": stop - start, "seconds": round(time.perf_counter() - started, 2)}


# --------------------------------------------------------------------------- shared by (a) and (b)


class StubWarehouse:
    """A usage source giving this run's accounts for a range of indexes."""

    def __init__(self, indexes: Iterable[int]) -> None:
        """Serve the accounts with these indexes, in order."""
        self.indexes = indexes

    def read_accounts(self, as_of: datetime, stats: Any) -> Iterator[ProductAccount]:
        """This run's accounts (``as_of`` is fixed by the benchmark)."""
        for i in self.indexes:
            yield product_account(i, this_run=True)


def score_run(
    indexes: Iterable[int], previous: Mapping[str, AccountState], world: World
) -> list[AccountResult]:
    """This run's results for these accounts, as ``score_all`` and the channels step give
    them; accounts that left the warehouse are dropped (the prototype leaves them out)."""
    from pls_sync.service import score_all

    scored = score_all(StubWarehouse(indexes), world.model, previous, AS_OF)  # type: ignore[arg-type]
    return [with_channels(result) for result in scored.results if not result.gone]


def change_text(change: RecordChange) -> str:
    """One planned change as canonical JSON text: what both paths store and compare."""
    from pls_sync.planning import json_value

    return json.dumps(
        [
            change.record_id,
            change.account_key,
            change.priority,
            {name: json_value(value) for name, value in change.fields.items()},
            {name: json_value(value) for name, value in (change.current or {}).items()},
            change.reason,
        ],
        sort_keys=True,
    )


def ownership_text(record_id: str, row: OwnedRecord | None) -> str:
    """One planned ledger row (None: forgotten) as canonical JSON text."""
    from pls_sync.planning import json_value

    body = (
        None
        if row is None
        else [
            row.account_key,
            dict(row.fields),
            dict(row.pending),
            json_value(row.modified),
            json_value(row.written_at),
            row.in_flight,
        ]
    )
    return json.dumps([record_id, body], sort_keys=True)


def peak_rss_mib() -> float:
    """This process's peak resident set, in MiB (Linux reports ru_maxrss in KiB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def dump_plan(path: str, changes: Sequence[str], ownership: Sequence[str]) -> None:
    """Write a plan's texts for the comparison in the parent process."""
    Path(path).write_text(json.dumps({"changes": changes, "ownership": ownership}))


# --------------------------------------------------------------------------- (a) today's path


class SnapshotOnlySalesforce:
    """A Salesforce destination whose incremental read finds nothing changed or deleted:
    ``SnapshottingDestination`` then serves every record from the snapshot, as in a steady
    state run."""

    name = DESTINATION

    def __init__(self, specs: Mapping[str, FieldSpec]) -> None:
        """A destination describing ``specs``."""
        self.specs = specs

    def describe(self, object_name: str) -> dict[str, FieldSpec]:
        """The Account schema."""
        return dict(self.specs)

    def crm_identity(self) -> str:
        """The org the snapshot was taken of."""
        return CRM

    def api_calls(self) -> dict[str, int]:
        """No calls: nothing leaves the process."""
        return {}

    def read_records(self, mapping: DestinationMapping) -> Iterator[CrmRecord]:
        """A full read would mean the snapshot was not used: the benchmark would be wrong."""
        raise AssertionError("the benchmark expects an incremental read from the snapshot")

    def read_records_modified_since(
        self, mapping: DestinationMapping, since: datetime
    ) -> Iterator[CrmRecord]:
        """Nothing changed in the CRM since the last read."""
        return iter(())

    def write(
        self,
        object_name: str,
        changes: Sequence[RecordChange],
        specs: Mapping[str, FieldSpec],
        *,
        stop: threading.Event | None = None,
    ) -> WriteResult:
        """Planning never writes."""
        raise AssertionError("the benchmark only plans")

    def read_deleted_since(
        self, mapping: DestinationMapping, since: datetime, until: datetime | None = None
    ) -> list[str]:
        """Nothing was deleted."""
        return []


def run_in_memory(url: str, accounts: int, dump: str | None) -> dict[str, Any]:
    """Today's planning path over every account at once; returns times and peak RSS."""
    from connectors.crm_snapshot import SnapshottingDestination
    from connectors.state import SqlStateStore
    from pls_sync.planning import plan_changes
    from pls_sync.service import match_as_a_run_does, record_domains

    world = load_world()
    baseline = peak_rss_mib()
    started = time.perf_counter()
    store = SqlStateStore.open(url)
    results = score_run(range(accounts), store.load_account_states(), world)
    scored = time.perf_counter()
    destination = SnapshottingDestination(
        SnapshotOnlySalesforce(world.specs), store.engine, store, clock=lambda: AS_OF
    )
    matched = match_as_a_run_does(destination, world.mapping, results, store)
    loaded = time.perf_counter()
    assert destination.last_read.get("mode") == "incremental", destination.last_read
    assert matched.report is not None
    plan = plan_changes(
        results,
        matched.report,
        matched.records,
        world.mapping,
        world.specs,
        owned=matched.owned,
        stored=matched.owned,
        domains_of=record_domains,
    )
    planned = time.perf_counter()
    peak = peak_rss_mib()
    if dump:
        dump_plan(
            dump,
            [change_text(change) for change in plan.changes],
            [ownership_text(rid, row) for rid, row in sorted(plan.ownership.items())],
        )
    return {
        "peak_rss_mib": peak,
        "import_rss_mib": baseline,
        "wall_seconds": round(planned - started, 2),
        "seconds": {
            "states_and_scoring": round(scored - started, 2),
            "snapshot_ledger_and_match": round(loaded - scored, 2),
            "plan": round(planned - loaded, 2),
        },
        "matched": matched.report.counts()["matched"],
        "records_changed": len(plan.changes),
        "ownership_rows": len(plan.ownership),
        "fields_changed": dict(sorted(plan.field_changes.items())),
    }


# --------------------------------------------------------------------------- (b) the prototype

_STAMP = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
# The UTC shapes a stored datetime takes: Salesforce REST, pls-sync's own write (isoformat),
# HubSpot and other Z forms, and naive (read as UTC by ``canonical`` as well).
_UTC_SHAPES = (
    ".[0-9][0-9][0-9]+0000",
    "+00:00",
    ".[0-9][0-9][0-9]+00:00",
    "Z",
    ".[0-9][0-9][0-9]Z",
    "",
)


def _same_typed(kind: str, have: str, have_type: str, want: str) -> str:
    """SQL true only where ``canonical`` makes the stored value equal to the desired one.

    ``have``/``have_type`` are the stored JSON value and its ``json_type``; ``want`` is the
    desired canonical value as a SQL value (numbers, text, epoch seconds, ISO dates, 0/1).
    Whatever it cannot be sure of is false, and Python decides.
    """
    if kind in ("number", "integer"):
        return f"({have_type} IN ('integer', 'real') AND {have} = {want})"
    if kind == "datetime":
        shapes = " OR ".join(f"{have} GLOB '{_STAMP}{shape}'" for shape in _UTC_SHAPES)
        second = f"substr({have}, 1, 19)"
        return (
            f"({have_type} = 'text' AND ({shapes}) "
            f"AND datetime({second}) = replace({second}, 'T', ' ') "  # a real date and time
            f"AND unixepoch({second}) = {want})"
        )
    if kind == "date":
        return (
            f"({have_type} = 'text' AND {have} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]' "
            f"AND date({have}) = {have} AND {have} = {want})"
        )
    if kind == "boolean":
        return f"({have_type} IN ('true', 'false') AND ({have_type} = 'true') = {want})"
    return f"({have_type} = 'text' AND {have} = {want})"


def field_same_sql(position: int, name: str, spec: FieldSpec) -> str:
    """SQL for "field ``name`` needs no write": the desired side is column ``m<position>``
    (0: no value, left alone; 1: clear it; 2: value ``v<position>``)."""
    path = _sql_text("$.fields." + json.dumps(name))
    have = f"json_extract(s.data, {path})"
    have_type = f"json_type(s.data, {path})"
    empty = (
        f"({have_type} IS NULL OR {have_type} = 'null' OR ({have_type} = 'text' AND {have} = ''))"
    )
    typed = _same_typed(spec.type.value, have, have_type, f"d.v{position}")
    return (
        f"CASE d.m{position} WHEN 0 THEN 1 WHEN 1 THEN COALESCE({empty}, 0) "
        f"ELSE COALESCE({typed}, 0) END"
    )


def _sql_text(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


# The ledger row needs no update: it names the account, holds exactly what is desired, has no
# pending values and no write in flight (else ``_Planner.add`` stores a new row).
LEDGER_SAME = (
    "(o.record_id IS NOT NULL AND o.account_key = d.account_key "
    "AND COALESCE(json_extract(o.data, '$.in_flight'), 0) = 0 "
    "AND json_extract(o.data, '$.pending') = '{}' "
    "AND json_extract(o.data, '$.fields') = d.owned)"
)


def diff_query(world: World) -> str:
    """The chunk's join: desired values -> the only record of their domain -> its snapshot row
    and ledger row, keeping the rows where a field or the ledger row may change."""
    fields = world.mapping.fields
    same = " AND ".join(
        f"({field_same_sql(j, fm.target, world.specs[fm.target])})" for j, fm in enumerate(fields)
    )
    # CROSS JOIN keeps SQLite's join order: the chunk outside, index lookups inside (the
    # planner has no statistics for the temp table and would scan the domain index instead).
    return f"""
        SELECT d.account_key, c.record_id, s.data, o.account_key, o.data
        FROM temp.pls_desired AS d
        CROSS JOIN {DOMAIN_TABLE} AS c ON c.destination = :destination AND c.domain = d.domain
        CROSS JOIN crm_snapshot AS s ON s.destination = :destination AND s.record_id = c.record_id
        LEFT JOIN crm_ownership AS o ON o.crm = :crm AND o.record_id = c.record_id
        WHERE NOT EXISTS (
            SELECT 1 FROM {DOMAIN_TABLE} AS other
            WHERE other.destination = c.destination AND other.domain = c.domain
              AND other.record_id <> c.record_id)
          AND NOT ({same} AND {LEDGER_SAME})
    """


def matched_query() -> str:
    """How many of the chunk's accounts have exactly one record (the matches)."""
    return f"""
        SELECT count(*) FROM temp.pls_desired AS d
        CROSS JOIN {DOMAIN_TABLE} AS c ON c.destination = :destination AND c.domain = d.domain
        WHERE NOT EXISTS (
            SELECT 1 FROM {DOMAIN_TABLE} AS other
            WHERE other.destination = c.destination AND other.domain = c.domain
              AND other.record_id <> c.record_id)
    """


def sql_value(value: Any) -> Any:
    """A desired canonical value as the SQL side compares it."""
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return int(value)
    return value


def desired_row(result: AccountResult, world: World) -> tuple[Any, ...]:
    """One temp-table row: key, domain, the ledger's would-be fields, then (mode, value) per
    mapped field."""
    from pls_sync.planning import desired_fields, json_value

    desired = desired_fields(result, world.mapping, world.specs)
    owned = {name: json_value(value) for name, value in desired.items()}
    row: list[Any] = [
        result.account.key,
        result.account.domain,
        json.dumps(owned, separators=(",", ":"), sort_keys=True),
    ]
    for fm in world.mapping.fields:
        if fm.target not in desired:
            row += [0, None]
        elif desired[fm.target] is None:
            row += [1, None]
        else:
            row += [2, sql_value(desired[fm.target])]
    return tuple(row)


def create_temp_tables(conn: Connection, world: World) -> None:
    """The chunk's desired values and the plan being built, in the connection's temp schema."""
    columns = ", ".join(f"m{j} INTEGER, v{j}" for j in range(len(world.mapping.fields)))
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE pls_desired (account_key TEXT, domain TEXT, owned TEXT, {columns})"
    )
    conn.exec_driver_sql(
        "CREATE TEMP TABLE pls_plan (record_id TEXT PRIMARY KEY, priority REAL, row TEXT)"
    )
    conn.exec_driver_sql("CREATE TEMP TABLE pls_ownership (record_id TEXT PRIMARY KEY, row TEXT)")


def previous_states(conn: Connection, first: str, last: str) -> dict[str, AccountState]:
    """The stored states of the keys from ``first`` to ``last``: one range of the primary key."""
    from sqlalchemy import select

    from connectors.state import account_states
    from pls_sync.ports import AccountState

    c = account_states.c
    query = select(
        c.account_key,
        c.score,
        c.tier,
        c.tier_since,
        c.qualified_since,
        c.scored_at,
        c.score_change,
    ).where(c.account_key >= first, c.account_key <= last)
    return {row[0]: AccountState(*row) for row in conn.execute(query)}


@dataclass
class StreamStats:
    """What the streaming run counted and timed."""

    matched: int = 0
    rows_back: int = 0
    records_changed: int = 0
    ownership_rows: int = 0
    seconds_python: float = 0.0
    seconds_sql: float = 0.0
    seconds_recheck: float = 0.0
    field_changes: Counter[str] | None = None


def ledger_record(record_id: str, account_key: str, data: str) -> OwnedRecord:
    """A ``crm_ownership`` row as ``SqlStateStore.load_owned`` gives it (the store has no
    public way to load the rows of some records only)."""
    from pls_sync.models import OwnedRecord

    row = json.loads(data)

    def moment(value: str | None) -> datetime | None:
        return datetime.fromisoformat(value) if value else None

    return OwnedRecord(
        record_id,
        account_key,
        dict(row.get("fields") or {}),
        dict(row.get("pending") or {}),
        moment(row.get("modified")),
        moment(row.get("written_at")),
        bool(row.get("in_flight")),
    )


def plan_rows_back(
    rows: Sequence[Any], results: Mapping[str, AccountResult], world: World
) -> tuple[list[tuple[str, float, str]], list[tuple[str, str]], Counter[str]]:
    """Plan the records that came back with the real ``plan_changes``: their changes, their
    ledger rows and the changed fields' counts."""
    from connectors.crm_snapshot import decode_record
    from pls_sync.matching import MATCHED, Match, MatchReport
    from pls_sync.planning import plan_changes
    from pls_sync.service import record_domains

    records, owned, matches = {}, {}, {}
    for key, rid, data, owner, ledger in rows:
        records[rid] = decode_record(rid, data)
        if ledger is not None:
            owned[rid] = ledger_record(rid, owner, ledger)
        matches[key] = Match(key, results[key].account.domain, MATCHED, rid, (rid,))
    plan = plan_changes(
        [results[key] for key in matches],
        MatchReport(matches),
        records,
        world.mapping,
        world.specs,
        owned=owned,
        stored=owned,
        domains_of=record_domains,
    )
    changes = [(c.record_id, c.priority, change_text(c)) for c in plan.changes]
    ownership = [(rid, ownership_text(rid, row)) for rid, row in plan.ownership.items()]
    return changes, ownership, plan.field_changes


def stream_chunk(
    conn: Connection, indexes: range, world: World, query: str, stats: StreamStats
) -> None:
    """Score one chunk, diff it in the store, plan what came back, store the plan."""
    started = time.perf_counter()
    states = previous_states(conn, account_key(indexes[0]), account_key(indexes[-1]))
    results = score_run(indexes, states, world)
    rows = [desired_row(result, world) for result in results]
    marks = ", ".join("?" * len(rows[0]))
    conn.exec_driver_sql("DELETE FROM temp.pls_desired")
    conn.exec_driver_sql(f"INSERT INTO temp.pls_desired VALUES ({marks})", rows)
    by_key = {result.account.key: result for result in results}
    del rows, results
    joined = time.perf_counter()
    params = {"destination": DESTINATION, "crm": CRM}
    stats.matched += int(conn.exec_driver_sql(matched_query(), params).scalar() or 0)
    back = conn.exec_driver_sql(query, params).fetchall()
    rechecked = time.perf_counter()
    changes, ownership, fields = plan_rows_back(back, by_key, world)
    if changes:
        conn.exec_driver_sql("INSERT INTO temp.pls_plan VALUES (?, ?, ?)", changes)
    if ownership:
        conn.exec_driver_sql("INSERT INTO temp.pls_ownership VALUES (?, ?)", ownership)
    done = time.perf_counter()
    stats.rows_back += len(back)
    stats.records_changed += len(changes)
    stats.ownership_rows += len(ownership)
    assert stats.field_changes is not None
    stats.field_changes.update(fields)
    stats.seconds_python += joined - started
    stats.seconds_sql += rechecked - joined
    stats.seconds_recheck += done - rechecked


def run_streaming(url: str, accounts: int, chunk: int, dump: str | None) -> dict[str, Any]:
    """The prototype: plan chunk by chunk with the diff done in the store."""
    from connectors.state import SqlStateStore

    world = load_world()
    baseline = peak_rss_mib()
    started = time.perf_counter()
    store = SqlStateStore.open(url)
    query = diff_query(world)
    stats = StreamStats(field_changes=Counter())
    with store.engine.connect() as conn:
        create_temp_tables(conn, world)
        for first in range(0, accounts, chunk):
            stream_chunk(conn, range(first, min(first + chunk, accounts)), world, query, stats)
        wall = time.perf_counter() - started
        peak = peak_rss_mib()
        if dump:
            plan = conn.exec_driver_sql(
                "SELECT row FROM temp.pls_plan ORDER BY priority DESC, record_id"
            )
            owned = conn.exec_driver_sql("SELECT row FROM temp.pls_ownership ORDER BY record_id")
            dump_plan(dump, [row[0] for row in plan], [row[0] for row in owned])
        conn.rollback()
    return {
        "peak_rss_mib": peak,
        "import_rss_mib": baseline,
        "wall_seconds": round(wall, 2),
        "seconds": {
            "states_scoring_desired": round(stats.seconds_python, 2),
            "sql_match_and_diff": round(stats.seconds_sql, 2),
            "plan_rows_back": round(stats.seconds_recheck, 2),
        },
        "chunk": chunk,
        "matched": stats.matched,
        "rows_back": stats.rows_back,
        "records_changed": stats.records_changed,
        "ownership_rows": stats.ownership_rows,
        "fields_changed": dict(sorted((stats.field_changes or Counter()).items())),
    }


# --------------------------------------------------------------------------- orchestration


def in_child(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn(*args)`` in a fresh spawned process and return its result."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def compare_plans(in_memory: Path, streaming: Path) -> dict[str, Any]:
    """Whether both plans hold the same changes (in order) and the same ledger rows."""
    a = json.loads(in_memory.read_text())
    b = json.loads(streaming.read_text())
    missing = sorted(set(a["changes"]) - set(b["changes"]))
    extra = sorted(set(b["changes"]) - set(a["changes"]))
    return {
        "equal": a == b,
        "changes": len(a["changes"]),
        "ownership_rows": len(a["ownership"]),
        "changes_only_in_memory": missing[:3],
        "changes_only_streaming": extra[:3],
        "same_order": a["changes"] == b["changes"],
        "same_ownership": a["ownership"] == b["ownership"],
    }


def flatness(runs: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Peak RSS at the largest size over the smallest, for both paths, and the verdict."""
    sizes = sorted(runs)
    smallest, largest = runs[sizes[0]], runs[sizes[-1]]

    def ratio(path: str) -> float:
        return round(largest[path]["peak_rss_mib"] / smallest[path]["peak_rss_mib"], 3)

    streaming = ratio("streaming")
    return {
        "accounts_ratio": round(sizes[-1] / sizes[0], 2),
        "in_memory_rss_ratio": ratio("in_memory"),
        "streaming_rss_ratio": streaming,
        "streaming_rss_flat_within_10pct": streaming <= 1 + FLAT_TOLERANCE,
    }


def print_table(runs: Mapping[int, Mapping[str, Any]]) -> None:
    """The human-readable table."""
    header = (
        f"{'accounts':>9} | {'(a) RSS MiB':>11} {'(a) wall s':>10} | {'(b) RSS MiB':>11} "
        f"{'(b) wall s':>10} | {'changed':>7} {'rows back':>9} {'ledger rows':>11}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for size in sorted(runs):
        a, b = runs[size]["in_memory"], runs[size]["streaming"]
        print(
            f"{size:>9,} | {a['peak_rss_mib']:>11.1f} {a['wall_seconds']:>10.2f} | "
            f"{b['peak_rss_mib']:>11.1f} {b['wall_seconds']:>10.2f} | "
            f"{b['records_changed']:>7,} {b['rows_back']:>9,} {b['ownership_rows']:>11,}"
        )
    for size in sorted(runs):
        a, b = runs[size]["in_memory"], runs[size]["streaming"]
        stages_a = ", ".join(f"{k} {v}" for k, v in a["seconds"].items())
        stages_b = ", ".join(f"{k} {v}" for k, v in b["seconds"].items())
        print(f"{size:>9,}: (a) {stages_a}\n{'':>11}(b) {stages_b}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default=",".join(str(size) for size in DEFAULT_SIZES),
        help="accounts (= CRM records) per measurement, comma-separated",
    )
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="accounts per chunk")
    parser.add_argument("--workdir", type=Path, help="default: a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    return parser.parse_args(argv)


def at_least_nice(level: int = 10) -> None:
    """Run (and let the children run) at niceness ``level`` or lower priority: others
    measure on this machine too."""
    current = os.nice(0)
    if current < level:
        os.nice(level - current)


def main(argv: list[str] | None = None) -> int:
    """Generate, measure both paths per size, compare the plans; print the table and JSON."""
    args = parse_args(argv)
    sizes = sorted({int(size) for size in args.sizes.split(",") if size.strip()})
    if not sizes or sizes[0] < 2 or args.chunk < 1:
        print("--sizes needs sizes of at least 2 accounts, --chunk at least 1", file=sys.stderr)
        return 2
    at_least_nice()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pls-sync-flat-"))
    workdir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{workdir / 'state.sqlite'}"
    log = lambda message: print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)  # noqa: E731
    began = time.perf_counter()
    runs: dict[int, dict[str, Any]] = {}
    generation: dict[int, Any] = {}
    check: dict[str, Any] = {}
    try:
        done = 0
        for size in sizes:
            log(f"{size:,} accounts: extending the store from {done:,}")
            generation[size] = in_child(generate, url, done, size, args.chunk)
            done = size
            dumps = (workdir / "plan-a.json", workdir / "plan-b.json")
            checked = size == sizes[0]
            log(f"{size:,} accounts: (a) in memory")
            a = in_child(run_in_memory, url, size, str(dumps[0]) if checked else None)
            log(f"{size:,} accounts: (b) streaming, chunks of {args.chunk:,}")
            b = in_child(run_streaming, url, size, args.chunk, str(dumps[1]) if checked else None)
            runs[size] = {"in_memory": a, "streaming": b}
            if checked:
                check = {"accounts": size, **compare_plans(*dumps)}
                log(f"plans compared at {size:,} accounts: equal={check['equal']}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print_table(runs)
    claims = flatness(runs)
    print("\nplans equal at {accounts:,} accounts: {equal}".format(**check))
    print("claims: " + ", ".join(f"{k}={v}" for k, v in claims.items()))
    result = {
        "benchmark": "memory_flat",
        "chunk": args.chunk,
        "sizes": sizes,
        "generation": generation,
        "runs": runs,
        "plan_check": check,
        "claims": claims,
        "total_seconds": round(time.perf_counter() - began, 1),
    }
    print(json.dumps(result, separators=(",", ":")))
    return 0 if check.get("equal") else 1


if __name__ == "__main__":
    sys.exit(main())
