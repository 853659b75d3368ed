"""An idle ``syncd run`` process: one CalDAV calendar (Radicale), nothing to do (issue 11, goal 5b).

The daemon of bench/latency.py (a real process, settle 0) runs for ``seconds`` after its
first pass with nothing changing; its CPU is read from ``/proc/<pid>/stat`` (utime + stime,
every thread) and reported as a share of one core. Goal: ≤ 0.5 %. Measured at a 5 s poll
interval (each poll is a real, empty sync cycle) and at the default 60 s.

Run: ``PYTHONPATH=. .venv/bin/python -m bench.idle_daemon [--seconds 60]``.
"""

from __future__ import annotations

import argparse
import os
import time

from bench.latency import cpu_seconds, daemon_world


def idle_share(seconds: float, poll_s: float, sessions: int = 20) -> float:
    """The daemon's CPU over ``seconds`` of idleness, as a fraction of one core."""
    with daemon_world(sessions, poll_s) as dw:
        time.sleep(min(2.0, seconds))  # past the first pass's tail (imports, connections)
        cpu0, wall0 = cpu_seconds(dw.pid), time.monotonic()
        time.sleep(seconds)
        return (cpu_seconds(dw.pid) - cpu0) / (time.monotonic() - wall0)


def rows(seconds: float = 60, polls: tuple[float, ...] = (5, 60)) -> list[tuple[str, str]]:
    """Benchmark rows for the results table."""
    out = []
    for poll in polls:
        load = os.getloadavg()[0]
        share = idle_share(seconds, poll)
        out.append(
            (
                f"idle daemon, 1 CalDAV calendar, poll {poll:g} s, {seconds:g} s (goal ≤ 0.5 %)",
                f"{100 * share:.2f} % of a core; load {load:.2f}",
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    for name, value in rows(args.seconds):
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
