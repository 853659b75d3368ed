"""K admin moves in a calendar of N sessions on Radicale: syncd vs the bare protocol vs vdirsyncer.

All three read the same changes from the same Radicale (storage on tmpfs where there is
one) in the same run:

- **bare**: what any client must do to learn the changes, with httpx on one kept
  connection: one ``sync-collection`` REPORT from the token taken before the moves, then one
  ``calendar-multiget`` of the changed hrefs;
- **syncd**: one warm cycle (detect → plan → commit the reschedules with their outbox rows
  → write back) and the outbox drained into an aiosmtpd sink (SMTP on loopback);
- **vdirsyncer**: ``vdirsyncer sync`` of the same calendar into a local folder, as a process
  (its start-up included; the idle process cost is reported beside it).

Goal (issue 11): syncd within 3x bare + SMTP.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

from adapters.caldav.backend import CalDAVBackend
from bench.world import ADMIN, BenchWorld
from syncd.app.daemon import drain_outbox
from syncd.services import booking as services
from tests.contract.human import CalDAVHuman
from tests.servers import Server, start_radicale
from tests.smtp_server import start_smtp

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


def run(sessions: int, moves: int, with_vdirsyncer: bool = True) -> dict[str, float]:
    """Seconds of each contender for ``moves`` moves in a calendar of ``sessions``."""
    root = Path(_scratch())
    server = start_radicale(root / "radicale")
    smtp = start_smtp()
    try:
        url = server.make_calendar()
        (root / "pw").write_text(server.password)
        world = BenchWorld(
            root,
            {"url": url, "username": server.username, "password_file": str(root / "pw")},
        )
        world.cfg = world.cfg.model_copy(
            update={"smtp": world.cfg.smtp.model_copy(update={"port": smtp.port})}
        )
        world.seed(sessions)
        backend = CalDAVBackend(url, server.username, server.password, timeout=30)
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
        t0 = time.perf_counter()
        report = world.sync(backend)
        cycle_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        mail = drain_outbox(world.ctx, world.cfg, "bench")
        mail_s = time.perf_counter() - t0
        assert len(report.actions) == moves, report
        assert getattr(mail, "sent", moves) == moves, mail
        result = {
            "mirror": mirror_s,
            "bare": bare_s,
            "cycle": cycle_s,
            "mail": mail_s,
        }
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
        vd = (
            f"; vdirsyncer sync {r['vdirsyncer']:.2f} s (idle {r['vdirsyncer_idle']:.2f} s)"
            if "vdirsyncer" in r
            else ""
        )
        out.append(
            (
                f"{moves} admin moves, {n:,} sessions (Radicale)",
                f"syncd cycle {r['cycle']:.2f} s + outbox {r['mail']:.2f} s; "
                f"bare REPORT+multiget {r['bare']:.3f} s ({ratio:.0f}x){vd}",
            )
        )
        out.append((f"first mirror of {n:,} events (Radicale)", f"{r['mirror']:.1f} s"))
    return out
