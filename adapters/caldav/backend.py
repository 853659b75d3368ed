"""CalDAV calendar backend: one calendar collection on any CalDAV server.

Transport and authentication come from the ``caldav`` library (its ``DAVClient`` and the
HTTP session it holds); the requests themselves are issued here, because the library's
high-level calls do things syncd must never do (retry writes, fall back silently to a
full download under a fake sync token, treat a failed read as an empty calendar).

Change feed: RFC 6578 ``sync-collection`` (cursor ``sync:<token>``), or, for servers
without it, a ``getctag`` check followed by a ``getetag`` listing diffed against what the
caller knows (cursor ``ctag:<ctag>``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from caldav.davclient import DAVClient
from caldav.lib.auth import extract_auth_types
from caldav.lib.http_sync import requests as http
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from adapters.caldav import dav
from adapters.caldav.ics import IcsError, apply_desired, build_event, busy_intervals, parse_event
from syncd.ports import (
    AuthRevoked,
    BackendError,
    ChangeSet,
    CursorExpired,
    DesiredEvent,
    EventContent,
    NotFound,
    PreconditionFailed,
    RateLimited,
    RemoteEvent,
    Transient,
)

log = logging.getLogger(__name__)

SYNC_PREFIX = "sync:"
CTAG_PREFIX = "ctag:"
MULTIGET_BATCH = 100
MAX_SYNC_ROUNDS = 500
XML = "application/xml; charset=utf-8"
ICS = "text/calendar; charset=utf-8"
# Status codes servers give a sync-collection REPORT with a token they no longer accept:
# Radicale 403 and Xandikos 412 (both with DAV:valid-sync-token), others 409.
INVALID_TOKEN_STATUSES = (403, 409, 412)
# Status codes of a REPORT the server does not implement.
UNSUPPORTED_REPORT_STATUSES = (400, 403, 405, 415, 501)


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _retryable(err: BaseException) -> bool:
    return isinstance(err, Transient) and not isinstance(err, RateLimited)


def _same_etag(a: str, b: str) -> bool:
    return a.removeprefix("W/") == b.removeprefix("W/")


class CalDAVBackend:
    """A :class:`syncd.ports.CalendarBackend` for one CalDAV calendar collection.

    ``url`` is the collection URL. Remote ids are the members' absolute, normalized hrefs
    (``/user/calendar/syncd-s_1@host.ics``). ``force_ctag`` skips ``sync-collection`` and
    uses the ctag + etag-listing change feed (for servers without RFC 6578, and tests).
    """

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        timeout: float = 20.0,
        ua: str = "syncd",
        *,
        force_ctag: bool = False,
    ) -> None:
        if not url.endswith("/"):
            url += "/"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"not an http(s) calendar URL: {url!r}")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._collection = dav.normalize_href(parts.path)
        self._timeout = timeout
        self._ua = ua
        self._force_ctag = force_ctag
        self._client = DAVClient(
            url=url,
            username=username or None,
            password=password or None,
            timeout=int(timeout) or 1,
            enable_rfc6764=False,
            headers={"User-Agent": ua},
        )
        self._renegotiated = False
        if username:
            # Preemptive Basic saves a round trip; a 401 naming another scheme renegotiates.
            self._client.build_auth_object(["basic"])

    # ----------------------------------------------------------------------------------
    # Transport

    def _url(self, href: str) -> str:
        return self._origin + href

    def _send(
        self, method: str, url: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> _Reply:
        """One request; connection failures, timeouts and 5xx raise :class:`Transient`."""
        all_headers = {"User-Agent": self._ua, **(headers or {})}
        try:
            resp = self._client.session.request(
                method,
                url,
                data=body or None,
                headers=all_headers,
                auth=self._client.auth,
                timeout=self._timeout,
            )
            reply = _Reply(
                int(resp.status_code or 0),
                {str(k).lower(): str(v) for k, v in resp.headers.items()},
                resp.content or b"",
            )
        except (http.exceptions.RequestException, OSError) as err:
            raise Transient(f"{method} {url} failed: {err}") from err
        if reply.status == 401 and self._client.username and not self._renegotiated:
            self._renegotiated = True
            schemes = extract_auth_types(reply.headers.get("www-authenticate", ""))
            if schemes:
                try:
                    self._client.build_auth_object(sorted(schemes))
                except Exception as err:  # caldav's AuthorizationError: no usable scheme
                    raise AuthRevoked(f"{url}: no usable authentication: {err}") from err
                return self._send(method, url, body, headers)
        retry_after = _retry_after(reply.headers.get("retry-after"))
        if reply.status == 429 or (reply.status == 503 and retry_after is not None):
            raise RateLimited(f"{method} {url}: HTTP {reply.status}", retry_after)
        # 501 Not Implemented is an answer (an unsupported REPORT), not an outage.
        if (reply.status >= 500 and reply.status != 501) or reply.status == 0:
            raise Transient(f"{method} {url}: HTTP {reply.status}")
        return reply

    def _read(
        self, method: str, url: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> _Reply:
        """An idempotent request (GET, PROPFIND, REPORT), retried on transient failures."""
        retrying = Retrying(
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.1, max=1.0) + wait_random(0, 0.1),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        return retrying(self._send, method, url, body, headers)

    def _fail(self, reply: _Reply, what: str) -> BackendError:
        """The error for an unexpected answer (never :class:`NotFound`)."""
        if reply.status in (401, 403):
            return AuthRevoked(f"{what}: the server refused the credentials (HTTP {reply.status})")
        if reply.status == 412:
            return PreconditionFailed(f"{what}: the event changed on the server (HTTP 412)")
        return Transient(f"{what}: unexpected HTTP {reply.status}")

    def _report(self, href: str, body: str, depth: str) -> _Reply:
        return self._read(
            "REPORT", self._url(href), body.encode(), {"Content-Type": XML, "Depth": depth}
        )

    def _multistatus(self, reply: _Reply, what: str) -> tuple[list[dav.DavResponse], str | None]:
        if reply.status != 207:
            raise self._fail(reply, what)
        try:
            return dav.parse_multistatus(reply.body)
        except dav.DavXmlError as err:
            raise Transient(f"{what}: unparseable answer ({err})") from err

    # ----------------------------------------------------------------------------------
    # Single events

    def remote_id_for(self, uid: str, session_id: str) -> str:
        """``<collection path><UID>.ics``, normalized like the hrefs the server reports."""
        return dav.member_href(self._collection, f"{uid}.ics")

    def _parse(self, data: bytes | str, href: str) -> EventContent:
        try:
            content = parse_event(data)
        except IcsError as err:
            raise Transient(f"{href}: the server returned unparseable iCalendar ({err})") from err
        if content is None:
            raise Transient(f"{href}: the object holds no VEVENT")
        return content

    def _fetch(self, href: str) -> tuple[_Reply, str]:
        """GET one object: (reply, etag); NotFound on 404/410."""
        reply = self._read("GET", self._url(href), headers={"Accept": "text/calendar"})
        if reply.status in (404, 410):
            raise NotFound(f"{href} is gone (HTTP {reply.status})")
        if reply.status != 200:
            raise self._fail(reply, f"GET {href}")
        etag = reply.headers.get("etag") or self._etag_of(href)
        return reply, etag

    def _etag_of(self, href: str) -> str:
        reply = self._read(
            "PROPFIND",
            self._url(href),
            dav.PROPFIND_ETAGS.encode(),
            {"Content-Type": XML, "Depth": "0"},
        )
        if reply.status in (404, 410):
            raise NotFound(f"{href} is gone (HTTP {reply.status})")
        items, _ = self._multistatus(reply, f"PROPFIND {href}")
        etag = next((i.text(dav.DAV + "getetag") for i in items if i.href == href), None)
        if not etag:
            raise Transient(f"{href}: the server reports no etag")
        return etag

    def get(self, remote_id: str) -> RemoteEvent:
        """A fresh GET; :class:`NotFound` only on 404/410, anything else is not a deletion."""
        href = dav.normalize_href(remote_id)
        reply, etag = self._fetch(href)
        return RemoteEvent(href, etag, self._parse(reply.body, href))

    def _put(self, href: str, data: bytes, condition: Mapping[str, str], what: str) -> str:
        """PUT once (never retried); returns the new etag (a fresh read when none is sent)."""
        reply = self._send("PUT", self._url(href), data, {"Content-Type": ICS, **condition})
        if reply.status == 412:
            raise PreconditionFailed(f"{what} {href}: precondition failed (HTTP 412)")
        if not reply.ok:
            raise self._fail(reply, f"{what} {href}")
        etag = reply.headers.get("etag")
        if etag and not etag.startswith("W/"):
            return etag
        # No (strong) etag: the server may have rewritten the object; read what it holds.
        return self._etag_of(href)

    def create(self, event: DesiredEvent) -> RemoteEvent:
        """PUT with ``If-None-Match: *``; :class:`PreconditionFailed` when it exists."""
        href = self.remote_id_for(event.uid, event.session_id)
        data = build_event(event, datetime.now(UTC))
        etag = self._put(href, data, {"If-None-Match": "*"}, "create")
        return RemoteEvent(href, etag, self._parse(data, href))

    def update(self, remote_id: str, event: DesiredEvent, etag: str) -> RemoteEvent:
        """Read-modify-write of syncd's fields under ``If-Match: etag``."""
        href = dav.normalize_href(remote_id)
        reply, current = self._fetch(href)
        if not _same_etag(current, etag):
            raise PreconditionFailed(f"update {href}: etag {current} is not {etag}")
        now = datetime.now(UTC)
        try:
            data = apply_desired(reply.body, event, now)
        except IcsError as err:
            # Nothing of the admin's can be kept from an object no parser understands.
            log.warning("%s: rewriting an unparseable event from scratch (%s)", href, err)
            data = build_event(event, now)
        new_etag = self._put(href, data, {"If-Match": current}, "update")
        return RemoteEvent(href, new_etag, self._parse(data, href))

    def delete(self, remote_id: str, etag: str | None) -> None:
        """DELETE under ``If-Match`` (when given); 404/410 count as done."""
        href = dav.normalize_href(remote_id)
        headers = {"If-Match": etag} if etag else {}
        reply = self._send("DELETE", self._url(href), b"", headers)
        if reply.ok or reply.status in (404, 410):
            return
        if reply.status == 412:
            raise PreconditionFailed(f"delete {href}: the event changed (HTTP 412)")
        raise self._fail(reply, f"DELETE {href}")

    # ----------------------------------------------------------------------------------
    # Change feed

    def changes(self, cursor: str | None, known: Mapping[str, str]) -> ChangeSet:
        """Changes since ``cursor``; ``None`` gives a full listing (``full=True``)."""
        if cursor is None:
            if self._force_ctag:
                return self._ctag_changes(None, known)
            return self._sync_changes("")
        if cursor.startswith(CTAG_PREFIX):
            return self._ctag_changes(cursor.removeprefix(CTAG_PREFIX), known)
        if cursor.startswith(SYNC_PREFIX) and not self._force_ctag:
            token = cursor.removeprefix(SYNC_PREFIX)
            if token:
                return self._sync_changes(token)
        raise CursorExpired(f"cursor {cursor!r} is not valid for this calendar")

    def _sync_changes(self, token: str) -> ChangeSet:
        full = not token
        what = f"sync-collection {self._collection}"
        changed: dict[str, dav.DavResponse] = {}
        removed: set[str] = set()
        for _ in range(MAX_SYNC_ROUNDS):
            reply = self._report(self._collection, dav.sync_collection_body(token), "0")
            if reply.status != 207:
                if not full and reply.status in INVALID_TOKEN_STATUSES:
                    log.info(
                        "%s: sync token refused (HTTP %s, %s)",
                        self._collection,
                        reply.status,
                        dav.error_condition(reply.body),
                    )
                    raise CursorExpired(f"{what}: the server refused the sync token")
                unsupported = full and reply.status in UNSUPPORTED_REPORT_STATUSES
                if unsupported and not self._supports_sync():
                    log.info("%s: no sync-collection; using ctag", self._collection)
                    return self._ctag_changes(None, {})
                if reply.status in (404, 410):
                    raise Transient(f"{what}: the calendar collection is missing (HTTP 404)")
                raise self._fail(reply, what)
            items, new_token = self._multistatus(reply, what)
            if not new_token:
                raise Transient(f"{what}: the answer carries no sync-token")
            truncated = False
            for item in items:
                if item.href.rstrip("/") == self._collection.rstrip("/"):
                    truncated = truncated or item.status == 507
                elif item.status in (404, 410):
                    changed.pop(item.href, None)
                    removed.add(item.href)
                elif item.status is None or item.status == 200:
                    removed.discard(item.href)
                    changed[item.href] = item
            token = new_token
            if not truncated:
                break
        else:
            raise Transient(f"{what}: the server kept truncating the answer")
        events = self._events(changed.values())
        return ChangeSet(
            changed=tuple(events),
            removed=() if full else tuple(sorted(removed)),
            cursor=SYNC_PREFIX + token,
            full=full,
        )

    def _supports_sync(self) -> bool:
        """Whether the collection lists sync-collection in its supported-report-set."""
        item = self._collection_props()
        return dav.supports_sync_collection(item)

    def _collection_props(self) -> dav.DavResponse:
        reply = self._read(
            "PROPFIND",
            self._url(self._collection),
            dav.PROPFIND_COLLECTION.encode(),
            {"Content-Type": XML, "Depth": "0"},
        )
        if reply.status in (404, 410):
            raise Transient(f"{self._collection}: the calendar collection is missing")
        items, _ = self._multistatus(reply, f"PROPFIND {self._collection}")
        if not items:
            raise Transient(f"PROPFIND {self._collection}: empty answer")
        return items[0]

    def _ctag_changes(self, last: str | None, known: Mapping[str, str]) -> ChangeSet:
        """The fallback feed: ctag first (read before the listing), then an etag diff."""
        props = self._collection_props()
        ctag = (
            props.text(dav.CS + "getctag")
            or props.text(dav.DAV + "sync-token")
            or props.text(dav.DAV + "getetag")
            or ""
        )
        cursor = CTAG_PREFIX + ctag
        if last is not None and ctag and ctag == last:
            return ChangeSet(changed=(), removed=(), cursor=cursor)
        reply = self._read(
            "PROPFIND",
            self._url(self._collection),
            dav.PROPFIND_ETAGS.encode(),
            {"Content-Type": XML, "Depth": "1"},
        )
        items, _ = self._multistatus(reply, f"PROPFIND {self._collection}")
        listing = {
            i.href: i.text(dav.DAV + "getetag") or ""
            for i in items
            if i.href.rstrip("/") != self._collection.rstrip("/") and not i.is_collection
        }
        if last is None:
            wanted = list(listing)
            removed: tuple[str, ...] = ()
        else:
            seen = {dav.normalize_href(k): v for k, v in known.items()}
            # Unknown members count as changed: without a change feed nothing else tells.
            wanted = [h for h, e in listing.items() if not e or seen.get(h) != e]
            removed = tuple(sorted(h for h in seen if h not in listing))
        entries = [dav.DavResponse(h, 200) for h in wanted]
        return ChangeSet(
            changed=tuple(self._events(entries)),
            removed=removed,
            cursor=cursor,
            full=last is None,
        )

    def _events(self, entries: Iterable[dav.DavResponse]) -> list[RemoteEvent]:
        """Parse entries that came with data; fetch the rest with calendar-multiget."""
        out: list[RemoteEvent] = []
        missing: list[str] = []
        for item in entries:
            data, etag = item.text(dav.CALDAV + "calendar-data"), item.text(dav.DAV + "getetag")
            if data and etag:
                self._collect(out, item.href, etag, data)
            else:
                missing.append(item.href)
        for i in range(0, len(missing), MULTIGET_BATCH):
            batch = missing[i : i + MULTIGET_BATCH]
            what = f"calendar-multiget {self._collection}"
            reply = self._report(self._collection, dav.multiget_body(batch), "1")
            items, _ = self._multistatus(reply, what)
            for item in items:
                data, etag = item.text(dav.CALDAV + "calendar-data"), item.text(dav.DAV + "getetag")
                if item.status in (404, 410):
                    # Deleted since the feed named it: the next feed reports the removal.
                    continue
                if data is None or not etag:
                    raise Transient(f"{what}: no data or etag for {item.href}")
                self._collect(out, item.href, etag, data)
        return out

    def _collect(self, out: list[RemoteEvent], href: str, etag: str, data: str) -> None:
        try:
            content = parse_event(data)
        except IcsError as err:
            # Skipped, never reported as removed: a broken object is not a deletion.
            log.warning("%s: skipping an unparseable calendar object (%s)", href, err)
            return
        if content is None:
            log.debug("%s: not a VEVENT, skipped", href)
            return
        out.append(RemoteEvent(href, etag, content))

    # ----------------------------------------------------------------------------------
    # Availability

    def busy(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """Opaque, non-cancelled intervals overlapping [start, end), recurrences expanded."""
        what = f"calendar-query {self._collection}"
        reply = self._report(self._collection, dav.busy_query_body(start, end, True), "1")
        if reply.status in (400, 501):  # the server cannot expand: take the masters
            reply = self._report(self._collection, dav.busy_query_body(start, end, False), "1")
        items, _ = self._multistatus(reply, what)
        out: set[tuple[datetime, datetime]] = set()
        for item in items:
            data = item.text(dav.CALDAV + "calendar-data")
            if not data:
                continue
            try:
                out.update(busy_intervals(data, start, end))
            except IcsError as err:
                log.warning("%s: skipping an unparseable calendar object (%s)", item.href, err)
        return sorted(out)

    def close(self) -> None:
        """Release the HTTP session."""
        self._client.close()
