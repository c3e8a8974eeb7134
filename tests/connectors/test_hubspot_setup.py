"""``HubSpotSchemaAdmin`` with the real hubspot-api-client against the sandbox.

A bare portal (no pls-sync property) is planned from the shipped mapping
(``mappings/hubspot.yaml``) with alerts on, every step is applied, and the portal then holds
each property with HubSpot's type, fieldType and options in the ``pls_sync`` group: a second
plan is all ``ok``. Shapes are HubSpot's:

* ``POST /crm/v3/properties/{objectType}`` (name, label, type, fieldType, groupName, options,
  hasUniqueValue): https://developers.hubspot.com/docs/api-reference/latest/crm/properties/create-property
* ``POST /crm/v3/properties/{objectType}/groups`` (name, label, displayOrder):
  https://developers.hubspot.com/docs/api-reference/legacy/crm/properties/groups/create-property
* a taken name is "a 409 Conflict error ... Property names must be unique":
  https://legacydocs.hubspot.com/docs/methods/contacts/v2/create_contacts_property
* a token without the scope: 403 ``MISSING_SCOPES`` listing ``requiredGranularScopes``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from connectors.hubspot import HubSpotDestination
from connectors.hubspot_setup import GROUP_LABEL, GROUP_NAME, HubSpotSchemaAdmin, required_scopes
from pls_sync.config import Settings, load_settings
from pls_sync.crm_setup import (
    ADD_VALUES,
    CREATE,
    MAKE_EXTERNAL_ID,
    OK,
    SetupStep,
    plan_setup,
    requirements,
)
from pls_sync.errors import FatalError
from pls_sync.sandbox.hubspot import HubSpotApi
from pls_sync.sandbox.server import Sandbox
from pls_sync.service import writable_values

REPO = Path(__file__).resolve().parents[2]
# HubSpot's (type, fieldType) for what ``mappings/hubspot.yaml`` writes, and the alert key.
EXPECTED = {
    ("companies", "pqa_score"): ("number", "number"),
    ("companies", "pqa_tier"): ("enumeration", "select"),
    ("companies", "pqa_signals"): ("string", "textarea"),
    ("companies", "pqa_score_change"): ("number", "number"),
    ("companies", "pqa_active_users"): ("number", "number"),
    ("companies", "pqa_qualified_since"): ("datetime", "date"),
    ("companies", "pqa_lead_channel"): ("enumeration", "select"),
    ("companies", "pqa_motion"): ("enumeration", "select"),
    ("tasks", "pqa_alert_key"): ("string", "text"),
}


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(REPO / "config" / "pls_sync.yaml")


def _start(*, bare: bool) -> Sandbox:
    box = Sandbox(port=0, seed=None)
    if bare:
        # What ``Sandbox(bare=True)`` wires: the same HubSpot module, without pls-sync's fields.
        assert box.hubspot is not None
        portal = HubSpotApi(7, companies=[], token=box.hubspot_token, bare=True)
        box._server.apis = [portal if api is box.hubspot else api for api in box._server.apis]
        box.hubspot = portal
    return box.start()


@pytest.fixture
def bare() -> Iterator[Sandbox]:
    box = _start(bare=True)
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture
def full() -> Iterator[Sandbox]:
    box = _start(bare=False)
    try:
        yield box
    finally:
        box.stop()


def admin_for(box: Sandbox) -> HubSpotSchemaAdmin:
    return HubSpotSchemaAdmin(HubSpotDestination(box.hubspot_token, base_url=box.url))


def plan(admin: HubSpotSchemaAdmin, settings: Settings) -> list[SetupStep]:
    mapping = settings.destinations["hubspot"].mapping
    values = writable_values(settings.scoring, settings.channels)
    needed = requirements(
        mapping, values, alert_key=("tasks", settings.channels.hs_alert_key_property)
    )
    objects = list(dict.fromkeys(req.object for req in needed))
    return plan_setup("hubspot", needed, admin.live_schema(objects))


def portal(box: Sandbox) -> HubSpotApi:
    assert box.hubspot is not None
    return box.hubspot


def creates(box: Sandbox) -> int:
    return int(box.counts().get("hs.properties.create", 0))


def test_a_bare_portal_gets_every_property_and_a_second_plan_is_all_ok(
    bare: Sandbox, settings: Settings
) -> None:
    admin = admin_for(bare)
    steps = plan(admin, settings)
    assert {(s.requirement.object, s.requirement.name): s.action for s in steps} == {
        **{key: CREATE for key in EXPECTED},
        ("companies", "domain"): OK,  # the match fields, HubSpot's own
        ("companies", "hs_additional_domains"): OK,
        ("companies", "numberofemployees"): OK,  # read for the fit, HubSpot's own
    }

    done = [admin.apply(step) for step in steps if step.changes]

    assert "created companies.pqa_score (number)" in done
    assert "created tasks.pqa_alert_key (string)" in done
    assert len(done) == len(EXPECTED) == creates(bare)
    assert bare.counts()["hs.property_groups.create"] == 2  # once per object
    definitions = portal(bare).properties
    for (obj, name), kinds in EXPECTED.items():
        created = definitions[obj][name]
        assert (created["type"], created["fieldType"]) == kinds, name
        assert created["groupName"] == GROUP_NAME
        assert created["hasUniqueValue"] is False
    for obj in ("companies", "tasks"):
        assert portal(bare).groups[obj][GROUP_NAME]["label"] == GROUP_LABEL
    values = writable_values(settings.scoring, settings.channels)
    for name, source in (("pqa_tier", "tier"), ("pqa_motion", "motion")):
        options = definitions["companies"][name]["options"]
        assert [(o["value"], o["label"], o["hidden"]) for o in options] == [
            (value, value, False) for value in values[source]
        ]
    assert definitions["companies"]["pqa_score"]["label"] == "PQA Score"

    again = plan(admin_for(bare), settings)
    assert {step.action for step in again} == {OK}


def test_added_values_keep_every_option_and_show_a_hidden_one_again(
    full: Sandbox, settings: Settings
) -> None:
    patched = requests.patch(
        f"{full.url}/crm/v3/properties/companies/pqa_motion",
        json={
            "options": [
                {"value": "sales", "label": "Sales team", "displayOrder": 0, "hidden": False},
                {"value": "nurture", "label": "Nurture", "displayOrder": 1, "hidden": False},
                {"value": "abm", "label": "ABM", "displayOrder": 2, "hidden": True},
            ]
        },
        headers={"Authorization": f"Bearer {full.hubspot_token}"},
        timeout=10,
    )
    assert patched.status_code == 200
    admin = admin_for(full)
    (step,) = [s for s in plan(admin, settings) if s.requirement.name == "pqa_motion"]
    assert step.action == ADD_VALUES
    assert step.missing_values == ("success", "abm", "self_serve")

    line = admin.apply(step)

    assert line == "added success, abm, self_serve to companies.pqa_motion (now 5 options)"
    options = portal(full).properties["companies"]["pqa_motion"]["options"]
    assert [(o["value"], o["label"], o["hidden"]) for o in options] == [
        ("sales", "Sales team", False),
        ("nurture", "Nurture", False),
        ("abm", "ABM", False),
        ("success", "success", False),
        ("self_serve", "self_serve", False),
    ]
    (again,) = [s for s in plan(admin, settings) if s.requirement.name == "pqa_motion"]
    assert again.action == OK


def test_a_token_without_the_schema_write_scope_is_refused_naming_it(
    bare: Sandbox, settings: Settings
) -> None:
    portal(bare).scopes.discard("crm.schemas.companies.write")
    admin = admin_for(bare)
    steps = plan(admin, settings)  # reading needs only the read scope

    with pytest.raises(FatalError) as refused:
        admin.apply(steps[0])

    assert refused.value.code == "setup_permission"
    message = str(refused.value)
    assert "'crm.schemas.companies.write'" in message and "MISSING_SCOPES" in message
    assert "pqa_score" not in portal(bare).properties["companies"]
    assert creates(bare) == 0


def test_a_token_without_the_read_scope_cannot_plan(bare: Sandbox, settings: Settings) -> None:
    portal(bare).scopes.discard("crm.schemas.companies.read")
    with pytest.raises(FatalError, match="'crm.schemas.companies.read' needed to read companies"):
        plan(admin_for(bare), settings)


def test_a_property_created_since_the_plan_stops_the_step(
    bare: Sandbox, settings: Settings
) -> None:
    admin = admin_for(bare)
    score = next(s for s in plan(admin, settings) if s.requirement.name == "pqa_score")
    admin.apply(score)
    with pytest.raises(FatalError, match="created by someone else since the plan") as raised:
        admin.apply(score)
    assert raised.value.code == "setup_conflict"


def test_external_id_steps_do_not_exist_on_hubspot_and_there_is_no_access_to_grant(
    bare: Sandbox, settings: Settings
) -> None:
    admin = admin_for(bare)
    step = plan(admin, settings)[-1]
    odd = SetupStep(MAKE_EXTERNAL_ID, step.requirement, "make it an External ID")
    with pytest.raises(FatalError, match="no External ID"):
        admin.apply(odd)
    assert admin.grant_access([s.requirement for s in plan(admin, settings)], assign=True) == []
    assert creates(bare) == 0


@pytest.mark.parametrize(
    ("body", "scopes"),
    [
        (
            '{"category": "MISSING_SCOPES", "errors": [{"context": '
            '{"requiredGranularScopes": ["crm.schemas.companies.write"]}}]}',
            ["crm.schemas.companies.write"],
        ),
        ({"errors": [{"context": {"requiredGranularScopes": ["a", "b"]}}]}, ["a", "b"]),
        ("not json", []),
        ('{"errors": "none"}', []),
        (None, []),
    ],
)
def test_required_scopes_reads_what_hubspot_lists(body: Any, scopes: list[str]) -> None:
    assert required_scopes(body) == scopes
