"""Repositories: loading domain objects from rows and writing transitions back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session as Orm

from syncd.domain.model import (
    Actor,
    Admin,
    Customer,
    HistoryEntry,
    Policy,
    Session,
    Status,
    Transition,
    WeeklyWindow,
)
from syncd.errors import NotFoundError
from syncd.store.models import AdminRow, ChoiceTokenRow, CustomerRow, HistoryRow, SessionRow


def admin_from_row(row: AdminRow) -> Admin:
    """The domain admin of a row."""
    weekly = tuple(
        WeeklyWindow(int(w["weekday"]), _time(w["start"]), _time(w["end"]))
        for w in row.weekly.get("windows", [])
    )
    return Admin(
        email=row.email,
        name=row.name,
        tz=row.tz,
        policy=Policy(
            reschedule_cutoff=timedelta(seconds=row.reschedule_cutoff_s),
            cancel_cutoff=timedelta(seconds=row.cancel_cutoff_s),
            min_notice=timedelta(seconds=row.min_notice_s),
            choose_link_ttl=timedelta(seconds=row.choose_link_ttl_s),
            default_cancel_reason=row.default_cancel_reason,
        ),
        weekly=weekly,
        slot=timedelta(minutes=row.slot_minutes),
    )


def _time(text: str) -> time:
    hour, minute = text.split(":")
    return time(int(hour), int(minute))


def weekly_to_json(windows: Sequence[WeeklyWindow]) -> dict[str, object]:
    """The JSON stored in ``admins.weekly``."""
    return {
        "windows": [
            {"weekday": w.weekday, "start": f"{w.start:%H:%M}", "end": f"{w.end:%H:%M}"}
            for w in windows
        ]
    }


def get_admin_row(orm: Orm, email: str, lock: bool = False) -> AdminRow:
    """The admin with this email, or NotFoundError."""
    stmt = select(AdminRow).where(AdminRow.email == email.lower())
    if lock:
        stmt = stmt.with_for_update()
    row = orm.scalars(stmt).first()
    if row is None:
        raise NotFoundError(f"There is no admin {email} (see 'syncd admin list').")
    return row


def session_from_rows(
    row: SessionRow, customer: CustomerRow, admin_email: str, history: Sequence[HistoryRow]
) -> Session:
    """The domain session of its rows."""
    return Session(
        id=row.id,
        admin_email=admin_email,
        customer=Customer(customer.email, customer.name, customer.tz),
        start=row.start,
        end=row.end,
        status=Status(row.status),
        sequence=row.sequence,
        cancel_reason=row.cancel_reason,
        choose_message=row.choose_message,
        history=tuple(
            HistoryEntry(h.at, Actor(h.actor), h.action, h.from_start, h.to_start, h.detail)
            for h in history
        ),
    )


def load_session(
    orm: Orm, session_id: str, lock: bool = False, with_history: bool = True
) -> tuple[Session, AdminRow]:
    """A session with its admin row; ``lock`` takes a row lock (PostgreSQL) for a write.

    ``with_history=False`` leaves the history out (one query less), for a caller that only
    changes the session: a transition appends its entry whatever came before.
    """
    session, admin, _row = load_session_row(orm, session_id, lock, with_history)
    return session, admin


def load_session_row(
    orm: Orm, session_id: str, lock: bool = False, with_history: bool = True
) -> tuple[Session, AdminRow, SessionRow]:
    """:func:`load_session` and the session's row: a caller that writes a transition keeps
    the row, so :func:`write_transition` finds it in the ORM session instead of reading it
    again."""
    stmt = (
        select(SessionRow, CustomerRow)
        .join(CustomerRow, CustomerRow.id == SessionRow.customer_id)
        .where(SessionRow.id == session_id)
    )  # the customer in the same read
    if lock:
        stmt = stmt.with_for_update(of=SessionRow)
    found = orm.execute(stmt).first()
    if found is None:
        raise NotFoundError(f"There is no session {session_id} (see 'syncd session list').")
    row, customer = found
    admin = orm.get_one(AdminRow, row.admin_id)
    history: Sequence[HistoryRow] = ()
    if with_history:
        history = orm.scalars(
            select(HistoryRow).where(HistoryRow.session_id == row.id).order_by(HistoryRow.id)
        ).all()
    return session_from_rows(row, customer, admin.email, history), admin, row


def load_session_rows(
    orm: Orm, session_ids: Sequence[str], lock: bool = False
) -> dict[str, tuple[Session, AdminRow, SessionRow]]:
    """:func:`load_session_row` without history for many sessions, a read per 500.

    With ``lock`` the rows are locked in id order (as one statement locks them), so two
    transactions locking some of the same sessions wait for each other rather than
    deadlock. Ids that name no session are absent from the result.
    """
    out: dict[str, tuple[Session, AdminRow, SessionRow]] = {}
    ids = sorted(set(session_ids))
    for i in range(0, len(ids), 500):
        stmt = (
            select(SessionRow, CustomerRow)
            .join(CustomerRow, CustomerRow.id == SessionRow.customer_id)
            .where(SessionRow.id.in_(ids[i : i + 500]))
            .order_by(SessionRow.id)
        )
        if lock:
            stmt = stmt.with_for_update(of=SessionRow)
        for row, customer in orm.execute(stmt).all():
            admin = orm.get_one(AdminRow, row.admin_id)
            out[row.id] = (session_from_rows(row, customer, admin.email, ()), admin, row)
    return out


def open_tokens(orm: Orm, session_ids: Sequence[str]) -> dict[str, list[ChoiceTokenRow]]:
    """The unused "choose a new time" tokens of each session (every id a key), a read per
    500: what a transition retires."""
    out: dict[str, list[ChoiceTokenRow]] = {sid: [] for sid in session_ids}
    ids = sorted(out)
    for i in range(0, len(ids), 500):
        for tok in orm.scalars(
            select(ChoiceTokenRow).where(
                ChoiceTokenRow.session_id.in_(ids[i : i + 500]), ChoiceTokenRow.used_at.is_(None)
            )
        ):
            out[tok.session_id].append(tok)
    return out


def load_sessions(orm: Orm, rows: Sequence[SessionRow], with_history: bool = True) -> list[Session]:
    """Domain sessions of many rows, in one round of queries."""
    if not rows:
        return []
    ids = [r.id for r in rows]
    customers = {
        c.id: c
        for c in orm.scalars(
            select(CustomerRow).where(CustomerRow.id.in_({r.customer_id for r in rows}))
        )
    }
    admins = {
        a.id: a.email
        for a in orm.scalars(select(AdminRow).where(AdminRow.id.in_({r.admin_id for r in rows})))
    }
    history: dict[str, list[HistoryRow]] = {i: [] for i in ids}
    if with_history:
        for h in orm.scalars(
            select(HistoryRow).where(HistoryRow.session_id.in_(ids)).order_by(HistoryRow.id)
        ):
            history[h.session_id].append(h)
    return [
        session_from_rows(r, customers[r.customer_id], admins[r.admin_id], history[r.id])
        for r in rows
    ]


def live_sessions_of(
    orm: Orm,
    admin_id: int,
    exclude: str | None = None,
    overlapping: tuple[datetime, datetime] | None = None,
) -> list[Session]:
    """The admin's booked and awaiting sessions (for overlap checks and free slots).

    With ``overlapping=(start, end)``, only those overlapping that interval: read from the
    (admin_id, end, start) index, so a check costs the overlaps, not the admin's history.
    """
    stmt = select(SessionRow).where(
        SessionRow.admin_id == admin_id, SessionRow.status != Status.CANCELED.value
    )
    if overlapping is not None:
        start, end = overlapping
        stmt = stmt.where(SessionRow.end > start, SessionRow.start < end)
    if exclude is not None:
        stmt = stmt.where(SessionRow.id != exclude)
    return load_sessions(orm, orm.scalars(stmt).all(), with_history=False)


def upsert_customer(orm: Orm, admin_id: int, customer: Customer) -> CustomerRow:
    """The admin's customer with this email, created or refreshed (name and zone).

    Customers belong to their admin: the same email booked with another admin is another
    row, so one admin's booking never renames a customer in another admin's emails.
    """
    row = orm.scalars(
        select(CustomerRow).where(
            CustomerRow.admin_id == admin_id, CustomerRow.email == customer.email
        )
    ).first()
    if row is None:
        row = CustomerRow(
            admin_id=admin_id, email=customer.email, name=customer.name, tz=customer.tz
        )
        orm.add(row)
        orm.flush()
    else:
        row.name, row.tz = customer.name, customer.tz
    return row


def write_transition(orm: Orm, transition: Transition, now: datetime) -> SessionRow:
    """Persist the session after a transition and append its history line."""
    after = transition.after
    row = orm.get(SessionRow, after.id)
    if row is None:
        raise NotFoundError(f"There is no session {after.id}.")
    row.start, row.end = after.start, after.end
    row.status = after.status.value
    row.sequence = after.sequence
    row.cancel_reason = after.cancel_reason
    row.choose_message = after.choose_message
    row.updated_at = now
    add_history(orm, after.id, transition.entry)
    return row


def add_history(orm: Orm, session_id: str, entry: HistoryEntry) -> None:
    """Append one history line."""
    orm.add(
        HistoryRow(
            session_id=session_id,
            at=entry.at,
            actor=entry.actor.value,
            action=entry.action,
            from_start=entry.from_start,
            to_start=entry.to_start,
            detail=entry.detail,
        )
    )
