"""The one contract every calendar backend passes (see ``conftest.BACKENDS``).

The safety rules of DESIGN.md lean on these properties: conditional writes, a change
feed that reports the admin's edits (and syncd's own writes with the very etag the write
returned, for echo suppression), removals only for real deletions, and failures that are
never mistaken for a deletion.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from syncd.domain.eventtext import notes_block
from syncd.ports import (
    CalendarBackend,
    ChangeSet,
    CursorExpired,
    NotFound,
    PreconditionFailed,
    RemoteEvent,
    Transient,
)
from tests.contract.human import HumanEditor
from tests.contract.kit import BackendKit
from tests.contract.samples import END, START, desired

LATER = START + timedelta(days=2, hours=3)


def by_id(changes: ChangeSet) -> dict[str, RemoteEvent]:
    """The changed events of a ChangeSet by remote id (each id at most once)."""
    ids = [ev.remote_id for ev in changes.changed]
    assert len(ids) == len(set(ids)), f"an id reported twice: {ids}"
    return {ev.remote_id: ev for ev in changes.changed}


def settled_cursor(backend: CalendarBackend) -> str:
    """A cursor after everything that exists now (first full listing)."""
    cursor = backend.changes(None, {}).cursor
    assert cursor is not None
    return cursor


# -- single events ---------------------------------------------------------------------------


def test_create_then_get_round_trips(backend: CalendarBackend) -> None:
    want = desired("s_round", status="tentative")
    created = backend.create(want)
    assert created.remote_id == backend.remote_id_for(want.uid, want.session_id)
    got = backend.get(created.remote_id)
    assert got.remote_id == created.remote_id
    assert got.etag == created.etag
    for event in (created, got):
        c = event.content
        assert (c.start, c.end) == (START, END)
        assert c.start.tzinfo is not None and c.start.utcoffset() == timedelta(0)
        assert c.status == "tentative"
        assert c.summary == want.summary
        assert c.description == want.notes_block
        assert c.uid == want.uid
        assert c.session_id == "s_round"
        assert not c.all_day and not c.recurring


def test_create_twice_is_precondition_failed(backend: CalendarBackend) -> None:
    backend.create(desired("s_twice"))
    with pytest.raises(PreconditionFailed):
        backend.create(desired("s_twice", summary="other"))


def test_update_with_stale_etag_is_precondition_failed(
    backend: CalendarBackend, human: HumanEditor
) -> None:
    created = backend.create(desired("s_stale"))
    human.edit_title(created.remote_id, "Coaching with Ada (room 2)")
    with pytest.raises(PreconditionFailed):
        backend.update(
            created.remote_id, desired("s_stale", LATER, LATER + timedelta(hours=1)), created.etag
        )
    assert backend.get(created.remote_id).content.start == START  # nothing written


def test_update_keeps_alarm_and_admin_notes(backend: CalendarBackend, human: HumanEditor) -> None:
    created = backend.create(desired("s_keep"))
    human.add_alarm(created.remote_id)
    human.add_note_line(created.remote_id, "Bring the slides")
    current = backend.get(created.remote_id)
    new_block = notes_block(["Session s_keep", "Moved by the admin"])
    want = desired("s_keep", LATER, LATER + timedelta(hours=1), notes_block=new_block, sequence=1)
    updated = backend.update(current.remote_id, want, current.etag)
    got = backend.get(created.remote_id)
    assert got.etag == updated.etag
    assert (got.content.start, got.content.end) == (want.start, want.end)
    assert human.has_alarm(created.remote_id)
    assert "Bring the slides" in got.content.description
    assert new_block in got.content.description
    assert "Booked by Ada" not in got.content.description  # the old block was replaced
    assert got.content.description.count("-- syncd --") == 1


def test_update_strips_command_and_untimes(backend: CalendarBackend, human: HumanEditor) -> None:
    created = backend.create(desired("s_strip"))
    rid = created.remote_id
    human.add_note_line(rid, "Personal note")
    human.add_note_line(rid, "reschedule: please pick a slot next week")
    human.edit_title(rid, "cancel: flu")
    human.make_all_day(rid)
    human.make_recurring(rid)
    seen = backend.get(rid)
    assert seen.content.all_day and seen.content.recurring
    want = desired(
        "s_strip",
        status="tentative",
        transparent=True,
        strip_prefixes=("reschedule:", "cancel:"),
    )
    backend.update(rid, want, seen.etag)
    got = backend.get(rid).content
    assert not got.all_day
    assert not got.recurring
    assert (got.start, got.end) == (START, END)
    assert got.status == "tentative"
    assert got.summary == want.summary
    assert "reschedule:" not in got.description
    assert "Personal note" in got.description
    assert want.notes_block in got.description


def test_delete_with_stale_etag_is_precondition_failed(
    backend: CalendarBackend, human: HumanEditor
) -> None:
    created = backend.create(desired("s_del_stale"))
    human.edit_title(created.remote_id, "renamed")
    with pytest.raises(PreconditionFailed):
        backend.delete(created.remote_id, created.etag)
    assert backend.get(created.remote_id).content.summary == "renamed"


def test_delete_of_a_missing_event_is_fine(backend: CalendarBackend) -> None:
    want = desired("s_never")
    backend.delete(backend.remote_id_for(want.uid, want.session_id), None)
    created = backend.create(desired("s_gone"))
    backend.delete(created.remote_id, created.etag)
    backend.delete(created.remote_id, created.etag)
    backend.delete(created.remote_id, None)


def test_get_of_a_deleted_event_is_not_found(backend: CalendarBackend) -> None:
    created = backend.create(desired("s_deleted"))
    backend.delete(created.remote_id, created.etag)
    with pytest.raises(NotFound):
        backend.get(created.remote_id)


# -- change feed ------------------------------------------------------------------------------


def test_first_listing_is_full(backend: CalendarBackend) -> None:
    a = backend.create(desired("s_full_a"))
    b = backend.create(desired("s_full_b", LATER, LATER + timedelta(hours=1)))
    listing = backend.changes(None, {})
    assert listing.full
    assert listing.removed == ()
    assert listing.cursor
    seen = by_id(listing)
    assert set(seen) == {a.remote_id, b.remote_id}
    assert seen[a.remote_id].etag == a.etag
    assert seen[b.remote_id].content.start == LATER


def test_idle_changes_report_nothing(backend_factory: BackendKit) -> None:
    backend = backend_factory()
    created = backend.create(desired("s_idle"))
    cursor = settled_cursor(backend)
    idle = backend.changes(cursor, {created.remote_id: created.etag})
    again = backend.changes(idle.cursor, {created.remote_id: created.etag})
    if "repeats" in backend_factory.features:
        # SOGo's tokens count seconds: what changed in the token's second is reported
        # again, with the etag syncd knows (harmless: an echo).
        for feed in (idle, again):
            assert {(e.remote_id, e.etag) for e in feed.changed} <= {
                (created.remote_id, created.etag)
            }
            assert feed.removed == () and not feed.full
        return
    assert idle.changed == () and idle.removed == () and not idle.full
    assert again.changed == () and again.removed == ()


def test_own_writes_come_back_with_the_written_etag(backend: CalendarBackend) -> None:
    """Echo suppression compares these etags: they must be byte-for-byte equal."""
    cursor = settled_cursor(backend)
    created = backend.create(desired("s_echo"))
    feed = backend.changes(cursor, {})
    assert by_id(feed)[created.remote_id].etag == created.etag
    assert feed.cursor is not None
    updated = backend.update(
        created.remote_id, desired("s_echo", LATER, LATER + timedelta(hours=1)), created.etag
    )
    feed = backend.changes(feed.cursor, {created.remote_id: updated.etag})
    echo = by_id(feed)[created.remote_id]
    assert echo.etag == updated.etag != created.etag
    assert echo.content.start == LATER


def test_human_move_appears_with_new_etag_and_utc_instants(
    backend: CalendarBackend, human: HumanEditor
) -> None:
    created = backend.create(desired("s_move"))
    cursor = settled_cursor(backend)
    new_start = datetime(2031, 3, 12, 15, 30, tzinfo=UTC)
    human.move(created.remote_id, new_start, new_start + timedelta(minutes=45), "America/New_York")
    feed = backend.changes(cursor, {created.remote_id: created.etag})
    moved = by_id(feed)[created.remote_id]
    assert moved.etag != created.etag
    assert moved.content.start == new_start
    assert moved.content.end == new_start + timedelta(minutes=45)
    assert moved.content.start.utcoffset() == timedelta(0)
    assert moved.content.session_id == "s_move"
    assert feed.removed == ()


def test_human_delete_appears_in_removed(backend: CalendarBackend, human: HumanEditor) -> None:
    keep = backend.create(desired("s_keep_me"))
    gone = backend.create(desired("s_delete_me", LATER, LATER + timedelta(hours=1)))
    cursor = settled_cursor(backend)
    human.delete(gone.remote_id)
    feed = backend.changes(cursor, {keep.remote_id: keep.etag, gone.remote_id: gone.etag})
    assert feed.removed == (gone.remote_id,)
    assert gone.remote_id not in by_id(feed)
    assert keep.remote_id not in feed.removed


def test_human_reserialization_is_a_change_with_equal_content(
    backend: CalendarBackend, human: HumanEditor
) -> None:
    created = backend.create(desired("s_noise", status="tentative"))
    cursor = settled_cursor(backend)
    human.reserialize(created.remote_id)
    feed = backend.changes(cursor, {created.remote_id: created.etag})
    noise = by_id(feed)[created.remote_id]
    assert noise.etag != created.etag
    c, o = noise.content, created.content
    assert (c.start, c.end, c.status, c.all_day) == (o.start, o.end, o.status, o.all_day)
    assert (c.summary, c.description, c.session_id) == (o.summary, o.description, o.session_id)


def test_undo_by_restore_reports_the_event_again(
    backend: CalendarBackend, human: HumanEditor
) -> None:
    created = backend.create(desired("s_undo"))
    raw = human.snapshot(created.remote_id)
    cursor = settled_cursor(backend)
    human.delete(created.remote_id)
    human.restore(created.remote_id, raw)
    feed = backend.changes(cursor, {created.remote_id: created.etag})
    assert created.remote_id not in feed.removed
    back = backend.get(created.remote_id)
    assert (back.content.start, back.content.end) == (START, END)


def test_bogus_cursor_is_cursor_expired(backend_factory: BackendKit) -> None:
    backend = backend_factory()
    live = backend.create(desired("s_bogus"))
    if "silent_tokens" in backend_factory.features:
        # DAViCal and SOGo answer with a listing, which hides deletions: none is lost.
        gone = backend.create(desired("s_bogus_gone", LATER, LATER + timedelta(hours=1)))
        backend_factory.human.delete(gone.remote_id)
        known = {live.remote_id: live.etag, gone.remote_id: gone.etag}
        feed = backend.changes(backend_factory.bogus_cursor, known)
        assert feed.full or gone.remote_id in feed.removed
        assert live.remote_id not in feed.removed
    else:
        with pytest.raises(CursorExpired):
            backend.changes(backend_factory.bogus_cursor, {})
    with pytest.raises(CursorExpired):
        backend.changes("no-such-cursor-format", {})


def test_stopped_server_is_transient_never_not_found(backend_factory: BackendKit) -> None:
    stopped = backend_factory.stopped()
    with pytest.raises(Transient) as caught:
        stopped.backend.get(stopped.remote_id)
    assert not isinstance(caught.value, NotFound)
    with pytest.raises(Transient):
        stopped.backend.changes(stopped.cursor, {stopped.remote_id: "x"})
    with pytest.raises(Transient):
        stopped.backend.changes(None, {})
    with pytest.raises(Transient):
        stopped.backend.delete(stopped.remote_id, None)


# -- availability ----------------------------------------------------------------------------


def test_busy_reports_opaque_events_only(backend: CalendarBackend) -> None:
    backend.create(desired("s_opaque"))
    free_start = START + timedelta(hours=3)
    backend.create(
        desired("s_transparent", free_start, free_start + timedelta(hours=1), transparent=True)
    )
    cancelled_start = START + timedelta(hours=5)
    backend.create(
        desired(
            "s_cancelled", cancelled_start, cancelled_start + timedelta(hours=1), status="cancelled"
        )
    )
    outside = START + timedelta(days=3)
    backend.create(desired("s_outside", outside, outside + timedelta(hours=1)))
    day = START.replace(hour=0)
    assert backend.busy(day, day + timedelta(days=1)) == [(START, END)]


# -- fallback change feed ---------------------------------------------------------------------


def test_ctag_fallback_detects_change_and_removal(
    backend_factory: BackendKit, human: HumanEditor
) -> None:
    if "ctag" not in backend_factory.features:
        pytest.skip(f"{backend_factory.name} has no ctag mode")
    backend = backend_factory(force_ctag=True)
    a = backend.create(desired("s_ctag_a"))
    b = backend.create(desired("s_ctag_b", LATER, LATER + timedelta(hours=1)))
    listing = backend.changes(None, {})
    assert listing.full and set(by_id(listing)) == {a.remote_id, b.remote_id}
    known = {a.remote_id: a.etag, b.remote_id: b.etag}
    idle = backend.changes(listing.cursor, known)
    assert idle.changed == () and idle.removed == ()
    new_start = datetime(2031, 3, 14, 8, 0, tzinfo=UTC)
    human.move(a.remote_id, new_start, new_start + timedelta(hours=1), "Asia/Tokyo")
    human.delete(b.remote_id)
    feed = backend.changes(idle.cursor, known)
    assert not feed.full
    moved = by_id(feed)[a.remote_id]
    assert moved.content.start == new_start and moved.etag != a.etag
    assert feed.removed == (b.remote_id,)
    with pytest.raises(CursorExpired):
        backend.changes("sync:whatever", known)
