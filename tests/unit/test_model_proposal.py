"""``propose_model`` on the seeded labelled accounts: the proposal ranks as well as the fits,
weighs only what predicts, sets tier bounds that do what was asked, and its scoring file loads
back into the same model."""

from __future__ import annotations

import dataclasses
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from pls_sync.calibrate_service import feature_matrix, fit_logistic, linear_fitter
from pls_sync.calibration import model_metrics
from pls_sync.config import load_settings
from pls_sync.errors import PlsSyncError
from pls_sync.model_proposal import (
    Proposal,
    header_lines,
    propose_model,
    render_scoring_yaml,
)
from pls_sync.models import ProductAccount
from pls_sync.scoring import (
    Component,
    Condition,
    ConditionGroup,
    ScoringModel,
    Signal,
    score_account,
)
from tests.labelled_accounts import LabelledSet, labelled_accounts

pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[2]
AS_OF = datetime(2026, 6, 1, tzinfo=UTC)
SEED = 11
COUNT = 4000
CAPACITY = 20
ENV = {"PLS_SYNC_WAREHOUSE_URL": "duckdb:///unused.duckdb"}
# A plain logistic regression (C fixed, no grid): the proposal's tier and shape tests do not
# need the regularization chosen, only a fit.
QUICK = linear_fitter(seed=0, c=1.0)


def config_copy(folder: Path) -> Path:
    """The shipped ``config/`` and ``mappings/`` under ``folder``; the main file's path."""
    shutil.copytree(ROOT / "config", folder / "config")
    shutil.copytree(ROOT / "mappings", folder / "mappings")
    return folder / "config" / "pls_sync.yaml"


@pytest.fixture(scope="module")
def current(tmp_path_factory: pytest.TempPathFactory) -> ScoringModel:
    """The shipped scoring model, as the config loader builds it."""
    return load_settings(config_copy(tmp_path_factory.mktemp("shipped")), env=ENV).scoring


@pytest.fixture(scope="module")
def data() -> LabelledSet:
    """The seeded labelled accounts."""
    return labelled_accounts(SEED, COUNT, AS_OF)


@pytest.fixture(scope="module")
def proposal(current: ScoringModel, data: LabelledSet) -> Proposal:
    """The proposal with C chosen by cross-validation and the sales tier for a capacity."""
    return propose_model(
        current,
        data.accounts,
        data.converted,
        as_of=AS_OF,
        fit=linear_fitter(seed=0),
        capacity=CAPACITY,
    )


def plain_logistic_auc(model: ScoringModel, data: LabelledSet) -> float:
    """The cross-validated AUC of a logistic regression (C=1) on the model's inputs."""
    scores = [score_account(account, model, AS_OF) for account in data.accounts]
    metrics = model_metrics(model)
    signals = [signal.name for signal in model.signals]
    wrapped = [SimpleNamespace(result=SimpleNamespace(score=score)) for score in scores]
    rows = feature_matrix(wrapped, metrics, signals)  # type: ignore[arg-type]
    features = [*metrics, *(f"signal:{name}" for name in signals)]
    return fit_logistic("plain", rows, data.converted, features, c=1.0, seed=0).cv_auc


def tier_of(model: ScoringModel, data: LabelledSet, tier: str) -> list[bool]:
    """Whether each account converted, for the accounts ``model`` puts in ``tier``."""
    return [
        converted
        for account, converted in zip(data.accounts, data.converted, strict=True)
        if score_account(account, model, AS_OF).tier == tier
    ]


def test_the_proposal_ranks_as_well_as_the_current_model_and_a_plain_fit(
    proposal: Proposal, current: ScoringModel, data: LabelledSet
) -> None:
    assert len(proposal.fold_aucs) == 5
    assert proposal.cv_auc == pytest.approx(sum(proposal.fold_aucs) / 5)
    assert proposal.cv_auc >= proposal.current_auc - 0.01
    assert abs(proposal.cv_auc - plain_logistic_auc(current, data)) <= 0.02
    weights = [component.weight for component in proposal.model.components]
    assert sum(weights) == pytest.approx(1.0, abs=1e-9)
    assert all(round(w * 100, 6).is_integer() for w in weights)
    assert all((2 * signal.points).is_integer() for signal in proposal.model.signals)
    # Only the four fitted things changed.
    unchanged = ("ratios", "sums", "hysteresis", "saturate_above", "guarded_tiers")
    for name in unchanged:
        assert getattr(proposal.model, name) == getattr(current, name)
    for old, new in zip(current.components, proposal.model.components, strict=True):
        assert (old.name, old.metrics, old.label) == (new.name, new.metrics, new.label)
        assert [x for x, _ in old.curve] == [x for x, _ in new.curve]
        ys = [y for _, y in new.curve]
        assert ys == sorted(ys) and ys[0] == 0 and ys[-1] in (0, 100)


def test_capacity_puts_at_most_that_many_accounts_in_sales(
    proposal: Proposal, data: LabelledSet
) -> None:
    in_sales = tier_of(proposal.model, data, "sales")
    assert 0 < len(in_sales) <= CAPACITY
    sales = proposal.tiers[0]
    assert (sales.tier, sales.accounts, sales.converted) == ("sales", len(in_sales), sum(in_sales))
    assert any(line.startswith("tiers.sales: 80 -> ") for line in proposal.changes)
    bounds = [tier.min_score for tier in proposal.model.tiers]
    assert bounds[0] > bounds[1] > bounds[2] == 0


def test_a_target_precision_is_reached_on_the_accounts(
    current: ScoringModel, data: LabelledSet
) -> None:
    proposed = propose_model(
        current, data.accounts, data.converted, as_of=AS_OF, fit=QUICK, target_precision=0.5
    )
    in_sales = tier_of(proposed.model, data, "sales")
    assert in_sales and sum(in_sales) / len(in_sales) >= 0.5
    assert proposed.tiers[0].precision == sum(in_sales) / len(in_sales)
    # The second tier's own accounts convert at least twice as often as all accounts.
    in_success = tier_of(proposed.model, data, "success")
    overall = sum(data.converted) / len(data.converted)
    assert in_success and sum(in_success) / len(in_success) >= 2 * overall


def test_a_component_that_predicts_nothing_gets_no_weight(
    current: ScoringModel, data: LabelledSet
) -> None:
    rng = random.Random(5)
    accounts = [
        dataclasses.replace(a, metrics={**a.metrics, "coffee_breaks_28d": rng.uniform(0, 50)})
        for a in data.accounts
    ]
    noise = Component("coffee", 0.2, ("coffee_breaks_28d",), ((0.0, 0.0), (50.0, 100.0)))
    model = dataclasses.replace(current, components=(*current.components, noise))
    proposed = propose_model(model, accounts, data.converted, as_of=AS_OF, fit=QUICK)
    assert proposed.model.components[-1].weight <= 0.02
    assert proposed.model.tiers == current.tiers  # neither a target nor a capacity


def test_the_scoring_file_loads_back_into_the_same_model(
    proposal: Proposal, tmp_path: Path
) -> None:
    main = config_copy(tmp_path)
    text = render_scoring_yaml(proposal.model, header_lines(proposal, ["from the test"]))
    (main.parent / "scoring.yaml").write_text(text, encoding="utf-8")

    assert load_settings(main, env=ENV).scoring == proposal.model
    assert text.startswith("# PQA scoring model proposed by `pls-sync calibrate --propose`")
    assert "# from the test\n" in text
    assert all(f"#   {change}\n" in text for change in proposal.changes)
    keys = [line.split(":")[0] for line in text.splitlines() if line[:1].isalpha()]
    assert keys == [
        "ratios",
        "sums",
        "components",
        "signals",
        "tiers",
        "hysteresis",
        "saturate_above",
        "qualified_tiers",
        "guards",
    ]


def test_awkward_values_round_trip(current: ScoringModel, tmp_path: Path) -> None:
    spike = ConditionGroup(
        "all",
        (
            Condition("new_users_7d", ">=", 1e-07),
            ConditionGroup(
                "any", (Condition("user_velocity", ">", 2.5), Condition("events_7d", "!=", -3.0))
            ),
        ),
    )
    model = dataclasses.replace(
        current,
        signals=(
            *current.signals,
            Signal("priced", spike, -1.5, 'Costs $5: "{new_users_7d:.0f}" new, café'),
        ),
        saturate_above=None,
        hysteresis=2.25,
    )
    main = config_copy(tmp_path)
    (main.parent / "scoring.yaml").write_text(render_scoring_yaml(model, ["x"]), encoding="utf-8")

    assert load_settings(main, env=ENV).scoring == model


def _accounts(count: int) -> list[ProductAccount]:
    first_seen = datetime(2025, 1, 1, tzinfo=UTC)
    return [
        ProductAccount(f"c{i}.com", f"c{i}.com", {"active_users_28d": float(i % 9)}, first_seen)
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target_precision": 0.0}, "target precision is a share above 0 and at most 1, not 0"),
        ({"target_precision": 1.2}, "at most 1, not 1.2"),
        ({"capacity": 0}, "capacity must be at least 1 account, not 0"),
        ({"capacity": 5, "target_precision": 0.5}, "not both"),
    ],
)
def test_bad_options_are_one_clear_error(
    current: ScoringModel, options: dict[str, float], message: str
) -> None:
    labels = [i % 2 == 0 for i in range(40)]
    with pytest.raises(PlsSyncError, match=message):
        propose_model(current, _accounts(40), labels, as_of=AS_OF, fit=QUICK, **options)  # type: ignore[arg-type]


def test_one_class_or_too_few_labels_is_one_clear_error(current: ScoringModel) -> None:
    with pytest.raises(PlsSyncError, match="every one of the 40 accounts converted"):
        propose_model(current, _accounts(40), [True] * 40, as_of=AS_OF, fit=QUICK)
    with pytest.raises(PlsSyncError, match="too few labels to cross-validate"):
        labels = [i < 3 for i in range(40)]
        propose_model(current, _accounts(40), labels, as_of=AS_OF, fit=QUICK)
    with pytest.raises(PlsSyncError, match="40 accounts but 2 labels"):
        propose_model(current, _accounts(40), [True, False], as_of=AS_OF, fit=QUICK)


def test_large_fitted_points_lower_the_knee_so_the_top_keeps_its_order() -> None:
    from pls_sync.model_proposal import _prepare, _spread_the_top

    rng = random.Random(3)
    model = ScoringModel(
        components=(Component("x", 1.0, ("x",), ((0, 0), (100, 100)), ""),),
        signals=(Signal("big", Condition("flag", ">=", 1), 90.0, "flag"),),
        saturate_above=80.0,
    )
    accounts = [
        ProductAccount(
            f"a{i}.com", f"a{i}.com", {"x": rng.uniform(0, 100), "flag": float(i % 5 == 0)}
        )
        for i in range(1000)
    ]
    labels = [i % 7 == 0 for i in range(1000)]
    prepared, _scores = _prepare(model, accounts, labels, AS_OF)

    def top_share(candidate: ScoringModel) -> float:
        scores = [score_account(a, candidate, AS_OF).score for a in accounts]
        return scores.count(max(scores)) / len(scores)

    assert top_share(model) > 0.01
    spread, notes = _spread_the_top(model, prepared, AS_OF)
    assert spread.saturate_above is not None and spread.saturate_above < 80
    assert top_share(spread) <= 0.01
    assert notes and "saturate_above lowered" in notes[0]
    # No account overtakes another: a higher old score never gets a lower new one.
    by_old: dict[int, list[int]] = {}
    for a in accounts:
        by_old.setdefault(score_account(a, model, AS_OF).score, []).append(
            score_account(a, spread, AS_OF).score
        )
    groups = [by_old[key] for key in sorted(by_old)]
    assert all(max(low) <= min(high) for low, high in zip(groups, groups[1:], strict=False))
    unchanged, none = _spread_the_top(spread, prepared, AS_OF)
    assert unchanged is spread and none == []
