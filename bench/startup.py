"""Start-up: ``syncd --help`` and the read-only listings as a fresh process (wall time).

Goal (issue 11): ``--help`` and ``session list`` at most 0.3 s; ``calendar list`` and
``status`` read the same way (a SQLite file over sqlite3, without SQLAlchemy). The bare
reference is ``python -c pass``. Each row
gives the median wall time and the median CPU time (user + system) of the child: on a
shared machine the wall time carries the other processes' load, the CPU time much less.
Children may write bytecode (as an installed package has it), after one warm-up run.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.world import ADMIN, BenchWorld


def _wall(args: list[str], repeat: int = 5) -> tuple[float, float]:
    """Median wall and CPU seconds of running ``args`` to completion."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(args, check=True, capture_output=True, env=env)  # warm-up: bytecode
    walls, cpus = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, env=env)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def _fmt(t: tuple[float, float]) -> str:
    return f"{t[0]:.2f} s wall, {t[1]:.2f} s CPU"


def rows(sessions: int = 200) -> list[tuple[str, str]]:
    """Benchmark rows for the results table."""
    with tempfile.TemporaryDirectory() as tmp:
        world = BenchWorld(Path(tmp), {})
        world.seed(sessions)
        world.close()
        config = Path(tmp) / "syncd.toml"
        config.write_text(f'[database]\nurl = "sqlite:///{tmp}/bench.db"\n')
        syncd = [sys.executable, "-m", "syncd"]
        bare = _wall([sys.executable, "-c", "pass"])
        help_ = _wall([*syncd, "--help"])
        on = [*syncd, "--config", str(config)]
        listing = _wall([*on, "session", "list", "--admin", ADMIN])
        calendars = _wall([*on, "calendar", "list"])
        status = _wall([*on, "status"])
    return [
        ("python -c pass (bare interpreter)", _fmt(bare)),
        ("syncd --help (goal <= 0.3 s)", _fmt(help_)),
        (f"syncd session list, {sessions} sessions (goal <= 0.3 s)", _fmt(listing)),
        ("syncd calendar list", _fmt(calendars)),
        (f"syncd status, {sessions} sessions", _fmt(status)),
    ]
