"""The state machine of a session and the cut-off policy.

booked -> awaiting_customer -> booked, and any live state -> canceled. Every transition
bumps ``sequence``, appends a history line with its actor and returns the notices it
causes. Customer actions are bound by the admin's cut-offs; admin actions never are.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from syncd.domain.model import (
    ADMIN_ACTORS,
    Actor,
    Admin,
    Customer,
    HistoryEntry,
    Notice,
    NoticeKind,
    Session,
    Status,
    Transition,
)
from syncd.domain.timefmt import human
from syncd.errors import Refused, UsageError


def _notice(kind: NoticeKind, session: Session, **data: Any) -> Notice:
    return Notice(kind, session.id, MappingProxyType(dict(data)))


def _check_shape(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise UsageError("Times need an offset or Z (e.g. 2026-12-01T15:00:00Z).")
    if end <= start:
        raise UsageError("A session must end after it starts.")


def _check_overlap(
    start: datetime, end: datetime, others: Iterable[Session], own: str, tz: str = "UTC"
) -> None:
    """Refuse an overlap, naming the other session's time in ``tz`` (the reader's zone)."""
    for other in others:
        if other.id != own and other.live and other.start < end and start < other.end:
            raise Refused(
                f"That time overlaps session {other.id} "
                f"({human(other.start, tz)} to {other.end.astimezone(ZoneInfo(tz)):%H:%M})."
            )


def _reader_tz(admin: Admin, customer_tz: str, actor: Actor) -> str:
    """The zone a refusal is read in: the admin's for the admin, else the customer's."""
    return admin.tz if actor in ADMIN_ACTORS else customer_tz


def _check_cutoff(
    session: Session, cutoff: timedelta, now: datetime, verb: str, actor: Actor
) -> None:
    if actor in ADMIN_ACTORS:
        return
    deadline = session.start - cutoff
    if now > deadline:
        hours = int(cutoff.total_seconds() // 3600)
        span = f"{hours} hours" if hours else f"{int(cutoff.total_seconds() // 60)} minutes"
        raise Refused(
            f"This session can no longer be {verb} by the customer: it could be {verb} "
            f"until {span} before it starts, {human(deadline, session.customer.tz)}."
        )


def _require_live(session: Session, verb: str) -> None:
    if session.status is Status.CANCELED:
        raise Refused(f"Session {session.id} is canceled and cannot be {verb}.")


def book(
    session_id: str,
    admin: Admin,
    customer: Customer,
    start: datetime,
    end: datetime,
    now: datetime,
    others: Iterable[Session],
    actor: Actor = Actor.CUSTOMER,
) -> Transition:
    """Book a new session; refuses a time in the past or overlapping a live session."""
    _check_shape(start, end)
    if start <= now:
        raise Refused("A session cannot be booked in the past.")
    _check_overlap(start, end, others, session_id, _reader_tz(admin, customer.tz, actor))
    entry = HistoryEntry(now, actor, "booked", None, start)
    session = Session(
        id=session_id,
        admin_email=admin.email,
        customer=customer,
        start=start,
        end=end,
        status=Status.BOOKED,
        sequence=0,
        history=(entry,),
    )
    return Transition(None, session, entry, (_notice(NoticeKind.BOOKED, session),))


def reschedule(
    session: Session,
    admin: Admin,
    new_start: datetime,
    new_end: datetime,
    actor: Actor,
    now: datetime,
    others: Iterable[Session] = (),
) -> Transition:
    """Move a session ("Choose New Time"); the customer is bound by ``reschedule_cutoff``."""
    _check_shape(new_start, new_end)
    _require_live(session, "rescheduled")
    _check_cutoff(session, admin.policy.reschedule_cutoff, now, "rescheduled", actor)
    if new_start <= now:
        raise Refused("A session cannot be moved into the past.")
    if actor not in ADMIN_ACTORS:
        tz = _reader_tz(admin, session.customer.tz, actor)
        _check_overlap(new_start, new_end, others, session.id, tz)
    return _moved(session, new_start, new_end, actor, now, "rescheduled", NoticeKind.RESCHEDULED)


def _moved(
    session: Session,
    new_start: datetime,
    new_end: datetime,
    actor: Actor,
    now: datetime,
    action: str,
    kind: NoticeKind,
) -> Transition:
    """The session booked at a new time; the notice carries the old time too."""
    entry = HistoryEntry(now, actor, action, session.start, new_start)
    after = replace(
        session,
        start=new_start,
        end=new_end,
        status=Status.BOOKED,
        sequence=session.sequence + 1,
        choose_message=None,
        history=(*session.history, entry),
    )
    notice = _notice(
        kind, after, old_start=session.start.isoformat(), old_end=session.end.isoformat()
    )
    return Transition(session, after, entry, (notice,))


def let_customer_choose(
    session: Session, admin: Admin, message: str, actor: Actor, now: datetime
) -> Transition:
    """Admin "Let Customer Choose": the session waits for the customer to pick a new time."""
    if actor not in ADMIN_ACTORS:
        raise Refused("Only the admin can let the customer choose a new time.")
    if not message.strip():
        raise UsageError("Letting the customer choose needs a message for them.")
    _require_live(session, "rescheduled")
    entry = HistoryEntry(now, actor, "let_customer_choose", session.start, None, message)
    after = replace(
        session,
        status=Status.AWAITING_CUSTOMER,
        sequence=session.sequence + 1,
        choose_message=message,
        history=(*session.history, entry),
    )
    notice = _notice(
        NoticeKind.CHOOSE,
        after,
        message=message,
        expires=(now + admin.policy.choose_link_ttl).isoformat(),
    )
    return Transition(session, after, entry, (notice,))


def customer_choose(
    session: Session,
    admin: Admin,
    new_start: datetime,
    new_end: datetime,
    now: datetime,
    others: Iterable[Session],
) -> Transition:
    """The customer picked a slot from the link: the session is booked at the new time."""
    _check_shape(new_start, new_end)
    if session.status is not Status.AWAITING_CUSTOMER:
        raise Refused("This session is not waiting for a new time any more.")
    if new_start < now + admin.policy.min_notice:
        raise Refused("That time is too soon; please pick a later one.")
    _check_overlap(new_start, new_end, others, session.id, session.customer.tz)
    return _moved(
        session, new_start, new_end, Actor.CUSTOMER, now, "chose_new_time", NoticeKind.CONFIRMED
    )


def cancel(session: Session, admin: Admin, reason: str, actor: Actor, now: datetime) -> Transition:
    """Cancel; the customer is bound by ``cancel_cutoff``; an admin must give a reason."""
    _require_live(session, "canceled again")
    if actor in ADMIN_ACTORS and not reason.strip():
        raise UsageError("An admin cancel needs a reason for the customer.")
    _check_cutoff(session, admin.policy.cancel_cutoff, now, "canceled", actor)
    entry = HistoryEntry(now, actor, "canceled", session.start, None, reason or None)
    after = replace(
        session,
        status=Status.CANCELED,
        sequence=session.sequence + 1,
        cancel_reason=reason or None,
        choose_message=None,
        history=(*session.history, entry),
    )
    return Transition(session, after, entry, (_notice(NoticeKind.CANCELED, after, reason=reason),))
