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

from syncd.engine import state
from syncd.engine.plantypes import MirrorState
from syncd.ports import CalendarBackend, ChangeSet, PagedListing, RemoteEvent, Transient
from syncd.store.db import Database


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


def full(backend: CalendarBackend, known: Mapping[str, str]) -> ChangeSet:
    """A full listing: page by page when the backend can hand it over so, else whole."""
    if isinstance(backend, PagedListing):
        return backend.full_listing(known)
    return backend.changes(None, known)


class _Reader:
    """Folds a listing, page after page, into its difference with the mirror."""

    def __init__(self, mirror: Mapping[str, str], intents: Mapping[str, object]) -> None:
        self.mirror = mirror
        self.intents = intents
        #: remote id → (event, the mirror's etag; None: an id it does not know).
        self.events: dict[str, tuple[RemoteEvent, str | None]] = {}
        self.seen: set[str] = set()  # listed ids the mirror knows
        self.gone: set[str] = set()

    def event(self, e: RemoteEvent) -> None:
        rid = e.remote_id
        self.events.pop(rid, None)  # named again: the later one counts
        self.gone.discard(rid)
        etag = self.mirror.get(rid)
        if etag is not None:
            self.seen.add(rid)
            if etag != e.etag or e.content.session_id in self.intents:
                self.events[rid] = (e, etag)
        elif e.content.session_id is not None and self.mirror:
            self.events[rid] = (e, None)  # syncd's event at an id it does not know: moved?
        # else: not syncd's event, or nothing it could have moved from

    def removed(self, rid: str) -> None:
        self.events.pop(rid, None)
        self.seen.discard(rid)
        self.gone.add(rid)


def start(
    db: Database,
    head: state.Head,
    cs: ChangeSet,
    known: Mapping[str, str] | None,
    now: datetime,
) -> Walk:
    """The difference of a full listing ``cs`` with the mirror's remote id → etag
    (``known`` if the backend read it, else read from the database first, so that no
    transaction stays open while the listing arrives). A backend's own reconciliation
    (``cs.reconciled``) is that difference already: what it lacks is only what it names
    removed.

    The listing's pages (``cs.pages``) are read here, once: what is held is the mirror's
    etags, the ids listed among them, and the events that differ. A stream that breaks
    raises its error before anything is judged; one that ends before its last page is
    :class:`Transient`.
    """
    if known is None:
        with db.read() as orm:
            known = state.known_etags(orm, head.calendar_id, head.admin_id, now)
    reader = _Reader(known, head.intents)
    for e in cs.changed:
        reader.event(e)
    for rid in cs.removed:
        reader.removed(rid)
    cursor = cs.cursor
    if cs.pages is not None:
        for page in cs.pages:
            for e in page.events:
                reader.event(e)
            for rid in page.removed:
                reader.removed(rid)
            if page.last:
                cursor = page.cursor
                break
        else:
            raise Transient("the full listing ended before its last page")
    if cs.full:
        absent = {rid: etag for rid, etag in known.items() if rid not in reader.seen}
    else:
        absent = {rid: known[rid] for rid in reader.gone if rid in known}
    del reader.seen
    events: dict[str, tuple[RemoteEvent, str | None]] = {}
    moved: dict[str, list[str]] = {}
    differ: list[str] = []
    for rid, (e, had) in reader.events.items():
        if had is not None:
            events[rid] = (e, had)
            differ.append(rid)
        elif absent and (sid := e.content.session_id) is not None:
            events[rid] = (e, None)
            moved.setdefault(sid, []).append(rid)
    return Walk(cursor, events, moved, absent, sorted([*differ, *absent]))


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
