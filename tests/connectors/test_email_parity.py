"""Email parsing is the same on every dialect: one list of tricky emails, identical results.

The rule (``connectors.sql_constructs.email_host``): surrounding spaces (U+0020) are trimmed;
a value with exactly one ``@``, something before it, something after it and no space left has
host = the text after the ``@``; anything else, NULL included, is ``''`` (junk, skipped). The
reader lower-cases the host in Python and treats a host holding other whitespace as junk.

Checked as properties on real DuckDB, SQLite and (marker ``postgres``) PostgreSQL databases:
the SQL host of every email equals a pure-Python oracle, and reading the built-in model gives
identical accounts and identical skip counts on every database, equal to the oracle's.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.sql_constructs import email_host
from connectors.warehouse import SqlUsageSource
from pls_sync.domains import classify_host
from pls_sync.models import ProductAccount, UsageReadStats

AS_OF = datetime(2024, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)
TRICKY: list[str | None] = [
    "a@acme.com",
    "A@ACME.COM",
    "B@Eng.Acme.com",
    " a@acme.com ",
    "   padded@acme.com",
    "a@acme.com.",
    "a@b@c.com",
    "a@@acme.com",
    "@acme.com",
    "a@",
    "@",
    "",
    " ",
    None,
    "no-at-sign.example.com",
    "john doe@acme.com",
    "john@acme .com",
    "a@acme.com\t",
    "\ta@acme.com",
    "a@acme.com\n",
    "nb\u00a0sp@acme.com",  # a no-break space is not U+0020: kept in the local part
    "a@acme.com\u00a0",  # ... but a host holding it is junk
    "jörg@MÜNCHEN.de",
    "x@münchen.de",
    "élodie@ÉCOLE.fr",
    "δοκιμή@ΠΑΡΆΔΕΙΓΜΑ.ΕΛ",
    "wide@ＡＣＭＥ.com",
    "i@İSTANBUL.com.tr",
    "user@xn--mnchen-3ya.de",
    "%@acme.com",
    "_@acme.com",
    "a\\b@acme.com",
    "o'brien@acme.com",
    "a@gmail.com",
    "A@GMAIL.COM",
    "tmp@mailinator.com",
    "root@localhost",
    "root@10.0.0.1",
    "x@eng.acme.co.uk",
    "y@ACME.CO.UK",
]


def sql_host(email: str | None) -> str:
    """The oracle of the SQL ``email_host``: the text after the only ``@``, else ``''``."""
    if email is None:
        return ""
    value = email.strip(" ")
    local, at, host = value.partition("@")
    if not at or not local or not host or "@" in host or " " in value:
        return ""
    return host


def reader_host(email: str | None) -> str:
    """The oracle of the host the reader classifies: lower-cased, whitespace inside is junk."""
    host = sql_host(email)
    return "" if re.search(r"\s", host) else host.lower()


def load_users(engine: sa.Engine, schema: str | None = None) -> None:
    """One user per tricky email (three workspaces), each with two events in the window."""
    meta = sa.MetaData(schema=schema)
    users = sa.Table(
        "users",
        meta,
        sa.Column("user_id", sa.Integer),
        sa.Column("email", sa.String(200)),
        sa.Column("workspace_id", sa.Integer),
        sa.Column("created_at", sa.DateTime),
        sa.Column("is_admin", sa.Boolean),
    )
    events = sa.Table(
        "events",
        meta,
        sa.Column("user_id", sa.Integer),
        sa.Column("workspace_id", sa.Integer),
        sa.Column("event_name", sa.String(100)),
        sa.Column("occurred_at", sa.DateTime),
    )
    meta.create_all(engine)
    start = datetime(2024, 1, 1)
    with engine.begin() as conn:
        conn.execute(
            users.insert(),
            [
                {
                    "user_id": i,
                    "email": email,
                    "workspace_id": i % 3,
                    "created_at": start + i * DAY,
                    "is_admin": i % 4 == 0,
                }
                for i, email in enumerate(TRICKY)
            ],
        )
        conn.execute(
            events.insert(),
            [
                {
                    "user_id": i,
                    "workspace_id": i % 3,
                    "event_name": name,
                    "occurred_at": datetime(2024, 5, 30) - i * timedelta(hours=1),
                }
                for i in range(len(TRICKY))
                for name in ("created_board", "logged_in")
            ],
        )


def sql_hosts(url: str, schema: str | None = None) -> list[str]:
    """``email_host`` of every user's email, computed by the database, in user order."""
    engine = sa.create_engine(url)
    users = sa.table("users", sa.column("user_id"), sa.column("email"), schema=schema)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(email_host(users.c.email)).order_by(users.c.user_id)).all()
    engine.dispose()
    return [row[0] for row in rows]


Reading = tuple[list[ProductAccount], dict[str, Any]]


def read(url: str, level: str, schema: str | None = None) -> Reading:
    """Every account and every count the reader keeps, at ``level``."""
    stats = UsageReadStats()
    source = SqlUsageSource(
        url, taxonomy={"core_feature": ["created_board"]}, account_level=level, schema=schema
    )
    accounts = list(source.read_accounts(AS_OF, stats))
    counts = {
        "rows_read": stats.rows_read,
        "accounts": stats.accounts,
        "users": stats.users,
        "skipped_users": stats.skipped_users,
        "skipped_rows": stats.skipped_rows,
        "skipped_reasons": stats.skipped_reasons,
        "dropped_events": stats.dropped_events,
    }
    return accounts, counts


def oracle_company_level() -> tuple[set[str], Counter[str]]:
    """Accounts and skips the company level must give, computed in Python alone."""
    domains: set[str] = set()
    skipped: Counter[str] = Counter()
    for email in TRICKY:
        verdict = classify_host(reader_host(email))
        if verdict.reason is None and verdict.domain is not None:
            domains.add(verdict.domain)
        else:
            skipped[verdict.reason or "invalid"] += 1
    return domains, skipped


@pytest.fixture
def file_urls(tmp_path: Path) -> dict[str, str]:
    urls = {
        "duckdb": f"duckdb:///{tmp_path / 'emails.duckdb'}",
        "sqlite": f"sqlite:///{tmp_path / 'emails.db'}",
    }
    for url in urls.values():
        engine = sa.create_engine(url)
        load_users(engine)
        engine.dispose()
    return urls


def test_the_oracle_reads_the_rule_as_written() -> None:
    assert [sql_host(e) for e in ("a@b@c.com", "@c.com", "a@", "a@@b.com", None, "")] == [""] * 6
    assert sql_host(" A@B.COM ") == "B.COM" and reader_host(" A@B.COM ") == "b.com"
    assert sql_host("a@b.com.") == "b.com." and reader_host("a@acme.com\t") == ""


@pytest.mark.parametrize("backend", ["duckdb", "sqlite"])
def test_every_email_gets_the_oracles_host(file_urls: dict[str, str], backend: str) -> None:
    assert sql_hosts(file_urls[backend]) == [sql_host(e) for e in TRICKY]


@pytest.mark.parametrize("level", ["company", "workspace"])
def test_duckdb_and_sqlite_read_identical_accounts_and_skips(
    file_urls: dict[str, str], level: str
) -> None:
    duckdb_reading = read(file_urls["duckdb"], level)
    sqlite_reading = read(file_urls["sqlite"], level)

    assert duckdb_reading == sqlite_reading
    assert duckdb_reading[0], "the list must form accounts"


def test_the_company_level_matches_the_python_oracle(file_urls: dict[str, str]) -> None:
    accounts, counts = read(file_urls["duckdb"], "company")
    domains, skipped = oracle_company_level()

    assert {a.key for a in accounts} == domains
    assert counts["skipped_reasons"] == dict(skipped)
    assert counts["users"] + counts["skipped_users"] == len(TRICKY)
    acme = next(a for a in accounts if a.key == "acme.com")
    # every spelling of acme.com (case, spaces, trailing dot, subdomain, full-width letters,
    # which IDNA folds) is one account
    assert acme.hosts == ("acme.com", "acme.com.", "eng.acme.com", "\uff41\uff43\uff4d\uff45.com")
    assert {"xn--mnchen-3ya.de", "xn--cole-9oa.fr"} <= domains  # unicode hosts, either case
    assert counts["dropped_events"] == {}


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[str]:
    schema = f"pls_sync_emails_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    try:
        load_users(engine, schema=schema)
        yield schema
    finally:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True))
        engine.dispose()


@pytest.mark.postgres
def test_postgres_agrees_with_duckdb_and_sqlite(
    postgres_url: str, postgres_schema: str, file_urls: dict[str, str]
) -> None:
    assert sql_hosts(postgres_url, postgres_schema) == [sql_host(e) for e in TRICKY]
    for level in ("company", "workspace"):
        postgres_reading = read(postgres_url, level, schema=postgres_schema)
        assert postgres_reading == read(file_urls["duckdb"], level)
        assert postgres_reading == read(file_urls["sqlite"], level)
