"""Buyers, lead channels and motions for scored accounts. Standard library only.

Takes the scored results, the buyer candidates and the MQLs read from the CRMs, and returns
the results with ``buyers``, ``lead_channel``, ``fit`` and ``motion`` filled in, plus the
counts the run summary reports. ``refit_with_crm`` then gives a destination's accounts the fit
its CRM's employee counts say, and the motion that follows.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pls_sync.channels import (
    USAGE_NO_BUYER,
    Buyer,
    MotionRule,
    MqlIndex,
    PersonaModel,
    UserProfile,
    abm_list,
    channel_counts,
    index_mqls,
    lead_channel,
    motion_for,
    mql_only_domains,
    rank_buyers,
)
from pls_sync.fit import (
    EMPLOYEES_METRIC,
    SOURCE_CRM,
    Fit,
    FitModel,
    account_fit,
    crm_employees,
    segment_for,
)
from pls_sync.matching import MatchReport
from pls_sync.models import CrmRecord
from pls_sync.planning import AccountResult


def describe_buyer(buyer: Buyer) -> str:
    """One line a rep reads: who, their title, and why they look like a buyer."""
    who = f"{buyer.email} ({buyer.title})" if buyer.title else buyer.email
    return f"{who}: {', '.join(buyer.reasons)}" if buyer.reasons else who


@dataclass(slots=True)
class Enrichment:
    """Results with channels, the buyers behind them, and what the summary reports."""

    results: list[AccountResult]
    buyers: dict[str, tuple[Buyer, ...]] = field(default_factory=dict)
    mqls: MqlIndex | None = None
    mql_only: list[str] = field(default_factory=list)

    def _fit_summary(self) -> dict[str, Any]:
        """Fit beside engagement: accounts per segment, and per tier x segment; {} without a
        fit model."""
        fitted = [r for r in self.results if r.fit is not None and not r.gone]
        if not fitted:
            return {}
        by_tier: dict[str, Counter[str]] = defaultdict(Counter)
        for r in fitted:
            assert r.fit is not None
            by_tier[r.score.tier][r.fit.segment] += 1
        segments = Counter(r.fit.segment for r in fitted if r.fit is not None)
        return {
            "fit": {
                "segments": dict(segments.most_common()),
                "by_tier": {tier: dict(counts.most_common()) for tier, counts in by_tier.items()},
            }
        }

    def summary(self, top: int = 10) -> dict[str, Any]:
        """Channel and motion counts, the ABM list and MQL intake counts."""
        channels = channel_counts(r.lead_channel for r in self.results if not r.gone)
        if self.mql_only:
            channels["mql_only"] = channels.get("mql_only", 0) + len(self.mql_only)
        out: dict[str, Any] = {
            "channels": channels,
            "motions": dict(Counter(r.motion for r in self.results if r.motion).most_common()),
            "accounts_with_buyers": sum(1 for r in self.results if r.buyers),
            **self._fit_summary(),
            "abm_list": [
                {"domain": domain, "score": score}
                for domain, score in abm_list(
                    ((r.account.domain, r.lead_channel, r.score.score) for r in self.results), top
                )
            ],
            # the whole list's length (domains): `pls-sync lists abm` shows every one
            "abm_total": len(
                {r.account.domain for r in self.results if r.lead_channel == USAGE_NO_BUYER}
            ),
        }
        if self.mqls is not None:
            out["mqls"] = {
                "indexed": sum(len(v) for v in self.mqls.by_domain.values()),
                "domains": len(self.mqls.by_domain),
                "skipped": dict(sorted(self.mqls.skipped.items())),
                "mql_only_domains": len(self.mql_only),
            }
        return out


def enrich(
    results: Sequence[AccountResult],
    *,
    candidates: Iterable[tuple[str, UserProfile]] | None,
    persona: PersonaModel,
    mqls: Iterable[tuple[str, str, str]] | None,
    classify: Callable[[str], tuple[str | None, str | None]],
    motions: Sequence[MotionRule],
    channels_known: bool = True,
    fit: FitModel | None = None,
    company_sizes: Mapping[str, Mapping[str, int]] | None = None,
) -> Enrichment:
    """Rank buyers per account, index MQLs by domain, and set each account's channel, fit and
    motion.

    ``candidates`` or ``mqls`` ``None`` means that source is not available this run: accounts
    then have no buyers (or no MQLs), and the channel says so. ``channels_known`` False (an
    MQL source failed) leaves every channel unknown (``None``) rather than guessed. With a
    ``fit`` model, each account's fit comes from its ``employees`` metric or the sign-up
    ``company_sizes`` (bands by account key), and the motion table sees its segment.
    """
    by_account: dict[str, list[UserProfile]] = defaultdict(list)
    for key, profile in candidates or ():
        by_account[key].append(profile)
    buyers = {key: rank_buyers(profiles, persona) for key, profiles in by_account.items()}
    index = index_mqls(mqls, classify) if mqls is not None else None
    enriched = []
    for result in results:
        if result.gone:  # no usage, no users: its channel comes from its record's MQLs
            enriched.append(dataclasses.replace(result, buyers=(), lead_channel=None, motion=None))
            continue
        found = buyers.get(result.account.key, ())
        has_mql = index is not None and index.has(result.account.domain)
        account_fit_ = None
        if fit is not None:
            account_fit_ = account_fit(
                fit,
                metric=result.account.metrics.get(EMPLOYEES_METRIC),
                bands=(company_sizes or {}).get(result.account.key),
            )
        segment = account_fit_.segment if account_fit_ is not None else None
        enriched.append(
            dataclasses.replace(
                result,
                buyers=tuple(describe_buyer(b) for b in found),
                lead_channel=lead_channel(True, bool(found), has_mql) if channels_known else None,
                motion=motion_for(result.score.tier, bool(found), motions, segment),
                fit=account_fit_,
            )
        )
    used = (r.account.domain for r in results if not r.gone)
    only = mql_only_domains(index, used) if index else []
    return Enrichment(enriched, {k: v for k, v in buyers.items() if v}, index, only)


def refit_with_crm(
    results: Sequence[AccountResult],
    report: MatchReport,
    records: Mapping[str, CrmRecord],
    employees_field: str | None,
    fit: FitModel | None,
    motions: Sequence[MotionRule],
) -> list[AccountResult]:
    """The results as one destination writes them: an account whose matched record holds an
    employee count (``employees_field``, the mapping's ``firmographics.employees``) takes the
    fit that count gives, which RevOps curates and is trusted over sign-up profiles, and the
    motion the table gives for it. Others are returned as they are."""
    if fit is None or not employees_field:
        return list(results)
    out = []
    for result in results:
        record_id = None if result.gone else report.record_for(result.account.key)
        record = records.get(record_id) if record_id is not None else None
        employees = crm_employees(record.fields.get(employees_field)) if record else None
        if employees is None or result.motion is None:
            out.append(result)
            continue
        refit = Fit(segment_for(employees, fit), employees, SOURCE_CRM)
        if refit == result.fit:
            out.append(result)
            continue
        motion = motion_for(result.score.tier, bool(result.buyers), motions, refit.segment)
        out.append(dataclasses.replace(result, fit=refit, motion=motion))
    return out
