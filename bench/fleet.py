"""Many idle calendars: does one process poll every calendar within its interval?

K CalDAV calendars (one admin each, no sessions) point at the minimal sync-collection
responder (bench/responder.py), which answers each REPORT ``delay`` seconds late (the added
round-trip time). The daemon's own loop is driven — ``run_cycle`` with ``due_only``, as
``syncd run`` calls it every tick — until every calendar has been synced once (the first
pass), then once more (a warm pass). Reported: the wall time of each pass, syncd's CPU as a
fraction of one core, and the responder's CPU (so the server is shown not to be the
bottleneck).

Goal (issue 11): 10,000 calendars, 50 ms added RTT, each polled within its 60 s interval on
one process using at most one core.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from bench.responder import Responder
from syncd import config as config_mod
from syncd.app.daemon import BackendPool, run_cycle
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import AdminRow, CalendarRow

POLL = "60s"


def _world(tmp: Path, responder: Responder, k: int, workers: int) -> tuple[Context, object]:
    db = Database(f"sqlite:///{tmp}/fleet.db")
    db.upgrade()
    cfg = config_mod.parse(
        f'[sync]\nsettle = "0s"\npoll_interval = "{POLL}"\nworkers = {workers}\n'
        '[web]\npublic_url = "https://book.example.com"\n[smtp]\nhost = "127.0.0.1"\nport = 9\n',
        "bench",
    )
    world_rows(db, responder, k)
    return Context(db, "https://book.example.com"), cfg


def world_rows(db: Database, responder: Responder, k: int) -> None:
    """``k`` admins, each with one CalDAV calendar on the responder (bench/fleet_pg.py too)."""
    with db.write() as orm:
        orm.execute(
            insert(AdminRow),
            [
                {"email": f"a{i}@example.com", "name": f"A{i}", "tz": "UTC",
                 "reschedule_cutoff_s": 86400, "cancel_cutoff_s": 86400, "min_notice_s": 7200,
                 "choose_link_ttl_s": 604800, "default_cancel_reason": "-", "weekly": {},
                 "slot_minutes": 60, "created_at": db_now()}
                for i in range(k)
            ],
        )  # fmt: skip
        ids = orm.scalars(select(AdminRow.id).order_by(AdminRow.id)).all()
        orm.execute(
            insert(CalendarRow),
            [
                {"admin_id": aid, "backend": "caldav", "busy_only": False, "cursor_version": 1,
                 "settings": {"url": responder.url(i), "username": "", "password_file": ""}}
                for i, aid in enumerate(ids)
            ],
        )  # fmt: skip


def db_now():  # type: ignore[no-untyped-def]
    """Now, UTC, whole seconds."""
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(microsecond=0)


def _synced_since(ctx: Context, since: object) -> int:
    with ctx.db.read() as orm:
        return int(
            orm.scalar(
                select(func.count())
                .select_from(CalendarRow)
                .where(CalendarRow.last_sync_at >= since)
            )
            or 0
        )


def one_pass(ctx: Context, cfg: object, k: int, pool: ThreadPoolExecutor, backends: BackendPool,
             budget: float) -> tuple[float, float, int]:  # fmt: skip
    """Drive the daemon loop until all ``k`` calendars synced; (wall s, CPU s, synced)."""
    since = db_now() - timedelta(seconds=1)
    with ctx.db.write() as orm:  # everything due now
        orm.execute(CalendarRow.__table__.update().values(next_sync_at=None))
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    while done < k and time.perf_counter() - t0 < budget:
        run_cycle(ctx, cfg, "bench-worker", True, pool, backends)  # type: ignore[arg-type]
        done = _synced_since(ctx, since)
    return time.perf_counter() - t0, time.process_time() - c0, done


def run(k: int, delay: float = 0.05, workers: int = 4, budget: float = 300.0) -> dict[str, float]:
    """One fleet of ``k`` calendars: the first and the warm pass."""
    responder = Responder(delay)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ctx, cfg = _world(Path(tmp), responder, k, workers)
            backends = BackendPool()
            with ThreadPoolExecutor(workers, thread_name_prefix="sync") as pool:
                first = one_pass(ctx, cfg, k, pool, backends, budget)
                r0 = responder.cpu()
                warm = one_pass(ctx, cfg, k, pool, backends, budget)
                r1 = responder.cpu()
            backends.close()
            ctx.db.dispose()
    finally:
        responder.stop()
    return {
        "first_s": first[0], "warm_s": warm[0], "warm_cpu": warm[1] / max(warm[0], 1e-9),
        "synced": warm[2], "responder_cpu": (r1 - r0) / max(warm[0], 1e-9),
    }  # fmt: skip


def rows(sizes: tuple[int, ...] = (100, 1000, 10_000), workers: int = 16) -> list[tuple[str, str]]:
    """Benchmark rows for the results table."""
    out = []
    for k in sizes:
        r = run(k, workers=workers)
        out.append(
            (
                f"{k:,} idle calendars, 50 ms RTT, {workers} workers: one pass over all",
                f"first {r['first_s']:.1f} s, warm {r['warm_s']:.1f} s "
                f"({int(r['synced']):,}/{k:,} synced), syncd CPU {r['warm_cpu']:.2f} core, "
                f"responder CPU {r['responder_cpu']:.2f} core",
            )
        )
    return out
