"""``pls-sync validate`` against reality, and ``run`` refusing a mapping its CRM cannot take.

Every problem is reported like a static config check, ``file:line: key: message``, before
anything is written; the CLI is run in-process against the demo warehouse and the sandbox.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from pls_sync.sandbox.server import Sandbox
from tests.e2e.conftest import Workdir, copy_config
from tests.e2e.test_cli import HS_WRITE, SF_WRITE, line_of, writes


def problem_lines(output: str, needle: str) -> list[str]:
    """The report lines that mention ``needle``."""
    return [line.strip() for line in output.splitlines() if needle in line]


# --------------------------------------------------------------------------- schedule


def test_validate_shows_what_each_cron_expression_means(workdir: Workdir, crm: Sandbox) -> None:
    config = copy_config(workdir.root)
    text = config.read_text().replace('cron: "0 */4 * * *"', 'cron: "0 9 * * 1-5"')
    config.write_text(text)

    result = workdir.invoke("validate", config=config)

    assert result.exit_code == 0, result.output
    (line,) = problem_lines(result.output, "full_sync (0 9 * * 1-5)")
    times = re.findall(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{4}-\d\d-\d\d 09:00 UTC", line)
    assert len(times) == 3, line
    assert not {"Sat", "Sun"} & set(times), "1-5 is Monday to Friday"


# --------------------------------------------------------------------------- warehouse


def _missing_file(root: Path) -> str:
    return f"duckdb:///{root / 'nowhere.duckdb'}"


def _not_a_database(root: Path) -> str:
    path = root / "users.duckdb"
    path.write_text("user_id,email\n1,a@acme.com\n")
    return f"duckdb:///{path}"


def _empty_database(root: Path) -> str:
    path = root / "empty.duckdb"
    duckdb.connect(str(path)).close()
    return f"duckdb:///{path}"


def _closed_port(_root: Path) -> str:
    return "postgresql+psycopg://pqa:s3cretpw@127.0.0.1:1/warehouse"


def _unknown_dialect(_root: Path) -> str:
    return "warehousedb://pqa:s3cretpw@127.0.0.1/warehouse"


@pytest.mark.parametrize(
    ("make_url", "expected"),
    [
        (_missing_file, "not found"),
        (_not_a_database, "is not a DuckDB database file"),
        (_empty_database, "table 'users' not found"),
        (_closed_port, "127.0.0.1"),
        (_unknown_dialect, "warehousedb"),
    ],
)
def test_a_broken_warehouse_is_an_error_at_warehouse_url_with_a_next_step(
    workdir: Workdir,
    crm: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    make_url: object,
    expected: str,
) -> None:
    config = copy_config(workdir.root)
    monkeypatch.setenv("PLS_SYNC_WAREHOUSE_URL", make_url(workdir.root))  # type: ignore[operator]

    result = workdir.invoke("validate", config=config)

    assert result.exit_code == 2, result.output
    key = "warehouse.users_table" if expected.startswith("table") else "warehouse.url"
    line = line_of(config, "url: ${PLS_SYNC_WAREHOUSE_URL") if key == "warehouse.url" else None
    (problem,) = problem_lines(result.output, f": {key}: ")
    assert problem.startswith(f"{config}:{line or ''}"), problem
    assert expected in problem, problem
    assert "s3cretpw" not in result.output
    assert "Traceback" not in result.output
    assert "Fix the errors above" in result.output


def _custom_model(root: Path, config: Path, sql: str) -> None:
    (root / "config" / "pqa.sql").write_text(sql)
    config.write_text(config.read_text().replace("model: builtin", "model: pqa.sql"))


@pytest.mark.parametrize(
    ("sql", "expected", "key"),
    [
        ("SELECT domain, count(*) AS active_users_28d FRM users GROUP BY 1", "syntax", "model"),
        (
            "SELECT email AS mail, count(*) AS active_users_28d FROM users GROUP BY 1",
            "domain",
            "model",
        ),
    ],
)
def test_a_custom_model_that_cannot_run_is_an_error_at_warehouse_model(
    workdir: Workdir, crm: Sandbox, sql: str, expected: str, key: str
) -> None:
    config = copy_config(workdir.root)
    _custom_model(workdir.root, config, sql)

    result = workdir.invoke("validate", config=config)

    assert result.exit_code == 2, result.output
    (problem,) = problem_lines(result.output, f": warehouse.{key}: ")
    assert problem.startswith(f"{config}:{line_of(config, 'model: pqa.sql')}:"), problem
    assert expected in problem.lower(), problem


def test_a_custom_model_without_the_metrics_scoring_and_mappings_read_names_their_lines(
    workdir: Workdir, crm: Sandbox
) -> None:
    config = copy_config(workdir.root)
    sql = "SELECT split_part(email, '@', 2) AS domain, count(*) AS members FROM users GROUP BY 1"
    _custom_model(workdir.root, config, sql)
    scoring = workdir.root / "config" / "scoring.yaml"

    result = workdir.invoke("validate", config=config)

    assert result.exit_code == 2, result.output
    (problem,) = problem_lines(result.output, "components.volume.metrics[0]")
    assert problem.startswith(f"{scoring}:{line_of(scoring, 'metrics: [events_28d]')}:"), problem
    assert "returns no column 'events_28d'" in problem
    mapping = workdir.root / "mappings" / "salesforce.yaml"
    (field,) = problem_lines(result.output, "fields.PQA_Active_Users__c")
    assert field.startswith(f"{mapping}:{line_of(mapping, 'PQA_Active_Users__c')}:"), field


# --------------------------------------------------------------------------- event taxonomy


def test_a_mapped_event_never_seen_is_a_warning_on_its_line(workdir: Workdir, crm: Sandbox) -> None:
    config = copy_config(workdir.root)
    events = workdir.root / "config" / "events.yaml"
    events.write_text(re.sub(r"(\n\s+- )(\w+)", r"\1\2_typo", events.read_text(), count=1))
    typo = re.search(r"- (\w+_typo)", events.read_text())
    assert typo is not None

    result = workdir.invoke("validate", config=config)

    assert result.exit_code == 0, result.output
    (warning,) = problem_lines(result.output, f"'{typo[1]}' was not seen")
    assert warning.startswith(f"{events}:{line_of(events, typo[1])}: categories."), warning


def test_a_taxonomy_none_of_whose_names_occur_is_an_error(workdir: Workdir, crm: Sandbox) -> None:
    config = copy_config(workdir.root)
    events = workdir.root / "config" / "events.yaml"
    events.write_text(
        "categories:\n"
        "  legal_page_view: [read_the_terms]\n"
        "  pricing_page_view: [saw_prices]\n"
        "  core_feature: [made_a_board]\n"
    )

    result = workdir.invoke("validate", config=config)

    assert result.exit_code == 2, result.output
    (error,) = problem_lines(result.output, "every intent signal would be silent")
    assert error.startswith(f"{events}:"), error
    assert "the most frequent names are" in error


# --------------------------------------------------------------------------- live CRM schema


def test_a_domain_field_typo_is_found_with_a_suggestion(workdir: Workdir, crm: Sandbox) -> None:
    config = copy_config(workdir.root)
    mapping = workdir.root / "mappings" / "salesforce.yaml"
    mapping.write_text(mapping.read_text().replace("Domain__c]", "Domain_c]"))

    result = workdir.invoke("validate", config=config)

    assert result.exit_code == 2, result.output
    (problem,) = problem_lines(result.output, "match.domain_fields[1]")
    assert problem.startswith(f"{mapping}:{line_of(mapping, 'domain_fields:')}:"), problem
    assert "Domain__c" in problem
    assert writes(crm.counts()) == {}


def test_a_picklist_without_a_motion_value_fails_validate_and_is_not_written(
    workdir: Workdir, crm: Sandbox
) -> None:
    crm.salesforce.change_field(
        "Account", "PQA_Motion__c", picklist=["sales", "success", "self_serve"]
    )
    mapping = Path("mappings/salesforce.yaml")
    repo_mapping = Path(__file__).resolve().parents[2] / mapping

    checked = workdir.invoke("validate")

    assert checked.exit_code == 2, checked.output
    (problem,) = problem_lines(checked.output, "fields.PQA_Motion__c")
    assert f"salesforce.yaml:{line_of(repo_mapping, 'PQA_Motion__c:')}:" in problem, problem
    assert "abm" in problem

    result, summary = workdir.sync("run", summary="run.json")

    assert result.exit_code == 2, result.output
    salesforce = summary["destinations"]["salesforce"]
    assert salesforce["status"] == "invalid"
    assert any("fields.PQA_Motion__c" in issue for issue in salesforce["issues"])
    assert summary["destinations"]["hubspot"]["status"] == "succeeded"
    counts = writes(crm.counts())
    assert SF_WRITE not in counts and counts.get(HS_WRITE, 0) >= 1
    assert "Not written to salesforce" in result.output


# --------------------------------------------------------------------------- rep alerts


def test_rep_alerts_need_an_external_id_key_on_salesforce_tasks(
    workdir: Workdir, crm: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tasks are created by upsert on the alert key: a key field that is not an External ID
    fails validate on the config line that names it, before any task could be duplicated."""
    monkeypatch.setenv("PLS_SYNC_ALERTS_ENABLED", "true")
    channels = Path(__file__).resolve().parents[2] / "config" / "channels.yaml"

    checked = workdir.invoke("validate")
    assert checked.exit_code == 0, checked.output
    assert "salesforce: rep alerts are keyed by Task.PQA_Alert_Key__c" in checked.output
    assert "hubspot: rep alerts are keyed by tasks.pqa_alert_key" in checked.output

    crm.salesforce.change_field("Task", "PQA_Alert_Key__c", external_id=False)
    refused = workdir.invoke("validate")

    assert refused.exit_code == 2, refused.output
    (problem,) = problem_lines(refused.output, "alerts.salesforce_key_field")
    assert f"channels.yaml:{line_of(channels, 'salesforce_key_field:')}:" in problem, problem
    assert "not an External ID" in problem
    assert "`pls-sync setup -d salesforce` shows what it would create" in refused.output
