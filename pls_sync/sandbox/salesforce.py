"""The sandbox's Salesforce: an in-memory org behind the REST, SOQL, Collections and Bulk 2.0 APIs.

Faithful to the documented shapes so the unmodified simple-salesforce client works against it:
SOAP and OAuth login, versions, limits (``Sforce-Limit-Info`` on every data response), describe,
SOQL query/queryAll with ``nextRecordsUrl`` paging, single-record create/read/update, sObject
Collections PATCH (200 records, allOrNone, a SaveResult per record) and Bulk API 2.0 ingest.
Writes are validated against the describe metadata as the real org validates them: unknown and
read-only fields, types, lengths, numeric precision and restricted picklists.

An admin can change the schema as Setup would, and describe and writes follow at once:
``POST /__sandbox/salesforce/schema`` with a JSON body naming ``object`` and ``field`` and one
or more changes (``SalesforceApi.change_field`` in process):

* ``{"object": "Account", "field": "Domain__c", "delete": true}``: delete a custom field;
* ``{"object": "Account", "field": "PQA_Motion__c", "picklist": ["sales", "success"]}``:
  replace a picklist's values;
* ``{"object": "Account", "field": "PQA_Motion__c", "restricted": false}``: unrestrict it;
* ``{"object": "Account", "field": "PQA_Score__c", "updateable": false}``: make it read-only;
* ``"length": 80``, ``"precision": 2, "scale": 0``, ``"label": "..."``: resize or rename.

It answers 200 ``{"object", "field", "describe": <the field's describe entry or null>}``,
400 ``{"message"}`` for a change Setup would refuse, 404 for an unknown object or field.

Deleted records go to the recycle bin (``IsDeleted`` true, seen by queryAll) and the delete log
that ``GET sobjects/{sObject}/deleted/?start=&end=`` (sObject Get Deleted) reads. Two more admin
endpoints change the org the way people do outside the API:

* ``POST /__sandbox/salesforce/merge`` ``{"master": id, "losers": [id, ...]}``: a merge (the real
  one is SOAP ``merge()`` or Apex): the losers are deleted with ``MasterRecordId`` = master,
  their children reparented, the master's LastModifiedDate and SystemModstamp move;
* ``POST /__sandbox/salesforce/identity`` ``{"org_id": "00D...", "clear_fields": [...]}`` (both
  optional): the same records in another org (a sandbox refresh, a restore), the named fields
  empty. ``SELECT Id FROM Organization`` answers the org id.

Upsert by External ID (``PATCH sobjects/{sObject}/{field}/{value}``, counted as
``sf.sobject.upsert``): 201 ``{"id", "success", "errors", "created": true}`` when no live record
holds the value, 200 with ``"created": false`` when one does (updated), 300 with the matching
records' URLs when several do (nothing written), 404 NOT_FOUND when the field is not an External
ID, 400 when the body names ``Id`` or the key field. ``Task.PQA_Alert_Key__c`` is an External ID;
``{"object": "Task", "field": "PQA_Alert_Key__c", "external_id": false}`` on the schema admin
endpoint makes it a plain text field.

Where the real org is less kind than a naive fake, the sandbox is too. Each behaviour is on by
default and tunable by a constructor argument of the same name (or the attribute, at any time):

* ``bulk_polls_in_progress`` (2): a closed Bulk API 2.0 job answers ``InProgress`` to that many
  status polls before its outcome (``UploadComplete`` -> ``InProgress`` -> ``JobComplete``);
* ``shuffle_bulk_results`` (True): ``successfulResults`` and ``failedResults`` rows come in a
  seeded shuffle (``seed``), not in upload order;
* ``refuse_malformed_collections`` (True): a Collections request with a record that is not an
  object or lacks ``attributes.type`` is refused whole with a 400 and nothing is written (as are
  more than 200 records, EXCEEDED_ID_LIMIT, and a body without a ``records`` list, always);
* ``api_overage_share`` (0.1): calls are refused (403 REQUEST_LIMIT_EXCEEDED) only once usage
  reaches ``api_max * (1 + share)``; until then ``Sforce-Limit-Info`` reports usage above the
  allocation (``api-usage=110018/100000``); 0 refuses at ``api_max``;
* ``lock_error_style`` ("mixed"): a ``lock_row`` fault reads ``UNABLE_TO_LOCK_ROW`` ("direct"), or
  ``CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY`` with the lock in a trigger's message ("trigger"), or
  the two in turn, direct first ("mixed").

What ``pls-sync setup`` needs is served too. Tooling API ``CustomField``: ``POST
tooling/sobjects/CustomField`` with ``FullName`` (``Account.Score__c``) and ``Metadata`` (Text,
LongTextArea, Number, DateTime, Date, Checkbox, Email, Url, Phone, restricted or open Picklist,
``externalId``, ``unique``) answers 201 and describe shows the field at once (counted as
``sf.tooling.customfield.create``); a taken name is 400 DUPLICATE_DEVELOPER_NAME, bad metadata 400
FIELD_INTEGRITY_EXCEPTION or REQUIRED_FIELD_MISSING. ``GET tooling/query`` (CustomField:
Id, DeveloperName, TableEnumOrId, NamespacePrefix, FullName, Metadata; the last two for one row
at most) and ``GET tooling/sobjects/CustomField/{id}`` read fields back; ``PATCH`` with the whole
``Metadata`` replaces the definition (picklist values left out are gone; the type stays;
``sf.tooling.customfield.update``). ``PermissionSet``, ``FieldPermissions`` (read needed for
edit, permissionable fields only, one row per field and set) and ``PermissionSetAssignment``
(one per user and set, else DUPLICATE_VALUE) are sObjects; ``GET /services/oauth2/userinfo``
says who the session belongs to. ``can_customize`` and ``can_manage_permissions`` (True) take
"Customize Application" and "Manage Profiles and Permission Sets" away from the integration
user: those writes then answer 400 INSUFFICIENT_ACCESS_OR_READONLY. ``bare=True`` starts an org
without pls-sync's fields (``is_pls_sync_field``: ``Account.Domain__c``, every
``Account.PQA_*__c``, ``Task.PQA_Alert_Key__c``).

Opportunities follow their stage (``OPPORTUNITY_STAGES``, the stages of a new org): ``IsClosed``
and ``IsWon`` are read-only and set from ``StageName``, whose default probability a stage change
brings. SOQL refuses a filter literal of the wrong kind as the org does (INVALID_FIELD "value of
filter criterion for field 'CloseDate' must be of type date and should not be enclosed in
quotes"): a date field takes a date (``2026-01-01``), a dateTime field a dateTime, a boolean
``true``/``false``.

simple-salesforce always builds ``https://`` URLs; ``sandbox_login_session`` gives it a
``requests.Session`` that carries those (and the login hosts) to the sandbox over plain HTTP.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import itertools
import json
import math
import random
import re
import secrets
import threading
import time as _time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from pls_sync.sandbox import soql
from pls_sync.sandbox.faults import FaultInjector
from pls_sync.sandbox.http import Request, Response

if TYPE_CHECKING:
    import requests

# Version labels as the versions resource lists them (GET /services/data/).
API_VERSIONS: tuple[tuple[str, str], ...] = (
    ("52.0", "Summer '21"),
    ("53.0", "Winter '22"),
    ("54.0", "Spring '22"),
    ("55.0", "Summer '22"),
    ("56.0", "Winter '23"),
    ("57.0", "Spring '23"),
    ("58.0", "Summer '23"),
    ("59.0", "Winter '24"),
    ("60.0", "Spring '24"),
    ("61.0", "Summer '24"),
    ("62.0", "Winter '25"),
)
_VERSIONS = {v for v, _ in API_VERSIONS}
DEFAULT_DAILY_API_LIMIT = 100_000
# "api-usage=110018/100000": the org may run past its allocation before calls are refused.
DEFAULT_API_OVERAGE_SHARE = 0.1
DEFAULT_BULK_POLLS_IN_PROGRESS = 2
LOCK_ERROR_STYLES = ("direct", "trigger", "mixed")
COLLECTION_LIMIT = 200
QUERY_BATCH_DEFAULT = 2000
QUERY_BATCH_MIN = 200
MAX_OFFSET = 2000
# getDeleted: "Results are returned for no more than 15 days previous to the day the call is
# executed"; "There is a limit of 600,000 IDs returned from this resource".
DELETED_RETENTION_DAYS = 15
DELETED_ID_LIMIT = 600_000
# merge(): "The only supported object types are Lead, Contact and Account"; "Up to three
# records can be merged in a single request, including the master record".
MERGEABLE_OBJECTS = ("Account", "Contact", "Lead")
MAX_MERGE_LOSERS = 2
ORG_NAME = "pls-sync sandbox"

_NOT_FOUND = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
_INVALID_SESSION = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
_REQUEST_LIMIT = [
    {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
]
_ROLLED_BACK = {
    "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "message": "Record rolled back because not all records were valid and the request was using "
    "AllOrNone header",
    "fields": [],
}
_ID_RE = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_CHECKSUM_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TEXT_TYPES = frozenset({"string", "textarea", "url", "email", "phone", "picklist", "combobox"})
_NUMBER_TYPES = frozenset({"double", "currency", "percent", "int"})


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of an sObject as describe reports it."""

    name: str
    label: str
    type: str
    length: int = 0
    precision: int = 0
    scale: int = 0
    updateable: bool = True
    createable: bool = True
    nillable: bool = True
    custom: bool = False
    picklist: tuple[str, ...] = ()
    restricted: bool = False
    reference_to: tuple[str, ...] = ()
    relationship: str | None = None
    # The field's "External ID" attribute: an indexed key that upsert can match records by.
    external_id: bool = False
    # "Unique": no two records may hold the same value (Text, Number and Email fields).
    unique: bool = False

    @property
    def permissionable(self) -> bool:
        """Whether field-level security (FieldPermissions) applies: custom fields and optional
        writable standard ones; required and system fields are always visible."""
        return self.custom or (self.nillable and (self.updateable or self.createable))

    def describe(self) -> dict[str, Any]:
        """The field's entry in the describe response."""
        soap = {
            "id": "tns:ID",
            "reference": "tns:ID",
            "boolean": "xsd:boolean",
            "double": "xsd:double",
            "currency": "xsd:double",
            "percent": "xsd:double",
            "int": "xsd:int",
            "datetime": "xsd:dateTime",
            "date": "xsd:date",
        }.get(self.type, "xsd:string")
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "soapType": soap,
            "length": self.length,
            "byteLength": self.length * 3,
            "precision": self.precision,
            "scale": self.scale,
            "digits": 9 if self.type == "int" else 0,
            "updateable": self.updateable,
            "createable": self.createable,
            "nillable": self.nillable,
            "custom": self.custom,
            "calculated": False,
            "unique": self.unique,
            "externalId": self.external_id,
            "permissionable": self.permissionable,
            "idLookup": self.name == "Id" or self.external_id,
            "filterable": self.type != "textarea" or self.length <= 255,
            "sortable": self.type != "textarea" or self.length <= 255,
            "defaultedOnCreate": not self.nillable and self.type in ("boolean", "reference"),
            "restrictedPicklist": self.restricted,
            "picklistValues": [
                {
                    "active": True,
                    "defaultValue": False,
                    "label": value,
                    "validFor": None,
                    "value": value,
                }
                for value in self.picklist
            ],
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship,
            "extraTypeInfo": "plaintextarea" if self.type == "textarea" else None,
            "inlineHelpText": None,
            "defaultValue": None,
        }


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    """One sObject: name, key prefix and fields."""

    name: str
    label: str
    plural: str
    key_prefix: str
    fields: tuple[FieldSpec, ...]
    required: tuple[str, ...] = ()
    defaults: tuple[tuple[str, Any], ...] = ()
    createable: bool = True
    deletable: bool = True
    by_lower: dict[str, FieldSpec] = field(default_factory=dict, compare=False)
    relationships: dict[str, FieldSpec] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for spec in self.fields:
            self.by_lower[spec.name.lower()] = spec
            if spec.relationship:
                self.relationships[spec.relationship.lower()] = spec

    def field(self, name: str) -> FieldSpec | None:
        """A field by name, case-insensitively."""
        return self.by_lower.get(name.lower())

    def describe(self, version: str) -> dict[str, Any]:
        """The sObject describe response."""
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label,
            "labelPlural": self.plural,
            "keyPrefix": self.key_prefix,
            "custom": False,
            "createable": self.createable,
            "updateable": True,
            "deletable": self.deletable,
            "queryable": True,
            "searchable": True,
            "retrieveable": True,
            "fields": [spec.describe() for spec in self.fields],
            "urls": {
                "sobject": base,
                "describe": f"{base}/describe",
                "rowTemplate": f"{base}/{{ID}}",
            },
        }


def _system_fields() -> list[FieldSpec]:
    """The audit fields every object carries, none of them writable."""
    return [
        FieldSpec(
            "IsDeleted", "Deleted", "boolean", nillable=False, updateable=False, createable=False
        ),
        FieldSpec(
            "CreatedDate",
            "Created Date",
            "datetime",
            nillable=False,
            updateable=False,
            createable=False,
        ),
        FieldSpec(
            "CreatedById",
            "Created By ID",
            "reference",
            length=18,
            nillable=False,
            reference_to=("User",),
            relationship="CreatedBy",
            updateable=False,
            createable=False,
        ),
        FieldSpec(
            "LastModifiedDate",
            "Last Modified Date",
            "datetime",
            nillable=False,
            updateable=False,
            createable=False,
        ),
        FieldSpec(
            "LastModifiedById",
            "Last Modified By ID",
            "reference",
            length=18,
            nillable=False,
            reference_to=("User",),
            relationship="LastModifiedBy",
            updateable=False,
            createable=False,
        ),
        FieldSpec(
            "SystemModstamp",
            "System Modstamp",
            "datetime",
            nillable=False,
            updateable=False,
            createable=False,
        ),
    ]


def _id_field() -> FieldSpec:
    return FieldSpec(
        "Id", "Record ID", "id", length=18, updateable=False, createable=False, nillable=False
    )


def _owner_field() -> FieldSpec:
    return FieldSpec(
        "OwnerId",
        "Owner ID",
        "reference",
        length=18,
        nillable=False,
        reference_to=("User",),
        relationship="Owner",
    )


def _name_field() -> FieldSpec:
    return FieldSpec(
        "Name",
        "Full Name",
        "string",
        length=121,
        updateable=False,
        createable=False,
        nillable=False,
    )


def _master_record_field(sobject: str) -> FieldSpec:
    """Set on a record deleted as the loser of a merge: the id of the record that was kept."""
    return FieldSpec(
        "MasterRecordId",
        "Master Record ID",
        "reference",
        length=18,
        reference_to=(sobject,),
        relationship="MasterRecord",
        updateable=False,
        createable=False,
    )


def _organization() -> ObjectSpec:
    """The org itself: one row, read-only through the API, ``Id`` is the 18-char org id."""
    return ObjectSpec(
        "Organization",
        "Organization",
        "Organizations",
        "00D",
        (
            _id_field(),
            FieldSpec("Name", "Name", "string", length=80, nillable=False),
            FieldSpec("InstanceName", "Instance Name", "string", length=5, updateable=False),
            FieldSpec("IsSandbox", "Is Sandbox", "boolean", nillable=False, updateable=False),
            FieldSpec(
                "OrganizationType",
                "Edition",
                "picklist",
                length=40,
                updateable=False,
                picklist=("Developer Edition", "Enterprise Edition", "Unlimited Edition"),
            ),
            *(f for f in _system_fields() if f.name != "IsDeleted"),
        ),
        createable=False,
        deletable=False,
    )


LEAD_STATUSES = (
    "Open - Not Contacted",
    "Working - Contacted",
    "Marketing Qualified",
    "Closed - Converted",
    "Closed - Not Converted",
)
# The default OpportunityStage values of a new org: (API name, default probability %, IsClosed,
# IsWon). An opportunity's IsClosed, IsWon (read-only) and default Probability follow its stage.
OPPORTUNITY_STAGES: tuple[tuple[str, int, bool, bool], ...] = (
    ("Prospecting", 10, False, False),
    ("Qualification", 10, False, False),
    ("Needs Analysis", 20, False, False),
    ("Value Proposition", 50, False, False),
    ("Id. Decision Makers", 60, False, False),
    ("Perception Analysis", 70, False, False),
    ("Proposal/Price Quote", 75, False, False),
    ("Negotiation/Review", 90, False, False),
    ("Closed Won", 100, True, True),
    ("Closed Lost", 0, True, False),
)
_STAGE_FLAGS = {
    name: (probability, closed, won) for name, probability, closed, won in OPPORTUNITY_STAGES
}
INDUSTRIES = (
    "Agriculture",
    "Banking",
    "Consulting",
    "Education",
    "Energy",
    "Finance",
    "Government",
    "Healthcare",
    "Hospitality",
    "Insurance",
    "Manufacturing",
    "Media",
    "Retail",
    "Technology",
    "Telecommunications",
    "Transportation",
    "Other",
)


def build_schema(*, bare: bool = False) -> dict[str, ObjectSpec]:
    """The org's objects: Account (with the PQA fields already created), Lead, Contact,
    Opportunity, Task, User, the permission objects (PermissionSet, FieldPermissions,
    PermissionSetAssignment) and the Organization itself. ``bare``: without pls-sync's own custom fields (see ``PLS_SYNC_FIELDS``)."""
    account = ObjectSpec(
        "Account",
        "Account",
        "Accounts",
        "001",
        (
            _id_field(),
            FieldSpec("Name", "Account Name", "string", length=255, nillable=False),
            FieldSpec(
                "ParentId",
                "Parent Account ID",
                "reference",
                length=18,
                reference_to=("Account",),
                relationship="Parent",
            ),
            FieldSpec(
                "Type",
                "Account Type",
                "picklist",
                length=255,
                picklist=(
                    "Prospect",
                    "Customer - Direct",
                    "Customer - Channel",
                    "Partner",
                    "Other",
                ),
            ),
            FieldSpec("Website", "Website", "url", length=255),
            FieldSpec("Industry", "Industry", "picklist", length=255, picklist=INDUSTRIES),
            FieldSpec("NumberOfEmployees", "Employees", "int", precision=8),
            FieldSpec("BillingCountry", "Billing Country", "string", length=80),
            FieldSpec("Phone", "Account Phone", "phone", length=40),
            FieldSpec("Description", "Account Description", "textarea", length=32000),
            _owner_field(),
            *_system_fields(),
            _master_record_field("Account"),
            FieldSpec(
                "LastActivityDate",
                "Last Activity",
                "date",
                updateable=False,
                createable=False,
            ),
            FieldSpec("Domain__c", "Domain", "string", length=255, custom=True),
            FieldSpec("PQA_Score__c", "PQA Score", "double", precision=3, scale=0, custom=True),
            FieldSpec(
                "PQA_Tier__c",
                "PQA Tier",
                "picklist",
                length=255,
                picklist=("sales", "success", "self_serve"),
                restricted=True,
                custom=True,
            ),
            FieldSpec("PQA_Signals__c", "PQA Signals", "textarea", length=1000, custom=True),
            FieldSpec(
                "PQA_Score_Change__c",
                "PQA Score Change",
                "double",
                precision=4,
                scale=0,
                custom=True,
            ),
            FieldSpec(
                "PQA_Active_Users__c",
                "PQA Active Users",
                "double",
                precision=8,
                scale=0,
                custom=True,
            ),
            FieldSpec("PQA_Qualified_Since__c", "PQA Qualified Since", "datetime", custom=True),
            FieldSpec("PQA_Last_Scored__c", "PQA Last Scored", "datetime", custom=True),
            FieldSpec(
                "PQA_Lead_Channel__c",
                "PQA Lead Channel",
                "picklist",
                length=255,
                picklist=("usage_pql", "usage_mql", "mql_only", "usage_no_buyer"),
                restricted=True,
                custom=True,
            ),
            FieldSpec(
                "PQA_Motion__c",
                "PQA Motion",
                "picklist",
                length=255,
                picklist=("sales", "success", "abm", "self_serve"),
                restricted=True,
                custom=True,
            ),
        ),
        required=("Name",),
    )
    lead = ObjectSpec(
        "Lead",
        "Lead",
        "Leads",
        "00Q",
        (
            _id_field(),
            FieldSpec("FirstName", "First Name", "string", length=40),
            FieldSpec("LastName", "Last Name", "string", length=80, nillable=False),
            _name_field(),
            FieldSpec("Company", "Company", "string", length=255, nillable=False),
            FieldSpec("Email", "Email", "email", length=80),
            FieldSpec("Title", "Title", "string", length=128),
            FieldSpec("Website", "Website", "url", length=255),
            FieldSpec(
                "Status", "Status", "picklist", length=255, nillable=False, picklist=LEAD_STATUSES
            ),
            FieldSpec(
                "LeadSource",
                "Lead Source",
                "picklist",
                length=255,
                picklist=(
                    "Web",
                    "Webinar",
                    "Trade Show",
                    "Partner Referral",
                    "Content Download",
                    "Other",
                ),
            ),
            FieldSpec("IsConverted", "Converted", "boolean", nillable=False, updateable=False),
            _owner_field(),
            *_system_fields(),
            _master_record_field("Lead"),
        ),
        required=("LastName", "Company"),
        defaults=(("Status", "Open - Not Contacted"), ("IsConverted", False)),
    )
    contact = ObjectSpec(
        "Contact",
        "Contact",
        "Contacts",
        "003",
        (
            _id_field(),
            FieldSpec(
                "AccountId",
                "Account ID",
                "reference",
                length=18,
                reference_to=("Account",),
                relationship="Account",
            ),
            FieldSpec("FirstName", "First Name", "string", length=40),
            FieldSpec("LastName", "Last Name", "string", length=80, nillable=False),
            _name_field(),
            FieldSpec("Email", "Email", "email", length=80),
            FieldSpec("Title", "Title", "string", length=128),
            FieldSpec("MQL__c", "MQL", "boolean", nillable=False, custom=True),
            _owner_field(),
            *_system_fields(),
            _master_record_field("Contact"),
        ),
        required=("LastName",),
        defaults=(("MQL__c", False),),
    )
    task = ObjectSpec(
        "Task",
        "Task",
        "Tasks",
        "00T",
        (
            _id_field(),
            FieldSpec("Subject", "Subject", "combobox", length=255),
            FieldSpec(
                "Status",
                "Status",
                "picklist",
                length=255,
                nillable=False,
                picklist=("Not Started", "In Progress", "Completed", "Waiting on someone else"),
            ),
            FieldSpec(
                "Priority",
                "Priority",
                "picklist",
                length=255,
                nillable=False,
                picklist=("High", "Normal", "Low"),
            ),
            FieldSpec(
                "WhatId",
                "Related To ID",
                "reference",
                length=18,
                reference_to=("Account",),
                relationship="What",
            ),
            FieldSpec(
                "WhoId",
                "Name ID",
                "reference",
                length=18,
                reference_to=("Contact", "Lead"),
                relationship="Who",
            ),
            FieldSpec("ActivityDate", "Due Date Only", "date"),
            FieldSpec("Description", "Description", "textarea", length=32000),
            _owner_field(),
            *_system_fields(),
            # pls-sync's idempotency key for rep alerts (Text(64), External ID: upsert by it).
            FieldSpec(
                "PQA_Alert_Key__c",
                "PQA Alert Key",
                "string",
                length=64,
                custom=True,
                external_id=True,
                unique=True,
            ),
        ),
        defaults=(("Status", "Not Started"), ("Priority", "Normal")),
    )
    user = ObjectSpec(
        "User",
        "User",
        "Users",
        "005",
        (
            _id_field(),
            FieldSpec("Username", "Username", "string", length=80, nillable=False),
            FieldSpec("FirstName", "First Name", "string", length=40),
            FieldSpec("LastName", "Last Name", "string", length=80, nillable=False),
            _name_field(),
            FieldSpec("Email", "Email", "email", length=128, nillable=False),
            FieldSpec("Title", "Title", "string", length=80),
            FieldSpec("IsActive", "Active", "boolean", nillable=False),
            *_system_fields(),
        ),
        required=("LastName", "Username", "Email"),
        defaults=(("IsActive", True),),
    )
    objects = (
        account,
        lead,
        contact,
        _opportunity(),
        task,
        user,
        *_permission_objects(),
        _organization(),
    )
    if bare:
        objects = tuple(_without_pls_sync_fields(spec) for spec in objects)
    return {spec.name: spec for spec in objects}


def _opportunity() -> ObjectSpec:
    """A sale or pending deal of an Account: its stage (``OPPORTUNITY_STAGES``) decides the
    read-only ``IsClosed`` and ``IsWon``; ``CloseDate`` is a date."""
    return ObjectSpec(
        "Opportunity",
        "Opportunity",
        "Opportunities",
        "006",
        (
            _id_field(),
            FieldSpec(
                "AccountId",
                "Account ID",
                "reference",
                length=18,
                reference_to=("Account",),
                relationship="Account",
            ),
            FieldSpec("Name", "Name", "string", length=120, nillable=False),
            FieldSpec(
                "StageName",
                "Stage",
                "picklist",
                length=255,
                nillable=False,
                picklist=tuple(name for name, *_ in OPPORTUNITY_STAGES),
                restricted=True,
            ),
            FieldSpec("CloseDate", "Close Date", "date", nillable=False),
            FieldSpec("Amount", "Amount", "currency", precision=18, scale=2),
            FieldSpec("Probability", "Probability (%)", "percent", precision=3, scale=0),
            FieldSpec(
                "Type",
                "Opportunity Type",
                "picklist",
                length=255,
                picklist=("Existing Business", "New Business"),
            ),
            FieldSpec(
                "IsClosed", "Closed", "boolean", nillable=False, updateable=False, createable=False
            ),
            FieldSpec(
                "IsWon", "Won", "boolean", nillable=False, updateable=False, createable=False
            ),
            _owner_field(),
            *_system_fields(),
        ),
        required=("Name", "StageName", "CloseDate"),
    )


def is_pls_sync_field(sobject: str, name: str) -> bool:
    """Whether a field is one pls-sync's setup creates (absent from a ``bare`` org)."""
    if sobject == "Account":
        return name == "Domain__c" or (name.startswith("PQA_") and name.endswith("__c"))
    return (sobject, name) == ("Task", "PQA_Alert_Key__c")


def _without_pls_sync_fields(spec: ObjectSpec) -> ObjectSpec:
    kept = tuple(f for f in spec.fields if not is_pls_sync_field(spec.name, f.name))
    if len(kept) == len(spec.fields):
        return spec
    # Fresh lookup tables: replace() would carry over the ones that still name the dropped fields.
    return replace(spec, fields=kept, by_lower={}, relationships={})


def _permission_objects() -> tuple[ObjectSpec, ...]:
    """PermissionSet, FieldPermissions and PermissionSetAssignment, as far as setup uses them."""
    permission_set = ObjectSpec(
        "PermissionSet",
        "Permission Set",
        "Permission Sets",
        "0PS",
        (
            _id_field(),
            FieldSpec("Name", "API Name", "string", length=80, nillable=False),
            FieldSpec("Label", "Permission Set Name", "string", length=80, nillable=False),
            FieldSpec("Description", "Description", "string", length=255),
            FieldSpec("IsCustom", "Custom", "boolean", nillable=False, createable=False),
            FieldSpec(
                "IsOwnedByProfile", "Is Owned By Profile", "boolean", nillable=False,
                createable=False, updateable=False,
            ),
            *_system_fields(),
        ),
        required=("Name", "Label"),
        defaults=(("IsCustom", True), ("IsOwnedByProfile", False)),
    )  # fmt: skip
    field_permissions = ObjectSpec(
        "FieldPermissions",
        "Field Permissions",
        "Field Permissions",
        "01k",
        (
            _id_field(),
            FieldSpec(
                "ParentId", "Parent ID", "reference", length=18, nillable=False,
                reference_to=("PermissionSet",), relationship="Parent", updateable=False,
            ),
            FieldSpec(
                "SobjectType", "SObject Type Name", "string", length=40, nillable=False,
                updateable=False,
            ),
            FieldSpec("Field", "Field Name", "string", length=255, nillable=False, updateable=False),
            FieldSpec("PermissionsRead", "Read Field", "boolean", nillable=False),
            FieldSpec("PermissionsEdit", "Edit Field", "boolean", nillable=False),
            *(f for f in _system_fields() if f.name == "SystemModstamp"),
        ),
        required=("ParentId", "SobjectType", "Field"),
        defaults=(("PermissionsRead", False), ("PermissionsEdit", False)),
    )  # fmt: skip
    assignment = ObjectSpec(
        "PermissionSetAssignment",
        "Permission Set Assignment",
        "Permission Set Assignments",
        "0Pa",
        (
            _id_field(),
            FieldSpec(
                "AssigneeId", "Assignee ID", "reference", length=18, nillable=False,
                reference_to=("User",), relationship="Assignee", updateable=False,
            ),
            FieldSpec(
                "PermissionSetId", "Permission Set ID", "reference", length=18, nillable=False,
                reference_to=("PermissionSet",), relationship="PermissionSet", updateable=False,
            ),
            *(f for f in _system_fields() if f.name == "SystemModstamp"),
        ),
        required=("AssigneeId", "PermissionSetId"),
    )  # fmt: skip
    return permission_set, field_permissions, assignment


# --------------------------------------------------------------------------- ids and values


def _derive_stage(
    spec: ObjectSpec, record: dict[str, Any], *, stage_set: bool, probability_set: bool
) -> None:
    """An opportunity's ``IsClosed`` and ``IsWon`` from its stage; a stage set without a
    probability brings the stage's default probability, as in the org."""
    if spec.name != "Opportunity":
        return
    probability, closed, won = _STAGE_FLAGS.get(record.get("StageName") or "", (0, False, False))
    record["IsClosed"], record["IsWon"] = closed, won
    if stage_set and not probability_set:
        record["Probability"] = float(probability)


def id18(id15: str) -> str:
    """Salesforce's case-safe 18-character id: the 15-character id plus its checksum suffix."""
    suffix = ""
    for chunk in range(3):
        bits = 0
        for position, char in enumerate(id15[chunk * 5 : chunk * 5 + 5]):
            if "A" <= char <= "Z":
                bits |= 1 << position
        suffix += _CHECKSUM_CHARS[bits]
    return id15 + suffix


def make_id(prefix: str, number: int, pod: str = "Dn") -> str:
    """A deterministic 18-character id: key prefix, pod, zero padding, base-62 sequence number."""
    digits = ""
    n = number
    for _ in range(6):
        n, rem = divmod(n, 62)
        digits = _BASE62[rem] + digits
    return id18(f"{prefix}{pod}0000{digits}")


DEFAULT_ORG_ID = id18("00D5g00000" + "Pls5x")
_ORG_ID_RE = re.compile(r"^00D[a-zA-Z0-9]{12}(?:[a-zA-Z0-9]{3})?$")


def checked_org_id(value: Any) -> str:
    """An org id as the 18-character form, or ``ValueError``: 15 or 18 characters, ``00D``
    key prefix, and an 18-character id's case-safe suffix must match."""
    if not isinstance(value, str) or not _ORG_ID_RE.match(value):
        raise ValueError(f"an org id is 15 or 18 characters starting with 00D, not {value!r}")
    full = id18(value[:15])
    if len(value) == 18 and value != full:
        raise ValueError(
            f"{value} is not a valid 18-character id (its suffix should be {full[15:]})"
        )
    return full


class ReplicationError(Exception):
    """A getDeleted window the org cannot answer: its errorCode and message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _minute(value: datetime) -> datetime:
    """``value`` in UTC with seconds dropped, as getDeleted reads its dates."""
    return value.astimezone(UTC).replace(second=0, microsecond=0)


def format_datetime(value: datetime) -> str:
    """A datetime as the REST API writes it: ``2026-01-31T09:00:00.000+0000``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}+0000"


def to_json_value(spec: FieldSpec, value: Any) -> Any:
    """A stored value as the REST API returns it."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if spec.type in ("double", "currency", "percent"):
        return float(value)
    return value


def to_csv_value(value: Any) -> str:
    """A stored value as a Bulk API CSV cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class RecordError(Exception):
    """A write Salesforce refuses for one record: its statusCode, message and fields."""

    def __init__(self, code: str, message: str, fields: Iterable[str] = ()):
        super().__init__(message)
        self.code = code
        self.message = message
        self.fields = list(fields)

    def save_error(self) -> dict[str, Any]:
        """The error as a SaveResult ``errors`` item."""
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}

    def rest_error(self) -> dict[str, Any]:
        """The error as a REST error-list item."""
        return {"message": self.message, "errorCode": self.code, "fields": self.fields}

    def bulk_error(self) -> str:
        """The error as a Bulk API 2.0 ``sf__Error`` cell: ``CODE:message:fields --``."""
        return f"{self.code}:{self.message}:{','.join(self.fields)} --"


def _number_from(spec: FieldSpec, value: Any, source: str) -> float | int:
    """A number for a numeric field, or the error the API raises for that source."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _type_error(spec, value, source)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _type_error(spec, value, source) from None
    else:
        number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise _type_error(spec, value, source)
    number = round(number, spec.scale)
    if abs(number) >= 10 ** (spec.precision - spec.scale):
        raise RecordError(
            "NUMBER_OUTSIDE_VALID_RANGE",
            f"{spec.label}: value outside of valid range on numeric field: {_fmt(value)}",
            [spec.name],
        )
    if spec.type == "int":
        return int(number)
    return number


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _type_error(spec: FieldSpec, value: Any, source: str) -> RecordError:
    """A value of the wrong type: REST JSON fails to deserialize, Collections and Bulk per record."""
    if source == "rest":
        json_type = "VALUE_STRING" if isinstance(value, str) else "VALUE_OTHER"
        java = {"int": "int", "boolean": "boolean"}.get(spec.type, "double")
        return RecordError(
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of {java} from {json_type} value {value} or request "
            "may be missing a required field at [line:1, column:2]",
        )
    return RecordError(
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        f"{spec.label}: value not of required type: {value}",
        [spec.name],
    )


# --------------------------------------------------------------------------- bulk jobs


@dataclass
class BulkJob:
    """A Bulk API 2.0 ingest job and, once processed, its per-row results."""

    id: str
    object: str
    operation: str
    created_by: str
    created: datetime
    version: str
    line_ending: str = "LF"
    delimiter: str = "COMMA"
    state: str = "Open"
    data: str | None = None
    modstamp: datetime | None = None
    processed: int = 0
    failed: int = 0
    error_message: str | None = None
    successful: list[list[str]] = field(default_factory=list)
    failures: list[list[str]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    processing_ms: int = 0
    # The outcome a processed job shows once ``polls_left`` status polls have seen InProgress.
    outcome: str | None = None
    polls_left: int = 0

    def info(self, *, full: bool) -> dict[str, Any]:
        """The job info the create, close and get-job resources return."""
        out: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": self.created_by,
            "createdDate": format_datetime(self.created),
            "systemModstamp": format_datetime(self.modstamp or self.created),
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.version),
            "contentUrl": f"services/data/v{self.version}/jobs/ingest/{self.id}/batches",
            "lineEnding": self.line_ending,
            "columnDelimiter": self.delimiter,
        }
        if full:
            out.update(
                {
                    "jobType": "V2Ingest",
                    "numberRecordsProcessed": self.processed,
                    "numberRecordsFailed": self.failed,
                    "retries": 0,
                    "totalProcessingTime": self.processing_ms,
                    "apiActiveProcessingTime": self.processing_ms,
                    "apexProcessingTime": 0,
                }
            )
            if self.error_message:
                out["errorMessage"] = self.error_message
        return out


_DELIMITERS = {
    "COMMA": ",",
    "TAB": "\t",
    "PIPE": "|",
    "SEMICOLON": ";",
    "CARET": "^",
    "BACKQUOTE": "`",
}


@dataclass
class _Cursor:
    """A query's remaining rows for ``nextRecordsUrl`` paging."""

    rows: list[dict[str, Any]]
    batch: int
    endpoint: str


# --------------------------------------------------------------------------- the API


Handler = Callable[[Request, "_Ctx"], Response]


@dataclass(slots=True)
class _Ctx:
    """What the router extracted from a path."""

    version: str = ""
    parts: tuple[str, ...] = ()


class SalesforceApi:
    """The in-memory org and the REST API subset around it (the sandbox's API-module contract).

    ``records`` maps object name -> id -> field values (Python values: str, float, int, bool,
    datetime, date, None). Tests and seeders may use ``insert``, ``get`` and ``delete`` directly.
    """

    def __init__(
        self,
        *,
        faults: FaultInjector | None = None,
        base_url: str = "http://127.0.0.1",
        session_id: str | None = None,
        daily_api_limit: int = DEFAULT_DAILY_API_LIMIT,
        org_id: str | None = None,
        clock: Callable[[], datetime] | None = None,
        bulk_polls_in_progress: int = DEFAULT_BULK_POLLS_IN_PROGRESS,
        shuffle_bulk_results: bool = True,
        api_overage_share: float = DEFAULT_API_OVERAGE_SHARE,
        lock_error_style: str = "mixed",
        refuse_malformed_collections: bool = True,
        seed: int = 0,
        bare: bool = False,
    ):
        # bare: an org where nobody has created pls-sync's fields yet (``pls-sync setup`` does).
        self.bare = bare
        self.schema = build_schema(bare=bare)
        self._schema_lower = {name.lower(): spec for name, spec in self.schema.items()}
        self.faults = faults or FaultInjector()
        self.base_url = base_url.rstrip("/")
        # What "now" is for SystemModstamp, deletedDate and getDeleted windows (tests fix it).
        self.clock: Callable[[], datetime] = clock or _utc_now
        self.org_id = checked_org_id(org_id) if org_id is not None else DEFAULT_ORG_ID
        self.session_id = session_id or new_session_id(self.org_id)
        self.username = "revops@pls-sync.sandbox"
        self.password = "sandbox-password"
        self.security_token = "SandboxToken123"
        self.consumer_key = "3MVG9sandbox.pls-sync.consumer-key"
        self.consumer_secret = "sandbox-consumer-secret"
        self.refresh_token = "5Aep861sandbox-refresh-token"
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.schema}
        self.deleted: set[str] = set()
        # The delete log getDeleted reads: object -> id -> deletedDate (the recycle bin is the
        # records themselves, IsDeleted true, which queryAll sees).
        self.delete_log: dict[str, dict[str, datetime]] = {name: {} for name in self.schema}
        self.delete_log_purged: datetime | None = None
        self.deleted_id_limit = DELETED_ID_LIMIT
        self._org_sequence = itertools.count(1)
        self.api_max = daily_api_limit
        self.api_used = 0
        # How far past api_max the org lets usage go before it refuses calls (0.1: 10 % more);
        # Sforce-Limit-Info then reports usage above the allocation.
        self.api_overage_share = api_overage_share
        # How many status polls a closed Bulk API 2.0 job answers InProgress before its outcome.
        self.bulk_polls_in_progress = bulk_polls_in_progress
        # Bulk results rows in a seeded shuffle, not upload order (the API promises no order).
        self.shuffle_bulk_results = shuffle_bulk_results
        # lock_row faults: "direct" UNABLE_TO_LOCK_ROW, "trigger" (CANNOT_INSERT_UPDATE_ACTIVATE_
        # ENTITY from a trigger's DML) or "mixed" (the two in turn, direct first).
        self.lock_error_style = lock_error_style
        self._locks_rendered = 0
        # A Collections body with a record lacking attributes.type (or not an object) is refused
        # whole with a 400; False keeps the older per-record INVALID_TYPE SaveResult.
        self.refuse_malformed_collections = refuse_malformed_collections
        self._random = random.Random(seed)
        if lock_error_style not in LOCK_ERROR_STYLES:
            raise ValueError(f"lock_error_style is one of {', '.join(LOCK_ERROR_STYLES)}")
        self._sessions = {self.session_id}
        self._sequence = itertools.count(1)
        self._cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self._jobs: dict[str, BulkJob] = {}
        self._lock = threading.RLock()
        # Every SOQL text received (query and queryAll), so tests can see the filters sent.
        self.queries: list[str] = []
        # The integration user's "Customize Application" (Tooling API CustomField create and
        # update) and "Manage Profiles and Permission Sets" / "Assign Permission Sets" (creating
        # and changing PermissionSet, FieldPermissions and PermissionSetAssignment records).
        self.can_customize = True
        self.can_manage_permissions = True
        # Tooling API CustomField ids ("00N...") by (object, field), given on first sight.
        self._custom_field_ids: dict[tuple[str, str], str] = {}
        # What a CustomField's Metadata holds beyond describe (visibleLines, description).
        self._field_extras: dict[tuple[str, str], dict[str, Any]] = {}
        self.integration_user = self.insert(
            "User",
            {
                "Username": self.username,
                "FirstName": "Integration",
                "LastName": "User",
                "Email": self.username,
                "Title": "RevOps Integration",
            },
        )
        self._insert_organization()

    # ----------------------------------------------------------------- Python helpers

    def now(self) -> datetime:
        """The org's current time (UTC), from ``clock``."""
        return self.clock().astimezone(UTC)

    def api_refusal_point(self) -> int:
        """The daily usage at which calls are refused: ``api_max`` plus the overage share."""
        return math.floor(self.api_max * (1 + max(self.api_overage_share, 0.0)))

    def spec(self, sobject: str) -> ObjectSpec | None:
        """An object's metadata by name, case-insensitively."""
        return self._schema_lower.get(sobject.lower())

    def new_id(self, sobject: str) -> str:
        """The next id for ``sobject``."""
        return make_id(self.schema[sobject].key_prefix, next(self._sequence))

    def insert(
        self,
        sobject: str,
        fields: Mapping[str, Any],
        *,
        created: datetime | None = None,
        modified: datetime | None = None,
    ) -> str:
        """Store a record as-is (no validation; for seeding and tests); returns its 18-char id."""
        spec = self.schema[sobject]
        with self._lock:
            record_id = str(fields.get("Id") or self.new_id(sobject))
            now = created or self.now()
            record: dict[str, Any] = {f.name: None for f in spec.fields}
            record.update(dict(spec.defaults))
            record.update(
                {
                    "Id": record_id,
                    "IsDeleted": False,
                    "CreatedDate": now,
                    "LastModifiedDate": modified or now,
                    "SystemModstamp": modified or now,
                }
            )
            user = getattr(self, "integration_user", record_id)
            record["CreatedById"] = record["LastModifiedById"] = user
            if spec.field("OwnerId") is not None:
                record["OwnerId"] = user
            for name, value in fields.items():
                canonical = spec.field(name)
                if canonical is None:
                    raise KeyError(f"{sobject} has no field {name}")
                record[canonical.name] = value
            self._derive_name(spec, record)
            _derive_stage(
                spec,
                record,
                stage_set="StageName" in fields,
                probability_set=fields.get("Probability") is not None,
            )
            self.records[sobject][record_id] = record
            return record_id

    def get(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        """A copy of a stored record (deleted ones included), or None."""
        with self._lock:
            record = self._find(sobject, record_id)
            return dict(record) if record is not None else None

    def delete(self, sobject: str, record_id: str) -> None:
        """Move a record to the recycle bin: queryAll still sees it (IsDeleted true) and the
        delete log getDeleted reads records it with its deletedDate (its new SystemModstamp)."""
        with self._lock:
            record = self._find(sobject, record_id)
            if record is None:
                raise KeyError(record_id)
            if record["IsDeleted"]:
                return
            now = self.now()
            record["IsDeleted"] = True
            record["SystemModstamp"] = now
            self.deleted.add(record["Id"])
            self.delete_log[sobject][record["Id"]] = now

    def purge_delete_log(self) -> None:
        """Empty the delete log now, as a purge or an admin emptying the Recycle Bin does:
        getDeleted then refuses windows that start before this moment."""
        with self._lock:
            for entries in self.delete_log.values():
                entries.clear()
            self.delete_log_purged = self.now()

    def deleted_between(self, sobject: str, start: datetime, end: datetime) -> dict[str, Any]:
        """The getDeleted answer for ``[start, end)`` (seconds ignored), or ``ReplicationError``.

        ``earliestDateAvailable`` is the later of midnight UTC 15 days before today and the last
        purge; ``latestDateCovered`` is ``end`` but never later than now.
        """
        with self._lock:
            spec = self.spec(sobject)
            if spec is None:
                raise LookupError(sobject)
            now = _minute(self.now())
            start, end = _minute(start), _minute(end)
            if end - start <= timedelta(minutes=1):
                raise ReplicationError(
                    "INVALID_REPLICATION_DATE",
                    "startDate must be at least one minute greater than endDate",
                )
            earliest = self._earliest_deleted_available(now)
            if start < earliest:
                raise ReplicationError(
                    "INVALID_REPLICATION_DATE",
                    f"startDate before earliestDateAvailable {format_datetime(earliest)}",
                )
            latest = min(end, now)
            found = sorted(
                (when, record_id)
                for record_id, when in self.delete_log[spec.name].items()
                if start <= when < latest
            )
            if len(found) > self.deleted_id_limit:
                raise ReplicationError(
                    "EXCEEDED_ID_LIMIT",
                    f"More than {self.deleted_id_limit} ids were found; choose start and end "
                    "dates that are closer together",
                )
            return {
                "deletedRecords": [
                    {"id": record_id, "deletedDate": format_datetime(when)}
                    for when, record_id in found
                ],
                "earliestDateAvailable": format_datetime(earliest),
                "latestDateCovered": format_datetime(latest),
            }

    def _earliest_deleted_available(self, now: datetime) -> datetime:
        midnight = datetime(now.year, now.month, now.day, tzinfo=UTC)
        earliest = midnight - timedelta(days=DELETED_RETENTION_DAYS)
        if self.delete_log_purged is not None:
            earliest = max(earliest, _minute(self.delete_log_purged))
        return earliest

    def merge(
        self,
        master_id: str,
        loser_ids: Sequence[str],
        fields: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Merge up to two records into ``master_id`` as ``merge()`` does; the MergeResult.

        The losers are deleted (recycle bin and delete log) with ``MasterRecordId`` set to the
        master; their child records (contacts, tasks, child accounts) are reparented to the
        master; ``fields`` (validated like a REST update) are written on the master, whose
        LastModifiedDate and SystemModstamp move. ``LookupError`` for an unknown id,
        ``ValueError`` for a merge the API refuses.
        """
        with self._lock:
            spec, master = self._merge_record(master_id)
            if spec.name not in MERGEABLE_OBJECTS:
                raise ValueError(f"merge supports {', '.join(MERGEABLE_OBJECTS)}, not {spec.name}")
            if not loser_ids or len(loser_ids) > MAX_MERGE_LOSERS:
                raise ValueError(
                    f"a merge combines the master with 1 to {MAX_MERGE_LOSERS} other records"
                )
            losers: list[dict[str, Any]] = []
            for loser_id in loser_ids:
                loser_spec, loser = self._merge_record(loser_id)
                if loser_spec is not spec:
                    raise ValueError(f"{loser['Id']} is a {loser_spec.name}, not a {spec.name}")
                if loser["Id"] == master["Id"] or loser["Id"] in {r["Id"] for r in losers}:
                    raise ValueError(f"{loser['Id']} is named twice in the merge")
                losers.append(loser)
            try:
                changes = self._prepare(spec, fields or {}, source="rest", creating=False)
            except RecordError as exc:
                raise ValueError(exc.message) from None
            for loser in losers:
                self.delete(spec.name, loser["Id"])
                loser["MasterRecordId"] = master["Id"]
            related = self._reparent({loser["Id"] for loser in losers}, master["Id"])
            self._commit(spec, master, changes)
            return {
                "id": master["Id"],
                "success": True,
                "mergedRecordIds": [loser["Id"] for loser in losers],
                "updatedRelatedIds": related,
                "errors": [],
            }

    def _merge_record(self, record_id: Any) -> tuple[ObjectSpec, dict[str, Any]]:
        """A live record by id alone (its key prefix names the object)."""
        if not isinstance(record_id, str) or not _ID_RE.match(record_id):
            raise ValueError(f"malformed id {record_id!r}")
        for spec in self.schema.values():
            if record_id.startswith(spec.key_prefix):
                record = self._find(spec.name, record_id)
                if record is None:
                    break
                if record["IsDeleted"]:
                    raise ValueError(f"{record['Id']} is deleted")
                return spec, record
        raise LookupError(f"no record {record_id}")

    def _reparent(self, losers: set[str], master_id: str) -> list[str]:
        """Point every live reference to a loser at the master; the ids of the records moved."""
        moved: list[str] = []
        now = self.now()
        for spec in self.schema.values():
            references = [
                f for f in spec.fields if f.type == "reference" and f.name != "MasterRecordId"
            ]
            for record in self.records[spec.name].values():
                if record.get("IsDeleted"):
                    continue
                hit = [f.name for f in references if record.get(f.name) in losers]
                for name in hit:
                    record[name] = master_id
                if hit:
                    record["SystemModstamp"] = now
                    moved.append(record["Id"])
        return moved

    def change_identity(
        self, org_id: str | None = None, clear_fields: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Become another org with the same records, as a sandbox refresh or a restore does.

        The Organization row gets ``org_id`` (default: a new one), the delete log starts empty,
        and each field in ``clear_fields`` is emptied on every record of every object that has
        it, SystemModstamp untouched (a copy made before pls-sync wrote them). Sessions stay
        valid so the same credentials reach the new org. ``ValueError`` for a malformed org id
        or a field that no object has or that cannot be empty.
        """
        with self._lock:
            new_id = checked_org_id(org_id) if org_id is not None else self._new_org_id()
            targets = self._clearable(clear_fields)
            previous = self.org_id
            self.records["Organization"].clear()
            self.org_id = new_id
            self._insert_organization()
            for entries in self.delete_log.values():
                entries.clear()
            cleared: dict[str, int] = {}
            for sobject, names in targets.items():
                for record in self.records[sobject].values():
                    for name in names:
                        record[name] = None
                cleared[sobject] = len(self.records[sobject])
            return {"org_id": new_id, "previous_org_id": previous, "cleared": cleared}

    def _new_org_id(self) -> str:
        while True:
            candidate = make_id("00D", next(self._org_sequence), pod="5g")
            if candidate != self.org_id:
                return candidate

    def _clearable(self, names: Sequence[str]) -> dict[str, list[str]]:
        """Object -> canonical field names to empty, checked."""
        targets: dict[str, list[str]] = {}
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError("clear_fields is a list of field names")
            found = False
            for spec in self.schema.values():
                field_spec = spec.field(name)
                if field_spec is None:
                    continue
                if not field_spec.nillable or not field_spec.updateable:
                    raise ValueError(f"{spec.name}.{field_spec.name} cannot be emptied")
                targets.setdefault(spec.name, []).append(field_spec.name)
                found = True
            if not found:
                raise ValueError(f"no object has a field {name}")
        return targets

    def _insert_organization(self) -> None:
        self.insert(
            "Organization",
            {
                "Id": self.org_id,
                "Name": ORG_NAME,
                "InstanceName": "CS42",
                "IsSandbox": True,
                "OrganizationType": "Enterprise Edition",
            },
        )

    def expire_sessions(self) -> None:
        """Invalidate every session, as a session timeout does; log in again to get a new one."""
        with self._lock:
            self._sessions.clear()

    def _find(self, sobject: str, record_id: str) -> dict[str, Any] | None:
        table = self.records.get(sobject, {})
        if len(record_id) == 15:
            record_id = id18(record_id)
        return table.get(record_id)

    @staticmethod
    def _derive_name(spec: ObjectSpec, record: dict[str, Any]) -> None:
        """Name is a compound of FirstName and LastName on people objects."""
        name_spec = spec.field("Name")
        if (
            spec.field("LastName") is not None
            and name_spec is not None
            and not name_spec.updateable
        ):
            parts = [record.get("FirstName"), record.get("LastName")]
            record["Name"] = " ".join(p for p in parts if p) or None

    # ----------------------------------------------------------------- schema administration

    def change_field(
        self,
        sobject: str,
        name: str,
        *,
        delete: bool = False,
        picklist: Sequence[str] | None = None,
        restricted: bool | None = None,
        updateable: bool | None = None,
        length: int | None = None,
        precision: int | None = None,
        scale: int | None = None,
        label: str | None = None,
        type: str | None = None,
        external_id: bool | None = None,
    ) -> dict[str, Any] | None:
        """Change one field's metadata as an admin does in Setup; describe shows it at once.

        ``delete`` removes a custom field and its values; ``picklist`` replaces a picklist's
        values (records keep what they hold); ``restricted`` turns "restrict picklist to the
        values defined" on or off; ``updateable`` is field-level security (read-only when
        false); ``length``, ``precision`` and ``scale`` resize text and number fields;
        ``type`` changes a custom text or picklist field to another of ``string``, ``textarea``,
        ``picklist`` or ``multipicklist`` (a picklist type needs its values), as "Change Field
        Type" does; stored values are kept as they are; ``external_id`` sets or clears a custom
        text, number or email field's "External ID" attribute (upsert by it then works or answers
        404 NOT_FOUND). Writes then fail the way the org fails them (INVALID_FIELD,
        INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST, INVALID_FIELD_FOR_INSERT_UPDATE...).
        Returns the field's new describe entry, None once deleted. Raises ``LookupError`` for an
        unknown object or field and ``ValueError`` for a change Setup would refuse.
        """
        with self._lock:
            spec = self.spec(sobject)
            if spec is None:
                raise LookupError(f"no sObject {sobject}")
            current = spec.field(name)
            if current is None:
                raise LookupError(f"{spec.name} has no field {name}")
            if delete:
                self._delete_field(spec, current)
                return None
            changed = _changed_field(
                current,
                _standard_writable(spec.name, current.name),
                picklist=picklist,
                restricted=restricted,
                updateable=updateable,
                length=length,
                precision=precision,
                scale=scale,
                label=label,
                type=type,
                external_id=external_id,
            )
            self._replace_object(spec, tuple(changed if f is current else f for f in spec.fields))
            return changed.describe()

    def _delete_field(self, spec: ObjectSpec, field_spec: FieldSpec) -> None:
        if not field_spec.custom:
            raise ValueError(
                f"{spec.name}.{field_spec.name} is a standard field: only custom fields can be "
                "deleted"
            )
        self._replace_object(spec, tuple(f for f in spec.fields if f is not field_spec))
        for record in self.records[spec.name].values():
            record.pop(field_spec.name, None)

    def _replace_object(self, spec: ObjectSpec, fields: tuple[FieldSpec, ...]) -> None:
        rebuilt = ObjectSpec(
            spec.name,
            spec.label,
            spec.plural,
            spec.key_prefix,
            fields,
            required=spec.required,
            defaults=spec.defaults,
            createable=spec.createable,
            deletable=spec.deletable,
        )
        self.schema[spec.name] = rebuilt
        self._schema_lower[spec.name.lower()] = rebuilt

    def admin(self, name: str, request: Request) -> Response | None:
        """Serve ``POST /__sandbox/salesforce/{schema,merge,identity}``; None for other names.

        ``schema``: the body names ``object`` and ``field`` and the change (see
        ``change_field``): ``{"object": "Account", "field": "PQA_Motion__c", "picklist":
        ["sales", "success"]}``. Answers 200 with the field's describe entry (``null`` once
        deleted), 400 for a bad change, 404 for an unknown object or field.

        ``merge``: ``{"master": id, "losers": [id, ...], "fields": {...}?}`` (see ``merge``);
        200 with the MergeResult, 400 for a merge the API refuses, 404 for an unknown id.

        ``identity``: ``{"org_id": "00D...", "clear_fields": ["PQA_Score__c", ...]}``, both
        optional (see ``change_identity``); 200 ``{"org_id", "previous_org_id", "cleared"}``.
        """
        handlers: dict[str, Callable[[Request], Response]] = {
            "salesforce/schema": self._admin_schema,
            "salesforce/merge": self._admin_merge,
            "salesforce/identity": self._admin_identity,
        }
        handler = handlers.get(name)
        if handler is None:
            return None
        if request.method.upper() != "POST":
            return Response(405, {"message": f"use POST /__sandbox/{name}"})
        try:
            return handler(request)
        except LookupError as exc:
            return Response(404, {"message": str(exc)})
        except (ValueError, TypeError) as exc:
            return Response(400, {"message": str(exc)})

    def _admin_merge(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise ValueError('a merge is a JSON object {"master": id, "losers": [id, ...]}')
        master, losers, fields = body.get("master"), body.get("losers"), body.get("fields")
        if not isinstance(master, str):
            raise ValueError("master is the id of the record to keep")
        if not isinstance(losers, list) or not all(isinstance(i, str) for i in losers):
            raise ValueError("losers is a list of record ids")
        if fields is not None and not isinstance(fields, dict):
            raise ValueError("fields is a JSON object of field values for the master")
        return Response(200, self.merge(master, losers, fields))

    def _admin_identity(self, request: Request) -> Response:
        body = request.json()
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ValueError('an identity change is a JSON object {"org_id", "clear_fields"}')
        unknown = sorted(set(body) - {"org_id", "clear_fields"})
        if unknown:
            raise ValueError(f"unknown key {', '.join(unknown)}; use org_id, clear_fields")
        clear = body.get("clear_fields") or []
        if not isinstance(clear, list):
            raise ValueError("clear_fields is a list of field names")
        return Response(200, self.change_identity(body.get("org_id"), clear))

    def _admin_schema(self, request: Request) -> Response:
        target, change = parse_schema_change(request.json(), SALESFORCE_SCHEMA_CHANGES)
        entry = self.change_field(target[0], target[1], **change)
        return Response(200, {"object": target[0], "field": target[1], "describe": entry})

    # ----------------------------------------------------------------- setup: fields and access

    def describe_fields(self, sobject: str) -> dict[str, dict[str, Any]]:
        """The object's describe entries by field name (a Python shortcut for tests)."""
        with self._lock:
            spec = self.spec(sobject)
            if spec is None:
                raise LookupError(f"no sObject {sobject}")
            return {f.name: f.describe() for f in spec.fields}

    def custom_field_id(self, sobject: str, name: str) -> str | None:
        """The Tooling API id (``00N...``) of a custom field, or None when there is no such one."""
        with self._lock:
            spec = self.spec(sobject)
            field_spec = spec.field(name) if spec is not None else None
            if spec is None or field_spec is None or not field_spec.custom:
                return None
            key = (spec.name, field_spec.name)
            if key not in self._custom_field_ids:
                self._custom_field_ids[key] = make_id("00N", next(self._sequence))
            return self._custom_field_ids[key]

    def _custom_field_by_id(self, field_id: str) -> tuple[ObjectSpec, FieldSpec] | None:
        wanted = id18(field_id) if len(field_id) == 15 else field_id
        for (sobject, name), known in self._custom_field_ids.items():
            spec = self.spec(sobject)
            field_spec = spec.field(name) if spec is not None else None
            if known == wanted and spec is not None and field_spec is not None:
                return spec, field_spec
        return None

    def create_custom_field(self, full_name: Any, metadata: Any) -> str:
        """Create a custom field as the Tooling API does (``FullName`` ``Object.Name__c`` and its
        ``Metadata``); describe shows it at once. Returns its id; ``RecordError`` as the API
        refuses it."""
        with self._lock:
            if not self.can_customize:
                raise RecordError("INSUFFICIENT_ACCESS_OR_READONLY", _NO_CUSTOMIZE)
            spec, name = self._new_field_target(full_name)
            field_spec = custom_field_from_metadata(name, metadata)
            self._field_extras[(spec.name, name)] = _metadata_extras(metadata)
            self._replace_object(spec, (*spec.fields, field_spec))
            for record in self.records[spec.name].values():
                record.setdefault(name, None)
            field_id = self.custom_field_id(spec.name, name)
            assert field_id is not None
            return field_id

    def _new_field_target(self, full_name: Any) -> tuple[ObjectSpec, str]:
        """The object and the field name of a ``FullName``, checked for a new custom field."""
        if not isinstance(full_name, str) or full_name.count(".") != 1:
            raise RecordError(
                "REQUIRED_FIELD_MISSING",
                "FullName is required: the object and field API names, e.g. Account.Score__c",
                ["FullName"],
            )
        sobject, name = full_name.split(".")
        spec = self.spec(sobject)
        if spec is None:
            raise RecordError("INVALID_TYPE", f"sObject type '{sobject}' is not supported.")
        base = name[: -len("__c")] if name.endswith("__c") else ""
        if (
            not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,39}", base)
            or "__" in base
            or base.endswith("_")
        ):
            raise RecordError("FIELD_INTEGRITY_EXCEPTION", _BAD_FIELD_NAME, ["FullName"])
        if spec.field(name) is not None:
            raise RecordError(
                "DUPLICATE_DEVELOPER_NAME", f"There is already a field named {base} on {spec.name}."
            )
        return spec, name

    def update_custom_field(self, field_id: str, metadata: Any) -> None:
        """Replace a custom field's metadata as a Tooling API PATCH does: the whole ``Metadata``
        is the new definition (picklist values it leaves out are gone, ``externalId`` and
        ``unique`` are what it says). The type cannot change here. ``LookupError`` for an
        unknown id, ``RecordError`` as the API refuses it."""
        with self._lock:
            if not self.can_customize:
                raise RecordError("INSUFFICIENT_ACCESS_OR_READONLY", _NO_CUSTOMIZE)
            found = self._custom_field_by_id(field_id)
            if found is None:
                raise LookupError(field_id)
            spec, current = found
            changed = custom_field_from_metadata(current.name, metadata)
            if changed.type != current.type:
                raise RecordError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    f"{current.name}: the sandbox does not change a field's type "
                    f"({current.type} to {changed.type}); Setup's Change Field Type does",
                )
            changed = replace(changed, updateable=current.updateable, createable=current.createable)
            self._field_extras[(spec.name, current.name)] = _metadata_extras(metadata)
            self._replace_object(spec, tuple(changed if f is current else f for f in spec.fields))

    def custom_field_record(self, field_id: str, version: str) -> dict[str, Any] | None:
        """The Tooling API CustomField record (with ``FullName`` and ``Metadata``), or None."""
        with self._lock:
            found = self._custom_field_by_id(field_id)
            if found is None:
                return None
            spec, field_spec = found
            row = self._custom_field_row(spec, field_spec, version)
            row["Metadata"] = metadata_of(field_spec, self._field_extras.get(row["_key"], {}))
            row.pop("_key")
            return row

    def _custom_field_row(
        self, spec: ObjectSpec, field_spec: FieldSpec, version: str
    ) -> dict[str, Any]:
        field_id = self.custom_field_id(spec.name, field_spec.name)
        extras = self._field_extras.get((spec.name, field_spec.name), {})
        return {
            "attributes": {
                "type": "CustomField",
                "url": f"/services/data/v{version}/tooling/sobjects/CustomField/{field_id}",
            },
            "Id": field_id,
            "TableEnumOrId": spec.name,
            "DeveloperName": field_spec.name[: -len("__c")],
            "NamespacePrefix": None,
            "ManageableState": "unmanaged",
            "FullName": f"{spec.name}.{field_spec.name}",
            "Description": extras.get("description"),
            "Length": field_spec.length or None,
            "Precision": field_spec.precision or None,
            "Scale": field_spec.scale if field_spec.type == "double" else None,
            "_key": (spec.name, field_spec.name),
        }

    def _tooling_route(self, method: str, ctx: _Ctx) -> tuple[str, Handler | None, _Ctx]:
        parts = ctx.parts
        n = len(parts)
        if n == 2 and parts[1].lower() == "query" and method == "GET":
            return "sf.customfield.query", self._tooling_query, ctx
        if n >= 3 and parts[1].lower() == "sobjects" and parts[2] == "CustomField":
            if n == 3 and method == "POST":
                return "sf.tooling.customfield.create", self._tooling_create_field, ctx
            if n == 4 and method == "GET":
                return "sf.customfield.get", self._tooling_get_field, ctx
            if n == 4 and method == "PATCH":
                return "sf.tooling.customfield.update", self._tooling_update_field, ctx
        return "sf.tooling.unknown", None, ctx

    def _tooling_create_field(self, request: Request, ctx: _Ctx) -> Response:
        body = _json_body(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body, dict):
            return Response(400, _json_parser_error("Can not deserialize CustomField"))
        try:
            field_id = self.create_custom_field(body.get("FullName"), body.get("Metadata"))
        except RecordError as exc:
            return Response(400, [exc.rest_error()])
        return Response(
            201, {"id": field_id, "success": True, "errors": [], "warnings": [], "infos": []}
        )

    def _tooling_get_field(self, request: Request, ctx: _Ctx) -> Response:
        record = self.custom_field_record(ctx.parts[3], ctx.version)
        return Response(200, record) if record is not None else Response(404, _NOT_FOUND)

    def _tooling_update_field(self, request: Request, ctx: _Ctx) -> Response:
        body = _json_body(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body, dict) or "Metadata" not in body:
            return Response(
                400,
                [
                    {
                        "errorCode": "REQUIRED_FIELD_MISSING",
                        "message": "Metadata is required: send the field's whole definition",
                        "fields": ["Metadata"],
                    }
                ],
            )
        try:
            self.update_custom_field(ctx.parts[3], body["Metadata"])
        except LookupError:
            return Response(404, _NOT_FOUND)
        except RecordError as exc:
            return Response(400, [exc.rest_error()])
        return Response(204)

    def _tooling_query(self, request: Request, ctx: _Ctx) -> Response:
        """Tooling API SOQL over ``CustomField`` (Id, DeveloperName, TableEnumOrId,
        NamespacePrefix, FullName, Metadata); FullName and Metadata only for one row at most."""
        text = request.param("q")
        if not text:
            return Response(
                400,
                [{"message": "A query string has to be specified", "errorCode": "MALFORMED_QUERY"}],
            )
        self.queries.append(text)
        try:
            return Response(200, self._run_tooling_query(text, ctx.version))
        except soql.SoqlError as exc:
            return Response(400, [{"message": exc.message, "errorCode": exc.code}])

    def _run_tooling_query(self, text: str, version: str) -> dict[str, Any]:
        query = soql.parse(text)
        if query.sobject.lower() != "customfield":
            raise soql.SoqlError(
                "INVALID_TYPE", f"sObject type '{query.sobject}' is not supported here."
            )
        columns = {name.lower(): name for name in _TOOLING_CUSTOM_FIELD_COLUMNS}
        for ref in (*query.fields, *query.where_fields(), *(o.field for o in query.order_by)):
            if len(ref.path) != 1 or ref.path[0].lower() not in columns:
                raise soql.invalid_field(query, ref, f"No such column '{ref.dotted}' on entity "
                                         "'CustomField'.")  # fmt: skip
        rows = []
        for spec in self.schema.values():
            for field_spec in spec.fields:
                if field_spec.custom:
                    row = self._custom_field_row(spec, field_spec, version)
                    row["Metadata"] = metadata_of(
                        field_spec, self._field_extras.get(row["_key"], {})
                    )
                    rows.append(row)
        now = self.now()

        def value(row: Mapping[str, Any], ref: soql.FieldRef) -> Any:
            return row.get(columns[ref.path[0].lower()])

        if query.where is not None:
            where = query.where
            rows = [r for r in rows if soql.evaluate(where, lambda ref, r=r: value(r, ref), now)]  # type: ignore[misc]
        if query.order_by:
            rows = soql.sort_rows(rows, query.order_by, value)
        if query.limit is not None:
            rows = rows[: query.limit]
        wanted = [columns[ref.path[0].lower()] for ref in query.fields]
        if {"FullName", "Metadata"} & set(wanted) and len(rows) > 1:
            raise soql.SoqlError(
                "MALFORMED_QUERY",
                "When retrieving results with Metadata or FullName fields, the query "
                "qualifications must specify no more than one row for retrieval. Result size: "
                f"{len(rows)}",
            )
        records = [
            {"attributes": row["attributes"], **{name: row[name] for name in wanted}}
            for row in rows
        ]
        return {
            "size": len(records),
            "totalSize": len(records),
            "done": True,
            "queryLocator": None,
            "entityTypeName": "CustomField",
            "records": records,
        }

    def _userinfo(self, request: Request, ctx: _Ctx) -> Response:
        """OpenID Connect UserInfo: who the access token belongs to."""
        user = self.records["User"][self.integration_user]
        return Response(
            200,
            {
                "sub": f"{self.base_url}/id/{self.org_id}/{self.integration_user}",
                "user_id": self.integration_user,
                "organization_id": self.org_id,
                "preferred_username": self.username,
                "nickname": "integration",
                "name": user.get("Name") or "Integration User",
                "email": self.username,
                "email_verified": True,
                "given_name": user.get("FirstName"),
                "family_name": user.get("LastName"),
                "zoneinfo": "Etc/UTC",
                "active": True,
                "user_type": "STANDARD",
            },
        )

    def _check_setup_record(
        self, spec: ObjectSpec, values: Mapping[str, Any], record: Mapping[str, Any] | None
    ) -> None:
        """The rules the org applies to PermissionSet, FieldPermissions and
        PermissionSetAssignment writes (``record``: the one being updated, None on create)."""
        if spec.name not in _PERMISSION_OBJECTS:
            return
        if not self.can_manage_permissions:
            raise RecordError(
                "INSUFFICIENT_ACCESS_OR_READONLY", "insufficient access rights on object id"
            )
        merged = {**(record or {}), **values}
        if spec.name == "PermissionSet":
            self._check_permission_set(merged, record)
        elif spec.name == "FieldPermissions":
            self._check_field_permissions(merged, record)
        else:
            self._check_assignment(merged)

    def _live_rows(self, sobject: str) -> list[dict[str, Any]]:
        return [r for r in self.records[sobject].values() if not r["IsDeleted"]]

    def _check_permission_set(
        self, values: Mapping[str, Any], record: Mapping[str, Any] | None
    ) -> None:
        name = str(values.get("Name") or "")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name) or "__" in name or name[-1] == "_":
            raise RecordError(
                "FIELD_INTEGRITY_EXCEPTION",
                "The API Name can only contain underscores and alphanumeric characters. It must "
                "begin with a letter, not include spaces, not end with an underscore, and not "
                "contain two consecutive underscores.",
                ["Name"],
            )
        for other in self._live_rows("PermissionSet"):
            if other["Id"] != (record or {}).get("Id") and str(other["Name"]).lower() == (
                name.lower()
            ):
                raise RecordError(
                    "DUPLICATE_VALUE",
                    f"duplicate value found: Name duplicates value on record with id: "
                    f"{other['Id']}",
                    ["Name"],
                )

    def _check_field_permissions(
        self, values: Mapping[str, Any], record: Mapping[str, Any] | None
    ) -> None:
        parent = self._find("PermissionSet", str(values.get("ParentId") or ""))
        if parent is None or parent["IsDeleted"]:
            raise RecordError(
                "FIELD_INTEGRITY_EXCEPTION",
                "Parent ID: id value of incorrect type: " + str(values.get("ParentId")),
                ["ParentId"],
            )
        field_name = str(values.get("Field") or "")
        sobject, _, name = field_name.partition(".")
        spec = self.spec(sobject)
        target = spec.field(name) if spec is not None else None
        if spec is None or target is None or not target.permissionable:
            raise RecordError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"Field Name: bad value for restricted picklist field: {field_name}",
                ["Field"],
            )
        if str(values.get("SobjectType") or "").lower() != spec.name.lower():
            raise RecordError(
                "FIELD_INTEGRITY_EXCEPTION",
                f"SObject Type Name must be the object the field belongs to ({spec.name})",
                ["SobjectType"],
            )
        if values.get("PermissionsEdit") and not values.get("PermissionsRead"):
            raise RecordError(
                "FIELD_INTEGRITY_EXCEPTION",
                "Permission Edit depends on permission(s): Read",
                ["PermissionsEdit"],
            )
        if values.get("PermissionsEdit") and not target.updateable:
            raise RecordError(
                "FIELD_INTEGRITY_EXCEPTION",
                f"{field_name} is read-only: it cannot be given edit access",
                ["PermissionsEdit"],
            )
        for other in self._live_rows("FieldPermissions"):
            if (
                other["Id"] != (record or {}).get("Id")
                and other["ParentId"] == parent["Id"]
                and str(other["Field"]).lower() == field_name.lower()
            ):
                raise RecordError(
                    "DUPLICATE_VALUE",
                    "duplicate value found: <unknown> duplicates value on record with id: "
                    "<unknown>",
                )

    def _check_assignment(self, values: Mapping[str, Any]) -> None:
        for sobject, key in (("User", "AssigneeId"), ("PermissionSet", "PermissionSetId")):
            target = self._find(sobject, str(values.get(key) or ""))
            if target is None or target["IsDeleted"]:
                raise RecordError(
                    "FIELD_INTEGRITY_EXCEPTION",
                    f"field integrity exception: unknown ({key})",
                    [key],
                )
        for other in self._live_rows("PermissionSetAssignment"):
            if other["AssigneeId"] == values.get("AssigneeId") and other[
                "PermissionSetId"
            ] == values.get("PermissionSetId"):
                raise RecordError(
                    "DUPLICATE_VALUE",
                    "duplicate value found: <unknown> duplicates value on record with id: "
                    "<unknown>",
                )

    # ----------------------------------------------------------------- module contract

    def handles(self, path: str) -> bool:
        """Every path under /services/ belongs to Salesforce."""
        return path.startswith("/services/")

    def endpoint(self, request: Request) -> str:
        """The counted endpoint name of a request."""
        name, _, _ = self._route(request)
        return name

    def handle(self, request: Request) -> Response:
        """Serve one request."""
        name, handler, ctx = self._route(request)
        if handler is None:
            return Response(404, _NOT_FOUND)
        if name in ("sf.login", "sf.oauth", "sf.versions"):
            with self._lock:
                return handler(request, ctx)
        with self._lock:
            if not self._authorised(request):
                return Response(
                    401, _INVALID_SESSION, {"WWW-Authenticate": 'Token realm="Salesforce"'}
                )
            if self.api_used >= self.api_refusal_point():
                response = Response(403, _REQUEST_LIMIT)
            else:
                self.api_used += 1
                response = handler(request, ctx)
            response.headers.setdefault(
                "Sforce-Limit-Info", f"api-usage={self.api_used}/{self.api_max}"
            )
            return response

    def render_fault(self, kind: str, request: Request) -> Response:
        """Salesforce's own response for an injected fault."""
        if kind == "invalid_session":
            return Response(401, _INVALID_SESSION)
        if kind in ("request_limit", "daily_limit"):
            return Response(403, _REQUEST_LIMIT)
        if kind == "rate_limit":
            # Salesforce never answers 429: too many long-running requests at once is a 403
            # REQUEST_LIMIT_EXCEEDED ("If the number of long running requests exceeds the limit,
            # the API returns a REQUEST_LIMIT_EXCEEDED exception code", API Request Limits and
            # Allocations), told from the daily total by its message.
            return Response(
                403,
                [
                    {
                        "message": "ConcurrentRequests (Concurrent API Requests) Limit exceeded.",
                        "errorCode": "REQUEST_LIMIT_EXCEEDED",
                    }
                ],
            )
        if kind == "unavailable":
            return Response(
                503,
                [{"message": "Service temporarily unavailable", "errorCode": "SERVER_UNAVAILABLE"}],
            )
        error_id = (
            f"{secrets.randbelow(10**9)}-{secrets.randbelow(10**6)} (-{secrets.randbelow(10**9)})"
        )
        return Response(
            500,
            [
                {
                    "message": "An unexpected error occurred. Please include this ErrorId if you "
                    f"contact support: {error_id}",
                    "errorCode": "UNKNOWN_EXCEPTION",
                }
            ],
        )

    def _authorised(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() in ("bearer", "oauth") and token.strip() in self._sessions

    # ----------------------------------------------------------------- routing

    def _route(self, request: Request) -> tuple[str, Handler | None, _Ctx]:
        path = request.path.rstrip("/")
        method = request.method.upper()
        if path.startswith("/services/Soap/u/") and method == "POST":
            return "sf.login", self._soap_login, _Ctx()
        if path == "/services/oauth2/token" and method == "POST":
            return "sf.oauth", self._oauth_token, _Ctx()
        if path == "/services/data" and method == "GET":
            return "sf.versions", self._versions, _Ctx()
        if path == "/services/oauth2/userinfo" and method == "GET":
            return "sf.userinfo", self._userinfo, _Ctx()
        match = re.match(r"^/services/data/v(\d+\.\d)(?:/(.*))?$", path)
        if not match or match.group(1) not in _VERSIONS:
            return "sf.unknown", None, _Ctx()
        version = match.group(1)
        parts = tuple(p for p in (match.group(2) or "").split("/") if p)
        ctx = _Ctx(version, parts)
        head = parts[0].lower() if parts else ""
        n = len(parts)
        if n == 0 and method == "GET":
            return "sf.resources", self._resources, ctx
        if head == "limits" and n == 1 and method == "GET":
            return "sf.limits", self._limits, ctx
        if head in ("query", "queryall") and method == "GET":
            if n == 1:
                return "sf.query", self._query, ctx
            if n == 2:
                return "sf.query_more", self._query_more, ctx
        if head == "sobjects":
            if n == 1 and method == "GET":
                return "sf.describe", self._describe_global, ctx
            if n == 3 and parts[2].lower() == "describe" and method == "GET":
                return "sf.describe", self._describe, ctx
            if n == 3 and parts[2].lower() == "deleted" and method == "GET":
                return "sf.sobject.deleted", self._get_deleted, ctx
            if n == 2 and method == "POST":
                return "sf.sobject.create", self._create, ctx
            if n == 3 and method == "GET":
                return "sf.sobject.get", self._get_record, ctx
            if n == 3 and method == "PATCH":
                return "sf.sobject.patch", self._patch_record, ctx
            if n == 3 and method == "DELETE":
                return "sf.sobject.delete", self._delete_record, ctx
            if n == 4 and method == "PATCH":
                return "sf.sobject.upsert", self._upsert, ctx
        if head == "tooling":
            return self._tooling_route(method, ctx)
        if head == "composite" and n == 2 and parts[1].lower() == "sobjects" and method == "PATCH":
            return "sf.composite.sobjects.patch", self._collection_update, ctx
        if head == "jobs" and n >= 2 and parts[1].lower() == "ingest":
            if n == 2 and method == "POST":
                return "sf.bulk2.create", self._bulk_create, ctx
            if n == 3 and method == "PATCH":
                return "sf.bulk2.close", self._bulk_set_state, ctx
            if n == 3 and method == "GET":
                return "sf.bulk2.status", self._bulk_info, ctx
            if n == 3 and method == "DELETE":
                return "sf.bulk2.delete", self._bulk_delete, ctx
            if n == 4 and parts[3].lower() == "batches" and method == "PUT":
                return "sf.bulk2.upload", self._bulk_upload, ctx
            if (
                n == 4
                and method == "GET"
                and parts[3].lower()
                in (
                    "successfulresults",
                    "failedresults",
                    "unprocessedrecords",
                )
            ):
                return "sf.bulk2.results", self._bulk_results, ctx
        return "sf.unknown", None, ctx

    # ----------------------------------------------------------------- auth

    def _new_session(self) -> str:
        session = new_session_id(self.org_id)
        self._sessions.add(session)
        return session

    def _soap_login(self, request: Request, ctx: _Ctx) -> Response:
        body = request.body.decode("utf-8", "replace")
        version = request.path.rstrip("/").rsplit("/", 1)[-1]
        username = _xml_value(body, "username")
        password = _xml_value(body, "password")
        valid = username == self.username and password in (
            self.password + self.security_token,
            self.password,
        )
        if not valid:
            return Response(500, _soap_fault(), {"Content-Type": "text/xml;charset=UTF-8"})
        session = self._new_session()
        server = f"{self.base_url}/services/Soap/u/{version}/{self.org_id[:15]}"
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns="urn:partner.soap.sforce.com" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
            "<soapenv:Body><loginResponse><result>"
            f"<metadataServerUrl>{self.base_url}/services/Soap/m/{version}/{self.org_id[:15]}"
            "</metadataServerUrl>"
            "<passwordExpired>false</passwordExpired><sandbox>true</sandbox>"
            f"<serverUrl>{server}</serverUrl><sessionId>{session}</sessionId>"
            f"<userId>{self.integration_user}</userId>"
            "<userInfo>"
            f"<organizationId>{self.org_id}</organizationId>"
            f"<organizationName>{ORG_NAME}</organizationName>"
            f"<userEmail>{self.username}</userEmail><userFullName>Integration User</userFullName>"
            f"<userId>{self.integration_user}</userId><userName>{self.username}</userName>"
            "<userTimeZone>Etc/UTC</userTimeZone>"
            "</userInfo></result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return Response(200, xml, {"Content-Type": "text/xml;charset=UTF-8"})

    def _oauth_token(self, request: Request, ctx: _Ctx) -> Response:
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        grant = form.get("grant_type", "")
        ok = False
        if grant == "password":
            ok = (
                form.get("client_id") == self.consumer_key
                and form.get("client_secret") == self.consumer_secret
                and form.get("username") == self.username
                and form.get("password") in (self.password, self.password + self.security_token)
            )
        elif grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            # The sandbox checks the claims but not the signature: it holds no certificate.
            claims = _jwt_claims(form.get("assertion", ""))
            ok = (
                claims is not None
                and claims.get("iss") == self.consumer_key
                and claims.get("sub") == self.username
                and float(claims.get("exp", 0)) > _time.time()
            )
        elif grant == "refresh_token":
            ok = (
                form.get("refresh_token") == self.refresh_token
                and form.get("client_id") == self.consumer_key
            )
        elif grant == "client_credentials":
            client_id, client_secret = form.get("client_id"), form.get("client_secret")
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("basic "):
                decoded = base64.b64decode(auth[6:]).decode("utf-8", "replace")
                client_id, _, client_secret = decoded.partition(":")
            ok = client_id == self.consumer_key and client_secret == self.consumer_secret
        else:
            return Response(
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": "grant type not supported",
                },
            )
        if not ok:
            return Response(
                400, {"error": "invalid_grant", "error_description": "authentication failure"}
            )
        issued = str(int(_time.time() * 1000))
        return Response(
            200,
            {
                "access_token": self._new_session(),
                "instance_url": self.base_url,
                "id": f"{self.base_url}/id/{self.org_id}/{self.integration_user}",
                "token_type": "Bearer",
                "issued_at": issued,
                "signature": base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
                "scope": "api refresh_token",
            },
        )

    # ----------------------------------------------------------------- simple resources

    def _versions(self, request: Request, ctx: _Ctx) -> Response:
        return Response(
            200,
            [
                {"label": label, "url": f"/services/data/v{version}", "version": version}
                for version, label in API_VERSIONS
            ],
        )

    def _resources(self, request: Request, ctx: _Ctx) -> Response:
        base = f"/services/data/v{ctx.version}"
        return Response(
            200,
            {
                name: f"{base}/{name}"
                for name in ("sobjects", "query", "queryAll", "limits", "composite", "jobs")
            },
        )

    def _limits(self, request: Request, ctx: _Ctx) -> Response:
        return Response(
            200,
            {
                "DailyApiRequests": {
                    "Max": self.api_max,
                    "Remaining": max(self.api_max - self.api_used, 0),
                },
                "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
                "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
                "DailyBulkApiBatches": {
                    "Max": 15000,
                    "Remaining": 15000 - len(self._jobs),
                },
                "DataStorageMB": {"Max": 5, "Remaining": 5},
            },
        )

    def _describe_global(self, request: Request, ctx: _Ctx) -> Response:
        return Response(
            200,
            {
                "encoding": "UTF-8",
                "maxBatchSize": COLLECTION_LIMIT,
                "sobjects": [
                    {k: v for k, v in spec.describe(ctx.version).items() if k != "fields"}
                    for spec in self.schema.values()
                ],
            },
        )

    def _describe(self, request: Request, ctx: _Ctx) -> Response:
        spec = self.spec(ctx.parts[1])
        if spec is None:
            return Response(404, _NOT_FOUND)
        return Response(200, spec.describe(ctx.version))

    # ----------------------------------------------------------------- records

    def _record_json(
        self, spec: ObjectSpec, record: Mapping[str, Any], version: str, fields: Iterable[str]
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attributes": {
                "type": spec.name,
                "url": f"/services/data/v{version}/sobjects/{spec.name}/{record['Id']}",
            }
        }
        for name in fields:
            field_spec = spec.field(name)
            if field_spec is not None:
                out[field_spec.name] = to_json_value(field_spec, record.get(field_spec.name))
        return out

    def _get_record(self, request: Request, ctx: _Ctx) -> Response:
        spec = self.spec(ctx.parts[1])
        if spec is None:
            return Response(404, _NOT_FOUND)
        record = self._find(spec.name, ctx.parts[2])
        if record is None:
            return Response(404, _NOT_FOUND)
        if record["IsDeleted"]:
            return Response(
                404, [{"errorCode": "ENTITY_IS_DELETED", "message": "entity is deleted"}]
            )
        wanted = request.param("fields")
        names = wanted.split(",") if wanted else [f.name for f in spec.fields]
        return Response(200, self._record_json(spec, record, ctx.version, names))

    def _get_deleted(self, request: Request, ctx: _Ctx) -> Response:
        """sObject Get Deleted: ``deletedRecords``, ``earliestDateAvailable``,
        ``latestDateCovered`` for ``?start=&end=`` (ISO 8601, seconds ignored)."""
        spec = self.spec(ctx.parts[1])
        if spec is None:
            return Response(404, _NOT_FOUND)
        try:
            start, end = (soql.parse_datetime(request.param(k) or "") for k in ("start", "end"))
        except ValueError:
            return Response(
                400,
                [
                    {
                        "errorCode": "MISSING_ARGUMENT",
                        "message": "start and end must be dateTimes such as "
                        "2026-01-31T09:00:00+00:00",
                    }
                ],
            )
        try:
            return Response(200, self.deleted_between(spec.name, start, end))
        except ReplicationError as exc:
            return Response(400, [{"errorCode": exc.code, "message": exc.message}])

    def _delete_record(self, request: Request, ctx: _Ctx) -> Response:
        spec = self.spec(ctx.parts[1])
        record = self._find(spec.name, ctx.parts[2]) if spec else None
        if spec is None or record is None:
            return Response(404, _NOT_FOUND)
        if not spec.deletable:
            return Response(400, [_cannot("deleted", spec.name)])
        if record["IsDeleted"]:
            return Response(
                404, [{"errorCode": "ENTITY_IS_DELETED", "message": "entity is deleted"}]
            )
        self.delete(spec.name, record["Id"])
        return Response(204)

    def _prepare(
        self, spec: ObjectSpec, values: Mapping[str, Any], *, source: str, creating: bool
    ) -> dict[str, Any]:
        """Validate field values for a write; returns canonical name -> stored value."""
        changes: dict[str, Any] = {}
        for raw_name, raw_value in values.items():
            if raw_name in ("attributes", "Id", "id") and not creating:
                continue
            field_spec = spec.field(raw_name)
            if field_spec is None:
                raise RecordError(
                    "INVALID_FIELD",
                    f"No such column '{raw_name}' on sobject of type {spec.name}",
                    [],
                )
            allowed = field_spec.createable if creating else field_spec.updateable
            if not allowed:
                raise RecordError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {field_spec.name}. Please check the security "
                    "settings of this field and verify that it is read/write for your profile or "
                    "permission set.",
                    [field_spec.name],
                )
            value = raw_value
            if source == "bulk":
                if value == "":
                    continue  # an empty Bulk API cell leaves the field unchanged
                if value == "#N/A":
                    value = None
            changes[field_spec.name] = self._coerce(field_spec, value, source)
        return changes

    def _coerce(self, spec: FieldSpec, value: Any, source: str) -> Any:
        """One value checked and converted to its stored form, or the API's error."""
        if value is None:
            if not spec.nillable:
                raise RecordError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{spec.name}]",
                    [spec.name],
                )
            return None
        kind = spec.type
        if kind in _NUMBER_TYPES:
            return _number_from(spec, value, source)
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
            raise _type_error(spec, value, source)
        if kind in ("datetime", "date"):
            if not isinstance(value, str):
                raise _type_error(spec, value, source)
            try:
                if kind == "date":
                    return date.fromisoformat(value[:10])
                return soql.parse_datetime(value)
            except ValueError:
                raise _type_error(spec, value, source) from None
        if kind == "multipicklist":
            return self._multi_select(spec, value, source)
        if kind == "reference":
            if not isinstance(value, str) or not _ID_RE.match(value):
                raise RecordError(
                    "MALFORMED_ID",
                    f"{spec.label}: id value of incorrect type: {value}",
                    [spec.name],
                )
            return id18(value) if len(value) == 15 else value
        if kind in _TEXT_TYPES:
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise _type_error(spec, value, source)
            text = _fmt(value) if not isinstance(value, str) else value
            if len(text) > spec.length:
                raise RecordError(
                    "STRING_TOO_LONG",
                    f"{spec.label}: data value too large: {text[:40]} (max length={spec.length})",
                    [spec.name],
                )
            if kind == "picklist" and spec.restricted and text not in spec.picklist:
                raise RecordError(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"{spec.label}: bad value for restricted picklist field: {text}",
                    [spec.name],
                )
            return text
        return value

    @staticmethod
    def _multi_select(spec: FieldSpec, value: Any, source: str) -> str | None:
        """A multi-select picklist value as Salesforce keeps it: the selected options, each once,
        ``;``-joined in the picklist's definition order (values it does not define, on an
        unrestricted field, after them in the order sent). "SOQL, Apex and API access on these
        fields will however return the values in their created order" (knowledge article
        000231088)."""
        if not isinstance(value, str):
            raise _type_error(spec, value, source)
        chosen = list(dict.fromkeys(part.strip() for part in value.split(";") if part.strip()))
        unknown = [option for option in chosen if option not in spec.picklist]
        if unknown and spec.restricted:
            raise RecordError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{spec.label}: bad value for restricted picklist field: {unknown[0]}",
                [spec.name],
            )
        ordered = [option for option in spec.picklist if option in chosen] + unknown
        text = ";".join(ordered)
        if len(text) > spec.length:
            raise RecordError(
                "STRING_TOO_LONG",
                f"{spec.label}: data value too large: {text[:40]} (max length={spec.length})",
                [spec.name],
            )
        return text or None

    def _target(self, spec: ObjectSpec, record_id: Any) -> dict[str, Any]:
        """The live record an update addresses, or the per-record error the API returns."""
        if not isinstance(record_id, str) or not record_id:
            raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call", [])
        if not _ID_RE.match(record_id) or not record_id.startswith(spec.key_prefix):
            raise RecordError(
                "MALFORMED_ID", f"{spec.label} ID: id value of incorrect type: {record_id}", ["Id"]
            )
        record = self._find(spec.name, record_id)
        if record is None:
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [])
        if record["IsDeleted"]:
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted", [])
        return record

    def _commit(self, spec: ObjectSpec, record: dict[str, Any], changes: Mapping[str, Any]) -> None:
        now = self.now()
        record.update(changes)
        record["LastModifiedDate"] = record["SystemModstamp"] = now
        record["LastModifiedById"] = self.integration_user
        self._derive_name(spec, record)
        _derive_stage(
            spec,
            record,
            stage_set="StageName" in changes,
            probability_set="Probability" in changes,
        )

    def _locked(self, endpoint: str, ids: Iterable[str]) -> frozenset[str]:
        return self.faults.locked_records(endpoint, ids)

    def _lock_error(self, record_id: str) -> RecordError:
        """A row lock as the org reports it: directly, or through a trigger's failed DML."""
        direct = f"unable to obtain exclusive access to this record or 1 records: {record_id}"
        style = self.lock_error_style
        if style == "mixed":
            style = "direct" if self._locks_rendered % 2 == 0 else "trigger"
        self._locks_rendered += 1
        if style == "direct":
            return RecordError("UNABLE_TO_LOCK_ROW", direct, [])
        return RecordError(
            "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY",
            "PQA_Rollup: execution of AfterUpdate\n\ncaused by: System.DmlException: Update "
            f"failed. First exception on row 0 with id {record_id}; first error: "
            f"UNABLE_TO_LOCK_ROW, {direct}: []\n\nTrigger.PQA_Rollup: line 14, column 1",
            [],
        )

    def _patch_record(self, request: Request, ctx: _Ctx) -> Response:
        spec = self.spec(ctx.parts[1])
        if spec is None:
            return Response(404, _NOT_FOUND)
        body = _json_body(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body, dict):
            return Response(
                400, _json_parser_error("Can not deserialize SObject out of START_ARRAY token")
            )
        try:
            record = self._target(spec, ctx.parts[2])
        except RecordError as exc:
            status = (
                404 if exc.code in ("INVALID_CROSS_REFERENCE_KEY", "ENTITY_IS_DELETED") else 400
            )
            if exc.code == "INVALID_CROSS_REFERENCE_KEY":
                return Response(404, _NOT_FOUND)
            return Response(status, [exc.rest_error()])
        try:
            changes = self._prepare(spec, body, source="rest", creating=False)
            self._check_setup_record(spec, changes, record)
            if self._locked("sf.sobject.patch", [record["Id"]]):
                raise self._lock_error(record["Id"])
        except RecordError as exc:
            return Response(400, [exc.rest_error()])
        self._commit(spec, record, changes)
        return Response(204)

    def _upsert(self, request: Request, ctx: _Ctx) -> Response:
        """sObject Rows by External ID, PATCH: create (201) or update (200) the record whose
        External ID field holds the value; 300 with the matching records' URLs when several do."""
        spec = self.spec(ctx.parts[1])
        if spec is None:
            return Response(404, _NOT_FOUND)
        key_spec = spec.field(ctx.parts[2])
        if key_spec is None or not key_spec.external_id:
            return Response(404, _not_external_id(ctx.parts[2]))
        body = _json_body(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body, dict):
            return Response(
                400, _json_parser_error("Can not deserialize SObject out of START_ARRAY token")
            )
        named_twice = [k for k in body if k.lower() in ("id", key_spec.name.lower())]
        if named_twice:
            return Response(400, [_key_in_body(named_twice[0], key_spec.name)])
        value = unquote(ctx.parts[3])
        matches = self._live_by_key(spec, key_spec, value)
        if len(matches) > 1:
            return Response(
                300,
                [f"/services/data/v{ctx.version}/sobjects/{spec.name}/{r['Id']}" for r in matches],
            )
        if matches:
            return self._upsert_update(spec, matches[0], body)
        return self._upsert_create(spec, key_spec, value, body)

    def _live_by_key(
        self, spec: ObjectSpec, key_spec: FieldSpec, value: str
    ) -> list[dict[str, Any]]:
        """Live records whose External ID equals ``value`` (text keys match case-insensitively;
        the recycle bin is not searched), oldest first."""
        wanted = value.lower()
        return sorted(
            (
                record
                for record in self.records[spec.name].values()
                if not record["IsDeleted"]
                and record.get(key_spec.name) is not None
                and _fmt(record[key_spec.name]).lower() == wanted
            ),
            key=lambda record: (record["CreatedDate"], record["Id"]),
        )

    def _upsert_update(
        self, spec: ObjectSpec, record: dict[str, Any], body: Mapping[str, Any]
    ) -> Response:
        try:
            changes = self._prepare(spec, body, source="rest", creating=False)
            if self._locked("sf.sobject.upsert", [record["Id"]]):
                raise self._lock_error(record["Id"])
        except RecordError as exc:
            return Response(400, [exc.rest_error()])
        self._commit(spec, record, changes)
        # API 46.0 and later (every version served here) answer an update 200 with a body.
        return Response(200, {"id": record["Id"], "success": True, "errors": [], "created": False})

    def _upsert_create(
        self, spec: ObjectSpec, key_spec: FieldSpec, value: str, body: Mapping[str, Any]
    ) -> Response:
        if not spec.createable:
            return Response(400, [_cannot("inserted", spec.name)])
        try:
            values = self._values_to_insert(
                spec, body, {key_spec.name: self._coerce(key_spec, value, "rest")}
            )
        except RecordError as exc:
            return Response(400, [exc.rest_error()])
        record_id = self.insert(spec.name, values)
        return Response(201, {"id": record_id, "success": True, "errors": [], "created": True})

    def _values_to_insert(
        self, spec: ObjectSpec, body: Mapping[str, Any], extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A REST create's values (plus ``extra``), every required field present, or a
        ``RecordError``."""
        values = self._prepare(spec, body, source="rest", creating=True)
        values.update(extra or {})
        missing = [name for name in spec.required if values.get(name) in (None, "")]
        if missing:
            raise RecordError(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{', '.join(missing)}]",
                missing,
            )
        return values

    def _create(self, request: Request, ctx: _Ctx) -> Response:
        spec = self.spec(ctx.parts[1])
        if spec is None:
            return Response(404, _NOT_FOUND)
        if not spec.createable:
            return Response(400, [_cannot("inserted", spec.name)])
        body = _json_body(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body, dict):
            return Response(
                400, _json_parser_error("Can not deserialize SObject out of START_ARRAY token")
            )
        try:
            values = self._values_to_insert(spec, body)
            self._check_setup_record(spec, values, None)
        except RecordError as exc:
            return Response(400, [exc.rest_error()])
        record_id = self.insert(spec.name, values)
        return Response(201, {"id": record_id, "success": True, "errors": []})

    def _collection_update(self, request: Request, ctx: _Ctx) -> Response:
        body = _json_body(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            return Response(
                400,
                [{"message": "Required field 'records' is missing", "errorCode": "INVALID_FIELD"}],
            )
        records = body["records"]
        if len(records) > COLLECTION_LIMIT:
            return Response(
                400,
                [
                    {
                        "message": "record limit reached. cannot submit more than 200 records "
                        "into this call",
                        "errorCode": "EXCEEDED_ID_LIMIT",
                    }
                ],
            )
        if self.refuse_malformed_collections:
            refusal = _malformed_collection(records, self.spec)
            if refusal is not None:
                return Response(400, [refusal])
        all_or_none = bool(body.get("allOrNone", False))
        planned: list[tuple[ObjectSpec, dict[str, Any], dict[str, Any]] | RecordError] = []
        for item in records:
            planned.append(self._plan_collection_item(item))
        ids = [p[1]["Id"] for p in planned if not isinstance(p, RecordError)]
        locked = self._locked("sf.composite.sobjects.patch", ids)
        planned = [
            self._lock_error(p[1]["Id"])
            if not isinstance(p, RecordError) and p[1]["Id"] in locked
            else p
            for p in planned
        ]
        failed = any(isinstance(p, RecordError) for p in planned)
        results: list[dict[str, Any]] = []
        for item, plan in zip(records, planned, strict=True):
            raw_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(plan, RecordError):
                result: dict[str, Any] = {"success": False, "errors": [plan.save_error()]}
                if isinstance(raw_id, str) and raw_id:
                    result = {"id": raw_id, **result}
                results.append(result)
            elif all_or_none and failed:
                results.append(
                    {"id": plan[1]["Id"], "success": False, "errors": [dict(_ROLLED_BACK)]}
                )
            else:
                spec, record, changes = plan
                self._commit(spec, record, changes)
                results.append({"id": record["Id"], "success": True, "errors": []})
        return Response(200, results)

    def _plan_collection_item(
        self, item: Any
    ) -> tuple[ObjectSpec, dict[str, Any], dict[str, Any]] | RecordError:
        """Validate one Collections record; the target, its changes, or its error."""
        if not isinstance(item, dict):
            return RecordError("INVALID_TYPE", "Must send a concrete entity type.", [])
        attributes = item.get("attributes")
        type_name = attributes.get("type") if isinstance(attributes, dict) else None
        spec = self.spec(type_name) if isinstance(type_name, str) else None
        if spec is None:
            return RecordError("INVALID_TYPE", "Must send a concrete entity type.", [])
        try:
            record = self._target(spec, item.get("id", item.get("Id")))
            changes = self._prepare(spec, item, source="collection", creating=False)
        except RecordError as exc:
            return exc
        return spec, record, changes

    # ----------------------------------------------------------------- SOQL

    def _resolve(self, query: soql.Query, root: ObjectSpec, ref: soql.FieldRef) -> list[FieldSpec]:
        """The chain of fields a path walks (relationships then the field), or INVALID_FIELD."""
        chain: list[FieldSpec] = []
        spec = root
        path = list(ref.path)
        if len(path) > 1 and path[0].lower() == root.name.lower():
            path = path[1:]
        for part in path[:-1]:
            rel = spec.relationships.get(part.lower())
            if rel is None:
                raise soql.invalid_field(
                    query,
                    ref,
                    f"Didn't understand relationship '{part}' in field path. If you are attempting "
                    "to use a custom relationship, be sure to append the '__r' after the custom "
                    "relationship name. Please reference your WSDL or the describe call for the "
                    "appropriate names.",
                )
            chain.append(rel)
            spec = self.schema[rel.reference_to[0]]
        final = spec.field(path[-1])
        if final is None:
            raise soql.invalid_field(
                query,
                ref,
                f"No such column '{path[-1]}' on entity '{spec.name}'. If you are attempting to "
                "use a custom field, be sure to append the '__c' after the custom field name. "
                "Please reference your WSDL or the describe call for the appropriate names.",
            )
        chain.append(final)
        return chain

    def _follow(self, record: Mapping[str, Any] | None, chain: list[FieldSpec]) -> Any:
        """A field's value at the end of a relationship chain (None through a null reference)."""
        current = record
        for rel in chain[:-1]:
            if current is None:
                return None
            target_id = current.get(rel.name)
            current = None
            if target_id:
                for target in rel.reference_to:
                    current = self._find(target, target_id)
                    if current is not None:
                        break
        if current is None:
            return None
        return current.get(chain[-1].name)

    def _query(self, request: Request, ctx: _Ctx) -> Response:
        text = request.param("q")
        if not text:
            return Response(
                400,
                [{"message": "A query string has to be specified", "errorCode": "MALFORMED_QUERY"}],
            )
        include_deleted = ctx.parts[0].lower() == "queryall"
        self.queries.append(text)
        try:
            return self._run_query(request, ctx, text, include_deleted)
        except soql.SoqlError as exc:
            return Response(400, [{"message": exc.message, "errorCode": exc.code}])

    def _run_query(self, request: Request, ctx: _Ctx, text: str, include_deleted: bool) -> Response:
        query = soql.parse(text)
        root = self.spec(query.sobject)
        if root is None:
            message = (
                f"sObject type '{query.sobject}' is not supported. If you are attempting to use a "
                "custom object, be sure to append the '__c' after the entity name. Please reference "
                "your WSDL or the describe call for the appropriate names."
            )
            raise soql.SoqlError("INVALID_TYPE", soql._located(text, query.sobject_pos, message))
        chains: dict[soql.FieldRef, list[FieldSpec]] = {}
        for ref in (*query.fields, *query.where_fields(), *(o.field for o in query.order_by)):
            chains[ref] = self._resolve(query, root, ref)
        for comparison in query.comparisons():
            error = soql.literal_type_error(query, comparison, chains[comparison.field][-1].type)
            if error is not None:
                raise error
        if query.offset is not None and query.offset > MAX_OFFSET:
            raise soql.SoqlError(
                "NUMBER_OUTSIDE_VALID_RANGE", f"Maximum SOQL offset allowed is {MAX_OFFSET}"
            )
        now = self.now()
        rows = [
            record
            for record in self.records[root.name].values()
            if include_deleted or not record["IsDeleted"]
        ]
        if query.where is not None:
            where = query.where
            rows = [
                r
                for r in rows
                if soql.evaluate(where, lambda ref, r=r: self._follow(r, chains[ref]), now)  # type: ignore[misc]
            ]
        if query.order_by:
            rows = soql.sort_rows(rows, query.order_by, lambda r, ref: self._follow(r, chains[ref]))
        if query.offset:
            rows = rows[query.offset :]
        if query.limit is not None:
            rows = rows[: query.limit]
        if query.count_only:
            return Response(200, {"totalSize": len(rows), "done": True, "records": []})
        out = [self._query_row(root, r, query, chains, ctx.version) for r in rows]
        batch = _batch_size(request.headers.get("sforce-query-options", ""))
        return Response(
            200, self._page(out, 0, batch, ctx, "queryAll" if include_deleted else "query")
        )

    def _query_row(
        self,
        root: ObjectSpec,
        record: Mapping[str, Any],
        query: soql.Query,
        chains: Mapping[soql.FieldRef, list[FieldSpec]],
        version: str,
    ) -> dict[str, Any]:
        out = self._record_json(root, record, version, ())
        for ref in query.fields:
            chain = chains[ref]
            if len(chain) == 1:
                out[chain[0].name] = to_json_value(chain[0], record.get(chain[0].name))
                continue
            node: dict[str, Any] | None = out
            current: Mapping[str, Any] | None = record
            for rel in chain[:-1]:
                assert node is not None
                target_id = current.get(rel.name) if current is not None else None
                target = None
                target_spec = None
                for name in rel.reference_to:
                    target = self._find(name, target_id) if target_id else None
                    if target is not None:
                        target_spec = self.schema[name]
                        break
                key = rel.relationship or rel.name
                if target is None or target_spec is None:
                    node[key] = None
                    node = None
                    break
                existing = node.get(key)
                if not isinstance(existing, dict):
                    existing = self._record_json(target_spec, target, version, ())
                    node[key] = existing
                node, current = existing, target
            if node is not None and current is not None:
                node[chain[-1].name] = to_json_value(chain[-1], current.get(chain[-1].name))
        return out

    def _page(
        self, rows: list[dict[str, Any]], start: int, batch: int, ctx: _Ctx, endpoint: str
    ) -> dict[str, Any]:
        end = start + batch
        page: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows)}
        if end < len(rows):
            locator = "01g" + secrets.token_hex(8)[:12].upper() + "AAA"
            self._cursors[locator] = _Cursor(rows, batch, endpoint)
            while len(self._cursors) > 100:
                self._cursors.popitem(last=False)
            page["nextRecordsUrl"] = f"/services/data/v{ctx.version}/{endpoint}/{locator}-{end}"
        page["records"] = rows[start:end]
        return page

    def _query_more(self, request: Request, ctx: _Ctx) -> Response:
        locator, _, offset = ctx.parts[1].rpartition("-")
        cursor = self._cursors.get(locator)
        if cursor is None or not offset.isdigit():
            return Response(
                400, [{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}]
            )
        return Response(
            200, self._page(cursor.rows, int(offset), cursor.batch, ctx, cursor.endpoint)
        )

    # ----------------------------------------------------------------- Bulk API 2.0

    def _bulk_create(self, request: Request, ctx: _Ctx) -> Response:
        body = _json_body(request)
        if isinstance(body, Response):
            return body
        if not isinstance(body, dict):
            return Response(400, _json_parser_error("Can not deserialize job info"))
        operation = body.get("operation")
        spec = self.spec(str(body.get("object", "")))
        if spec is None or not (spec.createable and spec.deletable):
            return Response(
                400,
                [
                    {
                        "errorCode": "INVALIDENTITY",
                        "message": f"Entity '{body.get('object')}' is not supported by the Bulk API.",
                    }
                ],
            )
        if operation not in ("insert", "update", "delete"):
            return Response(
                400,
                [
                    {
                        "errorCode": "API_ERROR",
                        "message": f"Unsupported operation in the sandbox: {operation}",
                    }
                ],
            )
        if body.get("contentType", "CSV") != "CSV":
            return Response(400, [{"errorCode": "API_ERROR", "message": "contentType must be CSV"}])
        delimiter = body.get("columnDelimiter", "COMMA")
        line_ending = body.get("lineEnding", "LF")
        if delimiter not in _DELIMITERS or line_ending not in ("LF", "CRLF"):
            return Response(
                400,
                [{"errorCode": "API_ERROR", "message": "Invalid columnDelimiter or lineEnding"}],
            )
        job = BulkJob(
            id=make_id("750", next(self._sequence)),
            object=spec.name,
            operation=operation,
            created_by=self.integration_user,
            created=datetime.now(UTC),
            version=ctx.version,
            line_ending=line_ending,
            delimiter=delimiter,
        )
        self._jobs[job.id] = job
        return Response(200, job.info(full=False))

    def _job(self, ctx: _Ctx) -> BulkJob | Response:
        job = self._jobs.get(ctx.parts[2])
        if job is None:
            return Response(404, _NOT_FOUND)
        return job

    def _bulk_upload(self, request: Request, ctx: _Ctx) -> Response:
        job = self._job(ctx)
        if isinstance(job, Response):
            return job
        if job.data is not None:
            return Response(
                400,
                [
                    {
                        "errorCode": "BULK_API_ERROR",
                        "message": f"Found multiple contents for job: <{job.id}>, please 'Close' / "
                        "'Abort' / 'Delete' the current Job then create a new Job and make sure "
                        "you only do 'PUT' once on a given Job.",
                    }
                ],
            )
        if job.state != "Open":
            return Response(
                409, [{"errorCode": "INVALIDJOBSTATE", "message": "Job is not in Open state"}]
            )
        job.data = request.body.decode("utf-8-sig")
        return Response(201)

    def _bulk_set_state(self, request: Request, ctx: _Ctx) -> Response:
        job = self._job(ctx)
        if isinstance(job, Response):
            return job
        body = _json_body(request)
        if isinstance(body, Response):
            return body
        state = body.get("state") if isinstance(body, dict) else None
        if state == "Aborted" and job.state in ("Open", "UploadComplete", "InProgress"):
            # Records already processed stay processed: aborting rolls nothing back.
            job.state, job.outcome = "Aborted", None
            job.modstamp = datetime.now(UTC)
            return Response(200, job.info(full=False))
        if state != "UploadComplete" or job.state != "Open":
            return Response(
                400,
                [
                    {
                        "errorCode": "INVALIDJOBSTATE",
                        "message": f"Invalid state transition to {state} from {job.state}",
                    }
                ],
            )
        job.state = "UploadComplete"
        job.modstamp = datetime.now(UTC)
        response = Response(200, job.info(full=False))
        self._process(job)
        if self.shuffle_bulk_results:
            self._random.shuffle(job.successful)
            self._random.shuffle(job.failures)
        if self.bulk_polls_in_progress > 0:
            # The work is done at once; the answer shows it as a real org would, some polls on.
            job.outcome, job.state = job.state, "InProgress"
            job.polls_left = self.bulk_polls_in_progress
        return response

    def _process(self, job: BulkJob) -> None:
        """Run an uploaded job to JobComplete (or Failed) synchronously."""
        started = _time.perf_counter()
        spec = self.schema[job.object]
        if job.data is None:
            job.state = "Failed"
            job.error_message = "InvalidBatch : No data was uploaded for this job"
            return
        reader = csv.reader(io.StringIO(job.data, newline=""), delimiter=_DELIMITERS[job.delimiter])
        rows = [row for row in reader if row]
        if not rows:
            job.state = "Failed"
            job.error_message = "InvalidBatch : Failed to parse the header row"
            return
        header = rows[0]
        job.header = header
        for column in header:
            if spec.field(column) is None:
                job.state = "Failed"
                job.error_message = f"InvalidBatch : Field name not found : {column}"
                job.unprocessed = rows[1:]
                return
        id_column = next((i for i, c in enumerate(header) if c.lower() == "id"), None)
        if job.operation != "insert" and id_column is None:
            job.state = "Failed"
            job.error_message = "InvalidBatch : Field name not found : Id"
            job.unprocessed = rows[1:]
            return
        ids = [row[id_column] for row in rows[1:] if id_column is not None and id_column < len(row)]
        locked = self._locked("sf.bulk2.close", ids)
        for row in rows[1:]:
            job.processed += 1
            try:
                if len(row) != len(header):
                    raise RecordError(
                        "INVALID_FIELD",
                        "The number of fields in the row does not match the header",
                        [],
                    )
                values = dict(zip(header, row, strict=True))
                record_id, created = self._bulk_row(job, spec, values, locked)
            except RecordError as exc:
                job.failed += 1
                raw_id = row[id_column] if id_column is not None and id_column < len(row) else ""
                job.failures.append([raw_id, exc.bulk_error(), *row])
                continue
            job.successful.append([record_id, "true" if created else "false", *row])
        job.state = "JobComplete"
        job.modstamp = datetime.now(UTC)
        job.processing_ms = int((_time.perf_counter() - started) * 1000)

    def _bulk_row(
        self, job: BulkJob, spec: ObjectSpec, values: dict[str, str], locked: frozenset[str]
    ) -> tuple[str, bool]:
        if job.operation == "insert":
            changes = self._prepare(spec, values, source="bulk", creating=True)
            missing = [n for n in spec.required if changes.get(n) in (None, "")]
            if missing:
                raise RecordError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    missing,
                )
            return self.insert(spec.name, changes), True
        record_id = next(v for k, v in values.items() if k.lower() == "id")
        record = self._target(spec, record_id)
        if record["Id"] in locked or record_id in locked:
            raise self._lock_error(record["Id"])
        if job.operation == "delete":
            self.delete(spec.name, record["Id"])
            return record["Id"], False
        changes = self._prepare(
            spec,
            {k: v for k, v in values.items() if k.lower() != "id"},
            source="bulk",
            creating=False,
        )
        self._commit(spec, record, changes)
        return record["Id"], False

    def _bulk_info(self, request: Request, ctx: _Ctx) -> Response:
        job = self._job(ctx)
        if isinstance(job, Response):
            return job
        if job.outcome is not None:
            if job.polls_left > 0:
                job.polls_left -= 1
            else:
                job.state, job.outcome = job.outcome, None
        return Response(200, job.info(full=True))

    def _bulk_delete(self, request: Request, ctx: _Ctx) -> Response:
        job = self._job(ctx)
        if isinstance(job, Response):
            return job
        del self._jobs[job.id]
        return Response(204)

    def _bulk_results(self, request: Request, ctx: _Ctx) -> Response:
        job = self._job(ctx)
        if isinstance(job, Response):
            return job
        kind = ctx.parts[3].lower()
        if kind == "successfulresults":
            header, rows = ["sf__Id", "sf__Created", *job.header], job.successful
        elif kind == "failedresults":
            header, rows = ["sf__Id", "sf__Error", *job.header], job.failures
        else:
            header, rows = list(job.header), job.unprocessed
        buffer = io.StringIO()
        terminator = "\r\n" if job.line_ending == "CRLF" else "\n"
        writer = csv.writer(
            buffer,
            delimiter=_DELIMITERS[job.delimiter],
            lineterminator=terminator,
            quoting=csv.QUOTE_ALL,
        )
        if header:
            writer.writerow(header)
        writer.writerows(rows)
        return Response(200, buffer.getvalue(), {"Content-Type": "text/csv"})


# --------------------------------------------------------------------------- schema changes

# The admin changes a field accepts, with the JSON type each takes.
SALESFORCE_SCHEMA_CHANGES: dict[str, type] = {
    "type": str,
    "delete": bool,
    "picklist": list,
    "restricted": bool,
    "updateable": bool,
    "length": int,
    "precision": int,
    "scale": int,
    "label": str,
    "external_id": bool,
}
_PICKLIST_TYPES = frozenset({"picklist", "multipicklist"})
_CONVERTIBLE = frozenset({"string", "textarea", "picklist", "multipicklist"})
_RESIZABLE_TEXT = frozenset({"string", "textarea", "url", "email", "phone", "combobox"})
_DECIMAL_TYPES = frozenset({"double", "currency", "percent"})
# "External ID: a custom field of type Text, Number, Email or Auto Number" (Setup).
_EXTERNAL_ID_TYPES = frozenset({"string", "double", "int", "email"})
MAX_NUMBER_DIGITS = 18


def parse_schema_change(
    body: Any, allowed: Mapping[str, type]
) -> tuple[tuple[str, str], dict[str, Any]]:
    """(object, field) and the keyword changes of a ``/__sandbox/<crm>/schema`` body, checked.

    ``allowed`` maps each change a CRM accepts to its JSON type; ``ValueError`` says what is
    wrong with the body.
    """
    if not isinstance(body, dict):
        raise ValueError("a schema change is a JSON object with object, field and the change")
    sobject, name = body.get("object"), body.get("field")
    if not isinstance(sobject, str) or not sobject or not isinstance(name, str) or not name:
        raise ValueError("a schema change names its object and field")
    change = {k: v for k, v in body.items() if k not in ("object", "field")}
    unknown = sorted(set(change) - set(allowed))
    if unknown:
        raise ValueError(f"unknown schema change {', '.join(unknown)}; use {', '.join(allowed)}")
    if not change:
        raise ValueError(f"no change given; use {', '.join(allowed)}")
    for key, value in change.items():
        kind = allowed[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{key} must be a JSON {_JSON_NAMES[kind]}")
    picklist = change.get("picklist")
    if picklist is not None and not all(isinstance(v, str) and v for v in picklist):
        raise ValueError("picklist must be a list of non-empty strings")
    return (sobject, name), change


_JSON_NAMES: dict[type, str] = {
    bool: "boolean",
    list: "array",
    int: "integer",
    str: "string",
}


def _standard_writable(sobject: str, name: str) -> bool:
    """Whether a field is writable in a fresh org (field-level security cannot do more)."""
    original = build_schema().get(sobject)
    field_spec = original.field(name) if original is not None else None
    return field_spec is not None and field_spec.updateable


def _changed_field(
    spec: FieldSpec,
    writable_at_most: bool,
    *,
    picklist: Sequence[str] | None,
    restricted: bool | None,
    updateable: bool | None,
    length: int | None,
    precision: int | None,
    scale: int | None,
    label: str | None,
    type: str | None = None,
    external_id: bool | None = None,
) -> FieldSpec:
    """``spec`` with the change applied, or ``ValueError`` as Setup refuses it."""
    changes: dict[str, Any] = {}
    if type is not None and type != spec.type:
        if not spec.custom or spec.type not in _CONVERTIBLE or type not in _CONVERTIBLE:
            raise ValueError(
                f"{spec.name} cannot change from {spec.type} to {type} "
                f"(custom {', '.join(sorted(_CONVERTIBLE))} fields only)"
            )
        if type in _PICKLIST_TYPES and not (picklist or spec.picklist):
            raise ValueError(f"a {type} needs its values (picklist)")
        lengths = {"multipicklist": 4099, "picklist": 255, "string": 255, "textarea": 32768}
        changes.update(type=type, length=lengths[type])
        if type not in _PICKLIST_TYPES:
            changes.update(picklist=(), restricted=False)
        spec = replace(spec, **changes)
    if picklist is not None or restricted is not None:
        if spec.type not in _PICKLIST_TYPES:
            raise ValueError(f"{spec.name} is a {spec.type} field, not a picklist")
        if picklist is not None:
            if not picklist or len(set(picklist)) != len(picklist):
                raise ValueError("a picklist needs at least one value and no duplicates")
            changes["picklist"] = tuple(picklist)
        if restricted is not None:
            changes["restricted"] = restricted
    if updateable is not None:
        if updateable and not (spec.custom or writable_at_most):
            raise ValueError(f"{spec.name} is a system field and cannot be made writable")
        changes["updateable"] = changes["createable"] = updateable
    if length is not None:
        if spec.type not in _RESIZABLE_TEXT or length < 1:
            raise ValueError(f"length applies to text fields and is at least 1 ({spec.name})")
        changes["length"] = length
    if precision is not None or scale is not None:
        if spec.type not in _DECIMAL_TYPES:
            raise ValueError(f"precision and scale apply to number fields ({spec.name})")
        total = spec.precision if precision is None else precision
        places = spec.scale if scale is None else scale
        if not 1 <= total <= MAX_NUMBER_DIGITS or not 0 <= places <= total:
            raise ValueError(
                f"precision is 1..{MAX_NUMBER_DIGITS} and scale 0..precision ({spec.name})"
            )
        changes["precision"], changes["scale"] = total, places
    if label is not None:
        changes["label"] = label
    if external_id is not None:
        if external_id and not (spec.custom and spec.type in _EXTERNAL_ID_TYPES):
            raise ValueError(
                f"{spec.name} cannot be an External ID (custom "
                f"{', '.join(sorted(_EXTERNAL_ID_TYPES))} fields only)"
            )
        changes["external_id"] = external_id
    return replace(spec, **changes)


# --------------------------------------------------------------------------- Tooling API fields

_NO_CUSTOMIZE = "insufficient access rights on object id"
_BAD_FIELD_NAME = (
    "The Field Name field can only contain underscores and alphanumeric characters. It must be "
    "unique, begin with a letter, not include spaces, not end with an underscore, and not "
    "contain two consecutive underscores."
)
_TOOLING_CUSTOM_FIELD_COLUMNS = (
    "Id",
    "DeveloperName",
    "TableEnumOrId",
    "NamespacePrefix",
    "ManageableState",
    "FullName",
    "Description",
    "Length",
    "Precision",
    "Scale",
    "Metadata",
)
_PERMISSION_OBJECTS = frozenset({"PermissionSet", "FieldPermissions", "PermissionSetAssignment"})
# Metadata API field types the sandbox creates, and the describe type each becomes.
_METADATA_TYPES = {
    "Text": "string",
    "TextArea": "textarea",
    "LongTextArea": "textarea",
    "Number": "double",
    "DateTime": "datetime",
    "Date": "date",
    "Checkbox": "boolean",
    "Email": "email",
    "Url": "url",
    "Phone": "phone",
    "Picklist": "picklist",
}
_FIXED_LENGTHS = {"TextArea": 255, "Email": 80, "Url": 255, "Phone": 40, "Picklist": 255}
# "Long text area: up to 131,072 characters"; a Text field holds 1 to 255.
MAX_LONG_TEXT = 131_072
_KEYABLE_METADATA_TYPES = frozenset({"Text", "Number", "Email"})


def _integrity(message: str, field_name: str | None = None) -> RecordError:
    return RecordError("FIELD_INTEGRITY_EXCEPTION", message, [field_name] if field_name else [])


def _whole_number(metadata: Mapping[str, Any], key: str, low: int, high: int) -> int:
    value = metadata.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _integrity(f"{key} must be a whole number from {low} to {high}, not {value!r}", key)
    return value


def _picklist_values(metadata: Mapping[str, Any]) -> tuple[tuple[str, ...], bool]:
    """A Picklist's values and whether it is restricted, from its ``valueSet``."""
    value_set = metadata.get("valueSet")
    definition = value_set.get("valueSetDefinition") if isinstance(value_set, dict) else None
    entries = definition.get("value") if isinstance(definition, dict) else None
    if not isinstance(value_set, dict) or not isinstance(entries, list) or not entries:
        raise _integrity(
            "A Picklist needs valueSet.valueSetDefinition.value: at least one value", "valueSet"
        )
    values = []
    for entry in entries:
        name = entry.get("fullName") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise _integrity(f"each picklist value needs a fullName, not {entry!r}", "valueSet")
        values.append(name)
    if len({v.lower() for v in values}) != len(values):
        raise _integrity("Duplicate picklist value in valueSetDefinition", "valueSet")
    return tuple(values), bool(value_set.get("restricted", False))


def custom_field_from_metadata(name: str, metadata: Any) -> FieldSpec:
    """The describe-level field a Tooling API ``Metadata`` defines, or the ``RecordError`` the
    org answers (FIELD_INTEGRITY_EXCEPTION, REQUIRED_FIELD_MISSING)."""
    if not isinstance(metadata, dict):
        raise RecordError("REQUIRED_FIELD_MISSING", "Required fields are missing: [Metadata]")
    label, kind = metadata.get("label"), metadata.get("type")
    if not isinstance(label, str) or not label.strip():
        raise RecordError("REQUIRED_FIELD_MISSING", "Required fields are missing: [label]")
    if len(label) > 40:
        raise _integrity("label: data value too large (max length=40)", "label")
    if kind not in _METADATA_TYPES:
        raise _integrity(f"type must be one of {', '.join(_METADATA_TYPES)}, not {kind!r}", "type")
    keyed = bool(metadata.get("externalId")) or bool(metadata.get("unique"))
    if keyed and kind not in _KEYABLE_METADATA_TYPES:
        raise _integrity(f"A {kind} field cannot be an External ID or unique", "externalId")
    spec = FieldSpec(
        name,
        label,
        _METADATA_TYPES[kind],
        length=_FIXED_LENGTHS.get(kind, 0),
        custom=True,
        external_id=bool(metadata.get("externalId")),
        unique=bool(metadata.get("unique")),
    )
    if kind == "Text":
        return replace(spec, length=_whole_number(metadata, "length", 1, 255))
    if kind == "LongTextArea":
        _whole_number(metadata, "visibleLines", 2, 50)
        return replace(spec, length=_whole_number(metadata, "length", 256, MAX_LONG_TEXT))
    if kind == "Number":
        precision = _whole_number(metadata, "precision", 1, MAX_NUMBER_DIGITS)
        scale = _whole_number(metadata, "scale", 0, precision)
        return replace(spec, precision=precision, scale=scale)
    if kind == "Checkbox":
        if str(metadata.get("defaultValue", "")).lower() not in ("true", "false"):
            raise _integrity("A Checkbox needs defaultValue true or false", "defaultValue")
        return replace(spec, nillable=False)
    if kind == "Picklist":
        values, restricted = _picklist_values(metadata)
        return replace(spec, picklist=values, restricted=restricted)
    return spec


def _metadata_extras(metadata: Any) -> dict[str, Any]:
    """What a field's Metadata holds that describe does not (kept for reading it back)."""
    if not isinstance(metadata, dict):
        return {}
    return {
        k: metadata[k] for k in ("description", "visibleLines", "inlineHelpText") if k in metadata
    }


def metadata_of(spec: FieldSpec, extras: Mapping[str, Any]) -> dict[str, Any]:
    """A custom field's Tooling API ``Metadata`` (CustomFieldMetadata), from its describe."""
    kind = {
        "string": "Text",
        "double": "Number",
        "datetime": "DateTime",
        "date": "Date",
        "boolean": "Checkbox",
        "email": "Email",
        "url": "Url",
        "phone": "Phone",
        "picklist": "Picklist",
        "multipicklist": "MultiselectPicklist",
        "int": "Number",
    }.get(spec.type, "TextArea")
    if spec.type == "textarea" and spec.length > 255:
        kind = "LongTextArea"
    out: dict[str, Any] = {
        "label": spec.label,
        "type": kind,
        "description": extras.get("description"),
        "inlineHelpText": extras.get("inlineHelpText"),
        "externalId": spec.external_id,
        "unique": spec.unique,
        "required": False,
        "caseSensitive": False if kind == "Text" else None,
        "defaultValue": "false" if kind == "Checkbox" else None,
        "length": spec.length if kind in ("Text", "LongTextArea") else None,
        "visibleLines": extras.get("visibleLines", 3) if kind == "LongTextArea" else None,
        "precision": spec.precision if kind == "Number" else None,
        "scale": spec.scale if kind == "Number" else None,
        "trackHistory": False,
        "valueSet": None,
    }
    if spec.type in _PICKLIST_TYPES:
        out["valueSet"] = {
            "controllingField": None,
            "restricted": spec.restricted,
            "valueSetName": None,
            "valueSettings": [],
            "valueSetDefinition": {
                "sorted": False,
                "value": [
                    {"fullName": value, "label": value, "default": False, "color": None}
                    for value in spec.picklist
                ],
            },
        }
    return out


# --------------------------------------------------------------------------- helpers


def new_session_id(org_id: str) -> str:
    """A session id shaped like Salesforce's: ``<15-char org id>!AQ<opaque token>``."""
    return f"{org_id[:15]}!AQ{secrets.token_urlsafe(72)[:94]}"


def _batch_size(header: str) -> int:
    match = re.search(r"batchSize\s*=\s*(\d+)", header)
    if not match:
        return QUERY_BATCH_DEFAULT
    return max(QUERY_BATCH_MIN, min(QUERY_BATCH_DEFAULT, int(match.group(1))))


def _cannot(operation: str, sobject: str) -> dict[str, Any]:
    """The REST error for an operation the object does not support (Organization)."""
    return {
        "errorCode": "INVALID_TYPE_FOR_OPERATION",
        "message": f"entity type cannot be {operation}: {sobject}",
    }


def _malformed_collection(
    records: Sequence[Any], spec_of: Callable[[str], ObjectSpec | None]
) -> dict[str, Any] | None:
    """The error that refuses a whole sObject Collections request ("Each object must contain an
    attributes map. The map must contain a value for type"; "If the request isn't well formed,
    the API returns a 400"), or None when every record is well formed."""
    for item in records:
        if not isinstance(item, dict):
            return {
                "errorCode": "JSON_PARSER_ERROR",
                "message": "Cannot deserialize instance of SObject out of "
                f"{type(item).__name__.upper()} token",
            }
        attributes = item.get("attributes")
        type_name = attributes.get("type") if isinstance(attributes, dict) else None
        if not isinstance(type_name, str) or not type_name:
            return {"errorCode": "INVALID_TYPE", "message": "Must send a concrete entity type."}
        if spec_of(type_name) is None:
            return {
                "errorCode": "INVALID_TYPE",
                "message": f"sObject type '{type_name}' is not supported.",
            }
    return None


def _not_external_id(field_name: str) -> list[dict[str, Any]]:
    """Upsert by a field that is not an External ID (or does not exist): 404 NOT_FOUND."""
    return [
        {
            "errorCode": "NOT_FOUND",
            "message": "Provided external ID field does not exist or is not accessible: "
            f"{field_name}",
        }
    ]


def _key_in_body(given: str, key_field: str) -> dict[str, Any]:
    """Upsert naming Id or the key field in its body ("Do not specify Id or an external ID
    field in the request body or an error is generated")."""
    return {
        "errorCode": "INVALID_FIELD",
        "message": f"{given} is not allowed in the body of an upsert by {key_field}: "
        "the URL names the record",
        "fields": [given],
    }


def _json_parser_error(message: str) -> list[dict[str, Any]]:
    return [{"message": message, "errorCode": "JSON_PARSER_ERROR"}]


def _json_body(request: Request) -> Any:
    """The parsed JSON body, or the 400 JSON_PARSER_ERROR response Salesforce gives."""
    try:
        return request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        return Response(400, _json_parser_error(f"Unexpected character: {exc}"))


def _xml_value(body: str, tag: str) -> str | None:
    match = re.search(rf"<(?:\w+:)?{tag}>(.*?)</(?:\w+:)?{tag}>", body, re.DOTALL)
    return html.unescape(match.group(1)) if match else None


def _soap_fault() -> str:
    message = "Invalid username, password, security token; or user locked out."
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<soapenv:Body><soapenv:Fault><faultcode>sf:INVALID_LOGIN</faultcode>"
        f"<faultstring>INVALID_LOGIN: {message}</faultstring>"
        '<detail><sf:LoginFault xsi:type="sf:LoginFault">'
        "<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>"
        f"<sf:exceptionMessage>{message}</sf:exceptionMessage>"
        "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )


def _jwt_claims(assertion: str) -> dict[str, Any] | None:
    parts = assertion.split(".")
    if len(parts) != 3:
        return None
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (ValueError, json.JSONDecodeError):
        return None
    return claims if isinstance(claims, dict) else None


def sandbox_login_session(sandbox_url: str) -> requests.Session:
    """A ``requests.Session`` that carries simple-salesforce's HTTPS calls to the sandbox.

    Test-only routing: simple-salesforce hard-codes ``https://login.salesforce.com`` (and
    ``test.salesforce.com``) for login and ``https://<instance>`` for every data call. This
    session mounts a transport adapter that sends those, and ``https://`` calls to the sandbox's
    own host and port, to the sandbox over plain HTTP on loopback, so the unmodified client's
    login and data flows can be exercised. Nothing else is rerouted.
    """
    from urllib.parse import urlsplit

    import requests
    from requests.adapters import HTTPAdapter

    target = urlsplit(sandbox_url)
    if target.hostname not in ("127.0.0.1", "localhost"):
        raise ValueError("the sandbox only listens on 127.0.0.1")
    local = f"http://{target.hostname}:{target.port}"
    prefixes = (
        "https://login.salesforce.com",
        "https://test.salesforce.com",
        f"https://{target.hostname}:{target.port}",
    )

    class _LoopbackAdapter(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            url = request.url or ""
            for prefix in prefixes:
                if url.startswith(prefix):
                    request.url = local + url[len(prefix) :]
                    break
            return super().send(request, *args, **kwargs)

    session = requests.Session()
    adapter = _LoopbackAdapter()
    for prefix in prefixes:
        session.mount(prefix, adapter)
    return session
