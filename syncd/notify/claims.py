"""The outbox rows a drain leases, starts and records: its write transactions.

A drain takes due rows a batch at a time (:func:`claim_batch`, one transaction for up to
:data:`BATCH` rows), and then, for each row just before its SMTP transaction, one more
(:func:`begin_send`): it records the row sent before it, and flags this one
``send_started`` with its lease renewed, unless the lease went to another worker or a
newer notice of the same session came meanwhile (then it is superseded here, not sent).
The statements are by primary key; the coalescing rules are the module docstring's of
:mod:`syncd.notify.sender`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session as Orm

from syncd.domain.model import CUSTOMER_NOTICES
from syncd.notify.outbox import DEAD, PENDING, SENDING, SENT, SUPERSEDED
from syncd.store.context import Context
from syncd.store.models import OutboxRow

CUSTOMER_KINDS = frozenset(k.value for k in CUSTOMER_NOTICES)
#: Payload keys that carry the raw link token; never kept once a row is sent or superseded.
SECRET_KEYS = ("token", "link")
#: The payload flag of a row whose last attempt may have delivered it.
MAYBE_DELIVERED = "maybe_delivered"
#: The payload flag of a row whose SMTP transaction began (set just before it).
SEND_STARTED = "send_started"
#: Due rows looked at per claim, and rows leased per claim.
CANDIDATES = 20
BATCH = 10
_LIVE = (PENDING, SENDING, SENT)


@dataclass
class DrainResult:
    """What one drain did."""

    sent: int = 0
    retried: int = 0
    dead: int = 0
    superseded: int = 0
    resent_after_lease: int = 0
    resent_after_drop: int = 0
    #: Rows whose send began but was never recorded, and that a newer notice follows.
    taken_as_sent: int = 0

    @property
    def possible_duplicates(self) -> int:
        """Rows sent again after an attempt that may already have delivered them."""
        return self.resent_after_lease + self.resent_after_drop


@dataclass(frozen=True)
class Claim:
    """A row leased to this worker, detached from the database."""

    id: int
    kind: str
    recipient: str
    payload: dict[str, Any]
    message_id: str
    attempts: int
    after_lease: bool
    maybe_delivered: bool
    session_id: str | None = None
    #: (status, lease_owner, lease_until, last_error) before the claim, to give it back.
    prior: tuple[str, str | None, datetime | None, str | None] = field(
        default=(PENDING, None, None, None), compare=False
    )


def scrub(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without the raw link token, the link and the delivery flag."""
    drop = (*SECRET_KEYS, MAYBE_DELIVERED, SEND_STARTED)
    return {k: v for k, v in payload.items() if k not in drop}


def _newest(orm: Orm, sessions: set[str]) -> dict[str, int]:
    """Each session's newest pending, sending or sent customer row."""
    if not sessions:
        return {}
    o = OutboxRow
    rows = orm.execute(
        select(o.session_id, func.max(o.id))
        .where(o.session_id.in_(sessions), o.kind.in_(CUSTOMER_KINDS), o.status.in_(_LIVE))
        .group_by(o.session_id)
    ).all()
    return {str(sid): int(top) for sid, top in rows}


def _oldest_in_flight(orm: Orm, sessions: set[str], now: datetime) -> dict[str, int]:
    """Each session's oldest customer row leased right now (being sent)."""
    if not sessions:
        return {}
    o = OutboxRow
    rows = orm.execute(
        select(o.session_id, func.min(o.id))
        .where(
            o.session_id.in_(sessions),
            o.kind.in_(CUSTOMER_KINDS),
            o.status == SENDING,
            o.lease_until >= now,
        )
        .group_by(o.session_id)
    ).all()
    return {str(sid): int(low) for sid, low in rows}


_T = cast(Table, OutboxRow.__table__)
_NEWER = _T.alias("newer")
#: The statements a row takes on every send, built once (bound by name).
_SENT = (
    update(_T)
    .where(_T.c.id == bindparam("rid"), _T.c.status != SENT)
    .values(
        status=SENT,
        sent_at=bindparam("at"),
        lease_owner=None,
        lease_until=None,
        last_error=None,  # an earlier attempt's error no longer describes the row
        payload=bindparam("clean"),
    )
)
_MINE = (
    _T.c.id == bindparam("rid"),
    _T.c.status == SENDING,
    _T.c.lease_owner == bindparam("me"),
)
_START = (
    update(_T).where(*_MINE).values(payload=bindparam("started"), lease_until=bindparam("until"))
)
_START_UNLESS_NEWER = _START.where(
    ~exists().where(
        _NEWER.c.session_id == bindparam("sid"),
        _NEWER.c.id > bindparam("rid"),
        _NEWER.c.kind.in_(sorted(CUSTOMER_KINDS)),
        _NEWER.c.status.in_(_LIVE),
    )
)


def record_sent(orm: Orm | Connection, delivered: Sequence[tuple[Claim, datetime]]) -> None:
    """Rows whose message went out: ``sent``, whatever happened to their lease meanwhile
    (another worker took over an expired lease, an operator acted)."""
    if delivered:
        rows = [{"rid": c.id, "at": at, "clean": scrub(c.payload)} for c, at in delivered]
        orm.execute(_SENT, rows)


def release(orm: Orm, claims: Sequence[Claim], worker_id: str) -> None:
    """Give back leased rows this drain did not attempt, as they were before the claim."""
    for c in claims:
        status, owner, until, error = c.prior
        orm.execute(
            update(OutboxRow)
            .where(
                OutboxRow.id == c.id,
                OutboxRow.status == SENDING,
                OutboxRow.lease_owner == worker_id,
            )
            .values(
                status=status,
                lease_owner=owner,
                lease_until=until,
                last_error=error,
                attempts=OutboxRow.attempts - 1,
            )
        )


def claim_batch(
    ctx: Context,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    max_attempts: int,
    n: int = BATCH,
    sent: Sequence[tuple[Claim, datetime]] = (),
) -> tuple[list[Claim], DrainResult]:
    """Lease up to ``n`` of the oldest due rows to ``worker_id`` in one transaction.

    ``sent``: rows the drain delivered since its last transaction, recorded first. Returns
    the claims (oldest first) and what happened to the rows passed over on the way.
    """
    seen = DrainResult()
    o = OutboxRow
    due = or_(
        and_(o.status == PENDING, o.next_attempt_at <= now),
        and_(o.status == SENDING, o.lease_until < now),
    )
    # Light columns first (locked on PostgreSQL); payloads only of the rows changed here.
    stmt = (
        select(o.id, o.session_id, o.kind, o.status, o.attempts)
        .where(due)
        .order_by(o.id)
        .limit(CANDIDATES)
    )
    if ctx.db.lock_clause():
        stmt = stmt.with_for_update(skip_locked=True)
    with ctx.db.write() as orm:
        record_sent(orm, sent)
        candidates = orm.execute(stmt).all()
        sessions = {
            str(c.session_id) for c in candidates if c.kind in CUSTOMER_KINDS and c.session_id
        }
        newest = _newest(orm, sessions)
        in_flight = _oldest_in_flight(orm, sessions, now)
        take: list[int] = []
        for c in candidates:
            if len(take) >= n:
                break
            sid = c.session_id if c.kind in CUSTOMER_KINDS else None
            newer = sid is not None and newest.get(sid, c.id) > c.id
            if sid is not None and not newer and in_flight.get(sid, c.id) < c.id:
                continue  # an older notice of the session is being sent: this one waits
            # Leased, or superseded / taken as sent / dead: decided with its payload.
            take.append(c.id)
        rows = {r.id: r for r in orm.scalars(select(o).where(o.id.in_(take)))} if take else {}
        claims = []
        for row_id in take:
            row = rows[row_id]
            claim = _settle(row, seen, newest, worker_id, now, lease, max_attempts)
            if claim is not None:
                claims.append(claim)
    return claims, seen


def _settle(
    row: OutboxRow,
    seen: DrainResult,
    newest: dict[str, int],
    worker_id: str,
    now: datetime,
    lease: timedelta,
    max_attempts: int,
) -> Claim | None:
    """Lease ``row``, or record why it is not sent (superseded, taken as sent, dead)."""
    customer = row.kind in CUSTOMER_KINDS and row.session_id is not None
    newer = customer and newest.get(str(row.session_id), row.id) > row.id
    if newer and row.status == SENDING and row.payload.get(SEND_STARTED):
        # Its lease expired mid-send: SMTP DATA began, so the customer most likely has it
        # (the DATA gap: delivered, then the worker died before recording it). Not sent
        # again, since a newer notice follows, and not "superseded": the outbox says what
        # the customer got.
        row.status = SENT
        row.sent_at = now
        row.last_error = (
            f"The lease of {row.lease_owner} expired mid-send; taken as delivered "
            "(a newer notice follows, so it is not sent again)."
        )
        row.payload = scrub(row.payload)
        row.lease_owner = row.lease_until = None
        seen.taken_as_sent += 1
        return None
    if newer:
        row.status = SUPERSEDED
        row.payload = scrub(row.payload)
        row.lease_owner = row.lease_until = None
        seen.superseded += 1
        return None
    after_lease = row.status == SENDING
    if after_lease and row.attempts >= max_attempts:
        row.status = DEAD
        row.last_error = (
            f"The lease of {row.lease_owner} expired during the last attempt "
            "(the message may have been delivered)."
        )
        row.lease_owner = row.lease_until = None
        seen.dead += 1
        return None
    prior = (row.status, row.lease_owner, row.lease_until, row.last_error)
    if after_lease:
        row.last_error = (
            f"The lease of {row.lease_owner} expired mid-send; re-sending with the same Message-ID."
        )
    row.status = SENDING
    row.attempts += 1
    row.lease_owner = worker_id
    row.lease_until = now + lease
    return Claim(
        id=row.id,
        kind=row.kind,
        recipient=row.recipient,
        payload=dict(row.payload),
        message_id=row.message_id,
        attempts=row.attempts,
        after_lease=after_lease,
        maybe_delivered=bool(row.payload.get(MAYBE_DELIVERED)),
        session_id=row.session_id,
        prior=prior,
    )


def begin_send(
    ctx: Context,
    c: Claim,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    sent: Sequence[tuple[Claim, datetime]] = (),
) -> str:
    """Flag ``c`` as being sent now (its lease renewed), recording ``sent`` first.

    Returns ``"go"``, ``"superseded"`` (a newer notice of its session came meanwhile: the
    row says so and is not sent) or ``"lost"`` (the lease went to another worker).
    """
    customer = c.kind in CUSTOMER_KINDS and c.session_id is not None
    bound = {"rid": c.id, "me": worker_id, "sid": c.session_id}
    with ctx.db.write_statements() as conn:  # prebuilt statements: no ORM session
        record_sent(conn, sent)
        stmt = _START_UNLESS_NEWER if customer else _START
        started = {**bound, "started": {**c.payload, SEND_STARTED: True}, "until": now + lease}
        if conn.execute(stmt, started).rowcount == 1:
            return "go"
        if not customer or conn.scalar(select(_T.c.id).where(*_MINE), bound) is None:
            return "lost"
        superseded = {**bound, "clean": scrub(c.payload)}
        conn.execute(
            update(_T)
            .where(*_MINE)
            .values(
                status=SUPERSEDED, payload=bindparam("clean"), lease_owner=None, lease_until=None
            ),
            superseded,
        )
        return "superseded"


__all__ = [
    "BATCH",
    "CUSTOMER_KINDS",
    "Claim",
    "DrainResult",
    "begin_send",
    "claim_batch",
    "record_sent",
    "release",
    "scrub",
]
