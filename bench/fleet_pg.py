"""Several workers on one PostgreSQL share the idle calendars (issue 11, goal 8).

K CalDAV calendars point at the sync-collection responder (bench/responder.py, ``delay``
of added round-trip time). A scratch database is made for the run and dropped after it.
Every calendar is made due; then W worker processes (each ``run_cycle`` with ``due_only``
on its own pool of threads, as ``syncd run`` does) start together and loop until a cycle
finds nothing due. An untimed first pass syncs every calendar once (its first listing), so
one worker alone and the W together are timed on the same warm cycles. Reported: how many
calendars were synced, how many were synced by two workers (a calendar synced twice in one
pass would apply its changes twice), each worker's throughput (calendars a second of its
own pass) against one worker alone, and what the 2 vCPUs did meanwhile (the share of both
cores busy, and how much of it was neither the workers, PostgreSQL nor the responder).

Each worker opens every calendar's backend before the start (untimed), as a daemon that
has run for a while holds them (``BackendPool``); ``--cold`` leaves that to the timed pass
(0.4 ms of CPU a calendar, the bench before issue 11's goal 8 work).

``python -m bench.fleet_pg [calendars] [threads] [rtt_ms] [workers] [--cold]``; the server
is ``SYNCD_BENCH_POSTGRES`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).

``python -m bench.fleet_pg --profile [calendars] [--out FILE]``: the CPU of one warm idle
calendar cycle in one process, every cycle on the calling thread (``time.thread_time``),
and the statements it sends; with ``--out`` a cProfile of the last pass (thread time).
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import make_url

from bench.fleet import world_rows
from bench.responder import Responder
from syncd import config as config_mod
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import CalendarRow

SERVER = os.environ.get("SYNCD_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SCRATCH = "bench_fleet"


def _admin_url() -> str:
    return make_url(SERVER).render_as_string(hide_password=False)


def _scratch_url() -> str:
    return make_url(SERVER).set(database=SCRATCH).render_as_string(hide_password=False)


def _recreate(drop_only: bool = False) -> None:
    engine = create_engine(_admin_url(), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)"))
        if not drop_only:
            conn.execute(text(f"CREATE DATABASE {SCRATCH}"))
    engine.dispose()


def _config(threads: int) -> Any:
    return config_mod.parse(
        f'[sync]\nsettle = "0s"\npoll_interval = "60s"\nworkers = {threads}\n'
        '[web]\npublic_url = "https://book.example.com"\n[smtp]\nhost = "127.0.0.1"\nport = 9\n',
        "bench",
    )


def _warm(db: Database, cfg: Any, backends: Any, threads: int) -> None:
    """Open every calendar's backend and ``threads`` + 1 pooled connections (untimed)."""
    with db.read() as orm:
        rows = orm.execute(select(CalendarRow.id, CalendarRow.backend, CalendarRow.settings))
        for cid, backend, settings in rows.all():
            instance = backends.take(cid, backend, dict(settings), cfg)
            backends.give_back(cid, backend, dict(settings), instance, True)
    together = threading.Barrier(threads + 1)

    def hold(_: int) -> None:
        with db.read() as orm:
            orm.execute(text("SELECT 1"))
            together.wait(10)

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads + 1) as pool:
        list(pool.map(hold, range(threads + 1)))


def _worker(name: str, threads: int, go: Event, out: Any, warm: bool = True) -> None:
    """One ``syncd run`` worker: cycles until nothing is due; sends (ids, wall, cpu)."""
    from concurrent.futures import ThreadPoolExecutor

    from syncd.app.daemon import BackendPool, run_cycle

    db = Database(_scratch_url())
    ctx, cfg = Context(db, "https://book.example.com"), _config(threads)
    backends = BackendPool()
    if warm:
        _warm(db, cfg, backends, threads)
    else:
        with db.read() as orm:  # connected, as before
            orm.execute(text("SELECT 1"))
    out.send("ready")
    synced: list[int] = []
    errors = 0
    with ThreadPoolExecutor(threads, thread_name_prefix="sync") as pool:
        go.wait()
        t0, c0 = time.perf_counter(), time.process_time()
        wall, cpu = 0.0, 0.0
        while True:
            reports = run_cycle(ctx, cfg, name, True, pool, backends).reports
            if not reports:  # nothing due: the pass ended with the cycle before
                break
            synced += [r.calendar_id for r in reports if r.error is None]
            errors += sum(1 for r in reports if r.error is not None)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    backends.close()
    db.dispose()
    out.send((synced, errors, wall, cpu))


def postgres_cpu() -> float:
    """CPU seconds used so far by this machine's ``postgres`` processes (the server)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if head.endswith("(postgres"):
            fields = tail.split()
            total += sum(int(f) for f in fields[11:15])  # with exited backends' (cutime)
    return total / os.sysconf("SC_CLK_TCK")


def box_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of every core so far, from /proc/stat."""
    ticks = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - ticks[3] - ticks[4]) / hz, sum(ticks) / hz


def one_pass(ctx: Context, workers: int, threads: int, warm: bool = True) -> dict[str, Any]:
    """Make every calendar due, run ``workers`` processes together; their figures."""
    with ctx.db.write() as orm:
        orm.execute(CalendarRow.__table__.update().values(next_sync_at=None))
    mp = multiprocessing.get_context("spawn")
    go = mp.Event()
    pipes, procs = [], []
    for i in range(workers):
        mine, theirs = mp.Pipe(duplex=False)
        p = mp.Process(target=_worker, args=(f"bench-{i}", threads, go, theirs, warm))
        p.start()
        pipes.append(mine)
        procs.append(p)
    for pipe in pipes:  # every worker imported, connected (and warmed) before the start
        assert pipe.recv() == "ready"
    time.sleep(0.5)
    p0, b0, load0 = postgres_cpu(), box_cpu(), os.getloadavg()[0]
    go.set()
    results = [pipe.recv() for pipe in pipes]
    b1, load1 = box_cpu(), os.getloadavg()[0]
    for p in procs:
        p.join(30)
    time.sleep(0.5)  # the backends of the workers' connections exit
    server_cpu = postgres_cpu() - p0
    every = [cid for r in results for cid in r[0]]
    return {
        "synced": len(set(every)),
        "duplicates": len(every) - len(set(every)),
        "errors": sum(r[1] for r in results),
        "per_worker": [(len(r[0]), r[2], r[3]) for r in results],
        "throughput": [len(r[0]) / max(r[2], 1e-9) for r in results],
        "wall": max(r[2] for r in results),
        "postgres_cpu": server_cpu,
        "box_busy": (b1[0] - b0[0]) / max(b1[1] - b0[1], 1e-9),
        "box_cpu": b1[0] - b0[0],
        "load": (load0, load1),
    }


def run(
    k: int = 1000, threads: int = 4, delay: float = 0.05, workers: int = 3, warm: bool = True
) -> dict[str, Any]:
    """One worker alone, then ``workers`` together, on the same ``k`` calendars."""
    responder = Responder(delay)
    _recreate()
    try:
        db = Database(_scratch_url())
        db.upgrade()
        world_rows(db, responder, k)
        ctx = Context(db, "https://book.example.com")
        one_pass(ctx, workers, threads)  # the first listing of every calendar, untimed
        r0 = responder.cpu()
        alone = one_pass(ctx, 1, threads, warm)
        r1 = responder.cpu()
        shared = one_pass(ctx, workers, threads, warm)
        r2 = responder.cpu()
        db.dispose()
    finally:
        responder.stop()
        _recreate(drop_only=True)
    for r, cpu in ((alone, r1 - r0), (shared, r2 - r1)):
        r["responder_cpu"] = cpu
        own = sum(c for _, _, c in r["per_worker"]) + r["postgres_cpu"] + cpu
        r["others_cpu"] = max(r["box_cpu"] - own, 0.0)
    return {"alone": alone, "shared": shared, "k": k, "threads": threads, "workers": workers}


def _box(r: dict[str, Any]) -> str:
    n = max(r["synced"], 1)
    workers = sum(c for _, _, c in r["per_worker"])
    return (
        f"; CPU a cycle: workers {1e3 * workers / n:.2f} ms, PostgreSQL "
        f"{1e3 * r['postgres_cpu'] / n:.2f} ms, responder {1e3 * r['responder_cpu'] / n:.2f} ms"
        f"; box {100 * r['box_busy']:.0f} % busy ({r['others_cpu']:.1f} s CPU not ours), "
        f"load {r['load'][0]:.1f}→{r['load'][1]:.1f}"
    )


def rows(
    k: int = 1000, threads: int = 4, rtt_ms: int = 50, workers: int = 3, warm: bool = True
) -> list[tuple[str, str]]:
    """Benchmark rows for the results table."""
    r = run(k, threads, delay=rtt_ms / 1000, workers=workers, warm=warm)
    one = r["alone"]["throughput"][0]
    each = r["shared"]["throughput"]
    worst = min(each) / max(one, 1e-9)
    s = r["shared"]
    return [
        (
            f"PostgreSQL, {k:,} idle calendars, {rtt_ms} ms RTT, 1 worker × {threads} threads",
            f"{r['alone']['synced']:,} synced in {r['alone']['wall']:.1f} s, {one:.0f}/s, "
            f"CPU {r['alone']['per_worker'][0][2] / max(r['alone']['wall'], 1e-9):.2f} core, "
            f"PostgreSQL {r['alone']['postgres_cpu']:.1f} s CPU" + _box(r["alone"]),
        ),
        (
            f"PostgreSQL, {k:,} idle calendars, {workers} workers × {threads} threads",
            f"{s['synced']:,}/{k:,} synced, {s['duplicates']} twice, {s['errors']} errors, "
            f"in {s['wall']:.1f} s; per worker "
            + ", ".join(
                f"{n} in {w:.1f} s ({n / max(w, 1e-9):.0f}/s, CPU {c:.1f} s)"
                for n, w, c in s["per_worker"]
            )  # fmt: skip
            + f"; PostgreSQL {s['postgres_cpu']:.1f} s CPU"
            + f"; slowest worker {100 * worst:.0f} % of one alone"
            + _box(s),
        ),
    ]


class _Inline(Executor):
    """Runs each task at once on the calling thread (one thread's CPU is the whole cycle)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        done: Future[Any] = Future()
        try:
            done.set_result(fn(*args, **kwargs))
        except BaseException as err:  # handed to the caller through the future
            done.set_exception(err)
        return done


def cpu_per_cycle(k: int = 300, passes: int = 3, out: str | None = None) -> list[str]:
    """Warm idle cycles of ``k`` calendars in this process, on this thread: for each pass,
    the thread CPU and the statements a calendar cycle costs (claims and releases in)."""
    from syncd.app.daemon import BackendPool, run_cycle

    responder = Responder(0.0)
    _recreate()
    lines = []
    try:
        db = Database(_scratch_url())
        db.upgrade()
        world_rows(db, responder, k)
        ctx, cfg = Context(db, "https://book.example.com"), _config(4)
        backends, inline = BackendPool(), _Inline()
        sent = [0]

        def count(*_: Any) -> None:
            sent[0] += 1

        event.listen(db.engine, "before_cursor_execute", count)

        def one() -> int:
            with db.write() as orm:
                orm.execute(CalendarRow.__table__.update().values(next_sync_at=None))
            n = 0
            while reports := run_cycle(ctx, cfg, "profile", True, inline, backends).reports:  # type: ignore[arg-type]
                assert all(r.error is None for r in reports), [r.error for r in reports]
                n += len(reports)
            return n

        one()  # the first listings
        for i in range(passes):
            s0, c0, w0 = sent[0], time.thread_time(), time.perf_counter()
            profile = cProfile.Profile(time.thread_time) if out and i == passes - 1 else None
            if profile is not None:
                profile.enable()
            n = one()
            if profile is not None and out:
                profile.disable()
                profile.dump_stats(out)
            cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
            lines.append(
                f"pass {i}{' (profiled)' if profile else ''}: {n} calendars, "
                f"{1e3 * cpu / n:.2f} ms CPU and {1e3 * wall / n:.2f} ms wall a cycle, "
                f"{(sent[0] - s0) / n:.2f} statements, load {os.getloadavg()[0]:.1f}"
            )
        backends.close()
        db.dispose()
    finally:
        responder.stop()
        _recreate(drop_only=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_pg")
    parser.add_argument("numbers", nargs="*", type=int, help="calendars threads rtt_ms workers")
    parser.add_argument("--cold", action="store_true", help="backends opened in the timed pass")
    parser.add_argument("--profile", action="store_true", help="CPU a cycle, one process")
    parser.add_argument("--out", help="with --profile: a cProfile file of the last pass")
    args = parser.parse_args()
    if args.profile:
        for line in cpu_per_cycle(args.numbers[0] if args.numbers else 300, out=args.out):
            print(line)
        return
    k, threads, rtt_ms, workers = (args.numbers + [1000, 4, 50, 3][len(args.numbers) :])[:4]
    for name, value in rows(k, threads, rtt_ms, workers, warm=not args.cold):
        print(f"| {name} | {value} |")
    print(Path("/proc/loadavg").read_text().strip())


if __name__ == "__main__":
    main()
