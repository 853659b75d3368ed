"""What a cycle reads: the calendar's state and its change feed.

A cycle plans only what changed (:func:`syncd.engine.state.load_changed`): the sessions
changed after the calendar's last plan (in (revision, id) order, a few hundred a pass),
the events the feed reported (changed or removed), pending gestures and unsettled
events. So its cost, and its memory, grow with the changes, not with the calendar. When
removals are about, the breaker's population (the upcoming sessions left unloaded) is
counted by the database, not loaded. A calendar never planned, or planned with other
gesture rules (and every calendar once after the upgrade to 0005), catches up from the
start the same way. A full listing — a calendar's first sync, or a backend's answer to an
expired cursor — is reduced to its difference with the mirror's etags, planned a few
hundred events a pass like a feed naming them (:mod:`syncd.engine.listing`). A
reconciliation is an adapter's own comparison with ``known``, read only when the adapter
asks for it.

An idle cycle (nothing pending, nothing newer, nothing unsettled, an empty delta) has a
path of its own, since it is what a fleet of calendars does almost all the time (issue 11,
goal 8): :func:`load_and_fetch` reads the calendar, its admin and whether anything waits
in one statement (:func:`peek`) and, when the feed then comes back empty, reads nothing
more; :func:`commit_idle` commits such a cycle in one ``UPDATE`` that checks what the full
commit checks under its lock (the cursor, no pending gesture, the lease). Anything else
takes the usual reads and commit.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    Table,
    Update,
    and_,
    bindparam,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    tuple_,
    update,
)

from syncd.engine import listing, settled, state
from syncd.engine.desired import GestureRules
from syncd.engine.planner import Plan
from syncd.engine.report import CycleReport
from syncd.engine.writes import NotesRecorded
from syncd.errors import NotFoundError
from syncd.ports import CalendarBackend, ChangeSet, CursorExpired, WindowMoved
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import (
    AdminRow,
    CalendarRow,
    IntentRow,
    MirrorRow,
    SessionRow,
    UTCDateTime,
)
from syncd.store.repo import admin_from_row

log = logging.getLogger("syncd.engine")


def _reconcile_due(head: state.Head, reconcile: timedelta, now: datetime) -> bool:
    if reconcile <= timedelta(0) or head.cursor is None:
        return False
    return head.reconciled_at is None or now - head.reconciled_at >= reconcile


def _fetch(
    backend: CalendarBackend,
    head: state.Head,
    known: Mapping[str, str],
    reconcile: timedelta,
    now: datetime,
    report: CycleReport,
) -> ChangeSet:
    if _reconcile_due(head, reconcile, now):
        # Nothing a server's delta feed hides stays hidden longer than the interval.
        report.reconciled = True
        return listing.full(backend, known)
    try:
        return backend.changes(head.cursor, known)
    except WindowMoved:  # a planned new round over a new window: a reconciliation
        log.info("calendar %s: change window moved on; full listing", head.calendar_id)
        report.reconciled = True
        return listing.full(backend, known)
    except CursorExpired:
        log.warning("calendar %s: change cursor expired; full listing", head.calendar_id)
        report.resynced = True
        return listing.full(backend, known)


class _Known(Mapping[str, str]):
    """remote id → etag of the mirrored events, read only if the backend asks."""

    def __init__(self, load: Callable[[], dict[str, str]]) -> None:
        self._load = load
        self._data: dict[str, str] | None = None

    def _get(self) -> dict[str, str]:
        if self._data is None:
            self._data = self._load()
        return self._data

    def __getitem__(self, key: str) -> str:
        return self._get()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def loaded(self) -> dict[str, str] | None:
        """Every pair, if the backend asked for them."""
        return self._data


def _since(head: state.Head, rules: GestureRules) -> tuple[int, str]:
    """Where this calendar's plans got to: (revision, id); from the start when it was never
    planned, or planned with other gesture rules."""
    if head.synced_revision is None or head.synced_rules != settled.rules_key(rules):
        return (-1, "")
    return (head.synced_revision, head.synced_id or "")


def _removals_about(head: state.Head, cs: ChangeSet) -> bool:
    """Whether the breaker may have to weigh removals this cycle (it counts the calendar)."""
    return bool(
        cs.removed
        or head.breaker_tripped
        or head.recent_removals
        or any(i.kind == "removed" or i.held for i in head.intents.values())
        or any(e.content.status == "cancelled" for e in cs.changed)
    )


def _listed(
    ctx: Context,
    backend: CalendarBackend,
    head: state.Head,
    reconcile: timedelta,
    now: datetime,
    report: CycleReport,
) -> ChangeSet | listing.Walk:
    """The feed, or a full listing's compact form (the listing itself is let go here)."""

    def known() -> dict[str, str]:
        with ctx.db.read() as orm:
            return state.known_etags(orm, head.calendar_id, head.admin_id, now)

    lazy = _Known(known)
    cs = _fetch(backend, head, lazy, reconcile, now, report)
    many = cs.reconciled and len(cs.changed) + len(cs.removed) > state.MAX_PARTIAL
    if not (cs.full or many or cs.pages is not None):
        return cs
    return listing.start(ctx.db, head, cs, lazy.loaded(), now)  # reads the pages


_ADMIN_COLUMNS = (
    "email",
    "name",
    "tz",
    "reschedule_cutoff_s",
    "cancel_cutoff_s",
    "min_notice_s",
    "choose_link_ttl_s",
    "default_cancel_reason",
    "weekly",
    "slot_minutes",
)


@functools.cache
def _peek_statement() -> Select[tuple[object, ...]]:
    """The calendar's head and whether anything but the feed gives its cycle work: built
    once, its parameters bound at each call (``p_id``, ``p_cutoff``)."""
    c = cast(Table, CalendarRow.__table__)
    a = cast(Table, AdminRow.__table__)
    i = cast(Table, IntentRow.__table__)
    s = cast(Table, SessionRow.__table__)
    m = cast(Table, MirrorRow.__table__)
    pending = exists().where(i.c.calendar_id == c.c.id)
    # The range load_changed reads first: (revision, id) after the calendar's mark.
    newer = exists().where(
        s.c.admin_id == c.c.admin_id,
        tuple_(s.c.revision, s.c.id)
        > tuple_(c.c.synced_revision, func.coalesce(c.c.synced_id, "")),
    )
    # And the unsettled events it reads next.
    unsettled = exists().where(
        m.c.calendar_id == c.c.id,
        m.c.settled == false(),
        s.c.id == m.c.session_id,
        s.c.end > bindparam("p_cutoff", type_=UTCDateTime),
    )
    # And the echoes of syncd's writes, for the read to leave out.
    echoes = exists().where(m.c.calendar_id == c.c.id, m.c.echo_etag.is_not(None))
    return (
        select(
            c.c.admin_id,
            c.c.backend,
            c.c.cursor,
            c.c.breaker_tripped_at,
            c.c.reconciled_at,
            c.c.recent_removals,
            c.c.synced_revision,
            c.c.synced_id,
            c.c.synced_rules,
            *(a.c[name] for name in _ADMIN_COLUMNS),
            pending.label("p_pending"),
            newer.label("p_newer"),
            unsettled.label("p_unsettled"),
            echoes.label("p_echoes"),
        )
        .join_from(c, a, a.c.id == c.c.admin_id)
        .where(c.c.id == bindparam("p_id", type_=Integer))
    )


def peek(
    db: Database, calendar_id: int, rules: GestureRules, now: datetime
) -> tuple[state.Head, bool]:
    """The calendar's head (:func:`syncd.engine.state.load_head`) and whether its cycle is
    idle unless the feed says otherwise: no pending gesture, no removal in the breaker's
    window, no tripped breaker, planned with these rules, no session changed since, no
    unsettled event. One statement for an idle calendar; a busy one reads its head again."""
    row = db.read_one(_peek_statement(), {"p_id": calendar_id, "p_cutoff": now - state.WINDOW})
    if row is None:
        raise NotFoundError(f"There is no calendar {calendar_id} (see 'syncd calendar list').")
    if row.p_pending or row.recent_removals or row.breaker_tripped_at is not None:
        with db.read() as orm:
            return replace(state.load_head(orm, calendar_id), echoes=bool(row.p_echoes)), False
    admin = admin_from_row(AdminRow(**{name: getattr(row, name) for name in _ADMIN_COLUMNS}))
    head = state.Head(
        calendar_id,
        row.backend,
        row.cursor,
        False,
        admin,
        row.admin_id,
        {},
        row.reconciled_at,
        {},
        row.synced_revision,
        row.synced_id,
        row.synced_rules,
        bool(row.p_echoes),
    )
    planned = head.synced_revision is not None and head.synced_rules == settled.rules_key(rules)
    # A read with echoes at hand is not idle: its commit clears them.
    return head, planned and not (row.p_newer or row.p_unsettled or row.p_echoes)


def _nothing(cs: ChangeSet) -> bool:
    """An empty delta (not a listing, whole or in pages)."""
    return not (cs.changed or cs.removed or cs.full or cs.reconciled or cs.pages is not None)


def _idle_state(head: state.Head, since: tuple[int, str]) -> state.CalendarState:
    """What :func:`syncd.engine.state.load_changed` reads for an idle calendar: nothing."""
    return state.CalendarState(
        head.calendar_id,
        head.backend,
        head.cursor,
        head.breaker_tripped,
        head.admin,
        {},
        {},
        {},
        head.reconciled_at,
        {},
        complete=False,
        revision=since[0],
        revision_id=since[1],
    )


def load_and_fetch(
    ctx: Context,
    backend: CalendarBackend,
    calendar_id: int,
    reconcile: timedelta,
    rules: GestureRules,
    now: datetime,
    report: CycleReport,
    walk: listing.Walk | None = None,
) -> tuple[state.CalendarState, ChangeSet, listing.Walk | None]:
    """The calendar's state and its feed: only what changed, or the next part of a full
    listing (``walk``: the one an earlier pass of this cycle read, or a new one)."""
    head, idle = peek(ctx.db, calendar_id, rules, now)
    if head.echoes and walk is None:
        _hand_echoes(ctx, backend, calendar_id)
    if walk is None:  # no transaction stays open across the request
        got = _listed(ctx, backend, head, reconcile, now, report)
        if isinstance(got, ChangeSet) and idle and _nothing(got):
            # Read before the request: a session changed meanwhile is newer than the mark
            # stored with this cycle, so the next cycle plans it.
            return _idle_state(head, _since(head, rules)), got, None
        if isinstance(got, ChangeSet):
            with ctx.db.read() as orm:
                touched = {e.content.session_id for e in got.changed if e.content.session_id}
                remote_ids = {e.remote_id for e in got.changed} | set(got.removed)
                count = _removals_about(head, got)
                since = _since(head, rules)
                st = state.load_changed(orm, head, now, remote_ids, touched, count, since)
            return replace(st, echoes=head.echoes), got, None
        walk = got
    with ctx.db.read() as orm:
        batch = listing.take(walk)
        count = bool(walk.absent) or _removals_about(head, ChangeSet((), (), head.cursor))
        since = _since(head, rules)
        st = state.load_changed(orm, head, now, batch, set(), count, since)
    st, cs = listing.pass_feed(walk, replace(st, echoes=head.echoes), batch, head.cursor)
    return st, cs, (walk if walk.pending else None)


def _hand_echoes(ctx: Context, backend: CalendarBackend, calendar_id: int) -> None:
    """Tell a backend that leaves syncd's echoes out of its feed (:class:`NotesRecorded`)
    the etags recorded since the feed was last read, whoever wrote them: a worker or
    process that did not write them leaves them out all the same."""
    if not isinstance(backend, NotesRecorded):
        return
    m = cast(Table, MirrorRow.__table__)
    stmt = select(m.c.remote_id, m.c.echo_etag).where(
        m.c.calendar_id == calendar_id, m.c.echo_etag.is_not(None)
    )
    with ctx.db.read() as orm:
        echoes = {rid: etag for rid, etag in orm.execute(stmt)}
    backend.recorded(echoes)


@functools.cache
def _idle_commit_statement(fenced: bool, no_flush_wait: ColumnElement[bool]) -> Update:
    c = cast(Table, CalendarRow.__table__)
    i = cast(Table, IntentRow.__table__)
    holds = and_(
        c.c.id == bindparam("q_id", type_=Integer),
        c.c.cursor == bindparam("q_cursor", type_=String),
        not_(exists().where(i.c.calendar_id == c.c.id)),
        no_flush_wait,  # lost in a crash, the cycle is done again from the older cursor
    )
    if fenced:
        holds = and_(
            holds,
            c.c.lease_owner == bindparam("q_owner", type_=String),
            or_(
                c.c.lease_until.is_(None),
                c.c.lease_until >= bindparam("q_clock", type_=UTCDateTime),
            ),
        )
    return (
        update(c)
        .where(holds)
        .values(
            cursor=bindparam("q_new_cursor", type_=String),
            synced_revision=bindparam("q_revision", type_=Integer),
            synced_id=bindparam("q_revision_id", type_=String),
            synced_rules=bindparam("q_rules", type_=String),
            last_sync_at=bindparam("q_now", type_=UTCDateTime),
            last_error=None,
            paused_reason=None,
        )
    )


def commit_idle(
    ctx: Context,
    rules: GestureRules,
    st: state.CalendarState,
    plan: Plan,
    cs: ChangeSet,
    now: datetime,
    owner: str | None,
    marks: Mapping[str, bool] | None,
) -> bool:
    """Commit an idle cycle in one statement; False when the cycle is not idle or what it
    was planned from no longer holds (then the full commit decides, and says why).

    Idle: nothing loaded, nothing pending, no echoes read past, an empty plan, an empty
    delta. What the full commit stores is then the cursor, the plan mark, the sync time
    and no error, and what it checks under the calendar's lock is the cursor, that no
    gesture is pending and (``owner``) the lease: this ``UPDATE`` checks the same in its
    ``WHERE``. On PostgreSQL
    the intents are seen as of the statement's start, which is enough under a lease (only
    a commit holding the calendar's lease records a gesture): an unfenced cycle there
    takes the full commit.
    """
    idle = (
        not (st.sessions or st.mirrors or st.intents or st.recent_removals or marks)
        and not st.echoes
        and not st.breaker_tripped
        and st.cursor is not None
        and cs.cursor is not None
        and st.revision is not None
        and _nothing(cs)
        and plan == Plan()
    )
    if not idle or (owner is None and not ctx.db.is_sqlite):
        return False
    params = {
        "q_id": st.calendar_id,
        "q_cursor": st.cursor,
        "q_new_cursor": cs.cursor,
        "q_revision": st.revision,
        "q_revision_id": st.revision_id,
        "q_rules": settled.rules_key(rules),
        "q_now": now,
    }
    if owner is not None:
        params.update(q_owner=owner, q_clock=ctx.clock())
    stmt = _idle_commit_statement(owner is not None, ctx.db.no_flush_wait())
    _, count = ctx.db.write_one(stmt, params)
    return count == 1
