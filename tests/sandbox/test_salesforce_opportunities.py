"""The sandbox org's Opportunity object, through the unmodified simple-salesforce client.

Pinned against the Salesforce documentation:
- Opportunity fields (AccountId reference, CloseDate date, IsClosed and IsWon boolean, Amount
  currency, StageName picklist): https://developer.salesforce.com/docs/atlas.en-us.sfFieldRef.meta/sfFieldRef/salesforce_field_reference_Opportunity.htm
- OpportunityStage (IsClosed, IsWon, DefaultProbability per stage):
  https://developer.salesforce.com/docs/platform/object-reference/references/standard-objects/object-opportunitystage.html
- date formats in WHERE: "If you specify a dateTime format in a query, you can filter only on
  dateTime fields. Similarly, if you specify a date format value, you can filter only on date
  fields"; dates are not quoted:
  https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_dateformats.htm
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from simple_salesforce.exceptions import SalesforceMalformedRequest

from connectors.demo_warehouse import demo_intents
from pls_sync.demo_companies import demo_companies
from pls_sync.sandbox.salesforce import SalesforceApi
from pls_sync.sandbox.seed import crm_companies, seed_salesforce
from pls_sync.sandbox.server import Sandbox

AS_OF = datetime(2026, 3, 1, tzinfo=UTC)
COMPANIES = demo_companies(7, 120)


def error_of(exc: Exception) -> dict[str, Any]:
    content = exc.content  # type: ignore[attr-defined]
    assert isinstance(content, list), content
    return dict(content[0])


def opportunity(box: Sandbox, opportunity_id: str) -> dict[str, Any]:
    record = box.salesforce.get("Opportunity", opportunity_id)
    assert record is not None
    return record


def test_describe_shows_the_documented_fields(sf: Any) -> None:
    fields = {f["name"]: f for f in sf.Opportunity.describe()["fields"]}
    assert fields["CloseDate"]["type"] == "date" and not fields["CloseDate"]["nillable"]
    assert fields["AccountId"]["referenceTo"] == ["Account"]
    assert fields["AccountId"]["relationshipName"] == "Account"
    for flag in ("IsWon", "IsClosed"):
        assert fields[flag]["type"] == "boolean"
        assert not fields[flag]["createable"] and not fields[flag]["updateable"]
    assert fields["Amount"]["type"] == "currency"
    stages = [v["value"] for v in fields["StageName"]["picklistValues"]]
    assert stages[-2:] == ["Closed Won", "Closed Lost"] and "Prospecting" in stages
    assert "Opportunity" in {o["name"] for o in sf.describe()["sobjects"]}


@pytest.mark.parametrize(
    ("stage", "closed", "won", "probability"),
    [
        ("Closed Won", True, True, 100.0),
        ("Closed Lost", True, False, 0.0),
        ("Negotiation/Review", False, False, 90.0),
    ],
)
def test_the_stage_decides_closed_won_and_the_default_probability(
    box: Sandbox, sf: Any, stage: str, closed: bool, won: bool, probability: float
) -> None:
    created = sf.Opportunity.create({"Name": "Deal", "StageName": stage, "CloseDate": "2026-02-10"})
    record = opportunity(box, created["id"])
    assert (record["IsClosed"], record["IsWon"], record["Probability"]) == (
        closed,
        won,
        probability,
    )
    assert record["CloseDate"] == date(2026, 2, 10)


def test_moving_the_stage_moves_the_flags(box: Sandbox, sf: Any) -> None:
    created = sf.Opportunity.create(
        {"Name": "Deal", "StageName": "Prospecting", "CloseDate": "2026-02-10", "Probability": 35}
    )
    assert opportunity(box, created["id"])["Probability"] == 35.0
    sf.Opportunity.update(created["id"], {"StageName": "Closed Won"})
    record = opportunity(box, created["id"])
    assert (record["IsClosed"], record["IsWon"], record["Probability"]) == (True, True, 100.0)


def test_is_won_is_not_writable_and_stages_are_restricted(sf: Any) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Opportunity.create(
            {"Name": "D", "StageName": "Prospecting", "CloseDate": "2026-02-10", "IsWon": True}
        )
    assert error_of(caught.value)["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Opportunity.create({"Name": "D", "StageName": "Won-ish", "CloseDate": "2026-02-10"})
    assert error_of(caught.value)["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Opportunity.create({"Name": "D", "StageName": "Prospecting"})
    assert error_of(caught.value)["errorCode"] == "REQUIRED_FIELD_MISSING"


def test_won_opportunities_by_close_date_with_the_account_domain(box: Sandbox, sf: Any) -> None:
    acme = box.salesforce.insert("Account", {"Name": "Acme", "Website": "https://acme.com/"})
    for stage, close in [
        ("Closed Won", date(2026, 1, 20)),
        ("Closed Won", date(2025, 12, 31)),
        ("Closed Lost", date(2026, 1, 22)),
        ("Proposal/Price Quote", date(2026, 2, 1)),
    ]:
        box.salesforce.insert(
            "Opportunity",
            {"Name": stage, "AccountId": acme, "StageName": stage, "CloseDate": close},
        )
    answer = sf.query(
        "SELECT AccountId, CloseDate, Account.Website FROM Opportunity "
        "WHERE IsWon = true AND CloseDate >= 2026-01-01"
    )
    assert answer["totalSize"] == 1
    (row,) = answer["records"]
    assert row["AccountId"] == acme and row["CloseDate"] == "2026-01-20"
    assert row["Account"]["Website"] == "https://acme.com/"
    closed = sf.query("SELECT Id FROM Opportunity WHERE IsClosed = true AND IsWon = false")
    assert closed["totalSize"] == 1


@pytest.mark.parametrize(
    ("where", "kind"),
    [
        ("CloseDate >= 2026-01-01T00:00:00Z", "date"),
        ("CloseDate >= '2026-01-01'", "date"),
        ("IsWon = 'true'", "boolean"),
        ("IsWon IN (true, 'false')", "boolean"),
        ("LastModifiedDate > 2026-01-01", "dateTime"),
    ],
)
def test_a_literal_of_the_wrong_kind_is_refused_as_salesforce_refuses_it(
    sf: Any, where: str, kind: str
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query(f"SELECT Id FROM Opportunity WHERE {where}")
    error = error_of(caught.value)
    assert error["errorCode"] == "INVALID_FIELD"
    assert error["message"].endswith(f"must be of type {kind} and should not be enclosed in quotes")


def test_date_literals_and_relative_dates_fit_date_fields(box: Sandbox, sf: Any) -> None:
    box.salesforce.insert(
        "Opportunity", {"Name": "D", "StageName": "Closed Won", "CloseDate": date(2026, 1, 5)}
    )
    for where in (
        "CloseDate = 2026-01-05",
        "CloseDate IN (2026-01-05, 2026-01-06)",
        "CloseDate < TODAY",
        "CloseDate != null AND IsWon = TRUE",
    ):
        assert sf.query(f"SELECT Id FROM Opportunity WHERE {where}")["totalSize"] == 1, where


# ----------------------------------------------------------------------------- the seeded org


def seeded(as_of: datetime = AS_OF) -> SalesforceApi:
    api = SalesforceApi(clock=lambda: AS_OF)
    seed_salesforce(api, COMPANIES, 7, as_of=as_of)
    return api


def test_the_seeded_org_tells_the_demo_warehouse_story() -> None:
    """Each company that bought by the as-of date (the warehouse's ``conversions``) and has a
    primary account has a won opportunity closed that day; a purchase after it is an open
    opportunity expected to close then; nothing is won after the as-of date."""
    api = seeded()
    bought = {
        i.domain: i.converted_at
        for i in demo_intents(COMPANIES, seed=7, as_of=AS_OF)
        if i.converted_at
    }
    primaries = {
        c["domain"]: c["name"] for c in crm_companies(COMPANIES, 7) if c["kind"] == "primary"
    }
    accounts = {a["Id"]: a for a in api.records["Account"].values()}
    opportunities = list(api.records["Opportunity"].values())
    won: dict[str, set[date]] = {}
    open_: dict[str, set[date]] = {}
    for opp in opportunities:
        account = accounts.get(opp["AccountId"] or "")
        if account is None:
            continue
        target = won if opp["IsWon"] else open_ if not opp["IsClosed"] else None
        if target is not None:
            target.setdefault(account["Name"], set()).add(opp["CloseDate"])
    assert all(o["CloseDate"] <= AS_OF.date() for o in opportunities if o["IsWon"])
    expected_won = {d: t for d, t in bought.items() if t <= AS_OF and d in primaries}
    expected_later = {d: t for d, t in bought.items() if t > AS_OF and d in primaries}
    assert expected_won and expected_later
    for domain, when in expected_won.items():
        assert when.date() == min(won[primaries[domain]])
    for domain, when in expected_later.items():
        assert when.date() in open_[primaries[domain]]
        assert primaries[domain] not in won
    assert any(o["StageName"] == "Closed Lost" for o in opportunities)


def test_opportunities_leave_every_other_seeded_record_as_it_was() -> None:
    one, other = seeded(), seeded(datetime(2026, 9, 1, tzinfo=UTC))
    for sobject in ("Account", "Contact", "Lead", "User"):
        assert one.records[sobject] == other.records[sobject]
    assert one.records["Opportunity"] == seeded().records["Opportunity"]
    assert one.records["Opportunity"] != other.records["Opportunity"]
    assert all(key.startswith("006Op") for key in one.records["Opportunity"])
