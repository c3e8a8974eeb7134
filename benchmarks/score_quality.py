"""How well scores rank buyers: the old default, the shipped default, calibrate's fit, a plain LR.

Run from the repository root (scikit-learn needed: ``pip install -e '.[calibrate]'``)::

    python benchmarks/score_quality.py [--seed 11] [--accounts 4000]

Two data sets:

* **labelled**: ``tests/labelled_accounts.py``, a seeded set built directly as product accounts,
  independent of the demo (a latent intent drives usage and conversion; prosumers, noise,
  young accounts and subsidiaries as traps).
* **demo**: the demo warehouse's backtest (``pls-sync calibrate`` on a fresh demo), the
  accounts scored 60 days before its as-of and labelled by the conversions that followed.

For each: the AUC and top-decile lift of the score before issue 15
(``tests/data/scoring_before_issue15.yaml``), of the shipped ``config/scoring.yaml``, and the
cross-validated AUC of calibrate's regularized fit and of a logistic regression with C=1 on the
same features. Figures print; nothing is asserted (``tests/unit/test_score_quality.py`` holds
the issue's criteria).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pls_sync.calibrate_service import backtest, feature_matrix, fit_logistic  # noqa: E402
from pls_sync.calibration import auc, lift_by_decile, model_metrics  # noqa: E402
from pls_sync.config import Settings, load_settings  # noqa: E402
from pls_sync.scoring import ScoringModel, score_account  # noqa: E402
from tests.labelled_accounts import labelled_accounts  # noqa: E402

OLD_SCORING = ROOT / "tests" / "data" / "scoring_before_issue15.yaml"
AS_OF = datetime(2026, 6, 1, tzinfo=UTC)


def settings_with(scoring: Path, folder: Path, env: dict[str, str]) -> Settings:
    """The shipped config, with ``scoring`` as its scoring file."""
    config = folder / "config"
    if config.exists():
        shutil.rmtree(config)
    shutil.copytree(ROOT / "config", config)
    if not (folder / "mappings").exists():
        shutil.copytree(ROOT / "mappings", folder / "mappings")
    shutil.copy(scoring, config / "scoring.yaml")
    return load_settings(config / "pls_sync.yaml", env=env)


def labelled_figures(models: dict[str, ScoringModel], seed: int, count: int) -> None:
    """AUC of each model and of the two fits on the seeded labelled set."""
    data = labelled_accounts(seed, count, AS_OF)
    labels = data.converted
    print(f"labelled set: seed {seed}, {count} accounts, {sum(labels)} converted")
    for name, model in models.items():
        scores = [score_account(a, model, AS_OF) for a in data.accounts]
        values = [float(s.score) for s in scores]
        top = max(values)
        ties = sum(v == top for v in values)
        lift = lift_by_decile(values, labels, resamples=0)[0].lift
        print(
            f"  {name:<18} AUC {auc(values, labels):.3f}  top-decile lift {lift:.2f}  "
            f"top score {top:.0f} held by {ties}"
        )
        if name == "new default":
            metrics = model_metrics(model)
            signals = [signal.name for signal in model.signals]
            features = [*metrics, *(f"signal:{name}" for name in signals)]
            wrapped = [SimpleNamespace(result=SimpleNamespace(score=s)) for s in scores]
            rows = feature_matrix(wrapped, metrics, signals)  # type: ignore[arg-type]
            for fit_name, c in (("calibrated", None), ("baseline LR", 1.0)):
                fit = fit_logistic(fit_name, rows, labels, features, c=c, seed=seed)
                print(f"  {fit_name:<18} CV AUC {fit.cv_auc:.3f}  (C={fit.c:g})")


def demo_figures(folder: Path) -> None:
    """The demo's backtest with each model."""
    from connectors.demo_warehouse import generate_demo_warehouse, read_demo_as_of

    warehouse = folder / "demo.duckdb"
    generate_demo_warehouse(warehouse, seed=7, companies=400)
    as_of = read_demo_as_of(warehouse)
    env = {"PLS_SYNC_WAREHOUSE_URL": f"duckdb:///{warehouse}"}
    for name, scoring in (
        ("old default", OLD_SCORING),
        ("new default", ROOT / "config" / "scoring.yaml"),
    ):
        report = backtest(settings_with(scoring, folder, env), as_of=as_of, resamples=0)
        line = f"  {name:<18} AUC {report.auc:.3f}  top-decile lift {report.lift_by_decile[0].lift:.2f}"
        print(line)
        if name == "new default":
            for fit in (report.fitted, report.baseline):
                if fit is not None:
                    print(f"  {fit.name:<18} CV AUC {fit.cv_auc:.3f}  (C={fit.c:g})")


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--accounts", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {"PLS_SYNC_WAREHOUSE_URL": "duckdb:///unused.duckdb"}
        models = {
            "old default": settings_with(OLD_SCORING, folder, env).scoring,
            "new default": settings_with(ROOT / "config" / "scoring.yaml", folder, env).scoring,
        }
        labelled_figures(models, args.seed, args.accounts)
        print("demo backtest: seed 7, 400 companies")
        demo_figures(folder)


if __name__ == "__main__":
    main()
