"""Leases as one statement a batch (issue 11): the claim carries what opening a backend
takes, the release keeps a notified calendar due, a paused one waits ten minutes."""

from __future__ import annotations

from datetime import timedelta

from syncd.app.leases import PAUSED_RETRY, claim_batch, release_calendars
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.models import CalendarRow
from tests.conftest import Clock


def test_claim_batch_release_batch(ctx: Context, clock: Clock) -> None:
    services.add_admin(ctx, "coach@example.com", "Coach", "UTC")
    with ctx.db.write() as orm:
        for i in range(4):
            orm.add(CalendarRow(admin_id=1, backend="caldav", settings={"url": f"u{i}"}))
    got = claim_batch(ctx, "w", timedelta(seconds=30), due_only=True, limit=3)
    assert [(c.id, c.backend, c.settings) for c in got] == [
        (i, "caldav", {"url": f"u{i - 1}"}) for i in (1, 2, 3)
    ]
    assert [c.id for c in claim_batch(ctx, "x", timedelta(seconds=30), True, after=0)] == [4]
    now = ctx.clock()
    with ctx.db.write() as orm:
        orm.get_one(CalendarRow, 2).next_sync_at = now  # notified during its sync
        orm.get_one(CalendarRow, 3).paused_reason = "credentials refused"
    release_calendars(ctx, [1, 2, 3, 4], "w", timedelta(seconds=60))  # 4 is x's
    with ctx.db.read() as orm:
        rows = {r.id: r for r in orm.query(CalendarRow)}
    assert all(rows[i].lease_owner is None for i in (1, 2, 3))
    assert rows[4].lease_owner == "x"
    assert timedelta(seconds=54) <= rows[1].next_sync_at - now <= timedelta(seconds=66)
    assert rows[2].next_sync_at == now
    assert rows[3].next_sync_at - now >= PAUSED_RETRY * 0.9
