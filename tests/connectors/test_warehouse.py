"""The warehouse reader on small hand-built warehouses whose every metric is known.

The same rows are loaded into DuckDB, SQLite (timestamps stored as ISO text with a ``T``) and,
when ``PLS_SYNC_TEST_POSTGRES_URL`` is set, Postgres (events with ``timestamptz``). ``AS_OF`` is
2024-06-01 00:00 UTC; windows are ``[AS_OF - N days, AS_OF)``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

from connectors.warehouse import BUILTIN_METRICS, SqlUsageSource
from pls_sync.errors import WarehouseError
from pls_sync.models import ProductAccount, UsageReadStats
from pls_sync.scoring import Component, Condition, ScoringModel, Signal, score_account

AS_OF = datetime(2024, 6, 1, tzinfo=UTC)
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
QUOTED_FEATURE = "used_o'reilly_export"  # config text with a quote: must travel as a bound value
INJECTION = "x'); DROP TABLE users; --"

TAXONOMY: dict[str, list[str]] = {
    "legal_page_view": ["viewed_terms_of_use", "viewed_privacy_policy", INJECTION],
    "pricing_page_view": ["viewed_pricing", "viewed_plans"],
    "admin_change": ["admin_transferred", "admin_added"],
    "core_feature": ["created_board", "shared_board", "commented", QUOTED_FEATURE],
    "enterprise_feature": ["configured_sso", "enabled_scim"],
    "ignored": ["viewed_webinar", "landing_page_view"],
}


def naive(value: datetime) -> datetime:
    return value.replace(tzinfo=None)


# user_id, email, workspace_id, created_at, is_admin
USERS: list[tuple[int, str | None, int, datetime, bool]] = [
    (1, "a@acme.com", 10, datetime(2024, 1, 1, tzinfo=UTC), True),
    (2, "B@ENG.Acme.com", 10, AS_OF - 7 * DAY, False),  # new this week (boundary included)
    (3, "c@acme.com", 11, AS_OF - 7 * DAY - SECOND, False),  # a "usual" week sign-up
    (4, "d@gmail.com", 20, datetime(2024, 5, 1, tzinfo=UTC), False),  # free mail
    (5, "junk-without-at", 21, datetime(2024, 5, 1, tzinfo=UTC), False),  # no '@'
    (6, None, 21, datetime(2024, 5, 1, tzinfo=UTC), False),  # no email at all
    (7, "e@beta.io", 30, AS_OF + DAY, True),  # created after as_of: not there yet
    (8, "f@beta.io", 30, datetime(2024, 3, 1, tzinfo=UTC), True),
    (9, "tmp@mailinator.com", 30, datetime(2024, 5, 1, tzinfo=UTC), False),  # disposable
    (10, "g@zeta.com", 40, datetime(2024, 2, 1, tzinfo=UTC), False),
    (11, "h@alpha.com", 40, datetime(2024, 2, 2, tzinfo=UTC), False),
]

# user_id, workspace_id, event_name, occurred_at
EVENTS: list[tuple[int, int, str, datetime]] = [
    (1, 10, "created_board", AS_OF - 28 * DAY),  # 28d window start: included
    (1, 10, "created_board", datetime(2024, 5, 20, tzinfo=UTC)),
    (1, 10, "viewed_terms_of_use", AS_OF - 14 * DAY),  # 14d window start: included
    (1, 10, "viewed_privacy_policy", AS_OF - 14 * DAY - SECOND),  # just outside 14d
    (1, 10, "viewed_webinar", datetime(2024, 5, 30, tzinfo=UTC)),  # ignored
    (1, 10, "admin_transferred", datetime(2024, 5, 10, tzinfo=UTC)),
    (1, 10, "logged_in", AS_OF),  # at as_of: windows are half-open, excluded
    (1, 10, "logged_in", AS_OF - SECOND),
    (2, 10, "configured_sso", datetime(2024, 5, 30, tzinfo=UTC)),
    (2, 10, "shared_board", datetime(2024, 5, 31, tzinfo=UTC)),
    (2, 10, "created_board", datetime(2024, 5, 29, tzinfo=UTC)),  # same feature as user 1
    (2, 10, "landing_page_view", datetime(2024, 5, 31, tzinfo=UTC)),  # ignored
    (3, 11, "viewed_webinar", datetime(2024, 5, 30, tzinfo=UTC)),  # only ignored: not active
    (3, 11, "logged_in", datetime(2024, 4, 10, tzinfo=UTC)),  # days 28-56
    (3, 11, "logged_in", AS_OF - 63 * DAY),  # first second of the usual weeks
    (3, 11, "logged_in", AS_OF - 63 * DAY - SECOND),  # before every window
    (4, 20, "created_board", datetime(2024, 5, 30, tzinfo=UTC)),
    (5, 21, "logged_in", datetime(2024, 5, 30, tzinfo=UTC)),
    (7, 30, "logged_in", datetime(2024, 5, 31, tzinfo=UTC)),  # user not there yet
    (8, 30, "viewed_pricing", datetime(2024, 5, 26, tzinfo=UTC)),
    (8, 30, "viewed_plans", datetime(2024, 5, 27, tzinfo=UTC)),
    (8, 30, "configured_sso", datetime(2024, 5, 1, tzinfo=UTC)),  # outside 28d
    (8, 30, QUOTED_FEATURE, datetime(2024, 5, 28, tzinfo=UTC)),
    (9, 30, "logged_in", datetime(2024, 5, 30, tzinfo=UTC)),
    (99, 30, "logged_in", datetime(2024, 5, 30, tzinfo=UTC)),  # no such user
]

ACME = {
    "total_users": 3,
    "active_users_7d": 2,
    "active_users_28d": 2,
    "new_users_7d": 1,
    "usual_weekly_new_users": 1 / 8,
    "events_7d": 4,
    "usual_weekly_events": 7 / 8,
    "events_28d": 9,
    "events_prev_28d": 1,
    "core_features_28d": 2,  # created_board on both hosts counts once, plus shared_board
    "enterprise_features_28d": 1,
    "admin_changes_28d": 1,
    "legal_page_views_14d": 1,
    "pricing_page_views_14d": 0,
    "admins": 1,
}
BETA = {
    "total_users": 1,
    "active_users_7d": 1,
    "active_users_28d": 1,
    "new_users_7d": 0,
    "usual_weekly_new_users": 0,
    "events_7d": 3,
    "usual_weekly_events": 1 / 8,
    "events_28d": 3,
    "events_prev_28d": 1,
    "core_features_28d": 1,
    "enterprise_features_28d": 0,
    "admin_changes_28d": 0,
    "legal_page_views_14d": 0,
    "pricing_page_views_14d": 2,
    "admins": 1,
}


def load_warehouse(
    engine: sa.Engine,
    *,
    schema: str | None = None,
    text_timestamps: bool = False,
    tz_events: bool = False,
    integer_admin: bool = False,
    drop_columns: tuple[str, ...] = (),
    skip_tables: tuple[str, ...] = (),
) -> None:
    """Create ``users`` and ``events`` with the known rows, in the dialect's own types."""
    ts: sa.types.TypeEngine[Any] = sa.String(40) if text_timestamps else sa.DateTime()
    ev_ts: sa.types.TypeEngine[Any] = sa.DateTime(timezone=True) if tz_events else ts
    admin: sa.types.TypeEngine[Any] = sa.Integer() if integer_admin else sa.Boolean()

    def stamp(value: datetime, aware: bool = False) -> Any:
        if text_timestamps:
            return naive(value).isoformat()
        return value if aware else naive(value)

    meta = sa.MetaData(schema=schema)
    user_cols: list[sa.Column[Any]] = [
        sa.Column("user_id", sa.BigInteger),
        sa.Column("email", sa.String(200)),
        sa.Column("workspace_id", sa.BigInteger),
        sa.Column("created_at", ts),
        sa.Column("is_admin", admin),
        sa.Column("title", sa.String(100)),
        sa.Column("seniority", sa.String(40)),
        sa.Column("department", sa.String(40)),
        sa.Column("company_size", sa.String(40)),
    ]
    event_cols: list[sa.Column[Any]] = [
        sa.Column("user_id", sa.BigInteger),
        sa.Column("workspace_id", sa.BigInteger),
        sa.Column("event_name", sa.String(100)),
        sa.Column("occurred_at", ev_ts),
    ]
    users = sa.Table("users", meta, *[c for c in user_cols if c.name not in drop_columns])
    events = sa.Table("events", meta, *[c for c in event_cols if c.name not in drop_columns])
    tables = [t for t in (users, events) if t.name not in skip_tables]
    meta.create_all(engine, tables=tables)
    with engine.begin() as conn:
        if users in tables:
            rows = [
                {
                    "user_id": uid,
                    "email": email,
                    "workspace_id": ws,
                    "created_at": stamp(created),
                    "is_admin": int(is_admin) if integer_admin else is_admin,
                    "title": "CTO" if uid == 1 else None,
                }
                for uid, email, ws, created, is_admin in USERS
            ]
            conn.execute(
                users.insert(),
                [{k: v for k, v in r.items() if k not in drop_columns} for r in rows],
            )
        if events in tables:
            rows = [
                {
                    "user_id": uid,
                    "workspace_id": ws,
                    "event_name": name,
                    "occurred_at": stamp(at, tz_events),
                }
                for uid, ws, name, at in EVENTS
            ]
            conn.execute(
                events.insert(),
                [{k: v for k, v in r.items() if k not in drop_columns} for r in rows],
            )


@pytest.fixture
def duckdb_url(tmp_path: Path) -> str:
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    engine = sa.create_engine(url)
    load_warehouse(engine)
    engine.dispose()
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = sa.create_engine(url)
    load_warehouse(engine, text_timestamps=True, integer_admin=True)
    engine.dispose()
    return url


def read(
    source: SqlUsageSource, as_of: datetime = AS_OF
) -> tuple[dict[str, ProductAccount], UsageReadStats]:
    stats = UsageReadStats()
    accounts = list(source.read_accounts(as_of, stats))
    assert [a.key for a in accounts] == sorted(a.key for a in accounts)
    return {a.key: a for a in accounts}, stats


def assert_metrics(account: ProductAccount, expected: dict[str, float]) -> None:
    assert set(account.metrics) == set(BUILTIN_METRICS)
    assert all(isinstance(v, float) for v in account.metrics.values())
    assert dict(account.metrics) == pytest.approx(expected)


def assert_company_level(url: str, **kwargs: Any) -> None:
    accounts, stats = read(SqlUsageSource(url, taxonomy=TAXONOMY, **kwargs))
    assert sorted(accounts) == ["acme.com", "alpha.com", "beta.io", "zeta.com"]
    acme = accounts["acme.com"]
    assert_metrics(acme, ACME)
    assert acme.domain == "acme.com"
    assert acme.hosts == ("acme.com", "eng.acme.com")
    assert acme.first_seen == datetime(2024, 1, 1, tzinfo=UTC)
    assert acme.workspace_id is None
    assert_metrics(accounts["beta.io"], BETA)
    assert accounts["beta.io"].first_seen == datetime(2024, 3, 1, tzinfo=UTC)
    zeta = accounts["zeta.com"].metrics
    assert zeta["total_users"] == 1 and zeta["events_28d"] == 0 and zeta["active_users_28d"] == 0
    # hosts: acme.com, eng.acme.com, gmail.com, '' (no '@' or no email), beta.io,
    # mailinator.com, zeta.com, alpha.com
    assert stats.rows_read == 8
    assert stats.accounts == 4
    assert stats.users == 3 + 1 + 1 + 1
    assert stats.skipped_reasons == {"free_mail": 1, "invalid": 2, "disposable": 1}
    assert stats.skipped_users == 4
    assert stats.skipped_rows == 3


def test_company_level_on_duckdb(duckdb_url: str) -> None:
    assert_company_level(duckdb_url)


def test_company_level_on_sqlite_with_text_timestamps(sqlite_url: str) -> None:
    assert_company_level(sqlite_url)


def test_timestamptz_events_and_naive_as_of(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'tz.duckdb'}"
    engine = sa.create_engine(url)
    load_warehouse(engine, tz_events=True)
    engine.dispose()
    stats = UsageReadStats()
    accounts = {
        a.key: a for a in SqlUsageSource(url, taxonomy=TAXONOMY).read_accounts(naive(AS_OF), stats)
    }
    assert_metrics(accounts["acme.com"], ACME)
    assert_metrics(accounts["beta.io"], BETA)


def test_windows_move_with_as_of(duckdb_url: str) -> None:
    """One second later, the events at the old as_of and the old window starts shift."""
    accounts, _ = read(SqlUsageSource(duckdb_url, taxonomy=TAXONOMY), AS_OF + SECOND)
    acme = accounts["acme.com"].metrics
    assert acme["events_28d"] == ACME["events_28d"] - 1 + 1  # lost 28d start, gained AS_OF
    assert acme["legal_page_views_14d"] == 0  # the view at AS_OF - 14d has left the window
    assert acme["new_users_7d"] == 0  # user 2 was created exactly 7 days before the old as_of


def test_workspace_level(duckdb_url: str) -> None:
    source = SqlUsageSource(duckdb_url, taxonomy=TAXONOMY, account_level="workspace")
    accounts, stats = read(source)
    assert sorted(accounts) == ["workspace:10", "workspace:11", "workspace:30", "workspace:40"]
    ws10 = accounts["workspace:10"]
    assert ws10.domain == "acme.com" and ws10.workspace_id == "10"
    assert ws10.hosts == ("acme.com", "eng.acme.com")
    assert ws10.metrics["total_users"] == 2
    assert ws10.metrics["events_28d"] == 9
    assert ws10.metrics["core_features_28d"] == 2
    assert ws10.metrics["usual_weekly_events"] == 5 / 8
    ws11 = accounts["workspace:11"]
    assert ws11.domain == "acme.com"
    assert ws11.metrics["active_users_28d"] == 0 and ws11.metrics["usual_weekly_new_users"] == 1 / 8
    # beta.io plus a disposable address: the disposable member is skipped, as at company level
    ws30 = accounts["workspace:30"]
    assert ws30.domain == "beta.io" and ws30.hosts == ("beta.io",)
    assert_metrics(ws30, BETA)
    # one member at zeta.com, one at alpha.com: a tie goes to the first name
    assert accounts["workspace:40"].domain == "alpha.com"
    # ws 20 is free mail only, ws 21 junk only: not matchable; ws 30's disposable member skipped
    assert stats.skipped_reasons == {"free_mail": 1, "invalid": 2, "disposable": 1}
    assert stats.skipped_users == 4
    assert stats.users == 2 + 1 + 1 + 2
    assert stats.accounts == 4


def test_workspace_level_free_mail_members_count_toward_nothing(duckdb_url: str) -> None:
    """Free-mail members of acme's workspace are skipped as free_mail; none of their usage counts.

    Their events (7 and 28 days, a core and an enterprise feature only they used, an admin
    change, a legal page view, older usage), their admin flag and their early sign-up would all
    change workspace 10 if they counted.
    """
    source = SqlUsageSource(duckdb_url, taxonomy=TAXONOMY, account_level="workspace")
    before, before_stats = read(source)
    engine = sa.create_engine(duckdb_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO users (user_id, email, workspace_id, created_at, is_admin) "
                "VALUES (50, 'x@gmail.com', 10, :created, true), "
                "(51, 'y@Yahoo.com', 10, :created, false)"
            ),
            {"created": datetime(2023, 1, 1)},
        )
        conn.execute(
            sa.text(
                "INSERT INTO events (user_id, workspace_id, event_name, occurred_at) VALUES "
                "(50, 10, 'commented', :recent), (50, 10, 'enabled_scim', :recent), "
                "(50, 10, 'admin_added', :recent), (50, 10, 'viewed_terms_of_use', :recent), "
                "(51, 10, 'logged_in', :older)"
            ),
            {"recent": datetime(2024, 5, 30), "older": datetime(2024, 4, 1)},
        )
    engine.dispose()
    after, stats = read(source)
    assert after == before
    assert after["workspace:10"].hosts == ("acme.com", "eng.acme.com")
    assert after["workspace:10"].first_seen == datetime(2024, 1, 1, tzinfo=UTC)
    assert stats.skipped_reasons == {**before_stats.skipped_reasons, "free_mail": 1 + 2}
    assert stats.users == before_stats.users
    # their events were read with their users, not dropped
    assert stats.dropped_events == before_stats.dropped_events


def test_custom_model_company_level(tmp_path: Path, sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE plans (domain TEXT, seats, mrr, started TEXT)")
        conn.exec_driver_sql(
            "INSERT INTO plans VALUES "
            "('Acme.com', 5, 100.5, '2023-01-01 00:00:00'),"
            "('https://www.acme.com/', 2, 10, '2022-06-01 00:00:00'),"  # same company
            "('gmail.com', 1, 1, '2023-01-01 00:00:00'),"
            "('beta.io', 'n/a', 3, '2023-01-01 00:00:00'),"  # non-numeric metric
            "('not a domain', 1, 1, '2023-01-01 00:00:00'),"
            "('gamma.co.uk', NULL, 7, '2023-01-01 00:00:00'),"
            "('late.com', 1, 1, '2024-07-01 00:00:00')"  # after as_of
        )
    engine.dispose()
    model = tmp_path / "model.sql"
    model.write_text(
        "SELECT domain, seats AS total_users, mrr, started AS first_seen\n"
        "FROM plans WHERE started < :as_of\n"  # only the parameters used are bound
    )
    accounts, stats = read(SqlUsageSource(sqlite_url, taxonomy=TAXONOMY, model=model))
    assert sorted(accounts) == ["acme.com", "gamma.co.uk"]
    acme = accounts["acme.com"]
    assert dict(acme.metrics) == {"total_users": 7.0, "mrr": 110.5}
    assert acme.first_seen == datetime(2022, 6, 1, tzinfo=UTC)
    assert acme.hosts == ("acme.com",)
    # NULL is unknown, never 0; the row stands for one user
    assert dict(accounts["gamma.co.uk"].metrics) == {"total_users": None, "mrr": 7.0}
    assert stats.rows_read == 6
    # skips count users (total_users) when the row says, else one per row
    assert stats.skipped_reasons == {"free_mail": 1, "bad_metric": 1, "invalid": 1}
    assert stats.skipped_rows == 3
    assert stats.users == 7 + 1


# A scoring model over a custom model's ``seats``: the conditions that must not fire on NULL.
SEATS_MODEL = ScoringModel(
    components=(Component("seats", 1.0, ("seats",), ((0, 0), (10, 100)), "{value:.0f} seats"),),
    signals=(
        Signal("no_seats", Condition("seats", "<", 1), 10, "no seats"),
        Signal("zero_seats", Condition("seats", "==", 0), 10, "zero seats"),
        Signal("team", Condition("seats", ">=", 7), 10, "{seats:.0f} seats"),
        Signal("not_five", Condition("seats", "!=", 5), 10, "not five"),
    ),
)


def test_custom_model_null_metric_stays_unknown_through_scoring(
    tmp_path: Path, duckdb_url: str
) -> None:
    model = tmp_path / "seats.sql"
    model.write_text(
        "SELECT * FROM (VALUES\n"
        "  ('acme.com', 3, CAST(NULL AS INTEGER), CAST(NULL AS DECIMAL(10, 2))),\n"
        "  ('beta.io', 2, 0, 5.50),\n"
        "  ('gamma.com', 1, 4, 1.00),\n"
        "  ('eng.gamma.com', 1, NULL, 2.00)\n"  # same company: an unknown part, an unknown sum
        ") AS t(domain, total_users, seats, mrr)"
    )
    accounts, stats = read(SqlUsageSource(duckdb_url, taxonomy=TAXONOMY, model=model))
    assert dict(accounts["acme.com"].metrics) == {"total_users": 3.0, "seats": None, "mrr": None}
    assert dict(accounts["beta.io"].metrics) == {"total_users": 2.0, "seats": 0.0, "mrr": 5.5}
    assert dict(accounts["gamma.com"].metrics) == {"total_users": 2.0, "seats": None, "mrr": 3.0}
    assert stats.skipped_reasons == {}

    acme = score_account(accounts["acme.com"], SEATS_MODEL, AS_OF)
    assert acme.signals == ()
    assert acme.score == 0
    (seats,) = acme.components
    assert (seats.points, seats.metric, seats.value) == (0, None, None)
    assert seats.description == "seats unknown"
    assert score_account(accounts["gamma.com"], SEATS_MODEL, AS_OF).signals == ()
    beta = score_account(accounts["beta.io"], SEATS_MODEL, AS_OF)
    assert [s.name for s in beta.signals] == ["no_seats", "zero_seats", "not_five"]


def test_custom_model_bad_metrics_are_not_numbers_and_null_is_not_one(
    tmp_path: Path, duckdb_url: str
) -> None:
    model = tmp_path / "odd.sql"
    model.write_text(
        "SELECT * FROM (VALUES\n"
        "  ('acme.com', 4, CAST(NULL AS DOUBLE)),\n"
        "  ('beta.io', 5, CAST('inf' AS DOUBLE)),\n"
        "  ('gamma.com', NULL, CAST('-inf' AS DOUBLE)),\n"
        "  ('delta.com', 6, CAST('nan' AS DOUBLE)),\n"
        "  ('epsilon.com', NULL, 1.5)\n"
        ") AS t(domain, total_users, x)"
    )
    accounts, stats = read(SqlUsageSource(duckdb_url, taxonomy=TAXONOMY, model=model))
    assert sorted(accounts) == ["acme.com", "epsilon.com"]
    assert accounts["acme.com"].metrics == {"total_users": 4.0, "x": None}
    assert accounts["epsilon.com"].metrics == {"total_users": None, "x": 1.5}
    # skips count the row's users when known, else one; a NULL user count is one user too
    assert stats.skipped_reasons == {"bad_metric": 5 + 1 + 6}
    assert stats.skipped_rows == 3
    assert stats.users == 4 + 1


def test_custom_model_workspace_level_on_duckdb(tmp_path: Path, duckdb_url: str) -> None:
    model = tmp_path / "ws.sql"
    model.write_text(
        "SELECT u.workspace_id, max(split_part(u.email, '@', 2)) AS domain,\n"
        "       count(DISTINCT u.user_id) AS total_users,\n"
        "       count(e.user_id) FILTER (WHERE e.occurred_at >= :since_28d\n"
        "                                 AND e.occurred_at < :as_of) AS events_28d,\n"
        "       CASE WHEN u.workspace_id = 30 THEN 'NaN'::DOUBLE ELSE 0 END AS odd\n"
        "FROM users u LEFT JOIN events e ON e.user_id = u.user_id\n"
        "WHERE u.workspace_id IN (10, 30) GROUP BY u.workspace_id"
    )
    source = SqlUsageSource(duckdb_url, taxonomy=TAXONOMY, account_level="workspace", model=model)
    accounts, stats = read(source)
    assert list(accounts) == ["workspace:10"]
    assert accounts["workspace:10"].domain == "acme.com"
    assert accounts["workspace:10"].workspace_id == "10"
    # 7 of user 1 and 4 of user 2: ignored names count here, the model is the user's own SQL
    assert accounts["workspace:10"].metrics["events_28d"] == 11
    assert stats.skipped_reasons == {"bad_metric": 3}


def test_custom_model_errors(tmp_path: Path, duckdb_url: str) -> None:
    unknown = tmp_path / "unknown.sql"
    unknown.write_text("SELECT 'acme.com' AS domain WHERE :since_1y IS NOT NULL")
    with pytest.raises(WarehouseError, match=r":since_1y"):
        read(SqlUsageSource(duckdb_url, taxonomy=TAXONOMY, model=unknown))
    no_domain = tmp_path / "no_domain.sql"
    no_domain.write_text("SELECT 1 AS seats")
    with pytest.raises(WarehouseError, match="domain"):
        read(SqlUsageSource(duckdb_url, taxonomy=TAXONOMY, model=no_domain))
    with pytest.raises(WarehouseError, match="missing.sql"):
        read(SqlUsageSource(duckdb_url, taxonomy=TAXONOMY, model=tmp_path / "missing.sql"))


@pytest.mark.parametrize("backend", ["duckdb", "sqlite"])
def test_reads_are_read_only(tmp_path: Path, backend: str) -> None:
    url = f"{backend}:///{tmp_path / 'ro.db'}"
    engine = sa.create_engine(url)
    load_warehouse(engine)
    engine.dispose()
    model = tmp_path / "write.sql"
    model.write_text("CREATE TABLE hacked AS SELECT 'acme.com' AS domain")
    with pytest.raises(WarehouseError):
        read(SqlUsageSource(url, taxonomy=TAXONOMY, model=model))
    engine = sa.create_engine(url)
    assert not sa.inspect(engine).has_table("hacked")
    # and the file is not held open (DuckDB locks it): a writer can open it right away
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE after_read (x INTEGER)")
    engine.dispose()


def test_missing_columns_of_both_tables_are_named_at_once(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'cols.duckdb'}"
    engine = sa.create_engine(url)
    load_warehouse(engine, drop_columns=("is_admin", "occurred_at"))
    engine.dispose()
    with pytest.raises(WarehouseError) as caught:
        read(SqlUsageSource(url, taxonomy=TAXONOMY))
    message = str(caught.value)
    assert "'users' is missing column(s): is_admin" in message
    assert "'events' is missing column(s): occurred_at" in message


def test_workspace_level_needs_workspace_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ws.db'}"
    engine = sa.create_engine(url)
    load_warehouse(engine, drop_columns=("workspace_id",))
    engine.dispose()
    assert read(SqlUsageSource(url, taxonomy=TAXONOMY))[0]  # the company level does not need it
    with pytest.raises(WarehouseError, match="workspace_id"):
        read(SqlUsageSource(url, taxonomy=TAXONOMY, account_level="workspace"))


def test_missing_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tables.db'}"
    engine = sa.create_engine(url)
    load_warehouse(engine, skip_tables=("events",))
    engine.dispose()
    with pytest.raises(WarehouseError, match="table 'events' not found"):
        read(SqlUsageSource(url, taxonomy=TAXONOMY))
    with pytest.raises(WarehouseError, match="table 'activity' not found"):
        read(SqlUsageSource(url, taxonomy=TAXONOMY, events_table="activity"))


def test_missing_warehouse_file_is_not_created(tmp_path: Path) -> None:
    for url in (f"duckdb:///{tmp_path / 'nope.duckdb'}", f"sqlite:///{tmp_path / 'nope.db'}"):
        with pytest.raises(WarehouseError, match="not found"):
            read(SqlUsageSource(url, taxonomy=TAXONOMY))
    assert list(tmp_path.iterdir()) == []


def test_unreachable_warehouse_hides_the_password() -> None:
    url = "postgresql+psycopg://reader:s3cr3t-pw@127.0.0.1:1/analytics"
    source = SqlUsageSource(url, taxonomy=TAXONOMY)
    with pytest.raises(WarehouseError) as caught:
        read(source)
    assert "s3cr3t-pw" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    assert "s3cr3t-pw" not in source.describe()


def test_bad_url_and_unknown_dialect() -> None:
    with pytest.raises(WarehouseError, match="invalid warehouse URL"):
        SqlUsageSource("not a url", taxonomy=TAXONOMY)
    with pytest.raises(WarehouseError, match="no SQLAlchemy dialect"):
        SqlUsageSource("nosuchdialect://user:pw@host/db", taxonomy=TAXONOMY)
    with pytest.raises(WarehouseError, match="account_level"):
        SqlUsageSource("sqlite://", taxonomy=TAXONOMY, account_level="team")


def test_config_text_never_reaches_sql(duckdb_url: str) -> None:
    """Event names (quotes and all) and window bounds are bound values, never SQL text."""
    engine = sa.create_engine(duckdb_url)
    statements: list[str] = []
    parameters: list[Any] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def capture(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        statements.append(statement)
        parameters.append(params)

    accounts, _ = read(SqlUsageSource("ignored://", taxonomy=TAXONOMY, engine=engine))
    engine.dispose()
    assert accounts["beta.io"].metrics["core_features_28d"] == 1  # the quoted name matched
    query = next(s for s in statements if "GROUP BY" in s)
    for text in (QUOTED_FEATURE, "reilly", "DROP TABLE", "viewed_terms_of_use", "2024"):
        assert text not in query
    bound = repr(parameters[statements.index(query)])
    assert "reilly" in bound and "DROP TABLE users" in bound
    check = sa.create_engine(duckdb_url)
    with check.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM users")).scalar_one() == len(USERS)
    check.dispose()


def test_given_engine_is_used_and_kept(duckdb_url: str) -> None:
    engine = sa.create_engine(duckdb_url)
    source = SqlUsageSource("ignored://", taxonomy=TAXONOMY, engine=engine)
    first, _ = read(source)
    second, _ = read(source)
    assert first == second and "acme.com" in first
    engine.dispose()


def test_small_chunks_stream_every_row(duckdb_url: str) -> None:
    accounts, stats = read(SqlUsageSource(duckdb_url, taxonomy=TAXONOMY, chunk_size=1))
    assert stats.rows_read == 8 and len(accounts) == 4


def test_empty_taxonomy_still_counts_usage(duckdb_url: str) -> None:
    accounts, _ = read(SqlUsageSource(duckdb_url, taxonomy={}))
    acme = accounts["acme.com"].metrics
    assert acme["core_features_28d"] == 0 and acme["legal_page_views_14d"] == 0
    # without an ignored list the webinars and the landing page view count as usage
    assert acme["events_7d"] == ACME["events_7d"] + 3
    assert acme["active_users_7d"] == 3


@pytest.fixture
def postgres_schema(postgres_url: str) -> Iterator[tuple[str, str]]:
    schema = f"pls_sync_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))
    try:
        yield postgres_url, schema
    finally:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True))
        engine.dispose()


@pytest.mark.postgres
def test_company_and_workspace_level_on_postgres(postgres_schema: tuple[str, str]) -> None:
    url, schema = postgres_schema
    engine = sa.create_engine(url)
    load_warehouse(engine, schema=schema, tz_events=True)
    engine.dispose()
    assert_company_level(url, schema=schema)
    accounts, _ = read(
        SqlUsageSource(url, taxonomy=TAXONOMY, schema=schema, account_level="workspace")
    )
    assert accounts["workspace:10"].metrics["events_28d"] == 9
    assert accounts["workspace:40"].domain == "alpha.com"


@pytest.mark.postgres
def test_postgres_missing_column_and_read_only_utc_session(
    postgres_schema: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = postgres_schema
    engine = sa.create_engine(url)
    load_warehouse(engine, schema=schema, drop_columns=("email",))
    engine.dispose()
    with pytest.raises(WarehouseError, match=r"'users' is missing column\(s\): email"):
        read(SqlUsageSource(url, taxonomy=TAXONOMY, schema=schema))
    model = tmp_path / "settings.sql"
    model.write_text(
        "SELECT 'acme.com' AS domain,\n"
        "  CASE WHEN current_setting('transaction_read_only') = 'on' THEN 1 ELSE 0 END AS ro,\n"
        "  CASE WHEN current_setting('TimeZone') = 'UTC' THEN 1 ELSE 0 END AS utc"
    )
    accounts, _ = read(SqlUsageSource(url, taxonomy=TAXONOMY, schema=schema, model=model))
    assert dict(accounts["acme.com"].metrics) == {"ro": 1.0, "utc": 1.0}


@pytest.mark.postgres
def test_postgres_custom_model_null_numeric_is_unknown_and_nan_is_bad(
    postgres_schema: tuple[str, str], tmp_path: Path
) -> None:
    url, schema = postgres_schema
    model = tmp_path / "numeric.sql"
    model.write_text(
        "SELECT * FROM (VALUES\n"
        "  ('acme.com', 2::bigint, NULL::numeric),\n"
        "  ('beta.io', 3::bigint, 'NaN'::numeric),\n"
        "  ('gamma.com', 1::bigint, 0::numeric)\n"
        ") AS t(domain, total_users, seats)"
    )
    accounts, stats = read(SqlUsageSource(url, taxonomy=TAXONOMY, schema=schema, model=model))
    assert accounts["acme.com"].metrics == {"total_users": 2.0, "seats": None}
    assert accounts["gamma.com"].metrics == {"total_users": 1.0, "seats": 0.0}
    assert stats.skipped_reasons == {"bad_metric": 3}
    signals = [s.name for s in score_account(accounts["acme.com"], SEATS_MODEL, AS_OF).signals]
    assert signals == []


# -- dropped events --------------------------------------------------------------------------

# user_id, workspace_id, event_name, occurred_at: events the built-in model cannot use, and a few
# it must not count as dropped (outside the window, ignored names).
DROPPED_EVENTS: list[tuple[int | None, int | None, str | None, datetime | None]] = [
    (None, 10, "created_board", AS_OF - DAY),  # no_user
    (None, 10, "created_board", AS_OF - 90 * DAY),  # no user, but before the window: not dropped
    (1, 10, None, AS_OF - DAY),  # no_name
    (1, 10, "", AS_OF - 2 * DAY),  # no_name (empty)
    (1, 10, None, AS_OF - 70 * DAY),  # no name, before the window: not dropped
    (1, 10, "created_board", None),  # no_time
    (None, None, None, None),  # no_time (one reason per event)
    (2, 10, "created_board", AS_OF + DAY),  # future
    (None, 10, None, AS_OF + 30 * DAY),  # future, whatever else is wrong
    (98, 10, "logged_in", AS_OF - DAY),  # unknown_user
    (98, 10, "logged_in", AS_OF - 100 * DAY),  # unknown user, before the window: not dropped
    (98, 10, "viewed_webinar", AS_OF - DAY),  # ignored name: never dropped
    (2, 11, "logged_in", AS_OF - DAY),  # user 2 is in workspace 10: unknown at workspace level
]
# Of the base rows: (1, 10, logged_in, AS_OF) is future; user 99 is unknown; user 7 was created
# after as_of, so the join leaves its event out too.
DROPPED_COMPANY = {"no_user": 1, "no_name": 2, "no_time": 2, "future": 3, "unknown_user": 3}
DROPPED_WORKSPACE = {**DROPPED_COMPANY, "unknown_user": 4}


def add_events(url: str, rows: list[tuple[Any, ...]], text_timestamps: bool = False) -> None:
    """Append raw event rows (NULLs and all) to the ``events`` table at ``url``."""
    engine = sa.create_engine(url)
    events = sa.table(
        "events",
        sa.column("user_id"),
        sa.column("workspace_id"),
        sa.column("event_name"),
        sa.column("occurred_at"),
    )

    def stamp(value: datetime | None) -> Any:
        if value is None:
            return None
        return naive(value).isoformat() if text_timestamps else naive(value)

    with engine.begin() as conn:
        conn.execute(
            events.insert(),
            [
                {"user_id": u, "workspace_id": w, "event_name": n, "occurred_at": stamp(t)}
                for u, w, n, t in rows
            ],
        )
    engine.dispose()


@pytest.mark.parametrize("backend", ["duckdb", "sqlite"])
def test_dropped_events_are_counted_by_reason(tmp_path: Path, backend: str) -> None:
    url = f"{backend}:///{tmp_path / 'drops.db'}"
    engine = sa.create_engine(url)
    load_warehouse(engine, text_timestamps=backend == "sqlite")
    engine.dispose()
    add_events(url, DROPPED_EVENTS, text_timestamps=backend == "sqlite")

    accounts, stats = read(SqlUsageSource(url, taxonomy=TAXONOMY))
    workspaces, ws_stats = read(SqlUsageSource(url, taxonomy=TAXONOMY, account_level="workspace"))

    assert stats.dropped_events == DROPPED_COMPANY
    assert ws_stats.dropped_events == DROPPED_WORKSPACE
    # What was dropped never reached an account. At the company level user 2's event in
    # workspace 11 is an event of user 2 (the join is on user_id alone): one more for acme.
    one_more = {"events_7d": ACME["events_7d"] + 1, "events_28d": ACME["events_28d"] + 1}
    assert_metrics(accounts["acme.com"], {**ACME, **one_more})
    assert_metrics(accounts["beta.io"], BETA)
    assert workspaces["workspace:10"].metrics["events_28d"] == 9
    assert workspaces["workspace:11"].metrics["events_28d"] == 0


def test_a_clean_warehouse_drops_nothing_but_the_known_rows(duckdb_url: str) -> None:
    _, stats = read(SqlUsageSource(duckdb_url, taxonomy=TAXONOMY))
    # the event at as_of, user 99 (no such user) and user 7 (created after as_of)
    assert stats.dropped_events == {"future": 1, "unknown_user": 2}
    _, later = read(SqlUsageSource(duckdb_url, taxonomy=TAXONOMY), AS_OF + 100 * DAY)
    assert later.dropped_events == {}  # every event is in the past and out of the window


def test_a_duplicated_user_never_makes_a_negative_drop_count(tmp_path: Path) -> None:
    url = f"duckdb:///{tmp_path / 'dup.duckdb'}"
    engine = sa.create_engine(url)
    load_warehouse(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO users (user_id, email, workspace_id, created_at, is_admin) "
            "SELECT user_id, email, workspace_id, created_at, is_admin FROM users WHERE user_id = 1"
        )
    engine.dispose()

    _, stats = read(SqlUsageSource(url, taxonomy=TAXONOMY))

    assert stats.dropped_events == {"future": 1}  # user 1's events now count twice: clamped


@pytest.mark.postgres
def test_dropped_events_on_postgres(postgres_schema: tuple[str, str]) -> None:
    url, schema = postgres_schema
    engine = sa.create_engine(url)
    load_warehouse(engine, schema=schema, tz_events=True)
    # Declared, not reflected: PostgreSQL reflection warns once the BigQuery dialect is imported.
    events = sa.Table(
        "events",
        sa.MetaData(schema=schema),
        sa.Column("user_id", sa.BigInteger),
        sa.Column("workspace_id", sa.BigInteger),
        sa.Column("event_name", sa.String(100)),
        sa.Column("occurred_at", sa.DateTime(timezone=True)),
    )
    with engine.begin() as conn:
        conn.execute(
            events.insert(),
            [
                {"user_id": u, "workspace_id": w, "event_name": n, "occurred_at": t}
                for u, w, n, t in DROPPED_EVENTS
            ],
        )
    engine.dispose()

    _, stats = read(SqlUsageSource(url, taxonomy=TAXONOMY, schema=schema))
    _, ws_stats = read(
        SqlUsageSource(url, taxonomy=TAXONOMY, schema=schema, account_level="workspace")
    )

    assert stats.dropped_events == DROPPED_COMPANY
    assert ws_stats.dropped_events == DROPPED_WORKSPACE


# -- event name counts -------------------------------------------------------------------------


def expected_name_counts(as_of: datetime, days: int) -> list[tuple[str, int]]:
    """The oracle: EVENTS and DROPPED_EVENTS per name in [as_of - days, as_of), most first."""
    counts: dict[str, int] = {}
    for _, _, name, at in [*EVENTS, *DROPPED_EVENTS]:
        if at is not None and as_of - days * DAY <= at < as_of and name:
            counts[name] = counts.get(name, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


@pytest.mark.parametrize("backend", ["duckdb", "sqlite"])
def test_event_name_counts(tmp_path: Path, backend: str) -> None:
    url = f"{backend}:///{tmp_path / 'names.db'}"
    engine = sa.create_engine(url)
    load_warehouse(engine, text_timestamps=backend == "sqlite")
    engine.dispose()
    add_events(url, DROPPED_EVENTS, text_timestamps=backend == "sqlite")
    source = SqlUsageSource(url, taxonomy=TAXONOMY)

    counts = source.event_name_counts(AS_OF)
    last_week = source.event_name_counts(AS_OF, days=7)

    assert counts == expected_name_counts(AS_OF, 90)
    # NULL and empty names are left out; users, workspaces and ignored names do not matter
    assert counts[:2] == [("logged_in", 10), ("created_board", 6)]
    assert ("viewed_webinar", 3) in counts and "" not in dict(counts)
    assert last_week == expected_name_counts(AS_OF, 7)
    assert last_week[0] == ("logged_in", 7)


def test_event_name_counts_window_is_half_open_and_bound(duckdb_url: str) -> None:
    engine = sa.create_engine(duckdb_url)
    statements: list[str] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def capture(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        statements.append(statement)

    source = SqlUsageSource("ignored://", taxonomy=TAXONOMY, engine=engine)
    counts = dict(source.event_name_counts(AS_OF + SECOND, days=1))
    engine.dispose()

    assert counts == {"logged_in": 2}  # the events at as_of - 1s and at as_of, not before
    query = next(s for s in statements if "GROUP BY" in s)
    assert "2024" not in query and "logged_in" not in query


def test_event_name_counts_refuses_a_custom_model_and_reports_a_missing_table(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'no_events.db'}"
    engine = sa.create_engine(url)
    load_warehouse(engine, skip_tables=("events",))
    engine.dispose()
    model = tmp_path / "m.sql"
    model.write_text("SELECT 'acme.com' AS domain")

    with pytest.raises(WarehouseError, match="built-in model"):
        SqlUsageSource(url, taxonomy=TAXONOMY, model=model).event_name_counts(AS_OF)
    with pytest.raises(WarehouseError, match="table 'events' not found"):
        SqlUsageSource(url, taxonomy=TAXONOMY).event_name_counts(AS_OF)
    with pytest.raises(WarehouseError, match="days"):
        SqlUsageSource(url, taxonomy=TAXONOMY).event_name_counts(AS_OF, days=0)


# -- errors a user can cause, in one line ------------------------------------------------------


@pytest.mark.parametrize(("backend", "kind"), [("duckdb", "DuckDB"), ("sqlite", "SQLite")])
def test_a_file_that_is_not_a_database_says_so_in_one_line(
    tmp_path: Path, backend: str, kind: str
) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not a database\n" * 100)

    with pytest.raises(WarehouseError) as caught:
        read(SqlUsageSource(f"{backend}:///{path}", taxonomy=TAXONOMY))

    assert str(caught.value) == (
        f"{path} is not a {kind} database file: point warehouse.url at a {kind} database"
    )


def test_a_missing_driver_is_a_warehouse_error() -> None:
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("psycopg2 is installed")
    source = SqlUsageSource("postgresql+psycopg2://u:s3cret-pw@db.example/x", taxonomy=TAXONOMY)

    with pytest.raises(WarehouseError, match="not installed") as caught:
        read(source)

    assert "s3cret-pw" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("url_fixture", ["duckdb_url", "sqlite_url"])
def test_recreated_user_records_do_not_make_an_established_team_young(
    url_fixture: str, request: pytest.FixtureRequest
) -> None:
    url: str = request.getfixturevalue(url_fixture)
    recreated = AS_OF - 3 * DAY
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        # A migration re-created acme's user records three days ago; their events stay.
        value: Any = naive(recreated).isoformat() if url.startswith("sqlite") else naive(recreated)
        conn.execute(
            sa.text("UPDATE users SET created_at = :at WHERE email LIKE '%acme.com'"),
            {"at": value},
        )
    engine.dispose()
    accounts, _ = read(SqlUsageSource(url, taxonomy=TAXONOMY))
    # The first event in the window (user 3's, at the first second of the usual weeks) is the
    # age evidence, not the sign-up three days ago.
    assert accounts["acme.com"].first_seen == AS_OF - 63 * DAY
    # Where the sign-up is earlier than every event, it stays the evidence.
    assert accounts["beta.io"].first_seen == datetime(2024, 3, 1, tzinfo=UTC)


def test_a_duckdb_memory_limit_bounds_the_read_and_leaves_the_accounts_alike(
    tmp_path: Path,
) -> None:
    url = f"duckdb:///{tmp_path / 'limited.duckdb'}"
    engine = sa.create_engine(url)
    load_warehouse(engine)
    engine.dispose()
    limited = SqlUsageSource(url, taxonomy=TAXONOMY, duckdb_memory_limit=" 64MB ")
    limited_engine, owned = limited.connect_engine()
    try:
        with limited_engine.connect() as conn:
            setting = conn.exec_driver_sql("SELECT current_setting('memory_limit')").scalar()
    finally:
        limited_engine.dispose()
    expected = duckdb.connect(config={"memory_limit": "64MB"})
    try:
        assert setting == expected.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    finally:
        expected.close()
    assert owned
    assert read(limited) == read(SqlUsageSource(url, taxonomy=TAXONOMY))
