"""A small world for end-to-end tests: a database, an admin, a calendar on a real server."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from syncd import config as config_mod
from syncd.app.daemon import sync_one
from syncd.domain.model import Customer, Session
from syncd.engine.runner import CycleReport
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import CalendarRow, MirrorRow, OutboxRow
from tests.dbs import migrated_sqlite
from tests.servers import Server


class Clock:
    """A settable clock that starts at the real time (servers stamp real times)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


class WorldBase:
    """What every end-to-end world offers; subclasses set ``db``, ``ctx``, ``clock`` and
    ``sync()``."""

    ADMIN = "coach@example.com"
    db: Database
    ctx: Context
    clock: Clock

    def sync(self) -> CycleReport:
        raise NotImplementedError

    def book(self, days: float = 3, name: str = "Ann", tz: str = "America/New_York") -> str:
        start = (self.clock.now + timedelta(days=days)).replace(minute=0, second=0)
        s = services.book(
            self.ctx,
            self.ADMIN,
            Customer(f"{name.lower()}@example.org", name, tz),
            start,
            start + timedelta(hours=1),
        )
        self.delivered()
        return s.id

    def delivered(self) -> None:
        """Mark every pending email as sent (the customer got the booking confirmation).

        Unsent notices coalesce (tests/integration/test_notify.py); these tests want the
        notices each gesture causes on their own.
        """
        with self.db.write() as orm:
            orm.execute(
                update(OutboxRow)
                .where(OutboxRow.status == "pending")
                .values(status="sent", sent_at=self.clock.now)
            )

    def session(self, sid: str) -> Session:
        return services.show(self.ctx, sid)

    def remote_id(self, sid: str) -> str:
        with self.db.read() as orm:
            row = orm.scalars(select(MirrorRow).where(MirrorRow.session_id == sid)).one()
            return row.remote_id

    def outbox(self, session_id: str | None = None) -> list[tuple[str, str, str]]:
        """(kind, recipient, status) of every outbox row (of one session)."""
        with self.db.read() as orm:
            stmt = select(OutboxRow).order_by(OutboxRow.id)
            if session_id:
                stmt = stmt.where(OutboxRow.session_id == session_id)
            return [(r.kind, r.recipient, r.status) for r in orm.scalars(stmt)]

    def customer_rows(self) -> list[tuple[str, str, str]]:
        return [o for o in self.outbox() if o[1] != self.ADMIN]

    def assert_quiet(self) -> None:
        """A further cycle adds nothing: no action, no write, no outbox row."""
        before = self.outbox()
        report = self.sync()
        assert report.error is None, report.error
        assert report.actions == [] and report.writes == 0, report
        assert self.outbox() == before


@dataclass
class World(WorldBase):
    """One admin with one calendar collection on ``server``."""

    tmp: Path
    server: Server
    settle: str = "0s"
    backend: str = "caldav"
    clock: Clock = field(default_factory=Clock)

    def __post_init__(self) -> None:
        self.db = Database(migrated_sqlite(self.tmp / "world.db"))
        (self.tmp / "pw").write_text(self.server.password)
        self.cfg = config_mod.parse(
            f'[sync]\nsettle = "{self.settle}"\n[web]\npublic_url = "https://book.example.com"\n'
            '[smtp]\nhost = "127.0.0.1"\nport = 9\n',
            "test",
        )
        self.ctx = Context(self.db, "https://book.example.com", clock=self.clock)
        services.add_admin(self.ctx, "coach@example.com", "Coach", "Europe/Berlin")
        self.url = self.server.make_calendar()
        with self.db.write() as orm:
            cal = CalendarRow(
                admin_id=1,
                backend="caldav",
                busy_only=False,
                settings={
                    "url": self.url,
                    "username": self.server.username,
                    "password_file": str(self.tmp / "pw"),
                },
            )
            orm.add(cal)
            orm.flush()
            self.cal_id = cal.id

    def sync(self) -> CycleReport:
        return sync_one(self.ctx, self.cfg, self.cal_id)

    def calendar(self) -> dict[str, Any]:
        with self.db.read() as orm:
            row = orm.get_one(CalendarRow, self.cal_id)
            return {"cursor": row.cursor, "tripped": row.breaker_tripped_at is not None}


def event_of(world: World, sid: str) -> Any:
    """The event as the server holds it now (a fresh GET through the adapter)."""
    from syncd.app.backends import open_backend

    with world.db.read() as orm:
        settings = dict(orm.get_one(CalendarRow, world.cal_id).settings)
    backend = open_backend("caldav", settings, world.cfg)
    try:
        return backend.get(world.remote_id(sid))
    finally:
        backend.close()
