"""The first mirror of N new sessions into an empty calendar on Radicale: syncd vs bare PUTs.

In the same run, on the same Radicale (storage on tmpfs where there is one), alternating,
each time into a fresh calendar collection:

- **syncd**: the first cycle of a calendar with N booked sessions (``BenchWorld.sync`` with
  the real CalDAV backend): plan, commit the mirror rows, create every event, record the
  etags, and the second pass that reads the feed past syncd's own writes;
- **bare**: the same N iCalendar bodies PUT with ``If-None-Match: *`` by httpx over one
  kept-alive connection, one after the other: the least a sequential client can do;
- **bare, 4 connections**: the same PUTs from 4 httpx clients in parallel, to show the
  server's own serialization (Radicale stores one write at a time: this is its floor).

Reported: medians of the wall time of each, syncd's ratio to bare (the sequential one:
the goal's), and syncd's CPU time (this process; Radicale runs in its own). Goal (issue
11): syncd within 1.05x bare. ``python -m bench.mirror --pairs K`` prints K pairs one by
one, with their spread.
"""

from __future__ import annotations

import shutil
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx

from adapters.caldav.ics import build_event
from bench.gestures import _scratch
from bench.world import ADMIN, on_caldav
from syncd.engine.actions import session_url
from syncd.engine.desired import GestureRules, desired_event
from syncd.services import booking as services
from tests.servers import Server, start_radicale

ICS = "text/calendar; charset=utf-8"


def _syncd(root: Path, server: Server, n: int) -> tuple[float, float, list[tuple[str, bytes]]]:
    """(wall s, CPU s) of the first cycle, and the events it wrote as (name, body) pairs."""
    world, backend, _url = on_caldav(root, server)
    world.seed(n)
    t0, c0 = time.perf_counter(), time.process_time()
    report = world.sync(backend)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert report.error is None and report.writes == n, report
    rules = GestureRules()
    now = datetime.now(UTC)
    bodies = []
    for s in services.list_sessions(world.ctx, ADMIN):
        d = desired_event(s, world.ctx.uid(s.id), session_url(world.ctx, s.id), rules)
        bodies.append((f"{d.uid}.ics", build_event(d, now)))
    backend.close()
    world.close()
    return wall, cpu, bodies


def _bare(server: Server, bodies: list[tuple[str, bytes]]) -> tuple[float, float]:
    """(wall s, CPU s) of one conditional PUT per body into a fresh collection."""
    url = server.make_calendar()
    headers = {"Content-Type": ICS, "If-None-Match": "*"}
    with httpx.Client(auth=(server.username, server.password), timeout=30) as client:
        client.request("PROPFIND", url, headers={"Depth": "0"})  # connect, as syncd's feed does
        t0, c0 = time.perf_counter(), time.process_time()
        for name, body in bodies:
            reply = client.put(url + name, content=body, headers=headers)
            assert reply.status_code == 201, (reply.status_code, reply.text[:300])
        return time.perf_counter() - t0, time.process_time() - c0


def _bare_parallel(server: Server, bodies: list[tuple[str, bytes]], lanes: int = 4) -> float:
    """Wall s of the same PUTs from ``lanes`` clients at once (each its share, in order)."""
    url = server.make_calendar()
    headers = {"Content-Type": ICS, "If-None-Match": "*"}
    auth = (server.username, server.password)
    clients = [httpx.Client(auth=auth, timeout=30) for _ in range(lanes)]
    try:
        for client in clients:
            client.request("PROPFIND", url, headers={"Depth": "0"})

        def lane(i: int) -> None:
            for name, body in bodies[i::lanes]:
                reply = clients[i].put(url + name, content=body, headers=headers)
                assert reply.status_code == 201, (reply.status_code, reply.text[:300])

        t0 = time.perf_counter()
        with ThreadPoolExecutor(lanes) as pool:
            list(pool.map(lane, range(lanes)))
        return time.perf_counter() - t0
    finally:
        for client in clients:
            client.close()


def run(n: int, repeat: int = 3) -> dict[str, float]:
    """Medians over ``repeat`` alternating runs: wall and CPU seconds of syncd and bare."""
    root = Path(_scratch())
    server = start_radicale(root / "radicale")
    walls, cpus, bares, bare_cpus, parallels = [], [], [], [], []
    try:
        for i in range(repeat):
            run_dir = root / f"run{i}"
            run_dir.mkdir()
            wall, cpu, bodies = _syncd(run_dir, server, n)
            walls.append(wall)
            cpus.append(cpu)
            bare, bare_cpu = _bare(server, bodies)
            bares.append(bare)
            bare_cpus.append(bare_cpu)
            parallels.append(_bare_parallel(server, bodies))
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "syncd": statistics.median(walls),
        "cpu": statistics.median(cpus),
        "bare": statistics.median(bares),
        "bare_cpu": statistics.median(bare_cpus),
        "bare4": statistics.median(parallels),
    }


def rows(sizes: tuple[int, ...] = (300,), repeat: int = 3) -> list[tuple[str, str]]:
    """Benchmark rows for the results table."""
    import os

    out = []
    for n in sizes:
        r = run(n, repeat)
        load = os.getloadavg()[0]
        out.append(
            (
                f"first mirror of {n:,} new sessions (Radicale), median of {repeat}",
                f"syncd {r['syncd']:.2f} s (CPU {r['cpu']:.2f} s); bare If-None-Match PUTs "
                f"{r['bare']:.2f} s (CPU {r['bare_cpu']:.2f} s) ({r['syncd'] / r['bare']:.2f}x); "
                f"bare, 4 connections in parallel {r['bare4']:.2f} s "
                f"({r['syncd'] / r['bare4']:.2f}x); load {load:.2f}",
            )
        )
    return out


def pairs(n: int = 300, repeat: int = 5) -> list[float]:
    """syncd's wall time over bare's, pair by pair (each pair on the same Radicale, syncd
    then bare into fresh collections): the spread a median hides. Printed as it goes."""
    import os

    root = Path(_scratch())
    server = start_radicale(root / "radicale")
    ratios = []
    try:
        for i in range(repeat):
            run_dir = root / f"pair{i}"
            run_dir.mkdir()
            wall, cpu, bodies = _syncd(run_dir, server, n)
            bare, _ = _bare(server, bodies)
            ratios.append(wall / bare)
            print(
                f"pair {i}: syncd {wall:.2f} s (CPU {cpu:.2f} s), bare {bare:.2f} s, "
                f"{wall / bare:.3f}x, load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"median {statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f}x)")
    return ratios


if __name__ == "__main__":
    import sys

    if "--pairs" in sys.argv:
        pairs(repeat=int(sys.argv[sys.argv.index("--pairs") + 1]))
    else:
        for name, value in rows():
            print(f"| {name} | {value} |")
