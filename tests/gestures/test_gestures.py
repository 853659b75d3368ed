"""The gesture table of docs/GESTURES.md, end to end, on every backend (conftest.BACKENDS).

book → mirror → the admin's gesture, written the way that backend's clients write it
(tests/contract/human.py, tests/contract/google_human.py) → the action, the emails, the
event. After each scenario a further cycle adds nothing.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from syncd.domain.eventtext import split_notes
from syncd.domain.model import Actor, Status
from syncd.ports import NotFound
from syncd.services import booking as services
from tests.cli_helpers import syncd
from tests.gestures.conftest import MakeWorld

ADMIN = "coach@example.com"


def test_booking_is_mirrored_with_the_sessions_instants(make_world: MakeWorld) -> None:
    w = make_world()
    sid = w.book()
    report = w.sync()
    assert report.error is None and report.writes == 1
    ev, s = w.event(sid), w.session(sid)
    assert (ev.content.start, ev.content.end) == (s.start, s.end)
    assert ev.content.uid == f"syncd-{sid}@book.example.com"
    assert ev.content.session_id == sid
    assert "ann@example.org" in ev.content.description
    w.assert_quiet()


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Tokyo"])
def test_drag_to_a_new_time_reschedules(make_world: MakeWorld, tz: str) -> None:
    w = make_world()
    sid = w.book()
    w.sync()
    old = w.session(sid)
    new_start = old.start + timedelta(days=1, hours=2)
    w.human.move(w.remote_id(sid), new_start, new_start + timedelta(hours=1), tz)
    report = w.sync()
    assert report.actions == [f"{sid}: rescheduled"], report
    s = w.session(sid)
    assert (s.start, s.end, s.status) == (new_start, new_start + timedelta(hours=1), Status.BOOKED)
    assert s.history[-1].actor is Actor.ADMIN_CALENDAR and s.sequence == 1
    assert ("rescheduled", "ann@example.org", "pending") in w.outbox(sid)
    w.assert_quiet()


def test_delete_cancels_with_the_default_reason(make_world: MakeWorld) -> None:
    w = make_world()
    sid = w.book()
    w.sync()
    w.human.delete(w.remote_id(sid))
    report = w.sync()
    assert report.actions == [f"{sid}: canceled"], report
    s = w.session(sid)
    assert s.status is Status.CANCELED
    assert s.cancel_reason == "Your host had to cancel this session."
    assert ("canceled", "ann@example.org", "pending") in w.outbox(sid)
    w.assert_quiet()


def test_cancel_command_cancels_with_the_reason_and_removes_the_event(
    make_world: MakeWorld,
) -> None:
    w = make_world()
    sid = w.book()
    w.sync()
    w.human.edit_title(w.remote_id(sid), "cancel: I have the flu")
    report = w.sync()
    assert report.actions == [f"{sid}: canceled"], report
    assert w.session(sid).cancel_reason == "I have the flu"
    with pytest.raises(NotFound):
        w.event(sid)  # the event is gone
    w.assert_quiet()


def test_reschedule_command_lets_the_customer_choose(make_world: MakeWorld) -> None:
    w = make_world()
    sid = w.book()
    w.sync()
    w.human.add_alarm(w.remote_id(sid))
    w.sync()
    w.human.add_note_line(w.remote_id(sid), "reschedule: Sorry, I must move this one")
    report = w.sync()
    assert report.actions == [f"{sid}: let_customer_choose"], report
    s = w.session(sid)
    assert s.status is Status.AWAITING_CUSTOMER
    assert s.choose_message == "Sorry, I must move this one"
    ev = w.event(sid)
    assert ev.content.status == "tentative"
    assert "reschedule:" not in split_notes(ev.content.description)[0].lower()  # consumed
    assert w.human.has_alarm(w.remote_id(sid))  # the admin's reminder survived our write
    assert ("choose", "ann@example.org", "pending") in w.outbox(sid)
    w.assert_quiet()


def test_title_edit_and_reserialization_are_nothing(make_world: MakeWorld) -> None:
    w = make_world()
    sid = w.book()
    w.sync()
    w.human.edit_title(w.remote_id(sid), "Ann — bring the contract")
    w.human.reserialize(w.remote_id(sid))
    report = w.sync()
    assert report.actions == [] and report.writes == 0, report
    assert w.session(sid).sequence == 0
    assert w.event(sid).content.summary == "Ann — bring the contract"
    assert w.customer_rows() == [("booked", "ann@example.org", "sent")]
    w.assert_quiet()


def test_into_the_past_all_day_or_recurring_is_restored_and_the_admin_told(
    make_world: MakeWorld,
) -> None:
    w = make_world()
    a, b, c = w.book(days=3), w.book(days=4, name="Bob"), w.book(days=5, name="Cy")
    w.sync()
    past = w.clock.now - timedelta(days=2)
    w.human.move(w.remote_id(a), past, past + timedelta(hours=1), "Europe/Berlin")
    w.human.make_all_day(w.remote_id(b))
    w.human.make_recurring(w.remote_id(c))
    report = w.sync()
    assert sorted(report.actions) == sorted(
        [
            f"{a}: restored (it would start in the past)",
            f"{b}: restored (it became an all-day event)",
            f"{c}: restored (it became a recurring event)",
        ]
    ), report
    for sid in (a, b, c):
        ev, s = w.event(sid), w.session(sid)
        assert (ev.content.start, ev.content.end) == (s.start, s.end)
        assert not ev.content.all_day and not ev.content.recurring
        assert s.sequence == 0 and s.status is Status.BOOKED
    undone = [o for o in w.outbox() if o[0] == "gesture_undone"]
    assert undone == [("gesture_undone", ADMIN, "pending")] * 3
    assert all(o[0] == "booked" for o in w.customer_rows())
    w.assert_quiet()


def test_undo_within_the_settle_window_is_nothing(make_world: MakeWorld) -> None:
    w = make_world(settle="2m")
    sid = w.book()
    w.sync()
    rid = w.remote_id(sid)
    original = w.human.snapshot(rid)
    s = w.session(sid)
    w.human.move(rid, s.start + timedelta(hours=5), s.end + timedelta(hours=5), "Asia/Tokyo")
    assert w.sync().actions == []  # pending, not applied
    w.clock.advance(seconds=60)
    w.human.restore(rid, original)  # dragged back
    w.sync()
    w.clock.advance(minutes=3)
    assert w.sync().actions == []
    assert w.session(sid).sequence == 0
    w.human.delete(rid)
    assert w.sync().actions == []
    w.clock.advance(seconds=30)
    w.human.restore(rid, original)  # "undo" of a delete
    w.sync()
    w.clock.advance(minutes=3)
    assert w.sync().actions == []
    assert w.session(sid).status is Status.BOOKED
    assert w.event(sid).content.status == "confirmed"
    assert w.customer_rows() == [("booked", "ann@example.org", "sent")]
    w.assert_quiet()


def test_mass_deletion_trips_the_breaker_and_restore_puts_events_back(
    make_world: MakeWorld,
) -> None:
    w = make_world()
    sids = [w.book(days=2 + i, name=f"C{i}") for i in range(8)]
    w.sync()
    ids = {sid: w.remote_id(sid) for sid in sids}
    for sid in sids[:5]:
        w.human.delete(ids[sid])
    report = w.sync()
    assert report.tripped and report.held == 5 and report.actions == [], report
    assert all(w.session(s).status is Status.BOOKED for s in sids)
    assert all(o[0] == "booked" for o in w.customer_rows())
    assert ("breaker_tripped", ADMIN, "pending") in w.outbox()
    assert w.sync().actions == []  # still held, nothing happens
    cfg = w.config_file()
    status = syncd(cfg, "status")
    assert "BREAKER TRIPPED" in status.out, status
    r = syncd(cfg, "breaker", "restore", str(w.cal_id))
    assert r.code == 0, r.err
    for sid in sids[:5]:
        assert w.remote_id(sid) == ids[sid]  # the same event, back where it was
        ev = w.event(sid)
        assert ev.content.start == w.session(sid).start
        assert ev.content.status == "confirmed"
    assert not w.calendar()["tripped"]
    assert all(o[0] == "booked" for o in w.customer_rows())
    w.assert_quiet()


def test_a_restore_is_not_undone_by_the_deletions_reported_again(make_world: MakeWorld) -> None:
    # The feed after a restore may name the held deletions again: SOGo's one-second tokens
    # re-report them, and an expired cursor's full listing lacks them. Events restore
    # asked to write again are created, never held (or canceled) a second time.
    from syncd.engine import breaker

    w = make_world()
    sids = [w.book(days=2 + i, name=f"C{i}") for i in range(6)]
    w.sync()
    ids = {sid: w.remote_id(sid) for sid in sids}
    for sid in sids[:4]:
        w.human.delete(ids[sid])
    assert w.sync().tripped
    assert sorted(breaker.restore(w.ctx, w.cal_id)) == sorted(sids[:4])
    w.expire_cursor()  # the cycle after the restore sees the deletions once more
    report = w.sync()
    assert not report.tripped and report.held == 0 and report.actions == [], report
    for sid in sids[:4]:
        assert w.remote_id(sid) == ids[sid]
        assert w.event(sid).content.start == w.session(sid).start
    assert not w.calendar()["tripped"]
    assert all(o[0] == "booked" for o in w.customer_rows())
    w.assert_quiet()


def test_breaker_release_cancels_the_held_sessions(make_world: MakeWorld) -> None:
    w = make_world()
    sids = [w.book(days=2 + i, name=f"C{i}") for i in range(6)]
    w.sync()
    for sid in sids[:4]:
        w.human.delete(w.remote_id(sid))
    assert w.sync().tripped
    r = syncd(w.config_file(), "breaker", "release", str(w.cal_id))
    assert r.code == 0, r.err
    statuses = [w.session(s).status for s in sids]
    assert statuses == [Status.CANCELED] * 4 + [Status.BOOKED] * 2
    assert sum(1 for o in w.customer_rows() if o[0] == "canceled") == 4
    w.assert_quiet()


def test_a_failed_read_after_the_feed_is_never_a_cancel(make_world: MakeWorld) -> None:
    w = make_world(own_server=True)
    sid = w.book()
    w.sync()
    w.human.delete(w.remote_id(sid))
    with w.reads_fail_after_feed():  # the feed reports the deletion; the verifying GET fails
        report = w.sync()
    assert report.actions == [] and w.session(sid).status is Status.BOOKED
    report = w.sync()  # the server does not answer at all now
    assert report.error is not None and report.actions == []
    assert w.session(sid).status is Status.BOOKED
    assert w.customer_rows() == [("booked", "ann@example.org", "sent")]
    w.peer_back()
    report = w.sync()  # back: the deletion is confirmed and acted on once
    assert report.error is None and report.actions == [f"{sid}: canceled"], report
    w.assert_quiet()


def test_an_expired_cursor_with_nothing_changed_is_no_action(make_world: MakeWorld) -> None:
    w = make_world()
    sids = [w.book(days=2 + i, name=f"C{i}") for i in range(3)]
    w.sync()
    w.human.reserialize(w.remote_id(sids[0]))
    w.expire_cursor()
    report = w.sync()
    # DAViCal and SOGo answer an unknown token with a listing (no resync to see), which
    # the adapter checks against the etag listing all the same.
    assert report.resynced or w.kind in ("davical", "sogo"), report
    assert report.error is None, report
    assert report.actions == [] and report.writes == 0, report
    assert all(w.session(s).sequence == 0 for s in sids)
    w.assert_quiet()


def test_platform_changes_move_and_remove_the_event(make_world: MakeWorld) -> None:
    w = make_world()
    a, b = w.book(days=3), w.book(days=5, name="Bob")
    w.sync()
    new = w.session(a).start + timedelta(days=2, hours=3)
    services.reschedule(w.ctx, a, new, actor=Actor.ADMIN)
    services.cancel(w.ctx, b, "closed", actor=Actor.ADMIN)
    report = w.sync()
    assert report.actions == [] and report.writes == 2, report
    assert w.event(a).content.start == new
    with pytest.raises(NotFound):
        w.event(b)  # the canceled session's event is gone
    w.assert_quiet()
