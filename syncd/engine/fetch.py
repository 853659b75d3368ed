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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta

from syncd.engine import listing, settled, state
from syncd.engine.desired import GestureRules
from syncd.engine.report import CycleReport
from syncd.ports import CalendarBackend, ChangeSet, CursorExpired
from syncd.store.context import Context

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
    with ctx.db.read() as orm:
        head = state.load_head(orm, calendar_id)
    if walk is None:  # no transaction stays open across the request
        got = _listed(ctx, backend, head, reconcile, now, report)
        if isinstance(got, ChangeSet):
            with ctx.db.read() as orm:
                touched = {e.content.session_id for e in got.changed if e.content.session_id}
                remote_ids = {e.remote_id for e in got.changed} | set(got.removed)
                count = _removals_about(head, got)
                since = _since(head, rules)
                st = state.load_changed(orm, head, now, remote_ids, touched, count, since)
            return st, got, None
        walk = got
    with ctx.db.read() as orm:
        batch = listing.take(walk)
        count = bool(walk.absent) or _removals_about(head, ChangeSet((), (), head.cursor))
        since = _since(head, rules)
        st = state.load_changed(orm, head, now, batch, set(), count, since)
    st, cs = listing.pass_feed(walk, st, batch, head.cursor)
    return st, cs, (walk if walk.pending else None)
