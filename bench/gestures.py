"""K admin moves in a calendar of N sessions on Radicale: syncd vs the bare protocol vs vdirsyncer.

All three read the same changes from the same Radicale (storage on tmpfs where there is
one) in the same run:

- **bare**: what any client must do to learn the changes, with httpx on one kept
  connection: one ``sync-collection`` REPORT from the token taken before the moves, then one
  ``calendar-multiget`` of the changed hrefs;
- **syncd**: one warm cycle (detect → plan → commit the reschedules with their outbox rows
  → write back) and the outbox drained as the daemon drains it, into an aiosmtpd sink (SMTP
  on loopback); the sink must have received every email before the time stops;
- **vdirsyncer**: ``vdirsyncer sync`` of the same calendar into a local folder, as a process
  (its start-up included; the idle process cost is reported beside it);
- **bare SMTP**: the very bytes syncd handed over, sent again by ``smtplib`` over one
  connection to the same sink (MAIL, RCPT, DATA each): what handing the emails to SMTP
  costs any client.

Goal (issue 11): syncd within 3x bare + SMTP, i.e. ``cycle + outbox <= 3 * bare + bare
SMTP``. The CPU seconds of syncd's thread are reported beside its wall time (the machine
may be shared). The SMTP sink (bench/smtp_sink.py) and Radicale run in processes of their
own, as real servers do, so neither their CPU nor their share of the GIL is in syncd's
figures. One booking through
``services.book`` at 1,000, 3,000 and 20,000 sessions (:func:`booking_rows`) shows that a
booking costs the sessions overlapping it, not the admin's history.

``python -m bench.gestures --profile OUT [--sessions N] [--moves K]`` writes a cProfile of
the cycle that applies the moves plus the outbox drain to OUT (``python -m pstats OUT``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.smtp_sink import SinkProcess
from bench.world import ADMIN, BenchWorld, on_caldav
from syncd.app.daemon import drain_outbox
from syncd.domain.model import Actor, Customer
from syncd.ports import CalendarBackend
from syncd.services import booking as services
from tests.contract.human import CalDAVHuman
from tests.fakes.memory_backend import MemoryBackend, MemoryCalendar
from tests.servers import Server, start_radicale

SYNC_BODY = """<?xml version="1.0" encoding="utf-8"?>
<D:sync-collection xmlns:D="DAV:"><D:sync-token>{token}</D:sync-token><D:sync-level>1</D:sync-level>
<D:prop><D:getetag/></D:prop></D:sync-collection>"""
MULTIGET = """<?xml version="1.0" encoding="utf-8"?>
<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
<D:prop><D:getetag/><C:calendar-data/></D:prop>{hrefs}</C:calendar-multiget>"""


def _scratch() -> str:
    """A folder on tmpfs when the machine has one: Radicale fsyncs every write."""
    shm = Path("/dev/shm")
    return tempfile.mkdtemp(dir=shm if shm.is_dir() else None, prefix="syncd-bench-")


def _token(client: httpx.Client, url: str) -> str:
    import re

    body = SYNC_BODY.format(token="")
    reply = client.request("REPORT", url, content=body, headers={"Depth": "1"})
    match = re.search(r"<[^>]*sync-token>([^<]+)<", reply.text)
    assert match, reply.text[:300]
    return match.group(1)


def bare_read(client: httpx.Client, url: str, token: str) -> int:
    """REPORT sync-collection + calendar-multiget of what changed; the number of events read."""
    import re

    reply = client.request(
        "REPORT", url, content=SYNC_BODY.format(token=token), headers={"Depth": "1"}
    )
    hrefs = re.findall(r"<[^>]*href>([^<]+\.ics)<", reply.text)
    body = MULTIGET.format(hrefs="".join(f"<D:href>{h}</D:href>" for h in hrefs))
    got = client.request("REPORT", url, content=body, headers={"Depth": "1"})
    return got.text.count("BEGIN:VEVENT")


def _vdirsyncer_config(root: Path, server: Server, url: str) -> Path:
    (root / "status").mkdir(parents=True, exist_ok=True)
    (root / "local").mkdir(exist_ok=True)
    cfg = root / "config"
    cfg.write_text(
        f'[general]\nstatus_path = "{root}/status/"\n\n'
        '[pair bench]\na = "bench_local"\nb = "bench_remote"\ncollections = null\n'
        'conflict_resolution = "b wins"\n\n'
        f'[storage bench_local]\ntype = "filesystem"\npath = "{root}/local/"\n'
        'fileext = ".ics"\n\n'
        f'[storage bench_remote]\ntype = "caldav"\nurl = "{url}"\n'
        f'username = "{server.username}"\npassword = "{server.password}"\n'
    )
    return cfg


def _vdirsyncer(cfg: Path) -> float:
    exe = shutil.which("vdirsyncer", path=str(Path(sys.executable).parent)) or "vdirsyncer"
    env = {**os.environ, "VDIRSYNCER_CONFIG": str(cfg)}
    t0 = time.perf_counter()
    subprocess.run([exe, "sync"], check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def run(
    sessions: int, moves: int, with_vdirsyncer: bool = True, profile: str | None = None
) -> dict[str, float]:
    """Seconds of each contender for ``moves`` moves in a calendar of ``sessions``.

    ``profile``: a path to write a cProfile of syncd's cycle and drain to.
    """
    root = Path(_scratch())
    server = start_radicale(root / "radicale")
    smtp = SinkProcess(root / "sink")
    try:
        world, backend, url = on_caldav(root, server)
        world.cfg = world.cfg.model_copy(
            update={"smtp": world.cfg.smtp.model_copy(update={"port": smtp.port})}
        )
        world.seed(sessions)
        t0 = time.perf_counter()
        first = world.sync(backend)
        mirror_s = time.perf_counter() - t0
        assert first.error is None, first.error
        drain_outbox(world.ctx, world.cfg, "bench")  # nothing pending: seeded as sent
        world.sync(backend)
        cfg = _vdirsyncer_config(root / "vdir", server, url)
        if with_vdirsyncer:
            subprocess.run(
                [shutil.which("vdirsyncer", path=str(Path(sys.executable).parent)) or "vdirsyncer",
                 "discover"], check=True, capture_output=True, input=b"y\n",
                env={**os.environ, "VDIRSYNCER_CONFIG": str(cfg)},
            )  # fmt: skip
            _vdirsyncer(cfg)  # the initial download, not measured
            vdir_idle = _vdirsyncer(cfg)
        auth = (server.username, server.password)
        with httpx.Client(auth=auth, timeout=30) as client:
            token = _token(client, url)
            human = CalDAVHuman(server)
            listed = services.list_sessions(world.ctx, ADMIN)
            for s in listed[:moves]:
                human.move(
                    _href(world, s.id),
                    s.start + timedelta(minutes=30),
                    s.end + timedelta(minutes=30),
                    "Europe/Berlin",
                )
            t0 = time.perf_counter()
            read = bare_read(client, url, token)
            bare_s = time.perf_counter() - t0
            assert read == moves, (read, moves)
        result = {"mirror": mirror_s, "bare": bare_s}
        result |= _timed_moves(world, backend, smtp, moves, profile)
        result["smtp_bare"] = bare_smtp(smtp, smtp.raw_messages()[-moves:])
        if with_vdirsyncer:
            result["vdirsyncer"] = _vdirsyncer(cfg)
            result["vdirsyncer_idle"] = vdir_idle
        backend.close()
        world.close()
        return result
    finally:
        smtp.stop()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _timed_moves(
    world: BenchWorld, backend: CalendarBackend, smtp: SinkProcess, moves: int, profile: str | None
) -> dict[str, float]:
    """Wall and CPU seconds of the cycle that applies the moves and of the outbox drain
    that hands their emails to the sink (all of them, or it fails); optionally profiled."""
    before = smtp.count
    gc.collect()  # a full collection now rather than one at a random point of the timed block
    prof = cProfile.Profile(time.thread_time) if profile else None
    if prof is not None:
        prof.enable()
    t0, c0 = time.perf_counter(), time.thread_time()
    report = world.sync(backend)
    t1, c1 = time.perf_counter(), time.thread_time()
    mail = drain_outbox(world.ctx, world.cfg, "bench")
    smtp.wait_for(before + moves)  # handed over is not enough: the server has them all
    t2, c2 = time.perf_counter(), time.thread_time()
    if prof is not None:
        prof.disable()
        prof.dump_stats(str(profile))
    assert len(report.actions) == moves, report
    assert getattr(mail, "sent", moves) == moves, mail
    assert smtp.count - before == moves, (smtp.count, before)
    return {"cycle": t1 - t0, "mail": t2 - t1, "cycle_cpu": c1 - c0, "mail_cpu": c2 - c1}


def bare_smtp(sink: SinkProcess, raws: list[bytes]) -> float:
    """Seconds to hand ``raws`` to the sink again over one connection (smtplib)."""
    import re
    import smtplib

    envelopes = []
    for raw in raws:  # the recipients, read before the clock starts
        to = re.search(rb"(?mi)^To:.*<([^>]+)>", raw) or re.search(rb"(?mi)^To: *(\S+)", raw)
        assert to, raw[:300]
        envelopes.append((to.group(1).decode(), raw))
    before = sink.count
    t0 = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", sink.port, timeout=30) as client:
        for rcpt, raw in envelopes:
            client.sendmail("bench@example.com", [rcpt], raw)
    sink.wait_for(before + len(raws))
    return time.perf_counter() - t0


def _href(world: BenchWorld, sid: str) -> str:
    from sqlalchemy import select

    from syncd.store.models import MirrorRow

    with world.db.read() as orm:
        return str(
            orm.scalars(select(MirrorRow.remote_id).where(MirrorRow.session_id == sid)).one()
        )


def rows(sizes: tuple[int, ...] = (1000, 3000), moves: int = 100) -> list[tuple[str, str]]:
    """Benchmark rows for the results table."""
    out = []
    for n in sizes:
        r = run(n, moves)
        ratio = (r["cycle"] + r["mail"]) / r["bare"]
        budget = 3 * r["bare"] + r["smtp_bare"]
        vd = (
            f"; vdirsyncer sync {r['vdirsyncer']:.2f} s (idle {r['vdirsyncer_idle']:.2f} s)"
            if "vdirsyncer" in r
            else ""
        )
        out.append(
            (
                f"{moves} admin moves, {n:,} sessions (Radicale)",
                f"syncd cycle {r['cycle']:.2f} s + outbox {r['mail']:.2f} s "
                f"(CPU {r['cycle_cpu']:.2f} + {r['mail_cpu']:.2f} s); "
                f"bare REPORT+multiget {r['bare']:.3f} s ({ratio:.1f}x); bare SMTP "
                f"{r['smtp_bare']:.2f} s; goal 3x bare + SMTP = {budget:.2f} s: "
                f"{(r['cycle'] + r['mail']) / budget:.2f} of it{vd}",
            )
        )
        out.append((f"first mirror of {n:,} events (Radicale)", f"{r['mirror']:.1f} s"))
    out += memory_rows(sizes, moves)
    # The booking sizes of the issue, or the tiny ones of ``--quick``.
    out += booking_rows(sizes if max(sizes) < 1000 else (1000, 3000, 20000))
    return out


def booking_ms(sessions: int, repeat: int = 20) -> tuple[float, float]:
    """(wall, CPU) milliseconds of one admin booking among ``sessions`` (medians)."""
    root = Path(_scratch())
    try:
        world = BenchWorld(root, {})
        world.seed(sessions)
        far = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=4000)
        walls, cpus = [], []
        for i in range(repeat):
            start = far + timedelta(hours=i)
            t0, c0 = time.perf_counter(), time.thread_time()
            services.book(
                world.ctx,
                ADMIN,
                Customer(f"x{i}@example.org", f"X{i}", "UTC"),
                start,
                start + timedelta(hours=1),
                actor=Actor.ADMIN,
            )
            walls.append((time.perf_counter() - t0) * 1000)
            cpus.append((time.thread_time() - c0) * 1000)
        world.close()
        return statistics.median(walls), statistics.median(cpus)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def booking_rows(sizes: tuple[int, ...] = (1000, 3000, 20000)) -> list[tuple[str, str]]:
    """One booking through the service at each calendar size."""
    out = []
    for n in sizes:
        wall, cpu = booking_ms(n)
        out.append((f"one booking, {n:,} sessions (SQLite)", f"{wall:.1f} ms (CPU {cpu:.1f} ms)"))
    return out


def memory_run(sessions: int, moves: int, profile: str | None = None) -> dict[str, float]:
    """CPU seconds of syncd alone: the moves on the in-memory backend, mail into a sink.

    No server's time is in it, so it is the figure to profile and compare on a shared
    machine.
    """
    root = Path(_scratch())
    smtp = SinkProcess(root / "sink")
    try:
        world = BenchWorld(root, {}, backend="memory")
        world.cfg = world.cfg.model_copy(
            update={"smtp": world.cfg.smtp.model_copy(update={"port": smtp.port})}
        )
        world.seed(sessions)
        cal = MemoryCalendar()
        backend = MemoryBackend(cal)
        assert world.sync(backend).error is None
        world.sync(backend)
        drain_outbox(world.ctx, world.cfg, "bench")  # warm: the sender's imports
        for s in services.list_sessions(world.ctx, ADMIN)[:moves]:
            cal.human_set(
                _href(world, s.id),
                start=s.start + timedelta(minutes=30),
                end=s.end + timedelta(minutes=30),
            )
        result = _timed_moves(world, backend, smtp, moves, profile)
        world.close()
        return result
    finally:
        smtp.stop()
        shutil.rmtree(root, ignore_errors=True)


def memory_rows(sizes: tuple[int, ...] = (1000, 3000), moves: int = 100) -> list[tuple[str, str]]:
    """syncd's own CPU for the moves, without any server (in-memory backend)."""
    out = []
    for n in sizes:
        r = memory_run(n, moves)
        out.append(
            (
                f"{moves} admin moves, {n:,} sessions (in-memory backend, syncd CPU)",
                f"cycle {r['cycle_cpu']:.2f} s + outbox {r['mail_cpu']:.2f} s",
            )
        )
    return out


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gestures")
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--moves", type=int, default=100)
    parser.add_argument("--profile", default=None, help="write a cProfile of cycle + drain here")
    parser.add_argument("--no-vdirsyncer", action="store_true")
    parser.add_argument("--memory", action="store_true", help="the in-memory backend, no server")
    args = parser.parse_args(argv)
    if args.memory:
        r = memory_run(args.sessions, args.moves, args.profile)
    else:
        r = run(args.sessions, args.moves, not args.no_vdirsyncer, args.profile)
    for key, value in r.items():
        print(f"{key}: {value:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
