"""What rests in the database: customers per admin, no usable link, reads without the lock."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import select

from syncd.domain.model import Actor, Customer
from syncd.notify.compose import compose
from syncd.notify.links import derive_token
from syncd.services import booking as services
from syncd.services.choice import lookup_choice
from syncd.store.context import Context
from syncd.store.db import MIGRATIONS, Database
from syncd.store.models import ChoiceTokenRow, OutboxRow
from syncd.web.queries import counts
from tests.conftest import Clock

START = datetime(2026, 12, 8, 10, tzinfo=UTC)
FROM = "Bookings <bookings@example.com>"


def _two_admins(ctx: Context) -> None:
    services.add_admin(ctx, "kim@example.com", "Kim", "America/New_York")
    services.add_admin(ctx, "lee@example.com", "Lee", "Asia/Tokyo")


def test_one_admins_booking_never_renames_another_admins_customer(ctx: Context) -> None:
    _two_admins(ctx)
    hour = timedelta(hours=1)
    kims = services.book(
        ctx, "kim@example.com", Customer("ann@example.org", "Ann", "Europe/Berlin"), START,
        START + hour,
    )  # fmt: skip
    services.book(
        ctx,
        "lee@example.com",
        Customer("Ann@Example.org", "Mallory", "Pacific/Kiritimati"),
        START,
        START + hour,
    )
    again = services.show(ctx, kims.id)
    assert again.customer == Customer("ann@example.org", "Ann", "Europe/Berlin")
    with ctx.db.read() as orm:
        kim_rows = orm.scalars(select(OutboxRow).where(OutboxRow.session_id == kims.id)).all()
    assert [r.payload["session"]["customer"]["name"] for r in kim_rows] == ["Ann"]
    # The same admin booking the same email again refreshes their own customer.
    services.book(
        ctx,
        "kim@example.com",
        Customer("ann@example.org", "Ann Weber", "Europe/Berlin"),
        START + 2 * hour,
        START + 3 * hour,
    )
    assert services.show(ctx, kims.id).customer.name == "Ann Weber"


def test_the_migration_splits_a_customer_shared_by_two_admins(db_url: str) -> None:
    # A database at 0002 (before customers belonged to their admin), with Ann shared.
    db = Database(db_url)
    engine = db.engine
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.begin() as conn:
        meta.drop_all(conn)  # the fixture migrated to head: start again from nothing
    with engine.connect() as conn:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.commit()
    now = datetime(2026, 11, 30, tzinfo=UTC).replace(tzinfo=None)
    with engine.begin() as conn:
        for i, (email, tz) in enumerate((("kim@example.com", "UTC"), ("lee@example.com", "UTC"))):
            conn.execute(
                sa.text(
                    "INSERT INTO admins (id, email, name, tz, reschedule_cutoff_s, cancel_cutoff_s,"
                    " min_notice_s, choose_link_ttl_s, default_cancel_reason, weekly,"
                    " slot_minutes, created_at) VALUES (:i, :e, :n, :tz, 0, 0, 0, 0, '', '{}',"
                    " 60, :now)"
                ),
                {"i": i + 1, "e": email, "n": email[:3], "tz": tz, "now": now},
            )
        for cid, email in ((7, "ann@x.org"), (8, "gone@x.org")):
            conn.execute(
                sa.text(
                    "INSERT INTO customers (id, email, name, tz) VALUES (:i, :e, 'Ann', 'UTC')"
                ),
                {"i": cid, "e": email},
            )
        for sid, admin_id in (("s_a", 1), ("s_b", 2), ("s_c", 2)):
            conn.execute(
                sa.text(
                    'INSERT INTO sessions (id, admin_id, customer_id, start, "end", status,'
                    " sequence, created_at, updated_at) VALUES (:s, :a, 7, :now, :now, 'booked',"
                    " 0, :now, :now)"
                ),
                {"s": sid, "a": admin_id, "now": now},
            )
    assert (
        db.upgrade() == "0006"
    )  # 0003, then 0004 (an index), 0005 (change numbers), 0006 (echoes)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT s.id, s.admin_id, c.admin_id, c.email, c.name FROM sessions s "
                "JOIN customers c ON c.id = s.customer_id ORDER BY s.id"
            )
        ).all()
        left = conn.execute(sa.text("SELECT count(*) FROM customers")).scalar_one()
    assert [tuple(r) for r in rows] == [
        ("s_a", 1, 1, "ann@x.org", "Ann"),
        ("s_b", 2, 2, "ann@x.org", "Ann"),
        ("s_c", 2, 2, "ann@x.org", "Ann"),
    ]
    assert left == 2  # one Ann per admin; the customer without sessions is gone
    db.dispose()


def test_a_database_dump_holds_no_working_link(ctx: Context) -> None:
    services.add_admin(ctx, "kim@example.com", "Kim", "UTC")
    s = services.book(
        ctx, "kim@example.com", Customer("ann@example.org", "Ann", "UTC"), START,
        START + timedelta(hours=1), Actor.ADMIN,
    )  # fmt: skip
    services.let_customer_choose(ctx, s.id, "Please pick another time")
    with ctx.db.read() as orm:
        row = orm.scalars(select(OutboxRow).where(OutboxRow.kind == "choose")).one()
        tokens = orm.scalars(select(ChoiceTokenRow)).all()
        dump = repr([row.payload, [(t.id, t.session_id, t.token_hash) for t in tokens]])
    ref = row.payload["link_ref"]
    raw = derive_token(ctx.link_key(), ref["id"], ref["session"])
    assert raw not in dump and "token" not in row.payload and "link" not in row.payload
    # The email derives the link; a retry derives the same one.
    first = compose(row.payload, "choose", "ann@example.org", "<m@x>", FROM, link_key=ctx.link_key)
    second = compose(row.payload, "choose", "ann@example.org", "<m@x>", FROM, link_key=ctx.link_key)
    link = f"https://book.example.com/choose/{raw}"
    assert link in first.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert link in second.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert lookup_choice(ctx, raw).session.id == s.id
    # Under another secret (a dump taken elsewhere) the same row gives a dead link.
    other = derive_token(b"x" * 32, ref["id"], ref["session"])
    assert other != raw


def test_reads_never_wait_for_the_sqlite_write_lock(sqlite_url: str, clock: Clock) -> None:
    ctx = Context(db=Database(sqlite_url), clock=clock)
    services.add_admin(ctx, "kim@example.com", "Kim", "UTC")
    path = sqlite_url.split("///", 1)[1]
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the sync loop in the middle of a commit
    writer.execute("UPDATE admins SET name = 'Kim L.'")
    try:
        # Without the fix each read waits for busy_timeout (30 s), then fails "locked".
        assert services.list_admins(ctx)[0].name == "Kim"  # the last committed state
        assert counts(ctx).sessions == {}
    finally:
        writer.rollback()
        writer.close()
