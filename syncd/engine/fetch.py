"""What a cycle reads: the calendar's state and its change feed.

A cycle plans only what changed (:func:`syncd.engine.state.load_changed`): the sessions
changed after the calendar's last plan (in (revision, id) order, a few hundred a pass),
the events the feed reported (changed or removed), pending gestures and unsettled
events. So its cost, and its memory, grow with the changes, not with the calendar. When
removals are about, the breaker's population (the upcoming sessions left unloaded) is
counted by the database, not loaded. A calendar never planned, or planned with other
gesture rules (and every calendar once after the upgrade to 0005), catches up from the
start the same way. Only a full listing — a calendar's first sync, or a backend's answer
to an expired cursor — is compared with the whole mirror. A reconciliation is an
adapter's own comparison with ``known``, read only when the adapter asks for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta

from syncd.engine import settled, state
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
        return backend.changes(None, known)
    try:
        return backend.changes(head.cursor, known)
    except CursorExpired:
        log.warning("calendar %s: change cursor expired; full listing", head.calendar_id)
        report.resynced = True
        return backend.changes(None, known)


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


def _known_of(st: state.CalendarState) -> dict[str, str]:
    return {
        m.remote_id: (m.seen_etag or m.written_etag or "")
        for m in st.mirrors.values()
        if not m.gone
    }


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


def load_and_fetch(
    ctx: Context,
    backend: CalendarBackend,
    calendar_id: int,
    reconcile: timedelta,
    rules: GestureRules,
    now: datetime,
    report: CycleReport,
) -> tuple[state.CalendarState, ChangeSet]:
    """The calendar's state and its feed: only what changed when that is enough."""
    with ctx.db.read() as orm:
        head = state.load_head(orm, calendar_id)
        whole = None
        if head.cursor is None:  # the first listing is compared with the whole mirror
            whole = state.load_state(orm, calendar_id, now, head)
    if whole is not None:  # no transaction stays open across the request
        return whole, _fetch(backend, head, _known_of(whole), reconcile, now, report)

    def known() -> dict[str, str]:
        with ctx.db.read() as orm:
            return state.known_etags(orm, calendar_id, head.admin_id, now)

    cs = _fetch(backend, head, _Known(known), reconcile, now, report)
    with ctx.db.read() as orm:
        if cs.full:  # a full listing is compared with the whole mirror
            return state.load_state(orm, calendar_id, now, head), cs
        touched = {e.content.session_id for e in cs.changed if e.content.session_id}
        remote_ids = {e.remote_id for e in cs.changed} | set(cs.removed)
        count = _removals_about(head, cs)
        since = _since(head, rules)
        return state.load_changed(orm, head, now, remote_ids, touched, count, since), cs
