"""An admin's weekly availability and the free slots a customer may pick."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from syncd.domain.model import Admin, Session, WeeklyWindow
from syncd.errors import UsageError

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


def free_slots(
    admin: Admin,
    now: datetime,
    until: datetime,
    sessions: Iterable[Session],
    busy: Iterable[tuple[datetime, datetime]] = (),
    ignore_session: str | None = None,
) -> list[tuple[datetime, datetime]]:
    """Free slots (UTC) of ``admin.slot`` length from ``now + min_notice`` to ``until``.

    Weekly windows are read in the admin's zone, so a 09:00 opening stays 09:00 local across
    a daylight-saving change. Live sessions (except ``ignore_session``) and ``busy`` block.
    """
    zone = ZoneInfo(admin.tz)
    earliest = now + admin.policy.min_notice
    blocked = [(s.start, s.end) for s in sessions if s.live and s.id != ignore_session]
    blocked.extend(busy)
    slots: list[tuple[datetime, datetime]] = []
    day: date = now.astimezone(zone).date()
    last_day = until.astimezone(zone).date()
    while day <= last_day:
        for window in admin.weekly:
            if window.weekday != day.weekday():
                continue
            cursor = datetime.combine(day, window.start, zone)
            close = datetime.combine(day, window.end, zone)
            while cursor + admin.slot <= close:
                start = cursor.astimezone(UTC)
                end = (cursor + admin.slot).astimezone(UTC)
                if start >= earliest and end <= until and not _overlaps(start, end, blocked):
                    slots.append((start, end))
                cursor += admin.slot
        day += timedelta(days=1)
    return sorted(set(slots))
