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
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pls_sync.demo_companies import demo_companies
from pls_sync.sandbox.http import Request, Response
from pls_sync.sandbox.hubspot import (
    BATCH_MAX,
    LIST_PAGE_MAX,
    SEARCH_RESULT_CAP,
    HubSpotApi,
    normalise_value,
)

COMPANIES = demo_companies(seed=3, count=120)


class FakeTime:
    """A clock that only moves when told to."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


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
    return call(api, "POST", f"/crm/v3/objects/{object_type}/search", body=body)


def test_search_filters_sorts_and_pages(api: HubSpotApi) -> None:
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


def test_search_never_returns_more_than_10000_results(api: HubSpotApi) -> None:
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
