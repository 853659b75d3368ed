"""The sender loop: drain the outbox through a :class:`syncd.ports.Mailer`, at least once.

A batch of rows at a time (:mod:`syncd.notify.claims` has the transactions):

1. **Claim** (one short write transaction for up to ``claims.BATCH`` rows): the oldest due
   rows (``pending`` and ``next_attempt_at <= now``, or ``sending`` whose lease expired)
   become ``sending`` with ``attempts += 1`` and a lease (``lease_owner``,
   ``lease_until``), BEFORE any SMTP DATA. PostgreSQL picks candidates with ``FOR UPDATE
   SKIP LOCKED``, so parallel workers never claim one row; SQLite's ``BEGIN IMMEDIATE``
   serializes the claim. Coalescing is checked again here: a customer row with a newer
   pending/sending/sent customer row of the same session is marked ``superseded`` instead
   (the customer hears the final state once) — unless its send began and its lease
   expired (a worker died in the SMTP DATA gap): then it is recorded ``sent``, not sent
   again, because the customer most likely has it — and a customer row waits while an
   older one of its session is still being sent.
2. **Start** (one short write transaction a row, just before its SMTP transaction): the row
   is flagged ``send_started`` and its lease renewed, unless the lease went to another
   worker, or a newer notice of the session came since the claim (then it is
   ``superseded`` here and not sent).
3. **Send**, outside any transaction.
4. **Record** (in the next row's start or claim transaction, or one of its own when the
   drain ends, which also gives back the rows it leased and did not attempt):
   ``sent`` with ``sent_at``, and the raw link token and
   link are scrubbed from the payload; on :class:`MailTransient` back to ``pending`` with
   exponential backoff (``backoff * 2**(attempts-1)``, ±20 % jitter) and ``last_error``, or
   ``dead`` once ``[smtp] max_attempts`` is reached; on :class:`MailPermanent` ``dead`` at
   once. ``syncd outbox retry ID`` brings a dead row back.

A crash between DATA and step 4 leaves the row ``sending``; when its lease expires another
drain sends it again with the same Message-ID (the duplicate is detectable by it), counted in
``DrainResult.resent_after_lease``. A connection dropped while the server was answering the
message data (the mailer raises an error with ``maybe_delivered = True``) is retried the same
way and counted in ``resent_after_drop``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session as Orm

from syncd.config import SmtpConfig
from syncd.errors import NotFoundError, Refused
from syncd.notify.claims import (
    BATCH,
    MAYBE_DELIVERED,
    SEND_STARTED,
    Claim,
    DrainResult,
    begin_send,
    claim_batch,
    record_sent,
    release,
)
from syncd.notify.compose import compose
from syncd.notify.health import PROCESS, MailHealth
from syncd.notify.outbox import DEAD, PENDING, SENDING
from syncd.ports import Mailer, MailMaybeDelivered, MailPermanent, MailTransient
from syncd.store.context import Context
from syncd.store.models import OutboxRow

MAX_BACKOFF = timedelta(days=1)
#: After this many transient failures in a row, the server is taken to be down: the rest of
#: the outbox waits for the next drain instead of spending an attempt each.
STOP_AFTER_TRANSIENT = 3

_rng = random.Random()


def lease_for(smtp_cfg: SmtpConfig) -> timedelta:
    """How long a claimed row stays leased: room for every SMTP step to hit its timeout."""
    return max(timedelta(minutes=2), smtp_cfg.timeout * 10)


def backoff_delay(smtp_cfg: SmtpConfig, attempts: int) -> timedelta:
    """``backoff * 2**(attempts-1)`` with ±20 % jitter, at most :data:`MAX_BACKOFF`."""
    base = smtp_cfg.backoff * (1 << max(attempts - 1, 0))
    return min(base, MAX_BACKOFF) * _rng.uniform(0.8, 1.2)


def claim(
    ctx: Context,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    max_attempts: int,
    sent: tuple[Claim, datetime] | None = None,
) -> tuple[Claim | None, DrainResult]:
    """Lease the oldest due row to ``worker_id`` in one transaction (a batch of one)."""
    claims, seen = claim_batch(ctx, worker_id, now, lease, max_attempts, 1, [sent] if sent else [])
    return (claims[0] if claims else None), seen


def _leased_row(orm: Orm, ctx: Context, row_id: int) -> OutboxRow | None:
    stmt = select(OutboxRow).where(OutboxRow.id == row_id)
    if ctx.db.lock_clause():
        stmt = stmt.with_for_update()
    return orm.scalars(stmt).first()


def _finish(
    ctx: Context, delivered: list[tuple[Claim, datetime]], unsent: list[Claim], worker: str
) -> None:
    """Record what went out and give back what was leased and not attempted."""
    if delivered or unsent:
        with ctx.db.write() as orm:
            record_sent(orm, delivered)
            release(orm, unsent, worker)
    delivered.clear()


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
    delivered: list[tuple[Claim, datetime]] = []  # recorded sent with the next transaction
    queue: deque[Claim] = deque()
    try:
        while handled < limit:
            if not queue:
                size = min(BATCH, limit - handled)
                got, seen = claim_batch(
                    ctx, worker_id, clock(), lease, smtp_cfg.max_attempts, size, delivered
                )
                delivered.clear()
                result.superseded += seen.superseded
                result.dead += seen.dead
                result.taken_as_sent += seen.taken_as_sent
                handled += seen.superseded + seen.dead + seen.taken_as_sent
                if not got:
                    break
                queue.extend(got)
            c = queue.popleft()
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
                _finish(ctx, delivered, [], worker_id)
                _mark_failed(ctx, c, worker_id, clock(), smtp_cfg, f"cannot compose: {err!r}", True)
                result.dead += 1
                continue
            began = begin_send(ctx, c, worker_id, clock(), lease, delivered)
            delivered.clear()
            if began == "superseded":
                result.superseded += 1
            if began != "go":
                continue  # a newer notice came, or our lease went to another worker
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
            delivered.append((c, clock()))
            result.sent += 1
            if c.after_lease:
                result.resent_after_lease += 1
            elif c.maybe_delivered:
                result.resent_after_drop += 1
    finally:
        _finish(ctx, delivered, list(queue), worker_id)
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


__all__ = [
    "Claim",
    "DrainResult",
    "claim",
    "drain",
    "lease_for",
    "retry",
]
