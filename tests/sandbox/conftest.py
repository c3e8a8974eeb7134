"""Fixtures for the sandbox tests: sandboxes on free loopback ports and simple-salesforce clients."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from simple_salesforce import Salesforce

from pls_sync.sandbox.salesforce import sandbox_login_session
from pls_sync.sandbox.server import Sandbox


@pytest.fixture
def box() -> Iterator[Sandbox]:
    """An empty sandbox org (no seed data), fresh for each test."""
    sandbox = Sandbox(port=0, seed=None).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


@pytest.fixture(scope="module")
def seeded() -> Iterator[Sandbox]:
    """A sandbox seeded from the demo companies, shared by a module's read-only tests."""
    sandbox = Sandbox(port=0, seed=7).start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


def _client(sandbox: Sandbox, **kwargs: Any) -> Any:
    # Any: simple-salesforce resolves sObjects dynamically (sf.Account), which mypy cannot follow.
    session = sandbox_login_session(sandbox.url)
    if kwargs:
        return Salesforce(session=session, **kwargs)
    return Salesforce(instance_url=sandbox.url, session_id=sandbox.session_id, session=session)


@pytest.fixture
def connect() -> Callable[..., Any]:
    """``connect(sandbox, **login)``: simple-salesforce on a sandbox, by session id or login."""
    return _client


@pytest.fixture
def sf(box: Sandbox) -> Any:
    """simple-salesforce connected to ``box`` with its session id."""
    return _client(box)
