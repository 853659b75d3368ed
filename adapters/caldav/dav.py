"""WebDAV/CalDAV XML for the CalDAV backend: request bodies, multistatus parsing, hrefs.

Pure functions; the backend does the I/O. Hrefs are normalized (each path segment
unquoted and re-quoted the same way) so that ``/c/a%40b.ics`` (Radicale) and ``/c/a@b.ics``
(Xandikos) compare equal.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit
from xml.sax.saxutils import escape

DAV = "{DAV:}"
CALDAV = "{urn:ietf:params:xml:ns:caldav}"
CS = "{http://calendarserver.org/ns/}"

# RFC 3986 pchar minus "/" and "%": characters left unquoted in a path segment.
_SEGMENT_SAFE = "@:!$&'()*+,;=~"

_HEAD = '<?xml version="1.0" encoding="utf-8"?>\n'
_NS = 'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"'


class DavXmlError(ValueError):
    """A body that is not a WebDAV multistatus document."""


def normalize_href(href: str) -> str:
    """The canonical form of an href or URL: its absolute path, each segment re-quoted."""
    path = urlsplit(href).path if "://" in href else href.split("?", 1)[0]
    return "/".join(quote(unquote(seg), safe=_SEGMENT_SAFE) for seg in path.split("/"))


def member_href(collection_path: str, name: str) -> str:
    """The href of a member called ``name`` (unquoted) in a collection."""
    return normalize_href(collection_path.rstrip("/") + "/" + quote(name, safe=_SEGMENT_SAFE))


def _ical_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def sync_collection_body(token: str, etags_only: bool = False) -> str:
    """RFC 6578 sync-collection REPORT, sync-level 1, asking for getetag and calendar-data.

    ``etags_only`` asks for getetag alone (a reconciliation's listing). No DAV:limit:
    Xandikos truncates to the limit silently (no 507) while still returning the newest
    token, which would lose changes.
    """
    data = "" if etags_only else "<C:calendar-data/>"
    return (
        f"{_HEAD}<D:sync-collection {_NS}><D:sync-token>{escape(token)}</D:sync-token>"
        "<D:sync-level>1</D:sync-level>"
        f"<D:prop><D:getetag/>{data}</D:prop></D:sync-collection>"
    )


def multiget_body(hrefs: list[str]) -> str:
    """calendar-multiget REPORT for ``hrefs``, asking for getetag and calendar-data."""
    items = "".join(f"<D:href>{escape(href)}</D:href>" for href in hrefs)
    return (
        f"{_HEAD}<C:calendar-multiget {_NS}>"
        f"<D:prop><D:getetag/><C:calendar-data/></D:prop>{items}</C:calendar-multiget>"
    )


def busy_query_body(start: datetime, end: datetime, expand: bool) -> str:
    """calendar-query REPORT for VEVENTs overlapping [start, end), optionally expanded."""
    rng = f'start="{_ical_utc(start)}" end="{_ical_utc(end)}"'
    data = (
        f"<C:calendar-data><C:expand {rng}/></C:calendar-data>"
        if expand
        else ("<C:calendar-data/>")
    )
    return (
        f"{_HEAD}<C:calendar-query {_NS}><D:prop><D:getetag/>{data}</D:prop>"
        '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        f"<C:time-range {rng}/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"
    )


PROPFIND_COLLECTION = (
    f'{_HEAD}<D:propfind {_NS} xmlns:CS="http://calendarserver.org/ns/"><D:prop>'
    "<CS:getctag/><D:sync-token/><D:getetag/><D:supported-report-set/>"
    "</D:prop></D:propfind>"
)
PROPFIND_ETAGS = (
    f"{_HEAD}<D:propfind {_NS}><D:prop><D:getetag/><D:resourcetype/></D:prop></D:propfind>"
)


@dataclass
class DavResponse:
    """One ``DAV:response``: its normalized href, response-level status, 200-OK properties."""

    href: str
    status: int | None
    props: dict[str, ET.Element] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        """The text of a property that came back 200 OK (``None`` when absent)."""
        el = self.props.get(name)
        return None if el is None else (el.text or "")

    @property
    def is_collection(self) -> bool:
        """True when ``resourcetype`` names a collection."""
        rtype = self.props.get(DAV + "resourcetype")
        return rtype is not None and rtype.find(DAV + "collection") is not None


def _status_code(text: str | None) -> int | None:
    parts = (text or "").split()
    if len(parts) >= 2 and parts[1].isdigit():
        return int(parts[1])
    return None


def parse_xml(body: bytes) -> ET.Element:
    """Parse an XML body; :class:`DavXmlError` when it is not well-formed."""
    try:
        return ET.fromstring(body)
    except ET.ParseError as err:
        raise DavXmlError(f"malformed XML: {err}") from err


def _response(resp: ET.Element) -> DavResponse:
    href_el = resp.find(DAV + "href")
    if href_el is None or not (href_el.text or "").strip():
        raise DavXmlError("a DAV:response without DAV:href")
    item = DavResponse(
        normalize_href((href_el.text or "").strip()),
        _status_code(resp.findtext(DAV + "status")),
    )
    for propstat in resp.findall(DAV + "propstat"):
        if _status_code(propstat.findtext(DAV + "status")) != 200:
            continue
        prop = propstat.find(DAV + "prop")
        for el in prop if prop is not None else []:
            item.props[el.tag] = el
    return item


def parse_multistatus(body: bytes) -> tuple[list[DavResponse], str | None]:
    """The responses of a multistatus body and its top-level ``sync-token`` (if any)."""
    root = parse_xml(body)
    if root.tag != DAV + "multistatus":
        raise DavXmlError(f"expected DAV:multistatus, got {root.tag}")
    out = [_response(resp) for resp in root.findall(DAV + "response")]
    token_el = root.find(DAV + "sync-token")
    token = None if token_el is None else (token_el.text or "").strip()
    return out, token


class MultistatusReader:
    """A multistatus body parsed as it arrives (a large calendar's listing is never held
    whole, neither its bytes nor its tree): :meth:`responses` yields each ``DAV:response``
    once it is complete and lets it go; ``token`` is the top-level ``sync-token`` once the
    body has been read."""

    def __init__(self) -> None:
        self.token: str | None = None
        self._parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("start", "end"))
        self._root: ET.Element | None = None
        self._depth = 0

    def responses(self, chunks: Iterable[bytes]) -> Iterator[DavResponse]:
        """The responses of the body ``chunks`` make up; :class:`DavXmlError` when it is
        not a well-formed multistatus."""
        try:
            for chunk in chunks:
                self._parser.feed(chunk)
                yield from self._read()
            self._parser.close()
        except ET.ParseError as err:
            raise DavXmlError(f"malformed XML: {err}") from err
        yield from self._read()
        if self._root is None:
            raise DavXmlError("an empty body")

    def _read(self) -> Iterator[DavResponse]:
        for got in self._parser.read_events():
            if len(got) != 2 or not isinstance(got[1], ET.Element):
                continue  # only start and end events are asked for
            event, el = got[0], got[1]
            if event == "start":
                self._depth += 1
                if self._root is None:
                    if el.tag != DAV + "multistatus":
                        raise DavXmlError(f"expected DAV:multistatus, got {el.tag}")
                    self._root = el
                continue
            self._depth -= 1
            if self._depth != 1 or self._root is None:
                continue  # inside a response, or the root's own end
            if el.tag == DAV + "response":
                item = _response(el)
                self._root.remove(el)
                yield item
            elif el.tag == DAV + "sync-token":
                self.token = (el.text or "").strip()


def error_condition(body: bytes) -> str | None:
    """The first precondition element of a ``DAV:error`` body (e.g. ``{DAV:}valid-sync-token``)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    if root.tag != DAV + "error":
        return None
    for el in root:
        if el.tag != DAV + "responsedescription":
            return el.tag
    return None


def supports_sync_collection(item: DavResponse) -> bool:
    """True when the collection's ``supported-report-set`` lists ``sync-collection``."""
    reports = item.props.get(DAV + "supported-report-set")
    return reports is not None and reports.find(f".//{DAV}sync-collection") is not None


def uid_query_body(uid: str) -> str:
    """calendar-query REPORT for the objects whose VEVENT has UID ``uid`` (exact match)."""
    return (
        f"{_HEAD}<C:calendar-query {_NS}><D:prop><D:getetag/></D:prop>"
        '<C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">'
        '<C:prop-filter name="UID"><C:text-match collation="i;octet">'
        f"{escape(uid)}</C:text-match></C:prop-filter>"
        "</C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"
    )


def error_hrefs(body: bytes) -> list[str]:
    """The hrefs a ``DAV:error`` body names (Cyrus names the object holding a UID)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return []
    return [normalize_href(el.text.strip()) for el in root.iter(DAV + "href") if el.text]
