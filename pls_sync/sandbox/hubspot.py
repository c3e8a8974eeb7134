"""The sandbox's HubSpot CRM v3 subset: objects, search, batches, properties and rate limits.

Speaks enough of ``api.hubapi.com`` for the unmodified hubspot-api-client to work against it:
companies, contacts, tasks and deals under ``/crm/v3/objects``, property definitions and groups
under ``/crm/v3/properties``, private-app bearer auth, the ``X-HubSpot-RateLimit-*`` headers with
a real ten-second sliding window and a daily allowance, and HubSpot's error bodies. Shapes follow
HubSpot's documented examples; ``tests/sandbox/test_hubspot_api.py`` cites them.

Deals live in pipelines: ``GET /crm/v3/pipelines/deals`` lists them (the default "Sales
Pipeline" with HubSpot's default stage ids, each stage's ``metadata`` holding ``isClosed`` and
``probability`` as strings; ``HubSpotApi.add_deal_pipeline`` adds one), and a deal's calculated
``hs_is_closed`` and ``hs_is_closed_won`` follow its stage. Deals are associated with companies
(type 5, primary, which also gives 341, unlabeled) when created; ``POST
/crm/v4/associations/{from}/{to}/batch/read`` reads associations either way, at most 1,000
inputs, an input without any being an error of its 207 answer.

Records disappear as in a portal: ``DELETE /crm/v3/objects/{type}/{id}`` and ``batch/archive``
move them to the archive (out of lists, search and writes; ``GET ...?archived=true`` lists them
with ``archivedAt``); ``POST /crm/v3/objects/{companies|contacts}/merge`` leaves one record with a
new id, ``hs_merged_object_ids`` and a fresh ``hs_lastmodifieddate``, and the old ids read as it.
``GET /account-info/v3/details`` answers the portal id; ``POST /__sandbox/hubspot/identity``
(``{"portal_id": 123, "clear_properties": ["pqa_score"]}``, both optional) makes the sandbox
"another portal" with the same companies (``HubSpotApi.change_identity`` in process).

Properties change as in a portal: ``PATCH /crm/v3/properties/{objectType}/{name}`` (label,
description, group, order, options replaced as a whole) and ``DELETE`` (archive a custom
property; ``GET ...?archived=true`` lists archived ones). For what the public API cannot do,
``POST /__sandbox/hubspot/schema`` takes a JSON body naming ``object`` and ``field`` and one or
more changes (``HubSpotApi.change_property`` in process):

* ``{"object": "companies", "field": "pqa_motion", "picklist": ["sales", "success"]}``:
  replace an enumeration's options;
* ``{"object": "companies", "field": "pqa_score", "updateable": false}``: read-only value;
* ``{"object": "companies", "field": "pqa_tier", "delete": true}``: archive it;
* ``"label": "..."``; ``"restricted": false`` is a 400 (every enumeration refuses other values).

It answers 200 ``{"object", "field", "describe": <the definition or null>}``, 400
``{"message"}`` for a change HubSpot would refuse, 404 for an unknown property. Writes follow
at once: PROPERTY_DOESNT_EXIST, INVALID_OPTION, READ_ONLY_VALUE.

Properties and groups are created as in a portal (``POST /crm/v3/properties/{objectType}`` and
``.../groups``): 201 with the definition; 409 when the name is taken; 400 VALIDATION_ERROR for
a ``type``/``fieldType`` pair HubSpot does not pair, an unknown group or an enumeration without
options. Reading properties needs the object's schema read scope and changing them its write
scope (``SCHEMA_SCOPES``, e.g. ``crm.schemas.companies.write``); a token without it
(``HubSpotApi.scopes``) gets HubSpot's 403 ``MISSING_SCOPES`` naming the scope in
``errors[].context.requiredGranularScopes``. ``HubSpotApi(bare=True)`` is a portal without
pls-sync's properties, for ``pls-sync setup`` to create them.

Where a client's correctness depends on it, the sandbox behaves like HubSpot rather than like
a kind database. Each behaviour is on by default and tunable on ``HubSpotApi``:

* **Search lags writes** (``search_lag_seconds``, default 3; 0 turns it off). HubSpot: "It may
  take a few moments for newly created or updated CRM objects to appear in search results."
  Every create, update, archive and merge reaches the search index ``search_lag_seconds`` after
  it happened on the API's ``clock``: until then a search does not find a new record, finds an
  updated one by its old values (and returns them), and still finds an archived or merged-away
  one. Lists, single reads and batch reads are not lagged. Tests move the clock
  (``Sandbox.set_clock``) instead of sleeping.
* **Search has its own rate limit** (``search_per_second``, default 5; 0 or None turns it off).
  HubSpot: "The search endpoints are rate limited to five requests per second per account", and
  "Responses from the search API endpoints will not include any of the rate limit headers".
  Searches count toward the daily allowance, not the ten-second window; past the limit they get
  429 ``{"status": "error", "message": "You have reached your secondly limit.", "category":
  "RATE_LIMITS"}`` with neither ``Retry-After`` nor ``X-HubSpot-RateLimit-*`` headers.
* **A 429 does not always say when to retry** (``retry_after_rate``, default 0.5): a
  ten-second-window 429 carries ``Retry-After`` on that seeded share of answers only; the daily
  429 is the documented body (``policyName`` ``DAILY``) and never carries it.
* **Unique values are enforced** (``hasUniqueValue``, e.g. contacts' ``email``): a create, batch
  create, update, batch update or upsert that gives a record a value another live record of the
  type holds is refused: a contact email with HubSpot's 409 ``CONFLICT`` "Contact already
  exists. Existing ID: <id>", a custom unique property with a 400 ``VALIDATION_ERROR`` naming the
  property (``VALUE_NOT_UNIQUE``; a batch update answers it record by record in its 207).
* **``idProperty`` works on single records**: ``GET`` and ``PATCH``
  ``/crm/v3/objects/{type}/{value}?idProperty=<unique property>``; a property without unique
  values is refused as HubSpot refuses it ("Unable to perform update/upsert by non-unique ...").

The CRM exports API (``/crm/v3/exports/...``: start, status, the pre-signed file) lives in
``pls_sync.sandbox.hubspot_exports`` (``HubSpotApi.exports``, with its knobs).

Standard library only. State lives in memory behind one lock; the server may call ``handle``
from several threads.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
import json
import math
import random
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from pls_sync.sandbox.http import Request, Response
from pls_sync.sandbox.salesforce import parse_schema_change

API_PREFIX = "/crm/v3/"
ASSOCIATIONS_V4_PREFIX = "/crm/v4/associations/"
ACCOUNT_INFO_PREFIX = "/account-info/"
ACCOUNT_DETAILS_PATH = "/account-info/v3/details"
OBJECT_TYPES = ("companies", "contacts", "tasks", "deals")
# The object types ``POST /crm/v3/objects/{type}/merge`` serves here.
MERGEABLE_TYPES = ("companies", "contacts")
LIST_PAGE_MAX = 100
SEARCH_PAGE_MAX = 200
SEARCH_RESULT_CAP = 10_000
BATCH_MAX = 100
# "The Batch Read Associations API request body now supports a maximum of 1000 entries in the
# inputs field" (HubSpot changelog, February 2025). The sandbox pages each record's associations
# 500 at a time ("The 'paging' field will only be present if there are more pages").
ASSOCIATION_BATCH_MAX = 1000
ASSOCIATION_PAGE_MAX = 500
SEARCH_MAX_GROUPS = 5
SEARCH_MAX_FILTERS_PER_GROUP = 10
SEARCH_MAX_FILTERS = 25
WINDOW_MS = 10_000
DEFAULT_BURST = 100
DEFAULT_DAILY = 250_000
PORTAL_ID = 24_681_357
# How long a write takes to reach the search index: "a few moments" in HubSpot's words.
DEFAULT_SEARCH_LAG = 3.0
# "The search endpoints are rate limited to five requests per second per account."
DEFAULT_SEARCH_PER_SECOND = 5
# The share of ten-second-window 429s that carry a Retry-After header.
DEFAULT_RETRY_AFTER_RATE = 0.5
# Unique values taken, by property: lowered value -> the record (or batch input) holding it.
_Held = dict[str, dict[str, str]]
# HubSpot's object type ids, as its messages name the types.
_OBJECT_TYPE_IDS = {"contacts": "0-1", "companies": "0-2", "deals": "0-3", "tasks": "0-27"}

# The scopes reading and changing each object type's properties need (``crm.schemas.*``;
# tasks are engagements, whose API asks the contacts scopes), as (read, write).
SCHEMA_SCOPES = {
    "companies": ("crm.schemas.companies.read", "crm.schemas.companies.write"),
    "contacts": ("crm.schemas.contacts.read", "crm.schemas.contacts.write"),
    "tasks": ("crm.objects.contacts.read", "crm.objects.contacts.write"),
    "deals": ("crm.schemas.deals.read", "crm.schemas.deals.write"),
}
# A private app's token has these unless a test takes some away (``HubSpotApi.scopes``);
# ``crm.export`` is the exports API's (``pls_sync.sandbox.hubspot_exports``).
DEFAULT_SCOPES = frozenset(scope for pair in SCHEMA_SCOPES.values() for scope in pair) | {
    "crm.export"
}
SCOPES_LINK = "https://developers.hubspot.com/scopes"
MISSING_SCOPES_MESSAGE = (
    "This app hasn't been granted all required scopes to make this call. "
    f"Read more about required scopes here: {SCOPES_LINK}."
)
# What ``bare`` leaves out: pls-sync's company properties (this prefix) and its task property.
PLS_SYNC_PREFIX = "pqa_"
PLS_SYNC_GROUP = "pqa"

# Task association type ids (HUBSPOT_DEFINED): task -> company 192, task -> contact 204.
TASK_ASSOCIATIONS = {192: "companies", 204: "contacts"}
# Deal association type ids (HUBSPOT_DEFINED): deal -> primary company 5, deal -> company 341
# (unlabeled), deal -> contact 3.
DEAL_TO_PRIMARY_COMPANY = 5
DEAL_TO_COMPANY = 341
DEAL_ASSOCIATIONS = {
    DEAL_TO_PRIMARY_COMPANY: "companies",
    DEAL_TO_COMPANY: "companies",
    3: "contacts",
}
# Each stored association's v3 type name -> (v4 typeId, label), and the type of the same link
# read from the other side (v4 reads either way). HubSpot renamed the primary labels "<Object>
# with Primary Company" and says "only the typeId should be used for any programmatic reference".
_PRIMARY_LABEL = "Deal with Primary Company"
_ASSOCIATION_TYPES: dict[str, tuple[int, str | None]] = {
    "task_to_company": (192, None),
    "task_to_contact": (204, None),
    "deal_to_company": (DEAL_TO_PRIMARY_COMPANY, _PRIMARY_LABEL),
    "deal_to_company_unlabeled": (DEAL_TO_COMPANY, None),
    "deal_to_contact": (3, None),
    "company_to_task": (191, None),
    "contact_to_task": (203, None),
    "company_to_deal": (6, _PRIMARY_LABEL),
    "company_to_deal_unlabeled": (342, None),
    "contact_to_deal": (4, None),
}
_INVERSE_TYPES = {
    "task_to_company": "company_to_task",
    "task_to_contact": "contact_to_task",
    "deal_to_company": "company_to_deal",
    "deal_to_company_unlabeled": "company_to_deal_unlabeled",
    "deal_to_contact": "contact_to_deal",
}

# The singular names HubSpot uses in some messages.
_SINGULAR = {"companies": "COMPANY", "contacts": "CONTACT", "tasks": "TASK", "deals": "DEAL"}
_LASTMODIFIED = {
    "companies": "hs_lastmodifieddate",
    "contacts": "lastmodifieddate",
    "tasks": "hs_lastmodifieddate",
    "deals": "hs_lastmodifieddate",
}
_CREATED = {
    "companies": "createdate",
    "contacts": "createdate",
    "tasks": "hs_createdate",
    "deals": "createdate",
}
_DEFAULT_PROPERTIES = {
    "companies": ("name", "domain"),
    "contacts": ("firstname", "lastname", "email"),
    "tasks": ("hs_task_subject", "hs_timestamp"),
    "deals": ("dealname", "amount", "closedate", "pipeline", "dealstage"),
}
_SEARCHABLE = {
    "companies": ("name", "domain", "website", "phone"),
    "contacts": ("firstname", "lastname", "email", "phone", "company"),
    "tasks": ("hs_task_subject", "hs_task_body"),
    "deals": ("dealname",),
}
_ID_BASE = {
    "companies": 9_000_000_000,
    "contacts": 1_000,
    "tasks": 70_000_000_000,
    "deals": 30_000_000_000,
}
DEFAULT_PIPELINE = "default"
# HubSpot's default deal pipeline ("Sales Pipeline"): stage id, label, probability, closed.
# "For deals, probability is required with a value between 0.0 and 1.0, 0.0 being Closed Lost
# and 1.0 being Closed Won" (CRM API | Pipelines).
DEFAULT_DEAL_STAGES: tuple[tuple[str, str, float, bool], ...] = (
    ("appointmentscheduled", "Appointment Scheduled", 0.2, False),
    ("qualifiedtobuy", "Qualified To Buy", 0.4, False),
    ("presentationscheduled", "Presentation Scheduled", 0.6, False),
    ("decisionmakerboughtin", "Decision Maker Bought-In", 0.8, False),
    ("contractsent", "Contract Sent", 0.9, False),
    ("closedwon", "Closed Won", 1.0, True),
    ("closedlost", "Closed Lost", 0.0, True),
)
_OPEN_DEAL_STAGES = tuple(stage for stage, _, _, closed in DEFAULT_DEAL_STAGES if not closed)

LIFECYCLE_STAGES = (
    ("subscriber", "Subscriber"),
    ("lead", "Lead"),
    ("marketingqualifiedlead", "Marketing Qualified Lead"),
    ("salesqualifiedlead", "Sales Qualified Lead"),
    ("opportunity", "Opportunity"),
    ("customer", "Customer"),
    ("evangelist", "Evangelist"),
    ("other", "Other"),
)
# HubSpot stamps "Became a <stage> Date" (``hs_lifecyclestage_<stage>_date``, read-only) when a
# contact first enters a default lifecycle stage, and keeps it when the contact moves on.
STAGE_ENTERED = {stage: f"hs_lifecyclestage_{stage}_date" for stage, _ in LIFECYCLE_STAGES}
LEAD_STATUSES = (
    ("NEW", "New"),
    ("OPEN", "Open"),
    ("IN_PROGRESS", "In Progress"),
    ("OPEN_DEAL", "Open Deal"),
    ("UNQUALIFIED", "Unqualified"),
    ("ATTEMPTED_TO_CONTACT", "Attempted to Contact"),
    ("CONNECTED", "Connected"),
    ("BAD_TIMING", "Bad Timing"),
)
BASE_INDUSTRIES = (
    "COMPUTER_SOFTWARE",
    "INFORMATION_TECHNOLOGY_AND_SERVICES",
    "INTERNET",
    "FINANCIAL_SERVICES",
    "HOSPITAL_HEALTH_CARE",
    "RETAIL",
    "MARKETING_AND_ADVERTISING",
    "EDUCATION_MANAGEMENT",
    "LOGISTICS_AND_SUPPLY_CHAIN",
    "MANUFACTURING",
)
PQA_TIERS = (("sales", "Sales"), ("success", "Success"), ("self_serve", "Self-serve"))
PQA_CHANNELS = (
    ("usage_pql", "Usage + PQL"),
    ("usage_mql", "Usage + MQL"),
    ("mql_only", "MQL only"),
    ("usage_no_buyer", "Usage, no buyer (ABM)"),
)
PQA_MOTIONS = (
    ("sales", "Sales"),
    ("success", "Success"),
    ("abm", "ABM"),
    ("self_serve", "Self-serve"),
)

PORTAL_CREATED = "2021-03-01T09:00:00.000Z"
_SEED_EPOCH = datetime(2025, 6, 1, tzinfo=UTC)

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# --------------------------------------------------------------------------- time and values


def iso_ms(moment: datetime) -> str:
    """``2026-11-22T10:00:00.000Z``: how HubSpot writes datetimes."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_moment(text: str) -> datetime | None:
    """A HubSpot datetime value: epoch milliseconds or ISO 8601 (``Z`` or an offset)."""
    text = text.strip()
    if re.fullmatch(r"-?\d{1,16}", text):
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _epoch_ms(moment: datetime) -> int:
    return int(round(moment.timestamp() * 1000))


def _number_text(number: Decimal) -> str:
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f")


class PropertyValueError(Exception):
    """One property value refused, with HubSpot's error code (``INVALID_OPTION``...)."""

    def __init__(self, name: str, code: str, message: str):
        super().__init__(message)
        self.name = name
        self.code = code
        self.message = message

    def detail(self, portal_id: int = PORTAL_ID) -> dict[str, Any]:
        """The element HubSpot lists inside "Property values were not valid: [...]"."""
        return {
            "isValid": False,
            "message": self.message,
            "error": self.code,
            "name": self.name,
            "localizedErrorMessage": self.message,
            "portalId": portal_id,
        }


def normalise_value(definition: dict[str, Any], raw: Any) -> str:
    """The stored text of ``raw`` for a property, or ``PropertyValueError`` as HubSpot refuses it.

    ``""`` (or null) clears. Numbers come back without trailing zeros, dates as ``YYYY-MM-DD``
    at midnight UTC, datetimes as ISO 8601 with milliseconds.
    """
    name = definition["name"]
    if raw is None:
        return ""
    if isinstance(raw, bool):
        text = "true" if raw else "false"
    elif isinstance(raw, (int, float)):
        text = repr(raw) if isinstance(raw, float) else str(raw)
    elif isinstance(raw, str):
        text = raw
    else:
        raise PropertyValueError(
            name, "INVALID_PROPERTY_VALUE", f"{json.dumps(raw)} is not a valid value"
        )
    if text == "":
        return ""
    kind = definition["type"]
    if kind == "number":
        stripped = text.strip()
        if not _NUMBER.match(stripped):
            raise PropertyValueError(name, "INVALID_DECIMAL", f"{text} was not a valid number.")
        try:
            number = Decimal(stripped)
        except InvalidOperation:
            raise PropertyValueError(
                name, "INVALID_DECIMAL", f"{text} was not a valid number."
            ) from None
        if not number.is_finite():
            raise PropertyValueError(name, "INVALID_DECIMAL", f"{text} was not a valid number.")
        return _number_text(number)
    if kind == "enumeration":
        allowed = [option["value"] for option in definition["options"]]
        chosen = text.split(";") if definition["fieldType"] == "checkbox" else [text]
        for value in chosen:
            if value not in allowed:
                raise PropertyValueError(
                    name,
                    "INVALID_OPTION",
                    f"{value} was not one of the allowed options: [{', '.join(allowed)}]",
                )
        return text
    if kind == "bool":
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise PropertyValueError(
                name, "INVALID_BOOLEAN", f"{text} is not a valid boolean value"
            )
        return lowered
    if kind == "date":
        stripped = text.strip()
        if _DAY.match(stripped):
            try:
                return date.fromisoformat(stripped).isoformat()
            except ValueError:
                pass
        moment = parse_moment(stripped)
        if moment is None:
            raise PropertyValueError(name, "INVALID_DATE", f"{text} is not a valid date")
        if (moment.hour, moment.minute, moment.second, moment.microsecond) != (0, 0, 0, 0):
            raise PropertyValueError(
                name,
                "INVALID_DATE",
                f"{text} is at {moment.strftime('%H:%M:%S.%f')[:-3]} UTC, not midnight!",
            )
        return moment.date().isoformat()
    if kind == "datetime":
        moment = parse_moment(text)
        if moment is None:
            raise PropertyValueError(name, "INVALID_DATETIME", f"{text} is not a valid datetime")
        return iso_ms(moment)
    return text


# --------------------------------------------------------------------------- property definitions


def _prop(
    name: str,
    label: str,
    kind: str,
    field_type: str,
    group: str,
    *,
    options: Iterable[tuple[str, str]] = (),
    read_only: bool = False,
    hubspot_defined: bool = True,
    unique: bool = False,
    calculated: bool = False,
    description: str = "",
) -> dict[str, Any]:
    return {
        "updatedAt": PORTAL_CREATED,
        "createdAt": PORTAL_CREATED,
        "name": name,
        "label": label,
        "type": kind,
        "fieldType": field_type,
        "description": description,
        "groupName": group,
        "options": [
            {"label": text, "value": value, "displayOrder": order, "hidden": False}
            for order, (value, text) in enumerate(options)
        ],
        "displayOrder": -1,
        "calculated": calculated,
        "externalOptions": False,
        "hasUniqueValue": unique,
        "hidden": False,
        "hubspotDefined": hubspot_defined,
        "modificationMetadata": {
            "archivable": not hubspot_defined,
            "readOnlyDefinition": hubspot_defined,
            "readOnlyValue": read_only,
        },
        "formField": not read_only,
        "archived": False,
    }


def _industry_value(industry: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", industry.upper()).strip("_") or "OTHER"


def _owners() -> list[tuple[str, str]]:
    """HubSpot owner ids and names of the sandbox's sales reps (the Salesforce seed's users)."""
    from pls_sync.sandbox.seed import owners

    return [(str(52_650_001 + index), rep["name"]) for index, rep in enumerate(owners())]


def default_properties(
    industries: Iterable[str] = (),
    mql_property: str = "lifecyclestage",
    owners: Sequence[tuple[str, str]] = (),
) -> dict[str, dict[str, dict[str, Any]]]:
    """The portal's property definitions by object type, PQA properties included."""
    industry_options = [(v, v.replace("_", " ").title()) for v in BASE_INDUSTRIES]
    for industry in industries:
        value = _industry_value(industry)
        if value not in {v for v, _ in industry_options}:
            industry_options.append((value, industry))
    owners = list(owners)
    info = "companyinformation"
    companies = [
        _prop("name", "Name", "string", "text", info),
        _prop("domain", "Company Domain Name", "string", "text", info),
        _prop("hs_additional_domains", "Additional Domains", "string", "text", info),
        _prop("website", "Website URL", "string", "text", info),
        _prop("industry", "Industry", "enumeration", "select", info, options=industry_options),
        _prop("numberofemployees", "Number of Employees", "number", "number", info),
        _prop("annualrevenue", "Annual Revenue", "number", "number", info),
        _prop("city", "City", "string", "text", info),
        _prop("country", "Country/Region", "string", "text", info),
        _prop("phone", "Phone Number", "string", "phonenumber", info),
        _prop("description", "Description", "string", "textarea", info),
        _prop(
            "lifecyclestage",
            "Lifecycle Stage",
            "enumeration",
            "radio",
            info,
            options=LIFECYCLE_STAGES,
        ),
        _prop(
            "type",
            "Type",
            "enumeration",
            "select",
            info,
            options=[
                (v, v.title()) for v in ("PROSPECT", "PARTNER", "RESELLER", "VENDOR", "OTHER")
            ],
        ),
        _prop("hubspot_owner_id", "Company owner", "enumeration", "select", info, options=owners),
        _prop("hs_object_id", "Record ID", "number", "number", info, read_only=True),
        _prop("createdate", "Create Date", "datetime", "date", info, read_only=True),
        _prop(
            "hs_lastmodifieddate", "Last Modified Date", "datetime", "date", info, read_only=True
        ),
        _prop("hs_parent_company_id", "Parent Company", "number", "number", info, read_only=True),
        _prop(
            "hs_num_child_companies",
            "Number of child companies",
            "number",
            "number",
            info,
            read_only=True,
            calculated=True,
        ),
        # Set by HubSpot on the record a merge leaves: the ids merged into it, ``;``-separated.
        _prop(
            "hs_merged_object_ids",
            "Merged Company IDs",
            "enumeration",
            "checkbox",
            info,
            read_only=True,
        ),
    ]
    pqa: list[tuple[str, str, str, str, Sequence[tuple[str, str]]]] = [
        ("pqa_score", "PQA score", "number", "number", ()),
        ("pqa_tier", "PQA tier", "enumeration", "select", PQA_TIERS),
        ("pqa_signals", "PQA signals", "string", "textarea", ()),
        ("pqa_score_change", "PQA score change", "number", "number", ()),
        ("pqa_active_users", "PQA active users (28 days)", "number", "number", ()),
        ("pqa_qualified_since", "PQA qualified since", "datetime", "date", ()),
        ("pqa_last_scored", "PQA last scored", "datetime", "date", ()),
        ("pqa_lead_channel", "PQA lead channel", "enumeration", "select", PQA_CHANNELS),
        ("pqa_motion", "PQA motion", "enumeration", "select", PQA_MOTIONS),
    ]
    companies += [
        _prop(name, label, kind, ftype, "pqa", options=opts, hubspot_defined=False)
        for name, label, kind, ftype, opts in pqa
    ]
    contact = "contactinformation"
    contacts = [
        _prop("email", "Email", "string", "text", contact, unique=True),
        _prop("firstname", "First Name", "string", "text", contact),
        _prop("lastname", "Last Name", "string", "text", contact),
        _prop("jobtitle", "Job Title", "string", "text", contact),
        _prop("company", "Company Name", "string", "text", contact),
        _prop("phone", "Phone Number", "string", "phonenumber", contact),
        _prop(
            "lifecyclestage",
            "Lifecycle Stage",
            "enumeration",
            "radio",
            contact,
            options=LIFECYCLE_STAGES,
        ),
        _prop(
            "hs_lead_status", "Lead Status", "enumeration", "radio", contact, options=LEAD_STATUSES
        ),
        _prop("associatedcompanyid", "Primary Associated Company ID", "number", "number", contact),
        _prop(
            "hubspot_owner_id", "Contact owner", "enumeration", "select", contact, options=owners
        ),
        _prop("hs_email_domain", "Email Domain", "string", "text", contact, read_only=True),
        _prop("hs_object_id", "Record ID", "number", "number", contact, read_only=True),
        _prop("createdate", "Create Date", "datetime", "date", contact, read_only=True),
        _prop(
            "lastmodifieddate", "Last Modified Date", "datetime", "date", contact, read_only=True
        ),
        _prop(
            "hs_merged_object_ids",
            "Merged Contact IDs",
            "enumeration",
            "checkbox",
            contact,
            read_only=True,
        ),
        *(
            _prop(
                STAGE_ENTERED[stage],
                f"Became {'an' if label[0] in 'AEIOU' else 'a'} {label} Date",
                "datetime",
                "date",
                contact,
                read_only=True,
            )
            for stage, label in LIFECYCLE_STAGES
        ),
    ]
    if mql_property not in {p["name"] for p in contacts}:
        contacts.append(
            _prop(
                mql_property,
                "Marketing qualified",
                "enumeration",
                "select",
                contact,
                options=[("yes", "Yes"), ("no", "No")],
                hubspot_defined=False,
            )
        )
    task = "task"
    tasks = [
        _prop("hs_task_subject", "Task Title", "string", "text", task),
        _prop("hs_task_body", "Task notes", "string", "textarea", task),
        _prop("hs_timestamp", "Due date", "datetime", "date", task),
        _prop(
            "hs_task_status",
            "Task Status",
            "enumeration",
            "select",
            task,
            options=[
                (v, v.replace("_", " ").title())
                for v in ("NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED")
            ],
        ),
        _prop(
            "hs_task_priority",
            "Priority",
            "enumeration",
            "select",
            task,
            options=[(v, v.title()) for v in ("NONE", "LOW", "MEDIUM", "HIGH")],
        ),
        _prop(
            "hs_task_type",
            "Task Type",
            "enumeration",
            "select",
            task,
            options=[(v, v.title()) for v in ("TODO", "CALL", "EMAIL")],
        ),
        _prop("hubspot_owner_id", "Assigned to", "enumeration", "select", task, options=owners),
        # pls-sync's idempotency key for rep alerts: one task per key, found again by search.
        _prop("pqa_alert_key", "PQA alert key", "string", "text", task, hubspot_defined=False),
        _prop("hs_object_id", "Record ID", "number", "number", task, read_only=True),
        _prop("hs_createdate", "Create Date", "datetime", "date", task, read_only=True),
        _prop(
            "hs_lastmodifieddate", "Last Modified Date", "datetime", "date", task, read_only=True
        ),
    ]
    return {
        "companies": {p["name"]: p for p in companies},
        "contacts": {p["name"]: p for p in contacts},
        "tasks": {p["name"]: p for p in tasks},
        "deals": {p["name"]: p for p in _deal_properties(owners)},
    }


def _deal_properties(owners: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Deals' properties: the pipeline and stage (options from the default pipeline), close date,
    amount, and HubSpot's calculated closed and closed-won flags."""
    info = "dealinformation"
    return [
        _prop("dealname", "Deal Name", "string", "text", info),
        _prop(
            "pipeline",
            "Pipeline",
            "enumeration",
            "select",
            info,
            options=[(DEFAULT_PIPELINE, "Sales Pipeline")],
        ),
        _prop(
            "dealstage",
            "Deal Stage",
            "enumeration",
            "radio",
            info,
            options=[(stage, label) for stage, label, _, _ in DEFAULT_DEAL_STAGES],
        ),
        _prop("closedate", "Close Date", "datetime", "date", info),
        _prop("amount", "Amount", "number", "number", info),
        _prop(
            "dealtype",
            "Deal Type",
            "enumeration",
            "radio",
            info,
            options=[("newbusiness", "New Business"), ("existingbusiness", "Existing Business")],
        ),
        _prop("description", "Deal Description", "string", "textarea", info),
        _prop("hubspot_owner_id", "Deal owner", "enumeration", "select", info, options=owners),
        _prop(
            "hs_is_closed",
            "Is Deal Closed?",
            "bool",
            "booleancheckbox",
            info,
            read_only=True,
            calculated=True,
            options=[("true", "True"), ("false", "False")],
        ),
        _prop(
            "hs_is_closed_won",
            "Is Closed Won",
            "bool",
            "booleancheckbox",
            info,
            read_only=True,
            calculated=True,
            options=[("true", "True"), ("false", "False")],
        ),
        _prop("hs_object_id", "Record ID", "number", "number", info, read_only=True),
        _prop("createdate", "Create Date", "datetime", "date", info, read_only=True),
        _prop(
            "hs_lastmodifieddate", "Last Modified Date", "datetime", "date", info, read_only=True
        ),
    ]


def deal_pipeline(
    pipeline_id: str, label: str, stages: Sequence[tuple[str, str, float, bool]], order: int = 0
) -> dict[str, Any]:
    """A deal pipeline as ``GET /crm/v3/pipelines/deals`` lists it: each stage's ``metadata``
    holds ``isClosed`` and ``probability`` as strings (``"true"``, ``"1.0"``)."""
    return {
        "id": pipeline_id,
        "label": label,
        "displayOrder": order,
        "createdAt": PORTAL_CREATED,
        "updatedAt": PORTAL_CREATED,
        "archived": False,
        "stages": [
            {
                "id": stage,
                "label": stage_label,
                "displayOrder": position,
                "metadata": {
                    "isClosed": "true" if closed else "false",
                    "probability": str(float(probability)),
                },
                "createdAt": PORTAL_CREATED,
                "updatedAt": PORTAL_CREATED,
                "archived": False,
                "writePermissions": "CRUD",
            }
            for position, (stage, stage_label, probability, closed) in enumerate(stages)
        ],
    }


def default_groups() -> dict[str, dict[str, dict[str, Any]]]:
    """Property groups by object type."""

    def group(name: str, label: str, order: int) -> dict[str, Any]:
        return {"name": name, "label": label, "displayOrder": order, "archived": False}

    return {
        "companies": {
            "companyinformation": group("companyinformation", "Company information", 0),
            "pqa": group("pqa", "Product qualified accounts", 1),
        },
        "contacts": {"contactinformation": group("contactinformation", "Contact information", 0)},
        "tasks": {"task": group("task", "Task information", 0)},
        "deals": {"dealinformation": group("dealinformation", "Deal information", 0)},
    }


def _forget_pls_sync(
    properties: dict[str, dict[str, dict[str, Any]]], groups: dict[str, dict[str, dict[str, Any]]]
) -> None:
    """Take pls-sync's properties and group out of a portal's definitions (``bare``)."""
    for definitions in properties.values():
        for name in [n for n in definitions if n.startswith(PLS_SYNC_PREFIX)]:
            del definitions[name]
    groups["companies"].pop(PLS_SYNC_GROUP, None)


def _add_options(definition: dict[str, Any], options: Iterable[tuple[str, str]]) -> None:
    """Append enumeration options a property does not have yet."""
    have = {option["value"] for option in definition["options"]}
    for value, label in options:
        if value not in have:
            have.add(value)
            definition["options"].append(
                {
                    "label": label,
                    "value": value,
                    "displayOrder": len(definition["options"]),
                    "hidden": False,
                }
            )


def _link_types(from_type: str, to_type: str, type_id: int) -> list[str]:
    """The stored association types an association type id gives: a deal's primary company is
    also associated without a label, as in HubSpot."""
    if from_type == "deals" and type_id == DEAL_TO_PRIMARY_COMPANY:
        return ["deal_to_company", "deal_to_company_unlabeled"]
    if from_type == "deals" and type_id == DEAL_TO_COMPANY:
        return ["deal_to_company_unlabeled"]
    return [f"{_SINGULAR[from_type].lower()}_to_{_SINGULAR[to_type].lower()}"]


def _company_links(company_ids: Sequence[str]) -> list[dict[str, str]]:
    """A deal's stored links to its companies: the first is primary (and unlabeled too)."""
    links: list[dict[str, str]] = []
    for position, company_id in enumerate(dict.fromkeys(str(c) for c in company_ids)):
        if position == 0:
            links.append({"id": company_id, "type": "deal_to_company"})
        links.append({"id": company_id, "type": "deal_to_company_unlabeled"})
    return links


def _no_associations_error(from_type: str, from_id: str, to_type: str) -> dict[str, Any]:
    return {
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "subCategory": "crm.associations.NO_ASSOCIATIONS_FOUND",
        "message": (
            f"No {_SINGULAR[to_type].lower()} is associated with "
            f"{_SINGULAR[from_type].lower()} {from_id}."
        ),
        "context": {"fromObjectId": [from_id]},
        "errors": [],
        "links": {},
    }


# --------------------------------------------------------------------------- rate limits


class RateLimiter:
    """HubSpot's two allowances: a ten-second sliding window and a daily count.

    Only requests that get through are counted, so a client that waits recovers.
    """

    def __init__(
        self,
        max_per_window: int = DEFAULT_BURST,
        daily_limit: int = DEFAULT_DAILY,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.max_per_window = max_per_window
        self.daily_limit = daily_limit
        self.daily_used = 0
        self.monotonic = monotonic
        self._hits: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._hits and now - self._hits[0] >= WINDOW_MS / 1000:
            self._hits.popleft()

    def admit(self, *, windowed: bool = True) -> str | None:
        """Count one request, or return the policy (``DAILY``, ``TEN_SECONDLY_ROLLING``) refusing it.

        ``windowed`` False counts the request toward the day only (searches: HubSpot exempts them
        from the ten-second window and limits them per second instead).
        """
        now = self.monotonic()
        self._expire(now)
        if self.daily_used >= self.daily_limit:
            return "DAILY"
        if windowed:
            if len(self._hits) >= self.max_per_window:
                return "TEN_SECONDLY_ROLLING"
            self._hits.append(now)
        self.daily_used += 1
        return None

    def daily_exhausted(self) -> bool:
        """Whether the day's allowance is used up."""
        return self.daily_used >= self.daily_limit

    def retry_after(self) -> int:
        """Whole seconds until the window has room again (at least 1)."""
        now = self.monotonic()
        self._expire(now)
        if not self._hits or len(self._hits) < self.max_per_window:
            return 1
        return max(1, math.ceil(self._hits[0] + WINDOW_MS / 1000 - now))

    def headers(self) -> dict[str, str]:
        """The ``X-HubSpot-RateLimit-*`` headers as they stand now."""
        self._expire(self.monotonic())
        return {
            "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - self.daily_used)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(WINDOW_MS),
            "X-HubSpot-RateLimit-Max": str(self.max_per_window),
            "X-HubSpot-RateLimit-Remaining": str(max(0, self.max_per_window - len(self._hits))),
        }

    def exhaust_daily(self) -> None:
        """Use up the daily allowance (tests of the daily 429)."""
        self.daily_used = self.daily_limit


class SearchRateLimiter:
    """The search endpoints' own allowance: ``per_second`` requests in any one-second window.

    ``per_second`` 0 or None lets every search through. Only searches that get through count.
    """

    def __init__(
        self, per_second: int | None, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_second = per_second
        self.monotonic = monotonic
        self._hits: deque[float] = deque()

    def admit(self) -> bool:
        """Count one search; False when the second's allowance is used up."""
        if not self.per_second:
            return True
        now = self.monotonic()
        while self._hits and now - self._hits[0] >= 1.0:
            self._hits.popleft()
        if len(self._hits) >= self.per_second:
            return False
        self._hits.append(now)
        return True


# --------------------------------------------------------------------------- errors


class HubSpotError(Exception):
    """An error response in HubSpot's shape, raised inside handlers."""

    def __init__(self, status: int, category: str, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.category = category
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body HubSpot sends."""
        body: dict[str, Any] = {
            "status": "error",
            "message": self.message,
            "correlationId": str(uuid.uuid4()),
            "category": self.category,
        }
        body.update(self.extra)
        return body


def missing_scope(scope: str) -> HubSpotError:
    """HubSpot's 403 MISSING_SCOPES for a token without ``scope``."""
    return HubSpotError(
        403,
        "MISSING_SCOPES",
        MISSING_SCOPES_MESSAGE,
        errors=[
            {
                "message": "One or more of the following scopes are required.",
                "context": {"requiredGranularScopes": [scope]},
            }
        ],
        links={"scopes": SCOPES_LINK},
    )


def _validation_failure(errors: Sequence[PropertyValueError], portal_id: int = PORTAL_ID) -> str:
    return "Property values were not valid: " + json.dumps(
        [error.detail(portal_id) for error in errors], separators=(",", ":")
    )


# The admin changes a property accepts (``/__sandbox/hubspot/schema``), with their JSON types.
HUBSPOT_SCHEMA_CHANGES: dict[str, type] = {
    "delete": bool,
    "picklist": list,
    "restricted": bool,
    "updateable": bool,
    "label": str,
}


def _property_options(definition: dict[str, Any], raw: Any) -> list[dict[str, Any]]:
    """An enumeration's new options from a PATCH body; labels kept for values it already had."""
    if definition["type"] != "enumeration":
        raise HubSpotError(
            400, "VALIDATION_ERROR", f"{definition['name']} is not an enumeration property"
        )
    if definition["fieldType"] == "booleancheckbox":
        raise HubSpotError(
            400, "VALIDATION_ERROR", f"{definition['name']} is a single checkbox: true or false"
        )
    labels = {option["value"]: option["label"] for option in definition["options"]}
    return _option_list(raw, labels)


def _option_list(raw: Any, labels: dict[str, str]) -> list[dict[str, Any]]:
    """Options from a request body; an option without a label keeps ``labels``' or its value."""
    if not isinstance(raw, list) or not raw:
        raise HubSpotError(
            400, "VALIDATION_ERROR", "Enumeration properties need at least one option"
        )
    options: list[dict[str, Any]] = []
    for order, item in enumerate(raw):
        value = item.get("value") if isinstance(item, dict) else None
        if not isinstance(value, str) or not value:
            raise HubSpotError(400, "VALIDATION_ERROR", "Every option needs a string value")
        options.append(
            {
                "label": str(item.get("label") or labels.get(value, value)),
                "value": value,
                "displayOrder": _whole(item.get("displayOrder"), order),
                "hidden": bool(item.get("hidden", False)),
            }
        )
    values = [option["value"] for option in options]
    if len(set(values)) != len(values):
        raise HubSpotError(400, "VALIDATION_ERROR", "Option values must be unique")
    return options


def _whole(raw: Any, default: int) -> int:
    """An integer from a request body, ``default`` when absent or null."""
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise HubSpotError(400, "VALIDATION_ERROR", f"Invalid integer: {raw!r}")
    return raw


AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


# --------------------------------------------------------------------------- the API


@dataclass(slots=True)
class _IndexLag:
    """A record's writes that have not reached the search index yet.

    ``indexed`` is the copy of the record search shows meanwhile (None: search does not know
    it). ``writes`` are the writes on their way, oldest first: each write's clock stamp and the
    record as it left it, except the last, whose result is the live record (or its absence).
    """

    indexed: dict[str, Any] | None
    writes: list[tuple[float, dict[str, Any] | None]]


@dataclass(slots=True)
class _Route:
    kind: str  # objects | properties | groups | pipelines | unknown
    object_type: str
    rest: tuple[str, ...]


def _route(path: str) -> _Route:
    parts = tuple(p for p in path[len(API_PREFIX) :].split("/") if p)
    if len(parts) >= 2 and parts[0] == "objects":
        return _Route("objects", parts[1], parts[2:])
    if len(parts) >= 2 and parts[0] == "pipelines":
        return _Route("pipelines", parts[1], parts[2:])
    if len(parts) >= 2 and parts[0] == "properties":
        if len(parts) >= 3 and parts[2] == "groups":
            return _Route("groups", parts[1], parts[3:])
        return _Route("properties", parts[1], parts[2:])
    return _Route("unknown", "", parts)


class HubSpotApi:
    """The HubSpot module of the sandbox: state, routing and HubSpot's responses.

    ``batch_validation``: ``"multi_status"`` (default) answers invalid property values in a
    batch update record by record in a 207; ``"all_or_nothing"`` fails the whole batch with a
    400 VALIDATION_ERROR that does not say which input was wrong, as the live API does for
    property validation, so clients must isolate bad records themselves.

    The portal is seeded from ``companies`` (default: the demo companies for ``seed``) through
    the CRM picture the Salesforce sandbox shares; an empty ``companies`` gives an empty portal.
    ``clock`` stamps writes; ``monotonic`` drives the rate-limit window (tests fake both).

    ``portal_id`` is the account's id (``GET /account-info/v3/details``); ``change_identity``
    turns the sandbox into "another portal". Archived records (``DELETE``, ``batch/archive``)
    leave lists and search and are listed with ``?archived=true``. A merge creates a new record
    with a new id, as HubSpot's merges of contacts and companies now do; both old ids then read
    as the new record. ``merge_keeps_primary_id`` gives the former behaviour (the primary keeps
    its id).

    ``search_lag_seconds`` (default 3) is how long a write takes to reach search;
    ``search_per_second`` (default 5) the search endpoints' own limit; ``retry_after_rate``
    (default 0.5) the share of ten-second-window 429s that carry ``Retry-After``. All three are
    attributes too (see the module docstring); 0 turns each off (``retry_after_rate`` 1.0: always).

    ``bare`` starts a portal that never saw pls-sync: no ``pqa_*`` company property, no ``pqa``
    group, no task property ``pqa_alert_key`` and no stale PQA values on the seeded companies;
    everything else is as without it. ``scopes`` (attribute too) are the scopes the token was
    granted (default ``DEFAULT_SCOPES``): reading or changing an object type's properties
    without its ``SCHEMA_SCOPES`` scope is HubSpot's 403 ``MISSING_SCOPES``.

    Deals are seeded as of ``as_of`` (default: ``seed.default_as_of()``, today 00:00 UTC) from
    the story the demo warehouse tells (``pls_sync.sandbox.seed.crm_deals``), in the default
    pipeline (``DEFAULT_DEAL_STAGES``), associated with their companies.
    """

    def __init__(
        self,
        seed: int = 7,
        *,
        companies: Sequence[Any] | None = None,
        token: str | None = None,
        burst_limit: int = DEFAULT_BURST,
        daily_limit: int = DEFAULT_DAILY,
        batch_validation: str = "multi_status",
        mql_property: str = "lifecyclestage",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        portal_id: int = PORTAL_ID,
        merge_keeps_primary_id: bool = False,
        search_lag_seconds: float = DEFAULT_SEARCH_LAG,
        search_per_second: int | None = DEFAULT_SEARCH_PER_SECOND,
        retry_after_rate: float = DEFAULT_RETRY_AFTER_RATE,
        bare: bool = False,
        scopes: Iterable[str] | None = None,
        as_of: datetime | None = None,
    ):
        self.seed = seed
        self.bare = bare
        self.scopes: set[str] = set(DEFAULT_SCOPES if scopes is None else scopes)
        self.portal_id = portal_id
        self.merge_keeps_primary_id = merge_keeps_primary_id
        self._identity_changes = 0
        rng = random.Random(f"hubspot-token-{seed}")
        self.token = token or "pat-na1-" + str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.batch_validation = batch_validation
        self.mql_property = mql_property
        self.limiter = RateLimiter(burst_limit, daily_limit, monotonic)
        # Reads the main limiter's clock, so a test that fakes one fakes both.
        self.search_limiter = SearchRateLimiter(search_per_second, lambda: self.limiter.monotonic())
        self.retry_after_rate = retry_after_rate
        self._retry_after_rng = random.Random(f"hubspot-retry-after-{seed}")
        self.search_lag_seconds = search_lag_seconds
        # What the search index shows instead of the live record, for records written within
        # the lag: by type and id (see ``_touch``).
        self._unindexed: dict[str, dict[str, _IndexLag]] = {t: {} for t in OBJECT_TYPES}
        self._index_moves = 0
        self.clock = clock
        self._lock = threading.RLock()
        self.objects: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in OBJECT_TYPES}
        # Archived records by type and id (each with its ``archivedAt``), out of lists and search.
        self.archived: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in OBJECT_TYPES}
        # Ids a merge retired, by type: each points at the record it now reads as.
        self.merged_into: dict[str, dict[str, str]] = {t: {} for t in OBJECT_TYPES}
        # Every search request body received, by object type, so tests can see the filters sent.
        self.searches: list[tuple[str, dict[str, Any]]] = []
        # The matches of the last search per query, so its later pages are not filtered and
        # sorted again; any write through the API makes them stale (as an index would).
        self._writes = 0
        self._search_matches: dict[str, tuple[tuple[int, int], list[dict[str, Any]]]] = {}
        self._next_id = dict(_ID_BASE)
        if companies is None:
            companies = _demo_companies(seed)
        # No companies means an empty portal (the server's unseeded sandbox), not CRM-only ones.
        picture = _crm_picture(companies, seed) if companies else []
        self.owners = _owners()
        self.properties = default_properties(
            (str(item["industry"]) for item in picture if item.get("industry")),
            mql_property,
            self.owners,
        )
        self.groups = default_groups()
        # Deal pipelines by id, as ``GET /crm/v3/pipelines/deals`` lists them.
        self.deal_pipelines: dict[str, dict[str, Any]] = {
            DEFAULT_PIPELINE: deal_pipeline(DEFAULT_PIPELINE, "Sales Pipeline", DEFAULT_DEAL_STAGES)
        }
        if bare:
            _forget_pls_sync(self.properties, self.groups)
        self.archived_properties: dict[str, dict[str, dict[str, Any]]] = {
            t: {} for t in OBJECT_TYPES
        }
        # HubSpot's own read-only and calculated properties: no admin can make them writable.
        self._read_only_at_start = {
            (object_type, name)
            for object_type, definitions in self.properties.items()
            for name, definition in definitions.items()
            if definition["modificationMetadata"]["readOnlyValue"]
        }
        company_ids = _seed_portal(self, picture, seed)
        _seed_deals(self, _deals_of(companies, picture, seed, as_of), company_ids)
        # The seeded portal is fully indexed: its history is older than any lag.
        self._unindexed = {t: {} for t in OBJECT_TYPES}
        from pls_sync.sandbox.hubspot_exports import HubSpotExports

        self.exports = HubSpotExports(self)

    # ----------------------------------------------------------------- module contract

    def handles(self, path: str) -> bool:
        """Whether ``path`` belongs to the HubSpot API (CRM v3, v4 associations, account
        information)."""
        return path.startswith((API_PREFIX, ASSOCIATIONS_V4_PREFIX, ACCOUNT_INFO_PREFIX))

    def endpoint(self, request: Request) -> str:
        """The counted endpoint name, e.g. ``hs.companies.batch_update``."""
        if request.path.startswith(ACCOUNT_INFO_PREFIX):
            return "hs.account_info.details"
        if request.path.startswith(ASSOCIATIONS_V4_PREFIX):
            return "hs.associations.batch_read"
        if self.exports.handles(request.path):
            return self.exports.endpoint(request)
        route = _route(request.path)
        method = request.method.upper()
        if route.kind == "objects":
            prefix = f"hs.{route.object_type}"
            rest = route.rest
            if not rest:
                return f"{prefix}.list" if method == "GET" else f"{prefix}.create"
            if rest == ("search",):
                return f"{prefix}.search"
            if rest == ("merge",):
                return f"{prefix}.merge"
            if len(rest) == 2 and rest[0] == "batch":
                return f"{prefix}.batch_{rest[1]}"
            if len(rest) == 1:
                return {
                    "GET": f"{prefix}.get",
                    "PATCH": f"{prefix}.update",
                    "DELETE": f"{prefix}.archive",
                }.get(method, f"{prefix}.other")
        if route.kind == "properties":
            if not route.rest:
                return "hs.properties.list" if method == "GET" else "hs.properties.create"
            return {"PATCH": "hs.properties.update", "DELETE": "hs.properties.archive"}.get(
                method, "hs.properties.get"
            )
        if route.kind == "groups":
            if not route.rest:
                return "hs.property_groups.list" if method == "GET" else "hs.property_groups.create"
            return "hs.property_groups.get"
        if route.kind == "pipelines":
            return "hs.pipelines.get" if route.rest else "hs.pipelines.list"
        return "hs.other"

    def handle(self, request: Request) -> Response:
        """Authenticate, apply the rate limits, then answer the request."""
        with self._lock:
            if self.exports.serves_file(request.path):  # a pre-signed URL: no token, no limits
                return self.exports.download(request)
            if not self._authorised(request):
                return self._respond(HubSpotError(401, "INVALID_AUTHENTICATION", AUTH_MESSAGE))
            if self._is_search(request):
                return self._handle_search(request)
            policy = self.limiter.admit()
            if policy is not None:
                return self._rate_limited(policy)
            try:
                status, body = self._dispatch(request)
            except HubSpotError as error:
                return self._respond(error)
            return Response(status, body, self.limiter.headers())

    @staticmethod
    def _is_search(request: Request) -> bool:
        route = _route(request.path) if request.path.startswith(API_PREFIX) else None
        return route is not None and route.kind == "objects" and route.rest == ("search",)

    def _handle_search(self, request: Request) -> Response:
        """A search: the daily allowance and the per-second search limit, no rate headers.

        "Responses from the search API endpoints will not include any of the rate limit
        headers" (HubSpot's API usage guidelines), and searches are exempt from the ten-second
        window.
        """
        if self.limiter.daily_exhausted():
            return self._rate_limited("DAILY", search=True)
        if not self.search_limiter.admit():
            return self._rate_limited("SECONDLY", search=True)
        self.limiter.admit(windowed=False)
        try:
            status, body = self._dispatch(request)
        except HubSpotError as error:
            return Response(error.status, error.body(), {})
        return Response(status, body, {})

    def render_fault(self, kind: str, request: Request) -> Response:
        """HubSpot's own response for an injected fault."""
        with self._lock:
            if kind in ("rate_limit", "request_limit"):
                return self._rate_limited("TEN_SECONDLY_ROLLING", retry_after=True)
            if kind == "daily_limit":
                return self._rate_limited("DAILY")
            if kind == "invalid_session":
                return self._respond(HubSpotError(401, "INVALID_AUTHENTICATION", AUTH_MESSAGE))
            if kind == "unavailable":
                return self._respond(
                    HubSpotError(
                        503, "SERVICE_UNAVAILABLE", "The service is temporarily unavailable."
                    )
                )
            return self._respond(HubSpotError(500, "INTERNAL_ERROR", "internal error"))

    # ----------------------------------------------------------------- helpers for tests

    def owner_for(self, name: str) -> str | None:
        """The HubSpot owner id of a sales rep, by full name."""
        return next((owner_id for owner_id, label in self.owners if label == name), None)

    def set_burst_limit(self, max_per_window: int) -> None:
        """Change the ten-second allowance (100 or 190 on real portals)."""
        with self._lock:
            self.limiter.max_per_window = max_per_window

    def exhaust_daily(self) -> None:
        """Use up the daily allowance: every further request gets the DAILY 429."""
        with self._lock:
            self.limiter.exhaust_daily()

    def company(self, object_id: str) -> dict[str, str]:
        """A company's stored property values (absent properties have no value)."""
        with self._lock:
            return dict(self.objects["companies"][object_id]["properties"])

    def ids(self, object_type: str = "companies") -> list[str]:
        """Every id of an object type, in id order."""
        with self._lock:
            return list(self.objects[object_type])

    # ----------------------------------------------------------------- schema administration

    def change_property(
        self,
        object_type: str,
        name: str,
        *,
        delete: bool = False,
        picklist: Sequence[str] | None = None,
        restricted: bool | None = None,
        updateable: bool | None = None,
        label: str | None = None,
    ) -> dict[str, Any] | None:
        """Change one property as a portal admin would; the properties API shows it at once.

        ``delete`` archives a custom property; ``picklist`` replaces an enumeration's options;
        ``updateable`` false makes its value read-only for the integration (as property edit
        permissions do); ``label`` renames it. Writes then fail as the portal fails them
        (PROPERTY_DOESNT_EXIST, INVALID_OPTION, READ_ONLY_VALUE). HubSpot has no unrestricted
        enumeration: ``restricted`` false is refused. Returns the new definition (None once
        archived); raises ``LookupError`` for an unknown object type or property and
        ``ValueError`` for a change HubSpot would refuse.
        """
        with self._lock:
            definition = self.properties.get(object_type, {}).get(name)
            if definition is None:
                raise LookupError(f"no property {name} on {object_type}")
            try:
                return self._change_property(
                    object_type, definition, delete, picklist, restricted, updateable, label
                )
            except HubSpotError as error:
                raise ValueError(error.message) from None

    def _change_property(
        self,
        object_type: str,
        definition: dict[str, Any],
        delete: bool,
        picklist: Sequence[str] | None,
        restricted: bool | None,
        updateable: bool | None,
        label: str | None,
    ) -> dict[str, Any] | None:
        if delete:
            self._archive_property(object_type, definition)
            return None
        is_enumeration = definition["type"] == "enumeration"
        if restricted is False:
            raise ValueError(
                "HubSpot enumerations always refuse values outside their options; there is no "
                "unrestricted enumeration (use a text property)"
            )
        if (restricted or picklist is not None) and not is_enumeration:
            raise ValueError(f"{definition['name']} is a {definition['type']} property")
        if updateable and (object_type, definition["name"]) in self._read_only_at_start:
            raise ValueError(f"{definition['name']} is read-only in every portal")
        body: dict[str, Any] = {}
        if picklist is not None:
            body["options"] = [{"value": value} for value in picklist]
        if label is not None:
            body["label"] = label
        if updateable is not None:
            body["formField"] = updateable
        updated = self._update_property(definition, body, object_type)
        if updateable is not None:
            updated["modificationMetadata"]["readOnlyValue"] = not updateable
        return dict(updated)

    # ----------------------------------------------------------------- identity and records

    def account_details(self) -> dict[str, Any]:
        """What ``GET /account-info/v3/details`` answers: the portal's id and settings."""
        with self._lock:
            return {
                "portalId": self.portal_id,
                "accountType": "STANDARD",
                "timeZone": "US/Eastern",
                "companyCurrency": "USD",
                "additionalCurrencies": [],
                "utcOffset": "-05:00",
                "utcOffsetMilliseconds": -18_000_000,
                "uiDomain": "app.hubspot.com",
                "dataHostingLocation": "na1",
            }

    def change_identity(
        self, portal_id: int | None = None, clear_properties: Sequence[str] = ()
    ) -> int:
        """Become another portal with the same records: a new portal id, some fields emptied.

        ``portal_id`` defaults to a new id (deterministic for the seed); ``clear_properties``
        names company properties whose values every company loses, as in a portal that never
        had them written. Modification stamps stay as they were: nothing in the portal says it
        changed, only its id does. Returns the new id; raises ``ValueError`` for a bad id or a
        property that is unknown or read-only.
        """
        if portal_id is not None and (
            isinstance(portal_id, bool) or not isinstance(portal_id, int) or portal_id <= 0
        ):
            raise ValueError(f"portal_id must be a positive integer, not {portal_id!r}")
        with self._lock:
            definitions = self.properties["companies"]
            for name in clear_properties:
                definition = definitions.get(name)
                if definition is None:
                    raise ValueError(f"no property {name} on companies")
                if definition["modificationMetadata"]["readOnlyValue"]:
                    raise ValueError(f"{name} is read-only: the portal sets it")
            self._identity_changes += 1
            new_id = portal_id if portal_id is not None else self._another_portal_id()
            for record in self.objects["companies"].values():
                for name in clear_properties:
                    record["properties"].pop(name, None)
            self._writes += 1
            self.portal_id = new_id
            return new_id

    def _another_portal_id(self) -> int:
        rng = random.Random(f"hubspot-portal-{self.seed}-{self._identity_changes}")
        while True:
            candidate = rng.randint(10_000_000, 99_999_999)
            if candidate != self.portal_id:
                return candidate

    def archive(self, object_type: str, ids: Iterable[str]) -> list[str]:
        """Archive records as a user deleting them would; returns the ids that were live."""
        with self._lock:
            return [key for key in ids if self._archive_record(object_type, str(key))]

    def merge(self, object_type: str, primary_id: str, secondary_id: str) -> str:
        """Merge two records as a user would (see ``_merge``); returns the surviving id.

        Raises ``LookupError`` for an unknown id and ``ValueError`` for a record merged into
        itself or an object type HubSpot does not merge.
        """
        if object_type not in MERGEABLE_TYPES:
            raise ValueError(f"{object_type} records are not merged")
        with self._lock:
            try:
                return str(self._merge(object_type, str(primary_id), str(secondary_id))["id"])
            except HubSpotError as error:
                if error.status == 404:
                    raise LookupError(error.message) from None
                raise ValueError(error.message) from None

    def admin(self, name: str, request: Request) -> Response | None:
        """Serve ``POST /__sandbox/hubspot/schema`` and ``/identity``; None for other names.

        ``schema``: the body names ``object`` (``companies``) and ``field`` (the property) and
        the change (see ``change_property``): ``{"object": "companies", "field": "pqa_motion",
        "picklist": ["sales", "success"]}``. Answers 200 with the property definition
        (``null`` once archived), 400 for a bad change, 404 for an unknown property.

        ``identity``: ``{"portal_id": 123, "clear_properties": ["pqa_score"]}``, both optional
        (see ``change_identity``). Answers 200 with the account details, 400 for a bad body.
        """
        if name == "hubspot/identity":
            return self._identity_admin(request)
        if name != "hubspot/schema":
            return None
        if request.method.upper() != "POST":
            return Response(405, {"message": "use POST /__sandbox/hubspot/schema"})
        try:
            target, change = parse_schema_change(request.json(), HUBSPOT_SCHEMA_CHANGES)
            definition = self.change_property(target[0], target[1], **change)
        except LookupError as exc:
            return Response(404, {"message": str(exc)})
        except (ValueError, TypeError) as exc:
            return Response(400, {"message": str(exc)})
        return Response(200, {"object": target[0], "field": target[1], "describe": definition})

    def _identity_admin(self, request: Request) -> Response:
        if request.method.upper() != "POST":
            return Response(405, {"message": "use POST /__sandbox/hubspot/identity"})
        try:
            body = request.json() or {}
        except (ValueError, UnicodeDecodeError) as exc:
            return Response(400, {"message": f"the body is not JSON: {exc}"})
        if not isinstance(body, dict):
            return Response(400, {"message": "the body is a JSON object"})
        unknown = sorted(set(body) - {"portal_id", "clear_properties"})
        clear = body.get("clear_properties") or []
        if unknown:
            return Response(400, {"message": f"unknown keys: {', '.join(unknown)}"})
        if not isinstance(clear, list) or not all(isinstance(n, str) for n in clear):
            return Response(400, {"message": "clear_properties is a list of property names"})
        try:
            self.change_identity(body.get("portal_id"), clear)
        except ValueError as exc:
            return Response(400, {"message": str(exc)})
        return Response(200, self.account_details())

    # ----------------------------------------------------------------- plumbing

    def _account_info(self, method: str, path: str) -> tuple[int, Any]:
        if path.rstrip("/") != ACCOUNT_DETAILS_PATH:
            raise HubSpotError(404, "OBJECT_NOT_FOUND", f"No route for {path}")
        if method != "GET":
            raise self._not_allowed(method)
        return 200, self.account_details()

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        return scheme.lower() == "bearer" and credential.strip() == self.token

    def _respond(self, error: HubSpotError) -> Response:
        return Response(error.status, error.body(), self.limiter.headers())

    def _rate_limited(
        self, policy: str, *, search: bool = False, retry_after: bool | None = None
    ) -> Response:
        """HubSpot's 429 for ``policy`` (``DAILY``, ``TEN_SECONDLY_ROLLING``, ``SECONDLY``).

        The daily body is the documented example; the search's per-second 429 is the one the
        search endpoints answer (``category`` RATE_LIMITS, no ``policyName``, no headers); only
        some ten-second-window 429s carry ``Retry-After`` (``retry_after_rate``), unless
        ``retry_after`` says whether this one does (an injected fault's).
        """
        headers = {} if search else self.limiter.headers()
        correlation = str(uuid.uuid4())
        if policy == "SECONDLY":
            body: dict[str, Any] = {
                "status": "error",
                "message": "You have reached your secondly limit.",
                "correlationId": correlation,
                "category": "RATE_LIMITS",
            }
            return Response(429, body, headers)
        body = {
            "status": "error",
            "message": f"You have reached your {policy.lower()} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": correlation,
            "policyName": policy,
            "requestId": str(uuid.uuid4()),
        }
        if policy != "DAILY":
            body["groupName"] = f"publicapi:private-app:{self.portal_id}"
            if retry_after is None:
                retry_after = self._retry_after_rng.random() < self.retry_after_rate
            if retry_after:
                headers["Retry-After"] = str(self.limiter.retry_after())
        return Response(429, body, headers)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def _dispatch(self, request: Request) -> tuple[int, Any]:
        method = request.method.upper()
        if request.path.startswith(ACCOUNT_INFO_PREFIX):
            return self._account_info(method, request.path)
        if request.path.startswith(ASSOCIATIONS_V4_PREFIX):
            return self._read_associations(method, request)
        if self.exports.handles(request.path):
            return self.exports.dispatch(request)
        route = _route(request.path)
        if route.kind == "unknown":
            raise HubSpotError(404, "OBJECT_NOT_FOUND", f"No route for {request.path}")
        object_type = route.object_type
        if object_type not in OBJECT_TYPES:
            raise HubSpotError(
                400, "VALIDATION_ERROR", f"Unable to infer object type from: {object_type}"
            )
        if route.kind == "objects":
            return self._objects(method, object_type, route.rest, request)
        if route.kind == "pipelines":
            return self._pipelines(method, object_type, route.rest)
        self._check_schema_scope(object_type, write=method != "GET")
        if route.kind == "properties":
            return self._properties(method, object_type, route.rest, request)
        return self._groups(method, object_type, route.rest, request)

    def _check_schema_scope(self, object_type: str, *, write: bool) -> None:
        """HubSpot's 403 MISSING_SCOPES when the token lacks the properties scope needed."""
        read_scope, write_scope = SCHEMA_SCOPES[object_type]
        needed = write_scope if write else read_scope
        if needed not in self.scopes:
            raise missing_scope(needed)

    @staticmethod
    def _not_allowed(method: str) -> HubSpotError:
        return HubSpotError(
            405, "VALIDATION_ERROR", f"HTTP {method} is not supported by this endpoint"
        )

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise HubSpotError(400, "VALIDATION_ERROR", f"Invalid input JSON: {exc}") from None
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
        return body

    # ----------------------------------------------------------------- objects

    def _objects(
        self, method: str, object_type: str, rest: tuple[str, ...], request: Request
    ) -> tuple[int, Any]:
        if not rest:
            if method == "GET":
                return 200, self._list(object_type, request)
            if method == "POST":
                return 201, self._create(object_type, self._body(request))
            raise self._not_allowed(method)
        if rest == ("search",):
            if method != "POST":
                raise self._not_allowed(method)
            return 200, self._search(object_type, self._body(request))
        if rest == ("merge",) and object_type in MERGEABLE_TYPES:
            if method != "POST":
                raise self._not_allowed(method)
            return 200, self._merge_request(object_type, self._body(request))
        if len(rest) == 2 and rest[0] == "batch":
            if method != "POST":
                raise self._not_allowed(method)
            body = self._body(request)
            operations = {
                "read": self._batch_read,
                "update": self._batch_update,
                "upsert": self._batch_upsert,
                "create": self._batch_create,
                "archive": self._batch_archive,
            }
            operation = operations.get(rest[1])
            if operation is None:
                raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Unknown batch operation {rest[1]}")
            return operation(object_type, body)
        if len(rest) == 1:
            if method == "GET":
                return 200, self._get(object_type, rest[0], request)
            if method == "PATCH":
                return 200, self._update_one(
                    object_type, rest[0], self._body(request), request.param("idProperty")
                )
            if method == "DELETE":
                self._archive_record(object_type, rest[0])
                return 204, None
            raise self._not_allowed(method)
        raise HubSpotError(404, "OBJECT_NOT_FOUND", f"No route for {request.path}")

    def _requested(self, object_type: str, names: Iterable[str] | None) -> list[str]:
        wanted = [n for n in (names or ()) if n]
        if not wanted:
            wanted = list(_DEFAULT_PROPERTIES[object_type])
        always = ["hs_object_id", _CREATED[object_type], _LASTMODIFIED[object_type]]
        return list(dict.fromkeys([*wanted, *always]))

    @staticmethod
    def _query_list(request: Request, name: str) -> list[str]:
        values: list[str] = []
        for raw in request.query.get(name, []):
            values.extend(v.strip() for v in raw.split(",") if v.strip())
        return values

    def _view(
        self, object_type: str, record: dict[str, Any], names: Iterable[str]
    ) -> dict[str, Any]:
        """A record as the API returns it: requested properties, unknown ones left out."""
        definitions = self.properties[object_type]
        stored = record["properties"]
        properties = {name: stored.get(name) for name in names if name in definitions}
        view: dict[str, Any] = {
            "id": record["id"],
            "properties": properties,
            "createdAt": record["createdAt"],
            "updatedAt": record["updatedAt"],
            "archived": "archivedAt" in record,
        }
        if "archivedAt" in record:
            view["archivedAt"] = record["archivedAt"]
        if record.get("associations"):
            view["associations"] = record["associations"]
        return view

    def _find(
        self, object_type: str, object_id: str, id_property: str | None = None
    ) -> dict[str, Any] | None:
        records = self.objects[object_type]
        if not id_property or id_property == "hs_object_id":
            return records.get(object_id)
        for record in records.values():
            if record["properties"].get(id_property, "").lower() == object_id.lower():
                return record
        return None

    def _read_target(
        self, object_type: str, object_id: str, id_property: str | None = None
    ) -> dict[str, Any] | None:
        """The record a read by ``object_id`` returns: a merged-away id reads as its merge."""
        record = self._find(object_type, object_id, id_property)
        if record is None and (not id_property or id_property == "hs_object_id"):
            survivor = self.merged_into[object_type].get(object_id)
            if survivor is not None:
                record = self.objects[object_type].get(survivor)
        return record

    @staticmethod
    def _archived_flag(request: Request) -> bool:
        return (request.param("archived") or "").strip().lower() == "true"

    def _list(self, object_type: str, request: Request) -> dict[str, Any]:
        try:
            limit = int(request.param("limit", "10") or "10")
        except ValueError:
            raise HubSpotError(400, "VALIDATION_ERROR", "limit must be an integer") from None
        # The list endpoints cap the page at 100 rather than refusing a larger limit.
        limit = max(1, min(limit, LIST_PAGE_MAX))
        after = request.param("after")
        names = self._requested(object_type, self._query_list(request, "properties"))
        archived = self._archived_flag(request)
        # archived=true lists the archived records only, never both kinds.
        source = self.archived[object_type] if archived else self.objects[object_type]
        # Live ids are kept in id order as created; archived ones arrive in archive order.
        ids = sorted(source, key=int) if archived else list(source)
        start = 0
        if after:
            if not after.isdigit():
                raise HubSpotError(400, "VALIDATION_ERROR", f"Invalid after token: {after}")
            start = next((i for i, key in enumerate(ids) if int(key) >= int(after)), len(ids))
        page = ids[start : start + limit]
        body: dict[str, Any] = {
            "results": [self._view(object_type, source[key], names) for key in page]
        }
        if start + limit < len(ids):
            next_after = ids[start + limit]
            query = {"limit": str(limit), "after": next_after}
            if request.query.get("properties"):
                query["properties"] = ",".join(self._query_list(request, "properties"))
            if archived:
                query["archived"] = "true"
            host = request.headers.get("host", "api.hubapi.com")
            body["paging"] = {
                "next": {
                    "after": next_after,
                    "link": f"http://{host}{API_PREFIX}objects/{object_type}?{urlencode(query)}",
                }
            }
        return body

    def _get(self, object_type: str, object_id: str, request: Request) -> dict[str, Any]:
        id_property = request.param("idProperty")
        if id_property:
            self._check_id_property(object_type, id_property)
        if self._archived_flag(request):
            record = self.archived[object_type].get(object_id)
        else:
            record = self._read_target(object_type, object_id, id_property)
        if record is None:
            raise HubSpotError(
                404,
                "OBJECT_NOT_FOUND",
                "Object not found.  objectId are usually numeric.",
                context={"id": [object_id]},
            )
        names = self._requested(object_type, self._query_list(request, "properties"))
        return self._view(object_type, record, names)

    # ----------------------------------------------------------------- writes

    def _check_properties(
        self, object_type: str, values: Any
    ) -> tuple[dict[str, str], list[PropertyValueError]]:
        """Normalised values and the errors of the invalid ones."""
        if values is None:
            return {}, []
        if not isinstance(values, dict):
            raise HubSpotError(
                400, "VALIDATION_ERROR", "Invalid input JSON: properties must be an object"
            )
        definitions = self.properties[object_type]
        clean: dict[str, str] = {}
        errors: list[PropertyValueError] = []
        for name, raw in values.items():
            definition = definitions.get(name)
            if definition is None:
                errors.append(
                    PropertyValueError(
                        name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'
                    )
                )
                continue
            if definition["modificationMetadata"]["readOnlyValue"]:
                errors.append(
                    PropertyValueError(
                        name, "READ_ONLY_VALUE", f'Property "{name}" is a read only property'
                    )
                )
                continue
            try:
                clean[name] = normalise_value(definition, raw)
            except PropertyValueError as error:
                errors.append(error)
        return clean, errors

    def _apply(self, object_type: str, record: dict[str, Any], values: dict[str, str]) -> None:
        self._touch(object_type, record["id"])
        self._writes += 1
        stamp = iso_ms(self._now())
        stored = record["properties"]
        for name, value in values.items():
            if value == "":
                stored.pop(name, None)
            else:
                stored[name] = value
        if object_type == "contacts" and "email" in values:
            email = values["email"]
            if "@" in email:
                stored["hs_email_domain"] = email.rsplit("@", 1)[1].lower()
            else:
                stored.pop("hs_email_domain", None)
        if object_type == "contacts" and values.get("lifecyclestage") in STAGE_ENTERED:
            stored.setdefault(STAGE_ENTERED[values["lifecyclestage"]], stamp)
        if object_type == "deals":
            self._derive_deal(stored)
        stored[_LASTMODIFIED[object_type]] = stamp
        record["updatedAt"] = stamp

    def _new_record(
        self, object_type: str, values: dict[str, str], created: datetime | None = None
    ) -> dict[str, Any]:
        self._writes += 1
        self._next_id[object_type] += 1
        object_id = str(self._next_id[object_type])
        stamp = iso_ms(created or self._now())
        record: dict[str, Any] = {
            "id": object_id,
            "properties": {
                "hs_object_id": object_id,
                _CREATED[object_type]: stamp,
                _LASTMODIFIED[object_type]: stamp,
            },
            "createdAt": stamp,
            "updatedAt": stamp,
        }
        if created is None:
            self._touch(object_type, object_id)
        self.objects[object_type][object_id] = record
        if created is None:
            self._apply(object_type, record, values)
        else:
            record["properties"].update({k: v for k, v in values.items() if v != ""})
        return record

    def _written_view(
        self, object_type: str, record: dict[str, Any], values: dict[str, str]
    ) -> dict[str, Any]:
        return self._view(object_type, record, self._requested(object_type, values.keys()))

    def _create(self, object_type: str, body: dict[str, Any]) -> dict[str, Any]:
        values, errors = self._check_properties(object_type, body.get("properties"))
        if errors:
            raise HubSpotError(400, "VALIDATION_ERROR", _validation_failure(errors, self.portal_id))
        associations = self._associations(object_type, body.get("associations"))
        if object_type == "tasks" and not values.get("hs_timestamp"):
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                _validation_failure(
                    [
                        PropertyValueError(
                            "hs_timestamp", "REQUIRED_PROPERTY", "hs_timestamp is required"
                        )
                    ],
                    self.portal_id,
                ),
            )
        self._refuse_taken_values(object_type, values)
        record = self._new_record(object_type, values)
        if associations:
            record["associations"] = associations
        return self._written_view(object_type, record, values)

    def _associations(self, object_type: str, raw: Any) -> dict[str, Any]:
        if not raw:
            return {}
        if not isinstance(raw, list):
            raise HubSpotError(400, "VALIDATION_ERROR", "associations must be a list")
        found: dict[str, Any] = {}
        known = {"tasks": TASK_ASSOCIATIONS, "deals": DEAL_ASSOCIATIONS}.get(object_type, {})
        for item in raw:
            target = str((item.get("to") or {}).get("id", ""))
            for kind in item.get("types") or []:
                type_id = int(kind.get("associationTypeId", 0))
                to_type = known.get(type_id)
                if to_type is None:
                    raise HubSpotError(
                        400,
                        "VALIDATION_ERROR",
                        f"{type_id} is not a valid association type id from {object_type}",
                    )
                if target not in self.objects[to_type]:
                    raise HubSpotError(
                        400,
                        "VALIDATION_ERROR",
                        f"One or more associations are invalid: {_SINGULAR[to_type]} {target} does not exist",
                    )
                results = found.setdefault(to_type, {"results": []})["results"]
                for name in _link_types(object_type, to_type, type_id):
                    if {"id": target, "type": name} not in results:
                        results.append({"id": target, "type": name})
        return found

    def _update_one(
        self,
        object_type: str,
        object_id: str,
        body: dict[str, Any],
        id_property: str | None = None,
    ) -> dict[str, Any]:
        if id_property:
            self._check_id_property(object_type, id_property)
        record = self._find(object_type, object_id, id_property)
        if record is None:
            raise HubSpotError(
                404,
                "OBJECT_NOT_FOUND",
                "Object not found.  objectId are usually numeric.",
                context={"id": [object_id]},
            )
        values, errors = self._check_properties(object_type, body.get("properties"))
        if errors:
            raise HubSpotError(400, "VALIDATION_ERROR", _validation_failure(errors, self.portal_id))
        self._refuse_taken_values(object_type, values, record["id"])
        self._apply(object_type, record, values)
        return self._written_view(object_type, record, values)

    def _inputs(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        inputs = body.get("inputs")
        if not isinstance(inputs, list):
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON: inputs is required")
        if len(inputs) > BATCH_MAX:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Too many inputs: {len(inputs)} were given; the maximum batch size is {BATCH_MAX}.",
                context={"maxInputs": [str(BATCH_MAX)], "inputs": [str(len(inputs))]},
            )
        if not all(isinstance(item, dict) for item in inputs):
            raise HubSpotError(
                400, "VALIDATION_ERROR", "Invalid input JSON: every input must be an object"
            )
        return inputs

    def _batch_body(
        self, results: list[dict[str, Any]], errors: list[dict[str, Any]], started: datetime
    ) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": iso_ms(started),
            "completedAt": iso_ms(self._now()),
        }
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
            return 207, body
        return 200, body

    def _not_found_error(self, object_type: str, ids: list[str]) -> dict[str, Any]:
        return {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": (
                f"Could not get some {_SINGULAR[object_type]} objects, they may be deleted or not exist. "
                "Check that ids are valid."
            ),
            "context": {"ids": ids},
            "errors": [],
            "links": {},
        }

    def _batch_read(self, object_type: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        started = self._now()
        inputs = self._inputs(body)
        id_property = body.get("idProperty")
        names = self._requested(object_type, body.get("properties") or [])
        results: list[dict[str, Any]] = []
        missing: list[str] = []
        seen: set[str] = set()
        for item in inputs:
            key = str(item.get("id", ""))
            record = self._read_target(object_type, key, id_property)
            if record is None:
                missing.append(key)
            elif record["id"] not in seen:
                seen.add(record["id"])
                results.append(self._view(object_type, record, names))
        errors = [self._not_found_error(object_type, missing)] if missing else []
        return self._batch_body(results, errors, started)

    def _batch_update(self, object_type: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        started = self._now()
        inputs = self._inputs(body)
        keys = [str(item.get("id", "")) for item in inputs]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique",
            )
        checked: list[tuple[dict[str, Any], dict[str, str]]] = []
        missing: list[str] = []
        errors: list[dict[str, Any]] = []
        invalid: list[PropertyValueError] = []
        held: _Held = {}
        for item, key in zip(inputs, keys, strict=True):
            id_property = item.get("idProperty")
            if id_property:
                self._check_id_property(object_type, str(id_property), batch=True)
            record = self._find(object_type, key, id_property)
            values, problems = self._check_properties(object_type, item.get("properties"))
            if record is None:
                missing.append(key)
                continue
            if not problems:
                taken = self._taken_value_errors(object_type, values, record["id"], held)
                problems = [error for error, _ in taken]
            if problems:
                invalid.extend(problems)
                errors.append(
                    {
                        "status": "error",
                        "category": "VALIDATION_ERROR",
                        "message": _validation_failure(problems, self.portal_id),
                        "context": {
                            "ids": [record["id"]],
                            "propertyName": [p.name for p in problems],
                        },
                        "errors": [
                            {
                                "message": p.message,
                                "code": p.code,
                                "context": {"propertyName": [p.name]},
                            }
                            for p in problems
                        ],
                        "links": {},
                    }
                )
                continue
            checked.append((record, values))
        if invalid and self.batch_validation == "all_or_nothing":
            raise HubSpotError(
                400, "VALIDATION_ERROR", _validation_failure(invalid, self.portal_id)
            )
        results = []
        for record, values in checked:
            self._apply(object_type, record, values)
            results.append(self._written_view(object_type, record, values))
        if missing:
            errors.insert(0, self._not_found_error(object_type, missing))
        return self._batch_body(results, errors, started)

    def _unique(self, object_type: str, id_property: str) -> bool:
        definition = self.properties[object_type].get(id_property)
        return id_property == "hs_object_id" or bool(definition and definition["hasUniqueValue"])

    def _check_id_property(
        self, object_type: str, id_property: str, *, batch: bool = False
    ) -> None:
        """Refuse an ``idProperty`` without unique values, in HubSpot's words.

        The batch endpoints refuse ``hs_object_id`` too: there the record id goes in ``id``
        with no ``idProperty``.
        """
        unique = self._unique(object_type, id_property)
        if unique and not (batch and id_property == "hs_object_id"):
            return
        raise HubSpotError(
            400,
            "VALIDATION_ERROR",
            f"Unable to perform update/upsert by non-unique {_OBJECT_TYPE_IDS[object_type]} "
            f"property {id_property} in portal ID {self.portal_id}",
        )

    def _taken_value_errors(
        self,
        object_type: str,
        values: dict[str, str],
        own_id: str | None = None,
        held: _Held | None = None,
    ) -> list[tuple[PropertyValueError, str]]:
        """Each unique value in ``values`` that another live record (or earlier input) holds,
        with the holder's id.

        ``held`` is shared by the inputs of one batch: the unique values taken, by property
        (filled from the live records on first use), then claimed by each input in turn, so two
        inputs of one batch cannot take the same value either. Values compare case-insensitively.
        """
        held = {} if held is None else held
        errors: list[tuple[PropertyValueError, str]] = []
        definitions = self.properties[object_type]
        for name, value in values.items():
            definition = definitions.get(name)
            if not value or definition is None or not definition["hasUniqueValue"]:
                continue
            if name not in held:
                held[name] = {
                    str(record["properties"][name]).lower(): key
                    for key, record in self.objects[object_type].items()
                    if record["properties"].get(name)
                }
            wanted = value.lower()
            holder = held[name].get(wanted)
            if holder is not None and holder != own_id:
                message = (
                    f"{value} already has that value: {_SINGULAR[object_type]} {holder} holds "
                    f"it and {name} requires unique values"
                )
                errors.append((PropertyValueError(name, "VALUE_NOT_UNIQUE", message), holder))
            else:
                held[name][wanted] = own_id or f"input {len(held[name])}"
        return errors

    def _refuse_taken_values(
        self,
        object_type: str,
        values: dict[str, str],
        own_id: str | None = None,
        *,
        held: _Held | None = None,
    ) -> None:
        """Raise HubSpot's refusal when ``values`` reuse another record's unique value.

        A contact's email is a 409 CONFLICT ("Contact already exists. Existing ID: <id>");
        another unique property a 400 VALIDATION_ERROR listing the property.
        """
        taken = self._taken_value_errors(object_type, values, own_id, held)
        if not taken:
            return
        email_holder = next((holder for error, holder in taken if error.name == "email"), None)
        if object_type == "contacts" and email_holder is not None:
            raise HubSpotError(
                409, "CONFLICT", f"Contact already exists. Existing ID: {email_holder}"
            )
        errors = [error for error, _ in taken]
        raise HubSpotError(400, "VALIDATION_ERROR", _validation_failure(errors, self.portal_id))

    def _batch_upsert(self, object_type: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        started = self._now()
        inputs = self._inputs(body)
        planned: list[tuple[dict[str, Any] | None, str, str, dict[str, str]]] = []
        problems_all: list[PropertyValueError] = []
        for item in inputs:
            id_property = str(item.get("idProperty") or "")
            key = str(item.get("id", ""))
            if not id_property:
                raise HubSpotError(400, "VALIDATION_ERROR", "idProperty is required for upserts")
            self._check_id_property(object_type, id_property, batch=True)
            values, problems = self._check_properties(object_type, item.get("properties"))
            problems_all.extend(problems)
            planned.append((self._find(object_type, key, id_property), id_property, key, values))
        if problems_all:
            # Upserts are all-or-nothing on invalid property values.
            raise HubSpotError(
                400, "VALIDATION_ERROR", _validation_failure(problems_all, self.portal_id)
            )
        held: _Held = {}
        for record, id_property, key, values in planned:
            full = (
                {**values, id_property: values.get(id_property, key)} if record is None else values
            )
            own = record["id"] if record is not None else None
            self._refuse_taken_values(object_type, full, own, held=held)
        results = []
        missing: list[str] = []
        for record, id_property, key, values in planned:
            created = record is None
            if record is None:
                if id_property == "hs_object_id":
                    missing.append(key)
                    continue
                record = self._new_record(
                    object_type, {**values, id_property: values.get(id_property, key)}
                )
            else:
                self._apply(object_type, record, values)
            view = self._written_view(object_type, record, values)
            view["new"] = created
            results.append(view)
        errors = [self._not_found_error(object_type, missing)] if missing else []
        return self._batch_body(results, errors, started)

    def _batch_create(self, object_type: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        started = self._now()
        inputs = self._inputs(body)
        checked = []
        problems_all: list[PropertyValueError] = []
        for item in inputs:
            values, problems = self._check_properties(object_type, item.get("properties"))
            problems_all.extend(problems)
            checked.append(values)
        if problems_all:
            raise HubSpotError(
                400, "VALIDATION_ERROR", _validation_failure(problems_all, self.portal_id)
            )
        held: _Held = {}
        for values in checked:
            self._refuse_taken_values(object_type, values, held=held)
        results = []
        for values in checked:
            record = self._new_record(object_type, values)
            results.append(self._written_view(object_type, record, values))
        status, response = self._batch_body(results, [], started)
        return (201 if status == 200 else status), response

    # ----------------------------------------------------------------- archive and merge

    def _archive_record(self, object_type: str, object_id: str) -> bool:
        """Move a live record to the archive (HubSpot's recycling bin); False if none had the id.

        Archiving an unknown or already archived id changes nothing and still answers 204.
        """
        if object_id not in self.objects[object_type]:
            return False
        self._touch(object_type, object_id)
        record = self.objects[object_type].pop(object_id)
        stamp = iso_ms(self._now())
        record["archivedAt"] = stamp
        record["updatedAt"] = stamp
        self.archived[object_type][object_id] = record
        self._writes += 1
        return True

    def _batch_archive(self, object_type: str, body: dict[str, Any]) -> tuple[int, None]:
        inputs = self._inputs(body)
        for item in inputs:
            self._archive_record(object_type, str(item.get("id", "")))
        return 204, None

    def _merge_request(self, object_type: str, body: dict[str, Any]) -> dict[str, Any]:
        primary_id = str(body.get("primaryObjectId") or "").strip()
        secondary_id = str(body.get("objectIdToMerge") or "").strip()
        if not primary_id or not secondary_id:
            raise HubSpotError(
                400, "VALIDATION_ERROR", "primaryObjectId and objectIdToMerge are required"
            )
        merged = self._merge(object_type, primary_id, secondary_id)
        names = self._requested(object_type, ["hs_merged_object_ids"])
        return self._view(object_type, merged, names)

    def _merge(self, object_type: str, primary_id: str, secondary_id: str) -> dict[str, Any]:
        """Merge ``secondary_id`` into ``primary_id``; returns the record that is left.

        The primary's values win, the secondary fills the gaps; a company keeps the primary's
        domain and gains the secondary's among its additional domains. Unless the sandbox keeps
        the primary's id, a new record with a new id holds the result and both old ids read as
        it. ``hs_merged_object_ids`` lists every id merged into the result, earlier merges
        included. The result is stamped as modified now.
        """
        primary = self._read_target(object_type, primary_id)
        secondary = self._read_target(object_type, secondary_id)
        missing = [
            key for key, rec in ((primary_id, primary), (secondary_id, secondary)) if not rec
        ]
        if primary is None or secondary is None:
            raise HubSpotError(
                404,
                "OBJECT_NOT_FOUND",
                f"Could not find {_SINGULAR[object_type].lower()} {', '.join(missing)} to merge",
                context={"id": missing},
            )
        if primary["id"] == secondary["id"]:
            raise HubSpotError(
                400, "VALIDATION_ERROR", f"Cannot merge {_SINGULAR[object_type]} into itself"
            )
        values = _merged_values(object_type, primary["properties"], secondary["properties"])
        self._touch(object_type, primary["id"])
        self._touch(object_type, secondary["id"])
        retired = [secondary["id"]]
        del self.objects[object_type][secondary["id"]]
        if self.merge_keeps_primary_id:
            survivor = primary
            survivor["properties"] = {
                key: value
                for key, value in survivor["properties"].items()
                if key in ("hs_object_id", _CREATED[object_type], _LASTMODIFIED[object_type])
            }
            survivor["properties"].update(values)
        else:
            retired.insert(0, primary["id"])
            del self.objects[object_type][primary["id"]]
            survivor = self._new_record(object_type, {})
            survivor["properties"].update(values)
        earlier = _semicolon_list(values.get("hs_merged_object_ids", ""))
        merged_ids = sorted({*earlier, *retired}, key=int)
        survivor["properties"]["hs_merged_object_ids"] = ";".join(merged_ids)
        self._apply(object_type, survivor, {})
        self._retire(object_type, retired, survivor["id"])
        return survivor

    def _retire(self, object_type: str, retired: Sequence[str], survivor_id: str) -> None:
        """Point the retired ids, and everything that referred to them, at the survivor."""
        aliases = self.merged_into[object_type]
        for old, target in list(aliases.items()):
            if target in retired:
                aliases[old] = survivor_id
        for old in retired:
            aliases[old] = survivor_id
        gone = set(retired)
        for holder in ("tasks", "deals"):
            for record in self.objects[holder].values():
                linked = (record.get("associations") or {}).get(object_type) or {}
                links = linked.get("results") or []
                if not any(link.get("id") in gone for link in links):
                    continue
                self._touch(holder, record["id"])
                repointed: list[dict[str, Any]] = []
                for link in links:
                    moved = {**link, "id": survivor_id} if link.get("id") in gone else link
                    if moved not in repointed:
                        repointed.append(moved)
                linked["results"] = repointed
        if object_type == "companies":
            children = 0
            for record in self.objects["companies"].values():
                stored = record["properties"]
                if stored.get("hs_parent_company_id") in gone:
                    self._touch("companies", record["id"])
                    stored["hs_parent_company_id"] = survivor_id
                if stored.get("hs_parent_company_id") == survivor_id:
                    children += 1
            survivor = self.objects["companies"][survivor_id]["properties"]
            if children:
                survivor["hs_num_child_companies"] = str(children)
            else:
                survivor.pop("hs_num_child_companies", None)
            for contact in self.objects["contacts"].values():
                if contact["properties"].get("associatedcompanyid") in gone:
                    self._touch("contacts", contact["id"])
                    contact["properties"]["associatedcompanyid"] = survivor_id

    # ----------------------------------------------------------------- deals and associations

    def add_deal_pipeline(
        self, pipeline_id: str, label: str, stages: Sequence[tuple[str, str, float, bool]]
    ) -> dict[str, Any]:
        """Add a deal pipeline as a portal admin would: ``stages`` are (id, label, probability,
        closed). Its stages become options of ``dealstage``, the pipeline one of ``pipeline``.
        Returns the pipeline as the pipelines API shows it."""
        with self._lock:
            if pipeline_id in self.deal_pipelines:
                raise ValueError(f"a deal pipeline {pipeline_id} exists already")
            pipeline = deal_pipeline(pipeline_id, label, stages, len(self.deal_pipelines))
            self.deal_pipelines[pipeline_id] = pipeline
            definitions = self.properties["deals"]
            _add_options(definitions["pipeline"], [(pipeline_id, label)])
            _add_options(definitions["dealstage"], [(s[0], s[1]) for s in stages])
            self._writes += 1
            return copy.deepcopy(pipeline)

    def insert_deal(
        self,
        properties: dict[str, str],
        company_ids: Sequence[str] = (),
        *,
        created: datetime | None = None,
    ) -> str:
        """Store a deal associated with ``company_ids`` (the first as its primary company).

        ``created`` None: a deal created now, which reaches search after the lag, as one made
        through the API does; a time: an older deal, already indexed. Values are stored as
        given (no validation); the closed flags follow the stage. Returns the deal's id.
        """
        with self._lock:
            record = self._new_record("deals", {}, created=created)
            if created is None:
                self._apply("deals", record, dict(properties))
            else:
                record["properties"].update({k: v for k, v in properties.items() if v != ""})
                self._derive_deal(record["properties"])
            if company_ids:
                record["associations"] = {"companies": {"results": _company_links(company_ids)}}
            return str(record["id"])

    def _derive_deal(self, stored: dict[str, str]) -> None:
        """A deal's ``hs_is_closed`` and ``hs_is_closed_won`` from its stage's metadata (closed
        won: closed at probability 1.0); a deal that closes without a close date gets now."""
        if stored.get("dealstage") and not stored.get("pipeline"):
            stored["pipeline"] = DEFAULT_PIPELINE
        pipeline = self.deal_pipelines.get(stored.get("pipeline", ""), {})
        stage = next(
            (s for s in pipeline.get("stages", []) if s["id"] == stored.get("dealstage")), None
        )
        metadata = stage["metadata"] if stage is not None else {}
        closed = metadata.get("isClosed") == "true"
        won = closed and float(metadata.get("probability") or 0) >= 1.0
        stored["hs_is_closed"] = "true" if closed else "false"
        stored["hs_is_closed_won"] = "true" if won else "false"
        if closed and not stored.get("closedate"):
            stored["closedate"] = iso_ms(self._now())

    def _pipelines(self, method: str, object_type: str, rest: tuple[str, ...]) -> tuple[int, Any]:
        """``GET /crm/v3/pipelines/deals`` (``{"results": [...]}``) and ``.../deals/{id}``."""
        if object_type != "deals":
            raise HubSpotError(400, "VALIDATION_ERROR", f"{object_type} have no pipelines here")
        if method != "GET":
            raise self._not_allowed(method)
        if not rest:
            return 200, {"results": [copy.deepcopy(p) for p in self.deal_pipelines.values()]}
        pipeline = self.deal_pipelines.get(rest[0]) if len(rest) == 1 else None
        if pipeline is None:
            raise HubSpotError(
                404, "OBJECT_NOT_FOUND", f"Unable to find pipeline {'/'.join(rest)} for deals"
            )
        return 200, copy.deepcopy(pipeline)

    def _read_associations(self, method: str, request: Request) -> tuple[int, Any]:
        """``POST /crm/v4/associations/{from}/{to}/batch/read``: the records each input's record
        is associated with, 500 a page (``after`` per input), with their association types.

        At most ``ASSOCIATION_BATCH_MAX`` inputs. An input with no association (or no record)
        is an error of the 207 answer, as HubSpot reports it.
        """
        parts = [part for part in request.path[len(ASSOCIATIONS_V4_PREFIX) :].split("/") if part]
        if len(parts) != 4 or parts[2:] != ["batch", "read"]:
            raise HubSpotError(404, "OBJECT_NOT_FOUND", f"No route for {request.path}")
        if method != "POST":
            raise self._not_allowed(method)
        from_type, to_type = parts[0], parts[1]
        for object_type in (from_type, to_type):
            if object_type not in OBJECT_TYPES:
                raise HubSpotError(
                    400, "VALIDATION_ERROR", f"Unable to infer object type from: {object_type}"
                )
        started = self._now()
        inputs = self._body(request).get("inputs")
        if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
            raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON: inputs is required")
        if len(inputs) > ASSOCIATION_BATCH_MAX:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Batch size of {len(inputs)} exceeds the limit of {ASSOCIATION_BATCH_MAX} inputs",
                context={"maxInputs": [str(ASSOCIATION_BATCH_MAX)]},
            )
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in inputs:
            from_id = str(item.get("id", ""))
            links = self._links(from_type, from_id, to_type)
            if not links:
                errors.append(_no_associations_error(from_type, from_id, to_type))
                continue
            after = str(item.get("after") or "0")
            start = int(after) if after.isdigit() else 0
            end = start + ASSOCIATION_PAGE_MAX
            result: dict[str, Any] = {
                "from": {"id": from_id},
                "to": [
                    {
                        "toObjectId": to_id,
                        "associationTypes": [
                            {
                                "category": "HUBSPOT_DEFINED",
                                "typeId": _ASSOCIATION_TYPES[name][0],
                                "label": _ASSOCIATION_TYPES[name][1],
                            }
                            for name in names
                        ],
                    }
                    for to_id, names in links[start:end]
                ],
            }
            if end < len(links):
                result["paging"] = {"next": {"after": str(end), "link": None}}
            results.append(result)
        return self._batch_body(results, errors, started)

    def _links(self, from_type: str, from_id: str, to_type: str) -> list[tuple[str, list[str]]]:
        """(live record id, association type names) of what ``from_id`` is associated with,
        whichever side stored the link; a merged-away id reads as the record it became."""
        record = self._read_target(from_type, from_id)
        if record is None:
            return []
        found: dict[str, list[str]] = {}
        stored = ((record.get("associations") or {}).get(to_type) or {}).get("results") or []
        for link in stored:
            target = str(link.get("id"))
            target = self.merged_into[to_type].get(target, target)
            if target in self.objects[to_type] and link.get("type") in _ASSOCIATION_TYPES:
                found.setdefault(target, []).append(str(link["type"]))
        for other in self.objects[to_type].values():
            back = ((other.get("associations") or {}).get(from_type) or {}).get("results") or []
            for link in back:
                name = _INVERSE_TYPES.get(str(link.get("type")))
                if str(link.get("id")) == record["id"] and name is not None:
                    found.setdefault(str(other["id"]), []).append(name)
        return [(target, list(dict.fromkeys(names))) for target, names in found.items()]

    # ----------------------------------------------------------------- the search index

    def _touch(self, object_type: str, record_id: str) -> None:
        """Queue the write about to change (create, archive) a record for the search index.

        Called before the record changes: the first pending write keeps a copy of the record as
        search knew it; a later one freezes the result of the write before it. Writes at the
        same clock instant reach the index together.
        """
        if self.search_lag_seconds <= 0:
            return
        now = self.clock()
        live = self.objects[object_type].get(record_id)
        pending = self._unindexed[object_type].get(record_id)
        if pending is None:
            before = copy.deepcopy(live) if live is not None else None
            self._unindexed[object_type][record_id] = _IndexLag(before, [(now, None)])
            return
        last_stamp = pending.writes[-1][0]
        if last_stamp == now:
            return
        pending.writes[-1] = (last_stamp, copy.deepcopy(live) if live is not None else None)
        pending.writes.append((now, None))

    def _settle_index(self, object_type: str) -> None:
        """Let the writes older than the lag reach the index.

        A write stamped after ``clock()`` (a test moved the clock back) counts as indexed: it
        must not stay invisible until the clock comes round again.
        """
        pending = self._unindexed[object_type]
        if not pending:
            return
        now = self.clock()
        cutoff = now - self.search_lag_seconds
        for record_id, lag in list(pending.items()):
            landed = 0
            for stamp, _ in lag.writes:
                if stamp > cutoff and stamp <= now:
                    break
                landed += 1
            if not landed:
                continue
            self._index_moves += 1
            if landed == len(lag.writes):
                del pending[record_id]
            else:
                lag.indexed = lag.writes[landed - 1][1]
                del lag.writes[:landed]

    def _searchable(self, object_type: str) -> list[dict[str, Any]]:
        """The records as the search index has them, in id order."""
        self._settle_index(object_type)
        live = self.objects[object_type]
        pending = self._unindexed[object_type]
        if not pending:
            return list(live.values())
        records = [record for key, record in live.items() if key not in pending]
        records += [lag.indexed for lag in pending.values() if lag.indexed is not None]
        records.sort(key=lambda record: int(record["id"]))
        return records

    # ----------------------------------------------------------------- search

    def _search(self, object_type: str, body: dict[str, Any]) -> dict[str, Any]:
        self.searches.append((object_type, json.loads(json.dumps(body))))
        definitions = self.properties[object_type]
        limit = int(body.get("limit") or 10)
        if limit > SEARCH_PAGE_MAX or limit < 1:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"limit must be between 1 and {SEARCH_PAGE_MAX}; was {limit}",
                context={"limit": [str(limit)]},
            )
        after_raw = body.get("after") or "0"
        try:
            after = int(str(after_raw))
        except ValueError:
            raise HubSpotError(400, "VALIDATION_ERROR", f"Invalid after: {after_raw}") from None
        if after >= SEARCH_RESULT_CAP:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"The search API returns at most {SEARCH_RESULT_CAP} results; after={after} is beyond them.",
            )
        groups = body.get("filterGroups") or []
        if len(groups) > SEARCH_MAX_GROUPS:
            raise HubSpotError(
                400, "VALIDATION_ERROR", f"Too many filter groups: at most {SEARCH_MAX_GROUPS}"
            )
        total_filters = 0
        for group in groups:
            count = len(group.get("filters") or [])
            total_filters += count
            if count > SEARCH_MAX_FILTERS_PER_GROUP:
                raise HubSpotError(
                    400,
                    "VALIDATION_ERROR",
                    f"Too many filters in a group: at most {SEARCH_MAX_FILTERS_PER_GROUP}",
                )
            for flt in group.get("filters") or []:
                name = flt.get("propertyName")
                if name not in definitions:
                    raise HubSpotError(
                        400,
                        "VALIDATION_ERROR",
                        f"There was a problem with the request: property {name} does not exist",
                        context={"propertyName": [str(name)]},
                    )
        if total_filters > SEARCH_MAX_FILTERS:
            raise HubSpotError(
                400, "VALIDATION_ERROR", f"Too many filters: at most {SEARCH_MAX_FILTERS}"
            )
        query_key = json.dumps(
            [
                object_type,
                {k: v for k, v in body.items() if k not in ("after", "limit", "properties")},
            ],
            sort_keys=True,
            default=str,
        )
        self._settle_index(object_type)
        version = (self._writes, self._index_moves)
        cached = self._search_matches.get(query_key)
        if after > 0 and cached is not None and cached[0] == version:
            records = cached[1]
        else:
            records = self._search_records(object_type, body, groups, definitions)
            self._search_matches = {query_key: (version, records)}
        names = self._requested(object_type, body.get("properties") or [])
        end = min(after + limit, SEARCH_RESULT_CAP, len(records))
        result: dict[str, Any] = {
            "total": len(records),
            "results": [self._view(object_type, r, names) for r in records[after:end]],
        }
        if end < min(len(records), SEARCH_RESULT_CAP):
            result["paging"] = {"next": {"after": str(end), "link": ""}}
        return result

    def _search_records(
        self,
        object_type: str,
        body: dict[str, Any],
        groups: list[dict[str, Any]],
        definitions: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Every indexed record matching a search's filters and query, in its sort order."""
        records = self._searchable(object_type)
        if groups:
            records = [
                r
                for r in records
                if any(
                    all(self._matches(object_type, r, flt) for flt in group.get("filters") or [])
                    for group in groups
                )
            ]
        query = str(body.get("query") or "").strip().lower()
        if query:
            records = [r for r in records if self._query_matches(object_type, r, query)]
        for sort in reversed(list(body.get("sorts") or [])):
            if isinstance(sort, str):
                name, descending = sort.lstrip("-"), sort.startswith("-")
            else:
                name = str(sort.get("propertyName"))
                descending = str(sort.get("direction", "ASCENDING")).upper() == "DESCENDING"
            if name not in definitions:
                raise HubSpotError(
                    400, "VALIDATION_ERROR", f"Cannot sort on unknown property {name}"
                )
            present = [r for r in records if r["properties"].get(name, "") != ""]
            absent = [r for r in records if r["properties"].get(name, "") == ""]
            present.sort(
                key=functools.partial(self._sort_key, object_type, name), reverse=descending
            )
            records = present + absent
        return records

    def _comparable(self, object_type: str, name: str, text: str) -> Any:
        kind = self.properties[object_type][name]["type"]
        if kind == "number":
            try:
                return Decimal(text.strip())
            except InvalidOperation:
                return None
        if kind in ("datetime", "date"):
            if kind == "date" and _DAY.match(text.strip()):
                return _epoch_ms(datetime.fromisoformat(text.strip()).replace(tzinfo=UTC))
            moment = parse_moment(text)
            return _epoch_ms(moment) if moment else None
        return text.lower()

    def _sort_key(self, object_type: str, name: str, record: dict[str, Any]) -> Any:
        value = self._comparable(object_type, name, record["properties"].get(name, ""))
        return (0, value) if value is not None else (1, record["properties"].get(name, ""))

    def _matches(self, object_type: str, record: dict[str, Any], flt: dict[str, Any]) -> bool:
        name = str(flt.get("propertyName"))
        operator = str(flt.get("operator", "EQ")).upper()
        stored = record["properties"].get(name, "")
        if operator == "HAS_PROPERTY":
            return stored != ""
        if operator == "NOT_HAS_PROPERTY":
            return stored == ""
        if operator in ("IN", "NOT_IN"):
            values = [str(v) for v in flt.get("values") or []]
            wanted = {self._comparable(object_type, name, v) for v in values}
            inside = stored != "" and self._comparable(object_type, name, stored) in wanted
            return inside if operator == "IN" else not inside
        if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
            hit = stored != "" and _contains_token(stored, str(flt.get("value", "")))
            return hit if operator == "CONTAINS_TOKEN" else not hit
        if stored == "":
            return operator == "NEQ"
        have = self._comparable(object_type, name, stored)
        want = self._comparable(object_type, name, str(flt.get("value", "")))
        if operator == "EQ":
            return bool(have == want)
        if operator == "NEQ":
            return bool(have != want)
        if have is None or want is None:
            return False
        try:
            if operator == "LT":
                return bool(have < want)
            if operator == "LTE":
                return bool(have <= want)
            if operator == "GT":
                return bool(have > want)
            if operator == "GTE":
                return bool(have >= want)
            if operator == "BETWEEN":
                high = self._comparable(object_type, name, str(flt.get("highValue", "")))
                return high is not None and bool(want <= have <= high)
        except TypeError:
            return False
        raise HubSpotError(400, "VALIDATION_ERROR", f"Unknown filter operator {operator}")

    def _query_matches(self, object_type: str, record: dict[str, Any], query: str) -> bool:
        for name in _SEARCHABLE[object_type]:
            value = record["properties"].get(name, "").lower()
            if value and (
                value.startswith(query) or any(t.startswith(query) for t in _tokens(value))
            ):
                return True
        return False

    # ----------------------------------------------------------------- properties

    def _properties(
        self, method: str, object_type: str, rest: tuple[str, ...], request: Request
    ) -> tuple[int, Any]:
        definitions = self.properties[object_type]
        if not rest:
            if method == "GET":
                if (request.param("archived") or "").lower() == "true":
                    return 200, {"results": list(self.archived_properties[object_type].values())}
                return 200, {"results": list(definitions.values())}
            if method == "POST":
                return 201, self._create_property(object_type, self._body(request))
            raise self._not_allowed(method)
        if len(rest) == 1:
            definition = definitions.get(rest[0])
            if definition is None:
                raise HubSpotError(
                    404,
                    "OBJECT_NOT_FOUND",
                    f"Unable to find property {rest[0]} on {object_type}",
                    context={"propertyName": [rest[0]]},
                )
            if method == "GET":
                return 200, definition
            if method == "PATCH":
                return 200, self._update_property(definition, self._body(request), object_type)
            if method == "DELETE":
                self._archive_property(object_type, definition)
                return 204, None
        raise self._not_allowed(method)

    def _update_property(
        self, definition: dict[str, Any], body: dict[str, Any], object_type: str
    ) -> dict[str, Any]:
        """PATCH a property definition: label, description, group, order, visibility, options.

        Options are replaced as a whole ("you must include all of the options"); a value
        written later that is not among them is refused with INVALID_OPTION.
        """
        for key in ("type", "fieldType"):
            if key in body and body[key] != definition[key]:
                raise HubSpotError(
                    400,
                    "VALIDATION_ERROR",
                    f"The sandbox does not convert property {definition['name']} from "
                    f"{definition[key]} to {body[key]}",
                )
        group = body.get("groupName")
        if group is not None and group not in self.groups[object_type]:
            raise HubSpotError(400, "VALIDATION_ERROR", f"Property group {group} does not exist")
        if "options" in body:
            definition["options"] = _property_options(definition, body["options"])
        for key in ("label", "description", "groupName", "displayOrder", "hidden", "formField"):
            if key in body:
                definition[key] = body[key]
        definition["updatedAt"] = iso_ms(self._now())
        return definition

    def _archive_property(self, object_type: str, definition: dict[str, Any]) -> None:
        """Archive a custom property: gone from reads and writes, listed with archived=true."""
        if not definition["modificationMetadata"]["archivable"]:
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"{definition['name']} is a HubSpot default property and cannot be archived",
            )
        name = definition["name"]
        del self.properties[object_type][name]
        stamp = iso_ms(self._now())
        definition.update(archived=True, archivedAt=stamp, updatedAt=stamp)
        self.archived_properties[object_type][name] = definition
        self._writes += 1

    def _create_property(self, object_type: str, body: dict[str, Any]) -> dict[str, Any]:
        definitions = self.properties[object_type]
        missing = [
            key for key in ("name", "label", "type", "fieldType", "groupName") if not body.get(key)
        ]
        if missing:
            raise HubSpotError(
                400, "VALIDATION_ERROR", f"Missing required fields: {', '.join(missing)}"
            )
        name = str(body["name"])
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise HubSpotError(
                400,
                "VALIDATION_ERROR",
                f"Property name {name} must be lower case letters, digits and _",
            )
        if name in definitions:
            raise HubSpotError(
                409, "OBJECT_ALREADY_EXISTS", f"Property named '{name}' already exists."
            )
        kind, field_type = str(body["type"]), str(body["fieldType"])
        allowed = {
            "string": {"text", "textarea", "html", "phonenumber", "file"},
            "number": {"number", "calculation_equation"},
            "enumeration": {"select", "radio", "checkbox", "booleancheckbox"},
            "date": {"date"},
            "datetime": {"date"},
            "bool": {"booleancheckbox"},
            "phone_number": {"phonenumber"},
        }
        if kind not in allowed or field_type not in allowed[kind]:
            raise HubSpotError(
                400, "VALIDATION_ERROR", f"Invalid fieldType {field_type} for property type {kind}"
            )
        if body["groupName"] not in self.groups[object_type]:
            raise HubSpotError(
                400, "VALIDATION_ERROR", f"Property group {body['groupName']} does not exist"
            )
        definition = _prop(
            name,
            str(body["label"]),
            kind,
            field_type,
            str(body["groupName"]),
            hubspot_defined=False,
            unique=bool(body.get("hasUniqueValue", False)),
            description=str(body.get("description", "")),
        )
        if kind == "enumeration":
            definition["options"] = _option_list(body.get("options"), {})
        stamp = iso_ms(self._now())
        definition.update(
            createdAt=stamp, updatedAt=stamp, displayOrder=int(body.get("displayOrder", -1))
        )
        definitions[name] = definition
        return definition

    def _groups(
        self, method: str, object_type: str, rest: tuple[str, ...], request: Request
    ) -> tuple[int, Any]:
        groups = self.groups[object_type]
        if not rest:
            if method == "GET":
                return 200, {"results": list(groups.values())}
            if method == "POST":
                body = self._body(request)
                name, label = str(body.get("name") or ""), str(body.get("label") or "")
                if not name or not label:
                    raise HubSpotError(400, "VALIDATION_ERROR", "name and label are required")
                if name in groups:
                    raise HubSpotError(
                        409, "OBJECT_ALREADY_EXISTS", f"Group named '{name}' already exists."
                    )
                group = {
                    "name": name,
                    "label": label,
                    "displayOrder": int(body.get("displayOrder", -1)),
                    "archived": False,
                }
                groups[name] = group
                return 201, group
            raise self._not_allowed(method)
        if len(rest) == 1 and method == "GET":
            if rest[0] not in groups:
                raise HubSpotError(
                    404, "OBJECT_NOT_FOUND", f"Unable to find group {rest[0]} on {object_type}"
                )
            return 200, groups[rest[0]]
        raise self._not_allowed(method)


_MERGE_KEEPS = ("hs_object_id", "createdate", "hs_createdate", "hs_lastmodifieddate")


def _semicolon_list(text: str) -> list[str]:
    """The items of a ``;``-separated value (``hs_merged_object_ids``, additional domains)."""
    return [piece.strip() for piece in text.split(";") if piece.strip()]


def _merged_values(
    object_type: str, primary: dict[str, str], secondary: dict[str, str]
) -> dict[str, str]:
    """The property values a merge leaves: the primary's, the secondary's where it has none.

    Ids and stamps are the caller's; ``hs_merged_object_ids`` joins both records' lists;
    a company keeps the primary's ``domain`` and adds the secondary's domains to
    ``hs_additional_domains``.
    """
    skipped = {*_MERGE_KEEPS, _LASTMODIFIED[object_type], "hs_merged_object_ids"}
    values = {k: v for k, v in secondary.items() if k not in skipped and v != ""}
    values.update({k: v for k, v in primary.items() if k not in skipped and v != ""})
    earlier = _semicolon_list(primary.get("hs_merged_object_ids", "")) + _semicolon_list(
        secondary.get("hs_merged_object_ids", "")
    )
    if earlier:
        values["hs_merged_object_ids"] = ";".join(dict.fromkeys(earlier))
    if object_type == "companies":
        main = values.get("domain", "")
        extra = [
            *_semicolon_list(primary.get("hs_additional_domains", "")),
            secondary.get("domain", ""),
            *_semicolon_list(secondary.get("hs_additional_domains", "")),
        ]
        kept: dict[str, str] = {}
        for domain in extra:
            if domain and domain.lower() != main.lower():
                kept.setdefault(domain.lower(), domain)
        if kept:
            values["hs_additional_domains"] = ";".join(kept.values())
    return values


def _tokens(text: str) -> list[str]:
    lowered = text.lower()
    pieces = set(re.split(r"[\s;,]+", lowered)) | set(re.split(r"[^a-z0-9]+", lowered))
    if "@" in lowered:
        pieces.add(lowered.rsplit("@", 1)[1])
    return [p for p in pieces if p]


def _contains_token(stored: str, wanted: str) -> bool:
    wanted = wanted.strip().lower()
    if not wanted:
        return False
    if "*" in wanted:
        return fnmatch.fnmatchcase(stored.lower(), wanted) or any(
            fnmatch.fnmatchcase(token, wanted) for token in _tokens(stored)
        )
    return wanted in _tokens(stored) or wanted == stored.lower()


# --------------------------------------------------------------------------- seed data

_LEAD_STATUS = {
    "Open - Not Contacted": "NEW",
    "Working - Contacted": "IN_PROGRESS",
    "Closed - Not Converted": "UNQUALIFIED",
    "Marketing Qualified": "OPEN",
}
_JUNK_DOMAINS = ("n/a", "-", "none", "tbd")


def _demo_companies(seed: int) -> Sequence[Any]:
    from pls_sync.demo_companies import demo_companies

    return list(demo_companies(seed=seed))


def _crm_picture(companies: Sequence[Any], seed: int) -> list[dict[str, Any]]:
    """The CRM picture the Salesforce sandbox also uses, so both CRMs tell the same story."""
    from pls_sync.sandbox.seed import crm_companies

    return crm_companies(companies, seed)


def _host(typed: str) -> str:
    """What HubSpot's ``domain`` holds for a typed website: scheme and path gone, case kept."""
    host = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", typed.strip())
    return host.split("/", 1)[0]


def _seed_portal(api: HubSpotApi, picture: Sequence[dict[str, Any]], seed: int) -> dict[str, str]:
    """Load the CRM picture into the portal, with HubSpot's own kinds of mess; returns the
    company ids by picture key.

    Company ``domain`` is the host of the typed website (``www.`` and capitals kept), the
    ``Domain__c``-only value, a junk placeholder, or nothing; some companies list more domains
    in ``hs_additional_domains``; subsidiaries point at their parent; leads become contacts
    with no company; a few companies carry stale PQA values from an earlier tool.
    """
    rng = random.Random(f"hubspot-{seed}")
    ids: dict[str, str] = {}
    owner_ids = [owner_id for owner_id, _ in api.owners]

    def add(
        object_type: str, values: dict[str, str], created: datetime, modified: datetime
    ) -> dict[str, Any]:
        record = api._new_record(object_type, {}, created=created)
        record["properties"].update({k: v for k, v in values.items() if v})
        stamp = iso_ms(max(modified, created))
        record["properties"][_LASTMODIFIED[object_type]] = stamp
        record["updatedAt"] = stamp
        return record

    def contact(
        person: dict[str, Any], stage: str, company: dict[str, Any] | None, lead_status: str
    ) -> None:
        email = person.get("email")
        if not email:
            return
        values = {
            "email": str(email),
            "firstname": str(person.get("first_name") or ""),
            "lastname": str(person.get("last_name") or ""),
            "jobtitle": str(person.get("title") or ""),
            "lifecyclestage": stage,
            "hs_lead_status": lead_status,
            "hs_email_domain": str(email).rsplit("@", 1)[-1].lower(),
        }
        if company is not None:
            values["associatedcompanyid"] = company["id"]
            values["company"] = company["properties"].get("name", "")
        if api.mql_property != "lifecyclestage":
            values[api.mql_property] = "yes" if stage == "marketingqualifiedlead" else "no"
        created = _SEED_EPOCH - timedelta(days=rng.uniform(1, 700))
        if stage in STAGE_ENTERED:
            values[STAGE_ENTERED[stage]] = iso_ms(created)
        add("contacts", values, created, created + timedelta(days=rng.uniform(0, 60)))

    for item in picture:
        company: dict[str, Any] | None = None
        if item.get("has_account", True):
            website = str(item.get("website") or "")
            domain_field = str(item.get("domain_field") or "")
            domain = _host(website) if website else _host(domain_field)
            if domain and rng.random() < 0.02:
                domain = rng.choice(_JUNK_DOMAINS)
            owner = item.get("owner") or {}
            values = {
                "name": str(item.get("name") or ""),
                "domain": domain,
                "website": website if "://" in website else "",
                "industry": _industry_value(str(item["industry"])) if item.get("industry") else "",
                "numberofemployees": str(item["employees"]) if item.get("employees") else "",
                "hubspot_owner_id": api.owner_for(str(owner.get("name") or ""))
                or rng.choice(owner_ids),
                "lifecyclestage": rng.choice(("lead", "opportunity", "customer", "customer", "")),
            }
            true_domain = str(item.get("domain") or "")
            if item.get("kind") == "primary" and true_domain and rng.random() < 0.15:
                stem = true_domain.rsplit(".", 1)[0]
                values["hs_additional_domains"] = ";".join(
                    [f"{stem}.{rng.choice(('io', 'co.uk', 'de', 'net'))}", f"app.{true_domain}"][
                        : rng.choice((1, 2))
                    ]
                )
            if rng.random() < 0.05:  # stale values from an earlier scoring tool
                stale = {
                    "pqa_score": str(rng.randint(5, 95)),
                    "pqa_tier": rng.choice([v for v, _ in PQA_TIERS]),
                    "pqa_signals": "Pricing page viewed",
                }
                # Drawn either way, so a bare portal holds the same companies otherwise.
                if not api.bare:
                    values.update(stale)
            parent = ids.get(str(item.get("parent_key") or ""))
            if parent:
                values["hs_parent_company_id"] = parent
                children = api.objects["companies"][parent]["properties"]
                children["hs_num_child_companies"] = str(
                    int(children.get("hs_num_child_companies", "0")) + 1
                )
            company = add("companies", values, item["created"], item["last_modified"])
            ids[str(item["key"])] = company["id"]
        for person in item.get("contacts") or []:
            stage = (
                "marketingqualifiedlead"
                if person.get("mql")
                else rng.choice(
                    ("subscriber", "lead", "salesqualifiedlead", "opportunity", "customer")
                )
            )
            contact(person, stage, company, rng.choice(("NEW", "OPEN", "CONNECTED", "IN_PROGRESS")))
        for person in item.get("leads") or []:
            status = str(person.get("status") or "")
            stage = "marketingqualifiedlead" if status == "Marketing Qualified" else "lead"
            contact(person, stage, None, _LEAD_STATUS.get(status, "NEW"))
    return ids


def _deals_of(
    companies: Sequence[Any],
    picture: Sequence[dict[str, Any]],
    seed: int,
    as_of: datetime | None,
) -> list[dict[str, Any]]:
    """The deals both CRM sandboxes seed (``pls_sync.sandbox.seed.crm_deals``)."""
    from pls_sync.sandbox.seed import conversion_times, crm_deals, default_as_of

    if not picture:
        return []
    when = as_of or default_as_of()
    return crm_deals(picture, conversion_times(companies, seed, when), seed, when)


def _seed_deals(
    api: HubSpotApi, deals: Sequence[dict[str, Any]], company_ids: dict[str, str]
) -> None:
    """The seeded deals in the default pipeline, associated with their companies (the account's
    company first, as primary) and owned by its owner; a deal with no account has no company."""
    from pls_sync.sandbox.seed import DEAL_OPEN, DEAL_WON

    for deal in deals:
        if deal["outcome"] == DEAL_OPEN:
            index = int(deal["progress"] * len(_OPEN_DEAL_STAGES))
            stage = _OPEN_DEAL_STAGES[min(index, len(_OPEN_DEAL_STAGES) - 1)]
        else:
            stage = "closedwon" if deal["outcome"] == DEAL_WON else "closedlost"
        keys = [deal["company_key"], *deal["also_keys"]] if deal["company_key"] else []
        linked = [company_ids[key] for key in keys if key in company_ids]
        owner = (
            api.objects["companies"][linked[0]]["properties"].get("hubspot_owner_id", "")
            if linked
            else ""
        )
        values = {
            "dealname": deal["name"],
            "dealstage": stage,
            "pipeline": DEFAULT_PIPELINE,
            "closedate": iso_ms(deal["close"]),
            "amount": _number_text(Decimal(str(deal["amount"]))),
            "dealtype": "newbusiness" if deal["business"] == "New Business" else "existingbusiness",
            "hubspot_owner_id": owner,
        }
        deal_id = api.insert_deal(values, linked, created=deal["created"])
        record = api.objects["deals"][deal_id]
        stamp = iso_ms(max(deal["modified"], deal["created"]))
        record["properties"][_LASTMODIFIED["deals"]] = stamp
        record["updatedAt"] = stamp
