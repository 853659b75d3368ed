"""What ``syncd breaker release|restore`` does to a calendar whose breaker tripped."""

from __future__ import annotations

from sqlalchemy.orm import Session as Orm

from syncd.domain import sessions as rules
from syncd.domain.model import Actor, Admin, Session, Transition
from syncd.engine import state
from syncd.errors import Refused
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.models import CalendarRow, IntentRow


def _tripped(orm: Orm, calendar_id: int) -> tuple[CalendarRow, list[IntentRow]]:
    """The calendar (locked) and the deletions its breaker holds; Refused if not tripped."""
    cal = state.get_calendar(orm, calendar_id, lock=True)
    held = state.held_intents(orm, cal.id)
    if cal.breaker_tripped_at is None and not held:
        raise Refused(f"The breaker of calendar {cal.id} is not tripped.")
    return cal, held


def release(ctx: Context, calendar_id: int) -> list[str]:
    """Apply every held cancellation (the admin really deleted them); the canceled ids.

    The breaker holds every pending removal when it trips, due or not, so this acts on
    all the sessions its alert named.
    """
    now = ctx.clock()
    done: list[str] = []

    def make(s: Session, a: Admin, _others: list[Session]) -> Transition:
        return rules.cancel(s, a, a.policy.default_cancel_reason, Actor.ADMIN_CALENDAR, now)

    with ctx.db.write() as orm:
        cal, held = _tripped(orm, calendar_id)
        for intent in held:
            try:
                with orm.begin_nested():
                    services.act_in(orm, ctx, intent.session_id, make, now)
                done.append(intent.session_id)
            except Refused:
                pass  # canceled meanwhile by someone else: nothing more to tell
            mirror = state.mirror_row(orm, cal.id, intent.session_id)
            if mirror is not None and intent.payload.get("verified"):
                mirror.gone = True
            # else the removal was held before its fresh read: the next cycle deletes
            # whatever is left of the event (a missing event is no error).
            orm.delete(intent)
        cal.breaker_tripped_at = None
    return done


def restore(ctx: Context, calendar_id: int) -> list[str]:
    """Forget the held deletions so the next sync writes the events again; their ids."""
    restored: list[str] = []
    with ctx.db.write() as orm:
        cal, held = _tripped(orm, calendar_id)
        for intent in held:
            mirror = state.mirror_row(orm, cal.id, intent.session_id)
            if mirror is not None:
                mirror.written_etag = mirror.written_hash = mirror.seen_etag = None
                mirror.written_start = mirror.written_end = None
                mirror.settled = False  # planned again by the next cycle, however small
            restored.append(intent.session_id)
            orm.delete(intent)
        cal.breaker_tripped_at = None
    return restored
