"""A full listing compared with the mirror in chunks, so memory stays flat.

A full listing (a calendar's first sync, a backend's answer to an expired cursor, Google's
and Graph's reconciliation) names every event of the calendar. Instead of loading every
session at once, the cycle keeps the listing in a compact form (:class:`Walk`: the few
events that differ from the mirror, the mirrored ids it lacks) and plans the
sessions in (revision, id) order, :data:`syncd.engine.state.MAX_PARTIAL` a pass, up to the
newest session when it was listed. Each session gets its event, or is found missing from
the listing, in its own pass only, and only while its mirror still shows the etag it had
when listed (a write since makes the listing stale for it). The breaker counts the
events missing from the listing that later passes will plan. The cursor (and
``reconciled_at``) advance with the last pass only; until then every commit records how
far the walk got (``calendars.synced_revision``/``synced_id``, the rules key marked by
:data:`syncd.engine.settled.WALKING`): a cycle that ran out of time lists again and goes
on from there, first comparing the sessions already planned with the new listing's etags.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from sqlalchemy import literal, select, tuple_
from sqlalchemy.orm import Session as Orm

from syncd.engine import settled, state
from syncd.engine.desired import GestureRules
from syncd.engine.plantypes import MirrorState
from syncd.ports import ChangeSet, RemoteEvent
from syncd.store.models import MirrorRow, SessionRow


@dataclass
class Walk:
    """A full listing being compared with the mirror, across the passes of a cycle."""

    cursor: str | None
    #: The events worth planning (they differ from the mirror, carry a session id it does
    #: not know at that id, or belong to a pending gesture), with the mirror's etag then.
    events: dict[str, tuple[RemoteEvent, str | None]]
    #: session id → remote ids in ``events`` that carry it (an event that moved).
    by_session: dict[str, list[str]]
    #: Mirrored remote ids the listing lacks (with the mirror's etag then), not yet planned.
    absent: dict[str, str]
    #: The newest session when listed: the walk ends there; newer ones are a catch-up's.
    top: tuple[int, str]
    position: tuple[int, str]
    #: Sessions planned before the walk resumed whose events differ in this listing.
    recheck: list[str] = field(default_factory=list)


def _etag_of(m: MirrorState) -> str:
    return m.seen_etag or m.written_etag or ""


def top_mark(orm: Orm, admin_id: int) -> tuple[int, str]:
    """The (revision, id) of the admin's newest session ((-1, "") when there is none)."""
    last = orm.execute(
        select(SessionRow.revision, SessionRow.id)
        .where(SessionRow.admin_id == admin_id)
        .order_by(SessionRow.revision.desc(), SessionRow.id.desc())
        .limit(1)
    ).first()
    return (last[0], last[1]) if last else (-1, "")


def _planned_before(
    orm: Orm, calendar_id: int, remote_ids: list[str], upto: tuple[int, str]
) -> list[str]:
    """Sessions of these events at or before ``upto`` in (revision, id) order."""
    found: list[str] = []
    for i in range(0, len(remote_ids), 500):
        found.extend(
            orm.scalars(
                select(MirrorRow.session_id)
                .join(SessionRow, SessionRow.id == MirrorRow.session_id)
                .where(
                    MirrorRow.calendar_id == calendar_id,
                    MirrorRow.remote_id.in_(remote_ids[i : i + 500]),
                    tuple_(SessionRow.revision, SessionRow.id)
                    <= tuple_(literal(upto[0]), literal(upto[1])),
                )
            )
        )
    return sorted(found)


def start(
    orm: Orm,
    head: state.Head,
    cs: ChangeSet,
    known: Mapping[str, str] | None,
    rules: GestureRules,
    now: datetime,
) -> Walk:
    """The compact form of a full listing ``cs``, compared with the mirror's remote id →
    etag (``known`` if the backend read it, else streamed from the database); resumed
    where an earlier cycle's walk stopped, if one did."""
    listed = {e.remote_id: e for e in cs.changed}
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
            absent[rid] = etag
        elif e.etag == etag and e.content.session_id not in head.intents:
            del listed[rid]  # as mirrored: nothing to plan
        else:
            differ[rid] = etag
    events: dict[str, tuple[RemoteEvent, str | None]] = {}
    by_session: dict[str, list[str]] = {}
    for rid, e in listed.items():
        sid = e.content.session_id
        if rid not in differ and sid is None:
            continue  # not syncd's event
        events[rid] = (e, differ.get(rid))
        if sid is not None:
            by_session.setdefault(sid, []).append(rid)
    del listed
    top = top_mark(orm, head.admin_id)
    walk = Walk(cs.cursor, events, by_session, absent, top, (-1, ""))
    walking = settled.rules_key(rules, walking=True)
    if head.synced_rules == walking and head.synced_revision is not None:
        walk.position = (head.synced_revision, head.synced_id or "")
        again = sorted([*differ, *absent])
        walk.recheck = _planned_before(orm, head.calendar_id, again, walk.position)
    return walk


def take_recheck(walk: Walk) -> set[str]:
    """The next sessions planned before a resume to compare with this listing."""
    batch, walk.recheck = walk.recheck[: state.MAX_PARTIAL], walk.recheck[state.MAX_PARTIAL :]
    return set(batch)


def pass_feed(
    walk: Walk, st: state.CalendarState, rechecked: set[str], head_cursor: str | None
) -> tuple[state.CalendarState, ChangeSet]:
    """This pass's part of the listing: the events of its sessions, and those missing.

    The walk moves on to where the pass's sessions end; the last pass carries the
    listing's cursor (and counts as the reconciliation), the others keep the old one.
    """
    changed: dict[str, RemoteEvent] = {}
    removed: list[str] = []
    for sid in sorted((st.chunk | rechecked) & set(st.mirrors)):
        m = st.mirrors[sid]
        now_etag = _etag_of(m)
        had = walk.absent.pop(m.remote_id, None)
        if had is not None and had == now_etag:
            removed.append(m.remote_id)
        listed = walk.events.pop(m.remote_id, None)
        if listed is not None and (listed[1] or "") == now_etag:
            changed[m.remote_id] = listed[0]
        for rid in walk.by_session.pop(sid, []):
            other = walk.events.get(rid)
            if other is not None and other[1] is None:  # an id the mirror does not know
                changed[rid] = walk.events.pop(rid)[0]
    if st.revision is not None:
        walk.position = (st.revision, st.revision_id)
    last = not st.more and not walk.recheck
    cs = ChangeSet(
        tuple(changed.values()),
        tuple(removed),
        walk.cursor if last else head_cursor,
        reconciled=last,
    )
    # Missing events later passes will plan weigh in the breaker (none after the last).
    rest = 0 if last else len(walk.absent)
    return replace(st, more=not last, walking=not last, unplanned_removals=rest), cs
