"""pls-sync: score product accounts as PQAs and sync the scores into the CRM."""

__version__ = "0.1.0"
