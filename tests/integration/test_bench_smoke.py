"""Every benchmark still runs (``python -m bench.run --quick``): tiny sizes, no timing checks.

The figures themselves live in docs/BENCHMARKS.md (``make bench``), never in a test.

The suites run in two ``bench.run --quick --only ...`` processes side by side: the latency
and idle-daemon suites mostly wait (for settle windows, polls, a fixed idle period) while
the others compute, so together they take the time of the longer half (40 s -> ~25 s here).
Which suites exist is read from ``bench/run.py`` itself, so a new suite is never left out.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

RUN_PY = Path(__file__).resolve().parents[2] / "bench" / "run.py"
WAITING = ("latency", "idle_daemon")  # the suites that mostly wait


def _suite_names() -> list[str]:
    """The keys of the ``suites`` dict in ``bench.run.main``, in their order."""
    for node in ast.walk(ast.parse(RUN_PY.read_text())):
        if (
            isinstance(node, ast.Assign)
            and [getattr(t, "id", None) for t in node.targets] == ["suites"]
            and isinstance(node.value, ast.Dict)
        ):
            return [ast.literal_eval(key) for key in node.value.keys if key is not None]
    raise AssertionError(f"no `suites = {{...}}` in {RUN_PY}")


def test_every_benchmark_runs_at_tiny_sizes() -> None:
    names = _suite_names()
    assert set(WAITING) <= set(names), names
    halves = [list(WAITING), [n for n in names if n not in WAITING]]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.run", "--quick", "--only", ",".join(half)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for half in halves
    ]
    outputs = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    table = "\n".join(outputs)
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
