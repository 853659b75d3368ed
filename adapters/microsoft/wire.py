"""The Microsoft Graph wire: event parsing, HTML bodies as text, error translation, constants.

Nothing here does I/O. Times come as ``dateTimeTimeZone`` pairs: a naive wall time and a
zone name, Windows (``W. Europe Standard Time``) or IANA; syncd asks for UTC
(``Prefer: outlook.timezone="UTC"``) but reads whatever zone an answer carries.

syncd's remote id of a session's event is the **session id** (the event's identity is its
extended property, which survives a restore from Deleted Items under a new Graph id);
events that are not syncd's keep their Graph id. The Graph id behind a session is looked up
when needed (by ``transactionId`` in delta rows, by the extended property otherwise).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from typing import Any

import httpx

from adapters.microsoft.zones import zone
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

Json = dict[str, Any]

CURSOR_VERSION = "g1"
PROPERTY_GUID = "{66f5a359-4659-4830-9070-00047ec6ac6e}"
SESSION_PROPERTY = f"String {PROPERTY_GUID} Name syncd_session"
UID_PROPERTY = f"String {PROPERTY_GUID} Name syncd_uid"
EXPAND = (
    f"singleValueExtendedProperties($filter=id eq '{SESSION_PROPERTY}' or id eq '{UID_PROPERTY}')"
)
TRANSACTION_SEPARATOR = "~"  # a re-created event's transactionId: <session id>~<suffix>
PREFER = 'outlook.timezone="UTC", IdType="ImmutableId"'
AUTH_CODES = frozenset(
    {
        "InvalidAuthenticationToken",
        "ErrorAccessDenied",
        "AuthenticationError",
        "Authorization_RequestDenied",
    }
)
_FRACTION = re.compile(r"\.(\d+)")


class _Missing(NotFound):
    """404 or 410; ``status`` and ``code`` say which (410 on delta: an expired state token)."""

    def __init__(self, message: str, status: int, code: str, location: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.location = location


class _BadRequest(BackendError):
    """400 (or another refusal); ``code`` is Graph's error code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def session_of_transaction(transaction_id: Any) -> str | None:
    """The session id a transactionId syncd chose names (``sid`` or ``sid~suffix``)."""
    if not isinstance(transaction_id, str) or not transaction_id:
        return None
    return transaction_id.split(TRANSACTION_SEPARATOR, 1)[0] or None


def utc_text(dt: datetime) -> str:
    """A naive-looking UTC wall time for a ``dateTimeTimeZone`` with ``timeZone: UTC``."""
    if dt.tzinfo is None:
        raise ValueError(f"naive datetime {dt!r}: syncd works with aware instants")
    return dt.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat()


def query_instant(dt: datetime) -> str:
    """An instant for a query parameter (``startDateTime``): UTC with ``Z``."""
    return utc_text(dt) + "Z"


def parse_when(part: Any, all_day: bool = False) -> datetime:
    """The UTC instant of a ``dateTimeTimeZone`` (whole seconds); an all-day date at midnight UTC.

    ValueError when malformed or the zone is unknown.
    """
    if not isinstance(part, Mapping) or not part.get("dateTime"):
        raise ValueError("no dateTime")
    text = str(part["dateTime"]).strip()
    text = _FRACTION.sub(lambda m: "." + (m[1] + "000000")[:6], text, count=1)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    local = datetime.fromisoformat(text)
    if all_day:
        d = local.date()
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    if local.tzinfo is None:
        local = local.replace(tzinfo=zone(str(part.get("timeZone") or "UTC")))
    return local.astimezone(UTC).replace(microsecond=0)


# -- bodies ---------------------------------------------------------------------------------


class _Text(HTMLParser):
    """HTML as the lines a person reads: one line per block (``<div>``, ``<p>``, ``<br>``)."""

    BLOCKS = frozenset({"div", "p", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table"})
    HIDDEN = frozenset({"head", "style", "script", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._hidden = 0

    def _newline(self, force: bool = False) -> None:
        if force or (self.out and not self.out[-1].endswith("\n")):
            self.out.append("\n")

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self._hidden += 1
        elif tag == "br":
            self._newline(force=True)
        elif tag in self.BLOCKS:
            self._newline()

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self.BLOCKS:
            self._newline()

    def handle_data(self, data: str) -> None:
        if self._hidden or (not data.strip() and ("\n" in data or "\r" in data)):
            return
        self.out.append(re.sub(r"[\r\n]+", " ", data).replace("\xa0", " "))


def html_to_text(content: str) -> str:
    """The text of an HTML body (Outlook's ``<html><body><div>line</div>…``)."""
    parser = _Text()
    parser.feed(content)
    parser.close()
    lines = [line.rstrip() for line in "".join(parser.out).split("\n")]
    return "\n".join(lines).strip("\n")


def body_text(body: Any) -> str:
    """The notes of an event's ``body`` as plain text (``\\n`` line ends)."""
    if not isinstance(body, Mapping):
        return ""
    content = str(body.get("content") or "")
    if str(body.get("contentType") or "").lower() == "html":
        return html_to_text(content)
    return content.replace("\r\n", "\n").strip("\n")


def text_to_html(text: str) -> str:
    """Lines as Outlook writes typed notes: one ``<div>`` per line, ``<br>`` for an empty one."""
    divs = "".join(
        f"<div>{html.escape(line, quote=False) or '<br>'}</div>" for line in text.split("\n")
    )
    return f"<html><body>{divs}</body></html>"


# -- events ---------------------------------------------------------------------------------


def properties(body: Mapping[str, Any]) -> dict[str, str]:
    """The single-value extended properties an answer carries (by lower-case id)."""
    out: dict[str, str] = {}
    for prop in body.get("singleValueExtendedProperties") or []:
        if isinstance(prop, Mapping) and prop.get("id"):
            out[str(prop["id"]).lower()] = str(prop.get("value") or "")
    return out


def status_of(body: Mapping[str, Any]) -> str:
    """confirmed / tentative / cancelled from ``isCancelled`` and ``showAs``."""
    if body.get("isCancelled"):
        return "cancelled"
    return "tentative" if str(body.get("showAs") or "") == "tentative" else "confirmed"


def parse_event(body: Mapping[str, Any], session_id: str | None = None) -> RemoteEvent:
    """A Graph event as a :class:`RemoteEvent`; ValueError if it has no usable times.

    ``session_id`` comes from the extended property when the answer carries it, else from
    the caller (a delta row's ``transactionId``); the remote id is then the session id.
    """
    props = properties(body)
    sid = props.get(SESSION_PROPERTY.lower()) or session_id
    all_day = bool(body.get("isAllDay"))
    content = EventContent(
        start=parse_when(body.get("start"), all_day),
        end=parse_when(body.get("end"), all_day),
        all_day=all_day,
        recurring=bool(body.get("recurrence")) or body.get("type") == "seriesMaster",
        status=status_of(body),
        summary=str(body.get("subject") or ""),
        description=body_text(body.get("body")),
        uid=props.get(UID_PROPERTY.lower(), ""),
        session_id=sid or None,
    )
    etag = str(body.get("@odata.etag") or body.get("changeKey") or "")
    return RemoteEvent(sid or str(body["id"]), etag, content)


# -- errors ---------------------------------------------------------------------------------


def error_code(resp: httpx.Response) -> tuple[str, str]:
    """(code, message) of Graph's JSON error (or the identity platform's), else ("", text)."""
    try:
        doc = json.loads(resp.content)
        err = doc.get("error")
        if isinstance(err, Mapping):
            return str(err.get("code") or ""), str(err.get("message") or "")
        return str(err or ""), str(doc.get("error_description") or "")
    except (ValueError, AttributeError):
        return "", resp.text[:200]


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds of a ``Retry-After`` header (an HTTP date is ignored)."""
    raw = (resp.headers.get("retry-after") or "").strip()
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None


def translate(resp: httpx.Response, what: str) -> BackendError:
    """The ports' error for one Graph error answer."""
    status = resp.status_code
    code, message = error_code(resp)
    text = f"Microsoft Graph {what}: HTTP {status} {code}: {message}".replace("  ", " ")
    if status in (404, 410):
        return _Missing(text, status, code, resp.headers.get("location", ""))
    if status == 412:
        return PreconditionFailed(text)
    if status == 429:
        return RateLimited(text, retry_after(resp))
    if status in (503, 504):
        after = retry_after(resp)
        return RateLimited(text, after) if after is not None else Transient(text)
    if status == 401 or (status == 403 and code in AUTH_CODES):
        return AuthRevoked(text)
    if status >= 500 or status == 408:
        return Transient(text)
    return _BadRequest(text, code)


def day_of(value: datetime) -> date:
    """The UTC date of an instant."""
    return value.astimezone(UTC).date()
