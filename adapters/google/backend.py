"""Google Calendar backend: one calendar through the Calendar API v3 (google-api-python-client).

Every request goes out with ``execute(num_retries=0)``; retries are ours, with tenacity
(exponential backoff plus jitter, a few attempts), and only for calls that are safe to
repeat: reads, an insert at a deterministic event id (a repeat answers 409), patches and
deletes under ``If-Match``. ``calendars.insert`` and anything else not idempotent is not
retried.

Change feed: ``events.list`` with a ``syncToken`` (cursor ``v1:<token>``); 410 or an
unknown cursor version raises :class:`CursorExpired`. Bump :data:`CURSOR_VERSION` whenever
the shape of the listing request changes, so that old tokens are not reused with it.

Failures map onto the ports' errors: 429 and 403 ``rateLimitExceeded`` /
``userRateLimitExceeded`` → :class:`RateLimited` (retried); 403 ``quotaExceeded`` →
:class:`RateLimited` with a long ``retry_after`` (not retried); 5xx, timeouts, refused
connections → :class:`Transient` (retried); 401, other 403s and a refused refresh token
(``invalid_grant``) → :class:`AuthRevoked`, never :class:`NotFound`.

A backend object is not thread-safe (httplib2 is not): use one per worker.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.google import auth as google_auth
from adapters.google.bodies import matches, new_body, patch_body
from adapters.google.push import GooglePush
from adapters.google.transport import Transport
from adapters.google.wire import (
    CURSOR_VERSION,
    LIST_FIELDS,
    MAX_PAGES,
    SESSION_KEY,
    Build,
    Json,
    _BadRequest,
    _Conflict,
    _events_list,
    _Missing,
    _Tries,
    _utc,
    parse_event,
)
from syncd.errors import ConfigError
from syncd.ports import (
    BackendError,
    ChangeSet,
    Channel,
    CursorExpired,
    DesiredEvent,
    ListingPage,
    NotFound,
    PreconditionFailed,
    RemoteEvent,
    Transient,
)

log = logging.getLogger(__name__)
__all__ = ["CURSOR_VERSION", "SESSION_KEY", "GoogleBackend", "GoogleOptions", "parse_event"]


@dataclass(frozen=True)
class GoogleOptions:
    """What the composition root hands the backend from ``[google]`` and ``[sync]``."""

    api_endpoint: str
    token_uri: str
    state_dir: str
    timeout: float


class GoogleBackend:
    """A :class:`syncd.ports.CalendarBackend` for one Google calendar.

    ``credentials`` are google-auth credentials (see :mod:`adapters.google.auth`).
    ``time_min_days`` bounds the full listing to events ending after now minus that many
    days. ``page_size`` is ``maxResults`` of every listing. ``max_attempts`` and
    ``retry_wait`` (min, max seconds) shape the retries; ``sleep`` is for tests.
    """

    def __init__(
        self,
        calendar_id: str,
        credentials: Any,
        api_endpoint: str,
        timeout: float = 20.0,
        time_min_days: int = 1,
        *,
        page_size: int = 250,
        max_attempts: int = 5,
        retry_wait: tuple[float, float] = (0.5, 30.0),
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not calendar_id:
            raise ConfigError("A Google calendar needs a calendar_id (e.g. primary).")
        self.calendar_id = calendar_id
        self.time_min_days = time_min_days
        self.page_size = page_size
        self._http = google_auth.authorized_http(credentials, timeout)
        self._transport = Transport(
            google_auth.build_service(self._http, api_endpoint),
            calendar_id,
            max_attempts=max(1, max_attempts),
            retry_wait=retry_wait,
            sleep=sleep,
        )

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], options: GoogleOptions) -> GoogleBackend:
        """The backend of a calendar row's settings.

        Keys: ``calendar_id`` (required), ``credentials_file`` (may be empty: then
        ``<state_dir>/google/<admin_email>.json``), ``admin_email`` (the default file's
        name and a service account's subject).
        """
        calendar_id = str(settings.get("calendar_id") or "")
        admin_email = str(settings.get("admin_email") or "")
        creds = google_auth.load_credentials(
            str(settings.get("credentials_file") or ""),
            options.state_dir,
            options.token_uri,
            admin_email,
        )
        return cls(calendar_id, creds, options.api_endpoint, timeout=options.timeout)

    def call(
        self,
        what: str,
        build: Build,
        *,
        if_match: str | None = None,
        retry: bool = True,
        tries: _Tries | None = None,
    ) -> Any:
        """Execute ``build(service)`` with error mapping and retries (:class:`Transport`).

        ``retry=False`` for anything not safe to repeat. Public for the push and setup calls.
        """
        return self._transport.call(what, build, if_match=if_match, retry=retry, tries=tries)

    # -- push (syncd.ports.ChangeNotifier) ----------------------------------------------

    def open_channel(self, address: str, secret: str, ttl: timedelta) -> Channel:
        """events.watch this calendar (see :class:`adapters.google.push.GooglePush`)."""
        return GooglePush(self).open_channel(address, secret, ttl)

    def renew_channel(self, channel: Channel, address: str, secret: str, ttl: timedelta) -> Channel:
        """A new channel replaces ``channel`` (Google cannot extend one)."""
        return GooglePush(self).renew_channel(channel, address, secret, ttl)

    def stop_channel(self, channel: Channel) -> None:
        """channels.stop."""
        GooglePush(self).stop_channel(channel)

    def close(self) -> None:
        """Release connections."""
        self._http.close()

    # -- reading ------------------------------------------------------------------------

    def remote_id_for(self, uid: str, session_id: str) -> str:
        """base32hex (lower case, unpadded) of SHA-256 of the UID: 52 chars of [0-9a-v]."""
        digest = hashlib.sha256(uid.encode("utf-8")).digest()
        return base64.b32hexencode(digest).decode("ascii").rstrip("=").lower()

    def _get_raw(self, remote_id: str) -> Json:
        body: Json = self.call(
            f"events.get {remote_id}",
            lambda s: s.events().get(calendarId=self.calendar_id, eventId=remote_id),
        )
        return body

    def get(self, remote_id: str) -> RemoteEvent:
        """A fresh read; a deleted event (``status: cancelled``, 404, 410) is NotFound."""
        body = self._get_raw(remote_id)
        if body.get("status") == "cancelled":
            raise NotFound(f"Google event {remote_id} is deleted (status cancelled)")
        return self._parse(body, f"events.get {remote_id}")

    def _parse(self, body: Json, what: str) -> RemoteEvent:
        try:
            return parse_event(body)
        except (ValueError, KeyError) as err:
            raise BackendError(f"Google Calendar {what}: malformed event: {err}") from err

    def _pages(
        self, what: str, params: Json, need_sync_token: bool
    ) -> Iterator[tuple[list[Json], str | None]]:
        """Each page's items as it arrives, following ``nextPageToken``; the last one comes
        with its sync token (``None`` before it)."""
        page: str | None = None
        for _ in range(MAX_PAGES):
            query = dict(params, pageToken=page) if page else params
            resp = self.call(what, functools.partial(_events_list, params=query))
            items = list(resp.get("items") or [])
            page = resp.get("nextPageToken")
            if not page:
                token = str(resp.get("nextSyncToken") or "")
                if need_sync_token and not token:
                    raise Transient(f"Google Calendar {what}: last page without nextSyncToken")
                yield items, token
                return
            yield items, None
        raise Transient(f"Google Calendar {what}: more than {MAX_PAGES} pages")

    def _list(self, what: str, params: Json, need_sync_token: bool) -> tuple[list[Json], str]:
        """Every item of a listing, following ``nextPageToken``; the last page's sync token."""
        items: list[Json] = []
        for got, token in self._pages(what, params, need_sync_token):
            items.extend(got)
            if token is not None:
                return items, token
        raise Transient(f"Google Calendar {what}: the listing ended without its last page")

    def _params(self) -> Json:
        return {
            "calendarId": self.calendar_id,
            "singleEvents": False,
            "maxResults": self.page_size,
            "fields": LIST_FIELDS,
        }

    def feed_reports_every_change(self) -> bool:
        """Always: Google issues the sync token, and an incremental ``events.list`` carries
        every event changed since it, deleted ones included (``status: cancelled``), so a
        cycle that wrote need not read its own echoes before it ends
        (:class:`syncd.engine.runner.ReportsEveryChange`)."""
        return True

    def changes(self, cursor: str | None, known: Mapping[str, str]) -> ChangeSet:
        """Full listing (``cursor`` None) or the sync-token feed; tombstones are ``removed``."""
        if cursor is None:
            return self.full_listing(known).gathered()
        params = self._params()
        version, _, sync_token = cursor.partition(":")
        if version != CURSOR_VERSION or not sync_token:
            raise CursorExpired(f"cursor {cursor[:20]!r} is not a {CURSOR_VERSION} cursor")
        params["syncToken"] = sync_token
        try:
            items, token = self._list("events.list", params, need_sync_token=True)
        except _Missing as err:
            if err.status == 410:
                raise CursorExpired(str(err)) from err
            raise BackendError(f"Google calendar {self.calendar_id} not found: {err}") from err
        except _BadRequest as err:
            raise CursorExpired(str(err)) from err  # a token the server never issued
        latest: dict[str, RemoteEvent | None] = {}  # insertion-ordered; None = removed
        for item in items:
            rid = _listed_id(item)
            if rid is None:
                continue
            latest.pop(rid, None)
            if item.get("status") == "cancelled":
                latest[rid] = None
                continue
            if (ev := self._parse_listed(item, rid)) is not None:
                latest[rid] = ev
        return ChangeSet(
            changed=tuple(ev for ev in latest.values() if ev is not None),
            removed=tuple(rid for rid, ev in latest.items() if ev is None),
            cursor=f"{CURSOR_VERSION}:{token}",
        )

    def full_listing(self, known: Mapping[str, str]) -> ChangeSet:
        """The full listing (events ending after ``time_min_days`` ago), page by page as
        ``events.list`` answers (``page_size`` events each): see :class:`PagedListing`."""
        params = self._params()
        since = datetime.now(UTC) - timedelta(days=self.time_min_days)
        params.update(showDeleted=False, timeMin=_utc(since))
        return ChangeSet((), (), None, full=True, pages=self._listing_pages(params))

    def _listing_pages(self, params: Json) -> Iterator[ListingPage]:
        try:
            for items, token in self._pages("events.list", params, need_sync_token=True):
                events: list[RemoteEvent] = []
                for item in items:
                    rid = _listed_id(item)
                    if rid is None or item.get("status") == "cancelled":
                        continue
                    if (ev := self._parse_listed(item, rid)) is not None:
                        events.append(ev)
                del items
                last = token is not None
                cursor = f"{CURSOR_VERSION}:{token}" if last else None
                yield ListingPage(tuple(events), last=last, cursor=cursor)
        except _Missing as err:
            raise BackendError(f"Google calendar {self.calendar_id} not found: {err}") from err

    def _parse_listed(self, item: Json, rid: str) -> RemoteEvent | None:
        try:
            return parse_event(item)
        except (ValueError, KeyError) as err:
            log.warning("calendar %s: skipping malformed event %s: %s", self.calendar_id, rid, err)
            return None

    def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """Opaque, non-cancelled timed events (recurrences expanded) overlapping the window."""
        params: Json = {
            "calendarId": self.calendar_id,
            "singleEvents": True,
            "showDeleted": False,
            "timeMin": _utc(start),
            "timeMax": _utc(end),
            "maxResults": self.page_size,
            "fields": LIST_FIELDS,
        }
        items, _ = self._list("events.list (busy)", params, need_sync_token=False)
        out: list[tuple[datetime, datetime]] = []
        for item in items:
            if item.get("status") == "cancelled" or item.get("transparency") == "transparent":
                continue
            try:
                ev = parse_event(item)
            except (ValueError, KeyError):
                continue
            c = ev.content
            if not c.all_day and c.start < end and c.end > start:
                out.append((c.start, c.end))
        return sorted(out)

    # -- writing ------------------------------------------------------------------------

    def create(self, event: DesiredEvent) -> RemoteEvent:
        """events.insert at the deterministic id; a tombstone there is revived."""
        rid = self.remote_id_for(event.uid, event.session_id)
        body = new_body(rid, event)
        tries = _Tries()
        try:
            created: Json = self.call(
                f"events.insert {rid}",
                lambda s: s.events().insert(
                    calendarId=self.calendar_id, body=body, sendUpdates="none"
                ),
                tries=tries,
            )
            return self._parse(created, f"events.insert {rid}")
        except _Conflict:
            pass
        try:
            existing = self._get_raw(rid)
        except NotFound as err:  # deleted and purged between the two calls: try next cycle
            raise Transient(f"Google event {rid} vanished while being created") from err
        if existing.get("status") == "cancelled":
            log.info("calendar %s: reviving deleted event %s", self.calendar_id, rid)
            patch = patch_body(existing, event, revive=True)
            return self._patch(rid, patch, str(existing["etag"]))
        if tries.n > 1 and matches(existing, body):
            return self._parse(existing, f"events.insert {rid}")  # our retried insert landed
        raise PreconditionFailed(f"Google event {rid} already exists in {self.calendar_id}")

    def update(self, remote_id: str, event: DesiredEvent, etag: str) -> RemoteEvent:
        """Read, check ``etag``, patch only syncd's fields under ``If-Match``."""
        current = self._get_raw(remote_id)
        if current.get("status") == "cancelled":
            raise NotFound(f"Google event {remote_id} is deleted (status cancelled)")
        if current.get("etag") != etag:
            raise PreconditionFailed(f"Google event {remote_id} changed (etag {etag} is stale)")
        return self._patch(remote_id, patch_body(current, event), etag)

    def _patch(self, remote_id: str, patch: Json, etag: str) -> RemoteEvent:
        tries = _Tries()
        what = f"events.patch {remote_id}"
        try:
            body: Json = self.call(
                what,
                lambda s: s.events().patch(
                    calendarId=self.calendar_id,
                    eventId=remote_id,
                    body=patch,
                    sendUpdates="none",
                ),
                if_match=etag,
                tries=tries,
            )
        except PreconditionFailed:
            if tries.n > 1:  # a lost answer: did our own earlier attempt land?
                fresh = self._get_raw(remote_id)
                if matches(fresh, patch):
                    return self._parse(fresh, what)
            raise
        return self._parse(body, what)

    def delete(self, remote_id: str, etag: str | None) -> None:
        """events.delete under ``If-Match`` (when given); an absent event is fine."""
        try:
            self.call(
                f"events.delete {remote_id}",
                lambda s: s.events().delete(
                    calendarId=self.calendar_id, eventId=remote_id, sendUpdates="none"
                ),
                if_match=etag,
            )
        except NotFound:
            return


def _listed_id(item: Json) -> str | None:
    """A listed item's event id; None for an instance of a recurring event (never one of
    syncd's) or an item without one."""
    if item.get("recurringEventId") or not item.get("id"):
        return None
    return str(item["id"])
