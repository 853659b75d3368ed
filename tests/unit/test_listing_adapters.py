"""Each adapter hands a full listing over page by page (issue 11, goal 3): a page is
requested only when the one before has been read, and a connection that breaks mid-way
raises from the iterator (the engine then judges nothing: tests/unit/test_listing_pages.py).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import trustme

from adapters.caldav.backend import CalDAVBackend
from adapters.microsoft.backend import GraphBackend
from syncd.ports import ChangeSet, ListingPage, PagedListing, Transient, WindowMoved
from tests.contract.google_human import make_backend
from tests.contract.graph_kit import UPN, app_tokens
from tests.contract.samples import END, START, desired
from tests.contract.test_caldav_wire import COLL
from tests.contract.test_caldav_wire import ics as caldav_ics
from tests.contract.test_caldav_wire import response as caldav_response
from tests.fakes.google_calendar import FakeGoogleCalendar
from tests.fakes.graph_extras import FakeGraphPlus

SOON = (datetime.now(UTC) + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)


def _pages(cs: ChangeSet) -> Iterator[ListingPage]:
    assert cs.full and cs.changed == () and cs.pages is not None
    return cs.pages


@pytest.fixture
def google() -> Iterator[FakeGoogleCalendar]:
    with FakeGoogleCalendar(owner="admin@example.com") as f:
        f.latency = 0.0
        yield f


def test_google_lists_a_page_at_a_time(google: FakeGoogleCalendar) -> None:
    backend = make_backend(google, page_size=2, max_attempts=2)
    assert isinstance(backend, PagedListing)
    made = [
        backend.create(desired(f"s_p{i}", START + timedelta(days=i), END + timedelta(days=i)))
        for i in range(5)
    ]
    google.reset_log()
    pages = _pages(backend.full_listing({}))
    assert google.count("events.list") == 0  # nothing asked before the first page
    got: list[ListingPage] = []
    for n, page in enumerate(pages, 1):
        assert google.count("events.list") == n  # one request a page, as they are read
        got.append(page)
    assert [len(p.events) for p in got] == [2, 2, 1]
    assert [p.last for p in got] == [False, False, True]
    assert got[-1].cursor and got[-1].cursor.startswith("v1:") and got[0].cursor is None
    listed = {e.remote_id: e.etag for p in got for e in p.events}
    assert listed == {m.remote_id: m.etag for m in made}
    whole = backend.changes(None, {})  # the same listing, gathered
    assert {e.remote_id for e in whole.changed} == set(listed) and whole.full
    backend.close()


def test_google_listing_broken_mid_way_raises(google: FakeGoogleCalendar) -> None:
    backend = make_backend(google, page_size=2, max_attempts=2)
    for i in range(5):
        backend.create(desired(f"s_b{i}", START + timedelta(days=i), END + timedelta(days=i)))
    pages = _pages(backend.full_listing({}))
    first = next(pages)
    assert len(first.events) == 2 and not first.last
    google.fail_next(5, status=503)  # every retry of the second page
    with pytest.raises(Transient):
        next(pages)
    backend.close()


@pytest.fixture
def graph(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGraphPlus]:
    fake = FakeGraphPlus(trustme.CA()).start()
    fake.add_mailbox(UPN, "Coach")
    for key, value in fake.client_env().items():  # httpx and msal trust the test CA
        monkeypatch.setenv(key, value)
    yield fake
    fake.stop()


def _graph_backend(fake: FakeGraphPlus, **options: Any) -> GraphBackend:
    app = fake.add_app("syncd")
    tokens = app_tokens(fake, app.client_id, fake.add_secret(app.client_id))
    return GraphBackend(UPN, "", tokens, fake.graph_url, timeout=5.0, **options)


def _graph_deltas(fake: FakeGraphPlus) -> int:
    with fake.lock:
        return sum(r.path.endswith("/calendarView/delta") for r in fake.requests)


def test_graph_lists_a_page_at_a_time(graph: FakeGraphPlus) -> None:
    b = _graph_backend(graph, page_size=2, retry_wait=(0.001, 0.01), max_attempts=2)
    assert isinstance(b, PagedListing)
    soon = SOON  # inside the delta window
    made = [
        b.create(desired(f"sg{i}", soon + timedelta(days=i), soon + timedelta(days=i, hours=1)))
        for i in range(5)
    ]
    pages = _pages(b.full_listing({}))
    assert _graph_deltas(graph) == 0
    first = next(pages)
    assert _graph_deltas(graph) == 1 and len(first.events) == 2 and not first.last
    graph.fail_next(5, status=503)  # the connection to the next page breaks, every retry
    with pytest.raises(Transient):
        next(pages)
    graph.clear_faults()
    whole = b.changes(None, {})  # a new listing, whole, gathered from its pages
    assert {e.remote_id for e in whole.changed} == {m.remote_id for m in made}
    assert whole.full and whole.cursor and whole.removed == ()
    b.close()


def test_graph_hands_over_what_lives_outside_the_window_on_the_last_page(
    graph: FakeGraphPlus,
) -> None:
    b = _graph_backend(graph, page_size=2, retry_wait=(0.001, 0.01))
    soon = SOON
    near = b.create(desired("snear", soon, soon + timedelta(hours=1)))
    far = soon + timedelta(days=3650)  # beyond the delta window
    out = b.create(desired("sfar", far, far + timedelta(hours=1)))
    pages = list(_pages(b.full_listing({near.remote_id: near.etag, out.remote_id: out.etag})))
    assert [e.remote_id for p in pages[:-1] for e in p.events] == ["snear"]
    assert pages[-1].last and [e.remote_id for e in pages[-1].events] == ["sfar"]
    b.close()


def test_a_graph_window_a_day_old_is_an_expired_cursor_then_a_paged_listing(
    graph: FakeGraphPlus,
) -> None:
    now = [datetime.now(UTC)]
    b = _graph_backend(graph, page_size=2, retry_wait=(0.001, 0.01), clock=lambda: now[0])
    made = b.create(desired("sday", SOON, SOON + timedelta(hours=1)))
    cursor = b.changes(None, {}).cursor
    assert cursor is not None
    assert b.changes(cursor, {made.remote_id: made.etag}).changed == ()  # same window
    now[0] += timedelta(days=1, minutes=1)
    with pytest.raises(WindowMoved, match="a day old"):  # planned: not a fault
        b.changes(cursor, {made.remote_id: made.etag})  # the engine lists, page by page
    pages = list(_pages(b.full_listing({made.remote_id: made.etag})))
    assert [e.remote_id for p in pages for e in p.events] == ["sday"] and pages[-1].cursor
    b.close()


class _Streaming:
    """A CalDAV server whose first sync-collection answer is sent in two parts: the
    second waits until ``go`` is set (or, with ``drop``, never comes: the connection
    closes mid-body)."""

    def __init__(self, events: int, drop: bool = False) -> None:
        self.go = threading.Event()
        head = (
            '<?xml version="1.0"?><D:multistatus xmlns:D="DAV:" '
            'xmlns:C="urn:ietf:params:xml:ns:caldav">'
        )
        parts = [
            caldav_response(f"{COLL}e{i}.ics", f'"{i}"', caldav_ics(f"uid-{i}"))
            for i in range(events)
        ]
        half = len(parts) // 2
        self.first = (head + "".join(parts[:half])).encode()
        self.second = ("".join(parts[half:]) + "<D:sync-token>t1</D:sync-token>").encode()
        self.second += b"</D:multistatus>"
        self.drop = drop
        streaming = self

        class Handler(BaseHTTPRequestHandler):
            def do_REPORT(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(207)
                self.send_header("Content-Type", "application/xml")
                size = len(streaming.first) + len(streaming.second)
                self.send_header("Content-Length", str(size))
                self.end_headers()
                self.wfile.write(streaming.first)
                self.wfile.flush()
                if streaming.drop:
                    return  # the connection closes, the body unfinished
                streaming.go.wait(5)
                self.wfile.write(streaming.second)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{COLL}"

    def close(self) -> None:
        self.go.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def test_caldav_hands_over_a_first_listing_while_it_arrives() -> None:
    server = _Streaming(events=250)
    b = CalDAVBackend(server.url, "u", "p", timeout=5.0)
    assert isinstance(b, PagedListing)
    try:
        pages = _pages(b.full_listing({}))
        first = next(pages)  # read before the server sent the rest of its answer
        assert len(first.events) == 100 and not server.go.is_set()
        server.go.set()
        rest = list(pages)
        assert rest[-1].last and rest[-1].cursor == "sync:t1"
        hrefs = [e.remote_id for p in [first, *rest] for e in p.events]
        assert hrefs == [f"{COLL}e{i}.ics" for i in range(250)]
    finally:
        b.close()
        server.close()


def test_caldav_listing_dropped_mid_body_raises() -> None:
    server = _Streaming(events=250, drop=True)
    b = CalDAVBackend(server.url, "u", "p", timeout=5.0)
    try:
        with pytest.raises(Transient, match="broke while the answer was read"):
            list(_pages(b.full_listing({})))
    finally:
        b.close()
        server.close()
