"""The first mirror of N new sessions into empty calendars on Radicale: syncd vs bare PUTs.

In the same run, on the same Radicale processes (storage on tmpfs where there is one), each
time into fresh calendar collections, syncd and the bare clients taking turns (the order
flips from one pair to the next, so a drift of the box favours neither):

- **syncd**: the first cycle of each calendar with its booked sessions
  (``sync_calendar`` with the real CalDAV backend, one thread per calendar as the daemon's
  ``[sync] workers`` pool runs them): plan, commit the mirror rows, create every event,
  record the etags, and the second pass that reads the feed past syncd's own writes;
- **bare**: the same iCalendar bodies PUT with ``If-None-Match: *`` over one kept-alive
  ``http.client`` connection a calendar, one after the other, the calendars in parallel:
  the least a client that writes each calendar in order can do. This is the goal's
  baseline;
- **bare httpx**: the same through httpx (the baseline of earlier sessions' figures);
- **bare, 4 connections**: one calendar's PUTs from 4 connections at once, to show the
  server's own serialization (Radicale stores one write at a time: this is its floor).

``--calendars K`` spreads the N sessions over K calendars, each on a Radicale process of
its own ("parallel across calendars, one server's own serialization aside"). The servers'
CPU time is read from /proc for each run: on this 2-core box K ≥ 2 servers keep both cores
busy, so syncd's own CPU then adds to the wall time instead of hiding behind the servers'.

Reported: syncd's wall time over bare's, pair by pair, with syncd's CPU (this process)
and the servers'. Goal (issue 11): syncd within 1.05x bare.
``--rtt MS`` puts each server behind a proxy that adds that round-trip time
(bench/delay_proxy.py): a distant server, where writes in flight together pay off.
``--pin`` runs this process on the first core and the servers on the others (Linux
``sched_setaffinity``): a server with a core of its own, as a real one on another machine
has, instead of one the scheduler moves between the cores syncd's threads use.
``python -m bench.mirror --pairs K [--calendars C] [--sessions N] [--rtt MS] [--pin]``.
"""

from __future__ import annotations

import base64
import gc
import os
import shutil
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http import client as httpc
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from adapters.caldav.backend import CalDAVBackend
from adapters.caldav.ics import build_event
from bench.delay_proxy import DelayProxy
from bench.gestures import _scratch
from bench.latency import cpu_seconds
from bench.world import ADMIN, BenchWorld
from syncd.engine.actions import session_url
from syncd.engine.desired import GestureRules, desired_event
from syncd.engine.runner import CycleReport, sync_calendar
from syncd.services import booking as services
from tests.servers import Server, start_radicale

ICS = "text/calendar; charset=utf-8"
Bodies = list[tuple[str, bytes]]


def _server_cpu(servers: list[Server]) -> float:
    """CPU seconds the servers' processes have used so far (user + system)."""
    return sum(cpu_seconds(server.process.pid) for server in servers)


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float  # this process
    server_cpu: float
    idle: Idle


@dataclass(frozen=True)
class Idle:
    """Seconds the servers had no request of this process's to work on: before the first
    PUT, between PUTs (no request in flight), after the last PUT's answer. Free of the
    servers' own run-to-run spread, unlike the wall time."""

    before: float
    between: float
    after: float

    def __str__(self) -> str:
        return (
            f"servers idle {1e3 * self.before:.0f} + {1e3 * self.between:.0f} + "
            f"{1e3 * self.after:.0f} ms (before, between, after the PUTs)"
        )


def _patch(request: Callable[..., None], getresponse: Callable[..., object]) -> None:
    for name, fn in (("request", request), ("getresponse", getresponse)):
        setattr(httpc.HTTPConnection, name, fn)


class _Requests:
    """When each ``http.client`` request of this process was sent and answered (syncd's
    CalDAV requests and the bare lanes both go through it): one list append each."""

    def __init__(self) -> None:
        self.events: list[tuple[float, int, bool]] = []  # (time, +1 sent / -1 answered, PUT)
        self._request = httpc.HTTPConnection.request
        self._getresponse = httpc.HTTPConnection.getresponse

    def __enter__(self) -> _Requests:
        events, request, getresponse = self.events, self._request, self._getresponse

        def sent(conn: httpc.HTTPConnection, method: str, *args: Any, **kwargs: Any) -> None:
            events.append((time.perf_counter(), 1, method == "PUT"))
            request(conn, method, *args, **kwargs)

        def answered(conn: httpc.HTTPConnection) -> httpc.HTTPResponse:
            reply = getresponse(conn)
            events.append((time.perf_counter(), -1, False))
            return reply

        _patch(sent, answered)
        return self

    def __exit__(self, *exc: object) -> None:
        _patch(self._request, self._getresponse)

    def idle(self, t0: float, t1: float) -> Idle:
        """Time in [t0, t1] with none of this process's requests in flight, before the
        first PUT was sent, until the last PUT was answered, and after."""
        puts = [t for t, kind, put in self.events if kind == 1 and put]
        first = puts[0] if puts else t1
        spans = [0.0, 0.0, 0.0]
        flying, quiet_since, last_put = 0, t0, puts[-1] if puts else t1
        answers = (t for t, kind, _ in self.events if kind == -1 and t > last_put)
        last_answer = min(answers, default=t1)
        for t, kind, _ in [*self.events, (t1, 1, False)]:
            if kind == 1 and flying == 0:
                self._quiet(spans, quiet_since, t, first, last_answer)
            flying += kind
            if flying == 0:
                quiet_since = t
        return Idle(*spans)

    @staticmethod
    def _quiet(spans: list[float], a: float, b: float, first: float, last: float) -> None:
        """Adds the quiet span [a, b] to before / between / after."""
        for k, (lo, hi) in enumerate(((-1e18, first), (first, last), (last, 1e18))):
            spans[k] += max(0.0, min(b, hi) - max(a, lo))


def _timed(servers: list[Server], fn: Callable[[], object]) -> Run:
    gc.collect()
    with _Requests() as requests:
        s0, t0, c0 = _server_cpu(servers), time.perf_counter(), time.process_time()
        fn()
        t1, cpu = time.perf_counter(), time.process_time() - c0
    return Run(t1 - t0, cpu, _server_cpu(servers) - s0, requests.idle(t0, t1))


def _syncd(root: Path, servers: list[Server], n: int) -> tuple[Run, list[Bodies]]:
    """The first cycle of each calendar (``n`` sessions spread over one calendar a server),
    the calendars at once; and the events each calendar got, as (name, body) pairs."""
    (root / "pw").write_text(servers[0].password)
    world = None
    cals: list[tuple[str, int, CalDAVBackend]] = []  # (admin's email, calendar id, backend)
    for i, server in enumerate(servers):
        url = server.make_calendar()
        settings: dict[str, object] = {
            "url": url,
            "username": server.username,
            "password_file": str(root / "pw"),
        }
        email = ADMIN if world is None else f"coach{i}@example.com"
        if world is None:
            world = BenchWorld(root, settings)
            admin_id, cal_id = world.admin_id, world.cal_id
        else:
            admin_id, cal_id = world.add_calendar(email, settings)
        world.seed(n // len(servers) + (i < n % len(servers)), admin_id=admin_id)
        cals.append((email, cal_id, CalDAVBackend(url, server.username, server.password, 30)))
    assert world is not None
    w = world
    reports: list[CycleReport] = []

    def cycles() -> None:
        with ThreadPoolExecutor(len(cals), thread_name_prefix="sync") as pool:
            futures = [pool.submit(sync_calendar, w.ctx, w.engine, cid, b) for _, cid, b in cals]
            reports.extend(f.result() for f in futures)

    run = _timed(servers, cycles)
    assert all(r.error is None for r in reports), reports
    assert sum(r.writes for r in reports) == n, reports
    rules = GestureRules()
    now = datetime.now(UTC)
    bodies: list[Bodies] = []
    for email, _, backend in cals:
        own = []
        for s in services.list_sessions(w.ctx, email):
            d = desired_event(s, w.ctx.uid(s.id), session_url(w.ctx, s.id), rules)
            own.append((f"{d.uid}.ics", build_event(d, now)))
        bodies.append(own)
        backend.close()
    w.close()
    return run, bodies


def _auth(server: Server) -> str:
    return "Basic " + base64.b64encode(f"{server.username}:{server.password}".encode()).decode()


def _plain_lane(
    server: Server, bodies: Bodies
) -> tuple[httpc.HTTPConnection, str, Callable[[], None]]:
    """A fresh collection, a connection to it (opened), and the lane that PUTs ``bodies``."""
    path = urlsplit(server.make_calendar()).path
    conn = httpc.HTTPConnection("127.0.0.1", server.port, timeout=30)
    headers = {"Content-Type": ICS, "If-None-Match": "*", "Authorization": _auth(server)}
    conn.request("PROPFIND", path, None, {"Depth": "0", "Authorization": headers["Authorization"]})
    conn.getresponse().read()

    def lane() -> None:
        for name, body in bodies:
            conn.request("PUT", path + name, body, headers)
            reply = conn.getresponse()
            data = reply.read()
            assert reply.status == 201, (reply.status, data[:300])

    return conn, path, lane


def _bare(servers: list[Server], bodies: list[Bodies]) -> Run:
    """One conditional PUT per body, each calendar's in order on one kept-alive
    ``http.client`` connection, the calendars in parallel."""
    lanes = [_plain_lane(s, b) for s, b in zip(servers, bodies, strict=True)]
    try:
        if len(lanes) == 1:
            return _timed(servers, lanes[0][2])

        def all_lanes() -> None:
            with ThreadPoolExecutor(len(lanes)) as pool:
                list(pool.map(lambda lane: lane[2](), lanes))

        return _timed(servers, all_lanes)
    finally:
        for conn, _, _ in lanes:
            conn.close()


def _bare_httpx(server: Server, bodies: Bodies) -> Run:
    """One calendar's conditional PUTs by httpx over one kept-alive connection."""
    url = server.make_calendar()
    headers = {"Content-Type": ICS, "If-None-Match": "*"}
    with httpx.Client(auth=(server.username, server.password), timeout=30) as client:
        client.request("PROPFIND", url, headers={"Depth": "0"})

        def puts() -> None:
            for name, body in bodies:
                reply = client.put(url + name, content=body, headers=headers)
                assert reply.status_code == 201, (reply.status_code, reply.text[:300])

        return _timed([server], puts)


def _bare_parallel(server: Server, bodies: Bodies, lanes: int = 4) -> float:
    """Wall s of one calendar's PUTs from ``lanes`` connections at once (each its share)."""
    made = [_plain_lane(server, bodies[i::lanes]) for i in range(lanes)]
    try:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(lanes) as pool:
            list(pool.map(lambda lane: lane[2](), made))
        return time.perf_counter() - t0
    finally:
        for conn, _, _ in made:
            conn.close()


def _servers(root: Path, k: int) -> list[Server]:
    servers: list[Server] = []
    try:
        for i in range(k):
            servers.append(start_radicale(root / f"radicale{i}"))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def _behind(servers: list[Server], rtt: float) -> tuple[list[Server], list[DelayProxy]]:
    """The same servers reached through a proxy each that adds ``rtt`` seconds."""
    proxies = [DelayProxy(s.port, rtt) for s in servers]
    near = [
        replace(s, base_url=s.base_url.replace(f":{s.port}/", f":{p.port}/", 1))
        for s, p in zip(servers, proxies, strict=True)
    ]
    return near, proxies


def run(n: int, repeat: int = 3) -> dict[str, float]:
    """Medians over ``repeat`` alternating runs on one Radicale: wall and CPU seconds."""
    root = Path(_scratch())
    servers = _servers(root, 1)
    keys = ("syncd", "cpu", "bare", "httpx", "bare4", "idle", "bare_idle")
    out: dict[str, list[float]] = {k: [] for k in keys}
    try:
        for i in range(repeat):
            (root / f"run{i}").mkdir()
            mine, bodies = _syncd(root / f"run{i}", servers, n)
            out["syncd"].append(mine.wall)
            out["cpu"].append(mine.cpu)
            bare = _bare(servers, bodies)
            out["bare"].append(bare.wall)
            out["idle"].append(mine.idle.before + mine.idle.between + mine.idle.after)
            out["bare_idle"].append(bare.idle.before + bare.idle.between + bare.idle.after)
            out["httpx"].append(_bare_httpx(servers[0], bodies[0]).wall)
            out["bare4"].append(_bare_parallel(servers[0], bodies[0]))
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {k: statistics.median(v) for k, v in out.items()}


def rows(sizes: tuple[int, ...] = (300,), repeat: int = 3) -> list[tuple[str, str]]:
    """Benchmark rows for the results table."""
    out = []
    for n in sizes:
        r = run(n, repeat)
        load = os.getloadavg()[0]
        out.append(
            (
                f"first mirror of {n:,} new sessions (Radicale), median of {repeat}",
                f"syncd {r['syncd']:.2f} s (CPU {r['cpu']:.2f} s); bare If-None-Match PUTs "
                f"(http.client) {r['bare']:.2f} s ({r['syncd'] / r['bare']:.2f}x); by httpx "
                f"{r['httpx']:.2f} s ({r['syncd'] / r['httpx']:.2f}x); bare, 4 connections "
                f"in parallel {r['bare4']:.2f} s ({r['syncd'] / r['bare4']:.2f}x); "
                f"servers idle {1e3 * r['idle']:.0f} ms in syncd's run, "
                f"{1e3 * r['bare_idle']:.0f} ms in bare's; load {load:.2f}",
            )
        )
    return out


def _pin(servers: list[Server]) -> str:
    """This process on the first core, the servers on the others; what was done."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return "not pinned (one core)"
    for server in servers:
        os.sched_setaffinity(server.process.pid, cores[1:])
    os.sched_setaffinity(0, cores[:1])
    return f"syncd and bare on core {cores[0]}, servers on {cores[1:]}"


def pairs(
    n: int = 300, repeat: int = 5, calendars: int = 1, rtt_ms: int = 0, pin: bool = False
) -> list[float]:
    """syncd's wall time over bare's, pair by pair (syncd and bare into fresh collections
    on the same servers, the order flipped every pair): the spread a median hides.
    ``rtt_ms``: each server behind a proxy that adds that round-trip time. Printed as it
    goes."""
    root = Path(_scratch())
    started = _servers(root, calendars)
    servers, proxies = _behind(started, rtt_ms / 1000) if rtt_ms else (started, [])
    ratios = []
    bodies: list[Bodies] = []
    pinned = _pin(started) if pin else "not pinned"
    print(
        f"first mirror of {n} sessions over {calendars} calendar(s), one Radicale each, "
        f"{rtt_ms} ms added RTT, {pinned}"
    )
    try:
        for i in range(repeat):
            (root / f"pair{i}").mkdir()
            if i % 2:  # bare first: it needs the bodies, so from the previous pair's syncd
                bare = _bare(servers, bodies)
                mine, bodies = _syncd(root / f"pair{i}", servers, n)
            else:
                mine, bodies = _syncd(root / f"pair{i}", servers, n)
                bare = _bare(servers, bodies)
            ratios.append(mine.wall / bare.wall)
            print(
                f"pair {i}: syncd {mine.wall:.2f} s (CPU {mine.cpu:.2f} s, servers "
                f"{mine.server_cpu:.2f} s), bare {bare.wall:.2f} s (CPU {bare.cpu:.2f} s, "
                f"servers {bare.server_cpu:.2f} s), {mine.wall / bare.wall:.3f}x, "
                f"load {os.getloadavg()[0]:.2f}\n  syncd: {mine.idle}\n  bare:  {bare.idle}",
                flush=True,
            )
    finally:
        for proxy in proxies:
            proxy.stop()
        for server in started:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"median {statistics.median(ratios):.3f}x ({min(ratios):.3f}-{max(ratios):.3f}x)")
    return ratios


if __name__ == "__main__":
    import sys

    def _arg(name: str, default: int) -> int:
        return int(sys.argv[sys.argv.index(name) + 1]) if name in sys.argv else default

    if "--pairs" in sys.argv:
        pairs(
            _arg("--sessions", 300),
            _arg("--pairs", 5),
            _arg("--calendars", 1),
            _arg("--rtt", 0),
            "--pin" in sys.argv,
        )
    else:
        for name, value in rows():
            print(f"| {name} | {value} |")
