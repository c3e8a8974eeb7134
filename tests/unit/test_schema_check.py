"""A mapping checked against the live schema: every problem at once, keyed by its mapping path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.models import FieldSpec, FieldType
from pls_sync.schema_check import SchemaProblem, check_mapping_schema, suggest_field

TIERS = ("sales", "success", "self_serve")
CHANNELS = ("usage_pql", "usage_mql", "mql_only", "usage_no_buyer")
MOTIONS = ("sales", "success", "abm", "self_serve")
WRITABLE: dict[str, tuple[str, ...]] = {
    "tier": TIERS,
    "raw_tier": TIERS,
    "lead_channel": CHANNELS,
    "motion": MOTIONS,
}


def _picklist(name: str, label: str, values: tuple[str, ...]) -> FieldSpec:
    return FieldSpec(
        name, FieldType.PICKLIST, length=255, label=label, picklist_values=values, restricted=True
    )


# An Account as the Salesforce sandbox describes it, for the shipped mapping.
SPECS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec("Id", FieldType.ID, length=18, updateable=False, label="Record ID"),
        FieldSpec("Website", FieldType.STRING, length=255, label="Website"),
        FieldSpec("Domain__c", FieldType.STRING, length=255, label="Domain"),
        FieldSpec("NumberOfEmployees", FieldType.INTEGER, label="Employees", precision=8),
        FieldSpec("CreatedDate", FieldType.DATETIME, updateable=False, label="Created Date"),
        FieldSpec("Description", FieldType.TEXTAREA, length=32000, label="Account Description"),
        FieldSpec("PQA_Score__c", FieldType.NUMBER, label="PQA Score", scale=0, precision=3),
        FieldSpec(
            "PQA_Score_Change__c",
            FieldType.NUMBER,
            label="PQA Score Change",
            scale=0,
            precision=4,
        ),
        FieldSpec(
            "PQA_Active_Users__c", FieldType.NUMBER, label="PQA Active Users", scale=0, precision=2
        ),
        FieldSpec("PQA_Signals__c", FieldType.TEXTAREA, length=40, label="PQA Signals"),
        FieldSpec("PQA_Qualified_Since__c", FieldType.DATETIME, label="PQA Qualified Since"),
        _picklist("PQA_Tier__c", "PQA Tier", TIERS),
        _picklist("PQA_Lead_Channel__c", "PQA Lead Channel", CHANNELS),
        _picklist("PQA_Motion__c", "Sales Motion", MOTIONS),
    )
}
SHIPPED_FIELDS: tuple[FieldMapping, ...] = (
    FieldMapping("PQA_Score__c", "score"),
    FieldMapping("PQA_Tier__c", "tier"),
    FieldMapping("PQA_Signals__c", "signals", null="clear"),
    FieldMapping("PQA_Score_Change__c", "score_change"),
    FieldMapping("PQA_Active_Users__c", "metrics.active_users_28d"),
    FieldMapping("PQA_Qualified_Since__c", "qualified_since", null="clear"),
    FieldMapping("PQA_Lead_Channel__c", "lead_channel"),
    FieldMapping("PQA_Motion__c", "motion"),
)


def mapping(
    fields: tuple[FieldMapping, ...] = SHIPPED_FIELDS,
    domain_fields: tuple[str, ...] = ("Website", "Domain__c"),
    destination: str = "salesforce",
) -> DestinationMapping:
    """The shipped Salesforce mapping, or a variant of it."""
    return DestinationMapping(destination, "Account", MatchRule(domain_fields), fields)


def one_field(target: str, source: str, **options: Any) -> tuple[FieldMapping, ...]:
    """A mapping's fields with a single ``target: source``."""
    return (FieldMapping(target, source, **options),)


def specs_with(name: str, **changes: Any) -> dict[str, FieldSpec]:
    """SPECS with one field changed (or added, from a blank text field)."""
    base = SPECS.get(name, FieldSpec(name, FieldType.STRING))
    return {**SPECS, name: replace(base, **changes)}


Expected = tuple[tuple[str | int, ...], str, tuple[str, ...]]


@dataclass(frozen=True)
class Case:
    """One check: a mapping and schema, and the problems expected (key, severity, fragments)."""

    id: str
    mapping: DestinationMapping = field(default_factory=mapping)
    specs: Mapping[str, FieldSpec] = field(default_factory=lambda: SPECS)
    expected: tuple[Expected, ...] = ()
    writable: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: WRITABLE)


CASES = [
    Case("the shipped mapping on the shipped schema is clean"),
    # --- domain fields
    Case(
        "a mistyped domain field is named with the field it likely means",
        mapping(domain_fields=("Website", "Domain_c")),
        expected=(
            (
                ("match", "domain_fields", 1),
                "error",
                ("Account has no domain field Domain_c", "did you mean Domain__c?"),
            ),
        ),
    ),
    Case(
        "Salesforce domain fields are read whatever their case",
        mapping(domain_fields=("website", "DOMAIN__C")),
    ),
    Case(
        "HubSpot property names are exact",
        mapping(domain_fields=("website",), destination="hubspot"),
        expected=(
            (
                ("match", "domain_fields", 0),
                "error",
                ("no domain field website: write it Website, as the schema spells it",),
            ),
        ),
    ),
    Case(
        "a target is looked up by its exact name (the planner does)",
        mapping(one_field("pqa_score__c", "score")),
        expected=((("fields", "pqa_score__c"), "error", ("write it PQA_Score__c",)),),
    ),
    Case(
        "a domain field that is a number",
        mapping(domain_fields=("Website", "NumberOfEmployees")),
        expected=(
            (
                ("match", "domain_fields", 1),
                "error",
                ("NumberOfEmployees", "is an integer field", "must hold text"),
            ),
        ),
    ),
    Case(
        "a domain field that is a date",
        mapping(domain_fields=("CreatedDate",)),
        expected=((("match", "domain_fields", 0), "error", ("a datetime field",)),),
    ),
    Case(
        "a domain field that is a picklist or a long text is fine",
        mapping(domain_fields=("PQA_Tier__c", "Description")),
    ),
    # --- targets: existence, writability, type
    Case(
        "a missing target is suggested by its label",
        mapping(one_field("Sales_Motion__c", "motion")),
        expected=(
            (
                ("fields", "Sales_Motion__c"),
                "error",
                ('did you mean PQA_Motion__c (label "Sales Motion")?',),
            ),
        ),
    ),
    Case(
        "a missing target without a close name says to check it",
        mapping(one_field("Renewal_Date__c", "first_seen")),
        expected=(
            (
                ("fields", "Renewal_Date__c"),
                "error",
                ("Account has no field Renewal_Date__c", "API names, not labels"),
            ),
        ),
    ),
    Case(
        "a read-only target",
        specs=specs_with("PQA_Score__c", updateable=False),
        expected=(
            (
                ("fields", "PQA_Score__c"),
                "error",
                ("PQA_Score__c on Account is read-only", "edit access"),
            ),
        ),
    ),
    Case(
        "a source the field type cannot hold",
        mapping(one_field("PQA_Score__c", "qualified_since")),
        expected=(
            (
                ("fields", "PQA_Score__c"),
                "error",
                ("a number field and cannot hold qualified_since", "a date or text field"),
            ),
        ),
    ),
    # --- numbers
    Case(
        "a score field too small for 100",
        specs=specs_with("PQA_Score__c", precision=2),
        expected=(
            (
                ("fields", "PQA_Score__c"),
                "error",
                ("Number(2, 0)", "below 100", "0 to 100", "at least 3 digits"),
            ),
        ),
    ),
    Case(
        "decimal places take digits from the integer part",
        specs=specs_with("PQA_Score__c", precision=4, scale=2),
        expected=((("fields", "PQA_Score__c"), "error", ("Number(2, 2)",)),),
    ),
    Case(
        "three digits before the point are enough",
        specs=specs_with("PQA_Score__c", precision=5, scale=2),
    ),
    Case(
        "a score change field too small for -100",
        specs=specs_with("PQA_Score_Change__c", precision=2),
        expected=((("fields", "PQA_Score_Change__c"), "error", ("-100 to 100",)),),
    ),
    Case(
        "a previous score field too small",
        mapping(one_field("PQA_Score__c", "previous_score")),
        specs=specs_with("PQA_Score__c", precision=1),
        expected=((("fields", "PQA_Score__c"), "error", ("below 10", "previous_score")),),
    ),
    Case(
        "component points reach 100 too",
        mapping(one_field("PQA_Active_Users__c", "components.team_size")),
        expected=((("fields", "PQA_Active_Users__c"), "error", ("components.team_size",)),),
    ),
    Case(
        "metrics have no known range (PQA_Active_Users__c is Number(2, 0))",
        mapping(one_field("PQA_Active_Users__c", "metrics.active_users_28d")),
    ),
    Case(
        "a number without a known precision (HubSpot) is not checked",
        specs=specs_with("PQA_Score__c", precision=None),
    ),
    # --- text lengths
    Case(
        "tier values longer than the field are cut into other values",
        mapping(one_field("Description", "tier")),
        specs=specs_with("Description", length=6),
        expected=(
            (
                ("fields", "Description"),
                "error",
                ("length 6", "values success, self_serve are longer", "at least 10"),
            ),
        ),
    ),
    Case(
        "a max_length shorter than a motion value is the same error",
        mapping(one_field("Description", "motion", max_length=4)),
        expected=((("fields", "Description"), "error", ("max_length 4", "sales, success")),),
    ),
    Case(
        "a domain into a short text field is cut: a warning",
        mapping(one_field("Domain__c", "domain")),
        specs=specs_with("Domain__c", length=80),
        expected=((("fields", "Domain__c"), "warning", ("length 80", "253", "cut to 80")),),
    ),
    Case(
        "a max_length on a domain asks for the cut",
        mapping(one_field("Domain__c", "domain", max_length=40)),
    ),
    Case(
        "signals and buyers are truncated on purpose",
        mapping((FieldMapping("PQA_Signals__c", "signals"), FieldMapping("Description", "buyers"))),
        specs=specs_with("Description", length=10),
    ),
    # --- picklists
    Case(
        "a restricted picklist without a motion pls-sync writes",
        specs=specs_with("PQA_Motion__c", picklist_values=("sales", "success", "self_serve")),
        expected=(
            (
                ("fields", "PQA_Motion__c"),
                "error",
                (
                    "does not list motion value abm",
                    "(it has: sales, success, self_serve)",
                    "Salesforce rejects those records",
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                ),
            ),
        ),
    ),
    Case(
        "an unrestricted picklist stores the value: a warning",
        specs=specs_with("PQA_Motion__c", picklist_values=("sales", "success"), restricted=False),
        expected=(
            (
                ("fields", "PQA_Motion__c"),
                "warning",
                (
                    "motion values abm, self_serve",
                    "reports and filters",
                    "(it has: sales, success)",
                ),
            ),
        ),
    ),
    Case(
        "a HubSpot enumeration without an option",
        mapping(destination="hubspot"),
        specs=specs_with("PQA_Lead_Channel__c", picklist_values=CHANNELS[:3]),
        expected=(
            (
                ("fields", "PQA_Lead_Channel__c"),
                "error",
                ("usage_no_buyer", "HubSpot rejects those records (INVALID_OPTION)"),
            ),
        ),
    ),
    Case(
        "the raw tier is checked against the tier names too",
        mapping(one_field("PQA_Tier__c", "raw_tier")),
        specs=specs_with("PQA_Tier__c", picklist_values=("sales",)),
        expected=((("fields", "PQA_Tier__c"), "error", ("raw_tier values success, self_serve",)),),
    ),
    Case(
        "free text into a restricted picklist is always rejected",
        mapping(one_field("PQA_Tier__c", "signals")),
        expected=(
            (
                ("fields", "PQA_Tier__c"),
                "error",
                ("restricted picklist and signals is free text", "reject every record"),
            ),
        ),
    ),
    Case(
        "free text into an unrestricted picklist: a warning",
        mapping(one_field("PQA_Tier__c", "domain")),
        specs=specs_with("PQA_Tier__c", restricted=False),
        expected=((("fields", "PQA_Tier__c"), "warning", ("domain is free text",)),),
    ),
    Case(
        "values unknown to the caller are not guessed",
        specs=specs_with("PQA_Motion__c", picklist_values=("sales",)),
        writable={k: v for k, v in WRITABLE.items() if k != "motion"},
    ),
    # --- the object
    Case(
        "an object without fields is one problem, not one per field",
        specs={},
        expected=((("object",), "error", ("describes no fields on Account",)),),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_check(case: Case) -> None:
    problems = check_mapping_schema(case.mapping, case.specs, case.writable)
    assert [(p.key, p.severity) for p in problems] == [(k, s) for k, s, _ in case.expected]
    for problem, (_, _, fragments) in zip(problems, case.expected, strict=True):
        for fragment in fragments:
            assert fragment in problem.message
        assert "\n" not in problem.message


def test_every_problem_at_once_in_mapping_order() -> None:
    broken = mapping(
        fields=(
            FieldMapping("PQA_Motion__c", "motion"),
            FieldMapping("PQA_Scor__c", "score"),
            FieldMapping("PQA_Signals__c", "signals"),
            FieldMapping("PQA_Score_Change__c", "score_change"),
            FieldMapping("Domain__c", "domain"),
        ),
        domain_fields=("Website", "Domain_c", "CreatedDate"),
    )
    specs = {
        **specs_with("PQA_Motion__c", picklist_values=("sales",)),
        "PQA_Score_Change__c": replace(SPECS["PQA_Score_Change__c"], updateable=False),
        "Domain__c": replace(SPECS["Domain__c"], length=64),
    }
    problems = check_mapping_schema(broken, specs, WRITABLE)
    assert [(p.key, p.severity) for p in problems] == [
        (("match", "domain_fields", 1), "error"),
        (("match", "domain_fields", 2), "error"),
        (("fields", "PQA_Motion__c"), "error"),
        (("fields", "PQA_Scor__c"), "error"),
        (("fields", "PQA_Score_Change__c"), "error"),
        (("fields", "Domain__c"), "warning"),
    ]
    assert "did you mean PQA_Score__c?" in problems[3].message
    assert [p.is_error for p in problems] == [True] * 5 + [False]


def test_a_problem_defaults_to_an_error() -> None:
    problem = SchemaProblem(("object",), "no such object")
    assert problem.severity == "error" and problem.is_error


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("pqa_score__c", "PQA_Score__c"),  # case only
        ("PQA_Score", "PQA_Score__c"),  # the __c suffix forgotten
        ("PQA_Scroe__c", "PQA_Score__c"),  # a typo
        ("Employees", 'NumberOfEmployees (label "Employees")'),  # the label
        ("Account Description", 'Description (label "Account Description")'),
        ("Renewal_Date__c", None),
        ("__c", None),
    ],
)
def test_suggestions(typed: str, expected: str | None) -> None:
    assert suggest_field(typed, SPECS) == expected
