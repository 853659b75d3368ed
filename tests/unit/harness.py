"""A small engine world for unit tests: SQLite, one admin, one in-memory calendar.

Shared by the Hypothesis machine (test_engine_machine.py) and the rule tests of issue 10
(test_engine_rules.py). ``cycle()`` runs the real runner (planner, commit, execute) on the
in-memory backend, optionally as a named worker holding (or not) the calendar's lease.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from syncd.domain.model import Actor, Customer, Session
from syncd.engine.planner import BreakerRules
from syncd.engine.runner import CycleReport, EngineSettings, Fence, sync_calendar
from syncd.ports import RemoteEvent, Transient
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import CalendarRow, HistoryRow, OutboxRow
from tests.dbs import migrated_sqlite
from tests.fakes.memory_backend import MemoryBackend, MemoryCalendar

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ADMIN = "coach@example.com"
ADMIN_TZ = "Europe/Berlin"


class LossyBackend(MemoryBackend):
    """Performs writes, then may lose the answer (as a crash before recording it would)."""

    lose_answers = False

    def _lossy(self, result: RemoteEvent) -> RemoteEvent:
        if self.lose_answers:
            raise Transient("connection dropped after the write")
        return result

    def create(self, event):  # type: ignore[no-untyped-def]
        return self._lossy(super().create(event))

    def update(self, remote_id, event, etag):  # type: ignore[no-untyped-def]
        return self._lossy(super().update(remote_id, event, etag))


class Harness:
    """The database, the calendar and the clock; ``names`` are the customers' names."""

    def __init__(
        self,
        names: list[str],
        settings: EngineSettings | None = None,
        days: int = 3,
    ) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.db = Database(migrated_sqlite(Path(self.tmp.name) / "m.db"))
        self.now = NOW
        self.settings = settings or EngineSettings(
            settle=timedelta(minutes=2), breaker=BreakerRules(100, 1.0, False)
        )
        self.ctx = Context(self.db, "https://book.example.com", clock=lambda: self.now)
        services.add_admin(self.ctx, ADMIN, "Coach", ADMIN_TZ)
        self.sids: list[str] = []
        for i, name in enumerate(names):
            start = NOW + timedelta(days=days + i, hours=i)
            s = services.book(
                self.ctx,
                ADMIN,
                Customer(f"c{i}@example.org", name, "UTC"),
                start,
                start + timedelta(hours=1),
            )
            self.sids.append(s.id)
        with self.db.write() as orm:
            cal = CalendarRow(admin_id=1, backend="memory", settings={}, busy_only=False)
            orm.add(cal)
            orm.flush()
            self.cal_id = cal.id
        self.cal = MemoryCalendar()
        self.backend = LossyBackend(self.cal)
        self.cycle()
        self.delivered()

    def close(self) -> None:
        """Release the database."""
        self.db.dispose()
        self.tmp.cleanup()

    def rid(self, i: int) -> str:
        """The remote id of session ``i``'s event."""
        return self.backend.remote_id_for(self.ctx.uid(self.sids[i]), self.sids[i])

    def event(self, i: int) -> RemoteEvent | None:
        """Session ``i``'s event as the calendar holds it now."""
        return self.cal.events.get(self.rid(i))

    def session(self, i: int) -> Session:
        """Session ``i`` with its history."""
        return services.show(self.ctx, self.sids[i])

    def cycle(self, owner: str | None = None, backend: MemoryBackend | None = None) -> CycleReport:
        """One runner cycle (as ``owner`` under a fence, when given)."""
        fence = Fence(owner) if owner else None
        return sync_calendar(self.ctx, self.settings, self.cal_id, backend or self.backend, fence)

    def settle(self, cycles: int = 4, step: timedelta = timedelta(minutes=3)) -> None:
        """Let the settle window pass, ``cycles`` times."""
        for _ in range(cycles):
            self.now += step
            self.cycle()

    def take_lease(self, owner: str, seconds: int = 30) -> None:
        """Give ``owner`` the calendar's lease (as a claim would)."""
        with self.db.write() as orm:
            row = orm.get_one(CalendarRow, self.cal_id)
            row.lease_owner, row.lease_until = owner, self.now + timedelta(seconds=seconds)

    def delivered(self) -> None:
        """Mark every pending email as sent."""
        with self.db.write() as orm:
            for row in orm.scalars(select(OutboxRow).where(OutboxRow.status == "pending")):
                row.status = "sent"

    def emails(self, recipient: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        """(kind, recipient, payload) of every outbox row not superseded, oldest first."""
        with self.db.read() as orm:
            stmt = select(OutboxRow).order_by(OutboxRow.id)
            return [
                (r.kind, r.recipient, dict(r.payload))
                for r in orm.scalars(stmt)
                if r.status != "superseded" and (recipient is None or r.recipient == recipient)
            ]

    def customer_emails(self) -> list[tuple[str, str, dict[str, Any]]]:
        """Every email to a customer after the booking confirmations."""
        return [e for e in self.emails() if e[1] != ADMIN and e[0] != "booked"]

    def admin_actions(self) -> list[tuple[str, str]]:
        """(session id, action) of every history entry by the admin's calendar."""
        with self.db.read() as orm:
            stmt = (
                select(HistoryRow)
                .where(HistoryRow.actor == Actor.ADMIN_CALENDAR.value)
                .order_by(HistoryRow.id)
            )
            return [(h.session_id, h.action) for h in orm.scalars(stmt)]
