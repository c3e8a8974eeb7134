"""``pls-sync schedule``: the long-running cron process, on APScheduler.

Each configured job runs ``run_sync`` on its cron expression. A job never overlaps itself
(max one instance here, and the state-store lock across containers), missed runs are
coalesced into one within the job's grace time, a failing run is logged and the scheduler
goes on, and SIGTERM/SIGINT let the current run finish before the process exits 0.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from pls_sync.config import Settings

log = structlog.get_logger("pls_sync.scheduler")

RunJob = Callable[[str, tuple[str, ...] | None], Any]


class LockedOut(Exception):
    """Another process holds the run lock."""


def owner_id() -> str:
    """Who holds a lock: host, pid and a random suffix, readable in ``status``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class SyncScheduler:
    """Runs the configured jobs on their cron expressions until stopped."""

    def __init__(
        self,
        settings: Settings,
        run_job: RunJob,
        *,
        heartbeat: Callable[[dict[str, Any]], None] | None = None,
        heartbeat_seconds: float = 60.0,
    ):
        self.settings = settings
        self.run_job = run_job
        self.heartbeat = heartbeat
        self.heartbeat_seconds = heartbeat_seconds
        self.stopping = threading.Event()
        self.scheduler = BackgroundScheduler(timezone=settings.schedule.timezone)
        self.scheduler.add_listener(self._on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        self.failures = 0
        self.runs = 0
        for job in settings.schedule.jobs:
            self.scheduler.add_job(
                self._run,
                CronTrigger.from_crontab(job.cron, timezone=settings.schedule.timezone),
                args=(
                    job.name,
                    job.destinations or None,
                ),
                id=job.name,
                name=job.name,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=int(job.grace_seconds),
                replace_existing=True,
            )

    def _run(self, name: str, destinations: tuple[str, ...] | None) -> None:
        if self.stopping.is_set():
            return
        self.runs += 1
        try:
            self.run_job(name, destinations)
        except LockedOut as exc:
            log.warning("run_skipped_locked", job=name, holder=str(exc))
        except Exception as exc:
            self.failures += 1
            log.error("scheduled_run_failed", job=name, error=str(exc))

    def _on_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            log.warning("run_missed", job=event.job_id, scheduled_for=str(event.scheduled_run_time))
        elif event.exception is not None:
            log.error("job_error", job=event.job_id, error=str(event.exception))

    def next_runs(self) -> dict[str, str]:
        """Each job's next fire time, ISO formatted."""
        return {
            job.id: job.next_run_time.astimezone(UTC).isoformat() if job.next_run_time else ""
            for job in self.scheduler.get_jobs()
        }

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Stop taking new runs; the current one finishes (signal handler)."""
        if not self.stopping.is_set():
            log.info("stopping", signal=signum)
        self.stopping.set()

    def run_forever(self, *, run_now: bool = False, install_signals: bool = True) -> int:
        """Start the scheduler and block until stopped; returns the exit code (0)."""
        if install_signals:
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        self.scheduler.start(paused=run_now)
        log.info("scheduler_started", jobs=self.next_runs())
        if run_now:
            for job in self.settings.schedule.jobs:
                if self.stopping.is_set():
                    break
                self._run(
                    job.name,
                    job.destinations or None,
                )
            self.scheduler.resume()
        while not self.stopping.wait(self.heartbeat_seconds):
            if self.heartbeat is not None:
                try:
                    self.heartbeat(
                        {
                            "next_runs": self.next_runs(),
                            "runs": self.runs,
                            "failures": self.failures,
                        }
                    )
                except Exception as exc:  # a missed heartbeat must not stop the scheduler
                    log.warning("heartbeat_failed", error=str(exc))
        # wait=True: a run in progress finishes its work (and its state commit) before we exit.
        self.scheduler.shutdown(wait=True)
        log.info("scheduler_stopped", runs=self.runs, failures=self.failures)
        return 0


def now_utc() -> datetime:
    """The current time, UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0)
