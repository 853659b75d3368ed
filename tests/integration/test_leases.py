"""Several workers on one database: each calendar is held by one worker at a time."""

from __future__ import annotations

import threading
from datetime import timedelta

from syncd.app.daemon import claim_calendars, release_calendar
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.models import CalendarRow
from tests.conftest import Clock


def _calendars(ctx: Context, n: int) -> list[int]:
    services.add_admin(ctx, "coach@example.com", "Coach", "UTC")
    ids = []
    with ctx.db.write() as orm:
        for i in range(n):
            row = CalendarRow(
                admin_id=1, backend="caldav", settings={"url": f"u{i}"}, busy_only=False
            )
            orm.add(row)
            orm.flush()
            ids.append(row.id)
    return ids


def test_concurrent_workers_claim_disjoint_calendars(ctx: Context, clock: Clock) -> None:
    ids = _calendars(ctx, 12)
    claimed: dict[str, list[int]] = {}
    barrier = threading.Barrier(3)

    def worker(name: str) -> None:
        barrier.wait()
        claimed[name] = claim_calendars(ctx, name, timedelta(minutes=5), due_only=True, limit=5)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [cid for got in claimed.values() for cid in got]
    assert len(every) == len(set(every)), claimed  # nobody got a calendar twice
    assert sorted(every) == ids  # and every calendar went to someone


def test_a_dead_workers_lease_expires_and_release_schedules_the_next_poll(
    ctx: Context, clock: Clock
) -> None:
    ids = _calendars(ctx, 2)
    assert sorted(claim_calendars(ctx, "dead", timedelta(minutes=5), due_only=True)) == ids
    assert claim_calendars(ctx, "alive", timedelta(minutes=5), due_only=False) == []
    clock.advance(minutes=6)  # the dead worker never released
    assert sorted(claim_calendars(ctx, "alive", timedelta(minutes=5), due_only=True)) == ids
    for cid in ids:
        release_calendar(ctx, cid, "alive", timedelta(seconds=60))
    assert claim_calendars(ctx, "alive", timedelta(minutes=5), due_only=True) == []
    clock.advance(seconds=70)
    assert sorted(claim_calendars(ctx, "alive", timedelta(minutes=5), due_only=True)) == ids
