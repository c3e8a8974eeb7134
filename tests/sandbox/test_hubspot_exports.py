"""The sandbox's HubSpot CRM exports API, spoken to through ``handle()`` as the server would.

Pinned to HubSpot's Exports guide
(https://developers.hubspot.com/docs/api-reference/legacy/crm/exports/guide): statuses
"COMPLETE, PENDING, PROCESSING, or CANCELED"; "The download URL will expire five minutes after
the completed request. Once expired, you can perform another GET request to generate a new
unique URL"; "Prior to expiration, an export's download URL can be accessed without any
additional authorization"; "up to thirty exports within a rolling 24 hour window, and one export
at a time. Additional exports will be queued until the previous export is completed"; "CSV
files are also automatically zipped if the file is greater than 2MB"; the crm.export scope.
Partitioning: "Exports exceeding one million rows will now be split into multiple files (each
up to one million rows) bundled together in a zip file"
(https://developers.hubspot.com/changelog/crm-export-partitioning-and-association-limits).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from typing import Any
from urllib.parse import urlsplit

import pytest

from pls_sync.demo_companies import demo_companies
from pls_sync.sandbox.http import Request, Response
from pls_sync.sandbox.hubspot import PORTAL_ID, HubSpotApi
from pls_sync.sandbox.hubspot_exports import DAY_SECONDS
from tests.fakes import FakeTime

COMPANIES = demo_companies(seed=3, count=30)
START = "/crm/v3/exports/export/async"


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def api(clock: FakeTime) -> HubSpotApi:
    hubspot = HubSpotApi(
        seed=3, companies=COMPANIES, clock=clock, monotonic=clock, burst_limit=10_000
    )
    hubspot.exports.pending_seconds = 2.0
    hubspot.exports.rows_per_second = 10.0
    return hubspot


def call(
    api: HubSpotApi, method: str, path: str, body: Any = None, *, token: str | None = "api"
) -> Response:
    headers = {"host": "127.0.0.1:9"}
    if token is not None:
        headers["authorization"] = f"Bearer {api.token if token == 'api' else token}"
    raw = json.dumps(body).encode() if body is not None else b""
    return api.handle(Request(method, path, {}, headers, raw))


def body_of(response: Response) -> dict[str, Any]:
    assert isinstance(response.body, dict), response.body
    return response.body


def start(api: HubSpotApi, **changes: Any) -> Response:
    body: dict[str, Any] = {
        "exportType": "VIEW",
        "exportName": "all companies",
        "format": "CSV",
        "language": "EN",
        "objectType": "COMPANY",
        "objectProperties": ["domain", "name", "pqa_tier", "hs_lastmodifieddate"],
        "exportInternalValuesOptions": ["NAMES", "VALUES"],
    }
    body.update(changes)
    return call(api, "POST", START, body)


def status(api: HubSpotApi, task_id: str) -> dict[str, Any]:
    response = call(api, "GET", f"{START}/tasks/{task_id}/status")
    assert response.status == 200, response.body
    return body_of(response)


def download(api: HubSpotApi, url: str, *, token: str | None = None) -> Response:
    return call(api, "GET", urlsplit(url).path, token=token)


def rows_of(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf")  # UTF-8 with a byte-order mark
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def finished(api: HubSpotApi, clock: FakeTime, task_id: str) -> dict[str, Any]:
    clock.sleep(3600)
    answer = status(api, task_id)
    assert answer["status"] == "COMPLETE"
    return answer


# --------------------------------------------------------------------------- lifecycle


def test_an_export_is_pending_then_processing_for_a_time_in_proportion_to_its_rows(
    api: HubSpotApi, clock: FakeTime
) -> None:
    rows = len(api.ids("companies"))
    started = start(api)
    assert started.status == 202
    task_id = body_of(started)["id"]
    assert status(api, task_id)["status"] == "PENDING"
    clock.sleep(2.0)
    processing = status(api, task_id)
    assert processing["status"] == "PROCESSING" and "startedAt" in processing
    clock.sleep(rows / 10.0 - 0.5)
    assert status(api, task_id)["status"] == "PROCESSING"
    clock.sleep(0.5)
    done = status(api, task_id)
    assert done["status"] == "COMPLETE" and done["numErrors"] == 0
    assert done["requestedAt"] < done["startedAt"] < done["completedAt"]
    assert urlsplit(done["result"]).path.endswith("/all_companies.csv")


def test_a_second_export_waits_for_the_first(api: HubSpotApi, clock: FakeTime) -> None:
    first = body_of(start(api))["id"]
    second = body_of(start(api, exportName="again"))["id"]
    clock.sleep(2.5)
    assert status(api, first)["status"] == "PROCESSING"
    assert status(api, second)["status"] == "PENDING"
    clock.sleep(len(api.ids("companies")) / 10.0)
    assert status(api, first)["status"] == "COMPLETE"
    assert status(api, second)["status"] == "PROCESSING"


def test_the_file_holds_the_companies_as_they_were_when_the_export_was_requested(
    api: HubSpotApi, clock: FakeTime
) -> None:
    company = api.ids("companies")[0]
    clock.sleep(10)  # past the search lag of the seeded portal
    task_id = body_of(start(api))["id"]
    changed = call(
        api,
        "PATCH",
        f"/crm/v3/objects/companies/{company}",
        {"properties": {"pqa_tier": "sales"}},
    )
    assert changed.status == 200
    url = finished(api, clock, task_id)["result"]
    rows = rows_of(download(api, url).body)  # type: ignore[arg-type]
    header, data = rows[0], rows[1:]
    assert header == ["hs_object_id", "domain", "name", "pqa_tier", "hs_lastmodifieddate"]
    by_id = {row[0]: dict(zip(header, row, strict=True)) for row in data}
    assert len(by_id) == len(api.ids("companies"))
    assert by_id[company]["pqa_tier"] != "sales"
    stamp = api.company(company)["hs_lastmodifieddate"]
    assert by_id[company]["hs_lastmodifieddate"] != stamp  # the old stamp, in epoch ms
    assert by_id[company]["hs_lastmodifieddate"].isdigit()


def test_without_internal_values_enumerations_are_labels(api: HubSpotApi, clock: FakeTime) -> None:
    company = api.ids("companies")[0]
    call(
        api,
        "PATCH",
        f"/crm/v3/objects/companies/{company}",
        {"properties": {"pqa_tier": "self_serve"}},
    )
    clock.sleep(10)
    task_id = body_of(start(api, exportInternalValuesOptions=[]))["id"]
    rows = rows_of(download(api, finished(api, clock, task_id)["result"]).body)  # type: ignore[arg-type]
    assert rows[0][:4] == ["Record ID", "Company Domain Name", "Name", "PQA tier"]
    assert next(row for row in rows if row[0] == company)[3] == "Self-serve"


# --------------------------------------------------------------------------- files and URLs


def test_every_status_names_a_new_url_that_expires_and_needs_no_token(
    api: HubSpotApi, clock: FakeTime
) -> None:
    task_id = body_of(start(api))["id"]
    first = finished(api, clock, task_id)["result"]
    second = status(api, task_id)["result"]
    assert first != second
    remaining = api.limiter.headers()["X-HubSpot-RateLimit-Remaining"]
    fetched = download(api, first)
    assert fetched.status == 200 and fetched.headers["Content-Type"].startswith("text/csv")
    assert api.limiter.headers()["X-HubSpot-RateLimit-Remaining"] == remaining
    refused = download(api, first, token=api.token)
    assert refused.status == 400 and "Only one auth mechanism" in str(refused.body)
    clock.sleep(301)
    expired = download(api, second)
    assert expired.status == 403 and "expired" in str(expired.body)
    assert download(api, status(api, task_id)["result"]).status == 200
    assert download(api, "http://127.0.0.1:9/crm/v3/exports/files/nope/x.csv").status == 403


def test_a_large_export_is_a_zip_of_parts_each_with_its_header(
    api: HubSpotApi, clock: FakeTime
) -> None:
    api.exports.partition_rows = 12
    total = len(api.ids("companies"))
    task_id = body_of(start(api))["id"]
    fetched = download(api, finished(api, clock, task_id)["result"])
    assert fetched.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(fetched.body))  # type: ignore[arg-type]
    names = archive.namelist()
    assert len(names) == -(-total // 12) and all(name.endswith(".csv") for name in names)
    parts = [rows_of(archive.read(name)) for name in names]
    assert all(part[0][0] == "hs_object_id" for part in parts)
    assert all(len(part) - 1 <= 12 for part in parts)
    assert sum(len(part) - 1 for part in parts) == total


def test_a_csv_over_the_size_limit_is_zipped_whole(api: HubSpotApi, clock: FakeTime) -> None:
    api.exports.zip_over_bytes = 200
    task_id = body_of(start(api))["id"]
    url = finished(api, clock, task_id)["result"]
    assert url.endswith(".zip")
    archive = zipfile.ZipFile(io.BytesIO(download(api, url).body))  # type: ignore[arg-type]
    assert archive.namelist() == ["all_companies.csv"]


# --------------------------------------------------------------------------- refusals


def test_the_thirty_first_export_in_a_day_is_refused(api: HubSpotApi, clock: FakeTime) -> None:
    for number in range(30):
        assert start(api, exportName=f"n{number}").status == 202
    refused = start(api)
    assert refused.status == 429
    body = body_of(refused)
    assert body["category"] == "RATE_LIMITS" and "policyName" not in body
    assert "rolling 24 hour window" in body["message"]
    clock.sleep(DAY_SECONDS)
    assert start(api).status == 202


def test_without_the_export_scope_both_endpoints_are_refused(api: HubSpotApi) -> None:
    task_id = body_of(start(api))["id"]
    api.scopes.discard("crm.export")
    for response in (start(api), call(api, "GET", f"{START}/tasks/{task_id}/status")):
        body = body_of(response)
        assert response.status == 403 and body["category"] == "MISSING_SCOPES"
        assert body["errors"][0]["context"]["requiredGranularScopes"] == ["crm.export"]


def test_another_portals_task_is_forbidden_and_a_bad_id_is_a_400(api: HubSpotApi) -> None:
    unknown = call(api, "GET", f"{START}/tasks/123/status")
    assert unknown.status == 403
    assert body_of(unknown)["message"] == (
        f"Permission to get export file cannot be granted for exportId 123 and portalId {PORTAL_ID}"
    )
    assert call(api, "GET", f"{START}/tasks/abc/status").status == 400


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"objectProperties": ["domain", "no_such_property"]}, "no_such_property"),
        ({"format": "PDF"}, "format"),
        ({"objectType": "WIDGET"}, "WIDGET"),
        ({"exportType": "LIST", "listId": 12}, "List 12"),
        ({"exportInternalValuesOptions": ["LABELS"]}, "exportInternalValuesOptions"),
        (
            {"publicCrmSearchRequest": {"filterGroups": [{"filters": []}] * 4}},
            "three filterGroups",
        ),
    ],
)
def test_invalid_starts_are_400s(api: HubSpotApi, changes: dict[str, Any], fragment: str) -> None:
    refused = start(api, **changes)
    assert refused.status == 400 and fragment in body_of(refused)["message"]
    assert not api.exports.tasks


def test_a_canceled_export_says_why_and_names_no_file(api: HubSpotApi, clock: FakeTime) -> None:
    api.exports.cancel_next = "Export failed"
    task_id = body_of(start(api))["id"]
    clock.sleep(60)
    answer = status(api, task_id)
    assert answer["status"] == "CANCELED" and "result" not in answer
    assert answer["numErrors"] == 1 and answer["errors"][0]["message"] == "Export failed"


def test_a_view_filter_keeps_the_matching_companies(api: HubSpotApi, clock: FakeTime) -> None:
    company = api.ids("companies")[3]
    domain = api.company(company)["domain"]
    search = {
        "filterGroups": [{"filters": [{"property": "domain", "operator": "EQ", "value": domain}]}]
    }
    task_id = body_of(start(api, publicCrmSearchRequest=search))["id"]
    rows = rows_of(download(api, finished(api, clock, task_id)["result"]).body)  # type: ignore[arg-type]
    assert [row[0] for row in rows[1:]] == [company]
