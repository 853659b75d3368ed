"""The planner's frozen inputs and outputs (what :mod:`syncd.engine.planner` reads and decides)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Literal

from syncd.domain.model import Session
from syncd.engine.desired import GestureRules
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
    #: The highest SEQUENCE written or read there (-1: none known): a write goes above it.
    top_sequence: int = -1
    #: The times syncd last wrote or adopted there (None: not known).
    written_times: tuple[datetime, datetime] | None = None


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

    Only removals a fresh read confirmed count, over a sliding ``window``: those applied
    in the window plus those about to be. With ``on_empty``, so does a calendar whose
    every upcoming session (two or more) vanished at once.
    """

    min_sessions: int = 3
    fraction: float = 0.3
    on_empty: bool = True
    window: timedelta = timedelta(minutes=15)


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
    #: Removals applied lately in this calendar (session id → when), for the breaker's window.
    recent_removals: Mapping[str, datetime] = field(default_factory=lambda: MappingProxyType({}))
    #: Upcoming mirrored sessions the runner did not load (a cycle that loads only what
    #: changed): the breaker counts them in the calendar's population.
    unloaded_upcoming: int = 0
    #: Events a full listing lacks whose sessions later passes plan (a listing compared in
    #: chunks): with a removal confirmed in this pass, the breaker counts them as removed.
    unplanned_removals: int = 0


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
    #: Removals applied by this plan (session id, when), for the breaker's window.
    removed_now: tuple[tuple[str, datetime], ...] = ()
    #: SEQUENCEs read above a mirror's ``top_sequence`` (session id, SEQUENCE).
    sequences: tuple[tuple[str, int], ...] = ()


@dataclass
class Builder:
    set_intents: list[PendingIntent] = field(default_factory=list)
    drop_intents: list[str] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)
    adopt: list[tuple[str, str, str]] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    verify: list[str] = field(default_factory=list)
    removals: list[tuple[str, str | None]] = field(default_factory=list)
    rehome: list[tuple[str, str]] = field(default_factory=list)
    removed_now: list[tuple[str, datetime]] = field(default_factory=list)
    sequences: list[tuple[str, int]] = field(default_factory=list)

    def freeze(self, hold: Sequence[str], trip: bool) -> Plan:
        """The plan built so far, with the breaker's decision."""
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
            tuple(self.removed_now),
            tuple(self.sequences),
        )
