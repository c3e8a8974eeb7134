"""``SyncScheduler``: jobs from config, no overlap, coalesced misfires, graceful stop, heartbeats.

Cron fires at most once a minute, so the tests do not wait for the clock: they move a job's
next run time through APScheduler's own ``modify_job`` ("fire now", "this run was due three
years ago") and run the scheduler in a thread, or in a child process for the signal tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import structlog

from connectors.state import SqlStateStore
from pls_sync.config import JobSettings, ScheduleSettings, Settings, load_settings
from pls_sync.cron import next_fire_times
from pls_sync.errors import WarehouseError
from pls_sync.health import check_health
from pls_sync.models import ProductAccount, UsageReadStats
from pls_sync.scheduler import LockedOut, SyncScheduler, now_utc
from pls_sync.service import Adapters, RunOptions, run_sync
from tests.processes import signal_when_ready

REPO = Path(__file__).resolve().parents[2]
NEVER = "0 0 1 1 *"  # once a year: a job the clock will not fire during a test
Logs = list[MutableMapping[str, Any]]


@pytest.fixture(scope="module")
def base_settings() -> Settings:
    return load_settings(REPO / "config" / "pls_sync.yaml", env={})


def with_jobs(settings: Settings, *jobs: JobSettings, timezone: str = "UTC") -> Settings:
    return replace(settings, schedule=ScheduleSettings(timezone, tuple(jobs)))


@pytest.fixture
def logs() -> Iterator[Logs]:
    """Every structlog event, from every thread, whatever an earlier test configured."""
    saved = structlog.get_config()
    structlog.reset_defaults()
    try:
        with structlog.testing.capture_logs() as captured:
            yield captured
    finally:
        structlog.configure(**saved)


def wait_for(condition: Callable[[], bool], timeout: float = 4.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def events(logs: Logs, name: str) -> Logs:
    return [entry for entry in list(logs) if entry["event"] == name]


def fire_now(scheduler: SyncScheduler, job: str) -> None:
    scheduler.scheduler.modify_job(job, next_run_time=datetime.now(UTC))


class Running:
    """``run_forever`` in a thread; leaving the block stops it and checks it returned 0."""

    def __init__(self, scheduler: SyncScheduler, *, run_now: bool = False):
        self.scheduler = scheduler
        self.code: int | None = None
        self.thread = threading.Thread(target=self._main, args=(run_now,), daemon=True)

    def _main(self, run_now: bool) -> None:
        self.code = self.scheduler.run_forever(run_now=run_now, install_signals=False)

    def __enter__(self) -> Running:
        self.thread.start()
        wait_for(lambda: self.scheduler.scheduler.running)
        return self

    def stop(self) -> None:
        self.scheduler.request_stop()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "run_forever did not return"
        assert self.code == 0

    def __exit__(self, *_exc: object) -> None:
        if self.thread.is_alive():
            self.stop()


class Recorder:
    """A ``run_job`` that records its calls; ``gate`` (when given) holds each run until set."""

    def __init__(self, gate: threading.Event | None = None):
        self.calls: list[tuple[str, tuple[str, ...] | None]] = []
        self.finished = 0
        self.entered = threading.Event()
        self.gate = gate

    def __call__(self, name: str, destinations: tuple[str, ...] | None) -> None:
        self.calls.append((name, destinations))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(5), "the test never opened the gate"
        self.finished += 1


# --------------------------------------------------------------------------- jobs from config


SCHEDULE_YAML = """\
schedule:
  timezone: America/New_York
  jobs:
    - name: full_sync
      cron: "0 9 * * 1-5"
      grace_seconds: 600
    - name: pqa_refresh
      cron: "30 * * * *"
      grace_seconds: 0
      destinations: [salesforce]
"""


def test_jobs_come_from_config_with_their_time_zone(tmp_path: Path) -> None:
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "mappings", tmp_path / "mappings")
    main = tmp_path / "config" / "pls_sync.yaml"
    text, replaced = re.subn(
        r"^schedule:\n(?:[ #].*\n|\n)*", SCHEDULE_YAML, main.read_text(), flags=re.M
    )
    assert replaced == 1
    main.write_text(text)
    settings = load_settings(main, env={})

    scheduler = SyncScheduler(settings, Recorder())

    new_york = ZoneInfo("America/New_York")
    full, refresh = (
        scheduler.scheduler.get_job("full_sync"),
        scheduler.scheduler.get_job("pqa_refresh"),
    )
    assert full.trigger.timezone == refresh.trigger.timezone == new_york
    assert (full.coalesce, full.max_instances, full.misfire_grace_time) == (True, 1, 600)
    assert refresh.misfire_grace_time == 1  # APScheduler refuses 0: one second is "no grace"
    assert full.args == ("full_sync", None)
    assert refresh.args == ("pqa_refresh", ("salesforce",))
    # Before start() too: the heartbeat written at start up needs the next runs. From a fixed
    # Friday evening in New York, "1-5" (Monday to Friday) next fires on Monday morning.
    friday_evening = datetime(2026, 12, 4, 18, 0, tzinfo=new_york)
    nexts = {
        job: datetime.fromisoformat(at)
        for job, at in scheduler.next_runs(now=friday_evening).items()
    }
    assert all(at.utcoffset() == timedelta(0) for at in nexts.values())
    assert nexts["full_sync"].astimezone(new_york) == datetime(2026, 12, 7, 9, 0, tzinfo=new_york)
    assert nexts["pqa_refresh"].astimezone(new_york) == datetime(
        2026, 12, 4, 18, 30, tzinfo=new_york
    )


# --------------------------------------------------------------------------- run now


def test_run_now_runs_each_job_once_at_start_in_config_order(
    base_settings: Settings, logs: Logs
) -> None:
    settings = with_jobs(
        base_settings,
        JobSettings("full_sync", NEVER, 60),
        JobSettings("hubspot_refresh", NEVER, 60, ("hubspot",)),
    )
    recorder = Recorder()
    scheduler = SyncScheduler(settings, recorder)

    with Running(scheduler, run_now=True):
        wait_for(lambda: recorder.finished == 2)
        time.sleep(0.2)

    assert recorder.calls == [("full_sync", None), ("hubspot_refresh", ("hubspot",))]
    assert scheduler.runs == 2 and scheduler.failures == 0
    assert [e["job"] for e in events(logs, "scheduled_run_finished")] == [
        "full_sync",
        "hubspot_refresh",
    ]


def test_without_run_now_a_job_waits_for_its_time(base_settings: Settings) -> None:
    recorder = Recorder()
    scheduler = SyncScheduler(
        with_jobs(base_settings, JobSettings("full_sync", NEVER, 60)), recorder
    )

    with Running(scheduler):
        time.sleep(0.3)

    assert recorder.calls == []


# --------------------------------------------------------------------------- no overlap


def test_a_job_still_running_is_not_started_again(base_settings: Settings, logs: Logs) -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    scheduler = SyncScheduler(
        with_jobs(base_settings, JobSettings("full_sync", NEVER, 60)), recorder
    )

    with Running(scheduler):
        fire_now(scheduler, "full_sync")
        assert recorder.entered.wait(4)
        fire_now(scheduler, "full_sync")  # due again while the first run goes on
        wait_for(lambda: bool(events(logs, "run_skipped_overlap")))
        gate.set()
        wait_for(lambda: recorder.finished == 1)

    assert len(recorder.calls) == 1
    assert scheduler.skipped == 1
    assert events(logs, "run_skipped_overlap")[0]["job"] == "full_sync"


class GatedUsage:
    """A warehouse read that waits for ``gate`` and counts how many reads overlap."""

    active = 0
    most_at_once = 0
    guard = threading.Lock()

    def __init__(self, gate: threading.Event, entered: threading.Event):
        self.gate = gate
        self.entered = entered

    def read_accounts(self, as_of: datetime, stats: UsageReadStats) -> Iterator[ProductAccount]:
        with GatedUsage.guard:
            GatedUsage.active += 1
            GatedUsage.most_at_once = max(GatedUsage.most_at_once, GatedUsage.active)
        self.entered.set()
        try:
            assert self.gate.wait(5), "the test never opened the gate"
        finally:
            with GatedUsage.guard:
                GatedUsage.active -= 1
        yield from ()


def test_two_schedulers_sharing_a_state_store_never_run_at_once(
    base_settings: Settings, tmp_path: Path, logs: Logs
) -> None:
    """Two containers, one SQLite state store: the state-store lock lets one run at a time."""
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    SqlStateStore.open(url).close()
    GatedUsage.most_at_once = 0
    settings = with_jobs(base_settings, JobSettings("full_sync", NEVER, 60))
    gate = threading.Event()

    def container() -> tuple[SyncScheduler, threading.Event]:
        store = SqlStateStore(url)  # each container has its own connection to the shared store
        entered = threading.Event()

        def run_job(name: str, destinations: tuple[str, ...] | None) -> None:
            adapters = Adapters(usage=GatedUsage(gate, entered), state=store)
            options = RunOptions(as_of=now_utc(), command=f"schedule:{name}")
            run_sync(adapters, settings.scoring, options)

        return SyncScheduler(settings, run_job), entered

    (first, first_entered), (second, second_entered) = container(), container()
    with Running(first), Running(second):
        fire_now(first, "full_sync")
        assert first_entered.wait(4)
        fire_now(second, "full_sync")  # the other container's turn comes while the lock is held
        wait_for(lambda: bool(events(logs, "run_skipped_locked")))
        assert not second_entered.is_set()
        gate.set()
        wait_for(lambda: bool(events(logs, "scheduled_run_finished")))
        fire_now(second, "full_sync")  # the lock is free again
        wait_for(lambda: len(events(logs, "scheduled_run_finished")) == 2)

    assert GatedUsage.most_at_once == 1
    assert (first.runs, first.skipped, first.failures) == (1, 0, 0)
    assert (second.runs, second.skipped, second.failures) == (2, 1, 0)
    assert "another run holds the lock" in events(logs, "run_skipped_locked")[0]["holder"]
    runs = SqlStateStore(url).recent_runs()
    assert [(r.command, r.status) for r in runs] == [("schedule:full_sync", "succeeded")] * 2
    assert runs[1].finished_at is not None and runs[1].finished_at <= runs[0].started_at


def test_locked_out_is_a_skip_not_a_failure(base_settings: Settings, logs: Logs) -> None:
    def run_job(name: str, destinations: tuple[str, ...] | None) -> None:
        raise LockedOut("host-b:42:abcdef until 2024-05-01T12:00:00+00:00")

    scheduler = SyncScheduler(
        with_jobs(base_settings, JobSettings("full_sync", NEVER, 60)), run_job
    )
    with Running(scheduler, run_now=True):
        wait_for(lambda: scheduler.skipped == 1)

    assert scheduler.failures == 0
    assert "host-b:42" in events(logs, "run_skipped_locked")[0]["holder"]


# --------------------------------------------------------------------------- missed runs


def test_missed_runs_are_coalesced_into_one(base_settings: Settings, logs: Logs) -> None:
    """Three yearly runs were missed (the process was suspended): one run makes up for them."""
    grace = int(timedelta(days=400).total_seconds())
    recorder = Recorder()
    scheduler = SyncScheduler(
        with_jobs(base_settings, JobSettings("full_sync", NEVER, grace)), recorder
    )
    three_years_ago = datetime.now(UTC) - timedelta(days=3 * 365 + 2)
    scheduler.scheduler.modify_job("full_sync", next_run_time=three_years_ago)

    with Running(scheduler):
        wait_for(lambda: recorder.finished >= 1)
        time.sleep(0.3)
        next_run = scheduler.scheduler.get_job("full_sync").next_run_time

    assert recorder.calls == [("full_sync", None)]
    assert next_run > datetime.now(UTC)
    assert events(logs, "run_missed") == []


def test_a_run_missed_beyond_its_grace_is_logged_not_run(
    base_settings: Settings, logs: Logs
) -> None:
    recorder = Recorder()
    scheduler = SyncScheduler(
        with_jobs(base_settings, JobSettings("full_sync", NEVER, 60)), recorder
    )
    due = datetime.now(UTC) - timedelta(minutes=5)
    scheduler.scheduler.modify_job("full_sync", next_run_time=due)

    with Running(scheduler):
        wait_for(lambda: bool(events(logs, "run_missed")))
        time.sleep(0.2)

    assert recorder.calls == []
    missed = events(logs, "run_missed")[0]
    assert missed["job"] == "full_sync" and missed["log_level"] == "warning"
    assert datetime.fromisoformat(missed["scheduled_for"]) == due


# --------------------------------------------------------------------------- failures


def test_a_failing_run_is_logged_and_the_scheduler_goes_on(
    base_settings: Settings, logs: Logs
) -> None:
    outcomes: list[Exception | None] = [
        WarehouseError("cannot read the warehouse: password=hunter22 refused"),
        ValueError("a bug"),
        None,
    ]
    calls: list[str] = []

    def run_job(name: str, destinations: tuple[str, ...] | None) -> None:
        calls.append(name)
        outcome = outcomes[len(calls) - 1]
        if outcome is not None:
            raise outcome

    scheduler = SyncScheduler(
        with_jobs(base_settings, JobSettings("full_sync", NEVER, 60)), run_job
    )
    with Running(scheduler):
        for expected in (1, 2, 3):
            fire_now(scheduler, "full_sync")

            def done(n: int = expected) -> bool:
                return len(calls) == n and scheduler.status()["running"] == []

            wait_for(done)

    assert (scheduler.runs, scheduler.failures) == (3, 2)
    failed = events(logs, "scheduled_run_failed")
    assert [f["log_level"] for f in failed] == ["error", "error"]
    assert failed[0]["job"] == "full_sync"
    assert failed[0]["error"].startswith("WarehouseError: cannot read the warehouse")
    assert "hunter22" not in failed[0]["error"]
    assert failed[0]["exc_info"] is False  # our own errors explain themselves
    assert failed[1]["error"] == "ValueError: a bug" and failed[1]["exc_info"] is True
    assert len(events(logs, "scheduled_run_finished")) == 1


# --------------------------------------------------------------------------- stop


def test_stop_lets_the_current_run_finish(base_settings: Settings, logs: Logs) -> None:
    gate = threading.Event()
    recorder = Recorder(gate)
    scheduler = SyncScheduler(
        with_jobs(base_settings, JobSettings("full_sync", NEVER, 60)), recorder
    )
    running = Running(scheduler)

    with running:
        fire_now(scheduler, "full_sync")
        assert recorder.entered.wait(4)
        scheduler.request_stop()
        time.sleep(0.3)
        assert running.thread.is_alive()  # waiting for the run, not abandoning it
        gate.set()
        running.thread.join(timeout=5)

    assert running.code == 0 and recorder.finished == 1
    assert events(logs, "stopping")[0]["running"] == ["full_sync"]
    assert events(logs, "scheduler_stopped")[0]["runs"] == 1


def test_no_new_run_starts_once_stopping(base_settings: Settings, logs: Logs) -> None:
    recorder = Recorder()
    scheduler = SyncScheduler(
        with_jobs(base_settings, JobSettings("a", NEVER, 60), JobSettings("b", NEVER, 60)),
        recorder,
    )
    scheduler.request_stop(signal.SIGTERM)

    assert scheduler.run_forever(run_now=True, install_signals=False) == 0
    assert recorder.calls == []
    assert events(logs, "stopping")[0]["signal"] == signal.SIGTERM


@pytest.mark.parametrize(
    ("signum", "mode"), [(signal.SIGTERM, "run-now"), (signal.SIGINT, "scheduled")]
)
def test_a_signal_lets_the_run_finish_and_exits_0(
    tmp_path: Path, signum: signal.Signals, mode: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.unit.scheduler_child", str(tmp_path), mode],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err = signal_when_ready(child, (tmp_path / "entered").exists, signum, timeout=10)

    assert child.returncode == 0, err
    assert (tmp_path / "finished").exists()
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    names = [line["event"] for line in lines]
    assert names.index("stopping") < names.index("run_finished") < names.index("scheduler_stopped")
    assert next(line for line in lines if line["event"] == "stopping")["signal"] == signum
    runs = SqlStateStore(f"sqlite:///{tmp_path / 'state.sqlite'}").recent_runs()
    assert [(r.command, r.status) for r in runs] == [("schedule:full_sync", "succeeded")]


# --------------------------------------------------------------------------- heartbeat


def test_heartbeat_is_written_to_the_state_store(
    base_settings: Settings, tmp_path: Path, logs: Logs
) -> None:
    store = SqlStateStore.open(f"sqlite:///{tmp_path / 'state.sqlite'}")
    settings = with_jobs(base_settings, JobSettings("full_sync", NEVER, 60))
    beats: list[dict[str, Any]] = []

    def heartbeat(detail: dict[str, Any]) -> None:
        beats.append(detail)
        if len(beats) == 2:
            raise OSError("state store hiccup")
        store.heartbeat("scheduler", now_utc(), detail)

    scheduler = SyncScheduler(settings, Recorder(), heartbeat=heartbeat, heartbeat_seconds=0.05)
    with Running(scheduler):
        wait_for(lambda: len(beats) >= 4)

    beat = store.last_heartbeat("scheduler")
    assert beat is not None
    at, detail = beat
    assert abs(datetime.now(UTC) - at) < timedelta(seconds=5)
    (expected,) = next_fire_times(NEVER, "UTC", at - timedelta(seconds=5), count=1)
    assert detail["next_runs"]["full_sync"] == expected.isoformat()
    assert (detail["runs"], detail["failures"], detail["running"]) == (0, 0, [])
    assert events(logs, "heartbeat_failed")[0]["error"] == "state store hiccup"
    # No run yet, but a fresh heartbeat: the container is healthy.
    report = check_health(store, settings, datetime.now(UTC))
    assert report.healthy, report.lines
    assert report.lines[0].startswith("No runs yet; scheduler alive")
