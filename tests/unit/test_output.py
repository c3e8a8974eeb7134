"""The CLI's output helpers: values as people read them, the CSV formula guard, the writers."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from pls_sync.output import (
    OutputFormat,
    csv_cell,
    is_plain_number,
    iso,
    plain,
    plain_number,
    text,
    write_json,
    write_rows,
)

AT = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("\0=1", "'\0=1"),
        ("-", "'-"),
        ("VP Sales; =cmd", "VP Sales; =cmd"),  # only the first character can start a formula
        ("acme.com", "acme.com"),
        ("", ""),
    ],
)
def test_text_that_a_spreadsheet_would_evaluate_is_quoted(value: str, cell: str) -> None:
    assert csv_cell(value) == cell


@pytest.mark.parametrize(
    ("value", "cell"),
    [(-3, "-3"), (-2.5, "-2.5"), ("-3", "-3"), ("+4", "+4"), ("-1e3", "-1e3"), (85.0, "85")],
)
def test_numbers_stay_numbers(value: object, cell: str) -> None:
    assert csv_cell(value) == cell


def test_plain_numbers_are_told_from_formulas() -> None:
    assert all(is_plain_number(t) for t in ("0", "-3", "+3", "2.", ".5", "-0.25", "1E-3"))
    assert not any(is_plain_number(t) for t in ("-", "--3", "-3-1", "1,5", "-3 ", "0x10", ""))


def test_values_read_as_people_write_them() -> None:
    assert iso(AT) == "2026-11-22T10:00:00Z"
    assert iso(AT.astimezone(timezone(timedelta(hours=2)))) == "2026-11-22T10:00:00Z"
    assert iso(datetime(2026, 11, 22, 10, 0)) == "2026-11-22T10:00:00Z"  # naive is UTC
    assert iso(date(2026, 11, 22)) == "2026-11-22"
    assert plain_number(85.0) == 85 and isinstance(plain_number(85.0), int)
    assert plain_number(3.33333, 2) == 3.33
    assert plain_number(Decimal("12.50")) == 12.5
    assert plain_number(0.1234) == 0.1234  # a CRM value keeps its digits unless asked
    assert plain(
        {"at": AT, "day": date(2026, 1, 2), "n": 7.0, "tags": ("a", "b"), "set": {"z", "y"}}
    ) == {"at": "2026-11-22T10:00:00Z", "day": "2026-01-02", "n": 7, "tags": ["a", "b"],
          "set": ["y", "z"]}  # fmt: skip
    assert text(None) == "" and text(None, "-") == "-"
    assert text(True) == "true" and text(False) == "false"
    assert text(["9 active users", None, "pricing"]) == "9 active users; pricing"
    assert text({"from": 80.0, "to": 85}) == '{"from": 80, "to": 85}'
    assert text(AT) == "2026-11-22T10:00:00Z"


def test_csv_rows_keep_the_columns_order_and_guard_every_cell() -> None:
    rows = [
        {"domain": "acme.com", "score": 91, "buyers": ['=HYPERLINK("x")', "CTO"], "x": 1},
        {"domain": "beta.io", "score": -3, "buyers": [], "when": AT},
    ]
    out = io.StringIO()

    written = write_rows(rows, ["domain", "score", "buyers", "when"], OutputFormat.CSV, out)

    assert written == 2
    parsed = list(csv.reader(io.StringIO(out.getvalue())))
    assert parsed == [
        ["domain", "score", "buyers", "when"],
        ["acme.com", "91", '\'=HYPERLINK("x"); CTO', ""],
        ["beta.io", "-3", "", "2026-11-22T10:00:00Z"],
    ]


def test_tab_separated_rows() -> None:
    out = io.StringIO()
    write_rows([{"a": "x y", "b": 2}], ["a", "b"], "csv", out, delimiter="\t")
    assert out.getvalue() == "a\tb\r\nx y\t2\r\n"


def test_json_rows_are_one_list_of_objects_with_plain_values() -> None:
    rows: list[dict[str, object]] = [
        {"domain": "acme.com", "score": 91.0, "at": AT, "extra": 1},
        {"domain": "b.io"},
    ]
    out = io.StringIO()

    assert write_rows(rows, ["domain", "score", "at"], OutputFormat.JSON, out) == 2

    assert json.loads(out.getvalue()) == [
        {"domain": "acme.com", "score": 91, "at": "2026-11-22T10:00:00Z"},
        {"domain": "b.io", "score": None, "at": None},
    ]


def test_no_rows_is_an_empty_list_or_a_header() -> None:
    as_json, as_csv = io.StringIO(), io.StringIO()
    write_rows([], ["a"], OutputFormat.JSON, as_json)
    write_rows([], ["a"], OutputFormat.CSV, as_csv)
    assert json.loads(as_json.getvalue()) == [] and as_csv.getvalue() == "a\r\n"


def test_table_is_not_a_row_format() -> None:
    with pytest.raises(ValueError, match="csv or json"):
        write_rows([], ["a"], OutputFormat.TABLE, io.StringIO())


def test_write_json_writes_one_document() -> None:
    out = io.StringIO()
    write_json({"healthy": True, "at": AT, "points": 35.0}, out)
    assert out.getvalue().endswith("}\n")
    assert json.loads(out.getvalue()) == {
        "healthy": True,
        "at": "2026-11-22T10:00:00Z",
        "points": 35,
    }
