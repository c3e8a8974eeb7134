"""Channels, motions, mql_only tags and rep alerts through the run service, with fakes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from pls_sync.channels import DEFAULT_MOTIONS, BuyerBehaviour, MotionRule, UserProfile
from pls_sync.config import ChannelSettings
from pls_sync.errors import FatalError
from pls_sync.fit import DEFAULT_FIT
from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.models import CrmRecord, FieldSpec, FieldType, ProductAccount
from pls_sync.scoring import Component, ScoringModel, Tier
from pls_sync.service import Adapters, RunOptions, run_sync
from tests.fakes import (
    FakeAlertLedger,
    FakeAlertSink,
    FakeBuyers,
    FakeCrm,
    FakeMqls,
    FakeState,
    FakeUsage,
)

AS_OF = datetime(2026, 11, 22, tzinfo=UTC)
OLD = AS_OF - timedelta(days=200)
MODEL = ScoringModel(
    components=(Component("team_size", 1.0, ("active_users_28d",), ((0, 0), (10, 100)), ""),),
    tiers=(Tier("sales", 80), Tier("success", 60), Tier("self_serve", 0)),
)
SPECS = {
    "PQA_Score__c": FieldSpec("PQA_Score__c", FieldType.NUMBER, scale=0),
    "Website": FieldSpec("Website", FieldType.STRING, length=255),  # the match field
    "PQA_Lead_Channel__c": FieldSpec("PQA_Lead_Channel__c", FieldType.PICKLIST, length=40),
    "PQA_Motion__c": FieldSpec("PQA_Motion__c", FieldType.PICKLIST, length=40),
    "PQA_Buyers__c": FieldSpec("PQA_Buyers__c", FieldType.TEXTAREA, length=1000),
}
MAPPING = DestinationMapping(
    "salesforce",
    "Account",
    MatchRule(("Website",)),
    (
        FieldMapping("PQA_Score__c", "score"),
        FieldMapping("PQA_Lead_Channel__c", "lead_channel"),
        FieldMapping("PQA_Motion__c", "motion"),
        FieldMapping("PQA_Buyers__c", "buyers", null="clear"),
    ),
)
# Backfilled: these tests are about exactly once, not about go-live (which has its own).
ALERTS_ON = ChannelSettings(alerts_enabled=True, alert_tier="sales", alerts_backfill=True)
GO_LIVE = ChannelSettings(alerts_enabled=True, alert_tier="sales")


def vp(email: str) -> UserProfile:
    return UserProfile(
        "u-" + email,
        email,
        "VP Engineering",
        "vp",
        "Engineering",
        "51-200",
        False,
        BuyerBehaviour(),
    )


def ic(email: str) -> UserProfile:
    return UserProfile(
        "u-" + email,
        email,
        "Software Engineer",
        "ic",
        "Engineering",
        "51-200",
        False,
        BuyerBehaviour(),
    )


def setup(alerts: bool = True):  # type: ignore[no-untyped-def]
    usage = FakeUsage(
        [
            ProductAccount(d, d, {"active_users_28d": n}, first_seen=OLD)
            for d, n in {"buyer.com": 9, "mql.com": 9, "nobody.com": 9, "small.com": 2}.items()
        ]
    )
    records = [
        CrmRecord(f"001{i}", (d,), {}, name=d, owner_id="005OWNER")
        for i, d in enumerate(
            ["buyer.com", "mql.com", "nobody.com", "small.com", "topdown.io", "quiet.io"]
        )
    ]
    sf = FakeCrm("salesforce", SPECS, records)
    adapters = Adapters(
        usage=usage,
        state=FakeState(),
        destinations={"salesforce": sf},
        mappings={"salesforce": MAPPING},
        buyers=FakeBuyers(
            [
                ("buyer.com", vp("ann@buyer.com")),
                ("buyer.com", ic("bob@buyer.com")),
                ("mql.com", ic("cy@mql.com")),
            ]
        ),
        mql_sources={
            "salesforce": FakeMqls(
                [
                    ("salesforce_lead", "00Q1", "dee@mql.com"),
                    ("salesforce_lead", "00Q2", "eve@topdown.io"),
                    ("salesforce_lead", "00Q3", "fay@gmail.com"),
                    ("salesforce_lead", "00Q4", "not-an-email"),
                ]
            )
        },
        alert_sinks={"salesforce": FakeAlertSink()} if alerts else {},
        alert_ledger=FakeAlertLedger() if alerts else None,
    )
    return adapters, sf


def test_channels_motions_and_mql_only_are_written() -> None:
    adapters, sf = setup()
    result = run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=ChannelSettings())
    fields = {r.name: r.fields for r in sf.records.values()}
    assert fields["buyer.com"]["PQA_Lead_Channel__c"] == "usage_pql"
    assert fields["buyer.com"]["PQA_Motion__c"] == "sales"
    assert fields["buyer.com"]["PQA_Buyers__c"].startswith("ann@buyer.com (VP Engineering)")
    assert fields["mql.com"]["PQA_Lead_Channel__c"] == "usage_mql"
    assert fields["mql.com"]["PQA_Motion__c"] == "abm"
    assert fields["nobody.com"]["PQA_Lead_Channel__c"] == "usage_no_buyer"
    assert fields["small.com"]["PQA_Motion__c"] == "self_serve"
    assert fields["topdown.io"] == {"PQA_Lead_Channel__c": "mql_only"}  # no usage: only the tag
    assert fields["quiet.io"] == {}
    leads = result.summary["leads"]
    assert leads["channels"] == {"usage_pql": 1, "usage_mql": 1, "mql_only": 1, "usage_no_buyer": 2}
    assert leads["motions"] == {"sales": 1, "abm": 2, "self_serve": 1}
    assert leads["mqls"]["skipped"] == {"free_mail": 1, "invalid": 1}
    assert [a["domain"] for a in leads["abm_list"]] == ["nobody.com", "small.com"]
    rerun = run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=ChannelSettings())
    assert rerun.summary["destinations"]["salesforce"]["write_calls"] == 0


def test_an_mql_read_failure_is_reported_and_the_run_goes_on() -> None:
    adapters, sf = setup()
    adapters.mql_sources["salesforce"] = FakeMqls([], fail_with=FatalError("INVALID_FIELD: MQL__c"))
    result = run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=ChannelSettings())
    assert result.summary["leads"]["mql_errors"] == {"salesforce": "INVALID_FIELD: MQL__c"}
    assert result.summary["destinations"]["salesforce"]["records_written"] == 4


def test_alerts_once_per_entry_across_reruns() -> None:
    adapters, sf = setup()
    sink = adapters.alert_sinks["salesforce"]
    first = run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=ALERTS_ON)
    assert first.summary["destinations"]["salesforce"]["alerts"]["created"] == 3
    (record_id, subject, body) = next(t for t in sink.tasks.values() if t[0] == "0010")
    assert subject == "PQA: buyer.com entered sales (score 90)"
    assert "ann@buyer.com" in body and "pls-sync-alert-key:" in body
    run_sync(adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(hours=1)), channels=ALERTS_ON)
    assert len(sink.tasks) == 3


def test_a_lost_answer_settles_and_is_confirmed_by_a_later_run_not_sent_again() -> None:
    adapters, sf = setup()
    sink = adapters.alert_sinks["salesforce"] = FakeAlertSink(lookup_lag_seconds=60)
    ledger = adapters.alert_ledger
    sink.lose_answers = 1
    first = run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=ALERTS_ON)
    alerts = first.summary["destinations"]["salesforce"]["alerts"]
    assert (alerts["created"], alerts["settling"]) == (2, 1)
    (lost,) = sink.unindexed
    assert ledger.rows[lost]["status"] == "sending"  # type: ignore[union-attr]

    soon = run_sync(
        adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(seconds=10)), channels=ALERTS_ON
    )
    assert soon.summary["destinations"]["salesforce"]["alerts"]["settling"] == 1
    sink.unindexed.clear()  # indexed once the lag has passed
    ledger.rows[lost]["sent_at"] -= timedelta(seconds=61)  # type: ignore[union-attr]
    later = run_sync(
        adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(minutes=5)), channels=ALERTS_ON
    )
    assert later.summary["destinations"]["salesforce"]["alerts"]["found_existing"] == 1
    assert sink.duplicates == 0 and len(sink.tasks) == 3


def test_go_live_records_accounts_already_in_the_tier_without_a_task() -> None:
    adapters, sf = setup()
    sink, usage = adapters.alert_sinks["salesforce"], adapters.usage
    first = run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=GO_LIVE)
    assert sink.tasks == {}  # three PQAs already there: reps are not flooded
    assert first.summary["destinations"]["salesforce"]["alerts"]["created"] == 0
    rows = adapters.alert_ledger.rows  # type: ignore[union-attr]
    assert sorted(r["account_key"] for r in rows.values()) == [
        "",
        "buyer.com",
        "mql.com",
        "nobody.com",
    ]
    # A later entry into the tier is news: it gets its task.
    usage.accounts = [  # type: ignore[attr-defined]
        replace(a, metrics={**a.metrics, "active_users_28d": 10}) if a.key == "small.com" else a
        for a in usage.accounts  # type: ignore[attr-defined]
    ]
    run_sync(adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(days=1)), channels=GO_LIVE)
    assert [t[0] for t in sink.tasks.values()] == [
        next(r.id for r in sf.records.values() if r.name == "small.com")
    ]


def _set_users(adapters: Adapters, domain: str, users: int) -> None:
    usage = adapters.usage
    usage.accounts = [  # type: ignore[attr-defined]
        replace(a, metrics={**a.metrics, "active_users_28d": users}) if a.key == domain else a
        for a in usage.accounts  # type: ignore[attr-defined]
    ]


def test_a_destination_moved_to_another_crm_settles_alerts_in_flight_and_floods_no_one() -> None:
    """Alerts went to one org; the destination now points at another. An alert sent to the old
    org with no known outcome is not created in the new one, accounts already alerted are not
    alerted again (no backfill), and a later entry into the tier is alerted in the new org."""
    adapters, sf = setup()
    sink = adapters.alert_sinks["salesforce"] = FakeAlertSink(lookup_lag_seconds=60)
    ledger = adapters.alert_ledger
    run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=GO_LIVE)  # three in the tier
    _set_users(adapters, "small.com", 10)
    sink.lose_answers = 1
    entered = run_sync(
        adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(hours=1)), channels=GO_LIVE
    )
    assert entered.summary["destinations"]["salesforce"]["alerts"]["settling"] == 1
    (lost,) = sink.unindexed

    new_org = FakeAlertSink(lookup_lag_seconds=60)
    new_org.identity = "fake:crm-2"
    adapters.alert_sinks["salesforce"] = new_org
    ledger.rows[lost]["sent_at"] -= timedelta(seconds=61)  # type: ignore[union-attr]
    moved = run_sync(
        adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(hours=2)), channels=GO_LIVE
    )
    alerts = moved.summary["destinations"]["salesforce"]["alerts"]
    assert alerts["crm_changed"] == {
        "from": "fake:crm-1",
        "to": "fake:crm-2",
        "in_flight_settled": 1,
    }
    assert new_org.tasks == {} and alerts["created"] == alerts["found_existing"] == 0
    assert ledger.rows[lost]["status"] == "created"  # type: ignore[union-attr]
    assert "fake:crm-1" in ledger.rows[lost]["reason"]  # type: ignore[union-attr]

    _set_users(adapters, "small.com", 2)  # leaves the tier, then enters it again: news
    run_sync(adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(days=1)), channels=GO_LIVE)
    _set_users(adapters, "small.com", 10)
    again = run_sync(adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(days=2)), channels=GO_LIVE)
    assert "crm_changed" not in again.summary["destinations"]["salesforce"]["alerts"]
    assert [t[0] for t in new_org.tasks.values()] == [
        next(r.id for r in sf.records.values() if r.name == "small.com")
    ]


def test_with_backfill_a_destination_moved_to_another_crm_alerts_its_reps_of_every_pqa() -> None:
    adapters, sf = setup()
    old_org = adapters.alert_sinks["salesforce"]
    run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=ALERTS_ON)
    assert len(old_org.tasks) == 3

    new_org = FakeAlertSink()
    new_org.identity = "fake:crm-2"
    adapters.alert_sinks["salesforce"] = new_org
    moved = run_sync(
        adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(hours=1)), channels=ALERTS_ON
    )
    alerts = moved.summary["destinations"]["salesforce"]["alerts"]
    assert alerts["crm_changed"]["backfilled"] == 3 and alerts["created"] == 3
    assert new_org.tasks.keys() == old_org.tasks.keys()  # the same entries, now in this org
    assert all(subject for _, subject, _ in new_org.tasks.values())

    later = run_sync(
        adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(hours=2)), channels=ALERTS_ON
    )
    assert later.summary["destinations"]["salesforce"]["alerts"]["created"] == 0
    assert len(new_org.tasks) == 3 and new_org.duplicates == 0


def test_go_live_with_no_account_in_the_tier_still_goes_live() -> None:
    adapters, sf = setup()
    usage = adapters.usage
    everyone = list(usage.accounts)  # type: ignore[attr-defined]
    usage.accounts = [  # type: ignore[attr-defined]
        replace(a, metrics={**a.metrics, "active_users_28d": 1}) for a in everyone
    ]
    run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=GO_LIVE)
    usage.accounts = everyone  # type: ignore[attr-defined]
    run_sync(adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(days=1)), channels=GO_LIVE)
    assert len(adapters.alert_sinks["salesforce"].tasks) == 3  # entries after go-live


def test_a_run_killed_before_its_state_commit_queues_the_same_alerts_when_rerun_later() -> None:
    """The alert key numbers the entry instead of timing it: a rerun hours later, at another
    --as-of, sees the same entries (the killed run never committed them) and the same keys."""
    adapters, sf = setup()
    sink, state = adapters.alert_sinks["salesforce"], adapters.state
    commit = state.save_account_states

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # SIGKILL between queueing the alerts and the state commit

    state.save_account_states = killed  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=ALERTS_ON)
    assert sink.tasks == {}
    state.save_account_states = commit  # type: ignore[method-assign]
    state.locks.clear()  # type: ignore[attr-defined]  # the dead run's lock
    for hours in (4, 8):
        run_sync(
            adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(hours=hours)), channels=ALERTS_ON
        )
    assert len(sink.tasks) == 3 and sink.duplicates == 0
    assert len(adapters.alert_ledger.rows) == 3  # type: ignore[union-attr]


def test_a_re_entry_into_the_tier_is_alerted_again() -> None:
    adapters, sf = setup()
    sink, usage = adapters.alert_sinks["salesforce"], adapters.usage
    run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=ALERTS_ON)
    assert len(sink.tasks) == 3
    full = list(usage.accounts)  # type: ignore[attr-defined]
    usage.accounts = [  # type: ignore[attr-defined]
        replace(a, metrics={**a.metrics, "active_users_28d": 0}) if a.key == "buyer.com" else a
        for a in full
    ]
    run_sync(adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(days=1)), channels=ALERTS_ON)
    usage.accounts = full  # type: ignore[attr-defined]
    run_sync(adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(days=2)), channels=ALERTS_ON)
    assert len(sink.tasks) == 4 and sink.duplicates == 0  # buyer.com's second entry


def test_a_crash_between_task_creation_and_the_ledger_leaves_exactly_one_task() -> None:
    adapters, sf = setup()
    ledger, sink = adapters.alert_ledger, adapters.alert_sinks["salesforce"]
    ledger.crash_on_created = True  # type: ignore[union-attr]
    with pytest.raises(KeyboardInterrupt):
        run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=ALERTS_ON)
    assert len(sink.tasks) == 1
    ledger.crash_on_created = False  # type: ignore[union-attr]
    adapters.state.locks.clear()  # type: ignore[attr-defined]  # the dead run's lock
    rerun = run_sync(
        adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(minutes=5)), channels=ALERTS_ON
    )
    alerts = rerun.summary["destinations"]["salesforce"]["alerts"]
    assert alerts["found_existing"] == 1 and alerts["created"] == 2  # none lost, none doubled
    assert len(sink.tasks) == 3


def test_a_create_the_crm_cannot_find_yet_is_left_to_settle_not_sent_again() -> None:
    # HubSpot finds a task by its key through a search index that lags its writes: a rerun
    # seconds after a crash would not see the task it made and would create a second one.
    adapters, sf = setup()
    ledger = adapters.alert_ledger
    sink = adapters.alert_sinks["salesforce"] = FakeAlertSink(lookup_lag_seconds=60)
    ledger.crash_on_created = True  # type: ignore[union-attr]
    with pytest.raises(KeyboardInterrupt):
        run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=ALERTS_ON)
    (made,) = sink.tasks
    sink.unindexed.add(made)  # not searchable yet
    ledger.crash_on_created = False  # type: ignore[union-attr]
    adapters.state.locks.clear()  # type: ignore[attr-defined]  # the dead run's lock

    soon = run_sync(
        adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(seconds=10)), channels=ALERTS_ON
    )
    alerts = soon.summary["destinations"]["salesforce"]["alerts"]
    assert (alerts["settling"], alerts["created"], alerts["found_existing"]) == (1, 2, 0)
    assert sink.duplicates == 0 and len(sink.tasks) == 3

    sink.unindexed.clear()  # indexed now, and the lag has passed
    ledger.rows[made]["sent_at"] -= timedelta(seconds=61)  # type: ignore[union-attr]
    later = run_sync(
        adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(minutes=5)), channels=ALERTS_ON
    )
    alerts = later.summary["destinations"]["salesforce"]["alerts"]
    assert (alerts["settling"], alerts["found_existing"], alerts["created"]) == (0, 1, 0)
    assert sink.duplicates == 0 and len(sink.tasks) == 3


def test_after_sigterm_queued_alerts_wait_for_the_next_run() -> None:
    adapters, sf = setup()
    sink = adapters.alert_sinks["salesforce"]
    options = RunOptions(as_of=AS_OF)
    sf.before_batch = lambda _offset: options.stop.set()  # SIGTERM while writing
    stopped = run_sync(adapters, MODEL, options, channels=ALERTS_ON)
    assert stopped.summary["destinations"]["salesforce"].get("alerts") is None
    assert sink.tasks == {}  # no CRM calls after the batch in flight
    sf.before_batch = lambda _offset: None
    later = run_sync(
        adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(minutes=5)), channels=ALERTS_ON
    )
    assert later.summary["destinations"]["salesforce"]["alerts"]["created"] == 3
    assert len(sink.tasks) == 3


def test_a_rejected_task_is_recorded_and_retried_never_duplicated() -> None:
    adapters, sf = setup()
    sink = adapters.alert_sinks["salesforce"]
    sink.reject["0010"] = "INVALID_CROSS_REFERENCE_KEY"  # type: ignore[attr-defined]
    first = run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=ALERTS_ON)
    alerts = first.summary["destinations"]["salesforce"]["alerts"]
    assert alerts["rejected"] == 1 and alerts["rejection_reasons"] == {
        "INVALID_CROSS_REFERENCE_KEY": 1
    }
    sink.reject.clear()  # type: ignore[attr-defined]
    second = run_sync(
        adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(hours=1)), channels=ALERTS_ON
    )
    alerts = second.summary["destinations"]["salesforce"]["alerts"]
    assert alerts["created"] == 1 and alerts["rejected"] == 0
    assert len(sink.tasks) == 3
    third = run_sync(
        adapters, MODEL, RunOptions(as_of=AS_OF + timedelta(hours=2)), channels=ALERTS_ON
    )
    assert (
        third.summary["destinations"]["salesforce"]["alerts"]["created"] == 0
        and len(sink.tasks) == 3
    )


def test_dry_runs_send_no_alerts() -> None:
    adapters, sf = setup()
    run_sync(adapters, MODEL, RunOptions(as_of=AS_OF, dry_run=True), channels=ALERTS_ON)
    assert adapters.alert_sinks["salesforce"].tasks == {}  # type: ignore[attr-defined]


def test_pqas_nobody_touched_are_reported_as_stale() -> None:
    from dataclasses import replace

    adapters, sf = setup(alerts=False)
    run_sync(
        adapters, MODEL, RunOptions(as_of=AS_OF - timedelta(days=60)), channels=ChannelSettings()
    )
    asked: list[list[str]] = []

    def last_activity(ids: list[str]):  # type: ignore[no-untyped-def]
        asked.append(ids)
        return {
            "0010": None,
            "0011": (AS_OF - timedelta(days=2)).date(),
            "0012": (AS_OF - timedelta(days=90)).date(),
        }

    adapters.activity_readers["salesforce"] = last_activity
    channels = replace(ChannelSettings(), stale_after_days=30)
    result = run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=channels)
    stale = result.summary["destinations"]["salesforce"]["stale_pqas"]
    assert asked == [["0010", "0011", "0012"]]  # only PQAs qualified more than 30 days ago
    assert stale["stale"] == 2
    assert [a["domain"] for a in stale["accounts"]] == ["buyer.com", "nobody.com"]


PLAYBOOK_MOTIONS = (
    MotionRule(("sales",), None, "self_serve", ("smb",)),
    *DEFAULT_MOTIONS,
)


def test_fit_routes_motions_and_the_crms_employee_count_wins_where_it_has_one() -> None:
    adapters, sf = setup(alerts=False)
    adapters.usage = FakeUsage(
        adapters.usage.accounts,  # type: ignore[attr-defined]
        company_sizes={"buyer.com": {"1-10": 4, "51-200": 1}, "nobody.com": {"11-50": 2}},
    )
    # The CRM knows buyer.com has 450 employees: it outranks the users' "1-10".
    buyer = next(r for r in sf.records.values() if r.name == "buyer.com")
    sf.records[buyer.id] = replace(buyer, fields={"NumberOfEmployees": 450})
    specs = {
        **SPECS,
        "PQA_Fit_Segment__c": FieldSpec("PQA_Fit_Segment__c", FieldType.PICKLIST, length=40),
        "NumberOfEmployees": FieldSpec("NumberOfEmployees", FieldType.INTEGER),
    }
    sf.specs = specs
    adapters.mappings["salesforce"] = replace(
        MAPPING,
        fields=(*MAPPING.fields, FieldMapping("PQA_Fit_Segment__c", "fit_segment")),
        firmographics={"employees": "NumberOfEmployees"},
    )
    channels = ChannelSettings(motions=PLAYBOOK_MOTIONS, fit=DEFAULT_FIT)
    result = run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=channels)

    fields = {r.name: r.fields for r in sf.records.values()}
    assert fields["buyer.com"]["PQA_Fit_Segment__c"] == "mid_market"
    assert fields["buyer.com"]["PQA_Motion__c"] == "sales"  # not smb: the CRM says 450
    assert fields["nobody.com"]["PQA_Fit_Segment__c"] == "smb"
    assert fields["nobody.com"]["PQA_Motion__c"] == "self_serve"  # SMB stays self-serve
    assert fields["mql.com"]["PQA_Fit_Segment__c"] == "unknown"
    assert fields["mql.com"]["PQA_Motion__c"] == "abm"
    # The summary counts the account-level fit (sign-ups), beside engagement.
    fit = result.summary["leads"]["fit"]
    assert fit["segments"] == {"smb": 2, "unknown": 2}
    assert fit["by_tier"]["sales"] == {"smb": 2, "unknown": 1}
    rerun = run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=channels)
    assert rerun.summary["destinations"]["salesforce"]["write_calls"] == 0


def test_a_firmographic_field_the_crm_lacks_keeps_the_destination_from_running() -> None:
    adapters, sf = setup(alerts=False)
    adapters.mappings["salesforce"] = replace(MAPPING, firmographics={"employees": "Headcount__c"})
    channels = ChannelSettings(fit=DEFAULT_FIT)
    result = run_sync(adapters, MODEL, RunOptions(as_of=AS_OF), channels=channels)
    entry = result.summary["destinations"]["salesforce"]
    assert entry["status"] == "invalid"
    assert any("firmographics.employees" in issue for issue in entry["issues"]), entry["issues"]
    assert all(record.fields == {} for record in sf.records.values())


def test_where_alerts_are_sent_the_run_keeps_every_record_they_may_need() -> None:
    """Alerts go to any matched record (an earlier run's queued ones too), so a destination
    with an alert sink keeps its whole CRM picture; one without keeps the changed records."""
    with_alerts, _ = setup()
    result = run_sync(with_alerts, MODEL, RunOptions(as_of=AS_OF), channels=ALERTS_ON)
    assert len(result.outcomes["salesforce"].records) == 6
    without, _ = setup()
    result = run_sync(without, MODEL, RunOptions(as_of=AS_OF), channels=ChannelSettings())
    outcome = result.outcomes["salesforce"]
    assert outcome.plan is not None
    assert set(outcome.records) == {change.record_id for change in outcome.plan.changes}
    assert len(outcome.records) < 6
    assert result.summary["destinations"]["salesforce"]["crm_records"] == 6
