"""The CRM tells the truth: a model-based test of ownership against the sandbox (issue 12).

Hypothesis drives random sequences of

- warehouse changes: users added, removed or moved between domains, a whole domain removed,
  an MQL added or removed;
- CRM changes, through the CRM's own HTTP API: a duplicate account created (under
  ``most_recently_modified`` the match moves to it), an account edited (the match may move
  back), a rep editing a field pls-sync owns, an account deleted, two accounts merged;
- runs of pls-sync (the run service with the real connectors, the CRM snapshot and a SQLite
  state store), and unchanged reruns.

The invariant, after every run: **the CRM holds what a clean run would leave.** A clean run is
pls-sync from an empty state store (no snapshot, no ledger, no history) on the same warehouse
and the same CRM records as people left them (read from the CRM, stamped with the times people
changed them: pls-sync's own writes move the CRM's stamps), planned and applied. Every record's
mapped fields must equal that, except the record that carries an account the warehouse no
longer has (which a clean run cannot know; the model tracks which record that is): it holds
exactly what an account with no usage shows (score 0, the lowest tier, no signals, motion or
metrics, ``mql_only`` if an MQL remains at its domain). The run planned from live records only
(deletions and merges seen), and an unchanged rerun makes no write call.

Time is the model's: both CRMs' clocks and the snapshot's move a minute per CRM change and an
hour per run, as a schedule spaces them (Salesforce's deleted-records resource works in whole
minutes), so "most recently modified" is never a tie.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from connectors.crm_snapshot import SnapshottingDestination
from connectors.hubspot import HubSpotDestination, SearchPacer
from connectors.salesforce import SalesforceDestination
from connectors.state import SqlStateStore
from pls_sync.config import ChannelSettings
from pls_sync.mapping import DestinationMapping, FieldMapping, MatchRule
from pls_sync.models import ProductAccount
from pls_sync.planning import apply_changes, canonical
from pls_sync.sandbox.hubspot import SearchRateLimiter
from pls_sync.sandbox.server import Sandbox
from pls_sync.scoring import Component, Condition, ScoringModel, Signal, Tier
from pls_sync.service import Adapters, RunOptions, RunResult, run_sync
from tests.fakes import FakeCrm, FakeMqls, FakeState, FakeUsage

EXAMPLES = int(os.environ.get("PLS_SYNC_MODEL_EXAMPLES", "200"))
START = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
FIRST_SEEN = START - timedelta(days=300)
DOMAINS = ("acme.com", "beta.io", "gamma.dev", "delta.co")

MODEL = ScoringModel(
    components=(
        Component(
            "team_size", 1.0, ("active_users_28d",), ((0, 0), (10, 100)), "{value:.0f} users"
        ),
    ),
    signals=(Signal("team", Condition("active_users_28d", ">=", 7), 0, "7+ users"),),
    tiers=(Tier("sales", 80), Tier("success", 60), Tier("self_serve", 0)),
    hysteresis=0,  # a clean run has no previous tier: with a band, tiers would differ by history
    min_account_age_days=0,
)


@dataclass(frozen=True)
class Crm:
    """How the test speaks to one CRM of the sandbox."""

    name: str
    mapping: DestinationMapping
    score: str
    tier: str
    signals: str
    channel: str
    motion: str
    users: str


SALESFORCE = Crm(
    "salesforce",
    DestinationMapping(
        "salesforce",
        "Account",
        MatchRule(("Website",), "most_recently_modified"),
        (
            FieldMapping("PQA_Score__c", "score"),
            FieldMapping("PQA_Tier__c", "tier"),
            FieldMapping("PQA_Signals__c", "signals", null="clear"),
            FieldMapping("PQA_Lead_Channel__c", "lead_channel"),
            FieldMapping("PQA_Motion__c", "motion"),
            FieldMapping("PQA_Active_Users__c", "metrics.active_users_28d"),
        ),
    ),
    "PQA_Score__c",
    "PQA_Tier__c",
    "PQA_Signals__c",
    "PQA_Lead_Channel__c",
    "PQA_Motion__c",
    "PQA_Active_Users__c",
)
HUBSPOT = Crm(
    "hubspot",
    DestinationMapping(
        "hubspot",
        "companies",
        MatchRule(("domain",), "most_recently_modified"),
        (
            FieldMapping("pqa_score", "score"),
            FieldMapping("pqa_tier", "tier"),
            FieldMapping("pqa_signals", "signals", null="clear"),
            FieldMapping("pqa_lead_channel", "lead_channel"),
            FieldMapping("pqa_motion", "motion"),
            FieldMapping("pqa_active_users", "metrics.active_users_28d"),
        ),
    ),
    "pqa_score",
    "pqa_tier",
    "pqa_signals",
    "pqa_lead_channel",
    "pqa_motion",
    "pqa_active_users",
)


class CrmApi:
    """A rep's or an admin's changes, through the CRM's HTTP API (merges: the sandbox's admin
    endpoint for Salesforce, whose merge is SOAP only; HubSpot's own merge endpoint)."""

    def __init__(self, crm: Crm, box: Sandbox):
        self.crm, self.box = crm, box
        self.http = requests.Session()
        if crm.name == "salesforce":
            self.http.headers["Authorization"] = f"Bearer {box.session_id}"
            self.base = f"{box.url}/services/data/v59.0/sobjects/Account"
        else:
            self.http.headers["Authorization"] = f"Bearer {box.hubspot_token}"
            self.base = f"{box.url}/crm/v3/objects/companies"

    def _body(self, fields: dict[str, Any]) -> dict[str, Any]:
        return fields if self.crm.name == "salesforce" else {"properties": fields}

    def create(self, domain: str, n: int) -> str:
        if self.crm.name == "salesforce":
            fields = {"Name": f"{domain} #{n}", "Website": f"https://www.{domain}/"}
        else:
            fields = {"name": f"{domain} #{n}", "domain": domain}
        response = self.http.post(self.base, json=self._body(fields), timeout=10)
        assert response.status_code in (200, 201), response.text
        return str(response.json()["id"])

    def edit(self, record_id: str, fields: dict[str, Any]) -> None:
        response = self.http.patch(f"{self.base}/{record_id}", json=self._body(fields), timeout=10)
        assert response.status_code in (200, 204), response.text

    def delete(self, record_id: str) -> None:
        response = self.http.delete(f"{self.base}/{record_id}", timeout=10)
        assert response.status_code == 204, response.text

    def merge(self, keep: str, lose: str) -> str:
        """Merge ``lose`` into ``keep``; the surviving id (HubSpot gives the result a new one)."""
        if self.crm.name == "salesforce":
            response = self.http.post(
                f"{self.box.url}/__sandbox/salesforce/merge",
                json={"master": keep, "losers": [lose]},
                timeout=10,
            )
            assert response.status_code == 200, response.text
            return keep
        response = self.http.post(
            f"{self.base}/merge",
            json={"primaryObjectId": keep, "objectIdToMerge": lose},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["id"])


class CrmTruth(RuleBasedStateMachine):
    """The model: users by id with their domain, MQL domains, and the CRM's live records."""

    crm: Crm = SALESFORCE

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.box = Sandbox(port=0, seed=None)
        self.box.set_clock(lambda: self.now)
        assert self.box.hubspot is not None
        self.box.hubspot.set_burst_limit(1_000_000)  # pacing is tested elsewhere
        self.box.hubspot.search_limiter = SearchRateLimiter(None, time.monotonic)
        self.box.start()
        self.api = CrmApi(self.crm, self.box)
        self.users: dict[int, str] = {}
        self.mqls: set[str] = set()
        self.records: dict[str, str] = {}  # live record id -> the domain it was created for
        self.stamps: dict[str, datetime] = {}  # live record id -> when a person last changed it
        self.carrier: dict[str, str] = {}  # account -> the record that shows its values
        self.next_id = 0
        self.state = SqlStateStore.open("sqlite://")
        self.ours = self._destination()
        self.last: RunResult | None = None
        self.dirty = True  # something changed since the last run

    def teardown(self) -> None:
        self.box.stop()
        self.state.close()

    # --- plumbing -----------------------------------------------------------------------------

    def _tick(self, delta: timedelta = timedelta(minutes=1)) -> None:
        self.now += delta
        self.dirty = True

    def _destination(self) -> Any:
        if self.crm.name == "salesforce":
            return SalesforceDestination.from_env(
                {
                    "SALESFORCE_INSTANCE_URL": self.box.url,
                    "SALESFORCE_SESSION_ID": self.box.session_id,
                }
            )
        hubspot = HubSpotDestination.from_env(
            {"HUBSPOT_ACCESS_TOKEN": self.box.hubspot_token, "HUBSPOT_BASE_URL": self.box.url},
            requests_per_10s=1_000_000,
        )
        hubspot.search_pacer = SearchPacer(1_000_000, clock=time.monotonic, sleep=time.sleep)
        return hubspot

    def _accounts(self) -> list[ProductAccount]:
        counts: dict[str, int] = {}
        for domain in self.users.values():
            counts[domain] = counts.get(domain, 0) + 1
        return [
            ProductAccount(d, d, {"active_users_28d": float(n)}, first_seen=FIRST_SEEN)
            for d, n in sorted(counts.items())
        ]

    def _run(self, destination: Any, state: SqlStateStore, *, dry_run: bool) -> RunResult:
        name = self.crm.name
        adapters = Adapters(
            usage=FakeUsage(self._accounts()),
            state=state,
            destinations={name: destination},
            mappings={name: self.crm.mapping},
            mql_sources={name: FakeMqls([("lead", f"q{d}", f"mql@{d}") for d in self.mqls])},
        )
        options = RunOptions(as_of=self.now, dry_run=dry_run, command="plan" if dry_run else "run")
        return run_sync(adapters, MODEL, options, channels=ChannelSettings())

    def _forget_carriers(self, record_ids: set[str]) -> None:
        self.carrier = {d: rid for d, rid in self.carrier.items() if rid not in record_ids}

    def _pick(self, items: Any, index: int) -> Any:
        ordered = sorted(items)
        return ordered[index % len(ordered)]

    # --- warehouse changes ----------------------------------------------------------------------

    @initialize(domains=st.lists(st.sampled_from(DOMAINS), min_size=1, max_size=12))
    def start(self, domains: list[str]) -> None:
        for domain in domains:
            self.users[self.next_id] = domain
            self.next_id += 1
        for n, domain in enumerate(DOMAINS[:3]):
            self._tick()
            record_id = self.api.create(domain, n)
            self.records[record_id], self.stamps[record_id] = domain, self.now

    @rule(domain=st.sampled_from(DOMAINS), n=st.integers(1, 8))
    def add_users(self, domain: str, n: int) -> None:
        for _ in range(n):
            self.users[self.next_id] = domain
            self.next_id += 1
        self.dirty = True

    @precondition(lambda self: self.users)
    @rule(index=st.integers(0, 99), n=st.integers(1, 6))
    def remove_users(self, index: int, n: int) -> None:
        for _ in range(min(n, len(self.users))):
            del self.users[self._pick(self.users, index)]
        self.dirty = True

    @precondition(lambda self: self.users)
    @rule(index=st.integers(0, 99), domain=st.sampled_from(DOMAINS))
    def move_user(self, index: int, domain: str) -> None:
        self.users[self._pick(self.users, index)] = domain
        self.dirty = True

    @precondition(lambda self: self.users)
    @rule(index=st.integers(0, 99))
    def remove_domain(self, index: int) -> None:
        gone = self._pick(set(self.users.values()), index)
        self.users = {uid: d for uid, d in self.users.items() if d != gone}
        self.dirty = True

    @rule(domain=st.sampled_from(DOMAINS), add=st.booleans())
    def toggle_mql(self, domain: str, add: bool) -> None:
        (self.mqls.add if add else self.mqls.discard)(domain)
        self.dirty = True

    # --- CRM changes ----------------------------------------------------------------------------

    @rule(domain=st.sampled_from(DOMAINS))
    def create_duplicate(self, domain: str) -> None:
        self._tick()
        record_id = self.api.create(domain, len(self.records) + 10)
        self.records[record_id], self.stamps[record_id] = domain, self.now

    @precondition(lambda self: self.records)
    @rule(index=st.integers(0, 99))
    def touch(self, index: int) -> None:
        self._tick()
        record_id = self._pick(self.records, index)
        field = "Description" if self.crm.name == "salesforce" else "description"
        self.api.edit(record_id, {field: f"edited at {self.now.isoformat()}"})
        self.stamps[record_id] = self.now

    @precondition(lambda self: self.records)
    @rule(index=st.integers(0, 99), which=st.sampled_from(("tier", "score")))
    def rep_edits_an_owned_field(self, index: int, which: str) -> None:
        self._tick()
        record_id = self._pick(self.records, index)
        if which == "tier":
            self.api.edit(record_id, {self.crm.tier: "success"})
        else:
            self.api.edit(record_id, {self.crm.score: 55})
        self.stamps[record_id] = self.now

    @precondition(lambda self: self.records)
    @rule(index=st.integers(0, 99))
    def delete(self, index: int) -> None:
        self._tick()
        record_id = self._pick(self.records, index)
        self.api.delete(record_id)
        del self.records[record_id], self.stamps[record_id]
        self._forget_carriers({record_id})

    @precondition(lambda self: len(self.records) >= 2)
    @rule(index=st.integers(0, 99), other=st.integers(1, 99))
    def merge(self, index: int, other: int) -> None:
        self._tick()
        ids = sorted(self.records)
        keep = ids[index % len(ids)]
        lose = ids[(index + other) % len(ids)]
        if keep == lose:
            return
        survivor = self.api.merge(keep, lose)
        domain = self.records.pop(keep)
        self.records.pop(lose)
        self.stamps.pop(keep), self.stamps.pop(lose)
        self.records[survivor], self.stamps[survivor] = domain, self.now
        # a merge result with a new id (HubSpot) is a record no account has carried yet
        self._forget_carriers({lose} if survivor == keep else {keep, lose})

    # --- runs -----------------------------------------------------------------------------------

    @rule()
    def run(self) -> None:
        self._tick(timedelta(hours=1))
        snapshot = SnapshottingDestination(
            self.ours, self.state.engine, self.state, clock=lambda: self.now
        )
        self.last = self._run(snapshot, self.state, dry_run=False)
        assert self.last.status == "succeeded", self.last.summary
        # the incremental read saw every deletion and merge: it planned from live records only
        assert {record.id for record in snapshot._load()} == set(self.records)
        assert self.last.summary["destinations"][self.crm.name]["crm_records"] == len(self.records)
        self.dirty = False
        self.check_against_a_clean_run()

    @precondition(lambda self: self.last is not None and not self.dirty)
    @rule()
    def unchanged_rerun_writes_nothing(self) -> None:
        self.now += timedelta(hours=1)
        snapshot = SnapshottingDestination(
            self.ours, self.state.engine, self.state, clock=lambda: self.now
        )
        rerun = self._run(snapshot, self.state, dry_run=False)
        summary = rerun.summary["destinations"][self.crm.name]
        assert summary["records_changed"] == 0 and summary["write_calls"] == 0, summary

    def check_against_a_clean_run(self) -> None:
        """The CRM's owned fields equal what a clean run leaves on the same records as people
        left them: the records read in full from the CRM, stamped with the times people last
        changed them (pls-sync's own writes move the CRM's stamps, which a clean run cannot
        tell from a person's), planned from an empty state and applied."""
        assert self.last is not None
        name = self.crm.name
        reader = self._destination()
        records = {r.id: r for r in reader.read_records(self.crm.mapping)}
        assert set(records) == set(self.records)
        specs = reader.describe(self.crm.mapping.object)
        as_people_left_them = [
            replace(record, last_modified=self.stamps[record.id]) for record in records.values()
        ]
        clean = self._run(FakeCrm(name, specs, as_people_left_them), FakeState(), dry_run=True)
        plan = clean.outcomes[name].plan
        assert plan is not None, clean.summary
        expected = apply_changes({rid: r.fields for rid, r in records.items()}, plan.changes)
        # Which record carries each account: the clean run's match for the accounts in the
        # warehouse; an account that left it keeps the record it last had (unless deleted).
        live = set(self.users.values())
        report = clean.outcomes[name].report
        assert report is not None
        for domain in live:
            target = report.record_for(domain)
            if target is None:
                self.carrier.pop(domain, None)
            else:
                self.carrier[domain] = target
        carrying = {rid: d for d, rid in self.carrier.items() if d not in live and rid in records}
        targets = [fm.target for fm in self.crm.mapping.fields]
        for record_id, record in records.items():
            have = {t: canonical(record.fields.get(t), specs[t]) for t in targets}
            key = carrying.get(record_id)
            if key is None:
                want = {t: canonical(expected[record_id].get(t), specs[t]) for t in targets}
                assert have == want, (record_id, have, want)
                continue
            # an account the warehouse no longer has: shown as one with no usage
            assert have[self.crm.score] == 0 and have[self.crm.tier] == "self_serve", (key, have)
            assert have[self.crm.signals] is None and have[self.crm.motion] is None, have
            assert have[self.crm.users] is None, have
            channel = "mql_only" if key in self.mqls else None
            assert have[self.crm.channel] == channel, (key, have)


class HubSpotTruth(CrmTruth):
    crm = HUBSPOT


def _settings() -> Any:
    return settings(
        max_examples=EXAMPLES,
        stateful_step_count=8,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def test_salesforce_holds_what_a_clean_run_would_leave() -> None:
    CrmTruth.TestCase.settings = _settings()
    CrmTruth.TestCase().runTest()


def test_hubspot_holds_what_a_clean_run_would_leave() -> None:
    HubSpotTruth.TestCase.settings = _settings()
    HubSpotTruth.TestCase().runTest()
