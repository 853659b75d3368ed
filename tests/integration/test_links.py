"""Every link syncd prints or writes leads somewhere: the index page, the notes' session link,
and a second demo walkthrough books no look-alike customers (issue 12, item 15)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx

from syncd.config import Config, WebConfig
from syncd.demo.driver import _top_up
from syncd.domain.availability import parse_weekly
from syncd.domain.model import Customer
from syncd.engine.actions import session_url
from syncd.engine.desired import GestureRules, desired_event
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.web.server import start_in_thread

ADMIN = "coach@example.com"
ADMIN_TOKEN = "adm1n-" + "y" * 32
START = datetime(2026, 12, 8, 10, tzinfo=UTC)


def test_the_root_is_an_index_page_whose_links_all_answer(sqlite_url: str) -> None:
    ctx = Context(db=Database(sqlite_url))
    cfg = Config(web=WebConfig(listen="127.0.0.1:0", public_url="https://book.example.com"))
    web = start_in_thread(ctx, cfg)
    try:
        web.state.index_links = [("The mail page", f"{web.url}/healthz")]
        r = httpx.get(f"{web.url}/")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "syncd" in r.text and "The mail page" in r.text
        assert "The REST API is off" in r.text
        hrefs = re.findall(r'href="([^"]+)"', r.text)
        assert len(hrefs) >= 4
        for href in hrefs:
            target = href if href.startswith("http") else f"{web.url}{href}"
            assert httpx.get(target).status_code == 200, href
    finally:
        web.stop()
        ctx.db.dispose()


def _notes(ctx: Context, sid: str) -> str:
    session = services.show(ctx, sid)
    rules = GestureRules()
    return desired_event(session, ctx.uid(sid), session_url(ctx, sid), rules).notes_block


def test_notes_link_to_the_session_only_when_the_rest_api_answers(
    sqlite_url: str, tmp_path: Path
) -> None:
    db = Database(sqlite_url)
    off = Context(db=db, public_url="http://127.0.0.1:8080", rest_api=False)
    services.add_admin(off, ADMIN, "Coach", "Europe/Berlin")
    sid = services.book(
        off, ADMIN, Customer("a@example.org", "A", "UTC"), START, START + timedelta(hours=1)
    ).id
    notes = _notes(off, sid)
    assert "Customer: A <a@example.org>" in notes
    assert "/api/" not in notes and "Session:" not in notes

    token = tmp_path / "admin-token"
    token.write_text(ADMIN_TOKEN + "\n")
    cfg = Config(
        web=WebConfig(
            listen="127.0.0.1:0",
            public_url="http://127.0.0.1:8080",
            admin_token_file=str(token),
        )
    )
    web = start_in_thread(Context(db=db), cfg)
    try:
        on = Context(db=db, public_url=web.url)
        (link,) = re.findall(r"Session: (\S+)", _notes(on, sid))
        r = httpx.get(link, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert r.status_code == 200 and r.json()["id"] == sid
    finally:
        web.stop()
        db.dispose()


def test_a_second_top_up_books_no_look_alike_customers(sqlite_url: str) -> None:
    ctx = Context(db=Database(sqlite_url))
    admin = services.add_admin(ctx, ADMIN, "Coach", "Europe/Berlin")
    services.set_availability(ctx, ADMIN, parse_weekly("mon-sun 08:00-20:00"), timedelta(hours=1))
    demo = SimpleNamespace(ctx=ctx, admin=services.get_admin(ctx, admin.email))
    said: list[str] = []
    for _ in range(3):  # three walkthroughs, each topping up three sessions
        _top_up(demo, 3, said.append)  # type: ignore[arg-type]
    live = [s for s in services.list_sessions(ctx, ADMIN) if s.live]
    assert len(live) == 9
    names = [s.customer.name for s in live]
    emails = [s.customer.email for s in live]
    assert len(set(names)) == len(names) == len(set(emails)), sorted(names)
    ctx.db.dispose()
