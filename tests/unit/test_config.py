"""Configuration: the real files load, and every bad input names its file, line and key."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pls_sync.config import BUILTIN_METRICS, Settings, builtin_metric_names, load_settings
from pls_sync.config_yaml import Interpolator, load_document
from pls_sync.errors import ConfigError, ConfigIssue
from pls_sync.scoring import Condition, ConditionGroup

REPO = Path(__file__).resolve().parents[2]
CASES = Path(__file__).resolve().parent / "config_cases"


# --------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A copy of the repo's config/ and mappings/ under tmp_path; returns the main file."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "mappings", tmp_path / "mappings")
    return tmp_path / "config" / "pls_sync.yaml"


def edit(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of ``old`` in ``path`` with ``new``."""
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def line_of(path: Path, needle: str, *, start: bool = False) -> int:
    """The 1-based number of the one line of ``path`` holding (or starting with) ``needle``."""
    lines = [
        n
        for n, text in enumerate(path.read_text().splitlines(), 1)
        if (text.startswith(needle) if start else needle in text)
    ]
    assert len(lines) == 1, f"{needle!r} is on lines {lines} of {path}"
    return lines[0]


def issues_of(path: Path, env: dict[str, str] | None = None) -> list[ConfigIssue]:
    """The issues loading ``path`` raises (the load must fail)."""
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={} if env is None else env)
    assert caught.value.issues, "a ConfigError must carry issues"
    return caught.value.issues


def only_issue(path: Path, env: dict[str, str] | None = None) -> ConfigIssue:
    """The single issue loading ``path`` raises."""
    issues = issues_of(path, env)
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]


def issue_at(issues: list[ConfigIssue], key: str) -> ConfigIssue:
    """The one issue about ``key``."""
    found = [issue for issue in issues if issue.key == key]
    assert len(found) == 1, "\n".join(map(str, issues))
    return found[0]


# --------------------------------------------------------------------------------------------
# The real configuration


def test_the_repository_configuration_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    settings = load_settings("config/pls_sync.yaml")

    assert isinstance(settings, Settings)
    assert settings.config_path == Path("config/pls_sync.yaml")
    assert settings.account_level == "company"
    assert settings.warehouse.url == "duckdb:///.pls-sync/demo.duckdb"
    assert settings.warehouse.model == "builtin"
    assert settings.warehouse.schema is None
    assert settings.warehouse.chunk_size == 5000
    assert settings.warehouse.taxonomy["legal_page_view"] == (
        "viewed_terms_of_use",
        "viewed_privacy_policy",
        "viewed_dpa",
    )
    assert settings.warehouse.taxonomy["ignored"] == ("viewed_webinar", "landing_page_view")
    assert settings.warehouse.taxonomy_path == Path("config/events.yaml")
    assert settings.state_url == "sqlite:///.pls-sync/state.sqlite"
    assert settings.plans_dir == Path(".pls-sync/plans")
    assert settings.api_budget_share == 0.5
    assert settings.history_days == 730
    assert settings.schedule.timezone == "UTC"
    assert [(j.name, j.cron, j.grace_seconds) for j in settings.schedule.jobs] == [
        ("full_sync", "0 */4 * * *", 3600)
    ]
    assert (settings.logging.level, settings.logging.format) == ("INFO", "auto")


def test_the_repository_scoring_model_converts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    model = load_settings("config/pls_sync.yaml").scoring

    weights = {c.name: c.weight for c in model.components}
    assert weights == {
        "team_size": 0.30,
        "buyer_intent": 0.45,
        "volume": 0.10,
        "velocity": 0.10,
        "breadth": 0.05,
    }
    (intent,) = model.sums
    assert intent.name == "buyer_intent" and intent.parts[0] == (
        "legal_page_views_14d",
        ((0.0, 0.0), (1.0, 20.0), (3.0, 30.0)),
    )
    assert [c.name for c in model.components if c.discount_young] == ["velocity"]
    team = model.components[0]
    assert team.metrics == ("active_users_28d",)
    assert team.curve[:2] == ((0.0, 0.0), (1.0, 10.0))
    assert [(t.name, t.min_score) for t in model.tiers] == [
        ("sales", 80.0),
        ("success", 60.0),
        ("self_serve", 0.0),
    ]
    assert model.hysteresis == 5.0
    assert model.qualified_tiers == ("sales",)
    assert model.guarded_tiers == ("sales",)
    assert model.min_account_age_days == 14
    assert [(r.name, r.min_denominator) for r in model.ratios] == [
        ("user_velocity", 1.0),
        ("event_velocity", 10.0),
    ]
    spike = next(s for s in model.signals if s.name == "velocity_spike")
    assert spike.when == ConditionGroup(
        "all",
        (Condition("new_users_7d", ">=", 5.0), Condition("user_velocity", ">=", 3.0)),
    )
    assert spike.points == 0.0  # it restates velocity: it explains, the component scores


def test_the_repository_mappings_convert(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    destinations = load_settings("config/pls_sync.yaml").destinations

    salesforce = destinations["salesforce"]
    assert salesforce.enabled is True
    assert (salesforce.api_version, salesforce.batch_size, salesforce.bulk_threshold) == (
        "59.0",
        200,
        2000,
    )
    assert salesforce.mapping_path == Path("mappings/salesforce.yaml")
    mapping = salesforce.mapping
    assert mapping.object == "Account"
    assert mapping.match.domain_fields == ("Website", "Domain__c")
    assert mapping.targets == (
        "PQA_Score__c",
        "PQA_Tier__c",
        "PQA_Signals__c",
        "PQA_Score_Change__c",
        "PQA_Active_Users__c",
        "PQA_Qualified_Since__c",
        "PQA_Lead_Channel__c",
        "PQA_Motion__c",
    )
    signals = next(f for f in mapping.fields if f.target == "PQA_Signals__c")
    assert (signals.source, signals.null, signals.join) == ("signals", "clear", "; ")
    score = next(f for f in mapping.fields if f.target == "PQA_Score__c")
    assert (score.source, score.null) == ("score", "skip")

    hubspot = destinations["hubspot"]
    assert hubspot.enabled is False
    assert (hubspot.batch_size, hubspot.requests_per_10s) == (100, 100)
    assert hubspot.mapping.object == "companies"
    assert "pqa_score" in hubspot.mapping.targets


def test_environment_enables_hubspot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert (
        load_settings(env={"PLS_SYNC_HUBSPOT_ENABLED": "true"}).destinations["hubspot"].enabled
        is True
    )
    monkeypatch.setenv("PLS_SYNC_HUBSPOT_ENABLED", "true")
    monkeypatch.setenv("PLS_SYNC_SALESFORCE_ENABLED", "false")
    destinations = load_settings().destinations
    assert destinations["hubspot"].enabled is True
    assert destinations["salesforce"].enabled is False


def test_builtin_metric_names() -> None:
    assert builtin_metric_names() == BUILTIN_METRICS
    assert len(set(BUILTIN_METRICS)) == 15
    assert {"active_users_28d", "legal_page_views_14d", "admins"} <= set(BUILTIN_METRICS)


# --------------------------------------------------------------------------------------------
# Interpolation


def test_interpolated_scalars_are_reparsed_as_yaml(repo_copy: Path) -> None:
    edit(repo_copy, "chunk_size: 5000", "chunk_size: ${CHUNK:-200}")
    edit(repo_copy, "batch_size: 100 ", 'batch_size: "${HS_BATCH:-50}"')
    with pytest.raises(ConfigError) as caught:
        load_settings(repo_copy, env={})
    # Quoted, the default stays a string: the strict int rejects it.
    issue = caught.value.issues[0]
    assert (issue.key, issue.line) == (
        "destinations.hubspot.batch_size",
        line_of(repo_copy, "HS_BATCH"),
    )
    assert "valid integer" in issue.message

    edit(repo_copy, '"${HS_BATCH:-50}"', "${HS_BATCH:-50}")
    settings = load_settings(repo_copy, env={"CHUNK": "1234"})
    assert settings.warehouse.chunk_size == 1234
    assert settings.destinations["hubspot"].batch_size == 50


def test_embedded_interpolation_escape_and_secrets_folder(
    repo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "pgpass").write_text("s3cr3t-pw\n")
    monkeypatch.setenv("PLS_SYNC_SECRETS_DIR", str(secrets))
    edit(
        repo_copy,
        "url: ${PLS_SYNC_STATE_URL:-sqlite:///.pls-sync/state.sqlite}",
        "url: postgresql://${PGUSER:-pls}:${PGPASS}@db/pls",
    )
    edit(repo_copy, "plans_dir: .pls-sync/plans", "plans_dir: plans-$$HOME")

    settings = load_settings(repo_copy, env={})
    assert settings.state_url == "postgresql://pls:s3cr3t-pw@db/pls"
    assert settings.plans_dir == Path("plans-$HOME")
    assert "s3cr3t" not in repr(settings)  # URLs stay out of the repr

    # The environment wins over the secrets folder.
    settings = load_settings(repo_copy, env={"PGPASS": "from-env", "PGUSER": "u"})
    assert settings.state_url == "postgresql://u:from-env@db/pls"


def test_a_missing_variable_is_named(repo_copy: Path) -> None:
    edit(repo_copy, 'api_version: "59.0"', "api_version: ${SF_API_VERSION}")
    issue = only_issue(repo_copy)
    assert issue.file == str(repo_copy)
    assert issue.line == line_of(repo_copy, "SF_API_VERSION")
    assert issue.key == "destinations.salesforce.api_version"
    assert "SF_API_VERSION" in issue.message and "not set" in issue.message


def test_a_malformed_interpolation_is_reported(repo_copy: Path) -> None:
    edit(repo_copy, "users_table: users", "users_table: ${users table}")
    issue = only_issue(repo_copy)
    assert (issue.line, issue.key) == (line_of(repo_copy, "users_table"), "warehouse.users_table")
    assert "malformed interpolation" in issue.message


def test_interpolator_defaults_follow_the_shell() -> None:
    interpolator = Interpolator({"EMPTY": "", "SET": "x"})
    assert interpolator.substitute("${EMPTY:-d}|${SET:-d}|${UNSET:-d}|${EMPTY}") == ("d|x|d|", [])
    text, problems = interpolator.substitute("a ${UNSET} b ${ALSO_UNSET}")
    assert text == "a ${UNSET} b ${ALSO_UNSET}"
    assert ["UNSET" in problems[0], "ALSO_UNSET" in problems[1]] == [True, True]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_doubled_dollars_escape_any_text(text: str) -> None:
    assert Interpolator({}).substitute(text.replace("$", "$$")) == (text, [])


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text(), st.text())
def test_a_variable_is_replaced_by_its_exact_value(value: str, before: str, after: str) -> None:
    before, after = before.replace("$", "$$"), after.replace("$", "$$")
    interpolator = Interpolator({"VALUE": value})
    expected = (
        Interpolator({}).substitute(before)[0] + value + Interpolator({}).substitute(after)[0]
    )
    assert interpolator.substitute(f"{before}${{VALUE}}{after}") == (expected, [])


# --------------------------------------------------------------------------------------------
# One bad input at a time


def test_malformed_yaml_gives_the_parser_line(repo_copy: Path) -> None:
    edit(repo_copy, "  users_table: users", "  users_table: [users")
    issue = only_issue(repo_copy)
    assert issue.file == str(repo_copy)
    # The parser notices the unclosed flow sequence on the next line.
    assert issue.line == line_of(repo_copy, "events_table: events")
    assert issue.key == ""
    assert issue.message.startswith("invalid YAML")


def test_malformed_yaml_in_a_referenced_file(repo_copy: Path) -> None:
    scoring = repo_copy.parent / "scoring.yaml"
    edit(scoring, "hysteresis: 5 ", "hysteresis: 5 :")
    issue = only_issue(repo_copy)
    assert issue.file == str(scoring)
    assert issue.line == line_of(scoring, "hysteresis:")
    assert "invalid YAML" in issue.message


def test_duplicate_keys_are_an_error(repo_copy: Path) -> None:
    edit(repo_copy, "  chunk_size: 5000", "  chunk_size: 5000\n  chunk_size: 10")
    issue = only_issue(repo_copy)
    assert issue.line == line_of(repo_copy, "chunk_size: 10")
    assert issue.key == "warehouse.chunk_size"
    assert f"line {line_of(repo_copy, 'chunk_size: 5000')}" in issue.message


def test_unknown_key(repo_copy: Path) -> None:
    edit(repo_copy, "    bulk_threshold: 2000", "    bulk_treshold: 2000")
    issue = only_issue(repo_copy)
    assert issue.line == line_of(repo_copy, "bulk_treshold")
    assert issue.key == "destinations.salesforce.bulk_treshold"
    assert "unknown key" in issue.message and "bulk_threshold" in issue.message


def test_a_missing_required_key(repo_copy: Path) -> None:
    edit(repo_copy, "    mapping: ../mappings/salesforce.yaml\n", "")
    issue = only_issue(repo_copy)
    assert (issue.line, issue.key) == (
        line_of(repo_copy, "  salesforce:", start=True),
        "destinations.salesforce.mapping",
    )
    assert "missing" in issue.message


def test_a_label_naming_an_unknown_metric(repo_copy: Path) -> None:
    scoring = repo_copy.parent / "scoring.yaml"
    edit(scoring, '"{value:.0f} core features used"', '"{value:.0f} of {core_feature_28d}"')
    issue = only_issue(repo_copy)
    assert (issue.line, issue.key) == (
        line_of(scoring, "core_feature_28d}"),
        "components.breadth.label",
    )
    assert "core_features_28d" in issue.message


def test_wrong_type(repo_copy: Path) -> None:
    edit(repo_copy, "batch_size: 200 ", "batch_size: abc ")
    issue = only_issue(repo_copy)
    assert issue.line == line_of(repo_copy, "batch_size: abc")
    assert issue.key == "destinations.salesforce.batch_size"
    assert "integer" in issue.message


def test_score_history_retention(repo_copy: Path) -> None:
    edit(repo_copy, "history_days: 730 ", "history_days: null ")
    assert load_settings(repo_copy, env={}).history_days is None
    edit(repo_copy, "history_days: null ", "history_days: 0 ")
    issue = only_issue(repo_copy)
    assert (issue.key, issue.line) == ("state.history_days", line_of(repo_copy, "history_days:"))


@pytest.mark.parametrize(("destination", "limit"), [("salesforce", 200), ("hubspot", 100)])
def test_batch_size_limits(repo_copy: Path, destination: str, limit: int) -> None:
    edit(repo_copy, f"batch_size: {limit} ", f"batch_size: {limit + 1} ")
    issue = only_issue(repo_copy, env={"PLS_SYNC_HUBSPOT_ENABLED": "true"})
    assert issue.line == line_of(repo_copy, f"batch_size: {limit + 1}")
    assert issue.key == f"destinations.{destination}.batch_size"
    assert str(limit) in issue.message


@pytest.mark.parametrize("target", ["Id", "OwnerId", "ownerid", "OWNERID", "recordtypeid"])
def test_identity_and_ownership_fields_are_refused(repo_copy: Path, target: str) -> None:
    mapping = repo_copy.parent.parent / "mappings" / "salesforce.yaml"
    edit(mapping, "  PQA_Tier__c: tier", f"  PQA_Tier__c: tier\n  {target}: score")
    issue = only_issue(repo_copy)
    assert issue.file == str(mapping)
    assert issue.line == line_of(mapping, f"  {target}: score")
    assert issue.key == f"fields.{target}"
    assert "is an identity/ownership field and is never written" in issue.message


def test_hubspot_identity_fields_are_refused_when_enabled(repo_copy: Path) -> None:
    mapping = repo_copy.parent.parent / "mappings" / "hubspot.yaml"
    edit(mapping, "  pqa_tier: tier", "  pqa_tier: tier\n  HubSpot_Owner_Id: score")
    # Disabled, the hubspot mapping is not checked: the run goes on with Salesforce.
    assert load_settings(repo_copy, env={}).destinations["hubspot"].mapping.fields == ()
    issue = only_issue(repo_copy, env={"PLS_SYNC_HUBSPOT_ENABLED": "true"})
    assert (issue.file, issue.line, issue.key) == (
        str(mapping),
        line_of(mapping, "HubSpot_Owner_Id"),
        "fields.HubSpot_Owner_Id",
    )


def test_weights_must_sum_to_one(repo_copy: Path) -> None:
    scoring = repo_copy.parent / "scoring.yaml"
    edit(scoring, "weight: 0.45", "weight: 0.40")
    issue = only_issue(repo_copy)
    assert issue.file == str(scoring)
    assert issue.line == line_of(scoring, "components:", start=True)
    assert issue.key == "components"
    assert "0.95" in issue.message


def test_invalid_cron_expression(repo_copy: Path) -> None:
    edit(repo_copy, 'cron: "0 */4 * * *"', 'cron: "0 */4 * *"')
    issue = only_issue(repo_copy)
    assert issue.line == line_of(repo_copy, "cron:")
    assert issue.key == "schedule.jobs[0].cron"
    assert "cron" in issue.message and "fields" in issue.message


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("0 9 * * 8", "day of week '8': 8 is out of range 0-7 (0 and 7 are Sunday)"),
        ("0 9 * * fri-mon", "runs backwards"),
        ("0 0 31 2 *", "it never fires"),
        ("@reboot", "unknown macro"),
    ],
)
def test_cron_is_checked_as_standard_cron(repo_copy: Path, cron: str, reason: str) -> None:
    edit(repo_copy, 'cron: "0 */4 * * *"', f'cron: "{cron}"')
    issue = only_issue(repo_copy)
    assert (issue.line, issue.key) == (line_of(repo_copy, "cron:"), "schedule.jobs[0].cron")
    assert reason in issue.message


def test_standard_cron_forms_load(repo_copy: Path) -> None:
    edit(repo_copy, 'cron: "0 */4 * * *"', 'cron: "0 9 * * MON-FRI"')
    assert load_settings(repo_copy, env={}).schedule.jobs[0].cron == "0 9 * * MON-FRI"


def test_invalid_timezone(repo_copy: Path) -> None:
    edit(repo_copy, "timezone: UTC", "timezone: Europe/Atlantis")
    issue = only_issue(repo_copy)
    assert (issue.line, issue.key) == (line_of(repo_copy, "timezone:"), "schedule.timezone")
    assert "Europe/Atlantis" in issue.message


def test_a_schedule_without_jobs(repo_copy: Path) -> None:
    text = repo_copy.read_text()
    start = text.index("  jobs:")
    end = text.index("logging:")
    repo_copy.write_text(text[:start] + "  jobs: []\n\n" + text[end:])
    issue = only_issue(repo_copy)
    assert (issue.line, issue.key) == (line_of(repo_copy, "jobs: []"), "schedule.jobs")
    assert "at least one job" in issue.message


def test_unknown_metric_in_a_nested_condition(repo_copy: Path) -> None:
    scoring = repo_copy.parent / "scoring.yaml"
    edit(scoring, "{metric: new_users_7d, op", "{metric: new_user_7d, op")
    issue = only_issue(repo_copy)
    assert issue.file == str(scoring)
    assert issue.line == line_of(scoring, "new_user_7d")
    assert issue.key == "signals[4].when.all[0].metric"
    assert "unknown metric 'new_user_7d'" in issue.message and "new_users_7d" in issue.message


def test_bad_operator(repo_copy: Path) -> None:
    scoring = repo_copy.parent / "scoring.yaml"
    edit(scoring, 'op: ">=", value: 2}', 'op: "=>", value: 2}')
    issue = only_issue(repo_copy)
    assert issue.line == line_of(scoring, '"=>"')
    assert issue.key == "signals[1].when.op"
    assert "'=>'" in issue.message


def test_a_tier_must_start_at_zero(repo_copy: Path) -> None:
    scoring = repo_copy.parent / "scoring.yaml"
    edit(scoring, "  self_serve: 0", "  self_serve: 10")
    issue = only_issue(repo_copy)
    assert (issue.line, issue.key) == (line_of(scoring, "tiers:", start=True), "tiers")
    assert "0" in issue.message


def test_playbook_tiers_keep_their_order(repo_copy: Path) -> None:
    scoring = repo_copy.parent / "scoring.yaml"
    edit(scoring, "  sales: 80\n  success: 60", "  sales: 60\n  success: 80")
    issue = only_issue(repo_copy)
    assert (issue.file, issue.line, issue.key) == (
        str(scoring),
        line_of(scoring, "  success: 80"),
        "tiers.success",
    )
    assert "'success' (80) is above 'sales' (60)" in issue.message


def test_a_tier_no_score_can_reach_is_refused(repo_copy: Path) -> None:
    """Components give at most 100 and signals add points; a tier above the reachable best is dead."""
    scoring = repo_copy.parent / "scoring.yaml"
    text = scoring.read_text()
    # Every curve tops out at 50 points and no signal adds any: the model scores at most 50.
    text = re.sub(r"\[([\d.]+), (\d+)\]", lambda m: f"[{m[1]}, {min(int(m[2]), 50)}]", text)
    text = re.sub(r"points: \d+", "points: 0", text)
    scoring.write_text(text)
    issues = issues_of(repo_copy)
    sales, success = issue_at(issues, "tiers.sales"), issue_at(issues, "tiers.success")
    assert sales.line == line_of(scoring, "  sales: 80")
    assert "the model scores at most 50" in sales.message
    assert "no account can reach it" in success.message
    assert len(issues) == 2, "\n".join(map(str, issues))


def test_a_yaml_alias_bomb_is_refused_quickly(repo_copy: Path) -> None:
    rows = ['lol: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    rows += [f"l{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    with repo_copy.open("a", encoding="utf-8") as out:
        out.write("\n".join(rows) + "\n")
    issues = issues_of(repo_copy)
    assert len(issues) == 1
    assert "refused: the document expands to more than 100,000 values" in issues[0].message
    assert issues[0].file == str(repo_copy)


def test_problems_found_after_loading_can_name_their_line(repo_copy: Path) -> None:
    settings = load_settings(repo_copy, env={})
    mapping_file = repo_copy.parent.parent / "mappings" / "salesforce.yaml"
    mapping = settings.destinations["salesforce"].mapping

    issue = mapping.issue(("fields", "PQA_Tier__c"), "not on the picklist")

    assert (issue.file, issue.line, issue.key) == (
        str(mapping_file),
        line_of(mapping_file, "PQA_Tier__c:"),
        "fields.PQA_Tier__c",
    )
    url = settings.lines.issue(settings.config_path, ("warehouse", "url"), "unreachable")
    assert url.line == line_of(repo_copy, "  url: ${PLS_SYNC_WAREHOUSE_URL")


def test_curve_must_ascend(repo_copy: Path) -> None:
    scoring = repo_copy.parent / "scoring.yaml"
    edit(scoring, "[[0, 0], [2, 40], [4, 75], [6, 100]]", "[[0, 0], [4, 40], [4, 75], [6, 100]]")
    issue = only_issue(repo_copy)
    assert issue.line == line_of(scoring, "[4, 40], [4, 75]")
    assert issue.key == "components.breadth.curve"
    assert "ascending" in issue.message


def test_an_event_belongs_to_one_category(repo_copy: Path) -> None:
    events = repo_copy.parent / "events.yaml"
    edit(events, "    - commented", "    - commented\n    - viewed_pricing")
    issue = only_issue(repo_copy)
    assert issue.file == str(events)
    assert issue.line == line_of(events, "    - viewed_pricing")
    assert issue.key == "categories.core_feature[4]"
    assert "pricing_page_view" in issue.message


def test_unknown_mapping_source_and_metric(repo_copy: Path) -> None:
    mapping = repo_copy.parent.parent / "mappings" / "salesforce.yaml"
    edit(mapping, "PQA_Tier__c: tier", "PQA_Tier__c: {source: tire, null: clear}")
    edit(mapping, "metrics.active_users_28d", "metrics.active_users_29d")
    issues = issues_of(repo_copy)
    assert len(issues) == 2, "\n".join(map(str, issues))
    tier = issue_at(issues, "fields.PQA_Tier__c.source")
    assert tier.line == line_of(mapping, "tire")
    assert "unknown source 'tire'" in tier.message
    metric = issue_at(issues, "fields.PQA_Active_Users__c")
    assert metric.line == line_of(mapping, "active_users_29d")
    assert "unknown metric 'active_users_29d'" in metric.message


def test_a_url_password_never_appears_in_messages(repo_copy: Path) -> None:
    edit(repo_copy, "url: ${PLS_SYNC_STATE_URL:-sqlite:///.pls-sync/state.sqlite}", "url: ${DB}")
    with pytest.raises(ConfigError) as caught:
        load_settings(repo_copy, env={"DB": "postgresql://u:hunter2pw@db/x y"})
    issue = caught.value.issues[0]
    assert issue.key == "state.url"
    assert "not a database URL" in issue.message
    assert "hunter2pw" not in str(caught.value)


def test_a_custom_sql_model_is_resolved_and_skips_metric_checks(repo_copy: Path) -> None:
    models = repo_copy.parent / "models"
    models.mkdir()
    (models / "accounts.sql").write_text("select domain, seats from accounts\n")
    edit(repo_copy, "model: builtin ", "model: models/accounts.sql ")
    scoring = repo_copy.parent / "scoring.yaml"
    edit(scoring, "metrics: [events_28d]", "metrics: [seats]")
    settings = load_settings(repo_copy, env={})
    assert settings.warehouse.model == models / "accounts.sql"
    assert settings.scoring.components[2].metrics == ("seats",)

    edit(repo_copy, "model: models/accounts.sql ", "model: models/missing.sql ")
    issue = only_issue(repo_copy)
    assert (issue.line, issue.key) == (line_of(repo_copy, "missing.sql"), "warehouse.model")
    assert "not found" in issue.message


def test_paths_are_relative_to_the_file_naming_them(tmp_path: Path, repo_copy: Path) -> None:
    nested = tmp_path / "deploy" / "prod"
    nested.mkdir(parents=True)
    main = nested / "main.yaml"
    text = repo_copy.read_text()
    text = text.replace("scoring: scoring.yaml", "scoring: ../../config/scoring.yaml")
    text = text.replace("event_taxonomy: events.yaml", "event_taxonomy: ../../config/events.yaml")
    text = text.replace("channels: channels.yaml", "channels: ../../config/channels.yaml")
    text = text.replace("../mappings/", "../../mappings/")
    main.write_text(text)
    settings = load_settings(main, env={})
    assert settings.scoring_path == tmp_path / "config" / "scoring.yaml"
    assert (
        settings.destinations["salesforce"].mapping_path
        == tmp_path / "mappings" / "salesforce.yaml"
    )
    assert settings.plans_dir == Path(".pls-sync/plans")  # as given: relative to the CWD


def test_all_issues_across_files_are_reported_at_once(repo_copy: Path) -> None:
    scoring = repo_copy.parent / "scoring.yaml"
    mapping = repo_copy.parent.parent / "mappings" / "salesforce.yaml"
    edit(repo_copy, "chunk_size: 5000", "chunk_size: lots")
    edit(repo_copy, "account_level: company", "account_level: company\naccount_levle: x")
    edit(scoring, "weight: 0.45", "weight: 0.7")
    edit(scoring, 'op: ">=", value: 2}', 'op: "=>", value: 2}')
    edit(scoring, "metric: admin_changes_28d", "metric: admin_change_28d")
    edit(mapping, "  PQA_Tier__c: tier", "  PQA_Tier__c: tier\n  OwnerId: score")

    issues = issues_of(repo_copy)
    found = {(issue.file, issue.line, issue.key) for issue in issues}
    assert found == {
        (str(repo_copy), line_of(repo_copy, "chunk_size"), "warehouse.chunk_size"),
        (str(repo_copy), line_of(repo_copy, "account_levle"), "account_levle"),
        (str(scoring), line_of(scoring, "components:", start=True), "components"),
        (str(scoring), line_of(scoring, '"=>"'), "signals[1].when.op"),
        (str(scoring), line_of(scoring, "admin_change_28d"), "signals[2].when.metric"),
        (str(mapping), line_of(mapping, "OwnerId"), "fields.OwnerId"),
    }
    # Grouped by file, the main file first, in line order within a file.
    assert [issue.file for issue in issues][:2] == [str(repo_copy)] * 2
    assert [i.line for i in issues if i.file == str(scoring)] == sorted(
        i.line or 0 for i in issues if i.file == str(scoring)
    )


def test_a_missing_referenced_file(repo_copy: Path) -> None:
    (repo_copy.parent / "events.yaml").unlink()
    issue = only_issue(repo_copy)
    assert issue.file == str(repo_copy.parent / "events.yaml")
    assert "not found" in issue.message


# --------------------------------------------------------------------------------------------
# The line-keeping loader


def test_loader_keeps_lines_of_keys_and_items() -> None:
    document, issues = load_document(CASES / "lines.yaml")
    assert issues == [] and document is not None
    assert document.data == {
        "top": {"null": "clear", "on": "kept", "list": [1, {"inner": True}]},
        "anchor": {"a": 1},
        "alias": {"a": 1},
    }
    assert document.lines[("top",)] == 2
    assert document.lines[("top", "null")] == 3
    assert document.lines[("top", "list", 0)] == 6
    assert document.lines[("top", "list", 1, "inner")] == 7
    assert document.line(("top", "list", 1, "missing")) == 7


def test_loader_refuses_python_tags(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("a: !!python/object/apply:os.system ['true']\n")
    document, issues = load_document(path)
    assert len(issues) == 1
    assert (issues[0].line, issues[0].key) == (1, "a")


def test_channels_file_converts_with_alerts_off_by_default(repo_copy: Path) -> None:
    channels = load_settings(repo_copy, env={}).channels
    assert channels.alerts_enabled is False and channels.alert_tier == "sales"
    assert [rule.name for rule in channels.persona.rules][:2] == ["executive", "executive_title"]
    assert channels.sf_lead_statuses == ("Marketing Qualified",)
    assert channels.motions[0].motion == "sales"
    assert load_settings(repo_copy, env={"PLS_SYNC_ALERTS_ENABLED": "true"}).channels.alerts_enabled


def test_channels_errors_name_file_line_and_key(repo_copy: Path) -> None:
    channels = repo_copy.parent / "channels.yaml"
    edit(channels, "  - {tiers: [], buyer: null, motion: self_serve}\n", "")
    edit(channels, "  tier: sales", "  tier: enterprise")
    edit(
        channels,
        "      label: executive\n    - name: executive_title",
        "      labl: executive\n    - name: executive_title",
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(repo_copy, env={})
    issues = [i for i in caught.value.issues if i.file.endswith("channels.yaml")]
    keys = {i.key: i for i in issues}
    assert "buyers.personas[0].labl" in keys
    assert keys["buyers.personas[0].labl"].line == line_of(channels, "labl: executive")
    # the motion table and the alert tier are checked once the file's shape is right
    edit(channels, "labl: executive", "label: executive")
    with pytest.raises(ConfigError) as caught:
        load_settings(repo_copy, env={})
    keys = {i.key: i for i in caught.value.issues}
    assert "no motion rule covers tier" in keys["motions"].message
    assert keys["alerts.tier"].line == line_of(channels, "tier: enterprise")
    assert "unknown tier 'enterprise'" in keys["alerts.tier"].message


def test_matching_host_lists_are_hosts_each_checked_on_its_line(repo_copy: Path) -> None:
    edit(
        repo_copy,
        "  platform_hosts: []",
        "  platform_hosts:\n    - https://Community.Example.com/forum\n    - not a host",
    )
    issue = only_issue(repo_copy)
    assert (issue.key, issue.line) == (
        "matching.platform_hosts[1]",
        line_of(repo_copy, "- not a host"),
    )
    assert "not a host name with a public suffix" in issue.message
    edit(repo_copy, "    - not a host", "    - '*.apps.example-cloud.com'")
    settings = load_settings(repo_copy, env={})
    assert settings.matching.platform_hosts == ("community.example.com", "apps.example-cloud.com")


@pytest.mark.parametrize(
    ("destination", "name", "fine"),
    [
        ("salesforce", "PQA_Score__c", True),
        ("salesforce", "Website", True),
        ("salesforce", "acme__Score__c", True),
        ("salesforce", "Score__pc", True),
        ("salesforce", "PQA Score__c", False),
        ("salesforce", "PQA__Score__c__c", False),
        ("salesforce", "_Score__c", False),
        ("salesforce", "Score_", False),
        ("hubspot", "pqa_score", True),
        ("hubspot", "pqa-score", False),
        ("hubspot", "PQA_Score", False),
        ("hubspot", "1score", False),
    ],
)
def test_mapped_names_must_be_api_names(destination: str, name: str, fine: bool) -> None:
    from pls_sync.config import api_name_problem

    assert (api_name_problem(destination, name) is None) == fine


def test_a_label_mapped_instead_of_an_api_name_is_a_config_error_on_its_line(
    repo_copy: Path,
) -> None:
    mapping = repo_copy.parent.parent / "mappings" / "salesforce.yaml"
    mapping.write_text(mapping.read_text().replace("  PQA_Score__c: score", "  PQA Score: score"))
    with pytest.raises(ConfigError) as caught:
        load_settings(repo_copy, env={})
    (issue,) = [i for i in caught.value.issues if "API name" in i.message]
    assert (Path(issue.file).name, issue.line, issue.key) == (
        "salesforce.yaml",
        line_of(mapping, "PQA Score: score"),
        "fields.PQA Score",
    )


def test_the_shipped_labels_read_the_demo_conversions_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    labels = load_settings(REPO / "config" / "pls_sync.yaml", env={}).labels
    assert labels is not None
    assert (labels.source, labels.table, labels.converted_column) == (
        "warehouse",
        "conversions",
        None,
    )


@pytest.mark.parametrize(
    ("section", "key", "says"),
    [
        ("labels:\n  source: warehouse\n", "labels.source", "needs a table"),
        ("labels:\n  source: file\n", "labels.source", "needs a path"),
        (
            "labels:\n  source: file\n  path: c.csv\n  converted_column: null\n"
            "  converted_at_column: null\n",
            "labels.converted_column",
            "one outcome",
        ),
    ],
)
def test_a_label_source_without_what_it_needs_is_a_config_error(
    repo_copy: Path, section: str, key: str, says: str
) -> None:
    text = repo_copy.read_text()
    start = text.index("labels:")
    end = text.index("api_budget:")
    repo_copy.write_text(text[:start] + section + "\n" + text[end:])
    with pytest.raises(ConfigError) as caught:
        load_settings(repo_copy, env={})
    (issue,) = [i for i in caught.value.issues if i.key == key]
    assert says in issue.message and issue.line is not None and issue.file.endswith("pls_sync.yaml")


def test_a_tier_at_100_is_unreachable_once_scores_saturate(repo_copy: Path) -> None:
    """Above ``saturate_above`` a score nears 100 without reaching it."""
    scoring = repo_copy.parent / "scoring.yaml"
    scoring.write_text(scoring.read_text().replace("  sales: 80", "  sales: 100"))
    (sales,) = issues_of(repo_copy)
    assert sales.key == "tiers.sales" and "the model scores at most 93" in sales.message
    scoring.write_text(scoring.read_text().replace("saturate_above: 80", "saturate_above: null"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLS_SYNC_HUBSPOT_ENABLED", "false")
        assert load_settings(repo_copy, env={}).scoring.saturate_above is None


def test_a_sum_reads_known_metrics_under_a_new_name(repo_copy: Path) -> None:
    scoring = repo_copy.parent / "scoring.yaml"
    edit(
        scoring,
        "    admin_changes_28d: [[0, 0], [1, 20], [2, 25]]",
        "    admin_change_28d: [[0, 0]]",
    )
    edit(scoring, "  buyer_intent:\n    legal", "  events_7d:\n    legal")
    issues = issues_of(repo_copy)
    found: dict[tuple[int | None, str], list[str]] = {}
    for issue in issues:
        found.setdefault((issue.line, issue.key), []).append(issue.message)
    assert (
        "a sum cannot reuse the name of a metric or a ratio"
        in found[(line_of(scoring, "  events_7d:"), "sums.events_7d")]
    )
    part = found[(line_of(scoring, "admin_change_28d"), "sums.events_7d.admin_change_28d")]
    assert any("at least 2" in message for message in part)
    assert any("did you mean 'admin_changes_28d'" in message for message in part)
    # The component weighing the renamed sum now names an unknown metric.
    assert any(key.startswith("components.buyer_intent.metrics") for _line, key in found)


def test_a_sum_part_must_be_a_known_metric(repo_copy: Path) -> None:
    scoring = repo_copy.parent / "scoring.yaml"
    edit(
        scoring,
        "    admin_changes_28d: [[0, 0], [1, 20], [2, 25]]",
        "    admins_28d: [[0, 0], [1, 5]]",
    )
    issue = only_issue(repo_copy)
    assert (issue.line, issue.key) == (
        line_of(scoring, "admins_28d"),
        "sums.buyer_intent.admins_28d",
    )
    assert "unknown metric" in issue.message


def test_discount_young_is_a_boolean(repo_copy: Path) -> None:
    scoring = repo_copy.parent / "scoring.yaml"
    edit(scoring, "discount_young: true", "discount_young: sometimes")
    issue = only_issue(repo_copy)
    assert issue.key == "components.velocity.discount_young"


def test_the_shipped_fit_and_firmographics_load(repo_copy: Path) -> None:
    settings = load_settings(repo_copy, env={})
    fit = settings.channels.fit
    assert fit is not None and fit.names == ("enterprise", "mid_market", "smb", "unknown")
    assert settings.destinations["salesforce"].mapping.firmographics == {
        "employees": "NumberOfEmployees"
    }


def test_fit_segments_need_one_from_zero(repo_copy: Path) -> None:
    scoring = repo_copy.parent / "scoring.yaml"
    edit(scoring, "    smb: 0\n", "    smb: 10\n")
    issue = only_issue(repo_copy)
    assert (issue.line, issue.key) == (line_of(scoring, "  segments:"), "fit.segments")
    assert "no segment starts at 0" in issue.message


def test_a_motion_row_naming_an_unknown_segment_is_a_config_error(repo_copy: Path) -> None:
    channels = repo_copy.parent / "channels.yaml"
    edit(
        channels,
        "  - {tiers: [sales], buyer: true, motion: sales}",
        "  - {tiers: [sales], segments: [giant], buyer: true, motion: sales}",
    )
    issues = issues_of(repo_copy)
    assert any(i.key == "motions" and "unknown segment(s) 'giant'" in i.message for i in issues), (
        issues
    )


def test_a_firmographic_field_must_be_an_api_name_and_never_a_written_one(repo_copy: Path) -> None:
    mapping = repo_copy.parent.parent / "mappings" / "salesforce.yaml"
    edit(mapping, "  employees: NumberOfEmployees", "  employees: PQA_Score__c")
    issue = only_issue(repo_copy)
    assert (issue.line, issue.key) == (line_of(mapping, "employees:"), "firmographics.employees")
    assert "only read" in issue.message
    edit(mapping, "  employees: PQA_Score__c", "  employees: Number Of Employees")
    issue = only_issue(repo_copy)
    assert issue.key == "firmographics.employees" and "API name" in issue.message


def test_crm_labels_name_a_configured_destination_and_won_stages_only_for_hubspot(
    repo_copy: Path,
) -> None:
    edit(
        repo_copy,
        "  source: warehouse         # warehouse",
        "  source: salesforce        # warehouse",
    )
    labels = load_settings(repo_copy, env={}).labels
    assert labels is not None and labels.source == "salesforce"
    edit(repo_copy, "  path: null ", "  won_stages: [closedwon]\n  path: null ")
    issue = only_issue(repo_copy)
    assert (issue.line, issue.key) == (line_of(repo_copy, "won_stages:"), "labels.won_stages")
    assert "hubspot only" in issue.message
    edit(
        repo_copy,
        "  source: salesforce        # warehouse",
        "  source: hubspot           # warehouse",
    )
    labels = load_settings(repo_copy, env={}).labels
    assert labels is not None and labels.won_stages == ("closedwon",)
    text = repo_copy.read_text()
    start = text.index("  hubspot:\n    enabled:")
    end = text.index("state:")
    repo_copy.write_text(text[:start] + text[end:])
    issue = only_issue(repo_copy)
    assert issue.key == "labels.source" and "destinations.hubspot" in issue.message


def test_a_duckdb_memory_limit_is_read_and_a_bad_one_named_at_its_line(repo_copy: Path) -> None:
    edit(repo_copy, "  duckdb_memory_limit: 256MB", "  duckdb_memory_limit: 1.5GB")
    assert load_settings(repo_copy).warehouse.duckdb_memory_limit == "1.5GB"
    edit(repo_copy, "  duckdb_memory_limit: 1.5GB", "  duckdb_memory_limit: lots")
    issue = only_issue(repo_copy)
    assert issue.line == line_of(repo_copy, "duckdb_memory_limit: lots")
    assert issue.key == "warehouse.duckdb_memory_limit"


def test_the_hubspot_export_threshold_is_read_and_can_be_turned_off(repo_copy: Path) -> None:
    assert load_settings(repo_copy).destinations["hubspot"].export_threshold == 20_000
    edit(repo_copy, "    export_threshold: 20000", "    export_threshold: null")
    assert load_settings(repo_copy).destinations["hubspot"].export_threshold is None
    edit(repo_copy, "    export_threshold: null", "    export_threshold: 0")
    assert only_issue(repo_copy).key == "destinations.hubspot.export_threshold"
