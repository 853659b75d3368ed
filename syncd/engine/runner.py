"""The runner: fetch → plan → commit → execute, for one calendar per call.

Everything a cycle decides (gestures applied, their outbox rows, pending intents, seen
etags, the advanced cursor) commits in one transaction, and only if what it was planned
from still holds: under the calendar's lock the pending intents and the cursor must be the
ones the plan read, and the worker must still hold the calendar's lease (fencing).
Calendar writes run after the commit (:mod:`syncd.engine.writes`).

One calendar never stops the rest: any exception inside its cycle is recorded as its
``last_error`` and returned in the report, never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from sqlalchemy import insert, update
from sqlalchemy.orm import Session as Orm

from syncd.domain.model import Notice, NoticeKind
from syncd.engine import settled, state
from syncd.engine.actions import (
    ActionContext,
    alert_breaker,
    apply_action,
    prefetch,
    session_url,
)
from syncd.engine.desired import GestureRules, desired_event
from syncd.engine.fetch import commit_idle, load_and_fetch
from syncd.engine.listing import Walk
from syncd.engine.planner import (
    BreakerRules,
    Create,
    Plan,
    PlanInput,
    Verification,
    Write,
    plan_calendar,
    with_verifications,
)
from syncd.engine.report import CycleReport
from syncd.engine.writes import execute, monotonic_deadline
from syncd.notify.outbox import enqueue
from syncd.ports import (
    AuthRevoked,
    BackendError,
    CalendarBackend,
    ChangeSet,
    DesiredEvent,
    EventContent,
    NotFound,
    RemoteEvent,
)
from syncd.store.context import Context
from syncd.store.models import AdminRow, CalendarRow, MirrorRow
from syncd.store.repo import admin_from_row

__all__ = [
    "CycleReport",
    "EngineSettings",
    "Fence",
    "commit",
    "execute",
    "monotonic_deadline",
    "sync_calendar",
]

log = logging.getLogger("syncd.engine")
#: Passes one cycle may make over a calendar (a catch-up of 100,000 sessions needs 200).
MAX_PASSES = 1000


@dataclass(frozen=True)
class EngineSettings:
    """The engine's knobs (from ``[sync]``, ``[gestures]``, ``[breaker]``).

    ``reconcile``: how often a full listing is compared with the mirror (0: never).
    """

    settle: timedelta = timedelta(minutes=2)
    rules: GestureRules = GestureRules()
    breaker: BreakerRules = BreakerRules()
    reconcile: timedelta = timedelta(hours=24)


@dataclass(frozen=True)
class Fence:
    """The lease a cycle runs under: ``owner`` must still hold the calendar at commit."""

    owner: str
    over_budget: Callable[[], bool] = lambda: False


def _desired_map(
    ctx: Context, st: state.CalendarState, settings: EngineSettings
) -> dict[str, DesiredEvent]:
    return {
        sid: desired_event(s, ctx.uid(sid), session_url(ctx, sid), settings.rules)
        for sid, s in st.sessions.items()
        if s.live
    }


def _wall_time(content: EventContent, tz: ZoneInfo) -> EventContent:
    """A floating event's times read in the admin's zone (the adapter left them as UTC)."""
    if not content.floating:
        return content
    start = content.start.replace(tzinfo=None).replace(tzinfo=tz).astimezone(UTC)
    end = content.end.replace(tzinfo=None).replace(tzinfo=tz).astimezone(UTC)
    return replace(content, start=start, end=end, floating=False)


def as_admin_meant(event: RemoteEvent, admin_tz: str) -> RemoteEvent:
    """The event with floating times in the admin's zone and instants in whole seconds."""
    c = _wall_time(event.content, ZoneInfo(admin_tz))
    c = replace(c, start=c.start.replace(microsecond=0), end=c.end.replace(microsecond=0))
    return event if c == event.content else replace(event, content=c)


def _verify(
    backend: CalendarBackend,
    st: state.CalendarState,
    sids: tuple[str, ...],
    over_budget: Callable[[], bool],
) -> dict[str, Verification]:
    """A fresh GET of each vanished event: only a server's clear 'gone' is a deletion."""
    checks: dict[str, Verification] = {}
    for sid in sids:
        if over_budget():
            checks[sid] = Verification("unknown")  # asked again next cycle
            continue
        try:
            event = backend.get(st.mirrors[sid].remote_id)
        except NotFound:
            checks[sid] = Verification("gone")
        except BackendError as err:
            log.warning("calendar %s: could not verify %s: %s", st.calendar_id, sid, err)
            checks[sid] = Verification("unknown")
        else:
            event = as_admin_meant(event, st.admin.tz)
            if event.content.status == "cancelled":  # marked cancelled: gone, but still there
                checks[sid] = Verification("gone", event)
            else:
                checks[sid] = Verification("present", event)
    return checks


def sync_calendar(
    ctx: Context,
    settings: EngineSettings,
    calendar_id: int,
    backend: CalendarBackend,
    fence: Fence | None = None,
) -> CycleReport:
    """One cycle for one calendar; never raises (see ``report.error``).

    With a ``fence``, the plan commits only while ``fence.owner`` holds the calendar's
    lease, and the cycle stops short (reads, verifications, writes) once its time budget
    is spent. When the cycle wrote to the calendar, one more pass reads the feed again, so
    the cursor moves past syncd's own writes (seen there as echoes), unless the backend's
    feed reports every change made after a cursor taken before them
    (:class:`ReportsEveryChange`): the next cycle's read then moves past them, its one
    request as always. A pass that planned
    only part of what changed (a catch-up after an upgrade, a change of the gesture rules
    or a bulk import: :data:`syncd.engine.state.MAX_PARTIAL` sessions a pass) is followed
    by the next, within the budget; the rest waits for the next cycle. So is a full
    listing's difference with the mirror (:mod:`syncd.engine.listing`), read once a cycle
    and planned 500 events a pass; its cursor is stored with the last. Some servers
    (Xandikos) derive the sync token from the collection's contents: a token taken before
    a create comes back once that event is deleted, and a diff from it would miss it.
    """
    report = CycleReport(calendar_id)
    try:
        passes, echoes_read, walk = 0, False, None
        while True:
            before = report.writes
            walk = _one_pass(ctx, settings, calendar_id, backend, report, fence, walk)
            passes += 1
            over = fence.over_budget() if fence else False
            if report.error is not None or report.fenced or over or passes >= MAX_PASSES:
                break
            if report.more:  # a catch-up goes on with the next sessions
                report.more = False
                continue
            if report.writes > before and not echoes_read and _reads_its_echoes(backend):
                echoes_read = True
                continue
            break
    except Exception as err:  # a bug on one calendar is that calendar's error only
        log.exception("calendar %s: cycle broke", calendar_id)
        report.error = f"{type(err).__name__}: {err}"
        try:
            _record_error(ctx, calendar_id, report.error, ctx.clock())
        except Exception:
            log.exception("calendar %s: could not record the error", calendar_id)
    return report


@runtime_checkable
class ReportsEveryChange(Protocol):
    """A backend whose change feed, from a cursor taken before syncd's writes, still
    reports every change made after them: an event syncd created that is deleted before
    the next read is reported deleted (a token the server issues, or one over a history
    that keeps deletions, as Radicale's). A cycle that wrote there need not read the feed
    once more to move its cursor past the writes; the next cycle's read does it."""

    def feed_reports_every_change(self) -> bool:
        """True while that holds for the cursor last read."""


def _reads_its_echoes(backend: CalendarBackend) -> bool:
    """Whether a cycle that wrote reads the feed again before it ends (see
    :func:`sync_calendar`): on a backend that cannot tell, always."""
    if isinstance(backend, ReportsEveryChange):
        return not backend.feed_reports_every_change()
    return True


def _one_pass(
    ctx: Context,
    settings: EngineSettings,
    calendar_id: int,
    backend: CalendarBackend,
    report: CycleReport,
    fence: Fence | None,
    walk: Walk | None = None,
) -> Walk | None:
    """fetch → plan → commit → execute, once; returns a full listing's walk still going."""
    now = ctx.clock().replace(microsecond=0)
    over_budget = fence.over_budget if fence else (lambda: False)
    try:
        st, cs, walk = load_and_fetch(
            ctx, backend, calendar_id, settings.reconcile, settings.rules, now, report, walk
        )
        report.more = st.more
        report.changed += len(cs.changed)
        report.removed += len(cs.removed)
        changed = tuple(as_admin_meant(e, st.admin.tz) for e in cs.changed)
        inp = PlanInput(
            now=now,
            sessions=MappingProxyType(st.sessions),
            desired=MappingProxyType(_desired_map(ctx, st, settings)),
            mirrors=MappingProxyType(st.mirrors),
            changed=changed,
            removed=cs.removed,
            full_listing=cs.full,
            intents=MappingProxyType(st.intents),
            settle=settings.settle,
            rules=settings.rules,
            breaker=settings.breaker,
            breaker_tripped=st.breaker_tripped,
            default_cancel_reason=st.admin.policy.default_cancel_reason,
            recent_removals=MappingProxyType(st.recent_removals),
            unloaded_upcoming=st.unloaded_upcoming,
            unplanned_removals=st.unplanned_removals,
        )
        plan = plan_calendar(inp)
        if plan.verify:
            checks = _verify(backend, st, plan.verify, over_budget)
            plan = plan_calendar(with_verifications(inp, checks))
    except AuthRevoked as err:
        report.error, report.auth_revoked = str(err), True
        _record_error(ctx, calendar_id, str(err), now, paused=True)
        return None
    except BackendError as err:
        report.error = str(err)
        _record_error(ctx, calendar_id, str(err), now)
        return None
    marks = settled.settle_marks(st, plan, inp.desired, settings.rules, now)
    writes = commit(ctx, settings, st, plan, cs, backend, now, report, fence, marks)
    execute(ctx, settings.rules, calendar_id, backend, writes, report, over_budget)
    return walk


def _record_error(
    ctx: Context,
    calendar_id: int,
    message: str,
    now: datetime,
    paused: bool = False,
) -> None:
    log.error("calendar %s: %s", calendar_id, message)
    with ctx.db.write() as orm:
        cal = state.get_calendar(orm, calendar_id, lock=True)
        cal.last_error = message
        if paused and cal.paused_reason is None:
            admin = admin_from_row(orm.get_one(AdminRow, cal.admin_id))
            cal.paused_reason = f"credentials refused: {message}"
            notice = Notice(
                NoticeKind.AUTH_REVOKED,
                None,
                MappingProxyType({"calendar": calendar_id, "reason": message}),
            )
            enqueue(orm, [notice], None, admin, "", now, ctx.host, dedupe_suffix=f":{calendar_id}")


def _still_holds(
    cal: CalendarRow, st: state.CalendarState, snapshot: dict[str, tuple[str, str, bool]]
) -> str | None:
    """Why the plan no longer holds (another worker committed meanwhile), or None."""
    planned = {sid: (i.kind, i.observed_hash, i.held) for sid, i in st.intents.items()}
    if snapshot != planned:
        return "the pending gestures changed under this cycle"
    if cal.cursor != st.cursor:
        return "the change cursor moved under this cycle"
    return None


def commit(
    ctx: Context,
    settings: EngineSettings,
    st: state.CalendarState,
    plan: Plan,
    cs: ChangeSet,
    backend: CalendarBackend,
    now: datetime,
    report: CycleReport,
    fence: Fence | None = None,
    marks: Mapping[str, bool] | None = None,
) -> list[Write]:
    """Apply a plan's decisions in one transaction; returns the calendar writes to run.

    Nothing is committed (and nothing written) when, under the calendar's lock, the
    intents or cursor differ from what the plan read, or ``fence.owner`` lost the lease.
    """
    owner = fence.owner if fence is not None else None
    if commit_idle(ctx, settings.rules, st, plan, cs, now, owner, marks):
        return []  # an idle cycle: one statement (fetch.commit_idle)
    writes: list[Write] = list(plan.writes)
    cid = st.calendar_id
    with ctx.db.write() as orm:
        cal = state.get_calendar(orm, cid, lock=True)
        why = _still_holds(cal, st, state.intents_snapshot(orm, cid))
        if why is None and fence is not None:
            lease_ok = cal.lease_owner == fence.owner and (
                cal.lease_until is None or cal.lease_until >= ctx.clock()
            )
            why = None if lease_ok else f"{fence.owner} no longer holds the calendar's lease"
        if why is not None:
            log.warning("calendar %s: plan not committed: %s", cid, why)
            report.fenced = True
            return []
        # The gestures' rows first: the mirror changes below then join theirs in one write.
        ac = ActionContext(ctx, settings.rules, cid, st.admin, st.sessions, now)
        prefetch(orm, ac, plan.actions)
        for sid, remote_id in plan.rehome:
            log.info("calendar %s: %s's event now lives at %s", cid, sid, remote_id)
            _mirror(orm, cid, sid).remote_id = remote_id
        # A dropped intent leaves no row, set in this plan or not (with a settle of 0 a
        # gesture is set and applied at once): only rows that exist are deleted.
        dropped = set(plan.drop_intents)
        for intent in plan.set_intents:
            if intent.session_id not in dropped:
                state.save_intent(orm, cid, intent)
        for sid in dropped & set(st.intents):
            state.drop_intent(orm, cid, sid)
        for sid, etag in plan.seen:
            _mirror(orm, cid, sid).seen_etag = etag
        for sid, sequence in plan.sequences:
            m = _mirror(orm, cid, sid)
            m.top_sequence = max(sequence, -1 if m.top_sequence is None else m.top_sequence)
        for sid, etag, digest in plan.adopt:
            m = _mirror(orm, cid, sid)
            m.written_etag, m.written_hash, m.seen_etag = etag, digest, etag
            if sid in st.sessions:  # it shows what the session wants: the session's times
                m.written_start, m.written_end = st.sessions[sid].start, st.sessions[sid].end
        for action in plan.actions:
            writes.extend(apply_action(orm, ac, action, report.actions))
        report.held = len(plan.hold)
        if plan.trip:
            cal.breaker_tripped_at = now
            report.tripped = True
            alert_breaker(orm, ac, plan.hold)
        window = {
            sid: at
            for sid, at in (*st.recent_removals.items(), *plan.removed_now)
            if now - at < settings.breaker.window
        }
        if window != st.recent_removals or cal.recent_removals:
            cal.recent_removals = {sid: at.isoformat() for sid, at in window.items()} or None
        creates = [w.session_id for w in writes if isinstance(w, Create)]
        have = state.mirrored(orm, cid, creates)
        rows: list[dict[str, object]] = []
        for w in writes:
            if isinstance(w, Create) and w.session_id not in have:
                have.add(w.session_id)
                remote_id = backend.remote_id_for(w.event.uid, w.session_id)
                rows.append(
                    {
                        "calendar_id": cid,
                        "session_id": w.session_id,
                        "remote_id": remote_id,
                        "gone": False,
                        "settled": False,
                    }
                )
        if rows:  # one executemany, no ORM objects: a first mirror's commit adds hundreds
            orm.execute(insert(MirrorRow), rows)
        if marks:
            settled.save_marks(orm, cid, marks)
        if st.revision is not None:
            cal.synced_revision, cal.synced_id = st.revision, st.revision_id
            cal.synced_rules = settled.rules_key(settings.rules)
        if st.echoes and cs.cursor != cal.cursor:  # the read moved past syncd's echoes
            orm.execute(
                update(MirrorRow)
                .where(MirrorRow.calendar_id == cid, MirrorRow.echo_etag.is_not(None))
                .values(echo_etag=None)
            )
        cal.cursor = cs.cursor
        if cs.full or cs.reconciled:
            cal.reconciled_at = now
        cal.last_sync_at = now
        cal.last_error = None
        cal.paused_reason = None  # the credentials work again
    return writes


def _mirror(orm: Orm, calendar_id: int, session_id: str) -> MirrorRow:
    row = state.mirror_row(orm, calendar_id, session_id)
    assert row is not None, session_id
    return row
