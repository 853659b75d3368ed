"""A full listing is compared with the mirror a few sessions a pass (issue 11, goal 3).

The real runner on the in-memory calendar (tests/unit/harness.py) with ``MAX_PARTIAL``
patched to 3: a first sync, or an expired cursor's full listing, plans the calendar in
chunks from one listing, misses no session, writes nothing twice, cancels nothing it did
not see missing, lets the breaker weigh the whole listing, and resumes after a budget stop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import delete, select, update

from syncd.engine import runner, state
from syncd.engine.planner import BreakerRules
from syncd.engine.runner import Fence, sync_calendar
from syncd.ports import ChangeSet, DesiredEvent, RemoteEvent
from syncd.services import booking as services
from syncd.store.models import CalendarRow, IntentRow, MirrorRow
from tests.unit.harness import Harness, LossyBackend
from tests.unit.test_changed_only import Loads

NAMES = [f"Customer {i}" for i in range(12)]


class Counting(LossyBackend):
    """Counts full listings and writes per session."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.listings = 0
        self.writes: Counter[str] = Counter()

    def changes(self, cursor: str | None, known: Mapping[str, str]) -> ChangeSet:
        cs = super().changes(cursor, known)
        self.listings += cs.full
        return cs

    def create(self, event: DesiredEvent) -> RemoteEvent:
        self.writes[event.session_id] += 1
        return super().create(event)

    def update(self, remote_id: str, event: DesiredEvent, etag: str) -> RemoteEvent:
        self.writes[event.session_id] += 1
        return super().update(remote_id, event, etag)


class Reconciling(Counting):
    """Compares its own listing with ``known``, as the CalDAV adapter does."""

    def changes(self, cursor: str | None, known: Mapping[str, str]) -> ChangeSet:
        if cursor is not None or not known:
            return super().changes(cursor, known)
        events = self.cal.events
        differ = tuple(e for rid, e in sorted(events.items()) if known.get(rid) != e.etag)
        gone = tuple(rid for rid in sorted(known) if rid not in events)
        return ChangeSet(differ, gone, str(self.cal.version), reconciled=True)


@pytest.fixture
def h(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    world = Harness(NAMES)
    world.settings = replace(world.settings, settle=timedelta(0))
    world.backend = Counting(world.cal)
    world.cycle()  # the cursor past syncd's own writes, every mirror settled
    monkeypatch.setattr(state, "MAX_PARTIAL", 3)
    yield world
    world.close()


def _expire_cursor(h: Harness) -> None:
    with h.db.write() as orm:
        orm.execute(update(CalendarRow).values(cursor="-1"))  # below the oldest token


def _cursor(h: Harness) -> str | None:
    with h.db.read() as orm:
        return orm.get_one(CalendarRow, h.cal_id).cursor


def _backend(h: Harness) -> Counting:
    assert isinstance(h.backend, Counting)
    return h.backend


def test_a_first_sync_mirrors_every_session_once_a_few_a_pass(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    with h.db.write() as orm:  # a calendar never synced
        orm.execute(delete(MirrorRow))
        orm.execute(update(CalendarRow).values(cursor=None, synced_revision=None))
    h.cal.events.clear()
    b = _backend(h)
    b.writes.clear()
    loads = Loads(monkeypatch)
    report = h.cycle()
    assert report.error is None
    assert b.listings == 1  # one listing, compared over several passes
    assert max(loads.sizes) <= 6  # 3 of the listing + 3 unsettled, never the calendar
    assert b.writes == Counter(h.sids)  # every session created, once
    assert _cursor(h) is not None
    b.writes.clear()
    assert h.cycle().writes == 0 and not b.writes


def test_an_expired_cursor_plans_what_the_listing_shows_and_nothing_else(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved = h.session(5)
    h.cal.human_set(
        h.rid(5), start=moved.start + timedelta(hours=3), end=moved.end + timedelta(hours=3)
    )
    h.cal.human_delete(h.rid(2))
    h.cal.human_delete(h.rid(9))
    services.reschedule(h.ctx, h.sids[7], h.session(7).start + timedelta(days=30))
    _expire_cursor(h)
    b = _backend(h)
    b.writes.clear()
    loads = Loads(monkeypatch)
    report = h.cycle()
    assert report.error is None and report.resynced
    assert b.listings == 1
    assert max(loads.sizes) <= 6
    canceled = {sid for sid, action in h.admin_actions() if action == "canceled"}
    assert canceled == {h.sids[2], h.sids[9]}  # only what the listing lacks
    assert h.session(5).start == moved.start + timedelta(hours=3)
    assert b.writes == Counter({h.sids[7]: 1})  # the platform's move, written once
    emails = sorted((k, to) for k, to, _ in h.customer_emails())
    assert emails == [
        ("canceled", "c2@example.org"),
        ("canceled", "c9@example.org"),
        ("rescheduled", "c5@example.org"),  # the admin's move
        ("rescheduled", "c7@example.org"),  # the platform's
    ]
    assert _cursor(h) not in ("-1", None)
    b.writes.clear()
    assert h.cycle().writes == 0 and not b.writes and b.listings == 1


def _move(h: Harness, i: int, hours: int) -> None:
    s = h.session(i)
    h.cal.human_set(
        h.rid(i), start=s.start + timedelta(hours=hours), end=s.end + timedelta(hours=hours)
    )


def _stop_after(h: Harness, passes: int, monkeypatch: pytest.MonkeyPatch) -> Fence:
    """A budget spent once ``passes`` passes committed."""
    h.take_lease("w1", seconds=3600)
    commits = [0]
    real = runner.commit

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        commits[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "commit", counting)
    return Fence("w1", over_budget=lambda: commits[0] >= passes)


def test_a_listing_cancels_nothing_it_has_not_looked_at(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(8):  # more than one pass can plan: 3 a pass
        h.cal.human_delete(h.rid(i))
    _expire_cursor(h)
    report = sync_calendar(h.ctx, h.settings, h.cal_id, h.backend, _stop_after(h, 1, monkeypatch))
    assert report.error is None and report.more  # stopped after the first pass
    assert _cursor(h) == "-1"  # not advanced mid-way: the next cycle lists again
    canceled = [sid for sid, action in h.admin_actions() if action == "canceled"]
    assert len(canceled) == 3 and set(canceled) <= set(h.sids[:8])
    with h.db.read() as orm:
        assert list(orm.scalars(select(IntentRow))) == []
    assert len(h.customer_emails()) == 3


def test_a_listing_stopped_by_the_budget_resumes_where_it_stopped(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        _move(h, i, 5)
        h.cal.human_delete(h.rid(11 - i))
    _expire_cursor(h)
    fence = _stop_after(h, 2, monkeypatch)
    report = sync_calendar(h.ctx, h.settings, h.cal_id, h.backend, fence)
    monkeypatch.undo()
    assert report.error is None and report.more and _cursor(h) == "-1"
    done = set(h.admin_actions())
    assert len(done) == 6  # two passes of three
    _move(h, 5, 7)  # meanwhile, another gesture
    monkeypatch.setattr(state, "MAX_PARTIAL", 3)
    b = _backend(h)
    b.writes.clear()
    loads = Loads(monkeypatch)
    report = h.cycle()
    assert report.error is None and b.listings == 2
    assert max(loads.sizes) <= 6
    assert set(loads.ids) <= set(h.sids[:6]) | set(h.sids[8:])  # the rest, nothing again
    actions = h.admin_actions()
    assert len(actions) == len(set(actions)) == 9  # each gesture applied once
    assert {sid for sid, a in actions if a == "canceled"} == set(h.sids[8:])
    assert {sid for sid, a in actions if a == "rescheduled"} == set(h.sids[:4]) | {h.sids[5]}
    assert not b.writes
    assert _cursor(h) not in ("-1", None)
    assert h.cycle().writes == 0 and b.listings == 2


def test_the_breaker_weighs_the_whole_listing_not_one_chunk(h: Harness) -> None:
    h.settings = replace(h.settings, breaker=BreakerRules(3, 0.3, True))
    for i in range(10):  # most of the calendar vanished (a partial listing, a wrong account)
        h.cal.human_delete(h.rid(i))
    _expire_cursor(h)
    report = h.cycle()
    assert report.error is None and report.tripped
    assert h.customer_emails() == []  # no customer hears of it
    assert h.admin_actions() == []
    with h.db.read() as orm:
        held = set(orm.scalars(select(IntentRow.session_id).where(IntentRow.held)))
    assert held == set(h.sids[:10])  # every one of them, whichever pass planned it
    assert [k for k, _, _ in h.emails() if k.startswith("breaker")] == ["breaker_tripped"]


def test_a_reconciliation_naming_many_events_is_planned_a_few_a_pass(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h.backend = Reconciling(h.cal)
    for i in range(4):
        _move(h, i, 2)
        h.cal.human_delete(h.rid(11 - i))
    with h.db.write() as orm:
        orm.execute(update(CalendarRow).values(reconciled_at=None))  # the daily one is due
    loads = Loads(monkeypatch)
    report = h.cycle()
    assert report.error is None and report.reconciled
    assert max(loads.sizes) <= 6  # 3 of the 8 differences + 3 unsettled, a pass
    actions = h.admin_actions()
    assert len(actions) == len(set(actions)) == 8
    assert {sid for sid, a in actions if a == "canceled"} == set(h.sids[8:])
    with h.db.read() as orm:
        assert orm.get_one(CalendarRow, h.cal_id).reconciled_at == h.now
