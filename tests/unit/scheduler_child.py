"""A scheduler process for the signal tests: one slow job that runs ``run_sync`` for real.

Usage: ``python -m tests.unit.scheduler_child WORKDIR MODE`` where MODE is ``run-now`` (the job
runs at start, in the main thread) or ``scheduled`` (the cron schedule fires it at once, in a
worker thread). The run reads a warehouse that takes ``SLOW_SECONDS`` and records itself in a
SQLite state store in WORKDIR; ``WORKDIR/entered`` appears when the run is under way and
``WORKDIR/finished`` when its read is done. Logs are JSON on stderr; the exit code is
``run_forever``'s.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from connectors.state import SqlStateStore
from pls_sync.config import JobSettings, ScheduleSettings, load_settings
from pls_sync.logs import configure_logging
from pls_sync.models import ProductAccount, UsageReadStats
from pls_sync.scheduler import SyncScheduler, now_utc
from pls_sync.service import Adapters, RunOptions, run_sync

REPO = Path(__file__).resolve().parents[2]
SLOW_SECONDS = 1.0


class SlowUsage:
    """A warehouse whose read takes a while and leaves marks on the way."""

    def __init__(self, workdir: Path):
        self.workdir = workdir

    def read_accounts(self, as_of: datetime, stats: UsageReadStats) -> Iterator[ProductAccount]:
        """Mark the start, take ``SLOW_SECONDS``, mark the end; no accounts."""
        (self.workdir / "entered").write_text(str(time.time()))
        time.sleep(SLOW_SECONDS)
        (self.workdir / "finished").write_text(str(time.time()))
        yield from ()


def main(workdir: Path, mode: str) -> int:
    """Run the scheduler until a signal stops it."""
    configure_logging("INFO", "json", stream=sys.stderr)
    settings = load_settings(REPO / "config" / "pls_sync.yaml", env={})
    settings = replace(
        settings,
        schedule=ScheduleSettings("UTC", (JobSettings("full_sync", "0 0 1 1 *", 3600),)),
    )
    store = SqlStateStore.open(f"sqlite:///{workdir / 'state.sqlite'}")
    scheduler: SyncScheduler | None = None

    def run_job(name: str, destinations: tuple[str, ...] | None) -> None:
        assert scheduler is not None
        options = RunOptions(
            as_of=now_utc(),
            command=f"schedule:{name}",
            destinations=destinations,
            stop=scheduler.stopping,
        )
        run_sync(Adapters(usage=SlowUsage(workdir), state=store), settings.scoring, options)

    scheduler = SyncScheduler(
        settings,
        run_job,
        heartbeat=lambda detail: store.heartbeat("scheduler", now_utc(), detail),
        heartbeat_seconds=0.2,
    )
    if mode == "scheduled":
        scheduler.scheduler.modify_job("full_sync", next_run_time=datetime.now(UTC))
    return scheduler.run_forever(run_now=mode == "run-now")


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
