"""An in-memory CalendarBackend with a change feed, for the planner's state machine.

Not a stand-in for a real server in the integration tests (those run Radicale, Xandikos
and the Google fake): it exists so Hypothesis can explore thousands of interleavings of
admin edits, server noise and failures quickly. It keeps CalDAV's semantics: conditional
writes, new etags on every write, a sync token that returns every change since.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from syncd.domain.eventtext import merge_notes, strip_command
from syncd.ports import (
    ChangeSet,
    CursorExpired,
    DesiredEvent,
    EventContent,
    NotFound,
    PreconditionFailed,
    RemoteEvent,
    Transient,
)


@dataclass
class Faults:
    """Switches the state machine flips."""

    fail_reads: bool = False
    fail_writes: bool = False
    fail_gets: bool = False
    #: Remote ids the next incremental feed leaves out while still advancing its token
    #: (a server's delta that hides a change).
    hide_in_feed: set[str] = field(default_factory=set)
    #: Called once after the next feed was computed, before it is returned (a race).
    after_feed: Callable[[], None] | None = None


class MemoryCalendar:
    """One calendar; ``log`` is the change feed as (version, remote id)."""

    def __init__(self) -> None:
        self.events: dict[str, RemoteEvent] = {}
        self.log: list[tuple[int, str]] = []
        self.version = 0
        self.min_token = 0
        self._etags = itertools.count(1)
        self.faults = Faults()
        #: Whether the backend says its feed reports every change since a cursor (its log
        #: does): then a cycle that wrote does not read its echoes before it ends.
        self.every_change = False

    def _etag(self) -> str:
        return f'"e{next(self._etags)}"'

    def _touch(self, remote_id: str) -> None:
        self.version += 1
        self.log.append((self.version, remote_id))

    # --- what a person (or another client) does ---------------------------------------
    def human_set(self, remote_id: str, **change: object) -> None:
        ev = self.events[remote_id]
        content = replace(ev.content, **change)  # type: ignore[arg-type]
        self.events[remote_id] = RemoteEvent(remote_id, self._etag(), content)
        self._touch(remote_id)

    def human_delete(self, remote_id: str) -> None:
        del self.events[remote_id]
        self._touch(remote_id)

    def human_put(self, event: RemoteEvent) -> None:
        self.events[event.remote_id] = RemoteEvent(event.remote_id, self._etag(), event.content)
        self._touch(event.remote_id)

    def noise(self, remote_id: str) -> None:
        """The server re-serializes: a new etag, the same content."""
        self.human_set(remote_id)

    def human_copy(self, remote_id: str, new_id: str, uid: str, **change: object) -> None:
        """A client's copy: a new id and UID, the same notes and X- properties."""
        ev = self.events[remote_id]
        content = replace(ev.content, uid=uid, **change)  # type: ignore[arg-type]
        self.events[new_id] = RemoteEvent(new_id, self._etag(), content)
        self._touch(new_id)


class MemoryBackend:
    """A CalendarBackend over a :class:`MemoryCalendar`."""

    def __init__(self, cal: MemoryCalendar) -> None:
        self.cal = cal

    def remote_id_for(self, uid: str, session_id: str) -> str:
        return f"/cal/{uid}.ics"

    def feed_reports_every_change(self) -> bool:
        return self.cal.every_change

    def changes(self, cursor: str | None, known: Mapping[str, str]) -> ChangeSet:
        if self.cal.faults.fail_reads:
            raise Transient("server unreachable")
        if cursor is None:
            return ChangeSet(tuple(self.cal.events.values()), (), str(self.cal.version), True)
        since = int(cursor)
        if since < self.cal.min_token:
            raise CursorExpired("token too old")
        # The log is in version order: read only its tail (a server's delta is O(changes)).
        tail = self.cal.log[bisect.bisect_right(self.cal.log, since, key=lambda e: e[0]) :]
        ids = sorted({rid for _, rid in tail} - self.cal.faults.hide_in_feed)
        self.cal.faults.hide_in_feed = set()
        changed = tuple(self.cal.events[i] for i in ids if i in self.cal.events)
        removed = tuple(i for i in ids if i not in self.cal.events)
        result = ChangeSet(changed, removed, str(self.cal.version))
        hook, self.cal.faults.after_feed = self.cal.faults.after_feed, None
        if hook is not None:
            hook()
        return result

    def get(self, remote_id: str) -> RemoteEvent:
        if self.cal.faults.fail_gets:
            raise Transient("timeout")
        try:
            return self.cal.events[remote_id]
        except KeyError:
            raise NotFound(remote_id) from None

    def _content(self, e: DesiredEvent, base: EventContent | None) -> EventContent:
        summary = base.summary if base and base.summary else e.summary
        description = merge_notes(base.description if base else "", e.notes_block)
        if e.strip_prefixes:
            summary, description = strip_command(summary, description, e.strip_prefixes, e.summary)
        return EventContent(
            start=e.start,
            end=e.end,
            status=e.status,
            summary=summary,
            description=description,
            uid=e.uid,
            session_id=e.session_id,
            # Like the CalDAV adapter: every update is a new revision, above any SEQUENCE seen.
            sequence=max(e.sequence, base.sequence + 1) if base else e.sequence,
        )

    def create(self, event: DesiredEvent) -> RemoteEvent:
        if self.cal.faults.fail_writes:
            raise Transient("write failed")
        rid = self.remote_id_for(event.uid, event.session_id)
        if rid in self.cal.events:
            raise PreconditionFailed(rid)
        ev = RemoteEvent(rid, self.cal._etag(), self._content(event, None))
        self.cal.events[rid] = ev
        self.cal._touch(rid)
        return ev

    def update(self, remote_id: str, event: DesiredEvent, etag: str) -> RemoteEvent:
        if self.cal.faults.fail_writes:
            raise Transient("write failed")
        cur = self.cal.events.get(remote_id)
        if cur is None or cur.etag != etag:
            raise PreconditionFailed(remote_id)
        ev = RemoteEvent(remote_id, self.cal._etag(), self._content(event, cur.content))
        self.cal.events[remote_id] = ev
        self.cal._touch(remote_id)
        return ev

    def delete(self, remote_id: str, etag: str | None) -> None:
        if self.cal.faults.fail_writes:
            raise Transient("write failed")
        cur = self.cal.events.get(remote_id)
        if cur is None:
            return
        if etag is not None and cur.etag != etag:
            raise PreconditionFailed(remote_id)
        del self.cal.events[remote_id]
        self.cal._touch(remote_id)

    def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        return [
            (e.content.start, e.content.end)
            for e in self.cal.events.values()
            if e.content.start < end and start < e.content.end
        ]

    def close(self) -> None:
        pass
