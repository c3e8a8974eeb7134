"""An admin breaks the sandbox's schema; describe shows it at once and writes fail as the CRM fails.

Through the real clients: simple-salesforce (describe, SOQL, sObject Collections through
``restful``) and hubspot-api-client (the properties API, batch update). Each change is made
through ``/__sandbox/<crm>/schema`` over HTTP and through the API module's ``admin`` hook in
process. What the CRMs answer, per record:

* Salesforce, a value not in a restricted picklist: ``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST``
  ("With a restricted picklist, only an admin can add or change values; users can't load or
  remove values through the API":
  https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/meta_picklist.htm);
* HubSpot, a value not among an enumeration's options: ``INVALID_OPTION`` ("values can only
  include options that exactly match one or more of the ``options`` set for the property ...
  this validation is already in place for other CRM objects":
  https://developers.hubspot.com/changelog/upcoming-increased-validation-for-contact-updates-made-through-apis);
  "Read-only and non-existent properties will result in an error":
  https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/companies/batch/update-companies
* the properties API: update (PATCH) and archive (DELETE) ``/crm/v3/properties/{objectType}/{name}``:
  https://developers.hubspot.com/docs/api-reference/2026-03/crm/properties/delete-property
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import requests
from hubspot import HubSpot
from hubspot.crm.properties import OptionInput, PropertyUpdate
from hubspot.crm.properties.exceptions import ApiException
from simple_salesforce.exceptions import SalesforceMalformedRequest

from connectors.hubspot import field_spec as hubspot_field_spec
from connectors.salesforce import field_spec as salesforce_field_spec
from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.sandbox.http import Request
from pls_sync.sandbox.server import Sandbox
from pls_sync.schema_check import SchemaProblem, check_mapping_schema

Admin = Callable[[str, dict[str, Any]], tuple[int, Any]]

WRITABLE = {
    "tier": ("sales", "success", "self_serve"),
    "lead_channel": ("usage_pql", "usage_mql", "mql_only", "usage_no_buyer"),
    "motion": ("sales", "success", "abm", "self_serve"),
}
SALESFORCE_MAPPING = DestinationMapping(
    "salesforce",
    "Account",
    MatchRule(("Website", "Domain__c")),
    (
        FieldMapping("PQA_Score__c", "score"),
        FieldMapping("PQA_Tier__c", "tier"),
        FieldMapping("PQA_Signals__c", "signals", null="clear"),
        FieldMapping("PQA_Motion__c", "motion"),
    ),
)
HUBSPOT_MAPPING = DestinationMapping(
    "hubspot",
    "companies",
    MatchRule(("domain", "hs_additional_domains")),
    (
        FieldMapping("pqa_score", "score"),
        FieldMapping("pqa_tier", "tier"),
        FieldMapping("pqa_motion", "motion"),
    ),
)


@pytest.fixture(params=["http", "in_process"])
def admin(request: pytest.FixtureRequest, box: Sandbox) -> Admin:
    """``admin(crm, body) -> (status, body)``: one schema change, over HTTP or in process."""

    def over_http(crm: str, body: dict[str, Any]) -> tuple[int, Any]:
        response = requests.post(f"{box.url}/__sandbox/{crm}/schema", json=body, timeout=10)
        return response.status_code, response.json()

    def in_process(crm: str, body: dict[str, Any]) -> tuple[int, Any]:
        api: Any = box.salesforce if crm == "salesforce" else box.hubspot
        path = f"/__sandbox/{crm}/schema"
        response = api.admin(
            f"{crm}/schema", Request("POST", path, {}, {}, json.dumps(body).encode())
        )
        return response.status, response.body

    if request.param == "in_process":
        return in_process
    status, body = over_http("salesforce", {})
    if status == 404 and "unknown admin endpoint" in str(body.get("message")):
        pytest.skip("server.py does not route /__sandbox/<crm>/schema to the API modules yet")
    return over_http


def changed(admin: Admin, crm: str, **body: Any) -> Any:
    """Make one change that must succeed; the field's new describe entry (None once deleted)."""
    status, answer = admin(crm, body)
    assert status == 200, answer
    assert (answer["object"], answer["field"]) == (body["object"], body["field"])
    return answer["describe"]


# --------------------------------------------------------------------------- Salesforce


def sf_fields(sf: Any) -> dict[str, dict[str, Any]]:
    """The Account describe's fields by name, as simple-salesforce reads them."""
    return {f["name"]: f for f in sf.Account.describe()["fields"]}


def sf_problems(sf: Any) -> list[SchemaProblem]:
    """The shipped-like Salesforce mapping checked against the live describe."""
    specs = {s.name: s for s in map(salesforce_field_spec, sf.Account.describe()["fields"])}
    return check_mapping_schema(SALESFORCE_MAPPING, specs, WRITABLE)


def sf_update(sf: Any, *records: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """An sObject Collections update, allOrNone false: one SaveResult per record."""
    body = {
        "allOrNone": False,
        "records": [{"attributes": {"type": "Account"}, "id": i, **v} for i, v in records],
    }
    results = sf.restful("composite/sobjects", method="PATCH", json=body)
    assert isinstance(results, list)
    return results


def accounts(box: Sandbox, count: int) -> list[str]:
    return [box.salesforce.insert("Account", {"Name": f"Acct {i}"}) for i in range(count)]


def test_sf_a_removed_picklist_value_is_gone_from_describe_and_refused(
    box: Sandbox, sf: Any, admin: Admin
) -> None:
    first, second = accounts(box, 2)
    assert sf_problems(sf) == []
    entry = changed(
        admin,
        "salesforce",
        object="Account",
        field="PQA_Motion__c",
        picklist=["sales", "success", "self_serve"],
    )
    assert [v["value"] for v in entry["picklistValues"]] == ["sales", "success", "self_serve"]
    motion = sf_fields(sf)["PQA_Motion__c"]
    assert [v["value"] for v in motion["picklistValues"]] == ["sales", "success", "self_serve"]
    assert motion["restrictedPicklist"] is True
    [problem] = sf_problems(sf)
    assert (problem.key, problem.severity) == (("fields", "PQA_Motion__c"), "error")
    assert "abm" in problem.message
    results = sf_update(sf, (first, {"PQA_Motion__c": "abm"}), (second, {"PQA_Motion__c": "sales"}))
    assert results[0] == {
        "id": first,
        "success": False,
        "errors": [
            {
                "statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                "message": "PQA Motion: bad value for restricted picklist field: abm",
                "fields": ["PQA_Motion__c"],
            }
        ],
    }
    assert results[1] == {"id": second, "success": True, "errors": []}


def test_sf_an_unrestricted_picklist_stores_a_value_it_does_not_list(
    box: Sandbox, sf: Any, admin: Admin
) -> None:
    [account] = accounts(box, 1)
    changed(
        admin,
        "salesforce",
        object="Account",
        field="PQA_Motion__c",
        picklist=["sales", "success", "self_serve"],
        restricted=False,
    )
    assert sf_fields(sf)["PQA_Motion__c"]["restrictedPicklist"] is False
    [problem] = sf_problems(sf)
    assert problem.severity == "warning" and "abm" in problem.message
    assert sf_update(sf, (account, {"PQA_Motion__c": "abm"}))[0]["success"] is True
    assert box.salesforce.get("Account", account)["PQA_Motion__c"] == "abm"  # type: ignore[index]


def test_sf_a_multi_select_keeps_its_options_in_definition_order(
    box: Sandbox, sf: Any, admin: Admin
) -> None:
    """ "SOQL, Apex and API access on these fields will however return the values in their
    created order" (Salesforce knowledge article 000231088): what was written is not what
    comes back; a restricted one refuses an option it does not define."""
    first, second = accounts(box, 2)
    entry = changed(
        admin,
        "salesforce",
        object="Account",
        field="PQA_Signals__c",
        type="multipicklist",
        picklist=["zeta", "beta", "alpha"],
        restricted=True,
    )
    assert entry["type"] == "multipicklist" and entry["length"] == 4099
    assert sf_update(sf, (first, {"PQA_Signals__c": "alpha; zeta;alpha"}))[0]["success"] is True
    stored = sf.query(f"SELECT PQA_Signals__c FROM Account WHERE Id = '{first}'")["records"]
    assert stored[0]["PQA_Signals__c"] == "zeta;alpha"
    [refused] = sf_update(sf, (second, {"PQA_Signals__c": "alpha;omega"}))
    assert refused["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    status, answer = admin(
        "salesforce", {"object": "Account", "field": "Website", "type": "multipicklist"}
    )
    assert status == 400 and "cannot change" in answer["message"]


def test_sf_a_read_only_field(box: Sandbox, sf: Any, admin: Admin) -> None:
    [account] = accounts(box, 1)
    changed(admin, "salesforce", object="Account", field="PQA_Score__c", updateable=False)
    score = sf_fields(sf)["PQA_Score__c"]
    assert (score["updateable"], score["createable"]) == (False, False)
    [problem] = sf_problems(sf)
    assert problem.key == ("fields", "PQA_Score__c") and "read-only" in problem.message
    [result] = sf_update(sf, (account, {"PQA_Score__c": 80}))
    assert result["errors"][0]["statusCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert result["errors"][0]["fields"] == ["PQA_Score__c"]
    changed(admin, "salesforce", object="Account", field="PQA_Score__c", updateable=True)
    assert sf_update(sf, (account, {"PQA_Score__c": 80}))[0]["success"] is True


def test_sf_a_deleted_field_is_gone_from_describe_soql_and_writes(
    box: Sandbox, sf: Any, admin: Admin
) -> None:
    [account] = accounts(box, 1)
    assert changed(admin, "salesforce", object="Account", field="Domain__c", delete=True) is None
    assert "Domain__c" not in sf_fields(sf)
    [problem] = sf_problems(sf)
    assert problem.key == ("match", "domain_fields", 1)
    assert "Account has no domain field Domain__c" in problem.message
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query("SELECT Id, Domain__c FROM Account")
    content: Any = caught.value.content
    assert content[0]["errorCode"] == "INVALID_FIELD"
    [result] = sf_update(sf, (account, {"Domain__c": "acme.com"}))
    assert result["errors"][0]["statusCode"] == "INVALID_FIELD"
    assert "No such column 'Domain__c'" in result["errors"][0]["message"]


def test_sf_a_number_field_too_small_for_a_score(box: Sandbox, sf: Any, admin: Admin) -> None:
    [account] = accounts(box, 1)
    entry = changed(admin, "salesforce", object="Account", field="PQA_Score__c", precision=2)
    assert (entry["precision"], entry["scale"]) == (2, 0)
    [problem] = sf_problems(sf)
    assert "Number(2, 0)" in problem.message
    [result] = sf_update(sf, (account, {"PQA_Score__c": 100}))
    assert result["errors"][0]["statusCode"] == "NUMBER_OUTSIDE_VALID_RANGE"
    assert sf_update(sf, (account, {"PQA_Score__c": 99}))[0]["success"] is True


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"object": "Account", "field": "Nope__c", "delete": True}, 404, "no field Nope__c"),
        ({"object": "Widget__c", "field": "Name", "delete": True}, 404, "no sObject"),
        ({"object": "Account", "field": "Website", "delete": True}, 400, "standard field"),
        ({"object": "Account", "field": "Website", "picklist": ["a"]}, 400, "not a picklist"),
        ({"object": "Account", "field": "PQA_Tier__c", "picklist": []}, 400, "at least one"),
        ({"object": "Account", "field": "PQA_Tier__c", "picklist": [1]}, 400, "strings"),
        ({"object": "Account", "field": "PQA_Tier__c", "restricted": "no"}, 400, "boolean"),
        ({"object": "Account", "field": "PQA_Tier__c", "colour": "red"}, 400, "unknown"),
        ({"object": "Account", "field": "PQA_Tier__c"}, 400, "no change"),
        ({"object": "Account", "delete": True}, 400, "names its object and field"),
        ({"object": "Account", "field": "CreatedDate", "updateable": True}, 400, "system"),
        ({"object": "Account", "field": "Website", "precision": 4}, 400, "number fields"),
        ({"object": "Account", "field": "PQA_Score__c", "scale": 9}, 400, "scale"),
        ({"object": "Account", "field": "PQA_Tier__c", "length": 20}, 400, "text fields"),
    ],
)
def test_sf_changes_setup_refuses(
    admin: Admin, body: dict[str, Any], status: int, fragment: str
) -> None:
    answer_status, answer = admin("salesforce", body)
    assert answer_status == status
    assert fragment in answer["message"]


def test_sf_the_admin_hook_answers_only_its_own_post(box: Sandbox) -> None:
    api = box.salesforce
    assert api.admin("hubspot/schema", Request("POST", "/", {}, {})) is None
    wrong_method = api.admin("salesforce/schema", Request("GET", "/", {}, {}))
    assert wrong_method is not None and wrong_method.status == 405
    malformed = api.admin("salesforce/schema", Request("POST", "/", {}, {}, b"{"))
    assert malformed is not None and malformed.status == 400


# --------------------------------------------------------------------------- HubSpot


@pytest.fixture
def hubspot(box: Sandbox) -> Any:
    """hubspot-api-client on the sandbox, with two companies in the portal."""
    client = HubSpot(access_token=box.hubspot_token, host=box.url, retry=False)
    for name in ("Acme", "Globex"):
        client.crm.companies.basic_api.create({"properties": {"name": name}})
    return client


def hs_update(client: Any, inputs: list[dict[str, Any]]) -> Any:
    """A companies batch update through the client (a 207 model when some records fail)."""
    return client.crm.companies.batch_api.update({"inputs": inputs})


def hs_problems(client: Any) -> list[SchemaProblem]:
    """The HubSpot mapping checked against the live properties."""
    properties = client.crm.properties.core_api.get_all(object_type="companies").results
    specs = {s.name: s for s in map(hubspot_field_spec, properties)}
    return check_mapping_schema(HUBSPOT_MAPPING, specs, WRITABLE)


def company_ids(box: Sandbox) -> list[str]:
    assert box.hubspot is not None
    return box.hubspot.ids()


def test_hs_a_removed_option_is_gone_from_the_property_and_refused(
    box: Sandbox, hubspot: Any, admin: Admin
) -> None:
    first, second = company_ids(box)
    assert hs_problems(hubspot) == []
    entry = changed(
        admin, "hubspot", object="companies", field="pqa_motion", picklist=["sales", "success"]
    )
    assert [o["label"] for o in entry["options"]] == ["Sales", "Success"]
    motion = hubspot.crm.properties.core_api.get_by_name("companies", "pqa_motion")
    assert [o.value for o in motion.options] == ["sales", "success"]
    [problem] = hs_problems(hubspot)
    assert problem.key == ("fields", "pqa_motion") and "abm, self_serve" in problem.message
    answer = hs_update(
        hubspot,
        [
            {"id": first, "properties": {"pqa_motion": "abm"}},
            {"id": second, "properties": {"pqa_motion": "sales"}},
        ],
    )
    assert [r.id for r in answer.results] == [second]
    [error] = answer.errors
    assert error.context["ids"] == [first]
    assert [(e.code, e.context["propertyName"]) for e in error.errors] == [
        ("INVALID_OPTION", ["pqa_motion"])
    ]
    assert "abm was not one of the allowed options: [sales, success]" in error.message


def test_hs_a_read_only_property(box: Sandbox, hubspot: Any, admin: Admin) -> None:
    [first, _] = company_ids(box)
    changed(admin, "hubspot", object="companies", field="pqa_score", updateable=False)
    score = hubspot.crm.properties.core_api.get_by_name("companies", "pqa_score")
    assert score.modification_metadata.read_only_value is True
    [problem] = hs_problems(hubspot)
    assert problem.key == ("fields", "pqa_score") and "read-only" in problem.message
    answer = hs_update(hubspot, [{"id": first, "properties": {"pqa_score": "80"}}])
    assert [e.code for e in answer.errors[0].errors] == ["READ_ONLY_VALUE"]


def test_hs_an_archived_property_is_listed_only_as_archived_and_refused(
    box: Sandbox, hubspot: Any, admin: Admin
) -> None:
    [first, _] = company_ids(box)
    assert changed(admin, "hubspot", object="companies", field="pqa_tier", delete=True) is None
    api = hubspot.crm.properties.core_api
    assert "pqa_tier" not in {p.name for p in api.get_all(object_type="companies").results}
    archived = api.get_all(object_type="companies", archived=True).results
    assert [(p.name, p.archived) for p in archived] == [("pqa_tier", True)]
    [problem] = hs_problems(hubspot)
    assert problem.key == ("fields", "pqa_tier") and "no field pqa_tier" in problem.message
    answer = hs_update(hubspot, [{"id": first, "properties": {"pqa_tier": "sales"}}])
    assert [e.code for e in answer.errors[0].errors] == ["PROPERTY_DOESNT_EXIST"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"object": "companies", "field": "pqa_tier", "restricted": False}, 400, "always"),
        ({"object": "companies", "field": "pqa_score", "picklist": ["a"]}, 400, "number"),
        ({"object": "companies", "field": "name", "delete": True}, 400, "cannot be archived"),
        (
            {"object": "companies", "field": "hs_lastmodifieddate", "updateable": True},
            400,
            "read-only",
        ),
        ({"object": "companies", "field": "nope", "delete": True}, 404, "no property nope"),
        ({"object": "tickets", "field": "amount", "label": "x"}, 404, "no property amount"),
        ({"object": "companies", "field": "pqa_tier", "length": 3}, 400, "unknown"),
    ],
)
def test_hs_changes_hubspot_refuses(
    admin: Admin, body: dict[str, Any], status: int, fragment: str
) -> None:
    answer_status, answer = admin("hubspot", body)
    assert answer_status == status
    assert fragment in answer["message"]


def test_hs_options_and_archiving_through_the_properties_api(box: Sandbox, hubspot: Any) -> None:
    """The portal's own endpoints do the same, so the HubSpot half needs no admin endpoint."""
    [first, _] = company_ids(box)
    api = hubspot.crm.properties.core_api
    update = PropertyUpdate(
        options=[
            OptionInput(label="Sales", value="sales", display_order=0, hidden=False),
            OptionInput(label="Self-serve", value="self_serve", display_order=1, hidden=False),
        ]
    )
    updated = api.update("companies", "pqa_tier", update)
    assert [o.value for o in updated.options] == ["sales", "self_serve"]
    answer = hs_update(hubspot, [{"id": first, "properties": {"pqa_tier": "success"}}])
    assert [e.code for e in answer.errors[0].errors] == ["INVALID_OPTION"]
    api.archive("companies", "pqa_tier")
    with pytest.raises(ApiException) as caught:
        api.get_by_name("companies", "pqa_tier")
    assert caught.value.status == 404
    with pytest.raises(ApiException) as refused:
        api.archive("companies", "name")
    assert refused.value.status == 400
    counts = box.counts()
    assert (counts["hs.properties.update"], counts["hs.properties.archive"]) == (1, 2)
