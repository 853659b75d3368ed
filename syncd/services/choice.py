"""The "choose a new time" link: what it offers, looking it up, and taking a slot.

A link offers the admin's free slots from ``min_notice`` after now until :data:`OFFER`
after the link was issued, each as long as the session itself, never the session's own
current time. Only a slot of that offer can be taken (a POST for a time the page never
showed is refused); taking it tells the admin by email and moves the calendar event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType

from sqlalchemy import select
from sqlalchemy.orm import Session as Orm

from syncd.domain import sessions as rules
from syncd.domain.availability import free_slots
from syncd.domain.model import Admin, Notice, NoticeKind, Session, Status, Transition
from syncd.errors import Refused
from syncd.notify.links import token_hash
from syncd.notify.outbox import enqueue
from syncd.services.booking import act_in
from syncd.store.context import Context
from syncd.store.models import ChoiceTokenRow
from syncd.store.repo import admin_from_row, load_session

#: How far ahead of the link's issue the page offers slots.
OFFER = timedelta(weeks=4)

Interval = tuple[datetime, datetime]


@dataclass(frozen=True)
class Choice:
    """A valid link: the session waiting for a time, its admin, and the link's window."""

    session: Session
    admin: Admin
    expires_at: datetime
    offer_until: datetime


class LinkInvalid(Refused):
    """The link is unknown, used, or expired; ``reason`` says which."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _token_row(orm: Orm, raw: str, now: datetime, lock: bool) -> ChoiceTokenRow:
    stmt = select(ChoiceTokenRow).where(ChoiceTokenRow.token_hash == token_hash(raw))
    if lock:
        stmt = stmt.with_for_update()
    tok = orm.scalars(stmt).first()
    if tok is None:
        raise LinkInvalid("unknown", "This link is not valid. Please check the address.")
    if tok.used_at is not None:
        raise LinkInvalid("used", "This link was already used to choose a new time.")
    if tok.expires_at <= now:
        raise LinkInvalid("expired", "This link has expired. Please contact your host.")
    return tok


def lookup_choice(ctx: Context, raw: str) -> Choice:
    """The session behind a link, without consuming it (GET never consumes)."""
    now = ctx.clock()
    with ctx.db.read() as orm:
        tok = _token_row(orm, raw, now, lock=False)
        session, admin_row = load_session(orm, tok.session_id)
        if session.status is not Status.AWAITING_CUSTOMER:
            raise LinkInvalid("used", "This session is no longer waiting for a new time.")
        return Choice(session, admin_from_row(admin_row), tok.expires_at, tok.created_at + OFFER)


def offered_slots(
    choice: Choice, now: datetime, others: Sequence[Session], busy: Sequence[Interval] = ()
) -> list[Interval]:
    """The slots the link offers now: free, as long as the session, not its current time."""
    s = choice.session
    return free_slots(
        choice.admin,
        now,
        choice.offer_until,
        others,
        [*busy, (s.start, s.end)],
        ignore_session=s.id,
        length=s.end - s.start,
    )


def consume_choice(
    ctx: Context, raw: str, start: datetime, busy: Sequence[Interval] = ()
) -> Session:
    """Consume the link and book the picked slot, atomically with its outbox rows.

    The slot must be one the link offers and still be free: weekly availability, other
    live sessions, ``min_notice`` and ``busy`` (intervals read from the admin's busy-only
    calendars). The customer gets the "confirmed" email, the admin a "customer chose" one.
    """
    now = ctx.clock()
    with ctx.db.write() as orm:
        tok = _token_row(orm, raw, now, lock=True)
        tok.used_at = now
        offer_until = tok.created_at + OFFER

        def make(s: Session, a: Admin, others: list[Session]) -> Transition:
            end = start + (s.end - s.start)
            choice = Choice(s, a, tok.expires_at, offer_until)
            if (start, end) not in offered_slots(choice, now, others, busy):
                raise Refused("That time is no longer free; please pick one of the times shown.")
            return rules.customer_choose(s, a, start, end, now, others)

        t = act_in(orm, ctx, tok.session_id, make, now)
        session, admin_row = load_session(orm, tok.session_id)
        notice = Notice(
            NoticeKind.CUSTOMER_CHOSE,
            session.id,
            MappingProxyType({"old_start": t.before.start.isoformat() if t.before else None}),
        )
        admin = admin_from_row(admin_row)
        enqueue(orm, [notice], t.after, admin, ctx.uid(session.id), now, ctx.host)
        return t.after
