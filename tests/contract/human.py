"""The admin, editing events in their own calendar app, as another client would.

:class:`HumanEditor` is what the contract suite needs from "a person with a calendar
app"; every backend's test kit provides one (CalDAV: :class:`CalDAVHuman`; the Google
fake: edits through its own API). The CalDAV one re-serializes like a different library
would: TZID local times with a VTIMEZONE, reversed property order, a new PRODID, DTSTAMP,
LAST-MODIFIED and SEQUENCE, and writes with ``If-Match`` like a careful client.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from icalendar import Alarm, Calendar, Event

from tests.servers import Server

HUMAN_PRODID = "-//Example Corp//Human Calendar 9.1//EN"
HOME_ZONE = "Europe/Berlin"


class HumanEditor(Protocol):
    """Edits of one event as the admin makes them in a calendar app."""

    def move(self, remote_id: str, start: datetime, end: datetime, tz: str) -> None:
        """Drag the event to [start, end), written as local times of zone ``tz``."""
        ...

    def delete(self, remote_id: str) -> None:
        """Delete the event."""
        ...

    def edit_title(self, remote_id: str, title: str) -> None:
        """Replace the title."""
        ...

    def add_note_line(self, remote_id: str, line: str) -> None:
        """Put ``line`` as the first line of the notes, above what is there."""
        ...

    def make_all_day(self, remote_id: str) -> None:
        """Turn the event into an all-day event on its start date."""
        ...

    def make_recurring(self, remote_id: str) -> None:
        """Make the event repeat weekly."""
        ...

    def add_alarm(self, remote_id: str, minutes_before: int = 15) -> None:
        """Add a reminder (and, where the server has them, a color and a private property)."""
        ...

    def has_alarm(self, remote_id: str) -> bool:
        """Whether the event still has a reminder."""
        ...

    def reserialize(self, remote_id: str) -> None:
        """Save the event unchanged, the way another client lays it out."""
        ...

    def snapshot(self, remote_id: str) -> str:
        """The raw stored event (for :meth:`restore`)."""
        ...

    def restore(self, remote_id: str, raw: str) -> None:
        """Write back a raw event taken with :meth:`snapshot` (an undo)."""
        ...


class HumanEditError(AssertionError):
    """The server refused a human edit (the test setup is wrong, not the backend)."""


class CalDAVHuman:
    """:class:`HumanEditor` for a CalDAV server, with raw HTTP and its own serialization."""

    def __init__(
        self, server: Server, home_zone: str = HOME_ZONE, attendee: bool | None = None
    ) -> None:
        self.server = server
        self.home_zone = home_zone
        # SOGo emails any ATTENDEE and syncd refuses to write such events there
        # (tests/integration/test_caldav_scheduling.py): no ATTENDEE on SOGo.
        self.attendee = server.kind != "sogo" if attendee is None else attendee

    # -- raw access ------------------------------------------------------------------------

    def _url(self, remote_id: str) -> str:
        return self.server.root_url + remote_id

    def _get(self, remote_id: str) -> tuple[bytes, str]:
        status, headers, body = self.server.request("GET", self._url(remote_id))
        if status != 200:
            raise HumanEditError(f"GET {remote_id} -> {status}")
        etag = {k.lower(): v for k, v in headers.items()}.get("etag", "")
        return body, etag

    def _put(self, remote_id: str, data: bytes, etag: str | None) -> None:
        headers = {"Content-Type": "text/calendar; charset=utf-8"}
        if etag:
            headers["If-Match"] = etag
        status, _, body = self.server.request("PUT", self._url(remote_id), data, headers)
        if status not in (200, 201, 204):
            raise HumanEditError(f"PUT {remote_id} -> {status}: {body[:300]!r}")

    def _edit(self, remote_id: str, change: Callable[[Any], None]) -> None:
        """GET, change the master VEVENT, re-serialize in the human layout, PUT (If-Match)."""
        raw, etag = self._get(remote_id)
        cal = Calendar.from_ical(raw)
        master = next(ev for ev in cal.walk("VEVENT") if "RECURRENCE-ID" not in ev)
        change(master)
        self._put(remote_id, relayout(cal), etag)

    # -- HumanEditor -----------------------------------------------------------------------

    def move(self, remote_id: str, start: datetime, end: datetime, tz: str) -> None:
        """Drag to [start, end), stored as TZID local times of ``tz``."""

        def change(ev: Any) -> None:
            for name in ("DTSTART", "DTEND", "DURATION"):
                ev.pop(name, None)
            ev.add("DTSTART", start.astimezone(ZoneInfo(tz)))
            ev.add("DTEND", end.astimezone(ZoneInfo(tz)))

        self._edit(remote_id, change)

    def delete(self, remote_id: str) -> None:
        """DELETE without a condition, like most apps."""
        status, _, _ = self.server.request("DELETE", self._url(remote_id))
        if status not in (200, 204, 404):
            raise HumanEditError(f"DELETE {remote_id} -> {status}")

    def edit_title(self, remote_id: str, title: str) -> None:
        """Replace SUMMARY."""

        def change(ev: Any) -> None:
            ev.pop("SUMMARY", None)
            ev.add("SUMMARY", title)

        self._edit(remote_id, change)

    def add_note_line(self, remote_id: str, line: str) -> None:
        """Prepend a line to DESCRIPTION."""

        def change(ev: Any) -> None:
            old = str(ev.pop("DESCRIPTION", "") or "")
            ev.add("DESCRIPTION", f"{line}\n{old}" if old else line)

        self._edit(remote_id, change)

    def make_all_day(self, remote_id: str) -> None:
        """DTSTART;VALUE=DATE of the start date, DTEND the next day."""

        def change(ev: Any) -> None:
            day = ev.decoded("DTSTART").astimezone(UTC).date()
            for name in ("DTSTART", "DTEND", "DURATION"):
                ev.pop(name, None)
            ev.add("DTSTART", day)
            ev.add("DTEND", day + timedelta(days=1))

        self._edit(remote_id, change)

    def make_recurring(self, remote_id: str) -> None:
        """RRULE weekly, four times, with one EXDATE."""

        def change(ev: Any) -> None:
            ev.add("RRULE", {"FREQ": "WEEKLY", "COUNT": 4})
            start = ev.decoded("DTSTART")
            ev.add("EXDATE", start + timedelta(weeks=2))

        self._edit(remote_id, change)

    def add_alarm(self, remote_id: str, minutes_before: int = 15) -> None:
        """A VALARM, plus COLOR, CATEGORIES, an ATTENDEE and an X- property."""

        def change(ev: Any) -> None:
            alarm = Alarm()
            alarm.add("ACTION", "DISPLAY")
            alarm.add("DESCRIPTION", "Reminder")
            alarm.add("TRIGGER", timedelta(minutes=-minutes_before))
            ev.add_component(alarm)
            ev.add("COLOR", "tomato")
            ev.add("CATEGORIES", ["Coaching"])
            if self.attendee:
                ev.add("ATTENDEE", "mailto:assistant@example.org")
            ev.add("X-HUMAN-APP-FLAG", "kept")

        self._edit(remote_id, change)

    def has_alarm(self, remote_id: str) -> bool:
        """True when the stored event has a VALARM."""
        raw, _ = self._get(remote_id)
        return bool(Calendar.from_ical(raw).walk("VALARM"))

    def reserialize(self, remote_id: str) -> None:
        """Same event, another layout (TZID local times, reordered, new DTSTAMP...)."""

        def change(ev: Any) -> None:
            zone = ZoneInfo(self.home_zone)
            for name in ("DTSTART", "DTEND"):
                if name in ev:
                    value = ev.decoded(name)
                    if isinstance(value, datetime):
                        ev.pop(name)
                        ev.add(name, value.astimezone(zone))

        self._edit(remote_id, change)

    def snapshot(self, remote_id: str) -> str:
        """The raw stored object."""
        raw, _ = self._get(remote_id)
        return raw.decode()

    def restore(self, remote_id: str, raw: str) -> None:
        """PUT ``raw`` back unconditionally (recreates a deleted event too)."""
        self._put(remote_id, raw.encode(), None)


def relayout(cal: Calendar) -> bytes:
    """Serialize ``cal`` like another client: new PRODID, properties in reverse order,
    fresh DTSTAMP/LAST-MODIFIED, SEQUENCE + 1, VTIMEZONE for every TZID used."""
    out = Calendar()
    out.add("PRODID", HUMAN_PRODID)
    out.add("VERSION", "2.0")
    now = datetime.now(UTC).replace(microsecond=0)
    for comp in cal.subcomponents:
        if comp.name == "VEVENT":
            event = Event()
            for key in reversed(list(comp.keys())):
                event[key] = comp[key]
            for sub in comp.subcomponents:
                event.add_component(sub)
            sequence = int(comp.get("SEQUENCE", 0))
            for name in ("DTSTAMP", "LAST-MODIFIED", "SEQUENCE"):
                event.pop(name, None)
            event.add("LAST-MODIFIED", now)
            event.add("DTSTAMP", now)
            event.add("SEQUENCE", sequence + 1)
            out.add_component(event)
        else:
            out.add_component(comp)
    out.add_missing_timezones()
    return bytes(out.to_ical())
