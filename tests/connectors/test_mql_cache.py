"""The HubSpot MQL cache: incremental MQL reads against the sandbox, with the real client.

hubspot-api-client talks to the sandbox over loopback; the client's pacing and backoff, the
sandbox's rate-limit windows and its clock (record stamps, the search index's lag) and the
cache's watermark share one fake clock, so no test sleeps. Each read builds a new destination,
as each run is a new process (the portal's identity is asked once per destination).

HubSpot's search lags writes ("It may take a few moments for newly created or updated CRM
objects to appear in search results"): a read is compared with a full read once the lag has
passed. Search limits: "The maximum number of filter groups increased to five", "up to
twenty-five filters in a single search query", "Up to ten filters can now be specified within
each filter group" (HubSpot developer changelog, August 2024); the sandbox refuses more.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from structlog.testing import capture_logs

from connectors.hubspot import HubSpotDestination
from connectors.hubspot_leads import (
    CONTACT_SOURCE,
    MqlChanges,
    MqlDefinition,
    changed_mql_filter_groups,
    departed_mql_filter_groups,
    read_hubspot_mqls,
)
from connectors.leads import HubSpotMqls
from connectors.mql_cache import MqlCache, RefreshPolicy, changes_to_apply, full_read_reason
from connectors.state import SqlStateStore
from pls_sync.bootstrap import add_lead_adapters
from pls_sync.config import load_settings
from pls_sync.demo_companies import demo_companies
from pls_sync.errors import AuthError, PlsSyncError
from pls_sync.sandbox.server import Sandbox
from pls_sync.service import Adapters
from tests.connectors.test_hubspot import http
from tests.connectors.test_hubspot_leads import create_mql_property
from tests.fakes import FakeTime, FakeUsage

REPO = Path(__file__).resolve().parents[2]
MQL = "marketingqualifiedlead"
ENTERED = "hs_lifecyclestage_marketingqualifiedlead_date"
POLICY = RefreshPolicy(max_age=timedelta(days=7), skew=timedelta(seconds=60))


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def box(clock: FakeTime) -> Iterator[Sandbox]:
    sandbox = Sandbox(port=0, seed=7, companies=demo_companies(7, 60)).start()
    assert sandbox.hubspot is not None
    sandbox.hubspot.clock = clock
    sandbox.hubspot.limiter.monotonic = clock
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(
    params=["sqlite", "sqlite-portable", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MqlCache]:
    """The cache in a state store on SQLite (native upserts, and the delete-then-insert
    fallback other dialects take) and on PostgreSQL, in a fresh schema dropped afterwards."""
    if request.param != "postgres":
        store = SqlStateStore.open(f"sqlite:///{tmp_path / 'state.sqlite'}")
        made = MqlCache(store.engine, store)
        made.native_upsert = request.param == "sqlite"
        yield made
        store.close()
        return
    server = os.environ.get("PLS_SYNC_TEST_POSTGRES_URL")
    if not server:
        pytest.skip("PLS_SYNC_TEST_POSTGRES_URL is not set")
    schema = f"pls_mql_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(server, connect_args={"options": f"-csearch_path={schema}"})
    store = SqlStateStore.open(server, engine=engine)
    try:
        yield MqlCache(store.engine, store)
    finally:
        store.close()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def destination(box: Sandbox, clock: FakeTime) -> HubSpotDestination:
    return HubSpotDestination(box.hubspot_token, base_url=box.url, sleep=clock.sleep, clock=clock)


def reader(
    box: Sandbox,
    clock: FakeTime,
    cache: MqlCache,
    policy: RefreshPolicy = POLICY,
    *,
    lifecycle_stage: str = MQL,
    mql_property: str | None = None,
    mql_value: str = "true",
) -> HubSpotMqls:
    """The MQL source a run builds: a new destination, the cache, the clock as the CRM's."""
    return HubSpotMqls(
        destination(box, clock),
        lifecycle_stage,
        mql_property,
        mql_value=mql_value,
        cache=cache,
        policy=policy,
        clock=lambda: datetime.fromtimestamp(clock(), UTC),
    )


def full_read(box: Sandbox, clock: FakeTime, **definition: Any) -> set[tuple[str, str, str]]:
    return set(read_hubspot_mqls(destination(box, clock), **definition))


def update(box: Sandbox, contact_id: str, **properties: str) -> None:
    http(box, "PATCH", f"/crm/v3/objects/contacts/{contact_id}", {"properties": properties})


def create(box: Sandbox, **properties: str) -> str:
    return str(http(box, "POST", "/crm/v3/objects/contacts", {"properties": properties})["id"])


def contacts(box: Sandbox) -> dict[str, dict[str, str]]:
    assert box.hubspot is not None
    return {key: r["properties"] for key, r in box.hubspot.objects["contacts"].items()}


def at_stage(box: Sandbox, stage: str) -> list[str]:
    return [key for key, props in contacts(box).items() if props.get("lifecyclestage") == stage]


def past_the_lag(box: Sandbox, clock: FakeTime) -> None:
    assert box.hubspot is not None
    clock.sleep(box.hubspot.search_lag_seconds + 1)


def add_mql_contacts(box: Sandbox, count: int) -> None:
    """MQL contacts straight into the portal (hundreds in milliseconds), indexed at once."""
    api = box.hubspot
    assert api is not None
    for n in range(count):
        record = api._new_record("contacts", {}, created=datetime(2025, 1, 1, tzinfo=UTC))
        record["properties"].update(
            {"email": f"bulk{n}@bulk{n % 7}.io", "lifecyclestage": MQL, ENTERED: "2025-01-01"}
        )


# --------------------------------------------------------------------------- steady state


def test_the_steady_state_reads_two_search_pages_and_the_archive(
    box: Sandbox, clock: FakeTime, cache: MqlCache
) -> None:
    add_mql_contacts(box, 1_000)
    first = reader(box, clock, cache)
    full = list(first.read_mqls())
    assert first.last_read["mode"] == "full" and first.last_read["reason"] == "no cache"
    assert first.last_read["pages"] == -(-len(full) // 200) >= 6
    assert set(full) == full_read(box, clock)

    clock.sleep(600)
    box.reset_counts()
    again = reader(box, clock, cache)
    assert list(again.read_mqls()) == full
    assert again.last_read == {
        "mode": "incremental",
        "since": again.last_read["since"],
        "pages": 2,
        "list_pages": 1,
        "changed": 0,
        "dropped": 0,
        "mqls": len(full),
        "crm": again.last_read["crm"],
    }
    counts = box.counts()
    assert counts["hs.contacts.search"] == 2 and counts["hs.contacts.list"] == 1
    assert counts.get("hs.account_info.details") == 1


def test_changes_reach_the_cache_and_match_a_full_read(
    box: Sandbox, clock: FakeTime, cache: MqlCache
) -> None:
    list(reader(box, clock, cache).read_mqls())
    mqls = at_stage(box, MQL)
    others = at_stage(box, "lead")
    clock.sleep(600)

    update(box, mqls[0], lifecyclestage="salesqualifiedlead")  # moves on
    update(box, mqls[1], email="renamed@elsewhere.example")  # email change
    update(box, mqls[2], email="")  # email removed
    update(box, mqls[3], lifecyclestage="")  # stage cleared, then set back
    update(box, mqls[3], lifecyclestage="lead")
    http(box, "DELETE", f"/crm/v3/objects/contacts/{mqls[4]}")  # archived
    merged = http(
        box,
        "POST",
        "/crm/v3/objects/contacts/merge",
        {"primaryObjectId": mqls[5], "objectIdToMerge": others[0]},
    )["id"]
    update(box, others[1], lifecyclestage=MQL)  # becomes an MQL
    created = create(box, email="new@newco.example", lifecyclestage=MQL)
    past_the_lag(box, clock)

    read = reader(box, clock, cache)
    got = set(read.read_mqls())

    assert got == full_read(box, clock)
    ids = {contact_id for _, contact_id, _ in got}
    assert not ids & {mqls[0], mqls[2], mqls[3], mqls[4], mqls[5], others[0]}
    assert {merged, others[1], created, mqls[1]} <= ids
    assert (CONTACT_SOURCE, mqls[1], "renamed@elsewhere.example") in got
    assert read.last_read["mode"] == "incremental"
    assert read.last_read["changed"] == 4  # renamed, merged, others[1], created
    assert read.last_read["dropped"] == 5  # mqls 0, 2, 3, 4, 5 (others[0] was no MQL)
    assert cache.load() == {contact_id: email for _, contact_id, email in got}


def test_the_property_path_drops_a_contact_whose_property_moved_off_the_value(
    box: Sandbox, clock: FakeTime, cache: MqlCache
) -> None:
    create_mql_property(box)
    flagged = at_stage(box, "lead")[:3]
    for contact_id in flagged:
        update(box, contact_id, pqa_mql="true")
    past_the_lag(box, clock)
    definition: dict[str, Any] = {"mql_property": "pqa_mql", "mql_value": "true"}
    list(reader(box, clock, cache, **definition).read_mqls())
    assert set(flagged) <= set(cache.load())
    clock.sleep(600)

    update(box, flagged[0], pqa_mql="false")
    update(box, flagged[1], lifecyclestage=MQL, pqa_mql="false")  # still one by its stage
    past_the_lag(box, clock)
    box.hubspot.searches.clear()
    read = reader(box, clock, cache, **definition)
    got = set(read.read_mqls())

    assert got == full_read(box, clock, **definition)
    assert flagged[0] not in cache.load() and {flagged[1], flagged[2]} <= set(cache.load())
    departed = box.hubspot.searches[0][1]["filterGroups"]
    assert len(departed) == 5 and sum(len(g["filters"]) for g in departed) == 18


def test_a_cleared_property_is_not_seen_until_the_next_full_read(
    box: Sandbox, clock: FakeTime, cache: MqlCache
) -> None:
    """The documented blind spot, bounded by the full read every ``max_age``."""
    create_mql_property(box)
    only_by_property = at_stage(box, "lead")[0]
    update(box, only_by_property, pqa_mql="true")
    past_the_lag(box, clock)
    definition: dict[str, Any] = {"mql_property": "pqa_mql", "mql_value": "true"}
    policy = RefreshPolicy(max_age=timedelta(hours=1), skew=timedelta(seconds=60))
    list(reader(box, clock, cache, policy, **definition).read_mqls())
    clock.sleep(60)
    update(box, only_by_property, pqa_mql="")
    past_the_lag(box, clock)

    assert only_by_property in {
        i for _, i, _ in reader(box, clock, cache, policy, **definition).read_mqls()
    }
    clock.sleep(3_600)
    late = reader(box, clock, cache, policy, **definition)
    got = set(late.read_mqls())
    assert late.last_read["reason"] == "cache older than the maximum age"
    assert got == full_read(box, clock, **definition)
    assert only_by_property not in {contact_id for _, contact_id, _ in got}


def test_without_a_cache_every_read_is_full_and_says_so(box: Sandbox, clock: FakeTime) -> None:
    source = HubSpotMqls(destination(box, clock), MQL, None)
    with capture_logs() as logs:
        got = list(source.read_mqls())
    assert set(got) == full_read(box, clock) and got
    expected = {
        "mode": "full",
        "reason": "no MQL cache",
        "pages": 1,
        "list_pages": 0,
        "mqls": len(got),
    }
    assert source.last_read == expected
    assert [entry for entry in logs if entry["event"] == "hubspot_mqls_read"] == [
        {**expected, "event": "hubspot_mqls_read", "log_level": "info"}
    ]


# --------------------------------------------------------------------------- full reads


def test_a_full_read_on_another_portal_a_new_definition_age_and_demand(
    box: Sandbox, clock: FakeTime, cache: MqlCache
) -> None:

    def read(policy: RefreshPolicy = POLICY, **definition: Any) -> dict[str, Any]:
        clock.sleep(60)
        mqls = reader(box, clock, cache, policy, **definition)
        list(mqls.read_mqls())
        return mqls.last_read

    assert read()["reason"] == "no cache"
    assert read()["mode"] == "incremental"
    portal = box.hubspot.change_identity()
    another = read()
    assert another["mode"] == "full" and another["crm"] == f"hubspot:{portal}"
    assert another["reason"].startswith("another portal: the cache is of hubspot:")
    assert read()["mode"] == "incremental"
    assert read(lifecycle_stage="salesqualifiedlead")["reason"] == "MQL definition changed"
    assert read(lifecycle_stage="salesqualifiedlead")["mode"] == "incremental"
    assert read()["reason"] == "MQL definition changed"
    clock.sleep(POLICY.max_age.total_seconds())
    assert read()["reason"] == "cache older than the maximum age"
    forced = RefreshPolicy(max_age=POLICY.max_age, skew=POLICY.skew, force_full=True)
    assert read(forced)["reason"] == "requested"
    assert read()["mode"] == "incremental"


def test_a_custom_lifecycle_stage_is_always_read_in_full(
    box: Sandbox, clock: FakeTime, cache: MqlCache
) -> None:
    for _ in range(2):
        mqls = reader(box, clock, cache, lifecycle_stage="1234567")
        assert list(mqls.read_mqls()) == []
    assert mqls.last_read["mode"] == "full"
    assert "no 'Became a ... Date'" in mqls.last_read["reason"]


def test_a_read_that_fails_midway_leaves_the_cache_and_its_watermark(
    box: Sandbox, clock: FakeTime, cache: MqlCache
) -> None:
    before = list(reader(box, clock, cache).read_mqls())
    meta, rows = cache.meta(), cache.load()
    clock.sleep(600)
    moved = at_stage(box, MQL)[0]
    update(box, moved, lifecyclestage="customer")
    past_the_lag(box, clock)

    # Both searches answer; the archive list is refused: the read fails after them.
    box.reset_counts()
    box.faults.add("invalid_session", endpoint="hs.contacts.list", times=1)
    with pytest.raises(AuthError):
        reader(box, clock, cache).read_mqls()
    assert cache.meta() == meta and cache.load() == rows
    assert box.counts()["hs.contacts.search"] == 2

    retried = reader(box, clock, cache)
    after = list(retried.read_mqls())
    assert (
        retried.last_read["since"]
        == (datetime.fromisoformat(meta["watermark"]) - POLICY.skew).isoformat()
    )
    assert [m for m in before if m[1] != moved] == after


def test_a_stale_search_is_repaired_by_the_skew_once_the_lag_has_passed(
    box: Sandbox, clock: FakeTime, cache: MqlCache
) -> None:
    list(reader(box, clock, cache).read_mqls())
    clock.sleep(600)
    moved = at_stage(box, MQL)[0]
    update(box, moved, lifecyclestage="opportunity")
    clock.sleep(1)  # within the lag: the search still shows it as an MQL

    stale = {i for _, i, _ in reader(box, clock, cache).read_mqls()}
    assert moved in stale
    past_the_lag(box, clock)
    assert set(reader(box, clock, cache).read_mqls()) == full_read(box, clock)
    assert moved not in cache.load()


# --------------------------------------------------------------------------- the sandbox


def test_the_sandbox_stamps_when_a_contact_became_an_mql_and_keeps_it(
    box: Sandbox, clock: FakeTime
) -> None:
    contact = create(box, email="stamp@dates.example", lifecyclestage="lead")
    assert "hs_lifecyclestage_lead_date" in contacts(box)[contact]
    assert ENTERED not in contacts(box)[contact]
    clock.sleep(10)
    update(box, contact, lifecyclestage=MQL)
    entered = contacts(box)[contact][ENTERED]
    for stage in ("customer", "", "lead", MQL):  # moves on, is set back, qualifies again
        clock.sleep(10)
        update(box, contact, lifecyclestage=stage)
        assert contacts(box)[contact][ENTERED] == entered

    definition = http(box, "GET", f"/crm/v3/properties/contacts/{ENTERED}")
    assert definition["type"] == "datetime"
    assert definition["modificationMetadata"]["readOnlyValue"] is True
    with pytest.raises(urllib.error.HTTPError) as refused:
        update(box, contact, **{ENTERED: "2020-01-01T00:00:00Z"})
    assert refused.value.code == 400


# --------------------------------------------------------------------------- pieces


def test_every_query_stays_within_hubspots_search_limits() -> None:
    for definition in (
        MqlDefinition(),
        MqlDefinition(mql_property="pqa_mql", mql_value="true"),
    ):
        for build in (changed_mql_filter_groups, departed_mql_filter_groups):
            groups = build(definition, 1_790_000_000_000, after_id="12345")
            sizes = [len(group.filters) for group in groups]
            assert len(groups) <= 5 and max(sizes) <= 10 and sum(sizes) <= 25
            assert all(
                group.filters[-1].to_dict()
                == {"property_name": "hs_object_id", "operator": "GT", "value": "12345"}
                | {"high_value": None, "values": None}
                for group in groups
            )


def test_changes_apply_later_reads_over_earlier_ones_and_the_archive_over_search() -> None:
    cached = {"1": "a@x.io", "2": "b@x.io", "3": "c@x.io", "4": "d@x.io", "5": "e@x.io"}
    changes = MqlChanges(
        qualifying={"2": "b@x.io", "3": "new@x.io", "4": None, "5": "e@x.io", "6": "f@x.io"},
        departed={"1", "2", "9"},
        gone={"5", "7"},
    )
    upserts, drops = changes_to_apply(cached, changes)
    assert upserts == {"3": "new@x.io", "6": "f@x.io"}
    assert drops == ["1", "4", "5"]


def test_the_meta_decides_the_reason_for_a_full_read() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    definition = MqlDefinition()
    meta = {
        "identity": "hubspot:1",
        "fingerprint": definition.fingerprint(),
        "full_at": (now - timedelta(hours=1)).isoformat(),
        "watermark": (now - timedelta(minutes=5)).isoformat(),
    }

    def reason(changed: dict[str, Any], policy: RefreshPolicy = POLICY) -> str | None:
        return full_read_reason(
            {**meta, **changed}, identity="hubspot:1", definition=definition, now=now, policy=policy
        )

    assert reason({}) is None
    assert reason({"watermark": "not a time"}) == "no cache"
    assert reason({"identity": None}) == "another portal: the cache is of None, this is hubspot:1"
    assert reason({"fingerprint": "old"}) == "MQL definition changed"
    long_ago = (now - timedelta(days=91)).isoformat()
    patient = RefreshPolicy(max_age=timedelta(days=365))
    assert reason({"full_at": long_ago, "watermark": long_ago}, patient) == (
        "last read older than the 90 days HubSpot keeps deleted contacts"
    )


def test_a_broken_state_store_is_one_clear_error(tmp_path: Path) -> None:
    store = SqlStateStore.open(f"sqlite:///{tmp_path / 'state.sqlite'}")
    cache = MqlCache(store.engine, store)
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE mql_cache"))
    with pytest.raises(PlsSyncError, match="state store: read the MQL cache failed: no such table"):
        cache.load()


def test_the_bootstrap_reads_hubspot_mqls_through_the_cache_with_the_snapshot_settings(
    tmp_path: Path,
) -> None:
    settings = load_settings(REPO / "config" / "pls_sync.yaml")
    snapshot = settings.crm_snapshot
    store = SqlStateStore.open(f"sqlite:///{tmp_path / 'state.sqlite'}")
    adapters = Adapters(usage=FakeUsage([]), state=store)
    wrapped = SimpleNamespace(force_full=True)  # the snapshot, under --full-refresh

    def source(**options: Any) -> HubSpotMqls:
        add_lead_adapters(
            adapters, "hubspot", wrapped, options.pop("settings", settings), **options
        )
        built = adapters.mql_sources["hubspot"]
        assert isinstance(built, HubSpotMqls)
        return built

    forced = source()
    assert isinstance(forced.cache, MqlCache)
    assert forced.policy == RefreshPolicy(
        max_age=timedelta(hours=snapshot.full_refresh_hours),
        skew=timedelta(seconds=snapshot.skew_seconds),
        force_full=True,
    )
    assert source(full_refresh=False).policy.force_full is False
    off = replace(settings, crm_snapshot=replace(snapshot, enabled=False))
    assert source(settings=off).cache is None
    store.close()
