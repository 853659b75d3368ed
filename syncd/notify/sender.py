"""The sender loop: drain the outbox through a :class:`syncd.ports.Mailer`, at least once.

One row at a time:

1. **Claim** (one short write transaction): the oldest due row (``pending`` and
   ``next_attempt_at <= now``, or ``sending`` whose lease expired) becomes ``sending`` with
   ``attempts += 1`` and a lease (``lease_owner``, ``lease_until``), BEFORE any SMTP DATA.
   PostgreSQL picks candidates with ``FOR UPDATE SKIP LOCKED``, so parallel workers never
   claim one row; SQLite's ``BEGIN IMMEDIATE`` serializes the claim. Coalescing is checked
   again here: a customer row with a newer pending/sending/sent customer row of the same
   session is marked ``superseded`` instead (the customer hears the final state once) —
   unless its send began and its lease expired (a worker died in the SMTP DATA gap): then
   it is recorded ``sent``, not sent again, because the customer most likely has it — and
   a customer row waits while an older one of its session is still being sent.
2. **Send**, outside any transaction.
3. **Record** (in the next claim's transaction, or one of its own when the drain ends):
   ``sent`` with ``sent_at``, and the raw link token and
   link are scrubbed from the payload; on :class:`MailTransient` back to ``pending`` with
   exponential backoff (``backoff * 2**(attempts-1)``, ±20 % jitter) and ``last_error``, or
   ``dead`` once ``[smtp] max_attempts`` is reached; on :class:`MailPermanent` ``dead`` at
   once. ``syncd outbox retry ID`` brings a dead row back.

A crash between DATA and step 3 leaves the row ``sending``; when its lease expires another
drain sends it again with the same Message-ID (the duplicate is detectable by it), counted in
``DrainResult.resent_after_lease``. A connection dropped while the server was answering the
message data (the mailer raises an error with ``maybe_delivered = True``) is retried the same
way and counted in ``resent_after_drop``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session as Orm

from syncd.config import SmtpConfig
from syncd.domain.model import CUSTOMER_NOTICES
from syncd.errors import NotFoundError, Refused
from syncd.notify.compose import compose
from syncd.notify.health import PROCESS, MailHealth
from syncd.notify.outbox import DEAD, PENDING, SENDING, SENT, SUPERSEDED
from syncd.ports import Mailer, MailMaybeDelivered, MailPermanent, MailTransient
from syncd.store.context import Context
from syncd.store.models import OutboxRow

CUSTOMER_KINDS = frozenset(k.value for k in CUSTOMER_NOTICES)
#: Payload keys that carry the raw link token; never kept once a row is sent or superseded.
SECRET_KEYS = ("token", "link")
#: The payload flag of a row whose last attempt may have delivered it.
MAYBE_DELIVERED = "maybe_delivered"
#: The payload flag of a row whose SMTP transaction began (set just before it).
SEND_STARTED = "send_started"
MAX_BACKOFF = timedelta(days=1)
#: After this many transient failures in a row, the server is taken to be down: the rest of
#: the outbox waits for the next drain instead of spending an attempt each.
STOP_AFTER_TRANSIENT = 3
CANDIDATES = 20

_rng = random.Random()


@dataclass
class DrainResult:
    """What one :func:`drain` did."""

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


def lease_for(smtp_cfg: SmtpConfig) -> timedelta:
    """How long a claimed row stays leased: room for every SMTP step to hit its timeout."""
    return max(timedelta(minutes=2), smtp_cfg.timeout * 10)


def backoff_delay(smtp_cfg: SmtpConfig, attempts: int) -> timedelta:
    """``backoff * 2**(attempts-1)`` with ±20 % jitter, at most :data:`MAX_BACKOFF`."""
    base = smtp_cfg.backoff * (1 << max(attempts - 1, 0))
    return min(base, MAX_BACKOFF) * _rng.uniform(0.8, 1.2)


def scrub(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without the raw link token, the link and the delivery flag."""
    drop = (*SECRET_KEYS, MAYBE_DELIVERED, SEND_STARTED)
    return {k: v for k, v in payload.items() if k not in drop}


def _newer_exists(orm: Orm, row: OutboxRow) -> bool:
    """True when a newer customer row of the same session is pending, sending or sent."""
    newer = orm.scalars(
        select(OutboxRow.id).where(
            OutboxRow.session_id == row.session_id,
            OutboxRow.id > row.id,
            OutboxRow.kind.in_(CUSTOMER_KINDS),
            OutboxRow.status.in_((PENDING, SENDING, SENT)),
        )
    ).first()
    return newer is not None


def _older_in_flight(orm: Orm, row: OutboxRow, now: datetime) -> bool:
    """True while an older customer row of the same session is leased (being sent)."""
    older = orm.scalars(
        select(OutboxRow.id).where(
            OutboxRow.session_id == row.session_id,
            OutboxRow.id < row.id,
            OutboxRow.kind.in_(CUSTOMER_KINDS),
            OutboxRow.status == SENDING,
            OutboxRow.lease_until >= now,
        )
    ).first()
    return older is not None


def claim(
    ctx: Context,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    max_attempts: int,
    sent: tuple[Claim, datetime] | None = None,
) -> tuple[Claim | None, DrainResult]:
    """Lease the oldest due row to ``worker_id`` in one transaction.

    ``sent``: the row the drain just delivered (and when), recorded ``sent`` first in the
    same transaction. Returns the claim (or None when nothing is due) and what happened to
    the rows passed over on the way (superseded, or dead after a lease expired on the last
    attempt).
    """
    seen = DrainResult()
    due = or_(
        and_(OutboxRow.status == PENDING, OutboxRow.next_attempt_at <= now),
        and_(OutboxRow.status == SENDING, OutboxRow.lease_until < now),
    )
    # Ids first (locked on PostgreSQL); a row and its payload are read once the loop gets there.
    stmt = select(OutboxRow.id).where(due).order_by(OutboxRow.id).limit(CANDIDATES)
    if ctx.db.lock_clause():
        stmt = stmt.with_for_update(skip_locked=True)
    with ctx.db.write() as orm:
        if sent is not None:
            _record_sent(orm, ctx, *sent)
            orm.flush()  # the rows below see it sent (coalescing, older-in-flight)
        for row_id in orm.scalars(stmt).all():
            row = orm.get_one(OutboxRow, row_id)
            customer = row.kind in CUSTOMER_KINDS and row.session_id is not None
            started = bool(row.payload.get(SEND_STARTED))
            if customer and row.status == SENDING and started and _newer_exists(orm, row):
                # Its lease expired mid-send: SMTP DATA began, so the customer most likely
                # has it (the DATA gap: delivered, then the worker died before recording
                # it). Not sent again, since a newer notice follows, and not "superseded":
                # the outbox says what the customer got.
                row.status = SENT
                row.sent_at = now
                row.last_error = (
                    f"The lease of {row.lease_owner} expired mid-send; taken as delivered "
                    "(a newer notice follows, so it is not sent again)."
                )
                row.payload = scrub(row.payload)
                row.lease_owner = row.lease_until = None
                seen.taken_as_sent += 1
                continue
            if customer and _newer_exists(orm, row):
                row.status = SUPERSEDED
                row.payload = scrub(row.payload)
                row.lease_owner = row.lease_until = None
                seen.superseded += 1
                continue
            if customer and _older_in_flight(orm, row, now):
                continue
            after_lease = row.status == SENDING
            if after_lease and row.attempts >= max_attempts:
                row.status = DEAD
                row.last_error = (
                    f"The lease of {row.lease_owner} expired during the last attempt "
                    "(the message may have been delivered)."
                )
                row.lease_owner = row.lease_until = None
                seen.dead += 1
                continue
            if after_lease:
                row.last_error = (
                    f"The lease of {row.lease_owner} expired mid-send; re-sending with the "
                    "same Message-ID."
                )
            row.status = SENDING
            row.attempts += 1
            row.lease_owner = worker_id
            row.lease_until = now + lease
            return (
                Claim(
                    id=row.id,
                    kind=row.kind,
                    recipient=row.recipient,
                    payload=dict(row.payload),
                    message_id=row.message_id,
                    attempts=row.attempts,
                    after_lease=after_lease,
                    maybe_delivered=bool(row.payload.get(MAYBE_DELIVERED)),
                ),
                seen,
            )
    return None, seen


def _leased_row(orm: Orm, ctx: Context, row_id: int) -> OutboxRow | None:
    stmt = select(OutboxRow).where(OutboxRow.id == row_id)
    if ctx.db.lock_clause():
        stmt = stmt.with_for_update()
    return orm.scalars(stmt).first()


def _mark_started(ctx: Context, c: Claim, worker_id: str) -> bool:
    """Flag the row as being sent now; False when the lease went to another worker."""
    with ctx.db.write() as orm:
        row = _leased_row(orm, ctx, c.id)
        if row is None or row.status != SENDING or row.lease_owner != worker_id:
            return False
        row.payload = {**row.payload, SEND_STARTED: True}
        return True


def _mark_sent(ctx: Context, c: Claim, now: datetime) -> None:
    with ctx.db.write() as orm:
        _record_sent(orm, ctx, c, now)


def _record_sent(orm: Orm, ctx: Context, c: Claim, now: datetime) -> None:
    row = _leased_row(orm, ctx, c.id)
    if row is None or row.status == SENT:
        return
    # Whatever happened meanwhile (another worker took over an expired lease, an operator
    # acted), the message went out: the row says so.
    row.status = SENT
    row.sent_at = now
    row.lease_owner = row.lease_until = None
    row.last_error = None  # an earlier attempt's error no longer describes the row
    row.payload = scrub(row.payload)


def _mark_failed(
    ctx: Context,
    c: Claim,
    worker_id: str,
    now: datetime,
    smtp_cfg: SmtpConfig,
    error: str,
    permanent: bool,
    maybe_delivered: bool = False,
) -> str:
    """Back to pending with backoff, or dead; returns the status written (or "" if none)."""
    with ctx.db.write() as orm:
        row = _leased_row(orm, ctx, c.id)
        if row is None or row.status != SENDING or row.lease_owner != worker_id:
            return ""  # the lease went to another worker; it owns the row now
        row.last_error = error[:2000]
        row.lease_owner = row.lease_until = None
        payload = {k: v for k, v in row.payload.items() if k != SEND_STARTED}
        row.payload = {**payload, MAYBE_DELIVERED: True} if maybe_delivered else payload
        if permanent or row.attempts >= smtp_cfg.max_attempts:
            row.status = DEAD
        else:
            row.status = PENDING
            row.next_attempt_at = now + backoff_delay(smtp_cfg, row.attempts)
        return row.status


def drain(
    ctx: Context,
    mailer: Mailer,
    smtp_cfg: SmtpConfig,
    worker_id: str,
    now: datetime | None = None,
    limit: int = 100,
    health: MailHealth = PROCESS,
) -> DrainResult:
    """Send up to ``limit`` due outbox rows; see the module docstring for the protocol.

    ``now`` fixes the clock for the whole drain (tests); by default ``ctx.clock`` is read
    at each step, so leases stay accurate during a long drain. ``health`` (the process's by
    default) logs an SMTP outage once per episode and its end.
    """
    clock: Callable[[], datetime] = (lambda: now) if now is not None else ctx.clock
    lease = lease_for(smtp_cfg)
    templates = smtp_cfg.templates or None
    result = DrainResult()
    handled = transient_in_a_row = 0
    delivered: tuple[Claim, datetime] | None = None  # recorded sent with the next claim
    while handled < limit:
        c, seen = claim(ctx, worker_id, clock(), lease, smtp_cfg.max_attempts, delivered)
        delivered = None
        result.superseded += seen.superseded
        result.dead += seen.dead
        result.taken_as_sent += seen.taken_as_sent
        handled += seen.superseded + seen.dead + seen.taken_as_sent
        if c is None:
            break
        handled += 1
        try:
            message = compose(
                c.payload,
                c.kind,
                c.recipient,
                c.message_id,
                smtp_cfg.from_,
                templates,
                now=clock(),
                link_key=ctx.link_key,
            )
        except Exception as err:  # a template or payload error: no retry will fix it
            _mark_failed(ctx, c, worker_id, clock(), smtp_cfg, f"cannot compose: {err!r}", True)
            result.dead += 1
            continue
        if not _mark_started(ctx, c, worker_id):
            continue  # our lease expired while composing: the row is another worker's
        try:
            mailer.send(message, [c.recipient])
        except MailPermanent as err:
            _mark_failed(ctx, c, worker_id, clock(), smtp_cfg, str(err), True)
            result.dead += 1
            transient_in_a_row = 0
            continue
        except MailTransient as err:
            maybe = isinstance(err, MailMaybeDelivered)
            health.failed(str(err), clock())
            status = _mark_failed(ctx, c, worker_id, clock(), smtp_cfg, str(err), False, maybe)
            if status == DEAD:
                result.dead += 1
            else:
                result.retried += 1
            transient_in_a_row += 1
            if transient_in_a_row >= STOP_AFTER_TRANSIENT:
                break
            continue
        transient_in_a_row = 0
        health.delivered(clock())
        delivered = (c, clock())
        result.sent += 1
        if c.after_lease:
            result.resent_after_lease += 1
        elif c.maybe_delivered:
            result.resent_after_drop += 1
    if delivered is not None:  # the last one, when the loop ends on the limit
        _mark_sent(ctx, *delivered)
    return result


def retry(ctx: Context, outbox_id: int) -> OutboxRow:
    """Put a dead row back to pending with its attempts reset (``syncd outbox retry ID``)."""
    with ctx.db.write() as orm:
        row = _leased_row(orm, ctx, outbox_id)
        if row is None:
            raise NotFoundError(f"There is no outbox row {outbox_id}.")
        if row.status != DEAD:
            raise Refused(f"Outbox row {outbox_id} is {row.status}; only dead rows can be retried.")
        row.status = PENDING
        row.attempts = 0
        row.next_attempt_at = ctx.clock()
        row.lease_owner = row.lease_until = None
        return row
