"""``SqlUsageSource.probe``: every way a user can break the warehouse side, found before a run.

Each bad input gives exactly the expected problem: the config key it is about and a one-line
message that says what to do. Real databases only: DuckDB and SQLite files made in ``tmp_path``,
the Postgres server for ``postgres``-marked tests.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.warehouse import SqlUsageSource
from pls_sync.errors import WarehouseError
from pls_sync.models import UsageReadStats, WarehouseProbe, WarehouseProblem
from tests.connectors.test_warehouse import AS_OF, TAXONOMY, load_warehouse

URL_KEY = ("warehouse", "url")
MODEL_KEY = ("warehouse", "model")
USERS_KEY = ("warehouse", "users_table")
EVENTS_KEY = ("warehouse", "events_table")
SCHEMA_KEY = ("warehouse", "schema")
PASSWORD = "s3cret"


def probe(url: str, **kwargs: Any) -> WarehouseProbe:
    """Probe ``url`` with the test taxonomy; every message must be one line."""
    result = SqlUsageSource(url, taxonomy=TAXONOMY, **kwargs).probe(AS_OF)
    for problem in result.problems:
        assert isinstance(problem, WarehouseProblem)
        assert problem.message and "\n" not in problem.message
        assert PASSWORD not in problem.message
    return result


def only(result: WarehouseProbe) -> WarehouseProblem:
    """The single problem of ``result``."""
    assert len(result.problems) == 1, result.problems
    return result.problems[0]


def make_warehouse(path: Path, **kwargs: Any) -> str:
    """A warehouse file at ``path`` (DuckDB for ``.duckdb``, else SQLite) with the known rows."""
    backend = "duckdb" if path.suffix == ".duckdb" else "sqlite"
    url = f"{backend}:///{path}"
    engine = sa.create_engine(url)
    load_warehouse(engine, **kwargs)
    engine.dispose()
    return url


def write_model(tmp_path: Path, sql: str, name: str = "model.sql") -> Path:
    path = tmp_path / name
    path.write_text(sql, encoding="utf-8")
    return path


@pytest.fixture
def duckdb_url(tmp_path: Path) -> str:
    return make_warehouse(tmp_path / "warehouse.duckdb")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return make_warehouse(tmp_path / "warehouse.db", text_timestamps=True, integer_admin=True)


# -- good warehouses -------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["company", "workspace"])
@pytest.mark.parametrize("fixture", ["duckdb_url", "sqlite_url"])
def test_a_good_builtin_warehouse_has_no_problem(
    fixture: str, level: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(fixture)

    result = probe(url, account_level=level)

    assert result == WarehouseProbe(problems=(), columns=None)
    assert result.ok


def test_a_good_custom_model_returns_its_columns(tmp_path: Path, duckdb_url: str) -> None:
    # a CTE, ORDER BY, a bind parameter, a trailing ';' and comments: all fine
    model = write_model(
        tmp_path,
        "-- accounts by email domain\n"
        "WITH d AS (\n"
        "  SELECT split_part(email, '@', 2) AS domain, count(*) AS total_users,\n"
        "         min(created_at) AS first_seen\n"
        "  FROM users WHERE created_at < :as_of GROUP BY 1  -- only users there by then\n"
        ")\n"
        "SELECT * FROM d ORDER BY domain;  /* done */\n"
        "-- trailing comment; with a semicolon\n\n",
    )

    result = probe(duckdb_url, model=model)

    assert result == WarehouseProbe(problems=(), columns=("domain", "total_users", "first_seen"))


def test_the_custom_model_runs_with_no_rows(tmp_path: Path, duckdb_url: str) -> None:
    """A model that fails on its first row passes the probe: no row is read."""
    model = write_model(
        tmp_path, "SELECT email AS domain, CAST(email AS INTEGER) AS seats FROM users"
    )
    source = SqlUsageSource(duckdb_url, taxonomy=TAXONOMY, model=model)

    assert source.probe(AS_OF) == WarehouseProbe(problems=(), columns=("domain", "seats"))
    with pytest.raises(Exception, match="Conversion Error"):
        list(source.read_accounts(AS_OF, UsageReadStats()))


def test_probing_leaves_the_warehouse_untouched_and_unlocked(duckdb_url: str) -> None:
    assert probe(duckdb_url).ok

    engine = sa.create_engine(duckdb_url)
    with engine.begin() as conn:  # a writer can open it right away
        conn.exec_driver_sql("CREATE TABLE after_probe (x INTEGER)")
        assert conn.exec_driver_sql("SELECT count(*) FROM events").scalar_one() == 25
    engine.dispose()


# -- the URL and the connection --------------------------------------------------------------


def test_an_unreachable_server(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://reader:{PASSWORD}@127.0.0.1:1/analytics"

    problem = only(probe(url))

    assert problem.key == URL_KEY
    assert problem.message.startswith(
        "cannot connect to the warehouse postgresql+psycopg://reader:***@127.0.0.1:1/analytics ("
    )
    assert problem.message.endswith(
        "check warehouse.url, that the server is running and that this machine can reach it"
    )


@pytest.mark.parametrize("name", ["nope.duckdb", "nope.db"])
def test_a_missing_file_is_reported_and_never_created(tmp_path: Path, name: str) -> None:
    backend = "duckdb" if name.endswith(".duckdb") else "sqlite"

    problem = only(probe(f"{backend}:///{tmp_path / name}"))

    assert problem == WarehouseProblem(
        URL_KEY,
        f"warehouse file not found: {tmp_path / name} (pls-sync never creates it): "
        "check the path in warehouse.url",
    )
    assert list(tmp_path.iterdir()) == []


def test_a_directory_is_not_a_database(tmp_path: Path) -> None:
    problem = only(probe(f"duckdb:///{tmp_path}"))

    assert problem.key == URL_KEY
    assert problem.message == (
        f"{tmp_path} is a directory, not a DuckDB database file: "
        "point warehouse.url at the database file"
    )


@pytest.mark.parametrize(("backend", "kind"), [("duckdb", "DuckDB"), ("sqlite", "SQLite")])
def test_a_text_file_is_not_a_database(tmp_path: Path, backend: str, kind: str) -> None:
    path = tmp_path / "export.csv"
    path.write_text("user_id,email\n1,a@acme.com\n" * 200)

    problem = only(probe(f"{backend}:///{path}"))

    assert problem == WarehouseProblem(
        URL_KEY, f"{path} is not a {kind} database file: point warehouse.url at a {kind} database"
    )


@pytest.mark.parametrize(
    ("backend", "kind", "other", "scheme"),
    [("duckdb", "DuckDB", "SQLite", "sqlite"), ("sqlite", "SQLite", "DuckDB", "duckdb")],
)
def test_a_database_of_the_other_kind(
    tmp_path: Path, backend: str, kind: str, other: str, scheme: str
) -> None:
    path = Path(make_warehouse(tmp_path / f"w.{scheme}").partition(":///")[2])

    problem = only(probe(f"{backend}:///{path}"))

    assert problem == WarehouseProblem(
        URL_KEY,
        f"{path} is a {other} database, not a {kind} database file: "
        f"write warehouse.url as {scheme}:///{path}",
    )


def test_an_empty_file_is_an_empty_sqlite_database_but_no_duckdb_one(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()

    duckdb_problem = only(probe(f"duckdb:///{path}"))
    sqlite_problems = probe(f"sqlite:///{path}").problems

    assert duckdb_problem.message.startswith(f"{path} is not a DuckDB database file")
    assert [p.key for p in sqlite_problems] == [USERS_KEY, EVENTS_KEY]  # no tables in it


def test_a_non_database_file_with_a_custom_model_is_one_url_problem(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)
    model = write_model(tmp_path, "SELECT domain FROM plans")

    problem = only(probe(f"sqlite:///{path}", model=model))

    assert problem.key == URL_KEY and "is not a SQLite database file" in problem.message


def test_a_missing_driver() -> None:
    pytest.importorskip("sqlalchemy.dialects.postgresql.psycopg2")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("psycopg2 is installed")

    problem = only(probe(f"postgresql+psycopg2://u:{PASSWORD}@db.example/x"))

    assert problem.key == URL_KEY
    assert problem.message == (
        "the database driver of the warehouse URL postgresql+psycopg2://u:***@db.example/x is "
        "not installed (No module named 'psycopg2'): install it, or name an installed driver "
        "in warehouse.url"
    )


# -- the built-in model's tables -------------------------------------------------------------


def test_both_missing_tables_at_once(tmp_path: Path) -> None:
    url = make_warehouse(tmp_path / "w.db", skip_tables=("users", "events"))

    result = probe(url, users_table="people", events_table="activity")

    assert result.problems == (
        WarehouseProblem(
            USERS_KEY,
            "table 'people' not found: create it, or set warehouse.users_table to the table "
            "that holds the users",
        ),
        WarehouseProblem(
            EVENTS_KEY,
            "table 'activity' not found: create it, or set warehouse.events_table to the table "
            "that holds the events",
        ),
    )


def test_every_missing_column_of_both_tables_at_once(tmp_path: Path) -> None:
    url = make_warehouse(tmp_path / "w.duckdb", drop_columns=("email", "is_admin", "occurred_at"))

    result = probe(url)

    assert result.problems == (
        WarehouseProblem(
            USERS_KEY,
            "table 'users' is missing column(s): email, is_admin "
            "(the built-in model reads user_id, email, created_at, is_admin)",
        ),
        WarehouseProblem(
            EVENTS_KEY,
            "table 'events' is missing column(s): occurred_at "
            "(the built-in model reads user_id, event_name, occurred_at)",
        ),
    )


def test_the_workspace_level_needs_workspace_columns(tmp_path: Path) -> None:
    url = make_warehouse(tmp_path / "w.db", drop_columns=("workspace_id",))

    assert probe(url).ok
    result = probe(url, account_level="workspace")

    assert [p.key for p in result.problems] == [USERS_KEY, EVENTS_KEY]
    assert all("missing column(s): workspace_id" in p.message for p in result.problems)


@pytest.mark.parametrize("backend", ["duckdb", "sqlite"])
def test_a_time_column_that_is_a_number(tmp_path: Path, backend: str) -> None:
    url = f"{backend}:///{tmp_path / 'epoch.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE users (user_id INTEGER, email TEXT, created_at TIMESTAMP, "
            "is_admin BOOLEAN)"
        )
        conn.exec_driver_sql(
            "CREATE TABLE events (user_id INTEGER, event_name TEXT, occurred_at BIGINT)"
        )
    engine.dispose()

    problem = only(probe(url))

    assert problem.key == EVENTS_KEY
    # DuckDB's reflection goes through information_schema, which maps BIGINT to INTEGER
    assert re.fullmatch(
        r"column events\.occurred_at is (BIGINT|INTEGER): the built-in model needs a "
        r"timestamp, a date or ISO 8601 text \(convert it in a view\)",
        problem.message,
    )
    with pytest.raises(WarehouseError, match="occurred_at is"):  # the run says the same
        list(SqlUsageSource(url, taxonomy=TAXONOMY).read_accounts(AS_OF, UsageReadStats()))


# -- the custom model ------------------------------------------------------------------------


def model_problem(tmp_path: Path, url: str, sql: str | bytes, **kwargs: Any) -> WarehouseProblem:
    path = tmp_path / "model.sql"
    if isinstance(sql, bytes):
        path.write_bytes(sql)
    else:
        path.write_text(sql, encoding="utf-8")
    problem = only(probe(url, model=path, **kwargs))
    assert problem.key == MODEL_KEY
    return problem


def test_a_model_with_a_syntax_error_reports_the_databases_words(
    tmp_path: Path, duckdb_url: str
) -> None:
    problem = model_problem(tmp_path, duckdb_url, "SELEC domain FROM users;\n")

    assert problem.message == (
        f"model {tmp_path / 'model.sql'} does not run on {duckdb_url}: "
        'Parser Error: syntax error at or near "SELEC"'
    )


def test_a_model_reading_an_unknown_table(tmp_path: Path, sqlite_url: str) -> None:
    problem = model_problem(tmp_path, sqlite_url, "SELECT domain, seats FROM plans")

    assert problem.message == (
        f"model {tmp_path / 'model.sql'} does not run on {sqlite_url}: no such table: plans"
    )


@pytest.mark.parametrize(
    ("level", "sql", "missing", "returns"),
    [
        ("company", "SELECT 1 AS seats, 2 AS mrr", "domain", "seats, mrr"),
        ("workspace", "SELECT 'acme.com' AS Domain, 1 AS seats", "workspace_id", "Domain, seats"),
    ],
)
def test_a_model_without_its_key_columns(
    tmp_path: Path, duckdb_url: str, level: str, sql: str, missing: str, returns: str
) -> None:
    path = write_model(tmp_path, sql)

    result = probe(duckdb_url, model=path, account_level=level)

    needed = "domain" if level == "company" else "domain, workspace_id"
    assert result.problems == (
        WarehouseProblem(
            MODEL_KEY,
            f"model {path} must return column(s) {needed}; missing: {missing} "
            f"(it returns: {returns}): add them to its SELECT",
        ),
    )
    assert result.columns == tuple(returns.split(", "))  # the lead still sees what it returns


def test_a_model_using_an_unknown_parameter(tmp_path: Path, duckdb_url: str) -> None:
    problem = model_problem(
        tmp_path, duckdb_url, "SELECT 'acme.com' AS domain WHERE :since_1y < :as_of"
    )

    assert problem.message == (
        f"model {tmp_path / 'model.sql'} uses unknown parameter(s) :since_1y; available: "
        ":as_of, :since_7d, :since_14d, :since_28d, :since_56d, :since_63d"
    )


def test_a_model_with_two_statements(tmp_path: Path, duckdb_url: str) -> None:
    problem = model_problem(tmp_path, duckdb_url, "SELECT 'a.com' AS domain; SELECT 2;")

    assert problem.message == (
        f"model {tmp_path / 'model.sql'} holds more than one statement: "
        "a model is one SELECT returning one row per account"
    )


def test_semicolons_inside_strings_and_comments_are_not_statements(
    tmp_path: Path, duckdb_url: str
) -> None:
    path = write_model(
        tmp_path,
        'SELECT \'acme.com;\' AS domain, "a;b" FROM (SELECT 1 AS "a;b") -- x; y\n/* ; */ ;',
    )

    assert probe(duckdb_url, model=path) == WarehouseProbe((), ("domain", "a;b"))


def test_an_empty_model(tmp_path: Path, duckdb_url: str) -> None:
    problem = model_problem(tmp_path, duckdb_url, "-- to do\n;\n")

    assert problem.message == f"model {tmp_path / 'model.sql'} holds no SQL: write a SELECT"


def test_a_missing_or_unreadable_model_file(tmp_path: Path, duckdb_url: str) -> None:
    missing = only(probe(duckdb_url, model=tmp_path / "nope.sql"))
    not_utf8 = model_problem(tmp_path, duckdb_url, b"SELECT '\xff' AS domain")

    assert missing == WarehouseProblem(
        MODEL_KEY,
        f"cannot read the model SQL file {tmp_path / 'nope.sql'}: No such file or directory: "
        "check warehouse.model",
    )
    assert not_utf8.message == (
        f"the model SQL file {tmp_path / 'model.sql'} is not UTF-8 text: save it as UTF-8"
    )


def test_a_statement_the_wrapper_refuses_is_run_itself(tmp_path: Path, sqlite_url: str) -> None:
    """SQLite takes no PRAGMA in a subquery: the model itself runs, fetching nothing."""
    path = write_model(tmp_path, "PRAGMA table_info(users)")

    result = probe(sqlite_url, model=path)

    assert result.columns == ("cid", "name", "type", "notnull", "dflt_value", "pk")
    assert [p.key for p in result.problems] == [MODEL_KEY]
    assert "missing: domain" in result.problems[0].message


def test_a_bad_model_and_an_unreachable_server_are_both_reported(tmp_path: Path) -> None:
    path = write_model(tmp_path, "SELECT 1 AS domain WHERE :since_2y IS NULL")

    result = probe(f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/db", model=path)

    assert [p.key for p in result.problems] == [MODEL_KEY, URL_KEY]
    assert result.columns is None


# -- Postgres --------------------------------------------------------------------------------


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A fresh schema on the test server, with the password-bearing form of its URL."""
    schema = f"pls_sync_probe_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    try:
        yield postgres_url, schema
    finally:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True))
        engine.dispose()


def with_password(url: str) -> str:
    """``url`` with a password set (the test server trusts loopback, so any password works)."""
    return sa.make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)


@pytest.mark.postgres
def test_postgres_good_schema_missing_schema_and_missing_table(
    pg_schema: tuple[str, str],
) -> None:
    url, schema = pg_schema
    engine = sa.create_engine(url)
    load_warehouse(engine, schema=schema, tz_events=True, skip_tables=("events",))
    engine.dispose()
    secret_url = with_password(url)
    describe = SqlUsageSource(secret_url, taxonomy={}).describe()

    missing_schema = only(probe(secret_url, schema=f"{schema}_nope"))
    missing_table = only(probe(secret_url, schema=schema))

    assert missing_schema == WarehouseProblem(
        SCHEMA_KEY, f"schema '{schema}_nope' not found in {describe}: check warehouse.schema"
    )
    assert ":***@" in describe
    assert missing_table == WarehouseProblem(
        EVENTS_KEY,
        f"table 'events' not found in schema '{schema}': create it, or set "
        "warehouse.events_table to the table that holds the events",
    )


@pytest.mark.postgres
def test_postgres_models_report_the_servers_error_without_the_password(
    pg_schema: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = pg_schema
    engine = sa.create_engine(url)
    load_warehouse(engine, schema=schema, tz_events=True)
    engine.dispose()
    secret_url = with_password(url)
    describe = SqlUsageSource(secret_url, taxonomy={}).describe()
    good = write_model(
        tmp_path,
        f"SELECT split_part(email, '@', 2) AS domain, count(*) AS total_users\n"
        f"FROM {schema}.users WHERE created_at < :as_of GROUP BY 1 ORDER BY 1;\n",
        "good.sql",
    )

    assert probe(secret_url, schema=schema).ok
    assert probe(secret_url, model=good) == WarehouseProbe((), ("domain", "total_users"))
    syntax = model_problem(tmp_path, secret_url, "SELEC 1")
    unknown = model_problem(tmp_path, secret_url, "SELECT domain FROM no_such_table")

    assert syntax.message == (
        f"model {tmp_path / 'model.sql'} does not run on {describe}: "
        'syntax error at or near "SELEC"'
    )
    assert unknown.message.endswith('relation "no_such_table" does not exist')
