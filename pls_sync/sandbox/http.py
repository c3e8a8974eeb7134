"""The sandbox's request and response values: the contract between the server and each API module.

An API module (Salesforce, HubSpot) is an object with:

* ``handles(path) -> bool``: whether a path belongs to it;
* ``endpoint(request) -> str``: the counted endpoint name, e.g. ``sf.query``, ``hs.companies.batch_update``;
* ``handle(request) -> Response``;
* ``render_fault(kind, request) -> Response``: the vendor's own shape for an injected fault
  (``rate_limit``, ``server_error``, ``unavailable``, ``invalid_session``, ``request_limit``,
  ``daily_limit``).

The server (``pls_sync.sandbox.server``) parses HTTP into a ``Request``, counts it, applies
faults and writes the ``Response`` back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Request:
    """An HTTP request as the API modules see it. Header names are lower case."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        """The body parsed as JSON (``None`` when empty); raises ``ValueError`` when malformed."""
        if not self.body:
            return None
        return json.loads(self.body.decode("utf-8"))

    def param(self, name: str, default: str | None = None) -> str | None:
        """The first value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else default


@dataclass(slots=True)
class Response:
    """An HTTP response; a dict or list body is sent as JSON."""

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> tuple[bytes, str]:
        """The body as bytes and its content type."""
        if self.body is None:
            return b"", self.headers.get("Content-Type", "application/json")
        if isinstance(self.body, bytes):
            return self.body, self.headers.get("Content-Type", "application/octet-stream")
        if isinstance(self.body, str):
            return self.body.encode("utf-8"), self.headers.get(
                "Content-Type", "text/plain; charset=utf-8"
            )
        return (
            json.dumps(self.body, default=str).encode("utf-8"),
            self.headers.get("Content-Type", "application/json;charset=UTF-8"),
        )
