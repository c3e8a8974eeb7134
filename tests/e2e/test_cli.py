"""End to end through the CLI: the demo warehouse, the real connectors, the CRM sandbox.

Every command runs in-process with Typer's ``CliRunner`` in a fresh working folder, at the demo
data's as-of time, so reruns see identical data. Assertions read what a user would see (exit
code, output, files) and what the CRM saw (the sandbox's request counts and records).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from connectors.state import SqlStateStore
from pls_sync import cli
from pls_sync.config import load_settings
from pls_sync.demo import SANDBOX_ENV, read_sandbox_env, sandbox_settings, write_sandbox_env
from pls_sync.demo_companies import demo_companies
from pls_sync.sandbox.server import Sandbox
from tests.e2e.conftest import CONFIG, DEMO_COMPANIES, DEMO_SEED, REPO_ROOT, Workdir, copy_config
from tests.processes import signal_when_ready

SF_WRITE = "sf.composite.sobjects.patch"
HS_WRITE = "hs.companies.batch_update"
WRITE_ENDPOINTS = {
    SF_WRITE,
    HS_WRITE,
    "sf.sobject.patch",
    "sf.sobject.create",
    "sf.sobject.upsert",
    "sf.bulk2.create",
    "sf.bulk2.upload",
    "hs.companies.batch_upsert",
    "hs.companies.update",
    "hs.tasks.create",
    "hs.tasks.batch_create",
    "hs.tasks.batch_upsert",
}
CSV_HEADER = [
    "account",
    "domain",
    "score",
    "tier",
    "qualified_since",
    "score_change",
    "team_size_points",
    "buyer_intent_points",
    "volume_points",
    "velocity_points",
    "breadth_points",
    "signals",
    "lead_channel",
    "mqls_checked",
    "motion",
    "fit_segment",
    "employees",
    "buyers",
    "active_users_28d",
    "first_seen",
    "age_guard",
    "salesforce_id",
    "hubspot_id",
]
TIERS = ("sales", "success", "self_serve")


def writes(counts: dict[str, int]) -> dict[str, int]:
    """The write requests among the sandbox's counts."""
    return {name: n for name, n in counts.items() if name in WRITE_ENDPOINTS}


def read_csv_text(text: str) -> list[list[str]]:
    """The rows of CSV text, header first."""
    return list(csv.reader(io.StringIO(text)))


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of an exported CSV."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def line_of(path: Path, needle: str) -> int:
    """1-based number of the first line of ``path`` containing ``needle``."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def match_line(dest: dict[str, Any]) -> str:
    """The 'matched / unmatched / ambiguous' cell as the summary table prints it."""
    m = dest["match"]
    return (
        f"{m['matched'] + m['ambiguous_resolved']} / {m['unmatched']} / "
        f"{m['ambiguous_resolved'] + m['ambiguous_skipped']}"
    )


def export_rows(workdir: Workdir, *flags: str) -> list[dict[str, str]]:
    """``pls-sync export`` at the demo's as-of, parsed."""
    result = workdir.invoke("export", "accounts.csv", "--as-of", workdir.as_of_arg, *flags)
    assert result.exit_code == 0, result.output
    return read_csv(workdir.root / "accounts.csv")[1]


# --------------------------------------------------------------------------- plan


def test_plan_prints_the_diff_saves_it_and_writes_nothing(workdir: Workdir, crm: Sandbox) -> None:
    accounts_before = copy.deepcopy(crm.salesforce.records["Account"])
    companies_before = {cid: crm.hubspot.company(cid) for cid in crm.hubspot.ids()}

    result, summary = workdir.sync("plan", summary="s.json")

    assert result.exit_code == 0, result.output
    out = result.output
    # DESIGN §4 keys, all present in the summary JSON.
    assert summary["dry_run"] is True and summary["command"] == "plan"
    wh, sc = summary["warehouse"], summary["scoring"]
    assert {"rows_read", "users", "accounts", "skipped_users", "skipped_reasons"} <= set(wh)
    assert wh["accounts"] == DEMO_COMPANIES
    assert wh["skipped_users"] == sum(wh["skipped_reasons"].values()) > 0
    assert {"free_mail", "invalid"} <= set(wh["skipped_reasons"])
    assert set(sc["tiers"]) == set(TIERS) and sum(sc["tiers"].values()) == sc["scored"] == 120
    assert sc["newly_qualified"] == sc["tiers"]["sales"]  # first run: every PQA is new
    assert set(summary["stages_seconds"]) >= {"read_and_score", "salesforce.plan", "hubspot.plan"}
    assert all(isinstance(v, float | int) and v >= 0 for v in summary["stages_seconds"].values())
    # Tier counts, match counts and the field diff are printed.
    tiers = sc["tiers"]
    assert (
        f"Scored 120 accounts: sales {tiers['sales']}, success {tiers['success']}, "
        f"self_serve {tiers['self_serve']}" in out
    )
    for name, object_name in (("salesforce", "Account"), ("hubspot", "companies")):
        dest = summary["destinations"][name]
        assert dest["status"] == "planned"
        assert {"matched", "unmatched", "ambiguous_resolved", "ambiguous_skipped"} <= set(
            dest["match"]
        )
        assert dest["match"]["matched"] > 0 and dest["match"]["unmatched"] > 0
        assert match_line(dest) in out
        assert dest["records_changed"] > 0
        assert dest["fields_changed"] == sum(dest["field_changes"].values())
        assert dest["min_write_calls"] == math.ceil(
            dest["records_changed"] / (200 if name == "salesforce" else 100)
        )
        assert dest["api_calls"]["write"] == 0
        unmatched = dest["top_unmatched"]
        assert 0 < len(unmatched) <= 10
        scores = [u["score"] for u in unmatched]
        assert scores == sorted(scores, reverse=True)
        assert unmatched[0]["domain"] in out
        title = next(ln for ln in out.splitlines() if ln.startswith(f"{name} {object_name}: "))
        assert f"{dest['records_changed']} records" in title
        assert "showing the first 15 records" in title  # the default --limit
        for field in dest["field_changes"]:
            assert field in out
    # Nothing written: no write request reached the CRM and its records are as they were.
    assert writes(crm.counts()) == {}
    assert crm.counts().get("sf.query", 0) >= 1
    assert crm.salesforce.records["Account"] == accounts_before
    assert {cid: crm.hubspot.company(cid) for cid in crm.hubspot.ids()} == companies_before
    # Nor in the state store: a plan records no run and no account state.
    store = SqlStateStore.open(workdir.state_url)
    assert store.recent_runs() == [] and store.load_account_states() == {}
    # The plan is saved, and lists exactly the changes the summary counts.
    plan_file = Path(summary["plan_file"])
    latest = workdir.root / ".pls-sync" / "plans" / "latest.json"
    assert plan_file.exists() and latest.exists()
    saved = json.loads(latest.read_text())
    assert saved == json.loads(plan_file.read_text())
    assert saved["run_id"] == summary["run_id"] and saved["as_of"] == summary["as_of"]
    by_dest = {plan["destination"]: plan for plan in saved["destinations"]}
    assert set(by_dest) == {"salesforce", "hubspot"}
    for name, plan in by_dest.items():
        assert len(plan["changes"]) == summary["destinations"][name]["records_changed"]
        assert plan["field_changes"] == summary["destinations"][name]["field_changes"]


def test_plan_as_json_or_csv_is_the_data_alone_on_stdout(workdir: Workdir, crm: Sandbox) -> None:
    as_json = workdir.invoke("plan", "--as-of", workdir.as_of_arg, "--format", "json")
    as_csv = workdir.invoke("plan", "--as-of", workdir.as_of_arg, "--format", "csv")

    assert as_json.exit_code == 0, as_json.output
    assert as_csv.exit_code == 0, as_csv.output
    document = json.loads(as_json.stdout)  # nothing but the JSON document on stdout
    summary, rows = document["summary"], document["changes"]
    assert summary["command"] == "plan" and summary["dry_run"] is True
    total = sum(d["fields_changed"] for d in summary["destinations"].values())
    assert len(rows) == total > 0
    assert (
        tuple(rows[0])
        == cli.PLAN_COLUMNS
        == (
            "destination",
            "object",
            "record_id",
            "account",
            "field",
            "from",
            "to",
            "reason",
        )
    )
    scores = [r for r in rows if r["field"] in ("PQA_Score__c", "pqa_score")]
    # Scores are whole numbers (85, not 85.0); the seeded CRM holds a few old ones already,
    # some on accounts no product account targets: those are cleared, and say why.
    assert scores and all(isinstance(r["to"], int) for r in scores if r["reason"] is None)
    cleared = [r for r in scores if r["reason"] is not None]
    assert cleared and all(r["to"] is None and r["reason"] == "not_target" for r in cleared)
    assert all(r["from"] is None or isinstance(r["from"], int) for r in scores)
    dated = [r for r in rows if r["field"] == "PQA_Qualified_Since__c"]
    assert dated and all(re.fullmatch(r"\d{4}-\d\d-\d\d(T\S+Z)?", r["to"]) for r in dated)
    table = read_csv_text(as_csv.stdout)
    assert tuple(table[0]) == cli.PLAN_COLUMNS
    assert len(table) - 1 == total
    assert {(r[0], r[2], r[4]) for r in table[1:]} == {
        (r["destination"], r["record_id"], r["field"]) for r in rows
    }
    for out in (as_json.stdout, as_csv.stdout):
        assert "Scored" not in out and "Plan saved" not in out  # no summary tables
        assert "datetime.datetime" not in out


def test_plan_limit_shows_that_many_records_and_0_shows_all(workdir: Workdir, crm: Sandbox) -> None:
    three = workdir.invoke("plan", "--as-of", workdir.as_of_arg, "--limit", "3")
    every = workdir.invoke("plan", "--as-of", workdir.as_of_arg, "--limit", "0")
    negative = workdir.invoke("plan", "--as-of", workdir.as_of_arg, "--limit", "-1")

    assert three.exit_code == 0 and every.exit_code == 0, three.output + every.output
    assert "showing the first 3 records" in three.stdout
    assert "showing the first" not in every.stdout
    assert len(every.stdout.splitlines()) > len(three.stdout.splitlines())
    assert negative.exit_code == 2 and "--limit" in negative.output


# --------------------------------------------------------------------------- run, rerun


def test_run_writes_the_minimum_then_a_rerun_writes_nothing(workdir: Workdir, crm: Sandbox) -> None:
    first, s1 = workdir.sync("run", summary="s1.json")
    assert first.exit_code == 0, first.output
    counts = crm.counts()
    crm.reset_counts()
    sf, hs = s1["destinations"]["salesforce"], s1["destinations"]["hubspot"]
    assert sf["status"] == hs["status"] == "succeeded"
    assert sf["records_changed"] > 0 and hs["records_changed"] > 0
    expected = {
        SF_WRITE: math.ceil(sf["records_changed"] / 200),
        HS_WRITE: math.ceil(hs["records_changed"] / 100),
    }
    assert writes(counts) == expected
    assert sf["write_calls"] == expected[SF_WRITE] and hs["write_calls"] == expected[HS_WRITE]
    assert sf["records_written"] == sf["records_changed"] and sf["rejected"] == 0
    assert hs["records_written"] == hs["records_changed"] and hs["rejected"] == 0
    assert f"{sf['records_written']} in {expected[SF_WRITE]} write calls" in first.output

    second, s2 = workdir.sync("run", summary="s2.json")
    assert second.exit_code == 0, second.output
    assert writes(crm.counts()) == {}
    for dest in s2["destinations"].values():
        assert dest["status"] == "succeeded"
        assert dest["records_changed"] == dest["write_calls"] == dest["records_written"] == 0
    assert "0 in 0 write calls" in second.output
    assert s2["scoring"]["newly_qualified"] == 0
    runs = SqlStateStore.open(workdir.state_url).recent_runs()
    assert [(r.run_id, r.status) for r in runs] == [
        (s2["run_id"], "succeeded"),
        (s1["run_id"], "succeeded"),
    ]

    # What the CRM holds now is what the export says, record by record.
    rows = export_rows(workdir, "--with-crm")
    top = rows[0]
    assert top["salesforce_id"] and top["hubspot_id"]
    checked = 0
    for row in rows:
        if row["salesforce_id"]:
            account = crm.salesforce.get("Account", row["salesforce_id"])
            assert account is not None
            assert account["PQA_Score__c"] == float(row["score"]), row["account"]
            assert account["PQA_Tier__c"] == row["tier"]
            assert account["PQA_Active_Users__c"] == float(row["active_users_28d"])
            assert (account["PQA_Signals__c"] or "") == row["signals"]
            assert (account["PQA_Qualified_Since__c"] is not None) == bool(row["qualified_since"])
            checked += 1
        if row["hubspot_id"]:
            company = crm.hubspot.company(row["hubspot_id"])
            assert float(company["pqa_score"]) == float(row["score"]), row["account"]
            assert company["pqa_tier"] == row["tier"]
    assert checked == sf["match"]["matched"] + sf["match"]["ambiguous_resolved"]


def test_a_rep_edit_in_the_crm_is_repaired_by_the_next_run(workdir: Workdir, crm: Sandbox) -> None:
    first, _ = workdir.sync("run", summary="s1.json")
    assert first.exit_code == 0, first.output
    sf_id = next(i for i, a in crm.salesforce.records["Account"].items() if a["PQA_Score__c"])
    hs_id = next(i for i in crm.hubspot.ids() if crm.hubspot.company(i).get("pqa_score"))
    sf_score = crm.salesforce.get("Account", sf_id)["PQA_Score__c"]  # type: ignore[index]
    hs_score = crm.hubspot.company(hs_id)["pqa_score"]
    # Someone overwrites the score through the public APIs (which stamp the change), a minute
    # after the run; the next run comes a minute later, when HubSpot's search shows the edit.
    later = [timedelta(minutes=1)]
    crm.set_clock(lambda: datetime.now(UTC) + later[0])
    edited = [
        requests.patch(
            f"{crm.url}/services/data/v59.0/sobjects/Account/{sf_id}",
            json={"PQA_Score__c": sf_score + 1},
            headers={"Authorization": f"Bearer {crm.session_id}"},
            timeout=5,
        ),
        requests.patch(
            f"{crm.url}/crm/v3/objects/companies/{hs_id}",
            json={"properties": {"pqa_score": str(int(float(hs_score)) + 1)}},
            headers={"Authorization": f"Bearer {crm.hubspot_token}"},
            timeout=5,
        ),
    ]
    assert [r.status_code for r in edited] == [204, 200]
    crm.reset_counts()
    later[0] = timedelta(minutes=2)

    second, summary = workdir.sync("run", summary="s2.json")

    assert second.exit_code == 0, second.output
    assert summary["destinations"]["salesforce"]["field_changes"] == {"PQA_Score__c": 1}
    assert summary["destinations"]["hubspot"]["field_changes"] == {"pqa_score": 1}
    assert writes(crm.counts()) == {SF_WRITE: 1, HS_WRITE: 1}
    assert crm.salesforce.get("Account", sf_id)["PQA_Score__c"] == sf_score  # type: ignore[index]
    assert crm.hubspot.company(hs_id)["pqa_score"] == hs_score


def test_an_unknown_destination_is_a_usage_error(workdir: Workdir, crm: Sandbox) -> None:
    result = workdir.invoke("run", "--as-of", workdir.as_of_arg, "--destination", "salesfroce")

    assert result.exit_code == 2, result.output
    assert "salesfroce" in result.output
    assert not workdir.state.exists()


# --------------------------------------------------------------------------- export


def test_export_needs_no_crm(workdir: Workdir) -> None:
    # No CRM variable is set (tests/conftest.py clears them): the default URLs point at
    # .pls-sync/ in the working folder.
    result = workdir.invoke("export", "accounts.csv", "--as-of", workdir.as_of_arg)

    assert result.exit_code == 0, result.output
    assert f"Wrote {DEMO_COMPANIES} accounts to accounts.csv" in result.output
    header, rows = read_csv(workdir.root / "accounts.csv")
    assert header == CSV_HEADER
    assert len(rows) == DEMO_COMPANIES
    assert len({row["account"] for row in rows}) == DEMO_COMPANIES
    scores = [int(row["score"]) for row in rows]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= s <= 100 for s in scores)
    for row in rows:
        assert row["tier"] in TIERS
        assert row["salesforce_id"] == row["hubspot_id"] == ""
        if row["tier"] == "sales":
            assert int(row["score"]) >= 80 and row["qualified_since"]
        if int(row["score"]) >= 80 and row["tier"] != "sales":
            assert row["age_guard"], row  # only the age guard keeps a high score out of sales
    assert any(row["signals"] for row in rows)
    # Without a CRM no MQL was read: the file and the message say so.
    assert {row["mqls_checked"] for row in rows} == {"false"}
    assert "MQLs not read without a CRM (--with-crm)" in result.stderr


def test_export_with_crm_says_when_it_cannot_reach_a_crm(workdir: Workdir) -> None:
    result = workdir.invoke("export", "accounts.csv", "--as-of", workdir.as_of_arg, "--with-crm")

    assert result.exit_code == 1, result.output
    assert "salesforce" in result.output, result.output  # which CRM was not matched, and why
    assert "no CRM could be reached" in result.output
    assert not (workdir.root / "accounts.csv").exists()


def test_export_to_stdout_with_a_dash(workdir: Workdir) -> None:
    result = workdir.invoke("export", "-", "--as-of", workdir.as_of_arg)

    assert result.exit_code == 0, result.output
    table = read_csv_text(result.stdout)
    assert table[0] == CSV_HEADER and len(table) == DEMO_COMPANIES + 1
    assert f"Wrote {DEMO_COMPANIES} accounts to stdout" in result.stderr
    assert not (workdir.root / "-").exists()


def test_export_guards_cells_a_spreadsheet_would_evaluate(workdir: Workdir) -> None:
    import duckdb

    first = export_rows(workdir)
    target = next(r for r in first if r["buyers"])
    email = target["buyers"].split(" ")[0]
    with duckdb.connect(str(workdir.warehouse)) as warehouse:
        warehouse.execute("UPDATE users SET email = '=2+5' || email WHERE email = ?", [email])

    rows = {r["account"]: r for r in export_rows(workdir)}

    assert rows[target["account"]]["buyers"].startswith(f"'=2+5{email} (")
    changes = [r["score_change"] for r in rows.values() if r["score_change"].startswith("-")]
    assert all(re.fullmatch(r"-\d+", c) for c in changes)  # negative numbers stay numbers


@pytest.mark.parametrize("name", ["accounts.xlsx", "accounts.txt", "accounts"])
def test_export_refuses_a_file_name_a_spreadsheet_would_misread(
    workdir: Workdir, name: str
) -> None:
    result = workdir.invoke("export", name, "--as-of", workdir.as_of_arg)

    assert result.exit_code == 2, result.output
    assert "export writes CSV; name the file .csv (Excel opens it)" in result.output
    assert not (workdir.root / name).exists()


def test_export_to_a_folder_or_an_unwritable_path_is_one_line(workdir: Workdir) -> None:
    folder = workdir.root / "out.csv"
    folder.mkdir()
    blocker = workdir.root / "not-a-folder"
    blocker.write_text("a file\n")

    into_folder = workdir.invoke("export", str(folder), "--as-of", workdir.as_of_arg)
    unwritable = workdir.invoke("export", str(blocker / "a.csv"), "--as-of", workdir.as_of_arg)

    assert into_folder.exit_code == 2 and "is a directory" in into_folder.stderr
    assert unwritable.exit_code == 1
    assert unwritable.stderr.strip() == (
        f"cannot write {blocker / 'a.csv'}: {blocker} is a file, not a folder"
    )
    assert "Traceback" not in into_folder.output + unwritable.output


def test_export_tsv_and_with_crm_says_mqls_were_checked(workdir: Workdir, crm: Sandbox) -> None:
    result = workdir.invoke("export", "accounts.tsv", "--as-of", workdir.as_of_arg, "--with-crm")

    assert result.exit_code == 0, result.output
    with (workdir.root / "accounts.tsv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert len(rows) == DEMO_COMPANIES
    assert {row["mqls_checked"] for row in rows} == {"true"}
    assert "MQLs not read" not in result.output


# --------------------------------------------------------------------------- explain


def test_explain_shows_breakdown_signals_and_matched_records(
    workdir: Workdir, crm: Sandbox
) -> None:
    rows = export_rows(workdir, "--with-crm")
    top = next(r for r in rows if r["salesforce_id"] and r["hubspot_id"] and r["signals"])
    crm.reset_counts()

    result = workdir.invoke("explain", top["domain"], "--as-of", workdir.as_of_arg)

    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{top['domain']}: score {top['score']}, tier {top['tier']}" in out
    for component in ("team_size", "volume", "velocity", "breadth"):
        points = float(top[f"{component}_points"])
        assert re.search(rf"{component}\s+{points:5.1f} pts", out), component
    for described in top["signals"].split("; "):
        assert described in out
    assert re.search(rf"salesforce: \w+ -> {top['salesforce_id']}", out)
    assert re.search(rf"hubspot: \w+ -> {top['hubspot_id']}", out)
    # Nothing was synced yet, so the score is among the fields still to write.
    assert "PQA_Score__c" in out and "pqa_score" in out
    assert writes(crm.counts()) == {}


def test_explain_accepts_a_url_and_rejects_an_unknown_domain(
    workdir: Workdir, crm: Sandbox
) -> None:
    top = export_rows(workdir)[0]

    as_url = workdir.invoke(
        "explain", f"https://www.{top['domain'].upper()}/pricing", "--as-of", workdir.as_of_arg
    )
    unknown = workdir.invoke("explain", "no-such-company.example", "--as-of", workdir.as_of_arg)

    assert as_url.exit_code == 0, as_url.output
    assert f"{top['domain']}: score {top['score']}" in as_url.output
    assert unknown.exit_code == 1
    assert "No product account 'no-such-company.example'" in unknown.output


def test_explain_goes_on_past_a_failing_destination(
    workdir: Workdir, crm: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = export_rows(workdir, "--with-crm")
    top = next(r for r in rows if r["hubspot_id"])
    monkeypatch.setenv("SALESFORCE_SESSION_ID", BAD_SESSION)

    result = workdir.invoke("explain", top["domain"], "--as-of", workdir.as_of_arg)

    assert result.exit_code == 1, result.output
    assert "INVALID_SESSION_ID" in result.output
    assert re.search(rf"hubspot: \w+ -> {top['hubspot_id']}", result.output), result.output
    assert BAD_SESSION not in result.output


def test_explain_prints_values_as_people_write_them(workdir: Workdir, crm: Sandbox) -> None:
    rows = export_rows(workdir, "--with-crm")
    top = next(r for r in rows if r["salesforce_id"] and r["qualified_since"])

    result = workdir.invoke("explain", top["domain"], "--as-of", workdir.as_of_arg)

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert f"qualified since: {top['qualified_since']};" in out
    assert re.search(r"qualified since: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ;", out)
    assert f"    PQA_Score__c: (empty) -> {top['score']}" in out.splitlines()
    assert f"    pqa_score: (empty) -> {top['score']}" in out.splitlines()
    for repr_marker in ("datetime.datetime(", "{'", "PQA_Score__c': "):
        assert repr_marker not in out


def test_explain_as_json_holds_the_whole_breakdown(workdir: Workdir, crm: Sandbox) -> None:
    rows = export_rows(workdir, "--with-crm")
    top = next(r for r in rows if r["salesforce_id"] and r["hubspot_id"] and r["qualified_since"])

    result = workdir.invoke(
        "explain", top["domain"], "--as-of", workdir.as_of_arg, "--format", "json"
    )

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["domain"], data["score"], data["tier"]) == (
        top["domain"],
        int(top["score"]),
        top["tier"],
    )
    assert data["qualified_since"] == top["qualified_since"]
    assert (data["channel"], data["motion"]) == (top["lead_channel"], top["motion"])
    assert "; ".join(data["buyers"]) == top["buyers"]
    assert [s["description"] for s in data["signals"]] == top["signals"].split("; ")
    for component in data["components"]:
        assert component["points"] == float(top[f"{component['name']}_points"])
    sf, hs = data["destinations"]["salesforce"], data["destinations"]["hubspot"]
    assert sf["record_id"] == top["salesforce_id"] and hs["record_id"] == top["hubspot_id"]
    assert sf["fields"]["PQA_Score__c"] == {"from": None, "to": int(top["score"])}
    assert hs["fields"]["pqa_score"] == {"from": None, "to": int(top["score"])}


def test_explain_as_csv_is_one_row(workdir: Workdir, crm: Sandbox) -> None:
    top = export_rows(workdir, "--with-crm")[0]

    result = workdir.invoke(
        "explain", top["domain"], "--as-of", workdir.as_of_arg, "--format", "csv"
    )

    assert result.exit_code == 0, result.output
    header, row = read_csv_text(result.stdout)
    data = dict(zip(header, row, strict=True))
    assert (data["domain"], data["score"]) == (top["domain"], top["score"])
    assert data["salesforce_record_id"] == top["salesforce_id"]
    assert f"PQA_Score__c: (empty) -> {top['score']}" in data["salesforce_fields"]


# --------------------------------------------------------------------------- validate


def test_validate_passes_against_the_sandbox(workdir: Workdir, crm: Sandbox) -> None:
    result = workdir.invoke("validate")

    assert result.exit_code == 0, result.output
    for name in ("salesforce", "hubspot"):
        fields = len(load_settings(CONFIG).destinations[name].mapping.fields)
        line = next(ln for ln in result.output.splitlines() if ln.startswith(f"{name}: "))
        assert f"all {fields} mapped fields" in line, line
    counts = crm.counts()
    assert counts.get("sf.describe", 0) >= 1 and counts.get("hs.properties.list", 0) >= 1
    assert writes(counts) == {}


@pytest.mark.parametrize(
    ("mapping", "target"),
    [("salesforce.yaml", "PQA_Renewal_Risk__c"), ("hubspot.yaml", "pqa_renewal_risk")],
)
def test_validate_names_a_target_missing_from_the_crm_schema(
    workdir: Workdir, crm: Sandbox, mapping: str, target: str
) -> None:
    config = copy_config(workdir.root)
    mapping_file = workdir.root / "mappings" / mapping
    mapping_file.write_text(mapping_file.read_text() + f"  {target}: score\n")

    result = workdir.invoke("validate", config=config)

    assert result.exit_code == 2, result.output
    problem = next(line for line in result.output.splitlines() if target in line)
    assert mapping in problem, problem
    assert writes(crm.counts()) == {}


# --------------------------------------------------------------------------- config errors


def _bad_key(root: Path) -> tuple[Path, str, str]:
    path = root / "config" / "pls_sync.yaml"
    path.write_text(path.read_text().replace("account_level: company", "acount_level: company"))
    return path, "acount_level", "acount_level"


def _owner_target(root: Path) -> tuple[Path, str, str]:
    path = root / "mappings" / "salesforce.yaml"
    path.write_text(path.read_text() + "  OwnerId: score\n")
    return path, "OwnerId: score", "fields.OwnerId"


def _weights(root: Path) -> tuple[Path, str, str]:
    path = root / "config" / "scoring.yaml"
    path.write_text(path.read_text().replace("weight: 0.45", "weight: 0.50"))
    # The sum belongs to no single weight: the issue points at the components mapping.
    return path, "components:", "weights sum to 1.05"


def _missing_var(root: Path) -> tuple[Path, str, str]:
    path = root / "config" / "pls_sync.yaml"
    text = path.read_text().replace(
        "${PLS_SYNC_STATE_URL:-sqlite:///.pls-sync/state.sqlite}", "${PLS_SYNC_E2E_UNSET_URL}"
    )
    path.write_text(text)
    return path, "${PLS_SYNC_E2E_UNSET_URL}", "PLS_SYNC_E2E_UNSET_URL"


BREAKERS = {
    "unknown key": _bad_key,
    "OwnerId target": _owner_target,
    "weights not summing to 1": _weights,
    "missing ${VAR}": _missing_var,
}


@pytest.mark.parametrize("breaker", list(BREAKERS), ids=list(BREAKERS))
def test_a_config_error_exits_2_names_file_line_key_and_runs_nothing(
    workdir: Workdir, crm: Sandbox, breaker: str
) -> None:
    config = copy_config(workdir.root)
    path, needle, key = BREAKERS[breaker](workdir.root)
    line = line_of(path, needle)

    result = workdir.invoke("run", "--as-of", workdir.as_of_arg, config=config)

    assert result.exit_code == 2, result.output
    assert "Configuration error" in result.output
    issue = next((ln for ln in result.output.splitlines() if f"{path.name}:{line}:" in ln), None)
    assert issue is not None, result.output
    assert key in issue, issue
    assert not workdir.state.exists()
    assert not (workdir.root / ".pls-sync" / "plans").exists()
    assert crm.counts() == {}


def test_every_config_error_is_reported_at_once(workdir: Workdir, crm: Sandbox) -> None:
    config = copy_config(workdir.root)
    expected = [breaker(workdir.root) for breaker in BREAKERS.values()]

    result = workdir.invoke("plan", "--as-of", workdir.as_of_arg, config=config)

    assert result.exit_code == 2, result.output
    for path, needle, key in expected:
        prefix = f"{path.name}:{line_of(path, needle)}:"
        assert any(prefix in ln and key in ln for ln in result.output.splitlines()), (
            prefix,
            key,
            result.output,
        )
    assert not workdir.state.exists() and crm.counts() == {}


# --------------------------------------------------------------------------- failures


BAD_SESSION = "00Dwrong!e2e-session-canary-4f1c"


def test_a_bad_salesforce_session_fails_salesforce_only_and_stays_secret(
    workdir: Workdir, crm: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SALESFORCE_SESSION_ID", BAD_SESSION)

    result, summary = workdir.sync("run", summary="s.json")

    assert result.exit_code == 1, result.output
    assert summary["status"] == "partial"
    sf, hs = summary["destinations"]["salesforce"], summary["destinations"]["hubspot"]
    assert sf["status"] == "failed" and "INVALID_SESSION_ID" in sf["error"]
    assert hs["status"] == "succeeded" and hs["records_written"] == hs["records_changed"] > 0
    counts = crm.counts()
    assert writes(counts) == {HS_WRITE: math.ceil(hs["records_changed"] / 100)}
    written = [
        cid
        for cid in crm.hubspot.ids()
        if crm.hubspot.company(cid).get("pqa_score")
        or crm.hubspot.company(cid).get("pqa_lead_channel")
    ]
    # every record written holds a value, but those cleared (stale values no account wants)
    assert len(written) >= hs["records_written"] - sum(hs["records_retired"].values())
    assert "salesforce: failed" in result.output and "hubspot: succeeded" in result.output
    assert "INVALID_SESSION_ID" in result.output
    stored = SqlStateStore.open(workdir.state_url).recent_runs()
    for text in (result.output, json.dumps(summary), json.dumps([r.summary for r in stored])):
        assert BAD_SESSION not in text
        assert "e2e-session-canary" not in text


def test_records_the_crm_rejects_are_reported_and_kept(workdir: Workdir, crm: Sandbox) -> None:
    planned, plan = workdir.sync("plan", summary="plan.json")
    assert planned.exit_code == 0, planned.output
    saved = json.loads(Path(plan["plan_file"]).read_text())
    sf_plan = next(p for p in saved["destinations"] if p["destination"] == "salesforce")
    doomed = sorted(change["record_id"] for change in sf_plan["changes"][:2])
    # Deleted after the run has read: Salesforce's getDeleted window ends at the last whole
    # minute, so a deletion stamped later is the next run's to see, whatever the clock says now.
    clock = crm.salesforce.clock
    later = datetime.now(UTC) + timedelta(minutes=2)
    crm.salesforce.clock = lambda: later
    try:
        for record_id in doomed:
            crm.salesforce.delete("Account", record_id)
    finally:
        crm.salesforce.clock = clock
    crm.reset_counts()

    result, summary = workdir.sync("run", summary="run.json")

    assert result.exit_code == 1, result.output
    assert summary["status"] == "partial"
    sf = summary["destinations"]["salesforce"]
    assert sf["status"] == "partial"
    assert sf["rejected"] == 2
    assert sf["records_written"] == sf["records_changed"] - 2
    assert sf["rejection_reasons"] == {"ENTITY_IS_DELETED": 2}
    assert sorted(r["record_id"] for r in sf["rejections"]) == doomed
    assert all(r["message"] for r in sf["rejections"])
    assert "ENTITY_IS_DELETED 2" in result.output
    assert summary["destinations"]["hubspot"]["status"] == "succeeded"
    kept = SqlStateStore.open(workdir.state_url).open_rejections("salesforce")
    assert sorted(r.record_id for r in kept) == doomed
    assert {r.code for r in kept} == {"ENTITY_IS_DELETED"}
    assert all(r.run_id == summary["run_id"] and r.message for r in kept)
    # The other records were written in the minimum number of calls.
    assert crm.counts()[SF_WRITE] == math.ceil(sf["records_changed"] / 200)


# --------------------------------------------------------------------------- status


def test_status_follows_the_last_run(
    workdir: Workdir, crm: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    none_yet = workdir.invoke("status")
    assert none_yet.exit_code == 1 and "state store not found" in none_yet.output

    ok_run, ok_summary = workdir.sync("run", summary="ok.json")
    assert ok_run.exit_code == 0, ok_run.output
    healthy = workdir.invoke("status")
    assert healthy.exit_code == 0, healthy.output
    written = sum(d["records_written"] for d in ok_summary["destinations"].values())
    assert re.search(rf"run\s+succeeded\s+.*written {written}, rejected 0", healthy.output)

    monkeypatch.setenv("PLS_SYNC_WAREHOUSE_URL", f"duckdb:///{workdir.root / 'gone.duckdb'}")
    failed_run = workdir.invoke("run", "--as-of", workdir.as_of_arg)
    assert failed_run.exit_code == 1
    unhealthy = workdir.invoke("status")
    assert unhealthy.exit_code == 1, unhealthy.output
    assert "UNHEALTHY: the last run" in unhealthy.output and "failed" in unhealthy.output
    assert "gone.duckdb" in unhealthy.output  # the failed run's error is shown


def test_status_on_an_unreachable_state_store_exits_1_without_the_password(
    workdir: Workdir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "PLS_SYNC_STATE_URL", "postgresql+psycopg://pls:e2e-state-secret@127.0.0.1:1/pls"
    )

    result = workdir.invoke("status")

    assert result.exit_code == 1
    assert "State store unavailable" in result.output
    assert "127.0.0.1:1" in result.output
    assert "e2e-state-secret" not in result.output


def test_status_on_an_unwritable_sqlite_state_store_exits_1(
    workdir: Workdir, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = workdir.root / "not-a-folder"
    blocker.write_text("a file where the state store's folder should be\n")
    monkeypatch.setenv("PLS_SYNC_STATE_URL", f"sqlite:///{blocker}/state.sqlite")

    result = workdir.invoke("status")

    assert result.exit_code == 1
    assert "State store unavailable" in result.output
    assert "not-a-folder" in result.output


def test_status_does_not_create_a_missing_state_store(
    workdir: Workdir, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = workdir.root / "typo" / "state.sqlite"
    monkeypatch.setenv("PLS_SYNC_STATE_URL", f"sqlite:///{missing}")

    result = workdir.invoke("status")

    assert result.exit_code == 1
    assert not missing.parent.exists()
    assert "state.sqlite" in result.output


def test_status_as_json_or_csv_lists_runs_and_gives_the_verdict(
    workdir: Workdir, crm: Sandbox
) -> None:
    ran, summary = workdir.sync("run", summary="s.json")
    assert ran.exit_code == 0, ran.output
    written = sum(d["records_written"] for d in summary["destinations"].values())

    as_json = workdir.invoke("status", "--format", "json")
    as_csv = workdir.invoke("status", "--format", "csv", "--limit", "1")
    verdict_only = workdir.invoke("status", "--format", "json", "--limit", "0")

    assert as_json.exit_code == as_csv.exit_code == verdict_only.exit_code == 0
    document = json.loads(as_json.stdout)
    assert document["healthy"] is True and document["verdict"] == "healthy"
    (latest,) = document["runs"]
    assert (latest["command"], latest["status"], latest["written"]) == ("run", "succeeded", written)
    assert latest["started_at"].endswith("Z") and latest["duration"] >= 0
    header, row = read_csv_text(as_csv.stdout)
    assert header == ["started_at", "command", "status", "duration", "written", "rejected", "error"]
    assert row[:3] == [latest["started_at"], "run", "succeeded"]
    none_listed = json.loads(verdict_only.stdout)
    assert none_listed["runs"] == [] and none_listed["healthy"] is True


def test_status_limit_0_still_judges_the_last_run(
    workdir: Workdir, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlStateStore.open(f"sqlite:///{workdir.root / '.pls-sync' / 'state.sqlite'}")
    at = workdir.as_of
    store.begin_run("r1", "run", at)
    store.finish_run("r1", "failed", at, {}, "the warehouse was down")

    result = workdir.invoke("status", "--limit", "0")
    negative = workdir.invoke("status", "--limit", "-1")

    assert result.exit_code == 1
    assert "UNHEALTHY: the last run (r1) failed" in result.stdout
    assert "the warehouse was down" not in result.stdout  # no run listed
    assert negative.exit_code == 2 and "--limit" in negative.output


# --------------------------------------------------------------------------- warehouse


@pytest.mark.parametrize("command", ["run", "plan", "export"])
def test_an_unreachable_warehouse_exits_1_with_a_clear_message(
    workdir: Workdir, crm: Sandbox, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("PLS_SYNC_WAREHOUSE_URL", "duckdb:////nonexistent/x.duckdb")
    args = [command, "--as-of", workdir.as_of_arg]
    if command == "export":
        args.insert(1, "accounts.csv")

    result = workdir.invoke(*args)

    assert result.exit_code == 1, result.output
    assert "failed" in result.output
    assert "warehouse" in result.output and "/nonexistent/x.duckdb" in result.output
    assert "Traceback" not in result.output
    assert not Path("/nonexistent/x.duckdb").exists()
    assert writes(crm.counts()) == {}
    assert not (workdir.root / "accounts.csv").exists()


def test_sigterm_mid_write_finishes_the_batch_in_flight_and_the_next_run_converges(
    workdir: Workdir, crm: Sandbox
) -> None:
    # A real `pls-sync run` process, SIGTERMed while its first Salesforce batch is in flight
    # (the sandbox holds that request for two seconds).
    config = copy_config(workdir.root)
    text = config.read_text()
    config.write_text(text.replace("batch_size: 200 ", "batch_size: 20 ", 1))
    crm.faults.add("slow", endpoint=SF_WRITE, times=1, delay=2.0)
    command = [
        sys.executable,
        "-c",
        "from pls_sync.cli import main; main()",
        "run",
        "--as-of",
        workdir.as_of_arg,
        "--summary-json",
        "stopped.json",
        "--config",
        str(config),
    ]
    child = subprocess.Popen(
        command,
        cwd=workdir.root,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err = signal_when_ready(
        child, lambda: crm.counts().get(SF_WRITE, 0) >= 1, signal.SIGTERM, timeout=60
    )

    assert child.returncode == 0, err
    summary = json.loads((workdir.root / "stopped.json").read_text())
    assert summary["status"] == "stopped"
    sf, hs = summary["destinations"]["salesforce"], summary["destinations"]["hubspot"]
    assert sf["status"] == "stopped"
    assert (sf["write_calls"], sf["records_written"]) == (1, 20)  # the batch in flight, whole
    assert sf["not_attempted"] == sf["records_changed"] - 20 > 0
    assert hs["status"] == "stopped" and not hs.get("write_calls")  # never started
    assert writes(crm.counts()) == {SF_WRITE: 1}

    # The next run writes exactly what was left; the one after has nothing to do.
    crm.reset_counts()
    second, s2 = workdir.sync("run", summary="s2.json", config=config)
    assert second.exit_code == 0, second.output
    left = sf["records_changed"] - 20
    assert s2["destinations"]["salesforce"]["records_changed"] == left
    assert s2["destinations"]["salesforce"]["records_written"] == left
    assert writes(crm.counts())[SF_WRITE] == math.ceil(left / 20)
    hubspot = s2["destinations"]["hubspot"]
    assert hubspot["status"] == "succeeded"
    assert hubspot["records_written"] == hubspot["records_changed"] > 0
    crm.reset_counts()
    third, s3 = workdir.sync("run", summary="s3.json", config=config)
    assert third.exit_code == 0 and writes(crm.counts()) == {}


# --------------------------------------------------------------------------- sandbox


def serve_once(monkeypatch: pytest.MonkeyPatch) -> list[Sandbox]:
    """Make ``pls-sync sandbox`` return instead of serving; the sandboxes it made, in order."""
    served: list[Sandbox] = []

    def serve_and_stop(self: Sandbox) -> None:
        served.append(self)
        self._server.server_close()

    monkeypatch.setattr(Sandbox, "serve_forever", serve_and_stop)
    return served


def sandbox_env(root: Path, box: Sandbox) -> Path:
    """Write the settings ``pls-sync sandbox`` would write for ``box``; return the file."""
    path = root / SANDBOX_ENV
    write_sandbox_env(path, sandbox_settings(box.url, box.session_id, box.hubspot_token))
    return path


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sandbox_saves_its_settings_and_keeps_its_credentials_across_restarts(
    workdir: Workdir, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = serve_once(monkeypatch)
    args = ["sandbox", "--port", "0", "--companies", "12"]

    first = workdir.runner.invoke(cli.app, args)
    second = workdir.runner.invoke(cli.app, args)

    assert first.exit_code == second.exit_code == 0, first.output + second.output
    path = workdir.root / SANDBOX_ENV
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    one, two = served
    assert (two.session_id, two.hubspot_token) == (one.session_id, one.hubspot_token)
    assert read_sandbox_env(path) == {
        "SALESFORCE_INSTANCE_URL": two.url,
        "SALESFORCE_SESSION_ID": one.session_id,
        "HUBSPOT_BASE_URL": two.url,
        "HUBSPOT_ACCESS_TOKEN": one.hubspot_token,
        "PLS_SYNC_HUBSPOT_ENABLED": "true",
    }
    assert f"SALESFORCE_SESSION_ID={one.session_id}" in first.stdout.splitlines()[2]


def test_sandbox_behaviours_are_tunable_from_the_command_line(
    workdir: Workdir, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = serve_once(monkeypatch)
    default = ["sandbox", "--port", "0", "--companies", "3"]
    tuned = [*default, "--search-lag", "0", "--search-per-second", "0", "--bulk-polls", "0"]

    assert workdir.runner.invoke(cli.app, default).exit_code == 0
    assert workdir.runner.invoke(cli.app, tuned).exit_code == 0

    realistic, relaxed = served
    assert realistic.hubspot is not None and relaxed.hubspot is not None
    assert realistic.hubspot.search_lag_seconds == 3.0
    assert realistic.hubspot.search_limiter.per_second == 5
    assert realistic.salesforce.bulk_polls_in_progress == 2
    assert relaxed.hubspot.search_lag_seconds == 0
    assert relaxed.hubspot.search_limiter.per_second is None
    assert relaxed.salesforce.bulk_polls_in_progress == 0

    assert workdir.runner.invoke(cli.app, [*default, "--bare"]).exit_code == 0
    bare = served[2]
    assert bare.salesforce.bare and bare.hubspot is not None and bare.hubspot.bare
    assert not realistic.salesforce.bare


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_sandbox_on_a_port_out_of_range_is_a_usage_error(workdir: Workdir, port: str) -> None:
    result = workdir.runner.invoke(cli.app, ["sandbox", "--port", port])

    assert result.exit_code == 2 and "--port" in result.output
    assert not (workdir.root / SANDBOX_ENV).exists()


def test_sandbox_on_a_port_in_use_says_so(workdir: Workdir) -> None:
    with Sandbox(seed=None) as other:
        result = workdir.runner.invoke(cli.app, ["sandbox", "--port", str(other.port)])

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"port {other.port} is in use: pass --port or stop the other process"
    )
    assert not (workdir.root / SANDBOX_ENV).exists()


def test_the_sandbox_option_wins_over_the_environment_for_one_command(
    workdir: Workdir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SALESFORCE_INSTANCE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("SALESFORCE_SESSION_ID", BAD_SESSION)
    companies = demo_companies(DEMO_SEED, DEMO_COMPANIES)
    with Sandbox(seed=DEMO_SEED, companies=companies) as box:
        sandbox_env(workdir.root, box)

        result, summary = workdir.sync("plan", "--sandbox", summary="p.json")
        assert result.exit_code == 0, result.output
        for name in ("salesforce", "hubspot"):  # the file enables HubSpot too
            assert summary["destinations"][name]["status"] == "planned"
            assert summary["destinations"][name]["records_changed"] > 0
        exported = workdir.invoke(
            "export", "accounts.csv", "--sandbox", "--as-of", workdir.as_of_arg
        )

    assert exported.exit_code == 0, exported.output  # --sandbox implies --with-crm
    rows = read_csv(workdir.root / "accounts.csv")[1]
    assert any(r["salesforce_id"] and r["hubspot_id"] for r in rows)
    assert {r["mqls_checked"] for r in rows} == {"true"}
    assert os.environ["SALESFORCE_SESSION_ID"] == BAD_SESSION  # given back afterwards
    assert "HUBSPOT_BASE_URL" not in os.environ


def test_a_restarted_sandbox_is_read_in_full(workdir: Workdir) -> None:
    companies = demo_companies(DEMO_SEED, DEMO_COMPANIES)
    with Sandbox(seed=DEMO_SEED, companies=companies) as first_box:
        sandbox_env(workdir.root, first_box)
        ran, first = workdir.sync("run", "--sandbox", summary="run.json")
        session, token = first_box.session_id, first_box.hubspot_token
    assert ran.exit_code == 0, ran.output
    # `pls-sync sandbox` again: the same credentials, a CRM holding none of what was written.
    with Sandbox(
        seed=DEMO_SEED, companies=companies, session_id=session, hubspot_token=token
    ) as second_box:
        sandbox_env(workdir.root, second_box)
        planned, second = workdir.sync("plan", "--sandbox", summary="plan.json")

    assert planned.exit_code == 0, planned.output
    for name in ("salesforce", "hubspot"):
        again, before = second["destinations"][name], first["destinations"][name]
        assert again["crm_read"]["mode"] == "full"
        assert again["records_changed"] == before["records_changed"] > 0


SANDBOX_COMMANDS = {
    "run": ["run"],
    "plan": ["plan"],
    "validate": ["validate"],
    "explain": ["explain", "acme.com"],
    "export": ["export", "accounts.csv"],
    "status": ["status"],
    "lists": ["lists", "abm"],
}


@pytest.mark.parametrize("command", list(SANDBOX_COMMANDS))
def test_the_sandbox_option_without_a_sandbox_says_how_to_start_one(
    workdir: Workdir, command: str
) -> None:
    args = [*SANDBOX_COMMANDS[command], "--sandbox"]
    no_file = workdir.invoke(*args)
    port = closed_port()
    write_sandbox_env(
        workdir.root / SANDBOX_ENV, sandbox_settings(f"http://127.0.0.1:{port}", "s", "t")
    )
    nobody_there = workdir.invoke(*args)

    hint = "start it with `pls-sync sandbox` in another terminal"
    assert no_file.exit_code == nobody_there.exit_code == 1
    assert no_file.stderr.strip() == f"no CRM sandbox settings at {SANDBOX_ENV}: {hint}"
    assert (
        nobody_there.stderr.strip() == f"no CRM sandbox answers at http://127.0.0.1:{port}: {hint}"
    )
    assert not (workdir.root / ".pls-sync" / "state.sqlite").exists()


def test_report_writes_one_self_contained_page_after_a_run(workdir: Workdir, crm: Sandbox) -> None:
    result, _ = workdir.sync("run", summary="run.json")
    assert result.exit_code == 0, result.output

    written = workdir.invoke("report", "--output", "out/report.html")

    assert written.exit_code == 0, written.output
    page = (workdir.root / "out" / "report.html").read_text(encoding="utf-8")
    assert "Report written to out/report.html" in written.output
    for figure in ("score-distribution", "tier-flow", "match-rate", "channels", "motions"):
        assert f'id="{figure}"' in page
    assert "run <code>pls-sync calibrate</code>" in page  # no calibration yet
    assert 'src="http' not in page and "<link" not in page and "<script" not in page


def test_report_after_run_writes_the_page_and_never_fails_the_run(
    workdir: Workdir, crm: Sandbox
) -> None:
    config = copy_config(workdir.root)
    text = config.read_text()
    config.write_text(text.replace("after_run: false", "after_run: true", 1))

    result, summary = workdir.sync("run", summary="run.json", config=config)
    assert result.exit_code == 0, result.output
    assert "Report written to .pls-sync/report.html" in result.output
    page = (workdir.root / ".pls-sync" / "report.html").read_text(encoding="utf-8")
    assert 'id="score-distribution"' in page and summary["run_id"] in page

    (workdir.root / "blocked").write_text("a file where the folder should be")
    config.write_text(
        config.read_text().replace("path: .pls-sync/report.html", "path: blocked/report.html")
    )
    again, _ = workdir.sync("run", summary="run2.json", config=config)
    assert again.exit_code == 0, again.output
    assert "report not written" in again.output and "Traceback" not in again.output
