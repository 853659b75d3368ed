"""Change numbers commit in the order they are taken (issue 11).

A cycle that has read revision N plans up to N and never looks below it again, so a
change numbered N-1 must not commit after one numbered N. The numbers come from an UPDATE
of the admin row, held until commit: a second writer of the same admin's sessions waits.
On SQLite writers are serialized anyway; the test runs on both.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from syncd.domain.model import Actor, Customer
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.models import SessionRow


def _booked(ctx: Context, n: int) -> list[str]:
    """An admin with ``n`` sessions, two hours apart from three days on; their ids."""
    services.add_admin(ctx, "kim@example.com", "Kim", "UTC")
    start = ctx.clock() + timedelta(days=3)
    return [
        services.book(
            ctx,
            "kim@example.com",
            Customer(f"c{i}@example.org", f"C{i}", "UTC"),
            start + timedelta(hours=2 * i),
            start + timedelta(hours=2 * i + 1),
            Actor.ADMIN,
        ).id
        for i in range(n)
    ]


def test_a_later_number_waits_for_the_earlier_commit(ctx: Context) -> None:
    ids = _booked(ctx, 2)
    first_holds = threading.Event()
    release_first = threading.Event()
    order: list[tuple[str, int]] = []

    def first() -> None:
        with ctx.db.write() as orm:
            row = orm.get_one(SessionRow, ids[0])
            row.choose_message = "first"
            orm.flush()  # takes its number now, and the admin row's lock with it
            first_holds.set()
            release_first.wait(10)
            order.append(("first", row.revision))

    def second() -> None:
        with ctx.db.write() as orm:
            row = orm.get_one(SessionRow, ids[1])
            row.choose_message = "second"
            orm.flush()
            order.append(("second", row.revision))

    t1 = threading.Thread(target=first)
    t1.start()
    assert first_holds.wait(10)
    t2 = threading.Thread(target=second)
    t2.start()
    t2.join(0.5)
    # Still waiting while the first holds its number (a slow start only makes this pass
    # for the wrong reason, never fail for one).
    assert t2.is_alive() and order == []
    release_first.set()
    t1.join(10)
    t2.join(10)
    assert [who for who, _ in order] == ["first", "second"]
    assert order[0][1] < order[1][1]


def test_one_flush_numbers_its_sessions_in_one_statement(ctx: Context) -> None:
    """A commit of many changes takes their numbers together: each distinct, all above
    what came before, the admin's counter at the highest."""
    from sqlalchemy import event

    from syncd.store.models import AdminRow

    ids = _booked(ctx, 4)
    with ctx.db.read() as orm:
        before = max(orm.get_one(SessionRow, sid).revision for sid in ids)
    counters: list[str] = []

    def seen(_c: object, _cur: object, statement: str, *_rest: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE ADMINS"):
            counters.append(statement)

    event.listen(ctx.db.engine, "before_cursor_execute", seen)
    try:
        with ctx.db.write() as orm:
            rows = orm.scalars(select(SessionRow).where(SessionRow.id.in_(ids[:3]))).all()
            for row in rows:  # changed together: one flush writes them
                row.start, row.end = row.start + timedelta(days=1), row.end + timedelta(days=1)
    finally:
        event.remove(ctx.db.engine, "before_cursor_execute", seen)
    assert len(counters) == 1
    with ctx.db.read() as orm:
        got = sorted(orm.get_one(SessionRow, sid).revision for sid in ids[:3])
        untouched = orm.get_one(SessionRow, ids[3]).revision
        seq = orm.scalars(select(AdminRow.revision_seq)).one()
    assert got == [before + 1, before + 2, before + 3] and seq == before + 3
    assert untouched <= before
