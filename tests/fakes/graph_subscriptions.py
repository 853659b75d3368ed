"""Change notification subscriptions of the Graph fake, and a webhook receiver for tests.

Graph validates ``notificationUrl`` (and ``lifecycleNotificationUrl``) synchronously while
creating a subscription: it POSTs ``?validationToken=...`` and expects, within 10 seconds, a
``200`` with ``text/plain`` echoing the URL-decoded token. Notifications are then POSTed
asynchronously; the receiver should answer 2xx within 3 seconds.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from .graph_values import GraphError, Json, format_timestamp, invalid_request, parse_instant

MAX_MINUTES = 4230  # Outlook event subscriptions: "4,230 minutes (under three days)"
CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
LIFECYCLE_EVENTS = frozenset({"reauthorizationRequired", "missed", "subscriptionRemoved"})


@dataclass
class Subscription:
    """One webhook subscription to a calendar's events."""

    id: str
    resource: str
    upn: str
    cal_id: str
    change_types: list[str]
    client_state: str | None
    notification_url: str
    lifecycle_url: str | None
    expiration: datetime
    app_id: str
    creator_id: str
    paused: bool = False  # after reauthorizationRequired, until reauthorized

    def resource_json(self) -> Json:
        """The subscription resource as Graph returns it."""
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": self.app_id,
            "changeType": ",".join(self.change_types),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": format_timestamp(self.expiration),
            "creatorId": self.creator_id,
            "includeResourceData": False,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


def parse_resource(resource: str) -> tuple[str | None, str | None]:
    """(user or None for ``me``, calendar id or None for the default calendar)."""
    text = re.sub(r"(\w+)\('([^']*)'\)", r"\1/\2", resource.strip().lstrip("/"))
    seg = [s for s in text.split("/") if s]
    low = [s.lower() for s in seg]
    if low[:1] == ["me"]:
        user, rest = None, seg[1:]
    elif low[:1] == ["users"] and len(seg) >= 2:
        user, rest = seg[1], seg[2:]
    else:
        raise invalid_request(f"Unsupported subscription resource '{resource}'.", "InvalidRequest")
    rl = [s.lower() for s in rest]
    if rl in (["events"], ["calendar", "events"]):
        return user, None
    if len(rest) == 3 and rl[0] == "calendars" and rl[2] == "events":
        return user, rest[1]
    raise invalid_request(f"Unsupported subscription resource '{resource}'.", "InvalidRequest")


def check_subscription_body(body: Json, *, creating: bool) -> tuple[list[str], datetime]:
    """Validate changeType and expirationDateTime (at most 4230 minutes ahead)."""
    raw_types = str(body.get("changeType") or "")
    types = [t.strip() for t in raw_types.split(",") if t.strip()]
    if creating and (not types or not set(types) <= CHANGE_TYPES):
        raise invalid_request(f"Invalid changeType '{raw_types}'.", "InvalidRequest")
    if not body.get("expirationDateTime"):
        raise invalid_request("expirationDateTime is required.", "InvalidRequest")
    when = parse_instant(str(body["expirationDateTime"]), "expirationDateTime")
    now = datetime.now(UTC)
    if when <= now:
        raise invalid_request("Subscription expiration must be in the future.", "InvalidRequest")
    if when > now + timedelta(minutes=MAX_MINUTES):
        raise invalid_request(
            f"Subscription expiration can only be {MAX_MINUTES} minutes in the future.",
            "InvalidRequest",
        )
    if creating:
        for key in ("notificationUrl", "lifecycleNotificationUrl"):
            url = body.get(key)
            if key == "notificationUrl" and not url:
                raise invalid_request("notificationUrl is required.", "InvalidRequest")
            if url and not _acceptable_url(str(url)):
                raise invalid_request(f"The {key} must be an https URL.", "InvalidRequest")
        if len(str(body.get("clientState") or "")) > 128:
            raise invalid_request("clientState is limited to 128 characters.", "InvalidRequest")
    return types, when


def _acceptable_url(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    # Graph requires https; the fake also accepts plain http on loopback for tests.
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


def validation_failed(url: str) -> GraphError:
    """Graph's answer when the notification endpoint fails the handshake."""
    return invalid_request(
        f"Subscription validation request failed. Notification endpoint must respond with 200 "
        f"OK to validation request. ({url})",
        "InvalidRequest",
    )


@dataclass
class Delivery:
    """One notification POST as the fake made it."""

    url: str
    payload: Json
    status: int | None
    error: str | None = None
    at: float = field(default_factory=time.time)


class Notifier:
    """Validation handshakes (synchronous) and notification deliveries (a worker thread)."""

    def __init__(self, verify: Any) -> None:
        self._client = httpx.Client(verify=verify, timeout=3.0)
        self._queue: queue.Queue[tuple[str, Json] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._cond = threading.Condition()
        self.deliveries: list[Delivery] = []
        self.retries = 2
        self.retry_delay = 0.2

    def validate(self, url: str, timeout: float) -> bool:
        """POST ``?validationToken=``; True when answered 200 text/plain with the token."""
        token = (
            "Validation: Testing client application reachability for subscription "
            f"Request-Id: {uuid.uuid4()}"
        )
        target = f"{url}{'&' if '?' in url else '?'}validationToken={quote(token)}"
        try:
            resp = self._client.post(
                target, headers={"Content-Type": "text/plain; charset=utf-8"}, timeout=timeout
            )
        except httpx.HTTPError:
            return False
        ctype = resp.headers.get("content-type", "")
        return resp.status_code == 200 and ctype.startswith("text/plain") and resp.text == token

    def start(self) -> None:
        """Start the delivery thread."""
        self._thread = threading.Thread(target=self._run, daemon=True, name="fake-graph-notify")
        self._thread.start()

    def stop(self) -> None:
        """Stop delivering and close the client."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None
        self._client.close()

    def send(self, url: str, payload: Json) -> None:
        """Queue one POST of a changeNotificationCollection."""
        with self._cond:
            self._pending += 1
        self._queue.put((url, payload))

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until every queued notification was attempted."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            url, payload = item
            for attempt in range(self.retries + 1):
                try:
                    resp = self._client.post(url, json=payload)
                    self.deliveries.append(Delivery(url, payload, resp.status_code))
                    if 200 <= resp.status_code < 300:
                        break
                except httpx.HTTPError as err:
                    self.deliveries.append(Delivery(url, payload, None, repr(err)))
                if attempt < self.retries:
                    time.sleep(self.retry_delay)
            with self._cond:
                self._pending -= 1
                self._cond.notify_all()


class WebhookReceiver:
    """A tiny plain-http endpoint on loopback that answers validations and keeps notifications."""

    def __init__(self, *, echo_validation: bool = True, status: int = 202) -> None:
        self.echo_validation = echo_validation
        self.status = status
        self.notifications: list[Json] = []
        self.validations: list[str] = []
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    def start(self) -> WebhookReceiver:
        """Serve on a free loopback port in a daemon thread."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                token = parse_qs(urlsplit(self.path).query).get("validationToken")
                if token is not None:
                    receiver.validations.append(token[0])
                    body = token[0].encode() if receiver.echo_validation else b"nope"
                    self.send_response(200 if receiver.echo_validation else 400)
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                with receiver._cond:
                    receiver.notifications.extend(json.loads(raw or b"{}").get("value", []))
                    receiver._cond.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/notify"
        server = self._server
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, predicate: Callable[[list[Json]], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate(notifications)`` holds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.notifications):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
