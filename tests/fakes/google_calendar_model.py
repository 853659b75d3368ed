"""State and semantics of the Google Calendar fake: calendars, events, sync tokens.

Pure in-memory logic with no HTTP; :mod:`tests.fakes.google_calendar` serves it. The caller
holds the lock. Behaviour follows Google's public Calendar API v3 documentation; where the
documentation is silent the choice is noted in a comment.
"""

from __future__ import annotations

import base64
import copy
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrulestr

Json = dict[str, Any]

EVENT_ID_RE = re.compile(r"^[a-v0-9]{5,1024}$")
# Fields the server owns: ignored when a client sends them.
READ_ONLY_EVENT_FIELDS = frozenset(
    {"kind", "etag", "id", "htmlLink", "created", "updated", "creator", "organizer", "iCalUID"}
)
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    410: "FAILED_PRECONDITION",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
MAX_INSTANCES = 500


class ApiError(Exception):
    """An error response in Google's JSON error shape."""

    def __init__(
        self, code: int, reason: str, message: str, *, domain: str = "global", **extra: str
    ) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.extra = extra

    def body(self) -> Json:
        """The JSON document Google sends for this error."""
        item: Json = {"domain": self.domain, "reason": self.reason, "message": self.message}
        item.update(self.extra)
        err: Json = {"code": self.code, "message": self.message, "errors": [item]}
        if self.code in STATUS_NAMES:
            err["status"] = STATUS_NAMES[self.code]
        return {"error": err}


def not_found() -> ApiError:
    return ApiError(404, "notFound", "Not Found")


def gone() -> ApiError:
    return ApiError(410, "deleted", "Resource has been deleted")


def bad_request(message: str, reason: str = "invalid") -> ApiError:
    return ApiError(400, reason, message)


def rfc3339_ms(ts: float) -> str:
    """Google's `updated`/`created` format: UTC with milliseconds."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_instant(value: str, what: str) -> datetime:
    """Parse an RFC 3339 timestamp that must carry an offset (timeMin, updatedMin...)."""
    try:
        dt = datetime.fromisoformat(value)
    except ValueError as err:
        raise bad_request(f"Invalid value for: {what}", "badRequest") from err
    if dt.tzinfo is None:
        raise bad_request(f"Invalid value for: {what}", "badRequest")
    return dt


def format_local(dt: datetime, tz_name: str) -> str:
    """Render an instant the way Google does: in the zone, whole seconds, Z for UTC."""
    local = dt.astimezone(zone(tz_name)).replace(microsecond=0)
    if tz_name in ("UTC", "Etc/UTC", "GMT"):
        return local.strftime("%Y-%m-%dT%H:%M:%SZ")
    return local.isoformat()


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise bad_request(f"Invalid time zone definition: {name}") from err


@dataclass
class StoredEvent:
    """One event as the server keeps it; `body` is the resource as returned."""

    body: Json
    change_seq: int
    send_updates: str | None = None
    purged_status: int | None = None  # 404/410 once purged, else None

    @property
    def cancelled(self) -> bool:
        return bool(self.body.get("status") == "cancelled")


@dataclass
class StoredCalendar:
    id: str
    summary: str
    time_zone: str
    etag: str
    description: str | None = None
    events: dict[str, StoredEvent] = field(default_factory=dict)
    token_epoch: int = 0

    def resource(self) -> Json:
        res: Json = {
            "kind": "calendar#calendar",
            "etag": self.etag,
            "id": self.id,
            "summary": self.summary,
            "timeZone": self.time_zone,
            "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
        }
        if self.description:
            res["description"] = self.description
        return res


def merge_patch(target: Json, patch: Json) -> Json:
    """Google patch semantics: objects merge recursively, arrays replace, null deletes."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            base = dict(out[key])
            # start/end: date and dateTime are exclusive; setting one clears the other.
            if key in ("start", "end", "originalStartTime"):
                if "date" in value:
                    base.pop("dateTime", None)
                if "dateTime" in value:
                    base.pop("date", None)
            out[key] = merge_patch(base, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tombstone(body: Json) -> Json:
    """What a list returns for a deleted event: only `id` is guaranteed by Google."""
    stub: Json = {k: body[k] for k in ("kind", "etag", "id", "status") if k in body}
    for key in ("recurringEventId", "originalStartTime"):
        if key in body:
            stub[key] = body[key]
    return stub


class CalendarState:
    """All calendars of one fake account. Not thread-safe: the server holds its lock."""

    def __init__(self, owner: str, time_zone: str) -> None:
        self.owner = owner
        self.calendars: dict[str, StoredCalendar] = {}
        self._seq = 0
        self._last_etag = 0
        self._page_snapshots: dict[str, tuple[list[Json], str]] = {}
        self.short_pages = False  # first page of every listing comes back empty
        self.add_calendar(owner, "Calendar", time_zone)

    # -- counters -------------------------------------------------------------------------
    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def next_etag(self) -> str:
        """A quoted etag like Google's, strictly increasing (microseconds since epoch)."""
        self._last_etag = max(self._last_etag + 1000, int(time.time() * 1_000_000))
        return f'"{self._last_etag}"'

    # -- calendars ------------------------------------------------------------------------
    def add_calendar(self, cal_id: str, summary: str, time_zone: str) -> StoredCalendar:
        zone(time_zone)
        cal = StoredCalendar(cal_id, summary, time_zone, self.next_etag())
        self.calendars[cal_id] = cal
        return cal

    def calendar(self, cal_id: str) -> StoredCalendar:
        cal = self.calendars.get(self.owner if cal_id == "primary" else cal_id)
        if cal is None:
            raise not_found()
        return cal

    def insert_calendar(self, body: Json) -> Json:
        if not body.get("summary"):
            raise bad_request("Missing title.", "required")
        cal_id = f"c_{secrets.token_hex(16)}@group.calendar.google.com"
        cal = self.add_calendar(cal_id, str(body["summary"]), body.get("timeZone") or "UTC")
        cal.description = body.get("description")
        return cal.resource()

    # -- events ---------------------------------------------------------------------------
    def find(self, cal: StoredCalendar, event_id: str) -> StoredEvent:
        ev = cal.events.get(event_id)
        if ev is None:
            raise not_found()
        if ev.purged_status is not None:
            raise gone() if ev.purged_status == 410 else not_found()
        return ev

    def _normalize_times(self, cal: StoredCalendar, body: Json) -> None:
        """Validate start/end and render dateTime values in the event's or calendar's zone."""
        for key in ("start", "end"):
            if not isinstance(body.get(key), dict):
                raise bad_request(f"Missing {key} time.", "required")
        kinds = {("date" in body[k], "dateTime" in body[k]) for k in ("start", "end")}
        if kinds not in ({(True, False)}, {(False, True)}):
            raise bad_request("Start and end times must either both be date or both be dateTime.")
        if "date" in body["start"]:
            try:
                start_d = date.fromisoformat(body["start"]["date"])
                end_d = date.fromisoformat(body["end"]["date"])
            except (TypeError, ValueError) as err:
                raise bad_request("Invalid date value.") from err
            if end_d <= start_d:
                raise bad_request("The specified time range is empty.", "timeRangeEmpty")
            return
        instants = []
        for key in ("start", "end"):
            part = body[key]
            tz_name = part.get("timeZone")
            try:
                dt = datetime.fromisoformat(part["dateTime"])
            except (TypeError, ValueError) as err:
                raise bad_request(f"Invalid {key} time.") from err
            if dt.tzinfo is None:
                if not tz_name:
                    raise bad_request(f"Missing time zone definition for {key} time.", "required")
                dt = dt.replace(tzinfo=zone(tz_name))
            part["dateTime"] = format_local(dt, tz_name or cal.time_zone)
            instants.append(dt)
        if instants[1] < instants[0]:
            raise bad_request("The specified time range is empty.", "timeRangeEmpty")

    def _apply(
        self, cal: StoredCalendar, old: Json | None, new: Json, explicit_sequence: bool
    ) -> Json:
        """Finish a write: validate, sequence rules, etag/updated. Returns the new body.

        A client may set `sequence` (never below the current one); otherwise a change of
        start, end or recurrence bumps it, as Google does for significant changes.
        """
        if new.get("status", "confirmed") not in ("confirmed", "tentative", "cancelled"):
            raise bad_request("Invalid value for: status")
        self._normalize_times(cal, new)
        if new.get("recurrence") is not None:
            for key in ("start", "end"):
                if "dateTime" in new[key] and not new[key].get("timeZone"):
                    # Google needs a zone to expand a recurring event's wall-clock times.
                    raise bad_request(f"Missing time zone definition for {key} time.", "required")
            self._rule(cal, new)  # validates the rule
        current = int(old.get("sequence", 0)) if old else 0
        if explicit_sequence and old is not None:
            if int(new["sequence"]) < current:
                raise bad_request(
                    "Invalid sequence value. The specified sequence number is below the "
                    "current sequence number of the resource."
                )
        elif old is not None:
            moved = any(old.get(k) != new.get(k) for k in ("start", "end", "recurrence"))
            new["sequence"] = current + 1 if moved else current
        new.setdefault("sequence", 0)
        new.setdefault("status", "confirmed")
        new.setdefault("reminders", {"useDefault": True})
        new.setdefault("eventType", "default")
        new["etag"] = self.next_etag()
        new["updated"] = rfc3339_ms(time.time())
        return new

    def insert_event(self, cal_id: str, body: Json, send_updates: str | None) -> Json:
        cal = self.calendar(cal_id)
        event_id = body.get("id")
        if event_id is None:
            event_id = base64.b32hexencode(secrets.token_bytes(15)).decode().lower()
        elif not isinstance(event_id, str) or not EVENT_ID_RE.match(event_id):
            raise bad_request("Invalid resource id value.")
        existing = cal.events.get(event_id)
        if existing is not None and existing.purged_status is None:
            raise ApiError(409, "duplicate", "The requested identifier already exists.")
        now = time.time()
        new: Json = {
            k: copy.deepcopy(v) for k, v in body.items() if k not in READ_ONLY_EVENT_FIELDS
        }
        eid = base64.b64encode(f"{event_id} {cal.id}".encode()).decode().rstrip("=")
        me = {"email": self.owner, "self": True}
        organizer = (
            me
            if cal.id == self.owner
            else {"email": cal.id, "displayName": cal.summary, "self": True}
        )
        new.update(
            kind="calendar#event",
            id=event_id,
            htmlLink=f"https://www.google.com/calendar/event?eid={eid}",
            created=rfc3339_ms(now),
            creator=me,
            organizer=organizer,
            iCalUID=body.get("iCalUID") or f"{event_id}@google.com",
        )
        new = self._apply(cal, None, new, explicit_sequence=True)
        cal.events[event_id] = StoredEvent(new, self.next_seq(), send_updates)
        return copy.deepcopy(new)

    def get_event(self, cal_id: str, event_id: str) -> StoredEvent:
        return self.find(self.calendar(cal_id), event_id)

    def write_event(
        self,
        cal_id: str,
        event_id: str,
        body: Json,
        *,
        replace: bool,
        if_match: str | None = None,
        send_updates: str | None = None,
        human: bool = False,
    ) -> Json:
        """events.patch (replace=False) and events.update (replace=True)."""
        cal = self.calendar(cal_id)
        ev = self.find(cal, event_id)
        check_if_match(ev, if_match)
        old = ev.body
        incoming = {k: v for k, v in body.items() if k not in READ_ONLY_EVENT_FIELDS}
        if replace:
            new = {k: copy.deepcopy(old[k]) for k in READ_ONLY_EVENT_FIELDS if k in old}
            new.update(copy.deepcopy(incoming))
            new = {k: v for k, v in new.items() if v is not None}
        else:
            new = merge_patch(old, incoming)
        new = self._apply(cal, old, new, explicit_sequence="sequence" in incoming and not human)
        ev.body = new
        ev.change_seq = self.next_seq()
        if not human:
            ev.send_updates = send_updates
        return copy.deepcopy(new)

    def delete_event(
        self,
        cal_id: str,
        event_id: str,
        if_match: str | None = None,
        send_updates: str | None = None,
        human: bool = False,
    ) -> None:
        cal = self.calendar(cal_id)
        ev = self.find(cal, event_id)
        if ev.cancelled:
            raise gone()
        check_if_match(ev, if_match)
        ev.body = dict(
            ev.body, status="cancelled", etag=self.next_etag(), updated=rfc3339_ms(time.time())
        )
        ev.change_seq = self.next_seq()
        if not human:
            ev.send_updates = send_updates

    # -- recurrence -----------------------------------------------------------------------
    def _rule(self, cal: StoredCalendar, body: Json) -> tuple[Any, datetime, timedelta, str]:
        tz_name = body["start"].get("timeZone") or cal.time_zone
        start, end = event_bounds(cal, body)
        local_start = start.astimezone(zone(tz_name))
        lines = [ln for ln in body["recurrence"] if ln.upper().startswith(("RRULE", "EXDATE"))]
        try:
            rule = rrulestr("\n".join(lines), dtstart=local_start, forceset=True)
        except (ValueError, TypeError) as err:
            raise bad_request("Invalid recurrence rule.") from err
        return rule, start, end - start, tz_name

    def expand(
        self, cal: StoredCalendar, body: Json, lo: datetime | None, hi: datetime | None
    ) -> list[Json]:
        """Instances of a recurring event (singleEvents=true), overlapping [lo, hi) if given."""
        all_day = "date" in body["start"]
        rule, start, duration, tz_name = self._rule(cal, body)
        found: list[Json] = []
        horizon = hi or (lo or start) + timedelta(days=730)
        for occ in rule:
            if occ >= horizon or len(found) >= MAX_INSTANCES:
                break
            if lo is not None and occ + duration <= lo:
                continue
            inst = {k: copy.deepcopy(v) for k, v in body.items() if k != "recurrence"}
            if all_day:
                d = occ.date()
                inst["id"] = f"{body['id']}_{d:%Y%m%d}"
                inst["start"] = {"date": d.isoformat()}
                days = date.fromisoformat(body["end"]["date"]) - date.fromisoformat(
                    body["start"]["date"]
                )
                inst["end"] = {"date": (d + days).isoformat()}
            else:
                inst["id"] = f"{body['id']}_{occ.astimezone(UTC):%Y%m%dT%H%M%SZ}"
                inst["start"] = dict(body["start"], dateTime=format_local(occ, tz_name))
                inst["end"] = dict(body["end"], dateTime=format_local(occ + duration, tz_name))
            inst["recurringEventId"] = body["id"]
            inst["originalStartTime"] = dict(inst["start"])
            found.append(inst)
        return found

    # -- listing --------------------------------------------------------------------------
    def sync_token(self, cal: StoredCalendar) -> str:
        raw = f"{cal.id}|{self._seq}|{cal.token_epoch}".encode()
        return base64.urlsafe_b64encode(raw).decode()

    def _parse_sync_token(self, cal: StoredCalendar, token: str) -> int:
        try:
            cal_id, seq, epoch = base64.urlsafe_b64decode(token.encode()).decode().split("|")
            seq_n, epoch_n = int(seq), int(epoch)
        except (ValueError, UnicodeDecodeError) as err:
            raise bad_request("Invalid sync token value.") from err
        if cal_id != cal.id or epoch_n != cal.token_epoch:
            raise ApiError(
                410, "fullSyncRequired", "Sync token is no longer valid, a full sync is required."
            )
        return seq_n

    def list_events(self, cal_id: str, q: dict[str, list[str]]) -> Json:
        cal = self.calendar(cal_id)
        one = {k: v[-1] for k, v in q.items() if v}
        raw_max = one.get("maxResults", "250")
        max_results = min(int(raw_max), 2500) if raw_max.isdigit() else 0
        if max_results < 1:
            raise bad_request("Invalid value for: maxResults")
        if "pageToken" in one:
            snap = self._page_snapshots.get(one["pageToken"])
            if snap is None:
                raise bad_request("Invalid page token value.")
            items, sync = snap
        else:
            items = self._select(cal, q, one)
            sync = self.sync_token(cal)
        # Google may return fewer items than maxResults, even none, before the last page.
        cut = 0 if self.short_pages and "pageToken" not in one and items else max_results
        page, rest = items[:cut], items[cut:]
        out: Json = {
            "kind": "calendar#events",
            "etag": f'"p{self._seq}"',
            "summary": cal.summary,
            "updated": rfc3339_ms(time.time()),
            "timeZone": cal.time_zone,
            "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 10}],
            "items": page,
        }
        if rest:
            token = secrets.token_urlsafe(18)
            self._page_snapshots[token] = (rest, sync)
            out["nextPageToken"] = token
        else:
            out["nextSyncToken"] = sync
        return out

    def _select(
        self, cal: StoredCalendar, q: dict[str, list[str]], one: dict[str, str]
    ) -> list[Json]:
        single = one.get("singleEvents", "false").lower() == "true"
        if "syncToken" in one:
            banned = {
                "iCalUID",
                "orderBy",
                "privateExtendedProperty",
                "q",
                "sharedExtendedProperty",
                "timeMin",
                "timeMax",
                "updatedMin",
            }
            if banned & one.keys():
                raise bad_request(
                    "Sync token cannot be used with other filters: "
                    + ", ".join(sorted(banned & one.keys()))
                )
            since = self._parse_sync_token(cal, one["syncToken"])
            chosen = [e for e in cal.events.values() if e.change_seq > since]
            show_deleted = True
        else:
            chosen = list(cal.events.values())
            show_deleted = one.get("showDeleted", "false").lower() == "true"
        lo = parse_instant(one["timeMin"], "timeMin") if "timeMin" in one else None
        hi = parse_instant(one["timeMax"], "timeMax") if "timeMax" in one else None
        upd = parse_instant(one["updatedMin"], "updatedMin") if "updatedMin" in one else None
        props = [p.split("=", 1) for p in q.get("privateExtendedProperty", [])]
        if any(len(p) != 2 for p in props):
            raise bad_request("Invalid value for: privateExtendedProperty")
        text = one.get("q", "").lower()
        if one.get("orderBy") == "startTime" and not single:
            raise bad_request("The requested ordering is not available for the particular query.")
        items: list[Json] = []
        for ev in sorted(chosen, key=lambda e: e.change_seq):
            body = ev.body
            if upd and datetime.fromisoformat(body["updated"]) < upd:
                continue
            if ev.cancelled:
                if show_deleted or upd:
                    items.append(tombstone(body))
                continue
            private = body.get("extendedProperties", {}).get("private", {})
            if any(private.get(k) != v for k, v in props):
                continue
            if "iCalUID" in one and body.get("iCalUID") != one["iCalUID"]:
                continue
            hay = " ".join(str(body.get(k, "")) for k in ("summary", "description", "location"))
            if text and text not in hay.lower():
                continue
            if body.get("recurrence"):
                instances = self.expand(cal, body, lo, hi)
                if single:
                    items.extend(instances)
                    continue
                if (lo or hi) and not instances:
                    continue
            elif not overlaps(cal, body, lo, hi):
                continue
            items.append(copy.deepcopy(body))
        if one.get("orderBy") == "startTime":
            items.sort(
                key=lambda b: (
                    event_bounds(cal, b)[0] if "start" in b else datetime.max.replace(tzinfo=UTC)
                )
            )
        elif one.get("orderBy") == "updated":
            items.sort(key=lambda b: b.get("updated", ""))
        return items


def check_if_match(ev: StoredEvent, if_match: str | None) -> None:
    if if_match and if_match != "*" and if_match != ev.body["etag"]:
        raise ApiError(
            412,
            "conditionNotMet",
            "Precondition Failed",
            location="If-Match",
            locationType="header",
        )


def event_bounds(cal: StoredCalendar, body: Json) -> tuple[datetime, datetime]:
    """Start and end instants; all-day dates are midnights in the calendar's zone."""
    out = []
    for key in ("start", "end"):
        part = body[key]
        if "date" in part:
            d = date.fromisoformat(part["date"])
            out.append(datetime(d.year, d.month, d.day, tzinfo=zone(cal.time_zone)))
        else:
            out.append(datetime.fromisoformat(part["dateTime"]))
    return out[0], out[1]


def overlaps(cal: StoredCalendar, body: Json, lo: datetime | None, hi: datetime | None) -> bool:
    """timeMin bounds the event's end (exclusive), timeMax its start (exclusive)."""
    start, end = event_bounds(cal, body)
    return (lo is None or end > lo) and (hi is None or start < hi)
