"""Tests for PQA scoring: ratios, curves, rules, labels, tiers, the age guard and properties."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pls_sync.models import ProductAccount
from pls_sync.scoring import (
    GUARD_MIN_AGE,
    AccountScore,
    Component,
    Condition,
    ConditionGroup,
    MetricSum,
    Ratio,
    Rule,
    ScoringModel,
    Signal,
    Tier,
    derive_metrics,
    evaluate,
    label_names,
    normalise,
    render_label,
    score_account,
    score_accounts,
    tier_counts,
    tier_for,
)
from tests.unit.scoring_fixtures import (
    AS_OF,
    BASELINE_METRICS,
    USAGE_METRICS,
    account,
    default_model,
    signal_points_model,
)

MODEL = signal_points_model()
DEFAULT = default_model()
TIERS = MODEL.tiers
TEAM_CURVE = MODEL.components[0].curve
RANK = {tier.name: index for index, tier in enumerate(TIERS)}


def component(result: AccountScore, name: str) -> Any:
    """The named component of a score."""
    return next(c for c in result.components if c.name == name)


def linear_model(weight: float = 1.0, **changes: Any) -> ScoringModel:
    """One component on metric ``x`` whose curve is the identity on 0..100."""
    base = ScoringModel(
        components=(Component("x", weight, ("x",), ((0, 0), (100, 100)), "{value}"),),
    )
    return replace(base, **changes)


# --- derive_metrics ------------------------------------------------------------------------------


def test_ratio_divides_by_the_denominator_when_above_the_floor() -> None:
    metrics = {"new_users_7d": 15, "usual_weekly_new_users": 3}
    derived = derive_metrics(metrics, MODEL.ratios)
    assert derived["user_velocity"] == 5.0
    assert "event_velocity" not in derived  # no events_7d: the ratio stays missing
    assert metrics == {"new_users_7d": 15, "usual_weekly_new_users": 3}  # input untouched


def test_ratio_uses_min_denominator_for_small_or_missing_denominators() -> None:
    assert derive_metrics({"events_7d": 50, "usual_weekly_events": 4}, MODEL.ratios)[
        "event_velocity"
    ] == pytest.approx(5.0)
    assert derive_metrics({"events_7d": 50}, MODEL.ratios)["event_velocity"] == pytest.approx(5.0)
    assert derive_metrics({"new_users_7d": 4}, MODEL.ratios)["user_velocity"] == 4.0


def test_later_ratios_may_use_earlier_ones() -> None:
    ratios = (Ratio("a", "x", "y"), Ratio("b", "a", "z", min_denominator=2))
    assert derive_metrics({"x": 12, "y": 3}, ratios)["b"] == 2.0


def test_ratio_with_an_unknown_side_is_unknown() -> None:
    ratios = MODEL.ratios
    unknown_baseline = derive_metrics({"new_users_7d": 15, "usual_weekly_new_users": None}, ratios)
    assert unknown_baseline["user_velocity"] is None  # not 15 / min_denominator
    unknown_count = derive_metrics({"new_users_7d": None, "usual_weekly_new_users": 3}, ratios)
    assert unknown_count["user_velocity"] is None
    later = derive_metrics({"x": None, "z": 2}, (Ratio("a", "x", "y"), Ratio("b", "a", "z")))
    assert later["a"] is None and later["b"] is None


def test_ratio_with_no_positive_denominator_is_missing() -> None:
    assert "r" not in derive_metrics({"x": 1}, (Ratio("r", "x", "y", min_denominator=0),))


# --- normalise -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (1, 10), (2, 22.5), (7, 80), (9, 83.75), (15, 95), (22.5, 97.5), (30, 100)],
)
def test_normalise_interpolates_the_team_curve(value: float, expected: float) -> None:
    assert normalise(value, TEAM_CURVE) == pytest.approx(expected)


def test_normalise_clamps_at_both_ends() -> None:
    assert normalise(-5, TEAM_CURVE) == 0
    assert normalise(1e9, TEAM_CURVE) == 100
    assert normalise(0.5, ((1, 20), (2, 40))) == 20
    assert normalise(5, ((0, -10), (10, 150))) == 70  # interpolated, then clamped to 0..100
    assert normalise(9, ((0, -10), (10, 150))) == 100
    assert normalise(0.5, ((0, -10), (10, 150))) == 0
    assert normalise(5, ((0, -20), (10, -10), (20, 50))) == 0
    assert normalise(float("nan"), ((1, 20), (2, 40))) == 20
    assert normalise(3, ()) == 0


# --- evaluate ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        (">=", 7, True),
        (">=", 8, False),
        (">", 6, True),
        (">", 7, False),
        ("<=", 7, True),
        ("<", 7, False),
        ("==", 7, True),
        ("!=", 7, False),
        ("!=", 6, True),
    ],
)
def test_condition_operators(op: str, value: float, expected: bool) -> None:
    assert evaluate(Condition("users", op, value), {"users": 7}) is expected


@pytest.mark.parametrize("op", [">=", ">", "<=", "<", "==", "!="])
def test_missing_or_nan_metric_makes_every_condition_false(op: str) -> None:
    assert evaluate(Condition("users", op, 7), {}) is False
    assert evaluate(Condition("users", op, 7), {"users": float("nan")}) is False


@pytest.mark.parametrize("op", [">=", ">", "<=", "<", "==", "!="])
@pytest.mark.parametrize("value", [0, 1, 7])
def test_unknown_metric_makes_every_condition_false(op: str, value: float) -> None:
    """A warehouse NULL is unknown, not 0: ``< 1`` and ``== 0`` do not hold on it either."""
    condition = Condition("users", op, value)
    assert evaluate(condition, {"users": None}) is False
    assert evaluate(ConditionGroup("any", (condition,)), {"users": None}) is False
    model = linear_model(
        signals=(
            Signal("alone", condition, 10, "alone"),
            Signal("grouped", ConditionGroup("all", (condition, Condition("x", ">=", 0))), 10, ""),
        )
    )
    result = score_account(account({"x": 0, "users": None}), model, AS_OF)
    assert result.signals == ()
    assert result.metrics["users"] is None


def test_groups_nest_and_empty_groups_follow_all_any() -> None:
    metrics = {"a": 1, "b": 5}
    rule: Rule = ConditionGroup(
        "all",
        (
            Condition("a", ">=", 1),
            ConditionGroup("any", (Condition("b", ">", 10), Condition("b", "==", 5))),
        ),
    )
    assert evaluate(rule, metrics) is True
    assert evaluate(ConditionGroup("all", (rule, Condition("c", ">=", 0))), metrics) is False
    assert evaluate(ConditionGroup("all", ()), metrics) is True
    assert evaluate(ConditionGroup("any", ()), metrics) is False


def test_unknown_operator_or_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="operator"):
        evaluate(Condition("a", "=~", 1), {"a": 1})
    with pytest.raises(ValueError, match="mode"):
        evaluate(ConditionGroup("most", ()), {})


# --- render_label --------------------------------------------------------------------------------


def test_render_velocity_label() -> None:
    template = "{new_users_7d:.0f} new users this week, {user_velocity:.0f}x usual"
    values = {"new_users_7d": 15.0, "user_velocity": 5.0}
    assert render_label(template, values) == "15 new users this week, 5x usual"
    assert label_names(template) == {"new_users_7d", "user_velocity"}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{v:.1f}x", "2.5x"),
        ("{v}", "2.5"),
        ("{n}", "7"),  # an integer-valued float loses its .0
        ("{n:d} users", "7 users"),
        ("{half:d}", "3"),  # d on a non-integer rounds half up
        ("{big:,.0f}", "12,346"),
        ("{share:.0%}", "25%"),
        ("{missing:.0f} users", "? users"),
        ("{nan}", "?"),
        ("{v:s}", "2.5"),  # not a numeric spec: the plain value
        ("{v:!r}", "2.5"),
        ("{n:999999999f}", "7"),  # absurd widths are refused, not built
        ("{v.__class__} {v[0]} {0}", "{v.__class__} {v[0]} {0}"),  # no attribute/index access
        ("{{v}} = {v}", "{v} = 2.5"),
        ("no placeholders", "no placeholders"),
    ],
)
def test_render_label(template: str, expected: str) -> None:
    values = {"v": 2.5, "n": 7.0, "half": 2.5, "big": 12345.6, "share": 0.25, "nan": math.nan}
    assert render_label(template, values) == expected


# --- tier_for ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("score", "expected"), [(100, "sales"), (80, "sales"), (79, "success")])
def test_raw_tier_is_the_highest_reached(score: int, expected: str) -> None:
    assert tier_for(score, TIERS, None, 5) == expected
    assert tier_for(score, tuple(reversed(TIERS)), None, 5) == expected  # order of input is free


@pytest.mark.parametrize(
    ("score", "expected"), [(79, "sales"), (76, "sales"), (75, "sales"), (74, "success")]
)
def test_hysteresis_holds_sales_within_the_band(score: int, expected: str) -> None:
    assert tier_for(score, TIERS, "sales", 5) == expected


def test_hysteresis_never_helps_entering_a_tier() -> None:
    assert tier_for(79, TIERS, "success", 5) == "success"
    assert tier_for(58, TIERS, "self_serve", 5) == "self_serve"
    assert tier_for(58, TIERS, "success", 5) == "success"
    assert tier_for(50, TIERS, "sales", 5) == "self_serve"  # the band is the previous tier's
    assert tier_for(79, TIERS, "renamed_tier", 5) == "success"  # unknown previous is ignored
    assert tier_for(85, TIERS, "success", 5) == "sales"


def test_score_below_every_bound_gets_the_lowest_tier() -> None:
    assert tier_for(3, (Tier("hot", 50), Tier("warm", 10)), None, 0) == "warm"


# --- score_account -------------------------------------------------------------------------------


def test_nine_active_users_score_the_team_component_from_the_curve() -> None:
    result = score_account(account({"active_users_28d": 9}), MODEL, AS_OF)
    team = component(result, "team_size")
    assert team.metric == "active_users_28d"
    assert team.value == 9
    assert team.normalised == pytest.approx(83.75)
    assert team.points == pytest.approx(0.35 * 83.75)
    assert team.description == "9 active users in 28 days"
    # 29.3125 from the team plus the 7+ users signal (5 points)
    assert result.score == 34
    assert [(s.name, s.description) for s in result.signals] == [
        ("team_threshold", "9 active users")
    ]
    assert (result.raw_tier, result.tier, result.guard) == ("self_serve", "self_serve", None)


def test_velocity_spike_account_scores_sales_with_explanations() -> None:
    metrics = {
        "active_users_28d": 9,  # 83.75 * 0.35 = 29.3125
        "events_28d": 500,  # 60 * 0.25 = 15
        "new_users_7d": 15,
        "usual_weekly_new_users": 3,  # user velocity 5.0 -> 100 * 0.2 = 20
        "events_7d": 200,
        "usual_weekly_events": 100,  # event velocity 2.0 -> 43.3, loses to user velocity
        "core_features_28d": 4,  # 75 * 0.2 = 15
    }
    result = score_account(account(metrics), MODEL, AS_OF)
    velocity = component(result, "velocity")
    assert (velocity.metric, velocity.value, velocity.normalised) == ("user_velocity", 5.0, 100)
    assert velocity.description == "5.0x the usual week"
    assert component(result, "volume").description == "500 events in 28 days"
    assert component(result, "breadth").points == pytest.approx(15)
    # components 79.3125 + team_threshold 5 + velocity_spike 10 = 94.3125, above the knee at
    # 80: 80 + 20 * (1 - exp(-14.3125 / 20)) = 90.22
    assert result.score == 90
    assert {s.name: s.description for s in result.signals} == {
        "team_threshold": "9 active users",
        "velocity_spike": "15 new users this week, 5x usual",
    }
    assert result.tier == result.raw_tier == "sales"
    assert result.metrics["user_velocity"] == 5.0
    assert result.metrics["event_velocity"] == 2.0
    assert result.scored_at == AS_OF
    assert result.age_days == pytest.approx(90)
    assert (result.key, result.domain) == ("acme.com", "acme.com")


def test_a_total_above_100_saturates_below_it_or_is_clamped_without_saturation() -> None:
    metrics = {
        "active_users_28d": 40,
        "events_28d": 20_000,
        "new_users_7d": 50,
        "core_features_28d": 9,
        "legal_page_views_14d": 2,
        "pricing_page_views_14d": 3,
        "admin_changes_28d": 1,
        "enterprise_features_28d": 2,
    }
    result = score_account(account(metrics), MODEL, AS_OF)
    clipped = score_account(account(metrics), replace(MODEL, saturate_above=None), AS_OF)
    assert sum(c.points for c in result.components) + sum(s.points for s in result.signals) > 100
    assert 95 <= result.score < 100 and clipped.score == 100
    assert len(result.signals) == 6


def test_negative_points_are_clamped_at_0() -> None:
    model = linear_model(signals=(Signal("churn", Condition("x", "<", 5), -40, "quiet"),))
    assert score_account(account({"x": 1}), model, AS_OF).score == 0


def test_missing_metrics_score_zero_with_no_metric() -> None:
    result = score_account(account({"events_28d": 50}), MODEL, AS_OF)
    team = component(result, "team_size")
    assert (team.metric, team.value, team.points, team.normalised) == (None, None, 0, 0)
    assert team.description == "active_users_28d unknown"
    assert component(result, "velocity").metric is None
    assert result.score == 5  # 20 * 0.25 from volume only
    assert result.signals == ()
    empty = score_account(account({}), MODEL, AS_OF)
    assert (empty.score, empty.tier) == (0, "self_serve")


def test_unknown_metrics_score_zero_and_the_explanation_says_so() -> None:
    """An account whose warehouse row has NULLs scores, fires nothing on them and says why."""
    metrics = {
        "active_users_28d": None,
        "events_28d": 500,  # volume 60 * 0.25 = 15
        "new_users_7d": 15,
        "usual_weekly_new_users": None,  # user velocity unknown: no spike
        "events_7d": None,
        "usual_weekly_events": 20,
        "core_features_28d": 4,  # breadth 75 * 0.2 = 15
        "legal_page_views_14d": None,
    }
    result = score_account(account(metrics), MODEL, AS_OF)
    team = component(result, "team_size")
    assert (team.metric, team.value, team.points) == (None, None, 0)
    assert team.description == "active_users_28d unknown"
    velocity = component(result, "velocity")
    assert (velocity.points, velocity.description) == (0, "user_velocity, event_velocity unknown")
    assert result.metrics["user_velocity"] is None
    assert result.signals == ()
    assert result.score == 30
    # a known velocity carries the component even when the other one is unknown
    known = score_account(account({**metrics, "events_7d": 60}), MODEL, AS_OF)
    assert component(known, "velocity").metric == "event_velocity"


def test_label_shows_an_unknown_value_as_a_question_mark() -> None:
    template = "{new_users_7d:.0f} new users this week, {user_velocity:.0f}x usual"
    assert render_label(template, {"new_users_7d": 15, "user_velocity": None}) == (
        "15 new users this week, ?x usual"
    )


def test_score_rounds_half_up_despite_float_noise() -> None:
    assert 0.35 * 90 < 31.5  # the float product is 31.499999999999996
    assert score_account(account({"x": 90}), linear_model(0.35), AS_OF).score == 32
    assert score_account(account({"x": 72.5}), linear_model(), AS_OF).score == 73
    assert score_account(account({"x": 72.4}), linear_model(), AS_OF).score == 72


def test_component_takes_the_first_metric_on_a_tie() -> None:
    model = ScoringModel(components=(Component("c", 1, ("a", "b"), ((0, 0), (10, 100))),))
    assert component(score_account(account({"a": 20, "b": 30}), model, AS_OF), "c").metric == "a"
    assert component(score_account(account({"a": 2, "b": 3}), model, AS_OF), "c").metric == "b"


def test_component_label_may_show_other_metrics() -> None:
    label = "{value:.0f} of {seats:.0f} seats"
    model = ScoringModel(components=(Component("c", 1, ("users",), ((0, 0), (10, 100)), label),))
    result = score_account(account({"users": 4, "seats": 10}), model, AS_OF)
    assert component(result, "c").description == "4 of 10 seats"


# --- the age guard -------------------------------------------------------------------------------

SALES_METRICS = {
    "active_users_28d": 15,
    "events_28d": 2000,
    "core_features_28d": 6,
    "legal_page_views_14d": 1,
}


def test_young_account_is_never_put_in_sales() -> None:
    result = score_account(account(SALES_METRICS, age_days=3), MODEL, AS_OF)
    assert result.score >= 80
    assert (result.raw_tier, result.tier, result.guard) == ("sales", "success", GUARD_MIN_AGE)
    assert result.age_days == pytest.approx(3)


def test_guard_ends_at_min_account_age() -> None:
    result = score_account(account(SALES_METRICS, age_days=14), MODEL, AS_OF)
    assert (result.tier, result.guard) == ("sales", None)
    just_short = score_account(account(SALES_METRICS, age_days=13.99), MODEL, AS_OF)
    assert just_short.tier == "success"


def test_unknown_first_seen_is_not_guarded() -> None:
    result = score_account(account(SALES_METRICS, age_days=None), MODEL, AS_OF)
    assert (result.tier, result.guard, result.age_days) == ("sales", None, None)


def test_guard_only_touches_guarded_tiers() -> None:
    result = score_account(account({"active_users_28d": 15}, age_days=1), MODEL, AS_OF)
    assert (result.tier, result.guard) == ("self_serve", None)


def test_guard_also_applies_to_a_tier_held_by_hysteresis() -> None:
    # Config may shrink min_account_age_days above an account's age after it reached sales.
    metrics = {"active_users_28d": 15, "events_28d": 2000, "core_features_28d": 5}
    result = score_account(account(metrics, age_days=5), MODEL, AS_OF, previous_tier="sales")
    assert result.score == 77  # 33.25 + 21.25 + 17.5 + 5: held in sales by hysteresis
    assert (result.raw_tier, result.tier, result.guard) == ("success", "success", GUARD_MIN_AGE)
    older = score_account(account(metrics, age_days=30), MODEL, AS_OF, previous_tier="sales")
    assert older.tier == "sales"


def test_guard_drops_to_the_highest_unguarded_tier_below() -> None:
    tiers = (Tier("sales", 80), Tier("hot", 70), Tier("success", 60), Tier("self_serve", 0))
    model = linear_model(tiers=tiers, guarded_tiers=("sales", "hot"))
    young = account({"x": 90}, age_days=1)
    assert score_account(young, model, AS_OF).tier == "success"
    all_guarded = linear_model(guarded_tiers=("sales", "success", "self_serve"))
    assert score_account(young, all_guarded, AS_OF).tier == "self_serve"


def test_naive_datetimes_are_utc() -> None:
    naive_as_of = AS_OF.replace(tzinfo=None)
    young = ProductAccount(
        "a.io", "a.io", SALES_METRICS, first_seen=naive_as_of - timedelta(days=2)
    )
    result = score_account(young, MODEL, naive_as_of)
    assert result.scored_at == AS_OF and result.scored_at.tzinfo is not None
    assert result.age_days == pytest.approx(2)
    paris = timezone(timedelta(hours=2))
    other = score_account(account(SALES_METRICS), MODEL, AS_OF.astimezone(paris))
    assert other.scored_at == AS_OF and other.scored_at.utcoffset() == timedelta(0)


# --- score_accounts and tier_counts --------------------------------------------------------------


def test_score_accounts_uses_previous_tiers_by_key() -> None:
    metrics = {"active_users_28d": 15, "events_28d": 2000, "core_features_28d": 5}  # 77
    accounts = [account(metrics, key="held.com"), account(metrics, key="new.com")]
    results = list(score_accounts(accounts, MODEL, AS_OF, {"held.com": "sales"}))
    assert [(r.key, r.score, r.tier) for r in results] == [
        ("held.com", 77, "sales"),
        ("new.com", 77, "success"),
    ]


def test_tier_counts_in_tier_order() -> None:
    results = [
        score_account(account({"x": x}, key=f"a{x}"), linear_model(), AS_OF) for x in (5, 65, 90)
    ]
    results += [score_account(account({"x": 10}, key="b"), linear_model(), AS_OF)]
    assert list(tier_counts(results).items()) == [("sales", 1), ("success", 1), ("self_serve", 2)]
    assert list(tier_counts(reversed(results)).items()) == [
        ("sales", 1),
        ("success", 1),
        ("self_serve", 2),
    ]
    only_low = tier_counts(results[:1], TIERS)
    assert list(only_low.items()) == [("sales", 0), ("success", 0), ("self_serve", 1)]
    assert tier_counts([]) == {}


# --- the default model mirrors config/scoring.yaml ----------------------------------------------


def _rule(data: dict[str, Any]) -> Rule:
    if "all" in data:
        return ConditionGroup("all", tuple(_rule(r) for r in data["all"]))
    if "any" in data:
        return ConditionGroup("any", tuple(_rule(r) for r in data["any"]))
    return Condition(data["metric"], data["op"], data["value"])


def test_default_model_mirrors_config_scoring_yaml() -> None:
    path = Path(__file__).resolve().parents[2] / "config" / "scoring.yaml"
    data = yaml.safe_load(path.read_text())
    from_yaml = ScoringModel(
        ratios=tuple(Ratio(name, **spec) for name, spec in data["ratios"].items()),
        sums=tuple(
            MetricSum(name, tuple((m, tuple((x, y) for x, y in c)) for m, c in parts.items()))
            for name, parts in data["sums"].items()
        ),
        components=tuple(
            Component(
                name,
                spec["weight"],
                tuple(spec["metrics"]),
                tuple((x, y) for x, y in spec["curve"]),
                spec["label"],
                discount_young=spec.get("discount_young", False),
            )
            for name, spec in data["components"].items()
        ),
        signals=tuple(
            Signal(s["name"], _rule(s["when"]), s["points"], s["label"]) for s in data["signals"]
        ),
        tiers=tuple(Tier(name, bound) for name, bound in data["tiers"].items()),
        hysteresis=data["hysteresis"],
        saturate_above=data["saturate_above"],
        min_account_age_days=data["guards"]["min_account_age_days"],
        guarded_tiers=tuple(data["guards"]["guarded_tiers"]),
        qualified_tiers=tuple(data["qualified_tiers"]),
    )
    assert from_yaml == DEFAULT
    assert sum(c.weight for c in DEFAULT.components) == pytest.approx(1.0)


# --- properties over the default model -----------------------------------------------------------

metric_value = st.one_of(
    st.integers(min_value=0, max_value=1_000_000),
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
metric_dicts = st.dictionaries(st.sampled_from(USAGE_METRICS + BASELINE_METRICS), metric_value)


BOTH_MODELS = pytest.mark.parametrize("model", [MODEL, DEFAULT], ids=["signal_points", "default"])


@BOTH_MODELS
@settings(max_examples=200, deadline=None)
@given(metrics=metric_dicts, age=st.one_of(st.none(), st.floats(-5, 400)))
def test_score_is_always_an_int_between_0_and_100(
    model: ScoringModel, metrics: dict[str, float], age: float
) -> None:
    result = score_account(account(metrics, age_days=age), model, AS_OF)
    assert type(result.score) is int
    assert 0 <= result.score <= 100
    assert result.raw_tier == tier_for(result.score, TIERS, None, 0)


def rule_metrics(rule: Rule) -> set[str]:
    """Every metric a rule reads."""
    if isinstance(rule, Condition):
        return {rule.metric}
    return set().union(*(rule_metrics(inner) for inner in rule.rules))


@BOTH_MODELS
@settings(max_examples=200, deadline=None)
@given(
    metrics=st.dictionaries(
        st.sampled_from(USAGE_METRICS + BASELINE_METRICS), st.one_of(st.none(), metric_value)
    )
)
def test_unknown_metrics_never_fire_a_signal_or_score_above_known(
    model: ScoringModel, metrics: dict[str, float | None]
) -> None:
    result = score_account(account(metrics), model, AS_OF)
    assert 0 <= result.score <= 100
    by_name = {signal.name: signal for signal in model.signals}
    for fired in result.signals:
        assert all(
            result.metrics.get(m) is not None for m in rule_metrics(by_name[fired.name].when)
        )
    for name, value in metrics.items():
        if value is None:  # the default model only rewards more usage: unknown never beats known
            for known in (0, 1, 1000):
                with_known = score_account(account({**metrics, name: known}), model, AS_OF)
                assert result.score <= with_known.score


@BOTH_MODELS
@settings(max_examples=200, deadline=None)
@given(
    metrics=metric_dicts,
    metric=st.sampled_from(USAGE_METRICS),
    increase=st.one_of(st.integers(1, 1000), st.floats(1e-6, 1e5)),
    age=st.one_of(st.none(), st.floats(0, 60)),
)
def test_more_usage_never_lowers_the_score(
    model: ScoringModel, metrics: dict[str, float], metric: str, increase: float, age: float | None
) -> None:
    def score(values: dict[str, float]) -> int:
        return score_account(account(values, age_days=age), model, AS_OF).score

    before = score(metrics)
    more = {**metrics, metric: metrics.get(metric, 0) + increase}
    assert score(more) >= before
    if metric in metrics:  # from absent to present is "more" as well
        assert score(more) >= score({**metrics, metric: 0})


@settings(max_examples=100, deadline=None)
@given(metrics=metric_dicts, younger=st.floats(0, 30), older=st.floats(0, 30))
def test_an_older_account_never_scores_below_a_younger_one_with_the_same_usage(
    metrics: dict[str, float], younger: float, older: float
) -> None:
    younger, older = min(younger, older), max(younger, older)
    young = score_account(account(metrics, age_days=younger), DEFAULT, AS_OF)
    old = score_account(account(metrics, age_days=older), DEFAULT, AS_OF)
    assert old.score >= young.score


tier_ladders = st.lists(
    st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 100)),
    min_size=1,
    max_size=5,
    unique_by=lambda t: t[0],
).map(lambda pairs: tuple(Tier(name, bound) for name, bound in pairs))


def _rank(tiers: tuple[Tier, ...], name: str) -> int:
    ordered = sorted(tiers, key=lambda t: -t.min_score)
    return next(i for i, t in enumerate(ordered) if t.name == name)


@settings(max_examples=200, deadline=None)
@given(
    tiers=st.one_of(st.just(TIERS), tier_ladders), low=st.integers(0, 100), up=st.integers(0, 100)
)
def test_tier_is_monotone_in_score(tiers: tuple[Tier, ...], low: int, up: int) -> None:
    high = min(low + up, 100)
    assert _rank(tiers, tier_for(high, tiers, None, 5)) <= _rank(
        tiers, tier_for(low, tiers, None, 5)
    )


@settings(max_examples=200, deadline=None)
@given(
    tiers=st.one_of(st.just(TIERS), tier_ladders),
    score=st.integers(0, 100),
    previous=st.sampled_from("abcdefgh"),
    hysteresis=st.floats(0, 30),
    data=st.data(),
)
def test_hysteresis_never_moves_an_account_up(
    tiers: tuple[Tier, ...], score: int, previous: str, hysteresis: float, data: st.DataObject
) -> None:
    if tiers is TIERS:
        previous = data.draw(st.sampled_from([t.name for t in TIERS]))
    raw = tier_for(score, tiers, None, hysteresis)
    held = tier_for(score, tiers, previous, hysteresis)
    if previous not in {t.name for t in tiers} or _rank(tiers, previous) >= _rank(tiers, raw):
        assert held == raw
    else:
        assert held in (raw, previous)
        assert _rank(tiers, held) >= _rank(tiers, previous)


@settings(max_examples=200, deadline=None)
@given(metrics=metric_dicts, previous=st.sampled_from([t.name for t in TIERS]))
def test_scored_tier_is_never_above_raw_and_previous(
    metrics: dict[str, float], previous: str
) -> None:
    result = score_account(account(metrics), MODEL, AS_OF, previous_tier=previous)
    assert RANK[result.tier] >= min(RANK[result.raw_tier], RANK[previous])
    assert RANK[result.tier] <= RANK[result.raw_tier]


def test_scoring_time_zone_of_as_of_does_not_change_age() -> None:
    utc = score_account(account(SALES_METRICS, age_days=20), MODEL, AS_OF)
    shifted = score_account(
        account(SALES_METRICS, age_days=20),
        MODEL,
        datetime(2024, 6, 3, 8, 0, tzinfo=timezone(timedelta(hours=2))),
    )
    assert shifted.age_days == pytest.approx(utc.age_days)
    assert shifted.scored_at == datetime(2024, 6, 3, 6, 0, tzinfo=UTC)


# --------------------------------------------------------------------------- saturation


@given(
    st.floats(min_value=-50, max_value=500, allow_nan=False),
    st.floats(min_value=-50, max_value=500, allow_nan=False),
    st.sampled_from([None, 50.0, 80.0, 95.0]),
)
def test_saturation_keeps_scores_in_range_and_in_order(a: float, b: float, above: Any) -> None:
    from pls_sync.scoring import saturate

    low, high = sorted((a, b))
    assert 0.0 <= saturate(low, above) <= saturate(high, above) <= 100.0
    if above is not None and above < low < high < above + 10 * (100 - above):
        assert saturate(low, above) < saturate(high, above) < 100.0  # no ties above the knee
    if above is not None and 0.0 <= low <= above:
        assert saturate(low, above) == low  # every tier bound at or below the knee holds


def test_saturation_bends_smoothly_at_the_knee() -> None:
    from pls_sync.scoring import saturate

    assert saturate(80.0, 80.0) == 80.0
    assert saturate(80.001, 80.0) == pytest.approx(80.001, abs=1e-6)  # slope 1 at the knee
    assert saturate(100.0, 80.0) == pytest.approx(80 + 20 * (1 - math.exp(-1)))
    assert saturate(146.0, 80.0) < 99.5 and saturate(146.0, None) == 100.0


def test_the_default_model_saturates_so_the_strongest_accounts_keep_their_order() -> None:
    assert MODEL.saturate_above == 80.0
    metrics = {"active_users_28d": 40, "events_28d": 20_000, "core_features_28d": 9}
    strong = score_account(account(metrics, age_days=400), MODEL, AS_OF)
    stronger_metrics = {**metrics, "enterprise_features_28d": 2, "legal_page_views_14d": 2}
    stronger = score_account(account(stronger_metrics, age_days=400), MODEL, AS_OF)
    assert 80 < strong.score < stronger.score < 100


# --- sums, the young-account discount and the default's ranking (issue 15) ----------------------


def test_a_sum_adds_each_known_parts_points_from_its_own_curve() -> None:
    sums = (MetricSum("intent", (("a", ((0, 0), (1, 20))), ("b", ((0, 0), (2, 10), (4, 30))))),)
    assert derive_metrics({"a": 1, "b": 3}, (), sums)["intent"] == pytest.approx(40.0)
    assert derive_metrics({"a": 5, "b": None}, (), sums)["intent"] == pytest.approx(20.0)
    assert derive_metrics({"a": None}, (), sums)["intent"] is None  # nothing known: unknown
    assert derive_metrics({}, (), sums)["intent"] is None


def test_the_default_sums_buyer_intent_and_weighs_it_as_a_component() -> None:
    tells = {
        "legal_page_views_14d": 1,
        "admin_changes_28d": 1,
        "pricing_page_views_14d": 3,
        "enterprise_features_28d": 3,
    }
    result = score_account(account(tells), DEFAULT, AS_OF)
    assert result.metrics["buyer_intent"] == pytest.approx(20 + 20 + 20 + 30)
    intent = component(result, "buyer_intent")
    assert intent.normalised == 100 and intent.points == pytest.approx(45.0)
    assert intent.description.startswith("buyer intent 90")


def test_strong_buyer_behaviour_in_a_small_team_outranks_headcount_alone() -> None:
    small_buyer = {
        "active_users_28d": 3,
        "events_28d": 400,
        "core_features_28d": 5,
        "legal_page_views_14d": 1,
        "admin_changes_28d": 1,
        "enterprise_features_28d": 3,
        "pricing_page_views_14d": 3,
    }
    big_browser = {"active_users_28d": 12, "events_28d": 3000, "core_features_28d": 6}
    buyer = score_account(account(small_buyer), DEFAULT, AS_OF)
    browser = score_account(account(big_browser), DEFAULT, AS_OF)
    assert buyer.score > browser.score
    # The model shipped before ranked them the other way round: headcount outweighed intent.
    assert (
        score_account(account(small_buyer), MODEL, AS_OF).score
        < score_account(account(big_browser), MODEL, AS_OF).score
    )


def test_signals_that_restate_a_component_explain_without_adding_points() -> None:
    metrics = {"active_users_28d": 9, "new_users_7d": 6, "usual_weekly_new_users": 1}
    result = score_account(account(metrics), DEFAULT, AS_OF)
    fired = {signal.name: signal for signal in result.signals}
    assert {"team_threshold", "velocity_spike"} <= set(fired)
    assert all(signal.points == 0 for signal in fired.values())
    assert result.score == round(sum(c.points for c in result.components))


def test_velocity_points_grow_with_age_until_the_guard_age() -> None:
    spike = {"active_users_28d": 6, "new_users_7d": 6, "usual_weekly_new_users": 0}
    full = component(score_account(account(spike, age_days=90), DEFAULT, AS_OF), "velocity")
    half = component(score_account(account(spike, age_days=7), DEFAULT, AS_OF), "velocity")
    unknown = component(score_account(account(spike, age_days=None), DEFAULT, AS_OF), "velocity")
    assert full.points == pytest.approx(10.0) and unknown.points == full.points
    assert half.points == pytest.approx(5.0)
    assert half.description == "6.0x the usual week (account 7 days old: 50% of the points)"
    # Only velocity is discounted: the team counts the same at any age.
    team_young = component(score_account(account(spike, age_days=1), DEFAULT, AS_OF), "team_size")
    team_old = component(score_account(account(spike, age_days=90), DEFAULT, AS_OF), "team_size")
    assert team_young == team_old


def test_no_discount_when_the_model_has_no_minimum_age() -> None:
    model = replace(DEFAULT, min_account_age_days=0)
    spike = {"new_users_7d": 6, "usual_weekly_new_users": 0}
    young = score_account(account(spike, age_days=0.5), model, AS_OF)
    assert component(young, "velocity").points == pytest.approx(10.0)
