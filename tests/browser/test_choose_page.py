"""The customer's "choose a new time" page in real headless Chromium (Debian's, never a
downloaded build), against the real web server on a real socket and a real SQLite file.

Without Chromium these tests fail in CI and skip (loudly) elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from syncd.app.commands import web_peers
from syncd.config import Config, SmtpConfig, WebConfig
from syncd.domain.availability import parse_weekly
from syncd.domain.model import Actor, Customer, Status
from syncd.notify.links import derive_token
from syncd.services import booking as services
from syncd.services import choice
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import OutboxRow
from syncd.web.server import WebServer, start_in_thread
from tests.conftest import Clock

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN = "coach@example.com"
CUSTOMER = Customer("ann@example.org", "Ann Example", "America/New_York")
SESSION_START = datetime(2026, 12, 3, 15, 0, tzinfo=UTC)  # Thu; the clock is Mon 30 Nov 12:00Z
PICK = "2026-12-02T10:00:00Z"  # Wed 2 Dec, 11:00 in Berlin, 05:00 in New York
MESSAGE = "Sorry, I have to move our session. Please pick another time."
SCREENSHOT = Path(__file__).resolve().parents[2] / "build" / "screenshots" / "choose.png"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module."""
    if not Path(CHROMIUM).exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium (make chromium)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; the browser tests must run in CI")
        pytest.skip(f"BROWSER TESTS SKIPPED: {reason}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@dataclass
class Site:
    """A running web server with one session waiting for its customer."""

    ctx: Context
    web: WebServer
    clock: Clock
    session_id: str
    token: str

    @property
    def link(self) -> str:
        return f"{self.web.url}/choose/{self.token}"


@pytest.fixture
def site(sqlite_url: str, clock: Clock) -> Iterator[Site]:
    """Admin, availability, a booked session, "let customer choose", the server on port 0."""
    db = Database(sqlite_url)
    ctx = Context(db=db, public_url="https://book.example.com", clock=clock)
    services.add_admin(ctx, ADMIN, "Coach Carla", "Europe/Berlin")
    services.set_availability(
        ctx, ADMIN, parse_weekly("mon-fri 09:00-17:00"), timedelta(minutes=60)
    )
    s = services.book(ctx, ADMIN, CUSTOMER, SESSION_START, SESSION_START + timedelta(hours=1))
    services.let_customer_choose(ctx, s.id, MESSAGE)
    with db.read() as orm:
        row = orm.scalars(
            select(OutboxRow).where(OutboxRow.session_id == s.id, OutboxRow.kind == "choose")
        ).one()
        # Only a reference rests in the outbox; the token is derived under the link secret.
        ref = row.payload["link_ref"]
        token = derive_token(ctx.link_key(), ref["id"], ref["session"])
        assert token not in json.dumps(row.payload)
        assert "token" not in row.payload and "link" not in row.payload
    cfg = Config(web=WebConfig(listen="127.0.0.1:0", public_url="http://127.0.0.1"))
    # The web side as the composition root wires it: busy-only calendars through adapters.
    web = start_in_thread(ctx, cfg, web_peers(cfg))
    try:
        yield Site(ctx, web, clock, s.id, token)
    finally:
        web.stop()
        db.dispose()


def _kinds(ctx: Context, session_id: str) -> list[str]:
    with ctx.db.read() as orm:
        return [
            r.kind for r in orm.scalars(select(OutboxRow).where(OutboxRow.session_id == session_id))
        ]


def _form_fields(html: str) -> tuple[str, list[str]]:
    csrf = re.search(r'name="csrf" value="([^"]+)"', html)
    assert csrf, "the page has no CSRF field"
    return csrf.group(1), re.findall(r'name="slot" value="([^"]+)"', html)


def test_customer_picks_a_new_time_in_their_zone(browser: Any, site: Site) -> None:
    # No JavaScript: the page must work without it.
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, java_script_enabled=False, locale="en-US"
    )
    page = context.new_page()
    resp = page.goto(site.link)
    assert resp is not None and resp.status == 200
    headers = resp.all_headers()
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["cache-control"] == "no-store"
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=strict" in headers["set-cookie"]
    assert page.locator("html").get_attribute("lang") == "en"
    assert "Coach Carla" in page.locator("h1").inner_text()
    assert page.locator("#admin-message").inner_text().startswith("Sorry, I have to move")
    # The current time, in the customer's zone (New York) by default.
    assert page.locator("#current-time").inner_text() == (
        "Thu 3 Dec 2026, 10:00 EST (America/New_York)"
    )
    assert page.locator("#tz").input_value() == "America/New_York"
    ny = page.locator(".slot span").all_inner_texts()
    # Earliest: Mon 30 Nov 15:00 Berlin (now + 2 h min notice, within 09-17 Berlin).
    assert ny[0] == "09:00 – 10:00"
    assert page.locator("fieldset legend").first.inner_text() == "Monday 30 November"
    # One week at a time, days as rows: Mon 30 Nov to Fri 4 Dec.
    assert page.locator("#week-heading").inner_text() == "Mon 30 Nov – Sun 6 Dec 2026"
    assert page.locator("fieldset").count() == 5
    assert page.locator("#prev-week").count() == 0
    # The session's own time (Thu 3 Dec 10:00 New York) is not offered as a new one.
    assert page.locator('input[value="2026-12-03T15:00:00Z"]').count() == 0
    assert page.locator('input[value="2026-12-03T14:00:00Z"]').count() == 1

    page.select_option("#tz", "Europe/Berlin")
    page.get_by_role("button", name="Show times").click()
    page.wait_for_url(re.compile(r"tz=Europe%2FBerlin"))
    berlin = page.locator(".slot span").all_inner_texts()
    assert berlin[0] == "15:00 – 16:00"
    assert len(berlin) == len(ny) == 2 + 8 + 8 + 7 + 8
    assert page.locator("#shown-zone").inner_text() == "Europe/Berlin"
    # Each day is a fieldset with a legend; every radio has a label.
    assert page.locator("input[type=radio]").count() == page.locator("label.slot").count()
    # A person looks at build/screenshots/choose.png (a desktop window, the whole week).
    desk = browser.new_context(viewport={"width": 1100, "height": 1500}, locale="en-US")
    shot = desk.new_page()
    shot.goto(f"{site.link}?tz=Europe/Berlin")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shot.screenshot(path=str(SCREENSHOT))
    desk.close()
    # The next week is a plain link (no JavaScript), and it keeps the zone.
    page.locator("#next-week").click()
    assert page.locator("#week-heading").inner_text() == "Mon 7 Dec – Sun 13 Dec 2026"
    assert page.locator(".slot span").first.inner_text() == "09:00 – 10:00"
    page.locator("#prev-week").click()
    assert page.locator("#week-heading").inner_text().startswith("Mon 30 Nov")

    radio = page.locator(f'input[name=slot][value="{PICK}"]')
    page.locator(f'label[for="{radio.get_attribute("id")}"]').click()  # the big target
    assert radio.is_checked()
    page.get_by_role("button", name="Confirm the new time").click()
    assert page.locator("h1").inner_text() == "Your new time is booked"
    assert "Wed 2 Dec 2026, 11:00 CET (Europe/Berlin)" in page.locator("#new-time").inner_text()

    s = services.show(site.ctx, site.session_id)
    assert s.status is Status.BOOKED
    assert s.start == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert s.end == datetime(2026, 12, 2, 11, 0, tzinfo=UTC)
    last = s.history[-1]
    assert (last.actor, last.action, last.to_start) == (Actor.CUSTOMER, "chose_new_time", s.start)
    assert "confirmed" in _kinds(site.ctx, site.session_id)

    # The link is single-use: opening it again says so, with 410.
    again = page.goto(site.link)
    assert again is not None and again.status == 410
    assert page.locator("h1").inner_text() == "This link was already used"
    context.close()

    _drain_to_smtp(site)


def test_the_page_has_no_serious_accessibility_violations(browser: Any, site: Site) -> None:
    """axe-core (through axe-playwright-python) on the page, phone-sized, in both schemes."""
    from axe_playwright_python.sync_playwright import Axe

    for scheme in ("light", "dark"):
        context = browser.new_context(
            viewport={"width": 390, "height": 844}, bypass_csp=True, color_scheme=scheme
        )
        page = context.new_page()
        assert page.goto(site.link) is not None
        results = Axe().run(page)
        bad = [
            (v["id"], v["impact"], [n["target"] for n in v["nodes"]])
            for v in results.response["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert bad == [], (scheme, bad)
        # Keyboard order: the zone picker, its button, then the first slot.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "tz"
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.name") == "slot"
        context.close()


def test_only_offered_slots_of_the_sessions_length_can_be_taken(site: Site) -> None:
    with httpx.Client(base_url=site.web.url) as client:
        page = client.get(f"/choose/{site.token}", params={"tz": "UTC"})
        csrf, slots = _form_fields(page.text)
        # 200 days ahead, on the admin's weekly grid (a Monday 09:00 Berlin), never shown.
        far = "2027-06-21T07:00:00Z"
        assert far not in slots
        r = client.post(f"/choose/{site.token}", data={"csrf": csrf, "slot": far})
        assert r.status_code == 409 and "no longer free" in r.text
        # The session's own current time is not a new time.
        current = "2026-12-03T15:00:00Z"
        r = client.post(f"/choose/{site.token}", data={"csrf": csrf, "slot": current})
        assert r.status_code == 409
    assert services.show(site.ctx, site.session_id).status is Status.AWAITING_CUSTOMER


def test_a_90_minute_session_stays_90_minutes_and_the_admin_is_told(
    sqlite_url: str, clock: Clock
) -> None:
    ctx = Context(db=Database(sqlite_url), public_url="https://book.example.com", clock=clock)
    services.add_admin(ctx, ADMIN, "Coach Carla", "Europe/Berlin")
    services.set_availability(ctx, ADMIN, parse_weekly("mon-fri 09:00-17:00"), timedelta(hours=1))
    end = SESSION_START + timedelta(minutes=90)  # 16:00-17:30 Berlin: the admin books it
    s = services.book(ctx, ADMIN, CUSTOMER, SESSION_START, end, Actor.ADMIN)
    services.let_customer_choose(ctx, s.id, "Please pick again")
    with ctx.db.read() as orm:
        ref = orm.scalars(select(OutboxRow).where(OutboxRow.kind == "choose")).one().payload
    token = derive_token(ctx.link_key(), ref["link_ref"]["id"], s.id)
    offer = choice.lookup_choice(ctx, token)
    slots = choice.offered_slots(offer, clock(), [])
    assert slots and all(end - start == timedelta(minutes=90) for start, end in slots)
    # 15:00-16:30 Berlin is the last one of a day; 16:00 would run past 17:00.
    starts = {start for start, _ in slots}
    assert datetime(2026, 12, 1, 14, 0, tzinfo=UTC) in starts
    assert datetime(2026, 12, 1, 15, 0, tzinfo=UTC) not in starts
    start = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)  # 10:00-11:30 Berlin
    after = choice.consume_choice(ctx, token, start)
    assert (after.start, after.end) == (start, start + timedelta(minutes=90))
    with ctx.db.read() as orm:
        admin_mail = orm.scalars(select(OutboxRow).where(OutboxRow.kind == "customer_chose")).one()
    assert admin_mail.recipient == ADMIN
    assert admin_mail.payload["data"]["old_start"] == SESSION_START.isoformat()


def _drain_to_smtp(site: Site) -> None:
    """Send the outbox to a real aiosmtpd server: the customer gets the confirmation."""
    try:
        from syncd.app.daemon import make_mailer
        from syncd.notify.sender import drain
        from tests.smtp_server import start_smtp
    except ImportError:  # the sender is wired by the lead; the outbox row is the contract
        return
    smtp = start_smtp()
    try:
        cfg = Config(smtp=SmtpConfig(host="127.0.0.1", port=smtp.port))
        mailer = make_mailer(cfg)
        try:
            drain(site.ctx, mailer, cfg.smtp, "browser-test")
        finally:
            mailer.close()
    finally:
        smtp.stop()
    to_ann = [m for m in smtp.messages if "ann@example.org" in str(m["To"])]
    assert any(str(m["Subject"]).startswith("Confirmed") for m in to_ann), [
        str(m["Subject"]) for m in smtp.messages
    ]


def test_expired_link_is_a_410_page(browser: Any, site: Site) -> None:
    site.clock.advance(days=7, minutes=1)  # past the default choose_link_ttl of 7 days
    page = browser.new_page()
    resp = page.goto(site.link)
    assert resp is not None and resp.status == 410
    assert page.locator("h1").inner_text() == "This link has expired"
    assert "contact your host" in page.locator("main").inner_text()
    page.close()


def test_forged_link_is_a_404_page(browser: Any, site: Site) -> None:
    page = browser.new_page()
    resp = page.goto(f"{site.web.url}/choose/{secrets.token_urlsafe(32)}")
    assert resp is not None and resp.status == 404
    assert page.locator("h1").inner_text() == "This link is not valid"
    assert "Traceback" not in page.content()
    page.close()


def test_post_without_the_csrf_token_is_refused(site: Site) -> None:
    with httpx.Client(base_url=site.web.url) as client:
        page = client.get(f"/choose/{site.token}")
        assert page.status_code == 200
        csrf, slots = _form_fields(page.text)
        # No cookie, no field.
        bare = httpx.post(site.link, data={"slot": slots[0]})
        assert bare.status_code == 403
        assert "Please try again" in bare.text
        # The cookie but a wrong field, and the field without the cookie.
        wrong = client.post(f"/choose/{site.token}", data={"slot": slots[0], "csrf": "x" * 43})
        assert wrong.status_code == 403
        no_cookie = httpx.post(site.link, data={"slot": slots[0], "csrf": csrf})
        assert no_cookie.status_code == 403
    assert services.show(site.ctx, site.session_id).status is Status.AWAITING_CUSTOMER


def test_get_never_consumes_and_a_taken_slot_is_a_409(site: Site) -> None:
    with httpx.Client(base_url=site.web.url) as client:
        first = client.get(f"/choose/{site.token}")
        second = client.get(f"/choose/{site.token}", params={"tz": "Asia/Tokyo"})
        assert (first.status_code, second.status_code) == (200, 200)
        assert "JST" in second.text
        csrf, slots = _form_fields(second.text)
        assert services.show(site.ctx, site.session_id).status is Status.AWAITING_CUSTOMER

        # Nothing picked: 400, the slots again.
        none = client.post(f"/choose/{site.token}", data={"csrf": csrf, "tz": "Asia/Tokyo"})
        assert none.status_code == 400 and 'name="slot"' in none.text
        # A slot that is not free (Saturday): 409, the slots again, the link still valid.
        taken = client.post(
            f"/choose/{site.token}",
            data={"csrf": csrf, "slot": "2026-12-05T10:00:00Z", "tz": "Asia/Tokyo"},
        )
        assert taken.status_code == 409
        assert "no longer free" in taken.text and 'name="slot"' in taken.text

        done = client.post(
            f"/choose/{site.token}", data={"csrf": csrf, "slot": slots[1], "tz": "Asia/Tokyo"}
        )
        assert done.status_code == 200, done.text
        assert "Your new time is booked" in done.text and "(Asia/Tokyo)" in done.text
        assert done.headers["cache-control"] == "no-store"

        used = client.post(
            f"/choose/{site.token}", data={"csrf": csrf, "slot": slots[2], "tz": "Asia/Tokyo"}
        )
        assert used.status_code == 410
    s = services.show(site.ctx, site.session_id)
    assert s.status is Status.BOOKED
    assert s.start == datetime.fromisoformat(slots[1].replace("Z", "+00:00"))


BUSY_ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//syncd tests//EN
BEGIN:VEVENT
UID:busy-dentist@example.com
DTSTAMP:20261101T000000Z
DTSTART:20261201T080000Z
DTEND:20261201T110000Z
SUMMARY:Dentist
END:VEVENT
END:VCALENDAR
"""


def test_busy_calendars_block_slots_and_a_dead_one_is_skipped(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from syncd.store.models import AdminRow, CalendarRow
    from tests.servers import running

    with running("xandikos", tmp_path) as server:
        url = server.make_calendar()
        status, _, _ = server.request(
            "PUT", f"{url}busy.ics", BUSY_ICS.encode(), {"Content-Type": "text/calendar"}
        )
        assert status in (201, 204)
        with site.ctx.db.write() as orm:
            admin_id = orm.scalars(select(AdminRow.id).where(AdminRow.email == ADMIN)).one()
            for cal_url in (url, "http://127.0.0.1:1/nobody/calendar/"):
                orm.add(
                    CalendarRow(
                        admin_id=admin_id,
                        backend="caldav",
                        settings={"url": cal_url, "username": "", "password_file": ""},
                        busy_only=True,
                        cursor_version=1,
                    )
                )
        with httpx.Client(base_url=site.web.url) as client:
            page = client.get(f"/choose/{site.token}", params={"tz": "UTC"})
            assert page.status_code == 200
            csrf, slots = _form_fields(page.text)
            # Tue 1 Dec, 09:00-12:00 Berlin is busy; 12:00 Berlin (11:00Z) is free again.
            for busy in ("2026-12-01T08:00:00Z", "2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z"):
                assert busy not in slots
            assert {"2026-12-01T11:00:00Z", "2026-12-02T08:00:00Z"} <= set(slots)
            # The dead calendar is left out with a warning, not an error page.
            assert any(
                r.levelname == "WARNING" and "did not answer" in r.getMessage()
                for r in caplog.records
            )
            taken = client.post(
                f"/choose/{site.token}",
                data={"csrf": csrf, "slot": "2026-12-01T09:00:00Z", "tz": "UTC"},
            )
            assert taken.status_code == 409
    assert services.show(site.ctx, site.session_id).status is Status.AWAITING_CUSTOMER
