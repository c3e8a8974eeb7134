"""The SOQL subset: parsing, operators, literals, ordering, and Salesforce's error shapes.

Semantics follow the SOQL reference:
https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_comparisonoperators.htm
(comparison operators; LIKE is case-insensitive with % and _ wildcards, \\% and \\_ escape them),
https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_quotedstringescapes.htm
(backslash escapes), and
https://developer.salesforce.com/docs/atlas.en-us.soql_sosl.meta/soql_sosl/sforce_api_calls_soql_select_dateformats.htm
(date and datetime literals, LAST_N_DAYS:n from 00:00 n days ago through the current day).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pls_sync.sandbox import soql

NOW = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)


def run(where: str, rows: list[dict[str, Any]]) -> list[Any]:
    """The ``Id`` of each row matching a WHERE clause."""
    query = soql.parse(f"SELECT Id FROM Account WHERE {where}")
    assert query.where is not None
    matched = []
    for row in rows:

        def get(ref: soql.FieldRef, row: dict[str, Any] = row) -> Any:
            return row.get(ref.path[-1])

        if soql.evaluate(query.where, get, NOW):
            matched.append(row["Id"])
    return matched


ROWS: list[dict[str, Any]] = [
    {"Id": 1, "Name": "Acme", "Score": 90.0, "Tier": "sales", "Site": "acme.com", "At": datetime(2026, 3, 9, 8, tzinfo=UTC)},
    {"Id": 2, "Name": "acme labs", "Score": 60.0, "Tier": "success", "Site": None, "At": datetime(2026, 1, 2, tzinfo=UTC)},
    {"Id": 3, "Name": "Globex_1", "Score": None, "Tier": None, "Site": "globex.io", "At": None},
    {"Id": 4, "Name": "100% Tea", "Score": 10.0, "Tier": "self_serve", "Site": "tea.co.uk", "At": datetime(2026, 3, 10, 1, tzinfo=UTC)},
]  # fmt: skip


def test_field_list_relationships_and_clauses_parse() -> None:
    query = soql.parse(
        "select Id, Owner.Name, Parent.Owner.Email FROM Account "
        "WHERE Name != null ORDER BY Name DESC NULLS FIRST, Id LIMIT 10 OFFSET 5"
    )
    assert [f.path for f in query.fields] == [
        ("Id",),
        ("Owner", "Name"),
        ("Parent", "Owner", "Email"),
    ]
    assert query.sobject == "Account"
    assert [(o.field.dotted, o.descending, o.nulls_first) for o in query.order_by] == [
        ("Name", True, True),
        ("Id", False, True),
    ]
    assert (query.limit, query.offset) == (10, 5)


def test_count_only() -> None:
    query = soql.parse("SELECT COUNT() FROM Lead WHERE Status = 'Marketing Qualified'")
    assert query.count_only and query.fields == ()


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("Name = 'ACME'", [1]),  # string equality is case-insensitive
        ("Name != 'acme'", [2, 3, 4]),
        ("Name <> 'acme'", [2, 3, 4]),
        ("Score > 60", [1]),
        ("Score >= 60", [1, 2]),
        ("Score < 60", [4]),
        ("Score <= 60.0", [2, 4]),
        ("Tier IN ('sales', 'SUCCESS')", [1, 2]),
        ("Tier NOT IN ('sales')", [2, 4]),  # NOT IN never matches a null
        ("Name LIKE 'acme%'", [1, 2]),
        ("Name LIKE '%e_'", [4]),  # _ is exactly one character: "Tea"
        ("Name LIKE 'Globex\\_%'", [3]),
        ("Name LIKE '100\\% %'", [4]),
        ("Site = null", [2]),
        ("Site != NULL", [1, 3, 4]),
        ("Score > 50 AND Site != null", [1]),
        ("Score > 50 OR Site = null", [1, 2]),
        ("NOT Name LIKE 'acme%'", [3, 4]),
        ("(Score > 80 OR Score < 20) AND NOT (Site LIKE '%.io')", [1, 4]),
        ("At > 2026-03-01T00:00:00Z", [1, 4]),
        ("At < 2026-03-01", [2]),
        ("At = LAST_N_DAYS:1", [1, 4]),
        ("At = TODAY", [4]),
        ("At < LAST_N_DAYS:7", [2]),
    ],
)
def test_where_operators(where: str, expected: list[int]) -> None:
    assert run(where, ROWS) == expected


def test_mixing_and_or_without_parentheses_is_malformed() -> None:
    with pytest.raises(soql.SoqlError) as caught:
        soql.parse("SELECT Id FROM Account WHERE A = 1 AND B = 2 OR C = 3")
    assert caught.value.code == "MALFORMED_QUERY"
    assert "unexpected token: 'OR'" in caught.value.message


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("SELECT Id FROM Account WHERE", 29),
        ("SELECT Id FROM Account WHERE Name = ", 37),
        ("SELECT Id, FROM Account", 12),
        ("SELECT Id FROM Account LIMIT x", 30),
        ("SELECT Id FROM Account WHERE Name = 'unterminated", 37),
    ],
)
def test_malformed_queries_report_row_and_column(text: str, column: int) -> None:
    with pytest.raises(soql.SoqlError) as caught:
        soql.parse(text)
    assert caught.value.code == "MALFORMED_QUERY"
    assert f"ERROR at Row:1:Column:{column}" in caught.value.message


def test_literals() -> None:
    query = soql.parse(
        "SELECT Id FROM Account WHERE A IN ('it\\'s', 'tab\\there', -4.5, 7, TRUE, false, "
        "2026-11-01, 2026-11-01T10:00:00.000+0200)"
    )
    assert isinstance(query.where, soql.Comparison)
    assert query.where.value == (
        "it's",
        "tab\there",
        -4.5,
        7,
        True,
        False,
        date(2026, 11, 1),
        datetime(2026, 11, 1, 8, tzinfo=UTC),
    )


def test_last_n_days_bounds() -> None:
    start, end = soql.RelativeDate("LAST_N_DAYS", 3).bounds(NOW)
    assert start == datetime(2026, 3, 7, tzinfo=UTC)
    assert end == datetime(2026, 3, 11, tzinfo=UTC)


def test_order_by_several_fields_and_null_placement() -> None:
    rows = [
        {"Tier": "sales", "Score": 1.0},
        {"Tier": None, "Score": 5.0},
        {"Tier": "Sales", "Score": 3.0},
        {"Tier": "abm", "Score": None},
    ]

    def order(clause: str) -> list[Any]:
        query = soql.parse(f"SELECT Id FROM Account ORDER BY {clause}")
        ordered = soql.sort_rows(rows, query.order_by, lambda r, ref: r[ref.path[-1]])
        return [(r["Tier"], r["Score"]) for r in ordered]

    assert order("Tier, Score DESC") == [(None, 5.0), ("abm", None), ("Sales", 3.0), ("sales", 1.0)]
    assert order("Tier DESC") == [("sales", 1.0), ("Sales", 3.0), ("abm", None), (None, 5.0)]
    assert order("Tier ASC NULLS LAST, Score") == [
        ("abm", None),
        ("sales", 1.0),
        ("Sales", 3.0),
        (None, 5.0),
    ]
    assert order("Score DESC NULLS FIRST") == [
        ("abm", None),
        (None, 5.0),
        ("Sales", 3.0),
        ("sales", 1.0),
    ]


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="%_")))
def test_quoted_strings_round_trip(value: str) -> None:
    query = soql.parse(f"SELECT Id FROM Account WHERE Name = {_quote(value)}")
    assert isinstance(query.where, soql.Comparison)
    assert query.where.value == value


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="ab%_", max_size=6),
    st.text(alphabet="abAB", max_size=6),
)
def test_like_agrees_with_a_reference_matcher(pattern: str, text: str) -> None:
    def reference(p: str, t: str) -> bool:
        if not p:
            return not t
        if p[0] == "%":
            return any(reference(p[1:], t[i:]) for i in range(len(t) + 1))
        if not t:
            return False
        return (p[0] == "_" or p[0] == t[0].lower()) and reference(p[1:], t[1:])

    assert (soql.like_regex(pattern).fullmatch(text) is not None) == reference(pattern, text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-50, 50)), max_size=12), st.booleans())
def test_sort_matches_python_sort_with_nulls(values: list[int | None], descending: bool) -> None:
    query = soql.parse(f"SELECT Id FROM Account ORDER BY N {'DESC' if descending else 'ASC'}")
    ordered = [
        r["N"]
        for r in soql.sort_rows([{"N": v} for v in values], query.order_by, lambda r, ref: r["N"])
    ]
    present = sorted((v for v in values if v is not None), reverse=descending)
    nulls = [None] * (len(values) - len(present))
    # ASC puts nulls first by default, DESC puts them last.
    assert ordered == (present + nulls if descending else nulls + present)
