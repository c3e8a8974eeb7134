"""The run service with hand-written fakes: diffs, reruns, rejections, failures, dry runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from pls_sync.errors import AuthError, WarehouseError
from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.models import CrmRecord, FieldSpec, FieldType, ProductAccount
from pls_sync.plan_files import load_plan
from pls_sync.scoring import Component, ScoringModel, Tier
from pls_sync.service import Adapters, RunOptions, run_sync
from tests.fakes import FakeCrm, FakeState, FakeUsage

AS_OF = datetime(2026, 11, 22, tzinfo=UTC)
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
    "PQA_Score__c": FieldSpec("PQA_Score__c", FieldType.NUMBER, scale=0),
    "Website": FieldSpec("Website", FieldType.STRING, length=255),  # the match field
    "PQA_Tier__c": FieldSpec("PQA_Tier__c", FieldType.PICKLIST, length=40),
    "PQA_Qualified_Since__c": FieldSpec("PQA_Qualified_Since__c", FieldType.DATETIME),
    "PQA_Score_Change__c": FieldSpec("PQA_Score_Change__c", FieldType.NUMBER, scale=0),
}
MAPPING = DestinationMapping(
    "salesforce",
    "Account",
    MatchRule(("Website",)),
    (
        FieldMapping("PQA_Score__c", "score"),
        FieldMapping("PQA_Tier__c", "tier"),
        FieldMapping("PQA_Qualified_Since__c", "qualified_since", null="clear"),
        FieldMapping("PQA_Score_Change__c", "score_change"),
    ),
)


def accounts(users: dict[str, float]) -> list[ProductAccount]:
    return [ProductAccount(d, d, {"active_users_28d": n}, first_seen=OLD) for d, n in users.items()]


def crm(n: int = 5, name: str = "salesforce", batch_size: int = 200) -> FakeCrm:
    records = [
        CrmRecord(f"001{i:03d}", (f"https://www.co{i}.com/",), {}, name=f"Co {i}") for i in range(n)
    ]
    return FakeCrm(name, SPECS, records, batch_size=batch_size)


def adapters(usage: FakeUsage, state: FakeState, *crms: FakeCrm) -> Adapters:
    return Adapters(
        usage=usage,
        state=state,
        destinations={c.name: c for c in crms},
        mappings={c.name: MAPPING for c in crms},
    )


def test_first_run_writes_and_an_unchanged_rerun_writes_nothing() -> None:
    usage = FakeUsage(accounts({"co0.com": 9, "co1.com": 7, "co2.com": 1, "nocrm.io": 10}))
    state, sf = FakeState(), crm()
    first = run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF))
    dest = first.summary["destinations"]["salesforce"]
    assert first.status == "succeeded"
    assert dest["records_written"] == 3 and dest["write_calls"] == 1 == dest["min_write_calls"]
    assert dest["match"]["matched"] == 3 and dest["match"]["unmatched"] == 1
    assert dest["top_unmatched"] == [{"domain": "nocrm.io", "score": 100.0}]
    assert sf.records["001000"].fields["PQA_Score__c"] == 90.0
    assert sf.records["001000"].fields["PQA_Tier__c"] == "sales"
    assert sf.records["001000"].fields["PQA_Qualified_Since__c"] == AS_OF
    assert first.summary["scoring"]["newly_qualified"] == 2  # co0 (90) and nocrm.io (100)

    second = run_sync(
        adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF + timedelta(hours=1))
    )
    dest2 = second.summary["destinations"]["salesforce"]
    assert dest2["records_changed"] == 0 and dest2["write_calls"] == 0
    assert sf.calls["write"] == 1


def test_only_changed_fields_of_changed_records_are_sent_in_minimum_batches() -> None:
    usage = FakeUsage(accounts({f"co{i}.com": 3 for i in range(450)}))
    state, sf = FakeState(), crm(450, batch_size=200)
    run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF))
    assert sf.calls["write"] == 3
    usage.accounts = accounts({f"co{i}.com": (9 if i < 5 else 3) for i in range(450)})
    result = run_sync(
        adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF + timedelta(days=1))
    )
    plan = result.outcomes["salesforce"].plan
    assert plan is not None and len(plan.changes) == 5
    assert set(plan.changes[0].fields) == {
        "PQA_Score__c",
        "PQA_Tier__c",
        "PQA_Qualified_Since__c",
        "PQA_Score_Change__c",
    }
    assert plan.changes[0].fields["PQA_Score_Change__c"] == 60.0
    assert sf.calls["write"] == 4


def test_score_change_is_kept_on_an_unchanged_rerun() -> None:
    usage = FakeUsage(accounts({"co0.com": 5}))
    state, sf = FakeState(), crm(1)
    run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF))
    usage.accounts = accounts({"co0.com": 8})
    run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF + timedelta(days=1)))
    assert sf.records["001000"].fields["PQA_Score_Change__c"] == 30.0
    rerun = run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF + timedelta(days=2)))
    assert rerun.summary["destinations"]["salesforce"]["write_calls"] == 0


def test_rejections_are_recorded_retried_next_run_and_resolved() -> None:
    usage = FakeUsage(accounts({"co0.com": 9, "co1.com": 7}))
    state, sf = FakeState(), crm()
    sf.reject["001001"] = "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    first = run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF))
    dest = first.summary["destinations"]["salesforce"]
    assert first.status == "partial"
    assert dest["rejected"] == 1 and dest["rejection_reasons"] == {
        "FIELD_CUSTOM_VALIDATION_EXCEPTION": 1
    }
    assert [r.record_id for r in state.open_rejections("salesforce")] == ["001001"]
    sf.reject.clear()
    second = run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF))
    assert second.summary["destinations"]["salesforce"]["records_written"] == 1
    assert state.open_rejections("salesforce") == []


def test_one_destination_failing_does_not_stop_the_other() -> None:
    usage = FakeUsage(accounts({"co0.com": 9}))
    state, sf, hs = FakeState(), crm(), crm(name="hubspot")
    hs.fail_with = AuthError("HubSpot rejected the access token")
    result = run_sync(adapters(usage, state, sf, hs), MODEL, RunOptions(as_of=AS_OF))
    assert result.status == "partial"
    assert result.summary["destinations"]["hubspot"] == {
        "status": "failed",
        "error": "HubSpot rejected the access token",
        "api_calls": {"read": 0, "write": 0, "describe": 0},
    }
    assert result.summary["destinations"]["salesforce"]["records_written"] == 1
    assert state.runs[result.summary["run_id"]].status == "partial"


def test_dry_run_writes_nothing_and_saves_the_plan(tmp_path) -> None:  # type: ignore[no-untyped-def]
    usage = FakeUsage(accounts({"co0.com": 9}))
    state, sf = FakeState(), crm()
    result = run_sync(
        adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF, dry_run=True, plans_dir=tmp_path)
    )
    assert sf.calls["write"] == 0 and state.states == {} and state.runs == {}
    (saved,) = load_plan(tmp_path / "latest.json")["destinations"]
    assert saved["records_changed"] == 1
    (change,) = saved["changes"]
    assert change["record_id"] == "001000" and change["account"] == "co0.com"
    assert change["fields"]["PQA_Tier__c"] == {"from": None, "to": "sales"}
    assert change["fields"]["PQA_Score__c"] == {"from": None, "to": 90}
    assert result.summary["destinations"]["salesforce"]["status"] == "planned"


def test_an_unchanged_rerun_keeps_the_last_plan_with_changes_as_latest(tmp_path) -> None:  # type: ignore[no-untyped-def]
    usage = FakeUsage(accounts({"co0.com": 9}))
    state, sf = FakeState(), crm()
    first = run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF, plans_dir=tmp_path))
    second = run_sync(
        adapters(usage, state, sf),
        MODEL,
        RunOptions(as_of=AS_OF + timedelta(hours=1), plans_dir=tmp_path),
    )
    assert second.summary["destinations"]["salesforce"]["records_changed"] == 0
    rerun = load_plan(Path(second.summary["plan_file"]))
    assert rerun["destinations"][0]["changes"] == []
    latest = load_plan(tmp_path / "latest.json")
    assert latest["run_id"] == first.summary["run_id"] != second.summary["run_id"]
    assert latest["destinations"][0]["records_changed"] == 1


def test_a_crash_before_writing_is_repaired_by_the_next_run() -> None:
    usage = FakeUsage(accounts({"co0.com": 9, "co1.com": 6}))
    clean_state, clean = FakeState(), crm()
    run_sync(adapters(usage, clean_state, clean), MODEL, RunOptions(as_of=AS_OF))

    state, sf = FakeState(), crm()
    sf_write = sf.write

    def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # the process dies after the state commit, before any write

    sf.write = crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF))
    sf.write = sf_write  # type: ignore[method-assign]
    run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF + timedelta(minutes=5)))
    assert {k: r.fields for k, r in sf.records.items()} == {
        k: r.fields for k, r in clean.records.items()
    }


def test_a_warehouse_failure_fails_the_run_and_is_recorded() -> None:
    class BrokenUsage:
        def read_accounts(self, as_of, stats):  # type: ignore[no-untyped-def]
            raise WarehouseError("warehouse unreachable: duckdb:///missing.duckdb")

    state = FakeState()
    with pytest.raises(WarehouseError):
        run_sync(Adapters(usage=BrokenUsage(), state=state), MODEL, RunOptions(as_of=AS_OF))
    (run,) = state.runs.values()
    assert run.status == "failed" and "warehouse unreachable" in (run.error or "")


def test_a_second_run_is_refused_while_the_lock_is_held() -> None:
    from pls_sync.errors import RunLockedError

    usage = FakeUsage(accounts({"co0.com": 9}))
    state, sf = FakeState(), crm()
    assert state.acquire_lock("pls-sync:run", "other-container", 600)
    with pytest.raises(RunLockedError, match="other-container"):
        run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF))
    assert sf.calls["write"] == 0 and state.runs == {}
    # a container that died holding the lock frees it when its lease runs out
    state.locks["pls-sync:run"] = ("other-container", AS_OF - timedelta(seconds=1))
    result = run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF))
    assert result.status == "succeeded" and state.lock_holder("pls-sync:run") is None


def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over() -> None:
    import subprocess
    import sys

    from pls_sync.run_lock import this_host

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid is now free: the lock's owner is dead
    usage = FakeUsage(accounts({"co0.com": 9}))
    state, sf = FakeState(), crm()
    dead_owner = f"{this_host()}:{child.pid}:abcdef"
    assert state.acquire_lock("pls-sync:run", dead_owner, 600)
    result = run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF))
    assert result.status == "succeeded"


def test_a_lock_held_from_another_pid_namespace_with_our_hostname_is_left_alone() -> None:
    # Two containers with host networking share a hostname, not their processes: a pid that
    # does not exist here may be alive there, so only the lease frees its lock.
    import socket
    import subprocess
    import sys

    from pls_sync.errors import RunLockedError

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    state, sf = FakeState(), crm()
    elsewhere = f"{socket.gethostname()}@4026500000:{child.pid}:abcdef"
    assert state.acquire_lock("pls-sync:run", elsewhere, 600)
    with pytest.raises(RunLockedError):
        run_sync(
            adapters(FakeUsage(accounts({"co0.com": 9})), state, sf), MODEL, RunOptions(as_of=AS_OF)
        )
    assert sf.calls["write"] == 0


def test_the_lease_is_renewed_while_the_run_is_alive() -> None:
    import time

    from pls_sync.run_lock import RunLock

    state = FakeState()
    lock = RunLock(state, "pls-sync:run", lease_seconds=0.3)
    lock.acquire()
    first_expiry = state.locks["pls-sync:run"][1]
    time.sleep(0.45)
    assert state.locks["pls-sync:run"][1] > first_expiry
    lock.check()
    lock.release()
    assert "pls-sync:run" not in state.locks


def test_a_stop_request_finishes_the_batch_in_flight_and_leaves_the_rest() -> None:
    usage = FakeUsage(accounts({"co0.com": 9, "co1.com": 8, "co2.com": 7}))
    state, sf, hs = FakeState(), crm(batch_size=2), crm(name="hubspot")
    options = RunOptions(as_of=AS_OF)

    def sigterm_during_the_first_batch(offset: int) -> None:
        if offset == 0:
            options.stop.set()  # SIGTERM arrives while Salesforce's first batch is sent

    sf.before_batch = sigterm_during_the_first_batch
    result = run_sync(adapters(usage, state, sf, hs), MODEL, options)
    assert result.status == "stopped"
    salesforce = result.summary["destinations"]["salesforce"]
    assert salesforce["status"] == "stopped"
    assert (salesforce["records_written"], salesforce["not_attempted"]) == (2, 1)
    assert salesforce["write_calls"] == 1
    assert result.summary["destinations"]["hubspot"]["status"] == "stopped"
    assert hs.calls["write"] == 0
    # The next run writes what was left, and only that.
    sf.before_batch = lambda _offset: None
    follow_up = run_sync(adapters(usage, state, sf, hs), MODEL, RunOptions(as_of=AS_OF))
    assert follow_up.status == "succeeded"
    assert follow_up.summary["destinations"]["salesforce"]["records_written"] == 1
    assert follow_up.summary["destinations"]["hubspot"]["records_written"] == 3


def test_only_changed_account_states_are_saved_with_history() -> None:
    usage = FakeUsage(accounts({"co0.com": 9, "co1.com": 3}))
    state, sf = FakeState(), crm()
    run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF))
    assert len(state.history) == 2
    run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF + timedelta(hours=1)))
    assert len(state.history) == 2  # nothing moved: no new rows
    usage.accounts = accounts({"co0.com": 9, "co1.com": 5})
    run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF + timedelta(hours=2)))
    assert [h[0] for h in state.history[2:]] == ["co1.com"]
    assert state.states["co1.com"].score == 50 and state.states["co1.com"].score_change == 20


def test_score_history_older_than_the_retention_is_pruned_after_a_run() -> None:
    usage = FakeUsage(accounts({"co0.com": 9, "co1.com": 3}))
    state, sf = FakeState(), crm()
    run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF, history_days=30))
    usage.accounts = accounts({"co0.com": 9, "co1.com": 5})
    later = AS_OF + timedelta(days=31)
    with capture_logs() as events:
        run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=later, history_days=30))
    # Both first-run entries are 31 days old and go; co1.com moved, so it has a new one.
    assert state.history_scored_at == [later]
    assert [h[0] for h in state.history] == ["co1.com"]
    assert state.states["co0.com"].score == 90  # the state itself is never pruned
    [pruned] = [e for e in events if e["event"] == "score_history_pruned"]
    assert pruned["entries"] == 2 and pruned["days"] == 30


def test_a_write_budget_caps_the_run_and_leaves_the_rest_for_the_next() -> None:
    class BudgetedCrm(FakeCrm):
        remaining = 2

        def write_budget(self, share: float) -> int:
            return int(self.remaining * share)

        def write(self, object_name, changes, specs, *, max_write_calls=None, stop=None):  # type: ignore[no-untyped-def,override]
            allowed = list(changes)[: (max_write_calls or 0) * self.batch_size]
            result = super().write(object_name, allowed, specs)
            result.not_attempted = [c.record_id for c in changes[len(allowed) :]]
            return result

    usage = FakeUsage(
        accounts({"co0.com": 9, "co1.com": 2, "co2.com": 8, "co3.com": 3, "co4.com": 4})
    )
    state = FakeState()
    records = [CrmRecord(f"001{i:03d}", (f"co{i}.com",), {}) for i in range(5)]
    sf = BudgetedCrm("salesforce", SPECS, records, batch_size=2)
    sf.remaining = 2
    first = run_sync(
        adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF, api_budget_share=0.5)
    )
    dest = first.summary["destinations"]["salesforce"]
    assert dest["write_budget_calls"] == 1 and dest["records_written"] == 2
    assert dest["not_attempted"] == 3 and first.status == "partial"
    # the highest-priority changes went first: the new PQAs (scores 90 and 80)
    assert {r for r, rec in sf.records.items() if rec.fields} == {"001000", "001002"}
    sf.remaining = 100
    second = run_sync(
        adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF, api_budget_share=0.5)
    )
    assert second.summary["destinations"]["salesforce"]["records_written"] == 3


def test_a_planned_destination_keeps_only_its_changed_records_for_the_write() -> None:
    """A big CRM's whole picture is not held while the next destination is prepared: the
    write phase needs the changed records only, and the summary still counts every record."""
    usage = FakeUsage(accounts({"co0.com": 9, "co1.com": 7}))
    state, sf = FakeState(), crm(5)
    result = run_sync(adapters(usage, state, sf), MODEL, RunOptions(as_of=AS_OF))
    outcome = result.outcomes["salesforce"]
    assert (
        set(outcome.records) == {"001000", "001001"} == {c.record_id for c in outcome.plan.changes}
    )
    assert result.summary["destinations"]["salesforce"]["crm_records"] == 5
    assert sf.records["001001"].fields["PQA_Tier__c"] == "success"


def test_a_record_restamped_for_matching_keeps_every_other_field() -> None:
    from dataclasses import fields

    from pls_sync.models import OwnedRecord
    from pls_sync.service import human_stamped

    ours = AS_OF - timedelta(hours=1)
    record = CrmRecord("001", ("a.com",), {"X": 1}, "A", ours, "000P", "005O")
    person = AS_OF - timedelta(days=3)
    restamped = human_stamped(record, OwnedRecord("001", "a.com", {}, {}, person, ours))
    assert restamped.last_modified == person
    for spec in fields(CrmRecord):
        if spec.name != "last_modified":
            assert getattr(restamped, spec.name) == getattr(record, spec.name), spec.name
