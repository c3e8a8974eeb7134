"""PQA scoring: usage metrics in, a 0-100 score, a tier and an explanation out. Standard library only.

The model is data (``ScoringModel``), built from ``config/scoring.yaml`` by ``pls_sync.config``.
Conditions are compared, never evaluated as code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Condition:
    """``metric op value``, e.g. ``active_users_28d >= 7``. A missing metric never matches."""

    metric: str
    op: str  # one of >=, >, <=, <, ==, !=
    value: float


@dataclass(frozen=True, slots=True)
class ConditionGroup:
    """All (``mode='all'``) or any (``mode='any'``) of the nested rules."""

    mode: str  # "all" | "any"
    rules: tuple[Rule, ...]


Rule = Condition | ConditionGroup


@dataclass(frozen=True, slots=True)
class Ratio:
    """A derived metric: numerator / max(denominator, min_denominator)."""

    name: str
    numerator: str
    denominator: str
    min_denominator: float = 1.0


@dataclass(frozen=True, slots=True)
class Component:
    """A weighted score component, normalised to 0-100 by a piecewise-linear curve.

    ``curve`` is ((x0, y0), (x1, y1), ...) with x ascending and y non-decreasing in 0..100;
    below x0 the value is y0, above the last x it is the last y. With several ``metrics``
    the component takes the best (max) normalised value, so any of them can carry it.
    ``label`` is the text template of the explanation, e.g. "{value:.0f} active users".
    """

    name: str
    weight: float
    metrics: tuple[str, ...]
    curve: tuple[tuple[float, float], ...]
    label: str = ""


@dataclass(frozen=True, slots=True)
class Signal:
    """A behavioural trigger: when ``when`` holds, add ``points`` and show ``label`` to reps.

    ``label`` is a template over metric names, e.g. "{new_users_7d:.0f} new users this week".
    """

    name: str
    when: Rule
    points: float
    label: str


@dataclass(frozen=True, slots=True)
class Tier:
    """A tier and its lower bound; tiers are held highest first."""

    name: str
    min_score: float


@dataclass(frozen=True, slots=True)
class ScoringModel:
    """The whole scoring model: components, signals, tiers, hysteresis and the age guard."""

    components: tuple[Component, ...]
    signals: tuple[Signal, ...] = ()
    tiers: tuple[Tier, ...] = (Tier("sales", 80), Tier("success", 60), Tier("self_serve", 0))
    ratios: tuple[Ratio, ...] = ()
    hysteresis: float = 5.0
    min_account_age_days: int = 14
    guarded_tiers: tuple[str, ...] = ("sales",)
    qualified_tiers: tuple[str, ...] = ("sales",)


@dataclass(frozen=True, slots=True)
class ComponentScore:
    """One component's part of a score: which metric carried it, normalised value, points."""

    name: str
    metric: str | None
    value: float | None
    normalised: float
    weight: float
    points: float
    description: str


@dataclass(frozen=True, slots=True)
class FiredSignal:
    """A signal that fired for an account, with the text a rep reads."""

    name: str
    points: float
    description: str


@dataclass(frozen=True, slots=True)
class AccountScore:
    """An account's score, tier and the explanation behind them.

    ``raw_tier`` is what the score alone says; ``tier`` applies hysteresis against the
    previous tier and the minimum-age guard. ``guard`` names the guard that held the account
    back, if any.
    """

    key: str
    domain: str
    score: int
    raw_tier: str
    tier: str
    components: tuple[ComponentScore, ...]
    signals: tuple[FiredSignal, ...]
    metrics: dict[str, float] = field(default_factory=dict)
    age_days: float | None = None
    guard: str | None = None
    scored_at: datetime | None = None
