"""How well a score ranks the accounts that went on to buy: the metrics of ``pls-sync calibrate``.

Pure and standard library only: the caller scores the accounts and labels them (positive when
the account converted within the horizon after the scoring date); this module measures AUC,
lift by score decile with bootstrap confidence intervals, a tier's precision and recall, each
signal's conversion rate with and without it, and holds the whole result as a
``CalibrationReport`` (``as_dict()`` for JSON and the report page, ``render_text`` for the CLI).
The fitted models are built by ``pls_sync.calibrate_service`` (scikit-learn).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pls_sync.errors import PlsSyncError
from pls_sync.scoring import ConditionGroup, Rule, ScoringModel

if TYPE_CHECKING:
    from pls_sync.model_proposal import Proposal

__all__ = [
    "DECILES",
    "CalibrationError",
    "CalibrationReport",
    "FitResult",
    "LiftBucket",
    "SignalRate",
    "TierQuality",
    "auc",
    "lift_by_decile",
    "model_metrics",
    "render_text",
    "signal_rates",
    "tier_quality",
]

DECILES = 10


class CalibrationError(PlsSyncError):
    """The backtest cannot say anything useful (too few labels, one class, nothing matched)."""


@dataclass(frozen=True, slots=True)
class LiftBucket:
    """One score decile (1 = the highest scores): its conversions, rate and lift with a 95% CI."""

    decile: int
    accounts: int
    converted: int
    rate: float
    lift: float
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True, slots=True)
class TierQuality:
    """How a tier did as a prediction of buying: precision among its accounts, recall of buyers."""

    tier: str
    accounts: int
    converted: int
    precision: float | None
    recall: float | None


@dataclass(frozen=True, slots=True)
class SignalRate:
    """A signal's conversion rate among the accounts it fired for, and among the rest."""

    signal: str
    with_n: int
    with_converted: int
    without_n: int
    without_converted: int

    @property
    def with_rate(self) -> float | None:
        """Share of the accounts with the signal that converted (None when none had it)."""
        return self.with_converted / self.with_n if self.with_n else None

    @property
    def without_rate(self) -> float | None:
        """Share of the accounts without the signal that converted (None when all had it)."""
        return self.without_converted / self.without_n if self.without_n else None


@dataclass(frozen=True, slots=True)
class FitResult:
    """A logistic regression on the model's inputs, cross-validated.

    ``cv_auc`` is the AUC of the out-of-fold probabilities of every account; ``fold_aucs`` are
    the folds' own AUCs. ``coefficients`` (standardized features, by name) and ``intercept`` come
    from the fit on every account with the chosen ``c``.
    """

    name: str
    c: float
    cv_auc: float
    fold_aucs: tuple[float, ...]
    coefficients: Mapping[str, float]
    intercept: float
    lift_by_decile: tuple[LiftBucket, ...] = ()

    @property
    def fold_mean(self) -> float:
        """Mean of the folds' AUCs."""
        return sum(self.fold_aucs) / len(self.fold_aucs) if self.fold_aucs else math.nan

    @property
    def fold_sd(self) -> float:
        """Sample standard deviation of the folds' AUCs (0 with fewer than two folds)."""
        n = len(self.fold_aucs)
        if n < 2:
            return 0.0
        mean = self.fold_mean
        return math.sqrt(sum((a - mean) ** 2 for a in self.fold_aucs) / (n - 1))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "c": self.c,
            "cv_auc": self.cv_auc,
            "fold_aucs": list(self.fold_aucs),
            "fold_mean": self.fold_mean,
            "fold_sd": self.fold_sd,
            "coefficients": dict(self.coefficients),
            "intercept": self.intercept,
            "lift_by_decile": [_bucket_dict(b) for b in self.lift_by_decile],
        }


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    """Everything a backtest found; ``as_dict()`` is what the report page and JSON read."""

    as_of: datetime
    scored_at: datetime
    horizon_days: int
    accounts: int
    positives: int
    negatives: int
    customers_before: int
    labels_read: int
    labels_unmatched: int
    labels_skipped: Mapping[str, int]
    auc: float
    lift_by_decile: tuple[LiftBucket, ...]
    tier: TierQuality
    signal_rates: tuple[SignalRate, ...]
    features: tuple[str, ...] = ()
    fitted: FitResult | None = None
    baseline: FitResult | None = None
    seed: int = 0
    notes: tuple[str, ...] = field(default=())
    proposal: Proposal | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``auc``, ``lift_by_decile`` (top decile first, ``lift``/``low``/``high``),
        ``signal_rates`` (signal -> ``with``/``without`` rates and counts), the tier's quality,
        the counts, the fitted models and the proposed model's figures (or None)."""
        return {
            "as_of": self.as_of.isoformat(),
            "scored_at": self.scored_at.isoformat(),
            "horizon_days": self.horizon_days,
            "accounts": self.accounts,
            "positives": self.positives,
            "negatives": self.negatives,
            "customers_before": self.customers_before,
            "labels_read": self.labels_read,
            "labels_unmatched": self.labels_unmatched,
            "labels_skipped": dict(self.labels_skipped),
            "auc": self.auc,
            "lift_by_decile": [_bucket_dict(b) for b in self.lift_by_decile],
            "tier": {
                "tier": self.tier.tier,
                "accounts": self.tier.accounts,
                "converted": self.tier.converted,
                "precision": self.tier.precision,
                "recall": self.tier.recall,
            },
            "signal_rates": {
                rate.signal: {
                    "with": rate.with_rate,
                    "without": rate.without_rate,
                    "with_n": rate.with_n,
                    "without_n": rate.without_n,
                    "with_converted": rate.with_converted,
                    "without_converted": rate.without_converted,
                }
                for rate in self.signal_rates
            },
            "features": list(self.features),
            "fitted": self.fitted.as_dict() if self.fitted else None,
            "baseline": self.baseline.as_dict() if self.baseline else None,
            "seed": self.seed,
            "notes": list(self.notes),
            "proposal": self.proposal.as_dict() if self.proposal else None,
        }


def _bucket_dict(bucket: LiftBucket) -> dict[str, Any]:
    return {
        "decile": bucket.decile,
        "accounts": bucket.accounts,
        "converted": bucket.converted,
        "rate": bucket.rate,
        "lift": bucket.lift,
        "low": bucket.low,
        "high": bucket.high,
    }


# --- metrics ------------------------------------------------------------------------------------


def _check_lengths(scores: Sequence[float], labels: Sequence[bool]) -> None:
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance a random converter outscores a random non-converter.

    Mann-Whitney with average ranks, so a tie counts one half. NaN when a class is empty.
    """
    _check_lengths(scores, labels)
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if not positives or not negatives:
        return math.nan
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        average_rank = (start + end) / 2 + 1
        rank_sum += average_rank * sum(1 for i in order[start : end + 1] if labels[i])
        start = end + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _ranked(scores: Sequence[float]) -> list[int]:
    """Indices from the highest score down; ties keep the caller's order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def _decile_counts(flags_in_rank_order: Sequence[bool], deciles: int) -> list[tuple[int, int]]:
    """(accounts, converted) per decile of an already ranked list, top first."""
    n = len(flags_in_rank_order)
    out = []
    for d in range(deciles):
        part = flags_in_rank_order[d * n // deciles : (d + 1) * n // deciles]
        out.append((len(part), sum(part)))
    return out


def _lifts(counts: Sequence[tuple[int, int]], overall: float) -> list[float]:
    return [(c / n) / overall if n and overall else math.nan for n, c in counts]


def lift_by_decile(
    scores: Sequence[float],
    labels: Sequence[bool],
    *,
    deciles: int = DECILES,
    resamples: int = 500,
    seed: int = 0,
) -> tuple[LiftBucket, ...]:
    """Conversion rate and lift (rate / overall rate) per score decile, the top decile first.

    Deciles are equal slices of the accounts sorted by score (ties keep the input order, so pass
    accounts in a stable order). The 95% interval is the 2.5th-97.5th percentile over
    ``resamples`` bootstrap resamples of the accounts (seeded; 0 resamples: no interval).
    """
    _check_lengths(scores, labels)
    n = len(scores)
    if n == 0:
        return ()
    ranked = _ranked(scores)
    flags = [bool(labels[i]) for i in ranked]
    overall = sum(flags) / n
    counts = _decile_counts(flags, deciles)
    lifts = _lifts(counts, overall)
    intervals = _bootstrap_intervals(flags, deciles, resamples, seed)
    return tuple(
        LiftBucket(
            decile=d + 1,
            accounts=size,
            converted=converted,
            rate=converted / size if size else math.nan,
            lift=lifts[d],
            low=intervals[d][0] if intervals else None,
            high=intervals[d][1] if intervals else None,
        )
        for d, (size, converted) in enumerate(counts)
    )


def _bootstrap_intervals(
    flags: Sequence[bool], deciles: int, resamples: int, seed: int
) -> list[tuple[float, float]] | None:
    """Percentile intervals of each decile's lift over resamples of the ranked accounts.

    Drawing positions in the ranked list and sorting them ranks the resample without re-sorting
    scores (a duplicated account sits next to itself, as its equal score would put it).
    """
    n = len(flags)
    if resamples <= 0 or n == 0:
        return None
    rng = random.Random(seed)
    samples: list[list[float]] = [[] for _ in range(deciles)]
    for _ in range(resamples):
        positions = sorted(rng.randrange(n) for _ in range(n))
        drawn = [flags[p] for p in positions]
        overall = sum(drawn) / n
        if not overall:
            continue
        for d, lift in enumerate(_lifts(_decile_counts(drawn, deciles), overall)):
            if not math.isnan(lift):
                samples[d].append(lift)
    return [(_percentile(s, 0.025), _percentile(s, 0.975)) for s in samples]


def _percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (NaN of nothing)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def tier_quality(tiers: Sequence[str], labels: Sequence[bool], tier: str) -> TierQuality:
    """Precision (converters among the tier's accounts) and recall (share of converters in it)."""
    if len(tiers) != len(labels):
        raise ValueError(f"{len(tiers)} tiers but {len(labels)} labels")
    in_tier = [bool(label) for name, label in zip(tiers, labels, strict=True) if name == tier]
    converted = sum(in_tier)
    positives = sum(1 for label in labels if label)
    return TierQuality(
        tier=tier,
        accounts=len(in_tier),
        converted=converted,
        precision=converted / len(in_tier) if in_tier else None,
        recall=converted / positives if positives else None,
    )


def signal_rates(
    fired: Sequence[Iterable[str]], labels: Sequence[bool], signals: Sequence[str]
) -> tuple[SignalRate, ...]:
    """Per signal (in ``signals`` order): accounts and converters with it and without it."""
    if len(fired) != len(labels):
        raise ValueError(f"{len(fired)} signal sets but {len(labels)} labels")
    sets = [frozenset(names) for names in fired]
    total, converted = len(labels), sum(1 for label in labels if label)
    out = []
    for name in signals:
        with_n = sum(1 for names in sets if name in names)
        with_converted = sum(
            1 for names, label in zip(sets, labels, strict=True) if label and name in names
        )
        out.append(
            SignalRate(name, with_n, with_converted, total - with_n, converted - with_converted)
        )
    return tuple(out)


# --- the model's inputs ---------------------------------------------------------------------------


def _rule_metrics(rule: Rule) -> Iterable[str]:
    if isinstance(rule, ConditionGroup):
        for inner in rule.rules:
            yield from _rule_metrics(inner)
    else:
        yield rule.metric


def model_metrics(model: ScoringModel) -> tuple[str, ...]:
    """The metrics the scoring model reads, once each: components' metrics, then signals'.

    A sum stands for the metrics it adds up: the fit weighs each of them on its own.
    """
    sums = {metric_sum.name: metric_sum for metric_sum in model.sums}
    names: dict[str, None] = {}
    for component in model.components:
        for metric in component.metrics:
            if metric in sums:
                names.update(dict.fromkeys(part for part, _curve in sums[metric].parts))
            else:
                names[metric] = None
    for signal in model.signals:
        names.update(dict.fromkeys(_rule_metrics(signal.when)))
    return tuple(names)


# --- text ---------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _num(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None or math.isnan(value) else format(value, spec)


def _lift_lines(buckets: Sequence[LiftBucket]) -> list[str]:
    lines = ["  decile  accounts  converted    rate    lift  95% CI"]
    for b in buckets:
        ci = f"{_num(b.low, '.2f')}-{_num(b.high, '.2f')}" if b.low is not None else ""
        lines.append(
            f"  {b.decile:>6}  {b.accounts:>8}  {b.converted:>9}  {_pct(b.rate):>6}  "
            f"{_num(b.lift, '.2f'):>6}  {ci}"
        )
    return lines


def _fit_lines(fit: FitResult) -> list[str]:
    top = fit.lift_by_decile[0].lift if fit.lift_by_decile else math.nan
    lines = [
        f"{fit.name}: cross-validated AUC {_num(fit.cv_auc)} (folds {_num(fit.fold_mean)} "
        f"± {_num(fit.fold_sd)}), C={fit.c:g}, top-decile lift {_num(top, '.2f')}"
    ]
    ranked = sorted(fit.coefficients.items(), key=lambda item: (-abs(item[1]), item[0]))
    lines += [f"  {name:<32} {value:+.3f}" for name, value in ranked]
    return lines


def render_text(report: CalibrationReport) -> list[str]:
    """The report as lines for the terminal."""
    r = report
    lines = [
        f"Backtest: scored as of {r.scored_at.isoformat()}, converted in the {r.horizon_days} "
        f"days to {r.as_of.isoformat()}",
        f"Accounts: {r.accounts} ({r.positives} converted, {r.negatives} did not); "
        f"{r.customers_before} customers already left out",
        f"Labels: {r.labels_read} read, {r.labels_unmatched} match no account"
        + (
            "; skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(r.labels_skipped.items()))
            if r.labels_skipped
            else ""
        ),
        f"Score AUC: {_num(r.auc)}",
        "Lift by score decile (1 = highest scores):",
        *_lift_lines(r.lift_by_decile),
        f"Tier {r.tier.tier}: {r.tier.accounts} accounts, {r.tier.converted} converted: "
        f"precision {_pct(r.tier.precision)}, recall {_pct(r.tier.recall)}",
        "Signals (conversion rate with / without):",
    ]
    for rate in r.signal_rates:
        lines.append(
            f"  {rate.signal:<24} {_pct(rate.with_rate):>6} of {rate.with_n:<5} "
            f"/ {_pct(rate.without_rate):>6} of {rate.without_n}"
        )
    for fit in (r.fitted, r.baseline):
        if fit is not None:
            lines += _fit_lines(fit)
    lines += list(r.notes)
    if r.proposal is not None:
        lines += r.proposal.summary_lines()
    return lines
