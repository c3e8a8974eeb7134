"""Planning: canonical values, desired fields, diffs, priorities."""

from __future__ import annotations

from datetime import UTC, date, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.models import CrmRecord, FieldSpec, FieldType, ProductAccount
from pls_sync.planning import (
    AccountResult,
    apply_changes,
    canonical,
    desired_fields,
    diff_record,
    missing_targets,
    source_value,
    truncate,
    values_equal,
)
from pls_sync.ports import AccountState
from pls_sync.scoring import AccountScore, ComponentScore, FiredSignal

AS_OF = datetime(2026, 11, 22, 6, 30, 15, 123456, tzinfo=UTC)

SPECS = {
    "PQA_Score__c": FieldSpec("PQA_Score__c", FieldType.NUMBER, scale=0),
    "PQA_Tier__c": FieldSpec("PQA_Tier__c", FieldType.PICKLIST, length=255),
    "PQA_Signals__c": FieldSpec("PQA_Signals__c", FieldType.TEXTAREA, length=40),
    "PQA_Active_Users__c": FieldSpec("PQA_Active_Users__c", FieldType.NUMBER, scale=0),
    "PQA_Qualified_Since__c": FieldSpec("PQA_Qualified_Since__c", FieldType.DATETIME),
    "PQA_Score_Change__c": FieldSpec("PQA_Score_Change__c", FieldType.NUMBER, scale=0),
    "PQA_Day__c": FieldSpec("PQA_Day__c", FieldType.DATE),
}
MAPPING = DestinationMapping(
    destination="salesforce",
    object="Account",
    match=MatchRule(("Website",)),
    fields=(
        FieldMapping("PQA_Score__c", "score"),
        FieldMapping("PQA_Tier__c", "tier"),
        FieldMapping("PQA_Signals__c", "signals", null="clear"),
        FieldMapping("PQA_Active_Users__c", "metrics.active_users_28d"),
        FieldMapping("PQA_Qualified_Since__c", "qualified_since", null="clear"),
        FieldMapping("PQA_Score_Change__c", "score_change"),
    ),
)


def make_result(
    score: int = 86,
    tier: str = "sales",
    signals: tuple[str, ...] = ("9 active users", "Viewed Terms of Use"),
    qualified_since: datetime | None = AS_OF,
    score_change: int | None = None,
) -> AccountResult:
    account = ProductAccount("acme.com", "acme.com", {"active_users_28d": 9.0})
    account_score = AccountScore(
        key="acme.com",
        domain="acme.com",
        score=score,
        raw_tier=tier,
        tier=tier,
        components=(
            ComponentScore("team_size", "active_users_28d", 9.0, 84.4, 0.35, 29.5, "9 active"),
        ),
        signals=tuple(FiredSignal(s, 5, s) for s in signals),
        metrics={"active_users_28d": 9.0},
        scored_at=AS_OF,
    )
    state = AccountState("acme.com", score, tier, AS_OF, qualified_since, AS_OF, score_change)
    return AccountResult(account, account_score, state, None, score_change)


def test_source_values_cover_scores_metrics_components_and_lists() -> None:
    result = make_result()
    assert source_value("score", result) == 86
    assert source_value("metrics.active_users_28d", result) == 9.0
    assert source_value("metrics.unknown", result) is None
    assert source_value("components.team_size", result) == 29.5
    assert source_value("signals", result) == ["9 active users", "Viewed Terms of Use"]


def test_canonical_forms_per_type() -> None:
    number = SPECS["PQA_Score__c"]
    assert canonical(86, number) == 86.0
    assert canonical("86.0", number) == 86.0
    assert canonical(85.6, number) == 86.0
    assert canonical("", number) is None
    assert canonical("abc", number) == "abc"  # unreadable CRM value: differs, gets rewritten
    dt = SPECS["PQA_Qualified_Since__c"]
    assert canonical("2026-11-22T06:30:15.000+0000", dt) == datetime(
        2026, 11, 22, 6, 30, 15, tzinfo=UTC
    )
    assert canonical("2026-11-22T06:30:15Z", dt) == canonical(AS_OF, dt)
    assert canonical("1795329015000", dt) == datetime.fromtimestamp(1795329015, tz=UTC)
    day = SPECS["PQA_Day__c"]
    assert canonical(AS_OF, day) == date(2026, 11, 22)
    assert canonical("2026-11-22", day) == date(2026, 11, 22)
    text = SPECS["PQA_Signals__c"]
    assert canonical(["a", "b"], text) == "a; b"
    long = canonical(["x" * 30, "y" * 30], text)
    assert isinstance(long, str) and len(long) == 40 and long.endswith("…")
    assert canonical([], text) is None


def test_truncate_marks_the_cut() -> None:
    assert truncate("abcdef", 10) == "abcdef"
    assert truncate("abcdef", 4) == "abc…"
    assert truncate("abcdef", 1) == "a"


def test_null_policies_skip_and_clear() -> None:
    result = make_result(signals=(), qualified_since=None, score_change=None)
    desired = desired_fields(result, MAPPING, SPECS)
    assert "PQA_Score_Change__c" not in desired  # skip: leave the CRM value alone
    assert desired["PQA_Signals__c"] is None  # clear
    assert desired["PQA_Qualified_Since__c"] is None


def test_diff_sends_only_changed_fields() -> None:
    result = make_result()
    desired = desired_fields(result, MAPPING, SPECS)
    record = CrmRecord(
        "001A",
        ("acme.com",),
        {
            "PQA_Score__c": 86.0,
            "PQA_Tier__c": "success",
            "PQA_Signals__c": "9 active users; Viewed Terms of Use",
            "PQA_Active_Users__c": 9,
            "PQA_Qualified_Since__c": "2026-11-22T06:30:15.000+0000",
        },
    )
    by_target = {f.target: f for f in MAPPING.fields}
    assert diff_record(record, desired, SPECS, by_target) == {"PQA_Tier__c": "sales"}


def test_values_equal_uses_scale_tolerance() -> None:
    spec = FieldSpec("x", FieldType.NUMBER, scale=2)
    assert values_equal(1.0, 1.004, spec)
    assert not values_equal(1.0, 1.01, spec)
    assert values_equal(None, None, spec)
    assert not values_equal(None, 0.0, spec)


def test_missing_and_read_only_targets_are_reported() -> None:
    specs = dict(SPECS)
    del specs["PQA_Tier__c"]
    specs["PQA_Score__c"] = FieldSpec("PQA_Score__c", FieldType.NUMBER, updateable=False)
    problems = missing_targets(MAPPING, specs)
    assert "PQA_Tier__c: no such field on Account" in problems
    assert "PQA_Score__c: field on Account is not writable" in problems


current_values = st.one_of(
    st.none(),
    st.integers(-1000, 1000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=50),
    st.sampled_from(["sales", "success", "self_serve", "2026-11-22T06:30:15.000+0000", ""]),
)


@settings(max_examples=200, deadline=None)
@given(
    score=st.integers(0, 100),
    tier=st.sampled_from(["sales", "success", "self_serve"]),
    signals=st.lists(st.text(min_size=1, max_size=30), max_size=4),
    change=st.none() | st.integers(-100, 100),
    qualified=st.booleans(),
    current=st.dictionaries(st.sampled_from(sorted(SPECS)), current_values),
)
def test_applying_the_plan_yields_the_desired_state(
    score: int,
    tier: str,
    signals: list[str],
    change: int | None,
    qualified: bool,
    current: dict[str, object],
) -> None:
    """Property: after applying the diff, a second diff finds nothing to change."""
    result = make_result(score, tier, tuple(signals), AS_OF if qualified else None, change)
    desired = desired_fields(result, MAPPING, SPECS)
    by_target = {f.target: f for f in MAPPING.fields}
    record = CrmRecord("001A", ("acme.com",), current)
    changes = diff_record(record, desired, SPECS, by_target)
    from pls_sync.models import RecordChange

    applied = apply_changes({"001A": current}, [RecordChange("001A", changes, "acme.com")])
    after = CrmRecord("001A", ("acme.com",), applied["001A"])
    assert diff_record(after, desired, SPECS, by_target) == {}
    for target, want in desired.items():
        have = canonical(applied["001A"].get(target), SPECS[target], join=by_target[target].join)
        assert values_equal(have, want, SPECS[target])


def test_a_target_whose_type_does_not_fit_its_source_is_reported() -> None:
    specs = dict(SPECS)
    specs["PQA_Score__c"] = FieldSpec("PQA_Score__c", FieldType.DATE)
    specs["PQA_Qualified_Since__c"] = FieldSpec("PQA_Qualified_Since__c", FieldType.BOOLEAN)
    problems = missing_targets(MAPPING, specs)
    assert "PQA_Score__c: a date field cannot hold 'score' values" in problems
    assert (
        "PQA_Qualified_Since__c: a boolean field cannot hold 'qualified_since' values" in problems
    )
    assert missing_targets(MAPPING, SPECS) == []
