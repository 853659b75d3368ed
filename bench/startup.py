"""Start-up: ``syncd --help`` and ``syncd session list`` as a fresh process (wall time).

Goal (issue 11): both at most 0.3 s. The bare reference is ``python -c pass``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.world import ADMIN, BenchWorld


def _wall(args: list[str], repeat: int = 5) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


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
        listing = _wall([*syncd, "--config", str(config), "session", "list", "--admin", ADMIN])
    return [
        ("python -c pass (bare interpreter)", f"{bare:.2f} s"),
        ("syncd --help (goal <= 0.3 s)", f"{help_:.2f} s"),
        (f"syncd session list, {sessions} sessions (goal <= 0.3 s)", f"{listing:.2f} s"),
    ]
