"""A gesture syncd undoes (a rule refused it; the admin is emailed) is logged at INFO."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest

from syncd.engine import state
from syncd.engine.planner import ApplyReschedule, Plan
from syncd.engine.runner import CycleReport, commit
from syncd.ports import ChangeSet
from tests.unit.harness import ADMIN, Harness


@pytest.fixture
def h() -> Iterator[Harness]:
    world = Harness(["Ann"])
    yield world
    world.close()


def test_a_refused_gesture_undone_is_info_not_warning(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="syncd")
    past = h.now - timedelta(hours=3)
    h.cal.human_set(h.rid(0), start=past, end=past + timedelta(hours=1))
    ev = h.event(0)
    assert ev is not None
    with h.db.read() as orm:
        st = state.load_state(orm, h.cal_id, h.now)
    action = ApplyReschedule(h.sids[0], past, past + timedelta(hours=1), ev.etag, "x")
    report = CycleReport(h.cal_id)
    commit(
        h.ctx,
        h.settings,
        st,
        Plan(actions=(action,)),
        ChangeSet((), (), st.cursor),
        h.backend,
        h.now,
        report,
    )
    assert [e[0] for e in h.emails(ADMIN)] == ["gesture_undone"]
    undo = [r for r in caplog.records if "not applied" in r.getMessage()]
    assert [r.levelno for r in undo] == [logging.INFO]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
