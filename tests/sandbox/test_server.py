"""The sandbox server: loopback binding, admin endpoints, request counts, fault injection, seed data.

Salesforce's error shapes for the injected faults follow
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm
(401 INVALID_SESSION_ID "Session expired or invalid", 403 REQUEST_LIMIT_EXCEEDED
"TotalRequests Limit exceeded.", 500, 503) and the Retry-After header of RFC 9110 section 10.2.3.
"""

from __future__ import annotations

import collections
import errno
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceRefusedRequest,
)

from pls_sync.demo_companies import demo_companies
from pls_sync.sandbox.faults import FaultInjector
from pls_sync.sandbox.seed import crm_companies, website_variants
from pls_sync.sandbox.server import Sandbox

LIMITS = "SELECT Id FROM Account LIMIT 1"


def error_code(exc: SalesforceGeneralError) -> str:
    """The errorCode of the Salesforce error list an exception carries."""
    content: Any = exc.content
    return str(content[0]["errorCode"])


def test_binds_to_loopback_only() -> None:
    with pytest.raises(ValueError, match="127.0.0.1"):
        Sandbox(host="0.0.0.0", seed=None)
    with Sandbox(seed=None) as box:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", box.url)
        assert box._server.server_address[0] == "127.0.0.1"


def test_admin_endpoints_over_plain_http(box: Sandbox, sf: Any) -> None:
    health = requests.get(f"{box.url}/__sandbox/health", timeout=5)
    assert health.json()["status"] == "ok" and "SalesforceApi" in health.json()["apis"]
    sf.query(LIMITS)
    sf.query(LIMITS)
    sf.Account.describe()
    counts = requests.get(f"{box.url}/__sandbox/counts", timeout=5).json()
    assert counts == {"sf.query": 2, "sf.describe": 1}  # admin calls are not counted
    assert box.counts() == counts
    rule = requests.post(
        f"{box.url}/__sandbox/faults",
        json={"kind": "server_error", "endpoint": "sf.query", "times": 1},
        timeout=5,
    )
    assert rule.status_code == 201 and rule.json()["remaining"] == 1
    listed = requests.get(f"{box.url}/__sandbox/faults", timeout=5).json()
    assert [r["kind"] for r in listed] == ["server_error"]
    bad = requests.post(f"{box.url}/__sandbox/faults", json={"kind": "meteor"}, timeout=5)
    assert bad.status_code == 400 and "unknown fault kind" in bad.json()["message"]
    assert requests.delete(f"{box.url}/__sandbox/faults", timeout=5).status_code == 204
    assert box.faults.rules == []
    sf.query(LIMITS)  # the cleared rule no longer fires
    assert requests.post(f"{box.url}/__sandbox/reset-counts", timeout=5).status_code == 200
    assert box.counts() == {}


def test_counts_name_every_endpoint(box: Sandbox, sf: Any) -> None:
    account = box.salesforce.insert("Account", {"Name": "Counted"})
    sf.limits()
    sf.Account.update(account, {"PQA_Score__c": 1})
    sf.Task.create({"Subject": "x"})
    sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"records": [{"attributes": {"type": "Account"}, "id": account, "PQA_Score__c": 2}]},
    )
    requests.get(f"{box.url}/services/data/", timeout=5)
    assert box.counts() == {
        "sf.limits": 1,
        "sf.sobject.patch": 1,
        "sf.sobject.create": 1,
        "sf.composite.sobjects.patch": 1,
        "sf.versions": 1,
    }


def test_fault_kinds_in_salesforce_shapes(box: Sandbox, sf: Any) -> None:
    # Salesforce's rate limit is a 403 REQUEST_LIMIT_EXCEEDED, never a 429.
    box.faults.add("rate_limit", endpoint="sf.query", times=1, retry_after=7)
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf.query(LIMITS)
    assert refused.value.status == 403
    assert error_code(refused.value) == "REQUEST_LIMIT_EXCEEDED"
    assert "ConcurrentRequests" in str(refused.value.content)

    raw = requests.Session()
    box.faults.add("rate_limit", times=1, retry_after=7)
    limited = raw.get(f"{box.url}/services/data/v59.0/limits", timeout=5)
    assert (limited.status_code, limited.headers["Retry-After"]) == (403, "7")

    box.faults.add("server_error", endpoint="sf.query", times=1)
    with pytest.raises(SalesforceGeneralError) as caught:
        sf.query(LIMITS)
    assert caught.value.status == 500
    assert error_code(caught.value) == "UNKNOWN_EXCEPTION"

    box.faults.add("unavailable", endpoint="sf.query", times=1)
    with pytest.raises(SalesforceGeneralError) as caught:
        sf.query(LIMITS)
    assert caught.value.status == 503

    box.faults.add("invalid_session", endpoint="sf.query", times=1)
    with pytest.raises(SalesforceExpiredSession) as expired:
        sf.query(LIMITS)
    assert expired.value.content == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]

    for kind in ("request_limit", "daily_limit"):
        box.faults.add(kind, endpoint="sf.query", times=1)
        with pytest.raises(SalesforceRefusedRequest) as refused:
            sf.query(LIMITS)
        assert refused.value.content == [
            {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
        ]

    assert sf.query(LIMITS)["done"] is True  # every scripted fault has fired its one time
    counts = box.counts()
    assert counts["faults_injected"] == 7
    assert counts["sf.query"] == 7  # faulted requests are counted too
    assert counts["sf.limits"] == 1


def test_slow_and_dropped_responses(box: Sandbox, sf: Any) -> None:
    box.faults.add("slow", endpoint="sf.query", times=1, delay=0.3)
    started = time.perf_counter()
    assert sf.query(LIMITS)["done"] is True
    assert time.perf_counter() - started >= 0.3
    account = box.salesforce.insert("Account", {"Name": "Dropped"})
    body = {"records": [{"attributes": {"type": "Account"}, "id": account, "PQA_Score__c": 3}]}
    box.faults.add("drop", endpoint="sf.composite.*", times=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        sf.restful("composite/sobjects", method="PATCH", json=body)
    assert box.salesforce.get("Account", account)["PQA_Score__c"] is None  # type: ignore[index]
    assert sf.restful("composite/sobjects", method="PATCH", json=body)[0]["success"] is True
    assert box.counts()["sf.composite.sobjects.patch"] == 2


def _collection_patch(box: Sandbox, score: int) -> tuple[str, dict[str, Any]]:
    account = box.salesforce.insert("Account", {"Name": f"After write {score}"})
    record = {"attributes": {"type": "Account"}, "id": account, "PQA_Score__c": score}
    return account, {"records": [record]}


def _score(box: Sandbox, account: str) -> Any:
    return box.salesforce.get("Account", account)["PQA_Score__c"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("answer_lost", requests.exceptions.ConnectionError),
        ("answer_cut", requests.exceptions.ChunkedEncodingError),
        ("answer_late", requests.exceptions.ReadTimeout),
    ],
)
def test_after_write_faults_apply_the_write_and_spoil_only_the_answer(
    box: Sandbox, kind: str, error: type[BaseException]
) -> None:
    """The write lands; the client sees a dropped, cut or late answer (a timeout of 0.3 s)."""
    account, body = _collection_patch(box, 41)
    box.faults.add(kind, endpoint="sf.composite.*", times=1, delay=1.0)
    url = f"{box.url}/services/data/v59.0/composite/sobjects"
    headers = {"Authorization": f"Bearer {box.session_id}"}
    with pytest.raises(error):
        requests.patch(url, json=body, headers=headers, timeout=0.3).json()
    if kind == "answer_late":
        time.sleep(0.8)  # the late answer goes to a client that has hung up: no traceback
    assert _score(box, account) == 41
    assert box.counts()["faults_injected"] == 1


def test_an_answer_that_is_not_json_follows_an_applied_write(box: Sandbox) -> None:
    account, body = _collection_patch(box, 42)
    box.faults.add("answer_not_json", endpoint="sf.composite.*", times=1)
    url = f"{box.url}/services/data/v59.0/composite/sobjects"
    answer = requests.patch(url, json=body, headers={"Authorization": f"Bearer {box.session_id}"})
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        answer.json()
    assert _score(box, account) == 42


def test_a_write_applied_late_is_not_there_when_the_client_gives_up(box: Sandbox) -> None:
    """``apply_late``: the CRM completes the write after the client's timeout (a lookup made at
    once misses it; one made later finds it)."""
    account, body = _collection_patch(box, 43)
    box.faults.add("apply_late", endpoint="sf.composite.*", times=1, delay=0.6)
    url = f"{box.url}/services/data/v59.0/composite/sobjects"
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.patch(
            url, json=body, headers={"Authorization": f"Bearer {box.session_id}"}, timeout=0.2
        )
    assert _score(box, account) is None
    deadline = time.monotonic() + 5
    while _score(box, account) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _score(box, account) == 43


def test_expired_session_is_refreshed_by_a_password_client(
    box: Sandbox, connect: Callable[..., Any]
) -> None:
    org = box.salesforce
    sf = connect(
        box, username=org.username, password=org.password, security_token=org.security_token
    )
    first_session = sf.session_id
    org.expire_sessions()
    assert sf.query(LIMITS)["done"] is True  # simple-salesforce logs in again on INVALID_SESSION_ID
    assert sf.session_id != first_session
    assert box.counts()["sf.login"] == 2


def test_scripted_then_permanent_rules() -> None:
    faults = FaultInjector()
    faults.add("server_error", endpoint="sf.composite.*", times=2)
    picks = [faults.pick("sf.composite.sobjects.patch") for _ in range(3)]
    assert [p.kind if p else None for p in picks] == ["server_error", "server_error", None]
    assert faults.pick("sf.query") is None
    faults.add("unavailable")
    assert all(faults.pick(name) for name in ("sf.query", "hs.companies.batch_update", "sf.limits"))
    assert faults.injected == 5
    with pytest.raises(ValueError):
        faults.add("lock_row")  # needs record ids


def test_seeded_rate_is_reproducible() -> None:
    def run(seed: int) -> list[bool]:
        faults = FaultInjector(seed=seed)
        faults.add("rate_limit", rate=0.3)
        return [faults.pick("sf.query") is not None for _ in range(200)]

    assert run(3) == run(3)
    assert run(3) != run(4)
    assert 30 <= sum(run(3)) <= 90


def test_seeded_rate_through_the_server(box: Sandbox) -> None:
    box.faults.add("server_error", endpoint="sf.limits", rate=0.5)
    http = requests.Session()
    auth = {"Authorization": f"Bearer {box.session_id}"}
    statuses = [
        http.get(f"{box.url}/services/data/v59.0/limits", headers=auth, timeout=5).status_code
        for _ in range(40)
    ]
    expected = FaultInjector(seed=0)
    expected.add("server_error", rate=0.5)
    assert statuses == [500 if expected.pick("sf.limits") else 200 for _ in range(40)]


# ----------------------------------------------------------------------------- seed data


def test_seeded_crm_is_messy_and_deterministic(seeded: Sandbox) -> None:
    companies = demo_companies(7, 400)
    entries = crm_companies(companies, 7)
    assert entries == crm_companies(companies, 7)
    assert entries != crm_companies(companies, 8)
    kinds = collections.Counter(e["kind"] for e in entries)
    assert kinds["primary"] == pytest.approx(0.75 * len(companies), rel=0.1)
    for kind in ("duplicate", "subsidiary", "crm_only", "lead_only"):
        assert kinds[kind] > 0, kind

    accounts = list(seeded.salesforce.records["Account"].values())
    assert len(accounts) == sum(1 for e in entries if e["has_account"])
    websites = [a["Website"] for a in accounts if a["Website"]]
    assert any(w.startswith("https://") for w in websites)
    assert any(w.startswith("http://www.") and w.endswith("/en-us") for w in websites)
    assert any(w.startswith("www.") for w in websites)
    assert any(w == w.upper() and "." in w for w in websites)
    assert any(re.fullmatch(r"[a-z0-9.-]+", w) for w in websites)
    assert any(a["Domain__c"] and not a["Website"] for a in accounts)
    assert any(not a["Domain__c"] and not a["Website"] for a in accounts)
    assert any(a["ParentId"] for a in accounts)
    by_domain = collections.defaultdict(list)
    for entry in entries:
        if entry["has_account"] and entry["kind"] in ("primary", "duplicate"):
            by_domain[entry["domain"]].append(entry["last_modified"])
    assert any(len(stamps) > 1 and len(set(stamps)) == len(stamps) for stamps in by_domain.values())
    assert all(a["Id"].startswith("001") and len(a["Id"]) == 18 for a in accounts)
    assert all(a["OwnerId"].startswith("005") for a in accounts)

    leads = list(seeded.salesforce.records["Lead"].values())
    contacts = list(seeded.salesforce.records["Contact"].values())
    assert any(lead["Status"] == "Marketing Qualified" for lead in leads)
    assert any(contact["MQL__c"] for contact in contacts)
    assert all(c["Id"].startswith("003") for c in contacts) and all(
        x["Id"].startswith("00Q") for x in leads
    )


def test_website_variants() -> None:
    assert website_variants("acme.com")[:5] == [
        "acme.com",
        "www.acme.com",
        "https://acme.com/",
        "http://www.acme.com/en-us",
        "ACME.COM",
    ]
    assert website_variants("acme.com", "eu")[2] == "https://eu.acme.com/"


def test_same_seed_same_org() -> None:
    companies = demo_companies(11, 40)
    one, two = Sandbox(seed=11, companies=companies), Sandbox(seed=11, companies=companies)
    try:
        strip = ("CreatedDate", "LastModifiedDate", "SystemModstamp")
        for name in ("Account", "Lead", "Contact"):
            left = {
                k: {f: v for f, v in r.items() if f not in strip}
                for k, r in one.salesforce.records[name].items()
            }
            right = {
                k: {f: v for f, v in r.items() if f not in strip}
                for k, r in two.salesforce.records[name].items()
            }
            assert left == right and left
        assert one.salesforce.records["Account"] == two.salesforce.records["Account"]
    finally:
        one.stop()
        two.stop()


def test_given_credentials_are_the_ones_both_apis_accept(connect: Callable[..., Any]) -> None:
    session = "00D5g00000Pls5x!AQkept-across-restarts"
    token = "pat-na1-11111111-2222-4333-8444-555555555555"
    with Sandbox(seed=None, session_id=session, hubspot_token=token) as box:
        assert (box.session_id, box.hubspot_token) == (session, token)
        assert connect(box).query(LIMITS)["totalSize"] == 0
        companies = f"{box.url}/crm/v3/objects/companies"
        kept = requests.get(companies, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        other = requests.get(companies, headers={"Authorization": "Bearer pat-na1-x"}, timeout=5)
        assert kept.status_code == 200 and other.status_code == 401


def test_a_port_in_use_is_an_os_error_saying_so() -> None:
    with Sandbox(seed=None) as first, pytest.raises(OSError) as caught:
        Sandbox(port=first.port, seed=None)
    assert caught.value.errno == errno.EADDRINUSE
