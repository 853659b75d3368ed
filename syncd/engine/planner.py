"""The pure planner: one calendar's observations in, intents, actions and writes out.

No I/O, no clock of its own, no database: frozen inputs, a frozen :class:`Plan`. The
runner calls it twice when deletions need a fresh read (``Plan.verify``): the first pass
asks, the second pass gets the answers in ``PlanInput.verifications``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType

from syncd.domain.eventtext import find_command
from syncd.domain.model import Session, Status
from syncd.engine.desired import content_hash, desired_hash
from syncd.engine.plantypes import (
    REMOVED_HASH,
    Action,
    ApplyCancel,
    ApplyChoose,
    ApplyReschedule,
    BreakerRules,
    Builder,
    Create,
    Delete,
    IntentKind,
    MirrorState,
    PendingIntent,
    Plan,
    PlanInput,
    Restore,
    Update,
    Verification,
    Write,
)
from syncd.ports import DesiredEvent, RemoteEvent

__all__ = [
    "REMOVED_HASH",
    "Action",
    "ApplyCancel",
    "ApplyChoose",
    "ApplyReschedule",
    "BreakerRules",
    "Create",
    "Delete",
    "IntentKind",
    "MirrorState",
    "PendingIntent",
    "Plan",
    "PlanInput",
    "Restore",
    "Update",
    "Verification",
    "Write",
    "classify",
    "plan_calendar",
    "with_verifications",
]


# --- classification -----------------------------------------------------------------------


def _own_summary(inp: PlanInput, session_id: str) -> str:
    desired = inp.desired.get(session_id)
    return desired.summary if desired is not None else ""


def classify(
    event: RemoteEvent,
    session: Session,
    inp: PlanInput,
    written: tuple[datetime, datetime] | None = None,
) -> tuple[IntentKind, dict[str, str]] | None:
    """The gesture an admin's edit means, or None when it is nothing syncd acts on.

    Order: a removal (``STATUS:CANCELLED``), a command line, unreadable times, then the
    shape (all-day, recurring, zero length, into the past), then a time change. Only the
    admin's words are commands: syncd's own title and notes block never are.
    """
    c = event.content
    rules = inp.rules
    command = find_command(
        c.summary,
        c.description,
        rules.cancel_keywords,
        rules.reschedule_keywords,
        _own_summary(inp, session.id),
    )
    if c.status == "cancelled":
        return "removed", {}
    if command is not None and command.kind == "cancel":
        return "cancel", {"reason": command.text or inp.default_cancel_reason}
    if command is not None and command.kind == "reschedule":
        message = command.text or "Please choose a new time for our session."
        if session.status is not Status.AWAITING_CUSTOMER or session.choose_message != message:
            return "choose", {"message": message}
        # That choice is already the customer's: the rest of the edit is judged on its own
        # (made all-day or dragged into the past, it is refused and restored).
    if c.unreadable:
        why = f"its time cannot be read ({c.unreadable})"
        return "invalid", {"why": why, "what": "wrote a time syncd cannot read"}
    if c.all_day:
        return "invalid", {"why": "it became an all-day event", "what": "made it all-day"}
    if c.recurring:
        return "invalid", {"why": "it became a recurring event", "what": "made it recurring"}
    if c.start == session.start and c.end == session.end:
        return None
    if written is not None and (c.start, c.end) == written:
        # The times syncd last wrote: the session moved since (its write is still to land),
        # not the event. The edit moves nothing back; the planner writes the new times.
        return None
    if c.end <= c.start:
        return "invalid", {"why": "it would have no length", "what": "gave it zero length"}
    if c.start <= inp.now:
        return "invalid", {"why": "it would start in the past", "what": "moved it into the past"}
    return "reschedule", {"start": c.start.isoformat(), "end": c.end.isoformat()}


def _observe_changed(
    b: Builder,
    inp: PlanInput,
    mirror: MirrorState,
    session: Session,
    event: RemoteEvent,
    intent: PendingIntent | None,
) -> PendingIntent | None:
    """Fold one changed event into the session's intent; returns the intent now pending."""
    sid = session.id
    observed = content_hash(event.content, inp.rules, _own_summary(inp, sid))
    desired = inp.desired.get(sid)
    want = desired_hash(desired, inp.rules) if desired else None
    if event.etag == mirror.written_etag or observed == mirror.written_hash:
        # syncd's own write echoing back, server noise, or the admin's undo.
        if event.etag != mirror.seen_etag:
            b.seen.append((sid, event.etag))
        return _drop(b, intent)
    if observed == want:
        # The event already shows what syncd wants (a write whose etag was never recorded).
        b.adopt.append((sid, event.etag, observed))
        return _drop(b, intent)
    if event.etag == mirror.seen_etag and intent is None:
        return None  # seen before and found to be nothing
    b.seen.append((sid, event.etag))
    if intent is not None and intent.observed_hash == observed:
        # The same content reported again (SOGo's one-second tokens do): only time passed,
        # so the pending gesture keeps its settle clock; it is judged when it is due.
        return intent
    gesture = classify(event, session, inp, mirror.written_times)
    if gesture is None:
        return _drop(b, intent)
    kind, payload = gesture
    new = PendingIntent(sid, kind, MappingProxyType(payload), observed, inp.now)
    b.set_intents.append(new)
    return new


def _drop(b: Builder, intent: PendingIntent | None) -> PendingIntent | None:
    """Forget ``intent`` (if any); returns None, the intent now pending."""
    if intent is not None:
        b.drop_intents.append(intent.session_id)
    return None


def _due(intent: PendingIntent, inp: PlanInput) -> bool:
    return inp.now - intent.first_seen >= inp.settle


def _rehome(
    b: Builder, inp: PlanInput, by_remote: Mapping[str, RemoteEvent]
) -> dict[str, MirrorState]:
    """Follow syncd's own event to another id, only once the old id is reported gone.

    Only syncd's UID is followed: a client's copy (a new UID with the same notes and X-
    properties) is never the session, wherever it lives and whatever it says.
    """
    mirrors = dict(inp.mirrors)
    removed = set(inp.removed)
    for e in inp.changed:
        sid = e.content.session_id
        known = mirrors.get(sid) if sid else None
        desired = inp.desired.get(sid) if sid else None
        if sid is None or known is None or desired is None or e.remote_id == known.remote_id:
            continue
        if e.content.uid != desired.uid:
            continue  # a copy, not syncd's event
        old_gone = known.remote_id in removed or (
            inp.full_listing and known.remote_id not in by_remote
        )
        if old_gone:
            mirrors[sid] = replace(known, remote_id=e.remote_id)
            b.rehome.append((sid, e.remote_id))
    return mirrors


def plan_calendar(inp: PlanInput) -> Plan:
    """Decide, for every session mirrored in one calendar, what this cycle does."""
    b = Builder()
    by_remote = {e.remote_id: e for e in inp.changed}
    mirrors = _rehome(b, inp, by_remote)
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
        _saw(b, mirror, event)
        etag = mirror.seen_etag or mirror.written_etag
        if event is not None and event.content.status != "cancelled":
            etag = event.etag
            intent = _observe_changed(b, inp, mirror, session, event, intent)
            if b.adopt and b.adopt[-1][0] == sid:
                continue  # the event already shows what the session wants
        elif (event is not None or (mirror.remote_id in removed and _written(mirror))) and (
            intent is None or intent.kind != "removed"
        ):
            # Deleted, or marked cancelled (Thunderbird, Outlook): the same gesture.
            intent = PendingIntent(sid, "removed", MappingProxyType({}), REMOVED_HASH, inp.now)
            b.set_intents.append(intent)
        if intent is not None and intent.kind == "removed" and _due(intent, inp):
            check = inp.verifications.get(sid)
            _saw(b, mirror, check.event if check else None)
            if check is None:
                b.verify.append(sid)
            elif check.outcome == "gone":
                # An event marked cancelled is still there: it goes with the session.
                b.removals.append((sid, check.event.etag if check.event else None))
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
            want = desired_hash(desired, inp.rules)
            if mirror.written_etag is None or (want != mirror.written_hash):
                if mirror.written_etag is None and mirror.seen_etag is None:
                    b.writes.append(Create(sid, _above(desired, mirror, b)))
                elif etag is not None:
                    b.writes.append(Update(sid, mirror.remote_id, _above(desired, mirror, b), etag))
    return _breaker(b, inp, upcoming)


def _saw(b: Builder, mirror: MirrorState, event: RemoteEvent | None) -> None:
    """Note the SEQUENCE of a revision read for ``mirror`` that it has not seen before
    (whatever it says, marked cancelled included) when it is above the highest known
    there. A revision seen before is left alone, so a listing that finds nothing new plans
    nothing (a mirror from before migration 0006 learns its top from its next revision)."""
    if event is None or event.etag in (mirror.seen_etag, mirror.written_etag):
        return
    if event.content.sequence > mirror.top_sequence:
        b.sequences.append((mirror.session_id, event.content.sequence))


def _above(desired: DesiredEvent, mirror: MirrorState, b: Builder) -> DesiredEvent:
    """``desired`` with a SEQUENCE above every one written to or read from its event (this
    plan's reads included): a client that put back an older revision, with a lower
    SEQUENCE, never makes syncd's next write look older than one already seen."""
    top = max([mirror.top_sequence, *(q for s, q in b.sequences if s == mirror.session_id)])
    if desired.sequence > top:
        return desired
    return replace(desired, sequence=top + 1)


def _written(mirror: MirrorState) -> bool:
    """Whether syncd holds an etag of the event: a removal of one it does not (a restore
    asked for it to be written again, a create whose answer was lost) is no gesture."""
    return mirror.written_etag is not None or mirror.seen_etag is not None


def _apply(
    b: Builder,
    inp: PlanInput,
    session: Session,
    mirror: MirrorState,
    intent: PendingIntent,
    etag: str | None,
) -> None:
    """A settled gesture: its action, or a restore when the rules refuse it."""
    sid, p = session.id, intent.payload
    desired = inp.desired.get(sid)
    if intent.kind == "reschedule":
        start, end = datetime.fromisoformat(p["start"]), datetime.fromisoformat(p["end"])
        if start <= inp.now:
            # In the future when dragged, in the past once settled: refused, so restored.
            p = {"why": "it would start in the past", "what": "moved it into the past"}
        elif etag is not None:
            b.drop_intents.append(sid)
            b.actions.append(ApplyReschedule(sid, start, end, etag, intent.observed_hash))
            return
    elif intent.kind == "cancel":
        b.drop_intents.append(sid)
        b.actions.append(ApplyCancel(sid, p["reason"], True, etag))
        return
    elif intent.kind == "choose" and etag is not None:
        b.drop_intents.append(sid)
        b.actions.append(ApplyChoose(sid, p["message"], etag, intent.observed_hash))
        return
    if desired is None or etag is None or "why" not in p:
        return  # nothing to write it back with yet: the intent waits
    b.drop_intents.append(sid)
    b.actions.append(Restore(sid, p["why"], p["what"]))
    b.writes.append(Update(sid, mirror.remote_id, _above(desired, mirror, b), etag))


def _breaker(b: Builder, inp: PlanInput, upcoming: int) -> Plan:
    """Apply verified deletions, unless too many vanished in the window: then hold them.

    Only removals a fresh read confirmed count (those applied in the sliding window plus
    those this cycle would apply); once it trips, every pending removal is held, due or
    not, so that ``breaker restore|release`` act on all of them.
    """
    rules: BreakerRules = inp.breaker
    upcoming += inp.unloaded_upcoming
    held = [i.session_id for i in inp.intents.values() if i.held]
    candidates = [sid for sid, _ in b.removals]
    leftover = dict(b.removals)
    recent = {sid for sid, at in inp.recent_removals.items() if inp.now - at < rules.window}
    # A listing planned in chunks: what it lacks elsewhere is as good as gone in this count.
    later = inp.unplanned_removals if candidates else 0
    count = len(recent | set(candidates)) + later
    population = upcoming + len(recent - set(inp.sessions))
    trip = count > rules.min_sessions and count > rules.fraction * max(population, 1)
    # A calendar that is suddenly empty is an accident until the admin says otherwise
    # (vdirsyncer's StorageEmpty), however few sessions it held.
    trip = trip or (rules.on_empty and upcoming >= 2 and len(candidates) + later >= upcoming)
    if inp.breaker_tripped or trip or held:
        known = {i.session_id: i for i in (*inp.intents.values(), *b.set_intents)}
        dropped = set(b.drop_intents)
        pending = {
            sid
            for sid, i in known.items()
            if i.kind == "removed" and sid not in dropped and (trip or sid in candidates)
        }
        hold = sorted((pending | set(candidates)) - set(held))
        b.set_intents = [i for i in b.set_intents if i.session_id not in hold]
        for sid in hold:
            first = known[sid].first_seen if sid in known else inp.now
            verified = {"verified": "yes"} if sid in candidates else {}
            b.set_intents.append(
                PendingIntent(sid, "removed", MappingProxyType(verified), REMOVED_HASH, first, True)
            )
        new_trip = trip and not inp.breaker_tripped
        return b.freeze(sorted(set(hold) | set(held)) if new_trip else hold, new_trip)
    for sid in candidates:
        b.drop_intents.append(sid)
        etag = leftover.get(sid)
        b.actions.append(ApplyCancel(sid, inp.default_cancel_reason, etag is not None, etag))
        b.removed_now.append((sid, inp.now))
    return b.freeze((), False)


def with_verifications(inp: PlanInput, checks: Mapping[str, Verification]) -> PlanInput:
    """The same input with fresh reads of vanished events."""
    return replace(inp, verifications=MappingProxyType(dict(checks)))
