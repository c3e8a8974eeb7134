"""What each CRM needs before pls-sync can write to it, and the plan to get there (no I/O).

``requirements`` reads a destination's mapping (and the alert settings) and says which fields
pls-sync needs: every mapped target with a type fit for its source (and, for picklists and
enumerations, exactly the values pls-sync can write), the match fields, and the task field that
keys rep alerts. ``plan_setup`` compares them with the live schema and says, field by field,
what is fine, what to create, which values to add and what conflicts. ``pls-sync setup``
prints the plan and, with ``--apply``, a connector (``SchemaAdmin``) carries it out.

The plan never deletes a field, never changes the type of an existing field, and never names a
field that no mapping names: an existing field of the wrong type is a conflict to fix by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pls_sync.mapping import DestinationMapping
from pls_sync.models import FieldSpec, FieldType
from pls_sync.planning import NUMERIC_TYPES, TEXT_TYPES, source_fits

# Plan actions, in the order ``pls-sync setup`` applies them.
CREATE = "create"
ADD_VALUES = "add_values"
MAKE_EXTERNAL_ID = "make_external_id"
OK = "ok"
CONFLICT = "conflict"
CHANGES = (CREATE, ADD_VALUES, MAKE_EXTERNAL_ID)

# Field access the integration needs: ``edit`` for what pls-sync writes, ``read`` to match.
EDIT = "edit"
READ = "read"

ENUMERATED = frozenset({"tier", "raw_tier", "lead_channel", "motion", "fit_segment"})
_LABELS = {
    "score": "PQA Score",
    "tier": "PQA Tier",
    "raw_tier": "PQA Raw Tier",
    "signals": "PQA Signals",
    "score_change": "PQA Score Change",
    "previous_score": "PQA Previous Score",
    "qualified_since": "PQA Qualified Since",
    "tier_since": "PQA Tier Since",
    "scored_at": "PQA Scored At",
    "first_seen": "PQA First Seen",
    "lead_channel": "PQA Lead Channel",
    "motion": "PQA Motion",
    "fit_segment": "PQA Fit Segment",
    "buyers": "PQA Buyers",
    "domain": "PQA Domain",
    "account_key": "PQA Account Key",
}
LONG_TEXT = 32_768  # Salesforce's default Long Text Area length; HubSpot's textarea holds more
TEXT_LENGTH = 255
ALERT_KEY_LENGTH = 64
# Salesforce: custom fields end in __c (a managed package's carry a namespace prefix too).
SALESFORCE_CUSTOM_SUFFIX = "__c"


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    """A field pls-sync needs on ``object``: its type and, for picklists, its values.

    ``length`` is the text length; ``precision`` and ``scale`` a number's digits; ``values``
    every value pls-sync can write to a picklist or enumeration; ``external_id`` a key a record
    can be found and upserted by (Salesforce External ID, unique); ``access`` ``edit`` or
    ``read``; ``source`` what pls-sync writes there (for messages).
    """

    object: str
    name: str
    label: str
    type: FieldType
    source: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    values: tuple[str, ...] = ()
    external_id: bool = False
    access: str = EDIT

    def describe_type(self, destination: str) -> str:
        """The type as an admin reads it: ``Number(3, 0)``, ``Picklist (3 values)``..."""
        return type_text(destination, self)


@dataclass(frozen=True, slots=True)
class SetupStep:
    """One line of the plan: what to do about one requirement, and why."""

    action: str
    requirement: FieldRequirement
    detail: str
    missing_values: tuple[str, ...] = ()
    current: FieldSpec | None = field(default=None, compare=False)

    @property
    def changes(self) -> bool:
        """Whether ``--apply`` does something for this step."""
        return self.action in CHANGES


def _label(target: str, source: str) -> str:
    if source in _LABELS:
        return _LABELS[source]
    if source.startswith(("metrics.", "components.")):
        words = source.split(".", 1)[1].replace("_", " ")
        return f"PQA {words[:1].upper()}{words[1:]}"[:40]
    base = target.removesuffix(SALESFORCE_CUSTOM_SUFFIX).replace("_", " ").strip()
    return base[:40] or target


def _for_source(
    obj: str,
    target: str,
    source: str,
    values: Mapping[str, tuple[str, ...]],
    max_length: int | None = None,
) -> FieldRequirement:
    """The field a source needs: its type, size and (enumerated sources) values; text as long
    as the mapping's ``max_length`` when it sets one."""
    label = _label(target, source)
    if source in ENUMERATED:
        return FieldRequirement(
            obj, target, label, FieldType.PICKLIST, source, values=tuple(values.get(source, ()))
        )
    if source == "score":
        return FieldRequirement(obj, target, label, FieldType.NUMBER, source, precision=3, scale=0)
    if source in ("score_change", "previous_score"):
        return FieldRequirement(obj, target, label, FieldType.NUMBER, source, precision=4, scale=0)
    if source.startswith("metrics."):
        return FieldRequirement(obj, target, label, FieldType.NUMBER, source, precision=16, scale=2)
    if source.startswith("components."):
        return FieldRequirement(obj, target, label, FieldType.NUMBER, source, precision=5, scale=1)
    if source in ("qualified_since", "tier_since", "scored_at", "first_seen"):
        return FieldRequirement(obj, target, label, FieldType.DATETIME, source)
    if source in ("signals", "buyers"):
        length = max_length or LONG_TEXT
        return FieldRequirement(obj, target, label, FieldType.TEXTAREA, source, length=length)
    length = min(max_length or TEXT_LENGTH, TEXT_LENGTH)
    return FieldRequirement(obj, target, label, FieldType.STRING, source, length=length)


def requirements(
    mapping: DestinationMapping,
    values: Mapping[str, tuple[str, ...]],
    *,
    alert_key: tuple[str, str] | None = None,
) -> list[FieldRequirement]:
    """Every field ``mapping`` needs: the mapped targets (edit access), the match fields (read
    access, text), the firmographic fields (read access, a number) and, with ``alert_key`` (``(task object, field)``, when alerts are on), the
    task field keying rep alerts (Text(64), an External ID on Salesforce).

    ``values`` maps each enumerated source to every value pls-sync can write for it.
    """
    obj = mapping.object
    needed = [
        _for_source(obj, fm.target, fm.source, values, fm.max_length) for fm in mapping.fields
    ]
    written = {fm.target.lower() for fm in mapping.fields}
    for name in mapping.match.domain_fields:
        if name.lower() not in written:
            needed.append(
                FieldRequirement(
                    obj, name, _label(name, "domain"), FieldType.STRING, "domain",
                    length=TEXT_LENGTH, access=READ,
                )
            )  # fmt: skip
    for name, field_name in mapping.firmographics.items():
        if field_name.lower() not in written:
            needed.append(
                FieldRequirement(
                    obj, field_name, _label(field_name, name), FieldType.NUMBER, "firmographics",
                    access=READ,
                )
            )  # fmt: skip
    if alert_key is not None:
        task_object, key_field = alert_key
        needed.append(
            FieldRequirement(
                task_object,
                key_field,
                "PQA Alert Key",
                FieldType.STRING,
                "alert_key",
                length=ALERT_KEY_LENGTH,
                external_id=mapping.destination == "salesforce",
            )
        )
    return needed


def _find(specs: Mapping[str, FieldSpec], name: str) -> FieldSpec | None:
    """A field by name; Salesforce names are case-insensitive, HubSpot's are lower case."""
    return specs.get(name) or next(
        (spec for spec in specs.values() if spec.name.lower() == name.lower()), None
    )


def _creatable(destination: str, name: str) -> bool:
    """Whether pls-sync may create a field of that name (Salesforce: custom fields only)."""
    return destination != "salesforce" or name.endswith(SALESFORCE_CUSTOM_SUFFIX)


def _fits(req: FieldRequirement, spec: FieldSpec) -> bool:
    if req.source == "firmographics":
        return spec.type in NUMERIC_TYPES or spec.type in TEXT_TYPES
    if req.source == "alert_key" or req.access == READ:
        return spec.type in (FieldType.STRING, FieldType.TEXTAREA)
    if req.type is FieldType.PICKLIST:
        return spec.type in (FieldType.PICKLIST, FieldType.STRING, FieldType.TEXTAREA)
    return source_fits(req.source, spec.type)


def plan_step(destination: str, req: FieldRequirement, spec: FieldSpec | None) -> SetupStep:
    """What to do about one requirement given the field as it is (``None``: missing)."""
    where = f"{req.object}.{req.name}"
    wanted = type_text(destination, req)
    if spec is None:
        if not _creatable(destination, req.name):
            return SetupStep(
                CONFLICT,
                req,
                f"{where} does not exist and is not a custom field: fix the name in the mapping",
            )
        return SetupStep(CREATE, req, f"create {where} as {wanted}")
    if not _fits(req, spec):
        return SetupStep(
            CONFLICT,
            req,
            f"{where} is {spec.type.value}, which cannot hold {req.source}: pls-sync never "
            f"changes a field's type; map {req.source} to a new field (it would create it as "
            f"{wanted}) or change {where} to {wanted} by hand",
            current=spec,
        )
    if req.type is FieldType.PICKLIST and spec.type is FieldType.PICKLIST:
        have = {value.lower() for value in spec.picklist_values}
        missing = tuple(v for v in req.values if v.lower() not in have)
        if missing:
            return SetupStep(
                ADD_VALUES,
                req,
                f"add {', '.join(missing)} to {where} (keeping its {len(have)} values)",
                missing_values=missing,
                current=spec,
            )
    if req.external_id and not spec.external_id:
        return SetupStep(
            MAKE_EXTERNAL_ID,
            req,
            f"make {where} an External ID (unique), so each alert task is upserted by its key",
            current=spec,
        )
    return SetupStep(OK, req, f"{where} exists as {spec.type.value}", current=spec)


def plan_setup(
    destination: str,
    needed: Sequence[FieldRequirement],
    live: Mapping[str, Mapping[str, FieldSpec]],
) -> list[SetupStep]:
    """A step per requirement against ``live`` (each object's fields by name), in order."""
    return [
        plan_step(destination, req, _find(live.get(req.object, {}), req.name)) for req in needed
    ]


def type_text(destination: str, req: FieldRequirement) -> str:
    """A requirement's type in the CRM's own words."""
    kind = req.type
    if destination == "hubspot":
        if kind is FieldType.PICKLIST:
            return f"enumeration ({', '.join(req.values)})"
        if kind is FieldType.NUMBER:
            return "number"
        if kind is FieldType.DATETIME:
            return "datetime"
        return "multi-line text" if kind is FieldType.TEXTAREA else "single-line text"
    if kind is FieldType.PICKLIST:
        return f"Picklist ({', '.join(req.values)}; restricted)"
    if kind is FieldType.NUMBER:
        return f"Number({req.precision}, {req.scale})"
    if kind is FieldType.DATETIME:
        return "Date/Time"
    if kind is FieldType.TEXTAREA:
        return f"Long Text Area({req.length})"
    text = f"Text({req.length})"
    return f"{text}, External ID, unique" if req.external_id else text
