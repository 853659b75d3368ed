"""Issue 10, one test per fix, on the real runner over the in-memory calendar.

Each test names the item of issue 10 it proves; each fails with its fix reverted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta

import pytest

from syncd.domain.model import Actor, Status
from syncd.engine import breaker, state
from syncd.engine.planner import ApplyReschedule, BreakerRules, Plan
from syncd.engine.runner import CycleReport, EngineSettings, Fence, commit, sync_calendar
from syncd.ports import ChangeSet
from syncd.services import booking as services
from tests.fakes.memory_backend import MemoryBackend
from tests.unit.harness import ADMIN, Harness

SETTLE = timedelta(minutes=2)


@pytest.fixture
def h() -> Iterator[Harness]:
    world = Harness(["Ann", "Bob"])
    yield world
    world.close()


def drag(h: Harness, i: int, delta: timedelta, **extra: object) -> None:
    ev = h.event(i)
    assert ev is not None
    h.cal.human_set(
        ev.remote_id, start=ev.content.start + delta, end=ev.content.end + delta, **extra
    )


# --- 1. commands only from the admin's own words ------------------------------------------------


def test_1_a_customer_named_like_a_command_is_never_a_command() -> None:
    h = Harness(["Cancel: Bob", "Reschedule: Ann"])
    try:
        assert h.event(0).content.summary == "Cancel: Bob — 1:1 session"  # type: ignore[union-attr]
        drag(h, 0, timedelta(hours=2))
        drag(h, 1, timedelta(hours=3))
        h.settle()
        assert sorted(a for _, a in h.admin_actions()) == ["rescheduled", "rescheduled"]
        assert [h.session(i).status for i in (0, 1)] == [Status.BOOKED, Status.BOOKED]
        # The admin shortens the title to the customer's name: still syncd's text.
        h.cal.human_set(h.rid(0), summary="Cancel: Bob")
        h.settle()
        assert h.session(0).status is Status.BOOKED
        # The admin's own command still works.
        h.cal.human_set(h.rid(0), summary="cancel: I am ill")
        h.settle()
        assert h.session(0).status is Status.CANCELED
        assert h.session(0).cancel_reason == "I am ill"
        kinds = [k for k, _, _ in h.customer_emails()]
        assert kinds.count("choose") == 0 and kinds.count("canceled") == 1
    finally:
        h.close()


# --- 2. syncd's own identity only ---------------------------------------------------------------


def test_2_a_copy_with_a_new_uid_never_takes_over_the_session(h: Harness) -> None:
    start = h.session(0).start
    h.cal.human_copy(
        h.rid(0),
        "/cal/copy.ics",
        "copy-uid@client",
        start=start + timedelta(days=1),
        end=start + timedelta(days=1, hours=1),
    )
    h.settle()
    assert h.admin_actions() == [] and h.session(0).start == start
    h.cal.human_delete(h.rid(0))  # the original goes: a cancel, not a move to the copy
    h.settle()
    assert h.session(0).status is Status.CANCELED
    assert [a for _, a in h.admin_actions()] == ["canceled"]
    assert "/cal/copy.ics" in h.cal.events  # the copy is the admin's, left alone


def test_2_syncds_own_event_moved_to_a_new_id_is_followed(h: Harness) -> None:
    """A server-side move (the old id removed, syncd's UID at a new one) is no cancel."""
    ev = h.event(0)
    assert ev is not None
    h.cal.human_copy(h.rid(0), "/cal/renamed.ics", ev.content.uid)
    h.cal.human_delete(h.rid(0))
    h.settle()
    assert h.session(0).status is Status.BOOKED and h.admin_actions() == []
    with h.db.read() as orm:
        m = state.mirror_row(orm, h.cal_id, h.sids[0])
        assert m is not None and m.remote_id == "/cal/renamed.ics"


# --- 3. a plan commits only if what it was planned from still holds ----------------------------


def test_3_two_workers_never_both_commit_a_choose(h: Harness) -> None:
    """Worker B commits the same settled gesture while worker A is between plan and commit."""
    h.cal.human_set(h.rid(0), summary="reschedule: sorry, please pick another time")
    h.cycle()
    h.now += timedelta(minutes=3)
    other = MemoryBackend(h.cal)
    h.cal.faults.after_feed = lambda: h.cycle(backend=other)  # B runs a whole cycle here
    report = h.cycle()
    assert report.fenced
    h.settle()
    assert [a for _, a in h.admin_actions()] == ["let_customer_choose"]
    assert [k for k, _, _ in h.customer_emails()] == ["choose"]


def test_3_a_worker_that_lost_its_lease_commits_nothing(h: Harness) -> None:
    drag(h, 0, timedelta(hours=2))
    h.cycle()
    h.now += timedelta(minutes=3)
    h.take_lease("worker-b")  # A's lease expired; B claimed the calendar
    report = h.cycle(owner="worker-a")
    assert report.fenced and report.actions == [] and h.admin_actions() == []
    report = h.cycle(owner="worker-b")
    assert report.actions == [f"{h.sids[0]}: rescheduled"]


def test_3_a_reschedule_to_the_current_time_is_nothing(h: Harness) -> None:
    """The platform moved the session to where the admin dragged it, meanwhile."""
    target = h.session(0).start + timedelta(hours=2)
    drag(h, 0, timedelta(hours=2))
    h.cycle()
    services.reschedule(h.ctx, h.sids[0], target, actor=Actor.ADMIN)
    before = h.customer_emails()
    h.settle()
    assert h.admin_actions() == [] and h.customer_emails() == before
    assert h.session(0).start == target


# --- 4. times as the admin meant them ---------------------------------------------------------


def test_4_floating_times_are_wall_time_in_the_admins_zone(h: Harness) -> None:
    wall = datetime(2026, 12, 10, 15, 0)  # 15:00 in Berlin = 14:00 UTC
    h.cal.human_set(
        h.rid(0),
        start=wall.replace(tzinfo=UTC),
        end=(wall + timedelta(hours=1)).replace(tzinfo=UTC),
        floating=True,
    )
    h.settle()
    assert h.session(0).start == datetime(2026, 12, 10, 14, 0, tzinfo=UTC)


def test_4_an_unknown_tzid_is_no_action_and_the_admin_is_told_once(h: Harness) -> None:
    ev = h.event(0)
    assert ev is not None
    h.cal.human_set(
        h.rid(0),
        start=ev.content.start + timedelta(hours=5),
        unreadable="unknown time zone 'Mars/Olympus'",
    )
    h.settle(cycles=6)
    assert h.admin_actions() == [] and h.customer_emails() == []
    told = [e for e in h.emails(ADMIN) if e[0] == "gesture_undone"]
    assert len(told) == 1 and "Mars/Olympus" in told[0][2]["data"]["why"]
    ev = h.event(0)
    assert ev is not None and ev.content.start == h.session(0).start and not ev.content.unreadable


def test_4_instants_are_whole_seconds(h: Harness) -> None:
    ev = h.event(0)
    assert ev is not None
    h.cal.human_set(h.rid(0), start=ev.content.start.replace(microsecond=400000))
    h.settle()
    assert h.admin_actions() == [] and h.customer_emails() == []
    start = ev.content.start + timedelta(hours=2, microseconds=250000)
    h.cal.human_set(h.rid(0), start=start, end=start + timedelta(hours=1))
    h.settle()
    assert h.session(0).start == start.replace(microsecond=0)
    assert h.cycle().writes == 0  # the hash and the comparison agree: quiet


# --- 5, 6, 7. every refusal ends in a restore; retried; a new revision --------------------------


def test_5_a_drag_that_is_in_the_past_once_settled_is_restored(h: Harness) -> None:
    h.now = h.session(0).start - timedelta(minutes=30)
    target = h.now + timedelta(minutes=1)  # the future now, the past once settled
    ev = h.event(0)
    assert ev is not None
    h.cal.human_set(h.rid(0), start=target, end=target + timedelta(hours=1))
    h.cycle()
    h.settle()
    assert h.admin_actions() == [] and h.customer_emails() == []
    assert [e[0] for e in h.emails(ADMIN)] == ["gesture_undone"]
    ev = h.event(0)
    assert ev is not None and ev.content.start == h.session(0).start


def test_5_an_action_the_rules_refuse_at_commit_is_restored(h: Harness) -> None:
    """Whatever rule refuses a settled gesture at commit, the event is written back."""
    past = h.now - timedelta(hours=3)
    ev = h.event(0)
    assert ev is not None
    h.cal.human_set(h.rid(0), start=past, end=past + timedelta(hours=1))
    ev = h.event(0)
    assert ev is not None
    with h.db.read() as orm:
        st = state.load_state(orm, h.cal_id, h.now)
    action = ApplyReschedule(h.sids[0], past, past + timedelta(hours=1), ev.etag, "x")
    cs = ChangeSet((), (), st.cursor)
    report = CycleReport(h.cal_id)
    writes = commit(h.ctx, h.settings, st, Plan(actions=(action,)), cs, h.backend, h.now, report)
    assert [type(w).__name__ for w in writes] == ["Update"]
    assert [e[0] for e in h.emails(ADMIN)] == ["gesture_undone"]
    assert h.customer_emails() == [] and h.session(0).start != past


def test_6_a_failed_restore_is_retried_until_it_lands(h: Harness) -> None:
    h.cal.human_set(h.rid(0), all_day=True)
    h.cycle()
    h.now += timedelta(minutes=3)
    h.cal.faults.fail_writes = True
    h.cycle()  # the restore is decided; its write fails
    h.cal.faults.fail_writes = False
    assert h.event(0).content.all_day  # type: ignore[union-attr]
    h.settle()
    ev = h.event(0)
    assert ev is not None and not ev.content.all_day
    assert [e[0] for e in h.emails(ADMIN)] == ["gesture_undone"]


def test_7_a_restore_is_a_new_revision_above_any_sequence_seen(h: Harness) -> None:
    past = h.now - timedelta(days=1)
    h.cal.human_set(h.rid(0), start=past, end=past + timedelta(hours=1), sequence=7)
    before = h.event(0)
    h.settle()
    ev = h.event(0)
    assert ev is not None and before is not None
    assert ev.content.sequence > 7 and ev.content != before.content


def test_7_a_restore_goes_above_a_sequence_seen_before_an_older_revision_came_back(
    h: Harness,
) -> None:
    """A client puts back an older revision (a lower SEQUENCE) after syncd saw a higher
    one; syncd's next write still goes above every SEQUENCE it saw or wrote there."""
    original = h.event(0)
    assert original is not None
    h.cal.human_set(h.rid(0), summary="Ann, renamed", sequence=7)  # a title: no gesture
    h.settle()
    h.cal.human_put(original)  # the client's undo: SEQUENCE back to the original's
    h.settle()
    past = h.now - timedelta(days=1)
    h.cal.human_set(h.rid(0), start=past, end=past + timedelta(hours=1), sequence=1)
    h.settle()  # refused (in the past): restored
    ev = h.event(0)
    assert ev is not None and ev.content.start == original.content.start
    assert ev.content.sequence > 7, ev.content.sequence


def test_5_an_event_awaiting_the_customer_made_all_day_is_restored(h: Harness) -> None:
    """The customer was asked to choose; the admin writes the same 'reschedule:' line
    again and makes the event all-day. The line asks for nothing new, and the rest of the
    edit is judged on its own: refused and undone, not passed over because of the line."""
    ev = h.event(0)
    assert ev is not None
    line = "reschedule: next week please\n"
    h.cal.human_set(h.rid(0), description=line + ev.content.description)
    h.settle()
    assert h.session(0).status is Status.AWAITING_CUSTOMER
    ev = h.event(0)
    assert ev is not None
    h.cal.human_set(h.rid(0), description=line + ev.content.description, all_day=True)
    h.settle()
    after = h.event(0)
    assert after is not None and not after.content.all_day, after
    assert h.session(0).status is Status.AWAITING_CUSTOMER


def test_5_an_edit_made_before_a_platform_move_landed_moves_nothing_back(h: Harness) -> None:
    """The admin marks the event tentative; before syncd writes a move made on the platform,
    it reads that edit, still at the old times. Those are the times syncd last wrote, so
    the edit is no drag back: the session keeps its new time, the event gets it, and the
    customer hears of one move only."""
    old = h.session(0)
    h.cal.human_set(h.rid(0), status="tentative")
    moved = old.start + timedelta(days=2)
    services.reschedule(h.ctx, old.id, moved, actor=Actor.ADMIN)
    h.delivered()
    h.settle()
    assert h.session(0).start == moved
    ev = h.event(0)
    assert ev is not None and ev.content.start == moved
    assert [a for s, a in h.admin_actions() if s == old.id] == []


# --- 8, 9. the breaker --------------------------------------------------------------------------


def breaker_world(n: int = 8, settle: timedelta = SETTLE) -> Harness:
    return Harness(
        [f"C{i}" for i in range(n)],
        EngineSettings(settle=settle, breaker=BreakerRules(3, 0.3, True)),
    )


def test_8_with_a_settle_window_the_breaker_holds_every_pending_removal() -> None:
    h = breaker_world()
    try:
        for i in range(4):
            h.cal.human_delete(h.rid(i))
        h.cycle()
        h.now += timedelta(seconds=60)
        h.cal.human_delete(h.rid(4))  # not due yet when the first four are
        h.cycle()
        h.now += timedelta(seconds=61)
        assert h.cycle().tripped and h.admin_actions() == []
        alerts = [e for e in h.emails(ADMIN) if e[0] == "breaker_tripped"]
        assert len(alerts) == 1 and alerts[0][2]["data"]["count"] == 5
        assert {s["id"] for s in alerts[0][2]["data"]["sessions"]} == set(h.sids[:5])
        h.settle()
        assert h.admin_actions() == []  # held, all five
        assert sorted(breaker.release(h.ctx, h.cal_id)) == sorted(h.sids[:5])
        statuses = [h.session(i).status for i in range(8)]
        assert statuses == [Status.CANCELED] * 5 + [Status.BOOKED] * 3
        h.settle()
        assert all(h.event(i) is None for i in range(5))
    finally:
        h.close()


def test_8_removals_count_over_a_sliding_window_not_per_cycle() -> None:
    h = breaker_world(settle=timedelta(0))
    try:
        for i in range(5):
            h.cal.human_delete(h.rid(i))
            h.now += timedelta(seconds=4)
            h.cycle()
        canceled = [i for i in range(8) if h.session(i).status is Status.CANCELED]
        assert len(canceled) == 3, canceled
        assert any(e[0] == "breaker_tripped" for e in h.emails(ADMIN))
    finally:
        h.close()


class LyingFeed(MemoryBackend):
    """Reports every mirrored event removed, while each GET finds it present."""

    def changes(self, cursor: str | None, known: Mapping[str, str]) -> ChangeSet:
        real = super().changes(cursor, known)
        return ChangeSet((), tuple(known), real.cursor, False)


def test_8_the_breaker_trips_only_on_removals_a_fresh_read_confirms() -> None:
    h = breaker_world()
    try:
        liar = LyingFeed(h.cal)
        for _ in range(4):
            h.now += timedelta(minutes=1)
            report = h.cycle(backend=liar)
            assert not report.tripped
        assert h.admin_actions() == [] and not any(
            e[0] == "breaker_tripped" for e in h.emails(ADMIN)
        )
    finally:
        h.close()


def test_9_status_cancelled_is_a_deletion_gesture_counted_by_the_breaker() -> None:
    h = breaker_world()
    try:
        h.cal.human_set(h.rid(0), status="cancelled")
        h.cycle()
        h.now += timedelta(minutes=1)
        h.cal.human_set(h.rid(0), status="confirmed")  # undone within the window
        h.settle()
        assert h.admin_actions() == []
        h.cal.human_set(h.rid(0), status="cancelled")
        h.settle()
        assert h.session(0).status is Status.CANCELED
        for i in range(1, 6):
            h.cal.human_set(h.rid(i), status="cancelled")
        h.settle()
        assert [h.session(i).status for i in range(1, 6)] == [Status.BOOKED] * 5
        assert any(e[0] == "breaker_tripped" for e in h.emails(ADMIN))
    finally:
        h.close()


# --- 10. one calendar never stops the rest ----------------------------------------------------


class Broken(MemoryBackend):
    def changes(self, cursor: str | None, known: Mapping[str, str]) -> ChangeSet:
        raise RuntimeError("a parser bug on one event")


def test_10_any_exception_in_a_cycle_is_that_calendars_error(h: Harness) -> None:
    report = h.cycle(backend=Broken(h.cal))
    assert report.error is not None and "parser bug" in report.error
    with h.db.read() as orm:
        assert "parser bug" in (state.get_calendar(orm, h.cal_id).last_error or "")
    assert h.cycle().error is None  # and the next cycle goes on


# --- 11. periodic reconciliation ----------------------------------------------------------------


def test_11_a_change_the_feed_hid_is_found_by_the_daily_reconciliation(h: Harness) -> None:
    drag(h, 0, timedelta(hours=2))
    h.cal.faults.hide_in_feed = {h.rid(0)}
    h.settle()
    assert h.admin_actions() == []
    h.now += timedelta(hours=24)
    h.settle()
    assert [a for _, a in h.admin_actions()] == ["rescheduled"]


def test_11_reconciliation_off_never_lists_in_full() -> None:
    h = Harness(["Ann"], EngineSettings(reconcile=timedelta(0)))
    try:
        h.now += timedelta(days=2)
        assert not h.cycle().reconciled
    finally:
        h.close()


def test_3_a_cycle_past_its_time_budget_leaves_the_rest_to_the_next_cycle(h: Harness) -> None:
    services.reschedule(h.ctx, h.sids[0], h.session(0).start + timedelta(days=1), actor=Actor.ADMIN)
    h.take_lease("worker-a")
    spent = Fence("worker-a", over_budget=lambda: True)
    report = sync_calendar(h.ctx, h.settings, h.cal_id, h.backend, spent)
    assert report.writes == 0 and report.error is None  # committed, writes deferred
    assert h.event(0).content.start != h.session(0).start  # type: ignore[union-attr]
    assert h.cycle(owner="worker-a").writes == 1
    assert h.event(0).content.start == h.session(0).start  # type: ignore[union-attr]
