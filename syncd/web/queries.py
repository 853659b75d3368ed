"""Read-only queries the web side needs that ``syncd.services`` does not offer.

They only read; every change still goes through ``syncd.services`` so the rules, history
and outbox rows are the same whoever acts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from syncd.domain.model import Session
from syncd.ports import BackendFactory
from syncd.store.context import Context
from syncd.store.models import AdminRow, CalendarRow, IntentRow, OutboxRow, SessionRow
from syncd.store.repo import get_admin_row, live_sessions_of

log = logging.getLogger(__name__)

Interval = tuple[datetime, datetime]


def other_live_sessions(ctx: Context, admin_email: str, exclude: str) -> list[Session]:
    """The admin's booked and awaiting sessions except ``exclude`` (they block slots)."""
    with ctx.db.read() as orm:
        admin = get_admin_row(orm, admin_email)
        return live_sessions_of(orm, admin.id, exclude=exclude)


@dataclass(frozen=True)
class BusyCalendar:
    """A busy-only calendar of an admin: where to read the busy time from."""

    id: int
    backend: str
    settings: dict[str, Any]


def busy_calendars(ctx: Context, admin_email: str) -> list[BusyCalendar]:
    """The admin's busy-only calendars (their events block slots on the customer page)."""
    with ctx.db.read() as orm:
        rows = orm.scalars(
            select(CalendarRow)
            .join(AdminRow, AdminRow.id == CalendarRow.admin_id)
            .where(AdminRow.email == admin_email.lower(), CalendarRow.busy_only.is_(True))
            .order_by(CalendarRow.id)
        ).all()
        return [BusyCalendar(r.id, r.backend, dict(r.settings or {})) for r in rows]


def busy_intervals(
    ctx: Context,
    open_backend: BackendFactory | None,
    admin_email: str,
    start: datetime,
    end: datetime,
) -> list[Interval]:
    """Busy time from the admin's busy-only calendars between ``start`` and ``end``.

    A calendar that fails to answer (down, timed out, bad credentials) is left out with a
    warning in the log: the customer still sees slots, and ``consume_choice`` re-checks
    with whatever could be read at that moment.
    """
    out: list[Interval] = []
    if open_backend is None:  # a web side started without calendar access (tests, tools)
        return out
    for cal in busy_calendars(ctx, admin_email):
        try:
            backend = open_backend(cal.backend, cal.settings)
            try:
                out.extend(backend.busy(start, end))
            finally:
                backend.close()
        except Exception as err:  # any failure of a peer must not take the page down
            log.warning(
                "busy-only calendar %s of %s did not answer; showing slots without it: %s",
                cal.id,
                admin_email,
                err,
            )
    return out


@dataclass
class Counts:
    """What ``/metrics`` reports, read in one transaction."""

    sessions: dict[str, int] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)
    calendars: int = 0
    calendars_with_error: int = 0
    breakers_tripped: int = 0
    pending_gestures: int = 0
    held_gestures: int = 0


def counts(ctx: Context) -> Counts:
    """Sessions by status, outbox rows by status, calendar health, pending gestures."""
    c = Counts()
    with ctx.db.read() as orm:
        for status, n in orm.execute(
            select(SessionRow.status, func.count()).group_by(SessionRow.status)
        ).all():
            c.sessions[str(status)] = int(n)
        for status, n in orm.execute(
            select(OutboxRow.status, func.count()).group_by(OutboxRow.status)
        ).all():
            c.outbox[str(status)] = int(n)
        c.calendars = int(orm.scalar(select(func.count()).select_from(CalendarRow)) or 0)
        c.calendars_with_error = int(
            orm.scalar(
                select(func.count())
                .select_from(CalendarRow)
                .where(CalendarRow.last_error.is_not(None))
            )
            or 0
        )
        c.breakers_tripped = int(
            orm.scalar(
                select(func.count())
                .select_from(CalendarRow)
                .where(CalendarRow.breaker_tripped_at.is_not(None))
            )
            or 0
        )
        c.pending_gestures = int(orm.scalar(select(func.count()).select_from(IntentRow)) or 0)
        c.held_gestures = int(
            orm.scalar(select(func.count()).select_from(IntentRow).where(IntentRow.held)) or 0
        )
    return c
