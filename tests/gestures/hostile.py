"""What real clients do that well-behaved ones do not (issue 10), on any gesture world.

Functions over a :class:`tests.gestures.worlds.GestureWorld` rather than new methods, so
they work on every backend's world: CalDAV worlds edit the raw object through their
:class:`tests.contract.human.CalDAVHuman`; the Google world edits through the fake.
"""

from __future__ import annotations

import copy
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from icalendar import Calendar

from tests.contract.graph_kit import UPN
from tests.contract.human import relayout
from tests.fakes.graph_human import OutlookUser
from tests.gestures.worlds import GestureWorld, GoogleGestureWorld
from tests.integration.google_world import CAL


def is_google(w: GestureWorld) -> bool:
    """True for the Google fake's world."""
    return isinstance(w, GoogleGestureWorld)


def is_graph(w: GestureWorld) -> bool:
    """True for the Microsoft Graph fake's world."""
    return w.kind == "microsoft"


def caldav_only(w: GestureWorld, why: str) -> None:
    """Skip on Google and Microsoft Graph, whose JSON APIs cannot express ``why``."""
    if is_google(w):
        pytest.skip(f"Google Calendar has no {why}")
    if is_graph(w):
        pytest.skip(f"Microsoft Graph has no {why}")


def _master(cal: Any) -> Any:
    return next(ev for ev in cal.walk("VEVENT") if "RECURRENCE-ID" not in ev)


def raw_edit(w: GestureWorld, sid: str, lines: dict[str, str]) -> None:
    """Replace whole content lines of a CalDAV event (``{"DTSTART": "DTSTART:2026..."}``)."""
    human: Any = w.human
    rid = w.remote_id(sid)
    raw, etag = human._get(rid)
    text = raw.decode().replace("\r\n ", "")
    out = []
    for line in text.split("\r\n"):
        name = line.split(":", 1)[0].split(";", 1)[0].upper()
        out.append(lines.pop(name) if name in lines and not line.startswith("BEGIN") else line)
    assert not lines, f"no {sorted(lines)} line in the event"
    human._put(rid, "\r\n".join(out).encode(), etag)


def mark_cancelled(w: GestureWorld, sid: str) -> None:
    """STATUS:CANCELLED, as Thunderbird and Outlook write a cancel (Google: status)."""
    rid = w.remote_id(sid)
    if is_google(w):
        w.fake._human_write(CAL, rid, lambda b: b.update(status="cancelled"))  # type: ignore[attr-defined]
        return
    if is_graph(w):  # Outlook leaves a cancelled meeting in the calendar: isCancelled
        graph: Any = w
        OutlookUser(graph.fake, UPN).set_cancelled(graph.human.graph_id(rid))
        return
    human: Any = w.human
    human._edit(rid, lambda ev: (ev.pop("STATUS", None), ev.add("STATUS", "CANCELLED")))


def copy_event(w: GestureWorld, sid: str, shift: timedelta) -> str:
    """A client's duplicate: a new UID and id, the same notes and X- properties, moved."""
    rid = w.remote_id(sid)
    if is_graph(w):
        pytest.skip("Outlook's copy of an event is a new event without syncd's properties")
    if is_google(w):
        fake: Any = w.fake  # type: ignore[attr-defined]
        body = copy.deepcopy(fake.get_event_raw(CAL, rid))
        for key in ("id", "iCalUID", "etag"):
            body.pop(key, None)
        for part in ("start", "end"):
            t = datetime.fromisoformat(body[part]["dateTime"].replace("Z", "+00:00")) + shift
            body[part] = {"dateTime": t.isoformat(), "timeZone": "UTC"}
        with fake.lock:
            created = fake.state.insert_event(CAL, body, None)
        return str(created["id"])
    human: Any = w.human
    raw, _ = human._get(rid)
    cal = Calendar.from_ical(raw)
    ev = _master(cal)
    uid = f"{uuid.uuid4()}@client.example"
    start, end = ev.decoded("DTSTART") + shift, ev.decoded("DTEND") + shift
    for name in ("UID", "DTSTART", "DTEND"):
        ev.pop(name, None)
    ev.add("UID", uid)
    ev.add("DTSTART", start)
    ev.add("DTEND", end)
    new_rid = rid.rsplit("/", 1)[0] + f"/{uid}.ics"
    status, _, body = w.server.request(  # type: ignore[attr-defined]
        "PUT",
        human._url(new_rid),
        relayout(cal),
        {"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"},
    )
    assert status in (200, 201, 204), (status, body[:200])
    return new_rid


def sequence_of(w: GestureWorld, sid: str) -> int:
    """The SEQUENCE the server stores for the session's event."""
    if is_graph(w):
        pytest.skip("Microsoft Graph events have no SEQUENCE")
    if is_google(w):
        return int(w.fake.get_event_raw(CAL, w.remote_id(sid)).get("sequence") or 0)  # type: ignore[attr-defined]
    human: Any = w.human
    raw, _ = human._get(w.remote_id(sid))
    return int(_master(Calendar.from_ical(raw)).get("SEQUENCE", 0))


def raw_of(w: GestureWorld, sid: str) -> bytes:
    """The stored object (CalDAV) or resource (Google, Graph), for byte comparisons."""
    if is_graph(w):
        graph: Any = w
        return repr(graph.fake.stored(UPN, graph.human.graph_id(w.remote_id(sid)))).encode()
    if is_google(w):
        return repr(w.fake.get_event_raw(CAL, w.remote_id(sid))).encode()  # type: ignore[attr-defined]
    human: Any = w.human
    raw, _ = human._get(w.remote_id(sid))
    return bytes(raw)
