"""The made-up company list shared by the demo warehouse and the CRM sandbox."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from pls_sync.demo_companies import PROFILES, DemoCompany, demo_companies, employee_band
from pls_sync.domains import classify_host


def check_invariants(companies: list[DemoCompany]) -> None:
    domains = [c.domain for c in companies]
    assert len(set(domains)) == len(domains)
    for company in companies:
        assert company.name and company.industry
        assert 1 <= company.team_size <= 200
        assert company.employees >= company.team_size
        assert company.profile in PROFILES
        if company.profile == "velocity_spike":
            assert company.team_size >= 8
        if company.profile == "enterprise":
            assert company.team_size >= 30
        assert len(set(company.subdomains)) == len(company.subdomains)
        for host in company.hosts:
            verdict = classify_host(host)
            assert verdict.reason is None and verdict.domain == company.domain


def test_default_list_is_realistic() -> None:
    companies = demo_companies()
    assert len(companies) == 400
    check_invariants(companies)
    sizes = [c.team_size for c in companies]
    assert sum(s <= 3 for s in sizes) > 0.55 * len(sizes)  # most teams are tiny
    assert 5 <= sum(s >= 30 for s in sizes) <= 0.15 * len(sizes)  # a few are large
    assert set(Counter(c.profile for c in companies)) == set(PROFILES)
    suffixes = {c.domain.split(".", 1)[1] for c in companies}
    assert {"com", "io", "co.uk", "com.au", "de", "fr"} <= suffixes
    with_subsidiaries = [c for c in companies if c.subdomains]
    assert len(with_subsidiaries) >= 10
    assert any(c.domain.endswith(".co.uk") for c in with_subsidiaries)


def test_deterministic_and_a_longer_list_extends_a_shorter_one() -> None:
    assert demo_companies(7, 400) == demo_companies(7, 400)
    assert demo_companies(7, 60) == demo_companies(7, 400)[:60]
    assert demo_companies(8, 60) != demo_companies(7, 60)
    assert demo_companies(7, 0) == []


def test_seed_7_is_pinned() -> None:
    """The CRM sandbox seeds accounts from this list: changing it changes every demo."""
    first = demo_companies(7, 3)
    assert [c.domain for c in first] == ["fernleaf.com", "junipership.com", "zephyrmill.co.uk"]
    assert first[1].subdomains == ("na", "eng") and first[1].team_size == 51


def test_large_lists_stay_unique() -> None:
    companies = demo_companies(3, 20_000)
    assert len({c.domain for c in companies}) == 20_000


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32), count=st.integers(min_value=0, max_value=80))
def test_invariants_hold_for_any_seed(seed: int, count: int) -> None:
    companies = demo_companies(seed, count)
    assert len(companies) == count
    check_invariants(companies)


def test_employee_bands() -> None:
    assert [employee_band(n) for n in (1, 10, 11, 200, 201, 5000, 5001)] == [
        "1-10",
        "1-10",
        "11-50",
        "51-200",
        "201-1000",
        "1001-5000",
        "5000+",
    ]
