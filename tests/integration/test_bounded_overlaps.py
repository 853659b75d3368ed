"""Overlap checks read only the sessions overlapping the new interval (issue 11, goal 1),
and still refuse every overlap they refused: a booking, a customer's move (the admin's own
moves are not checked by the rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from syncd.domain.model import Actor, Customer
from syncd.errors import Refused
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.db import Database

ADMIN = "coach@example.com"
DAY = (datetime.now(UTC) + timedelta(days=10)).replace(hour=10, minute=0, second=0, microsecond=0)


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    db = Database(f"sqlite:///{tmp_path}/s.db")
    db.upgrade()
    c = Context(db, "https://book.example.com")
    services.add_admin(c, ADMIN, "Coach", "UTC")
    return c


def _book(ctx: Context, start: datetime, minutes: int, who: str = "ann") -> str:
    customer = Customer(f"{who}@example.org", who.title(), "UTC")
    end = start + timedelta(minutes=minutes)
    return services.book(ctx, ADMIN, customer, start, end, Actor.ADMIN).id


def test_a_booking_overlapping_a_longer_earlier_session_is_refused(ctx: Context) -> None:
    _book(ctx, DAY, 180)  # 10:00-13:00: starts before, ends after the new one
    with pytest.raises(Refused, match="overlaps"):
        _book(ctx, DAY + timedelta(hours=1), 30, "bob")
    with pytest.raises(Refused, match="overlaps"):
        _book(ctx, DAY - timedelta(minutes=30), 60, "bob")  # 09:30-10:30
    _book(ctx, DAY + timedelta(hours=3), 60, "bob")  # 13:00: back to back is fine
    _book(ctx, DAY - timedelta(hours=1), 60, "cy")  # 09:00-10:00 too


def test_a_customer_move_onto_another_session_is_refused_and_elsewhere_is_not(
    ctx: Context,
) -> None:
    _book(ctx, DAY, 120)  # 10:00-12:00
    other = _book(ctx, DAY + timedelta(days=1), 60, "bob")
    with pytest.raises(Refused, match="overlaps"):
        services.reschedule(ctx, other, DAY + timedelta(minutes=90), actor=Actor.CUSTOMER)
    with pytest.raises(Refused, match="overlaps"):
        services.reschedule(ctx, other, DAY - timedelta(minutes=30), actor=Actor.CUSTOMER)
    moved = services.reschedule(ctx, other, DAY + timedelta(hours=2), actor=Actor.CUSTOMER)
    assert moved.start == DAY + timedelta(hours=2)
    # Its old time is free again: a move checks the session's new interval, not its old one.
    assert _book(ctx, DAY + timedelta(days=1), 60, "cy")
