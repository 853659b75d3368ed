"""The planner's rules, one gesture-table row and one safety rule per test."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from syncd.domain.model import Customer, Session, Status
from syncd.engine.desired import GestureRules, content_hash, desired_content, desired_event
from syncd.engine.planner import (
    ApplyCancel,
    ApplyChoose,
    ApplyReschedule,
    Create,
    Delete,
    MirrorState,
    PendingIntent,
    PlanInput,
    Restore,
    Update,
    Verification,
    plan_calendar,
    with_verifications,
)
from syncd.ports import EventContent, RemoteEvent

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
RULES = GestureRules()
ANN = Customer("ann@example.org", "Ann", "Europe/Berlin")


def session(n: int = 1, status: Status = Status.BOOKED, days: int = 3) -> Session:
    start = NOW + timedelta(days=days, hours=n)
    return Session(f"s_{n}", "coach@example.com", ANN, start, start + timedelta(hours=1), status)


def desired(s: Session):  # type: ignore[no-untyped-def]
    return desired_event(s, f"syncd-{s.id}@h", "https://h/x", RULES)


def written(s: Session, etag: str = '"w1"') -> MirrorState:
    h = content_hash(desired_content(desired(s)), RULES)
    return MirrorState(s.id, f"/cal/{s.id}.ics", etag, h, etag)


def remote(s: Session, etag: str = '"a1"', **change: object) -> RemoteEvent:
    base = desired_content(desired(s))
    return RemoteEvent(f"/cal/{s.id}.ics", etag, replace(base, **change))  # type: ignore[arg-type]


def inp(sessions: list[Session], **kw: object) -> PlanInput:
    mirrors = kw.pop("mirrors", {s.id: written(s) for s in sessions})
    return PlanInput(
        now=kw.pop("now", NOW),  # type: ignore[arg-type]
        sessions=MappingProxyType({s.id: s for s in sessions}),
        desired=MappingProxyType({s.id: desired(s) for s in sessions if s.live}),
        mirrors=MappingProxyType(mirrors),  # type: ignore[arg-type]
        settle=kw.pop("settle", timedelta(minutes=2)),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def test_echo_of_own_write_is_ignored() -> None:
    s = session()
    plan = plan_calendar(inp([s], changed=[remote(s, etag='"w1"')]))
    assert plan.actions == () and plan.set_intents == () and plan.writes == ()


def test_reserialization_by_server_is_noise() -> None:
    s = session()
    # New etag, different summary/notes layout, same instants and status: not a gesture.
    ev = remote(s, etag='"x9"', summary="Ann — 1:1 session (edited)", description="mine")
    plan = plan_calendar(inp([s], changed=[ev]))
    assert plan.actions == () and plan.set_intents == () and plan.writes == ()
    assert plan.seen == ((s.id, '"x9"'),)


def test_move_waits_for_the_settle_window_then_reschedules() -> None:
    s = session()
    new_start = s.start + timedelta(days=1)
    ev = remote(s, etag='"a2"', start=new_start, end=new_start + timedelta(hours=1))
    first = plan_calendar(inp([s], changed=[ev]))
    assert first.actions == ()
    (intent,) = first.set_intents
    assert intent.kind == "reschedule"
    later = NOW + timedelta(minutes=2)
    seen = replace(written(s), seen_etag='"a2"')  # the commit recorded the etag it saw
    second = plan_calendar(inp([s], now=later, intents={s.id: intent}, mirrors={s.id: seen}))
    assert second.actions == (
        ApplyReschedule(
            s.id, new_start, new_start + timedelta(hours=1), '"a2"', intent.observed_hash
        ),
    )


def test_settle_zero_applies_at_once() -> None:
    s = session()
    new_start = s.start + timedelta(hours=5)
    ev = remote(s, etag='"a2"', start=new_start, end=new_start + timedelta(hours=1))
    plan = plan_calendar(inp([s], changed=[ev], settle=timedelta(0)))
    assert [type(a) for a in plan.actions] == [ApplyReschedule]


def test_undo_within_the_settle_window_drops_the_intent() -> None:
    s = session()
    new_start = s.start + timedelta(days=1)
    moved = remote(s, etag='"a2"', start=new_start, end=new_start + timedelta(hours=1))
    (intent,) = plan_calendar(inp([s], changed=[moved])).set_intents
    back = remote(s, etag='"a3"')  # dragged back to where syncd put it
    plan = plan_calendar(
        inp([s], now=NOW + timedelta(minutes=1), changed=[back], intents={s.id: intent})
    )
    assert plan.drop_intents == (s.id,) and plan.actions == ()


def test_a_different_gesture_restarts_the_settle_clock() -> None:
    s = session()
    t1 = s.start + timedelta(days=1)
    (intent,) = plan_calendar(
        inp([s], changed=[remote(s, etag='"a2"', start=t1, end=t1 + timedelta(hours=1))])
    ).set_intents
    t2 = s.start + timedelta(days=2)
    later = NOW + timedelta(minutes=1, seconds=30)
    plan = plan_calendar(
        inp(
            [s],
            now=later,
            intents={s.id: intent},
            changed=[remote(s, etag='"a3"', start=t2, end=t2 + timedelta(hours=1))],
        )
    )
    assert plan.actions == ()
    assert plan.set_intents[0].first_seen == later


def test_deletion_is_verified_before_cancel() -> None:
    s = session()
    first = plan_calendar(inp([s], removed=[f"/cal/{s.id}.ics"], settle=timedelta(0)))
    assert first.verify == (s.id,) and first.actions == ()
    (intent,) = first.set_intents
    gone = plan_calendar(
        with_verifications(
            inp([s], removed=[f"/cal/{s.id}.ics"], settle=timedelta(0)),
            {s.id: Verification("gone")},
        )
    )
    assert gone.actions == (
        ApplyCancel(s.id, "Your host had to cancel this session.", False, None),
    )
    assert intent.kind == "removed"


def test_failed_verification_is_never_a_deletion() -> None:
    s = session()
    base = inp([s], removed=[f"/cal/{s.id}.ics"], settle=timedelta(0))
    plan = plan_calendar(with_verifications(base, {s.id: Verification("unknown")}))
    assert plan.actions == () and plan.writes == ()
    assert [i.kind for i in plan.set_intents] == ["removed"]


def test_phantom_deletion_is_dropped_when_the_event_is_still_there() -> None:
    s = session()
    base = inp([s], removed=[f"/cal/{s.id}.ics"], settle=timedelta(0))
    plan = plan_calendar(with_verifications(base, {s.id: Verification("present", remote(s))}))
    assert plan.actions == ()
    assert s.id in plan.drop_intents


def test_cancel_command_cancels_with_the_reason_and_removes_the_event() -> None:
    s = session()
    ev = remote(s, etag='"a2"', summary="Cancel: I am sick")
    plan = plan_calendar(inp([s], changed=[ev], settle=timedelta(0)))
    assert plan.actions == (ApplyCancel(s.id, "I am sick", True, '"a2"'),)


def test_cancel_command_in_the_first_line_of_the_notes() -> None:
    s = session()
    ev = remote(s, etag='"a2"', description="cancel: travel\n\n" + desired(s).notes_block)
    plan = plan_calendar(inp([s], changed=[ev], settle=timedelta(0)))
    assert plan.actions == (ApplyCancel(s.id, "travel", True, '"a2"'),)


def test_reschedule_command_lets_the_customer_choose() -> None:
    s = session()
    ev = remote(s, etag='"a2"', summary="new time: sorry, pick another day")
    plan = plan_calendar(inp([s], changed=[ev], settle=timedelta(0)))
    assert [type(a) for a in plan.actions] == [ApplyChoose]
    assert plan.actions[0].message == "sorry, pick another day"  # type: ignore[union-attr]


def test_invalid_shapes_are_restored() -> None:
    s = session()
    cases = {
        "all-day": remote(s, etag='"a2"', all_day=True),
        "recurring": remote(s, etag='"a3"', recurring=True),
        "past": remote(
            s,
            etag='"a4"',
            start=NOW - timedelta(days=1),
            end=NOW - timedelta(days=1) + timedelta(hours=1),
        ),
        "zero": remote(
            s, etag='"a5"', end=s.start + timedelta(hours=2), start=s.start + timedelta(hours=2)
        ),
    }
    for name, ev in cases.items():
        plan = plan_calendar(inp([s], changed=[ev], settle=timedelta(0)))
        assert [type(a) for a in plan.actions] == [Restore], name
        assert [type(w) for w in plan.writes] == [Update], name
        assert plan.writes[0].etag == ev.etag, name  # type: ignore[union-attr]


def test_mass_deletion_trips_the_breaker_and_holds_everything() -> None:
    sessions = [session(n) for n in range(8)]
    removed = [f"/cal/{s.id}.ics" for s in sessions[:5]]
    base = inp(sessions, removed=removed, settle=timedelta(0))
    first = plan_calendar(base)
    assert sorted(first.verify) == sorted(s.id for s in sessions[:5])
    checks = {s.id: Verification("gone") for s in sessions[:5]}
    plan = plan_calendar(with_verifications(base, checks))
    assert plan.trip is True
    assert plan.actions == ()
    assert sorted(plan.hold) == sorted(s.id for s in sessions[:5])
    assert all(i.held for i in plan.set_intents if i.session_id in plan.hold)


def test_a_few_deletions_do_not_trip_the_breaker() -> None:
    sessions = [session(n) for n in range(8)]
    removed = [f"/cal/{s.id}.ics" for s in sessions[:3]]
    base = inp(sessions, removed=removed, settle=timedelta(0))
    plan = plan_calendar(
        with_verifications(base, {s.id: Verification("gone") for s in sessions[:3]})
    )
    assert plan.trip is False and len(plan.actions) == 3


def test_tripped_breaker_holds_new_deletions_too() -> None:
    sessions = [session(n) for n in range(8)]
    base = inp(
        sessions, removed=[f"/cal/{sessions[0].id}.ics"], settle=timedelta(0), breaker_tripped=True
    )
    plan = plan_calendar(with_verifications(base, {sessions[0].id: Verification("gone")}))
    assert plan.actions == () and plan.hold == (sessions[0].id,)


def test_full_listing_compares_with_the_mirror() -> None:
    sessions = [session(n) for n in range(3)]
    listing = [remote(s, etag='"w1"') for s in sessions[1:]]
    plan = plan_calendar(inp(sessions, changed=listing, full_listing=True, settle=timedelta(0)))
    assert plan.verify == (sessions[0].id,)
    assert plan.actions == ()


def test_full_listing_with_nothing_changed_is_nothing() -> None:
    sessions = [session(n) for n in range(3)]
    listing = [remote(s, etag='"w1"') for s in sessions]
    plan = plan_calendar(inp(sessions, changed=listing, full_listing=True, settle=timedelta(0)))
    assert plan == type(plan)()


def test_platform_change_is_written_with_the_last_etag() -> None:
    s = session()
    mirror = written(s)
    moved = replace(s, start=s.start + timedelta(hours=3), end=s.end + timedelta(hours=3))
    plan = plan_calendar(inp([moved], mirrors={s.id: mirror}))
    (w,) = plan.writes
    assert isinstance(w, Update) and w.etag == '"w1"' and w.event.start == moved.start


def test_platform_change_waits_while_an_admin_gesture_is_pending() -> None:
    s = session()
    mirror = written(s)
    moved = replace(s, start=s.start + timedelta(hours=3), end=s.end + timedelta(hours=3))
    intent = PendingIntent(
        s.id,
        "reschedule",
        MappingProxyType({"start": s.start.isoformat(), "end": s.end.isoformat()}),
        "h",
        NOW,
    )
    plan = plan_calendar(inp([moved], mirrors={s.id: mirror}, intents={s.id: intent}))
    assert plan.writes == ()


def test_new_session_is_created_and_canceled_one_deleted() -> None:
    s1, s2 = session(1), session(2, Status.CANCELED)
    plan = plan_calendar(inp([s1, s2], mirrors={s2.id: written(s2)}))
    assert [type(w) for w in plan.writes] == [Create, Delete]


def test_edits_to_a_session_that_is_over_are_ignored() -> None:
    s = session(days=-1)
    ev = remote(s, etag='"a2"', summary="cancel: whatever")
    plan = plan_calendar(inp([s], changed=[ev], settle=timedelta(0)))
    assert plan.actions == () and plan.writes == ()


def test_unrecorded_write_echo_is_adopted_not_taken_for_a_gesture() -> None:
    # syncd wrote the new time but crashed before recording the etag.
    s = session()
    old = written(s)
    moved = replace(s, start=s.start + timedelta(hours=3), end=s.end + timedelta(hours=3))
    ev = remote(moved, etag='"z1"')
    plan = plan_calendar(inp([moved], mirrors={s.id: old}, changed=[ev], settle=timedelta(0)))
    assert plan.actions == () and plan.set_intents == () and plan.writes == ()
    assert plan.adopt[0][:2] == (s.id, '"z1"')


def test_unknown_events_are_not_syncds() -> None:
    s = session()
    stranger = RemoteEvent("/cal/other.ics", '"o"', EventContent(NOW, NOW + timedelta(hours=1)))
    plan = plan_calendar(inp([s], changed=[stranger], settle=timedelta(0)))
    assert plan == type(plan)()


def test_event_found_under_another_id_is_followed_not_cancelled() -> None:
    # A full listing where the server keeps syncd's event under a new href (same UID).
    s = session()
    moved_href = RemoteEvent("/cal/renamed.ics", '"r1"', desired_content(desired(s)))
    plan = plan_calendar(inp([s], changed=[moved_href], full_listing=True, settle=timedelta(0)))
    assert plan.rehome == ((s.id, "/cal/renamed.ics"),)
    assert plan.verify == () and plan.actions == () and plan.set_intents == ()


def test_a_suddenly_empty_calendar_trips_the_breaker_even_when_small() -> None:
    sessions = [session(n) for n in range(2)]
    base = inp(sessions, changed=[], full_listing=True, settle=timedelta(0))
    plan = plan_calendar(with_verifications(base, {s.id: Verification("gone") for s in sessions}))
    assert plan.trip and plan.actions == ()
    one = [session(1)]
    single = inp(one, removed=[f"/cal/{one[0].id}.ics"], settle=timedelta(0))
    plan = plan_calendar(with_verifications(single, {one[0].id: Verification("gone")}))
    assert not plan.trip and len(plan.actions) == 1  # one session, one deletion: a cancel
