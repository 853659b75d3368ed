"""Values of the Microsoft Graph fake: errors, time zones, date-times, ids, bodies.

Pure helpers with no state. Formats follow Microsoft's published Graph v1.0 documentation
(event, dateTimeTimeZone, error response); where it is silent the choice is noted.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import uuid
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

Json = dict[str, Any]

# The extended property syncd stamps on its events (see INTERFACE.md).
SYNCD_PROPERTY_ID = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name syncd_session"

# A subset of CLDR's windowsZones mapping; tzlocal's full table is used when installed.
_WINDOWS_ZONES = {
    "UTC": "UTC",
    "tzone://Microsoft/Utc": "UTC",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "Romance Standard Time": "Europe/Paris",
    "E. Europe Standard Time": "Europe/Chisinau",
    "FLE Standard Time": "Europe/Kiev",
    "GTB Standard Time": "Europe/Bucharest",
    "Russian Standard Time": "Europe/Moscow",
    "Turkey Standard Time": "Europe/Istanbul",
    "Israel Standard Time": "Asia/Jerusalem",
    "Arabian Standard Time": "Asia/Dubai",
    "India Standard Time": "Asia/Kolkata",
    "China Standard Time": "Asia/Shanghai",
    "Singapore Standard Time": "Asia/Singapore",
    "Tokyo Standard Time": "Asia/Tokyo",
    "AUS Eastern Standard Time": "Australia/Sydney",
    "New Zealand Standard Time": "Pacific/Auckland",
    "South Africa Standard Time": "Africa/Johannesburg",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "US Mountain Standard Time": "America/Phoenix",
    "Pacific Standard Time": "America/Los_Angeles",
    "Alaskan Standard Time": "America/Anchorage",
    "Hawaiian Standard Time": "Pacific/Honolulu",
    "Atlantic Standard Time": "America/Halifax",
    "E. South America Standard Time": "America/Sao_Paulo",
}
try:  # tzlocal ships the complete CLDR table
    from tzlocal.windows_tz import win_tz as _WIN_TZ

    WINDOWS_ZONES: dict[str, str] = {**dict(_WIN_TZ), **_WINDOWS_ZONES}
except ImportError:  # pragma: no cover - tzlocal is a transitive test dependency
    WINDOWS_ZONES = dict(_WINDOWS_ZONES)

_PROP_ID_RE = re.compile(
    r"^\s*(?P<type>[A-Za-z]+)\s+\{(?P<guid>[0-9a-fA-F-]{36})\}\s+"
    r"(?P<kind>Name|Id)\s+(?P<name>\S.*?)\s*$"
)
_PROP_TYPES = {
    t.lower(): t
    for t in ("String", "Integer", "Long", "Boolean", "SystemTime", "Double", "Binary", "CLSID")
}


class GraphError(Exception):
    """An error response in Graph's JSON shape: ``{"error": {"code", "message", ...}}``."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self, request_id: str, client_request_id: str | None = None) -> Json:
        """The JSON document Graph sends for this error."""
        inner = {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": request_id,
            "client-request-id": client_request_id or request_id,
        }
        return {"error": {"code": self.code, "message": self.message, "innerError": inner}}


def item_not_found() -> GraphError:
    """Outlook's 404 for an unknown, deleted or foreign item id."""
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def invalid_request(message: str, code: str = "ErrorInvalidRequest") -> GraphError:
    """A 400 with Outlook's usual code."""
    return GraphError(400, code, message)


# -- time zones and date-times ---------------------------------------------------------------


def resolve_zone(name: str) -> ZoneInfo:
    """A Windows zone name ("W. Europe Standard Time") or an IANA name, as Graph accepts both."""
    iana = WINDOWS_ZONES.get(name, name)
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as err:
        raise GraphError(
            400,
            "TimeZoneNotSupportedException",
            f"A valid TimeZone value must be specified. The following TimeZone value is not "
            f"supported: '{name}'.",
        ) from err


def parse_local(value: Any, what: str) -> datetime:
    """A dateTimeTimeZone.dateTime as written by a client: naive wall time, 7 decimals allowed.

    When the value carries an offset (Graph's docs never show one) it is converted to naive
    UTC and the caller treats it as an instant.
    """
    if not isinstance(value, str) or not value:
        raise invalid_request(f"The '{what}' dateTime is required.", "ErrorInvalidParameter")
    text = value.strip()
    match = re.match(r"^(.*T\d{2}:\d{2}(?::\d{2})?)(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$", text)
    if not match:
        try:
            return datetime.fromisoformat(text).replace(tzinfo=None)
        except ValueError as err:
            raise invalid_request(f"Cannot convert the literal '{value}' to DateTime.") from err
    base, frac, offset = match.groups()
    micro = (frac[1:] + "000000")[:6] if frac else ""
    try:
        dt = datetime.fromisoformat(base + (f".{micro}" if micro else "") + (offset or ""))
    except ValueError as err:
        raise invalid_request(f"Cannot convert the literal '{value}' to DateTime.") from err
    if dt.tzinfo is not None:
        return dt.astimezone(UTC).replace(tzinfo=None)
    return dt


def has_offset(value: Any) -> bool:
    """Whether a client's dateTime carries ``Z`` or a numeric offset."""
    return isinstance(value, str) and bool(re.search(r"(Z|[+-]\d{2}:?\d{2})\s*$", value))


def to_instant(local: datetime, zone_name: str) -> datetime:
    """The UTC instant of a naive wall time in a (Windows or IANA) zone."""
    return local.replace(tzinfo=resolve_zone(zone_name)).astimezone(UTC)


def to_local(instant: datetime, zone_name: str) -> datetime:
    """The naive wall time of an instant in a (Windows or IANA) zone."""
    return instant.astimezone(resolve_zone(zone_name)).replace(tzinfo=None)


def format_local(local: datetime) -> str:
    """Graph's dateTime rendering: ``2016-12-09T20:30:00.0000000`` (seven decimals, no offset)."""
    return local.strftime("%Y-%m-%dT%H:%M:%S") + f".{local.microsecond * 10:07d}"


def format_timestamp(instant: datetime) -> str:
    """createdDateTime/lastModifiedDateTime: UTC with seven decimals and ``Z``."""
    return format_local(instant.astimezone(UTC).replace(tzinfo=None)) + "Z"


def parse_instant(value: str, what: str) -> datetime:
    """A query parameter (startDateTime...) or expirationDateTime; naive values are UTC."""
    try:
        local = parse_local(value, what)
    except GraphError as err:
        raise GraphError(
            400, "ErrorInvalidParameter", f"The value of '{what}' is not valid: {value}"
        ) from err
    return local.replace(tzinfo=UTC)


# -- identifiers -----------------------------------------------------------------------------


def new_item_id(prefix: str = "AAMkAGI2") -> str:
    """An Outlook-looking REST id: URL-safe base64 with '=' padding, case-sensitive."""
    raw = base64.urlsafe_b64encode(secrets.token_bytes(66)).decode().rstrip("=")
    return f"{prefix}{raw}AAA="


def derived_id(*parts: str) -> str:
    """A deterministic id (occurrences of a series)."""
    digest = hashlib.sha256("|".join(parts).encode()).digest() + b"occurrence-of-series"
    return "AAMkAGI2OC" + base64.urlsafe_b64encode(digest).decode().rstrip("=") + "AAA="


def new_change_key() -> str:
    """A changeKey: standard base64, as Outlook's (``EZ9r3czxY0m2jz8c45czkwAAFXcvIQ==``)."""
    return base64.b64encode(secrets.token_bytes(16)).decode()


def new_guid() -> str:
    """A lower-case GUID."""
    return str(uuid.uuid4())


def normalize_property_id(raw: Any) -> str:
    """Canonical id of a single-value extended property.

    The property type and the GUID are case-insensitive; the Name is case-sensitive (Graph's
    docs: "Filtering the string name (Name) in the id of an extended property is
    case-sensitive").
    """
    match = _PROP_ID_RE.match(raw) if isinstance(raw, str) else None
    if not match or match["type"].lower() not in _PROP_TYPES:
        raise invalid_request(
            f"The extended property id '{raw}' is not valid.", "ErrorInvalidExtendedPropertyValue"
        )
    kind = match["kind"]
    return (
        f"{_PROP_TYPES[match['type'].lower()]} {{{match['guid'].lower()}}} {kind} {match['name']}"
    )


# -- bodies ----------------------------------------------------------------------------------

_HTML_HEAD = (
    '<html>\r\n<head>\r\n<meta http-equiv="Content-Type" content="text/html; charset=utf-8">\r\n'
    "</head>\r\n<body>\r\n"
)


def text_to_html(text: str) -> str:
    """How Exchange returns a body that was written as text when HTML is asked for."""
    lines = [html.escape(line, quote=False) for line in text.replace("\r\n", "\n").split("\n")]
    return _HTML_HEAD + "<br>\r\n".join(lines) + "\r\n</body>\r\n</html>\r\n"


def outlook_html(lines: list[str]) -> str:
    """What Outlook writes when a person types lines into the notes: one <div> per line."""
    divs = "".join(f"<div>{html.escape(line, quote=False) or '<br>'}</div>" for line in lines)
    return _HTML_HEAD + divs + "\r\n</body>\r\n</html>\r\n"


class _TextExtractor(HTMLParser):
    BLOCKS = frozenset({"div", "p", "br", "li", "tr", "h1", "h2", "h3", "h4", "table"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("head", "style", "script", "title"):
            self._skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("head", "style", "script", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag in ("div", "p", "li", "tr"):
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data.replace("\r", "").replace("\n", " ") if data.strip() else "")


def html_to_text(content: str) -> str:
    """The text rendering Graph gives for ``Prefer: outlook.body-content-type="text"``."""
    parser = _TextExtractor()
    parser.feed(content)
    text = "".join(parser.parts).replace("\xa0", " ")
    lines = [line.strip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\r\n".join(out).strip()


def body_preview(body: Json) -> str:
    """bodyPreview: the first 255 characters of the text, whitespace collapsed."""
    content = str(body.get("content") or "")
    text = html_to_text(content) if body.get("contentType") == "html" else content
    return " ".join(text.split())[:255]
