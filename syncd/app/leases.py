"""Calendar leases: claims (``FOR UPDATE SKIP LOCKED``), the heartbeat that renews them, release.

A claim's lease is short (:data:`HEARTBEAT_LEASE`); a :class:`Heartbeat` renews it every
third of that while the worker holds the calendar, so a worker killed with ``kill -9``
leaves its calendars unsynced for at most one short lease. Commits check the lease
(:class:`syncd.engine.runner.Fence`), so a worker that lost it never commits.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    String,
    Table,
    Update,
    and_,
    bindparam,
    case,
    or_,
    select,
    update,
)

from syncd.store.context import Context
from syncd.store.models import CalendarRow, UTCDateTime

log = logging.getLogger("syncd.app.daemon")
PAUSED_RETRY = timedelta(minutes=10)
#: The lease a claim takes; the heartbeat renews it every third of it while held.
HEARTBEAT_LEASE = timedelta(seconds=30)
_CALENDARS = cast(Table, CalendarRow.__table__)  # leases are Core statements, a batch each


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
    return [c.id for c in claim_batch(ctx, owner, lease, due_only, limit, after)]


@dataclass(frozen=True)
class Claimed:
    """A claimed calendar, with what opening its backend takes."""

    id: int
    backend: str
    settings: dict[str, Any]


def claim_batch(
    ctx: Context,
    owner: str,
    lease: timedelta,
    due_only: bool,
    limit: int = 50,
    after: int = 0,
) -> list[Claimed]:
    """:func:`claim_calendars` with each calendar's backend and settings, in id order.

    One ``UPDATE … WHERE id IN (SELECT … LIMIT n [FOR UPDATE SKIP LOCKED]) RETURNING``, a
    transaction of its own (:meth:`syncd.store.db.Database.write_one`).
    """
    now = ctx.clock()
    stmt = _claim_statement(due_only, ctx.db.lock_clause())
    params = {"c_after": after, "c_now": now, "c_owner": owner, "c_limit": limit}
    params["c_until"] = now + lease  # a push notification moves next_sync_at back to now
    rows, _ = ctx.db.write_one(stmt, params)
    return sorted((Claimed(r.id, r.backend, dict(r.settings or {})) for r in rows), key=_id)


@functools.cache
def _claim_statement(due_only: bool, skip_locked: bool) -> Update:
    """The claim, built once (its parameters bound at each call): no statement is put
    together again on the hot path of an idle cycle."""
    t = _CALENDARS
    now = bindparam("c_now", type_=UTCDateTime)
    pick = (
        select(t.c.id)
        .where(
            t.c.busy_only.is_(False),
            t.c.id > bindparam("c_after", type_=Integer),
            or_(
                t.c.lease_until.is_(None),
                t.c.lease_until < now,
                t.c.lease_owner == bindparam("c_owner", type_=String),
            ),
        )
        .order_by(t.c.id)
        .limit(bindparam("c_limit", type_=Integer))
    )
    if due_only:
        pick = pick.where(or_(t.c.next_sync_at.is_(None), t.c.next_sync_at <= now))
    if skip_locked:
        pick = pick.with_for_update(skip_locked=True)
    until = bindparam("c_until", type_=UTCDateTime)
    return (
        update(t)
        .where(t.c.id.in_(pick.scalar_subquery()))
        .values(
            lease_owner=bindparam("c_owner", type_=String), lease_until=until, next_sync_at=until
        )
        .returning(t.c.id, t.c.backend, t.c.settings)
    )


def _id(c: Claimed) -> int:
    return c.id


def release_calendar(ctx: Context, calendar_id: int, owner: str, next_in: timedelta) -> None:
    """Give the lease back and schedule the next poll, with ±10 % jitter.

    A calendar paused because its credentials were refused is retried only every
    ten minutes; the first cycle that gets through un-pauses it.
    """
    release_calendars(ctx, [calendar_id], owner, next_in)


def release_calendars(ctx: Context, ids: list[int], owner: str, next_in: timedelta) -> None:
    """:func:`release_calendar` for many calendars: one statement (each calendar's release
    stands on its own: on PostgreSQL each commits by itself, in one round trip for all).

    A calendar notified during its sync (``next_sync_at`` moved below ``lease_until``)
    keeps that ``next_sync_at``, so it is synced again at once.
    """
    if not ids:
        return
    now = ctx.clock()
    paused_wait = max(next_in, PAUSED_RETRY)
    params = [
        {
            "b_id": cid,
            "b_owner": owner,
            "b_next": now + next_in * random.uniform(0.9, 1.1),
            "b_paused": now + paused_wait * random.uniform(0.9, 1.1),
        }
        for cid in ids
    ]
    ctx.db.write_one(_release_statement(ctx.db.no_flush_wait()), params)


@functools.cache
def _release_statement(no_flush_wait: ColumnElement[bool]) -> Update:
    t = _CALENDARS
    notified = and_(
        t.c.next_sync_at.is_not(None),
        t.c.lease_until.is_not(None),
        t.c.next_sync_at < t.c.lease_until,
    )
    return (
        update(t)
        .where(
            t.c.id == bindparam("b_id"),
            t.c.lease_owner == bindparam("b_owner"),
            no_flush_wait,  # lost in a crash: the calendar is due sooner, or its lease expires
        )
        .values(
            lease_owner=None,
            lease_until=None,
            next_sync_at=case(
                (notified, t.c.next_sync_at),
                (t.c.paused_reason.is_not(None), bindparam("b_paused", type_=UTCDateTime)),
                else_=bindparam("b_next", type_=UTCDateTime),
            ),
        )
    )


def renew_leases(ctx: Context, owner: str, ids: list[int], lease: timedelta) -> list[int]:
    """Extend ``owner``'s leases on ``ids``; returns the ids it still holds.

    An expired lease is not renewed (another worker may have the calendar now; fencing
    will tell). A calendar not notified meanwhile stays unclaimable (``next_sync_at``
    follows ``lease_until``).
    """
    if not ids:
        return []
    now = ctx.clock()
    params = {"r_ids": list(ids), "r_owner": owner, "r_now": now, "r_until": now + lease}
    rows, _ = ctx.db.write_one(_renew_statement(), params)
    return sorted(r.id for r in rows)


@functools.cache
def _renew_statement() -> Update:
    t = _CALENDARS
    until = bindparam("r_until", type_=UTCDateTime)
    return (
        update(t)
        .where(
            t.c.id.in_(bindparam("r_ids", expanding=True)),
            t.c.lease_owner == bindparam("r_owner", type_=String),
            or_(
                t.c.lease_until.is_(None), t.c.lease_until >= bindparam("r_now", type_=UTCDateTime)
            ),
        )
        .values(
            lease_until=until,
            next_sync_at=case((t.c.next_sync_at == t.c.lease_until, until), else_=t.c.next_sync_at),
        )
        .returning(t.c.id)
    )


class Heartbeat:
    """Renews this worker's leases on the calendars in hand until :meth:`stop`.

    The calendars in hand are at most a claim batch or two, so a renewal is one small
    statement every third of the lease.
    """

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
