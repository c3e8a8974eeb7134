"""Tests for lead channels, buyers and motions: persona rules, MQL index, channel, motion, alerts."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pls_sync.channels import (
    ALERT_KEY_PREFIX,
    DEFAULT_MOTIONS,
    LEAD_CHANNELS,
    MQL_ONLY,
    USAGE_MQL,
    USAGE_NO_BUYER,
    USAGE_PQL,
    BehaviourPoints,
    Buyer,
    BuyerBehaviour,
    MotionRule,
    Mql,
    PersonaModel,
    PersonaRule,
    UserProfile,
    abm_list,
    alert_key,
    alert_text,
    channel_counts,
    company_size_lower_bound,
    default_motions,
    default_persona_model,
    index_mqls,
    lead_channel,
    motion_for,
    mql_only_domains,
    parse_alert_key,
    persona_columns,
    persona_model_problems,
    rank_buyers,
    score_user,
    validate_motion_table,
    with_alert_key,
)

TIERS = ("sales", "success", "self_serve")
NO_BEHAVIOUR = BuyerBehaviour()
T0 = datetime(2024, 5, 1, 6, 0, tzinfo=UTC)


def user(
    title: str | None = None,
    *,
    seniority: str | None = None,
    department: str | None = None,
    company_size: str | None = None,
    email: str = "jane@acme.com",
    user_id: str = "u1",
    behaviour: BuyerBehaviour = NO_BEHAVIOUR,
    is_admin: bool = False,
) -> UserProfile:
    """A product user with only the given profile values set."""
    return UserProfile(
        user_id, email, title, seniority, department, company_size, is_admin, behaviour
    )


def model(*rules: PersonaRule, min_score: float = 30, max_buyers: int = 5) -> PersonaModel:
    """A persona model over ``rules`` with the default behaviour points."""
    return PersonaModel(rules, BehaviourPoints(), min_score, max_buyers)


def matches(rule: PersonaRule, profile: UserProfile) -> bool:
    """True when ``rule`` alone gives ``profile`` a reason."""
    return score_user(profile, model(rule))[1] != ()


# ---------------------------------------------------------------------------- persona rules


def test_seniority_criterion_is_case_and_spelling_insensitive() -> None:
    rule = PersonaRule("exec", 40, seniority_in=("VP", "c_level"))
    assert matches(rule, user(seniority="vp"))
    assert matches(rule, user(seniority=" Vp "))
    assert matches(rule, user(seniority="C-Level"))
    assert matches(rule, user(seniority="c level"))
    assert not matches(rule, user(seniority="manager"))
    assert not matches(rule, user(seniority=None))
    assert not matches(rule, user(seniority=""))


def test_department_criterion() -> None:
    rule = PersonaRule("eng", 30, department_in=("engineering", "IT"))
    assert matches(rule, user(department="Engineering"))
    assert matches(rule, user(department="it"))
    assert not matches(rule, user(department="Marketing"))
    assert not matches(rule, user(department=None))


@pytest.mark.parametrize(
    ("pattern", "title", "expected"),
    [
        ("vp*", "VP of Engineering", True),
        ("vp*", "Senior VP, Sales", True),
        ("vp*", "Product Designer", False),
        ("head of*", "Head of   Operations", True),
        ("head of*", "Global Head of IT", True),
        ("head of*", "Headcount Planner", False),
        ("*director*", "IT Director", True),
        ("*director*", "Managing Director", True),
        ("cto", "CTO", True),
        ("cto", "Co-founder & CTO", True),
        ("cto", "CTO/CISO", True),
        ("cto", "Director", False),  # whole words only: "dire-cto-r" is no CTO
        ("cto", "CTO Office Assistant", True),
        ("chief*officer", "Chief Revenue Officer", True),
        ("chief*officer", "Chief of Staff", False),
        ("CHIEF  *  OFFICER", "chief data officer", True),  # pattern spaces normalised too
        ("chief * officer", "Chief Officer", False),
        ("c?o", "CFO", True),
        ("c?o", "Cook", False),
        ("[cr]to", "RTO manager", True),
    ],
)
def test_title_patterns_are_case_insensitive_word_globs(
    pattern: str, title: str, expected: bool
) -> None:
    rule = PersonaRule("titles", 40, title_patterns=(pattern,))
    assert matches(rule, user(title)) is expected


def test_title_pattern_is_glob_not_regex() -> None:
    rule = PersonaRule("titles", 40, title_patterns=("v.*",))
    assert not matches(rule, user("VP Sales"))
    assert matches(rule, user("v.p. sales"))


def test_title_criterion_fails_without_a_title() -> None:
    rule = PersonaRule("titles", 40, title_patterns=("*",))
    assert not matches(rule, user(None))
    assert not matches(rule, user("   "))
    assert matches(rule, user("anything"))


def test_very_long_junk_title_is_bounded_and_still_matches_early_words() -> None:
    rule = PersonaRule("titles", 40, title_patterns=("vp*",))
    assert matches(rule, user("VP " + "x " * 5000))
    assert not matches(rule, user("x " * 5000 + "VP"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1-10", 1),
        ("11-50", 11),
        ("51-200", 51),
        ("201-500", 201),
        ("501-1000", 501),
        ("1001-5000", 1001),
        ("5000+", 5000),
        (" 201\u2013500 ", 201),
        ("1,001-5,000 employees", 1001),
        ("1.001-5.000", 1001),
        ("10k+", 10000),
        ("<10", 1),
        ("200", 200),
        ("50.0", 50),
        (200, 200),
        (75.9, 75),
        ("unknown", None),
        ("", None),
        ("   ", None),
        ("n/a", None),
        ("-5", None),
        (-5, None),
        (float("nan"), None),
        (True, None),
        (None, None),
    ],
)
def test_company_size_lower_bound(value: str | int | float | None, expected: int | None) -> None:
    assert company_size_lower_bound(value) == expected


def test_min_company_size_criterion() -> None:
    rule = PersonaRule("big", 10, seniority_in=("manager",), min_company_size=50)
    assert matches(rule, user(seniority="manager", company_size="51-200"))
    assert matches(rule, user(seniority="manager", company_size="5000+"))
    assert not matches(rule, user(seniority="manager", company_size="11-50"))
    assert not matches(rule, user(seniority="manager", company_size="unknown"))
    assert not matches(rule, user(seniority="manager", company_size=None))
    assert not matches(rule, user(seniority="ic", company_size="5000+"))


def test_every_set_criterion_must_hold() -> None:
    rule = PersonaRule(
        "all",
        30,
        seniority_in=("manager",),
        title_patterns=("*manager*",),
        department_in=("engineering",),
        min_company_size=100,
    )
    good = user("Engineering Manager", seniority="manager", department="Engineering")
    assert matches(rule, replace(good, company_size="201-500"))
    assert not matches(rule, good)  # company size unknown
    sized = replace(good, company_size="201-500")
    for broken in (
        replace(sized, title="Engineer"),
        replace(sized, seniority="ic"),
        replace(sized, department="Sales"),
        replace(sized, company_size="11-50"),
    ):
        assert not matches(rule, broken), broken


def test_rule_reason_names_title_and_matched_criteria() -> None:
    rule = PersonaRule("exec", 40, seniority_in=("vp",), label="executive")
    assert score_user(user("VP of Engineering", seniority="vp"), model(rule)) == (
        40.0,
        ("VP of Engineering (seniority vp)",),
    )
    # Without a title the label names the persona.
    assert score_user(user(None, seniority="vp"), model(rule)) == (
        40.0,
        ("executive (seniority vp)",),
    )
    titled = PersonaRule("t", 40, title_patterns=("vp*",))
    _, reasons = score_user(user("VP  Sales"), model(titled))
    assert reasons == ("VP Sales (title matches 'vp*')",)


def test_best_rule_wins_and_ties_go_to_the_first_rule() -> None:
    low = PersonaRule("low", 10, department_in=("engineering",), label="low")
    high = PersonaRule("high", 40, seniority_in=("vp",), label="high")
    tie = PersonaRule("tie", 40, title_patterns=("vp*",), label="tie")
    profile = user("VP Eng", seniority="vp", department="engineering")
    score, reasons = score_user(profile, model(low, high, tie))
    assert score == 40
    assert reasons == ("VP Eng (seniority vp)",)
    score, reasons = score_user(profile, model(low, tie, high))
    assert reasons == ("VP Eng (title matches 'vp*')",)


# ---------------------------------------------------------------------------- behaviour


def test_behaviour_points_each_kind_once_with_reasons() -> None:
    points = BehaviourPoints(legal_page_view=30, became_admin=25, pricing_page_view=10)
    persona = PersonaModel((), points)
    assert score_user(user(), persona) == (0.0, ())
    legal = user(behaviour=BuyerBehaviour(legal_page_views=2))
    assert score_user(legal, persona) == (30.0, ("viewed the Terms of Use 2x",))
    admin = user(behaviour=BuyerBehaviour(became_admin=True))
    assert score_user(admin, persona) == (25.0, ("became admin",))
    pricing = user(behaviour=BuyerBehaviour(pricing_page_views=12))
    assert score_user(pricing, persona) == (10.0, ("viewed pricing 12x",))
    everything = user(behaviour=BuyerBehaviour(3, True, 1))
    assert score_user(everything, persona) == (
        65.0,
        ("viewed the Terms of Use 3x", "became admin", "viewed pricing 1x"),
    )


def test_behaviour_points_are_configurable_and_add_to_the_persona() -> None:
    rule = PersonaRule("exec", 40, seniority_in=("vp",))
    persona = PersonaModel((rule,), BehaviourPoints(legal_page_view=7, became_admin=0))
    profile = user("VP", seniority="vp", behaviour=BuyerBehaviour(1, True, 0))
    score, reasons = score_user(profile, persona)
    assert score == 47
    assert reasons == ("VP (seniority vp)", "viewed the Terms of Use 1x", "became admin")


def test_being_admin_is_not_a_buyer_tell() -> None:
    assert score_user(user(is_admin=True), default_persona_model()) == (0.0, ())


def test_negative_counts_count_for_nothing() -> None:
    profile = user(behaviour=BuyerBehaviour(legal_page_views=-3, pricing_page_views=-1))
    assert score_user(profile, default_persona_model()) == (0.0, ())


# ---------------------------------------------------------------------------- default model


@pytest.mark.parametrize(
    ("title", "seniority", "department", "size", "points"),
    [
        ("VP Engineering", "vp", "Engineering", None, 40),
        ("CTO", "c_level", "Engineering", "1-10", 40),
        ("Founder & CEO", "owner", "Executive", None, 40),
        ("Head of Data", None, None, None, 40),  # the title alone
        ("Chief Revenue Officer", "ic", "Sales", None, 40),
        ("Engineering Manager", "manager", "Engineering", "11-50", 30),
        ("Engineering Manager", "manager", "Engineering", "51-200", 35),
        ("Operations Manager", "manager", "Operations", None, 30),
        ("Marketing Manager", "manager", "Marketing", "5000+", 0),
        ("Customer Success Manager", "ic", "Customer Success", "5000+", 0),
        ("Software Engineer", "ic", "Engineering", "5000+", 0),
        (None, None, None, "5000+", 0),  # company size adds nothing alone
    ],
)
def test_default_persona_model(
    title: str | None, seniority: str | None, department: str | None, size: str | None, points: int
) -> None:
    profile = user(title, seniority=seniority, department=department, company_size=size)
    score, _ = score_user(profile, default_persona_model())
    assert score == points


def test_default_persona_model_is_sound() -> None:
    persona = default_persona_model()
    assert persona_model_problems(persona) == []
    assert persona.min_buyer_score == 30 and persona.max_buyers == 5
    assert persona_columns(persona.rules) == {"seniority", "title", "department", "company_size"}
    # A legal page view marks a buyer alone; becoming admin needs one more tell.
    assert rank_buyers([user(behaviour=BuyerBehaviour(legal_page_views=1))], persona)
    assert not rank_buyers([user(behaviour=BuyerBehaviour(became_admin=True))], persona)
    both = BuyerBehaviour(became_admin=True, pricing_page_views=1)
    assert rank_buyers([user(behaviour=both)], persona)


def test_persona_model_problems() -> None:
    persona = PersonaModel(
        (
            PersonaRule("", 10, seniority_in=("vp",)),
            PersonaRule("anyone", 10),
            PersonaRule("dup", -1, department_in=("it", " ")),
            PersonaRule("dup", 5, title_patterns=("vp*",), min_company_size=-2),
        ),
        BehaviourPoints(legal_page_view=float("nan")),
        max_buyers=-1,
    )
    problems = persona_model_problems(persona)
    assert problems == [
        "persona rule 1: name is empty",
        "persona rule 2 ('anyone'): sets no criterion, so it matches every user",
        "persona rule 3 ('dup'): points must be a number >= 0, got -1",
        "persona rule 3 ('dup'): department_in holds an empty value",
        "persona rule 4 ('dup'): duplicate name",
        "persona rule 4 ('dup'): min_company_size must be >= 0",
        "behaviour points legal_page_view must be a number >= 0, got nan",
        "max_buyers must be >= 0, got -1",
    ]


def test_persona_columns_lists_only_what_rules_read() -> None:
    rules = (
        PersonaRule("a", 1, title_patterns=("vp*",)),
        PersonaRule("b", 1, min_company_size=10, department_in=("it",)),
    )
    assert persona_columns(rules) == {"title", "company_size", "department"}
    assert persona_columns(()) == frozenset()


# ---------------------------------------------------------------------------- ranking


def test_rank_buyers_threshold_order_and_cap() -> None:
    rule = PersonaRule("exec", 40, seniority_in=("vp", "director"))
    legal = BuyerBehaviour(legal_page_views=1)
    users = [
        user("Engineer", email="eve@acme.com", user_id="1"),  # 0: not a buyer
        user("VP", seniority="vp", email="zed@acme.com", user_id="2"),  # 40
        user("VP", seniority="vp", email="amy@acme.com", user_id="3"),  # 40, before zed
        user("Dir", seniority="director", email="bob@acme.com", user_id="4", behaviour=legal),
        user("Analyst", email="cat@acme.com", user_id="5", behaviour=legal),  # 30: exactly min
        user("Intern", email="dan@acme.com", user_id="6", behaviour=BuyerBehaviour(0, True, 0)),
    ]
    buyers = rank_buyers(users, model(rule))
    assert [(b.email, b.score) for b in buyers] == [
        ("bob@acme.com", 70),
        ("amy@acme.com", 40),
        ("zed@acme.com", 40),
        ("cat@acme.com", 30),
    ]
    assert buyers[0] == Buyer(
        "4", "bob@acme.com", "Dir", 70, ("Dir (seniority director)", "viewed the Terms of Use 1x")
    )
    assert [b.email for b in rank_buyers(users, model(rule, max_buyers=2))] == [
        "bob@acme.com",
        "amy@acme.com",
    ]
    assert rank_buyers(users, model(rule, max_buyers=0)) == ()
    assert [b.email for b in rank_buyers(users, model(rule, min_score=41))] == ["bob@acme.com"]


def test_rank_buyers_lists_a_person_once_with_their_best_score() -> None:
    rule = PersonaRule("exec", 40, seniority_in=("vp",))
    users = [
        user("VP", seniority="vp", email="Jane@Acme.com", user_id="w1"),
        user(
            "VP",
            seniority="vp",
            email="jane@acme.com",
            user_id="w2",
            behaviour=BuyerBehaviour(legal_page_views=1),
        ),
        user("VP", seniority="vp", email="", user_id="a"),
        user("VP", seniority="vp", email="", user_id="b"),
    ]
    buyers = rank_buyers(users, model(rule))
    assert [(b.user_id, b.score) for b in buyers] == [("w2", 70), ("a", 40), ("b", 40)]


def test_rank_buyers_with_zero_threshold_still_needs_a_reason() -> None:
    rule = PersonaRule("exec", 0, seniority_in=("vp",))
    users = [user(seniority="vp", user_id="1", email="a@x.io"), user(user_id="2", email="b@x.io")]
    assert [b.user_id for b in rank_buyers(users, model(rule, min_score=0))] == ["1"]


_profiles = st.builds(
    UserProfile,
    user_id=st.text("abc123", min_size=1, max_size=4),
    email=st.sampled_from(["", "a@x.io", "B@x.io", "b@x.io", "c@x.io", "d@y.io"]),
    title=st.one_of(
        st.none(), st.sampled_from(["VP Sales", "CTO", "Engineer", "Head of IT", "Director"])
    ),
    seniority=st.one_of(st.none(), st.sampled_from(["vp", "ic", "manager", "C-Level"])),
    department=st.one_of(st.none(), st.sampled_from(["Engineering", "IT", "Sales"])),
    company_size=st.one_of(st.none(), st.sampled_from(["1-10", "51-200", "5000+", "junk"])),
    is_admin=st.booleans(),
    behaviour=st.builds(
        BuyerBehaviour,
        legal_page_views=st.integers(-1, 5),
        became_admin=st.booleans(),
        pricing_page_views=st.integers(-1, 5),
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    users=st.lists(_profiles, max_size=15),
    max_buyers=st.integers(0, 6),
    min_score=st.sampled_from([0, 10, 30, 45, 80]),
)
def test_rank_buyers_properties(users: list[UserProfile], max_buyers: int, min_score: int) -> None:
    persona = PersonaModel(default_persona_model().rules, BehaviourPoints(), min_score, max_buyers)
    buyers = rank_buyers(users, persona)
    assert len(buyers) <= max_buyers
    keys = [(-b.score, b.email.lower(), b.user_id) for b in buyers]
    assert keys == sorted(keys)
    identities = [b.email.lower() or f"id:{b.user_id}" for b in buyers]
    assert len(set(identities)) == len(identities)
    by_id = {u.user_id: u for u in users}
    for buyer in buyers:
        assert buyer.score >= min_score and buyer.reasons
        assert any(
            score_user(u, persona) == (buyer.score, buyer.reasons)
            for u in users
            if u.user_id == buyer.user_id
        )
        assert buyer.user_id in by_id
    # The order users arrive in changes nothing but which of equal duplicates is kept.
    again = rank_buyers(list(reversed(users)), persona)
    assert [(b.email.lower(), b.score) for b in again if b.email] == [
        (b.email.lower(), b.score) for b in buyers if b.email
    ]


# ---------------------------------------------------------------------------- MQL index


def fake_classify(email: str) -> tuple[str | None, str | None]:
    """A stand-in for ``classify_host``: free mail, disposable, junk, subdomains folded."""
    if "@" not in email:
        return None, "invalid"
    host = email.rsplit("@", 1)[1].lower()
    if host in {"gmail.com", "outlook.com"}:
        return host, "free_mail"
    if host == "mailinator.com":
        return host, "disposable"
    return ".".join(host.split(".")[-2:]), None


def test_index_mqls_keys_by_domain_and_counts_skips() -> None:
    index = index_mqls(
        [
            ("salesforce_lead", "00Q1", "Jane@Eng.Acme.com"),
            ("hubspot_contact", "101", "bob@acme.com"),
            ("salesforce_contact", "0031", "amy@globex.io"),
            ("salesforce_lead", "00Q2", "joe@gmail.com"),
            ("hubspot_contact", "102", "sue@outlook.com"),
            ("hubspot_contact", "103", "x@mailinator.com"),
            ("salesforce_lead", "00Q3", "not an email"),
            ("salesforce_lead", "00Q4", "   "),
            ("salesforce_lead", "00Q1", "Jane@Eng.Acme.com"),  # read twice
        ],
        fake_classify,
    )
    assert index.by_domain == {
        "acme.com": [
            Mql("salesforce_lead", "00Q1", "jane@eng.acme.com", "acme.com"),
            Mql("hubspot_contact", "101", "bob@acme.com", "acme.com"),
        ],
        "globex.io": [Mql("salesforce_contact", "0031", "amy@globex.io", "globex.io")],
    }
    assert index.skipped == {"disposable": 1, "duplicate": 1, "free_mail": 2, "invalid": 2}
    assert index.indexed == 3
    assert index.has("ACME.com") and not index.has("initech.com")
    assert [m.record_id for m in index.at("globex.io")] == ["0031"]
    assert index.at("initech.com") == []


def test_index_mqls_treats_a_domainless_verdict_as_invalid() -> None:
    index = index_mqls([("hubspot_contact", "1", "a@b")], lambda email: (None, None))
    assert index.by_domain == {} and index.skipped == {"invalid": 1}


def test_same_record_id_in_two_sources_is_two_mqls() -> None:
    index = index_mqls(
        [("salesforce_lead", "1", "a@acme.com"), ("hubspot_contact", "1", "a@acme.com")],
        fake_classify,
    )
    assert index.indexed == 2 and index.skipped == {}


def test_mql_only_domains() -> None:
    index = index_mqls(
        [("salesforce_lead", str(i), f"x@{d}") for i, d in enumerate(["b.io", "a.io", "c.io"])],
        fake_classify,
    )
    assert mql_only_domains(index, ["C.io", "z.io"]) == ["a.io", "b.io"]


# ---------------------------------------------------------------------------- lead channel


@pytest.mark.parametrize(
    ("usage", "buyer", "mql", "channel"),
    [
        (True, True, True, USAGE_PQL),
        (True, True, False, USAGE_PQL),
        (True, False, True, USAGE_MQL),
        (True, False, False, USAGE_NO_BUYER),
        (False, False, True, MQL_ONLY),
        (False, True, True, MQL_ONLY),
        (False, False, False, None),
        (False, True, False, None),
    ],
)
def test_lead_channel_every_combination(
    usage: bool, buyer: bool, mql: bool, channel: str | None
) -> None:
    assert lead_channel(usage, buyer, mql) == channel


def test_lead_channel_constants() -> None:
    assert LEAD_CHANNELS == ("usage_pql", "usage_mql", "mql_only", "usage_no_buyer")


# ---------------------------------------------------------------------------- motion


@pytest.mark.parametrize(
    ("tier", "buyer", "motion"),
    [
        ("sales", True, "sales"),
        ("sales", False, "abm"),
        ("success", True, "success"),
        ("success", False, "self_serve"),
        ("self_serve", True, "success"),
        ("self_serve", False, "self_serve"),
    ],
)
def test_default_motion_table(tier: str, buyer: bool, motion: str) -> None:
    assert motion_for(tier, buyer, DEFAULT_MOTIONS) == motion


def test_default_motions_follow_the_qualified_tiers() -> None:
    rules = default_motions(("sales", "success"))
    assert motion_for("success", True, rules) == "sales"
    assert motion_for("success", False, rules) == "abm"
    assert motion_for("self_serve", True, rules) == "success"
    assert validate_motion_table(rules, TIERS) == []


def test_custom_motion_table_first_match_wins() -> None:
    rules = (
        MotionRule(("sales", "success"), True, "sales"),
        MotionRule(("sales",), None, "abm"),
        MotionRule((), False, "nurture"),
        MotionRule((), None, "self_serve"),
    )
    assert validate_motion_table(rules, TIERS) == []
    assert [motion_for(t, b, rules) for t, b in itertools.product(TIERS, (True, False))] == [
        "sales",
        "abm",
        "sales",
        "nurture",
        "self_serve",
        "nurture",
    ]


def test_motion_for_without_a_matching_rule_raises() -> None:
    rules = (MotionRule(("sales",), None, "sales"),)
    with pytest.raises(ValueError, match="'success' without a buyer"):
        motion_for("success", False, rules)


def test_default_motion_table_is_complete() -> None:
    assert validate_motion_table(DEFAULT_MOTIONS, TIERS) == []


def test_validate_motion_table_problems() -> None:
    rules = (
        MotionRule(("sales", "enterprise"), True, "sales"),
        MotionRule(("sales",), True, "duplicate"),  # shadowed by rule 1
        MotionRule(("success",), None, " "),
        MotionRule(("ghost",), None, "abm"),  # unknown only: reported once, not as shadowed
    )
    assert validate_motion_table(rules, TIERS) == [
        "motion rule 1: unknown tier(s) 'enterprise' (tiers: sales, success, self_serve)",
        "motion rule 3: motion is empty",
        "motion rule 4: unknown tier(s) 'ghost' (tiers: sales, success, self_serve)",
        "no motion rule covers tier 'sales' without a buyer",
        "no motion rule covers tier 'self_serve' with a buyer",
        "no motion rule covers tier 'self_serve' without a buyer",
        "motion rule 2 (tier sales, buyer -> duplicate) never applies: "
        "earlier rules take every case it matches",
    ]


def test_validate_empty_motion_table_reports_every_gap() -> None:
    problems = validate_motion_table((), ("sales", "self_serve"))
    assert len(problems) == 4 and all(p.startswith("no motion rule covers") for p in problems)


# ---------------------------------------------------------------------------- report


def test_channel_counts_fixed_order_with_zeros() -> None:
    counts = channel_counts([USAGE_NO_BUYER, None, USAGE_PQL, USAGE_NO_BUYER, MQL_ONLY])
    assert list(counts.items()) == [
        ("usage_pql", 1),
        ("usage_mql", 0),
        ("mql_only", 1),
        ("usage_no_buyer", 2),
    ]
    assert channel_counts([]) == dict.fromkeys(LEAD_CHANNELS, 0)


def test_channel_counts_keeps_unknown_channels_after_the_four() -> None:
    counts = channel_counts(["zeta", USAGE_MQL, "alpha", "zeta"])
    assert list(counts) == [*LEAD_CHANNELS, "alpha", "zeta"]
    assert counts["zeta"] == 2 and counts["usage_mql"] == 1


def test_abm_list_orders_by_score_then_domain() -> None:
    items = [
        ("b.io", USAGE_NO_BUYER, 50),
        ("a.io", USAGE_NO_BUYER, 50),
        ("c.io", USAGE_NO_BUYER, 90),
        ("d.io", USAGE_PQL, 99),
        ("e.io", None, 99),
        ("f.io", USAGE_NO_BUYER, 10),
        ("b.io", USAGE_NO_BUYER, 70),  # a second workspace of b.io
    ]
    assert abm_list(items, 10) == [("c.io", 90), ("b.io", 70), ("a.io", 50), ("f.io", 10)]
    assert abm_list(items, 2) == [("c.io", 90), ("b.io", 70)]
    assert abm_list(items, 0) == []
    assert abm_list(items, -1) == []


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.tuples(
            st.sampled_from(["a.io", "b.io", "c.io", "d.io"]),
            st.one_of(st.none(), st.sampled_from(LEAD_CHANNELS)),
            st.integers(0, 100),
        ),
        max_size=20,
    ),
    n=st.integers(0, 5),
)
def test_abm_list_properties(items: list[tuple[str, str | None, int]], n: int) -> None:
    listed = abm_list(items, n)
    assert len(listed) <= n
    assert listed == sorted(listed, key=lambda item: (-item[1], item[0]))
    eligible = {(d, s) for d, c, s in items if c == USAGE_NO_BUYER}
    assert all(item in eligible for item in listed)
    assert len({d for d, _ in listed}) == len(listed)
    assert sum(channel_counts(c for _, c, _ in items).values()) == sum(
        1 for _, c, _ in items if c is not None
    )


# ---------------------------------------------------------------------------- alerts


def test_alert_key_is_stable_and_short() -> None:
    key = alert_key("salesforce", "acme.com", 1, "sales")
    assert key == alert_key("salesforce", "acme.com", 1, "sales")
    assert len(key) == 24 and int(key, 16) >= 0
    assert key == alert_key(" Salesforce ", "acme.com", 1, "sales")


def test_alert_key_differs_for_another_entry() -> None:
    key = alert_key("salesforce", "acme.com", 1, "sales")
    others = {
        alert_key("salesforce", "acme.com", 2, "sales"),  # the account's second entry
        alert_key("hubspot", "acme.com", 1, "sales"),
        alert_key("salesforce", "globex.io", 1, "sales"),
        alert_key("salesforce", "acme.com", 1, "success"),
        # Values are encoded unambiguously: moving text between fields is another key.
        alert_key("salesforce", "acme.com|x", 1, "sales"),
    }
    assert key not in others and len(others) == 5


def test_alert_text_subject_signals_and_buyers() -> None:
    buyers = [
        Buyer(
            "u1",
            "jane@acme.com",
            "VP of Engineering",
            70,
            ("VP of Engineering (seniority vp)", "viewed the Terms of Use 2x"),
        ),
        Buyer("u2", "bob@acme.com", "Engineer", 30, ("viewed the Terms of Use 1x",)),
    ]
    signals = [
        "12 active users",
        "Viewed pricing 3x in 14 days",
        "Used 2 enterprise features",
        "Admin transferred",
        "Velocity spike",
    ]
    subject, description = alert_text("acme.com", 86, signals, buyers)
    assert subject == "PQA: acme.com entered sales (score 86)"
    lines = description.splitlines()
    assert lines[0] == "acme.com entered the sales tier with a PQA score of 86."
    assert lines[lines.index("Top signals:") + 1 : lines.index("Top signals:") + 5] == [
        "- 12 active users",
        "- Viewed pricing 3x in 14 days",
        "- Used 2 enterprise features",
        "- and 2 more",
    ]
    assert "Admin transferred" not in description
    assert lines[lines.index("Likely buyers:") + 1 :] == [
        "- jane@acme.com: VP of Engineering (seniority vp); viewed the Terms of Use 2x",
        "- bob@acme.com (Engineer): viewed the Terms of Use 1x",
    ]
    assert ALERT_KEY_PREFIX not in description


def test_alert_text_without_signals_or_buyers_and_with_limits() -> None:
    subject, description = alert_text("globex.io", 81, [], [], tier="enterprise")
    assert subject == "PQA: globex.io entered enterprise (score 81)"
    assert "Top signals: none" in description
    assert "Likely buyers: none found among the account's users yet." in description
    buyers = [Buyer(str(i), f"p{i}@g.io", None, 40, ("r",)) for i in range(4)]
    _, description = alert_text("g.io", 90, ["a", "b"], buyers, max_signals=1, max_buyers=2)
    assert "- a\n- and 1 more" in description
    assert "p1@g.io" in description and "p2@g.io" not in description


def test_alert_text_keeps_warehouse_text_on_one_line() -> None:
    forged = f"VP\n{ALERT_KEY_PREFIX} deadbeef"
    buyers = [Buyer("u1", "a@acme.com", forged, 40, (f"{forged} (seniority vp)",))]
    subject, description = alert_text("acme.com\n", 80, [f"signal\r\n{ALERT_KEY_PREFIX} x"], buyers)
    assert "\n" not in subject
    assert parse_alert_key(description) is None
    assert parse_alert_key(with_alert_key(description, "abc")) == "abc"


def test_alert_subject_fits_a_salesforce_task() -> None:
    subject, _ = alert_text("a" * 400 + ".com", 99, [], [])
    assert len(subject) == 255


def test_with_alert_key_appends_once() -> None:
    key = alert_key("hubspot", "acme.com", 1, "sales")
    _, description = alert_text("acme.com", 86, ["s"], [])
    keyed = with_alert_key(description, key)
    assert keyed.startswith(description)
    assert keyed.endswith(f"\n\n{ALERT_KEY_PREFIX} {key}")
    assert with_alert_key(keyed, key) == keyed
    rekeyed = with_alert_key(keyed, "other")
    assert parse_alert_key(rekeyed) == "other" and key not in rekeyed
    assert with_alert_key("", key) == f"{ALERT_KEY_PREFIX} {key}"
    assert parse_alert_key(keyed) == key
    assert parse_alert_key(None) is None and parse_alert_key("no key here") is None


@pytest.mark.parametrize("bad", ["", "a b", "abc\n"])
def test_with_alert_key_refuses_bad_keys(bad: str) -> None:
    with pytest.raises(ValueError):
        with_alert_key("text", bad)
