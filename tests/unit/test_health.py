"""``check_health``: the verdict behind ``pls-sync status`` and the container healthcheck."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from connectors.state import SqlStateStore
from pls_sync.bootstrap import open_existing_state_store
from pls_sync.config import JobSettings, ScheduleSettings, Settings, load_settings
from pls_sync.errors import FatalError
from pls_sync.health import HEARTBEAT_FRESH_SECONDS, check_health, next_due

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2024, 5, 1, 8, 0, 5, tzinfo=UTC)  # a run of the 08:00 job, started 5 s late
EVERY_4H = JobSettings("full_sync", "0 */4 * * *", 3600)


@pytest.fixture(scope="module")
def base_settings() -> Settings:
    return load_settings(REPO / "config" / "pls_sync.yaml", env={})


def with_jobs(settings: Settings, *jobs: JobSettings, timezone: str = "UTC") -> Settings:
    return replace(settings, schedule=ScheduleSettings(timezone, tuple(jobs)))


@pytest.fixture
def settings(base_settings: Settings) -> Settings:
    return with_jobs(base_settings, EVERY_4H)


@pytest.fixture
def store() -> Iterator[SqlStateStore]:
    state = SqlStateStore.open("sqlite://")
    yield state
    state.close()


def destination(status: str, written: int = 0, rejected: int = 0) -> dict[str, Any]:
    return {"status": status, "records_written": written, "rejected": rejected}


def record_run(
    store: SqlStateStore,
    run_id: str,
    started: datetime,
    status: str = "succeeded",
    destinations: dict[str, dict[str, Any]] | None = None,
    error: str | None = None,
    command: str = "schedule:full_sync",
) -> None:
    store.begin_run(run_id, command, started)
    summary = {"status": status, "destinations": destinations or {}}
    store.finish_run(run_id, status, started + timedelta(seconds=42), summary, error)


def test_healthy_after_a_successful_run(store: SqlStateStore, settings: Settings) -> None:
    record_run(
        store,
        "r1",
        T0,
        destinations={
            "salesforce": destination("succeeded", 5),
            "hubspot": destination("succeeded", 2),
        },
    )

    report = check_health(store, settings, T0 + timedelta(hours=1))

    assert report.healthy, report.lines
    assert report.lines[0] == (
        "2024-05-01T08:00:05+00:00  schedule:full_sync succeeded     42.0s  written 7, rejected 0"
    )
    assert "Next run due: 2024-05-01T12:00:00+00:00" in report.lines


def test_unhealthy_when_the_last_run_failed_and_healthy_again_after_a_success(
    store: SqlStateStore, settings: Settings
) -> None:
    record_run(store, "r1", T0)
    record_run(store, "r2", T0 + timedelta(hours=4), "failed", error="WarehouseError: gone.duckdb")

    failed = check_health(store, settings, T0 + timedelta(hours=5))
    record_run(store, "r3", T0 + timedelta(hours=8))
    recovered = check_health(store, settings, T0 + timedelta(hours=9))

    assert not failed.healthy
    assert "UNHEALTHY: the last run (r2) failed." in failed.lines
    assert any(
        "failed" in line and "error: WarehouseError: gone.duckdb" in line for line in failed.lines
    )
    assert recovered.healthy, recovered.lines
    # The three runs are listed, newest first.
    assert [line[:19] for line in recovered.lines[:3]] == [
        "2024-05-01T16:00:05",
        "2024-05-01T12:00:05",
        "2024-05-01T08:00:05",
    ]


def test_a_destination_that_failed_outright_is_unhealthy(
    store: SqlStateStore, settings: Settings
) -> None:
    record_run(
        store,
        "r1",
        T0,
        "partial",
        {"salesforce": destination("failed"), "hubspot": destination("succeeded", 3)},
    )

    report = check_health(store, settings, T0 + timedelta(minutes=5))

    assert not report.healthy
    assert "UNHEALTHY: the last run (r1) failed for salesforce." in report.lines


def test_rejected_records_alone_are_a_warning(store: SqlStateStore, settings: Settings) -> None:
    record_run(store, "r1", T0, "partial", {"salesforce": destination("partial", 10, 2)})

    report = check_health(store, settings, T0 + timedelta(minutes=5))

    assert report.healthy
    assert "written 10, rejected 2" in report.lines[0]
    assert any(
        line.startswith("Warning: the last run (r1) had rejected records") for line in report.lines
    )


@pytest.mark.parametrize(
    ("after", "healthy"),
    [
        (timedelta(hours=4), True),  # the 12:00 run is due, not late yet
        (timedelta(hours=4, minutes=59, seconds=54), True),  # 12:59:59: within the grace
        (timedelta(hours=5, seconds=1), False),  # 13:00:06: the 12:00 run is overdue
    ],
)
def test_overdue_from_the_cron_schedule_and_grace(
    store: SqlStateStore, settings: Settings, after: timedelta, healthy: bool
) -> None:
    record_run(store, "r1", T0)

    report = check_health(store, settings, T0 + after)

    assert report.healthy is healthy, report.lines
    overdue = "UNHEALTHY: the run due at 2024-05-01T12:00:00+00:00 is overdue."
    assert (overdue in report.lines) is not healthy


def test_overdue_follows_the_schedules_time_zone_across_dst(
    store: SqlStateStore, base_settings: Settings
) -> None:
    """09:00 New York is 14:00 UTC on 9 March 2024 and 13:00 UTC on the 10th (DST starts)."""
    settings = with_jobs(
        base_settings, JobSettings("daily", "0 9 * * *", 600), timezone="America/New_York"
    )
    record_run(store, "r1", datetime(2024, 3, 9, 14, 0, 5, tzinfo=UTC))

    due = datetime(2024, 3, 10, 13, 0, tzinfo=UTC)
    assert check_health(store, settings, due + timedelta(seconds=599)).healthy
    late = check_health(store, settings, due + timedelta(seconds=601))
    assert not late.healthy
    assert "UNHEALTHY: the run due at 2024-03-10T09:00:00-04:00 is overdue." in late.lines


def test_a_run_that_started_on_the_dot_is_not_due_again_at_once(settings: Settings) -> None:
    on_the_dot = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    due = next_due(settings, on_the_dot)

    assert due == (datetime(2024, 5, 1, 16, 0, tzinfo=UTC), 3600.0)


def test_the_earliest_job_decides_what_is_due(base_settings: Settings) -> None:
    settings = with_jobs(base_settings, EVERY_4H, JobSettings("pqa_refresh", "30 * * * *", 300))

    assert next_due(settings, T0) == (datetime(2024, 5, 1, 8, 30, tzinfo=UTC), 300.0)


def test_max_age_replaces_the_schedule(store: SqlStateStore, settings: Settings) -> None:
    record_run(store, "r1", T0)

    fresh = check_health(store, settings, T0 + timedelta(hours=23), max_age_hours=24)
    stale = check_health(store, settings, T0 + timedelta(hours=25), max_age_hours=24)

    assert fresh.healthy and not any(line.startswith("Next run due") for line in fresh.lines)
    assert not stale.healthy
    assert "UNHEALTHY: no run in the last 24 hours." in stale.lines


def test_no_runs_but_a_fresh_scheduler_heartbeat_is_healthy(
    store: SqlStateStore, settings: Settings
) -> None:
    detail = {"next_runs": {"full_sync": "2024-05-01T12:00:00+00:00"}, "running": ["full_sync"]}
    store.heartbeat("scheduler", T0, detail)

    fresh = check_health(store, settings, T0 + timedelta(seconds=HEARTBEAT_FRESH_SECONDS))
    stale = check_health(store, settings, T0 + timedelta(seconds=HEARTBEAT_FRESH_SECONDS + 1))

    assert fresh.healthy
    assert fresh.lines == [
        "No runs yet; scheduler alive (heartbeat 2024-05-01T08:00:05+00:00).",
        "Scheduler heartbeat 2024-05-01T08:00:05+00:00; next: full_sync at "
        "2024-05-01T12:00:00+00:00; running: full_sync",
    ]
    assert not stale.healthy
    assert stale.lines[0] == "No runs recorded yet."
    assert "is older than" in stale.lines[1]


def test_no_runs_and_no_heartbeat_is_unhealthy(store: SqlStateStore, settings: Settings) -> None:
    report = check_health(store, settings, T0)

    assert not report.healthy
    assert report.lines == ["No runs recorded yet."]


def test_the_heartbeat_shows_next_runs_beside_the_run_list(
    store: SqlStateStore, settings: Settings
) -> None:
    record_run(store, "r1", T0)
    store.heartbeat("scheduler", T0 + timedelta(minutes=1), {"next_runs": {"full_sync": "x"}})

    report = check_health(store, settings, T0 + timedelta(minutes=2))

    assert "Scheduler heartbeat 2024-05-01T08:01:05+00:00; next: full_sync at x" in report.lines


def test_limit_caps_the_runs_listed(store: SqlStateStore, settings: Settings) -> None:
    for hour in range(6):
        record_run(store, f"r{hour}", T0 + timedelta(hours=hour))

    report = check_health(store, settings, T0 + timedelta(hours=5, minutes=1), limit=2)

    assert [line[:25] for line in report.lines[:2]] == [
        "2024-05-01T13:00:05+00:00",
        "2024-05-01T12:00:05+00:00",
    ]
    assert not report.lines[2].startswith("2024-05-01T11")


def test_an_unreachable_state_store_is_a_clear_fatal_error(settings: Settings) -> None:
    store = SqlStateStore("postgresql+psycopg://pls:health-secret@127.0.0.1:1/pls")

    with pytest.raises(FatalError) as caught:
        check_health(store, settings, T0)

    message = str(caught.value)
    assert message.startswith("state store postgresql+psycopg://pls:***@127.0.0.1:1/pls:")
    assert "failed" in message
    assert "health-secret" not in message
    assert caught.value.code == "state_unreachable"


def test_a_missing_sqlite_state_store_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "state.sqlite"

    with pytest.raises(FatalError, match="state store not found: no SQLite file at"):
        open_existing_state_store(f"sqlite:///{missing}")

    assert not missing.parent.exists()


def test_a_weekday_job_run_on_friday_is_next_due_on_monday(
    store: SqlStateStore, base_settings: Settings
) -> None:
    """``1-5`` is Monday to Friday, as in every cron: nothing is overdue over the weekend."""
    settings = with_jobs(base_settings, JobSettings("weekdays", "0 9 * * 1-5", 600))
    friday = datetime(2026, 12, 4, 9, 0, 3, tzinfo=UTC)
    record_run(store, "r1", friday)

    assert next_due(settings, friday) == (datetime(2026, 12, 7, 9, 0, tzinfo=UTC), 600.0)
    sunday_night = datetime(2026, 12, 6, 23, 0, tzinfo=UTC)
    assert check_health(store, settings, sunday_night).healthy
    monday_late = datetime(2026, 12, 7, 9, 10, 1, tzinfo=UTC)
    assert not check_health(store, settings, monday_late).healthy


def test_limit_zero_lists_no_run_but_still_judges_the_last_one(
    store: SqlStateStore, settings: Settings
) -> None:
    record_run(store, "r1", T0, status="failed", error="boom")

    report = check_health(store, settings, T0 + timedelta(minutes=1), limit=0)

    assert not report.healthy
    assert not any("schedule:full_sync" in line for line in report.lines)
    assert "UNHEALTHY: the last run (r1) failed." in report.lines
    with pytest.raises(ValueError, match="limit must be 0 or more"):
        check_health(store, settings, T0, limit=-1)
