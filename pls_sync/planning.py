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
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from pls_sync.fit import Fit
from pls_sync.mapping import DestinationMapping, FieldMapping
from pls_sync.matching import MatchReport
from pls_sync.models import (
    CrmRecord,
    FieldSpec,
    FieldType,
    OwnedRecord,
    ProductAccount,
    RecordChange,
)
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
    # The account is no longer in the warehouse: it is planned as an account with no usage
    # on the record it last carried, never matched anew.
    gone: bool = False
    # What kind of company (segment by size), apart from its engagement; None: no fit model.
    fit: Fit | None = None

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
    "fit_segment": lambda r: r.fit.segment if r.fit is not None else None,
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
        try:
            return datetime.fromtimestamp(int(text) / 1000, tz=UTC)
        except (ValueError, OverflowError, OSError):
            return None  # beyond the calendar: not a time, so the planned value replaces it
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
    if kind is FieldType.MULTIPICKLIST:
        return _canonical_multiselect(value)
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


# Values a plan canonicalises over and over (tiers, channels, small counts, the CRM's text for
# them), memoised per field by CanonicalCache; containers are not (their items' types count).
_MEMO_TYPES = frozenset({str, int, float, bool, date, datetime})
_MEMO_SIZE = 4096  # distinct values remembered per field; the rest are computed every time


class CanonicalCache:
    """:func:`canonical` for each mapped field of one mapping, memoised on scalar values.

    A 100k-record plan calls ``canonical`` about a million times on a few thousand distinct
    values per field; the result depends only on the value (with its type: ``1`` and ``True``
    differ as text) and the field's spec, join and length, fixed per field here.
    """

    __slots__ = ("_fields", "_memo", "_specs")

    def __init__(self, mapping: DestinationMapping, specs: Mapping[str, FieldSpec]):
        self._fields = {fm.target: fm for fm in mapping.fields}
        self._specs = specs
        self._memo: dict[str, dict[tuple[type, Any], Any]] = {t: {} for t in self._fields}

    def __call__(self, target: str, value: Any) -> Any:
        """The canonical form of ``value`` in field ``target``."""
        if value is None:
            return None
        kind = type(value)
        memo = self._memo[target]
        if kind in _MEMO_TYPES:
            found = memo.get((kind, value), memo)  # the memo itself: "not there"
            if found is not memo:
                return found
        fm = self._fields[target]
        result = canonical(value, self._specs[target], join=fm.join, max_length=fm.max_length)
        if kind in _MEMO_TYPES and len(memo) < _MEMO_SIZE:
            memo[(kind, value)] = result
        return result


def _canonical_multiselect(value: Any) -> str | None:
    """A multi-select (Salesforce multi-select picklist, HubSpot checkboxes) holds a set of
    options that both CRMs store and return as ``a;b``, in their own order: the canonical
    form is the distinct options sorted and joined with ``;``, whatever join the mapping
    names, so what pls-sync writes compares equal to what the CRM gives back."""
    items = value if isinstance(value, (list, tuple, set, frozenset)) else str(value).split(";")
    options = sorted({str(item).strip() for item in items if item is not None} - {""})
    return ";".join(options) or None


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
    canon: CanonicalCache | None = None,
) -> dict[str, Any]:
    """The canonical value each mapped field should hold for this account.

    A source without a value leaves the field alone (null policy ``skip``) or clears it
    (``clear``, canonical ``None``). ``canon`` memoises the canonical forms across records.
    """
    desired: dict[str, Any] = {}
    for fm in mapping.fields:
        raw = source_value(fm.source, result)
        if canon is not None:
            value = canon(fm.target, raw)
        else:
            value = canonical(raw, specs[fm.target], join=fm.join, max_length=fm.max_length)
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


def written(owned: OwnedRecord | None, name: str) -> tuple[Any, ...]:
    """The values pls-sync may have left in field ``name`` of a record, per its ledger row."""
    if owned is None:
        return ()
    return tuple(values[name] for values in (owned.fields, owned.pending) if name in values)


class FieldDiff(NamedTuple):
    """What one record needs: changed fields (desired values), the CRM's values for them, and
    the fields a write policy holds back (field -> ``edited`` or ``not_empty``)."""

    changes: dict[str, Any]
    current: dict[str, Any]
    held: dict[str, str]


def held_by_policy(
    fm: FieldMapping, spec: FieldSpec, have: Any, want: Any, written: Sequence[Any] = ()
) -> str | None:
    """Why a field's write policy leaves the CRM value ``have`` instead of writing ``want``.

    ``written`` holds what pls-sync last wrote in this field of this record (with the value
    of a write whose outcome was never recorded); empty when it never wrote there.
    ``if_empty`` writes only an empty field. ``unless_edited`` leaves a field whose value is
    none of those: a person changed it. Clearing (``want`` None) a field that is not
    ``always`` happens only while it still holds what pls-sync wrote.
    """
    policy = fm.write
    if policy == "always" or have is None:
        return None
    unchanged = any(
        values_equal(have, canonical(value, spec, join=fm.join, max_length=fm.max_length), spec)
        for value in written
    )
    if policy == "if_empty":
        return None if want is None and unchanged else "not_empty"
    if not written:
        return "edited" if want is None else None
    return None if unchanged else "edited"


def diff_fields(
    record: CrmRecord,
    desired: Mapping[str, Any],
    specs: Mapping[str, FieldSpec],
    mappings: Mapping[str, FieldMapping],
    owned: OwnedRecord | None = None,
    canon: CanonicalCache | None = None,
) -> FieldDiff:
    """The fields of ``record`` whose current value differs from ``desired``.

    ``changes`` maps each changed field to its desired value, ``current`` to the canonical
    value the CRM holds now (``None`` when empty), with the same keys. ``owned`` is the
    record's ownership ledger row (what pls-sync last wrote there); fields a write policy
    protects are left out of ``changes`` and named in ``held``. ``canon`` memoises the
    canonical forms across records.
    """
    changes: dict[str, Any] = {}
    current: dict[str, Any] = {}
    held: dict[str, str] = {}
    for target, want in desired.items():
        fm = mappings[target]
        spec = specs[target]
        value = record.fields.get(target)
        if canon is not None:
            have = canon(target, value)
        else:
            have = canonical(value, spec, join=fm.join, max_length=fm.max_length)
        if values_equal(have, want, spec):
            continue
        reason = (
            None
            if fm.write == "always"
            else held_by_policy(fm, spec, have, want, written(owned, target))
        )
        if reason is not None:
            held[target] = reason
            continue
        changes[target] = want
        current[target] = have
    return FieldDiff(changes, current, held)


@dataclass(frozen=True, slots=True)
class LeftAlone:
    """A field the plan leaves as it is because of its write policy, for readers of the plan."""

    record_id: str
    account_key: str
    field: str
    reason: str  # edited | not_empty
    current: Any
    wanted: Any


@dataclass(slots=True)
class Plan:
    """The changes one destination needs, with the counts a run summary reports."""

    destination: str
    object: str
    changes: list[RecordChange] = field(default_factory=list)
    records_considered: int = 0
    records_unchanged: int = 0
    field_changes: Counter[str] = field(default_factory=Counter)
    # Records no account targets that the plan writes, by reason (account_gone, not_target).
    retired: Counter[str] = field(default_factory=Counter)
    left_alone: list[LeftAlone] = field(default_factory=list)
    # The ownership ledger rows to store once each record's change is written (at once for a
    # record without changes); None forgets the record.
    ownership: dict[str, OwnedRecord | None] = field(default_factory=dict)

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
            "records_retired": dict(sorted(self.retired.items())),
            "fields_left_alone": dict(sorted(Counter(a.reason for a in self.left_alone).items())),
        }

    def left_alone_dicts(self) -> Iterator[dict[str, Any]]:
        """Each field a write policy left alone, in JSON-ready form, with why."""
        for item in self.left_alone:
            yield {
                "record_id": item.record_id,
                "account": item.account_key,
                "field": item.field,
                "reason": item.reason,
                "crm_value": json_value(item.current),
                "pls_sync_value": json_value(item.wanted),
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
            row = {
                "record_id": change.record_id,
                "account": change.account_key,
                "priority": json_value(change.priority),
                "fields": {
                    name: {"from": json_value(current.get(name)), "to": json_value(value)}
                    for name, value in change.fields.items()
                },
            }
            if change.reason:
                row["reason"] = change.reason
            yield row


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
    from, to, reason``) with JSON-ready values, for ``--format csv|json``; ``reason`` says why
    a record no account targets is written (``account_gone``, ``not_target``), else null."""
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
                "reason": change.reason,
            }


def change_priority(result: AccountResult) -> float:
    """Writes that matter most go first when a budget cuts a run short.

    Newly qualified accounts first, then the biggest score moves, then the highest scores.
    """
    moved = abs(result.score_change or 0) if result.previous is not None else result.score.score
    return (1_000_000.0 if result.newly_qualified else 0.0) + moved * 1_000.0 + result.score.score


RETIREMENT_PRIORITY = 100_000.0  # as urgent as a 100-point move: a stale PQA misleads reps
ACCOUNT_GONE = "account_gone"
NOT_TARGET = "not_target"


def owned_values(
    desired: Mapping[str, Any], held: Mapping[str, str], last: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What the ledger should say pls-sync owns on a record once ``desired`` is written:
    every desired value, except fields a write policy held back, which keep their last value."""
    fields = {} if last is None else {k: v for k, v in last.items() if k in held}
    fields.update((name, json_value(value)) for name, value in desired.items() if name not in held)
    return fields


@dataclass(slots=True)
class _Planner:
    """Builds one destination's plan; see :func:`plan_changes`."""

    plan: Plan
    mapping: DestinationMapping
    specs: Mapping[str, FieldSpec]
    owned: Mapping[str, OwnedRecord]
    stored: Mapping[str, OwnedRecord]
    by_target: dict[str, FieldMapping] = field(default_factory=dict)
    canon: CanonicalCache | None = None

    def __post_init__(self) -> None:
        self.by_target = {fm.target: fm for fm in self.mapping.fields}
        self.canon = CanonicalCache(self.mapping, self.specs)

    def add(
        self,
        record: CrmRecord,
        desired: Mapping[str, Any],
        account_key: str,
        priority: float,
        reason: str | None = None,
        *,
        keep: bool = True,
    ) -> None:
        """Diff one record, plan its change and the ledger row it leaves (``keep`` False:
        the record is forgotten once written)."""
        row = self.owned.get(record.id)
        last = row.fields if row is not None else None
        diff = diff_fields(record, desired, self.specs, self.by_target, row, self.canon)
        for name, why in diff.held.items():
            current = canonical(
                record.fields.get(name), self.specs[name], join=self.by_target[name].join
            )
            self.plan.left_alone.append(
                LeftAlone(record.id, account_key, name, why, current, desired[name])
            )
        stamps = (row.modified, row.written_at) if row is not None else (None, None)
        if row is not None and row.in_flight:
            # Settled now: the stamp read, or the end of the uncertain write when later (a
            # lagging read may not show a retry that landed late), is taken as that write's;
            # later ones are people's.
            stamps = (row.modified, _latest(record.last_modified, row.written_at))
        if keep:
            fields = owned_values(desired, diff.held, last)
            after: OwnedRecord | None = OwnedRecord(record.id, account_key, fields, {}, *stamps)
        else:
            # Nothing owned any more; a record pls-sync wrote keeps its stamps, so that the
            # write does not make it the "most recently modified" of its domain.
            after = OwnedRecord(record.id, "", {}, {}, *stamps) if stamps[1] else None
        # A changed record's row is always stored after its write: it replaces the intent.
        if diff.changes or after != self.stored.get(record.id):
            self.plan.ownership[record.id] = after
        if not diff.changes:
            self.plan.records_unchanged += 1
            return
        self.plan.field_changes.update(diff.changes.keys())
        if reason is not None:
            self.plan.retired[reason] += 1
        self.plan.changes.append(
            RecordChange(record.id, diff.changes, account_key, priority, diff.current, reason)
        )


def gone_values(
    result: AccountResult, mapping: DestinationMapping, specs: Mapping[str, FieldSpec]
) -> dict[str, Any]:
    """Every mapped field of an account that left the warehouse: what an account with no
    usage shows (score 0, the lowest tier), and cleared where it has no value, whatever the
    field's null policy."""
    return {
        fm.target: canonical(
            source_value(fm.source, result),
            specs[fm.target],
            join=fm.join,
            max_length=fm.max_length,
        )
        for fm in mapping.fields
    }


def plan_changes(
    results: Iterable[AccountResult],
    report: MatchReport,
    records: Mapping[str, CrmRecord],
    mapping: DestinationMapping,
    specs: Mapping[str, FieldSpec],
    *,
    owned: Mapping[str, OwnedRecord] | None = None,
    stored: Mapping[str, OwnedRecord] | None = None,
    mql_only: Collection[str] = (),
    domains_of: Callable[[CrmRecord], set[str]] | None = None,
    channel: str = "mql_only",
) -> Plan:
    """Plan every record pls-sync targets or owns in one CRM: only changed fields, highest
    priority first.

    - A matched account's record gets its desired values.
    - A record whose domain has an MQL and no product usage gets the ``mql_only`` channel.
    - A record the ownership ledger (``owned``) ties to an account that left the warehouse
      (``result.gone``) gets that account's no-usage values (``account_gone``).
    - Any other record no account targets has its owned fields cleared (``not_target``):
      every ``always`` field holding a value, and the other fields where pls-sync wrote.
    Write policies are applied against what the ledger says pls-sync last wrote. ``stored``
    is what the ledger holds (default ``owned``; empty when ``owned`` was just adopted from
    the CRM): the plan's ``ownership`` holds every row that differs from it.
    """
    owned = {} if owned is None else owned
    plan = Plan(destination=mapping.destination, object=mapping.object)
    planner = _Planner(plan, mapping, specs, owned, owned if stored is None else stored)
    gone: dict[str, AccountResult] = {}
    targeted: set[str] = set()
    for result in results:
        if result.gone:
            gone[result.account.key] = result
            continue
        record_id = report.record_for(result.account.key)
        if record_id is None:
            continue
        targeted.add(record_id)
        plan.records_considered += 1
        planner.add(
            records[record_id],
            desired_fields(result, mapping, specs, planner.canon),
            result.account.key,
            change_priority(result),
        )
    channel_targets = [fm.target for fm in mapping.fields if fm.source == "lead_channel"]
    always = [fm.target for fm in mapping.fields if fm.write == "always"]
    mql = frozenset(mql_only)
    for record in records.values():
        if record.id in targeted:
            continue
        row = owned.get(record.id)
        hits = domains_of(record) & mql if mql and channel_targets and domains_of else set()
        # An ``always`` field is pls-sync's on every record: a value in it where no account
        # (and no MQL) wants one is stale, whoever put it there (a merge copies values, an
        # import brings an earlier tool's). Other fields only where pls-sync wrote them.
        stale = [name for name in always if record.fields.get(name) not in (None, "")]
        # A row that only remembers when pls-sync wrote needs nothing, unless a write to the
        # record is still in flight (settled below).
        owns = row is not None and bool(row.fields or row.in_flight)
        if not owns and not hits and not stale:
            continue
        plan.records_considered += 1
        tag = {
            t: canonical(channel, specs[t], join=planner.by_target[t].join) for t in channel_targets
        }
        account = gone.get(row.account_key) if row is not None else None
        if account is not None:
            desired = gone_values(account, mapping, specs)
            desired.update(tag if hits else dict.fromkeys(channel_targets))
            planner.add(record, desired, account.account.key, RETIREMENT_PRIORITY, ACCOUNT_GONE)
            continue
        cleared = dict.fromkeys(stale)
        cleared.update(
            (name, None)
            for name in (row.fields if row is not None else ())
            if name in planner.by_target
        )
        if hits:
            cleared.update(tag)
            retiring = any(name not in tag for name in cleared)
            planner.add(
                record,
                cleared,
                f"mql:{min(hits)}",
                RETIREMENT_PRIORITY if retiring else 0.0,
                NOT_TARGET if retiring else None,
            )
        else:
            account_key = row.account_key if row is not None else ""
            planner.add(record, cleared, account_key, RETIREMENT_PRIORITY, NOT_TARGET, keep=False)
    for record_id in owned.keys() - records.keys():
        plan.ownership[record_id] = None  # the CRM no longer has it (deleted or merged)
    plan.changes.sort(key=lambda change: (-change.priority, change.record_id))
    return plan


def _latest(first: datetime | None, second: datetime | None) -> datetime | None:
    """The later of two moments, either of which may be unknown."""
    if first is None or second is None:
        return first or second
    return first if _as_utc(first) >= _as_utc(second) else second


def effective_modified(record: CrmRecord, owned: OwnedRecord | None) -> datetime | None:
    """When the record was last changed by anyone but pls-sync, as far as anyone can tell.

    When its stamp is no later than pls-sync's last write to it, that write is its latest
    change, and the change before it is the ledger's ``modified``.
    """
    stamp = record.last_modified
    if owned is None or stamp is None:
        return stamp
    if owned.in_flight:
        return owned.modified or stamp
    if owned.written_at is None:
        return stamp
    return owned.modified if _as_utc(stamp) <= _as_utc(owned.written_at) else stamp


def adopt_owned(
    records: Iterable[CrmRecord], mapping: DestinationMapping, specs: Mapping[str, FieldSpec]
) -> dict[str, OwnedRecord]:
    """Ownership for a CRM pls-sync has no ledger for: every mapped field that holds a value is
    taken as pls-sync's (the mapping names the fields it owns), so that a record no account
    targets any more is cleared even when its values were written before the ledger existed."""
    adopted: dict[str, OwnedRecord] = {}
    for record in records:
        fields = {}
        for fm in mapping.fields:
            value = canonical(
                record.fields.get(fm.target),
                specs[fm.target],
                join=fm.join,
                max_length=fm.max_length,
            )
            if value is not None:
                fields[fm.target] = json_value(value)
        if fields:
            adopted[record.id] = OwnedRecord(record.id, "", fields)
    return adopted


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
    "fit_segment": _TEXT,
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
