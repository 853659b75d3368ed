"""CalDAV calendar backend: one calendar collection on any CalDAV server.

Requests go through :class:`adapters.caldav.transport.Transport`; the change feed is
:class:`adapters.caldav.feed.Feed`. What particular servers get wrong (SOGo ignores
preconditions and ``SCHEDULE-AGENT``, DAViCal duplicates UIDs) is in
:mod:`adapters.caldav.quirks`; this module works around it:

- before a create on a server that duplicates UIDs, and after a create refused for a UID
  conflict (Cyrus 403, SOGo 409), the object holding the UID is looked up and syncd's event
  written onto it (adopted), never a second one beside it;
- where ``If-None-Match`` / ``If-Match`` are ignored (SOGo), existence and the etag are
  checked before the create or delete (a race stays possible there: ``docs/SERVERS.md``);
- an event that carries ORGANIZER/ATTENDEE (the admin invited the customer from their
  client) is written with ``SCHEDULE-AGENT=CLIENT`` and ``Schedule-Reply: F`` so that the
  server sends no invitation, update or cancellation; a server that ignores both (SOGo)
  gets no write of such an event at all (:class:`SchedulingRefused`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import urlsplit

from adapters.caldav import dav
from adapters.caldav.feed import CTAG_PREFIX, SYNC_PREFIX, Feed
from adapters.caldav.ics import (
    IcsError,
    apply_desired,
    build_event,
    built_content,
    busy_intervals,
    parse_event,
)
from adapters.caldav.quirks import (
    Quirks,
    client_scheduled,
    has_people,
    quirks_for,
    server_scheduled,
)
from adapters.caldav.transport import ICS, Reply, Transport, same_etag, strong_etag
from syncd.ports import (
    ChangeSet,
    DesiredEvent,
    EventContent,
    NotFound,
    PreconditionFailed,
    RemoteEvent,
    Transient,
    WriteRefused,
)

log = logging.getLogger(__name__)

__all__ = ["CTAG_PREFIX", "SYNC_PREFIX", "CalDAVBackend", "SchedulingRefused"]

NO_SCHEDULING = {"Schedule-Reply": "F"}
# Answers to a create that mean "this UID already lives elsewhere in the calendar".
UID_CONFLICT_STATUSES = (403, 409)
LOCKED = 423  # a write refused while the server stores another (Xandikos)
LOCKED_RETRIES = 4
LOCKED_WAIT_S = 0.05
#: Creates built ahead and kept for :meth:`CalDAVBackend.create` (the engine builds 32).
PREPARED = 256
_told: set[str] = set()  # hrefs the admin was told about once (per process)


class SchedulingRefused(WriteRefused):
    """syncd will not write this event: the server would email its attendees."""


class CalDAVBackend:
    """A :class:`syncd.ports.CalendarBackend` for one CalDAV calendar collection.

    ``url`` is the collection URL. Remote ids are the members' absolute, normalized hrefs
    (``/user/calendar/syncd-s_1@host.ics``). ``force_ctag`` skips ``sync-collection`` and
    uses the ctag + etag-listing change feed (for servers without RFC 6578, and tests).
    ``server`` names the server's quirks (``sogo``, ``davical``); by default they are
    guessed from the URL.

    Up to :attr:`write_concurrency` writes of one calendar run at once
    (:mod:`syncd.engine.writes` keeps two writes of one event apart): a server that does
    one at a time (Radicale) still overlaps syncd's own work for the others with it.
    """

    write_concurrency = 4

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        timeout: float = 20.0,
        ua: str = "syncd",
        *,
        force_ctag: bool = False,
        server: str = "",
    ) -> None:
        if not url.endswith("/"):
            url += "/"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) calendar URL: {url!r}")
        self._collection = dav.normalize_href(parts.path)
        self.quirks: Quirks = quirks_for(parts.path, server)
        self._t = Transport(
            f"{parts.scheme}://{parts.netloc}", url, username, password, timeout, ua
        )
        self._feed = Feed(self._t, self._collection, self.quirks, force_ctag)
        # href -> etag syncd wrote and recorded since the feed was last read (its echoes).
        self._own: dict[str, str] = {}
        # (uid, session id) -> (the event, its href, body and content): built ahead.
        self._prepared: dict[tuple[str, str], tuple[DesiredEvent, str, bytes, EventContent]] = {}
        self._prepared_lock = threading.Lock()

    # ----------------------------------------------------------------------------------
    # Single events

    def remote_id_for(self, uid: str, session_id: str) -> str:
        """``<collection path><UID>.ics``, normalized like the hrefs the server reports."""
        return dav.member_href(self._collection, f"{uid}.ics")

    def _parse(self, data: bytes | str, href: str) -> EventContent:
        try:
            content = parse_event(data)
        except IcsError as err:
            raise Transient(f"{href}: the server returned unparseable iCalendar ({err})") from err
        if content is None:
            raise Transient(f"{href}: the object holds no VEVENT")
        return content

    def _fetch(self, href: str) -> tuple[Reply, str]:
        """GET one object: (reply, strong etag); NotFound on 404/410."""
        # identity: Cyrus weakens the ETag of a gzip'ed answer.
        headers = {"Accept": "text/calendar", "Accept-Encoding": "identity"}
        reply = self._t.read("GET", self._t.url(href), headers=headers)
        if reply.status in (404, 410):
            raise NotFound(f"{href} is gone (HTTP {reply.status})")
        if reply.status != 200:
            raise self._t.fail(reply, f"GET {href}")
        etag = reply.headers.get("etag") or self._etag_of(href)
        return reply, strong_etag(etag)

    def _etag_of(self, href: str) -> str:
        reply = self._t.propfind(href, dav.PROPFIND_ETAGS, "0")
        if reply.status in (404, 410):
            raise NotFound(f"{href} is gone (HTTP {reply.status})")
        items, _ = self._t.multistatus(reply, f"PROPFIND {href}")
        etag = next((i.text(dav.DAV + "getetag") for i in items if i.href == href), None)
        if not etag:
            raise Transient(f"{href}: the server reports no etag")
        return strong_etag(etag)

    def get(self, remote_id: str) -> RemoteEvent:
        """A fresh GET; :class:`NotFound` only on 404/410, anything else is not a deletion."""
        href = dav.normalize_href(remote_id)
        reply, etag = self._fetch(href)
        return RemoteEvent(href, etag, self._parse(reply.body, href))

    def _send_put(
        self, href: str, data: bytes, condition: Mapping[str, str], people: bool = True
    ) -> Reply:
        """PUT ``data``; ``people=False`` for an object syncd built (no ORGANIZER/ATTENDEE)."""
        headers = {"Content-Type": ICS, **condition}
        if people and has_people(data):
            headers.update(NO_SCHEDULING)
        return self._send_write("PUT", href, data, headers)

    def _send_write(self, method: str, href: str, data: bytes, headers: Mapping[str, str]) -> Reply:
        """A conditional write. One answered 423 Locked (Xandikos locks the collection while
        it stores another write) was not applied: it is sent again after a moment, and
        this calendar's writes go one at a time from then on."""
        for attempt in range(LOCKED_RETRIES + 1):
            reply = self._t.send(method, self._t.url(href), data, headers)
            if reply.status != LOCKED or attempt == LOCKED_RETRIES:
                return reply
            self.write_concurrency = 1
            time.sleep(LOCKED_WAIT_S * 2**attempt)
        raise AssertionError("unreachable")

    def _stored(
        self,
        href: str,
        reply: Reply,
        data: bytes,
        what: str,
        content: EventContent | None = None,
    ) -> RemoteEvent:
        """The event a PUT stored; a fresh read when the server sent no (strong) etag.

        ``content`` is what ``data`` holds when the caller knows it (syncd built it).
        """
        if reply.status == 412:
            raise PreconditionFailed(f"{what} {href}: precondition failed (HTTP 412)")
        if not reply.ok:
            raise self._t.fail(reply, f"{what} {href}")
        etag = reply.headers.get("etag")
        if etag and not etag.startswith("W/"):
            return RemoteEvent(href, strong_etag(etag), content or self._parse(data, href))
        # No (strong) etag: the server rewrote the object; read what it holds.
        return self.get(href)

    def _put(self, href: str, data: bytes, condition: Mapping[str, str], what: str) -> RemoteEvent:
        """PUT once (never retried); the event as stored."""
        return self._stored(href, self._send_put(href, data, condition), data, what)

    def _exists(self, href: str) -> bool:
        try:
            self._etag_of(href)
        except NotFound:
            return False
        return True

    def _holders(self, uid: str, exclude: str = "") -> list[str]:
        """The hrefs of the objects in this calendar whose UID is ``uid``."""
        what = f"calendar-query UID {self._collection}"
        reply = self._t.report(self._collection, dav.uid_query_body(uid), "1")
        if reply.status in (400, 403, 501):  # no text-match support: nothing can be found
            log.info("%s: the server cannot look up a UID (HTTP %s)", what, reply.status)
            return []
        items, _ = self._t.multistatus(reply, what)
        return [i.href for i in items if i.status in (None, 200) and i.href != exclude]

    def prepare_create(self, event: DesiredEvent) -> None:
        """Build ahead what :meth:`create` will PUT for this event object (the engine calls
        it while other writes are in flight; at most :data:`PREPARED` are kept)."""
        ready = (event, *self._built(event))
        with self._prepared_lock:
            if len(self._prepared) >= PREPARED:  # writes left for the next cycle
                self._prepared.pop(next(iter(self._prepared)))
            self._prepared[(event.uid, event.session_id)] = ready

    def _built(self, event: DesiredEvent) -> tuple[str, bytes, EventContent]:
        """A create's href, the object it PUTs and what that object holds."""
        href = self.remote_id_for(event.uid, event.session_id)
        return href, build_event(event, datetime.now(UTC)), built_content(event)

    def create(self, event: DesiredEvent) -> RemoteEvent:
        """PUT with ``If-None-Match: *``; :class:`PreconditionFailed` when it exists.

        An object with the same UID at another href is adopted: syncd's event is written
        onto it (under ``If-Match``) instead of a duplicate beside it.
        """
        with self._prepared_lock:
            ready = self._prepared.pop((event.uid, event.session_id), None)
        if ready is not None and ready[0] is event:
            href, data, content = ready[1:]
        else:  # not built ahead, or for another object of this session
            href, data, content = self._built(event)
        if not self.quirks.unique_uids and (held := self._holders(event.uid, href)):
            return self._adopt(held[0], event)
        if not self.quirks.honours_preconditions and self._exists(href):
            raise PreconditionFailed(f"create {href}: the event exists")
        reply = self._send_put(href, data, {"If-None-Match": "*"}, people=False)
        if reply.status in UID_CONFLICT_STATUSES:
            named = [h for h in dav.error_hrefs(reply.body) if h != href]
            held = [h for h in named if self._inside(h)] or self._holders(event.uid, href)
            if held:
                return self._adopt(held[0], event)
            if named:
                raise Transient(
                    f"create {href}: UID {event.uid} already lives in another calendar "
                    f"({named[0]}); the server refuses a second one"
                )
        return self._stored(href, reply, data, "create", content)

    def _inside(self, href: str) -> bool:
        return href.startswith(self._collection.rstrip("/") + "/")

    def _adopt(self, holder: str, event: DesiredEvent) -> RemoteEvent:
        log.warning("UID %s already lives at %s; writing syncd's event there", event.uid, holder)
        current = self.get(holder)
        return self.update(holder, event, current.etag)

    def update(self, remote_id: str, event: DesiredEvent, etag: str) -> RemoteEvent:
        """Read-modify-write of syncd's fields under ``If-Match: etag``."""
        href = dav.normalize_href(remote_id)
        reply, current = self._fetch(href)
        if not same_etag(current, etag):
            raise PreconditionFailed(f"update {href}: etag {current} is not {etag}")
        self._refuse_scheduling(href, reply.body)
        now = datetime.now(UTC)
        try:
            data = apply_desired(reply.body, event, now)
        except IcsError as err:
            # Nothing of the admin's can be kept from an object no parser understands.
            log.warning("%s: rewriting an unparseable event from scratch (%s)", href, err)
            data = build_event(event, now)
        data, _ = client_scheduled(data)
        return self._put(href, data, {"If-Match": current}, "update")

    def _refuse_scheduling(self, href: str, data: bytes) -> None:
        """An event the server would email attendees about, whatever syncd marks, is not
        written: any with attendees on SOGo; one the server schedules itself on Cyrus."""
        if not self.quirks.honours_schedule_agent and has_people(data):
            why = "it ignores SCHEDULE-AGENT=CLIENT"
        elif not self.quirks.quiet_client_switch and server_scheduled(data):
            why = "it sends a cancellation when an attendee turns SCHEDULE-AGENT=CLIENT"
        else:
            return
        message = (
            f"The event has attendees, and this server ({self.quirks.name}) would email them "
            f"about any change syncd writes: {why}."
        )
        if href not in _told:
            _told.add(href)
            log.warning("%s: %s syncd leaves it alone.", href, message)
        raise SchedulingRefused(message)

    def delete(self, remote_id: str, etag: str | None) -> None:
        """DELETE under ``If-Match`` (when given); 404/410 count as done.

        The object is read first: an event with attendees is first marked
        ``SCHEDULE-AGENT=CLIENT`` (so the server sends no cancellation), and where the
        server ignores ``If-Match`` (SOGo) the etag is compared here.
        """
        href = dav.normalize_href(remote_id)
        try:
            reply, current = self._fetch(href)
        except NotFound:
            return
        if etag and not same_etag(current, etag):
            raise PreconditionFailed(f"delete {href}: etag {current} is not {etag}")
        headers = {"If-Match": current}
        self._refuse_scheduling(href, reply.body)
        if has_people(reply.body):
            marked, changed = client_scheduled(reply.body)
            if changed:
                headers["If-Match"] = self._put(href, marked, headers, "delete").etag
            headers.update(NO_SCHEDULING)
        reply = self._send_write("DELETE", href, b"", headers)
        if reply.ok or reply.status in (404, 410):
            return
        if reply.status == 412:
            raise PreconditionFailed(f"delete {href}: the event changed (HTTP 412)")
        raise self._t.fail(reply, f"DELETE {href}")

    # ----------------------------------------------------------------------------------
    # Change feed

    def changes(self, cursor: str | None, known: Mapping[str, str]) -> ChangeSet:
        """Changes since ``cursor``; ``None`` gives a full listing (see ``feed.Feed``).

        A delta that follows syncd's own recorded writes leaves out the events that still
        carry the etag recorded for them (:meth:`recorded`): neither fetched nor parsed.
        """
        own, self._own = self._own, {}
        return self._feed.changes(cursor, known, own)

    def full_listing(self, known: Mapping[str, str]) -> ChangeSet:
        """A full listing page by page (see ``feed.Feed.full_listing``)."""
        self._own = {}
        return self._feed.full_listing(known)

    def feed_reports_every_change(self) -> bool:
        """Whether a delta from the cursor last read reports whatever changes after
        syncd's writes (see ``feed.Feed.keeps_history``): then the cycle need not read its
        echoes (:class:`syncd.engine.runner.ReportsEveryChange`)."""
        return self._feed.keeps_history()

    def recorded(self, etags: Mapping[str, str | None]) -> None:
        """What syncd recorded for its writes (``href -> etag``, ``None`` when deleted)."""
        for href, etag in etags.items():
            key = dav.normalize_href(href)
            if etag is None:
                self._own.pop(key, None)
            else:
                self._own[key] = strong_etag(etag)

    def listing(self) -> dict[str, str]:
        """Every member's href and etag (one Depth:1 PROPFIND): the cheap reconciliation."""
        return self._feed.listing()

    # ----------------------------------------------------------------------------------
    # Availability

    def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """Opaque, non-cancelled intervals overlapping [start, end), recurrences expanded."""
        what = f"calendar-query {self._collection}"
        reply = self._t.report(self._collection, dav.busy_query_body(start, end, True), "1")
        if reply.status in (400, 501):  # the server cannot expand: take the masters
            reply = self._t.report(self._collection, dav.busy_query_body(start, end, False), "1")
        items, _ = self._t.multistatus(reply, what)
        out: set[tuple[datetime, datetime]] = set()
        for item in items:
            data = item.text(dav.CALDAV + "calendar-data")
            if not data:
                continue
            try:
                out.update(busy_intervals(data, start, end))
            except IcsError as err:
                log.warning("%s: skipping an unparseable calendar object (%s)", item.href, err)
        return sorted(out)

    def close(self) -> None:
        """Release the HTTP session."""
        self._t.close()
