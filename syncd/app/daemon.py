"""The long-running process: calendars synced by a thread pool, the outbox drained, web served.

Several ``syncd run`` workers may share one PostgreSQL: calendars are claimed with leases
(``FOR UPDATE SKIP LOCKED``), and the outbox is drained the same way. A claim's lease is
short (:data:`HEARTBEAT_LEASE`) and renewed by a heartbeat while the worker holds the
calendar, so a worker killed with ``kill -9`` leaves its calendars for at most that long;
every commit checks that its worker still holds the lease (fencing), and every calendar's
cycle has a time budget below the lease and the systemd watchdog. One calendar never
stops the rest: whatever breaks inside its cycle is recorded as its error, and the other
calendars and the outbox go on. SIGTERM stops in order: the units in hand finish, then
the process exits.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from syncd.app.backends import backend_factory, open_backend, push_readers
from syncd.app.knobs import claim_lease, cycle_budget, engine_settings, worker_id
from syncd.app.leases import (
    HEARTBEAT_LEASE,
    PAUSED_RETRY,
    Claimed,
    Heartbeat,
    claim_batch,
    claim_calendars,
    release_calendar,
    release_calendars,
    renew_leases,
)
from syncd.app.mailing import drain_outbox, make_mailer, seconds_until_due
from syncd.config import Config
from syncd.engine import channels as push
from syncd.engine.runner import (
    CycleReport,
    Fence,
    monotonic_deadline,
    sync_calendar,
)
from syncd.errors import SyncdError
from syncd.ports import CalendarBackend
from syncd.store.context import Context
from syncd.store.models import CalendarRow

log = logging.getLogger("syncd.app.daemon")
__all__ = [
    "HEARTBEAT_LEASE",
    "claim_lease",
    "cycle_budget",
    "engine_settings",
    "worker_id",
    "drain_outbox",
    "make_mailer",
    "PAUSED_RETRY",
    "Heartbeat",
    "claim_calendars",
    "release_calendar",
    "release_calendars",
    "renew_leases",
]


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
    ctx: Context,
    cfg: Config,
    calendar_id: int,
    pool: BackendPool | None = None,
    owner: str | None = None,
    claimed: Claimed | None = None,
) -> CycleReport:
    """Open (or reuse) the calendar's backend and run one cycle; never raises.

    With ``owner``, the cycle commits only while that worker holds the calendar's lease,
    within :func:`cycle_budget`. ``claimed`` (from the claim) spares reading the
    calendar's backend and settings again.
    """
    try:
        if claimed is not None:
            backend_name, settings = claimed.backend, claimed.settings
        else:
            with ctx.db.read() as orm:
                row = orm.get_one(CalendarRow, calendar_id)
                backend_name, settings = row.backend, dict(row.settings)
        backend = (
            pool.take(calendar_id, backend_name, settings, cfg)
            if pool is not None
            else open_backend(backend_name, settings, cfg)
        )
    except Exception as err:  # a bad setting on one calendar is that calendar's error
        message = str(err) if isinstance(err, SyncdError) else f"{type(err).__name__}: {err}"
        _record_calendar_error(ctx, calendar_id, message)
        return CycleReport(calendar_id, error=message)
    report: CycleReport | None = None
    fence = Fence(owner, monotonic_deadline(cycle_budget(cfg))) if owner else None
    try:
        report = sync_calendar(ctx, engine_settings(cfg), calendar_id, backend, fence)
        return report
    finally:
        healthy = report is not None and report.error is None
        if pool is not None:
            pool.give_back(calendar_id, backend_name, settings, backend, healthy)
        else:
            backend.close()


def _record_calendar_error(ctx: Context, calendar_id: int, message: str) -> None:
    log.error("calendar %s: %s", calendar_id, message)
    try:
        with ctx.db.write() as orm:
            row = orm.get(CalendarRow, calendar_id)
            if row is not None:
                row.last_error = message[:2000]
    except Exception:
        log.exception("calendar %s: could not record its error", calendar_id)


def run_cycle(
    ctx: Context,
    cfg: Config,
    owner: str,
    due_only: bool,
    pool: ThreadPoolExecutor | None = None,
    backends: BackendPool | None = None,
    stopping: threading.Event | None = None,
) -> CycleSummary:
    """Every claimable calendar once, then the outbox.

    Calendars are claimed a batch at a time (each batch after the last id of the one
    before) while the ones in hand sync on ``pool`` (a pool of ``[sync] workers`` threads
    for this call when none is given), and released a batch at a time, until a claim
    comes back empty or ``stopping`` is set; so one pass reaches every calendar however
    many there are, with few claim and release transactions.
    """
    summary = CycleSummary()
    lease = claim_lease(cfg)
    workers = max(1, cfg.sync.workers)
    batch = max(8, 2 * workers)
    reports: dict[int, CycleReport] = {}
    order: list[int] = []
    with Heartbeat(ctx, owner, lease) as heartbeat, ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(ThreadPoolExecutor(workers, thread_name_prefix="sync"))

        def one(claimed: Claimed) -> CycleReport:
            cid = claimed.id
            try:
                return sync_one(ctx, cfg, cid, backends, owner, claimed)
            except Exception as err:  # never let one calendar stop the others
                log.exception("calendar %s: cycle broke", cid)
                return CycleReport(cid, error=f"{type(err).__name__}: {err}")
            finally:
                sd_notify("WATCHDOG=1")  # progress, even in a long cycle of slow servers

        def release(ids: list[int]) -> None:
            try:
                release_calendars(ctx, ids, owner, cfg.sync.poll_interval)
            except Exception:
                log.exception("calendars %s: leases not released (they expire)", ids)
            for cid in ids:
                heartbeat.drop(cid)
            ids.clear()

        running: dict[Future[CycleReport], int] = {}
        finished: list[int] = []
        after, exhausted = 0, False
        try:
            while True:
                if stopping is not None and stopping.is_set():
                    exhausted = True
                if not exhausted and len(running) < batch:
                    release(finished)
                    got = claim_batch(ctx, owner, lease, due_only, limit=batch, after=after)
                    ids = [c.id for c in got]
                    heartbeat.hold(ids)
                    order += ids
                    after = ids[-1] if ids else after
                    exhausted = not ids
                    for claimed in got:
                        running[pool.submit(one, claimed)] = claimed.id
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    cid = running.pop(future)
                    reports[cid] = future.result()
                    finished.append(cid)
                if len(finished) >= max(workers, 8):
                    release(finished)
        finally:
            for future, cid in running.items():  # a claim failed: finish what is in hand
                reports[cid] = future.result()
                finished.append(cid)
            release(finished)
    summary.reports = [reports[cid] for cid in order]
    from syncd.notify.expiry import notify_expired_links

    try:
        notify_expired_links(ctx)
    except Exception:
        log.exception("expired-link notices failed; the outbox goes on")
    try:
        summary.mail = drain_outbox(ctx, cfg, owner)
    except Exception:  # logged; the next cycle drains again
        log.exception("outbox drain failed")
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
        """Loop until stopped; returns the exit code. Sleeps until a calendar or an email is
        due (at most a tick); a tick with nothing due only reads (issue 11, goals 7, 5b)."""
        web = self.start_web() if self.start_web else None
        sd_notify("READY=1")
        log.info("syncd running as %s", self.owner)
        tick = min(5.0, max(0.2, self.cfg.sync.poll_interval.total_seconds() / 4))
        with ThreadPoolExecutor(self.cfg.sync.workers, thread_name_prefix="sync") as pool:
            due, worked = True, False  # a first pass at start
            while not self.stopping.is_set():
                if due:
                    worked = self._pass(pool)
                sd_notify("WATCHDOG=1")
                pause = seconds_until_due(self.ctx, self.owner, tick) if worked or not due else tick
                woken = pause > 0 and self.wake.wait(pause)
                self.wake.clear()
                due = woken or pause < tick
        sd_notify("STOPPING=1")
        try:
            push.stop_channels(self.ctx, open_backend=backend_factory(self.cfg), worker=self.owner)
        except SyncdError as err:
            log.warning("push channels not stopped: %s", err)
        self.backends.close()
        if web is not None and hasattr(web, "stop"):
            web.stop()
        return 0

    def _pass(self, pool: ThreadPoolExecutor) -> bool:
        """Channels, one pass over the due calendars and the outbox; False if it did nothing."""
        try:
            push.ensure_channels(
                self.ctx,
                self.cfg,
                self.ctx.clock(),
                open_backend=backend_factory(self.cfg),
                kinds=tuple(push_readers()),
                worker=self.owner,
            )
        except Exception as err:
            log.warning("push channels: %s", err)
        try:
            summary = run_cycle(
                self.ctx, self.cfg, self.owner, True, pool, self.backends, self.stopping
            )
            self.last_cycle = self.ctx.clock()
            for r in summary.reports:
                for a in r.actions:
                    log.info("calendar %s: %s", r.calendar_id, a)
                if r.error:
                    log.warning("calendar %s: cycle failed: %s", r.calendar_id, r.error)
            return bool(summary.reports) or bool(getattr(summary.mail, "sent", 0))
        except SyncdError as err:
            log.error("cycle failed: %s", err)
        except Exception:  # never exit into systemd's restart loop over one bug
            log.exception("cycle failed")
        return False
