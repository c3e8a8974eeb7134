"""Shared fixtures: the CRM sandbox on loopback, a Postgres URL when CI provides one."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

# CI (.ci/run sets HYPOTHESIS_PROFILE=ci) draws the same examples on every run, so a red build
# is the change that exposed a case, never an unrelated later one; a developer's run explores
# anew each time (the default profile).
settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Tests never see the developer's CRM credentials or secrets folder."""
    for name in list(os.environ):
        if (
            name.startswith(("SALESFORCE_", "HUBSPOT_", "PLS_SYNC_"))
            and name != "PLS_SYNC_TEST_POSTGRES_URL"
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PLS_SYNC_SECRETS_DIR", str(tmp_path_factory.mktemp("no-secrets")))


@pytest.fixture
def sandbox() -> Iterator[object]:
    """A fresh CRM sandbox (Salesforce + HubSpot) on a free loopback port."""
    from pls_sync.sandbox.server import Sandbox

    box = Sandbox(port=0, seed=7).start()
    try:
        yield box
    finally:
        box.stop()


@pytest.fixture
def postgres_url() -> str:
    """The CI Postgres server's URL; the test is skipped when none is configured."""
    url = os.environ.get("PLS_SYNC_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("PLS_SYNC_TEST_POSTGRES_URL is not set")
    return url
