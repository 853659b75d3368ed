"""The Graph v1.0 calendar surface of the fake: routing and one function per operation.

Paths are those of Microsoft's docs (``/users/{id|upn}/...`` and ``/me/...``): calendars,
events, calendarView, calendarView/delta, instances and subscriptions. Handlers run under the
fake's lock, except subscription creation, whose validation handshake happens outside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from .graph_delta import DEFAULT_PAGE_SIZE, ViewItem, find_occurrence, occurrences, view
from .graph_identity import AccessGrant
from .graph_model import Mailbox, Occurrence, StoredCalendar, StoredEvent, render_event
from .graph_subscriptions import (
    Subscription,
    check_subscription_body,
    parse_resource,
    validation_failed,
)
from .graph_values import (
    GraphError,
    Json,
    invalid_request,
    item_not_found,
    new_guid,
    normalize_property_id,
    parse_instant,
    resolve_zone,
)

if TYPE_CHECKING:
    from .graph_server import FakeGraph

_EXPAND_RE = re.compile(r"^singleValueExtendedProperties\s*\(\s*\$filter\s*=\s*(.+)\)\s*$", re.I)
_ANY_RE = re.compile(
    r"^singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*\1/id\s+eq\s+'([^']*)'"
    r"(?:\s+and\s+\1/value\s+eq\s+'([^']*)')?\s*\)$",
    re.I,
)
DELTA_REFUSED = ("$select", "$expand", "$filter", "$orderby", "$search")


@dataclass
class ApiRequest:
    """One authenticated Graph request, parsed."""

    method: str
    segments: list[str]
    query: dict[str, str]
    body: Json
    grant: AccessGrant
    prefs: dict[str, str]
    url: str
    graph_base: str
    if_match: str | None = None
    changes: list[tuple[Mailbox, str, StoredEvent, str]] = field(default_factory=list)
    applied: dict[str, str] = field(default_factory=dict)

    def q(self, name: str) -> str | None:
        """A query parameter, case-insensitively (``startdatetime`` works as in the docs)."""
        low = name.lower()
        return next((v for k, v in self.query.items() if k.lower() == low), None)


@dataclass
class ApiResponse:
    """What a handler answers: status, JSON body (None: empty), extra headers."""

    status: int
    body: Json | None = None
    headers: dict[str, str] = field(default_factory=dict)


def access_denied() -> GraphError:
    """Graph's 403 for a mailbox the token may not use."""
    return GraphError(
        403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
    )


def resolve_owner(fake: FakeGraph, grant: AccessGrant, user: str | None) -> Mailbox:
    """The mailbox a request (``user`` None for ``/me``) addresses, if the token may use it."""
    if user is None:
        if grant.upn is None:
            raise invalid_request(
                "/me request is only valid with delegated authentication flow.", "BadRequest"
            )
        user = grant.upn
    owner = fake.mailboxes.get(user.lower()) or next(
        (m for m in fake.mailboxes.values() if m.user_id == user.lower()), None
    )
    if owner is None:
        raise GraphError(404, "ErrorInvalidUser", f"The requested user '{user}' is invalid.")
    if grant.upn is not None and grant.upn.lower() != owner.upn.lower():
        raise access_denied()
    if grant.tenant_id != owner.tenant_id:
        raise access_denied()
    granted = grant.scopes if grant.upn else fake.identity.apps[grant.client_id].roles
    if not any("calendars." in s.lower() or s.endswith("/.default") for s in granted):
        raise access_denied()
    return owner


def route(fake: FakeGraph, req: ApiRequest) -> ApiResponse:
    """Dispatch a Graph request (the caller holds ``fake.lock``)."""
    seg, low = req.segments, [s.lower() for s in req.segments]
    if low[:1] == ["subscriptions"]:
        return _subscriptions(fake, req)
    if low[:1] == ["me"]:
        owner, rest = resolve_owner(fake, req.grant, None), seg[1:]
    elif low[:1] == ["users"] and len(seg) >= 2:
        owner, rest = resolve_owner(fake, req.grant, seg[1]), seg[2:]
    else:
        raise invalid_request(
            f"Resource not found for the segment '{seg[0] if seg else ''}'.", "BadRequest"
        )
    zone = req.prefs.get("outlook.timezone")
    if zone:
        resolve_zone(zone)
        req.applied["outlook.timezone"] = f'"{zone}"'
    if "idtype" in req.prefs:
        req.applied["IdType"] = f'"{req.prefs["idtype"]}"'
    return _mailbox(fake, req, owner, rest)


def _mailbox(fake: FakeGraph, req: ApiRequest, owner: Mailbox, rest: list[str]) -> ApiResponse:
    low, m = [s.lower() for s in rest], req.method
    ctx = f"{req.graph_base}/$metadata#users('{owner.upn}')"
    if low == ["calendars"]:
        if m == "POST":
            return ApiResponse(201, owner.create_calendar(req.body).resource(owner))
        cals = list(owner.calendars.values())
        flt = req.q("$filter")
        if flt:
            match = re.match(r"^name\s+eq\s+'(.*)'$", flt.strip())
            if not match:
                raise invalid_request(f"Unsupported $filter '{flt}'.", "BadRequest")
            cals = [c for c in cals if c.name == match[1].replace("''", "'")]
        return ApiResponse(
            200, {"@odata.context": f"{ctx}/calendars", "value": [c.resource(owner) for c in cals]}
        )
    if len(low) == 2 and low[0] == "calendars":
        cal = owner.calendar(rest[1])
        if m == "DELETE":
            owner.delete_calendar(cal.id)
            return ApiResponse(204)
        if m == "PATCH":
            if "name" in req.body:
                cal.name = str(req.body["name"])
            cal.color = str(req.body.get("color", cal.color))
        return ApiResponse(200, cal.resource(owner))
    if low == ["calendar"]:
        return ApiResponse(200, owner.default_calendar.resource(owner))
    scoped: StoredCalendar | None = None
    if low[:1] == ["calendars"] and len(rest) >= 2:
        scoped, rest = owner.calendar(rest[1]), rest[2:]
    elif low[:1] == ["calendar"]:
        scoped, rest = owner.default_calendar, rest[1:]
    tail = [s.lower() for s in rest]
    cal = scoped or owner.default_calendar
    if tail == ["events"]:  # without a calendar: the default calendar, as Outlook does
        if m == "POST":
            ev, created = owner.create_event(cal, req.body)
            if created:
                req.changes.append((owner, cal.id, ev, "created"))
            return ApiResponse(201, _render(req, owner, ev, write=True))
        items: list[ViewItem] = list(cal.events.values())
        return _listing(req, owner, items)
    if len(tail) == 2 and tail[0] == "events":
        return _event(fake, req, owner, scoped, rest[1])
    if len(tail) == 3 and tail[0] == "events" and tail[2] == "instances":
        master = _lookup(fake, owner, scoped, rest[1])
        if isinstance(master, Occurrence) or not master.recurrence:
            raise invalid_request("The event is not a series master.")
        start, end = _window(req)
        return _listing(req, owner, list(occurrences(owner, master, start, end)))
    if tail == ["calendarview"]:
        start, end = _window(req)
        return _listing(req, owner, list(view(owner, cal, start, end).values()))
    if (
        len(tail) == 2
        and tail[0] == "calendarview"
        and tail[1] in ("delta", "microsoft.graph.delta", "delta()")
    ):
        return _delta(fake, req, owner, cal)
    raise invalid_request(f"Resource not found for the segment '{'/'.join(rest)}'.", "BadRequest")


def _window(req: ApiRequest) -> tuple[datetime, datetime]:
    start, end = req.q("startDateTime"), req.q("endDateTime")
    if not start or not end:
        raise invalid_request(
            "This request requires a time window specified by the query string parameters "
            "StartDateTime and EndDateTime.",
            "ErrorInvalidParameter",
        )
    return parse_instant(start, "startDateTime"), parse_instant(end, "endDateTime")


def _number(raw: str | None, what: str) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError as err:
        raise invalid_request(f"Invalid value '{raw}' for {what}.", "BadRequest") from err
    if value < 0:
        raise invalid_request(f"Invalid value '{raw}' for {what}.", "BadRequest")
    return value


def _props(req: ApiRequest) -> list[str] | None:
    raw = req.q("$expand")
    if not raw:
        return None
    match = _EXPAND_RE.match(raw.strip())
    ids = re.findall(r"id\s+eq\s+'([^']*)'", match[1], re.I) if match else []
    if not ids:
        raise invalid_request(
            f"Unsupported $expand '{raw}': use singleValueExtendedProperties($filter=id eq '...').",
            "BadRequest",
        )
    return [normalize_property_id(i) for i in ids]


def _render(
    req: ApiRequest, owner: Mailbox, item: ViewItem, *, write: bool = False, delta: bool = False
) -> Json:
    zone = req.prefs.get("outlook.timezone") or (None if write else "UTC")
    body_type = req.prefs.get("outlook.body-content-type")
    if body_type:
        req.applied["outlook.body-content-type"] = f'"{body_type}"'
    select = {s.strip() for s in (req.q("$select") or "").split(",") if s.strip()} or None
    ev, occ = (item.master, item) if isinstance(item, Occurrence) else (item, None)
    props = None if delta else _props(req)
    return render_event(
        ev,
        owner,
        zone=zone,
        body_type=body_type,
        props=props,
        select=select,
        occurrence=occ,
        delta=delta,
    )


def _listing(req: ApiRequest, owner: Mailbox, items: list[ViewItem]) -> ApiResponse:
    flt = req.q("$filter")
    if flt:
        match = _ANY_RE.match(flt.strip())
        if not match:
            raise invalid_request(f"Unsupported $filter '{flt}'.", "BadRequest")
        pid, value = normalize_property_id(match[2]), match[3]

        def keep(it: ViewItem) -> bool:
            ev = it.master if isinstance(it, Occurrence) else it
            found = ev.ext.get(pid)
            return found is not None and (value is None or found.lower() == value.lower())

        items = [it for it in items if keep(it)]
    size = _number(req.q("$top") or req.prefs.get("odata.maxpagesize"), "$top") or DEFAULT_PAGE_SIZE
    skip = _number(req.q("$skip"), "$skip") or 0
    page = items[skip : skip + size]
    out: Json = {"value": [_render(req, owner, it) for it in page]}
    if skip + size < len(items):
        params = {k: v for k, v in req.query.items() if k.lower() != "$skip"}
        params["$skip"] = str(skip + size)
        query = urlencode(params, safe="$'(),:/ ").replace(" ", "%20")
        out["@odata.nextLink"] = f"{req.url}?{query}"
    return ApiResponse(200, out)


def _lookup(
    fake: FakeGraph, owner: Mailbox, scoped: StoredCalendar | None, eid: str
) -> StoredEvent | Occurrence:
    if eid in owner.occurrences:
        occ = find_occurrence(owner, eid)
        if scoped is None or occ.master.calendar_id == scoped.id:
            return occ
        raise item_not_found()
    try:
        return owner.find(eid, scoped.id if scoped else None, any_calendar=scoped is None)
    except GraphError:
        if scoped is None and fake.deleted_items_visible and eid in owner.deleted_items:
            return owner.deleted_items[eid]
        raise


def _event(
    fake: FakeGraph, req: ApiRequest, owner: Mailbox, scoped: StoredCalendar | None, eid: str
) -> ApiResponse:
    item = _lookup(fake, owner, scoped, eid)
    if req.method == "GET":
        return ApiResponse(200, _render(req, owner, item))
    if eid in owner.deleted_items:  # visible read-only while in Deleted Items
        raise item_not_found()
    if isinstance(item, Occurrence):
        if req.method == "DELETE":
            owner.check_if_match(item.master, req.if_match)
            item.master.deleted_occurrences.add(item.original_date)
            owner.touch(item.master)
            req.changes.append((owner, item.master.calendar_id, item.master, "updated"))
            return ApiResponse(204)
        raise invalid_request("The fake does not edit single occurrences of a series.")
    if req.method == "PATCH":
        owner.update_event(item, req.body, req.if_match)
        req.changes.append((owner, item.calendar_id, item, "updated"))
        return ApiResponse(200, _render(req, owner, item, write=True))
    if req.method == "DELETE":
        owner.delete_event(item, req.if_match)
        req.changes.append((owner, item.calendar_id, item, "deleted"))
        return ApiResponse(204)
    raise GraphError(405, "ErrorInvalidRequest", f"{req.method} is not allowed on an event.")


def _delta(fake: FakeGraph, req: ApiRequest, owner: Mailbox, cal: StoredCalendar) -> ApiResponse:
    refused = [p for p in DELTA_REFUSED if req.q(p) is not None]
    if refused:
        raise invalid_request(
            "The following parameters are not supported with change tracking over the "
            f"'CalendarView' resource: '{', '.join(refused)}'.",
            "ErrorInvalidUrlQuery",
        )
    tokens = fake.delta
    size = _number(req.prefs.get("odata.maxpagesize"), "odata.maxpagesize")
    if size:
        req.applied["odata.maxpagesize"] = str(size)
    skip, delta_token = req.q("$skiptoken"), req.q("$deltatoken")
    if (skip or delta_token) and tokens.reset_pending:
        tokens.reset_pending = False
        state = (
            tokens.pages[skip][0].state
            if skip in tokens.pages
            else tokens.states.get(delta_token or "")
        )
        location = state.path if state else req.url
        tokens.expire_all()
        raise GraphError(
            410,
            "resyncRequired",
            "Resync required: the delta state was reset.",
            {"Location": location},
        )
    if skip:
        rows, nxt, done = tokens.page(skip, size)
    else:
        if delta_token:
            prior = tokens.state(delta_token)
            cal = owner.calendar(prior.cal_id)
            start, end, path = prior.start, prior.end, prior.path
        else:
            prior = None
            start, end = _window(req)
            window = {k: req.q(k) for k in ("startDateTime", "endDateTime")}
            path = f"{req.url}?{urlencode(window)}"
        upserts, removed, state = tokens.changes(owner, cal, start, end, prior, path)
        rows = [_render(req, owner, it, delta=True) for it in upserts]
        rows += [
            {"@odata.type": "#microsoft.graph.event", "id": i, "@removed": {"reason": "deleted"}}
            for i in removed
        ]
        first = tokens.open_round(rows, state, size or DEFAULT_PAGE_SIZE)
        rows, nxt, done = tokens.page(first, size)
    out: Json = {"@odata.context": f"{req.graph_base}/$metadata#Collection(event)", "value": rows}
    if nxt:
        out["@odata.nextLink"] = f"{req.url}?$skiptoken={nxt}"
    else:
        out["@odata.deltaLink"] = f"{req.url}?$deltatoken={done}"
    return ApiResponse(200, out)


# -- subscriptions ---------------------------------------------------------------------------


def _subscription(fake: FakeGraph, req: ApiRequest, sub_id: str) -> Subscription:
    sub = fake.subscriptions.get(sub_id)
    if sub is None or sub.app_id != req.grant.client_id:
        raise GraphError(404, "ResourceNotFound", "The object was not found.")
    return sub


def _subscriptions(fake: FakeGraph, req: ApiRequest) -> ApiResponse:
    seg, m = req.segments, req.method
    fake.drop_expired_subscriptions()
    if len(seg) == 1 and m == "GET":
        mine = [
            s.resource_json()
            for s in fake.subscriptions.values()
            if s.app_id == req.grant.client_id
        ]
        return ApiResponse(200, {"value": mine})
    if len(seg) == 2:
        sub = _subscription(fake, req, seg[1])
        if m == "DELETE":
            del fake.subscriptions[sub.id]
            return ApiResponse(204)
        if m == "PATCH":
            _, sub.expiration = check_subscription_body(req.body, creating=False)
            sub.paused = False
        return ApiResponse(200, sub.resource_json())
    if len(seg) == 3 and seg[2].lower() == "reauthorize" and m == "POST":
        _subscription(fake, req, seg[1]).paused = False
        return ApiResponse(200)
    raise invalid_request("Unsupported subscriptions request.", "BadRequest")


def create_subscription(fake: FakeGraph, req: ApiRequest) -> ApiResponse:
    """POST /subscriptions: validate, handshake with the endpoint(s) outside the lock, store."""
    body = req.body
    with fake.lock:
        types, when = check_subscription_body(body, creating=True)
        user, cal_id = parse_resource(str(body.get("resource") or ""))
        owner = resolve_owner(fake, req.grant, user)
        cal = owner.calendar(cal_id)
        sub = Subscription(
            new_guid(), str(body["resource"]), owner.upn, cal.id, types, body.get("clientState"),
            str(body["notificationUrl"]), body.get("lifecycleNotificationUrl"), when,
            req.grant.client_id, new_guid(),
        )  # fmt: skip
    for url in filter(None, (sub.notification_url, sub.lifecycle_url)):
        if not fake.notifier.validate(url, fake.validation_timeout):
            raise validation_failed(url)
    with fake.lock:
        fake.subscriptions[sub.id] = sub
    return ApiResponse(201, sub.resource_json())
