"""``pls-sync schedule``: the long-running cron process, on APScheduler.

Each configured job runs ``run_sync`` on its cron expression. A job never overlaps itself
(max one instance here, and the state-store lock across containers), missed runs are
coalesced into one within the job's grace time, a failing run is logged and the scheduler
goes on, and SIGTERM/SIGINT let the current run finish before the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import structlog
from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.schedulers.background import BackgroundScheduler

from pls_sync.config import Settings
from pls_sync.cron import cron_trigger
from pls_sync.errors import PlsSyncError, RunLockedError, redact

log = structlog.get_logger("pls_sync.scheduler")

RunJob = Callable[[str, tuple[str, ...] | None], Any]

# How often the main thread looks at the stop flag; a signal is noticed within this time.
_POLL_SECONDS = 0.2

# APScheduler logs through the standard library; with no handler configured Python's last-resort
# handler would print its warnings as plain text next to our JSON. Our listener logs the same
# events (missed, skipped, failed) as structured events instead.
logging.getLogger("apscheduler").addHandler(logging.NullHandler())


class LockedOut(Exception):
    """Another process holds the run lock."""


class SyncScheduler:
    """Runs the configured jobs on their cron expressions until stopped.

    ``run_job(name, destinations)`` performs one run; it raises ``LockedOut`` (or
    ``RunLockedError``) when another process holds the run lock, which skips the run, and
    any other exception counts as a failed run. ``heartbeat(detail)`` is called at start and
    every ``heartbeat_seconds`` from a thread of its own, so it keeps beating during a long run.
    """

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
        self.scheduler.add_listener(
            self._on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
        self.failures = 0
        self.runs = 0
        self.skipped = 0
        self._counts_lock = threading.Lock()
        self._running: set[str] = set()
        self._stop_signal: int | None = None
        for job in settings.schedule.jobs:
            self.scheduler.add_job(
                self._run,
                cron_trigger(job.cron, settings.schedule.timezone),
                args=(job.name, job.destinations or None),
                id=job.name,
                name=job.name,
                coalesce=True,
                max_instances=1,
                # APScheduler refuses a grace of 0; one second is "no grace" in practice.
                misfire_grace_time=max(1, int(job.grace_seconds)),
                replace_existing=True,
            )

    def _run(self, name: str, destinations: tuple[str, ...] | None) -> None:
        if self.stopping.is_set():
            log.info("run_skipped_stopping", job=name)
            return
        with self._counts_lock:
            self.runs += 1
            self._running.add(name)
        started = time.monotonic()
        log.info("scheduled_run_started", job=name, destinations=list(destinations or ()))
        try:
            self.run_job(name, destinations)
        except (LockedOut, RunLockedError) as exc:
            if isinstance(exc, RunLockedError) and exc.code != "locked":
                self._failed(name, exc, started)
            else:
                with self._counts_lock:
                    self.skipped += 1
                log.warning("run_skipped_locked", job=name, holder=redact(str(exc)))
        except Exception as exc:
            self._failed(name, exc, started)
        else:
            log.info(
                "scheduled_run_finished", job=name, seconds=round(time.monotonic() - started, 3)
            )
        finally:
            with self._counts_lock:
                self._running.discard(name)

    def _failed(self, name: str, exc: Exception, started: float) -> None:
        with self._counts_lock:
            self.failures += 1
        log.error(
            "scheduled_run_failed",
            job=name,
            error=redact(f"{type(exc).__name__}: {exc}"),
            seconds=round(time.monotonic() - started, 3),
            # A pls-sync error explains itself; anything else is a bug worth its traceback.
            exc_info=not isinstance(exc, PlsSyncError),
        )

    def _on_event(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            assert isinstance(event, JobExecutionEvent)
            log.warning(
                "run_missed",
                job=event.job_id,
                scheduled_for=event.scheduled_run_time.astimezone(UTC).isoformat(),
            )
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            with self._counts_lock:
                self.skipped += 1
            log.warning("run_skipped_overlap", job=event.job_id, reason="the last run is going on")
        elif isinstance(event, JobExecutionEvent) and event.exception is not None:
            log.error("job_error", job=event.job_id, error=redact(str(event.exception)))

    def next_runs(self, now: datetime | None = None) -> dict[str, str]:
        """Each job's next fire time, ISO formatted in UTC (also before the scheduler starts).

        Before the scheduler starts, the next fire time is counted from ``now`` (default: the
        clock); once it runs, APScheduler's own next run time is reported.
        """
        out: dict[str, str] = {}
        now = now if now is not None else datetime.now(UTC)
        for job in self.scheduler.get_jobs():
            # A job added before start() has no next_run_time attribute yet.
            when = getattr(job, "next_run_time", None)
            if when is None and not hasattr(job, "next_run_time"):
                when = job.trigger.get_next_fire_time(None, now)
            out[job.id] = when.astimezone(UTC).isoformat() if when else ""
        return out

    def status(self) -> dict[str, Any]:
        """What the heartbeat records: next runs, runs so far, failures, skips, running jobs."""
        with self._counts_lock:
            counts = {
                "runs": self.runs,
                "failures": self.failures,
                "skipped": self.skipped,
                "running": sorted(self._running),
            }
        return {"next_runs": self.next_runs(), **counts}

    def request_stop(self, signum: int | None = None, _frame: FrameType | None = None) -> None:
        """Stop taking new runs; the current one finishes. Safe as a signal handler.

        It only sets a flag and an event: logging from a signal handler could deadlock on the
        log stream's lock held by the interrupted code, so the watcher thread logs instead.
        """
        if self._stop_signal is None and signum is not None:
            self._stop_signal = signum
        self.stopping.set()

    def run_forever(self, *, run_now: bool = False, install_signals: bool = True) -> int:
        """Start the scheduler and block until stopped; returns the exit code (0).

        ``run_now`` runs every job once, one after the other, before the cron schedule starts.
        ``install_signals`` makes SIGTERM and SIGINT stop the scheduler (main thread only).
        """
        previous: dict[int, Any] = {}
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self.request_stop)
        try:
            self.scheduler.start(paused=run_now)
            log.info(
                "scheduler_started",
                timezone=self.settings.schedule.timezone,
                jobs=self.next_runs(),
                run_now=run_now,
            )
            self._beat()
            watcher = threading.Thread(target=self._watch, name="scheduler-heartbeat", daemon=True)
            watcher.start()
            if run_now:
                for job in self.settings.schedule.jobs:
                    if self.stopping.is_set():
                        break
                    self._run(job.name, job.destinations or None)
                self.scheduler.resume()
            # Poll rather than wait on the event: the signal handler sets that event, and a
            # signal landing inside Event.wait() in this thread may find its lock taken.
            while not self.stopping.is_set():
                time.sleep(_POLL_SECONDS)
            # wait=True: a run in progress finishes its work (and its state commit) before we exit.
            self.scheduler.shutdown(wait=True)
            watcher.join(timeout=5)
            log.info(
                "scheduler_stopped", runs=self.runs, failures=self.failures, skipped=self.skipped
            )
            return 0
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _watch(self) -> None:
        """Beat every ``heartbeat_seconds`` until stopped, then say why we stop."""
        while not self.stopping.wait(self.heartbeat_seconds):
            self._beat()
        log.info("stopping", signal=self._stop_signal, running=self.status()["running"])

    def _beat(self) -> None:
        if self.heartbeat is None:
            return
        try:
            self.heartbeat(self.status())
        except Exception as exc:  # a missed heartbeat must not stop the scheduler
            log.warning("heartbeat_failed", error=redact(str(exc)))


def now_utc() -> datetime:
    """The current time, UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0)
