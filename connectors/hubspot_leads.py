"""HubSpot for lead channels and rep alerts: MQL contacts and alert tasks on companies.

Built on a ``HubSpotDestination``: its token, pacing, call counting, error translation and
retries. MQLs are read with the contacts search API, filtered by HubSpot (lifecycle stage, or a
configurable property), 200 a page in contact-id order; the search API stops at 10,000 results a
query, so above that it searches on from the last id read.

Alert tasks are idempotent by a key stored on the task (``pqa_alert_key``): a task search by the
key comes first and the task is created only when none exists, associated with the company
(``HUBSPOT_DEFINED`` type 192, task to company).

HubSpot's search index trails writes ("It may take a few moments for newly created or updated
CRM objects to appear in search results"), and HubSpot documents unique-value properties for
companies, deals, tickets, custom objects and contacts, not for tasks, so nothing on HubSpot's
side refuses a second task with the same key. A create whose outcome is unknown (no answer, an
answer cut or late past the timeout, a 5xx, a 200 that is not the created task) is therefore
never sent again in the same run, nor looked up at once: it raises ``RetriableError`` with code
``OUTCOME_UNKNOWN``, the alert stays ``settling`` and a later run, once the search lag has
passed (``connectors.leads.HubSpotAlerts.lookup_lag_seconds``), searches the key before
anything is sent again.

References:
https://developers.hubspot.com/docs/api/crm/search
https://developers.hubspot.com/changelog/unique-properties-for-contacts
https://developers.hubspot.com/docs/api/crm/tasks
https://developers.hubspot.com/docs/api/crm/associations (task to company: 192)
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
import urllib3
from hubspot.crm.contacts import Filter, FilterGroup, PublicObjectSearchRequest
from hubspot.crm.contacts.exceptions import ApiException as ContactsApiException
from hubspot.crm.objects.tasks import (
    AssociationSpec,
    PublicAssociationsForObject,
    PublicObjectId,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.objects.tasks import Filter as TaskFilter
from hubspot.crm.objects.tasks import FilterGroup as TaskFilterGroup
from hubspot.crm.objects.tasks import PublicObjectSearchRequest as TaskSearchRequest
from hubspot.crm.objects.tasks.exceptions import ApiException as TasksApiException

from connectors.alerts_state import TaskRejected
from connectors.hubspot import (
    SEARCH_PAGE_SIZE,
    HubSpotDestination,
    HubSpotValidationError,
    read_json,
    search_in_id_windows,
)
from pls_sync.errors import FatalError, RetriableError
from pls_sync.models import RecordRejection
from pls_sync.planning import truncate

__all__ = [
    "CONTACT_SOURCE",
    "TASK_TO_COMPANY",
    "create_hubspot_alert",
    "find_alert_task",
    "read_hubspot_mqls",
]

T = TypeVar("T")

CONTACT_SOURCE = "hubspot_contact"
TASK_TO_COMPANY = 192  # HUBSPOT_DEFINED association type: task to company
SUBJECT_MAX = 255
BODY_MAX = 65_536
# Validation errors that mean the portal is not set up for alerts: every task would fail alike.
_SETUP_ERRORS = frozenset({"PROPERTY_DOESNT_EXIST", "READ_ONLY_VALUE"})
_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)

log = structlog.get_logger("pls_sync.hubspot")


OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"  # a create whose answer was lost: settle, do not resend


class _OutcomeUnknown(Exception):
    """A create whose request may or may not have reached HubSpot (not a project error)."""


class _Apis:
    """The contacts and tasks APIs of one destination, built once (each builds a pool)."""

    def __init__(self, dest: HubSpotDestination):
        client = dest.client()
        self.contacts_search = client.crm.contacts.search_api
        self.tasks_search = client.crm.objects.tasks.search_api
        self.tasks_basic = client.crm.objects.tasks.basic_api


_apis: weakref.WeakKeyDictionary[HubSpotDestination, _Apis] = weakref.WeakKeyDictionary()


def _apis_of(dest: HubSpotDestination) -> _Apis:
    apis = _apis.get(dest)
    if apis is None:
        apis = _apis[dest] = _Apis(dest)
    return apis


def _call(dest: HubSpotDestination, kind: str, api: Any, invoke: Callable[[], T]) -> T:
    """``invoke`` through the destination's paced, counted, retried calls.

    The destination translates the companies and properties packages' exceptions; the contacts
    and tasks packages have exception classes of their own, translated here the same way.
    """

    def translated() -> T:
        try:
            return invoke()
        except (ContactsApiException, TasksApiException) as exc:
            raise dest.translate(exc) from None

    return dest.call(kind, api, translated)


# --- MQLs ---------------------------------------------------------------------------------


def mql_filter_groups(
    lifecycle_stage: str,
    mql_property: str | None,
    mql_value: str,
    *,
    after_id: str | None = None,
) -> list[FilterGroup]:
    """Contacts at the lifecycle stage, OR with the property at ``mql_value``; with an email.

    ``after_id`` keeps only contact ids above it, in every group (groups are OR'ed): the next
    window of a search that reached the 10,000-result cap.
    """
    common = [Filter(property_name="email", operator="HAS_PROPERTY")]
    if after_id is not None:
        common.append(Filter(property_name="hs_object_id", operator="GT", value=after_id))
    groups = [
        FilterGroup(
            filters=[
                Filter(property_name="lifecyclestage", operator="EQ", value=lifecycle_stage),
                *common,
            ]
        )
    ]
    if mql_property:
        groups.append(
            FilterGroup(
                filters=[
                    Filter(property_name=mql_property, operator="EQ", value=mql_value),
                    *common,
                ]
            )
        )
    return groups


def read_hubspot_mqls(
    dest: HubSpotDestination,
    *,
    lifecycle_stage: str = "marketingqualifiedlead",
    mql_property: str | None = None,
    mql_value: str = "true",
) -> Iterator[tuple[str, str, str]]:
    """Marketing-qualified contacts as ``("hubspot_contact", contact id, email)``.

    A contact qualifies when its ``lifecyclestage`` is ``lifecycle_stage`` or (when
    ``mql_property`` is set) that property equals ``mql_value`` (``"true"`` for a checkbox).
    Searched 200 a page with the filters sent to HubSpot, in contact-id order. The search API
    returns at most 10,000 results per query: past that, the search goes on from the last id
    read (``hs_object_id`` GT it), so only MQLs are ever read (logged as
    ``hubspot_search_cap``). Emails are returned as stored; free-mail ones are the caller's
    to skip and count.
    """
    api = _apis_of(dest).contacts_search

    def fetch(above_id: str | None, after: str | None) -> dict[str, Any]:
        request = PublicObjectSearchRequest(
            filter_groups=mql_filter_groups(
                lifecycle_stage, mql_property, mql_value, after_id=above_id
            ),
            sorts=[{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            properties=["email"],
            limit=SEARCH_PAGE_SIZE,
            after=after,
        )
        send = functools.partial(
            api.do_search,
            public_object_search_request=request,
            _request_timeout=dest.timeout,
            _preload_content=False,
        )
        return _call(dest, "read", api, functools.partial(read_json, send))

    for result in search_in_id_windows(fetch, object_name="contacts"):
        properties = result.get("properties")
        email = properties.get("email") if isinstance(properties, dict) else None
        if isinstance(email, str) and email.strip():
            yield CONTACT_SOURCE, str(result.get("id")), email.strip()


# --- alert tasks ----------------------------------------------------------------------------


def find_alert_task(
    dest: HubSpotDestination, key: str, key_property: str = "pqa_alert_key"
) -> str | None:
    """The id of the task whose ``key_property`` equals ``key``, or ``None`` (by search)."""
    api = _apis_of(dest).tasks_search
    request = TaskSearchRequest(
        filter_groups=[
            TaskFilterGroup(
                filters=[TaskFilter(property_name=key_property, operator="EQ", value=key)]
            )
        ],
        sorts=[{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        properties=[key_property],
        limit=1,
    )
    page = _call(
        dest,
        "read",
        api,
        lambda: api.do_search(public_object_search_request=request, _request_timeout=dest.timeout),
    )
    for result in page.results or []:
        return str(result.id)
    return None


def _rejection(key: str, error: HubSpotValidationError) -> RecordRejection:
    details = error.details
    code = (
        str(details[0].get("error")) if details and details[0].get("error") else "VALIDATION_ERROR"
    )
    fields = tuple(dict.fromkeys(str(d["name"]) for d in details if d.get("name")))
    return RecordRejection(record_id=key, code=code, message=str(error), fields=fields)


def create_hubspot_alert(
    dest: HubSpotDestination,
    *,
    company_id: str,
    owner_id: str,
    subject: str,
    body: str,
    key: str,
    key_property: str = "pqa_alert_key",
    now: datetime | None = None,
) -> tuple[str, bool]:
    """The task for alert ``key`` on the company: ``(task id, created)``, created at most once.

    Searches tasks for ``key_property = key`` first; when found returns it with ``created``
    False. Otherwise creates a task (``hs_task_subject``, ``hs_task_body``, ``hs_timestamp`` now
    in epoch ms, ``hs_task_status`` NOT_STARTED, ``hs_task_priority`` HIGH,
    ``hubspot_owner_id``, the key) associated with the company (type 192).

    Raises ``TaskRejected`` when HubSpot refuses this task (unknown owner, company gone...):
    record it and retry on a later run. Raises ``FatalError`` when the portal lacks the key
    property, ``RetriableError`` with code ``OUTCOME_UNKNOWN`` when the create's answer was
    lost, cut, late or not the task (the task may exist: never created again before a lookup
    past the search lag), and the destination's own errors (``AuthError``,
    ``QuotaExhaustedError``...) as they are.
    """
    if not key:
        raise FatalError("alert key must not be empty", code="INVALID_KEY")
    apis = _apis_of(dest)
    api = apis.tasks_basic
    moment = now or datetime.now(UTC)
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
    task = SimplePublicObjectInputForCreate(
        properties={
            "hs_task_subject": truncate(subject, SUBJECT_MAX),
            "hs_task_body": truncate(body, BODY_MAX),
            "hs_timestamp": str(int(moment.timestamp() * 1000)),
            "hs_task_status": "NOT_STARTED",
            "hs_task_priority": "HIGH",
            "hubspot_owner_id": str(owner_id),
            key_property: key,
        },
        associations=[
            PublicAssociationsForObject(
                to=PublicObjectId(id=str(company_id)),
                types=[
                    AssociationSpec(
                        association_category="HUBSPOT_DEFINED",
                        association_type_id=TASK_TO_COMPANY,
                    )
                ],
            )
        ],
    )

    def create() -> Any:
        try:
            answer = api.create(
                simple_public_object_input_for_create=task, _request_timeout=dest.timeout
            )
        except TasksApiException as exc:
            status = int(getattr(exc, "status", 0) or 0)
            if status == 0 or status >= 500:
                raise _OutcomeUnknown(str(dest.translate(exc))) from None
            error = dest.translate(exc)
            if isinstance(error, HubSpotValidationError):
                rejection = _rejection(key, error)
                if rejection.code in _SETUP_ERRORS:
                    raise FatalError(
                        f"HubSpot cannot store alert tasks: {error}; check that the task "
                        f"property {key_property} exists and is writable",
                        code=rejection.code,
                    ) from None
                raise TaskRejected(rejection) from None
            raise error from None
        except _TRANSPORT_ERRORS as exc:
            raise _OutcomeUnknown(dest.redact_secrets(f"{type(exc).__name__}: {exc}")) from None
        if not getattr(answer, "id", None):
            # A 2xx whose body is not the task (a proxy's page, say): the create may have landed.
            raise _OutcomeUnknown("HubSpot answered the create with a body that is not the task")
        return answer

    existing = find_alert_task(dest, key, key_property)
    if existing is not None:
        return existing, False
    try:
        created = dest.call("write", api, create)
    except _OutcomeUnknown as unknown:
        # The task may exist, and HubSpot's search shows it only after a lag ("it may take a
        # few moments for newly created or updated CRM objects to appear in search results"):
        # a lookup now could miss it and a second create would duplicate it. The caller
        # leaves the alert settling; a later run looks it up once the lag has passed.
        log.warning("hubspot_alert_outcome_unknown", key=key, error=str(unknown))
        raise RetriableError(
            f"HubSpot alert task {key!r} not confirmed: {unknown}", code=OUTCOME_UNKNOWN
        ) from None
    return str(created.id), True
