"""HubSpot for lead channels and rep alerts: MQL contacts and alert tasks on companies.

Built on a ``HubSpotDestination``: its token, pacing, call counting, error translation and
retries. MQLs are read with the contacts search API, filtered by HubSpot (lifecycle stage, or a
configurable property), 200 a page in contact-id order; the search API stops at 10,000 results a
query, so above that it searches on from the last id read. ``read_hubspot_mql_changes`` reads
only what changed since a moment (contacts that qualify, contacts that stopped qualifying,
merges, the archive), for the MQL cache of ``connectors.mql_cache``.

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
https://developers.hubspot.com/changelog/breaking-change-expanded-filtering-capabilities-and-error-messaging-in-hubspots-search-api
https://developers.hubspot.com/docs/api/crm/contacts (``?archived=true``, merge)
https://developers.hubspot.com/changelog/unique-properties-for-contacts
https://developers.hubspot.com/docs/api/crm/tasks
https://developers.hubspot.com/docs/api/crm/associations (task to company: 192)
"""

from __future__ import annotations

import functools
import hashlib
import json
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
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
    MERGED_IDS_PROPERTY,
    PAGE_SIZE,
    SEARCH_PAGE_SIZE,
    HubSpotDestination,
    HubSpotValidationError,
    epoch_millis,
    merged_ids,
    next_after,
    read_json,
    search_in_id_windows,
)
from pls_sync.errors import FatalError, RetriableError
from pls_sync.models import RecordRejection
from pls_sync.planning import truncate

__all__ = [
    "CONTACT_SOURCE",
    "TASK_TO_COMPANY",
    "MqlChanges",
    "MqlDefinition",
    "ReadCounts",
    "create_hubspot_alert",
    "find_alert_task",
    "read_archived_contact_ids",
    "read_hubspot_mql_changes",
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
        self.contacts_basic = client.crm.contacts.basic_api
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

LIFECYCLE_STAGE = "lifecyclestage"
LAST_MODIFIED = "lastmodifieddate"  # contacts' own name; companies say hs_lastmodifieddate
# HubSpot's default lifecycle stages. A contact entering one gets its read-only "Became a <stage>
# Date" (hs_lifecyclestage_<stage>_date), kept when it moves on; a custom stage has none.
DEFAULT_LIFECYCLE_STAGES = frozenset(
    {
        "subscriber",
        "lead",
        "marketingqualifiedlead",
        "salesqualifiedlead",
        "opportunity",
        "customer",
        "evangelist",
        "other",
    }
)
# Part of the definition's fingerprint: caches built by other queries are read again in full.
MQL_QUERY_VERSION = 1


@dataclass(frozen=True)
class MqlDefinition:
    """What makes a HubSpot contact an MQL: its lifecycle stage, or a property at a value."""

    lifecycle_stage: str = "marketingqualifiedlead"
    mql_property: str | None = None
    mql_value: str = "true"

    def fingerprint(self) -> str:
        """A short hash of the definition: a cache of another definition must be reread."""
        basis = [MQL_QUERY_VERSION, self.lifecycle_stage, self.mql_property, self.mql_value]
        return hashlib.sha256(json.dumps(basis).encode()).hexdigest()[:16]

    @property
    def stage_entered_property(self) -> str | None:
        """The stage's "Became a ... Date" property; None for a custom stage."""
        stage = self.lifecycle_stage
        return f"hs_lifecyclestage_{stage}_date" if stage in DEFAULT_LIFECYCLE_STAGES else None


@dataclass
class ReadCounts:
    """The requests an MQL read sent: search pages and list pages."""

    searches: int = 0
    lists: int = 0


@dataclass
class MqlChanges:
    """What changed among the MQLs since a moment, as HubSpot's search and archive tell it.

    ``qualifying``: contacts modified since that qualify now, by id, with their email (None
    without a usable one). ``departed``: contacts modified since that may no longer qualify
    (a contact also in ``qualifying`` was read later there and qualifies). ``gone``: ids that
    are no live contact: archived, or merged into another.
    """

    qualifying: dict[str, str | None] = field(default_factory=dict)
    departed: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)
    counts: ReadCounts = field(default_factory=ReadCounts)


def _filter(name: str, operator: str, value: str | None = None) -> Filter:
    return Filter(property_name=name, operator=operator, value=value)


def _groups(groups: list[list[Filter]], after_id: str | None) -> list[FilterGroup]:
    """Filter groups (OR'ed), each keeping only contact ids above ``after_id`` when given."""
    window = [_filter("hs_object_id", "GT", after_id)] if after_id is not None else []
    return [FilterGroup(filters=[*filters, *window]) for filters in groups]


def _qualifying(definition: MqlDefinition) -> list[list[Filter]]:
    """One group per way to qualify: the lifecycle stage, the property at its value."""
    groups = [[_filter(LIFECYCLE_STAGE, "EQ", definition.lifecycle_stage)]]
    if definition.mql_property:
        groups.append([_filter(definition.mql_property, "EQ", definition.mql_value)])
    return groups


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
    definition = MqlDefinition(lifecycle_stage, mql_property, mql_value)
    has_email = _filter("email", "HAS_PROPERTY")
    return _groups([[*group, has_email] for group in _qualifying(definition)], after_id)


def changed_mql_filter_groups(
    definition: MqlDefinition, since_millis: int, *, after_id: str | None = None
) -> list[FilterGroup]:
    """Contacts that qualify and were modified at or after ``since_millis`` (epoch ms).

    The full read's groups, each AND ``lastmodifieddate`` GTE, without its email filter: a
    qualifying contact whose email was removed must reach the cache to leave it. At most two
    groups of three filters (window included).
    """
    modified = _filter(LAST_MODIFIED, "GTE", str(since_millis))
    return _groups([[*group, modified] for group in _qualifying(definition)], after_id)


def departed_mql_filter_groups(
    definition: MqlDefinition, since_millis: int, *, after_id: str | None = None
) -> list[FilterGroup]:
    """Contacts modified at or after ``since_millis`` that stopped qualifying, and merges.

    Not qualifying is a lifecycle stage other than the MQL stage, or none (a stage is cleared
    before it is set back), AND (with a property) the property at another value, or none.
    Narrowed to contacts that can have been MQLs, so a busy portal does not page through
    every edited contact: those that ever entered the stage (its "Became a ... Date", which
    HubSpot keeps when a contact moves on) or that hold the property at another value. The
    last group is every contact modified since with ``hs_merged_object_ids``: a merge leaves
    one, and the ids merged into it are no contact any more. Five groups, 23 filters with the
    window at most: within HubSpot's five groups, ten filters a group and 25 in all.

    What this cannot see, until the next full read: a contact that qualified only by the
    property (never entering the stage) whose property was then cleared, and any contact
    whose stage date HubSpot cleared or never set while it was at the stage.
    """
    entered = definition.stage_entered_property
    if entered is None:
        raise ValueError(f"lifecycle stage {definition.lifecycle_stage!r} has no entry date")
    modified = _filter(LAST_MODIFIED, "GTE", str(since_millis))
    other_stages = (
        [_filter(LIFECYCLE_STAGE, "NEQ", definition.lifecycle_stage)],
        [_filter(LIFECYCLE_STAGE, "NOT_HAS_PROPERTY")],
    )
    was_at_stage = [_filter(entered, "HAS_PROPERTY")]
    groups: list[list[Filter]] = []
    if definition.mql_property:
        name = definition.mql_property
        other_value = [_filter(name, "HAS_PROPERTY"), _filter(name, "NEQ", definition.mql_value)]
        no_value = [_filter(name, "NOT_HAS_PROPERTY")]
        groups += [[*other_value, *stage] for stage in other_stages]
        groups += [[*was_at_stage, *no_value, *stage] for stage in other_stages]
    else:
        groups += [[*was_at_stage, *stage] for stage in other_stages]
    groups.append([_filter(MERGED_IDS_PROPERTY, "HAS_PROPERTY")])
    # The time filter last: the order means nothing to HubSpot, and the sandbox, which tries
    # filters in order, skips parsing most records' stamps.
    return _groups([[*group, modified] for group in groups], after_id)


def _search_contacts(
    dest: HubSpotDestination,
    groups: Callable[[str | None], list[FilterGroup]],
    properties: list[str],
    counts: ReadCounts,
) -> Iterator[Mapping[str, Any]]:
    """Every contact matching ``groups(above_id)``, 200 a page in id order, past the cap."""
    api = _apis_of(dest).contacts_search

    def fetch(above_id: str | None, after: str | None) -> dict[str, Any]:
        request = PublicObjectSearchRequest(
            filter_groups=groups(above_id),
            sorts=[{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            properties=properties,
            limit=SEARCH_PAGE_SIZE,
            after=after,
        )
        send = functools.partial(
            api.do_search,
            public_object_search_request=request,
            _request_timeout=dest.timeout,
            _preload_content=False,
        )
        counts.searches += 1
        return _call(dest, "read", api, functools.partial(read_json, send))

    return search_in_id_windows(fetch, object_name="contacts")


def _email(result: Mapping[str, Any]) -> str | None:
    """A search result's email, stripped; None when it has none."""
    properties = result.get("properties")
    email = properties.get("email") if isinstance(properties, dict) else None
    return email.strip() if isinstance(email, str) and email.strip() else None


def read_hubspot_mqls(
    dest: HubSpotDestination,
    *,
    lifecycle_stage: str = "marketingqualifiedlead",
    mql_property: str | None = None,
    mql_value: str = "true",
    counts: ReadCounts | None = None,
) -> Iterator[tuple[str, str, str]]:
    """Marketing-qualified contacts as ``("hubspot_contact", contact id, email)``.

    A contact qualifies when its ``lifecyclestage`` is ``lifecycle_stage`` or (when
    ``mql_property`` is set) that property equals ``mql_value`` (``"true"`` for a checkbox).
    Searched 200 a page with the filters sent to HubSpot, in contact-id order. The search API
    returns at most 10,000 results per query: past that, the search goes on from the last id
    read (``hs_object_id`` GT it), so only MQLs are ever read (logged as
    ``hubspot_search_cap``). Emails are returned as stored; free-mail ones are the caller's
    to skip and count. ``counts`` adds up the search pages sent.
    """

    def groups(above_id: str | None) -> list[FilterGroup]:
        return mql_filter_groups(lifecycle_stage, mql_property, mql_value, after_id=above_id)

    for result in _search_contacts(dest, groups, ["email"], counts or ReadCounts()):
        email = _email(result)
        if email is not None:
            yield CONTACT_SOURCE, str(result.get("id")), email


def read_hubspot_mql_changes(
    dest: HubSpotDestination, definition: MqlDefinition, since: datetime
) -> MqlChanges:
    """How the MQLs changed at or after ``since``, in three reads, in this order:

    1. the contacts modified since that stopped qualifying, and those a merge left (one
       search, ``departed_mql_filter_groups``): the former are ``departed``, the ids merged
       into the latter ``gone``;
    2. the contacts modified since that qualify, with their emails (``qualifying``; one
       search, ``changed_mql_filter_groups``): read after 1, so a contact in both was read
       qualifying last;
    3. the archived contacts (``read_archived_contact_ids``), ``gone``: the archive does not
       lag as search does, so an archived contact a lagging search still shows is gone.

    Raises ``ValueError`` for a definition whose stage has no entry date (a custom stage).
    """
    changes = MqlChanges()
    since_millis = epoch_millis(since)

    def departed(above_id: str | None) -> list[FilterGroup]:
        return departed_mql_filter_groups(definition, since_millis, after_id=above_id)

    def changed(above_id: str | None) -> list[FilterGroup]:
        return changed_mql_filter_groups(definition, since_millis, after_id=above_id)

    for result in _search_contacts(dest, departed, [MERGED_IDS_PROPERTY], changes.counts):
        changes.departed.add(str(result.get("id")))
        changes.gone.update(merged_ids(result))
    for result in _search_contacts(dest, changed, ["email"], changes.counts):
        changes.qualifying[str(result.get("id"))] = _email(result)
    changes.gone.update(read_archived_contact_ids(dest, changes.counts))
    return changes


def read_archived_contact_ids(
    dest: HubSpotDestination, counts: ReadCounts | None = None
) -> Iterator[str]:
    """Ids of the archived contacts (``GET /crm/v3/objects/contacts?archived=true``, 100 a
    page), each followed by the ids merged into it: none of them is a live contact.

    The list has no time filter: all of it is paged (HubSpot keeps archived records 90 days).
    """
    api = _apis_of(dest).contacts_basic
    counts = counts or ReadCounts()
    after: str | None = None
    while True:
        cursor = {"after": after} if after else {}
        fetch = functools.partial(
            api.get_page,
            limit=PAGE_SIZE,
            properties=[MERGED_IDS_PROPERTY],
            archived=True,
            _request_timeout=dest.timeout,
            _preload_content=False,
            **cursor,
        )
        counts.lists += 1
        page = _call(dest, "read", api, functools.partial(read_json, fetch))
        for result in page.get("results") or ():
            if isinstance(result, Mapping):
                yield str(result.get("id"))
                yield from merged_ids(result)
        after = next_after(page)
        if not after:
            return


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
