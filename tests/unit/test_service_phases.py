"""The run's order of work: check every mapping against its live schema, plan, save the plan,
then write; what a failure at each point leaves behind. Fakes only."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pls_sync.errors import FatalError
from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.models import CrmRecord, FieldSpec, FieldType, ProductAccount
from pls_sync.scoring import Component, ScoringModel, Tier
from pls_sync.service import Adapters, RunOptions, account_lists, run_sync, writable_values
from tests.fakes import FakeCrm, FakeState, FakeUsage

AS_OF = datetime(2026, 11, 22, tzinfo=UTC)
OLD = AS_OF - timedelta(days=200)
MODEL = ScoringModel(
    components=(Component("team", 1.0, ("active_users_28d",), ((0, 0), (10, 100)), "users"),),
    tiers=(Tier("sales", 80), Tier("success", 60), Tier("self_serve", 0)),
)
TIERS = ("sales", "success", "self_serve")
SPECS = {
    "PQA_Score__c": FieldSpec("PQA_Score__c", FieldType.NUMBER, scale=0, precision=3),
    "PQA_Tier__c": FieldSpec(
        "PQA_Tier__c", FieldType.PICKLIST, length=255, picklist_values=TIERS, restricted=True
    ),
    "Website": FieldSpec("Website", FieldType.STRING, length=255),
}
MAPPING_LINES = {("object",): 1, ("match", "domain_fields", 0): 3, ("fields", "PQA_Tier__c"): 7}
MAPPING = DestinationMapping(
    "salesforce",
    "Account",
    MatchRule(("Website",)),
    (FieldMapping("PQA_Score__c", "score"), FieldMapping("PQA_Tier__c", "tier")),
    source_file="mappings/salesforce.yaml",
    lines=MAPPING_LINES,
)


def last_run(state: FakeState) -> Any:
    return list(state.runs.values())[-1]


def accounts(users: dict[str, float]) -> list[ProductAccount]:
    return [ProductAccount(d, d, {"active_users_28d": n}, first_seen=OLD) for d, n in users.items()]


def crm(name: str, specs: dict[str, FieldSpec] = SPECS) -> FakeCrm:
    records = [CrmRecord(f"{name}-{i}", (f"https://co{i}.com",), {}) for i in range(3)]
    return FakeCrm(name, specs, records)


def adapters(state: FakeState, *crms: FakeCrm) -> Adapters:
    usage = FakeUsage(accounts({"co0.com": 9, "co1.com": 7, "co2.com": 1, "nocrm.io": 5}))
    return Adapters(
        usage=usage,
        state=state,
        destinations={c.name: c for c in crms},
        mappings={c.name: replace(MAPPING, destination=c.name) for c in crms},
    )


def test_a_destination_whose_mapping_does_not_fit_is_not_written_and_the_other_is() -> None:
    """The live picklist lacks 'sales': writing would be rejected record by record."""
    narrow = dict(SPECS)
    narrow["PQA_Tier__c"] = replace(SPECS["PQA_Tier__c"], picklist_values=("success", "self_serve"))
    state, broken, fine = FakeState(), crm("salesforce", narrow), crm("hubspot")

    result = run_sync(adapters(state, broken, fine), MODEL, RunOptions(as_of=AS_OF))

    bad = result.summary["destinations"]["salesforce"]
    assert bad["status"] == "invalid"
    assert "nothing was written" in bad["error"]
    (issue,) = bad["issues"]
    assert issue.startswith("mappings/salesforce.yaml:7: fields.PQA_Tier__c: ")
    assert "tier value sales" in issue and "(it has: success, self_serve)" in issue
    assert broken.calls == {"read": 0, "write": 0, "describe": 1}
    assert result.summary["destinations"]["hubspot"]["status"] == "succeeded"
    assert fine.calls["write"] == 1
    assert result.status == "partial"
    assert last_run(state).summary["destinations"]["salesforce"]["status"] == "invalid"


def test_the_plan_is_saved_before_anything_is_written(tmp_path: Path) -> None:
    sf = crm("salesforce")
    seen: list[dict[str, Any]] = []
    sf.before_batch = lambda _offset: seen.append(
        json.loads((tmp_path / "latest.json").read_text())
    )

    result = run_sync(adapters(FakeState(), sf), MODEL, RunOptions(as_of=AS_OF, plans_dir=tmp_path))

    (on_disk,) = seen
    assert on_disk["run_id"] == result.summary["run_id"]
    assert on_disk["summary"]["status"] == "planned"
    (destination,) = on_disk["destinations"]
    fields = {c["record_id"]: c["fields"] for c in destination["changes"]}
    assert fields["salesforce-0"]["PQA_Tier__c"] == {"from": None, "to": "sales"}
    assert result.summary["plan_file"] == str(tmp_path / f"plan-{result.summary['run_id']}.json")


def test_an_unwritable_plans_folder_fails_the_run_before_it_reads_or_writes(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    state, sf = FakeState(), crm("salesforce")

    with pytest.raises(FatalError, match="a-file"):
        run_sync(adapters(state, sf), MODEL, RunOptions(as_of=AS_OF, plans_dir=blocker / "plans"))

    assert sf.calls == {"read": 0, "write": 0, "describe": 0}
    assert last_run(state).status == "failed"
    assert "a-file" in (last_run(state).error or "")


class ListsFail(FakeState):
    """A state store that fails once the CRM has been written."""

    def save_lists(self, run_id: str, at: datetime, lists: Any) -> None:
        raise FatalError("state store went away")


def test_a_failure_after_the_writes_still_records_what_was_written() -> None:
    state, sf = ListsFail(), crm("salesforce")

    with pytest.raises(FatalError, match="went away"):
        run_sync(adapters(state, sf), MODEL, RunOptions(as_of=AS_OF))

    run = last_run(state)
    assert run.status == "failed" and "went away" in (run.error or "")
    assert run.summary["destinations"]["salesforce"]["records_written"] == 3
    assert sf.calls["write"] == 1


def test_every_run_keeps_the_whole_lists_for_pls_sync_lists() -> None:
    state, sf = FakeState(), crm("salesforce")

    result = run_sync(adapters(state, sf), MODEL, RunOptions(as_of=AS_OF))

    stored = state.load_lists()
    assert stored is not None
    run_id, at, lists = stored
    assert (run_id, at) == (result.summary["run_id"], AS_OF)
    assert lists["unmatched"] == [
        {
            "destination": "salesforce",
            "domain": "nocrm.io",
            "account": "nocrm.io",
            "score": 50,
            "tier": "self_serve",
            "users": 0,
            "active_users": 5,
        }
    ]
    assert lists["abm"] == [] and lists["stale"] == []


def test_a_dry_run_keeps_no_lists() -> None:
    state, sf = FakeState(), crm("salesforce")

    run_sync(adapters(state, sf), MODEL, RunOptions(as_of=AS_OF, dry_run=True))

    assert state.load_lists() is None


def test_lists_are_ranked_by_score_then_domain() -> None:
    state, sf = FakeState(), crm("salesforce")
    result = run_sync(adapters(state, sf), MODEL, RunOptions(as_of=AS_OF, dry_run=True))
    results = [replace(r, lead_channel="usage_no_buyer") for r in result.scored.results]
    result.scored.results = results

    abm = account_lists(result.scored, result.outcomes)["abm"]

    assert [(row["domain"], row["score"]) for row in abm] == [
        ("co0.com", 90),
        ("co1.com", 70),
        ("nocrm.io", 50),
        ("co2.com", 10),
    ]


def test_writable_values_name_every_tier_channel_and_motion() -> None:
    values = writable_values(MODEL, None)

    assert values["tier"] == TIERS == values["raw_tier"]
    assert set(values["lead_channel"]) == {"usage_pql", "usage_mql", "mql_only", "usage_no_buyer"}
    assert set(values["motion"]) == {"sales", "success", "abm", "self_serve"}
