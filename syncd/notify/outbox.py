"""The outbox writer: notices become rows in the same transaction as the change.

Unsent customer notices of one session coalesce: a newer one supersedes every pending
older one, so the customer hears the final state once ("moved" then "canceled" before the
sender ran sends only the cancel). A superseded "moved" hands its old time on, and a
superseded "booked" turns the newer notice into a "booked" at the new time.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session as Orm

from syncd.domain.model import CUSTOMER_NOTICES, Admin, Notice, NoticeKind, Session
from syncd.domain.timefmt import iso_utc
from syncd.errors import UsageError
from syncd.store.context import Context
from syncd.store.models import OutboxRow

PENDING = "pending"
SENDING = "sending"
SENT = "sent"
DEAD = "dead"
SUPERSEDED = "superseded"
STATUSES = (PENDING, SENDING, SENT, DEAD, SUPERSEDED)
#: ``orm.info`` key: sessions given an outbox row in this transaction (maybe unwritten).
_UNFLUSHED = "outbox_sessions"
#: ``orm.info`` key: what :func:`read_near` read, by session: (prefix, rows).
_NEAR = "outbox_near"


def session_snapshot(session: Session, admin: Admin, uid: str) -> dict[str, Any]:
    """What an email about ``session`` needs, frozen at the time of the change."""
    return {
        "id": session.id,
        "uid": uid,
        "start": session.start.isoformat(),
        "end": session.end.isoformat(),
        "status": session.status.value,
        "sequence": session.sequence,
        "cancel_reason": session.cancel_reason,
        "customer": {
            "email": session.customer.email,
            "name": session.customer.name,
            "tz": session.customer.tz,
        },
        "admin": {"email": admin.email, "name": admin.name, "tz": admin.tz},
    }


def enqueue(
    orm: Orm,
    notices: Iterable[Notice],
    session: Session | None,
    admin: Admin,
    uid: str,
    now: datetime,
    host: str,
    extra: dict[str, Any] | None = None,
    dedupe_suffix: str = "",
) -> list[OutboxRow]:
    """Add one outbox row per notice; returns the rows (added, written with the next
    flush: their ids come then)."""
    rows: list[OutboxRow] = []
    for notice in notices:
        data: dict[str, Any] = dict(notice.data)
        kind = notice.kind
        if notice.to_customer:
            assert session is not None
            recipient = session.customer.email
            # One read: the session's pending rows (to coalesce) and any row of this very
            # revision (a notice written before, e.g. by a replayed commit).
            prefix = f"{session.id}:{session.sequence}:"
            read = orm.info.get(_NEAR, {}).pop(session.id, None)
            if session.id in orm.info.get(_UNFLUSHED, ()):
                orm.flush()  # a row written for the session in this transaction is one
                read = None
            if read is not None and read[0] == prefix:
                near = read[1]
            else:
                with orm.no_autoflush:  # nothing else pending can be a row of the session
                    near = _near(orm, session.id, prefix)
            kind, data = _coalesce([r for r in near if r.status == PENDING], kind, data)
            same = {r.dedupe_key: r for r in near if r.dedupe_key.startswith(prefix)}
            if kind is NoticeKind.RESCHEDULED and _back_where_it_was(data, session):
                continue  # moved and moved back before anything was sent: nothing to tell
            key = f"{prefix}{kind.value}{dedupe_suffix}"
            existing = same.get(key)
        else:
            recipient = admin.email
            key = f"admin:{notice.session_id or '-'}:{notice.kind.value}:{now.isoformat()}"
            key += dedupe_suffix
            existing = orm.scalars(select(OutboxRow).where(OutboxRow.dedupe_key == key)).first()
        payload: dict[str, Any] = {"data": data}
        if session is not None:
            payload["session"] = session_snapshot(session, admin, uid)
        else:
            payload["admin"] = {"email": admin.email, "name": admin.name, "tz": admin.tz}
        if extra:
            payload.update(extra)
        if existing is not None:
            rows.append(existing)
            continue
        row = OutboxRow(
            dedupe_key=key,
            session_id=notice.session_id,
            kind=kind.value,
            recipient=recipient,
            payload=payload,
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            # Unique without the row's id, so the row need not be written now: many rows
            # of one commit go to the database together.
            message_id=f"<outbox-{secrets.token_hex(10)}@{host}>",
            created_at=now,
        )
        orm.add(row)
        if notice.session_id is not None:
            orm.info.setdefault(_UNFLUSHED, set()).add(notice.session_id)
        rows.append(row)
    return rows


def _back_where_it_was(data: dict[str, Any], session: Session) -> bool:
    """True when a coalesced "moved" would say "moved from 12:00 to 12:00"."""
    return (
        data.get("old_start") == session.start.isoformat()
        and data.get("old_end") == session.end.isoformat()
    )


def read_near(orm: Orm, prefixes: dict[str, str]) -> None:
    """Read ahead, for many sessions at once, what :func:`enqueue` reads for each: the
    pending rows and the rows keyed ``prefixes[session id]...`` (the revision the next
    change of the session will have). A few statements for a commit of many gestures;
    :func:`enqueue` reads again for a session whose revision turns out otherwise."""
    if not prefixes:
        return
    o = OutboxRow
    ids = sorted(prefixes)
    wanted: list[int] = []
    found: dict[str, list[int]] = {sid: [] for sid in ids}
    for i in range(0, len(ids), 500):
        light = orm.execute(
            select(o.id, o.session_id, o.status, o.dedupe_key).where(
                o.session_id.in_(ids[i : i + 500])
            )
        ).all()
        for rid, sid, status, key in light:
            if sid is not None and (status == PENDING or key.startswith(prefixes[sid])):
                wanted.append(rid)
                found[sid].append(rid)
    rows = {r.id: r for r in orm.scalars(select(o).where(o.id.in_(wanted)))} if wanted else {}
    cache: dict[str, tuple[str, list[OutboxRow]]] = orm.info.setdefault(_NEAR, {})
    for sid in ids:
        cache[sid] = (prefixes[sid], [rows[rid] for rid in sorted(found[sid])])


def _near(orm: Orm, session_id: str, prefix: str) -> list[OutboxRow]:
    """The session's pending rows and its rows keyed ``prefix...``, oldest first."""
    return list(
        orm.scalars(
            select(OutboxRow)
            .where(
                OutboxRow.session_id == session_id,
                or_(OutboxRow.status == PENDING, OutboxRow.dedupe_key.startswith(prefix)),
            )
            .order_by(OutboxRow.id)
        ).all()
    )


def _coalesce(
    stale: list[OutboxRow], kind: NoticeKind, data: dict[str, Any]
) -> tuple[NoticeKind, dict[str, Any]]:
    """Supersede the session's pending customer notices; fold what they carried."""
    customer_kinds = {k.value for k in CUSTOMER_NOTICES}
    for row in stale:
        if row.kind not in customer_kinds:
            continue
        row.status = SUPERSEDED
        row.payload = {k: v for k, v in row.payload.items() if k not in ("token", "link")}
        old = row.payload.get("data", {})
        if row.kind == NoticeKind.BOOKED.value and kind in (
            NoticeKind.RESCHEDULED,
            NoticeKind.CONFIRMED,
        ):
            kind = NoticeKind.BOOKED
            data = {}
        elif row.kind in (NoticeKind.RESCHEDULED.value, NoticeKind.CONFIRMED.value) and (
            kind in (NoticeKind.RESCHEDULED, NoticeKind.CONFIRMED)
        ):
            data = {**data, "old_start": old.get("old_start"), "old_end": old.get("old_end")}
    return kind, data


def list_rows(ctx: Context, status: str | None = None) -> list[OutboxRow]:
    """Outbox rows, oldest first, optionally of one status (``syncd outbox list``)."""
    if status is not None and status not in STATUSES:
        raise UsageError(f'"{status}" is not an outbox status (use {", ".join(STATUSES)})')
    stmt = select(OutboxRow).order_by(OutboxRow.id)
    if status is not None:
        stmt = stmt.where(OutboxRow.status == status)
    with ctx.db.read() as orm:
        return list(orm.scalars(stmt).all())


def outbox_json(row: OutboxRow) -> dict[str, Any]:
    """One row for ``syncd outbox list --json`` and the REST API."""
    return {
        "id": row.id,
        "session": row.session_id,
        "kind": row.kind,
        "recipient": row.recipient,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": iso_utc(row.next_attempt_at) if row.next_attempt_at else None,
        "message_id": row.message_id,
        "last_error": row.last_error,
        "created_at": iso_utc(row.created_at) if row.created_at else None,
        "sent_at": iso_utc(row.sent_at) if row.sent_at else None,
    }
