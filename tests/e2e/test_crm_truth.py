"""The CRM tells the truth when the world moves (issue 12, cases 1-4), through the CLI.

Each test runs ``pls-sync run``/``plan`` in-process against the seeded sandbox and a copy of
the demo warehouse, changes the warehouse (DuckDB) or the CRM (its HTTP API), runs again and
checks what reps would read in both CRMs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import requests

from connectors.state import SqlStateStore
from pls_sync.sandbox.server import Sandbox
from tests.e2e.conftest import Workdir

SF_FIELDS = (
    "PQA_Score__c",
    "PQA_Tier__c",
    "PQA_Signals__c",
    "PQA_Score_Change__c",
    "PQA_Active_Users__c",
    "PQA_Qualified_Since__c",
    "PQA_Lead_Channel__c",
    "PQA_Motion__c",
)
HS_FIELDS = tuple(name.lower().removesuffix("__c") for name in SF_FIELDS)


def sf_api(crm: Sandbox, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(
        method,
        f"{crm.url}/services/data/v59.0/{path}",
        json=body,
        headers={"Authorization": f"Bearer {crm.session_id}"},
        timeout=10,
    )


def hs_api(crm: Sandbox, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(
        method,
        f"{crm.url}/crm/v3/objects/{path}",
        json=body,
        headers={"Authorization": f"Bearer {crm.hubspot_token}"},
        timeout=10,
    )


def run(workdir: Workdir, name: str, *extra: str, command: str = "run") -> dict[str, Any]:
    result, summary = workdir.sync(command, *extra, summary=f"{name}.json")
    assert result.exit_code == 0, result.output
    return summary


def sf_account(crm: Sandbox, record_id: str) -> dict[str, Any]:
    account = crm.salesforce.get("Account", record_id)
    assert account is not None and not account["IsDeleted"]
    return account


def matched_sales_account(workdir: Workdir, crm: Sandbox) -> tuple[str, str, str]:
    """(domain, Salesforce id, HubSpot id) of a sales-tier account matched in both CRMs."""
    state = SqlStateStore.open(workdir.state_url)
    try:
        owned_sf = state.load_owned(f"salesforce:{crm.salesforce.org_id}")
        owned_hs = state.load_owned(f"hubspot:{crm.hubspot.portal_id}")  # type: ignore[union-attr]
        states = state.load_account_states()
    finally:
        state.close()
    by_account_hs = {row.account_key: rid for rid, row in owned_hs.items()}
    for record_id, row in sorted(owned_sf.items()):
        key = row.account_key
        if states.get(key) is not None and states[key].tier == "sales" and key in by_account_hs:
            return key, record_id, by_account_hs[key]
    raise AssertionError("the demo has no sales-tier account matched in both CRMs")


def delete_users_of(workdir: Workdir, domain: str) -> int:
    """Delete every user of ``domain`` (and their events) from the demo warehouse."""
    of = "SELECT user_id FROM users WHERE lower(email) LIKE ? OR lower(email) LIKE ?"
    patterns = [f"%@{domain}", f"%.{domain}"]
    with duckdb.connect(str(workdir.warehouse)) as warehouse:
        found = warehouse.execute(f"SELECT count(*) FROM ({of})", patterns).fetchone()
        warehouse.execute(f"DELETE FROM events WHERE user_id IN ({of})", patterns)
        warehouse.execute(f"DELETE FROM users WHERE user_id IN ({of})", patterns)
    return int(found[0]) if found else 0


@contextmanager
def crm_clock_behind(crm: Sandbox, minutes: int = 3) -> Iterator[None]:
    """Changes made now are stamped a few minutes back, inside the next incremental read's
    window: Salesforce's deleted-records resource covers whole minutes up to the call, and
    scheduled runs are minutes apart, not seconds."""
    crm.set_clock(lambda: datetime.now(UTC) - timedelta(minutes=minutes))
    try:
        yield
    finally:
        crm.set_clock(lambda: datetime.now(UTC))


# --------------------------------------------------------------------------- case 1


def test_an_account_gone_from_the_warehouse_is_written_as_one_with_no_usage(
    workdir: Workdir, crm: Sandbox
) -> None:
    run(workdir, "s1")
    domain, sf_id, hs_id = matched_sales_account(workdir, crm)
    assert sf_account(crm, sf_id)["PQA_Tier__c"] == "sales"
    assert delete_users_of(workdir, domain) > 0  # a GDPR deletion

    s2 = run(workdir, "s2", "--full-refresh")
    assert s2["scoring"]["gone"] == 1 and s2["scoring"]["disqualified"] >= 1
    account = sf_account(crm, sf_id)
    assert (account["PQA_Score__c"], account["PQA_Tier__c"]) == (0, "self_serve")
    assert account["PQA_Signals__c"] is None and account["PQA_Motion__c"] is None
    assert account["PQA_Active_Users__c"] is None and account["PQA_Qualified_Since__c"] is None
    assert account["PQA_Lead_Channel__c"] in (None, "mql_only")
    company = crm.hubspot.company(hs_id)  # type: ignore[union-attr]
    assert (company["pqa_score"], company["pqa_tier"]) == ("0", "self_serve")
    assert not company.get("pqa_signals") and not company.get("pqa_motion")
    for name in ("salesforce", "hubspot"):
        assert s2["destinations"][name]["records_retired"] == {"account_gone": 1}
    state = SqlStateStore.open(workdir.state_url)
    try:
        gone = state.load_account_states()[domain]
    finally:
        state.close()
    assert (gone.score, gone.tier, gone.qualified_since) == (0, "self_serve", None)

    s3 = run(workdir, "s3")
    for dest in s3["destinations"].values():
        assert dest["records_changed"] == dest["write_calls"] == 0


# --------------------------------------------------------------------------- case 2


def test_a_record_that_stops_being_the_target_is_cleared(workdir: Workdir, crm: Sandbox) -> None:
    run(workdir, "s1")
    domain, sf_id, hs_id = matched_sales_account(workdir, crm)
    # A rep creates a duplicate account: under most_recently_modified the match moves to it.
    # Minutes before the next run, so HubSpot's search (which lags its writes) shows it.
    with crm_clock_behind(crm):
        created = sf_api(crm, "POST", "sobjects/Account", {"Name": "Dup", "Website": domain})
        assert created.status_code == 201, created.text
        dup_sf = created.json()["id"]
        created = hs_api(
            crm, "POST", "companies", {"properties": {"name": "Dup", "domain": domain}}
        )
        assert created.status_code == 201, created.text
        dup_hs = created.json()["id"]

    s2 = run(workdir, "s2")
    assert sf_account(crm, dup_sf)["PQA_Tier__c"] == "sales"
    old = sf_account(crm, sf_id)
    assert all(old[name] is None for name in SF_FIELDS), {n: old[n] for n in SF_FIELDS}
    assert crm.hubspot.company(dup_hs)["pqa_tier"] == "sales"  # type: ignore[union-attr]
    gone = crm.hubspot.company(hs_id)  # type: ignore[union-attr]
    assert all(not gone.get(name) for name in HS_FIELDS), gone
    for name in ("salesforce", "hubspot"):
        assert s2["destinations"][name]["records_retired"] == {"not_target": 1}

    # pls-sync's own writes moved both records' stamps: the match stays where people put it.
    s3 = run(workdir, "s3")
    for dest in s3["destinations"].values():
        assert dest["records_changed"] == dest["write_calls"] == 0


def test_an_mql_only_tag_goes_when_its_mql_goes(workdir: Workdir, crm: Sandbox) -> None:
    s1 = run(workdir, "s1")
    assert s1["leads"]["channels"]["mql_only"] > 0
    tagged = {
        record_id: account
        for record_id, account in crm.salesforce.records["Account"].items()
        if account["PQA_Lead_Channel__c"] == "mql_only"
    }
    record_id, account = sorted(tagged.items())[0]
    domain = str(account["Website"]).split("//")[-1].split("/")[0].removeprefix("www.")
    leads = [
        lead_id
        for lead_id, lead in crm.salesforce.records["Lead"].items()
        if str(lead.get("Email") or "").lower().endswith(domain)
        and lead.get("Status") == "Marketing Qualified"
    ]
    contacts = [
        contact_id
        for contact_id, contact in crm.salesforce.records["Contact"].items()
        if str(contact.get("Email") or "").lower().endswith(domain)
    ]
    assert leads or contacts
    # Minutes before the next run, so HubSpot's search (which lags its writes) shows it.
    with crm_clock_behind(crm):
        for lead_id in leads:  # marketing disqualifies them
            response = sf_api(crm, "PATCH", f"sobjects/Lead/{lead_id}", {"Status": "Unqualified"})
            assert response.status_code == 204, response.text
        for contact_id in contacts:
            assert sf_api(crm, "DELETE", f"sobjects/Contact/{contact_id}").status_code == 204
        for company_contact in crm.hubspot.ids("contacts"):  # type: ignore[union-attr]
            email = (
                crm.hubspot.objects["contacts"][company_contact]["properties"].get("email") or ""
            )  # type: ignore[union-attr]
            if email.lower().endswith(domain):
                hs_api(crm, "DELETE", f"contacts/{company_contact}")

    s2 = run(workdir, "s2")
    assert sf_account(crm, record_id)["PQA_Lead_Channel__c"] is None
    assert s2["leads"]["channels"]["mql_only"] < s1["leads"]["channels"]["mql_only"]
    assert s2["destinations"]["salesforce"]["records_retired"].get("not_target", 0) >= 1


# --------------------------------------------------------------------------- case 3


def test_another_crm_behind_the_same_state_store_is_read_in_full_and_written(
    workdir: Workdir, crm: Sandbox
) -> None:
    s1 = run(workdir, "s1")
    old_sf, old_hs = (s1["destinations"][n]["crm"] for n in ("salesforce", "hubspot"))
    # A refreshed sandbox org and a new portal: the same records, every PQA field empty.
    response = requests.post(
        f"{crm.url}/__sandbox/salesforce/identity",
        json={"clear_fields": list(SF_FIELDS)},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    response = requests.post(
        f"{crm.url}/__sandbox/hubspot/identity",
        json={"clear_properties": list(HS_FIELDS)},
        timeout=10,
    )
    assert response.status_code == 200, response.text

    plan = run(workdir, "p2", command="plan")
    for name, old in (("salesforce", old_sf), ("hubspot", old_hs)):
        dest = plan["destinations"][name]
        assert dest["crm"] != old
        assert dest["crm_read"]["mode"] == "full"
        assert dest["crm_read"]["reason"].startswith(f"another CRM: the snapshot is of {old}")
        matched = dest["match"]["matched"] + dest["match"]["ambiguous_resolved"]
        assert dest["records_changed"] >= matched > 0  # every target needs writing again

    s2 = run(workdir, "s2")
    s3 = run(workdir, "s3")
    for name in ("salesforce", "hubspot"):
        assert (
            s2["destinations"][name]["records_written"]
            == plan["destinations"][name]["records_changed"]
        )
        assert s3["destinations"][name]["records_changed"] == 0


# --------------------------------------------------------------------------- case 4


def test_deleted_and_merged_records_leave_the_snapshot_in_an_incremental_read(
    workdir: Workdir, crm: Sandbox
) -> None:
    with crm_clock_behind(crm):
        run(workdir, "s1")
        domain, sf_id, hs_id = matched_sales_account(workdir, crm)
        # A duplicate the match moves to, then deleted: the match must come back.
        sf_dup = sf_api(crm, "POST", "sobjects/Account", {"Name": "Dup", "Website": domain})
        hs_dup = hs_api(crm, "POST", "companies", {"properties": {"name": "Dup", "domain": domain}})
        sf_dup_id, hs_dup_id = sf_dup.json()["id"], hs_dup.json()["id"]
    s2 = run(workdir, "s2")
    assert sf_account(crm, sf_dup_id)["PQA_Tier__c"] == "sales"
    with crm_clock_behind(crm, minutes=2):
        assert sf_api(crm, "DELETE", f"sobjects/Account/{sf_dup_id}").status_code == 204
        assert hs_api(crm, "DELETE", f"companies/{hs_dup_id}").status_code == 204
        # and two other accounts are merged
        others = sorted(
            rid for rid, a in crm.salesforce.records["Account"].items() if not a["IsDeleted"]
        )
        others = [rid for rid in others if rid != sf_id][:2]
        merged = requests.post(
            f"{crm.url}/__sandbox/salesforce/merge",
            json={"master": others[0], "losers": [others[1]]},
            timeout=10,
        )
        assert merged.status_code == 200, merged.text

    s3 = run(workdir, "s3")
    sf, hs = s3["destinations"]["salesforce"], s3["destinations"]["hubspot"]
    assert sf["crm_read"]["mode"] == hs["crm_read"]["mode"] == "incremental"
    assert sf["crm_read"]["deleted"] == 2 and hs["crm_read"]["deleted"] == 1
    assert sf["status"] == hs["status"] == "succeeded" and sf["rejected"] == hs["rejected"] == 0
    assert sf_account(crm, sf_id)["PQA_Tier__c"] == "sales"  # the match came back
    assert crm.hubspot.company(hs_id)["pqa_tier"] == "sales"  # type: ignore[union-attr]
    assert sf["crm_records"] == s2["destinations"]["salesforce"]["crm_records"] - 2
    assert hs["crm_records"] == s2["destinations"]["hubspot"]["crm_records"] - 1
