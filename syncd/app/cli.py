"""The ``syncd`` command line (INTERFACE.md is the contract).

Exit codes: 0 ok; 1 refused by a rule (a cut-off, an overlap); 2 usage; 3 not found;
4 a peer (calendar, SMTP, database) unreachable; 78 bad configuration.
No traceback for any expected error: one sentence, on stderr (or ``{"error": ...}`` with
``--json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from syncd.app.runtime import Runtime, emit
from syncd.domain.durations import parse_duration
from syncd.domain.model import Actor, Customer
from syncd.domain.timefmt import action_words, human, parse_time
from syncd.errors import SyncdError, UsageError
from syncd.services.views import admin_json, session_json

# Start-up (issue 11): only argparse and the light domain modules load here; configuration
# (pydantic), the database (SQLAlchemy), the services, the engine, the web stack and every
# backend client are imported inside the handler that needs them. The read-only listings
# (``session list``, ``calendar list``, ``status``) read a SQLite file over sqlite3 and
# never import SQLAlchemy (syncd.store.listing); the configuration is still fully validated.

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_PEER = 4
EXIT_CONFIG = 78

Handler = Callable[[argparse.Namespace], Any]


def _duration_arg(text: str) -> Any:
    try:
        return parse_duration(text)
    except ValueError as err:
        raise UsageError(str(err)) from err


def _session_line(s: Any, admin_tz: str) -> str:
    """One session as the admin reads it: the time in the admin's zone."""
    return (
        f"{s.id}  {s.status.value:<17}  {human(s.start, admin_tz)}  "
        f"{s.admin_email} <- {s.customer.name} <{s.customer.email}>"
    )


def _admin_zones(rt: Runtime) -> dict[str, str]:
    from syncd.services import booking as services

    return {a.email: a.tz for a in services.list_admins(rt.ctx)}


# --- command handlers ---------------------------------------------------------------------


def cmd_init(rt: Runtime) -> int:
    from syncd import config as config_mod

    path = Path(rt.args.path or "syncd.toml")
    config_mod.write_example(path)
    emit(rt.args, {"written": str(path)}, f"Wrote {path}; edit it, then run 'syncd db upgrade'.")
    return EXIT_OK


def cmd_db_upgrade(rt: Runtime) -> int:
    rev = rt.ctx.db.upgrade()
    emit(rt.args, {"revision": rev}, f"Database is at revision {rev}.")
    return EXIT_OK


def cmd_admin_add(rt: Runtime) -> int:
    from syncd.services import booking as services

    a = rt.args
    admin = services.add_admin(
        rt.ctx,
        a.email,
        a.name,
        a.tz,
        _duration_arg(a.reschedule_cutoff) if a.reschedule_cutoff else None,
        _duration_arg(a.cancel_cutoff) if a.cancel_cutoff else None,
    )
    emit(a, admin_json(admin), f"Added admin {admin.email} ({admin.tz}).")
    return EXIT_OK


def cmd_admin_availability(rt: Runtime) -> int:
    from syncd.domain.availability import format_weekly, parse_weekly
    from syncd.services import booking as services

    a = rt.args
    windows = [w for spec in a.weekly for w in parse_weekly(spec)]
    admin = services.set_availability(rt.ctx, a.email, windows, _duration_arg(a.slot))
    emit(a, admin_json(admin), [f"{admin.email}: {', '.join(format_weekly(admin.weekly))}"])
    return EXIT_OK


def cmd_admin_list(rt: Runtime) -> int:
    from syncd.services import booking as services

    admins = services.list_admins(rt.ctx)
    lines = [f"{x.email}  {x.name}  {x.tz}" for x in admins] or ["No admins yet."]
    emit(rt.args, [admin_json(x) for x in admins], lines)
    return EXIT_OK


def cmd_session_book(rt: Runtime) -> int:
    from syncd.services import booking as services

    a = rt.args
    start = parse_time(a.start)
    if not 1 <= a.duration <= 24 * 60:
        raise UsageError("--duration must be from 1 to 1440 minutes (24 hours)")
    s = services.book(
        rt.ctx,
        a.admin,
        Customer(a.customer, a.customer_name, a.customer_tz),
        start,
        start + timedelta(minutes=a.duration),
        Actor(a.actor),
    )
    emit(a, session_json(s), f"Booked {s.id} at {human(s.start, s.customer.tz)}.")
    return EXIT_OK


def cmd_session_list(rt: Runtime) -> int:
    from syncd.store import listing

    a = rt.args
    found = listing.read(rt.config.database.url, listing.sessions(a.admin, a.status))
    if found is not None:  # a SQLite file, over sqlite3 (start-up, issue 11)
        sessions, zones = found
    else:
        from syncd.services import booking as services

        sessions = services.list_sessions(rt.ctx, a.admin, a.status)
        zones = _admin_zones(rt)
    lines = [_session_line(s, zones.get(s.admin_email, "UTC")) for s in sessions]
    lines = lines or ["No sessions."]
    emit(rt.args, [session_json(s) for s in sessions], lines)
    return EXIT_OK


def cmd_session_show(rt: Runtime) -> int:
    from syncd.services import booking as services

    s = services.show(rt.ctx, rt.args.id)
    tz = _admin_zones(rt).get(s.admin_email, "UTC")
    lines = [
        _session_line(s, tz),
        f"  customer time: {human(s.start, s.customer.tz)}",
        f"  sequence {s.sequence}"
        + (f", cancel reason: {s.cancel_reason}" if s.cancel_reason else ""),
    ]
    for h in s.history:
        moved = f" (from {human(h.from_start, tz)})" if h.from_start and h.to_start else ""
        lines.append(
            f"  {human(h.at, tz)}  {action_words(h.action)} by {h.actor.value}{moved}"
            + (f": {h.detail}" if h.detail else "")
        )
    emit(rt.args, session_json(s), lines)
    return EXIT_OK


def cmd_session_reschedule(rt: Runtime) -> int:
    from syncd.services import booking as services

    a = rt.args
    actor = Actor(a.actor)
    if a.let_customer_choose:
        if a.to:
            raise UsageError("Use either --to or --let-customer-choose, not both.")
        if not a.message:
            raise UsageError("--let-customer-choose needs --message for the customer.")
        if a.as_ == "customer" and a.actor == "customer":
            actor = Actor.ADMIN
        s = services.let_customer_choose(rt.ctx, a.id, a.message, actor)
        emit(a, session_json(s), f"{s.id} now waits for {s.customer.email} to choose a time.")
        return EXIT_OK
    if not a.to:
        raise UsageError("Give --to TIME or --let-customer-choose --message TEXT.")
    s = services.reschedule(rt.ctx, a.id, parse_time(a.to), actor=actor)
    emit(a, session_json(s), f"Moved {s.id} to {human(s.start, s.customer.tz)}.")
    return EXIT_OK


def cmd_session_cancel(rt: Runtime) -> int:
    from syncd.services import booking as services

    a = rt.args
    s = services.cancel(rt.ctx, a.id, a.reason, Actor(a.actor))
    emit(a, session_json(s), f"Canceled {s.id}.")
    return EXIT_OK


def cmd_outbox_list(rt: Runtime) -> int:
    from syncd.notify import outbox

    rows = outbox.list_rows(rt.ctx, rt.args.status)
    data = [outbox.outbox_json(r) for r in rows]
    lines = [
        f"{d['id']:>5}  {d['status']:<10} {d['kind']:<16} {d['recipient']}  "
        f"attempts={d['attempts']}" + (f"  {d['last_error']}" if d["last_error"] else "")
        for d in data
    ] or ["The outbox is empty."]
    emit(rt.args, data, lines)
    return EXIT_OK


def cmd_outbox_retry(rt: Runtime) -> int:
    from syncd.notify import outbox, sender

    row = sender.retry(rt.ctx, rt.args.id)
    emit(rt.args, outbox.outbox_json(row), f"Outbox row {rt.args.id} will be sent again.")
    return EXIT_OK


def _engine_cmd(name: str) -> Callable[[Runtime], int]:
    def run(rt: Runtime) -> int:
        from syncd.app import commands

        fn: Callable[[Runtime], int] = getattr(commands, name)
        return fn(rt)

    return run


# --- argument parsing ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="configuration file")
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS)

    p = argparse.ArgumentParser(
        prog="syncd", parents=[common], description="Mirror booked sessions into calendars."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(parent: Any, name: str, fn: Callable[[Runtime], int], **kw: Any) -> Any:
        sp = parent.add_parser(name, parents=[common], **kw)
        sp.set_defaults(fn=fn)
        return sp

    sp = cmd(sub, "init", cmd_init, help="write a commented example configuration")
    sp.add_argument("path", nargs="?")

    db = sub.add_parser("db", parents=[common], help="database schema")
    dbs = db.add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")
    cmd(dbs, "upgrade", cmd_db_upgrade, help="create or migrate the schema (idempotent)")

    adm = sub.add_parser("admin", parents=[common], help="admins")
    admsub = adm.add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")
    sp = cmd(admsub, "add", cmd_admin_add, help="register an admin")
    sp.add_argument("email")
    sp.add_argument("--name", required=True)
    sp.add_argument("--tz", required=True)
    sp.add_argument("--reschedule-cutoff")
    sp.add_argument("--cancel-cutoff")
    sp = cmd(admsub, "availability", cmd_admin_availability, help="set weekly availability")
    sp.add_argument("email")
    sp.add_argument("--weekly", action="append", required=True)
    sp.add_argument("--slot", default="60m")
    cmd(admsub, "list", cmd_admin_list, help="list admins")

    cal = sub.add_parser("calendar", parents=[common], help="calendars")
    calsub = cal.add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")
    sp = cmd(calsub, "add", _engine_cmd("calendar_add"), help="connect a calendar")
    sp.add_argument("email")
    sp.add_argument("backend", choices=["caldav", "google", "microsoft"])
    sp.add_argument("--url")
    sp.add_argument("--username", default="")
    sp.add_argument("--password-file", default="")
    sp.add_argument(
        "--password-credential",
        default="",
        help="systemd credential name (LoadCredential=) holding the password",
    )
    sp.add_argument("--calendar-id")
    sp.add_argument(
        "--calendar", default="", help="CalDAV: the calendar to use or create (default Bookings)"
    )
    sp.add_argument("--credentials-file", default="")
    sp.add_argument("--mailbox", default="", help="Microsoft: the mailbox's UPN (app-only)")
    sp.add_argument(
        "--busy-only",
        action="store_true",
        help="read busy times only (for free slots); never write",
    )
    cmd(calsub, "list", _engine_cmd("calendar_list"), help="list calendars")

    auth = sub.add_parser("auth", parents=[common], help="authorize calendar access")
    authsub = auth.add_subparsers(dest="sub", required=True, metavar="PROVIDER")
    sp = cmd(authsub, "google", _engine_cmd("auth_google"), help="Google OAuth (installed app)")
    sp.add_argument("email")
    sp.add_argument("--calendar-id", default="", help="use this calendar (calendar.events)")
    sp.add_argument("--no-browser", action="store_true")
    sp = cmd(authsub, "microsoft", _engine_cmd("auth_microsoft"), help="Microsoft sign-in")
    sp.add_argument("email")
    sp.add_argument("--device-code", action="store_true", help="sign in on another device")
    sp.add_argument("--calendar-id", default="", help="use this calendar, not Bookings")

    ses = sub.add_parser("session", parents=[common], help="sessions")
    sessub = ses.add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")
    sp = cmd(sessub, "book", cmd_session_book, help="book a session")
    sp.add_argument("--admin", required=True)
    sp.add_argument("--customer", required=True)
    sp.add_argument("--customer-name", required=True)
    sp.add_argument("--customer-tz", default="UTC")
    sp.add_argument("--start", required=True)
    sp.add_argument("--duration", type=int, required=True, help="minutes")
    sp.add_argument("--as", dest="actor", default="customer", choices=["customer", "admin", "api"])
    sp = cmd(sessub, "list", cmd_session_list, help="list sessions")
    sp.add_argument("--admin")
    sp.add_argument("--status")
    sp = cmd(sessub, "show", cmd_session_show, help="one session with its history")
    sp.add_argument("id")
    sp = cmd(sessub, "reschedule", cmd_session_reschedule, help="move a session")
    sp.add_argument("id")
    sp.add_argument("--to")
    sp.add_argument("--let-customer-choose", action="store_true")
    sp.add_argument("--message")
    sp.add_argument("--as", dest="actor", default="customer", choices=["customer", "admin"])
    sp.set_defaults(as_="customer")
    sp = cmd(sessub, "cancel", cmd_session_cancel, help="cancel a session")
    sp.add_argument("id")
    sp.add_argument("--reason", required=True)
    sp.add_argument("--as", dest="actor", default="customer", choices=["customer", "admin"])

    sp = cmd(sub, "sync", _engine_cmd("sync"), help="one full cycle, then exit")
    sp.add_argument("--once", action="store_true", required=True)
    cmd(sub, "run", _engine_cmd("run"), help="the daemon: sync loop, outbox, web")
    cmd(sub, "web", _engine_cmd("web"), help="serve the customer page and the API only")

    ob = sub.add_parser("outbox", parents=[common], help="outgoing emails")
    obsub = ob.add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")
    sp = cmd(obsub, "list", cmd_outbox_list, help="list emails")
    sp.add_argument("--status")
    sp = cmd(obsub, "retry", cmd_outbox_retry, help="send a dead email again")
    sp.add_argument("id", type=int)

    br = sub.add_parser("breaker", parents=[common], help="the mass-deletion breaker")
    brsub = br.add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")
    sp = cmd(brsub, "release", _engine_cmd("breaker_release"), help="apply the held cancellations")
    sp.add_argument("calendar_id", type=int)
    sp = cmd(brsub, "restore", _engine_cmd("breaker_restore"), help="put the events back")
    sp.add_argument("calendar_id", type=int)

    cmd(sub, "status", _engine_cmd("status"), help="calendars, outbox and breaker at a glance")
    cmd(sub, "doctor", _engine_cmd("doctor"), help="check configuration and peers")
    sp = cmd(sub, "demo", _engine_cmd("demo"), help="run syncd on an embedded CalDAV server")
    sp.add_argument("--reset", action="store_true")
    sp.add_argument("--walkthrough", action="store_true")
    sp.add_argument("--dir", default="demo-data")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``syncd`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("config", None), ("json", False), ("verbose", 0)):
        if not hasattr(args, name):
            setattr(args, name, default)
    level = logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    rt = Runtime(args)
    try:
        code: int = args.fn(rt)
        return code
    except SyncdError as err:
        if args.json:
            print(json.dumps({"error": str(err)}))
        else:
            print(f"syncd: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
