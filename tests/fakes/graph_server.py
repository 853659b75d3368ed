"""A faithful, stateful fake of Microsoft Graph (calendars) and the identity platform, over HTTPS.

Drive it with the real ``msal`` and ``httpx``::

    with FakeGraph() as fake:
        app = fake.add_app("syncd")
        secret = fake.add_secret(app.client_id)
        fake.add_mailbox("coach@contoso.onmicrosoft.com")
        cca = msal.ConfidentialClientApplication(
            app.client_id, authority=fake.authority(), client_credential=secret,
            instance_discovery=False, verify=fake.ca_pem_path)   # or REQUESTS_CA_BUNDLE
        token = cca.acquire_token_for_client(["https://graph.microsoft.com/.default"])
        httpx.get(fake.graph_url + "users/coach@contoso.onmicrosoft.com/calendars",
                  headers={"Authorization": "Bearer " + token["access_token"]},
                  verify=fake.ssl_context())                          # or SSL_CERT_FILE

Semantics live in :mod:`graph_model` (events), :mod:`graph_delta` (views, delta tokens),
:mod:`graph_identity` (tokens), :mod:`graph_subscriptions` (webhooks) and :mod:`graph_api`
(routes); :mod:`graph_controls` holds the test helpers; this module is the TLS server, the
request pipeline, fault injection and mailbox concurrency. People editing in Outlook live in
:mod:`graph_human`.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import socket
import ssl
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import trustme

from . import graph_api
from .graph_api import ApiRequest
from .graph_controls import Fault, GraphControls
from .graph_delta import DeltaTokens
from .graph_identity import LoginRequired, TokenError, parse_form
from .graph_model import Mailbox
from .graph_subscriptions import Notifier, Subscription
from .graph_tokens import Identity
from .graph_values import GraphError, new_guid

JSON_TYPE = (
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;"
    "charset=utf-8"
)
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


@dataclass(frozen=True)
class RequestRecord:
    """One request as the fake saw it (``mailbox``: the addressed UPN, lower-case)."""

    method: str
    path: str
    mailbox: str | None
    status: int
    client_id: str | None


def parse_prefer(values: Sequence[str]) -> dict[str, str]:
    """``Prefer`` headers (repeated or comma-separated) as ``{lower-case name: unquoted value}``."""
    out: dict[str, str] = {}
    for value in values:
        for part in re.findall(r'(?:[^,"]|"[^"]*")+', value):
            name, _, val = part.partition("=")
            if name.strip():
                out[name.strip().lower()] = val.strip().strip('"')
    return out


class FakeGraph(GraphControls):
    """Graph v1.0 (calendars, subscriptions) and login endpoints on https://127.0.0.1:<port>."""

    def __init__(
        self, ca: trustme.CA | None = None, *, tenant_domain: str = "contoso.onmicrosoft.com"
    ) -> None:
        self.lock = threading.RLock()
        self.identity = Identity()
        self.tenant = self.identity.add_tenant(tenant_domain)
        self.mailboxes: dict[str, Mailbox] = {}
        self.delta = DeltaTokens()
        self.subscriptions: dict[str, Subscription] = {}
        self.ca = ca or trustme.CA()
        self.deleted_items_visible = False  # GET /events/{id} still finds Deleted Items
        self.validation_timeout = 10.0
        self.latency = 0.0  # seconds each Graph request takes (to make requests overlap)
        self.mailbox_concurrency_limit = 4  # Outlook: 4 concurrent requests per app and mailbox
        self.requests: list[RequestRecord] = []
        self.internal_errors: list[str] = []  # tracebacks of bugs in the fake itself
        self._inflight: Counter[tuple[str, str]] = Counter()
        self._peak: dict[str, int] = {}
        self._counter_lock = threading.Lock()
        self._throttle_rate = 0.0
        self._rng = random.Random(0)
        self._faults: list[Fault] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-graph-")
        self.ca_pem_path = str(Path(self._tmp.name) / "fake-graph-ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_pem_path)
        self.notifier = Notifier(self.ssl_context())
        self._server: _Server | None = None
        self.base_url = ""

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FakeGraph:
        """Bind a free loopback port, serve TLS in a daemon thread."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        server.socket = ctx.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
        self._server = server
        self.base_url = f"https://127.0.0.1:{server.server_address[1]}"
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="fake-graph",
        ).start()
        self.notifier.start()
        return self

    def stop(self) -> None:
        """Stop serving and delivering."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.notifier.stop()
        self._tmp.cleanup()

    def __enter__(self) -> FakeGraph:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def graph_url(self) -> str:
        """The Graph endpoint, like ``https://graph.microsoft.com/v1.0/``."""
        return f"{self.base_url}/v1.0/"

    @property
    def authority_endpoint(self) -> str:
        """What to configure as ``[microsoft] authority_endpoint`` (login.microsoftonline.com)."""
        return f"{self.base_url}/"

    def authority(self, tenant: str | None = None) -> str:
        """An MSAL authority; use it with ``instance_discovery=False``."""
        return f"{self.base_url}/{tenant or self.tenant.id}"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting the fake's CA (``httpx.Client(verify=...)``)."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def client_env(self) -> dict[str, str]:
        """Env making httpx (SSL_CERT_FILE) and requests/MSAL (REQUESTS_CA_BUNDLE) trust it."""
        return {"SSL_CERT_FILE": self.ca_pem_path, "REQUESTS_CA_BUNDLE": self.ca_pem_path}

    def _fault(self, identity: bool) -> Fault | None:
        with self.lock:
            for i, fault in enumerate(self._faults):
                if fault.identity == identity:
                    return self._faults.pop(i)
            if not identity and self._throttle_rate and self._rng.random() < self._throttle_rate:
                return Fault(
                    429,
                    "TooManyRequests",
                    "Too many requests; retry after the delay in Retry-After.",
                    1,
                )
        return None

    @contextlib.contextmanager
    def _slot(self, client_id: str, mailbox: str | None) -> Iterator[None]:
        if mailbox is None:
            yield
            return
        key = (client_id, mailbox)
        with self._counter_lock:
            self._inflight[key] += 1
            self._peak[mailbox] = max(self._peak.get(mailbox, 0), self._inflight[key])
            over = self._inflight[key] > self.mailbox_concurrency_limit
            if over:
                self._inflight[key] -= 1
        if over:
            raise GraphError(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                {
                    "Retry-After": "1",
                    "RateLimit-Exceeded": "MailboxConcurrency",
                    "RateLimit-Scope": "Mailbox",
                },
            )
        try:
            yield
        finally:
            with self._counter_lock:
                self._inflight[key] -= 1

    # -- HTTP ---------------------------------------------------------------------------------
    def handle(
        self, method: str, target: str, headers: dict[str, str], prefer: list[str], raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """Serve one request: (status, headers, body)."""
        split = urlsplit(target)
        request_id = new_guid()
        base = {
            "request-id": request_id,
            "client-request-id": headers.get("client-request-id", request_id),
        }
        mailbox, client_id, status = None, None, 500
        try:
            if split.path.startswith("/v1.0/"):
                segments = [unquote(s) for s in split.path[len("/v1.0/") :].split("/") if s]
                with self.lock:
                    grant = self.identity.check_access(headers.get("authorization"))
                client_id = grant.client_id
                mailbox = self._mailbox_key(grant.upn, segments)
                fault = self._fault(identity=False)
                if fault is not None:
                    raise _fault_error(fault)
                try:
                    body = json.loads(raw) if raw.strip() else {}
                except ValueError as err:
                    raise GraphError(
                        400, "BadRequest", "Unable to read JSON request payload."
                    ) from err
                req = ApiRequest(
                    method, segments, dict(parse_qsl(split.query, keep_blank_values=True)),
                    body if isinstance(body, dict) else {}, grant, parse_prefer(prefer),
                    f"{self.base_url}{split.path}", f"{self.base_url}/v1.0",
                    headers.get("if-match"),
                )  # fmt: skip
                with self._slot(grant.client_id, mailbox):
                    if self.latency:
                        time.sleep(self.latency)
                    if method == "POST" and [s.lower() for s in segments] == ["subscriptions"]:
                        resp = graph_api.create_subscription(self, req)
                    else:
                        with self.lock:
                            resp = graph_api.route(self, req)
                            self._notify(req.changes)
                out = {**base, **resp.headers, "OData-Version": "4.0"}
                if req.applied:
                    out["Preference-Applied"] = ", ".join(
                        f"{k}={v}" for k, v in req.applied.items()
                    )
                status = resp.status
                if resp.body is None:
                    return status, out, b""
                return status, {**out, "Content-Type": JSON_TYPE}, json.dumps(resp.body).encode()
            status, extra, payload = self._identity(method, split.path, split.query, raw)
            return status, {**base, **extra}, payload
        except GraphError as err:
            status = err.status
            body_out = json.dumps(err.body(request_id, headers.get("client-request-id"))).encode()
            return status, {**base, **err.headers, "Content-Type": JSON_TYPE}, body_out
        except TokenError as err:
            status = err.status
            return (
                status,
                {**base, "Content-Type": "application/json; charset=utf-8"},
                json.dumps(err.body()).encode(),
            )
        except Exception as err:  # a bug in the fake: answer 500 rather than hang the client
            self.internal_errors.append(traceback.format_exc())
            return (
                500,
                base,
                json.dumps(
                    GraphError(500, "generalException", repr(err)).body(request_id)
                ).encode(),
            )
        finally:
            with self.lock:
                self.requests.append(RequestRecord(method, split.path, mailbox, status, client_id))

    def _mailbox_key(self, upn: str | None, segments: list[str]) -> str | None:
        low = [s.lower() for s in segments]
        if low[:1] == ["me"]:
            return upn.lower() if upn else None
        if low[:1] == ["users"] and len(low) > 1:
            with self.lock:
                hit = next(
                    (m.upn.lower() for m in self.mailboxes.values() if m.user_id == low[1]), None
                )
            return hit or low[1]
        return None

    def _identity(
        self, method: str, path: str, query: str, raw: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        seg = [unquote(s) for s in path.strip("/").split("/") if s]
        html = {"Content-Type": "text/html; charset=utf-8"}
        if seg == ["devicelogin"]:
            return 200, html, b"<html><body>Enter code to allow access</body></html>"
        fault = self._fault(identity=True)
        if fault is not None:
            raise _fault_error(fault)
        json_headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Cache-Control": "no-store",
        }
        tenant, rest = (seg[0], seg[1:]) if seg else ("", [])
        with self.lock:
            if rest == ["v2.0", ".well-known", "openid-configuration"] and method == "GET":
                return (
                    200,
                    json_headers,
                    json.dumps(self.identity.openid_configuration(tenant, self.base_url)).encode(),
                )
            if rest == ["discovery", "v2.0", "keys"]:
                return 200, json_headers, b'{"keys": []}'
            if rest == ["oauth2", "v2.0", "token"] and method == "POST":
                out = self.identity.token(tenant, parse_form(raw), self.base_url)
                return 200, json_headers, json.dumps(out).encode()
            if rest == ["oauth2", "v2.0", "devicecode"] and method == "POST":
                out = self.identity.device_code(tenant, parse_form(raw), self.base_url)
                return 200, json_headers, json.dumps(out).encode()
            if rest == ["oauth2", "v2.0", "authorize"] and method == "GET":
                params = dict(parse_qsl(query))
                try:
                    location = self.identity.authorize(tenant, params)
                except LoginRequired:
                    return 200, html, b"<html><body>Sign in to your account</body></html>"
                if params.get("response_mode") == "form_post":
                    return 200, html, _form_post(location)
                return 302, {"Location": location, "Content-Length": "0"}, b""
        return (
            404,
            json_headers,
            json.dumps({"error": "not_found", "error_description": path}).encode(),
        )


def _form_post(location: str) -> bytes:
    """Entra's form_post response: a page that POSTs the code to the redirect URI."""
    target, _, query = location.partition("?")
    fields = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in parse_qsl(query)
    )
    form = f'<form method="POST" action="{escape(target)}">{fields}</form>'
    return f'<html><body onload="document.forms[0].submit()">{form}</body></html>'.encode()


def _fault_error(fault: Fault) -> GraphError | TokenError:
    if fault.identity:
        return TokenError(fault.status, "temporarily_unavailable", 90033, fault.message)
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    return GraphError(fault.status, fault.code, fault.message, headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeGraph

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Failed TLS handshakes and reset connections are the client's business."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Microsoft-IIS/10.0"
    timeout = 30

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        self.request.do_handshake()  # in this connection's thread, not the accept loop
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        fake: FakeGraph = self.server.fake  # type: ignore[attr-defined]
        headers = {k.lower(): v for k, v in self.headers.items()}
        prefer = self.headers.get_all("Prefer") or []
        status, out, payload = fake.handle(self.command, self.path, headers, prefer, raw)
        self.send_response(status)
        for key, value in out.items():
            self.send_header(key, value)
        if "Content-Length" not in out and status not in (204, 304):
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return
