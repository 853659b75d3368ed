"""Google Calendar push channels (``events.watch``) behind :class:`syncd.ports.ChangeNotifier`.

Google posts an empty body with ``X-Goog-*`` headers to the channel's https address; the
only proof of origin is the channel token syncd chose, echoed in ``X-Goog-Channel-Token``.
A notification only says "something changed": the core schedules a sync of that calendar
(the change feed does the rest), never acts on the notification itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.ports import Channel, NotFound, Notification, PushReading


class GooglePush:
    """Channels of one calendar, through a backend's ``call`` (retries, error mapping)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def open_channel(self, address: str, secret: str, ttl: timedelta) -> Channel:
        """events.watch on the calendar; Google caps ``ttl`` and says when it ends."""
        channel_id = str(uuid.uuid4())
        body = {
            "id": channel_id,
            "type": "web_hook",
            "address": address,
            "token": secret,
            "params": {"ttl": str(int(ttl.total_seconds()))},
        }
        # Retried like any call: a repeat after a lost answer gets "channel id not unique"
        # (a BackendError) and the first channel simply expires unused.
        res = self.backend.call(
            "events.watch",
            lambda s: s.events().watch(calendarId=self.backend.calendar_id, body=body),
        )
        raw_exp = res.get("expiration")
        expiration = (
            datetime.fromtimestamp(int(raw_exp) / 1000, UTC)
            if str(raw_exp or "").isdigit()
            else None
        )
        return Channel(
            channel_id=str(res.get("id") or channel_id),
            resource_id=str(res["resourceId"]),
            expiration=expiration,
        )

    def renew_channel(self, channel: Channel, address: str, secret: str, ttl: timedelta) -> Channel:
        """Google channels cannot be extended: a new one replaces it (the caller stops it)."""
        return self.open_channel(address, secret, ttl)

    def stop_channel(self, channel: Channel) -> None:
        """channels.stop; a channel Google no longer knows is already stopped."""
        body = {"id": channel.channel_id, "resourceId": channel.resource_id}
        try:
            self.backend.call("channels.stop", lambda s: s.channels().stop(body=body))
        except NotFound:
            return


class GoogleNotificationReader:
    """Reads Google's notification headers (header names case-insensitively)."""

    def read(
        self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes
    ) -> PushReading:
        """One notification when both the channel id and its token are present."""
        lower = {k.lower(): v for k, v in headers.items()}
        token = lower.get("x-goog-channel-token", "")
        channel_id = lower.get("x-goog-channel-id", "")
        if not token or not channel_id:
            return PushReading()
        return PushReading(notifications=(Notification(channel_id=channel_id, secret=token),))
