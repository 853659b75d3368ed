"""Calendar leases: claims (``FOR UPDATE SKIP LOCKED``), the heartbeat that renews them, release.

A claim's lease is short (:data:`HEARTBEAT_LEASE`); a :class:`Heartbeat` renews it every
third of that while the worker holds the calendar, so a worker killed with ``kill -9``
leaves its calendars unsynced for at most one short lease. Commits check the lease
(:class:`syncd.engine.runner.Fence`), so a worker that lost it never commits.
"""

from __future__ import annotations

import logging
import random
import threading
from datetime import timedelta

from sqlalchemy import or_, select

from syncd.store.context import Context
from syncd.store.models import CalendarRow

log = logging.getLogger("syncd.app.daemon")
PAUSED_RETRY = timedelta(minutes=10)
#: The lease a claim takes; the heartbeat renews it every third of it while held.
HEARTBEAT_LEASE = timedelta(seconds=30)


def claim_calendars(
    ctx: Context,
    owner: str,
    lease: timedelta,
    due_only: bool,
    limit: int = 50,
    after: int = 0,
) -> list[int]:
    """Take a lease on calendars nobody else holds (and, with ``due_only``, that are due).

    At most ``limit`` calendars with ids above ``after``, in id order: a pass over every
    calendar claims batch after batch, each from the last id of the one before, until a
    claim comes back empty (issue 11: ``sync --once`` syncs every calendar).
    """
    now = ctx.clock()
    with ctx.db.write() as orm:
        stmt = (
            select(CalendarRow)
            .where(
                CalendarRow.busy_only.is_(False),
                CalendarRow.id > after,
                or_(
                    CalendarRow.lease_until.is_(None),
                    CalendarRow.lease_until < now,
                    CalendarRow.lease_owner == owner,
                ),
            )
            .order_by(CalendarRow.id)
            .limit(limit)
        )
        if due_only:
            stmt = stmt.where(
                or_(CalendarRow.next_sync_at.is_(None), CalendarRow.next_sync_at <= now)
            )
        if ctx.db.lock_clause():
            stmt = stmt.with_for_update(skip_locked=True)
        rows = orm.scalars(stmt).all()
        for row in rows:
            row.lease_owner, row.lease_until = owner, now + lease
            row.next_sync_at = row.lease_until  # a push notification moves it back to now
        return [r.id for r in rows]


def release_calendar(ctx: Context, calendar_id: int, owner: str, next_in: timedelta) -> None:
    """Give the lease back and schedule the next poll, with ±10 % jitter.

    A calendar paused because its credentials were refused is retried only every
    ten minutes; the first cycle that gets through un-pauses it.
    """
    release_calendars(ctx, [calendar_id], owner, next_in)


def release_calendars(ctx: Context, ids: list[int], owner: str, next_in: timedelta) -> None:
    """:func:`release_calendar` for many calendars in one transaction."""
    if not ids:
        return
    now = ctx.clock()
    with ctx.db.write() as orm:
        for row in orm.scalars(select(CalendarRow).where(CalendarRow.id.in_(ids))).all():
            wait = max(next_in, PAUSED_RETRY) if row.paused_reason is not None else next_in
            jitter = wait.total_seconds() * random.uniform(0.9, 1.1)
            if row.lease_owner != owner:
                continue
            notified = (
                row.next_sync_at is not None
                and row.lease_until is not None
                and (row.next_sync_at < row.lease_until)
            )
            row.lease_owner, row.lease_until = None, None
            if not notified:  # else: it changed during this sync, so sync it again at once
                row.next_sync_at = now + timedelta(seconds=jitter)


def renew_leases(ctx: Context, owner: str, ids: list[int], lease: timedelta) -> list[int]:
    """Extend ``owner``'s leases on ``ids``; returns the ids it still holds."""
    if not ids:
        return []
    now = ctx.clock()
    held: list[int] = []
    with ctx.db.write() as orm:
        stmt = select(CalendarRow).where(CalendarRow.id.in_(ids), CalendarRow.lease_owner == owner)
        for row in orm.scalars(stmt).all():
            if row.lease_until is not None and row.lease_until < now:
                continue  # expired: another worker may have it now; fencing will tell
            if row.next_sync_at is not None and row.next_sync_at == row.lease_until:
                row.next_sync_at = now + lease  # not notified meanwhile: keep it unclaimable
            row.lease_until = now + lease
            held.append(row.id)
    return held


class Heartbeat:
    """Renews this worker's leases on the calendars in hand until :meth:`stop`."""

    def __init__(self, ctx: Context, owner: str, lease: timedelta) -> None:
        self.ctx, self.owner, self.lease = ctx, owner, lease
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def hold(self, ids: list[int]) -> None:
        """Keep renewing ``ids``."""
        with self._lock:
            self._ids.update(ids)

    def drop(self, calendar_id: int) -> None:
        """Stop renewing ``calendar_id`` (released)."""
        with self._lock:
            self._ids.discard(calendar_id)

    def _run(self) -> None:
        interval = max(self.lease.total_seconds() / 3, 0.05)
        while not self._stop.wait(interval):
            with self._lock:
                ids = sorted(self._ids)
            try:
                renew_leases(self.ctx, self.owner, ids, self.lease)
            except Exception:  # the database is away: fencing keeps commits safe
                log.exception("lease heartbeat failed")
