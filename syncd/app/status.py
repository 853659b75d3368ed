"""``syncd status``: calendars, breakers, pending gestures and the outbox at a glance.

Times are shown in the zone of each calendar's admin (``Tue 1 Dec 2026, 16:00 CET
(Europe/Berlin)``), waits as ages ("waiting 3 min"); ``--json`` keeps UTC instants and adds
the ages in seconds.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from syncd.app.runtime import Runtime, emit
from syncd.domain.timefmt import human
from syncd.store import listing
from syncd.store.listing import UNSENT, CalendarRecord, IntentRecord, StatusRows

if TYPE_CHECKING:
    from syncd.store.db import Database

#: Gesture kinds as a person reads them.
GESTURE_WORDS = {
    "reschedule": "moved (reschedule)",
    "cancel": "cancel",
    "removed": "deleted (cancel once verified)",
    "choose": "let the customer choose",
    "invalid": "a change syncd will undo",
}


def lease_of_dead_worker(owner: str | None, until: datetime | None, now: datetime) -> bool:
    """True when a lease is held by a worker that is gone: expired, or a dead local pid."""
    if owner is None:
        return False
    if until is not None and until < now:
        return True
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's worker: only its lease's expiry tells
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, someone else's
    return False


def age_words(seconds: float) -> str:
    """``42 s``, ``3 min``, ``2 h 5 min``, ``3 d 4 h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    m = s // 60
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def _gestures(intents: list[IntentRecord], now: datetime) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {}
    for i in intents:
        out.setdefault(i.calendar_id, []).append(
            {
                "session_id": i.session_id,
                "kind": i.kind,
                "first_seen": i.first_seen,
                "age_seconds": int((now - i.first_seen).total_seconds()),
                "held": bool(i.held),
            }
        )
    return out


def orm_rows(db: Database) -> StatusRows:
    """:class:`StatusRows` over SQLAlchemy (PostgreSQL, or when the fast path declines)."""
    from sqlalchemy import func, select

    from syncd.store.models import AdminRow, CalendarRow, IntentRow, MirrorRow, OutboxRow

    unsent = OutboxRow.status.in_(UNSENT)
    with db.read() as orm:
        cals = orm.execute(
            select(CalendarRow, AdminRow.email, AdminRow.tz)
            .join(AdminRow, AdminRow.id == CalendarRow.admin_id)
            .order_by(CalendarRow.id)
        ).all()
        failing = orm.scalars(
            select(OutboxRow.last_error)
            .where(unsent, OutboxRow.last_error.is_not(None))
            .order_by(OutboxRow.next_attempt_at.desc(), OutboxRow.id.desc())
            .limit(1)
        ).first()
        return StatusRows(
            calendars=[(_record(c), email, tz) for c, email, tz in cals],
            outbox={
                k: int(v)
                for k, v in orm.execute(
                    select(OutboxRow.status, func.count()).group_by(OutboxRow.status)
                ).all()
            },
            mirrors={
                k: int(v)
                for k, v in orm.execute(
                    select(MirrorRow.calendar_id, func.count())
                    .where(MirrorRow.gone.is_(False))
                    .group_by(MirrorRow.calendar_id)
                ).all()
            },
            intents=[
                IntentRecord(i.calendar_id, i.session_id, i.kind, i.first_seen, bool(i.held))
                for i in orm.scalars(select(IntentRow).order_by(IntentRow.first_seen, IntentRow.id))
            ],
            oldest_unsent=orm.scalar(select(func.min(OutboxRow.created_at)).where(unsent)),
            last_unsent_error=failing,
        )


def _record(c: Any) -> CalendarRecord:
    """An ORM calendar row as the listings' record."""
    return CalendarRecord(
        id=c.id,
        backend=c.backend,
        settings=c.settings,
        busy_only=c.busy_only,
        last_sync_at=c.last_sync_at,
        last_error=c.last_error,
        breaker_tripped_at=c.breaker_tripped_at,
        paused_reason=c.paused_reason,
        lease_owner=c.lease_owner,
        lease_until=c.lease_until,
    )


def document(rows: StatusRows, now: datetime) -> dict[str, Any]:
    """The ``--json`` document of ``syncd status`` (either path's rows)."""
    gestures = _gestures(rows.intents, now)
    calendars: list[dict[str, Any]] = [
        {
            "id": c.id,
            "backend": c.backend,
            "busy_only": c.busy_only,
            "last_sync_at": c.last_sync_at,
            "last_error": c.last_error,
            "breaker_tripped": c.breaker_tripped_at is not None,
            "paused_reason": c.paused_reason,
            "pending_gestures": len(gestures.get(c.id, [])),
            "mirrored_events": rows.mirrors.get(c.id, 0),
            "lease_owner": c.lease_owner,
            "lease_until": c.lease_until,
            "lease_dead": lease_of_dead_worker(c.lease_owner, c.lease_until, now),
            "admin": email,
            "tz": tz,
            "breaker_tripped_at": c.breaker_tripped_at,
            "held_gestures": sum(g["held"] for g in gestures.get(c.id, [])),
            "gestures": gestures.get(c.id, []),
        }
        for c, email, tz in rows.calendars
    ]
    oldest = rows.oldest_unsent
    mail = {
        "oldest_pending_at": oldest,
        "oldest_pending_age_seconds": None
        if oldest is None
        else int((now - oldest).total_seconds()),
        "last_error": rows.last_unsent_error,
    }
    return {"calendars": calendars, "outbox": rows.outbox, "mail": mail}


def collect(rt: Runtime) -> dict[str, Any]:
    """What ``syncd status`` reports, read in one transaction (the ``--json`` document).

    A SQLite file is read over ``sqlite3`` (:mod:`syncd.store.listing`, issue 11: start-up);
    anything else, or whatever that path declines, over SQLAlchemy.
    """
    rows = listing.read(rt.config.database.url, listing.status_rows)
    if rows is None:
        return document(orm_rows(rt.ctx.db), rt.ctx.clock())
    return document(rows, datetime.now(UTC))


def _calendar_lines(c: dict[str, Any]) -> list[str]:
    tz = c["tz"]

    def when(t: datetime | None, none: str = "never") -> str:
        return human(t, tz) if t is not None else none

    flags = []
    if c["breaker_tripped"]:
        flags.append(
            f"BREAKER TRIPPED at {when(c['breaker_tripped_at'])}, holding "
            f"{c['held_gestures']} (syncd breaker release|restore {c['id']})"
        )
    else:
        flags.append("breaker ok")
    if c["paused_reason"]:
        flags.append(f"PAUSED: {c['paused_reason']}")
    if c["last_error"]:
        flags.append(f"last error: {c['last_error']}")
    if c["lease_dead"]:
        flags.append(
            f"LEASE HELD BY A DEAD WORKER {c['lease_owner']} (free at {when(c['lease_until'])})"
        )
    n = c["pending_gestures"]
    lines = [
        f"calendar {c['id']} ({c['backend']}, {c['admin']}): last sync {when(c['last_sync_at'])}, "
        f"{c['mirrored_events']} events, {n} pending gesture{'' if n == 1 else 's'}; "
        + "; ".join(flags)
    ]
    for g in c["gestures"]:
        held = ", held by the breaker" if g["held"] else ""
        kind = GESTURE_WORDS.get(g["kind"], g["kind"].replace("_", " "))
        lines.append(
            f"  gesture on {g['session_id']}: {kind}, waiting {age_words(g['age_seconds'])}"
            f" (seen {when(g['first_seen'])}){held}"
        )
    return lines


def status(rt: Runtime) -> int:
    """Calendars, breakers, pending gestures and the outbox at a glance."""
    data = collect(rt)
    lines: list[str] = []
    for c in data["calendars"]:
        lines.extend(_calendar_lines(c))
    ob, mail = data["outbox"], data["mail"]
    line = "outbox: " + (", ".join(f"{v} {k}" for k, v in sorted(ob.items())) or "empty")
    if mail["oldest_pending_age_seconds"] is not None:
        line += f"; oldest unsent email waiting {age_words(mail['oldest_pending_age_seconds'])}"
    if mail["last_error"]:
        line += f"; last SMTP error: {mail['last_error']}"
    lines.append(line)
    emit(rt.args, data, lines)
    return 0
