"""End-to-end fixtures: a small demo warehouse per session, a working folder per test, the
CRM sandbox seeded with the same companies, and a helper that runs ``pls-sync`` in-process."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner, Result

from pls_sync import cli
from pls_sync.sandbox.server import Sandbox

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = REPO_ROOT / "config" / "pls_sync.yaml"
DEMO_SEED = 7
DEMO_COMPANIES = 120
WIDE = 240  # Rich wraps at 80 columns off a terminal; wide output keeps table rows on one line


@dataclass(slots=True)
class Workdir:
    """A test's working folder with a copy of the demo warehouse, and the CLI to run there."""

    root: Path
    warehouse: Path
    state: Path
    as_of: datetime
    runner: CliRunner

    @property
    def as_of_arg(self) -> str:
        """The demo data's as-of time, as ``--as-of`` takes it."""
        return self.as_of.isoformat()

    @property
    def state_url(self) -> str:
        """The SQLAlchemy URL of this test's state store."""
        return f"sqlite:///{self.state}"

    def invoke(self, *args: str, config: Path = CONFIG) -> Result:
        """``pls-sync <args> --config <config>`` in-process; a crash (not an exit) re-raises."""
        result = self.runner.invoke(cli.app, [*args, "--config", str(config)])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    def sync(
        self, command: str, *extra: str, summary: str, config: Path = CONFIG
    ) -> tuple[Result, dict[str, Any]]:
        """``run`` or ``plan`` at the demo's as-of, with the summary JSON loaded."""
        result = self.invoke(
            command, "--as-of", self.as_of_arg, "--summary-json", summary, *extra, config=config
        )
        path = self.root / summary
        data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        return result, data


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, datetime]:
    """One demo warehouse (the generator ``pls-sync demo`` uses) for the whole session."""
    from connectors.demo_warehouse import generate_demo_warehouse, read_demo_as_of

    path = tmp_path_factory.mktemp("demo-template") / "demo.duckdb"
    generate_demo_warehouse(path, seed=DEMO_SEED, companies=DEMO_COMPANIES)
    return path, read_demo_as_of(path)


@pytest.fixture(autouse=True)
def _quiet_structlog_after() -> Iterator[None]:
    """The CLI binds structlog to CliRunner's stream, which closes after each invoke."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def workdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, demo_template: tuple[Path, datetime]
) -> Workdir:
    """CWD: a fresh folder whose ``.pls-sync/demo.duckdb`` copies the session's warehouse."""
    template, as_of = demo_template
    monkeypatch.chdir(tmp_path)
    warehouse = tmp_path / ".pls-sync" / "demo.duckdb"
    warehouse.parent.mkdir()
    shutil.copyfile(template, warehouse)
    monkeypatch.setattr(cli.console, "_width", WIDE)
    monkeypatch.setattr(cli.err_console, "_width", WIDE)
    return Workdir(tmp_path, warehouse, tmp_path / "state.sqlite", as_of, CliRunner())


@pytest.fixture
def crm(workdir: Workdir, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The CRM sandbox seeded with the demo companies, and the environment pointing at it."""
    from pls_sync.demo_companies import demo_companies

    box = Sandbox(port=0, seed=DEMO_SEED, companies=demo_companies(DEMO_SEED, DEMO_COMPANIES))
    box.start()
    point_at(box, workdir, monkeypatch)
    try:
        yield box
    finally:
        box.stop()


def point_at(box: Sandbox, workdir: Workdir, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment a run needs: both CRMs at ``box``, the test's warehouse and state."""
    env = {
        "SALESFORCE_INSTANCE_URL": box.url,
        "SALESFORCE_SESSION_ID": box.session_id,
        "HUBSPOT_BASE_URL": box.url,
        "HUBSPOT_ACCESS_TOKEN": box.hubspot_token,
        "PLS_SYNC_HUBSPOT_ENABLED": "true",
        "PLS_SYNC_WAREHOUSE_URL": f"duckdb:///{workdir.warehouse}",
        "PLS_SYNC_STATE_URL": workdir.state_url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def copy_config(root: Path) -> Path:
    """Copy ``config/`` and ``mappings/`` under ``root`` (relative paths keep working); return
    the main config file of the copy."""
    shutil.copytree(REPO_ROOT / "config", root / "config")
    shutil.copytree(REPO_ROOT / "mappings", root / "mappings")
    return root / "config" / "pls_sync.yaml"
