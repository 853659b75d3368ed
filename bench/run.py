"""syncd benchmarks: ``python -m bench.run`` (or ``make bench``).

1. The pure planner over a large calendar with a few changes (CPU cost per cycle).
2. Idle and busy cycles against a real Radicale on loopback: an idle cycle is one
   change-feed request whatever the calendar's size; the cost grows with changes.
Results go to stdout as a Markdown table; docs/BENCHMARKS.md keeps the last run.
"""

from __future__ import annotations

import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
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


def bench_planner() -> list[tuple[str, str]]:
    rows = []
    for n, changes in ((500, 5), (5000, 50), (5000, 0)):
        inp = planner_input(n, changes)
        med, best = timeit(lambda inp=inp: plan_calendar(inp))  # type: ignore[misc]
        rows.append(
            (f"plan_calendar, {n} sessions, {changes} changed", f"{med:.1f} ms (min {best:.1f})")
        )
    return rows


def bench_radicale() -> list[tuple[str, str]]:
    from syncd.app.daemon import sync_one
    from syncd.services import booking as services
    from syncd.store.db import Database
    from syncd.store.models import CalendarRow
    from tests.contract.human import CalDAVHuman
    from tests.integration.world import World
    from tests.servers import start_radicale

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = start_radicale(Path(tmp))
        try:
            w = World(Path(tmp), server)
            for i in range(100):
                start = (w.clock.now + timedelta(days=2 + i // 8, hours=i % 8)).replace(
                    minute=0, second=0
                )
                services.book(
                    w.ctx,
                    "coach@example.com",
                    Customer(f"c{i}@example.org", f"C{i}", "UTC"),
                    start,
                    start + timedelta(hours=1),
                )
            t0 = time.perf_counter()
            w.sync()
            rows.append(
                (
                    "first cycle: create 100 events (Radicale)",
                    f"{(time.perf_counter() - t0) * 1000:.0f} ms",
                )
            )
            med, best = timeit(w.sync)
            rows.append(
                ("idle cycle, 100 mirrored events (Radicale)", f"{med:.1f} ms (min {best:.1f})")
            )
            human = CalDAVHuman(server)
            sids = [s.id for s in services.list_sessions(w.ctx)][:10]
            for sid in sids:
                s = w.session(sid)
                human.move(
                    w.remote_id(sid),
                    s.start + timedelta(hours=1),
                    s.end + timedelta(hours=1),
                    "Europe/Berlin",
                )
            t0 = time.perf_counter()
            report = w.sync()
            rows.append(
                (
                    f"cycle with 10 admin moves -> {len(report.actions)} reschedules",
                    f"{(time.perf_counter() - t0) * 1000:.0f} ms",
                )
            )
            _ = (Database, CalendarRow, sync_one)
        finally:
            server.stop()
    return rows


def main() -> None:
    rows = bench_planner() + bench_radicale()
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
