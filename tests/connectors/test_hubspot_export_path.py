"""A large HubSpot change read through one export, priced by the speed the last export had.

The estimate (``estimate_read_paths``) is tested as arithmetic; the path end to end with the real
hubspot-api-client against the sandbox's exports emulation, one fake clock running the
connector's pacing and polling and the sandbox's stamps and export lifecycle.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from connectors.crm_snapshot import SnapshottingDestination
from connectors.hubspot import (
    EXPORT_OVERHEAD_SECONDS,
    HubSpotDestination,
    estimate_read_paths,
)
from connectors.hubspot_export import ExportRun, ExportSpeed, poll_schedule
from connectors.state import SqlStateStore
from pls_sync.demo_companies import demo_companies
from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.models import CrmRecord, RecordChange, WriteResult
from pls_sync.sandbox.server import Sandbox
from tests.connectors.test_hubspot_export import count, destination
from tests.fakes import FakeTime

COMPANIES = 600
THRESHOLD = 50
# Slow bursts make the list (6 pages) and the change search (3 pages) cost tens of seconds.
BURST = 2
SNAPSHOT_KEY = "crm_snapshot:hubspot"
MAPPING = DestinationMapping(
    destination="hubspot",
    object="companies",
    match=MatchRule(domain_fields=("domain", "hs_additional_domains")),
    fields=(FieldMapping("pqa_score", "score"), FieldMapping("pqa_tier", "tier")),
    firmographics={"employees": "numberofemployees"},
)

# --------------------------------------------------------------------------- the estimate

# The change_1pct run's shape: 76,000 companies modified, searched 200 a page at 4 a second.
MANY = 76_000


def test_without_a_measured_rate_there_is_no_export_leg() -> None:
    estimate = estimate_read_paths(MANY, MANY, requests_per_10s=100)
    assert estimate.export_calls is None and estimate.export_seconds is None
    assert estimate.path == "list"  # 760 pages in bursts: 70 s, against 380 searches' 94.75 s
    assert (estimate.search_seconds, estimate.list_seconds) == (94.75, 70.0)


def test_a_fast_measured_rate_and_many_modified_read_by_export() -> None:
    estimate = estimate_read_paths(
        MANY, MANY, requests_per_10s=100, export_rows_per_second=4_000, export_overhead_seconds=5
    )
    # 24 s (5 + 76,000 / 4,000), seen at the poll after it: the 7th, 32.17 s after the start.
    assert poll_schedule(24.0) == (7, pytest.approx(32.171875))
    assert (estimate.export_calls, estimate.export_seconds) == (9, 32.172)
    assert estimate.path == "export"


def test_few_modified_keep_the_search_even_with_a_fast_export() -> None:
    estimate = estimate_read_paths(
        300, MANY, requests_per_10s=100, export_rows_per_second=4_000, export_overhead_seconds=5
    )
    assert (estimate.search_calls, estimate.search_seconds) == (2, 0.25)
    assert estimate.path == "search"


def test_round_trips_and_the_documented_overhead_price_an_unmeasured_fixed_part() -> None:
    estimate = estimate_read_paths(
        MANY, MANY, requests_per_10s=100, seconds_per_request=0.5, export_rows_per_second=4_000
    )
    polls, waited = poll_schedule(EXPORT_OVERHEAD_SECONDS + 19.0)
    assert estimate.export_calls == 2 + polls
    assert estimate.export_seconds == round(waited + (2 + polls) * 0.5, 3)


@pytest.mark.parametrize(("remaining", "path"), [(8, "search"), (9, "export"), (None, "export")])
def test_the_export_runs_only_when_its_calls_fit_the_daily_allowance(
    remaining: int | None, path: str
) -> None:
    estimate = estimate_read_paths(
        MANY,
        MANY,
        requests_per_10s=100,
        export_rows_per_second=4_000,
        export_overhead_seconds=5,
        daily_remaining=remaining,
    )
    assert estimate.export_calls == 9 and estimate.path == path


@pytest.mark.parametrize("rate", [0.0, -1.0, float("inf"), float("nan")])
def test_a_rate_that_is_no_speed_prices_no_export(rate: float) -> None:
    estimate = estimate_read_paths(MANY, MANY, requests_per_10s=100, export_rows_per_second=rate)
    assert estimate.export_seconds is None and estimate.path == "list"


def test_an_export_run_measures_its_rate_from_hubspots_stamps_and_its_overhead_from_the_wait() -> (
    None
):
    run = ExportRun(rows=600, waited=4.75)
    run.processing = {
        "requestedAt": "2026-11-22T10:00:00.000Z",
        "startedAt": "2026-11-22T10:00:01.000Z",
        "completedAt": "2026-11-22T10:00:04.000Z",
    }
    assert run.speed() == ExportSpeed(rows_per_second=200.0, overhead_seconds=1.0)
    assert ExportRun(rows=600, waited=3.0).speed() == ExportSpeed(200.0, None)  # no stamps
    assert ExportRun(rows=0, waited=3.0).speed() is None


# --------------------------------------------------------------------------- end to end


def listed(box: Sandbox, clock: FakeTime) -> dict[str, CrmRecord]:
    """Every company as a fresh full list read sees it."""
    return {r.id: r for r in destination(box, clock).read_records(MAPPING)}


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def box(clock: FakeTime) -> Iterator[Sandbox]:
    sandbox = Sandbox(port=0, seed=7, companies=demo_companies(7, COMPANIES)).start()
    sandbox.set_clock(lambda: datetime.fromtimestamp(clock(), UTC))
    assert sandbox.hubspot is not None
    sandbox.hubspot.limiter.monotonic = clock
    sandbox.hubspot.exports.pending_seconds = 1.0
    sandbox.hubspot.exports.rows_per_second = 1_000.0
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def store(tmp_path: Path) -> SqlStateStore:
    return SqlStateStore.open(f"sqlite:///{tmp_path / 'state.sqlite'}")


def _snapshot(box: Sandbox, clock: FakeTime, store: SqlStateStore) -> SnapshottingDestination:
    dest = destination(box, clock, export_threshold=THRESHOLD, requests_per_10s=BURST)
    return SnapshottingDestination(
        dest, store.engine, store, clock=lambda: datetime.fromtimestamp(clock(), UTC)
    )


def _modify(box: Sandbox, clock: FakeTime, ids: list[str], tier: str) -> None:
    """Write ``tier`` into every company of ``ids`` (a large write), then pass the search lag."""
    writer = destination(box, clock)
    changes = [RecordChange(i, {"pqa_tier": tier}, f"{i}.example") for i in ids]
    assert writer.write("companies", changes, writer.describe("companies")).written == ids
    clock.sleep(120)


def _full_read_by_export(
    box: Sandbox, clock: FakeTime, store: SqlStateStore
) -> tuple[SnapshottingDestination, HubSpotDestination]:
    snap = _snapshot(box, clock, store)
    inner = snap.inner
    assert isinstance(inner, HubSpotDestination)
    list(snap.read_records(MAPPING))
    assert snap.last_read["mode"] == "full" and inner.last_full_read["path"] == "export"
    return snap, inner


def test_a_full_read_by_export_keeps_the_measured_speed_in_the_snapshot_meta(
    box: Sandbox, clock: FakeTime, store: SqlStateStore
) -> None:
    _full_read_by_export(box, clock, store)
    meta = store.get_value(SNAPSHOT_KEY)
    # As HubSpot stamped it: 1 s PENDING, then 1,000 rows a second.
    assert meta["export_rows_per_second"] == pytest.approx(1_000.0)
    assert meta["export_overhead_seconds"] == pytest.approx(1.0)


def test_a_large_change_is_read_by_one_export_and_the_snapshot_equals_a_full_list(
    box: Sandbox, clock: FakeTime, store: SqlStateStore
) -> None:
    _full_read_by_export(box, clock, store)
    assert box.hubspot is not None
    _modify(box, clock, box.hubspot.ids("companies"), "sales")
    box.reset_counts()
    snap = _snapshot(box, clock, store)  # the next run
    with capture_logs() as logs:
        records = {r.id: r for r in snap.read_records(MAPPING)}
    chosen = next(e for e in logs if e["event"] == "hubspot_read_path")
    assert chosen["path"] == "export" and chosen["modified"] == len(box.hubspot.ids("companies"))
    assert chosen["export_seconds"] < min(chosen["list_seconds"], chosen["search_seconds"])
    assert snap.last_read["mode"] == "incremental" and snap.last_read["path"] == "export"
    assert count(box, "hs.exports.start") == count(box, "hs.exports.download") == 1
    assert count(box, "hs.companies.list") == 1  # the archived list, for the deletions
    # The first change page (for its total) and the merged-away lookup, none of the other pages.
    searches = count(box, "hs.companies.search")
    assert searches <= 2
    assert records == listed(box, clock) == {r.id: r for r in snap._load()}
    assert {r.fields["pqa_tier"] for r in records.values()} == {"sales"}


def test_a_small_change_keeps_the_search(
    box: Sandbox, clock: FakeTime, store: SqlStateStore
) -> None:
    _full_read_by_export(box, clock, store)
    assert box.hubspot is not None
    _modify(box, clock, box.hubspot.ids("companies")[:3], "sales")
    box.reset_counts()
    snap = _snapshot(box, clock, store)
    records = {r.id: r for r in snap.read_records(MAPPING)}
    assert snap.last_read["path"] == "changes" and snap.last_read["changed"] == 3
    assert count(box, "hs.exports.start") == 0
    assert count(box, "hs.companies.list") == 1  # the archived list, for the deletions
    assert records == listed(box, clock)


def test_a_failing_export_on_the_change_path_lists_instead_and_converges(
    box: Sandbox, clock: FakeTime, store: SqlStateStore
) -> None:
    _full_read_by_export(box, clock, store)
    measured = store.get_value(SNAPSHOT_KEY)["export_rows_per_second"]
    assert box.hubspot is not None
    ids = box.hubspot.ids("companies")
    _modify(box, clock, ids, "success")
    box.hubspot.archive("companies", ids[:2])
    box.hubspot.exports.cancel_next = "Export failed"
    box.reset_counts()
    snap = _snapshot(box, clock, store)
    with capture_logs() as logs:
        records = {r.id: r for r in snap.read_records(MAPPING)}
    fallback = next(e for e in logs if e["event"] == "hubspot_export_fallback")
    assert fallback["reason"] == "EXPORT_CANCELED"
    assert snap.last_read["path"] == "export" and count(box, "hs.companies.list") > 1
    assert records == listed(box, clock) == {r.id: r for r in snap._load()}
    assert ids[0] not in records and len(records) == len(ids) - 2
    # Nothing measured by the failed export: the last good speed prices the next read.
    assert store.get_value(SNAPSHOT_KEY)["export_rows_per_second"] == measured


def test_without_exports_the_change_path_never_exports(
    box: Sandbox, clock: FakeTime, store: SqlStateStore
) -> None:
    _full_read_by_export(box, clock, store)
    assert box.hubspot is not None
    _modify(box, clock, box.hubspot.ids("companies"), "sales")
    box.reset_counts()
    dest = destination(box, clock, requests_per_10s=BURST)  # exports off
    snap = SnapshottingDestination(
        dest, store.engine, store, clock=lambda: datetime.fromtimestamp(clock(), UTC)
    )
    list(snap.read_records(MAPPING))
    assert dest.last_read_path is not None and dest.last_read_path.export_seconds is None
    assert count(box, "hs.exports.start") == 0


# --------------------------------------------------------------------------- the meta


class _Portal:
    """A HubSpot-like destination that measured an export on its full reads."""

    name = "hubspot"

    def __init__(self, identity: str, speed: ExportSpeed | None) -> None:
        self.identity = identity
        self.last_export_speed = speed
        self.seen: list[dict[str, Any]] = []
        self.last_read_path: object = None

    def crm_identity(self) -> str:
        return self.identity

    def read_records(self, mapping: object) -> Iterator[CrmRecord]:
        return iter([CrmRecord("1", ("a.io",), {})])

    def read_deleted_since(self, mapping: object, since: datetime, until: datetime) -> list[str]:
        return []

    def read_records_modified_since(
        self,
        mapping: object,
        since: datetime,
        *,
        known_records: int | None = None,
        export_rows_per_second: float | None = None,
        export_overhead_seconds: float | None = None,
    ) -> Iterator[CrmRecord]:
        self.seen.append({"rate": export_rows_per_second, "overhead": export_overhead_seconds})
        return iter(())


def test_the_speed_is_passed_to_change_reads_and_dropped_for_another_portal(
    store: SqlStateStore,
) -> None:
    portal = _Portal("hubspot:1", ExportSpeed(2_000.0, 3.0))
    snap = SnapshottingDestination(portal, store.engine, store)  # type: ignore[arg-type]
    list(snap.read_records(MAPPING))
    portal.last_export_speed = None  # a later read that did not export measures nothing
    list(snap.read_records(MAPPING))
    assert portal.seen == [{"rate": 2_000.0, "overhead": 3.0}]

    portal.identity = "hubspot:2"  # another portal: a full read, its own (unmeasured) speed
    list(snap.read_records(MAPPING))
    assert snap.last_read["mode"] == "full"
    assert "export_rows_per_second" not in store.get_value(SNAPSHOT_KEY)
    list(snap.read_records(MAPPING))
    assert portal.seen[-1] == {"rate": None, "overhead": None}


class _LaggingPortal(_Portal):
    """A portal whose whole reads (an export) show the records as the search index has them:
    a write not indexed yet is not in them."""

    change_reads_lag = True

    def __init__(self) -> None:
        super().__init__("hubspot:1", None)
        old = datetime(2026, 11, 1, tzinfo=UTC)
        self.indexed = {
            i: CrmRecord(i, (f"{i}.io",), {"pqa_tier": "self_serve"}, None, old)
            for i in ("1", "2", "3")
        }

    def read_records(self, mapping: object) -> Iterator[CrmRecord]:
        return iter(self.indexed.values())

    def read_records_modified_since(
        self,
        mapping: object,
        since: datetime,
        *,
        known_records: int | None = None,
        export_rows_per_second: float | None = None,
        export_overhead_seconds: float | None = None,
    ) -> Iterator[CrmRecord]:
        self.last_read_path = types.SimpleNamespace(path="export")
        return iter(self.indexed.values())  # every live record, whole, as indexed

    def write(self, object_name: str, changes: Any, specs: Any, **_: Any) -> WriteResult:
        ids = [c.record_id for c in changes]
        return WriteResult(written=ids, server_time=datetime(2026, 12, 5, 9, 0, tzinfo=UTC))


def test_a_whole_read_within_the_search_lag_keeps_what_the_snapshot_wrote(
    store: SqlStateStore,
) -> None:
    """An export shows the records as HubSpot's search index had them: a write seconds before
    it is not in the file yet. The snapshot keeps its own copy of those records: not the
    stale one (the next plan would write them again), and not none (a live record would
    leave the CRM picture)."""
    portal = _LaggingPortal()
    snap = SnapshottingDestination(portal, store.engine, store)  # type: ignore[arg-type]
    list(snap.read_records(MAPPING))
    written = snap.write("companies", [RecordChange("2", {"pqa_tier": "sales"}, "2.io")], {})
    assert written.written == ["2"]
    records = {r.id: r for r in snap.read_records(MAPPING)}  # by export, "2" not indexed yet
    assert snap.last_read["path"] == "export"
    assert set(records) == {"1", "2", "3"}
    assert records["2"].fields["pqa_tier"] == "sales"
    assert records["1"].fields["pqa_tier"] == "self_serve"
    assert {r.id: r.fields["pqa_tier"] for r in snap._load()} == {
        "1": "self_serve",
        "2": "sales",
        "3": "self_serve",
    }
