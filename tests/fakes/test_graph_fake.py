"""The Microsoft Graph fake, driven through the real msal (identity) and httpx (Graph)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msal
import pytest
import trustme

from .graph_human import OutlookUser
from .graph_identity import App
from .graph_server import GRAPH_SCOPE, FakeGraph
from .graph_subscriptions import WebhookReceiver
from .graph_values import SYNCD_PROPERTY_ID

Json = dict[str, Any]
UPN = "coach@contoso.onmicrosoft.com"
ZONE = "W. Europe Standard Time"
WINDOW = {"startDateTime": "2031-03-01T00:00:00Z", "endDateTime": "2031-04-01T00:00:00Z"}
EXPAND = f"singleValueExtendedProperties($filter=id eq '{SYNCD_PROPERTY_ID}')"
DELEGATED = ["Calendars.ReadWrite"]


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def fake(ca: trustme.CA, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGraph]:
    with FakeGraph(ca) as f:
        for key, value in f.client_env().items():  # how msal (requests) and httpx trust it
            monkeypatch.setenv(key, value)
        f.add_mailbox(UPN, "Coach")
        yield f
        assert f.internal_errors == []  # a 500 from a bug in the fake must not go unnoticed


@pytest.fixture
def app(fake: FakeGraph) -> App:
    return fake.add_app("syncd", redirect_uris=["http://localhost/callback"])


@pytest.fixture
def secret(fake: FakeGraph, app: App) -> str:
    return fake.add_secret(app.client_id)


def confidential(fake: FakeGraph, app: App, secret: str, tenant: str | None = None) -> Any:
    return msal.ConfidentialClientApplication(
        app.client_id,
        authority=fake.authority(tenant),
        client_credential=secret,
        instance_discovery=False,
    )


def client(fake: FakeGraph, token: str) -> httpx.Client:
    auth = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=fake.graph_url, verify=fake.ssl_context(), headers=auth)


@pytest.fixture
def graph(fake: FakeGraph, app: App, secret: str) -> Iterator[httpx.Client]:
    token = confidential(fake, app, secret).acquire_token_for_client([GRAPH_SCOPE])
    with client(fake, token["access_token"]) as c:
        yield c


def claims(jwt: str) -> Json:
    part = jwt.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def body(
    start: str = "2031-03-10T09:00:00", end: str = "2031-03-10T10:00:00", **extra: Any
) -> Json:
    out: Json = {
        "subject": "Ann — 1:1 session",
        "start": {"dateTime": start, "timeZone": ZONE},
        "end": {"dateTime": end, "timeZone": ZONE},
    }
    out.update(extra)
    return out


def create(graph: httpx.Client, cal: str | None = None, **kw: Any) -> Json:
    path = f"users/{UPN}/calendars/{cal}/events" if cal else f"users/{UPN}/events"
    resp = graph.post(path, json=body(**kw))
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def bookings(graph: httpx.Client) -> str:
    resp = graph.post(f"users/{UPN}/calendars", json={"name": "Bookings"})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def code(resp: httpx.Response) -> str:
    return str(resp.json()["error"]["code"])


def delta(graph: httpx.Client, url: str, page: int | None = None) -> tuple[list[Json], str, int]:
    """Follow nextLinks to the deltaLink: (rows, deltaLink, pages)."""
    headers = {"Prefer": f"odata.maxpagesize={page}"} if page else {}
    rows: list[Json] = []
    params: dict[str, str] | None = WINDOW if "?" not in url else None
    pages = 0
    while True:
        resp = graph.get(url, params=params, headers=headers)
        assert resp.status_code == 200, resp.text
        out = resp.json()
        rows += out["value"]
        pages, params = pages + 1, None
        if "@odata.deltaLink" in out:
            assert "@odata.nextLink" not in out
            return rows, out["@odata.deltaLink"], pages
        url = out["@odata.nextLink"]


def delta_url(cal: str) -> str:
    return f"users/{UPN}/calendars/{cal}/calendarView/delta"


# -- identity platform -----------------------------------------------------------------------


def test_msal_discovers_the_fake_authority(fake: FakeGraph, app: App, secret: str) -> None:
    cca = confidential(fake, app, secret)
    assert cca.authority.token_endpoint == f"{fake.authority()}/oauth2/v2.0/token"
    assert cca.authority.device_authorization_endpoint.endswith("/oauth2/v2.0/devicecode")
    doc = httpx.get(f"{fake.base_url}/common/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{fake.base_url}/{{tenantid}}/v2.0"  # httpx trusts SSL_CERT_FILE
    assert doc["authorization_endpoint"] == f"{fake.base_url}/common/oauth2/v2.0/authorize"
    resp = httpx.get(f"{fake.base_url}/nowhere.example/v2.0/.well-known/openid-configuration")
    assert resp.status_code == 400 and "AADSTS90002" in resp.json()["error_description"]


def test_client_credentials_app_only_token(fake: FakeGraph, app: App, secret: str) -> None:
    result = confidential(fake, app, secret).acquire_token_for_client([GRAPH_SCOPE])
    assert result["token_type"] == "Bearer" and result["expires_in"] == 3599
    token = claims(result["access_token"])
    assert token["idtyp"] == "app" and token["roles"] == ["Calendars.ReadWrite"]
    assert (token["tid"], token["appid"]) == (fake.tenant.id, app.client_id)
    with client(fake, result["access_token"]) as graph:
        assert graph.get(f"users/{UPN}/calendars").status_code == 200
        resp = graph.get("me/calendars")
        assert resp.status_code == 400 and "delegated" in resp.json()["error"]["message"]
    bad = confidential(fake, app, secret).acquire_token_for_client(["Calendars.ReadWrite"])
    assert bad["error"] == "invalid_scope" and "AADSTS1002012" in bad["error_description"]


def test_client_credentials_need_a_tenant(fake: FakeGraph, app: App, secret: str) -> None:
    with pytest.warns(DeprecationWarning):  # msal itself warns about /common here
        result = confidential(fake, app, secret, "common").acquire_token_for_client([GRAPH_SCOPE])
    assert result["error"] == "invalid_request"
    assert result["error_description"].startswith("AADSTS50059: No tenant-identifying")
    by_domain = confidential(fake, app, secret, "contoso.onmicrosoft.com")
    assert "access_token" in by_domain.acquire_token_for_client([GRAPH_SCOPE])


def test_secret_wrong_expired_revoked(fake: FakeGraph, app: App, secret: str) -> None:
    wrong = confidential(fake, app, "not-the-secret").acquire_token_for_client([GRAPH_SCOPE])
    assert wrong["error"] == "invalid_client" and "AADSTS7000215" in wrong["error_description"]
    fake.expire_secret(app.client_id, secret)
    expired = confidential(fake, app, secret).acquire_token_for_client([GRAPH_SCOPE])
    assert "AADSTS7000222" in expired["error_description"]
    second = fake.add_secret(app.client_id)
    assert "access_token" in confidential(fake, app, second).acquire_token_for_client([GRAPH_SCOPE])
    fake.revoke_secret(app.client_id, second)
    gone = confidential(fake, app, second).acquire_token_for_client([GRAPH_SCOPE])
    assert gone["error"] == "invalid_client" and "AADSTS7000215" in gone["error_description"]


def test_graph_requires_a_bearer_token(fake: FakeGraph, graph: httpx.Client) -> None:
    with httpx.Client(base_url=fake.graph_url, verify=fake.ssl_context()) as anonymous:
        resp = anonymous.get(f"users/{UPN}/calendars")
        assert (resp.status_code, code(resp)) == (401, "InvalidAuthenticationToken")
        assert resp.json()["error"]["message"] == "Access token is empty."
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        forged = anonymous.get(f"users/{UPN}/calendars", headers={"Authorization": "Bearer x.y.z"})
        assert forged.status_code == 401
    assert graph.get(f"users/{UPN}/calendars").status_code == 200
    fake.invalidate_access_tokens()
    resp = graph.get(f"users/{UPN}/calendars")
    assert resp.status_code == 401 and "TokenIssuedBeforeRevocation" in resp.text
    assert graph.get(f"users/{UPN}/calendars", headers={"Authorization": ""}).status_code == 401


def test_expired_access_token_401(fake: FakeGraph, graph: httpx.Client) -> None:
    fake.expire_access_tokens()
    resp = graph.get(f"users/{UPN}/calendars")
    assert resp.status_code == 401 and "Lifetime validation failed" in resp.text


@pytest.mark.filterwarnings("ignore:response_mode='form_post' is recommended")
def test_auth_code_flow_pkce_nonce_then_refresh_and_revocation(
    fake: FakeGraph, app: App, secret: str
) -> None:
    cca = confidential(fake, app, secret)
    flow = cca.initiate_auth_code_flow(DELEGATED, redirect_uri="http://localhost:8400/callback")
    fake.identity.browser_user = UPN  # someone signed in to the browser that opens auth_uri
    redirect = httpx.get(flow["auth_uri"], follow_redirects=False)
    assert redirect.status_code == 302
    assert redirect.headers["Location"].startswith("http://localhost:8400/callback?code=")
    result = cca.acquire_token_by_auth_code_flow(flow, fake.sign_in(flow["auth_uri"], UPN))
    assert result["id_token_claims"]["preferred_username"] == UPN  # msal checked the nonce
    assert claims(result["access_token"])["scp"] == "Calendars.ReadWrite"
    with client(fake, result["access_token"]) as graph:
        assert graph.get("me/calendars").status_code == 200
        assert graph.get(f"users/{UPN}/calendars").status_code == 200
    refreshed = confidential(fake, app, secret).acquire_token_by_refresh_token(
        result["refresh_token"], DELEGATED
    )
    assert "access_token" in refreshed and refreshed["refresh_token"] != result["refresh_token"]
    assert fake.revoke_refresh_tokens(UPN) >= 2
    denied = confidential(fake, app, secret).acquire_token_by_refresh_token(
        result["refresh_token"], DELEGATED
    )
    assert denied["error"] == "invalid_grant" and "AADSTS50173" in denied["error_description"]


def test_device_code_flow(fake: FakeGraph) -> None:
    public = fake.add_app("syncd-cli", public_client=True)
    pca = msal.PublicClientApplication(
        public.client_id, authority=fake.authority(), instance_discovery=False
    )
    flow = pca.initiate_device_flow(DELEGATED)
    assert flow["user_code"] in flow["message"] and fake.pending_user_codes() == [flow["user_code"]]
    pending = pca.acquire_token_by_device_flow(flow, exit_condition=lambda _flow: True)
    assert pending["error"] == "authorization_pending"
    fake.approve_device_code(flow["user_code"], UPN)
    result = pca.acquire_token_by_device_flow(flow)
    assert "refresh_token" in result and result["id_token_claims"]["preferred_username"] == UPN
    assert [a["username"] for a in pca.get_accounts()] == [UPN]
    other = fake.add_mailbox("other@contoso.onmicrosoft.com")
    with client(fake, result["access_token"]) as graph:
        assert graph.get("me/calendar").json()["owner"]["address"] == UPN
        assert code(graph.get(f"users/{other.upn}/calendars")) == "ErrorAccessDenied"
    declined = pca.initiate_device_flow(DELEGATED)
    fake.deny_device_code(declined["user_code"])
    assert pca.acquire_token_by_device_flow(declined)["error"] == "authorization_declined"


def test_single_tenant_app_refused_on_common(fake: FakeGraph, app: App) -> None:
    pca = msal.PublicClientApplication(
        app.client_id, authority=fake.authority("common"), instance_discovery=False
    )
    flow = pca.initiate_device_flow(DELEGATED)
    assert "AADSTS50059" in flow["error_description"]
    with pytest.warns(UserWarning):  # msal prefers response_mode=form_post
        auth = pca.initiate_auth_code_flow(DELEGATED, redirect_uri="http://localhost/callback")
    page = httpx.get(auth["auth_uri"])
    assert page.status_code == 400 and "AADSTS50194" in page.text


# -- calendars and events --------------------------------------------------------------------


def test_calendars_create_list_filter(graph: httpx.Client) -> None:
    cal = bookings(graph)
    names = [c["name"] for c in graph.get(f"users/{UPN}/calendars").json()["value"]]
    assert names == ["Calendar", "Bookings"]
    found = graph.get(f"users/{UPN}/calendars", params={"$filter": "name eq 'Bookings'"}).json()
    assert [c["id"] for c in found["value"]] == [cal]
    dup = graph.post(f"users/{UPN}/calendars", json={"name": "bookings"})
    assert (dup.status_code, code(dup)) == (409, "ErrorFolderExists")
    assert code(graph.get(f"users/{UPN}/calendars/AAMkNope=")) == "ErrorItemNotFound"
    unknown = graph.get("users/nobody@contoso.onmicrosoft.com/calendars")
    assert (unknown.status_code, code(unknown)) == (404, "ErrorInvalidUser")


def test_event_json_zones_and_prefer(graph: httpx.Client) -> None:
    ev = create(graph, bookings(graph))
    assert ev["start"] == {"dateTime": "2031-03-10T09:00:00.0000000", "timeZone": ZONE}
    assert ev["@odata.etag"] == f'W/"{ev["changeKey"]}"' and ev["type"] == "singleInstance"
    assert (ev["isAllDay"], ev["isCancelled"], ev["showAs"]) == (False, False, "busy")
    assert ev["originalStartTimeZone"] == ZONE and ev["createdDateTime"].endswith("Z")
    assert ev["reminderMinutesBeforeStart"] == 15 and ev["transactionId"] is None
    assert "singleValueExtendedProperties" not in ev
    got = graph.get(f"users/{UPN}/events/{ev['id']}").json()
    assert got["start"] == {"dateTime": "2031-03-10T08:00:00.0000000", "timeZone": "UTC"}
    prefer = {"Prefer": 'outlook.timezone="Pacific Standard Time", IdType="ImmutableId"'}
    resp = graph.get(f"users/{UPN}/events/{ev['id']}", headers=prefer)
    assert resp.json()["end"]["dateTime"] == "2031-03-10T02:00:00.0000000"  # PDT in March 2031
    assert 'outlook.timezone="Pacific Standard Time"' in resp.headers["Preference-Applied"]
    bad = graph.get(f"users/{UPN}/events/{ev['id']}", headers={"Prefer": 'outlook.timezone="Mars"'})
    assert code(bad) == "TimeZoneNotSupportedException"


def test_transaction_id_retry_and_duplicate(fake: FakeGraph, graph: httpx.Client) -> None:
    cal = bookings(graph)
    first = create(graph, cal, transactionId="s_7Kq2")
    retry = create(graph, cal, transactionId="s_7Kq2")
    assert retry["id"] == first["id"] and retry["transactionId"] == "s_7Kq2"
    assert len(fake.events(UPN, cal)) == 1
    changed = body(transactionId="s_7Kq2", subject="another session")
    other = graph.post(f"users/{UPN}/calendars/{cal}/events", json=changed)
    assert (other.status_code, code(other)) == (400, "ErrorDuplicateTransactionId")


def test_extended_property_expand_and_filter(graph: httpx.Client) -> None:
    cal = bookings(graph)
    prop = [{"id": SYNCD_PROPERTY_ID, "value": "s_1"}]
    ev = create(graph, cal, singleValueExtendedProperties=prop)
    create(graph, cal, start="2031-03-11T09:00:00", end="2031-03-11T10:00:00")
    assert "singleValueExtendedProperties" not in graph.get(f"users/{UPN}/events/{ev['id']}").json()
    got = graph.get(f"users/{UPN}/events/{ev['id']}", params={"$expand": EXPAND}).json()
    assert got["singleValueExtendedProperties"] == prop
    upper = EXPAND.replace("66f5a359", "66F5A359")  # the GUID is case-insensitive
    got = graph.get(f"users/{UPN}/events/{ev['id']}", params={"$expand": upper}).json()
    assert got["singleValueExtendedProperties"] == prop
    other = EXPAND.replace("syncd_session", "Syncd_Session")  # the Name is not
    got = graph.get(f"users/{UPN}/events/{ev['id']}", params={"$expand": other}).json()
    assert "singleValueExtendedProperties" not in got
    any_prop = f"singleValueExtendedProperties/any(ep: ep/id eq '{SYNCD_PROPERTY_ID}'"
    flt = f"{any_prop} and ep/value eq 'S_1')"  # values compare case-insensitively
    listed = graph.get(f"users/{UPN}/calendars/{cal}/events", params={"$filter": flt}).json()
    assert [e["id"] for e in listed["value"]] == [ev["id"]]
    assert "singleValueExtendedProperties" not in listed["value"][0]


def test_if_match_412_etag_changes_and_404(graph: httpx.Client) -> None:
    cal = bookings(graph)
    ev = create(graph, cal)
    url = f"users/{UPN}/calendars/{cal}/events/{ev['id']}"
    patched = graph.patch(url, json={"subject": "moved"}, headers={"If-Match": ev["@odata.etag"]})
    assert patched.status_code == 200
    new = patched.json()
    assert new["@odata.etag"] != ev["@odata.etag"] and new["changeKey"] != ev["changeKey"]
    assert new["lastModifiedDateTime"] > ev["lastModifiedDateTime"]
    stale = {"If-Match": ev["@odata.etag"]}
    for resp in (
        graph.patch(url, json={"subject": "x"}, headers=stale),
        graph.delete(url, headers=stale),
    ):
        assert (resp.status_code, code(resp)) == (412, "ErrorIrresolvableConflict")
    wrong_cal = graph.get(f"users/{UPN}/calendar/events/{ev['id']}")
    assert (wrong_cal.status_code, code(wrong_cal)) == (404, "ErrorItemNotFound")
    assert graph.delete(url, headers={"If-Match": new["@odata.etag"]}).status_code == 204
    gone = graph.get(f"users/{UPN}/events/{ev['id']}")
    assert (gone.status_code, code(gone)) == (404, "ErrorItemNotFound")


def test_html_body_and_typed_first_line(fake: FakeGraph, graph: httpx.Client) -> None:
    ev = create(graph, body={"contentType": "text", "content": "Customer: ann@example.org"})
    got = graph.get(f"users/{UPN}/events/{ev['id']}").json()
    assert got["body"]["contentType"] == "html" and got["body"]["content"].startswith("<html>")
    assert "Customer: ann@example.org" in got["body"]["content"]
    assert got["bodyPreview"] == "Customer: ann@example.org"
    OutlookUser(fake, UPN).type_first_line(ev["id"], "cancel: sick")
    html_body = graph.get(f"users/{UPN}/events/{ev['id']}").json()["body"]["content"]
    assert "<body>\r\n<div>cancel: sick</div>" in html_body
    prefer = {"Prefer": 'outlook.body-content-type="text"'}
    text = graph.get(f"users/{UPN}/events/{ev['id']}", headers=prefer).json()["body"]
    assert text["contentType"] == "text" and text["content"].splitlines()[0] == "cancel: sick"
    OutlookUser(fake, UPN).edit_body(ev["id"], ["reschedule: next week?", "", "Ann"])
    html_body = graph.get(f"users/{UPN}/events/{ev['id']}").json()["body"]["content"]
    assert "<body>\r\n<div>reschedule: next week?</div><div><br></div><div>Ann</div>" in html_body


def test_calendar_view_pages_expands_and_zones(graph: httpx.Client) -> None:
    cal = bookings(graph)
    prop = [{"id": SYNCD_PROPERTY_ID, "value": "s"}]
    for day in (10, 11, 12):
        create(graph, cal, start=f"2031-03-{day}T09:00:00", end=f"2031-03-{day}T10:00:00",
               singleValueExtendedProperties=prop)  # fmt: skip
    view = f"users/{UPN}/calendars/{cal}/calendarView"
    assert code(graph.get(view)) == "ErrorInvalidParameter"  # the window is required
    prefer = {"Prefer": f'outlook.timezone="{ZONE}"'}
    first = graph.get(view, params={**WINDOW, "$top": "2", "$expand": EXPAND}, headers=prefer)
    page = first.json()
    assert [e["start"]["dateTime"][:13] for e in page["value"]] == [
        "2031-03-10T09",
        "2031-03-11T09",
    ]
    assert all(e["singleValueExtendedProperties"] == prop for e in page["value"])
    rest = graph.get(page["@odata.nextLink"], headers=prefer).json()
    assert [e["start"]["timeZone"] for e in rest["value"]] == [ZONE]
    assert "@odata.nextLink" not in rest


def test_concurrent_writers_across_mailboxes(fake: FakeGraph, graph: httpx.Client) -> None:
    """Four writers per mailbox (Outlook's limit), two mailboxes at once: nothing lost."""
    second = fake.add_mailbox("trainer@contoso.onmicrosoft.com").upn

    def writer(upn: str) -> Any:
        def write(n: int) -> int:
            start = f"2031-03-{10 + n // 8:02d}T{8 + n % 8:02d}:00:00"
            return graph.post(f"users/{upn}/events", json=body(start=start, end=start)).status_code

        return write

    with ThreadPoolExecutor(4) as one, ThreadPoolExecutor(4) as two:
        first, other = one.map(writer(UPN), range(16)), two.map(writer(second), range(16))
        assert set(first) | set(other) == {201}
    assert fake.max_concurrency(UPN) <= 4 and fake.max_concurrency(second) <= 4
    for upn in (UPN, second):
        rows, _, _ = delta(graph, f"users/{upn}/calendarView/delta")
        assert len(rows) == len({r["id"] for r in rows}) == 16


# -- delta -----------------------------------------------------------------------------------


def test_delta_pages_maxpagesize_then_delta_link(fake: FakeGraph, graph: httpx.Client) -> None:
    cal = bookings(graph)
    prop = [{"id": SYNCD_PROPERTY_ID, "value": "s"}]
    ids = [
        create(
            graph,
            cal,
            start=f"2031-03-1{i}T09:00:00",
            end=f"2031-03-1{i}T10:00:00",
            singleValueExtendedProperties=prop,
        )["id"]
        for i in range(5)
    ]
    create(graph, cal, start="2031-05-01T09:00:00", end="2031-05-01T10:00:00")  # outside
    rows, link, pages = delta(graph, delta_url(cal), page=2)
    assert pages == 3 and [r["id"] for r in rows] == ids
    assert all("singleValueExtendedProperties" not in r for r in rows)  # never on delta rows
    assert {r["start"]["timeZone"] for r in rows} == {"UTC"}
    assert "$deltatoken=" in link
    assert delta(graph, link)[0] == []  # an idle round is one request with no rows
    graph.patch(f"users/{UPN}/events/{ids[2]}", json={"subject": "renamed"})
    changed, _, _ = delta(graph, link)
    assert [(r["id"], r["subject"]) for r in changed] == [(ids[2], "renamed")]


def test_delta_refuses_query_options(graph: httpx.Client) -> None:
    cal = bookings(graph)
    for option in ("$select", "$expand", "$filter"):
        resp = graph.get(delta_url(cal), params={**WINDOW, option: "subject"})
        assert (resp.status_code, code(resp)) == (400, "ErrorInvalidUrlQuery")
    resp = graph.get(delta_url(cal))
    assert (resp.status_code, code(resp)) == (400, "ErrorInvalidParameter")


def test_delta_removed_for_delete_and_move_out(fake: FakeGraph, graph: httpx.Client) -> None:
    cal = bookings(graph)
    deleted, moved_out, moved_in = (create(graph, cal)["id"] for _ in range(3))
    outside = create(graph, cal, start="2031-06-01T09:00:00", end="2031-06-01T10:00:00")["id"]
    _, link, _ = delta(graph, delta_url(cal))
    outlook = OutlookUser(fake, UPN)
    assert graph.delete(f"users/{UPN}/events/{deleted}").status_code == 204
    outlook.drag(moved_out, "2031-04-15T09:00:00")
    outlook.drag(moved_in, "2031-03-20T11:00:00")
    outlook.edit_subject(outside, "still outside")
    rows, _, _ = delta(graph, link)
    removed = {r["id"]: r["@removed"] for r in rows if "@removed" in r}
    assert removed == {i: {"reason": "deleted"} for i in (deleted, moved_out, outside)}
    upserts = [r for r in rows if "@removed" not in r]
    assert [(r["id"], r["start"]["dateTime"]) for r in upserts] == [
        (moved_in, "2031-03-20T10:00:00.0000000")
    ]


def test_delta_410_expired_and_reset_with_location(fake: FakeGraph, graph: httpx.Client) -> None:
    cal = bookings(graph)
    create(graph, cal)
    create(graph, cal, start="2031-03-11T09:00:00", end="2031-03-11T10:00:00")
    _, link, _ = delta(graph, delta_url(cal))
    one = {"Prefer": "odata.maxpagesize=1"}
    first = graph.get(delta_url(cal), params=WINDOW, headers=one).json()
    fake.expire_delta_tokens()
    for url in (link, first["@odata.nextLink"]):
        resp = graph.get(url)
        assert (resp.status_code, code(resp)) == (410, "SyncStateNotFound")
    _, link, _ = delta(graph, delta_url(cal))
    fake.force_delta_reset()
    reset = graph.get(link)
    assert reset.status_code == 410 and "startDateTime=2031-03-01" in reset.headers["Location"]
    rows, _, _ = delta(graph, reset.headers["Location"])
    assert len(rows) == 2


def test_recurring_series_in_delta_and_instances(fake: FakeGraph, graph: httpx.Client) -> None:
    cal = bookings(graph)
    master = create(graph, cal)["id"]
    _, link, _ = delta(graph, delta_url(cal))
    series = OutlookUser(fake, UPN).make_recurring(master, count=4)
    assert series.kind == "seriesMaster"
    rows, _, _ = delta(graph, link)
    gone = {
        "id": master,
        "@odata.type": "#microsoft.graph.event",
        "@removed": {"reason": "deleted"},
    }
    assert gone in rows  # the master leaves the view, its occurrences enter it
    occ = [r for r in rows if "@removed" not in r]
    days = [r["start"]["dateTime"][:10] for r in occ]
    assert days == ["2031-03-10", "2031-03-17", "2031-03-24", "2031-03-31"]
    assert {r["type"] for r in occ} == {"occurrence"}
    assert {r["seriesMasterId"] for r in occ} == {master}
    assert len({r["id"] for r in occ}) == 4 and master not in {r["id"] for r in occ}
    assert graph.get(f"users/{UPN}/events/{occ[1]['id']}").json()["type"] == "occurrence"
    inst = graph.get(f"users/{UPN}/events/{master}/instances", params=WINDOW).json()["value"]
    assert [i["id"] for i in inst] == [r["id"] for r in occ]
    assert graph.get(f"users/{UPN}/events/{master}").json()["type"] == "seriesMaster"


# -- throttling ------------------------------------------------------------------------------


def test_throttle_is_seeded_429_with_retry_after(fake: FakeGraph, graph: httpx.Client) -> None:
    def statuses() -> list[int]:
        fake.throttle(0.4, seed=7)
        return [graph.get(f"users/{UPN}/calendars").status_code for _ in range(20)]

    first = statuses()
    assert first == statuses() and set(first) == {200, 429}
    fake.throttle(1.0)
    resp = graph.get(f"users/{UPN}/calendars")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    fake.clear_faults()
    fake.fail_next(1, 503)
    assert [graph.get(f"users/{UPN}/calendars").status_code for _ in range(2)] == [503, 200]


def test_mailbox_concurrency_limit_of_four(fake: FakeGraph, graph: httpx.Client) -> None:
    fake.latency = 0.3
    barrier = threading.Barrier(6)

    def call(_: int) -> httpx.Response:
        barrier.wait()
        return graph.get(f"users/{UPN}/calendars")

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(call, range(6)))
    refused = [r for r in results if r.status_code == 429]
    assert refused and all(code(r) == "ApplicationThrottled" for r in refused)
    assert refused[0].headers["RateLimit-Exceeded"] == "MailboxConcurrency"
    assert fake.max_concurrency(UPN) > 4
    fake.reset_concurrency()
    barrier = threading.Barrier(4)
    with ThreadPoolExecutor(4) as pool:
        assert {r.status_code for r in pool.map(call, range(4))} == {200}
    assert fake.max_concurrency(UPN) == 4


# -- subscriptions ---------------------------------------------------------------------------


def subscribe(graph: httpx.Client, cal: str, url: str, **extra: Any) -> httpx.Response:
    expires = (datetime.now(UTC) + timedelta(hours=48)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    sub = {
        "changeType": "created,updated,deleted",
        "notificationUrl": url,
        "resource": f"users/{UPN}/calendars/{cal}/events",
        "expirationDateTime": expires,
        "clientState": "s3cret",
    }
    return graph.post("subscriptions", json={**sub, **extra})


def test_subscription_handshake_and_notifications(fake: FakeGraph, graph: httpx.Client) -> None:
    cal = bookings(graph)
    with WebhookReceiver() as rx:
        resp = subscribe(graph, cal, rx.url)
        assert resp.status_code == 201, resp.text
        sub = resp.json()
        assert rx.validations and rx.validations[0].startswith("Validation: Testing client")
        ev = create(graph, cal)
        graph.patch(f"users/{UPN}/events/{ev['id']}", json={"subject": "x"})
        OutlookUser(fake, UPN).delete(ev["id"])
        assert rx.wait_for(lambda n: len(n) == 3)
    note = rx.notifications[0]
    assert {k: note[k] for k in ("subscriptionId", "clientState", "tenantId")} == {
        "subscriptionId": sub["id"], "clientState": "s3cret", "tenantId": fake.tenant.id,
    }  # fmt: skip
    assert note["resource"].endswith(f"/Events/{ev['id']}")
    assert note["resourceData"]["id"] == ev["id"]
    assert note["subscriptionExpirationDateTime"] == sub["expirationDateTime"]
    assert [n["changeType"] for n in rx.notifications] == ["created", "updated", "deleted"]


def test_subscription_refused_renewed_deleted(fake: FakeGraph, graph: httpx.Client) -> None:
    cal = bookings(graph)
    with WebhookReceiver(echo_validation=False) as mute:
        resp = subscribe(graph, cal, mute.url)
        assert resp.status_code == 400 and "validation" in resp.text
    with WebhookReceiver() as rx:
        too_long = (datetime.now(UTC) + timedelta(days=4)).isoformat()
        assert subscribe(graph, cal, rx.url, expirationDateTime=too_long).status_code == 400
        sub = subscribe(graph, cal, rx.url).json()
        later = (datetime.now(UTC) + timedelta(hours=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
        renewed = graph.patch(f"subscriptions/{sub['id']}", json={"expirationDateTime": later})
        assert renewed.status_code == 200
        assert renewed.json()["expirationDateTime"] > sub["expirationDateTime"]
        assert graph.delete(f"subscriptions/{sub['id']}").status_code == 204
        assert graph.get(f"subscriptions/{sub['id']}").status_code == 404
        create(graph, cal)
        assert fake.wait_notifications() and rx.notifications == []


def test_lifecycle_notifications(fake: FakeGraph, graph: httpx.Client) -> None:
    cal = bookings(graph)
    with WebhookReceiver() as rx:
        sub = subscribe(graph, cal, rx.url, lifecycleNotificationUrl=rx.url).json()
        assert len(rx.validations) == 2  # both URLs are validated
        fake.send_lifecycle(sub["id"], "reauthorizationRequired")
        assert rx.wait_for(lambda n: len(n) == 1)
        assert rx.notifications[0]["lifecycleEvent"] == "reauthorizationRequired"
        create(graph, cal)  # paused until reauthorized
        assert fake.wait_notifications() and len(rx.notifications) == 1
        assert graph.post(f"subscriptions/{sub['id']}/reauthorize").status_code == 200
        create(graph, cal)
        assert rx.wait_for(lambda n: len(n) == 2) and rx.notifications[1]["changeType"] == "created"
        fake.send_lifecycle(sub["id"], "missed")
        fake.send_lifecycle(sub["id"], "subscriptionRemoved")
        assert rx.wait_for(lambda n: len(n) == 4)
        events = [n.get("lifecycleEvent") for n in rx.notifications[2:]]
        assert events == ["missed", "subscriptionRemoved"]
        assert graph.get(f"subscriptions/{sub['id']}").status_code == 404


# -- Deleted Items and Outlook edits ---------------------------------------------------------


def test_deleted_items_restore_under_new_id(fake: FakeGraph, graph: httpx.Client) -> None:
    cal = bookings(graph)
    prop = [{"id": SYNCD_PROPERTY_ID, "value": "s_9"}]
    ev = create(graph, cal, transactionId="s_9", singleValueExtendedProperties=prop)
    _, link, _ = delta(graph, delta_url(cal))
    OutlookUser(fake, UPN).delete(ev["id"])
    assert [d["id"] for d in fake.deleted_items(UPN)] == [ev["id"]]
    new_id = fake.restore_from_deleted_items(ev["id"])
    assert new_id != ev["id"] and fake.deleted_items(UPN) == []
    assert graph.get(f"users/{UPN}/events/{ev['id']}").status_code == 404
    back = graph.get(f"users/{UPN}/events/{new_id}", params={"$expand": EXPAND}).json()
    assert back["transactionId"] == "s_9" and back["singleValueExtendedProperties"] == prop
    rows, _, _ = delta(graph, link)
    assert {r["id"]: "@removed" in r for r in rows} == {new_id: False, ev["id"]: True}
    retry = create(graph, cal, transactionId="s_9", singleValueExtendedProperties=prop)
    assert retry["id"] == new_id  # the transactionId follows the restored event


def test_deleted_items_visibility_switch(fake: FakeGraph, graph: httpx.Client) -> None:
    ev = create(graph)
    assert graph.delete(f"users/{UPN}/events/{ev['id']}").status_code == 204
    fake.deleted_items_visible = True  # as an immutable id can still be read in Deleted Items
    assert graph.get(f"users/{UPN}/events/{ev['id']}").status_code == 200
    assert graph.get(f"users/{UPN}/calendar/events/{ev['id']}").status_code == 404
    assert graph.patch(f"users/{UPN}/events/{ev['id']}", json={"subject": "x"}).status_code == 404


def test_outlook_drags_keep_windows_zones(fake: FakeGraph, graph: httpx.Client) -> None:
    ev = create(graph)
    outlook = OutlookUser(fake, UPN)
    stored = outlook.drag(ev["id"], "2031-03-12T15:00:00")
    assert (stored.start_zone, stored.end_local.hour) == (ZONE, 16)  # duration kept
    got = graph.get(f"users/{UPN}/events/{ev['id']}").json()
    assert got["start"]["dateTime"] == "2031-03-12T14:00:00.0000000"
    assert got["@odata.etag"] != ev["@odata.etag"]
    outlook.drag_in_zone(ev["id"], "2031-03-12T15:00:00", zone="Pacific Standard Time")
    own = fake.event(UPN, ev["id"])
    assert own["originalStartTimeZone"] == "Pacific Standard Time"
    utc = graph.get(f"users/{UPN}/events/{ev['id']}").json()
    assert utc["start"]["dateTime"] == "2031-03-12T22:00:00.0000000"  # PDT, UTC-7


def test_outlook_all_day_cancelled_recurring(fake: FakeGraph, graph: httpx.Client) -> None:
    ev = create(graph)
    outlook = OutlookUser(fake, UPN)
    outlook.make_all_day(ev["id"])
    day = graph.get(f"users/{UPN}/events/{ev['id']}").json()
    assert day["isAllDay"] and day["start"]["dateTime"] == "2031-03-10T00:00:00.0000000"
    assert day["end"]["dateTime"] == "2031-03-11T00:00:00.0000000"
    outlook.set_cancelled(ev["id"])
    assert graph.get(f"users/{UPN}/events/{ev['id']}").json()["isCancelled"] is True
    other = create(graph, start="2031-03-13T09:00:00", end="2031-03-13T10:00:00")
    outlook.make_recurring(other["id"], pattern="daily", count=3)
    rec = graph.get(f"users/{UPN}/events/{other['id']}").json()
    assert rec["type"] == "seriesMaster" and rec["recurrence"]["pattern"]["type"] == "daily"
    half_past = {"isAllDay": True, "start": {"dateTime": "2031-03-10T09:30:00", "timeZone": ZONE}}
    bad = graph.patch(f"users/{UPN}/events/{ev['id']}", json=half_past)
    assert (bad.status_code, code(bad)) == (400, "ErrorInvalidRequest")
