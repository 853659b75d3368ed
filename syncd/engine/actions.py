"""Committing one planned action: a gesture through the booking services, or a restore.

Called by :func:`syncd.engine.runner.commit` inside its transaction. Every refusal ends in
a restore: a gesture the rules turn down (into the past once settled, an overlap) writes
the session's event back and tells the admin, and the mirror is marked so that a restore
whose write fails is written again next cycle until it lands.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from sqlalchemy.orm import Session as Orm

from syncd.domain import sessions as rules
from syncd.domain.model import Actor, Admin, Notice, NoticeKind, Session, Transition
from syncd.engine import state
from syncd.engine.desired import GestureRules, desired_event, desired_hash
from syncd.engine.plantypes import (
    ApplyCancel,
    ApplyChoose,
    ApplyReschedule,
    Delete,
    Restore,
    Update,
    Write,
)
from syncd.errors import NotFoundError, SyncdError
from syncd.notify.outbox import enqueue, read_near
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.models import AdminRow, ChoiceTokenRow, MirrorRow, SessionRow
from syncd.store.repo import (
    admin_from_row,
    get_admin_row,
    load_session_row,
    load_session_rows,
    open_tokens,
)

log = logging.getLogger("syncd.engine")
#: The actions that change a session through the services (a Restore only tells the admin).
_GESTURES = (ApplyReschedule, ApplyCancel, ApplyChoose)


@dataclass(frozen=True)
class ActionContext:
    """What applying an action needs besides the action."""

    ctx: Context
    rules: GestureRules
    calendar_id: int
    admin: Admin
    sessions: dict[str, Session]
    now: datetime
    #: Rows kept alive for the commit, so the ORM session's identity map keeps them.
    held: list[object] = field(default_factory=list, compare=False, repr=False)
    #: What :func:`prefetch` read for the commit's actions, taken by the first action on
    #: each session: its session, admin row and row (under lock), its unused tokens.
    loaded: dict[str, tuple[Session, AdminRow, SessionRow]] = field(
        default_factory=dict, compare=False, repr=False
    )
    tokens: dict[str, list[ChoiceTokenRow]] = field(default_factory=dict, compare=False, repr=False)
    #: The admin as its row read under lock (set with the lock, once a commit).
    locked_admin: list[Admin] = field(default_factory=list, compare=False, repr=False)


def prefetch(orm: Orm, ac: ActionContext, actions: Sequence[object]) -> None:
    """Read what the gestures of one commit need in a few statements, not a few each:
    their sessions locked (in id order), the admin's row locked after them, as the
    services lock them, their unused tokens, their outbox rows that an email coalesces
    with, and their mirror rows."""
    sids = [a.session_id for a in actions if isinstance(a, _GESTURES)]
    if not sids:
        return
    ac.loaded.update(load_session_rows(orm, sids, lock=True))
    ac.tokens.update(open_tokens(orm, list(ac.loaded)))
    # Every transition numbers the session's next revision: its emails are keyed by it.
    read_near(orm, {sid: f"{s.id}:{s.sequence + 1}:" for sid, (s, _a, _r) in ac.loaded.items()})
    state.mirror_rows(orm, ac.calendar_id, sids)
    if ac.loaded:
        _lock_admin(orm, ac, next(iter(ac.loaded.values()))[1])


def _lock_admin(orm: Orm, ac: ActionContext, admin_row: AdminRow) -> Admin:
    """The admin's row locked as the service would lock it: once a commit, not once an
    action (the lock holds until the commit)."""
    if not ac.locked_admin:
        row = get_admin_row(orm, admin_row.email, lock=True)
        ac.held.append(row)
        ac.locked_admin.append(admin_from_row(row))
    return ac.locked_admin[0]


def session_url(ctx: Context, session_id: str) -> str:
    """The REST address of a session for syncd's notes block; "" when the API is off."""
    if not ctx.rest_api:
        return ""  # a link that answers 503 helps nobody
    return f"{ctx.public_url.rstrip('/')}/api/v1/sessions/{session_id}"


def _mirror(orm: Orm, calendar_id: int, session_id: str) -> MirrorRow:
    row = state.mirror_row(orm, calendar_id, session_id)
    assert row is not None, session_id
    return row


def _restore(
    orm: Orm, ac: ActionContext, session: Session, why: str, what: str, etag: str | None
) -> list[Write]:
    """Tell the admin, and write the session's event back as a new revision."""
    sid = session.id
    notice = Notice(
        NoticeKind.GESTURE_UNDONE,
        sid,
        MappingProxyType({"why": why, "what": what, "reason": why}),
    )
    enqueue(orm, [notice], session, ac.admin, ac.ctx.uid(sid), ac.now, ac.ctx.host)
    m = _mirror(orm, ac.calendar_id, sid)
    # Until a write of the session's event lands, what was last written is not on the
    # calendar: the planner then writes it again every cycle (a failed restore is retried).
    m.written_hash = None
    m.written_start = m.written_end = None
    if etag is None or not session.live:
        return []
    want = desired_event(session, ac.ctx.uid(sid), session_url(ac.ctx, sid), ac.rules)
    return [Update(sid, m.remote_id, want, etag)]


def _not_applied(ac: ActionContext, sid: str, err: SyncdError, actions: list[str]) -> list[Write]:
    log.info("calendar %s: gesture on %s not applied, undone: %s", ac.calendar_id, sid, err)
    actions.append(f"{sid}: gesture not applied ({err})")
    return []


def apply_action(
    orm: Orm,
    ac: ActionContext,
    action: ApplyReschedule | ApplyCancel | ApplyChoose | Restore,
    actions: list[str],
) -> list[Write]:
    """One admin gesture through the same services as the CLI.

    The rules decide on the session as read under lock before anything is written, so a
    refused gesture needs no savepoint: it writes only its undo. An error while writing
    an accepted one fails the whole commit (nothing of it is kept, nothing is sent).
    """
    cid, sid, now = ac.calendar_id, action.session_id, ac.now
    actor = Actor.ADMIN_CALENDAR
    if isinstance(action, Restore):
        actions.append(f"{sid}: restored ({action.why})")
        _restore(orm, ac, ac.sessions[sid], action.why, action.what, None)
        return []  # the planner already wrote the Update
    make: Callable[[Session, Admin, list[Session]], Transition]
    # Read once, under the lock the service would take, without the history no action
    # needs (the transition appends its entry): the service acts on this very read.
    loaded = ac.loaded.pop(sid, None)
    tokens = ac.tokens.pop(sid, None)
    if loaded is None:  # not prefetched, or a second action on the session
        try:
            loaded = load_session_row(orm, sid, lock=True, with_history=False)
        except NotFoundError as err:
            if not isinstance(action, ApplyCancel):
                raise
            return _not_applied(ac, sid, err, actions)  # the event goes with the session
        tokens = None
    fresh = loaded[0]
    admin = _lock_admin(orm, ac, loaded[1])
    if isinstance(action, ApplyReschedule):
        a = action
        if (fresh.start, fresh.end) == (a.start, a.end) and fresh.live:
            # A reschedule to the time the session already has is nothing (a second worker
            # or a lost answer): no "moved from 12:00 to 12:00" email.
            m = _mirror(orm, cid, sid)
            m.written_etag = m.seen_etag = a.etag
            m.written_hash = a.observed_hash
            m.written_start, m.written_end = a.start, a.end
            return []

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
        # The rules decide before anything is written: a refusal leaves nothing to undo.
        t = services.decide(orm, loaded, admin, make)
    except SyncdError as err:  # Refused included: a rule said no
        if isinstance(action, ApplyCancel):
            return _not_applied(ac, sid, err, actions)  # canceled meanwhile
        log.info("calendar %s: gesture on %s not applied, undone: %s", cid, sid, err)
        actions.append(f"{sid}: gesture not applied ({err})")
        what = "moved it" if isinstance(action, ApplyReschedule) else "asked for a new time"
        return _restore(orm, ac, fresh, str(err), what, action.etag)
    services.record(orm, ac.ctx, t, admin, now, tokens)
    m = _mirror(orm, cid, sid)
    actions.append(f"{sid}: {t.entry.action}")
    if isinstance(action, ApplyCancel):
        if action.remove_event:
            return [Delete(sid, m.remote_id, action.etag)]
        m.gone = True
        return []
    m.written_etag = m.seen_etag = action.etag
    m.written_hash = action.observed_hash
    m.written_start, m.written_end = t.after.start, t.after.end  # what the event shows
    want = desired_event(t.after, ac.ctx.uid(sid), session_url(ac.ctx, sid), ac.rules)
    if isinstance(action, ApplyReschedule) and desired_hash(want, ac.rules) == action.observed_hash:
        return []
    return [Update(sid, m.remote_id, want, action.etag)]


def alert_breaker(orm: Orm, ac: ActionContext, held: tuple[str, ...]) -> None:
    """Email the admin (and log for ops) the sessions the breaker holds."""
    sessions = [
        {
            "id": sid,
            "customer": ac.sessions[sid].customer.name,
            "start": ac.sessions[sid].start.isoformat(),
        }
        for sid in held
        if sid in ac.sessions
    ]
    cid = ac.calendar_id
    log.error(
        "calendar %s: %d sessions vanished at once; holding them (%s). Run 'syncd breaker "
        "release %s' to cancel them or 'syncd breaker restore %s' to put the events back.",
        cid,
        len(held),
        ", ".join(held),
        cid,
        cid,
    )
    notice = Notice(
        NoticeKind.BREAKER_TRIPPED,
        None,
        MappingProxyType({"calendar": cid, "count": len(held), "sessions": sessions}),
    )
    enqueue(orm, [notice], None, ac.admin, "", ac.now, ac.ctx.host, dedupe_suffix=f":{cid}")
