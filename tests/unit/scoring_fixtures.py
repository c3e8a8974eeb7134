"""Scoring models built by hand: the default, mirroring ``config/scoring.yaml`` exactly, and the
model shipped before it (signals with points), which the tests of signal arithmetic use.

Scoring tests use these instead of the YAML loader, so they run without the config package.
Keep ``default_model`` in step with the YAML: ``test_scoring`` reads the YAML and checks the two
agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from pls_sync.models import ProductAccount
from pls_sync.scoring import (
    Component,
    Condition,
    ConditionGroup,
    MetricSum,
    Ratio,
    ScoringModel,
    Signal,
    Tier,
)

AS_OF = datetime(2024, 6, 3, 6, 0, tzinfo=UTC)
"""A fixed scoring time for tests."""

USAGE_METRICS = (
    "active_users_7d",
    "active_users_28d",
    "new_users_7d",
    "events_7d",
    "events_28d",
    "core_features_28d",
    "enterprise_features_28d",
    "admin_changes_28d",
    "legal_page_views_14d",
    "pricing_page_views_14d",
)
"""Metrics where more usage must never lower the score."""

BASELINE_METRICS = ("usual_weekly_new_users", "usual_weekly_events")
"""The 'usual week' denominators of the velocity ratios."""


def signal_points_model() -> ScoringModel:
    """The model shipped before issue 15: four components and signals that add points."""
    return ScoringModel(
        ratios=(
            Ratio("user_velocity", "new_users_7d", "usual_weekly_new_users", min_denominator=1),
            Ratio("event_velocity", "events_7d", "usual_weekly_events", min_denominator=10),
        ),
        components=(
            Component(
                name="team_size",
                weight=0.35,
                metrics=("active_users_28d",),
                curve=((0, 0), (1, 10), (3, 35), (7, 80), (15, 95), (30, 100)),
                label="{value:.0f} active users in 28 days",
            ),
            Component(
                name="volume",
                weight=0.25,
                metrics=("events_28d",),
                curve=((0, 0), (50, 20), (500, 60), (2000, 85), (10000, 100)),
                label="{value:.0f} events in 28 days",
            ),
            Component(
                name="velocity",
                weight=0.20,
                metrics=("user_velocity", "event_velocity"),
                curve=((1, 0), (1.5, 30), (3, 70), (5, 100)),
                label="{value:.1f}x the usual week",
            ),
            Component(
                name="breadth",
                weight=0.20,
                metrics=("core_features_28d",),
                curve=((0, 0), (2, 40), (4, 75), (6, 100)),
                label="{value:.0f} core features used",
            ),
        ),
        signals=(
            Signal(
                name="legal_page_view",
                when=Condition("legal_page_views_14d", ">=", 1),
                points=10,
                label="Viewed Terms of Use / privacy pages {legal_page_views_14d:.0f}x in 14 days",
            ),
            Signal(
                name="pricing_page_view",
                when=Condition("pricing_page_views_14d", ">=", 2),
                points=5,
                label="Viewed pricing {pricing_page_views_14d:.0f}x in 14 days",
            ),
            Signal(
                name="admin_change",
                when=Condition("admin_changes_28d", ">=", 1),
                points=8,
                label="Admin transferred or added ({admin_changes_28d:.0f}x in 28 days)",
            ),
            Signal(
                name="team_threshold",
                when=Condition("active_users_28d", ">=", 7),
                points=5,
                label="{active_users_28d:.0f} active users",
            ),
            Signal(
                name="velocity_spike",
                when=ConditionGroup(
                    "all",
                    (
                        Condition("new_users_7d", ">=", 5),
                        Condition("user_velocity", ">=", 3),
                    ),
                ),
                points=10,
                label="{new_users_7d:.0f} new users this week, {user_velocity:.0f}x usual",
            ),
            Signal(
                name="enterprise_feature",
                when=Condition("enterprise_features_28d", ">=", 1),
                points=8,
                label="Used {enterprise_features_28d:.0f} enterprise feature(s)",
            ),
        ),
        tiers=(Tier("sales", 80), Tier("success", 60), Tier("self_serve", 0)),
        hysteresis=5,
        qualified_tiers=("sales",),
        saturate_above=80.0,
        min_account_age_days=14,
        guarded_tiers=("sales",),
    )


def _explaining(signal: Signal) -> Signal:
    return Signal(signal.name, signal.when, 0.0, signal.label)


def default_model() -> ScoringModel:
    """The model of ``config/scoring.yaml``, as the config loader should build it."""
    before = signal_points_model()
    team, volume, velocity, breadth = before.components
    return ScoringModel(
        ratios=before.ratios,
        sums=(
            MetricSum(
                "buyer_intent",
                (
                    ("legal_page_views_14d", ((0, 0), (1, 20), (3, 30))),
                    ("admin_changes_28d", ((0, 0), (1, 20), (2, 25))),
                    ("pricing_page_views_14d", ((0, 0), (1, 10), (3, 20), (6, 25))),
                    ("enterprise_features_28d", ((0, 0), (1, 10), (2, 20), (3, 30), (5, 40))),
                ),
            ),
        ),
        components=(
            replace(team, weight=0.30),
            Component(
                name="buyer_intent",
                weight=0.45,
                metrics=("buyer_intent",),
                curve=((0, 0), (40, 80), (70, 100)),
                label="buyer intent {value:.0f} (legal and privacy pages, admin changes, "
                "pricing, enterprise features)",
            ),
            replace(volume, weight=0.10),
            replace(velocity, weight=0.10, discount_young=True),
            replace(breadth, weight=0.05),
        ),
        signals=tuple(_explaining(signal) for signal in before.signals),
        tiers=before.tiers,
        hysteresis=before.hysteresis,
        qualified_tiers=before.qualified_tiers,
        saturate_above=before.saturate_above,
        min_account_age_days=before.min_account_age_days,
        guarded_tiers=before.guarded_tiers,
    )


def account(
    metrics: Mapping[str, float] | None = None,
    *,
    key: str = "acme.com",
    age_days: float | None = 90,
    as_of: datetime = AS_OF,
) -> ProductAccount:
    """A product account with ``metrics``, first seen ``age_days`` before ``as_of``."""
    first_seen = None if age_days is None else as_of - timedelta(days=age_days)
    return ProductAccount(key=key, domain=key, metrics=dict(metrics or {}), first_seen=first_seen)
