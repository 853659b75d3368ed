"""A cycle plans what changed, not the whole calendar (issue 11, goal 2).

Each test runs the real runner on the in-memory calendar (tests/unit/harness.py) and
counts the sessions the cycle loads from the database (``syncd.engine.state`` builds
them through ``load_sessions``): an idle cycle loads none, a change loads the sessions it
touches, and everything a full load would have found is still found.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from syncd.domain.model import Actor, Customer
from syncd.engine import state
from syncd.engine.desired import GestureRules
from syncd.engine.planner import BreakerRules
from syncd.engine.runner import EngineSettings
from syncd.services import booking as services
from syncd.store.models import CalendarRow, MirrorRow, SessionRow
from tests.unit.harness import ADMIN, NOW, Harness

NAMES = [f"Customer {i}" for i in range(12)]


@pytest.fixture
def h() -> Iterator[Harness]:
    world = Harness(NAMES)
    world.cycle()  # the cursor past syncd's own writes, every mirror settled
    yield world
    world.close()


class Loads:
    """Counts the sessions the engine loads (every load goes through load_sessions):
    ``ids`` all of them, ``sizes`` how many each load read."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ids: list[str] = []
        self.sizes: list[int] = []
        real = state.load_sessions

        def counting(orm, rows, with_history=True):  # type: ignore[no-untyped-def]
            self.sizes.append(len(rows))
            self.ids.extend(r.id for r in rows)
            return real(orm, rows, with_history)

        monkeypatch.setattr(state, "load_sessions", counting)


def test_an_idle_cycle_loads_no_session(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    loads = Loads(monkeypatch)
    report = h.cycle()
    assert report.error is None and report.writes == 0
    assert loads.ids == []


def test_an_edit_loads_only_its_session(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    s = h.session(3)
    h.cal.human_set(h.rid(3), start=s.start + timedelta(hours=2), end=s.end + timedelta(hours=2))
    loads = Loads(monkeypatch)
    h.cycle()
    assert set(loads.ids) == {h.sids[3]}
    h.settle()
    assert h.session(3).start == s.start + timedelta(hours=2)
    assert [k for k, *_ in h.customer_emails()] == ["rescheduled"]


def test_a_booking_and_a_customer_move_reach_the_calendar(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = NOW + timedelta(days=40)
    new = services.book(
        h.ctx, ADMIN, Customer("new@example.org", "New", "UTC"), start, start + timedelta(hours=1)
    )
    old = h.session(5)
    services.reschedule(h.ctx, h.sids[5], old.start + timedelta(days=20))
    loads = Loads(monkeypatch)
    h.cycle()
    assert set(loads.ids) >= {new.id, h.sids[5]}
    assert len(set(loads.ids)) <= 3  # the two changed sessions, loaded again after the writes
    moved = h.event(5)
    assert moved is not None and moved.content.start == old.start + timedelta(days=20)
    rid = h.backend.remote_id_for(h.ctx.uid(new.id), new.id)
    assert h.cal.events[rid].content.start == start
    loads.ids.clear()
    h.cycle()
    assert loads.ids == []  # settled again


def test_a_cancel_by_the_customer_removes_the_event(h: Harness) -> None:
    services.cancel(h.ctx, h.sids[2], "ill", actor=Actor.CUSTOMER)
    h.cycle()
    assert h.event(2) is None


def test_a_failed_write_is_tried_again_on_the_next_idle_cycle(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = h.session(4)
    services.reschedule(h.ctx, h.sids[4], old.start + timedelta(days=9))
    h.cal.faults.fail_writes = True
    report = h.cycle()
    assert report.write_failures == 1
    ev = h.event(4)
    assert ev is not None and ev.content.start == old.start  # not written yet
    h.cal.faults.fail_writes = False
    loads = Loads(monkeypatch)
    h.cycle()  # nothing new: the unsettled mirror alone brings the session back
    assert h.sids[4] in loads.ids
    ev = h.event(4)
    assert ev is not None and ev.content.start == old.start + timedelta(days=9)


def test_an_update_the_plan_skips_is_marked_settled(h: Harness) -> None:
    """Marks follow the plan: a session touched without a time change settles again."""
    with h.db.write() as orm:
        row = orm.get_one(SessionRow, h.sids[6])
        row.choose_message = "touched"  # a new revision, the same event
    h.cycle()
    with h.db.read() as orm:
        mirror = orm.scalars(select(MirrorRow).where(MirrorRow.session_id == h.sids[6])).one()
        cal = orm.get_one(CalendarRow, h.cal_id)
        revision = orm.get_one(SessionRow, h.sids[6]).revision
    assert mirror.settled
    assert cal.synced_revision is not None and cal.synced_revision >= revision


def test_other_gesture_rules_plan_the_whole_calendar_again(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = Loads(monkeypatch)
    rules = GestureRules(cancel_keywords=("cancel:", "abgesagt:"))
    h.settings = replace(h.settings, rules=rules)
    h.cycle()
    assert set(loads.ids) == set(h.sids)
    loads.ids.clear()
    h.cycle()
    assert loads.ids == []


def test_a_removal_loads_only_its_session_and_counts_the_rest(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted: list[int] = []
    real = state.count_upcoming

    def counting(*args):  # type: ignore[no-untyped-def]
        counted.append(real(*args))
        return counted[-1]

    monkeypatch.setattr(state, "count_upcoming", counting)
    loads = Loads(monkeypatch)
    h.cal.human_delete(h.rid(1))
    h.cycle()
    assert set(loads.ids) == {h.sids[1]}
    assert counted == [len(NAMES)]  # the breaker's population, without loading it
    h.settle()
    assert h.session(1).status.value == "canceled"


@pytest.mark.parametrize("deleted", [5, 20])
def test_the_breaker_counts_the_sessions_a_small_cycle_leaves_unloaded(
    deleted: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """5 of 20 vanishing stays under the breaker (not over 30 %); all 20 trip it.

    Counted over the 5 loaded sessions alone, 5 of 5 would trip it (and the calendar
    would look suddenly empty).
    """
    names = [f"Customer {i}" for i in range(20)]
    settings = EngineSettings(settle=timedelta(minutes=2), breaker=BreakerRules())
    world = Harness(names, settings=settings)
    try:
        world.cycle()
        loads = Loads(monkeypatch)
        for i in range(deleted):
            world.cal.human_delete(world.rid(i))
        world.settle()
        canceled = [i for i in range(len(names)) if world.session(i).status.value == "canceled"]
        with world.db.read() as orm:
            tripped = orm.get_one(CalendarRow, world.cal_id).breaker_tripped_at is not None
        if deleted == 5:
            assert set(loads.ids) == set(world.sids[:5])
            assert canceled == [0, 1, 2, 3, 4] and not tripped
        else:
            assert canceled == [] and tripped
    finally:
        world.close()


def test_revisions_count_every_change_of_the_admins_sessions(h: Harness) -> None:
    with h.db.read() as orm:
        before = {sid: orm.get_one(SessionRow, sid).revision for sid in h.sids}
    assert sorted(before.values()) == list(range(1, len(h.sids) + 1))  # one per booking
    services.reschedule(h.ctx, h.sids[0], h.session(0).start + timedelta(days=30))
    with h.db.write() as orm:
        row = orm.get_one(SessionRow, h.sids[1])
        row.status = row.status  # no net change: no new revision
    with h.db.read() as orm:
        assert orm.get_one(SessionRow, h.sids[0]).revision == len(h.sids) + 1
        assert orm.get_one(SessionRow, h.sids[1]).revision == before[h.sids[1]]


def test_a_gesture_applied_at_once_writes_no_intent_row() -> None:
    """With a settle of 0, a move is seen and applied in one commit: no intent row at all."""
    from sqlalchemy import event

    world = Harness(NAMES[:3], settings=EngineSettings(settle=timedelta(0)))
    try:
        world.cycle()
        statements: list[str] = []
        event.listen(
            world.db.engine,
            "before_cursor_execute",
            lambda _c, _cur, stmt, *_: statements.append(stmt),
        )
        s = world.session(1)
        world.cal.human_set(
            world.rid(1), start=s.start + timedelta(hours=3), end=s.end + timedelta(hours=3)
        )
        world.cycle()
        assert world.session(1).start == s.start + timedelta(hours=3)
        touching = [q for q in statements if "intents" in q and not q.startswith("SELECT")]
        assert touching == []
    finally:
        world.close()


def _as_after_the_upgrade(h: Harness) -> None:
    """What migration 0005 leaves: nothing planned up to any revision, nothing settled."""
    from sqlalchemy import update

    with h.db.write() as orm:
        orm.execute(update(CalendarRow).values(synced_revision=None, synced_id=None))
        orm.execute(update(MirrorRow).values(settled=False))
        orm.execute(update(SessionRow).values(revision=0))


def test_a_catch_up_goes_a_few_sessions_a_pass(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "MAX_PARTIAL", 3)
    _as_after_the_upgrade(h)  # every session at revision 0: ties split by id
    loads = Loads(monkeypatch)
    report = h.cycle()
    assert report.error is None
    assert set(loads.ids) == set(h.sids)  # all of them, in this one cycle
    assert max(loads.sizes) <= 6  # 3 changed + 3 unsettled at most, never the calendar
    with h.db.read() as orm:
        assert all(m.settled for m in orm.scalars(select(MirrorRow)))
    loads.ids.clear()
    h.cycle()
    assert loads.ids == []


def test_a_change_made_during_a_catch_up_reaches_the_calendar(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncd.engine.runner import Fence, sync_calendar

    monkeypatch.setattr(state, "MAX_PARTIAL", 3)
    _as_after_the_upgrade(h)
    h.take_lease("w1", seconds=3600)
    out_of_time = Fence("w1", over_budget=lambda: True)
    report = sync_calendar(h.ctx, h.settings, h.cal_id, h.backend, out_of_time)
    assert report.more  # one pass, then the budget was spent
    first, last = h.session(0), h.session(len(NAMES) - 1)
    services.reschedule(h.ctx, h.sids[0], first.start + timedelta(days=50))
    services.reschedule(h.ctx, h.sids[-1], last.start + timedelta(days=50))
    h.cycle()
    for i, old in ((0, first), (len(NAMES) - 1, last)):
        ev = h.event(i)
        assert ev is not None and ev.content.start == old.start + timedelta(days=50)
