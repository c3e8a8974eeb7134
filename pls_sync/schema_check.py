"""A destination's mapping checked against the live CRM schema, every problem at once.

Pure: takes the mapping, the object's field specs (``describe``) and the values pls-sync can
write for its enumerated sources, and returns ``SchemaProblem`` values keyed by their path in the
mapping file, so callers can point at ``file:line: key``. Errors are what would make a run fail
or the CRM reject records; warnings are what would be written but be wrong or cut.

What the CRMs do with a value outside a picklist:

* Salesforce refuses it on a restricted picklist, per record, with
  ``INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`` ("bad value for restricted picklist field"); an
  unrestricted picklist stores it although it is not one of the field's values.
* HubSpot refuses it on every enumeration with ``INVALID_OPTION`` ("... was not one of the
  allowed options"): "values can only include options that exactly match one or more of the
  ``options`` set for the property".
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

from pls_sync.errors import ConfigIssue
from pls_sync.mapping import DESTINATION_NAMES, DestinationMapping, FieldMapping
from pls_sync.models import FieldSpec, FieldType
from pls_sync.planning import NUMERIC_TYPES, TEXT_TYPES, source_fits

ERROR = "error"
WARNING = "warning"

Key = tuple[str | int, ...]

# Sources whose every value is known in advance (from config): picklists must list them.
ENUMERATED_SOURCES = frozenset({"tier", "raw_tier", "lead_channel", "motion", "fit_segment"})
# Sources pls-sync truncates on purpose (lists joined into one text).
_TRUNCATED_ON_PURPOSE = frozenset({"signals", "buyers"})
# The longest text other sources produce, when it is known.
_LONGEST_TEXT: dict[str, int] = {
    "domain": 253,  # a DNS name
    "qualified_since": 20,  # 2026-11-22T10:00:00Z
    "tier_since": 20,
    "scored_at": 20,
    "first_seen": 20,
    "score": 3,
    "score_change": 4,
    "previous_score": 4,
}
# The integer digits a number field needs for a source's range (0..100, -100..100).
_INTEGER_DIGITS: dict[str, tuple[int, str]] = {
    "score": (3, "0 to 100"),
    "score_change": (3, "-100 to 100"),
    "previous_score": (3, "0 to 100"),
}
_COMPONENT_DIGITS = (3, "0 to 100")
_DOMAIN_FIELD_TYPES = frozenset(TEXT_TYPES)
_TYPE_WORDS: tuple[tuple[str, tuple[FieldType, ...]], ...] = (
    ("number", NUMERIC_TYPES),
    ("date", (FieldType.DATE, FieldType.DATETIME)),
    ("text", TEXT_TYPES),
)
_REJECTION_CODE = {
    "salesforce": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    "hubspot": "INVALID_OPTION",
}


@dataclass(frozen=True, slots=True)
class SchemaProblem:
    """One problem of a mapping against the live schema.

    ``key`` is the path in the mapping file: ``("object",)``, ``("match", "domain_fields", 1)``
    or ``("fields", "PQA_Motion__c")``. ``severity`` is ``"error"`` (a run would fail or records
    would be rejected) or ``"warning"`` (written, but cut or outside the field's values).
    """

    key: Key
    message: str
    severity: str = ERROR

    @property
    def is_error(self) -> bool:
        """True for an error, False for a warning."""
        return self.severity == ERROR


def check_mapping_schema(
    mapping: DestinationMapping,
    specs: Mapping[str, FieldSpec],
    writable_values: Mapping[str, Collection[str]],
) -> list[SchemaProblem]:
    """Every problem of a mapping against the live schema, all at once.

    ``specs`` is the object's describe (every field by name); ``writable_values`` maps an
    enumerated source (``tier``, ``raw_tier``, ``lead_channel``, ``motion``) to every value
    pls-sync can write for it. Problems come in mapping order: the object, the domain fields,
    the mapped fields, then the firmographic fields (read, never written).
    """
    if not specs:
        return [
            SchemaProblem(
                ("object",),
                f"{_vendor(mapping)} describes no fields on {mapping.object}: check the object "
                "name and that the integration user can read it",
            )
        ]
    problems: list[SchemaProblem] = []
    for index, name in enumerate(mapping.match.domain_fields):
        problems.extend(_domain_field_problems(mapping, specs, index, name))
    for fm in mapping.fields:
        problems.extend(_field_problems(mapping, specs, fm, writable_values))
    for name, field_name in mapping.firmographics.items():
        problems.extend(_firmographic_problems(mapping, specs, name, field_name))
    return problems


def schema_issues(
    mapping: DestinationMapping,
    specs: Mapping[str, FieldSpec],
    writable_values: Mapping[str, Collection[str]],
) -> tuple[list[ConfigIssue], list[ConfigIssue]]:
    """``check_mapping_schema`` as ``(errors, warnings)``, each a ``file:line: key`` issue of
    the mapping file: what ``validate`` reports and what keeps ``run`` from writing."""
    errors: list[ConfigIssue] = []
    warnings: list[ConfigIssue] = []
    for problem in check_mapping_schema(mapping, specs, writable_values):
        issue = mapping.issue(problem.key, problem.message)
        (errors if problem.is_error else warnings).append(issue)
    return errors, warnings


# --------------------------------------------------------------------------- domain fields


def _domain_field_problems(
    mapping: DestinationMapping, specs: Mapping[str, FieldSpec], index: int, name: str
) -> Iterator[SchemaProblem]:
    key: Key = ("match", "domain_fields", index)
    spec = specs.get(name)
    if spec is None and mapping.destination == "salesforce":
        # Salesforce names are case-insensitive and domain values are read that way.
        spec = next((s for s in specs.values() if s.name.lower() == name.lower()), None)
    if spec is None:
        yield SchemaProblem(key, _no_such_field(mapping, specs, name, "domain field"))
    elif spec.type not in _DOMAIN_FIELD_TYPES:
        yield SchemaProblem(
            key,
            f"domain field {name} on {mapping.object} is {_a(spec.type.value)} field: domain "
            "fields must hold text (a website, a domain, a list of domains); choose a text field",
        )


def _firmographic_problems(
    mapping: DestinationMapping, specs: Mapping[str, FieldSpec], name: str, field_name: str
) -> Iterator[SchemaProblem]:
    key: Key = ("firmographics", name)
    spec = specs.get(field_name) or next(
        (s for s in specs.values() if s.name.lower() == field_name.lower()), None
    )
    if spec is None:
        yield SchemaProblem(key, _no_such_field(mapping, specs, field_name, "firmographic field"))
    elif spec.type not in NUMERIC_TYPES and spec.type not in TEXT_TYPES:
        yield SchemaProblem(
            key,
            f"{name} field {field_name} on {mapping.object} is {_a(spec.type.value)} field: "
            "a company size is a number; choose a number field",
        )


# --------------------------------------------------------------------------- mapped fields


def _field_problems(
    mapping: DestinationMapping,
    specs: Mapping[str, FieldSpec],
    fm: FieldMapping,
    writable_values: Mapping[str, Collection[str]],
) -> Iterator[SchemaProblem]:
    key: Key = ("fields", fm.target)
    spec = specs.get(fm.target)
    if spec is None:
        yield SchemaProblem(key, _no_such_field(mapping, specs, fm.target, "field"))
        return
    if not spec.updateable:
        yield SchemaProblem(
            key,
            f"{fm.target} on {mapping.object} is read-only for the integration user (or "
            "calculated): give it edit access or remove it from the mapping",
        )
        return
    if not source_fits(fm.source, spec.type):
        yield SchemaProblem(
            key,
            f"{fm.target} is {_a(spec.type.value)} field and cannot hold {fm.source} values: "
            f"map {fm.source} to a {_fitting_types(fm.source)} field",
        )
        return
    if spec.type in NUMERIC_TYPES:
        yield from _number_problems(key, spec, fm)
        return
    values = writable_values.get(fm.source) if fm.source in ENUMERATED_SOURCES else None
    yield from _length_problems(key, spec, fm, values)
    if spec.type in (FieldType.PICKLIST, FieldType.MULTIPICKLIST):
        yield from _picklist_problems(mapping, key, spec, fm, values)


def _number_problems(key: Key, spec: FieldSpec, fm: FieldMapping) -> Iterator[SchemaProblem]:
    needed = _INTEGER_DIGITS.get(fm.source)
    if needed is None and fm.source.startswith("components."):
        needed = _COMPONENT_DIGITS
    if needed is None or spec.precision is None:
        return
    digits, span = needed
    scale = 0 if spec.type is FieldType.INTEGER else (spec.scale or 0)
    room = spec.precision - scale
    if room < digits:
        yield SchemaProblem(
            key,
            f"{fm.target} is Number({room}, {scale}): it holds numbers below {10**room} but "
            f"{fm.source} goes from {span}; give it at least {digits} digits before the "
            "decimal point",
        )


def _length_problems(
    key: Key, spec: FieldSpec, fm: FieldMapping, values: Collection[str] | None
) -> Iterator[SchemaProblem]:
    if fm.source in _TRUNCATED_ON_PURPOSE:
        return
    if values is not None:
        yield from _cut_values(key, spec, fm, values)
        return
    longest = _LONGEST_TEXT.get(fm.source)
    # A max_length in the mapping asks for the cut; only the field's own length surprises.
    if longest is not None and spec.length and longest > spec.length:
        yield SchemaProblem(
            key,
            f"{fm.target} has length {spec.length} but {fm.source} values can be {longest} "
            f"characters long: longer ones will be cut to {spec.length}",
            WARNING,
        )


def _cut_values(
    key: Key, spec: FieldSpec, fm: FieldMapping, values: Collection[str]
) -> Iterator[SchemaProblem]:
    """Enumerated values longer than the field (or max_length): cut, they become other values."""
    limits = {"length": spec.length, "max_length": fm.max_length}
    which, limit = min(
        ((name, size) for name, size in limits.items() if size),
        key=lambda item: item[1],
        default=(None, None),
    )
    if limit is None:
        return
    too_long = [value for value in dict.fromkeys(values) if len(value) > limit]
    if too_long:
        yield SchemaProblem(
            key,
            f"{fm.target} has {which} {limit} but {fm.source} {_values_word(too_long)} "
            f"{_listing(too_long)} {_is(too_long)} longer: cut, {_they(too_long)} would become "
            f"other values; allow at least {max(len(v) for v in too_long)} characters",
        )


def _picklist_problems(
    mapping: DestinationMapping,
    key: Key,
    spec: FieldSpec,
    fm: FieldMapping,
    values: Collection[str] | None,
) -> Iterator[SchemaProblem]:
    vendor = _vendor(mapping)
    listed = f"(it has: {_listing(spec.picklist_values) or 'no values'})"
    if fm.source not in ENUMERATED_SOURCES:
        if spec.restricted:
            yield SchemaProblem(
                key,
                f"{fm.target} is a restricted picklist and {fm.source} is free text, not one "
                f"of its values: {vendor} would reject every record; map {fm.source} to a text "
                "field",
            )
        else:
            yield SchemaProblem(
                key,
                f"{fm.target} is a picklist and {fm.source} is free text, not one of its "
                "values: it is stored, but reports and filters on the picklist will miss it; "
                f"map {fm.source} to a text field",
                WARNING,
            )
        return
    if values is None:
        return
    allowed = set(spec.picklist_values)
    missing = [value for value in dict.fromkeys(values) if value not in allowed]
    if not missing:
        return
    if spec.restricted:
        code = _REJECTION_CODE.get(mapping.destination, "a rejection")
        yield SchemaProblem(
            key,
            f"{fm.target} does not list {fm.source} {_values_word(missing)} "
            f"{_listing(missing)} {listed}: {vendor} rejects those records ({code}); add "
            f"{_them(missing)} to the field's values",
        )
    else:
        yield SchemaProblem(
            key,
            f"{fm.target} does not list {fm.source} {_values_word(missing)} "
            f"{_listing(missing)} {listed}: {vendor} stores {_them(missing)}, but reports and "
            f"filters on the picklist will miss {_them(missing)}; add {_them(missing)} to the "
            "field's values",
            WARNING,
        )


# --------------------------------------------------------------------------- suggestions


def _no_such_field(
    mapping: DestinationMapping, specs: Mapping[str, FieldSpec], name: str, what: str
) -> str:
    message = f"{mapping.object} has no {what} {name}"
    suggestion = suggest_field(name, specs)
    if suggestion is not None and suggestion.lower() == name.lower():
        return f"{message}: write it {suggestion}, as the schema spells it"
    if suggestion is not None:
        return f"{message}; did you mean {suggestion}?"
    return f"{message}: check the name in {_vendor(mapping)} (API names, not labels)"


def suggest_field(name: str, specs: Mapping[str, FieldSpec]) -> str | None:
    """The field a mistyped ``name`` most likely means, as ``Name`` or ``Name (label "...")``.

    Matches ignore case (Salesforce field names are case-insensitive), underscores and the
    ``__c`` suffix, then allow small typos; a field's label counts as well as its name.
    """
    wanted = _squash(name)
    if not wanted:
        return None
    by_name: dict[str, str] = {}
    by_label: dict[str, str] = {}
    for spec in specs.values():
        by_name.setdefault(_squash(spec.name), spec.name)
        if spec.label:
            by_label.setdefault(_squash(spec.label), spec.name)
    if wanted in by_name:
        return by_name[wanted]
    if wanted in by_label:
        return _with_label(by_label[wanted], specs)
    close = difflib.get_close_matches(wanted, list(by_name), n=1, cutoff=0.8)
    if close:
        return by_name[close[0]]
    close = difflib.get_close_matches(wanted, list(by_label), n=1, cutoff=0.8)
    if close:
        return _with_label(by_label[close[0]], specs)
    return None


def _with_label(field: str, specs: Mapping[str, FieldSpec]) -> str:
    label = specs[field].label
    return f'{field} (label "{label}")' if label else field


def _squash(text: str) -> str:
    lowered = text.strip().lower()
    if lowered.endswith("__c"):
        lowered = lowered[: -len("__c")]
    return re.sub(r"[^a-z0-9]", "", lowered)


# --------------------------------------------------------------------------- wording


def _vendor(mapping: DestinationMapping) -> str:
    return DESTINATION_NAMES.get(mapping.destination, mapping.destination)


def _fitting_types(source: str) -> str:
    kinds = [word for word, types in _TYPE_WORDS if any(source_fits(source, t) for t in types)]
    return " or ".join(kinds) if kinds else "text"


def _listing(values: Collection[str]) -> str:
    return ", ".join(values)


def _a(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _values_word(values: Collection[str]) -> str:
    return "value" if len(values) == 1 else "values"


def _is(values: Collection[str]) -> str:
    return "is" if len(values) == 1 else "are"


def _they(values: Collection[str]) -> str:
    return "it" if len(values) == 1 else "they"


def _them(values: Collection[str]) -> str:
    return "it" if len(values) == 1 else "them"
