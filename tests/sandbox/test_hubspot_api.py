"""The sandbox's HubSpot CRM v3 subset, spoken to through its ``handle()`` as the server would.

Shapes are pinned to HubSpot's documentation:

* objects, paging and batch update:
  https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/companies/batch/update-companies
* batch update answers 200 when all succeed, 207 Multi-Status when some fail:
  https://developers.hubspot.com/changelog/simplifying-batch-update-response-codes-for-crm-v3-apis
* common error bodies (401, 207):
  https://developers.hubspot.com/docs/api-reference/error-handling
* search (filterGroups, sorts, 200 a page, the 10,000-result cap):
  https://developers.hubspot.com/docs/api-reference/2026-03/crm/search-the-crm
  https://developers.hubspot.com/changelog/breaking-change-expanded-filtering-capabilities-and-error-messaging-in-hubspots-search-api
* rate-limit headers and the 429 body with ``policyName``:
  https://developers.hubspot.com/changelog/2018-11-06-rate-limit-information-headers-will-be-included-in-http-responses
  https://developers.hubspot.com/docs/api/usage-details
* account details (``GET /account-info/v3/details``, an integer ``portalId``):
  https://developers.hubspot.com/docs/api-reference/latest/account/account-information/get-account-details
* archiving ("Deleted companies can be restored within 90 days of deletion"), single and batch:
  https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/companies/delete-company
  https://developers.hubspot.com/docs/api-reference/2026-03/crm/objects/companies/batch/delete-companies
* ``archived=true`` on the list ("Whether to return only results that have been archived"),
  results with ``archived`` and ``archivedAt``:
  https://developers.hubspot.com/docs/api-reference/latest/crm/objects/companies/get-companies
* merging (``primaryObjectId``, ``objectIdToMerge``): "a new record with a new ID will be created
  for the resulting merged record ... fetching any records using the original IDs will return the
  new merged record with the new ID":
  https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/companies/merge-companies
  https://developers.hubspot.com/changelog/updated-merge-functionality-for-contacts-and-companies
* search lags writes ("It may take a few moments for newly created or updated CRM objects to
  appear in search results") and has its own limit ("The search endpoints are rate limited to
  five requests per second per account"):
  https://developers.hubspot.com/docs/api-reference/latest/crm/search-the-crm
* search answers carry no rate-limit headers ("Responses from the search API endpoints will not
  include any of the rate limit headers listed above"); the daily 429's documented body:
  https://developers.hubspot.com/docs/api/usage-details
* unique values (``hasUniqueValue``, "you can't enter the same value for multiple records"),
  ``?idProperty=`` on single records:
  https://developers.hubspot.com/docs/api-reference/latest/crm/properties/guide
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from pls_sync.demo_companies import demo_companies
from pls_sync.sandbox.http import Request, Response
from pls_sync.sandbox.hubspot import (
    BATCH_MAX,
    LIST_PAGE_MAX,
    PORTAL_ID,
    SEARCH_RESULT_CAP,
    HubSpotApi,
    iso_ms,
    normalise_value,
)
from tests.fakes import FakeTime

COMPANIES = demo_companies(seed=3, count=120)


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def api(clock: FakeTime) -> HubSpotApi:
    return HubSpotApi(seed=3, companies=COMPANIES, clock=clock, monotonic=clock, burst_limit=10_000)


def call(
    api: HubSpotApi,
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    body: Any = None,
    token: str | None = None,
) -> Response:
    headers = {"host": "127.0.0.1:9", "authorization": f"Bearer {token or api.token}"}
    raw = json.dumps(body).encode() if body is not None else b""
    request = Request(method, path, {k: [v] for k, v in (query or {}).items()}, headers, raw)
    return api.handle(request)


def body_of(response: Response) -> dict[str, Any]:
    assert isinstance(response.body, dict)
    return response.body


def update(api: HubSpotApi, inputs: list[dict[str, Any]]) -> Response:
    return call(api, "POST", "/crm/v3/objects/companies/batch/update", body={"inputs": inputs})


# --------------------------------------------------------------------------- auth and routing


@pytest.mark.parametrize("token", ["pat-na1-00000000-0000-4000-8000-000000000000", ""])
def test_a_wrong_or_missing_token_gets_the_documented_401(api: HubSpotApi, token: str) -> None:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = api.handle(Request("GET", "/crm/v3/objects/companies", {}, headers))
    body = body_of(response)
    assert response.status == 401
    assert body["status"] == "error"
    assert body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found")
    assert body["correlationId"]


def test_the_token_looks_like_a_private_app_token_and_depends_on_the_seed() -> None:
    first = HubSpotApi(seed=1, companies=COMPANIES[:5])
    again = HubSpotApi(seed=1, companies=COMPANIES[:5])
    other = HubSpotApi(seed=2, companies=COMPANIES[:5])
    assert first.token.startswith("pat-na1-")
    assert first.token == again.token != other.token


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("GET", "/crm/v3/objects/companies", "hs.companies.list"),
        ("POST", "/crm/v3/objects/companies", "hs.companies.create"),
        ("GET", "/crm/v3/objects/companies/9000000001", "hs.companies.get"),
        ("PATCH", "/crm/v3/objects/companies/9000000001", "hs.companies.update"),
        ("POST", "/crm/v3/objects/companies/search", "hs.companies.search"),
        ("POST", "/crm/v3/objects/companies/batch/read", "hs.companies.batch_read"),
        ("POST", "/crm/v3/objects/companies/batch/update", "hs.companies.batch_update"),
        ("POST", "/crm/v3/objects/companies/batch/upsert", "hs.companies.batch_upsert"),
        ("POST", "/crm/v3/objects/contacts/batch/update", "hs.contacts.batch_update"),
        ("POST", "/crm/v3/objects/tasks", "hs.tasks.create"),
        ("GET", "/crm/v3/properties/companies", "hs.properties.list"),
        ("POST", "/crm/v3/properties/companies", "hs.properties.create"),
        ("GET", "/crm/v3/properties/companies/pqa_score", "hs.properties.get"),
        ("PATCH", "/crm/v3/properties/companies/pqa_score", "hs.properties.update"),
        ("DELETE", "/crm/v3/properties/companies/pqa_score", "hs.properties.archive"),
        ("GET", "/crm/v3/properties/companies/groups", "hs.property_groups.list"),
        ("POST", "/crm/v3/properties/companies/groups", "hs.property_groups.create"),
        ("DELETE", "/crm/v3/objects/companies/9000000001", "hs.companies.archive"),
        ("POST", "/crm/v3/objects/companies/batch/archive", "hs.companies.batch_archive"),
        ("POST", "/crm/v3/objects/companies/merge", "hs.companies.merge"),
        ("GET", "/account-info/v3/details", "hs.account_info.details"),
    ],
)
def test_endpoint_names_for_the_request_counts(
    api: HubSpotApi, method: str, path: str, name: str
) -> None:
    assert api.handles(path)
    assert api.endpoint(Request(method, path, {}, {})) == name


def test_only_crm_v3_paths_belong_to_the_module(api: HubSpotApi) -> None:
    assert not api.handles("/services/data/v59.0/query")
    assert call(api, "GET", "/crm/v3/objects/widgets").status == 400


# --------------------------------------------------------------------------- list and get


def test_list_pages_at_100_with_after_cursors_and_links(api: HubSpotApi) -> None:
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        query = {
            "limit": "500",
            "properties": "domain,hs_additional_domains,pqa_score,no_such_prop",
        }
        if after:
            query["after"] = after
        body = body_of(call(api, "GET", "/crm/v3/objects/companies", query))
        pages += 1
        assert len(body["results"]) <= LIST_PAGE_MAX  # a larger limit is capped, not refused
        for result in body["results"]:
            seen.append(result["id"])
            props = result["properties"]
            assert {"domain", "hs_additional_domains", "pqa_score", "hs_object_id"} <= set(props)
            assert "no_such_prop" not in props
            assert props["hs_object_id"] == result["id"]
            assert {"createdAt", "updatedAt", "archived"} <= set(result)
        if "paging" not in body:
            break
        after = body["paging"]["next"]["after"]
        assert f"after={after}" in body["paging"]["next"]["link"]
    assert len(seen) == len(set(seen)) == len(api.ids())
    assert pages == -(-len(seen) // LIST_PAGE_MAX)


def test_values_come_back_as_strings_and_unset_ones_as_null(api: HubSpotApi) -> None:
    first = api.ids()[0]
    assert update(api, [{"id": first, "properties": {"pqa_score": 77}}]).status == 200
    body = body_of(
        call(api, "GET", f"/crm/v3/objects/companies/{first}", {"properties": "pqa_score,pqa_tier"})
    )
    assert body["properties"]["pqa_score"] == "77"
    assert body["properties"]["pqa_tier"] is None


def test_get_of_an_unknown_id_is_a_404_object_not_found(api: HubSpotApi) -> None:
    response = call(api, "GET", "/crm/v3/objects/companies/123")
    assert response.status == 404
    assert body_of(response)["category"] == "OBJECT_NOT_FOUND"


# --------------------------------------------------------------------------- batch update


def test_batch_update_of_valid_inputs_is_200_complete(api: HubSpotApi, clock: FakeTime) -> None:
    ids = api.ids()[:3]
    clock.now += 3600
    response = update(
        api,
        [
            {"id": ids[0], "properties": {"pqa_score": "12.50", "pqa_tier": "sales"}},
            {
                "id": ids[1],
                "properties": {"pqa_score": "42.0", "pqa_qualified_since": "2026-11-22T10:00:00Z"},
            },
            {
                "id": ids[2],
                "properties": {"pqa_qualified_since": "1795341600000", "pqa_signals": "a; b"},
            },
        ],
    )
    body = body_of(response)
    assert response.status == 200
    assert body["status"] == "COMPLETE"
    assert {"startedAt", "completedAt"} <= set(body)
    assert "errors" not in body and "numErrors" not in body
    assert sorted(r["id"] for r in body["results"]) == sorted(ids)
    assert api.company(ids[0])["pqa_score"] == "12.5"
    assert api.company(ids[1])["pqa_score"] == "42"
    assert api.company(ids[1])["pqa_qualified_since"] == "2026-11-22T10:00:00.000Z"
    assert api.company(ids[2])["pqa_qualified_since"] == "2026-11-22T10:00:00.000Z"
    expected_stamp = "2026-09-21T15:13:20.000Z"  # the fake clock, as ISO milliseconds
    assert all(api.company(i)["hs_lastmodifieddate"] == expected_stamp for i in ids)


def test_empty_string_clears_a_value(api: HubSpotApi) -> None:
    target = api.ids()[4]
    update(api, [{"id": target, "properties": {"pqa_tier": "success"}}])
    assert api.company(target)["pqa_tier"] == "success"
    assert update(api, [{"id": target, "properties": {"pqa_tier": ""}}]).status == 200
    assert "pqa_tier" not in api.company(target)


def test_more_than_100_inputs_is_a_400_validation_error(api: HubSpotApi) -> None:
    ids = api.ids()
    inputs = [
        {"id": ids[i % len(ids)], "properties": {"pqa_score": "1"}} for i in range(BATCH_MAX + 1)
    ]
    response = update(api, inputs)
    body = body_of(response)
    assert response.status == 400
    assert body["category"] == "VALIDATION_ERROR"
    assert "100" in body["message"]
    assert all(
        "pqa_score" not in api.company(i) or api.company(i)["pqa_score"] != "1" for i in ids[:3]
    )


def test_partial_failure_is_a_207_with_an_error_per_bad_record(api: HubSpotApi) -> None:
    ids = api.ids()[:5]
    response = update(
        api,
        [
            {"id": ids[0], "properties": {"pqa_score": "55"}},
            {"id": ids[1], "properties": {"pqa_tier": "platinum"}},
            {"id": ids[2], "properties": {"pqa_score": "lots"}},
            {"id": ids[3], "properties": {"pqa_colour": "red"}},
            {"id": ids[4], "properties": {"hs_object_id": "1"}},
            {"id": "424242", "properties": {"pqa_score": "1"}},
        ],
    )
    body = body_of(response)
    assert response.status == 207
    assert body["status"] == "COMPLETE"
    assert body["numErrors"] == len(body["errors"]) == 5
    assert [r["id"] for r in body["results"]] == [ids[0]]
    by_id = {error["context"]["ids"][0]: error for error in body["errors"]}
    expected = {
        ids[1]: ("VALIDATION_ERROR", "INVALID_OPTION", "pqa_tier"),
        ids[2]: ("VALIDATION_ERROR", "INVALID_DECIMAL", "pqa_score"),
        ids[3]: ("VALIDATION_ERROR", "PROPERTY_DOESNT_EXIST", "pqa_colour"),
        ids[4]: ("VALIDATION_ERROR", "READ_ONLY_VALUE", "hs_object_id"),
        "424242": ("OBJECT_NOT_FOUND", None, None),
    }
    for record_id, (category, code, prop) in expected.items():
        error = by_id[record_id]
        assert error["status"] == "error"
        assert error["category"] == category
        assert error["message"]
        if code is not None:
            assert error["message"].startswith("Property values were not valid: ")
            assert error["errors"][0]["code"] == code
            assert error["context"]["propertyName"] == [prop]
    assert api.company(ids[0])["pqa_score"] == "55"
    assert "pqa_tier" not in api.company(ids[1]) or api.company(ids[1])["pqa_tier"] != "platinum"


def test_all_or_nothing_mode_refuses_the_whole_batch_without_naming_the_record(
    api: HubSpotApi,
) -> None:
    api.batch_validation = "all_or_nothing"
    ids = api.ids()[:2]
    before = api.company(ids[0]).get("pqa_score")
    response = update(
        api,
        [
            {"id": ids[0], "properties": {"pqa_score": "88"}},
            {"id": ids[1], "properties": {"pqa_tier": "gold"}},
        ],
    )
    body = body_of(response)
    assert response.status == 400
    assert body["category"] == "VALIDATION_ERROR"
    assert '"error":"INVALID_OPTION"' in body["message"]
    assert ids[1] not in body["message"]
    assert api.company(ids[0]).get("pqa_score") == before


def test_duplicate_ids_in_one_batch_are_refused(api: HubSpotApi) -> None:
    first = api.ids()[0]
    response = update(api, [{"id": first, "properties": {}}, {"id": first, "properties": {}}])
    assert response.status == 400
    assert "Duplicate" in body_of(response)["message"]


# --------------------------------------------------------------------------- values


def definition(
    kind: str, field_type: str = "text", options: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "name": "p",
        "type": kind,
        "fieldType": field_type,
        "options": [{"value": o} for o in options],
    }


@pytest.mark.parametrize(
    ("kind", "raw", "stored"),
    [
        ("number", "17.50", "17.5"),
        ("number", 3.0, "3"),
        ("number", "-0.25", "-0.25"),
        ("number", "", ""),
        ("date", "2026-11-22", "2026-11-22"),
        ("date", "1795305600000", "2026-11-22"),
        ("datetime", "2026-11-22T10:00:00+01:00", "2026-11-22T09:00:00.000Z"),
        ("datetime", "1795341600000", "2026-11-22T10:00:00.000Z"),
        ("bool", True, "true"),
        ("string", "anything at all", "anything at all"),
    ],
)
def test_values_are_normalised_like_hubspot(kind: str, raw: Any, stored: str) -> None:
    assert normalise_value(definition(kind), raw) == stored


@pytest.mark.parametrize(
    ("kind", "raw", "code"),
    [
        ("number", "12 users", "INVALID_DECIMAL"),
        ("number", "NaN", "INVALID_DECIMAL"),
        ("date", "1795341600000", "INVALID_DATE"),  # 10:00 UTC: dates must be midnight UTC
        ("date", "next week", "INVALID_DATE"),
        ("datetime", "yesterday", "INVALID_DATETIME"),
        ("bool", "maybe", "INVALID_BOOLEAN"),
    ],
)
def test_invalid_values_are_refused_with_hubspot_codes(kind: str, raw: str, code: str) -> None:
    from pls_sync.sandbox.hubspot import PropertyValueError

    with pytest.raises(PropertyValueError) as caught:
        normalise_value(definition(kind), raw)
    assert caught.value.code == code


def test_multi_checkbox_options_are_checked_one_by_one() -> None:
    multi = definition("enumeration", "checkbox", ("a", "b"))
    assert normalise_value(multi, "a;b") == "a;b"
    from pls_sync.sandbox.hubspot import PropertyValueError

    with pytest.raises(PropertyValueError):
        normalise_value(multi, "a;c")


# --------------------------------------------------------------------------- search


def search(api: HubSpotApi, object_type: str = "companies", **body: Any) -> Response:
    """One search, paced as a client keeping to the five-a-second search limit would be."""
    clock = api.limiter.monotonic
    if isinstance(clock, FakeTime):
        clock.now += 0.2
    return call(api, "POST", f"/crm/v3/objects/{object_type}/search", body=body)


def test_search_filters_sorts_and_pages(api: HubSpotApi, clock: FakeTime) -> None:
    ids = api.ids()[:6]
    scores = [10, 20, 30, 40, 50, 60]
    update(
        api,
        [
            {
                "id": i,
                "properties": {"pqa_score": str(s), "pqa_tier": "sales" if s >= 40 else "success"},
            }
            for i, s in zip(ids, scores, strict=True)
        ],
    )
    clock.now += api.search_lag_seconds  # the writes reach the search index

    def found(
        *filters: dict[str, Any], groups: list[list[dict[str, Any]]] | None = None
    ) -> list[str]:
        filter_groups = (
            [{"filters": list(g)} for g in groups] if groups else [{"filters": list(filters)}]
        )
        body = body_of(search(api, filterGroups=filter_groups, limit=200))
        return sorted(
            r["id"] for r in body["results"] if r["id"] in ids
        )  # the seed has stale scores

    def everything(*filters: dict[str, Any]) -> list[str]:
        body = body_of(search(api, filterGroups=[{"filters": list(filters)}], limit=200))
        return [r["id"] for r in body["results"]]

    assert found({"propertyName": "pqa_score", "operator": "GTE", "value": "40"}) == sorted(ids[3:])
    assert found({"propertyName": "pqa_score", "operator": "GT", "value": "40"}) == sorted(ids[4:])
    assert found({"propertyName": "pqa_score", "operator": "LT", "value": "30"}) == sorted(ids[:2])
    assert found({"propertyName": "pqa_score", "operator": "LTE", "value": "30"}) == sorted(ids[:3])
    assert found({"propertyName": "pqa_score", "operator": "EQ", "value": "20"}) == [ids[1]]
    assert found({"propertyName": "pqa_tier", "operator": "IN", "values": ["sales"]}) == sorted(
        ids[3:]
    )
    with_score = everything({"propertyName": "pqa_score", "operator": "HAS_PROPERTY"})
    assert set(ids) <= set(with_score)
    no_score = everything({"propertyName": "pqa_score", "operator": "NOT_HAS_PROPERTY"})
    assert not set(ids) & set(no_score)
    assert len(with_score) + len(no_score) == len(api.ids())
    assert not set(ids) & set(
        found({"propertyName": "pqa_tier", "operator": "NOT_IN", "values": ["sales", "success"]})
    )
    assert found(
        groups=[
            [{"propertyName": "pqa_score", "operator": "EQ", "value": "10"}],
            [{"propertyName": "pqa_score", "operator": "EQ", "value": "60"}],
        ]
    ) == sorted([ids[0], ids[5]])  # filter groups are ORed
    assert found(
        {"propertyName": "pqa_score", "operator": "GTE", "value": "20"},
        {"propertyName": "pqa_score", "operator": "LTE", "value": "30"},
    ) == sorted(ids[1:3])  # filters in a group are ANDed

    body = body_of(
        search(
            api,
            filterGroups=[{"filters": [{"propertyName": "pqa_score", "operator": "HAS_PROPERTY"}]}],
            sorts=[{"propertyName": "pqa_score", "direction": "DESCENDING"}],
            properties=["pqa_score"],
            limit=2,
        )
    )
    assert body["total"] == len(with_score)
    scores_seen = [float(r["properties"]["pqa_score"]) for r in body["results"]]
    assert scores_seen == sorted(scores_seen, reverse=True) and len(scores_seen) == 2
    assert body["paging"]["next"]["after"] == "2"


def test_search_contains_token_finds_contacts_by_email_domain(api: HubSpotApi) -> None:
    contacts = api.objects["contacts"]
    domain = next(r["properties"]["hs_email_domain"] for r in contacts.values())
    body = body_of(
        search(
            api,
            "contacts",
            filterGroups=[
                {
                    "filters": [
                        {
                            "propertyName": "email",
                            "operator": "CONTAINS_TOKEN",
                            "value": f"*@{domain}",
                        }
                    ]
                }
            ],
            properties=["email"],
            limit=200,
        )
    )
    emails = [r["properties"]["email"] for r in body["results"]]
    expected = [
        r["properties"]["email"]
        for r in contacts.values()
        if r["properties"]["email"].endswith(f"@{domain}")
    ]
    assert sorted(emails) == sorted(expected) and emails


def test_search_limits_are_enforced(api: HubSpotApi) -> None:
    assert search(api, limit=201).status == 400
    unknown = search(
        api, filterGroups=[{"filters": [{"propertyName": "nope", "operator": "EQ", "value": "1"}]}]
    )
    assert unknown.status == 400
    too_many = [{"filters": [{"propertyName": "name", "operator": "HAS_PROPERTY"}]}] * 6
    assert search(api, filterGroups=too_many).status == 400


def test_search_never_returns_more_than_10000_results(api: HubSpotApi, clock: FakeTime) -> None:
    for start in range(0, 10_100, BATCH_MAX):
        inputs = [
            {"properties": {"email": f"user{n}@bulk.example"}}
            for n in range(start, start + BATCH_MAX)
        ]
        assert (
            call(
                api, "POST", "/crm/v3/objects/contacts/batch/create", body={"inputs": inputs}
            ).status
            == 201
        )
    clock.now += api.search_lag_seconds
    bulk = [
        {
            "filters": [
                {"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "*@bulk.example"}
            ]
        }
    ]
    last = body_of(
        search(api, "contacts", filterGroups=bulk, limit=200, after=str(SEARCH_RESULT_CAP - 200))
    )
    assert last["total"] == 10_100
    assert len(last["results"]) == 200
    assert "paging" not in last  # the cap: no cursor beyond 10,000 even though more match
    beyond = search(api, "contacts", filterGroups=bulk, limit=200, after=str(SEARCH_RESULT_CAP))
    assert beyond.status == 400
    assert body_of(beyond)["category"] == "VALIDATION_ERROR"


# --------------------------------------------------------------------------- batch read and upsert


def test_batch_read_answers_207_for_missing_ids(api: HubSpotApi) -> None:
    ids = api.ids()[:2]
    response = call(
        api,
        "POST",
        "/crm/v3/objects/companies/batch/read",
        body={"inputs": [{"id": ids[0]}, {"id": ids[1]}, {"id": "77"}], "properties": ["domain"]},
    )
    body = body_of(response)
    assert response.status == 207
    assert sorted(r["id"] for r in body["results"]) == sorted(ids)
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert body["errors"][0]["context"]["ids"] == ["77"]


def test_batch_upsert_creates_and_updates_by_a_unique_property(api: HubSpotApi) -> None:
    existing = next(iter(api.objects["contacts"].values()))["properties"]["email"]
    response = call(
        api,
        "POST",
        "/crm/v3/objects/contacts/batch/upsert",
        body={
            "inputs": [
                {"idProperty": "email", "id": existing, "properties": {"jobtitle": "Chief Buyer"}},
                {
                    "idProperty": "email",
                    "id": "new.person@newco.example",
                    "properties": {"firstname": "New"},
                },
            ]
        },
    )
    body = body_of(response)
    assert response.status == 200
    assert [r["new"] for r in body["results"]] == [False, True]
    created = api.objects["contacts"][body["results"][1]["id"]]["properties"]
    assert created["email"] == "new.person@newco.example"
    assert created["hs_email_domain"] == "newco.example"
    refused = call(
        api,
        "POST",
        "/crm/v3/objects/companies/batch/upsert",
        body={"inputs": [{"idProperty": "name", "id": "Acme", "properties": {}}]},
    )
    assert refused.status == 400


# --------------------------------------------------------------------------- properties


def test_property_definitions_include_the_pqa_group(api: HubSpotApi) -> None:
    body = body_of(call(api, "GET", "/crm/v3/properties/companies"))
    by_name = {p["name"]: p for p in body["results"]}
    expected = {
        "pqa_score": "number",
        "pqa_tier": "enumeration",
        "pqa_signals": "string",
        "pqa_score_change": "number",
        "pqa_active_users": "number",
        "pqa_qualified_since": "datetime",
        "pqa_last_scored": "datetime",
        "pqa_lead_channel": "enumeration",
        "pqa_motion": "enumeration",
    }
    for name, kind in expected.items():
        assert by_name[name]["type"] == kind
        assert by_name[name]["groupName"] == "pqa"
        assert by_name[name]["modificationMetadata"]["readOnlyValue"] is False
    assert [o["value"] for o in by_name["pqa_tier"]["options"]] == [
        "sales",
        "success",
        "self_serve",
    ]
    assert [o["value"] for o in by_name["pqa_lead_channel"]["options"]] == [
        "usage_pql",
        "usage_mql",
        "mql_only",
        "usage_no_buyer",
    ]
    assert by_name["pqa_signals"]["fieldType"] == "textarea"
    assert by_name["hs_lastmodifieddate"]["modificationMetadata"]["readOnlyValue"] is True
    groups = body_of(call(api, "GET", "/crm/v3/properties/companies/groups"))["results"]
    assert "pqa" in {g["name"] for g in groups}


def test_properties_and_groups_can_be_created_once(api: HubSpotApi) -> None:
    group = call(
        api, "POST", "/crm/v3/properties/companies/groups", body={"name": "extra", "label": "Extra"}
    )
    assert group.status == 201
    definition_body = {
        "name": "pqa_renewal_on",
        "label": "Renewal",
        "type": "date",
        "fieldType": "date",
        "groupName": "extra",
    }
    created = call(api, "POST", "/crm/v3/properties/companies", body=definition_body)
    assert created.status == 201
    assert (
        body_of(call(api, "GET", "/crm/v3/properties/companies/pqa_renewal_on"))["type"] == "date"
    )
    again = call(api, "POST", "/crm/v3/properties/companies", body=definition_body)
    assert again.status == 409
    assert body_of(again)["category"] == "OBJECT_ALREADY_EXISTS"
    first = api.ids()[0]
    assert (
        update(api, [{"id": first, "properties": {"pqa_renewal_on": "2026-11-22"}}]).status == 200
    )
    assert api.company(first)["pqa_renewal_on"] == "2026-11-22"
    missing = call(api, "GET", "/crm/v3/properties/companies/nope")
    assert missing.status == 404


def test_a_property_is_updated_and_archived_like_in_a_portal(api: HubSpotApi) -> None:
    path = "/crm/v3/properties/companies/pqa_motion"
    patched = call(
        api,
        "PATCH",
        path,
        body={"label": "Motion", "options": [{"value": "sales"}, {"value": "nurture"}]},
    )
    assert patched.status == 200
    assert [(o["value"], o["label"]) for o in body_of(patched)["options"]] == [
        ("sales", "Sales"),
        ("nurture", "nurture"),
    ]
    assert body_of(call(api, "GET", path))["label"] == "Motion"
    first = api.ids()[0]
    refused = update(api, [{"id": first, "properties": {"pqa_motion": "abm"}}])
    assert refused.status == 207 and "INVALID_OPTION" in json.dumps(refused.body)
    for body, fragment in (
        ({"type": "string"}, "does not convert"),
        ({"groupName": "nowhere"}, "nowhere does not exist"),
        ({"options": []}, "at least one option"),
        ({"options": [{"value": "a"}, {"value": "a"}]}, "unique"),
    ):
        answer = call(api, "PATCH", path, body=body)
        assert answer.status == 400 and fragment in body_of(answer)["message"]
    assert (
        call(
            api,
            "PATCH",
            "/crm/v3/properties/companies/pqa_score",
            body={"options": [{"value": "a"}]},
        ).status
        == 400
    )
    assert call(api, "DELETE", path).status == 204
    assert call(api, "GET", path).status == 404
    assert call(api, "DELETE", path).status == 404
    listed = body_of(call(api, "GET", "/crm/v3/properties/companies"))["results"]
    assert "pqa_motion" not in {p["name"] for p in listed}
    archived = call(api, "GET", "/crm/v3/properties/companies", query={"archived": "true"})
    assert [(p["name"], p["archived"]) for p in body_of(archived)["results"]] == [
        ("pqa_motion", True)
    ]
    gone = update(api, [{"id": first, "properties": {"pqa_motion": "sales"}}])
    assert "PROPERTY_DOESNT_EXIST" in json.dumps(gone.body)
    default = call(api, "DELETE", "/crm/v3/properties/companies/domain")
    assert default.status == 400 and "cannot be archived" in body_of(default)["message"]


def test_a_bare_portal_has_the_same_companies_without_anything_of_pls_sync() -> None:
    full = HubSpotApi(seed=3, companies=COMPANIES)
    bare = HubSpotApi(seed=3, companies=COMPANIES, bare=True)
    for object_type, definitions in bare.properties.items():
        assert not [name for name in definitions if name.startswith("pqa_")], object_type
    assert "pqa" not in bare.groups["companies"]
    assert set(full.properties["companies"]) - set(bare.properties["companies"]) == {
        name for name in full.properties["companies"] if name.startswith("pqa_")
    }
    assert "pqa_alert_key" in full.properties["tasks"]
    stale = [i for i in full.ids() if "pqa_score" in full.company(i)]
    assert stale  # the full portal carries an earlier tool's values on some companies
    assert bare.ids() == full.ids()
    for company_id in full.ids():
        kept = {k: v for k, v in full.company(company_id).items() if not k.startswith("pqa_")}
        assert bare.company(company_id) == kept
    listed = body_of(call(bare, "GET", "/crm/v3/properties/companies"))["results"]
    assert "pqa_score" not in {p["name"] for p in listed}


def test_a_property_is_created_only_as_hubspot_allows(api: HubSpotApi) -> None:
    path = "/crm/v3/properties/companies"
    base = {"name": "pqa_stage", "label": "Stage", "groupName": "companyinformation"}
    for body, fragment in (
        ({**base, "type": "number", "fieldType": "select"}, "Invalid fieldType select"),
        ({**base, "type": "bool", "fieldType": "text"}, "Invalid fieldType text"),
        ({**base, "type": "enumeration", "fieldType": "select"}, "at least one option"),
        (
            {**base, "type": "enumeration", "fieldType": "select", "options": [{"label": "A"}]},
            "string value",
        ),
        (
            {
                **base,
                "type": "enumeration",
                "fieldType": "select",
                "options": [{"value": "a"}, {"value": "a"}],
            },
            "unique",
        ),
        ({**base, "name": "Stage", "type": "string", "fieldType": "text"}, "lower case"),
        ({**base, "groupName": "nowhere", "type": "string", "fieldType": "text"}, "nowhere"),
    ):
        refused = call(api, "POST", path, body=body)
        assert refused.status == 400, body
        assert body_of(refused)["category"] == "VALIDATION_ERROR"
        assert fragment in body_of(refused)["message"], body
    assert "pqa_stage" not in api.properties["companies"]
    enumeration = {
        **base,
        "type": "enumeration",
        "fieldType": "select",
        "hasUniqueValue": False,
        "options": [
            {"label": "Open", "value": "open", "displayOrder": 1, "hidden": False},
            {"label": "Old", "value": "old", "displayOrder": 2, "hidden": True},
        ],
    }
    created = call(api, "POST", path, body=enumeration)
    assert created.status == 201
    assert [
        (o["value"], o["label"], o["displayOrder"], o["hidden"])
        for o in body_of(created)["options"]
    ] == [("open", "Open", 1, False), ("old", "Old", 2, True)]
    assert body_of(created)["hubspotDefined"] is False
    taken = call(api, "POST", path, body=enumeration)
    assert taken.status == 409
    assert body_of(taken)["message"] == "Property named 'pqa_stage' already exists."


def test_a_token_without_a_schema_scope_gets_hubspots_missing_scopes_403(
    api: HubSpotApi,
) -> None:
    api.scopes.discard("crm.schemas.companies.write")
    definition = {
        "name": "pqa_x",
        "label": "X",
        "type": "string",
        "fieldType": "text",
        "groupName": "pqa",
    }
    for method, path, body in (
        ("POST", "/crm/v3/properties/companies", definition),
        ("PATCH", "/crm/v3/properties/companies/pqa_score", {"label": "Score"}),
        ("POST", "/crm/v3/properties/companies/groups", {"name": "g", "label": "G"}),
    ):
        refused = call(api, method, path, body=body)
        assert refused.status == 403, path
        answer = body_of(refused)
        assert answer["category"] == "MISSING_SCOPES"
        assert answer["message"].startswith("This app hasn't been granted all required scopes")
        assert answer["errors"][0]["context"]["requiredGranularScopes"] == [
            "crm.schemas.companies.write"
        ]
        assert answer["links"] == {"scopes": "https://developers.hubspot.com/scopes"}
    assert "pqa_x" not in api.properties["companies"]
    assert api.properties["companies"]["pqa_score"]["label"] == "PQA score"
    # reading needs the read scope only; other objects' properties and records are untouched
    assert call(api, "GET", "/crm/v3/properties/companies").status == 200
    assert (
        call(
            api,
            "POST",
            "/crm/v3/properties/contacts",
            body={**definition, "groupName": "contactinformation"},
        ).status
        == 201
    )
    assert call(api, "GET", "/crm/v3/objects/companies").status == 200
    api.scopes.discard("crm.schemas.companies.read")
    unread = call(api, "GET", "/crm/v3/properties/companies/pqa_score")
    assert unread.status == 403
    assert body_of(unread)["errors"][0]["context"]["requiredGranularScopes"] == [
        "crm.schemas.companies.read"
    ]


# --------------------------------------------------------------------------- rate limits and faults


def test_rate_limit_headers_on_every_response(api: HubSpotApi) -> None:
    first = call(api, "GET", "/crm/v3/objects/companies")
    second = call(api, "GET", "/crm/v3/objects/companies")
    for response in (first, second):
        assert response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
        assert response.headers["X-HubSpot-RateLimit-Daily"] == "250000"
    assert int(first.headers["X-HubSpot-RateLimit-Remaining"]) - 1 == int(
        second.headers["X-HubSpot-RateLimit-Remaining"]
    )
    assert int(first.headers["X-HubSpot-RateLimit-Daily-Remaining"]) - 1 == int(
        second.headers["X-HubSpot-RateLimit-Daily-Remaining"]
    )


def test_the_ten_second_window_slides(api: HubSpotApi, clock: FakeTime) -> None:
    api.set_burst_limit(5)
    api.retry_after_rate = 1.0  # this 429 says when to come back
    for _ in range(5):
        assert call(api, "GET", "/crm/v3/objects/companies").status == 200
        clock.now += 1
    refused = call(api, "GET", "/crm/v3/objects/companies")
    body = body_of(refused)
    assert refused.status == 429
    assert body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert body["errorType"] == "RATE_LIMIT"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert refused.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert refused.headers["Retry-After"] == "5"  # the first request leaves the window at t0+10
    clock.now += 5
    assert call(api, "GET", "/crm/v3/objects/companies").status == 200
    assert call(api, "GET", "/crm/v3/objects/companies").status == 429


def test_the_daily_allowance_runs_out(api: HubSpotApi) -> None:
    api.exhaust_daily()
    refused = call(api, "GET", "/crm/v3/objects/companies")
    assert refused.status == 429
    assert body_of(refused)["policyName"] == "DAILY"
    assert refused.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"


@pytest.mark.parametrize(
    ("kind", "status", "field", "value"),
    [
        ("rate_limit", 429, "policyName", "TEN_SECONDLY_ROLLING"),
        ("daily_limit", 429, "policyName", "DAILY"),
        ("invalid_session", 401, "category", "INVALID_AUTHENTICATION"),
        ("server_error", 500, "status", "error"),
        ("unavailable", 503, "status", "error"),
    ],
)
def test_injected_faults_take_hubspots_shape(
    api: HubSpotApi, kind: str, status: int, field: str, value: str
) -> None:
    response = api.render_fault(kind, Request("GET", "/crm/v3/objects/companies", {}, {}))
    assert response.status == status
    assert body_of(response)[field] == value
    assert "X-HubSpot-RateLimit-Max" in response.headers
    if kind == "rate_limit":
        assert int(response.headers["Retry-After"]) >= 1


# --------------------------------------------------------------------------- tasks


def test_tasks_are_created_with_associations(api: HubSpotApi) -> None:
    company = api.ids()[0]
    body: dict[str, Any] = {
        "properties": {"hs_task_subject": "Call the PQA", "hs_timestamp": "2026-11-22T10:00:00Z"},
        "associations": [
            {
                "to": {"id": company},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 192}],
            }
        ],
    }
    created = call(api, "POST", "/crm/v3/objects/tasks", body=body)
    assert created.status == 201
    assert body_of(created)["associations"]["companies"]["results"][0]["id"] == company
    body["associations"][0]["to"]["id"] = "1"
    assert call(api, "POST", "/crm/v3/objects/tasks", body=body).status == 400
    no_due_date = call(
        api, "POST", "/crm/v3/objects/tasks", body={"properties": {"hs_task_subject": "x"}}
    )
    assert no_due_date.status == 400


# --------------------------------------------------------------------------- seed


def test_the_seed_is_deterministic_and_as_messy_as_a_real_portal() -> None:
    one = HubSpotApi(seed=3, companies=COMPANIES)
    two = HubSpotApi(seed=3, companies=COMPANIES)
    other = HubSpotApi(seed=4, companies=COMPANIES)
    assert one.objects == two.objects
    assert one.objects["companies"] != other.objects["companies"]
    companies = [r["properties"] for r in one.objects["companies"].values()]
    domains = [p.get("domain", "") for p in companies]
    assert any(d.startswith("www.") for d in domains)
    assert any(d == "" for d in domains)
    assert any(
        ";" in p.get("hs_additional_domains", "") or p.get("hs_additional_domains")
        for p in companies
    )
    bare = [d.lower().removeprefix("www.") for d in domains if d]
    assert len(bare) > len(set(bare))  # duplicate companies on one domain
    assert any(p.get("hs_parent_company_id") for p in companies)
    product_domains = {c.domain for c in COMPANIES}
    assert any(d and d.lower() not in product_domains for d in bare)  # CRM-only companies
    stages = [r["properties"].get("lifecyclestage") for r in one.objects["contacts"].values()]
    assert "marketingqualifiedlead" in stages
    assert all(r["properties"].get("email") for r in one.objects["contacts"].values())


def test_a_custom_mql_property_is_defined_and_filled() -> None:
    api = HubSpotApi(seed=3, companies=COMPANIES[:40], mql_property="mql_flag")
    assert api.properties["contacts"]["mql_flag"]["type"] == "enumeration"
    contacts = [r["properties"] for r in api.objects["contacts"].values()]
    for props in contacts:
        assert (props["mql_flag"] == "yes") == (props["lifecyclestage"] == "marketingqualifiedlead")


def test_no_companies_means_an_empty_portal_with_its_properties() -> None:
    api = HubSpotApi(seed=7, companies=[])
    assert api.ids("companies") == [] and api.ids("contacts") == []
    assert "pqa_score" in api.properties["companies"]


# --------------------------------------------------------------------------- account identity


def identity(api: HubSpotApi, body: Any = None, method: str = "POST") -> Response | None:
    raw = json.dumps(body).encode() if body is not None else b""
    return api.admin(
        "hubspot/identity", Request(method, "/__sandbox/hubspot/identity", {}, {}, raw)
    )


def test_account_details_answer_the_portal_id(api: HubSpotApi) -> None:
    response = call(api, "GET", "/account-info/v3/details")
    body = body_of(response)
    assert response.status == 200
    assert body["portalId"] == PORTAL_ID and isinstance(body["portalId"], int)
    assert {"accountType", "timeZone", "companyCurrency", "uiDomain", "utcOffset"} <= set(body)
    assert "X-HubSpot-RateLimit-Remaining" in response.headers
    other = HubSpotApi(seed=3, companies=COMPANIES[:5], portal_id=123)
    assert body_of(call(other, "GET", "/account-info/v3/details"))["portalId"] == 123
    assert call(api, "GET", "/account-info/v3/details", token="pat-na1-wrong").status == 401
    assert call(api, "POST", "/account-info/v3/details").status == 405
    assert call(api, "GET", "/account-info/v3/nothing").status == 404


def test_another_portal_has_the_same_companies_without_their_values(api: HubSpotApi) -> None:
    ids = api.ids()
    assert update(api, [{"id": i, "properties": {"pqa_score": 40}} for i in ids[:5]]).status == 200
    stamps = {i: api.company(i)["hs_lastmodifieddate"] for i in ids}
    answer = identity(api, {"portal_id": 123, "clear_properties": ["pqa_score", "pqa_tier"]})
    assert answer is not None and answer.status == 200
    assert body_of(answer)["portalId"] == 123
    assert body_of(call(api, "GET", "/account-info/v3/details"))["portalId"] == 123
    assert api.ids() == ids
    assert not any("pqa_score" in api.company(i) or "pqa_tier" in api.company(i) for i in ids)
    # Nothing in the new portal says it changed: the stamps are the records' own.
    assert {i: api.company(i)["hs_lastmodifieddate"] for i in ids} == stamps
    scored = search(
        api, filterGroups=[{"filters": [{"propertyName": "pqa_score", "operator": "HAS_PROPERTY"}]}]
    )
    assert body_of(scored)["total"] == 0


def test_without_a_portal_id_the_sandbox_becomes_a_new_portal(api: HubSpotApi) -> None:
    first = identity(api)
    assert first is not None and first.status == 200
    new_id = body_of(first)["portalId"]
    assert isinstance(new_id, int) and new_id != PORTAL_ID
    again = HubSpotApi(seed=3, companies=COMPANIES[:5])
    assert again.change_identity() == new_id  # deterministic for the seed
    assert api.change_identity() not in (new_id, PORTAL_ID)
    limited = body_of(api.render_fault("rate_limit", Request("GET", "/crm/v3/x", {}, {})))
    assert limited["groupName"].endswith(str(api.portal_id))


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"portal_id": "123"}, "positive integer"),
        ({"portal_id": True}, "positive integer"),
        ({"portal_id": 0}, "positive integer"),
        ({"clear_properties": ["no_such"]}, "no property no_such"),
        ({"clear_properties": ["hs_object_id"]}, "read-only"),
        ({"clear_properties": "pqa_score"}, "list of property names"),
        ({"portalId": 5}, "unknown keys: portalId"),
        ([1], "JSON object"),
    ],
)
def test_a_bad_identity_change_is_a_400_and_changes_nothing(
    api: HubSpotApi, body: Any, fragment: str
) -> None:
    before = api.portal_id
    answer = identity(api, body)
    assert answer is not None and answer.status == 400
    assert fragment in body_of(answer)["message"]
    assert api.portal_id == before


def test_identity_is_post_only_and_other_admin_names_are_not_ours(api: HubSpotApi) -> None:
    answer = identity(api, method="GET")
    assert answer is not None and answer.status == 405
    assert api.admin("hubspot/other", Request("POST", "/__sandbox/hubspot/other", {}, {})) is None


# --------------------------------------------------------------------------- archived companies


def list_ids(api: HubSpotApi, **query: str) -> tuple[list[dict[str, Any]], int]:
    """Every result of the companies list (all pages) and the number of pages read."""
    results: list[dict[str, Any]] = []
    after: str | None = None
    pages = 0
    while True:
        params = {"limit": "100", **query, **({"after": after} if after else {})}
        body = body_of(call(api, "GET", "/crm/v3/objects/companies", params))
        pages += 1
        results.extend(body["results"])
        if "paging" not in body:
            return results, pages
        after = body["paging"]["next"]["after"]
        assert "archived=" not in body["paging"]["next"]["link"] or query.get("archived")


def test_an_archived_company_leaves_lists_search_and_writes(
    api: HubSpotApi, clock: FakeTime
) -> None:
    target = api.ids()[3]
    clock.now += 60
    assert call(api, "DELETE", f"/crm/v3/objects/companies/{target}").status == 204
    archived_at = clock.now
    clock.now += api.search_lag_seconds
    gone = call(api, "GET", f"/crm/v3/objects/companies/{target}")
    assert gone.status == 404 and body_of(gone)["category"] == "OBJECT_NOT_FOUND"
    assert target not in {r["id"] for r in list_ids(api)[0]}
    found = search(
        api,
        filterGroups=[
            {"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": target}]}
        ],
    )
    assert body_of(found)["total"] == 0
    patched = call(api, "PATCH", f"/crm/v3/objects/companies/{target}", body={"properties": {}})
    assert patched.status == 404
    batch = update(api, [{"id": target, "properties": {"pqa_score": 1}}])
    assert batch.status == 207
    assert body_of(batch)["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert body_of(batch)["errors"][0]["context"]["ids"] == [target]
    kept = call(api, "GET", f"/crm/v3/objects/companies/{target}", {"archived": "true"})
    assert body_of(kept)["archived"] is True
    assert body_of(kept)["archivedAt"] == iso_ms(datetime.fromtimestamp(archived_at, UTC))
    archived, _ = list_ids(api, archived="true")
    assert [(r["id"], r["archived"]) for r in archived] == [(target, True)]
    assert archived[0]["archivedAt"] == body_of(kept)["archivedAt"]
    # Archiving is idempotent, and an unknown id changes nothing.
    assert call(api, "DELETE", f"/crm/v3/objects/companies/{target}").status == 204
    assert call(api, "DELETE", "/crm/v3/objects/companies/123").status == 204
    assert len(list_ids(api, archived="true")[0]) == 1


def test_batch_archive_and_the_archived_list_pages_at_100(api: HubSpotApi) -> None:
    ids = api.ids()
    chosen = ids[:105]
    too_many = call(
        api,
        "POST",
        "/crm/v3/objects/companies/batch/archive",
        body={"inputs": [{"id": i} for i in ids[: BATCH_MAX + 1]]},
    )
    assert too_many.status == 400
    for start in (100, 0):  # archive order is not id order; the list is in id order
        batch = [{"id": i} for i in chosen[start : start + 100]]
        answer = call(
            api, "POST", "/crm/v3/objects/companies/batch/archive", body={"inputs": batch}
        )
        assert answer.status == 204
    archived, pages = list_ids(api, archived="true", limit="500")
    assert [r["id"] for r in archived] == chosen
    assert pages == 2
    assert all(r["archived"] is True and r["archivedAt"] for r in archived)
    live, _ = list_ids(api)
    assert [r["id"] for r in live] == ids[105:]
    assert all(r["archived"] is False and "archivedAt" not in r for r in live)


# --------------------------------------------------------------------------- merges


def merge(api: HubSpotApi, primary: str, secondary: str) -> Response:
    return call(
        api,
        "POST",
        "/crm/v3/objects/companies/merge",
        body={"primaryObjectId": primary, "objectIdToMerge": secondary},
    )


def two_companies_with_domains(api: HubSpotApi) -> tuple[str, str]:
    with_domain = [i for i in api.ids() if api.company(i).get("domain")]
    return with_domain[0], with_domain[1]


def test_a_merge_leaves_a_new_company_that_both_old_ids_read_as(
    api: HubSpotApi, clock: FakeTime
) -> None:
    primary, secondary = two_companies_with_domains(api)
    update(
        api,
        [
            {"id": primary, "properties": {"pqa_score": 10, "pqa_tier": ""}},
            {"id": secondary, "properties": {"pqa_score": 90, "pqa_tier": "sales"}},
        ],
    )
    domains = (api.company(primary)["domain"], api.company(secondary)["domain"])
    clock.now += 3600
    response = merge(api, primary, secondary)
    body = body_of(response)
    assert response.status == 200
    new_id = body["id"]
    assert new_id not in (primary, secondary) and body["archived"] is False
    assert body["properties"]["hs_merged_object_ids"] == f"{primary};{secondary}"
    stored = api.company(new_id)
    assert stored["pqa_score"] == "10"  # the primary's value wins
    assert stored["pqa_tier"] == "sales"  # the secondary fills the gap
    assert stored["domain"] == domains[0]
    assert domains[1] in stored["hs_additional_domains"].split(";")
    now = iso_ms(datetime.fromtimestamp(clock.now, UTC))
    assert stored["hs_lastmodifieddate"] == now and body["updatedAt"] == now
    for old in (primary, secondary):
        assert body_of(call(api, "GET", f"/crm/v3/objects/companies/{old}"))["id"] == new_id
    read = call(
        api,
        "POST",
        "/crm/v3/objects/companies/batch/read",
        body={"inputs": [{"id": primary}, {"id": secondary}]},
    )
    assert [r["id"] for r in body_of(read)["results"]] == [new_id]
    live = [r["id"] for r in list_ids(api)[0]]
    assert new_id in live and primary not in live and secondary not in live
    merged_at = clock.now
    clock.now += api.search_lag_seconds
    recent = search(
        api,
        filterGroups=[
            {
                "filters": [
                    {
                        "propertyName": "hs_lastmodifieddate",
                        "operator": "GTE",
                        "value": str(int(merged_at * 1000)),
                    },
                    {"propertyName": "hs_merged_object_ids", "operator": "HAS_PROPERTY"},
                ]
            }
        ],
        properties=["hs_merged_object_ids"],
    )
    assert [r["id"] for r in body_of(recent)["results"]] == [new_id]
    # Merged-away ids are not archived records, and writes to them are not redirected.
    assert list_ids(api, archived="true")[0] == []
    assert update(api, [{"id": primary, "properties": {"pqa_score": 1}}]).status == 207


def test_merging_again_lists_every_merged_id(api: HubSpotApi) -> None:
    first, second, third = api.ids()[:3]
    merged = body_of(merge(api, first, second))["id"]
    again = body_of(merge(api, third, merged))
    assert again["properties"]["hs_merged_object_ids"] == ";".join(
        sorted([first, second, third, merged], key=int)
    )
    for old in (first, second, third, merged):
        assert body_of(call(api, "GET", f"/crm/v3/objects/companies/{old}"))["id"] == again["id"]


def test_a_merge_moves_contacts_tasks_and_child_companies(api: HubSpotApi) -> None:
    parent = next(i for i in api.ids() if api.company(i).get("hs_num_child_companies"))
    children = [i for i in api.ids() if api.company(i).get("hs_parent_company_id") == parent]
    other = next(i for i in api.ids() if i != parent and i not in children)
    contact = next(iter(api.objects["contacts"]))
    api.objects["contacts"][contact]["properties"]["associatedcompanyid"] = other
    task = call(
        api,
        "POST",
        "/crm/v3/objects/tasks",
        body={
            "properties": {"hs_timestamp": "2026-01-01T00:00:00Z", "hs_task_subject": "Call"},
            "associations": [
                {"to": {"id": other}, "types": [{"associationTypeId": 192}]},
            ],
        },
    )
    new_id = api.merge("companies", parent, other)
    assert all(api.company(c)["hs_parent_company_id"] == new_id for c in children)
    assert api.company(new_id)["hs_num_child_companies"] == str(len(children))
    assert api.objects["contacts"][contact]["properties"]["associatedcompanyid"] == new_id
    links = api.objects["tasks"][body_of(task)["id"]]["associations"]["companies"]["results"]
    assert [link["id"] for link in links] == [new_id]


def test_a_merge_can_keep_the_primary_id_as_merges_once_did(clock: FakeTime) -> None:
    api = HubSpotApi(seed=3, companies=COMPANIES[:20], clock=clock, merge_keeps_primary_id=True)
    primary, secondary = api.ids()[:2]
    clock.now += 60
    body = body_of(merge(api, primary, secondary))
    assert body["id"] == primary
    assert body["properties"]["hs_merged_object_ids"] == secondary
    assert api.company(primary)["hs_lastmodifieddate"] == iso_ms(
        datetime.fromtimestamp(clock.now, UTC)
    )
    assert body_of(call(api, "GET", f"/crm/v3/objects/companies/{secondary}"))["id"] == primary
    assert secondary not in api.ids()


def test_contacts_merge_too(api: HubSpotApi) -> None:
    first, second = list(api.objects["contacts"])[:2]
    response = call(
        api,
        "POST",
        "/crm/v3/objects/contacts/merge",
        body={"primaryObjectId": first, "objectIdToMerge": second},
    )
    assert response.status == 200
    assert body_of(response)["properties"]["hs_merged_object_ids"] == f"{first};{second}"


def test_merge_refusals(api: HubSpotApi) -> None:
    first, second = api.ids()[:2]
    missing = call(api, "POST", "/crm/v3/objects/companies/merge", body={"primaryObjectId": first})
    assert missing.status == 400
    unknown = merge(api, first, "123")
    assert unknown.status == 404 and body_of(unknown)["context"] == {"id": ["123"]}
    itself = merge(api, first, first)
    assert itself.status == 400 and "into itself" in body_of(itself)["message"]
    assert call(api, "POST", "/crm/v3/objects/tasks/merge", body={}).status == 405
    assert api.ids()[:2] == [first, second]
    with pytest.raises(LookupError):
        api.merge("companies", first, "123")
    with pytest.raises(ValueError):
        api.merge("tasks", first, second)


# --------------------------------------------------------------------------- search lags writes


def hits(api: HubSpotApi, object_type: str, name: str, value: str) -> list[dict[str, Any]]:
    """What a search for ``name = value`` returns (all properties the test looks at)."""
    body = body_of(
        search(
            api,
            object_type,
            filterGroups=[{"filters": [{"propertyName": name, "operator": "EQ", "value": value}]}],
            properties=[name, "pqa_score"],
            limit=200,
        )
    )
    return list(body["results"])


def test_a_new_record_is_found_by_search_only_once_the_lag_has_passed(
    api: HubSpotApi, clock: FakeTime
) -> None:
    created = call(api, "POST", "/crm/v3/objects/companies", body={"properties": {"name": "Lagco"}})
    new_id = body_of(created)["id"]
    assert hits(api, "companies", "name", "Lagco") == []
    # Reads by id and lists are not lagged.
    assert call(api, "GET", f"/crm/v3/objects/companies/{new_id}").status == 200
    read = call(
        api, "POST", "/crm/v3/objects/companies/batch/read", body={"inputs": [{"id": new_id}]}
    )
    assert [r["id"] for r in body_of(read)["results"]] == [new_id]
    clock.now += api.search_lag_seconds
    assert [r["id"] for r in hits(api, "companies", "name", "Lagco")] == [new_id]


def test_an_updated_record_is_found_by_its_old_values_until_the_lag_passes(
    api: HubSpotApi, clock: FakeTime
) -> None:
    target = api.ids()[7]
    update(api, [{"id": target, "properties": {"pqa_score": 11}}])
    clock.now += api.search_lag_seconds
    update(api, [{"id": target, "properties": {"pqa_score": 77}}])
    clock.now += 1
    assert hits(api, "companies", "pqa_score", "77") == []
    (old,) = hits(api, "companies", "pqa_score", "11")
    assert old["id"] == target and old["properties"]["pqa_score"] == "11"  # the old copy
    assert api.company(target)["pqa_score"] == "77"
    clock.now += api.search_lag_seconds
    assert hits(api, "companies", "pqa_score", "11") == []
    (new,) = hits(api, "companies", "pqa_score", "77")
    assert new["properties"]["pqa_score"] == "77"


def test_writes_reach_search_in_order_each_after_the_lag(api: HubSpotApi, clock: FakeTime) -> None:
    target = api.ids()[8]
    lag = api.search_lag_seconds
    update(api, [{"id": target, "properties": {"pqa_score": 1}}])
    clock.now += lag / 2
    update(api, [{"id": target, "properties": {"pqa_score": 2}}])
    clock.now += lag / 2  # the first write has landed, the second not yet
    assert [r["id"] for r in hits(api, "companies", "pqa_score", "1")] == [target]
    assert hits(api, "companies", "pqa_score", "2") == []
    clock.now += lag / 2
    assert hits(api, "companies", "pqa_score", "1") == []
    assert [r["id"] for r in hits(api, "companies", "pqa_score", "2")] == [target]


def test_an_archived_record_stays_findable_until_the_lag_passes(
    api: HubSpotApi, clock: FakeTime
) -> None:
    target = api.ids()[9]
    assert call(api, "DELETE", f"/crm/v3/objects/companies/{target}").status == 204
    assert [r["id"] for r in hits(api, "companies", "hs_object_id", target)] == [target]
    assert call(api, "GET", f"/crm/v3/objects/companies/{target}").status == 404
    clock.now += api.search_lag_seconds
    assert hits(api, "companies", "hs_object_id", target) == []


def test_a_search_lag_of_zero_shows_writes_at_once(clock: FakeTime) -> None:
    api = HubSpotApi(seed=3, companies=COMPANIES[:5], clock=clock, search_lag_seconds=0)
    created = call(api, "POST", "/crm/v3/objects/companies", body={"properties": {"name": "Now"}})
    assert [r["id"] for r in hits(api, "companies", "name", "Now")] == [body_of(created)["id"]]


# --------------------------------------------------------------------------- search rate limit


def test_searches_are_limited_per_second_apart_from_the_ten_second_window(
    api: HubSpotApi, clock: FakeTime
) -> None:
    query = {"filterGroups": [{"filters": [{"propertyName": "name", "operator": "HAS_PROPERTY"}]}]}
    path = "/crm/v3/objects/companies/search"
    before = call(api, "GET", "/crm/v3/objects/companies")
    answers = [call(api, "POST", path, body=query) for _ in range(6)]
    assert [a.status for a in answers] == [200] * 5 + [429]
    assert body_of(answers[5]) == {
        "status": "error",
        "message": "You have reached your secondly limit.",
        "correlationId": body_of(answers[5])["correlationId"],
        "category": "RATE_LIMITS",
    }
    for answer in answers:  # no rate-limit headers on search answers, not even on the 429
        assert not any(
            h.lower().startswith(("x-hubspot-ratelimit", "retry-after")) for h in answer.headers
        )
    after = call(api, "GET", "/crm/v3/objects/companies")
    window = "X-HubSpot-RateLimit-Remaining"
    assert int(before.headers[window]) - 1 == int(after.headers[window])  # searches not counted
    daily = "X-HubSpot-RateLimit-Daily-Remaining"
    # The day counts the five searches that got in (and the list), not the refused one.
    assert int(before.headers[daily]) - 6 == int(after.headers[daily])
    clock.now += 1
    assert call(api, "POST", path, body=query).status == 200
    api.search_limiter.per_second = 0  # off
    assert all(call(api, "POST", path, body=query).status == 200 for _ in range(20))


# --------------------------------------------------------------------------- 429 bodies


def test_a_ten_second_429_says_when_to_retry_only_sometimes(clock: FakeTime) -> None:
    def retry_afters(rate: float) -> list[bool]:
        api = HubSpotApi(seed=3, companies=COMPANIES[:5], clock=clock, monotonic=clock)
        api.set_burst_limit(1)
        api.retry_after_rate = rate
        call(api, "GET", "/crm/v3/objects/companies")
        refused = [call(api, "GET", "/crm/v3/objects/companies") for _ in range(20)]
        assert {r.status for r in refused} == {429}
        assert {body_of(r)["policyName"] for r in refused} == {"TEN_SECONDLY_ROLLING"}
        return ["Retry-After" in r.headers for r in refused]

    sometimes = retry_afters(0.5)
    assert any(sometimes) and not all(sometimes)
    assert retry_afters(0.5) == sometimes  # seeded
    assert not any(retry_afters(0.0)) and all(retry_afters(1.0))


def test_the_daily_429_is_the_documented_body(api: HubSpotApi) -> None:
    api.exhaust_daily()
    refused = call(api, "GET", "/crm/v3/objects/companies")
    body = body_of(refused)
    assert set(body) == {
        "status",
        "message",
        "errorType",
        "correlationId",
        "policyName",
        "requestId",
    }
    assert (body["message"], body["errorType"], body["policyName"]) == (
        "You have reached your daily limit.",
        "RATE_LIMIT",
        "DAILY",
    )
    assert "Retry-After" not in refused.headers
    searched = search(api, filterGroups=[])
    assert searched.status == 429 and body_of(searched)["policyName"] == "DAILY"
    assert not searched.headers  # a search answer never carries rate-limit headers


# --------------------------------------------------------------------------- unique values


def unique_company_property(api: HubSpotApi, name: str = "erp_id") -> None:
    created = call(
        api,
        "POST",
        "/crm/v3/properties/companies",
        body={
            "name": name,
            "label": "ERP id",
            "type": "string",
            "fieldType": "text",
            "groupName": "companyinformation",
            "hasUniqueValue": True,
        },
    )
    assert created.status == 201


def test_a_taken_unique_value_is_refused_on_every_write(api: HubSpotApi) -> None:
    unique_company_property(api)
    first, second = api.ids()[:2]
    assert update(api, [{"id": first, "properties": {"erp_id": "E-1"}}]).status == 200
    before = len(api.ids())

    created = call(api, "POST", "/crm/v3/objects/companies", body={"properties": {"erp_id": "e-1"}})
    assert created.status == 400 and body_of(created)["category"] == "VALIDATION_ERROR"
    assert '"error":"VALUE_NOT_UNIQUE"' in body_of(created)["message"]
    assert '"name":"erp_id"' in body_of(created)["message"]
    twins = call(
        api,
        "POST",
        "/crm/v3/objects/companies/batch/create",
        body={"inputs": [{"properties": {"erp_id": "E-2"}}, {"properties": {"erp_id": "E-2"}}]},
    )
    assert twins.status == 400
    assert len(api.ids()) == before  # nothing created, not even the first twin

    patched = call(
        api,
        "PATCH",
        f"/crm/v3/objects/companies/{second}",
        body={"properties": {"erp_id": "E-1"}},
    )
    assert patched.status == 400
    batch = update(
        api,
        [
            {"id": second, "properties": {"erp_id": "E-1"}},
            {"id": api.ids()[2], "properties": {"erp_id": "E-3"}},
        ],
    )
    assert batch.status == 207
    (error,) = body_of(batch)["errors"]
    assert error["context"]["ids"] == [second]
    assert error["errors"][0]["code"] == "VALUE_NOT_UNIQUE"
    assert api.company(api.ids()[2])["erp_id"] == "E-3"
    assert "erp_id" not in api.company(second)
    # Rewriting a record's own value is no conflict.
    assert update(api, [{"id": first, "properties": {"erp_id": "E-1"}}]).status == 200


def test_a_taken_contact_email_is_hubspots_409_conflict(api: HubSpotApi) -> None:
    holder, other = list(api.objects["contacts"])[:2]
    email = api.objects["contacts"][holder]["properties"]["email"]
    created = call(
        api, "POST", "/crm/v3/objects/contacts", body={"properties": {"email": email.upper()}}
    )
    assert created.status == 409
    assert body_of(created)["category"] == "CONFLICT"
    assert body_of(created)["message"] == f"Contact already exists. Existing ID: {holder}"
    moved = call(
        api, "PATCH", f"/crm/v3/objects/contacts/{other}", body={"properties": {"email": email}}
    )
    assert moved.status == 409


def test_id_property_reads_and_updates_a_single_record(api: HubSpotApi) -> None:
    unique_company_property(api)
    target = api.ids()[4]
    update(api, [{"id": target, "properties": {"erp_id": "ERP-44"}}])
    read = call(api, "GET", "/crm/v3/objects/companies/ERP-44", {"idProperty": "erp_id"})
    assert read.status == 200 and body_of(read)["id"] == target
    patched = call(
        api,
        "PATCH",
        "/crm/v3/objects/companies/ERP-44",
        {"idProperty": "erp_id"},
        body={"properties": {"pqa_score": 44}},
    )
    assert patched.status == 200 and body_of(patched)["id"] == target
    assert api.company(target)["pqa_score"] == "44"
    missing = call(api, "GET", "/crm/v3/objects/companies/ERP-0", {"idProperty": "erp_id"})
    assert missing.status == 404
    email = next(iter(api.objects["contacts"].values()))["properties"]["email"]
    contact = call(api, "GET", f"/crm/v3/objects/contacts/{email}", {"idProperty": "email"})
    assert body_of(contact)["properties"]["email"] == email


def test_an_id_property_without_unique_values_is_refused_as_hubspot_refuses_it(
    api: HubSpotApi,
) -> None:
    name = api.company(api.ids()[0])["name"]
    for method in ("GET", "PATCH"):
        refused = call(
            api,
            method,
            f"/crm/v3/objects/companies/{name}",
            {"idProperty": "name"},
            body={"properties": {}} if method == "PATCH" else None,
        )
        assert refused.status == 400
        assert body_of(refused)["message"] == (
            f"Unable to perform update/upsert by non-unique 0-2 property name in portal ID {PORTAL_ID}"
        )
    by_record_id = update(
        api, [{"id": api.ids()[0], "idProperty": "hs_object_id", "properties": {}}]
    )
    assert by_record_id.status == 400  # a batch takes the record id without an idProperty
