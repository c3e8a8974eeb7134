"""``calibrate``'s backtest on the demo warehouse: it finds the converters, the score ranks them,
the fitted models are sane and reproducible, and bad inputs end in one clear error."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from connectors.labels import Label, LabelRead
from pls_sync.calibrate_service import INSTALL_HINT, backtest
from pls_sync.calibration import CalibrationError
from pls_sync.config import Settings, load_settings
from pls_sync.errors import ConfigError
from pls_sync.models import ProductAccount
from tests.e2e.conftest import CONFIG, copy_config
from tests.fakes import FakeUsage

COMPANIES = 400
RESAMPLES = 100


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime]:
    """A 400-company demo warehouse, with conversions before, in and after the horizon."""
    from connectors.demo_warehouse import generate_demo_warehouse, read_demo_as_of

    path = tmp_path_factory.mktemp("calibration") / "demo.duckdb"
    generate_demo_warehouse(path, seed=7, companies=COMPANIES)
    return path, read_demo_as_of(path)


@pytest.fixture
def settings(demo: tuple[Path, datetime], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shipped config, pointed at the demo warehouse."""
    monkeypatch.setenv("PLS_SYNC_WAREHOUSE_URL", f"duckdb:///{demo[0]}")
    return load_settings(CONFIG)


def test_backtest_on_the_demo_ranks_converters_and_is_reproducible(
    settings: Settings, demo: tuple[Path, datetime]
) -> None:
    as_of = demo[1]
    report = backtest(settings, as_of=as_of, seed=11, resamples=RESAMPLES)

    assert report.scored_at == as_of - timedelta(days=60)
    assert report.positives >= 20 and report.negatives > report.positives
    assert report.customers_before > 0
    assert report.labels_unmatched > 0  # accounts that did not exist yet at the scoring date
    assert report.auc > 0.6
    assert report.lift_by_decile[0].lift > 2.0
    assert report.tier.tier == "sales" and report.tier.accounts > 0
    assert report.fitted is not None and report.baseline is not None
    assert 0.6 < report.fitted.cv_auc < 0.98
    assert 0.6 < report.baseline.cv_auc < 0.98
    assert report.baseline.c == 1.0
    assert set(report.fitted.coefficients) == set(report.features)
    assert "signal:legal_page_view" in report.features

    again = backtest(settings, as_of=as_of, seed=11, resamples=RESAMPLES)
    assert again.as_dict() == report.as_dict()


def test_no_labels_configured_is_a_config_error(
    settings: Settings, demo: tuple[Path, datetime]
) -> None:
    with pytest.raises(ConfigError, match="labels: no labels configured"):
        backtest(dataclasses.replace(settings, labels=None), as_of=demo[1])


def test_too_few_labels_says_how_many(settings: Settings, demo: tuple[Path, datetime]) -> None:
    with pytest.raises(CalibrationError, match=r"too few labels: \d+ converted"):
        backtest(settings, as_of=demo[1], min_per_class=1000)


def test_missing_scikit_learn_says_how_to_install(
    settings: Settings, demo: tuple[Path, datetime], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(CalibrationError, match=INSTALL_HINT.replace("[", r"\[")):
        backtest(settings, as_of=demo[1])


def _usage(as_of: datetime, count: int) -> FakeUsage:
    first_seen = as_of - timedelta(days=400)
    return FakeUsage(
        ProductAccount(f"c{i}.com", f"c{i}.com", {"active_users_28d": i % 9}, first_seen)
        for i in range(count)
    )


def test_labels_matching_no_account(settings: Settings, demo: tuple[Path, datetime]) -> None:
    as_of = demo[1]
    labels = LabelRead([Label(f"elsewhere{i}.com", True, as_of) for i in range(12)])
    with pytest.raises(CalibrationError, match="none of the 12 labels matches"):
        backtest(settings, as_of=as_of, usage=_usage(as_of, 30), label_read=labels)


def test_one_class_only(settings: Settings, demo: tuple[Path, datetime]) -> None:
    as_of = demo[1]
    labels = LabelRead([Label(f"c{i}.com", True, as_of) for i in range(30)])
    with pytest.raises(CalibrationError, match="every one of the 30 accounts converted"):
        backtest(settings, as_of=as_of, usage=_usage(as_of, 30), label_read=labels)


def test_the_calibrate_command_prints_the_backtest_and_the_report_charts_it(
    demo: tuple[Path, datetime], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from pls_sync import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLS_SYNC_WAREHOUSE_URL", f"duckdb:///{demo[0]}")
    monkeypatch.setenv("PLS_SYNC_STATE_URL", f"sqlite:///{tmp_path / 'state.sqlite'}")
    runner = CliRunner()
    as_of = demo[1].isoformat()

    calibrated = runner.invoke(
        cli.app, ["calibrate", "--config", str(CONFIG), "--as-of", as_of, "--json", "c.json"]
    )
    assert calibrated.exit_code == 0, calibrated.output
    assert "AUC" in calibrated.output and (tmp_path / "c.json").is_file()

    # The report shows the calibration even before any run.
    reported = runner.invoke(cli.app, ["report", "--config", str(CONFIG), "-o", "r.html"])
    assert reported.exit_code == 0, reported.output
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'id="lift"' in page and "Backtest AUC of the score" in page

    refused = runner.invoke(
        cli.app, ["calibrate", "--config", str(CONFIG), "--as-of", "2001-01-01"]
    )
    assert refused.exit_code == 1 and "Calibration failed" in refused.output
    assert "Traceback" not in refused.output


def test_calibrate_proposes_a_scoring_file_that_validates(
    demo: tuple[Path, datetime], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from pls_sync import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PLS_SYNC_WAREHOUSE_URL", f"duckdb:///{demo[0]}")
    monkeypatch.setenv("PLS_SYNC_STATE_URL", f"sqlite:///{tmp_path / 'state.sqlite'}")
    main = copy_config(tmp_path)
    runner = CliRunner()
    calibrate = ["calibrate", "--config", str(main), "--as-of", demo[1].isoformat()]

    proposed = runner.invoke(cli.app, [*calibrate, "--propose", "out.yaml", "--capacity", "20"])
    assert proposed.exit_code == 0, proposed.output
    assert "Proposed model: cross-validated AUC" in proposed.output
    assert f"diff -u {main.parent / 'scoring.yaml'} out.yaml" in proposed.output
    text = (tmp_path / "out.yaml").read_text(encoding="utf-8")
    assert text.startswith("# PQA scoring model proposed by `pls-sync calibrate --propose`")
    assert "from the warehouse table conversions" in text

    shutil.copy(tmp_path / "out.yaml", main.parent / "out.yaml")
    config = main.read_text(encoding="utf-8")
    main.write_text(config.replace("scoring: scoring.yaml", "scoring: out.yaml"), encoding="utf-8")
    validated = runner.invoke(
        cli.app, ["validate", "--config", str(main), "--as-of", demo[1].isoformat()]
    )
    assert validated.exit_code == 0, validated.output
    in_sales = load_settings(main).scoring.tiers[0]
    assert in_sales.name == "sales" and in_sales.min_score != 80  # chosen for the capacity


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--propose", "config/scoring.yaml"], "is the scoring file the config uses"),
        (["--propose", "p.yaml", "--capacity", "5", "--target-precision", "0.5"], "exclude"),
        (["--capacity", "5"], "add --propose PATH"),
        (["--propose", "p.yaml", "--target-precision", "0"], "above 0 and at most 1, not 0"),
    ],
)
def test_calibrate_refuses_bad_proposal_options_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arguments: list[str], says: str
) -> None:
    from typer.testing import CliRunner

    from pls_sync import cli

    monkeypatch.chdir(tmp_path)
    main = copy_config(tmp_path)
    result = CliRunner().invoke(cli.app, ["calibrate", "--config", str(main), *arguments])
    assert result.exit_code == 2, result.output
    assert says in result.output and "Traceback" not in result.output
    assert not (tmp_path / "p.yaml").exists()
