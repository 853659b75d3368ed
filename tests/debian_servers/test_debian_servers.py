"""Smoke tests: Cyrus, DAViCal and SOGo from Debian packages start, serve CalDAV, and stop.

Each test starts its own server on loopback. In CI (``CI`` set) a server that is missing or
cannot start fails the test; locally a test is skipped only when the package is absent.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.debian_servers.common import DebianServer
from tests.debian_servers.cyrus import cyrus_installed, start_cyrus
from tests.debian_servers.davical import davical_installed, start_davical
from tests.debian_servers.sogo import sogo_installed, start_sogo

STARTERS: dict[str, tuple[Callable[[Path], DebianServer], Callable[[], bool]]] = {
    "cyrus": (start_cyrus, cyrus_installed),
    "davical": (start_davical, davical_installed),
    "sogo": (start_sogo, sogo_installed),
}

ICS = {"Content-Type": "text/calendar; charset=utf-8"}
SYNC_COLLECTION = b"""<?xml version="1.0" encoding="utf-8"?>
<D:sync-collection xmlns:D="DAV:">
  <D:sync-token/>
  <D:sync-level>1</D:sync-level>
  <D:prop><D:getetag/></D:prop>
</D:sync-collection>
"""


def event(uid: str, summary: str = "Session", meeting: bool = False) -> bytes:
    """A one-hour VEVENT; a ``meeting`` is organized by alice with bob as attendee."""
    people = ""
    if meeting:
        people = (
            "ORGANIZER;CN=Alice:mailto:alice@example.test\r\n"
            "ATTENDEE;CN=Bob;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:bob@elsewhere.test\r\n"
        )
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//syncd//debian-servers test//EN\r\n"
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261130T120000Z\r\n"
        "DTSTART:20261215T100000Z\r\nDTEND:20261215T110000Z\r\n"
        f"SUMMARY:{summary}\r\n{people}END:VEVENT\r\nEND:VCALENDAR\r\n"
    ).encode()


@pytest.fixture(params=sorted(STARTERS))
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DebianServer]:
    """A started server of each kind, stopped after the test."""
    kind = request.param
    start, installed = STARTERS[kind]
    if not installed():
        message = f"{kind} is not installed (tests/debian_servers/install.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    srv = start(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()
    assert not srv.alive()


def test_caldav_round_trip_sends_no_mail(server: DebianServer) -> None:
    """MKCALENDAR, PUT (If-None-Match: *), GET, sync-collection, DELETE; and no email."""
    calendar = server.make_calendar()
    uid = str(uuid.uuid4())
    href = f"{calendar}{uid}.ics"

    status, headers, body = server.request("PUT", href, event(uid), {**ICS, "If-None-Match": "*"})
    assert status == 201, body[:500]

    status, headers, body = server.request("GET", href)
    assert status == 200
    assert f"UID:{uid}".encode() in body
    assert any(key.lower() == "etag" for key in headers)

    status, _, body = server.request(
        "REPORT",
        calendar,
        SYNC_COLLECTION,
        {"Content-Type": "application/xml; charset=utf-8", "Depth": "0"},
    )
    assert status == 207, body[:500]
    assert f"{uid}.ics".encode() in body
    assert re.search(rb"sync-token>[^<]+<", body), body[:500]

    status, _, body = server.request("DELETE", href)
    assert status in (200, 204), body[:500]
    assert server.request("GET", href)[0] == 404

    assert server.mail == [], [m["Subject"] for m in server.mail]


def test_mail_capture_is_live(server: DebianServer) -> None:
    """A meeting with an outside attendee makes the server send iMIP, and the sink has it.

    This is what makes ``server.mail == []`` above mean something. Cyrus and SOGo invite on
    PUT; DAViCal (no iMIP REQUEST for outside attendees) sends the CANCEL on DELETE.
    """
    href = f"{server.calendar_url or server.make_calendar()}meeting.ics"
    uid = str(uuid.uuid4())
    status, _, body = server.request(
        "PUT", href, event(uid, "Meeting", meeting=True), {**ICS, "If-None-Match": "*"}
    )
    assert status == 201, body[:500]
    assert server.request("DELETE", href)[0] in (200, 204)
    deadline = time.monotonic() + 10
    while not server.mail and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.mail, "the server sent no iMIP message"
    recipients = {addr for _, rcpts in server.sink.envelopes for addr in rcpts}
    assert recipients == {"bob@elsewhere.test"}
