"""Application services: every way a session changes, in one transaction each.

The CLI, the REST API, the customer page and the sync engine all go through here, so the
same rules, history and outbox rows apply whoever acts. Functions named ``*_in`` work inside
a transaction the caller holds (the engine commits gestures with its cursor).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session as Orm

from syncd.domain import sessions as rules
from syncd.domain import validate
from syncd.domain.availability import within_weekly
from syncd.domain.model import (
    ADMIN_ACTORS,
    Actor,
    Admin,
    Customer,
    Session,
    Status,
    Transition,
    WeeklyWindow,
)
from syncd.domain.timefmt import human
from syncd.errors import NotFoundError, Refused, UsageError
from syncd.notify.links import derive_token, link_extra
from syncd.notify.links import token_hash as token_hash
from syncd.notify.outbox import enqueue
from syncd.services.others import transition
from syncd.store.context import Context
from syncd.store.models import AdminRow, ChoiceTokenRow, SessionRow
from syncd.store.repo import (
    add_history,
    admin_from_row,
    get_admin_row,
    live_sessions_of,
    load_session,
    load_session_row,
    load_sessions,
    open_tokens,
    upsert_customer,
    weekly_to_json,
    write_transition,
)


def check_tz(tz: str) -> str:
    """``tz`` if it names an IANA time zone, else UsageError."""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise UsageError(
            f'"{tz}" is not a time zone (use an IANA name like Europe/Berlin)'
        ) from err
    return tz


def new_session_id() -> str:
    """``s_`` and 16 lowercase base32 characters (80 random bits)."""
    return "s_" + base64.b32encode(secrets.token_bytes(10)).decode().lower()


# --- admins -------------------------------------------------------------------------------


def add_admin(
    ctx: Context,
    email: str,
    name: str,
    tz: str,
    reschedule_cutoff: timedelta | None = None,
    cancel_cutoff: timedelta | None = None,
) -> Admin:
    """Register an admin with the configured policy defaults."""
    check_tz(tz)
    email = validate.email(email)
    name = validate.name(name, "admin name")
    p = ctx.policy
    with ctx.db.write() as orm:
        if orm.scalars(select(AdminRow).where(AdminRow.email == email)).first():
            raise Refused(f"There is already an admin {email}.")
        row = AdminRow(
            email=email,
            name=name,
            tz=tz,
            reschedule_cutoff_s=int((reschedule_cutoff or p.reschedule_cutoff).total_seconds()),
            cancel_cutoff_s=int((cancel_cutoff or p.cancel_cutoff).total_seconds()),
            min_notice_s=int(p.min_notice.total_seconds()),
            choose_link_ttl_s=int(p.choose_link_ttl.total_seconds()),
            default_cancel_reason=p.default_cancel_reason,
            weekly={"windows": []},
            slot_minutes=60,
            created_at=ctx.clock(),
        )
        orm.add(row)
        orm.flush()
        return admin_from_row(row)


def set_availability(
    ctx: Context, email: str, windows: list[WeeklyWindow], slot: timedelta
) -> Admin:
    """Replace the admin's weekly availability and slot length (5 minutes to 24 hours)."""
    validate.slot_length(slot)
    with ctx.db.write() as orm:
        row = get_admin_row(orm, email, lock=True)
        row.weekly = weekly_to_json(windows)
        row.slot_minutes = int(slot.total_seconds() // 60)
        return admin_from_row(row)


def list_admins(ctx: Context) -> list[Admin]:
    """Every admin, by email."""
    with ctx.db.read() as orm:
        return [admin_from_row(r) for r in orm.scalars(select(AdminRow).order_by(AdminRow.email))]


def get_admin(ctx: Context, email: str) -> Admin:
    """One admin, or NotFoundError."""
    with ctx.db.read() as orm:
        return admin_from_row(get_admin_row(orm, email))


# --- sessions -----------------------------------------------------------------------------


def book(
    ctx: Context,
    admin_email: str,
    customer: Customer,
    start: datetime,
    end: datetime,
    actor: Actor = Actor.CUSTOMER,
) -> Session:
    """Book a session; two bookings of one slot at once: exactly one wins.

    A customer (or the platform, ``api``) books only inside the admin's weekly
    availability; the admin books anywhere. An admin with no weekly windows at all has not
    set availability up, and takes bookings at any time.
    """
    check_tz(customer.tz)
    customer = Customer(validate.email(customer.email), validate.name(customer.name), customer.tz)
    validate.session_length(end - start)
    now = ctx.clock()
    with ctx.db.write() as orm:
        admin_row = get_admin_row(orm, admin_email, lock=True)
        admin = admin_from_row(admin_row)
        if actor not in ADMIN_ACTORS and admin.weekly and not within_weekly(admin, start, end):
            raise Refused(
                f"{human(start, customer.tz)} is outside {admin.name}'s availability; "
                "please pick another time."
            )
        sid = new_session_id()
        t = rules.book(
            sid,
            admin,
            customer,
            start,
            end,
            now,
            live_sessions_of(orm, admin_row.id, overlapping=(start, end)),
            actor,
        )
        cust = upsert_customer(orm, admin_row.id, customer)
        orm.add(
            SessionRow(
                id=sid,
                admin_id=admin_row.id,
                customer_id=cust.id,
                start=t.after.start,
                end=t.after.end,
                status=t.after.status.value,
                sequence=0,
                created_at=now,
                updated_at=now,
            )
        )
        orm.flush()
        record(orm, ctx, t, admin, now)
        return t.after


def record(
    orm: Orm,
    ctx: Context,
    t: Transition,
    admin: Admin,
    now: datetime,
    tokens: Sequence[ChoiceTokenRow] | None = None,
) -> None:
    """History, token bookkeeping and outbox rows of one transition (one :func:`decide`
    made, or a booking's).

    ``tokens``: the session's unused tokens as the caller read them in this transaction
    (:func:`syncd.store.repo.open_tokens`), or None to read them here.
    """
    if t.before is not None:
        write_transition(orm, t, now)
    else:
        add_history(orm, t.after.id, t.entry)
    if tokens is None:
        tokens = open_tokens(orm, [t.after.id])[t.after.id]
    # Any transition retires the session's outstanding links; "let choose" issues a new one.
    for tok in tokens:
        if tok.expires_at > now:
            tok.expires_at = now
            tok.expiry_notified = True
    extra = None
    if (
        t.after.status is Status.AWAITING_CUSTOMER
        and t.before is not None
        and (
            t.before.status is not Status.AWAITING_CUSTOMER
            or t.entry.action == "let_customer_choose"
        )
    ):
        # The token is derived from this row under the link secret, never stored: the row
        # keeps only its hash, the outbox row only the reference (notify/links.py).
        tok = ChoiceTokenRow(
            session_id=t.after.id,
            token_hash="pending:" + secrets.token_hex(16),
            created_at=now,
            expires_at=now + admin.policy.choose_link_ttl,
        )
        orm.add(tok)
        orm.flush()
        tok.token_hash = token_hash(derive_token(ctx.link_key(), tok.id, t.after.id))
        extra = link_extra(ctx.public_url, tok.id, t.after.id)
    enqueue(orm, t.notices, t.after, admin, ctx.uid(t.after.id), now, ctx.host, extra)


def act_in(
    orm: Orm,
    ctx: Context,
    session_id: str,
    make: Callable[[Session, Admin, list[Session]], Transition],
    now: datetime,
    loaded: tuple[Session, AdminRow, SessionRow] | None = None,
) -> Transition:
    """Load, apply ``make`` and record one transition inside the caller's transaction.

    ``loaded``: the session with its admin row and row as the caller already read them in
    this transaction, under ``load_session_row(..., lock=True)`` and with the admin's row
    locked too (the sync engine reads them first to tell a reschedule to the session's own
    time, and locks the admin once for all the gestures it commits together).
    """
    if loaded is None:
        loaded = load_session_row(orm, session_id, lock=True)
        get_admin_row(orm, loaded[1].email, lock=True)
    admin = admin_from_row(loaded[1])
    t = decide(orm, loaded, admin, make)
    record(orm, ctx, t, admin, now)
    return t


def decide(
    orm: Orm,
    loaded: tuple[Session, AdminRow, SessionRow],
    admin: Admin,
    make: Callable[[Session, Admin, list[Session]], Transition],
) -> Transition:
    """The transition ``make`` makes of a session read under lock (``load_session_row``;
    ``admin`` is its admin row's), or its refusal: nothing is written, so a refusal
    leaves the transaction as it was."""
    session, admin_row, _row = loaded
    return transition(orm, admin_row.id, session, admin, make)


def _act(
    ctx: Context, session_id: str, make: Callable[[Session, Admin, list[Session]], Transition]
) -> Session:
    now = ctx.clock()
    with ctx.db.write() as orm:
        return act_in(orm, ctx, session_id, make, now).after


def reschedule(
    ctx: Context,
    session_id: str,
    start: datetime,
    end: datetime | None = None,
    actor: Actor = Actor.CUSTOMER,
) -> Session:
    """Move a session ("Choose New Time"); ``end`` defaults to keeping the duration."""
    now = ctx.clock()

    def make(s: Session, a: Admin, others: list[Session]) -> Transition:
        new_end = end if end is not None else start + (s.end - s.start)
        return rules.reschedule(s, a, start, new_end, actor, now, others)

    return _act(ctx, session_id, make)


def let_customer_choose(
    ctx: Context, session_id: str, message: str, actor: Actor = Actor.ADMIN
) -> Session:
    """Admin "Let Customer Choose": email the customer a single-use link."""
    message = validate.one_line(message, "message for the customer")
    now = ctx.clock()
    return _act(
        ctx, session_id, lambda s, a, _o: rules.let_customer_choose(s, a, message, actor, now)
    )


def cancel(ctx: Context, session_id: str, reason: str, actor: Actor = Actor.CUSTOMER) -> Session:
    """Cancel a session; customers are bound by the cancel cut-off."""
    reason = validate.one_line(reason, "reason", required=actor in ADMIN_ACTORS)
    now = ctx.clock()
    return _act(ctx, session_id, lambda s, a, _o: rules.cancel(s, a, reason, actor, now))


def show(ctx: Context, session_id: str) -> Session:
    """One session with its history."""
    with ctx.db.read() as orm:
        return load_session(orm, session_id)[0]


def list_sessions(
    ctx: Context, admin_email: str | None = None, status: str | None = None
) -> list[Session]:
    """Sessions by start time, optionally of one admin and one status."""
    if status is not None and status not in {s.value for s in Status}:
        raise UsageError(f'"{status}" is not a status (use booked, awaiting_customer, canceled)')
    with ctx.db.read() as orm:
        stmt = select(SessionRow).order_by(SessionRow.start)
        if admin_email:
            stmt = stmt.where(SessionRow.admin_id == get_admin_row(orm, admin_email).id)
        if status:
            stmt = stmt.where(SessionRow.status == status)
        return load_sessions(orm, orm.scalars(stmt).all())


def find_session(orm: Orm, session_id: str) -> SessionRow:
    """The session row or NotFoundError."""
    row = orm.get(SessionRow, session_id)
    if row is None:
        raise NotFoundError(f"There is no session {session_id}.")
    return row
