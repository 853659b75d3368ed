"""A client's VTIMEZONE never changes how another object's times are read.

icalendar keeps every VTIMEZONE it parses for the rest of the process, by TZID, for every
thread (the first definition of a name wins; a TZID without VTIMEZONE then reads with it).
syncd reads each object's times with the zones that object defines, a zone the system's
database knows from the database, whatever was parsed before (adapters/caldav/ics.py,
_ObjectZones).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar.timezone import tzp

from adapters.caldav.ics import IcsError, busy_intervals, parse_event, parse_event_with_zones

WALL = "20261210T150000"  # every object's DTSTART, in its own TZID
WALL_AT = datetime(2026, 12, 10, 15, 0, tzinfo=UTC)
CUSTOM = "Customized Time Zone"  # Outlook's name for a zone it made up
WINDOWS = "Eastern Standard Time"  # Outlook's Windows name: America/New_York without one
GLOBAL = "/mozilla.org/20050126_1/America/New_York"  # the database zone after the prefix
NEW_YORK = datetime(2026, 12, 10, 15, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)


@pytest.fixture(autouse=True)
def _library_zones_as_they_were() -> Iterator[None]:
    """The library's process-wide zones back as they were after each test, for code that
    reads times through icalendar itself (the demo, test helpers): these tests define
    Windows names with made-up offsets."""
    cache = getattr(tzp, "_TZP__tz_cache", None)
    saved = dict(cache) if isinstance(cache, dict) else None
    yield
    if isinstance(cache, dict) and saved is not None:
        cache.clear()
        cache.update(saved)


def vtimezone(tzid: str, offset: str, fold: bool = False) -> str:
    """A VTIMEZONE of one fixed ``offset`` (``+0100``); ``fold``: its TZID line folded."""
    tzid_line = f"TZID:{tzid[:4]}\r\n {tzid[4:]}" if fold else f"TZID:{tzid}"
    return (
        f"BEGIN:VTIMEZONE\r\n{tzid_line}\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\n"
        f"TZOFFSETFROM:{offset}\r\nTZOFFSETTO:{offset}\r\nTZNAME:X\r\nEND:STANDARD\r\n"
        "END:VTIMEZONE\r\n"
    )


def obj(tzid: str, zones: str = "") -> bytes:
    """One event at WALL-16:00 in ``tzid``, with the VTIMEZONE text ``zones`` before it."""
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n"
        f"{zones}"
        "BEGIN:VEVENT\r\nUID:syncd-s_1@h\r\nDTSTAMP:20261201T000000Z\r\n"
        f'DTSTART;TZID="{tzid}":{WALL}\r\nDTEND;TZID="{tzid}":20261210T160000\r\n'
        "SUMMARY:Session\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


def at(offset: str) -> datetime:
    """The instant of WALL in a zone of fixed ``offset``."""
    sign = -1 if offset.startswith("-") else 1
    return WALL_AT - sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))


def read(data: bytes) -> tuple[datetime, str]:
    """(start, unreadable) as every reader of syncd gives them, checked to agree."""
    got = parse_event(data)
    assert got is not None
    assert parse_event(data.decode()) == got == parse_event_with_zones(data)
    if not got.unreadable:
        window = (WALL_AT - timedelta(days=1), WALL_AT + timedelta(days=1))
        assert busy_intervals(data, *window) == [(got.start, got.end)]
    return got.start, got.unreadable


@pytest.mark.parametrize("tzid", [CUSTOM, WINDOWS, GLOBAL, "Syncd/Isolation"])
@pytest.mark.parametrize("first", ["+0100", "+0530"])
def test_two_definitions_of_one_tzid_each_read_with_their_own(tzid: str, first: str) -> None:
    second = "+0530" if first == "+0100" else "+0100"
    one, other = obj(tzid, vtimezone(tzid, first)), obj(tzid, vtimezone(tzid, second))
    for data, offset in ((one, first), (other, second), (one, first), (other, second)):
        assert read(data) == (at(offset), "")


@pytest.mark.parametrize("fold", [False, True])
def test_a_definition_never_reaches_an_object_without_one(fold: bool) -> None:
    for _ in range(2):  # before and after the others
        assert read(obj(CUSTOM)) == (WALL_AT, f"unknown time zone {CUSTOM!r}")
        assert read(obj(WINDOWS)) == (NEW_YORK, "")
        assert read(obj(GLOBAL)) == (NEW_YORK, "")
        for tzid in (CUSTOM, WINDOWS, GLOBAL):
            assert read(obj(tzid, vtimezone(tzid, "+0900", fold))) == (at("+0900"), "")


def test_an_unresolved_tzid_is_unreadable_even_with_a_z() -> None:
    # The library reads such a time as UTC only until it knows the name from elsewhere.
    z_times = obj(CUSTOM).replace(f":{WALL}\r\n".encode(), f":{WALL}Z\r\n".encode())
    for _ in range(2):
        assert read(z_times) == (WALL_AT, f"unknown time zone {CUSTOM!r}")
        assert read(obj(CUSTOM, vtimezone(CUSTOM, "+0300"))) == (at("+0300"), "")


def test_a_zone_the_database_knows_is_read_from_it_whatever_an_object_defines() -> None:
    berlin = obj("Europe/Berlin", vtimezone("Europe/Berlin", "+0900"))
    assert read(berlin) == (WALL_AT - timedelta(hours=1), "")
    assert read(obj("Europe/Berlin")) == (WALL_AT - timedelta(hours=1), "")


def test_an_objects_first_definition_of_a_tzid_counts() -> None:
    both = vtimezone(CUSTOM, "+0200") + vtimezone(CUSTOM, "-0300")
    assert read(obj(CUSTOM, both)) == (at("+0200"), "")
    assert read(obj(CUSTOM, vtimezone(CUSTOM, "-0300"))) == (at("-0300"), "")


def test_a_block_cut_wrong_is_read_from_the_parsed_zone() -> None:
    # A folded END line: the block's text runs on into the next VTIMEZONE, so it is not
    # the key of this zone; the zone the library parsed is.
    cut = vtimezone(CUSTOM, "+0200").replace("END:VTIMEZONE", "END:VTIME\r\n ZONE")
    data = obj(CUSTOM, cut + vtimezone("Syncd/Other", "-0300"))
    assert read(obj(CUSTOM, vtimezone(CUSTOM, "-0700"))) == (at("-0700"), "")
    assert read(data) == (at("+0200"), "")


@pytest.mark.parametrize("good_first", [True, False])
def test_a_definition_that_cannot_be_read_is_an_error_in_any_order(good_first: bool) -> None:
    tzid = "Syncd Broken Zone"
    broken = obj(tzid, vtimezone(tzid, "+0100").replace("TZOFFSETFROM:+0100\r\n", ""))
    good = obj(tzid, vtimezone(tzid, "+0400"))
    for _ in range(2):
        if good_first:
            assert read(good) == (at("+0400"), "")
        with pytest.raises(IcsError):
            parse_event(broken)
        with pytest.raises(IcsError):
            busy_intervals(broken, WALL_AT - timedelta(days=1), WALL_AT + timedelta(days=1))
        if not good_first:
            assert read(good) == (at("+0400"), "")


def test_threads_reading_one_tzid_each_read_their_own() -> None:
    offsets = ["+0100", "+0200", "-0300", "+0530", "-0800", "+1000"]
    start = threading.Barrier(len(offsets))
    wrong: list[str] = []

    def reader(offset: str) -> None:
        data = obj(CUSTOM, vtimezone(CUSTOM, offset))
        start.wait()
        for _ in range(30):
            got = parse_event(data)
            if got is None or got.start != at(offset):
                wrong.append(f"{offset}: {got.start if got else None}")

    threads = [threading.Thread(target=reader, args=(o,)) for o in offsets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


# (tzid, its VTIMEZONE's offset or None for none) -> the start it must read as.
CASES = {
    (CUSTOM, "+0100"): (at("+0100"), ""),
    (CUSTOM, "-0430"): (at("-0430"), ""),
    (CUSTOM, None): (WALL_AT, f"unknown time zone {CUSTOM!r}"),
    (WINDOWS, "+0100"): (at("+0100"), ""),
    (WINDOWS, None): (NEW_YORK, ""),
    (GLOBAL, "+0700"): (at("+0700"), ""),
    (GLOBAL, None): (NEW_YORK, ""),
    ("America/New_York", "+0100"): (NEW_YORK, ""),
    ("America/New_York", None): (NEW_YORK, ""),
}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(sorted(CASES, key=str)), min_size=2, max_size=8))
def test_any_sequence_of_objects_reads_each_as_alone(
    sequence: list[tuple[str, str | None]],
) -> None:
    for tzid, offset in sequence:
        zones = vtimezone(tzid, offset) if offset else ""
        assert read(obj(tzid, zones)) == CASES[tzid, offset], (tzid, offset)
