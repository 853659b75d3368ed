"""HTTP for the CalDAV backend: one request, retried reads, errors mapped to the ports'.

Transport and authentication come from the ``caldav`` library (its ``DAVClient`` and the
HTTP session it holds); the requests themselves are issued here, because the library's
high-level calls do things syncd must never do (retry writes, fall back silently to a
full download under a fake sync token, treat a failed read as an empty calendar).

The HTTP session (its pool of kept-alive connections) is shared by every calendar of one
account on one server (issue 11): ten thousand calendars on one server keep as many
connections as requests are in flight, not ten thousand, and a poll finds one open.

The requests of a cycle go over plain ``http.client`` connections kept alive per server
and account (:class:`_Conns`) when nothing but that is needed: no proxy in the
environment, no authentication or Basic. Those are the reads (REPORT, the change feed of
every cycle and an idle calendar's only request; GET; PROPFIND) and the conditional
writes (a PUT or DELETE under ``If-Match`` / ``If-None-Match``, which every write of
syncd's is). One costs a sixth to a third of the CPU of the same request through the
library's HTTP stack (issue 11: a fleet's workers are CPU-bound, goal 8, and a first
mirror's client work must hide behind the server's, goal 6). A redirect, a 401, an
encoding other than gzip or an auth scheme with a handshake go through the library as
before; so do a streamed REPORT and the requests of discovery.
"""

from __future__ import annotations

import gzip
import select
import ssl
import threading
import urllib.request
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http import client as httpc
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
from syncd.ports import AuthRevoked, BackendError, PreconditionFailed, RateLimited, Transient

XML = "application/xml; charset=utf-8"
ICS = "text/calendar; charset=utf-8"
#: Kept-alive connections per server and account: above the sync threads in flight.
POOL_MAXSIZE = 32
#: Bytes read at a time from a streamed answer.
CHUNK = 64 * 1024
_sessions: dict[tuple[str, str, str], tuple[http.Session, int]] = {}
_conns: dict[tuple[str, str, str], _Conns] = {}
_sessions_lock = threading.Lock()


class _Conns:
    """Idle kept-alive ``http.client`` connections to one origin (the REPORT path)."""

    def __init__(self, origin: str) -> None:
        parts = urlsplit(origin)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self._tls = ssl.create_default_context() if self.https else None
        self._idle: list[httpc.HTTPConnection] = []
        self._lock = threading.Lock()

    def take(self, timeout: float, fresh: bool = False) -> tuple[httpc.HTTPConnection, bool]:
        """An idle connection the server has not closed (True), or a new one (False; always
        with ``fresh``). Idle ones the server closed meanwhile (SOGo keeps them alive for
        seconds) are dropped here, before a request is written into them."""
        while not fresh:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            if not _still_open(conn):
                conn.close()
                continue
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            return conn, True
        if self._tls is not None:
            return httpc.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=self._tls
            ), False
        return httpc.HTTPConnection(self.host, self.port, timeout=timeout), False

    def give(self, conn: httpc.HTTPConnection) -> None:
        """Keep ``conn`` for the next request (closed beyond :data:`POOL_MAXSIZE`)."""
        with self._lock:
            if len(self._idle) < POOL_MAXSIZE:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _still_open(conn: httpc.HTTPConnection) -> bool:
    """Whether an idle kept-alive connection can carry a request: its socket is there and
    has nothing to read (an idle connection turns readable when the server closes it)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _take_session(key: tuple[str, str, str]) -> http.Session:
    """The shared HTTP session of (origin, username, password); counted."""
    with _sessions_lock:
        session, users = _sessions.get(key) or (http.Session(pool_maxsize=POOL_MAXSIZE), 0)
        _sessions[key] = (session, users + 1)
        if key not in _conns:
            _conns[key] = _Conns(key[0])
        return session


def _give_session(key: tuple[str, str, str]) -> None:
    """One user less; the last one closes the session."""
    with _sessions_lock:
        held = _sessions.pop(key, None)
        if held is None:
            return
        session, users = held
        if users > 1:
            _sessions[key] = (session, users - 1)
            return
        conns = _conns.pop(key, None)
    session.close()
    if conns is not None:
        conns.close()


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, lower-case headers, body.

    A streamed 207 (``stream=True``) comes without its body: ``chunks`` reads it as it
    arrives, once; a connection that breaks meanwhile raises :class:`Transient` there.
    """

    status: int
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    chunks: Iterator[bytes] | None = field(default=None, compare=False, repr=False)

    @property
    def ok(self) -> bool:
        """A 2xx status."""
        return 200 <= self.status < 300


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
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


def strong_etag(etag: str) -> str:
    """An entity tag without its weak marker.

    Cyrus marks the ETag of a gzip'ed GET weak (``W/"x"``) while PUT and the feed give
    ``"x"``; ``If-Match`` compares strongly, so syncd keeps and sends the strong form.
    """
    return etag.strip().removeprefix("W/")


def same_etag(a: str, b: str) -> bool:
    """Weak comparison of two entity tags (RFC 9110 8.8.3.2)."""
    return strong_etag(a) == strong_etag(b)


def _dropped(err: BaseException) -> bool:
    """A connection closed by the server before it answered (not a refusal or timeout)."""
    if isinstance(err, ConnectionResetError | ConnectionAbortedError):
        return True  # http.client.RemoteDisconnected is a ConnectionResetError
    text = repr(err)
    marks = ("RemoteDisconnected", "Remote end closed", "Connection reset", "Connection aborted")
    return any(m in text for m in marks)


def _chunks(resp: http.Response, what: str) -> Iterator[bytes]:
    """A streamed body as it arrives; the connection goes back to the pool at its end."""
    try:
        yield from resp.iter_content(CHUNK)
    except (http.exceptions.RequestException, OSError) as err:
        raise Transient(f"{what}: the connection broke while the answer was read: {err}") from err
    finally:
        resp.close()


class _Headers:
    """What an auth object of the library writes its header into."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}


#: Answers the plain REPORT path hands back to the library: a redirect to follow, an
#: authentication to negotiate.
_NOT_PLAIN = (301, 302, 303, 307, 308, 401)


#: How a kept-alive connection the server closed meanwhile fails (sent again once).
_STALE = (ConnectionError, httpc.BadStatusLine)

#: Requests the plain path takes: reads, and writes under a precondition (see
#: :func:`_plain_fits`).
_PLAIN_READS = frozenset({"REPORT", "GET", "PROPFIND"})
_PLAIN_WRITES = frozenset({"PUT", "DELETE"})
_CONDITIONS = frozenset({"if-match", "if-none-match"})


def _conditional(headers: Mapping[str, str]) -> bool:
    return any(k.lower() in _CONDITIONS for k in headers)


def _plain_fits(method: str, headers: Mapping[str, str]) -> bool:
    """Whether the plain path may send this request, and send it again once on a kept-alive
    connection that turns out closed: a read, or a write under a precondition (sent twice,
    the second answers 412, or 404 for a DELETE, which the backend handles as for any
    event that changed meanwhile)."""
    return method in _PLAIN_READS or (method in _PLAIN_WRITES and _conditional(headers))


class _NotPlain(Exception):
    """The plain path cannot take this request or answer: the library's path does."""


class Transport:
    """Requests to one CalDAV server with one account."""

    def __init__(
        self, origin: str, url: str, username: str, password: str, timeout: float, ua: str
    ) -> None:
        self.origin = origin
        self._timeout = timeout
        self._ua = ua
        self._client = DAVClient(
            url=url,
            username=username or None,
            password=password or None,
            timeout=int(timeout) or 1,
            enable_rfc6764=False,
            headers={"User-Agent": ua},
        )
        self._client.session.close()
        self._key = (origin, username, password)
        self._client.session = _take_session(self._key)
        self._conns = _conns[self._key]
        # The environment's proxies are the library's to apply (and NO_PROXY with them).
        self._plain = not urllib.request.getproxies()
        self._auth_header: tuple[object, str | None] = (None, None)
        self._closed = False
        self._renegotiated = False
        if username:
            # Preemptive Basic saves a round trip; a 401 naming another scheme renegotiates.
            self._client.build_auth_object(["basic"])

    def url(self, href: str) -> str:
        """The absolute URL of an href on this server."""
        return self.origin + href

    def send(
        self,
        method: str,
        url: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        redirects: bool = True,
        _retrying: bool = False,
        stream: bool = False,
    ) -> Reply:
        """One request; connection failures, timeouts and 5xx raise :class:`Transient`.

        ``redirects=False`` returns a 3xx as it is (discovery follows it itself).
        ``stream=True``: a 207's body is left to ``Reply.chunks``.
        """
        if redirects and not stream and self._plain and _plain_fits(method, headers or {}):
            try:
                return self._send_plain(method, url, body, headers or {})
            except _NotPlain:
                pass  # the library's path, below
        all_headers = {"User-Agent": self._ua, **(headers or {})}
        try:
            resp = self._client.session.request(
                method,
                url,
                data=body or None,
                headers=all_headers,
                auth=self._client.auth,
                timeout=self._timeout,
                allow_redirects=redirects,
                stream=stream,
            )
            streamed = stream and resp.status_code == 207
            reply = Reply(
                int(resp.status_code or 0),
                {str(k).lower(): str(v) for k, v in resp.headers.items()},
                b"" if streamed else (resp.content or b""),
                _chunks(resp, f"{method} {url}") if streamed else None,
            )
        except (http.exceptions.RequestException, OSError) as err:
            if _conditional(all_headers) and not _retrying and _dropped(err):
                # A kept-alive connection the server had closed (SOGo does): sent again
                # once. Safe for a conditional write: a repeat of one that was applied
                # answers 412 (or 404 for a DELETE), which the caller handles.
                return self.send(method, url, body, headers, redirects, True, stream)
            raise Transient(f"{method} {url} failed: {err}") from err
        if reply.status == 401 and self._client.username and not self._renegotiated:
            self._renegotiated = True
            schemes = extract_auth_types(reply.headers.get("www-authenticate", ""))
            if schemes:
                try:
                    self._client.build_auth_object(sorted(schemes))
                except Exception as err:  # caldav's AuthorizationError: no usable scheme
                    raise AuthRevoked(f"{url}: no usable authentication: {err}") from err
                return self.send(method, url, body, headers, redirects, stream=stream)
        wait = retry_after(reply.headers.get("retry-after"))
        if reply.status == 429 or (reply.status == 503 and wait is not None):
            raise RateLimited(f"{method} {url}: HTTP {reply.status}", wait)
        # 501 Not Implemented is an answer (an unsupported REPORT), not an outage.
        if (reply.status >= 500 and reply.status != 501) or reply.status == 0:
            raise Transient(f"{method} {url}: HTTP {reply.status}")
        return reply

    def _plain_auth(self) -> str | None:
        """The Authorization header of the current auth object (none or Basic)."""
        auth = self._client.auth
        if auth is None:
            return None
        if type(auth) is not http.auth.HTTPBasicAuth:
            raise _NotPlain(f"auth {type(auth).__name__}")
        held, header = self._auth_header
        if held is not auth:
            header = auth(_Headers()).headers["Authorization"]
            self._auth_header = (auth, header)
        return header

    def _send_plain(self, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> Reply:
        """One request on a kept-alive ``http.client`` connection: what :meth:`send` does
        for an answer that needs nothing of the library (see the module); ``_NotPlain``
        when it does. Only for what :func:`_plain_fits`: one that fails on a connection
        that sat idle (the server closed it) is sent again once on a new one."""
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        all_headers: dict[str, str] = {
            "User-Agent": self._ua,
            "Accept-Encoding": "gzip",
            **headers,
        }
        auth = self._plain_auth()
        if auth is not None:
            all_headers["Authorization"] = auth
        for attempt in (1, 2):
            conn, reused = self._conns.take(self._timeout, fresh=attempt == 2)
            try:
                conn.request(method, target, body or None, all_headers)
                resp = conn.getresponse()
                data = resp.read()
            except ssl.SSLError as err:  # a certificate the library's trust store may know
                conn.close()
                self._plain = False
                raise _NotPlain(f"TLS: {err}") from err
            except (httpc.HTTPException, OSError) as err:
                conn.close()
                if reused and attempt == 1 and isinstance(err, _STALE):
                    continue  # the server closed it while it sat idle: once more, afresh
                raise Transient(f"{method} {url} failed: {err}") from err
            names = {k.lower(): v for k, v in resp.getheaders()}
            if resp.will_close:
                conn.close()
            else:
                self._conns.give(conn)
            break
        if resp.status == 401 and (self._renegotiated or not self._client.username):
            return Reply(resp.status, names, data)  # refused, nothing left to negotiate
        if resp.status in _NOT_PLAIN:
            raise _NotPlain(f"HTTP {resp.status}")
        encoding = names.get("content-encoding", "identity").strip().lower()
        if encoding == "gzip":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as err:
                raise Transient(f"{method} {url}: a broken gzip body ({err})") from err
        elif encoding != "identity":
            raise _NotPlain(f"content-encoding {encoding}")
        reply = Reply(resp.status, names, data)
        wait = retry_after(names.get("retry-after"))
        if reply.status == 429 or (reply.status == 503 and wait is not None):
            raise RateLimited(f"{method} {url}: HTTP {reply.status}", wait)
        if reply.status >= 500 and reply.status != 501:
            raise Transient(f"{method} {url}: HTTP {reply.status}")
        return reply

    def read(
        self,
        method: str,
        url: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        redirects: bool = True,
        stream: bool = False,
    ) -> Reply:
        """An idempotent request (GET, PROPFIND, REPORT), retried on transient failures
        (a streamed body, once it is being read, is not: its reader sees the error)."""
        retrying = Retrying(
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.1, max=1.0) + wait_random(0, 0.1),
            retry=retry_if_exception(_retryable),
            reraise=True,
        )
        return retrying(self.send, method, url, body, headers, redirects, stream=stream)

    def fail(self, reply: Reply, what: str) -> BackendError:
        """The error for an unexpected answer (never :class:`NotFound`)."""
        if reply.status in (401, 403):
            return AuthRevoked(f"{what}: the server refused the credentials (HTTP {reply.status})")
        if reply.status == 412:
            return PreconditionFailed(f"{what}: the event changed on the server (HTTP 412)")
        return Transient(f"{what}: unexpected HTTP {reply.status}")

    def report(self, href: str, body: str, depth: str, stream: bool = False) -> Reply:
        """A REPORT on an href (``stream``: see :class:`Reply`)."""
        headers = {"Content-Type": XML, "Depth": depth}
        return self.read("REPORT", self.url(href), body.encode(), headers, stream=stream)

    def propfind(self, href: str, body: str, depth: str) -> Reply:
        """A PROPFIND on an href."""
        headers = {"Content-Type": XML, "Depth": depth}
        return self.read("PROPFIND", self.url(href), body.encode(), headers)

    def multistatus(self, reply: Reply, what: str) -> tuple[list[dav.DavResponse], str | None]:
        """The responses of a 207 answer; anything else is an error."""
        if reply.status != 207:
            raise self.fail(reply, what)
        try:
            return dav.parse_multistatus(reply.body)
        except dav.DavXmlError as err:
            raise Transient(f"{what}: unparseable answer ({err})") from err

    def close(self) -> None:
        """Give the shared HTTP session back (the last calendar closes it)."""
        if not self._closed:
            self._closed = True
            _give_session(self._key)
