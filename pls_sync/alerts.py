"""Rep alerts: one CRM task for the account owner when an account newly enters a tier.

Exactly once per entry, across retries, crashes and reruns: the alert's key is derived from
(destination, account, when it entered, tier); the ledger records the intent before the CRM
call and the result after it, and the CRM side finds an existing task by the same key, so a
crash between "task created" and "ledger updated" is repaired without a second task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pls_sync.channels import Buyer, alert_key, alert_text, with_alert_key
from pls_sync.matching import MatchReport
from pls_sync.models import CrmRecord
from pls_sync.planning import AccountResult
from pls_sync.ports import AlertLedger, AlertRejected, AlertSink


def entered(result: AccountResult, tier: str) -> datetime | None:
    """When the account entered ``tier`` in this run, or None when it did not just enter it."""
    state = result.state
    if state.tier != tier or (result.previous is not None and result.previous.tier == tier):
        return None
    return state.tier_since


def send_alerts(
    destination: str,
    sink: AlertSink,
    ledger: AlertLedger,
    results: Sequence[AccountResult],
    report: MatchReport,
    records: Mapping[str, CrmRecord],
    *,
    tier: str,
    buyers: Mapping[str, Sequence[Buyer]],
) -> dict[str, Any]:
    """Create the tasks for accounts that entered ``tier`` now, and retry earlier refusals."""
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    todo: dict[str, tuple[str, str | None, dict[str, Any]]] = {}
    for result in results:
        since = entered(result, tier)
        record_id = report.record_for(result.account.key)
        if since is None or record_id is None:
            continue
        key = alert_key(destination, result.account.key, since, tier)
        subject, body = alert_text(
            result.account.domain,
            result.score.score,
            [s.description for s in result.score.signals],
            buyers.get(result.account.key, ()),
            tier=tier,
        )
        todo[key] = (result.account.key, record_id, {"subject": subject, "body": body})
    for key, account_key, record_id, payload in ledger.alerts_to_retry(destination):
        if key not in todo and payload.get("subject"):
            todo[key] = (account_key, record_id, payload)
            counts["retried"] += 1
    for key, (account_key, record_id, payload) in todo.items():
        record = records.get(record_id or "")
        if record is None:
            counts["record_missing"] += 1
            continue
        if not ledger.mark_pending(
            key,
            destination=destination,
            account_key=account_key,
            record_id=record.id,
            payload=payload,
        ):
            counts["already_created"] += 1
            continue
        try:
            task_id, created = sink.create_alert(
                record, payload["subject"], with_alert_key(payload["body"], key), key
            )
        except AlertRejected as exc:
            ledger.mark_rejected(key, f"{exc.rejection.code}: {exc.rejection.message}")
            counts["rejected"] += 1
            reasons[exc.rejection.code] += 1
            continue
        ledger.mark_created(key, task_id)
        counts["created" if created else "found_existing"] += 1
    summary: dict[str, Any] = {
        name: counts.get(name, 0)
        for name in ("created", "found_existing", "already_created", "rejected", "retried")
    }
    if reasons:
        summary["rejection_reasons"] = dict(reasons)
    return summary
