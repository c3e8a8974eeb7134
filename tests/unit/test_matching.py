"""Matching product accounts to CRM records: index, on_multiple rules, conflicts, report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pls_sync.matching import (
    AMBIGUOUS_RESOLVED,
    AMBIGUOUS_SKIPPED,
    CONFLICT_LOST,
    MATCHED,
    STATUSES,
    UNMATCHED,
    Match,
    build_index,
    match_accounts,
    resolve,
)
from pls_sync.models import CrmRecord

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def rec(
    record_id: str,
    *domain_values: str,
    modified: datetime | None = None,
    parent: str | None = None,
) -> CrmRecord:
    return CrmRecord(
        id=record_id,
        domain_values=domain_values,
        fields={},
        last_modified=modified,
        parent_id=parent,
    )


# --- index ------------------------------------------------------------------------------------


def test_index_normalises_splits_and_counts_junk() -> None:
    index = build_index(
        [
            rec("a", "https://www.Acme.com/about", "acme.com"),
            rec("b", "eng.beta.co.uk; beta.de, https://beta.fr"),
            rec("c", "n/a", "localhost"),
            rec("d"),
            rec("e", "", "   "),
            rec("f", "gamma.io junk..value 10.0.0.1"),
        ]
    )
    assert [r.id for r in index.candidates("acme.com")] == ["a"]
    assert [r.id for r in index.candidates("beta.co.uk")] == ["b"]
    assert [r.id for r in index.candidates("beta.de")] == ["b"]
    assert [r.id for r in index.candidates("beta.fr")] == ["b"]
    assert [r.id for r in index.candidates("gamma.io")] == ["f"]
    assert index.candidates("unknown.com") == ()
    assert "acme.com" in index and "unknown.com" not in index
    assert len(index) == 5  # acme.com, beta.co.uk, beta.de, beta.fr, gamma.io
    assert set(index.records) == {"a", "b", "c", "d", "e", "f"}
    assert index.invalid_values == 4  # n/a, localhost, junk..value, 10.0.0.1
    assert index.refused == {"invalid": 4}
    assert index.records_without_domain == 3  # c, d, e
    assert index.domains_of("a") == ("acme.com",)
    assert index.domains_of("b") == ("beta.co.uk", "beta.de", "beta.fr")
    assert index.domains_of("c") == ()
    assert index.domains_of("missing") == ()


def test_index_refuses_platform_and_shared_hosting_values_with_their_reason() -> None:
    index = build_index(
        [
            rec("acme", "https://www.linkedin.com/company/acme-corp", "acme.com/linkedin"),
            rec("gamma", "https://sites.google.com/view/gamma"),
            rec("delta", "delta.github.io; https://twitter.com/delta"),
            rec("eng", "eng.acme.co.uk", "bit.ly/acme"),
        ]
    )
    assert index.domains_of("acme") == ("acme.com",)
    assert index.domains_of("gamma") == ()
    assert index.domains_of("delta") == ()
    assert index.domains_of("eng") == ("acme.co.uk",)
    for platform in ("linkedin.com", "google.com", "github.io", "twitter.com", "bit.ly"):
        assert platform not in index
    assert index.refused == {"platform_host": 3, "shared_hosting": 2}
    assert index.invalid_values == 0
    assert index.records_without_domain == 2  # gamma, delta

    # LinkedIn's own people no longer land on Acme's record (issue 12, case 5)
    report = match_accounts(
        [("linkedin.com", "linkedin.com", 90.0), ("acme.com", "acme.com", 10.0)], index, "skip"
    )
    assert report.matches["linkedin.com"].status == UNMATCHED
    assert report.record_for("acme.com") == "acme"
    counts = report.counts()
    assert counts["crm_refused_platform_host"] == 3
    assert counts["crm_refused_shared_hosting"] == 2
    assert counts["crm_refused_invalid"] == 0


def test_index_keeps_first_copy_of_a_repeated_record() -> None:
    index = build_index([rec("a", "acme.com"), rec("a", "other.com"), rec("b", "acme.com")])
    assert [r.id for r in index.candidates("acme.com")] == ["a", "b"]
    assert index.candidates("other.com") == ()
    assert index.duplicate_records == 1
    assert len(index.records) == 2


# --- resolve ----------------------------------------------------------------------------------


def test_resolve_most_recently_modified() -> None:
    old = rec("old", modified=T0)
    new = rec("new", modified=T0 + timedelta(days=1))
    never = rec("never")
    assert resolve([old, new, never], "most_recently_modified") is new
    assert resolve([never, old], "most_recently_modified") is old


def test_resolve_most_recently_modified_breaks_ties_by_id_whatever_the_order() -> None:
    first = rec("001B", modified=T0)
    second = rec("001A", modified=T0)
    assert resolve([first, second], "most_recently_modified") is second
    assert resolve([second, first], "most_recently_modified") is second
    never_modified = resolve([rec("z"), rec("y")], "most_recently_modified")
    assert never_modified is not None and never_modified.id == "y"


def test_resolve_most_recently_modified_compares_naive_as_utc() -> None:
    naive = rec("naive", modified=datetime(2024, 5, 1, 13, 0))
    aware = rec("aware", modified=T0)
    assert resolve([aware, naive], "most_recently_modified") is naive


def test_resolve_skip() -> None:
    one = rec("one")
    assert resolve([one], "skip") is one
    assert resolve([one, rec("two")], "skip") is None


@pytest.mark.parametrize("rule", ["skip", "most_recently_modified", "parent"])
def test_resolve_single_and_empty(rule: str) -> None:
    only = rec("only")
    assert resolve([only], rule) is only
    assert resolve([], rule) is None


def test_resolve_parent_picks_the_top_of_a_hierarchy() -> None:
    parent = rec("hq")
    child = rec("emea", parent="hq")
    grandchild = rec("uk", parent="emea")
    assert resolve([child, grandchild, parent], "parent") is parent
    # the parent of the top candidate is outside the candidates: still the top one
    top = resolve([rec("emea", parent="global"), rec("uk", parent="emea")], "parent")
    assert top is not None and top.id == "emea"


@pytest.mark.parametrize(
    "candidates",
    [
        [rec("a"), rec("b")],  # two unrelated roots
        [rec("a"), rec("b", parent="a"), rec("c", parent="x")],  # c hangs off another tree
        [rec("a", parent="b"), rec("b", parent="a")],  # a cycle: no root
        [rec("a"), rec("b", parent="c"), rec("c", parent="b")],  # a root plus a cycle
    ],
)
def test_resolve_parent_finds_no_single_parent(candidates: list[CrmRecord]) -> None:
    assert resolve(candidates, "parent") is None


def test_resolve_rejects_unknown_rule() -> None:
    with pytest.raises(ValueError, match="first_found"):
        resolve([rec("a"), rec("b")], "first_found")


# --- match_accounts ---------------------------------------------------------------------------


def test_every_status() -> None:
    index = build_index(
        [
            rec("solo", "solo.com"),
            rec("dup-old", "twin.com", modified=T0),
            rec("dup-new", "https://twin.com", modified=T0 + timedelta(hours=1)),
            rec("shared", "alpha.com; alpha.de"),
        ]
    )
    report = match_accounts(
        [
            ("solo.com", "solo.com", 50.0),
            ("twin.com", "twin.com", 40.0),
            ("none.com", "none.com", 30.0),
            ("alpha.com", "alpha.com", 90.0),
            ("alpha.de", "alpha.de", 10.0),
        ],
        index,
        "most_recently_modified",
    )
    m = report.matches
    assert m["solo.com"] == Match("solo.com", "solo.com", MATCHED, "solo", ("solo",))
    assert m["twin.com"] == Match(
        "twin.com", "twin.com", AMBIGUOUS_RESOLVED, "dup-new", ("dup-new", "dup-old")
    )
    assert m["none.com"] == Match("none.com", "none.com", UNMATCHED, None, ())
    assert m["alpha.com"] == Match("alpha.com", "alpha.com", MATCHED, "shared", ("shared",))
    assert m["alpha.de"] == Match("alpha.de", "alpha.de", CONFLICT_LOST, None, ("shared",))

    skipped = match_accounts([("twin.com", "twin.com", 1.0)], index, "skip").matches["twin.com"]
    assert skipped == Match("twin.com", "twin.com", AMBIGUOUS_SKIPPED, None, ("dup-new", "dup-old"))


def test_parent_rule_in_matching() -> None:
    index = build_index(
        [
            rec("hq", "acme.com"),
            rec("sub", "acme.com", parent="hq"),
            rec("x", "split.com"),
            rec("y", "split.com"),
        ]
    )
    report = match_accounts(
        [("acme.com", "acme.com", 1.0), ("split.com", "split.com", 1.0)], index, "parent"
    )
    assert report.matches["acme.com"].status == AMBIGUOUS_RESOLVED
    assert report.record_for("acme.com") == "hq"
    assert report.matches["split.com"].status == AMBIGUOUS_SKIPPED
    assert report.record_for("split.com") is None


@pytest.mark.parametrize(
    ("accounts", "winner"),
    [
        ([("a.com", "a.com", 10.0), ("b.com", "b.com", 20.0)], "b.com"),
        ([("b.com", "b.com", 20.0), ("a.com", "a.com", 10.0)], "b.com"),
        ([("b.com", "b.com", 5.0), ("a.com", "a.com", 5.0)], "a.com"),  # tie: smaller key
        (
            [("c.com", "c.com", 1.0), ("a.com", "a.com", 3.0), ("b.com", "b.com", 2.0)],
            "a.com",
        ),
    ],
)
def test_conflict_on_a_shared_record_goes_to_the_highest_priority(
    accounts: list[tuple[str, str, float]], winner: str
) -> None:
    index = build_index([rec("r1", "a.com", "b.com; c.com")])
    report = match_accounts(accounts, index, "skip")
    assert report.record_for(winner) == "r1"
    for key, _, _ in accounts:
        if key != winner:
            assert report.matches[key].status == CONFLICT_LOST
            assert report.record_for(key) is None
            assert report.matches[key].candidates == ("r1",)


def test_workspaces_sharing_a_domain_conflict_on_its_record() -> None:
    index = build_index([rec("r1", "acme.com")])
    report = match_accounts(
        [("workspace:1", "acme.com", 10.0), ("workspace:2", "acme.com", 70.0)], index, "skip"
    )
    assert report.record_for("workspace:2") == "r1"
    assert report.matches["workspace:1"].status == CONFLICT_LOST


def test_ambiguous_resolution_can_conflict_too() -> None:
    index = build_index(
        [rec("old", "acme.com", modified=T0), rec("new", "acme.com; acme.io", modified=T0)]
    )
    # both accounts resolve to "new" (latest, then smallest id for ties)
    report = match_accounts(
        [("acme.com", "acme.com", 1.0), ("acme.io", "acme.io", 2.0)],
        index,
        "most_recently_modified",
    )
    assert report.record_for("acme.io") == "new"
    assert report.matches["acme.com"].status == CONFLICT_LOST
    assert report.matches["acme.com"].candidates == ("new", "old")


def test_match_accounts_rejects_unknown_rule_and_repeated_keys() -> None:
    index = build_index([rec("r1", "acme.com")])
    with pytest.raises(ValueError, match="unknown on_multiple rule"):
        match_accounts([("acme.com", "acme.com", 1.0)], index, "newest")
    with pytest.raises(ValueError, match="appears twice"):
        match_accounts(
            [("acme.com", "acme.com", 1.0), ("acme.com", "acme.com", 2.0)], index, "skip"
        )


# --- report -----------------------------------------------------------------------------------


def test_counts_cover_every_status_and_the_crm_totals() -> None:
    index = build_index(
        [rec("r1", "a.com"), rec("r2", "b.com"), rec("r3", "b.com"), rec("r4", "n/a", "x.com/a")]
    )
    report = match_accounts(
        [("a.com", "a.com", 1.0), ("b.com", "b.com", 1.0), ("c.com", "c.com", 1.0)],
        index,
        "skip",
    )
    counts = report.counts()
    assert set(counts) == {
        *STATUSES,
        "crm_records",
        "crm_domains",
        "crm_refused_invalid",
        "crm_refused_platform_host",
        "crm_refused_shared_hosting",
    }
    assert counts[MATCHED] == 1
    assert counts[AMBIGUOUS_SKIPPED] == 1
    assert counts[UNMATCHED] == 1
    assert counts[AMBIGUOUS_RESOLVED] == 0
    assert counts[CONFLICT_LOST] == 0
    assert counts["crm_records"] == 4
    assert counts["crm_domains"] == 2
    assert counts["crm_refused_invalid"] == 1
    assert counts["crm_refused_platform_host"] == 1
    assert counts["crm_refused_shared_hosting"] == 0
    assert sum(counts[status] for status in STATUSES) == len(report.matches)


def test_matched_lists_accounts_with_a_record_by_key() -> None:
    index = build_index([rec("r1", "b.com"), rec("r2", "a.com", modified=T0), rec("r3", "a.com")])
    report = match_accounts(
        [("b.com", "b.com", 1.0), ("a.com", "a.com", 1.0), ("z.com", "z.com", 1.0)],
        index,
        "most_recently_modified",
    )
    assert [(m.key, m.record_id) for m in report.matched()] == [("a.com", "r2"), ("b.com", "r1")]
    assert report.record_for("z.com") is None
    assert report.record_for("not-an-account") is None


def test_unmatched_top_orders_by_priority_then_domain() -> None:
    index = build_index([rec("r1", "known.com")])
    accounts = [
        ("known.com", "known.com", 99.0),
        ("low.com", "low.com", 5.0),
        ("b-tie.com", "b-tie.com", 50.0),
        ("a-tie.com", "a-tie.com", 50.0),
        ("high.com", "high.com", 80.0),
    ]
    report = match_accounts(accounts, index, "skip")
    assert report.unmatched_top(3) == [("high.com", 80.0), ("a-tie.com", 50.0), ("b-tie.com", 50.0)]
    assert report.unmatched_top(10) == [
        ("high.com", 80.0),
        ("a-tie.com", 50.0),
        ("b-tie.com", 50.0),
        ("low.com", 5.0),
    ]
    assert report.unmatched_top(0) == []
    # an explicit priority mapping (by account key) overrides the match priorities
    scores = {"low.com": 100.0, "high.com": 1.0}
    assert report.unmatched_top(3, scores) == [
        ("low.com", 100.0),
        ("high.com", 1.0),
        ("a-tie.com", 0.0),
    ]


def test_unmatched_top_lists_a_domain_once_with_its_best_priority() -> None:
    index = build_index([])
    report = match_accounts(
        [
            ("workspace:1", "acme.com", 10.0),
            ("workspace:2", "acme.com", 60.0),
            ("workspace:3", "beta.com", 30.0),
        ],
        index,
        "skip",
    )
    assert report.unmatched_top(5) == [("acme.com", 60.0), ("beta.com", 30.0)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([f"d{i}.com" for i in range(6)]),
            st.floats(min_value=0, max_value=100),
        ),
        max_size=12,
    ),
    st.lists(st.lists(st.sampled_from([f"d{i}.com" for i in range(8)]), max_size=3), max_size=6),
    st.sampled_from(["skip", "most_recently_modified", "parent"]),
)
def test_a_record_is_never_given_to_two_accounts(
    account_domains: list[tuple[str, float]], record_domains: list[list[str]], rule: str
) -> None:
    index = build_index(
        rec(f"r{i}", *domains, modified=T0 + timedelta(minutes=i))
        for i, domains in enumerate(record_domains)
    )
    accounts = [(f"k{i}", domain, prio) for i, (domain, prio) in enumerate(account_domains)]
    report = match_accounts(accounts, index, rule)
    assigned = [m.record_id for m in report.matches.values() if m.record_id]
    assert len(assigned) == len(set(assigned))
    assert set(report.matches) == {key for key, _, _ in accounts}
    for key, domain, _ in accounts:
        match = report.matches[key]
        assert match.candidates == tuple(sorted(r.id for r in index.candidates(domain)))
        assert (match.record_id is not None) == (match.status in (MATCHED, AMBIGUOUS_RESOLVED))
        assert match.record_id is None or match.record_id in match.candidates
