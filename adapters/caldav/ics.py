"""iCalendar (RFC 5545) parsing and building for the CalDAV backend.

Pure functions over ``icalendar``: turn a calendar object into :class:`EventContent`,
build the object syncd creates, apply a :class:`DesiredEvent` to an existing object
(read-modify-write that keeps everything syncd does not own) and list busy intervals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar import Calendar, Event, Timezone
from icalendar.timezone.windows_to_olson import WINDOWS_TO_OLSON

from syncd.domain.eventtext import merge_notes, strip_command
from syncd.domain.icstext import escaped, lines_bytes
from syncd.ports import DesiredEvent, EventContent

PRODID = "-//syncd//syncd//EN"
SESSION_PROP = "X-SYNCD-SESSION"
_UID_RE = re.compile(r"^syncd-(?P<session>.+)@[^@]+$")
# Properties an update rewrites; everything else on the event is the admin's and is kept.
_OWNED = ("DTSTART", "DTEND", "DURATION", "STATUS", "TRANSP", "SEQUENCE", "DTSTAMP")
_RECURRENCE = ("RRULE", "RDATE", "EXDATE", "EXRULE")
_ZERO = timedelta(0)


class IcsError(ValueError):
    """A calendar object that cannot be parsed into an event."""


def session_id_from(uid: str, x_session: str | None) -> str | None:
    """The session id of ``syncd-<session id>@host`` UIDs, else the X-SYNCD-SESSION value."""
    match = _UID_RE.match(uid)
    if match:
        return match.group("session")
    return x_session or None


@dataclass(frozen=True)
class _When:
    """One DTSTART/DTEND read: the instant (UTC; wall time as UTC when floating)."""

    at: datetime
    all_day: bool = False
    floating: bool = False
    unreadable: str = ""


def _as_utc(value: Any, tzid: str | None = None) -> _When:
    """A DATE or DATE-TIME value, cut to whole seconds.

    A floating time (no TZID, no ``Z``) is wall time of the admin's zone, which only the
    core knows: it comes back as that wall time labelled UTC, with ``floating`` set. A
    TZID that :class:`_ObjectZones` cannot resolve (``value`` naive) is unreadable, even
    with a ``Z``: the library drops that ``Z`` once it knows the name from another object.
    """
    if isinstance(value, datetime):
        value = value.replace(microsecond=0)
        if value.tzinfo is None or value.utcoffset() is None:
            wall = value.replace(tzinfo=UTC)
            if tzid:
                return _When(wall, unreadable=f"unknown time zone {tzid!r}")
            return _When(wall, floating=True)
        return _When(value.astimezone(UTC))
    if isinstance(value, date):
        return _When(datetime(value.year, value.month, value.day, tzinfo=UTC), all_day=True)
    raise IcsError(f"not a date or date-time: {value!r}")


def _tzid(event: Any, name: str) -> str | None:
    prop = event.get(name)
    params = getattr(prop, "params", None)
    value = params.get("TZID") if params is not None else None
    return str(value) if value else None


def _parse_calendar(data: str | bytes) -> Calendar:
    try:
        return Calendar.from_ical(data)
    except Exception as err:  # icalendar raises ValueError, KeyError, IndexError...
        raise IcsError(f"unparseable iCalendar data: {err}") from err


def _master(events: list[Any]) -> Any:
    """The master VEVENT (no RECURRENCE-ID), else the first one."""
    return next((ev for ev in events if "RECURRENCE-ID" not in ev), events[0])


def _read_time(event: Any, name: str, zones: _ObjectZones) -> _When:
    """DTSTART or DTEND of ``event``, a TZID resolved by ``zones`` (never by the library)."""
    value = event.decoded(name)
    tzid = _tzid(event, name)
    if tzid and isinstance(value, datetime):
        # The library's zone may be another object's definition (see _ObjectZones): only
        # the wall time is taken from it.
        value = value.replace(tzinfo=zones.get(tzid))
    return _as_utc(value, tzid)


def _interval(event: Any, zones: _ObjectZones) -> tuple[_When, _When]:
    """(start, end) of one VEVENT; DURATION or the RFC 5545 defaults without DTEND."""
    try:
        start = _read_time(event, "DTSTART", zones)
        if "DTEND" in event:
            end = _read_time(event, "DTEND", zones)
        elif "DURATION" in event:
            duration = event.decoded("DURATION")
            if not isinstance(duration, timedelta):
                raise IcsError(f"bad DURATION {duration!r}")
            end = replace(start, at=start.at + duration, all_day=False)
        else:
            end = replace(start, at=start.at + (timedelta(days=1) if start.all_day else _ZERO))
    except IcsError:
        raise
    except Exception as err:
        raise IcsError(f"bad DTSTART/DTEND/DURATION: {err}") from err
    return start, end


def _text(event: Any, name: str) -> str:
    value = event.get(name)
    if value is None:
        return ""
    if isinstance(value, list):  # a repeated property: the first one counts
        value = value[0] if value else ""
    return str(value)


#: A VTIMEZONE block, and the TZID line in it (unfolded: a folded one is left alone).
_VTIMEZONE = re.compile(r"^BEGIN:VTIMEZONE\r?\n.*?^END:VTIMEZONE\r?\n", re.I | re.M | re.S)
_TZID_LINE = re.compile(r"^TZID:([^\r\n;:]+)\r?\n(?![ \t])", re.I | re.M)
_VTIMEZONE_B = re.compile(_VTIMEZONE.pattern.encode(), re.I | re.M | re.S)
_TZID_LINE_B = re.compile(_TZID_LINE.pattern.encode(), re.I | re.M)


@lru_cache(maxsize=512)
def _iana(name: str) -> bool:
    """Whether ``name`` is a zone the system's database knows (as the parser looks it up)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def _drop_known_zones(data: str | bytes) -> str | bytes:
    """``data`` without the VTIMEZONE blocks of zones the system knows.

    A TZID the zone database knows is read from the database, whatever the object's
    VTIMEZONE says (:class:`_ObjectZones`), so such a block only costs:
    most clients write one per zone, and parsing it was 80 % of parsing an event. Blocks
    of other zones (custom names, Windows names) stay: their times are read with them.
    """
    if isinstance(data, bytes):
        if b"VTIMEZONE" not in data.upper():
            return data

        def drop_b(m: re.Match[bytes]) -> bytes:
            tz = _TZID_LINE_B.search(m.group(0))
            known = tz is not None and _iana(tz.group(1).decode("utf-8", "replace").strip())
            return b"" if known else m.group(0)

        return _VTIMEZONE_B.sub(drop_b, data)
    if "VTIMEZONE" not in data.upper():
        return data

    def drop(m: re.Match[str]) -> str:
        tz = _TZID_LINE.search(m.group(0))
        return "" if tz is not None and _iana(tz.group(1).strip()) else m.group(0)

    return _VTIMEZONE.sub(drop, data)


@lru_cache(maxsize=256)
def _zone_defined_by(vtimezone: bytes, name: str) -> tzinfo | None:
    """The zone a VTIMEZONE of TZID ``name`` defines, keyed by its text: equal text, equal
    zone. ``None`` when ``vtimezone`` is not one VTIMEZONE of that TZID."""
    components = Timezone.from_ical(vtimezone, multiple=True)
    if len(components) != 1:  # a block cut wrong (a folded END line): not this key
        return None
    component = components[0]
    if not isinstance(component, Timezone) or str(component.get("TZID", "")).strip("/") != name:
        return None
    zone: tzinfo = component.to_tz(lookup_tzid=False)
    return zone


class _ObjectZones:
    """The time zones one calendar object's times are read with, and only that object's.

    icalendar keeps every VTIMEZONE it parses for the rest of the process, by TZID, for
    every thread: the first definition of a name wins, and a later object's TZID of that
    name, with another definition or none, reads with it. So syncd takes only the wall
    time from the library and resolves each TZID here, from this object alone: a zone the
    system's database knows, from the database (whatever the object defines, as the
    VTIMEZONE shortcut assumes); else this object's own VTIMEZONE of that TZID (its first
    one); else a Windows name, or a ``/vendor/Area/City`` TZID, as the database zone it
    names; else none (unreadable). TZIDs compare as the library compares them, without
    surrounding ``/``. Objects share only zones built from equal VTIMEZONE text.
    """

    def __init__(self, cal: Calendar, data: str | bytes) -> None:
        self._cal, self._data = cal, data
        self._defined: dict[str, Any] | None = None
        self._resolved: dict[str, tzinfo | None] = {}

    def get(self, tzid: str) -> tzinfo | None:
        """The zone of ``tzid`` for this object, or ``None`` when it has none."""
        if tzid not in self._resolved:
            self._resolved[tzid] = self._resolve(tzid)
        return self._resolved[tzid]

    def _resolve(self, tzid: str) -> tzinfo | None:
        name = tzid.strip("/")
        if _iana(name):
            return ZoneInfo(name)
        vtimezone = self._definitions().get(name)
        if vtimezone is not None:
            try:
                # The block's own text is the key when it reads back as this TZID's one
                # VTIMEZONE (serializing the parsed one costs a fifth of an event's parse).
                block = self._block(name)
                zone = _zone_defined_by(block, name) if block is not None else None
                return zone or _zone_defined_by(bytes(vtimezone.to_ical()), name)
            except Exception as err:  # icalendar and dateutil raise ValueError, KeyError...
                raise IcsError(f"the VTIMEZONE of {tzid!r} cannot be read: {err}") from err
        olson = WINDOWS_TO_OLSON.get(name)
        if olson is not None and _iana(olson):
            return ZoneInfo(olson)
        if tzid.startswith("/"):  # RFC 5545 3.2.19 "globally unique": the vendor's prefix
            parts = name.split("/")
            for first in range(1, len(parts)):
                candidate = "/".join(parts[first:])
                if _iana(candidate):
                    return ZoneInfo(candidate)
        return None

    def _definitions(self) -> dict[str, Any]:
        """The object's VTIMEZONEs by TZID, the first of each."""
        if self._defined is None:
            self._defined = {}
            for vtimezone in self._cal.walk("VTIMEZONE"):
                tzid = vtimezone.get("TZID")
                if tzid is not None:
                    self._defined.setdefault(str(tzid).strip("/"), vtimezone)
        return self._defined

    def _block(self, name: str) -> bytes | None:
        """The text of the first VTIMEZONE block whose unfolded TZID line is ``name``."""
        data = self._data
        raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")
        for match in _VTIMEZONE_B.finditer(raw):
            tz = _TZID_LINE_B.search(match.group(0))
            if tz is not None and tz.group(1).decode("utf-8", "replace").strip("/") == name:
                return match.group(0)
        return None


def parse_event(data: str | bytes) -> EventContent | None:
    """Normalize one calendar object; ``None`` when it holds no VEVENT (a task, a journal).

    Raises :class:`IcsError` when the object cannot be parsed. The object is read without
    the VTIMEZONE blocks of zones the system knows (:func:`_drop_known_zones`), which its
    times are not read with; :func:`parse_event_with_zones` reads it whole. Each TZID is
    resolved from this object alone (:class:`_ObjectZones`), whatever was parsed before.
    """
    return parse_event_with_zones(_drop_known_zones(data))


def parse_event_with_zones(data: str | bytes) -> EventContent | None:
    """:func:`parse_event` of the whole object (what the shortcut must equal)."""
    cal = _parse_calendar(data)
    events = list(cal.walk("VEVENT"))
    if not events:
        return None
    master = _master(events)
    start, end = _interval(master, _ObjectZones(cal, data))
    recurring = (
        "RRULE" in master or "RDATE" in master or any("RECURRENCE-ID" in ev for ev in events)
    )
    uid = _text(master, "UID")
    try:
        sequence = int(str(master.get("SEQUENCE", 0)).strip() or 0)
    except ValueError:
        sequence = 0
    return EventContent(
        start=start.at,
        end=end.at,
        all_day=start.all_day,
        floating=start.floating or end.floating,
        unreadable=start.unreadable or end.unreadable,
        sequence=sequence,
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


def _set_owned(event: Any, desired: DesiredEvent, now: datetime, seen_sequence: int = -1) -> None:
    """syncd's fields; SEQUENCE above any seen, so every update is a new revision.

    Clients that compare content hashes or SEQUENCE (vdirsyncer) would otherwise never
    pull a restore that writes the old times back over their own edit.
    """
    for name in (*_OWNED, *_RECURRENCE):
        event.pop(name, None)
    event.add("DTSTAMP", now.astimezone(UTC))
    event.add("DTSTART", desired.start.astimezone(UTC))
    event.add("DTEND", desired.end.astimezone(UTC))
    event.add("STATUS", desired.status.upper())
    event.add("TRANSP", "TRANSPARENT" if desired.transparent else "OPAQUE")
    event.add("SEQUENCE", max(desired.sequence, seen_sequence + 1))


def build_event(desired: DesiredEvent, now: datetime) -> bytes:
    """The complete VCALENDAR syncd PUTs to create a session's event.

    Written directly, byte for byte what ``icalendar`` writes for it (the library's
    property order, TEXT escaping and 75-octet folding; tests/unit/test_ics_build.py
    compares the two): a first mirror builds hundreds of these.
    """
    if "\n" in desired.session_id or "\r" in desired.session_id:
        return build_event_with_library(desired, now)  # no content line can hold it
    stamp, start, end = (
        f"{t.astimezone(UTC):%Y%m%dT%H%M%SZ}" for t in (now, desired.start, desired.end)
    )
    lines = (
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{escaped(PRODID)}",
        "BEGIN:VEVENT",
        f"SUMMARY:{escaped(desired.summary)}",
        f"DTSTART:{start}",
        f"DTEND:{end}",
        f"DTSTAMP:{stamp}",
        f"UID:{escaped(desired.uid)}",
        f"SEQUENCE:{max(desired.sequence, 0)}",
        f"DESCRIPTION:{escaped(desired.notes_block)}",
        f"STATUS:{escaped(desired.status.upper())}",
        f"TRANSP:{'TRANSPARENT' if desired.transparent else 'OPAQUE'}",
        f"{SESSION_PROP}:{desired.session_id}",  # an X- property: written as it is
        "END:VEVENT",
        "END:VCALENDAR",
    )
    return lines_bytes(lines)


def build_event_with_library(desired: DesiredEvent, now: datetime) -> bytes:
    """:func:`build_event` through ``icalendar`` (what the direct writer must equal)."""
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


def _as_written(text: str) -> str:
    """A TEXT value as it reads back: iCalendar has one line break, ``\\n``."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def built_content(desired: DesiredEvent) -> EventContent:
    """What :func:`parse_event` reads from :func:`build_event`'s object, without parsing it.

    A create's answer carries only an etag; the event it stored is the one syncd built.
    """
    return EventContent(
        start=desired.start.astimezone(UTC).replace(microsecond=0),
        end=desired.end.astimezone(UTC).replace(microsecond=0),
        sequence=max(desired.sequence, 0),
        status=desired.status.upper().strip().lower() or "confirmed",
        summary=_as_written(desired.summary),
        description=_as_written(desired.notes_block),
        uid=desired.uid,
        session_id=session_id_from(desired.uid, desired.session_id or None),
    )


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
    try:
        seen = int(str(master.get("SEQUENCE", 0)).strip() or 0)
    except ValueError:
        seen = 0
    _set_owned(master, desired, now, seen)
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
    zones = _ObjectZones(cal, data)
    out: list[tuple[datetime, datetime]] = []
    for event in cal.walk("VEVENT"):
        if _text(event, "TRANSP").strip().upper() == "TRANSPARENT":
            continue
        if _text(event, "STATUS").strip().upper() == "CANCELLED":
            continue
        ev_start, ev_end = _interval(event, zones)
        if ev_start.at < end and ev_end.at > start:
            out.append((ev_start.at, ev_end.at))
    return out
