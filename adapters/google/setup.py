"""The first calls of ``syncd auth google``: probe the chosen calendar, or create "Bookings"."""

from __future__ import annotations

from typing import Any

from adapters.google.auth import BOOKINGS_SUMMARY
from adapters.google.backend import GoogleBackend
from syncd.ports import NotFound


def calendar_exists(
    creds: Any, api_endpoint: str, timeout: float, calendar_id: str, named: bool
) -> bool:
    """Whether the new token reaches ``calendar_id`` (calendars.get, or an events probe)."""
    backend = GoogleBackend(calendar_id, creds, api_endpoint, timeout=timeout)
    try:
        if named:  # calendar.events cannot read the calendar resource: probe its events
            backend.call(
                "events.list",
                lambda s: s.events().list(calendarId=calendar_id, maxResults=1, fields="items(id)"),
            )
        else:
            backend.call("calendars.get", lambda s: s.calendars().get(calendarId=calendar_id))
    except NotFound:
        return False
    finally:
        backend.close()
    return True


def create_bookings_calendar(creds: Any, api_endpoint: str, timeout: float, tz: str) -> str:
    """calendars.insert a "Bookings" calendar in the admin's zone; its id.

    Not retried: a lost answer would leave a second calendar behind.
    """
    backend = GoogleBackend("primary", creds, api_endpoint, timeout=timeout)
    try:
        res = backend.call(
            "calendars.insert",
            lambda s: s.calendars().insert(body={"summary": BOOKINGS_SUMMARY, "timeZone": tz}),
            retry=False,
        )
    finally:
        backend.close()
    return str(res["id"])
