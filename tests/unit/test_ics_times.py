"""Issue 10, items 4 and 7 in the CalDAV adapter's iCalendar code (pure, no server)."""

from __future__ import annotations

from datetime import UTC, datetime

from icalendar import Calendar

from adapters.caldav.ics import apply_desired, parse_event
from syncd.ports import DesiredEvent


def obj(dtstart: str, dtend: str, extra: str = "") -> bytes:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//y//EN\r\n"
        f"{extra}"
        "BEGIN:VEVENT\r\nUID:syncd-s_1@h\r\nDTSTAMP:20261201T000000Z\r\n"
        f"{dtstart}\r\n{dtend}\r\nSEQUENCE:5\r\nSUMMARY:Ann\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


def test_4_floating_times_are_flagged_with_their_wall_time() -> None:
    c = parse_event(obj("DTSTART:20261210T150000", "DTEND:20261210T160000"))
    assert c is not None and c.floating and not c.unreadable
    assert c.start == datetime(2026, 12, 10, 15, 0, tzinfo=UTC)  # the wall time, not an instant


def test_4_an_unknown_tzid_without_vtimezone_is_unreadable() -> None:
    c = parse_event(
        obj("DTSTART;TZID=Mars/Olympus:20261210T150000", "DTEND;TZID=Mars/Olympus:20261210T160000")
    )
    assert c is not None and "Mars/Olympus" in c.unreadable and not c.floating


def test_4_windows_zone_names_are_read_as_iana() -> None:
    z = "W. Europe Standard Time"
    c = parse_event(obj(f"DTSTART;TZID={z}:20261210T150000", f"DTEND;TZID={z}:20261210T160000"))
    assert c is not None and not c.unreadable and not c.floating
    assert c.start == datetime(2026, 12, 10, 14, 0, tzinfo=UTC)


def test_4_instants_are_cut_to_whole_seconds() -> None:
    c = parse_event(obj("DTSTART:20261210T150000Z", "DTEND:20261210T160000Z"))
    assert c is not None and c.start.microsecond == 0 and c.sequence == 5


def test_7_an_update_writes_a_sequence_above_the_one_seen() -> None:
    raw = obj("DTSTART:20261210T150000Z", "DTEND:20261210T160000Z")
    d = DesiredEvent(
        "s_1",
        "syncd-s_1@h",
        datetime(2026, 12, 10, 15, 0, tzinfo=UTC),
        datetime(2026, 12, 10, 16, 0, tzinfo=UTC),
        "Ann",
        "-- syncd --\n-- /syncd --",
        sequence=0,
    )
    out = apply_desired(raw, d, datetime(2026, 12, 1, tzinfo=UTC))
    ev = next(iter(Calendar.from_ical(out).walk("VEVENT")))
    assert int(ev["SEQUENCE"]) == 6 and out != raw
