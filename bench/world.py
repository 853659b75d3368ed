"""Set-ups the benchmarks share: an admin with N sessions, on Radicale or in memory.

Sessions are seeded with bulk inserts (what is measured is syncd's cycle, not the seeding);
one booking through ``services.book`` is timed by bench/gestures.py (``booking_ms``).
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select

from adapters.caldav.backend import CalDAVBackend
from syncd import config as config_mod
from syncd.app.daemon import engine_settings
from syncd.engine.runner import CycleReport, sync_calendar
from syncd.ports import CalendarBackend
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import AdminRow, CalendarRow, CustomerRow, SessionRow
from tests.servers import Server

ADMIN = "coach@example.com"


def timeit(fn: Callable[[], object], repeat: int = 5) -> tuple[float, float]:
    """Median and min wall time of ``fn`` in milliseconds."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1000)
    return statistics.median(runs), min(runs)


def cpu(fn: Callable[[], object], repeat: int = 5) -> float:
    """Median CPU time (process) of ``fn`` in milliseconds."""
    runs = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        runs.append((time.process_time() - t0) * 1000)
    return statistics.median(runs)


class BenchWorld:
    """A SQLite database with one admin and one calendar row; ``sync(backend)`` runs a cycle."""

    #: The configuration every benchmark's syncd runs with.
    CONFIG = (
        '[sync]\nsettle = "0s"\n[web]\npublic_url = "https://book.example.com"\n'
        '[smtp]\nhost = "127.0.0.1"\nport = 9\n'
    )

    def __init__(self, tmp: Path, settings: dict[str, object], backend: str = "caldav") -> None:
        self.tmp = tmp
        self.db = Database(f"sqlite:///{tmp}/bench.db")
        self.db.upgrade()
        self.cfg = config_mod.parse(self.CONFIG, "bench")
        self.ctx = Context(self.db, "https://book.example.com")
        services.add_admin(self.ctx, ADMIN, "Coach", "Europe/Berlin")
        with self.db.write() as orm:
            admin_id = orm.scalars(select(AdminRow.id)).one()
            cal = CalendarRow(
                admin_id=admin_id, backend=backend, busy_only=False, settings=dict(settings)
            )
            orm.add(cal)
            orm.flush()
            self.cal_id, self.admin_id = cal.id, admin_id
        self.engine = engine_settings(self.cfg)

    def add_calendar(self, email: str, settings: dict[str, object]) -> tuple[int, int]:
        """Another admin with a calendar of its own: (admin id, calendar id). ``seed`` with
        ``admin_id`` books its sessions."""
        services.add_admin(self.ctx, email, "Coach", "Europe/Berlin")
        with self.db.write() as orm:
            admin_id = orm.scalars(select(AdminRow.id).where(AdminRow.email == email)).one()
            cal = CalendarRow(
                admin_id=admin_id, backend="caldav", busy_only=False, settings=dict(settings)
            )
            orm.add(cal)
            orm.flush()
            return admin_id, cal.id

    def seed(self, n: int, first: datetime | None = None, admin_id: int | None = None) -> None:
        """``n`` booked sessions, one an hour from ``first`` (default: tomorrow), 8 a day,
        for the first admin or ``admin_id``."""
        admin_id = self.admin_id if admin_id is None else admin_id
        base = (first or datetime.now(UTC) + timedelta(days=1)).replace(
            minute=0, second=0, microsecond=0
        )
        now = datetime.now(UTC).replace(microsecond=0)
        with self.db.write() as orm:
            rows = [
                {"admin_id": admin_id, "email": f"c{i}@example.org", "name": f"C{i}",
                 "tz": "UTC"}
                for i in range(n)
            ]  # fmt: skip
            orm.execute(insert(CustomerRow), rows)
            ids = orm.scalars(select(CustomerRow.id).order_by(CustomerRow.id)).all()[-n:]
            sessions = []
            for i, cid in enumerate(ids):
                start = base + timedelta(days=i // 8, hours=i % 8)
                sessions.append(
                    {"id": f"s_{secrets.token_hex(8)}", "admin_id": admin_id,
                     "customer_id": cid, "start": start, "end": start + timedelta(hours=1),
                     "status": "booked", "sequence": 0, "created_at": now, "updated_at": now}
                )  # fmt: skip
            orm.execute(insert(SessionRow), sessions)

    def sync(self, backend: CalendarBackend) -> CycleReport:
        """One cycle of the calendar through ``backend``."""
        return sync_calendar(self.ctx, self.engine, self.cal_id, backend)

    def close(self) -> None:
        """Release the database."""
        self.db.dispose()


def on_caldav(root: Path, server: Server) -> tuple[BenchWorld, CalDAVBackend, str]:
    """A world whose calendar is a new collection on ``server`` (its password in a file
    under ``root``), the CalDAV backend the cycles use, and the collection's URL."""
    url = server.make_calendar()
    (root / "pw").write_text(server.password)
    world = BenchWorld(
        root, {"url": url, "username": server.username, "password_file": str(root / "pw")}
    )
    return world, CalDAVBackend(url, server.username, server.password, timeout=30), url
