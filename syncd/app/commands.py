"""CLI commands that reach beyond the booking core: calendars, sync, daemon, breaker, status."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from syncd.app.runtime import Runtime, emit
from syncd.errors import UsageError
from syncd.store import listing

if TYPE_CHECKING:
    from syncd.store.models import CalendarRow

# Start-up (issue 11): SQLAlchemy and the models are imported inside the commands that
# write or reach a peer; ``calendar list`` on a SQLite file reads it over sqlite3.


def _out(rt: Runtime, data: Any, lines: list[str]) -> None:
    emit(rt.args, data, lines)


def calendar_json(row: CalendarRow | listing.CalendarRecord, admin_email: str) -> dict[str, Any]:
    """A calendar without its secrets."""
    settings = {k: v for k, v in row.settings.items() if "password" not in k}
    return {
        "id": row.id,
        "admin": admin_email,
        "backend": row.backend,
        "settings": settings,
        "busy_only": row.busy_only,
        "last_sync_at": row.last_sync_at,
        "last_error": row.last_error,
        "breaker_tripped": row.breaker_tripped_at is not None,
        "paused_reason": row.paused_reason,
    }


def calendar_add(rt: Runtime) -> int:
    """``syncd calendar add EMAIL caldav|google|microsoft ...``."""
    a = rt.args
    chosen: list[str] = []
    if a.backend == "microsoft":
        from syncd.app import microsoft_setup

        return microsoft_setup.calendar_add(rt)
    if a.backend == "caldav":
        if not a.url:
            raise UsageError("A CalDAV calendar needs --url (the calendar collection's URL).")
        parsed = urlparse(a.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UsageError(
                f'--url "{a.url}" is not an http(s) URL (e.g. https://dav.example.com/).'
            )
        if a.password_file:
            try:
                open(a.password_file).close()
            except OSError as err:
                raise UsageError(f"--password-file {a.password_file}: {err.strerror}") from err
        settings = {
            "url": a.url,
            "username": a.username,
            "password_file": a.password_file,
            "password_credential": a.password_credential,
        }
        from syncd.app.caldav_setup import choose_calendar

        chosen = choose_calendar(rt, settings)  # the server's or account's URL: discovery
    else:
        if not a.calendar_id:
            raise UsageError("A Google calendar needs --calendar-id (e.g. primary).")
        settings = {
            "calendar_id": a.calendar_id,
            "credentials_file": a.credentials_file,
            "admin_email": a.email.strip().lower(),
        }
    from syncd.store.models import CalendarRow
    from syncd.store.repo import get_admin_row

    ctx = rt.ctx
    with ctx.db.write() as orm:
        admin = get_admin_row(orm, a.email)
        row = CalendarRow(
            admin_id=admin.id,
            backend=a.backend,
            settings=settings,
            busy_only=a.busy_only,
            cursor_version=1,
        )
        orm.add(row)
        orm.flush()
        data = calendar_json(row, admin.email)
    kind = "busy-only " if a.busy_only else ""
    _out(rt, data, [*chosen, f"Added {kind}{a.backend} calendar {data['id']} for {admin.email}."])
    return 0


def calendar_list(rt: Runtime) -> int:
    """``syncd calendar list``."""
    found = listing.read(rt.config.database.url, listing.calendars)
    if found is not None:
        data = [calendar_json(c, e) for c, e, _tz in found]
    else:
        from sqlalchemy import select

        from syncd.store.models import AdminRow, CalendarRow

        with rt.ctx.db.read() as orm:
            rows = orm.execute(
                select(CalendarRow, AdminRow.email).join(AdminRow).order_by(CalendarRow.id)
            ).all()
            data = [calendar_json(c, e) for c, e in rows]
    lines = [
        f"{d['id']:>3}  {d['backend']:<6} {d['admin']:<28} "
        f"{d['settings'].get('url') or d['settings'].get('calendar_id')}"
        + ("  [busy-only]" if d["busy_only"] else "")
        + ("  [BREAKER TRIPPED]" if d["breaker_tripped"] else "")
        + (f"  [paused: {d['paused_reason']}]" if d["paused_reason"] else "")
        + (f"  last error: {d['last_error']}" if d["last_error"] else "")
        for d in data
    ] or ["No calendars yet."]
    _out(rt, data, lines)
    return 0


def sync(rt: Runtime) -> int:
    """``syncd sync --once``: every calendar, then the outbox; exit 4 if a peer failed."""
    from syncd.app.daemon import run_cycle, worker_id

    summary = run_cycle(rt.ctx, rt.config, worker_id(), due_only=False)
    data = {
        "calendars": [
            {
                "id": r.calendar_id,
                "changed": r.changed,
                "removed": r.removed,
                "resynced": r.resynced,
                "actions": r.actions,
                "writes": r.writes,
                "write_failures": r.write_failures,
                "held": r.held,
                "tripped": r.tripped,
                "error": r.error,
            }
            for r in summary.reports
        ],
        "mail": getattr(summary.mail, "__dict__", None),
    }
    lines: list[str] = []
    for r in summary.reports:
        status = f"error: {r.error}" if r.error else "ok"
        lines.append(
            f"calendar {r.calendar_id}: {status}; {r.changed} changed, "
            f"{r.removed} removed, {r.writes} written"
        )
        lines += [f"  {x}" for x in r.actions]
        if r.tripped:
            lines.append(f"  BREAKER TRIPPED: {r.held} sessions held")
    if summary.mail is not None:
        m = summary.mail
        lines.append(
            f"outbox: {getattr(m, 'sent', 0)} sent, {getattr(m, 'retried', 0)} to "
            f"retry, {getattr(m, 'dead', 0)} dead"
        )
    _out(rt, data, lines)
    return 4 if summary.peer_failed else 0


def web_peers(cfg: Any, on_notify: Callable[[int], None] | None = None) -> Any:
    """The web side's calendar access and push readers (without a daemon: no one to wake)."""
    from syncd.app.backends import backend_factory, push_readers
    from syncd.web.push import PushWiring
    from syncd.web.server import Peers

    wiring = PushWiring(readers=push_readers(), on_notify=on_notify or (lambda _c: None))
    return Peers(push=wiring, open_backend=backend_factory(cfg))


def run(rt: Runtime) -> int:
    """``syncd run``: the daemon."""
    from syncd.app.daemon import Daemon

    ctx, cfg = rt.ctx, rt.config

    def start_web() -> Any:
        from syncd.web.server import start_in_thread

        return start_in_thread(ctx, cfg, web_peers(cfg, lambda _calendar_id: daemon.wake.set()))

    daemon = Daemon(ctx, cfg, start_web)
    signal.signal(signal.SIGTERM, daemon.stop)
    signal.signal(signal.SIGINT, daemon.stop)
    return daemon.run()


def web(rt: Runtime) -> int:
    """``syncd web``: the customer page and the API in the foreground."""
    from syncd.web.server import serve

    serve(rt.ctx, rt.config, web_peers(rt.config))
    return 0


def breaker_release(rt: Runtime) -> int:
    """Apply the cancellations the breaker holds (the admin really deleted them)."""
    from syncd.engine import breaker

    done = breaker.release(rt.ctx, rt.args.calendar_id)
    _out(
        rt,
        {"calendar": rt.args.calendar_id, "canceled": done},
        [f"Released: {len(done)} sessions canceled; their customers will be told."],
    )
    return 0


def breaker_restore(rt: Runtime) -> int:
    """Put the held events back into the calendar; no session changes, no customer email."""
    from syncd.app.daemon import sync_one
    from syncd.engine import breaker

    restored = breaker.restore(rt.ctx, rt.args.calendar_id)
    report = sync_one(rt.ctx, rt.config, rt.args.calendar_id)
    lines = [f"Restoring {len(restored)} events in calendar {rt.args.calendar_id}."]
    if report.error:
        lines.append(
            f"The calendar could not be written now ({report.error}); the next sync will retry."
        )
    _out(rt, {"calendar": rt.args.calendar_id, "restored": restored, "error": report.error}, lines)
    return 4 if report.error else 0


def status(rt: Runtime) -> int:
    """Calendars, breakers, pending gestures and the outbox at a glance (``syncd.app.status``)."""
    from syncd.app.status import status as show_status

    return show_status(rt)


def doctor(rt: Runtime) -> int:
    """Check the configuration, the database, each calendar and the SMTP server."""
    from syncd.app.backends import open_backend
    from syncd.app.daemon import make_mailer

    cfg = rt.config
    checks: list[dict[str, Any]] = [{"check": "config", "ok": True, "detail": cfg.source}]
    ok = True
    try:
        current = rt.ctx.db.is_current()
        checks.append(
            {
                "check": "database",
                "ok": current,
                "detail": "schema present" if current else "run 'syncd db upgrade'",
            }
        )
        ok &= current
    except Exception as err:  # noqa: BLE001 - doctor reports every failure as a line
        checks.append({"check": "database", "ok": False, "detail": str(err)})
        ok = False
    if ok:
        from sqlalchemy import select

        from syncd.store.models import CalendarRow

        with rt.ctx.db.read() as orm:
            cals = [(c.id, c.backend, dict(c.settings)) for c in orm.scalars(select(CalendarRow))]
        for cid, backend, settings in cals:
            if backend == "microsoft":  # the token, then the calendar
                from syncd.app.microsoft_setup import doctor_checks

                found = doctor_checks(cid, settings, cfg)
                checks += found
                ok &= all(c["ok"] for c in found)
                continue
            try:
                b = open_backend(backend, settings, cfg)
                b.changes(None, MappingProxyType({}))
                b.close()
                checks.append({"check": f"calendar {cid}", "ok": True, "detail": backend})
            except Exception as err:  # noqa: BLE001
                checks.append({"check": f"calendar {cid}", "ok": False, "detail": str(err)})
                ok = False
    try:
        mailer = make_mailer(cfg)
        try:
            mailer.check()
        finally:
            mailer.close()
        checks.append({"check": "smtp", "ok": True, "detail": f"{cfg.smtp.host}:{cfg.smtp.port}"})
    except Exception as err:  # noqa: BLE001
        checks.append({"check": "smtp", "ok": False, "detail": str(err)})
        ok = False
    _out(
        rt,
        checks,
        [f"{'ok  ' if c['ok'] else 'FAIL'}  {c['check']}: {c['detail']}" for c in checks],
    )
    return 0 if ok else 4


def auth_google(rt: Runtime) -> int:
    """``syncd auth google EMAIL``."""
    from syncd.app.google_setup import authorize

    code: int = authorize(rt)
    return code


def auth_microsoft(rt: Runtime) -> int:
    """``syncd auth microsoft EMAIL [--device-code]``."""
    from syncd.app.microsoft_setup import authorize

    code: int = authorize(rt)
    return code


def demo(rt: Runtime) -> int:
    """``syncd demo``."""
    from syncd.app.daemon import Daemon
    from syncd.demo.run import Wiring
    from syncd.demo.run import main as demo_main
    from syncd.web.server import start_in_thread

    wiring = Wiring(
        make_daemon=lambda ctx, cfg, start_web: Daemon(ctx, cfg, start_web=start_web),
        start_web=lambda ctx, cfg: start_in_thread(ctx, cfg, web_peers(cfg)),
    )
    return demo_main(rt.args, wiring)
