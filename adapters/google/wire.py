"""The Google Calendar API v3 wire: event parsing, error translation, constants.

Kept apart from :mod:`adapters.google.backend` (the calendar backend itself) so each
stays small; nothing here does I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from googleapiclient.errors import HttpError

from syncd.ports import (
    AuthRevoked,
    BackendError,
    EventContent,
    NotFound,
    PreconditionFailed,
    RateLimited,
    RemoteEvent,
    Transient,
)

CURSOR_VERSION = "v1"
SESSION_KEY = "syncd_session"
EVENT_FIELDS = (
    "id,etag,status,start,end,recurrence,recurringEventId,summary,description,iCalUID,"
    "extendedProperties,transparency"
)
LIST_FIELDS = f"items({EVENT_FIELDS}),nextPageToken,nextSyncToken"
RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
QUOTA_REASONS = frozenset({"quotaExceeded", "dailyLimitExceeded"})
QUOTA_RETRY_AFTER = 600.0
MAX_PAGES = 10_000
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)

Json = dict[str, Any]
Build = Callable[[Any], Any]  # service -> googleapiclient HttpRequest


class _Missing(NotFound):
    """404 or 410; ``status`` tells which (a 410 on events.list is an expired sync token)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Conflict(PreconditionFailed):
    """409: an insert found an event (live or a tombstone) at its id."""


class _BadRequest(BackendError):
    """400: the request was refused as malformed (an unknown sync or page token, mostly)."""


class _Tries:
    """How many attempts one call took (a write retried after a lost answer may have landed)."""

    n = 0


def _utc(dt: datetime) -> str:
    """An RFC 3339 UTC instant as Google writes it (``...Z``)."""
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: syncd works with aware instants")
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _plain(text: str) -> str:
    """Notes as plain text: Google's web UI saves edited descriptions with ``<br>``."""
    return _BR.sub("\n", text) if "<br" in text.lower() else text


def _when(part: Any) -> tuple[datetime, bool]:
    """(UTC instant, all_day) of an event's ``start``/``end``; ValueError if malformed."""
    if not isinstance(part, dict):
        raise ValueError("no start/end")
    if part.get("dateTime"):
        dt = datetime.fromisoformat(str(part["dateTime"]))
        if dt.tzinfo is None:  # Google always sends an offset; be lenient with a bare zone
            dt = dt.replace(tzinfo=ZoneInfo(str(part.get("timeZone") or "UTC")))
        return dt.astimezone(UTC).replace(microsecond=0), False
    if part.get("date"):
        d = date.fromisoformat(str(part["date"]))
        return datetime(d.year, d.month, d.day, tzinfo=UTC), True
    raise ValueError("neither dateTime nor date")


def _sequence(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def parse_event(body: Mapping[str, Any]) -> RemoteEvent:
    """A Google event resource as a :class:`RemoteEvent`; ValueError if it has no times."""
    start, all_day = _when(body.get("start"))
    end, _ = _when(body.get("end"))
    private = (body.get("extendedProperties") or {}).get("private") or {}
    session = private.get(SESSION_KEY)
    content = EventContent(
        start=start,
        end=end,
        all_day=all_day,
        recurring=bool(body.get("recurrence")),
        status=str(body.get("status") or "confirmed"),
        summary=str(body.get("summary") or ""),
        description=_plain(str(body.get("description") or "")),
        uid=str(body.get("iCalUID") or ""),
        session_id=str(session) if session else None,
        sequence=_sequence(body.get("sequence")),
    )
    return RemoteEvent(str(body["id"]), str(body["etag"]), content)


def _error_reason(err: HttpError) -> tuple[str, str]:
    """(reason, message) of Google's JSON error body; ("", text) when it is not JSON."""
    raw = err.content.decode("utf-8", "replace") if isinstance(err.content, bytes) else ""
    try:
        error = json.loads(raw)["error"]
        items = error.get("errors") or [{}]
        return str(items[0].get("reason") or ""), str(error.get("message") or "")
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return "", raw[:200]


def _translate(err: HttpError, what: str) -> BackendError:
    """The ports' error for one Google HTTP error answer."""
    status = int(err.resp.status)
    reason, message = _error_reason(err)
    text = f"Google Calendar {what}: HTTP {status} {reason}: {message}".replace("  ", " ")
    if status in (404, 410):
        return _Missing(text, status)
    if status == 409:
        return _Conflict(text)
    if status == 412:
        return PreconditionFailed(text)
    if status == 429 or (status == 403 and reason in RATE_REASONS):
        after = str(err.resp.get("retry-after") or "")  # seconds; an HTTP date is ignored
        return RateLimited(text, float(after) if after.isdigit() else None)
    if status == 403 and reason in QUOTA_REASONS:
        return RateLimited(text, QUOTA_RETRY_AFTER)
    if status in (401, 403):
        return AuthRevoked(text)
    if status == 400:
        return _BadRequest(text)
    if status >= 500 or status == 408:
        return Transient(text)
    return BackendError(text)


def _events_list(service: Any, params: Mapping[str, Any]) -> Any:
    return service.events().list(**params)
