"""The Graph adapter against the Graph fake, through the real msal and httpx over HTTPS:
credentials (a tenant is needed for app-only tokens, a 401 drops msal's cached token),
Retry-After, Windows zone names, HTML notes with a command line, ``@removed`` for an event
outside the delta window, and a 410 with ``Location``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import trustme

from adapters.microsoft.auth import AppTokens
from adapters.microsoft.backend import GraphBackend, Window
from adapters.microsoft.wire import parse_event
from syncd.errors import ConfigError
from syncd.ports import CursorExpired
from tests.contract.graph_kit import UPN, app_tokens
from tests.contract.samples import desired
from tests.fakes.graph_extras import FakeGraphPlus
from tests.fakes.graph_human import OutlookUser
from tests.fakes.graph_values import SYNCD_PROPERTY_ID

SOON = (datetime.now(UTC) + timedelta(days=3)).replace(hour=9, minute=0, second=0, microsecond=0)


class Graph:
    """A started fake with an app and the mailbox; backends on its default calendar."""

    def __init__(self) -> None:
        self.fake = FakeGraphPlus(trustme.CA()).start()
        self.fake.add_mailbox(UPN, "Coach")
        app = self.fake.add_app("syncd")
        self.client_id, self.secret = app.client_id, self.fake.add_secret(app.client_id)
        self.sleeps: list[float] = []
        self._made: list[GraphBackend] = []

    def backend(self, **options: Any) -> GraphBackend:
        """A backend on the mailbox's default calendar, recording its retry waits."""
        options.setdefault("retry_wait", (0.001, 30.0))
        b = GraphBackend(
            UPN,
            "",
            app_tokens(self.fake, self.client_id, self.secret),
            self.fake.graph_url,
            timeout=5.0,
            sleep=self.sleeps.append,
            **options,
        )
        self._made.append(b)
        return b

    def token_requests(self) -> int:
        """How many times a token was asked for."""
        with self.fake.lock:
            return sum(r.path.endswith("/oauth2/v2.0/token") for r in self.fake.requests)

    def graph_id(self, session_id: str) -> str:
        """The Graph id of the session's event."""
        with self.fake.lock:
            [ev] = [
                e for e in self.fake.events(UPN)
                if any(p["id"] == SYNCD_PROPERTY_ID and p["value"] == session_id
                       for p in e.get("singleValueExtendedProperties") or [])
            ]  # fmt: skip
        return str(ev["id"])

    def close(self) -> None:
        for b in self._made:
            b.close()
        self.fake.stop()
        assert self.fake.internal_errors == [], self.fake.internal_errors[0]


@pytest.fixture
def graph(monkeypatch: pytest.MonkeyPatch) -> Iterator[Graph]:
    g = Graph()
    for key, value in g.fake.client_env().items():  # httpx and msal trust the test CA
        monkeypatch.setenv(key, value)
    yield g
    g.close()


def test_app_only_tokens_need_a_tenant(graph: Graph) -> None:
    for generic in ("common", "organizations", "consumers", ""):
        with pytest.raises(ConfigError, match="tenant id or domain") as err:
            AppTokens(graph.client_id, generic, graph.secret, graph.fake.base_url, 5.0)
        assert repr(generic) in str(err.value) and "common" in str(err.value)
    unknown = AppTokens(graph.client_id, "nosuch.example", graph.secret, graph.fake.base_url, 5.0)
    with pytest.raises(ConfigError, match=r"nosuch\.example.*set \[microsoft\] tenant"):
        unknown.token()
    assert app_tokens(graph.fake, graph.client_id, graph.secret).token()


def test_a_401_drops_msal_cached_token_and_asks_again(graph: Graph) -> None:
    b = graph.backend()
    b.create(desired("s401", SOON, SOON + timedelta(hours=1)))
    assert graph.token_requests() == 1
    b.get("s401")
    assert graph.token_requests() == 1  # msal answers from its cache while the token lives
    assert graph.fake.invalidate_access_tokens() == 1  # Graph no longer takes it
    assert b.get("s401").remote_id == "s401"
    assert graph.token_requests() == 2  # dropped, asked again, not the dead token resent


def test_retry_after_is_honoured(graph: Graph) -> None:
    b = graph.backend()
    b.create(desired("s429", SOON, SOON + timedelta(hours=1)))
    graph.sleeps.clear()
    graph.fake.fail_next(1, 429, "TooManyRequests", "Slow down.", retry_after=7)
    assert b.get("s429").remote_id == "s429"
    assert len(graph.sleeps) == 1 and graph.sleeps[0] >= 7, graph.sleeps
    graph.fake.fail_next(1, 503, "ServiceUnavailable", "Busy.", retry_after=3)
    assert b.get("s429").remote_id == "s429"
    assert len(graph.sleeps) == 2 and graph.sleeps[1] >= 3, graph.sleeps


def test_windows_zone_names_are_read_where_they_appear(graph: Graph) -> None:
    b = graph.backend()
    b.create(desired("szone", SOON, SOON + timedelta(hours=1)))
    gid = graph.graph_id("szone")
    # The admin drags it in Outlook at home: the times are stored as Berlin wall times.
    berlin_wall = datetime(2031, 7, 1, 15, 30)  # CEST: 13:30 UTC
    OutlookUser(graph.fake, UPN).drag(gid, berlin_wall, berlin_wall + timedelta(hours=1))
    with graph.fake.lock:
        assert graph.fake.stored(UPN, gid).start_zone == "W. Europe Standard Time"
    read = b.get("szone").content
    assert read.start == datetime(2031, 7, 1, 13, 30, tzinfo=UTC)
    # An answer in the mailbox's own zone carries the Windows name (as other clients ask).
    token = app_tokens(graph.fake, graph.client_id, graph.secret).token()
    raw = httpx.get(
        f"{graph.fake.graph_url}users/{UPN}/events/{gid}",
        headers={
            "Authorization": f"Bearer {token}",
            "Prefer": 'outlook.timezone="W. Europe Standard Time"',
        },
    ).json()
    assert raw["start"]["timeZone"] == "W. Europe Standard Time", raw["start"]
    parsed = parse_event(raw, "szone").content
    assert raw["start"]["dateTime"].startswith("2031-07-01T15:30")
    assert (parsed.start, parsed.end) == (read.start, read.end)
    # A drag from a laptop in New York lands on the same instant as it means.
    OutlookUser(graph.fake, UPN).drag_in_zone(
        gid, datetime(2031, 7, 1, 9, 0), datetime(2031, 7, 1, 10, 0), zone="Eastern Standard Time"
    )
    assert b.get("szone").content.start == datetime(2031, 7, 1, 13, 0, tzinfo=UTC)


def test_a_command_in_the_first_line_of_an_html_body(graph: Graph) -> None:
    b = graph.backend()
    b.create(desired("shtml", SOON, SOON + timedelta(hours=1)))
    gid = graph.graph_id("shtml")
    OutlookUser(graph.fake, UPN).type_first_line(gid, "cancel: ill & in bed")
    with graph.fake.lock:
        body = graph.fake.stored(UPN, gid).body
    assert body["contentType"] == "html"
    assert "<div>cancel: ill &amp; in bed</div>" in body["content"]
    text = b.get("shtml").content.description
    assert text.splitlines()[0] == "cancel: ill & in bed", text
    assert "-- syncd --" in text and "<div>" not in text


def test_removed_outside_the_window_is_not_a_removal(graph: Graph) -> None:
    b = graph.backend(window=Window(days=30))
    b.create(desired("sfar", SOON, SOON + timedelta(hours=1)))
    first = b.changes(None, {})
    assert [e.remote_id for e in first.changed] == ["sfar"]
    known = {e.remote_id: e.etag for e in first.changed}
    far = SOON + timedelta(days=90)  # dragged out of the delta window
    OutlookUser(graph.fake, UPN).drag(graph.graph_id("sfar"), far, far + timedelta(hours=1))
    nxt = b.changes(first.cursor, known)
    assert "sfar" not in nxt.removed, nxt
    assert b.get("sfar").content.start == far  # it lives on, where the admin put it
    gone = b.changes(nxt.cursor, known)
    assert gone.removed == () and not gone.full


def test_a_410_with_location_is_cursor_expired(graph: Graph) -> None:
    b = graph.backend()
    b.create(desired("s410", SOON, SOON + timedelta(hours=1)))
    cursor = b.changes(None, {}).cursor
    graph.fake.force_delta_reset()
    with pytest.raises(CursorExpired):
        b.changes(cursor, {"s410": "x"})
    with graph.fake.lock:
        [gone] = [r for r in graph.fake.requests if r.status == 410]
    assert gone.path.endswith("/calendarView/delta")
    full = b.changes(None, {})  # the full round that follows, compared with the mirror
    assert [e.remote_id for e in full.changed] == ["s410"] and full.removed == ()
