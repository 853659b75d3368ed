"""The contract between the core and ``adapters/``.

The core never imports an adapter; the composition root (``syncd/app/backends.py``) picks
them by name and hands the core a :data:`BackendFactory`. Adapters translate the wire into
the frozen dataclasses below and raise only the error types defined here (or
:class:`syncd.errors.SyncdError` subclasses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol, runtime_checkable

from syncd.errors import PeerUnavailable, SyncdError

# ---------------------------------------------------------------------------------------
# Errors raised by backends and mailers.


class BackendError(SyncdError):
    """Base of every calendar-backend failure."""

    exit_code = 4


class PreconditionFailed(BackendError):
    """A conditional write lost: the event changed (If-Match) or exists (If-None-Match)."""


class NotFound(BackendError):
    """The event is gone (CalDAV 404/410; Google 404/410 or ``status: cancelled``)."""

    exit_code = 3


class CursorExpired(BackendError):
    """The change-feed cursor is no longer valid: a full listing is needed."""


class WindowMoved(CursorExpired):
    """The cursor's time window has moved on (Graph's delta of a calendar view is over a
    fixed window): a full listing over the new window is due, as planned, not a fault."""


class Transient(BackendError, PeerUnavailable):
    """A failure worth retrying later: timeout, connection refused, 5xx, partial answer."""


class RateLimited(Transient):
    """The server asked us to slow down (429, Google ``rateLimitExceeded``)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WriteRefused(BackendError):
    """syncd will not write this event (the server would email its attendees): the admin
    is told once; the write is not retried as an outage."""


class AuthRevoked(BackendError):
    """The credentials were refused (401/403 auth, Google ``invalid_grant``)."""


class MailError(PeerUnavailable):
    """Base of SMTP failures."""


class MailTransient(MailError):
    """Retry later: connection refused, timeout, 4xx, connection dropped."""


class MailPermanent(MailError):
    """Never retry: a 5xx answer to the envelope or the data."""


class MailMaybeDelivered(MailTransient):
    """The connection dropped after the message data was sent: it may have been delivered.

    Retried like any transient failure, with the same Message-ID, and counted as a
    possible duplicate.
    """


# ---------------------------------------------------------------------------------------
# What backends read and write.


@dataclass(frozen=True)
class EventContent:
    """The part of a calendar event syncd reads, normalized.

    ``start``/``end`` are timezone-aware UTC instants for timed events; for an all-day event
    ``all_day`` is true and they are midnight UTC of the dates. ``status`` is one of
    ``confirmed``, ``tentative``, ``cancelled``.
    """

    start: datetime
    end: datetime
    all_day: bool = False
    recurring: bool = False
    status: str = "confirmed"
    summary: str = ""
    description: str = ""
    uid: str = ""
    session_id: str | None = None
    #: Floating times (no zone, no ``Z``): ``start``/``end`` hold the wall time as if it
    #: were UTC; the core reads it in the admin's zone (the adapter does not know it).
    floating: bool = False
    #: Why the times cannot be read (an unknown TZID without VTIMEZONE); "" when they can.
    unreadable: str = ""
    #: The event's SEQUENCE as stored (a restore writes one above it). Not part of the
    #: content's equality: clients and servers bump it on every save.
    sequence: int = field(default=0, compare=False)


@dataclass(frozen=True)
class RemoteEvent:
    """One event as the server holds it: its id (CalDAV href or Google event id) and etag."""

    remote_id: str
    etag: str
    content: EventContent


@dataclass(frozen=True)
class ListingPage:
    """One part of a full listing, as the server answered it (a page, a parsed chunk).

    ``removed``: ids the server does not hold (any more): for a reconciliation, known ids
    it lacks; for either kind, ids an earlier page named that are gone since (a CalDAV
    answer truncated and continued). An id named again on a later page is the later one.
    The last page says so (``last``) and carries the listing's cursor.
    """

    events: tuple[RemoteEvent, ...]
    removed: tuple[str, ...] = ()
    last: bool = False
    cursor: str | None = None


@dataclass(frozen=True)
class ChangeSet:
    """What changed since a cursor.

    ``full`` is true when this is a full listing (first sync or after ``CursorExpired``):
    then ``removed`` is empty and the caller compares ``changed`` with its mirror.
    ``reconciled`` is true when the adapter did that comparison itself (asked for a full
    listing with a non-empty ``known``): ``changed`` holds only what differs from
    ``known``, ``removed`` every known id the server no longer holds. Either counts as a
    reconciliation.

    ``pages`` (from :meth:`PagedListing.full_listing` only): the listing's events arrive
    there, read once, as the caller consumes them, after those in ``changed``; ``cursor``
    is then the one of the page marked ``last``. A stream that breaks raises a
    :class:`BackendError` (:class:`Transient` when the connection dropped) from ``next``;
    one that ends without its last page is broken too (:meth:`gathered` says so).
    """

    changed: tuple[RemoteEvent, ...]
    removed: tuple[str, ...]
    cursor: str | None
    full: bool = False
    reconciled: bool = False
    pages: Iterator[ListingPage] | None = field(default=None, compare=False, repr=False)

    def gathered(self) -> ChangeSet:
        """The listing whole (``pages`` read to the end): what ``changes`` returns."""
        if self.pages is None:
            return self
        events = {e.remote_id: e for e in self.changed}
        removed = dict.fromkeys(self.removed)
        cursor = self.cursor
        for page in self.pages:
            for e in page.events:
                events[e.remote_id] = e
                removed.pop(e.remote_id, None)
            for rid in page.removed:
                events.pop(rid, None)
                removed[rid] = None
            if page.last:
                cursor = page.cursor
                break
        else:
            raise Transient("the full listing ended before its last page")
        return ChangeSet(
            tuple(events.values()),
            () if self.full else tuple(removed),
            cursor,
            self.full,
            self.reconciled,
        )


@dataclass(frozen=True)
class DesiredEvent:
    """The event syncd wants for a session.

    Backends write ``start``, ``end``, ``status``, ``transparent``, ``sequence`` and replace
    syncd's own block in the notes (see :func:`syncd.domain.eventtext.merge_notes`); on update
    they keep every other field the admin added (alarms, colors, their own notes), remove
    recurrence, turn an all-day event back into a timed one and strip a consumed command
    line (:func:`syncd.domain.eventtext.strip_command`) when ``strip_prefixes`` is non-empty.
    ``summary`` is used on create, and on update only when the admin's title is empty.
    """

    session_id: str
    uid: str
    start: datetime
    end: datetime
    summary: str
    notes_block: str
    status: str = "confirmed"
    transparent: bool = False
    sequence: int = 0
    strip_prefixes: tuple[str, ...] = field(default_factory=tuple)


class CalendarBackend(Protocol):
    """One calendar on one server. Every call has a timeout; none retries a write blindly."""

    def remote_id_for(self, uid: str, session_id: str) -> str:
        """The deterministic remote id of a session's event (CalDAV href, Google event id)."""
        ...

    def changes(self, cursor: str | None, known: Mapping[str, str]) -> ChangeSet:
        """Changes since ``cursor`` (``None``: a full listing).

        ``known`` maps the remote ids syncd mirrors to the etag it last saw, for servers
        without a change feed. Raises :class:`CursorExpired` when the cursor is invalid.
        A full listing here is whole; the core asks a :class:`PagedListing` for its pages.
        """
        ...

    def get(self, remote_id: str) -> RemoteEvent:
        """A fresh read; raises :class:`NotFound` only when the server says it is gone."""
        ...

    def create(self, event: DesiredEvent) -> RemoteEvent:
        """Create at the deterministic id; :class:`PreconditionFailed` if a live one exists.

        A deleted event at that id that the server still remembers (a Google tombstone) is
        revived.
        """
        ...

    def update(self, remote_id: str, event: DesiredEvent, etag: str) -> RemoteEvent:
        """Read-modify-write under ``If-Match: etag``; :class:`PreconditionFailed` on 412."""
        ...

    def delete(self, remote_id: str, etag: str | None) -> None:
        """Delete under ``If-Match`` (when an etag is given); a missing event is not an error."""
        ...

    def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """Busy intervals (UTC) between ``start`` and ``end``, for busy-only calendars."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@runtime_checkable
class PagedListing(Protocol):
    """A backend that hands over a full listing as it reads it, so that neither side holds
    every event of a large calendar at once (issue 11)."""

    def full_listing(self, known: Mapping[str, str]) -> ChangeSet:
        """What ``changes(None, known)`` returns, its events in ``ChangeSet.pages``.

        No request need be sent before the first page is asked for; the caller reads the
        pages once, in order, and holds only what differs from its mirror. The listing
        counts only once its last page is read: a stream that breaks before raises, and
        the caller then judges nothing (no removal, no cursor).
        """
        ...


class Mailer(Protocol):
    """Sends one fully composed message; raises :class:`MailTransient`/:class:`MailPermanent`."""

    def send(self, message: EmailMessage, recipients: Sequence[str]) -> None:
        """Deliver ``message`` to ``recipients``."""
        ...

    def close(self) -> None:
        """Close the connection, if any."""
        ...


BackendFactory = Callable[[str, Mapping[str, Any]], CalendarBackend]
"""Opens the backend of a calendar row: ``factory(row.backend, row.settings)``."""


# ---------------------------------------------------------------------------------------
# Push: a server tells syncd that a calendar changed (Google channels, Graph subscriptions).


@dataclass(frozen=True)
class Channel:
    """An open push channel: the server's ids for it and when it expires (aware UTC)."""

    channel_id: str
    resource_id: str = ""
    expiration: datetime | None = None


@dataclass(frozen=True)
class Notification:
    """One notification as the server posted it.

    ``secret`` is what the server echoes from the channel's opening (Google's channel
    token, Graph's ``clientState``); the core checks it against the hash it stored.
    ``lifecycle`` is empty for a change, else the server's word for the channel's own
    state (``reauthorizationRequired``, ``missed``, ``subscriptionRemoved``).
    """

    channel_id: str
    secret: str
    lifecycle: str = ""


@dataclass(frozen=True)
class PushReading:
    """What an incoming push request says: notifications, or a handshake to echo."""

    notifications: tuple[Notification, ...] = ()
    echo: str | None = None  # answer 200 text/plain with this (Graph's validationToken)


@runtime_checkable
class ChangeNotifier(Protocol):
    """A backend whose server can push "this calendar changed" to ``address``."""

    def open_channel(self, address: str, secret: str, ttl: timedelta) -> Channel:
        """Open a channel whose notifications go to ``address`` and carry ``secret``."""
        ...

    def renew_channel(self, channel: Channel, address: str, secret: str, ttl: timedelta) -> Channel:
        """Extend ``channel`` (or open its replacement: the caller stops an old id)."""
        ...

    def stop_channel(self, channel: Channel) -> None:
        """Stop a channel; one the server no longer knows is already stopped."""
        ...


class NotificationReader(Protocol):
    """Reads one backend kind's push requests; needs no connection (runs in the web)."""

    def read(
        self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes
    ) -> PushReading:
        """The notifications in a request (none when it is not this kind's format)."""
        ...
