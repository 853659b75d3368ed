"""Microsoft Graph backend: one calendar of one mailbox (Microsoft 365 or Outlook.com).

Identity: a session's event carries the session id in a single-value extended property and
is created with ``transactionId`` = the session id, so a retried POST never makes a second
event. syncd's remote id of the event is the session id itself; the Graph id behind it
(``Prefer: IdType="ImmutableId"``) is found through the property whenever the event is read
or written, so an event restored from Deleted Items under a new id is still the session's.

Writes: PATCH/DELETE under ``If-Match`` on the event's ``@odata.etag`` (412 →
:class:`PreconditionFailed`); a create first checks that no live event of the session
exists. Reads ask for UTC (``Prefer: outlook.timezone="UTC"``) and still read Windows zone
names. Retries are the transport's (429/503/504 with ``Retry-After``, timeouts), only for
calls safe to repeat. The change feed is :mod:`adapters.microsoft.feed`; push is
:mod:`adapters.microsoft.push`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from adapters.microsoft import feed
from adapters.microsoft.auth import TokenSource
from adapters.microsoft.bodies import landed, new_body, patch_body
from adapters.microsoft.push import GraphPush
from adapters.microsoft.transport import Transport, Tries
from adapters.microsoft.wire import (
    EXPAND,
    SESSION_PROPERTY,
    TRANSACTION_SEPARATOR,
    Json,
    _BadRequest,
    _Missing,
    parse_event,
    parse_when,
)
from syncd.errors import ConfigError
from syncd.ports import (
    BackendError,
    ChangeSet,
    Channel,
    NotFound,
    PreconditionFailed,
    RemoteEvent,
    Transient,
)

log = logging.getLogger("adapters.microsoft")
__all__ = ["GraphBackend"]
BUSY_SHOW_AS = frozenset({"busy", "tentative", "oof"})


def _escape(value: str) -> str:
    return value.replace("'", "''")


@dataclass(frozen=True)
class Window:
    """The delta window: ``past_days`` back, ``days`` long, renewed once ``age`` old."""

    past_days: int = 1
    days: int = 400
    age: timedelta = timedelta(days=1)


class GraphBackend:
    """A :class:`syncd.ports.CalendarBackend` (and ChangeNotifier) for one Graph calendar.

    ``calendar_id`` empty means the mailbox's default calendar. ``tokens`` come from
    :mod:`adapters.microsoft.auth`. Thread-safe enough to share (httpx is), but one per
    worker is the rule in syncd.
    """

    def __init__(
        self,
        mailbox: str,
        calendar_id: str,
        tokens: TokenSource,
        graph_endpoint: str,
        timeout: float = 20.0,
        *,
        window: Window = Window(),
        page_size: int = 100,
        max_attempts: int = 5,
        retry_wait: tuple[float, float] = (0.5, 30.0),
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not mailbox:
            raise ConfigError("A Microsoft calendar needs a mailbox (the user's UPN).")
        self.mailbox, self.calendar_id = mailbox, calendar_id
        user = f"users/{quote(mailbox, safe='@.')}"
        self.cal_path = (
            f"{user}/calendars/{quote(calendar_id, safe='')}" if calendar_id else f"{user}/calendar"
        )
        self.user_path = user
        # A subscription names its resource unencoded, the way Graph's docs write it.
        self.resource = (
            f"users/{mailbox}/calendars/{calendar_id}/events"
            if calendar_id
            else f"users/{mailbox}/calendar/events"
        )
        self.page_size = page_size
        self.past_days, self.window_days, self.window_age = (
            window.past_days,
            window.days,
            window.age,
        )
        self._clock = clock
        self.transport = Transport(
            graph_endpoint,
            mailbox,
            tokens,
            timeout=timeout,
            max_attempts=max_attempts,
            retry_wait=retry_wait,
            sleep=sleep,
        )

    def close(self) -> None:
        """Release connections."""
        self.transport.close()

    # -- push (syncd.ports.ChangeNotifier) ----------------------------------------------

    def open_channel(self, address: str, secret: str, ttl: timedelta) -> Channel:
        """A subscription to this calendar's events (see :class:`GraphPush`)."""
        return GraphPush(self).open_channel(address, secret, ttl)

    def renew_channel(self, channel: Channel, address: str, secret: str, ttl: timedelta) -> Channel:
        """Extend the subscription (or open a new one when Graph no longer knows it)."""
        return GraphPush(self).renew_channel(channel, address, secret, ttl)

    def stop_channel(self, channel: Channel) -> None:
        """Delete the subscription."""
        GraphPush(self).stop_channel(channel)

    # -- reading ------------------------------------------------------------------------

    def remote_id_for(self, uid: str, session_id: str) -> str:
        """The session id: the event's identity is its extended property, not its Graph id."""
        return session_id

    def raw_event(self, graph_id: str) -> Json:
        """GET one event of this calendar by Graph id, with syncd's properties."""
        return self.transport.json(
            f"events.get {graph_id[:16]}…",
            "GET",
            f"{self.cal_path}/events/{quote(graph_id, safe='')}",
            params={"$expand": EXPAND},
        )

    def find(self, session_id: str) -> Json | None:
        """The live event of a session in this calendar (the oldest, if copies exist)."""
        flt = (
            f"singleValueExtendedProperties/any(ep: ep/id eq '{SESSION_PROPERTY}' "
            f"and ep/value eq '{_escape(session_id)}')"
        )
        doc = self.transport.json(
            f"events of {session_id}",
            "GET",
            f"{self.cal_path}/events",
            params={"$filter": flt, "$expand": EXPAND, "$top": "10"},
        )
        rows = [r for r in doc.get("value") or [] if isinstance(r, dict) and r.get("id")]
        rows.sort(key=lambda r: str(r.get("createdDateTime") or ""))
        return rows[0] if rows else None

    def _parse(self, body: Json, session_id: str | None, what: str) -> RemoteEvent:
        try:
            return parse_event(body, session_id)
        except (ValueError, KeyError) as err:
            raise BackendError(f"Microsoft Graph {what}: malformed event: {err}") from err

    def get(self, remote_id: str) -> RemoteEvent:
        """A fresh read; NotFound only when no live event of the session is in the calendar."""
        body = self.find(remote_id)
        if body is None:
            raise NotFound(f"Microsoft event of {remote_id} is not in calendar {self.calendar_id}")
        return self._parse(body, remote_id, f"events of {remote_id}")

    def feed_reports_every_change(self) -> bool:
        """Always: Graph issues the delta link, and a delta carries every event changed
        since it, deleted ones included (``@removed``), so a cycle that wrote need not
        read its own echoes before it ends (:class:`syncd.engine.runner.ReportsEveryChange`)."""
        return True

    def changes(self, cursor: str | None, known: Mapping[str, str]) -> ChangeSet:
        """calendarView/delta since ``cursor`` (see :mod:`adapters.microsoft.feed`)."""
        if cursor is None:
            return self.full_listing(known).gathered()
        rnd = feed.read_round(self, cursor, self._clock())
        return feed.fold(self, rnd, known)

    def full_listing(self, known: Mapping[str, str]) -> ChangeSet:
        """A new delta round, page by page (see :func:`adapters.microsoft.feed.full_listing`)."""
        return feed.full_listing(self, known, self._clock())

    def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """Busy, tentative or away timed events (series expanded) overlapping the window."""
        out: list[tuple[datetime, datetime]] = []
        for row in feed.busy_rows(self, start, end):
            if row.get("isCancelled") or row.get("isAllDay"):
                continue
            if str(row.get("showAs") or "busy") not in BUSY_SHOW_AS:
                continue
            try:
                s, e = parse_when(row.get("start")), parse_when(row.get("end"))
            except ValueError:
                continue
            if s < end and e > start:
                out.append((s, e))
        return sorted(out)

    # -- writing ------------------------------------------------------------------------

    def _post(self, body: Json, tries: Tries) -> Json:
        return self.transport.json(
            f"events.create {body.get('transactionId')}",
            "POST",
            f"{self.cal_path}/events",
            params={"$expand": EXPAND},
            body=body,
            tries=tries,
        )

    def create(self, event: Any) -> RemoteEvent:
        """POST with ``transactionId``; PreconditionFailed when the session's event is live.

        An identical retry of a POST whose answer was lost returns the same event. Whether
        Graph frees a transactionId once its event is deleted is not documented: a refused
        or stale one (its event is in Deleted Items) gets a fresh ``<session id>~<suffix>``.
        """
        sid = event.session_id
        if self.find(sid) is not None:
            raise PreconditionFailed(f"Microsoft event of {sid} already exists")
        transaction = sid
        for _ in range(3):
            body = new_body(event, transaction)
            try:
                made = self._post(body, Tries())
            except _BadRequest as err:
                if err.code != "ErrorDuplicateTransactionId":
                    raise
                log.info(
                    "calendar %s: transactionId %s is taken; a fresh one",
                    self.calendar_id,
                    transaction,
                )
            else:
                try:  # the answer may be an event of that transactionId that was deleted since
                    return self._parse(self.raw_event(str(made["id"])), sid, f"events.create {sid}")
                except (NotFound, KeyError):
                    log.info(
                        "calendar %s: transactionId %s names a deleted event",
                        self.calendar_id,
                        transaction,
                    )
            transaction = f"{sid}{TRANSACTION_SEPARATOR}{secrets.token_hex(4)}"
        raise Transient(f"Microsoft Graph events.create {sid}: no usable transactionId")

    def update(self, remote_id: str, event: Any, etag: str) -> RemoteEvent:
        """Read, check ``etag``, PATCH only syncd's fields under ``If-Match``."""
        current = self.find(remote_id)
        if current is None:
            raise NotFound(f"Microsoft event of {remote_id} is gone")
        if str(current.get("@odata.etag") or "") != etag:
            raise PreconditionFailed(
                f"Microsoft event of {remote_id} changed (etag {etag} is stale)"
            )
        patch = patch_body(current, event)
        gid = str(current["id"])
        what = f"events.update {remote_id}"
        tries = Tries()
        try:
            body = self.transport.json(
                what,
                "PATCH",
                f"{self.cal_path}/events/{quote(gid, safe='')}",
                params={"$expand": EXPAND},
                body=patch,
                if_match=etag,
                tries=tries,
            )
        except PreconditionFailed:
            if tries.n > 1:  # a lost answer: did our own earlier attempt land?
                fresh = self.raw_event(gid)
                if landed(fresh, patch):
                    return self._parse(fresh, remote_id, what)
            raise
        except _Missing as err:
            raise NotFound(str(err)) from err
        return self._parse(body, remote_id, what)

    def delete(self, remote_id: str, etag: str | None) -> None:
        """DELETE under ``If-Match`` (when given); an absent event is fine."""
        current = self.find(remote_id)
        if current is None:
            return
        gid = str(current["id"])
        try:
            self.transport.request(
                f"events.delete {remote_id}",
                "DELETE",
                f"{self.cal_path}/events/{quote(gid, safe='')}",
                if_match=etag,
            )
        except NotFound:
            return
