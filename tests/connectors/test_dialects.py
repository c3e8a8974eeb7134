"""The dialect seams: the built-in model's SQL compiled for each warehouse, snapshot-tested.

The statements are the ones ``SqlUsageSource`` executes (``builtin_query`` and
``dropped_events_query``), compiled for each dialect with literal binds off, so a change to the
SQL a warehouse receives shows up as a diff of ``tests/connectors/snapshots/*.sql``. Regenerate
them after an intended change with ``PLS_SYNC_UPDATE_SNAPSHOTS=1 pytest
tests/connectors/test_dialects.py`` and review the diff.

Snowflake and BigQuery dialects are optional extras: their cases are skipped when the packages
(``snowflake-sqlalchemy``, ``sqlalchemy-bigquery``) are not installed. Running the SQL on a real
Postgres server is ``tests/connectors/test_warehouse.py``'s job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.sql.compiler import Compiled

from connectors.warehouse import SqlUsageSource

SNAPSHOTS = Path(__file__).parent / "snapshots"
# Read at import: the autouse fixture in conftest.py clears PLS_SYNC_* before each test.
UPDATE_SNAPSHOTS = os.environ.get("PLS_SYNC_UPDATE_SNAPSHOTS") == "1"
AS_OF = datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
# Config text, some of it hostile: it must travel as bound values, never as SQL text.
TAXONOMY: dict[str, list[str]] = {
    "legal_page_view": ["viewed_terms_of_use", "viewed_privacy_policy"],
    "pricing_page_view": ["viewed_pricing"],
    "admin_change": ["admin_transferred"],
    "core_feature": ["created_board", "used_o'reilly_export"],
    "enterprise_feature": ["configured_sso", "x'); DROP TABLE users; --"],
    "ignored": ["viewed_webinar"],
}
EVENT_NAMES = sorted({name for names in TAXONOMY.values() for name in names})

# name: (SQLAlchemy URL whose dialect compiles, the package that provides it when optional)
DIALECTS: dict[str, tuple[str, str | None]] = {
    "postgresql": ("postgresql+psycopg://", None),
    "sqlite": ("sqlite://", None),
    "duckdb": ("duckdb://", None),
    "snowflake": ("snowflake://", "snowflake.sqlalchemy"),
    "bigquery": ("bigquery://", "sqlalchemy_bigquery"),
}


def email_host_sql(trimmed: str, host_of: str, percent: str = "%%") -> str:
    """The ``email_host`` text every dialect shares: LIKE decides, a dialect function cuts."""
    p = percent
    return (
        f"CASE WHEN {trimmed} LIKE '_{p}@_{p}' AND {trimmed} NOT LIKE '{p}@{p}@{p}' "
        f"AND {trimmed} NOT LIKE '{p} {p}' THEN {host_of} ELSE '' END"
    )


# pyformat dialects double the '%' of the LIKE patterns; their drivers undo it.
EMAIL_HOST: dict[str, str] = {
    "postgresql": email_host_sql(
        "btrim(users.email, ' ')", "split_part(btrim(users.email, ' '), '@', 2)"
    ),
    "duckdb": email_host_sql(
        "trim(users.email, ' ')", "split_part(trim(users.email, ' '), '@', 2)"
    ),
    "snowflake": email_host_sql(
        "trim(users.email, ' ')", "split_part(trim(users.email, ' '), '@', 2)"
    ),
    "bigquery": email_host_sql(
        "TRIM(`users`.`email`, ' ')", "SPLIT(TRIM(`users`.`email`, ' '), '@')[SAFE_OFFSET(1)]"
    ),
    "sqlite": email_host_sql(
        "trim(users.email, ' ')",
        "substr(trim(users.email, ' '), instr(trim(users.email, ' '), '@') + 1)",
        percent="%",
    ),
}


def dialect_for(name: str) -> Dialect:
    """The dialect ``name``, skipping the test when its optional package is missing."""
    url, module = DIALECTS[name]
    if module is not None:
        pytest.importorskip(module)
    dialect: Dialect = make_url(url).get_dialect()()
    return dialect


def compile_builtin(dialect: Dialect, level: str = "company") -> Compiled:
    """The built-in model's statement for ``level``, compiled for ``dialect`` without literals."""
    source = SqlUsageSource(
        "duckdb:///:memory:", taxonomy=TAXONOMY, account_level=level, chunk_size=1000
    )
    statement = source.builtin_query(AS_OF)
    return statement.compile(
        dialect=dialect, compile_kwargs={"render_postcompile": True, "literal_binds": False}
    )


def bound_values(compiled: Compiled) -> Iterator[Any]:
    """Every bound value, lists (BigQuery's IN UNNEST arrays) flattened."""
    for value in compiled.params.values():
        if isinstance(value, list | tuple):
            yield from value
        else:
            yield value


def check_snapshot(name: str, text: str) -> None:
    """Compare ``text`` with ``snapshots/<name>.sql``; rewrite it when asked to."""
    path = SNAPSHOTS / f"{name}.sql"
    text = text.rstrip() + "\n"
    if UPDATE_SNAPSHOTS:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"no snapshot {path}: run with PLS_SYNC_UPDATE_SNAPSHOTS=1"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, (
        f"the compiled SQL for {name} changed; if intended, regenerate with "
        "PLS_SYNC_UPDATE_SNAPSHOTS=1 and review the diff"
    )


@pytest.mark.parametrize("level", ["company", "workspace"])
@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_compiled_sql_matches_its_snapshot(name: str, level: str) -> None:
    compiled = compile_builtin(dialect_for(name), level)

    check_snapshot(f"builtin_{level}_{name}", str(compiled))


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_email_host_compiles_to_the_dialects_own_function(name: str) -> None:
    sql = str(compile_builtin(dialect_for(name)))

    select_list = sql.split("FROM", 1)[0]
    assert EMAIL_HOST[name] in select_list
    # Case is folded in Python: a dialect's lower() differs on non-ASCII letters.
    assert "lower(" not in select_list.lower()
    if name in ("postgresql", "duckdb", "snowflake"):
        assert "split_part(" in select_list and "instr(" not in select_list
    elif name == "bigquery":
        assert "SPLIT(" in select_list and "[SAFE_OFFSET(1)]" in select_list
        assert "split_part(" not in select_list


def test_redshift_compiles_email_host_like_postgres() -> None:
    """Redshift's dialect package is not installed here: its compiler entry is checked directly."""
    from sqlalchemy.dialects import postgresql

    from connectors.sql_constructs import email_host

    class Redshift(postgresql.psycopg.PGDialect_psycopg):
        name = "redshift"

    compiled = sa.select(email_host(sa.column("email"))).compile(dialect=Redshift())

    assert "btrim(email, ' ')" in str(compiled) and "split_part(" in str(compiled)


def compile_dropped(dialect: Dialect) -> Compiled:
    """The dropped-events count, compiled for ``dialect`` without literals."""
    source = SqlUsageSource("duckdb:///:memory:", taxonomy=TAXONOMY)
    return source.dropped_events_query(AS_OF).compile(
        dialect=dialect, compile_kwargs={"render_postcompile": True, "literal_binds": False}
    )


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_dropped_events_sql_matches_its_snapshot(name: str) -> None:
    check_snapshot(f"dropped_events_{name}", str(compile_dropped(dialect_for(name))))


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_dropped_events_is_one_pass_without_join_and_with_bound_windows(name: str) -> None:
    compiled = compile_dropped(dialect_for(name))
    sql = str(compiled).replace("`", "")
    values = list(bound_values(compiled))

    # One row for the whole table, no second hash of the events: orphans come from the
    # grouped query's own join (see SqlUsageSource._count_dropped_events).
    assert "GROUP BY" not in sql and "JOIN" not in sql and "users" not in sql
    assert sql.count("FROM") == 1
    assert not re.search(r"20\d\d-\d\d-\d\d", sql) and "viewed_webinar" not in sql
    assert "viewed_webinar" in values  # ignored names are never counted as dropped
    assert {datetime(2024, 6, 1, 12, 30), datetime(2024, 3, 30, 12, 30)} <= set(values)


@pytest.mark.parametrize("level", ["company", "workspace"])
@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_config_text_and_time_windows_are_bound_not_inlined(name: str, level: str) -> None:
    compiled = compile_builtin(dialect_for(name), level)
    sql = str(compiled)
    values = list(bound_values(compiled))

    for event in EVENT_NAMES:
        assert event not in sql
        assert event in values
    assert "DROP TABLE" not in sql
    # Window bounds are computed in Python and bound: no date literal in the SQL.
    assert not re.search(r"20\d\d-\d\d-\d\d", sql)
    naive_bounds = {v for v in values if isinstance(v, datetime)}
    assert datetime(2024, 6, 1, 12, 30) in naive_bounds  # as_of, naive UTC for naive columns
    assert datetime(2024, 3, 30, 12, 30) in naive_bounds  # as_of - 63 days


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_the_heavy_aggregation_stays_in_the_warehouse(name: str) -> None:
    sql = str(compile_builtin(dialect_for(name), "workspace"))
    normalised = sql.replace("`", "")

    # Events are grouped per user inside the warehouse, then joined and grouped per host.
    assert normalised.count("GROUP BY") == 2
    assert "GROUP BY events.user_id, events.workspace_id" in normalised
    assert "LEFT OUTER JOIN (SELECT" in normalised
    assert normalised.rstrip().endswith("users.workspace_id")


def grouped_names(sql: str) -> list[str]:
    """The bare identifiers the outer GROUP BY refers to (BigQuery groups by output names)."""
    outer = sql.rsplit("GROUP BY", 1)[1]
    return [p.strip().strip("`") for p in outer.split(",") if "." not in p and "(" not in p]


def test_bigquery_groups_by_a_name_the_select_defines() -> None:
    sql = str(compile_builtin(dialect_for("bigquery")))

    labels = set(re.findall(r" AS `(\w+)`", sql.rsplit("GROUP BY", 1)[0]))
    assert grouped_names(sql), sql
    for name in grouped_names(sql):
        assert name in labels, f"GROUP BY {name} names no column of the SELECT"


def test_timezone_aware_columns_bind_aware_bounds() -> None:
    dialect = dialect_for("postgresql")
    source = SqlUsageSource("duckdb:///:memory:", taxonomy=TAXONOMY)
    statement = source.builtin_query(
        AS_OF, events_types={"occurred_at": sa.DateTime(timezone=True)}
    )
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})

    assert compiled.params["ev_as_of"] == AS_OF  # aware, compared with timestamptz
    assert compiled.params["u_as_of"] == datetime(2024, 6, 1, 12, 30)  # naive created_at
    assert "TIMESTAMP WITH TIME ZONE" in str(compiled)
