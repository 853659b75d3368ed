"""An admin's weekly availability and the free slots a customer may pick."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from syncd.domain.model import Admin, Session, WeeklyWindow
from syncd.errors import UsageError

MIN_STEP = timedelta(minutes=1)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPEC = re.compile(
    r"^\s*(?P<d1>[a-z]{3})(?:-(?P<d2>[a-z]{3}))?\s+"
    r"(?P<h1>\d{1,2}):(?P<m1>\d{2})-(?P<h2>\d{1,2}):(?P<m2>\d{2})\s*$"
)


def parse_weekly(spec: str) -> list[WeeklyWindow]:
    """Parse ``"mon-fri 09:00-17:00"`` (or one day, ``"sat 10:00-12:00"``)."""
    m = _SPEC.match(spec.lower())
    bad = f'"{spec}" is not a weekly window (use e.g. "mon-fri 09:00-17:00")'
    if not m or m["d1"] not in DAYS or (m["d2"] and m["d2"] not in DAYS):
        raise UsageError(bad)
    try:
        start = time(int(m["h1"]), int(m["m1"]))
        end = time(int(m["h2"]), int(m["m2"])) if m["h2"] != "24" else time(23, 59)
    except ValueError as err:
        raise UsageError(bad) from err
    if end <= start:
        raise UsageError(bad)
    first = DAYS.index(m["d1"])
    last = DAYS.index(m["d2"]) if m["d2"] else first
    days = range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)]
    return [WeeklyWindow(d, start, end) for d in days]


def format_weekly(windows: Sequence[WeeklyWindow]) -> list[str]:
    """One ``"mon 09:00-17:00"`` string per window."""
    return [f"{DAYS[w.weekday]} {w.start:%H:%M}-{w.end:%H:%M}" for w in windows]


def _overlaps(start: datetime, end: datetime, busy: Sequence[tuple[datetime, datetime]]) -> bool:
    return any(b_start < end and start < b_end for b_start, b_end in busy)


def _openings(admin: Admin, first: date, last: date) -> Iterator[tuple[datetime, datetime]]:
    """Every weekly window from ``first`` to ``last`` (local days) as UTC instants."""
    zone = ZoneInfo(admin.tz)
    day = first
    while day <= last:
        for window in admin.weekly:
            if window.weekday == day.weekday():
                opens = datetime.combine(day, window.start, zone).astimezone(UTC)
                closes = datetime.combine(day, window.end, zone).astimezone(UTC)
                if closes > opens:
                    yield opens, closes
        day += timedelta(days=1)


def within_weekly(admin: Admin, start: datetime, end: datetime) -> bool:
    """True when ``start``–``end`` lies inside one of the admin's weekly windows."""
    zone = ZoneInfo(admin.tz)
    day = start.astimezone(zone).date()
    return any(
        opens <= start and end <= closes
        for opens, closes in _openings(admin, day - timedelta(days=1), day)
    )


def free_slots(
    admin: Admin,
    now: datetime,
    until: datetime,
    sessions: Iterable[Session],
    busy: Iterable[tuple[datetime, datetime]] = (),
    ignore_session: str | None = None,
    length: timedelta | None = None,
) -> list[tuple[datetime, datetime]]:
    """Free slots (UTC) from ``now + min_notice`` to ``until``.

    Slots start every ``admin.slot`` from the opening of each weekly window and last
    ``length`` (the session's own length; by default one slot). Windows are read in the
    admin's zone, so a 09:00 opening stays 09:00 local across a daylight-saving change,
    while each slot is computed on instants: no zero-length slot on the spring change, no
    two-hour one on the autumn change. Live sessions (except ``ignore_session``) and
    ``busy`` block.
    """
    span = length or admin.slot
    if admin.slot < MIN_STEP or span <= timedelta(0):
        return []  # a slot of no length would never end the loop below
    zone = ZoneInfo(admin.tz)
    earliest = now + admin.policy.min_notice
    blocked = [(s.start, s.end) for s in sessions if s.live and s.id != ignore_session]
    blocked.extend(busy)
    slots: set[tuple[datetime, datetime]] = set()
    first, last = now.astimezone(zone).date(), until.astimezone(zone).date()
    for opens, closes in _openings(admin, first, last):
        cursor = opens
        while cursor + span <= closes:
            end = cursor + span
            if cursor >= earliest and end <= until and not _overlaps(cursor, end, blocked):
                slots.add((cursor, end))
            cursor += admin.slot
    return sorted(slots)
