"""How times are read from people and shown to them: instants with an offset in, named zones out."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from syncd.errors import UsageError

#: The years a time typed by a person may fall in (later ones overflow date arithmetic).
FIRST_YEAR, LAST_YEAR = 1970, 9000

#: History actions as a person reads them.
ACTION_WORDS = {
    "booked": "booked",
    "rescheduled": "rescheduled",
    "canceled": "canceled",
    "let_customer_choose": "let the customer choose",
    "chose_new_time": "customer chose a new time",
    "restored": "restored",
}


def action_words(action: str) -> str:
    """``let_customer_choose`` as ``let the customer choose`` (unknown ones de-underscored)."""
    return ACTION_WORDS.get(action, action.replace("_", " "))


def local(instant: datetime, tz: str) -> datetime:
    """``instant`` seen in ``tz``."""
    return instant.astimezone(ZoneInfo(tz))


def human(instant: datetime, tz: str) -> str:
    """E.g. ``Tue 1 Dec 2026, 16:00 CET (Europe/Berlin)``."""
    t = local(instant, tz)
    return f"{t:%a} {t.day} {t:%b %Y, %H:%M} {t.tzname()} ({tz})"


def iso_utc(instant: datetime) -> str:
    """``2026-12-01T15:00:00Z``."""
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """An ISO 8601 instant with an offset (``Z`` or ``+01:00``); refuses a local time."""
    try:
        value = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as err:
        raise UsageError(f'"{text}" is not an ISO 8601 time (e.g. 2026-12-01T15:00:00Z)') from err
    if value.tzinfo is None:
        raise UsageError(
            f'"{text}" has no offset; add Z or an offset like +01:00 so the instant is clear'
        )
    try:
        year = value.astimezone(UTC).year
    except OverflowError:
        year = value.year
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise UsageError(
            f'"{text}" is out of range: syncd takes times from {FIRST_YEAR} to {LAST_YEAR}'
        )
    return value.replace(microsecond=0)
