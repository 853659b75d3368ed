"""The pure planner: one calendar's observations in, intents, actions and writes out.

No I/O, no clock of its own, no database: frozen inputs, a frozen :class:`Plan`. The
runner calls it twice when deletions need a fresh read (``Plan.verify``): the first pass
asks, the second pass gets the answers in ``PlanInput.verifications``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Literal

from syncd.domain.eventtext import find_command
from syncd.domain.model import Session, Status
from syncd.engine.desired import GestureRules, content_hash, desired_content
from syncd.ports import DesiredEvent, RemoteEvent

IntentKind = Literal["reschedule", "cancel", "choose", "invalid", "removed"]
REMOVED_HASH = "removed"


@dataclass(frozen=True)
class MirrorState:
    """What syncd last wrote for one session in this calendar."""

    session_id: str
    remote_id: str
    written_etag: str | None
    written_hash: str | None
    seen_etag: str | None = None
    gone: bool = False


@dataclass(frozen=True)
class PendingIntent:
    """A gesture waiting for the settle window; ``held`` when the breaker holds it."""

    session_id: str
    kind: IntentKind
    payload: Mapping[str, str]
    observed_hash: str
    first_seen: datetime
    held: bool = False


@dataclass(frozen=True)
class Verification:
    """A fresh read of a vanished event: ``gone``, ``present`` (with the event) or ``unknown``."""

    outcome: Literal["gone", "present", "unknown"]
    event: RemoteEvent | None = None


@dataclass(frozen=True)
class BreakerRules:
    """More than ``min_sessions`` and more than ``fraction`` of upcoming sessions trips it.

    With ``on_empty``, so does a calendar whose every upcoming session (two or more)
    vanished at once.
    """

    min_sessions: int = 3
    fraction: float = 0.3
    on_empty: bool = True


@dataclass(frozen=True)
class PlanInput:
    """Everything the planner looks at for one calendar and one cycle."""

    now: datetime
    sessions: Mapping[str, Session]
    desired: Mapping[str, DesiredEvent]
    mirrors: Mapping[str, MirrorState]
    changed: Sequence[RemoteEvent] = ()
    removed: Sequence[str] = ()
    full_listing: bool = False
    intents: Mapping[str, PendingIntent] = field(default_factory=lambda: MappingProxyType({}))
    verifications: Mapping[str, Verification] = field(default_factory=lambda: MappingProxyType({}))
    settle: timedelta = timedelta(minutes=2)
    rules: GestureRules = GestureRules()
    breaker: BreakerRules = BreakerRules()
    breaker_tripped: bool = False
    default_cancel_reason: str = "Your host had to cancel this session."


# --- outputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplyReschedule:
    """Admin dragged the event: reschedule, the event already shows the new time."""

    session_id: str
    start: datetime
    end: datetime
    etag: str
    observed_hash: str


@dataclass(frozen=True)
class ApplyCancel:
    """Admin deleted the event or wrote ``cancel:``; ``remove_event`` when it still exists."""

    session_id: str
    reason: str
    remove_event: bool
    etag: str | None


@dataclass(frozen=True)
class ApplyChoose:
    """Admin wrote ``reschedule:``: let the customer choose; the event becomes a placeholder."""

    session_id: str
    message: str
    etag: str
    observed_hash: str


@dataclass(frozen=True)
class Restore:
    """An invalid gesture: put the event back and tell the admin why."""

    session_id: str
    why: str
    what: str


Action = ApplyReschedule | ApplyCancel | ApplyChoose | Restore


@dataclass(frozen=True)
class Create:
    session_id: str
    event: DesiredEvent


@dataclass(frozen=True)
class Update:
    session_id: str
    remote_id: str
    event: DesiredEvent
    etag: str


@dataclass(frozen=True)
class Delete:
    session_id: str
    remote_id: str
    etag: str | None


Write = Create | Update | Delete


@dataclass(frozen=True)
class Plan:
    """What to commit (intents, seen etags, actions, breaker) and what to write after."""

    set_intents: tuple[PendingIntent, ...] = ()
    drop_intents: tuple[str, ...] = ()
    seen: tuple[tuple[str, str], ...] = ()
    adopt: tuple[tuple[str, str, str], ...] = ()
    actions: tuple[Action, ...] = ()
    writes: tuple[Write, ...] = ()
    verify: tuple[str, ...] = ()
    hold: tuple[str, ...] = ()
    trip: bool = False
    rehome: tuple[tuple[str, str], ...] = ()


@dataclass
class _Builder:
    set_intents: list[PendingIntent] = field(default_factory=list)
    drop_intents: list[str] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)
    adopt: list[tuple[str, str, str]] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    verify: list[str] = field(default_factory=list)
    removals: list[tuple[str, str | None]] = field(default_factory=list)
    rehome: list[tuple[str, str]] = field(default_factory=list)

    def freeze(self, hold: Sequence[str], trip: bool) -> Plan:
        return Plan(
            tuple(self.set_intents),
            tuple(self.drop_intents),
            tuple(self.seen),
            tuple(self.adopt),
            tuple(self.actions),
            tuple(self.writes),
            tuple(self.verify),
            tuple(hold),
            trip,
            tuple(self.rehome),
        )


# --- classification -----------------------------------------------------------------------


def classify(
    event: RemoteEvent, session: Session, inp: PlanInput
) -> tuple[IntentKind, dict[str, str]] | None:
    """The gesture an admin's edit means, or None when it is nothing syncd acts on.

    Order: a command line first, then a removal (``status: cancelled``), then the shape
    (all-day, recurring, zero length, into the past), then a time change.
    """
    c = event.content
    rules = inp.rules
    command = find_command(
        c.summary, c.description, rules.cancel_keywords, rules.reschedule_keywords
    )
    if c.status == "cancelled":
        return "removed", {}
    if command is not None and command.kind == "cancel":
        return "cancel", {"reason": command.text or inp.default_cancel_reason}
    if command is not None and command.kind == "reschedule":
        message = command.text or "Please choose a new time for our session."
        if session.status is Status.AWAITING_CUSTOMER and session.choose_message == message:
            return None
        return "choose", {"message": message}
    if c.all_day:
        return "invalid", {"why": "it became an all-day event", "what": "made it all-day"}
    if c.recurring:
        return "invalid", {"why": "it became a recurring event", "what": "made it recurring"}
    if c.start == session.start and c.end == session.end:
        return None
    if c.end <= c.start:
        return "invalid", {"why": "it would have no length", "what": "gave it zero length"}
    if c.start <= inp.now:
        return "invalid", {"why": "it would start in the past", "what": "moved it into the past"}
    return "reschedule", {"start": c.start.isoformat(), "end": c.end.isoformat()}


def _observe_changed(
    b: _Builder,
    inp: PlanInput,
    mirror: MirrorState,
    session: Session,
    event: RemoteEvent,
    intent: PendingIntent | None,
) -> PendingIntent | None:
    """Fold one changed event into the session's intent; returns the intent now pending."""
    sid = session.id
    observed = content_hash(event.content, inp.rules)
    desired = inp.desired.get(sid)
    desired_hash = content_hash(desired_content(desired), inp.rules) if desired else None
    if event.etag == mirror.written_etag or observed == mirror.written_hash:
        # syncd's own write echoing back, server noise, or the admin's undo.
        if event.etag != mirror.seen_etag:
            b.seen.append((sid, event.etag))
        return _drop(b, intent)
    if observed == desired_hash:
        # The event already shows what syncd wants (a write whose etag was never recorded).
        b.adopt.append((sid, event.etag, observed))
        return _drop(b, intent)
    if event.etag == mirror.seen_etag and intent is None:
        return None  # seen before and found to be nothing
    b.seen.append((sid, event.etag))
    gesture = classify(event, session, inp)
    if gesture is None:
        return _drop(b, intent)
    kind, payload = gesture
    if intent is not None and intent.kind == kind and intent.observed_hash == observed:
        return intent
    new = PendingIntent(sid, kind, MappingProxyType(payload), observed, inp.now)
    b.set_intents.append(new)
    return new


def _drop(b: _Builder, intent: PendingIntent | None) -> PendingIntent | None:
    """Forget ``intent`` (if any); returns None, the intent now pending."""
    if intent is not None:
        b.drop_intents.append(intent.session_id)
    return None


def _due(intent: PendingIntent, inp: PlanInput) -> bool:
    return inp.now - intent.first_seen >= inp.settle


def plan_calendar(inp: PlanInput) -> Plan:
    """Decide, for every session mirrored in one calendar, what this cycle does."""
    b = _Builder()
    by_remote = {e.remote_id: e for e in inp.changed}
    # A server that stored syncd's event under another id (a rename, a re-import) still
    # carries the session in the UID: follow it there instead of calling it deleted.
    mirrors = dict(inp.mirrors)
    for e in inp.changed:
        sid = e.content.session_id
        known = mirrors.get(sid) if sid else None
        if sid and known and e.remote_id != known.remote_id and known.remote_id not in by_remote:
            mirrors[sid] = replace(known, remote_id=e.remote_id)
            b.rehome.append((sid, e.remote_id))
    removed = set(inp.removed)
    if inp.full_listing:
        removed |= {m.remote_id for m in mirrors.values()} - set(by_remote)
    upcoming = 0
    for sid, session in inp.sessions.items():
        mirror = mirrors.get(sid)
        desired = inp.desired.get(sid)
        intent = inp.intents.get(sid)
        over = session.end <= inp.now
        if mirror is None:
            if session.live and not over and desired is not None:
                b.writes.append(Create(sid, desired))
            continue
        if over or not session.live:
            _drop(b, intent)
            if not session.live and not mirror.gone:
                b.writes.append(Delete(sid, mirror.remote_id, mirror.seen_etag))
            continue
        upcoming += 1
        event = by_remote.get(mirror.remote_id)
        etag = mirror.seen_etag or mirror.written_etag
        if event is not None and event.content.status != "cancelled":
            etag = event.etag
            intent = _observe_changed(b, inp, mirror, session, event, intent)
            if b.adopt and b.adopt[-1][0] == sid:
                continue  # the event already shows what the session wants
        elif (event is not None or mirror.remote_id in removed) and (
            intent is None or intent.kind != "removed"
        ):
            intent = PendingIntent(sid, "removed", MappingProxyType({}), REMOVED_HASH, inp.now)
            b.set_intents.append(intent)
        if intent is not None and intent.kind == "removed" and _due(intent, inp):
            check = inp.verifications.get(sid)
            if check is None:
                b.verify.append(sid)
            elif check.outcome == "gone":
                b.removals.append((sid, None))
            elif check.outcome == "present" and check.event is not None:
                etag = check.event.etag
                _drop(b, intent)
                intent = _observe_changed(b, inp, mirror, session, check.event, None)
            # "unknown": a failed read is never a deletion; keep waiting.
        if intent is not None and intent.kind != "removed":
            if _due(intent, inp):
                _apply(b, inp, session, mirror, intent, etag)
            continue
        if intent is None and desired is not None:
            want = content_hash(desired_content(desired), inp.rules)
            if mirror.written_etag is None or (want != mirror.written_hash):
                if mirror.written_etag is None and mirror.seen_etag is None:
                    b.writes.append(Create(sid, desired))
                elif etag is not None:
                    b.writes.append(Update(sid, mirror.remote_id, desired, etag))
    return _breaker(b, inp, upcoming)


def _apply(
    b: _Builder,
    inp: PlanInput,
    session: Session,
    mirror: MirrorState,
    intent: PendingIntent,
    etag: str | None,
) -> None:
    sid, p = session.id, intent.payload
    b.drop_intents.append(sid)
    desired = inp.desired.get(sid)
    if intent.kind == "reschedule" and etag is not None:
        start, end = datetime.fromisoformat(p["start"]), datetime.fromisoformat(p["end"])
        b.actions.append(ApplyReschedule(sid, start, end, etag, intent.observed_hash))
    elif intent.kind == "cancel":
        b.actions.append(ApplyCancel(sid, p["reason"], True, etag))
    elif intent.kind == "choose" and etag is not None:
        b.actions.append(ApplyChoose(sid, p["message"], etag, intent.observed_hash))
    elif intent.kind == "invalid" and desired is not None and etag is not None:
        b.actions.append(Restore(sid, p["why"], p["what"]))
        b.writes.append(Update(sid, mirror.remote_id, desired, etag))


def _breaker(b: _Builder, inp: PlanInput, upcoming: int) -> Plan:
    """Apply verified deletions, unless too many vanished at once: then hold them all."""
    held = [i.session_id for i in inp.intents.values() if i.held]
    candidates = [sid for sid, _ in b.removals]
    pending_removals = {i.session_id for i in inp.intents.values() if i.kind == "removed"} | {
        i.session_id for i in b.set_intents if i.kind == "removed"
    }
    count = len(pending_removals | set(candidates))
    rules = inp.breaker
    trip = count > rules.min_sessions and count > rules.fraction * max(upcoming, 1)
    # A calendar that is suddenly empty is an accident until the admin says otherwise
    # (vdirsyncer's StorageEmpty), however few sessions it held.
    trip = trip or (rules.on_empty and upcoming >= 2 and count >= upcoming)
    if inp.breaker_tripped or trip or held:
        hold = sorted(set(candidates) - set(held))
        known = {i.session_id: i for i in (*inp.intents.values(), *b.set_intents)}
        b.set_intents = [i for i in b.set_intents if i.session_id not in hold]
        for sid in hold:
            first = known[sid].first_seen if sid in known else inp.now
            b.set_intents.append(
                PendingIntent(sid, "removed", MappingProxyType({}), REMOVED_HASH, first, True)
            )
        return b.freeze(hold, trip and not inp.breaker_tripped)
    for sid in candidates:
        b.drop_intents.append(sid)
        b.actions.append(ApplyCancel(sid, inp.default_cancel_reason, False, None))
    return b.freeze((), False)


def with_verifications(inp: PlanInput, checks: Mapping[str, Verification]) -> PlanInput:
    """The same input with fresh reads of vanished events."""
    return replace(inp, verifications=MappingProxyType(dict(checks)))
