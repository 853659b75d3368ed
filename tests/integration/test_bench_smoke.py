"""Every benchmark still runs (``python -m bench.run --quick``): tiny sizes, no timing checks.

The figures themselves live in docs/BENCHMARKS.md (``make bench``), never in a test.
"""

from __future__ import annotations

import subprocess
import sys


def test_every_benchmark_runs_at_tiny_sizes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout
    for row in (
        "plan_calendar",
        "idle warm cycle CPU",
        "admin moves",
        "bare REPORT+multiget",
        "vdirsyncer sync",
        "first mirror",
        "syncd --help",
        "syncd session list",
        "idle calendars, 50 ms RTT",
        "peak RSS",
        "edit → email, CalDAV",
        "edit → email, Google push",
        "idle daemon",
    ):
        assert row in table, f"{row!r} missing from the benchmark table:\n{table}"
