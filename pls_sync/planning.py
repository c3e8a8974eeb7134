"""From scored accounts to the smallest set of CRM field changes. Standard library only.

The mapping turns each matched account into desired field values; values are brought to one
canonical form per field type (numbers, text, dates, datetimes, booleans) both on the desired
side and on the CRM side, and only fields whose canonical values differ are planned. A rerun
over unchanged data therefore plans nothing, and a run cut short is repaired by the next diff.
Each planned change also carries the CRM's current values, so that a plan reads as a diff.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from pls_sync.mapping import DestinationMapping, FieldMapping
from pls_sync.matching import MatchReport
from pls_sync.models import CrmRecord, FieldSpec, FieldType, ProductAccount, RecordChange
from pls_sync.ports import AccountState
from pls_sync.scoring import AccountScore

NUMERIC_TYPES = (FieldType.NUMBER, FieldType.INTEGER)
TEXT_TYPES = (FieldType.STRING, FieldType.TEXTAREA, FieldType.PICKLIST, FieldType.MULTIPICKLIST)


@dataclass(frozen=True, slots=True)
class AccountResult:
    """Everything known about one account after scoring: the input to mapping and planning."""

    account: ProductAccount
    score: AccountScore
    state: AccountState
    previous: AccountState | None = None
    score_change: int | None = None
    lead_channel: str | None = None
    motion: str | None = None
    buyers: tuple[str, ...] = ()

    @property
    def newly_qualified(self) -> bool:
        """True when the account entered a qualified tier in this run."""
        return self.state.qualified_since is not None and (
            self.previous is None or self.previous.qualified_since is None
        )


# One getter per simple source: planning asks for every mapped field of every matched account,
# so building all of them for each question (a dict of 15) was most of the planning time.
_SIMPLE_SOURCES: dict[str, Callable[[AccountResult], Any]] = {
    "score": lambda r: r.score.score,
    "tier": lambda r: r.score.tier,
    "raw_tier": lambda r: r.score.raw_tier,
    "signals": lambda r: [signal.description for signal in r.score.signals],
    "lead_channel": lambda r: r.lead_channel,
    "motion": lambda r: r.motion,
    "qualified_since": lambda r: r.state.qualified_since,
    "tier_since": lambda r: r.state.tier_since,
    "score_change": lambda r: r.score_change,
    "previous_score": lambda r: r.previous.score if r.previous else None,
    "scored_at": lambda r: r.score.scored_at,
    "first_seen": lambda r: r.account.first_seen,
    "domain": lambda r: r.account.domain,
    "account_key": lambda r: r.account.key,
    "buyers": lambda r: list(r.buyers),
}


def source_value(source: str, result: AccountResult) -> Any:
    """The value of a mapping source (``score``, ``signals``, ``metrics.active_users_28d``...)."""
    getter = _SIMPLE_SOURCES.get(source)
    if getter is not None:
        return getter(result)
    score = result.score
    if source.startswith("metrics."):
        return score.metrics.get(source[len("metrics.") :])
    if source.startswith("components."):
        name = source[len("components.") :]
        for component in score.components:
            if component.name == name:
                return component.points
        return None
    raise KeyError(f"unknown mapping source {source!r}")


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _parse_datetime(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    if text.isdigit():  # HubSpot may answer epoch milliseconds
        return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
    cleaned = text.replace("Z", "+00:00")
    # Salesforce writes offsets without a colon: 2026-11-22T10:00:00.000+0000
    if len(cleaned) > 5 and cleaned[-5] in "+-" and cleaned[-4:].isdigit():
        cleaned = f"{cleaned[:-2]}:{cleaned[-2:]}"
    try:
        return _as_utc(datetime.fromisoformat(cleaned))
    except ValueError:
        return None


def canonical(
    value: Any, spec: FieldSpec, *, join: str = "; ", max_length: int | None = None
) -> Any:
    """Bring a value (desired or read from the CRM) to the canonical form of its field type.

    Empty text and ``None`` are both "no value". Numbers are rounded to the field's scale
    (an ``int`` for INTEGER fields and scale-0 NUMBER fields, a ``float`` otherwise), datetimes are UTC to the second, dates are ``date``, text is joined and truncated to the
    shorter of the field length and ``max_length``. Values that cannot be read as the field's
    type are kept as text so they compare unequal and get rewritten.
    """
    if value is None:
        return None
    kind = spec.type
    if isinstance(value, (list, tuple)):
        value = join.join(str(v) for v in value if v is not None and str(v) != "")
    if isinstance(value, str) and value.strip() == "" and kind not in TEXT_TYPES:
        return None
    if kind in NUMERIC_TYPES:
        return _canonical_number(value, spec)
    if kind is FieldType.DATETIME:
        if isinstance(value, datetime):
            return _as_utc(value).replace(microsecond=0)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        parsed = _parse_datetime(str(value))
        return parsed.replace(microsecond=0) if parsed else str(value)
    if kind is FieldType.DATE:
        if isinstance(value, datetime):
            return _as_utc(value).date()
        if isinstance(value, date):
            return value
        parsed = _parse_datetime(str(value))
        return parsed.date() if parsed else str(value)
    if kind is FieldType.BOOLEAN:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            return value
        return bool(value)
    if isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, datetime):
        text = _as_utc(value).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    else:
        text = str(value)
    if text == "":
        return None
    limits = [limit for limit in (spec.length, max_length) if limit]
    if limits and len(text) > min(limits):
        text = truncate(text, min(limits))
    return text


def _canonical_number(value: Any, spec: FieldSpec) -> int | float | str | None:
    """Whole-number fields (INTEGER, NUMBER with scale 0) hold an int, so that plans, exports
    and writes say 100, not 100.0; other numbers are floats rounded to the field's scale."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number) or math.isinf(number):
        return None
    scale = 0 if spec.type is FieldType.INTEGER else spec.scale
    if scale == 0:
        return int(round(number))
    if scale is not None:
        number = round(number, scale)
    return number + 0.0  # + 0.0 turns -0.0 into 0.0


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut with an ellipsis when there is room."""
    if len(text) <= limit:
        return text
    if limit <= 1:
        return text[:limit]
    return text[: limit - 1].rstrip() + "…"


def desired_fields(
    result: AccountResult,
    mapping: DestinationMapping,
    specs: Mapping[str, FieldSpec],
) -> dict[str, Any]:
    """The canonical value each mapped field should hold for this account.

    A source without a value leaves the field alone (null policy ``skip``) or clears it
    (``clear``, canonical ``None``).
    """
    desired: dict[str, Any] = {}
    for fm in mapping.fields:
        value = canonical(
            source_value(fm.source, result),
            specs[fm.target],
            join=fm.join,
            max_length=fm.max_length,
        )
        if value is None and fm.null == "skip":
            continue
        desired[fm.target] = value
    return desired


def values_equal(current: Any, desired: Any, spec: FieldSpec) -> bool:
    """True when the CRM's canonical value already equals the desired one."""
    if current is None or desired is None:
        return current is None and desired is None
    if spec.type in NUMERIC_TYPES and _is_number(current) and _is_number(desired):
        tolerance = 0.5 * 10 ** -(spec.scale if spec.scale is not None else 6)
        return abs(current - desired) < tolerance
    return bool(current == desired)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def diff_fields(
    record: CrmRecord,
    desired: Mapping[str, Any],
    specs: Mapping[str, FieldSpec],
    mappings: Mapping[str, FieldMapping],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields of ``record`` whose current value differs from ``desired``, as two dicts.

    The first maps each changed field to its desired value, the second to the canonical value
    the CRM holds now (``None`` when the field is empty); both have the same keys.
    """
    changes: dict[str, Any] = {}
    current: dict[str, Any] = {}
    for target, want in desired.items():
        fm = mappings[target]
        spec = specs[target]
        have = canonical(record.fields.get(target), spec, join=fm.join, max_length=fm.max_length)
        if not values_equal(have, want, spec):
            changes[target] = want
            current[target] = have
    return changes, current


@dataclass(slots=True)
class Plan:
    """The changes one destination needs, with the counts a run summary reports."""

    destination: str
    object: str
    changes: list[RecordChange] = field(default_factory=list)
    records_considered: int = 0
    records_unchanged: int = 0
    field_changes: Counter[str] = field(default_factory=Counter)

    @property
    def fields_changed(self) -> int:
        """How many field values the plan changes, over all records."""
        return sum(self.field_changes.values())

    def header(self) -> dict[str, Any]:
        """The plan's counts in JSON-ready form: everything but the changes themselves."""
        return {
            "destination": self.destination,
            "object": self.object,
            "records_considered": self.records_considered,
            "records_changed": len(self.changes),
            "records_unchanged": self.records_unchanged,
            "fields_changed": self.fields_changed,
            "field_changes": dict(sorted(self.field_changes.items())),
        }

    def change_dicts(
        self, changes: Iterable[RecordChange] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Each change (default: all of them) in JSON-ready form, one at a time.

        ``fields`` maps each changed field to ``{"from": <CRM value>, "to": <new value>}``;
        ``from`` is null when the CRM field was empty, ``to`` null clears the field.
        """
        for change in self.changes if changes is None else changes:
            current = change.current or {}
            yield {
                "record_id": change.record_id,
                "account": change.account_key,
                "priority": json_value(change.priority),
                "fields": {
                    name: {"from": json_value(current.get(name)), "to": json_value(value)}
                    for name, value in change.fields.items()
                },
            }


# Floats at or above 2**53 are not all whole numbers an int can stand for exactly.
_EXACT_FLOAT_INTS = 2.0**53


def json_value(value: Any) -> Any:
    """A canonical value in JSON-ready form: datetimes as ISO 8601 UTC with ``Z``, dates as
    ISO dates, whole-number floats as ints (``85``, not ``85.0``); anything else as it is."""
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _EXACT_FLOAT_INTS:
            return int(value)
        return value
    if isinstance(value, datetime):
        return _as_utc(value).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def plan_rows(plan: Plan) -> Iterator[dict[str, Any]]:
    """One flat row per changed field (``destination, object, record_id, account, field,
    from, to``) with JSON-ready values, for ``--format csv|json``."""
    for change in plan.changes:
        current = change.current or {}
        for name, value in change.fields.items():
            yield {
                "destination": plan.destination,
                "object": plan.object,
                "record_id": change.record_id,
                "account": change.account_key,
                "field": name,
                "from": json_value(current.get(name)),
                "to": json_value(value),
            }


def change_priority(result: AccountResult) -> float:
    """Writes that matter most go first when a budget cuts a run short.

    Newly qualified accounts first, then the biggest score moves, then the highest scores.
    """
    moved = abs(result.score_change or 0) if result.previous is not None else result.score.score
    return (1_000_000.0 if result.newly_qualified else 0.0) + moved * 1_000.0 + result.score.score


def plan_changes(
    results: Iterable[AccountResult],
    report: MatchReport,
    records: Mapping[str, CrmRecord],
    mapping: DestinationMapping,
    specs: Mapping[str, FieldSpec],
) -> Plan:
    """Diff every matched account's desired values against its CRM record.

    Only changed fields of changed records are planned, highest priority first.
    """
    plan = Plan(destination=mapping.destination, object=mapping.object)
    by_target = {fm.target: fm for fm in mapping.fields}
    for result in results:
        record_id = report.record_for(result.account.key)
        if record_id is None:
            continue
        record = records[record_id]
        plan.records_considered += 1
        desired = desired_fields(result, mapping, specs)
        changes, current = diff_fields(record, desired, specs, by_target)
        if not changes:
            plan.records_unchanged += 1
            continue
        plan.field_changes.update(changes.keys())
        plan.changes.append(
            RecordChange(
                record_id=record_id,
                fields=changes,
                account_key=result.account.key,
                priority=change_priority(result),
                current=current,
            )
        )
    plan.changes.sort(key=lambda change: (-change.priority, change.record_id))
    return plan


_TEXT = frozenset(TEXT_TYPES)
_NUMBER = frozenset(NUMERIC_TYPES)
_WHEN = frozenset((FieldType.DATE, FieldType.DATETIME))
# The field types each source's values fit; text fields take anything (it is written as text).
_SOURCE_TYPES: dict[str, frozenset[FieldType]] = {
    "score": _NUMBER | _TEXT,
    "score_change": _NUMBER | _TEXT,
    "previous_score": _NUMBER | _TEXT,
    "tier": _TEXT,
    "raw_tier": _TEXT,
    "lead_channel": _TEXT,
    "motion": _TEXT,
    "signals": _TEXT,
    "buyers": _TEXT,
    "domain": _TEXT,
    "account_key": _TEXT,
    "qualified_since": _WHEN | _TEXT,
    "tier_since": _WHEN | _TEXT,
    "scored_at": _WHEN | _TEXT,
    "first_seen": _WHEN | _TEXT,
}


def source_fits(source: str, kind: FieldType) -> bool:
    """Whether values of ``source`` can be written to a field of type ``kind``."""
    if source.startswith(("metrics.", "components.")):
        return kind in _NUMBER or kind in _TEXT
    return kind in _SOURCE_TYPES.get(source, _TEXT)


def apply_changes(
    current: Mapping[str, Any], changes: Sequence[RecordChange]
) -> dict[str, dict[str, Any]]:
    """Apply planned changes to a {record id: fields} picture (used to check plans in tests)."""
    result = {rid: dict(fields) for rid, fields in current.items()}
    for change in changes:
        result.setdefault(change.record_id, {}).update(change.fields)
    return result


def plan_mql_only(
    plan: Plan,
    records: Mapping[str, CrmRecord],
    matched_record_ids: set[str],
    mql_only: set[str],
    domains_of: Callable[[CrmRecord], set[str]],
    mapping: DestinationMapping,
    specs: Mapping[str, FieldSpec],
    channel: str = "mql_only",
) -> None:
    """Tag CRM accounts that have an MQL and no product usage with the ``mql_only`` channel.

    Only the fields mapped from ``lead_channel`` are planned for them: they have no score.
    """
    targets = {fm.target: fm for fm in mapping.fields if fm.source == "lead_channel"}
    if not targets or not mql_only:
        return
    for record in records.values():
        if record.id in matched_record_ids:
            continue
        hits = domains_of(record) & mql_only
        if not hits:
            continue
        desired = {t: canonical(channel, specs[t], join=fm.join) for t, fm in targets.items()}
        changes, current = diff_fields(record, desired, specs, targets)
        if changes:
            plan.field_changes.update(changes.keys())
            plan.changes.append(
                RecordChange(record.id, changes, f"mql:{min(hits)}", 0.0, current=current)
            )
