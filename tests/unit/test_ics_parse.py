"""An event is parsed without the VTIMEZONE blocks of zones the system knows (issue 11:
they were 80 % of parsing an event), and what it reads is what the whole object reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Calendar, Event

from adapters.caldav.ics import _drop_known_zones, parse_event, parse_event_with_zones

KNOWN = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "US/Eastern",
         "Etc/GMT+5", "UTC", "Europe/London"]  # fmt: skip
# Zones the system lacks. icalendar keeps every VTIMEZONE it parses for the rest of the
# process, by TZID; syncd's reading does not depend on it (tests/unit/test_ics_zone_isolation.py),
# but code that reads times through icalendar itself would, so these names are this file's own.
OTHER = ["Syncd Test Zone", "europe/syncd-test", "/mozilla.org/20050126_1/Syncd/Test",
         "Syncd/Olympus"]  # fmt: skip


def _custom_zone(tzid: str, offset_minutes: int) -> str:
    sign = "+" if offset_minutes >= 0 else "-"
    hh, mm = divmod(abs(offset_minutes), 60)
    off = f"{sign}{hh:02d}{mm:02d}"
    return (
        f"BEGIN:VTIMEZONE\r\nTZID:{tzid}\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\n"
        f"TZOFFSETFROM:{off}\r\nTZOFFSETTO:{off}\r\nTZNAME:X\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n"
    )


def _event(tzid: str, wall: datetime, real_zone: bool, bogus_offset: int | None) -> str:
    """An event at ``wall`` in ``tzid``; its VTIMEZONE made by icalendar for a real zone
    (or a bogus one of ``bogus_offset``), else a custom one."""
    cal = Calendar()
    cal.add("PRODID", "-//test//EN")
    cal.add("VERSION", "2.0")
    ev = Event()
    ev.add("UID", "syncd-s_1@h")
    ev.add("SUMMARY", "Session")
    ev.add("DTSTAMP", datetime(2026, 1, 1, tzinfo=UTC))
    ev.add("X-SYNCD-SESSION", "s_1")
    cal.add_component(ev)
    if real_zone and bogus_offset is None:
        ev.add("DTSTART", wall.replace(tzinfo=ZoneInfo(tzid)))
        ev.add("DTEND", (wall + timedelta(hours=1)).replace(tzinfo=ZoneInfo(tzid)))
        cal.add_missing_timezones()
        return bytes(cal.to_ical()).decode()
    text = bytes(cal.to_ical()).decode()
    stamp = f"{wall:%Y%m%dT%H%M%S}"
    end = f"{wall + timedelta(hours=1):%Y%m%dT%H%M%S}"
    lines = f"DTSTART;TZID={tzid}:{stamp}\r\nDTEND;TZID={tzid}:{end}\r\n"
    text = text.replace("BEGIN:VEVENT\r\n", "BEGIN:VEVENT\r\n" + lines)
    zone = _custom_zone(tzid, bogus_offset if bogus_offset is not None else 210)
    return text.replace("BEGIN:VEVENT\r\n", zone + "BEGIN:VEVENT\r\n")


@settings(max_examples=300, deadline=None)
@given(
    tzid=st.sampled_from(KNOWN + OTHER),
    minutes=st.integers(-500_000, 500_000),
    bogus=st.none() | st.integers(-720, 840),
    lf=st.booleans(),
    as_bytes=st.booleans(),
    twice=st.booleans(),
)
def test_the_shortcut_reads_what_the_whole_object_reads(
    tzid: str, minutes: int, bogus: int | None, lf: bool, as_bytes: bool, twice: bool
) -> None:
    real = tzid in KNOWN
    wall = datetime(2027, 3, 28, 2, 30) + timedelta(minutes=minutes)
    text = _event(tzid, wall, real, bogus if real else None)
    if twice:  # a second, unused zone before the first
        text = text.replace("BEGIN:VTIMEZONE", _custom_zone("Other", 60) + "BEGIN:VTIMEZONE", 1)
    if lf:
        text = text.replace("\r\n", "\n")
    data: str | bytes = text.encode() if as_bytes else text
    assert parse_event(data) == parse_event_with_zones(data)
    if real and not twice:
        assert "VTIMEZONE" not in str(_drop_known_zones(text))  # the shortcut was taken


def test_a_zone_the_system_lacks_keeps_its_block() -> None:
    text = _event("Syncd Test Zone", datetime(2026, 12, 3, 10), False, None)
    assert _drop_known_zones(text) == text
    got = parse_event(text)
    assert got is not None and got.start == datetime(2026, 12, 3, 6, 30, tzinfo=UTC)  # +03:30


def test_a_folded_tzid_line_keeps_its_block() -> None:
    text = _event("Europe/Berlin", datetime(2026, 12, 3, 10), True, None)
    folded = text.replace("TZID:Europe/Berlin\r\n", "TZID:Europe/Ber\r\n lin\r\n")
    assert _drop_known_zones(folded) == folded
    assert parse_event(folded) == parse_event_with_zones(folded)


def test_every_client_file_of_the_corpus_reads_the_same() -> None:
    from tests.corpus.test_client_shapes import ZONES, render

    start = datetime(2026, 12, 3, 10, tzinfo=UTC)
    for client in ZONES:
        for status in ("", "CANCELLED"):
            data = render(
                client, "syncd-s_1@h", start, start + timedelta(hours=1), "S", "n", status
            )
            assert parse_event(data) == parse_event_with_zones(data), client
            assert parse_event(data.decode()) == parse_event_with_zones(data), client
