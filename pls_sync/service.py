"""The run service: one ``run_sync`` that the CLI, the demo and the scheduler all call.

Order of work, chosen for crash safety and so that nothing is written that cannot be shown:

1. read and score, then commit the new account states;
2. for every destination: check the mapping against its live schema (a destination whose
   mapping does not fit is not written at all), read, match and plan;
3. save the plan file, before any write (a run that cannot save its plan writes nothing);
4. write each destination's diff.

A run killed after the state commit leaves the CRM behind the state, and the next run's diff
sends exactly what is missing. A run that fails after writing still records what it wrote.
"""

from __future__ import annotations

import functools
import gc
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from pls_sync.alerts import backfill_alerts, queue_alerts, send_alerts
from pls_sync.channels import DEFAULT_MOTIONS, LEAD_CHANNELS, USAGE_NO_BUYER, MotionRule
from pls_sync.config import ChannelSettings
from pls_sync.domains import classify_host, company_domain, split_domain_values
from pls_sync.enrich import Enrichment, enrich, refit_with_crm
from pls_sync.errors import (
    FatalError,
    PlsSyncError,
    QuotaExhaustedError,
    RunLockedError,
    redact,
)
from pls_sync.fit import FitModel
from pls_sync.mapping import DestinationMapping
from pls_sync.matching import UNMATCHED, MatchReport, build_index, match_accounts
from pls_sync.models import (
    CrmRecord,
    FieldSpec,
    OwnedRecord,
    ProductAccount,
    UsageReadStats,
    WriteResult,
)
from pls_sync.plan_files import check_plans_dir, save_plan
from pls_sync.planning import (
    AccountResult,
    Plan,
    adopt_owned,
    effective_modified,
    json_value,
    plan_changes,
)
from pls_sync.ports import (
    AccountState,
    AlertLedger,
    AlertSink,
    BuyerSource,
    CrmDestination,
    MqlSource,
    StateStore,
    TierTransition,
    UsageSource,
)
from pls_sync.run_lock import RunLock, WriteGate
from pls_sync.schema_check import schema_issues
from pls_sync.scoring import AccountScore, ScoringModel, score_account, tier_counts
from pls_sync.transitions import advance

log = structlog.get_logger("pls_sync")

Progress = Callable[[str, int, int | None], None]

LOCK_LOST = (
    "the run lost its lock (paused past its lease, so another run may have written since): "
    "nothing more was written; the next run writes the rest"
)


@dataclass(slots=True)
class RunOptions:
    """What one run should do."""

    as_of: datetime
    command: str = "run"
    dry_run: bool = False
    plans_dir: Path | None = None
    destinations: tuple[str, ...] | None = None  # None: every enabled destination
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    lock_name: str = "pls-sync:run"
    lock_lease_seconds: float = 60.0
    # The lease's clock (a test pauses a run by moving it); monotonic time otherwise.
    lock_clock: Callable[[], float] = time.monotonic
    api_budget_share: float | None = None  # share of the remaining daily API calls a run may use
    history_days: int | None = None  # score history older than this is pruned after the run
    # Set by a SIGTERM handler: the destination being written finishes, the rest wait for
    # the next run (their diff will still be there).
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class Adapters:
    """The ports a run needs, built by ``pls_sync.bootstrap`` or by tests with fakes."""

    usage: UsageSource
    state: StateStore
    destinations: dict[str, CrmDestination] = field(default_factory=dict)
    mappings: dict[str, DestinationMapping] = field(default_factory=dict)
    destination_errors: dict[str, str] = field(default_factory=dict)
    buyers: BuyerSource | None = None
    mql_sources: dict[str, MqlSource] = field(default_factory=dict)
    alert_sinks: dict[str, AlertSink] = field(default_factory=dict)
    alert_ledger: AlertLedger | None = None
    # record ids -> date of the last activity on each (Salesforce LastActivityDate)
    activity_readers: dict[str, Callable[[list[str]], Mapping[str, date | None]]] = field(
        default_factory=dict
    )


@dataclass(slots=True)
class ScoredAccounts:
    """Every account scored, with the transitions and counts of this pass."""

    results: list[AccountResult]
    stats: UsageReadStats
    transitions: list[TierTransition]

    def by_key(self) -> dict[str, AccountResult]:
        """Results by account key."""
        return {result.account.key: result for result in self.results}


@dataclass(slots=True)
class DestinationOutcome:
    """What happened at one destination."""

    name: str
    # planned | succeeded | partial | failed | stopped | skipped, or invalid: the mapping does
    # not fit the live schema, so nothing was read or written there
    status: str = "skipped"
    # The CRM's records as read; once planned, only the changed ones (and every one where
    # alerts are sent), see prepare_destination.
    records: dict[str, CrmRecord] = field(default_factory=dict)
    report: MatchReport | None = None
    plan: Plan | None = None
    write: WriteResult | None = None
    error: str | None = None
    specs: dict[str, FieldSpec] = field(default_factory=dict)
    budget: int | None = None
    alerts: dict[str, Any] | None = None
    stale: dict[str, Any] | None = None
    issues: list[str] = field(default_factory=list)  # file:line: key: message, when invalid
    warnings: list[str] = field(default_factory=list)  # schema problems that do not stop writes
    stale_rows: list[dict[str, Any]] = field(default_factory=list)  # every stale PQA, for lists
    crm: str | None = None  # the CRM's identity: salesforce:<org id>, hubspot:<portal id>
    adopted: int = 0  # records whose mapped values were taken as pls-sync's (no ledger yet)
    owned: dict[str, OwnedRecord] = field(default_factory=dict)  # the ledger the plan used
    shared: set[str] = field(default_factory=set)  # records sharing a domain with another


@dataclass(slots=True)
class RunResult:
    """A finished run: its JSON-ready summary and the objects behind it, for tables and tests."""

    summary: dict[str, Any]
    outcomes: dict[str, DestinationOutcome]
    scored: ScoredAccounts

    @property
    def status(self) -> str:
        """succeeded, partial or failed."""
        return str(self.summary["status"])


class StageTimer:
    """Wall time per stage, in seconds, in the order the stages ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block under ``name`` and log the stage's end."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


def state_changed(result: AccountResult) -> bool:
    """Whether an account's state moved; unchanged accounts are not rewritten (nor their history).

    Keeps a steady-state run's database work in proportion to what changed, and the score
    history to one row per change rather than one per account per run.
    """
    previous = result.previous
    if previous is None:
        return True
    now = result.state
    return (now.score, now.tier, now.tier_since, now.qualified_since, now.score_change) != (
        previous.score,
        previous.tier,
        previous.tier_since,
        previous.qualified_since,
        previous.score_change,
    )


def close_interrupted_runs(state: StateStore, now: datetime) -> None:
    """Runs still marked running while we hold the run lock died mid-way: say so in history."""
    for run in state.recent_runs(50):
        if run.status == "running":
            state.finish_run(
                run.run_id,
                "interrupted",
                now,
                run.summary,
                "the run's process ended before finishing (killed or crashed); "
                "the next run repaired what it left",
            )
            log.warning("interrupted_run_closed", interrupted_run=run.run_id)


def score_all(
    usage: UsageSource,
    model: ScoringModel,
    previous_states: Mapping[str, AccountState],
    as_of: datetime,
    progress: Progress | None = None,
) -> ScoredAccounts:
    """Read every account from the warehouse and score it against its previous state."""
    stats = UsageReadStats()
    results: list[AccountResult] = []
    transitions: list[TierTransition] = []
    for count, account in enumerate(usage.read_accounts(as_of, stats), start=1):
        previous = previous_states.get(account.key)
        score = score_account(account, model, as_of, previous.tier if previous else None)
        state, transition = advance(previous, score, as_of, model.qualified_tiers)
        if transition is not None:
            transitions.append(transition)
        results.append(AccountResult(account, score, state, previous, state.score_change))
        if progress is not None and count % 5000 == 0:
            progress("score", count, None)
    seen = {result.account.key for result in results}
    for key, previous in previous_states.items():
        if key not in seen:
            result, transition = gone_account(previous, model, as_of)
            results.append(result)
            if transition is not None:
                transitions.append(transition)
    return ScoredAccounts(results, stats, transitions)


def gone_account(
    previous: AccountState, model: ScoringModel, as_of: datetime
) -> tuple[AccountResult, TierTransition | None]:
    """An account the state store knows and the warehouse no longer has (every user deleted,
    a churned company, a domain change): an account with no usage, score 0 in the lowest tier.

    It leaves its tier like any account whose usage stopped, so the transition is recorded
    and it counts as disqualified; its record is found through the ownership ledger.
    """
    lowest = min(model.tiers, key=lambda tier: tier.min_score).name
    domain = "" if previous.key.startswith("workspace:") else previous.key
    score = AccountScore(previous.key, domain, 0, lowest, lowest, (), (), {}, scored_at=as_of)
    state, transition = advance(previous, score, as_of, model.qualified_tiers)
    account = ProductAccount(previous.key, domain, {})
    return AccountResult(account, score, state, previous, state.score_change, gone=True), transition


def match_destination(
    destination: CrmDestination,
    mapping: DestinationMapping,
    results: list[AccountResult],
    owned: Mapping[str, OwnedRecord] | None = None,
) -> DestinationOutcome:
    """Read the destination's records, index them by domain and match every account.

    ``owned`` (the ownership ledger) tells which last-modified stamps are pls-sync's own
    writes: "most recently modified" compares the changes people made.
    """
    outcome = DestinationOutcome(name=destination.name)
    outcome.records = {record.id: record for record in destination.read_records(mapping)}
    indexed: Iterable[CrmRecord] = outcome.records.values()
    if owned:
        indexed = [human_stamped(record, owned.get(record.id)) for record in indexed]
    index = build_index(indexed)
    outcome.shared = index.shared_records()
    outcome.report = match_accounts(
        ((r.account.key, r.account.domain, float(r.score.score)) for r in results if not r.gone),
        index,
        mapping.match.on_multiple,
    )
    return outcome


def match_as_a_run_does(
    destination: CrmDestination,
    mapping: DestinationMapping,
    results: list[AccountResult],
    state: StateStore,
) -> DestinationOutcome:
    """Read and match one destination with its CRM's ownership ledger, as a run does (export
    and explain must name the record a run writes): pls-sync's own writes never decide
    "most recently modified". The ledger used is kept in ``outcome.owned``."""
    crm = crm_identity(destination)
    owned = state.load_owned(crm)
    outcome = match_destination(destination, mapping, results, owned)
    outcome.crm, outcome.owned = crm, owned
    return outcome


def human_stamped(record: CrmRecord, owned: OwnedRecord | None) -> CrmRecord:
    """The record with its last change by anyone but pls-sync as its last-modified stamp."""
    if owned is None:
        return record
    stamp = effective_modified(record, owned)
    if stamp == record.last_modified:
        return record
    # Built directly: dataclasses.replace costs three times as much, once per owned record.
    return CrmRecord(
        record.id,
        record.domain_values,
        record.fields,
        record.name,
        stamp,
        record.parent_id,
        record.owner_id,
    )


def _write_summary(outcome: DestinationOutcome, batch_size: int) -> dict[str, Any]:
    report = outcome.report
    plan = outcome.plan
    write = outcome.write
    summary: dict[str, Any] = {"status": outcome.status}
    if outcome.error:
        summary["error"] = outcome.error
    if outcome.issues:
        summary["issues"] = list(outcome.issues)
    if outcome.warnings:
        summary["warnings"] = list(outcome.warnings)
    if outcome.crm is not None:
        summary["crm"] = outcome.crm
    if report is not None:
        summary["crm_records"] = report.crm_records
        summary["match"] = report.counts()
    if plan is not None:
        summary["records_changed"] = len(plan.changes)
        summary["records_unchanged"] = plan.records_unchanged
        summary["fields_changed"] = plan.fields_changed
        summary["field_changes"] = dict(sorted(plan.field_changes.items()))
        summary["records_retired"] = dict(sorted(plan.retired.items()))
        summary["fields_left_alone"] = dict(
            sorted(Counter(item.reason for item in plan.left_alone).items())
        )
        if outcome.adopted:
            summary["ownership_adopted"] = outcome.adopted
        summary["min_write_calls"] = math.ceil(len(plan.changes) / batch_size) if batch_size else 0
    if outcome.budget is not None:
        summary["write_budget_calls"] = outcome.budget
    if outcome.alerts is not None:
        summary["alerts"] = outcome.alerts
    if outcome.stale is not None:
        summary["stale_pqas"] = outcome.stale
    if write is not None:
        reasons = Counter(rejection.code for rejection in write.rejected)
        summary.update(
            records_written=len(write.written),
            write_calls=write.calls,
            write_method=write.method,
            rejected=len(write.rejected),
            rejection_reasons=dict(reasons.most_common()),
            rejections=[
                {
                    "record_id": r.record_id,
                    "code": r.code,
                    "message": r.message,
                    "fields": list(r.fields),
                }
                for r in write.rejected[:20]
            ],
            not_attempted=len(write.not_attempted),
        )
    return summary


@dataclass(slots=True)
class LeadContext:
    """What the lead-channel step found, for planning ``mql_only`` tags and sending alerts."""

    enrichment: Enrichment
    fit: FitModel | None
    motions: tuple[MotionRule, ...]
    sinks: dict[str, AlertSink]
    ledger: AlertLedger | None
    alerts_tier: str | None
    errors: dict[str, str] = field(default_factory=dict)
    stale_after_days: int | None = None
    activity_readers: dict[str, Callable[[list[str]], Mapping[str, date | None]]] = field(
        default_factory=dict
    )
    alerts_backfill: bool = False  # at go-live, alert accounts already in the tier too

    def sends_alerts(self, destination: str) -> bool:
        """Whether this run sends rep alerts to ``destination``."""
        return self.alerts_tier is not None and destination in self.sinks


def record_domains(record: CrmRecord) -> set[str]:
    """The company domains a CRM record's domain fields name, as matching reads them
    (platform and shared-hosting hosts name no company)."""
    found = set()
    for raw in record.domain_values:
        for value in split_domain_values(raw):
            verdict = company_domain(value)
            if verdict.usable and verdict.domain:
                found.add(verdict.domain)
    return found


def classify_email(email: str) -> tuple[str | None, str | None]:
    """(registrable domain, skip reason) of an MQL's email: free-mail and junk are skipped."""
    verdict = classify_host(email)
    return verdict.domain, verdict.reason


def read_company_sizes(usage: UsageSource, as_of: datetime) -> dict[str, dict[str, int]]:
    """The sign-up company sizes per account, for the fit; none from a source that has none."""
    reader = getattr(usage, "read_company_sizes", None)
    return dict(reader(as_of)) if callable(reader) else {}


def find_leads(
    adapters: Adapters,
    channels: ChannelSettings,
    scored: ScoredAccounts,
    as_of: datetime,
    dry_run: bool,
) -> LeadContext:
    """Buyers from the warehouse and MQLs from every CRM, turned into channels and motions.

    A CRM whose MQL read fails is reported and skipped; the others still count.
    """
    errors: dict[str, str] = {}
    candidates = (
        list(adapters.buyers.read_buyer_candidates(as_of)) if adapters.buyers is not None else None
    )
    mqls: list[tuple[str, str, str]] | None = None
    for name, source in adapters.mql_sources.items():
        try:
            found = list(source.read_mqls())
        except PlsSyncError as exc:
            errors[name] = str(exc)
            log.warning("mql_read_failed", destination=name, error=str(exc))
            continue
        mqls = (mqls or []) + found
    enrichment = enrich(
        scored.results,
        candidates=candidates,
        persona=channels.persona,
        mqls=None if errors else mqls,
        classify=classify_email,
        motions=channels.motions,
        # Without every CRM's MQLs a channel would be a guess: leave channel fields alone.
        channels_known=not errors,
        fit=channels.fit,
        company_sizes=read_company_sizes(adapters.usage, as_of) if channels.fit else None,
    )
    alerts_on = channels.alerts_enabled and not dry_run and adapters.alert_ledger is not None
    return LeadContext(
        enrichment,
        channels.fit,
        channels.motions,
        adapters.alert_sinks,
        adapters.alert_ledger,
        channels.alert_tier if alerts_on else None,
        errors,
        channels.stale_after_days,
        adapters.activity_readers,
        channels.alerts_backfill,
    )


def analyse(
    adapters: Adapters, model: ScoringModel, channels: ChannelSettings | None, as_of: datetime
) -> tuple[ScoredAccounts, LeadContext | None]:
    """Score every account and find its buyers, channel and motion, writing nothing anywhere."""
    scored = score_all(adapters.usage, model, adapters.state.load_account_states(), as_of)
    leads = None
    if channels is not None:
        leads = find_leads(adapters, channels, scored, as_of, dry_run=True)
        scored.results = leads.enrichment.results
    return scored, leads


def stale_pqas(
    name: str,
    leads: LeadContext,
    scored: ScoredAccounts,
    outcome: DestinationOutcome,
    as_of: datetime,
) -> dict[str, Any] | None:
    """PQAs qualified for longer than ``stale_after_days`` that nobody has touched since.

    Reads the matched records' last activity (one query per 500 records); None when the
    destination cannot tell or the check is off. The summary lists the first ten; every one
    goes into ``outcome.stale_rows`` (for ``pls-sync lists stale``).
    """
    reader = leads.activity_readers.get(name)
    if leads.stale_after_days is None or reader is None or outcome.report is None:
        return None
    days = leads.stale_after_days
    cutoff = as_of - timedelta(days=days)
    old = {}
    for result in scored.results:
        since = result.state.qualified_since
        record_id = outcome.report.record_for(result.account.key)
        if since is not None and since <= cutoff and record_id is not None:
            old[record_id] = result
    if not old:
        return {"stale": 0, "after_days": days, "accounts": []}
    try:
        activity = reader(sorted(old))
    except PlsSyncError as exc:
        return {"error": str(exc), "after_days": days}
    stale = [
        (result, record_id, activity.get(record_id))
        for record_id, result in old.items()
        if activity.get(record_id) is None or activity[record_id] < cutoff.date()  # type: ignore[operator]
    ]
    stale.sort(key=lambda item: (str(item[2] or ""), item[0].account.domain))
    outcome.stale_rows = [
        {
            "destination": name,
            "domain": result.account.domain,
            "record_id": record_id,
            "qualified_since": json_value(result.state.qualified_since),
            "last_activity": last.isoformat() if last else None,
            "score": result.score.score,
            "tier": result.score.tier,
        }
        for result, record_id, last in stale
    ]
    return {
        "stale": len(stale),
        "after_days": days,
        "accounts": [
            {
                "domain": row["domain"],
                "record_id": row["record_id"],
                "last_activity": row["last_activity"],
            }
            for row in outcome.stale_rows[:10]
        ],
    }


def run_alerts(
    name: str,
    leads: LeadContext,
    scored: ScoredAccounts,
    outcome: DestinationOutcome,
    state: StateStore,
) -> dict[str, Any]:
    """Send this destination's rep alerts; a failure is reported, never fatal to the run."""
    assert leads.ledger is not None and leads.alerts_tier is not None and outcome.report is not None
    ledger, tier = leads.ledger, leads.alerts_tier
    backfill = None
    if leads.alerts_backfill:
        backfill = functools.partial(
            backfill_alerts,
            name,
            ledger,
            scored.results,
            tier=tier,
            buyers=leads.enrichment.buyers,
            entries=lambda keys: state.tier_entries(tier, keys),
        )
    try:
        return send_alerts(
            name, leads.sinks[name], ledger, outcome.report, outcome.records, backfill=backfill
        )
    except PlsSyncError as exc:
        log.error("alerts_failed", destination=name, error=str(exc))
        return {"error": str(exc)}


def writable_values(
    model: ScoringModel, channels: ChannelSettings | None
) -> dict[str, tuple[str, ...]]:
    """Every value pls-sync can write for the sources whose values form a closed set.

    A picklist or enumeration mapped to one of these sources must hold every value.
    """
    tiers = tuple(tier.name for tier in model.tiers)
    rules = channels.motions if channels is not None else DEFAULT_MOTIONS
    motions = tuple(dict.fromkeys(rule.motion for rule in rules))
    segments = channels.fit.names if channels is not None and channels.fit else ()
    return {
        "tier": tiers,
        "raw_tier": tiers,
        "lead_channel": LEAD_CHANNELS,
        "motion": motions,
        "fit_segment": segments,
    }


@contextmanager
def contained(outcome: DestinationOutcome) -> Iterator[None]:
    """Errors at one destination end in its outcome, never in the run: the others go on.

    An exhausted daily quota leaves the destination ``partial`` (the rest waits for the next
    run); any other error, a bug included, ``failed`` with its message.
    """
    name = outcome.name
    try:
        yield
    except QuotaExhaustedError as exc:
        outcome.status = "partial"
        outcome.error = str(exc)
        log.warning("quota_exhausted", destination=name, error=str(exc))
    except PlsSyncError as exc:
        outcome.status = "failed"
        outcome.error = str(exc)
        log.error("destination_failed", destination=name, error=str(exc))
    except Exception as exc:  # a bug in one destination must not stop the other
        outcome.status = "failed"
        outcome.error = redact(f"{type(exc).__name__}: {exc}")
        log.exception("destination_crashed", destination=name)


def crm_identity(destination: CrmDestination) -> str:
    """The identity of the CRM behind a destination (``salesforce:<org id>``,
    ``hubspot:<portal id>``); a destination that cannot tell is known by its name."""
    identify = getattr(destination, "crm_identity", None)
    return str(identify()) if callable(identify) else destination.name


def prepare_destination(
    name: str,
    destination: CrmDestination,
    mapping: DestinationMapping,
    scored: ScoredAccounts,
    timer: StageTimer,
    leads: LeadContext | None,
    values: Mapping[str, tuple[str, ...]],
    state: StateStore,
) -> DestinationOutcome:
    """Check the mapping against the live schema, then read, match and plan one destination.

    A mapping that does not fit (a missing field, a picklist without a value pls-sync writes)
    makes the outcome ``invalid`` with every problem at its file, line and key: that
    destination is neither read nor written. The plan covers every record pls-sync owns in
    that CRM (its identity's ownership ledger), not only this run's matches; a CRM without a
    ledger yet has its mapped values adopted. Errors stay inside the outcome.
    """
    outcome = DestinationOutcome(name=name)
    with contained(outcome):
        with timer.stage(f"{name}.describe"):
            specs = destination.describe(mapping.object)
        errors, warnings = schema_issues(mapping, specs, values)
        outcome.issues = [str(issue) for issue in errors]
        outcome.warnings = [str(issue) for issue in warnings]
        if outcome.issues:
            outcome.status = "invalid"
            outcome.error = (
                f"the mapping does not fit the live {mapping.object} schema "
                f"({len(outcome.issues)} problem(s)): nothing was written"
            )
            log.error("mapping_invalid", destination=name, issues=outcome.issues)
            return outcome
        for warning in outcome.warnings:
            log.warning("mapping_warning", destination=name, warning=warning)
        with timer.stage(f"{name}.read"):
            matched = match_as_a_run_does(destination, mapping, scored.results, state)
            outcome.crm, stored = matched.crm, matched.owned
        outcome.records, outcome.report, outcome.specs = matched.records, matched.report, specs
        outcome.shared = matched.shared
        assert outcome.report is not None
        log.info(
            "crm_read", destination=name, records=len(outcome.records), **outcome.report.counts()
        )
        with timer.stage(f"{name}.plan"):
            owned = stored or adopt_owned(outcome.records.values(), mapping, specs)
            outcome.adopted = 0 if stored else len(owned)
            results = scored.results
            if leads is not None and leads.fit is not None:
                results = refit_with_crm(
                    results,
                    outcome.report,
                    outcome.records,
                    mapping.firmographics.get("employees"),
                    leads.fit,
                    leads.motions,
                )
            outcome.plan = plan_changes(
                results,
                outcome.report,
                outcome.records,
                mapping,
                specs,
                owned=owned,
                stored=stored,
                mql_only=leads.enrichment.mql_only if leads is not None else (),
                domains_of=record_domains,
            )
            # The write phase needs the ledger rows and the records of changed records only;
            # the whole ledger and CRM picture (100k rows each in a big CRM) are not held while
            # the next destination is prepared. Alerts read any matched record: kept whole.
            changed = [c.record_id for c in outcome.plan.changes]
            outcome.owned = {rid: owned[rid] for rid in changed if rid in owned}
            if leads is None or not leads.sends_alerts(name):
                records = outcome.records
                outcome.records = {rid: records[rid] for rid in changed if rid in records}
                matched.records = {}
            matched.owned = {}
        outcome.status = "planned"
        log.info(
            "planned",
            destination=name,
            records_changed=len(outcome.plan.changes),
            fields_changed=outcome.plan.fields_changed,
        )
    return outcome


def write_destination(
    outcome: DestinationOutcome,
    destination: CrmDestination,
    mapping: DestinationMapping,
    scored: ScoredAccounts,
    state: StateStore,
    options: RunOptions,
    timer: StageTimer,
    leads: LeadContext | None = None,
    gate: WriteGate | None = None,
) -> None:
    """Write a planned destination's diff, record rejections, then stale PQAs and rep alerts.

    ``gate`` (default: the SIGTERM event) is checked before every write request: once it is
    set (SIGTERM, or the run lost its lock) nothing more is sent. Errors stay inside the
    outcome, whose status says what happened.
    """
    stop = gate if gate is not None else WriteGate(options.stop, None)
    name = outcome.name
    assert outcome.plan is not None
    with contained(outcome):
        with timer.stage(f"{name}.write"):
            budget = write_budget(destination, options.api_budget_share)
            outcome.budget = budget
            # Only destinations that report a write budget take max_write_calls.
            capped = {} if budget is None else {"max_write_calls": budget}
            # The intent goes into the ledger before the write: a value the CRM then holds
            # is known as pls-sync's even when this run dies before recording the outcome.
            record_write_intent(state, outcome, mapping)
            outcome.write = destination.write(
                mapping.object, outcome.plan.changes, outcome.specs, stop=stop, **capped
            )
        write = outcome.write
        record_ownership(state, outcome)
        state.record_rejections(options.run_id, name, write.rejected, options.as_of)
        state.resolve_rejections(name, write.written)
        outcome.status = "succeeded" if not (write.rejected or write.not_attempted) else "partial"
        if write.not_attempted and stop.is_set():
            outcome.status = "stopped"  # SIGTERM: the rest of the diff waits for the next run
        if stop.lock_lost:
            outcome.status, outcome.error = "stopped", LOCK_LOST
        if write.error:
            outcome.status, outcome.error = "failed", write.error
        # After SIGTERM, no more CRM calls: queued alerts wait in the ledger for the next run.
        stopping = stop.is_set()
        if leads is not None and not stopping:
            outcome.stale = stale_pqas(name, leads, scored, outcome, options.as_of)
        if leads is not None and leads.sends_alerts(name) and not stopping:
            with timer.stage(f"{name}.alerts"):
                outcome.alerts = run_alerts(name, leads, scored, outcome, state)
        log.info(
            "written",
            destination=name,
            records_written=len(write.written),
            rejected=len(write.rejected),
            not_attempted=len(write.not_attempted),
            write_calls=write.calls,
        )


def record_write_intent(
    state: StateStore, outcome: DestinationOutcome, mapping: DestinationMapping
) -> None:
    """Before a write, mark the changed records whose outcome a crash would leave unknown and
    that something depends on: with ``if_empty`` or ``unless_edited`` fields, every changed
    record gets the values about to be sent as ``pending``; a record sharing its domain with
    another (where "most recently modified" decides the match) is marked ``in_flight`` with
    its last change by people, so that this write's stamp is never taken for theirs."""
    plan = outcome.plan
    if plan is None or outcome.crm is None or not plan.changes:
        return
    policies = any(fm.write != "always" for fm in mapping.fields)
    intents = []
    for change in plan.changes:
        shared = change.record_id in outcome.shared
        if not (policies or shared):
            continue
        row = outcome.owned.get(change.record_id) or OwnedRecord(
            change.record_id, change.account_key, {}
        )
        if policies:
            sending = {name: json_value(value) for name, value in change.fields.items()}
            row = replace(row, pending={**row.pending, **sending})
        record = outcome.records.get(change.record_id)
        if shared and record is not None:
            row = replace(row, modified=effective_modified(record, row), in_flight=True)
        intents.append(row)
    if intents:
        state.save_owned(outcome.crm, intents)


# How long after an uncertain write ended a request of it may still be applied by the CRM (a
# request the client timed out on is not cancelled on the server). A change people make to
# the record within it is taken for pls-sync's, which errs toward keeping a match.
LATE_WRITE_WINDOW = timedelta(minutes=2)


def record_ownership(state: StateStore, outcome: DestinationOutcome) -> None:
    """After a write: the ledger rows of records written, and of records that needed no write.

    A record whose change was rejected or not attempted keeps its row: the next run still
    knows what pls-sync owns there and plans it again.
    """
    plan, write = outcome.plan, outcome.write
    if plan is None or write is None or outcome.crm is None or not plan.ownership:
        return
    written = set(write.written)
    changed = {change.record_id for change in plan.changes}
    # Every stamp a written record has is at or before the answer's Date; a second's margin
    # for the header's resolution. Without a Date, this machine's clock.
    finished = (write.server_time or datetime.now(UTC)) + timedelta(seconds=1)
    rows, forget = [], []
    for record_id, row in plan.ownership.items():
        if record_id in changed:
            if record_id not in written:
                continue
            record = outcome.records.get(record_id)
            modified = effective_modified(record, outcome.owned.get(record_id)) if record else None
            base = row or OwnedRecord(record_id, "", {})
            if write.uncertain:
                # A request the client gave up on may still be applied by the server after the
                # write ended: the next run settles it, taking any stamp up to the end of that
                # window as the write's (its own read may lag behind the late change).
                late = finished + LATE_WRITE_WINDOW
                row = replace(base, modified=modified, written_at=late, in_flight=True)
            else:
                row = replace(base, modified=modified, written_at=finished)
        if row is None:
            forget.append(record_id)
        else:
            rows.append(row)
    state.save_owned(outcome.crm, rows, forget)


def write_budget(destination: CrmDestination, share: float | None) -> int | None:
    """Write requests this run may make: a share of the remaining daily quota, when known.

    Changes are sorted by priority, so what a tight budget leaves out is the least urgent;
    it stays in the diff for the next run.
    """
    if share is None or not hasattr(destination, "write_budget"):
        return None
    budget = destination.write_budget(share)
    return None if budget is None else int(budget)


def build_summary(
    options: RunOptions,
    scored: ScoredAccounts,
    outcomes: dict[str, DestinationOutcome],
    timer: StageTimer,
    adapters: Adapters,
    batch_sizes: Mapping[str, int],
    model: ScoringModel,
) -> dict[str, Any]:
    """The run summary of DESIGN.md §4, as a JSON-ready dict."""
    stats = scored.stats
    scores = [result.score for result in scored.results if not result.gone]
    entered = sum(1 for r in scored.results if r.newly_qualified)
    left = sum(
        1
        for r in scored.results
        if r.previous is not None
        and r.previous.qualified_since is not None
        and r.state.qualified_since is None
    )
    priority = {r.account.key: float(r.score.score) for r in scored.results}
    domains = {r.account.key: r.account.domain for r in scored.results}
    destinations: dict[str, Any] = {}
    for name, outcome in outcomes.items():
        entry = _write_summary(outcome, batch_sizes.get(name, 200))
        if outcome.report is not None:
            entry["top_unmatched"] = [
                {"domain": domains.get(key, key), "score": score}
                for key, score in outcome.report.unmatched_top(10, priority)
            ]
        destination = adapters.destinations.get(name)
        if destination is not None:
            entry["api_calls"] = destination.api_calls()
            crm_read = getattr(destination, "last_read", None)
            if crm_read:
                entry["crm_read"] = dict(crm_read)
        destinations[name] = entry
    for name, error in adapters.destination_errors.items():
        destinations[name] = {"status": "failed", "error": error}
    return {
        "run_id": options.run_id,
        "command": options.command,
        "as_of": options.as_of.isoformat(),
        "dry_run": options.dry_run,
        "warehouse": {
            "rows_read": stats.rows_read,
            "users": stats.users,
            "accounts": stats.accounts,
            "skipped_users": stats.skipped_users,
            "skipped_rows": stats.skipped_rows,
            "skipped_reasons": dict(sorted(stats.skipped_reasons.items())),
            "dropped_events": dict(sorted(stats.dropped_events.items())),
        },
        "scoring": {
            "scored": len(scores),
            "tiers": tier_counts(scores, model.tiers),
            "newly_qualified": entered,
            "disqualified": left,
            "guarded_by_age": sum(1 for s in scores if s.guard),
            # accounts the state store knows that the warehouse no longer has
            "gone": sum(1 for r in scored.results if r.gone),
            "transitions": len(scored.transitions),
        },
        "destinations": destinations,
        "stages_seconds": timer.seconds,
    }


def run_status(outcomes: Mapping[str, DestinationOutcome], adapters: Adapters) -> str:
    """succeeded when every destination did its part, failed when none did (a destination
    whose mapping does not fit its schema did nothing), stopped when a SIGTERM left
    destinations for the next run, else partial."""
    statuses = [o.status for o in outcomes.values()] + ["failed"] * len(adapters.destination_errors)
    if not statuses or all(s in ("succeeded", "planned") for s in statuses):
        return "succeeded"
    if all(s in ("succeeded", "planned", "stopped") for s in statuses):
        return "stopped"
    if all(s in ("failed", "invalid") for s in statuses):
        return "failed"
    return "partial"


def account_lists(
    scored: ScoredAccounts, outcomes: Mapping[str, DestinationOutcome]
) -> dict[str, list[dict[str, Any]]]:
    """The whole lists behind the summary's top tens: ABM, unmatched domains, stale PQAs.

    Highest score first, then by domain; ``pls-sync lists`` reads them from the state store.
    """

    def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(
            rows, key=lambda row: (-row["score"], row["domain"], row.get("destination", ""))
        )

    def users(result: AccountResult, metric: str) -> int | None:
        value = result.score.metrics.get(metric, 0)
        return None if value is None else int(value)  # a custom model's NULL is unknown

    abm = [
        {
            "domain": r.account.domain,
            "account": r.account.key,
            "score": r.score.score,
            "tier": r.score.tier,
            "active_users": users(r, "active_users_28d"),
            "users": users(r, "total_users"),
            "motion": r.motion,
            "signals": "; ".join(signal.description for signal in r.score.signals),
        }
        for r in scored.results
        if r.lead_channel == USAGE_NO_BUYER
    ]
    by_key = scored.by_key()
    unmatched = []
    stale = []
    for name, outcome in outcomes.items():
        stale.extend(outcome.stale_rows)
        if outcome.report is None:
            continue
        for key, match in outcome.report.matches.items():
            result = by_key.get(key)
            if match.status != UNMATCHED or result is None:
                continue
            unmatched.append(
                {
                    "destination": name,
                    "domain": result.account.domain,
                    "account": key,
                    "score": result.score.score,
                    "tier": result.score.tier,
                    "users": users(result, "total_users"),
                    "active_users": users(result, "active_users_28d"),
                }
            )
    return {"abm": rank(abm), "unmatched": rank(unmatched), "stale": rank(stale)}


@contextmanager
def fewer_gc_passes(first_threshold: int = 50_000) -> Iterator[None]:
    """Run the block with the cyclic garbage collector's first threshold raised, then restore it.

    A run holds a few hundred thousand long-lived objects (accounts, scores, CRM records); at the
    default threshold (700 allocations) full collections walk them over and over, which cost
    a quarter of the scoring time at 100k accounts. Reference counting still frees everything
    else at once; only cycles wait a little longer.
    """
    previous = gc.get_threshold()
    gc.set_threshold(max(first_threshold, previous[0]), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


@dataclass(slots=True)
class _Progress:
    """How far a run got: what a failure after some writes still records."""

    scored: ScoredAccounts | None = None
    outcomes: dict[str, DestinationOutcome] = field(default_factory=dict)


@fewer_gc_passes()
def run_sync(
    adapters: Adapters,
    model: ScoringModel,
    options: RunOptions,
    *,
    batch_sizes: Mapping[str, int] | None = None,
    progress: Progress | None = None,
    channels: ChannelSettings | None = None,
) -> RunResult:
    """One sync: read, score, commit states, then check, read and plan every destination, save
    the plan, and write each destination's diff (see the module docstring for why this order).

    Returns the run summary with the outcomes behind it. Raises only for failures that stop the
    whole run (warehouse, state store, a plan that cannot be saved); a destination's failure is
    reported in the summary and the others go on.
    """
    structlog.contextvars.bind_contextvars(run_id=options.run_id)
    started = datetime.now(UTC)
    timer = StageTimer()
    state = adapters.state
    lock = RunLock(state, options.lock_name, options.lock_lease_seconds, clock=options.lock_clock)
    if not options.dry_run:
        try:
            lock.acquire()
        except RunLockedError:
            structlog.contextvars.unbind_contextvars("run_id")
            raise
        close_interrupted_runs(state, started)
        state.begin_run(options.run_id, options.command, started)
    log.info("run_started", command=options.command, as_of=options.as_of.isoformat())
    done = _Progress()
    try:
        # A plan that cannot be saved would be found only after reading both CRMs: say so now
        # (recorded as this run's failure, so `status` shows it).
        unwritable = check_plans_dir(options.plans_dir) if options.plans_dir else None
        if unwritable is not None:
            raise FatalError(unwritable)
        with timer.stage("load_state"):
            previous = state.load_account_states()
        with timer.stage("read_and_score"):
            scored = score_all(adapters.usage, model, previous, options.as_of, progress)
        done.scored = scored
        log.info(
            "scored",
            accounts=len(scored.results),
            rows_read=scored.stats.rows_read,
            skipped_users=scored.stats.skipped_users,
            dropped_events=sum(scored.stats.dropped_events.values()),
            tiers=tier_counts((r.score for r in scored.results), model.tiers),
        )
        leads: LeadContext | None = None
        if channels is not None:
            with timer.stage("buyers_and_mqls"):
                leads = find_leads(adapters, channels, scored, options.as_of, options.dry_run)
            scored.results = leads.enrichment.results
            log.info("channels", **leads.enrichment.summary()["channels"])
        if leads is not None and leads.alerts_tier is not None and leads.ledger is not None:
            queued = queue_alerts(
                list(leads.sinks),
                leads.ledger,
                scored.results,
                tier=leads.alerts_tier,
                buyers=leads.enrichment.buyers,
                entries=lambda keys: state.tier_entries(leads.alerts_tier or "", keys),
                backfill=leads.alerts_backfill,
            )
            log.info("alerts_queued", alerts=queued)
        if not options.dry_run:
            with timer.stage("save_state"):
                state.save_account_states(
                    options.run_id,
                    (r.state for r in scored.results if state_changed(r)),
                    scored.transitions,
                )
                if options.history_days is not None:
                    pruned = state.prune_history(
                        options.as_of - timedelta(days=options.history_days)
                    )
                    if pruned:
                        log.info("score_history_pruned", entries=pruned, days=options.history_days)
        values = writable_values(model, channels)
        wanted = options.destinations
        for name, destination in adapters.destinations.items():
            if wanted is not None and name not in wanted:
                continue
            if options.stop.is_set():
                done.outcomes[name] = DestinationOutcome(name=name, status="stopped")
                log.warning("destination_skipped_on_stop", destination=name)
                continue
            done.outcomes[name] = prepare_destination(
                name, destination, adapters.mappings[name], scored, timer, leads, values, state
            )
        plan_file: Path | None = None
        if options.plans_dir is not None:
            # Saved before any write: what a run is about to write can always be read back,
            # and a run whose plan cannot be saved writes nothing.
            planned = build_summary(
                options, scored, done.outcomes, timer, adapters, batch_sizes or {}, model
            )
            planned["status"] = "planned"
            plans = [o.plan for o in done.outcomes.values() if o.plan is not None]
            plan_file = save_plan(options.plans_dir, options.run_id, plans, options.as_of, planned)
        gate = WriteGate(options.stop, lock)
        for name, outcome in done.outcomes.items():
            if options.dry_run or outcome.status != "planned":
                continue
            if gate.is_set():
                outcome.status = "stopped"
                if gate.lock_lost:
                    outcome.error = LOCK_LOST
                log.warning("destination_skipped_on_stop", destination=name)
                continue
            write_destination(
                outcome,
                adapters.destinations[name],
                adapters.mappings[name],
                scored,
                state,
                options,
                timer,
                leads,
                gate,
            )
        summary = build_summary(
            options, scored, done.outcomes, timer, adapters, batch_sizes or {}, model
        )
        if leads is not None:
            summary["leads"] = leads.enrichment.summary()
            reads = {
                name: dict(read)
                for name, source in adapters.mql_sources.items()
                if (read := getattr(source, "last_read", None))
            }
            if reads:
                summary["leads"]["mql_reads"] = reads  # how each CRM's MQLs were read
            if leads.errors:
                summary["leads"]["mql_errors"] = leads.errors
        if plan_file is not None:
            summary["plan_file"] = str(plan_file)
        status = run_status(done.outcomes, adapters)
        if status == "succeeded" and leads is not None and leads.errors:
            status = "partial"  # channels were left alone: a CRM's MQLs could not be read
        summary["status"] = status
        summary["duration_seconds"] = round((datetime.now(UTC) - started).total_seconds(), 3)
        if not options.dry_run:
            state.save_lists(options.run_id, options.as_of, account_lists(scored, done.outcomes))
            state.finish_run(options.run_id, status, datetime.now(UTC), summary)
        log.info("run_finished", status=status, duration_seconds=summary["duration_seconds"])
        return RunResult(summary, done.outcomes, scored)
    except Exception as exc:
        if not options.dry_run:
            message = redact(f"{type(exc).__name__}: {exc}")
            try:
                state.finish_run(
                    options.run_id,
                    "failed",
                    datetime.now(UTC),
                    _failed_summary(options, done, timer, adapters, batch_sizes or {}, model),
                    message,
                )
            except Exception:  # the state store itself may be what failed
                log.exception("state_store_unavailable")
        log.error("run_failed", error=redact(str(exc)))
        raise
    finally:
        if not options.dry_run:
            lock.release()
        structlog.contextvars.unbind_contextvars("run_id")


def _failed_summary(
    options: RunOptions,
    done: _Progress,
    timer: StageTimer,
    adapters: Adapters,
    batch_sizes: Mapping[str, int],
    model: ScoringModel,
) -> dict[str, Any]:
    """What a failed run still records: what it scored and, above all, what it wrote."""
    if done.scored is None:
        return {}
    try:
        summary = build_summary(
            options, done.scored, done.outcomes, timer, adapters, batch_sizes, model
        )
    except Exception:  # the summary of a failure must never hide the failure
        log.exception("failed_run_summary_unavailable")
        return {}
    summary["status"] = "failed"
    return summary
