"""Bulk API 2.0 writes, re-authentication inside bulk calls and the daily API budget.

Real simple-salesforce sessions; HTTP emulated by ``responses`` with the documented shapes:
- Create a job (POST /jobs/ingest/, body object/contentType/operation/lineEnding, JobInfo reply):
  https://developer.salesforce.com/docs/atlas.en-us.220.0.api_bulk_v2.meta/api_bulk_v2/create_job.htm
- Upload job data (PUT .../batches, text/csv, "Returns a status code of 201 (Created)"):
  https://developer.salesforce.com/docs/platform/api-asynch/guide/upload-job-data.html
- Upload complete (PATCH /jobs/ingest/<id> {"state": "UploadComplete"}):
  https://developer.salesforce.com/docs/atlas.en-us.api_bulk_v2.meta/api_bulk_v2/close_job.htm
- Job info and states (Open, UploadComplete, InProgress, JobComplete, Failed, Aborted):
  https://developer.salesforce.com/docs/platform/api-asynch/guide/get-job-info.html
  https://developer.salesforce.com/docs/platform/api-asynch/guide/bulk-api-2-job-states.md
- successfulResults (sf__Id, sf__Created, original columns), failedResults (sf__Id, sf__Error,
  original columns; order not guaranteed), unprocessedrecords (original columns):
  https://developer.salesforce.com/docs/platform/api-asynch/guide/get-job-successful-results.html
  https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_failed_results.htm
  https://developer.salesforce.com/docs/platform/api-asynch/guide/get-job-unprocessed-results.html
- CSV rules ("Empty field values are ignored when you update records. To set a field value to
  null, use a field value of #N/A"; quotes doubled; commas and line breaks quoted):
  https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_bulk_v2/datafiles_csv_valid_record_rows.htm
  https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/datafiles_prepare_csv.htm
- Sforce-Limit-Info and the limits resource:
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_limits.htm
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import requests
import responses
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from simple_salesforce import Salesforce

from connectors.salesforce import SalesforceDestination, field_spec, parse_limit_info
from connectors.salesforce_bulk import (
    CLEAR,
    build_jobs,
    bulk_value,
    parse_bulk_error,
    parse_results,
)
from pls_sync.errors import FatalError
from pls_sync.models import FieldSpec, FieldType, RecordChange
from tests.connectors.test_salesforce import (
    ACCOUNT_FIELDS,
    BASE,
    COLLECTIONS_URL,
    INSTANCE,
    INVALID_SESSION,
    LIMITS_URL,
    NEW_SESSION_ID,
    SESSION_ID,
    body_text,
    changes_for,
    collections_echo,
    rid,
    save_error,
)
from tests.fakes import StopAfter

SPECS = {spec.name: spec for spec in (field_spec(f) for f in ACCOUNT_FIELDS)}
INGEST_URL = f"{BASE}/jobs/ingest/"
JOB_URL = re.compile(re.escape(INGEST_URL) + r"(?P<job>750\w+)$")
BATCHES_URL = re.compile(re.escape(INGEST_URL) + r"(?P<job>750\w+)/batches$")
RESULTS_URL = re.compile(
    re.escape(INGEST_URL) + r"(?P<job>750\w+)/(?P<kind>successfulResults|failedResults"
    r"|unprocessedrecords)/$"
)
LOCK_ERROR = "UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record:--"
UNPROCESSED = "unprocessed"

Reply = tuple[int, dict[str, str], str]


def job_id(n: int) -> str:
    return f"750R0000000zlh{n:02d}AA"


# --- a scripted Bulk API 2.0 server ---------------------------------------------------------------


@dataclass
class Job:
    """One ingest job as the fake server holds it."""

    id: str
    body: dict[str, Any]
    csv: str | None = None
    states: list[str] = field(default_factory=list)
    state: str = "Open"


class FakeBulk:
    """Bulk API 2.0 ingest over ``responses``: answers per ``decide(row)`` and scripted states.

    ``decide`` returns None (success), an ``sf__Error`` string (failure) or ``UNPROCESSED``.
    ``faults[step]`` holds (status, body) answers served before the real one, per step:
    create, upload, close, info, results, abort.
    """

    def __init__(
        self,
        rsps: responses.RequestsMock,
        *,
        states: tuple[str, ...] = ("InProgress", "JobComplete"),
        decide: Callable[[dict[str, str]], str | None] = lambda row: None,
        reverse_results: bool = False,
        error_message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.jobs: list[Job] = []
        self.states = states
        self.decide = decide
        self.reverse_results = reverse_results
        self.error_message = error_message
        self.headers = headers or {}
        self.faults: dict[str, list[tuple[int, Any]]] = {}
        rsps.add_callback(responses.POST, INGEST_URL, callback=self.create)
        rsps.add_callback(responses.PUT, BATCHES_URL, callback=self.upload)
        rsps.add_callback(responses.PATCH, JOB_URL, callback=self.set_state)
        rsps.add_callback(responses.GET, JOB_URL, callback=self.info)
        rsps.add_callback(responses.GET, RESULTS_URL, callback=self.results)

    def _fault(self, step: str) -> Reply | None:
        queue = self.faults.get(step)
        if queue:
            status, body = queue.pop(0)
            return status, {}, json.dumps(body)
        return None

    def _job(self, request: requests.PreparedRequest, pattern: re.Pattern[str]) -> Job:
        match = pattern.match(str(request.url))
        assert match, request.url
        return next(job for job in self.jobs if job.id == match.group("job"))

    def _info(self, job: Job) -> dict[str, Any]:
        info: dict[str, Any] = {
            "id": job.id,
            "operation": job.body["operation"],
            "object": job.body["object"],
            "createdById": "005R0000000hvVtIAI",
            "createdDate": "2026-11-22T10:00:00.000+0000",
            "systemModstamp": "2026-11-22T10:00:01.000+0000",
            "state": job.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": 59.0,
            "jobType": "V2Ingest",
            "contentUrl": f"services/data/v59.0/jobs/ingest/{job.id}/batches",
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
        }
        if job.state in ("Failed", "Aborted") and self.error_message:
            info["errorMessage"] = self.error_message
        return info

    def create(self, request: requests.PreparedRequest) -> Reply:
        fault = self._fault("create")
        if fault:
            return fault
        job = Job(job_id(len(self.jobs)), json.loads(body_text(request)), states=list(self.states))
        self.jobs.append(job)
        return 200, self.headers, json.dumps(self._info(job))

    def upload(self, request: requests.PreparedRequest) -> Reply:
        fault = self._fault("upload")
        if fault:
            return fault
        job = self._job(request, BATCHES_URL)
        job.csv = body_text(request)
        return 201, self.headers, ""

    def set_state(self, request: requests.PreparedRequest) -> Reply:
        wanted = json.loads(body_text(request))["state"]
        fault = self._fault("close" if wanted == "UploadComplete" else "abort")
        if fault:
            return fault
        job = self._job(request, JOB_URL)
        job.state = wanted
        return 200, self.headers, json.dumps(self._info(job))

    def info(self, request: requests.PreparedRequest) -> Reply:
        fault = self._fault("info")
        if fault:
            return fault
        job = self._job(request, JOB_URL)
        if job.states and job.state not in ("Aborted",):
            job.state = job.states.pop(0) if len(job.states) > 1 else job.states[0]
        return 200, self.headers, json.dumps(self._info(job))

    def results(self, request: requests.PreparedRequest) -> Reply:
        fault = self._fault("results")
        if fault:
            return fault
        job = self._job(request, RESULTS_URL)
        match = RESULTS_URL.match(str(request.url))
        assert match and job.csv is not None
        kind = match.group("kind")
        rows = list(csv.DictReader(io.StringIO(job.csv, newline="")))
        header = list(rows[0]) if rows else ["Id"]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
        if kind == "successfulResults":
            writer.writerow(["sf__Id", "sf__Created", *header])
        elif kind == "failedResults":
            writer.writerow(["sf__Id", "sf__Error", *header])
        else:
            writer.writerow(header)
        picked = []
        for row in rows:
            verdict = self.decide(row)
            if kind == "successfulResults" and verdict is None:
                picked.append([row["Id"], "false", *row.values()])
            elif kind == "failedResults" and verdict not in (None, UNPROCESSED):
                picked.append([row["Id"], verdict, *row.values()])
            elif kind == "unprocessedrecords" and verdict == UNPROCESSED:
                picked.append(list(row.values()))
        writer.writerows(reversed(picked) if self.reverse_results else picked)
        return 200, {"Content-Type": "text/csv", **self.headers}, out.getvalue()


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def sf() -> Salesforce:
    return Salesforce(instance_url=INSTANCE, session_id=SESSION_ID, version="59.0")


@pytest.fixture
def sleeps() -> list[float]:
    return []


def destination(sf: Salesforce, sleeps: list[float], **kwargs: Any) -> SalesforceDestination:
    kwargs.setdefault("bulk_threshold", 2)
    return SalesforceDestination(sf, sleep=sleeps.append, **kwargs)


def calls_of(rsps: responses.RequestsMock) -> list[tuple[str, str]]:
    """(method, path after /services/data/v59.0/) of every request made."""
    return [
        (str(call.request.method), str(call.request.url).split("/v59.0/", 1)[1])
        for call in rsps.calls
    ]


def lifecycle(job: str, polls: int = 1, *, unprocessed: bool = False) -> list[tuple[str, str]]:
    steps = [
        ("POST", "jobs/ingest/"),
        ("PUT", f"jobs/ingest/{job}/batches"),
        ("PATCH", f"jobs/ingest/{job}"),
        *[("GET", f"jobs/ingest/{job}")] * polls,
        ("GET", f"jobs/ingest/{job}/successfulResults/"),
        ("GET", f"jobs/ingest/{job}/failedResults/"),
    ]
    if unprocessed:
        steps.append(("GET", f"jobs/ingest/{job}/unprocessedrecords/"))
    return steps


def uploaded_rows(fake: FakeBulk, index: int = 0) -> list[list[str]]:
    text = fake.jobs[index].csv
    assert text is not None
    return list(csv.reader(io.StringIO(text, newline="")))


# --- the switch between Collections and Bulk ----------------------------------------------------


def test_2000_changes_go_through_collections(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    fake = FakeBulk(rsps)
    rsps.add_callback(responses.PATCH, COLLECTIONS_URL, callback=collections_echo())
    dest = SalesforceDestination(sf, sleep=sleeps.append)  # default threshold: 2000

    result = dest.write("Account", changes_for(2000), SPECS)

    assert result.method == "collections"
    assert result.calls == 10 == len(rsps.calls)
    assert fake.jobs == []
    assert len(result.written) == 2000


def test_a_stop_request_finishes_the_collections_batch_in_flight(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    rsps.add_callback(responses.PATCH, COLLECTIONS_URL, callback=collections_echo())
    dest = SalesforceDestination(sf, sleep=sleeps.append)
    changes = changes_for(450)

    result = dest.write("Account", changes, SPECS, stop=StopAfter(1))

    assert result.calls == 1 == len(rsps.calls)
    assert result.written == [c.record_id for c in changes[:200]]
    assert result.not_attempted == [c.record_id for c in changes[200:]]


def test_a_stop_request_finishes_the_bulk_job_in_flight(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    fake = FakeBulk(rsps, states=("JobComplete",))
    dest = destination(sf, sleeps, bulk_max_job_bytes=150)
    changes = changes_for(12)

    result = dest.write("Account", changes, SPECS, stop=StopAfter(1))

    assert len(fake.jobs) == 1  # the job in flight ran to the end; no second job was created
    sent = len(uploaded_rows(fake)) - 1
    assert 0 < sent < 12
    assert calls_of(rsps) == lifecycle(job_id(0))
    assert sorted(result.written) == sorted(c.record_id for c in changes[:sent])
    assert result.not_attempted == [c.record_id for c in changes[sent:]]


def test_2001_changes_go_through_one_bulk_job(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    fake = FakeBulk(rsps, states=("JobComplete",))
    dest = SalesforceDestination(sf, sleep=sleeps.append)

    result = dest.write("Account", changes_for(2001), SPECS)

    assert result.method == "bulk2"
    assert len(fake.jobs) == 1
    assert calls_of(rsps) == lifecycle(job_id(0))
    assert result.calls == 6 == dest.api_calls()["write"]
    assert sorted(result.written) == [rid(n) for n in range(2001)]
    assert result.rejected == [] and result.not_attempted == []
    assert len(uploaded_rows(fake)) == 2002  # header + one row per record


def test_bulk_threshold_comes_from_env(rsps: responses.RequestsMock) -> None:
    env = {"SALESFORCE_INSTANCE_URL": INSTANCE, "SALESFORCE_SESSION_ID": SESSION_ID}
    fake = FakeBulk(rsps, states=("JobComplete",))
    dest = SalesforceDestination.from_env(env, sleep=lambda s: None, bulk_threshold=1)
    assert dest.write("Account", changes_for(2), SPECS).method == "bulk2"
    assert len(fake.jobs) == 1


# --- the job lifecycle --------------------------------------------------------------------------


def test_full_job_lifecycle_sends_exact_requests(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    fake = FakeBulk(rsps, states=("InProgress", "InProgress", "JobComplete"))
    dest = destination(sf, sleeps)
    assert fake.jobs == []
    changes = [
        RecordChange(
            rid(0),
            {"PQA_Score__c": 91.6, "PQA_Signals__c": ["pricing, terms", 'say "hi"']},
            "a.com",
        ),
        RecordChange(
            rid(1),
            {
                "PQA_Tier__c": None,
                "PQA_Qualified_Since__c": datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
            },
            "b.com",
        ),
        RecordChange(
            rid(2),
            {
                "PQA_Score__c": 12.0,
                "PQA_Signals__c": "line one\nline two",
                "PQA_Scored_On__c": date(2026, 11, 23),
                "Is_PQA__c": False,
            },
            "c.com",
        ),
    ]

    result = dest.write("Account", changes, SPECS)

    job = job_id(0)
    assert calls_of(rsps) == lifecycle(job, polls=3)
    create, upload, close = (call.request for call in rsps.calls[:3])
    assert json.loads(body_text(create)) == {
        "object": "Account",
        "contentType": "CSV",
        "operation": "update",
        "lineEnding": "LF",
        "columnDelimiter": "COMMA",
    }
    assert create.headers["Content-Type"] == "application/json"
    assert upload.headers["Content-Type"] == "text/csv"
    assert body_text(upload) == (
        "Id,PQA_Score__c,PQA_Signals__c,PQA_Tier__c,PQA_Qualified_Since__c,"
        "PQA_Scored_On__c,Is_PQA__c\n"
        f'{rid(0)},92,"pricing, terms; say ""hi""",,,,\n'
        f"{rid(1)},,,#N/A,2026-11-22T10:00:00.000Z,,\n"
        f'{rid(2)},12,"line one\nline two",,,2026-11-23,false\n'
    )
    assert json.loads(body_text(close)) == {"state": "UploadComplete"}
    assert all(
        call.request.headers["Authorization"] == f"Bearer {SESSION_ID}" for call in rsps.calls
    )
    assert all(call.request.req_kwargs["timeout"] == 60.0 for call in rsps.calls)  # type: ignore[attr-defined]
    assert sleeps == [1.0, 2.0, 4.0]  # backoff between polls, injected
    assert result.written == [rid(0), rid(1), rid(2)]
    assert result.method == "bulk2" and result.calls == 8 == len(rsps.calls)
    assert [job.state for job in fake.jobs] == ["JobComplete"]


def test_failed_results_become_rejections(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    errors = {
        rid(1): "FIELD_CUSTOM_VALIDATION_EXCEPTION:Score must be between 0 and 100:PQA_Score__c --",
        rid(2): "ENTITY_IS_DELETED:entity is deleted:--",
        rid(
            3
        ): "INVALID_TYPE_ON_FIELD_IN_RECORD:PQA Tier: bad value: x:PQA_Tier__c,PQA_Signals__c --",
        rid(4): "UNKNOWN_EXCEPTION:something broke",
    }
    FakeBulk(rsps, decide=lambda row: errors.get(row["Id"]), reverse_results=True)
    dest = destination(sf, sleeps)

    result = dest.write("Account", changes_for(6), SPECS)

    assert sorted(result.written) == [rid(0), rid(5)]
    rejected = {r.record_id: (r.code, r.message, r.fields, r.retriable) for r in result.rejected}
    assert rejected == {
        rid(1): (
            "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "Score must be between 0 and 100",
            ("PQA_Score__c",),
            False,
        ),
        rid(2): ("ENTITY_IS_DELETED", "entity is deleted", (), False),
        rid(3): (
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            "PQA Tier: bad value: x",
            ("PQA_Tier__c", "PQA_Signals__c"),
            False,
        ),
        rid(4): ("UNKNOWN_EXCEPTION", "something broke", (), False),
    }
    assert result.not_attempted == []


def test_job_that_ends_failed_leaves_unprocessed_rows_not_attempted(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    def decide(row: dict[str, str]) -> str | None:
        n = int(row["Id"][3:])
        if n < 2:
            return None
        if n == 2:
            return "ENTITY_IS_DELETED:entity is deleted:--"
        return UNPROCESSED

    leaked = f"InvalidBatch : retried more than 10 times (session {SESSION_ID})"
    fake = FakeBulk(rsps, states=("InProgress", "Failed"), decide=decide, error_message=leaked)
    # Two jobs: the second is never created once the first has failed.
    dest = destination(sf, sleeps, bulk_max_job_bytes=150)

    with structlog.testing.capture_logs() as logs:
        result = dest.write("Account", changes_for(12), SPECS)

    assert len(fake.jobs) == 1
    first_job = [c.record_id for c in changes_for(12)][: len(uploaded_rows(fake)) - 1]
    assert len(first_job) < 12
    assert calls_of(rsps) == lifecycle(job_id(0), polls=2, unprocessed=True)
    assert result.written == [rid(0), rid(1)]
    assert [(r.record_id, r.code) for r in result.rejected] == [(rid(2), "ENTITY_IS_DELETED")]
    assert result.not_attempted == [rid(n) for n in range(3, 12)]
    assert result.calls == 8
    (ended,) = [e for e in logs if e["event"] == "salesforce_bulk_job_ended"]
    assert ended["state"] == "Failed" and "retried more than 10 times" in ended["error"]
    assert SESSION_ID not in json.dumps(logs, default=str)


def test_large_writes_are_split_into_several_jobs(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    fake = FakeBulk(rsps, states=("JobComplete",))
    dest = destination(sf, sleeps, bulk_max_job_bytes=150)

    result = dest.write("Account", changes_for(20), SPECS)

    assert len(fake.jobs) >= 3
    sizes = [len((job.csv or "").encode()) for job in fake.jobs]
    assert max(sizes) <= 150
    sent = [row[0] for index in range(len(fake.jobs)) for row in uploaded_rows(fake, index)[1:]]
    assert sent == [rid(n) for n in range(20)]
    assert sorted(result.written) == sent
    assert result.calls == 6 * len(fake.jobs)


def test_locked_rows_are_retried_once_through_collections(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    locked = {rid(1), rid(3), rid(4)}
    FakeBulk(
        rsps,
        states=("JobComplete",),
        decide=lambda row: LOCK_ERROR if row["Id"] in locked else None,
    )

    def second_try(record: dict[str, Any]) -> dict[str, Any]:
        if record["id"] == rid(3):
            return save_error("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access")
        return {"id": record["id"], "success": True, "errors": []}

    rsps.add_callback(responses.PATCH, COLLECTIONS_URL, callback=collections_echo(second_try))
    dest = destination(sf, sleeps, batch_size=4, lock_retry_delay=3.0)

    result = dest.write("Account", changes_for(6, PQA_Tier__c=None), SPECS)

    bodies = [
        json.loads(body_text(call.request))
        for call in rsps.calls
        if str(call.request.url) == COLLECTIONS_URL
    ]
    assert [[r["id"] for r in b["records"]] for b in bodies] == [[rid(1), rid(3)], [rid(4)]]
    assert bodies[0]["records"][0] == {
        "attributes": {"type": "Account"},
        "id": rid(1),
        "PQA_Tier__c": None,  # REST clears with null, not #N/A
    }
    assert sorted(result.written) == sorted([rid(0), rid(2), rid(5), rid(1), rid(4)])
    assert [(r.record_id, r.code, r.retriable) for r in result.rejected] == [
        (rid(3), "UNABLE_TO_LOCK_ROW", True)
    ]
    assert result.method == "bulk2"
    assert result.calls == 6 + 2
    assert sleeps[-1] == 3.0


def test_poll_timeout_aborts_and_leaves_records_not_attempted(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    fake = FakeBulk(rsps, states=("InProgress",))
    dest = destination(sf, sleeps, bulk_timeout=10.0, bulk_max_job_bytes=150)

    with structlog.testing.capture_logs() as logs:
        result = dest.write("Account", changes_for(8), SPECS)

    assert len(fake.jobs) == 1  # later jobs are not started
    assert sleeps == [1.0, 2.0, 4.0, 3.0]  # the last wait is cut to the 10 s allowance
    steps = calls_of(rsps)
    assert steps[-1] == ("PATCH", f"jobs/ingest/{job_id(0)}")
    assert json.loads(body_text(rsps.calls[-1].request)) == {"state": "Aborted"}
    assert fake.jobs[0].state == "Aborted"
    assert result.written == [] and result.rejected == []
    assert result.not_attempted == [rid(n) for n in range(8)]
    assert result.calls == len(rsps.calls) == 3 + 4 + 1
    (stopped,) = [e for e in logs if e["event"] == "salesforce_bulk_stopped"]
    assert stopped["code"] == "BULK_JOB_TIMEOUT"


def test_server_errors_on_upload_are_retried_then_stop_the_write(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    fake = FakeBulk(rsps)
    oops = [{"errorCode": "UNKNOWN_EXCEPTION", "message": "An unexpected error occurred"}]
    fake.faults["upload"] = [(500, oops)] * 5
    dest = destination(sf, sleeps)

    result = dest.write("Account", changes_for(3), SPECS)

    assert calls_of(rsps) == [
        ("POST", "jobs/ingest/"),
        *[("PUT", f"jobs/ingest/{job_id(0)}/batches")] * 5,
        ("PATCH", f"jobs/ingest/{job_id(0)}"),  # abort the open job
    ]
    assert fake.jobs[0].state == "Aborted"
    assert result.not_attempted == [rid(0), rid(1), rid(2)] and result.written == []
    assert len(sleeps) == 4 and result.calls == 7


# --- re-authentication inside bulk calls ----------------------------------------------------------


def test_expired_session_mid_job_reauthenticates_once_and_continues(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    fake = FakeBulk(rsps, states=("JobComplete",))
    fake.faults["close"] = [(401, INVALID_SESSION)]
    new = Salesforce(instance_url=INSTANCE, session_id=NEW_SESSION_ID, version="59.0")
    reauths: list[int] = []

    def reauthenticate() -> Salesforce:
        reauths.append(1)
        return new

    dest = destination(sf, sleeps, reauthenticate=reauthenticate)
    result = dest.write("Account", changes_for(3), SPECS)

    job = job_id(0)
    assert calls_of(rsps) == [
        ("POST", "jobs/ingest/"),
        ("PUT", f"jobs/ingest/{job}/batches"),
        ("PATCH", f"jobs/ingest/{job}"),  # 401
        ("PATCH", f"jobs/ingest/{job}"),  # the same request, on the new session
        ("GET", f"jobs/ingest/{job}"),
        ("GET", f"jobs/ingest/{job}/successfulResults/"),
        ("GET", f"jobs/ingest/{job}/failedResults/"),
    ]
    tokens = [call.request.headers["Authorization"].split()[1] for call in rsps.calls]
    assert tokens == [SESSION_ID] * 3 + [NEW_SESSION_ID] * 4
    assert len(fake.jobs) == 1 and fake.jobs[0].state == "JobComplete"
    assert reauths == [1] and dest.api_calls()["auth"] == 1
    assert result.written == [rid(0), rid(1), rid(2)]
    assert result.calls == 7


def test_second_expired_session_in_a_bulk_call_is_an_auth_error(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    fake = FakeBulk(rsps)
    fake.faults["upload"] = [(401, INVALID_SESSION), (401, INVALID_SESSION)]
    new = Salesforce(instance_url=INSTANCE, session_id=NEW_SESSION_ID, version="59.0")
    reauths: list[int] = []

    def reauthenticate() -> Salesforce:
        reauths.append(1)
        return new

    dest = destination(sf, sleeps, reauthenticate=reauthenticate)
    result = dest.write("Account", changes_for(3), SPECS)

    # The write stops with the auth error reported, and nothing of what it did is lost.
    assert result.error is not None
    assert result.written == [] and len(result.not_attempted) == 3
    assert reauths == [1]
    assert [m for m, _ in calls_of(rsps)] == ["POST", "PUT", "PUT"]
    assert SESSION_ID not in (result.error or "") and NEW_SESSION_ID not in (result.error or "")


def test_expired_session_in_a_bulk_call_without_reauth_fails_at_once(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    fake = FakeBulk(rsps)
    fake.faults["create"] = [(401, INVALID_SESSION)]
    result = destination(sf, sleeps).write("Account", changes_for(3), SPECS)
    assert result.error is not None and len(result.not_attempted) == 3
    assert len(rsps.calls) == 1 and sleeps == []


# --- the API budget -------------------------------------------------------------------------------


def test_budget_caps_collections_batches(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    rsps.add_callback(responses.PATCH, COLLECTIONS_URL, callback=collections_echo())
    dest = SalesforceDestination(sf, batch_size=2, sleep=sleeps.append)

    result = dest.write("Account", changes_for(10), SPECS, max_write_calls=2)

    assert len(rsps.calls) == 2 == result.calls
    assert result.written == [rid(0), rid(1), rid(2), rid(3)]
    assert result.not_attempted == [rid(n) for n in range(4, 10)]
    assert result.method == "collections+budget"


def test_budget_that_fits_the_plan_changes_nothing(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    rsps.add_callback(responses.PATCH, COLLECTIONS_URL, callback=collections_echo())
    dest = SalesforceDestination(sf, batch_size=2, sleep=sleeps.append)
    result = dest.write("Account", changes_for(10), SPECS, max_write_calls=5)
    assert result.calls == 5 and len(result.written) == 10
    assert result.method == "collections" and result.not_attempted == []


def test_budget_counts_retries_and_stops_before_the_next_batch(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    rsps.patch(
        COLLECTIONS_URL, status=503, json=[{"errorCode": "SERVER_UNAVAILABLE", "message": "x"}]
    )
    rsps.add_callback(responses.PATCH, COLLECTIONS_URL, callback=collections_echo())
    dest = SalesforceDestination(sf, batch_size=2, sleep=sleeps.append)
    result = dest.write("Account", changes_for(6), SPECS, max_write_calls=2)
    assert result.calls == 2 == len(rsps.calls)
    assert result.written == [rid(0), rid(1)]
    assert result.not_attempted == [rid(2), rid(3), rid(4), rid(5)]
    assert result.method == "collections+budget"


def test_budget_caps_bulk_jobs(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    fake = FakeBulk(rsps, states=("JobComplete",))
    dest = destination(sf, sleeps, bulk_max_job_bytes=100)
    jobs = build_jobs(changes_for(10), SPECS, max_job_bytes=100)
    assert len(jobs) >= 3

    result = dest.write("Account", changes_for(10), SPECS, max_write_calls=13)

    assert len(fake.jobs) == 2 and result.calls == 12
    done = [c.record_id for job in jobs[:2] for c in job.changes]
    assert sorted(result.written) == sorted(done)
    assert result.not_attempted == [c.record_id for job in jobs[2:] for c in job.changes]
    assert result.method == "bulk2+budget"


def test_budget_too_small_for_a_bulk_job_falls_back_to_collections(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    fake = FakeBulk(rsps)
    rsps.add_callback(responses.PATCH, COLLECTIONS_URL, callback=collections_echo())
    dest = SalesforceDestination(sf, sleep=sleeps.append)

    result = dest.write("Account", changes_for(3000), SPECS, max_write_calls=5)

    assert fake.jobs == []
    assert result.calls == 5 and len(result.written) == 1000
    assert result.not_attempted == [rid(n) for n in range(1000, 3000)]
    assert result.method == "collections+budget"


def test_zero_budget_writes_nothing(rsps: responses.RequestsMock, sf: Salesforce) -> None:
    dest = SalesforceDestination(sf, sleep=lambda s: None)
    result = dest.write("Account", changes_for(3), SPECS, max_write_calls=0)
    assert len(rsps.calls) == 0 and result.calls == 0
    assert result.not_attempted == [rid(0), rid(1), rid(2)]
    assert result.method == "collections+budget"


def test_daily_api_remaining_from_a_bulk_response_header(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    FakeBulk(rsps, states=("JobComplete",), headers={"Sforce-Limit-Info": "api-usage=25/15000"})
    dest = destination(sf, sleeps)
    dest.write("Account", changes_for(3), SPECS)
    assert dest.daily_api_remaining() == (14975, 15000)
    assert dest.write_budget(0.1) == 1497
    assert dest.api_calls()["limits"] == 0


def test_daily_api_remaining_and_budget_from_the_limits_resource(
    rsps: responses.RequestsMock, sf: Salesforce
) -> None:
    rsps.get(
        LIMITS_URL,
        json={
            "DailyApiRequests": {"Max": 15000, "Remaining": 14998},
            "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
        },
    )
    dest = SalesforceDestination(sf, sleep=lambda s: None)
    assert dest.daily_api_remaining() == (14998, 15000)
    assert dest.write_budget(0.25) == 3749  # floor(14998 * 0.25)
    assert dest.write_budget(1.0) == 14998
    assert dest.api_calls()["limits"] == 1  # read once, then kept


def test_write_budget_is_none_when_limits_are_unknown(
    rsps: responses.RequestsMock, sf: Salesforce
) -> None:
    rsps.get(LIMITS_URL, status=403, json=[{"errorCode": "INSUFFICIENT_ACCESS", "message": "no"}])
    dest = SalesforceDestination(sf, sleep=lambda s: None)
    assert dest.write_budget(0.5) is None
    with pytest.raises(ValueError):
        dest.write_budget(1.5)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("api-usage=25/15000", (14975, 15000)),
        ("api-usage=18/5000; per-app-api-usage=17/250(appName=sample-connected-app)", (4982, 5000)),
        ("per-app-api-usage=17/250(appName=x)", None),
        ("api-usage=16000/15000", (0, 15000)),
        (None, None),
        ("", None),
    ],
)
def test_parse_limit_info(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_limit_info(header) == expected


# --- CSV -----------------------------------------------------------------------------------------


def spec(type_: FieldType, **kw: Any) -> FieldSpec:
    return FieldSpec(name="F__c", type=type_, **kw)


@pytest.mark.parametrize(
    ("value", "field_spec_", "expected"),
    [
        (None, spec(FieldType.STRING), CLEAR),
        ("", spec(FieldType.STRING), CLEAR),
        ([], spec(FieldType.TEXTAREA), CLEAR),
        (float("nan"), spec(FieldType.NUMBER), CLEAR),
        (True, spec(FieldType.BOOLEAN), "true"),
        (False, spec(FieldType.BOOLEAN), "false"),
        (87.4, spec(FieldType.NUMBER, scale=0), "87"),
        (0.12345, spec(FieldType.NUMBER, scale=2), "0.12"),
        (1e-7, spec(FieldType.NUMBER), "0.0000001"),
        (1e21, spec(FieldType.NUMBER), "1000000000000000000000"),
        (7.0, spec(FieldType.INTEGER), "7"),
        (
            datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
            spec(FieldType.DATETIME),
            "2026-11-22T10:00:00.000Z",
        ),
        (date(2026, 11, 22), spec(FieldType.DATE), "2026-11-22"),
        (["sales", "abm"], spec(FieldType.MULTIPICKLIST), "sales;abm"),
        ('a "quoted", value', spec(FieldType.STRING), 'a "quoted", value'),
    ],
)
def test_bulk_value(value: Any, field_spec_: FieldSpec, expected: str) -> None:
    assert bulk_value(value, field_spec_) == expected


def test_union_of_columns_keeps_unchanged_cells_empty() -> None:
    changes = [
        RecordChange("A", {"X__c": "x"}, "a"),
        RecordChange("B", {"Y__c": None}, "b"),
        RecordChange("C", {"X__c": None, "Y__c": "y"}, "c"),
    ]
    (job,) = build_jobs(changes, {})
    assert job.csv == "Id,X__c,Y__c\nA,x,\nB,,#N/A\nC,#N/A,y\n"
    assert job.changes == tuple(changes)


_cell_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["A__c", "B__c", "C__c"]),
            st.one_of(st.none(), _cell_text, st.integers(-(10**6), 10**6)),
            max_size=3,
        ),
        min_size=1,
        max_size=15,
    ),
    st.integers(min_value=60, max_value=600),
)
def test_jobs_parse_back_to_what_was_meant(
    field_sets: list[dict[str, Any]], max_bytes: int
) -> None:
    changes = [RecordChange(f"ID{n}", fields, f"d{n}") for n, fields in enumerate(field_sets)]
    jobs = build_jobs(changes, {}, max_job_bytes=max_bytes)
    assert [c for job in jobs for c in job.changes] == changes
    for job in jobs:
        rows = list(csv.reader(io.StringIO(job.csv, newline="")))
        header, body = rows[0], rows[1:]
        assert header[0] == "Id"
        assert len(job.csv.encode()) <= max_bytes or len(job.changes) == 1
        for change, row in zip(job.changes, body, strict=True):
            cells = dict(zip(header, row, strict=True))
            assert cells["Id"] == change.record_id
            for column in header[1:]:
                if column in change.fields:
                    assert cells[column] == bulk_value(change.fields[column], None)
                    assert cells[column] != ""  # empty would mean "leave unchanged"
                else:
                    assert cells[column] == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            LOCK_ERROR,
            ("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record", ()),
        ),
        (
            "REQUIRED_FIELD_MISSING:Required fields are missing: [Name]:Name --",
            ("REQUIRED_FIELD_MISSING", "Required fields are missing: [Name]", ("Name",)),
        ),
        (
            "INVALID_FIELD:bad:A__c, B__c --",
            ("INVALID_FIELD", "bad", ("A__c", "B__c")),
        ),
        ("DUPLICATE_VALUE:duplicate value found", ("DUPLICATE_VALUE", "duplicate value found", ())),
        ("something odd", ("UNKNOWN_ERROR", "something odd", ())),
        ("", ("UNKNOWN_ERROR", "", ())),
    ],
)
def test_parse_bulk_error(text: str, expected: tuple[str, str, tuple[str, ...]]) -> None:
    assert parse_bulk_error(text) == expected


def test_parse_results_handles_an_empty_body_and_quoted_rows() -> None:
    assert parse_results("") == []
    text = '"sf__Id","sf__Error","Id","Note__c"\n"001","X:y","001","a ""b""\nc"\n'
    assert parse_results(text) == [
        {"sf__Id": "001", "sf__Error": "X:y", "Id": "001", "Note__c": 'a "b"\nc'}
    ]


def test_untrusted_field_names_are_refused_before_a_bulk_job(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    changes = [RecordChange(rid(n), {'Name", "x': 1}, "a") for n in range(5)]
    with pytest.raises(FatalError):
        destination(sf, sleeps).write("Account", changes, SPECS)
    assert len(rsps.calls) == 0


# --- against the local sandbox (a real HTTP server on 127.0.0.1) --------------------------------


def test_bulk_write_against_the_sandbox_with_a_locked_row() -> None:
    from pls_sync.sandbox.salesforce import sandbox_login_session
    from pls_sync.sandbox.server import Sandbox

    box = Sandbox(port=0, seed=None).start()
    try:
        org = box.salesforce
        ids = [
            org.insert(
                "Account",
                {"Name": f"Acme {n}", "PQA_Score__c": 10.0, "PQA_Tier__c": "sales"},
            )
            for n in range(3)
        ]
        box.faults.add("lock_row", endpoint="sf.bulk2.close", record_ids=[ids[2]], times=1)
        sf = Salesforce(
            instance_url=box.url,
            session_id=box.session_id,
            version="59.0",
            session=sandbox_login_session(box.url),
        )
        dest = SalesforceDestination(sf, bulk_threshold=1, sleep=lambda s: None)
        specs = dest.describe("Account")
        signals = 'pricing, terms; say "hi"\nagain'
        changes = [
            RecordChange(ids[0], {"PQA_Score__c": 55, "PQA_Signals__c": signals}, "a"),
            RecordChange(ids[1], {"PQA_Tier__c": None}, "b"),
            RecordChange(ids[2], {"PQA_Score__c": 70}, "c"),
        ]

        result = dest.write("Account", changes, specs)

        assert result.method == "bulk2"
        assert sorted(result.written) == sorted(ids) and result.rejected == []
        first, second, third = (org.get("Account", record_id) for record_id in ids)
        assert first is not None and second is not None and third is not None
        assert first["PQA_Score__c"] == 55 and first["PQA_Signals__c"] == signals
        assert first["PQA_Tier__c"] == "sales"  # not in this record's change: left as it was
        assert second["PQA_Tier__c"] is None and second["PQA_Score__c"] == 10
        assert third["PQA_Score__c"] == 70  # locked in the job, written by the retry
        counts = requests.get(f"{box.url}/__sandbox/counts", timeout=5).json()
        assert counts.get("sf.composite.sobjects.patch") == 1, counts
        assert counts.get("sf.bulk2.create") == 1, counts
        usage = dest.daily_api_remaining()
        assert usage is not None and usage[0] < usage[1]
        assert dest.api_calls()["limits"] == 0  # from Sforce-Limit-Info on the bulk responses
    finally:
        box.stop()


def test_whole_numbers_go_into_the_csv_as_integers(
    rsps: responses.RequestsMock, sf: Salesforce, sleeps: list[float]
) -> None:
    fake = FakeBulk(rsps)
    dest = destination(sf, sleeps)
    scores: list[Any] = [100, 100.0, Decimal("100"), 99.6]
    changes = [
        RecordChange(
            rid(n), {"PQA_Score__c": score, "NumberOfEmployees": 12.0, "PQA_Ratio__c": 0.5}, "a"
        )
        for n, score in enumerate(scores)
    ]
    result = dest.write("Account", changes, SPECS)
    assert len(result.written) == 4
    (job,) = fake.jobs
    assert job.csv == "Id,PQA_Score__c,NumberOfEmployees,PQA_Ratio__c\n" + "".join(
        f"{rid(n)},100,12,0.5\n" for n in range(4)
    )


@pytest.mark.parametrize(
    ("value", "field_spec_", "expected"),
    [
        (Decimal("100.00"), spec(FieldType.NUMBER, scale=0, precision=3), "100"),
        (100, spec(FieldType.NUMBER, scale=2), "100"),
        (Decimal("0.126"), spec(FieldType.NUMBER, scale=2), "0.13"),
        (2**62, spec(FieldType.NUMBER, scale=2), str(2**62)),  # exact, not 4.611686018427388e18
    ],
)
def test_bulk_number_cells(value: Any, field_spec_: FieldSpec, expected: str) -> None:
    assert bulk_value(value, field_spec_) == expected


def test_a_job_in_progress_for_a_while_with_results_in_any_order_against_the_sandbox() -> None:
    """The sandbox's job answers InProgress to its first polls and returns result rows in a
    shuffled order; some rows fail, two are locked (one through a trigger): every outcome must
    land on the record it belongs to, matched by id, never by position."""
    from pls_sync.sandbox.salesforce import sandbox_login_session
    from pls_sync.sandbox.server import Sandbox

    box = Sandbox(port=0, seed=None).start()
    try:
        org = box.salesforce
        assert org.bulk_polls_in_progress == 2 and org.shuffle_bulk_results
        assert org.lock_error_style == "mixed"
        ids = [org.insert("Account", {"Name": f"Acme {n}", "PQA_Score__c": 1.0}) for n in range(30)]
        out_of_range = set(ids[3::7])  # PQA_Score__c is Number(3, 0): 5000 does not fit
        locked = [ids[1], ids[2]]
        box.faults.add("lock_row", endpoint="sf.bulk2.close", record_ids=locked, times=1)
        sf = Salesforce(
            instance_url=box.url,
            session_id=box.session_id,
            version="59.0",
            session=sandbox_login_session(box.url),
        )
        polls: list[float] = []
        dest = SalesforceDestination(sf, bulk_threshold=1, sleep=polls.append)
        specs = dest.describe("Account")
        changes = [
            RecordChange(i, {"PQA_Score__c": 5000 if i in out_of_range else n}, f"d{n}")
            for n, i in enumerate(ids)
        ]

        result = dest.write("Account", changes, specs)

        assert result.method == "bulk2"
        assert {r.record_id for r in result.rejected} == out_of_range
        assert {r.code for r in result.rejected} == {"NUMBER_OUTSIDE_VALID_RANGE"}
        assert sorted(result.written) == sorted(set(ids) - out_of_range)  # locks: retried
        assert result.not_attempted == []
        for n, record_id in enumerate(ids):
            stored = org.get("Account", record_id)
            assert stored is not None
            assert stored["PQA_Score__c"] == (1.0 if record_id in out_of_range else n)
        counts = box.counts()
        assert counts["sf.bulk2.status"] == 3  # InProgress, InProgress, JobComplete
        assert counts["sf.composite.sobjects.patch"] == 1  # the two locked rows, once more
        assert len(polls) >= 3
    finally:
        box.stop()
