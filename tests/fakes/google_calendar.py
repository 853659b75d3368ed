"""A faithful, stateful fake of the Google Calendar API v3 served over HTTP on loopback.

Drive it through the real ``googleapiclient``::

    with FakeGoogleCalendar() as fake:
        creds = Credentials(None, token_uri=fake.token_uri, **fake.credentials_kwargs())
        service = build("calendar", "v3", credentials=creds, static_discovery=True,
                        client_options={"api_endpoint": fake.base_url})

Semantics live in :mod:`google_calendar_model` (events, patch rules, sync tokens) and
:mod:`google_calendar_push` (watch channels); this module is the HTTP server, the OAuth
token endpoint, fault injection and the "human in the Google Calendar UI" helpers.
"""

from __future__ import annotations

import copy
import json
import random
import secrets
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .google_calendar_model import (
    ApiError,
    CalendarState,
    Json,
    StoredEvent,
    bad_request,
    format_local,
    not_found,
    zone,
)
from .google_calendar_push import Channel, Notifier, channel_from_watch, channel_not_found

SERVICE_PREFIX = "/calendar/v3"
DEFAULT_CLIENT_ID = "fake-client-id.apps.googleusercontent.com"
DEFAULT_CLIENT_SECRET = "fake-client-secret"
DEFAULT_REFRESH_TOKEN = "1//fake-default-refresh-token"


def auth_error() -> ApiError:
    """Google's 401 for a missing, unknown, expired or revoked bearer token."""
    return ApiError(
        401,
        "authError",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential.",
        location="Authorization",
        locationType="header",
    )


@dataclass(frozen=True)
class Fault:
    """An error response to inject (status, reason in the errors list, message, domain)."""

    status: int
    reason: str
    message: str
    domain: str = "global"

    def error(self) -> ApiError:
        return ApiError(self.status, self.reason, self.message, domain=self.domain)


RATE_LIMIT_429 = Fault(429, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits")
RATE_LIMIT_403 = Fault(403, "rateLimitExceeded", "Rate Limit Exceeded", "usageLimits")
USER_RATE_LIMIT_403 = Fault(403, "userRateLimitExceeded", "User Rate Limit Exceeded", "usageLimits")
QUOTA_403 = Fault(403, "quotaExceeded", "Calendar usage limits exceeded.", "usageLimits")
BACKEND_500 = Fault(500, "backendError", "Backend Error")
UNAVAILABLE_503 = Fault(503, "backendError", "The service is currently unavailable.")
ALL_FAULTS: tuple[Fault, ...] = (
    RATE_LIMIT_429,
    RATE_LIMIT_403,
    USER_RATE_LIMIT_403,
    QUOTA_403,
    BACKEND_500,
    UNAVAILABLE_503,
)


@dataclass(frozen=True)
class RequestInfo:
    """One request as the fake saw it; `op` is the API method, e.g. ``events.list``."""

    method: str
    op: str
    path: str
    query: dict[str, list[str]]
    calendar_id: str | None = None
    event_id: str | None = None


Matcher = Callable[[RequestInfo], bool]


def api_only(info: RequestInfo) -> bool:
    """Default fault target: every Calendar API call, not the OAuth token endpoint."""
    return info.op != "token"


@dataclass
class _Grant:
    client_id: str
    client_secret: str
    revoked: bool = False


@dataclass
class _Injection:
    rate: float = 0.0
    kinds: Sequence[Fault] = ALL_FAULTS
    rng: random.Random = field(default_factory=random.Random)
    match: Matcher = api_only
    queued: list[tuple[Fault, Matcher]] = field(default_factory=list)


class FakeGoogleCalendar:
    """Google Calendar v3 + OAuth token endpoint on 127.0.0.1 (random free port)."""

    def __init__(
        self,
        owner: str = "admin@example.com",
        time_zone: str = "UTC",
        *,
        require_auth: bool = True,
        access_token_ttl: int = 3599,
    ) -> None:
        self.owner = owner
        self.require_auth = require_auth
        self.access_token_ttl = access_token_ttl
        self.latency = 0.0
        self.lock = threading.RLock()
        self.state = CalendarState(owner, time_zone)
        self.request_log: Counter[tuple[str, str]] = Counter()
        self.requests: list[RequestInfo] = []
        self.channels: dict[str, Channel] = {}
        self.internal_errors: list[str] = []  # tracebacks of bugs in the fake itself
        self._grants: dict[str, _Grant] = {}
        self._access: dict[str, tuple[str, float]] = {}
        self._faults = _Injection()
        self._notifier = Notifier()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add_refresh_token(DEFAULT_REFRESH_TOKEN)
        self.base_url = ""
        self.token_uri = ""

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> FakeGoogleCalendar:
        """Bind a free loopback port and serve in a daemon thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        port = server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}{SERVICE_PREFIX}/"
        self.token_uri = f"http://127.0.0.1:{port}/token"
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name="fake-gcal-http",
        )
        self._thread.start()
        self._notifier.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._notifier.stop()

    def __enter__(self) -> FakeGoogleCalendar:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def short_pages(self) -> bool:
        """When True, the first page of every listing is empty (with a nextPageToken)."""
        return self.state.short_pages

    @short_pages.setter
    def short_pages(self, value: bool) -> None:
        with self.lock:
            self.state.short_pages = value

    # -- OAuth ----------------------------------------------------------------------------
    def add_refresh_token(
        self,
        token: str,
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
    ) -> None:
        with self.lock:
            self._grants[token] = _Grant(client_id, client_secret)

    def revoke(self, refresh_token: str) -> None:
        """Revoke a refresh token and every access token issued from it."""
        with self.lock:
            self._grants[refresh_token].revoked = True
            self._access = {a: v for a, v in self._access.items() if v[0] != refresh_token}

    def expire_access_tokens(self) -> None:
        """Make every issued access token stale, so the next API call gets 401 and refreshes."""
        with self.lock:
            self._access.clear()

    def authorized_user_info(self, refresh_token: str = DEFAULT_REFRESH_TOKEN) -> dict[str, str]:
        """Google's authorized-user JSON for a registered refresh token."""
        grant = self._grants[refresh_token]
        return {
            "type": "authorized_user",
            "client_id": grant.client_id,
            "client_secret": grant.client_secret,
            "refresh_token": refresh_token,
            "token_uri": self.token_uri,
        }

    def credentials_kwargs(self, refresh_token: str = DEFAULT_REFRESH_TOKEN) -> dict[str, str]:
        """Keyword arguments for ``google.oauth2.credentials.Credentials`` (besides token)."""
        info = self.authorized_user_info(refresh_token)
        return {k: info[k] for k in ("client_id", "client_secret", "refresh_token")}

    # -- faults ---------------------------------------------------------------------------
    def fail_next(
        self,
        n: int = 1,
        status: int = 503,
        reason: str = "backendError",
        message: str | None = None,
        *,
        match: Matcher | None = None,
    ) -> None:
        """Answer the next `n` matching requests with this error instead of serving them."""
        known = {(f.status, f.reason): f for f in ALL_FAULTS}
        fault = known.get((status, reason)) or Fault(status, reason, message or reason)
        if message:
            fault = Fault(status, reason, message, fault.domain)
        with self.lock:
            self._faults.queued.extend([(fault, match or api_only)] * n)

    def inject_errors(
        self,
        rate: float,
        kinds: Sequence[Fault] = ALL_FAULTS,
        seed: int | None = None,
        *,
        match: Matcher | None = None,
    ) -> None:
        """Fail a random fraction `rate` of matching requests with one of `kinds`."""
        with self.lock:
            self._faults.rate = rate
            self._faults.kinds = list(kinds)
            self._faults.rng = random.Random(seed)
            self._faults.match = match or api_only

    def clear_faults(self) -> None:
        with self.lock:
            self._faults = _Injection()
        self.latency = 0.0

    def _pick_fault(self, info: RequestInfo) -> Fault | None:
        f = self._faults
        for i, (fault, match) in enumerate(f.queued):
            if match(info):
                del f.queued[i]
                return fault
        if f.rate > 0 and f.match(info) and f.rng.random() < f.rate:
            return f.rng.choice(list(f.kinds))
        return None

    def count(self, op: str) -> int:
        """How many requests for one API method (e.g. ``events.list``) the fake received."""
        with self.lock:
            return sum(n for (_, o), n in self.request_log.items() if o == op)

    def reset_log(self) -> None:
        with self.lock:
            self.request_log.clear()
            self.requests.clear()

    # -- direct state access for assertions --------------------------------------------------
    def add_calendar(self, summary: str = "Secondary", time_zone: str = "UTC") -> str:
        with self.lock:
            return str(
                self.state.insert_calendar({"summary": summary, "timeZone": time_zone})["id"]
            )

    def get_event_raw(self, cal: str, event_id: str) -> Json:
        """The stored resource, even when deleted or purged (KeyError if never existed)."""
        with self.lock:
            return copy.deepcopy(self.state.calendar(cal).events[event_id].body)

    def events(self, cal: str = "primary") -> list[Json]:
        """Every stored event of a calendar, cancelled ones included, in insertion order."""
        with self.lock:
            return [copy.deepcopy(e.body) for e in self.state.calendar(cal).events.values()]

    def send_updates_of(self, cal: str, event_id: str) -> str | None:
        """The `sendUpdates` value of the last API write to this event (None if absent)."""
        with self.lock:
            return self.state.calendar(cal).events[event_id].send_updates

    def expire_sync_tokens(self, cal: str = "primary") -> None:
        """Every sync token issued so far for `cal` now gets 410 fullSyncRequired."""
        with self.lock:
            self.state.calendar(cal).token_epoch += 1

    def purge(self, cal: str, event_id: str | None = None, status: int = 410) -> None:
        """Forget deleted events: events.get then answers `status` (404 or 410)."""
        with self.lock:
            for eid, ev in self.state.calendar(cal).events.items():
                if ev.cancelled and event_id in (None, eid):
                    ev.purged_status = status

    # -- a person in the Google Calendar UI ---------------------------------------------------
    def _human_write(self, cal: str, event_id: str, change: Callable[[Json], None]) -> Json:
        with self.lock:
            body = copy.deepcopy(self.state.get_event(cal, event_id).body)
            change(body)
            out = self.state.write_event(cal, event_id, body, replace=True, human=True)
            cal_id = self.state.calendar(cal).id
        self._notify(cal_id)
        return out

    def human_move(
        self,
        cal: str,
        event_id: str,
        new_start_iso: str,
        new_end_iso: str,
        tz: str | None = None,
    ) -> Json:
        """Drag the event: the UI writes dateTime with the user's offset and a timeZone."""
        tz_name = tz or self.state.calendar(cal).time_zone

        def local(value: str) -> str:
            dt = datetime.fromisoformat(value)
            return format_local(dt if dt.tzinfo else dt.replace(tzinfo=zone(tz_name)), tz_name)

        def change(body: Json) -> None:
            body["start"] = {"dateTime": local(new_start_iso), "timeZone": tz_name}
            body["end"] = {"dateTime": local(new_end_iso), "timeZone": tz_name}

        return self._human_write(cal, event_id, change)

    def human_edit(
        self,
        cal: str,
        event_id: str,
        *,
        summary: str | None = None,
        description: str | None = None,
        location: str | None = None,
    ) -> Json:
        fields = {"summary": summary, "description": description, "location": location}

        def change(body: Json) -> None:
            body.update({k: v for k, v in fields.items() if v is not None})

        return self._human_write(cal, event_id, change)

    def human_make_all_day(self, cal: str, event_id: str, day: str | date) -> Json:
        d = date.fromisoformat(day) if isinstance(day, str) else day

        def change(body: Json) -> None:
            body["start"] = {"date": d.isoformat()}
            body["end"] = {"date": (d + timedelta(days=1)).isoformat()}

        return self._human_write(cal, event_id, change)

    def human_make_recurring(self, cal: str, event_id: str, rrule: str) -> Json:
        """Make the event repeat; the UI also pins the start/end time zone."""
        tz_name = self.state.calendar(cal).time_zone

        def change(body: Json) -> None:
            body["recurrence"] = [rrule if rrule.upper().startswith("RRULE:") else f"RRULE:{rrule}"]
            for key in ("start", "end"):
                if "dateTime" in body[key]:
                    body[key].setdefault("timeZone", tz_name)

        return self._human_write(cal, event_id, change)

    def human_delete(self, cal: str, event_id: str) -> None:
        with self.lock:
            self.state.delete_event(cal, event_id, human=True)
            cal_id = self.state.calendar(cal).id
        self._notify(cal_id)

    def human_undo_delete(self, cal: str, event_id: str) -> Json:
        """Undo right after deleting: the event is confirmed again, with a new etag."""
        return self._human_write(cal, event_id, lambda body: body.update(status="confirmed"))

    # -- push -----------------------------------------------------------------------------
    def _notify(self, cal_id: str, state: str = "exists", only: Channel | None = None) -> None:
        now_ms = time.time() * 1000
        with self.lock:
            targets = (
                [only]
                if only
                else [
                    c
                    for c in self.channels.values()
                    if c.calendar_id == cal_id and c.expiration_ms > now_ms
                ]
            )
            batch = [(c.address, c.headers(state)) for c in targets]
        for address, headers in batch:
            self._notifier.send(address, headers)

    # -- HTTP dispatch --------------------------------------------------------------------
    def _route(self, method: str, raw_path: str, query: dict[str, list[str]]) -> RequestInfo:
        path = raw_path[len(SERVICE_PREFIX) :] if raw_path.startswith(SERVICE_PREFIX) else raw_path
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        cal = parts[1] if len(parts) > 1 and parts[0] == "calendars" else None
        eid = parts[3] if len(parts) > 3 else None
        routes: dict[tuple[str, int, str], str] = {
            ("POST", 1, "token"): "token",
            ("POST", 1, "calendars"): "calendars.insert",
            ("GET", 2, "calendars"): "calendars.get",
            ("GET", 3, "calendars"): "events.list",
            ("POST", 3, "calendars"): "events.insert",
            ("GET", 4, "calendars"): "events.get",
            ("PATCH", 4, "calendars"): "events.patch",
            ("PUT", 4, "calendars"): "events.update",
            ("DELETE", 4, "calendars"): "events.delete",
            ("POST", 2, "channels"): "channels.stop",
        }
        op = routes.get((method, len(parts), parts[0] if parts else ""), "unknown")
        if op.startswith("events.") and parts[2] != "events":
            op = "unknown"
        if op == "channels.stop" and parts[1] != "stop":
            op = "unknown"
        if method == "POST" and len(parts) == 4 and parts[2:] == ["events", "watch"]:
            op, eid = "events.watch", None
        return RequestInfo(method, op, raw_path, query, cal, eid)

    def handle(
        self, method: str, target: str, headers: dict[str, str], raw: bytes
    ) -> tuple[int, Json | None, dict[str, str]]:
        """Serve one request: log, latency, faults, auth, then the API method."""
        split = urlsplit(target)
        query = parse_qs(split.query, keep_blank_values=True)
        info = self._route(method, split.path, query)
        with self.lock:
            self.request_log[(method, info.op)] += 1
            self.requests.append(info)
            fault = self._pick_fault(info)
        if self.latency:
            time.sleep(self.latency)
        try:
            if fault is not None:
                raise fault.error()
            if info.op == "token":
                return self._token(raw, headers)
            if self.require_auth:
                self._check_auth(headers.get("authorization", ""))
            body: Json = {}
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError as err:
                    raise bad_request("Parse Error", "parseError") from err
            return self._api(info, body, headers)
        except ApiError as err:
            extra = (
                {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'}
                if err.code == 401
                else {}
            )
            return err.code, err.body(), extra

    def _check_auth(self, header: str) -> None:
        token = header[7:] if header.lower().startswith("bearer ") else ""
        with self.lock:
            entry = self._access.get(token)
            ok = entry is not None and entry[1] > time.time()
            if ok and entry is not None and self._grants[entry[0]].revoked:
                ok = False
        if not ok:
            raise auth_error()

    def _token(self, raw: bytes, headers: dict[str, str]) -> tuple[int, Json, dict[str, str]]:
        if "json" in headers.get("content-type", ""):
            form = {k: str(v) for k, v in json.loads(raw or b"{}").items()}
        else:
            form = {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
        if form.get("grant_type") != "refresh_token":
            return (
                400,
                {
                    "error": "unsupported_grant_type",
                    "error_description": "Invalid grant_type: " + form.get("grant_type", ""),
                },
                {},
            )
        with self.lock:
            grant = self._grants.get(form.get("refresh_token", ""))
            if grant is None or grant.revoked:
                return (
                    400,
                    {
                        "error": "invalid_grant",
                        "error_description": "Token has been expired or revoked.",
                    },
                    {},
                )
            if (form.get("client_id"), form.get("client_secret")) != (
                grant.client_id,
                grant.client_secret,
            ):
                return (
                    401,
                    {
                        "error": "invalid_client",
                        "error_description": "The OAuth client was not found.",
                    },
                    {},
                )
            access = "ya29.fake-" + secrets.token_urlsafe(24)
            self._access[access] = (form["refresh_token"], time.time() + self.access_token_ttl)
        out: Json = {
            "access_token": access,
            "expires_in": self.access_token_ttl,
            "token_type": "Bearer",
        }
        if form.get("scope"):
            out["scope"] = form["scope"]
        return 200, out, {}

    def _api(
        self, info: RequestInfo, body: Json, headers: dict[str, str]
    ) -> tuple[int, Json | None, dict[str, str]]:
        one = {k: v[-1] for k, v in info.query.items() if v}
        send_updates = one.get("sendUpdates")
        if_match = headers.get("if-match")
        cal, eid, st = info.calendar_id or "", info.event_id or "", self.state
        changed = False
        with self.lock:
            if info.op == "calendars.insert":
                return 200, st.insert_calendar(body), {}
            if info.op == "calendars.get":
                return 200, st.calendar(cal).resource(), {}
            if info.op == "events.list":
                return 200, st.list_events(cal, info.query), {}
            if info.op == "events.get":
                ev: StoredEvent = st.get_event(cal, eid)
                etag = ev.body["etag"]
                if headers.get("if-none-match") == etag:
                    return 304, None, {"ETag": etag}
                return 200, copy.deepcopy(ev.body), {"ETag": etag}
            if info.op == "events.watch":
                cal_id = st.calendar(cal).id
                channel = channel_from_watch(cal_id, body)
                if channel.id in self.channels:
                    raise bad_request("Channel id not unique.", "channelIdNotUnique")
                self.channels[channel.id] = channel
                self._notify(cal_id, "sync", only=channel)
                return 200, channel.resource(), {}
            if info.op == "channels.stop":
                found = self.channels.get(str(body.get("id")))
                if found is None or found.resource_id != body.get("resourceId"):
                    raise channel_not_found(str(body.get("id")))
                del self.channels[found.id]
                return 204, None, {}
            cal_id = st.calendar(cal).id if cal else ""
            result: Json | None = None
            if info.op == "events.insert":
                result = st.insert_event(cal, body, send_updates)
            elif info.op in ("events.patch", "events.update"):
                result = st.write_event(
                    cal,
                    eid,
                    body,
                    replace=info.op == "events.update",
                    if_match=if_match,
                    send_updates=send_updates,
                )
            elif info.op == "events.delete":
                st.delete_event(cal, eid, if_match=if_match, send_updates=send_updates)
            else:
                raise not_found()
            changed = True
        if changed:
            self._notify(cal_id)
        return (204, None, {}) if result is None else (200, result, {"ETag": result["etag"]})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ESF"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle + delayed ACK
        # would stall every keep-alive response by ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        fake: FakeGoogleCalendar = self.server.fake  # type: ignore[attr-defined]
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, body, extra = fake.handle(self.command, self.path, headers, raw)
        except Exception as err:  # a bug in the fake: answer 500 rather than hang the client
            fake.internal_errors.append(traceback.format_exc())
            status, body, extra = 500, ApiError(500, "backendError", repr(err)).body(), {}
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for key, value in extra.items():
            self.send_header(key, value)
        if status not in (204, 304):
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if status not in (204, 304):
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return
