"""Health of the service from the state store: the last runs, and whether the last one failed or is overdue."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pls_sync.config import Settings
from pls_sync.ports import RunRecord

HEARTBEAT_FRESH_SECONDS = 300  # the scheduler beats every 60 s


@dataclass(slots=True)
class HealthReport:
    """Lines for a person and a verdict for a healthcheck."""

    healthy: bool
    lines: list[str] = field(default_factory=list)


def next_due(settings: Settings, after: datetime) -> tuple[datetime, float] | None:
    """The earliest scheduled fire time after ``after`` over all jobs, with that job's grace."""
    from apscheduler.triggers.cron import CronTrigger

    best: tuple[datetime, float] | None = None
    for job in settings.schedule.jobs:
        trigger = CronTrigger.from_crontab(job.cron, timezone=settings.schedule.timezone)
        fire = trigger.get_next_fire_time(None, after)
        if fire is not None and (best is None or fire < best[0]):
            best = (fire, float(job.grace_seconds))
    return best


def check_health(
    store: object,
    settings: Settings,
    now: datetime,
    *,
    limit: int = 5,
    max_age_hours: float | None = None,
) -> HealthReport:
    """Healthy unless there is no run, the last run failed, or the next run is overdue."""
    runs: list[RunRecord] = store.recent_runs(limit)  # type: ignore[attr-defined]
    report = HealthReport(healthy=True)
    beat = getattr(store, "last_heartbeat", lambda _name: None)("scheduler")
    if not runs:
        # A scheduler that just started has no run yet: healthy while its heartbeat is fresh.
        if beat is not None and now - beat[0] <= timedelta(seconds=HEARTBEAT_FRESH_SECONDS):
            report.lines.append(f"No runs yet; scheduler alive (heartbeat {beat[0].isoformat()}).")
            return report
        report.healthy = False
        report.lines.append("No runs recorded yet.")
        return report
    for run in runs:
        written = sum(
            int(d.get("records_written", 0)) for d in run.summary.get("destinations", {}).values()
        )
        rejected = sum(
            int(d.get("rejected", 0)) for d in run.summary.get("destinations", {}).values()
        )
        took = (
            f"{(run.finished_at - run.started_at).total_seconds():.1f}s" if run.finished_at else "-"
        )
        report.lines.append(
            f"{run.started_at.isoformat()}  {run.command:<8} {run.status:<10} {took:>8}  "
            f"written {written}, rejected {rejected}"
            + (f"  error: {run.error}" if run.error else "")
        )
    if beat is not None:
        at, detail = beat
        nexts = ", ".join(
            f"{job} at {when}" for job, when in (detail or {}).get("next_runs", {}).items()
        )
        report.lines.append(
            f"Scheduler heartbeat {at.isoformat()}" + (f"; next: {nexts}" if nexts else "")
        )
    last = runs[0]
    if last.status in ("failed",):
        report.healthy = False
        report.lines.append(f"UNHEALTHY: the last run ({last.run_id}) failed.")
    if max_age_hours is not None:
        if now - last.started_at > timedelta(hours=max_age_hours):
            report.healthy = False
            report.lines.append(f"UNHEALTHY: no run in the last {max_age_hours} hours.")
    else:
        due = next_due(settings, last.started_at)
        if due is not None:
            fire, grace = due
            report.lines.append(f"Next run due: {fire.isoformat()}")
            if now > fire + timedelta(seconds=grace):
                report.healthy = False
                report.lines.append(f"UNHEALTHY: the run due at {fire.isoformat()} is overdue.")
    return report
