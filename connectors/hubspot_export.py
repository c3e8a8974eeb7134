"""HubSpot's CRM exports API: every live company in one export, read as the list endpoint reads them.

``HubSpotDestination.read_records`` switches here above its ``export_threshold`` of companies
(the count comes from the caller, or from one search's ``total``): a full read at 100k companies
is then a handful of calls instead of 1,000 list pages. The export's lifecycle (HubSpot's
Exports guide, https://developers.hubspot.com/docs/api-reference/legacy/crm/exports/guide):

1. ``POST /crm/v3/exports/export/async``: a VIEW export of ``COMPANY`` in CSV with the read
   properties, internal names as headers and internal values ("timestamps instead of
   human-readable dates"); HubSpot answers the task id.
2. ``GET /crm/v3/exports/export/async/tasks/{taskId}/status`` with backoff until COMPLETE or
   CANCELED (PENDING and PROCESSING first; "one export at a time. Additional exports will be
   queued until the previous export is completed").
3. The ``result`` URL, fetched without the bearer token ("Prior to expiration, an export's
   download URL can be accessed without any additional authorization"). "The download URL
   will expire five minutes after the completed request. Once expired, you can perform another
   GET request to generate a new unique URL": a refused download polls the status again for a
   new URL, up to ``url_renewals`` times.
4. The file: a CSV, or a zip of CSVs ("CSV files are also automatically zipped if the file is
   greater than 2MB"; "Exports exceeding one million rows will now be split into multiple
   files ... bundled together in a zip file"), spooled to disk, checked (zip CRCs, every part's
   header names the record id and every property asked for), then parsed a row at a time into
   the list endpoint's shape, ``{"id", "properties", "updatedAt"}``: empty cells are null, epoch
   milliseconds in date and datetime properties become ``YYYY-MM-DD`` and
   ``2026-11-22T10:00:00.000Z``, so the snapshot and planning see the same records whichever
   path read them.

Every request goes through the destination's ``call`` (paced, counted as a read, translated,
retried), the download too, on a connection pool of its own that sends no ``Authorization``
header; its URL (a pre-signed credential while it lives) never reaches a log or a message.
Anything that stops the export from serving the read raises ``ExportUnavailable`` (or the
project error ``call`` raised); the destination then lists the companies instead.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import structlog
import urllib3
from hubspot.crm.exports.exceptions import ApiException as ExportsApiException

from connectors.retrying import current_trace
from pls_sync.errors import FatalError, PlsSyncError, RetriableError
from pls_sync.models import FieldType

if TYPE_CHECKING:
    from connectors.hubspot import HubSpotDestination

log = structlog.get_logger("pls_sync.hubspot")

# Above this many companies a full read goes through an export (the suggested setting): 200
# list pages, 20 s at the starter burst limit, against a handful of export calls.
DEFAULT_EXPORT_THRESHOLD = 20_000
EXPORT_NAME = "pls-sync companies"
ID_COLUMNS = ("hs_object_id", "Record ID")
# A refused 429 names one of these when it is the API's own rate limit, retried as such; any
# other 429 on a start is the exports' own cap ("thirty exports within a rolling 24 hour window").
API_LIMIT_POLICIES = ("TEN_SECONDLY_ROLLING", "DAILY")
EXPIRED_STATUSES = (401, 403, 404, 410)
SPOOL_BYTES = 16 * 1024 * 1024
CHUNK_BYTES = 256 * 1024
# The waits between polls grow by this factor, from ``poll_interval`` to ``max_poll_interval``.
POLL_GROWTH = 1.5
# The download follows a redirect or three; every retry is the destination's (``call``).
_REDIRECTS_ONLY = urllib3.Retry(
    total=None,
    connect=0,
    read=0,
    status=0,
    other=0,
    redirect=3,
    respect_retry_after_header=False,
    raise_on_status=False,
)
# Without a ``timeout``, an export is waited for twice as long as listing the companies would
# take, and at least this long: past that it is no longer the cheaper read.
MIN_EXPORT_WAIT = 120.0


class ExportUnavailable(FatalError):
    """The export cannot serve this read (refused, canceled, too slow, unreadable): list instead."""


class _UrlExpired(PlsSyncError):
    """The file host refused the download URL: it expired, or was never valid."""


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """How exports are used: above ``threshold`` companies (None: never), polled from
    ``poll_interval`` seconds growing to ``max_poll_interval``, waited for at most ``timeout``
    seconds (None: twice the list's estimated time, at least ``MIN_EXPORT_WAIT``)."""

    threshold: int | None = None
    poll_interval: float = 1.0
    max_poll_interval: float = 15.0
    timeout: float | None = None
    url_renewals: int = 2


@dataclass(slots=True)
class ExportRun:
    """What one export did, for the log: its task, polls, waits and file."""

    task_id: str = ""
    polls: int = 0
    waited: float = 0.0
    url_renewals: int = 0
    parts: int = 0
    rows: int = 0
    processing: dict[str, Any] = field(default_factory=dict)

    def _stamped(self, start: str, end: str) -> float | None:
        """Seconds between two of HubSpot's stamps in the status answer (its one clock)."""
        first = _iso_moment(self.processing.get(start))
        last = _iso_moment(self.processing.get(end))
        if first is None or last is None:
            return None
        return max(0.0, (last - first).total_seconds())

    def speed(self) -> ExportSpeed | None:
        """How fast this export went, once every row was read (None before, or for no rows).

        From HubSpot's stamps: the rate is rows over ``completedAt - startedAt``, the overhead
        ``startedAt - requestedAt`` (queued and PENDING). Without them the whole wait between
        polls is priced by the row and the overhead is unknown.
        """
        if self.rows <= 0:
            return None
        processing = self._stamped("startedAt", "completedAt")
        if processing is None or processing <= 0:
            if self.waited <= 0:
                return None
            return ExportSpeed(rows_per_second=self.rows / self.waited, overhead_seconds=None)
        overhead = self._stamped("requestedAt", "startedAt")
        return ExportSpeed(rows_per_second=self.rows / processing, overhead_seconds=overhead)


@dataclass(frozen=True, slots=True)
class ExportSpeed:
    """What one finished export measured: rows processed a second, and the seconds it spent
    besides processing them (None: not measured)."""

    rows_per_second: float
    overhead_seconds: float | None


def default_timeout(companies: int, requests_per_10s: int) -> float:
    """Twice what listing ``companies`` takes at the burst limit, at least ``MIN_EXPORT_WAIT``."""
    from connectors.hubspot import estimate_read_paths

    listing = estimate_read_paths(0, companies, requests_per_10s=requests_per_10s).list_seconds
    return max(MIN_EXPORT_WAIT, 2 * listing)


def poll_schedule(seconds: float, options: ExportOptions | None = None) -> tuple[int, float]:
    """The polls ``_wait`` sends for an export finishing after ``seconds``, and how long it
    waits until the poll that finds it COMPLETE."""
    options = options or ExportOptions()
    delay = max(options.poll_interval, 0.001)
    polls, waited = 1, delay
    while waited < seconds:
        delay = min(delay * POLL_GROWTH, max(options.max_poll_interval, delay))
        waited += delay
        polls += 1
    return polls, waited


class CompanyExport:
    """One export of every live company through a destination's calls (module docstring)."""

    def __init__(self, dest: HubSpotDestination, options: ExportOptions, *, timeout: float) -> None:
        """Export through ``dest``; ``timeout`` bounds the waits between polls."""
        self._dest = dest
        self._options = options
        self._timeout = timeout
        self._api = dest.client().crm.exports.public_exports_api
        self._pool = urllib3.PoolManager(headers={"User-Agent": "pls-sync"})
        self.run = ExportRun()

    def companies(self, properties: Sequence[str]) -> Iterator[dict[str, Any]]:
        """Every company of one export, as the list endpoint gives it (module docstring)."""
        converters = self._converters(properties)
        columns = ["hs_object_id", *(p for p in properties if p != "hs_object_id")]
        self.run.task_id = self._start(columns)
        url = self._wait()
        with self._download(url) as spooled:
            parts = _parts(spooled, columns)
            self.run.parts = len(parts)
            for part in parts:
                for result in _rows(part, columns, converters):
                    self.run.rows += 1
                    yield result

    # ----------------------------------------------------------------- the calls

    def _call(self, invoke: Callable[[], Any]) -> Any:
        """One request through the destination: exports' exceptions translated inside."""
        dest = self._dest

        def translated() -> Any:
            try:
                return invoke()
            except ExportsApiException as exc:
                raise dest.translate(exc) from None

        return dest.call("read", self._api, translated)

    def _converters(self, properties: Sequence[str]) -> dict[str, Callable[[str], str]]:
        """The date and datetime properties, which the export writes as epoch milliseconds."""
        specs = self._dest.describe("companies")
        converters: dict[str, Callable[[str], str]] = {}
        for name in properties:
            spec = specs.get(name)
            if spec is not None and spec.type is FieldType.DATETIME:
                converters[name] = _datetime_text
            elif spec is not None and spec.type is FieldType.DATE:
                converters[name] = _date_text
        return converters

    def _start(self, columns: list[str]) -> str:
        from connectors.hubspot import read_json

        body = {
            "exportType": "VIEW",
            "exportName": EXPORT_NAME,
            "format": "CSV",
            "language": "EN",
            "objectType": "COMPANY",
            "objectProperties": columns,
            "exportInternalValuesOptions": ["NAMES", "VALUES"],
        }
        send = functools.partial(
            self._api.start, body, _request_timeout=self._dest.timeout, _preload_content=False
        )

        def start() -> dict[str, Any]:
            try:
                return read_json(send)
            except ExportsApiException as exc:
                error = self._dest.translate(exc)
                if exc.status == 429 and getattr(error, "code", None) not in API_LIMIT_POLICIES:
                    raise ExportUnavailable(
                        f"HubSpot refused to start an export: {error}", code="EXPORT_LIMIT"
                    ) from None
                raise error from None

        task = self._dest.call("read", self._api, start)
        task_id = str(task.get("id") or "")
        if not task_id:
            raise ExportUnavailable("HubSpot started an export without a task id", code="NO_TASK")
        return task_id

    def _status(self) -> Mapping[str, Any]:
        from connectors.hubspot import read_json

        self.run.polls += 1
        send = functools.partial(
            self._api.get_status,
            self.run.task_id,
            _request_timeout=self._dest.timeout,
            _preload_content=False,
        )
        return dict(self._call(functools.partial(read_json, send)))

    def _wait(self) -> str:
        """Poll with growing waits until COMPLETE (the file's URL) or CANCELED (raises)."""
        delay = self._options.poll_interval
        while True:
            wait = min(delay, max(self._timeout - self.run.waited, 0.0))
            if wait <= 0:
                raise ExportUnavailable(
                    f"HubSpot export {self.run.task_id} did not finish within {self._timeout:g} s",
                    code="EXPORT_TIMEOUT",
                )
            self._pause(wait)
            self.run.waited += wait
            delay = min(delay * POLL_GROWTH, self._options.max_poll_interval)
            url = self._result(self._status())
            if url is not None:
                return url

    def _pause(self, seconds: float) -> None:
        """Wait between two polls, with the destination's (injectable) sleep."""
        self._dest.sleep(seconds)

    def _result(self, status: Mapping[str, Any]) -> str | None:
        """The file's URL of a COMPLETE export; None while it runs; raises when it cannot."""
        state = str(status.get("status") or "")
        if state == "CANCELED":
            reasons = "; ".join(
                str(e.get("message") or e.get("category") or "")
                for e in status.get("errors") or []
                if isinstance(e, Mapping)
            )
            raise ExportUnavailable(
                self._dest.redact_secrets(
                    f"HubSpot canceled export {self.run.task_id}: {reasons or 'no reason given'}"
                ),
                code="EXPORT_CANCELED",
            )
        if state != "COMPLETE":
            return None
        self.run.processing = {
            key: status.get(key) for key in ("requestedAt", "startedAt", "completedAt")
        }
        result = status.get("result")
        if not isinstance(result, str) or urlsplit(result).scheme not in ("http", "https"):
            raise ExportUnavailable(
                f"HubSpot completed export {self.run.task_id} without a file URL",
                code="NO_RESULT",
            )
        return result

    def _download(self, url: str) -> IO[bytes]:
        """The file, spooled; an expired URL is renewed by polling again."""
        while True:
            try:
                file: IO[bytes] = self._call(functools.partial(self._fetch, url))
                return file
            except _UrlExpired as exc:
                if self.run.url_renewals >= self._options.url_renewals:
                    raise ExportUnavailable(str(exc), code="EXPORT_URL_EXPIRED") from None
            self.run.url_renewals += 1
            renewed = self._result(self._status())
            if renewed is None:
                raise ExportUnavailable(
                    f"HubSpot export {self.run.task_id} is no longer complete",
                    code="NO_RESULT",
                )
            url = renewed

    def _fetch(self, url: str) -> IO[bytes]:
        """One GET of the file, without the bearer token; ``url`` never goes into a message."""
        parts = urlsplit(url)
        shown = f"{parts.scheme}://{parts.netloc}/<export file>"
        trace = current_trace()
        if trace is not None:
            trace.sending("GET", shown)
        try:
            response = self._pool.request(
                "GET",
                url,
                preload_content=False,
                retries=_REDIRECTS_ONLY,
                timeout=urllib3.Timeout(connect=self._dest.timeout[0], read=self._dest.timeout[1]),
            )
        except urllib3.exceptions.HTTPError as exc:
            raise RetriableError(
                f"HubSpot's export file host is unreachable: {type(exc).__name__}",
                code="TRANSPORT",
            ) from None
        try:
            if trace is not None:
                trace.answered(response.status)
            _check_download(response.status, response.headers, self.run.task_id)
            return _spool(response)
        finally:
            response.drain_conn()  # an error's unread body must not meet the next request
            response.release_conn()


def _check_download(status: int, headers: Mapping[str, str], task_id: str) -> None:
    """Nothing for a 200; otherwise the error a download answered ``status`` is."""
    if status == 200:
        return
    if status in EXPIRED_STATUSES:
        raise _UrlExpired(f"HubSpot's file host refused export {task_id}'s URL ({status})")
    if status == 429 or status >= 500 or status == 408:
        try:
            retry_after: float | None = max(0.0, float(headers.get("Retry-After", "")))
        except ValueError:
            retry_after = None
        raise RetriableError(
            f"HubSpot's file host answered {status} for export {task_id}",
            retry_after=retry_after,
            code=str(status),
        )
    raise ExportUnavailable(
        f"HubSpot's file host answered {status} for export {task_id}", code=str(status)
    )


def _spool(response: Any) -> IO[bytes]:
    """The body on disk past ``SPOOL_BYTES``; a body cut short is retriable."""
    spooled: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
    try:
        for chunk in response.stream(CHUNK_BYTES):
            spooled.write(chunk)
    except urllib3.exceptions.HTTPError as exc:
        spooled.close()
        raise RetriableError(
            f"HubSpot's export file was cut off: {type(exc).__name__}", code="TRANSPORT"
        ) from None
    spooled.seek(0)
    return spooled


# --------------------------------------------------------------------------- the file


@dataclass(slots=True)
class _Part:
    """One CSV of the file: how to open it (``owned``: a stream to close after), its columns."""

    open: Callable[[], IO[bytes]]
    owned: bool
    name: str
    index: dict[str, int]
    id_index: int


def _parts(spooled: IO[bytes], columns: Sequence[str]) -> list[_Part]:
    """The file's CSVs (a zip's members ending ``.csv``, by name), each header checked."""
    head = spooled.read(4)
    spooled.seek(0)
    if not head.startswith(b"PK"):
        return [_checked_part(functools.partial(_rewound, spooled), False, "the export", columns)]
    with _readable("the export zip"):
        archive = zipfile.ZipFile(spooled)
        broken = archive.testzip()
    if broken is not None:
        raise ExportUnavailable(f"the export zip is corrupt at {broken}", code="BAD_FILE")
    names = sorted(n for n in archive.namelist() if n.lower().endswith(".csv"))
    if not names:
        raise ExportUnavailable("the export zip holds no CSV file", code="BAD_FILE")
    return [
        _checked_part(functools.partial(archive.open, name), True, name, columns) for name in names
    ]


def _rewound(spooled: IO[bytes]) -> IO[bytes]:
    spooled.seek(0)
    return spooled


@contextlib.contextmanager
def _text(part_open: Callable[[], IO[bytes]], owned: bool, name: str) -> Iterator[io.TextIOWrapper]:
    """A part as UTF-8 text (a byte-order mark skipped); unreadable is ``ExportUnavailable``."""
    with _readable(name):
        binary = part_open()
        text = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
        try:
            yield text
        finally:
            text.detach()  # the stream is closed below, or is the spooled file itself
            if owned:
                binary.close()


@contextlib.contextmanager
def _readable(name: str) -> Iterator[None]:
    """Turn a file that cannot be read or decoded into ``ExportUnavailable``."""
    try:
        yield
    except (
        csv.Error,
        UnicodeDecodeError,
        zipfile.BadZipFile,
        zlib.error,
        OSError,
        EOFError,
    ) as exc:
        raise ExportUnavailable(
            f"{name} is unreadable: {type(exc).__name__}: {exc}", code="BAD_FILE"
        ) from None


def _checked_part(
    part_open: Callable[[], IO[bytes]], owned: bool, name: str, columns: Sequence[str]
) -> _Part:
    """A part whose header names the record id and every column asked for."""
    with _text(part_open, owned, name) as text:
        header = next(csv.reader(text), [])
    index = {column: position for position, column in enumerate(header)}
    id_column = next((c for c in ID_COLUMNS if c in index), None)
    missing = [c for c in columns if c not in index and c != "hs_object_id"]
    if id_column is None or missing:
        lacking = ", ".join(([] if id_column else ["the record id"]) + missing)
        raise ExportUnavailable(f"{name} lacks columns: {lacking}", code="BAD_FILE")
    return _Part(part_open, owned, name, index, index[id_column])


def _rows(
    part: _Part, columns: Sequence[str], converters: Mapping[str, Callable[[str], str]]
) -> Iterator[dict[str, Any]]:
    """A part's rows as list-endpoint results (module docstring)."""
    positions = [(c, part.id_index if c == "hs_object_id" else part.index[c]) for c in columns]
    width = len(part.index)
    with _text(part.open, part.owned, part.name) as text:
        reader = csv.reader(text)
        next(reader, None)  # the header
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != width:
                raise ExportUnavailable(
                    f"{part.name} row {number} has {len(row)} cells, its header {width}",
                    code="BAD_FILE",
                )
            record_id = row[part.id_index].strip()
            if not record_id:
                raise ExportUnavailable(f"{part.name} row {number} has no id", code="BAD_FILE")
            properties: dict[str, Any] = {}
            for column, position in positions:
                cell = row[position]
                convert = converters.get(column)
                properties[column] = None if cell == "" else convert(cell) if convert else cell
            yield {
                "id": record_id,
                "properties": properties,
                "updatedAt": properties.get("hs_lastmodifieddate"),
            }


def _iso_moment(text: Any) -> datetime | None:
    """An ISO 8601 stamp of the status answer (``2023-11-07T05:31:56Z``), None if it is not one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _from_millis(text: str) -> datetime | None:
    stripped = text.strip()
    if not stripped.lstrip("-").isdigit():
        return None
    return datetime.fromtimestamp(int(stripped) / 1000, tz=UTC)


def _datetime_text(text: str) -> str:
    """Epoch milliseconds as the list endpoint writes a datetime; anything else as it is."""
    moment = _from_millis(text)
    if moment is None:
        return text
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _date_text(text: str) -> str:
    """Epoch milliseconds (midnight UTC) as the list endpoint writes a date (``YYYY-MM-DD``)."""
    moment = _from_millis(text)
    return moment.date().isoformat() if moment is not None else text
