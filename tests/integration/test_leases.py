"""Several workers on one database: each calendar is held by one worker at a time."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

from syncd import config as config_mod
from syncd.app.daemon import (
    HEARTBEAT_LEASE,
    claim_calendars,
    claim_lease,
    release_calendar,
    renew_leases,
)
from syncd.services import booking as services
from syncd.store.context import Context, utcnow
from syncd.store.db import Database
from syncd.store.models import CalendarRow
from tests.cli_helpers import syncd, write_config
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


def test_a_killed_workers_calendars_are_claimable_after_one_short_lease(
    ctx: Context, clock: Clock
) -> None:
    """Issue 10, item 3: kill -9 no longer leaves calendars unsynced for the whole
    ``[sync] lease`` (5 minutes): a claim takes a short lease that the heartbeat renews."""
    ids = _calendars(ctx, 3)
    cfg = config_mod.parse('[web]\npublic_url = "https://book.example.com"\n', "test")
    lease = claim_lease(cfg)
    assert sorted(claim_calendars(ctx, "killed", lease, due_only=True)) == ids
    clock.advance(seconds=HEARTBEAT_LEASE.total_seconds() + 1)  # no heartbeat: it died
    assert sorted(claim_calendars(ctx, "alive", lease, due_only=True)) == ids


def test_the_heartbeat_renews_the_leases_in_hand_and_never_an_expired_one(
    ctx: Context, clock: Clock
) -> None:
    ids = _calendars(ctx, 2)
    lease = HEARTBEAT_LEASE
    assert sorted(claim_calendars(ctx, "w1", lease, due_only=True)) == ids
    clock.advance(seconds=20)
    assert sorted(renew_leases(ctx, "w1", ids, lease)) == ids
    clock.advance(seconds=20)  # 40 s after the claim: held thanks to the renewal
    assert claim_calendars(ctx, "w2", lease, due_only=False) == []
    clock.advance(seconds=31)  # w1 stopped renewing: expired, and not renewed again
    assert renew_leases(ctx, "w1", ids, lease) == []
    assert sorted(claim_calendars(ctx, "w2", lease, due_only=False)) == ids
    for cid in ids:  # release still schedules the next poll (next_sync_at moved along)
        release_calendar(ctx, cid, "w2", timedelta(seconds=60))
    assert claim_calendars(ctx, "w2", lease, due_only=True) == []


def test_status_shows_a_lease_held_by_a_dead_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    db = Database(url)
    db.upgrade()
    ctx = Context(db, "https://book.example.com", clock=utcnow)
    _calendars(ctx, 1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with db.write() as orm:
        row = orm.get_one(CalendarRow, 1)
        row.lease_owner = f"{socket.gethostname()}:{dead.pid}"
        row.lease_until = utcnow() + timedelta(minutes=5)
    db.dispose()
    out = syncd(write_config(tmp_path / "c.toml", url), "status")
    assert out.code == 0, out.err
    assert f"LEASE HELD BY A DEAD WORKER {socket.gethostname()}:{dead.pid}" in out.out
