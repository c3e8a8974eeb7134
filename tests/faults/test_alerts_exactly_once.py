"""After-write faults with rep alerts on: the CRM did the work, only its answer went wrong.

The sandbox applies the request, then loses the answer (``answer_lost``), cuts it mid-body
(``answer_cut``), sends it after the client's timeout (``answer_late``), replaces it with a
proxy's HTML page (``answer_not_json``), or applies it only after the client's timeout
(``apply_late``). Each strikes a record write (a Salesforce sObject Collections PATCH, a HubSpot
batch update) and a task create (Salesforce's by the alert key, HubSpot's) in the same run; a
seeded mix strikes at random. A later run (the rig's clock moved past the alerts' settling time)
must leave the CRM as a clean run leaves it, with exactly one task per alert key.

Runs are in-process (``Rig``) against the sandbox, both CRMs, ``alerts.backfill: true`` so the
first run alerts every account in the sales tier (10 per CRM on the demo).
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pls_sync.sandbox.http import Request, Response
from tests.faults.harness import (
    DESTINATIONS,
    HS_TASK_WRITE,
    HS_WRITE,
    SF_TASK_WRITE,
    SF_WRITE,
    TEST_TIMEOUT,
    CleanRun,
    DemoData,
    Handler,
    Hook,
    Rig,
    alert_tasks,
    clean_reference,
    converge,
    make_demo,
    new_sandbox,
    small_batch_config,
)

COMPANIES = 60
# Past the client's timeout: the client gives up before the CRM answers (or applies).
LATE = TEST_TIMEOUT + 0.2
AFTER_WRITE_KINDS = ("answer_lost", "answer_cut", "answer_late", "answer_not_json", "apply_late")
LATE_KINDS = ("answer_late", "apply_late")
# (write endpoint, task create endpoint) per CRM.
TARGETS = {"salesforce": (SF_WRITE, SF_TASK_WRITE), "hubspot": (HS_WRITE, HS_TASK_WRITE)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    """The demo warehouse, generated once for the module."""
    return make_demo(tmp_path_factory.mktemp("after-write-demo"), COMPANIES)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small batches (several write requests per CRM), every sales-tier account alerted."""
    folder = tmp_path_factory.mktemp("after-write-config")
    return small_batch_config(folder, salesforce=20, hubspot=15, backfill=True)


@pytest.fixture(scope="module")
def clean(demo: DemoData, config: Path, tmp_path_factory: pytest.TempPathFactory) -> CleanRun:
    """A clean run with alerts on: the fields and alert keys every faulty rig converges to."""
    folder = tmp_path_factory.mktemp("after-write-clean")
    return clean_reference(demo, folder, DESTINATIONS, config, alerts=True)


@pytest.fixture
def rig(demo: DemoData, config: Path, tmp_path: Path) -> Iterator[Rig]:
    """A fresh sandbox and state store, both CRMs, rep alerts on."""
    box = new_sandbox(demo)
    try:
        yield Rig(box, demo, tmp_path, config=config, alerts=True)
    finally:
        box.stop()


def fault_on_nth(rig: Rig, endpoint: str, nth: int, kind: str) -> Hook:
    """A hook arming the after-write fault ``kind`` for the ``nth`` request to ``endpoint`` (a
    glob): the sandbox picks request faults before its API runs, so the rule is added while the
    request before it is handled."""
    seen = 0
    lock = threading.Lock()

    def hook(name: str, request: Request, next_handler: Handler) -> Response:
        nonlocal seen
        if fnmatch.fnmatchcase(name, endpoint):
            with lock:
                seen += 1
                arm = seen == nth - 1
            if arm:
                rig.box.faults.add(kind, endpoint=endpoint, times=1, delay=LATE)
        return next_handler(request)

    return hook


def wait_for_late_work(kinds: tuple[str, ...]) -> None:
    """Let the requests the sandbox answers or applies late finish before the next run reads
    the CRM (the clock the rerun moves is the alerts', not the sandbox's threads')."""
    if set(kinds) & set(LATE_KINDS):
        time.sleep(LATE + 0.1)


@pytest.mark.parametrize("destination", sorted(TARGETS))
@pytest.mark.parametrize("kind", AFTER_WRITE_KINDS)
def test_after_write_fault_on_a_write_and_a_task_create_converges_with_one_task_per_key(
    rig: Rig, clean: CleanRun, kind: str, destination: str
) -> None:
    """The second record write and the second task create of ``destination`` are applied but
    answered badly: the run may resend the write (the same values, at most once more), never
    the task; a later run leaves the clean run's fields and one task per alert key."""
    assert rig.hooks is not None
    for endpoint in TARGETS[destination]:
        rig.hooks.add(fault_on_nth(rig, endpoint, 2, kind))
    rig.run()
    assert sorted(rule.kind for rule in rig.fault_kinds.rules if rule.fired) == [kind, kind]
    wait_for_late_work((kind,))
    converge(rig, clean, max_applied=2)


def test_seeded_after_write_faults_on_both_crms_converge_with_one_task_per_key(
    rig: Rig, clean: CleanRun
) -> None:
    """Every after-write kind at a seeded rate on every write and task create of both CRMs,
    for two runs: a later run converges, one task per alert key."""
    endpoints = [endpoint for pair in TARGETS.values() for endpoint in pair]
    for kind in AFTER_WRITE_KINDS:
        for endpoint in endpoints:
            rig.box.faults.add(kind, endpoint=endpoint, rate=0.1, times=2, delay=LATE)
    rig.run()
    rig.run()
    fired = [rule.kind for rule in rig.fault_kinds.rules if rule.fired]
    assert len(set(fired)) >= 3, fired
    wait_for_late_work(tuple(fired))
    converge(rig, clean, max_applied=3)


def test_a_rerun_within_the_search_lag_leaves_an_unconfirmed_hubspot_task_settling(
    rig: Rig, clean: CleanRun
) -> None:
    """A HubSpot task create whose answer was lost, then a rerun seconds later (the clock not
    moved: the search does not show the task yet): the rerun neither creates it again nor
    trusts a search that cannot see it; it settles, and a run past the lag confirms it."""
    assert rig.hooks is not None
    rig.hooks.add(fault_on_nth(rig, HS_TASK_WRITE, 2, "answer_lost"))
    first = rig.run()
    assert rig.destination(first, "hubspot")["alerts"]["settling"] == 1
    rig.clear_faults()
    soon = rig.run()
    assert rig.destination(soon, "hubspot")["alerts"]["settling"] == 1
    assert max(alert_tasks(rig.box).values()) == 1
    converge(rig, clean)
