"""``SalesforceSchemaAdmin`` with real simple-salesforce against the sandbox: plan, create, extend
and grant, idempotently; a user without the permissions gets one line naming them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.salesforce import SalesforceDestination
from connectors.salesforce_setup import PERMISSION_SET_NAME, SalesforceSchemaAdmin
from pls_sync.config import load_settings
from pls_sync.crm_setup import (
    ADD_VALUES,
    CREATE,
    MAKE_EXTERNAL_ID,
    OK,
    FieldRequirement,
    SetupStep,
    plan_setup,
    requirements,
)
from pls_sync.errors import FatalError
from pls_sync.sandbox.server import Sandbox
from pls_sync.service import writable_values

REPO = Path(__file__).resolve().parents[2]
ALERT_KEY = ("Task", "PQA_Alert_Key__c")


@pytest.fixture
def box() -> Iterator[Sandbox]:
    sandbox = Sandbox(port=0, seed=None).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture
def bare() -> Iterator[Sandbox]:
    """An org without pls-sync's fields (``pls-sync sandbox --bare``)."""
    sandbox = Sandbox(port=0, seed=None, bare=True).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="module")
def needed() -> list[FieldRequirement]:
    """What the shipped Salesforce mapping needs, rep alerts on."""
    settings = load_settings(REPO / "config" / "pls_sync.yaml")
    values = writable_values(settings.scoring, settings.channels)
    return requirements(settings.destinations["salesforce"].mapping, values, alert_key=ALERT_KEY)


def admin_for(box: Sandbox) -> SalesforceSchemaAdmin:
    destination = SalesforceDestination.from_env(
        {"SALESFORCE_INSTANCE_URL": box.url, "SALESFORCE_SESSION_ID": box.session_id}
    )
    return SalesforceSchemaAdmin(destination)


def plan(admin: SalesforceSchemaAdmin, needed: list[FieldRequirement]) -> list[SetupStep]:
    return plan_setup("salesforce", needed, admin.live_schema(["Account", "Task"]))


def test_a_bare_org_gets_every_field_and_a_second_plan_is_all_ok(
    bare: Sandbox, needed: list[FieldRequirement]
) -> None:
    admin = admin_for(bare)
    steps = plan(admin, needed)
    creates = [step for step in steps if step.action == CREATE]
    assert {s.requirement.name for s in creates} >= {
        "PQA_Score__c",
        "Domain__c",
        "PQA_Alert_Key__c",
    }
    # The standard fields it reads: the match field and the employee count (for the fit).
    assert [s.requirement.name for s in steps if s.action == OK] == ["Website", "NumberOfEmployees"]

    done = [admin.apply(step) for step in steps if step.changes]
    assert "created Account.PQA_Score__c (Number(3, 0))" in done
    assert bare.counts()["sf.tooling.customfield.create"] == len(creates)

    account = bare.salesforce.describe_fields("Account")
    score, tier, signals = (
        account["PQA_Score__c"],
        account["PQA_Tier__c"],
        account["PQA_Signals__c"],
    )
    assert (score["type"], score["precision"], score["scale"]) == ("double", 3, 0)
    tier_values = next(r.values for r in needed if r.name == "PQA_Tier__c")
    assert tier["restrictedPicklist"] is True
    assert tuple(p["value"] for p in tier["picklistValues"]) == tier_values
    assert (signals["type"], signals["length"]) == ("textarea", 32_768)
    assert account["PQA_Qualified_Since__c"]["type"] == "datetime"
    assert (account["Domain__c"]["type"], account["Domain__c"]["length"]) == ("string", 255)
    key = bare.salesforce.describe_fields("Task")["PQA_Alert_Key__c"]
    assert (key["length"], key["externalId"], key["unique"]) == (64, True, True)

    assert {step.action for step in plan(admin, needed)} == {OK}


def test_adding_values_keeps_the_picklists_own(
    box: Sandbox, needed: list[FieldRequirement]
) -> None:
    box.salesforce.change_field("Account", "PQA_Motion__c", picklist=["sales", "legacy"])
    admin = admin_for(box)
    step = next(s for s in plan(admin, needed) if s.requirement.name == "PQA_Motion__c")
    assert (step.action, step.missing_values) == (ADD_VALUES, ("success", "abm", "self_serve"))
    assert admin.apply(step) == "added success, abm, self_serve to Account.PQA_Motion__c"
    motion = box.salesforce.describe_fields("Account")["PQA_Motion__c"]
    assert [p["value"] for p in motion["picklistValues"]] == [
        "sales",
        "legacy",
        "success",
        "abm",
        "self_serve",
    ]
    assert motion["restrictedPicklist"] is True
    again = next(s for s in plan(admin, needed) if s.requirement.name == "PQA_Motion__c")
    assert again.action == OK


def test_a_plain_text_key_becomes_a_unique_external_id(
    box: Sandbox, needed: list[FieldRequirement]
) -> None:
    box.salesforce.change_field("Task", "PQA_Alert_Key__c", delete=True)
    box.salesforce.create_custom_field(
        "Task.PQA_Alert_Key__c", {"label": "PQA Alert Key", "type": "Text", "length": 64}
    )
    admin = admin_for(box)
    step = next(s for s in plan(admin, needed) if s.requirement.name == "PQA_Alert_Key__c")
    assert step.action == MAKE_EXTERNAL_ID
    assert admin.apply(step) == "made Task.PQA_Alert_Key__c an External ID (unique)"
    key = box.salesforce.describe_fields("Task")["PQA_Alert_Key__c"]
    assert (key["externalId"], key["unique"], key["length"], key["label"]) == (
        True,
        True,
        64,
        "PQA Alert Key",
    )


def test_live_schema_reads_past_the_destinations_describe_cache(
    bare: Sandbox, needed: list[FieldRequirement]
) -> None:
    admin = admin_for(bare)
    assert "PQA_Score__c" not in admin.destination.describe("Account")
    admin.apply(next(s for s in plan(admin, needed) if s.requirement.name == "PQA_Score__c"))
    assert "PQA_Score__c" in admin.live_schema(["Account"])["Account"]


def test_the_permission_set_is_made_granted_and_assigned_once(
    box: Sandbox, needed: list[FieldRequirement]
) -> None:
    admin = admin_for(box)
    done = admin.grant_access(needed, assign=True)
    assert done[0] == f"created permission set {PERMISSION_SET_NAME} (pls-sync integration)"
    assert done[-1] == f"assigned {PERMISSION_SET_NAME} to the running user revops@pls-sync.sandbox"
    api = box.salesforce
    rows = {
        r["Field"]: (r["PermissionsRead"], r["PermissionsEdit"])
        for r in api.records["FieldPermissions"].values()
    }
    assert rows["Account.PQA_Score__c"] == (True, True)
    assert rows["Task.PQA_Alert_Key__c"] == (True, True)
    assert rows["Account.Website"] == rows["Account.Domain__c"] == (True, False)
    assert len(rows) == len(needed)

    assert admin.grant_access(needed, assign=True) == []
    assert len(api.records["PermissionSet"]) == len(api.records["PermissionSetAssignment"]) == 1

    score = next(
        r for r in api.records["FieldPermissions"].values() if r["Field"].endswith("Score__c")
    )
    score["PermissionsEdit"] = False  # an admin took edit away
    assert admin.grant_access(needed, assign=False) == [
        f"granted read and edit on Account.PQA_Score__c (permission set {PERMISSION_SET_NAME})"
    ]
    assert score["PermissionsEdit"] is True


def test_without_assign_the_set_is_left_unassigned(
    box: Sandbox, needed: list[FieldRequirement]
) -> None:
    admin_for(box).grant_access(needed, assign=False)
    assert box.salesforce.records["PermissionSet"]
    assert not box.salesforce.records["PermissionSetAssignment"]


def test_a_user_who_cannot_customize_is_told_which_permission(
    bare: Sandbox, needed: list[FieldRequirement]
) -> None:
    bare.salesforce.can_customize = False
    admin = admin_for(bare)
    step = next(s for s in plan(admin, needed) if s.action == CREATE)
    with pytest.raises(FatalError) as caught:
        admin.apply(step)
    assert caught.value.code == "setup_permission"
    assert "lacks 'Customize Application'" in str(caught.value)
    assert "INSUFFICIENT_ACCESS_OR_READONLY" in str(caught.value)
    assert bare.session_id not in str(caught.value)

    bare.salesforce.can_manage_permissions = False
    with pytest.raises(FatalError) as refused:
        admin.grant_access(needed, assign=True)
    assert "lacks 'Manage Profiles and Permission Sets'" in str(refused.value)
