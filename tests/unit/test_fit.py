"""Fit segments: company size from the CRM, a model metric or sign-up bands; the motion table
routes by segment; a destination's CRM employee count refits its accounts."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pls_sync.channels import MotionRule, default_persona_model, motion_for, validate_motion_table
from pls_sync.enrich import enrich, refit_with_crm
from pls_sync.fit import (
    DEFAULT_FIT,
    SOURCE_CRM,
    SOURCE_METRIC,
    SOURCE_SIGNUPS,
    Fit,
    FitModel,
    FitSegment,
    account_fit,
    crm_employees,
    employees_from_bands,
    segment_for,
)
from pls_sync.matching import build_index, match_accounts
from pls_sync.models import CrmRecord, ProductAccount
from pls_sync.planning import AccountResult
from pls_sync.ports import AccountState
from pls_sync.scoring import AccountScore

PLAYBOOK = (
    MotionRule(("sales",), None, "self_serve", ("smb",)),
    MotionRule(("sales",), True, "sales"),
    MotionRule((), True, "success"),
    MotionRule(("sales",), False, "abm"),
    MotionRule((), None, "self_serve"),
)


@pytest.mark.parametrize(
    ("employees", "segment"),
    [
        (None, "unknown"),
        (0, "smb"),
        (99, "smb"),
        (100, "mid_market"),
        (999.5, "mid_market"),
        (1000, "enterprise"),
        (250_000, "enterprise"),
        (-3, "unknown"),
        (float("nan"), "unknown"),
    ],
)
def test_segments_start_at_their_bounds(employees: float | None, segment: str) -> None:
    assert segment_for(employees, DEFAULT_FIT) == segment


def test_segments_are_held_largest_first_whatever_their_order() -> None:
    model = FitModel((FitSegment("small", 0), FitSegment("big", 500)), unknown="n/a")
    assert model.names == ("big", "small", "n/a")
    assert segment_for(600, model) == "big" and segment_for(None, model) == "n/a"


def test_the_band_most_users_chose_wins_ties_to_the_larger() -> None:
    assert employees_from_bands({"51-200": 3, "1-10": 1}) == 51
    assert employees_from_bands({"51-200": 2, "1001-5000": 2}) == 1001
    assert employees_from_bands({"1,001-5,000 employees": 1, "junk": 9}) == 1001
    assert employees_from_bands({"unknown": 4}) is None and employees_from_bands({}) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (250, 250.0),
        ("1,200", 1200.0),
        (" 40 ", 40.0),
        ("", None),
        (None, None),
        ("many", None),
        (True, None),
        (-1, None),
        ("nan", None),
    ],
)
def test_crm_employee_counts_read_as_numbers(value: object, expected: float | None) -> None:
    assert crm_employees(value) == expected


def test_the_crm_is_trusted_before_the_model_metric_before_sign_ups() -> None:
    bands = {"1-10": 5}
    assert account_fit(DEFAULT_FIT, crm=(None, "1500"), metric=50, bands=bands) == Fit(
        "enterprise", 1500, SOURCE_CRM
    )
    assert account_fit(DEFAULT_FIT, crm=("",), metric=150, bands=bands) == Fit(
        "mid_market", 150, SOURCE_METRIC
    )
    assert account_fit(DEFAULT_FIT, bands=bands) == Fit("smb", 1, SOURCE_SIGNUPS)
    assert account_fit(DEFAULT_FIT) == Fit("unknown")
    assert (
        Fit("mid_market", 250, SOURCE_CRM).describe() == "mid_market (250 employees, from the CRM)"
    )


def test_the_motion_table_routes_by_segment() -> None:
    assert motion_for("sales", True, PLAYBOOK, "smb") == "self_serve"
    assert motion_for("sales", True, PLAYBOOK, "mid_market") == "sales"
    assert motion_for("sales", False, PLAYBOOK, "unknown") == "abm"
    assert motion_for("sales", True, PLAYBOOK) == "sales"  # no fit: segment rows never apply
    assert (
        validate_motion_table(PLAYBOOK, ("sales", "success", "self_serve"), DEFAULT_FIT.names) == []
    )


def test_a_motion_table_naming_unknown_segments_or_leaving_gaps_is_refused() -> None:
    rules = (MotionRule((), None, "x", ("giant",)),)
    problems = validate_motion_table(rules, ("sales",), DEFAULT_FIT.names)
    assert any("unknown segment(s) 'giant'" in p for p in problems)
    assert any(
        "no motion rule covers tier 'sales' with a buyer in segment 'smb'" in p for p in problems
    )
    without_fit = validate_motion_table(rules, ("sales",))
    assert any("none: no fit is configured" in p for p in without_fit)


@given(
    segments=st.dictionaries(
        st.sampled_from(["a", "b", "c", "d"]), st.integers(1, 10_000), min_size=0, max_size=3
    ),
    employees=st.floats(0, 1e6),
    more=st.floats(0, 1e6),
)
def test_a_larger_company_never_lands_in_a_smaller_segment(
    segments: dict[str, int], employees: float, more: float
) -> None:
    model = FitModel((FitSegment("base", 0), *(FitSegment(n, b) for n, b in segments.items())))
    bound = {s.name: s.min_employees for s in model.segments}
    assert bound[segment_for(employees + more, model)] >= bound[segment_for(employees, model)]


def _result(key: str, tier: str = "sales", buyers: tuple[str, ...] = ("cto@x",)) -> AccountResult:
    account = ProductAccount(key, key, {"active_users_28d": 9.0})
    score = AccountScore(key, key, 85, tier, tier, (), ())
    return AccountResult(account, score, AccountState(key, 85, tier), buyers=buyers)


def test_enrich_fits_each_account_and_routes_its_motion() -> None:
    results = [_result("small.com"), _result("big.com"), _result("nobody.com")]
    results.append(
        replace(
            _result("model.com"),
            account=ProductAccount("model.com", "model.com", {"employees": 300.0}),
        )
    )
    done = enrich(
        results,
        candidates=None,
        persona=default_persona_model(),
        mqls=[],
        classify=lambda email: (email.split("@")[-1], None),
        motions=PLAYBOOK,
        fit=DEFAULT_FIT,
        company_sizes={"small.com": {"1-10": 3}, "big.com": {"1001-5000": 2, "11-50": 1}},
    )
    by_key = {r.account.key: r for r in done.results}
    assert by_key["small.com"].fit == Fit("smb", 1, SOURCE_SIGNUPS)
    assert by_key["small.com"].motion == "self_serve"  # SMB stays self-serve
    assert by_key["big.com"].fit == Fit("enterprise", 1001, SOURCE_SIGNUPS)
    assert by_key["big.com"].motion == "abm"  # a PQA with no buyer yet
    assert by_key["nobody.com"].fit == Fit("unknown")
    assert by_key["model.com"].fit == Fit("mid_market", 300, SOURCE_METRIC)
    fit = done.summary()["fit"]
    assert fit["segments"] == {"smb": 1, "enterprise": 1, "unknown": 1, "mid_market": 1}
    assert fit["by_tier"] == {"sales": fit["segments"]}
    without = enrich(
        results,
        candidates=None,
        persona=default_persona_model(),
        mqls=[],
        classify=lambda email: (email, None),
        motions=PLAYBOOK,
    )
    assert all(r.fit is None for r in without.results) and "fit" not in without.summary()


def test_refit_with_crm_takes_the_records_employee_count() -> None:
    results = [
        replace(_result("acme.com"), fit=Fit("smb", 5, SOURCE_SIGNUPS), motion="self_serve"),
        replace(_result("beta.io"), fit=Fit("smb", 5, SOURCE_SIGNUPS), motion="self_serve"),
    ]
    records = {
        "001A": CrmRecord("001A", ("acme.com",), {"NumberOfEmployees": 450}),
        "001B": CrmRecord("001B", ("beta.io",), {"NumberOfEmployees": None}),
    }
    report = match_accounts(
        [("acme.com", "acme.com", 85.0), ("beta.io", "beta.io", 85.0)],
        build_index(records.values()),
        "skip",
    )
    acme, beta = refit_with_crm(
        results, report, records, "NumberOfEmployees", DEFAULT_FIT, PLAYBOOK
    )
    assert acme.fit == Fit("mid_market", 450, SOURCE_CRM) and acme.motion == "sales"
    assert beta is results[1]  # no count in the CRM: the sign-up fit stands
    unchanged = refit_with_crm(results, report, records, None, DEFAULT_FIT, PLAYBOOK)
    assert unchanged == results
