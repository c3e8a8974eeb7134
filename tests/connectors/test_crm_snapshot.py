"""Incremental CRM reads through the snapshot, with the real clients against the sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from connectors.crm_snapshot import SnapshottingDestination, crm_snapshot, decode_record
from connectors.hubspot import HubSpotDestination
from connectors.salesforce import SalesforceDestination
from connectors.state import SqlStateStore
from pls_sync.config import load_settings
from pls_sync.demo_companies import demo_companies
from pls_sync.models import CrmRecord, RecordChange
from pls_sync.sandbox.server import Sandbox

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def box() -> Iterator[Sandbox]:
    sandbox = Sandbox(port=0, seed=7, companies=demo_companies(7, 60)).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def store(tmp_path: Path) -> SqlStateStore:
    return SqlStateStore.open(f"sqlite:///{tmp_path / 'state.sqlite'}")


@pytest.fixture
def settings():
    return load_settings(REPO / "config" / "pls_sync.yaml")


def salesforce(box: Sandbox) -> SalesforceDestination:
    return SalesforceDestination.from_env(
        {"SALESFORCE_INSTANCE_URL": box.url, "SALESFORCE_SESSION_ID": box.session_id}
    )


def test_salesforce_steady_state_reads_only_what_changed(
    box: Sandbox, store: SqlStateStore, settings
) -> None:
    mapping = settings.destinations["salesforce"].mapping
    sf = salesforce(box)
    snap = SnapshottingDestination(sf, store.engine, store, skew=timedelta(0))
    full = {r.id: r for r in snap.read_records(mapping)}
    assert snap.last_read["mode"] == "full" and snap.last_read["records"] == len(full) > 40

    box.reset_counts()
    again = {r.id: r for r in snap.read_records(mapping)}
    assert snap.last_read == {
        "mode": "incremental",
        "path": "changes",
        "changed": 0,
        "deleted": 0,
        "since": snap.last_read["since"],
        "crm": sf.crm_identity(),
    }
    assert again.keys() == full.keys()
    assert box.counts().get("sf.query", 0) == 1 and "sf.query_more" not in box.counts()

    # a rep edits one account by hand: the next read sees exactly that record
    edited = sorted(full)[3]
    response = requests.patch(
        f"{box.url}/services/data/v59.0/sobjects/Account/{edited}",
        json={"PQA_Tier__c": "success"},
        headers={"Authorization": f"Bearer {box.session_id}"},
        timeout=10,
    )
    assert response.status_code == 204
    after_edit = {r.id: r for r in snap.read_records(mapping)}
    assert snap.last_read["changed"] == 1
    assert after_edit[edited].fields["PQA_Tier__c"] == "success"
    assert len(after_edit) == len(full)


def test_writes_are_recorded_in_the_snapshot_and_gone_records_dropped(
    box: Sandbox, store: SqlStateStore, settings
) -> None:
    mapping = settings.destinations["salesforce"].mapping
    sf = salesforce(box)
    snap = SnapshottingDestination(sf, store.engine, store)
    records = {r.id: r for r in snap.read_records(mapping)}
    specs = snap.describe("Account")
    kept, gone = sorted(records)[:2]
    box.salesforce.delete("Account", gone)
    result = snap.write(
        "Account",
        [
            RecordChange(kept, {"PQA_Score__c": 91}, "a.com"),
            RecordChange(gone, {"PQA_Score__c": 50}, "b.com"),
        ],
        specs,
    )
    assert result.written == [kept]
    assert [r.code for r in result.rejected] in (
        ["ENTITY_IS_DELETED"],
        ["INVALID_CROSS_REFERENCE_KEY"],
    )
    snapshot = {r.id: r for r in snap._load()}
    assert gone not in snapshot
    assert float(snapshot[kept].fields["PQA_Score__c"]) == 91.0


def test_full_refresh_on_demand_on_age_and_on_mapping_change(
    box: Sandbox, store: SqlStateStore, settings
) -> None:
    mapping = settings.destinations["salesforce"].mapping
    now = [datetime.now(UTC)]
    snap = SnapshottingDestination(salesforce(box), store.engine, store, clock=lambda: now[0])
    list(snap.read_records(mapping))
    list(snap.read_records(mapping))
    assert snap.last_read["mode"] == "incremental"
    now[0] += timedelta(hours=25)
    list(snap.read_records(mapping))
    assert snap.last_read == {
        "mode": "full",
        "reason": "snapshot older than the maximum age",
        "records": snap.last_read["records"],
        "crm": snap.crm_identity(),
    }
    narrower = replace(mapping, fields=mapping.fields[:2])
    list(snap.read_records(narrower))
    assert snap.last_read["reason"] == "mapping changed"
    forced = SnapshottingDestination(salesforce(box), store.engine, store, force_full=True)
    list(forced.read_records(narrower))
    assert forced.last_read["reason"] == "requested"


def test_hubspot_incremental_read_by_last_modified_search(
    box: Sandbox, store: SqlStateStore, settings
) -> None:
    mapping = settings.destinations["hubspot"].mapping
    hs = HubSpotDestination.from_env(
        {"HUBSPOT_ACCESS_TOKEN": box.hubspot_token, "HUBSPOT_BASE_URL": box.url}
    )
    later = [timedelta(0)]
    box.set_clock(lambda: datetime.now(UTC) + later[0])
    snap = SnapshottingDestination(
        hs, store.engine, store, skew=timedelta(0), clock=lambda: datetime.now(UTC) + later[0]
    )
    full = {r.id: r for r in snap.read_records(mapping)}
    assert snap.last_read["mode"] == "full" and len(full) > 40
    box.reset_counts()
    target = sorted(full)[5]
    specs = snap.describe("companies")
    hs.write("companies", [RecordChange(target, {"pqa_tier": "sales"}, "x.com")], specs)
    later[0] = timedelta(minutes=1)  # the next run: HubSpot's search has indexed the write
    box.reset_counts()
    again = {r.id: r for r in snap.read_records(mapping)}
    assert snap.last_read["mode"] == "incremental" and snap.last_read["changed"] == 1
    assert again[target].fields["pqa_tier"] == "sales"
    # one search for what changed, one for what was merged away, one archived-list page
    counts = box.counts()
    assert counts.get("hs.companies.search", 0) == 2 and counts.get("hs.companies.list") == 1


def test_salesforce_deleted_and_merged_accounts_leave_the_snapshot_in_an_incremental_read(
    box: Sandbox, store: SqlStateStore, settings
) -> None:
    # Salesforce's deleted-records resource ignores seconds and covers whole minutes up to
    # the call: runs are minutes apart, as a schedule makes them (both clocks move together).
    later = [timedelta(0)]

    def clock() -> datetime:
        return datetime.now(UTC) + later[0]

    box.salesforce.clock = clock
    mapping = settings.destinations["salesforce"].mapping
    snap = SnapshottingDestination(salesforce(box), store.engine, store, clock=clock)
    ids = sorted(r.id for r in snap.read_records(mapping))
    deleted, master, loser = ids[0], ids[1], ids[2]
    later[0] = timedelta(minutes=10)
    box.salesforce.delete("Account", deleted)
    box.salesforce.merge(master, [loser])
    later[0] = timedelta(minutes=20)
    after = {r.id for r in snap.read_records(mapping)}
    assert snap.last_read["mode"] == "incremental" and snap.last_read["deleted"] == 2
    assert deleted not in after and loser not in after and master in after
    assert {r.id for r in snap._load()} == after


def test_hubspot_archived_and_merged_companies_leave_the_snapshot_in_an_incremental_read(
    box: Sandbox, store: SqlStateStore, settings
) -> None:
    mapping = settings.destinations["hubspot"].mapping
    hs = HubSpotDestination.from_env(
        {"HUBSPOT_ACCESS_TOKEN": box.hubspot_token, "HUBSPOT_BASE_URL": box.url}
    )
    later = [timedelta(0)]
    box.set_clock(lambda: datetime.now(UTC) + later[0])
    snap = SnapshottingDestination(
        hs, store.engine, store, clock=lambda: datetime.now(UTC) + later[0]
    )
    ids = sorted(r.id for r in snap.read_records(mapping))
    archived, primary, secondary = ids[0], ids[1], ids[2]
    assert box.hubspot is not None
    box.hubspot.archive("companies", [archived])
    merged = box.hubspot.merge("companies", primary, secondary)
    later[0] = timedelta(minutes=1)  # the next run: HubSpot's search has indexed the merge
    after = {r.id for r in snap.read_records(mapping)}
    assert snap.last_read["mode"] == "incremental"
    assert archived not in after and secondary not in after and merged in after
    assert (primary in after) == (merged == primary)  # a merge may give the result a new id
    assert {r.id for r in snap._load()} == after


def test_another_crm_behind_the_same_state_store_is_read_in_full(
    box: Sandbox, store: SqlStateStore, settings
) -> None:
    mapping = settings.destinations["salesforce"].mapping
    first = SnapshottingDestination(salesforce(box), store.engine, store)
    list(first.read_records(mapping))
    old = first.crm_identity()
    box.salesforce.change_identity(clear_fields=["PQA_Score__c"])  # a refreshed sandbox org
    other = SnapshottingDestination(salesforce(box), store.engine, store)
    records = list(other.read_records(mapping))
    new = other.crm_identity()
    assert new != old and new.startswith("salesforce:00D")
    assert other.last_read["mode"] == "full"
    assert other.last_read["reason"] == f"another CRM: the snapshot is of {old}, this is {new}"
    assert all(not r.fields.get("PQA_Score__c") for r in records)
    list(other.read_records(mapping))
    assert other.last_read["mode"] == "incremental"


class _NoReads:
    """A destination that is never read: the snapshot's store is exercised on its own."""

    name = "salesforce"


def test_records_round_trip_through_the_store_in_batches(store: SqlStateStore) -> None:
    stamp = datetime(2026, 5, 6, 7, 8, 9, 123_000, tzinfo=UTC)
    records = [
        CrmRecord(
            id=f"001{i:06d}",
            domain_values=(f"acme{i}.com", "www.acme.io"),
            fields={"PQA_Score__c": float(i), "PQA_Tier__c": "sales" if i % 2 else None},
            name=f"Acme {i}",
            last_modified=stamp - timedelta(minutes=i),
            parent_id="001000000" if i % 3 == 0 else None,
            owner_id="005000001",
        )
        for i in range(1_200)
    ]
    snap = SnapshottingDestination(_NoReads(), store.engine, store)  # type: ignore[arg-type]
    snap._replace(records)
    assert sorted(snap._load(), key=lambda r: r.id) == records
    wanted = {r.id: None for r in records[100:1_150]}  # more ids than one IN (...) holds
    assert sorted(r.id for r in snap._load(wanted)) == sorted(wanted)

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    updated = replace(
        records[7], fields={"PQA_Score__c": Decimal("12.5"), "Since__c": when, "Set__c": {"b"}}
    )
    snap._upsert([updated])
    loaded = {r.id: r for r in snap._load()}
    assert len(loaded) == len(records)
    assert loaded[updated.id].fields == {
        "PQA_Score__c": 12.5,
        "Since__c": when.isoformat(),
        "Set__c": ["b"],
    }
    assert loaded[records[8].id] == records[8]


def test_rows_stored_by_the_json_column_type_still_load(store: SqlStateStore) -> None:
    snap = SnapshottingDestination(_NoReads(), store.engine, store)  # type: ignore[arg-type]
    legacy = {
        "domain_values": ["a.com"],
        "fields": {"PQA_Score__c": 3.0},
        "name": "A",
        "last_modified": "2026-01-01T00:00:00+00:00",
        "parent_id": None,
        "owner_id": None,
    }
    with store.engine.begin() as conn:
        conn.execute(
            crm_snapshot.insert(),
            [{"destination": "salesforce", "record_id": "001A", "data": json.dumps(legacy)}],
        )
    [record] = snap._load()
    assert record == CrmRecord(
        "001A", ("a.com",), {"PQA_Score__c": 3.0}, "A", datetime(2026, 1, 1, tzinfo=UTC)
    )
    # a PostgreSQL json column hands the driver's dict back, not text
    assert decode_record("001A", legacy) == record


class _ListingPortal:
    """A HubSpot-like destination whose change read lists every company when that is cheaper
    (as ``HubSpotDestination`` does past a large write), told the snapshot's size."""

    name = "hubspot"

    def __init__(self, records: list[CrmRecord]) -> None:
        self.records = records
        self.known: list[int | None] = []
        self.last_read_path: object = None

    def crm_identity(self) -> str:
        return "hubspot:1"

    def read_records(self, mapping: object) -> Iterator[CrmRecord]:
        return iter(self.records)

    def read_deleted_since(self, mapping: object, since: datetime, until: datetime) -> list[str]:
        return []

    def read_records_modified_since(
        self, mapping: object, since: datetime, *, known_records: int | None = None
    ) -> Iterator[CrmRecord]:
        self.known.append(known_records)
        self.last_read_path = type("Estimate", (), {"path": "list"})()
        return iter(self.records)


def test_a_change_read_that_listed_every_record_replaces_the_snapshot(
    store: SqlStateStore, settings
) -> None:
    mapping = settings.destinations["hubspot"].mapping
    records = [CrmRecord(f"9{i:03d}", (f"c{i}.io",), {}) for i in range(5)]
    portal = _ListingPortal(records)
    snap = SnapshottingDestination(portal, store.engine, store)  # type: ignore[arg-type]
    assert len(list(snap.read_records(mapping))) == 5 and snap.last_read["mode"] == "full"

    portal.records = records[1:]  # one company gone without a trace in the archive
    after = {r.id for r in snap.read_records(mapping)}

    assert portal.known == [5]  # told how many companies the snapshot holds
    assert snap.last_read["mode"] == "incremental" and snap.last_read["path"] == "list"
    assert after == {r.id for r in records[1:]} == {r.id for r in snap._load()}
