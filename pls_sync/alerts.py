"""Rep alerts: one CRM task for the account owner when an account newly enters a tier.

Exactly once per entry, across retries, crashes and reruns: the alert's key is derived from
(destination, account, which entry into the tier it is, tier); the ledger records the intent
before the CRM call and the result after it, and the CRM side finds an existing task by the same
key, so a crash between "task created" and "ledger updated" is repaired without a second task.

The ledger also records which CRM (its identity) each destination's alerts go to. When a
destination is pointed at another CRM, accounts already alerted stay alerted (reps of the new
CRM hear of new entries, as at go-live), and an alert sent to the old CRM without a known outcome
is settled there rather than sent again to the new one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pls_sync.channels import Buyer, alert_key, alert_text, with_alert_key
from pls_sync.matching import MatchReport
from pls_sync.models import CrmRecord
from pls_sync.planning import AccountResult
from pls_sync.ports import AlertLedger, AlertRejected, AlertSink, AlertUnconfirmed


def entered(result: AccountResult, tier: str) -> datetime | None:
    """When the account entered ``tier`` in this run, or None when it did not just enter it."""
    state = result.state
    if state.tier != tier or (result.previous is not None and result.previous.tier == tier):
        return None
    return state.tier_since


def alert_payload(
    result: AccountResult, tier: str, buyers: Mapping[str, Sequence[Buyer]]
) -> dict[str, Any]:
    """The task's text for ``result``'s entry into ``tier``, as the ledger keeps it."""
    subject, body = alert_text(
        result.account.domain,
        result.score.score,
        [s.description for s in result.score.signals],
        buyers.get(result.account.key, ()),
        tier=tier,
    )
    return {"subject": subject, "body": body}


def queue_alerts(
    destinations: Sequence[str],
    ledger: AlertLedger,
    results: Sequence[AccountResult],
    *,
    tier: str,
    buyers: Mapping[str, Sequence[Buyer]],
    entries: Callable[[Sequence[str]], Mapping[str, int]],
    backfill: bool = False,
) -> int:
    """Record an alert for every account that entered ``tier`` now, before the state commit.

    The state commit makes the entry history; recording the alerts first means a run killed
    anywhere after it still leaves them queued for the next run. ``entries`` gives, for
    account keys, how many entries into ``tier`` the state store has recorded (committed
    ones): this one is the next, and its number makes the alert's key, so a rerun of a run
    killed before its commit queues the very same alerts. Returns how many were queued.

    At go-live (a destination with no alert ever recorded) accounts already in the tier, those
    entering now included, are recorded as alerted without a task, unless ``backfill``: the
    first run with alerts on does not flood reps with every existing PQA.
    """
    entering = [r for r in results if entered(r, tier) is not None]
    before = entries([r.account.key for r in entering]) if entering else {}
    queued = 0
    live = [d for d in destinations if backfill or ledger.is_live(d)]
    if len(live) < len(destinations):
        go_live_baseline([d for d in destinations if d not in live], ledger, results, tier, entries)
    for result in entering:
        payload = alert_payload(result, tier, buyers)
        entry = before.get(result.account.key, 0) + 1
        for destination in live:
            key = alert_key(destination, result.account.key, entry, tier)
            if ledger.mark_pending(
                key,
                destination=destination,
                account_key=result.account.key,
                record_id=None,
                payload=payload,
            ):
                queued += 1
    return queued


GO_LIVE = ""  # the account key of the row that marks a destination's alerts as live


def go_live_baseline(
    destinations: Sequence[str],
    ledger: AlertLedger,
    results: Sequence[AccountResult],
    tier: str,
    entries: Callable[[Sequence[str]], Mapping[str, int]],
) -> int:
    """Record every account in ``tier`` as alerted, without a task, at each destination, and
    the go-live itself (so a go-live with no account in the tier still counts). Returns the
    accounts recorded per destination."""
    inside = [r for r in results if r.state.tier == tier and not r.gone]
    recorded = entries([r.account.key for r in inside]) if inside else {}
    for destination in destinations:
        for result in inside:
            # Its current entry: the next one when it enters now, else the last recorded.
            entry = recorded.get(result.account.key, 0) + (entered(result, tier) is not None)
            key = alert_key(destination, result.account.key, max(entry, 1), tier)
            ledger.mark_baseline(key, destination=destination, account_key=result.account.key)
        live_key = alert_key(destination, GO_LIVE, 0, tier)
        ledger.mark_baseline(live_key, destination=destination, account_key=GO_LIVE)
    return len(inside)


def backfill_alerts(
    destination: str,
    ledger: AlertLedger,
    results: Sequence[AccountResult],
    *,
    tier: str,
    buyers: Mapping[str, Sequence[Buyer]],
    entries: Callable[[Sequence[str]], Mapping[str, int]],
) -> int:
    """Queue again, for a CRM the destination has just moved to, the alert of every account in
    ``tier`` (its current entry, with this run's text), whatever the ledger says it was.

    Runs after the state commit: ``entries`` already counts an entry made in this run.
    Returns how many were queued.
    """
    inside = [r for r in results if r.state.tier == tier and not r.gone]
    recorded = entries([r.account.key for r in inside]) if inside else {}
    for result in inside:
        entry = max(recorded.get(result.account.key, 0), 1)
        ledger.reopen(
            alert_key(destination, result.account.key, entry, tier),
            destination=destination,
            account_key=result.account.key,
            payload=alert_payload(result, tier, buyers),
        )
    return len(inside)


def send_alerts(
    destination: str,
    sink: AlertSink,
    ledger: AlertLedger,
    report: MatchReport,
    records: Mapping[str, CrmRecord],
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    backfill: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """Create the queued tasks of ``destination`` (this run's and earlier runs' leftovers).

    When the destination now points at another CRM than its alerts went to, ``backfill`` (set
    when ``alerts.backfill`` is on) queues the accounts already in the tier again for the new
    CRM, as a go-live with backfill does; without it they stay alerted.

    An account without a matched CRM record keeps its alert queued until it has one. A create
    sent by a run that died before recording its outcome is retried only once the sink's lookup
    can see a task that create made (``lookup_lag_seconds``); until then it is ``settling``.
    """
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    lag = float(sink.lookup_lag_seconds)
    moved = follow_crm(destination, sink, ledger)
    if moved is not None and backfill is not None:
        moved["backfilled"] = backfill()
    for key, account_key, record_id, payload, sent in ledger.alerts_to_retry(destination):
        record = records.get(report.record_for(account_key) or record_id or "")
        if record is None or not payload.get("subject"):
            counts["waiting_for_a_record"] += 1
            continue
        if sent is not None and (clock() - sent).total_seconds() < lag:
            counts["settling"] += 1
            continue
        ledger.mark_sending(key)
        try:
            task_id, created = sink.create_alert(
                record, payload["subject"], with_alert_key(payload["body"], key), key
            )
        except AlertRejected as exc:
            ledger.mark_rejected(key, f"{exc.rejection.code}: {exc.rejection.message}")
            counts["rejected"] += 1
            reasons[exc.rejection.code] += 1
            continue
        except AlertUnconfirmed:
            # Left "sending": a later run looks it up once the lookup can see it (above).
            counts["settling"] += 1
            continue
        ledger.mark_created(key, task_id)
        counts["created" if created else "found_existing"] += 1
    names = ("created", "found_existing", "rejected", "waiting_for_a_record", "settling")
    summary: dict[str, Any] = {name: counts.get(name, 0) for name in names}
    if reasons:
        summary["rejection_reasons"] = dict(reasons)
    if moved is not None:
        summary["crm_changed"] = moved
    return summary


def follow_crm(destination: str, sink: AlertSink, ledger: AlertLedger) -> dict[str, Any] | None:
    """Record the CRM ``sink`` sends to; when it is not the one the destination's alerts went to
    before, settle the alerts in flight to that one and say so (else ``None``).

    Runs before any task is sent: an alert whose create reached the old CRM with no known
    outcome must not be looked up in the new one (where it is absent) and created there.
    """
    identity = sink.crm_identity()
    if not identity:
        return None
    previous = ledger.crm_of(destination)
    if previous == identity:
        return None
    if previous is None:  # the first CRM recorded (go-live, or an upgrade): nothing moved
        ledger.move_to_crm(destination, identity, None)
        return None
    reason = f"sent to {previous} before the destination moved to {identity}"
    settled = ledger.move_to_crm(destination, identity, reason)
    return {"from": previous, "to": identity, "in_flight_settled": settled}
