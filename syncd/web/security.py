"""Security plumbing of the web side: response headers, rate limiting, CSRF, bearer auth."""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, MutableMapping
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
BASE_HEADERS = (
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
)
NO_STORE_PREFIXES = ("/choose", "/api/")

CSRF_COOKIE = "syncd_csrf"
CSRF_FIELD = "csrf"


class SecurityHeaders:
    """ASGI middleware: the same strict headers on every response, errors included.

    ``Cache-Control: no-store`` on the customer page (a link is a secret; a shared cache
    must never keep the page) and on the API.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Add the headers to ``http.response.start``."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        no_store = path.startswith(NO_STORE_PREFIXES)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in {h for h, _ in BASE_HEADERS}
                    and not (no_store and k.lower() == b"cache-control")
                ]
                headers.extend(BASE_HEADERS)
                if no_store:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def add_headers(headers: MutableHeaders, path: str) -> None:
    """Put the strict headers on a response built outside the middleware (a 500 page)."""
    for name, value in BASE_HEADERS:
        headers[name.decode()] = value.decode()
    if path.startswith(NO_STORE_PREFIXES):
        headers["cache-control"] = "no-store"


class RateLimiter:
    """A sliding-window limit of ``per_minute`` hits per key (a client IP).

    In memory: when several processes serve the page (several ``syncd run`` workers behind
    one proxy), each keeps its own window, so a client may get up to ``per_minute`` hits
    per process. The tokens are 256-bit, so this limit is about load and noise, not about
    making guessing feasible.
    """

    MAX_KEYS = 50_000

    def __init__(
        self,
        per_minute: int,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_minute = per_minute
        self.window = window
        self.clock = clock
        self._hits: MutableMapping[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> float | None:
        """Record one hit; ``None`` when allowed, else the seconds until the next is."""
        now = self.clock()
        horizon = now - self.window
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= self.MAX_KEYS:
                    self._prune(horizon)
                hits = self._hits[key] = deque()
            while hits and hits[0] <= horizon:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return max(1.0, hits[0] - horizon)
            hits.append(now)
            return None

    def _prune(self, horizon: float) -> None:
        for key in [k for k, v in self._hits.items() if not v or v[-1] <= horizon]:
            del self._hits[key]
        if len(self._hits) >= self.MAX_KEYS:  # still full: forget the oldest clients
            for key in list(self._hits)[: len(self._hits) // 2]:
                del self._hits[key]


def new_csrf_token() -> str:
    """A fresh random double-submit token (256 bits)."""
    return secrets.token_urlsafe(32)


def csrf_ok(cookie: str | None, field: Any) -> bool:
    """True when the form field equals the cookie (double submit), in constant time."""
    if not cookie or not isinstance(field, str) or not field:
        return False
    return hmac.compare_digest(cookie.encode(), field.encode())


def bearer_ok(header: str | None, expected: str) -> bool:
    """True when ``Authorization: Bearer <token>`` carries ``expected``, in constant time."""
    if not header or not expected:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), expected.encode())
