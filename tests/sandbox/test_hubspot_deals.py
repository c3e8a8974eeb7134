"""The sandbox portal's deals, deal pipelines and v4 association reads, in process.

Pinned against HubSpot's documentation:
- pipelines (``GET /crm/v3/pipelines/deals``; "For deals, probability is required with a value
  between 0.0 and 1.0, 0.0 being Closed Lost and 1.0 being Closed Won"):
  https://developers.hubspot.com/docs/api/crm/pipelines
- v4 batch read (``POST /crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read``,
  ``results[].from.id``, ``to[].toObjectId`` and ``associationTypes`` of ``category``,
  ``typeId``, ``label``; "The 'paging' field will only be present if there are more pages"):
  https://developers.hubspot.com/docs/api-reference/legacy/crm/associations/associate-records/batch/get-associations
- the batch read's limit ("may not exceed 1000 IDs per request body"):
  https://developers.hubspot.com/changelog/bug-fix-batch-read-limit-for-hubspot-associations-api
- search lag ("It may take a few moments for newly created or updated CRM objects to appear
  in search results"): https://developers.hubspot.com/docs/api/crm/search
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.demo_warehouse import demo_intents
from pls_sync.demo_companies import demo_companies
from pls_sync.sandbox.http import Request, Response
from pls_sync.sandbox.hubspot import ASSOCIATION_BATCH_MAX, HubSpotApi
from pls_sync.sandbox.seed import crm_companies
from tests.fakes import FakeTime

COMPANIES = demo_companies(seed=3, count=120)
AS_OF = datetime(2026, 3, 1, tzinfo=UTC)
WON = datetime(2026, 1, 20, 9, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def api(clock: FakeTime) -> HubSpotApi:
    return HubSpotApi(seed=3, companies=COMPANIES[:20], clock=clock, monotonic=clock, as_of=AS_OF)


def call(api: HubSpotApi, method: str, path: str, body: Any = None) -> Response:
    headers = {"host": "127.0.0.1:9", "authorization": f"Bearer {api.token}"}
    raw = json.dumps(body).encode() if body is not None else b""
    return api.handle(Request(method, path, {}, headers, raw))


def body_of(response: Response) -> dict[str, Any]:
    assert isinstance(response.body, dict), response.body
    return response.body


def associations(api: HubSpotApi, ids: list[str], path: str = "deals/companies") -> Response:
    inputs = [{"id": key} for key in ids]
    return call(api, "POST", f"/crm/v4/associations/{path}/batch/read", {"inputs": inputs})


def new_deal(api: HubSpotApi, stage: str, *types: tuple[str, int]) -> str:
    body: dict[str, Any] = {
        "properties": {"dealname": "Deal", "dealstage": stage, "closedate": "2026-01-20"},
        "associations": [
            {
                "to": {"id": company},
                "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}],
            }
            for company, type_id in types
        ],
    }
    response = call(api, "POST", "/crm/v3/objects/deals", body)
    assert response.status == 201, response.body
    return str(body_of(response)["id"])


def test_the_default_pipeline_and_its_stage_metadata(api: HubSpotApi) -> None:
    answer = body_of(call(api, "GET", "/crm/v3/pipelines/deals"))
    (pipeline,) = answer["results"]
    assert (pipeline["id"], pipeline["label"]) == ("default", "Sales Pipeline")
    stages = {stage["id"]: stage["metadata"] for stage in pipeline["stages"]}
    assert list(stages) == [
        "appointmentscheduled",
        "qualifiedtobuy",
        "presentationscheduled",
        "decisionmakerboughtin",
        "contractsent",
        "closedwon",
        "closedlost",
    ]
    assert stages["closedwon"] == {"isClosed": "true", "probability": "1.0"}
    assert stages["closedlost"] == {"isClosed": "true", "probability": "0.0"}
    assert stages["contractsent"] == {"isClosed": "false", "probability": "0.9"}
    assert body_of(call(api, "GET", "/crm/v3/pipelines/deals/default"))["id"] == "default"
    assert call(api, "GET", "/crm/v3/pipelines/deals/nope").status == 404
    assert call(api, "GET", "/crm/v3/pipelines/companies").status == 400


def test_a_new_pipeline_brings_its_stages_and_its_won_stage(api: HubSpotApi) -> None:
    api.add_deal_pipeline(
        "renewals",
        "Renewals",
        [("9001", "Renewal due", 0.5, False), ("9002", "Renewed", 1.0, True)],
    )
    pipelines = body_of(call(api, "GET", "/crm/v3/pipelines/deals"))["results"]
    assert [p["id"] for p in pipelines] == ["default", "renewals"]
    created = call(
        api,
        "POST",
        "/crm/v3/objects/deals",
        {"properties": {"dealname": "R", "pipeline": "renewals", "dealstage": "9002"}},
    )
    deal = api.objects["deals"][str(body_of(created)["id"])]["properties"]
    assert (deal["hs_is_closed"], deal["hs_is_closed_won"]) == ("true", "true")
    assert deal["closedate"]  # a deal that closes without a close date gets one
    refused = call(api, "POST", "/crm/v3/objects/deals", {"properties": {"dealstage": "9003"}})
    assert refused.status == 400 and "INVALID_OPTION" in json.dumps(refused.body)


@pytest.mark.parametrize(
    ("stage", "closed", "won"),
    [
        ("closedwon", "true", "true"),
        ("closedlost", "true", "false"),
        ("contractsent", "false", "false"),
    ],
)
def test_the_closed_flags_follow_the_stage_and_are_read_only(
    api: HubSpotApi, stage: str, closed: str, won: str
) -> None:
    deal_id = new_deal(api, stage)
    properties = api.objects["deals"][deal_id]["properties"]
    assert (properties["hs_is_closed"], properties["hs_is_closed_won"]) == (closed, won)
    assert properties["pipeline"] == "default"
    refused = call(
        api,
        "PATCH",
        f"/crm/v3/objects/deals/{deal_id}",
        {"properties": {"hs_is_closed_won": "true"}},
    )
    assert refused.status == 400 and "READ_ONLY_VALUE" in json.dumps(refused.body)


def test_a_primary_company_is_associated_with_both_types(api: HubSpotApi) -> None:
    first, second = api.ids("companies")[:2]
    deal_id = new_deal(api, "closedwon", (first, 5), (second, 341))
    answer = associations(api, [deal_id])
    assert answer.status == 200
    (result,) = body_of(answer)["results"]
    assert result["from"] == {"id": deal_id}
    assert [
        (
            to["toObjectId"],
            [(t["category"], t["typeId"], t["label"]) for t in to["associationTypes"]],
        )
        for to in result["to"]
    ] == [
        (
            first,
            [("HUBSPOT_DEFINED", 5, "Deal with Primary Company"), ("HUBSPOT_DEFINED", 341, None)],
        ),
        (second, [("HUBSPOT_DEFINED", 341, None)]),
    ]
    (back,) = body_of(associations(api, [first], "companies/deals"))["results"]
    assert back["to"] == [
        {
            "toObjectId": deal_id,
            "associationTypes": [
                {"category": "HUBSPOT_DEFINED", "typeId": 6, "label": "Deal with Primary Company"},
                {"category": "HUBSPOT_DEFINED", "typeId": 342, "label": None},
            ],
        }
    ]
    bad = call(
        api,
        "POST",
        "/crm/v3/objects/deals",
        {
            "properties": {},
            "associations": [{"to": {"id": "1"}, "types": [{"associationTypeId": 5}]}],
        },
    )
    assert bad.status == 400


def test_a_deal_without_company_is_an_error_of_a_207(api: HubSpotApi) -> None:
    company = api.ids("companies")[0]
    lone, linked = new_deal(api, "closedwon"), new_deal(api, "closedwon", (company, 5))
    answer = associations(api, [lone, linked, "123"])
    body = body_of(answer)
    assert answer.status == 207
    assert [r["from"]["id"] for r in body["results"]] == [linked]
    assert body["numErrors"] == 2
    assert {e["subCategory"] for e in body["errors"]} == {"crm.associations.NO_ASSOCIATIONS_FOUND"}
    assert body["errors"][0]["context"] == {"fromObjectId": [lone]}
    assert body["errors"][0]["message"] == f"No company is associated with deal {lone}."


def test_at_most_1000_inputs_a_request(api: HubSpotApi) -> None:
    too_many = associations(api, [str(n) for n in range(ASSOCIATION_BATCH_MAX + 1)])
    assert too_many.status == 400
    assert body_of(too_many)["category"] == "VALIDATION_ERROR"
    assert call(api, "GET", "/crm/v4/associations/deals/companies/batch/read").status == 405
    assert associations(api, ["1"], "deals/widgets").status == 400


def test_associations_page_500_a_record(api: HubSpotApi) -> None:
    companies = [
        api._new_record("companies", {"name": f"c{n}"}, created=AS_OF)["id"] for n in range(501)
    ]
    deal_id = api.insert_deal({"dealstage": "closedwon"}, companies, created=AS_OF)
    (first,) = body_of(associations(api, [deal_id]))["results"]
    assert len(first["to"]) == 500 and first["paging"]["next"]["after"] == "500"
    again = call(
        api,
        "POST",
        "/crm/v4/associations/deals/companies/batch/read",
        {"inputs": [{"id": deal_id, "after": "500"}]},
    )
    (rest,) = body_of(again)["results"]
    assert [to["toObjectId"] for to in rest["to"]] == [companies[-1]] and "paging" not in rest


def test_merged_and_archived_companies_follow_their_deals(api: HubSpotApi) -> None:
    first, second, third = api.ids("companies")[:3]
    deal_id = api.insert_deal({"dealstage": "closedwon"}, [first, second, third], created=AS_OF)
    survivor = api.merge("companies", first, second)
    api.archive("companies", [third])
    (result,) = body_of(associations(api, [deal_id]))["results"]
    assert [to["toObjectId"] for to in result["to"]] == [survivor]


def search_ids(api: HubSpotApi, *filters: dict[str, Any]) -> list[str]:
    body = {"filterGroups": [{"filters": list(filters)}], "properties": ["closedate"], "limit": 200}
    answer = call(api, "POST", "/crm/v3/objects/deals/search", body)
    return [str(r["id"]) for r in body_of(answer)["results"]]


def test_deals_are_searched_by_stage_and_close_date_after_the_lag(
    api: HubSpotApi, clock: FakeTime
) -> None:
    seeded = set(api.ids("deals"))
    won_in_2026 = api.insert_deal(
        {"dealstage": "closedwon", "closedate": "2026-01-20T09:30:00.000Z"}, created=AS_OF
    )
    won_before = api.insert_deal(
        {"dealstage": "closedwon", "closedate": "2025-06-01T00:00:00.000Z"}, created=AS_OF
    )
    api.insert_deal(
        {"dealstage": "closedlost", "closedate": "2026-01-21T00:00:00.000Z"}, created=AS_OF
    )
    just_won = new_deal(api, "closedwon")
    since = str(int(datetime(2026, 1, 1, tzinfo=UTC).timestamp() * 1000))
    stage = {"propertyName": "dealstage", "operator": "IN", "values": ["closedwon"]}
    closed = {"propertyName": "closedate", "operator": "GTE", "value": since}

    def found(*filters: dict[str, Any]) -> list[str]:
        return [key for key in search_ids(api, *filters) if key not in seeded]

    assert found(stage, closed) == [won_in_2026]  # the new deal is not in the index yet
    clock.now += api.search_lag_seconds + 1
    assert found(stage, closed) == [won_in_2026, just_won]
    flag = {"propertyName": "hs_is_closed_won", "operator": "EQ", "value": "true"}
    assert found(flag) == [won_in_2026, won_before, just_won]


def test_seeded_deals_tell_the_demo_warehouse_story() -> None:
    api = HubSpotApi(seed=3, companies=COMPANIES, as_of=AS_OF)
    bought = {
        i.domain: i.converted_at
        for i in demo_intents(COMPANIES, seed=3, as_of=AS_OF)
        if i.converted_at
    }
    primary = {
        c["domain"]: c["name"] for c in crm_companies(COMPANIES, 3) if c["kind"] == "primary"
    }
    name_of = {key: r["properties"].get("name") for key, r in api.objects["companies"].items()}
    won: dict[str, datetime] = {}
    for deal in api.objects["deals"].values():
        properties = deal["properties"]
        if properties["hs_is_closed_won"] != "true":
            continue
        closed = datetime.fromisoformat(properties["closedate"].replace("Z", "+00:00"))
        assert closed <= AS_OF
        links = deal.get("associations", {}).get("companies", {}).get("results", [])
        primaries = [link["id"] for link in links if link["type"] == "deal_to_company"]
        for company in primaries:
            name = name_of[company]
            won[name] = min(won.get(name, closed), closed)
    expected = {primary[d]: t for d, t in bought.items() if t <= AS_OF and d in primary}
    assert expected and {name: won[name] for name in expected} == {
        name: when.replace(microsecond=(when.microsecond // 1000) * 1000)
        for name, when in expected.items()
    }
    stages = {d["properties"]["dealstage"] for d in api.objects["deals"].values()}
    assert {"closedwon", "closedlost", "contractsent"} <= stages
    again = HubSpotApi(seed=3, companies=COMPANIES, as_of=AS_OF)
    assert again.objects["deals"] == api.objects["deals"]
    assert (
        again.objects["companies"]
        == HubSpotApi(seed=3, companies=COMPANIES, as_of=datetime(2026, 9, 1, tzinfo=UTC)).objects[
            "companies"
        ]
    )
