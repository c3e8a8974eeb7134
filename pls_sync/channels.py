"""Lead channels, buyers and motions: who sales should talk to, and how. Standard library only.

The pure core of DESIGN.md section 1's PQL, MQL, lead channel and motion terms:

* **Buyers (PQLs)**: persona rules over the sign-up profile (seniority, title patterns,
  department, company size) plus buyer behaviour (Terms of Use views, becoming admin, pricing
  views) score each user; users reaching a threshold are the account's likely buyers, ranked,
  each with human-readable reasons.
* **MQL index**: marketing-qualified leads and contacts keyed by their email's registrable
  domain; free-mail, disposable and junk emails are counted, not indexed.
* **Lead channel**: one of ``usage_pql``, ``usage_mql``, ``mql_only``, ``usage_no_buyer``.
* **Motion**: sales / success / abm / self_serve from tier x buyer presence, by a configurable
  decision table.
* **Channel report** and **rep alerts**: channel counts, the ABM list, and the idempotency key
  and text of the CRM task that tells a rep an account entered the sales tier.

Values in, values out: no I/O, no logging. Title patterns are shell-style globs (``fnmatch``),
never regular expressions from config.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "ALERT_KEY_PREFIX",
    "DEFAULT_MOTIONS",
    "LEAD_CHANNELS",
    "MOTIONS",
    "MOTION_ABM",
    "MOTION_SALES",
    "MOTION_SELF_SERVE",
    "MOTION_SUCCESS",
    "MQL_ONLY",
    "MQL_SOURCES",
    "SOURCE_HUBSPOT_CONTACT",
    "SOURCE_SALESFORCE_CONTACT",
    "SOURCE_SALESFORCE_LEAD",
    "USAGE_MQL",
    "USAGE_NO_BUYER",
    "USAGE_PQL",
    "BehaviourPoints",
    "Buyer",
    "BuyerBehaviour",
    "MotionRule",
    "Mql",
    "MqlIndex",
    "PersonaModel",
    "PersonaRule",
    "UserProfile",
    "abm_list",
    "alert_key",
    "alert_text",
    "channel_counts",
    "company_size_lower_bound",
    "default_motions",
    "default_persona_model",
    "index_mqls",
    "lead_channel",
    "motion_for",
    "mql_only_domains",
    "parse_alert_key",
    "persona_columns",
    "persona_model_problems",
    "rank_buyers",
    "score_user",
    "validate_motion_table",
    "with_alert_key",
]

# --------------------------------------------------------------------------------------------
# Buyers (PQL detection)
# --------------------------------------------------------------------------------------------

# Titles longer than this are junk; matching stays bounded (word runs grow quadratically).
_MAX_TITLE_WORDS = 24
_CACHE_SIZE = 65_536
_SPACES = re.compile(r"\s+")
# Separators between title words besides whitespace: "Founder & CEO", "VP, Sales", "CTO/CISO".
_TITLE_SEPARATORS = re.compile(r"[\s,;/|&()\[\]+]+")
# Vocabulary values differ in spelling only: "C-Level", "c_level", "c level".
_VOCAB_SEPARATORS = re.compile(r"[\s_\-]+")
_LEADING_NUMBER = re.compile(r"(\d[\d,.]*)\s*(k\b)?")
_DOT_THOUSANDS = re.compile(r"\d{1,3}(?:\.\d{3})+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class PersonaRule:
    """A buyer persona over the sign-up profile; a user matching it earns ``points``.

    A rule matches a user when every criterion it sets holds (criteria left empty or ``None``
    are not checked; a rule that sets none matches everyone, which ``persona_model_problems``
    reports):

    * ``seniority_in``: the user's seniority is one of these values. Case, spaces, ``-`` and
      ``_`` are ignored: ``"C-Level"`` equals ``"c_level"``.
    * ``title_patterns``: one of these shell-style glob patterns (``*``, ``?``, ``[...]``)
      matches a run of whole words of the lower-cased, whitespace-normalised title. Words are
      split on whitespace and ``, ; / | & ( ) [ ] +``, so ``"cto"`` matches
      ``"Co-founder & CTO"`` but not ``"Director"``, ``"head of*"`` matches
      ``"Global Head of IT"`` and ``"chief*officer"`` matches ``"Chief Revenue Officer"``.
    * ``department_in``: the user's department is one of these (normalised like seniority).
    * ``min_company_size``: the lower bound of the user's self-reported company size (``"51-200"``
      gives 51, see ``company_size_lower_bound``) is at least this; unknown sizes fail it.

    ``label`` is the persona's human name, shown in reasons in place of a blank title:
    ``"VP of Engineering (seniority vp)"``, or ``"executive (seniority vp)"`` with no title.
    """

    name: str
    points: float
    seniority_in: tuple[str, ...] = ()
    title_patterns: tuple[str, ...] = ()
    department_in: tuple[str, ...] = ()
    min_company_size: int | None = None
    label: str = ""


@dataclass(frozen=True)
class BuyerBehaviour:
    """What a user did that marks a buyer: page views in the signal window, becoming admin."""

    legal_page_views: int = 0
    became_admin: bool = False
    pricing_page_views: int = 0


@dataclass(frozen=True)
class BehaviourPoints:
    """Points each buyer behaviour adds, once per kind (ten pricing views count like one)."""

    legal_page_view: float = 30
    became_admin: float = 25
    pricing_page_view: float = 10


@dataclass(frozen=True)
class UserProfile:
    """One product user as the warehouse's ``users`` table and event aggregates describe them.

    ``is_admin`` is informational: whoever creates a workspace is its admin, so being admin
    is not a buyer tell; *becoming* admin (``behaviour.became_admin``) is.
    """

    user_id: str
    email: str
    title: str | None
    seniority: str | None
    department: str | None
    company_size: str | None
    is_admin: bool
    behaviour: BuyerBehaviour


@dataclass(frozen=True)
class Buyer:
    """A likely buyer inside an account: score and the human reasons behind it."""

    user_id: str
    email: str
    title: str | None
    score: float
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class PersonaModel:
    """Persona rules, behaviour points, the buyer threshold and how many buyers to list."""

    rules: tuple[PersonaRule, ...]
    behaviour_points: BehaviourPoints
    min_buyer_score: float = 30
    max_buyers: int = 5


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _vocab(value: str) -> str:
    return _VOCAB_SEPARATORS.sub(" ", value.strip().lower()).strip()


@functools.lru_cache(maxsize=1024)
def _vocab_set(values: tuple[str, ...]) -> frozenset[str]:
    return frozenset(_vocab(value) for value in values)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _clean(value: str) -> str | None:
    text = _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()
    return text or None


def _display(value: str | None) -> str | None:
    """A profile value for humans: one line, spaces collapsed, ``None`` when blank."""
    return None if value is None else _clean(str(value))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _normalised_pattern(pattern: str) -> str:
    return _SPACES.sub(" ", pattern.strip().lower())


@functools.lru_cache(maxsize=1024)
def _title_matcher(patterns: tuple[str, ...]) -> re.Pattern[str] | None:
    """One compiled alternation of the patterns' ``fnmatch`` translations, group ``p<i>`` each.

    ``fnmatch.translate`` escapes everything but the glob syntax, so config text never becomes
    regex syntax; one match per word run replaces one ``fnmatchcase`` per pattern per run.
    """
    parts = [
        f"(?P<p{index}>{fnmatch.translate(_normalised_pattern(pattern))})"
        for index, pattern in enumerate(patterns)
        if _normalised_pattern(pattern)
    ]
    return re.compile("|".join(parts)) if parts else None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _title_match(patterns: tuple[str, ...], title: str) -> str | None:
    """A pattern matching a run of whole words of ``title`` (the earliest run, then the first
    pattern in order), or None. Memoised: titles repeat across users."""
    matcher = _title_matcher(patterns)
    words = [w for w in _TITLE_SEPARATORS.split(title.lower()) if w][:_MAX_TITLE_WORDS]
    if matcher is None or not words:
        return None
    for start in range(len(words)):
        for end in range(start + 1, len(words) + 1):
            found = matcher.match(" ".join(words[start:end]))
            if found is not None:
                for name, value in found.groupdict().items():
                    if value is not None and name.startswith("p"):
                        return patterns[int(name[1:])]
    return None


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _company_size(text: str) -> int | None:
    value = text.strip().lower().replace("\u2013", "-").replace("\u2014", "-")
    if not value:
        return None
    if value.startswith(("<", "less than", "under", "fewer than")):
        return 1  # "<10": a company has at least one person
    match = _LEADING_NUMBER.match(value)
    if match is None:
        return None
    digits, thousands = match.group(1), match.group(2)
    # "1,001" and "1.001" (three digits after) are thousands separators; "50.0" a decimal point.
    number_text = digits.rstrip(".,")
    if _DOT_THOUSANDS.fullmatch(number_text):
        number_text = number_text.replace(".", "")
    number_text = number_text.replace(",", "")
    try:
        number = float(number_text)
    except ValueError:
        return None
    if thousands:
        number *= 1000
    if not math.isfinite(number):
        return None
    return int(number)


def company_size_lower_bound(value: str | int | float | None) -> int | None:
    """The lower bound of a self-reported company size, or ``None`` when unknown or junk.

    ``"1-10"`` gives 1, ``"1001-5000"`` 1001, ``"5000+"`` 5000, ``"1,001-5,000 employees"``
    1001, ``"10k+"`` 10000, ``"<10"`` 1, ``"200"`` and ``200`` give 200; ``"unknown"``, ``""``,
    negative numbers and booleans give ``None``.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            return None
        return int(value)
    if not isinstance(value, str):
        return None
    return _company_size(value)


def _in_vocab(value: str | None, allowed: tuple[str, ...]) -> bool:
    if value is None:
        return False
    wanted = _vocab(value)
    return bool(wanted) and wanted in _vocab_set(allowed)


def _rule_reason(rule: PersonaRule, user: UserProfile) -> str | None:
    """The reason text when ``rule`` matches ``user``, else None. Cheap criteria first."""
    parts: list[str] = []
    if rule.seniority_in:
        if not _in_vocab(user.seniority, rule.seniority_in):
            return None
        parts.append(f"seniority {_display(user.seniority)}")
    if rule.department_in:
        if not _in_vocab(user.department, rule.department_in):
            return None
        parts.append(f"department {_display(user.department)}")
    if rule.min_company_size is not None:
        size = company_size_lower_bound(user.company_size)
        if size is None or size < rule.min_company_size:
            return None
        parts.append(f"company size {_display(str(user.company_size))}")
    title = _display(user.title)
    if rule.title_patterns:
        pattern = _title_match(rule.title_patterns, title) if title else None
        if pattern is None:
            return None
        parts.insert(0, f"title matches {_normalised_pattern(pattern)!r}")
    criteria = ", ".join(parts) if parts else "matches every user"
    head = title or rule.label or rule.name
    return f"{head} ({criteria})"


def _behaviour(behaviour: BuyerBehaviour, points: BehaviourPoints) -> tuple[float, list[str]]:
    score = 0.0
    reasons: list[str] = []
    if behaviour.legal_page_views > 0:
        score += points.legal_page_view
        reasons.append(f"viewed the Terms of Use {behaviour.legal_page_views}x")
    if behaviour.became_admin:
        score += points.became_admin
        reasons.append("became admin")
    if behaviour.pricing_page_views > 0:
        score += points.pricing_page_view
        reasons.append(f"viewed pricing {behaviour.pricing_page_views}x")
    return score, reasons


_Profile = tuple[str | None, str | None, str | None, str | None]
_RuleMemo = dict[_Profile, tuple[float, str] | None]


def _best_rule(
    rules: Sequence[PersonaRule], user: UserProfile, memo: _RuleMemo | None = None
) -> tuple[float, str] | None:
    """Points and reason of the best matching rule (ties: the first), or None."""
    profile = (user.title, user.seniority, user.department, user.company_size)
    if memo is not None and profile in memo:
        return memo[profile]
    best: tuple[float, str] | None = None
    for rule in rules:
        if best is not None and rule.points <= best[0]:
            continue
        reason = _rule_reason(rule, user)
        if reason is not None:
            best = (rule.points, reason)
    if memo is not None:
        memo[profile] = best
    return best


def _score(
    user: UserProfile, model: PersonaModel, memo: _RuleMemo | None
) -> tuple[float, tuple[str, ...]]:
    best = _best_rule(model.rules, user, memo)
    score, reasons = _behaviour(user.behaviour, model.behaviour_points)
    if best is not None:
        score += best[0]
        reasons.insert(0, best[1])
    return score, tuple(reasons)


def score_user(user: UserProfile, model: PersonaModel) -> tuple[float, tuple[str, ...]]:
    """A user's buyer score and reasons: best matching persona rule's points + behaviour points.

    Ties between rules go to the first in ``model.rules``. No match and no behaviour give
    ``(0.0, ())``.
    """
    return _score(user, model, None)


def rank_buyers(users: Iterable[UserProfile], model: PersonaModel) -> tuple[Buyer, ...]:
    """The account's likely buyers: best first, at most ``model.max_buyers``.

    A user is a buyer when something marks them (a persona rule or a behaviour) and their
    score reaches ``model.min_buyer_score``. One person signed up twice (same email, case
    ignored; same user id when the email is blank) is listed once, with their best score.
    Ranked by score descending, then email, then user id.
    """
    best: dict[str, Buyer] = {}
    # Profiles repeat (same title, seniority, department, size): match the rules once each.
    memo: _RuleMemo = {}
    for user in users:
        score, reasons = _score(user, model, memo)
        if not reasons or score < model.min_buyer_score:
            continue
        email = (user.email or "").strip()
        identity = email.lower() or f"id:{user.user_id}"
        known = best.get(identity)
        if known is not None and known.score >= score:
            continue
        best[identity] = Buyer(user.user_id, email, _display(user.title), score, reasons)
    ranked = sorted(best.values(), key=lambda b: (-b.score, b.email.lower(), b.user_id))
    return tuple(ranked[: max(model.max_buyers, 0)])


_EXECUTIVE_SENIORITY = (
    "c_level",
    "c_suite",
    "cxo",
    "owner",
    "founder",
    "partner",
    "president",
    "vp",
    "svp",
    "evp",
    "head",
    "director",
)
_EXECUTIVE_TITLES = (
    "chief*officer",
    "c?o",
    "ciso",
    "founder",
    "co-founder",
    "cofounder",
    "owner",
    "president",
    "vice president*",
    "vp*",
    "svp*",
    "evp*",
    "head of*",
    "*director*",
)
_BUYING_DEPARTMENTS = (
    "engineering",
    "it",
    "information technology",
    "operations",
    "finance",
    "procurement",
    "security",
)
_MANAGER_PLUS = ("manager", "senior manager", "lead", "principal", *_EXECUTIVE_SENIORITY)


def default_persona_model() -> PersonaModel:
    """The default buyer personas (``min_buyer_score`` 30, at most 5 buyers per account).

    * ``executive`` (40 points): seniority c-level, owner, founder, partner, president, VP,
      head or director.
    * ``executive_title`` (40): the title says so when seniority is blank or says otherwise:
      ``chief*officer``, ``c?o`` (CTO, CEO, CFO...), ``ciso``, founder, owner, president,
      ``vice president*``, ``vp*``, ``svp*``, ``evp*``, ``head of*``, ``*director*``.
    * ``budget_department_manager`` (35) and ``department_manager`` (30): manager-or-above
      seniority in a department that buys tools (engineering, IT, operations, finance,
      procurement, security); at a company of 50+ people it earns a little more. Company size
      adds nothing alone: no rule matches on size only, and a manager in a buying department
      is a buyer at any size.
    * Behaviour: a Terms of Use / privacy view 30, becoming admin 25, pricing views 10, so a
      legal page view marks a buyer on its own, becoming admin needs one more tell.

    Individual contributors ("Customer Success Manager" with seniority ``ic``) are not buyers
    by title words such as "manager": only seniority says manager.
    """
    return PersonaModel(
        rules=(
            PersonaRule("executive", 40, seniority_in=_EXECUTIVE_SENIORITY, label="executive"),
            PersonaRule("executive_title", 40, title_patterns=_EXECUTIVE_TITLES, label="executive"),
            PersonaRule(
                "budget_department_manager",
                35,
                seniority_in=_MANAGER_PLUS,
                department_in=_BUYING_DEPARTMENTS,
                min_company_size=50,
                label="buying-department manager",
            ),
            PersonaRule(
                "department_manager",
                30,
                seniority_in=_MANAGER_PLUS,
                department_in=_BUYING_DEPARTMENTS,
                label="buying-department manager",
            ),
        ),
        behaviour_points=BehaviourPoints(),
        min_buyer_score=30,
        max_buyers=5,
    )


def persona_columns(rules: Iterable[PersonaRule]) -> frozenset[str]:
    """The ``users`` columns the rules read, to check against the warehouse before running."""
    columns: set[str] = set()
    for rule in rules:
        if rule.seniority_in:
            columns.add("seniority")
        if rule.title_patterns:
            columns.add("title")
        if rule.department_in:
            columns.add("department")
        if rule.min_company_size is not None:
            columns.add("company_size")
    return frozenset(columns)


def persona_model_problems(model: PersonaModel) -> list[str]:
    """What is wrong with a persona model, as messages (empty when it is sound)."""
    problems: list[str] = []
    seen: set[str] = set()
    for index, rule in enumerate(model.rules, start=1):
        where = f"persona rule {index} ({rule.name!r})"
        if not rule.name.strip():
            problems.append(f"persona rule {index}: name is empty")
        elif rule.name in seen:
            problems.append(f"{where}: duplicate name")
        seen.add(rule.name)
        if not math.isfinite(rule.points) or rule.points < 0:
            problems.append(f"{where}: points must be a number >= 0, got {rule.points!r}")
        if not persona_columns((rule,)):
            problems.append(f"{where}: sets no criterion, so it matches every user")
        for name, values in (
            ("seniority_in", rule.seniority_in),
            ("title_patterns", rule.title_patterns),
            ("department_in", rule.department_in),
        ):
            if any(not _vocab(value) for value in values):
                problems.append(f"{where}: {name} holds an empty value")
        if rule.min_company_size is not None and rule.min_company_size < 0:
            problems.append(f"{where}: min_company_size must be >= 0")
    for name in ("legal_page_view", "became_admin", "pricing_page_view"):
        points = getattr(model.behaviour_points, name)
        if not math.isfinite(points) or points < 0:
            problems.append(f"behaviour points {name} must be a number >= 0, got {points!r}")
    if not math.isfinite(model.min_buyer_score):
        problems.append("min_buyer_score must be a number")
    if model.max_buyers < 0:
        problems.append(f"max_buyers must be >= 0, got {model.max_buyers}")
    return problems


# --------------------------------------------------------------------------------------------
# MQL index
# --------------------------------------------------------------------------------------------

SOURCE_SALESFORCE_LEAD = "salesforce_lead"
SOURCE_SALESFORCE_CONTACT = "salesforce_contact"
SOURCE_HUBSPOT_CONTACT = "hubspot_contact"
MQL_SOURCES = (SOURCE_SALESFORCE_LEAD, SOURCE_SALESFORCE_CONTACT, SOURCE_HUBSPOT_CONTACT)

_SKIP_INVALID = "invalid"
_SKIP_DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Mql:
    """A marketing-qualified lead or contact, keyed by its email's registrable domain."""

    source: str
    record_id: str
    email: str
    domain: str


@dataclass
class MqlIndex:
    """MQLs by registrable domain, and how many were skipped, by reason.

    Skip reasons are the classifier's (``free_mail``, ``disposable``, ``invalid``) plus
    ``duplicate`` for a record read twice.
    """

    by_domain: dict[str, list[Mql]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def indexed(self) -> int:
        """How many MQLs were indexed."""
        return sum(len(mqls) for mqls in self.by_domain.values())

    def has(self, domain: str) -> bool:
        """True when marketing has an MQL at ``domain``."""
        return domain.strip().lower() in self.by_domain

    def at(self, domain: str) -> list[Mql]:
        """The MQLs at ``domain`` (empty when none)."""
        return list(self.by_domain.get(domain.strip().lower(), ()))


def index_mqls(
    mqls: Iterable[tuple[str, str, str]],
    classify: Callable[[str], tuple[str | None, str | None]],
) -> MqlIndex:
    """Key MQLs ``(source, record_id, email)`` by the registrable domain of their email.

    ``classify(email)`` returns ``(registrable domain or None, skip reason or None)``; callers
    pass a wrapper over ``pls_sync.domains.classify_host``. Emails with a skip reason or no
    domain (free mail, disposable, junk, blank) are counted in ``skipped``, not indexed. A
    ``(source, record_id)`` seen twice is counted as ``duplicate``. Input order is kept.
    """
    index = MqlIndex()
    seen: set[tuple[str, str]] = set()
    skipped: Counter[str] = Counter()
    for source, record_id, email in mqls:
        identity = (source, record_id)
        if identity in seen:
            skipped[_SKIP_DUPLICATE] += 1
            continue
        seen.add(identity)
        address = email.strip() if isinstance(email, str) else ""
        if not address:
            skipped[_SKIP_INVALID] += 1
            continue
        domain, reason = classify(address)
        if reason is not None or not domain:
            skipped[reason or _SKIP_INVALID] += 1
            continue
        domain = domain.lower()
        index.by_domain.setdefault(domain, []).append(
            Mql(source, record_id, address.lower(), domain)
        )
    index.skipped = dict(sorted(skipped.items()))
    return index


def mql_only_domains(index: MqlIndex, usage_domains: Iterable[str]) -> list[str]:
    """Domains with an MQL and no product usage (the ``mql_only`` candidates), sorted."""
    used = {domain.strip().lower() for domain in usage_domains}
    return sorted(domain for domain in index.by_domain if domain not in used)


# --------------------------------------------------------------------------------------------
# Lead channel
# --------------------------------------------------------------------------------------------

USAGE_PQL = "usage_pql"
USAGE_MQL = "usage_mql"
MQL_ONLY = "mql_only"
USAGE_NO_BUYER = "usage_no_buyer"
LEAD_CHANNELS = (USAGE_PQL, USAGE_MQL, MQL_ONLY, USAGE_NO_BUYER)


def lead_channel(has_usage: bool, has_buyer: bool, has_mql: bool) -> str | None:
    """The account's lead channel, or ``None`` with neither usage nor an MQL.

    Usage with a buyer is ``usage_pql`` (an MQL changes nothing); usage without a buyer is
    ``usage_mql`` when marketing has an MQL there, else ``usage_no_buyer`` (the ABM list);
    an MQL without usage is ``mql_only``. A buyer needs usage, so ``has_buyer`` alone counts
    for nothing.
    """
    if has_usage:
        if has_buyer:
            return USAGE_PQL
        return USAGE_MQL if has_mql else USAGE_NO_BUYER
    return MQL_ONLY if has_mql else None


# --------------------------------------------------------------------------------------------
# Motion
# --------------------------------------------------------------------------------------------

MOTION_SALES = "sales"
MOTION_SUCCESS = "success"
MOTION_ABM = "abm"
MOTION_SELF_SERVE = "self_serve"
MOTIONS = (MOTION_SALES, MOTION_SUCCESS, MOTION_ABM, MOTION_SELF_SERVE)


@dataclass(frozen=True)
class MotionRule:
    """One row of the motion decision table: tiers x buyer presence x fit segment -> motion.

    ``tiers`` empty matches any tier; ``buyer`` ``None`` matches with or without a buyer;
    ``segments`` empty matches any fit segment (``unknown`` included).
    """

    tiers: tuple[str, ...]
    buyer: bool | None
    motion: str
    segments: tuple[str, ...] = ()

    def matches(self, tier: str, has_buyer: bool, segment: str | None = None) -> bool:
        """True when this row applies to ``tier``, ``has_buyer`` and ``segment``."""
        return (
            (not self.tiers or tier in self.tiers)
            and (self.buyer is None or self.buyer == has_buyer)
            and (not self.segments or segment in self.segments)
        )


def default_motions(qualified_tiers: Sequence[str] = ("sales",)) -> tuple[MotionRule, ...]:
    """DESIGN.md's table: PQA + buyer -> sales; buyer, not PQA -> success; PQA, no buyer ->
    abm; otherwise self_serve. PQA means a tier in ``qualified_tiers``."""
    qualified = tuple(qualified_tiers)
    return (
        MotionRule(qualified, True, MOTION_SALES),
        MotionRule((), True, MOTION_SUCCESS),
        MotionRule(qualified, False, MOTION_ABM),
        MotionRule((), None, MOTION_SELF_SERVE),
    )


DEFAULT_MOTIONS = default_motions()


def motion_for(
    tier: str, has_buyer: bool, rules: Sequence[MotionRule], segment: str | None = None
) -> str:
    """The motion of the first rule matching ``(tier, has_buyer, segment)``.

    Raises ``ValueError`` when no rule matches; ``validate_motion_table`` finds such gaps
    before a run.
    """
    for rule in rules:
        if rule.matches(tier, has_buyer, segment):
            return rule.motion
    buyer = "with" if has_buyer else "without"
    where = f" in segment {segment!r}" if segment is not None else ""
    raise ValueError(f"no motion rule covers tier {tier!r} {buyer} a buyer{where}")


def _describe(rule: MotionRule) -> str:
    tiers = "any tier" if not rule.tiers else "tier " + "/".join(rule.tiers)
    buyer = {None: "any buyer", True: "buyer", False: "no buyer"}[rule.buyer]
    segments = f", segment {'/'.join(rule.segments)}" if rule.segments else ""
    return f"{tiers}, {buyer}{segments} -> {rule.motion}"


def validate_motion_table(
    rules: Sequence[MotionRule], tiers: Sequence[str], segments: Sequence[str] = ()
) -> list[str]:
    """Problems with a motion table over the configured ``tiers`` and fit ``segments`` (empty
    when it is sound).

    Reports unknown tier and segment names, empty motions, cases (tier, buyer, segment) no rule
    covers, and rules that never apply because earlier rules take every case they match.
    Without ``segments`` (no fit configured), a rule naming segments never applies.
    """
    problems: list[str] = []
    known = list(dict.fromkeys(tiers))
    known_segments = list(dict.fromkeys(segments))
    for index, rule in enumerate(rules, start=1):
        unknown = [tier for tier in rule.tiers if tier not in known]
        if unknown:
            problems.append(
                f"motion rule {index}: unknown tier(s) {', '.join(map(repr, unknown))} "
                f"(tiers: {', '.join(known) or 'none'})"
            )
        strange = [segment for segment in rule.segments if segment not in known_segments]
        if strange:
            problems.append(
                f"motion rule {index}: unknown segment(s) {', '.join(map(repr, strange))} "
                f"(segments: {', '.join(known_segments) or 'none: no fit is configured'})"
            )
        if not rule.motion.strip():
            problems.append(f"motion rule {index}: motion is empty")
    by_segment: list[str | None] = list(known_segments) or [None]
    cases = [
        (tier, buyer, segment)
        for tier in known
        for buyer in (True, False)
        for segment in by_segment
    ]
    used: set[int] = set()
    for tier, buyer, segment in cases:
        first = next(
            (i for i, rule in enumerate(rules) if rule.matches(tier, buyer, segment)), None
        )
        if first is None:
            with_ = "with" if buyer else "without"
            where = f" in segment {segment!r}" if segment is not None else ""
            problems.append(f"no motion rule covers tier {tier!r} {with_} a buyer{where}")
        else:
            used.add(first)
    for index, rule in enumerate(rules):
        reachable = any(rule.matches(tier, buyer, segment) for tier, buyer, segment in cases)
        if reachable and index not in used:
            problems.append(
                f"motion rule {index + 1} ({_describe(rule)}) never applies: "
                "earlier rules take every case it matches"
            )
    return problems


# --------------------------------------------------------------------------------------------
# Channel report
# --------------------------------------------------------------------------------------------


def channel_counts(channels: Iterable[str | None]) -> dict[str, int]:
    """Accounts per lead channel, the four channels first in their fixed order, zeros included.

    ``None`` (no channel) is not counted; an unknown channel name is counted after the four,
    in name order, so nothing is silently lost.
    """
    counted = Counter(channel for channel in channels if channel is not None)
    counts = {channel: counted.pop(channel, 0) for channel in LEAD_CHANNELS}
    counts.update(sorted(counted.items()))
    return counts


def abm_list(items: Iterable[tuple[str, str | None, int]], n: int) -> list[tuple[str, int]]:
    """The ABM list: ``usage_no_buyer`` domains from ``(domain, channel, score)``, at most ``n``.

    Highest score first, ties by domain; a domain listed twice (two workspaces of one company)
    appears once, with its best score.
    """
    best: dict[str, int] = {}
    for domain, channel, score in items:
        if channel == USAGE_NO_BUYER and score > best.get(domain, -math.inf):
            best[domain] = score
    ranked = sorted(best.items(), key=lambda item: (-item[1], item[0]))
    return ranked[: max(n, 0)]


# --------------------------------------------------------------------------------------------
# Rep alerts
# --------------------------------------------------------------------------------------------

ALERT_KEY_PREFIX = "pls-sync-alert-key:"
_KEY_LENGTH = 24
_KEY_VERSION = "pls-sync-alert/v2"  # v2: the entry number, not its time
_SUBJECT_MAX = 255  # Salesforce Task.Subject


def alert_key(destination: str, account_key: str, entry: int, tier: str) -> str:
    """A stable 24-hex-digit key for one entry of one account into one tier at one destination.

    ``entry`` counts the account's entries into ``tier`` (1 for the first): it depends only on
    the account's history, never on when a run happened, so a rerun after a crash at any
    point (even hours later, at another ``--as-of``) computes the same key and the task it
    names is created once; a later re-entry gets the next number and a new key.
    """
    payload = json.dumps(
        [_KEY_VERSION, destination.strip().lower(), account_key, int(entry), tier],
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:_KEY_LENGTH]


def _one_line(text: str) -> str:
    """Warehouse text on one line, so it cannot forge a line (such as the key line)."""
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


def _buyer_line(buyer: Buyer) -> str:
    reasons = [_one_line(reason) for reason in buyer.reasons]
    title = _one_line(buyer.title) if buyer.title else ""
    who = _one_line(buyer.email) or f"user {_one_line(buyer.user_id)}"
    if title and not any(reason.startswith(title) for reason in reasons):
        who = f"{who} ({title})"
    because = "; ".join(reason for reason in reasons if reason)
    return f"- {who}: {because}" if because else f"- {who}"


def alert_text(
    domain: str,
    score: int,
    signals: Sequence[str],
    buyers: Sequence[Buyer],
    *,
    max_signals: int = 3,
    tier: str = "sales",
    max_buyers: int = 5,
) -> tuple[str, str]:
    """The CRM task's ``(subject, description)`` for an account that entered ``tier``.

    Subject: ``"PQA: acme.com entered sales (score 86)"`` (at most 255 characters). The
    description gives the score, the top ``max_signals`` signals (with how many more there
    are) and up to ``max_buyers`` likely buyers with their reasons, or says none was found.
    Append the idempotency key with ``with_alert_key``.
    """
    name = _one_line(domain)
    tier_name = _one_line(tier)
    subject = f"PQA: {name} entered {tier_name} (score {score})"[:_SUBJECT_MAX]
    lines = [f"{name} entered the {tier_name} tier with a PQA score of {score}.", ""]
    shown = [_one_line(signal) for signal in signals if _one_line(signal)]
    top = shown[: max(max_signals, 0)]
    if top:
        lines.append("Top signals:")
        lines.extend(f"- {signal}" for signal in top)
        if len(shown) > len(top):
            lines.append(f"- and {len(shown) - len(top)} more")
    else:
        lines.append("Top signals: none")
    lines.append("")
    listed = list(buyers)[: max(max_buyers, 0)]
    if listed:
        lines.append("Likely buyers:")
        lines.extend(_buyer_line(buyer) for buyer in listed)
    else:
        lines.append("Likely buyers: none found among the account's users yet.")
    return subject, "\n".join(lines)


def with_alert_key(description: str, key: str) -> str:
    """``description`` ending with the line ``pls-sync-alert-key: <key>`` (exactly once).

    An existing key line is replaced, so applying it again never stacks keys.
    Raises ``ValueError`` for an empty key or one with whitespace.
    """
    if not key or any(char.isspace() for char in key):
        raise ValueError("an alert key must be non-empty and hold no whitespace")
    kept = [
        line for line in description.splitlines() if not line.strip().startswith(ALERT_KEY_PREFIX)
    ]
    body = "\n".join(kept).rstrip()
    key_line = f"{ALERT_KEY_PREFIX} {key}"
    return f"{body}\n\n{key_line}" if body else key_line


def parse_alert_key(description: str | None) -> str | None:
    """The key of the last ``pls-sync-alert-key:`` line in a task description, if any."""
    if not description:
        return None
    for line in reversed(description.splitlines()):
        text = line.strip()
        if text.startswith(ALERT_KEY_PREFIX):
            return text[len(ALERT_KEY_PREFIX) :].strip() or None
    return None
