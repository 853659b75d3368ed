"""The JSON contract of INTERFACE.md, shared by the CLI and the REST API."""

from __future__ import annotations

from typing import Any

from syncd.domain.availability import format_weekly
from syncd.domain.durations import format_duration
from syncd.domain.model import Admin, Session
from syncd.domain.timefmt import iso_utc


def session_json(s: Session) -> dict[str, Any]:
    """A session as INTERFACE.md spells it."""
    return {
        "id": s.id,
        "admin": s.admin_email,
        "customer": {"email": s.customer.email, "name": s.customer.name, "tz": s.customer.tz},
        "start": iso_utc(s.start),
        "end": iso_utc(s.end),
        "status": s.status.value,
        "sequence": s.sequence,
        "cancel_reason": s.cancel_reason,
        "choose_message": s.choose_message,
        "history": [
            {
                "at": iso_utc(h.at),
                "actor": h.actor.value,
                "action": h.action,
                "from": iso_utc(h.from_start) if h.from_start else None,
                "to": iso_utc(h.to_start) if h.to_start else None,
                "detail": h.detail,
            }
            for h in s.history
        ],
    }


def admin_json(a: Admin) -> dict[str, Any]:
    """An admin with their policy and availability."""
    return {
        "email": a.email,
        "name": a.name,
        "tz": a.tz,
        "reschedule_cutoff": format_duration(a.policy.reschedule_cutoff),
        "cancel_cutoff": format_duration(a.policy.cancel_cutoff),
        "min_notice": format_duration(a.policy.min_notice),
        "choose_link_ttl": format_duration(a.policy.choose_link_ttl),
        "weekly": format_weekly(a.weekly),
        "slot_minutes": int(a.slot.total_seconds() // 60),
    }
