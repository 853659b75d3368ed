"""A commit of several admin moves reads each session's mirror row and customer once
(issue 11, goal 1: gestures cost what they change), and still applies every move."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import event

from syncd.engine.planner import BreakerRules
from syncd.engine.runner import EngineSettings
from tests.unit.harness import Harness


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness(
        [f"C{i}" for i in range(5)],
        EngineSettings(settle=timedelta(0), breaker=BreakerRules(100, 1.0, False)),
    )
    yield harness
    harness.close()


def test_five_moves_read_each_mirror_row_and_customer_once(h: Harness) -> None:
    for i in range(5):
        s = h.session(i)
        h.cal.human_set(
            h.rid(i), start=s.start + timedelta(hours=1), end=s.end + timedelta(hours=1)
        )
    reads: Counter[str] = Counter()

    def count(_conn: object, _cur: object, statement: str, *_rest: object) -> None:
        if statement.lstrip().startswith("SELECT"):
            reads["all"] += 1
            for table in ("mirrors", "customers"):
                if f"FROM {table}" in statement or f"JOIN {table}" in statement:
                    reads[table] += 1

    event.listen(h.db.engine, "before_cursor_execute", count)
    try:
        report = h.cycle()
    finally:
        event.remove(h.db.engine, "before_cursor_execute", count)
    assert len(report.actions) == 5, report.actions
    assert [a for _sid, a in h.admin_actions()] == ["rescheduled"] * 5
    assert reads["customers"] <= 5 + 1, reads  # one read each, plus the cycle's own load
    assert reads["mirrors"] <= 5 + 3, reads  # the cycle reads the mirror 3 times of its own
    # 4 reads a move (the session with its customer, the mirror row, the open links, the
    # session's outbox rows) + 14 of the cycle itself: 34; it was 44 while the mirror row was
    # read twice a move and the customer apart from the session.
    assert reads["all"] <= 34, reads
