"""Test controls of the Graph fake: directory set-up, revocation, state, faults, webhooks.

:class:`GraphControls` is mixed into :class:`graph_server.FakeGraph`; every method takes the
fake's lock, so tests may call them while clients are talking to the server.
"""

from __future__ import annotations

import copy
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .graph_delta import DeltaTokens
from .graph_identity import App, Secret, Tenant, User, auth_response
from .graph_model import Mailbox, StoredCalendar, StoredEvent, render_event
from .graph_subscriptions import LIFECYCLE_EVENTS, Notifier, Subscription
from .graph_tokens import Identity
from .graph_values import GraphError, Json, format_timestamp, new_guid


@dataclass(frozen=True)
class Fault:
    """An error to answer instead of serving a request."""

    status: int
    code: str
    message: str
    retry_after: int | None = None
    identity: bool = False


class GraphControls:
    """Helpers a test uses to arrange and inspect the fake (mixed into FakeGraph)."""

    lock: threading.RLock
    identity: Identity
    tenant: Tenant
    mailboxes: dict[str, Mailbox]
    delta: DeltaTokens
    subscriptions: dict[str, Subscription]
    notifier: Notifier
    latency: float
    _faults: list[Fault]
    _throttle_rate: float
    _rng: random.Random
    _peak: dict[str, int]
    _counter_lock: threading.Lock

    # -- directory: tenants, users, apps, secrets ---------------------------------------------
    def add_mailbox(
        self,
        upn: str,
        display_name: str | None = None,
        *,
        time_zone: str = "W. Europe Standard Time",
        tenant_id: str | None = None,
    ) -> Mailbox:
        """A licensed user with an Exchange mailbox (and its default calendar "Calendar")."""
        with self.lock:
            tid = tenant_id or self.tenant.id
            mb = Mailbox(upn, display_name or upn.split("@")[0].title(), tid, time_zone)
            self.mailboxes[upn.lower()] = mb
            self.identity.users[upn.lower()] = User(upn, mb.user_id, mb.display_name, tid)
            return mb

    def add_app(
        self,
        name: str = "syncd",
        *,
        public_client: bool = False,
        multi_tenant: bool = False,
        redirect_uris: Sequence[str] = (),
        roles: Sequence[str] = ("Calendars.ReadWrite",),
        tenant_id: str | None = None,
    ) -> App:
        """An app registration; ``roles`` are its consented application permissions."""
        with self.lock:
            app = App(
                new_guid(),
                tenant_id or self.tenant.id,
                name,
                public_client,
                multi_tenant,
                list(redirect_uris),
                list(roles),
            )
            self.identity.apps[app.client_id] = app
            return app

    def add_secret(self, client_id: str) -> str:
        """A new client secret value for an app (shaped like Entra's ``xyz8Q~...``)."""
        value = secrets.token_urlsafe(3)[:3] + "8Q~" + secrets.token_urlsafe(28)[:37]
        with self.lock:
            self.identity.apps[client_id].secrets.append(Secret(new_guid(), value))
        return value

    def _secrets(self, client_id: str, value: str | None) -> list[Secret]:
        return [s for s in self.identity.apps[client_id].secrets if value in (None, s.value)]

    def revoke_secret(self, client_id: str, value: str | None = None) -> None:
        """Delete a secret (all when ``value`` is None): the token endpoint says AADSTS7000215."""
        with self.lock:
            for s in self._secrets(client_id, value):
                s.state = "revoked"

    def expire_secret(self, client_id: str, value: str | None = None) -> None:
        """Let a secret pass its end date: the token endpoint answers AADSTS7000222."""
        with self.lock:
            for s in self._secrets(client_id, value):
                s.state = "expired"

    def revoke_refresh_tokens(self, upn: str | None = None, *, client_id: str | None = None) -> int:
        """Revoke refresh tokens (``revokeSignInSessions``): invalid_grant AADSTS50173."""
        with self.lock:
            hits = [
                g for g in self.identity.refresh.values()
                if upn in (None, g.upn.lower()) and client_id in (None, g.client_id)
            ]  # fmt: skip
            for g in hits:
                g.revoked = True
            return len(hits)

    def invalidate_access_tokens(
        self, upn: str | None = None, *, client_id: str | None = None
    ) -> int:
        """Revoke issued access tokens: Graph answers 401 InvalidAuthenticationToken."""
        with self.lock:
            hits = [
                g for g in self.identity.access.values()
                if (upn is None or (g.upn or "").lower() == upn.lower())
                and client_id in (None, g.client_id)
            ]  # fmt: skip
            for g in hits:
                g.revoked = True
            return len(hits)

    def expire_access_tokens(self) -> None:
        """Every issued access token reaches its ``exp``: 401 "Lifetime validation failed"."""
        with self.lock:
            for g in self.identity.access.values():
                g.expires_at = 0.0

    def pending_user_codes(self) -> list[str]:
        """User codes of device flows nobody approved yet."""
        with self.lock:
            dcs = self.identity.device_codes.values()
            return [d.user_code for d in dcs if d.approved_upn is None and not d.denied]

    def _device(self, user_code: str) -> Any:
        return next(d for d in self.identity.device_codes.values() if d.user_code == user_code)

    def approve_device_code(self, user_code: str, upn: str) -> None:
        """The person types the code at the verification URI and signs in as ``upn``."""
        with self.lock:
            if upn.lower() not in self.identity.users:
                raise KeyError(upn)
            self._device(user_code).approved_upn = upn

    def deny_device_code(self, user_code: str) -> None:
        """The person declines the sign-in request."""
        with self.lock:
            self._device(user_code).denied = True

    def sign_in(self, auth_uri: str, upn: str) -> dict[str, Any]:
        """A browser opening ``auth_uri`` as ``upn``: the auth response for MSAL's code flow."""
        parts = urlsplit(auth_uri)
        tenant = parts.path.strip("/").split("/")[0]
        with self.lock:
            return auth_response(self.identity.authorize(tenant, dict(parse_qsl(parts.query)), upn))

    # -- calendar state, for assertions and set-up --------------------------------------------
    def mailbox(self, upn: str) -> Mailbox:
        """A mailbox by UPN (KeyError when unknown)."""
        return self.mailboxes[upn.lower()]

    def calendar(self, upn: str, name: str = "Calendar") -> StoredCalendar:
        """A calendar of a mailbox by its name."""
        with self.lock:
            return next(c for c in self.mailbox(upn).calendars.values() if c.name == name)

    def stored(self, upn: str, event_id: str) -> StoredEvent:
        """A copy of a live event as stored (local times and zones as written)."""
        with self.lock:
            return copy.deepcopy(self.mailbox(upn).find(event_id))

    def event(
        self, upn: str, event_id: str, *, zone: str | None = None, props: Sequence[str] = ()
    ) -> Json:
        """A live event rendered as Graph would (own zones unless ``zone``), KeyError if absent."""
        with self.lock:
            mb = self.mailbox(upn)
            try:
                ev = mb.find(event_id)
            except GraphError as err:
                raise KeyError(event_id) from err
            return render_event(ev, mb, zone=zone, props=list(props) or None)

    def events(self, upn: str, cal_id: str | None = None) -> list[Json]:
        """Every live event of a calendar (default calendar when None), in UTC."""
        with self.lock:
            mb = self.mailbox(upn)
            return [
                render_event(e, mb, zone="UTC", props=list(e.ext))
                for e in mb.calendar(cal_id).events.values()
            ]

    def deleted_items(self, upn: str) -> list[Json]:
        """What sits in the mailbox's Deleted Items, in UTC."""
        with self.lock:
            mb = self.mailbox(upn)
            return [
                render_event(e, mb, zone="UTC", props=list(e.ext))
                for e in mb.deleted_items.values()
            ]

    def restore_from_deleted_items(
        self, event_id: str, *, upn: str | None = None, new_id: bool = True
    ) -> str:
        """Move a deleted event back to its calendar under a new id, keeping transactionId and
        extended properties, as Outlook's "Restore" may; returns the id it now has."""
        with self.lock:
            mb = (
                self.mailbox(upn)
                if upn
                else next(m for m in self.mailboxes.values() if event_id in m.deleted_items)
            )
            ev = mb.restore(event_id, new_id=new_id)
            self._notify([(mb, ev.calendar_id, ev, "created")])
            return ev.id

    def human_change(
        self, upn: str, event_id: str, mutate: Callable[[Mailbox, StoredEvent], None]
    ) -> StoredEvent:
        """An edit bypassing the API's checks (no If-Match), versioned and notified like any."""
        with self.lock:
            mb = self.mailbox(upn)
            ev = mb.find(event_id)
            draft = copy.deepcopy(ev)
            mutate(mb, draft)
            mb.validate(draft)  # Outlook, too, refuses an end before the start
            ev.__dict__.update(draft.__dict__)
            mb.touch(ev)
            self._notify([(mb, ev.calendar_id, ev, "updated")])
            return copy.deepcopy(ev)

    def human_delete(self, upn: str, event_id: str) -> None:
        """Delete without a condition: the event moves to Deleted Items."""
        with self.lock:
            mb = self.mailbox(upn)
            ev = mb.find(event_id)
            mb.delete_event(ev)
            self._notify([(mb, ev.calendar_id, ev, "deleted")])

    # -- delta, faults, throttling ------------------------------------------------------------
    def expire_delta_tokens(self) -> None:
        """Every nextLink/deltaLink now answers 410 Gone, code SyncStateNotFound."""
        with self.lock:
            self.delta.expire_all()

    def force_delta_reset(self) -> None:
        """The next nextLink/deltaLink answers 410 with a ``Location`` to restart from (Graph's
        "synchronization reset"); every token is forgotten."""
        with self.lock:
            self.delta.reset_pending = True

    def throttle(self, fraction: float, seed: int = 0) -> None:
        """Answer a (deterministic, seeded) fraction of Graph requests with 429 Retry-After: 1."""
        with self.lock:
            self._throttle_rate, self._rng = fraction, random.Random(seed)

    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        code: str = "ServiceUnavailable",
        message: str = "The service is temporarily unavailable.",
        *,
        retry_after: int | None = None,
        identity: bool = False,
    ) -> None:
        """Answer the next ``n`` Graph (or, with ``identity``, login) requests with this error."""
        with self.lock:
            self._faults.extend([Fault(status, code, message, retry_after, identity)] * n)

    def clear_faults(self) -> None:
        """Stop throttling, forget queued faults, remove latency."""
        with self.lock:
            self._faults.clear()
            self._throttle_rate = 0.0
        self.latency = 0.0

    def max_concurrency(self, upn: str) -> int:
        """The most requests one app had in flight at once against this mailbox."""
        with self._counter_lock:
            return self._peak.get(upn.lower(), 0)

    def reset_concurrency(self) -> None:
        """Forget the peaks measured so far."""
        with self._counter_lock:
            self._peak.clear()

    # -- subscriptions ------------------------------------------------------------------------
    @property
    def deliveries(self) -> list[Any]:
        """Every notification POST attempted (url, payload, status)."""
        return list(self.notifier.deliveries)

    def wait_notifications(self, timeout: float = 5.0) -> bool:
        """Wait until every queued notification was delivered (or given up)."""
        return self.notifier.wait_idle(timeout)

    def drop_expired_subscriptions(self) -> None:
        """Remove subscriptions past their expirationDateTime (Graph deletes them)."""
        now = time.time()
        with self.lock:
            for sid in [
                s.id for s in self.subscriptions.values() if s.expiration.timestamp() <= now
            ]:
                del self.subscriptions[sid]

    def expire_subscription(self, subscription_id: str) -> None:
        """The subscription reaches its expirationDateTime: Graph deletes it silently."""
        with self.lock:
            self.subscriptions.pop(subscription_id, None)

    def send_lifecycle(self, subscription_id: str, event: str) -> None:
        """POST a lifecycle notification (reauthorizationRequired, missed, subscriptionRemoved).

        ``subscriptionRemoved`` deletes the subscription; ``reauthorizationRequired`` pauses
        change notifications until the app reauthorizes or renews it.
        """
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(event)
        with self.lock:
            sub = self.subscriptions[subscription_id]
            if not sub.lifecycle_url:
                raise ValueError("the subscription has no lifecycleNotificationUrl")
            tenant = self.mailbox(sub.upn).tenant_id
            item = {
                "subscriptionId": sub.id,
                "subscriptionExpirationDateTime": format_timestamp(sub.expiration),
                "tenantId": tenant,
                "clientState": sub.client_state,
                "lifecycleEvent": event,
            }
            if event == "subscriptionRemoved":
                del self.subscriptions[sub.id]
            elif event == "reauthorizationRequired":
                sub.paused = True
            self.notifier.send(sub.lifecycle_url, {"value": [item]})

    def _notify(self, changes: list[tuple[Mailbox, str, StoredEvent, str]]) -> None:
        self.drop_expired_subscriptions()
        for owner, cal_id, ev, kind in changes:
            resource = f"Users/{owner.user_id}/Events/{ev.id}"
            for sub in self.subscriptions.values():
                if (
                    sub.upn != owner.upn
                    or sub.cal_id != cal_id
                    or kind not in sub.change_types
                    or sub.paused
                ):
                    continue
                item = {
                    "subscriptionId": sub.id,
                    "subscriptionExpirationDateTime": format_timestamp(sub.expiration),
                    "changeType": kind,
                    "resource": resource,
                    "resourceData": {
                        "@odata.type": "#Microsoft.Graph.Event",
                        "@odata.id": resource,
                        "@odata.etag": ev.etag,
                        "id": ev.id,
                    },
                    "clientState": sub.client_state,
                    "tenantId": owner.tenant_id,
                }
                self.notifier.send(sub.notification_url, {"value": [item]})
