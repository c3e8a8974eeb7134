"""A seeded, labelled set of product accounts for testing how well a score ranks buyers.

Independent of the demo warehouse: accounts are built directly as the warehouse model would
return them (``ProductAccount`` with the builtin model's metrics), each driven by a latent buying
intent that also decides whether it converts within the horizon. The set has the traps a real
product has, each of which a score that counts headcount or raw activity falls into:

* **teams** (most accounts): team size grows with company size and only weakly with intent;
  the buyer tells (Terms of Use and privacy views, admin transfers, pricing views, enterprise
  features used in depth) grow with intent.
* **prosumers**: one or two heavy users, every core feature, many events; they rarely buy.
* **noise**: an integration or a bot sends thousands of events from a small team.
* **young accounts**: signed up days ago, so every user and event is "new" and velocity is
  huge; they buy no more than others of their intent.
* **subsidiaries**: a large company's team split over a regional domain: a smaller team with
  the parent's intent.

Breadth (core features) is nearly constant among active accounts, and "used an enterprise
feature" fires for over 40% of them, as in the products the issue measured.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from pls_sync.models import ProductAccount

__all__ = ["LabelledSet", "labelled_accounts"]

_PROFILES = (
    ("team", 0.62),
    ("prosumer", 0.12),
    ("noise", 0.06),
    ("young", 0.10),
    ("subsidiary", 0.10),
)
_INTENT_SHIFT = {
    "team": 0.0,
    "prosumer": -1.2,
    "noise": -0.3,
    "young": -0.2,
    "subsidiary": 0.4,
}


@dataclass(frozen=True, slots=True)
class LabelledSet:
    """Accounts, whether each converted within the horizon, and their profile and intent."""

    accounts: list[ProductAccount]
    converted: list[bool]
    profiles: list[str]
    intents: list[float]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method for small means, a rounded normal for large ones)."""
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def _binomial(rng: random.Random, n: int, p: float) -> int:
    return sum(rng.random() < p for _ in range(n))


def _profile(rng: random.Random) -> str:
    draw, cumulative = rng.random(), 0.0
    for name, share in _PROFILES:
        cumulative += share
        if draw < cumulative:
            return name
    return _PROFILES[0][0]


def _account(
    index: int, rng: random.Random, as_of: datetime
) -> tuple[ProductAccount, bool, str, float]:
    profile = _profile(rng)
    intent = rng.gauss(0.0, 1.0) + _INTENT_SHIFT[profile]
    # Company size drives headcount; intent moves it only a little.
    size = rng.gauss(0.0, 1.0)
    if profile == "prosumer":
        team = 1 + _binomial(rng, 1, 0.3)
    else:
        team = max(1, round(math.exp(1.1 + 0.75 * size + 0.25 * intent)))
        if profile == "subsidiary":
            team = max(1, team // 3)
    active = max(1, min(team, round(team * rng.uniform(0.6, 1.0))))
    per_user = rng.lognormvariate(4.3, 0.6)
    if profile == "prosumer":
        per_user *= 4.0
    events_28d = float(round(active * per_user))
    if profile == "noise":
        events_28d += float(rng.randint(5_000, 40_000))
    core = (
        6 if profile == "prosumer" else min(6, 3 + _binomial(rng, 3, 0.85 if active > 1 else 0.6))
    )
    enterprise = _binomial(rng, 5, _sigmoid(-1.9 + 0.8 * intent + 0.2 * math.log(active)))
    legal = _poisson(rng, math.exp(-2.4 + 1.2 * intent))
    admin = _poisson(rng, math.exp(-2.6 + 1.1 * intent))
    pricing = _poisson(rng, math.exp(-1.4 + 0.9 * intent))

    age_days = rng.uniform(60.0, 900.0)
    first_seen_days = age_days
    usual_new = max(0.0, team / (age_days / 7.0) * rng.uniform(0.5, 1.5))
    usual_events = events_28d / 4.0 * rng.uniform(0.8, 1.2)
    growth = math.exp(rng.gauss(0.0, 0.35) + 0.15 * intent)
    new_7d = float(_poisson(rng, usual_new * growth))
    events_7d = float(round(events_28d / 4.0 * growth))
    if profile == "young":
        age_days = first_seen_days = rng.uniform(2.0, 13.0)
        new_7d = float(team if age_days < 7 else max(1, round(team * 0.6)))
        usual_new = 0.0 if age_days < 7 else (team - new_7d) / 8.0
        usual_events = events_28d / 8.0 * min(1.0, age_days / 28.0)
        events_7d = events_28d * (1.0 if age_days < 7 else 0.6)

    metrics: dict[str, float | None] = {
        "total_users": float(team),
        "active_users_7d": float(max(1, round(active * 0.7))),
        "active_users_28d": float(active),
        "new_users_7d": new_7d,
        "usual_weekly_new_users": usual_new,
        "events_7d": events_7d,
        "usual_weekly_events": usual_events,
        "events_28d": events_28d,
        "events_prev_28d": events_28d / growth,
        "core_features_28d": float(core),
        "enterprise_features_28d": float(enterprise),
        "admin_changes_28d": float(admin),
        "legal_page_views_14d": float(legal),
        "pricing_page_views_14d": float(pricing),
        "admins": 1.0,
    }
    domain = f"{profile}-{index:05d}.example"
    account = ProductAccount(
        key=domain,
        domain=domain,
        metrics=metrics,
        first_seen=as_of - timedelta(days=first_seen_days),
    )
    converted = rng.random() < _sigmoid(-3.5 + 1.4 * intent + 0.4 * math.log(active))
    return account, converted, profile, intent


def labelled_accounts(seed: int, count: int, as_of: datetime) -> LabelledSet:
    """``count`` accounts as of ``as_of`` and whether each converted, reproducible by ``seed``."""
    rng = random.Random(seed)
    accounts: list[ProductAccount] = []
    converted: list[bool] = []
    profiles: list[str] = []
    intents: list[float] = []
    for index in range(count):
        account, bought, profile, intent = _account(index, rng, as_of)
        accounts.append(account)
        converted.append(bought)
        profiles.append(profile)
        intents.append(intent)
    return LabelledSet(accounts, converted, profiles, intents)
