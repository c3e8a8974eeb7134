"""The sandbox's HTTP server: routes requests to the API modules, counts them, injects faults.

Bound to 127.0.0.1 only. Each API module (Salesforce, HubSpot) follows the contract in
``pls_sync.sandbox.http``. Admin endpoints under ``/__sandbox/`` (not counted):

* ``GET /__sandbox/health``: ``{"status": "ok", "apis": [...]}``;
* ``GET /__sandbox/counts``: requests by endpoint name;
* ``POST /__sandbox/reset-counts``;
* ``POST /__sandbox/faults``: a JSON rule (``kind``, ``endpoint``, ``times``, ``rate``,
  ``record_ids``, ``retry_after``, ``delay``) -> 201 with the rule; the kinds and the after-write
  faults (the CRM applies the request, the answer is lost, cut, late or not JSON) are described
  in ``pls_sync.sandbox.faults``;
* ``GET /__sandbox/faults``: the active rules; ``DELETE /__sandbox/faults``: clear them;
* ``POST /__sandbox/salesforce/schema`` and ``POST /__sandbox/hubspot/schema``: change a
  field the way an admin would (delete it, change its picklist values, make it read-only...);
  see ``pls_sync.sandbox.salesforce`` and ``pls_sync.sandbox.hubspot``.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from pls_sync.sandbox.faults import AFTER_WRITE_KINDS, FaultInjector, FaultRule
from pls_sync.sandbox.http import Request, Response
from pls_sync.sandbox.salesforce import SalesforceApi

ADMIN_PREFIX = "/__sandbox/"
LOOPBACK = "127.0.0.1"
DEFAULT_COMPANIES = 400


class ApiModule(Protocol):
    """What the server needs from an API module (see ``pls_sync.sandbox.http``)."""

    def handles(self, path: str) -> bool:
        """Whether ``path`` belongs to the module."""
        ...

    def endpoint(self, request: Request) -> str:
        """The counted endpoint name."""
        ...

    def handle(self, request: Request) -> Response:
        """Answer the request."""
        ...

    def render_fault(self, kind: str, request: Request) -> Response:
        """The vendor's response for an injected fault."""
        ...


class SandboxServer(ThreadingHTTPServer):
    """A threading HTTP server that dispatches to API modules, with counts and faults."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, apis: Sequence[ApiModule], faults: FaultInjector):
        self.apis = list(apis)
        self.faults = faults
        # The CRM's clock, for the Date header of every answer (epoch seconds).
        self.clock: Callable[[], float] = time.time
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        super().__init__((LOOPBACK, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (timeouts, dropped connections) is normal here, not a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)):
            return
        super().handle_error(request, client_address)

    def count(self, endpoint: str) -> None:
        """Count one request under ``endpoint``."""
        with self._counts_lock:
            self._counts[endpoint] += 1

    def counts(self) -> dict[str, int]:
        """Requests so far by endpoint name (plus ``faults_injected`` once a fault fired)."""
        with self._counts_lock:
            out = dict(self._counts)
        if self.faults.injected:
            out["faults_injected"] = self.faults.injected
        return out

    def reset_counts(self) -> None:
        """Zero every counter, the injected-faults one included."""
        with self._counts_lock:
            self._counts.clear()
            self.faults.injected = 0


class _Handler(BaseHTTPRequestHandler):
    """One connection: parse, route, count, fault, answer."""

    server: SandboxServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the client's delayed ACK adds ~40 ms.
    disable_nagle_algorithm = True
    server_version = "pls-sync-sandbox/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: request lines would carry session ids in query strings and flood test output."""

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header, from the sandbox's clock (a test may move it), as a CRM's is."""
        return super().date_time_string(self.server.clock() if timestamp is None else timestamp)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _read_request(self) -> Request:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        return Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )

    def _dispatch(self) -> None:
        request = self._read_request()
        if request.path.startswith(ADMIN_PREFIX):
            self._write(self._admin(request))
            return
        api = next((a for a in self.server.apis if a.handles(request.path)), None)
        if api is None:
            self.server.count("unknown")
            self._write(Response(404, {"message": f"no sandbox API serves {request.path}"}))
            return
        endpoint = api.endpoint(request)
        self.server.count(endpoint)
        rule = self.server.faults.pick(endpoint)
        if rule is not None:
            if rule.kind == "drop":
                # Close without a byte of response: the client sees a dropped connection.
                self.close_connection = True
                return
            if rule.kind in ("slow", "apply_late"):
                time.sleep(rule.delay or 0.0)
            elif rule.kind not in AFTER_WRITE_KINDS:
                self._write(self._fault_response(api, rule, request))
                return
        try:
            response = api.handle(request)
        except Exception as exc:  # a sandbox bug must surface as a 500, not a hung client
            response = Response(500, {"message": f"sandbox error: {type(exc).__name__}: {exc}"})
        if rule is not None and rule.kind in AFTER_WRITE_KINDS:
            self._spoil_answer(rule, response)
            return
        self._write(response)

    def _spoil_answer(self, rule: FaultRule, response: Response) -> None:
        """Answer a request the API has handled the way an after-write fault says."""
        if rule.kind == "answer_lost":
            self.close_connection = True
            return
        if rule.kind == "answer_late":
            time.sleep(rule.delay or 0.0)
        elif rule.kind == "answer_not_json":
            response = Response(200, _PROXY_PAGE, {"Content-Type": "text/html; charset=utf-8"})
        elif rule.kind == "answer_cut":
            body, content_type = response.encoded()
            if len(body) < 2:  # nothing to cut: the answer is lost instead
                self.close_connection = True
                return
            self.send_response(response.status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        # A late answer may find the client gone: that is the point of it.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._write(response)

    @staticmethod
    def _fault_response(api: ApiModule, rule: FaultRule, request: Request) -> Response:
        response = api.render_fault(rule.kind, request)
        if rule.kind == "rate_limit" or rule.retry_after is not None:
            retry_after = rule.retry_after if rule.retry_after is not None else 1
            response.headers["Retry-After"] = _seconds(retry_after)
        return response

    def _admin(self, request: Request) -> Response:
        name = request.path[len(ADMIN_PREFIX) :].strip("/")
        method = request.method
        if name == "health" and method == "GET":
            apis = [type(api).__name__ for api in self.server.apis]
            return Response(200, {"status": "ok", "apis": apis})
        if name == "counts" and method == "GET":
            return Response(200, self.server.counts())
        if name == "reset-counts" and method == "POST":
            self.server.reset_counts()
            return Response(200, {"status": "reset"})
        if name == "faults":
            if method == "GET":
                return Response(200, [rule.as_dict() for rule in self.server.faults.rules])
            if method == "DELETE":
                self.server.faults.clear()
                return Response(204)
            if method == "POST":
                try:
                    data = request.json()
                    if not isinstance(data, dict):
                        raise ValueError("a fault rule is a JSON object")
                    rule = self.server.faults.add_from_json(data)
                except (ValueError, TypeError) as exc:
                    return Response(400, {"message": str(exc)})
                return Response(201, rule.as_dict())
        # Admin endpoints of one API (schema changes) are routed to that API's ``admin``.
        for api in self.server.apis:
            hook = getattr(api, "admin", None)
            answer = hook(name, request) if hook is not None else None
            if answer is not None:
                return answer
        return Response(404, {"message": f"unknown admin endpoint {request.method} {request.path}"})

    def _write(self, response: Response) -> None:
        body, content_type = response.encoded()
        no_body = response.status in (204, 304)
        self.send_response(response.status)
        for key, value in response.headers.items():
            if key.lower() not in ("content-type", "content-length"):
                self.send_header(key, value)
        if not no_body:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(body)


# What a proxy or load balancer in front of the CRM answers when it mangles the CRM's answer.
_PROXY_PAGE = (
    "<html><head><title>Service Unavailable</title></head><body><h1>Service Unavailable</h1>"
    "<p>The server is temporarily unable to service your request.</p></body></html>"
)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class Sandbox:
    """The local CRM stand-in: Salesforce (and HubSpot when available) on one loopback port.

    The server binds at construction, so ``url`` is known before ``start`` (a port in use raises
    ``OSError`` with ``errno.EADDRINUSE``). ``seed=None`` starts an empty org; otherwise the org
    is seeded from ``companies`` (default: the demo companies for ``seed``). ``session_id`` and
    ``hubspot_token`` are the credentials the APIs accept (default: new ones), so a restarted
    sandbox can keep the ones its clients were given. ``bare``: a CRM without any of pls-sync's
    fields (nor values in them), for ``pls-sync setup`` to create. ``as_of``: the day the demo's
    deals and opportunities are told as of (default: today), the demo warehouse's.
    """

    def __init__(
        self,
        host: str = LOOPBACK,
        port: int = 0,
        *,
        seed: int | None = 7,
        companies: Sequence[Any] | None = None,
        faults_seed: int = 0,
        session_id: str | None = None,
        hubspot_token: str | None = None,
        bare: bool = False,
        as_of: datetime | None = None,
    ):
        if host not in (LOOPBACK, "localhost"):
            raise ValueError(f"the sandbox binds to {LOOPBACK} only, not {host!r}")
        self.faults = FaultInjector(seed=faults_seed)
        self.salesforce = SalesforceApi(faults=self.faults, session_id=session_id, bare=bare)
        self.session_id = self.salesforce.session_id
        if seed is not None:
            from pls_sync.sandbox.seed import seed_salesforce

            if companies is None:
                companies = _demo_companies(seed)
            seed_salesforce(self.salesforce, companies, seed, as_of=as_of)
        self.hubspot = _build_hubspot(seed, companies, hubspot_token, bare, as_of)
        self.hubspot_token: str = (
            self.hubspot.token
            if self.hubspot is not None
            else hubspot_token or "pat-na1-" + _uuid_from(seed)
        )
        apis: list[ApiModule] = [self.salesforce]
        if self.hubspot is not None:
            apis.append(self.hubspot)
        self._server = SandboxServer(port, apis, self.faults)
        self.port: int = self._server.server_address[1]
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.salesforce.base_url = self.url
        self._thread: threading.Thread | None = None

    def set_clock(self, now: Callable[[], datetime]) -> None:
        """Run both CRMs and the answers' Date headers on ``now`` (aware UTC datetimes):
        record stamps and deletion times follow it (rate-limit windows keep real time)."""
        self.salesforce.clock = now
        if self.hubspot is not None:
            self.hubspot.clock = lambda: now().timestamp()
        self._server.clock = lambda: now().timestamp()

    @property
    def apis(self) -> list[ApiModule]:
        """The API modules the server routes to."""
        return list(self._server.apis)

    def start(self) -> Sandbox:
        """Serve in a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="pls-sync-sandbox",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def serve_forever(self) -> None:
        """Serve in the foreground until interrupted (``pls-sync sandbox``)."""
        try:
            self._server.serve_forever(poll_interval=0.2)
        finally:
            self._server.server_close()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def counts(self) -> dict[str, int]:
        """Requests by endpoint name, e.g. ``{"sf.query": 3, "hs.companies.batch_update": 1}``."""
        return self._server.counts()

    def reset_counts(self) -> None:
        """Zero the request counts."""
        self._server.reset_counts()


def _demo_companies(seed: int) -> list[Any]:
    from pls_sync.demo_companies import demo_companies

    return list(demo_companies(seed, DEFAULT_COMPANIES))


def _uuid_from(seed: int | None) -> str:
    import random
    import uuid

    rng = random.Random(f"hubspot-token-{seed}")
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _build_hubspot(
    seed: int | None,
    companies: Sequence[Any] | None,
    token: str | None = None,
    bare: bool = False,
    as_of: datetime | None = None,
) -> Any:
    """The HubSpot module when ``pls_sync.sandbox.hubspot`` is importable, else None."""
    try:
        from pls_sync.sandbox.hubspot import HubSpotApi
    except ImportError:
        return None
    if seed is None:
        return HubSpotApi(7, companies=companies or [], token=token, bare=bare, as_of=as_of)
    return HubSpotApi(seed, companies=companies, token=token, bare=bare, as_of=as_of)
