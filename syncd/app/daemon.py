"""The long-running process: calendars synced by a thread pool, the outbox drained, web served.

Several ``syncd run`` workers may share one PostgreSQL: calendars are claimed with leases
(``FOR UPDATE SKIP LOCKED``), a dead worker's leases expire, and the outbox is drained the
same way. SIGTERM stops in order: the units in hand finish, then the process exits.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select

from syncd.app.backends import backend_factory, open_backend, push_readers
from syncd.config import Config
from syncd.engine import channels as push
from syncd.engine.desired import GestureRules
from syncd.engine.planner import BreakerRules
from syncd.engine.runner import CycleReport, EngineSettings, sync_calendar
from syncd.errors import SyncdError
from syncd.ports import CalendarBackend
from syncd.store.context import Context
from syncd.store.models import CalendarRow

log = logging.getLogger("syncd.app.daemon")
PAUSED_RETRY = timedelta(minutes=10)


def engine_settings(cfg: Config) -> EngineSettings:
    """The engine's knobs from the configuration."""
    g = cfg.gestures
    return EngineSettings(
        settle=cfg.sync.settle,
        rules=GestureRules(
            tuple(g.cancel_keywords), tuple(g.reschedule_keywords), g.summary_template
        ),
        breaker=BreakerRules(cfg.breaker.min_sessions, cfg.breaker.fraction, cfg.breaker.on_empty),
    )


def worker_id() -> str:
    """host:pid, unique enough among workers sharing a database."""
    return f"{socket.gethostname()}:{os.getpid()}"


def claim_calendars(
    ctx: Context, owner: str, lease: timedelta, due_only: bool, limit: int = 50
) -> list[int]:
    """Take a lease on calendars nobody else holds (and, with ``due_only``, that are due)."""
    now = ctx.clock()
    with ctx.db.write() as orm:
        stmt = (
            select(CalendarRow)
            .where(
                CalendarRow.busy_only.is_(False),
                or_(
                    CalendarRow.lease_until.is_(None),
                    CalendarRow.lease_until < now,
                    CalendarRow.lease_owner == owner,
                ),
            )
            .order_by(CalendarRow.next_sync_at.nulls_first(), CalendarRow.id)
            .limit(limit)
        )
        if due_only:
            stmt = stmt.where(
                or_(CalendarRow.next_sync_at.is_(None), CalendarRow.next_sync_at <= now)
            )
        if ctx.db.lock_clause():
            stmt = stmt.with_for_update(skip_locked=True)
        rows = orm.scalars(stmt).all()
        for row in rows:
            row.lease_owner, row.lease_until = owner, now + lease
            row.next_sync_at = row.lease_until  # a push notification moves it back to now
        return [r.id for r in rows]


def release_calendar(ctx: Context, calendar_id: int, owner: str, next_in: timedelta) -> None:
    """Give the lease back and schedule the next poll, with ±10 % jitter.

    A calendar paused because its credentials were refused is retried only every
    ten minutes; the first cycle that gets through un-pauses it.
    """
    now = ctx.clock()
    with ctx.db.write() as orm:
        row = orm.get(CalendarRow, calendar_id)
        if row is not None and row.paused_reason is not None:
            next_in = max(next_in, PAUSED_RETRY)
        jitter = next_in.total_seconds() * random.uniform(0.9, 1.1)
        if row is not None and row.lease_owner == owner:
            notified = (
                row.next_sync_at is not None
                and row.lease_until is not None
                and (row.next_sync_at < row.lease_until)
            )
            row.lease_owner, row.lease_until = None, None
            if not notified:  # else: it changed during this sync, so sync it again at once
                row.next_sync_at = now + timedelta(seconds=jitter)


@dataclass
class CycleSummary:
    """One pass over the calendars and the outbox."""

    reports: list[CycleReport] = field(default_factory=list)
    mail: Any = None

    @property
    def peer_failed(self) -> bool:
        """True when a calendar (or the SMTP server) could not be reached."""
        mail_failed = bool(getattr(self.mail, "retried", 0)) and not getattr(self.mail, "sent", 0)
        return any(r.error for r in self.reports) or mail_failed


class BackendPool:
    """Backends kept open across cycles, one per calendar (connections, OAuth tokens).

    A calendar is synced by one thread at a time (its lease), so a backend is never used
    by two threads at once. A changed calendar row (new URL, new credentials file) gets
    a fresh backend; a backend whose cycle failed is closed and opened anew next time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[int, tuple[str, CalendarBackend]] = {}

    def take(
        self, calendar_id: int, backend: str, settings: dict[str, Any], cfg: Config
    ) -> CalendarBackend:
        """The open backend of the calendar, or a new one."""
        key = json.dumps([backend, settings], sort_keys=True)
        with self._lock:
            held = self._open.pop(calendar_id, None)
        if held is not None and held[0] == key:
            return held[1]
        if held is not None:
            held[1].close()
        return open_backend(backend, settings, cfg)

    def give_back(
        self,
        calendar_id: int,
        backend: str,
        settings: dict[str, Any],
        instance: CalendarBackend,
        healthy: bool,
    ) -> None:
        """Keep ``instance`` for the next cycle (or close it after a failure)."""
        if not healthy:
            instance.close()
            return
        key = json.dumps([backend, settings], sort_keys=True)
        with self._lock:
            old = self._open.pop(calendar_id, None)
            self._open[calendar_id] = (key, instance)
        if old is not None and old[1] is not instance:
            old[1].close()

    def close(self) -> None:
        """Close every backend (on shutdown)."""
        with self._lock:
            held, self._open = list(self._open.values()), {}
        for _, instance in held:
            instance.close()


def sync_one(
    ctx: Context, cfg: Config, calendar_id: int, pool: BackendPool | None = None
) -> CycleReport:
    """Open (or reuse) the calendar's backend and run one cycle."""
    with ctx.db.read() as orm:
        row = orm.get_one(CalendarRow, calendar_id)
        backend_name, settings = row.backend, dict(row.settings)
    try:
        backend = (
            pool.take(calendar_id, backend_name, settings, cfg)
            if pool is not None
            else open_backend(backend_name, settings, cfg)
        )
    except SyncdError as err:
        return CycleReport(calendar_id, error=str(err))
    report: CycleReport | None = None
    try:
        report = sync_calendar(ctx, engine_settings(cfg), calendar_id, backend)
        return report
    finally:
        healthy = report is not None and report.error is None
        if pool is not None:
            pool.give_back(calendar_id, backend_name, settings, backend, healthy)
        else:
            backend.close()


def make_mailer(cfg: Config) -> Any:
    """The SMTP mailer of the configuration (composition root)."""
    from adapters.smtp import SmtpMailer

    s = cfg.smtp
    return SmtpMailer(
        s.host, s.port, s.security, s.username, s.password(), s.timeout.total_seconds()
    )


def drain_outbox(ctx: Context, cfg: Config, owner: str) -> Any:
    """Send what is due in the outbox."""
    from syncd.notify import sender

    mailer = make_mailer(cfg)
    try:
        return sender.drain(ctx, mailer, cfg.smtp, owner)
    finally:
        mailer.close()


def run_cycle(
    ctx: Context,
    cfg: Config,
    owner: str,
    due_only: bool,
    pool: ThreadPoolExecutor | None = None,
    backends: BackendPool | None = None,
) -> CycleSummary:
    """Every claimable calendar once, then the outbox."""
    summary = CycleSummary()
    ids = claim_calendars(ctx, owner, cfg.sync.lease, due_only)

    def one(cid: int) -> CycleReport:
        try:
            return sync_one(ctx, cfg, cid, backends)
        finally:
            release_calendar(ctx, cid, owner, cfg.sync.poll_interval)
            sd_notify("WATCHDOG=1")  # progress, even in a long cycle of slow servers

    if pool is None:
        summary.reports = [one(cid) for cid in ids]
    else:
        summary.reports = list(pool.map(one, ids))
    from syncd.notify.expiry import notify_expired_links

    notify_expired_links(ctx)
    summary.mail = drain_outbox(ctx, cfg, owner)
    return summary


def sd_notify(message: str) -> None:
    """Tell systemd (Type=notify) how we are; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)  # never let a slow reader stall the daemon
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError as err:
            log.debug("sd_notify failed: %s", err)


class Daemon:
    """``syncd run``: poll loop, outbox, and the web server in a thread."""

    def __init__(
        self, ctx: Context, cfg: Config, start_web: Callable[[], Any] | None = None
    ) -> None:
        self.ctx, self.cfg = ctx, cfg
        self.owner = worker_id()
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self.start_web = start_web
        self.last_cycle: datetime | None = None
        self.backends = BackendPool()

    def stop(self, *_: Any) -> None:
        """Finish the unit in hand, then exit."""
        log.info("stopping: finishing the work in hand")
        self.stopping.set()
        self.wake.set()

    def run(self) -> int:
        """Loop until stopped; returns the exit code."""
        web = self.start_web() if self.start_web else None
        sd_notify("READY=1")
        log.info("syncd running as %s", self.owner)
        tick = min(5.0, max(0.2, self.cfg.sync.poll_interval.total_seconds() / 4))
        with ThreadPoolExecutor(self.cfg.sync.workers, thread_name_prefix="sync") as pool:
            while not self.stopping.is_set():
                try:
                    push.ensure_channels(
                        self.ctx,
                        self.cfg,
                        self.ctx.clock(),
                        open_backend=backend_factory(self.cfg),
                        kinds=tuple(push_readers()),
                        worker=self.owner,
                    )
                except SyncdError as err:
                    log.warning("push channels: %s", err)
                try:
                    summary = run_cycle(self.ctx, self.cfg, self.owner, True, pool, self.backends)
                    self.last_cycle = self.ctx.clock()
                    for r in summary.reports:
                        for a in r.actions:
                            log.info("calendar %s: %s", r.calendar_id, a)
                        if r.error:
                            log.warning("calendar %s: cycle failed: %s", r.calendar_id, r.error)
                except SyncdError as err:
                    log.error("cycle failed: %s", err)
                sd_notify("WATCHDOG=1")
                self.wake.wait(tick)
                self.wake.clear()
        sd_notify("STOPPING=1")
        try:
            push.stop_channels(self.ctx, open_backend=backend_factory(self.cfg), worker=self.owner)
        except SyncdError as err:
            log.warning("push channels not stopped: %s", err)
        self.backends.close()
        if web is not None and hasattr(web, "stop"):
            web.stop()
        return 0
