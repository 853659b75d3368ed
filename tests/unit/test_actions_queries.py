"""An admin's gesture costs what it changes (issue 11, goal 1): the statements it runs.

Each test runs the real runner over the in-memory calendar (tests/unit/harness.py) and
counts the SQL that the cycle applying the gestures sends. The gestures of a commit read
their sessions once, together, without the history (the transition only appends to it),
and read no other session when the rules do not look at them (the admin's moves are not
checked for overlaps; a cancel and "let the customer choose" have no new time). A
customer's move still reads the sessions overlapping its new time, and only those.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from syncd.domain.model import Actor, Status
from syncd.errors import Refused
from syncd.services import booking as services
from tests.unit.harness import Harness

NAMES = [f"Customer {i}" for i in range(6)]
#: The overlap query of ``live_sessions_of(..., overlapping=...)``.
OVERLAP = re.compile(r'FROM sessions\s+WHERE .*sessions\."end" > \S+ AND sessions\.start < ', re.S)
#: One session read by its id (``load_session``, with its customer joined; ``orm.get``).
ONE_SESSION = re.compile(
    r"FROM sessions(\s+JOIN customers ON customers\.id = sessions\.customer_id)?"
    r"\s+WHERE sessions\.id = \S+\s*(FOR UPDATE( OF sessions)?)?\s*$",
    re.S,
)
#: The sessions of a commit's gestures read together, by their ids (``load_session_rows``).
SESSIONS_BY_ID = re.compile(
    r"FROM sessions\s+JOIN customers ON customers\.id = sessions\.customer_id"
    r"\s+WHERE sessions\.id IN \(",
    re.S,
)


@pytest.fixture
def h() -> Iterator[Harness]:
    world = Harness(NAMES)
    world.cycle()
    world.delivered()
    yield world
    world.close()


class Statements:
    """The SQL sent to ``h``'s database while counting."""

    def __init__(self, h: Harness) -> None:
        self.sql: list[str] = []
        self.engine = h.db.engine
        event.listen(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cur: Any, statement: str, *_rest: Any) -> None:
        self.sql.append(statement)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)

    def matching(self, pattern: re.Pattern[str]) -> list[str]:
        return [s for s in self.sql if pattern.search(s)]


@pytest.fixture
def sql(h: Harness) -> Iterator[Statements]:
    counter = Statements(h)
    yield counter
    counter.close()


def _drag_all(h: Harness, delta: timedelta) -> None:
    for i in range(len(NAMES)):
        ev = h.event(i)
        assert ev is not None
        start, end = ev.content.start + delta, ev.content.end + delta
        h.cal.human_set(ev.remote_id, start=start, end=end)


def test_admin_moves_read_each_session_once_and_no_other_session(
    h: Harness, sql: Statements
) -> None:
    # Every session moved onto the next day's one, 25 hours later: the admin may overlap.
    _drag_all(h, timedelta(hours=25))
    h.cycle()
    sql.sql.clear()
    h.now += timedelta(minutes=3)
    report = h.cycle()
    assert len(report.actions) == len(NAMES), report.actions
    assert all(a.endswith(": rescheduled") for a in report.actions), report.actions
    assert sql.matching(OVERLAP) == []
    assert [s for s in sql.sql if "FROM session_history" in s] == []
    # One read for all the commit's sessions, none for each.
    assert len(sql.matching(SESSIONS_BY_ID)) == 1
    assert sql.matching(ONE_SESSION) == []
    # ...and the moves are what they were: history, emails, the new times.
    for i in range(len(NAMES)):
        s = h.session(i)
        assert s.history[-1].action == "rescheduled"
        assert s.history[-1].actor is Actor.ADMIN_CALENDAR
    kinds = [e[0] for e in h.customer_emails()]
    assert kinds == ["rescheduled"] * len(NAMES)


def test_a_cancel_and_a_let_choose_read_no_other_session(h: Harness, sql: Statements) -> None:
    h.cal.human_set(h.rid(0), summary="cancel: I am ill")
    h.cal.human_set(h.rid(1), summary="reschedule: sorry, please pick another time")
    h.cycle()
    sql.sql.clear()
    h.now += timedelta(minutes=3)
    report = h.cycle()
    assert len(report.actions) == 2, report.actions
    assert sql.matching(OVERLAP) == []
    assert h.session(0).status is Status.CANCELED
    assert h.session(1).status is Status.AWAITING_CUSTOMER


def test_a_customer_move_still_reads_the_sessions_overlapping_it(
    h: Harness, sql: Statements
) -> None:
    other = h.session(1)
    sql.sql.clear()
    with pytest.raises(Refused, match="overlaps"):
        services.reschedule(h.ctx, h.sids[0], other.start, actor=Actor.CUSTOMER)
    assert len(sql.matching(OVERLAP)) == 1
    free = other.end + timedelta(hours=3)
    moved = services.reschedule(h.ctx, h.sids[0], free, actor=Actor.CUSTOMER)
    assert moved.start == free and len(moved.history) == 2  # the CLI still shows history


#: The per-session read of its outbox rows an email coalesces with (``outbox._near``).
NEAR_ONE = re.compile(r"FROM outbox\s+WHERE outbox\.session_id = ", re.S)


def test_moves_before_the_sender_ran_coalesce_from_one_read(h: Harness, sql: Statements) -> None:
    """A second move of every session before any email went out: the commit reads the
    pending emails of all its sessions at once, and each customer still gets one email,
    from the first time to the last."""
    before = [h.session(i).start for i in range(len(NAMES))]
    _drag_all(h, timedelta(hours=25))
    h.cycle()  # seen; applied once it settled
    h.now += timedelta(minutes=3)
    assert len(h.cycle().actions) == len(NAMES)
    _drag_all(h, timedelta(hours=1))
    h.cycle()
    h.now += timedelta(minutes=3)
    sql.sql.clear()
    report = h.cycle()
    assert len(report.actions) == len(NAMES), report.actions
    assert sql.matching(NEAR_ONE) == []
    pending = [e for e in h.customer_emails() if e[0] == "rescheduled"]
    assert len(pending) == len(NAMES)  # the first move's emails superseded
    for i, (_kind, _to, payload) in enumerate(
        sorted(pending, key=lambda e: e[2]["data"]["old_start"])
    ):
        assert payload["data"]["old_start"] == sorted(before)[i].isoformat()
        assert payload["session"]["start"] == (sorted(before)[i] + timedelta(hours=26)).isoformat()
