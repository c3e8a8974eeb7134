"""Health of the service from the state store: the last runs, and whether the last one failed or is overdue."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pls_sync.config import Settings
from pls_sync.ports import RunRecord

HEARTBEAT_FRESH_SECONDS = 300  # the scheduler beats every 60 s


class RunHistory(Protocol):
    """What health needs from the state store: the recent runs (newest first)."""

    def recent_runs(self, limit: int = 10) -> list[RunRecord]:
        """The last ``limit`` runs, newest first."""
        ...


@dataclass(slots=True)
class HealthReport:
    """Lines for a person and a verdict for a healthcheck."""

    healthy: bool
    lines: list[str] = field(default_factory=list)


def next_due(settings: Settings, after: datetime) -> tuple[datetime, float] | None:
    """The earliest scheduled fire time after ``after`` over all jobs, with that job's grace."""
    from pls_sync.cron import cron_trigger

    best: tuple[datetime, float] | None = None
    # Fire times are inclusive: a run that started on the dot of its own fire time is not due
    # again at that same instant.
    after = after + timedelta(microseconds=1)
    for job in settings.schedule.jobs:
        trigger = cron_trigger(job.cron, settings.schedule.timezone)
        fire = trigger.get_next_fire_time(None, after)
        if fire is not None and (best is None or fire < best[0]):
            best = (fire, float(job.grace_seconds))
    return best


def check_health(
    store: RunHistory,
    settings: Settings,
    now: datetime,
    *,
    limit: int = 5,
    max_age_hours: float | None = None,
) -> HealthReport:
    """Healthy unless there is no run, the last run failed, or the next run is overdue.

    A last run whose status is ``failed``, or in which a destination failed outright, is
    unhealthy; rejected records alone only add a warning line. With no run yet, a scheduler
    heartbeat fresher than ``HEARTBEAT_FRESH_SECONDS`` is healthy. ``limit`` runs are listed
    (0: none; the verdict still looks at the last run). The state store's own errors
    (``FatalError`` when it cannot be reached) propagate to the caller.
    """
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit}")
    # The verdict always needs the last run, even when no run is to be listed.
    runs = store.recent_runs(max(limit, 1))
    report = HealthReport(healthy=True)
    beat: tuple[datetime, dict[str, Any]] | None = getattr(
        store, "last_heartbeat", lambda _name: None
    )("scheduler")
    if not runs:
        # A scheduler that just started has no run yet: healthy while its heartbeat is fresh.
        if beat is not None and now - beat[0] <= timedelta(seconds=HEARTBEAT_FRESH_SECONDS):
            report.lines.append(f"No runs yet; scheduler alive (heartbeat {beat[0].isoformat()}).")
            report.lines.extend(_heartbeat_lines(beat))
            return report
        report.healthy = False
        report.lines.append("No runs recorded yet.")
        if beat is not None:
            report.lines.append(
                f"UNHEALTHY: the scheduler's last heartbeat ({beat[0].isoformat()}) is older "
                f"than {HEARTBEAT_FRESH_SECONDS} s."
            )
        return report
    for run in runs[:limit]:
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
    report.lines.extend(_heartbeat_lines(beat))
    last = runs[0]
    destinations: dict[str, Any] = last.summary.get("destinations", {}) or {}
    failed = sorted(
        n for n, d in destinations.items() if (d or {}).get("status") in ("failed", "invalid")
    )
    holder = getattr(store, "lock_holder", lambda _name: None)("pls-sync:run")
    if last.status == "failed":
        report.healthy = False
        report.lines.append(f"UNHEALTHY: the last run ({last.run_id}) failed.")
    elif last.status == "interrupted" or (last.status == "running" and holder is None):
        # Running with nobody holding the run lock: its process died mid-way.
        report.healthy = False
        report.lines.append(f"UNHEALTHY: the last run ({last.run_id}) was interrupted.")
    elif failed:
        report.healthy = False
        report.lines.append(
            f"UNHEALTHY: the last run ({last.run_id}) failed for {', '.join(failed)}."
        )
    elif last.status == "partial":
        report.lines.append(
            f"Warning: the last run ({last.run_id}) had rejected records; see its summary."
        )
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


def _heartbeat_lines(beat: tuple[datetime, dict[str, Any]] | None) -> list[str]:
    """The scheduler's heartbeat as a line: when, the next runs, what is running."""
    if beat is None:
        return []
    at, detail = beat
    detail = detail or {}
    nexts = ", ".join(f"{job} at {when}" for job, when in detail.get("next_runs", {}).items())
    running = ", ".join(str(job) for job in detail.get("running", []) or [])
    return [
        f"Scheduler heartbeat {at.isoformat()}"
        + (f"; next: {nexts}" if nexts else "")
        + (f"; running: {running}" if running else "")
    ]
