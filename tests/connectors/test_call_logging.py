"""What a user sees from the CRM connectors: DEBUG ``crm_call`` events and announced waits.

At DEBUG every HTTP attempt is one ``crm_call`` event (destination, endpoint, method, URL path,
status, duration_ms, attempt, retry_in_s when retried); at INFO none is built. Waits over a
second are an INFO ``rate_limit_wait`` event (rate limits) and a line for a person at a
terminal (``pls_sync.logs.notify``). Events are checked raw (``capture_logs``, before the
redacting processor) so that a secret or a SOQL query never reaches them in the first place.

Salesforce HTTP is emulated with ``responses`` (shapes from the REST API guide, see
test_salesforce.py); HubSpot and the leads helpers talk to the real sandbox over loopback.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
import structlog
from simple_salesforce import Salesforce
from structlog.testing import capture_logs

import connectors.retrying as retrying
import pls_sync.logs as logs
from connectors.hubspot import HubSpotDestination, RequestPacer
from connectors.hubspot_leads import read_hubspot_mqls
from connectors.salesforce import SalesforceDestination
from connectors.salesforce_leads import read_salesforce_mqls
from pls_sync.logs import configure_logging, notify
from pls_sync.models import FieldSpec, FieldType, RecordChange
from tests.connectors.test_salesforce import (
    BASE,
    DESCRIBE,
    DESCRIBE_URL,
    INSTANCE,
    INVALID_SESSION,
    MAPPING,
    NEW_SESSION_ID,
    PASSWORD,
    QUERY_URL,
    SERVER_UNAVAILABLE,
    SESSION_ID,
    SOAP_URL,
    SPECS,
    TOKEN,
    account,
    password_env,
    rid,
    soap_login_ok,
)
from tests.connectors.test_salesforce_bulk import FakeBulk
from tests.fakes import FakeTime

DESCRIBE_PATH = "/services/data/v59.0/sobjects/Account/describe/"
HS_SPECS = {"pqa_score": FieldSpec("pqa_score", FieldType.NUMBER)}


@pytest.fixture
def debug_stream() -> Iterator[io.StringIO]:
    """Logging configured as ``logging.level: DEBUG``, JSON lines into the returned stream."""
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream=stream)
    try:
        yield stream
    finally:
        structlog.reset_defaults()


@pytest.fixture
def info_stream() -> Iterator[io.StringIO]:
    """Logging configured as ``logging.level: INFO``, JSON lines into the returned stream."""
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        yield stream
    finally:
        structlog.reset_defaults()


@pytest.fixture
def notices(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What ``notify`` would tell a person at a terminal."""
    lines: list[str] = []
    monkeypatch.setattr(logs, "notice_sink", lines.append)
    return lines


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def dest(sleeps: list[float]) -> SalesforceDestination:
    sf = Salesforce(instance_url=INSTANCE, session_id=SESSION_ID, version="59.0")
    return SalesforceDestination(sf, sleep=sleeps.append)


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime(1_000.0)


@pytest.fixture
def box(sandbox: Any, clock: FakeTime) -> Any:
    """The real sandbox, its HubSpot window on the fake clock."""
    sandbox.hubspot.limiter.monotonic = clock
    return sandbox


def hubspot(box: Any, clock: FakeTime) -> HubSpotDestination:
    return HubSpotDestination(box.hubspot_token, base_url=box.url, sleep=clock.sleep, clock=clock)


def calls(events: list[Any]) -> list[dict[str, Any]]:
    return [dict(event) for event in events if event["event"] == "crm_call"]


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def assert_clean(events: list[Any], *secrets: str) -> None:
    text = json.dumps(events, default=str)
    for secret in secrets:
        assert secret not in text


# --- Salesforce ---------------------------------------------------------------------------------


def test_each_salesforce_attempt_is_one_debug_event(
    debug_stream: io.StringIO,
    rsps: responses.RequestsMock,
    dest: SalesforceDestination,
    sleeps: list[float],
) -> None:
    rsps.get(DESCRIBE_URL, status=503, json=SERVER_UNAVAILABLE)
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    with capture_logs() as events:
        dest.describe("Account")
    first, second = calls(events)
    assert first == {
        "event": "crm_call",
        "log_level": "debug",
        "destination": "salesforce",
        "endpoint": "describe",
        "method": "GET",
        "path": DESCRIBE_PATH,
        "status": 503,
        "duration_ms": first["duration_ms"],
        "attempt": 1,
        "error": "SalesforceGeneralError",
        "retry_in_s": round(sleeps[0], 3),
    }
    assert second == {
        "event": "crm_call",
        "log_level": "debug",
        "destination": "salesforce",
        "endpoint": "describe",
        "method": "GET",
        "path": DESCRIBE_PATH,
        "status": 200,
        "duration_ms": second["duration_ms"],
        "attempt": 2,
    }
    assert all(
        isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0 for e in (first, second)
    )
    assert_clean(events, SESSION_ID)


def test_a_query_is_logged_by_its_object_never_its_text(
    debug_stream: io.StringIO, rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    rsps.get(
        QUERY_URL,
        json={
            "totalSize": 2,
            "done": False,
            "nextRecordsUrl": "/services/data/v59.0/query/01gX-2000",
            "records": [account(0)],
        },
    )
    rsps.get(f"{QUERY_URL}01gX-2000", json={"totalSize": 2, "done": True, "records": [account(1)]})
    with capture_logs() as events:
        records = list(dest.read_records(MAPPING))
    assert [r.id for r in records] == [rid(0), rid(1)]
    reads = [e for e in calls(events) if e["endpoint"] == "read"]
    assert [(e["method"], e["path"], e.get("soql_from"), e["status"]) for e in reads] == [
        ("GET", "/services/data/v59.0/query/", "Account", 200),
        ("GET", "/services/data/v59.0/query/01gX-2000", None, 200),
    ]
    assert_clean(events, SESSION_ID, "SELECT", "Website", "Domain__c", "q=")


def test_no_answer_is_logged_with_the_error_class(
    debug_stream: io.StringIO,
    rsps: responses.RequestsMock,
    dest: SalesforceDestination,
    sleeps: list[float],
) -> None:
    for _ in range(5):
        rsps.get(DESCRIBE_URL, body=requests.ConnectionError("connection refused"))
    with capture_logs() as events, pytest.raises(Exception, match="cannot reach Salesforce"):
        dest.describe("Account")
    attempts = calls(events)
    assert [e["attempt"] for e in attempts] == [1, 2, 3, 4, 5]
    assert {e["status"] for e in attempts} == {"ConnectionError"}
    assert {(e["method"], e["path"]) for e in attempts} == {("GET", DESCRIBE_PATH)}
    assert [e.get("retry_in_s") for e in attempts] == [*(round(s, 3) for s in sleeps), None]


def test_an_expired_session_shows_the_refusal_the_login_and_the_resend(
    debug_stream: io.StringIO, rsps: responses.RequestsMock, tmp_path: Path
) -> None:
    rsps.post(SOAP_URL, body=soap_login_ok(SESSION_ID))
    rsps.post(SOAP_URL, body=soap_login_ok(NEW_SESSION_ID))
    rsps.get(DESCRIBE_URL, status=401, json=INVALID_SESSION)
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    with capture_logs() as events:
        dest = SalesforceDestination.from_env(password_env(tmp_path), sleep=lambda s: None)
        dest.describe("Account")
    seen = [
        (e["endpoint"], e["method"], e["path"], e["status"], e["attempt"], e.get("then"))
        for e in calls(events)
    ]
    assert seen == [
        ("auth", "POST", "/services/Soap/u/59.0", 200, 1, None),
        ("describe", "GET", DESCRIBE_PATH, 401, 1, "reauthenticate"),
        ("auth", "POST", "/services/Soap/u/59.0", 200, 1, None),
        ("describe", "GET", DESCRIBE_PATH, 200, 1, None),
    ]
    assert_clean(events, SESSION_ID, NEW_SESSION_ID, PASSWORD, TOKEN)


def test_bulk_api_requests_are_each_one_event(
    debug_stream: io.StringIO, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    FakeBulk(rsps)
    sf = Salesforce(instance_url=INSTANCE, session_id=SESSION_ID, version="59.0")
    dest = SalesforceDestination(sf, sleep=sleeps.append, bulk_threshold=2)
    changes = [RecordChange(rid(n), {"PQA_Score__c": 90}, f"a{n}.com") for n in range(3)]
    with capture_logs() as events:
        result = dest.write("Account", changes, SPECS)
    assert result.method == "bulk2" and len(result.written) == 3
    ingest = "/services/data/v59.0/jobs/ingest/"
    seen = [(e["endpoint"], e["method"], e["path"], e["status"]) for e in calls(events)]
    job = seen[1][2].removeprefix(ingest).removesuffix("/batches")
    assert seen == [
        ("write", "POST", ingest, 200),
        ("write", "PUT", f"{ingest}{job}/batches", 201),
        ("write", "PATCH", f"{ingest}{job}", 200),
        ("write", "GET", f"{ingest}{job}", 200),
        ("write", "GET", f"{ingest}{job}", 200),
        ("write", "GET", f"{ingest}{job}/successfulResults/", 200),
        ("write", "GET", f"{ingest}{job}/failedResults/", 200),
    ]
    assert_clean(events, SESSION_ID)


def test_lead_reads_log_their_objects_not_the_statuses(
    debug_stream: io.StringIO, sandbox: Any
) -> None:
    dest = SalesforceDestination.from_env(
        {"SALESFORCE_INSTANCE_URL": sandbox.url, "SALESFORCE_SESSION_ID": sandbox.session_id},
        sleep=lambda _seconds: None,
    )
    with capture_logs() as events:
        list(
            read_salesforce_mqls(
                dest, lead_statuses=["Marketing Qualified"], contact_field="MQL__c"
            )
        )
    reads = calls(events)
    assert [(e["endpoint"], e["path"], e["soql_from"], e["status"]) for e in reads] == [
        ("read", "/services/data/v59.0/query/", "Lead", 200),
        ("read", "/services/data/v59.0/query/", "Contact", 200),
    ]
    assert_clean(events, sandbox.session_id, "Marketing Qualified", "MQL__c")


def test_at_info_no_call_event_is_built(
    info_stream: io.StringIO,
    rsps: responses.RequestsMock,
    dest: SalesforceDestination,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def never(url: str | None) -> str | None:
        raise AssertionError("an INFO run built a DEBUG event")

    monkeypatch.setattr(retrying, "soql_object", never)
    rsps.get(DESCRIBE_URL, status=503, json=SERVER_UNAVAILABLE)
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    dest.describe("Account")
    events = [line["event"] for line in lines(info_stream)]
    assert "crm_call" not in events
    assert events == ["salesforce_retry"]  # what INFO showed before: nothing new


def test_debug_json_lines_carry_the_call_events(
    debug_stream: io.StringIO, rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    dest.describe("Account")
    (event,) = [line for line in lines(debug_stream) if line["event"] == "crm_call"]
    assert event["level"] == "debug"
    assert (event["destination"], event["endpoint"], event["status"]) == (
        "salesforce",
        "describe",
        200,
    )


# --- HubSpot ------------------------------------------------------------------------------------


def test_each_hubspot_attempt_is_one_debug_event(
    debug_stream: io.StringIO, box: Any, clock: FakeTime
) -> None:
    box.faults.add("rate_limit", endpoint="hs.companies.batch_update", times=1, retry_after=3)
    ids = box.hubspot.ids()[:5]
    dest = hubspot(box, clock)
    changes = [RecordChange(i, {"pqa_score": 7.0}, f"k{i}") for i in ids]
    with capture_logs() as events:
        result = dest.write("companies", changes, HS_SPECS)
    assert sorted(result.written) == sorted(ids)
    refused, sent = calls(events)
    path = "/crm/v3/objects/companies/batch/update"
    assert (refused["method"], refused["path"], refused["status"], refused["attempt"]) == (
        "POST",
        path,
        429,
        1,
    )
    assert refused["retry_in_s"] == 3.0 and refused["error"] == "ApiException"
    assert (sent["method"], sent["path"], sent["status"], sent["attempt"]) == ("POST", path, 200, 2)
    assert "retry_in_s" not in sent and sent["destination"] == "hubspot"
    assert_clean(events, box.hubspot_token)


def test_a_dropped_hubspot_connection_is_logged_with_the_error_class(
    debug_stream: io.StringIO, box: Any, clock: FakeTime
) -> None:
    box.faults.add("drop", endpoint="hs.properties.list", times=1)
    with capture_logs() as events:
        hubspot(box, clock).describe("companies")
    dropped, answered = calls(events)
    assert isinstance(dropped["status"], str) and dropped["status"] == dropped["error"]
    assert "retry_in_s" in dropped
    assert (answered["method"], answered["path"], answered["status"]) == (
        "GET",
        "/crm/v3/properties/companies",
        200,
    )


def test_hubspot_mql_searches_are_one_event_a_page(
    debug_stream: io.StringIO, box: Any, clock: FakeTime
) -> None:
    with capture_logs() as events:
        list(read_hubspot_mqls(hubspot(box, clock)))
    searches = calls(events)
    assert searches
    assert {(e["endpoint"], e["method"], e["path"], e["status"]) for e in searches} == {
        ("read", "POST", "/crm/v3/objects/contacts/search", 200)
    }
    assert_clean(events, box.hubspot_token, "marketingqualifiedlead")


# --- waits a person hears about -----------------------------------------------------------------


def test_a_pacing_wait_over_a_second_is_logged_and_told(notices: list[str]) -> None:
    clock = FakeTime(1_000.0)
    pacer = RequestPacer(2, clock=clock, sleep=clock.sleep)
    with capture_logs() as events:
        pacer.acquire()
        pacer.acquire()
        clock.now += 1.3
        pacer.acquire()  # the window is full for 8.7 s more
    assert clock.sleeps == [pytest.approx(8.7)]
    assert events == [
        {
            "event": "rate_limit_wait",
            "log_level": "info",
            "destination": "hubspot",
            "seconds": 8.7,
            "limit_per_10s": 2,
        }
    ]
    assert notices == ["waiting 8.7 s for HubSpot's rate limit (2 requests per 10 s)"]


def test_a_pacing_wait_of_a_second_or_less_passes_silently(notices: list[str]) -> None:
    clock = FakeTime(1_000.0)
    pacer = RequestPacer(1, clock=clock, sleep=clock.sleep)
    with capture_logs() as events:
        pacer.acquire()
        clock.now += 9.5
        pacer.acquire()
    assert clock.sleeps == [pytest.approx(0.5)]
    assert events == [] and notices == []


def test_a_salesforce_retry_after_wait_is_logged_and_told(
    rsps: responses.RequestsMock,
    dest: SalesforceDestination,
    sleeps: list[float],
    notices: list[str],
) -> None:
    rsps.get(
        DESCRIBE_URL,
        status=429,
        json=[{"errorCode": "TOO_MANY_REQUESTS", "message": "slow down"}],
        headers={"Retry-After": "7"},
    )
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    with capture_logs() as events:
        dest.describe("Account")
    assert sleeps == [7.0]
    waits = [e for e in events if e["event"] == "rate_limit_wait"]
    assert waits == [
        {
            "event": "rate_limit_wait",
            "log_level": "info",
            "destination": "salesforce",
            "seconds": 7.0,
            "retry_after": 7.0,
        }
    ]
    assert notices == ["waiting 7.0 s for Salesforce's rate limit (retry 1 of 4)"]


def test_a_hubspot_429_wait_is_told_once(box: Any, clock: FakeTime, notices: list[str]) -> None:
    box.faults.add("rate_limit", endpoint="hs.properties.list", times=1, retry_after=4)
    with capture_logs() as events:
        hubspot(box, clock).describe("companies")
    assert notices == ["waiting 4.0 s for HubSpot's rate limit (retry 1 of 4)"]
    assert [e["seconds"] for e in events if e["event"] == "rate_limit_wait"] == [4.0]


# --- notify -------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    """A stderr that says it is a TTY."""

    def isatty(self) -> bool:
        return True


def test_notify_prints_one_line_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    notify("waiting 8.7 s for HubSpot's rate limit (100 requests per 10 s)")
    assert terminal.getvalue() == "waiting 8.7 s for HubSpot's rate limit (100 requests per 10 s)\n"


def test_notify_is_silent_when_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    notify("waiting 2.0 s")
    assert piped.getvalue() == ""


def test_notify_never_writes_into_json_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(logs, "_json_on_stderr", False)  # restored after the test
    try:
        configure_logging("INFO", "json", stream=terminal)
        notify("waiting 2.0 s")
        assert terminal.getvalue() == ""
        configure_logging("INFO", "console", stream=terminal)
        notify("waiting 2.0 s")
        assert terminal.getvalue() == "waiting 2.0 s\n"
    finally:
        structlog.reset_defaults()


def test_notify_masks_known_secrets(notices: list[str]) -> None:
    logs.register_secret("s3cr3t-value-for-notify")
    notify("waiting because s3cr3t-value-for-notify")
    assert notices == ["waiting because ***"]


def test_a_request_base_url_is_never_logged(
    debug_stream: io.StringIO, rsps: responses.RequestsMock, dest: SalesforceDestination
) -> None:
    rsps.get(DESCRIBE_URL, json=DESCRIBE)
    with capture_logs() as events:
        dest.describe("Account")
    assert_clean(events, BASE, INSTANCE)
