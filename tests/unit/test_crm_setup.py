"""What ``pls-sync setup`` plans: the fields a mapping needs, against the live schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from pls_sync.config import load_settings
from pls_sync.crm_setup import (
    ADD_VALUES,
    CONFLICT,
    CREATE,
    MAKE_EXTERNAL_ID,
    OK,
    READ,
    FieldRequirement,
    plan_setup,
    plan_step,
    requirements,
)
from pls_sync.mapping import DestinationMapping
from pls_sync.models import FieldSpec, FieldType
from pls_sync.service import writable_values

CONFIG = Path(__file__).resolve().parents[2] / "config" / "pls_sync.yaml"


def shipped(destination: str) -> tuple[DestinationMapping, dict[str, tuple[str, ...]]]:
    settings = load_settings(CONFIG, env={"PLS_SYNC_HUBSPOT_ENABLED": "true"})
    values = writable_values(settings.scoring, settings.channels)
    return settings.destinations[destination].mapping, values


def by_name(needed: list[FieldRequirement]) -> dict[str, FieldRequirement]:
    return {req.name: req for req in needed}


def test_the_shipped_salesforce_mapping_needs_its_fields_typed_for_their_sources() -> None:
    mapping, values = shipped("salesforce")
    needed = by_name(requirements(mapping, values, alert_key=("Task", "PQA_Alert_Key__c")))

    assert needed["PQA_Score__c"].describe_type("salesforce") == "Number(3, 0)"
    assert needed["PQA_Tier__c"].type is FieldType.PICKLIST
    assert needed["PQA_Tier__c"].values == values["tier"]
    assert needed["PQA_Motion__c"].values == values["motion"]
    assert needed["PQA_Lead_Channel__c"].values == values["lead_channel"]
    assert needed["PQA_Signals__c"].describe_type("salesforce") == "Long Text Area(32768)"
    assert needed["PQA_Qualified_Since__c"].type is FieldType.DATETIME
    assert needed["PQA_Active_Users__c"].type is FieldType.NUMBER
    # The match fields are read, not written; Website is standard, Domain__c custom.
    assert needed["Website"].access == needed["Domain__c"].access == READ
    key = needed["PQA_Alert_Key__c"]
    assert (key.object, key.external_id, key.length) == ("Task", True, 64)
    assert key.describe_type("salesforce") == "Text(64), External ID, unique"


def test_hubspot_needs_no_external_id_on_its_task_key() -> None:
    mapping, values = shipped("hubspot")
    needed = by_name(requirements(mapping, values, alert_key=("tasks", "pqa_alert_key")))
    assert needed["pqa_alert_key"].external_id is False
    assert needed["pqa_tier"].describe_type("hubspot") == "enumeration (sales, success, self_serve)"
    assert needed["pqa_signals"].describe_type("hubspot") == "multi-line text"
    assert "hs_additional_domains" in needed and needed["domain"].access == READ


def test_a_bare_org_gets_every_custom_field_created_and_no_standard_one() -> None:
    mapping, values = shipped("salesforce")
    needed = requirements(mapping, values, alert_key=("Task", "PQA_Alert_Key__c"))
    standard = {
        "Website": FieldSpec("Website", FieldType.STRING, length=255),
        "NumberOfEmployees": FieldSpec("NumberOfEmployees", FieldType.INTEGER),
    }
    live = {"Account": standard}

    steps = {step.requirement.name: step for step in plan_setup("salesforce", needed, live)}

    assert steps["Website"].action == OK
    assert steps["NumberOfEmployees"].action == OK  # read for the fit, never created
    assert {name for name, step in steps.items() if step.action == CREATE} == {
        req.name for req in needed if req.name not in standard
    }
    assert steps["PQA_Tier__c"].detail.startswith("create Account.PQA_Tier__c as Picklist (")


def test_a_missing_standard_field_is_a_conflict_not_a_creation() -> None:
    req = FieldRequirement("Account", "Websit", "Websit", FieldType.STRING, "domain", length=255)
    step = plan_step("salesforce", req, None)
    assert step.action == CONFLICT and "not a custom field" in step.detail
    assert plan_step("hubspot", req, None).action == CREATE  # any HubSpot property can be made


def test_an_existing_picklist_gets_only_its_missing_values_added() -> None:
    req = FieldRequirement(
        "Account", "PQA_Motion__c", "PQA Motion", FieldType.PICKLIST, "motion",
        values=("sales", "success", "abm", "self_serve"),
    )  # fmt: skip
    spec = FieldSpec(
        "PQA_Motion__c", FieldType.PICKLIST, picklist_values=("Sales", "success", "legacy")
    )
    step = plan_step("salesforce", req, spec)
    assert (step.action, step.missing_values) == (ADD_VALUES, ("abm", "self_serve"))
    assert "keeping its 3 values" in step.detail and step.changes


def test_a_field_of_a_type_that_cannot_hold_the_source_is_reported_never_changed() -> None:
    req = FieldRequirement(
        "Account", "PQA_Score__c", "PQA Score", FieldType.NUMBER, "score", precision=3, scale=0
    )
    step = plan_step("salesforce", req, FieldSpec("PQA_Score__c", FieldType.DATETIME))
    assert step.action == CONFLICT and not step.changes
    assert "never changes a field's type" in step.detail and "Number(3, 0)" in step.detail


@pytest.mark.parametrize(
    ("spec", "action"),
    [
        (FieldSpec("PQA_Alert_Key__c", FieldType.STRING, length=64), MAKE_EXTERNAL_ID),
        (FieldSpec("PQA_Alert_Key__c", FieldType.STRING, length=64, external_id=True), OK),
        (FieldSpec("PQA_Alert_Key__c", FieldType.NUMBER), CONFLICT),
    ],
)
def test_the_alert_key_must_be_a_text_external_id(spec: FieldSpec, action: str) -> None:
    mapping, values = shipped("salesforce")
    key = requirements(mapping, values, alert_key=("Task", "PQA_Alert_Key__c"))[-1]
    assert plan_step("salesforce", key, spec).action == action


def test_text_fields_can_hold_any_source_so_they_are_fine() -> None:
    mapping, values = shipped("salesforce")
    needed = requirements(mapping, values)
    live = {
        "Account": {
            req.name: FieldSpec(req.name, FieldType.TEXTAREA, length=32_768) for req in needed
        }
    }
    steps = plan_setup("salesforce", needed, live)
    kinds = {step.requirement.name: step.action for step in steps}
    assert kinds["PQA_Signals__c"] == kinds["PQA_Tier__c"] == OK
    assert kinds["PQA_Score__c"] == OK  # scores are written as text into a text field
    assert kinds["PQA_Qualified_Since__c"] == OK
