"""Push notification channels for the Google Calendar fake (events.watch, channels.stop)."""

from __future__ import annotations

import hashlib
import http.client
import queue
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, urlsplit

from .google_calendar_model import ApiError, bad_request

DEFAULT_TTL_S = 604_800
MAX_TTL_S = 2_592_000


@dataclass
class Channel:
    """A web_hook channel watching one calendar's events."""

    id: str
    resource_id: str
    calendar_id: str
    address: str
    token: str | None
    expiration_ms: int
    message_number: int = 0

    def resource_uri(self) -> str:
        cal = quote(self.calendar_id, safe="")
        return f"https://www.googleapis.com/calendar/v3/calendars/{cal}/events?alt=json"

    def resource(self) -> dict[str, Any]:
        res: dict[str, Any] = {
            "kind": "api#channel",
            "id": self.id,
            "resourceId": self.resource_id,
            "resourceUri": self.resource_uri(),
            "expiration": str(self.expiration_ms),
        }
        if self.token is not None:
            res["token"] = self.token
        return res

    def headers(self, state: str) -> dict[str, str]:
        """The headers of one notification; Google sends an empty body."""
        self.message_number += 1
        out = {
            "X-Goog-Channel-ID": self.id,
            "X-Goog-Channel-Expiration": formatdate(self.expiration_ms / 1000, usegmt=True),
            "X-Goog-Resource-ID": self.resource_id,
            "X-Goog-Resource-URI": self.resource_uri(),
            "X-Goog-Resource-State": state,
            "X-Goog-Message-Number": str(self.message_number),
        }
        if self.token is not None:
            out["X-Goog-Channel-Token"] = self.token
        return out


def resource_id_for(calendar_id: str) -> str:
    """Google's resourceId is opaque and stable for one watched resource."""
    return hashlib.sha1(f"events:{calendar_id}".encode()).hexdigest()[:27]


def channel_from_watch(calendar_id: str, body: dict[str, Any]) -> Channel:
    """Validate an events.watch request body and build its channel."""
    if not body.get("id"):
        raise bad_request("Missing channel id.", "required")
    if body.get("type") not in ("web_hook", "webhook"):
        raise bad_request(f"Invalid channel type: {body.get('type')}", "invalid")
    if not body.get("address"):
        raise bad_request("Missing channel address.", "required")
    # Google insists on https; the fake accepts http so tests can run a plain receiver.
    ttl = int((body.get("params") or {}).get("ttl", DEFAULT_TTL_S))
    ttl = min(max(ttl, 1), MAX_TTL_S)
    expiration = int(time.time() * 1000) + ttl * 1000
    if body.get("expiration"):
        expiration = min(expiration, int(body["expiration"]))
    return Channel(
        id=str(body["id"]),
        resource_id=resource_id_for(calendar_id),
        calendar_id=calendar_id,
        address=str(body["address"]),
        token=body.get("token"),
        expiration_ms=expiration,
    )


def channel_not_found(channel_id: str) -> ApiError:
    return ApiError(404, "notFound", f"Channel '{channel_id}' not found for project 'fake'")


class Notifier:
    """Delivers notifications in order from one background thread; failures are ignored."""

    def __init__(self, timeout: float = 2.0) -> None:
        self._queue: queue.Queue[tuple[str, dict[str, str]] | None] = queue.Queue()
        self._timeout = timeout
        self._thread = threading.Thread(target=self._run, name="fake-gcal-push", daemon=True)
        self.delivered = 0
        self.failed = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=5)

    def send(self, address: str, headers: dict[str, str]) -> None:
        self._queue.put((address, headers))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            address, headers = item
            try:
                self._post(address, headers)
                self.delivered += 1
            except Exception:  # Google ignores receiver failures too
                self.failed += 1

    def _post(self, address: str, headers: dict[str, str]) -> None:
        # http.client keeps the header case Google uses (urllib would capitalize() it).
        url = urlsplit(address)
        conn_cls = (
            http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_cls(url.netloc, timeout=self._timeout)
        try:
            target = (url.path or "/") + (f"?{url.query}" if url.query else "")
            conn.request("POST", target, body=b"", headers=headers)
            conn.getresponse().read()
        finally:
            conn.close()
