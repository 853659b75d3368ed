"""syncd benchmarks: ``python -m bench.run`` (or ``make bench``).

1. The pure planner over a large calendar with a few changes (CPU cost per cycle).
2. An idle warm cycle at 100 and 20,000 upcoming sessions (bench/idle.py).
3. 100 admin moves in calendars of 1,000 and 3,000 sessions on Radicale, side by side with
   the bare protocol and vdirsyncer in the same run (bench/gestures.py).
4. Start-up of ``syncd --help`` and ``syncd session list`` (bench/startup.py).
5. 100, 1,000 and 10,000 idle calendars behind 50 ms of round-trip time: one pass over
   all of them by the daemon loop (bench/fleet.py, bench/responder.py); the same on
   PostgreSQL with 3 worker processes sharing 1,000 calendars (bench/fleet_pg.py).
6. The first mirror of 300 sessions vs bare If-None-Match PUTs (bench/mirror.py).
7. Peak RSS of a daemon over 100,000 sessions, in 1 or 1,000 calendars (bench/rss.py).
8. Edit -> email latency in a running daemon, polled and pushed (bench/latency.py), and
   the CPU of an idle daemon (bench/idle_daemon.py).
Results go to stdout as a Markdown table; docs/BENCHMARKS.md keeps the last run.
``--quick`` runs every benchmark at tiny sizes (tests/integration/test_bench_smoke.py).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from syncd.domain.model import Customer, Session, Status
from syncd.engine.desired import GestureRules, content_hash, desired_content, desired_event
from syncd.engine.planner import MirrorState, PlanInput, plan_calendar
from syncd.ports import RemoteEvent

RULES = GestureRules()
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def timeit(fn: Callable[[], object], repeat: int = 7) -> tuple[float, float]:
    """Median and min wall time of ``fn`` in milliseconds."""
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1000)
    return statistics.median(runs), min(runs)


def planner_input(n: int, changes: int) -> PlanInput:
    sessions, desired, mirrors, changed = {}, {}, {}, []
    for i in range(n):
        start = NOW + timedelta(days=1 + i // 8, hours=i % 8)
        s = Session(
            f"s_{i}",
            "c@x",
            Customer(f"c{i}@x", f"C{i}", "UTC"),
            start,
            start + timedelta(hours=1),
            Status.BOOKED,
        )
        d = desired_event(s, f"syncd-s_{i}@h", "https://h", RULES)
        sessions[s.id], desired[s.id] = s, d
        h = content_hash(desired_content(d), RULES)
        mirrors[s.id] = MirrorState(s.id, f"/c/{i}.ics", f'"{i}"', h, f'"{i}"')
        if i < changes:
            c = replace(
                desired_content(d), start=start + timedelta(hours=3), end=start + timedelta(hours=4)
            )
            changed.append(RemoteEvent(f"/c/{i}.ics", f'"n{i}"', c))
    return PlanInput(
        NOW,
        MappingProxyType(sessions),
        MappingProxyType(desired),
        MappingProxyType(mirrors),
        changed=changed,
    )


def bench_planner(quick: bool = False) -> list[tuple[str, str]]:
    """The pure planner over a large calendar with a few changes."""
    rows = []
    sizes = ((50, 5),) if quick else ((500, 5), (5000, 50), (5000, 0))
    for n, changes in sizes:
        inp = planner_input(n, changes)
        med, best = timeit(lambda inp=inp: plan_calendar(inp))  # type: ignore[misc]
        rows.append(
            (f"plan_calendar, {n} sessions, {changes} changed", f"{med:.1f} ms (min {best:.1f})")
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run every benchmark and print the table; ``--quick`` runs tiny sizes (smoke test)."""
    import argparse

    from bench import fleet, fleet_pg, gestures, idle, idle_daemon, latency, mirror, rss, startup

    parser = argparse.ArgumentParser(prog="python -m bench.run")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: does it still run?")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated suite names (planner, idle, gestures, startup, fleet, fleet_pg, "
        "mirror, rss, latency, idle_daemon)",
    )
    args = parser.parse_args(argv)
    only = set(filter(None, args.only.split(",")))
    suites = {
        "planner": (lambda: bench_planner(quick=True)) if args.quick else bench_planner,
        "idle": (lambda: idle.rows((10, 50))) if args.quick else idle.rows,
        "gestures": (lambda: gestures.rows((30,), moves=5)) if args.quick else gestures.rows,
        "startup": (lambda: startup.rows(10)) if args.quick else startup.rows,
        "fleet": (lambda: fleet.rows((20,))) if args.quick else fleet.rows,
        # PostgreSQL with 3 worker processes: not in --quick (it needs a PostgreSQL server).
        "fleet_pg": (lambda: []) if args.quick else fleet_pg.rows,
        "mirror": (lambda: mirror.rows((10,), repeat=1)) if args.quick else mirror.rows,
        "rss": (lambda: rss.rows(quick=True)) if args.quick else rss.rows,
        "latency": (lambda: latency.rows(moves=2)) if args.quick else latency.rows,
        "idle_daemon": (
            (lambda: idle_daemon.rows(seconds=3, polls=(5,))) if args.quick else idle_daemon.rows
        ),
    }
    rows: list[tuple[str, str]] = []
    for name, suite in suites.items():
        if not only or name in only:
            rows += suite()
    print(
        f"Machine: {platform.platform()}, Python {platform.python_version()}, "
        f"{platform.processor() or platform.machine()}"
    )
    print("Command: make bench   (python -m bench.run)\n")
    print("| benchmark | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
