"""Salesforce under faults, end to end through ``run_sync`` against the sandbox.

Each test injects one fault class into a run, checks what the run's summary says about it,
then clears the fault and reruns: the CRM must then hold exactly what a clean run on a fresh
sandbox leaves (every mapped field of every Account compared), with each record's fields
changed once, as in the clean run.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.crm_snapshot import SnapshottingDestination
from connectors.salesforce import SalesforceDestination
from connectors.state import SqlStateStore
from pls_sync.sandbox.http import Request, Response
from pls_sync.sandbox.salesforce import RecordError, sandbox_login_session
from pls_sync.service import Adapters
from tests.faults.harness import (
    SF_TASK_WRITE,
    SF_WRITE,
    TEST_TIMEOUT,
    CleanRun,
    DemoData,
    Handler,
    Rig,
    after_nth,
    assert_accounted,
    before_nth,
    clean_reference,
    converge,
    crm_snapshot,
    inject_when,
    inner_destination,
    make_demo,
    new_sandbox,
    small_batch_config,
    soql_from,
)

SF = ("salesforce",)
COMPANIES = 80
BATCH = 25


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    """The demo warehouse, generated once for the module."""
    return make_demo(tmp_path_factory.mktemp("sf-demo"), COMPANIES)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped config with Salesforce batches of 25: several write requests a run."""
    return small_batch_config(tmp_path_factory.mktemp("sf-config"), salesforce=BATCH)


@pytest.fixture(scope="module")
def clean(demo: DemoData, config: Path, tmp_path_factory: pytest.TempPathFactory) -> CleanRun:
    """A clean run on a fresh sandbox: the state every faulty run must converge to."""
    return clean_reference(demo, tmp_path_factory.mktemp("sf-clean"), SF, config)


@pytest.fixture
def rig(demo: DemoData, config: Path, tmp_path: Path) -> Iterator[Rig]:
    """A fresh sandbox and state store, Salesforce only."""
    box = new_sandbox(demo)
    try:
        yield Rig(box, demo, tmp_path, destinations=SF, config=config)
    finally:
        box.stop()


def sf_entry(rig: Rig, index: int = 0) -> dict[str, Any]:
    """The Salesforce summary entry of the rig's ``index``-th run."""
    return rig.destination(rig.runs[index], "salesforce")


def write_requests(clean: CleanRun) -> int:
    """Collection requests the clean run needed."""
    return int(clean.summary["destinations"]["salesforce"]["write_calls"])


def read_requests(clean: CleanRun) -> int:
    """Query requests the clean run needed (MQL leads and contacts, accounts)."""
    return int(clean.summary["destinations"]["salesforce"]["api_calls"]["read"])


def test_clean_run_takes_several_batches(clean: CleanRun) -> None:
    """The reference writes enough records for faults to land mid-write."""
    entry = clean.summary["destinations"]["salesforce"]
    assert entry["records_changed"] > 2 * BATCH
    assert entry["write_calls"] == entry["min_write_calls"] >= 3


# ------------------------------------------------- rate-limit storms (403 REQUEST_LIMIT_EXCEEDED)


def test_a_rate_limit_storm_with_retry_after_is_waited_out(rig: Rig, clean: CleanRun) -> None:
    """Concurrent-request limits (403 REQUEST_LIMIT_EXCEEDED, with Retry-After) on reads and
    writes: the run waits as told and finishes."""
    rig.box.faults.add("rate_limit", endpoint="sf.query", times=2, retry_after=3)
    rig.box.faults.add("rate_limit", endpoint=SF_WRITE, times=3, retry_after=2)
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "succeeded", entry
    assert entry["records_written"] == entry["records_changed"]
    assert entry["write_calls"] == write_requests(clean) + 3
    assert sorted(w for w in rig.sleep.waits if w >= 2) == [2, 2, 2, 3, 3]
    assert rig.box.counts()["faults_injected"] == 5
    converge(rig, clean)


def test_a_rate_limit_storm_longer_than_the_retries_leaves_the_rest_for_the_next_run(
    rig: Rig, clean: CleanRun
) -> None:
    """The first batch goes through, then rate limits outlast the retries: the rest is not
    attempted."""
    assert rig.hooks is not None
    rig.hooks.add(
        after_nth(
            SF_WRITE, 1, lambda: rig.box.faults.add("rate_limit", endpoint=SF_WRITE, retry_after=1)
        )
    )
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "partial"
    assert entry["records_written"] == BATCH
    assert entry["not_attempted"] == entry["records_changed"] - BATCH
    assert entry["rejected"] == 0
    assert_accounted(entry)
    converge(rig, clean)


# --------------------------------------------------------------------------- 5xx, drops


@pytest.mark.parametrize("kind", ["server_error", "unavailable", "drop"])
def test_transient_failures_are_retried_within_the_run(
    rig: Rig, clean: CleanRun, kind: str
) -> None:
    """500, 503 and dropped connections on describe, query and writes: retried, nothing lost."""
    for endpoint, times in (("sf.describe", 1), ("sf.query", 2), (SF_WRITE, 3)):
        rig.box.faults.add(kind, endpoint=endpoint, times=times)
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "succeeded", entry
    assert entry["records_written"] == entry["records_changed"]
    assert entry["api_calls"]["write"] == write_requests(clean) + 3
    assert rig.box.counts()["faults_injected"] == 6
    converge(rig, clean)


@pytest.mark.parametrize("kind", ["server_error", "unavailable", "drop"])
def test_persistent_failure_mid_write_stops_cleanly(rig: Rig, clean: CleanRun, kind: str) -> None:
    """A failure that outlasts the retries on the second batch: first batch kept, rest reported."""
    assert rig.hooks is not None
    rig.hooks.add(after_nth(SF_WRITE, 1, lambda: rig.box.faults.add(kind, endpoint=SF_WRITE)))
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "partial"
    assert entry["records_written"] == BATCH
    assert entry["not_attempted"] == entry["records_changed"] - BATCH
    assert_accounted(entry)
    converge(rig, clean)


def test_persistent_failure_on_read_fails_the_destination_and_writes_nothing(
    rig: Rig, clean: CleanRun
) -> None:
    """The CRM read never succeeds: the destination fails before planning, nothing is written."""
    rig.box.faults.add("unavailable", endpoint="sf.query")
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "failed"
    assert "503" in entry["error"] or "SERVER_UNAVAILABLE" in entry["error"]
    assert not rig.writes.applied
    converge(rig, clean)


# --------------------------------------------------------------------------- slow responses


def test_responses_slower_than_the_timeout_are_retried(rig: Rig, clean: CleanRun) -> None:
    """A read and a write outlast the client timeout (shortened for the test): retried.

    The sandbox applies the timed-out write after the client gave up, so those records are
    written twice with the same values: harmless for a PATCH, and each field still changes once.
    """
    delay = TEST_TIMEOUT * 2
    rig.box.faults.add("slow", endpoint="sf.query", times=1, delay=delay)
    rig.box.faults.add("slow", endpoint=SF_WRITE, times=1, delay=delay)
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "succeeded", entry
    assert entry["api_calls"]["read"] == read_requests(clean) + 1
    assert entry["api_calls"]["write"] == write_requests(clean) + 1
    time.sleep(delay)  # let the stale request finish inside the sandbox
    applied, _ = rig.writes.of("salesforce")
    assert sorted(set(applied.values())) == [1, 2]
    assert sum(1 for n in applied.values() if n == 2) == BATCH
    converge(rig, clean, max_applied=2)


def test_slow_responses_within_the_timeout_are_not_retried(rig: Rig, clean: CleanRun) -> None:
    """Every request slow but inside the timeout: no retry, no extra call."""
    rig.box.faults.add("slow", endpoint="sf.*", delay=TEST_TIMEOUT / 4)
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "succeeded", entry
    assert entry["api_calls"]["write"] == write_requests(clean)
    assert entry["api_calls"]["read"] == read_requests(clean)
    converge(rig, clean)


# --------------------------------------------------------------------------- sessions


def test_expired_session_without_credentials_to_log_in_again_fails_the_destination(
    rig: Rig, clean: CleanRun
) -> None:
    """Session flow: nothing to re-authenticate with; the destination fails, no secret leaks."""
    assert rig.hooks is not None
    rig.hooks.add(before_nth(SF_WRITE, 2, rig.box.salesforce.expire_sessions))
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "failed"
    assert "session" in entry["error"].lower()
    assert rig.box.session_id not in str(result.summary)
    # Restore a valid session for the rerun (an operator pastes a new one).
    rig.box.salesforce._sessions.add(rig.box.session_id)
    converge(rig, clean)


def test_session_expiring_mid_write_still_reports_what_was_written(rig: Rig) -> None:
    """The first batch was written before the session died: the summary must say so, and
    list the rest as not attempted, rather than drop the write result altogether."""
    assert rig.hooks is not None
    rig.hooks.add(before_nth(SF_WRITE, 2, rig.box.salesforce.expire_sessions))
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "failed"
    assert entry.get("records_written") == BATCH
    assert entry.get("not_attempted") == entry["records_changed"] - BATCH


def password_flow(rig: Rig) -> Any:
    """Replace the bootstrap's Salesforce client with the username/password flow.

    ``build_adapters`` gives no way to pass the HTTP session the sandbox's login routing needs,
    so the client is built with ``from_env`` and wrapped as bootstrap wraps it.
    """

    def customize(adapters: Adapters) -> None:
        wrapper = adapters.destinations["salesforce"]
        assert isinstance(wrapper, SnapshottingDestination)
        env = {
            "SALESFORCE_USERNAME": rig.box.salesforce.username,
            "SALESFORCE_PASSWORD": rig.box.salesforce.password,
            "SALESFORCE_SECURITY_TOKEN": rig.box.salesforce.security_token,
            "PLS_SYNC_SECRETS_DIR": str(rig.folder / "secrets"),
        }
        inner = SalesforceDestination.from_env(
            env, session=sandbox_login_session(rig.box.url), sleep=rig.sleep, batch_size=BATCH
        )
        wrapper.inner = inner

    return customize


@pytest.mark.parametrize("how", ["expired", "injected_401"])
def test_expired_session_is_renewed_with_the_password_flow(
    rig: Rig, clean: CleanRun, how: str
) -> None:
    """Username/password flow: a 401 mid-write logs in again once and the run finishes."""
    rig.customize = password_flow(rig)
    assert rig.hooks is not None
    if how == "expired":
        rig.hooks.add(before_nth(SF_WRITE, 2, rig.box.salesforce.expire_sessions))
    else:
        rig.box.faults.add("invalid_session", endpoint=SF_WRITE, times=1)
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "succeeded", entry
    assert entry["api_calls"]["auth"] == 2
    assert rig.box.counts()["sf.login"] == 2
    assert rig.box.salesforce.password not in str(result.summary)
    converge(rig, clean)


# --------------------------------------------------------------------------- row locks


def test_locked_rows_are_retried_in_a_later_smaller_batch(rig: Rig, clean: CleanRun) -> None:
    """UNABLE_TO_LOCK_ROW on three records once: only they are resent, after a pause."""
    locked = clean.written_ids("salesforce", 3)
    rig.box.faults.add("lock_row", endpoint=SF_WRITE, record_ids=locked, times=1)
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "succeeded", entry
    assert entry["write_calls"] == write_requests(clean) + 1
    assert entry["rejected"] == 0
    assert 1.0 in rig.sleep.waits
    converge(rig, clean)


def test_rows_locked_through_the_run_are_reported_and_written_next_run(
    rig: Rig, clean: CleanRun
) -> None:
    """Records locked on every attempt: rejected as retriable, stored, and written next run."""
    locked = clean.written_ids("salesforce", 4)
    rig.box.faults.add("lock_row", endpoint=SF_WRITE, record_ids=locked)
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "partial"
    assert entry["rejected"] == 4
    assert entry["rejection_reasons"] == {"UNABLE_TO_LOCK_ROW": 4}
    assert sorted(r["record_id"] for r in entry["rejections"]) == sorted(locked)
    assert_accounted(entry)
    store = SqlStateStore(rig.state_url)
    assert sorted(r.record_id for r in store.open_rejections("salesforce")) == sorted(locked)
    converge(rig, clean)
    assert store.open_rejections("salesforce") == []


# --------------------------------------------------------------------------- API limits


def test_daily_limit_fault_stops_the_writes_for_the_next_run(rig: Rig, clean: CleanRun) -> None:
    """REQUEST_LIMIT_EXCEEDED (TotalRequests) on the second batch: the rest is not attempted."""
    assert rig.hooks is not None
    rig.hooks.add(
        after_nth(
            SF_WRITE, 1, lambda: rig.box.faults.add("daily_limit", endpoint=SF_WRITE, times=1)
        )
    )
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "partial"
    assert entry["records_written"] == BATCH
    assert entry["not_attempted"] == entry["records_changed"] - BATCH
    assert entry["write_calls"] == 2  # a quota error is not retried
    assert_accounted(entry)
    converge(rig, clean)


def test_request_limit_fault_on_the_first_write(rig: Rig, clean: CleanRun) -> None:
    """The sandbox's ``request_limit`` (403 REQUEST_LIMIT_EXCEEDED): nothing written, all
    reported as not attempted."""
    rig.box.faults.add("request_limit", endpoint=SF_WRITE, times=1)
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "partial"
    assert entry["records_written"] == 0
    assert entry["not_attempted"] == entry["records_changed"]
    converge(rig, clean)


def test_concurrent_request_limit_is_retried(rig: Rig, clean: CleanRun) -> None:
    """403 REQUEST_LIMIT_EXCEEDED for concurrent long requests (not the daily total) is
    transient: retried, the run finishes. The sandbox renders every ``request_limit`` as the
    daily total, so this one is answered by a hook."""
    assert rig.hooks is not None
    fired = 0

    def concurrent_limit(endpoint: str, request: Request, next_handler: Handler) -> Response:
        nonlocal fired
        if endpoint == SF_WRITE and fired < 2:
            fired += 1
            body = [
                {
                    "message": "ConcurrentPerOrgLongTxn Limit exceeded.",
                    "errorCode": "REQUEST_LIMIT_EXCEEDED",
                }
            ]
            return Response(403, body)
        return next_handler(request)

    rig.hooks.add(concurrent_limit)
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "succeeded", entry
    assert entry["api_calls"]["write"] == write_requests(clean) + 2
    converge(rig, clean)


def test_daily_allowance_running_out_mid_write(rig: Rig, clean: CleanRun) -> None:
    """The org's real counter runs out after the second batch: the run stops, the next run,
    with a new day's allowance, finishes the job."""
    api = rig.box.salesforce
    assert rig.hooks is not None
    rig.hooks.add(after_nth(SF_WRITE, 2, lambda: setattr(api, "api_max", api.api_used)))
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "partial"
    assert entry["records_written"] == 2 * BATCH
    assert entry["not_attempted"] == entry["records_changed"] - 2 * BATCH
    api.api_max, api.api_used = 100_000, 0
    converge(rig, clean)


def test_daily_limit_on_the_read_leaves_everything_for_the_next_run(
    rig: Rig, clean: CleanRun
) -> None:
    """The quota is gone at the Account read: the destination is partial, nothing written."""
    assert rig.hooks is not None
    rig.hooks.add(inject_when(rig.box, soql_from("Account"), "daily_limit", times=1))
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "partial"
    assert "REQUEST_LIMIT_EXCEEDED" in entry["error"]
    assert not rig.writes.applied
    converge(rig, clean)


# --------------------------------------------------------------------------- per-record errors


def test_per_record_errors_are_reported_stored_and_retried_next_run(
    rig: Rig, clean: CleanRun
) -> None:
    """A validation rule refuses five records (allOrNone false): the rest of each batch is
    written, the five are reported with their reason, stored, and written once the rule is
    fixed, even though their source values did not change."""
    refused = set(clean.written_ids("salesforce")[::12][:5])
    api = rig.box.salesforce
    plan_item = api._plan_collection_item

    def validation_rule(item: Any) -> Any:
        if isinstance(item, dict) and item.get("id") in refused:
            return RecordError(
                "FIELD_CUSTOM_VALIDATION_EXCEPTION", "PQA fields are frozen for this account"
            )
        return plan_item(item)

    api._plan_collection_item = validation_rule  # type: ignore[method-assign]
    result = rig.run()
    entry = sf_entry(rig)
    assert result.status == "partial"
    assert entry["rejected"] == len(refused)
    assert entry["rejection_reasons"] == {"FIELD_CUSTOM_VALIDATION_EXCEPTION": len(refused)}
    assert {r["record_id"] for r in entry["rejections"]} == refused
    assert entry["write_calls"] == write_requests(clean)
    assert_accounted(entry)
    store = SqlStateStore(rig.state_url)
    assert {r.record_id for r in store.open_rejections("salesforce")} == refused
    api._plan_collection_item = plan_item  # type: ignore[method-assign]
    rerun = converge(rig, clean)
    assert rig.destination(rerun, "salesforce")["records_written"] == len(refused)
    assert store.open_rejections("salesforce") == []


def test_connectors_are_built_by_bootstrap(rig: Rig) -> None:
    """The rig runs the real connectors bootstrap builds, with the test's sleep and timeout."""
    _settings, adapters = rig.adapters()
    inner = inner_destination(adapters.destinations["salesforce"])
    assert isinstance(adapters.destinations["salesforce"], SnapshottingDestination)
    assert isinstance(inner, SalesforceDestination)
    assert inner.sleep is rig.sleep and inner.timeout == TEST_TIMEOUT


def test_failed_mql_read_does_not_overwrite_lead_channels_with_guesses(
    rig: Rig, clean: CleanRun
) -> None:
    """The MQL query fails (daily quota) while the Account read and writes still work: the
    run must not write lead channels computed without MQLs. Every field it writes must hold
    what a clean run writes; what it cannot know it leaves alone."""
    assert rig.hooks is not None
    rig.hooks.add(inject_when(rig.box, soql_from("Lead"), "daily_limit", times=1))
    before = crm_snapshot(rig.box, SF)
    result = rig.run()
    assert result.summary["leads"]["mql_errors"]
    after = crm_snapshot(rig.box, SF)
    wrong = [
        f"{key}.{name}: {value!r} (clean run: {clean.snapshot[key][name]!r})"
        for key, fields in after.items()
        for name, value in fields.items()
        if value != before[key][name] and value != clean.snapshot[key][name]
    ]
    assert not wrong, wrong[:5]


# ------------------------------------------------- rep alerts whose create lands after the timeout


@pytest.fixture(scope="module")
def alert_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small-batch config with ``alerts.backfill: true``: the first run makes tasks."""
    return small_batch_config(tmp_path_factory.mktemp("sf-alert-config"), BATCH, backfill=True)


@pytest.fixture(scope="module")
def clean_alerts(
    demo: DemoData, alert_config: Path, tmp_path_factory: pytest.TempPathFactory
) -> CleanRun:
    """A clean run with rep alerts on: one task per alert key."""
    return clean_reference(
        demo, tmp_path_factory.mktemp("sf-clean-alerts"), SF, alert_config, alerts=True
    )


def test_task_creates_applied_after_the_client_gave_up_make_one_task_each(
    demo: DemoData, alert_config: Path, clean_alerts: CleanRun, tmp_path: Path
) -> None:
    """Failure 3 of issue 13 with alerts on: the org applies the first task writes a second
    after the client's timeout, when the client has already looked the key up (nothing yet) and
    sent the write again. Each alert key still ends with exactly one task."""
    box = new_sandbox(demo)
    try:
        api = box.salesforce
        handle = api.handle
        handled: list[str] = []

        def counting(request: Request) -> Response:
            response = handle(request)
            if request.method == "PATCH" and "/sobjects/Task/" in request.path:
                handled.append(request.path)
            return response

        api.handle = counting  # type: ignore[method-assign]
        rig = Rig(box, demo, tmp_path, destinations=SF, config=alert_config, alerts=True)
        late = box.faults.add("apply_late", endpoint=SF_TASK_WRITE, times=4, delay=1.0)
        assert TEST_TIMEOUT < 1.0
        rig.run()
        assert late.fired == 4
        deadline = time.monotonic() + 10
        while len(handled) < box.counts()["sf.sobject.upsert"]:  # the late ones land
            assert time.monotonic() < deadline, "late task writes never applied"
            time.sleep(0.02)
        assert "sf.sobject.create" not in box.counts()
        converge(rig, clean_alerts)
    finally:
        box.stop()
