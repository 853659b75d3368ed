"""Running the demo: start Radicale, the mail catcher, the web side and the daemon; stop them.

The daemon and the web side's peers come from the composition root (:mod:`syncd.app`),
which hands them in as a :class:`Wiring`: the demo never imports an adapter.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from syncd import config as config_mod
from syncd.config import Config
from syncd.demo.seed import (
    ADMIN_EMAIL,
    ADMIN_NAME,
    ADMIN_TZ,
    CALENDAR,
    OWN_ENTRIES,
    RADICALE_PORT,
    SMTP_PORT,
    USER,
    WEB_PORT,
    DemoPaths,
    _env_duration,
    banner,
    connect_calendar,
    demo_config_text,
    read_state,
    seed,
    self_command,
)
from syncd.errors import ConfigError, Refused, SyncdError, UsageError
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.db import Database


class Runner(Protocol):
    """The daemon as the demo drives it."""

    def run(self) -> int:
        """Loop until stopped."""
        ...

    def stop(self, *_: Any) -> None:
        """Finish the unit in hand, then return from :meth:`run`."""
        ...


@dataclass(frozen=True)
class Wiring:
    """What the composition root hands the demo: how to make the daemon and the web side."""

    make_daemon: Callable[[Context, Config, Callable[[], Any]], Runner]
    start_web: Callable[[Context, Config], Any]


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


def run_demo(root_arg: str, reset: bool, wiring: Wiring) -> int:
    """Start everything, serve until SIGINT/SIGTERM, stop everything; 0 on a clean stop."""
    _require_extras()
    from syncd.demo.mail import MailStore, start_smtp
    from syncd.demo.mail_page import mail_app, serve_in_thread
    from syncd.demo.radicale import (
        PortPicker,
        ensure_calendar,
        list_events,
        start_radicale,
        stop_process,
    )

    paths = DemoPaths(Path(root_arg).expanduser().resolve())
    paths.root.mkdir(parents=True, exist_ok=True)
    lock = _take_lock(paths)
    stopping = threading.Event()
    daemons: list[Runner] = []

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
        link_key = cfg.web.link_secret(cfg.sync.state_dir)
        ctx = Context(
            db=db,
            public_url=cfg.web.public_url,
            policy=cfg.policy.to_policy(),
            link_key=lambda: link_key,
            rest_api=bool(cfg.web.api_token_file or cfg.web.admin_token_file),
        )
        seeded = not services.list_admins(ctx)
        if seeded:
            seed(ctx)
        connect_calendar(ctx, calendar_url, paths.password)

        app = mail_app(store, lambda: list_events(calendar_url, (USER, password)), ADMIN_TZ)
        mail_page = serve_in_thread(app, mail_port, "demo-mail-page")
        stops.append(mail_page.stop)
        web = wiring.start_web(ctx, cfg)
        web.state.index_links = [
            ("The coach's calendar as it is now", f"{mail_url}/calendar"),
            ("The mail page: every email syncd sent in this demo", f"{mail_url}/"),
            (f"The calendar's CalDAV address, for a calendar app (user {USER})", calendar_url),
        ]
        daemon = wiring.make_daemon(ctx, cfg, lambda: web)
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


def main(args: argparse.Namespace, wiring: Wiring) -> int:
    """``syncd demo [--reset] [--walkthrough] [--dir DIR]``."""
    if args.walkthrough:
        if args.reset:
            raise UsageError("--walkthrough drives a running demo; it cannot --reset it.")
        from syncd.demo.walkthrough import run_walkthrough

        return run_walkthrough(args.dir)
    return run_demo(args.dir, args.reset, wiring)
