"""Salesforce for lead channels and rep alerts: MQL reads, account activity, alert tasks.

Built on a ``SalesforceDestination``: its client, call counting, error translation, session
refresh and retries. Every read filters in SOQL (never "every lead, filtered here"), values
are escaped with ``soql_quote`` and field names from config are checked before any call.

Alert tasks are idempotent by a key stored on the task (``PQA_Alert_Key__c``, Text(64), an
External ID): the task is looked up by its key first, deleted tasks included (a rep who deleted
the alert has seen it), and written only when none exists, by an upsert on the key
(``PATCH sobjects/Task/PQA_Alert_Key__c/<key>``) rather than a create: a request repeated after
an unknown outcome (timeout, dropped or cut answer, 5xx), or one the org applies after the
client gave up, updates the same task with the same values instead of making a second one.
The key is looked up again before each repeat all the same.

References:
https://developer.salesforce.com/docs/platform/api-rest/guide/dome-upsert.html
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_sobject_upsert_patch.htm
https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_task.htm
https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_queryall.htm
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

import requests
import structlog
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceResourceNotFound,
)

from connectors.alerts_state import TaskRejected
from connectors.retrying import backoff_delay
from connectors.salesforce import (
    LOCK_CODES,
    SalesforceDestination,
    check_field_name,
    lock_code,
    soql_quote,
)
from pls_sync.errors import FatalError, RetriableError
from pls_sync.models import RecordRejection
from pls_sync.planning import truncate

__all__ = [
    "CONTACT_SOURCE",
    "LEAD_SOURCE",
    "create_salesforce_alert",
    "read_last_activity",
    "read_salesforce_mqls",
]

LEAD_SOURCE = "salesforce_lead"
CONTACT_SOURCE = "salesforce_contact"
ID_CHUNK = 500  # ids per IN list: keeps the SOQL text far below its 100,000-character limit
SUBJECT_MAX = 255
DESCRIPTION_MAX = 32_000
KEY_MAX = 64
CREATE_ATTEMPTS = 3

_RECORD_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
# 400s that mean the org is not set up for alerts (missing or read-only field, wrong object):
# every alert would fail the same way, so they stop the run instead of piling up rejections.
_SETUP_CODES = frozenset(
    {"INVALID_FIELD", "INVALID_TYPE", "INVALID_FIELD_FOR_INSERT_UPDATE", "NOT_FOUND"}
)

log = structlog.get_logger(__name__)


class _OutcomeUnknown(Exception):
    """A create whose request may or may not have reached Salesforce (not a project error)."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


def _query(
    dest: SalesforceDestination, soql: str, *, include_deleted: bool = False
) -> Iterator[Mapping[str, Any]]:
    """Every record of ``soql``, page by page, through the destination's retrying calls."""
    timeout = dest.timeout
    page = dest.call(
        "read", lambda sf: sf.query(soql, include_deleted=include_deleted, timeout=timeout)
    )
    while True:
        yield from page.get("records") or ()
        next_url = page.get("nextRecordsUrl")
        if page.get("done", True) or not next_url:
            return
        page = dest.call("read", functools.partial(dest.query_more, next_url=next_url))


_CHECKSUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def case_safe_id(record_id: str) -> str:
    """The 18-character, case-safe form of a Salesforce id (15-character ids get their suffix)."""
    if len(record_id) != 15:
        return record_id
    suffix = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, char in enumerate(record_id[start : start + 5]) if char.isupper())
        suffix += _CHECKSUM[bits]
    return record_id + suffix


def _check_record_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not _RECORD_ID.match(value):
        raise FatalError(f"invalid Salesforce {what} id {value!r}", code="INVALID_ID")
    return value


# --- MQLs ---------------------------------------------------------------------------------


def lead_soql(lead_statuses: Sequence[str]) -> str:
    """The SOQL for unconverted Leads in ``lead_statuses`` with an email."""
    statuses = ", ".join(soql_quote(str(status)) for status in dict.fromkeys(lead_statuses))
    return (
        "SELECT Id, Email FROM Lead "
        f"WHERE IsConverted = false AND Status IN ({statuses}) AND Email != null"
    )


def contact_soql(contact_field: str) -> str:
    """The SOQL for Contacts whose checkbox ``contact_field`` is true, with an email."""
    field = check_field_name(contact_field, allow_path=False)
    return f"SELECT Id, Email FROM Contact WHERE {field} = true AND Email != null"


def read_salesforce_mqls(
    dest: SalesforceDestination,
    *,
    lead_statuses: Sequence[str],
    contact_field: str | None,
) -> Iterator[tuple[str, str, str]]:
    """Marketing-qualified people as ``(source, record id, email)``, filtered in SOQL.

    Leads: not converted, ``Status`` in ``lead_statuses``, with an email (source
    ``salesforce_lead``); none are read when ``lead_statuses`` is empty. Contacts: the boolean
    ``contact_field`` (e.g. ``MQL__c``) is true, with an email (source ``salesforce_contact``);
    none are read when it is ``None``. Emails are returned as stored: free-mail and junk
    addresses are the caller's to skip and count.
    """
    if contact_field is not None:
        check_field_name(contact_field, allow_path=False)  # refuse bad config before any call
    if lead_statuses:
        for record in _query(dest, lead_soql(lead_statuses)):
            email = record.get("Email")
            if isinstance(email, str) and email.strip():
                yield LEAD_SOURCE, str(record["Id"]), email.strip()
    if contact_field:
        for record in _query(dest, contact_soql(contact_field)):
            email = record.get("Email")
            if isinstance(email, str) and email.strip():
                yield CONTACT_SOURCE, str(record["Id"]), email.strip()


# --- account activity -----------------------------------------------------------------------


def _parse_date(value: Any) -> date | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip()[:10])
    except ValueError:
        return None


def read_last_activity(
    dest: SalesforceDestination, account_ids: Iterable[str]
) -> dict[str, date | None]:
    """``Account.LastActivityDate`` by account id, ``None`` when nobody logged an activity.

    Read in chunks of at most 500 ids per ``IN`` list. Keys are the ids as given (15- or
    18-character); accounts Salesforce does not return (deleted, not visible) are left out.
    """
    given_as: dict[str, list[str]] = {}
    for given in dict.fromkeys(str(i) for i in account_ids):
        _check_record_id(given, "account")
        given_as.setdefault(case_safe_id(given), []).append(given)
    wanted = list(given_as)
    out: dict[str, date | None] = {}
    for start in range(0, len(wanted), ID_CHUNK):
        chunk = wanted[start : start + ID_CHUNK]
        ids = ", ".join(soql_quote(i) for i in chunk)
        soql = f"SELECT Id, LastActivityDate FROM Account WHERE Id IN ({ids})"
        for record in _query(dest, soql):
            when = _parse_date(record.get("LastActivityDate"))
            for given in given_as.get(case_safe_id(str(record.get("Id", ""))), ()):
                out[given] = when
    return out


# --- alert tasks ----------------------------------------------------------------------------


def find_alert_task(dest: SalesforceDestination, key: str, key_field: str) -> str | None:
    """The id of the Task carrying ``key`` in ``key_field`` (deleted ones included), or None."""
    field = check_field_name(key_field, allow_path=False)
    soql = f"SELECT Id FROM Task WHERE {field} = {soql_quote(key)} ORDER BY CreatedDate LIMIT 1"
    for record in _query(dest, soql, include_deleted=True):
        return str(record["Id"])
    return None


def _rejection_details(exc: SalesforceError) -> tuple[str, str, tuple[str, ...]]:
    content = exc.content
    items: list[Mapping[str, Any]] = (
        [c for c in content if isinstance(c, Mapping)] if isinstance(content, list) else []
    )
    code = next((str(i["errorCode"]) for i in items if i.get("errorCode")), "UNKNOWN_ERROR")
    message = "; ".join(str(i["message"]) for i in items if i.get("message")) or code
    fields = tuple(dict.fromkeys(str(f) for i in items for f in i.get("fields") or ()))
    return code, message, fields


def create_salesforce_alert(
    dest: SalesforceDestination,
    *,
    account_id: str,
    owner_id: str,
    subject: str,
    description: str,
    key: str,
    key_field: str = "PQA_Alert_Key__c",
    today: date | None = None,
) -> tuple[str, bool]:
    """The Task for alert ``key`` on the account: ``(task id, created)``, created at most once.

    Looks the task up by ``key_field = key`` first (deleted tasks count: a rep who deleted the
    alert has seen it); when found returns it with ``created`` False. Otherwise upserts a Task
    by the key (an External ID) with ``WhatId`` (the account), ``OwnerId``, ``Subject``,
    ``Description``, ``Status`` "Not Started", ``Priority`` "High" and ``ActivityDate`` today
    (UTC): a repeat of that request can only update the same task with the same values. Several
    tasks holding the key (made before it was an External ID) are not added to: the oldest id
    is returned.

    Raises ``TaskRejected`` (with a ``RecordRejection``) when Salesforce refuses this record
    (invalid owner, validation rule, ...): record it and retry on a later run. Raises
    ``FatalError`` when the org lacks the key field or it is not a writable External ID,
    ``RetriableError`` when the outcome stayed unknown after the retries, and the destination's
    own errors (``AuthError``, ``QuotaExhaustedError``...) as they are.
    """
    field = check_field_name(key_field, allow_path=False)
    if not key or len(key) > KEY_MAX:
        raise FatalError(f"alert key must be 1 to {KEY_MAX} characters", code="INVALID_KEY")
    _check_record_id(account_id, "account")
    # "Do not specify Id or an external ID field in the request body": the URL carries the key.
    body = {
        "WhatId": account_id,
        "OwnerId": owner_id,
        "Subject": truncate(subject, SUBJECT_MAX),
        "Description": truncate(description, DESCRIPTION_MAX),
        "Status": "Not Started",
        "Priority": "High",
        "ActivityDate": (today or datetime.now(UTC).date()).isoformat(),
    }
    upsert = functools.partial(
        _upsert_task,
        dest=dest,
        path=f"sobjects/Task/{field}/{quote(key, safe='')}",
        body=body,
        key=key,
        field=field,
    )
    last: BaseException | None = None
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        existing = find_alert_task(dest, key, field)
        if existing is not None:
            # Found after an attempt of ours whose answer was lost: it was created just now.
            return existing, attempt > 1
        try:
            result = dest.call("write", upsert)
        except _OutcomeUnknown as unknown:
            last = unknown.error
            wait = backoff_delay(attempt, base=0.5, cap=10.0)
            log.warning(
                "salesforce_alert_outcome_unknown",
                key=key,
                attempt=attempt,
                error=dest.redact_secrets(str(unknown.error)),
                wait_seconds=round(wait, 3),
            )
            dest.sleep(wait)
            continue
        task_id, created = _upserted(dest, result, key, field)
        # Updated rather than created after an attempt of ours with an unknown outcome: ours.
        return task_id, created or attempt > 1
    existing = find_alert_task(dest, key, field)
    if existing is not None:
        return existing, True
    raise RetriableError(
        dest.redact_secrets(f"Salesforce alert task {key!r} not confirmed: {last}"),
        code="OUTCOME_UNKNOWN",
    )


class _Duplicates:
    """A 300 answer: several live tasks already hold the key (nothing was written)."""

    def __init__(self, urls: Any):
        self.ids = sorted(
            str(url).rstrip("/").rsplit("/", 1)[-1]
            for url in (urls if isinstance(urls, list) else [])
            if isinstance(url, str) and url.strip("/")
        )


def _upsert_task(
    sf: Salesforce,
    *,
    dest: SalesforceDestination,
    path: str,
    body: Mapping[str, Any],
    key: str,
    field: str,
) -> Any:
    """One upsert request, its failures sorted: setup (fatal), refusal, lock, unknown outcome."""
    try:
        return sf.restful(path, method="PATCH", json=body, timeout=dest.timeout)
    except SalesforceMoreThanOneRecord as exc:
        return _Duplicates(exc.content)
    except (SalesforceMalformedRequest, SalesforceResourceNotFound) as exc:
        code, message, fields = _rejection_details(exc)
        message = dest.redact_secrets(message)
        if lock_code(code, message) in LOCK_CODES:
            raise  # nothing was written: the destination retries it as any locked request
        if code in _SETUP_CODES:
            raise FatalError(
                f"Salesforce cannot store alert tasks ({code}): {message}; "
                f"check that Task.{field} exists, is writable and is an External ID",
                code=code,
            ) from None
        raise TaskRejected(
            RecordRejection(record_id=key, code=code, message=message, fields=fields)
        ) from None
    except (requests.RequestException, ValueError) as exc:
        # No answer, or one we cannot read (cut mid-body, a 200 that is not JSON): the upsert
        # may have been applied. The loop looks the key up before repeating it.
        raise _OutcomeUnknown(exc) from None
    except SalesforceError as exc:
        if exc.status >= 500:
            raise _OutcomeUnknown(exc) from None
        raise  # 401, 403: nothing was written; the destination re-authenticates/retries


def _upserted(dest: SalesforceDestination, result: Any, key: str, field: str) -> tuple[str, bool]:
    """``(task id, created)`` from an upsert's answer: 201 ``created`` true, 200 false, 204
    (API 45.0 and earlier: no body) looked up, 300 the oldest of the tasks holding the key."""
    if isinstance(result, _Duplicates):
        if not result.ids:
            raise FatalError("Salesforce answered 300 without the matching tasks", code="NO_ID")
        log.warning("salesforce_alert_duplicates", key=key, task_ids=result.ids)
        return result.ids[0], False
    if result is None:
        found = find_alert_task(dest, key, field)
        if found is None:
            raise RetriableError(
                f"Salesforce upserted alert task {key!r} but it cannot be found",
                code="OUTCOME_UNKNOWN",
            )
        return found, False
    task_id = result.get("id") if isinstance(result, Mapping) else None
    if not task_id:
        raise FatalError("Salesforce upserted a Task but returned no id", code="NO_ID")
    return str(task_id), bool(result.get("created", True))
