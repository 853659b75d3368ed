"""The REPORT of an idle cycle on a plain kept-alive connection (issue 11, goal 8).

A CalDAV REPORT goes over ``http.client`` connections kept per server and account, not
through the HTTP library, when nothing but that is needed (adapters/caldav/transport.py).
These tests run it against a small HTTP/1.1 server on loopback: one connection for many
REPORTs, the same headers and credentials, one request per REPORT even when refused, a
connection the server closed while idle replaced once, gzip read, and what the plain path
cannot take (a redirect, a 5xx) answered as before.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from typing import Any

import pytest

from adapters.caldav import dav
from adapters.caldav.transport import Transport
from syncd.ports import Transient
from tests.loopback import DeadSocket, LoopbackServer, QuietHandler, serving

BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b'<D:multistatus xmlns:D="DAV:"><D:sync-token>http://t/sync/2</D:sync-token>'
    b"</D:multistatus>"
)


class Server(LoopbackServer):
    def __init__(self) -> None:
        super().__init__(Handler)
        #: (client port, method, path, headers) of every request.
        self.seen: list[tuple[int, str, str, dict[str, str]]] = []
        self.mode = "ok"


class Handler(QuietHandler):
    server: Server

    def _answer(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_REPORT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        s = self.server
        s.seen.append((self.client_address[1], "REPORT", self.path, dict(self.headers.items())))
        if s.mode == "refused":
            self._answer(401, b"", WWW_Authenticate='Basic realm="cal"')
        elif s.mode == "gzip":
            self._answer(207, gzip.compress(BODY), Content_Encoding="gzip")
        elif s.mode == "moved" and self.path == "/cal/1/":
            self._answer(301, b"", Location=f"{s.origin}/moved/1/")
        elif s.mode == "down":
            self._answer(502, b"")
        elif s.mode == "close":
            self._answer(207, BODY, Connection="close")
        else:
            self._answer(207, BODY)


@pytest.fixture
def server() -> Iterator[Server]:
    with serving(Server()) as s:
        yield s


def _transport(server: Server, user: str = "", password: str = "") -> Transport:
    return Transport(server.origin, server.origin + "/cal/1/", user, password, 5.0, "syncd-t")


def _report(t: Transport) -> tuple[list[dav.DavResponse], str | None]:
    reply = t.report("/cal/1/", dav.sync_collection_body("http://t/sync/1"), "1")
    return t.multistatus(reply, "REPORT")


def _no_library(monkeypatch: pytest.MonkeyPatch, t: Transport) -> None:
    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("the REPORT went through the HTTP library")

    monkeypatch.setattr(t._client.session, "request", refuse)


def test_reports_share_one_kept_alive_connection_without_the_library(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = _transport(server, "ann", "s3cret")
    _no_library(monkeypatch, t)
    try:
        for _ in range(3):
            assert _report(t) == ([], "http://t/sync/2")
    finally:
        t.close()
    assert len(server.seen) == 3
    assert len({port for port, *_ in server.seen}) == 1  # one connection
    headers = server.seen[0][3]
    assert headers["Depth"] == "1" and headers["Content-Type"].startswith("application/xml")
    assert headers["User-Agent"] == "syncd-t"
    assert headers["Authorization"] == "Basic YW5uOnMzY3JldA=="  # ann:s3cret


def test_a_refused_report_is_one_request_once_negotiated(server: Server) -> None:
    server.mode = "refused"
    t = _transport(server, "ann", "wrong")
    try:
        assert t.report("/cal/1/", dav.sync_collection_body("x"), "1").status == 401
        first = len(server.seen)  # the plain try, then the library's negotiation
        assert t.report("/cal/1/", dav.sync_collection_body("x"), "1").status == 401
        assert len(server.seen) == first + 1
    finally:
        t.close()


def test_a_connection_the_server_closed_is_replaced_once(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = _transport(server)
    _no_library(monkeypatch, t)
    try:
        assert _report(t)[1] == "http://t/sync/2"
        for conn in t._conns._idle:  # the server closed them while they sat idle
            assert conn.sock is not None
            conn.sock.close()
            conn.sock = DeadSocket(ConnectionResetError("reset by peer"))  # type: ignore[assignment]
        assert _report(t)[1] == "http://t/sync/2"
    finally:
        t.close()
    assert len(server.seen) == 2


def test_a_gzip_answer_is_read(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.mode = "gzip"
    t = _transport(server)
    _no_library(monkeypatch, t)
    try:
        assert _report(t)[1] == "http://t/sync/2"
    finally:
        t.close()
    assert "gzip" in server.seen[0][3]["Accept-Encoding"]


def test_a_connection_close_answer_is_not_kept(server: Server) -> None:
    server.mode = "close"
    t = _transport(server)
    try:
        assert _report(t)[1] == "http://t/sync/2"
        assert t._conns._idle == []
        assert _report(t)[1] == "http://t/sync/2"
    finally:
        t.close()


def test_a_redirect_is_followed_by_the_library(server: Server) -> None:
    server.mode = "moved"
    t = _transport(server)
    try:
        assert _report(t)[1] == "http://t/sync/2"
    finally:
        t.close()
    assert [path for _, _, path, _ in server.seen][-1] == "/moved/1/"


def test_a_server_error_is_transient_and_retried(server: Server) -> None:
    server.mode = "down"
    t = _transport(server)
    try:
        with pytest.raises(Transient, match="HTTP 502"):
            _report(t)
    finally:
        t.close()
    assert len(server.seen) == 3  # read()'s three attempts, as before
