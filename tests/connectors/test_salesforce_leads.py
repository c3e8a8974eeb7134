"""MQL reads, account activity and idempotent alert tasks against the Salesforce sandbox.

The real simple-salesforce client talks to the sandbox (``tests/conftest.py``) over loopback.
"""

from __future__ import annotations

import time
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


def test_a_create_whose_request_is_dropped_is_looked_up_then_sent_again(sandbox: Any) -> None:
    dest = destination(sandbox)
    sandbox.faults.add("drop", endpoint="sf.sobject.upsert", times=1)
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
    assert sandbox.counts()["sf.sobject.upsert"] == 2


def test_a_create_whose_answer_is_lost_after_it_was_applied_is_found(sandbox: Any) -> None:
    sandbox.faults.add("answer_lost", endpoint="sf.sobject.upsert", times=1)
    key = "pqa:lost.io:1"
    task_id, created = create_salesforce_alert(
        destination(sandbox),
        account_id=an_account(sandbox)["Id"],
        owner_id=owners()[0]["id"],
        subject="s",
        description="d",
        key=key,
    )
    assert created and [t["Id"] for t in tasks_with_key(sandbox, key)] == [task_id]
    assert sandbox.counts()["sf.sobject.upsert"] == 1  # the lookup found it: nothing re-sent


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
    sandbox.faults.add("answer_not_json", endpoint="sf.sobject.upsert", times=1)
    key = "pqa:mangled.io:1"
    task_id, created = create_salesforce_alert(
        destination(sandbox),
        account_id=an_account(sandbox)["Id"],
        owner_id=owners()[0]["id"],
        subject="s",
        description="d",
        key=key,
    )
    assert created and sandbox.counts()["sf.sobject.upsert"] == 1
    assert [t["Id"] for t in tasks_with_key(sandbox, key)] == [task_id]


@responses.activate(registry=OrderedRegistry)
def test_a_create_whose_answer_is_cut_mid_body_is_looked_up_not_sent_again() -> None:
    base = "https://acme.my.salesforce.com/services/data/v59.0"
    lookup = f"{base}/queryAll/"  # deleted tasks count: a rep who deleted one has seen it
    responses.get(lookup, json={"totalSize": 0, "done": True, "records": []})
    responses.patch(
        f"{base}/sobjects/Task/PQA_Alert_Key__c/0f3a9c1b2d4e5f6a7b8c9d0e",
        body=requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"),
    )
    found = {"totalSize": 1, "done": True, "records": [{"Id": "00T000000000001AAA"}]}
    responses.get(lookup, json=found)
    result = create_salesforce_alert(
        remote_destination(),
        account_id="001000000000001AAA",
        owner_id="005000000000001AAA",
        subject="s",
        description="d",
        key="0f3a9c1b2d4e5f6a7b8c9d0e",
    )
    assert result == ("00T000000000001AAA", True)
    assert [c.request.method for c in responses.calls] == ["GET", "PATCH", "GET"]


def remote_destination() -> SalesforceDestination:
    return SalesforceDestination.from_env(
        {"SALESFORCE_INSTANCE_URL": "https://acme.my.salesforce.com", "SALESFORCE_SESSION_ID": "x"},
        sleep=lambda _seconds: None,
    )


# --------------------------------------------------------------------------- upsert by the key
#
# Tasks are written by an upsert on the External ID key (PATCH sobjects/Task/<field>/<key>):
# 201 created, 200 updated ("created": false), 300 when several records hold the key:
# https://developer.salesforce.com/docs/platform/api-rest/guide/dome-upsert.html


def alert_args(box: Any, key: str) -> dict[str, Any]:
    return {
        "account_id": an_account(box)["Id"],
        "owner_id": owners()[0]["id"],
        "subject": "PQA: late.io entered the sales tier",
        "description": "score 88",
        "key": key,
    }


def wait_for(condition: Any, seconds: float = 10.0) -> None:
    """Wait (polling) until ``condition()`` holds: the sandbox applies a late request itself."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the sandbox never applied the late request"
        time.sleep(0.02)


def test_a_create_applied_after_the_client_gave_up_makes_one_task(sandbox: Any) -> None:
    """Failure 3 of issue 13: the org applies the first request only after the client's timeout
    (and after its lookup found nothing), so the client sends it again. Whatever lands later
    must not be a second task."""
    api = sandbox.salesforce
    handle = api.handle
    task_writes: list[str] = []

    def counting(request: Any) -> Response:
        response = handle(request)
        if request.method in ("POST", "PATCH") and "/sobjects/Task" in request.path:
            task_writes.append(request.method)
        return response

    api.handle = counting
    sandbox.faults.add("apply_late", endpoint="sf.sobject.*", times=1, delay=1.0)
    dest = destination(sandbox)
    dest.timeout = 0.3
    key = "0f3a9c1b2d4e5f6a7b8c9d0e"

    task_id, created = create_salesforce_alert(dest, **alert_args(sandbox, key))

    wait_for(lambda: len(task_writes) == 2)  # the resend, then the late first request
    assert created
    assert [t["Id"] for t in tasks_with_key(sandbox, key)] == [task_id]


def test_the_task_is_upserted_by_its_key_which_stays_out_of_the_body(sandbox: Any) -> None:
    api = sandbox.salesforce
    handle = api.handle
    sent: list[tuple[str, str, Any]] = []

    def recording(request: Any) -> Response:
        if "/sobjects/Task" in request.path:
            sent.append((request.method, request.path, request.json()))
        return handle(request)

    api.handle = recording
    key = "1a2b3c4d5e6f7a8b9c0d1e2f"
    task_id, created = create_salesforce_alert(
        destination(sandbox), **alert_args(sandbox, key), today=date(2026, 1, 15)
    )
    assert created
    ((method, path, body),) = sent
    assert (method, path) == ("PATCH", f"/services/data/v59.0/sobjects/Task/PQA_Alert_Key__c/{key}")
    assert "PQA_Alert_Key__c" not in body and "Id" not in body
    assert body["ActivityDate"] == "2026-01-15" and body["Status"] == "Not Started"
    (task,) = tasks_with_key(sandbox, key)
    assert task["Id"] == task_id
    assert "sf.sobject.create" not in sandbox.counts()


def test_a_key_field_that_is_not_an_external_id_stops_with_a_fatal_error(sandbox: Any) -> None:
    sandbox.salesforce.change_field("Task", "PQA_Alert_Key__c", external_id=False)
    dest = destination(sandbox)
    assert dest.describe("Task")["PQA_Alert_Key__c"].external_id is False
    with pytest.raises(FatalError, match="is an External ID") as caught:
        create_salesforce_alert(dest, **alert_args(sandbox, "2b3c4d5e6f7a8b9c0d1e2f3a"))
    assert caught.value.code == "NOT_FOUND"
    assert tasks_with_key(sandbox, "2b3c4d5e6f7a8b9c0d1e2f3a") == []
    sandbox.salesforce.change_field("Task", "PQA_Alert_Key__c", external_id=True)
    assert destination(sandbox).describe("Task")["PQA_Alert_Key__c"].external_id is True


@responses.activate(registry=OrderedRegistry)
def test_several_tasks_holding_the_key_are_not_added_to() -> None:
    """Tasks made before the key was an External ID: the upsert answers 300 and writes nothing;
    the oldest (smallest) id is taken, nothing is created."""
    base = "https://acme.my.salesforce.com/services/data/v59.0"
    key = "3c4d5e6f7a8b9c0d1e2f3a4b"
    responses.get(f"{base}/queryAll/", json={"totalSize": 0, "done": True, "records": []})
    responses.patch(
        f"{base}/sobjects/Task/PQA_Alert_Key__c/{key}",
        status=300,
        json=[
            "/services/data/v59.0/sobjects/Task/00T000000000009AAA",
            "/services/data/v59.0/sobjects/Task/00T000000000002AAA",
        ],
    )
    result = create_salesforce_alert(
        remote_destination(),
        account_id="001000000000001AAA",
        owner_id="005000000000001AAA",
        subject="s",
        description="d",
        key=key,
    )
    assert result == ("00T000000000002AAA", False)
    assert [c.request.method for c in responses.calls] == ["GET", "PATCH"]


@responses.activate(registry=OrderedRegistry)
def test_an_update_answered_204_without_a_body_is_looked_up() -> None:
    """API 45.0 and earlier answer an upsert that updated with 204 and no body."""
    base = "https://acme.my.salesforce.com/services/data/v59.0"
    key = "4d5e6f7a8b9c0d1e2f3a4b5c"
    responses.get(f"{base}/queryAll/", json={"totalSize": 0, "done": True, "records": []})
    responses.patch(f"{base}/sobjects/Task/PQA_Alert_Key__c/{key}", status=204)
    found = {"totalSize": 1, "done": True, "records": [{"Id": "00T000000000003AAA"}]}
    responses.get(f"{base}/queryAll/", json=found)
    result = create_salesforce_alert(
        remote_destination(),
        account_id="001000000000001AAA",
        owner_id="005000000000001AAA",
        subject="s",
        description="d",
        key=key,
    )
    assert result == ("00T000000000003AAA", False)


@responses.activate(registry=OrderedRegistry)
def test_a_row_lock_met_by_a_trigger_is_retried_like_any_lock() -> None:
    base = "https://acme.my.salesforce.com/services/data/v59.0"
    key = "5e6f7a8b9c0d1e2f3a4b5c6d"
    upsert = f"{base}/sobjects/Task/PQA_Alert_Key__c/{key}"
    responses.get(f"{base}/queryAll/", json={"totalSize": 0, "done": True, "records": []})
    trigger_lock = (
        "TaskRollup: execution of AfterInsert caused by: System.DmlException: Update failed. "
        "First exception on row 0 with id 001000000000001AAA; first error: UNABLE_TO_LOCK_ROW, "
        "unable to obtain exclusive access to this record or 1 records: 001000000000001AAA: []"
    )
    responses.patch(
        upsert,
        status=400,
        json=[{"errorCode": "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY", "message": trigger_lock}],
    )
    created = {"id": "00T000000000004AAA", "success": True, "errors": [], "created": True}
    responses.patch(upsert, status=201, json=created)
    result = create_salesforce_alert(
        remote_destination(),
        account_id="001000000000001AAA",
        owner_id="005000000000001AAA",
        subject="s",
        description="d",
        key=key,
    )
    assert result == ("00T000000000004AAA", True)
    assert [c.request.method for c in responses.calls] == ["GET", "PATCH", "PATCH"]
