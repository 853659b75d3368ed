"""syncd's writes and single reads on plain kept-alive connections (issue 11, goal 6).

A conditional PUT or DELETE, a GET and a PROPFIND go over the ``http.client``
connections the REPORT path keeps (adapters/caldav/transport.py), not through the HTTP
library: a first mirror's client work is then small enough to hide behind the server's.
On Radicale: every write of a session's life without the library, and a write with no
precondition still through it. On a small loopback server: a conditional write whose
kept-alive connection turns out closed is sent again once, and its repeat answered as
the server answers it (412); a write that fails on a fresh connection is never repeated.
"""

from __future__ import annotations

import select
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http import client as httpc
from typing import Any

import pytest

from adapters.caldav import backend as module
from adapters.caldav.backend import CalDAVBackend
from adapters.caldav.transport import Transport
from syncd.engine.desired import DesiredEvent
from syncd.ports import NotFound, PreconditionFailed, Transient
from tests.loopback import DeadSocket, LoopbackServer, QuietHandler, serving
from tests.servers import Server

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
ICS = {"Content-Type": "text/calendar; charset=utf-8"}


def _event(i: int = 1, hours: int = 0) -> DesiredEvent:
    start = NOW + timedelta(days=i, hours=hours)
    return DesiredEvent(
        f"s_{i}", f"syncd-s_{i}@test", start, start + timedelta(hours=1), "Ann — 1:1", "notes"
    )


def _count_library(monkeypatch: pytest.MonkeyPatch, t: Transport) -> list[str]:
    """The methods sent through the HTTP library from now on (they still go)."""
    sent: list[str] = []
    real = t._client.session.request

    def counted(method: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(method)
        return real(method, *args, **kwargs)

    monkeypatch.setattr(t._client.session, "request", counted)
    return sent


def test_a_sessions_writes_and_reads_skip_the_library_on_radicale(
    radicale_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = radicale_server.make_calendar()
    b = CalDAVBackend(url, radicale_server.username, radicale_server.password, timeout=10)
    try:
        b.changes(None, {})
        library = _count_library(monkeypatch, b._t)
        created = b.create(_event())
        assert b.get(created.remote_id).content.start == _event().start
        moved = b.update(created.remote_id, _event(hours=2), created.etag)
        assert moved.etag != created.etag
        assert b.get(created.remote_id).content.start == _event(hours=2).start
        with pytest.raises(PreconditionFailed):
            b.create(_event())  # If-None-Match: * on an event that exists
        with pytest.raises(PreconditionFailed):
            b.delete(created.remote_id, created.etag)  # the old etag
        b.delete(created.remote_id, moved.etag)
        with pytest.raises(NotFound):
            b.get(created.remote_id)
        assert library == []
        # A write with no precondition is not the plain path's: the library sends it.
        reply = b._t.send("PUT", b._t.url(created.remote_id + "x"), b"BEGIN:VCALENDAR", ICS)
        assert library == ["PUT"] and reply.status >= 200
    finally:
        b.close()


class _Applier(LoopbackServer):
    """Stores PUTs under ``If-None-Match: *``; ``drop`` (once): applies the next one and
    closes the connection without an answer, as a server that dies mid-answer does."""

    def __init__(self) -> None:
        super().__init__(_Handler)
        self.stored: dict[str, bytes] = {}
        self.puts: list[tuple[int, str]] = []  # (client port, path)
        self.drop = False
        self.quiet_close = False  # close every connection after answering, unannounced


class _Handler(QuietHandler):
    server: _Applier

    def do_PUT(self) -> None:
        s = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        s.puts.append((self.client_address[1], self.path))
        if self.headers.get("If-None-Match") == "*" and self.path in s.stored:
            status = 412
        else:
            s.stored[self.path] = body
            status = 201
        if s.drop:
            s.drop = False
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.send_response(status)
        self.send_header("ETag", f'"{len(s.puts)}"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.close_connection = s.quiet_close


@pytest.fixture
def applier() -> Iterator[_Applier]:
    with serving(_Applier()) as s:
        yield s


def _put(t: Transport, path: str) -> int:
    return t.send("PUT", t.url(path), b"BEGIN:VCALENDAR", {**ICS, "If-None-Match": "*"}).status


def test_a_conditional_write_on_a_closed_kept_alive_connection_is_sent_once_more(
    applier: _Applier, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = Transport(applier.origin, applier.origin + "/cal/", "", "", 5.0, "syncd-t")
    library = _count_library(monkeypatch, t)
    try:
        assert _put(t, "/cal/a.ics") == 201  # opens the connection kept for the next
        applier.drop = True
        # Applied, then no answer: sent again on a new connection, where it finds its own
        # event and says so (the backend's create reads it back and adopts it).
        assert _put(t, "/cal/b.ics") == 412
    finally:
        t.close()
    assert [path for _, path in applier.puts] == ["/cal/a.ics", "/cal/b.ics", "/cal/b.ics"]
    assert applier.puts[0][0] == applier.puts[1][0] != applier.puts[2][0]
    assert library == []


def test_a_write_that_fails_on_a_fresh_connection_is_not_repeated(applier: _Applier) -> None:
    t = Transport(applier.origin, applier.origin + "/cal/", "", "", 5.0, "syncd-t")
    try:
        applier.drop = True
        with pytest.raises(Transient, match="PUT"):
            _put(t, "/cal/a.ics")
    finally:
        t.close()
    assert [path for _, path in applier.puts] == ["/cal/a.ics"]


def _closed_by_server(applier: _Applier, n: int) -> list[httpc.HTTPConnection]:
    """``n`` connections that each carried a PUT and that the server has since closed."""
    applier.quiet_close = True
    conns = []
    for i in range(n):
        conn = httpc.HTTPConnection("127.0.0.1", applier.server_address[1], timeout=5)
        conn.request("PUT", f"/cal/old{i}.ics", b"x", {"If-None-Match": "*"})
        conn.getresponse().read()
        assert conn.sock is not None
        give_up = time.monotonic() + 5  # the server's FIN, to arrive on loopback
        while not select.select([conn.sock], [], [], 0.05)[0] and time.monotonic() < give_up:
            pass
        conns.append(conn)
    applier.quiet_close = False
    return conns


def test_idle_connections_the_server_closed_are_left_unused(
    applier: _Applier, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = Transport(applier.origin, applier.origin + "/cal/", "", "", 5.0, "syncd-t")
    stale = _closed_by_server(applier, 3)
    used: list[httpc.HTTPConnection] = []
    for conn in stale:
        monkeypatch.setattr(conn, "request", lambda *_, c=conn, **__: used.append(c))
        t._conns.give(conn)
    try:
        assert _put(t, "/cal/a.ics") == 201
    finally:
        t.close()
    assert used == []  # no request was written into a connection the server had closed
    assert all(conn.sock is None for conn in stale)  # and each was closed here


def test_a_write_sent_again_goes_on_a_new_connection(applier: _Applier) -> None:
    """Every idle connection may be as stale as the first that failed (SOGo closes them
    all after a few seconds): the one repeat is never sent on another of them."""
    t = Transport(applier.origin, applier.origin + "/cal/", "", "", 5.0, "syncd-t")
    for _ in range(3):
        conn = httpc.HTTPConnection("127.0.0.1", applier.server_address[1], timeout=5)
        conn.sock = DeadSocket(BrokenPipeError(32, "Broken pipe"))  # type: ignore[assignment]
        t._conns.give(conn)
    try:
        assert _put(t, "/cal/a.ics") == 201
    finally:
        t.close()
    assert [path for _, path in applier.puts] == ["/cal/a.ics"]


def test_a_create_prepared_ahead_sends_what_was_built_then(
    applier: _Applier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``prepare_create`` builds a create's body off the write's path; ``create`` of that
    very event object sends it as built, and of any other object (an equal one included:
    it may come from another cycle) builds afresh. Entries never outgrow the bound."""
    b = CalDAVBackend(applier.origin + "/cal/", "", "", timeout=5)
    built: list[tuple[str, bytes]] = []
    real = module.build_event

    def counted(event: DesiredEvent, now: datetime) -> bytes:
        built.append((event.session_id, real(event, now)))
        return built[-1][1]

    monkeypatch.setattr(module, "build_event", counted)
    try:
        ahead, other = _event(1), _event(2)
        b.prepare_create(ahead)
        b.prepare_create(other)
        b.create(ahead)
        b.create(_event(2))  # equal to ``other``, not the object that was prepared
        assert [sid for sid, _ in built] == ["s_1", "s_2", "s_2"]
        assert applier.stored["/cal/syncd-s_1@test.ics"] == built[0][1]
        assert applier.stored["/cal/syncd-s_2@test.ics"] == built[2][1]
        for i in range(3, 3 + module.PREPARED + 5):
            b.prepare_create(_event(i))
        assert len(b._prepared) == module.PREPARED
    finally:
        b.close()
