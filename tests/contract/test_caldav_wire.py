"""CalDAV-only behaviour that no real server here triggers on demand, against a scripted
HTTP stub (507 truncation, servers without sync-collection, broken bodies, 5xx, 401...),
plus CalDAV specifics on the real servers (href quoting, fields kept on update)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from icalendar import Calendar

from adapters.caldav.backend import CalDAVBackend
from adapters.caldav.ics import build_event, parse_event
from syncd.ports import (
    AuthRevoked,
    CursorExpired,
    NotFound,
    PreconditionFailed,
    RateLimited,
    Transient,
)
from tests.contract.human import CalDAVHuman
from tests.contract.samples import START, desired
from tests.servers import Server

COLL = "/u/cal/"


@dataclass
class Req:
    """One request the stub received."""

    method: str
    path: str
    headers: dict[str, str]
    body: str


Reply = tuple[int, dict[str, str], str]


@dataclass
class Stub:
    """A scripted CalDAV server: ``handler(req) -> (status, headers, body)``."""

    handler: Callable[[Req], Reply] = lambda req: (500, {}, "")
    seen: list[Req] = field(default_factory=list)
    url: str = ""

    def methods(self) -> list[str]:
        """The methods received, in order."""
        return [r.method for r in self.seen]


@pytest.fixture
def stub() -> Iterator[Stub]:
    """A stub HTTP server on loopback; set ``stub.handler``."""
    state = Stub()

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            req = Req(
                self.command,
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length).decode() if length else "",
            )
            state.seen.append(req)
            status, headers, body = state.handler(req)
            data = body.encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_DELETE = do_PROPFIND = do_REPORT = _any  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}{COLL}"
    yield state
    httpd.shutdown()
    httpd.server_close()


def ics(uid: str, start: str = "20310310T100000Z", extra: str = "") -> str:
    """A minimal VEVENT object."""
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:20250101T000000Z\r\nDTSTART:{start}\r\n"
        f"DTEND:20310310T110000Z\r\n{extra}END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def response(href: str, etag: str | None = None, data: str | None = None, status: int = 200) -> str:
    """One DAV:response element."""
    if status != 200:
        return f"<D:response><D:href>{href}</D:href><D:status>HTTP/1.1 {status} X</D:status>" + (
            "</D:response>"
        )
    props = f"<D:getetag>{etag}</D:getetag>" if etag else ""
    if data is not None:
        props += f"<C:calendar-data>{data}</C:calendar-data>"
    return (
        f"<D:response><D:href>{href}</D:href><D:propstat><D:prop>{props}</D:prop>"
        "<D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
    )


def multistatus(*responses: str, token: str | None = None) -> Reply:
    """A 207 answer."""
    tok = f"<D:sync-token>{token}</D:sync-token>" if token is not None else ""
    body = (
        '<?xml version="1.0"?><D:multistatus xmlns:D="DAV:" '
        f'xmlns:C="urn:ietf:params:xml:ns:caldav">{"".join(responses)}{tok}</D:multistatus>'
    )
    return 207, {"Content-Type": "application/xml"}, body


def sync_token_of(req: Req) -> str:
    """The sync-token a sync-collection REPORT carries."""
    return req.body.split("<D:sync-token>")[1].split("</D:sync-token>")[0]


def make(stub: Stub, **options: object) -> CalDAVBackend:
    """A backend on the stub with a short timeout."""
    return CalDAVBackend(stub.url, "u", "p", timeout=2.0, **options)  # type: ignore[arg-type]


# -- change feed ------------------------------------------------------------------------------


def test_truncated_sync_is_followed_and_accumulated(stub: Stub) -> None:
    """507 on the collection's own href: call again with the new token, keep everything."""

    def handler(req: Req) -> Reply:
        token = sync_token_of(req)
        if token == "t0":
            return multistatus(
                response(COLL + "a.ics", '"a1"', ics("a")),
                response(COLL + "gone.ics", status=404),
                response(COLL, status=507),
                token="t1",
            )
        assert token == "t1"
        return multistatus(
            response(COLL + "b%40x.ics", '"b1"', ics("b")),
            response(COLL + "gone2.ics", status=404),
            token="t2",
        )

    stub.handler = handler
    feed = make(stub).changes("sync:t0", {})
    assert feed.cursor == "sync:t2"
    assert {ev.remote_id for ev in feed.changed} == {COLL + "a.ics", COLL + "b@x.ics"}
    assert set(feed.removed) == {COLL + "gone.ics", COLL + "gone2.ics"}


def test_items_without_data_are_fetched_with_multiget(stub: Stub) -> None:
    def handler(req: Req) -> Reply:
        if "sync-collection" in req.body:
            return multistatus(
                response(COLL + "a.ics", '"a1"'),
                response(COLL + "broken.ics", '"x"'),
                response(COLL + "todo.ics", '"t"'),
                token="t1",
            )
        assert "calendar-multiget" in req.body
        assert req.headers["depth"] == "1"
        return multistatus(
            response(COLL + "a.ics", '"a2"', ics("a")),
            response(COLL + "broken.ics", '"x"', "BEGIN:VCALENDAR\r\nnot ical"),
            response(
                COLL + "todo.ics",
                '"t"',
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTODO\r\nUID:t\r\nEND:VTODO\r\n"
                "END:VCALENDAR\r\n",
            ),
        )

    stub.handler = handler
    feed = make(stub).changes("sync:t0", {COLL + "broken.ics": '"old"'})
    assert [(ev.remote_id, ev.etag) for ev in feed.changed] == [(COLL + "a.ics", '"a2"')]
    assert feed.removed == ()  # an unparseable or foreign object is never a removal


@pytest.mark.parametrize("status", [403, 409, 412])
def test_refused_token_is_cursor_expired(stub: Stub, status: int) -> None:
    stub.handler = lambda req: (
        status,
        {"Content-Type": "application/xml"},
        '<?xml version="1.0"?><D:error xmlns:D="DAV:"><D:valid-sync-token/></D:error>',
    )
    with pytest.raises(CursorExpired):
        make(stub).changes("sync:old", {})


def test_server_without_sync_collection_falls_back_to_ctag(stub: Stub) -> None:
    ctag = {"value": "c1"}

    def handler(req: Req) -> Reply:
        if req.method == "REPORT" and "sync-collection" in req.body:
            return 501, {}, ""
        if req.method == "PROPFIND" and req.headers.get("depth") == "0":
            return multistatus(
                f"<D:response><D:href>{COLL}</D:href><D:propstat><D:prop>"
                f'<CS:getctag xmlns:CS="http://calendarserver.org/ns/">{ctag["value"]}</CS:getctag>'
                "<D:supported-report-set><D:supported-report><D:report><C:calendar-multiget/>"
                "</D:report></D:supported-report></D:supported-report-set>"
                "</D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
            )
        if req.method == "PROPFIND":
            return multistatus(
                f"<D:response><D:href>{COLL}</D:href><D:propstat><D:prop><D:resourcetype>"
                "<D:collection/></D:resourcetype></D:prop><D:status>HTTP/1.1 200 OK</D:status>"
                "</D:propstat></D:response>",
                response(COLL + "a.ics", '"a1"'),
            )
        assert "calendar-multiget" in req.body
        return multistatus(response(COLL + "a.ics", '"a1"', ics("a")))

    stub.handler = handler
    backend = make(stub)
    full = backend.changes(None, {})
    assert full.full and full.cursor == "ctag:c1"
    assert [ev.remote_id for ev in full.changed] == [COLL + "a.ics"]
    stub.seen.clear()
    idle = backend.changes(full.cursor, {COLL + "a.ics": '"a1"', COLL + "b.ics": '"b1"'})
    assert idle.changed == () and idle.removed == ()
    assert stub.methods() == ["PROPFIND"]  # one request when nothing changed
    ctag["value"] = "c2"
    feed = backend.changes(idle.cursor, {COLL + "a.ics": '"a1"', COLL + "b.ics": '"b1"'})
    assert feed.changed == () and feed.removed == (COLL + "b.ics",)
    assert feed.cursor == "ctag:c2"


def test_sync_answer_that_is_not_xml_is_transient(stub: Stub) -> None:
    stub.handler = lambda req: (207, {}, "<html>proxy error")
    with pytest.raises(Transient):
        make(stub).changes("sync:t", {})
    with pytest.raises(Transient):
        make(stub).changes(None, {})


# -- reads and writes -------------------------------------------------------------------------


def test_unparseable_get_is_transient_not_not_found(stub: Stub) -> None:
    stub.handler = lambda req: (200, {"ETag": '"e"'}, "<html>login page</html>")
    with pytest.raises(Transient) as caught:
        make(stub).get(COLL + "a.ics")
    assert "unparseable" in str(caught.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, AuthRevoked), (403, AuthRevoked), (500, Transient), (400, Transient), (404, NotFound)],
)
def test_get_status_mapping(stub: Stub, status: int, error: type[Exception]) -> None:
    stub.handler = lambda req: (status, {}, "")
    with pytest.raises(error):
        make(stub).get(COLL + "a.ics")


def test_reads_are_retried_and_writes_are_not(stub: Stub) -> None:
    stub.handler = lambda req: (502, {}, "")
    backend = make(stub)
    with pytest.raises(Transient):
        backend.get(COLL + "a.ics")
    assert stub.methods() == ["GET"] * 3
    stub.seen.clear()
    stored = build_event(desired("s_w"), datetime.now(UTC)).decode()

    def writes_fail(req: Req) -> Reply:
        return (200, {"ETag": '"e"'}, stored) if req.method == "GET" else (502, {}, "")

    stub.handler = writes_fail
    with pytest.raises(Transient):
        backend.create(desired("s_w"))
    with pytest.raises(Transient):
        backend.delete(COLL + "a.ics", '"e"')
    assert stub.methods() == ["PUT", "GET", "DELETE"]  # a delete reads the event first


def test_rate_limit_is_raised_with_retry_after(stub: Stub) -> None:
    stub.handler = lambda req: (503, {"Retry-After": "7"}, "")
    with pytest.raises(RateLimited) as caught:
        make(stub).get(COLL + "a.ics")
    assert caught.value.retry_after == 7.0
    assert stub.methods() == ["GET"]  # the caller backs off, not the adapter


def test_create_without_etag_header_reads_it(stub: Stub) -> None:
    def handler(req: Req) -> Reply:
        if req.method == "PUT":
            assert req.headers["if-none-match"] == "*"
            return 201, {}, ""
        # No ETag on the PUT: the server rewrote the object; syncd reads what it holds.
        return 200, {"ETag": '"fresh"'}, build_event(desired("s_e"), datetime.now(UTC)).decode()

    stub.handler = handler
    created = make(stub).create(desired("s_e"))
    assert created.etag == '"fresh"'
    assert created.remote_id == COLL + "syncd-s_e@syncd.test.ics"


# -- real servers: CalDAV specifics -----------------------------------------------------------


@pytest.fixture(params=["radicale", "xandikos"])
def server(request: pytest.FixtureRequest) -> Server:
    """The session's real server of each kind."""
    return request.getfixturevalue(f"{request.param}_server")  # type: ignore[no-any-return]


def test_odd_uid_characters_round_trip_through_hrefs(server: Server) -> None:
    backend = CalDAVBackend(server.make_calendar("odd name"), server.username, server.password)
    cursor = backend.changes(None, {}).cursor
    want = desired("s odd+1", uid="syncd-s odd+1@syncd.test")
    created = backend.create(want)
    assert created.remote_id == backend.remote_id_for(want.uid, want.session_id)
    feed = backend.changes(cursor, {})
    assert [ev.remote_id for ev in feed.changed] == [created.remote_id]
    assert feed.changed[0].content.session_id == "s odd+1"
    CalDAVHuman(server).delete(created.remote_id)
    assert backend.changes(feed.cursor, {}).removed == (created.remote_id,)
    backend.close()


def test_update_keeps_every_field_syncd_does_not_own(server: Server) -> None:
    backend = CalDAVBackend(server.make_calendar(), server.username, server.password)
    human = CalDAVHuman(server)
    created = backend.create(desired("s_fields"))
    human.add_alarm(created.remote_id)
    current = backend.get(created.remote_id)
    with pytest.raises(PreconditionFailed):
        backend.update(created.remote_id, desired("s_fields", sequence=2), created.etag)
    backend.update(created.remote_id, desired("s_fields", sequence=2), current.etag)
    event = Calendar.from_ical(human.snapshot(created.remote_id)).walk("VEVENT")[0]
    assert str(event["COLOR"]) == "tomato"
    assert str(event["X-HUMAN-APP-FLAG"]) == "kept"
    assert "assistant@example.org" in str(event["ATTENDEE"])
    assert "CATEGORIES:Coaching" in event.to_ical().decode()
    assert event.decoded("SEQUENCE") == 2
    assert str(event["TRANSP"]) == "OPAQUE"
    backend.close()


# -- parsing ----------------------------------------------------------------------------------


def test_parse_normalizes_times() -> None:
    floating = parse_event(ics("syncd-s_f@h", start="20310310T100000"))
    assert floating is not None and floating.start == START and floating.session_id == "s_f"
    duration = parse_event(
        ics("x", extra="X-SYNCD-SESSION:s_x\r\n").replace(
            "DTEND:20310310T110000Z\r\n", "DURATION:PT90M\r\n"
        )
    )
    assert duration is not None and duration.end == START + timedelta(minutes=90)
    assert duration.session_id == "s_x"
    all_day = parse_event(
        ics("y")
        .replace("DTSTART:20310310T100000Z", "DTSTART;VALUE=DATE:20310310")
        .replace("DTEND:20310310T110000Z\r\n", "")
    )
    assert all_day is not None and all_day.all_day
    assert (all_day.start, all_day.end) == (
        datetime(2031, 3, 10, tzinfo=UTC),
        datetime(2031, 3, 11, tzinfo=UTC),
    )
    assert all_day.session_id is None and all_day.status == "confirmed"
    recurring = parse_event(ics("z", extra="RRULE:FREQ=DAILY\r\nSTATUS:CANCELLED\r\n"))
    assert recurring is not None and recurring.recurring and recurring.status == "cancelled"


def test_wrong_password_is_auth_revoked_never_not_found(radicale_server: Server) -> None:
    server = radicale_server
    good = CalDAVBackend(server.make_calendar(), server.username, server.password)
    created = good.create(desired("s_auth"))
    bad = CalDAVBackend(good_url(server, created.remote_id), server.username, "wrong")
    with pytest.raises(AuthRevoked):
        bad.get(created.remote_id)
    with pytest.raises(AuthRevoked):
        bad.changes(None, {})
    with pytest.raises(AuthRevoked):
        bad.changes("sync:http://radicale.org/ns/sync/0", {})
    with pytest.raises(AuthRevoked):
        bad.delete(created.remote_id, None)
    assert good.get(created.remote_id).etag == created.etag
    good.close()
    bad.close()


def good_url(server: Server, remote_id: str) -> str:
    """The collection URL of a member href."""
    return server.root_url + remote_id.rsplit("/", 1)[0] + "/"


def test_busy_expands_recurrences(server: Server) -> None:
    backend = CalDAVBackend(server.make_calendar(), server.username, server.password)
    created = backend.create(desired("s_weekly"))
    CalDAVHuman(server).make_recurring(created.remote_id)  # weekly x4, third one excluded
    week = timedelta(weeks=1)
    window = (START + week - timedelta(hours=1), START + 3 * week + timedelta(hours=2))
    assert backend.busy(*window) == [
        (START + week, START + week + timedelta(hours=1)),
        (START + 3 * week, START + 3 * week + timedelta(hours=1)),
    ]
    backend.close()
