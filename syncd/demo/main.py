"""``syncd demo``: syncd running for real on one machine, in two minutes.

Everything listens on 127.0.0.1 and keeps its data under one folder (``./demo-data``):

- Radicale (a subprocess) with the user ``demo`` and the calendar ``/demo/bookings/``;
- an SMTP server (aiosmtpd, in-process) that keeps every email as ``mail/NNNN.eml``;
- the SQLite database ``syncd.db``, migrated, seeded on the first run with a coach, their
  weekly availability and five sessions;
- the syncd daemon (sync loop + outbox) and its web side (the customer page);
- a page listing every email sent (:mod:`syncd.demo.mail`) on the next port.

``demo.json`` says where everything is, for ``syncd demo --walkthrough``
(:mod:`syncd.demo.walkthrough`). SIGINT/SIGTERM stop everything in order and exit 0;
running it again continues with the same data; ``--reset`` wipes it first.

Tests and impatient people: ``SYNCD_DEMO_SETTLE`` and ``SYNCD_DEMO_POLL`` (durations)
shorten the settle window and the poll interval; ``SYNCD_DEMO_PORT`` picks the web port
(``0``: every port is picked free).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from syncd import config as config_mod
from syncd.domain.durations import parse_duration
from syncd.domain.model import Customer, Session, Status
from syncd.errors import ConfigError, Refused, SyncdError, UsageError
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import CalendarRow
from syncd.store.repo import get_admin_row

if TYPE_CHECKING:
    from syncd.app.cli import Runtime

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


def _take_lock(paths: DemoPaths) -> IO[str]:
    """An exclusive lock on the folder for as long as this demo runs."""
    handle = paths.lock.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        state = read_state(paths.root) or {}
        raise Refused(
            f"A demo is already running in {paths.root} (pid {state.get('pid', '?')}); "
            "stop it with Ctrl-C first, or use another --dir."
        ) from None
    return handle


def _wipe(paths: DemoPaths) -> None:
    """Delete the demo's data (``--reset``); refuses a folder that holds anything else."""
    strangers = sorted(p.name for p in paths.root.iterdir() if p.name not in OWN_ENTRIES)
    if strangers:
        raise Refused(
            f"--reset would delete {paths.root}, which holds files the demo did not make "
            f"({', '.join(strangers[:5])}); use another --dir."
        )
    for entry in paths.root.iterdir():
        if entry.name == "demo.lock":
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


# --- syncd's side ---------------------------------------------------------------------------


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


def _announcer(mail_url: str) -> Any:
    def announce(m: Any) -> None:
        print(f"  mail   → {m.to}: {m.subject}  ({mail_url}/mail/{m.number})", flush=True)

    return announce


class _Names(logging.Filter):
    """Drop the start-up line; name the customer in ``calendar 1: s_…: rescheduled``."""

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith("syncd running as"):
            return False
        m = re.match(r"calendar \d+: (s_[a-z0-9]+): (.*)$", text)
        if m:
            try:
                name = services.show(self.ctx, m.group(1)).customer.name
            except SyncdError:
                return True
            record.msg, record.args = f"{name}'s session: {m.group(2)}  ({m.group(1)})", ()
        return True


def _log_to_terminal(ctx: Context) -> None:
    """syncd's actions on stdout while the demo runs."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("  syncd  %(message)s"))
    handler.addFilter(_Names(ctx))
    logger = logging.getLogger("syncd.app.daemon")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False


# --- the run --------------------------------------------------------------------------------


def _require_extras() -> None:
    import importlib.util

    missing = [m for m in ("radicale", "aiosmtpd") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"the demo needs {' and '.join(missing)}: pip install 'syncd[demo]' (or: make demo)"
        )


def run_demo(root_arg: str, reset: bool) -> int:
    """Start everything, serve until SIGINT/SIGTERM, stop everything; 0 on a clean stop."""
    _require_extras()
    from syncd.app.daemon import Daemon
    from syncd.demo.mail import MailStore, mail_app, serve_in_thread, start_smtp
    from syncd.demo.radicale import (
        PortPicker,
        ensure_calendar,
        list_events,
        start_radicale,
        stop_process,
    )
    from syncd.web.server import start_in_thread

    paths = DemoPaths(Path(root_arg).expanduser().resolve())
    paths.root.mkdir(parents=True, exist_ok=True)
    lock = _take_lock(paths)
    stopping = threading.Event()
    daemons: list[Daemon] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.set()
        for d in daemons:
            d.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    radicale: Any = None
    stops: list[Any] = []
    db: Database | None = None
    try:
        if reset:
            _wipe(paths)
        ports = PortPicker()
        env_port = os.environ.get("SYNCD_DEMO_PORT", "").strip()
        if env_port and not env_port.isdigit():
            raise UsageError(f"$SYNCD_DEMO_PORT = {env_port!r} is not a port number")
        base = int(env_port) if env_port else WEB_PORT
        web_port = ports.pick(base, "the syncd web side")
        mail_port = ports.pick(web_port + 1 if base else 0, "the mail page")
        radicale_port = ports.pick(RADICALE_PORT if base else 0, "Radicale")
        smtp_port = ports.pick(SMTP_PORT if base else 0, "the SMTP catcher")

        if not paths.password.exists():
            paths.password.write_text(secrets.token_urlsafe(9) + "\n")
            paths.password.chmod(0o600)
        password = paths.password.read_text().strip()
        print(f"Starting the syncd demo in {paths.root} …", flush=True)
        radicale = start_radicale(paths.radicale, radicale_port, USER, password)
        caldav_url = f"http://127.0.0.1:{radicale_port}/"
        calendar_url = f"{caldav_url}{USER}/{CALENDAR}/"
        ensure_calendar(calendar_url, (USER, password), f"{ADMIN_NAME} — bookings (syncd demo)")

        store = MailStore(paths.mail)
        mail_url = f"http://127.0.0.1:{mail_port}"
        smtp = start_smtp(store, smtp_port, _announcer(mail_url))
        stops.append(smtp.stop)

        text = demo_config_text(paths, web_port, smtp_port)
        paths.config.write_text(text)
        cfg = config_mod.parse(text, str(paths.config))
        db = Database(cfg.database.url)
        db.upgrade()
        ctx = Context(db=db, public_url=cfg.web.public_url, policy=cfg.policy.to_policy())
        seeded = not services.list_admins(ctx)
        if seeded:
            seed(ctx)
        connect_calendar(ctx, calendar_url, paths.password)

        app = mail_app(store, lambda: list_events(calendar_url, (USER, password)), ADMIN_TZ)
        mail_page = serve_in_thread(app, mail_port, "demo-mail-page")
        stops.append(mail_page.stop)
        web = start_in_thread(ctx, cfg)
        daemon = Daemon(ctx, cfg, start_web=lambda: web)
        daemons.append(daemon)

        state: dict[str, Any] = {
            "pid": os.getpid(),
            "radicale_pid": radicale.pid,
            "dir": str(paths.root),
            "started_at": datetime.now(UTC).isoformat(),
            "web_url": web.url,
            "public_url": cfg.web.public_url,
            "mail_url": mail_url,
            "caldav_url": caldav_url,
            "calendar_url": calendar_url,
            "username": USER,
            "password": password,
            "smtp_port": smtp_port,
            "database": str(paths.db),
            "database_url": cfg.database.url,
            "config": str(paths.config),
            "settle": _env_duration("SYNCD_DEMO_SETTLE", "10s"),
            "poll": _env_duration("SYNCD_DEMO_POLL", "5s"),
            "settle_seconds": cfg.sync.settle.total_seconds(),
            "poll_seconds": cfg.sync.poll_interval.total_seconds(),
            "admin_email": ADMIN_EMAIL,
            "walkthrough_command": self_command(root_arg, " --walkthrough"),
        }
        tmp = paths.root / ".demo.json.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.chmod(0o600)
        os.replace(tmp, paths.state)
        sessions = services.list_sessions(ctx, ADMIN_EMAIL)
        print(banner(state, sessions, seeded, ports.notes), flush=True)
        _log_to_terminal(ctx)
        if not stopping.is_set():
            daemon.run()  # returns once a signal asked it to stop; it stops the web side
        else:
            web.stop()
        return 0
    finally:
        paths.state.unlink(missing_ok=True)
        for stop in reversed(stops):
            with contextlib.suppress(Exception):  # stop the rest whatever one does
                stop()
        stop_process(radicale)
        if db is not None:
            db.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if stopping.is_set():
            print(
                f"\nStopped. The data stays in {paths.root}: run the demo again to continue, "
                "or with --reset to start over.",
                flush=True,
            )
        lock.close()


def main(rt: Runtime) -> int:
    """``syncd demo [--reset] [--walkthrough] [--dir DIR]``."""
    args = rt.args
    if args.walkthrough:
        if args.reset:
            raise UsageError("--walkthrough drives a running demo; it cannot --reset it.")
        from syncd.demo.walkthrough import run_walkthrough

        return run_walkthrough(args.dir)
    return run_demo(args.dir, args.reset)
