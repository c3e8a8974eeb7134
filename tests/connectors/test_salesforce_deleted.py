"""The Salesforce connector's org identity and deleted-record reads: against the sandbox over
real HTTP, and against ``responses`` with the documented wire shapes.

- sObject Get Deleted (``GET sobjects/{sObject}/deleted/?start=&end=``; response
  ``deletedRecords [{id, deletedDate}]``, ``earliestDateAvailable``, ``latestDateCovered``):
  https://developer.salesforce.com/docs/platform/api-rest/guide/resources-getdeleted.md
  https://developer.salesforce.com/docs/platform/api-rest/guide/dome-get-deleted.md
- getDeleted() rules (start more than a minute before end, 15 days back at most, purges give
  INVALID_REPLICATION_DATE: "do a full pull of the table"):
  https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_getdeleted.htm
- merge() deletes the losers (MasterRecordId set):
  https://developer.salesforce.com/docs/platform/api/guide/sforce-api-calls-merge.html
- Organization (``SELECT Id FROM Organization``):
  https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_objects_organization.htm
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import responses
from responses import matchers
from simple_salesforce import Salesforce

from connectors.salesforce import SalesforceDestination
from pls_sync.errors import FatalError, QuotaExhaustedError
from pls_sync.mapping import DestinationMapping, MatchRule
from pls_sync.sandbox.salesforce import id18
from pls_sync.sandbox.server import Sandbox

NOW = datetime(2026, 3, 2, 10, 15, 30, tzinfo=UTC)
MAPPING = DestinationMapping(
    destination="salesforce",
    object="Account",
    match=MatchRule(domain_fields=("Website",)),
    fields=(),
)


class Clock:
    """A settable clock for the sandbox org."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def box() -> Iterator[Sandbox]:
    sandbox = Sandbox(port=0, seed=None).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def clock(box: Sandbox) -> Clock:
    fixed = Clock(NOW)
    box.salesforce.clock = fixed
    return fixed


def destination(box: Sandbox) -> SalesforceDestination:
    return SalesforceDestination.from_env(
        {"SALESFORCE_INSTANCE_URL": box.url, "SALESFORCE_SESSION_ID": box.session_id}
    )


def accounts(box: Sandbox, count: int) -> list[str]:
    return [box.salesforce.insert("Account", {"Name": f"Acct {i}"}) for i in range(count)]


def rest_delete(box: Sandbox, record_id: str) -> None:
    response = requests.delete(
        f"{box.url}/services/data/v59.0/sobjects/Account/{record_id}",
        headers={"Authorization": f"Bearer {box.session_id}"},
        timeout=5,
    )
    assert response.status_code == 204


def admin(box: Sandbox, name: str, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(f"{box.url}/__sandbox/salesforce/{name}", json=body, timeout=5)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


# --- against the sandbox ---------------------------------------------------------------------


def test_crm_identity_is_the_org_id_read_once(box: Sandbox) -> None:
    sf = destination(box)
    expected = f"salesforce:{box.salesforce.org_id}"
    assert sf.crm_identity() == expected
    assert sf.crm_identity() == expected
    assert sf.api_calls()["read"] == 1
    assert box.counts()["sf.query"] == 1
    assert box.salesforce.queries == ["SELECT Id FROM Organization"]


def test_another_org_behind_the_same_credentials_is_another_identity(box: Sandbox) -> None:
    before = destination(box).crm_identity()
    admin(box, "identity", {"org_id": "00D5g00000Refr1", "clear_fields": ["PQA_Score__c"]})
    after = destination(box).crm_identity()
    assert before == f"salesforce:{id18('00D5g00000Pls5x')}"
    assert after == f"salesforce:{id18('00D5g00000Refr1')}" != before


def test_read_deleted_since_sees_deletes_and_merge_losers(box: Sandbox, clock: Clock) -> None:
    kept, gone, master, loser, early = accounts(box, 5)
    rest_delete(box, early)
    since = clock.advance(minutes=5)
    clock.advance(minutes=1)
    rest_delete(box, gone)
    clock.advance(minutes=1)
    admin(box, "merge", {"master": master, "losers": [loser]})
    until = clock.advance(minutes=2)
    sf = destination(box)
    assert sorted(sf.read_deleted_since(MAPPING, since, until=until) or []) == sorted([gone, loser])
    assert sf.deleted_covered_until == datetime(2026, 3, 2, 10, 24, tzinfo=UTC)
    assert sf.api_calls()["read"] == 1 and box.counts()["sf.sobject.deleted"] == 1
    assert kept not in (sf.read_deleted_since(MAPPING, NOW - timedelta(hours=2), until=until) or [])


def test_a_window_shorter_than_the_api_allows_is_widened(box: Sandbox, clock: Clock) -> None:
    (gone,) = accounts(box, 1)
    rest_delete(box, gone)
    until = clock.advance(minutes=3)
    sf = destination(box)
    # since == until: the API wants start more than a minute before end; the read asks for the
    # last two minutes instead of giving up
    assert sf.read_deleted_since(MAPPING, until, until=until) == []
    assert sf.read_deleted_since(MAPPING, until + timedelta(hours=1), until=until) == []
    assert sf.read_deleted_since(MAPPING, NOW, until=until) == [gone]


def test_windows_the_org_cannot_answer_are_none(box: Sandbox, clock: Clock) -> None:
    ids = accounts(box, 3)
    for record_id in ids:
        rest_delete(box, record_id)
    until = clock.advance(minutes=10)
    sf = destination(box)
    assert sf.read_deleted_since(MAPPING, NOW - timedelta(days=16), until=until) is None
    box.salesforce.deleted_id_limit = 2
    assert sf.read_deleted_since(MAPPING, NOW - timedelta(hours=1), until=until) is None
    box.salesforce.deleted_id_limit = 10
    box.salesforce.purge_delete_log()
    assert sf.read_deleted_since(MAPPING, NOW, until=clock.advance(minutes=5)) is None
    assert sf.read_deleted_since(MAPPING, clock.now, until=clock.advance(minutes=5)) == []


def test_an_unknown_object_is_a_fatal_error(box: Sandbox, clock: Clock) -> None:
    mapping = DestinationMapping("salesforce", "Nope__c", MatchRule(domain_fields=("X",)), ())
    with pytest.raises(FatalError) as caught:
        destination(box).read_deleted_since(mapping, NOW - timedelta(hours=1), until=NOW)
    assert caught.value.code == "NOT_FOUND"


# --- against responses, the documented shapes --------------------------------------------------

INSTANCE = "https://example.my.salesforce.com"
SESSION_ID = "00D5g000004XyZa!AQ4AQFakeSessionTokenValue.abc123_XYZ"
BASE = f"{INSTANCE}/services/data/v59.0"
DELETED_URL = f"{BASE}/sobjects/Account/deleted/"
# The example response of "Get a List of Deleted Records Within a Given Timeframe".
DOCUMENTED = {
    "deletedRecords": [{"id": "a00D0000008pQRAIA2", "deletedDate": "2013-05-07T22:07:19.000+0000"}],
    "earliestDateAvailable": "2013-05-03T15:57:00.000+0000",
    "latestDateCovered": "2013-05-08T21:20:00.000+0000",
}


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def dest() -> SalesforceDestination:
    sf = Salesforce(instance_url=INSTANCE, session_id=SESSION_ID, version="59.0")
    return SalesforceDestination(sf, sleep=lambda seconds: None, secrets=[SESSION_ID])


def test_documented_get_deleted_response(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(
        DELETED_URL,
        json=DOCUMENTED,
        match=[
            matchers.query_param_matcher(
                {"start": "2013-05-05T00:00:00+00:00", "end": "2013-05-10T00:00:00+00:00"}
            )
        ],
    )
    since = datetime(2013, 5, 5, 0, 0, 42, tzinfo=UTC)
    until = datetime(2013, 5, 10, tzinfo=UTC)
    assert dest.read_deleted_since(MAPPING, since, until=until) == ["a00D0000008pQRAIA2"]
    assert dest.deleted_covered_until == datetime(2013, 5, 8, 21, 20, tzinfo=UTC)
    assert dest.api_calls()["read"] == 1


def test_invalid_replication_date_means_read_everything(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(
        DELETED_URL,
        status=400,
        json=[
            {
                "errorCode": "INVALID_REPLICATION_DATE",
                "message": "startDate before org replication enabled date",
            }
        ],
    )
    assert dest.read_deleted_since(MAPPING, NOW - timedelta(days=40), until=NOW) is None


def test_an_answer_starting_after_the_window_means_read_everything(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(DELETED_URL, json=DOCUMENTED)
    since = datetime(2013, 5, 1, tzinfo=UTC)  # before earliestDateAvailable 2013-05-03T15:57
    assert dest.read_deleted_since(MAPPING, since, until=datetime(2013, 5, 10, tzinfo=UTC)) is None


def test_other_errors_are_translated_as_for_any_call(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(
        DELETED_URL,
        status=403,
        json=[{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
    )
    with pytest.raises(QuotaExhaustedError):
        dest.read_deleted_since(MAPPING, NOW - timedelta(hours=1), until=NOW)


def test_crm_identity_from_the_organization_query(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    org_id = "00D5g000004XyZaEAK"
    rsps.get(
        f"{BASE}/query/",
        json={
            "totalSize": 1,
            "done": True,
            "records": [
                {
                    "attributes": {
                        "type": "Organization",
                        "url": f"/services/data/v59.0/sobjects/Organization/{org_id}",
                    },
                    "Id": org_id,
                }
            ],
        },
        match=[matchers.query_param_matcher({"q": "SELECT Id FROM Organization"})],
    )
    assert dest.crm_identity() == f"salesforce:{org_id}"
    assert dest.crm_identity() == f"salesforce:{org_id}"
    assert len(rsps.calls) == 1


def test_crm_identity_errors(rsps: responses.RequestsMock, dest: SalesforceDestination) -> None:
    rsps.get(f"{BASE}/query/", json={"totalSize": 0, "done": True, "records": []})
    with pytest.raises(FatalError) as empty:
        dest.crm_identity()
    assert empty.value.code == "NO_ORGANIZATION_ID"
    rsps.get(
        f"{BASE}/query/",
        status=403,
        json=[{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
    )
    with pytest.raises(QuotaExhaustedError) as quota:
        dest.crm_identity()
    assert SESSION_ID not in str(quota.value)
