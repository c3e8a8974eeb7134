"""The portal's identity and the companies gone from it, read by the real client from the sandbox.

hubspot-api-client talks to the sandbox (``tests/conftest.py``) over loopback. Pacing and backoff
share one fake clock with the sandbox's rate-limit window; the sandbox's record stamps and the
connector's "now" come from a fixed wall clock, so nothing depends on today's date.

HubSpot behaviour relied on (see also tests/sandbox/test_hubspot_api.py):
* ``GET /account-info/v3/details`` answers the account's integer ``portalId``:
  https://developers.hubspot.com/docs/api-reference/latest/account/account-information/get-account-details
* ``GET /crm/v3/objects/companies?archived=true``: "Whether to return only results that have
  been archived", results with ``archivedAt``, 100 a page; "Deleted companies can be restored
  within 90 days of deletion":
  https://developers.hubspot.com/docs/api-reference/latest/crm/objects/companies/get-companies
  https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/companies/delete-company
* a merge leaves "a new record with a new ID", which lists the merged ids in
  ``hs_merged_object_ids``:
  https://developers.hubspot.com/changelog/updated-merge-functionality-for-contacts-and-companies
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import connectors.hubspot as hubspot_connector
from connectors.hubspot import HubSpotDestination
from pls_sync.errors import AuthError, FatalError, QuotaExhaustedError
from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.sandbox.hubspot import PORTAL_ID
from tests.connectors.test_hubspot import http
from tests.fakes import FakeTime

MAPPING = DestinationMapping(
    destination="hubspot",
    object="companies",
    match=MatchRule(domain_fields=("domain", "hs_additional_domains")),
    fields=(FieldMapping("pqa_score", "score"),),
)
START = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)


class WallClock:
    """The date: stamps the sandbox's records and is the connector's "now"; moved by tests."""

    def __init__(self, start: datetime = START) -> None:
        self.moment = start

    def epoch(self) -> float:
        return self.moment.timestamp()

    def __call__(self) -> datetime:
        return self.moment


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime(1_000.0)


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


@pytest.fixture
def box(sandbox: Any, clock: FakeTime, wall: WallClock) -> Any:
    sandbox.hubspot.limiter.monotonic = clock
    sandbox.hubspot.clock = wall.epoch
    return sandbox


def destination(box: Any, clock: FakeTime, wall: WallClock, **options: Any) -> HubSpotDestination:
    return HubSpotDestination(
        box.hubspot_token,
        base_url=box.url,
        sleep=clock.sleep,
        clock=clock,
        wall_clock=wall,
        **options,
    )


def count(box: Any, endpoint: str) -> int:
    return int(box.counts().get(endpoint, 0))


def archive(box: Any, ids: Sequence[str]) -> None:
    """Archive companies through the API, 100 a request."""
    for start in range(0, len(ids), 100):
        inputs = [{"id": record_id} for record_id in ids[start : start + 100]]
        http(box, "POST", "/crm/v3/objects/companies/batch/archive", {"inputs": inputs})


def merge(box: Any, primary: str, secondary: str) -> str:
    body = {"primaryObjectId": primary, "objectIdToMerge": secondary}
    return str(http(box, "POST", "/crm/v3/objects/companies/merge", body)["id"])


def by_id(ids: Sequence[str]) -> list[str]:
    return sorted(ids, key=int)


def past_search_lag(box: Any, wall: WallClock) -> None:
    """Move the date past the sandbox's search lag: what was written is searchable now."""
    wall.moment += timedelta(seconds=box.hubspot.search_lag_seconds + 1)


# --------------------------------------------------------------------------- identity


def test_the_identity_is_the_portal_id_read_once(
    box: Any, clock: FakeTime, wall: WallClock
) -> None:
    dest = destination(box, clock, wall)
    assert dest.crm_identity() == f"hubspot:{PORTAL_ID}"
    assert dest.crm_identity() == f"hubspot:{PORTAL_ID}"
    assert count(box, "hs.account_info.details") == 1
    assert dest.api_calls() == {"read": 1, "write": 0, "describe": 0}


def test_another_portal_is_another_identity(box: Any, clock: FakeTime, wall: WallClock) -> None:
    before = destination(box, clock, wall)
    assert before.crm_identity() == f"hubspot:{PORTAL_ID}"
    # The sandbox's admin endpoint, through the server: same companies, another portal.
    details = http(
        box, "POST", "/__sandbox/hubspot/identity", {"portal_id": 777, "clear_properties": []}
    )
    assert details["portalId"] == 777
    assert destination(box, clock, wall).crm_identity() == "hubspot:777"
    assert before.crm_identity() == f"hubspot:{PORTAL_ID}"  # cached for the instance's life


def test_identity_calls_are_retried_and_translated(
    box: Any, clock: FakeTime, wall: WallClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    box.faults.add_from_json(
        {"kind": "server_error", "endpoint": "hs.account_info.details", "times": 1}
    )
    dest = destination(box, clock, wall)
    assert dest.crm_identity() == f"hubspot:{PORTAL_ID}"
    assert dest.api_calls()["read"] == 2
    wrong = HubSpotDestination(
        "pat-na1-00000000-0000-4000-8000-000000000000",
        base_url=box.url,
        sleep=clock.sleep,
        clock=clock,
    )
    with pytest.raises(AuthError) as caught:
        wrong.crm_identity()
    assert "pat-na1-0000" not in str(caught.value)
    monkeypatch.setattr(box.hubspot, "account_details", lambda: {"portalId": "24681357"})
    with pytest.raises(FatalError) as no_id:
        destination(box, clock, wall).crm_identity()
    assert no_id.value.code == "NO_PORTAL_ID"


# --------------------------------------------------------------------------- archived companies


def test_archived_companies_since_a_moment_page_the_archived_list_at_100(
    box: Any, clock: FakeTime, wall: WallClock
) -> None:
    ids = box.hubspot.ids()
    archive(box, ids[:30])  # archived before the window
    wall.moment += timedelta(hours=1)
    since = wall.moment
    archive(box, ids[30:50])
    wall.moment += timedelta(minutes=5)
    archive(box, ids[50:150])
    dest = destination(box, clock, wall)
    box.reset_counts()
    gone = dest.read_deleted_since(MAPPING, since)
    assert gone == by_id(ids[30:150])
    assert count(box, "hs.companies.list") == math.ceil(150 / 100)
    assert count(box, "hs.companies.search") == 1
    assert dest.api_calls()["read"] == 3


def test_nothing_gone_is_an_empty_list(box: Any, clock: FakeTime, wall: WallClock) -> None:
    dest = destination(box, clock, wall)
    assert dest.read_deleted_since(MAPPING, wall.moment - timedelta(days=1)) == []
    assert dest.api_calls()["read"] == 2


def test_a_window_older_than_the_recycling_bin_cannot_be_told(
    box: Any, clock: FakeTime, wall: WallClock
) -> None:
    dest = destination(box, clock, wall)
    assert dest.read_deleted_since(MAPPING, wall.moment - timedelta(days=91)) is None
    assert dest.api_calls()["read"] == 0
    naive = (wall.moment - timedelta(days=89)).replace(tzinfo=None)  # naive means UTC
    assert dest.read_deleted_since(MAPPING, naive) == []


# --------------------------------------------------------------------------- merged companies


def test_merged_ids_are_gone_and_the_company_left_is_read_as_modified(
    box: Any, clock: FakeTime, wall: WallClock
) -> None:
    ids = box.hubspot.ids()
    earlier = merge(box, ids[0], ids[1])
    wall.moment += timedelta(hours=1)
    since = wall.moment
    survivor = merge(box, ids[2], ids[3])
    again = merge(box, survivor, ids[4])  # a second merge retires the first one's new id
    past_search_lag(box, wall)
    dest = destination(box, clock, wall)
    gone = dest.read_deleted_since(MAPPING, since)
    assert gone == by_id([ids[2], ids[3], survivor, ids[4]])
    assert earlier not in gone and again not in gone
    modified = [r.id for r in dest.read_records_modified_since(MAPPING, since)]
    assert modified == [again]


def test_a_merged_company_archived_later_takes_the_merged_ids_along(
    box: Any, clock: FakeTime, wall: WallClock
) -> None:
    """No live company lists the ids merged into an archived one: the archived list must."""
    ids = box.hubspot.ids()
    since = wall.moment
    wall.moment += timedelta(minutes=1)
    survivor = merge(box, ids[0], ids[1])
    wall.moment += timedelta(minutes=1)
    archive(box, [survivor])
    gone = destination(box, clock, wall).read_deleted_since(MAPPING, since)
    assert gone == by_id([ids[0], ids[1], survivor])


def test_a_merge_that_keeps_the_primary_id_retires_the_secondary_only(
    box: Any, clock: FakeTime, wall: WallClock
) -> None:
    box.hubspot.merge_keeps_primary_id = True
    ids = box.hubspot.ids()
    since = wall.moment
    assert merge(box, ids[7], ids[8]) == ids[7]
    past_search_lag(box, wall)
    assert destination(box, clock, wall).read_deleted_since(MAPPING, since) == [ids[8]]


def test_merges_are_found_past_the_search_cap(
    box: Any, clock: FakeTime, wall: WallClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pls_sync.sandbox import hubspot as sandbox_hubspot

    monkeypatch.setattr(sandbox_hubspot, "SEARCH_RESULT_CAP", 10)
    monkeypatch.setattr(hubspot_connector, "SEARCH_RESULT_CAP", 10)
    monkeypatch.setattr(hubspot_connector, "SEARCH_PAGE_SIZE", 5)
    ids = box.hubspot.ids()
    since = wall.moment
    retired: list[str] = []
    for n in range(0, 50, 2):
        merge(box, ids[n], ids[n + 1])
        retired += [ids[n], ids[n + 1]]
    past_search_lag(box, wall)
    dest = destination(box, clock, wall)
    box.reset_counts()
    assert dest.read_deleted_since(MAPPING, since) == by_id(retired)
    # 25 companies left by merges: windows of 10 (two pages of 5): 2 + 2 + 1 pages.
    assert count(box, "hs.companies.search") == 5


# --------------------------------------------------------------------------- errors


def test_deletion_reads_stop_on_the_daily_limit(box: Any, clock: FakeTime, wall: WallClock) -> None:
    box.hubspot.exhaust_daily()
    with pytest.raises(QuotaExhaustedError):
        destination(box, clock, wall).read_deleted_since(MAPPING, wall.moment)


def test_only_companies_are_supported(box: Any, clock: FakeTime, wall: WallClock) -> None:
    contacts = DestinationMapping(
        destination="hubspot",
        object="contacts",
        match=MatchRule(domain_fields=("email",)),
        fields=(FieldMapping("pqa_score", "score"),),
    )
    with pytest.raises(FatalError) as caught:
        destination(box, clock, wall).read_deleted_since(contacts, wall.moment)
    assert caught.value.code == "UNSUPPORTED_OBJECT"
