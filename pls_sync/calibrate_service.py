"""``pls-sync calibrate``: backtest the score against conversions and fit a model on its inputs.

``backtest`` scores every account as of ``as_of - horizon``, labels it by whether it converted
in the horizon after that date (accounts that converted at or before it are customers already
and left out), measures the score (``pls_sync.calibration``) and fits two cross-validated
logistic regressions on the scoring model's inputs: ``calibrated`` (C chosen by an inner
cross-validation) and ``baseline`` (C = 1). ``propose`` does the same and adds a proposed scoring
model fitted to the labels (``pls_sync.model_proposal``); ``proposal_file`` is its scoring file.
scikit-learn is an optional extra, imported only inside functions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pls_sync.calibration import (
    CalibrationError,
    CalibrationReport,
    FitResult,
    auc,
    lift_by_decile,
    model_metrics,
    signal_rates,
    tier_quality,
)
from pls_sync.config import Settings
from pls_sync.errors import ConfigError, ConfigIssue
from pls_sync.model_proposal import (
    Fitter,
    LinearFit,
    check_options,
    header_lines,
    propose_model,
    render_scoring_yaml,
)
from pls_sync.ports import UsageSource
from pls_sync.service import AccountResult, score_all

if TYPE_CHECKING:
    from connectors.labels import Label, LabelRead

__all__ = [
    "INSTALL_HINT",
    "LabeledAccount",
    "LabelMatch",
    "backtest",
    "feature_matrix",
    "fit_linear",
    "fit_logistic",
    "label_accounts",
    "linear_fitter",
    "propose",
    "proposal_file",
]

INSTALL_HINT = "pip install 'pls-sync[calibrate]'"
MIN_PER_CLASS = 10
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
BASELINE_C = 1.0
MAX_ITER = 2000


@dataclass(frozen=True, slots=True)
class LabeledAccount:
    """An account as scored at the backtest date and whether it converted in the horizon."""

    result: AccountResult
    converted: bool


@dataclass(frozen=True, slots=True)
class LabelMatch:
    """Accounts labelled for the backtest, and what happened to the labels."""

    accounts: tuple[LabeledAccount, ...]
    customers_before: int
    labels_unmatched: int
    undated: int

    @property
    def positives(self) -> int:
        """Accounts that converted in the horizon."""
        return sum(1 for a in self.accounts if a.converted)

    @property
    def negatives(self) -> int:
        """Accounts that did not."""
        return len(self.accounts) - self.positives


def label_accounts(
    results: Sequence[AccountResult], labels: Iterable[Label], *, start: datetime, end: datetime
) -> LabelMatch:
    """Label each account by its domain: converted in ``(start, end]`` is positive.

    An account converted at or before ``start`` is left out (a customer already); a conversion
    after ``end``, an explicit non-converter or no label is negative. A conversion with no date
    counts as positive (``undated`` says how many). Labels whose domain is no account's are
    counted in ``labels_unmatched``.
    """
    by_domain: dict[str, Label] = {label.domain: label for label in labels}
    domains = {result.account.domain for result in results}
    kept: list[LabeledAccount] = []
    before = undated = 0
    for result in sorted(results, key=lambda r: r.account.key):
        label = by_domain.get(result.account.domain)
        converted = label is not None and label.converted
        if label is not None and converted and label.converted_at is None:
            undated += 1
        elif label is not None and converted and label.converted_at is not None:
            if label.converted_at <= start:
                before += 1
                continue
            converted = label.converted_at <= end
        kept.append(LabeledAccount(result, converted))
    unmatched = sum(1 for domain in by_domain if domain not in domains)
    return LabelMatch(tuple(kept), before, unmatched, undated)


def _check_classes(match: LabelMatch, labels_read: int, minimum: int) -> None:
    if match.positives == 0 and match.labels_unmatched == labels_read and labels_read:
        raise CalibrationError(
            f"none of the {labels_read} labels matches a scored account's domain: check "
            "labels.domain_column and account_level"
        )
    if not match.positives or not match.negatives:
        only = "converted" if match.negatives == 0 else "did not convert"
        raise CalibrationError(
            f"every one of the {len(match.accounts)} accounts {only} in the horizon: "
            "calibration needs both converters and non-converters"
        )
    if match.positives < minimum or match.negatives < minimum:
        raise CalibrationError(
            f"too few labels: {match.positives} converted and {match.negatives} did not; "
            f"calibration needs at least {minimum} of each (a longer --horizon-days or more labels)"
        )


def _require_sklearn() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise CalibrationError(
            f"calibrate needs scikit-learn, which is not installed: {INSTALL_HINT}"
        ) from None


def feature_matrix(
    accounts: Sequence[LabeledAccount], metrics: Sequence[str], signals: Sequence[str]
) -> list[list[float]]:
    """One row per account: each metric (unknown as NaN, counts as log1p) then a 0/1 per signal.

    Counts are heavy-tailed: log1p keeps a few huge accounts from setting the scale.
    """
    rows = []
    for account in accounts:
        values = account.result.score.metrics
        fired = {s.name for s in account.result.score.signals}
        row = [_feature_value(values.get(name)) for name in metrics]
        row += [1.0 if name in fired else 0.0 for name in signals]
        rows.append(row)
    return rows


def _feature_value(value: float | None) -> float:
    if value is None or value != value:
        return math.nan
    return math.log1p(value) if value >= 0 else -math.log1p(-value)


def _pipeline(estimator: Any) -> Any:
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler(), estimator
    )


def _estimator(c: float | None, seed: int, folds: int) -> Any:
    """The standardized logistic regression with ``c``, or with C chosen from ``C_GRID`` by a
    ``folds``-fold inner cross-validation (``c`` None)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    # Newton-Cholesky: the same L2 objective as lbfgs, solved exactly and several times
    # faster on an accounts-by-few-features matrix (the nested grid fits ~200 models).
    pipeline = _pipeline(
        LogisticRegression(
            C=c or 1.0, class_weight=None, max_iter=MAX_ITER, solver="newton-cholesky"
        )
    )
    if c is not None:
        return pipeline
    inner = StratifiedKFold(folds, shuffle=True, random_state=seed + 1)
    grid = {"logisticregression__C": list(C_GRID)}
    return GridSearchCV(pipeline, grid, cv=inner, scoring="roc_auc")


def fit_logistic(
    name: str,
    rows: Sequence[Sequence[float]],
    labels: Sequence[bool],
    features: Sequence[str],
    *,
    c: float | None,
    seed: int,
    folds: int = 5,
    resamples: int = 0,
) -> FitResult:
    """A standardized logistic regression, cross-validated in ``folds`` stratified folds.

    ``c`` fixes the inverse regularization; ``None`` chooses it from ``C_GRID`` by an inner
    cross-validation (nested within each outer fold, so the CV AUC is not tuned on its own
    test folds).
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    y = [int(label) for label in labels]
    outer = StratifiedKFold(folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(
        _estimator(c, seed, folds), rows, y, cv=outer, method="predict_proba"
    )
    probabilities = [float(p[1]) for p in predicted]
    fold_aucs = tuple(
        auc([probabilities[i] for i in test], [labels[i] for i in test])
        for _train, test in outer.split(rows, y)
    )
    final = _estimator(c, seed, folds).fit(rows, y)
    best = final.best_estimator_ if c is None else final
    model = best[-1]
    chosen = float(model.C)
    return FitResult(
        name=name,
        c=chosen,
        cv_auc=auc(probabilities, labels),
        fold_aucs=fold_aucs,
        coefficients={f: float(w) for f, w in zip(features, model.coef_[0], strict=True)},
        intercept=float(model.intercept_[0]),
        lift_by_decile=lift_by_decile(probabilities, labels, resamples=resamples, seed=seed),
    )


def fit_linear(
    rows: Sequence[Sequence[float]],
    labels: Sequence[bool],
    *,
    seed: int,
    folds: int = 5,
    c: float | None = None,
) -> LinearFit:
    """The regularized logistic regression ``fit_logistic`` fits (with ``c`` None, C chosen
    by a ``folds``-fold cross-validation), fitted on every row, its coefficients brought back
    to the features' own scale. No cross-validated AUC: the caller validates what it builds."""
    fitted = _estimator(c, seed, folds).fit(rows, [int(label) for label in labels])
    pipeline = fitted if c is not None else fitted.best_estimator_
    scaler, model = pipeline[-2], pipeline[-1]
    coefficients = [float(w) / float(s) for w, s in zip(model.coef_[0], scaler.scale_, strict=True)]
    shift = sum(w * float(m) for w, m in zip(coefficients, scaler.mean_, strict=True))
    return LinearFit(tuple(coefficients), float(model.intercept_[0]) - shift, float(model.C))


def linear_fitter(*, seed: int, folds: int = 5, c: float | None = None) -> Fitter:
    """``fit_linear`` with its seed, folds and C fixed: the ``fit`` of ``propose_model``."""

    def fit(rows: Sequence[Sequence[float]], labels: Sequence[bool]) -> LinearFit:
        return fit_linear(rows, labels, seed=seed, folds=folds, c=c)

    return fit


def _read_labels(settings: Settings) -> LabelRead:
    from connectors.labels import read_labels

    if settings.labels is None:
        raise ConfigError(
            [
                ConfigIssue(
                    settings.config_path.name,
                    None,
                    "labels",
                    "no labels configured: add a labels: section (a warehouse table or a CSV "
                    "of domain, converted, converted_at) to calibrate against",
                )
            ]
        )
    if settings.labels.source in ("salesforce", "hubspot"):
        from connectors.crm_labels import read_crm_labels

        # No date filter: the backtest needs the conversions before its start date too, to
        # leave the accounts that were customers already out.
        return read_crm_labels(settings)
    return read_labels(settings.labels, engine_or_url=settings.warehouse.url)


@dataclass(frozen=True, slots=True)
class _Labelled:
    """What a backtest reads: the accounts scored at ``scored_at``, labelled."""

    match: LabelMatch
    read: LabelRead
    scored_at: datetime


def _labelled(
    settings: Settings,
    *,
    as_of: datetime,
    horizon_days: int,
    min_per_class: int,
    usage: UsageSource | None,
    label_read: LabelRead | None,
) -> _Labelled:
    """Score every account as of ``as_of - horizon_days`` and label it (see ``backtest``)."""
    if horizon_days <= 0:
        raise CalibrationError(f"the horizon must be at least one day, not {horizon_days}")
    if label_read is None and settings.labels is None:
        _read_labels(settings)  # raises the ConfigError
    _require_sklearn()
    scored_at = as_of - timedelta(days=horizon_days)
    if usage is None:
        from pls_sync.bootstrap import build_usage_source

        usage = build_usage_source(settings)
    results = score_all(usage, settings.scoring, {}, scored_at).results
    read = label_read if label_read is not None else _read_labels(settings)
    match = label_accounts(results, read.labels, start=scored_at, end=as_of)
    _check_classes(match, len(read.labels), min_per_class)
    return _Labelled(match, read, scored_at)


def backtest(
    settings: Settings,
    *,
    as_of: datetime,
    horizon_days: int = 60,
    seed: int = 0,
    resamples: int = 500,
    folds: int = 5,
    min_per_class: int = MIN_PER_CLASS,
    usage: UsageSource | None = None,
    label_read: LabelRead | None = None,
) -> CalibrationReport:
    """Score every account as of ``as_of - horizon_days``, label it by what it did until
    ``as_of``, and measure the score and two fitted logistic regressions.

    ``usage`` and ``label_read`` replace the configured warehouse and labels (tests). Raises
    ``ConfigError`` with no labels configured and ``CalibrationError`` (one line) without
    scikit-learn, with too few converters or non-converters, or with labels matching no account.
    """
    data = _labelled(
        settings,
        as_of=as_of,
        horizon_days=horizon_days,
        min_per_class=min_per_class,
        usage=usage,
        label_read=label_read,
    )
    return _report(
        settings, data.match, data.read, as_of, data.scored_at, horizon_days, seed, resamples, folds
    )


def propose(
    settings: Settings,
    *,
    as_of: datetime,
    horizon_days: int = 60,
    seed: int = 0,
    resamples: int = 500,
    folds: int = 5,
    target_precision: float | None = None,
    capacity: int | None = None,
    min_per_class: int = MIN_PER_CLASS,
    usage: UsageSource | None = None,
    label_read: LabelRead | None = None,
) -> CalibrationReport:
    """``backtest``, plus a scoring model fitted to the same labelled accounts
    (``report.proposal``, see ``pls_sync.model_proposal.propose_model``): its top tier chosen
    for ``target_precision`` or ``capacity`` (at most one; neither keeps the bounds).

    Raises what ``backtest`` raises, and ``CalibrationError`` for bad options.
    """
    check_options(target_precision, capacity)
    data = _labelled(
        settings,
        as_of=as_of,
        horizon_days=horizon_days,
        min_per_class=min_per_class,
        usage=usage,
        label_read=label_read,
    )
    report = _report(
        settings, data.match, data.read, as_of, data.scored_at, horizon_days, seed, resamples, folds
    )
    accounts = data.match.accounts
    proposal = propose_model(
        settings.scoring,
        [a.result.account for a in accounts],
        [a.converted for a in accounts],
        as_of=data.scored_at,
        fit=linear_fitter(seed=seed, folds=folds),
        target_precision=target_precision,
        capacity=capacity,
        folds=folds,
        seed=seed,
    )
    return dataclasses.replace(report, proposal=proposal)


def proposal_file(settings: Settings, report: CalibrationReport, *, generated_at: datetime) -> str:
    """The text of the proposed scoring file of ``report`` (from ``propose``), its header
    saying when, from which labels and horizon, the AUCs and what changed."""
    proposal = report.proposal
    if proposal is None:
        raise CalibrationError("no proposal to write: calibrate with --propose")
    context = [
        f"Generated {generated_at.isoformat(timespec='seconds')} from {_labels_text(settings)}:",
        f"accounts scored as of {report.scored_at.isoformat()}, converted in the "
        f"{report.horizon_days} days to {report.as_of.isoformat()}.",
    ]
    return render_scoring_yaml(proposal.model, header_lines(proposal, context))


def _labels_text(settings: Settings) -> str:
    labels = settings.labels
    if labels is None:
        return "the labels given"
    if labels.source == "warehouse":
        return f"the warehouse table {labels.table}"
    if labels.source == "file":
        return f"the file {labels.path}"
    if labels.source == "salesforce":
        return "Salesforce won Opportunities"
    return "HubSpot closed-won deals"


def _report(
    settings: Settings,
    match: LabelMatch,
    read: LabelRead,
    as_of: datetime,
    scored_at: datetime,
    horizon_days: int,
    seed: int,
    resamples: int,
    folds: int,
) -> CalibrationReport:
    model = settings.scoring
    accounts = match.accounts
    labels = [a.converted for a in accounts]
    scores = [float(a.result.score.score) for a in accounts]
    signal_names = tuple(s.name for s in model.signals)
    metrics = model_metrics(model)
    features = (*metrics, *(f"signal:{name}" for name in signal_names))
    rows = feature_matrix(accounts, metrics, signal_names)
    fits = {
        name: fit_logistic(name, rows, labels, features, c=c, seed=seed, folds=folds)
        for name, c in (("calibrated", None), ("baseline", BASELINE_C))
    }
    notes = (
        (f"{match.undated} conversions without a date counted as converted",)
        if match.undated
        else ()
    )
    return CalibrationReport(
        as_of=as_of,
        scored_at=scored_at,
        horizon_days=horizon_days,
        accounts=len(accounts),
        positives=match.positives,
        negatives=match.negatives,
        customers_before=match.customers_before,
        labels_read=len(read.labels),
        labels_unmatched=match.labels_unmatched,
        labels_skipped=dict(read.skipped),
        auc=auc(scores, labels),
        lift_by_decile=lift_by_decile(scores, labels, resamples=resamples, seed=seed),
        tier=tier_quality([a.result.score.tier for a in accounts], labels, _top_tier(model)),
        signal_rates=signal_rates(
            [[s.name for s in a.result.score.signals] for a in accounts], labels, signal_names
        ),
        features=features,
        fitted=fits["calibrated"],
        baseline=fits["baseline"],
        seed=seed,
        notes=notes,
    )


def _top_tier(model: Any) -> str:
    """The sales tier: the first qualified tier, else the highest."""
    names = [tier.name for tier in model.tiers]
    qualified = [name for name in names if name in model.qualified_tiers]
    return qualified[0] if qualified else names[0]
