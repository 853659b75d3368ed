"""An idle calendar cycle in two statements (issue 11, goal 8), on SQLite and PostgreSQL.

A warm cycle with nothing to do reads its calendar, admin and whether anything waits in
one statement (``fetch.peek``) and commits in one ``UPDATE`` (``fetch.commit_idle``), on
PostgreSQL without BEGIN/COMMIT. These tests count that, and check that the short path
keeps what the full commit guarantees: a session changed during the request is planned by
the next cycle, and a cycle that lost its lease, whose cursor moved or under which a
gesture was recorded commits nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from syncd.domain.model import Customer
from syncd.engine.planner import BreakerRules
from syncd.engine.runner import CycleReport, EngineSettings, Fence, sync_calendar
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.models import CalendarRow, IntentRow
from tests.fakes.memory_backend import MemoryBackend, MemoryCalendar

ADMIN = "coach@example.com"
OWNER = "worker-a"
SETTINGS = EngineSettings(settle=timedelta(minutes=2), breaker=BreakerRules(100, 1.0, False))


class World:
    """One admin with three sessions, mirrored in one in-memory calendar, leased to OWNER."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        services.add_admin(ctx, ADMIN, "Coach", "UTC")
        for i in range(3):
            self.book(i)
        with ctx.db.write() as orm:
            cal = CalendarRow(admin_id=1, backend="memory", settings={}, busy_only=False)
            orm.add(cal)
            orm.flush()
            self.cal_id = cal.id
        self.cal = MemoryCalendar()
        self.backend = MemoryBackend(self.cal)
        self.take_lease(OWNER)
        for _ in range(3):  # first mirror, its echoes, then settled
            assert self.cycle().error is None

    def book(self, i: int) -> str:
        start = self.ctx.clock() + timedelta(days=3 + i)
        customer = Customer(f"c{i}@example.org", f"Customer {i}", "UTC")
        return services.book(self.ctx, ADMIN, customer, start, start + timedelta(hours=1)).id

    def take_lease(self, owner: str) -> None:
        with self.ctx.db.write() as orm:
            row = orm.get_one(CalendarRow, self.cal_id)
            row.lease_owner, row.lease_until = owner, self.ctx.clock() + timedelta(seconds=30)

    def cycle(self) -> CycleReport:
        return sync_calendar(self.ctx, SETTINGS, self.cal_id, self.backend, Fence(OWNER))

    def row(self) -> CalendarRow:
        with self.ctx.db.read() as orm:
            return orm.get_one(CalendarRow, self.cal_id)

    def during_the_request(self, hook: Callable[[], None]) -> None:
        self.cal.faults.after_feed = hook


@pytest.fixture
def world(ctx: Context) -> World:
    return World(ctx)


class Statements:
    """The statements sent (BEGINs left out) and whether each ran in autocommit."""

    def __init__(self, ctx: Context) -> None:
        self.sent: list[tuple[str, bool]] = []
        self.engine = ctx.db.engine
        event.listen(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, _cursor: Any, stmt: str, *_: Any) -> None:
        if not stmt.lstrip().upper().startswith("BEGIN"):
            raw = conn.connection.dbapi_connection
            self.sent.append((stmt.split()[0].upper(), bool(getattr(raw, "autocommit", True))))

    def __enter__(self) -> Statements:
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def test_an_idle_cycle_is_one_read_and_one_update(world: World) -> None:
    before = world.row()
    world.cal.version += 1  # a new sync token, nothing changed
    with Statements(world.ctx) as counted:
        report = world.cycle()
    assert report.error is None and not report.fenced and report.writes == 0
    assert [kind for kind, _ in counted.sent] == ["SELECT", "UPDATE"]
    if not world.ctx.db.is_sqlite:  # no BEGIN/COMMIT round trips
        assert all(autocommit for _, autocommit in counted.sent)
    after = world.row()
    assert after.cursor == str(world.cal.version) != before.cursor
    assert after.last_sync_at is not None and after.last_error is None
    assert (after.synced_revision, after.synced_id) == (before.synced_revision, before.synced_id)


def test_a_session_booked_during_the_request_is_planned_by_the_next_cycle(
    world: World,
) -> None:
    booked: list[str] = []
    world.during_the_request(lambda: booked.append(world.book(7)))
    assert world.cycle().error is None
    uid = world.ctx.uid(booked[0])
    rid = world.backend.remote_id_for(uid, booked[0])
    assert world.cycle().error is None
    assert rid in world.cal.events


def test_an_idle_cycle_that_lost_its_lease_commits_nothing(world: World) -> None:
    before = world.row()
    world.cal.version += 1
    world.during_the_request(lambda: world.take_lease("worker-b"))
    report = world.cycle()
    assert report.fenced
    after = world.row()
    assert (after.cursor, after.last_sync_at) == (before.cursor, before.last_sync_at)


def test_an_idle_cycle_whose_cursor_moved_commits_nothing(world: World) -> None:
    def move() -> None:
        with world.ctx.db.write() as orm:
            orm.get_one(CalendarRow, world.cal_id).cursor = "moved"

    world.cal.version += 1
    world.during_the_request(move)
    assert world.cycle().fenced
    assert world.row().cursor == "moved"


def test_a_gesture_recorded_during_the_request_stops_the_idle_commit(world: World) -> None:
    sid = world.book(8)
    assert world.cycle().error is None  # its event is written and settled
    assert world.cycle().error is None
    before = world.row()

    def record() -> None:
        with world.ctx.db.write() as orm:
            orm.add(
                IntentRow(
                    calendar_id=world.cal_id,
                    session_id=sid,
                    kind="removed",
                    payload={},
                    observed_hash="x",
                    first_seen=world.ctx.clock(),
                    held=False,
                )
            )

    world.cal.version += 1
    world.during_the_request(record)
    assert world.cycle().fenced
    assert world.row().last_sync_at == before.last_sync_at
    with world.ctx.db.read() as orm:
        assert orm.scalars(select(IntentRow.session_id)).all() == [sid]
