"""Rendering run summaries and account tables for people, with Rich."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

from pls_sync.planning import AccountResult, Plan


def render_summary(console: Console, summary: Mapping[str, Any]) -> None:
    """Print what a user needs from a run: counts per stage, per tier and per destination."""
    wh = summary.get("warehouse", {})
    sc = summary.get("scoring", {})
    console.print(
        f"[bold]Run {summary.get('run_id')}[/bold] ({summary.get('command')}, as of "
        f"{summary.get('as_of')}): [bold]{summary.get('status', '?')}[/bold] "
        f"in {summary.get('duration_seconds', 0)} s"
    )
    skipped = ", ".join(f"{k} {v}" for k, v in wh.get("skipped_reasons", {}).items()) or "none"
    console.print(
        f"Warehouse: {wh.get('rows_read', 0)} rows read, {wh.get('users', 0)} users in "
        f"{wh.get('accounts', 0)} accounts; skipped users: {skipped}"
    )
    tiers = ", ".join(f"{k} {v}" for k, v in sc.get("tiers", {}).items())
    console.print(
        f"Scored {sc.get('scored', 0)} accounts: {tiers}; newly qualified "
        f"{sc.get('newly_qualified', 0)}, disqualified {sc.get('disqualified', 0)}, "
        f"held back by the age guard {sc.get('guarded_by_age', 0)}"
    )
    leads = summary.get("leads")
    if leads:
        console.print(
            "Lead channels: "
            + ", ".join(f"{k} {v}" for k, v in leads.get("channels", {}).items())
            + "; motions: "
            + ", ".join(f"{k} {v}" for k, v in leads.get("motions", {}).items())
            + f"; accounts with likely buyers: {leads.get('accounts_with_buyers', 0)}"
        )
        mqls = leads.get("mqls")
        if mqls:
            skipped = ", ".join(f"{k} {v}" for k, v in mqls.get("skipped", {}).items()) or "none"
            console.print(
                f"MQLs: {mqls.get('indexed', 0)} at {mqls.get('domains', 0)} domains "
                f"({mqls.get('mql_only_domains', 0)} without product usage); skipped: {skipped}"
            )
        if leads.get("abm_list"):
            console.print(
                "ABM list (usage, no buyer): "
                + ", ".join(f"{a['domain']} ({a['score']})" for a in leads["abm_list"][:8])
            )
        for name, error in leads.get("mql_errors", {}).items():
            console.print(f"[yellow]{name}: MQLs not read ({error})[/yellow]", highlight=False)
    for name, dest in summary.get("destinations", {}).items():
        table = Table(
            title=f"{name}: {dest.get('status')}", show_header=False, title_justify="left"
        )
        table.add_column("what")
        table.add_column("value")
        if dest.get("error"):
            table.add_row("error", str(dest["error"]))
        match = dest.get("match", {})
        if match:
            table.add_row("CRM records read", str(dest.get("crm_records", 0)))
            table.add_row(
                "matched / unmatched / ambiguous",
                f"{match.get('matched', 0) + match.get('ambiguous_resolved', 0)} / "
                f"{match.get('unmatched', 0)} / "
                f"{match.get('ambiguous_resolved', 0) + match.get('ambiguous_skipped', 0)}"
                f" ({match.get('ambiguous_skipped', 0)} skipped)",
            )
        if dest.get("top_unmatched"):
            table.add_row(
                "top unmatched domains",
                ", ".join(f"{u['domain']} ({u['score']:.0f})" for u in dest["top_unmatched"][:5]),
            )
        if "records_changed" in dest:
            table.add_row(
                "records changed / unchanged",
                f"{dest['records_changed']} / {dest.get('records_unchanged', 0)}",
            )
            table.add_row("fields changed", str(dest.get("fields_changed", 0)))
            if dest.get("field_changes"):
                table.add_row(
                    "by field", ", ".join(f"{k} {v}" for k, v in dest["field_changes"].items())
                )
        if "records_written" in dest:
            table.add_row(
                "records written",
                f"{dest['records_written']} in {dest.get('write_calls', 0)} write calls "
                f"(minimum {dest.get('min_write_calls', 0)}, {dest.get('write_method')})",
            )
            rejected = dest.get("rejected", 0)
            reasons = ", ".join(f"{k} {v}" for k, v in dest.get("rejection_reasons", {}).items())
            table.add_row("rejected", f"{rejected}" + (f" ({reasons})" if reasons else ""))
            if dest.get("not_attempted"):
                table.add_row("left for the next run", str(dest["not_attempted"]))
        stale = dest.get("stale_pqas")
        if stale and "stale" in stale:
            listed = ", ".join(a["domain"] for a in stale.get("accounts", [])[:5])
            table.add_row(
                f"PQAs untouched for {stale.get('after_days', '?')}+ days",
                f"{stale['stale']}" + (f" ({listed})" if listed else ""),
            )
        alerts = dest.get("alerts")
        if alerts:
            table.add_row(
                "rep alerts",
                alerts.get("error")
                or ", ".join(f"{k} {v}" for k, v in alerts.items() if k != "rejection_reasons"),
            )
        if dest.get("api_calls"):
            table.add_row("API calls", ", ".join(f"{k} {v}" for k, v in dest["api_calls"].items()))
        console.print(table)
    stages = summary.get("stages_seconds", {})
    if stages:
        console.print("Time per stage: " + ", ".join(f"{k} {v:.2f}s" for k, v in stages.items()))
    if summary.get("plan_file"):
        console.print(f"Plan saved to {summary['plan_file']}")


def render_plan(console: Console, plan: Plan, limit: int = 15) -> None:
    """Print the first changes of a plan as a diff table."""
    table = Table(
        title=f"{plan.destination} {plan.object}: first {limit} of {len(plan.changes)} changes"
    )
    table.add_column("record")
    table.add_column("account")
    table.add_column("field")
    table.add_column("new value", overflow="fold")
    for change in plan.changes[:limit]:
        for i, (name, value) in enumerate(change.fields.items()):
            table.add_row(
                change.record_id if i == 0 else "",
                change.account_key if i == 0 else "",
                name,
                "(clear)" if value is None else str(value),
            )
    console.print(table)


def render_accounts(
    console: Console, results: Iterable[AccountResult], title: str, limit: int = 15
) -> None:
    """The top accounts as a rep sees them: score, tier, signals."""
    table = Table(title=title)
    for column in ("account", "score", "tier", "change", "signals"):
        table.add_column(column, overflow="fold")
    ranked = sorted(results, key=lambda r: (-r.score.score, r.account.key))[:limit]
    for result in ranked:
        change = result.score_change
        table.add_row(
            result.account.domain,
            str(result.score.score),
            result.score.tier + (" (age guard)" if result.score.guard else ""),
            "" if change is None else f"{change:+d}",
            "; ".join(s.description for s in result.score.signals),
        )
    console.print(table)
