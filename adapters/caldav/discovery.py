"""Finding the calendar syncd writes to from a server's address (RFC 6764, RFC 4791 §6).

``discover(url, username, password, name)``:

1. a URL that already is a calendar collection is used as it is;
2. otherwise the context path is looked for: ``/.well-known/caldav`` (its redirect; Cyrus →
   ``/dav/calendars``, DAViCal → ``/caldav.php/``), then the URL's own path, then
   ``/SOGo/dav/`` (sogod alone serves no well-known redirect);
3. ``current-user-principal`` there, then the principal's ``calendar-home-set`` (the
   principal itself when it names none, as on DAViCal);
4. the home's calendars (Depth:1): the one whose displayname is ``name`` is used, else one is
   made with MKCALENDAR (``<home>/<slug of name>/``, VEVENT only).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit
from xml.sax.saxutils import escape

from adapters.caldav import dav
from adapters.caldav.transport import XML, Reply, Transport
from syncd.ports import AuthRevoked, BackendError

WELL_KNOWN = "/.well-known/caldav"
FALLBACK_CONTEXTS = ("/SOGo/dav/",)
_HEAD = '<?xml version="1.0" encoding="utf-8"?>\n'
_NS = 'xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"'
PROPFIND_SELF = (
    f"{_HEAD}<D:propfind {_NS}><D:prop><D:resourcetype/><D:displayname/>"
    "<D:current-user-principal/><C:calendar-home-set/></D:prop></D:propfind>"
)
PROPFIND_CALENDARS = (
    f"{_HEAD}<D:propfind {_NS}><D:prop><D:resourcetype/><D:displayname/>"
    "<C:supported-calendar-component-set/></D:prop></D:propfind>"
)
MKCALENDAR = (
    f"{_HEAD}<C:mkcalendar {_NS}><D:set><D:prop><D:displayname>{{name}}</D:displayname>"
    '<C:supported-calendar-component-set><C:comp name="VEVENT"/>'
    "</C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"
)
MKCALENDAR_TRIES = 5


class DiscoveryError(BackendError):
    """No CalDAV calendar could be found or made at the address given (one sentence)."""


@dataclass(frozen=True)
class Discovered:
    """The calendar chosen: its URL and name, how it was found, and every calendar seen."""

    url: str
    name: str
    how: str  # "given" (the URL was a calendar), "found" (by name) or "created"
    principal: str = ""
    home: str = ""
    calendars: tuple[tuple[str, str], ...] = ()  # (displayname, URL) of the home's calendars


def _is_calendar(item: dav.DavResponse) -> bool:
    rtype = item.props.get(dav.DAV + "resourcetype")
    return rtype is not None and rtype.find(dav.CALDAV + "calendar") is not None


def _holds_events(item: dav.DavResponse) -> bool:
    comps = item.props.get(dav.CALDAV + "supported-calendar-component-set")
    if comps is None or not list(comps):
        return True  # not said: any component
    return any(c.get("name", "").upper() == "VEVENT" for c in comps)


def _href_of(item: dav.DavResponse, prop: str) -> str | None:
    el = item.props.get(prop)
    found = None if el is None else el.find(dav.DAV + "href")
    text = None if found is None else (found.text or "").strip()
    return dav.normalize_href(text) if text else None


def slug(name: str) -> str:
    """A path segment for a calendar called ``name`` (``Bookings`` → ``bookings``)."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "calendar"


class _Finder:
    def __init__(self, t: Transport, path: str) -> None:
        self.t = t
        self.path = path

    def props(
        self, href: str, depth: str = "0", body: str = PROPFIND_SELF
    ) -> list[dav.DavResponse]:
        reply = self.t.propfind(href, body, depth)
        if reply.status == 401:
            raise AuthRevoked(f"{self.t.url(href)}: the server refused the username or password")
        if reply.status != 207:
            return []
        try:
            items, _ = dav.parse_multistatus(reply.body)
        except dav.DavXmlError:
            return []
        return items

    def well_known(self) -> str | None:
        reply: Reply = self.t.read("PROPFIND", self.t.url(WELL_KNOWN), b"", _depth0(), False)
        location = reply.headers.get("location")
        if reply.status in (301, 302, 303, 307, 308) and location:
            target = urljoin(self.t.url(WELL_KNOWN), location)
            if urlsplit(target).netloc == urlsplit(self.t.origin).netloc:
                return dav.normalize_href(urlsplit(target).path or "/")
        return WELL_KNOWN if reply.status == 207 else None

    def principal(self) -> str:
        contexts = [self.well_known(), self.path, *FALLBACK_CONTEXTS]
        for context in dict.fromkeys(c for c in contexts if c):
            for item in self.props(context):
                if principal := _href_of(item, dav.DAV + "current-user-principal"):
                    return principal
        raise DiscoveryError(
            f"{self.t.origin}: no CalDAV account found there (no current-user-principal at "
            f"{WELL_KNOWN} or {self.path}); give the calendar's own URL with --url"
        )

    def home(self, principal: str) -> str:
        for item in self.props(principal):
            if home := _href_of(item, dav.CALDAV + "calendar-home-set"):
                return home
        return principal


def _depth0() -> dict[str, str]:
    return {"Content-Type": XML, "Depth": "0"}


def discover(
    url: str,
    username: str,
    password: str,
    name: str = "Bookings",
    timeout: float = 20.0,
    ua: str = "syncd",
    create: bool = True,
) -> Discovered:
    """The calendar collection to use at ``url`` (see the module); may MKCALENDAR it.

    Raises :class:`DiscoveryError` (nothing usable there), :class:`AuthRevoked`
    (credentials refused) or :class:`syncd.ports.Transient` (unreachable).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DiscoveryError(f"not an http(s) URL: {url!r}")
    origin = f"{parts.scheme}://{parts.netloc}"
    path = dav.normalize_href(parts.path or "/")
    t = Transport(origin, url, username, password, timeout, ua)
    try:
        finder = _Finder(t, path)
        for item in finder.props(path):
            if item.href.rstrip("/") == path.rstrip("/") and _is_calendar(item):
                shown = item.text(dav.DAV + "displayname") or ""
                return Discovered(_slash(t.url(path)), shown, "given")
        principal = finder.principal()
        home = finder.home(principal)
        items = finder.props(home, "1", PROPFIND_CALENDARS)
        calendars = [
            (i.text(dav.DAV + "displayname") or "", i.href)
            for i in items
            if _is_calendar(i) and _holds_events(i)
        ]
        seen = tuple((shown, _slash(t.url(href))) for shown, href in calendars)
        for shown, href in calendars:
            if shown.strip().casefold() == name.strip().casefold():
                return Discovered(_slash(t.url(href)), shown, "found", principal, home, seen)
        if not create:
            raise DiscoveryError(f"{t.url(home)}: no calendar named {name!r}")
        href = _mkcalendar(t, home, name, {h.rstrip("/") for _, h in calendars} | _members(items))
        return Discovered(_slash(t.url(href)), name, "created", principal, home, seen)
    finally:
        t.close()


def _members(items: list[dav.DavResponse]) -> set[str]:
    return {i.href.rstrip("/") for i in items}


def _slash(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _mkcalendar(t: Transport, home: str, name: str, taken: set[str]) -> str:
    body = MKCALENDAR.format(name=escape(name)).encode()
    base = home.rstrip("/") + "/" + slug(name)
    for n in range(MKCALENDAR_TRIES):
        href = dav.normalize_href(f"{base}-{n + 1}/" if n else f"{base}/")
        if href.rstrip("/") in taken:
            continue
        reply = t.send("MKCALENDAR", t.url(href), body, {"Content-Type": XML})
        if reply.status in (200, 201):
            return href
        if reply.status == 401:
            raise AuthRevoked(f"{t.url(home)}: the server refused the username or password")
        if reply.status != 405:  # 405: something is already there; try the next name
            raise DiscoveryError(
                f"{t.url(href)}: the server would not create a calendar named {name!r} "
                f"(HTTP {reply.status}{_why(reply.body)}); create it in your calendar app, "
                "or give its URL with --url"
            )
    raise DiscoveryError(f"{t.url(home)}: no free name for a calendar called {name!r}")


def _why(body: bytes) -> str:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return ""
    return f", {root[0].tag}" if len(root) else ""
