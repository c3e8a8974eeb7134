"""Salesforce Bulk API 2.0 ingest: CSV building, the job lifecycle and its per-record results.

``SalesforceDestination.write`` switches here above its ``bulk_threshold``. One ingest job per
at most ``max_job_bytes`` of CSV: create (update, CSV, LF), upload, close (UploadComplete), poll
with backoff until JobComplete / Failed / Aborted (a job answers InProgress for a while first),
then read the successful, failed and (for a job that did not complete) unprocessed rows. Result
rows come in no particular order: each is matched to its change by id (the echoed ``Id`` column
or ``sf__Id``), never by position. A row lock reported through a trigger
(CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY with UNABLE_TO_LOCK_ROW in the message) is a lock.

Every HTTP request goes through a ``call`` function the destination supplies: it counts the
request, translates errors, re-authenticates once on an expired session and retries transients,
rebuilding ``Bulk2Api`` on the session current at each attempt. simple-salesforce's own
``_Bulk2Client`` is not used: it sends no request timeout, waits with ``time.sleep`` for up to
24 hours, raises away the job info on failure and decodes CSV results with the HTTP default
charset (ISO-8859-1 for text/csv) instead of UTF-8. Its ``call_salesforce`` is, so errors are the
same ``SalesforceError`` subclasses the REST path translates.

References (Bulk API 2.0 Developer Guide):
https://developer.salesforce.com/docs/atlas.en-us.220.0.api_bulk_v2.meta/api_bulk_v2/create_job.htm
https://developer.salesforce.com/docs/platform/api-asynch/guide/upload-job-data.html
https://developer.salesforce.com/docs/atlas.en-us.api_bulk_v2.meta/api_bulk_v2/close_job.htm
https://developer.salesforce.com/docs/platform/api-asynch/guide/get-job-info.html
https://developer.salesforce.com/docs/platform/api-asynch/guide/bulk-api-2-job-states.md
https://developer.salesforce.com/docs/platform/api-asynch/guide/get-job-successful-results.html
https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/get_job_failed_results.htm
https://developer.salesforce.com/docs/platform/api-asynch/guide/get-job-unprocessed-results.html
https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/datafiles_prepare_csv.htm
https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_bulk_v2/datafiles_csv_valid_record_rows.htm
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlparse

import structlog
from simple_salesforce import Salesforce
from simple_salesforce.util import call_salesforce

from connectors.salesforce import LOCK_CODES, format_value, lock_code
from pls_sync.errors import AuthError, PlsSyncError, RetriableError, redact
from pls_sync.models import FieldSpec, RecordChange, RecordRejection, WriteResult

log = structlog.get_logger(__name__)

# "Empty field values are ignored when you update records. To set a field value to null, use
# a field value of #N/A." (Valid CSV Record Rows)
CLEAR = "#N/A"
# Uploads are base64-encoded server side (+~50 %) against a 150 MB ceiling, hence "upload data
# that doesn't exceed 100 MB"; 150,000,000 characters is never reached first (1 char >= 1 byte).
MAX_JOB_BYTES = 100_000_000
TERMINAL_STATES = frozenset({"JobComplete", "Failed", "Aborted"})
# create + upload + close + one poll + successful + failed results: the least a job costs.
CALLS_PER_JOB = 6

_ERROR = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s*:(.*)$", re.DOTALL)
_ERROR_FIELDS = re.compile(r"^(.*):([^:]*?)\s*--\s*$", re.DOTALL)

BulkCall = Callable[[Callable[["Bulk2Api"], Any]], Any]


# --- CSV -------------------------------------------------------------------------------------


def _plain_number(value: float) -> str:
    text = repr(value)
    if "e" in text or "E" in text:
        # Salesforce may accept scientific notation for doubles only; spell every number out.
        text = format(Decimal(text), "f")
    return text


def bulk_value(value: Any, spec: FieldSpec | None) -> str:
    """One CSV cell for a changed field: ``#N/A`` clears it (an empty cell would leave it as is).

    Values are formatted as for sObject REST (``format_value``), then spelt for CSV: booleans
    ``true``/``false``, numbers in plain decimal, datetimes ``2026-11-22T10:00:00.000Z``, dates
    ``YYYY-MM-DD``. A value that formats to nothing (None, NaN, "" or an empty list) clears.
    """
    formatted = format_value(value, spec)
    if formatted is None or formatted == "":
        return CLEAR
    if isinstance(formatted, bool):
        return "true" if formatted else "false"
    if isinstance(formatted, int):
        return str(formatted)
    if isinstance(formatted, float):
        return _plain_number(formatted)
    return str(formatted)


@dataclass(frozen=True, slots=True)
class JobData:
    """The CSV of one ingest job and the changes it carries, in row order."""

    csv: str
    changes: tuple[RecordChange, ...]


_NEEDS_QUOTES = re.compile(r'[,"\r\n]')


def _cell(text: str) -> str:
    # RFC 4180 by hand: csv.QUOTE_MINIMAL with an LF terminator leaves a bare CR unquoted,
    # which a reader takes for a line break.
    if _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def _render(rows: Iterable[Sequence[str]]) -> str:
    return "".join(",".join(_cell(cell) for cell in row) + "\n" for row in rows)


def build_jobs(
    changes: Sequence[RecordChange],
    specs: Mapping[str, FieldSpec],
    *,
    max_job_bytes: int = MAX_JOB_BYTES,
) -> list[JobData]:
    """Split ``changes`` into job CSVs of at most ``max_job_bytes`` (UTF-8) each.

    The header is ``Id`` plus the union of the changed fields (first-seen order). A record
    that does not change a column gets an empty cell (left unchanged); one that clears it
    gets ``#N/A``.
    """
    columns: list[str] = []
    seen: set[str] = set()
    for change in changes:
        for name in change.fields:
            if name not in seen:
                seen.add(name)
                columns.append(name)
    header = _render([["Id", *columns]])
    header_bytes = len(header.encode("utf-8"))
    jobs: list[JobData] = []
    lines: list[str] = []
    members: list[RecordChange] = []
    size = header_bytes
    for change in changes:
        row = [change.record_id] + [
            bulk_value(change.fields[name], specs.get(name)) if name in change.fields else ""
            for name in columns
        ]
        line = _render([row])
        line_bytes = len(line.encode("utf-8"))
        if members and size + line_bytes > max_job_bytes:
            jobs.append(JobData(header + "".join(lines), tuple(members)))
            lines, members, size = [], [], header_bytes
        lines.append(line)
        members.append(change)
        size += line_bytes
    if members:
        jobs.append(JobData(header + "".join(lines), tuple(members)))
    return jobs


def parse_results(text: str) -> list[dict[str, str]]:
    """Rows of a results CSV as dicts; an empty body (no failures, say) is no rows."""
    if not text.strip():
        return []
    return list(csv.DictReader(io.StringIO(text, newline="")))


def parse_bulk_error(text: str) -> tuple[str, str, tuple[str, ...]]:
    """(code, message, fields) from an ``sf__Error`` cell: ``CODE:message[:field, field --]``."""
    match = _ERROR.match(text or "")
    if not match:
        return "UNKNOWN_ERROR", (text or "").strip(), ()
    code, rest = match.group(1), match.group(2)
    fields: tuple[str, ...] = ()
    tail = _ERROR_FIELDS.match(rest)
    if tail:
        rest = tail.group(1)
        fields = tuple(name.strip() for name in tail.group(2).split(",") if name.strip())
    return code, rest.strip(), fields


# --- HTTP ------------------------------------------------------------------------------------


class Bulk2Api:
    """The Bulk API 2.0 ingest resources, on one Salesforce session."""

    def __init__(self, sf: Salesforce, timeout: float) -> None:
        """Bind to ``sf``'s session id, ``requests`` session and ``jobs/`` URL."""
        self._base = f"{sf.bulk2_url}ingest/"
        self._session = sf.session
        self._session_id = str(sf.session_id)
        self._timeout = timeout
        parsed = urlparse(sf.base_url)
        self._root = f"{parsed.scheme}://{parsed.netloc}/"

    def _headers(self, content_type: str, accept: str) -> dict[str, str]:
        return {
            "Authorization": "Bearer " + self._session_id,
            "Content-Type": content_type,
            "Accept": accept,
        }

    def _json(self, method: str, url: str, body: Mapping[str, Any] | None = None) -> Any:
        response = call_salesforce(
            url=url,
            method=method,
            session=self._session,
            headers=self._headers("application/json", "application/json"),
            data=json.dumps(body) if body is not None else None,
            timeout=self._timeout,
        )
        return response.json() if response.content else {}

    def create_job(self, object_name: str) -> Any:
        """POST ``jobs/ingest/``: an update job taking comma-separated, LF-ended CSV."""
        body = {
            "object": object_name,
            "contentType": "CSV",
            "operation": "update",
            "lineEnding": "LF",
            "columnDelimiter": "COMMA",
        }
        return self._json("POST", self._base, body)

    def upload(self, job_id: str, data: str, content_url: str | None = None) -> None:
        """PUT the CSV to the job's ``contentUrl`` (``jobs/ingest/<id>/batches``); 201 expected."""
        url = f"{self._base}{job_id}/batches"
        # Only a relative path on this instance: the session id never goes to another host.
        if content_url and content_url.startswith("services/") and ".." not in content_url:
            url = self._root + content_url
        call_salesforce(
            url=url,
            method="PUT",
            session=self._session,
            headers=self._headers("text/csv", "application/json"),
            data=data.encode("utf-8"),
            timeout=self._timeout,
        )

    def set_state(self, job_id: str, state: str) -> Any:
        """PATCH ``jobs/ingest/<id>`` to ``UploadComplete`` (close) or ``Aborted``."""
        return self._json("PATCH", f"{self._base}{job_id}", {"state": state})

    def job_info(self, job_id: str) -> Any:
        """GET ``jobs/ingest/<id>``: state, counts and errorMessage."""
        return self._json("GET", f"{self._base}{job_id}")

    def results(self, job_id: str, kind: str) -> str:
        """GET ``successfulResults/``, ``failedResults/`` or ``unprocessedrecords/`` as text."""
        response = call_salesforce(
            url=f"{self._base}{job_id}/{kind}/",
            method="GET",
            session=self._session,
            headers=self._headers("application/json", "text/csv"),
            timeout=self._timeout,
        )
        return response.content.decode("utf-8-sig", errors="replace")


# --- the job lifecycle -----------------------------------------------------------------------


@dataclass(slots=True)
class JobOutcome:
    """What one job did: its final state and the records per outcome."""

    state: str
    written: list[str] = field(default_factory=list)
    rejected: list[RecordRejection] = field(default_factory=list)
    locked: list[tuple[RecordChange, RecordRejection]] = field(default_factory=list)
    not_attempted: list[str] = field(default_factory=list)


class BulkJobTimeout(RetriableError):
    """The job did not reach a final state within the allowed wait."""


class BulkIngest:
    """Runs ingest jobs through ``call`` (see the module docstring)."""

    def __init__(
        self,
        call: BulkCall,
        *,
        sleep: Callable[[float], None],
        poll_interval: float = 1.0,
        max_poll_interval: float = 30.0,
        timeout: float = 3600.0,
        secrets: Sequence[str] = (),
    ) -> None:
        """``timeout`` bounds the total of the waits between polls (the injected sleep's)."""
        self._call = call
        self._sleep = sleep
        self._poll_interval = poll_interval
        self._max_poll_interval = max_poll_interval
        self._timeout = timeout
        self._secrets = list(secrets)

    def run(self, object_name: str, job: JobData) -> JobOutcome:
        """Create, upload, close, wait and read results for one job.

        Raises ``RetriableError`` (``BulkJobTimeout`` when the wait runs out) and the fatal
        errors ``call`` raises; a job ending Failed or Aborted is an outcome, not an error.
        """
        info = self._call(lambda api: api.create_job(object_name))
        job_id = str(info.get("id") or "") if isinstance(info, Mapping) else ""
        if not job_id:
            raise RetriableError("Salesforce created a Bulk API 2.0 job without an id")
        content_url = info.get("contentUrl") if isinstance(info.get("contentUrl"), str) else None
        closed = False
        try:
            self._call(lambda api: api.upload(job_id, job.csv, content_url))
            self._call(lambda api: api.set_state(job_id, "UploadComplete"))
            closed = True
            final = self._wait(job_id)
        except PlsSyncError as exc:
            # Nothing may keep running after we report these records as not attempted (an
            # expired session cannot abort anything).
            if not isinstance(exc, AuthError):
                self._abort(job_id, closed)
            raise
        state = str(final.get("state"))
        outcome = JobOutcome(state=state)
        if state != "JobComplete":
            log.warning(
                "salesforce_bulk_job_ended",
                job_id=job_id,
                state=state,
                error=redact(str(final.get("errorMessage") or ""), self._secrets),
                processed=final.get("numberRecordsProcessed"),
                failed=final.get("numberRecordsFailed"),
            )
        self._collect(job_id, job, state, outcome)
        return outcome

    def _wait(self, job_id: str) -> Mapping[str, Any]:
        waited = 0.0
        delay = self._poll_interval
        while True:
            wait = min(delay, max(self._timeout - waited, 0.0))
            if wait <= 0:
                raise BulkJobTimeout(
                    f"Salesforce Bulk API 2.0 job {job_id} did not finish within "
                    f"{self._timeout:g} s",
                    code="BULK_JOB_TIMEOUT",
                )
            self._sleep(wait)
            waited += wait
            delay = min(delay * 2, self._max_poll_interval)
            info = self._call(lambda api: api.job_info(job_id))
            if isinstance(info, Mapping) and info.get("state") in TERMINAL_STATES:
                return info

    def _abort(self, job_id: str, closed: bool) -> None:
        try:
            self._call(lambda api: api.set_state(job_id, "Aborted"))
        except Exception as exc:  # noqa: BLE001 - best effort: the job may have just finished
            log.warning(
                "salesforce_bulk_abort_failed",
                job_id=job_id,
                closed=closed,
                error=redact(str(exc), self._secrets),
            )

    def _collect(self, job_id: str, job: JobData, state: str, outcome: JobOutcome) -> None:
        by_id: dict[str, RecordChange] = {}
        for change in job.changes:
            by_id.setdefault(change.record_id, change)
            by_id.setdefault(change.record_id[:15], change)

        def find(row: Mapping[str, str]) -> RecordChange | None:
            # The echoed Id column is what we sent; sf__Id may be the 18-character form.
            for key in (row.get("Id"), row.get("sf__Id")):
                if key:
                    change = by_id.get(key) or by_id.get(key[:15])
                    if change is not None:
                        return change
            return None

        done: set[str] = set()
        kinds = ["successfulResults", "failedResults"]
        if state != "JobComplete":
            kinds.append("unprocessedrecords")
        for kind in kinds:
            text = self._call(functools.partial(_results, job_id=job_id, kind=kind))
            for row in parse_results(text):
                found = find(row)
                if found is None or found.record_id in done:
                    continue
                change = found
                done.add(change.record_id)
                if kind == "successfulResults":
                    outcome.written.append(change.record_id)
                elif kind == "failedResults":
                    code, message, fields = parse_bulk_error(row.get("sf__Error", ""))
                    code = lock_code(code, message) or code
                    rejection = RecordRejection(
                        record_id=change.record_id,
                        code=code,
                        message=redact(message or code, self._secrets),
                        fields=fields,
                        retriable=code in LOCK_CODES,
                    )
                    if rejection.retriable:
                        outcome.locked.append((change, rejection))
                    else:
                        outcome.rejected.append(rejection)
                else:
                    outcome.not_attempted.append(change.record_id)
        # Rows no results file mentions (results are not kept past the daily batch allocation).
        for change in job.changes:
            if change.record_id not in done:
                done.add(change.record_id)
                outcome.not_attempted.append(change.record_id)


def _results(api: Bulk2Api, job_id: str, kind: str) -> str:
    return api.results(job_id, kind)


def apply_outcome(result: WriteResult, outcome: JobOutcome) -> None:
    """Add a job's written, rejected and not-attempted records to ``result`` (locks excluded)."""
    result.written.extend(outcome.written)
    result.rejected.extend(outcome.rejected)
    result.not_attempted.extend(outcome.not_attempted)
