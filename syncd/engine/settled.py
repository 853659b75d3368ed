"""Which events are settled: nothing is left to do for them until their session changes.

A cycle that plans only what changed (:func:`syncd.engine.state.load_changed`) relies on
these marks to skip every other session; they are written in the plan's own commit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.orm import Session as Orm

from syncd.engine.desired import GestureRules, desired_hash
from syncd.engine.planner import Plan
from syncd.engine.state import CalendarState
from syncd.ports import DesiredEvent
from syncd.store.models import MirrorRow


def settle_marks(
    st: CalendarState,
    plan: Plan,
    desired: Mapping[str, DesiredEvent],
    rules: GestureRules,
    now: datetime,
) -> dict[str, bool]:
    """Whether each loaded session's event is settled once ``plan`` commits.

    Settled: nothing is left to do for it until the session changes (a new revision) or
    the feed reports its event: it is ended, or canceled with its event gone, or its
    event shows what the session wants (the hash syncd last wrote or adopted is the one
    it wants now) with no write, action or gesture pending. Anything else stays planned
    on every cycle. Only the marks that differ from what was loaded are returned.
    """
    busy = {w.session_id for w in plan.writes} | {a.session_id for a in plan.actions}
    busy |= {sid for sid, _ in plan.rehome} | {i.session_id for i in plan.set_intents}
    busy |= set(st.intents) - set(plan.drop_intents)
    adopted = {sid: (etag, digest) for sid, etag, digest in plan.adopt}
    marks: dict[str, bool] = {}
    for sid, m in st.mirrors.items():
        session = st.sessions[sid]
        if sid in busy:
            settled = False
        elif session.end <= now:
            settled = True
        elif not session.live or m.gone:
            settled = m.gone and not session.live
        else:
            etag, written = adopted.get(sid, (m.written_etag, m.written_hash))
            want = desired.get(sid)
            settled = etag is not None and want is not None and written == desired_hash(want, rules)
        if settled != (sid in st.settled):
            marks[sid] = settled
    return marks


def save_marks(orm: Orm, calendar_id: int, marks: Mapping[str, bool]) -> None:
    """Store :func:`settle_marks` (in a few statements, however many)."""
    for value in (True, False):
        ids = sorted(sid for sid, v in marks.items() if v is value)
        for i in range(0, len(ids), 500):
            orm.execute(
                update(MirrorRow)
                .where(
                    MirrorRow.calendar_id == calendar_id, MirrorRow.session_id.in_(ids[i : i + 500])
                )
                .values(settled=value)
            )


def rules_key(rules: GestureRules) -> str:
    """A short fingerprint of the gesture rules plans are made with."""
    return hashlib.sha256(repr(rules).encode()).hexdigest()[:16]
