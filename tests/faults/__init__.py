"""Fault-injection and crash-convergence tests: the real connectors against the CRM sandbox."""
