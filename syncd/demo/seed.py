"""``syncd demo``: syncd running for real on one machine, in two minutes.

Everything listens on 127.0.0.1 and keeps its data under one folder (``./demo-data``):

- Radicale (a subprocess) with the user ``demo`` and the calendar ``/demo/bookings/``;
- an SMTP server (aiosmtpd, in-process) that keeps every email as ``mail/NNNN.eml``;
- the SQLite database ``syncd.db``, migrated, seeded on the first run with a coach, their
  weekly availability and five sessions;
- the syncd daemon (sync loop + outbox) and its web side (the customer page);
- a page listing every email sent (:mod:`syncd.demo.mail_page`) on the next port.

``demo.json`` says where everything is, for ``syncd demo --walkthrough``
(:mod:`syncd.demo.walkthrough`). SIGINT/SIGTERM stop everything in order and exit 0;
running it again continues with the same data; ``--reset`` wipes it first.

Tests and impatient people: ``SYNCD_DEMO_SETTLE`` and ``SYNCD_DEMO_POLL`` (durations)
shorten the settle window and the poll interval; ``SYNCD_DEMO_PORT`` picks the web port
(``0``: every port is picked free).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from syncd.domain.durations import parse_duration
from syncd.domain.model import Customer, Session, Status
from syncd.errors import ConfigError
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.models import CalendarRow
from syncd.store.repo import get_admin_row

DEFAULT_DIR = "demo-data"
WEB_PORT, RADICALE_PORT, SMTP_PORT = 8080, 5232, 2525
USER, CALENDAR = "demo", "bookings"
ADMIN_EMAIL, ADMIN_NAME, ADMIN_TZ = "coach@demo.example", "Demo Coach", "Europe/Berlin"
WEEKLY = "mon-sun 08:00-20:00"
#: (email, name, time zone, hour in the coach's zone), booked on the next five days.
CUSTOMERS = (
    ("ann@example.org", "Ann Weber", "Europe/Berlin", 10),
    ("bob@example.net", "Bob Tanaka", "Asia/Tokyo", 9),
    ("carla@example.com", "Carla Souza", "America/Sao_Paulo", 15),
    ("dev@example.org", "Dev Patel", "Asia/Kolkata", 11),
    ("emma@example.net", "Emma Jones", "America/New_York", 17),
)
#: What a demo folder may contain; ``--reset`` refuses to wipe a folder with anything else.
OWN_ENTRIES = frozenset(
    {"radicale", "mail", "syncd.db", "syncd.db-wal", "syncd.db-shm", "syncd.db-journal",
     "demo.json", ".demo.json.tmp", "demo.lock", "syncd.toml", "radicale-password"}
)  # fmt: skip


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo keeps things (absolute)."""

    root: Path
    state: Path = field(init=False)
    lock: Path = field(init=False)
    db: Path = field(init=False)
    mail: Path = field(init=False)
    radicale: Path = field(init=False)
    password: Path = field(init=False)
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        for name, entry in (
            ("state", "demo.json"),
            ("lock", "demo.lock"),
            ("db", "syncd.db"),
            ("mail", "mail"),
            ("radicale", "radicale"),
            ("password", "radicale-password"),
            ("config", "syncd.toml"),
        ):
            object.__setattr__(self, name, self.root / entry)


def read_state(root: Path) -> dict[str, Any] | None:
    """The ``demo.json`` of a demo folder, or None."""
    try:
        data = json.loads((root / "demo.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it (shorter to read)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def syncd_command() -> str:
    """How the person in front of this terminal runs ``syncd``."""
    argv0 = sys.argv[0]
    if Path(argv0).name != "syncd":
        return f"{shown(Path(sys.executable))} -m syncd.app.cli"
    which = shutil.which("syncd")
    if which and Path(which).resolve() == Path(argv0).resolve():
        return "syncd"
    rel = shown(Path(argv0).absolute())
    return rel if "/" in rel else f"./{rel}"


def self_command(root_arg: str, extra: str) -> str:
    """How the person in front of this terminal runs ``syncd demo <extra>`` again."""
    suffix = extra + (f" --dir {shlex.quote(root_arg)}" if root_arg != DEFAULT_DIR else "")
    if os.environ.get("MAKELEVEL"):
        return f'make demo DEMO_ARGS="{suffix.strip()}"'
    return f"{syncd_command()} demo{suffix}"


# --- the folder -----------------------------------------------------------------------------


def _env_duration(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip() or default
    try:
        parse_duration(value)
    except ValueError as err:
        raise ConfigError(f"${name} = {value!r}: {err}") from err
    return value


def demo_config_text(paths: DemoPaths, web_port: int, smtp_port: int) -> str:
    """The demo's configuration (also written to ``syncd.toml`` for the CLI)."""
    q = json.dumps  # a JSON string is a valid TOML basic string
    settle = _env_duration("SYNCD_DEMO_SETTLE", "10s")
    poll = _env_duration("SYNCD_DEMO_POLL", "5s")
    return f"""# Written by `syncd demo` on every start; use it with the CLI, e.g.
#   syncd --config {paths.config} session list
[database]
url = {q(f"sqlite:///{paths.db}")}

[web]
listen = "127.0.0.1:{web_port}"
public_url = "http://127.0.0.1:{web_port}"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
from = "Demo Coach via syncd <bookings@demo.example>"
timeout = "10s"
backoff = "2s"

[sync]
poll_interval = {q(poll)}
settle = {q(settle)}
workers = 2
state_dir = {q(str(paths.root))}
"""


def seed(ctx: Context) -> None:
    """The coach, their week, five sessions on the next five days (first run only)."""
    from syncd.domain.availability import parse_weekly

    services.add_admin(ctx, ADMIN_EMAIL, ADMIN_NAME, ADMIN_TZ)
    services.set_availability(ctx, ADMIN_EMAIL, parse_weekly(WEEKLY), timedelta(minutes=60))
    zone = ZoneInfo(ADMIN_TZ)
    today = ctx.clock().astimezone(zone).date()
    for day, (email, name, tz, hour) in enumerate(CUSTOMERS, start=1):
        start = datetime.combine(today + timedelta(days=day), clock_time(hour), zone)
        start_utc = start.astimezone(UTC)
        services.book(
            ctx, ADMIN_EMAIL, Customer(email, name, tz), start_utc, start_utc + timedelta(hours=1)
        )


def connect_calendar(ctx: Context, url: str, password_file: Path) -> None:
    """The coach's calendar row points at the Radicale collection (this run's port)."""
    settings = {"url": url, "username": USER, "password_file": str(password_file)}
    with ctx.db.write() as orm:
        admin = get_admin_row(orm, ADMIN_EMAIL)
        rows = orm.scalars(select(CalendarRow).where(CalendarRow.admin_id == admin.id)).all()
        if not rows:
            orm.add(
                CalendarRow(
                    admin_id=admin.id,
                    backend="caldav",
                    settings=settings,
                    busy_only=False,
                    cursor_version=1,
                )
            )
        for row in rows:
            if row.backend == "caldav" and not row.busy_only and row.settings != settings:
                row.settings = settings
            # A demo killed with -9 left its lease; this is the only worker on this folder.
            row.lease_owner = row.lease_until = row.next_sync_at = None


def short_time(instant: datetime, tz: str) -> str:
    """``Tue 14 Jan 10:00 CET``."""
    t = instant.astimezone(ZoneInfo(tz))
    return f"{t:%a} {t.day} {t:%b %H:%M} {t.tzname()}"


# --- the banner -----------------------------------------------------------------------------


def banner(state: dict[str, Any], sessions: list[Session], seeded: bool, notes: list[str]) -> str:
    """What the newcomer reads first."""
    cal, pw, user = state["calendar_url"], state["password"], state["username"]
    home = f"{state['caldav_url']}{user}/"
    port = state["caldav_url"].rstrip("/").rsplit(":", 1)[1]
    where = shown(Path(state["dir"]))
    live = [s for s in sessions if s.status is not Status.CANCELED]
    what = "seeded:" if seeded else "reusing the data in this folder (--reset starts over):"
    cli = f"{syncd_command()} --config {shown(Path(state['config']))}"
    lines = [
        "",
        f"syncd demo is running — everything on 127.0.0.1, data in {where}/",
        "",
        f"  Calendar server  Radicale          {cal}",
        f"  Emails           SMTP catcher      127.0.0.1:{state['smtp_port']}"
        f" (keeps them in {where}/mail/)",
        f"  Emails, to read  mail page         {state['mail_url']}/",
        f"  The calendar     as it is now      {state['mail_url']}/calendar",
        f"  syncd            daemon            polls every {state['poll']}; acts on a change"
        f" once it has stayed {state['settle']}",
        f"  syncd web        customer page     {state['web_url']}/  (health: /readyz)",
        f"  Database         SQLite            {shown(Path(state['database']))}",
        *[f"  Note: {n}" for n in notes],
        "",
        f"{ADMIN_NAME} <{ADMIN_EMAIL}> ({ADMIN_TZ}), open mon-sun 08:00-20:00; {what}",
        *[
            f"  {short_time(s.start, ADMIN_TZ):<21} {s.customer.name:<12} "
            f"({s.customer.tz}, {s.status.value})  {s.id}"
            for s in live
        ],
        "",
        f"Open the calendar in your calendar app — user {user}, password {pw}",
        f"  Thunderbird      Calendar → New Calendar… → On the Network; Username {user},",
        f"                   Location {cal} → Find Calendars",
        "  GNOME Calendar   Manage Calendars → Add Calendar… → Connect to a Calendar:",
        f"                   {cal} → Add, then the user and password",
        "  Evolution        File → New → Calendar; Type CalDAV;",
        f"                   URL {cal}; User {user}",
        "  Apple Calendar   Settings → Accounts → + → Other CalDAV Account…; Account Type",
        f"                   Manual; User Name {user}; Server Address {home}",
        "  DAVx5 (Android)  the phone must reach this computer: plug it in with USB debugging",
        f"                   and run `adb reverse tcp:{port} tcp:{port}`; then + → Login with",
        f"                   URL and user name; Base URL {home}",
        "",
        "Try: drag an event, delete one, write `cancel: reason` or `reschedule: message` in its",
        f"notes; or run `{state['walkthrough_command']}` in a second terminal.",
        f"Every email syncd sends shows up at {state['mail_url']}/ — Ctrl-C stops everything.",
        f"The CLI works on this demo too: {cli} session list",
        "",
        "What happens, as it happens:",
    ]
    return "\n".join(lines)
