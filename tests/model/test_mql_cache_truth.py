"""The MQL cache tells the truth: a model-based test of incremental MQL reads (issue 16).

Hypothesis drives random sequences of contact changes, made through HubSpot's own HTTP API on
the sandbox: a contact becomes an MQL, moves on (SQL, opportunity, customer), is set back (the
stage cleared, then ``lead``, as HubSpot needs for a backward move), gets a new email or loses
it, has the MQL property toggled, is archived, merged into another, or created; the clock
moves by seconds or minutes; and reads through the cache, some right after a change (the
search still lags it), some once the lag has passed.

The invariant, after every read once the search lag has passed: **the cached MQL set equals
a full read's**, and what the read returned is the cache. The definition is the lifecycle
stage OR a property (``pqa_mql`` = ``true``), and the stage alone. Clearing the property to no
value is left out: the incremental read cannot see it (``departed_mql_filter_groups``
documents it) until the next full read.

Everything runs on one fake clock: the sandbox's stamps, search lag and rate windows, the
client's pacing, the cache's watermark.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from connectors.hubspot import HubSpotDestination
from connectors.hubspot_leads import read_hubspot_mqls
from connectors.leads import HubSpotMqls
from connectors.mql_cache import MqlCache, RefreshPolicy
from connectors.state import SqlStateStore
from pls_sync.demo_companies import demo_companies
from pls_sync.sandbox.server import Sandbox
from tests.connectors.test_hubspot import http
from tests.connectors.test_hubspot_leads import create_mql_property
from tests.fakes import FakeTime

EXAMPLES = int(os.environ.get("PLS_SYNC_MODEL_EXAMPLES", "30"))
MQL = "marketingqualifiedlead"
PROPERTY = "pqa_mql"
POLICY = RefreshPolicy(max_age=timedelta(days=30), skew=timedelta(seconds=60))
PICK = st.integers(min_value=0, max_value=1_000_000)


class MqlCacheTruth(RuleBasedStateMachine):
    """The portal is the model: the truth is what a full read returns once the lag passed."""

    mql_property: str | None = PROPERTY

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeTime()
        self.box = Sandbox(port=0, seed=7, companies=demo_companies(7, 8)).start()
        assert self.box.hubspot is not None
        self.box.hubspot.clock = self.clock
        self.box.hubspot.limiter.monotonic = self.clock
        self.folder = tempfile.TemporaryDirectory()
        self.store = SqlStateStore.open(f"sqlite:///{self.folder.name}/state.sqlite")
        self.cache = MqlCache(self.store.engine, self.store)
        self.serial = itertools.count()
        if self.mql_property:
            create_mql_property(self.box, self.mql_property)
        self.checked_reads = 0

    def teardown(self) -> None:
        self.box.stop()
        self.store.close()
        self.folder.cleanup()

    # --- plumbing -----------------------------------------------------------------------------

    def _http(self, method: str, path: str, body: Any = None) -> Any:
        return http(self.box, method, path, body)

    def _live(self) -> list[str]:
        assert self.box.hubspot is not None
        return sorted(self.box.hubspot.objects["contacts"], key=int)

    def _pick(self, index: int) -> str:
        live = self._live()
        return live[index % len(live)]

    def _update(self, contact_id: str, **properties: str) -> None:
        body = {"properties": properties}
        self._http("PATCH", f"/crm/v3/objects/contacts/{contact_id}", body)
        self.clock.sleep(1)

    def _email(self) -> str:
        number = next(self.serial)
        return f"person{number}@company{number % 3}.example"

    def _destination(self) -> HubSpotDestination:
        return HubSpotDestination(
            self.box.hubspot_token, base_url=self.box.url, sleep=self.clock.sleep, clock=self.clock
        )

    def _read(self) -> list[tuple[str, str, str]]:
        mqls = HubSpotMqls(
            self._destination(),
            MQL,
            self.mql_property,
            cache=self.cache,
            policy=POLICY,
            clock=lambda: datetime.fromtimestamp(self.clock(), UTC),
        )
        return list(mqls.read_mqls())

    # --- contact changes ----------------------------------------------------------------------

    @rule(index=PICK)
    def becomes_an_mql(self, index: int) -> None:
        self._update(self._pick(index), lifecyclestage=MQL)

    @rule(index=PICK, stage=st.sampled_from(["salesqualifiedlead", "opportunity", "customer"]))
    def moves_on(self, index: int, stage: str) -> None:
        self._update(self._pick(index), lifecyclestage=stage)

    @rule(index=PICK)
    def is_set_back(self, index: int) -> None:
        contact_id = self._pick(index)
        self._update(contact_id, lifecyclestage="")
        self._update(contact_id, lifecyclestage="lead")

    @rule(index=PICK)
    def changes_email(self, index: int) -> None:
        self._update(self._pick(index), email=self._email())

    @rule(index=PICK)
    def loses_email(self, index: int) -> None:
        self._update(self._pick(index), email="")

    @precondition(lambda self: self.mql_property is not None)
    @rule(index=PICK, value=st.sampled_from(["true", "false"]))
    def toggles_the_property(self, index: int, value: str) -> None:
        assert self.mql_property is not None
        self._update(self._pick(index), **{self.mql_property: value})

    @precondition(lambda self: len(self._live()) > 5)
    @rule(index=PICK)
    def is_archived(self, index: int) -> None:
        self._http("DELETE", f"/crm/v3/objects/contacts/{self._pick(index)}")
        self.clock.sleep(1)

    @precondition(lambda self: len(self._live()) > 5)
    @rule(first=PICK, second=PICK)
    def is_merged(self, first: int, second: int) -> None:
        primary, secondary = self._pick(first), self._pick(second)
        if primary == secondary:
            return
        body = {"primaryObjectId": primary, "objectIdToMerge": secondary}
        self._http("POST", "/crm/v3/objects/contacts/merge", body)
        self.clock.sleep(1)

    @rule(stage=st.sampled_from([MQL, "lead", "customer"]), flagged=st.booleans())
    def is_created(self, stage: str, flagged: bool) -> None:
        properties = {"email": self._email(), "lifecyclestage": stage}
        if self.mql_property and flagged:
            properties[self.mql_property] = "true"
        self._http("POST", "/crm/v3/objects/contacts", {"properties": properties})
        self.clock.sleep(1)

    @rule(seconds=st.sampled_from([1, 2, 30, 600]))
    def time_passes(self, seconds: int) -> None:
        self.clock.sleep(seconds)

    # --- reads --------------------------------------------------------------------------------

    @rule()
    def reads_while_search_lags(self) -> None:
        self._read()

    @rule()
    def reads_once_the_lag_has_passed(self) -> None:
        assert self.box.hubspot is not None
        self.clock.sleep(self.box.hubspot.search_lag_seconds + 1)
        got = self._read()
        truth = set(
            read_hubspot_mqls(
                self._destination(), lifecycle_stage=MQL, mql_property=self.mql_property
            )
        )
        assert set(got) == truth and len(got) == len(truth)
        assert self.cache.load() == {contact_id: email for _, contact_id, email in got}
        self.checked_reads += 1


class MqlCacheTruthByStage(MqlCacheTruth):
    """The lifecycle stage alone decides."""

    mql_property = None


def _settings() -> Any:
    return settings(
        max_examples=EXAMPLES,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def test_the_cache_equals_a_full_read_once_the_lag_has_passed() -> None:
    MqlCacheTruth.TestCase.settings = _settings()
    MqlCacheTruth.TestCase().runTest()


def test_the_cache_equals_a_full_read_by_stage_alone() -> None:
    MqlCacheTruthByStage.TestCase.settings = _settings()
    MqlCacheTruthByStage.TestCase().runTest()
