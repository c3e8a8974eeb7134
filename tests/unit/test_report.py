"""What people read: the plan as a diff, its flat rows, the run summary and the top accounts."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

from rich.console import Console

from pls_sync.models import ProductAccount, RecordChange
from pls_sync.planning import AccountResult, Plan, plan_rows
from pls_sync.ports import AccountState
from pls_sync.report import render_accounts, render_plan, render_summary, show_value
from pls_sync.scoring import AccountScore, ComponentScore, FiredSignal

AS_OF = datetime(2026, 11, 22, tzinfo=UTC)
QUALIFIED = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def recording_console() -> Console:
    return Console(record=True, width=200, file=io.StringIO())


def sample_plan() -> Plan:
    changes = [
        RecordChange(
            "001A",
            {"PQA_Score__c": 85, "PQA_Tier__c": "sales", "PQA_Qualified_Since__c": QUALIFIED},
            "acme.com",
            2.0,
            current={"PQA_Score__c": 40.0, "PQA_Tier__c": None, "PQA_Qualified_Since__c": None},
        ),
        RecordChange(
            "001B",
            {"PQA_Signals__c": None, "PQA_Day__c": date(2026, 11, 22)},
            "beta.io",
            1.0,
            current={"PQA_Signals__c": "Viewed [bold]pricing[/bold]", "PQA_Day__c": None},
        ),
        RecordChange("001C", {"PQA_Score__c": 12.5}, "gamma.dev", 0.0, current={}),
    ]
    fields = Counter(name for change in changes for name in change.fields)
    return Plan("salesforce", "Account", changes, 10, 7, fields)


def rows_of(text: str) -> list[list[str]]:
    """The cells of each table row (the header's too) in Rich's box drawing, stripped."""
    lines = (line.replace("┃", "│") for line in text.splitlines())
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in lines
        if line.startswith("│")
    ]


def test_a_plan_renders_as_a_diff_grouped_by_record() -> None:
    console = recording_console()
    render_plan(console, sample_plan(), limit=None)
    text = console.export_text()
    assert text.splitlines()[0] == "salesforce Account: 3 records, 6 field changes"
    assert "showing" not in text
    assert rows_of(text) == [
        ["record", "account", "field", "from → to"],
        ["001A", "acme.com", "PQA_Score__c", "40 → 85"],
        ["", "", "PQA_Tier__c", "(empty) → sales"],
        ["", "", "PQA_Qualified_Since__c", "(empty) → 2026-11-22 10:00 UTC"],
        ["001B", "beta.io", "PQA_Signals__c", "Viewed [bold]pricing[/bold] → (clear)"],
        ["", "", "PQA_Day__c", "(empty) → 2026-11-22"],
        ["001C", "gamma.dev", "PQA_Score__c", "(empty) → 12.5"],
    ]
    # Records are separated from each other by a rule.
    assert sum(line.startswith("├") for line in text.splitlines()) == 2


def test_a_plan_rendered_with_a_limit_counts_every_change_in_its_title() -> None:
    console = recording_console()
    render_plan(console, sample_plan(), limit=1)
    text = console.export_text()
    assert text.splitlines()[0] == (
        "salesforce Account: 3 records, 6 field changes; "
        "showing the first 1 record (--limit N to see more)"
    )
    assert [row[0] for row in rows_of(text)] == ["record", "001A", "", ""]
    everything = recording_console()
    render_plan(everything, sample_plan(), limit=0)
    assert len(rows_of(everything.export_text())) == 7


def test_the_title_of_a_long_plan_is_never_wrapped() -> None:
    console = Console(record=True, width=40, file=io.StringIO())
    render_plan(console, sample_plan(), limit=2)
    assert (
        "salesforce Account: 3 records, 6 field changes; showing the first 2 records "
        "(--limit N to see more)" in console.export_text()
    )


def test_values_are_shown_as_a_user_reads_them() -> None:
    assert show_value(85.0, "(empty)") == "85"
    assert show_value(85.25, "(empty)") == "85.25"
    assert show_value(None, "(clear)") == "(clear)"
    assert show_value(True, "(empty)") == "true"
    assert show_value(datetime(2026, 11, 22, 10, 0, 15, tzinfo=UTC), "") == (
        "2026-11-22 10:00:15 UTC"
    )
    assert show_value(date(2026, 1, 2), "") == "2026-01-02"


def test_plan_rows_are_one_json_ready_row_per_field_change() -> None:
    rows = list(plan_rows(sample_plan()))
    assert len(rows) == 6
    assert rows[0] == {
        "destination": "salesforce",
        "object": "Account",
        "record_id": "001A",
        "account": "acme.com",
        "field": "PQA_Score__c",
        "from": 40,
        "to": 85,
        "reason": None,
    }
    assert rows[2]["to"] == "2026-11-22T10:00:00Z" and rows[2]["from"] is None
    assert rows[3]["to"] is None and rows[4]["to"] == "2026-11-22"
    assert json.loads(json.dumps(rows)) == rows
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writerows(rows)
    assert out.getvalue().splitlines()[0] == "salesforce,Account,001A,acme.com,PQA_Score__c,40,85,"


def summary_with(**overrides: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "run_id": "r1",
        "command": "plan",
        "as_of": "2026-11-22T00:00:00+00:00",
        "status": "planned",
        "duration_seconds": 1.5,
        "warehouse": {"rows_read": 10, "users": 8, "accounts": 3, "skipped_reasons": {}},
        "scoring": {"scored": 3, "tiers": {"sales": 1, "self_serve": 2}},
        "destinations": {},
    }
    summary.update(overrides)
    return summary


def rendered(summary: dict[str, Any], *, styles: bool = False) -> str:
    console = recording_console()
    render_summary(console, summary)
    return console.export_text(styles=styles)


def salesforce(**fields: Any) -> dict[str, Any]:
    return {"destinations": {"salesforce": {"status": "succeeded", **fields}}}


def test_the_stale_row_names_the_configured_days_even_when_none_are_stale() -> None:
    none_stale = rendered(
        summary_with(**salesforce(stale_pqas={"stale": 0, "after_days": 30, "accounts": []}))
    )
    assert "PQAs untouched for 30+ days │ 0" in none_stale
    some = rendered(
        summary_with(
            **salesforce(
                stale_pqas={
                    "stale": 2,
                    "after_days": 14,
                    "accounts": [{"domain": "a.com"}, {"domain": "b.com"}],
                }
            )
        )
    )
    assert "PQAs untouched for 14+ days │ 2 (a.com, b.com)" in some
    unknown = rendered(summary_with(**salesforce(stale_pqas={"stale": 1, "accounts": []})))
    assert "PQAs untouched" in unknown and "?" not in unknown
    failed = rendered(summary_with(**salesforce(stale_pqas={"error": "query [timeout]"})))
    assert "not checked (query [timeout])" in failed


def test_shortened_lists_say_how_to_see_them_whole() -> None:
    abm = [{"domain": f"abm{n}.com", "score": 90 - n} for n in range(10)]
    text = rendered(
        summary_with(
            leads={"channels": {"plg": 3}, "abm_list": abm},
            **salesforce(
                match={"matched": 4, "unmatched": 9, "ambiguous_resolved": 0},
                top_unmatched=[{"domain": f"u{n}.com", "score": 50.0 - n} for n in range(7)],
            ),
        )
    )
    assert (
        "ABM list (usage, no buyer): abm0.com (90), abm1.com (89), abm2.com (88), abm3.com (87), "
        "abm4.com (86), abm5.com (85), abm6.com (84), abm7.com (83) … (+2 more: pls-sync lists abm)"
    ) in text
    assert (
        "u0.com (50), u1.com (49), u2.com (48), u3.com (47), u4.com (46) "
        "… (+4 more: pls-sync lists unmatched)"
    ) in text
    with_total = rendered(summary_with(leads={"abm_list": abm, "abm_total": 25}))
    assert "(+17 more: pls-sync lists abm)" in with_total
    short = rendered(
        summary_with(
            leads={"abm_list": abm[:3]},
            **salesforce(
                match={"unmatched": 2},
                top_unmatched=[{"domain": "u.com", "score": 5}, {"domain": "v.com", "score": 4}],
            ),
        )
    )
    assert "more:" not in short


def test_dropped_events_are_listed_next_to_the_skipped_users() -> None:
    warehouse = {
        "rows_read": 10,
        "skipped_reasons": {"free_mail": 2},
        "dropped_events": {"no_user": 3, "unknown_user": 12, "future": 1},
    }
    lines = rendered(summary_with(warehouse=warehouse)).splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Warehouse:"))
    assert lines[at].endswith("skipped users: free_mail 2")
    assert lines[at + 1] == "Dropped events: no_user 3, unknown_user 12, future 1"
    quiet = rendered(summary_with(warehouse={"rows_read": 1, "dropped_events": {}}))
    assert "Dropped events" not in quiet


def test_an_invalid_destination_lists_its_issues_in_red() -> None:
    issues = [
        "mappings/salesforce.yaml:9: fields.PQA_X__c: no such field on [Account]",
        "mappings/salesforce.yaml:10: fields.PQA_Tier__c: field on Account is not writable",
    ]
    summary = summary_with(
        destinations={
            "salesforce": {"status": "invalid", "issues": issues},
            "hubspot": {"status": "succeeded"},
        }
    )
    lines = [line.strip() for line in rendered(summary).splitlines()]
    after = lines[lines.index("salesforce: invalid") :]
    first = after.index(issues[0])
    assert after[first + 1] == issues[1]
    assert after[first + 2] == "not written: fix the mapping or the CRM schema, then run again"
    assert after.index("hubspot: succeeded") > first + 2
    styled = rendered(summary, styles=True)
    assert f"\x1b[31m  {issues[0]}\x1b[0m" in styled
    assert "not written" not in rendered(summary_with(**salesforce()))


def ranked_result(domain: str, score: int, points: float, active: float) -> AccountResult:
    components = (ComponentScore("team", "active_users_28d", active, 100.0, 1.0, points, "team"),)
    account_score = AccountScore(
        domain,
        domain,
        score,
        "sales",
        "sales",
        components,
        (FiredSignal("legal", 10.0, "Viewed Terms of Use"),),
        {"active_users_28d": active},
        scored_at=AS_OF,
    )
    account = ProductAccount(domain, domain, {"active_users_28d": active})
    state = AccountState(domain, score, "sales", AS_OF, AS_OF, AS_OF, None)
    return AccountResult(account, account_score, state)


def test_top_accounts_break_score_ties_by_points_then_users_then_domain() -> None:
    results = [
        ranked_result("d.com", 90, 80.0, 5),
        ranked_result("c.com", 100, 95.0, 12),  # 105 points, clamped to 100
        ranked_result("b.com", 100, 120.0, 9),  # 130 points: more evidence than c.com
        ranked_result("a.com", 100, 95.0, 12),  # the same as c.com: the domain decides
        ranked_result("e.com", 100, 95.0, 20),  # the same points as c.com, more users
    ]
    console = recording_console()
    render_accounts(console, results, "Top product accounts", limit=4)
    order = [row[0] for row in rows_of(console.export_text())[1:]]
    assert order == ["b.com", "e.com", "a.com", "c.com"]
