"""The daemon's mailer (built when a message is claimed, reused while the drain lasts),
and when the daemon next has work (:func:`next_due`).

An idle tick (nothing due in the outbox) builds nothing: no SMTP client, no TLS context
(issue 11, goal 5). One drain sends every due message over one connection.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session as Orm

    from syncd.config import Config
    from syncd.store.context import Context

log = logging.getLogger("syncd.app.daemon")


def make_mailer(cfg: Config) -> Any:
    """The SMTP mailer of the configuration (composition root)."""
    from adapters.smtp import SmtpMailer

    s = cfg.smtp
    return SmtpMailer(
        s.host, s.port, s.security, s.username, s.password(), s.timeout.total_seconds()
    )


class LazyMailer:
    """A :class:`syncd.ports.Mailer` that makes the real one on the first message."""

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._mailer: Any = None

    @property
    def built(self) -> bool:
        """True once a message made the real mailer."""
        return self._mailer is not None

    def send(self, message: EmailMessage, recipients: Sequence[str]) -> None:
        """Deliver ``message``, connecting first if this drain has not yet."""
        if self._mailer is None:
            self._mailer = make_mailer(self._cfg)
        self._mailer.send(message, recipients)

    def close(self) -> None:
        """Close the connection, if one was made."""
        if self._mailer is not None:
            self._mailer.close()
            self._mailer = None


def drain_outbox(ctx: Context, cfg: Config, owner: str) -> Any:
    """Send what is due in the outbox."""
    from syncd.notify import sender

    mailer = LazyMailer(cfg)
    try:
        return sender.drain(ctx, mailer, cfg.smtp, owner)
    finally:
        mailer.close()


def seconds_until_due(ctx: Context, owner: str, tick: float) -> float:
    """Seconds until a calendar or an email is next due for ``owner``, at most ``tick``."""
    now = ctx.clock()
    try:
        due = next_due(ctx, owner, now)
    except Exception:  # the database is away: try again in a tick
        log.exception("next due time unknown")
        return tick
    return tick if due is None else max(0.0, min(tick, (due - now).total_seconds()))


def next_due(ctx: Context, owner: str, now: datetime) -> datetime | None:
    """When a calendar or an email is next due for worker ``owner`` (None: nothing at all).

    A time at or before ``now`` means "a pass now". Calendars held by another worker count
    from the end of their lease. One read transaction: what an idle daemon tick costs.
    """
    from sqlalchemy import func, or_, select

    from syncd.store.models import CalendarRow as C

    free = or_(C.lease_until.is_(None), C.lease_until < now, C.lease_owner == owner)
    mine = (C.busy_only.is_(False), free)
    held = (C.busy_only.is_(False), C.lease_until >= now, C.lease_owner != owner)
    with ctx.db.read() as orm:
        if orm.scalar(select(C.id).where(*mine, C.next_sync_at.is_(None)).limit(1)):
            return now
        found = [
            orm.scalar(select(func.min(C.next_sync_at)).where(*mine)),
            orm.scalar(select(func.min(C.lease_until)).where(*held)),
            next_mail_at(orm),
        ]
    times = [t for t in found if t is not None]
    return min(times) if times else None


def next_mail_at(orm: Orm) -> datetime | None:
    """When the outbox (or a choice link's expiry notice) next has something to send.

    The earliest of: a pending row's next attempt, a sending row's lease end (another
    worker died mid-send), an unused link's expiry not yet told to the admin. None when
    there is nothing at all; a time in the past means "due now". Read-only: the daemon
    asks this on a tick instead of draining (issue 11, goal 5b).
    """
    from sqlalchemy import func, select

    from syncd.notify.outbox import PENDING, SENDING
    from syncd.store.models import ChoiceTokenRow, OutboxRow

    o, t = OutboxRow, ChoiceTokenRow
    candidates = [
        orm.scalar(select(func.min(o.next_attempt_at)).where(o.status == PENDING)),
        orm.scalar(select(func.min(o.lease_until)).where(o.status == SENDING)),
        orm.scalar(
            select(func.min(t.expires_at)).where(t.used_at.is_(None), t.expiry_notified.is_(False))
        ),
    ]
    found = [c for c in candidates if c is not None]
    return min(found) if found else None
