"""Full HubSpot reads through the CRM exports API: the real hubspot-api-client against the sandbox.

Every test sends real HTTP to the sandbox's exports emulation (``pls_sync.sandbox.hubspot_exports``,
whose module docstring quotes HubSpot's Exports guide) or, for the exact requests, to a small
loopback stand-in that records them: hubspot-api-client speaks urllib3, which the ``responses``
library cannot intercept. One fake clock runs the connector's pacing, backoff and polling and the
sandbox's stamps, rate windows and export lifecycle: it moves only when the connector sleeps.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import connectors.hubspot as hubspot_connector
import connectors.hubspot_export as hubspot_export
from connectors.crm_snapshot import SnapshottingDestination
from connectors.hubspot import HubSpotDestination
from connectors.hubspot_export import ExportUnavailable
from connectors.state import SqlStateStore
from pls_sync.demo_companies import demo_companies
from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.models import CrmRecord, RecordChange
from pls_sync.sandbox.hubspot import default_properties
from pls_sync.sandbox.server import Sandbox
from tests.connectors.test_hubspot import http
from tests.fakes import FakeTime

MAPPING = DestinationMapping(
    destination="hubspot",
    object="companies",
    match=MatchRule(domain_fields=("domain", "hs_additional_domains")),
    fields=(
        FieldMapping("pqa_score", "score"),
        FieldMapping("pqa_tier", "tier"),
        FieldMapping("pqa_signals", "signals"),
        FieldMapping("pqa_qualified_since", "qualified_since"),
        FieldMapping("pqa_founded", "founded"),
        FieldMapping("pqa_regions", "regions"),
        FieldMapping("description", "about"),
    ),
    firmographics={"employees": "numberofemployees"},
)
TRICKY = {
    "name": 'Zoë & Søn, "Ltd"\nsecond line\r\nthird',
    "domain": "zoe.example",
    "hs_additional_domains": "zoe.co.uk;zoe.de",
    "pqa_score": "42.5",
    "pqa_tier": "sales",
    "pqa_signals": "Pricing page viewed; Team of 7+, growing",
    "pqa_qualified_since": "2026-05-01T10:20:30.456Z",
    "pqa_founded": "2020-02-29",
    "pqa_regions": "emea;apac",
    "description": "日本語 — 🚀,\ttab",
    "numberofemployees": "250",
}


@pytest.fixture
def clock() -> FakeTime:
    return FakeTime()


@pytest.fixture
def box(clock: FakeTime) -> Iterator[Sandbox]:
    sandbox = Sandbox(port=0, seed=7, companies=demo_companies(7, 40)).start()
    sandbox.set_clock(lambda: datetime.fromtimestamp(clock(), UTC))
    assert sandbox.hubspot is not None
    sandbox.hubspot.limiter.monotonic = clock
    sandbox.hubspot.exports.pending_seconds = 2.0
    sandbox.hubspot.exports.rows_per_second = 20.0
    _add_custom_properties(sandbox)
    try:
        yield sandbox
    finally:
        sandbox.stop()


def destination(box: Sandbox, clock: FakeTime, **options: Any) -> HubSpotDestination:
    return HubSpotDestination(
        box.hubspot_token,
        base_url=box.url,
        sleep=options.pop("sleep", clock.sleep),
        clock=clock,
        wall_clock=lambda: datetime.fromtimestamp(clock(), UTC),
        **options,
    )


def _add_custom_properties(box: Sandbox) -> None:
    http(
        box,
        "POST",
        "/crm/v3/properties/companies",
        {"name": "pqa_founded", "label": "Founded", "type": "date", "fieldType": "date"}
        | {"groupName": "companyinformation"},
    )
    http(
        box,
        "POST",
        "/crm/v3/properties/companies",
        {"name": "pqa_regions", "label": "Regions", "type": "enumeration", "fieldType": "checkbox"}
        | {"groupName": "companyinformation"}
        | {"options": [{"value": v} for v in ("emea", "apac", "amer")]},
    )


def create(box: Sandbox, properties: dict[str, str]) -> str:
    return str(http(box, "POST", "/crm/v3/objects/companies", {"properties": properties})["id"])


def count(box: Sandbox, endpoint: str) -> int:
    return int(box.counts().get(endpoint, 0))


def listed(box: Sandbox, clock: FakeTime) -> dict[str, CrmRecord]:
    return {r.id: r for r in destination(box, clock).read_records(MAPPING)}


# --------------------------------------------------------------------------- the same records


def test_an_export_read_equals_a_list_read_record_for_record(box: Sandbox, clock: FakeTime) -> None:
    tricky = create(box, TRICKY)
    formula = create(box, {"name": "=SUM(A1:A2)", "domain": "formula.example"})
    empty = create(box, {"name": "Empty Inc."})
    clock.sleep(10)  # past the search lag: the export holds what search holds
    assert box.hubspot is not None
    box.hubspot.exports.partition_rows = 7  # a zip of several parts
    expected = listed(box, clock)
    box.reset_counts()
    dest = destination(box, clock, export_threshold=0)
    with capture_logs() as logs:
        exported = {r.id: r for r in dest.read_records(MAPPING)}
    assert exported == expected
    assert dest.last_full_read["path"] == "export"
    record = exported[tricky]
    assert record.name == TRICKY["name"]
    assert record.domain_values == ("zoe.example", "zoe.co.uk", "zoe.de")
    assert record.fields["pqa_qualified_since"] == "2026-05-01T10:20:30.456Z"
    assert record.fields["pqa_founded"] == "2020-02-29"
    assert record.fields["pqa_regions"] == "emea;apac"
    assert record.fields["description"] == TRICKY["description"]
    assert exported[formula].name == "=SUM(A1:A2)"
    assert exported[empty].fields["pqa_tier"] is None and exported[empty].domain_values == ()
    read = next(e for e in logs if e["event"] == "hubspot_export_read")
    assert read["companies"] == len(expected) and read["files"] == -(-len(expected) // 7)
    assert count(box, "hs.companies.list") == 0
    assert count(box, "hs.exports.start") == count(box, "hs.exports.download") == 1
    calls = ("hs.companies.search", "hs.exports.start", "hs.exports.status", "hs.exports.download")
    assert dest.api_calls()["read"] == sum(count(box, endpoint) for endpoint in calls)


@pytest.mark.parametrize("over", [False, True])
def test_the_threshold_picks_the_list_or_the_export(
    box: Sandbox, clock: FakeTime, over: bool
) -> None:
    assert box.hubspot is not None
    total = len(box.hubspot.ids("companies"))
    dest = destination(box, clock, export_threshold=total - 1 if over else total)
    records = list(dest.read_records(MAPPING))
    assert len(records) == total
    assert count(box, "hs.companies.search") == 1  # the count: one search's total
    assert count(box, "hs.exports.start") == (1 if over else 0)
    assert (count(box, "hs.companies.list") > 0) is not over
    assert dest.last_full_read == (
        {"path": "export", "companies": total, "task_id": dest.last_full_read.get("task_id")}
        if over
        else {"path": "list", "companies": total}
    )


def test_a_known_count_needs_no_search_and_no_threshold_means_never(
    box: Sandbox, clock: FakeTime
) -> None:
    list(destination(box, clock, export_threshold=100).read_records(MAPPING, known_records=101))
    assert count(box, "hs.companies.search") == 0 and count(box, "hs.exports.start") == 1
    box.reset_counts()
    list(destination(box, clock).read_records(MAPPING, known_records=10**6))
    assert count(box, "hs.companies.search") == count(box, "hs.exports.start") == 0


def test_an_incremental_read_never_exports(
    box: Sandbox, clock: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hubspot_connector, "SEARCH_PAGE_SIZE", 5)  # the list is cheaper here
    assert box.hubspot is not None
    total = len(box.hubspot.ids("companies"))
    dest = destination(box, clock, export_threshold=0)
    since = datetime(2000, 1, 1, tzinfo=UTC)
    records = list(dest.read_records_modified_since(MAPPING, since, known_records=total))
    assert dest.last_read_path is not None and dest.last_read_path.path == "list"
    assert len(records) == total
    assert count(box, "hs.exports.start") == 0 and count(box, "hs.companies.list") == 1


# --------------------------------------------------------------------------- falling back


def _no_scope(box: Sandbox) -> None:
    assert box.hubspot is not None
    box.hubspot.scopes.discard("crm.export")


def _cap_reached(box: Sandbox) -> None:
    assert box.hubspot is not None
    box.hubspot.exports.daily_cap = 0


def _canceled(box: Sandbox) -> None:
    assert box.hubspot is not None
    box.hubspot.exports.cancel_next = "Export failed"


def _slow(box: Sandbox) -> None:
    assert box.hubspot is not None
    box.hubspot.exports.rows_per_second = 0.01


def _download_fails(box: Sandbox) -> None:
    box.faults.add("server_error", endpoint="hs.exports.download")


def _urls_expire(box: Sandbox) -> None:
    assert box.hubspot is not None
    box.hubspot.exports.url_ttl_seconds = -1.0


@pytest.mark.parametrize(
    ("refusal", "reason"),
    [
        (_no_scope, "MISSING_SCOPES"),
        (_cap_reached, "EXPORT_LIMIT"),
        (_canceled, "EXPORT_CANCELED"),
        (_slow, "EXPORT_TIMEOUT"),
        (_download_fails, "500"),
        (_urls_expire, "EXPORT_URL_EXPIRED"),
    ],
)
def test_every_refusal_falls_back_to_the_list_and_says_why(
    box: Sandbox, clock: FakeTime, refusal: Any, reason: str
) -> None:
    expected = listed(box, clock)
    refusal(box)
    box.reset_counts()
    dest = destination(box, clock, export_threshold=0, export_timeout=300.0)
    with capture_logs() as logs:
        records = {r.id: r for r in dest.read_records(MAPPING)}
    assert records == expected
    fallback = next(e for e in logs if e["event"] == "hubspot_export_fallback")
    assert fallback["reason"] == reason
    assert fallback["exported"] == 0
    assert dest.last_full_read["path"] == "list" and count(box, "hs.companies.list") > 0
    assert box.hubspot_token not in json.dumps(logs, default=str)
    assert "/crm/v3/exports/files/" not in json.dumps(logs, default=str)  # the URL is a secret


def test_an_expired_url_is_renewed_by_polling_again(box: Sandbox, clock: FakeTime) -> None:
    assert box.hubspot is not None
    box.hubspot.exports.url_ttl_seconds = 10.0
    # The first download waits 20 s on a 429: its URL has expired when it is sent again.
    box.faults.add("rate_limit", endpoint="hs.exports.download", times=1, retry_after=20)
    expected = listed(box, clock)
    box.reset_counts()
    dest = destination(box, clock, export_threshold=0)
    with capture_logs() as logs:
        records = {r.id: r for r in dest.read_records(MAPPING)}
    assert records == expected and dest.last_full_read["path"] == "export"
    read = next(e for e in logs if e["event"] == "hubspot_export_read")
    assert read["url_renewals"] == 1
    assert count(box, "hs.exports.download") == 3


@pytest.mark.parametrize("kind", ["server_error", "drop", "answer_cut"])
def test_failed_polls_and_downloads_are_retried(box: Sandbox, clock: FakeTime, kind: str) -> None:
    box.faults.add("server_error", endpoint="hs.exports.status", times=2)
    box.faults.add(kind, endpoint="hs.exports.download", times=1)
    expected = listed(box, clock)
    dest = destination(box, clock, export_threshold=0)
    assert {r.id: r for r in dest.read_records(MAPPING)} == expected
    assert dest.last_full_read["path"] == "export"


def test_an_export_failing_midway_goes_on_with_the_list_reading_each_company_once(
    box: Sandbox, clock: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = hubspot_export._rows

    def three_then_broken(*args: Any) -> Iterator[dict[str, Any]]:
        for number, result in enumerate(rows(*args)):
            if number == 3:
                raise ExportUnavailable("row 5 has 2 cells, its header 12", code="BAD_FILE")
            yield result

    monkeypatch.setattr(hubspot_export, "_rows", three_then_broken)
    expected = listed(box, clock)
    dest = destination(box, clock, export_threshold=0)
    with capture_logs() as logs:
        ids = [r.id for r in dest.read_records(MAPPING)]
    assert sorted(ids) == sorted(expected) and len(ids) == len(set(ids))
    fallback = next(e for e in logs if e["event"] == "hubspot_export_fallback")
    assert fallback["reason"] == "BAD_FILE" and fallback["exported"] == 3


# --------------------------------------------------------------------------- the snapshot


def test_a_snapshot_read_in_full_by_export_then_incrementally_converges(
    box: Sandbox, clock: FakeTime, tmp_path: Path
) -> None:
    assert box.hubspot is not None
    hubspot = box.hubspot
    ids = hubspot.ids("companies")
    changed = next(i for i in ids if hubspot.company(i).get("pqa_tier") != "sales")
    archived = next(i for i in ids if i != changed)
    writer = destination(box, clock)
    specs = writer.describe("companies")
    created: list[str] = []

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if hubspot.exports.tasks and not created:  # people edit while HubSpot exports
            change = RecordChange(changed, {"pqa_tier": "sales"}, "x.example")
            assert writer.write("companies", [change], specs).written == [changed]
            hubspot.archive("companies", [archived])
            created.append(create(box, {"name": "Newco", "domain": "newco.example"}))

    store = SqlStateStore.open(f"sqlite:///{tmp_path / 'state.sqlite'}")
    dest = destination(box, clock, sleep=sleep, export_threshold=0)
    snap = SnapshottingDestination(
        dest, store.engine, store, clock=lambda: datetime.fromtimestamp(clock(), UTC)
    )
    full = {r.id: r for r in snap.read_records(MAPPING)}
    assert snap.last_read["mode"] == "full" and dest.last_full_read["path"] == "export"
    # The file is as of the export's start: none of the edits made while it ran is in it.
    assert full[changed].fields["pqa_tier"] != "sales"
    assert archived in full and created and created[0] not in full
    clock.sleep(120)  # the next run, past the search lag
    again = {r.id: r for r in snap.read_records(MAPPING)}
    assert snap.last_read["mode"] == "incremental" and snap.last_read["changed"] >= 2
    assert again == listed(box, clock)
    assert again[changed].fields["pqa_tier"] == "sales"


# --------------------------------------------------------------------------- exact requests


class ExportsHost:
    """A loopback HubSpot that records every request and answers one export of two companies.

    ``file`` is what the result URL serves; the list endpoint serves the same companies, so a
    read that falls back reads them too.
    """

    COMPANIES = [
        {"id": "11", "properties": {"hs_object_id": "11", "domain": "a.example", "name": "A"}},
        {"id": "12", "properties": {"hs_object_id": "12", "domain": "b.example", "name": "B"}},
    ]

    def __init__(self, file: bytes) -> None:
        self.file = file
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server handler name
                host.answer(self)

            def do_POST(self) -> None:  # noqa: N802 - the http.server handler name
                host.answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        self.requests.append((handler.command, handler.path, headers, body))
        path = handler.path.partition("?")[0]
        status, payload, kind = 200, b"", "application/json"
        if path == "/crm/v3/objects/companies/search":
            payload = json.dumps({"total": 2, "results": []}).encode()
        elif path == "/crm/v3/properties/companies":
            definitions = list(default_properties()["companies"].values())
            payload = json.dumps({"results": definitions}).encode()
        elif path == "/crm/v3/exports/export/async":
            status, payload = 202, json.dumps({"id": "99", "links": {}}).encode()
        elif path == "/crm/v3/exports/export/async/tasks/99/status":
            result = f"{self.url}/signed/companies.csv?X-Amz-Signature=s3cr3t-signature"
            payload = json.dumps({"status": "COMPLETE", "result": result}).encode()
        elif path == "/signed/companies.csv":
            payload, kind = self.file, "text/csv"
        elif path == "/crm/v3/objects/companies":
            payload = json.dumps({"results": self.COMPANIES}).encode()
        else:
            status, payload = 404, b"{}"
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def paths(self) -> list[str]:
        return [f"{method} {path.partition('?')[0]}" for method, path, _, _ in self.requests]

    def __enter__(self) -> ExportsHost:
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


HEADER = (
    "hs_object_id,domain,hs_additional_domains,name,hs_lastmodifieddate,hs_parent_company_id,"
    "hubspot_owner_id,pqa_score\r\n"
)
GOOD_FILE = (
    "\ufeff" + HEADER + "11,a.example,,A,1790000000123,,,7\r\n12,b.example,,B,,,,\r\n"
).encode()


def test_the_requests_sent_and_the_token_kept_from_the_file_host(clock: FakeTime) -> None:
    mapping = DestinationMapping(
        destination="hubspot",
        object="companies",
        match=MatchRule(domain_fields=("domain", "hs_additional_domains")),
        fields=(FieldMapping("pqa_score", "score"),),
    )
    with ExportsHost(GOOD_FILE) as host, capture_logs() as logs:
        dest = HubSpotDestination(
            "pat-na1-exports-test",
            base_url=host.url,
            sleep=clock.sleep,
            clock=clock,
            export_threshold=1,
        )
        records = {r.id: r for r in dest.read_records(mapping)}
    assert host.paths() == [
        "POST /crm/v3/objects/companies/search",
        "GET /crm/v3/properties/companies",
        "POST /crm/v3/exports/export/async",
        "GET /crm/v3/exports/export/async/tasks/99/status",
        "GET /signed/companies.csv",
    ]
    _, _, count_headers, count_body = host.requests[0]
    assert json.loads(count_body) == {
        "filterGroups": [],
        "properties": ["hs_object_id"],
        "limit": 1,
    }
    _, _, start_headers, start_body = host.requests[2]
    assert json.loads(start_body) == {
        "exportType": "VIEW",
        "exportName": "pls-sync companies",
        "format": "CSV",
        "language": "EN",
        "objectType": "COMPANY",
        "objectProperties": [
            "hs_object_id",
            "domain",
            "hs_additional_domains",
            "name",
            "hs_lastmodifieddate",
            "hs_parent_company_id",
            "hubspot_owner_id",
            "pqa_score",
        ],
        "exportInternalValuesOptions": ["NAMES", "VALUES"],
    }
    assert start_headers["content-type"] == "application/json"
    for _, _, headers, _ in host.requests[:4]:
        assert headers["authorization"] == "Bearer pat-na1-exports-test"
    assert "authorization" not in host.requests[4][2]
    assert records["11"].fields == {"pqa_score": "7"}
    assert records["11"].last_modified == datetime(2026, 9, 21, 14, 13, 20, 123000, tzinfo=UTC)
    assert records["12"].last_modified is None and records["12"].fields == {"pqa_score": None}
    assert "s3cr3t-signature" not in json.dumps(logs, default=str)


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _corrupt(data: bytes) -> bytes:
    """``data`` (a zip) with a byte of its first member's compressed data flipped."""
    spot = data.index(b"PK\x03\x04") + 30 + len("companies-1.csv") + 2
    return data[:spot] + bytes([data[spot] ^ 0xFF]) + data[spot + 1 :]


@pytest.mark.parametrize(
    ("file", "reason"),
    [
        (b"hs_object_id,domain\r\n11,a.example\r\n", "BAD_FILE"),  # columns missing
        (GOOD_FILE.replace(b"12,b.example,,B,,,,", b"12,b.example"), "BAD_FILE"),
        (b"\xff\xfe" + GOOD_FILE, "BAD_FILE"),  # not UTF-8
        (_corrupt(_zip({"companies-1.csv": GOOD_FILE * 50})), "BAD_FILE"),
        (_zip({"readme.txt": b"no csv here"}), "BAD_FILE"),
    ],
)
def test_an_unreadable_file_falls_back_to_the_list(
    clock: FakeTime, file: bytes, reason: str
) -> None:
    mapping = DestinationMapping(
        destination="hubspot",
        object="companies",
        match=MatchRule(domain_fields=("domain",)),
        fields=(FieldMapping("pqa_score", "score"),),
    )
    with ExportsHost(file) as host, capture_logs() as logs:
        dest = HubSpotDestination(
            "pat-na1-exports-test",
            base_url=host.url,
            sleep=clock.sleep,
            clock=clock,
            export_threshold=1,
        )
        records = sorted(r.id for r in dest.read_records(mapping))
    assert records == ["11", "12"]
    assert host.paths()[-1] == "GET /crm/v3/objects/companies"
    fallback = next(e for e in logs if e["event"] == "hubspot_export_fallback")
    assert fallback["reason"] == reason


def test_a_zip_of_parts_with_a_record_id_column_is_read_whole(clock: FakeTime) -> None:
    labelled = GOOD_FILE.replace(b"hs_object_id,", b"Record ID,", 1)
    second = ("\ufeff" + HEADER + "13,c.example,,C,,,,3\r\n").encode()
    file = _zip({"companies-1.csv": labelled, "companies-2.csv": second})
    mapping = DestinationMapping(
        destination="hubspot",
        object="companies",
        match=MatchRule(domain_fields=("domain",)),
        fields=(FieldMapping("pqa_score", "score"),),
    )
    with ExportsHost(file) as host:
        dest = HubSpotDestination(
            "pat-na1-exports-test",
            base_url=host.url,
            sleep=clock.sleep,
            clock=clock,
            export_threshold=1,
        )
        records = {r.id: r for r in dest.read_records(mapping)}
    assert sorted(records) == ["11", "12", "13"] and dest.last_full_read["path"] == "export"
    assert records["13"].fields == {"pqa_score": "3"}
