"""The demo warehouse generator: exact sizes, determinism, and the usage stories it tells."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from connectors.demo_warehouse import DemoStats, generate_demo_warehouse, read_demo_as_of
from connectors.warehouse import SqlUsageSource
from pls_sync.demo_companies import demo_companies
from pls_sync.domains import classify_host
from pls_sync.models import ProductAccount, UsageReadStats

AS_OF = datetime(2024, 6, 1, tzinfo=UTC)
TAXONOMY = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "config" / "events.yaml").read_text()
)["categories"]

CHECKSUM_SQL = {
    "users": "SELECT count(*), sum(hash(user_id, email, workspace_id, created_at, is_admin, title,"
    " seniority, department, company_size)::HUGEINT) FROM users",
    "events": "SELECT count(*), sum(hash(user_id, workspace_id, event_name, occurred_at)::HUGEINT)"
    " FROM events",
}


def checksums(path: Path) -> dict[str, tuple[object, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {
            table: tuple(con.execute(sql).fetchone() or ()) for table, sql in CHECKSUM_SQL.items()
        }
    finally:
        con.close()


def query(path: Path, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoStats]:
    path = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    stats = generate_demo_warehouse(
        path, seed=7, companies=120, users=2500, events=60_000, as_of=AS_OF
    )
    return path, stats


@pytest.fixture(scope="module")
def accounts(demo: tuple[Path, DemoStats]) -> tuple[dict[str, ProductAccount], UsageReadStats]:
    path, stats = demo
    read_stats = UsageReadStats()
    source = SqlUsageSource(f"duckdb:///{path}", taxonomy=TAXONOMY)
    return {a.key: a for a in source.read_accounts(stats.as_of, read_stats)}, read_stats


def test_sizes_are_exact(demo: tuple[Path, DemoStats]) -> None:
    path, stats = demo
    assert (stats.companies, stats.users, stats.events, stats.as_of) == (120, 2500, 60_000, AS_OF)
    assert query(path, "SELECT count(*), count(DISTINCT user_id) FROM users") == [(2500, 2500)]
    assert query(path, "SELECT count(*) FROM events") == [(60_000,)]
    assert 0.15 * 2500 <= stats.free_mail_users <= 0.25 * 2500
    assert read_demo_as_of(path) == AS_OF


def test_schema_is_the_warehouse_contract(demo: tuple[Path, DemoStats]) -> None:
    path, _ = demo
    columns = query(
        path,
        "SELECT table_name, list(column_name ORDER BY ordinal_position) FROM information_schema.columns"
        " WHERE table_name IN ('users', 'events') GROUP BY table_name ORDER BY table_name",
    )
    assert columns == [
        ("events", ["user_id", "workspace_id", "event_name", "occurred_at"]),
        (
            "users",
            [
                "user_id",
                "email",
                "workspace_id",
                "created_at",
                "is_admin",
                "title",
                "seniority",
                "department",
                "company_size",
            ],
        ),
    ]


def test_deterministic_for_a_seed_and_as_of(tmp_path: Path, demo: tuple[Path, DemoStats]) -> None:
    path, _ = demo
    again = tmp_path / "again.duckdb"
    generate_demo_warehouse(again, seed=7, companies=120, users=2500, events=60_000, as_of=AS_OF)
    assert checksums(again) == checksums(path)
    other = tmp_path / "other.duckdb"
    generate_demo_warehouse(other, seed=8, companies=120, users=2500, events=60_000, as_of=AS_OF)
    assert checksums(other)["events"] != checksums(path)["events"]


def test_timestamps_are_before_as_of_and_after_sign_up(demo: tuple[Path, DemoStats]) -> None:
    path, _ = demo
    as_of = "TIMESTAMP '2024-06-01 00:00:00'"
    assert query(path, f"SELECT count(*) FROM users WHERE created_at >= {as_of}") == [(0,)]
    assert query(path, f"SELECT count(*) FROM events WHERE occurred_at >= {as_of}") == [(0,)]
    assert query(
        path,
        "SELECT count(*) FROM events e JOIN users u USING (user_id) WHERE e.occurred_at < u.created_at",
    ) == [(0,)]


def test_emails_free_mail_and_junk(demo: tuple[Path, DemoStats]) -> None:
    path, stats = demo
    emails = [row[0] for row in query(path, "SELECT email FROM users")]
    reasons = []
    for email in emails:
        host = email.rpartition("@")[2] if email and "@" in email else ""
        reasons.append(classify_host(host).reason)
    assert reasons.count("free_mail") == stats.free_mail_users
    assert reasons.count("invalid") >= 5 and reasons.count("disposable") >= 1
    assert None in emails and "" in emails and any(e and " " in e for e in emails)
    company_domains = {c.domain for c in demo_companies(7, 120)}
    usable = {
        classify_host(e.rpartition("@")[2]).domain
        for e, r in zip(emails, reasons, strict=True)
        if r is None
    }
    assert usable <= company_domains


def test_titles_look_like_sign_up_profiling(demo: tuple[Path, DemoStats]) -> None:
    path, _ = demo
    seniority: dict[str | None, int] = dict(
        query(path, "SELECT seniority, count(*) FROM users GROUP BY ALL")
    )
    assert {"ic", "manager", "director", "head", "vp", "c_level"} <= set(seniority)
    assert seniority["ic"] > 0.5 * sum(seniority.values())
    assert seniority[None] > 0  # some never answered
    titles = {row[0] for row in query(path, "SELECT DISTINCT title FROM users")}
    assert {"CTO", "VP Engineering", "Head of Product", "Director of Engineering"} <= titles


def test_profiles_show_up_in_the_metrics(
    accounts: tuple[dict[str, ProductAccount], UsageReadStats], demo: tuple[Path, DemoStats]
) -> None:
    by_key, read_stats = accounts
    _, stats = demo
    companies = {c.domain: c for c in demo_companies(7, 120)}
    assert set(by_key) <= set(companies)

    def of(profile: str) -> list[ProductAccount]:
        return [a for key, a in by_key.items() if companies[key].profile == profile]

    spikes = [
        a
        for a in of("velocity_spike")
        if a.metrics["new_users_7d"] >= 5
        and a.metrics["new_users_7d"] >= 3 * max(a.metrics["usual_weekly_new_users"], 1)
    ]
    assert spikes
    young = of("young")
    assert young and all(a.first_seen and AS_OF - a.first_seen < timedelta(days=14) for a in young)
    assert any(a.metrics["events_28d"] > 0 for a in young)
    assert all(a.metrics["events_28d"] == 0 for a in of("dormant"))
    assert all(a.metrics["legal_page_views_14d"] >= 1 for a in of("legal_views"))
    assert all(a.metrics["pricing_page_views_14d"] >= 2 for a in of("pricing_views"))
    assert all(a.metrics["admin_changes_28d"] >= 1 for a in of("admin_change"))
    assert all(a.metrics["enterprise_features_28d"] >= 1 for a in of("enterprise"))
    assert any(len(a.hosts) > 1 for a in by_key.values())  # subsidiaries merged
    assert any(a.metrics["active_users_28d"] >= 7 for a in by_key.values())
    assert read_stats.skipped_reasons["free_mail"] == stats.free_mail_users
    assert read_stats.skipped_reasons["invalid"] > 0


def test_small_scale_flags_progress_and_silence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[tuple[str, int, int]] = []
    path = tmp_path / "nested" / "small.duckdb"
    before = datetime.now(UTC)
    stats = generate_demo_warehouse(
        path, companies=10, users=40, events=300, progress=lambda *args: seen.append(args)
    )
    midnights = {
        t.replace(hour=0, minute=0, second=0, microsecond=0) for t in (before, datetime.now(UTC))
    }
    assert stats.as_of in midnights  # default as_of: today 00:00 UTC
    assert (stats.users, stats.events) == (40, 300)
    assert query(path, "SELECT count(*) FROM users") == [(40,)]
    assert {stage for stage, _, _ in seen} >= {"companies", "users", "events"}
    assert capsys.readouterr() == ("", "")
    # regenerating replaces the file in place and leaves no temporary file behind
    generate_demo_warehouse(path, companies=5, users=12, events=0, as_of=AS_OF)
    assert query(path, "SELECT count(*) FROM users") == [(12,)]
    assert query(path, "SELECT count(*) FROM events") == [(0,)]
    assert sorted(p.name for p in path.parent.iterdir()) == ["small.duckdb"]


def test_default_users_follow_team_sizes(tmp_path: Path) -> None:
    stats = generate_demo_warehouse(tmp_path / "d.duckdb", companies=30, as_of=AS_OF)
    teams = sum(c.team_size for c in demo_companies(7, 30))
    assert stats.users == round(teams / 0.8)
    assert stats.events == 50 * stats.users
