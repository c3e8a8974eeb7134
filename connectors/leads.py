"""Adapters for lead channels and rep alerts: the ports of ``pls_sync.ports`` over the
warehouse buyer query, the CRMs' MQL reads and task creation, and the alerts ledger."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any

import structlog

from connectors import alerts_state
from connectors.buyers import read_buyer_candidates
from connectors.hubspot import HubSpotDestination
from connectors.hubspot_leads import (
    OUTCOME_UNKNOWN,
    MqlDefinition,
    ReadCounts,
    create_hubspot_alert,
    read_hubspot_mqls,
)
from connectors.mql_cache import MqlCache, RefreshPolicy, read_mqls_through_cache
from connectors.salesforce import SalesforceDestination
from connectors.salesforce_leads import (
    create_salesforce_alert,
    read_last_activity,
    read_salesforce_mqls,
)
from connectors.warehouse import SqlUsageSource
from pls_sync.channels import PersonaModel, UserProfile
from pls_sync.errors import RetriableError
from pls_sync.models import CrmRecord
from pls_sync.ports import AlertRejected, AlertUnconfirmed

log = structlog.get_logger("pls_sync.hubspot")


def unwrap(destination: Any) -> Any:
    """The vendor client behind a snapshotting wrapper."""
    return getattr(destination, "inner", destination)


class WarehouseBuyers:
    """``BuyerSource`` over the warehouse's users and events."""

    def __init__(self, source: SqlUsageSource, persona: PersonaModel, account_level: str):
        self.source = source
        self.persona = persona
        self.account_level = account_level

    def read_buyer_candidates(self, as_of: datetime) -> Iterator[tuple[str, UserProfile]]:
        """Candidate buyers, filtered in SQL, keyed like the scored accounts."""
        return read_buyer_candidates(
            self.source,
            as_of=as_of,
            taxonomy=None,
            persona=self.persona,
            account_level=self.account_level,
        )


class SalesforceMqls:
    """``MqlSource`` over Salesforce Leads (by status) and Contacts (by a checkbox)."""

    def __init__(self, dest: Any, lead_statuses: Iterable[str], contact_field: str | None):
        self.dest = dest
        self.lead_statuses = tuple(lead_statuses)
        self.contact_field = contact_field

    def read_mqls(self) -> Iterator[tuple[str, str, str]]:
        """(source, id, email) of every MQL, filtered in SOQL."""
        client: SalesforceDestination = unwrap(self.dest)
        return read_salesforce_mqls(
            client, lead_statuses=self.lead_statuses, contact_field=self.contact_field
        )


class SalesforceActivity:
    """Last activity dates of Accounts, for reporting PQAs nobody touched."""

    def __init__(self, dest: Any):
        self.dest = dest

    def __call__(self, account_ids: list[str]) -> dict[str, date | None]:
        """LastActivityDate by account id (chunked IN queries)."""
        return read_last_activity(unwrap(self.dest), account_ids)


class HubSpotMqls:
    """``MqlSource`` over HubSpot contacts (lifecycle stage, or a property).

    Without a ``cache`` every read is a full search. With one (``connectors.mql_cache``), a
    steady-state read asks HubSpot only what changed since the last one and answers the same
    set; ``policy`` says when to read in full anyway. ``last_read`` says how the last read went
    (``mode`` full or incremental, ``reason``, ``pages``, ``list_pages``, ``changed``,
    ``dropped``, ``mqls``, ``crm``), also logged as ``hubspot_mqls_read``.
    """

    def __init__(
        self,
        dest: Any,
        lifecycle_stage: str,
        mql_property: str | None,
        *,
        mql_value: str = "true",
        cache: MqlCache | None = None,
        policy: RefreshPolicy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.dest = dest
        self.lifecycle_stage = lifecycle_stage
        self.mql_property = mql_property
        self.mql_value = mql_value
        self.cache = cache
        self.policy = policy or RefreshPolicy()
        self.clock = clock
        self.last_read: dict[str, Any] = {}

    def read_mqls(self) -> Iterator[tuple[str, str, str]]:
        """(source, id, email) of every MQL, filtered by search (through the cache if any)."""
        client: HubSpotDestination = unwrap(self.dest)
        definition = MqlDefinition(self.lifecycle_stage, self.mql_property, self.mql_value)
        if self.cache is None:
            counts = ReadCounts()
            mqls = list(
                read_hubspot_mqls(
                    client,
                    lifecycle_stage=definition.lifecycle_stage,
                    mql_property=definition.mql_property,
                    mql_value=definition.mql_value,
                    counts=counts,
                )
            )
            self.last_read = {
                "mode": "full",
                "reason": "no MQL cache",
                "pages": counts.searches,
                "list_pages": 0,
                "mqls": len(mqls),
            }
        else:
            now = self.clock()
            mqls, self.last_read = read_mqls_through_cache(
                client, definition, self.cache, policy=self.policy, now=now
            )
        log.info("hubspot_mqls_read", **self.last_read)
        return iter(mqls)


class SalesforceAlerts:
    """``AlertSink``: a Task for the account owner, keyed by a custom field."""

    lookup_lag_seconds = 0.0  # SOQL sees a created Task at once

    def __init__(self, dest: Any, key_field: str):
        self.dest = dest
        self.key_field = key_field

    def crm_identity(self) -> str:
        """``salesforce:<org id>``: the org the tasks go to."""
        return str(unwrap(self.dest).crm_identity())

    def create_alert(
        self, record: CrmRecord, subject: str, body: str, key: str
    ) -> tuple[str, bool]:
        """Create or find the task; refusals raise ``AlertRejected``."""
        try:
            return create_salesforce_alert(
                unwrap(self.dest),
                account_id=record.id,
                owner_id=record.owner_id or "",
                subject=subject,
                description=body,
                key=key,
                key_field=self.key_field,
            )
        except alerts_state.TaskRejected as exc:
            raise AlertRejected(exc.rejection) from None


class HubSpotAlerts:
    """``AlertSink``: a HubSpot task on the company, keyed by a task property."""

    # The search API finds a new object only once it is indexed, usually within seconds.
    lookup_lag_seconds = 60.0

    def __init__(self, dest: Any, key_property: str):
        self.dest = dest
        self.key_property = key_property

    def crm_identity(self) -> str:
        """``hubspot:<portal id>``: the portal the tasks go to."""
        return str(unwrap(self.dest).crm_identity())

    def create_alert(
        self, record: CrmRecord, subject: str, body: str, key: str
    ) -> tuple[str, bool]:
        """Create or find the task; refusals raise ``AlertRejected``, a lost answer
        ``AlertUnconfirmed``."""
        try:
            return create_hubspot_alert(
                unwrap(self.dest),
                company_id=record.id,
                owner_id=record.owner_id or "",
                subject=subject,
                body=body,
                key=key,
                key_property=self.key_property,
            )
        except alerts_state.TaskRejected as exc:
            raise AlertRejected(exc.rejection) from None
        except RetriableError as exc:
            if exc.code == OUTCOME_UNKNOWN:
                raise AlertUnconfirmed(str(exc)) from None
            raise


class StateAlertLedger:
    """``AlertLedger`` in the state store's database."""

    def __init__(self, store: Any):
        self.store = store

    def pending_or_missing(self, keys: Iterable[str]) -> set[str]:
        """Keys without a created task."""
        return alerts_state.pending_or_missing(self.store, keys)

    def mark_pending(
        self,
        key: str,
        *,
        destination: str,
        account_key: str,
        record_id: str | None,
        payload: Mapping[str, Any],
    ) -> bool:
        """Record the intent; False when the task was created already."""
        return alerts_state.mark_pending(
            self.store,
            key,
            destination=destination,
            account_key=account_key,
            record_id=record_id,
            payload=payload,
        )

    def is_live(self, destination: str) -> bool:
        """Whether the ledger has any alert of ``destination``."""
        return alerts_state.any_alert(self.store, destination)

    def mark_baseline(self, key: str, *, destination: str, account_key: str) -> None:
        """Record ``key`` as alerted, with no task."""
        alerts_state.mark_pending(
            self.store,
            key,
            destination=destination,
            account_key=account_key,
            record_id=None,
            payload={"baseline": True},
        )
        alerts_state.mark_created(self.store, key, "")

    def crm_of(self, destination: str) -> str | None:
        """The CRM identity ``destination``'s alerts last went to."""
        return alerts_state.alert_crm(self.store, destination)

    def move_to_crm(self, destination: str, identity: str, reason: str | None) -> int:
        """Settle alerts in flight to the previous CRM (with a ``reason``), record ``identity``."""
        settled = alerts_state.settle_in_flight(self.store, destination, reason) if reason else 0
        alerts_state.record_alert_crm(self.store, destination, identity)
        return settled

    def reopen(
        self, key: str, *, destination: str, account_key: str, payload: Mapping[str, Any]
    ) -> None:
        """Queue ``key`` again for a task in another CRM."""
        alerts_state.reopen_alert(
            self.store, key, destination=destination, account_key=account_key, payload=payload
        )

    def mark_sending(self, key: str) -> None:
        """Record that the create is about to be sent."""
        alerts_state.mark_sending(self.store, key)

    def mark_created(self, key: str, task_id: str) -> None:
        """Record the task."""
        alerts_state.mark_created(self.store, key, task_id)

    def mark_rejected(self, key: str, reason: str) -> None:
        """Record the refusal."""
        alerts_state.mark_rejected(self.store, key, reason)

    def alerts_to_retry(
        self, destination: str
    ) -> list[tuple[str, str, str | None, dict[str, Any], datetime | None]]:
        """Alerts of ``destination`` still without a task."""
        return [
            (row.key, row.account_key, row.record_id, dict(row.payload or {}), row.sending_since)
            for row in alerts_state.alerts_to_retry(self.store, destination=destination)
        ]
