"""Graph change-notification subscriptions behind :class:`syncd.ports.ChangeNotifier`.

A subscription on ``users/{mailbox}/calendars/{id}/events`` posts JSON to syncd's https
address; its ``clientState`` is the secret syncd chose (the core stores only its hash and
checks it on every notification). Graph first validates the address: it POSTs
``?validationToken=…``, which must be echoed as text/plain within 10 seconds — the reader
answers that without touching the database. Lifecycle notifications
(``reauthorizationRequired``, ``missed``, ``subscriptionRemoved``) go to the same address and
make the core renew or reopen the subscription. A notification only marks the calendar due;
the change feed does the rest.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from syncd.ports import Channel, NotFound, Notification, PushReading

# Graph caps subscriptions on Outlook events at 4230 minutes; stay a little under.
MAX_TTL = timedelta(minutes=4230 - 10)


def _expiry(ttl: timedelta) -> datetime:
    return datetime.now(UTC) + min(ttl, MAX_TTL)


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _parse_expiry(value: Any) -> datetime | None:
    try:
        text = str(value or "").replace("Z", "+00:00")
        head, _, rest = text.partition(".")
        zone = rest[rest.find("+") :] if "+" in rest else ""
        return datetime.fromisoformat(head + zone).astimezone(UTC) if text else None
    except ValueError:
        return None


class GraphPush:
    """Subscriptions of one calendar, through a backend's transport (retries, error mapping)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def _channel(self, res: Mapping[str, Any], fallback: datetime) -> Channel:
        return Channel(
            channel_id=str(res["id"]),
            resource_id=str(res.get("resource") or ""),
            expiration=_parse_expiry(res.get("expirationDateTime")) or fallback,
        )

    def open_channel(self, address: str, secret: str, ttl: timedelta) -> Channel:
        """POST /subscriptions (not retried: a repeat would leave a second subscription)."""
        when = _expiry(ttl)
        body = {
            "changeType": "created,updated,deleted",
            "notificationUrl": address,
            "lifecycleNotificationUrl": address,
            "resource": self.backend.resource,
            "expirationDateTime": _stamp(when),
            "clientState": secret,
        }
        res = self.backend.transport.json(
            "subscriptions.create", "POST", "subscriptions", body=body, retry=False
        )
        return self._channel(res, when)

    def renew_channel(self, channel: Channel, address: str, secret: str, ttl: timedelta) -> Channel:
        """PATCH the expiration; a subscription Graph no longer knows is opened anew.

        A renewed subscription keeps its old ``clientState``: syncd's new secret would not
        match it, so a new subscription replaces the old one (the caller stops the old id).
        """
        return self.open_channel(address, secret, ttl)

    def stop_channel(self, channel: Channel) -> None:
        """DELETE /subscriptions/{id}; one Graph no longer knows is already stopped."""
        try:
            self.backend.transport.request(
                "subscriptions.delete", "DELETE", f"subscriptions/{channel.channel_id}"
            )
        except NotFound:
            return


class GraphNotificationReader:
    """Reads Graph's notification POSTs: the validation handshake, changes, lifecycle events."""

    def read(
        self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes
    ) -> PushReading:
        """An echo for ``validationToken``; else the ``value`` items with their clientState."""
        token = query.get("validationToken")
        if token is not None:
            return PushReading(echo=token)
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            return PushReading()
        items = doc.get("value") if isinstance(doc, dict) else None
        notes: list[Notification] = []
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict):
                continue
            sub, secret = item.get("subscriptionId"), item.get("clientState")
            if isinstance(sub, str) and isinstance(secret, str) and sub and secret:
                lifecycle = item.get("lifecycleEvent")
                notes.append(
                    Notification(
                        channel_id=sub,
                        secret=secret,
                        lifecycle=lifecycle if isinstance(lifecycle, str) else "",
                    )
                )
        return PushReading(notifications=tuple(notes))
