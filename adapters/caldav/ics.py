"""iCalendar (RFC 5545) parsing and building for the CalDAV backend.

Pure functions over ``icalendar``: turn a calendar object into :class:`EventContent`,
build the object syncd creates, apply a :class:`DesiredEvent` to an existing object
(read-modify-write that keeps everything syncd does not own) and list busy intervals.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from icalendar import Calendar, Event

from syncd.domain.eventtext import merge_notes, strip_command
from syncd.ports import DesiredEvent, EventContent

PRODID = "-//syncd//syncd//EN"
SESSION_PROP = "X-SYNCD-SESSION"
_UID_RE = re.compile(r"^syncd-(?P<session>.+)@[^@]+$")
# Properties an update rewrites; everything else on the event is the admin's and is kept.
_OWNED = ("DTSTART", "DTEND", "DURATION", "STATUS", "TRANSP", "SEQUENCE", "DTSTAMP")
_RECURRENCE = ("RRULE", "RDATE", "EXDATE", "EXRULE")


class IcsError(ValueError):
    """A calendar object that cannot be parsed into an event."""


def session_id_from(uid: str, x_session: str | None) -> str | None:
    """The session id of ``syncd-<session id>@host`` UIDs, else the X-SYNCD-SESSION value."""
    match = _UID_RE.match(uid)
    if match:
        return match.group("session")
    return x_session or None


def _as_utc(value: Any) -> tuple[datetime, bool]:
    """A DATE or DATE-TIME value as (aware UTC instant, is_all_day); floating times are UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            return value.replace(tzinfo=UTC), False
        return value.astimezone(UTC), False
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC), True
    raise IcsError(f"not a date or date-time: {value!r}")


def _parse_calendar(data: str | bytes) -> Calendar:
    try:
        return Calendar.from_ical(data)
    except Exception as err:  # icalendar raises ValueError, KeyError, IndexError...
        raise IcsError(f"unparseable iCalendar data: {err}") from err


def _master(events: list[Any]) -> Any:
    """The master VEVENT (no RECURRENCE-ID), else the first one."""
    return next((ev for ev in events if "RECURRENCE-ID" not in ev), events[0])


def _interval(event: Any) -> tuple[datetime, datetime, bool]:
    """(start, end, all_day) of one VEVENT; DURATION or the RFC 5545 defaults without DTEND."""
    try:
        start, all_day = _as_utc(event.decoded("DTSTART"))
        if "DTEND" in event:
            end, _ = _as_utc(event.decoded("DTEND"))
        elif "DURATION" in event:
            duration = event.decoded("DURATION")
            if not isinstance(duration, timedelta):
                raise IcsError(f"bad DURATION {duration!r}")
            end = start + duration
        else:
            end = start + timedelta(days=1) if all_day else start
    except IcsError:
        raise
    except Exception as err:
        raise IcsError(f"bad DTSTART/DTEND/DURATION: {err}") from err
    return start, end, all_day


def _text(event: Any, name: str) -> str:
    value = event.get(name)
    if value is None:
        return ""
    if isinstance(value, list):  # a repeated property: the first one counts
        value = value[0] if value else ""
    return str(value)


def parse_event(data: str | bytes) -> EventContent | None:
    """Normalize one calendar object; ``None`` when it holds no VEVENT (a task, a journal).

    Raises :class:`IcsError` when the object cannot be parsed.
    """
    cal = _parse_calendar(data)
    events = list(cal.walk("VEVENT"))
    if not events:
        return None
    master = _master(events)
    start, end, all_day = _interval(master)
    recurring = (
        "RRULE" in master or "RDATE" in master or any("RECURRENCE-ID" in ev for ev in events)
    )
    uid = _text(master, "UID")
    return EventContent(
        start=start,
        end=end,
        all_day=all_day,
        recurring=recurring,
        status=(_text(master, "STATUS") or "CONFIRMED").strip().lower(),
        summary=_text(master, "SUMMARY"),
        description=_text(master, "DESCRIPTION"),
        uid=uid,
        session_id=session_id_from(uid, _text(master, SESSION_PROP) or None),
    )


def _set(component: Any, name: str, value: Any) -> None:
    component.pop(name, None)
    component.add(name, value)


def _set_owned(event: Any, desired: DesiredEvent, now: datetime) -> None:
    for name in (*_OWNED, *_RECURRENCE):
        event.pop(name, None)
    event.add("DTSTAMP", now.astimezone(UTC))
    event.add("DTSTART", desired.start.astimezone(UTC))
    event.add("DTEND", desired.end.astimezone(UTC))
    event.add("STATUS", desired.status.upper())
    event.add("TRANSP", "TRANSPARENT" if desired.transparent else "OPAQUE")
    event.add("SEQUENCE", desired.sequence)


def build_event(desired: DesiredEvent, now: datetime) -> bytes:
    """The complete VCALENDAR syncd PUTs to create a session's event."""
    cal = Calendar()
    cal.add("PRODID", PRODID)
    cal.add("VERSION", "2.0")
    event = Event()
    event.add("UID", desired.uid)
    _set_owned(event, desired, now)
    event.add("SUMMARY", desired.summary)
    event.add("DESCRIPTION", desired.notes_block)
    event.add(SESSION_PROP, desired.session_id)
    cal.add_component(event)
    return bytes(cal.to_ical())


def apply_desired(data: str | bytes, desired: DesiredEvent, now: datetime) -> bytes:
    """Rewrite only syncd's fields of an existing object; keep everything the admin added.

    Drops recurrence (and overriding instances), turns an all-day event into a timed one,
    replaces syncd's notes block and strips a consumed command when
    ``desired.strip_prefixes`` is set. Raises :class:`IcsError` when ``data`` holds no
    parseable VEVENT.
    """
    cal = _parse_calendar(data)
    events = list(cal.walk("VEVENT"))
    if not events:
        raise IcsError("the object holds no VEVENT")
    master = _master(events)
    # Overriding instances (RECURRENCE-ID) die with the recurrence.
    cal.subcomponents = [
        comp for comp in cal.subcomponents if comp.name != "VEVENT" or comp is master
    ]
    master.pop("RECURRENCE-ID", None)
    _set_owned(master, desired, now)
    summary, description = _text(master, "SUMMARY"), _text(master, "DESCRIPTION")
    if desired.strip_prefixes:
        summary, description = strip_command(
            summary, description, desired.strip_prefixes, desired.summary
        )
    if not summary.strip():
        summary = desired.summary
    _set(master, "SUMMARY", summary)
    _set(master, "DESCRIPTION", merge_notes(description, desired.notes_block))
    _set(master, "LAST-MODIFIED", now.astimezone(UTC))
    if SESSION_PROP not in master:
        master.add(SESSION_PROP, desired.session_id)
    return bytes(cal.to_ical())


def busy_intervals(
    data: str | bytes, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """Intervals of the opaque, non-cancelled VEVENTs of one object overlapping [start, end).

    Every VEVENT counts on its own, so a server-expanded recurrence gives its instances; an
    unexpanded master gives only its first occurrence. Raises :class:`IcsError`.
    """
    cal = _parse_calendar(data)
    out: list[tuple[datetime, datetime]] = []
    for event in cal.walk("VEVENT"):
        if _text(event, "TRANSP").strip().upper() == "TRANSPARENT":
            continue
        if _text(event, "STATUS").strip().upper() == "CANCELLED":
            continue
        ev_start, ev_end, _ = _interval(event)
        if ev_start < end and ev_end > start:
            out.append((ev_start, ev_end))
    return out
