"""The cut-off policy at its boundaries and every allowed and refused transition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from syncd.domain import sessions as rules
from syncd.domain.model import Actor, Admin, Customer, Policy, Session, Status
from syncd.errors import Refused, UsageError

ADMIN = Admin("coach@example.com", "Coach", "Europe/Berlin", Policy())
ANN = Customer("ann@example.org", "Ann", "America/New_York")
START = datetime(2026, 12, 2, 15, 0, tzinfo=UTC)


def booked(start: datetime = START) -> Session:
    return Session("s_1", ADMIN.email, ANN, start, start + timedelta(hours=1), Status.BOOKED)


@pytest.mark.parametrize(
    ("offset", "allowed"),
    [(timedelta(seconds=-1), True), (timedelta(0), True), (timedelta(seconds=1), False)],
)
def test_customer_cancel_exactly_at_the_cutoff(offset: timedelta, allowed: bool) -> None:
    now = START - timedelta(hours=24) + offset
    if allowed:
        t = rules.cancel(booked(), ADMIN, "cannot make it", Actor.CUSTOMER, now)
        assert t.after.status is Status.CANCELED
    else:
        with pytest.raises(Refused, match="until 24 hours before"):
            rules.cancel(booked(), ADMIN, "cannot make it", Actor.CUSTOMER, now)


@pytest.mark.parametrize(
    ("offset", "allowed"),
    [(timedelta(seconds=-1), True), (timedelta(0), True), (timedelta(seconds=1), False)],
)
def test_customer_reschedule_exactly_at_the_cutoff(offset: timedelta, allowed: bool) -> None:
    now = START - timedelta(hours=24) + offset
    to = START + timedelta(days=2)
    if allowed:
        assert (
            rules.reschedule(
                booked(), ADMIN, to, to + timedelta(hours=1), Actor.CUSTOMER, now
            ).after.start
            == to
        )
    else:
        with pytest.raises(Refused):
            rules.reschedule(booked(), ADMIN, to, to + timedelta(hours=1), Actor.CUSTOMER, now)


def test_refusal_names_the_deadline_in_the_customers_zone() -> None:
    now = START - timedelta(hours=1)
    with pytest.raises(Refused) as err:
        rules.cancel(booked(), ADMIN, "x", Actor.CUSTOMER, now)
    # 24 h before 15:00 UTC on 2 Dec is 1 Dec 15:00 UTC = 10:00 EST in New York.
    assert "Tue 1 Dec 2026, 10:00 EST (America/New_York)" in str(err.value)


def test_cutoff_across_a_dst_change_is_24_real_hours() -> None:
    # Berlin leaves summer time on Sun 25 Oct 2026 at 03:00 CEST -> 02:00 CET.
    start = datetime(2026, 10, 26, 9, 0, tzinfo=UTC)  # Mon 10:00 CET
    deadline = start - timedelta(hours=24)  # Sun 09:00 UTC = 10:00 CET, after the change
    cust = Customer("b@example.org", "B", "Europe/Berlin")
    s = Session("s_2", ADMIN.email, cust, start, start + timedelta(hours=1), Status.BOOKED)
    assert rules.cancel(s, ADMIN, "x", Actor.CUSTOMER, deadline).after.status is Status.CANCELED
    with pytest.raises(Refused) as err:
        rules.cancel(s, ADMIN, "x", Actor.CUSTOMER, deadline + timedelta(seconds=1))
    assert "Sun 25 Oct 2026, 10:00 CET (Europe/Berlin)" in str(err.value)


def test_admin_is_never_bound_by_a_cutoff() -> None:
    now = START - timedelta(minutes=5)
    to = START + timedelta(days=1)
    for actor in (Actor.ADMIN, Actor.ADMIN_CALENDAR):
        assert rules.cancel(booked(), ADMIN, "sick", actor, now).after.cancel_reason == "sick"
        assert (
            rules.reschedule(booked(), ADMIN, to, to + timedelta(hours=1), actor, now).after.start
            == to
        )
        assert (
            rules.let_customer_choose(booked(), ADMIN, "pick", actor, now).after.status
            is Status.AWAITING_CUSTOMER
        )


def test_admin_cancel_needs_a_reason_and_choose_needs_a_message() -> None:
    now = START - timedelta(days=3)
    with pytest.raises(UsageError):
        rules.cancel(booked(), ADMIN, "  ", Actor.ADMIN, now)
    with pytest.raises(UsageError):
        rules.let_customer_choose(booked(), ADMIN, "", Actor.ADMIN, now)


def test_customer_cannot_let_themselves_choose() -> None:
    with pytest.raises(Refused):
        rules.let_customer_choose(booked(), ADMIN, "m", Actor.CUSTOMER, START - timedelta(days=3))


def test_transitions_bump_sequence_record_history_and_cause_notices() -> None:
    now = START - timedelta(days=3)
    to = START + timedelta(days=1)
    t1 = rules.reschedule(booked(), ADMIN, to, to + timedelta(hours=1), Actor.ADMIN, now)
    assert t1.after.sequence == 1 and t1.entry.actor is Actor.ADMIN
    assert [n.kind.value for n in t1.notices] == ["rescheduled"]
    assert t1.notices[0].data["old_start"] == START.isoformat()
    t2 = rules.let_customer_choose(t1.after, ADMIN, "pick", Actor.ADMIN_CALENDAR, now)
    assert t2.after.sequence == 2 and [n.kind.value for n in t2.notices] == ["choose"]
    pick = to + timedelta(days=1)
    t3 = rules.customer_choose(t2.after, ADMIN, pick, pick + timedelta(hours=1), now, [])
    assert t3.after.status is Status.BOOKED and t3.after.sequence == 3
    assert [n.kind.value for n in t3.notices] == ["confirmed"]
    t4 = rules.cancel(t3.after, ADMIN, "sorry", Actor.ADMIN, now)
    assert [h.action for h in t4.after.history] == [
        "rescheduled",
        "let_customer_choose",
        "chose_new_time",
        "canceled",
    ]
    with pytest.raises(Refused):
        rules.cancel(t4.after, ADMIN, "again", Actor.ADMIN, now)
    with pytest.raises(Refused):
        rules.reschedule(t4.after, ADMIN, to, to + timedelta(hours=1), Actor.ADMIN, now)


def test_booking_refuses_overlaps_and_the_past() -> None:
    now = START - timedelta(days=3)
    other = booked()
    with pytest.raises(Refused, match="overlaps"):
        rules.book(
            "s_9",
            ADMIN,
            ANN,
            START + timedelta(minutes=30),
            START + timedelta(minutes=90),
            now,
            [other],
        )
    with pytest.raises(Refused, match="past"):
        rules.book("s_9", ADMIN, ANN, now - timedelta(hours=1), now, now, [])
    ok = rules.book(
        "s_9", ADMIN, ANN, START + timedelta(hours=1), START + timedelta(hours=2), now, [other]
    )
    assert ok.after.status is Status.BOOKED and ok.notices[0].kind.value == "booked"


def test_customer_choice_respects_min_notice() -> None:
    now = START - timedelta(days=3)
    waiting = rules.let_customer_choose(booked(), ADMIN, "m", Actor.ADMIN, now).after
    with pytest.raises(Refused, match="too soon"):
        rules.customer_choose(
            waiting, ADMIN, now + timedelta(hours=1), now + timedelta(hours=2), now, []
        )
