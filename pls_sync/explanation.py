"""``pls-sync explain``: one account's score, signals, buyers, channel and, per CRM, its match
and each field a run would write (from and to), as data for every output format."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pls_sync.errors import PlsSyncError, redact
from pls_sync.output import iso, plain_number, text

if TYPE_CHECKING:
    from pls_sync.mapping import DestinationMapping
    from pls_sync.planning import AccountResult
    from pls_sync.ports import CrmDestination, StateStore


def account_breakdown(result: AccountResult, when: datetime) -> dict[str, Any]:
    """One account's score as a person reads it: components, signals, channel, buyers."""
    score = result.score
    return {
        "account": result.account.key,
        "domain": result.account.domain,
        "as_of": iso(when),
        "score": score.score,
        "tier": score.tier,
        "held_back_by": score.guard,
        "components": [
            {
                "name": c.name,
                "points": plain_number(c.points, 1),
                "metric": c.metric,
                "value": None if c.value is None else plain_number(c.value, 2),
                "description": c.description,
            }
            for c in score.components
        ],
        "signals": [
            {"name": s.name, "points": plain_number(s.points, 1), "description": s.description}
            for s in score.signals
        ],
        "qualified_since": result.state.qualified_since,
        "change": result.score_change,
        "channel": result.lead_channel,
        "motion": result.motion,
        "fit": result.fit.describe() if result.fit is not None else None,
        "buyers": list(result.buyers),
    }


def destination_breakdown(
    destination: CrmDestination,
    mapping: DestinationMapping,
    result: AccountResult,
    state: StateStore,
) -> dict[str, Any]:
    """The account's match in one CRM and the fields a run would write there, from and to.

    A CRM that fails is reported in the entry (``status: failed``), not raised: one CRM
    failing must not hide the other.
    """
    from pls_sync.planning import desired_fields, diff_fields
    from pls_sync.service import match_as_a_run_does

    try:
        outcome = match_as_a_run_does(destination, mapping, [result], state)
        assert outcome.report is not None
        match = outcome.report.matches.get(result.account.key)
        candidates = list(match.candidates) if match else []
        if match is None or match.record_id is None:
            status = match.status if match else "unmatched"
            return {"status": status, "record_id": None, "candidates": candidates, "fields": {}}
        specs = destination.describe(mapping.object)
        record = outcome.records[match.record_id]
        by_target = {f.target: f for f in mapping.fields}
        pending, current, _held = diff_fields(
            record,
            desired_fields(result, mapping, specs),
            specs,
            by_target,
            outcome.owned.get(record.id),
        )
    except PlsSyncError as exc:
        return {"status": "failed", "error": redact(str(exc))}
    fields = {
        target: {"from": current.get(target), "to": value} for target, value in pending.items()
    }
    return {
        "status": match.status,
        "record_id": match.record_id,
        "record_name": record.name,
        "candidates": candidates,
        "fields": fields,
    }


def field_changes(fields: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """``PQA_Score__c: 80 -> 85``, one per changed field."""
    return [
        f"{name}: {text(change['from'], '(empty)')} -> {text(change['to'], '(clear)')}"
        for name, change in fields.items()
    ]


def explain_lines(data: Mapping[str, Any]) -> list[str]:
    """The breakdown for a person, one fact a line."""
    held = f" (held back by {data['held_back_by']})" if data["held_back_by"] else ""
    lines = [f"{data['domain']}: score {data['score']}, tier {data['tier']}{held}"]
    for c in data["components"]:
        lines.append(f"  {c['name']:<12} {float(c['points']):5.1f} pts  ({c['description']})")
    for s in data["signals"]:
        lines.append(f"  signal     +{float(s['points']):.0f}  {s['description']}")
    change = data["change"]
    lines.append(
        f"  qualified since: {text(data['qualified_since'], '-')}; "
        f"change: {'-' if change is None else f'{change:+d}'}"
    )
    lines.append(f"  lead channel: {data['channel'] or '-'}; motion: {data['motion'] or '-'}")
    if data.get("fit"):
        lines.append(f"  fit: {data['fit']}")
    lines.extend(f"  likely buyer: {buyer}" for buyer in data["buyers"])
    if not data["buyers"]:
        lines.append("  likely buyers: none found among the account's users")
    for name, dest in data["destinations"].items():
        lines.extend(destination_lines(name, dest))
    return lines


def destination_lines(name: str, dest: Mapping[str, Any]) -> list[str]:
    """One CRM's part of ``explain``: the match and each field to write, or why not checked."""
    if "error" in dest:
        return [f"{name}: not checked ({dest['error']})"]
    if dest.get("record_id") is None:
        candidates = ", ".join(dest.get("candidates") or []) or "none"
        return [f"{name}: {dest['status']}; candidates: {candidates}"]
    record_name = f" ({dest['record_name']})" if dest.get("record_name") else ""
    head = f"{name}: {dest['status']} -> {dest['record_id']}{record_name}; fields to write:"
    fields = dest.get("fields") or {}
    if not fields:
        return [f"{head} none"]
    return [head, *(f"    {change}" for change in field_changes(fields))]


def explain_csv_row(data: Mapping[str, Any]) -> dict[str, Any]:
    """The breakdown as one flat CSV row: points per component, one column group per CRM."""
    row: dict[str, Any] = {
        key: data[key]
        for key in (
            "account",
            "domain",
            "as_of",
            "score",
            "tier",
            "held_back_by",
            "qualified_since",
            "change",
            "channel",
            "motion",
            "buyers",
        )
    }
    row["signals"] = [s["description"] for s in data["signals"]]
    for c in data["components"]:
        row[f"{c['name']}_points"] = c["points"]
    for name, dest in data["destinations"].items():
        row[f"{name}_status"] = dest.get("status")
        row[f"{name}_record_id"] = dest.get("record_id")
        row[f"{name}_fields"] = field_changes(dest.get("fields") or {})
        row[f"{name}_error"] = dest.get("error")
    return row
