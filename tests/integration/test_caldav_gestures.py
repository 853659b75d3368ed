"""End to end on real Radicale and Xandikos: book → mirror → the admin's gesture → action.

Edits are written the way another client writes them (tests/contract/human.py): TZID
local times with a VTIMEZONE, reordered properties, new DTSTAMP, SEQUENCE and PRODID.
After each scenario a further cycle adds nothing.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from syncd.domain.model import Status
from syncd.ports import NotFound
from tests.contract.human import CalDAVHuman
from tests.integration.world import World, event_of
from tests.servers import Server


def test_booking_is_mirrored_with_the_sessions_instants(
    tmp_path: Path, caldav_server: Server
) -> None:
    w = World(tmp_path, caldav_server)
    sid = w.book()
    report = w.sync()
    assert report.error is None and report.writes == 1
    ev = event_of(w, sid)
    s = w.session(sid)
    assert (ev.content.start, ev.content.end) == (s.start, s.end)
    assert ev.content.uid == f"syncd-{sid}@book.example.com"
    assert ev.content.session_id == sid
    assert "ann@example.org" in ev.content.description
    w.assert_quiet()


def test_drag_to_a_new_time_reschedules(tmp_path: Path, caldav_server: Server) -> None:
    w = World(tmp_path, caldav_server)
    sid = w.book()
    w.sync()
    human = CalDAVHuman(caldav_server)
    old = w.session(sid)
    new_start = old.start + timedelta(days=1, hours=2)
    human.move(w.remote_id(sid), new_start, new_start + timedelta(hours=1), "America/New_York")
    report = w.sync()
    assert report.actions == [f"{sid}: rescheduled"], report
    s = w.session(sid)
    assert (s.start, s.end, s.status) == (new_start, new_start + timedelta(hours=1), Status.BOOKED)
    assert s.history[-1].actor.value == "admin-calendar" and s.sequence == 1
    assert ("rescheduled", "ann@example.org", "pending") in w.outbox(sid)
    w.assert_quiet()


def test_delete_cancels_with_the_default_reason(tmp_path: Path, caldav_server: Server) -> None:
    w = World(tmp_path, caldav_server)
    sid = w.book()
    w.sync()
    CalDAVHuman(caldav_server).delete(w.remote_id(sid))
    report = w.sync()
    assert report.actions == [f"{sid}: canceled"], report
    s = w.session(sid)
    assert s.status is Status.CANCELED
    assert s.cancel_reason == "Your host had to cancel this session."
    assert ("canceled", "ann@example.org", "pending") in w.outbox(sid)
    w.assert_quiet()


def test_cancel_command_cancels_with_the_reason_and_removes_the_event(
    tmp_path: Path, caldav_server: Server
) -> None:
    w = World(tmp_path, caldav_server)
    sid = w.book()
    w.sync()
    CalDAVHuman(caldav_server).edit_title(w.remote_id(sid), "cancel: I have the flu")
    report = w.sync()
    assert report.actions == [f"{sid}: canceled"], report
    assert w.session(sid).cancel_reason == "I have the flu"
    with pytest.raises(NotFound):
        event_of(w, sid)  # the event is gone
    w.assert_quiet()


def test_reschedule_command_lets_the_customer_choose(tmp_path: Path, caldav_server: Server) -> None:
    w = World(tmp_path, caldav_server)
    sid = w.book()
    w.sync()
    human = CalDAVHuman(caldav_server)
    human.add_alarm(w.remote_id(sid))
    w.sync()
    human.add_note_line(w.remote_id(sid), "reschedule: Sorry, I must move this one")
    report = w.sync()
    assert report.actions == [f"{sid}: let_customer_choose"], report
    s = w.session(sid)
    assert s.status is Status.AWAITING_CUSTOMER
    assert s.choose_message == "Sorry, I must move this one"
    ev = event_of(w, sid)
    assert ev.content.status == "tentative"
    from syncd.domain.eventtext import split_notes

    assert "reschedule:" not in split_notes(ev.content.description)[0].lower()  # consumed
    assert human.has_alarm(w.remote_id(sid))  # the admin's reminder survived our write
    assert ("choose", "ann@example.org", "pending") in w.outbox(sid)
    w.assert_quiet()


def test_title_edit_and_reserialization_are_nothing(tmp_path: Path, caldav_server: Server) -> None:
    w = World(tmp_path, caldav_server)
    sid = w.book()
    w.sync()
    human = CalDAVHuman(caldav_server)
    human.edit_title(w.remote_id(sid), "Ann — bring the contract")
    human.reserialize(w.remote_id(sid))
    report = w.sync()
    assert report.actions == [] and report.writes == 0
    assert w.session(sid).sequence == 0
    assert w.customer_rows() == [("booked", "ann@example.org", "sent")]
    w.assert_quiet()


def test_into_the_past_or_all_day_is_restored_and_the_admin_told(
    tmp_path: Path, caldav_server: Server
) -> None:
    w = World(tmp_path, caldav_server)
    a, b = w.book(days=3), w.book(days=4, name="Bob")
    w.sync()
    human = CalDAVHuman(caldav_server)
    past = w.clock.now - timedelta(days=2)
    human.move(w.remote_id(a), past, past + timedelta(hours=1), "Europe/Berlin")
    human.make_all_day(w.remote_id(b))
    report = w.sync()
    assert sorted(report.actions) == sorted(
        [
            f"{a}: restored (it would start in the past)",
            f"{b}: restored (it became an all-day event)",
        ]
    ), report
    for sid in (a, b):
        ev, s = event_of(w, sid), w.session(sid)
        assert (ev.content.start, ev.content.end, ev.content.all_day) == (s.start, s.end, False)
        assert s.sequence == 0
    assert [o for o in w.outbox() if o[0] == "gesture_undone"] == [
        ("gesture_undone", "coach@example.com", "pending")
    ] * 2
    assert all(o[0] == "booked" for o in w.customer_rows())
    w.assert_quiet()


def test_undo_within_the_settle_window_is_nothing(tmp_path: Path, caldav_server: Server) -> None:
    w = World(tmp_path, caldav_server, settle="2m")
    sid = w.book()
    w.sync()
    human = CalDAVHuman(caldav_server)
    rid = w.remote_id(sid)
    original = human.snapshot(rid)
    s = w.session(sid)
    human.move(rid, s.start + timedelta(hours=5), s.end + timedelta(hours=5), "Europe/Berlin")
    assert w.sync().actions == []  # pending, not applied
    w.clock.advance(seconds=60)
    human.restore(rid, original)  # dragged back
    w.sync()
    w.clock.advance(minutes=3)
    assert w.sync().actions == []
    assert w.session(sid).sequence == 0
    human.delete(rid)
    w.sync()
    w.clock.advance(seconds=30)
    human.restore(rid, original)  # "undo" of a delete
    w.sync()
    w.clock.advance(minutes=3)
    assert w.sync().actions == []
    assert w.session(sid).status is Status.BOOKED
    assert w.customer_rows() == [("booked", "ann@example.org", "sent")]
    w.assert_quiet()


def test_mass_deletion_trips_the_breaker_and_restore_puts_events_back(
    tmp_path: Path, caldav_server: Server
) -> None:
    from tests.cli_helpers import syncd, write_config

    w = World(tmp_path, caldav_server)
    sids = [w.book(days=2 + i, name=f"C{i}") for i in range(8)]
    w.sync()
    human = CalDAVHuman(caldav_server)
    for sid in sids[:5]:
        human.delete(w.remote_id(sid))
    report = w.sync()
    assert report.tripped and report.held == 5 and report.actions == []
    assert all(w.session(s).status is Status.BOOKED for s in sids)
    assert all(o[0] == "booked" for o in w.customer_rows())
    assert ("breaker_tripped", "coach@example.com", "pending") in w.outbox()
    w.sync()  # still held, nothing happens
    assert all(w.session(s).status is Status.BOOKED for s in sids)
    cfg = write_config(tmp_path / "syncd.toml", f"sqlite:///{tmp_path}/world.db")
    status = syncd(cfg, "status")
    assert "BREAKER TRIPPED" in status.out
    r = syncd(cfg, "breaker", "restore", str(w.cal_id))
    assert r.code == 0, r.err
    for sid in sids[:5]:
        ev = event_of(w, sid)
        assert ev.content.start == w.session(sid).start
    assert not w.calendar()["tripped"]
    w.assert_quiet()


def test_breaker_release_cancels_the_held_sessions(tmp_path: Path, caldav_server: Server) -> None:
    from tests.cli_helpers import syncd, write_config

    w = World(tmp_path, caldav_server)
    sids = [w.book(days=2 + i, name=f"C{i}") for i in range(6)]
    w.sync()
    human = CalDAVHuman(caldav_server)
    for sid in sids[:4]:
        human.delete(w.remote_id(sid))
    assert w.sync().tripped
    cfg = write_config(tmp_path / "syncd.toml", f"sqlite:///{tmp_path}/world.db")
    r = syncd(cfg, "breaker", "release", str(w.cal_id))
    assert r.code == 0, r.err
    assert [w.session(s).status for s in sids] == [Status.CANCELED] * 4 + [Status.BOOKED] * 2
    assert sum(1 for o in w.customer_rows() if o[0] == "canceled") == 4
    w.assert_quiet()


def test_server_stopped_mid_cycle_is_never_a_cancel(tmp_path: Path, caldav_server: Server) -> None:
    from tests.servers import start_radicale, start_xandikos

    own = tmp_path / "own"
    starter = start_radicale if caldav_server.kind == "radicale" else start_xandikos
    server = starter(own)
    try:
        w = World(tmp_path, server)
        sid = w.book()
        w.sync()
        CalDAVHuman(server).delete(w.remote_id(sid))
        # The change feed answers, then the server dies before the verifying GET.
        from adapters.caldav.backend import CalDAVBackend

        original = CalDAVBackend.changes

        def changes_then_die(self, cursor, known):  # type: ignore[no-untyped-def]
            result = original(self, cursor, known)
            server.stop()
            return result

        CalDAVBackend.changes = changes_then_die  # type: ignore[method-assign]
        try:
            report = w.sync()
        finally:
            CalDAVBackend.changes = original  # type: ignore[method-assign]
        assert report.actions == [] and w.session(sid).status is Status.BOOKED
        report = w.sync()  # the server is down now
        assert report.error is not None
        assert w.session(sid).status is Status.BOOKED
        assert w.customer_rows() == [("booked", "ann@example.org", "sent")]
        server = starter(own, port=server.port)
        report = w.sync()  # back: the deletion is confirmed and acted on once
        assert report.error is None and report.actions == [f"{sid}: canceled"]
        w.assert_quiet()
    finally:
        server.stop()


def test_expired_sync_token_is_no_action(tmp_path: Path, caldav_server: Server) -> None:
    from syncd.store.models import CalendarRow

    w = World(tmp_path, caldav_server)
    sids = [w.book(days=2 + i, name=f"C{i}") for i in range(3)]
    w.sync()
    CalDAVHuman(caldav_server).reserialize(w.remote_id(sids[0]))
    with w.db.write() as orm:
        row = orm.get_one(CalendarRow, w.cal_id)
        row.cursor = "sync:http://radicale.org/ns/sync/0000bogus"
    report = w.sync()
    assert report.resynced and report.error is None
    assert report.actions == [] and report.writes == 0
    assert all(w.session(s).sequence == 0 for s in sids)
    w.assert_quiet()


def test_platform_changes_move_and_remove_the_event(tmp_path: Path, caldav_server: Server) -> None:
    from syncd.domain.model import Actor
    from syncd.services import booking as services

    w = World(tmp_path, caldav_server)
    a, b = w.book(days=3), w.book(days=5, name="Bob")
    w.sync()
    new = w.session(a).start + timedelta(days=2, hours=3)
    services.reschedule(w.ctx, a, new, actor=Actor.ADMIN)
    services.cancel(w.ctx, b, "closed", actor=Actor.ADMIN)
    report = w.sync()
    assert report.actions == [] and report.writes == 2
    assert event_of(w, a).content.start == new
    with pytest.raises(NotFound):
        event_of(w, b)  # the canceled session's event is gone
    w.assert_quiet()
