"""Calibration metrics on small hand-made cases with known answers, and the service's checks."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from pls_sync.calibrate_service import label_accounts
from pls_sync.calibration import (
    CalibrationError,
    CalibrationReport,
    SignalRate,
    TierQuality,
    auc,
    lift_by_decile,
    model_metrics,
    render_text,
    signal_rates,
    tier_quality,
)
from pls_sync.models import ProductAccount
from pls_sync.service import score_all
from tests.fakes import FakeUsage
from tests.unit.scoring_fixtures import default_model, signal_points_model

AS_OF = datetime(2024, 6, 3, tzinfo=UTC)


def test_auc_known_answers() -> None:
    assert auc([1, 2, 3, 4], [False, False, True, True]) == 1.0
    assert auc([4, 3, 2, 1], [False, False, True, True]) == 0.0
    assert auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75


def test_auc_counts_ties_as_half() -> None:
    assert auc([5, 5, 5, 5], [True, False, True, False]) == 0.5
    # One positive tied with one of two negatives, above the other: (1 + 0.5) / 2.
    assert auc([2, 2, 1], [True, False, False]) == 0.75


def test_auc_of_one_class_is_nan() -> None:
    assert math.isnan(auc([1, 2], [True, True]))


def test_lift_by_decile_known_answer() -> None:
    # 20 accounts, deciles of two; both converters in the top decile: rate 1.0 / 0.1 = lift 10.
    scores = list(range(20, 0, -1))
    labels = [True, True] + [False] * 18
    buckets = lift_by_decile(scores, labels, resamples=0)
    assert [b.decile for b in buckets] == list(range(1, 11))
    assert (buckets[0].accounts, buckets[0].converted, buckets[0].rate) == (2, 2, 1.0)
    assert buckets[0].lift == pytest.approx(10.0)
    assert all(b.lift == 0.0 for b in buckets[1:])
    assert buckets[0].low is None and buckets[0].high is None


def test_lift_sorts_by_score_not_input_order() -> None:
    scores = [1.0] * 18 + [9.0, 8.0]
    labels = [False] * 18 + [True, False]
    top = lift_by_decile(scores, labels, resamples=0)[0]
    assert (top.accounts, top.converted) == (2, 1)
    assert top.lift == pytest.approx(0.5 / 0.05)


def test_bootstrap_interval_is_seeded_and_brackets_the_lift() -> None:
    scores = list(range(100, 0, -1))
    labels = [i % 3 == 0 for i in range(100)]
    first = lift_by_decile(scores, labels, resamples=200, seed=3)
    again = lift_by_decile(scores, labels, resamples=200, seed=3)
    other = lift_by_decile(scores, labels, resamples=200, seed=4)
    assert first == again
    assert first != other
    for bucket in first:
        assert bucket.low is not None and bucket.high is not None
        assert bucket.low <= bucket.lift <= bucket.high


def test_tier_precision_and_recall() -> None:
    tiers = ["sales", "sales", "sales", "success", "self_serve", "self_serve"]
    labels = [True, True, False, True, False, False]
    assert tier_quality(tiers, labels, "sales") == TierQuality("sales", 3, 2, 2 / 3, 2 / 3)
    assert tier_quality(tiers, labels, "missing") == TierQuality("missing", 0, 0, None, 0.0)


def test_signal_rates_with_and_without() -> None:
    fired = [{"legal"}, {"legal", "admin"}, set(), {"admin"}, set()]
    labels = [True, False, True, False, False]
    legal, admin, never = signal_rates(fired, labels, ["legal", "admin", "never"])
    assert legal == SignalRate("legal", 2, 1, 3, 1)
    assert (legal.with_rate, legal.without_rate) == (0.5, pytest.approx(1 / 3))
    assert admin == SignalRate("admin", 2, 0, 3, 2)
    assert never.with_rate is None and never.without_rate == pytest.approx(0.4)


def test_model_metrics_lists_components_then_signal_conditions_once() -> None:
    names = model_metrics(signal_points_model())
    assert names[:5] == (
        "active_users_28d",
        "events_28d",
        "user_velocity",
        "event_velocity",
        "core_features_28d",
    )
    assert "legal_page_views_14d" in names and "new_users_7d" in names
    assert len(names) == len(set(names))


def test_model_metrics_lists_the_parts_of_a_sum_in_its_place() -> None:
    names = model_metrics(default_model())
    assert names[:6] == (
        "active_users_28d",
        "legal_page_views_14d",
        "admin_changes_28d",
        "pricing_page_views_14d",
        "enterprise_features_28d",
        "events_28d",
    )
    assert "buyer_intent" not in names and len(names) == len(set(names))


def _account(domain: str, users: float) -> ProductAccount:
    return ProductAccount(
        domain, domain, {"active_users_28d": users}, first_seen=AS_OF - timedelta(days=400)
    )


def test_label_accounts_windows_customers_and_unmatched() -> None:
    from connectors.labels import Label

    start, end = AS_OF - timedelta(days=60), AS_OF
    accounts = [_account(d, 3) for d in ("a.com", "b.com", "c.com", "d.com", "e.com")]
    results = score_all(FakeUsage(accounts), default_model(), {}, start).results
    labels = [
        Label("a.com", True, start + timedelta(days=1)),  # in the window
        Label("b.com", True, start),  # at the scoring date: a customer already
        Label("c.com", True, end + timedelta(days=1)),  # later: negative
        Label("d.com", False, None),  # explicit non-converter
        Label("e.com", True, None),  # no date: counted as converted
        Label("nowhere.com", True, end),
    ]
    match = label_accounts(results, labels, start=start, end=end)
    outcome = {a.result.account.key: a.converted for a in match.accounts}
    assert outcome == {"a.com": True, "c.com": False, "d.com": False, "e.com": True}
    assert (match.customers_before, match.labels_unmatched, match.undated) == (1, 1, 1)


def _report() -> CalibrationReport:
    scores = [float(s) for s in range(40, 0, -1)]
    labels = [i % 4 == 0 for i in range(40)]
    return CalibrationReport(
        as_of=AS_OF,
        scored_at=AS_OF - timedelta(days=60),
        horizon_days=60,
        accounts=40,
        positives=10,
        negatives=30,
        customers_before=2,
        labels_read=14,
        labels_unmatched=2,
        labels_skipped={"free_mail": 1},
        auc=auc(scores, labels),
        lift_by_decile=lift_by_decile(scores, labels, resamples=50),
        tier=tier_quality(["sales"] * 4 + ["self_serve"] * 36, labels, "sales"),
        signal_rates=signal_rates([{"legal"}] * 10 + [set()] * 30, labels, ["legal"]),
    )


def test_as_dict_is_json_and_what_the_report_page_reads() -> None:
    from pls_sync.report_page import ReportData, render_report

    data = _report().as_dict()
    json.dumps(data, allow_nan=False)
    assert data["lift_by_decile"][0].keys() >= {"decile", "rate", "lift", "low", "high"}
    assert data["signal_rates"]["legal"]["with"] == pytest.approx(0.3)
    page = render_report(ReportData(generated_at=AS_OF, calibration=data))
    assert 'id="lift"' in page and 'id="signal-rates"' in page


def test_render_text_names_the_figures() -> None:
    report = _report()
    text = "\n".join(render_text(report))
    assert f"Score AUC: {report.auc:.3f}" in text
    assert "Tier sales: 4 accounts, 1 converted" in text
    assert "legal" in text


def test_calibration_error_is_a_pls_sync_error() -> None:
    from pls_sync.errors import PlsSyncError

    assert issubclass(CalibrationError, PlsSyncError)
