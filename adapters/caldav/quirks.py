"""What particular CalDAV servers get wrong, and the scheduling markers syncd writes.

Measured on Cyrus 3.6, DAViCal 1.1 and SOGo 5.8 (see ``docs/SERVERS.md``):

- SOGo ignores ``If-None-Match: *`` (a PUT overwrites) and a stale ``If-Match`` on DELETE,
  so syncd checks before it creates or deletes there; it also ignores
  ``SCHEDULE-AGENT=CLIENT`` and ``Schedule-Reply: F`` (it emails every attendee), so syncd
  does not write events that carry attendees there at all.
- Cyrus honours ``SCHEDULE-AGENT=CLIENT``, but an attendee it scheduled itself that turns
  ``CLIENT`` is one it stops handling: it emails that attendee a CANCEL. So syncd writes an
  event with an ORGANIZER there only when the client already marked everyone ``CLIENT``.
- DAViCal stores a second object with a UID that already exists, so syncd looks the UID up
  before it creates.
- DAViCal and SOGo answer an unknown sync token with a full listing (207, fresh token)
  instead of ``DAV:valid-sync-token``; the feed recognises one (see ``feed.py``).

Pure functions over ``icalendar`` for the scheduling parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from icalendar import Calendar

SCHEDULE_AGENT = "SCHEDULE-AGENT"
_PEOPLE = ("ORGANIZER", "ATTENDEE")


@dataclass(frozen=True)
class Quirks:
    """How far a server can be trusted; the defaults are a server that follows the RFCs."""

    name: str = "caldav"
    honours_preconditions: bool = True  # If-None-Match: * on PUT, If-Match on DELETE
    honours_schedule_agent: bool = True  # SCHEDULE-AGENT=CLIENT suppresses its iTIP mail
    unique_uids: bool = True  # refuses a second object with the same UID
    refuses_bad_tokens: bool = True  # an unknown sync token is an error, not a listing
    exact_tokens: bool = True  # tokens and ctags move on every change (SOGo: per second)
    quiet_client_switch: bool = True  # turning a server-scheduled ATTENDEE CLIENT sends nothing


SOGO = Quirks(
    "sogo",
    honours_preconditions=False,
    honours_schedule_agent=False,
    refuses_bad_tokens=False,
    exact_tokens=False,
)
DAVICAL = Quirks("davical", unique_uids=False, refuses_bad_tokens=False)
CYRUS = Quirks("cyrus", quiet_client_switch=False)
KNOWN = {q.name: q for q in (SOGO, DAVICAL, CYRUS, Quirks())}


def quirks_for(path: str, server: str = "") -> Quirks:
    """The quirks of the server named ``server`` (``sogo``, ``davical``, ``cyrus``), else
    guessed from the collection path (``/SOGo/dav/…``, ``/caldav.php/…``, ``/dav/calendars/…``
    as on Cyrus and Fastmail)."""
    if server:
        return KNOWN.get(server.lower(), Quirks())
    if "/SOGo/dav/" in path:
        return SOGO
    if "/caldav.php/" in path:
        return DAVICAL
    if path.startswith("/dav/calendars/"):
        return CYRUS
    return Quirks()


def _people(event: Any) -> list[Any]:
    out: list[Any] = []
    for name in _PEOPLE:
        value = event.get(name)
        if value is None:
            continue
        out.extend(value if isinstance(value, list) else [value])
    return out


def _events(data: bytes | str) -> list[Any]:
    try:
        return list(Calendar.from_ical(data).walk("VEVENT"))
    except Exception:  # unparseable: the caller's own parser reports it
        return []


def has_people(data: bytes | str) -> bool:
    """True when a VEVENT of the object names an ORGANIZER or an ATTENDEE."""
    return any(_people(ev) for ev in _events(data))


def server_scheduled(data: bytes | str) -> bool:
    """True when a VEVENT has an ORGANIZER and someone not marked ``SCHEDULE-AGENT=CLIENT``
    (the server schedules it: RFC 6638 scheduling object resource)."""
    for event in _events(data):
        if event.get("ORGANIZER") is None:
            continue
        for person in _people(event):
            params = getattr(person, "params", {})
            if str(params.get(SCHEDULE_AGENT, "SERVER")).upper() != "CLIENT":
                return True
    return False


def client_scheduled(data: bytes | str) -> tuple[bytes, bool]:
    """The object with ``SCHEDULE-AGENT=CLIENT`` on every ORGANIZER and ATTENDEE.

    Returns (data, changed): ``changed`` is false when every one already had it (then
    ``data`` is returned as given). RFC 6638: the server then sends no iTIP message for it.
    """
    raw = data.encode() if isinstance(data, str) else data
    try:
        cal = Calendar.from_ical(raw)
    except Exception:
        return raw, False
    changed = False
    for event in cal.walk("VEVENT"):
        for person in _people(event):
            params = getattr(person, "params", None)
            if params is None:
                continue
            if str(params.get(SCHEDULE_AGENT, "")).upper() != "CLIENT":
                params[SCHEDULE_AGENT] = "CLIENT"
                changed = True
    return (bytes(cal.to_ical()), True) if changed else (raw, False)
