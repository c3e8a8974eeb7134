"""``pls-sync setup`` against a bare CRM (no pls-sync field anywhere), through the CLI.

The plan first, then ``--apply`` creates every field both CRMs need; ``validate`` passes, a run
writes with zero rejections, and a second ``--apply`` changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pls_sync.sandbox.server import Sandbox
from tests.e2e.conftest import DEMO_COMPANIES, DEMO_SEED, Workdir, point_at

SF_FIELDS = (
    "PQA_Score__c",
    "PQA_Tier__c",
    "PQA_Signals__c",
    "PQA_Score_Change__c",
    "PQA_Active_Users__c",
    "PQA_Qualified_Since__c",
    "PQA_Lead_Channel__c",
    "PQA_Motion__c",
)
HS_FIELDS = tuple(
    f"pqa_{name}"
    for name in (
        "score",
        "tier",
        "signals",
        "score_change",
        "active_users",
        "qualified_since",
        "lead_channel",
        "motion",
    )
)
SCHEMA_WRITES = ("sf.tooling", "hs.properties.create", "hs.properties.update")


@pytest.fixture
def bare(workdir: Workdir, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A CRM sandbox with the demo companies and none of pls-sync's fields; alerts on."""
    from pls_sync.demo_companies import demo_companies

    box = Sandbox(
        port=0, seed=DEMO_SEED, companies=demo_companies(DEMO_SEED, DEMO_COMPANIES), bare=True
    ).start()
    point_at(box, workdir, monkeypatch)
    monkeypatch.setenv("PLS_SYNC_ALERTS_ENABLED", "true")
    try:
        yield box
    finally:
        box.stop()


def schema_writes(box: Sandbox) -> int:
    return sum(n for name, n in box.counts().items() if name.startswith(SCHEMA_WRITES))


def test_setup_plans_then_creates_every_field_and_a_second_apply_changes_nothing(
    workdir: Workdir, bare: Sandbox
) -> None:
    assert bare.hubspot is not None
    assert "PQA_Score__c" not in bare.salesforce.describe_fields("Account")
    assert "pqa_score" not in bare.hubspot.properties["companies"]

    planned = workdir.invoke("setup")
    assert planned.exit_code == 0, planned.output
    for name in (*SF_FIELDS, "Task.PQA_Alert_Key__c", *HS_FIELDS, "tasks.pqa_alert_key"):
        assert "create" in planned.output and name in planned.output, name
    assert "run `pls-sync setup --apply`" in planned.output
    assert schema_writes(bare) == 0  # a plan changes nothing

    refused = workdir.invoke("validate")
    assert refused.exit_code == 2, refused.output
    assert "pls-sync setup -d salesforce -d hubspot" in refused.output

    applied = workdir.invoke("setup", "--apply", "--assign")
    assert applied.exit_code == 0, applied.output
    assert applied.output.count("done") >= len(SF_FIELDS) + len(HS_FIELDS) + 2
    account = bare.salesforce.describe_fields("Account")
    assert set(SF_FIELDS) <= set(account)
    assert set(HS_FIELDS) <= set(bare.hubspot.properties["companies"])

    checked = workdir.invoke("validate")
    assert checked.exit_code == 0, checked.output

    result, summary = workdir.sync("run", summary="run.json")
    assert result.exit_code == 0, result.output
    for name in ("salesforce", "hubspot"):
        destination = summary["destinations"][name]
        assert destination["status"] == "succeeded", destination
        assert destination["rejected"] == 0 and destination["records_written"] > 0

    before = schema_writes(bare)
    again = workdir.invoke("setup", "--apply", "--assign")
    assert again.exit_code == 0, again.output
    assert again.output.count("nothing to change") == 2
    assert schema_writes(bare) == before


def test_without_the_permission_to_customize_setup_says_which_and_what_it_did(
    workdir: Workdir, bare: Sandbox
) -> None:
    """Salesforce refuses field creation to a user without "Customize Application"; HubSpot
    refuses a token without the schema write scope: each is named, nothing is left unsaid."""
    assert bare.hubspot is not None
    bare.salesforce.can_customize = False
    bare.hubspot.scopes.discard("crm.schemas.companies.write")

    result = workdir.invoke("setup", "--apply")

    assert result.exit_code == 1, result.output
    assert "Customize Application" in result.output
    assert "crm.schemas.companies.write" in result.output
    assert "Traceback" not in result.output
    assert "PQA_Score__c" not in bare.salesforce.describe_fields("Account")


def test_a_mapped_field_of_the_wrong_type_is_a_conflict_left_as_it_is(
    workdir: Workdir, bare: Sandbox
) -> None:
    assert bare.hubspot is not None
    # Someone made the score field by hand, as a date.
    bare.salesforce.create_custom_field("Account.PQA_Score__c", {"label": "Score", "type": "Date"})

    result = workdir.invoke("setup", "--apply", "-d", "salesforce")

    assert result.exit_code == 2, result.output
    assert "Account.PQA_Score__c is date, which cannot hold score" in result.output
    assert bare.salesforce.describe_fields("Account")["PQA_Score__c"]["type"] == "date"
    assert "PQA_Tier__c" in bare.salesforce.describe_fields("Account")  # the rest was made
