"""The Google Calendar fake, driven through the real googleapiclient and google-auth."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from google.auth.exceptions import RefreshError
from google.oauth2 import credentials as oauth2_credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from .google_calendar import (
    BACKEND_500,
    DEFAULT_REFRESH_TOKEN,
    FakeGoogleCalendar,
    RequestInfo,
)

Json = dict[str, Any]
Credentials: Any = oauth2_credentials.Credentials  # google-auth ships no type hints here
START = "2031-03-10T09:00:00Z"
END = "2031-03-10T10:00:00Z"


def make_service(fake: FakeGoogleCalendar, refresh_token: str = DEFAULT_REFRESH_TOKEN) -> Any:
    # token_uri passed explicitly: some google-auth versions drop it from the info dict.
    creds = Credentials(None, token_uri=fake.token_uri, **fake.credentials_kwargs(refresh_token))
    return build(
        "calendar",
        "v3",
        credentials=creds,
        static_discovery=True,
        client_options={"api_endpoint": fake.base_url},
    )


@pytest.fixture
def fake() -> Iterator[FakeGoogleCalendar]:
    with FakeGoogleCalendar() as f:
        yield f
        assert f.internal_errors == []  # a 500 from a bug in the fake must not go unnoticed


@pytest.fixture
def svc(fake: FakeGoogleCalendar) -> Any:
    return make_service(fake)


def body(event_id: str | None = None, **extra: Any) -> Json:
    out: Json = {"summary": "Session", "start": {"dateTime": START}, "end": {"dateTime": END}}
    if event_id:
        out["id"] = event_id
    out.update(extra)
    return out


def http_error(call: Callable[[], Any]) -> HttpError:
    with pytest.raises(HttpError) as info:
        call()
    return info.value


def reason(err: HttpError) -> str:
    return str(err.error_details[0]["reason"])


def etag_n(etag: str) -> int:
    return int(etag.strip('"'))


def full_sync(svc: Any, cal: str = "primary", **kw: Any) -> tuple[list[Json], str]:
    items: list[Json] = []
    page: str | None = None
    while True:
        resp = svc.events().list(calendarId=cal, pageToken=page, **kw).execute()
        items += resp["items"]
        page = resp.get("nextPageToken")
        if not page:
            return items, resp["nextSyncToken"]


def no_sleep(req: Any) -> Any:
    req._sleep = lambda _s: None  # the client sleeps rand() * 2**n between retries
    return req


# -- calendars, ids, etags ------------------------------------------------------------------


def test_calendars_primary_and_secondary(fake: FakeGoogleCalendar, svc: Any) -> None:
    assert svc.calendars().get(calendarId="primary").execute()["id"] == fake.owner
    created = svc.calendars().insert(body={"summary": "Coaching", "timeZone": "Europe/Berlin"})
    cal = created.execute()
    assert cal["id"].endswith("@group.calendar.google.com")
    assert svc.calendars().get(calendarId=cal["id"]).execute()["timeZone"] == "Europe/Berlin"
    assert http_error(svc.calendars().get(calendarId="nope@example.com").execute).status_code == 404
    ev = svc.events().insert(calendarId=cal["id"], body=body("sess00001")).execute()
    assert ev["organizer"] == {"email": cal["id"], "displayName": "Coaching", "self": True}
    # Berlin is UTC+1 in March: Google renders the instant in the calendar's zone.
    assert ev["start"]["dateTime"] == "2031-03-10T10:00:00+01:00"
    assert fake.events("primary") == []


def test_insert_client_id_then_duplicate_409(svc: Any) -> None:
    ev = svc.events().insert(calendarId="primary", body=body("sess0abc123")).execute()
    assert ev["id"] == "sess0abc123"
    assert ev["iCalUID"] == "sess0abc123@google.com"
    assert ev["status"] == "confirmed" and ev["sequence"] == 0
    assert {"created", "updated", "htmlLink", "creator", "organizer", "etag"} <= ev.keys()
    err = http_error(svc.events().insert(calendarId="primary", body=body("sess0abc123")).execute)
    assert (err.status_code, reason(err)) == (409, "duplicate")
    svc.events().delete(calendarId="primary", eventId="sess0abc123").execute()
    err = http_error(svc.events().insert(calendarId="primary", body=body("sess0abc123")).execute)
    assert err.status_code == 409  # a cancelled event still owns its id


@pytest.mark.parametrize("bad_id", ["ABCDEF", "abcw12", "abc", "a" * 1025, "ab_cd1"])
def test_invalid_client_id_400(svc: Any, bad_id: str) -> None:
    err = http_error(svc.events().insert(calendarId="primary", body=body(bad_id)).execute)
    assert (err.status_code, reason(err)) == (400, "invalid")


def test_generated_id_and_validation(svc: Any) -> None:
    ev = svc.events().insert(calendarId="primary", body=body()).execute()
    assert len(ev["id"]) >= 5 and set(ev["id"]) <= set("0123456789abcdefghijklmnopqrstuv")
    bad = body(end={"dateTime": "2031-03-10T08:00:00Z"})
    assert (
        reason(http_error(svc.events().insert(calendarId="primary", body=bad).execute))
        == "timeRangeEmpty"
    )
    no_tz = body(start={"dateTime": "2031-03-10T09:00:00"})
    assert (
        http_error(svc.events().insert(calendarId="primary", body=no_tz).execute).status_code == 400
    )


def test_etag_changes_on_every_write(fake: FakeGoogleCalendar, svc: Any) -> None:
    ev = svc.events().insert(calendarId="primary", body=body("etag00001")).execute()
    etags = [ev["etag"]]
    ev = (
        svc.events()
        .patch(calendarId="primary", eventId="etag00001", body={"summary": "renamed"})
        .execute()
    )
    etags.append(ev["etag"])
    assert ev["sequence"] == 0  # a title edit is not a significant change
    ev = (
        svc.events()
        .update(
            calendarId="primary",
            eventId="etag00001",
            body=body(end={"dateTime": "2031-03-10T11:00:00Z"}),
        )
        .execute()
    )
    etags.append(ev["etag"])
    assert ev["sequence"] == 1  # the time changed
    ev = (
        svc.events()
        .patch(
            calendarId="primary",
            eventId="etag00001",
            body={"start": {"dateTime": "2031-03-10T08:00:00Z"}},
        )
        .execute()
    )
    etags.append(ev["etag"])
    assert ev["sequence"] == 2  # patching the time bumps it too
    err = http_error(
        svc.events().patch(calendarId="primary", eventId="etag00001", body={"sequence": 1}).execute
    )
    assert err.status_code == 400  # a sequence below the current one is refused
    svc.events().delete(calendarId="primary", eventId="etag00001").execute()
    etags.append(fake.get_event_raw("primary", "etag00001")["etag"])
    numbers = [etag_n(e) for e in etags]
    assert numbers == sorted(set(numbers))
    assert all(e.startswith('"') and e.endswith('"') for e in etags)


def test_if_match_412_and_if_none_match_304(svc: Any) -> None:
    ev = svc.events().insert(calendarId="primary", body=body("cond00001")).execute()
    stale = ev["etag"]
    svc.events().patch(calendarId="primary", eventId="cond00001", body={"summary": "x"}).execute()
    for req in (
        svc.events().patch(calendarId="primary", eventId="cond00001", body={"summary": "y"}),
        svc.events().update(calendarId="primary", eventId="cond00001", body=body()),
        svc.events().delete(calendarId="primary", eventId="cond00001"),
    ):
        req.headers["If-Match"] = stale
        err = http_error(req.execute)
        assert (err.status_code, reason(err)) == (412, "conditionNotMet")
    current = svc.events().get(calendarId="primary", eventId="cond00001").execute()
    req = svc.events().patch(calendarId="primary", eventId="cond00001", body={"summary": "z"})
    req.headers["If-Match"] = current["etag"]
    assert req.execute()["summary"] == "z"
    get = svc.events().get(calendarId="primary", eventId="cond00001")
    get.headers["If-None-Match"] = (
        svc.events().get(calendarId="primary", eventId="cond00001").execute()["etag"]
    )
    assert http_error(get.execute).status_code == 304


def test_patch_semantics_and_update_replaces(svc: Any) -> None:
    ext = {"private": {"syncd_session": "s1", "keep": "me"}}
    svc.events().insert(
        calendarId="primary",
        body=body(
            "patch0001",
            description="notes",
            extendedProperties=ext,
            reminders={"useDefault": False, "overrides": [{"method": "popup", "minutes": 5}]},
        ),
    ).execute()
    ev = (
        svc.events()
        .patch(
            calendarId="primary",
            eventId="patch0001",
            body={
                "extendedProperties": {"private": {"syncd_session": "s2"}},
                "reminders": {"overrides": []},
                "location": None,
                "start": {"dateTime": "2031-03-10T09:30:00Z"},
            },
        )
        .execute()
    )
    assert ev["extendedProperties"]["private"] == {"syncd_session": "s2", "keep": "me"}
    assert ev["reminders"] == {"useDefault": False, "overrides": []}  # arrays replace
    assert ev["description"] == "notes" and ev["start"]["dateTime"] == "2031-03-10T09:30:00Z"
    ev = svc.events().update(calendarId="primary", eventId="patch0001", body=body()).execute()
    assert "description" not in ev and "extendedProperties" not in ev
    assert ev["iCalUID"] == "patch0001@google.com"


def test_delete_get_cancelled_then_410_and_purge(fake: FakeGoogleCalendar, svc: Any) -> None:
    svc.events().insert(calendarId="primary", body=body("gone00001")).execute()
    assert svc.events().delete(calendarId="primary", eventId="gone00001").execute() == ""
    got = svc.events().get(calendarId="primary", eventId="gone00001").execute()
    assert got["status"] == "cancelled" and got["summary"] == "Session"
    err = http_error(svc.events().delete(calendarId="primary", eventId="gone00001").execute)
    assert (err.status_code, reason(err)) == (410, "deleted")
    err = http_error(svc.events().delete(calendarId="primary", eventId="never0001").execute)
    assert (err.status_code, reason(err)) == (404, "notFound")
    fake.purge("primary", "gone00001")
    err = http_error(svc.events().get(calendarId="primary", eventId="gone00001").execute)
    assert (err.status_code, reason(err)) == (410, "deleted")
    fake.purge("primary", status=404)
    assert (
        http_error(svc.events().get(calendarId="primary", eventId="gone00001").execute).status_code
        == 404
    )


def test_send_updates_recorded(fake: FakeGoogleCalendar, svc: Any) -> None:
    svc.events().insert(calendarId="primary", body=body("notice001"), sendUpdates="none").execute()
    assert fake.send_updates_of("primary", "notice001") == "none"
    svc.events().patch(
        calendarId="primary", eventId="notice001", body={}, sendUpdates="all"
    ).execute()
    assert fake.send_updates_of("primary", "notice001") == "all"


# -- listing and sync -----------------------------------------------------------------------


def test_sync_token_returns_only_changes_with_tombstones(
    fake: FakeGoogleCalendar, svc: Any
) -> None:
    for i in range(3):
        svc.events().insert(calendarId="primary", body=body(f"feed0000{i}")).execute()
    items, token = full_sync(svc)
    assert [e["id"] for e in items] == ["feed00000", "feed00001", "feed00002"]
    fake.reset_log()
    idle = svc.events().list(calendarId="primary", syncToken=token).execute()
    assert idle["items"] == [] and "nextSyncToken" in idle
    assert fake.request_log == {("GET", "events.list"): 1}  # an idle cycle is one request
    svc.events().patch(calendarId="primary", eventId="feed00001", body={"summary": "x"}).execute()
    svc.events().delete(calendarId="primary", eventId="feed00002").execute()
    svc.events().insert(calendarId="primary", body=body("feed00009")).execute()
    changed = svc.events().list(calendarId="primary", syncToken=idle["nextSyncToken"]).execute()
    by_id = {e["id"]: e for e in changed["items"]}
    assert set(by_id) == {"feed00001", "feed00002", "feed00009"}
    assert by_id["feed00001"]["summary"] == "x"
    stone = by_id["feed00002"]
    assert stone["status"] == "cancelled" and "summary" not in stone and "etag" in stone
    again = svc.events().list(calendarId="primary", syncToken=changed["nextSyncToken"]).execute()
    assert again["items"] == []
    err = http_error(
        svc.events()
        .list(calendarId="primary", syncToken=token, timeMin="2030-01-01T00:00:00Z")
        .execute
    )
    assert err.status_code == 400


def test_paging_next_page_then_next_sync_token(svc: Any) -> None:
    for i in range(5):
        svc.events().insert(calendarId="primary", body=body(f"page0000{i}")).execute()
    pages = []
    page_token = None
    while True:
        resp = svc.events().list(calendarId="primary", maxResults=2, pageToken=page_token).execute()
        pages.append(resp)
        page_token = resp.get("nextPageToken")
        if not page_token:
            break
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert all("nextSyncToken" not in p and "nextPageToken" in p for p in pages[:-1])
    assert "nextSyncToken" in pages[-1] and "nextPageToken" not in pages[-1]
    for i in range(3):
        svc.events().patch(calendarId="primary", eventId=f"page0000{i}", body={}).execute()
    items, _ = full_sync(svc, syncToken=pages[-1]["nextSyncToken"], maxResults=2)
    assert [e["id"] for e in items] == ["page00000", "page00001", "page00002"]


def test_short_pages_first_page_empty(fake: FakeGoogleCalendar, svc: Any) -> None:
    svc.events().insert(calendarId="primary", body=body("short0001")).execute()
    fake.short_pages = True
    first = svc.events().list(calendarId="primary").execute()
    assert first["items"] == [] and "nextPageToken" in first and "nextSyncToken" not in first
    items, _ = full_sync(svc)
    assert [e["id"] for e in items] == ["short0001"]


def test_expired_sync_token_410_full_sync_required(fake: FakeGoogleCalendar, svc: Any) -> None:
    _, token = full_sync(svc)
    fake.expire_sync_tokens("primary")
    err = http_error(svc.events().list(calendarId="primary", syncToken=token).execute)
    assert (err.status_code, reason(err)) == (410, "fullSyncRequired")
    _, fresh = full_sync(svc)
    assert svc.events().list(calendarId="primary", syncToken=fresh).execute()["items"] == []


def test_filters_time_window_deleted_private_property(svc: Any) -> None:
    svc.events().insert(
        calendarId="primary",
        body=body("filt00001", extendedProperties={"private": {"syncd_session": "a"}}),
    ).execute()
    svc.events().insert(
        calendarId="primary",
        body=body(
            "filt00002",
            start={"dateTime": "2031-04-01T09:00:00Z"},
            end={"dateTime": "2031-04-01T10:00:00Z"},
        ),
    ).execute()
    svc.events().insert(calendarId="primary", body=body("filt00003")).execute()
    svc.events().delete(calendarId="primary", eventId="filt00003").execute()

    def ids(**kw: Any) -> list[str]:
        items, _ = full_sync(svc, **kw)
        return sorted(e["id"] for e in items)

    assert ids() == ["filt00001", "filt00002"]
    assert ids(showDeleted=True) == ["filt00001", "filt00002", "filt00003"]
    assert ids(timeMin="2031-03-10T10:00:00Z") == ["filt00002"]  # end is exclusive
    assert ids(timeMax="2031-03-15T00:00:00Z", fields="items(id),nextSyncToken") == ["filt00001"]
    assert ids(privateExtendedProperty="syncd_session=a") == ["filt00001"]
    assert ids(privateExtendedProperty=["syncd_session=a", "x=y"]) == []


def test_single_events_expands_recurrence(fake: FakeGoogleCalendar, svc: Any) -> None:
    svc.events().insert(calendarId="primary", body=body("recur0001")).execute()
    fake.human_make_recurring("primary", "recur0001", "FREQ=WEEKLY;COUNT=3")
    master, _ = full_sync(svc)
    assert master[0]["recurrence"] == ["RRULE:FREQ=WEEKLY;COUNT=3"]
    items, _ = full_sync(svc, singleEvents=True, orderBy="startTime")
    assert [e["id"] for e in items] == [
        "recur0001_20310310T090000Z",
        "recur0001_20310317T090000Z",
        "recur0001_20310324T090000Z",
    ]
    assert {e["recurringEventId"] for e in items} == {"recur0001"}


# -- OAuth ----------------------------------------------------------------------------------


def test_credentials_refresh_against_fake_and_401_refresh(
    fake: FakeGoogleCalendar, svc: Any
) -> None:
    svc.calendars().get(calendarId="primary").execute()
    fake.expire_access_tokens()
    svc.calendars().get(calendarId="primary").execute()  # 401, refresh, retried transparently
    assert fake.count("token") == 2
    # from_authorized_user_info drops the file's token_uri (it forces Google's): re-apply it.
    info = fake.authorized_user_info()
    creds = Credentials.from_authorized_user_info(info).with_token_uri(info["token_uri"])
    other = build(
        "calendar",
        "v3",
        credentials=creds,
        static_discovery=True,
        client_options={"api_endpoint": fake.base_url},
    )
    assert other.calendars().get(calendarId="primary").execute()["id"] == fake.owner
    assert fake.count("token") == 3


def test_unknown_bearer_gets_google_auth_error(fake: FakeGoogleCalendar) -> None:
    req = urllib.request.Request(
        fake.base_url + "calendars/primary", headers={"Authorization": "Bearer nope"}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    assert info.value.code == 401
    detail = json.loads(info.value.read())["error"]
    assert detail["errors"][0]["reason"] == "authError" and detail["status"] == "UNAUTHENTICATED"


def test_revoked_refresh_token_raises_refresh_error(fake: FakeGoogleCalendar, svc: Any) -> None:
    svc.calendars().get(calendarId="primary").execute()
    fake.revoke(DEFAULT_REFRESH_TOKEN)
    with pytest.raises(RefreshError, match="invalid_grant"):
        svc.calendars().get(calendarId="primary").execute()
    fake.add_refresh_token("1//other")
    assert make_service(fake, "1//other").calendars().get(calendarId="primary").execute()


# -- fault injection ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "why"),
    [
        (429, "rateLimitExceeded"),
        (403, "rateLimitExceeded"),
        (403, "userRateLimitExceeded"),
        (403, "quotaExceeded"),
        (500, "backendError"),
        (503, "backendError"),
    ],
)
def test_injected_errors_surface(fake: FakeGoogleCalendar, svc: Any, status: int, why: str) -> None:
    fake.fail_next(1, status, why)
    err = http_error(lambda: svc.events().list(calendarId="primary").execute(num_retries=0))
    assert (err.status_code, reason(err)) == (status, why)
    assert svc.events().list(calendarId="primary").execute()["items"] == []


def test_client_retries_transient_errors_until_success(fake: FakeGoogleCalendar, svc: Any) -> None:
    fake.fail_next(2, 503, "backendError")
    fake.fail_next(1, 403, "rateLimitExceeded")
    fake.reset_log()
    resp = no_sleep(svc.events().list(calendarId="primary")).execute(num_retries=3)
    assert resp["items"] == [] and fake.count("events.list") == 4
    fake.fail_next(1, 403, "quotaExceeded")  # not a rate limit: the client does not retry
    err = http_error(no_sleep(svc.events().list(calendarId="primary")).execute)
    assert reason(err) == "quotaExceeded" and fake.count("events.list") == 5


def test_random_injection_with_predicate_and_latency(fake: FakeGoogleCalendar, svc: Any) -> None:
    svc.events().insert(calendarId="primary", body=body("fault0001")).execute()

    def only_list(info: RequestInfo) -> bool:
        return info.op == "events.list"

    fake.inject_errors(1.0, [BACKEND_500], seed=1, match=only_list)
    assert http_error(svc.events().list(calendarId="primary").execute).status_code == 500
    assert svc.events().get(calendarId="primary", eventId="fault0001").execute()["id"]
    fake.inject_errors(0.5, seed=7)
    outcomes = []
    for _ in range(20):
        try:
            svc.events().get(calendarId="primary", eventId="fault0001").execute()
            outcomes.append(True)
        except HttpError:
            outcomes.append(False)
    assert 0 < outcomes.count(False) < 20
    fake.clear_faults()
    fake.latency = 0.2
    began = time.monotonic()
    svc.events().get(calendarId="primary", eventId="fault0001").execute()
    assert time.monotonic() - began >= 0.2


def test_concurrent_clients(fake: FakeGoogleCalendar) -> None:
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            s = make_service(fake)
            for i in range(5):
                s.events().insert(calendarId="primary", body=body(f"conc{n}000{i}")).execute()
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(fake.events()) == 20
    etags = [etag_n(e["etag"]) for e in fake.events()]
    assert len(set(etags)) == 20


# -- push and the human in the UI -----------------------------------------------------------


class _Receiver:
    def __init__(self) -> None:
        self.got: list[dict[str, str]] = []
        received = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - stdlib hook name
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append(dict(self.headers.items()))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_for(self, n: int) -> list[dict[str, str]]:
        deadline = time.monotonic() + 5
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.got


def test_watch_notifications_and_channel_stop(fake: FakeGoogleCalendar, svc: Any) -> None:
    rx = _Receiver()
    try:
        channel = (
            svc.events()
            .watch(
                calendarId="primary",
                body={
                    "id": "chan-1",
                    "type": "web_hook",
                    "address": rx.url,
                    "token": "secret-token",
                    "params": {"ttl": "600"},
                },
            )
            .execute()
        )
        assert channel["resourceId"] and int(channel["expiration"]) > time.time() * 1000
        first = rx.wait_for(1)[0]
        assert first["X-Goog-Resource-State"] == "sync"
        assert first["X-Goog-Message-Number"] == "1"
        svc.events().insert(calendarId="primary", body=body("push00001")).execute()
        fake.human_move("primary", "push00001", "2031-03-10T12:00:00", "2031-03-10T13:00:00")
        msgs = rx.wait_for(3)
        assert [m["X-Goog-Resource-State"] for m in msgs] == ["sync", "exists", "exists"]
        assert [m["X-Goog-Message-Number"] for m in msgs] == ["1", "2", "3"]
        assert {m["X-Goog-Channel-Token"] for m in msgs} == {"secret-token"}
        assert {m["X-Goog-Channel-ID"] for m in msgs} == {"chan-1"}
        assert {m["X-Goog-Resource-ID"] for m in msgs} == {channel["resourceId"]}
        assert all(m["X-Goog-Channel-Expiration"].endswith("GMT") for m in msgs)
        svc.channels().stop(body={"id": "chan-1", "resourceId": channel["resourceId"]}).execute()
        assert fake.channels == {}
        fake.human_edit("primary", "push00001", summary="after stop")
        time.sleep(0.2)
        assert len(rx.got) == 3
    finally:
        rx.server.shutdown()
        rx.server.server_close()


def test_human_helpers_show_up_in_sync_feed() -> None:
    fake2 = FakeGoogleCalendar(time_zone="Europe/Berlin").start()
    try:
        svc = make_service(fake2)
        svc.events().insert(calendarId="primary", body=body("human0001")).execute()
        _, token = full_sync(svc)

        def step(action: Callable[[], Any]) -> Json:
            nonlocal token
            before = fake2.get_event_raw("primary", "human0001")["etag"]
            action()
            resp = svc.events().list(calendarId="primary", syncToken=token).execute()
            token = resp["nextSyncToken"]
            assert [e["id"] for e in resp["items"]] == ["human0001"]
            assert etag_n(resp["items"][0]["etag"]) > etag_n(before)
            return dict(resp["items"][0])

        moved = step(
            lambda: fake2.human_move(
                "primary",
                "human0001",
                "2031-03-11T09:00:00Z",
                "2031-03-11T10:30:00Z",
                tz="America/New_York",
            )
        )
        assert moved["start"] == {
            "dateTime": "2031-03-11T05:00:00-04:00",
            "timeZone": "America/New_York",
        }
        assert datetime.fromisoformat(moved["end"]["dateTime"]) == datetime.fromisoformat(
            "2031-03-11T10:30:00+00:00"
        )
        assert moved["sequence"] == 1
        edited = step(lambda: fake2.human_edit("primary", "human0001", description="cancel: sick"))
        assert edited["description"] == "cancel: sick" and edited["sequence"] == 1
        deleted = step(lambda: fake2.human_delete("primary", "human0001"))
        assert deleted["status"] == "cancelled"
        restored = step(lambda: fake2.human_undo_delete("primary", "human0001"))
        assert restored["status"] == "confirmed" and restored["summary"] == "Session"
        all_day = step(lambda: fake2.human_make_all_day("primary", "human0001", "2031-03-12"))
        assert all_day["start"] == {"date": "2031-03-12"} and all_day["end"] == {
            "date": "2031-03-13"
        }
        svc.events().update(calendarId="primary", eventId="human0001", body=body()).execute()
        token = svc.events().list(calendarId="primary", syncToken=token).execute()["nextSyncToken"]
        recurring = step(
            lambda: fake2.human_make_recurring("primary", "human0001", "FREQ=DAILY;COUNT=2")
        )
        assert recurring["recurrence"] == ["RRULE:FREQ=DAILY;COUNT=2"]
        assert recurring["start"]["timeZone"] == "Europe/Berlin"
    finally:
        fake2.stop()
