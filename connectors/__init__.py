"""Adapters to the outside world: warehouse, Salesforce, HubSpot and the state store.

Only this package imports vendor clients (simple-salesforce, hubspot-api-client, SQLAlchemy).
Every adapter translates vendor errors into the error tree of ``pls_sync.errors``.
"""
