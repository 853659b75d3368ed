"""An idle cycle: nothing changed, the calendar holds N upcoming sessions.

Goal (issue 11): the warm cycle's CPU at 20,000 upcoming sessions within 2x that at 100,
and one change-feed request per calendar. The backend is the in-memory one
(tests/fakes/memory_backend.py) so that only syncd's own CPU is measured; the request
count is that backend's feed calls.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.world import BenchWorld, cpu
from tests.fakes.memory_backend import MemoryBackend, MemoryCalendar


class CountingBackend(MemoryBackend):
    """Counts every call that would be a request to a server."""

    def __init__(self, cal: MemoryCalendar) -> None:
        super().__init__(cal)
        self.requests = 0

    def changes(self, cursor, known):  # type: ignore[no-untyped-def]
        self.requests += 1
        return super().changes(cursor, known)

    def get(self, remote_id):  # type: ignore[no-untyped-def]
        self.requests += 1
        return super().get(remote_id)


def idle_cycle(n: int) -> tuple[float, float]:
    """(median CPU ms of a warm idle cycle, requests per idle cycle) at ``n`` sessions."""
    with tempfile.TemporaryDirectory() as tmp:
        world = BenchWorld(Path(tmp), {}, backend="memory")
        world.seed(n)
        backend = CountingBackend(MemoryCalendar())
        first = world.sync(backend)
        assert first.error is None, first.error
        world.sync(backend)  # warm: caches, the cursor past our own writes
        backend.requests = 0
        ms = cpu(lambda: world.sync(backend), repeat=5)
        per_cycle = backend.requests / 5
        world.close()
    return ms, per_cycle


def rows(sizes: tuple[int, ...] = (100, 20_000)) -> list[tuple[str, str]]:
    """Benchmark rows for the results table."""
    out = []
    results = {n: idle_cycle(n) for n in sizes}
    for n, (ms, req) in results.items():
        out.append(
            (f"idle warm cycle CPU, {n:,} upcoming sessions", f"{ms:.1f} ms, {req:.2f} requests")
        )
    if len(sizes) >= 2:
        lo, hi = results[sizes[0]][0], results[sizes[-1]][0]
        out.append((f"idle CPU ratio {sizes[-1]:,} / {sizes[0]:,} (goal <= 2)", f"{hi / lo:.1f}x"))
    return out
