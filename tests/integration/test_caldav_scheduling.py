"""No server-side email caused by syncd (issue 13, item 4), against each server's captured mail.

The admin invited the customer from their client: the event now carries ORGANIZER (the
admin's own address on that server) and an ATTENDEE. Whatever the server emails about that
edit is the client's doing, not syncd's. From then on:

- DAViCal (iMIP on) honours ``SCHEDULE-AGENT=CLIENT``: syncd's move, restore and delete carry
  it (and ``Schedule-Reply: F``) and the server's mail stays as it was;
- Cyrus honours it for an event the client already marked so (then syncd writes it), but an
  attendee it scheduled itself that turns ``CLIENT`` gets a CANCEL; SOGo ignores it: there
  syncd does not write such an event, and the admin is told once (a ``write_refused``
  email), however many cycles refuse it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from icalendar import Calendar, vCalAddress

from syncd.domain.model import Actor, Status
from syncd.services import booking as services
from tests.contract.human import CalDAVHuman
from tests.integration.world import World, event_of

CUSTOMER = "ann@example.org"
OWNER_ADDRESS = {  # the calendar user address each server gives the test user "alice"
    "cyrus": "alice@example.test",
    "davical": "alice@example.test",
    "sogo": "alice@example.test",
}


def _invite(human: CalDAVHuman, remote_id: str, kind: str, agent: str = "") -> None:
    """The admin's client adds ORGANIZER (the admin) and the customer as ATTENDEE
    (``agent="CLIENT"``: a client that sends its invitations itself)."""

    def change(ev: Any) -> None:
        marks = {"SCHEDULE-AGENT": agent} if agent else {}
        organizer = vCalAddress(f"mailto:{OWNER_ADDRESS[kind]}")
        organizer.params.update({"CN": "Alice", **marks})
        ev.add("ORGANIZER", organizer)
        attendee = vCalAddress(f"mailto:{CUSTOMER}")
        attendee.params.update({"CN": "Ann", "PARTSTAT": "NEEDS-ACTION", "RSVP": "TRUE", **marks})
        ev.add("ATTENDEE", attendee)

    human._edit(remote_id, change)


def _stored(w: World, sid: str) -> Any:
    raw, _ = CalDAVHuman(w.server)._get(w.remote_id(sid))
    return next(iter(Calendar.from_ical(raw).walk("VEVENT")))


def _people_marked(w: World, sid: str) -> bool:
    ev = _stored(w, sid)
    people = [ev["ORGANIZER"], *(ev.get("ATTENDEE") if isinstance(ev.get("ATTENDEE"), list)
                                 else [ev["ATTENDEE"]])]  # fmt: skip
    return all(str(p.params.get("SCHEDULE-AGENT", "")).upper() == "CLIENT" for p in people)


def _mail_after(server: Any, act: Callable[[], None]) -> list[str]:
    before = len(server.mail)
    act()
    return [str(m["Subject"]) for m in server.mail[before:]]


@pytest.mark.parametrize(("kind", "agent"), [("davical", ""), ("cyrus", "CLIENT")])
def test_syncds_writes_of_an_invited_event_send_no_mail(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, agent: str
) -> None:
    server = request.getfixturevalue(f"{kind}_server")
    w = World(tmp_path, server)
    human = CalDAVHuman(server, attendee=False)
    sid, past = w.book(days=3), w.book(days=4, name="Bo")
    assert _mail_after(server, w.sync) == []
    for s in (sid, past):
        _invite(human, w.remote_id(s), kind, agent)
    assert w.sync().actions == []  # not a gesture: fields syncd does not own

    new = w.session(sid).start + timedelta(days=1)
    services.reschedule(w.ctx, sid, new, actor=Actor.ADMIN)  # from the web page
    assert _mail_after(server, lambda: w.sync()) == []
    assert event_of(w, sid).content.start == new and _people_marked(w, sid)

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    human.move(w.remote_id(past), start, start + timedelta(hours=1), "UTC")
    assert _mail_after(server, lambda: w.sync()) == []  # restored to the session's time
    assert event_of(w, past).content.start == w.session(past).start
    assert ("gesture_undone", "coach@example.com", "pending") in w.outbox(past)

    services.cancel(w.ctx, sid, "closed", actor=Actor.ADMIN)
    assert _mail_after(server, lambda: w.sync()) == []  # deleted: no CANCEL either
    status, _, _ = server.request("GET", server.root_url + w.remote_id(sid))
    assert status == 404 and w.session(sid).status is Status.CANCELED
    assert _mail_after(server, lambda: w.sync()) == []
    assert not [o for o in w.outbox() if o[0] == "write_refused"]


@pytest.mark.parametrize("kind", ["sogo", "cyrus"])
def test_server_scheduled_events_are_left_alone_and_the_admin_told_once(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    server = request.getfixturevalue(f"{kind}_server")
    w = World(tmp_path, server)
    human = CalDAVHuman(server, attendee=False)
    sid = w.book(days=3)
    assert _mail_after(server, w.sync) == []
    _invite(human, w.remote_id(sid), kind)
    written = event_of(w, sid)
    assert w.sync().actions == []

    new = w.session(sid).start + timedelta(days=1)
    services.reschedule(w.ctx, sid, new, actor=Actor.ADMIN)
    mail = _mail_after(server, lambda: [w.sync() for _ in range(2)] and None)
    assert mail == []
    after = event_of(w, sid)
    assert after.etag == written.etag and after.content.start == written.content.start
    refused = [o for o in w.outbox() if o[0] == "write_refused"]
    assert refused == [("write_refused", "coach@example.com", "pending")]

    services.cancel(w.ctx, sid, "closed", actor=Actor.ADMIN)
    assert _mail_after(server, lambda: [w.sync() for _ in range(2)] and None) == []
    assert event_of(w, sid).etag == written.etag  # not deleted: the server would send a CANCEL
    assert [o for o in w.outbox() if o[0] == "write_refused"] == refused  # told once
