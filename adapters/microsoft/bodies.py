"""Event bodies syncd sends to Graph: a new event, and the patch of syncd's own fields.

syncd owns start, end, show-as and its fenced block of the notes; it keeps the admin's
title, categories, reminders and their own notes. Notes are HTML (what Outlook writes):
syncd's block is written as one ``<div>`` per line, so Outlook shows it as plain lines, and
on update it is spliced into the admin's HTML in place, leaving their formatting alone.
Events are created without attendees: Exchange would send meeting requests of its own.
"""

from __future__ import annotations

import html
from typing import Any

from adapters.microsoft.wire import (
    SESSION_PROPERTY,
    UID_PROPERTY,
    body_text,
    parse_when,
    properties,
    text_to_html,
    utc_text,
)
from syncd.domain import eventtext
from syncd.ports import DesiredEvent

Json = dict[str, Any]


def show_as(event: DesiredEvent) -> str:
    """Graph's ``showAs`` for syncd's status and transparency."""
    if event.status == "tentative":
        return "tentative"
    if event.transparent or event.status == "cancelled":
        return "free"
    return "busy"


def _when(dt: Any) -> Json:
    return {"dateTime": utc_text(dt), "timeZone": "UTC"}


def _properties(event: DesiredEvent) -> list[Json]:
    return [
        {"id": SESSION_PROPERTY, "value": event.session_id},
        {"id": UID_PROPERTY, "value": event.uid},
    ]


def new_body(event: DesiredEvent, transaction_id: str) -> Json:
    """The whole body of a new event (``transactionId`` makes a retried POST harmless)."""
    return {
        "subject": event.summary,
        "body": {"contentType": "html", "content": text_to_html(event.notes_block)},
        "start": _when(event.start),
        "end": _when(event.end),
        "showAs": show_as(event),
        "isAllDay": False,
        "responseRequested": False,
        "transactionId": transaction_id,
        "singleValueExtendedProperties": _properties(event),
    }


def _block_html(block: str) -> str:
    return "".join(
        f"<div>{html.escape(line, quote=False) or '<br>'}</div>" for line in block.split("\n")
    )


def splice_block(content: str, block: str) -> str | None:
    """``content`` (HTML) with syncd's block replaced by ``block``; None when it cannot tell."""
    start = content.find(eventtext.BLOCK_START)
    if start < 0:
        close = content.lower().rfind("</body>")
        at = close if close >= 0 else len(content)
        gap = "<div><br></div>" if body_text({"contentType": "html", "content": content}) else ""
        return content[:at] + gap + _block_html(block) + content[at:]
    lower = content.lower()
    elem = max(lower.rfind("<div", 0, start), lower.rfind("<p", 0, start))
    end = content.find(eventtext.BLOCK_END, start)
    if elem < 0 or end < 0:
        return None
    if body_text({"contentType": "html", "content": content[elem:start] + "x"}) != "x":
        return None  # the block shares an element with the admin's words
    end += len(eventtext.BLOCK_END)
    closes = [i for i in (lower.find("</div>", end), lower.find("</p>", end)) if i >= 0]
    if not closes:
        return None
    stop = min(closes)
    stop += len("</div>") if lower.startswith("</div>", stop) else len("</p>")
    return content[:elem] + _block_html(block) + content[stop:]


def _new_notes(current: Json, admin_text: str, block: str, stripped: bool) -> Json:
    """The new ``body``: the admin's HTML with the block spliced in, else rebuilt from text."""
    want = f"{admin_text}\n\n{block}" if admin_text else block
    body = current.get("body") or {}
    if not stripped and str(body.get("contentType") or "").lower() == "html":
        spliced = splice_block(str(body.get("content") or ""), block)
        if spliced is not None:
            got_admin, got_block = eventtext.split_notes(
                body_text({"contentType": "html", "content": spliced})
            )
            if got_admin == admin_text and got_block == block:
                return {"contentType": "html", "content": spliced}
    return {"contentType": "html", "content": text_to_html(want)}


def patch_body(current: Json, event: DesiredEvent) -> Json:
    """The patch of the fields syncd owns; everything else the admin set is kept."""
    patch: Json = {"start": _when(event.start), "end": _when(event.end), "showAs": show_as(event)}
    if current.get("isAllDay"):
        patch["isAllDay"] = False
    if current.get("recurrence") or current.get("type") == "seriesMaster":
        patch["recurrence"] = None
    old_summary = str(current.get("subject") or "")
    old_text = body_text(current.get("body"))
    summary, text = old_summary, old_text
    if event.strip_prefixes:
        summary, text = eventtext.strip_command(summary, text, event.strip_prefixes, event.summary)
    if not summary.strip():
        summary = event.summary
    if summary != old_summary:
        patch["subject"] = summary
    admin_text, _ = eventtext.split_notes(text)
    stripped = eventtext.split_notes(old_text)[0] != admin_text
    if eventtext.merge_notes(old_text, event.notes_block) != old_text or stripped:
        patch["body"] = _new_notes(current, admin_text, event.notes_block, stripped)
    props = properties(current)
    if (
        props.get(SESSION_PROPERTY.lower()) != event.session_id
        or props.get(UID_PROPERTY.lower()) != event.uid
    ):
        patch["singleValueExtendedProperties"] = _properties(event)
    return patch


def landed(body: Json, sent: Json) -> bool:
    """Whether ``body`` carries what a PATCH ``sent`` (our own write, its answer lost)."""
    try:
        for key in ("start", "end"):
            if key in sent and parse_when(body.get(key)) != parse_when(sent[key]):
                return False
    except ValueError:
        return False
    if "showAs" in sent and body.get("showAs") != sent["showAs"]:
        return False
    return not ("subject" in sent and body.get("subject") != sent["subject"])
