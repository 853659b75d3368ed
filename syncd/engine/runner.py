"""The runner: fetch → plan → commit → execute, for one calendar per call.

Everything a cycle decides (gestures applied, their outbox rows, pending intents, seen
etags, the advanced cursor) commits in one transaction. Calendar writes run after the
commit; each records its new etag on success, and a failed one is simply planned again
next cycle, because the planner compares what a session wants with what was last written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from sqlalchemy.orm import Session as Orm

from syncd.domain import sessions as rules
from syncd.domain.model import Actor, Admin, Notice, NoticeKind, Session, Transition
from syncd.engine import state
from syncd.engine.desired import GestureRules, content_hash, desired_content, desired_event
from syncd.engine.planner import (
    ApplyCancel,
    ApplyChoose,
    ApplyReschedule,
    BreakerRules,
    Create,
    Delete,
    Plan,
    PlanInput,
    Restore,
    Update,
    Verification,
    Write,
    plan_calendar,
    with_verifications,
)
from syncd.errors import SyncdError
from syncd.notify.outbox import enqueue
from syncd.ports import (
    AuthRevoked,
    BackendError,
    CalendarBackend,
    ChangeSet,
    CursorExpired,
    DesiredEvent,
    NotFound,
    PreconditionFailed,
)
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.models import MirrorRow

log = logging.getLogger("syncd.engine")


@dataclass(frozen=True)
class EngineSettings:
    """The engine's knobs (from ``[sync]``, ``[gestures]``, ``[breaker]``)."""

    settle: timedelta = timedelta(minutes=2)
    rules: GestureRules = GestureRules()
    breaker: BreakerRules = BreakerRules()


@dataclass
class CycleReport:
    """What one calendar's cycle did; ``error`` is set when a peer failed."""

    calendar_id: int
    changed: int = 0
    removed: int = 0
    resynced: bool = False
    actions: list[str] = field(default_factory=list)
    writes: int = 0
    write_failures: int = 0
    held: int = 0
    tripped: bool = False
    error: str | None = None
    auth_revoked: bool = False


def _desired_map(
    ctx: Context, st: state.CalendarState, settings: EngineSettings
) -> dict[str, DesiredEvent]:
    return {
        sid: desired_event(s, ctx.uid(sid), _session_url(ctx, sid), settings.rules)
        for sid, s in st.sessions.items()
        if s.live
    }


def _session_url(ctx: Context, session_id: str) -> str:
    return f"{ctx.public_url.rstrip('/')}/api/v1/sessions/{session_id}"


def _fetch(backend: CalendarBackend, st: state.CalendarState, report: CycleReport) -> ChangeSet:
    known = {
        m.remote_id: (m.seen_etag or m.written_etag or "")
        for m in st.mirrors.values()
        if not m.gone
    }
    try:
        return backend.changes(st.cursor, known)
    except CursorExpired:
        log.warning("calendar %s: change cursor expired; full listing", st.calendar_id)
        report.resynced = True
        return backend.changes(None, known)


def _verify(
    backend: CalendarBackend, st: state.CalendarState, sids: tuple[str, ...]
) -> dict[str, Verification]:
    """A fresh GET of each vanished event: only a server's clear 'gone' is a deletion."""
    checks: dict[str, Verification] = {}
    for sid in sids:
        try:
            event = backend.get(st.mirrors[sid].remote_id)
        except NotFound:
            checks[sid] = Verification("gone")
        except BackendError as err:
            log.warning("calendar %s: could not verify %s: %s", st.calendar_id, sid, err)
            checks[sid] = Verification("unknown")
        else:
            gone = event.content.status == "cancelled"
            checks[sid] = Verification("gone") if gone else Verification("present", event)
    return checks


def sync_calendar(
    ctx: Context,
    settings: EngineSettings,
    calendar_id: int,
    backend: CalendarBackend,
) -> CycleReport:
    """One cycle for one calendar; never raises for a peer failure (see ``report.error``).

    When the cycle wrote to the calendar, one more pass reads the feed again, so the cursor
    moves past syncd's own writes (seen there as echoes). Some servers (Xandikos) derive
    the sync token from the collection's contents: a token taken before a create comes
    back once that event is deleted, and a diff from it would miss the deletion.
    """
    report = CycleReport(calendar_id)
    _one_pass(ctx, settings, calendar_id, backend, report)
    if report.writes and report.error is None:
        _one_pass(ctx, settings, calendar_id, backend, report)
    return report


def _one_pass(
    ctx: Context,
    settings: EngineSettings,
    calendar_id: int,
    backend: CalendarBackend,
    report: CycleReport,
) -> None:
    """fetch → plan → commit → execute, once."""
    now = ctx.clock()
    with ctx.db.read() as orm:
        st = state.load_state(orm, calendar_id, now)
    try:
        cs = _fetch(backend, st, report)
        report.changed += len(cs.changed)
        report.removed += len(cs.removed)
        inp = PlanInput(
            now=now,
            sessions=MappingProxyType(st.sessions),
            desired=MappingProxyType(_desired_map(ctx, st, settings)),
            mirrors=MappingProxyType(st.mirrors),
            changed=cs.changed,
            removed=cs.removed,
            full_listing=cs.full,
            intents=MappingProxyType(st.intents),
            settle=settings.settle,
            rules=settings.rules,
            breaker=settings.breaker,
            breaker_tripped=st.breaker_tripped,
            default_cancel_reason=st.admin.policy.default_cancel_reason,
        )
        plan = plan_calendar(inp)
        if plan.verify:
            plan = plan_calendar(with_verifications(inp, _verify(backend, st, plan.verify)))
    except AuthRevoked as err:
        report.error, report.auth_revoked = str(err), True
        _record_error(ctx, calendar_id, str(err), now, paused=True, admin=st.admin)
        return
    except BackendError as err:
        report.error = str(err)
        _record_error(ctx, calendar_id, str(err), now)
        return
    writes = commit(ctx, settings, st, plan, cs.cursor, backend, now, report)
    execute(ctx, settings, calendar_id, backend, writes, report)


def _record_error(
    ctx: Context,
    calendar_id: int,
    message: str,
    now: datetime,
    paused: bool = False,
    admin: Admin | None = None,
) -> None:
    log.error("calendar %s: %s", calendar_id, message)
    with ctx.db.write() as orm:
        cal = state.get_calendar(orm, calendar_id, lock=True)
        cal.last_error = message
        if paused and cal.paused_reason is None and admin is not None:
            cal.paused_reason = f"credentials refused: {message}"
            notice = Notice(
                NoticeKind.AUTH_REVOKED,
                None,
                MappingProxyType({"calendar": calendar_id, "reason": message}),
            )
            enqueue(orm, [notice], None, admin, "", now, ctx.host, dedupe_suffix=f":{calendar_id}")


def commit(
    ctx: Context,
    settings: EngineSettings,
    st: state.CalendarState,
    plan: Plan,
    cursor: str | None,
    backend: CalendarBackend,
    now: datetime,
    report: CycleReport,
) -> list[Write]:
    """Apply a plan's decisions in one transaction; returns the calendar writes to run."""
    writes: list[Write] = list(plan.writes)
    cid = st.calendar_id
    with ctx.db.write() as orm:
        cal = state.get_calendar(orm, cid, lock=True)
        for sid, remote_id in plan.rehome:
            log.warning("calendar %s: %s's event now lives at %s", cid, sid, remote_id)
            _mirror(orm, cid, sid).remote_id = remote_id
        for intent in plan.set_intents:
            state.save_intent(orm, cid, intent)
        for sid in plan.drop_intents:
            state.drop_intent(orm, cid, sid)
        for sid, etag in plan.seen:
            _mirror(orm, cid, sid).seen_etag = etag
        for sid, etag, digest in plan.adopt:
            m = _mirror(orm, cid, sid)
            m.written_etag, m.written_hash, m.seen_etag = etag, digest, etag
        for action in plan.actions:
            writes.extend(_apply_action(orm, ctx, settings, st, action, now, report))
        report.held = len(plan.hold)
        if plan.trip:
            cal.breaker_tripped_at = now
            report.tripped = True
            _alert_breaker(orm, ctx, st, plan.hold, now)
        for w in writes:
            if isinstance(w, Create) and state.mirror_row(orm, cid, w.session_id) is None:
                orm.add(
                    MirrorRow(
                        calendar_id=cid,
                        session_id=w.session_id,
                        remote_id=backend.remote_id_for(w.event.uid, w.session_id),
                        gone=False,
                    )
                )
        cal.cursor = cursor
        cal.last_sync_at = now
        cal.last_error = None
        cal.paused_reason = None  # the credentials work again
    return writes


def _mirror(orm: Orm, calendar_id: int, session_id: str) -> MirrorRow:
    row = state.mirror_row(orm, calendar_id, session_id)
    assert row is not None, session_id
    return row


def _apply_action(
    orm: Orm,
    ctx: Context,
    settings: EngineSettings,
    st: state.CalendarState,
    action: ApplyReschedule | ApplyCancel | ApplyChoose | Restore,
    now: datetime,
    report: CycleReport,
) -> list[Write]:
    """One admin gesture through the same services as the CLI, in a savepoint."""
    cid, sid = st.calendar_id, action.session_id
    actor = Actor.ADMIN_CALENDAR
    make: Callable[[Session, Admin, list[Session]], Transition]
    if isinstance(action, Restore):
        session = st.sessions[sid]
        notice = Notice(
            NoticeKind.GESTURE_UNDONE,
            sid,
            MappingProxyType({"why": action.why, "what": action.what, "reason": action.why}),
        )
        enqueue(orm, [notice], session, st.admin, ctx.uid(sid), now, ctx.host)
        report.actions.append(f"{sid}: restored ({action.why})")
        return []
    if isinstance(action, ApplyReschedule):
        a = action

        def make(s: Session, ad: Admin, others: list[Session]) -> Transition:
            return rules.reschedule(s, ad, a.start, a.end, actor, now, others)
    elif isinstance(action, ApplyCancel):
        c = action

        def make(s: Session, ad: Admin, others: list[Session]) -> Transition:
            return rules.cancel(s, ad, c.reason, actor, now)
    else:
        ch = action

        def make(s: Session, ad: Admin, others: list[Session]) -> Transition:
            return rules.let_customer_choose(s, ad, ch.message, actor, now)

    try:
        with orm.begin_nested():
            t = services.act_in(orm, ctx, sid, make, now)
    except SyncdError as err:  # Refused included: a rule said no
        log.warning("calendar %s: gesture on %s not applied: %s", cid, sid, err)
        report.actions.append(f"{sid}: gesture not applied ({err})")
        return []
    m = _mirror(orm, cid, sid)
    report.actions.append(f"{sid}: {t.entry.action}")
    if isinstance(action, ApplyReschedule):
        m.written_etag = m.seen_etag = action.etag
        m.written_hash = action.observed_hash
        want = desired_event(t.after, ctx.uid(sid), _session_url(ctx, sid), settings.rules)
        if content_hash(desired_content(want), settings.rules) != action.observed_hash:
            return [Update(sid, m.remote_id, want, action.etag)]
        return []
    if isinstance(action, ApplyCancel):
        if action.remove_event:
            return [Delete(sid, m.remote_id, action.etag)]
        m.gone = True
        return []
    m.written_etag = m.seen_etag = action.etag
    m.written_hash = action.observed_hash
    want = desired_event(t.after, ctx.uid(sid), _session_url(ctx, sid), settings.rules)
    return [Update(sid, m.remote_id, want, action.etag)]


def _alert_breaker(
    orm: Orm,
    ctx: Context,
    st: state.CalendarState,
    held: tuple[str, ...],
    now: datetime,
) -> None:
    sessions = [
        {
            "id": sid,
            "customer": st.sessions[sid].customer.name,
            "start": st.sessions[sid].start.isoformat(),
        }
        for sid in held
        if sid in st.sessions
    ]
    log.error(
        "calendar %s: %d sessions vanished at once; holding them. Run 'syncd breaker release "
        "%s' to cancel them or 'syncd breaker restore %s' to put the events back.",
        st.calendar_id,
        len(held),
        st.calendar_id,
        st.calendar_id,
    )
    notice = Notice(
        NoticeKind.BREAKER_TRIPPED,
        None,
        MappingProxyType({"calendar": st.calendar_id, "count": len(held), "sessions": sessions}),
    )
    enqueue(orm, [notice], None, st.admin, "", now, ctx.host, dedupe_suffix=f":{st.calendar_id}")


def execute(
    ctx: Context,
    settings: EngineSettings,
    calendar_id: int,
    backend: CalendarBackend,
    writes: list[Write],
    report: CycleReport,
) -> None:
    """Run the calendar writes; record each new etag; a failure is retried next cycle."""
    for w in writes:
        try:
            _write_one(ctx, settings, calendar_id, backend, w)
            report.writes += 1
        except PreconditionFailed as err:
            log.info(
                "calendar %s: %s changed meanwhile (%s); re-read next cycle",
                calendar_id,
                w.session_id,
                err,
            )
            report.write_failures += 1
        except BackendError as err:
            log.warning("calendar %s: write for %s failed: %s", calendar_id, w.session_id, err)
            report.write_failures += 1
            report.error = report.error or str(err)


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
    settings: EngineSettings,
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
    digest = content_hash(desired_content(w.event), settings.rules)
    if isinstance(w, Create):
        remote_id = backend.remote_id_for(w.event.uid, w.session_id)
        try:
            ev = backend.create(w.event)
        except PreconditionFailed:
            ev = backend.get(remote_id)
            if content_hash(ev.content, settings.rules) != digest:
                # Someone else's content at our id: make the next cycle write ours over it.
                _record_write(ctx, calendar_id, w.session_id, None, digest, seen=ev.etag)
                return
        _record_write(ctx, calendar_id, w.session_id, ev.etag, digest, remote_id=ev.remote_id)
        return
    ev = backend.update(w.remote_id, w.event, w.etag)
    _record_write(ctx, calendar_id, w.session_id, ev.etag, digest)
