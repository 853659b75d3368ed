"""Edit → email latency of a running daemon (issue 11, goal 7).

**Polling (CalDAV):** a real ``syncd run`` process (settle 0, poll interval 5 s) against
Radicale on loopback, mailing into an aiosmtpd sink. K times: the admin moves one event on
the server (a PUT with new DTSTART/DTEND, as tests/contract/human.py does) at a random
moment of the poll period, and the clock runs until the customer's "moved" email reaches
the sink. Goal: p95 ≤ poll interval + settle + 1 s.

**Push (Google):** the Google fake's ``events.watch`` channel posts to the daemon's web
server, which marks the calendar due and wakes the loop. The daemon runs in this process
(:class:`syncd.app.daemon.Daemon` in a thread, as tests/integration/test_daemon.py does):
Google wants an https address, which a loopback fake cannot offer a real process, so the
channel is opened here beforehand with ``force=True`` (as tests/integration/
test_google_push.py does); poll interval 60 s, so only push can bring a change in before
then. Goal: p95 ≤ settle + 2 s.

Run: ``PYTHONPATH=. .venv/bin/python -m bench.latency [--moves 20]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from bench.world import BenchWorld, on_caldav
from syncd.store.models import CalendarRow, MirrorRow, SessionRow
from tests.servers import Server, free_port, start_radicale
from tests.smtp_server import SmtpServer, start_smtp

POLL_S = 5.0


def scratch() -> Path:
    """A folder on tmpfs when the machine has one: Radicale fsyncs every write."""
    shm = Path("/dev/shm")
    return Path(tempfile.mkdtemp(dir=shm if shm.is_dir() else None, prefix="syncd-lat-"))


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(check: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return False


@dataclass
class DaemonWorld:
    """Radicale, an SMTP sink, a database with ``sessions`` mirrored, a ``syncd run`` process."""

    root: Path
    server: Server
    smtp: SmtpServer
    world: BenchWorld
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def hrefs(self) -> list[tuple[str, str]]:
        """(session id, remote href) of every mirrored session, by start."""
        with self.world.db.read() as orm:
            stmt = (
                select(SessionRow.id, MirrorRow.remote_id)
                .join(MirrorRow, MirrorRow.session_id == SessionRow.id)
                .order_by(SessionRow.start)
            )
            return [(str(a), str(b)) for a, b in orm.execute(stmt).all()]

    def wait_for_first_pass(self, timeout: float = 60) -> None:
        """Until the daemon has synced the calendar once and released it."""

        def released() -> bool:
            with self.world.db.read() as orm:
                row = orm.get_one(CalendarRow, self.world.cal_id)
                return row.next_sync_at is not None and row.lease_owner is None

        if not wait_until(lambda: released() or self.proc.poll() is not None, timeout, 0.05):
            raise RuntimeError(f"the daemon never synced:\n{self.log_tail()}")
        if self.proc.poll() is not None:
            raise RuntimeError(f"the daemon exited:\n{self.log_tail()}")

    def log_tail(self) -> str:
        """The end of the daemon's output (for a failure message)."""
        return (self.root / "daemon.log").read_text(errors="replace")[-3000:]


@contextmanager
def daemon_world(sessions: int, poll_s: float = POLL_S) -> Iterator[DaemonWorld]:
    """Everything :class:`DaemonWorld` holds, torn down (every process killed) on exit."""

    root = scratch()
    server = start_radicale(root / "radicale")
    smtp = start_smtp()
    proc: subprocess.Popen[bytes] | None = None
    world: BenchWorld | None = None
    try:
        world, backend, _url = on_caldav(root, server)
        world.seed(sessions)
        first = world.sync(backend)  # the first mirror, not measured
        assert first.error is None, first.error
        backend.close()
        config = root / "syncd.toml"
        config.write_text(
            f'[database]\nurl = "sqlite:///{root}/bench.db"\n'
            f'[sync]\nsettle = "0s"\npoll_interval = "{poll_s:g}s"\nstate_dir = "{root}"\n'
            f'[web]\npublic_url = "https://book.example.com"\nlisten = "127.0.0.1:{free_port()}"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\n'
        )
        with (root / "daemon.log").open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "syncd.app.cli", "--config", str(config), "run"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
            )
        dw = DaemonWorld(root, server, smtp, world, proc)
        dw.wait_for_first_pass()
        yield dw
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if world is not None:
            world.close()
        smtp.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def percentile(samples: list[float], p: float) -> float:
    """The ``p`` quantile (0..1) by linear interpolation."""
    ordered = sorted(samples)
    k = (len(ordered) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def caldav_latency(moves: int, poll_s: float = POLL_S) -> tuple[list[float], float]:
    """Seconds from each PUT to its email; and the daemon's CPU share of a core meanwhile."""
    from tests.contract.human import CalDAVHuman

    samples: list[float] = []
    rng = random.Random(11)
    with daemon_world(moves, poll_s) as dw:
        human = CalDAVHuman(dw.server)
        sessions = {sid: s for sid, s in _sessions(dw).items()}
        cpu0, wall0 = cpu_seconds(dw.pid), time.monotonic()
        for sid, href in dw.hrefs()[:moves]:
            time.sleep(rng.uniform(0, poll_s))  # a random moment of the poll period
            start, end = sessions[sid]
            before = len(dw.smtp.messages)
            t0 = time.monotonic()
            human.move(href, start + timedelta(minutes=30), end + timedelta(minutes=30), "UTC")
            if not wait_until(lambda b=before: len(dw.smtp.messages) > b, 4 * poll_s + 30):  # type: ignore[misc]
                raise RuntimeError(f"no email after a move:\n{dw.log_tail()}")
            samples.append(time.monotonic() - t0)
        share = (cpu_seconds(dw.pid) - cpu0) / (time.monotonic() - wall0)
    return samples, share


def _sessions(dw: DaemonWorld) -> dict[str, tuple[object, object]]:
    with dw.world.db.read() as orm:
        rows = orm.execute(select(SessionRow.id, SessionRow.start, SessionRow.end)).all()
    from datetime import UTC

    return {
        str(i): (s.replace(tzinfo=s.tzinfo or UTC), e.replace(tzinfo=e.tzinfo or UTC))
        for i, s, e in rows
    }


def push_latency(moves: int) -> list[float]:
    """Seconds from each Google move to its email, with push (daemon in this process)."""
    from syncd.app.commands import web_peers
    from syncd.app.daemon import Daemon
    from syncd.engine import channels as push
    from syncd.store.context import utcnow
    from syncd.web.server import start_in_thread
    from tests.fakes.google_calendar import FakeGoogleCalendar
    from tests.integration.google_world import ADMIN, CAL, GoogleWorld

    samples: list[float] = []
    rng = random.Random(7)
    root = scratch()
    smtp = start_smtp()
    try:
        with FakeGoogleCalendar(owner=ADMIN) as fake:
            w = GoogleWorld(root, fake)
            sids = [w.book(days=2 + i) for i in range(moves)]
            assert w.sync().error is None  # book() marked the booking emails sent
            cfg = w.cfg.model_copy(
                update={
                    "sync": w.cfg.sync.model_copy(update={"poll_interval": timedelta(seconds=60)}),
                    "smtp": w.cfg.smtp.model_copy(update={"port": smtp.port}),
                    "web": w.cfg.web.model_copy(update={"listen": "127.0.0.1:0"}),
                }
            )
            ctx = replace(w.ctx, clock=utcnow)
            holder: list[Daemon] = []
            web = start_in_thread(ctx, cfg, web_peers(cfg, lambda _c: holder[0].wake.set()))
            cfg = cfg.model_copy(update={"web": cfg.web.model_copy(update={"public_url": web.url})})
            w.cfg = cfg
            opened = push.ensure_channels(
                ctx, cfg, utcnow(), force=True, open_backend=lambda *a: w.backend()
            )
            assert opened == [w.cal_id], opened
            daemon = Daemon(ctx, cfg, start_web=lambda: web)
            holder.append(daemon)
            thread = threading.Thread(target=daemon.run, name="bench-daemon")
            thread.start()
            try:
                time.sleep(1.0)  # the first pass
                for sid in sids:
                    time.sleep(rng.uniform(0, 1.0))
                    s = w.session(sid)
                    new_start = s.start + timedelta(hours=1)
                    before = len(smtp.messages)
                    t0 = time.monotonic()
                    fake.human_move(
                        CAL,
                        w.remote_id(sid),
                        new_start.isoformat(),
                        (new_start + timedelta(hours=1)).isoformat(),
                        tz="UTC",
                    )
                    if not wait_until(lambda b=before: len(smtp.messages) > b, 90):  # type: ignore[misc]
                        raise RuntimeError("no email after a move on Google")
                    samples.append(time.monotonic() - t0)
            finally:
                daemon.stop()
                thread.join(60)
                web.stop()
            w.db.dispose()
    finally:
        smtp.stop()
        shutil.rmtree(root, ignore_errors=True)
    return samples


def _figures(samples: list[float]) -> str:
    return (
        f"p50 {statistics.median(samples):.2f} s, p95 {percentile(samples, 0.95):.2f} s, "
        f"max {max(samples):.2f} s ({len(samples)} moves)"
    )


def rows(moves: int = 20, with_push: bool = True) -> list[tuple[str, str]]:
    """Benchmark rows for the results table."""
    load = os.getloadavg()[0]
    samples, share = caldav_latency(moves)
    out = [
        (
            f"edit → email, CalDAV, poll {POLL_S:.0f} s, settle 0 (goal p95 ≤ {POLL_S + 1:.0f} s)",
            f"{_figures(samples)}; daemon CPU {100 * share:.1f} % of a core; load {load:.2f}",
        )
    ]
    if with_push:
        pushed = push_latency(moves)
        out.append(("edit → email, Google push, settle 0 (goal p95 ≤ 2 s)", _figures(pushed)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--no-push", action="store_true")
    args = parser.parse_args()
    for name, value in rows(args.moves, not args.no_push):
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
