"""The sqlite3 read path of the listings answers exactly as the canonical path (issue 11).

``syncd session list``, ``calendar list`` and ``status`` read a SQLite file over sqlite3
(:mod:`syncd.store.listing`) to start fast; every answer here is compared with the one the
services give over SQLAlchemy, and every case the fast path must leave to the canonical
one (which words the error) is checked to be declined.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from syncd.app.commands import calendar_json
from syncd.app.status import document, orm_rows
from syncd.domain.model import Actor, Customer
from syncd.services import booking as services
from syncd.store import listing
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import AdminRow, CalendarRow, IntentRow, MirrorRow, OutboxRow

COACH, TUTOR = "coach@example.com", "tutor@example.com"


@pytest.fixture
def world(tmp_path: Path) -> tuple[str, Context]:
    """Two admins; sessions booked, moved, canceled, waiting, and two at the same instant."""
    url = f"sqlite:///{tmp_path}/s.db"
    db = Database(url)
    db.upgrade()
    ctx = Context(db, "https://book.example.com")
    services.add_admin(ctx, COACH, "Coach", "Europe/Berlin")
    services.add_admin(ctx, TUTOR, "Tutor", "America/New_York")
    base = (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
    ids = []
    for i in range(6):
        start = base + timedelta(hours=i)
        who = Customer(f"c{i}@example.org", f"C{i} Ünïcode", "Asia/Tokyo")
        ids.append(services.book(ctx, COACH, who, start, start + timedelta(minutes=45)).id)
        # the tutor's session at the very same instant: ties in ORDER BY start
        services.book(ctx, TUTOR, who, start, start + timedelta(hours=1), Actor.ADMIN)
    services.reschedule(ctx, ids[0], base + timedelta(days=1), actor=Actor.ADMIN)
    services.cancel(ctx, ids[1], "I am ill", Actor.CUSTOMER)
    # a new booking in the canceled slot: same start as the canceled one
    late = Customer("late@example.org", "Late", "UTC")
    services.book(ctx, COACH, late, base + timedelta(hours=1), base + timedelta(hours=2))
    services.let_customer_choose(ctx, ids[2], "Pick another day, please", Actor.ADMIN)
    now = datetime.now(UTC)
    with db.write() as orm:
        admins = {a.email: a.id for a in orm.scalars(select(AdminRow))}
        plain = CalendarRow(
            admin_id=admins[COACH], backend="caldav", busy_only=False,
            settings={"url": "https://dav.example.com/c/", "username": "u", "password_file": "/p"},
        )  # fmt: skip
        tripped = CalendarRow(
            admin_id=admins[TUTOR], backend="google", busy_only=True,
            settings={"calendar_id": "primary", "admin_email": TUTOR},
            last_sync_at=now - timedelta(minutes=3), last_error="HTTP 503",
            breaker_tripped_at=now - timedelta(minutes=1), paused_reason="token revoked",
            lease_owner="elsewhere:1", lease_until=now + timedelta(minutes=4),
        )  # fmt: skip
        orm.add_all([plain, tripped])
        orm.flush()
        orm.add_all(
            [
                MirrorRow(calendar_id=plain.id, session_id=ids[3], remote_id="a.ics", gone=False),
                MirrorRow(calendar_id=plain.id, session_id=ids[4], remote_id="b.ics", gone=True),
                IntentRow(calendar_id=tripped.id, session_id=ids[5], kind="removed",
                          observed_hash="h", first_seen=now - timedelta(seconds=90), held=True),
                IntentRow(calendar_id=plain.id, session_id=ids[3], kind="reschedule",
                          observed_hash="h", first_seen=now - timedelta(seconds=30)),
                IntentRow(calendar_id=tripped.id, session_id=ids[4], kind="cancel",
                          observed_hash="h", first_seen=now - timedelta(seconds=200)),
            ]
        )  # fmt: skip
        for row in orm.scalars(select(OutboxRow).order_by(OutboxRow.id).limit(2)):
            row.last_error = f"SMTP 451 on {row.id}"
    return url, ctx


def test_session_list_is_the_services_answer(world: tuple[str, Context]) -> None:
    url, ctx = world
    zones = {a.email: a.tz for a in services.list_admins(ctx)}
    for admin in (None, "", COACH, TUTOR.upper()):
        for status in (None, "booked", "canceled", "awaiting_customer"):
            expected = services.list_sessions(ctx, admin, status)
            assert listing.read(url, listing.sessions(admin, status)) == (expected, zones)
    everything = services.list_sessions(ctx)
    assert len(everything) == 13 and any(s.history[-1].from_start for s in everything)


def test_calendar_list_and_status_are_the_canonical_answers(world: tuple[str, Context]) -> None:
    url, ctx = world
    with ctx.db.read() as orm:
        canonical = [
            calendar_json(c, e)
            for c, e in orm.execute(
                select(CalendarRow, AdminRow.email).join(AdminRow).order_by(CalendarRow.id)
            ).all()
        ]
    fast = listing.read(url, listing.calendars)
    assert fast is not None and [calendar_json(c, e) for c, e, _tz in fast] == canonical
    assert len(canonical) == 2
    now = datetime.now(UTC)
    rows = listing.read(url, listing.status_rows)
    assert rows is not None and document(rows, now) == document(orm_rows(ctx.db), now)
    assert rows.oldest_unsent is not None and rows.last_unsent_error and len(rows.intents) == 3


def test_what_the_canonical_path_must_word_is_declined(
    world: tuple[str, Context], tmp_path: Path
) -> None:
    url, _ctx = world
    assert listing.read(url, listing.sessions("nobody@example.com", None)) is None
    assert listing.read(url, listing.sessions(None, "bad")) is None
    assert listing.read(url, listing.sessions(None, "")) is None
    not_a_db = tmp_path / "notes.db"
    not_a_db.write_text("these are my notes, not a database\n" * 100)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    for other in (
        "postgresql+psycopg://u@localhost/syncd",
        "sqlite://",
        "sqlite:///:memory:",
        f"{url}?timeout=5",
        f"sqlite:///{tmp_path}/missing.db",
        f"sqlite:///{not_a_db}",
        f"sqlite:///{empty}",
    ):
        assert listing.read(other, listing.calendars) is None, other
    assert not (tmp_path / "missing.db").exists()  # a listing never creates a file
