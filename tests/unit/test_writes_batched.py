"""Issue 11: the results of a run of calendar writes are recorded in few transactions.

On the real runner over the in-memory calendar; the first test fails with one transaction
per write, the others guard the rules of :mod:`syncd.engine.writes` that batching must keep.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from syncd.domain.model import Customer
from syncd.engine import writes
from syncd.engine.runner import Fence, sync_calendar
from syncd.services import booking as services
from syncd.store.models import MirrorRow
from tests.unit.harness import ADMIN, NOW, Harness

N = 107  # more than two batches


@pytest.fixture
def h() -> Iterator[Harness]:
    world = Harness([])
    yield world
    world.close()


def book(h: Harness, n: int) -> None:
    for i in range(n):
        start = NOW + timedelta(days=2, hours=i)
        services.book(
            h.ctx, ADMIN, Customer(f"c{i}@example.org", f"C{i}", "UTC"), start,
            start + timedelta(hours=1),
        )  # fmt: skip


def mirrors(h: Harness) -> dict[str, tuple[str, str | None, str | None, str | None]]:
    with h.db.read() as orm:
        rows = orm.scalars(select(MirrorRow).where(MirrorRow.calendar_id == h.cal_id))
        return {
            m.session_id: (m.remote_id, m.written_etag, m.seen_etag, m.written_hash) for m in rows
        }


def count_transactions(h: Harness, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = h.db.write

    def counted() -> AbstractContextManager[Any]:
        calls[0] += 1
        return real()

    monkeypatch.setattr(h.db, "write", counted)
    return calls


def test_a_first_mirror_records_its_writes_in_a_few_transactions(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    book(h, N)
    calls = count_transactions(h, monkeypatch)
    report = h.cycle()
    assert report.error is None and report.writes == N
    # commit, a few batches of records, the second pass: not one transaction per write.
    assert calls[0] <= N // 10, calls
    recorded = mirrors(h)
    assert len(recorded) == N
    for remote_id, etag, seen, digest in recorded.values():
        event = h.cal.events[remote_id]
        assert etag == seen == event.etag and digest is not None
    assert h.cycle().writes == 0  # every etag was recorded: nothing is written twice


def test_writes_stopped_by_the_budget_are_recorded_before_the_cycle_ends(h: Harness) -> None:
    book(h, N)
    done: list[str] = []
    real_create = h.backend.create

    def create(event):  # type: ignore[no-untyped-def]
        done.append(event.session_id)
        return real_create(event)

    h.backend.create = create  # type: ignore[method-assign]
    h.take_lease("w1")
    report = sync_calendar(
        h.ctx, h.settings, h.cal_id, h.backend, Fence("w1", lambda: len(done) >= 7)
    )
    assert report.writes == 7 and len(done) == 7
    recorded = mirrors(h)
    assert len(recorded) == N
    for sid, (remote_id, etag, _, _) in recorded.items():
        if sid in done:  # recorded, though fewer than a batch
            assert etag == h.cal.events[remote_id].etag
        else:
            assert etag is None


def test_a_record_that_fails_is_no_traceback_and_the_next_cycle_adopts(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    book(h, N)
    real = writes._record
    failures = iter([True])

    def flaky(ctx: Any, calendar_id: int, batch: list[Any], *rest: Any) -> None:
        if next(failures, False):
            raise OperationalError("UPDATE mirrors", {}, Exception("database is locked"))
        real(ctx, calendar_id, batch, *rest)

    monkeypatch.setattr(writes, "_record", flaky)
    report = h.cycle()
    assert report.write_failures == writes.RECORD_BATCH
    assert report.writes == N - writes.RECORD_BATCH
    assert report.error and "locked" in report.error
    assert len(h.cal.events) == N
    second = h.cycle()  # the events stand: adopted, not written again
    assert second.error is None and second.writes == 0
    assert len(h.cal.events) == N
    for remote_id, etag, _, _ in mirrors(h).values():
        assert etag == h.cal.events[remote_id].etag
