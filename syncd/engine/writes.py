"""Executing a committed plan's calendar writes, and recording what each one wrote.

Every write is conditional (``If-None-Match`` / ``If-Match``); a 412 leaves the mirror as
it was, so the next cycle re-reads and plans the admin's gesture first. A write that fails
in any way is planned again next cycle, because the planner compares what a session wants
with what was last written; one failing write never stops the others.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import MappingProxyType

from sqlalchemy import select

from syncd.domain.model import Notice, NoticeKind
from syncd.engine import state
from syncd.engine.desired import GestureRules, content_hash, desired_hash
from syncd.engine.plantypes import Create, Delete, Write
from syncd.engine.report import CycleReport
from syncd.notify.outbox import enqueue
from syncd.ports import BackendError, CalendarBackend, NotFound, PreconditionFailed, WriteRefused
from syncd.store.context import Context
from syncd.store.models import AdminRow, OutboxRow, SessionRow
from syncd.store.repo import admin_from_row, load_sessions

log = logging.getLogger("syncd.engine")


def execute(
    ctx: Context,
    rules: GestureRules,
    calendar_id: int,
    backend: CalendarBackend,
    writes: list[Write],
    report: CycleReport,
    over_budget: Callable[[], bool] = lambda: False,
) -> None:
    """Run the calendar writes; record each new etag; a failure is retried next cycle.

    Past the cycle's time budget the remaining writes
    wait for the next cycle (the planner plans them again).
    """
    for w in writes:
        if over_budget():
            log.warning("calendar %s: time budget spent; writes continue next cycle", calendar_id)
            break
        try:
            _write_one(ctx, rules, calendar_id, backend, w)
            report.writes += 1
        except PreconditionFailed as err:
            log.info(
                "calendar %s: %s changed meanwhile (%s); re-read next cycle",
                calendar_id,
                w.session_id,
                err,
            )
            report.write_failures += 1
        except WriteRefused as err:  # not an outage: the admin is told once
            log.warning("calendar %s: %s left alone: %s", calendar_id, w.session_id, err)
            report.write_failures += 1
            _tell_refused(ctx, calendar_id, w, str(err))
        except BackendError as err:
            log.warning("calendar %s: write for %s failed: %s", calendar_id, w.session_id, err)
            report.write_failures += 1
            report.error = report.error or str(err)
        except Exception as err:  # an adapter bug on one event never stops the others
            log.exception("calendar %s: write for %s broke", calendar_id, w.session_id)
            report.write_failures += 1
            report.error = report.error or f"{type(err).__name__}: {err}"


def _tell_refused(ctx: Context, calendar_id: int, w: Write, reason: str) -> None:
    """One admin email per session whose event syncd refuses to write."""
    what = (
        "delete the event (the session was canceled)"
        if isinstance(w, Delete)
        else ("write the session's time and status onto the event")
    )
    with ctx.db.write() as orm:
        kind = NoticeKind.WRITE_REFUSED
        told = select(OutboxRow.id).where(
            OutboxRow.session_id == w.session_id, OutboxRow.kind == kind.value
        )
        row = orm.get(SessionRow, w.session_id)
        if row is None or orm.scalars(told).first() is not None:
            return
        cal = state.get_calendar(orm, calendar_id)
        admin = admin_from_row(orm.get_one(AdminRow, cal.admin_id))
        session = load_sessions(orm, [row], with_history=False)[0]
        data = {"what": what, "reason": reason, "calendar": str(calendar_id)}
        notice = Notice(kind, w.session_id, MappingProxyType(data))
        now = ctx.clock().replace(microsecond=0)
        enqueue(orm, [notice], session, admin, ctx.uid(w.session_id), now, ctx.host)


def monotonic_deadline(budget_s: float | None) -> Callable[[], bool]:
    """A predicate that turns true once ``budget_s`` seconds have passed (never if None)."""
    if budget_s is None:
        return lambda: False
    end = time.monotonic() + budget_s
    return lambda: time.monotonic() >= end


def _record_write(
    ctx: Context,
    calendar_id: int,
    session_id: str,
    etag: str | None,
    digest: str | None,
    gone: bool = False,
    seen: str | None = None,
    remote_id: str | None = None,
) -> None:
    with ctx.db.write() as orm:
        m = state.mirror_row(orm, calendar_id, session_id)
        if m is None:
            return
        if remote_id is not None and remote_id != m.remote_id:
            m.remote_id = remote_id  # the server chose where to keep it
        m.written_etag, m.written_hash = etag, digest
        m.seen_etag = seen if seen is not None else etag
        m.gone = gone


def _write_one(
    ctx: Context,
    rules: GestureRules,
    calendar_id: int,
    backend: CalendarBackend,
    w: Write,
) -> None:
    if isinstance(w, Delete):
        try:
            backend.delete(w.remote_id, w.etag)
        except PreconditionFailed:
            # The session is canceled; whatever the admin changed since, the event goes.
            try:
                fresh = backend.get(w.remote_id)
            except NotFound:
                fresh = None
            if fresh is not None:
                backend.delete(w.remote_id, fresh.etag)
        _record_write(ctx, calendar_id, w.session_id, None, None, gone=True)
        return
    digest = desired_hash(w.event, rules)
    if isinstance(w, Create):
        remote_id = backend.remote_id_for(w.event.uid, w.session_id)
        try:
            ev = backend.create(w.event)
        except PreconditionFailed:
            ev = backend.get(remote_id)
            if content_hash(ev.content, rules, w.event.summary) != digest:
                # Someone else's content at our id: make the next cycle write ours over it.
                _record_write(ctx, calendar_id, w.session_id, None, digest, seen=ev.etag)
                return
        _record_write(ctx, calendar_id, w.session_id, ev.etag, digest, remote_id=ev.remote_id)
        return
    ev = backend.update(w.remote_id, w.event, w.etag)
    _record_write(ctx, calendar_id, w.session_id, ev.etag, digest)
