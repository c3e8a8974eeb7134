"""``pls-sync report``'s data: what the page shows, gathered from the state store.

The last run is the newest finished run that wrote (not a plan) with a summary; its summary
gives the match counts, channels and motions. Current scores come from the account states, the
tier flow from the tier transitions recorded at the last run's as-of, and the ABM and unmatched
lists from the lists the last run kept. Reading the store may raise ``FatalError`` (the caller
reports it); nothing here writes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pls_sync.report_page import LIST_ROWS, NEW, ReportData, RunInfo, render_report

if TYPE_CHECKING:
    from pls_sync.config import Settings
    from pls_sync.ports import AccountState, RunRecord, TierTransition

__all__ = ["ReportSource", "build_report", "gather_report_data"]

_RUNS_SCANNED = 50


class ReportSource(Protocol):
    """The state store reads the report needs (``connectors.state.SqlStateStore`` has them)."""

    def recent_runs(self, limit: int = 10) -> list[RunRecord]:
        """The latest runs, newest first."""
        ...

    def load_account_states(self) -> dict[str, AccountState]:
        """Every account's last known state, by key."""
        ...

    def transitions_of_run(self, run_id: str) -> list[TierTransition]:
        """The tier transitions run ``run_id`` recorded, oldest first."""
        ...

    def load_lists(self) -> tuple[str, datetime, dict[str, list[dict[str, Any]]]] | None:
        """``(run_id, saved_at, lists)`` of the last run that kept lists; None before any."""
        ...


def write_report_after_run(settings: Settings, *, now: datetime) -> str | None:
    """Write the report page where ``report.after_run`` says, after a run; a line saying what
    was written, or None when it is off. Errors (``PlsSyncError``, ``OSError``) are the
    caller's to report: a page that cannot be written never fails the run."""
    path = settings.report_after_run
    if path is None:
        return None
    from pls_sync.bootstrap import open_existing_state_store

    store = open_existing_state_store(settings.state_url)
    try:
        page = build_report(settings, store, now=now, calibration=store.get_value("calibration"))
    finally:
        store.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return f"Report written to {path} ({len(page.encode('utf-8')):,} bytes)"


def build_report(
    settings: Settings,
    state: ReportSource,
    *,
    now: datetime,
    calibration: Mapping[str, Any] | None = None,
) -> str:
    """The report page (one self-contained HTML string) from the state store as it is now."""
    return render_report(gather_report_data(settings, state, now=now, calibration=calibration))


def gather_report_data(
    settings: Settings,
    state: ReportSource,
    *,
    now: datetime,
    calibration: Mapping[str, Any] | None = None,
) -> ReportData:
    """What the page shows: the last run's summary, current scores, tier flow and lists."""
    recorded = _sync_runs(state.recent_runs(_RUNS_SCANNED))
    last = recorded[0] if recorded else None
    summary: Mapping[str, Any] = last.summary if last is not None else {}
    states = state.load_account_states()
    saved = state.load_lists()
    lists = saved[2] if saved is not None else {}
    abm = lists.get("abm", [])
    unmatched = lists.get("unmatched", [])
    destinations = _mapping(summary.get("destinations"))
    leads = _mapping(summary.get("leads"))
    return ReportData(
        generated_at=now,
        tiers=tuple((tier.name, float(tier.min_score)) for tier in settings.scoring.tiers),
        scores=tuple((float(s.score), s.tier) for s in states.values()),
        last_run=_run_info(last) if last is not None else None,
        previous_run=_run_info(recorded[1]) if len(recorded) > 1 else None,
        tier_flow=tier_flow(states, state.transitions_of_run(last.run_id))
        if last is not None
        else {},
        match_counts={
            name: _int_counts(dest["match"])
            for name, dest in destinations.items()
            if isinstance(dest, Mapping) and isinstance(dest.get("match"), Mapping)
        },
        destination_status={
            name: str(dest.get("status", "?"))
            for name, dest in destinations.items()
            if isinstance(dest, Mapping)
        },
        channels=_int_counts(leads.get("channels")),
        motions=_int_counts(leads.get("motions")),
        fit_segments=settings.channels.fit.names if settings.channels.fit else (),
        fit_by_tier={
            str(tier): _int_counts(counts)
            for tier, counts in _mapping(_mapping(leads.get("fit")).get("by_tier")).items()
        },
        abm=tuple(abm[:LIST_ROWS]),
        abm_total=len(abm),
        unmatched=tuple(unmatched[:LIST_ROWS]),
        unmatched_total=len(unmatched),
        lists_run_id=saved[0] if saved is not None else None,
        calibration=calibration,
    )


def tier_flow(
    states: Mapping[str, AccountState], transitions: list[TierTransition]
) -> dict[tuple[str, str], int]:
    """Every account counted by ``(tier before, tier after)`` the last run: ``transitions``
    are the ones that run recorded.

    An account the run moved comes from the tier it left (``NEW`` when it was first scored
    then); several moves in one run fold into one, from the tier before the first. Every other
    account kept its tier.
    """
    before: dict[str, str] = {}
    for transition in transitions:
        before.setdefault(transition.key, transition.from_tier or NEW)
    counts: Counter[tuple[str, str]] = Counter()
    for key, account in states.items():
        counts[(before.get(key, account.tier), account.tier)] += 1
    return dict(counts)


def _sync_runs(runs: list[RunRecord]) -> list[RunRecord]:
    """Finished runs that wrote (not plans) and kept a summary, newest first."""
    return [
        run
        for run in runs
        if run.status != "running"
        and run.summary
        and not run.summary.get("dry_run")
        and "scoring" in run.summary
    ]


def _run_info(run: RunRecord) -> RunInfo:
    as_of = run.summary.get("as_of")
    return RunInfo(
        run_id=run.run_id,
        command=run.command,
        status=run.status,
        started_at=run.started_at,
        as_of=str(as_of) if as_of is not None else None,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int_counts(value: Any) -> dict[str, int]:
    """The integer entries of a summary's counts (odd values left out)."""
    return {
        str(name): int(count)
        for name, count in _mapping(value).items()
        if isinstance(count, int) and not isinstance(count, bool)
    }
