"""The demo warehouse: a DuckDB file with realistic ``users`` and ``events`` tables.

``generate_demo_warehouse`` writes the two tables of the warehouse contract (DESIGN.md section 2)
for the companies of ``pls_sync.demo_companies``, plus free-mail sign-ups, a few junk addresses and
a ``demo_meta`` table recording the seed and the as-of time the data was made for.

Every company tells the usage story of its ``profile``: velocity spikes (half the team created in
the last 7 days), admin transfers, legal and pricing page views in the last 14 days, young accounts
(first user under 14 days ago, strong usage), enterprise features, dormant accounts. Subsidiaries'
people sign up on subdomains (``eng.acme.co.uk``). 15-25% of users sign up with free mail
(gmail.com, outlook.com...), mostly in workspaces of their own. Titles, seniority (``ic``,
``manager``, ``director``, ``head``, ``vp``, ``c_level``, ``owner``), department and self-reported
company size are filled the way sign-up profiling fills them (mostly individual contributors,
some left blank).

Event names follow the default taxonomy (``config/events.yaml``) plus plain usage events.

Everything is computed by DuckDB SQL over ``range()`` with hash-based pseudo-randomness
(``hash(row, seed, salt)``), so the data is a pure function of the seed, the sizes and ``as_of``
(for one DuckDB version) and 20M events take seconds. Python only loops over companies. The file
is written under a temporary name and renamed into place, so a reader never sees half a warehouse.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from pls_sync.demo_companies import DemoCompany, demo_companies, employee_band
from pls_sync.errors import WarehouseError

__all__ = [
    "DemoIntent",
    "DemoStats",
    "demo_intents",
    "generate_demo_warehouse",
    "read_demo_as_of",
]

Progress = Callable[[str, int, int], None]

FREE_MAIL_SHARE = 0.2
EVENTS_PER_USER = 50
HISTORY_DAYS = 120  # events are generated over the last HISTORY_DAYS days only

_FREE_MAIL_HOSTS = (
    "gmail.com",
    "gmail.com",
    "gmail.com",
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "proton.me",
    "aol.com",
    "gmx.de",
    "yahoo.co.uk",
    "live.com",
    "web.de",
    "orange.fr",
)
_JUNK_EMAILS = (
    "",
    "no-at-sign.example.com",
    "jane doe@exa mple.com",
    "admin@localhost",
    "@",
    "temp4821@mailinator.com",
    "root@10.0.0.1",
    None,
    "test@test",
    "spam@guerrillamail.com",
)
_FIRST_NAMES = (
    "anna",
    "ben",
    "carla",
    "david",
    "elena",
    "felix",
    "grace",
    "hugo",
    "iris",
    "jonas",
    "kate",
    "leo",
    "maria",
    "nina",
    "omar",
    "paula",
    "quentin",
    "rosa",
    "sam",
    "tara",
    "umar",
    "vera",
    "will",
    "xenia",
    "yusuf",
    "zoe",
    "alex",
    "chloe",
    "daniel",
    "emma",
    "lucas",
    "mia",
    "noah",
    "olivia",
    "pierre",
    "sofia",
    "thomas",
    "lena",
    "marco",
    "priya",
    "arjun",
    "mei",
    "kenji",
    "fatima",
    "liam",
    "isla",
    "jack",
    "amelie",
    "lukas",
    "hannah",
)
_LAST_NAMES = (
    "smith",
    "jones",
    "muller",
    "schmidt",
    "martin",
    "bernard",
    "dubois",
    "garcia",
    "rossi",
    "brown",
    "taylor",
    "wilson",
    "nguyen",
    "kim",
    "patel",
    "singh",
    "chen",
    "wang",
    "lopez",
    "fischer",
    "weber",
    "meyer",
    "wagner",
    "becker",
    "moreau",
    "laurent",
    "lefebvre",
    "roux",
    "evans",
    "thomas",
    "walker",
    "white",
    "harris",
    "clark",
    "lewis",
    "young",
    "king",
    "wright",
    "hall",
    "green",
    "baker",
    "adams",
    "nelson",
    "carter",
    "mitchell",
    "roberts",
    "turner",
    "phillips",
    "campbell",
    "parker",
)
# (title, seniority, department, weight)
# Most product users cannot buy: seniority thins out fast, as in real sign-up data.
_TITLES: tuple[tuple[str, str, str, float], ...] = (
    ("Software Engineer", "ic", "Engineering", 14),
    ("Senior Software Engineer", "ic", "Engineering", 8),
    ("QA Engineer", "ic", "Engineering", 3),
    ("DevOps Engineer", "ic", "Engineering", 3),
    ("Product Designer", "ic", "Design", 5),
    ("Product Manager", "ic", "Product", 6),
    ("Data Analyst", "ic", "Data", 5),
    ("Account Executive", "ic", "Sales", 4),
    ("Marketing Specialist", "ic", "Marketing", 4),
    ("Customer Success Manager", "ic", "Customer Success", 4),
    ("Operations Analyst", "ic", "Operations", 4),
    ("Financial Analyst", "ic", "Finance", 3),
    ("Recruiter", "ic", "People", 2),
    ("Engineering Manager", "manager", "Engineering", 1.2),
    ("Marketing Manager", "manager", "Marketing", 0.9),
    ("Sales Manager", "manager", "Sales", 0.6),
    ("Operations Manager", "manager", "Operations", 0.9),
    ("Group Product Manager", "manager", "Product", 0.6),
    ("Director of Engineering", "director", "Engineering", 0.6),
    ("Director of Marketing", "director", "Marketing", 0.45),
    ("IT Director", "director", "IT", 0.45),
    ("Head of Product", "head", "Product", 0.6),
    ("Head of Operations", "head", "Operations", 0.45),
    ("Head of Data", "head", "Data", 0.3),
    ("VP Engineering", "vp", "Engineering", 0.45),
    ("VP of Sales", "vp", "Sales", 0.3),
    ("VP Operations", "vp", "Operations", 0.3),
    ("VP Marketing", "vp", "Marketing", 0.3),
    ("CTO", "c_level", "Engineering", 0.24),
    ("CFO", "c_level", "Finance", 0.12),
    ("COO", "c_level", "Operations", 0.15),
    ("CIO", "c_level", "IT", 0.09),
)
_FOUNDER_TITLES: tuple[tuple[str, str, str], ...] = (
    ("Founder & CEO", "owner", "Executive"),
    ("Co-founder & CTO", "c_level", "Engineering"),
    ("CEO", "c_level", "Executive"),
    ("Owner", "owner", "Executive"),
    ("Managing Director", "c_level", "Executive"),
)
_TITLE_SLOTS = 1000

_USAGE_EVENTS = (
    "logged_in",
    "viewed_board",
    "edited_card",
    "moved_card",
    "created_card",
    "uploaded_file",
    "searched",
    "opened_dashboard",
    "viewed_report",
    "updated_profile",
)
_CORE_FEATURES = (
    "created_board",
    "shared_board",
    "invited_member",
    "commented",
    "created_automation",
    "exported_report",
    "used_integration",
)
_ENTERPRISE_FEATURES = (
    "configured_sso",
    "enabled_scim",
    "viewed_audit_log",
    "set_data_residency",
    "created_custom_role",
)
_LEGAL_PAGES = ("viewed_terms_of_use", "viewed_privacy_policy", "viewed_dpa")
_PRICING_PAGES = ("viewed_pricing", "viewed_plans")
_ADMIN_CHANGES = ("admin_transferred", "admin_added")
_IGNORED = ("viewed_webinar", "landing_page_view")

# Events per user per day of lifetime, by profile; free mail and junk come after.
_INTENSITY = {
    "steady": 1.0,
    "velocity_spike": 1.6,
    "admin_change": 1.0,
    "legal_views": 1.1,
    "pricing_views": 1.0,
    "young": 3.5,
    "enterprise": 1.5,
    "dormant": 0.7,
}
_FREE_INTENSITY = 0.5
_JUNK_INTENSITY = 0.2

# The latent buying intent of a company: its story's baseline, plus team size, plus noise.
_PROFILE_INTENT = {
    "enterprise": 1.2,
    "velocity_spike": 0.9,
    "legal_views": 0.9,
    "admin_change": 0.8,
    "pricing_views": 0.7,
    "young": 0.5,
    "steady": -0.3,
    "dormant": -1.0,
}
_INTENT_PROFILES = frozenset(
    {"enterprise", "velocity_spike", "legal_views", "admin_change", "pricing_views"}
)
_INTENT_TEAM_WEIGHT = 0.3
_INTENT_NOISE = 0.7
_CONVERSION_BASE = -2.4
_CONVERSION_SLOPE = 1.4
# Traps: conversion odds scaled down for accounts whose usage promises more than they buy.
_PROSUMER_FACTOR = 0.25  # one user, however heavy
_YOUNG_FACTOR = 0.3
_DORMANT_FACTOR = 0.3
# Early buyer-intent events: rewritten plain usage events in [as_of - 74 d, as_of - 63 d), seen
# by a backtest at as_of - 60 d and never by the reader at as_of (it reads 63 days back).
_EARLY_SIGNAL_DAYS = (74, 63)
_EARLY_SIGNAL_BASE = -1.3
_EARLY_SIGNAL_SLOPE = 0.9
_EARLY_SIGNAL_BOOST = 0.6  # share of the backtest window's converters who signalled first
_FREE_MAIL_CONVERSION = 0.006  # free-mail users who bought a personal plan


@dataclass(frozen=True, slots=True)
class DemoStats:
    """What was generated: companies, users (free-mail among them), events, and the as-of time."""

    companies: int
    users: int
    events: int
    free_mail_users: int
    as_of: datetime
    junk_users: int = 0
    seed: int = 7
    conversions: int = 0


def _today_utc() -> datetime:
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC)


def _allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` that sum exactly to ``total``."""
    weight_sum = float(sum(weights))
    if total <= 0 or not weights:
        return [0] * len(weights)
    if weight_sum <= 0:
        weights, weight_sum = [1.0] * len(weights), float(len(weights))
    out: list[int] = []
    cumulative, previous = 0.0, 0
    for i, weight in enumerate(weights):
        cumulative += weight
        current = total if i == len(weights) - 1 else int(total * cumulative / weight_sum)
        out.append(current - previous)
        previous = current
    return out


def _team_users(companies: Sequence[DemoCompany], company_users: int) -> list[int]:
    """Users per company: at least one each when possible, the rest by team size."""
    n = len(companies)
    if company_users >= n:
        extra = _allocate(company_users - n, [c.team_size - 1 for c in companies])
        return [1 + e for e in extra]
    return [1 if i < company_users else 0 for i in range(n)]


@dataclass(frozen=True, slots=True)
class _CompanyPlan:
    """Per-company parameters the SQL reads: sizes, age, story, special events."""

    columns: dict[str, list[Any]]
    specials: dict[str, list[Any]]


def _plan_companies(
    companies: Sequence[DemoCompany], users_per_company: Sequence[int], seed: int
) -> _CompanyPlan:
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "cidx",
            "domain",
            "sub1",
            "sub2",
            "profile",
            "n_users",
            "first_user",
            "age_days",
            "breadth",
            "band",
            "ws_base",
        )
    }
    specials: dict[str, list[Any]] = {"uidx": [], "name": [], "seconds_before": []}
    first_user = 0
    for i, (company, n_users) in enumerate(zip(companies, users_per_company, strict=True)):
        rng = random.Random(f"{seed}:{i}:{company.domain}")
        age = _age_days(company.profile, rng)
        breadth = 1 + int(rng.random() * 3) + min(3, int(company.team_size / 10))
        if company.profile == "enterprise":
            breadth = 7
        cols["cidx"].append(i)
        cols["domain"].append(company.domain)
        cols["sub1"].append(company.subdomains[0] if company.subdomains else None)
        cols["sub2"].append(company.subdomains[1] if len(company.subdomains) > 1 else None)
        cols["profile"].append(company.profile)
        cols["n_users"].append(n_users)
        cols["first_user"].append(first_user)
        cols["age_days"].append(age)
        cols["breadth"].append(min(breadth, len(_CORE_FEATURES)))
        cols["band"].append(employee_band(company.employees))
        cols["ws_base"].append(1000 + 4 * i)
        if n_users:
            for name, window in _special_events(company.profile, rng):
                # Special events come from the company's first user, inside the company's life.
                seconds = int(min(window, age) * 86400 * rng.random()) + 60
                specials["uidx"].append(first_user)
                specials["name"].append(name)
                specials["seconds_before"].append(min(seconds, int(age * 86400) - 60))
        first_user += n_users
    return _CompanyPlan(cols, specials)


def _age_days(profile: str, rng: random.Random) -> float:
    """Days since the company's first sign-up: the first draw of the company's generator."""
    if profile == "young":
        return 3.0 + 10.0 * rng.random()
    return 30.0 + 900.0 * rng.random() ** 2


@dataclass(frozen=True, slots=True)
class DemoIntent:
    """A demo company's latent buying intent and what it led to.

    ``intent`` is the latent variable (higher buys more); ``converted_at`` is when the company
    bought (``None``: it did not), possibly after the demo's as-of; ``early_signals`` are the
    buyer-intent events it showed between 74 and 63 days before the as-of, where a backtest at
    as-of minus 60 days sees them; ``billing_domain`` is the domain as the billing system wrote
    it (sometimes a subsidiary's host, upper case or with ``www.``).
    """

    domain: str
    intent: float
    converted_at: datetime | None
    early_signals: tuple[str, ...]
    billing_domain: str


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's Poisson draw, for the small means used here."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _conversion_probability(company: DemoCompany, intent: float) -> float:
    probability = _sigmoid(_CONVERSION_BASE + _CONVERSION_SLOPE * intent)
    if company.team_size == 1:
        probability *= _PROSUMER_FACTOR
    if company.profile == "young":
        probability *= _YOUNG_FACTOR
    elif company.profile == "dormant":
        probability *= _DORMANT_FACTOR
    return probability


def _conversion_time(
    company: DemoCompany, age: float, as_of: datetime, rng: random.Random
) -> datetime:
    """When a converting company bought: before the backtest date, in its horizon, or later."""
    u = rng.random()
    earlier, backtest = (0.08, 0.68) if company.profile in _INTENT_PROFILES else (0.1, 0.95)
    if company.profile == "young" or age < _EARLY_SIGNAL_DAYS[0]:
        return as_of + timedelta(days=1 + 44 * rng.random())
    if u < earlier and age >= 130:
        return as_of - timedelta(days=64 + (min(age - 7, 118) - 64) * rng.random())
    if u < backtest:
        return as_of - timedelta(days=2 + 56 * rng.random())
    return as_of + timedelta(days=1 + 44 * rng.random())


def _early_signals(
    company: DemoCompany, intent: float, boosted: bool, rng: random.Random
) -> tuple[str, ...]:
    """Buyer-intent event names the company shows in the early window, driven by its intent."""

    def pick(names: Sequence[str]) -> str:
        return names[int(rng.random() * len(names))]

    mean = math.exp(_EARLY_SIGNAL_BASE + _EARLY_SIGNAL_SLOPE * intent)
    count = _poisson(rng, mean) + (2 + int(rng.random() * 3) if boosted else 0)
    names: list[str] = []
    for _ in range(count):
        u = rng.random()
        if u < 0.2:
            names.append(pick(_LEGAL_PAGES))
        elif u < 0.35:
            names.append(pick(_ADMIN_CHANGES))
        elif u < 0.5 and company.team_size >= 8:
            names.append(pick(_ENTERPRISE_FEATURES))
        else:
            names.append(pick(_PRICING_PAGES))
    return tuple(names)


def _billing_domain(company: DemoCompany, rng: random.Random) -> str:
    u = rng.random()
    if company.subdomains and u < 0.25:
        return f"{company.subdomains[0]}.{company.domain}"
    if u < 0.35:
        return company.domain.upper()
    if u < 0.42:
        return f"www.{company.domain}"
    return company.domain


def demo_intents(
    companies: Sequence[DemoCompany], *, seed: int, as_of: datetime
) -> list[DemoIntent]:
    """Each demo company's latent intent, conversion and early signals; one per company.

    A pure function of the seed, the companies and ``as_of`` (each company draws from its own
    generator, so a longer company list extends a shorter one): the CRM sandbox can tell the same
    story of who bought as the warehouse. Intent comes from the company's usage story (buyer-
    intent profiles run higher), its team size and noise; it drives both the early buyer-intent
    events and the odds of buying. Traps: single-user accounts (prosumers), young and dormant
    accounts convert far less than their usage suggests.
    """
    out: list[DemoIntent] = []
    for i, company in enumerate(companies):
        age = _age_days(company.profile, random.Random(f"{seed}:{i}:{company.domain}"))
        rng = random.Random(f"{seed}:{i}:{company.domain}:intent")
        intent = (
            _PROFILE_INTENT.get(company.profile, 0.0)
            + _INTENT_TEAM_WEIGHT * math.log(company.team_size)
            + rng.gauss(0.0, _INTENT_NOISE)
        )
        converted_at = None
        if rng.random() < _conversion_probability(company, intent):
            converted_at = _conversion_time(company, age, as_of, rng).replace(microsecond=0)
        in_backtest = (
            converted_at is not None and as_of - timedelta(days=60) < converted_at <= as_of
        )
        boosted = in_backtest and rng.random() < _EARLY_SIGNAL_BOOST
        signals = (
            _early_signals(company, intent, boosted, rng) if age > _EARLY_SIGNAL_DAYS[0] else ()
        )
        out.append(
            DemoIntent(
                domain=company.domain,
                intent=intent,
                converted_at=converted_at,
                early_signals=signals,
                billing_domain=_billing_domain(company, rng),
            )
        )
    return out


def _special_events(profile: str, rng: random.Random) -> list[tuple[str, float]]:
    """The story events of a profile: (event name, window in days before as_of)."""

    def pick(names: Sequence[str]) -> str:
        return names[int(rng.random() * len(names))]

    out: list[tuple[str, float]] = []
    if profile == "legal_views":
        out += [(pick(_LEGAL_PAGES), 13.5) for _ in range(1 + int(rng.random() * 4))]
    elif profile == "pricing_views":
        out += [(pick(_PRICING_PAGES), 13.5) for _ in range(2 + int(rng.random() * 5))]
    elif profile == "admin_change":
        out += [(pick(_ADMIN_CHANGES), 27.5) for _ in range(1 + int(rng.random() * 2))]
    elif profile == "enterprise":
        out += [(pick(_ENTERPRISE_FEATURES), 27.5) for _ in range(2 + int(rng.random() * 3))]
        if rng.random() < 0.5:
            out.append((pick(_LEGAL_PAGES), 13.5))
    elif profile == "velocity_spike":
        out += [(pick(_PRICING_PAGES), 6.5) for _ in range(1 + int(rng.random() * 3))]
    elif profile == "young" and rng.random() < 0.5:
        out.append((pick(_LEGAL_PAGES), 2.5))
    elif profile == "steady" and rng.random() < 0.08:
        out.append((pick(_PRICING_PAGES), 13.5))
    return out


def _sql_list(values: Sequence[str]) -> str:
    """A DuckDB list literal of our own constant strings (no quotes in them by construction)."""
    assert all("'" not in v for v in values)
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def _title_slots() -> dict[str, list[Any]]:
    weights = [w for *_, w in _TITLES]
    counts = _allocate(_TITLE_SLOTS, weights)
    slots: dict[str, list[Any]] = {"slot": [], "title": [], "seniority": [], "department": []}
    slot = 0
    for (title, seniority, department, _), count in zip(_TITLES, counts, strict=True):
        for _ in range(count):
            slots["slot"].append(slot)
            slots["title"].append(title)
            slots["seniority"].append(seniority)
            slots["department"].append(department)
            slot += 1
    for j, (title, seniority, department) in enumerate(_FOUNDER_TITLES):
        slots["slot"].append(_TITLE_SLOTS + j)
        slots["title"].append(title)
        slots["seniority"].append(seniority)
        slots["department"].append(department)
    return slots


def _load_columns(
    con: duckdb.DuckDBPyConnection, table: str, columns: dict[str, list[Any]]
) -> None:
    """Create a temp table from Python column lists (DuckDB unnests them side by side)."""
    names = list(columns)
    select = ", ".join(f"unnest(${name}) AS {name}" for name in names)
    con.execute(f"CREATE TEMP TABLE {table} AS SELECT {select}", columns)


def _users_sql(
    seed: int, as_of_s: int, n_company: int, n_free: int, n_junk: int, companies: int
) -> str:
    """SQL creating temp table ``gen_users``: every user with the fields events need."""
    first = _sql_list(_FIRST_NAMES)
    last = _sql_list(_LAST_NAMES)
    free = _sql_list(_FREE_MAIL_HOSTS)
    junk = "[" + ", ".join("NULL" if e is None else f"'{e}'" for e in _JUNK_EMAILS) + "]"
    day = 86400
    intensity = " ".join(f"WHEN '{p}' THEN {v}" for p, v in _INTENSITY.items())
    return f"""
    CREATE TEMP MACRO rnd(i, salt) AS (hash(i, {seed}, salt) >> 11) / 9007199254740992.0;
    CREATE TEMP MACRO pick(lst, i, salt) AS lst[1 + (hash(i, {seed}, salt) % len(lst))::BIGINT];
    CREATE TEMP TABLE company_users AS
    SELECT c.*, first_user + k AS uidx, k
    FROM (SELECT *, unnest(range(n_users)) AS k FROM companies WHERE n_users > 0) AS c;

    CREATE TEMP TABLE gen_users AS
    WITH cu AS (
        SELECT *,
            {as_of_s} - CAST(age_days * {day} AS BIGINT) AS start_s,
            CASE
                WHEN sub1 IS NOT NULL AND k > 0 AND rnd(uidx, 2) < 0.3 THEN
                    CASE WHEN sub2 IS NOT NULL AND rnd(uidx, 3) < 0.5 THEN 2 ELSE 1 END
                ELSE 0
            END AS sub_ix
        FROM company_users
    ), named AS (
        SELECT *,
            pick({first}, uidx, 4) AS fn,
            pick({last}, uidx, 5) AS ln,
            rnd(uidx, 6) AS style,
            CASE sub_ix WHEN 1 THEN sub1 || '.' || domain WHEN 2 THEN sub2 || '.' || domain
                ELSE domain END AS host,
            CASE
                WHEN k = 0 THEN start_s
                WHEN profile = 'young' THEN start_s + CAST(rnd(uidx, 7) * ({as_of_s} - start_s - 60) AS BIGINT)
                WHEN profile = 'velocity_spike' AND rnd(uidx, 8) < 0.55
                    THEN {as_of_s} - 60 - CAST(rnd(uidx, 7) * {7 * day - 120} AS BIGINT)
                WHEN profile = 'velocity_spike'
                    THEN start_s + CAST(rnd(uidx, 7) * ({as_of_s} - {7 * day} - start_s) AS BIGINT)
                WHEN profile = 'dormant' THEN start_s + CAST(rnd(uidx, 7) * (age_days * {day // 2}) AS BIGINT)
                ELSE start_s + CAST(sqrt(rnd(uidx, 7)) * ({as_of_s} - start_s - 60) AS BIGINT)
            END AS created_s
        FROM cu
    )
    SELECT
        uidx,
        1000000 + uidx AS user_id,
        CASE WHEN rnd(uidx, 9) < 0.02 THEN upper(fn[1]) || fn[2:] || '.' || upper(ln[1]) || ln[2:]
             WHEN style < 0.6 THEN fn || '.' || ln
             WHEN style < 0.85 THEN fn[1] || ln
             ELSE fn END
            || CASE WHEN k >= 20 THEN CAST(k AS VARCHAR) ELSE '' END
            || '@' || CASE WHEN rnd(uidx, 10) < 0.02 THEN upper(host) ELSE host END AS email,
        CASE WHEN sub_ix > 0 AND n_users >= 10 AND rnd(uidx, 11) < 0.7 THEN ws_base + sub_ix
             WHEN n_users >= 40 AND rnd(uidx, 12) < 0.2 THEN ws_base + 3
             ELSE ws_base END AS workspace_id,
        created_s,
        k = 0 OR (k = 1 AND profile = 'admin_change') OR rnd(uidx, 13) < 0.04 AS is_admin,
        CASE WHEN k = 0 AND n_users <= 10 AND rnd(uidx, 14) < 0.25
                THEN {_TITLE_SLOTS} + (hash(uidx, {seed}, 15) % {len(_FOUNDER_TITLES)})::BIGINT
             WHEN rnd(uidx, 16) < 0.08 THEN NULL
             ELSE (hash(uidx, {seed}, 17) % {_TITLE_SLOTS})::BIGINT END AS title_slot,
        CASE WHEN rnd(uidx, 18) < 0.15 THEN NULL ELSE band END AS company_size,
        profile,
        breadth,
        CASE profile {intensity} ELSE 1.0 END AS intensity,
        CASE WHEN profile = 'dormant' THEN {as_of_s} - CAST((60 + 60 * rnd(cidx, 19)) * {day} AS BIGINT)
             ELSE {as_of_s} - 1 END AS end_s
    FROM named

    UNION ALL
    SELECT
        {n_company} + i AS uidx,
        1000000 + {n_company} + i AS user_id,
        pick({first}, {n_company} + i, 4) || '.' || pick({last}, {n_company} + i, 5)
            || CAST(hash({n_company} + i, {seed}, 20) % 1000 AS VARCHAR)
            || '@' || pick({free}, {n_company} + i, 21) AS email,
        CASE WHEN rnd(i, 22) < 0.1 AND {companies} > 0
             THEN 1000 + 4 * (hash(i, {seed}, 23) % GREATEST({companies}, 1))::BIGINT
             ELSE 50000000 + i END AS workspace_id,
        {as_of_s} - 3600 - CAST(rnd(i, 24) * {400 * day} AS BIGINT) AS created_s,
        NOT (rnd(i, 22) < 0.1) AS is_admin,
        CASE WHEN rnd(i, 25) < 0.6 THEN NULL
             ELSE (hash(i, {seed}, 26) % {_TITLE_SLOTS})::BIGINT END AS title_slot,
        CASE WHEN rnd(i, 27) < 0.7 THEN NULL ELSE '1-10' END AS company_size,
        'free_mail' AS profile,
        2 AS breadth,
        {_FREE_INTENSITY} AS intensity,
        {as_of_s} - 1 AS end_s
    FROM (SELECT range AS i FROM range({n_free}))

    UNION ALL
    SELECT
        {n_company + n_free} + i AS uidx,
        1000000 + {n_company + n_free} + i AS user_id,
        {junk}[1 + i % {len(_JUNK_EMAILS)}] AS email,
        60000000 + i AS workspace_id,
        {as_of_s} - 3600 - CAST(rnd(i, 28) * {200 * day} AS BIGINT) AS created_s,
        true AS is_admin,
        NULL AS title_slot,
        NULL AS company_size,
        'junk' AS profile,
        1 AS breadth,
        {_JUNK_INTENSITY} AS intensity,
        {as_of_s} - 1 AS end_s
    FROM (SELECT range AS i FROM range({n_junk}));
    """


def _events_sql(seed: int, as_of_s: int, bulk_events: int) -> str:
    """SQL creating ``events``: bulk usage spread over each user's life, plus the story events."""
    history_start = as_of_s - HISTORY_DAYS * 86400
    return f"""
    CREATE TEMP TABLE alloc AS
    WITH lived AS (
        SELECT uidx, user_id, workspace_id, profile, breadth,
            GREATEST(created_s, {history_start}) AS from_s, end_s,
            CASE WHEN k_active THEN intensity * (0.2 + 3.0 * pow(rnd(uidx, 30), 3))
                 ELSE 0 END
              * GREATEST(end_s - GREATEST(created_s, {history_start}), 0) / 86400.0 AS w
        FROM (SELECT *, (rnd(uidx, 31) >= 0.15 OR uidx IN (SELECT first_user FROM companies))
                        AS k_active FROM gen_users)
    ), cum AS (
        SELECT *, sum(w) OVER (ORDER BY uidx ROWS UNBOUNDED PRECEDING) AS c FROM lived
    ), total AS (SELECT max(c) AS wsum FROM cum)
    SELECT uidx, user_id, workspace_id, profile, breadth, from_s, end_s,
        CASE WHEN wsum > 0 THEN
            CAST(floor({bulk_events} * (c / wsum)) AS BIGINT)
            - CAST(floor({bulk_events} * ((c - w) / wsum)) AS BIGINT)
        ELSE 0 END AS n_ev
    FROM cum, total;

    CREATE TABLE events AS
    WITH e AS (
        SELECT uidx, user_id, workspace_id, profile, breadth, from_s, end_s,
            unnest(range(n_ev)) AS j
        FROM alloc WHERE n_ev > 0
    ), r AS (
        SELECT *, hash(uidx, j, {seed}, 40) AS h, rnd(hash(uidx, j), 41) AS r_name,
            rnd(hash(uidx, j), 42) AS r_time
        FROM e
    )
    SELECT user_id, workspace_id,
        CASE
            WHEN r_name < 0.03 THEN {_sql_list(_IGNORED)}[1 + (h % 2)::BIGINT]
            WHEN r_name < 0.13 THEN {_sql_list(_CORE_FEATURES)}[1 + (h % breadth)::BIGINT]
            WHEN profile = 'enterprise' AND r_name < 0.145
                THEN {_sql_list(_ENTERPRISE_FEATURES)}[1 + (h % 5)::BIGINT]
            WHEN r_name < 0.1305
                THEN {_sql_list(_PRICING_PAGES)}[1 + (h % 2)::BIGINT]
            ELSE {_sql_list(_USAGE_EVENTS)}[1 + (h % {len(_USAGE_EVENTS)})::BIGINT]
        END AS event_name,
        make_timestamp(1000000::BIGINT * (from_s + CAST(
            (CASE WHEN profile = 'velocity_spike' THEN sqrt(r_time) ELSE r_time END)
            * (end_s - from_s) AS BIGINT))) AS occurred_at
    FROM r
    UNION ALL
    SELECT g.user_id, g.workspace_id, s.name AS event_name,
        make_timestamp(1000000::BIGINT * ({as_of_s} - s.seconds_before)) AS occurred_at
    FROM specials AS s JOIN gen_users AS g ON g.uidx = s.uidx;
    """


def _intent_columns(
    intents: Sequence[DemoIntent], users_per_company: Sequence[int]
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """(early signals by company, conversions) of the companies that have users."""
    signals: dict[str, list[Any]] = {"cidx": [], "j": [], "name": []}
    conversions: dict[str, list[Any]] = {"domain": [], "account_key": [], "converted_s": []}
    for cidx, (intent, n_users) in enumerate(zip(intents, users_per_company, strict=True)):
        if not n_users:
            continue
        for j, name in enumerate(intent.early_signals):
            signals["cidx"].append(cidx)
            signals["j"].append(j)
            signals["name"].append(name)
        if intent.converted_at is not None:
            conversions["domain"].append(intent.billing_domain)
            conversions["account_key"].append(intent.domain)
            conversions["converted_s"].append(int(intent.converted_at.timestamp()))
    return signals, conversions


def _early_signals_sql(seed: int, as_of_s: int) -> str:
    """SQL rewriting plain usage events of each company in the early window into its signals.

    Only names change, and only of events the reader at ``as_of`` never reads, so the scores as
    of ``as_of`` are those of a demo without them. A company with fewer usage events there than
    signals shows fewer signals.
    """
    start_s, end_s = (as_of_s - days * 86400 for days in _EARLY_SIGNAL_DAYS)
    return f"""
    CREATE TEMP TABLE signal_rows AS
    WITH candidates AS (
        SELECT e.rowid AS rid, cu.cidx,
            row_number() OVER (PARTITION BY cu.cidx
                ORDER BY hash(e.user_id, e.occurred_at, e.event_name, {seed}, 70), e.rowid) - 1 AS j
        FROM events AS e JOIN company_users AS cu ON e.user_id = 1000000 + cu.uidx
        WHERE e.occurred_at >= make_timestamp(1000000::BIGINT * {start_s})
            AND e.occurred_at < make_timestamp(1000000::BIGINT * {end_s})
            AND list_contains({_sql_list(_USAGE_EVENTS)}, e.event_name)
    )
    SELECT c.rid, s.name FROM candidates AS c JOIN early_signals AS s USING (cidx, j);
    UPDATE events SET event_name = signal_rows.name FROM signal_rows
    WHERE events.rowid = signal_rows.rid;
    """


def _conversions_sql(as_of_s: int) -> str:
    """SQL creating ``conversions``: the companies that bought, and free-mail personal plans."""
    return f"""
    CREATE TABLE conversions AS
    SELECT domain, account_key, converted_at FROM (
        SELECT domain, account_key, make_timestamp(1000000::BIGINT * converted_s) AS converted_at
        FROM company_conversions
        UNION ALL
        SELECT lower(split_part(email, '@', 2)) AS domain, CAST(NULL AS VARCHAR) AS account_key,
            make_timestamp(1000000::BIGINT * (created_s + CAST(
                (0.3 + 0.7 * rnd(uidx, 61)) * GREATEST({as_of_s} - 60 - created_s, 0) AS BIGINT)))
                AS converted_at
        FROM gen_users WHERE profile = 'free_mail' AND rnd(uidx, 60) < {_FREE_MAIL_CONVERSION}
    )
    ORDER BY converted_at, domain;
    """


def _users_table_sql() -> str:
    return """
    CREATE TABLE users AS
    SELECT g.user_id, g.email, g.workspace_id,
        make_timestamp(1000000::BIGINT * g.created_s) AS created_at,
        g.is_admin, t.title, t.seniority, t.department, g.company_size
    FROM gen_users AS g LEFT JOIN title_slots AS t ON t.slot = g.title_slot
    ORDER BY g.user_id;
    """


def _remove(path: Path) -> None:
    for candidate in (path, path.with_name(path.name + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()


def generate_demo_warehouse(
    path: str | Path,
    *,
    seed: int = 7,
    companies: int = 400,
    users: int | None = None,
    events: int | None = None,
    as_of: datetime | None = None,
    progress: Progress | None = None,
) -> DemoStats:
    """Write the demo warehouse (DuckDB file at ``path``) and return what it holds.

    ``users`` defaults to the companies' team sizes plus 20% free-mail sign-ups (about 6.7k for
    400 companies); ``events`` defaults to 50 per user. Both are met exactly. ``as_of`` defaults
    to today 00:00 UTC, so reruns on one day write the same data; every timestamp is before it.
    ``progress(stage, done, total)`` is told how far it got. Prints nothing.
    """
    if companies < 0 or (users is not None and users < 0) or (events is not None and events < 0):
        raise ValueError("companies, users and events must not be negative")
    report = progress or (lambda stage, done, total: None)
    as_of = (
        _today_utc()
        if as_of is None
        else (as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC))
    )
    as_of_s = int(as_of.timestamp())
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)

    report("companies", 0, companies)
    company_list = demo_companies(seed, companies)
    if users is None:
        users = round(sum(c.team_size for c in company_list) / (1.0 - FREE_MAIL_SHARE))
    n_junk = min(users, max(len(_JUNK_EMAILS), users // 1000)) if users else 0
    n_free = min(users - n_junk, round(users * FREE_MAIL_SHARE))
    n_company = users - n_junk - n_free
    per_company = _team_users(company_list, n_company)
    plan = _plan_companies(company_list, per_company, seed)
    signals, conversions = _intent_columns(
        demo_intents(company_list, seed=seed, as_of=as_of), per_company
    )
    total_events = EVENTS_PER_USER * users if events is None else events
    n_special = len(plan.specials["uidx"])
    if n_special > total_events // 2:  # tiny event budgets: keep the bulk usage dominant
        keep = total_events // 2
        plan.specials.update({k: v[:keep] for k, v in plan.specials.items()})
        n_special = keep
    report("companies", companies, companies)

    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        con = duckdb.connect(str(tmp))
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.execute("SET enable_progress_bar = false")  # it would print to stdout
            _load_columns(con, "companies", plan.columns)
            _load_columns(con, "specials", plan.specials)
            _load_columns(con, "title_slots", _title_slots())
            report("users", 0, users)
            con.execute(_users_sql(seed, as_of_s, n_company, n_free, n_junk, companies))
            con.execute(_users_table_sql())
            report("users", users, users)
            report("events", 0, total_events)
            con.execute(_events_sql(seed, as_of_s, total_events - n_special))
            _load_columns(con, "early_signals", signals)
            con.execute(_early_signals_sql(seed, as_of_s))
            report("events", total_events, total_events)
            _load_columns(con, "company_conversions", conversions)
            con.execute(_conversions_sql(as_of_s))
            converted = con.execute("SELECT count(*) FROM conversions").fetchone()
            con.execute(
                "CREATE TABLE demo_meta (key VARCHAR PRIMARY KEY, value VARCHAR);"
                "INSERT INTO demo_meta VALUES ('as_of', $as_of), ('seed', $seed),"
                " ('companies', $companies), ('generator', 'pls-sync demo_warehouse 1')",
                {"as_of": as_of.isoformat(), "seed": str(seed), "companies": str(companies)},
            )
            written = con.execute("SELECT count(*) FROM events").fetchone()
            con.execute("CHECKPOINT")
        finally:
            con.close()
        _remove(target.with_name(target.name + ".wal"))
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    report("done", 1, 1)
    return DemoStats(
        companies=companies,
        users=users,
        events=int(written[0]) if written else 0,
        free_mail_users=n_free,
        as_of=as_of,
        junk_users=n_junk,
        seed=seed,
        conversions=int(converted[0]) if converted else 0,
    )


def read_demo_as_of(path: str | Path) -> datetime:
    """The as-of time a demo warehouse was generated for (from its ``demo_meta`` table)."""
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise WarehouseError(f"cannot open the demo warehouse {path}: {exc}") from None
    try:
        row = con.execute("SELECT value FROM demo_meta WHERE key = 'as_of'").fetchone()
    except duckdb.Error as exc:
        raise WarehouseError(f"{path} is not a demo warehouse: {exc}") from None
    finally:
        con.close()
    if row is None:
        raise WarehouseError(f"{path} does not record the as-of time of its data")
    value = datetime.fromisoformat(str(row[0]))
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
