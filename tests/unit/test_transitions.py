"""Tests for tier transitions: entering, staying in, leaving and re-entering qualified tiers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pls_sync.ports import AccountState, TierTransition
from pls_sync.scoring import AccountScore, score_account
from pls_sync.transitions import advance, score_change
from tests.unit.scoring_fixtures import account, signal_points_model

T0 = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)
T1 = T0 + timedelta(days=1)
T2 = T0 + timedelta(days=2)
T3 = T0 + timedelta(days=3)
QUALIFIED = ("sales",)


def scored(tier: str, score: int, key: str = "acme.com") -> AccountScore:
    """A score in ``tier`` (raw tier alike), with no components or signals."""
    return AccountScore(key, key, score, tier, tier, (), ())


def test_first_seen_unqualified_account() -> None:
    state, transition = advance(None, scored("self_serve", 20), T0, QUALIFIED)
    assert state == AccountState("acme.com", 20, "self_serve", T0, None, T0, None)
    assert transition == TierTransition("acme.com", None, "self_serve", 20, T0)


def test_first_seen_account_in_a_qualified_tier_qualifies_now() -> None:
    state, transition = advance(None, scored("sales", 85), T0, QUALIFIED)
    assert (state.tier, state.tier_since, state.qualified_since) == ("sales", T0, T0)
    assert transition is not None and (transition.from_tier, transition.to_tier) == (None, "sales")


def test_enter_stay_leave_and_reenter() -> None:
    state, _ = advance(None, scored("success", 70), T0, QUALIFIED)

    state, entered = advance(state, scored("sales", 82), T1, QUALIFIED)
    assert entered == TierTransition("acme.com", "success", "sales", 82, T1)
    assert (state.tier_since, state.qualified_since, state.score_change) == (T1, T1, 12)

    state, stayed = advance(state, scored("sales", 90), T2, QUALIFIED)
    assert stayed is None
    assert (state.tier_since, state.qualified_since, state.scored_at) == (T1, T1, T2)
    assert state.score == 90 and state.score_change == 8

    state, left = advance(state, scored("success", 70), T3, QUALIFIED)
    assert left == TierTransition("acme.com", "sales", "success", 70, T3)
    assert (state.tier_since, state.qualified_since) == (T3, None)

    t4 = T3 + timedelta(days=1)
    state, reentered = advance(state, scored("sales", 81), t4, QUALIFIED)
    assert reentered is not None and reentered.to_tier == "sales"
    assert state.qualified_since == t4  # a new qualification, not the first one


def test_moving_between_qualified_tiers_keeps_qualified_since() -> None:
    qualified = ("sales", "success")
    state, _ = advance(None, scored("success", 65), T0, qualified)
    assert state.qualified_since == T0
    state, transition = advance(state, scored("sales", 85), T1, qualified)
    assert transition is not None and transition.from_tier == "success"
    assert (state.tier_since, state.qualified_since) == (T1, T0)
    state, _ = advance(state, scored("self_serve", 30), T2, qualified)
    assert state.qualified_since is None


def test_stay_unqualified_keeps_tier_since_and_no_transition() -> None:
    state, _ = advance(None, scored("self_serve", 20), T0, QUALIFIED)
    state, transition = advance(state, scored("self_serve", 25), T1, QUALIFIED)
    assert transition is None
    assert (state.tier_since, state.qualified_since, state.scored_at) == (T0, None, T1)


def test_state_without_dates_gets_them_from_this_run() -> None:
    legacy = AccountState("acme.com", 85, "sales")
    state, transition = advance(legacy, scored("sales", 86), T1, QUALIFIED)
    assert transition is None
    assert (state.tier_since, state.qualified_since) == (T1, T1)


def test_score_change_keeps_the_last_move_over_unchanged_scores() -> None:
    assert score_change(None, scored("sales", 85)) is None
    previous = AccountState("acme.com", 80, "sales", score_change=-4)
    assert score_change(previous, scored("sales", 85)) == 5
    assert score_change(previous, scored("sales", 80)) == -4
    assert score_change(previous, scored("success", 70)) == -10


def test_naive_at_is_utc() -> None:
    state, transition = advance(None, scored("sales", 85), T0.replace(tzinfo=None), QUALIFIED)
    assert state.scored_at == T0 and state.qualified_since == T0
    assert transition is not None and transition.at.tzinfo is not None


def test_hysteresis_across_runs_keeps_one_qualification() -> None:
    """79, 76, 74 from sales: held twice, then the account leaves the PQA list."""
    model = signal_points_model()
    team = {"active_users_28d": 15, "events_28d": 2000}  # 33.25 + 21.25 + 5 from the signal
    breadth_for = {80: 6, 79: 5.8, 76: 4.6, 74: 3.9}  # core features giving those scores
    state: AccountState | None = None
    history = []
    for day, target in enumerate((80, 79, 76, 74)):
        at = T0 + timedelta(days=day)
        metrics = {**team, "core_features_28d": breadth_for[target]}
        previous_tier = state.tier if state else None
        result = score_account(account(metrics, as_of=at), model, at, previous_tier)
        assert result.score == target
        state, transition = advance(state, result, at, model.qualified_tiers)
        history.append((result.score, state.tier, state.qualified_since, transition is not None))
    assert history == [
        (80, "sales", T0, True),
        (79, "sales", T0, False),
        (76, "sales", T0, False),
        (74, "success", None, True),
    ]
