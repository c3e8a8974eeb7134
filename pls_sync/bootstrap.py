"""The one place that builds real adapters from settings. Tests build ``Adapters`` with fakes instead."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pls_sync.config import Settings
from pls_sync.errors import PlsSyncError
from pls_sync.ports import CrmDestination, SchemaAdmin

if TYPE_CHECKING:
    from connectors.state import SqlStateStore
    from connectors.warehouse import SqlUsageSource
from pls_sync.service import Adapters


def apply_host_lists(settings: Settings) -> None:
    """Add the config's ``matching:`` hosts to the lists of hosts that never name a company,
    before anything classifies an email or a CRM domain."""
    from pls_sync.domains import configure_host_lists

    matching = settings.matching
    configure_host_lists(matching.platform_hosts, matching.shared_hosting)


def build_usage_source(settings: Settings) -> SqlUsageSource:
    """The warehouse reader for the configured URL and model."""
    from connectors.warehouse import SqlUsageSource

    apply_host_lists(settings)

    wh = settings.warehouse
    return SqlUsageSource(
        wh.url,
        taxonomy=wh.taxonomy,
        account_level=settings.account_level,
        model=wh.model,
        schema=wh.schema,
        users_table=wh.users_table,
        events_table=wh.events_table,
        chunk_size=wh.chunk_size,
        duckdb_memory_limit=wh.duckdb_memory_limit,
    )


def build_state_store(settings: Settings) -> SqlStateStore:
    """The state store at the configured URL, tables created if missing."""
    from connectors.state import SqlStateStore

    return SqlStateStore.open(settings.state_url)


STATE_MISSING = "state_missing"  # the FatalError code of a state store that does not exist


def open_existing_state_store(url: str) -> SqlStateStore:
    """The state store for reading only: nothing is created, a missing SQLite file is an error."""
    from sqlalchemy.engine import make_url

    from connectors.state import SqlStateStore
    from pls_sync.errors import FatalError

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or not Path(database).is_file():
            raise FatalError(
                f"state store not found: no SQLite file at {database or '(memory)'}",
                code=STATE_MISSING,
            )
    return SqlStateStore(url)


def build_destination(
    name: str, settings: Settings, env: Mapping[str, str] | None = None
) -> CrmDestination:
    """A destination client with credentials from the environment (or /run/secrets)."""
    apply_host_lists(settings)
    dest = settings.destinations[name]
    if name == "salesforce":
        from connectors.salesforce import SalesforceDestination

        return SalesforceDestination.from_env(
            env,
            api_version=dest.api_version,
            batch_size=dest.batch_size,
            bulk_threshold=dest.bulk_threshold,
        )
    if name == "hubspot":
        from connectors.hubspot import HubSpotDestination

        return HubSpotDestination.from_env(
            env,
            batch_size=dest.batch_size,
            requests_per_10s=dest.requests_per_10s,
            export_threshold=dest.export_threshold,
        )
    raise PlsSyncError(f"unknown destination {name!r}")


def build_schema_admin(
    name: str, settings: Settings, env: Mapping[str, str] | None = None
) -> SchemaAdmin:
    """The connector that reads and changes ``name``'s fields for ``pls-sync setup``."""
    destination = build_destination(name, settings, env)
    if name == "salesforce":
        from connectors.salesforce import SalesforceDestination
        from connectors.salesforce_setup import SalesforceSchemaAdmin

        assert isinstance(destination, SalesforceDestination)
        return SalesforceSchemaAdmin(destination)
    from connectors.hubspot import HubSpotDestination
    from connectors.hubspot_setup import HubSpotSchemaAdmin

    assert isinstance(destination, HubSpotDestination)
    return HubSpotSchemaAdmin(destination)


def add_lead_adapters(
    adapters: Adapters,
    name: str,
    destination: CrmDestination,
    settings: Settings,
    *,
    full_refresh: bool | None = None,
) -> None:
    """The destination's MQL reader and, when alerts are on, its task creator.

    HubSpot's MQLs are read through a cache in the state store when ``crm_snapshot`` is on,
    with its ``full_refresh_hours`` and ``skew_seconds``. ``full_refresh`` (``--full-refresh``)
    reads them in full; when not given, it is the snapshot's ``force_full``.
    """
    from connectors import leads

    channels = settings.channels
    if name == "salesforce":
        adapters.mql_sources[name] = leads.SalesforceMqls(
            destination, channels.sf_lead_statuses, channels.sf_contact_field
        )
        if channels.alerts_enabled:
            adapters.alert_sinks[name] = leads.SalesforceAlerts(
                destination, channels.sf_alert_key_field
            )
        if channels.stale_after_days is not None:
            adapters.activity_readers[name] = leads.SalesforceActivity(destination)
    elif name == "hubspot":
        snapshot = settings.crm_snapshot
        engine = getattr(adapters.state, "engine", None)
        cache, policy = None, None
        if snapshot.enabled and engine is not None:
            from connectors.mql_cache import MqlCache, RefreshPolicy

            cache = MqlCache(engine, adapters.state, name)
            if full_refresh is None:
                full_refresh = bool(getattr(destination, "force_full", False))
            policy = RefreshPolicy(
                max_age=timedelta(hours=snapshot.full_refresh_hours),
                skew=timedelta(seconds=snapshot.skew_seconds),
                force_full=full_refresh,
            )
        adapters.mql_sources[name] = leads.HubSpotMqls(
            destination,
            channels.hs_lifecycle_stage,
            channels.hs_mql_property,
            cache=cache,
            policy=policy,
        )
        if channels.alerts_enabled:
            adapters.alert_sinks[name] = leads.HubSpotAlerts(
                destination, channels.hs_alert_key_property
            )


def enabled_destinations(settings: Settings, only: tuple[str, ...] | None = None) -> list[str]:
    """Names of the destinations this run writes: enabled in config, filtered by ``only``."""
    names = [name for name, dest in settings.destinations.items() if dest.enabled]
    if only:
        names = [name for name in names if name in only]
    return names


def build_adapters(
    settings: Settings,
    *,
    env: Mapping[str, str] | None = None,
    only: tuple[str, ...] | None = None,
    with_destinations: bool = True,
    full_refresh: bool = False,
) -> Adapters:
    """Warehouse, state store and every enabled destination.

    A destination that cannot be built (missing credentials) is reported in
    ``destination_errors`` and the run goes on with the others.
    """
    env = os.environ if env is None else env
    store = build_state_store(settings)
    usage = build_usage_source(settings)
    adapters = Adapters(usage=usage, state=store)
    if settings.warehouse.model == "builtin":
        from connectors.leads import StateAlertLedger, WarehouseBuyers

        adapters.buyers = WarehouseBuyers(usage, settings.channels.persona, settings.account_level)
        adapters.alert_ledger = StateAlertLedger(store)
    if not with_destinations:
        return adapters
    for name in enabled_destinations(settings, only):
        try:
            destination = build_destination(name, settings, env)
            snapshot = settings.crm_snapshot
            if snapshot.enabled:
                from connectors.crm_snapshot import SnapshottingDestination

                destination = SnapshottingDestination(
                    destination,
                    store.engine,
                    store,
                    max_age=timedelta(hours=snapshot.full_refresh_hours),
                    skew=timedelta(seconds=snapshot.skew_seconds),
                    force_full=full_refresh,
                )
            adapters.destinations[name] = destination
            adapters.mappings[name] = settings.destinations[name].mapping
            add_lead_adapters(adapters, name, destination, settings, full_refresh=full_refresh)
        except PlsSyncError as exc:
            adapters.destination_errors[name] = str(exc)
    return adapters
