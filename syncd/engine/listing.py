"""A full listing compared with the mirror a few hundred events a pass, so memory stays flat.

A full listing (a calendar's first sync, a backend's answer to an expired cursor, Google's
and Graph's reconciliation) names every event of the calendar; a CalDAV reconciliation
names those that differ, which may be as many. Rather than loading every session to
compare, the cycle compares the listing's etags with the mirror's (streamed from the
database) and keeps only the difference (:class:`Walk`): the events whose etag is not the
one the mirror holds, and the mirrored ids the listing lacks. Those are planned
:data:`syncd.engine.state.MAX_PARTIAL` a pass, as a feed naming them would be, alongside
the usual catch-up of changed sessions; a session whose event shows what the mirror holds
has nothing to plan, as on an idle cycle. An event is given to its session only while the
mirror still shows the etag it had when listed (a write since makes the listing stale for
it), and the breaker counts the missing events later passes will plan.

The cursor (and ``reconciled_at``) advance with the last pass only. A cycle that stops
before (its budget spent, a crash) lists again next time, and the new listing's
difference with the mirror is what is left: what was planned now matches (its etag was
recorded), what was missing is a pending removal, and nothing unseen was judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy.orm import Session as Orm

from syncd.engine import state
from syncd.engine.plantypes import MirrorState
from syncd.ports import ChangeSet, RemoteEvent


@dataclass
class Walk:
    """What a full listing holds that the mirror does not, planned across passes."""

    cursor: str | None
    #: remote id → the listed event and the mirror's etag then (None: an id it does not
    #: know, kept when the event carries a session id: syncd's event, moved).
    events: dict[str, tuple[RemoteEvent, str | None]]
    #: session id → remote ids of events it does not know that carry it.
    moved: dict[str, list[str]]
    #: Mirrored remote ids the listing lacks, with the mirror's etag then.
    absent: dict[str, str]
    #: The remote ids still to plan (known to the mirror), in order.
    pending: list[str]


def _etag_of(m: MirrorState) -> str:
    return m.seen_etag or m.written_etag or ""


def start(
    orm: Orm,
    head: state.Head,
    cs: ChangeSet,
    known: Mapping[str, str] | None,
    now: datetime,
) -> Walk:
    """The difference of a full listing ``cs`` with the mirror's remote id → etag
    (``known`` if the backend read it, else streamed from the database). A backend's own
    reconciliation (``cs.reconciled``) is that difference already: what it lacks is only
    what it names removed."""
    listed = {e.remote_id: e for e in cs.changed}
    gone = set(cs.removed)
    pairs = (
        known.items()
        if known is not None
        else state.iter_known(orm, head.calendar_id, head.admin_id, now)
    )
    differ: dict[str, str] = {}  # listed, at another etag than the mirror's
    absent: dict[str, str] = {}
    for rid, etag in pairs:
        e = listed.get(rid)
        if e is None:
            if cs.full or rid in gone:
                absent[rid] = etag
        elif e.etag == etag and e.content.session_id not in head.intents:
            del listed[rid]  # as mirrored: nothing to plan
        else:
            differ[rid] = etag
    events: dict[str, tuple[RemoteEvent, str | None]] = {}
    moved: dict[str, list[str]] = {}
    for rid, e in listed.items():
        sid = e.content.session_id
        if rid in differ:
            events[rid] = (e, differ[rid])
        elif sid is not None and absent:  # syncd's event at an id it does not know
            events[rid] = (e, None)
            moved.setdefault(sid, []).append(rid)
        # else: not syncd's event, or nothing it could have moved from
    del listed
    return Walk(cs.cursor, events, moved, absent, sorted([*differ, *absent]))


def take(walk: Walk) -> set[str]:
    """The next remote ids to plan."""
    batch, walk.pending = walk.pending[: state.MAX_PARTIAL], walk.pending[state.MAX_PARTIAL :]
    return set(batch)


def pass_feed(
    walk: Walk, st: state.CalendarState, batch: set[str], head_cursor: str | None
) -> tuple[state.CalendarState, ChangeSet]:
    """This pass's part of the listing, as a feed: the batch's events, and those missing.

    The last pass carries the listing's cursor (and counts as the reconciliation); the
    others keep the old one, so that a cycle stopped before lists again.
    """
    changed: dict[str, RemoteEvent] = {}
    removed: list[str] = []
    for sid, m in sorted(st.mirrors.items()):
        if m.remote_id not in batch:
            continue
        now_etag = _etag_of(m)
        had = walk.absent.pop(m.remote_id, None)
        if had is not None and had == now_etag:
            removed.append(m.remote_id)
            for rid in walk.moved.pop(sid, []):  # syncd's event, found at another id
                if (other := walk.events.pop(rid, None)) is not None:
                    changed[rid] = other[0]
        listed = walk.events.pop(m.remote_id, None)
        if listed is not None and listed[1] == now_etag:
            changed[m.remote_id] = listed[0]
    for rid in batch:  # ids whose session is not planned (ended, or no longer mirrored)
        walk.absent.pop(rid, None)
        walk.events.pop(rid, None)
    last = not walk.pending
    cs = ChangeSet(
        tuple(changed.values()),
        tuple(removed),
        walk.cursor if last else head_cursor,
        reconciled=last,
    )
    # What later passes will find missing weighs in the breaker now.
    more = st.more or not last
    return replace(st, more=more, unplanned_removals=len(walk.absent)), cs
