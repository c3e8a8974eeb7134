"""``pls-sync demo`` end to end: a fresh folder, the CLI, the sandbox the demo starts itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from connectors.state import SqlStateStore
from pls_sync import cli
from pls_sync.demo import read_sandbox_env, sandbox_answers
from pls_sync.sandbox import server
from pls_sync.sandbox.server import Sandbox
from tests.e2e.conftest import CONFIG, DEMO_COMPANIES, REPO_ROOT, WIDE, copy_config

URL = "SALESFORCE_INSTANCE_URL"

ROW = re.compile(r"^│\s*(\S+)\s*│\s*(\d+)\s*│")  # first two cells of a table row
REP_ROW = re.compile(r"^│\s*(\S+)\s*│[^│]*│\s*(\d+)\s*│")  # record id, name, score
MATCHES = re.compile(
    r"matched / unmatched / ambiguous\s*│\s*(\d+) / (\d+) / (\d+) \((\d+) skipped\)"
)


@pytest.fixture
def demo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder, wide console output."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli.console, "_width", WIDE)
    monkeypatch.setattr(cli.err_console, "_width", WIDE)
    return tmp_path


@pytest.fixture
def demo_boxes(monkeypatch: pytest.MonkeyPatch) -> list[Sandbox]:
    """Every sandbox the demo starts, kept so tests can read what it was left holding."""
    boxes: list[Sandbox] = []

    class RecordedSandbox(Sandbox):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            boxes.append(self)

    monkeypatch.setattr(server, "Sandbox", RecordedSandbox)
    return boxes


def demo(*extra: str, config: Path = CONFIG) -> Result:
    """``pls-sync demo --companies 120`` in-process."""
    args = ["demo", "--companies", str(DEMO_COMPANIES), "--config", str(config), *extra]
    result = CliRunner().invoke(cli.app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def section(output: str, start: str, end: str | None = None) -> list[str]:
    """Lines of ``output`` from the line containing ``start`` to the next containing ``end``."""
    lines = output.splitlines()
    first = next(i for i, line in enumerate(lines) if start in line)
    rest = lines[first + 1 :]
    if end is not None:
        rest = rest[: next((i for i, line in enumerate(rest) if end in line), len(rest))]
    return rest


def test_demo_runs_end_to_end_then_again(demo_dir: Path, demo_boxes: list[Sandbox]) -> None:
    result = demo()

    assert result.exit_code == 0, result.output
    out = result.output
    assert f"Generated .pls-sync/demo.duckdb: {DEMO_COMPANIES} companies" in out
    # It leaves the state store and the saved plan to inspect.
    state = demo_dir / ".pls-sync" / "state.sqlite"
    latest = demo_dir / ".pls-sync" / "plans" / "latest.json"
    assert state.exists() and latest.exists()
    store = SqlStateStore.open(f"sqlite:///{state}")
    runs = store.recent_runs()
    assert [(r.command, r.status) for r in runs] == [
        ("demo-rerun", "succeeded"),
        ("demo", "succeeded"),
    ]
    # latest.json is the last plan with changes: the first run's; the rerun's has none.
    first_plan = json.loads(latest.read_text())
    assert first_plan["run_id"] == runs[1].run_id
    assert {p["destination"] for p in first_plan["destinations"]} == {"salesforce", "hubspot"}
    assert all(p["records_changed"] > 0 for p in first_plan["destinations"])
    rerun_plan = json.loads((latest.parent / f"plan-{runs[0].run_id}.json").read_text())
    assert all(p["records_changed"] == 0 for p in rerun_plan["destinations"])
    # Tier counts as the state store holds them.
    accounts = store.load_account_states()
    assert len(accounts) == DEMO_COMPANIES
    tiers = Counter(a.tier for a in accounts.values())
    assert (
        f"Scored {DEMO_COMPANIES} accounts: sales {tiers['sales']}, success {tiers['success']}, "
        f"self_serve {tiers['self_serve']}" in out
    )
    # Match counts, per destination; every account is matched, unmatched or skipped.
    matches = MATCHES.findall(out)
    assert len(matches) == 2, out
    for matched, unmatched, _ambiguous, skipped in matches:
        assert int(matched) > 0 and int(unmatched) > 0
        assert int(matched) + int(unmatched) + int(skipped) == DEMO_COMPANIES
    # The first run wrote, the rerun over unchanged data did not.
    first_requests = next(ln for ln in out.splitlines() if "Sandbox requests, first run" in ln)
    second_requests = next(ln for ln in out.splitlines() if "Sandbox requests, second run" in ln)
    # Each destination wrote in the minimum number of calls, ceil(changed / batch size).
    minimums = re.findall(r"in (\d+) write calls\s*│?\s*│?\s*\(minimum (\d+)", out)
    assert len(minimums) >= 2 and all(calls == least for calls, least in minimums), minimums
    sf_calls = re.search(r"sf\.composite\.sobjects\.patch (\d+)", first_requests)
    hs_calls = re.search(r"hs\.companies\.batch_update (\d+)", first_requests)
    assert sf_calls and hs_calls
    assert [sf_calls.group(1), hs_calls.group(1)] == [calls for calls, _ in minimums[:2]]
    assert "patch" not in second_requests and "batch_update" not in second_requests
    assert "Second run over unchanged data: salesforce 0 write calls, hubspot 0 write calls" in out
    first_summary = runs[1].summary["destinations"]
    assert first_summary["salesforce"]["records_written"] > 0
    assert first_summary["hubspot"]["records_written"] > 0
    # The top accounts table, ranked as the state store ranks them.
    table = [ROW.match(ln) for ln in section(out, "Top product accounts", "rep sees them")]
    shown = [(m.group(1), int(m.group(2))) for m in table if m]
    ranked = sorted(accounts.values(), key=lambda a: (-a.score, a.key))
    # (ties at one score are broken by the points behind it: report.ranking_key's business)
    assert [score for _, score in shown] == [a.score for a in ranked[:15]]
    assert all(accounts[key].score == score for key, score in shown)
    # The rep's view is read back from the CRM the demo wrote.
    assert "salesforce: top Account records as a rep sees them" in out
    assert "hubspot: top companies records as a rep sees them" in out
    rep_rows = [REP_ROW.match(ln) for ln in section(out, "salesforce: top Account records")]
    record_id, score = next((m.group(1), int(m.group(2))) for m in rep_rows if m)
    (box,) = demo_boxes
    account = box.salesforce.get("Account", record_id)
    assert account is not None and account["PQA_Score__c"] == score == ranked[0].score
    written = [
        a
        for a in box.salesforce.records["Account"].values()
        if a["PQA_Tier__c"] or a.get("PQA_Lead_Channel__c") == "mql_only"
    ]
    assert len(written) >= first_summary["salesforce"]["records_written"]
    assert "Demo finished in" in out
    # The next steps name real commands, on the demo's data and its top account.
    day = rerun_plan["as_of"][:10]
    steps = [line.split("#")[0].split() for line in section(out, "Next steps:")]
    assert steps[:4] == [
        ["pls-sync", "sandbox"],
        ["pls-sync", "plan", "--sandbox", "--as-of", day],
        ["pls-sync", "explain", shown[0][0], "--as-of", day],  # the top of the table
        ["pls-sync", "lists", "abm"],
    ]
    for step in (steps[2], steps[3]):
        done = CliRunner().invoke(cli.app, [*step[1:], "--config", str(CONFIG)])
        assert done.exit_code == 0, done.output
        assert shown[0][0] in done.stdout or step[1] == "lists"

    again = demo()

    assert again.exit_code == 0, again.output
    assert "Using the demo warehouse .pls-sync/demo.duckdb" in again.output
    assert "Generated" not in again.output
    assert "salesforce 0 write calls, hubspot 0 write calls" in again.output
    assert len(store.recent_runs()) == 4


def test_a_second_demo_writes_its_fresh_sandbox(demo_dir: Path, demo_boxes: list[Sandbox]) -> None:
    assert demo().exit_code == 0
    again = demo()

    assert again.exit_code == 0, again.output
    first_requests = next(
        ln for ln in again.output.splitlines() if "Sandbox requests, first run" in ln
    )
    assert "sf.composite.sobjects.patch" in first_requests
    fresh = demo_boxes[1]
    assert any(a["PQA_Score__c"] is not None for a in fresh.salesforce.records["Account"].values())


def test_demo_with_a_bad_config_exits_2_and_creates_nothing(
    demo_dir: Path, demo_boxes: list[Sandbox], tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("bad-config")
    config = copy_config(elsewhere)
    config.write_text(config.read_text().replace("account_level:", "acount_level:"))

    result = demo(config=config)

    assert result.exit_code == 2, result.output
    assert "acount_level" in result.output
    assert not (demo_dir / ".pls-sync").exists()
    assert demo_boxes == []


def test_after_the_demo_a_sandbox_process_serves_plan_sandbox(demo_dir: Path) -> None:
    assert demo().exit_code == 0
    env_file = demo_dir / ".pls-sync" / "sandbox.env"
    command = [sys.executable, "-c", "from pls_sync.cli import main; main()", "sandbox"]
    child = subprocess.Popen(
        [*command, "--port", "0"],
        cwd=demo_dir,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (env_file.exists() and sandbox_answers(read_sandbox_env(env_file)[URL])):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the sandbox did not start"
            time.sleep(0.05)
        first = read_sandbox_env(env_file)

        planned = CliRunner().invoke(
            cli.app, ["plan", "--sandbox", "--config", str(CONFIG), "--summary-json", "p.json"]
        )
    finally:
        child.terminate()
        child.communicate(timeout=30)

    assert planned.exit_code == 0, planned.output
    summary = json.loads((demo_dir / "p.json").read_text())
    for name in ("salesforce", "hubspot"):
        dest = summary["destinations"][name]
        assert dest["status"] == "planned" and dest["match"]["matched"] > 0
    assert "Traceback" not in planned.output
    assert set(first) >= {"SALESFORCE_SESSION_ID", "HUBSPOT_ACCESS_TOKEN"}
