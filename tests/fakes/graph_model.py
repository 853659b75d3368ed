"""State of the Microsoft Graph fake: mailboxes, calendars, events, Deleted Items.

No HTTP here; :mod:`tests.fakes.graph_server` serves it and holds the lock around every call.
Event JSON follows Graph v1.0's ``event`` resource. Behaviour the documentation leaves open
is noted where it is chosen.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .graph_values import (
    GraphError,
    Json,
    body_preview,
    format_local,
    format_timestamp,
    has_offset,
    html_to_text,
    invalid_request,
    item_not_found,
    new_change_key,
    new_guid,
    new_item_id,
    normalize_property_id,
    parse_local,
    resolve_zone,
    text_to_html,
    to_instant,
    to_local,
)

# Properties a client may write, with the value Graph shows when never written.
DEFAULTS: Json = {
    "categories": [],
    "reminderMinutesBeforeStart": 15,
    "isReminderOn": True,
    "importance": "normal",
    "sensitivity": "normal",
    "responseRequested": True,
    "showAs": "busy",
    "isOnlineMeeting": False,
    "onlineMeetingProvider": "unknown",
    "allowNewTimeProposals": True,
    "hideAttendees": False,
    "recurrence": None,
    "location": {
        "displayName": "",
        "locationType": "default",
        "uniqueIdType": "unknown",
        "address": {},
        "coordinates": {},
    },
    "locations": [],
    "attendees": [],
}
SPECIAL = frozenset(
    {"subject", "body", "start", "end", "isAllDay", "singleValueExtendedProperties"}
)
READ_ONLY = frozenset(
    {
        "id", "createdDateTime", "lastModifiedDateTime", "changeKey", "originalStartTimeZone",
        "originalEndTimeZone", "iCalUId", "hasAttachments", "bodyPreview", "isCancelled",
        "isOrganizer", "seriesMasterId", "type", "webLink", "onlineMeetingUrl", "isDraft",
        "onlineMeeting", "responseStatus", "organizer", "transactionId",
    }
)  # fmt: skip
OWA = "https://outlook.office365.com/owa/"
PATTERNS = frozenset(
    {"daily", "weekly", "absoluteMonthly", "relativeMonthly", "absoluteYearly", "relativeYearly"}
)


@dataclass
class StoredEvent:
    """One event as Exchange keeps it: wall times in the zone the writer used."""

    id: str
    calendar_id: str
    start_local: datetime
    start_zone: str
    end_local: datetime
    end_zone: str
    subject: str = ""
    body: Json = field(default_factory=lambda: {"contentType": "html", "content": ""})
    is_all_day: bool = False
    is_cancelled: bool = False
    props: Json = field(default_factory=dict)
    ext: dict[str, str] = field(default_factory=dict)
    transaction_id: str | None = None
    fingerprint: str = ""
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    change_key: str = field(default_factory=new_change_key)
    seq: int = 0
    ical_uid: str = field(default_factory=lambda: "040000008200E00074C5B7101A82E008" + new_guid())
    deleted_occurrences: set[str] = field(default_factory=set)

    @property
    def etag(self) -> str:
        """``@odata.etag``: the changeKey as a weak entity tag."""
        return f'W/"{self.change_key}"'

    @property
    def start(self) -> datetime:
        """The UTC instant it starts."""
        return to_instant(self.start_local, self.start_zone)

    @property
    def end(self) -> datetime:
        """The UTC instant it ends."""
        return to_instant(self.end_local, self.end_zone)

    @property
    def recurrence(self) -> Json | None:
        """The patternedRecurrence, or None."""
        value = self.props.get("recurrence")
        return value if isinstance(value, dict) else None

    @property
    def kind(self) -> str:
        """The event type Graph reports."""
        return "seriesMaster" if self.recurrence else "singleInstance"


@dataclass(frozen=True)
class Occurrence:
    """One instance of a series inside a calendar view (never stored as such)."""

    id: str
    master: StoredEvent
    original_date: str
    start_local: datetime
    end_local: datetime

    @property
    def start(self) -> datetime:
        """The UTC instant it starts."""
        return to_instant(self.start_local, self.master.start_zone)

    @property
    def end(self) -> datetime:
        """The UTC instant it ends."""
        return to_instant(self.end_local, self.master.end_zone)


@dataclass
class StoredCalendar:
    """A calendar folder; ``tombstones`` remembers when events left it (delta)."""

    id: str
    name: str
    is_default: bool = False
    color: str = "auto"
    change_key: str = field(default_factory=new_change_key)
    events: dict[str, StoredEvent] = field(default_factory=dict)
    tombstones: dict[str, int] = field(default_factory=dict)

    def resource(self, owner: Mailbox) -> Json:
        """The calendar resource as Graph returns it."""
        return {
            "id": self.id,
            "name": self.name,
            "color": self.color,
            "hexColor": "",
            "isDefaultCalendar": self.is_default,
            "changeKey": self.change_key,
            "canShare": True,
            "canViewPrivateItems": True,
            "canEdit": True,
            "allowedOnlineMeetingProviders": ["teamsForBusiness"],
            "defaultOnlineMeetingProvider": "teamsForBusiness",
            "isTallyingResponses": True,
            "isRemovable": not self.is_default,
            "owner": {"name": owner.display_name, "address": owner.upn},
        }


def _fingerprint(cal_id: str, body: Json) -> str:
    return cal_id + "|" + json.dumps(body, sort_keys=True, default=str)


def complete_recurrence(value: Any, start: datetime, zone: str) -> Json | None:
    """Validate and complete a patternedRecurrence the way Graph echoes it back."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("pattern"), dict):
        raise invalid_request("The recurrence pattern is missing.", "ErrorInvalidRecurrence")
    pattern: Json = {
        "type": None, "interval": 1, "month": 0, "dayOfMonth": 0, "daysOfWeek": [],
        "firstDayOfWeek": "sunday", "index": "first",
    }  # fmt: skip
    pattern.update(value["pattern"])
    rng = {
        "type": "noEnd", "startDate": start.date().isoformat(), "endDate": "0001-01-01",
        "recurrenceTimeZone": zone, "numberOfOccurrences": 0,
    }  # fmt: skip
    rng.update(value.get("range") or {})
    if pattern["type"] not in PATTERNS or rng["type"] not in ("endDate", "noEnd", "numbered"):
        raise invalid_request("The recurrence pattern is not valid.", "ErrorInvalidRecurrence")
    if pattern["type"] == "weekly" and not pattern["daysOfWeek"]:
        raise invalid_request("A weekly recurrence needs daysOfWeek.", "ErrorInvalidRecurrence")
    try:
        date.fromisoformat(str(rng["startDate"]))
        if rng["type"] == "endDate":
            date.fromisoformat(str(rng["endDate"]))
    except ValueError as err:
        raise invalid_request(
            "The recurrence range is not valid.", "ErrorInvalidRecurrence"
        ) from err
    return {"pattern": pattern, "range": rng}


class Mailbox:
    """One user's mailbox: calendars, Deleted Items, transactionIds. Not thread-safe."""

    def __init__(self, upn: str, display_name: str, tenant_id: str, time_zone: str) -> None:
        resolve_zone(time_zone)
        self.upn = upn
        self.user_id = new_guid()
        self.display_name = display_name
        self.tenant_id = tenant_id
        self.time_zone = time_zone  # the mailbox's regional setting (what Outlook writes)
        self.calendars: dict[str, StoredCalendar] = {}
        self.deleted_items: dict[str, StoredEvent] = {}
        self.transactions: dict[str, str] = {}
        self.occurrences: dict[str, tuple[str, str]] = {}
        self.seq = 0
        cal = StoredCalendar(new_item_id("AAMkAGI2Cal"), "Calendar", is_default=True)
        self.calendars[cal.id] = cal

    # -- calendars ----------------------------------------------------------------------------
    @property
    def default_calendar(self) -> StoredCalendar:
        """The calendar named "Calendar" every mailbox has."""
        return next(c for c in self.calendars.values() if c.is_default)

    def calendar(self, cal_id: str | None) -> StoredCalendar:
        """A calendar by id (``None``: the default calendar); 404 when unknown."""
        if cal_id is None:
            return self.default_calendar
        cal = self.calendars.get(cal_id)
        if cal is None:
            raise item_not_found()
        return cal

    def create_calendar(self, body: Json) -> StoredCalendar:
        """POST /calendars: a name is required and must be unique (409 ErrorFolderExists)."""
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise invalid_request("The calendar name is required.", "ErrorInvalidParameter")
        if any(c.name.lower() == name.lower() for c in self.calendars.values()):
            raise GraphError(
                409, "ErrorFolderExists", "A folder with the specified name already exists."
            )
        cal = StoredCalendar(new_item_id("AAMkAGI2Cal"), name, color=str(body.get("color", "auto")))
        self.calendars[cal.id] = cal
        return cal

    def delete_calendar(self, cal_id: str) -> None:
        """DELETE /calendars/{id}; the default calendar cannot go."""
        cal = self.calendar(cal_id)
        if cal.is_default:
            raise invalid_request(
                "The default calendar cannot be deleted.", "ErrorCannotDeleteObject"
            )
        del self.calendars[cal_id]

    # -- events -------------------------------------------------------------------------------
    def find(
        self, event_id: str, cal_id: str | None = None, *, any_calendar: bool = True
    ) -> StoredEvent:
        """A live event by id, in one calendar or (``any_calendar``) anywhere in the mailbox."""
        cals = (
            self.calendars.values() if any_calendar and cal_id is None else [self.calendar(cal_id)]
        )
        for cal in cals:
            if event_id in cal.events:
                return cal.events[event_id]
        raise item_not_found()

    def touch(self, ev: StoredEvent) -> None:
        """Every change: a new changeKey (so a new @odata.etag), lastModified, delta sequence."""
        self.seq += 1
        ev.seq = self.seq
        ev.change_key = new_change_key()
        ev.modified = max(datetime.now(UTC), ev.modified + timedelta(microseconds=1))

    def create_event(self, cal: StoredCalendar, body: Json) -> tuple[StoredEvent, bool]:
        """POST .../events. Returns (event, created); a transactionId retry returns the first."""
        tid = body.get("transactionId")
        fingerprint = _fingerprint(cal.id, body)
        if tid is not None:
            if not isinstance(tid, str) or not tid:
                raise invalid_request("transactionId must be a non-empty string.")
            existing_id = self.transactions.get(tid)
            existing = self._live(existing_id) if existing_id else None
            if existing is not None:
                if existing.fingerprint == fingerprint:
                    return existing, False
                raise invalid_request(
                    f"An item with the transaction id '{tid}' already exists with other content.",
                    "ErrorDuplicateTransactionId",
                )
        for key in ("start", "end"):
            if not isinstance(body.get(key), dict):
                raise invalid_request(f"The '{key}' property is required.", "ErrorInvalidParameter")
        ev = StoredEvent(new_item_id(), cal.id, datetime.min, "UTC", datetime.min, "UTC")
        self.apply(ev, body)
        ev.transaction_id, ev.fingerprint = tid, fingerprint
        ev.created = datetime.now(UTC)
        self.touch(ev)
        cal.events[ev.id] = ev
        cal.tombstones.pop(ev.id, None)
        if tid is not None:
            self.transactions[tid] = ev.id
        return ev, True

    def _live(self, event_id: str) -> StoredEvent | None:
        for cal in self.calendars.values():
            if event_id in cal.events:
                return cal.events[event_id]
        return None

    def apply(self, ev: StoredEvent, body: Json) -> None:
        """Write client properties onto an event (POST body or PATCH), all validated first."""
        staged = copy.deepcopy(ev)
        for key, value in body.items():
            if key.startswith("@odata") or key in READ_ONLY:
                continue
            if key in SPECIAL:
                continue
            if key not in DEFAULTS:
                raise GraphError(
                    400,
                    "RequestBodyRead",
                    f"The property '{key}' does not exist on type 'microsoft.graph.event'. Make "
                    "sure to only use property names that are defined by the type or mark the "
                    "type as open type.",
                )
            staged.props[key] = copy.deepcopy(value)
        if "subject" in body:
            staged.subject = str(body["subject"] or "")
        if "body" in body:
            b = body["body"] or {}
            kind = str(b.get("contentType", "text")).lower()
            if kind not in ("text", "html"):
                raise invalid_request(
                    f"Invalid body contentType '{kind}'.", "ErrorInvalidParameter"
                )
            staged.body = {"contentType": kind, "content": str(b.get("content") or "")}
        for key in ("start", "end"):
            if key in body:
                part = body[key]
                if not isinstance(part, dict):
                    raise invalid_request(
                        f"The '{key}' property is not valid.", "ErrorInvalidParameter"
                    )
                zone = str(part.get("timeZone") or "UTC")
                resolve_zone(zone)
                local = parse_local(part.get("dateTime"), key)
                if has_offset(part.get("dateTime")):  # an instant: shown in the given zone
                    local = to_local(local.replace(tzinfo=UTC), zone)
                setattr(staged, f"{key}_local", local)
                setattr(staged, f"{key}_zone", zone)
        if "isAllDay" in body:
            staged.is_all_day = bool(body["isAllDay"])
        if "singleValueExtendedProperties" in body:
            for prop in body["singleValueExtendedProperties"] or []:
                pid = normalize_property_id((prop or {}).get("id"))
                staged.ext[pid] = str(prop.get("value"))
        if "recurrence" in body:
            staged.props["recurrence"] = complete_recurrence(
                body["recurrence"], staged.start_local, staged.start_zone
            )
        self.validate(staged)
        ev.__dict__.update(staged.__dict__)

    @staticmethod
    def validate(ev: StoredEvent) -> None:
        """Shape rules Exchange enforces: end not before start; all-day on midnights."""
        if ev.end < ev.start:
            raise invalid_request(
                "Your request can't be completed. The start time must be before the end time.",
            )
        if ev.is_all_day:
            midnight = all(t.time() == datetime.min.time() for t in (ev.start_local, ev.end_local))
            if not midnight or ev.end_local <= ev.start_local:
                raise invalid_request(
                    "Your request can't be completed. The start and end times of an all-day "
                    "event must be midnight, at least a day apart.",
                )

    def check_if_match(self, ev: StoredEvent, if_match: str | None) -> None:
        """Conditional writes on ``@odata.etag``; a stale one is a 412."""
        if if_match is None or if_match.strip() == "*":
            return
        if if_match.strip() not in (ev.etag, ev.change_key, f'"{ev.change_key}"'):
            raise GraphError(
                412,
                "ErrorIrresolvableConflict",  # what Exchange answers to a stale change key
                "The send or update operation could not be performed because the change key "
                "passed in the request does not match the current change key for the item.",
            )

    def update_event(self, ev: StoredEvent, patch: Json, if_match: str | None) -> StoredEvent:
        """PATCH: only the properties given change; every PATCH is a new version."""
        self.check_if_match(ev, if_match)
        self.apply(ev, patch)
        self.touch(ev)
        return ev

    def delete_event(self, ev: StoredEvent, if_match: str | None = None) -> None:
        """DELETE moves the event to Deleted Items; its calendar keeps a tombstone for delta."""
        self.check_if_match(ev, if_match)
        cal = self.calendars[ev.calendar_id]
        del cal.events[ev.id]
        self.seq += 1
        cal.tombstones[ev.id] = self.seq
        self.deleted_items[ev.id] = ev

    def restore(self, event_id: str, *, new_id: bool = True) -> StoredEvent:
        """Move an event back from Deleted Items, by default under a new id (as Outlook may)."""
        ev = self.deleted_items.pop(event_id, None)
        if ev is None:
            raise KeyError(f"{event_id} is not in Deleted Items of {self.upn}")
        cal = self.calendars.get(ev.calendar_id) or self.default_calendar
        if new_id:
            ev.id = new_item_id()
        ev.calendar_id = cal.id
        self.touch(ev)
        cal.events[ev.id] = ev
        cal.tombstones.pop(ev.id, None)
        if ev.transaction_id:
            self.transactions[ev.transaction_id] = ev.id
        return ev


def render_event(
    ev: StoredEvent,
    owner: Mailbox,
    *,
    zone: str | None,
    body_type: str | None = None,
    props: list[str] | None = None,
    select: set[str] | None = None,
    occurrence: Occurrence | None = None,
    delta: bool = False,
) -> Json:
    """The event resource. ``zone`` None keeps the event's own zones (write responses)."""

    def when(local: datetime, own: str) -> Json:
        if zone is None:
            return {"dateTime": format_local(local), "timeZone": own}
        # All-day events float: their dates stay whatever zone the reader asks for.
        shown = local if ev.is_all_day else to_local(to_instant(local, own), zone)
        return {"dateTime": format_local(shown), "timeZone": zone}

    start_local = occurrence.start_local if occurrence else ev.start_local
    end_local = occurrence.end_local if occurrence else ev.end_local
    kind = "occurrence" if occurrence else ev.kind
    body = dict(ev.body)
    if body_type == "text" and body["contentType"] == "html":
        body = {"contentType": "text", "content": html_to_text(body["content"])}
    elif body_type != "text" and body["contentType"] == "text":
        body = {"contentType": "html", "content": text_to_html(body["content"])}
    eid = occurrence.id if occurrence else ev.id
    out: Json = {"@odata.type": "#microsoft.graph.event"} if delta else {}
    out.update(
        {
            "@odata.etag": ev.etag,
            "id": eid,
            "createdDateTime": format_timestamp(ev.created),
            "lastModifiedDateTime": format_timestamp(ev.modified),
            "changeKey": ev.change_key,
            "categories": copy.deepcopy(ev.props.get("categories", [])),
            "transactionId": ev.transaction_id,
            "originalStartTimeZone": ev.start_zone,
            "originalEndTimeZone": ev.end_zone,
            "iCalUId": ev.ical_uid,
            "reminderMinutesBeforeStart": ev.props.get("reminderMinutesBeforeStart", 15),
            "isReminderOn": ev.props.get("isReminderOn", True),
            "hasAttachments": False,
            "subject": ev.subject,
            "bodyPreview": body_preview(ev.body),
            "isAllDay": ev.is_all_day,
            "isCancelled": ev.is_cancelled,
            "isOrganizer": True,
            "seriesMasterId": ev.id if occurrence else None,
            "type": kind,
            "webLink": f"{OWA}?itemid={eid}&exvsurl=1&path=/calendar/item",
            "onlineMeetingUrl": None,
            "isDraft": False,
            "onlineMeeting": None,
            "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
            "body": body,
            "start": when(start_local, ev.start_zone),
            "end": when(end_local, ev.end_zone),
            "organizer": {"emailAddress": {"name": owner.display_name, "address": owner.upn}},
        }
    )
    for key, default in DEFAULTS.items():
        out.setdefault(key, copy.deepcopy(ev.props.get(key, default)))
    if occurrence:
        out["recurrence"] = None
    if props:
        found = [{"id": p, "value": ev.ext[p]} for p in props if p in ev.ext]
        if found:  # Graph omits the collection when nothing matches the $expand filter
            out["singleValueExtendedProperties"] = found
    if select:
        keep = {s.lower() for s in select} | {"id", "@odata.etag", "@odata.type"}
        out = {
            k: v
            for k, v in out.items()
            if k.lower() in keep or k == "singleValueExtendedProperties"
        }
    return out
