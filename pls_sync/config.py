"""Configuration: ``config/*.yaml`` and ``mappings/*.yaml`` into typed, validated settings.

:func:`load_settings` reads the main file, the scoring model, the event taxonomy and every
enabled destination's mapping, validates all of them and returns a frozen :class:`Settings`.
Every problem in every file is collected first and raised together as one ``ConfigError``,
each issue naming its file, line and dotted key; nothing partially loaded escapes.

Paths the main file names (scoring, event taxonomy, mappings, a custom SQL model) are relative
to the file naming them; ``plans_dir`` and the database URLs are used as given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from pls_sync.channels import (
    DEFAULT_MOTIONS,
    BehaviourPoints,
    MotionRule,
    PersonaModel,
    PersonaRule,
    default_persona_model,
    persona_model_problems,
    validate_motion_table,
)
from pls_sync.config_yaml import ConfigLines, Document, Interpolator, KeyPath, load_document
from pls_sync.cron import CronError, parse_cron
from pls_sync.errors import ConfigError, ConfigIssue, redact
from pls_sync.fit import FitModel, FitSegment
from pls_sync.mapping import (
    FORBIDDEN_TARGETS,
    NULL_POLICIES,
    ON_MULTIPLE_RULES,
    SOURCES,
    WRITE_POLICIES,
    DestinationMapping,
    FieldMapping,
    MatchRule,
    is_known_source,
)
from pls_sync.models import BUILTIN_METRICS
from pls_sync.scoring import (
    OPERATORS,
    Component,
    Condition,
    ConditionGroup,
    MetricSum,
    Ratio,
    Rule,
    ScoringModel,
    Signal,
    Tier,
    label_names,
    saturate,
)

__all__ = [
    "BUILTIN_METRICS",
    "DEFAULT_CONFIG_PATH",
    "DESTINATIONS",
    "TAXONOMY_CATEGORIES",
    "DestinationSettings",
    "JobSettings",
    "LoggingSettings",
    "ScheduleSettings",
    "Settings",
    "WarehouseSettings",
    "builtin_metric_names",
    "load_settings",
]

DEFAULT_CONFIG_PATH = Path("config/pls_sync.yaml")


TAXONOMY_CATEGORIES: tuple[str, ...] = (
    "legal_page_view",
    "pricing_page_view",
    "admin_change",
    "core_feature",
    "enterprise_feature",
    "ignored",
)
"""The event categories the built-in model knows; an event belongs to one at most."""

DESTINATIONS: tuple[str, ...] = ("salesforce", "hubspot")

_WEIGHT_TOLERANCE = 1e-6
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-$]*")


def builtin_metric_names() -> tuple[str, ...]:
    """The metric names the built-in warehouse model produces (``BUILTIN_METRICS``)."""
    return BUILTIN_METRICS


# --------------------------------------------------------------------------------------------
# Settings: what the rest of pls-sync reads


@dataclass(frozen=True, slots=True)
class WarehouseSettings:
    """Where usage comes from. ``model`` is ``"builtin"`` or the path of a custom SQL file.

    ``taxonomy`` maps every known category to its event names (empty when not configured).
    """

    url: str = field(repr=False)
    model: Literal["builtin"] | Path
    schema: str | None
    users_table: str
    events_table: str
    chunk_size: int
    taxonomy: dict[str, tuple[str, ...]]
    taxonomy_path: Path | None = None
    # The most memory a DuckDB warehouse may use for the read (``256MB``); None: DuckDB's own
    # default (80% of the machine's memory). Other warehouses manage their own.
    duckdb_memory_limit: str | None = None

    @property
    def is_builtin(self) -> bool:
        """Whether the built-in two-table model computes the metrics."""
        return self.model == "builtin"


@dataclass(frozen=True, slots=True)
class DestinationSettings:
    """One CRM destination: on or off, its mapping and its API limits.

    A disabled destination's mapping is not validated: it is loaded when it is valid and is an
    empty mapping (writing nothing) when it is not.
    """

    name: str
    enabled: bool
    mapping: DestinationMapping
    mapping_path: Path
    api_version: str = "59.0"
    batch_size: int = 200
    bulk_threshold: int = 2000
    requests_per_10s: int = 100
    # HubSpot: above this many companies a full read goes through the CRM exports API (None:
    # never). Salesforce's counterpart is ``bulk_threshold``.
    export_threshold: int | None = None


@dataclass(frozen=True, slots=True)
class JobSettings:
    """A scheduled job: its name, its standard five-field cron expression (``pls_sync.cron``)
    and its misfire grace."""

    name: str
    cron: str
    grace_seconds: int
    destinations: tuple[str, ...] = ()  # empty: every enabled destination


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    """The cron jobs and the time zone their expressions are read in."""

    timezone: str
    jobs: tuple[JobSettings, ...]


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """Log level and format (auto: JSON when not on a TTY)."""

    level: str
    format: str


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """Buyers, MQL intake, the motion table and rep alerts (``config/channels.yaml``)."""

    persona: PersonaModel = field(default_factory=default_persona_model)
    motions: tuple[MotionRule, ...] = DEFAULT_MOTIONS
    sf_lead_statuses: tuple[str, ...] = ("Marketing Qualified",)
    sf_contact_field: str | None = None
    hs_lifecycle_stage: str = "marketingqualifiedlead"
    hs_mql_property: str | None = None
    alerts_enabled: bool = False
    alert_tier: str = "sales"
    # At go-live (the first run with alerts on), accounts already in the tier are recorded as
    # alerted without a task, unless backfilled: reps are not flooded with old news.
    alerts_backfill: bool = False
    sf_alert_key_field: str = "PQA_Alert_Key__c"
    hs_alert_key_property: str = "pqa_alert_key"
    stale_after_days: int | None = None
    # Segments by company size (``fit:`` of the scoring file); None: no fit is computed. The
    # motion table may name them.
    fit: FitModel | None = None


@dataclass(frozen=True, slots=True)
class CrmSnapshotSettings:
    """Incremental CRM reads: on or off, how often a full refresh, how much overlap."""

    enabled: bool = True
    full_refresh_hours: float = 24.0
    skew_seconds: int = 300


@dataclass(frozen=True, slots=True)
class MatchingSettings:
    """Hosts that never name a company, beyond the built-in lists (``matching:``)."""

    platform_hosts: tuple[str, ...] = ()
    shared_hosting: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LabelSettings:
    """Where conversion labels come from (the ``labels:`` section of the main config).

    ``source`` is ``warehouse`` (``table``, optionally ``schema.table``, read through the
    warehouse URL), ``file`` (``path`` of a CSV), ``salesforce`` (won Opportunities, by their
    Account's domain fields, dated by ``CloseDate``) or ``hubspot`` (deals in a closed-won stage,
    by their associated companies' domains, dated by ``closedate``). Column names are the
    warehouse's or the file's; a column set to ``None`` is absent. At least one of
    ``converted_column`` and ``converted_at_column`` is needed for those two sources.
    ``won_stages`` lists the HubSpot deal stage ids that count as won; ``None``: every stage
    whose pipeline metadata says closed won (``isClosed`` true, probability 1.0).
    """

    source: Literal["warehouse", "file", "salesforce", "hubspot"]
    table: str | None = None
    path: Path | None = None
    domain_column: str = "domain"
    converted_column: str | None = "converted"
    converted_at_column: str | None = "converted_at"
    config_file: str = "pls_sync.yaml"
    won_stages: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a run needs, validated. Built by :func:`load_settings`."""

    config_path: Path
    warehouse: WarehouseSettings
    account_level: str
    scoring: ScoringModel
    destinations: dict[str, DestinationSettings]
    state_url: str = field(repr=False)
    plans_dir: Path
    api_budget_share: float
    schedule: ScheduleSettings
    logging: LoggingSettings
    scoring_path: Path | None = None
    crm_snapshot: CrmSnapshotSettings = field(default_factory=lambda: CrmSnapshotSettings())
    channels: ChannelSettings = field(default_factory=lambda: ChannelSettings())
    history_days: int | None = 730
    channels_path: Path | None = None
    matching: MatchingSettings = field(default_factory=lambda: MatchingSettings())
    labels: LabelSettings | None = None
    # Where ``pls-sync report``'s page is written after each run; None: on demand only.
    report_after_run: Path | None = None
    # Where every key of every file is, for problems found after loading (validate, run).
    lines: ConfigLines = field(default_factory=ConfigLines, repr=False, compare=False)


# --------------------------------------------------------------------------------------------
# The shape of the files (pydantic), before cross-file rules


class _Spec(BaseModel):
    """Strict, closed models: unknown keys and loosely typed values are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


Name = Annotated[str, Field(min_length=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Percent = Annotated[float, Field(ge=0, le=100)]


def _check_url(value: str) -> str:
    if _URL.fullmatch(value) is None:
        raise ValueError(f"not a database URL (expected scheme://...): {redact(value)}")
    return value


def _check_table(value: str) -> str:
    if _NAME.fullmatch(value) is None:
        raise ValueError("a table name is letters, digits, _ - and $, starting with a letter or _")
    return value


def _check_member(allowed: tuple[str, ...], what: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(allowed)}")
        return value

    return check


_MEMORY_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)


def _check_memory_size(value: str | None) -> str | None:
    if value is not None and _MEMORY_SIZE.fullmatch(value.strip()) is None:
        raise ValueError(f"{value!r} is not a memory size: write it like 256MB or 1.5GB")
    return value


class WarehouseSpec(_Spec):
    """``warehouse:`` in the main file."""

    url: Name
    model: Name = "builtin"
    schema_: str | None = Field(default=None, alias="schema")
    users_table: Name = "users"
    events_table: Name = "events"
    event_taxonomy: Name | None = None
    chunk_size: int = Field(default=5000, ge=1, le=1_000_000)
    duckdb_memory_limit: str | None = None

    _url = field_validator("url")(_check_url)
    _memory = field_validator("duckdb_memory_limit")(_check_memory_size)
    _tables = field_validator("users_table", "events_table")(_check_table)


def _version_text(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError('write the API version as a quoted string, e.g. "59.0"')
    if isinstance(value, str) and re.fullmatch(r"\d{2,3}\.\d", value) is None:
        raise ValueError('expected an API version such as "59.0"')
    return value


class SalesforceSpec(_Spec):
    """``destinations.salesforce:``."""

    enabled: bool = True
    mapping: Name
    api_version: Annotated[str, BeforeValidator(_version_text)] = "59.0"
    batch_size: int = Field(default=200, ge=1, le=200)
    bulk_threshold: int = Field(default=2000, ge=1)


class HubSpotSpec(_Spec):
    """``destinations.hubspot:``."""

    enabled: bool = True
    mapping: Name
    batch_size: int = Field(default=100, ge=1, le=100)
    requests_per_10s: int = Field(default=100, ge=1, le=1000)
    export_threshold: int | None = Field(default=20_000, ge=1)


class DestinationsSpec(_Spec):
    """``destinations:``: one optional section per supported CRM."""

    salesforce: SalesforceSpec | None = None
    hubspot: HubSpotSpec | None = None


class StateSpec(_Spec):
    """``state:``: the state store's database."""

    url: Name = "sqlite:///.pls-sync/state.sqlite"
    # Score history older than this many days is deleted after each run; null keeps it all.
    history_days: int | None = Field(default=730, ge=1)

    _url = field_validator("url")(_check_url)


class ApiBudgetSpec(_Spec):
    """``api_budget:``."""

    max_share_of_daily: float = Field(default=0.5, gt=0, le=1)


class PersonaSpec(_Spec):
    """One ``buyers.personas`` item: every criterion it sets must hold."""

    name: Name
    points: float = Field(ge=0)
    seniority_in: list[Name] = Field(default_factory=list)
    title_patterns: list[Name] = Field(default_factory=list)
    department_in: list[Name] = Field(default_factory=list)
    min_company_size: int | None = Field(default=None, ge=0)
    label: str = ""


class BehaviourPointsSpec(_Spec):
    """``buyers.behaviour_points``: points for what a buyer does in the product."""

    legal_page_view: float = Field(default=30, ge=0)
    became_admin: float = Field(default=25, ge=0)
    pricing_page_view: float = Field(default=10, ge=0)


class BuyersSpec(_Spec):
    """``buyers:`` in the channels file."""

    min_buyer_score: float = Field(default=30, ge=0)
    max_buyers: int = Field(default=5, ge=0)
    personas: list[PersonaSpec]
    behaviour_points: BehaviourPointsSpec = Field(default_factory=BehaviourPointsSpec)


class SalesforceMqlSpec(_Spec):
    """``mql.salesforce``: which Leads and Contacts are MQLs."""

    lead_statuses: list[Name] = Field(default_factory=lambda: ["Marketing Qualified"])
    contact_field: Name | None = None


class HubSpotMqlSpec(_Spec):
    """``mql.hubspot``: which contacts are MQLs."""

    lifecycle_stage: Name = "marketingqualifiedlead"
    property: Name | None = None


class MqlSpec(_Spec):
    """``mql:``."""

    salesforce: SalesforceMqlSpec = Field(default_factory=SalesforceMqlSpec)
    hubspot: HubSpotMqlSpec = Field(default_factory=HubSpotMqlSpec)


class MotionSpec(_Spec):
    """One row of ``motions``."""

    tiers: list[Name] = Field(default_factory=list)
    buyer: bool | None = None
    segments: list[Name] = Field(default_factory=list)
    motion: Name


class AlertsSpec(_Spec):
    """``alerts:``: rep tasks when an account enters a tier."""

    enabled: bool = False
    tier: Name = "sales"
    backfill: bool = False
    salesforce_key_field: Name = "PQA_Alert_Key__c"
    hubspot_key_property: Name = "pqa_alert_key"


class ChannelsSpec(_Spec):
    """The channels file, ``config/channels.yaml``."""

    buyers: BuyersSpec
    mql: MqlSpec = Field(default_factory=MqlSpec)
    motions: list[MotionSpec] = Field(min_length=1)
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    stale_after_days: int | None = Field(default=None, ge=1)


class CrmSnapshotSpec(_Spec):
    """``crm_snapshot:``: incremental CRM reads through a snapshot in the state store."""

    enabled: bool = True
    full_refresh_hours: float = Field(default=24, gt=0)
    skew_seconds: int = Field(default=300, ge=0)


def _host_entry(value: str) -> str:
    from pls_sync.domains import host_list_entry

    return host_list_entry(value)


HostEntry = Annotated[Name, AfterValidator(_host_entry)]


class MatchingSpec(_Spec):
    """``matching:``: hosts where the path, not the host, names the company (a platform) and
    shared-hosting suffixes where each subdomain has another owner, added to the built-in
    lists. Neither ever makes a CRM match or a product account."""

    platform_hosts: list[HostEntry] = Field(default_factory=list)
    shared_hosting: list[HostEntry] = Field(default_factory=list)


class ReportSpec(_Spec):
    """``report:``: the HTML page ``pls-sync report`` writes, also after each run if asked."""

    after_run: bool = False
    path: Name = ".pls-sync/report.html"


class LabelsSpec(_Spec):
    """``labels:``: which accounts converted, for ``pls-sync calibrate``."""

    source: Literal["warehouse", "file", "salesforce", "hubspot"]
    table: Name | None = None
    path: Name | None = None
    domain_column: Name = "domain"
    converted_column: Name | None = "converted"
    converted_at_column: Name | None = "converted_at"
    won_stages: list[Name] | None = None


class JobSpec(_Spec):
    """One ``schedule.jobs`` item."""

    name: Name
    cron: Name
    grace_seconds: int = Field(default=3600, ge=0)
    destinations: list[Literal["salesforce", "hubspot"]] = Field(default_factory=list)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        # Whether an expression is valid does not depend on the zone it is read in.
        try:
            parse_cron(value)
        except CronError as exc:
            raise ValueError(f"invalid cron expression {value!r}: {exc}") from None
        return value


class ScheduleSpec(_Spec):
    """``schedule:``: the time zone and at least one job."""

    timezone: Name = "UTC"
    jobs: list[JobSpec]

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name, e.g. Europe/Paris)"
            ) from None
        return value

    @field_validator("jobs")
    @classmethod
    def _some_jobs(cls, value: list[JobSpec]) -> list[JobSpec]:
        if not value:
            raise ValueError("a schedule needs at least one job")
        return value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class LoggingSpec(_Spec):
    """``logging:``."""

    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = "INFO"
    format: Literal["auto", "json", "console"] = "auto"


def _default_schedule() -> ScheduleSpec:
    return ScheduleSpec(jobs=[JobSpec(name="full_sync", cron="0 */4 * * *")])


class MainSpec(_Spec):
    """The main file, ``config/pls_sync.yaml``."""

    warehouse: WarehouseSpec
    account_level: Literal["company", "workspace"] = "company"
    scoring: Name
    destinations: DestinationsSpec
    state: StateSpec = Field(default_factory=StateSpec)
    plans_dir: Name = ".pls-sync/plans"
    api_budget: ApiBudgetSpec = Field(default_factory=ApiBudgetSpec)
    crm_snapshot: CrmSnapshotSpec = Field(default_factory=CrmSnapshotSpec)
    matching: MatchingSpec = Field(default_factory=MatchingSpec)
    labels: LabelsSpec | None = None
    report: ReportSpec = Field(default_factory=ReportSpec)
    channels: Name | None = None
    schedule: ScheduleSpec = Field(default_factory=_default_schedule)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)


class RatioSpec(_Spec):
    """A ``ratios:`` entry."""

    numerator: Name
    denominator: Name
    min_denominator: float = Field(default=1.0, gt=0)


CurvePoint = Annotated[list[float], Field(min_length=2, max_length=2)]


def _valid_curve(curve: list[list[float]]) -> list[list[float]]:
    """At least two [x, points] pairs, x strictly ascending, points non-decreasing in 0..100."""
    if len(curve) < 2:
        raise ValueError("a curve needs at least 2 [x, points] pairs")
    for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
        if not x1 > x0:
            raise ValueError(f"curve x values must be strictly ascending ({x0:g} then {x1:g})")
        if y1 < y0:
            raise ValueError(f"curve points must not decrease ({y0:g} then {y1:g})")
    for x, y in curve:
        if not (math.isfinite(x) and 0 <= y <= 100):
            raise ValueError(f"curve points must lie in 0..100 with finite x ({x:g}, {y:g})")
    return curve


Curve = Annotated[list[CurvePoint], AfterValidator(_valid_curve)]


class ComponentSpec(_Spec):
    """A ``components:`` entry: weight, metrics and the normalisation curve."""

    weight: Fraction
    metrics: list[Name] = Field(min_length=1)
    curve: Curve
    label: str = ""
    discount_young: bool = False


class RuleSpec(_Spec):
    """A condition ``{metric, op, value}`` or a group ``{all: [...]}`` / ``{any: [...]}``."""

    metric: Name | None = None
    op: str | None = None
    value: float | None = None
    all: list[RuleSpec] | None = None
    any: list[RuleSpec] | None = None

    @field_validator("op")
    @classmethod
    def _known_op(cls, value: str | None) -> str | None:
        if value is not None and value not in OPERATORS:
            raise ValueError(f"unknown operator {value!r}; use one of {' '.join(OPERATORS)}")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> RuleSpec:
        condition = (self.metric, self.op, self.value)
        groups = [group for group in (self.all, self.any) if group is not None]
        if groups:
            if any(part is not None for part in condition) or len(groups) > 1:
                raise ValueError("a rule is {metric, op, value}, {all: [...]} or {any: [...]}")
            if not groups[0]:
                raise ValueError("an all/any group needs at least one rule")
        elif any(part is None for part in condition):
            missing = [
                n for n, v in zip(("metric", "op", "value"), condition, strict=True) if v is None
            ]
            raise ValueError(
                f"a condition needs metric, op and value (missing {', '.join(missing)})"
            )
        return self


class SignalSpec(_Spec):
    """A ``signals:`` item."""

    name: Name
    when: RuleSpec
    points: float
    label: str = ""


class GuardsSpec(_Spec):
    """``guards:``: young accounts never enter the guarded tiers."""

    min_account_age_days: int = Field(default=14, ge=0)
    guarded_tiers: list[Name] | None = None


class FitSpec(_Spec):
    """``fit:``: segments by company size (employees), each from its lower bound."""

    segments: dict[Name, Annotated[float, Field(ge=0)]]
    unknown: Name = "unknown"

    @field_validator("segments")
    @classmethod
    def _from_zero(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("fit needs at least one segment")
        if 0 not in value.values():
            raise ValueError("no segment starts at 0: every company size needs a segment")
        if len(set(value.values())) != len(value):
            raise ValueError("two segments start at the same size")
        return value


class ScoringSpec(_Spec):
    """The scoring file, ``config/scoring.yaml``."""

    ratios: dict[Name, RatioSpec] = Field(default_factory=dict)
    sums: dict[Name, Annotated[dict[Name, Curve], Field(min_length=1)]] = Field(
        default_factory=dict
    )
    components: dict[Name, ComponentSpec]
    signals: list[SignalSpec] = Field(default_factory=list)
    tiers: dict[Name, Percent]
    hysteresis: float = Field(default=5.0, ge=0)
    saturate_above: float | None = Field(default=None, ge=0, lt=100)
    qualified_tiers: list[Name] | None = None
    guards: GuardsSpec = Field(default_factory=GuardsSpec)
    fit: FitSpec | None = None

    @field_validator("components")
    @classmethod
    def _some_components(cls, value: dict[str, ComponentSpec]) -> dict[str, ComponentSpec]:
        if not value:
            raise ValueError("a scoring model needs at least one component")
        return value

    @field_validator("tiers")
    @classmethod
    def _some_tiers(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("a scoring model needs at least one tier")
        return value


Category = Literal[
    "legal_page_view",
    "pricing_page_view",
    "admin_change",
    "core_feature",
    "enterprise_feature",
    "ignored",
]


class TaxonomySpec(_Spec):
    """The event taxonomy file, ``config/events.yaml``."""

    categories: dict[Category, list[Name]]


def _field_shorthand(value: Any) -> Any:
    if isinstance(value, str):
        return {"source": value}
    if not isinstance(value, dict):
        raise ValueError(
            "a field maps to a source name or to {source, null, join, max_length, write}"
        )
    return value


class FieldSpec(_Spec):
    """A ``fields:`` value in its long form."""

    source: Name
    null: str = "skip"
    join: str = "; "
    max_length: int | None = Field(default=None, ge=1)
    write: str = "always"

    _null = field_validator("null")(_check_member(NULL_POLICIES, "null policy"))
    _write = field_validator("write")(_check_member(WRITE_POLICIES, "write policy"))


class MatchSpec(_Spec):
    """``match:`` in a mapping."""

    domain_fields: list[Name] = Field(min_length=1)
    on_multiple: str = "most_recently_modified"

    _on_multiple = field_validator("on_multiple")(_check_member(ON_MULTIPLE_RULES, "rule"))


class FirmographicsSpec(_Spec):
    """``firmographics:`` of a mapping: CRM fields read (never written) for the fit segment."""

    employees: Name | None = None


class MappingSpec(_Spec):
    """A mapping file, ``mappings/<destination>.yaml``."""

    object: Name
    match: MatchSpec
    fields: dict[Name, Annotated[FieldSpec, BeforeValidator(_field_shorthand)]]
    firmographics: FirmographicsSpec = Field(default_factory=FirmographicsSpec)

    @field_validator("fields")
    @classmethod
    def _some_fields(cls, value: dict[str, FieldSpec]) -> dict[str, FieldSpec]:
        if not value:
            raise ValueError("a mapping needs at least one field")
        return value


# --------------------------------------------------------------------------------------------
# From pydantic errors to issues

_SpecT = TypeVar("_SpecT", bound=_Spec)

_MESSAGES = {
    "missing": "required key is missing",
    "model_type": "expected a mapping of keys",
    "dict_type": "expected a mapping of keys",
    "list_type": "expected a list",
}
_PREFIXES = ("Value error, ", "Assertion failed, ")


def _unwrap(annotation: Any) -> Any:
    """``X`` from ``Annotated[X, ...]`` and ``X | None``."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def _keys_at(spec: type[_Spec], loc: Iterable[str | int]) -> list[str] | None:
    """The keys the model allows at ``loc``, for suggestions on an unknown key."""
    annotation: Any = spec
    for part in loc:
        annotation = _unwrap(annotation)
        origin = typing.get_origin(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found = next(
                (
                    info.annotation
                    for name, info in annotation.model_fields.items()
                    if (info.alias or name) == part
                ),
                None,
            )
            if found is None:
                return None
            annotation = found
        elif origin is list and isinstance(part, int):
            annotation = typing.get_args(annotation)[0]
        elif origin is dict:
            annotation = typing.get_args(annotation)[1]
        else:
            return None
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [info.alias or name for name, info in annotation.model_fields.items()]
    return None


def _data_path(data: Any, loc: tuple[str | int, ...]) -> KeyPath:
    """The path in the data that pydantic's ``loc`` points at.

    A location may hold steps that are not in the data (``[key]`` markers, union member
    names): they are skipped, except a last step that is missing (a missing key).
    """
    path: list[str | int] = []
    node = data
    for index, part in enumerate(loc):
        if part == "[key]":
            continue
        present = (isinstance(node, dict) and isinstance(part, str) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if present:
            node = node[part]
        elif index != len(loc) - 1:
            continue
        path.append(part)
    return tuple(path)


def _message(spec: type[_Spec], error: Any, path: KeyPath) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _keys_at(spec, path[:-1]) or []
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1)
        if close:
            return f"unknown key; did you mean {close[0]!r}?"
        return f"unknown key; allowed: {', '.join(allowed)}" if allowed else "unknown key"
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    message = str(error["msg"])
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    return message


@dataclass(slots=True)
class _Parts:
    """The fields of a file that validated on their own, for the checks across keys.

    A dict or list field keeps the items that validated (a list keeps None in place of a bad
    item, so indexes still point into the file); ``incomplete`` names the fields that lost some
    items. A field that is missing or invalid as a whole is absent.
    """

    values: dict[str, Any]
    incomplete: set[str] = field(default_factory=set)

    def get(self, name: str, default: Any = None) -> Any:
        """The validated value of field ``name``, or ``default``."""
        return self.values.get(name, default)

    def complete(self, name: str) -> bool:
        """Whether field ``name`` validated with all its items."""
        return name in self.values and name not in self.incomplete


_adapters: dict[tuple[type[_Spec], str, bool], TypeAdapter[Any]] = {}


def _adapter(spec: type[_Spec], name: str, item: bool) -> TypeAdapter[Any]:
    """A validator for field ``name`` of ``spec`` (or for one of its items)."""
    key = (spec, name, item)
    adapter = _adapters.get(key)
    if adapter is None:
        info = spec.model_fields[name]
        if item:
            annotation = typing.get_args(info.annotation)[-1]
        elif info.metadata:
            annotation = Annotated[(info.annotation, *info.metadata)]
        else:
            annotation = info.annotation
        adapter = _adapters[key] = TypeAdapter(annotation)
    return adapter


def _partial(spec: type[_Spec], data: dict[str, Any]) -> _Parts:
    """What of ``data`` validates field by field (dict and list fields item by item)."""
    parts = _Parts({})
    for name, info in spec.model_fields.items():
        key = info.alias or name
        if key not in data:
            if not info.is_required():
                parts.values[name] = info.get_default(call_default_factory=True)
            continue
        value = data[key]
        origin = typing.get_origin(info.annotation)
        if origin in (dict, list) and isinstance(value, origin):
            adapter = _adapter(spec, name, item=True)
            items: list[tuple[Any, Any]] = []
            for index, raw in value.items() if isinstance(value, dict) else enumerate(value):
                try:
                    items.append((index, adapter.validate_python(raw)))
                except ValidationError:
                    parts.incomplete.add(name)
                    if isinstance(value, list):
                        items.append((index, None))
            parts.values[name] = dict(items) if isinstance(value, dict) else [v for _, v in items]
            continue
        with contextlib.suppress(ValidationError):
            parts.values[name] = _adapter(spec, name, item=False).validate_python(value)
    return parts


def _validate(
    spec: type[_SpecT], document: Document, issues: list[ConfigIssue]
) -> tuple[_SpecT | None, _Parts]:
    """``document`` validated as ``spec`` (None when invalid), and the parts that validated.

    Problems go to ``issues`` with their lines; the parts let the checks across keys run on
    whatever is valid, so one run reports everything.
    """
    if not isinstance(document.data, dict):
        empty = document.data is None
        issues.append(
            document.issue((), "the file is empty" if empty else "expected a mapping of keys")
        )
        return None, _Parts({})
    try:
        model = spec.model_validate(document.data)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_context=False, include_input=False):
            path = _data_path(document.data, tuple(error["loc"]))
            if document.is_failed(path):
                continue  # its interpolation failed and is reported already
            issues.append(document.issue(path, _message(spec, error, path)))
        return None, _partial(spec, document.data)
    return model, _Parts({name: getattr(model, name) for name in spec.model_fields})


# --------------------------------------------------------------------------------------------
# Rules across keys and files


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unknown_metric(name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    hint = _suggest(name, known) or f"; known metrics: {', '.join(known)}"
    return f"unknown metric {name!r}{hint}"


def _resolve(base: Path, value: str) -> Path:
    """``value`` relative to the directory of the file ``base`` that names it."""
    target = Path(value).expanduser()
    return Path(os.path.normpath(target if target.is_absolute() else base.parent / target))


def _keys(data: Any, *path: str) -> list[str]:
    """The keys of the mapping at ``path`` in raw data (empty when it is not a mapping)."""
    value = _raw(data, *path)
    return list(value) if isinstance(value, dict) else []


def _raw(data: Any, *keys: str) -> Any:
    """``data[k1][k2]...`` when every step is a mapping holding the key, else None."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


@dataclass(slots=True)
class _Context:
    """What the checks across files need to know, whatever else failed.

    ``metrics`` is None when a custom SQL model computes them: they are then unknown here.
    ``components`` is None when the scoring file could not be read.
    """

    metrics: frozenset[str] | None = frozenset(BUILTIN_METRICS)
    components: frozenset[str] | None = None


def _check_rule(
    document: Document,
    rule: RuleSpec,
    path: KeyPath,
    known: frozenset[str] | None,
    issues: list[ConfigIssue],
) -> None:
    if rule.metric is not None and known is not None and rule.metric not in known:
        issues.append(document.issue(path + ("metric",), _unknown_metric(rule.metric, known)))
    for mode, group in (("all", rule.all), ("any", rule.any)):
        for index, inner in enumerate(group or ()):
            _check_rule(document, inner, path + (mode, index), known, issues)


def _check_label(
    document: Document,
    label: str,
    path: KeyPath,
    known: frozenset[str] | None,
    issues: list[ConfigIssue],
) -> None:
    if known is None:
        return
    for name in sorted(label_names(label) - known):
        issues.append(document.issue(path, f"label refers to an {_unknown_metric(name, known)}"))


def _check_ratios(
    document: Document, parts: _Parts, builtin: bool, issues: list[ConfigIssue]
) -> None:
    """Ratio and sum names are new; what they read are metrics or earlier ratios and sums."""
    if not builtin:
        return
    known = set(BUILTIN_METRICS)
    ratios: dict[str, RatioSpec] = parts.get("ratios", {})
    for name in _keys(document.data, "ratios"):
        if name in BUILTIN_METRICS:
            issues.append(
                document.issue(("ratios", name), "a ratio cannot reuse a built-in metric name")
            )
        ratio = ratios.get(name)
        for part in ("numerator", "denominator"):
            metric = getattr(ratio, part, None)
            if metric is not None and metric not in known:
                issues.append(
                    document.issue(("ratios", name, part), _unknown_metric(metric, known))
                )
        known.add(name)
    for name in _keys(document.data, "sums"):
        if name in known:
            issues.append(
                document.issue(("sums", name), "a sum cannot reuse the name of a metric or a ratio")
            )
        for metric in _keys(document.data, "sums", name):
            if metric not in known:
                issues.append(
                    document.issue(("sums", name, metric), _unknown_metric(metric, known))
                )
        known.add(name)


def _check_tiers(document: Document, parts: _Parts, issues: list[ConfigIssue]) -> None:
    """One tier at 0, distinct bounds, and known qualified/guarded tiers."""
    tiers: dict[str, float] = parts.get("tiers", {})
    bounds: dict[float, str] = {}
    for name, bound in tiers.items():
        if bound in bounds:
            issues.append(
                document.issue(
                    ("tiers", name), f"tier {bounds[bound]!r} has the same bound {bound:g}"
                )
            )
        bounds.setdefault(bound, name)
    if parts.complete("tiers") and tiers and 0 not in bounds:
        issues.append(
            document.issue(
                ("tiers",), "no tier starts at 0: every score needs a tier (e.g. self_serve: 0)"
            )
        )
    names = _keys(document.data, "tiers")
    lowest = min(tiers, key=lambda tier: tiers[tier]) if parts.complete("tiers") and tiers else None
    guards: GuardsSpec | None = parts.get("guards")
    for key, listed in (
        (("qualified_tiers",), parts.get("qualified_tiers")),
        (("guards", "guarded_tiers"), guards.guarded_tiers if guards is not None else None),
    ):
        for index, tier in enumerate(listed or ()):
            if tier is None or not names:
                continue
            if tier not in names:
                issues.append(
                    document.issue(key + (index,), f"unknown tier {tier!r}{_suggest(tier, names)}")
                )
            elif key[-1] == "guarded_tiers" and tier == lowest:
                issues.append(
                    document.issue(
                        key + (index,),
                        "the lowest tier cannot be guarded: young accounts need a tier to fall to",
                    )
                )


def _check_scoring(
    document: Document, parts: _Parts, context: _Context, issues: list[ConfigIssue]
) -> None:
    """Weights, curves' metrics, conditions, labels, names and tiers across the scoring file."""
    _check_ratios(document, parts, context.metrics is not None, issues)
    metrics = context.metrics

    components: dict[str, ComponentSpec] = parts.get("components", {})
    if parts.complete("components") and components:
        total = sum(component.weight for component in components.values())
        if abs(total - 1.0) > _WEIGHT_TOLERANCE:
            issues.append(
                document.issue(("components",), f"component weights sum to {total:g}, not 1")
            )
    for name, component in components.items():
        for index, metric in enumerate(component.metrics):
            if metrics is not None and metric not in metrics:
                issues.append(
                    document.issue(
                        ("components", name, "metrics", index), _unknown_metric(metric, metrics)
                    )
                )
        label_known = metrics | {"value"} if metrics is not None else None
        _check_label(document, component.label, ("components", name, "label"), label_known, issues)

    signals: list[SignalSpec | None] = parts.get("signals", [])
    seen: dict[str, int] = {}
    for index, signal in enumerate(signals):
        if signal is None:
            continue
        if signal.name in seen:
            issues.append(
                document.issue(
                    ("signals", index, "name"),
                    f"duplicate signal name (also signals[{seen[signal.name]}])",
                )
            )
        seen.setdefault(signal.name, index)
        _check_rule(document, signal.when, ("signals", index, "when"), metrics, issues)
        _check_label(document, signal.label, ("signals", index, "label"), metrics, issues)

    _check_tiers(document, parts, issues)
    _check_tier_reach(document, parts, issues)


# The playbook's tiers, highest first: when a model names them, their bounds keep this order.
_PLAYBOOK_TIERS = ("sales", "success", "self_serve")


def _check_tier_reach(document: Document, parts: _Parts, issues: list[ConfigIssue]) -> None:
    """Tiers in the playbook's order, and none above the highest score the model can give."""
    tiers: dict[str, float] = parts.get("tiers", {})
    named = [(name, tiers[name]) for name in _PLAYBOOK_TIERS if name in tiers]
    for (upper, upper_bound), (lower, lower_bound) in zip(named, named[1:], strict=False):
        if lower_bound > upper_bound:
            issues.append(
                document.issue(
                    ("tiers", lower),
                    f"tier {lower!r} ({lower_bound:g}) is above {upper!r} ({upper_bound:g}): "
                    "the tiers go sales, then success, then self_serve, highest first",
                )
            )
    components: dict[str, ComponentSpec] = parts.get("components", {})
    signals: list[SignalSpec | None] = parts.get("signals", [])
    if not (parts.complete("components") and parts.complete("signals") and components):
        return
    # Each component gives at most its curve's last (highest) points times its weight; every
    # signal that can fire adds its points. Scores saturate above ``saturate_above`` (or are
    # clamped to 100) and are rounded half up.
    from_components = sum(c.weight * c.curve[-1][1] for c in components.values())
    from_signals = sum(max(0.0, s.points) for s in signals if s is not None)
    above = parts.get("saturate_above")
    best = int(round(saturate(from_components + from_signals, above), 9) + 0.5)
    for name, bound in tiers.items():
        if bound > best:
            issues.append(
                document.issue(
                    ("tiers", name),
                    f"tier {name!r} starts at {bound:g} but the model scores at most {best} "
                    f"(components {from_components:g} + signals {from_signals:g}): "
                    "no account can reach it",
                )
            )


def _check_taxonomy(document: Document, parts: _Parts, issues: list[ConfigIssue]) -> None:
    """An event name belongs to one category only."""
    first: dict[str, tuple[str, int | None]] = {}
    categories: dict[str, list[str]] = parts.get("categories", {})
    for category, events in categories.items():
        for index, event in enumerate(events):
            path: KeyPath = ("categories", category, index)
            if event not in first:
                first[event] = (category, document.line(path))
                continue
            where, line = first[event]
            issues.append(
                document.issue(
                    path,
                    f"event {event!r} is already listed under {where}"
                    + (f" (line {line})" if line else "")
                    + ": an event belongs to one category only",
                )
            )


def _check_mapping(
    document: Document,
    destination: str,
    parts: _Parts,
    context: _Context,
    issues: list[ConfigIssue],
) -> None:
    """Targets that are never written, and sources that name nothing."""
    forbidden = FORBIDDEN_TARGETS.get(destination, frozenset())
    match: MatchSpec | None = parts.get("match")
    domain_fields = {name.lower() for name in match.domain_fields} if match is not None else set()
    specs: dict[str, FieldSpec] = parts.get("fields", {})
    seen: dict[str, str] = {}
    if match is not None:
        for index, name in enumerate(match.domain_fields):
            bad = api_name_problem(destination, name)
            if bad:
                issues.append(document.issue(("match", "domain_fields", index), bad))
    for target in _keys(document.data, "fields"):
        path: KeyPath = ("fields", target)
        lowered = target.lower()
        bad = api_name_problem(destination, target)
        if bad:
            issues.append(document.issue(path, bad))
        elif lowered in forbidden:
            issues.append(
                document.issue(
                    path, f"{target} is an identity/ownership field and is never written"
                )
            )
        elif lowered in domain_fields:
            issues.append(
                document.issue(path, f"{target} is a match domain field and is never written")
            )
        if lowered in seen:
            issues.append(
                document.issue(path, f"{target} is mapped twice (also as {seen[lowered]})")
            )
        seen.setdefault(lowered, target)
        spec = specs.get(target)
        if spec is not None:
            source_path = path + ("source",) if document.has(path + ("source",)) else path
            problem = _source_problem(spec.source, context)
            if problem:
                issues.append(document.issue(source_path, problem))
    firmographics: FirmographicsSpec | None = parts.get("firmographics")
    for name, target in (firmographics.model_dump() if firmographics else {}).items():
        if target is None:
            continue
        bad = api_name_problem(destination, target)
        if bad:
            issues.append(document.issue(("firmographics", name), bad))
        elif target.lower() in seen:
            issues.append(
                document.issue(
                    ("firmographics", name),
                    f"{target} is written by this mapping: a firmographic field is only read",
                )
            )


# Salesforce API names: a letter, then letters, digits and single underscores, not ending in
# one; a custom field ends in __c (__pc on person accounts; a namespace may lead: ns__Name__c).
_SALESFORCE_NAME = re.compile(
    r"^(?:[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*__)?[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*(?:__[A-Za-z]+)?$"
)
# HubSpot internal property names: lower-case letters, digits and underscores, from a letter.
_HUBSPOT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def api_name_problem(destination: str, name: str) -> str | None:
    """Why ``name`` cannot be a field of ``destination`` (an API name, not a label), or None."""
    if destination == "salesforce" and not _SALESFORCE_NAME.match(name):
        return (
            f"{name!r} is not a Salesforce API name (letters, digits and single underscores, "
            "from a letter; custom fields end in __c, e.g. PQA_Score__c)"
        )
    if destination == "hubspot" and not _HUBSPOT_NAME.match(name):
        return (
            f"{name!r} is not a HubSpot property's internal name (lower-case letters, digits "
            "and underscores, from a letter, e.g. pqa_score)"
        )
    return None


def _source_problem(source: str, context: _Context) -> str | None:
    """Why ``source`` names nothing the planner produces, or None when it is fine."""
    if not is_known_source(source):
        return f"unknown source {source!r}{_suggest(source, SOURCES)}"
    if source.startswith("metrics.") and context.metrics is not None:
        metric = source.removeprefix("metrics.")
        if metric not in context.metrics:
            return _unknown_metric(metric, context.metrics)
    if source.startswith("components.") and context.components is not None:
        component = source.removeprefix("components.")
        if component not in context.components:
            return f"unknown component {component!r}{_suggest(component, context.components)}"
    return None


def _check_schedule(document: Document, parts: _Parts, issues: list[ConfigIssue]) -> None:
    """Job names are unique."""
    schedule: ScheduleSpec | None = parts.get("schedule")
    names: dict[str, int] = {}
    for index, job in enumerate(schedule.jobs if schedule is not None else ()):
        if job.name in names:
            issues.append(
                document.issue(
                    ("schedule", "jobs", index, "name"),
                    f"duplicate job name (also jobs[{names[job.name]}])",
                )
            )
        names.setdefault(job.name, index)


def _check_labels(document: Document, parts: _Parts, issues: list[ConfigIssue]) -> None:
    """A label source names where it reads from and at least one outcome column."""
    labels: LabelsSpec | None = parts.get("labels")
    if labels is None:
        return
    if labels.source == "warehouse" and not labels.table:
        issues.append(document.issue(("labels", "source"), "source: warehouse needs a table"))
    if labels.source == "file" and not labels.path:
        issues.append(document.issue(("labels", "source"), "source: file needs a path (a CSV)"))
    if labels.won_stages is not None and labels.source != "hubspot":
        issues.append(
            document.issue(("labels", "won_stages"), "won_stages applies to source: hubspot only")
        )
    destinations = parts.get("destinations")
    if (
        labels.source in ("salesforce", "hubspot")
        and destinations is not None
        and getattr(destinations, labels.source, None) is None
    ):
        issues.append(
            document.issue(
                ("labels", "source"),
                f"source: {labels.source} reads the CRM of destinations.{labels.source}, "
                "which is not configured",
            )
        )
    if (
        labels.source in ("warehouse", "file")
        and labels.converted_column is None
        and labels.converted_at_column is None
    ):
        issues.append(
            document.issue(
                ("labels", "converted_column"),
                "name converted_column or converted_at_column: the labels need one outcome",
            )
        )


# --------------------------------------------------------------------------------------------
# Conversion to the domain types


def _rule(spec: RuleSpec) -> Rule:
    if spec.all is not None:
        return ConditionGroup("all", tuple(_rule(inner) for inner in spec.all))
    if spec.any is not None:
        return ConditionGroup("any", tuple(_rule(inner) for inner in spec.any))
    assert spec.metric is not None and spec.op is not None and spec.value is not None
    return Condition(spec.metric, spec.op, float(spec.value))


def _scoring_model(spec: ScoringSpec) -> ScoringModel:
    tiers = tuple(
        Tier(name, float(bound))
        for name, bound in sorted(spec.tiers.items(), key=lambda item: -item[1])
    )
    highest = (tiers[0].name,)
    return ScoringModel(
        components=tuple(
            Component(
                name,
                float(c.weight),
                tuple(c.metrics),
                tuple((float(x), float(y)) for x, y in c.curve),
                c.label,
                discount_young=c.discount_young,
            )
            for name, c in spec.components.items()
        ),
        signals=tuple(
            Signal(s.name, _rule(s.when), float(s.points), s.label) for s in spec.signals
        ),
        tiers=tiers,
        ratios=tuple(
            Ratio(name, r.numerator, r.denominator, float(r.min_denominator))
            for name, r in spec.ratios.items()
        ),
        sums=tuple(
            MetricSum(
                name,
                tuple(
                    (metric, tuple((float(x), float(y)) for x, y in curve))
                    for metric, curve in parts.items()
                ),
            )
            for name, parts in spec.sums.items()
        ),
        hysteresis=float(spec.hysteresis),
        saturate_above=float(spec.saturate_above) if spec.saturate_above is not None else None,
        min_account_age_days=spec.guards.min_account_age_days,
        guarded_tiers=tuple(
            spec.guards.guarded_tiers if spec.guards.guarded_tiers is not None else highest
        ),
        qualified_tiers=tuple(
            spec.qualified_tiers if spec.qualified_tiers is not None else highest
        ),
    )


def _fit_model(spec: FitSpec | None) -> FitModel | None:
    if spec is None:
        return None
    segments = tuple(FitSegment(name, float(bound)) for name, bound in spec.segments.items())
    return FitModel(segments, spec.unknown)


def _mapping(destination: str, spec: MappingSpec, document: Document) -> DestinationMapping:
    return DestinationMapping(
        destination=destination,
        object=spec.object,
        match=MatchRule(tuple(spec.match.domain_fields), spec.match.on_multiple),
        fields=tuple(
            FieldMapping(target, f.source, f.null, f.join, f.max_length, f.write)
            for target, f in spec.fields.items()
        ),
        source_file=document.file,
        lines=dict(document.lines),
        firmographics={
            name: target
            for name, target in spec.firmographics.model_dump().items()
            if target is not None
        },
    )


def _empty_mapping(destination: str, path: Path) -> DestinationMapping:
    return DestinationMapping(destination, "", MatchRule(()), (), str(path))


def _channel_settings(
    spec: ChannelsSpec,
    document: Document,
    tiers: tuple[str, ...],
    issues: list[ConfigIssue],
    fit: FitModel | None = None,
) -> ChannelSettings:
    """The channels file as settings; rules across keys are checked here, with their lines."""
    persona = PersonaModel(
        rules=tuple(
            PersonaRule(
                p.name,
                p.points,
                seniority_in=tuple(p.seniority_in),
                title_patterns=tuple(p.title_patterns),
                department_in=tuple(p.department_in),
                min_company_size=p.min_company_size,
                label=p.label,
            )
            for p in spec.buyers.personas
        ),
        behaviour_points=BehaviourPoints(
            spec.buyers.behaviour_points.legal_page_view,
            spec.buyers.behaviour_points.became_admin,
            spec.buyers.behaviour_points.pricing_page_view,
        ),
        min_buyer_score=spec.buyers.min_buyer_score,
        max_buyers=spec.buyers.max_buyers,
    )
    for problem in persona_model_problems(persona):
        issues.append(document.issue(("buyers", "personas"), problem))
    motions = tuple(
        MotionRule(tuple(m.tiers), m.buyer, m.motion, tuple(m.segments)) for m in spec.motions
    )
    if tiers:
        for problem in validate_motion_table(motions, tiers, fit.names if fit else ()):
            issues.append(document.issue(("motions",), problem))
        if spec.alerts.tier not in tiers:
            issues.append(
                document.issue(
                    ("alerts", "tier"),
                    f"unknown tier {spec.alerts.tier!r}; tiers: {', '.join(tiers)}",
                )
            )
    return ChannelSettings(
        persona=persona,
        motions=motions,
        sf_lead_statuses=tuple(spec.mql.salesforce.lead_statuses),
        sf_contact_field=spec.mql.salesforce.contact_field,
        hs_lifecycle_stage=spec.mql.hubspot.lifecycle_stage,
        hs_mql_property=spec.mql.hubspot.property,
        alerts_enabled=spec.alerts.enabled,
        alert_tier=spec.alerts.tier,
        alerts_backfill=spec.alerts.backfill,
        sf_alert_key_field=spec.alerts.salesforce_key_field,
        hs_alert_key_property=spec.alerts.hubspot_key_property,
        stale_after_days=spec.stale_after_days,
        fit=fit,
    )


# --------------------------------------------------------------------------------------------
# Loading


class _Loader:
    """One load: every file, every issue, then the settings or a ``ConfigError``."""

    def __init__(self, path: Path, env: Mapping[str, str] | None) -> None:
        self.path = path
        self.interpolator = Interpolator(env)
        self.issues: list[ConfigIssue] = []
        self.lines = ConfigLines()

    def document(self, path: Path, issues: list[ConfigIssue]) -> Document | None:
        """``path`` parsed, its problems added to ``issues``."""
        document, problems = load_document(path, self.interpolator)
        issues.extend(problems)
        if document is not None:
            self.lines.add(document)
        return document

    def load(self) -> Settings:
        """Read and check every file; the settings, or a ``ConfigError`` with every issue."""
        main_doc = self.document(self.path, self.issues)
        if main_doc is None:
            raise ConfigError(self._ordered_issues())
        main, main_parts = _validate(MainSpec, main_doc, self.issues)
        raw = main_doc.data
        _check_schedule(main_doc, main_parts, self.issues)
        _check_labels(main_doc, main_parts, self.issues)

        # The files the main file names are read even when it is invalid, so that one run
        # reports everything: their paths come from the raw data when they are strings.
        model = self._sql_model(main_doc, _raw(raw, "warehouse", "model"))
        context = _Context(metrics=frozenset(BUILTIN_METRICS) if model == "builtin" else None)

        scoring_path = self._path(_raw(raw, "scoring"))
        scoring = None
        if scoring_path is not None:
            scoring_doc = self.document(scoring_path, self.issues)
            if scoring_doc is not None:
                scoring, scoring_parts = _validate(ScoringSpec, scoring_doc, self.issues)
                derived = _keys(scoring_doc.data, "ratios") + _keys(scoring_doc.data, "sums")
                if context.metrics is not None:
                    context.metrics = context.metrics | frozenset(derived)
                if isinstance(_raw(scoring_doc.data, "components"), dict):
                    context.components = frozenset(_keys(scoring_doc.data, "components"))
                _check_scoring(scoring_doc, scoring_parts, context, self.issues)

        taxonomy_path = self._path(_raw(raw, "warehouse", "event_taxonomy"))
        taxonomy = None
        if taxonomy_path is not None:
            taxonomy_doc = self.document(taxonomy_path, self.issues)
            if taxonomy_doc is not None:
                taxonomy, taxonomy_parts = _validate(TaxonomySpec, taxonomy_doc, self.issues)
                _check_taxonomy(taxonomy_doc, taxonomy_parts, self.issues)

        mappings = self._mappings(main, raw, context)

        fit = _fit_model(scoring.fit) if scoring is not None else None
        channels = ChannelSettings(fit=fit)
        channels_path = self._path(_raw(raw, "channels"))
        if channels_path is not None:
            channels_doc = self.document(channels_path, self.issues)
            if channels_doc is not None:
                spec, _parts = _validate(ChannelsSpec, channels_doc, self.issues)
                if spec is not None:
                    tiers = tuple(scoring.tiers) if scoring is not None else ()
                    channels = _channel_settings(spec, channels_doc, tiers, self.issues, fit)

        if self.issues or main is None or scoring is None or model is None:
            # Every way of getting here without a valid part has recorded an issue.
            raise ConfigError(self._ordered_issues())
        settings = self._settings(
            main, model, scoring, scoring_path, taxonomy, taxonomy_path, mappings
        )
        return dataclasses.replace(
            settings, channels=channels, channels_path=channels_path, lines=self.lines
        )

    def _path(self, value: Any) -> Path | None:
        """A path the main file names, resolved against it; None when not a string."""
        return _resolve(self.path, value) if isinstance(value, str) and value else None

    def _ordered_issues(self) -> list[ConfigIssue]:
        """Issues redacted and grouped by file (the main file first), by line within a file."""
        secrets = tuple(self.interpolator.secrets)
        files = {str(self.path): 0}
        for issue in self.issues:
            files.setdefault(issue.file, len(files))
        ordered = sorted(self.issues, key=lambda i: (files[i.file], i.line or 0))
        return [ConfigIssue(i.file, i.line, i.key, redact(i.message, secrets)) for i in ordered]

    def _sql_model(self, document: Document, value: Any) -> Literal["builtin"] | Path | None:
        """``"builtin"``, the custom SQL file, or None when it names no such file."""
        if not isinstance(value, str) or value == "builtin":
            return "builtin"
        path = _resolve(self.path, value)
        key: KeyPath = ("warehouse", "model")
        if path.suffix.lower() != ".sql":
            self.issues.append(document.issue(key, "expected 'builtin' or the path of a .sql file"))
        elif not path.is_file():
            self.issues.append(document.issue(key, f"SQL model file not found: {path}"))
        else:
            return path
        return None

    def _mappings(
        self, main: MainSpec | None, raw: Any, context: _Context
    ) -> dict[str, tuple[bool, Path, DestinationMapping]]:
        """Every configured destination's mapping; only enabled ones report their problems."""
        result: dict[str, tuple[bool, Path, DestinationMapping]] = {}
        for name in DESTINATIONS:
            section = _raw(raw, "destinations", name)
            path = self._path(_raw(section, "mapping"))
            if path is None:
                continue
            if main is not None:
                enabled = bool(getattr(main.destinations, name).enabled)
            else:
                # An invalid `enabled` is reported already: check the mapping as if enabled.
                enabled = _raw(section, "enabled") is not False
            issues: list[ConfigIssue] = self.issues if enabled else []
            document = self.document(path, issues)
            spec = None
            if document is not None:
                spec, parts = _validate(MappingSpec, document, issues)
                _check_mapping(document, name, parts, context, issues)
            if spec is None or issues is not self.issues and issues:
                result[name] = (enabled, path, _empty_mapping(name, path))
            else:
                assert document is not None
                result[name] = (enabled, path, _mapping(name, spec, document))
        return result

    def _settings(
        self,
        main: MainSpec,
        model: Literal["builtin"] | Path,
        scoring: ScoringSpec,
        scoring_path: Path | None,
        taxonomy: TaxonomySpec | None,
        taxonomy_path: Path | None,
        mappings: dict[str, tuple[bool, Path, DestinationMapping]],
    ) -> Settings:
        categories: dict[str, tuple[str, ...]] = {category: () for category in TAXONOMY_CATEGORIES}
        if taxonomy is not None:
            categories.update({c: tuple(events) for c, events in taxonomy.categories.items()})
        wh = main.warehouse
        destinations: dict[str, DestinationSettings] = {}
        for name, (enabled, path, mapping) in mappings.items():
            section = getattr(main.destinations, name)
            destinations[name] = DestinationSettings(
                name=name,
                enabled=enabled,
                mapping=mapping,
                mapping_path=path,
                api_version=getattr(section, "api_version", "59.0"),
                batch_size=section.batch_size,
                bulk_threshold=getattr(section, "bulk_threshold", 2000),
                requests_per_10s=getattr(section, "requests_per_10s", 100),
                export_threshold=getattr(section, "export_threshold", None),
            )
        return Settings(
            config_path=self.path,
            warehouse=WarehouseSettings(
                url=wh.url,
                model=model,
                schema=wh.schema_,
                users_table=wh.users_table,
                events_table=wh.events_table,
                chunk_size=wh.chunk_size,
                duckdb_memory_limit=wh.duckdb_memory_limit,
                taxonomy=categories,
                taxonomy_path=taxonomy_path,
            ),
            account_level=main.account_level,
            scoring=_scoring_model(scoring),
            destinations=destinations,
            state_url=main.state.url,
            plans_dir=Path(main.plans_dir),
            api_budget_share=main.api_budget.max_share_of_daily,
            history_days=main.state.history_days,
            schedule=ScheduleSettings(
                timezone=main.schedule.timezone,
                jobs=tuple(
                    JobSettings(job.name, job.cron, job.grace_seconds, tuple(job.destinations))
                    for job in main.schedule.jobs
                ),
            ),
            logging=LoggingSettings(main.logging.level, main.logging.format),
            scoring_path=scoring_path,
            crm_snapshot=CrmSnapshotSettings(
                main.crm_snapshot.enabled,
                main.crm_snapshot.full_refresh_hours,
                main.crm_snapshot.skew_seconds,
            ),
            matching=MatchingSettings(
                tuple(main.matching.platform_hosts), tuple(main.matching.shared_hosting)
            ),
            labels=self._labels(main.labels),
            report_after_run=Path(main.report.path) if main.report.after_run else None,
        )

    def _labels(self, spec: LabelsSpec | None) -> LabelSettings | None:
        """The label source, its CSV path resolved against the main file."""
        if spec is None:
            return None
        return LabelSettings(
            spec.source,
            table=spec.table,
            path=self._path(spec.path),
            domain_column=spec.domain_column,
            converted_column=spec.converted_column,
            converted_at_column=spec.converted_at_column,
            config_file=self.path.name,
            won_stages=tuple(spec.won_stages) if spec.won_stages is not None else None,
        )


def load_settings(
    path: str | Path = DEFAULT_CONFIG_PATH, env: Mapping[str, str] | None = None
) -> Settings:
    """Load and validate the main config file and every file it names.

    ``env`` replaces ``os.environ`` for ``${VAR}`` interpolation (the secrets folder,
    ``/run/secrets`` or ``$PLS_SYNC_SECRETS_DIR``, is the fallback). Raises ``ConfigError``
    with every issue found in every file; messages never hold secret values.
    """
    return _Loader(Path(path), env).load()
