"""Client write shapes (issue 13, item 7), end to end on Radicale.

For each file of this folder (see README.md), a mirrored session's event is rewritten the
way that client writes it: first at the session's own time (the client's re-serialization:
no decision), then as a move, a metadata edit and a ``cancel:`` title, and for Thunderbird
and Outlook as ``STATUS:CANCELLED``. Each must give the decision of docs/GESTURES.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar

from syncd.domain.model import Status
from tests.contract.human import CalDAVHuman
from tests.integration.world import World
from tests.servers import Server

HERE = Path(__file__).parent
# The zone each file's wall times are in (floating: the admin's zone, Europe/Berlin).
ZONES = {
    "apple_calendar": "America/New_York",
    "thunderbird": "Europe/London",
    "outlook_caldav_synchronizer": "America/Los_Angeles",  # "Pacific Standard Time"
    "davx5_android": "Europe/Vienna",
    "evolution": "Asia/Tokyo",
    "khal_floating": "Europe/Berlin",
    "khal_utc": "UTC",
}
CASES = [(c, v) for c in ZONES for v in ("move", "metadata", "cancel")] + [
    ("thunderbird", "status"),
    ("outlook_caldav_synchronizer", "status"),
]


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,").replace("\n", "\\n")


def render(
    client: str, uid: str, start: datetime, end: datetime, summary: str, notes: str, status: str
) -> bytes:
    """The corpus file of ``client`` filled in (CRLF line ends, as on the wire)."""
    zone = ZoneInfo(ZONES[client])
    text = (HERE / f"{client}.ics").read_text()
    for key, value in {
        "@UID@": uid,
        "@START@": start.astimezone(zone).strftime("%Y%m%dT%H%M%S"),
        "@END@": end.astimezone(zone).strftime("%Y%m%dT%H%M%S"),
        "@SUMMARY@": _escape(summary),
        "@NOTES@": _escape(notes),
        "@STAMP@": "20261201T100000Z",
        "@STATUS@": f"STATUS:{status}\n" if status else "",
    }.items():
        text = text.replace(key, value)
    data = text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
    Calendar.from_ical(data)  # the corpus itself is valid iCalendar
    return data


@pytest.mark.parametrize(("client", "variant"), CASES)
def test_a_clients_shape_gives_the_gestures_decision(
    tmp_path: Path, radicale_server: Server, client: str, variant: str
) -> None:
    w = World(tmp_path, radicale_server)
    sid = w.book(days=5)
    w.sync()
    rid, human = w.remote_id(sid), CalDAVHuman(radicale_server)
    raw, etag = human._get(rid)
    ev = next(iter(Calendar.from_ical(raw).walk("VEVENT")))
    uid, summary, notes = str(ev["UID"]), str(ev["SUMMARY"]), str(ev["DESCRIPTION"])
    s = w.session(sid)

    # The client writes the event back in its own shape, same time: no decision.
    human._put(rid, render(client, uid, s.start, s.end, summary, notes, ""), etag)
    report = w.sync()
    assert report.error is None and report.actions == [], report
    assert w.session(sid).start == s.start

    start, end, status = s.start, s.end, ""
    if variant == "move":
        start, end = s.start + timedelta(days=1, hours=2), s.end + timedelta(days=1, hours=2)
    elif variant == "cancel":
        summary = "cancel: sick child"
    elif variant == "status":
        status = "CANCELLED"
    else:
        notes = "Bring the contract.\n" + notes  # the admin's own note above syncd's block
    _, etag = human._get(rid)
    data = render(client, uid, start, end, summary, notes, status)
    if variant == "metadata":
        data = data.replace(b"END:VEVENT", b"LOCATION:Room 4\r\nCATEGORIES:Coaching\r\nEND:VEVENT")
    human._put(rid, data, etag)
    report = w.sync()
    assert report.error is None, report.error
    after = w.session(sid)
    if variant == "move":
        assert report.actions == [f"{sid}: rescheduled"], report
        assert (after.start, after.end) == (start, end)
    elif variant == "metadata":
        assert report.actions == [] and after.start == s.start and after.status is Status.BOOKED
    else:
        assert report.actions == [f"{sid}: canceled"], report
        assert after.status is Status.CANCELED
        if variant == "cancel":
            assert after.cancel_reason == "sick child"
    w.assert_quiet()
