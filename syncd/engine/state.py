"""Loading and saving the engine's state: calendars, mirror rows, pending intents."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session as Orm

from syncd.domain.model import Admin, Session, Status
from syncd.engine.planner import MirrorState, PendingIntent
from syncd.errors import NotFoundError
from syncd.store.models import AdminRow, CalendarRow, IntentRow, MirrorRow, SessionRow
from syncd.store.repo import admin_from_row, load_sessions


@dataclass(frozen=True)
class CalendarState:
    """One calendar's state as the planner needs it."""

    calendar_id: int
    backend: str
    cursor: str | None
    breaker_tripped: bool
    admin: Admin
    sessions: dict[str, Session]
    mirrors: dict[str, MirrorState]
    intents: dict[str, PendingIntent]
    reconciled_at: datetime | None = None
    recent_removals: dict[str, datetime] = field(default_factory=dict)


def get_calendar(orm: Orm, calendar_id: int, lock: bool = False) -> CalendarRow:
    """The calendar row, or NotFoundError."""
    stmt = select(CalendarRow).where(CalendarRow.id == calendar_id)
    if lock:
        stmt = stmt.with_for_update()
    row = orm.scalars(stmt).first()
    if row is None:
        raise NotFoundError(f"There is no calendar {calendar_id} (see 'syncd calendar list').")
    return row


def load_state(orm: Orm, calendar_id: int, now: datetime) -> CalendarState:
    """Sessions of the calendar's admin that matter now, with mirrors and intents."""
    cal = get_calendar(orm, calendar_id)
    admin = admin_from_row(orm.get_one(AdminRow, cal.admin_id))
    mirrors = {
        m.session_id: MirrorState(
            m.session_id, m.remote_id, m.written_etag, m.written_hash, m.seen_etag, m.gone
        )
        for m in orm.scalars(select(MirrorRow).where(MirrorRow.calendar_id == calendar_id))
    }
    not_gone = [sid for sid, m in mirrors.items() if not m.gone]
    rows = orm.scalars(
        select(SessionRow).where(
            SessionRow.admin_id == cal.admin_id,
            SessionRow.end > now - timedelta(days=1),
            or_(SessionRow.status != Status.CANCELED.value, SessionRow.id.in_(not_gone)),
        )
    ).all()
    sessions = {s.id: s for s in load_sessions(orm, rows, with_history=False)}
    intents = {
        i.session_id: PendingIntent(
            i.session_id,
            i.kind,  # type: ignore[arg-type]
            MappingProxyType(dict(i.payload)),
            i.observed_hash,
            i.first_seen,
            i.held,
        )
        for i in orm.scalars(select(IntentRow).where(IntentRow.calendar_id == calendar_id))
    }
    return CalendarState(
        calendar_id,
        cal.backend,
        cal.cursor,
        cal.breaker_tripped_at is not None,
        admin,
        sessions,
        {k: v for k, v in mirrors.items() if k in sessions},
        intents,
        cal.reconciled_at,
        removals_of(cal),
    )


def removals_of(cal: CalendarRow) -> dict[str, datetime]:
    """The removals recorded for the breaker's window (session id → when)."""
    out: dict[str, datetime] = {}
    for sid, at in (cal.recent_removals or {}).items():
        try:
            out[str(sid)] = datetime.fromisoformat(str(at))
        except ValueError:
            continue
    return out


def intents_snapshot(orm: Orm, calendar_id: int) -> dict[str, tuple[str, str, bool]]:
    """(kind, observed hash, held) of every pending intent, read under the caller's lock."""
    return {
        i.session_id: (i.kind, i.observed_hash, i.held)
        for i in orm.scalars(select(IntentRow).where(IntentRow.calendar_id == calendar_id))
    }


def mirror_row(orm: Orm, calendar_id: int, session_id: str) -> MirrorRow | None:
    """The mirror row of a session in a calendar, if any."""
    return orm.scalars(
        select(MirrorRow).where(
            MirrorRow.calendar_id == calendar_id, MirrorRow.session_id == session_id
        )
    ).first()


def save_intent(orm: Orm, calendar_id: int, intent: PendingIntent) -> None:
    """Insert or replace the pending intent of a session."""
    row = orm.scalars(
        select(IntentRow).where(
            IntentRow.calendar_id == calendar_id, IntentRow.session_id == intent.session_id
        )
    ).first()
    if row is None:
        row = IntentRow(calendar_id=calendar_id, session_id=intent.session_id)
        orm.add(row)
    row.kind = intent.kind
    row.payload = dict(intent.payload)
    row.observed_hash = intent.observed_hash
    row.first_seen = intent.first_seen
    row.held = intent.held


def drop_intent(orm: Orm, calendar_id: int, session_id: str) -> None:
    """Forget a session's pending intent."""
    orm.execute(
        delete(IntentRow).where(
            IntentRow.calendar_id == calendar_id, IntentRow.session_id == session_id
        )
    )


def held_intents(orm: Orm, calendar_id: int) -> list[IntentRow]:
    """Deletions the breaker holds in this calendar."""
    return list(
        orm.scalars(select(IntentRow).where(IntentRow.calendar_id == calendar_id, IntentRow.held))
    )
