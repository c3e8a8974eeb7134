"""The sandbox's HubSpot CRM exports API: start an export, poll it, download its file.

``POST /crm/v3/exports/export/async`` starts an export and answers 202 ``{"id", "links"}``;
``GET /crm/v3/exports/export/async/tasks/{taskId}/status`` answers ``status`` (PENDING,
PROCESSING, COMPLETE or CANCELED), ``requestedAt``, ``startedAt``, ``completedAt``,
``numErrors``, ``errors`` and, once COMPLETE, ``result``: the URL of the file. HubSpot's Exports
guide (https://developers.hubspot.com/docs/api-reference/legacy/crm/exports/guide) says, and
the sandbox does:

* "The download URL will expire five minutes after the completed request. Once expired, you can
  perform another GET request to generate a new unique URL." Every status answer of a
  COMPLETE export names a new URL, valid ``url_ttl_seconds`` (300) on the API's clock.
* "Prior to expiration, an export's download URL can be accessed without any additional
  authorization." The file is served at ``/crm/v3/exports/files/<token>/<name>`` of the
  sandbox's own host (HubSpot's file host is another one): no token is asked for, none is
  counted against the rate limits, and a request that carries an ``Authorization`` header is
  refused with a 400, as a pre-signed storage URL refuses a second authentication, so a
  client leaking its bearer token to the file host fails here. An expired or unknown URL is a
  403.
* "You can complete up to thirty exports within a rolling 24 hour window, and one export at a
  time. Additional exports will be queued until the previous export is completed." An export
  waits (PENDING) until the one before it has finished. The docs do not say how the 31st start
  is refused: the sandbox answers 429 ``{"status": "error", "message": ..., "category":
  "RATE_LIMITS"}`` without a ``policyName`` (``daily_cap``).
* "Exports that exceed one million rows will now be split into multiple files (each up to one
  million rows) bundled together in a zip file" (changelog, "Large Export Partitioning and
  Association Limits"), and "CSV files are also automatically zipped if the file is greater than
  2MB, even if the file has less than 1,000,000 rows": ``partition_rows`` and ``zip_over_bytes``
  (knobs, so a test crosses them with a few rows). Each part has its own header row.
* "the user installing the app must be a Super Admin to grant the crm.export scope": without
  ``crm.export`` in ``HubSpotApi.scopes`` both endpoints answer 403 MISSING_SCOPES. A task id
  that is not this portal's answers the 403 HubSpot answers for it ("Permission to get export
  file cannot be granted for exportId ... and portalId ...").

What the docs leave open, done conservatively: the file holds the records as the search index
had them when the export was requested (a write within the search lag before it may be
missing; a company changed after it is not in it). The export takes ``pending_seconds`` in
PENDING, then ``rows / rows_per_second`` in PROCESSING, on the API's clock. CSV is UTF-8 with a
byte-order mark, RFC 4180 quoting and CRLF row ends; the first column is the record id
(``hs_object_id`` with internal names, ``Record ID`` without). With ``exportInternalValuesOptions``
``VALUES``, dates and datetimes are epoch milliseconds ("timestamps instead of human-readable
dates") and enumerations their internal values (``;`` between a checkbox's values); without it,
enumerations are their labels. Only ``format`` CSV and ``exportType`` VIEW are served (a list
export names a list the sandbox does not have). ``cancel_next`` ends the next export CANCELED.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pls_sync.sandbox.http import Request, Response
from pls_sync.sandbox.hubspot import (
    HubSpotApi,
    HubSpotError,
    iso_ms,
    missing_scope,
    parse_moment,
)

EXPORTS_PREFIX = "/crm/v3/exports/"
START_PATH = "/crm/v3/exports/export/async"
TASKS_PREFIX = "/crm/v3/exports/export/async/tasks/"
FILES_PREFIX = "/crm/v3/exports/files/"
EXPORT_SCOPE = "crm.export"
DAILY_CAP = 30
DAY_SECONDS = 86_400.0
URL_TTL_SECONDS = 300.0
PARTITION_ROWS = 1_000_000
ZIP_OVER_BYTES = 2_000_000
DEFAULT_PENDING_SECONDS = 1.0
DEFAULT_ROWS_PER_SECOND = 5_000.0
# "you can include a maximum of three filterGroups with up to three filters in each group"
MAX_FILTER_GROUPS = 3
MAX_FILTERS_PER_GROUP = 3
FORMATS = ("CSV", "XLSX", "XLS")
INTERNAL_OPTIONS = ("NAMES", "VALUES")
# The name or id of each object type, as ``objectType`` may give it.
OBJECT_TYPES = {
    "COMPANY": "companies",
    "0-2": "companies",
    "CONTACT": "contacts",
    "0-1": "contacts",
    "DEAL": "deals",
    "0-3": "deals",
    "TASK": "tasks",
    "0-27": "tasks",
}
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(slots=True)
class ExportTask:
    """One export: what it holds (taken when requested) and when it runs, on the API's clock."""

    id: str
    name: str
    header: list[str]
    rows: list[list[str]]
    requested_at: float
    started_at: float
    completed_at: float
    canceled: str | None = None
    file: tuple[str, bytes, str] | None = None  # name, bytes, content type
    links: dict[str, float] = field(default_factory=dict)  # token -> expiry

    def status(self, now: float) -> str:
        """PENDING, PROCESSING, COMPLETE or CANCELED at ``now``."""
        if now < self.started_at:
            return "PENDING"
        if now < self.completed_at:
            return "PROCESSING"
        return "CANCELED" if self.canceled else "COMPLETE"


def _stamp(seconds: float) -> str:
    return iso_ms(datetime.fromtimestamp(seconds, tz=UTC))


def _csv_bytes(header: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


class HubSpotExports:
    """The exports API of one ``HubSpotApi``, sharing its lock, clock, scopes and records.

    Knobs (attributes): ``pending_seconds``, ``rows_per_second``, ``daily_cap``,
    ``partition_rows``, ``zip_over_bytes``, ``url_ttl_seconds``; ``cancel_next`` (a reason, or
    None) ends the next export CANCELED with that error. ``started`` keeps every start body.
    """

    def __init__(self, api: HubSpotApi) -> None:
        """Serve exports of ``api``'s portal."""
        self.api = api
        self.pending_seconds = DEFAULT_PENDING_SECONDS
        self.rows_per_second = DEFAULT_ROWS_PER_SECOND
        self.daily_cap = DAILY_CAP
        self.partition_rows = PARTITION_ROWS
        self.zip_over_bytes = ZIP_OVER_BYTES
        self.url_ttl_seconds = URL_TTL_SECONDS
        self.cancel_next: str | None = None
        self.started: list[dict[str, Any]] = []
        self.tasks: dict[str, ExportTask] = {}
        self._next_id = 47_800_000_000
        self._files: dict[str, str] = {}  # url token -> task id

    # ----------------------------------------------------------------- routing

    @staticmethod
    def handles(path: str) -> bool:
        """Whether ``path`` is an exports endpoint or an export file."""
        return path.startswith(EXPORTS_PREFIX)

    @staticmethod
    def serves_file(path: str) -> bool:
        """Whether ``path`` is an export file's (pre-signed) URL: no token, no rate limit."""
        return path.startswith(FILES_PREFIX)

    @staticmethod
    def endpoint(request: Request) -> str:
        """``hs.exports.start``, ``hs.exports.status``, ``hs.exports.download`` (or ``.other``)."""
        path = request.path.rstrip("/")
        if path.startswith(FILES_PREFIX):
            return "hs.exports.download"
        if path == START_PATH:
            return "hs.exports.start"
        if path.startswith(TASKS_PREFIX) and path.endswith("/status"):
            return "hs.exports.status"
        return "hs.exports.other"

    def dispatch(self, request: Request) -> tuple[int, Any]:
        """Answer an (authenticated, rate-limited) exports API request."""
        method = request.method.upper()
        path = request.path.rstrip("/")
        if path == START_PATH:
            if method != "POST":
                raise HubSpotError(405, "VALIDATION_ERROR", f"HTTP {method} is not supported")
            self._check_scope()
            return 202, self._start(request)
        if path.startswith(TASKS_PREFIX) and path.endswith("/status"):
            if method != "GET":
                raise HubSpotError(405, "VALIDATION_ERROR", f"HTTP {method} is not supported")
            self._check_scope()
            task_id = path[len(TASKS_PREFIX) : -len("/status")]
            return 200, self._status(task_id, request.headers.get("host", "api.hubapi.com"))
        raise HubSpotError(404, "OBJECT_NOT_FOUND", f"No route for {request.path}")

    def download(self, request: Request) -> Response:
        """The file behind a result URL: 200 with the bytes, 403 once expired, 400 with a token."""
        if request.headers.get("authorization"):
            return Response(
                400,
                "InvalidArgument: Only one auth mechanism allowed; the URL is pre-signed, "
                "an Authorization header is not accepted",
            )
        token = request.path[len(FILES_PREFIX) :].split("/", 1)[0]
        task = self.tasks.get(self._files.get(token, ""))
        if task is None or task.file is None:
            return Response(403, "AccessDenied: Access Denied")
        if self.api.clock() > task.links.get(token, 0.0):
            return Response(403, "AccessDenied: Request has expired")
        name, data, content_type = task.file
        return Response(
            200,
            data,
            {
                "Content-Type": content_type,
                "Content-Disposition": f'attachment; filename="{name}"',
            },
        )

    # ----------------------------------------------------------------- starting

    def _check_scope(self) -> None:
        if EXPORT_SCOPE not in self.api.scopes:
            raise missing_scope(EXPORT_SCOPE)

    def _start(self, request: Request) -> dict[str, Any]:
        body = self._body(request)
        object_type, names, internal = self._validated(body)
        now = self.api.clock()
        recent = [t for t in self.tasks.values() if now - t.requested_at < DAY_SECONDS]
        if len(recent) >= self.daily_cap:
            raise HubSpotError(
                429,
                "RATE_LIMITS",
                f"You have reached the limit of {self.daily_cap} exports within a rolling "
                "24 hour window.",
            )
        self.started.append(body)
        records = self._matching(object_type, body.get("publicCrmSearchRequest"))
        header = self._header(object_type, names, "NAMES" in internal)
        rows = [self._row(object_type, r, names, "VALUES" in internal) for r in records]
        busy_until = max((t.completed_at for t in self.tasks.values()), default=now)
        started_at = max(now + self.pending_seconds, busy_until)
        canceled, self.cancel_next = self.cancel_next, None
        duration = 0.0 if canceled else len(rows) / max(self.rows_per_second, 1e-9)
        self._next_id += 1
        task = ExportTask(
            id=str(self._next_id),
            name=str(body.get("exportName")),
            header=header,
            rows=rows,
            requested_at=now,
            started_at=started_at,
            completed_at=started_at + duration,
            canceled=canceled,
        )
        self.tasks[task.id] = task
        return {"id": task.id, "links": {"status": f"{TASKS_PREFIX}{task.id}/status"}}

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise HubSpotError(400, "VALIDATION_ERROR", f"Invalid input JSON: {exc}") from None
        if not isinstance(body, dict):
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
        return body

    def _validated(self, body: dict[str, Any]) -> tuple[str, list[str], set[str]]:
        """(object type, property names, internal-value options) of a start body, or a 400."""
        export_type = str(body.get("exportType") or "")
        if export_type == "LIST":
            raise HubSpotError(
                400, "VALIDATION_ERROR", f"List {body.get('listId')!r} was not found"
            )
        if export_type != "VIEW":
            raise HubSpotError(400, "VALIDATION_ERROR", "exportType must be VIEW or LIST")
        file_format = str(body.get("format") or "").upper()
        if file_format not in FORMATS:
            raise HubSpotError(400, "VALIDATION_ERROR", "format must be one of XLSX, CSV, XLS")
        if file_format != "CSV":
            raise HubSpotError(400, "VALIDATION_ERROR", "the sandbox writes CSV exports only")
        if not isinstance(body.get("exportName"), str) or not body["exportName"].strip():
            raise HubSpotError(400, "VALIDATION_ERROR", "exportName is required")
        object_type = OBJECT_TYPES.get(str(body.get("objectType") or "").upper())
        if object_type is None:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Unable to infer object type from: {body.get('objectType')}",
            )
        names = body.get("objectProperties")
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise HubSpotError(400, "VALIDATION_ERROR", "objectProperties must list properties")
        definitions = self.api.properties[object_type]
        unknown = [name for name in names if name not in definitions]
        if unknown:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Properties do not exist: {', '.join(unknown)}",
                context={"objectProperties": unknown},
            )
        options = body.get("exportInternalValuesOptions") or []
        if not isinstance(options, list) or not set(map(str, options)) <= set(INTERNAL_OPTIONS):
            raise HubSpotError(
                400, "VALIDATION_ERROR", "exportInternalValuesOptions takes NAMES and VALUES"
            )
        return object_type, list(dict.fromkeys(names)), set(map(str, options))

    def _matching(self, object_type: str, search: Any) -> list[dict[str, Any]]:
        """The indexed records a view's ``publicCrmSearchRequest`` keeps, in id order."""
        records = self.api._searchable(object_type)
        groups = self._filter_groups(search)
        if not groups:
            return records
        return [
            record
            for record in records
            if any(all(self.api._matches(object_type, record, f) for f in g) for g in groups)
        ]

    @staticmethod
    def _filter_groups(search: Any) -> list[list[dict[str, Any]]]:
        """``filterGroups`` (OR of ANDs) or ``filters`` (one AND group), ``property`` accepted
        for ``propertyName`` as the guide's example writes it; at most 3 groups of 3."""
        if not isinstance(search, dict):
            return []
        raw_groups = search.get("filterGroups")
        if raw_groups is None and search.get("filters"):
            raw_groups = [{"filters": search["filters"]}]
        groups: list[list[dict[str, Any]]] = []
        for group in raw_groups or []:
            filters = [dict(f) for f in (group.get("filters") or []) if isinstance(f, dict)]
            for flt in filters:
                flt.setdefault("propertyName", flt.get("property"))
            groups.append(filters)
        if len(groups) > MAX_FILTER_GROUPS or any(len(g) > MAX_FILTERS_PER_GROUP for g in groups):
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                "An export takes at most three filterGroups of three filters each",
            )
        return groups

    def _header(self, object_type: str, names: list[str], internal: bool) -> list[str]:
        definitions = self.api.properties[object_type]
        columns = ["hs_object_id", *(n for n in names if n != "hs_object_id")]
        if internal:
            return columns
        return ["Record ID", *(definitions[n]["label"] for n in columns[1:])]

    def _row(
        self, object_type: str, record: dict[str, Any], names: list[str], internal: bool
    ) -> list[str]:
        definitions = self.api.properties[object_type]
        stored = record["properties"]
        cells = [str(record["id"])]
        for name in names:
            if name == "hs_object_id":
                continue
            cells.append(_cell(definitions[name], str(stored.get(name) or ""), internal))
        return cells

    # ----------------------------------------------------------------- status and files

    def _status(self, task_id: str, host: str) -> dict[str, Any]:
        if not task_id.isdigit():
            raise HubSpotError(
                400, "VALIDATION_ERROR", "Unable to parse value for path parameter: taskId"
            )
        task = self.tasks.get(task_id)
        if task is None:
            raise HubSpotError(
                403,
                "FORBIDDEN",
                f"Permission to get export file cannot be granted for exportId {task_id} "
                f"and portalId {self.api.portal_id}",
            )
        now = self.api.clock()
        status = task.status(now)
        answer: dict[str, Any] = {
            "status": status,
            "requestedAt": _stamp(task.requested_at),
            "links": {},
        }
        if status != "PENDING":
            answer["startedAt"] = _stamp(task.started_at)
        if status in ("COMPLETE", "CANCELED"):
            answer["completedAt"] = _stamp(task.completed_at)
        if status == "CANCELED":
            answer["numErrors"] = 1
            answer["errors"] = [
                {"status": "error", "category": "EXPORT_FAILED", "message": task.canceled}
            ]
        if status == "COMPLETE":
            answer["numErrors"] = 0
            answer["result"] = self._new_url(task, now, host)
        return answer

    def _new_url(self, task: ExportTask, now: float, host: str) -> str:
        """A new unique download URL for ``task``'s file, valid ``url_ttl_seconds`` from now."""
        if task.file is None:
            task.file = self._build_file(task)
            task.rows = []  # the file holds them now
        token = uuid.uuid4().hex
        task.links[token] = now + self.url_ttl_seconds
        self._files[token] = task.id
        return f"http://{host}{FILES_PREFIX}{token}/{task.file[0]}"

    def _build_file(self, task: ExportTask) -> tuple[str, bytes, str]:
        base = _UNSAFE_NAME.sub("_", task.name).strip("_") or f"export-{task.id}"
        size = max(1, self.partition_rows)
        parts = [task.rows[i : i + size] for i in range(0, len(task.rows), size)] or [[]]
        first = _csv_bytes(task.header, parts[0])
        if len(parts) == 1 and len(first) <= self.zip_over_bytes:
            return f"{base}.csv", first, "text/csv; charset=UTF-8"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for number, part in enumerate(parts, start=1):
                member = f"{base}.csv" if len(parts) == 1 else f"{base}-{number}.csv"
                data = first if number == 1 else _csv_bytes(task.header, part)
                archive.writestr(member, data)
        return f"{base}.zip", buffer.getvalue(), "application/zip"


def _cell(definition: dict[str, Any], stored: str, internal: bool) -> str:
    """One property's value as an export writes it (see the module docstring)."""
    if stored == "":
        return ""
    kind = definition["type"]
    if internal:
        if kind in ("date", "datetime"):
            moment = parse_moment(stored if kind == "datetime" else f"{stored}T00:00:00Z")
            return str(round(moment.timestamp() * 1000)) if moment is not None else stored
        return stored
    if kind == "enumeration":
        labels = {o["value"]: o["label"] for o in definition.get("options") or []}
        return ";".join(labels.get(value, value) for value in stored.split(";"))
    return stored
