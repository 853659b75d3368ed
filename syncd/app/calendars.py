"""Calendar rows written by the setup commands (``auth google``, ``auth microsoft``, …)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from syncd.store.context import Context
from syncd.store.models import CalendarRow
from syncd.store.repo import get_admin_row


def register_calendar(
    ctx: Context, email: str, backend: str, settings: dict[str, Any], same: Sequence[str]
) -> int:
    """Add the admin's calendar row, or refresh the one whose ``same`` settings match.

    A refreshed row is unpaused: its credentials were just renewed. Returns the row id.
    """
    with ctx.db.write() as orm:
        admin = get_admin_row(orm, email)
        rows = orm.scalars(
            select(CalendarRow).where(
                CalendarRow.admin_id == admin.id, CalendarRow.backend == backend
            )
        )
        for row in rows:
            current = row.settings or {}
            if all(current.get(key) == settings[key] for key in same):
                row.settings = {**current, **settings}  # a new dict: SQLAlchemy sees the change
                row.paused_reason = None
                return row.id
        new = CalendarRow(
            admin_id=admin.id, backend=backend, settings=settings, busy_only=False, cursor_version=1
        )
        orm.add(new)
        orm.flush()
        return new.id
