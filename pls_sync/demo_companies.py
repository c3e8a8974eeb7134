"""Made-up companies for the demo warehouse and the CRM sandbox. Standard library only.

``demo_companies(seed, count)`` is deterministic: the same seed and count give the same list, in the
same order, on every machine and Python version (only ``random.Random(seed).random()`` is drawn,
whose algorithm CPython keeps stable). A longer list extends a shorter one: the first ``n``
companies of ``demo_companies(seed, 1000)`` are ``demo_companies(seed, n)``. The demo warehouse
generates product users at these domains and the CRM sandbox seeds accounts from the same list, so
the two sides of the demo match.

What the list looks like:

* names and domains: two invented words (``Bluepeak Analytics`` at ``bluepeak.com``), on a mix of
  TLDs (``.com``, ``.io``, ``.co.uk``, ``.com.au``, ``.de``, ``.fr``, ``.co``, ``.ai``); every
  registrable domain is unique;
* ``subdomains``: some companies (mostly larger ones) have subsidiaries whose people sign up on a
  subdomain (``eng.bluepeak.co.uk``, ``emea.bluepeak.com``); they are one company;
* ``team_size``: product users at the default demo scale, power-law distributed (about two thirds
  have 1-3 users, about one in thirteen has 30-200);
* ``employees``: company head count, at least the team size;
* ``profile``: the usage story the demo warehouse tells for the company, one of ``PROFILES``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["PROFILES", "DemoCompany", "demo_companies", "employee_band"]

PROFILES: tuple[str, ...] = (
    "steady",  # regular usage, nothing special
    "velocity_spike",  # many users created in the last 7 days, events up sharply
    "admin_change",  # an admin transferred or added in the last 28 days
    "legal_views",  # Terms of Use / privacy / DPA pages viewed in the last 14 days
    "pricing_views",  # pricing pages viewed in the last 14 days
    "young",  # first user under 14 days ago, strong usage (exercises the age guard)
    "enterprise",  # large team using enterprise features (SSO, SCIM, audit log...)
    "dormant",  # used to be active, no usage in the last two months
)

_MAX_TEAM = 200
_PARETO_ALPHA = 0.75

_FIRST = (
    "Blue",
    "North",
    "Silver",
    "Bright",
    "Iron",
    "Cedar",
    "Lumen",
    "Nova",
    "Quantum",
    "Red",
    "Stone",
    "Swift",
    "True",
    "Vector",
    "Zen",
    "Amber",
    "Apex",
    "Arc",
    "Aster",
    "Atlas",
    "Beacon",
    "Birch",
    "Bold",
    "Cobalt",
    "Copper",
    "Coral",
    "Crisp",
    "Delta",
    "Echo",
    "Ember",
    "Evergreen",
    "Falcon",
    "Fern",
    "Flint",
    "Forge",
    "Golden",
    "Granite",
    "Harbor",
    "Hazel",
    "Helix",
    "High",
    "Indigo",
    "Juniper",
    "Kestrel",
    "Kite",
    "Lark",
    "Linden",
    "Lunar",
    "Maple",
    "Meadow",
    "Mint",
    "Moss",
    "Neon",
    "Oak",
    "Onyx",
    "Orbit",
    "Pine",
    "Pixel",
    "Polar",
    "Prism",
    "Pulse",
    "Quartz",
    "Raven",
    "Ridge",
    "River",
    "Rowan",
    "Sable",
    "Sage",
    "Sierra",
    "Sky",
    "Solar",
    "Spruce",
    "Summit",
    "Tidal",
    "Timber",
    "Topaz",
    "Umber",
    "Vale",
    "Velvet",
    "Willow",
    "Wren",
    "Zephyr",
    "Alder",
    "Basalt",
    "Clear",
    "Deep",
    "Far",
    "Fox",
    "Glacier",
    "Green",
    "Hollow",
    "Jade",
    "Keen",
    "Light",
    "Marble",
    "Noble",
    "Open",
    "Pacific",
    "Quiet",
    "Rapid",
)
_SECOND = (
    "peak",
    "field",
    "wave",
    "stack",
    "path",
    "line",
    "works",
    "point",
    "bridge",
    "forge",
    "gate",
    "grid",
    "harbor",
    "hive",
    "leaf",
    "loop",
    "mark",
    "mill",
    "nest",
    "port",
    "reach",
    "rock",
    "root",
    "scale",
    "shift",
    "signal",
    "spark",
    "spring",
    "star",
    "stream",
    "tide",
    "trail",
    "vault",
    "view",
    "ware",
    "well",
    "wind",
    "wing",
    "yard",
    "base",
    "beam",
    "bloom",
    "bolt",
    "brook",
    "cast",
    "cloud",
    "craft",
    "crest",
    "dale",
    "dock",
    "flow",
    "fold",
    "frame",
    "glen",
    "grove",
    "hub",
    "key",
    "lake",
    "lane",
    "ledger",
    "light",
    "link",
    "logic",
    "mesa",
    "metric",
    "mind",
    "mint",
    "node",
    "pilot",
    "plane",
    "pod",
    "pulse",
    "quest",
    "rail",
    "range",
    "ray",
    "sail",
    "scope",
    "sense",
    "ship",
    "side",
    "sight",
    "sky",
    "sphere",
    "spot",
    "sync",
    "tech",
    "thread",
    "tower",
    "track",
    "vale",
    "verse",
    "vista",
    "wise",
    "worth",
    "zone",
)
_SUFFIXES = (
    "",
    "",
    "",
    "Labs",
    "Analytics",
    "Systems",
    "Group",
    "Logistics",
    "Health",
    "Software",
    "Robotics",
    "Partners",
    "Studio",
    "Capital",
    "Networks",
    "Foods",
    "Energy",
    "Media",
)
# (tld, weight, legal form appended to some names there)
_TLDS: tuple[tuple[str, float, str], ...] = (
    ("com", 0.46, "Inc."),
    ("io", 0.14, ""),
    ("co.uk", 0.10, "Ltd"),
    ("de", 0.08, "GmbH"),
    ("com.au", 0.07, "Pty Ltd"),
    ("fr", 0.07, "SAS"),
    ("co", 0.04, ""),
    ("ai", 0.04, ""),
)
_SUBSIDIARIES = ("eng", "emea", "us", "apac", "labs", "uk", "de", "research", "ops", "na")
_INDUSTRIES = (
    "Software",
    "Financial Services",
    "Healthcare",
    "Retail",
    "Manufacturing",
    "Education",
    "Media",
    "Logistics",
    "Professional Services",
    "Energy",
    "Real Estate",
    "Hospitality",
    "Non-profit",
    "Telecommunications",
    "Construction",
    "Agriculture",
)
_EMPLOYEE_BANDS = ((10, "1-10"), (50, "11-50"), (200, "51-200"), (1000, "201-1000"))


@dataclass(frozen=True)
class DemoCompany:
    """A made-up company: its name, registrable domain, subsidiaries' subdomains and usage story.

    ``subdomains`` are labels under ``domain`` (``("eng",)`` means ``eng.<domain>``).
    ``team_size`` is its number of product users at the default demo scale.
    ``profile`` is one of ``PROFILES``.
    """

    name: str
    domain: str
    subdomains: tuple[str, ...]
    industry: str
    employees: int
    team_size: int
    profile: str

    @property
    def hosts(self) -> tuple[str, ...]:
        """Every email host of the company: the domain, then its subsidiaries' hosts."""
        return (self.domain, *(f"{label}.{self.domain}" for label in self.subdomains))


def employee_band(employees: int) -> str:
    """The self-reported company size band of a sign-up form (``"11-50"``, ``"5000+"``...)."""
    for bound, band in _EMPLOYEE_BANDS:
        if employees <= bound:
            return band
    return "1001-5000" if employees <= 5000 else "5000+"


def _pick(rng: random.Random, items: tuple[str, ...]) -> str:
    return items[int(rng.random() * len(items))]


def _team_size(rng: random.Random) -> int:
    # Pareto(alpha) over [1, inf), capped: most teams are tiny, a few are large.
    u = rng.random()
    return min(_MAX_TEAM, int((1.0 - u) ** (-1.0 / _PARETO_ALPHA)))


def _profile(rng: random.Random, team: int) -> str:
    u = rng.random()
    if team >= 30 and u < 0.5:
        return "enterprise"
    if team >= 8 and u < 0.3:
        return "velocity_spike"
    if team >= 3 and u < 0.14:
        return "admin_change"
    if team >= 2 and u < 0.26:
        return "legal_views"
    if team >= 2 and u < 0.34:
        return "pricing_views"
    if 0.55 <= u < 0.61:
        return "young"
    if 0.61 <= u < 0.75:
        return "dormant"
    return "steady"


def _tld(rng: random.Random) -> tuple[str, str]:
    u = rng.random()
    for tld, weight, form in _TLDS:
        if u < weight:
            return tld, form
        u -= weight
    return _TLDS[0][0], _TLDS[0][2]


def _name_and_domain(rng: random.Random, taken: set[str]) -> tuple[str, str, str]:
    """A unique (name, domain, legal form) pair; the domain's first label is never reused."""
    for attempt in range(64):
        first, second = _pick(rng, _FIRST), _pick(rng, _SECOND)
        suffix = _pick(rng, _SUFFIXES)
        tld, form = _tld(rng)
        style = rng.random()
        if style < 0.6 or not suffix:
            label = f"{first}{second}".lower()
        elif style < 0.85:
            label = f"{first}{second}{suffix}".lower()
        else:
            label = f"{first}-{second}".lower()
        if attempt >= 48:
            label = f"{label}{attempt}"
        if label not in taken:
            taken.add(label)
            base = f"{first}{second}" + (f" {suffix}" if suffix else "")
            return base, f"{label}.{tld}", form
    raise RuntimeError(
        "could not find a free demo domain"
    )  # unreachable: the last tries are numbered


def demo_companies(seed: int = 7, count: int = 400) -> list[DemoCompany]:
    """``count`` made-up companies, deterministic for ``seed`` (see the module docstring)."""
    rng = random.Random(seed)
    taken: set[str] = set()
    companies: list[DemoCompany] = []
    for _ in range(count):
        name, domain, form = _name_and_domain(rng, taken)
        team = _team_size(rng)
        profile = _profile(rng, team)
        if profile in ("enterprise", "velocity_spike") and team < 8:
            team = 8  # unreachable by construction, kept so the story always holds
        subdomains: tuple[str, ...] = ()
        sub_chance = 0.45 if team >= 10 else 0.03
        if rng.random() < sub_chance:
            first = _pick(rng, _SUBSIDIARIES)
            second = _pick(rng, _SUBSIDIARIES)
            subdomains = (first,) if second == first or rng.random() < 0.6 else (first, second)
        headcount = team * (1.0 + rng.lognormvariate(1.2, 1.1))
        if profile == "enterprise":
            headcount *= 8
        employees = max(team, int(headcount))
        if form and rng.random() < 0.3:
            name = f"{name} {form}"
        companies.append(
            DemoCompany(
                name=name,
                domain=domain,
                subdomains=subdomains,
                industry=_pick(rng, _INDUSTRIES),
                employees=employees,
                team_size=team,
                profile=profile,
            )
        )
    return companies
