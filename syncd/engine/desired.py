"""What a session's event should look like, and the normalized content hash.

The hash is what echo suppression compares: UTC instants, all-day and recurrence flags,
the status, and the admin's command line. Everything servers rewrite (DTSTAMP,
LAST-MODIFIED, PRODID, property order, VTIMEZONE) and every field syncd does not own
(title, location, the admin's notes, alarms) stays out of it.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from syncd.domain.eventtext import find_command, notes_block
from syncd.domain.model import Session, Status
from syncd.ports import DesiredEvent, EventContent


@dataclass(frozen=True)
class GestureRules:
    """Keywords and texts the planner needs (from ``[gestures]``)."""

    cancel_keywords: tuple[str, ...] = ("cancel:",)
    reschedule_keywords: tuple[str, ...] = ("reschedule:", "new time:")
    summary_template: str = "{customer_name} — 1:1 session"

    @property
    def all_keywords(self) -> tuple[str, ...]:
        """Every command prefix, for stripping a consumed command."""
        return self.cancel_keywords + self.reschedule_keywords


def _instant(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def content_hash(content: EventContent, rules: GestureRules, own_summary: str = "") -> str:
    """The normalized content of an event as syncd compares it.

    ``own_summary`` is the title syncd writes for the session: a title that is syncd's own
    text is never a command (a customer named "Cancel: Bob").
    """
    command = find_command(
        content.summary,
        content.description,
        rules.cancel_keywords,
        rules.reschedule_keywords,
        own_summary,
    )
    status = content.status.lower() if content.status else "confirmed"
    parts: Sequence[str] = (
        _instant(content.start),
        _instant(content.end),
        "allday" if content.all_day else "timed",
        "recurring" if content.recurring else "single",
        status,
        f"{command.kind}:{command.text}" if command else "",
    )
    if content.unreadable:  # appended only then: every stored hash stays valid
        parts = (*parts, f"unreadable:{content.unreadable}")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def desired_event(
    session: Session, uid: str, session_url: str, rules: GestureRules
) -> DesiredEvent:
    """The event syncd wants for ``session`` (a placeholder while the customer chooses)."""
    awaiting = session.status is Status.AWAITING_CUSTOMER
    lines = [
        f"Customer: {session.customer.name} <{session.customer.email}>",
        f"Customer time zone: {session.customer.tz}",
    ]
    if session_url:  # none when the REST API is off
        lines.append(f"Session: {session_url}")
    if awaiting:
        lines.append(f"Waiting for the customer to choose a new time: {session.choose_message}")
    lines.append("Drag to reschedule, delete to cancel, or write 'cancel: reason' or")
    lines.append("'reschedule: message' as the first line of these notes.")
    return DesiredEvent(
        session_id=session.id,
        uid=uid,
        start=session.start,
        end=session.end,
        summary=rules.summary_template.format(
            customer_name=session.customer.name, customer_email=session.customer.email
        ),
        notes_block=notes_block(lines),
        status="tentative" if awaiting else "confirmed",
        transparent=awaiting,
        sequence=session.sequence,
        # Every update strips a command line: one left behind by an interrupted write
        # would otherwise be read again as a new gesture after the admin's next edit.
        strip_prefixes=rules.all_keywords,
    )


@functools.lru_cache(maxsize=1024)
def desired_hash(event: DesiredEvent, rules: GestureRules) -> str:
    """The hash of what syncd expects to read back after writing ``event``.

    A pure function of two frozen values, kept for the last thousand: one cycle asks
    for a session's several times (the plan, the settle marks, the write's record), and an
    idle calendar's sessions come back each cycle.
    """
    return content_hash(desired_content(event), rules, event.summary)


def desired_content(event: DesiredEvent) -> EventContent:
    """The content syncd expects to read back after writing ``event``."""
    return EventContent(
        start=event.start,
        end=event.end,
        status=event.status,
        summary=event.summary,
        description=event.notes_block,
        uid=event.uid,
        session_id=event.session_id,
    )
