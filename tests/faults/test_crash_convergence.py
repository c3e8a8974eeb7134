"""Crash convergence: ``pls-sync run`` killed with SIGKILL at many points, then rerun.

The CLI runs in a subprocess against a sandbox served by the test process. Kills land:

* at code points inside the child (warehouse read, scoring, just before the state commit, before
  the first rep alert is sent, after every write just before ``finish_run``): the child's
  launcher pauses there and prints a marker, and the test kills it while it waits; nothing else
  in the child changes;
* at sandbox requests (the Nth describe, query, collection PATCH, batch update, task create or
  Bulk API 2.0 job step): the test kills the child when the request arrives, before the sandbox
  applies it, or after the sandbox applied it but before the child reads the answer;
* at time offsets: after start-up, and during a CRM read stretched by ``slow`` faults.

Rep alerts are on, with ``alerts.backfill: true`` so the first run gives every account in the
sales tier its task. After each kill the run is repeated to completion (in-process, with the
same state store and config, without clearing the run lock, the rig's clock moved past the time
a created task takes to show in its lookup), and the CRM's mapped fields are compared field by
field with a clean uninterrupted run on a fresh sandbox, and its tasks key by key: exactly one
task per alert key, the clean run's keys. No record may be written twice: a write the killed run
applied is never sent again.

Some reruns run four hours later (``--as-of`` moved forward): the alert keys number the entry
into the tier, not its time, so the tasks are the clean run's all the same. The fields are not:
the score windows move, and a field like ``PQA_Qualified_Since__c`` keeps the time of the run
whose state was committed. The reference is then a clean run at the later as-of when the killed
run died before its state commit, and a clean run at the first as-of followed by one at the later
as-of when it died after it (read from the state store, not assumed from the kill point).
"""

from __future__ import annotations

import fnmatch
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import pytest

from connectors.state import SqlStateStore
from pls_sync.sandbox.http import Request, Response
from tests.faults.harness import (
    DESTINATIONS,
    HS_TASK_WRITE,
    HS_WRITE,
    REPO_ROOT,
    SF_TASK_WRITE,
    SF_WRITE,
    TALLY,
    CleanRun,
    DemoData,
    Handler,
    Rig,
    clean_reference,
    converge,
    make_demo,
    new_sandbox,
    small_batch_config,
    soql_from,
)

COMPANIES = 60
SF_BATCH = 20
HS_BATCH = 15
LOCK_NAME = "pls-sync:run"
MARKER = "@@PAUSED "
CHILD_TIMEOUT = 30.0
# The reproduction reran four hours after the killed run.
LATER = timedelta(hours=4)
# Above it, Salesforce is written with Bulk API 2.0: the 51 changed demo Accounts go that way.
BULK_THRESHOLD = 20

# The child: the real CLI entry point, with optional pause points. A pause prints a marker and
# waits to be killed; it changes nothing else in the run.
LAUNCHER = r"""
import os, sys, time

def _pause(phase):
    print("@@PAUSED " + phase, flush=True)
    time.sleep(60)

# The rig's clock (this machine's, moved forward): the alert ledger's stamps and settling.
import functools
from datetime import UTC, datetime, timedelta
import connectors.alerts_state as _alerts_state
import pls_sync.service as _service
_offset = timedelta(seconds=float(os.environ.get("FAULTS_CLOCK_OFFSET", "0")))
def _rig_now():
    return datetime.now(UTC) + _offset
_alerts_state._now = _rig_now
_service.send_alerts = functools.partial(_service.send_alerts, clock=_rig_now)

_where = os.environ.get("FAULTS_PAUSE_AT", "")
if _where == "warehouse_read":
    from connectors.warehouse import SqlUsageSource
    _read = SqlUsageSource.read_accounts
    def _read_accounts(self, as_of, stats):
        for index, account in enumerate(_read(self, as_of, stats)):
            if index == 10:
                _pause(_where)
            yield account
    SqlUsageSource.read_accounts = _read_accounts
elif _where == "scoring":
    import pls_sync.service as _service
    _score = _service.score_account
    _seen = [0]
    def _score_account(*args, **kwargs):
        _seen[0] += 1
        if _seen[0] == 30:
            _pause(_where)
        return _score(*args, **kwargs)
    _service.score_account = _score_account
elif _where == "send_alerts":
    _run_alerts = _service.run_alerts
    def _paused_alerts(*args, **kwargs):
        _pause(_where)
        return _run_alerts(*args, **kwargs)
    _service.run_alerts = _paused_alerts
elif _where in ("save_account_states", "finish_run"):
    from connectors.state import SqlStateStore
    _method = getattr(SqlStateStore, _where)
    def _paused(self, *args, **kwargs):
        _pause(_where)
        return _method(self, *args, **kwargs)
    setattr(SqlStateStore, _where, _paused)

from pls_sync.cli import main
main()
"""


# --------------------------------------------------------------------------- the child


class Child:
    """``pls-sync run`` in a subprocess, killable from any thread."""

    def __init__(self, rig: Rig, config: Path, pause_at: str | None = None):
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SALESFORCE_", "HUBSPOT_", "PLS_SYNC_"))
        }
        env.update(rig.env())
        env.update(
            PYTHONPATH=str(REPO_ROOT),
            PYTHONUNBUFFERED="1",
            FAULTS_PAUSE_AT=pause_at or "",
            FAULTS_CLOCK_OFFSET=str(rig.clock.offset.total_seconds()),
        )
        self.summary = rig.folder / "summary.json"
        self._stderr = (rig.folder / "child.stderr").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LAUNCHER,
                "run",
                "--config",
                str(config),
                "--as-of",
                rig.demo.as_of.isoformat(),
                "--summary-json",
                str(self.summary),
            ],
            cwd=rig.folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self.killed = threading.Event()
        self.killed_at: str | None = None

    def kill(self, where: str) -> None:
        """SIGKILL the child and wait until it is dead (a zombie counts: it runs no more)."""
        if self.killed_at is not None:
            return
        self.killed_at = where  # before the signal: the main thread may see the child end first
        os.kill(self.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(self.proc.pid):
            time.sleep(0.002)
        self.killed.set()

    def wait_marker(self, phase: str) -> None:
        """Read the child's stdout until it says it paused at ``phase``."""
        stdout: IO[bytes] | None = self.proc.stdout
        assert stdout is not None
        deadline = time.monotonic() + CHILD_TIMEOUT
        while time.monotonic() < deadline:
            line = stdout.readline()
            if not line:
                raise AssertionError(f"the child ended before pausing at {phase}: {self.log()}")
            if line.decode(errors="replace").strip() == MARKER + phase:
                return
        raise AssertionError(f"the child never paused at {phase}")

    def finish(self) -> int:
        """Wait for the child to end; its exit code (-9 when killed)."""
        try:
            self.proc.communicate(timeout=CHILD_TIMEOUT)
        finally:
            self._stderr.close()
        return self.proc.returncode

    def log(self) -> str:
        """The child's stderr (its JSON logs), for failure messages."""
        if not self._stderr.closed:
            self._stderr.flush()
        return Path(self._stderr.name).read_text(errors="replace")[-3000:]


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


# --------------------------------------------------------------------------- kill points


@dataclass(frozen=True, slots=True)
class KillPoint:
    """Where to kill: a pause point in the child, the ``nth`` request to ``endpoint`` (a glob;
    before or after the sandbox applies it; ``nth=-1`` is the clean run's last such request),
    or ``offset`` seconds after start-up, or after the first (slowed) CRM request was answered.

    With slow reads every read takes ``SLOW_READ_DELAY``; from the first answer on, the child
    reads Contact MQLs (0-0.5 s) and HubSpot MQLs (0.5-1), commits the state, describes
    Salesforce (1-1.5) and reads its Accounts (1.5-2), writes, then reads HubSpot's
    properties (2.1-2.6) and companies (2.6-3.1)."""

    name: str
    pause_at: str | None = None
    endpoint: str | None = None
    soql_from: str | None = None  # only SOQL queries reading this object count
    path_has: str | None = None  # only requests whose path contains this count
    nth: int = 1
    applied: bool = False
    offset: float | None = None
    slow_reads: bool = False


KILL_POINTS = [
    KillPoint("startup", offset=0.3),
    KillPoint("warehouse_read", pause_at="warehouse_read"),
    KillPoint("scoring", pause_at="scoring"),
    KillPoint("sf_mql_read", endpoint="sf.query", soql_from="Lead"),
    KillPoint("hs_mql_read", endpoint="hs.contacts.search"),
    KillPoint("before_state_commit", pause_at="save_account_states"),
    KillPoint("sf_describe", endpoint="sf.describe"),
    KillPoint("sf_account_read", endpoint="sf.query", soql_from="Account"),
    KillPoint("slow_mql_read_t0.25", offset=0.25, slow_reads=True),
    KillPoint("slow_sf_account_read_t1.75", offset=1.75, slow_reads=True),
    KillPoint("slow_hs_read_t2.85", offset=2.85, slow_reads=True),
    KillPoint("sf_batch1_unapplied", endpoint=SF_WRITE, nth=1),
    KillPoint("sf_batch1_applied", endpoint=SF_WRITE, nth=1, applied=True),
    KillPoint("sf_batch2_unapplied", endpoint=SF_WRITE, nth=2),
    KillPoint("sf_batch2_applied", endpoint=SF_WRITE, nth=2, applied=True),
    KillPoint("sf_last_batch_applied", endpoint=SF_WRITE, nth=-1, applied=True),
    KillPoint("between_destinations", endpoint="hs.properties.list"),
    KillPoint("hs_read", endpoint="hs.companies.list"),
    KillPoint("hs_batch1_unapplied", endpoint=HS_WRITE, nth=1),
    KillPoint("hs_batch2_applied", endpoint=HS_WRITE, nth=2, applied=True),
    KillPoint("hs_batch3_unapplied", endpoint=HS_WRITE, nth=3),
    KillPoint("hs_last_batch_applied", endpoint=HS_WRITE, nth=-1, applied=True),
    KillPoint("before_alerts", pause_at="send_alerts"),
    KillPoint("sf_task1_unapplied", endpoint=SF_TASK_WRITE, path_has="/Task"),
    KillPoint("sf_task1_applied", endpoint=SF_TASK_WRITE, path_has="/Task", applied=True),
    KillPoint(
        "sf_last_task_applied", endpoint=SF_TASK_WRITE, path_has="/Task", nth=-1, applied=True
    ),
    KillPoint("hs_task1_unapplied", endpoint=HS_TASK_WRITE),
    KillPoint("hs_task1_applied", endpoint=HS_TASK_WRITE, applied=True),
    KillPoint("hs_task3_applied", endpoint=HS_TASK_WRITE, nth=3, applied=True),
    KillPoint("before_finish_run", pause_at="finish_run"),
]
KILLS_BY_NAME = {point.name: point for point in KILL_POINTS}
# Rerun four hours later: killed before the state commit (the alerts were queued), between the
# commit and the end of the writes, while creating Salesforce and HubSpot tasks.
LATER_KILL_POINTS = [
    KILLS_BY_NAME[name]
    for name in ("before_state_commit", "sf_batch2_applied", "sf_task1_applied", "hs_task3_applied")
]
# Inside the Bulk API 2.0 write: the job is applied when it is closed (UploadComplete); the
# sandbox then answers BULK_POLLS_IN_PROGRESS status polls InProgress before JobComplete.
BULK_POLLS_IN_PROGRESS = 1
BULK_KILL_POINTS = [
    KillPoint("bulk_upload_unapplied", endpoint="sf.bulk2.upload"),
    KillPoint("bulk_upload_applied", endpoint="sf.bulk2.upload", applied=True),
    KillPoint("bulk_close_unapplied", endpoint="sf.bulk2.close"),
    KillPoint("bulk_close_applied", endpoint="sf.bulk2.close", applied=True),
    KillPoint("bulk_status_in_progress", endpoint="sf.bulk2.status"),
    KillPoint("bulk_status_complete_applied", endpoint="sf.bulk2.status", nth=2, applied=True),
]
# Each slowed request takes SLOW_READ_DELAY seconds: the read phases become wide windows.
SLOW_READS = (
    ("sf.query", 3),
    ("hs.contacts.search", 1),
    ("sf.describe", 1),
    ("hs.properties.list", 1),
    ("hs.companies.list", 1),
)
SLOW_READ_DELAY = 0.5


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    """The demo warehouse, generated once for the module."""
    return make_demo(tmp_path_factory.mktemp("crash-demo"), COMPANIES)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped config with small batches (several write requests per CRM) and every account
    in the sales tier alerted on the first run."""
    return small_batch_config(
        tmp_path_factory.mktemp("crash-config"),
        salesforce=SF_BATCH,
        hubspot=HS_BATCH,
        backfill=True,
    )


@pytest.fixture(scope="module")
def clean(demo: DemoData, config: Path, tmp_path_factory: pytest.TempPathFactory) -> CleanRun:
    """A clean uninterrupted run on a fresh sandbox: what every killed run must converge to."""
    folder = tmp_path_factory.mktemp("crash-clean")
    return clean_reference(demo, folder, DESTINATIONS, config, alerts=True)


@pytest.fixture(scope="module")
def clean_later(demo: DemoData, config: Path, tmp_path_factory: pytest.TempPathFactory) -> CleanRun:
    """A clean run at the later as-of only: what a run killed before its state commit and
    rerun later converges to."""
    folder = tmp_path_factory.mktemp("crash-clean-later")
    return clean_reference(
        demo, folder, DESTINATIONS, config, alerts=True, as_ofs=(demo.as_of + LATER,)
    )


@pytest.fixture(scope="module")
def clean_then_later(
    demo: DemoData, config: Path, tmp_path_factory: pytest.TempPathFactory
) -> CleanRun:
    """Clean runs at the demo's as-of, then at the later one: what a run killed after its state
    commit and rerun later converges to."""
    folder = tmp_path_factory.mktemp("crash-clean-then-later")
    as_ofs = (demo.as_of, demo.as_of + LATER)
    return clean_reference(demo, folder, DESTINATIONS, config, alerts=True, as_ofs=as_ofs)


@pytest.fixture(scope="module")
def bulk_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The crash config with Salesforce written through Bulk API 2.0."""
    return small_batch_config(
        tmp_path_factory.mktemp("bulk-config"),
        salesforce=SF_BATCH,
        hubspot=HS_BATCH,
        backfill=True,
        bulk_threshold=BULK_THRESHOLD,
    )


@pytest.fixture(scope="module")
def bulk_clean(
    demo: DemoData, bulk_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> CleanRun:
    """A clean run with Salesforce written through Bulk API 2.0."""
    folder = tmp_path_factory.mktemp("bulk-clean")
    reference = clean_reference(demo, folder, DESTINATIONS, bulk_config, alerts=True)
    assert reference.summary["destinations"]["salesforce"]["write_method"] == "bulk2"
    return reference


@pytest.fixture
def rig(demo: DemoData, config: Path, tmp_path: Path) -> Iterator[Rig]:
    """A fresh sandbox and state store, both CRMs, rep alerts on."""
    box = new_sandbox(demo)
    try:
        yield Rig(box, demo, tmp_path, config=config, alerts=True)
    finally:
        box.stop()


def write_calls(clean: CleanRun, destination: str) -> int:
    """Write requests the clean run made in ``destination``."""
    return int(clean.summary["destinations"][destination]["write_calls"])


def last_nth(clean: CleanRun, point: KillPoint) -> int:
    """How many requests the clean run made to ``point.endpoint`` (write or task create)."""
    if point.endpoint in (SF_WRITE, HS_WRITE):
        return write_calls(clean, "salesforce" if point.endpoint == SF_WRITE else "hubspot")
    destination = "salesforce" if point.endpoint == SF_TASK_WRITE else "hubspot"
    return sum(n for key, n in clean.tasks.items() if key.startswith(destination + ":"))


def kill_hook(child_ref: list[Child], point: KillPoint, nth: int) -> Any:
    """A sandbox hook killing the child at the ``nth`` request to ``point.endpoint``."""
    seen = 0
    lock = threading.Lock()
    query = soql_from(point.soql_from) if point.soql_from else None
    assert point.endpoint is not None

    def counts(endpoint: str, request: Request) -> bool:
        return (
            fnmatch.fnmatchcase(endpoint, point.endpoint or "")
            and (query is None or query(endpoint, request))
            and (point.path_has is None or point.path_has in request.path)
        )

    def hook(endpoint: str, request: Request, next_handler: Handler) -> Response:
        nonlocal seen
        if not counts(endpoint, request):
            return next_handler(request)
        with lock:
            seen += 1
            fire = seen == nth
        if not fire:
            return next_handler(request)
        child = child_ref[0]
        if not point.applied:
            child.kill(point.name)
            return Response(503, [{"errorCode": "SERVER_UNAVAILABLE", "message": "killed"}])
        response = next_handler(request)
        child.kill(point.name)
        return response

    return hook


def first_request_timer(child_ref: list[Child], point: KillPoint) -> Any:
    """A sandbox hook that starts the kill timer when the first CRM request is answered
    (hooks run after the sandbox's ``slow`` delay)."""
    started = threading.Event()

    def hook(endpoint: str, request: Request, next_handler: Handler) -> Response:
        if not started.is_set():
            started.set()
            assert point.offset is not None
            timer = threading.Timer(point.offset, child_ref[0].kill, args=(point.name,))
            timer.daemon = True
            timer.start()
        return next_handler(request)

    return hook


def kill(rig: Rig, config: Path, clean: CleanRun, point: KillPoint) -> Child:
    """Start the CLI and kill it at ``point``."""
    child_ref: list[Child] = []
    assert rig.hooks is not None
    if point.endpoint is not None:
        nth = point.nth if point.nth != -1 else last_nth(clean, point)
        rig.hooks.add(kill_hook(child_ref, point, nth))
    if point.slow_reads:
        for endpoint, times in SLOW_READS:
            rig.box.faults.add("slow", endpoint=endpoint, times=times, delay=SLOW_READ_DELAY)
        rig.hooks.add(first_request_timer(child_ref, point))
    child = Child(rig, config, point.pause_at)
    child_ref.append(child)
    if point.pause_at is not None:
        child.wait_marker(point.pause_at)
        child.kill(point.name)
    elif point.offset is not None and not point.slow_reads:
        time.sleep(point.offset)
        child.kill(point.name)
    code = child.finish()
    assert child.killed_at == point.name, f"{point.name}: the child was not killed: {child.log()}"
    assert code == -signal.SIGKILL, f"{point.name}: exit {code}: {child.log()}"
    TALLY.runs += 1
    TALLY.runs_killed += 1
    rig.fault_kinds.tally()
    # The slow requests a killed child left behind finish before the rerun reads the CRM.
    if point.slow_reads:
        time.sleep(SLOW_READ_DELAY)
    return child


def kill_and_rerun(rig: Rig, config: Path, clean: CleanRun, point: KillPoint) -> Child:
    """Start the CLI, kill it at ``point``, and rerun to convergence (the lock left as is)."""
    child = kill(rig, config, clean, point)
    rerun = converge(rig, clean)
    assert rerun.status == "succeeded"
    return child


def state_committed(rig: Rig) -> bool:
    """Whether a run committed account states to the rig's state store."""
    store = SqlStateStore(rig.state_url)
    try:
        return bool(store.load_account_states())
    finally:
        store.close()


# --------------------------------------------------------------------------- tests


def test_clean_run_takes_several_batches_per_crm(clean: CleanRun) -> None:
    """The reference writes enough records for the mid-batch kill points to exist."""
    assert write_calls(clean, "salesforce") >= 3
    assert write_calls(clean, "hubspot") >= 4


def test_uninterrupted_cli_run_matches_the_clean_run(
    rig: Rig, config: Path, clean: CleanRun
) -> None:
    """The subprocess CLI, not killed, leaves what the in-process clean run leaves."""
    child = Child(rig, config)
    assert child.finish() == 0, child.log()
    TALLY.runs += 1
    rerun = converge(rig, clean)
    for name in DESTINATIONS:
        assert rig.destination(rerun, name)["write_calls"] == 0


@pytest.mark.parametrize("point", KILL_POINTS, ids=[p.name for p in KILL_POINTS])
def test_killed_run_converges_on_rerun(
    rig: Rig, config: Path, clean: CleanRun, point: KillPoint
) -> None:
    """SIGKILL at ``point``, rerun: the CRM equals the clean run's, no write sent twice."""
    kill_and_rerun(rig, config, clean, point)
    if point.pause_at == "finish_run":
        # Every write was done: the rerun found nothing left to send.
        for name in DESTINATIONS:
            assert rig.destination(rig.runs[-1], name)["write_calls"] == 0
    if point.pause_at in ("warehouse_read", "scoring", "save_account_states"):
        # Killed before the state commit: the CRM was never touched by the killed run.
        assert len(rig.runs) == 1


def test_run_lock_left_by_a_killed_run_does_not_block_the_next_cli_run(
    rig: Rig, config: Path, clean: CleanRun
) -> None:
    """The killed run's lock row is still there, with its lease running, yet the next
    ``pls-sync run`` starts at once: the holder's process is gone."""
    child = Child(rig, config, "save_account_states")
    child.wait_marker("save_account_states")
    child.kill("lock")
    assert child.finish() == -signal.SIGKILL
    TALLY.runs += 1
    TALLY.runs_killed += 1
    store = SqlStateStore(rig.state_url)
    holder = store.lock_holder(LOCK_NAME)
    assert holder is not None and holder[0].split(":")[1] == str(child.proc.pid)
    started = time.monotonic()
    rerun = Child(rig, config)
    assert rerun.finish() == 0, rerun.log()
    TALLY.runs += 1
    assert time.monotonic() - started < CHILD_TIMEOUT
    assert store.lock_holder(LOCK_NAME) is None
    converge(rig, clean)


def test_killed_run_is_not_left_running_in_the_run_history(
    rig: Rig, config: Path, clean: CleanRun
) -> None:
    """The next run takes the dead run's lock over; the history must then no longer show the
    dead run as running (``pls-sync status`` lists it, and a healthcheck run between the kill
    and the rerun sees a last run that is neither failed nor finished)."""
    child = Child(rig, config, "finish_run")
    child.wait_marker("finish_run")
    child.kill("history")
    assert child.finish() == -signal.SIGKILL
    TALLY.runs += 1
    TALLY.runs_killed += 1
    converge(rig, clean)
    runs = SqlStateStore(rig.state_url).recent_runs(5)
    assert [r.status for r in runs][:1] == ["succeeded"]
    assert "running" not in [r.status for r in runs]


@pytest.mark.parametrize("point", LATER_KILL_POINTS, ids=[p.name for p in LATER_KILL_POINTS])
def test_killed_run_rerun_hours_later_converges(
    rig: Rig,
    config: Path,
    clean: CleanRun,
    clean_later: CleanRun,
    clean_then_later: CleanRun,
    point: KillPoint,
) -> None:
    """SIGKILL at ``point``, rerun four hours later: the same tasks, one per alert key (the key
    numbers the entry, never its time); the fields of a clean run with the same history. A
    record may be written by both runs (at each as-of), never more."""
    kill(rig, config, clean, point)
    reference = clean_then_later if state_committed(rig) else clean_later
    assert set(reference.tasks) == set(clean.tasks)
    converge(rig, reference, as_of=rig.demo.as_of + LATER, max_applied=2, same_writes=False)


@pytest.fixture
def bulk_rig(demo: DemoData, bulk_config: Path, tmp_path: Path) -> Iterator[Rig]:
    """A fresh sandbox and state store, both CRMs, rep alerts on, Salesforce through Bulk.

    Closed jobs stay InProgress for one poll, not the sandbox's default two: the child waits
    for real between polls (1 s, then 2 s), and one is enough for a kill during the polls."""
    box = new_sandbox(demo)
    box.salesforce.bulk_polls_in_progress = BULK_POLLS_IN_PROGRESS
    try:
        yield Rig(box, demo, tmp_path, config=bulk_config, alerts=True)
    finally:
        box.stop()


@pytest.mark.parametrize("point", BULK_KILL_POINTS, ids=[p.name for p in BULK_KILL_POINTS])
def test_run_killed_inside_a_bulk_job_converges_on_rerun(
    bulk_rig: Rig, bulk_config: Path, bulk_clean: CleanRun, point: KillPoint
) -> None:
    """SIGKILL at a step of the Salesforce Bulk API 2.0 job, rerun: the CRM equals the clean
    run's, no record written twice (a job the killed run closed was applied: never resent)."""
    kill_and_rerun(bulk_rig, bulk_config, bulk_clean, point)
