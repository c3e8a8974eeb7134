"""A fitted scoring model from labelled accounts: what ``pls-sync calibrate --propose`` writes.

Pure (no I/O) and free of scikit-learn at import: the isotonic regression and the stratified
folds import it inside functions, and the logistic regression is the caller's ``fit`` (see
``pls_sync.calibrate_service.linear_fitter``), so the method can be tested with any fitter.

The proposal keeps the model's shape (ratios, sums and their parts' curves, metrics, labels,
signal conditions, hysteresis, saturation, guards) and refits four things: each component's
curve (its y values at the same x knots), the component weights, the signal points and the
tier bounds. ``render_scoring_yaml`` writes any model as a scoring file that loads back into
the same model.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pls_sync.calibration import CalibrationError, auc, tier_quality
from pls_sync.models import ProductAccount
from pls_sync.scoring import (
    AccountScore,
    Component,
    Condition,
    ConditionGroup,
    Rule,
    ScoringModel,
    Signal,
    Tier,
    score_account,
)

__all__ = [
    "Fitter",
    "LinearFit",
    "Proposal",
    "TierOutcome",
    "check_options",
    "header_lines",
    "propose_model",
    "render_scoring_yaml",
]

Curve = tuple[tuple[float, float], ...]

# Weights are written to the hundredth and points to the half point: as precise as a person
# reads them, and coarser than the fit's own noise.
_WEIGHT_UNITS = 100
_POINT_STEP = 0.5
_MIN_SALES_BOUND = 2.0  # room for a second tier between the top tier and the lowest (0)
_SUCCESS_CAPACITY_FACTOR = 3
_SUCCESS_PRECISION_FACTOR = 2.0
# A curve is read on the log-odds scale, where a rate of 0 (a stretch of values with no
# conversion at all) would be minus infinity: rates are kept at least this share of the
# component's overall rate away from 0 and from 1.
_RATE_FLOOR = 0.25


@dataclass(frozen=True, slots=True)
class LinearFit:
    """A logistic regression on the raw features: one coefficient per feature, in order."""

    coefficients: tuple[float, ...]
    intercept: float
    c: float


Fitter = Callable[[Sequence[Sequence[float]], Sequence[bool]], LinearFit]
"""Fits a regularized logistic regression to (rows, labels), coefficients on the raw scale."""


@dataclass(frozen=True, slots=True)
class TierOutcome:
    """What a tier's bound gives on the labelled accounts: who sits in the tier, who bought."""

    tier: str
    bound: float
    accounts: int
    converted: int
    precision: float | None
    recall: float | None

    def describe(self) -> str:
        """``sales >= 71: 20 accounts, 11 converted (precision 55.0%, recall 12.4%)``."""
        return (
            f"{self.tier} >= {_number(self.bound)}: {self.accounts} accounts, {self.converted} "
            f"converted (precision {_percent(self.precision)}, recall {_percent(self.recall)})"
        )


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposed scoring model and how it did.

    ``cv_auc`` is the honest figure: the mean AUC, over stratified folds, of the scores a
    model proposed from the other folds gives the fold's accounts (``fold_aucs`` per fold;
    each fold's model has its own scale, so the folds' scores are not pooled), next to
    ``current_auc``, the current model's AUC on the same accounts. ``c`` is the
    regularization chosen on all accounts. ``changes`` has a line per changed weight, points,
    curve and bound; ``tiers`` what each bound gives on the accounts (``tier_basis`` says
    what chose them); ``notes`` what the method had to decide.
    """

    model: ScoringModel
    current_auc: float
    cv_auc: float
    fold_aucs: tuple[float, ...]
    accounts: int
    positives: int
    c: float
    changes: tuple[str, ...]
    tiers: tuple[TierOutcome, ...]
    tier_basis: str = "the current bounds"
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the figures, the proposed weights, points and bounds, the changes."""
        return {
            "current_auc": self.current_auc,
            "cv_auc": self.cv_auc,
            "fold_aucs": list(self.fold_aucs),
            "accounts": self.accounts,
            "positives": self.positives,
            "c": self.c,
            "tier_basis": self.tier_basis,
            "weights": {c.name: c.weight for c in self.model.components},
            "points": {s.name: s.points for s in self.model.signals},
            "tiers": [dataclasses.asdict(outcome) for outcome in self.tiers],
            "changes": list(self.changes),
            "notes": list(self.notes),
        }

    def summary_lines(self) -> list[str]:
        """The proposal for the terminal: AUCs, changes, what each bound gives, notes."""
        lines = [
            f"Proposed model: cross-validated AUC {_auc_text(self.cv_auc)} (mean of "
            f"{len(self.fold_aucs)} folds) against "
            f"{_auc_text(self.current_auc)} for the current model on the same {self.accounts} "
            f"accounts (C={self.c:g})",
            "Changes:" if self.changes else "Changes: none",
            *(f"  {change}" for change in self.changes),
            f"Tiers on these accounts (bounds from {self.tier_basis}):",
            *(f"  {outcome.describe()}" for outcome in self.tiers),
        ]
        return lines + [f"Note: {note}" for note in self.notes]


def check_options(target_precision: float | None, capacity: int | None) -> None:
    """Raise ``CalibrationError`` unless at most one of the two is given, and it is sane."""
    if target_precision is not None and capacity is not None:
        raise CalibrationError(
            "choose the sales tier by a target precision or by a capacity, not both"
        )
    if target_precision is not None and not 0.0 < target_precision <= 1.0:
        raise CalibrationError(
            f"the target precision is a share above 0 and at most 1, not {target_precision:g}"
        )
    if capacity is not None and capacity < 1:
        raise CalibrationError(f"the sales capacity must be at least 1 account, not {capacity}")


# --------------------------------------------------------------------------------------------
# The method


@dataclass(frozen=True, slots=True)
class _Labelled:
    """An account prepared once: its label, each component's input and whether it is young."""

    account: ProductAccount
    converted: bool
    # Per component, the value its curve reads: the metric (a sum's value for a sum), or the
    # largest of several metrics, which the shared non-decreasing curve maps to the best point.
    inputs: tuple[float | None, ...]
    young: bool


@dataclass(frozen=True, slots=True)
class _Fitted:
    """A model fitted on some accounts (tiers not yet chosen), with its C and notes."""

    model: ScoringModel
    c: float
    notes: tuple[str, ...]


def propose_model(
    current: ScoringModel,
    accounts: Sequence[ProductAccount],
    labels: Sequence[bool],
    *,
    as_of: datetime,
    fit: Fitter,
    target_precision: float | None = None,
    capacity: int | None = None,
    folds: int = 5,
    seed: int = 0,
) -> Proposal:
    """Refit ``current`` to the accounts (scored as of ``as_of``) and whether each converted.

    1. **Curves.** Each component's curve keeps its x knots; its y values become an increasing
       isotonic regression of conversion on the component's input, read at the knots as
       log-odds (rates kept a quarter of the overall rate away from 0 and 1) and rescaled to 0..100 (first
       knot 0, last 100). Log-odds, because step 2 adds points up the way a logistic
       regression adds log-odds (on held-out folds they rank slightly better than rates). A
       component on a sum is fitted on the sum's value (the parts' own curves stay). A
       component on several metrics (velocity: the best of two ratios) is fitted on the
       largest of them, which is the same as taking the best of its points, so it keeps one
       curve. A ``discount_young`` component is fitted on the accounts old enough to get its
       full points. A flat fit (no trend) keeps the curve.
    2. **Weights and points.** A logistic regression (``fit``) on each component's points per
       unit weight (0..100 under the new curves, discounted for young accounts as the scorer
       does) and each signal's 0/1. With coefficients beta (components) and gamma (signals),
       k = 1 / sum(max(beta, 0)): weights k * max(beta, 0), to the hundredth, summing to 1;
       points k * gamma, to the half point (negative points are kept: the config allows them).
       The score is then the fitted log-odds, rescaled, until it saturates.
    3. **Tier bounds.** With ``target_precision``: the top tier starts at the lowest score at
       which the accounts at or above it (those the age guard lets in) convert at that rate,
       and the second tier at the lowest score where its own accounts (below the top tier, or
       held out of it by the guard) convert at twice the overall rate. With ``capacity``: the
       top tier holds at most ``capacity`` accounts and the top two at most three times that. A
       tie at the cut keeps the bound above it, so a capacity is never exceeded. Neither: the
       bounds stay. The lowest tier stays at 0.
    4. When the fitted points push so many totals past 100 that more than 1% of the accounts
       share the top score, ``saturate_above`` is lowered until they do not (the order is
       unchanged; done before step 3 chooses the bounds). Everything else (ratios, sums, metrics, labels, conditions, hysteresis,
       guards, qualified tiers) is kept.

    ``cv_auc`` scores each of ``folds`` stratified folds (seeded) with a model proposed from
    the other folds, through ``score_account``, and averages the folds' AUCs. Raises
    ``CalibrationError`` for bad options, mismatched inputs, one class only, fewer than two
    folds or fewer accounts of a class than folds.
    """
    check_options(target_precision, capacity)
    if len(accounts) != len(labels):
        raise CalibrationError(f"{len(accounts)} accounts but {len(labels)} labels")
    _check_classes(labels, folds)
    prepared, current_scores = _prepare(current, accounts, labels, as_of)
    fold_aucs = _cross_validate(current, prepared, as_of, fit, folds, seed)
    fitted = _fit(current, prepared, range(len(prepared)), as_of, fit, notes=True)
    spread, spread_notes = _spread_the_top(fitted.model, prepared, as_of)
    tiers, tier_notes = _tier_bounds(
        spread, prepared, as_of, target_precision=target_precision, capacity=capacity
    )
    model = dataclasses.replace(spread, tiers=tiers)
    outcomes = _outcomes(model, prepared, as_of)
    flags = [p.converted for p in prepared]
    return Proposal(
        model=model,
        current_auc=auc(current_scores, flags),
        cv_auc=sum(fold_aucs) / len(fold_aucs),
        fold_aucs=fold_aucs,
        accounts=len(prepared),
        positives=sum(flags),
        c=fitted.c,
        changes=tuple(_changes(current, model, outcomes)),
        tiers=outcomes,
        tier_basis=_tier_basis(target_precision, capacity),
        notes=(*fitted.notes, *spread_notes, *tier_notes),
    )


# The share of accounts that may hold the top score: above it, the top is a block reps cannot
# order (the bar for the shipped model, kept for the proposed one).
TOP_TIE_SHARE = 0.01
_KNEES = (70.0, 60.0, 50.0, 40.0, 30.0, 20.0)


def _top_tie_share(model: ScoringModel, prepared: Sequence[_Labelled], as_of: datetime) -> float:
    scores = [score_account(p.account, model, as_of).score for p in prepared]
    return scores.count(max(scores)) / len(scores) if scores else 0.0


def _spread_the_top(
    model: ScoringModel, prepared: Sequence[_Labelled], as_of: datetime
) -> tuple[ScoringModel, list[str]]:
    """The fitted model with ``saturate_above`` lowered until no more than ``TOP_TIE_SHARE`` of
    the accounts share the top score, when large fitted points push totals far past 100 (the
    saturation keeps the order; a lower knee gives it more room). Ranks are unchanged."""
    if _top_tie_share(model, prepared, as_of) <= TOP_TIE_SHARE:
        return model, []
    share = _top_tie_share(model, prepared, as_of)
    for knee in _KNEES:
        if model.saturate_above is not None and knee >= model.saturate_above:
            continue
        candidate = dataclasses.replace(model, saturate_above=knee)
        if _top_tie_share(candidate, prepared, as_of) <= TOP_TIE_SHARE:
            return candidate, [
                f"saturate_above lowered to {knee:g}: with the fitted points, {share:.0%} of the "
                "accounts shared the top score; the order is unchanged"
            ]
    return model, [
        f"{share:.0%} of the accounts share the top score even with saturate_above at "
        f"{_KNEES[-1]:g}: the fitted points are large; consider lowering them"
    ]


def _tier_basis(target_precision: float | None, capacity: int | None) -> str:
    if capacity is not None:
        return f"a capacity of {capacity} accounts"
    if target_precision is not None:
        return f"a target precision of {_percent(target_precision)}"
    return "the current bounds"


def _check_classes(labels: Sequence[bool], folds: int) -> None:
    if folds < 2:
        raise CalibrationError(f"cross-validation needs at least 2 folds, not {folds}")
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if not positives or not negatives:
        only = "converted" if positives else "did not convert"
        raise CalibrationError(
            f"every one of the {len(labels)} accounts {only}: a proposal needs both converters "
            "and non-converters"
        )
    if min(positives, negatives) < folds:
        raise CalibrationError(
            f"too few labels to cross-validate a proposal in {folds} folds: {positives} "
            f"converted and {negatives} did not"
        )


def _prepare(
    current: ScoringModel,
    accounts: Sequence[ProductAccount],
    labels: Sequence[bool],
    as_of: datetime,
) -> tuple[list[_Labelled], list[float]]:
    """Each account's component inputs and age, from the current model's scoring (which
    derives the ratios and sums), and its current score."""
    prepared: list[_Labelled] = []
    scores: list[float] = []
    min_age = current.min_account_age_days
    for account, converted in zip(accounts, labels, strict=True):
        scored = score_account(account, current, as_of)
        inputs = tuple(_input(component, scored) for component in current.components)
        young = scored.age_days is not None and scored.age_days < min_age
        prepared.append(_Labelled(account, bool(converted), inputs, young))
        scores.append(float(scored.score))
    return prepared, scores


def _input(component: Component, scored: AccountScore) -> float | None:
    known = [
        value
        for value in (scored.metrics.get(metric) for metric in component.metrics)
        if value is not None and value == value
    ]
    return max(known) if known else None


def _folds(labels: Sequence[bool], folds: int, seed: int) -> list[tuple[list[int], list[int]]]:
    from sklearn.model_selection import StratifiedKFold

    y = [int(label) for label in labels]
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return [
        ([int(i) for i in train], [int(i) for i in test])
        for train, test in splitter.split([[0]] * len(y), y)
    ]


def _cross_validate(
    current: ScoringModel,
    prepared: Sequence[_Labelled],
    as_of: datetime,
    fit: Fitter,
    folds: int,
    seed: int,
) -> tuple[float, ...]:
    """Each fold's AUC, scored by the model proposed from the other folds."""
    fold_aucs: list[float] = []
    for train, test in _folds([p.converted for p in prepared], folds, seed):
        model = _fit(current, prepared, train, as_of, fit, notes=False).model
        scores = [float(score_account(prepared[i].account, model, as_of).score) for i in test]
        fold_aucs.append(auc(scores, [prepared[i].converted for i in test]))
    return tuple(fold_aucs)


def _fit(
    current: ScoringModel,
    prepared: Sequence[_Labelled],
    indices: Iterable[int],
    as_of: datetime,
    fit: Fitter,
    *,
    notes: bool,
) -> _Fitted:
    """Steps 1 and 2 on the accounts at ``indices``."""
    chosen = [prepared[i] for i in indices]
    said: list[str] = []
    curves = tuple(
        _fit_curve(current, index, chosen, said) for index in range(len(current.components))
    )
    rows = _feature_rows(current, curves, chosen, as_of)
    linear = fit(rows, [p.converted for p in chosen])
    n = len(current.components)
    weights, points = _linear_form(current, linear.coefficients[:n], linear.coefficients[n:], said)
    model = dataclasses.replace(
        current,
        components=tuple(
            dataclasses.replace(component, weight=weight, curve=curve)
            for component, weight, curve in zip(current.components, weights, curves, strict=True)
        ),
        signals=tuple(
            dataclasses.replace(signal, points=value)
            for signal, value in zip(current.signals, points, strict=True)
        ),
    )
    return _Fitted(model, linear.c, tuple(said) if notes else ())


def _fit_curve(
    current: ScoringModel, index: int, prepared: Sequence[_Labelled], notes: list[str]
) -> Curve:
    """The component's curve refitted by an isotonic regression read at its knots."""
    component = current.components[index]
    xs: list[float] = []
    ys: list[float] = []
    for p in prepared:
        value = p.inputs[index]
        if value is not None and not (component.discount_young and p.young):
            xs.append(value)
            ys.append(1.0 if p.converted else 0.0)
    rate = sum(ys) / len(ys) if ys else 0.0
    if len(set(xs)) < 2 or not 0.0 < rate < 1.0:
        notes.append(
            f"components.{component.name}: too few known values or conversions to refit its curve"
        )
        return component.curve
    from sklearn.isotonic import IsotonicRegression

    knots = [x for x, _y in component.curve]
    regression = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(xs, ys)
    low = rate * _RATE_FLOOR
    high = 1.0 - low
    at_knots = [_log_odds(min(max(float(v), low), high)) for v in regression.predict(knots)]
    if not at_knots[-1] - at_knots[0] > 1e-9:
        notes.append(
            f"components.{component.name}: conversion does not rise along its curve's knots; "
            "curve kept"
        )
        return component.curve
    return tuple(zip(knots, _rescaled(at_knots), strict=True))


def _rescaled(values: Sequence[float]) -> list[float]:
    """Non-decreasing ``values`` onto whole points 0..100, the first 0 and the last 100."""
    low, high = values[0], values[-1]
    points = [float(round(100.0 * (v - low) / (high - low))) for v in values]
    points[0], points[-1] = 0.0, 100.0
    for i in range(1, len(points)):
        points[i] = min(100.0, max(points[i], points[i - 1]))
    return points


def _log_odds(rate: float) -> float:
    return math.log(rate / (1.0 - rate))


def _feature_rows(
    current: ScoringModel, curves: Sequence[Curve], prepared: Sequence[_Labelled], as_of: datetime
) -> list[list[float]]:
    """Each account's points per unit weight under ``curves`` (discounted for age by the
    scorer itself) and a 0/1 per signal."""
    unit = dataclasses.replace(
        current,
        components=tuple(
            dataclasses.replace(component, weight=1.0, curve=curve)
            for component, curve in zip(current.components, curves, strict=True)
        ),
        signals=tuple(dataclasses.replace(signal, points=0.0) for signal in current.signals),
        saturate_above=None,
    )
    names = [signal.name for signal in current.signals]
    rows = []
    for p in prepared:
        scored = score_account(p.account, unit, as_of)
        fired = {signal.name for signal in scored.signals}
        rows.append(
            [part.points for part in scored.components]
            + [1.0 if name in fired else 0.0 for name in names]
        )
    return rows


def _linear_form(
    current: ScoringModel,
    betas: Sequence[float],
    gammas: Sequence[float],
    notes: list[str],
) -> tuple[list[float], list[float]]:
    """Weights (to the hundredth, summing to 1) and points (to the half point) proportional
    to the coefficients; a negative component coefficient becomes weight 0."""
    for component, beta in zip(current.components, betas, strict=True):
        if beta < 0:
            notes.append(
                f"components.{component.name}: more of it went with fewer conversions "
                f"(coefficient {beta:.3g}); weight 0"
            )
    positive = [max(float(beta), 0.0) for beta in betas]
    total = sum(positive)
    if not total > 0:
        raise CalibrationError(
            "no component goes with more conversions on these accounts: nothing to weigh"
        )
    scale = 1.0 / total
    weights = _round_to_one([scale * beta for beta in positive])
    points = [_round_points(scale * gamma) for gamma in gammas]
    return weights, points


def _round_to_one(shares: Sequence[float]) -> list[float]:
    """``shares`` (summing to 1) in hundredths that sum to exactly 100: largest remainders."""
    scaled = [share * _WEIGHT_UNITS for share in shares]
    units = [math.floor(value) for value in scaled]
    by_remainder = sorted(range(len(scaled)), key=lambda i: (-(scaled[i] - units[i]), i))
    for i in by_remainder[: _WEIGHT_UNITS - sum(units)]:
        units[i] += 1
    return [unit / _WEIGHT_UNITS for unit in units]


def _round_points(points: float) -> float:
    rounded = round(points / _POINT_STEP) * _POINT_STEP
    return rounded + 0.0  # no -0.0 in the file


# --------------------------------------------------------------------------------------------
# Tier bounds


def _tier_bounds(
    model: ScoringModel,
    prepared: Sequence[_Labelled],
    as_of: datetime,
    *,
    target_precision: float | None,
    capacity: int | None,
) -> tuple[tuple[Tier, ...], list[str]]:
    """The tiers with the top two bounds chosen from the proposed model's scores."""
    tiers = model.tiers
    if (target_precision is None and capacity is None) or len(tiers) < 2:
        return tiers, []
    scores = [score_account(p.account, model, as_of).score for p in prepared]
    flags = [p.converted for p in prepared]
    top = tiers[0]
    eligible = [not (p.young and top.name in model.guarded_tiers) for p in prepared]
    notes: list[str] = []
    top_bound = _top_bound(top.name, scores, eligible, flags, target_precision, capacity)
    if top_bound < _MIN_SALES_BOUND:
        notes.append(f"tiers.{top.name}: raised to {_MIN_SALES_BOUND:g}, above the lowest tier")
        top_bound = _MIN_SALES_BOUND
    bounds = {top.name: top_bound}
    if len(tiers) >= 3:
        second = tiers[1]
        second_bound = _second_bound(scores, eligible, flags, top_bound, capacity)
        if second_bound is None:
            notes.append(
                f"tiers.{second.name}: no score band below {top.name} converts at twice the "
                "overall rate; bound kept"
            )
        chosen = second.min_score if second_bound is None else second_bound
        if chosen >= top_bound or chosen < 1:
            chosen = min(max(chosen, 1.0), top_bound - 1.0)
            notes.append(f"tiers.{second.name}: set to {chosen:g}, between its neighbours")
        bounds[second.name] = chosen
    proposed = tuple(Tier(tier.name, bounds.get(tier.name, tier.min_score)) for tier in tiers)
    _check_order(proposed)
    return proposed, notes


def _top_bound(
    name: str,
    scores: Sequence[int],
    eligible: Sequence[bool],
    flags: Sequence[bool],
    target_precision: float | None,
    capacity: int | None,
) -> float:
    """The top tier's bound: for the capacity, else the lowest reaching the target."""
    if capacity is not None:
        return _capacity_bound(scores, eligible, capacity)
    assert target_precision is not None
    reached = _precision_bound(scores, eligible, flags, target_precision)
    if reached is None:
        raise CalibrationError(
            f"no score bound gives the {name} tier a precision of "
            f"{_percent(target_precision)} on these accounts: choose a lower target"
        )
    return reached


def _second_bound(
    scores: Sequence[int],
    eligible: Sequence[bool],
    flags: Sequence[bool],
    top_bound: float,
    capacity: int | None,
) -> float | None:
    """The second tier's bound: the top two tiers hold at most three times the capacity, or
    the tier's own accounts (below the top bound, or held out of the top tier by the guard)
    convert at twice the overall rate; None when no bound does."""
    if capacity is not None:
        everyone = [True] * len(scores)
        return _capacity_bound(scores, everyone, _SUCCESS_CAPACITY_FACTOR * capacity)
    below_top = [not (ok and s >= top_bound) for s, ok in zip(scores, eligible, strict=True)]
    overall = sum(flags) / len(flags)
    target = min(1.0, _SUCCESS_PRECISION_FACTOR * overall)
    return _precision_bound(scores, below_top, flags, target)


def _capacity_bound(scores: Sequence[int], eligible: Sequence[bool], capacity: int) -> float:
    """The lowest whole-number score with at most ``capacity`` eligible accounts at or above."""
    counted = sorted((s for s, ok in zip(scores, eligible, strict=True) if ok), reverse=True)
    if len(counted) <= capacity:
        return float(counted[-1]) if counted else 100.0
    # The first score past the capacity is excluded, and with it everyone tied with it.
    return float(min(100, counted[capacity] + 1))


def _precision_bound(
    scores: Sequence[int], counted: Sequence[bool], flags: Sequence[bool], target: float
) -> float | None:
    """The lowest whole-number score whose ``counted`` accounts at or above convert at
    ``target`` or more; None when no score does."""
    accounts = [0] * 101
    converted = [0] * 101
    for score, ok, flag in zip(scores, counted, flags, strict=True):
        if ok:
            accounts[score] += 1
            converted[score] += int(flag)
    best: float | None = None
    at_or_above = converted_above = 0
    for score in range(100, 0, -1):
        at_or_above += accounts[score]
        converted_above += converted[score]
        if at_or_above and converted_above >= target * at_or_above - 1e-12:
            best = float(score)
    return best


def _check_order(tiers: Sequence[Tier]) -> None:
    bounds = [tier.min_score for tier in tiers]
    if any(lower >= upper for upper, lower in zip(bounds, bounds[1:], strict=False)):
        listed = ", ".join(f"{tier.name} {tier.min_score:g}" for tier in tiers)
        raise CalibrationError(
            f"the proposed tier bounds are not in order ({listed}): set the other tiers by hand"
        )


def _outcomes(
    model: ScoringModel, prepared: Sequence[_Labelled], as_of: datetime
) -> tuple[TierOutcome, ...]:
    """Accounts, converters, precision and recall of every tier above the lowest."""
    assigned = [score_account(p.account, model, as_of).tier for p in prepared]
    flags = [p.converted for p in prepared]
    outcomes = []
    for tier in model.tiers[:-1]:
        quality = tier_quality(assigned, flags, tier.name)
        outcomes.append(
            TierOutcome(
                tier.name,
                tier.min_score,
                quality.accounts,
                quality.converted,
                quality.precision,
                quality.recall,
            )
        )
    return tuple(outcomes)


def _changes(
    current: ScoringModel, proposed: ScoringModel, outcomes: Sequence[TierOutcome]
) -> list[str]:
    """A line per changed weight, curve, points and bound (bounds with what they give)."""
    lines: list[str] = []
    for old, new in zip(current.components, proposed.components, strict=True):
        if old.weight != new.weight:
            lines.append(
                f"components.{old.name}.weight: {_number(old.weight)} -> {_number(new.weight)}"
            )
        if old.curve != new.curve:
            lines.append(
                f"components.{old.name}.curve: {_flow_curve(old.curve)} -> {_flow_curve(new.curve)}"
            )
    for old_signal, new_signal in zip(current.signals, proposed.signals, strict=True):
        if old_signal.points != new_signal.points:
            lines.append(
                f"signals.{old_signal.name}.points: {_number(old_signal.points)} -> "
                f"{_number(new_signal.points)}"
            )
    if current.saturate_above != proposed.saturate_above:
        before, after = current.saturate_above, proposed.saturate_above
        lines.append(
            f"saturate_above: {'null' if before is None else _number(before)} -> "
            f"{'null' if after is None else _number(after)}"
        )
    given = {outcome.tier: outcome for outcome in outcomes}
    for old_tier, new_tier in zip(current.tiers, proposed.tiers, strict=True):
        if old_tier.min_score != new_tier.min_score:
            outcome = given.get(new_tier.name)
            detail = f" ({outcome.describe().split(': ', 1)[1]})" if outcome else ""
            lines.append(
                f"tiers.{old_tier.name}: {_number(old_tier.min_score)} -> "
                f"{_number(new_tier.min_score)}{detail}"
            )
    return lines


# --------------------------------------------------------------------------------------------
# The scoring file


def header_lines(proposal: Proposal, context: Sequence[str]) -> list[str]:
    """The proposed file's header: what it is, ``context`` (when, which labels and horizon),
    the AUCs and a line per change."""
    return [
        "PQA scoring model proposed by `pls-sync calibrate --propose`: a fitted version of the",
        "scoring file, to diff against the one in use and adopt (or not).",
        *context,
        f"Cross-validated AUC {_auc_text(proposal.cv_auc)}; the current model's AUC "
        f"{_auc_text(proposal.current_auc)} on the same {proposal.accounts} accounts "
        f"({proposal.positives} converted). Tier bounds from {proposal.tier_basis}.",
        "Changes:" if proposal.changes else "Changes: none.",
        *(f"  {change}" for change in proposal.changes),
        *(f"Note: {note}" for note in proposal.notes),
    ]


def render_scoring_yaml(model: ScoringModel, header: Sequence[str]) -> str:
    """``model`` as a whole scoring file, in the shipped file's shape and key order, under
    ``header`` as comment lines. It loads (``pls_sync.config``) into an equal model."""
    lines = [f"# {line}".rstrip() for text in header for line in text.splitlines() or [""]]
    sections = [
        _ratio_lines(model),
        _sum_lines(model),
        _component_lines(model),
        _signal_lines(model),
        _tier_lines(model),
        _guard_lines(model),
    ]
    for section in sections:
        if section:
            lines += ["", *section]
    return "\n".join(lines).lstrip("\n") + "\n"


def _ratio_lines(model: ScoringModel) -> list[str]:
    if not model.ratios:
        return []
    return ["ratios:"] + [
        f"  {_key(ratio.name)}: {{numerator: {_text(ratio.numerator)}, denominator: "
        f"{_text(ratio.denominator)}, min_denominator: {_number(ratio.min_denominator)}}}"
        for ratio in model.ratios
    ]


def _sum_lines(model: ScoringModel) -> list[str]:
    if not model.sums:
        return []
    lines = ["sums:"]
    for metric_sum in model.sums:
        lines.append(f"  {_key(metric_sum.name)}:")
        lines += [f"    {_key(metric)}: {_flow_curve(curve)}" for metric, curve in metric_sum.parts]
    return lines


def _component_lines(model: ScoringModel) -> list[str]:
    lines = ["components:"]
    for component in model.components:
        lines += [
            f"  {_key(component.name)}:",
            f"    weight: {_number(component.weight)}",
            f"    metrics: [{', '.join(_text(metric) for metric in component.metrics)}]",
            f"    curve: {_flow_curve(component.curve)}",
        ]
        if component.label:
            lines.append(f"    label: {_quoted(component.label)}")
        if component.discount_young:
            lines.append("    discount_young: true")
    return lines


def _signal_lines(model: ScoringModel) -> list[str]:
    if not model.signals:
        return []
    lines = ["signals:"]
    for signal in model.signals:
        lines.append(f"  - name: {_text(signal.name)}")
        lines += _when_lines(signal)
        lines.append(f"    points: {_number(signal.points)}")
        if signal.label:
            lines.append(f"    label: {_quoted(signal.label)}")
    return lines


def _when_lines(signal: Signal) -> list[str]:
    if isinstance(signal.when, Condition):
        return [f"    when: {_flow_condition(signal.when)}"]
    return ["    when:", *_group_lines(signal.when, 6)]


def _group_lines(rule: Rule, indent: int) -> list[str]:
    """A condition group as a block mapping at ``indent``: ``all:`` then its rules' items."""
    assert isinstance(rule, ConditionGroup)
    pad = " " * indent
    lines = [f"{pad}{rule.mode}:"]
    for inner in rule.rules:
        if isinstance(inner, Condition):
            lines.append(f"{pad}  - {_flow_condition(inner)}")
        else:
            nested = _group_lines(inner, indent + 4)
            lines += [f"{pad}  - {nested[0].lstrip()}", *nested[1:]]
    return lines


def _tier_lines(model: ScoringModel) -> list[str]:
    lines = ["tiers:"]
    lines += [f"  {_key(tier.name)}: {_number(tier.min_score)}" for tier in model.tiers]
    saturate = "null" if model.saturate_above is None else _number(model.saturate_above)
    return lines + [
        f"hysteresis: {_number(model.hysteresis)}",
        f"saturate_above: {saturate}",
        f"qualified_tiers: {_flow_names(model.qualified_tiers)}",
    ]


def _guard_lines(model: ScoringModel) -> list[str]:
    return [
        "guards:",
        f"  min_account_age_days: {model.min_account_age_days}",
        f"  guarded_tiers: {_flow_names(model.guarded_tiers)}",
    ]


def _flow_condition(condition: Condition) -> str:
    return (
        f"{{metric: {_text(condition.metric)}, op: {_quoted(condition.op)}, "
        f"value: {_number(condition.value)}}}"
    )


def _flow_curve(curve: Iterable[tuple[float, float]]) -> str:
    return "[" + ", ".join(f"[{_number(x)}, {_number(y)}]" for x, y in curve) + "]"


def _flow_names(names: Iterable[str]) -> str:
    return "[" + ", ".join(_text(name) for name in names) + "]"


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def _plain_safe(text: str) -> bool:
    """Whether ``text`` reads back as this very string when written unquoted."""
    if not _PLAIN.fullmatch(text):
        return False
    import yaml

    return bool(yaml.safe_load(text) == text)


def _key(name: str) -> str:
    """A mapping key: keys are read as written (never interpolated), so only quoted when YAML
    would not read the text as one plain scalar."""
    return name if _PLAIN.fullmatch(name) else _yaml_quoted(name)


def _text(value: str) -> str:
    """A string value: plain when it reads back as itself, else double-quoted."""
    return value if _plain_safe(value) else _quoted(value)


def _quoted(value: str) -> str:
    """A double-quoted string value; ``$`` doubled, as the loader reads ``${VAR}`` in values."""
    return _yaml_quoted(value.replace("$", "$$"))


def _yaml_quoted(value: str) -> str:
    import yaml

    dumped = yaml.safe_dump(value, default_style='"', allow_unicode=True, width=2**31 - 1)
    return str(dumped).rstrip("\n").removesuffix("\n...")


def _number(value: float) -> str:
    """A number as YAML reads it back exactly: whole numbers without ``.0``, else the
    shortest round-tripping form (with a dot before any exponent, as YAML 1.1 needs)."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = repr(float(value))
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def _percent(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.1f}%"


def _auc_text(value: float) -> str:
    return "n/a" if value != value else f"{value:.3f}"
