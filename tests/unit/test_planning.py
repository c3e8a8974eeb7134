"""Planning: canonical values, desired fields, diffs, priorities."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.matching import build_index, match_accounts
from pls_sync.models import CrmRecord, FieldSpec, FieldType, ProductAccount, RecordChange
from pls_sync.planning import (
    AccountResult,
    Plan,
    apply_changes,
    canonical,
    desired_fields,
    diff_fields,
    json_value,
    plan_changes,
    source_value,
    truncate,
    values_equal,
)
from pls_sync.ports import AccountState
from pls_sync.schema_check import check_mapping_schema
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
    domain: str = "acme.com",
    tier: str = "sales",
    signals: tuple[str, ...] = ("9 active users", "Viewed Terms of Use"),
    qualified_since: datetime | None = AS_OF,
    score_change: int | None = None,
) -> AccountResult:
    account = ProductAccount(domain, domain, {"active_users_28d": 9.0})
    account_score = AccountScore(
        key=domain,
        domain=domain,
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
    state = AccountState(domain, score, tier, AS_OF, qualified_since, AS_OF, score_change)
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
    assert canonical(86, number) == 86
    assert canonical("86.0", number) == 86
    assert canonical(85.6, number) == 86
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
    assert diff_fields(record, desired, SPECS, by_target)[0] == {"PQA_Tier__c": "sales"}


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
    problems = schema_problems(specs)
    assert "Account has no field PQA_Tier__c" in problems[("fields", "PQA_Tier__c")]
    assert "PQA_Score__c on Account is read-only" in problems[("fields", "PQA_Score__c")]


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
    result = make_result(
        score, "acme.com", tier, tuple(signals), AS_OF if qualified else None, change
    )
    desired = desired_fields(result, MAPPING, SPECS)
    by_target = {f.target: f for f in MAPPING.fields}
    record = CrmRecord("001A", ("acme.com",), current)
    changes = diff_fields(record, desired, SPECS, by_target)[0]
    applied = apply_changes({"001A": current}, [RecordChange("001A", changes, "acme.com")])
    after = CrmRecord("001A", ("acme.com",), applied["001A"])
    assert diff_fields(after, desired, SPECS, by_target)[0] == {}
    for target, want in desired.items():
        have = canonical(applied["001A"].get(target), SPECS[target], join=by_target[target].join)
        assert values_equal(have, want, SPECS[target])


def test_a_target_whose_type_does_not_fit_its_source_is_reported() -> None:
    specs = dict(SPECS)
    specs["PQA_Score__c"] = FieldSpec("PQA_Score__c", FieldType.DATE)
    specs["PQA_Qualified_Since__c"] = FieldSpec("PQA_Qualified_Since__c", FieldType.BOOLEAN)
    problems = schema_problems(specs)
    assert "a date field and cannot hold score values" in problems[("fields", "PQA_Score__c")]
    assert (
        "a boolean field and cannot hold qualified_since values"
        in (problems[("fields", "PQA_Qualified_Since__c")])
    )
    assert schema_problems(SPECS) == {}


def schema_problems(specs: dict[str, FieldSpec]) -> dict[tuple[str | int, ...], str]:
    """The mapped-field errors of MAPPING against ``specs``, by key (the live-schema check)."""
    found = check_mapping_schema(MAPPING, specs, {})
    return {p.key: p.message for p in found if p.is_error and p.key[0] == "fields"}


def test_whole_number_fields_hold_ints_and_still_equal_the_crms_floats_and_text() -> None:
    integer = FieldSpec("n", FieldType.INTEGER)
    scale_0 = SPECS["PQA_Score__c"]
    for spec in (integer, scale_0):
        for raw in (100, 100.0, "100", "100.0", 99.6, True):
            value = canonical(raw, spec)
            assert isinstance(value, int) and not isinstance(value, bool)
        assert canonical(100.0, spec) == 100 and str(canonical(100.0, spec)) == "100"
        assert canonical(-0.2, spec) == 0 and str(canonical(-0.2, spec)) == "0"
        assert values_equal(canonical("100", spec), canonical(100, spec), spec)
        assert not values_equal(canonical(99, spec), canonical(100, spec), spec)
    scale_2 = FieldSpec("x", FieldType.NUMBER, scale=2)
    assert canonical(85, scale_2) == 85.0 and isinstance(canonical(85, scale_2), float)
    assert canonical(-0.001, scale_2) == 0.0 and str(canonical(-0.001, scale_2)) == "0.0"
    assert values_equal(canonical(85, scale_2), 85, scale_2)  # an int desired, a float held


def test_a_score_is_planned_as_an_int() -> None:
    record = CrmRecord("001A", ("acme.com",), {"PQA_Score__c": "40.0"})
    changes, current, _ = diff_fields(
        record,
        desired_fields(make_result(score=100), MAPPING, SPECS),
        SPECS,
        {f.target: f for f in MAPPING.fields},
    )
    assert repr(changes["PQA_Score__c"]) == "100" and repr(current["PQA_Score__c"]) == "40"


def test_diff_fields_gives_the_crm_value_of_each_changed_field() -> None:
    desired = desired_fields(make_result(), MAPPING, SPECS)
    record = CrmRecord(
        "001A",
        ("acme.com",),
        {"PQA_Score__c": 40.0, "PQA_Tier__c": "", "PQA_Active_Users__c": "9"},
    )
    by_target = {f.target: f for f in MAPPING.fields}
    changes, current, _ = diff_fields(record, desired, SPECS, by_target)
    assert changes == {
        "PQA_Score__c": 86,
        "PQA_Tier__c": "sales",
        "PQA_Signals__c": "9 active users; Viewed Terms of Use",
        "PQA_Qualified_Since__c": AS_OF.replace(microsecond=0),
    }
    assert current == {
        "PQA_Score__c": 40,
        "PQA_Tier__c": None,  # an empty CRM field is None, like a missing one
        "PQA_Signals__c": None,
        "PQA_Qualified_Since__c": None,
    }
    assert diff_fields(record, desired, SPECS, by_target)[0] == changes


def _plan_for(records: list[CrmRecord], results: list[AccountResult]) -> Plan:
    report = match_accounts(
        ((r.account.key, r.account.domain, float(r.score.score)) for r in results),
        build_index(records),
        "skip",
    )
    return plan_changes(results, report, {r.id: r for r in records}, MAPPING, SPECS)


def test_planned_changes_carry_the_crm_values_they_replace() -> None:
    records = [
        CrmRecord(
            "001A",
            ("acme.com",),
            {"PQA_Score__c": 40, "PQA_Tier__c": "success", "PQA_Signals__c": "old"},
        ),
        CrmRecord("001B", ("beta.io",), {}),
    ]
    results = [make_result(domain="acme.com"), make_result(score=20, domain="beta.io")]
    plan = _plan_for(records, results)
    by_id = {change.record_id: change for change in plan.changes}
    acme = by_id["001A"]
    assert acme.current is not None and set(acme.current) == set(acme.fields)
    assert acme.current["PQA_Score__c"] == 40 and acme.fields["PQA_Score__c"] == 86
    assert acme.current["PQA_Tier__c"] == "success" and acme.fields["PQA_Tier__c"] == "sales"
    assert acme.current["PQA_Signals__c"] == "old"
    assert acme.current["PQA_Qualified_Since__c"] is None
    beta = by_id["001B"]
    assert beta.current is not None and set(beta.current) == set(beta.fields)
    assert all(value is None for value in beta.current.values())


def test_mql_only_changes_carry_the_crm_values_they_replace() -> None:
    mapping = DestinationMapping(
        "salesforce",
        "Account",
        MatchRule(("Website",)),
        (FieldMapping("PQA_Lead_Channel__c", "lead_channel"),),
    )
    specs = {"PQA_Lead_Channel__c": FieldSpec("PQA_Lead_Channel__c", FieldType.PICKLIST)}
    records = {
        "001A": CrmRecord("001A", ("mql.io",), {"PQA_Lead_Channel__c": "sales_led"}),
        "001B": CrmRecord("001B", ("other.io",), {}),
        "001C": CrmRecord("001C", ("fresh.io",), {}),
    }
    report = match_accounts([], build_index(records.values()), "skip")
    plan = plan_changes(
        [],
        report,
        records,
        mapping,
        specs,
        mql_only={"mql.io", "fresh.io"},
        domains_of=lambda record: set(record.domain_values),
    )
    by_id = {change.record_id: change for change in plan.changes}
    assert set(by_id) == {"001A", "001C"}
    assert by_id["001A"].current == {"PQA_Lead_Channel__c": "sales_led"}
    assert by_id["001A"].fields == {"PQA_Lead_Channel__c": "mql_only"}
    assert by_id["001C"].current == {"PQA_Lead_Channel__c": None}


def test_plan_changes_in_json_form_are_from_to_pairs() -> None:
    when = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    plan = Plan(
        "salesforce",
        "Account",
        [
            RecordChange(
                "001A",
                {"PQA_Score__c": 85, "PQA_Qualified_Since__c": when, "PQA_Signals__c": None},
                "acme.com",
                1_000_086.0,
                current={"PQA_Score__c": 40, "PQA_Qualified_Since__c": None, "PQA_Signals__c": "x"},
            ),
            RecordChange("001B", {"PQA_Day__c": date(2026, 11, 22)}, "b.com"),
        ],
    )
    first, second = plan.change_dicts()
    assert first == {
        "record_id": "001A",
        "account": "acme.com",
        "priority": 1_000_086,
        "fields": {
            "PQA_Score__c": {"from": 40, "to": 85},
            "PQA_Qualified_Since__c": {"from": None, "to": "2026-11-22T10:00:00Z"},
            "PQA_Signals__c": {"from": "x", "to": None},
        },
    }
    # A change made without current values (a hand-built one) says "from": null.
    assert second["fields"] == {"PQA_Day__c": {"from": None, "to": "2026-11-22"}}


def test_json_values_are_what_a_reader_expects() -> None:
    assert repr(json_value(85.0)) == "85"
    assert json_value(85.5) == 85.5
    assert json_value(2.0**60) == 2.0**60  # too big for an exact int: left a float
    assert json_value(datetime(2026, 11, 22, 11, 0, tzinfo=timezone(timedelta(hours=1)))) == (
        "2026-11-22T10:00:00Z"
    )
    assert json_value(datetime(2026, 11, 22, 10, 0)) == "2026-11-22T10:00:00Z"  # naive is UTC
    assert json_value(True) is True and json_value(None) is None and json_value("x") == "x"
