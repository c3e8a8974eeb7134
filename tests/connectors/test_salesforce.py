"""The Salesforce connector against the real simple-salesforce, with HTTP emulated by ``responses``.

Wire shapes follow Salesforce's REST API documentation:
- SOQL query and paging (totalSize, done, nextRecordsUrl, records[].attributes):
  https://developer.salesforce.com/docs/platform/api-rest/guide/resources-query.md
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api/resources_query_more_results.htm
- sObject Collections update (PATCH composite/sobjects, allOrNone, SaveResult list in order):
  https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-update.html
  https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_update_saveresult.htm
- Error bodies ([{"message", "errorCode", "fields"}], 401 INVALID_SESSION_ID, 403 REQUEST_LIMIT_EXCEEDED):
  https://developer.salesforce.com/docs/platform/api-rest/guide/errorcodes.md
- sObject Describe: https://developer.salesforce.com/docs/platform/api-rest/guide/dome-sobject-describe.md
- Sforce-Limit-Info header: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm
- Limits resource: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_limits.htm
- SOQL string escapes:
  https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_quotedstringescapes.htm
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import responses
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from responses import matchers
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceMalformedRequest,
)

from connectors.salesforce import (
    SalesforceDestination,
    TimeoutSession,
    field_spec,
    format_value,
    parse_sf_datetime,
    soql_datetime,
    soql_quote,
    translate,
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

INSTANCE = "https://example.my.salesforce.com"
SESSION_ID = "00D5g000004XyZa!AQ4AQFakeSessionTokenValue.abc123_XYZ"
NEW_SESSION_ID = "00D5g000004XyZa!AQ4AQRefreshedSessionToken.def456"
BASE = f"{INSTANCE}/services/data/v59.0"
DESCRIBE_URL = f"{BASE}/sobjects/Account/describe/"
QUERY_URL = f"{BASE}/query/"
COLLECTIONS_URL = f"{BASE}/composite/sobjects"
LIMITS_URL = f"{BASE}/limits/"

INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
TOTAL_REQUESTS = [
    {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
]
CONCURRENT = [
    {
        "message": "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
        "errorCode": "REQUEST_LIMIT_EXCEEDED",
    }
]
SERVER_UNAVAILABLE = [{"message": "Server unavailable", "errorCode": "SERVER_UNAVAILABLE"}]


def sf_field(name: str, type_: str, **extra: Any) -> dict[str, Any]:
    """One entry of describe's ``fields`` with the attributes the connector reads."""
    entry: dict[str, Any] = {
        "name": name,
        "type": type_,
        "label": name.replace("__c", "").replace("_", " "),
        "length": 0,
        "scale": 0,
        "updateable": True,
        "picklistValues": [],
    }
    entry.update(extra)
    return entry


ACCOUNT_FIELDS = [
    sf_field("Id", "id", length=18, updateable=False),
    sf_field("Name", "string", length=255),
    sf_field("LastModifiedDate", "datetime", updateable=False),
    sf_field("ParentId", "reference", length=18),
    sf_field("OwnerId", "reference", length=18),
    sf_field("Website", "url", length=255),
    sf_field("Domain__c", "string", length=80, externalId=True),
    sf_field("PQA_Score__c", "double", scale=0),
    sf_field("PQA_Ratio__c", "percent", scale=2),
    sf_field("AnnualRevenue", "currency", scale=2),
    sf_field("NumberOfEmployees", "int"),
    sf_field(
        "PQA_Tier__c",
        "picklist",
        length=255,
        picklistValues=[
            {"active": True, "value": "sales", "label": "Sales", "defaultValue": False},
            {"active": True, "value": "success", "label": "Success", "defaultValue": False},
            {"active": False, "value": "legacy", "label": "Legacy", "defaultValue": False},
        ],
    ),
    sf_field("PQA_Signals__c", "textarea", length=40),
    sf_field("PQA_Motions__c", "multipicklist", length=4099),
    sf_field("PQA_Qualified_Since__c", "datetime"),
    sf_field("PQA_Scored_On__c", "date"),
    sf_field("Is_PQA__c", "boolean"),
    sf_field("Contact_Email__c", "email", length=80),
    sf_field("Phone", "phone", length=40),
    sf_field("BillingAddress", "address", updateable=False),
]
DESCRIBE = {"name": "Account", "label": "Account", "fields": ACCOUNT_FIELDS}

MAPPING = DestinationMapping(
    destination="salesforce",
    object="Account",
    match=MatchRule(domain_fields=("Website", "Domain__c")),
    fields=(
        FieldMapping("PQA_Score__c", "score"),
        FieldMapping("PQA_Tier__c", "tier"),
        FieldMapping("pqa_signals__c", "signals"),  # config case differs from the API's
        FieldMapping("Domain__c", "domain"),  # also a domain field: selected once
    ),
)
SPECS = {spec.name: spec for spec in (field_spec(f) for f in ACCOUNT_FIELDS)}


def account(n: int, **fields: Any) -> dict[str, Any]:
    """A query result record, shaped as the API returns it."""
    record_id = f"001{n:015d}"
    return {
        "attributes": {
            "type": "Account",
            "url": f"/services/data/v59.0/sobjects/Account/{record_id}",
        },
        "Id": record_id,
        "Name": f"Account {n}",
        "LastModifiedDate": "2026-11-22T10:00:00.000+0000",
        "ParentId": None,
        "OwnerId": "005000000000001AAA",
        "Website": f"https://www.acme{n}.com",
        "Domain__c": None,
        "PQA_Score__c": 80.0,
        "PQA_Tier__c": "sales",
        "PQA_Signals__c": None,
        **fields,
    }


def rid(n: int) -> str:
    return f"001{n:015d}"


def save_ok(record: dict[str, Any]) -> dict[str, Any]:
    return {"id": record["id"], "success": True, "errors": []}


def save_error(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    return {
        "success": False,
        "errors": [{"statusCode": code, "message": message, "fields": fields or []}],
    }


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def sf() -> Salesforce:
    return Salesforce(instance_url=INSTANCE, session_id=SESSION_ID, version="59.0")


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def dest(sf: Salesforce, sleeps: list[float]) -> SalesforceDestination:
    return SalesforceDestination(sf, sleep=sleeps.append)


def body_text(request: requests.PreparedRequest) -> str:
    body = request.body
    assert isinstance(body, str | bytes), body
    return body.decode() if isinstance(body, bytes) else body


def patch_bodies(rsps: responses.RequestsMock) -> list[dict[str, Any]]:
    return [
        json.loads(body_text(call.request)) for call in rsps.calls if call.request.method == "PATCH"
    ]


def collections_echo(
    decide: Callable[[dict[str, Any]], dict[str, Any]] = save_ok,
) -> Callable[[requests.PreparedRequest], tuple[int, dict[str, str], str]]:
    """A composite/sobjects endpoint answering each record with ``decide(record)``."""

    def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        body = json.loads(body_text(request))
        return 200, {}, json.dumps([decide(record) for record in body["records"]])

    return callback


def changes_for(count: int, **fields: Any) -> list[RecordChange]:
    values = fields or {"PQA_Score__c": 87.0}
    return [RecordChange(rid(n), dict(values), f"acme{n}.com") for n in range(count)]


# --- describe ------------------------------------------------------------------------------


def test_describe_maps_salesforce_types_and_attributes(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    specs = dest.describe("Account")
    types = {name: spec.type for name, spec in specs.items()}
    assert types == {
        "Id": FieldType.ID,
        "Name": FieldType.STRING,
        "LastModifiedDate": FieldType.DATETIME,
        "ParentId": FieldType.ID,
        "OwnerId": FieldType.ID,
        "Website": FieldType.STRING,
        "Domain__c": FieldType.STRING,
        "PQA_Score__c": FieldType.NUMBER,
        "PQA_Ratio__c": FieldType.NUMBER,
        "AnnualRevenue": FieldType.NUMBER,
        "NumberOfEmployees": FieldType.INTEGER,
        "PQA_Tier__c": FieldType.PICKLIST,
        "PQA_Signals__c": FieldType.TEXTAREA,
        "PQA_Motions__c": FieldType.MULTIPICKLIST,
        "PQA_Qualified_Since__c": FieldType.DATETIME,
        "PQA_Scored_On__c": FieldType.DATE,
        "Is_PQA__c": FieldType.BOOLEAN,
        "Contact_Email__c": FieldType.STRING,
        "Phone": FieldType.STRING,
        "BillingAddress": FieldType.OTHER,
    }
    tier = specs["PQA_Tier__c"]
    assert tier.picklist_values == ("sales", "success")  # inactive values cannot be written
    assert tier.length == 255 and tier.label == "PQA Tier" and tier.updateable
    assert specs["PQA_Ratio__c"].scale == 2 and specs["PQA_Score__c"].scale == 0
    assert specs["Name"].scale is None and specs["PQA_Score__c"].length is None
    assert specs["Id"].updateable is False
    assert specs["Domain__c"].external_id and not specs["Website"].external_id
    # cached: a second describe makes no call
    assert dest.describe("Account") == specs
    assert len(rsps.calls) == 1
    assert dest.api_calls()["describe"] == 1


def test_every_call_carries_the_request_timeout(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    dest.describe("Account")
    assert rsps.calls[0].request.req_kwargs["timeout"] == 60.0  # type: ignore[attr-defined]


def test_timeout_session_defaults_the_timeout(rsps: responses.RequestsMock) -> None:
    rsps.get("https://login.salesforce.com/x", body="ok")
    TimeoutSession(12.5).get("https://login.salesforce.com/x")
    assert rsps.calls[0].request.req_kwargs["timeout"] == 12.5  # type: ignore[attr-defined]


# --- reading -------------------------------------------------------------------------------

EXPECTED_SOQL = (
    "SELECT Id, Name, LastModifiedDate, ParentId, OwnerId, Website, Domain__c, PQA_Score__c, "
    "PQA_Tier__c, pqa_signals__c FROM Account"
)


def test_read_records_pages_through_next_records_url(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    next1 = "/services/data/v59.0/query/01gD0000002HU6KIAW-2000"
    next2 = "/services/data/v59.0/query/01gD0000002HU6KIAW-4000"
    rsps.get(
        QUERY_URL,
        match=[matchers.query_param_matcher({"q": EXPECTED_SOQL})],
        json={
            "totalSize": 5,
            "done": False,
            "nextRecordsUrl": next1,
            "records": [account(0), account(1)],
        },
    )
    rsps.get(
        INSTANCE + next1,
        json={
            "totalSize": 5,
            "done": False,
            "nextRecordsUrl": next2,
            "records": [account(2), account(3)],
        },
    )
    rsps.get(INSTANCE + next2, json={"totalSize": 5, "done": True, "records": [account(4)]})

    records = list(dest.read_records(MAPPING))

    assert [r.id for r in records] == [rid(n) for n in range(5)]
    assert dest.api_calls()["read"] == 3  # one per page
    assert dest.api_calls()["describe"] == 1


def test_records_are_parsed_into_crm_records(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    raw = account(
        7,
        Website="acme.co.uk",
        Domain__c="  ",
        ParentId="001000000000000999",
        PQA_Signals__c="pricing_page; seven_users",
        LastModifiedDate="2026-03-01T08:30:15.000+0200",
    )
    rsps.get(QUERY_URL, json={"totalSize": 1, "done": True, "records": [raw]})

    (record,) = list(dest.read_records(MAPPING))

    assert record.id == rid(7)
    assert record.domain_values == ("acme.co.uk",)  # blank values are not domains
    assert record.fields == {
        "PQA_Score__c": 80.0,
        "PQA_Tier__c": "sales",
        "pqa_signals__c": "pricing_page; seven_users",
        "Domain__c": "  ",
    }
    assert record.name == "Account 7"
    assert record.parent_id == "001000000000000999"
    assert record.owner_id == "005000000000001AAA"
    assert record.last_modified == datetime(2026, 3, 1, 6, 30, 15, tzinfo=UTC)
    assert record.last_modified.tzinfo is not None


def test_fields_the_object_lacks_are_not_selected(
    rsps: responses.RequestsMock, sf: Salesforce
) -> None:
    describe = {
        "name": "Company__c",
        "fields": [
            sf_field("Id", "id"),
            sf_field("Name", "string"),
            sf_field("LastModifiedDate", "datetime"),
            sf_field("OwnerId", "reference"),
            sf_field("Web__c", "url"),
            sf_field("Score__c", "double"),
        ],
    }
    rsps.get(f"{BASE}/sobjects/Company__c/describe/", json=describe)
    soql = "SELECT Id, Name, LastModifiedDate, OwnerId, Web__c, Score__c FROM Company__c"
    rsps.get(
        QUERY_URL,
        match=[matchers.query_param_matcher({"q": soql})],
        json={"totalSize": 0, "done": True, "records": []},
    )
    mapping = DestinationMapping(
        "salesforce", "Company__c", MatchRule(("Web__c",)), (FieldMapping("Score__c", "score"),)
    )
    assert list(SalesforceDestination(sf).read_records(mapping)) == []


def test_relationship_paths_are_read_through_nested_records(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    raw = account(1, Parent={"attributes": {"type": "Account"}, "Website": "parent.example"})
    rsps.get(QUERY_URL, json={"totalSize": 1, "done": True, "records": [raw]})
    mapping = DestinationMapping(
        "salesforce", "Account", MatchRule(("Website", "Parent.Website")), MAPPING.fields
    )
    (record,) = list(dest.read_records(mapping))
    assert record.domain_values == ("https://www.acme1.com", "parent.example")
    assert "Parent.Website" in parse_qs(urlparse(str(rsps.calls[-1].request.url)).query)["q"][0]


@pytest.mark.parametrize(
    "mapping",
    [
        DestinationMapping("salesforce", "Account WHERE Id != null", MatchRule(("Website",)), ()),
        DestinationMapping("salesforce", "Account", MatchRule(("Website FROM User --",)), ()),
        DestinationMapping(
            "salesforce", "Account", MatchRule(("Website",)), (FieldMapping("X__c,Id", "score"),)
        ),
        DestinationMapping("salesforce", "Account", MatchRule(("Web'site",)), ()),
        DestinationMapping("salesforce", "Account", MatchRule(("1Website",)), ()),
    ],
)
def test_untrusted_names_are_refused_before_any_call(
    rsps: responses.RequestsMock, dest: SalesforceDestination, mapping: DestinationMapping
) -> None:
    with pytest.raises(FatalError):
        list(dest.read_records(mapping))
    assert len(rsps.calls) == 0


def test_read_records_modified_since_uses_a_utc_datetime_literal(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    soql = EXPECTED_SOQL + " WHERE SystemModstamp > 2026-11-22T08:00:00Z"
    rsps.get(
        QUERY_URL,
        match=[matchers.query_param_matcher({"q": soql})],
        json={"totalSize": 1, "done": True, "records": [account(1)]},
    )
    since = datetime(2026, 11, 22, 10, 0, 0, 999, tzinfo=timezone(timedelta(hours=2)))
    assert [r.id for r in dest.read_records_modified_since(MAPPING, since)] == [rid(1)]


# --- SOQL literals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Bob's BBQ", r"'Bob\'s BBQ'"),
        ("back\\slash", r"'back\\slash'"),
        ('say "hi"', r"'say \"hi\"'"),
        ("a\nb\rc\td", r"'a\nb\rc\td'"),
        ("bell\bform\f", r"'bell\bform\f'"),
        ("nul\x00esc\x1b", r"'nul\u0000esc\u001b'"),
        ("50%_off", "'50%_off'"),
        ("', Id FROM User --", r"'\', Id FROM User --'"),
        ("é ünïcode ✓", "'é ünïcode ✓'"),
        ("", "''"),
    ],
)
def test_soql_quote(value: str, expected: str) -> None:
    assert soql_quote(value) == expected


def test_soql_quote_like_escapes_wildcards() -> None:
    assert soql_quote("50%_off", like=True) == r"'50\%\_off'"


def test_soql_datetime_literal() -> None:
    assert soql_datetime(datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02T03:04:05Z"
    aware = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))
    assert soql_datetime(aware) == "2026-01-02T08:04:05Z"


_UNESCAPE = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}


def _soql_unquote(literal: str) -> str:
    """A reference reader of a SOQL string literal: fails on any unescaped quote."""
    assert literal[0] == "'" and literal[-1] == "'"
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        char = body[i]
        assert char != "'", "unescaped quote ends the literal early"
        if char == "\\":
            nxt = body[i + 1]
            if nxt == "u":
                out.append(chr(int(body[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_UNESCAPE[nxt])
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_soql_quote_round_trips_and_never_ends_early(value: str) -> None:
    literal = soql_quote(value)
    assert _soql_unquote(literal) == value
    assert not any(ord(c) < 0x20 for c in literal)


# --- value formatting ------------------------------------------------------------------------


def spec(type_: FieldType, **kw: Any) -> FieldSpec:
    return FieldSpec(name="F__c", type=type_, **kw)


@pytest.mark.parametrize(
    ("value", "field", "expected"),
    [
        (None, spec(FieldType.STRING), None),
        (87.4, spec(FieldType.NUMBER, scale=0), 87),
        (12.345, spec(FieldType.NUMBER, scale=2), 12.35),
        (12.3, spec(FieldType.NUMBER), 12.3),
        (7.0, spec(FieldType.INTEGER), 7),
        (float("nan"), spec(FieldType.NUMBER, scale=2), None),
        (True, spec(FieldType.BOOLEAN), True),
        (False, spec(FieldType.NUMBER), False),
        (
            datetime(2026, 11, 22, 11, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1))),
            spec(FieldType.DATETIME),
            "2026-11-22T10:00:00.123Z",
        ),
        (datetime(2026, 11, 22, 10, 0), spec(FieldType.DATETIME), "2026-11-22T10:00:00.000Z"),
        (datetime(2026, 11, 22, 23, 30, tzinfo=UTC), spec(FieldType.DATE), "2026-11-22"),
        (date(2026, 11, 22), spec(FieldType.DATE), "2026-11-22"),
        (date(2026, 11, 22), spec(FieldType.DATETIME), "2026-11-22T00:00:00.000Z"),
        ("sales", spec(FieldType.PICKLIST, length=255), "sales"),
        ("x" * 50, spec(FieldType.STRING, length=10), "x" * 9 + "…"),
        (["pricing_page", "seven_users"], spec(FieldType.TEXTAREA), "pricing_page; seven_users"),
        (["sales", "abm"], spec(FieldType.MULTIPICKLIST), "sales;abm"),
        (42.0, spec(FieldType.STRING), "42"),
        ("plain", None, "plain"),
        (3, None, 3),
    ],
)
def test_format_value_for_the_wire(value: Any, field: FieldSpec | None, expected: Any) -> None:
    formatted = format_value(value, field)
    assert formatted == expected
    assert type(formatted) is type(expected)


# --- writing -------------------------------------------------------------------------------


def test_writes_go_in_batches_of_200_with_exact_bodies(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.add_callback(responses.PATCH, COLLECTIONS_URL, callback=collections_echo())
    changes = changes_for(450)

    result = dest.write("Account", changes, SPECS)

    bodies = patch_bodies(rsps)
    assert len(rsps.calls) == math.ceil(450 / 200) == 3
    assert [len(b["records"]) for b in bodies] == [200, 200, 50]
    assert all(b["allOrNone"] is False for b in bodies)
    assert bodies[0]["records"][0] == {
        "attributes": {"type": "Account"},
        "id": rid(0),
        "PQA_Score__c": 87,
    }
    sent = [r["id"] for b in bodies for r in b["records"]]
    assert sent == [rid(n) for n in range(450)]
    assert result.written == sent
    assert result.rejected == [] and result.not_attempted == []
    assert result.calls == 3 and result.method == "collections"
    assert dest.api_calls()["write"] == 3


def test_write_body_formats_every_value_type(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.add_callback(responses.PATCH, COLLECTIONS_URL, callback=collections_echo())
    change = RecordChange(
        rid(1),
        {
            "PQA_Score__c": 91.6,
            "PQA_Ratio__c": 0.12345,
            "NumberOfEmployees": 12.0,
            "PQA_Tier__c": "sales",
            "PQA_Signals__c": ["terms_page_view", "pricing_page_view", "seven_plus_users"],
            "PQA_Motions__c": ["sales", "abm"],
            "PQA_Qualified_Since__c": datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
            "PQA_Scored_On__c": date(2026, 11, 23),
            "Is_PQA__c": True,
            "Domain__c": None,
        },
        "acme.com",
    )
    dest.write("Account", [change], SPECS)
    (body,) = patch_bodies(rsps)
    assert body == {
        "allOrNone": False,
        "records": [
            {
                "attributes": {"type": "Account"},
                "id": rid(1),
                "PQA_Score__c": 92,
                "PQA_Ratio__c": 0.12,
                "NumberOfEmployees": 12,
                "PQA_Tier__c": "sales",
                "PQA_Signals__c": "terms_page_view; pricing_page_view; sev…",
                "PQA_Motions__c": "sales;abm",
                "PQA_Qualified_Since__c": "2026-11-22T10:00:00.000Z",
                "PQA_Scored_On__c": "2026-11-23",
                "Is_PQA__c": True,
                "Domain__c": None,
            }
        ],
    }
    assert len(body["records"][0]["PQA_Signals__c"]) == 40


def test_no_changes_make_no_calls(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    result = dest.write("Account", [], SPECS)
    assert result.calls == 0 and len(rsps.calls) == 0


def test_untrusted_field_names_in_changes_are_refused(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    with pytest.raises(FatalError):
        dest.write("Account", [RecordChange(rid(1), {'Name", "x': 1}, "a")], SPECS)
    assert len(rsps.calls) == 0


def test_per_record_errors_become_rejections(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.patch(
        COLLECTIONS_URL,
        json=[
            {"id": rid(0), "success": True, "errors": []},
            save_error(
                "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                "Score must be between 0 and 100",
                ["PQA_Score__c"],
            ),
            save_error("ENTITY_IS_DELETED", "entity is deleted"),
            {
                "success": False,
                "errors": [
                    {
                        "statusCode": "STRING_TOO_LONG",
                        "message": "Signals: data value too large",
                        "fields": ["PQA_Signals__c"],
                    },
                    {
                        "statusCode": "INVALID_FIELD",
                        "message": "bad field",
                        "fields": ["PQA_Tier__c", "PQA_Signals__c"],
                    },
                ],
            },
        ],
    )
    result = dest.write("Account", changes_for(4), SPECS)

    assert result.written == [rid(0)]
    assert [(r.record_id, r.code, r.fields, r.retriable) for r in result.rejected] == [
        (rid(1), "FIELD_CUSTOM_VALIDATION_EXCEPTION", ("PQA_Score__c",), False),
        (rid(2), "ENTITY_IS_DELETED", (), False),
        (rid(3), "STRING_TOO_LONG", ("PQA_Signals__c", "PQA_Tier__c"), False),
    ]
    assert result.rejected[0].message == "Score must be between 0 and 100"
    assert result.rejected[2].message == "Signals: data value too large; bad field"
    assert result.calls == 1 and result.not_attempted == []


def test_locked_rows_are_retried_once_in_a_smaller_batch(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    dest = SalesforceDestination(sf, batch_size=4, sleep=sleeps.append, lock_retry_delay=2.0)
    lock = save_error("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record")
    answers = [
        [{"id": rid(0), "success": True, "errors": []}, lock, lock, lock],
        [
            {"id": rid(4), "success": True, "errors": []},
            {"id": rid(5), "success": True, "errors": []},
        ],
        [{"id": rid(1), "success": True, "errors": []}, lock],  # retry: rows 1 and 2
        [{"id": rid(3), "success": True, "errors": []}],  # retry: row 3
    ]
    for answer in answers:
        rsps.patch(COLLECTIONS_URL, json=answer)

    result = dest.write("Account", changes_for(6), SPECS)

    bodies = patch_bodies(rsps)
    assert [[r["id"] for r in b["records"]] for b in bodies] == [
        [rid(0), rid(1), rid(2), rid(3)],
        [rid(4), rid(5)],
        [rid(1), rid(2)],  # half the batch size
        [rid(3)],
    ]
    assert sorted(result.written) == sorted([rid(0), rid(4), rid(5), rid(1), rid(3)])
    assert [(r.record_id, r.code, r.retriable) for r in result.rejected] == [
        (rid(2), "UNABLE_TO_LOCK_ROW", True)
    ]
    assert result.calls == 4
    assert sleeps == [2.0]


def test_expired_session_reauthenticates_once_then_succeeds(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    def reauthenticate() -> Salesforce:
        return Salesforce(instance_url=INSTANCE, session_id=NEW_SESSION_ID, version="59.0")

    dest = SalesforceDestination(sf, reauthenticate=reauthenticate, sleep=sleeps.append)
    rsps.get(DESCRIBE_URL, status=401, json=INVALID_SESSION)
    rsps.get(DESCRIBE_URL, json=DESCRIBE)

    assert "PQA_Score__c" in dest.describe("Account")
    auth_headers = [call.request.headers["Authorization"] for call in rsps.calls]
    assert auth_headers == [f"Bearer {SESSION_ID}", f"Bearer {NEW_SESSION_ID}"]
    assert dest.api_calls()["auth"] == 1
    assert dest.api_calls()["describe"] == 2
    assert sleeps == []


def test_expired_session_mid_write_retries_the_same_batch(
    rsps: responses.RequestsMock, sf: Salesforce
) -> None:
    new = Salesforce(instance_url=INSTANCE, session_id=NEW_SESSION_ID, version="59.0")
    dest = SalesforceDestination(sf, reauthenticate=lambda: new, sleep=lambda s: None)
    rsps.patch(COLLECTIONS_URL, status=401, json=INVALID_SESSION)
    rsps.add_callback(responses.PATCH, COLLECTIONS_URL, callback=collections_echo())
    result = dest.write("Account", changes_for(3), SPECS)
    assert result.written == [rid(0), rid(1), rid(2)]
    assert result.calls == 2
    first, second = patch_bodies(rsps)
    assert first == second


def test_failed_reauthentication_is_an_auth_error(
    rsps: responses.RequestsMock, sf: Salesforce
) -> None:
    def reauthenticate() -> Salesforce:
        raise SalesforceAuthenticationFailed(
            "INVALID_LOGIN", "Invalid username, password, security token; or user locked out."
        )

    dest = SalesforceDestination(sf, reauthenticate=reauthenticate, sleep=lambda s: None)
    rsps.get(DESCRIBE_URL, status=401, json=INVALID_SESSION)
    with pytest.raises(AuthError) as info:
        dest.describe("Account")
    assert "INVALID_LOGIN" in str(info.value)
    assert len(rsps.calls) == 1
    assert dest.api_calls()["auth"] == 1


def test_session_still_invalid_after_reauthentication_is_an_auth_error(
    rsps: responses.RequestsMock, sf: Salesforce
) -> None:
    new = Salesforce(instance_url=INSTANCE, session_id=NEW_SESSION_ID, version="59.0")
    reauths: list[int] = []

    def reauthenticate() -> Salesforce:
        reauths.append(1)
        return new

    dest = SalesforceDestination(sf, reauthenticate=reauthenticate, sleep=lambda s: None)
    rsps.get(DESCRIBE_URL, status=401, json=INVALID_SESSION)
    with pytest.raises(AuthError) as info:
        dest.describe("Account")
    assert info.value.code == "INVALID_SESSION_ID"
    assert len(reauths) == 1 and len(rsps.calls) == 2


def test_expired_session_without_a_way_to_reauthenticate_fails_at_once(
    rsps: responses.RequestsMock, dest: SalesforceDestination, sleeps: list[float]
) -> None:
    rsps.get(DESCRIBE_URL, status=401, json=INVALID_SESSION)
    with pytest.raises(AuthError):
        dest.describe("Account")
    assert len(rsps.calls) == 1 and sleeps == []


def test_expired_session_during_a_write_stops_it_and_reports_why(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.patch(COLLECTIONS_URL, status=401, json=INVALID_SESSION)
    result = dest.write("Account", changes_for(2), SPECS)
    assert result.error is not None and result.written == []
    assert sorted(result.not_attempted) == sorted(c.record_id for c in changes_for(2))


def test_daily_limit_exhausted_is_quota_exhausted_without_retry(
    rsps: responses.RequestsMock, dest: SalesforceDestination, sleeps: list[float]
) -> None:
    rsps.get(DESCRIBE_URL, status=403, json=TOTAL_REQUESTS)
    with pytest.raises(QuotaExhaustedError) as info:
        dest.describe("Account")
    assert info.value.code == "REQUEST_LIMIT_EXCEEDED"
    assert len(rsps.calls) == 1 and sleeps == []


def test_daily_limit_during_writes_leaves_the_rest_not_attempted(
    rsps: responses.RequestsMock, sf: Salesforce
) -> None:
    dest = SalesforceDestination(sf, batch_size=2, sleep=lambda s: None)
    rsps.add_callback(responses.PATCH, COLLECTIONS_URL, callback=collections_echo())
    rsps.patch(COLLECTIONS_URL, status=403, json=TOTAL_REQUESTS)
    # responses hands out the registered answers in order: first success, then the 403
    result = dest.write("Account", changes_for(5), SPECS)
    assert result.written == [rid(0), rid(1)]
    assert result.not_attempted == [rid(2), rid(3), rid(4)]
    assert result.calls == 2


def test_concurrent_limit_is_rate_limited_and_retried(
    rsps: responses.RequestsMock, dest: SalesforceDestination, sleeps: list[float]
) -> None:
    rsps.get(DESCRIBE_URL, status=403, json=CONCURRENT)
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    assert dest.describe("Account")
    assert len(rsps.calls) == 2 and len(sleeps) == 1


def test_503_then_success_is_retried(
    rsps: responses.RequestsMock, dest: SalesforceDestination, sleeps: list[float]
) -> None:
    rsps.patch(COLLECTIONS_URL, status=503, json=SERVER_UNAVAILABLE)
    rsps.add_callback(responses.PATCH, COLLECTIONS_URL, callback=collections_echo())
    result = dest.write("Account", changes_for(2), SPECS)
    assert result.written == [rid(0), rid(1)]
    assert result.calls == 2
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.5


def test_retry_after_is_honoured(
    rsps: responses.RequestsMock, dest: SalesforceDestination, sleeps: list[float]
) -> None:
    rsps.get(
        DESCRIBE_URL,
        status=429,
        json=[{"errorCode": "TOO_MANY", "message": "slow down"}],
        headers={"Retry-After": "7"},
    )
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    dest.describe("Account")
    assert sleeps == [7.0]


def test_500_forever_leaves_records_not_attempted(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    dest = SalesforceDestination(sf, batch_size=2, sleep=sleeps.append)
    rsps.patch(
        COLLECTIONS_URL,
        status=500,
        json=[{"errorCode": "UNKNOWN_EXCEPTION", "message": "An unexpected error occurred"}],
    )
    result = dest.write("Account", changes_for(3), SPECS)
    assert result.written == [] and result.rejected == []
    assert result.not_attempted == [rid(0), rid(1), rid(2)]
    assert result.calls == 5 == len(rsps.calls)  # five attempts at the first batch, then stop
    assert len(sleeps) == 4


def test_timeout_is_retried(rsps: responses.RequestsMock, dest: SalesforceDestination) -> None:
    rsps.patch(
        COLLECTIONS_URL, body=requests.exceptions.ReadTimeout("read timed out. (read timeout=60)")
    )
    rsps.add_callback(responses.PATCH, COLLECTIONS_URL, callback=collections_echo())
    result = dest.write("Account", changes_for(1), SPECS)
    assert result.written == [rid(0)] and result.calls == 2


def test_connection_errors_forever_raise_retriable_from_reads(
    rsps: responses.RequestsMock, dest: SalesforceDestination, sleeps: list[float]
) -> None:
    rsps.get(DESCRIBE_URL, body=requests.exceptions.ConnectionError("connection refused"))
    with pytest.raises(RetriableError) as info:
        dest.describe("Account")
    assert info.value.code == "CONNECTION_ERROR"
    assert len(rsps.calls) == 5 and len(sleeps) == 4


def test_request_level_invalid_field_stops_the_write_with_salesforce_message(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    message = "No such column 'Bogus__c' on sobject of type Account"
    rsps.patch(
        COLLECTIONS_URL, status=400, json=[{"errorCode": "INVALID_FIELD", "message": message}]
    )
    result = dest.write("Account", changes_for(1, Bogus__c=1), SPECS)
    assert result.error is not None and "INVALID_FIELD" in result.error
    assert message in result.error
    assert result.not_attempted == [rid(0)] and result.rejected == []
    assert len(rsps.calls) == 1


def test_a_request_refused_whole_keeps_what_earlier_batches_wrote(
    rsps: responses.RequestsMock, sf: Salesforce
) -> None:
    """A malformed Collections request (400: over 200 records, a record without its type...)
    writes none of its records: they are not per-record rejections, the write stops there and
    reports what earlier batches wrote."""
    dest = SalesforceDestination(sf, batch_size=2, sleep=lambda _s: None)
    rsps.patch(COLLECTIONS_URL, json=[save_ok({"id": rid(0)}), save_ok({"id": rid(1)})])
    rsps.patch(
        COLLECTIONS_URL,
        status=400,
        json=[{"errorCode": "INVALID_TYPE", "message": "Must send a concrete entity type."}],
    )
    result = dest.write("Account", changes_for(5), SPECS)
    assert result.written == [rid(0), rid(1)]
    assert result.rejected == []
    assert result.not_attempted == [rid(2), rid(3), rid(4)]
    assert result.error is not None and "INVALID_TYPE" in result.error
    assert len(rsps.calls) == 2  # not retried, nothing sent after it


def test_a_row_lock_met_by_a_trigger_is_retried_like_a_direct_one(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    """CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY carrying UNABLE_TO_LOCK_ROW: a trigger's DML met the
    lock. Retried as a lock and, if it stays, reported as one (retriable)."""
    dest = SalesforceDestination(sf, batch_size=4, sleep=sleeps.append, lock_retry_delay=2.0)
    trigger_lock = save_error(
        "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
        "PQA_Rollup: execution of AfterUpdate caused by: System.DmlException: Update failed. "
        f"First exception on row 0 with id {rid(9)}; first error: UNABLE_TO_LOCK_ROW, unable to "
        f"obtain exclusive access to this record or 1 records: {rid(9)}: []",
    )
    other = save_error("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "PQA_Rollup: divide by zero")
    rsps.patch(COLLECTIONS_URL, json=[save_ok({"id": rid(0)}), trigger_lock, trigger_lock, other])
    rsps.patch(COLLECTIONS_URL, json=[save_ok({"id": rid(1)}), trigger_lock])
    result = dest.write("Account", changes_for(4), SPECS)
    bodies = patch_bodies(rsps)
    assert [[r["id"] for r in b["records"]] for b in bodies] == [
        [rid(0), rid(1), rid(2), rid(3)],
        [rid(1), rid(2)],
    ]
    assert sorted(result.written) == [rid(0), rid(1)]
    rejected = {r.record_id: (r.code, r.retriable) for r in result.rejected}
    assert rejected == {
        rid(2): ("UNABLE_TO_LOCK_ROW", True),
        rid(3): ("CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", False),
    }
    assert "first error: UNABLE_TO_LOCK_ROW" in next(
        r.message for r in result.rejected if r.record_id == rid(2)
    )
    assert sleeps == [2.0]


def test_a_request_level_trigger_lock_is_retriable() -> None:
    content = [
        {
            "errorCode": "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
            "message": "T: execution of AfterUpdate ... first error: UNABLE_TO_LOCK_ROW, unable to "
            "obtain exclusive access to this record: []",
        }
    ]
    # simple-salesforce hands over the parsed JSON error list (its stubs say bytes).
    parsed: Any = content
    error = translate(
        SalesforceMalformedRequest(f"{BASE}/sobjects/Account/x", 400, "Account", parsed)
    )
    assert type(error) is RetriableError and error.code == "UNABLE_TO_LOCK_ROW"


def test_usage_above_the_allocation_leaves_no_write_budget(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    """Salesforce lets an org run past its daily allocation for a while
    (``api-usage=110018/100000``): nothing remains, the budget is zero, no write is sent."""
    rsps.get(DESCRIBE_URL, json=DESCRIBE, headers={"Sforce-Limit-Info": "api-usage=110018/100000"})
    dest.describe("Account")
    assert dest.daily_api_remaining() == (0, 100000)
    assert dest.write_budget(0.5) == 0
    result = dest.write("Account", changes_for(3), SPECS, max_write_calls=dest.write_budget(0.5))
    assert result.written == [] and result.not_attempted == [rid(0), rid(1), rid(2)]
    assert result.method == "collections+budget"
    assert dest.api_calls()["write"] == 0


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        (requests.exceptions.ConnectTimeout("t"), RetriableError, "TIMEOUT"),
        (requests.exceptions.ReadTimeout("t"), RetriableError, "TIMEOUT"),
        (requests.exceptions.ConnectionError("c"), RetriableError, "CONNECTION_ERROR"),
        (requests.exceptions.ChunkedEncodingError("c"), RetriableError, "REQUEST_ERROR"),
        (requests.exceptions.MissingSchema("m"), FatalError, "INVALID_URL"),
    ],
)
def test_translate_requests_errors(exc: Exception, kind: type, code: str) -> None:
    error = translate(exc)
    assert type(error) is kind
    assert getattr(error, "code", None) == code


def test_translate_sorts_salesforce_errors(rsps: responses.RequestsMock, sf: Salesforce) -> None:
    cases: list[tuple[int, Any, type]] = [
        (401, INVALID_SESSION, AuthError),
        (403, TOTAL_REQUESTS, QuotaExhaustedError),
        (403, CONCURRENT, RateLimitedError),
        (403, [{"errorCode": "INSUFFICIENT_ACCESS", "message": "no"}], FatalError),
        (400, [{"errorCode": "MALFORMED_QUERY", "message": "unexpected token"}], FatalError),
        (400, [{"errorCode": "UNABLE_TO_LOCK_ROW", "message": "locked"}], RetriableError),
        (
            404,
            [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}],
            FatalError,
        ),
        (500, [{"errorCode": "UNKNOWN_EXCEPTION", "message": "oops"}], RetriableError),
        (502, "<html>Bad gateway</html>", RetriableError),
    ]
    for status, body, kind in cases:
        rsps.get(
            f"{BASE}/case/{status}",
            status=status,
            body=json.dumps(body) if not isinstance(body, str) else body,
        )
        with pytest.raises(Exception) as info:
            sf.restful(f"case/{status}")
        assert type(translate(info.value)) is kind, (status, body)
        rsps.reset()


# --- API usage -------------------------------------------------------------------------------


def test_daily_api_remaining_from_the_limit_info_header(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(DESCRIBE_URL, json=DESCRIBE, headers={"Sforce-Limit-Info": "api-usage=25/15000"})
    dest.describe("Account")
    assert dest.daily_api_remaining() == (14975, 15000)
    assert dest.api_calls()["limits"] == 0


def test_daily_api_remaining_from_the_limits_resource(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(
        LIMITS_URL,
        json={
            "DailyApiRequests": {"Max": 15000, "Remaining": 14998},
            "DailyBulkApiRequests": {"Max": 10000, "Remaining": 10000},
        },
    )
    assert dest.daily_api_remaining() == (14998, 15000)
    assert dest.api_calls()["limits"] == 1


def test_daily_api_remaining_is_none_without_permission(
    rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(LIMITS_URL, status=403, json=[{"errorCode": "INSUFFICIENT_ACCESS", "message": "no"}])
    assert dest.daily_api_remaining() is None


def test_api_calls_report_every_kind(dest: SalesforceDestination) -> None:
    assert dest.api_calls() == {"read": 0, "write": 0, "describe": 0, "auth": 0, "limits": 0}


def test_batch_size_above_the_collections_maximum_is_refused(sf: Salesforce) -> None:
    with pytest.raises(FatalError):
        SalesforceDestination(sf, batch_size=201)


def test_parse_sf_datetime_variants() -> None:
    expected = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    assert parse_sf_datetime("2026-11-22T10:00:00.000+0000") == expected
    assert parse_sf_datetime("2026-11-22T10:00:00.000Z") == expected
    assert parse_sf_datetime("2026-11-22T12:00:00+02:00") == expected
    assert parse_sf_datetime("") is None and parse_sf_datetime(None) is None
    assert parse_sf_datetime("not a date") is None


# --- credentials from the environment --------------------------------------------------------

PASSWORD = "hunter2-Pa55word"
TOKEN = "SecTok3nABCDEFG"
SOAP_URL = "https://test.salesforce.com/services/Soap/u/59.0"


def soap_login_ok(session_id: str) -> str:
    # https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_login_loginresult.htm
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
        f"<serverUrl>{INSTANCE}/services/Soap/u/59.0/00D5g000004XyZa</serverUrl>"
        f"<sessionId>{session_id}</sessionId>"
        "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
    )


SOAP_LOGIN_FAULT = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:sf="urn:fault.partner.soap.sforce.com" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
    "<faultcode>sf:INVALID_LOGIN</faultcode>"
    "<faultstring>INVALID_LOGIN: Invalid username, password, security token; or user locked out.</faultstring>"
    '<detail><sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>'
    "<sf:exceptionMessage>Invalid username, password, security token; or user locked out.</sf:exceptionMessage>"
    "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
)


def password_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PLS_SYNC_SECRETS_DIR": str(tmp_path),
        "SALESFORCE_USERNAME": "integration@acme.com",
        "SALESFORCE_PASSWORD": PASSWORD,
        "SALESFORCE_SECURITY_TOKEN": TOKEN,
        "SALESFORCE_DOMAIN": "test",
    }


def test_from_env_session_flow(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    env = {
        "PLS_SYNC_SECRETS_DIR": str(tmp_path),
        "SALESFORCE_INSTANCE_URL": INSTANCE,
        "SALESFORCE_SESSION_ID": SESSION_ID,
    }
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    dest = SalesforceDestination.from_env(env, sleep=lambda s: None)
    dest.describe("Account")
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {SESSION_ID}"
    assert dest.api_calls()["auth"] == 0
    assert dest.name == "salesforce"


def test_from_env_reads_secrets_from_files(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    (tmp_path / "salesforce_session_id").write_text(SESSION_ID + "\n")
    env = {"PLS_SYNC_SECRETS_DIR": str(tmp_path), "SALESFORCE_INSTANCE_URL": INSTANCE}
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    SalesforceDestination.from_env(env).describe("Account")
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {SESSION_ID}"


def test_from_env_local_http_sandbox_pages_over_http(
    rsps: responses.RequestsMock, tmp_path: Path
) -> None:
    local = "http://127.0.0.1:8765"
    env = {
        "PLS_SYNC_SECRETS_DIR": str(tmp_path),
        "SALESFORCE_INSTANCE_URL": local,
        "SALESFORCE_SESSION_ID": SESSION_ID,
    }
    base = f"{local}/services/data/v59.0"
    rsps.get(f"{base}/sobjects/Account/describe/", json=DESCRIBE)
    rsps.get(
        f"{base}/query/",
        json={
            "totalSize": 2,
            "done": False,
            "nextRecordsUrl": "/services/data/v59.0/query/01gX-1",
            "records": [account(0)],
        },
    )
    rsps.get(f"{base}/query/01gX-1", json={"totalSize": 2, "done": True, "records": [account(1)]})
    dest = SalesforceDestination.from_env(env)
    assert [r.id for r in dest.read_records(MAPPING)] == [rid(0), rid(1)]


def test_from_env_refuses_plain_http_to_a_remote_host(tmp_path: Path) -> None:
    env = {
        "PLS_SYNC_SECRETS_DIR": str(tmp_path),
        "SALESFORCE_INSTANCE_URL": "http://example.my.salesforce.com",
        "SALESFORCE_SESSION_ID": SESSION_ID,
    }
    with pytest.raises(FatalError, match="https"):
        SalesforceDestination.from_env(env)


def test_from_env_password_flow_logs_in_and_reauthenticates(
    rsps: responses.RequestsMock, tmp_path: Path
) -> None:
    rsps.post(SOAP_URL, body=soap_login_ok(SESSION_ID))
    rsps.post(SOAP_URL, body=soap_login_ok(NEW_SESSION_ID))
    rsps.get(DESCRIBE_URL, status=401, json=INVALID_SESSION)
    rsps.get(DESCRIBE_URL, json=DESCRIBE)

    dest = SalesforceDestination.from_env(password_env(tmp_path), sleep=lambda s: None)
    assert dest.api_calls()["auth"] == 1
    dest.describe("Account")

    assert f"{PASSWORD}{TOKEN}" in body_text(
        rsps.calls[0].request
    )  # the SOAP login sends password + token
    describe_auth = [
        c.request.headers.get("Authorization")
        for c in rsps.calls
        if "describe" in str(c.request.url)
    ]
    assert describe_auth == [f"Bearer {SESSION_ID}", f"Bearer {NEW_SESSION_ID}"]
    assert dest.api_calls()["auth"] == 2


def test_from_env_login_failure_is_an_auth_error_without_secrets(
    rsps: responses.RequestsMock, tmp_path: Path
) -> None:
    rsps.post(SOAP_URL, status=500, body=SOAP_LOGIN_FAULT)
    with pytest.raises(AuthError) as info:
        SalesforceDestination.from_env(password_env(tmp_path), sleep=lambda s: None)
    assert "INVALID_LOGIN" in str(info.value)
    assert PASSWORD not in str(info.value) and TOKEN not in str(info.value)
    assert len(rsps.calls) == 1  # a refused login is not retried


def test_from_env_jwt_flow(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "server.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    rsps.post(
        "https://login.salesforce.com/services/oauth2/token",
        json={"access_token": SESSION_ID, "instance_url": INSTANCE, "token_type": "Bearer"},
    )
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    env = {
        "PLS_SYNC_SECRETS_DIR": str(tmp_path),
        "SALESFORCE_USERNAME": "integration@acme.com",
        "SALESFORCE_CONSUMER_KEY": "3MVG9consumerkey",
        "SALESFORCE_PRIVATE_KEY_FILE": str(key_file),
    }
    dest = SalesforceDestination.from_env(env)
    dest.describe("Account")
    token_request = parse_qs(str(rsps.calls[0].request.body))
    assert token_request["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    assert rsps.calls[1].request.headers["Authorization"] == f"Bearer {SESSION_ID}"
    assert dest.api_calls()["auth"] == 1


def test_from_env_missing_credentials_names_the_variables(tmp_path: Path) -> None:
    with pytest.raises(AuthError) as info:
        SalesforceDestination.from_env({"PLS_SYNC_SECRETS_DIR": str(tmp_path)})
    message = str(info.value)
    for name in (
        "SALESFORCE_INSTANCE_URL",
        "SALESFORCE_SESSION_ID",
        "SALESFORCE_USERNAME",
        "SALESFORCE_PASSWORD",
        "SALESFORCE_SECURITY_TOKEN",
        "SALESFORCE_CONSUMER_KEY",
        "SALESFORCE_PRIVATE_KEY_FILE",
    ):
        assert name in message


def test_from_env_partial_credentials_name_what_is_missing_never_values(tmp_path: Path) -> None:
    env = {
        "PLS_SYNC_SECRETS_DIR": str(tmp_path),
        "SALESFORCE_USERNAME": "integration@acme.com",
        "SALESFORCE_PASSWORD": PASSWORD,
    }
    with pytest.raises(AuthError) as info:
        SalesforceDestination.from_env(env)
    assert "missing: SALESFORCE_SECURITY_TOKEN" in str(info.value)
    assert PASSWORD not in str(info.value) and "integration@acme.com" not in str(info.value)


def test_from_env_missing_private_key_file(tmp_path: Path) -> None:
    env = {
        "PLS_SYNC_SECRETS_DIR": str(tmp_path),
        "SALESFORCE_USERNAME": "u@acme.com",
        "SALESFORCE_CONSUMER_KEY": "3MVG9",
        "SALESFORCE_PRIVATE_KEY_FILE": str(tmp_path / "absent.key"),
    }
    with pytest.raises(AuthError, match="SALESFORCE_PRIVATE_KEY_FILE"):
        SalesforceDestination.from_env(env)


# --- secrets never leak ------------------------------------------------------------------------


def test_no_secret_in_errors_or_logs(rsps: responses.RequestsMock, tmp_path: Path) -> None:
    """Servers may echo what they were sent; every message and log event must still be clean."""
    leaky = f"session {SESSION_ID} password {PASSWORD} token {TOKEN}"
    rsps.post(SOAP_URL, body=soap_login_ok(SESSION_ID))
    raised: list[str] = []
    with structlog.testing.capture_logs() as logs:
        dest = SalesforceDestination.from_env(password_env(tmp_path), sleep=lambda s: None)
        rsps.patch(
            COLLECTIONS_URL, status=500, json=[{"errorCode": "UNKNOWN_EXCEPTION", "message": leaky}]
        )
        result = dest.write("Account", changes_for(1), SPECS)
        rsps.reset()
        rsps.patch(COLLECTIONS_URL, json=[save_error("FIELD_CUSTOM_VALIDATION_EXCEPTION", leaky)])
        result2 = dest.write("Account", changes_for(1), SPECS)
        for status, body in (
            (400, [{"errorCode": "MALFORMED_QUERY", "message": leaky}]),
            (
                403,
                [
                    {
                        "errorCode": "REQUEST_LIMIT_EXCEEDED",
                        "message": "TotalRequests Limit exceeded. " + leaky,
                    }
                ],
            ),
            (401, [{"errorCode": "INVALID_SESSION_ID", "message": leaky}]),
        ):
            rsps.reset()
            rsps.get(DESCRIBE_URL, status=status, json=body)
            rsps.post(SOAP_URL, status=500, body=SOAP_LOGIN_FAULT.replace("locked out.", leaky))
            with pytest.raises(FatalError) as info:
                dest._describe_cache.clear()
                dest.describe("Account")
            raised.append(str(info.value))
    assert result.not_attempted == [rid(0)]
    assert len(logs) > 0
    texts = (
        raised + [r.message for r in result2.rejected] + [json.dumps(e, default=str) for e in logs]
    )
    for text in texts:
        for secret in (SESSION_ID, PASSWORD, TOKEN):
            assert secret not in text, text


# --- the JWT bearer key file -------------------------------------------------------------------

TOKEN_URL = "https://login.salesforce.com/services/oauth2/token"


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_private(key: Any, password: bytes | None = None) -> bytes:
    from cryptography.hazmat.primitives import serialization

    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )


def self_signed_certificate(key: Any) -> bytes:
    """The certificate uploaded to the connected app: the file people pick by mistake."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pls-sync")])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def jwt_env(tmp_path: Path, key_file: Path) -> dict[str, str]:
    return {
        "PLS_SYNC_SECRETS_DIR": str(tmp_path),
        "SALESFORCE_USERNAME": "integration@acme.com",
        "SALESFORCE_CONSUMER_KEY": "3MVG9consumerkey",
        "SALESFORCE_PRIVATE_KEY_FILE": str(key_file),
    }


def bad_key_file(kind: str, tmp_path: Path, key: Any) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = tmp_path / "server.key"
    if kind == "garbage":
        path.write_bytes(b"\x00\x01 this is not a key \xff")
    elif kind == "public key":
        path.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    elif kind == "certificate":
        path.write_bytes(self_signed_certificate(key))
    elif kind == "encrypted":
        path.write_bytes(pem_private(key, password=b"correct horse"))
    elif kind == "empty":
        path.write_bytes(b"\n")
    elif kind == "EC key":
        path.write_bytes(pem_private(ec.generate_private_key(ec.SECP256R1())))
    elif kind == "truncated":
        path.write_bytes(pem_private(key)[:300])
    elif kind == "directory":
        path.mkdir()
    elif kind == "under a file":
        path.write_bytes(pem_private(key))
        path = path / "server.key"
    elif kind == "missing":
        pass
    return path


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("garbage", "no PEM block in it"),
        ("public key", "it holds a public key; the private key is needed"),
        ("certificate", "it holds a certificate; the private key is needed"),
        ("encrypted", "it is encrypted; an unencrypted key is needed"),
        ("empty", "the file is empty"),
        ("EC key", "not an RSA key; the JWT bearer flow signs with RS256"),
        ("truncated", "its PEM data cannot be read"),
        ("directory", "it is a directory"),
        ("under a file", "cannot read it: Not a directory"),
        ("missing", "no such file"),
    ],
)
def test_a_key_file_that_is_not_a_private_key_is_one_clear_line(
    rsps: responses.RequestsMock, tmp_path: Path, rsa_key: Any, kind: str, reason: str
) -> None:
    path = bad_key_file(kind, tmp_path, rsa_key)
    with pytest.raises(AuthError) as info:
        SalesforceDestination.from_env(jwt_env(tmp_path, path), sleep=lambda s: None)
    assert str(info.value) == (
        f"SALESFORCE_PRIVATE_KEY_FILE ({path}): not a PEM private key ({reason})"
    )
    assert info.value.code == "INVALID_PRIVATE_KEY"
    assert len(rsps.calls) == 0  # refused before any request


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_key_file_is_one_clear_line(tmp_path: Path, rsa_key: Any) -> None:
    path = tmp_path / "server.key"
    path.write_bytes(pem_private(rsa_key))
    path.chmod(0)
    with pytest.raises(AuthError, match=r"not a PEM private key \(cannot read it: permission"):
        SalesforceDestination.from_env(jwt_env(tmp_path, path))


def test_a_key_file_spoilt_before_a_reauthentication_is_an_auth_error(
    rsps: responses.RequestsMock, tmp_path: Path, rsa_key: Any
) -> None:
    path = tmp_path / "server.key"
    path.write_bytes(pem_private(rsa_key))
    rsps.post(TOKEN_URL, json={"access_token": SESSION_ID, "instance_url": INSTANCE})
    rsps.get(DESCRIBE_URL, status=401, json=INVALID_SESSION)
    dest = SalesforceDestination.from_env(jwt_env(tmp_path, path), sleep=lambda s: None)
    path.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    with pytest.raises(AuthError) as info:
        dest.describe("Account")
    assert str(info.value) == (
        "Salesforce re-authentication failed: SALESFORCE_PRIVATE_KEY_FILE "
        f"({path}): not a PEM private key (its PEM data cannot be read)"
    )
    assert [c.request.method for c in rsps.calls] == ["POST", "GET"]  # no second token request


def test_a_key_the_jwt_library_refuses_at_login_is_an_auth_error(
    rsps: responses.RequestsMock,
    tmp_path: Path,
    rsa_key: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import jwt
    import simple_salesforce.login

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise jwt.exceptions.InvalidKeyError("Could not parse the provided public key.")

    monkeypatch.setattr(simple_salesforce.login.jwt, "encode", refuse)
    path = tmp_path / "server.key"
    key_text = pem_private(rsa_key)
    path.write_bytes(key_text)
    with pytest.raises(AuthError) as info:
        SalesforceDestination.from_env(jwt_env(tmp_path, path), sleep=lambda s: None)
    assert str(info.value) == (
        f"SALESFORCE_PRIVATE_KEY_FILE ({path}): not a PEM private key "
        "(signing the JWT failed: InvalidKeyError)"
    )
    assert len(rsps.calls) == 0
    body = key_text.decode().splitlines()[1]
    assert body not in str(info.value)


def test_the_jwt_is_signed_with_the_key_in_the_file(
    rsps: responses.RequestsMock, tmp_path: Path, rsa_key: Any
) -> None:
    import jwt

    path = tmp_path / "server.key"
    # A traditional "BEGIN RSA PRIVATE KEY" file, as openssl genrsa wrote them for years.
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    rsps.post(TOKEN_URL, json={"access_token": SESSION_ID, "instance_url": INSTANCE})
    SalesforceDestination.from_env(jwt_env(tmp_path, path), sleep=lambda s: None)
    assertion = parse_qs(str(rsps.calls[0].request.body))["assertion"][0]
    claims = jwt.decode(
        assertion,
        rsa_key.public_key(),
        algorithms=["RS256"],
        audience="https://login.salesforce.com",
    )
    assert (claims["iss"], claims["sub"]) == ("3MVG9consumerkey", "integration@acme.com")


# --- integer numbers -------------------------------------------------------------------------


@pytest.mark.parametrize("score", [100, 100.0, Decimal("100"), Decimal("100.00"), 99.6])
def test_a_whole_number_goes_to_a_number_3_0_field_as_a_json_integer(
    rsps: responses.RequestsMock, dest: SalesforceDestination, score: Any
) -> None:
    rsps.add_callback(responses.PATCH, COLLECTIONS_URL, callback=collections_echo())
    specs = {
        **SPECS,
        "PQA_Score__c": field_spec(sf_field("PQA_Score__c", "double", precision=3, scale=0)),
    }
    change = RecordChange(
        rid(1),
        {"PQA_Score__c": score, "NumberOfEmployees": 12.0, "PQA_Ratio__c": 0.5},
        "acme.com",
    )
    dest.write("Account", [change], specs)
    (call,) = rsps.calls
    text = body_text(call.request)
    assert '"PQA_Score__c": 100,' in text and "100.0" not in text
    assert '"NumberOfEmployees": 12,' in text
    assert '"PQA_Ratio__c": 0.5' in text  # scale 2 keeps its decimals


@pytest.mark.parametrize(
    ("value", "field", "expected"),
    [
        (Decimal("86.4"), spec(FieldType.NUMBER, scale=0), 86),
        (Decimal("7"), spec(FieldType.INTEGER), 7),
        (2**62, spec(FieldType.NUMBER, scale=2), 2**62),  # an int stays exact
        (Decimal("12.345"), spec(FieldType.NUMBER, scale=2), 12.35),
        (Decimal("3"), None, 3.0),
        (float("inf"), spec(FieldType.INTEGER), None),
    ],
)
def test_format_value_number_types(value: Any, field: FieldSpec | None, expected: Any) -> None:
    formatted = format_value(value, field)
    assert formatted == expected
    assert type(formatted) is type(expected)
