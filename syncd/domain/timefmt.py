"""How times are shown to people: always in a named time zone."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo


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
