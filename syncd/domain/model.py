"""Frozen value types of the domain."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class Status(StrEnum):
    """Where a session is in its life."""

    BOOKED = "booked"
    AWAITING_CUSTOMER = "awaiting_customer"
    CANCELED = "canceled"


class Actor(StrEnum):
    """Who caused a transition; recorded in the session's history."""

    CUSTOMER = "customer"
    ADMIN = "admin"
    ADMIN_CALENDAR = "admin-calendar"
    API = "api"
    SYSTEM = "system"


ADMIN_ACTORS = frozenset({Actor.ADMIN, Actor.ADMIN_CALENDAR})


class NoticeKind(StrEnum):
    """Every email syncd composes: to the customer, then to the admin."""

    BOOKED = "booked"
    RESCHEDULED = "rescheduled"
    CANCELED = "canceled"
    CHOOSE = "choose"
    CONFIRMED = "confirmed"
    GESTURE_UNDONE = "gesture_undone"
    BREAKER_TRIPPED = "breaker_tripped"
    LINK_EXPIRED = "link_expired"
    AUTH_REVOKED = "auth_revoked"
    CUSTOMER_CHOSE = "customer_chose"
    WRITE_REFUSED = "write_refused"


CUSTOMER_NOTICES = frozenset(
    {
        NoticeKind.BOOKED,
        NoticeKind.RESCHEDULED,
        NoticeKind.CANCELED,
        NoticeKind.CHOOSE,
        NoticeKind.CONFIRMED,
    }
)


@dataclass(frozen=True)
class Policy:
    """An admin's cut-offs; they bind customers, never the admin."""

    reschedule_cutoff: timedelta = timedelta(hours=24)
    cancel_cutoff: timedelta = timedelta(hours=24)
    min_notice: timedelta = timedelta(hours=2)
    choose_link_ttl: timedelta = timedelta(days=7)
    default_cancel_reason: str = "Your host had to cancel this session."


@dataclass(frozen=True)
class WeeklyWindow:
    """Open hours on one weekday (0 = Monday), in the admin's time zone."""

    weekday: int
    start: time
    end: time


@dataclass(frozen=True)
class Admin:
    """A coach or consultant whose sessions syncd mirrors."""

    email: str
    name: str
    tz: str
    policy: Policy = field(default_factory=Policy)
    weekly: tuple[WeeklyWindow, ...] = ()
    slot: timedelta = timedelta(minutes=60)


@dataclass(frozen=True)
class Customer:
    """The person who booked; emails speak their time zone."""

    email: str
    name: str
    tz: str


@dataclass(frozen=True)
class HistoryEntry:
    """One line of a session's history."""

    at: datetime
    actor: Actor
    action: str
    from_start: datetime | None = None
    to_start: datetime | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Session:
    """A booked 1-to-1 session; ``start``/``end`` are UTC instants."""

    id: str
    admin_email: str
    customer: Customer
    start: datetime
    end: datetime
    status: Status
    sequence: int = 0
    cancel_reason: str | None = None
    choose_message: str | None = None
    history: tuple[HistoryEntry, ...] = ()

    @property
    def live(self) -> bool:
        """Booked or waiting for the customer to pick a time: it holds the slot."""
        return self.status is not Status.CANCELED


@dataclass(frozen=True)
class Notice:
    """A notification a transition causes; the store turns it into an outbox row."""

    kind: NoticeKind
    session_id: str | None
    data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def to_customer(self) -> bool:
        """True for customer emails, false for alerts to the admin."""
        return self.kind in CUSTOMER_NOTICES


@dataclass(frozen=True)
class Transition:
    """The result of one action: the session after it, its history line and its notices."""

    before: Session | None
    after: Session
    entry: HistoryEntry
    notices: tuple[Notice, ...]
