"""A person editing their calendar in Outlook, for tests of the Graph fake.

Outlook writes straight to the mailbox: no If-Match, but every edit is a new version (new
changeKey, so a new ``@odata.etag``, and a new lastModifiedDateTime), shows up in delta and
fires change notifications. Times are written as wall times in the person's Windows zone;
notes are written as HTML, one ``<div>`` per typed line.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, timedelta

from .graph_model import Mailbox, StoredEvent, complete_recurrence
from .graph_server import FakeGraph
from .graph_values import has_offset, html_to_text, outlook_html, parse_local, to_local

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _wall(value: str | datetime, zone: str) -> datetime:
    """A wall time in ``zone``: naive values are taken as such, aware ones are converted."""
    if isinstance(value, str):
        local = parse_local(value, "start")
        return to_local(local.replace(tzinfo=UTC), zone) if has_offset(value) else local
    return to_local(value, zone) if value.tzinfo is not None else value


class OutlookUser:
    """The owner of a mailbox, clicking around in Outlook."""

    def __init__(self, fake: FakeGraph, upn: str, *, zone: str | None = None) -> None:
        self.fake = fake
        self.upn = upn
        self.zone = zone or fake.mailbox(upn).time_zone  # e.g. "W. Europe Standard Time"

    def drag(
        self,
        event_id: str,
        new_start: str | datetime,
        new_end: str | datetime | None = None,
        *,
        zone: str | None = None,
    ) -> StoredEvent:
        """Drag (or resize) the event; Outlook stores the new times in the user's zone.

        Without ``new_end`` the duration is kept. Naive values are wall times in the zone.
        """
        where = zone or self.zone

        def mutate(_: Mailbox, ev: StoredEvent) -> None:
            duration = ev.end - ev.start
            start = _wall(new_start, where)
            end = _wall(new_end, where) if new_end is not None else start + duration
            ev.start_local, ev.start_zone, ev.end_local, ev.end_zone = start, where, end, where

        return self.fake.human_change(self.upn, event_id, mutate)

    def drag_in_zone(
        self,
        event_id: str,
        new_start: str | datetime,
        new_end: str | datetime | None = None,
        *,
        zone: str,
    ) -> StoredEvent:
        """Drag while Outlook runs in another zone (a laptop abroad): times stored in ``zone``."""
        return self.drag(event_id, new_start, new_end, zone=zone)

    def delete(self, event_id: str) -> None:
        """Delete: the event goes to Deleted Items."""
        self.fake.human_delete(self.upn, event_id)

    def restore(self, event_id: str) -> str:
        """Restore from Deleted Items; returns the (new) id Outlook gives it."""
        return self.fake.restore_from_deleted_items(event_id, upn=self.upn)

    def edit_subject(self, event_id: str, subject: str) -> StoredEvent:
        """Retype the title."""

        def mutate(_: Mailbox, ev: StoredEvent) -> None:
            ev.subject = subject

        return self.fake.human_change(self.upn, event_id, mutate)

    def edit_body(self, event_id: str, lines: list[str] | str) -> StoredEvent:
        """Replace the notes; Outlook saves ``<html>...<body><div>line</div>...</body></html>``."""
        typed = lines.splitlines() if isinstance(lines, str) else list(lines)

        def mutate(_: Mailbox, ev: StoredEvent) -> None:
            ev.body = {"contentType": "html", "content": outlook_html(typed)}

        return self.fake.human_change(self.upn, event_id, mutate)

    def type_first_line(self, event_id: str, line: str) -> StoredEvent:
        """Type a new first line (``cancel: sick``) above the existing notes, inside the HTML."""

        def mutate(_: Mailbox, ev: StoredEvent) -> None:
            content = ev.body["content"]
            if ev.body["contentType"] != "html":
                content = outlook_html(content.splitlines() if content else [])
            div = f"<div>{html.escape(line, quote=False)}</div>"
            match = re.search(r"<body[^>]*>\s*", content, re.I)
            if match:
                content = content[: match.end()] + div + content[match.end() :]
            else:
                content = outlook_html([line]) if not content else div + content
            ev.body = {"contentType": "html", "content": content}

        return self.fake.human_change(self.upn, event_id, mutate)

    def body_text(self, event_id: str) -> str:
        """The notes as the person reads them."""
        ev = self.fake.stored(self.upn, event_id)
        return (
            html_to_text(ev.body["content"])
            if ev.body["contentType"] == "html"
            else ev.body["content"]
        )

    def make_all_day(self, event_id: str, day: date | str | None = None) -> StoredEvent:
        """Tick "All day": midnight to midnight of ``day`` (default: the event's day)."""

        def mutate(_: Mailbox, ev: StoredEvent) -> None:
            first = (
                date.fromisoformat(day)
                if isinstance(day, str)
                else day or to_local(ev.start, self.zone).date()
            )
            ev.is_all_day = True
            ev.start_local = datetime.combine(first, datetime.min.time())
            ev.end_local = ev.start_local + timedelta(days=1)
            ev.start_zone = ev.end_zone = self.zone

        return self.fake.human_change(self.upn, event_id, mutate)

    def make_recurring(
        self, event_id: str, *, pattern: str = "weekly", count: int = 5
    ) -> StoredEvent:
        """Make the event repeat (weekly on its weekday, or daily) for ``count`` occurrences."""

        def mutate(_: Mailbox, ev: StoredEvent) -> None:
            local = ev.start_local
            pat: dict[str, object] = {"type": pattern, "interval": 1}
            if pattern == "weekly":
                pat["daysOfWeek"] = [WEEKDAYS[local.weekday()]]
            rng = {
                "type": "numbered",
                "startDate": local.date().isoformat(),
                "numberOfOccurrences": count,
            }
            ev.props["recurrence"] = complete_recurrence(
                {"pattern": pat, "range": rng}, local, ev.start_zone
            )

        return self.fake.human_change(self.upn, event_id, mutate)

    def set_cancelled(self, event_id: str, cancelled: bool = True) -> StoredEvent:
        """Mark the event canceled (what a meeting cancellation leaves in the calendar)."""

        def mutate(_: Mailbox, ev: StoredEvent) -> None:
            ev.is_cancelled = cancelled

        return self.fake.human_change(self.upn, event_id, mutate)
