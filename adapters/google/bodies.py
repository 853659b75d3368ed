"""Event bodies syncd sends to Google: a new event, the patch of syncd's own fields, and the
check that recognizes a write of ours that landed although its answer was lost.
"""

from __future__ import annotations

from typing import Any

from adapters.google.wire import SESSION_KEY, _plain, _utc, _when
from syncd.domain import eventtext
from syncd.ports import DesiredEvent

Json = dict[str, Any]


def new_body(remote_id: str, event: DesiredEvent) -> Json:
    """The whole body of a new event: syncd's fields, its notes block, its session key."""
    return {
        "id": remote_id,
        "iCalUID": event.uid,
        "start": {"dateTime": _utc(event.start)},
        "end": {"dateTime": _utc(event.end)},
        "summary": event.summary,
        "description": eventtext.merge_notes("", event.notes_block),
        "status": event.status,
        "transparency": "transparent" if event.transparent else "opaque",
        "sequence": event.sequence,
        "extendedProperties": {"private": {SESSION_KEY: event.session_id}},
    }


def patch_body(current: Json, event: DesiredEvent, revive: bool = False) -> Json:
    """The patch of the fields syncd owns; everything else the admin set is kept."""
    patch: Json = {
        "status": event.status,
        "transparency": "transparent" if event.transparent else "opaque",
        "sequence": max(int(current.get("sequence") or 0), event.sequence),
    }
    for key, when in (("start", event.start), ("end", event.end)):
        part: Json = {"dateTime": _utc(when)}
        if "date" in (current.get(key) or {}):
            part["date"] = None  # all-day → timed: Google needs the date cleared
        patch[key] = part
    if current.get("recurrence"):
        patch["recurrence"] = None
    old_summary = str(current.get("summary") or "")
    old_description = str(current.get("description") or "")
    summary = old_summary
    description = eventtext.merge_notes(_plain(old_description), event.notes_block)
    if event.strip_prefixes:
        summary, description = eventtext.strip_command(
            summary, description, event.strip_prefixes, event.summary
        )
    if revive or not summary.strip():
        summary = event.summary
    if summary != old_summary:
        patch["summary"] = summary
    if description != old_description:
        patch["description"] = description
    private = (current.get("extendedProperties") or {}).get("private") or {}
    if private.get(SESSION_KEY) != event.session_id:
        patch["extendedProperties"] = {"private": {SESSION_KEY: event.session_id}}
    return patch


def matches(body: Json, sent: Json) -> bool:
    """Whether ``body`` carries what a write ``sent`` (to recognize our own landed write)."""
    try:
        for key, value in sent.items():
            if key in ("start", "end"):
                same = _when(body.get(key))[0] == _when(value)[0]
            elif key in ("id", "iCalUID", "sequence", "extendedProperties"):
                same = True
            else:
                same = body.get(key) == value if value is not None else not body.get(key)
            if not same:
                return False
    except ValueError:
        return False
    return True
