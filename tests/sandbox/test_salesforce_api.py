"""The sandbox's Salesforce through the unmodified simple-salesforce client.

Shapes pinned against the Salesforce documentation:
- versions: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_versions.htm
- limits: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_limits.htm
  and the Sforce-Limit-Info header:
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm
- describe: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_sobject_describe.htm
- query paging (nextRecordsUrl, 2,000 a page, Sforce-Query-Options batchSize 200..2000):
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_query.htm
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_queryoptions.htm
- REST errors as a list of {message, errorCode}:
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
- sObject Collections update (200 records, allOrNone, SaveResult per record, rolled-back records):
  https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-update.html
- Bulk API 2.0 ingest (create, upload, UploadComplete, job info, successful/failed results,
  #N/A to set a field to null):
  https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_info.htm
  https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/datafiles_prepare_csv.htm
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceMalformedRequest,
    SalesforceOperationError,
    SalesforceResourceNotFound,
)

from pls_sync.sandbox.salesforce import SalesforceApi, id18, sandbox_login_session
from pls_sync.sandbox.server import Sandbox


def add_accounts(box: Sandbox, count: int, **fields: Any) -> list[str]:
    """Insert ``count`` accounts named Acct 0000.. straight into the org."""
    return [
        box.salesforce.insert("Account", {"Name": f"Acct {i:04d}", **fields}) for i in range(count)
    ]


def error_of(exc: Exception) -> dict[str, Any]:
    """The first item of a Salesforce error list carried by a simple-salesforce exception."""
    content = exc.content  # type: ignore[attr-defined]
    assert isinstance(content, list), content
    return dict(content[0])


# ----------------------------------------------------------------------------- login


def test_session_id_login_and_describe(box: Sandbox, sf: Any) -> None:
    describe = sf.Account.describe()
    fields = {f["name"]: f for f in describe["fields"]}
    assert describe["keyPrefix"] == "001"
    score = fields["PQA_Score__c"]
    assert (score["type"], score["precision"], score["scale"], score["custom"]) == (
        "double",
        3,
        0,
        True,
    )
    assert fields["PQA_Signals__c"]["type"] == "textarea"
    assert fields["PQA_Signals__c"]["length"] == 1000
    tier = fields["PQA_Tier__c"]
    assert [p["value"] for p in tier["picklistValues"]] == ["sales", "success", "self_serve"]
    assert tier["restrictedPicklist"] is True
    assert [p["value"] for p in fields["PQA_Lead_Channel__c"]["picklistValues"]] == [
        "usage_pql",
        "usage_mql",
        "mql_only",
        "usage_no_buyer",
    ]
    assert fields["PQA_Qualified_Since__c"]["type"] == "datetime"
    assert fields["Domain__c"]["length"] == 255
    assert fields["Id"]["updateable"] is False
    assert fields["LastModifiedDate"]["updateable"] is False
    assert fields["OwnerId"]["relationshipName"] == "Owner"
    for name in ("Lead", "Contact", "Task"):
        assert getattr(sf, name).describe()["name"] == name
    assert {f["name"] for f in sf.Contact.describe()["fields"]} >= {"MQL__c", "AccountId", "Email"}


def test_username_password_login_through_soap(box: Sandbox, connect: Callable[..., Any]) -> None:
    org = box.salesforce
    sf = connect(
        box, username=org.username, password=org.password, security_token=org.security_token
    )
    assert sf.session_id.startswith(org.org_id[:15] + "!AQ")
    assert sf.sf_instance == f"127.0.0.1:{box.port}"
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 0
    assert box.counts()["sf.login"] == 1


def test_wrong_password_is_invalid_login(box: Sandbox, connect: Callable[..., Any]) -> None:
    with pytest.raises(SalesforceAuthenticationFailed) as caught:
        connect(box, username=box.salesforce.username, password="nope", security_token="x")
    assert caught.value.code == "INVALID_LOGIN"
    assert "Invalid username, password, security token" in caught.value.auth_message


def test_oauth_password_and_refresh_grants(box: Sandbox, connect: Callable[..., Any]) -> None:
    org = box.salesforce
    sf = connect(
        box,
        username=org.username,
        password=org.password,
        consumer_key=org.consumer_key,
        consumer_secret=org.consumer_secret,
    )
    assert sf.Account.describe()["name"] == "Account"
    token = requests.post(
        f"{box.url}/services/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": org.refresh_token,
            "client_id": org.consumer_key,
        },
        timeout=5,
    ).json()
    assert token["token_type"] == "Bearer"
    assert token["instance_url"] == box.url
    bad = requests.post(
        f"{box.url}/services/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": "stale",
            "client_id": org.consumer_key,
        },
        timeout=5,
    )
    assert bad.status_code == 400
    assert bad.json() == {"error": "invalid_grant", "error_description": "authentication failure"}


def test_jwt_bearer_grant(box: Sandbox, connect: Callable[..., Any]) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    org = box.salesforce
    sf = connect(box, username=org.username, consumer_key=org.consumer_key, privatekey=pem)
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 0
    assert box.counts()["sf.oauth"] == 1


def test_requests_without_a_valid_session_are_refused(box: Sandbox) -> None:
    for headers in ({}, {"Authorization": "Bearer 00Dxx!AQwrong"}):
        response = requests.get(f"{box.url}/services/data/v59.0/limits", headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.json() == [
            {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
        ]
    ok = requests.get(
        f"{box.url}/services/data/v59.0/limits",
        headers={"Authorization": f"OAuth {box.session_id}"},
        timeout=5,
    )
    assert ok.status_code == 200


def test_session_shape(box: Sandbox) -> None:
    org, _, token = box.session_id.partition("!")
    assert org.startswith("00D") and len(org) == 15
    assert token.startswith("AQ") and len(token) > 40


# ----------------------------------------------------------------------------- versions, limits


def test_versions_and_limits(box: Sandbox, sf: Any) -> None:
    versions = requests.get(f"{box.url}/services/data/", timeout=5).json()
    assert {"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"} in versions
    before = sf.limits()["DailyApiRequests"]
    after = sf.limits()["DailyApiRequests"]
    assert before["Max"] == after["Max"] == box.salesforce.api_max
    assert after["Remaining"] == before["Remaining"] - 1
    used = box.salesforce.api_used
    assert sf.api_usage["api-usage"].used == used
    assert sf.api_usage["api-usage"].total == box.salesforce.api_max
    response = requests.get(
        f"{box.url}/services/data/v59.0/sobjects/Account/describe",
        headers={"Authorization": f"Bearer {box.session_id}"},
        timeout=5,
    )
    assert response.headers["Sforce-Limit-Info"] == f"api-usage={used + 1}/{box.salesforce.api_max}"


def test_daily_allowance_exhausted(box: Sandbox, sf: Any) -> None:
    box.salesforce.api_overage_share = 0.0  # refused at the allocation itself
    box.salesforce.api_max = box.salesforce.api_used + 1
    sf.query("SELECT Id FROM Account")
    with pytest.raises(Exception) as caught:
        sf.query("SELECT Id FROM Account")
    assert caught.value.status == 403  # type: ignore[attr-defined]
    assert error_of(caught.value) == {
        "message": "TotalRequests Limit exceeded.",
        "errorCode": "REQUEST_LIMIT_EXCEEDED",
    }


# ----------------------------------------------------------------------------- SOQL


@pytest.fixture
def scored(box: Sandbox) -> dict[str, str]:
    """Five accounts with varied values; name -> id."""
    api = box.salesforce
    owner = api.insert(
        "User", {"Username": "o@x.io", "LastName": "Okafor", "FirstName": "Ada", "Email": "o@x.io"}
    )
    parent = api.insert("Account", {"Name": "Globex", "Website": "globex.io", "OwnerId": owner})
    rows: dict[str, dict[str, Any]] = {
        "Acme": {"Website": "https://www.acme.com/", "PQA_Score__c": 91.0, "PQA_Tier__c": "sales"},
        "acme labs": {
            "Website": None,
            "Domain__c": "acme.com",
            "PQA_Score__c": 64.0,
            "PQA_Tier__c": "success",
        },
        "Globex EMEA": {"Website": "emea.globex.io", "ParentId": parent, "PQA_Score__c": None},
        "Initech": {"Website": "INITECH.COM", "PQA_Score__c": 12.0, "PQA_Tier__c": "self_serve"},
    }
    ids = {"Globex": parent}
    for name, values in rows.items():
        ids[name] = api.insert("Account", {"Name": name, **values})
    old = datetime.now(UTC) - timedelta(days=40)
    api.records["Account"][ids["Initech"]]["LastModifiedDate"] = old
    return ids


@pytest.mark.parametrize(
    ("where", "names"),
    [
        ("Name = 'ACME'", ["Acme"]),
        ("Name != 'Acme'", ["Globex", "Globex EMEA", "Initech", "acme labs"]),
        ("PQA_Score__c > 60", ["Acme", "acme labs"]),
        ("PQA_Score__c <= 64", ["Initech", "acme labs"]),
        ("PQA_Score__c >= 64 AND PQA_Score__c < 91", ["acme labs"]),
        ("PQA_Tier__c IN ('sales', 'self_serve')", ["Acme", "Initech"]),
        ("PQA_Tier__c NOT IN ('sales')", ["Initech", "acme labs"]),
        ("Website LIKE '%acme.com%'", ["Acme"]),
        ("Website = null", ["acme labs"]),
        ("Website != null AND PQA_Score__c = null", ["Globex", "Globex EMEA"]),
        ("Website = null OR Domain__c != null", ["acme labs"]),
        ("NOT (Name LIKE 'Glob%')", ["Acme", "Initech", "acme labs"]),
        ("Parent.Name = 'Globex'", ["Globex EMEA"]),
        ("LastModifiedDate < LAST_N_DAYS:30", ["Initech"]),
        (
            "LastModifiedDate > 2020-01-01T00:00:00Z AND LastModifiedDate = LAST_N_DAYS:2",
            ["Acme", "Globex", "Globex EMEA", "acme labs"],
        ),
    ],
)
def test_where_operators_through_the_client(
    sf: Any, scored: dict[str, str], where: str, names: list[str]
) -> None:
    result = sf.query(f"SELECT Name FROM Account WHERE {where} ORDER BY Name")
    # SOQL orders strings case-insensitively
    assert [r["Name"] for r in result["records"]] == sorted(names, key=str.casefold)
    assert result["totalSize"] == len(names) and result["done"] is True


def test_record_shape_relationships_order_limit_offset(
    box: Sandbox, sf: Any, scored: dict[str, str]
) -> None:
    result = sf.query(
        "SELECT Id, Name, PQA_Score__c, Owner.Name, Parent.Name, Parent.Owner.Name FROM Account "
        "ORDER BY PQA_Score__c DESC NULLS LAST, Name LIMIT 3 OFFSET 1"
    )
    records = result["records"]
    assert [r["Name"] for r in records] == ["acme labs", "Initech", "Globex"]
    first = records[0]
    assert first["attributes"] == {
        "type": "Account",
        "url": f"/services/data/v59.0/sobjects/Account/{scored['acme labs']}",
    }
    assert first["PQA_Score__c"] == 64.0
    assert first["Owner"]["Name"] == "Integration User"
    assert first["Owner"]["attributes"]["type"] == "User"
    assert first["Parent"] is None
    emea = sf.query("SELECT Parent.Name, Parent.Owner.Name FROM Account WHERE Name = 'Globex EMEA'")
    parent = emea["records"][0]["Parent"]
    assert parent["Name"] == "Globex"
    assert parent["Owner"]["Name"] == "Ada Okafor"
    assert sf.query("SELECT COUNT() FROM Account WHERE PQA_Tier__c != null") == {
        "totalSize": 3,
        "done": True,
        "records": [],
    }


def test_query_all_includes_deleted_records(box: Sandbox, sf: Any, scored: dict[str, str]) -> None:
    box.salesforce.delete("Account", scored["Initech"])
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 4
    everything = sf.query(
        "SELECT Id, IsDeleted FROM Account WHERE Name = 'Initech'", include_deleted=True
    )
    assert [r["IsDeleted"] for r in everything["records"]] == [True]


def test_paging_2000_a_page(box: Sandbox, sf: Any) -> None:
    api = box.salesforce
    for i in range(4500):
        api.insert("Lead", {"LastName": f"L{i:05d}", "Company": "Co"})
    box.reset_counts()
    first = sf.query("SELECT Id, LastName FROM Lead ORDER BY LastName")
    assert (first["totalSize"], first["done"], len(first["records"])) == (4500, False, 2000)
    assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    assert first["nextRecordsUrl"].endswith("-2000")
    second = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert second["records"][0]["LastName"] == "L02000"
    third = sf.query_more(second["nextRecordsUrl"].rsplit("/", 1)[1])
    assert (len(third["records"]), third["done"]) == (500, True)
    assert "nextRecordsUrl" not in third
    everything = sf.query_all("SELECT Id FROM Lead")
    assert everything["totalSize"] == 4500 and len(everything["records"]) == 4500
    assert len({r["Id"] for r in everything["records"]}) == 4500
    assert box.counts() == {"sf.query": 2, "sf.query_more": 4}


def test_batch_size_header(box: Sandbox, sf: Any) -> None:
    add_accounts(box, 450)
    small = sf.query("SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=200"})
    assert len(small["records"]) == 200
    too_small = sf.query("SELECT Id FROM Account", headers={"Sforce-Query-Options": "batchSize=5"})
    assert len(too_small["records"]) == 200  # the minimum is 200
    rest = sf.query_more(small["nextRecordsUrl"], identifier_is_url=True)
    assert len(rest["records"]) == 200 and rest["nextRecordsUrl"].endswith("-400")


def test_unknown_field_is_invalid_field(sf: Any) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query("SELECT Id, Foo__c FROM Account")
    error = error_of(caught.value)
    assert error["errorCode"] == "INVALID_FIELD"
    assert "\nNo such column 'Foo__c' on entity 'Account'." in error["message"]
    assert "ERROR at Row:1:Column:12" in error["message"]
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query("SELECT Boss.Name FROM Account")
    assert "Didn't understand relationship 'Boss'" in error_of(caught.value)["message"]


def test_malformed_query_and_unknown_object(sf: Any) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query("SELECT Id FROM Account WHERE Name = 'a' AND Website = 'b' OR Id = null")
    assert error_of(caught.value)["errorCode"] == "MALFORMED_QUERY"
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.query("SELECT Id FROM Acount")
    assert error_of(caught.value)["errorCode"] == "INVALID_TYPE"
    assert "sObject type 'Acount' is not supported." in error_of(caught.value)["message"]


# ----------------------------------------------------------------------------- single record


def test_single_patch_and_its_errors(box: Sandbox, sf: Any) -> None:
    (account,) = add_accounts(box, 1)
    before = box.salesforce.get("Account", account)
    assert before is not None
    assert (
        sf.Account.update(
            account, {"PQA_Score__c": 88, "PQA_Tier__c": "sales", "PQA_Signals__c": None}
        )
        == 204
    )
    after = box.salesforce.get("Account", account)
    assert after is not None
    assert (after["PQA_Score__c"], after["PQA_Tier__c"]) == (88.0, "sales")
    assert after["LastModifiedDate"] > before["LastModifiedDate"]
    assert after["SystemModstamp"] == after["LastModifiedDate"]
    cases = {
        "INVALID_FIELD": {"Foo__c": 1},
        "INVALID_FIELD_FOR_INSERT_UPDATE": {"CreatedDate": "2026-01-01T00:00:00Z"},
        "STRING_TOO_LONG": {"PQA_Signals__c": "x" * 1001},
        "JSON_PARSER_ERROR": {"PQA_Score__c": "high"},
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST": {"PQA_Tier__c": "platinum"},
        "NUMBER_OUTSIDE_VALID_RANGE": {"PQA_Score__c": 1000},
    }
    messages = {}
    for code, values in cases.items():
        with pytest.raises(SalesforceMalformedRequest) as caught:
            sf.Account.update(account, values)
        assert error_of(caught.value)["errorCode"] == code, values
        messages[code] = error_of(caught.value)["message"]
    assert messages["INVALID_FIELD"] == "No such column 'Foo__c' on sobject of type Account"
    assert messages["STRING_TOO_LONG"].startswith("PQA Signals: data value too large: xxx")
    box.salesforce.delete("Account", account)
    with pytest.raises(SalesforceResourceNotFound) as caught_missing:
        sf.Account.update(account, {"PQA_Score__c": 1})
    assert error_of(caught_missing.value)["errorCode"] == "ENTITY_IS_DELETED"
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.update(id18("001Dn0000zzzzzz"), {"PQA_Score__c": 1})


def test_create_task(box: Sandbox, sf: Any) -> None:
    (account,) = add_accounts(box, 1)
    created = sf.Task.create(
        {"Subject": "PQA: reach out", "WhatId": account, "ActivityDate": "2026-02-01"}
    )
    assert created["success"] is True and created["errors"] == []
    assert created["id"].startswith("00T") and len(created["id"]) == 18
    task = box.salesforce.get("Task", created["id"])
    assert task is not None and task["Status"] == "Not Started" and task["WhatId"] == account
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Account.create({"Website": "x.com"})
    assert error_of(caught.value)["errorCode"] == "REQUIRED_FIELD_MISSING"


# ----------------------------------------------------------------------------- collections


def collection(sf: Any, records: list[dict[str, Any]], all_or_none: bool = False) -> Any:
    return sf.restful(
        "composite/sobjects", method="PATCH", json={"allOrNone": all_or_none, "records": records}
    )


def test_collection_update_200_records(box: Sandbox, sf: Any) -> None:
    ids = add_accounts(box, 201)
    records = [{"attributes": {"type": "Account"}, "id": i, "PQA_Score__c": 50} for i in ids]
    results = collection(sf, records[:200])
    assert results == [{"id": i, "success": True, "errors": []} for i in ids[:200]]
    assert all(box.salesforce.get("Account", i)["PQA_Score__c"] == 50.0 for i in ids[:200])  # type: ignore[index]
    with pytest.raises(SalesforceMalformedRequest) as caught:
        collection(sf, records)
    assert error_of(caught.value) == {
        "message": "record limit reached. cannot submit more than 200 records into this call",
        "errorCode": "EXCEEDED_ID_LIMIT",
    }
    assert box.counts()["sf.composite.sobjects.patch"] == 2


def test_collection_per_record_errors(box: Sandbox, sf: Any) -> None:
    ids = add_accounts(box, 7)
    box.salesforce.delete("Account", ids[5])

    def rec(i: int, **values: Any) -> dict[str, Any]:
        return {"attributes": {"type": "Account"}, "id": ids[i], **values}

    results = collection(
        sf,
        [
            rec(0, PQA_Score__c=70, PQA_Signals__c="7+ users; pricing page"),
            rec(1, PQA_Score__c="seventy"),
            rec(2, PQA_Signals__c="y" * 1001),
            rec(3, Foo__c="x"),
            rec(4, CreatedDate="2026-01-01T00:00:00Z"),
            rec(5, PQA_Score__c=1),
            rec(6, PQA_Score__c="42", PQA_Qualified_Since__c="2026-01-05T10:00:00.000+0000"),
            {"attributes": {"type": "Contact"}, "id": ids[0], "MQL__c": True},
        ],
    )
    codes = [r["errors"][0]["statusCode"] if r["errors"] else None for r in results]
    assert codes == [
        None,
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        "STRING_TOO_LONG",
        "INVALID_FIELD",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        "ENTITY_IS_DELETED",
        None,
        "MALFORMED_ID",
    ]
    assert results[1]["errors"][0] == {
        "statusCode": "INVALID_TYPE_ON_FIELD_IN_RECORD",
        "message": "PQA Score: value not of required type: seventy",
        "fields": ["PQA_Score__c"],
    }
    assert results[2]["errors"][0]["fields"] == ["PQA_Signals__c"]
    assert "(max length=1000)" in results[2]["errors"][0]["message"]
    assert [r["success"] for r in results] == [c is None for c in codes]
    stored = box.salesforce.get("Account", ids[6])
    assert stored is not None and stored["PQA_Score__c"] == 42.0
    assert stored["PQA_Qualified_Since__c"] == datetime(2026, 1, 5, 10, tzinfo=UTC)
    assert box.salesforce.get("Account", ids[1])["PQA_Score__c"] is None  # type: ignore[index]


def test_collection_all_or_none_rolls_back(box: Sandbox, sf: Any) -> None:
    ids = add_accounts(box, 3)
    results = collection(
        sf,
        [
            {"attributes": {"type": "Account"}, "id": ids[0], "PQA_Score__c": 80},
            {"attributes": {"type": "Account"}, "id": ids[1], "PQA_Tier__c": "gold"},
            {"attributes": {"type": "Account"}, "id": ids[2], "PQA_Score__c": 81},
        ],
        all_or_none=True,
    )
    assert [r["success"] for r in results] == [False, False, False]
    rolled_back = {
        "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "message": "Record rolled back because not all records were valid and the request was "
        "using AllOrNone header",
        "fields": [],
    }
    assert results[0]["errors"] == [rolled_back] and results[2]["errors"] == [rolled_back]
    assert results[1]["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert all(box.salesforce.get("Account", i)["PQA_Score__c"] is None for i in ids)  # type: ignore[index]


def test_lock_row_on_chosen_records(box: Sandbox, sf: Any) -> None:
    box.salesforce.lock_error_style = "direct"
    ids = add_accounts(box, 4)
    box.faults.add("lock_row", record_ids=[ids[1][:15], ids[3]], times=1)
    records = [{"attributes": {"type": "Account"}, "id": i, "PQA_Score__c": 10} for i in ids]
    results = collection(sf, records)
    assert [r["success"] for r in results] == [True, False, True, False]
    assert results[1]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"
    assert results[1]["errors"][0]["message"].startswith("unable to obtain exclusive access")
    retry = collection(sf, [records[1], records[3]])  # the scripted lock fired once
    assert [r["success"] for r in retry] == [True, True]
    assert box.counts()["faults_injected"] == 1


# ----------------------------------------------------------------------------- Bulk API 2.0


def test_bulk2_update_with_failures_and_na_clearing(box: Sandbox, sf: Any) -> None:
    box.salesforce.lock_error_style = "direct"
    ids = add_accounts(box, 4, PQA_Signals__c="old signals", PQA_Score__c=5.0)
    box.faults.add("lock_row", record_ids=[ids[3]])
    result = sf.bulk2.Account.update(
        records=[
            {"Id": ids[0], "PQA_Score__c": "77", "PQA_Signals__c": "#N/A"},
            {"Id": ids[1], "PQA_Score__c": "lots", "PQA_Signals__c": ""},
            {"Id": ids[2], "PQA_Score__c": "", "PQA_Signals__c": "new; signals"},
            {"Id": ids[3], "PQA_Score__c": "1", "PQA_Signals__c": ""},
        ],
        wait=0,
    )
    (job,) = result
    assert (
        job["numberRecordsProcessed"],
        job["numberRecordsFailed"],
        job["numberRecordsTotal"],
    ) == (4, 2, 4)
    org = box.salesforce
    first, second, third = (org.get("Account", i) for i in ids[:3])
    assert first is not None and second is not None and third is not None
    assert (first["PQA_Score__c"], first["PQA_Signals__c"]) == (77.0, None)  # #N/A cleared it
    assert (second["PQA_Score__c"], second["PQA_Signals__c"]) == (5.0, "old signals")
    assert (third["PQA_Score__c"], third["PQA_Signals__c"]) == (
        5.0,
        "new; signals",
    )  # empty: unchanged
    success = list(
        csv.DictReader(sf.bulk2.Account.get_successful_records(job["job_id"]).splitlines())
    )
    success.sort(key=lambda r: r["sf__Id"])  # results come in no particular order
    assert [(r["sf__Id"], r["sf__Created"]) for r in success] == [
        (ids[0], "false"),
        (ids[2], "false"),
    ]
    assert success[0]["PQA_Signals__c"] == "#N/A"
    failed = list(csv.DictReader(sf.bulk2.Account.get_failed_records(job["job_id"]).splitlines()))
    failed.sort(key=lambda r: r["sf__Id"])
    assert [r["sf__Id"] for r in failed] == [ids[1], ids[3]]
    assert failed[0]["sf__Error"].startswith(
        "INVALID_TYPE_ON_FIELD_IN_RECORD:PQA Score: value not of required type: lots"
    )
    assert failed[1]["sf__Error"].startswith("UNABLE_TO_LOCK_ROW:")
    unprocessed = list(
        csv.reader(sf.bulk2.Account.get_unprocessed_records(job["job_id"]).splitlines())
    )
    assert len(unprocessed) == 1 and set(unprocessed[0]) == {"Id", "PQA_Score__c", "PQA_Signals__c"}
    counts = box.counts()
    for name in ("sf.bulk2.create", "sf.bulk2.upload", "sf.bulk2.close", "sf.bulk2.status"):
        assert counts[name] >= 1, name
    assert counts["sf.bulk2.results"] == 3


def test_bulk2_unknown_column_fails_the_job(box: Sandbox, sf: Any) -> None:
    (account,) = add_accounts(box, 1)
    with pytest.raises(SalesforceOperationError) as caught:
        sf.bulk2.Account.update(records=[{"Id": account, "Nope__c": "1"}], wait=0)
    assert "InvalidBatch : Field name not found : Nope__c" in str(caught.value)


def test_bulk2_raw_protocol(box: Sandbox) -> None:
    (account,) = add_accounts(box, 1)
    http = sandbox_login_session(box.url)
    base = f"{box.url}/services/data/v59.0/jobs/ingest"
    auth = {"Authorization": f"Bearer {box.session_id}"}
    job = http.post(
        base,
        json={"object": "Account", "operation": "update", "contentType": "CSV", "lineEnding": "LF"},
        headers=auth,
        timeout=5,
    ).json()
    assert (job["state"], job["object"], job["contentUrl"]) == (
        "Open",
        "Account",
        f"services/data/v59.0/jobs/ingest/{job['id']}/batches",
    )
    upload = http.put(
        f"{base}/{job['id']}/batches",
        data=f"Id,PQA_Tier__c\n{account},success\n".encode(),
        headers={**auth, "Content-Type": "text/csv"},
        timeout=5,
    )
    assert upload.status_code == 201
    again = http.put(f"{base}/{job['id']}/batches", data=b"Id\n", headers=auth, timeout=5)
    assert again.status_code == 400 and again.json()[0]["errorCode"] == "BULK_API_ERROR"
    closed = http.patch(
        f"{base}/{job['id']}", json={"state": "UploadComplete"}, headers=auth, timeout=5
    )
    assert closed.json()["state"] == "UploadComplete"
    # A real job is processed asynchronously: the first polls see it InProgress.
    polls = [http.get(f"{base}/{job['id']}", headers=auth, timeout=5).json() for _ in range(3)]
    assert [p["state"] for p in polls] == ["InProgress", "InProgress", "JobComplete"]
    info = polls[-1]
    assert (info["jobType"], info["numberRecordsProcessed"]) == ("V2Ingest", 1)
    assert box.salesforce.get("Account", account)["PQA_Tier__c"] == "success"  # type: ignore[index]


def test_query_speed_on_the_seeded_org(seeded: Sandbox, connect: Callable[..., Any]) -> None:
    sf = connect(seeded)
    started = time.perf_counter()
    accounts = sf.query_all(
        "SELECT Id, Website, Domain__c, LastModifiedDate, PQA_Score__c FROM Account"
    )
    assert accounts["totalSize"] == len(accounts["records"]) > 300
    assert time.perf_counter() - started < 2.0


# ----------------------------------------------------------------------------- org identity,
# deleted and merged records
#
# - Organization (one row, Id = the org id, key prefix 00D):
#   https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_objects_organization.htm
# - sObject Get Deleted (deletedRecords [{id, deletedDate}], earliestDateAvailable,
#   latestDateCovered; seconds ignored; 15 days back at most):
#   https://developer.salesforce.com/docs/platform/api-rest/guide/resources-getdeleted.md
#   https://developer.salesforce.com/docs/platform/api-rest/guide/dome-get-deleted.md
# - getDeleted() rules (INVALID_REPLICATION_DATE):
#   https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_getdeleted.htm
# - merge() (losers deleted, MasterRecordId, queryAll sees them):
#   https://developer.salesforce.com/docs/platform/api/guide/sforce-api-calls-merge.html

NOW = datetime(2026, 3, 2, 10, 15, 30, tzinfo=UTC)


class Clock:
    """A settable clock for the sandbox org: ``box.salesforce.clock = clock``."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock(box: Sandbox) -> Clock:
    """The org's clock, fixed at ``NOW`` until a test moves it."""
    fixed = Clock(NOW)
    box.salesforce.clock = fixed
    return fixed


def admin(box: Sandbox, name: str, body: Any) -> requests.Response:
    return requests.post(f"{box.url}/__sandbox/salesforce/{name}", json=body, timeout=5)


def get_deleted(sf: Any, sobject: str, start: datetime, end: datetime) -> Any:
    params = {"start": start.isoformat(), "end": end.isoformat()}
    return sf.restful(f"sobjects/{sobject}/deleted/", params=params)


def test_organization_query_answers_the_org_id(box: Sandbox, sf: Any) -> None:
    org_id = box.salesforce.org_id
    assert len(org_id) == 18 and org_id.startswith("00D") and org_id == id18(org_id[:15])
    (row,) = sf.query("SELECT Id, Name FROM Organization")["records"]
    assert (row["Id"], row["Name"]) == (org_id, "pls-sync sandbox")
    assert box.session_id.startswith(org_id[:15] + "!")
    describe = sf.Organization.describe()
    assert (describe["keyPrefix"], describe["createable"], describe["deletable"]) == (
        "00D",
        False,
        False,
    )
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.Organization.create({"Name": "Another"})
    assert error_of(caught.value)["errorCode"] == "INVALID_TYPE_FOR_OPERATION"
    with pytest.raises(SalesforceMalformedRequest):
        sf.Organization.delete(org_id)
    assert sf.query("SELECT COUNT() FROM Organization")["totalSize"] == 1


def test_a_given_org_id_is_the_org_identity() -> None:
    given = SalesforceApi(org_id="00D5g00000AbCdE")
    assert given.org_id == id18("00D5g00000AbCdE")
    assert given.get("Organization", given.org_id) is not None
    assert given.session_id.startswith("00D5g00000AbCdE!")
    with pytest.raises(ValueError):
        SalesforceApi(org_id="001000000000001")


def test_rest_delete_goes_to_the_recycle_bin_and_the_delete_log(
    box: Sandbox, sf: Any, clock: Clock
) -> None:
    kept, gone = add_accounts(box, 2)
    deleted_at = clock.advance(minutes=3)
    assert sf.Account.delete(gone) == 204
    assert sf.query("SELECT Id FROM Account")["totalSize"] == 1
    (row,) = sf.query_all(
        "SELECT Id, IsDeleted, MasterRecordId, SystemModstamp FROM Account WHERE IsDeleted = true",
        include_deleted=True,
    )["records"]
    assert (row["Id"], row["IsDeleted"], row["MasterRecordId"]) == (gone, True, None)
    assert (
        row["SystemModstamp"]
        == "2026-03-02T10:18:30.000+0000"
        == deleted_at.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    )
    clock.advance(minutes=10)
    answer = get_deleted(sf, "Account", NOW - timedelta(hours=1), clock.now)
    assert answer == {
        "deletedRecords": [{"id": gone, "deletedDate": "2026-03-02T10:18:30.000+0000"}],
        "earliestDateAvailable": "2026-02-15T00:00:00.000+0000",
        "latestDateCovered": "2026-03-02T10:28:00.000+0000",
    }
    assert box.counts()["sf.sobject.deleted"] == 1
    # the window is [start, end) with seconds dropped: a start after the deletion misses it
    later = get_deleted(sf, "Account", deleted_at + timedelta(minutes=1), clock.now)
    assert later["deletedRecords"] == []
    assert get_deleted(sf, "Contact", NOW, clock.now)["deletedRecords"] == []
    assert kept != gone


def test_get_deleted_end_in_the_future_is_covered_up_to_now(
    box: Sandbox, sf: Any, clock: Clock
) -> None:
    (gone,) = add_accounts(box, 1)
    sf.Account.delete(gone)
    answer = get_deleted(sf, "Account", NOW - timedelta(minutes=5), NOW + timedelta(days=1))
    assert answer["latestDateCovered"] == "2026-03-02T10:15:00.000+0000"
    # deleted during the current minute: after latestDateCovered, so in the next window
    assert answer["deletedRecords"] == []
    clock.advance(minutes=1)
    again = get_deleted(sf, "Account", NOW - timedelta(minutes=5), clock.now)
    assert [r["id"] for r in again["deletedRecords"]] == [gone]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (NOW - timedelta(days=16), NOW),  # before earliestDateAvailable (15 days back)
        (NOW, NOW),  # start must precede end by more than a minute
        (NOW - timedelta(seconds=61), NOW),  # seconds are dropped: 10:14 -> 10:15
        (NOW, NOW - timedelta(hours=1)),
    ],
)
def test_get_deleted_windows_the_org_cannot_answer(
    box: Sandbox, sf: Any, clock: Clock, start: datetime, end: datetime
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        get_deleted(sf, "Account", start, end)
    assert caught.value.status == 400
    assert error_of(caught.value)["errorCode"] == "INVALID_REPLICATION_DATE"


def test_get_deleted_after_a_purge_and_over_the_id_limit(
    box: Sandbox, sf: Any, clock: Clock
) -> None:
    ids = add_accounts(box, 3)
    for record_id in ids:
        sf.Account.delete(record_id)
    clock.advance(minutes=5)
    box.salesforce.deleted_id_limit = 2
    with pytest.raises(SalesforceMalformedRequest) as caught:
        get_deleted(sf, "Account", NOW - timedelta(hours=1), clock.now)
    assert error_of(caught.value)["errorCode"] == "EXCEEDED_ID_LIMIT"
    box.salesforce.purge_delete_log()
    with pytest.raises(SalesforceMalformedRequest) as purged:
        get_deleted(sf, "Account", NOW - timedelta(hours=1), clock.advance(minutes=5))
    assert error_of(purged.value)["errorCode"] == "INVALID_REPLICATION_DATE"
    after = get_deleted(sf, "Account", NOW + timedelta(minutes=5), clock.now)
    assert after["earliestDateAvailable"] == "2026-03-02T10:20:00.000+0000"
    assert after["deletedRecords"] == []
    # the recycle bin still holds them: queryAll is not the delete log
    assert sf.query("SELECT COUNT() FROM Account", include_deleted=True)["totalSize"] == 3


def test_get_deleted_needs_both_dates(box: Sandbox, sf: Any) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.restful("sobjects/Account/deleted/", params={"start": "yesterday"})
    assert error_of(caught.value)["errorCode"] == "MISSING_ARGUMENT"
    with pytest.raises(SalesforceResourceNotFound):
        get_deleted(sf, "Nope__c", NOW - timedelta(hours=1), NOW)


def test_merge_deletes_the_losers_and_moves_the_master(box: Sandbox, sf: Any, clock: Clock) -> None:
    master, first, second = add_accounts(box, 3, PQA_Score__c=50.0)
    contact = box.salesforce.insert("Contact", {"LastName": "Ng", "AccountId": second})
    merged_at = clock.advance(minutes=2)
    response = admin(
        box,
        "merge",
        {"master": master, "losers": [first, second], "fields": {"PQA_Score__c": 70}},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "id": master,
        "success": True,
        "mergedRecordIds": [first, second],
        "updatedRelatedIds": [contact],
        "errors": [],
    }
    losers = sf.query_all(
        f"SELECT Id, IsDeleted, MasterRecordId FROM Account WHERE MasterRecordId = '{master}'",
        include_deleted=True,
    )["records"]
    assert {(r["Id"], r["IsDeleted"]) for r in losers} == {(first, True), (second, True)}
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 1
    kept = box.salesforce.get("Account", master)
    assert kept is not None
    assert (kept["PQA_Score__c"], kept["SystemModstamp"], kept["LastModifiedDate"]) == (
        70.0,
        merged_at,
        merged_at,
    )
    moved = box.salesforce.get("Contact", contact)
    assert moved is not None and (moved["AccountId"], moved["SystemModstamp"]) == (
        master,
        merged_at,
    )
    window = get_deleted(sf, "Account", NOW - timedelta(hours=1), clock.advance(minutes=2))
    assert {r["id"] for r in window["deletedRecords"]} == {first, second}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"master": "001Dn0000000zzzAAA", "losers": ["001Dn0000000zzyAAA"]}, 404),
        ({"master": "{master}", "losers": ["{a}", "{b}", "{c}"]}, 400),  # at most 3 records
        ({"master": "{master}", "losers": []}, 400),
        ({"master": "{master}", "losers": ["{master}"]}, 400),
        ({"master": "{master}", "losers": ["{deleted}"]}, 400),
        ({"master": "{master}", "losers": ["{user}"]}, 400),  # not the same object
        ({"master": "{user}", "losers": ["{a}"]}, 400),  # Users do not merge
        ({"master": "{master}", "losers": ["{a}"], "fields": {"PQA_Tier__c": "gold"}}, 400),
        ({"losers": ["{a}"]}, 400),
    ],
)
def test_merges_the_api_refuses(box: Sandbox, body: dict[str, Any], status: int) -> None:
    master, a, b, c, deleted = add_accounts(box, 5)
    box.salesforce.delete("Account", deleted)
    names = {
        "master": master,
        "a": a,
        "b": b,
        "c": c,
        "deleted": deleted,
        "user": box.salesforce.integration_user,
    }

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.format(**names)
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    response = admin(box, "merge", {k: fill(v) for k, v in body.items()})
    assert response.status_code == status, response.text
    assert response.json()["message"]
    live = [r for r in box.salesforce.records["Account"].values() if not r["IsDeleted"]]
    assert len(live) == 4 and not any(r["MasterRecordId"] for r in live)


def test_identity_change_is_another_org_with_the_same_records(
    box: Sandbox, sf: Any, clock: Clock
) -> None:
    ids = add_accounts(box, 3, PQA_Score__c=80.0, PQA_Tier__c="sales")
    sf.Account.delete(ids[2])
    stamps = {i: box.salesforce.records["Account"][i]["SystemModstamp"] for i in ids}
    before = box.salesforce.org_id
    response = admin(
        box, "identity", {"org_id": "00D5g00000Refr1", "clear_fields": ["PQA_Score__c"]}
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "org_id": id18("00D5g00000Refr1"),
        "previous_org_id": before,
        "cleared": {"Account": 3},
    }
    # the same session reaches the new org
    (org,) = sf.query("SELECT Id FROM Organization")["records"]
    assert org["Id"] == id18("00D5g00000Refr1") != before
    rows = sf.query("SELECT Id, PQA_Score__c, PQA_Tier__c, SystemModstamp FROM Account")
    assert {(r["Id"], r["PQA_Score__c"], r["PQA_Tier__c"]) for r in rows["records"]} == {
        (ids[0], None, "sales"),
        (ids[1], None, "sales"),
    }
    assert {i: box.salesforce.records["Account"][i]["SystemModstamp"] for i in ids} == stamps
    # the new org's delete log starts empty
    window = get_deleted(sf, "Account", NOW - timedelta(hours=1), clock.advance(minutes=5))
    assert window["deletedRecords"] == []
    # without an org id: a new one each time
    second = admin(box, "identity", {}).json()["org_id"]
    third = admin(box, "identity", None).json()["org_id"]
    assert len({second, third, id18("00D5g00000Refr1")}) == 3
    assert all(o.startswith("00D") and len(o) == 18 for o in (second, third))


@pytest.mark.parametrize(
    "body",
    [
        {"org_id": "001Dn0000000001"},
        {"org_id": "00D5g00000Refr1XXX"},  # wrong case-safe suffix
        {"clear_fields": ["Nope__c"]},
        {"clear_fields": ["Name"]},  # required on Account
        {"clear_fields": "PQA_Score__c"},
        {"portal": 1},
    ],
)
def test_identity_changes_the_sandbox_refuses(box: Sandbox, body: dict[str, Any]) -> None:
    before = box.salesforce.org_id
    response = admin(box, "identity", body)
    assert response.status_code == 400, response.text
    assert response.json()["message"]
    assert box.salesforce.org_id == before


def test_admin_endpoints_want_post(box: Sandbox) -> None:
    for name in ("merge", "identity"):
        response = requests.get(f"{box.url}/__sandbox/salesforce/{name}", timeout=5)
        assert response.status_code == 405


# ----------------------------------------------------------------------------- behaviours of the
# real org that a kind fake would skip (issue 13)
#
# - Upsert by External ID (201 created / 200 updated with "created", 300 with the matching
#   records, NOT_FOUND for a field that is not an External ID, no Id or key in the body):
#   https://developer.salesforce.com/docs/platform/api-rest/guide/dome-upsert.html
#   https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_sobject_upsert_patch.htm
# - Bulk API 2.0 job states (UploadComplete -> InProgress -> JobComplete):
#   https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_bulk_v2/bulk_api_2_job_states.htm
# - sObject Collections: "If the request isn't well formed, the API returns a 400":
#   https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-update.html
# - Sforce-Limit-Info above the allocation ("api-usage=110018/100000; api-bursts=1/750"):
#   https://developer.salesforce.com/docs/atlas.ja-jp.224.0.api_rest.meta/api_rest/headers_api_usage.htm

ALERT_KEY = "0f3a9c1b2d4e5f6a7b8c9d0e"


def upsert_task(box: Sandbox, key: str, body: Any, field: str = "PQA_Alert_Key__c") -> Any:
    return requests.patch(
        f"{box.url}/services/data/v59.0/sobjects/Task/{field}/{key}",
        json=body,
        headers={"Authorization": f"Bearer {box.session_id}"},
        timeout=5,
    )


def tasks_keyed(box: Sandbox, key: str) -> list[dict[str, Any]]:
    return [r for r in box.salesforce.records["Task"].values() if r["PQA_Alert_Key__c"] == key]


def test_upsert_by_external_id_creates_once_then_updates(box: Sandbox, sf: Any) -> None:
    (account,) = add_accounts(box, 1)
    body = {"WhatId": account, "Subject": "PQA: acme.com entered sales", "Priority": "High"}
    created = upsert_task(box, ALERT_KEY, body)
    assert created.status_code == 201
    task_id = created.json()["id"]
    assert created.json() == {"id": task_id, "success": True, "errors": [], "created": True}
    again = upsert_task(box, ALERT_KEY, body)
    assert again.status_code == 200
    assert again.json() == {"id": task_id, "success": True, "errors": [], "created": False}
    (task,) = tasks_keyed(box, ALERT_KEY)
    assert (task["Id"], task["WhatId"], task["Priority"]) == (task_id, account, "High")
    assert box.counts()["sf.sobject.upsert"] == 2
    describe = {f["name"]: f for f in sf.Task.describe()["fields"]}
    assert describe["PQA_Alert_Key__c"]["externalId"] is True
    assert describe["PQA_Alert_Key__c"]["idLookup"] is True
    assert describe["Subject"]["externalId"] is False


def test_upsert_matching_several_records_answers_300_and_writes_nothing(box: Sandbox) -> None:
    first = box.salesforce.insert("Task", {"Subject": "old", "PQA_Alert_Key__c": ALERT_KEY})
    second = box.salesforce.insert("Task", {"Subject": "old", "PQA_Alert_Key__c": ALERT_KEY})
    answer = upsert_task(box, ALERT_KEY, {"Subject": "new"})
    assert answer.status_code == 300
    assert answer.json() == [
        f"/services/data/v59.0/sobjects/Task/{first}",
        f"/services/data/v59.0/sobjects/Task/{second}",
    ]
    assert [t["Subject"] for t in tasks_keyed(box, ALERT_KEY)] == ["old", "old"]


def test_upsert_does_not_match_a_deleted_record(box: Sandbox) -> None:
    """The recycle bin is not searched: a key held only by a deleted task makes a new one."""
    gone = box.salesforce.insert("Task", {"Subject": "s", "PQA_Alert_Key__c": ALERT_KEY})
    box.salesforce.delete("Task", gone)
    answer = upsert_task(box, ALERT_KEY, {"Subject": "s"})
    assert answer.status_code == 201 and answer.json()["id"] != gone
    assert len(tasks_keyed(box, ALERT_KEY)) == 2


def test_upsert_refuses_id_or_the_key_in_the_body(box: Sandbox) -> None:
    for given in ("Id", "PQA_Alert_Key__c", "pqa_alert_key__c"):
        answer = upsert_task(box, ALERT_KEY, {"Subject": "s", given: ALERT_KEY})
        assert answer.status_code == 400, given
        assert answer.json()[0]["errorCode"] == "INVALID_FIELD"
    assert tasks_keyed(box, ALERT_KEY) == []


def test_upsert_by_a_plain_text_field_is_not_found(box: Sandbox, sf: Any) -> None:
    answer = upsert_task(box, "x", {"Status": "Completed"}, field="Subject")
    assert answer.status_code == 404
    assert answer.json() == [
        {
            "errorCode": "NOT_FOUND",
            "message": "Provided external ID field does not exist or is not accessible: Subject",
        }
    ]
    change = {"object": "Task", "field": "PQA_Alert_Key__c", "external_id": False}
    changed = admin(box, "schema", change)
    assert changed.status_code == 200 and changed.json()["describe"]["externalId"] is False
    assert upsert_task(box, ALERT_KEY, {"Subject": "s"}).status_code == 404
    assert tasks_keyed(box, ALERT_KEY) == []
    assert admin(box, "schema", {**change, "external_id": True}).status_code == 200
    assert upsert_task(box, ALERT_KEY, {"Subject": "s"}).status_code == 201
    standard = admin(box, "schema", {"object": "Task", "field": "Subject", "external_id": True})
    assert standard.status_code == 400 and "External ID" in standard.json()["message"]


def run_bulk_job(box: Sandbox, rows: list[tuple[str, str]]) -> tuple[str, list[str]]:
    """Create, upload, close and poll one update job to a final state: (job id, states seen)."""
    http = sandbox_login_session(box.url)
    base = f"{box.url}/services/data/v59.0/jobs/ingest"
    auth = {"Authorization": f"Bearer {box.session_id}"}
    job = http.post(
        base, json={"object": "Account", "operation": "update"}, headers=auth, timeout=5
    ).json()
    data = "Id,PQA_Signals__c\n" + "".join(f"{i},{v}\n" for i, v in rows)
    http.put(f"{base}/{job['id']}/batches", data=data.encode(), headers=auth, timeout=5)
    http.patch(f"{base}/{job['id']}", json={"state": "UploadComplete"}, headers=auth, timeout=5)
    states: list[str] = []
    while not states or states[-1] not in ("JobComplete", "Failed", "Aborted"):
        states.append(http.get(f"{base}/{job['id']}", headers=auth, timeout=5).json()["state"])
    return job["id"], states


def bulk_result_ids(box: Sandbox, job_id: str, kind: str) -> list[str]:
    http = sandbox_login_session(box.url)
    text = http.get(
        f"{box.url}/services/data/v59.0/jobs/ingest/{job_id}/{kind}/",
        headers={"Authorization": f"Bearer {box.session_id}"},
        timeout=5,
    ).text
    return [row["sf__Id"] for row in csv.DictReader(text.splitlines())]


def test_bulk2_results_come_in_any_order(box: Sandbox) -> None:
    ids = add_accounts(box, 40)
    bad = set(ids[::5])
    rows = [(i, "x" * 2000 if i in bad else "ok") for i in ids]  # 2000 > length 1000
    job_id, states = run_bulk_job(box, rows)
    assert states == ["InProgress", "InProgress", "JobComplete"]
    succeeded = bulk_result_ids(box, job_id, "successfulResults")
    failed = bulk_result_ids(box, job_id, "failedResults")
    assert sorted(succeeded) == sorted(set(ids) - bad) and sorted(failed) == sorted(bad)
    assert succeeded != [i for i in ids if i not in bad]  # not the upload order

    box.salesforce.shuffle_bulk_results = False
    box.salesforce.bulk_polls_in_progress = 0
    job_id, states = run_bulk_job(box, rows)
    assert states == ["JobComplete"]
    assert bulk_result_ids(box, job_id, "successfulResults") == [i for i in ids if i not in bad]


def test_a_malformed_collections_request_is_refused_whole(box: Sandbox, sf: Any) -> None:
    ids = add_accounts(box, 3, PQA_Score__c=1.0)
    good: list[Any] = [
        {"attributes": {"type": "Account"}, "id": i, "PQA_Score__c": 9} for i in ids[:2]
    ]
    cases: list[tuple[Any, str]] = [
        ({"id": ids[2], "PQA_Score__c": 9}, "INVALID_TYPE"),
        ({"attributes": {}, "id": ids[2], "PQA_Score__c": 9}, "INVALID_TYPE"),
        ({"attributes": {"type": "Nope__c"}, "id": ids[2]}, "INVALID_TYPE"),
        ("not a record", "JSON_PARSER_ERROR"),
    ]
    for bad, code in cases:
        with pytest.raises(SalesforceMalformedRequest) as caught:
            collection(sf, [*good, bad])
        assert caught.value.status == 400 and error_of(caught.value)["errorCode"] == code
    assert all(box.salesforce.get("Account", i)["PQA_Score__c"] == 1.0 for i in ids)  # type: ignore[index]

    box.salesforce.refuse_malformed_collections = False  # the older, per-record answer
    results = collection(sf, [*good, cases[0][0]])
    assert [r["success"] for r in results] == [True, True, False]
    assert results[2]["errors"][0]["statusCode"] == "INVALID_TYPE"


def test_usage_can_run_past_the_allocation_before_calls_are_refused(box: Sandbox, sf: Any) -> None:
    org = box.salesforce
    org.api_max, org.api_used = 100, 100
    sf.query("SELECT Id FROM Account")
    assert (sf.api_usage["api-usage"].used, sf.api_usage["api-usage"].total) == (101, 100)
    org.api_used = 109
    sf.query("SELECT Id FROM Account")  # the 110th call of a 100 allocation, 10 % over
    with pytest.raises(Exception) as caught:
        sf.query("SELECT Id FROM Account")
    assert caught.value.status == 403  # type: ignore[attr-defined]
    assert error_of(caught.value)["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_a_row_lock_can_surface_through_a_trigger(box: Sandbox, sf: Any) -> None:
    ids = add_accounts(box, 2)
    box.faults.add("lock_row", record_ids=ids, times=2)
    records = [{"attributes": {"type": "Account"}, "id": i, "PQA_Score__c": 9} for i in ids]
    errors = [collection(sf, [record])[0]["errors"][0] for record in records]
    assert [e["statusCode"] for e in errors] == [
        "UNABLE_TO_LOCK_ROW",  # "mixed": direct first, then through a trigger
        "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
    ]
    assert (
        "first error: UNABLE_TO_LOCK_ROW, unable to obtain exclusive access"
        in (errors[1]["message"])
    )
    assert ids[1] in errors[1]["message"]
    box.salesforce.lock_error_style = "trigger"
    box.faults.add("lock_row", record_ids=ids[:1], times=1)
    (only,) = collection(sf, records[:1])
    assert only["errors"][0]["statusCode"] == "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"
    with pytest.raises(ValueError, match="lock_error_style"):
        SalesforceApi(lock_error_style="sometimes")


# ----------------------------------------------------------------------------- setup: Tooling API
# CustomField (Tooling API): FullName + Metadata, REST POST/GET/PATCH and query:
# https://developer.salesforce.com/docs/atlas.en-us.api_tooling.meta/api_tooling/tooling_api_objects_customfield.htm
# Metadata (CustomField, ValueSet): "If picklist values are missing from a component definition,
# they get deactivated when deployed":
# https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/meta_customvalue.htm
# FieldPermissions ("Requires PermissionsRead for the same field to be true"; Field a restricted
# picklist), PermissionSetAssignment, UserInfo:
# https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_fieldpermissions.htm
# https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_objects_permissionsetassignment.htm
# https://help.salesforce.com/s/articleView?id=xcloud.remoteaccess_using_userinfo_endpoint.htm

NUMBER_FIELD = {
    "FullName": "Account.Usage_Points__c",
    "Metadata": {"label": "Usage Points", "type": "Number", "precision": 5, "scale": 1},
}


def tooling_create(sf: Any, body: dict[str, Any]) -> Any:
    return sf.restful("tooling/sobjects/CustomField", method="POST", json=body)


def test_a_bare_org_has_none_of_pls_syncs_fields_and_everything_else() -> None:
    api = SalesforceApi(bare=True)
    account = api.describe_fields("Account")
    assert not [name for name in account if name.startswith("PQA_")]
    assert "Domain__c" not in account and "Website" in account
    assert "PQA_Alert_Key__c" not in api.describe_fields("Task")
    assert "MQL__c" in api.describe_fields("Contact")
    assert api.describe_fields("Task")["Subject"]["type"] == "combobox"
    assert "PQA_Score__c" in SalesforceApi().describe_fields("Account")


def test_tooling_creates_a_field_that_describe_shows_at_once(box: Sandbox, sf: Any) -> None:
    created = tooling_create(sf, NUMBER_FIELD)
    assert created["success"] is True and created["errors"] == []
    assert created["id"].startswith("00N")
    field = {f["name"]: f for f in sf.Account.describe()["fields"]}["Usage_Points__c"]
    assert (field["type"], field["precision"], field["scale"]) == ("double", 5, 1)
    assert field["custom"] and field["updateable"] and field["permissionable"]
    assert box.counts()["sf.tooling.customfield.create"] == 1
    account = box.salesforce.insert("Account", {"Name": "Acme"})
    sf.Account.update(account, {"Usage_Points__c": 12.5})
    assert box.salesforce.get("Account", account)["Usage_Points__c"] == 12.5


def test_tooling_creates_a_restricted_picklist_and_a_unique_external_id(
    box: Sandbox, sf: Any
) -> None:
    tooling_create(
        sf,
        {
            "FullName": "Account.Stage__c",
            "Metadata": {
                "label": "Stage",
                "type": "Picklist",
                "valueSet": {
                    "restricted": True,
                    "valueSetDefinition": {
                        "sorted": False,
                        "value": [
                            {"fullName": "new", "label": "new", "default": False},
                            {"fullName": "old", "label": "old", "default": False},
                        ],
                    },
                },
            },
        },
    )
    tooling_create(
        sf,
        {
            "FullName": "Lead.Key__c",
            "Metadata": {
                "label": "Key",
                "type": "Text",
                "length": 64,
                "externalId": True,
                "unique": True,
            },
        },
    )
    stage = {f["name"]: f for f in sf.Account.describe()["fields"]}["Stage__c"]
    assert stage["restrictedPicklist"] is True
    assert [p["value"] for p in stage["picklistValues"]] == ["new", "old"]
    key = {f["name"]: f for f in sf.Lead.describe()["fields"]}["Key__c"]
    assert (key["length"], key["externalId"], key["unique"], key["idLookup"]) == (
        64,
        True,
        True,
        True,
    )


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (NUMBER_FIELD | {"FullName": "Account.PQA_Score__c"}, "DUPLICATE_DEVELOPER_NAME"),
        (NUMBER_FIELD | {"FullName": "Account.Bad__Name__c"}, "FIELD_INTEGRITY_EXCEPTION"),
        (NUMBER_FIELD | {"FullName": "Account.NoSuffix"}, "FIELD_INTEGRITY_EXCEPTION"),
        (
            {"FullName": "Account.X__c", "Metadata": {"label": "X", "type": "Number"}},
            "FIELD_INTEGRITY_EXCEPTION",
        ),
        (
            {"FullName": "Account.X__c", "Metadata": {"label": "X", "type": "Text", "length": 300}},
            "FIELD_INTEGRITY_EXCEPTION",
        ),
        (
            {
                "FullName": "Account.X__c",
                "Metadata": {"label": "X", "type": "DateTime", "externalId": True},
            },
            "FIELD_INTEGRITY_EXCEPTION",
        ),
        ({"FullName": "Account.X__c", "Metadata": {"type": "DateTime"}}, "REQUIRED_FIELD_MISSING"),
        (NUMBER_FIELD | {"FullName": "Nothing.X__c"}, "INVALID_TYPE"),
    ],
)
def test_tooling_refuses_a_duplicate_or_invalid_field(
    box: Sandbox, sf: Any, body: dict[str, Any], code: str
) -> None:
    with pytest.raises(SalesforceMalformedRequest) as caught:
        tooling_create(sf, body)
    assert error_of(caught.value)["errorCode"] == code
    assert "X__c" not in box.salesforce.describe_fields("Account")


def test_without_customize_application_tooling_refuses_to_create(box: Sandbox, sf: Any) -> None:
    box.salesforce.can_customize = False
    with pytest.raises(SalesforceMalformedRequest) as caught:
        tooling_create(sf, NUMBER_FIELD)
    assert error_of(caught.value)["errorCode"] == "INSUFFICIENT_ACCESS_OR_READONLY"
    assert "Usage_Points__c" not in box.salesforce.describe_fields("Account")


def test_tooling_query_and_get_return_the_fields_metadata(box: Sandbox, sf: Any) -> None:
    page = sf.toolingexecute(
        "query/",
        params={
            "q": "SELECT Id, DeveloperName, FullName FROM CustomField "
            "WHERE TableEnumOrId = 'Account' AND DeveloperName = 'PQA_Motion'"
        },
    )
    assert page["size"] == 1
    record = page["records"][0]
    assert (record["DeveloperName"], record["FullName"]) == ("PQA_Motion", "Account.PQA_Motion__c")
    full = sf.restful(f"tooling/sobjects/CustomField/{record['Id']}")
    metadata = full["Metadata"]
    assert (metadata["type"], metadata["label"], metadata["valueSet"]["restricted"]) == (
        "Picklist",
        "PQA Motion",
        True,
    )
    values = [v["fullName"] for v in metadata["valueSet"]["valueSetDefinition"]["value"]]
    assert values == ["sales", "success", "abm", "self_serve"]
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.toolingexecute(
            "query/",
            params={"q": "SELECT Id, Metadata FROM CustomField WHERE TableEnumOrId = 'Account'"},
        )
    assert error_of(caught.value)["errorCode"] == "MALFORMED_QUERY"
    with pytest.raises(SalesforceResourceNotFound):
        sf.restful("tooling/sobjects/CustomField/00NDn0000000zzzAAA")


def test_a_tooling_patch_replaces_the_whole_definition(box: Sandbox, sf: Any) -> None:
    field_id = box.salesforce.custom_field_id("Account", "PQA_Motion__c")
    path = f"tooling/sobjects/CustomField/{field_id}"
    metadata = sf.restful(path)["Metadata"]
    metadata["valueSet"]["valueSetDefinition"]["value"] = [
        {"fullName": "sales", "label": "sales", "default": False},
        {"fullName": "partner", "label": "partner", "default": False},
    ]
    assert sf.restful(path, method="PATCH", json={"Metadata": metadata}) is None
    motion = box.salesforce.describe_fields("Account")["PQA_Motion__c"]
    assert [p["value"] for p in motion["picklistValues"]] == ["sales", "partner"]
    assert box.counts()["sf.tooling.customfield.update"] == 1
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.restful(path, method="PATCH", json={"FullName": "Account.PQA_Motion__c"})
    assert error_of(caught.value)["errorCode"] == "REQUIRED_FIELD_MISSING"
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.restful(
            path,
            method="PATCH",
            json={"Metadata": {"label": "Motion", "type": "Text", "length": 9}},
        )
    assert error_of(caught.value)["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"


def test_userinfo_names_the_running_user(box: Sandbox, sf: Any) -> None:
    info = sf.oauth2("userinfo")
    assert info["user_id"] == box.salesforce.integration_user
    assert info["organization_id"] == box.salesforce.org_id
    assert info["preferred_username"] == box.salesforce.username
    bad = requests.get(f"{box.url}/services/oauth2/userinfo", headers={"Authorization": "Bearer x"})
    assert bad.status_code == 401


def test_permission_sets_field_permissions_and_assignments(box: Sandbox, sf: Any) -> None:
    created = sf.PermissionSet.create({"Name": "PLS_Sync_Integration", "Label": "pls-sync"})
    ps_id = created["id"]
    assert ps_id.startswith("0PS")
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.PermissionSet.create({"Name": "pls_sync_integration", "Label": "again"})
    assert error_of(caught.value)["errorCode"] == "DUPLICATE_VALUE"
    grant = {"ParentId": ps_id, "SobjectType": "Account", "Field": "Account.PQA_Score__c"}
    row = sf.FieldPermissions.create(grant | {"PermissionsRead": True})["id"]
    sf.FieldPermissions.update(row, {"PermissionsEdit": True})
    found = sf.query(
        f"SELECT Field, PermissionsRead, PermissionsEdit FROM FieldPermissions WHERE ParentId = '{ps_id}'"
    )
    assert [(r["Field"], r["PermissionsRead"], r["PermissionsEdit"]) for r in found["records"]] == [
        ("Account.PQA_Score__c", True, True)
    ]
    for body, code in (
        (grant | {"PermissionsRead": True}, "DUPLICATE_VALUE"),
        (
            grant | {"Field": "Account.PQA_Tier__c", "PermissionsEdit": True},
            "FIELD_INTEGRITY_EXCEPTION",
        ),
        (
            grant | {"Field": "Account.Name", "PermissionsRead": True},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        ),
        (
            grant | {"Field": "Account.Nope__c", "PermissionsRead": True},
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        ),
    ):
        with pytest.raises(SalesforceMalformedRequest) as caught:
            sf.FieldPermissions.create(body)
        assert error_of(caught.value)["errorCode"] == code, body
    user = box.salesforce.integration_user
    sf.PermissionSetAssignment.create({"AssigneeId": user, "PermissionSetId": ps_id})
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.PermissionSetAssignment.create({"AssigneeId": user, "PermissionSetId": ps_id})
    assert error_of(caught.value)["errorCode"] == "DUPLICATE_VALUE"
    box.salesforce.can_manage_permissions = False
    with pytest.raises(SalesforceMalformedRequest) as caught:
        sf.PermissionSet.create({"Name": "Other", "Label": "Other"})
    assert error_of(caught.value)["errorCode"] == "INSUFFICIENT_ACCESS_OR_READONLY"


def test_a_bare_sandbox_lets_setup_create_pls_syncs_fields(connect: Callable[..., Any]) -> None:
    bare = Sandbox(port=0, seed=None, bare=True).start()
    try:
        sf = connect(bare)
        assert "PQA_Score__c" not in {f["name"] for f in sf.Account.describe()["fields"]}
        with pytest.raises(SalesforceMalformedRequest):
            sf.Account.create({"Name": "Acme", "PQA_Score__c": 5})
        tooling_create(
            sf,
            {
                "FullName": "Account.PQA_Score__c",
                "Metadata": {"label": "PQA Score", "type": "Number", "precision": 3, "scale": 0},
            },
        )
        account = sf.Account.create({"Name": "Acme", "PQA_Score__c": 5})["id"]
        assert bare.salesforce.get("Account", account)["PQA_Score__c"] == 5
    finally:
        bare.stop()
