"""Tell the admin when a "choose a new time" link expired without the customer choosing."""

from __future__ import annotations

from types import MappingProxyType

from sqlalchemy import select

from syncd.domain.model import Notice, NoticeKind, Status
from syncd.notify.outbox import enqueue
from syncd.store.context import Context
from syncd.store.models import ChoiceTokenRow
from syncd.store.repo import admin_from_row, load_session


def notify_expired_links(ctx: Context) -> int:
    """One admin email per link that expired unused while its session still waits."""
    now = ctx.clock()
    sent = 0
    with ctx.db.write() as orm:
        rows = orm.scalars(
            select(ChoiceTokenRow).where(
                ChoiceTokenRow.expires_at <= now,
                ChoiceTokenRow.used_at.is_(None),
                ChoiceTokenRow.expiry_notified.is_(False),
            )
        ).all()
        for tok in rows:
            tok.expiry_notified = True
            session, admin_row = load_session(orm, tok.session_id)
            if session.status is not Status.AWAITING_CUSTOMER:
                continue
            admin = admin_from_row(admin_row)
            notice = Notice(
                NoticeKind.LINK_EXPIRED,
                session.id,
                MappingProxyType({"expires": tok.expires_at.isoformat()}),
            )
            enqueue(
                orm,
                [notice],
                session,
                admin,
                ctx.uid(session.id),
                now,
                ctx.host,
                dedupe_suffix=f":{tok.id}",
            )
            sent += 1
    return sent
