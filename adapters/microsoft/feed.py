"""The change feed of one Graph calendar: ``calendarView/delta`` over a window, and removals.

A round starts with ``calendarView/delta?startDateTime&endDateTime`` (from a day ago to the
furthest bookable day); pages follow ``@odata.nextLink`` (``Prefer: odata.maxpagesize``) and
the ``@odata.deltaLink`` of the last page is the cursor (``g1:<window start>:<deltaLink>``),
never one from the middle of a round. A 410 (``SyncStateNotFound``, ``resyncRequired``) or a
cursor of another shape is :class:`CursorExpired`. The window is fixed by a round's first
request: once it is a day old, the cursor has expired too, and a new round starts (a full
listing, which is not a deletion). A new round is handed over page by page
(:func:`full_listing`), never held whole.

Delta rows carry no extended properties but do carry ``transactionId``: a row whose
``transactionId`` syncd chose is that session's event. ``{"@removed": …}`` only names a
Graph id, and Graph also sends it for events *outside* the window that changed (one booked
far ahead, one dragged out of range): so whenever removals appear, syncd lists the events
carrying its extended property (one paged request) and reports as removed only the sessions
whose event is no longer there; one that lives on outside the window is reported as it is
now. Occurrences of a series are folded into their master, read with a GET.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from adapters.microsoft.transport import Transport
from adapters.microsoft.wire import (
    CURSOR_VERSION,
    EXPAND,
    SESSION_PROPERTY,
    Json,
    _BadRequest,
    _Missing,
    parse_event,
    query_instant,
    session_of_transaction,
)
from syncd.ports import (
    BackendError,
    ChangeSet,
    CursorExpired,
    ListingPage,
    NotFound,
    RemoteEvent,
    Transient,
    WindowMoved,
)

log = logging.getLogger("adapters.microsoft")
MAX_PAGES = 10_000


class Calendar(Protocol):
    """What the feed needs from the backend."""

    transport: Transport
    cal_path: str
    page_size: int
    past_days: int
    window_days: int
    window_age: timedelta

    def raw_event(self, graph_id: str) -> Json:
        """GET of one event by Graph id (with syncd's properties); NotFound when gone."""
        ...


@dataclass(frozen=True)
class Round:
    """The rows of one delta round (or its continuation) and the cursor after it."""

    rows: list[Json]
    cursor: str
    full: bool


def _window(cal: Calendar, now: datetime) -> tuple[datetime, datetime]:
    start = (now - timedelta(days=cal.past_days)).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=cal.window_days)


def _page_rows(
    cal: Calendar, what: str, url: str, params: Mapping[str, str] | None
) -> Iterator[tuple[list[Json], str | None]]:
    """Each page's rows of a delta round as it arrives, following nextLink; the last one
    comes with the deltaLink (``None`` before it)."""
    prefer = f"odata.maxpagesize={cal.page_size}"
    for _ in range(MAX_PAGES):
        doc = cal.transport.json(what, "GET", url, params=params, prefer=prefer)
        rows = [r for r in doc.get("value") or [] if isinstance(r, dict)]
        params = None  # the links carry their own query
        nxt, done = doc.get("@odata.nextLink"), doc.get("@odata.deltaLink")
        if nxt:
            url = str(nxt)
            yield rows, None
        elif done:
            yield rows, str(done)
            return
        else:
            raise Transient(f"Microsoft Graph {what}: last page without @odata.deltaLink")
    raise Transient(f"Microsoft Graph {what}: more than {MAX_PAGES} pages")


def _pages(
    cal: Calendar, what: str, url: str, params: Mapping[str, str] | None
) -> tuple[list[Json], str]:
    """Every row of a delta round, following nextLink; the deltaLink of its last page."""
    rows: list[Json] = []
    for got, done in _page_rows(cal, what, url, params):
        rows.extend(got)
        if done is not None:
            return rows, done
    raise Transient(f"Microsoft Graph {what}: the round ended without its last page")


def read_round(cal: Calendar, cursor: str | None, now: datetime) -> Round:
    """The rows since ``cursor``; :class:`CursorExpired` when there is none or its window is a
    day old (a new round over a new window is a full listing: :func:`full_listing`)."""
    if cursor is not None:
        version, _, rest = cursor.partition(":")
        stamp, _, link = rest.partition("|")
        try:
            since = datetime.fromisoformat(stamp)
        except ValueError:
            since = None
        if version != CURSOR_VERSION or since is None or not link.startswith(cal.transport.base):
            raise CursorExpired(f"cursor {cursor[:24]!r} is not a {CURSOR_VERSION} cursor here")
        if now - since < cal.window_age:
            try:
                rows, done = _pages(cal, "calendarView/delta", link, None)
            except _Missing as err:
                if err.status == 410:
                    raise CursorExpired(str(err)) from err
                raise BackendError(f"{err} (the calendar is gone?)") from err
            except _BadRequest as err:
                raise CursorExpired(str(err)) from err  # a token the server never issued
            return Round(rows, f"{CURSOR_VERSION}:{stamp}|{done}", full=False)
        log.info("calendar %s: delta window is a day old; new round", cal.cal_path)
        raise WindowMoved(f"calendar {cal.cal_path}: the delta window is a day old")
    raise CursorExpired("no cursor: a full listing (full_listing) starts a new round")


def _property_bodies(cal: Calendar) -> Iterator[Json]:
    """Every live event of the calendar carrying syncd's property, page after page."""
    url = f"{cal.cal_path}/events"
    params: Mapping[str, str] | None = {
        "$filter": f"singleValueExtendedProperties/any(ep: ep/id eq '{SESSION_PROPERTY}')",
        "$expand": EXPAND,
        "$top": str(cal.page_size),
    }
    for _ in range(MAX_PAGES):
        doc = cal.transport.json("events (syncd's)", "GET", url, params=params)
        yield from (b for b in doc.get("value") or [] if isinstance(b, dict))
        params = None
        nxt = doc.get("@odata.nextLink")
        if not nxt:
            return
        url = str(nxt)
    raise Transient(f"Microsoft Graph events of {cal.cal_path}: more than {MAX_PAGES} pages")


def property_listing(
    cal: Calendar, wanted: Container[str] | None = None, live: set[str] | None = None
) -> dict[str, Json]:
    """The live events carrying syncd's property, by session id (oldest wins): those of
    ``wanted`` only when given; ``live`` collects every session id seen."""
    found: dict[str, Json] = {}
    for body in _property_bodies(cal):
        key = _key(body)
        if not key:
            continue
        if live is not None:
            live.add(key)
        if wanted is not None and key not in wanted:
            continue
        if key not in found or _older(body, found[key]):
            found[key] = body
    return found


def _key(body: Mapping[str, Any]) -> str | None:
    try:
        return parse_event(body).content.session_id
    except (ValueError, KeyError):
        return None


def _older(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """A copy of syncd's event is newer than the event itself."""
    return str(a.get("createdDateTime") or "") < str(b.get("createdDateTime") or "")


def _series_member(row: Json, key: str | None, masters: dict[str, str]) -> bool:
    """Whether ``row`` is an occurrence or exception of a series; its master's id is kept
    (in ``masters``, by the session ``key`` it carries) to be read whole later."""
    if not (row.get("seriesMasterId") or row.get("type") in ("occurrence", "exception")):
        return False
    if key:
        masters[str(row.get("seriesMasterId") or "")] = key
    return True


def _masters(
    cal: Calendar, masters: Mapping[str, str], have: Container[str]
) -> Iterator[tuple[str, RemoteEvent]]:
    """(key, event) of each series master named (by id → key) whose key is not in
    ``have``, read from the server; one deleted since is left to the listing."""
    for master_id, key in masters.items():
        if not master_id or key in have:
            continue
        try:
            ev = _parse(cal.raw_event(master_id), key, cal.cal_path)
        except NotFound:
            continue  # deleted since: the listing below decides
        if ev is not None:
            yield key, ev


def _parse(body: Mapping[str, Any], key: str | None, what: str) -> RemoteEvent | None:
    try:
        return parse_event(body, key)
    except (ValueError, KeyError) as err:
        log.warning("%s: skipping malformed event %s: %s", what, body.get("id"), err)
        return None


def fold(cal: Calendar, rnd: Round, known: Mapping[str, str]) -> ChangeSet:
    """The rows of a round as syncd's :class:`ChangeSet` (see the module docstring)."""
    latest: dict[str, Json | None] = {}  # Graph id -> row, None when removed
    for row in rnd.rows:
        gid = str(row.get("id") or "")
        if gid:
            latest.pop(gid, None)
            latest[gid] = None if "@removed" in row else row
    changed: dict[str, RemoteEvent] = {}
    chosen: dict[str, Json] = {}
    masters: dict[str, str] = {}
    for row in (r for r in latest.values() if r is not None):
        key = session_of_transaction(row.get("transactionId"))
        if _series_member(row, key, masters):
            continue
        ev = _parse(row, key, cal.cal_path)
        if ev is None or (ev.remote_id in chosen and not _older(row, chosen[ev.remote_id])):
            continue  # a copy carrying syncd's transactionId is not the session's event
        changed[ev.remote_id], chosen[ev.remote_id] = ev, row
    for _key, ev in _masters(cal, masters, changed):
        changed[ev.remote_id] = ev
    removals = any(r is None for r in latest.values())
    removed: list[str] = []
    # ``known`` is read only here: an idle round never asks syncd for its mirror.
    missing = [k for k in known if k not in changed] if rnd.full or removals else []
    if missing:
        listing = property_listing(cal, set(missing))
        for key in missing:
            body = listing.get(key)
            if body is None:
                if not rnd.full:
                    removed.append(key)
                continue
            ev = _parse(body, key, cal.cal_path)
            if ev is not None and (rnd.full or ev.etag != known.get(key)):
                changed[key] = ev
    return ChangeSet(
        changed=tuple(changed.values()), removed=tuple(removed), cursor=rnd.cursor, full=rnd.full
    )


def full_listing(cal: Calendar, known: Mapping[str, str], now: datetime) -> ChangeSet:
    """A new round over a new window, its events handed over page by page as Graph
    answers (see :class:`syncd.ports.PagedListing`), then those of ``known`` that live
    outside the window (syncd's property listing). Held meanwhile: per session id listed,
    the creation time of its row (a copy carrying syncd's ``transactionId`` is newer)."""
    return ChangeSet((), (), None, full=True, pages=_full_pages(cal, known, now))


def _full_pages(cal: Calendar, known: Mapping[str, str], now: datetime) -> Iterator[ListingPage]:
    start, end = _window(cal, now)
    params = {"startDateTime": query_instant(start), "endDateTime": query_instant(end)}
    url = f"{cal.cal_path}/calendarView/delta"
    created: dict[str, str] = {}  # session id → createdDateTime of the row handed over
    masters: dict[str, str] = {}  # series master id → session id
    removals = False
    done: str | None = None
    try:
        for rows, link in _page_rows(cal, "calendarView/delta", url, params):
            done = link or done
            events: list[RemoteEvent] = []
            for row in rows:
                if not row.get("id"):
                    continue
                if "@removed" in row:
                    removals = True  # deleted while the round was read: checked below
                    continue
                key = session_of_transaction(row.get("transactionId"))
                if _series_member(row, key, masters):
                    continue
                ev = _parse(row, key, cal.cal_path)
                if ev is None:
                    continue
                when = str(row.get("createdDateTime") or "")
                had = created.get(ev.remote_id)
                if had is not None and when > had:
                    continue  # a copy carrying syncd's transactionId is not the event
                created[ev.remote_id] = when  # the same row again counts as the later one
                events.append(ev)
            del rows
            yield ListingPage(tuple(events))
    except _Missing as err:
        raise BackendError(f"Microsoft calendar {cal.cal_path} not found: {err}") from err
    assert done is not None  # _page_rows ends with the deltaLink or raises
    last: list[RemoteEvent] = []
    for key, ev in _masters(cal, masters, created):
        last.append(ev)
        created[key] = ""
    missing = {k for k in known if k not in created}
    gone: list[str] = []
    if missing or removals:
        live: set[str] | None = set() if removals else None
        for key, body in property_listing(cal, missing, live).items():
            if (ev := _parse(body, key, cal.cal_path)) is not None:
                last.append(ev)
        if live is not None:  # what was handed over and deleted since
            gone = sorted(k for k in created if k not in live)
    cursor = f"{CURSOR_VERSION}:{now.astimezone(UTC).isoformat()}|{done}"
    yield ListingPage(tuple(last), tuple(gone), last=True, cursor=cursor)


def busy_rows(cal: Calendar, start: datetime, end: datetime) -> Iterable[Json]:
    """calendarView rows (series expanded) between ``start`` and ``end``."""
    url = f"{cal.cal_path}/calendarView"
    params: Mapping[str, str] | None = {
        "startDateTime": query_instant(start),
        "endDateTime": query_instant(end),
        "$top": str(cal.page_size),
    }
    for _ in range(MAX_PAGES):
        doc = cal.transport.json("calendarView", "GET", url, params=params)
        yield from (r for r in doc.get("value") or [] if isinstance(r, dict))
        params = None
        nxt = doc.get("@odata.nextLink")
        if not nxt:
            return
        url = str(nxt)
    raise Transient(f"Microsoft Graph calendarView of {cal.cal_path}: more than {MAX_PAGES} pages")
