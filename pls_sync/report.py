"""Rendering run summaries, plans and account tables for people, with Rich."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pls_sync.planning import AccountResult, Plan, json_value

ABM_SHOWN = 8
UNMATCHED_SHOWN = 5
STALE_SHOWN = 5


def render_summary(console: Console, summary: Mapping[str, Any]) -> None:
    """Print what a user needs from a run: counts per stage, per tier and per destination."""
    console.print(
        f"[bold]Run {summary.get('run_id')}[/bold] ({summary.get('command')}, as of "
        f"{summary.get('as_of')}): [bold]{summary.get('status', '?')}[/bold] "
        f"in {summary.get('duration_seconds', 0)} s"
    )
    _print_warehouse(console, summary.get("warehouse", {}))
    _print_scoring(console, summary.get("scoring", {}))
    leads = summary.get("leads")
    if leads:
        _print_leads(console, leads)
    for name, dest in summary.get("destinations", {}).items():
        table = _destination_table(name, dest)
        # A destination with nothing to report (skipped, stopped) is its title alone.
        console.print(table if table.row_count else table.title)
        if dest.get("status") == "invalid":
            _print_issues(console, dest.get("issues", []))
    stages = summary.get("stages_seconds", {})
    if stages:
        console.print("Time per stage: " + ", ".join(f"{k} {v:.2f}s" for k, v in stages.items()))
    if summary.get("plan_file"):
        console.print(f"Plan saved to {summary['plan_file']}")


def _counts(counts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _print_warehouse(console: Console, wh: Mapping[str, Any]) -> None:
    skipped = _counts(wh.get("skipped_reasons", {})) or "none"
    console.print(
        f"Warehouse: {wh.get('rows_read', 0)} rows read, {wh.get('users', 0)} users in "
        f"{wh.get('accounts', 0)} accounts; skipped users: {skipped}"
    )
    dropped = wh.get("dropped_events")
    if dropped:
        console.print(f"Dropped events: {_counts(dropped)}")


def _print_scoring(console: Console, sc: Mapping[str, Any]) -> None:
    console.print(
        f"Scored {sc.get('scored', 0)} accounts: {_counts(sc.get('tiers', {}))}; newly qualified "
        f"{sc.get('newly_qualified', 0)}, disqualified {sc.get('disqualified', 0)}, "
        f"held back by the age guard {sc.get('guarded_by_age', 0)}"
        + (
            f"; no longer in the warehouse {sc['gone']} (written as no usage)"
            if sc.get("gone")
            else ""
        )
    )


def _more(total: int, shown: int, command: str) -> str:
    """The tail of a shortened list: how many were left out and the command listing them all."""
    hidden = total - shown
    return f" … (+{hidden} more: {command})" if hidden > 0 else ""


def _print_leads(console: Console, leads: Mapping[str, Any]) -> None:
    console.print(
        f"Lead channels: {_counts(leads.get('channels', {}))}; "
        f"motions: {_counts(leads.get('motions', {}))}; "
        f"accounts with likely buyers: {leads.get('accounts_with_buyers', 0)}"
    )
    mqls = leads.get("mqls")
    if mqls:
        skipped = _counts(mqls.get("skipped", {})) or "none"
        console.print(
            f"MQLs: {mqls.get('indexed', 0)} at {mqls.get('domains', 0)} domains "
            f"({mqls.get('mql_only_domains', 0)} without product usage); skipped: {skipped}"
        )
    abm = leads.get("abm_list") or []
    if abm:
        shown = abm[:ABM_SHOWN]
        total = max(int(leads.get("abm_total", len(abm))), len(abm))
        console.print(
            "ABM list (usage, no buyer): "
            + ", ".join(f"{a['domain']} ({a['score']})" for a in shown)
            + _more(total, len(shown), "pls-sync lists abm"),
            highlight=False,
        )
    for name, error in leads.get("mql_errors", {}).items():
        console.print(f"[yellow]{name}: MQLs not read ({escape(str(error))})[/yellow]")


def _destination_table(name: str, dest: Mapping[str, Any]) -> Table:
    table = Table(title=f"{name}: {dest.get('status')}", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value")
    if dest.get("error"):
        table.add_row("error", Text(str(dest["error"])))
    _add_crm_rows(table, dest)
    _add_match_rows(table, dest)
    _add_change_rows(table, dest)
    _add_write_rows(table, dest)
    _add_stale_row(table, dest.get("stale_pqas"))
    alerts = dest.get("alerts")
    if alerts:
        table.add_row(
            "rep alerts",
            alerts.get("error")
            or ", ".join(f"{k} {v}" for k, v in alerts.items() if k != "rejection_reasons"),
        )
    if dest.get("api_calls"):
        table.add_row("API calls", _counts(dest["api_calls"]))
    return table


RETIREMENT_REASONS = {
    "account_gone": "account no longer in the warehouse",
    "not_target": "no account targets the record any more",
}
LEFT_ALONE_REASONS = {"edited": "changed by a person", "not_empty": "write: if_empty"}


def _add_crm_rows(table: Table, dest: Mapping[str, Any]) -> None:
    """Which CRM (org or portal) was read and how: a full read says why."""
    crm = dest.get("crm")
    read = dest.get("crm_read") or {}
    if not crm and not read:
        return
    how = ""
    if read.get("mode") == "full":
        how = f"full read ({read.get('reason')})" if read.get("reason") else "full read"
    elif read.get("mode") == "incremental":
        how = (
            f"incremental: {read.get('changed', 0)} changed, "
            f"{read.get('deleted', 0)} deleted or merged"
        )
    table.add_row("CRM", Text(", ".join(part for part in (crm or "", how) if part)))
    if dest.get("ownership_adopted"):
        table.add_row(
            "ownership adopted",
            f"{dest['ownership_adopted']} records (mapped fields holding values, no ledger yet)",
        )


def _add_match_rows(table: Table, dest: Mapping[str, Any]) -> None:
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
    refused = {
        key.removeprefix("crm_refused_"): count
        for key, count in match.items()
        if key.startswith("crm_refused_") and count
    }
    if refused:
        table.add_row("CRM domains naming no company", _counts(refused))
    top = dest.get("top_unmatched") or []
    if top:
        shown = top[:UNMATCHED_SHOWN]
        total = max(int(match.get("unmatched", len(top))), len(top))
        table.add_row(
            "top unmatched domains",
            ", ".join(f"{u['domain']} ({u['score']:.0f})" for u in shown)
            + _more(total, len(shown), "pls-sync lists unmatched"),
        )


def _add_change_rows(table: Table, dest: Mapping[str, Any]) -> None:
    if "records_changed" not in dest:
        return
    table.add_row(
        "records changed / unchanged",
        f"{dest['records_changed']} / {dest.get('records_unchanged', 0)}",
    )
    table.add_row("fields changed", str(dest.get("fields_changed", 0)))
    if dest.get("field_changes"):
        table.add_row("by field", _counts(dest["field_changes"]))
    retired = dest.get("records_retired")
    if retired:
        table.add_row(
            "records retired",
            ", ".join(f"{RETIREMENT_REASONS.get(k, k)} {v}" for k, v in retired.items()),
        )
    held = dest.get("fields_left_alone")
    if held:
        table.add_row(
            "fields left alone",
            ", ".join(f"{LEFT_ALONE_REASONS.get(k, k)} {v}" for k, v in held.items()),
        )


def _add_write_rows(table: Table, dest: Mapping[str, Any]) -> None:
    if "records_written" not in dest:
        return
    table.add_row(
        "records written",
        f"{dest['records_written']} in {dest.get('write_calls', 0)} write calls "
        f"(minimum {dest.get('min_write_calls', 0)}, {dest.get('write_method')})",
    )
    rejected = dest.get("rejected", 0)
    reasons = _counts(dest.get("rejection_reasons", {}))
    table.add_row("rejected", f"{rejected}" + (f" ({reasons})" if reasons else ""))
    if dest.get("not_attempted"):
        table.add_row("left for the next run", str(dest["not_attempted"]))


def _add_stale_row(table: Table, stale: Mapping[str, Any] | None) -> None:
    if not stale:
        return
    days = stale.get("after_days")
    label = f"PQAs untouched for {days}+ days" if days is not None else "PQAs untouched"
    if "error" in stale:
        table.add_row(label, Text(f"not checked ({stale['error']})"))
        return
    if "stale" not in stale:
        return
    listed = ", ".join(a["domain"] for a in stale.get("accounts", [])[:STALE_SHOWN])
    table.add_row(label, f"{stale['stale']}" + (f" ({listed})" if listed else ""))


def _print_issues(console: Console, issues: Iterable[str]) -> None:
    """An invalid destination's mapping problems, in red under its table."""
    for issue in issues:
        console.print(Text(f"  {issue}", style="red"))
    console.print(
        Text("  not written: fix the mapping or the CRM schema, then run again", style="red")
    )


def render_plan(console: Console, plan: Plan, limit: int | None = 15) -> None:
    """Print a plan as a diff: one group of rows per record, one row per changed field
    (``from → to``). ``limit`` caps the records shown; ``None`` or ``0`` shows them all."""
    shown = plan.changes[:limit] if limit else plan.changes
    # The title is a line of its own, never wrapped: it stays whole (and greppable) however
    # narrow the table or the terminal is.
    console.print(Text(plan_title(plan, len(shown)), style="bold"), soft_wrap=True)
    table = Table()
    table.add_column("record")
    table.add_column("account", overflow="fold")
    table.add_column("field")
    table.add_column("from → to", overflow="fold")
    for change in shown:
        current = change.current or {}
        last = len(change.fields) - 1
        account = change.account_key or "(adopted)"
        if change.reason:
            account += f" ({RETIREMENT_REASONS.get(change.reason, change.reason)})"
        for i, (name, value) in enumerate(change.fields.items()):
            table.add_row(
                Text(change.record_id if i == 0 else ""),
                Text(account if i == 0 else ""),
                Text(name),
                Text(
                    f"{show_value(current.get(name), '(empty)')} → {show_value(value, '(clear)')}"
                ),
                end_section=i == last,
            )
    console.print(table)
    if plan.left_alone:
        console.print(
            Text(f"Left alone by their write policy: {_plural(len(plan.left_alone), 'field')}"),
            soft_wrap=True,
        )
        held = Table()
        for column in ("record", "field", "why", "CRM value", "pls-sync value"):
            held.add_column(column, overflow="fold")
        for item in plan.left_alone[: limit or None]:
            held.add_row(
                Text(item.record_id),
                Text(item.field),
                Text(LEFT_ALONE_REASONS.get(item.reason, item.reason)),
                Text(show_value(item.current, "(empty)")),
                Text(show_value(item.wanted, "(clear)")),
            )
        console.print(held)


def plan_title(plan: Plan, shown: int) -> str:
    """``salesforce Account: 45 records, 210 field changes`` and, when the table shows fewer
    records than the plan holds, how many it shows and how to see more."""
    records = len(plan.changes)
    fields = plan.fields_changed
    title = (
        f"{plan.destination} {plan.object}: {_plural(records, 'record')}, "
        f"{_plural(fields, 'field change')}"
    )
    if shown < records:
        title += f"; showing the first {_plural(shown, 'record')} (--limit N to see more)"
    return title


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def show_value(value: Any, missing: str) -> str:
    """A canonical value as a user reads it: ``85`` (not ``85.0``), ``2026-11-22 10:00 UTC``,
    ``true``/``false``; ``missing`` stands for no value."""
    if value is None:
        return missing
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        moment = json_value(value)  # ISO in UTC
        day, clock = moment[:10], moment[11:19]
        return f"{day} {clock[:5] if clock.endswith(':00') else clock} UTC"
    if isinstance(value, (date, float)):
        return str(json_value(value))
    return str(value)


def ranking_key(result: AccountResult) -> tuple[float, float, float, str]:
    """Sort key of the top-accounts ranking (ascending sorts best first): score, then the
    unclipped total of component and signal points, then active users (28 days), then domain."""
    score = result.score
    total = sum(c.points for c in score.components) + sum(s.points for s in score.signals)
    active = score.metrics.get("active_users_28d") or 0.0
    if active != active:  # NaN from a custom model would make the order arbitrary
        active = 0.0
    return (-score.score, -total, -active, result.account.domain)


def render_accounts(
    console: Console, results: Iterable[AccountResult], title: str, limit: int = 15
) -> None:
    """The top accounts as a rep sees them: score, tier, signals.

    Ranked by score; accounts with the same score are ordered by the unclipped sum of their
    component and signal points (which separates two accounts clamped at 100), then by active
    users over 28 days, then by domain.
    """
    table = Table(title=title)
    for column in ("account", "score", "tier", "change", "signals"):
        table.add_column(column, overflow="fold")
    ranked = sorted(results, key=ranking_key)[:limit]
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
