"""PostgreSQL round trips (issue 11, goal 8): a read sends no BEGIN/COMMIT, a pooled
connection in steady use is not pinged, one idle for long is pinged and replaced if dead."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import text

from syncd.store import db as db_mod
from syncd.store.db import Database
from tests.pg import fresh_postgres_url, postgres_base_url

pytestmark = pytest.mark.skipif(not postgres_base_url(), reason="SYNCD_TEST_POSTGRES_URL unset")


@pytest.fixture
def pg() -> Iterator[Database]:
    with fresh_postgres_url() as url:
        db = Database(url)
        yield db
        db.dispose()


def _status(orm: Any) -> TransactionStatus:
    return TransactionStatus(orm.connection().connection.driver_connection.info.transaction_status)


def _backend_pid(db: Database) -> int:
    with db.read() as orm:
        return int(orm.scalar(text("SELECT pg_backend_pid()")))


def test_a_read_runs_without_a_transaction_a_write_within_one(pg: Database) -> None:
    with pg.read() as orm:
        assert orm.scalar(text("SELECT 1")) == 1
        assert _status(orm) == TransactionStatus.IDLE  # no BEGIN was sent
    with pg.write() as orm:
        orm.execute(text("SELECT 1"))
        assert _status(orm) == TransactionStatus.INTRANS


def test_a_streamed_read_gets_the_transaction_its_cursor_needs(pg: Database) -> None:
    with pg.read() as orm:
        rows = orm.execute(text("SELECT generate_series(1, 7)").execution_options(yield_per=3))
        assert [r[0] for r in rows] == list(range(1, 8))
    with pg.read() as orm:  # the connection is back to autocommit
        orm.execute(text("SELECT 1"))
        assert _status(orm) == TransactionStatus.IDLE


def test_a_connection_in_steady_use_is_not_pinged(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings: list[object] = []
    real = pg.engine.dialect.do_ping

    def counting(dbapi_conn: Any) -> bool:
        pings.append(dbapi_conn)
        return real(dbapi_conn)

    monkeypatch.setattr(pg.engine.dialect, "do_ping", counting)
    for _ in range(5):
        _backend_pid(pg)
    with pg.write() as orm:
        orm.execute(text("SELECT 1"))
    assert pings == []


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _backend_pid(pg)
    base = postgres_base_url()
    assert base
    with psycopg.connect(base.replace("postgresql+psycopg://", "postgresql://")) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (before,))
    monkeypatch.setattr(db_mod, "PING_IDLE_S", 0.0)  # every pooled connection is "idle"
    after = _backend_pid(pg)  # no error: the ping found it dead, the pool reconnected
    assert after != before


def test_claims_renewals_and_releases_are_one_statement_outside_a_transaction(
    pg: Database,
) -> None:
    from datetime import timedelta

    from sqlalchemy import event

    from syncd.app.leases import claim_batch, release_calendars, renew_leases
    from syncd.services import booking as services
    from syncd.store.context import Context
    from syncd.store.models import CalendarRow

    pg.upgrade()
    ctx = Context(pg, "https://book.example.com")
    services.add_admin(ctx, "coach@example.com", "Coach", "UTC")
    with pg.write() as orm:
        orm.add_all(CalendarRow(admin_id=1, backend="caldav", settings={}) for _ in range(3))
    sent: list[tuple[str, bool]] = []

    def seen(conn: Any, _cursor: Any, stmt: str, *_: Any) -> None:
        sent.append((stmt.split()[0].upper(), conn.connection.dbapi_connection.autocommit))

    event.listen(pg.engine, "before_cursor_execute", seen)
    lease = timedelta(seconds=30)
    ids = [c.id for c in claim_batch(ctx, "w", lease, due_only=True)]
    assert renew_leases(ctx, "w", ids, lease) == ids == [1, 2, 3]
    release_calendars(ctx, ids, "w", timedelta(seconds=60))
    event.remove(pg.engine, "before_cursor_execute", seen)
    assert sent == [("UPDATE", True)] * 3  # no BEGIN, no COMMIT: each its own transaction
    with pg.read() as orm:
        assert all(r.lease_owner is None for r in orm.query(CalendarRow))


def test_a_write_that_may_be_lost_does_not_wait_for_the_disk_and_leaks_nothing(
    pg: Database,
) -> None:
    from sqlalchemy import func, select

    setting = select(func.current_setting("synchronous_commit"))
    assert pg.read_one(setting.where(pg.no_flush_wait())) == ("off",)  # in its statement
    assert pg.read_one(setting) == ("on",)  # not in the pooled connection after it
    with pg.write() as orm:  # nor in a write transaction
        assert orm.execute(setting).one() == ("on",)
