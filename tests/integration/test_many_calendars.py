"""Every calendar every interval (issue 11, goal 4): one pass reaches all of them.

``syncd sync --once`` used to claim at most 50 calendars and stop; a pass now claims batch
after batch until none is left.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from syncd.domain.model import Customer
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import CalendarRow
from syncd.store.repo import get_admin_row
from tests.cli_helpers import syncd, write_config
from tests.servers import start_radicale

CALENDARS = 60


def test_sync_once_syncs_all_sixty_calendars(tmp_path: Path) -> None:
    server = start_radicale(tmp_path / "srv")
    try:
        (tmp_path / "pw").write_text(server.password)
        cfg = write_config(
            tmp_path / "syncd.toml",
            f"sqlite:///{tmp_path}/s.db",
            '[sync]\nsettle = "0s"\n[smtp]\nhost = "127.0.0.1"\nport = 9\n',
        )
        db = Database(f"sqlite:///{tmp_path}/s.db")
        db.upgrade()
        ctx = Context(db, "https://book.example.com")
        start = (datetime.now(UTC) + timedelta(days=3)).replace(minute=0, second=0, microsecond=0)
        for i in range(CALENDARS):
            admin = f"coach{i}@example.com"
            services.add_admin(ctx, admin, f"Coach {i}", "UTC")
            with db.write() as orm:
                admin_id = get_admin_row(orm, admin).id
                orm.add(
                    CalendarRow(
                        admin_id=admin_id,
                        backend="caldav",
                        busy_only=False,
                        settings={
                            "url": server.make_calendar(),
                            "username": server.username,
                            "password_file": str(tmp_path / "pw"),
                        },
                    )
                )
            customer = Customer(f"c{i}@example.org", f"C{i}", "UTC")
            services.book(ctx, admin, customer, start, start + timedelta(hours=1))
        db.dispose()
        r = syncd(cfg, "--json", "sync", "--once", timeout=300)
        calendars = r.json()["calendars"]
        assert len(calendars) == CALENDARS, r.err
        bad = [c for c in calendars if not (c["error"] is None and c["writes"] == 1)]
        assert not bad, (bad[:3], r.err[-3000:])
        assert len({c["id"] for c in calendars}) == CALENDARS
    finally:
        server.stop()
