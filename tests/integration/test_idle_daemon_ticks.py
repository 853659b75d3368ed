"""The daemon loop sleeps until work is due, and an idle tick only reads (issue 11, goals 7, 5b).

The loop runs on a fake clock and a fake wake event (each wait advances the clock by its
timeout and returns at once), so what is asserted is which waits the loop asks for and
which passes and write transactions it makes, never how long anything took.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd import config as config_mod
from syncd.app import daemon as daemon_mod
from syncd.services import booking as services
from syncd.store.context import Context
from syncd.store.db import Database
from syncd.store.models import CalendarRow

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
TICK = 1.25  # a 5 s poll interval: the loop's tick is a quarter of it


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class FakeWake:
    """Records each wait's timeout, moves the clock on by it, stops the daemon after ``n``."""

    def __init__(self, clock: FakeClock, n: int) -> None:
        self.clock, self.n = clock, n
        self.waits: list[float] = []
        self.daemon: daemon_mod.Daemon | None = None

    def wait(self, timeout: float) -> bool:
        self.waits.append(round(timeout, 3))
        self.clock.now += timedelta(seconds=timeout)
        if len(self.waits) >= self.n and self.daemon is not None:
            self.daemon.stopping.set()
        return False

    def clear(self) -> None:
        pass

    def set(self) -> None:
        pass


def _daemon(tmp_path: Path, next_sync_in: timedelta, waits: int) -> tuple[Any, FakeWake]:
    clock = FakeClock()
    db = Database(f"sqlite:///{tmp_path}/d.db")
    db.upgrade()
    ctx = Context(db, "https://book.example.com", clock=clock)
    services.add_admin(ctx, "coach@example.com", "Coach", "UTC")
    with db.write() as orm:
        orm.add(
            CalendarRow(
                admin_id=1,
                backend="caldav",
                busy_only=False,
                settings={"url": "http://127.0.0.1:9/c/", "username": "", "password_file": ""},
                next_sync_at=NOW + next_sync_in,
            )
        )
    cfg = config_mod.parse(
        '[sync]\nsettle = "0s"\npoll_interval = "5s"\n'
        '[web]\npublic_url = "https://book.example.com"\n[smtp]\nhost = "127.0.0.1"\nport = 9\n',
        "test",
    )
    d = daemon_mod.Daemon(ctx, cfg)
    wake = FakeWake(clock, waits)
    wake.daemon = d
    d.wake = wake  # type: ignore[assignment]
    return d, wake


@contextmanager
def counting_writes(db: Database) -> Iterator[list[int]]:
    """The number of write transactions opened meanwhile, in a one-item list."""
    count = [0]
    real = db.write

    def write(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return real(*args, **kwargs)

    db.write = write  # type: ignore[method-assign]
    try:
        yield count
    finally:
        db.write = real  # type: ignore[method-assign]


def test_an_idle_tick_makes_no_pass_and_no_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing due for an hour: after the pass at start, ten ticks only read (before: each
    tick claimed calendars, looked for expired links and claimed outbox rows, all writes)."""
    d, wake = _daemon(tmp_path, timedelta(hours=1), waits=10)
    passes: list[datetime] = []
    real_run_cycle = daemon_mod.run_cycle

    def run_cycle(*args: Any, **kwargs: Any) -> Any:
        passes.append(d.ctx.clock())
        return real_run_cycle(*args, **kwargs)

    monkeypatch.setattr(daemon_mod, "run_cycle", run_cycle)
    writes_at_start: list[int] = []
    real_wait = wake.wait

    def wait(timeout: float) -> bool:
        if not writes_at_start:
            writes_at_start.append(count[0])
        return real_wait(timeout)

    wake.wait = wait  # type: ignore[method-assign]
    with counting_writes(d.ctx.db) as count:
        assert d.run() == 0
    assert passes == [NOW]  # the one pass at start
    assert wake.waits == [TICK] * 10
    assert count[0] == writes_at_start[0], "an idle tick wrote to the database"


def test_the_loop_wakes_when_the_calendar_is_due_not_at_the_next_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The calendar's next poll falls 0.3 s into a tick: the loop sleeps 0.3 s and passes
    then (before: it slept whole ticks, up to a tick late; goal 7)."""
    d, wake = _daemon(tmp_path, timedelta(seconds=TICK + 0.3), waits=3)
    passes: list[datetime] = []

    def run_cycle(*args: Any, **kwargs: Any) -> Any:
        passes.append(d.ctx.clock())
        return daemon_mod.CycleSummary()

    monkeypatch.setattr(daemon_mod, "run_cycle", run_cycle)
    assert d.run() == 0
    assert wake.waits[:2] == [TICK, 0.3]
    assert passes[:2] == [NOW, NOW + timedelta(seconds=TICK + 0.3)]


def test_a_pass_that_did_nothing_waits_a_tick_even_if_something_looks_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A calendar that looks due but that the pass does not take (another worker's row,
    say) costs at most one pass a tick, as before, never a busy loop."""
    d, wake = _daemon(tmp_path, -timedelta(minutes=1), waits=6)
    passes: list[datetime] = []
    monkeypatch.setattr(
        daemon_mod,
        "run_cycle",
        lambda *a, **k: passes.append(d.ctx.clock()) or daemon_mod.CycleSummary(),
    )
    assert d.run() == 0
    assert wake.waits == [TICK] * 6 and len(passes) <= 6, (wake.waits, passes)
