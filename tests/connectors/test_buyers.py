"""Buyer candidates filtered and aggregated in the warehouse, on small hand-built warehouses.

The same rows are loaded into DuckDB, SQLite and (when ``PLS_SYNC_TEST_POSTGRES_URL`` is set)
Postgres. ``AS_OF`` is 2026-03-01 00:00 UTC; windows are ``[AS_OF - N days, AS_OF)``. The
property test checks the SQL filter against the pure core: every user the core calls a buyer
is a candidate.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.buyers import glob_to_like, read_buyer_candidates, title_like
from connectors.warehouse import SqlUsageSource
from pls_sync.channels import (
    BehaviourPoints,
    BuyerBehaviour,
    PersonaModel,
    PersonaRule,
    UserProfile,
    default_persona_model,
    rank_buyers,
    score_user,
)
from pls_sync.errors import WarehouseError
from pls_sync.models import UsageReadStats

AS_OF = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
OLD = datetime(2025, 1, 1, tzinfo=UTC)

TAXONOMY: dict[str, list[str]] = {
    "legal_page_view": ["viewed_terms_of_use", "viewed_privacy_policy"],
    "pricing_page_view": ["viewed_pricing"],
    "admin_change": ["admin_transferred", "admin_added"],
    "core_feature": ["created_board"],
}

PERSONA = PersonaModel(
    rules=(
        *default_persona_model().rules,
        PersonaRule("club", 40, title_patterns=("100%_club",), label="club"),
    ),
    behaviour_points=BehaviourPoints(),
    min_buyer_score=30,
    max_buyers=5,
)

# user_id, email, workspace_id, created_at, is_admin, title, seniority, department, company_size
USERS: list[tuple[Any, ...]] = [
    (1, "vp@acme.com", 10, OLD, False, "VP Engineering", "VP", "Engineering", "51-200"),
    (2, "dev@acme.com", 10, OLD, False, "Software Engineer", "ic", "engineering", "51-200"),
    (3, "cto@eng.acme.co.uk", 11, OLD, False, "Co-founder & CTO", None, None, None),
    (4, "legal@beta.io", 20, OLD, False, "Analyst", "ic", "finance", None),
    (5, "oldlegal@beta.io", 20, OLD, False, "Analyst", "ic", "finance", None),
    (6, "admin@beta.io", 20, OLD, True, "Analyst", "ic", "sales", None),
    (7, "pricing@beta.io", 20, OLD, False, "Analyst", "ic", "sales", None),
    (8, "boss@gmail.com", 30, OLD, False, "CEO", "c_level", None, None),
    (
        9,
        "mgr@gamma.dev",
        40,
        OLD,
        False,
        "IT lead",
        "Senior-Manager",
        "Information_Technology",
        "51-200",
    ),
    (10, "owner@delta.org", 50, OLD, True, "Ops", "ic", "operations", "1-10"),
    (11, "future@acme.com", 10, AS_OF + SECOND, False, "VP Sales", "vp", None, None),
    (12, "club@epsilon.net", 60, OLD, False, "100%_club member", None, None, None),
    (13, "nearclub@epsilon.net", 60, OLD, False, "100xxclub member", None, None, None),
    (14, "edge@zeta.com", 70, OLD, False, "Analyst", "ic", None, None),
    (15, "junk-without-at", 70, OLD, False, "Director of IT", None, None, None),
    (16, "dir@zeta.com", None, OLD, False, "Global Director, Sales", None, None, None),
]

# user_id, workspace_id, event_name, occurred_at
EVENTS: list[tuple[Any, ...]] = [
    (4, 20, "viewed_terms_of_use", AS_OF - 3 * DAY),
    (4, 20, "viewed_privacy_policy", AS_OF - 14 * DAY),  # window start: included
    (4, 20, "created_board", AS_OF - DAY),  # not a buyer event
    (5, 20, "viewed_terms_of_use", AS_OF - 14 * DAY - SECOND),  # just outside 14 days
    (6, 20, "admin_transferred", AS_OF - 20 * DAY),  # inside 28 days: became admin (25)
    (6, 20, "viewed_pricing", AS_OF - 5 * DAY),  # + pricing (10) = 35
    (7, 20, "viewed_pricing", AS_OF - 2 * DAY),  # pricing alone: 10 < 30
    (7, 20, "viewed_pricing", AS_OF - 1 * DAY),
    (14, 70, "viewed_terms_of_use", AS_OF),  # at as_of: half-open windows leave it out
    (2, 10, "created_board", AS_OF - DAY),
]

BUYERS = {"1", "3", "4", "6", "9", "12", "16"}


def naive(value: datetime) -> datetime:
    return value.replace(tzinfo=None)


def create_tables(engine: sa.Engine, schema: str | None = None, tz: bool = False) -> None:
    metadata = sa.MetaData(schema=schema)
    users = sa.Table(
        "users",
        metadata,
        sa.Column("user_id", sa.Integer),
        sa.Column("email", sa.String),
        sa.Column("workspace_id", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=tz)),
        sa.Column("is_admin", sa.Boolean),
        sa.Column("title", sa.String),
        sa.Column("seniority", sa.String),
        sa.Column("department", sa.String),
        sa.Column("company_size", sa.String),
    )
    events = sa.Table(
        "events",
        metadata,
        sa.Column("user_id", sa.Integer),
        sa.Column("workspace_id", sa.Integer),
        sa.Column("event_name", sa.String),
        sa.Column("occurred_at", sa.DateTime(timezone=tz)),
    )
    stamp = (lambda v: v) if tz else naive
    with engine.begin() as conn:
        metadata.create_all(conn)
        conn.execute(
            users.insert(),
            [
                dict(zip(users.c.keys(), (*row[:3], stamp(row[3]), *row[4:]), strict=True))
                for row in USERS
            ],
        )
        conn.execute(
            events.insert(),
            [dict(zip(events.c.keys(), (*row[:3], stamp(row[3])), strict=True)) for row in EVENTS],
        )


@pytest.fixture(params=["duckdb", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    url = f"{request.param}:///{tmp_path / 'warehouse.db'}"
    built = sa.create_engine(url)
    create_tables(built)
    yield built
    built.dispose()


def candidates(source: Any, **options: Any) -> dict[str, tuple[str, UserProfile]]:
    options.setdefault("taxonomy", TAXONOMY)
    options.setdefault("persona", PERSONA)
    return {
        profile.user_id: (key, profile)
        for key, profile in read_buyer_candidates(source, as_of=AS_OF, **options)
    }


def test_candidates_are_filtered_in_the_warehouse(engine: sa.Engine) -> None:
    statements: list[tuple[str, Any]] = []
    sa.event.listen(
        engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, params, context, many: statements.append(
            (statement, params)
        ),
    )
    stats = UsageReadStats()
    found = candidates(engine, stats=stats)

    assert set(found) == BUYERS  # exactly the buyers here: the filter is tight on this data
    keys = {user_id: key for user_id, (key, _) in found.items()}
    assert keys == {
        "1": "acme.com",
        "3": "acme.co.uk",
        "4": "beta.io",
        "6": "beta.io",
        "9": "gamma.dev",
        "12": "epsilon.net",
        "16": "zeta.com",
    }
    assert stats.skipped_reasons == {"free_mail": 1, "invalid": 1}  # boss@gmail, junk-without-at
    every_scored = [score_user(profile, PERSONA) for _, profile in found.values()]
    assert all(score >= PERSONA.min_buyer_score for score, _ in every_scored)

    candidate_sql = [s for s, _ in statements if "GROUP BY" in s.upper()]
    assert len(candidate_sql) == 1
    sql = candidate_sql[0]
    assert " LIKE " in sql.upper() and " IN " in sql.upper()
    for config_text in ("director", "viewed_terms_of_use", "100%", "club", "seniormanager"):
        assert config_text not in sql.lower()  # every value travels as a bound parameter


def test_profiles_and_behaviour_windows(engine: sa.Engine) -> None:
    found = candidates(engine)
    vp = found["1"][1]
    assert (vp.email, vp.title, vp.seniority, vp.department, vp.company_size) == (
        "vp@acme.com",
        "VP Engineering",
        "VP",
        "Engineering",
        "51-200",
    )
    assert vp.behaviour == BuyerBehaviour() and vp.is_admin is False
    legal = found["4"][1]
    assert legal.behaviour == BuyerBehaviour(legal_page_views=2)  # the 14-day boundary counts
    admin = found["6"][1]
    assert admin.is_admin is True
    assert admin.behaviour == BuyerBehaviour(became_admin=True, pricing_page_views=1)
    for absent, why in (
        ("2", "no criterion and no behaviour"),
        ("5", "legal view just outside 14 days"),
        ("7", "pricing alone is below the buyer score"),
        ("8", "free mail"),
        ("10", "being admin is not a buyer tell"),
        ("11", "created after as_of"),
        ("13", "% and _ in a glob match themselves"),
        ("14", "an event at as_of is outside the half-open window"),
        ("15", "no usable email domain"),
    ):
        assert absent not in found, why


def test_the_workspace_level_keys_by_workspace(engine: sa.Engine) -> None:
    stats = UsageReadStats()
    found = candidates(engine, account_level="workspace", stats=stats)
    keys = {user_id: key for user_id, (key, _) in found.items()}
    assert keys["1"] == "workspace:10" and keys["6"] == "workspace:20"
    assert keys["8"] == "workspace:30"  # free mail is fine inside a workspace
    assert "16" not in keys and stats.skipped_reasons == {"no_workspace": 1}


def test_a_usage_source_brings_its_own_settings(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    built = sa.create_engine(url)
    with built.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA product")
    create_tables(built, schema="product")
    built.dispose()
    source = SqlUsageSource(url, taxonomy=TAXONOMY, schema="product", account_level="company")
    found = candidates(source, taxonomy=None)
    assert set(found) == BUYERS
    # taxonomy from the source: without legal page events, user 4 is no candidate
    no_legal = SqlUsageSource(url, taxonomy={**TAXONOMY, "legal_page_view": []}, schema="product")
    assert "4" not in candidates(no_legal, taxonomy=None)


def test_missing_tables_and_persona_columns_are_reported(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'bare.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE users (user_id INTEGER, email TEXT, created_at TIMESTAMP, is_admin BOOLEAN)"
        )
    with pytest.raises(WarehouseError) as caught:
        candidates(engine)
    message = str(caught.value)
    assert "'events' not found" in message
    assert "seniority" in message and "title" in message and "department" in message
    # a persona that reads no profile column needs none of them
    behaviour_only = PersonaModel(rules=(), behaviour_points=BehaviourPoints())
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE events (user_id INTEGER, event_name TEXT, occurred_at TIMESTAMP)"
        )
        conn.exec_driver_sql("INSERT INTO users VALUES (1, 'a@acme.com', '2025-01-01 00:00:00', 0)")
        conn.exec_driver_sql(
            "INSERT INTO events VALUES (1, 'viewed_terms_of_use', '2026-02-27 10:00:00')"
        )
    (only,) = candidates(engine, persona=behaviour_only).values()
    assert only[0] == "acme.com" and only[1].title is None
    assert only[1].behaviour.legal_page_views == 1


def test_glob_to_like() -> None:
    assert glob_to_like("vp*") == "vp%"
    assert glob_to_like("C?O") == "c_o"
    assert glob_to_like("100%_club") == "100\\%\\_club"
    assert glob_to_like("a\\b") == "a\\\\b"
    assert glob_to_like("[ct]to") == "_to"
    assert glob_to_like("[!x]y") == "_y"
    assert glob_to_like("[unclosed") == "[unclosed"
    assert title_like("head  of*") == "%head%of%%"
    assert title_like("*director*") == "%%director%%"


# --------------------------------------------------------------------------- property

SENIORITIES = ["VP", "vp", "C-Level", "c level", "Director", "senior_manager", "IC", "", None]
DEPARTMENTS = ["Engineering", "IT", "i-t", "Sales", "Information Technology", None]
TITLE_WORDS = ["VP", "Head", "of", "IT", "CTO", "Chief", "Revenue", "Officer", "Director,",
               "Engineer", "&", "Co-founder", "100%_club", "Lead", "/", "Sales"]  # fmt: skip
SIZES = ["1-10", "51-200", "1,001-5,000", "5000+", "unknown", None]

USER = st.tuples(
    st.sampled_from(SENIORITIES),
    st.sampled_from(DEPARTMENTS),
    st.lists(st.sampled_from(TITLE_WORDS), max_size=4).map(lambda w: " ".join(w) or None),
    st.sampled_from(SIZES),
    st.integers(0, 2),  # legal views
    st.booleans(),  # became admin
    st.integers(0, 2),  # pricing views
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(users=st.lists(USER, min_size=1, max_size=12))
def test_every_buyer_the_core_finds_is_a_candidate(users: list[tuple[Any, ...]]) -> None:
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE users (user_id INTEGER, email TEXT, created_at TIMESTAMP, "
            "is_admin BOOLEAN, title TEXT, seniority TEXT, department TEXT, company_size TEXT)"
        )
        conn.exec_driver_sql(
            "CREATE TABLE events (user_id INTEGER, event_name TEXT, occurred_at TIMESTAMP)"
        )
        expected: dict[str, UserProfile] = {}
        for n, (seniority, department, title, size, legal, admin, pricing) in enumerate(users):
            email = f"u{n}@acme.com"
            conn.execute(
                sa.text(
                    "INSERT INTO users VALUES (:n, :email, '2025-01-01 00:00:00', 0, :title, "
                    ":seniority, :department, :size)"
                ),
                {
                    "n": n,
                    "email": email,
                    "title": title,
                    "seniority": seniority,
                    "department": department,
                    "size": size,
                },  # fmt: skip
            )
            names = ["viewed_terms_of_use"] * legal + ["viewed_pricing"] * pricing
            names += ["admin_added"] if admin else []
            for name in names:
                conn.execute(
                    sa.text("INSERT INTO events VALUES (:n, :name, '2026-02-27 12:00:00')"),
                    {"n": n, "name": name},
                )
            behaviour = BuyerBehaviour(legal, admin, pricing)
            expected[str(n)] = UserProfile(
                str(n), email, title, seniority or None, department, size, False, behaviour
            )
    found = candidates(engine)
    must = {user.user_id for user in rank_buyers(expected.values(), _unlimited(PERSONA))}
    assert must <= set(found)
    for user_id, (_, profile) in found.items():
        want = expected[user_id]
        assert score_user(profile, PERSONA) == score_user(want, PERSONA)
    engine.dispose()


def _unlimited(model: PersonaModel) -> PersonaModel:
    return PersonaModel(model.rules, model.behaviour_points, model.min_buyer_score, 10_000)


# --------------------------------------------------------------------------- postgres


@pytest.fixture
def postgres_engine(postgres_url: str) -> Iterator[tuple[sa.Engine, str]]:
    schema = f"buyers_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        create_tables(engine, schema=schema, tz=True)
        yield engine, schema
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


@pytest.mark.postgres
def test_on_postgres(postgres_engine: tuple[sa.Engine, str]) -> None:
    engine, schema = postgres_engine
    found = candidates(engine, schema=schema)
    assert set(found) == BUYERS
    assert found["4"][1].behaviour == BuyerBehaviour(legal_page_views=2)
    assert found["6"][1].behaviour == BuyerBehaviour(became_admin=True, pricing_page_views=1)
    workspace = candidates(engine, schema=schema, account_level="workspace")
    assert workspace["8"][0] == "workspace:30"
