"""Ownership: every record pls-sync owns stays true when the world moves (issue 12).

Accounts that leave the warehouse, records that stop being a target, MQL tags whose MQL is
gone, write policies for fields people edit too, and multi-select values, through the run
service with fakes (the CRM side's real HTTP is covered in tests/e2e and tests/model).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.matching import build_index, match_accounts
from pls_sync.models import CrmRecord, FieldSpec, FieldType, OwnedRecord, ProductAccount
from pls_sync.planning import (
    adopt_owned,
    canonical,
    effective_modified,
    plan_changes,
    values_equal,
)
from pls_sync.scoring import Component, ScoringModel, Tier
from pls_sync.service import Adapters, RunOptions, run_sync
from tests.fakes import FakeCrm, FakeState, FakeUsage

AS_OF = datetime(2026, 11, 22, 6, 0, tzinfo=UTC)
OLD = AS_OF - timedelta(days=200)

MODEL = ScoringModel(
    components=(
        Component(
            "team_size", 1.0, ("active_users_28d",), ((0, 0), (10, 100)), "{value:.0f} users"
        ),
    ),
    tiers=(Tier("sales", 80), Tier("success", 60), Tier("self_serve", 0)),
)
SPECS = {
    "Website": FieldSpec("Website", FieldType.STRING, length=255),
    "PQA_Score__c": FieldSpec("PQA_Score__c", FieldType.NUMBER, scale=0),
    "PQA_Tier__c": FieldSpec("PQA_Tier__c", FieldType.PICKLIST, length=40),
    "PQA_Users__c": FieldSpec("PQA_Users__c", FieldType.NUMBER, scale=0),
    "PQA_Note__c": FieldSpec("PQA_Note__c", FieldType.STRING, length=255),
}
MAPPING = DestinationMapping(
    "salesforce",
    "Account",
    MatchRule(("Website",), "most_recently_modified"),
    (
        FieldMapping("PQA_Score__c", "score"),
        FieldMapping("PQA_Tier__c", "tier"),
        FieldMapping("PQA_Users__c", "metrics.active_users_28d"),
    ),
)


def accounts(users: dict[str, float]) -> list[ProductAccount]:
    return [ProductAccount(d, d, {"active_users_28d": n}, first_seen=OLD) for d, n in users.items()]


def record(rid: str, domain: str, modified_days: int = 0, **fields: object) -> CrmRecord:
    return CrmRecord(
        rid, (f"https://{domain}/",), dict(fields), last_modified=OLD + timedelta(modified_days)
    )


def run(
    usage: FakeUsage,
    state: FakeState,
    crm: FakeCrm,
    hours: int,
    mapping: DestinationMapping = MAPPING,
):
    adapters = Adapters(
        usage=usage, state=state, destinations={crm.name: crm}, mappings={crm.name: mapping}
    )
    return run_sync(adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(hours=hours)))


def test_an_account_that_leaves_the_warehouse_is_written_as_one_with_no_usage() -> None:
    usage = FakeUsage(accounts({"coralscale.com": 10, "keep.io": 3}))
    state = FakeState()
    crm = FakeCrm(
        "salesforce", SPECS, [record("001A", "coralscale.com"), record("001B", "keep.io")]
    )
    first = run(usage, state, crm, 0)
    assert crm.records["001A"].fields == {
        "PQA_Score__c": 100,
        "PQA_Tier__c": "sales",
        "PQA_Users__c": 10,
    }
    assert first.summary["scoring"]["tiers"]["sales"] == 1

    usage.accounts = accounts({"keep.io": 3})  # every coralscale.com user deleted (GDPR)
    second = run(usage, state, crm, 1)
    assert crm.records["001A"].fields == {
        "PQA_Score__c": 0,
        "PQA_Tier__c": "self_serve",
        "PQA_Users__c": None,
    }
    scoring = second.summary["scoring"]
    assert scoring["disqualified"] == 1 and scoring["gone"] == 1
    assert scoring["scored"] == 1 and scoring["tiers"] == {
        "sales": 0,
        "success": 0,
        "self_serve": 1,
    }
    dest = second.summary["destinations"]["salesforce"]
    assert dest["records_retired"] == {"account_gone": 1}
    plan = second.outcomes["salesforce"].plan
    assert plan is not None and [c.reason for c in plan.changes] == ["account_gone"]
    assert state.states["coralscale.com"].tier == "self_serve"
    assert [(t.key, t.from_tier, t.to_tier) for t in state.transitions][-1] == (
        "coralscale.com",
        "sales",
        "self_serve",
    )

    third = run(usage, state, crm, 2)  # steady: nothing more to write, nothing more to count
    assert third.summary["destinations"]["salesforce"]["records_changed"] == 0
    assert third.summary["scoring"]["disqualified"] == 0

    usage.accounts = accounts({"keep.io": 3, "coralscale.com": 9})  # it comes back
    run(usage, state, crm, 3)
    assert crm.records["001A"].fields["PQA_Tier__c"] == "sales"


def test_a_record_that_stops_being_the_target_has_its_owned_fields_cleared() -> None:
    usage = FakeUsage(accounts({"acme.com": 9}))
    state = FakeState()
    old = record("001A", "acme.com", modified_days=5, PQA_Note__c="rep's own note")
    crm = FakeCrm("salesforce", SPECS, [old])
    run(usage, state, crm, 0)
    assert crm.records["001A"].fields["PQA_Tier__c"] == "sales"

    # a rep edits a duplicate account: under most_recently_modified the match moves to it
    crm.records["001B"] = record("001B", "acme.com", modified_days=9)
    usage.accounts = accounts({"acme.com": 1})
    result = run(usage, state, crm, 1)
    assert crm.records["001B"].fields == {
        "PQA_Score__c": 10,
        "PQA_Tier__c": "self_serve",
        "PQA_Users__c": 1,
    }
    assert crm.records["001A"].fields == {
        "PQA_Score__c": None,
        "PQA_Tier__c": None,
        "PQA_Users__c": None,
        "PQA_Note__c": "rep's own note",  # never pls-sync's: never touched
    }
    dest = result.summary["destinations"]["salesforce"]
    assert dest["records_retired"] == {"not_target": 1}
    # nothing owned there any more; when pls-sync wrote it stays known (for matching)
    kept = state.owned["salesforce"]["001A"]
    assert kept.fields == {} and kept.account_key == "" and kept.written_at is not None
    assert run(usage, state, crm, 2).summary["destinations"]["salesforce"]["records_changed"] == 0


def test_an_mql_only_tag_is_cleared_when_its_mql_is_gone() -> None:
    mapping = replace(
        MAPPING, fields=(*MAPPING.fields, FieldMapping("PQA_Note__c", "lead_channel"))
    )
    records = {"001A": record("001A", "mql.io")}
    report = match_accounts([], build_index(records.values()), "skip")

    def domains(r: CrmRecord) -> set[str]:
        return {"mql.io"}

    tagged = plan_changes(
        [], report, records, mapping, SPECS, mql_only={"mql.io"}, domains_of=domains
    )
    assert [c.fields for c in tagged.changes] == [{"PQA_Note__c": "mql_only"}]
    row = tagged.ownership["001A"]
    assert row == OwnedRecord("001A", "mql:mql.io", {"PQA_Note__c": "mql_only"})

    records = {"001A": replace(records["001A"], fields={"PQA_Note__c": "mql_only"})}
    untagged = plan_changes(
        [], report, records, mapping, SPECS, owned={"001A": row}, domains_of=domains
    )
    assert [(c.fields, c.reason) for c in untagged.changes] == [
        ({"PQA_Note__c": None}, "not_target")
    ]
    assert untagged.ownership == {"001A": None}


def test_write_policies_protect_fields_people_edit() -> None:
    mapping = replace(
        MAPPING,
        fields=(
            FieldMapping("PQA_Score__c", "score"),
            FieldMapping("PQA_Tier__c", "tier", write="unless_edited"),
            FieldMapping("PQA_Note__c", "domain", write="if_empty"),
        ),
    )
    usage = FakeUsage(accounts({"acme.com": 9}))
    state = FakeState()
    crm = FakeCrm("salesforce", SPECS, [record("001A", "acme.com", PQA_Note__c="set by a rep")])
    first = run(usage, state, crm, 0, mapping)
    assert crm.records["001A"].fields["PQA_Tier__c"] == "sales"
    assert crm.records["001A"].fields["PQA_Note__c"] == "set by a rep"  # not empty: left
    assert first.summary["destinations"]["salesforce"]["fields_left_alone"] == {"not_empty": 1}

    # a rep overrides the tier and drifts the score: the score is repaired, the tier is theirs
    fields = dict(crm.records["001A"].fields, PQA_Tier__c="success", PQA_Score__c=1)
    crm.records["001A"] = replace(crm.records["001A"], fields=fields)
    usage.accounts = accounts({"acme.com": 1})
    second = run(usage, state, crm, 1, mapping)
    assert crm.records["001A"].fields["PQA_Tier__c"] == "success"
    assert crm.records["001A"].fields["PQA_Score__c"] == 10
    plan = second.outcomes["salesforce"].plan
    assert plan is not None
    held = {(a.field, a.reason, a.current, a.wanted) for a in plan.left_alone}
    assert held == {
        ("PQA_Tier__c", "edited", "success", "self_serve"),
        ("PQA_Note__c", "not_empty", "set by a rep", "acme.com"),
    }
    assert second.summary["destinations"]["salesforce"]["fields_left_alone"] == {
        "edited": 1,
        "not_empty": 1,
    }

    # the rep puts pls-sync's value back: the field is pls-sync's again and follows the score
    fields = dict(crm.records["001A"].fields, PQA_Tier__c="sales")
    crm.records["001A"] = replace(crm.records["001A"], fields=fields)
    run(usage, state, crm, 2, mapping)
    assert crm.records["001A"].fields["PQA_Tier__c"] == "self_serve"


def test_a_write_whose_outcome_was_never_recorded_is_still_pls_syncs() -> None:
    """The intent is in the ledger before the write: a crash after the CRM applied it but
    before the ledger recorded it does not make pls-sync's own value look like a rep's."""
    mapping = replace(MAPPING, fields=(FieldMapping("PQA_Tier__c", "tier", write="unless_edited"),))
    usage = FakeUsage(accounts({"acme.com": 9}))
    state = FakeState()
    crm = FakeCrm("salesforce", {**SPECS}, [record("001A", "acme.com")])
    run(usage, state, crm, 0, mapping)
    usage.accounts = accounts({"acme.com": 6})
    saved = state.save_owned

    def crash_after_write(crm_id: str, rows, forget=()) -> None:
        rows = list(rows)
        if any(not row.pending for row in rows):  # the final rows: the process dies first
            raise SystemExit("killed")
        saved(crm_id, rows, forget)

    state.save_owned = crash_after_write  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        run(usage, state, crm, 1, mapping)
    state.save_owned = saved  # type: ignore[method-assign]
    assert crm.records["001A"].fields["PQA_Tier__c"] == "success"
    usage.accounts = accounts({"acme.com": 1})
    run(usage, state, crm, 2, mapping)
    assert crm.records["001A"].fields["PQA_Tier__c"] == "self_serve"


def test_a_crm_without_a_ledger_adopts_the_mapped_values_it_holds() -> None:
    records = [
        record("001A", "gone.io", PQA_Score__c=90, PQA_Tier__c="sales"),
        record("001B", "live.io", PQA_Score__c=10),
        record("001C", "none.io", PQA_Note__c="not mapped"),
    ]
    adopted = adopt_owned(records, MAPPING, SPECS)
    assert adopted == {
        "001A": OwnedRecord("001A", "", {"PQA_Score__c": 90, "PQA_Tier__c": "sales"}),
        "001B": OwnedRecord("001B", "", {"PQA_Score__c": 10}),
    }
    usage = FakeUsage(accounts({"live.io": 9}))
    state = FakeState()
    crm = FakeCrm("salesforce", SPECS, records)
    result = run(usage, state, crm, 0)
    assert result.summary["destinations"]["salesforce"]["ownership_adopted"] == 2
    assert crm.records["001A"].fields == {"PQA_Score__c": None, "PQA_Tier__c": None}
    assert crm.records["001B"].fields["PQA_Score__c"] == 90
    assert {rid for rid, row in state.owned["salesforce"].items() if row.fields} == {"001B"}


def test_ledger_rows_of_records_the_crm_no_longer_has_are_forgotten() -> None:
    usage = FakeUsage(accounts({"acme.com": 9}))
    state = FakeState()
    crm = FakeCrm("salesforce", SPECS, [record("001A", "acme.com")])
    run(usage, state, crm, 0)
    del crm.records["001A"]  # deleted, or merged into another record
    run(usage, state, crm, 1)
    assert state.owned["salesforce"] == {}


def test_a_rejected_clear_keeps_the_record_owned_for_the_next_run() -> None:
    usage = FakeUsage(accounts({"acme.com": 9}))
    state = FakeState()
    crm = FakeCrm("salesforce", SPECS, [record("001A", "acme.com")])
    run(usage, state, crm, 0)
    usage.accounts = []
    crm.records["001A"] = replace(crm.records["001A"], domain_values=("https://other.io/",))
    state.states.clear()  # the account is not known: a plain "no longer the target"
    crm.reject["001A"] = "UNABLE_TO_LOCK_ROW"
    run(usage, state, crm, 1)
    assert "001A" in state.owned["salesforce"]
    del crm.reject["001A"]
    run(usage, state, crm, 2)
    assert crm.records["001A"].fields["PQA_Tier__c"] is None
    assert state.owned["salesforce"]["001A"].fields == {}


def test_multi_select_values_compare_as_sets_of_options() -> None:
    spec = FieldSpec("PQA_Signals__c", FieldType.MULTIPICKLIST, length=4099)
    desired = canonical(["Pricing page", "7+ users"], spec, join="; ")
    from_crm = canonical("7+ users;Pricing page", spec)
    assert desired == "7+ users;Pricing page"
    assert values_equal(from_crm, desired, spec)
    assert canonical([], spec) is None and canonical(";", spec) is None


def test_pls_syncs_own_writes_are_not_changes_people_made() -> None:
    """ "Most recently modified" compares people's changes: a stamp no later than pls-sync's
    write is that write's; a later one is a person's; an unsettled write is taken as ours."""
    human = OLD + timedelta(days=3)
    wrote = AS_OF + timedelta(seconds=1)
    row = OwnedRecord("001A", "acme.com", {}, modified=human, written_at=wrote)
    ours = record("001A", "acme.com")
    assert effective_modified(replace(ours, last_modified=AS_OF), row) == human
    later = AS_OF + timedelta(minutes=5)
    assert effective_modified(replace(ours, last_modified=later), row) == later
    in_flight = OwnedRecord("001A", "acme.com", {}, modified=human, in_flight=True)
    assert effective_modified(replace(ours, last_modified=later), in_flight) == human
    assert effective_modified(replace(ours, last_modified=later), None) == later

    # the next plan settles an in-flight write: the stamp read now is taken as that write's
    report = match_accounts([("acme.com", "acme.com", 90.0)], build_index([ours]), "skip")
    plan = plan_changes(
        [],
        report,
        {"001A": replace(ours, last_modified=later)},
        MAPPING,
        SPECS,
        owned={"001A": in_flight},
    )
    settled = plan.ownership["001A"]
    assert settled is not None and not settled.in_flight
    assert (settled.modified, settled.written_at) == (human, later)


def test_settling_takes_any_stamp_up_to_the_uncertain_writes_end_as_ours() -> None:
    """A retried write whose first request landed late, read back through a lagging change
    read (HubSpot's search) that still shows an earlier stamp: the write's end bounds what is
    ours, so the late stamp is never taken for a person's change."""
    human = OLD + timedelta(days=3)
    ended = AS_OF + timedelta(seconds=20)
    in_flight = OwnedRecord(
        "001A", "acme.com", {}, modified=human, written_at=ended, in_flight=True
    )
    lagging = replace(record("001A", "acme.com"), last_modified=AS_OF)
    report = match_accounts([("acme.com", "acme.com", 90.0)], build_index([lagging]), "skip")
    plan = plan_changes([], report, {"001A": lagging}, MAPPING, SPECS, owned={"001A": in_flight})
    settled = plan.ownership["001A"]
    assert settled is not None and not settled.in_flight
    assert (settled.modified, settled.written_at) == (human, ended)
    late = AS_OF + timedelta(seconds=12)  # the late request's stamp, seen by a later read
    assert effective_modified(replace(lagging, last_modified=late), settled) == human
    person = ended + timedelta(minutes=5)
    assert effective_modified(replace(lagging, last_modified=person), settled) == person


def test_an_uncertain_write_holds_every_stamp_of_its_late_window_as_ours() -> None:
    """A write retried after a timeout: its ledger row stays in flight, and any stamp up to
    LATE_WRITE_WINDOW past the write's end (the answer's Date, plus a second) is the write's."""
    from pls_sync.models import RecordChange, WriteResult
    from pls_sync.planning import Plan
    from pls_sync.service import LATE_WRITE_WINDOW, DestinationOutcome, record_ownership

    human = OLD + timedelta(days=3)
    base = replace(record("001A", "acme.com"), last_modified=human)
    answered = AS_OF + timedelta(seconds=30)
    plan = Plan("salesforce", "Account")
    plan.changes.append(RecordChange("001A", {"PQA_Score__c": 90}, "acme.com"))
    plan.ownership["001A"] = OwnedRecord("001A", "acme.com", {"PQA_Score__c": 90})
    state = FakeState()
    outcome = DestinationOutcome(
        "salesforce",
        records={"001A": base},
        plan=plan,
        write=WriteResult(written=["001A"], server_time=answered, uncertain=True),
        crm="salesforce",
    )
    record_ownership(state, outcome)
    row = state.load_owned("salesforce")["001A"]
    window_end = answered + timedelta(seconds=1) + LATE_WRITE_WINDOW
    assert row.in_flight and (row.modified, row.written_at) == (human, window_end)
    # The retry's first request lands a minute late; the next plan settles, and it is ours.
    late = replace(base, last_modified=answered + timedelta(minutes=1))
    report = match_accounts([("acme.com", "acme.com", 90.0)], build_index([late]), "skip")
    settled = plan_changes([], report, {"001A": late}, MAPPING, SPECS, owned={"001A": row})
    after = settled.ownership.get("001A") or row
    assert effective_modified(late, replace(after, in_flight=False)) == human
