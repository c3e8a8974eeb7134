"""The demo warehouse generator: exact sizes, determinism, and the usage stories it tells."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml

from connectors.demo_warehouse import (
    DemoStats,
    demo_intents,
    generate_demo_warehouse,
    read_demo_as_of,
)
from connectors.warehouse import SqlUsageSource
from pls_sync.demo_companies import DemoCompany, demo_companies
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
    "conversions": "SELECT count(*), sum(hash(domain, account_key, converted_at)::HUGEINT)"
    " FROM conversions",
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


BUYER_INTENT = [
    name
    for category in ("legal_page_view", "pricing_page_view", "admin_change", "enterprise_feature")
    for name in TAXONOMY[category]
]
BACKTEST = AS_OF - timedelta(days=60)


def buyer_intent_events(path: Path, before: datetime = AS_OF) -> dict[str, int]:
    """Buyer-intent events per registrable domain, before ``before``."""
    rows = query(
        path,
        "SELECT lower(split_part(u.email, '@', 2)), count(*) FROM events e JOIN users u"
        f" USING (user_id) WHERE list_contains({BUYER_INTENT}, e.event_name)"
        f" AND e.occurred_at < TIMESTAMP '{before.replace(tzinfo=None).isoformat()}' GROUP BY 1",
    )
    out: dict[str, int] = {}
    for host, count in rows:
        domain = classify_host(host).domain if host else None
        if domain:
            out[domain] = out.get(domain, 0) + count
    return out


def mean(values: list[int]) -> float:
    return sum(values) / len(values)


def test_conversions_table_holds_the_buyers(demo: tuple[Path, DemoStats]) -> None:
    path, stats = demo
    intents = {i.domain: i for i in demo_intents(demo_companies(7, 120), seed=7, as_of=AS_OF)}
    rows = query(path, "SELECT domain, account_key, converted_at FROM conversions")
    assert len(rows) == stats.conversions
    keyed = {key: at.replace(tzinfo=UTC) for _, key, at in rows if key is not None}
    assert keyed == {d: i.converted_at for d, i in intents.items() if i.converted_at}
    free_mail = [domain for domain, key, _ in rows if key is None]
    assert free_mail and all(classify_host(d).reason == "free_mail" for d in free_mail)
    # written the way a billing system writes them: a subsidiary's host, upper case, www.
    assert any(domain != key for domain, key, _ in rows if key is not None)
    times = sorted(keyed.values())
    assert any(BACKTEST < t <= AS_OF for t in times)  # a backtest 60 days back finds them
    assert any(t > AS_OF for t in times)  # the current score's future
    assert any(t <= BACKTEST for t in times)  # already customers at the backtest date


def test_converters_show_more_buyer_intent(demo: tuple[Path, DemoStats]) -> None:
    path, _ = demo
    companies = demo_companies(7, 120)
    intents = demo_intents(companies, seed=7, as_of=AS_OF)
    events = buyer_intent_events(path)
    converters = [events.get(i.domain, 0) for i in intents if i.converted_at]
    others = [events.get(i.domain, 0) for i in intents if not i.converted_at]
    assert mean(converters) > 3 * mean(others)
    # what a backtest at as_of - 60 days sees of the accounts that buy in its horizon
    early = buyer_intent_events(path, BACKTEST)
    in_horizon = [
        early.get(i.domain, 0)
        for i in intents
        if i.converted_at and BACKTEST < i.converted_at <= AS_OF
    ]
    not_yet = [
        early.get(i.domain, 0) for i in intents if not (i.converted_at and i.converted_at <= AS_OF)
    ]
    assert mean(in_horizon) > 3 * mean(not_yet)


def test_latent_intent_drives_conversion_with_traps() -> None:
    companies = demo_companies(7, 400)
    intents = demo_intents(companies, seed=7, as_of=AS_OF)
    assert intents == demo_intents(companies, seed=7, as_of=AS_OF)
    assert intents[:120] == demo_intents(companies[:120], seed=7, as_of=AS_OF)
    assert intents != demo_intents(demo_companies(8, 400), seed=8, as_of=AS_OF)
    ranked = sorted(intents, key=lambda i: i.intent)
    bottom, top = ranked[:100], ranked[-100:]
    assert sum(i.converted_at is not None for i in top) > 5 * sum(
        i.converted_at is not None for i in bottom
    )
    by_domain = {c.domain: c for c in companies}

    def rate(keep: Callable[[DemoCompany], bool]) -> float:
        chosen = [i for i in intents if keep(by_domain[i.domain])]
        return sum(i.converted_at is not None for i in chosen) / len(chosen)

    overall = rate(lambda c: True)
    assert 0.08 < overall < 0.25
    assert rate(lambda c: c.team_size == 1) < overall / 4  # prosumers
    assert rate(lambda c: c.profile == "young") < overall / 2
    assert rate(lambda c: c.profile in ("legal_views", "pricing_views", "admin_change")) > overall
    young = [i for i in intents if by_domain[i.domain].profile == "young"]
    assert all(i.early_signals == () for i in young)
    assert all(i.converted_at is None or i.converted_at > AS_OF for i in young)


def test_early_signals_leave_the_current_scores_alone(tmp_path: Path) -> None:
    """Signals rewrite usage events older than the 63 days a read at as_of looks at."""
    path = tmp_path / "d.duckdb"
    generate_demo_warehouse(path, seed=7, companies=60, users=1200, events=30_000, as_of=AS_OF)

    def read(as_of: datetime) -> dict[str, dict[str, float | None]]:
        source = SqlUsageSource(f"duckdb:///{path}", taxonomy=TAXONOMY)
        return {a.key: dict(a.metrics) for a in source.read_accounts(as_of, UsageReadStats())}

    now, backtest = read(AS_OF), read(BACKTEST)
    con = duckdb.connect(str(path))
    try:
        undone = con.execute(
            "UPDATE events SET event_name = 'logged_in'"
            f" WHERE list_contains({BUYER_INTENT}, event_name)"
            " AND occurred_at >= TIMESTAMP '2024-03-19' AND occurred_at < TIMESTAMP '2024-03-30'"
        ).fetchone()
    finally:
        con.close()
    assert undone and undone[0] > 0
    assert read(AS_OF) == now
    assert read(BACKTEST) != backtest
