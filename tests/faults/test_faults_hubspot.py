"""HubSpot under faults, end to end through ``run_sync`` against the sandbox.

Each test injects one fault class into a run, checks what the run's summary says about it,
then clears the fault and reruns: the portal must then hold exactly what a clean run on a
fresh sandbox leaves (every mapped property of every company compared), with each company's
properties changed once, as in the clean run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.hubspot import HubSpotDestination
from connectors.state import SqlStateStore
from pls_sync.sandbox.hubspot import HubSpotApi
from tests.faults.harness import (
    HS_WRITE,
    TEST_TIMEOUT,
    CleanRun,
    DemoData,
    Rig,
    after_nth,
    assert_accounted,
    before_nth,
    clean_reference,
    converge,
    inner_destination,
    make_demo,
    new_sandbox,
    small_batch_config,
)

HS = ("hubspot",)
COMPANIES = 80
BATCH = 20


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    """The demo warehouse, generated once for the module."""
    return make_demo(tmp_path_factory.mktemp("hs-demo"), COMPANIES)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped config with HubSpot batches of 20: several write requests a run."""
    return small_batch_config(tmp_path_factory.mktemp("hs-config"), hubspot=BATCH)


@pytest.fixture(scope="module")
def clean(demo: DemoData, config: Path, tmp_path_factory: pytest.TempPathFactory) -> CleanRun:
    """A clean run on a fresh sandbox: the state every faulty run must converge to."""
    return clean_reference(demo, tmp_path_factory.mktemp("hs-clean"), HS, config)


@pytest.fixture
def rig(demo: DemoData, config: Path, tmp_path: Path) -> Iterator[Rig]:
    """A fresh sandbox and state store, HubSpot only."""
    box = new_sandbox(demo)
    try:
        yield Rig(box, demo, tmp_path, destinations=HS, config=config)
    finally:
        box.stop()


def portal(rig: Rig) -> HubSpotApi:
    """The sandbox's HubSpot module."""
    assert rig.box.hubspot is not None
    return rig.box.hubspot


def hs_entry(rig: Rig, index: int = 0) -> dict[str, Any]:
    """The HubSpot summary entry of the rig's ``index``-th run."""
    return rig.destination(rig.runs[index], "hubspot")


def write_requests(clean: CleanRun) -> int:
    """Batch-update requests the clean run needed."""
    return int(clean.summary["destinations"]["hubspot"]["write_calls"])


def read_requests(clean: CleanRun) -> int:
    """Read requests the clean run made."""
    return int(clean.summary["destinations"]["hubspot"]["api_calls"]["read"])


def test_clean_run_takes_several_batches(clean: CleanRun) -> None:
    """The reference writes enough companies for faults to land mid-write."""
    entry = clean.summary["destinations"]["hubspot"]
    assert entry["records_changed"] > 2 * BATCH
    assert entry["write_calls"] == entry["min_write_calls"] >= 3


# --------------------------------------------------------------------------- 429 storms


@pytest.mark.parametrize("kind", ["rate_limit", "request_limit"])
def test_429_storm_with_retry_after_is_waited_out(rig: Rig, clean: CleanRun, kind: str) -> None:
    """Ten-second-window 429s with Retry-After on reads and writes: waited out as told."""
    rig.box.faults.add(kind, endpoint="hs.companies.list", times=2, retry_after=3)
    rig.box.faults.add(kind, endpoint=HS_WRITE, times=3, retry_after=2)
    result = rig.run()
    entry = hs_entry(rig)
    assert result.status == "succeeded", entry
    assert entry["records_written"] == entry["records_changed"]
    assert entry["write_calls"] == write_requests(clean) + 3
    assert sorted(w for w in rig.sleep.waits if w >= 2) == [2, 2, 2, 3, 3]
    assert rig.box.counts()["faults_injected"] == 5
    converge(rig, clean)


def test_429_storm_longer_than_the_retries_leaves_the_rest_for_the_next_run(
    rig: Rig, clean: CleanRun
) -> None:
    """The first batch goes through, then 429s outlast the retries: the rest is not attempted."""
    assert rig.hooks is not None
    rig.hooks.add(
        after_nth(
            HS_WRITE, 1, lambda: rig.box.faults.add("rate_limit", endpoint=HS_WRITE, retry_after=1)
        )
    )
    result = rig.run()
    entry = hs_entry(rig)
    assert result.status == "partial"
    assert entry["records_written"] == BATCH
    assert entry["not_attempted"] == entry["records_changed"] - BATCH
    assert_accounted(entry)
    converge(rig, clean)


def test_search_429s_without_retry_after_slow_the_searches_down(rig: Rig, clean: CleanRun) -> None:
    """A portal allowing one search a second refuses the client's four with HubSpot's bare
    search 429 (no policyName, Retry-After or rate-limit header): the searches of an
    incremental rerun (modified companies, merges, MQLs) slow down and the run succeeds."""
    assert rig.run().status == "succeeded"
    portal(rig).search_limiter.per_second = 1
    rig.sleep.waits.clear()
    rerun = rig.run()
    assert rerun.status == "succeeded", rerun.summary
    assert rig.sleep.waits  # refused searches were retried, after a backoff
    assert rig.box.counts()["hs.companies.search"] >= 2  # the rerun read by search
    portal(rig).search_limiter.per_second = 5
    converge(rig, clean)


# --------------------------------------------------------------------------- 5xx, drops


@pytest.mark.parametrize("kind", ["server_error", "unavailable", "drop"])
def test_transient_failures_are_retried_within_the_run(
    rig: Rig, clean: CleanRun, kind: str
) -> None:
    """500, 503 and dropped connections on describe, list and batch update: retried."""
    for endpoint, times in (("hs.properties.list", 1), ("hs.companies.list", 2), (HS_WRITE, 3)):
        rig.box.faults.add(kind, endpoint=endpoint, times=times)
    result = rig.run()
    entry = hs_entry(rig)
    assert result.status == "succeeded", entry
    assert entry["records_written"] == entry["records_changed"]
    assert entry["api_calls"]["write"] == write_requests(clean) + 3
    assert rig.box.counts()["faults_injected"] == 6
    converge(rig, clean)


@pytest.mark.parametrize("kind", ["server_error", "unavailable", "drop"])
def test_persistent_failure_mid_write_stops_cleanly(rig: Rig, clean: CleanRun, kind: str) -> None:
    """A failure that outlasts the retries from the second batch on: first batch kept."""
    assert rig.hooks is not None
    rig.hooks.add(after_nth(HS_WRITE, 1, lambda: rig.box.faults.add(kind, endpoint=HS_WRITE)))
    result = rig.run()
    entry = hs_entry(rig)
    assert result.status == "partial"
    assert entry["records_written"] == BATCH
    assert entry["not_attempted"] == entry["records_changed"] - BATCH
    assert_accounted(entry)
    converge(rig, clean)


# --------------------------------------------------------------------------- slow responses


def test_responses_slower_than_the_timeout_are_retried(rig: Rig, clean: CleanRun) -> None:
    """A list page and a batch update outlast the client timeout (shortened for the test).

    The sandbox applies the timed-out batch after the client gave up, so those companies are
    written twice with the same values; each property still changes once.
    """
    delay = TEST_TIMEOUT * 2
    rig.box.faults.add("slow", endpoint="hs.companies.list", times=1, delay=delay)
    rig.box.faults.add("slow", endpoint=HS_WRITE, times=1, delay=delay)
    result = rig.run()
    entry = hs_entry(rig)
    assert result.status == "succeeded", entry
    assert entry["api_calls"]["read"] == read_requests(clean) + 1
    assert entry["api_calls"]["write"] == write_requests(clean) + 1
    time.sleep(delay)  # let the stale request finish inside the sandbox
    applied, _ = rig.writes.of("hubspot")
    assert sum(1 for n in applied.values() if n == 2) == BATCH
    converge(rig, clean, max_applied=2)


def test_slow_responses_within_the_timeout_are_not_retried(rig: Rig, clean: CleanRun) -> None:
    """Every request slow but inside the timeout: no retry, no extra call."""
    rig.box.faults.add("slow", endpoint="hs.*", delay=TEST_TIMEOUT / 4)
    result = rig.run()
    entry = hs_entry(rig)
    assert result.status == "succeeded", entry
    assert entry["api_calls"]["write"] == write_requests(clean)
    assert entry["api_calls"]["read"] == read_requests(clean)
    converge(rig, clean)


# --------------------------------------------------------------------------- auth


def test_revoked_token_mid_write_fails_the_destination_without_leaking_it(
    rig: Rig, clean: CleanRun
) -> None:
    """A 401 on the second batch: a private-app token cannot be renewed, the destination
    fails, the token appears nowhere, and the next run finishes the job."""
    assert rig.hooks is not None
    rig.hooks.add(
        before_nth(
            HS_WRITE, 2, lambda: rig.box.faults.add("invalid_session", endpoint=HS_WRITE, times=1)
        )
    )
    # The rule is added while the second request is already past fault picking: it hits the third.
    result = rig.run()
    entry = hs_entry(rig)
    assert result.status == "failed"
    assert "401" in entry["error"]
    assert rig.box.hubspot_token not in str(result.summary)
    applied, _ = rig.writes.of("hubspot")
    assert sum(applied.values()) == 2 * BATCH
    converge(rig, clean)


def test_revoked_token_mid_write_still_reports_what_was_written(rig: Rig) -> None:
    """Two batches were written before the 401: the summary must say so and list the rest as
    not attempted, rather than drop the write result altogether."""
    assert rig.hooks is not None
    rig.hooks.add(
        before_nth(
            HS_WRITE, 2, lambda: rig.box.faults.add("invalid_session", endpoint=HS_WRITE, times=1)
        )
    )
    rig.run()
    entry = hs_entry(rig)
    assert entry.get("records_written") == 2 * BATCH
    assert entry.get("not_attempted") == entry["records_changed"] - 2 * BATCH


# --------------------------------------------------------------------------- API limits


def test_daily_limit_fault_stops_the_writes_for_the_next_run(rig: Rig, clean: CleanRun) -> None:
    """A DAILY 429 on the second batch: not retried, the rest is not attempted."""
    assert rig.hooks is not None
    rig.hooks.add(
        after_nth(
            HS_WRITE, 1, lambda: rig.box.faults.add("daily_limit", endpoint=HS_WRITE, times=1)
        )
    )
    result = rig.run()
    entry = hs_entry(rig)
    assert result.status == "partial"
    assert entry["records_written"] == BATCH
    assert entry["not_attempted"] == entry["records_changed"] - BATCH
    assert entry["write_calls"] == 2
    assert_accounted(entry)
    converge(rig, clean)


def test_daily_allowance_running_out_mid_write(rig: Rig, clean: CleanRun) -> None:
    """The portal's real daily counter runs out after the second batch; a new day's allowance
    lets the next run finish."""
    hubspot = portal(rig)
    assert rig.hooks is not None
    rig.hooks.add(after_nth(HS_WRITE, 2, hubspot.exhaust_daily))
    result = rig.run()
    entry = hs_entry(rig)
    assert result.status == "partial"
    assert entry["records_written"] == 2 * BATCH
    assert entry["not_attempted"] == entry["records_changed"] - 2 * BATCH
    hubspot.limiter.daily_used = 0
    converge(rig, clean)


# --------------------------------------------------------------------------- partial batches


@pytest.mark.parametrize("validation", ["multi_status", "all_or_nothing"])
def test_partial_batch_failures_are_reported_and_retried_next_run(
    rig: Rig, clean: CleanRun, validation: str
) -> None:
    """An admin hides the ``sales`` option of pqa_tier during the run, after the schema check
    and before the first write: those companies are refused (207 per record, or a 400 the
    client bisects), the others written; once the option is back, the next run writes the
    refused ones even though their scores did not change."""
    hubspot = portal(rig)
    hubspot.batch_validation = validation
    options = hubspot.properties["companies"]["pqa_tier"]["options"]
    saved = list(options)

    def hide_sales(endpoint: str, request: Any, handle: Callable[[Any], Any]) -> Any:
        if endpoint == HS_WRITE:
            options[:] = [o for o in saved if o["value"] != "sales"]
        return handle(request)

    assert rig.hooks is not None
    rig.hooks.add(hide_sales)
    result = rig.run()
    rig.hooks.clear()
    options[:] = saved
    entry = hs_entry(rig)
    sales = {
        key.split(":", 1)[1]
        for key, fields in clean.snapshot.items()
        if fields["pqa_tier"] == "sales" and key in clean.effective
    }
    assert sales
    assert result.status == "partial"
    assert entry["rejected"] == len(sales)
    assert entry["rejection_reasons"] == {"INVALID_OPTION": len(sales)}
    assert {r["record_id"] for r in entry["rejections"]} == sales
    assert all("pqa_tier" in r["fields"] for r in entry["rejections"])
    assert_accounted(entry)
    if validation == "multi_status":
        assert entry["write_calls"] == write_requests(clean)
    store = SqlStateStore(rig.state_url)
    assert {r.record_id for r in store.open_rejections("hubspot")} == sales
    rerun = converge(rig, clean)
    assert rig.destination(rerun, "hubspot")["records_written"] == len(sales)
    assert store.open_rejections("hubspot") == []


def test_connectors_are_built_by_bootstrap(rig: Rig) -> None:
    """The rig runs the real connector bootstrap builds, with the test's sleep and timeout."""
    _settings, adapters = rig.adapters()
    inner = inner_destination(adapters.destinations["hubspot"])
    assert isinstance(inner, HubSpotDestination)
    assert inner.sleep is rig.sleep and inner.pacer._sleep is rig.sleep
    # Searches wait on the test's sleep too, which moves the clock the sandbox limits them by.
    assert inner.search_pacer._sleep is rig.sleep
    assert rig.box.hubspot is not None
    assert rig.box.hubspot.limiter.monotonic == rig.sleep.monotonic
    assert inner.timeout == (TEST_TIMEOUT, TEST_TIMEOUT)
