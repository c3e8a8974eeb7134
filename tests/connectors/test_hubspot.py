"""The HubSpot connector: the real hubspot-api-client (urllib3) against the real sandbox server.

hubspot-api-client does not go through ``requests``, so nothing is mocked: every test sends real
HTTP to the sandbox's HubSpot module. Time is faked: the connector's pacer and backoff and the
sandbox's ten-second window share one clock that only moves when the connector sleeps.

HubSpot behaviour pinned here (see also tests/sandbox/test_hubspot_api.py):
* batch update, 100 inputs, 200 vs 207 with ``errors``:
  https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/companies/batch/update-companies
  https://developers.hubspot.com/changelog/simplifying-batch-update-response-codes-for-crm-v3-apis
* 429 bodies with ``policyName`` (TEN_SECONDLY_ROLLING vs DAILY) and the rate-limit headers:
  https://developers.hubspot.com/docs/api/usage-details
* 401 INVALID_AUTHENTICATION: https://developers.hubspot.com/docs/api-reference/error-handling
* search has its own limit, 5 requests a second, with no rate-limit headers and a 429 without
  Retry-After: https://developers.hubspot.com/docs/api-reference/search/guide#limitations
* property values: numbers and enumerations as strings, dates at midnight UTC, "" clears:
  https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/companies/batch/update-companies
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import urllib.request
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

import connectors.hubspot as hubspot_connector
from connectors.hubspot import (
    HubSpotDestination,
    HubSpotValidationError,
    RequestPacer,
    format_value,
    translate_api_error,
)
from pls_sync.errors import (
    AuthError,
    FatalError,
    QuotaExhaustedError,
    RateLimitedError,
    RetriableError,
)
from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.models import FieldSpec, FieldType, RecordChange
from tests.fakes import FakeTime, StopAfter

MAPPING = DestinationMapping(
    destination="hubspot",
    object="companies",
    match=MatchRule(domain_fields=("domain", "hs_additional_domains")),
    fields=(
        FieldMapping("pqa_score", "score"),
        FieldMapping("pqa_tier", "tier"),
        FieldMapping("pqa_signals", "signals"),
        FieldMapping("pqa_qualified_since", "qualified_since", null="clear"),
    ),
)
SPECS = {
    "pqa_score": FieldSpec("pqa_score", FieldType.NUMBER),
    "pqa_tier": FieldSpec(
        "pqa_tier", FieldType.PICKLIST, picklist_values=("sales", "success", "self_serve")
    ),
    "pqa_signals": FieldSpec("pqa_signals", FieldType.TEXTAREA, length=65_536),
    "pqa_qualified_since": FieldSpec("pqa_qualified_since", FieldType.DATETIME),
    "pqa_active_users": FieldSpec("pqa_active_users", FieldType.NUMBER),
}


# --------------------------------------------------------------------------- the sandbox


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime(1_000.0)


@pytest.fixture
def box(sandbox: Any, clock: FakeTime) -> Any:
    """The real sandbox (``tests/conftest.py``), its HubSpot window on the fake clock."""
    sandbox.hubspot.limiter.monotonic = clock
    return sandbox


def destination(box: Any, clock: FakeTime, **options: Any) -> HubSpotDestination:
    return HubSpotDestination(
        box.hubspot_token, base_url=box.url, sleep=clock.sleep, clock=clock, **options
    )


def past_search_lag(box: Any) -> None:
    """Run the sandbox's HubSpot date past its search lag: what was written is searchable."""
    lag = box.hubspot.search_lag_seconds + 1
    before = box.hubspot.clock
    box.hubspot.clock = lambda: before() + lag


def count(box: Any, endpoint: str) -> int:
    return int(box.counts().get(endpoint, 0))


def http(box: Any, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        box.url + path,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={
            "Authorization": f"Bearer {box.hubspot_token}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


# --------------------------------------------------------------------------- construction


def test_from_env_without_a_token_names_the_variable(tmp_path: Any) -> None:
    with pytest.raises(AuthError) as caught:
        HubSpotDestination.from_env({"PLS_SYNC_SECRETS_DIR": str(tmp_path)})
    assert "HUBSPOT_ACCESS_TOKEN" in str(caught.value)


def test_from_env_reads_the_token_and_base_url(box: Any) -> None:
    dest = HubSpotDestination.from_env(
        {"HUBSPOT_ACCESS_TOKEN": box.hubspot_token, "HUBSPOT_BASE_URL": box.url}, batch_size=500
    )
    assert dest.name == "hubspot"
    assert dest.batch_size == 100  # never above HubSpot's batch maximum
    assert "pqa_score" in dest.describe("companies")


def test_urllib3_retries_are_off_so_the_project_owns_them(box: Any, clock: FakeTime) -> None:
    dest = destination(box, clock)
    assert dest._companies_batch.api_client.configuration.retries is False
    assert dest._companies_batch.api_client.configuration.host == box.url


# --------------------------------------------------------------------------- describe and read


def test_describe_maps_property_types(box: Any, clock: FakeTime) -> None:
    http(
        box,
        "POST",
        "/crm/v3/properties/companies",
        {
            "name": "pqa_renewal_on",
            "label": "Renewal",
            "type": "date",
            "fieldType": "date",
            "groupName": "pqa",
        },
    )
    http(
        box,
        "POST",
        "/crm/v3/properties/companies",
        {
            "name": "pqa_flagged",
            "label": "Flagged",
            "type": "bool",
            "fieldType": "booleancheckbox",
            "groupName": "pqa",
            "options": [{"label": "Yes", "value": "true"}, {"label": "No", "value": "false"}],
        },
    )
    specs = destination(box, clock).describe("companies")
    assert specs["pqa_score"].type is FieldType.NUMBER
    assert specs["pqa_tier"].type is FieldType.PICKLIST
    assert specs["pqa_tier"].picklist_values == ("sales", "success", "self_serve")
    assert specs["pqa_signals"].type is FieldType.TEXTAREA
    assert specs["name"].type is FieldType.STRING
    assert specs["pqa_qualified_since"].type is FieldType.DATETIME
    assert specs["pqa_renewal_on"].type is FieldType.DATE
    assert specs["pqa_flagged"].type is FieldType.BOOLEAN
    assert specs["hs_object_id"].type is FieldType.ID
    assert specs["pqa_score"].updateable and specs["pqa_tier"].updateable
    assert not specs["hs_lastmodifieddate"].updateable
    assert not specs["hs_num_child_companies"].updateable
    assert specs["pqa_score"].label == "PQA score"
    assert count(box, "hs.properties.list") == 1


def test_read_records_pages_at_100_and_splits_additional_domains(box: Any, clock: FakeTime) -> None:
    dest = destination(box, clock)
    records = list(dest.read_records(MAPPING))
    total = len(box.hubspot.ids())
    assert len(records) == total == len({r.id for r in records})
    assert count(box, "hs.companies.list") == math.ceil(total / 100)
    assert dest.api_calls()["read"] == math.ceil(total / 100)
    by_id = {r.id: r for r in records}
    for record_id in box.hubspot.ids():
        stored = box.hubspot.company(record_id)
        record = by_id[record_id]
        extra = [d for d in stored.get("hs_additional_domains", "").split(";") if d]
        expected = ([stored["domain"]] if stored.get("domain") else []) + extra
        assert list(record.domain_values) == expected
        assert set(record.fields) == set(MAPPING.targets)
        assert record.fields["pqa_score"] == stored.get("pqa_score")
        assert record.parent_id == stored.get("hs_parent_company_id")
        assert record.owner_id == stored.get("hubspot_owner_id")
        assert record.name == stored.get("name")
        assert record.last_modified is not None and record.last_modified.tzinfo is not None
    assert any(len(r.domain_values) > 1 for r in records)
    assert any(r.parent_id for r in records)


def test_read_modified_since_uses_search(box: Any, clock: FakeTime) -> None:
    dest = destination(box, clock)
    touched = box.hubspot.ids()[5:8]
    since = datetime.now(UTC) - timedelta(minutes=1)
    dest.write("companies", [RecordChange(i, {"pqa_score": 50.0}, f"k{i}") for i in touched], SPECS)
    past_search_lag(box)
    records = list(dest.read_records_modified_since(MAPPING, since))
    assert sorted(r.id for r in records) == sorted(touched)
    assert all(r.fields["pqa_score"] == "50" for r in records)
    assert count(box, "hs.companies.search") == 1


def _stamp_companies(box: Any, ids: Sequence[str], stamps: Sequence[datetime]) -> None:
    """Give sandbox companies chosen modification times, as if written then."""
    for record_id, moment in zip(ids, stamps, strict=True):
        record = box.hubspot.objects["companies"][record_id]
        text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        record["properties"]["hs_lastmodifieddate"] = text
        record["updatedAt"] = text


def _small_search_cap(monkeypatch: pytest.MonkeyPatch, cap: int, page: int) -> None:
    from pls_sync.sandbox import hubspot as sandbox_hubspot

    monkeypatch.setattr(sandbox_hubspot, "SEARCH_RESULT_CAP", cap)
    monkeypatch.setattr(hubspot_connector, "SEARCH_RESULT_CAP", cap)
    monkeypatch.setattr(hubspot_connector, "SEARCH_PAGE_SIZE", page)


def test_read_modified_since_walks_past_the_search_cap_in_windows_of_ids(
    box: Any, clock: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Beyond 10,000 matches the search stops; in id order, the reader searches on above the
    # last id it read, so reads stay in proportion to the changes.
    _small_search_cap(monkeypatch, cap=40, page=20)
    changed = box.hubspot.ids()[:130]
    base = datetime(2030, 1, 1, tzinfo=UTC)
    _stamp_companies(box, changed, [base + timedelta(milliseconds=n % 7) for n in range(130)])
    dest = destination(box, clock)
    with capture_logs() as events:
        records = list(dest.read_records_modified_since(MAPPING, base))
    assert sorted(r.id for r in records) == sorted(changed)
    assert len(records) == 130  # each once
    assert count(box, "hs.companies.list") == 0
    # Windows of 40 (two pages of 20): 40 + 40 + 40 + 10 results, 2 + 2 + 2 + 1 pages.
    assert count(box, "hs.companies.search") == 7
    windows = [body for _, body in box.hubspot.searches if body.get("after") in (None, "0")]
    ordered = sorted(changed, key=int)
    assert [
        [f["value"] for f in w["filterGroups"][0]["filters"] if f["propertyName"] == "hs_object_id"]
        for w in windows
    ] == [[], [ordered[39]], [ordered[79]], [ordered[119]]]
    assert [e["event"] for e in events].count("hubspot_search_cap") == 1


def test_a_company_modified_during_the_read_never_makes_paging_skip_another(
    box: Any, clock: FakeTime
) -> None:
    # Offsets in id order do not move when a company already read is modified again (sorted
    # by modification time, it would jump to the end and shift the next page by one).
    changed = sorted(box.hubspot.ids(), key=int)
    assert len(changed) > 200  # two pages at least
    base = datetime(2020, 1, 1, tzinfo=UTC)
    _stamp_companies(box, changed, [base + timedelta(seconds=n) for n in range(len(changed))])
    dest = destination(box, clock)
    reader = dest.read_records_modified_since(MAPPING, base)
    first = [next(reader) for _ in range(200)]
    # A rep edits an account already read, through the API, before the next page is fetched.
    dest.write("companies", [RecordChange(first[0].id, {"pqa_score": 5.0}, "edit")], SPECS)
    rest = list(reader)
    assert {r.id for r in first + rest} == set(changed)


@pytest.mark.parametrize(
    ("kind", "endpoint"),
    [
        ("rate_limit", "hs.companies.list"),
        ("server_error", "hs.companies.list"),
        ("drop", "hs.companies.list"),
        ("rate_limit", "hs.companies.search"),
        ("drop", "hs.companies.search"),
    ],
)
def test_raw_json_reads_keep_the_retries(
    box: Any, clock: FakeTime, kind: str, endpoint: str
) -> None:
    box.faults.add(kind, endpoint=endpoint, times=2, retry_after=2)
    dest = destination(box, clock)
    if endpoint == "hs.companies.list":
        records = list(dest.read_records(MAPPING))
        assert len(records) == len(box.hubspot.ids())
        assert count(box, endpoint) == math.ceil(len(records) / 100) + 2
    else:
        since = datetime(2000, 1, 1, tzinfo=UTC)
        records = list(dest.read_records_modified_since(MAPPING, since))
        assert sorted(r.id for r in records) == sorted(box.hubspot.ids())
        assert count(box, endpoint) == math.ceil(len(records) / 200) + 2
    assert dest.api_calls()["read"] == count(box, endpoint)
    assert len(clock.sleeps) >= 2
    if kind == "rate_limit":
        assert sum(1 for s in clock.sleeps if s >= 2.0) >= 2


def test_raw_json_reads_translate_errors_and_read_the_daily_headers(
    box: Any, clock: FakeTime
) -> None:
    box.faults.add("invalid_session", endpoint="hs.companies.list")
    with pytest.raises(AuthError) as caught:
        list(destination(box, clock).read_records(MAPPING))
    assert box.hubspot_token not in str(caught.value)
    box.faults.clear()
    dest = destination(box, clock)
    assert dest.daily_api_remaining() is None
    list(dest.read_records(MAPPING))
    assert dest.daily_api_remaining() is not None


def test_a_record_without_hs_lastmodifieddate_takes_updated_at() -> None:
    record = HubSpotDestination._record(
        {
            "id": 42,
            "properties": {"domain": "a.com", "hs_additional_domains": "b.com;c.com"},
            "updatedAt": "2026-03-04T05:06:07.089Z",
        },
        MAPPING,
    )
    assert record.id == "42"
    assert record.domain_values == ("a.com", "b.com", "c.com")
    assert record.last_modified == datetime(2026, 3, 4, 5, 6, 7, 89_000, tzinfo=UTC)
    assert record.fields == dict.fromkeys(MAPPING.targets)
    assert record.name is None and record.parent_id is None


def test_a_body_that_is_not_json_is_retriable() -> None:
    class Raw:
        released = False
        data = b"<html>bad gateway</html>"

        def release_conn(self) -> None:
            self.released = True

    raw = Raw()
    with pytest.raises(RetriableError):
        hubspot_connector.read_json(lambda: raw)
    assert raw.released
    assert hubspot_connector.next_after({"paging": {"next": {"after": "300"}}}) == "300"
    assert hubspot_connector.next_after({"results": []}) is None


# --------------------------------------------------------------------------- writing


def changes_for(ids: list[str], **fields: Any) -> list[RecordChange]:
    return [RecordChange(record_id, dict(fields), f"acct-{record_id}") for record_id in ids]


def test_250_changed_companies_take_3_batch_updates(box: Any, clock: FakeTime) -> None:
    ids = box.hubspot.ids()[:250]
    dest = destination(box, clock)
    qualified = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    changes = [
        RecordChange(
            record_id,
            {
                "pqa_score": float(n % 100),
                "pqa_tier": "sales",
                "pqa_qualified_since": qualified,
                "pqa_signals": None,
            },
            f"acct-{n}",
        )
        for n, record_id in enumerate(ids)
    ]
    result = dest.write("companies", changes, SPECS)
    assert count(box, "hs.companies.batch_update") == 3
    assert result.calls == 3 == dest.api_calls()["write"]
    assert sorted(result.written) == sorted(ids)
    assert not result.rejected and not result.not_attempted
    stored = box.hubspot.company(ids[42])
    assert stored["pqa_score"] == "42"
    assert stored["pqa_tier"] == "sales"
    assert stored["pqa_qualified_since"] == "2026-11-22T10:00:00.000Z"
    assert "pqa_signals" not in stored  # None was sent as "" and cleared it


def test_no_changes_make_no_calls(box: Any, clock: FakeTime) -> None:
    dest = destination(box, clock)
    result = dest.write("companies", [], SPECS)
    assert result.calls == 0
    assert count(box, "hs.companies.batch_update") == 0


def test_a_stop_request_finishes_the_batch_in_flight(box: Any, clock: FakeTime) -> None:
    ids = box.hubspot.ids()[:250]
    result = destination(box, clock).write(
        "companies", changes_for(ids, pqa_score=12.0), SPECS, stop=StopAfter(1)
    )
    assert result.calls == 1 == count(box, "hs.companies.batch_update")
    assert result.written == ids[:100]
    assert result.not_attempted == ids[100:]
    assert box.hubspot.company(ids[0])["pqa_score"] == "12"
    assert box.hubspot.company(ids[100]).get("pqa_score") != "12"


def test_207_partial_failures_become_rejections_record_by_record(box: Any, clock: FakeTime) -> None:
    ids = box.hubspot.ids()[:6]
    specs = {**SPECS, "pqa_colour": FieldSpec("pqa_colour", FieldType.STRING)}
    changes = [
        RecordChange(ids[0], {"pqa_score": 71.0}, "a"),
        RecordChange(ids[1], {"pqa_colour": "red"}, "b"),
        RecordChange(ids[2], {"pqa_score": "lots"}, "c"),
        RecordChange(ids[3], {"pqa_tier": "platinum"}, "d"),
        RecordChange(ids[4], {"pqa_tier": "success"}, "e"),
        RecordChange("31337", {"pqa_score": 1.0}, "f"),
    ]
    result = destination(box, clock).write("companies", changes, specs)
    assert result.calls == 1
    assert sorted(result.written) == sorted([ids[0], ids[4]])
    rejected = {r.record_id: r for r in result.rejected}
    assert set(rejected) == {ids[1], ids[2], ids[3], "31337"}
    assert (rejected[ids[1]].code, rejected[ids[1]].fields) == (
        "PROPERTY_DOESNT_EXIST",
        ("pqa_colour",),
    )
    assert (rejected[ids[2]].code, rejected[ids[2]].fields) == ("INVALID_DECIMAL", ("pqa_score",))
    assert (rejected[ids[3]].code, rejected[ids[3]].fields) == ("INVALID_OPTION", ("pqa_tier",))
    assert rejected["31337"].code == "OBJECT_NOT_FOUND"
    assert "platinum" in rejected[ids[3]].message
    assert box.hubspot.company(ids[0])["pqa_score"] == "71"
    assert box.hubspot.company(ids[4])["pqa_tier"] == "success"


def test_a_whole_batch_400_is_split_until_the_bad_records_are_isolated(
    box: Any, clock: FakeTime
) -> None:
    box.hubspot.batch_validation = "all_or_nothing"
    ids = box.hubspot.ids()[:16]
    changes = changes_for(ids, pqa_score=33.0)
    changes[5] = RecordChange(ids[5], {"pqa_tier": "gold"}, "bad-1")
    changes[12] = RecordChange(ids[12], {"pqa_score": "n/a"}, "bad-2")
    result = destination(box, clock).write("companies", changes, SPECS)
    assert sorted(result.written) == sorted(i for n, i in enumerate(ids) if n not in (5, 12))
    rejected = {r.record_id: r for r in result.rejected}
    assert set(rejected) == {ids[5], ids[12]}
    assert (rejected[ids[5]].code, rejected[ids[5]].fields) == ("INVALID_OPTION", ("pqa_tier",))
    assert (rejected[ids[12]].code, rejected[ids[12]].fields) == ("INVALID_DECIMAL", ("pqa_score",))
    # 1 + 2 halves + 4 quarters + 4 eighths on the two bad paths + 4 singles
    assert result.calls == count(box, "hs.companies.batch_update") == 15
    assert box.hubspot.company(ids[0])["pqa_score"] == "33"


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("value", "spec", "wire"),
    [
        (42.0, SPECS["pqa_score"], "42"),
        (12.5, SPECS["pqa_score"], "12.5"),
        (-3, SPECS["pqa_score"], "-3"),
        (Decimal("7.250"), SPECS["pqa_score"], "7.25"),
        (1e-7, SPECS["pqa_score"], "0.0000001"),
        (float("nan"), SPECS["pqa_score"], ""),
        ("sales", SPECS["pqa_tier"], "sales"),
        (None, SPECS["pqa_tier"], ""),
        (True, FieldSpec("b", FieldType.BOOLEAN), "true"),
        (
            datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
            SPECS["pqa_qualified_since"],
            "2026-11-22T10:00:00.000Z",
        ),
        (
            datetime(2026, 11, 22, 11, 0, 0, 250_000),
            SPECS["pqa_qualified_since"],
            "2026-11-22T11:00:00.250Z",
        ),
        (date(2026, 11, 22), SPECS["pqa_qualified_since"], "2026-11-22T00:00:00.000Z"),
        (date(2026, 11, 22), FieldSpec("d", FieldType.DATE), "2026-11-22"),
        (datetime(2026, 11, 22, 23, 30, tzinfo=UTC), FieldSpec("d", FieldType.DATE), "2026-11-22"),
        (["7+ users", "Pricing page"], SPECS["pqa_signals"], "7+ users; Pricing page"),
        (["a", "b"], FieldSpec("m", FieldType.MULTIPICKLIST), "a;b"),
        ("x" * 20, FieldSpec("s", FieldType.STRING, length=10), "x" * 9 + "…"),
    ],
)
def test_values_are_formatted_the_way_hubspot_wants(value: Any, spec: FieldSpec, wire: str) -> None:
    assert format_value(value, spec) == wire


def test_formatted_values_are_accepted_by_the_sandbox(box: Any, clock: FakeTime) -> None:
    http(
        box,
        "POST",
        "/crm/v3/properties/companies",
        {
            "name": "pqa_renewal_on",
            "label": "Renewal",
            "type": "date",
            "fieldType": "date",
            "groupName": "pqa",
        },
    )
    target = box.hubspot.ids()[3]
    specs = {**SPECS, "pqa_renewal_on": FieldSpec("pqa_renewal_on", FieldType.DATE)}
    change = RecordChange(
        target,
        {
            "pqa_score": 64.0,
            "pqa_renewal_on": date(2027, 1, 31),
            "pqa_signals": ["Admin changed", "7+ users"],
        },
        "k",
    )
    result = destination(box, clock).write("companies", [change], specs)
    assert result.written == [target]
    stored = box.hubspot.company(target)
    assert (stored["pqa_score"], stored["pqa_renewal_on"]) == ("64", "2027-01-31")
    assert stored["pqa_signals"] == "Admin changed; 7+ users"


# --------------------------------------------------------------------------- rate limits


def test_pacing_follows_the_rate_limit_headers(box: Any, clock: FakeTime) -> None:
    box.hubspot.set_burst_limit(3)
    dest = destination(box, clock, requests_per_10s=100)
    records = list(dest.read_records(MAPPING))
    pages = math.ceil(len(records) / 100)
    assert dest.pacer.limit == 3  # learnt from X-HubSpot-RateLimit-Max
    assert count(box, "hs.companies.list") == pages  # never refused, so never retried
    assert clock.now - 1_000.0 >= 10.0 * ((pages - 1) // 3)


def test_a_ten_secondly_429_is_retried_after_retry_after(box: Any, clock: FakeTime) -> None:
    box.faults.add("rate_limit", endpoint="hs.companies.batch_update", times=2, retry_after=3)
    ids = box.hubspot.ids()[:10]
    dest = destination(box, clock)
    result = dest.write("companies", changes_for(ids, pqa_score=9.0), SPECS)
    assert sorted(result.written) == sorted(ids)
    assert result.calls == 3 == count(box, "hs.companies.batch_update")
    assert sum(1 for s in clock.sleeps if s >= 3.0) >= 2


def test_a_full_window_shared_with_other_apps_is_waited_out(box: Any, clock: FakeTime) -> None:
    box.hubspot.set_burst_limit(2)
    for _ in range(2):  # another integration on the same portal fills the window
        http(box, "GET", "/crm/v3/objects/companies?limit=1")
    dest = destination(box, clock)
    specs = dest.describe("companies")
    assert "pqa_score" in specs
    assert count(box, "hs.properties.list") == 2  # one 429, then the retry after the window moved
    # Its Retry-After when the 429 carried one; else the backoff, then the window moving on.
    assert sum(clock.sleeps) >= 1.0


def test_rate_limit_exhausting_the_retries_raises(box: Any, clock: FakeTime) -> None:
    box.faults.add("rate_limit", endpoint="hs.properties.list", retry_after=1)
    dest = destination(box, clock)
    with pytest.raises(RateLimitedError):
        dest.describe("companies")
    assert count(box, "hs.properties.list") == 5


def test_a_daily_429_stops_writing_and_leaves_the_rest_not_attempted(
    box: Any, clock: FakeTime
) -> None:
    ids = box.hubspot.ids()[:250]
    dest = destination(box, clock)
    box.hubspot.limiter.daily_limit = box.hubspot.limiter.daily_used + 1
    result = dest.write("companies", changes_for(ids, pqa_score=5.0), SPECS)
    assert sorted(result.written) == sorted(ids[:100])
    assert sorted(result.not_attempted) == sorted(ids[100:])
    assert result.calls == 2  # the refused request is not retried
    assert dest.daily_api_remaining() == 0
    with pytest.raises(QuotaExhaustedError):
        list(dest.read_records(MAPPING))


def test_an_injected_daily_limit_fault_is_quota_exhaustion(box: Any, clock: FakeTime) -> None:
    box.faults.add("daily_limit", endpoint="hs.companies.batch_update")
    ids = box.hubspot.ids()[:30]
    result = destination(box, clock).write("companies", changes_for(ids, pqa_score=1.0), SPECS)
    assert result.written == [] and sorted(result.not_attempted) == sorted(ids)


# --------------------------------------------------------------------------- auth and server errors


def test_a_bad_token_is_an_auth_error_without_the_token(box: Any, clock: FakeTime) -> None:
    token = "pat-na1-11111111-2222-4333-8444-555555555555"
    dest = HubSpotDestination(token, base_url=box.url, sleep=clock.sleep, clock=clock)
    with pytest.raises(AuthError) as caught:
        list(dest.read_records(MAPPING))
    assert "HubSpot rejected the access token" in str(caught.value)
    assert token not in str(caught.value)
    assert token not in repr(caught.value.__dict__)
    assert count(box, "hs.companies.list") == 1  # not retried


def test_an_injected_invalid_session_stops_the_write_and_says_why(
    box: Any, clock: FakeTime
) -> None:
    box.faults.add("invalid_session", endpoint="hs.companies.batch_update")
    ids = box.hubspot.ids()[:3]
    result = destination(box, clock).write("companies", changes_for(ids, pqa_score=1.0), SPECS)
    assert result.error is not None and "access token" in result.error
    assert result.written == [] and sorted(result.not_attempted) == sorted(ids)
    assert box.hubspot_token not in result.error


@pytest.mark.parametrize("kind", ["server_error", "unavailable", "drop"])
def test_5xx_and_dropped_connections_are_retried(box: Any, clock: FakeTime, kind: str) -> None:
    box.faults.add(kind, endpoint="hs.companies.batch_update", times=2)
    ids = box.hubspot.ids()[:5]
    result = destination(box, clock).write("companies", changes_for(ids, pqa_score=2.0), SPECS)
    assert sorted(result.written) == sorted(ids)
    assert result.calls == 3 == count(box, "hs.companies.batch_update")
    assert len(clock.sleeps) >= 2


def test_an_unreachable_host_is_retriable_and_retried_by_us_only(clock: FakeTime) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as server:
        port = server.server_address[1]  # bound, then closed: nothing listens there any more
    dest = HubSpotDestination(
        "pat-na1-x", base_url=f"http://127.0.0.1:{port}", sleep=clock.sleep, clock=clock
    )
    with pytest.raises(RetriableError) as caught:
        dest.describe("companies")
    assert caught.value.code == "TRANSPORT"
    assert dest.api_calls()["describe"] == 5


# --------------------------------------------------------------------------- translation and pacing


def api_exception(
    status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> Any:
    from hubspot.crm.companies.exceptions import ApiException

    response = SimpleNamespace(
        status=status,
        reason="reason",
        data=json.dumps(body or {}).encode(),
        getheaders=lambda: headers or {},
    )
    return ApiException(http_resp=response)


def test_translate_api_error_maps_each_status() -> None:
    token = "pat-na1-abcdef12-3456-4789-abcd-ef1234567890"
    auth = translate_api_error(
        api_exception(401, {"category": "INVALID_AUTHENTICATION", "message": token}), [token]
    )
    assert isinstance(auth, AuthError) and token not in str(auth)
    assert isinstance(
        translate_api_error(api_exception(403, {"category": "MISSING_SCOPES"})), AuthError
    )
    ten = translate_api_error(
        api_exception(429, {"policyName": "TEN_SECONDLY_ROLLING"}, {"Retry-After": "4"})
    )
    assert isinstance(ten, RateLimitedError) and ten.retry_after == 4.0
    assert isinstance(
        translate_api_error(api_exception(429, {"policyName": "DAILY"})), QuotaExhaustedError
    )
    for status in (500, 502, 503, 504):
        assert type(translate_api_error(api_exception(status))) is RetriableError
    invalid = translate_api_error(
        api_exception(
            400,
            {
                "category": "VALIDATION_ERROR",
                "message": 'Property values were not valid: [{"isValid":false,"message":"x","error":"INVALID_OPTION","name":"pqa_tier"}]',
            },
        )
    )
    assert isinstance(invalid, HubSpotValidationError)
    assert invalid.details[0]["error"] == "INVALID_OPTION"
    other = translate_api_error(api_exception(404, {"category": "OBJECT_NOT_FOUND"}))
    assert isinstance(other, FatalError) and not isinstance(other, AuthError)


def test_the_pacer_never_sends_more_than_the_limit_in_any_window(clock: FakeTime) -> None:
    pacer = RequestPacer(5, clock=clock, sleep=clock.sleep)
    sent: list[float] = []
    for _ in range(23):
        pacer.acquire()
        sent.append(clock.now)
    for start in sent:
        assert sum(1 for t in sent if start <= t < start + 10.0) <= 5
    pacer.observe(maximum=3, remaining=0)
    assert pacer.limit == 3
    before = clock.now
    pacer.acquire()
    assert clock.now > before  # the server said the window is full: wait for it


def test_the_pacer_counts_a_slow_request_from_when_its_answer_came(clock: FakeTime) -> None:
    # HubSpot counts a request on arrival, somewhere between sending and the answer: a window
    # measured from the answer can never overlap the server's.
    pacer = RequestPacer(2, clock=clock, sleep=clock.sleep)
    start = clock.now
    pacer.acquire()
    clock.now += 3.0  # a slow trip
    pacer.completed()
    pacer.acquire()
    pacer.completed()
    pacer.acquire()  # the window is full until ten seconds after the first answer
    assert clock.now == pytest.approx(start + 13.0)


def test_a_batch_failing_beyond_its_retries_leaves_the_rest_not_attempted(
    box: Any, clock: FakeTime
) -> None:
    ids = box.hubspot.ids()[:150]
    box.faults.add("server_error", endpoint="hs.companies.batch_update")
    result = destination(box, clock).write("companies", changes_for(ids, pqa_score=3.0), SPECS)
    assert result.written == [] and sorted(result.not_attempted) == sorted(ids)
    assert result.calls == 5  # the first batch's attempts; the second batch is never sent


def test_a_read_timeout_is_retried(box: Any, clock: FakeTime) -> None:
    box.faults.add("slow", endpoint="hs.properties.list", times=1, delay=0.5)
    dest = HubSpotDestination(
        box.hubspot_token, base_url=box.url, sleep=clock.sleep, clock=clock, timeout=(2.0, 0.1)
    )
    assert "pqa_score" in dest.describe("companies")
    assert dest.api_calls()["describe"] == 2 == count(box, "hs.properties.list")


# --------------------------------------------------------------------------- integer numbers


class RecordingHubSpot(BaseHTTPRequestHandler):
    """A batch update endpoint that keeps each request body as it came off the wire."""

    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - the http.server handler name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append(body)
        inputs = json.loads(body)["inputs"]
        answer = json.dumps(
            {
                "status": "COMPLETE",
                "results": [{"id": i["id"], "properties": i["properties"]} for i in inputs],
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def test_whole_numbers_go_out_as_integers_in_batch_inputs(clock: FakeTime) -> None:
    RecordingHubSpot.bodies = []
    specs = {
        "pqa_score": FieldSpec("pqa_score", FieldType.NUMBER, scale=0, precision=3),
        "pqa_active_users": FieldSpec("pqa_active_users", FieldType.INTEGER),
        "pqa_ratio": FieldSpec("pqa_ratio", FieldType.NUMBER, scale=2),
    }
    scores: list[Any] = [100, 100.0, Decimal("100"), 99.6]
    changes = [
        RecordChange(
            str(n),
            {"pqa_score": score, "pqa_active_users": 12.0, "pqa_ratio": 0.126},
            f"k{n}",
        )
        for n, score in enumerate(scores)
    ]
    with ThreadingHTTPServer(("127.0.0.1", 0), RecordingHubSpot) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            dest = HubSpotDestination(
                "pat-na1-recording",
                base_url=f"http://127.0.0.1:{server.server_address[1]}",
                sleep=clock.sleep,
                clock=clock,
            )
            result = dest.write("companies", changes, specs)
        finally:
            server.shutdown()
    assert sorted(result.written) == ["0", "1", "2", "3"]
    (body,) = RecordingHubSpot.bodies
    assert [entry["properties"] for entry in json.loads(body)["inputs"]] == [
        {"pqa_score": "100", "pqa_active_users": "12", "pqa_ratio": "0.13"}
    ] * 4


@pytest.mark.parametrize(
    ("value", "spec", "wire"),
    [
        (86.6, FieldSpec("n", FieldType.INTEGER), "87"),
        (Decimal("100.00"), FieldSpec("n", FieldType.NUMBER, scale=0), "100"),
        (12.345678, FieldSpec("n", FieldType.NUMBER, scale=3), "12.346"),
        (12.5, FieldSpec("n", FieldType.NUMBER), "12.5"),  # no scale known: as it is
        (Decimal("NaN"), FieldSpec("n", FieldType.NUMBER), ""),
        (10**20, FieldSpec("n", FieldType.NUMBER, scale=2), "100000000000000000000"),
    ],
)
def test_numbers_follow_the_property_scale(value: Any, spec: FieldSpec, wire: str) -> None:
    assert format_value(value, spec) == wire


# --------------------------------------------------------------------------- search pacing and read paths
#
# HubSpot: "the search endpoints are rate limited to five requests per second per account"
# (https://developers.hubspot.com/docs/api-reference/search/guide#limitations), a limit of its
# own beside the ten-second one; its 429 bodies name the limit hit in ``policyName`` ("The
# message and policyName will indicate which limit you hit (either daily or secondly)":
# https://developers.hubspot.com/docs/api/usage-details), e.g. "SECONDLY".


class FakePortal:
    """A HubSpot stand-in over loopback: companies by list and by search, with scripted 429s.

    Every request is logged with the fake clock's time when it arrived (the clock only moves
    when the connector sleeps). No answer carries a rate-limit header. ``modified`` is the
    ``total`` a search answers; searches page through ids from 0, lists through ``companies``.
    """

    def __init__(self, clock: FakeTime, *, companies: int, modified: int, page: int = 100):
        self.clock = clock
        self.companies = companies
        self.modified = modified
        self.page = page  # results per list page; a search page holds what the client asks
        self.arrivals: list[tuple[str, float]] = []
        self.refusals: dict[str, list[Refusal]] = {
            "list": [],
            "search": [],
        }
        portal = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server handler name
                query = dict(
                    part.split("=", 1)
                    for part in self.path.partition("?")[2].split("&")
                    if "=" in part
                )
                start = int(query.get("after", "0"))
                portal.answer(self, "list", start, portal.page, portal.companies, total=False)

            def do_POST(self) -> None:  # noqa: N802 - the http.server handler name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                start = int(body.get("after") or 0)
                limit = int(body.get("limit") or 10)
                portal.answer(self, "search", start, limit, portal.modified, total=True)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(
        self,
        handler: BaseHTTPRequestHandler,
        kind: str,
        start: int,
        size: int,
        count: int,
        *,
        total: bool,
    ) -> None:
        """One page of ids ``start..start+size`` below ``count``, or the next scripted refusal."""
        self.arrivals.append((kind, self.clock()))
        headers: dict[str, str] = {}
        if self.refusals[kind]:
            status, payload, headers = self.refusals[kind].pop(0)
        else:
            status = 200
            ids = range(start, min(start + size, count))
            payload = {
                "results": [
                    {"id": str(n + 1), "properties": {"domain": f"c{n + 1}.example"}} for n in ids
                ]
            }
            if total:
                payload["total"] = count
            if start + size < count:
                payload["paging"] = {"next": {"after": str(start + size)}}
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def times(self, kind: str) -> list[float]:
        """When each request of ``kind`` (``list`` | ``search``) arrived, in order."""
        return [moment for sent, moment in self.arrivals if sent == kind]

    def __enter__(self) -> FakePortal:
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def portal_destination(portal: FakePortal, clock: FakeTime, **options: Any) -> HubSpotDestination:
    return HubSpotDestination(
        "pat-na1-fake-portal", base_url=portal.url, sleep=clock.sleep, clock=clock, **options
    )


def most_in_any_window(times: Sequence[float], seconds: float) -> int:
    """The most of ``times`` inside any half-open window ``[t, t + seconds)``."""
    return max((sum(1 for u in times if t <= u < t + seconds) for t in times), default=0)


Refusal = tuple[int, dict[str, Any], dict[str, str]]
SECONDLY_429: Refusal = (
    429,
    {"status": "error", "errorType": "RATE_LIMIT", "policyName": "SECONDLY"},
    {},
)
TEN_SECONDLY_429: Refusal = (
    429,
    {"status": "error", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"},
    {},
)


def test_the_search_pacer_sends_four_a_second_evenly(clock: FakeTime) -> None:
    pacer = hubspot_connector.SearchPacer(clock=clock, sleep=clock.sleep)
    start = clock.now
    sent: list[float] = []
    for _ in range(9):
        pacer.acquire()
        sent.append(clock.now)
    assert clock.now - start >= (9 - 1) / 4
    assert most_in_any_window(sent, 1.0) == 4
    assert all(b - a >= 0.25 - 1e-9 for a, b in itertools.pairwise(sent))


def test_a_search_429_halves_the_pace_and_a_streak_of_answers_restores_it(
    clock: FakeTime,
) -> None:
    pacer = hubspot_connector.SearchPacer(clock=clock, sleep=clock.sleep, recovery_streak=3)
    pacer.acquire()
    refused_at = clock.now
    pacer.slow_down(retry_after=None)
    assert pacer.rate == 2.0
    pacer.acquire()
    assert clock.now == pytest.approx(refused_at + 1.0)  # no Retry-After: a second
    before = clock.now
    pacer.acquire()
    assert clock.now == pytest.approx(before + 0.5)  # two a second now
    for _ in range(3):
        pacer.answered()
    assert pacer.rate == 3.0
    for _ in range(10):
        pacer.slow_down(retry_after=0.1)
    assert pacer.rate == hubspot_connector.SEARCH_SLOWEST_PER_SECOND


def test_searches_through_the_destination_go_at_most_four_a_second(clock: FakeTime) -> None:
    with FakePortal(clock, companies=100, modified=90) as portal:
        dest = portal_destination(portal, clock)
        monkey = pytest.MonkeyPatch()
        monkey.setattr(hubspot_connector, "SEARCH_PAGE_SIZE", 10)
        try:
            started = clock.now
            records = list(
                dest.read_records_modified_since(MAPPING, datetime(2030, 1, 1, tzinfo=UTC))
            )
        finally:
            monkey.undo()
    searches = portal.times("search")
    assert len(records) == 90 and len(searches) == 9
    assert clock.now - started >= (len(searches) - 1) / 4
    assert most_in_any_window(searches, 1.0) <= 4


def test_reads_and_searches_interleaved_respect_both_limits(clock: FakeTime) -> None:
    with FakePortal(clock, companies=30, modified=30, page=1) as portal:
        dest = portal_destination(portal, clock, requests_per_10s=6)
        monkey = pytest.MonkeyPatch()
        monkey.setattr(hubspot_connector, "SEARCH_PAGE_SIZE", 1)
        try:
            listed = dest.read_records(MAPPING)
            searched = dest.read_records_modified_since(MAPPING, datetime(2030, 1, 1, tzinfo=UTC))
            for _ in range(12):  # one list page, one search page, turn about
                next(listed)
                next(searched)
        finally:
            monkey.undo()
    everything = [moment for _, moment in portal.arrivals]
    assert len(portal.times("list")) == 12 == len(portal.times("search"))
    assert most_in_any_window(everything, 10.0) <= 6
    assert most_in_any_window(portal.times("search"), 1.0) <= 4
    assert clock.now - 1_000.0 >= 10.0 * ((24 - 1) // 6)  # the ten-second limit set the pace


def test_a_429_without_retry_after_or_rate_headers_is_retried_with_backoff(
    clock: FakeTime,
) -> None:
    with FakePortal(clock, companies=250, modified=0) as portal:
        portal.refusals["list"] = [TEN_SECONDLY_429, (429, {}, {})]
        dest = portal_destination(portal, clock, requests_per_10s=100)
        records = list(dest.read_records(MAPPING))
    assert len(records) == 250
    refused, retried, *_ = portal.times("list")
    assert len(portal.times("list")) == 3 + 2  # three pages, two of the first refused
    # No Retry-After: the window counts as full, so the retry waits for it to move on.
    assert retried - refused >= 10.0 - 1e-9
    assert dest.pacer.limit == 100  # nothing learnt from headers that were not there


def test_a_search_429_without_retry_after_slows_the_search_pace(clock: FakeTime) -> None:
    with FakePortal(clock, companies=100, modified=40) as portal:
        portal.refusals["search"] = [SECONDLY_429]
        dest = portal_destination(portal, clock)
        monkey = pytest.MonkeyPatch()
        monkey.setattr(hubspot_connector, "SEARCH_PAGE_SIZE", 10)
        try:
            with capture_logs() as events:
                records = list(
                    dest.read_records_modified_since(MAPPING, datetime(2030, 1, 1, tzinfo=UTC))
                )
        finally:
            monkey.undo()
    searches = portal.times("search")
    assert len(records) == 40 and len(searches) == 1 + 4
    assert searches[1] - searches[0] >= 1.0  # held back a second after the refusal
    assert all(b - a >= 0.5 - 1e-9 for a, b in itertools.pairwise(searches[1:]))  # 2 a second
    assert dest.search_pacer.rate == 2.0
    assert dest.pacer.limit == 100  # the ten-second window is not touched by a search 429
    assert [e["event"] for e in events].count("hubspot_search_slowed") == 1


def test_a_429_without_retry_after_is_translated_without_one() -> None:
    error = translate_api_error(api_exception(429, {"policyName": "SECONDLY"}))
    assert isinstance(error, RateLimitedError)
    assert error.retry_after is None and error.code == "SECONDLY"
    bare = translate_api_error(api_exception(429, None))
    assert isinstance(bare, RateLimitedError) and bare.code == "RATE_LIMIT"


def test_the_read_path_estimate_weighs_search_pages_against_list_pages() -> None:
    estimate = hubspot_connector.estimate_read_paths(30_000, 40_000, requests_per_10s=100)
    # 150 search pages at 4 a second vs 400 list pages in bursts of 100 per ten seconds.
    assert (estimate.search_calls, estimate.list_calls) == (150, 400)
    assert estimate.search_seconds == pytest.approx(149 / 4)
    assert estimate.list_seconds == pytest.approx(30.0)
    assert estimate.path == "list"
    few = hubspot_connector.estimate_read_paths(900, 40_000, requests_per_10s=100)
    assert (few.search_calls, few.path) == (5, "search")
    # Round trips slower than the search pace make the list's extra pages the slower path.
    slow = hubspot_connector.estimate_read_paths(
        30_000, 40_000, requests_per_10s=100, seconds_per_request=0.3
    )
    assert slow.search_seconds == pytest.approx(45.0) and slow.list_seconds == pytest.approx(120.0)
    assert slow.path == "search"
    # Not enough of the daily allowance left for the list: search.
    short = hubspot_connector.estimate_read_paths(
        30_000, 40_000, requests_per_10s=100, daily_remaining=300
    )
    assert short.path == "search"
    nothing = hubspot_connector.estimate_read_paths(0, 0, requests_per_10s=100)
    assert (nothing.search_calls, nothing.list_calls, nothing.path) == (1, 1, "search")


def test_a_large_modified_set_is_read_from_the_list(clock: FakeTime) -> None:
    with FakePortal(clock, companies=40_000, modified=30_000) as portal:
        dest = portal_destination(portal, clock, requests_per_10s=100)
        with capture_logs() as events:
            records = list(
                dest.read_records_modified_since(
                    MAPPING, datetime(2030, 1, 1, tzinfo=UTC), known_records=40_000
                )
            )
    assert len(portal.times("search")) == 1  # only the first page, for its total
    assert len(portal.times("list")) == 400
    assert len({record.id for record in records}) == 40_000  # every live company
    (chosen,) = [e for e in events if e["event"] == "hubspot_read_path"]
    assert chosen["path"] == "list"
    assert (chosen["search_calls"], chosen["list_calls"]) == (150, 400)
    assert chosen["search_seconds"] > chosen["list_seconds"]
    assert dest.last_read_path is not None and dest.last_read_path.path == "list"


def test_a_small_modified_set_keeps_the_search_and_its_first_page(
    box: Any, clock: FakeTime
) -> None:
    dest = destination(box, clock)
    touched = box.hubspot.ids()[3:9]
    since = datetime.now(UTC) - timedelta(minutes=1)
    dest.write("companies", [RecordChange(i, {"pqa_score": 7.0}, f"k{i}") for i in touched], SPECS)
    past_search_lag(box)
    with capture_logs() as events:
        records = list(
            dest.read_records_modified_since(MAPPING, since, known_records=len(box.hubspot.ids()))
        )
    assert sorted(r.id for r in records) == sorted(touched)
    assert count(box, "hs.companies.search") == 1  # the first page is not asked for twice
    assert count(box, "hs.companies.list") == 0
    assert [e["path"] for e in events if e["event"] == "hubspot_read_path"] == ["search"]


def test_a_portal_allowing_fewer_searches_is_learnt_from_its_429s(
    box: Any, clock: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sandbox's search 429 is HubSpot's: no policyName, no Retry-After, no rate headers.
    box.hubspot.search_limiter.per_second = 1
    monkeypatch.setattr(hubspot_connector, "SEARCH_PAGE_SIZE", 20)
    dest = destination(box, clock)
    records = list(dest.read_records_modified_since(MAPPING, datetime(2000, 1, 1, tzinfo=UTC)))
    pages = math.ceil(len(box.hubspot.ids()) / 20)
    assert sorted(r.id for r in records) == sorted(box.hubspot.ids())
    assert dest.search_pacer.rate == 1.0  # halved twice, to what the portal allows
    assert pages < count(box, "hs.companies.search") <= pages + 2


def test_the_lead_and_alert_searches_are_paced_as_searches(box: Any, clock: FakeTime) -> None:
    client = destination(box, clock).client()
    assert hubspot_connector._is_search(client.crm.contacts.search_api)
    assert hubspot_connector._is_search(client.crm.objects.tasks.search_api)
    assert not hubspot_connector._is_search(client.crm.objects.tasks.basic_api)


def test_alert_task_lookups_slow_down_on_the_search_limit(box: Any, clock: FakeTime) -> None:
    # hubspot_leads translates the tasks package's errors inside the call: still paced.
    from connectors.hubspot_leads import find_alert_task

    box.hubspot.search_limiter.per_second = 1
    dest = destination(box, clock)
    started = clock.now
    for n in range(6):
        assert find_alert_task(dest, f"alert-{n}") is None
    assert dest.search_pacer.rate == 1.0
    assert count(box, "hs.tasks.search") == 6 + 2  # the two refusals that taught the pace
    assert clock.now - started >= 6 - 1 - 1  # one a second, after the first two refusals
