"""The CalDAV change feed: sync-collection, the ctag fallback, and the etag listing.

- RFC 6578 ``sync-collection`` (cursor ``sync:<token>``);
- for servers without it, a ``getctag`` check followed by a ``getetag`` listing diffed
  against what the caller knows (cursor ``ctag:<ctag>``);
- a full listing asked for while syncd already mirrors events (a reconciliation, or the
  listing after an expired cursor) is a Depth:1 ``getetag`` listing compared with
  ``known``: only what differs is fetched (``ChangeSet.reconciled``).

DAViCal and SOGo answer an unknown token with a full listing as if it were a delta (no
``valid-sync-token`` error, no 404s for what was deleted). On those servers every
non-empty delta under a new token is checked against the etag listing, so what such an
answer hides (deletions) is reported all the same; a future token there answers "nothing"
and only the periodic reconciliation tells.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping

from adapters.caldav import dav
from adapters.caldav.ics import IcsError, parse_event
from adapters.caldav.quirks import Quirks
from adapters.caldav.transport import Transport, strong_etag
from syncd.ports import ChangeSet, CursorExpired, ListingPage, RemoteEvent, Transient

log = logging.getLogger("adapters.caldav.backend")

SYNC_PREFIX = "sync:"
CTAG_PREFIX = "ctag:"
#: How Radicale's sync tokens begin. Radicale hashes the history of every member, deleted
#: ones included (kept for ``max_sync_token_age``, 30 days by default), into its token and
#: answers a delta from an old token with each member changed or deleted since (see
#: :meth:`Feed.keeps_history`).
RADICALE_TOKEN = "http://radicale.org/ns/sync/"
MULTIGET_BATCH = 100
#: Events a page of a first listing (see :meth:`Feed.full_listing`).
PAGE = 100
MAX_SYNC_ROUNDS = 500
# Status codes servers give a sync-collection REPORT with a token they no longer accept:
# Radicale 403, Cyrus 403, Xandikos 412 (all with DAV:valid-sync-token), others 409.
INVALID_TOKEN_STATUSES = (403, 409, 412)
# Status codes of a REPORT the server does not implement.
UNSUPPORTED_REPORT_STATUSES = (400, 403, 405, 415, 501)


class Feed:
    """The change feed of one calendar collection."""

    def __init__(self, t: Transport, collection: str, quirks: Quirks, force_ctag: bool) -> None:
        self._t = t
        self._collection = collection
        self._quirks = quirks
        self._force_ctag = force_ctag
        self._token = ""  # the sync token last read ("" before one, or under ctag)

    def changes(
        self, cursor: str | None, known: Mapping[str, str], own: Mapping[str, str] | None = None
    ) -> ChangeSet:
        """Changes since ``cursor``; ``None`` gives a full listing (see the module).

        ``own`` (href -> etag of syncd's writes since the last read, already recorded): a
        sync-collection delta asks for etags alone, leaves out the members still at those
        etags (syncd's echoes) and fetches the rest with calendar-multiget.
        """
        if cursor is None:
            return self.full_listing(known).gathered()
        if cursor.startswith(CTAG_PREFIX):
            return self._ctag_changes(cursor.removeprefix(CTAG_PREFIX), known)
        if cursor.startswith(SYNC_PREFIX) and not self._force_ctag:
            token = cursor.removeprefix(SYNC_PREFIX)
            if token:
                return self._sync_changes(token, known, own or {})
        raise CursorExpired(f"cursor {cursor!r} is not valid for this calendar")

    def keeps_history(self) -> bool:
        """Whether a delta from the token last read reports every change made since, an
        event created and deleted since included (as deleted): a server that keeps the
        history of deleted members under its tokens, as Radicale does. Xandikos derives
        its token from the collection's contents instead (a token comes back once the
        contents do, and an event created and deleted in between is in neither), and of
        other servers syncd assumes nothing."""
        return self._token.startswith(RADICALE_TOKEN)

    # -- sync-collection ---------------------------------------------------------------

    def _sync_changes(
        self, token: str, known: Mapping[str, str], own: Mapping[str, str]
    ) -> ChangeSet:
        full = not token
        etags_only = bool(own) and not full
        sent = token
        what = f"sync-collection {self._collection}"
        changed: dict[str, dav.DavResponse] = {}
        removed: set[str] = set()
        for _ in range(MAX_SYNC_ROUNDS):
            reply = self._t.report(
                self._collection, dav.sync_collection_body(token, etags_only), "0"
            )
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
                raise self._t.fail(reply, what)
            items, new_token = self._t.multistatus(reply, what)
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
        self._token = token
        if not full and not self._quirks.refuses_bad_tokens and changed and token != sent:
            removed |= self._check_delta(known)
        events = self._events(i for i in changed.values() if not _echo(i, own))
        return ChangeSet(
            changed=tuple(events),
            removed=() if full else tuple(sorted(removed)),
            cursor=SYNC_PREFIX + token,
            full=full,
        )

    def _check_delta(self, known: Mapping[str, str]) -> set[str]:
        """On a server that answers a bad token with a listing: what the delta may hide.

        Such an answer (DAViCal, SOGo) names every member and none of what was deleted, so
        every non-empty delta there is checked against the etag listing: the known events
        the server no longer holds are returned as removed (and verified by the caller).
        """
        listing = self.listing()
        return {h for h in (dav.normalize_href(k) for k in known) if h not in listing}

    def _supports_sync(self) -> bool:
        """Whether the collection lists sync-collection in its supported-report-set."""
        return dav.supports_sync_collection(self._collection_props())

    def _collection_props(self) -> dav.DavResponse:
        reply = self._t.propfind(self._collection, dav.PROPFIND_COLLECTION, "0")
        if reply.status in (404, 410):
            raise Transient(f"{self._collection}: the calendar collection is missing")
        items, _ = self._t.multistatus(reply, f"PROPFIND {self._collection}")
        if not items:
            raise Transient(f"PROPFIND {self._collection}: empty answer")
        return items[0]

    # -- etag listings -----------------------------------------------------------------

    def listing(self) -> dict[str, str]:
        """Every member's href and (strong) etag: one Depth:1 PROPFIND."""
        reply = self._t.propfind(self._collection, dav.PROPFIND_ETAGS, "1")
        if reply.status in (404, 410):
            raise Transient(f"{self._collection}: the calendar collection is missing")
        items, _ = self._t.multistatus(reply, f"PROPFIND {self._collection}")
        return {
            i.href: strong_etag(i.text(dav.DAV + "getetag") or "")
            for i in items
            if i.href.rstrip("/") != self._collection.rstrip("/") and not i.is_collection
        }

    def _diff(
        self, listing: Mapping[str, str], known: Mapping[str, str]
    ) -> tuple[list[dav.DavResponse], tuple[str, ...]]:
        seen = {dav.normalize_href(k): strong_etag(v) for k, v in known.items()}
        # Unknown members count as changed: without a change feed nothing else tells.
        wanted = [h for h, e in listing.items() if not e or seen.get(h) != e]
        removed = tuple(sorted(h for h in seen if h not in listing))
        return [dav.DavResponse(h, 200) for h in wanted], removed

    def _members(self) -> tuple[str, dict[str, str]]:
        """(cursor, href → etag): read together, the cursor first or in the same answer."""
        listed = None if self._force_ctag else self._initial_listing()
        if listed is not None:
            # The token and the listing of one initial sync-collection agree by definition;
            # a PROPFIND's sync-token need not (SOGo's then answers the next delta empty).
            token, members = listed
            return SYNC_PREFIX + token, members
        props = self._collection_props()
        self._token = ""
        return CTAG_PREFIX + _ctag(props), self.listing()

    def _initial_listing(self) -> tuple[str, dict[str, str]] | None:
        """(token, href → etag) from an initial etag-only sync-collection; None without one."""
        what = f"sync-collection {self._collection}"
        reply = self._t.report(self._collection, dav.sync_collection_body("", True), "0")
        if reply.status != 207:
            if reply.status in UNSUPPORTED_REPORT_STATUSES and not self._supports_sync():
                return None
            raise self._t.fail(reply, what)
        items, token = self._t.multistatus(reply, what)
        if not token or any(i.status == 507 for i in items):
            return None  # no token, or truncated: the PROPFIND listing instead
        self._token = token
        members = {
            i.href: strong_etag(i.text(dav.DAV + "getetag") or "")
            for i in items
            if i.href.rstrip("/") != self._collection.rstrip("/")
            and not i.is_collection
            and i.status in (None, 200)
        }
        return token, members

    def _ctag_changes(self, last: str | None, known: Mapping[str, str]) -> ChangeSet:
        """The fallback feed: ctag first (read before the listing), then an etag diff."""
        cursor = CTAG_PREFIX + _ctag(self._collection_props())
        self._token = ""
        same = cursor != CTAG_PREFIX and cursor == CTAG_PREFIX + last if last is not None else False
        if same and self._quirks.exact_tokens:  # SOGo's ctag stays put within a second
            return ChangeSet(changed=(), removed=(), cursor=cursor)
        listing = self.listing()
        if last is None:
            entries = [dav.DavResponse(h, 200) for h in listing]
            removed: tuple[str, ...] = ()
        else:
            entries, removed = self._diff(listing, known)
        return ChangeSet(
            changed=tuple(self._events(entries)),
            removed=removed,
            cursor=cursor,
            full=last is None,
        )

    # -- fetching ----------------------------------------------------------------------

    def _events(self, entries: Iterable[dav.DavResponse]) -> list[RemoteEvent]:
        """Parse entries that came with data; fetch the rest with calendar-multiget."""
        return [e for batch in self._event_batches(entries) for e in batch]

    def _event_batches(self, entries: Iterable[dav.DavResponse]) -> Iterator[list[RemoteEvent]]:
        """:meth:`_events` a batch at a time: those that came with data, then a
        calendar-multiget of :data:`MULTIGET_BATCH` at a time for the rest."""
        out: list[RemoteEvent] = []
        missing: list[str] = []
        for item in entries:
            data, etag = item.text(dav.CALDAV + "calendar-data"), item.text(dav.DAV + "getetag")
            if data and etag:
                _collect(out, item.href, etag, data)
            else:
                missing.append(item.href)
        if out:
            yield out
        yield from self._multiget(missing)

    def _multiget(self, hrefs: list[str]) -> Iterator[list[RemoteEvent]]:
        for i in range(0, len(hrefs), MULTIGET_BATCH):
            batch = hrefs[i : i + MULTIGET_BATCH]
            what = f"calendar-multiget {self._collection}"
            reply = self._t.report(self._collection, dav.multiget_body(batch), "1")
            items, _ = self._t.multistatus(reply, what)
            out: list[RemoteEvent] = []
            for item in items:
                data, etag = item.text(dav.CALDAV + "calendar-data"), item.text(dav.DAV + "getetag")
                if item.status in (404, 410):
                    # Deleted since the feed named it: the next feed reports the removal.
                    continue
                if data is None or not etag:
                    raise Transient(f"{what}: no data or etag for {item.href}")
                _collect(out, item.href, etag, data)
            yield out

    # -- full listings, page by page ---------------------------------------------------

    def full_listing(self, known: Mapping[str, str]) -> ChangeSet:
        """What ``changes(None, known)`` returns, handed over page by page (see
        :class:`syncd.ports.PagedListing`): a reconciliation's differing events a
        multiget at a time; a first listing's sync-collection parsed as it arrives."""
        if known:
            return ChangeSet((), (), None, reconciled=True, pages=self._reconcile_pages(known))
        return ChangeSet((), (), None, full=True, pages=self._full_pages())

    def _reconcile_pages(self, known: Mapping[str, str]) -> Iterator[ListingPage]:
        """The etag listing compared with ``known``; only what differs is fetched.

        The cursor (sync token or ctag) is read before the listing, so whatever changes
        in between is reported again by the next delta (an echo), never missed.
        """
        cursor, members = self._members()
        entries, removed = self._diff(members, known)
        del members
        for batch in self._event_batches(entries):
            yield ListingPage(tuple(batch))
        yield ListingPage((), removed, last=True, cursor=cursor)

    def _full_pages(self) -> Iterator[ListingPage]:
        """A first sync-collection (the whole calendar with its data) read as it arrives,
        :data:`PAGE` events a page; the rounds after a truncated answer likewise, what they
        report deleted named ``removed``. Without sync-collection: the ctag listing."""
        if self._force_ctag:
            yield self._whole(self._ctag_changes(None, {}))
            return
        what = f"sync-collection {self._collection}"
        token, first = "", True
        for _ in range(MAX_SYNC_ROUNDS):
            body = dav.sync_collection_body(token)
            reply = self._t.report(self._collection, body, "0", stream=True)
            if reply.status != 207:
                unsupported = reply.status in UNSUPPORTED_REPORT_STATUSES
                if first and unsupported and not self._supports_sync():
                    log.info("%s: no sync-collection; using ctag", self._collection)
                    yield self._whole(self._ctag_changes(None, {}))
                    return
                if reply.status in (404, 410):
                    raise Transient(f"{what}: the calendar collection is missing (HTTP 404)")
                raise self._t.fail(reply, what)
            reader = dav.MultistatusReader()
            truncated = False
            page: list[RemoteEvent] = []
            gone: list[str] = []
            missing: list[str] = []
            try:
                for item in reader.responses(reply.chunks or iter([reply.body])):
                    if item.href.rstrip("/") == self._collection.rstrip("/"):
                        truncated = truncated or item.status == 507
                    elif item.status in (404, 410):
                        if not first:  # deleted since an earlier round named it
                            gone.append(item.href)
                    elif item.status is None or item.status == 200:
                        data = item.text(dav.CALDAV + "calendar-data")
                        etag = item.text(dav.DAV + "getetag")
                        if data and etag:
                            _collect(page, item.href, etag, data)
                        else:
                            missing.append(item.href)
                    if len(page) >= PAGE:
                        yield ListingPage(tuple(page), tuple(gone))
                        page, gone = [], []
            except dav.DavXmlError as err:
                raise Transient(f"{what}: unparseable answer ({err})") from err
            if not reader.token:
                raise Transient(f"{what}: the answer carries no sync-token")
            yield ListingPage(tuple(page), tuple(gone))
            for batch in self._multiget(missing):
                yield ListingPage(tuple(batch))
            token, first = reader.token, False
            if not truncated:
                self._token = token
                yield ListingPage((), last=True, cursor=SYNC_PREFIX + token)
                return
        raise Transient(f"{what}: the server kept truncating the answer")

    @staticmethod
    def _whole(cs: ChangeSet) -> ListingPage:
        return ListingPage(cs.changed, cs.removed, last=True, cursor=cs.cursor)


def _echo(item: dav.DavResponse, own: Mapping[str, str]) -> bool:
    """Whether a reported member still carries the etag recorded for syncd's write."""
    mine = own.get(item.href)
    etag = item.text(dav.DAV + "getetag")
    return mine is not None and etag is not None and strong_etag(etag) == mine


def _ctag(props: dav.DavResponse) -> str:
    return (
        props.text(dav.CS + "getctag")
        or props.text(dav.DAV + "sync-token")
        or props.text(dav.DAV + "getetag")
        or ""
    )


def _collect(out: list[RemoteEvent], href: str, etag: str, data: str) -> None:
    try:
        content = parse_event(data)
    except IcsError as err:
        # Skipped, never reported as removed: a broken object is not a deletion.
        log.warning("%s: skipping an unparseable calendar object (%s)", href, err)
        return
    if content is None:
        log.debug("%s: not a VEVENT, skipped", href)
        return
    out.append(RemoteEvent(href, strong_etag(etag), content))
