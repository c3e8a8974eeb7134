"""MQL reads, account activity and idempotent alert tasks against the Salesforce sandbox.

The real simple-salesforce client talks to the sandbox (``tests/conftest.py``) over loopback.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from hypothesis import given, settings
from hypothesis import strategies as st
from responses.registries import OrderedRegistry

from connectors.alerts_state import (
    TaskRejected,
    alerts_to_retry,
    get_alert,
    mark_created,
    mark_pending,
    mark_rejected,
    pending_or_missing,
)
from connectors.salesforce import SalesforceDestination
from connectors.salesforce_leads import (
    CONTACT_SOURCE,
    LEAD_SOURCE,
    case_safe_id,
    create_salesforce_alert,
    read_last_activity,
    read_salesforce_mqls,
)
from connectors.state import SqlStateStore
from pls_sync.errors import FatalError
from pls_sync.sandbox.http import Response
from pls_sync.sandbox.salesforce import id18
from pls_sync.sandbox.seed import owners

MQL = "Marketing Qualified"


def destination(box: Any) -> SalesforceDestination:
    return SalesforceDestination.from_env(
        {"SALESFORCE_INSTANCE_URL": box.url, "SALESFORCE_SESSION_ID": box.session_id},
        sleep=lambda _seconds: None,
    )


def records(box: Any, sobject: str) -> list[dict[str, Any]]:
    return [r for r in box.salesforce.records[sobject].values() if not r["IsDeleted"]]


def tasks_with_key(box: Any, key: str) -> list[dict[str, Any]]:
    return [r for r in box.salesforce.records["Task"].values() if r["PQA_Alert_Key__c"] == key]


def an_account(box: Any) -> dict[str, Any]:
    return sorted(records(box, "Account"), key=lambda r: r["Id"])[0]


@pytest.fixture
def store(tmp_path: Path) -> SqlStateStore:
    return SqlStateStore.open(f"sqlite:///{tmp_path / 'state.sqlite'}")


# --------------------------------------------------------------------------- MQLs


def test_mqls_are_read_with_the_filters_in_soql(sandbox: Any) -> None:
    api = sandbox.salesforce
    converted = api.insert(
        "Lead",
        {"LastName": "Done", "Company": "X", "Email": "done@convert.io", "Status": MQL},
    )
    api.records["Lead"][converted]["IsConverted"] = True
    free_mail = api.insert(
        "Lead", {"LastName": "Free", "Company": "Y", "Email": "someone@gmail.com", "Status": MQL}
    )
    api.insert("Lead", {"LastName": "NoMail", "Company": "Z", "Status": MQL})
    expected_leads = {
        (LEAD_SOURCE, r["Id"], r["Email"])
        for r in records(sandbox, "Lead")
        if r["Status"] == MQL and not r["IsConverted"] and r["Email"]
    }
    expected_contacts = {
        (CONTACT_SOURCE, r["Id"], r["Email"])
        for r in records(sandbox, "Contact")
        if r["MQL__c"] and r["Email"]
    }
    assert len(expected_leads) > 3 and len(expected_contacts) > 3

    api.queries.clear()
    got = list(
        read_salesforce_mqls(destination(sandbox), lead_statuses=[MQL], contact_field="MQL__c")
    )

    assert set(got) == expected_leads | expected_contacts
    assert len(got) == len(set(got))
    assert (LEAD_SOURCE, free_mail, "someone@gmail.com") in got  # skipping is the core's job
    assert converted not in {record_id for _, record_id, _ in got}
    assert api.queries == [
        "SELECT Id, Email FROM Lead WHERE IsConverted = false "
        "AND Status IN ('Marketing Qualified') AND Email != null",
        "SELECT Id, Email FROM Contact WHERE MQL__c = true AND Email != null",
    ]


def test_mql_reads_page_through_large_results(sandbox: Any) -> None:
    api = sandbox.salesforce
    for n in range(450):
        api.insert(
            "Lead", {"LastName": f"L{n}", "Company": "Big", "Email": f"p{n}@big.io", "Status": MQL}
        )
    dest = destination(sandbox)
    dest._sf.headers["Sforce-Query-Options"] = "batchSize=200"
    sandbox.reset_counts()
    got = list(read_salesforce_mqls(dest, lead_statuses=[MQL], contact_field=None))
    expected = sum(1 for r in records(sandbox, "Lead") if r["Status"] == MQL and r["Email"])
    assert len(got) == expected > 450
    assert sandbox.counts()["sf.query"] == 1
    assert sandbox.counts()["sf.query_more"] == -(-expected // 200) - 1


def test_statuses_are_escaped_and_nothing_is_read_without_criteria(sandbox: Any) -> None:
    api = sandbox.salesforce
    dest = destination(sandbox)
    hostile = "x') OR (Status != null"
    api.queries.clear()
    assert list(read_salesforce_mqls(dest, lead_statuses=[hostile], contact_field=None)) == []
    assert api.queries == [
        "SELECT Id, Email FROM Lead WHERE IsConverted = false "
        "AND Status IN ('x\\') OR (Status != null') AND Email != null"
    ]
    api.queries.clear()
    assert list(read_salesforce_mqls(dest, lead_statuses=[], contact_field=None)) == []
    assert api.queries == []


def test_a_bad_contact_field_is_refused_before_any_call(sandbox: Any) -> None:
    sandbox.reset_counts()
    with pytest.raises(FatalError, match="invalid Salesforce field name"):
        list(
            read_salesforce_mqls(
                destination(sandbox), lead_statuses=[MQL], contact_field="MQL__c = true OR Id"
            )
        )
    assert "sf.query" not in sandbox.counts()


# --------------------------------------------------------------------------- activity


def test_last_activity_is_read_in_chunks_of_500(sandbox: Any) -> None:
    api = sandbox.salesforce
    for n in range(520 - len(records(sandbox, "Account"))):
        api.insert("Account", {"Name": f"Filler {n}"})
    accounts = sorted(records(sandbox, "Account"), key=lambda r: r["Id"])
    assert len(accounts) >= 520
    touched = accounts[5]["Id"]
    api.records["Account"][touched]["LastActivityDate"] = date(2026, 1, 2)
    untouched = accounts[6]["Id"]
    api.records["Account"][untouched]["LastActivityDate"] = None
    ids = [r["Id"] for r in accounts]
    ids[5] = touched[:15]  # a 15-character id comes back under the id as given

    api.queries.clear()
    got = read_last_activity(destination(sandbox), ids)

    assert len(api.queries) == 2
    assert all(
        q.startswith("SELECT Id, LastActivityDate FROM Account WHERE Id IN (") for q in api.queries
    )
    assert got[touched[:15]] == date(2026, 1, 2)
    assert got[untouched] is None
    assert set(got) == set(ids)
    seeded = {r["Id"]: r["LastActivityDate"] for r in accounts}
    assert all(got[i] == seeded[i] for i in ids if i != touched[:15])
    assert any(isinstance(v, date) for v in seeded.values())  # the seed sets some


@settings(max_examples=200, deadline=None)
@given(
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        min_size=15,
        max_size=15,
    )
)
def test_case_safe_ids_match_salesforce_checksums(id15: str) -> None:
    assert case_safe_id(id15) == id18(id15)
    assert case_safe_id(id18(id15)) == id18(id15)


def test_last_activity_refuses_junk_ids(sandbox: Any) -> None:
    with pytest.raises(FatalError, match="invalid Salesforce account id"):
        read_last_activity(destination(sandbox), ["001' OR Name != '"])


# --------------------------------------------------------------------------- alert tasks


def test_alert_creation_is_idempotent_by_key(sandbox: Any) -> None:
    account = an_account(sandbox)
    owner = owners()[0]["id"]
    dest = destination(sandbox)
    kwargs: dict[str, Any] = {
        "account_id": account["Id"],
        "owner_id": owner,
        "subject": "PQA: acme.com entered the sales tier (score 86)",
        "description": "Signals: 9 active users; Terms of Use viewed\nBuyers: Jo (VP Eng)",
        "key": "pqa:acme.com:2026-01-15",
        "today": date(2026, 1, 15),
    }
    task_id, created = create_salesforce_alert(dest, **kwargs)
    assert created
    again_id, again_created = create_salesforce_alert(dest, **kwargs)
    assert (again_id, again_created) == (task_id, False)

    tasks = tasks_with_key(sandbox, "pqa:acme.com:2026-01-15")
    assert [t["Id"] for t in tasks] == [task_id]
    task = tasks[0]
    assert task["WhatId"] == account["Id"] and task["OwnerId"] == owner
    assert task["Status"] == "Not Started" and task["Priority"] == "High"
    assert task["ActivityDate"] == date(2026, 1, 15)
    assert task["Subject"] == kwargs["subject"] and task["Description"] == kwargs["description"]
    lookups = [q for q in sandbox.salesforce.queries if "FROM Task" in q]
    assert lookups[0] == (
        "SELECT Id FROM Task WHERE PQA_Alert_Key__c = 'pqa:acme.com:2026-01-15' "
        "ORDER BY CreatedDate LIMIT 1"
    )


def test_a_deleted_alert_task_is_not_created_again(sandbox: Any) -> None:
    dest = destination(sandbox)
    args: dict[str, Any] = {
        "account_id": an_account(sandbox)["Id"],
        "owner_id": owners()[1]["id"],
        "subject": "s",
        "description": "d",
        "key": "pqa:deleted.io:2026-01-01",
    }
    task_id, _ = create_salesforce_alert(dest, **args)
    sandbox.salesforce.delete("Task", task_id)
    assert create_salesforce_alert(dest, **args) == (task_id, False)
    assert len(tasks_with_key(sandbox, args["key"])) == 1


def test_a_crash_between_create_and_commit_leaves_exactly_one_task(
    sandbox: Any, store: SqlStateStore
) -> None:
    key = "pqa:crash.io:2026-01-15"
    args: dict[str, Any] = {
        "account_id": an_account(sandbox)["Id"],
        "owner_id": owners()[2]["id"],
        "subject": "PQA alert",
        "description": "score 90",
        "key": key,
    }

    def run(crash: bool) -> None:
        for todo in sorted(pending_or_missing(store, [key])):
            assert mark_pending(
                store, todo, destination="salesforce", account_key="crash.io", payload=args
            )
            task_id, _ = create_salesforce_alert(destination(sandbox), **args)
            if crash:
                raise SystemExit("killed between task creation and state commit")
            mark_created(store, todo, task_id)

    with pytest.raises(SystemExit):
        run(crash=True)
    assert len(tasks_with_key(sandbox, key)) == 1
    assert pending_or_missing(store, [key]) == {key}

    run(crash=False)
    run(crash=False)  # a third run has nothing to do

    tasks = tasks_with_key(sandbox, key)
    assert len(tasks) == 1
    row = get_alert(store, key)
    assert row is not None and row.status == "created" and row.task_id == tasks[0]["Id"]
    assert row.attempts == 2
    assert pending_or_missing(store, [key]) == set()


def test_a_rejected_task_is_recorded_and_retried_later(sandbox: Any, store: SqlStateStore) -> None:
    key = "pqa:reject.io:2026-01-15"
    account = an_account(sandbox)
    payload: dict[str, Any] = {
        "owner_id": "not-a-user-id",
        "subject": "PQA alert",
        "description": "score 91",
    }
    assert mark_pending(
        store,
        key,
        destination="salesforce",
        account_key="reject.io",
        record_id=account["Id"],
        payload=payload,
    )
    dest = destination(sandbox)
    with pytest.raises(TaskRejected) as caught:
        create_salesforce_alert(dest, account_id=account["Id"], key=key, **{**payload})
    rejection = caught.value.rejection
    assert rejection.code == "MALFORMED_ID" and rejection.fields == ("OwnerId",)
    assert rejection.record_id == key
    mark_rejected(store, key, str(caught.value))
    assert tasks_with_key(sandbox, key) == []

    (retry,) = alerts_to_retry(store, destination="salesforce")
    assert retry.key == key and retry.status == "rejected"
    assert retry.reason is not None and "MALFORMED_ID" in retry.reason
    assert retry.record_id == account["Id"] and retry.payload["subject"] == "PQA alert"

    # next run: the owner was fixed in the CRM; the retry goes through, once
    fixed = {**retry.payload, "owner_id": owners()[3]["id"]}
    assert mark_pending(
        store, key, destination="salesforce", account_key="reject.io", payload=fixed
    )
    task_id, created = create_salesforce_alert(
        dest, account_id=str(retry.record_id), key=key, **fixed
    )
    mark_created(store, key, task_id)
    assert created and [t["Id"] for t in tasks_with_key(sandbox, key)] == [task_id]
    assert alerts_to_retry(store) == []


def test_a_create_whose_answer_is_lost_is_not_duplicated(sandbox: Any) -> None:
    dest = destination(sandbox)
    sandbox.faults.add("drop", endpoint="sf.sobject.create", times=1)
    task_id, created = create_salesforce_alert(
        dest,
        account_id=an_account(sandbox)["Id"],
        owner_id=owners()[0]["id"],
        subject="s",
        description="d",
        key="pqa:dropped.io:2026-01-15",
    )
    assert created
    assert [t["Id"] for t in tasks_with_key(sandbox, "pqa:dropped.io:2026-01-15")] == [task_id]
    assert sandbox.counts()["sf.sobject.create"] == 2


def test_a_missing_key_field_stops_with_a_fatal_error(sandbox: Any) -> None:
    with pytest.raises(FatalError, match="No_Such__c"):
        create_salesforce_alert(
            destination(sandbox),
            account_id=an_account(sandbox)["Id"],
            owner_id=owners()[0]["id"],
            subject="s",
            description="d",
            key="k",
            key_field="No_Such__c",
        )
    assert "sf.sobject.create" not in sandbox.counts()


def test_a_create_whose_answer_cannot_be_read_is_looked_up_not_sent_again(sandbox: Any) -> None:
    """Salesforce created the Task but the answer is a 200 that is not JSON (a proxy's page):
    the outcome is unknown, so the next attempt looks the key up first and finds it."""
    api = sandbox.salesforce
    handle = api.handle
    mangled: list[str] = []

    def answer_mangled(request: Any) -> Response:
        response = handle(request)
        if request.method == "POST" and request.path.rstrip("/").endswith("sobjects/Task"):
            mangled.append(request.path)
            return Response(200, "<html>upstream reset</html>", {"Content-Type": "text/html"})
        return response

    api.handle = answer_mangled
    key = "pqa:mangled.io:1"
    task_id, created = create_salesforce_alert(
        destination(sandbox),
        account_id=an_account(sandbox)["Id"],
        owner_id=owners()[0]["id"],
        subject="s",
        description="d",
        key=key,
    )
    assert created and len(mangled) == 1  # one POST: the second attempt found the task
    assert [t["Id"] for t in tasks_with_key(sandbox, key)] == [task_id]


@responses.activate(registry=OrderedRegistry)
def test_a_create_whose_answer_is_cut_mid_body_is_looked_up_not_sent_again() -> None:
    base = "https://acme.my.salesforce.com/services/data/v59.0"
    lookup = f"{base}/queryAll/"  # deleted tasks count: a rep who deleted one has seen it
    responses.get(lookup, json={"totalSize": 0, "done": True, "records": []})
    responses.post(
        f"{base}/sobjects/Task/",
        body=requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"),
    )
    found = {"totalSize": 1, "done": True, "records": [{"Id": "00T000000000001AAA"}]}
    responses.get(lookup, json=found)
    dest = SalesforceDestination.from_env(
        {"SALESFORCE_INSTANCE_URL": "https://acme.my.salesforce.com", "SALESFORCE_SESSION_ID": "x"},
        sleep=lambda _seconds: None,
    )
    result = create_salesforce_alert(
        dest,
        account_id="001000000000001AAA",
        owner_id="005000000000001AAA",
        subject="s",
        description="d",
        key="pqa:cut.io:1",
    )
    assert result == ("00T000000000001AAA", True)
    assert [c.request.method for c in responses.calls] == ["GET", "POST", "GET"]
