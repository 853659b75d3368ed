"""Driving a running demo as its people would: find it, pick sessions, choose as the customer.

Used by the walkthrough (:mod:`syncd.demo.walkthrough`), which tells the story.
"""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from syncd.config import WebConfig
from syncd.demo.mail import MailStore
from syncd.demo.radicale import CalendarClient, CalEvent
from syncd.demo.seed import read_state, short_time
from syncd.domain.model import Admin, Customer, Session
from syncd.errors import PeerUnavailable
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import IntentRow, OutboxRow

RESCHEDULE_MESSAGE = "Something came up on that day, sorry! Could you pick another time?"
CANCEL_REASON = "I'm ill this week, sorry. Let's book again when I'm back."
#: Customers who book when the demo has fewer than four sessions left to change.
SPARE_CUSTOMERS = (
    ("femi@example.org", "Femi Okafor", "Africa/Lagos"),
    ("greta@example.net", "Greta Lind", "Europe/Stockholm"),
    ("hiro@example.com", "Hiro Sato", "Asia/Tokyo"),
    ("ines@example.org", "Ines Costa", "Europe/Lisbon"),
)
LINK = re.compile(r"https?://\S+/choose/[A-Za-z0-9_\-]+")


@dataclass
@dataclass
class Demo:
    """The running demo, as ``demo.json`` describes it."""

    state: dict[str, Any]
    ctx: Context
    cal: CalendarClient
    mail: MailStore
    admin: Admin
    settle: float
    poll: float

    def events(self) -> dict[str, CalEvent]:
        """The calendar's events by UID."""
        return {e.uid: e for e in self.cal.events()}

    def show(self, sid: str) -> Session:
        return services.show(self.ctx, sid)


def pid_alive(pid: Any) -> bool:
    """True when a process with this id exists."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def connect(root_arg: str) -> Demo:
    """The demo running in ``root_arg``; PeerUnavailable (exit 4) when there is none."""
    root = Path(root_arg).expanduser().resolve()
    state = read_state(root)
    how = "start one with `make demo` (or `syncd demo`), then run the walkthrough in a second "
    if state is None or not pid_alive(state.get("pid")):
        raise PeerUnavailable(f"No demo is running in {root}: {how}terminal.")
    try:
        with urllib.request.urlopen(f"{state['web_url']}/readyz", timeout=5) as resp:
            ready = resp.status == 200
    except (OSError, KeyError):
        ready = False
    if not ready:
        raise PeerUnavailable(f"The demo in {root} does not answer at {state.get('web_url')}.")
    link_key = WebConfig().link_secret(str(root))  # the demo keeps it in its folder
    ctx = Context(
        db=Database(state["database_url"]),
        public_url=state["public_url"],
        link_key=lambda: link_key,
        rest_api=False,  # the demo's configuration sets no API token
    )
    return Demo(
        state=state,
        ctx=ctx,
        cal=CalendarClient(state["calendar_url"], (state["username"], state["password"])),
        mail=MailStore(root / "mail"),
        admin=services.get_admin(ctx, state["admin_email"]),
        settle=float(state["settle_seconds"]),
        poll=float(state["poll_seconds"]),
    )


def wait_for(what: str, check: Callable[[], bool], timeout: float, step: float = 0.5) -> bool:
    """Poll ``check`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


# --- choosing the sessions ------------------------------------------------------------------


def _busy_ids(demo: Demo) -> set[str]:
    """Sessions with a pending gesture or an unsent email (they would blur the story)."""
    with demo.ctx.db.read() as orm:
        intents = set(orm.scalars(select(IntentRow.session_id)))
        unsent = orm.scalars(
            select(OutboxRow.session_id).where(OutboxRow.status.in_(("pending", "sending")))
        )
        return intents | {s for s in unsent if s}


def _ready(demo: Demo) -> tuple[list[Session], int]:
    """Booked sessions more than 3 h away whose event is in the calendar, synced and quiet;
    and how many such sessions there are in all (some may still be on their way)."""
    now = demo.ctx.clock()
    events, busy = demo.events(), _busy_ids(demo)
    ready, upcoming = [], 0
    for s in services.list_sessions(demo.ctx, demo.admin.email, "booked"):
        if s.start <= now + timedelta(hours=3):
            continue
        upcoming += 1
        ev = events.get(demo.ctx.uid(s.id))
        if ev is not None and ev.start == s.start and s.id not in busy:
            ready.append(s)
    return ready, upcoming


def spare_customers(ctx: Context, admin_email: str, count: int) -> list[Customer]:
    """``count`` customers to book, none of whom already has a live session.

    A second walkthrough must not book a second "Femi Okafor": a spare customer is reused
    only once their session is gone, and past the spares come numbered guests.
    """
    sessions = services.list_sessions(ctx, admin_email)
    busy = {s.customer.email.lower() for s in sessions if s.live}
    known = {s.customer.email.lower() for s in sessions}
    out = [Customer(e, n, tz) for e, n, tz in SPARE_CUSTOMERS if e not in busy][:count]
    n = 0
    while len(out) < count:
        n += 1
        email = f"guest{n}@example.org"
        if email not in known:
            out.append(Customer(email, f"Guest {n}", "Europe/Berlin"))
    return out


def _top_up(demo: Demo, count: int, print_: Callable[[str], None]) -> None:
    """Book ``count`` sessions at free slots, as customers would, and wait for their events."""
    from syncd.domain.availability import free_slots

    now = demo.ctx.clock()
    live = [s for s in services.list_sessions(demo.ctx, demo.admin.email) if s.live]
    slots = free_slots(demo.admin, now + timedelta(days=1), now + timedelta(days=8), live)
    picks = slots[:: max(1, len(slots) // (count + 1))][1 : count + 1]
    spares = spare_customers(demo.ctx, demo.admin.email, len(picks))
    for (start, end), customer in zip(picks, spares, strict=True):
        s = services.book(demo.ctx, demo.admin.email, customer, start, end)
        name, tz = customer.name, customer.tz
        print_(f"  booked {name} ({tz}) on {short_time(s.start, demo.admin.tz)}  {s.id}")


def pick_sessions(demo: Demo, print_: Callable[[str], None]) -> list[Session]:
    """Four booked sessions to change, booking more first when there are fewer."""

    def settled() -> bool:  # a demo that just started is still mirroring and mailing
        ready, upcoming = _ready(demo)
        return len(ready) >= 4 or len(ready) == upcoming

    timeout = 30 + 3 * demo.poll
    if not wait_for("the demo to settle", settled, timeout):
        raise PeerUnavailable("The demo did not mirror its sessions in time.")
    ready = _ready(demo)[0]
    if len(ready) < 4:
        print_(f"Only {len(ready)} sessions are left to change; customers book a few more:")
        _top_up(demo, 4 - len(ready), print_)
        wait_for("new events", lambda: len(_ready(demo)[0]) >= 4, timeout)
        ready = _ready(demo)[0]
        if len(ready) < 4:
            raise PeerUnavailable("The demo did not mirror the new sessions in time.")
        print_("")
    return ready[:4]


# --- the admin's side ------------------------------------------------------------------------


def next_day_slot(demo: Demo, s: Session, others: list[Session]) -> datetime:
    """The same local time the next day, moved on by hours while it overlaps a session."""
    zone = ZoneInfo(demo.admin.tz)
    local = s.start.astimezone(zone)
    start = datetime.combine(local.date() + timedelta(days=1), local.time(), zone)
    length = s.end - s.start
    for _ in range(12):
        clash = any(o.live and o.start < start + length and start < o.end for o in others)
        if not clash:
            break
        start += timedelta(hours=1)
    return start.astimezone(UTC)


# --- the customer's side -------------------------------------------------------------------


class _Form(HTMLParser):
    """The inputs of the choose page: hidden fields and the slot radios."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden: dict[str, str] = {}
        self.slots: list[str] = []
        self.action = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("method", "").lower() == "post":
            self.action = a.get("action", "")
        elif tag == "input" and a.get("type") == "hidden" and a.get("name"):
            self.hidden[a["name"]] = a.get("value", "")
        elif tag == "input" and a.get("type") == "radio" and a.get("name") == "slot":
            self.slots.append(a.get("value", ""))


def choose_as_customer(link: str, not_before: datetime, tz: str) -> tuple[datetime, list[str]]:
    """Open the link, pick the first slot from ``not_before`` on, confirm; returns it + log."""
    log: list[str] = []
    with urllib.request.urlopen(link, timeout=10) as resp:
        page = resp.read().decode()
        cookies = [c.split(";", 1)[0] for c in resp.headers.get_all("Set-Cookie") or [] if "=" in c]
    form = _Form()
    form.feed(page)
    shown = link.rsplit("/", 1)[0] + "/" + link.rsplit("/", 1)[1][:6] + "…"
    log.append(f"GET  {shown}  → 200, {len(form.slots)} free slots offered")
    if not form.slots or "csrf" not in form.hidden:
        raise PeerUnavailable("The choose page showed no slots or no CSRF field.")
    starts = [datetime.fromisoformat(v.replace("Z", "+00:00")) for v in form.slots]
    start = next((t for t in starts if t >= not_before), starts[0])
    fields = {**form.hidden, "slot": start.strftime("%Y-%m-%dT%H:%M:%SZ")}
    req = urllib.request.Request(
        urllib.parse.urljoin(link, form.action or urllib.parse.urlsplit(link).path),
        data=urllib.parse.urlencode(fields).encode(),
        method="POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": "; ".join(cookies),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, body = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, body = err.code, err.read().decode(errors="replace")
    title = re.search(r"<h1>(.*?)</h1>", body, re.S)
    log.append(f"picks {short_time(start, tz)} (slot={fields['slot']})")
    log.append(
        f'POST csrf + cookie + slot  → {status} "{title.group(1).strip() if title else "?"}"'
    )
    if status != 200:
        raise PeerUnavailable(f"Picking the slot answered {status}.")
    return start, log


# --- the story ------------------------------------------------------------------------------
