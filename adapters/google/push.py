"""Google Calendar push notifications: watch a calendar's events, stop a channel, and
check that an incoming notification belongs to a channel syncd opened.

Google posts an empty body with ``X-Goog-*`` headers to the channel's https address; the
only proof of origin is the channel token syncd chose, echoed in ``X-Goog-Channel-Token``.
A notification only says "something changed": the receiver should schedule a sync of that
calendar (the change feed does the rest), never act on the notification itself.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TypedDict

from adapters.google.backend import GoogleBackend
from syncd.ports import NotFound


class Channel(TypedDict):
    """An open notification channel: what :func:`stop` needs, and when it expires."""

    channel_id: str
    resource_id: str
    expiration: datetime | None  # aware UTC; None when Google did not say


def watch(backend: GoogleBackend, address: str, token: str, ttl_s: int) -> Channel:
    """events.watch on the backend's calendar: notifications go to ``address``.

    ``token`` must be a secret (e.g. 32 random bytes, URL-safe): Google echoes it in every
    notification and :func:`verify_notification` checks it. Google caps ``ttl_s``.
    """
    channel_id = str(uuid.uuid4())
    body = {
        "id": channel_id,
        "type": "web_hook",
        "address": address,
        "token": token,
        "params": {"ttl": str(int(ttl_s))},
    }
    # Retried like any call: a repeat after a lost answer gets "channel id not unique"
    # (a BackendError) and the first channel simply expires unused.
    res = backend.call(
        "events.watch",
        lambda s: s.events().watch(calendarId=backend.calendar_id, body=body),
    )
    raw_exp = res.get("expiration")
    expiration = (
        datetime.fromtimestamp(int(raw_exp) / 1000, UTC) if str(raw_exp or "").isdigit() else None
    )
    return Channel(
        channel_id=str(res.get("id") or channel_id),
        resource_id=str(res["resourceId"]),
        expiration=expiration,
    )


def stop(backend: GoogleBackend, channel_id: str, resource_id: str) -> None:
    """channels.stop; a channel Google no longer knows is already stopped."""
    body = {"id": channel_id, "resourceId": resource_id}
    try:
        backend.call("channels.stop", lambda s: s.channels().stop(body=body))
    except NotFound:
        return


def verify_notification(headers: Mapping[str, str], expected_token: str) -> str | None:
    """The channel id of a genuine notification, else None.

    Genuine means: ``X-Goog-Channel-Token`` equals ``expected_token`` (constant-time
    comparison) and a channel id is present. Header names are matched case-insensitively.
    """
    if not expected_token:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    token = lower.get("x-goog-channel-token")
    channel_id = lower.get("x-goog-channel-id")
    if token is None or not channel_id:
        return None
    if not hmac.compare_digest(token.encode("utf-8"), expected_token.encode("utf-8")):
        return None
    return channel_id
