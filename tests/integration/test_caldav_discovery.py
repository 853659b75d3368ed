"""Discovery (issue 13, item 5): from a server's address to the calendar syncd writes to.

On each of the five servers, the server's bare URL (``http://127.0.0.1:PORT/``) leads to the
account (RFC 6764 well-known where served: Radicale, Xandikos, Cyrus, DAViCal; SOGo by a
PROPFIND of ``/SOGo/dav/``), its calendar home, and a calendar of the name asked for: made
with MKCALENDAR the first time, found by its displayname the next, used as it is when the
URL already is that calendar. ``syncd calendar add`` prints what it chose.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.caldav.backend import CalDAVBackend
from adapters.caldav.discovery import discover
from syncd.ports import AuthRevoked, DesiredEvent
from tests.cli_helpers import syncd, write_config

SERVERS = ["radicale", "xandikos", "cyrus", "davical", "sogo"]


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_server")


def _event() -> DesiredEvent:
    start = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    return DesiredEvent(
        uid=f"disc-{secrets.token_hex(4)}@example.test",
        session_id="s_discovery",
        summary="Ann — 1:1 session",
        start=start,
        end=start + timedelta(hours=1),
        notes_block="found by discovery",
        status="confirmed",
        sequence=0,
    )


def test_the_servers_address_leads_to_a_calendar_made_then_found(server: Any) -> None:
    root, user, password = server.root_url + "/", server.username, server.password
    name = f"Bookings {secrets.token_hex(3)}"
    made = discover(root, user, password, name)
    assert made.how == "created" and made.name == name
    assert made.url.startswith(server.root_url) and made.home in made.url
    again = discover(root, user, password, name.upper())  # displaynames compare caseless
    assert (again.how, again.url) == ("found", made.url)
    assert (made.name, made.url) not in made.calendars and (name, made.url) in again.calendars
    given = discover(made.url, user, password, "Anything else")
    assert (given.how, given.url, given.name) == ("given", made.url, name)
    backend = CalDAVBackend(made.url, user, password)  # a calendar syncd can write to
    try:
        stored = backend.create(_event())
        assert set(backend.listing()) == {stored.remote_id}
    finally:
        backend.close()


def test_a_wrong_password_is_said_so(server: Any) -> None:
    if not server.username:
        pytest.skip("Xandikos runs without authentication")
    with pytest.raises(AuthRevoked):
        discover(server.root_url + "/", server.username, "not-the-password", "Bookings")


@pytest.mark.parametrize("kind", ["radicale", "sogo"])  # well-known, and none (the adapter
def test_calendar_add_discovers_and_prints_what_it_chose(  # test above covers all five)
    request: pytest.FixtureRequest, kind: str, tmp_path: Path
) -> None:
    server = request.getfixturevalue(f"{kind}_server")
    cfg = write_config(tmp_path / "syncd.toml", f"sqlite:///{tmp_path}/s.db")
    assert syncd(cfg, "db", "upgrade").code == 0
    r = syncd(cfg, "admin", "add", "coach@example.com", "--name", "Coach", "--tz", "UTC")
    assert r.code == 0, r.err
    (tmp_path / "pw").write_text(server.password)
    name = f"Coaching {secrets.token_hex(3)}"
    add = ["calendar", "add", "coach@example.com", "caldav", "--url", server.root_url + "/"]
    add += ["--username", server.username, "--password-file", str(tmp_path / "pw")]
    first = syncd(cfg, *add, "--calendar", name)
    assert first.code == 0, first.err
    assert f'Created the calendar "{name}" at {server.root_url}' in first.out
    second = syncd(cfg, "--json", *add, "--calendar", name)
    assert second.code == 0, second.err
    url = second.json()["settings"]["url"]
    assert url.startswith(server.root_url + "/") and url in first.out
    assert syncd(cfg, *add[:5], url, *add[6:]).out.startswith(f'Using the calendar "{name}"')
    unknown = syncd(cfg, *add[:2], "nobody@example.com", *add[3:], "--calendar", name)
    assert unknown.code == 3 and "Traceback" not in unknown.err
    if server.username:
        (tmp_path / "pw").write_text("not-the-password")
        refused = syncd(cfg, *add)
        assert refused.code == 2 and "refused the username or password" in refused.err
        assert "Traceback" not in refused.err
