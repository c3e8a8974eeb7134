"""Values that flow between the parts of a sync. Standard library only.

The core takes these values and returns these values; adapters build them from the outside
world (warehouse rows, CRM records) and turn them back into API calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

# The warehouse contract: the metrics the built-in model computes for every account.
BUILTIN_METRICS: tuple[str, ...] = (
    "total_users",
    "active_users_7d",
    "active_users_28d",
    "new_users_7d",
    "usual_weekly_new_users",
    "events_7d",
    "usual_weekly_events",
    "events_28d",
    "events_prev_28d",
    "core_features_28d",
    "enterprise_features_28d",
    "admin_changes_28d",
    "legal_page_views_14d",
    "pricing_page_views_14d",
    "admins",
)


@dataclass(frozen=True, slots=True)
class ProductAccount:
    """One unit to score: a company (registrable domain) or a workspace.

    ``key`` identifies the account across runs: the registrable domain at the company level,
    ``workspace:<id>`` at the workspace level. ``domain`` is what matching uses.
    ``metrics`` holds numeric usage metrics by name (the warehouse model's columns); ``None``
    is an unknown value (a custom model's NULL), never 0.
    """

    key: str
    domain: str
    metrics: Mapping[str, float | None]
    first_seen: datetime | None = None
    workspace_id: str | None = None
    hosts: tuple[str, ...] = ()


@dataclass(slots=True)
class UsageReadStats:
    """What reading the warehouse saw: rows read, accounts formed, and what was skipped and why."""

    rows_read: int = 0
    accounts: int = 0
    users: int = 0
    skipped_users: int = 0
    skipped_rows: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    # Events the model would have counted but could not, by reason: no_user, unknown_user,
    # no_name, no_time, future (see ``connectors.warehouse``).
    dropped_events: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, users: int = 1, rows: int = 1) -> None:
        """Count ``rows`` skipped rows covering ``users`` users for ``reason``."""
        self.skipped_rows += rows
        self.skipped_users += users
        self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + users

    def drop_events(self, reason: str, count: int) -> None:
        """Count ``count`` events dropped for ``reason``; a zero count records nothing."""
        if count:
            self.dropped_events[reason] = self.dropped_events.get(reason, 0) + count


@dataclass(frozen=True, slots=True)
class WarehouseProblem:
    """Something about the warehouse that would make a run fail, tied to the config key it is about.

    ``key`` is the path in the main config file (``("warehouse", "url")``,
    ``("warehouse", "users_table")``, ``("warehouse", "model")``...); ``message`` is one line,
    without secrets, saying what is wrong and what to do.
    """

    key: tuple[str | int, ...]
    message: str


@dataclass(frozen=True, slots=True)
class WarehouseProbe:
    """What probing the warehouse found: every problem at once, and a custom model's columns.

    ``columns`` are the result columns of a custom SQL model as the warehouse returned them;
    ``None`` for the built-in model or when the model could not be run.
    """

    problems: tuple[WarehouseProblem, ...]
    columns: tuple[str, ...] | None = None

    @property
    def ok(self) -> bool:
        """True when nothing would make a run fail."""
        return not self.problems


class FieldType(StrEnum):
    """Destination-independent field types, enough to format and compare values."""

    NUMBER = "number"
    INTEGER = "integer"
    STRING = "string"
    TEXTAREA = "textarea"
    PICKLIST = "picklist"
    MULTIPICKLIST = "multipicklist"
    DATE = "date"
    DATETIME = "datetime"
    BOOLEAN = "boolean"
    ID = "id"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A CRM field as the destination's schema describes it."""

    name: str
    type: FieldType
    length: int | None = None
    updateable: bool = True
    label: str | None = None
    scale: int | None = None
    picklist_values: tuple[str, ...] = ()
    # A restricted picklist (every HubSpot enumeration, a Salesforce restricted picklist)
    # refuses values it does not list; an unrestricted one stores them as inactive values.
    restricted: bool = False
    precision: int | None = None  # total digits of a number field, when the schema says
    # A key a record can be found and written by: a Salesforce External ID (upsert by it) or a
    # HubSpot unique-value property (``hasUniqueValue``, usable as ``idProperty``).
    external_id: bool = False


@dataclass(frozen=True, slots=True, weakref_slot=True)
class CrmRecord:
    """A CRM account (Salesforce Account, HubSpot company) as read for matching and diffing.

    ``domain_values`` are the raw values of the mapping's domain fields (Website, Domain__c,
    domain, hs_additional_domains split on ';'), not yet normalised.
    ``fields`` holds the current values of the mapped fields, as the API returned them.
    Weakly referable: a reader may remember the records it returned for as long as anyone
    holds them, without holding a whole CRM itself.
    """

    id: str
    domain_values: tuple[str, ...]
    fields: Mapping[str, Any]
    name: str | None = None
    last_modified: datetime | None = None
    parent_id: str | None = None
    owner_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecordChange:
    """The changed fields of one CRM record, as canonical Python values.

    ``None`` means "clear this field"; each connector turns values into its wire format
    (Salesforce REST null, Bulk ``#N/A``, HubSpot ``""``).
    """

    record_id: str
    fields: Mapping[str, Any]
    account_key: str
    priority: float = 0.0
    # What the CRM held for each changed field when the plan was made (canonical values),
    # for showing a plan as a diff; connectors never send it.
    current: Mapping[str, Any] | None = None
    # Why a record no account targets is written: ``account_gone`` (its account left the
    # warehouse) or ``not_target`` (its owned fields are cleared); None for a matched account.
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class OwnedRecord:
    """A CRM record pls-sync owns fields on, in one CRM (org or portal): the ownership ledger.

    ``fields`` maps each owned field to the value pls-sync last wrote there (or found already
    there when it matched), in JSON-ready form; ``account_key`` is the account the values came
    from (``mql:<domain>`` for an ``mql_only`` tag, empty when adopted from the CRM).
    """

    record_id: str
    account_key: str
    fields: Mapping[str, Any]
    # Values a write was about to send when its outcome was last recorded: until the write
    # is confirmed, the CRM holding either these or ``fields`` means nobody else changed it.
    pending: Mapping[str, Any] = field(default_factory=dict)
    # pls-sync's own writes move the record's last-modified stamp; matching by "most recently
    # modified" must not see them. ``written_at`` is the CRM's clock when pls-sync's last write
    # to the record finished (for an ``in_flight`` row: when the write whose requests may still
    # land ended), ``modified`` the record's last change by anyone else before it.
    modified: datetime | None = None
    written_at: datetime | None = None
    # A write to the record was sent and its outcome is unknown (the run died before recording
    # it) or unsure (a retried request may land later): whatever stamp the record has may be
    # that write's, until the next run settles it.
    in_flight: bool = False


@dataclass(frozen=True, slots=True)
class RecordRejection:
    """A record the CRM refused, with its reason; kept and retried on the next run."""

    record_id: str
    code: str
    message: str
    fields: tuple[str, ...] = ()
    retriable: bool = False


@dataclass(slots=True)
class WriteResult:
    """What a write did: records written, records rejected, calls made, records not attempted."""

    written: list[str] = field(default_factory=list)
    rejected: list[RecordRejection] = field(default_factory=list)
    not_attempted: list[str] = field(default_factory=list)
    calls: int = 0
    method: str = "collections"
    # The CRM's clock (its HTTP ``Date``) when the last write answer arrived: every record
    # written has a last-modified stamp at or before it.
    server_time: datetime | None = None
    # A write request was retried: the failed attempt may be applied after ``server_time``
    # (a timeout whose request the CRM still ran), so the written records' stamps are unsure.
    uncertain: bool = False
    # Set when a fatal error (an expired session, a revoked token) stopped the write partway:
    # what was written is still reported, the rest is ``not_attempted``.
    error: str | None = None
